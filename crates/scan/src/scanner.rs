//! [`Scanner`]: the public entry point. Validates the request, picks source addresses, runs the
//! engine for the scan kind, and turns the flat results into a [`ScanReport`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::{self, Plan};
use crate::model::{HostReport, PortResult, ScanKind, ScanReport};
use crate::probe::{self, Identity};
use crate::{PortList, Progress, ProgressFn, ScanError, TargetPolicy, Timing, net};

/// The routing of a scan's targets (see [`Scanner::scan`]).
struct Routes {
    /// The targets that can be scanned, in order.
    routable: Vec<IpAddr>,
    /// The source address of each routable target.
    sources: Vec<IpAddr>,
    /// Per target: its index among the routable ones, or why it cannot be scanned.
    slots: Vec<Result<usize, String>>,
}

/// Scan settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanConfig {
    /// Timing knobs (defaults follow `nmap -T4`).
    pub timing: Timing,
    /// IPv4 source address; `None` = what the routing table picks per target.
    pub source_v4: Option<Ipv4Addr>,
    /// IPv6 source address; `None` = what the routing table picks per target.
    pub source_v6: Option<Ipv6Addr>,
    /// Source port of raw TCP probes (base port for UDP); `None` = random in 40000-59999.
    pub source_port: Option<u16>,
    /// Which addresses may be probed; the default allows loopback only. See [`TargetPolicy`].
    pub targets: TargetPolicy,
    /// More addresses of this host to send from when confirming silent ports of a target
    /// that rate-limits its ICMP errors: Linux budgets those errors per destination, so each
    /// address has a budget of its own and n addresses confirm about n times as fast. Only
    /// addresses of the target's family are used; each must be assigned to a local interface.
    /// Empty (the default) = the one source address.
    pub extra_sources: Vec<IpAddr>,
    /// How long the scan may spend, after its first pass, confirming silent ports of targets
    /// that rate-limit their ICMP errors. Ports not confirmed in time keep the silent state
    /// with [`Reason::RateLimited`](crate::Reason::RateLimited) and the target's
    /// [`HostReport::rate_limit`] says how many. `None` (the default) = as long as it takes,
    /// like nmap.
    pub confirm_budget: Option<Duration>,
}

/// Scans targets; see the [crate documentation](crate).
///
/// The scanner works in the network namespace of the thread that calls [`Scanner::scan`]
/// (its sockets are opened there).
#[derive(Clone, Default)]
pub struct Scanner {
    config: ScanConfig,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("config", &self.config)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // getrandom(2) never fails for 8 bytes once the pool is initialised; fall back to time.
    // SAFETY: `b` is a valid 8-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
            ^ u64::from(std::process::id())
    }
}

impl Scanner {
    /// A scanner with these settings.
    pub fn new(config: ScanConfig) -> Self {
        Scanner {
            config,
            progress: None,
        }
    }

