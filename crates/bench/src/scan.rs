//! The scan workloads: a full-range SYN scan of one node and its port-count series, 1,000 ports
//! on several nodes, a UDP scan of 100 ports with the node's ICMP rate limit lifted, and UDP
//! scans of 40 closed ports under the kernel's own limit (from one and from two scanner
//! addresses) — portwarden's release binary against `nmap -sS/-sU -T4`, `nmap -T5 --min-rate`,
//! nmap's default timing and masscan at several rates, from the same scanner namespace,
//! interleaved run by run so background load hits every tool alike.
//!
//! Agreement: nmap `-T4`'s first run in each setting is the reference (under the kernel's rate
//! limit: nmap's default timing, `-T3`, since `-T4` gives up on withheld answers); every other
//! run's states are compared with it port by port. masscan reports open ports only, so its
//! accuracy is how many of the really open ports it found.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use portwarden_lab::{Lab, Netns, Nmap, TcpListenerGuard, UdpListenerGuard};

use crate::Part;
use crate::analysis;
use crate::parse::{self, Agreement, States};
use crate::process::{Job, Measured, run_in};
use crate::report::{Point, Row, Scaling, Series, Workload, count, sized};
use crate::stats::median;
use crate::suite::{Ctx, Settings, progress};

/// TCP ports with a listener on every scanned node.
pub const TCP_OPEN: [u16; 3] = [22, 80, 443];
/// Every 64th port is filtered (DROP): 1,023 of the full range, 15 of 1-1000.
pub const FILTER_EVERY: u16 = 64;
/// UDP ports answered by an echo service (nmap's payloads for DNS and NTP get an answer).
pub const UDP_ECHO: [u16; 2] = [53, 123];
/// A UDP port with a socket that never answers.
pub const UDP_SILENT: u16 = 69;
/// The UDP ports of the workloads under the kernel's ICMP rate limit: 40, nothing listening.
pub const LIMITED_PORTS: (u16, u16) = (5100, 5139);

/// What the repeated runs of one tool in one setting produced.
#[derive(Default)]
struct Samples {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    rss_kb: Vec<f64>,
    states: Vec<States>,
    open: Vec<BTreeSet<(IpAddr, u16)>>,
    problems: Vec<String>,
    /// portwarden's own account of the target's ICMP rate limit, per run (may be empty).
    rate_limits: Vec<Vec<String>>,
}

impl Samples {
    fn push(&mut self, m: &Measured) {
        self.wall.push(m.wall);
        self.cpu.push(m.cpu());
        if let Some(kb) = m.max_rss_kb {
            self.rss_kb.push(kb as f64);
        }
    }

    fn point(&self, x: f64) -> Option<Point> {
        Some(Point {
            x,
            y: median(&self.wall)?,
            cpu: median(&self.cpu),
            extrapolated: false,
        })
    }

    fn detail(&self) -> String {
        match (median(&self.rss_kb), median(&self.cpu)) {
            (Some(rss), Some(cpu)) => {
                format!("peak RSS {:.1} MB, CPU {:.2} s (median)", rss / 1024.0, cpu)
            }
            (None, Some(cpu)) => format!("CPU {cpu:.2} s (median)"),
            _ => String::new(),
        }
    }

    /// Worst agreement of any run with `reference`.
    fn agreement(&self, reference: &States) -> String {
        let worst = self
            .states
            .iter()
            .map(|s| Agreement::of(reference, s))
            .max_by_key(|a| a.differ);
        let mut s = match worst {
            Some(a) if self.states.len() > 1 => {
                format!("{} (worst of {} runs)", a.describe(), self.states.len())
            }
            Some(a) => a.describe(),
            None => "no result".into(),
        };
        for p in &self.problems {
            s.push_str(&format!("; {p}"));
        }
        s
    }

    /// The reference's own consistency: later runs against the first.
    fn reference_agreement(&self) -> String {
        let Some(first) = self.states.first() else {
            return "no result".into();
        };
        let worst = self.states[1..]
            .iter()
            .map(|s| Agreement::of(first, s))
            .max_by_key(|a| a.differ);
        match worst {
            Some(a) if a.differ > 0 => format!("reference (its own runs: {})", a.describe()),
            Some(_) => format!("reference ({} runs agree)", self.states.len()),
            None => "reference".into(),
        }
    }

