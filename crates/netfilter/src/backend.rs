//! Which iptables backend to drive (nft or legacy), and finding its tools.
//!
//! Both backends can be installed side by side (Debian ships `iptables-nft-*` and
//! `iptables-legacy-*`), but a host's rules live in only one of them, and rules written to the
//! other are invisible to the host's own tools. Like kube-proxy's iptables wrapper and Calico
//! Felix, [`detect`] asks both and picks the one that holds more rules; on a tie (a fresh host)
//! it follows what the host's plain `iptables` command uses.
//!
//! # Caveats
//!
//! Auto-detection runs both backends' `*-save` tools; on a host that never used the legacy
//! backend, `iptables-legacy-save` loads the `ip_tables` modules (kube-proxy's wrapper does the
//! same). Pass `--backend nft|legacy` to avoid probing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use serde::Serialize;

use crate::Error;
use crate::render::Family;

/// An iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// iptables-nft: iptables rules stored as nftables objects.
    Nft,
    /// iptables-legacy: the x_tables kernel interface.
    Legacy,
}

impl Backend {
    /// `nft` or `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// How many rules a save tool prints (`-A` lines), or `None` when it cannot run.
fn count_rules(save: &Path) -> Option<usize> {
    let out = Command::new(save)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A ") || (l.starts_with('[') && l.contains("] -A ")))
            .count()
    })
}

/// Which backend the plain `iptables` command uses, from `iptables --version`.
fn host_default(dir: Option<&Path>) -> Option<Backend> {
    let prog = find_program("iptables", dir)?;
    let out = Command::new(prog)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
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
}

/// Picks the backend: the fixed one, or the one holding more rules (IPv4 and IPv6 together),
/// or on a tie the one the host's `iptables` command uses (nft when that says nothing). Tools
/// are looked up only in `dir` when given.
///
/// # Errors
/// [`Error::ToolMissing`] when neither backend's tools are installed (or the fixed one's).
pub fn detect(choice: BackendChoice, dir: Option<&Path>) -> Result<Detection, Error> {
    if let BackendChoice::Fixed(b) = choice {
        tools(b, Family::Ipv4, dir)?;
        return Ok(Detection {
            backend: b,
            reason: "chosen with --backend".into(),
        });
    }
    let count = |b: Backend| -> Option<usize> {
        let mut n = 0;
        let mut any = false;
        for f in Family::ALL {
            if let Ok(t) = tools(b, f, dir)
                && let Some(c) = count_rules(&t.save)
            {
                n += c;
                any = true;
            }
        }
        any.then_some(n)
    };
    let (nft, legacy) = (count(Backend::Nft), count(Backend::Legacy));
    let (backend, reason) = match (nft, legacy) {
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
        (Some(n), Some(l)) if n > l => (Backend::Nft, format!("nft holds {n} rules, legacy {l}")),
        (Some(n), Some(l)) if l > n => {
            (Backend::Legacy, format!("legacy holds {l} rules, nft {n}"))
        }
        (Some(n), Some(_)) => {
            let b = host_default(dir).unwrap_or(Backend::Nft);
            (
                b,
                format!("both backends hold {n} rules; `iptables` uses {b}"),
            )
        }
    };
    Ok(Detection { backend, reason })
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