    /// Calls `f` with a [`Progress`] about ten times a second during a scan, and once at the
    /// end (from the scanning thread).
    pub fn on_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(std::sync::Arc::new(f));
        self
    }

    /// The settings.
    pub fn config(&self) -> &ScanConfig {
        &self.config
    }

    /// Scans every port of `ports` on every address of `targets` with `kind`.
    ///
    /// # Guarantees
    /// Every target gets exactly one [`HostReport`], in the order given (duplicates are
    /// scanned once). A target this namespace has no route to (or whose family it cannot use)
    /// gets [`HostReport::error`] and no ports, and nothing is sent to it; every other target
    /// is scanned as if it were alone: each of its ports gets exactly one entry, with nmap's
    /// state and reason words. Nothing is sent to any address but the targets, and nothing at
    /// all unless every target is allowed by [`ScanConfig::targets`].
    ///
    /// # Errors
    /// [`ScanError::TargetRefused`] for a target [`ScanConfig::targets`] does not allow;
    /// [`ScanError::RawSocketDenied`] for SYN/ACK/UDP without CAP_NET_RAW (use
    /// [`ScanKind::Connect`] then); [`ScanError::Config`] for an empty request or a rate cap
    /// of 0;
    /// [`ScanError::Socket`] for other socket failures, the routing lookup's own included (out
    /// of descriptors); [`ScanError::Internal`] for an engine that returned results for the
    /// wrong number of ports (a bug). An unroutable target is not an error (see above).
    pub fn scan(
        &self,
        targets: &[IpAddr],
        ports: &PortList,
        kind: ScanKind,
    ) -> Result<ScanReport, ScanError> {
        let uniq = self.checked_targets(targets, ports)?;
        let Routes {
            routable,
            sources,
            slots,
        } = self.route(&uniq, kind)?;
        let id = self.identity(kind)?;
        let plan = Plan {
            kind,
            targets: routable.clone(),
            sources,
            ports: ports.as_slice().to_vec(),
            timing: self.config.timing.clone().normalised(),
            id,
            progress: self.progress.clone(),
            extra_sources: self.config.extra_sources.clone(),
            confirm_budget: self.config.confirm_budget,
        };
        let started = SystemTime::now();
        let t0 = std::time::Instant::now();
        let outcome = match kind {
            _ if routable.is_empty() => engine::Outcome::default(),
            ScanKind::Connect => engine::run_connect(plan)?,
            ScanKind::Syn | ScanKind::Ack | ScanKind::Udp => engine::run_raw(plan)?,
        };
        let elapsed = t0.elapsed();
        let hosts = host_reports(
            &uniq,
            slots,
            &outcome.results,
            &outcome.rate_limits,
            ports,
            kind,
        )?;
        Ok(ScanReport {
            kind,
            hosts,
            started_unix: started
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            elapsed,
            stats: outcome.stats,
        })
    }

    /// The targets without repeats, once the request is checked: something to scan, no rate
    /// cap of 0, every target allowed, every extra source address one of this host's.
    fn checked_targets(
        &self,
        targets: &[IpAddr],
        ports: &PortList,
    ) -> Result<Vec<IpAddr>, ScanError> {
        let mut uniq: Vec<IpAddr> = Vec::with_capacity(targets.len());
        for t in targets {
            if !uniq.contains(t) {
                uniq.push(*t);
            }
        }
        if uniq.is_empty() || ports.is_empty() {
            return Err(ScanError::Config(
                "nothing to scan: no targets or no ports".into(),
            ));
        }
        let timing = &self.config.timing;
        if timing.max_rate == Some(0) || timing.max_rate_per_target == Some(0) {
            return Err(ScanError::Config(
                "a rate cap of 0 probes per second would stop the scan; use None for no cap".into(),
            ));
        }
        self.config.targets.check(&uniq)?;
        for s in &self.config.extra_sources {
            // Probes from an address this host does not have would be spoofed, and their
            // answers would go elsewhere.
            std::net::UdpSocket::bind(std::net::SocketAddr::new(*s, 0)).map_err(|e| {
                ScanError::Config(format!(
                    "source address {s} is not an address of this host ({e}); give only addresses assigned to a local interface"
                ))
            })?;
        }
        Ok(uniq)
    }

    /// Which targets can be scanned at all, and from which source address. The routing lookup
    /// decides; an explicit source address does not make an unroutable target reachable.
    fn route(&self, uniq: &[IpAddr], kind: ScanKind) -> Result<Routes, ScanError> {
        let mut routable = Vec::with_capacity(uniq.len());
        let mut sources = Vec::with_capacity(uniq.len());
        let mut slots: Vec<Result<usize, String>> = Vec::with_capacity(uniq.len());
        for t in uniq {
            let routed = match net::source_for(*t) {
                Ok(s) => s,
                Err(ScanError::NoRoute { target, source }) => {
                    slots.push(Err(format!("no route to {target}: {source}")));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let s = match (t, self.config.source_v4, self.config.source_v6) {
                (IpAddr::V4(_), Some(s), _) => IpAddr::V4(s),
                (IpAddr::V6(_), _, Some(s)) => IpAddr::V6(s),
                _ => routed,
            };
            slots.push(Ok(routable.len()));
            routable.push(*t);
            sources.push(s);
        }
        let v6_sources: Vec<&IpAddr> = sources.iter().filter(|s| s.is_ipv6()).collect();
        if kind.needs_raw() && v6_sources.windows(2).any(|w| w[0] != w[1]) {
            return Err(ScanError::Config(
                "IPv6 targets need different source addresses; set source_v6 or scan them separately"
                    .into(),
            ));
        }
        Ok(Routes {
            routable,
            sources,
            slots,
        })
    }

    /// The scan's probe identity: a random secret, and the source port (given, or random).
    fn identity(&self, kind: ScanKind) -> Result<Identity, ScanError> {
        let rnd = random_u64();
        let base_sport = self
            .config
            .source_port
            .unwrap_or(40_000 + (rnd % 20_000) as u16);
        if kind == ScanKind::Udp && base_sport > u16::MAX - u16::from(probe::MAX_TRYNO) {
            return Err(ScanError::Config(format!(
                "UDP source port {base_sport} leaves no room for try numbers; use one below {}",
                u16::MAX - u16::from(probe::MAX_TRYNO)
            )));
        }
        Ok(Identity {
            secret: rnd.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15,
            base_sport,
        })
    }
}

/// One report per target, in the order asked: an unscanned one with its error, a scanned one
/// with the engine's result for each port (`results` holds them target by target, in port
/// order, for the routable targets: `slots` gives each target's index among those).
///
/// # Guarantees
/// Each port of each scanned target gets exactly one entry.
///
/// # Errors
/// [`ScanError::Internal`] when `results` does not hold exactly one result per port of each
/// scanned target (an engine bug: a port left out quietly would read as never scanned).
fn host_reports(
    targets: &[IpAddr],
    slots: Vec<Result<usize, String>>,
    results: &[(crate::PortState, crate::Reason)],
    rate_limits: &[Option<crate::RateLimit>],
    ports: &PortList,
    kind: ScanKind,
) -> Result<Vec<HostReport>, ScanError> {
    let nports = ports.len();
    let scanned = slots.iter().filter(|s| s.is_ok()).count();
    if results.len() != scanned * nports {
        return Err(ScanError::Internal(format!(
            "the engine returned {} results for {} ports ({scanned} targets of {nports} ports)",
            results.len(),
            scanned * nports
        )));
    }
    let proto = kind.protocol().as_str();
    targets
        .iter()
        .zip(slots)
        .map(|(addr, slot)| {
            let h = match slot {
                Ok(h) => h,
                Err(e) => return Ok(HostReport::unscanned(*addr, e)),
            };
            let mine = results
                .get(h * nports..(h + 1) * nports)
                .ok_or_else(|| ScanError::Internal(format!("no results for target {h}")))?;
            Ok(HostReport {
                address: *addr,
                ports: ports
                    .as_slice()
                    .iter()
                    .zip(mine)
                    .map(|(port, &(state, reason))| PortResult {
                        port: *port,
                        protocol: proto,
                        state,
                        reason,
                    })
                    .collect(),
                error: None,
                rate_limit: rate_limits.get(h).cloned().flatten(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_results_from_the_engine_are_an_error_not_missing_ports() {
        // Each port of each scanned target gets exactly one entry: results that do not cover
        // them all are a bug to report, not ports to leave out quietly.
        use crate::{PortState, Reason};
        let targets: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        let ports = PortList::parse("22,80").expect("ports");
        let slots = || vec![Ok(0), Err("no route".to_string()), Ok(1)];
        let one = (PortState::Closed, Reason::Reset);
        let hosts = host_reports(&targets, slots(), &[one; 4], &[], &ports, ScanKind::Syn)
            .expect("four results for two targets of two ports");
        let counts: Vec<usize> = hosts.iter().map(|h| h.ports.len()).collect();
        assert_eq!(counts, [2, 0, 2]);
        for results in [&[one; 3][..], &[one; 5][..]] {
            let e = host_reports(&targets, slots(), results, &[], &ports, ScanKind::Syn)
                .map(|h| h.iter().map(|h| h.ports.len()).collect::<Vec<_>>())
                .expect_err("results that do not cover every port");
            assert!(
                e.to_string()
                    .contains(&format!("{} results for 4 ports", results.len())),
                "{e}"
            );
        }
    }

    #[test]
    fn empty_requests_are_config_errors() {
        let s = Scanner::default();
        let ports = PortList::parse("22").expect("ports");
        let e = s.scan(&[], &ports, ScanKind::Syn).expect_err("no targets");
        assert!(matches!(e, ScanError::Config(_)), "{e}");
        let e = s
            .scan(
                &["10.213.0.11".parse().expect("ip")],
                &PortList::default(),
                ScanKind::Syn,
            )
            .expect_err("no ports");
        assert!(e.to_string().contains("nothing to scan"), "{e}");
    }

    #[test]
    fn a_rate_cap_of_zero_is_refused() {
        let ports = PortList::parse("22").expect("ports");
        for timing in [
            Timing {
                max_rate: Some(0),
                ..Timing::default()
            },
            Timing {
                max_rate_per_target: Some(0),
                ..Timing::default()
            },
        ] {
            let e = Scanner::new(ScanConfig {
                timing,
                ..ScanConfig::default()
            })
            .scan(
                &["127.0.0.1".parse().expect("ip")],
                &ports,
                ScanKind::Connect,
            )
            .expect_err("refused");
            assert!(e.to_string().contains("rate cap of 0"), "{e}");
        }
    }

    #[test]
    fn targets_outside_the_policy_are_refused_before_any_socket() {
        // No lab, no privileges needed: the refusal comes before the first socket.
        let ports = PortList::parse("22").expect("ports");
        let target: IpAddr = "192.0.2.7".parse().expect("ip");
        let e = Scanner::default()
            .scan(&[target], &ports, ScanKind::Syn)
            .expect_err("refused by default");
        assert!(
            matches!(e, ScanError::TargetRefused { target: t, .. } if t == target),
            "{e}"
        );
        let only = ScanConfig {
            targets: TargetPolicy::only(["192.0.2.8".parse().expect("ip")]),
            ..ScanConfig::default()
        };
        let e = Scanner::new(only)
            .scan(&[target], &ports, ScanKind::Connect)
            .expect_err("not in the list");
        assert!(e.to_string().contains("refusing to scan 192.0.2.7"), "{e}");
    }
}