    /// masscan: open ports found against the truth, per run.
    fn accuracy(&self, truth: &BTreeSet<(IpAddr, u16)>) -> String {
        let found: Vec<usize> = self
            .open
            .iter()
            .map(|o| o.intersection(truth).count())
            .collect();
        let wrong: usize = self
            .open
            .iter()
            .map(|o| o.difference(truth).count())
            .max()
            .unwrap_or(0);
        let (lo, hi) = (
            found.iter().min().copied().unwrap_or(0),
            found.iter().max().copied().unwrap_or(0),
        );
        let mut s = if lo == hi {
            format!("found {lo} of {} open ports", truth.len())
        } else {
            format!("found {lo}–{hi} of {} open ports", truth.len())
        };
        if lo < truth.len() {
            s = format!("**{s}**");
        }
        if wrong > 0 {
            s.push_str(&format!("; {wrong} reported open that are not"));
        }
        for p in &self.problems {
            s.push_str(&format!("; {p}"));
        }
        s
    }
}

/// One `portwarden scan` run; `extra` goes after the scan kind (e.g. `-S ADDR`).
fn ours(
    ctx: &Ctx,
    scanner: &Netns,
    kind: &str,
    ports: &str,
    targets: &[IpAddr],
    extra: &[String],
    into: &mut Samples,
) -> Result<()> {
    // The lab's addresses are in no inventory; like nmap and masscan, the scan is told its
    // targets explicitly.
    let mut argv = vec![ctx.bin(), "scan".into(), "--any-target".into()];
    argv.extend(targets.iter().map(IpAddr::to_string));
    argv.extend(["-p", ports, "--scan", kind].map(String::from));
    argv.extend(extra.iter().cloned());
    argv.extend(["-o", "json"].map(String::from));
    let m = run_in(scanner, Job::new(&argv).limit(Duration::from_secs(600)))?
        .check("portwarden scan")?;
    into.states
        .push(parse::portwarden_states(&m.stdout).map_err(|e| anyhow!(e))?);
    into.rate_limits
        .push(parse::portwarden_rate_limits(&m.stdout));
    into.push(&m);
    Ok(())
}

fn nmap(
    scanner: &Netns,
    flags: &[String],
    ports: &str,
    targets: &[IpAddr],
    into: &mut Samples,
) -> Result<()> {
    // The lab's nmap command line, run under the measuring process runner.
    let argv = Nmap::new(flags).ports(ports).targets(targets).argv();
    let m = run_in(scanner, Job::new(&argv).limit(Duration::from_secs(900)))?.check("nmap")?;
    into.states
        .push(parse::nmap_states(&m.stdout).map_err(|e| anyhow!(e))?);
    into.push(&m);
    Ok(())
}

/// Sends one small UDP datagram per 100 ms from a node to the scanner while it lives: masscan
/// 1.3.2 checks the end of its `--wait` only when its receive thread gets a packet.
struct Waker {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Waker {
    fn start(node: &Netns, to: IpAddr) -> Waker {
        let (stop, rx) = mpsc::channel::<()>();
        let node = node.clone();
        let thread = std::thread::spawn(move || {
            let _ = node.run(move || {
                let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") else {
                    return;
                };
                loop {
                    let _ = sock.send_to(b"pw-bench", (to, 9));
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            });
        });
        Waker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Masscan<'a> {
    scanner: &'a Netns,
    node: &'a Netns,
    router_mac: String,
}

impl Masscan<'_> {
    fn argv(&self, target: IpAddr, ports: &str, rate: u32) -> Vec<String> {
        [
            "masscan".to_string(),
            target.to_string(),
            format!("-p{ports}"),
            "--rate".into(),
            rate.to_string(),
            "-e".into(),
            "eth0".into(),
            "--adapter-ip".into(),
            self.scanner.v4().to_string(),
            "--router-mac".into(),
            self.router_mac.clone(),
            "--wait".into(),
            "1".into(),
            "-oL".into(),
            "-".into(),
        ]
        .to_vec()
    }

