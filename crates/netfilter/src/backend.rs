//! Which iptables backend to drive (nft or legacy), and finding its tools.
//!
//! Both backends can be installed side by side (Debian ships `iptables-nft-*` and
//! `iptables-legacy-*`), but a host's rules live in only one of them, and rules written to the
//! other are invisible to the host's own tools. Like kube-proxy's iptables wrapper and Calico
//! Felix, [`detect`] asks both and picks the one that holds more of the host's rules
//! (portwarden's own are not counted, so a large policy cannot outvote the host); on a tie it
//! keeps the backend portwarden's rules are already in, and on a fresh host it follows what the
//! host's plain `iptables` command uses.
//!
//! # portwarden's rules in the other backend
//!
//! The kernel evaluates both backends' rules, so portwarden's chains left in the backend not
//! chosen keep deciding packets (a backend switch: the host's rules moved to legacy after an
//! apply on nft). [`detect`] therefore also says whether the other backend holds (or may hold)
//! portwarden's chains or jump ([`Detection::ours_elsewhere`]); [`crate::Netfilter`] then
//! moves them: the plan lists their removal, `apply` removes them once the chosen backend's
//! rules are written and confirmed, and `reset` cleans both backends. This costs nothing on the
//! agent's no-op refresh: auto-detection reads both backends anyway, `--backend` probes the
//! other one once (its filter table only, and a legacy table only when the kernel already has
//! one: `/proc/net/ip_tables_names`), and the other backend is read again only while it held
//! something of portwarden's. With only one backend's tools installed the other cannot be read
//! and is not looked at.
//!
//! # Caveats
//!
//! Auto-detection runs both backends' `*-save` tools; on a host that never used the legacy
//! backend, `iptables-legacy-save` loads the `ip_tables` modules (kube-proxy's wrapper does the
//! same). Pass `--backend nft|legacy` to avoid probing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use serde::Serialize;

use crate::Error;
use crate::chains;
pub use crate::place::Backend;
use crate::place::Family;
use crate::save::Ruleset;

/// The `--backend` choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// Detect (the default).
    #[default]
    Auto,
    /// Use this one.
    Fixed(Backend),
}

impl FromStr for BackendChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<BackendChoice, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "nft" | "nf_tables" | "iptables-nft" => Ok(BackendChoice::Fixed(Backend::Nft)),
            "legacy" | "iptables-legacy" => Ok(BackendChoice::Fixed(Backend::Legacy)),
            _ => Err(Error::Backend(s.to_string())),
        }
    }
}

/// The save and restore programs of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    /// `iptables-nft-save` etc.
    pub save: PathBuf,
    /// `iptables-nft-restore` etc.
    pub restore: PathBuf,
}

const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"];

