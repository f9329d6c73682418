//! Expected state per vantage: what a probe from a given source address must see on each port
//! a node's policies manage.
//!
//! The expected state of a port depends on where the probe comes from (an entry may close 80
//! to one network only), so a scan from vantage V is compared with the node's intent evaluated
//! for source V: the first rule of the compiled first-match order that matches V decides.

use std::net::IpAddr;
use std::sync::Arc;

use portwarden_policy::{NodeIntent, Protocol, Rule, State};

/// The state one managed port must show to one vantage, and the entry that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Intended state.
    pub state: State,
    /// Policy that decides it.
    pub policy: Arc<str>,
    /// Entry of that policy (0-based).
    pub entry: usize,
}

/// Every managed port of a node as seen from `vantage`, sorted by protocol then port.
///
/// `exempt(protocol, port)` names ports to leave out: the failsafe ports, which are accepted
/// before any policy rule and so are not enforceable (conflicts are reported by `plan`).
///
/// Cost: the total width of the rules that match the vantage, at most 65,535 per rule; each
/// port is decided by the first matching rule only.
pub fn expectations(
    intent: &NodeIntent,
    vantage: IpAddr,
    exempt: impl Fn(Protocol, u16) -> bool,
) -> Vec<Expectation> {
    first_rules(
        intent,
        |rule| rule.source.is_none_or(|net| net.contains(&vantage)),
        exempt,
    )
    .into_iter()
    .map(|(protocol, port, rule)| Expectation::of(protocol, port, rule))
    .collect()
}

/// Every port a node's policies manage for some source, sorted by protocol then port, with
/// the expectation every vantage shares — or `None` when what a probe must see depends on
/// where it comes from (the first rule that covers the port is limited by `from:`). For an
/// address without a vantage: no route to it, no source address.
///
/// `exempt` and cost as [`expectations`].
pub fn for_any_vantage(
    intent: &NodeIntent,
    exempt: impl Fn(Protocol, u16) -> bool,
) -> Vec<(Protocol, u16, Option<Expectation>)> {
    first_rules(intent, |_| true, exempt)
        .into_iter()
        .map(|(protocol, port, rule)| {
            let shared = rule.source.is_none();
            (
                protocol,
                port,
                shared.then(|| Expectation::of(protocol, port, rule)),
            )
        })
        .collect()
}

impl Expectation {
    fn of(protocol: Protocol, port: u16, rule: &Rule) -> Expectation {
        Expectation {
            port,
            protocol,
            state: rule.state,
            policy: rule.policy.clone(),
            entry: rule.entry,
        }
    }
}

/// For each protocol and port that a rule for which `applies` holds covers (and `exempt` does
/// not name), the first such rule of the compiled first-match order; sorted by protocol then
/// port.
fn first_rules(
    intent: &NodeIntent,
    applies: impl Fn(&Rule) -> bool,
    exempt: impl Fn(Protocol, u16) -> bool,
) -> Vec<(Protocol, u16, &Rule)> {
    let mut out = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        // decided[port] = index of the first applying rule, if any.
        let mut decided: Vec<Option<u32>> = vec![None; 65536];
        for (i, rule) in intent.rules.iter().enumerate() {
            if rule.protocol != protocol || !applies(rule) {
                continue;
            }
            for port in rule.ports.start..=rule.ports.end {
                let slot = &mut decided[usize::from(port)];
                if slot.is_none() {
                    *slot = Some(i as u32);
                }
            }
        }
        for (port, slot) in decided.iter().enumerate() {
            let (Some(i), Ok(port)) = (slot, u16::try_from(port)) else {
                continue;
            };
            if exempt(protocol, port) {
                continue;
            }
            out.push((protocol, port, &intent.rules[*i as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_policy::{PortRange, Rule};

    fn rule(ports: (u16, u16), source: Option<&str>, state: State, entry: usize) -> Rule {
        Rule {
            priority: 100,
            policy: Arc::from("p"),
            entry,
            protocol: Protocol::Tcp,
            ports: PortRange {
                start: ports.0,
                end: ports.1,
            },
            source: source.map(|s| s.parse().unwrap()),
            state,
            expires: None,
        }
    }

    #[test]
    fn vantage_decides_source_specific_entries() {
        // First-match order, as compiled: the /32 entry before the any-source entry.
        let intent = NodeIntent {
            policies: vec![Arc::from("p")],
            rules: vec![
                rule((80, 80), Some("172.16.7.80/32"), State::Closed, 1),
                rule((80, 80), None, State::Open, 0),
                rule((20, 23), None, State::Filtered, 2),
            ],
            report_unlisted: false,
        };
        let attacker = expectations(&intent, "172.16.7.80".parse().unwrap(), |_, _| false);
        let other = expectations(&intent, "10.0.0.1".parse().unwrap(), |_, _| false);
        let state_of = |e: &[Expectation], port| e.iter().find(|x| x.port == port).unwrap().state;
        assert_eq!(state_of(&attacker, 80), State::Closed);
        assert_eq!(state_of(&other, 80), State::Open);
        assert_eq!(other.len(), 5);
        let without_ssh = expectations(&intent, "10.0.0.1".parse().unwrap(), |p, port| {
            p == Protocol::Tcp && port == 22
        });
        assert_eq!(without_ssh.len(), 4);
        assert!(without_ssh.iter().all(|e| e.port != 22));
    }
}
