//! One lab namespace: run commands and closures inside it, and the small netfilter/tc helpers
//! tests need.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Output, Stdio};

use nix::sched::{CloneFlags, setns};

use crate::LabError;

/// The sysctls [`Netns::lift_icmp_rate_limits`] sets, in order.
pub const LIFTED_ICMP_LIMITS: [(&str, &str); 4] = [
    ("net.ipv4.icmp_ratelimit", "0"),
    ("net.ipv6.icmp.ratelimit", "0"),
    ("net.ipv4.icmp_msgs_per_sec", "100000"),
    ("net.ipv4.icmp_msgs_burst", "100000"),
];

/// A network namespace of a lab, with the addresses assigned to its `eth0`.
///
/// `Netns` is a plain description (name and addresses); it does not own the namespace — the
/// [`Lab`](crate::Lab) does — so it can be cloned and moved into threads freely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// The namespace name, as listed by `ip netns list` (under `/run/netns`).
    pub name: String,
    /// IPv4 addresses on `eth0`, primary first.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses on `eth0`, primary first.
    pub ipv6: Vec<Ipv6Addr>,
}

/// Renders a command line for error messages.
pub(crate) fn show(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `program args` and returns stdout, or a [`LabError`] naming the command and its stderr.
pub(crate) fn run_checked(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: show(program, args),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::CommandFailed {
            command: show(program, args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Netns {
    /// The primary IPv4 address (`0.0.0.0` if none; namespaces made by [`Lab`](crate::Lab)
    /// always have one).
    pub fn v4(&self) -> Ipv4Addr {
        self.ipv4.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The primary IPv6 address (`::` if none).
    pub fn v6(&self) -> Ipv6Addr {
        self.ipv6.first().copied().unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    /// All addresses, IPv4 first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.ipv6.iter().map(|a| IpAddr::V6(*a)))
            .collect()
    }

    fn netns_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["netns", "exec", self.name.as_str()];
        v.extend_from_slice(args);
        v
    }

    /// Runs `args` inside the namespace (`ip netns exec NAME args...`) and returns its standard
    /// output.
    ///
    /// # Errors
    /// [`LabError::Spawn`] when `ip` cannot start, [`LabError::CommandFailed`] (with the command
    /// line and its stderr) when the command exits unsuccessfully.
    pub fn exec(&self, args: &[&str]) -> Result<String, LabError> {
        run_checked("ip", &self.netns_args(args))
    }

    /// Runs `args` inside the namespace and returns the whole [`Output`] without checking the
    /// exit status.
    ///
    /// # Errors
    /// [`LabError::Spawn`] when `ip` cannot start.
    pub fn output(&self, args: &[&str]) -> Result<Output, LabError> {
        let full = self.netns_args(args);
        Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Spawn {
                command: show("ip", &full),
                source,
            })
    }

    /// Runs `args` inside the namespace with `input` on its standard input (`nft -f -`,
    /// `iptables-restore`) and returns its standard output.
    ///
    /// # Errors
    /// [`LabError::Spawn`] when it cannot start, [`LabError::CommandFailed`] — naming the
    /// command and showing the input — when it exits unsuccessfully.
    pub fn exec_stdin(&self, args: &[&str], input: &str) -> Result<String, LabError> {
        use std::io::Write;
        let full = self.netns_args(args);
        let err = |source| LabError::Spawn {
            command: show("ip", &full),
            source,
        };
        let mut child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).map_err(err)?;
        }
        let out = child.wait_with_output().map_err(err)?;
        if !out.status.success() {
            return Err(LabError::CommandFailed {
                command: format!("{} <<EOF\n{input}EOF", show("ip", &full)),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `args` inside the namespace as a child process; the returned guard kills it on
    /// drop. Standard output and error are discarded.
    ///
    /// # Errors
    /// [`LabError::Spawn`] when the process cannot start.
    pub fn spawn(&self, args: &[&str]) -> Result<LabChild, LabError> {
        let full = self.netns_args(args);
        let child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: show("ip", &full),
                source,
            })?;
        Ok(LabChild { child })
    }

    /// Runs `iptables args...` inside the namespace (never in the root namespace).
    ///
    /// # Errors
    /// As [`Netns::exec`].
    pub fn iptables(&self, args: &[&str]) -> Result<String, LabError> {
        let mut v = vec!["iptables", "-w"];
        v.extend_from_slice(args);
        self.exec(&v)
    }

    /// Runs `ip6tables args...` inside the namespace.
    ///
    /// # Errors
    /// As [`Netns::exec`].
    pub fn ip6tables(&self, args: &[&str]) -> Result<String, LabError> {
        let mut v = vec!["ip6tables", "-w"];
        v.extend_from_slice(args);
        self.exec(&v)
    }

    /// Drops each incoming packet with `probability` (0.0–1.0), IPv4 and IPv6, by inserting an
    /// `iptables -m statistic --mode random` rule at the top of this namespace's `INPUT`.
    ///
    /// # Errors
    /// As [`Netns::exec`].
    pub fn add_random_loss(&self, probability: f64) -> Result<(), LabError> {
        let p = format!("{probability}");
        let rule = [
            "-I",
            "INPUT",
            "1",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            p.as_str(),
            "-j",
            "DROP",
        ];
        self.iptables(&rule)?;
        self.ip6tables(&rule)?;
        Ok(())
    }

    /// Adds `tc netem` loss of `percent` % on egress of this namespace's `eth0`.
    ///
    /// # Errors
    /// As [`Netns::exec`] (needs the `sch_netem` kernel module).
    pub fn add_netem_loss(&self, percent: f64) -> Result<(), LabError> {
        let p = format!("{percent}%");
        self.exec(&[
            "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "loss", &p,
        ])
        .map(drop)
    }

    /// Sets a sysctl inside the namespace (`sysctl -w key=value`).
    ///
    /// # Errors
    /// As [`Netns::exec`].
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let kv = format!("{key}={value}");
        self.exec(&["sysctl", "-q", "-w", &kv]).map(drop)
    }

    /// Lifts this namespace's ICMP error rate limits (labs keep the kernel's by default; see
    /// the [crate documentation](crate)): `net.ipv4.icmp_ratelimit=0`,
    /// `net.ipv6.icmp.ratelimit=0`, and the namespace-wide `net.ipv4.icmp_msgs_per_sec` and
    /// `icmp_msgs_burst` raised to 100000, so every closed or rejected port answers at once.
    ///
    /// # Errors
    /// As [`Netns::exec`], naming the sysctl that could not be set.
    pub fn lift_icmp_rate_limits(&self) -> Result<(), LabError> {
        for (key, value) in LIFTED_ICMP_LIMITS {
            self.sysctl(key, value)?;
        }
        Ok(())
    }

    /// Moves the *calling thread* into this network namespace (setns(2) with `CLONE_NEWNET`).
    /// Sockets opened afterwards by this thread, and threads it spawns, live in the namespace.
    ///
    /// # Errors
    /// [`LabError::Enter`] when the namespace file cannot be opened or setns(2) fails.
    pub fn enter_current_thread(&self) -> Result<(), LabError> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|source| LabError::Enter {
            namespace: self.name.clone(),
            source,
        })?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| LabError::Enter {
            namespace: self.name.clone(),
            source: std::io::Error::from(e),
        })
    }

    /// Runs `f` on a new thread that first enters this namespace, and returns its result.
    /// Threads that `f` spawns inherit the namespace; sockets it opens keep it for their life.
    ///
    /// # Errors
    /// [`LabError::Enter`] when the namespace cannot be entered, [`LabError::ThreadPanicked`]
    /// when `f` panics.
    pub fn run<T, F>(&self, f: F) -> Result<T, LabError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || -> Result<T, LabError> {
                me.enter_current_thread()?;
                Ok(f())
            })
            .map_err(|source| LabError::Spawn {
                command: format!("thread in {}", self.name),
                source,
            })?;
        handle.join().map_err(|_| LabError::ThreadPanicked {
            namespace: self.name.clone(),
        })?
    }
}

/// A process started inside a lab namespace; killed and reaped when dropped.
#[derive(Debug)]
pub struct LabChild {
    child: Child,
}

impl LabChild {
    /// The process id (of the `ip netns exec` process, which execs the command).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself and returns its status.
    ///
    /// # Errors
    /// The error from wait(2).
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        // kill() fails only when the process already exited; either way wait() reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