/// Finds a program in `dir` when given, else on PATH or in the usual sbin directories.
pub fn find_program(name: &str, dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = dir {
        return Some(dir.join(name)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The tools of `backend` for `family` (looked up only in `dir` when given), or
/// [`Error::ToolMissing`]. Both are required: without `*-restore` portwarden refuses to run
/// rather than fall back to per-rule calls, which are neither atomic nor fast.
///
/// # Errors
/// [`Error::ToolMissing`] naming the first missing program.
pub fn tools(backend: Backend, family: Family, dir: Option<&Path>) -> Result<Tools, Error> {
    let find = |what: &str, purpose| {
        let name = format!("{}-{}-{what}", family.tool(), backend.as_str());
        find_program(&name, dir).ok_or(Error::ToolMissing {
            tool: name,
            purpose,
        })
    };
    Ok(Tools {
        save: find("save", "read the current rules")?,
        restore: find("restore", "write rules in one transaction")?,
    })
}

/// What one backend's save output holds, for [`detect`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Rules that are not portwarden's (`-A` lines of other chains, other than its jump).
    pub foreign: usize,
    /// Whether a chain or the jump of portwarden's is in the filter table.
    pub ours: bool,
    /// Whether the filter table could not be printed (so `ours` is unknown).
    pub hidden: bool,
}

impl Census {
    /// Whether portwarden's rules are, or may be (hidden), in this output.
    pub fn may_hold_ours(&self) -> bool {
        self.ours || self.hidden
    }

    /// Both families' census together.
    fn add(&mut self, other: Census) {
        self.foreign += other.foreign;
        self.ours |= other.ours;
        self.hidden |= other.hidden;
    }

    /// Counts one family's parsed save output (all tables, or `-t filter`), with the
    /// ownership tests the planner uses ([`chains::is_owned`], [`chains::is_our_jump`]).
    pub fn of(rs: &Ruleset) -> Census {
        let mut c = Census {
            hidden: rs.is_incompatible("filter"),
            ..Census::default()
        };
        for table in &rs.tables {
            let filter = table.name == "filter";
            for chain in &table.chains {
                let owned = filter && chains::is_owned(&chain.name);
                c.ours |= owned;
                for r in &chain.rules {
                    if owned || filter && chains::is_our_jump(&chain.name, &r.spec) {
                        c.ours = true;
                    } else {
                        c.foreign += 1;
                    }
                }
            }
        }
        c
    }
}

/// `program args` as a command line, for messages.
pub(crate) fn command_text(program: &Path, args: &[&str]) -> String {
    std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a reading tool to completion (no input): its output and its command line.
///
/// # Errors
/// [`Error::Spawn`] when it cannot be started.
pub(crate) fn run(program: &Path, args: &[&str]) -> Result<(std::process::Output, String), Error> {
    let command = command_text(program, args);
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    Ok((out, command))
}

/// Runs `t.save` with `args` and parses its output (an unprintable table is listed in
/// [`Ruleset::incompatible`]).
///
/// # Errors
/// [`Error::Spawn`], [`Error::Read`] when it fails, [`Error::Parse`].
pub(crate) fn read_save(t: &Tools, family: Family, args: &[&str]) -> Result<Ruleset, Error> {
    let (out, command) = run(&t.save, args)?;
    if !out.status.success() {
        return Err(read_error(family, command, &out));
    }
    Ruleset::parse(&String::from_utf8_lossy(&out.stdout))
}

/// [`Error::Read`] for a reading tool that failed.
pub(crate) fn read_error(family: Family, command: String, out: &std::process::Output) -> Error {
    Error::Read {
        family,
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// Whether the kernel already has a legacy (x_tables) `filter` table for `family` in the calling
/// thread's network namespace. Reading `/proc` loads nothing; `iptables-legacy-save -t filter`
/// would create the table (and load `iptable_filter`) just by asking.
pub fn legacy_filter_exists(family: Family) -> bool {
    legacy_table_exists(family, "filter")
}

/// Whether the kernel already has the legacy (x_tables) table `table` for `family` in the
/// calling thread's network namespace; reading `/proc` loads nothing (`iptables-legacy-save -t
/// nat` would create it).
pub fn legacy_table_exists(family: Family, table: &str) -> bool {
    let names = match family {
        Family::Ipv4 => "ip_tables_names",
        Family::Ipv6 => "ip6_tables_names",
    };
    std::fs::read_to_string(format!("/proc/thread-self/net/{names}"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == table))
}

/// Whether the kernel has any legacy (x_tables) table for `family` in the calling thread's
/// network namespace (`/proc/thread-self/net/ip_tables_names`); reading loads nothing.
pub fn legacy_tables_exist(family: Family) -> bool {
    let names = match family {
        Family::Ipv4 => "ip_tables_names",
        Family::Ipv6 => "ip6_tables_names",
    };
    std::fs::read_to_string(format!("/proc/thread-self/net/{names}"))
        .is_ok_and(|t| t.lines().any(|l| !l.trim().is_empty()))
}

/// The census of `backend`'s filter tables, in every family whose tools are installed (one
/// `*-save -t filter` each; none for a legacy table the kernel does not have).
pub fn probe(backend: Backend, dir: Option<&Path>) -> Census {
    let mut census = Census::default();
    for f in Family::ALL {
        if backend == Backend::Legacy && !legacy_filter_exists(f) {
            continue;
        }
        if let Some(rs) = tools(backend, f, dir)
            .ok()
            .and_then(|t| read_save(&t, f, &["-t", "filter"]).ok())
        {
            census.add(Census::of(&rs));
        }
    }
    census
}

/// Which backend the plain `iptables` command uses, from `iptables --version`.
fn host_default(dir: Option<&Path>) -> Option<Backend> {
    let (out, _) = run(&find_program("iptables", dir)?, &["--version"]).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("nf_tables") {
        Some(Backend::Nft)
    } else if text.contains("legacy") {
        Some(Backend::Legacy)
    } else {
        None
    }
}

/// The outcome of [`detect`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// The backend chosen.
    pub backend: Backend,
    /// Why, for logs and `--verbose` output.
    pub reason: String,
    /// The other backend, when it holds portwarden's chains or jump (or its filter table cannot
    /// be printed, so it may): apply moves them to `backend`, reset removes them.
    pub ours_elsewhere: Option<Backend>,
}

/// Picks the backend: the fixed one, or the one holding more of the host's rules (IPv4 and IPv6
/// together, portwarden's own not counted), on a tie the one holding portwarden's rules, else
/// the one the host's `iptables` command uses (nft when that says nothing). Also says whether
/// the other backend holds portwarden's rules (see the module docs). Tools are looked up only in
/// `dir` when given.
///
/// # Errors
/// [`Error::ToolMissing`] when neither backend's tools are installed (or the fixed one's).
pub fn detect(choice: BackendChoice, dir: Option<&Path>) -> Result<Detection, Error> {
    detect_reading(choice, dir).map(|(d, _)| d)
}

/// [`detect`], and the chosen backend's tables as auto-detection read them (every table of
/// each family whose tools ran, with rule counters: `*-save -c`), so a caller that needs them
/// right away does not read them twice; empty with a fixed backend, which reads only the
/// other one. The four reads of auto-detection run concurrently.
///
/// # Errors
/// As [`detect`].
pub fn detect_reading(
    choice: BackendChoice,
    dir: Option<&Path>,
) -> Result<(Detection, Vec<(Family, Ruleset)>), Error> {
    if let BackendChoice::Fixed(b) = choice {
        tools(b, Family::Ipv4, dir)?;
        let there = probe(b.other(), dir);
        return Ok((
            detection(b, there, "chosen with --backend".into()),
            Vec::new(),
        ));
    }
    let (nft, legacy) = std::thread::scope(|scope| {
        let legacy = scope.spawn(|| census(Backend::Legacy, dir));
        let nft = census(Backend::Nft, dir);
        // A panic in a reader thread is a bug; surface it rather than hide it.
        (
            nft,
            legacy
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        )
    });
    let (backend, reason) = choose(nft.as_ref().map(|c| c.0), legacy.as_ref().map(|c| c.0), dir)?;
    let (chosen, there) = match backend {
        Backend::Nft => (nft, legacy),
        Backend::Legacy => (legacy, nft),
    };
    let there = there.map(|c| c.0).unwrap_or_default();
    Ok((
        detection(backend, there, reason),
        chosen.map(|c| c.1).unwrap_or_default(),
    ))
}

/// The [`Detection`] of `b`, chosen for `reason`, the other backend holding `there`.
fn detection(b: Backend, there: Census, reason: String) -> Detection {
    let other = b.other();
    let (ours_elsewhere, reason) = if there.ours {
        (
            Some(other),
            format!(
                "{reason}; portwarden's rules are also in the {other} backend: apply moves \
                 them to {b}"
            ),
        )
    } else if there.hidden {
        (
            Some(other),
            format!(
                "{reason}; iptables cannot print the {other} backend's filter table: \
                 portwarden looks for its rules there with `nft`"
            ),
        )
    } else {
        (None, reason)
    };
    Detection {
        backend: b,
        reason,
        ours_elsewhere,
    }
}

/// What `b` holds in both families together (one full `*-save -c` run each, concurrently),
/// and the tables read; `None` when none of its tools could be run.
fn census(b: Backend, dir: Option<&Path>) -> Option<(Census, Vec<(Family, Ruleset)>)> {
    let read = |f: Family| {
        tools(b, f, dir)
            .ok()
            .and_then(|t| read_save(&t, f, &["-c"]).ok())
            .map(|rs| (f, rs))
    };
    let read: Vec<(Family, Ruleset)> = std::thread::scope(|scope| {
        let v6 = scope.spawn(|| read(Family::Ipv6));
        let v4 = read(Family::Ipv4);
        let v6 = v6.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        v4.into_iter().chain(v6).collect()
    });
    if read.is_empty() {
        return None;
    }
    let mut n = Census::default();
    for (_, rs) in &read {
        n.add(Census::of(rs));
    }
    Some((n, read))
}

/// The automatic choice between the backends' censuses, and why (see [`detect`]).
///
/// # Errors
/// [`Error::ToolMissing`] when neither backend could be read.
fn choose(
    nft_census: Option<Census>,
    legacy_census: Option<Census>,
    dir: Option<&Path>,
) -> Result<(Backend, String), Error> {
    let nft = nft_census.map(|c| c.foreign);
    let legacy = legacy_census.map(|c| c.foreign);
    // A filter table iptables cannot print hides the host's rules in it (counted as none):
    // that backend is the host's, whatever the other holds; plan and apply then refuse it.
    let hidden: Vec<Backend> = [(Backend::Nft, nft_census), (Backend::Legacy, legacy_census)]
        .into_iter()
        .filter(|(_, c)| c.is_some_and(|c| c.hidden))
        .map(|(b, _)| b)
        .collect();
    Ok(match (nft, legacy) {
        _ if hidden.len() == 1 => (
            hidden[0],
            format!(
                "iptables cannot print the {} backend's filter table, so the host's rules in it \
                 cannot be counted: {} is kept (plan and apply refuse that table until it can \
                 be printed)",
                hidden[0], hidden[0]
            ),
        ),
        (None, None) => {
            return Err(Error::ToolMissing {
                tool: "iptables-nft-save or iptables-legacy-save".into(),
                purpose: "read the current rules",
            });
        }
        (Some(_), None) => (
            Backend::Nft,
            "only the nft backend is installed".to_string(),
        ),
        (None, Some(_)) => (
            Backend::Legacy,
            "only the legacy backend is installed".to_string(),
        ),
        (Some(n), Some(l)) if n > l => (
            Backend::Nft,
            format!("nft holds {n} of the host's rules, legacy {l}"),
        ),
        (Some(n), Some(l)) if l > n => (
            Backend::Legacy,
            format!("legacy holds {l} of the host's rules, nft {n}"),
        ),
        (Some(n), Some(_)) => {
            let ours_in = |b: Backend| match b {
                Backend::Nft => nft_census.is_some_and(|c| c.may_hold_ours()),
                Backend::Legacy => legacy_census.is_some_and(|c| c.may_hold_ours()),
            };
            let with_ours = [Backend::Nft, Backend::Legacy]
                .into_iter()
                .filter(|&b| ours_in(b))
                .collect::<Vec<_>>();
            match with_ours.as_slice() {
                [b] => (
                    *b,
                    format!("both backends hold {n} of the host's rules; portwarden's are in {b}"),
                ),
                _ => {
                    let b = host_default(dir).unwrap_or(Backend::Nft);
                    (
                        b,
                        format!("both backends hold {n} of the host's rules; `iptables` uses {b}"),
                    )
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses() {
        assert_eq!(
            "auto".parse::<BackendChoice>().unwrap(),
            BackendChoice::Auto
        );
        assert_eq!(
            "Legacy".parse::<BackendChoice>().unwrap(),
            BackendChoice::Fixed(Backend::Legacy)
        );
        let e = "nftables2"
            .parse::<BackendChoice>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("nft, legacy or auto"), "{e}");
    }

    #[test]
    fn missing_tool_is_named_with_the_fix() {
        let e = find_program("portwarden-no-such-tool-save", None);
        assert!(e.is_none());
        let err = Error::ToolMissing {
            tool: "iptables-nft-restore".into(),
            purpose: "write rules in one transaction",
        }
        .to_string();
        assert!(err.contains("apt-get install iptables") && err.contains("iptables-nft-restore"));
    }

    #[test]
    fn the_census_counts_the_hosts_rules_not_ours() {
        let jump = crate::render::jump_spec(crate::chains::Path::Input);
        let text = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:PORTWARDEN-INPUT - [0:0]\n:PORTWARDEN-FOO - [0:0]\n\
             [1:2] -A INPUT {jump}\n-A INPUT -j PORTWARDEN-INPUT\n-A PORTWARDEN-INPUT -j RETURN\n\
             -A PORTWARDEN-FOO -j ACCEPT\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n\
             -A PREROUTING -j ACCEPT\nCOMMIT\n"
        );
        let of = |text: &str| Census::of(&Ruleset::parse(text).unwrap());
        let c = of(&text);
        assert_eq!((c.foreign, c.ours, c.hidden), (3, true, false));
        let c = of("*filter\n:INPUT ACCEPT [0:0]\n:PORTWARDEN-FOO - [0:0]\nCOMMIT\n");
        assert!(!c.may_hold_ours());
        let c = of("# Table `filter' is incompatible, use 'nft' tool.\n");
        assert!(c.hidden && c.may_hold_ours() && c.foreign == 0);
    }

    /// Fake tools in a private directory: each `*-save` prints its file `NAME.out`.
    fn fake_tools(tag: &str, saves: &[(&str, &str)]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("pw-nf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (save, out) in saves {
            let restore = save.replace("-save", "-restore");
            std::fs::write(dir.join(save), "#!/bin/sh\ncat \"$0.out\"\n").unwrap();
            std::fs::write(dir.join(format!("{save}.out")), out).unwrap();
            std::fs::write(dir.join(&restore), "#!/bin/sh\n").unwrap();
            for p in [save.to_string(), restore] {
                std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            }
        }
        dir
    }

    /// An nft filter table iptables cannot print holds the host's rules unseen: one legacy
    /// rule must not outvote it and move portwarden to legacy.
    #[test]
    fn a_table_iptables_cannot_print_is_not_outvoted() {
        let dir = fake_tools(
            "hidden",
            &[
                (
                    "iptables-nft-save",
                    "# Table `filter' is incompatible, use 'nft' tool.\n",
                ),
                (
                    "iptables-legacy-save",
                    "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 1 -j ACCEPT\nCOMMIT\n",
                ),
            ],
        );
        let d = detect(BackendChoice::Auto, Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(d.backend, Backend::Nft, "{}", d.reason);
        assert!(d.reason.contains("cannot print"), "{}", d.reason);
    }

    #[test]
    fn missing_restore_is_refused() {
        let dir = std::env::temp_dir().join(format!("pw-nf-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // a save tool alone is not enough: no fallback to per-rule calls
        std::fs::write(dir.join("iptables-nft-save"), "").unwrap();
        let e = tools(Backend::Nft, Family::Ipv4, Some(&dir)).unwrap_err();
        assert!(
            matches!(&e, Error::ToolMissing { tool, .. } if tool == "iptables-nft-restore"),
            "{e}"
        );
        let e = detect(BackendChoice::Fixed(Backend::Nft), Some(&dir)).unwrap_err();
        assert!(
            e.to_string().contains("`iptables-nft-restore` not found"),
            "{e}"
        );
        let e = detect(BackendChoice::Auto, Some(&dir)).unwrap_err();
        assert!(matches!(e, Error::ToolMissing { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