    fn run(&self, target: IpAddr, ports: &str, rate: u32, into: &mut Samples) -> Result<()> {
        let _waker = Waker::start(self.node, self.scanner.v4().into());
        let m = run_in(
            self.scanner,
            Job::new(&self.argv(target, ports, rate)).limit(Duration::from_secs(120)),
        )?;
        if m.code != Some(0) {
            into.problems.push(format!(
                "a run failed (exit {:?}: {})",
                m.code,
                m.stderr.trim().lines().last().unwrap_or("")
            ));
        }
        into.open.push(parse::masscan_open(&m.stdout));
        into.push(&m);
        Ok(())
    }
}

/// `iptables -A INPUT -p PROTO -m multiport --dports ... -j DROP`, 15 ports per rule.
fn drop_ports(node: &Netns, proto: &str, ports: &[u16]) -> Result<()> {
    for chunk in ports.chunks(15) {
        let list: Vec<String> = chunk.iter().map(u16::to_string).collect();
        node.iptables(&[
            "-A",
            "INPUT",
            "-p",
            proto,
            "-m",
            "multiport",
            "--dports",
            &list.join(","),
            "-j",
            "DROP",
        ])
        .with_context(|| format!("filtering {proto} ports in {}", node.name))?;
    }
    Ok(())
}

fn filtered_up_to(max: u16) -> Vec<u16> {
    (FILTER_EVERY..=max)
        .step_by(usize::from(FILTER_EVERY))
        .collect()
}

struct TcpNode {
    _listeners: Vec<TcpListenerGuard>,
}

fn tcp_node(node: &Netns, up_to: u16) -> Result<TcpNode> {
    let listeners = TCP_OPEN
        .iter()
        .map(|&p| node.tcp_listener(p))
        .collect::<Result<Vec<_>, _>>()
        .context("starting listeners")?;
    drop_ports(node, "tcp", &filtered_up_to(up_to))?;
    Ok(TcpNode {
        _listeners: listeners,
    })
}

fn tcp_truth(targets: &[IpAddr]) -> BTreeSet<(IpAddr, u16)> {
    targets
        .iter()
        .flat_map(|t| TCP_OPEN.iter().map(move |p| (*t, *p)))
        .collect()
}

/// nmap's flags for a scan kind (`syn`/`udp`): `-T4`, or `-T5 --min-rate N` when `fast`.
fn nmap_flags(kind: &str, fast: Option<u32>) -> Vec<String> {
    let scan = if kind == "udp" { "-sU" } else { "-sS" };
    match fast {
        None => vec![scan.into(), "-T4".into()],
        Some(rate) => vec![
            scan.into(),
            "-T5".into(),
            "--min-rate".into(),
            rate.to_string(),
        ],
    }
}

/// The rows every scan workload has: portwarden, `nmap -T4` (the reference, with its own
/// consistency and the state counts) and `nmap -T5 --min-rate`. `targets` is shown as given.
fn standard_rows(
    kind: &str,
    ports: &str,
    targets: &str,
    min_rate: u32,
    runs: [&Samples; 3],
    reference: &States,
) -> Vec<Row> {
    let [o, a, b] = runs;
    let show = |fast| nmap_flags(kind, fast).join(" ");
    vec![
        Row::timed(
            "portwarden",
            &format!("portwarden scan --any-target {targets} -p {ports} --scan {kind} -o json"),
            true,
            o.wall.clone(),
        )
        .agreement(o.agreement(reference))
        .detail(o.detail()),
        Row::timed(
            &format!("nmap {}", show(None)),
            &format!("nmap -n -Pn {} -p {ports} -oX - {targets}", show(None)),
            false,
            a.wall.clone(),
        )
        .agreement(format!(
            "{}: {}",
            a.reference_agreement(),
            parse::state_counts(reference)
        ))
        .detail(a.detail()),
        Row::timed(
            &format!("nmap {}", show(Some(min_rate))),
            &format!(
                "nmap -n -Pn {} -p {ports} -oX - {targets}",
                show(Some(min_rate))
            ),
            false,
            b.wall.clone(),
        )
        .agreement(b.agreement(reference))
        .detail(b.detail()),
    ]
}

/// One node: the full range (the workload) and `1-N` for each port count (the scaling series),
/// then UDP 1-100.
pub fn one_node(ctx: &Ctx) -> Result<Part> {
    let s = &ctx.settings;
    let lab = Lab::builder("bscan")
        .build()
        .context("building the scan lab")?;
    let (node, scanner) = (lab.node(0), lab.scanner(0));
    let _services = tcp_node(node, u16::MAX)?;
    let target: IpAddr = node.v4().into();
    let router_mac = node
        .exec(&["cat", "/sys/class/net/eth0/address"])
        .context("reading the node's MAC address")?
        .trim()
        .to_string();
    let mc = Masscan {
        scanner,
        node,
        router_mac,
    };
    let truth = tcp_truth(&[target]);
    let min_rate = s.nmap_min_rate;

    let mut series_ours = Vec::new();
    let mut series_t4 = Vec::new();
    let mut series_t5 = Vec::new();
    let mut series_mc = Vec::new();
    let mut part = Part::default();
    let mut notes = Vec::new();
    for &n in &s.port_counts {
        let full = n == 65_535;
        let runs = port_count_runs(ctx, &mc, target, n)?;
        let PortCountRuns {
            o, a, b, m, rates, ..
        } = &runs;
        let reference = a.states.first().cloned().unwrap_or_default();
        let open_seen: BTreeSet<(IpAddr, u16)> = reference
            .iter()
            .filter(|(_, st)| st.as_str() == "open")
            .map(|(k, _)| *k)
            .collect();
        if open_seen != truth {
            notes.push(format!(
                "At {} ports nmap -T4 saw {open_seen:?} open; the lab has {truth:?} open.",
                count(f64::from(n))
            ));
        }
        let x = f64::from(n);
        series_ours.extend(o.point(x));
        series_t4.extend(a.point(x));
        series_t5.extend(b.point(x));
        if let Some(i) = rates.iter().position(|r| *r == s.masscan_scaling_rate) {
            series_mc.extend(m[i].point(x));
        }
        let agree = Agreement::of(&reference, o.states.first().unwrap_or(&States::new()));
        if !full {
            notes.push(format!(
                "1-{n}: portwarden {} against nmap -T4 ({}).",
                o.agreement(&reference),
                if agree.differ == 0 {
                    "states as in the full range"
                } else {
                    "see the differences"
                }
            ));
            continue;
        }
        part.workloads.push(full_range_workload(
            &mc, target, min_rate, &runs, &truth, &reference,
        ));
    }
    part.scaling.push(port_count_scaling(
        s,
        [series_ours, series_t4, series_t5, series_mc],
    ));
    if let Some(sc) = part.scaling.last_mut() {
        sc.analysis = analysis::scan(&sc.series, "ports", 1.0, ctx.cores, ctx.load);
        sc.analysis.extend(notes);
    }
    part.workloads.push(udp(ctx, node, scanner)?);
    Ok(part)
}

/// Every tool's runs at one port count of the one-node scan.
struct PortCountRuns {
    /// portwarden.
    o: Samples,
    /// nmap -T4 (the reference).
    a: Samples,
    /// nmap -T5 --min-rate.
    b: Samples,
    /// masscan, one per rate of `rates`.
    m: Vec<Samples>,
    rates: Vec<u32>,
    /// masscan's port list (`1-N`: it has no `-`).
    mc_ports: String,
}

/// Scans `1-n` (`-` for the full range) of `target` with every tool, each its number of runs.
fn port_count_runs(ctx: &Ctx, mc: &Masscan, target: IpAddr, n: u32) -> Result<PortCountRuns> {
    let s = &ctx.settings;
    let scanner = mc.scanner;
    let min_rate = s.nmap_min_rate;
    let full = n == 65_535;
    let ports = if full {
        "-".to_string()
    } else {
        format!("1-{n}")
    };
    let mc_ports = format!("1-{n}");
    let rates: Vec<u32> = if full {
        s.masscan_rates.clone()
    } else {
        vec![s.masscan_scaling_rate]
    };
    progress(&format!("scan: one node, {} ports", count(f64::from(n))));
    let (mut o, mut a, mut b) = (Samples::default(), Samples::default(), Samples::default());
    let mut m: Vec<Samples> = rates.iter().map(|_| Samples::default()).collect();
    for i in 0..s.runs_ours.max(s.runs_peer) {
        if i < s.runs_ours {
            ours(ctx, scanner, "syn", &ports, &[target], &[], &mut o)?;
        }
        if i < s.runs_peer {
            nmap(scanner, &nmap_flags("syn", None), &ports, &[target], &mut a)?;
            nmap(
                scanner,
                &nmap_flags("syn", Some(min_rate)),
                &ports,
                &[target],
                &mut b,
            )?;
            for (rate, into) in rates.iter().zip(m.iter_mut()) {
                mc.run(target, &mc_ports, *rate, into)?;
            }
        }
    }
    Ok(PortCountRuns {
        o,
        a,
        b,
        m,
        rates,
        mc_ports,
    })
}

/// The full-range workload: portwarden and the two nmap timings, each masscan rate against
/// the lab's truth.
fn full_range_workload(
    mc: &Masscan,
    target: IpAddr,
    min_rate: u32,
    runs: &PortCountRuns,
    truth: &BTreeSet<(IpAddr, u16)>,
    reference: &States,
) -> Workload {
    let PortCountRuns {
        o,
        a,
        b,
        m,
        rates,
        mc_ports,
    } = runs;
    let t = target.to_string();
    let mut rows = standard_rows("syn", "-", &t, min_rate, [o, a, b], reference);
    for (rate, sm) in rates.iter().zip(m) {
        rows.push(
            Row::timed(
                &format!("masscan --rate {rate}"),
                &mc.argv(target, mc_ports, *rate)
                    .join(" ")
                    .replace(&mc.router_mac, "<node MAC>"),
                false,
                sm.wall.clone(),
            )
            .agreement(sm.accuracy(truth))
            .detail(sm.detail()),
        );
    }
    Workload {
        title: "Full-range SYN scan of one node".into(),
        setup: format!(
            "All 65,535 TCP ports of one lab node: {} open (listeners), every {FILTER_EVERY}th \
             port filtered (DROP; {} ports), the rest closed. Scanned from the scanner \
             namespace over a veth pair.",
            TCP_OPEN.len(),
            count(filtered_up_to(u16::MAX).len() as f64)
        ),
        rows,
        notes: Vec::new(),
    }
}

/// The port-count scaling study of the one-node scan (its analysis is added by the caller).
fn port_count_scaling(s: &Settings, series: [Vec<Point>; 4]) -> Scaling {
    let [ours, t4, t5, mc] = series;
    Scaling {
        title: "Scan time against port count".into(),
        unit: "ports".into(),
        series: vec![
            Series {
                name: "portwarden".into(),
                ours: true,
                points: ours,
            },
            Series {
                name: "nmap -sS -T4".into(),
                ours: false,
                points: t4,
            },
            Series {
                name: format!("nmap -sS -T5 --min-rate {}", s.nmap_min_rate),
                ours: false,
                points: t5,
            },
            Series {
                name: format!("masscan --rate {}", s.masscan_scaling_rate),
                ours: false,
                points: mc,
            },
        ],
        chart: None,
        analysis: Vec::new(),
    }
}

fn udp(ctx: &Ctx, node: &Netns, scanner: &Netns) -> Result<Workload> {
    let s = &ctx.settings;
    progress("scan: UDP, 100 ports, ICMP rate limit lifted");
    // Linux answers closed UDP ports with about one ICMP error per second after a burst of 6;
    // with that limit any correct scan of 100 closed ports takes ~95 s, whoever runs it. This
    // workload measures the scanners on a node that answers at once; the workloads of
    // `rate_limited` measure them under the kernel's limit.
    node.lift_icmp_rate_limits()
        .context("lifting the node's ICMP rate limits")?;
    let _udp: Vec<UdpListenerGuard> = UDP_ECHO
        .iter()
        .map(|&p| node.udp_echo(p))
        .chain(std::iter::once(node.udp_silent(UDP_SILENT)))
        .collect::<Result<_, _>>()
        .context("starting UDP services")?;
    let dropped: Vec<u16> = (10..=100).step_by(10).collect();
    drop_ports(node, "udp", &dropped)?;
    let target: IpAddr = node.v4().into();
    let t = target.to_string();
    let (mut o, mut a, mut b) = (Samples::default(), Samples::default(), Samples::default());
    for i in 0..s.runs_ours.max(s.runs_peer) {
        if i < s.runs_ours {
            ours(ctx, scanner, "udp", "1-100", &[target], &[], &mut o)?;
        }
        if i < s.runs_peer {
            nmap(
                scanner,
                &nmap_flags("udp", None),
                "1-100",
                &[target],
                &mut a,
            )?;
            nmap(
                scanner,
                &nmap_flags("udp", Some(s.nmap_min_rate)),
                "1-100",
                &[target],
                &mut b,
            )?;
        }
    }
    let reference = a.states.first().cloned().unwrap_or_default();
    Ok(Workload {
        title: "UDP scan of 100 ports, ICMP rate limit lifted".into(),
        setup: format!(
            "UDP ports 1-100 of one node: echo services on {UDP_ECHO:?} (they answer nmap's \
             DNS and NTP payloads), a silent socket on {UDP_SILENT}, every 10th port dropped, the \
             rest closed. The node's ICMP rate limits are lifted \
             (`net.ipv4.icmp_ratelimit=0`, `net.ipv4.icmp_msgs_per_sec` and `icmp_msgs_burst` \
             100000), so every closed port answers at once: this measures the scanners, not \
             the target (with Linux's default of about one port-unreachable per second, any \
             correct scan of 100 closed ports takes about 95 s; the next workloads measure \
             that case). The goal is portwarden at least as fast as `nmap -sU -T5 --min-rate \
             {}` with identical states.",
            s.nmap_min_rate
        ),
        rows: standard_rows("udp", "1-100", &t, s.nmap_min_rate, [&o, &a, &b], &reference),
        notes: vec!["masscan is left out: it finds UDP ports only through payloads of its own and reports no closed or filtered state to compare.".into()],
    })
}

/// Hands out scanner addresses no run has used yet: each is a peer with a full ICMP token
/// bucket at the node.
struct Fresh<'a> {
    all: &'a [std::net::Ipv4Addr],
    next: usize,
}

