//! Argument groups shared by several commands, and their resolution: policy files, the node
//! they are evaluated for, and output formats.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;
use portwarden_policy::{Loaded, Problems, load_paths_with_warnings, validate};

/// `-f PATH... [--node NAME] [--inventory FILE | --labels k=v,...]`
#[derive(clap::Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Policy files or directories (read recursively for *.yaml / *.yml).
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The node to evaluate for (default: this host's name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Inventory file giving the node's labels (an Inventory among -f files also works).
    #[arg(long, value_name = "FILE", conflicts_with = "labels")]
    pub inventory: Option<PathBuf>,
    /// The node's labels, instead of an inventory: `role=web,zone=a`.
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A node resolved from the arguments: its name and the labels policies select on.
#[derive(Debug, Clone)]
pub struct ResolvedNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Table for people or JSON for machines.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// `--labels k=v,...`: each key at most once, keys and values as Kubernetes allows them (the
/// policy documents' own check); the error names the offending label.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => (k.trim(), v.trim()),
            _ => {
                return Err(format!(
                    "\"{pair}\" is not key=value (example: --labels role=web,zone=a)"
                ));
            }
        };
        if let Some((message, hint)) =
            validate::label_key_problem(k).or_else(|| validate::label_value_problem(v))
        {
            return Err(format!("\"{pair}\": {message} ({hint})"));
        }
        if let Some(first) = labels.insert(k.to_string(), v.to_string()) {
            return Err(format!(
                "duplicate label key \"{k}\" in \"{pair}\" (already given as {k}={first}); a node has one value per label"
            ));
        }
    }
    Ok(labels)
}

/// A probe rate (`--rate`, `--max-rate-per-target`, `--scan-rate`): at least 1 per second.
/// The engine reads 0 as "no cap", the opposite of what a cap of 0 says, so it is refused.
pub fn parse_rate(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err(
            "a rate must be at least 1 probe per second (0 would mean no cap at all; leave the flag out for adaptive timing without a cap)"
                .into(),
        ),
        Ok(rate) => Ok(rate),
        Err(e) => Err(format!("not a number of probes per second: {e}")),
    }
}

/// The longest `--confirm-within`: a day. A rollback is for the hour after a change; a
/// longer window is more likely a typo than a plan.
pub const MAX_WINDOW_SECS: u64 = 24 * 3600;

/// A rollback window (`apply --confirm-within`), in seconds: `90`, `90s`, `5m`, `1h`,
/// `1h30m`. A bare number is seconds, as for every other duration flag (`--wait`, `--refresh`,
/// `--confirm-budget`), which is also the safe side of a mistake: `5` meant as minutes rolls
/// back sooner, not later. At least 1 s, at most [`MAX_WINDOW_SECS`].
pub fn parse_window(s: &str) -> Result<u64, String> {
    const EXAMPLE: &str = "give a duration such as 60s, 5m, 1h30m or 90 (seconds)";
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty: {EXAMPLE}"));
    }
    if t.starts_with('-') {
        return Err(format!("\"{t}\" is negative: {EXAMPLE}"));
    }
    let too_long = || {
        format!(
            "\"{t}\" is longer than the longest window, 24h (a rollback is for the hour after a change)"
        )
    };
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!(
                "\"{t}\": expected a number at \"{rest}\"; {EXAMPLE}"
            ));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        let scale = match unit {
            "" if total == 0 && rest.is_empty() => 1,
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "" if rest.is_empty() => {
                return Err(format!(
                    "\"{t}\": a number without a unit after another; {EXAMPLE}"
                ));
            }
            "" => {
                return Err(format!(
                    "\"{t}\": unexpected \"{rest}\" (whole numbers, each with s, m or h); {EXAMPLE}"
                ));
            }
            other => {
                return Err(format!(
                    "\"{t}\": unknown unit \"{other}\" (s, m or h); {EXAMPLE}"
                ));
            }
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_long)?;
    }
    if total == 0 {
        return Err(format!(
            "\"{t}\" is no window at all: the rollback would undo the apply at once; give at least 1s, or leave --confirm-within out to apply for good"
        ));
    }
    if total > MAX_WINDOW_SECS {
        return Err(too_long());
    }
    Ok(total)
}

/// Prints the warnings, then the errors to standard error followed by a count of the errors
/// (warnings are shown but not counted), and returns the error to exit on.
pub fn report_diagnostics(problems: &Problems) -> anyhow::Error {
    let Problems { errors, warnings } = problems;
    for d in warnings.iter().chain(errors) {
        eprint!("{d}");
    }
    let files: std::collections::BTreeSet<&str> = errors.iter().map(|d| d.file.as_str()).collect();
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    anyhow::anyhow!(
        "{} in {}; nothing was changed",
        plural(errors.len(), "problem"),
        plural(files.len(), "file")
    )
}

