//! What the report says about the machine a run was made on: CPUs, memory, kernel, iptables
//! backend and the versions of every peer tool, plus the load average — a benchmark number
//! means little without them.

use std::process::Command;

/// One `name: value` line of the machine table.
pub type Fact = (String, String);

fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("(no output)")
                .to_string()
        }
        Err(_) => "not installed".to_string(),
    }
}

/// The first line matching `key` in a `/proc` file, after its colon.
pub fn proc_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The load average (1, 5, 15 minutes) from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Collects the machine facts. Never fails: what cannot be read says so.
pub fn facts() -> Vec<Fact> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = proc_field(&meminfo, "MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let masscan = first_line("masscan", &["--version"]);
    vec![
        ("CPUs (nproc)".into(), nproc.to_string()),
        (
            "CPU model".into(),
            proc_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
        ),
        ("memory".into(), mem),
        ("OS".into(), os),
        ("kernel".into(), kernel),
        (
            "iptables (default backend)".into(),
            first_line("iptables", &["--version"]),
        ),
        (
            "iptables-legacy".into(),
            first_line("iptables-legacy", &["--version"]),
        ),
        ("nmap".into(), first_line("nmap", &["--version"])),
        ("masscan".into(), masscan),
        ("rustc".into(), first_line("rustc", &["--version"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let t = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nMemTotal:       24634300 kB\n";
        assert_eq!(
            proc_field(t, "model name").as_deref(),
            Some("AMD EPYC 7B13")
        );
        assert_eq!(proc_field(t, "MemTotal").as_deref(), Some("24634300 kB"));
        assert_eq!(proc_field(t, "flags"), None);
    }

    #[test]
    fn facts_name_every_tool() {
        let f = facts();
        for key in [
            "CPUs (nproc)",
            "kernel",
            "nmap",
            "masscan",
            "iptables (default backend)",
        ] {
            assert!(f.iter().any(|(k, _)| k == key), "{key} missing: {f:?}");
        }
    }
}