impl Fresh<'_> {
    fn take(&mut self) -> Result<String> {
        let a = self.all.get(self.next).ok_or_else(|| {
            anyhow!(
                "all {} scanner addresses are used: the lab needs one per run and tool",
                self.all.len()
            )
        })?;
        self.next += 1;
        Ok(a.to_string())
    }
}

/// The sysctl `key` of `node`, as a number.
fn sysctl_number(node: &Netns, key: &str) -> Result<u64> {
    let v = node
        .exec(&["sysctl", "-n", key])
        .with_context(|| format!("reading {key} in {}", node.name))?;
    v.trim()
        .parse()
        .with_context(|| format!("{key} in {} is not a number: {v:?}", node.name))
}

/// The runs of the rate-limit workloads: portwarden from one and from two scanner addresses,
/// nmap -sU -T4 and nmap -sU, every run from addresses no earlier run used.
struct LimitedRuns {
    one: Samples,
    two: Samples,
    t4: Samples,
    t3: Samples,
}

/// Runs every tool of the rate-limit workloads, in rounds, one after the other.
fn limited_runs(ctx: &Ctx, scanner: &Netns, target: IpAddr, ports: &str) -> Result<LimitedRuns> {
    let (runs_ours, runs_peer) = ctx.settings.limited_runs;
    let mut fresh = Fresh {
        all: &scanner.ipv4,
        next: 0,
    };
    let flags = |timing: Option<&str>, src: String| -> Vec<String> {
        let mut f = vec!["-sU".to_string()];
        f.extend(timing.map(String::from));
        f.extend(["-S".into(), src, "-e".into(), "eth0".into()]);
        f
    };
    let (mut one, mut two) = (Samples::default(), Samples::default());
    let (mut t4, mut t3) = (Samples::default(), Samples::default());
    for i in 0..runs_ours.max(runs_peer) {
        if i < runs_peer {
            nmap(
                scanner,
                &flags(None, fresh.take()?),
                ports,
                &[target],
                &mut t3,
            )?;
            nmap(
                scanner,
                &flags(Some("-T4"), fresh.take()?),
                ports,
                &[target],
                &mut t4,
            )?;
        }
        if i < runs_ours {
            let a = ["-S".to_string(), fresh.take()?];
            ours(ctx, scanner, "udp", ports, &[target], &a, &mut one)?;
            let ab = [
                "-S".to_string(),
                fresh.take()?,
                "-S".to_string(),
                fresh.take()?,
            ];
            ours(ctx, scanner, "udp", ports, &[target], &ab, &mut two)?;
        }
    }
    Ok(LimitedRuns { one, two, t4, t3 })
}

