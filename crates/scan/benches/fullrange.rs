//! Side-by-side scan benchmark in a namespace lab (run by `make bench`, needs root):
//!
//! 1. Full-range SYN scan (`-p-`) of one node with 1 open port, 1,000 filtered (DROP) and the
//!    rest closed: portwarden vs `nmap -n -sS -T4 -p-`, `nmap ... --min-rate 100000`, and
//!    `masscan`, all from the same scanner namespace in the same run. States are compared
//!    port by port with nmap's; peak memory of our scan is the scanning process's VmHWM.
//! 2. Ten nodes x 1,000 ports at once: portwarden vs `nmap -T4` on the same ten targets.
//!
//! The binary re-runs itself inside the scanner namespace (`child` mode) so each measured scan
//! is a fresh process whose memory can be read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::time::Instant;

use portwarden_lab::{Lab, Netns};
use portwarden_scan::{PortList, ScanConfig, ScanKind, Scanner, report};

type States = BTreeMap<(IpAddr, u16), String>;

fn child(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    // child KIND PORTS OUT TARGET...
    let kind: ScanKind = args[0].parse()?;
    let ports = PortList::parse(&args[1])?;
    let out = &args[2];
    let targets: Vec<IpAddr> = args[3..]
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    let report = Scanner::new(ScanConfig::default()).scan(&targets, &ports, kind)?;
    let elapsed = t.elapsed();
    std::fs::write(out, report::to_json(&report))?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0");
    println!(
        "{} {} {} {} {} {}",
        elapsed.as_secs_f64(),
        hwm,
        report.stats.probes_sent,
        report.stats.retransmissions,
        report.stats.drops_detected,
        report.stats.final_cwnd
    );
    Ok(())
}

struct Ours {
    secs: f64,
    hwm_kb: u64,
    probes: u64,
    retrans: u64,
    drops: u64,
    states: States,
}

fn run_ours(scanner: &Netns, kind: &str, ports: &str, targets: &[IpAddr]) -> Ours {
    let exe = std::env::current_exe().expect("current exe");
    let out = std::env::temp_dir().join(format!("pw-bench-{}.json", std::process::id()));
    let mut args = vec![
        exe.to_string_lossy().into_owned(),
        "child".into(),
        kind.into(),
        ports.into(),
        out.to_string_lossy().into_owned(),
    ];
    args.extend(targets.iter().map(IpAddr::to_string));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = scanner.exec(&argv).expect("our scan");
    let f: Vec<&str> = line.split_whitespace().collect();
    let json = std::fs::read_to_string(&out).expect("report");
    let _ = std::fs::remove_file(&out);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let mut states = States::new();
    for h in v["hosts"].as_array().into_iter().flatten() {
        let addr: IpAddr = h["address"]
            .as_str()
            .unwrap_or("0.0.0.0")
            .parse()
            .expect("addr");
        for p in h["ports"].as_array().into_iter().flatten() {
            let port = p["port"].as_u64().unwrap_or(0) as u16;
            states.insert((addr, port), p["state"].as_str().unwrap_or("").to_string());
        }
    }
    Ours {
        secs: f[0].parse().unwrap_or(0.0),
        hwm_kb: f[1].parse().unwrap_or(0),
        probes: f[2].parse().unwrap_or(0),
        retrans: f[3].parse().unwrap_or(0),
        drops: f[4].parse().unwrap_or(0),
        states,
    }
}

fn attr<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = s.find(&key)? + key.len();
    let end = s[start..].find('"')? + start;
    Some(&s[start..end])
}