/// Loads and validates documents, or prints every problem and fails. Warnings go to standard
/// error either way.
pub fn load(files: &[PathBuf]) -> anyhow::Result<Loaded> {
    let loaded = load_paths_with_warnings(files).map_err(|p| report_diagnostics(&p))?;
    for w in &loaded.warnings {
        eprint!("{w}");
    }
    Ok(loaded)
}

/// Loads the file given with `--inventory`, which must hold an Inventory document.
pub fn load_inventory(path: &Path) -> anyhow::Result<Loaded> {
    let loaded = load(&[path.to_path_buf()])?;
    if loaded.inventories == 0 {
        bail!("{}: no Inventory document in this file", path.display());
    }
    Ok(loaded)
}

/// This host's name, the default for `--node`.
pub fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .context("cannot tell this host's name; pass --node NAME")?;
    Ok(name.trim().to_string())
}

impl PolicyArgs {
    /// Loads the policy files and resolves the node they are evaluated for.
    pub fn load(&self) -> anyhow::Result<(Loaded, ResolvedNode)> {
        let loaded = load(&self.files)?;
        let node = self.resolve_node(&loaded)?;
        Ok((loaded, node))
    }

    fn resolve_node(&self, loaded: &Loaded) -> anyhow::Result<ResolvedNode> {
        let name = match &self.node {
            Some(n) => n.clone(),
            None => host_name()?,
        };
        if let Some(labels) = &self.labels {
            return Ok(ResolvedNode {
                name,
                labels: labels.clone(),
            });
        }
        let from_file;
        let (inventory, source) = match &self.inventory {
            Some(path) => {
                from_file = load_inventory(path)?;
                (&from_file, path.display().to_string())
            }
            None if loaded.inventories > 0 => (loaded, "the -f files".to_string()),
            None => bail!(
                "no labels for node \"{name}\": pass --inventory FILE or --labels k=v,... (--labels '' for none)"
            ),
        };
        match inventory.node(&name) {
            Some(n) => Ok(ResolvedNode {
                name,
                labels: n.labels.clone(),
            }),
            None => {
                let known: Vec<&str> = inventory.nodes.iter().map(|n| n.name.as_str()).collect();
                bail!(
                    "node \"{name}\" is not in the inventory ({source}); known nodes: {}",
                    known.join(", ")
                )
            }
        }
    }
}

/// The scanner's source settings from repeated `--source` addresses: the first of each family
/// is the source of that family, the rest are extra sources for rate-limited targets.
pub fn scan_sources(sources: &[std::net::IpAddr]) -> portwarden_scan::ScanConfig {
    use std::net::IpAddr;
    let mut config = portwarden_scan::ScanConfig::default();
    for s in sources {
        match s {
            IpAddr::V4(a) if config.source_v4.is_none() => config.source_v4 = Some(*a),
            IpAddr::V6(a) if config.source_v6.is_none() => config.source_v6 = Some(*a),
            other if !config.extra_sources.contains(other) => config.extra_sources.push(*other),
            _ => {}
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        let l = parse_labels("role=web, zone=a").unwrap();
        assert_eq!(l["role"], "web");
        assert_eq!(l["zone"], "a");
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("role").unwrap_err().contains("key=value"));
        let e = parse_labels("role=web,role=db").unwrap_err();
        assert!(
            e.contains("duplicate label key \"role\" in \"role=db\""),
            "{e}"
        );
        let e = parse_labels("bad label=x").unwrap_err();
        assert!(e.starts_with("\"bad label=x\": invalid label key"), "{e}");
        assert!(parse_labels("role=").unwrap()["role"].is_empty());
    }

    #[test]
    fn windows_parse_with_units_or_as_seconds() {
        assert_eq!(parse_window("60s"), Ok(60));
        assert_eq!(parse_window("60"), Ok(60));
        assert_eq!(parse_window(" 5m "), Ok(300));
        assert_eq!(parse_window("1h30m"), Ok(5400));
        assert_eq!(parse_window("1m30s"), Ok(90));
        assert_eq!(parse_window("24h"), Ok(MAX_WINDOW_SECS));
        let err = |s: &str| parse_window(s).unwrap_err();
        assert!(err("0").contains("no window at all"), "{}", err("0"));
        assert!(err("0s").contains("no window at all"));
        assert!(err("-5s").contains("negative"));
        assert!(err("1x").contains("unknown unit \"x\""), "{}", err("1x"));
        assert!(
            err("1.5s").contains("unexpected \".5s\""),
            "{}",
            err("1.5s")
        );
        assert!(err("s").contains("expected a number"));
        assert!(err("").contains("empty"));
        assert!(err("25h").contains("longer than the longest window"));
        assert!(err("99999999999999999999s").contains("longer than"));
        assert!(err("9999999999999999h").contains("longer than"));
        assert!(err("1m30").contains("without a unit"), "{}", err("1m30"));
    }

    #[test]
    fn rates_are_at_least_one() {
        assert_eq!(parse_rate("1"), Ok(1));
        assert!(
            parse_rate("0")
                .unwrap_err()
                .contains("at least 1 probe per second")
        );
        assert!(parse_rate("-1").is_err());
    }
}