/// The two nmap rows of both rate-limit workloads (the same runs), `shown` spelling each
/// command line.
fn limited_nmap_rows(
    shown: &dyn Fn(&str, &str) -> String,
    t4: &Samples,
    t3: &Samples,
    reference: &States,
) -> Vec<Row> {
    vec![
        Row::timed(
            "nmap -sU -T4",
            &shown("nmap -n -Pn -sU -T4", "-S <fresh address> -e eth0"),
            false,
            t4.wall.clone(),
        )
        .agreement(t4.agreement(reference))
        .detail(t4.detail()),
        Row::timed(
            "nmap -sU (default timing)",
            &shown("nmap -n -Pn -sU", "-S <fresh address> -e eth0"),
            false,
            t3.wall.clone(),
        )
        .agreement(format!(
            "{}: {}",
            t3.reference_agreement(),
            parse::state_counts(reference)
        ))
        .detail(t3.detail()),
    ]
}

/// A portwarden row's detail with the rate limit its first run reported.
fn seen(sm: &Samples) -> String {
    let first = sm
        .rate_limits
        .first()
        .map(|r| r.join("; "))
        .unwrap_or_default();
    let d = sm.detail();
    if first.is_empty() {
        format!("{d}; no rate limit reported")
    } else {
        format!("{d}; rate limit reported (first run): {first}")
    }
}