/// nmap XML → states of every port (listed ports and extraports groups).
fn nmap_states(xml: &str) -> States {
    let mut out = States::new();
    for host in xml.split("<host ").skip(1) {
        let Some(addr) = attr(host, "addr").and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        for chunk in host.split("<port ").skip(1) {
            if let (Some(p), Some(i)) = (attr(chunk, "portid"), chunk.find("<state ")) {
                let state = attr(&chunk[i..], "state").unwrap_or("").to_string();
                out.insert((addr, p.parse().unwrap_or(0)), state);
            }
        }
        for chunk in host.split("<extraports ").skip(1) {
            let state = attr(chunk, "state").unwrap_or("").to_string();
            let end = chunk.find("</extraports>").unwrap_or(chunk.len());
            for r in chunk[..end].split("<extrareasons ").skip(1) {
                if let Some(ports) = attr(r, "ports") {
                    for p in PortList::parse(ports)
                        .map(|l| l.as_slice().to_vec())
                        .unwrap_or_default()
                    {
                        out.insert((addr, p), state.clone());
                    }
                }
            }
        }
    }
    out
}

fn timed(scanner: &Netns, args: &[&str]) -> (f64, String) {
    let t = Instant::now();
    let out = scanner.exec(args).unwrap_or_else(|e| format!("ERROR {e}"));
    (t.elapsed().as_secs_f64(), out)
}

fn diff(a: &States, b: &States) -> usize {
    let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(k) != b.get(k)).count()
}

fn count(s: &States, state: &str) -> usize {
    s.values().filter(|v| v.as_str() == state).count()
}

fn full_range() {
    let lab = Lab::builder("benchfull").build().expect("lab");
    let node = lab.node(0);
    let scanner = lab.scanner(0);
    let _open = node.tcp_listener(22).expect("listener");
    node.iptables(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "10000:10999",
        "-j",
        "DROP",
    ])
    .expect("iptables");
    let target: IpAddr = node.v4().into();
    let t = target.to_string();
    let mac = node
        .exec(&["cat", "/sys/class/net/eth0/address"])
        .expect("mac")
        .trim()
        .to_string();
    let src = scanner.v4().to_string();

    println!("## Full-range SYN scan of one node (1 open, 1,000 filtered, 64,534 closed)\n");
    println!("| scanner | command | wall time | result vs nmap -T4 |");
    println!("|---|---|---|---|");
    let (t_nmap, xml) = timed(
        scanner,
        &["nmap", "-n", "-Pn", "-sS", "-T4", "-p-", "-oX", "-", &t],
    );
    let reference = nmap_states(&xml);
    println!(
        "| nmap -T4 | `nmap -n -Pn -sS -T4 -p- {t}` | {t_nmap:.2} s | reference: {} open, {} filtered, {} closed |",
        count(&reference, "open"),
        count(&reference, "filtered"),
        count(&reference, "closed")
    );
    let (t_fast, xml) = timed(
        scanner,
        &[
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            "-T4",
            "--min-rate",
            "100000",
            "-p-",
            "-oX",
            "-",
            &t,
        ],
    );
    let fast = nmap_states(&xml);
    println!(
        "| nmap min-rate | `nmap -n -Pn -sS -T4 --min-rate 100000 -p- {t}` | {t_fast:.2} s | {} ports differ |",
        diff(&reference, &fast)
    );
    let mut ours_runs = Vec::new();
    for _ in 0..5 {
        ours_runs.push(run_ours(scanner, "syn", "-", &[target]));
    }
    ours_runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let median = &ours_runs[ours_runs.len() / 2];
    let worst_diff = ours_runs
        .iter()
        .map(|o| diff(&reference, &o.states))
        .max()
        .unwrap_or(0);
    println!(
        "| portwarden | `Scanner::scan(-p-, Syn)` (5 runs, median) | {:.3} s (min {:.3}, max {:.3}) | {} ports differ (worst of 5) |",
        median.secs,
        ours_runs[0].secs,
        ours_runs[ours_runs.len() - 1].secs,
        worst_diff
    );
    for rate in ["100000", "25000"] {
        let (t_m, out) = timed(
            scanner,
            &[
                "timeout",
                "60",
                "masscan",
                &t,
                "-p1-65535",
                "--rate",
                rate,
                "-e",
                "eth0",
                "--adapter-ip",
                &src,
                "--router-mac",
                &mac,
                "--wait",
                "1",
                "-oL",
                "-",
            ],
        );
        let open: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("open"))
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        println!(
            "| masscan | `masscan {t} -p1-65535 --rate {rate} --wait 1` | {t_m:.2} s | open ports found: {:?} (nmap: 22) |",
            open
        );
    }
    println!();
    let summary = format!(
        "portwarden: peak memory (VmHWM) {:.1} MB, {} probes, {} retransmissions, {} loss events; \
         {:.1}x faster than nmap -T4, {:.1}x faster than nmap --min-rate 100000.\n",
        median.hwm_kb as f64 / 1024.0,
        median.probes,
        median.retrans,
        median.drops,
        t_nmap / median.secs,
        t_fast / median.secs
    );
    println!("{summary}");

    // The same node with 5 % of its incoming packets dropped at random.
    node.add_random_loss(0.05).expect("loss rule");
    println!(
        "### With 5 % random loss on the node (`iptables -m statistic --probability 0.05 -j DROP`)\n"
    );
    println!("| scanner | wall time | states vs lossless `nmap -T4` |");
    println!("|---|---|---|");
    if std::env::var_os("PW_BENCH_LOSS_NMAP").is_some() {
        let (t_l, xml) = timed(
            scanner,
            &[
                "timeout", "900", "nmap", "-n", "-Pn", "-sS", "-T4", "-p-", "-oX", "-", &t,
            ],
        );
        println!(
            "| `nmap -n -Pn -sS -T4 -p-` | {t_l:.1} s | {} ports differ |",
            diff(&reference, &nmap_states(&xml))
        );
    }
    let mut lossy: Vec<Ours> = (0..3)
        .map(|_| run_ours(scanner, "syn", "-", &[target]))
        .collect();
    lossy.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let m = &lossy[1];
    println!(
        "| portwarden (3 runs, median) | {:.2} s | {} ports differ (worst of 3); {} probes, {} retransmissions |\n",
        m.secs,
        lossy
            .iter()
            .map(|o| diff(&reference, &o.states))
            .max()
            .unwrap_or(0),
        m.probes,
        m.retrans
    );
}