/// A note when the reference (nmap -sU's first run) is not the lab's truth: every port of
/// `LIMITED_PORTS` closed.
fn reference_notes(target: IpAddr, reference: &States) -> Vec<String> {
    let (lo, hi) = LIMITED_PORTS;
    let n_ports = u64::from(hi - lo + 1);
    let truth: States = (lo..=hi)
        .map(|p| ((target, p), "closed".to_string()))
        .collect();
    let mut notes = Vec::new();
    let off = Agreement::of(&truth, reference);
    if off.differ > 0 {
        notes.push(format!(
            "The reference itself is off: nmap -sU's first run against the lab's truth (all \
             {n_ports} closed): {}.",
            off.describe()
        ));
    }
    notes
}

/// The setup text of a rate-limit workload scanned from `sources` addresses, with the floor
/// any correct scan has there.
fn limited_setup(ports: &str, n_ports: u64, interval_ms: u64, sources: u64) -> String {
    let burst = 6;
    let floor = |sources: u64| (n_ports.saturating_sub(burst * sources)) * interval_ms / sources;
    format!(
        "UDP ports {ports} of one node, nothing listening: the kernel answers each probe \
         with an ICMP port-unreachable, but at the rate of a node nobody tuned \
         (`net.ipv4.icmp_ratelimit={interval_ms}`, left as a new namespace has it: about \
         {burst} answers at once, then one every {interval_ms} ms to each scanner address). \
         Every run of every tool scans from scanner addresses no earlier run used (`-S`), so \
         each starts with a full token bucket at the node; runs are one after the other, \
         never at the same time. From {sources} {} a correct scan cannot take less than \
         about {:.0} s (({n_ports} − {burst}·{sources}) answers at one per {interval_ms} ms \
         per address). The reference is nmap's default timing (`-T3`); `nmap -sU -T4` is \
         timed too (the issue's yardstick) and compared with it port by port.{}",
        if sources == 1 { "address" } else { "addresses" },
        floor(sources) as f64 / 1000.0,
        if sources > 1 {
            " The nmap rows are the same runs as in the one-address workload above. The \
             goal is portwarden at least 1.8x faster than nmap."
        } else {
            " The goal: identical states, in no more time than nmap."
        }
    )
}