fn ten_nodes() {
    let lab = Lab::builder("benchten").nodes(10).build().expect("lab");
    let scanner = lab.scanner(0);
    let mut guards = Vec::new();
    for n in lab.nodes() {
        guards.push(n.tcp_listener(22).expect("listener"));
        n.iptables(&[
            "-A", "INPUT", "-p", "tcp", "--dport", "901:1000", "-j", "DROP",
        ])
        .expect("iptables");
    }
    let targets: Vec<IpAddr> = lab.nodes().iter().map(|n| n.v4().into()).collect();
    let tstr: Vec<String> = targets.iter().map(IpAddr::to_string).collect();
    println!("## Ten nodes x 1,000 ports at once (each: 1 open, 100 filtered, 899 closed)\n");
    println!("| scanner | wall time | result vs nmap -T4 |");
    println!("|---|---|---|");
    let mut args = vec!["nmap", "-n", "-Pn", "-sS", "-T4", "-p1-1000", "-oX", "-"];
    args.extend(tstr.iter().map(String::as_str));
    let (t_nmap, xml) = timed(scanner, &args);
    let reference = nmap_states(&xml);
    println!(
        "| `nmap -n -Pn -sS -T4 -p1-1000 <10 nodes>` | {t_nmap:.2} s | reference ({} ports) |",
        reference.len()
    );
    let mut runs: Vec<Ours> = (0..5)
        .map(|_| run_ours(scanner, "syn", "1-1000", &targets))
        .collect();
    runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let m = &runs[runs.len() / 2];
    println!(
        "| portwarden (5 runs, median) | {:.3} s | {} ports differ (worst of 5) |\n",
        m.secs,
        runs.iter()
            .map(|o| diff(&reference, &o.states))
            .max()
            .unwrap_or(0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        if let Err(e) = child(&args[2..]) {
            eprintln!("bench child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = Lab::check_environment() {
        eprintln!("skipping scan benchmark: {e}");
        return;
    }
    for tool in ["nmap", "masscan"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipping scan benchmark: `{tool}` not installed (scripts/deps.sh bench)");
            return;
        }
    }
    println!(
        "Load average at start: {}\n",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    full_range();
    ten_nodes();
}