/// UDP ports 5100-5139 of one node under the kernel's ICMP rate limit (left as a new
/// namespace has it): portwarden from one scanner address and from two, `nmap -sU -T4` and
/// `nmap -sU` (its default timing, the reference). Every run of every tool scans from
/// addresses no run used before, so each starts with a full token bucket at the node.
pub fn rate_limited(ctx: &Ctx) -> Result<Part> {
    let s = &ctx.settings;
    let (runs_ours, runs_peer) = s.limited_runs;
    let (lo, hi) = LIMITED_PORTS;
    let ports = format!("{lo}-{hi}");
    let n_ports = u64::from(hi - lo + 1);
    progress(&format!(
        "scan: UDP, {n_ports} closed ports under the kernel's ICMP rate limit ({runs_ours} + \
         {runs_peer} rounds of tens of seconds each)"
    ));
    // Addresses: portwarden 1 + 2 per round, each nmap 1 per round.
    let lab = Lab::builder("blimit")
        .scanner_addresses(3 * runs_ours + 2 * runs_peer)
        .build()
        .context("building the rate-limit lab")?;
    let (node, scanner) = (lab.node(0), lab.scanner(0));
    let interval_ms = sysctl_number(node, "net.ipv4.icmp_ratelimit")?;
    let target: IpAddr = node.v4().into();
    let t = target.to_string();
    let LimitedRuns { one, two, t4, t3 } = limited_runs(ctx, scanner, target, &ports)?;
    let reference = t3.states.first().cloned().unwrap_or_default();
    let notes = reference_notes(target, &reference);
    let shown = |who: &str, sources: &str| format!("{who} {sources} -p {ports} -oX - {t}");
    let nmap_rows = || limited_nmap_rows(&shown, &t4, &t3, &reference);
    let setup = |sources| limited_setup(&ports, n_ports, interval_ms, sources);
    let mut rows_one = vec![
        Row::timed(
            "portwarden",
            &format!(
                "portwarden scan --any-target {t} -p {ports} --scan udp -S <fresh address> -o json"
            ),
            true,
            one.wall.clone(),
        )
        .agreement(one.agreement(&reference))
        .detail(seen(&one)),
    ];
    rows_one.extend(nmap_rows());
    let mut rows_two = vec![
        Row::timed(
            "portwarden, two addresses",
            &format!(
                "portwarden scan --any-target {t} -p {ports} --scan udp -S <fresh address> -S <fresh address> -o json"
            ),
            true,
            two.wall.clone(),
        )
        .agreement(two.agreement(&reference))
        .detail(seen(&two)),
    ];
    rows_two.extend(nmap_rows());
    Ok(Part {
        workloads: vec![
            Workload {
                title: format!(
                    "UDP scan of {n_ports} closed ports under the kernel's ICMP rate limit"
                ),
                setup: setup(1),
                rows: rows_one,
                notes: notes.clone(),
            },
            Workload {
                title: format!(
                    "UDP scan of {n_ports} closed ports under the kernel's ICMP rate limit, two scanner addresses"
                ),
                setup: setup(2),
                rows: rows_two,
                notes,
            },
        ],
        scaling: Vec::new(),
    })
}

/// portwarden, nmap -T4 and nmap -T5 --min-rate on ports 1-1000 of `targets`, each its number
/// of runs.
fn node_count_runs(ctx: &Ctx, scanner: &Netns, targets: &[IpAddr]) -> Result<[Samples; 3]> {
    let s = &ctx.settings;
    let min_rate = s.nmap_min_rate;
    let (mut o, mut a, mut b) = (Samples::default(), Samples::default(), Samples::default());
    for i in 0..s.runs_ours.max(s.runs_peer) {
        if i < s.runs_ours {
            ours(ctx, scanner, "syn", "1-1000", targets, &[], &mut o)?;
        }
        if i < s.runs_peer {
            nmap(scanner, &nmap_flags("syn", None), "1-1000", targets, &mut a)?;
            nmap(
                scanner,
                &nmap_flags("syn", Some(min_rate)),
                "1-1000",
                targets,
                &mut b,
            )?;
        }
    }
    Ok([o, a, b])
}

/// The workload of the 10-node scan: the standard rows, masscan left out.
fn ten_nodes_workload(min_rate: u32, runs: [&Samples; 3], reference: &States) -> Workload {
    Workload {
        title: "1,000 ports on each of 10 nodes".into(),
        setup: format!(
            "Ten lab nodes behind a bridge, TCP ports 1-1000 of each scanned at once: {} open, \
             every {FILTER_EVERY}th port filtered ({} per node), the rest closed.",
            TCP_OPEN.len(),
            filtered_up_to(1000).len()
        ),
        rows: standard_rows("syn", "1-1000", "<10 nodes>", min_rate, runs, reference),
        notes: vec![
            "masscan is left out here: it sends every probe to one `--router-mac`, so without a \
             router it reaches only one host of a shared Ethernet segment."
                .into(),
        ],
    }
}

/// 1,000 ports on each of several nodes at once (the 10-node workload and the node-count
/// series).
pub fn nodes(ctx: &Ctx) -> Result<Part> {
    let s = &ctx.settings;
    let most = s.node_counts.iter().copied().max().unwrap_or(10);
    progress(&format!("scan: building a lab of {most} nodes"));
    let lab = Lab::builder("bnodes")
        .nodes(most)
        .build()
        .context("building the multi-node lab")?;
    let scanner = lab.scanner(0);
    let mut services = Vec::new();
    for n in lab.nodes() {
        services.push(tcp_node(n, 1000)?);
    }
    let all: Vec<IpAddr> = lab.nodes().iter().map(|n| n.v4().into()).collect();
    let min_rate = s.nmap_min_rate;
    let (mut so, mut sa, mut sb) = (Vec::new(), Vec::new(), Vec::new());
    let mut part = Part::default();
    let mut notes = Vec::new();
    for &n in &s.node_counts {
        progress(&format!("scan: {n} nodes x 1,000 ports"));
        let targets = &all[..n.min(all.len())];
        let [o, a, b] = node_count_runs(ctx, scanner, targets)?;
        let reference = a.states.first().cloned().unwrap_or_default();
        let x = n as f64;
        so.extend(o.point(x));
        sa.extend(a.point(x));
        sb.extend(b.point(x));
        if n != 10 {
            notes.push(format!(
                "{}: portwarden {} against nmap -T4.",
                sized(x, "nodes"),
                o.agreement(&reference)
            ));
            continue;
        }
        part.workloads
            .push(ten_nodes_workload(min_rate, [&o, &a, &b], &reference));
    }
    drop(services);
    let mut sc = Scaling {
        title: "Scan time against node count".into(),
        unit: "nodes".into(),
        series: vec![
            Series {
                name: "portwarden".into(),
                ours: true,
                points: so,
            },
            Series {
                name: "nmap -sS -T4".into(),
                ours: false,
                points: sa,
            },
            Series {
                name: format!("nmap -sS -T5 --min-rate {min_rate}"),
                ours: false,
                points: sb,
            },
        ],
        chart: None,
        analysis: Vec::new(),
    };
    sc.analysis = analysis::scan(&sc.series, "nodes", 1000.0, ctx.cores, ctx.load);
    sc.analysis.extend(notes);
    part.scaling.push(sc);
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_64th_port_is_filtered() {
        assert_eq!(filtered_up_to(u16::MAX).len(), 1023);
        assert_eq!(filtered_up_to(1000).len(), 15);
        assert!(filtered_up_to(1000).iter().all(|p| p % 64 == 0));
        assert!(TCP_OPEN.iter().all(|p| p % FILTER_EVERY != 0));
    }

    #[test]
    fn masscan_accuracy_against_the_truth() {
        let a: IpAddr = "10.213.0.11".parse().expect("addr");
        let truth = tcp_truth(&[a]);
        let mut s = Samples::default();
        s.open.push(truth.clone());
        assert_eq!(s.accuracy(&truth), "found 3 of 3 open ports");
        s.open.push([(a, 22)].into_iter().collect());
        assert_eq!(s.accuracy(&truth), "**found 1–3 of 3 open ports**");
        s.open.push([(a, 23)].into_iter().collect());
        assert_eq!(
            s.accuracy(&truth),
            "**found 0–3 of 3 open ports**; 1 reported open that are not"
        );
    }

    #[test]
    fn reference_consistency() {
        let a: IpAddr = "10.213.0.11".parse().expect("addr");
        let mut s = Samples::default();
        assert_eq!(s.reference_agreement(), "no result");
        let mut st = States::new();
        st.insert((a, 1), "closed".into());
        s.states.push(st.clone());
        s.states.push(st.clone());
        assert_eq!(s.reference_agreement(), "reference (2 runs agree)");
        st.insert((a, 1), "filtered".into());
        s.states.push(st);
        assert_eq!(
            s.reference_agreement(),
            "reference (its own runs: **1 of 1 ports differ**)"
        );
        assert_eq!(
            s.agreement(&s.states[0].clone()),
            "**1 of 1 ports differ** (worst of 3 runs)"
        );
    }
}
