//! Runs one measured program inside a lab namespace and records what it cost: wall time from
//! spawn to exit, user and system CPU time and peak memory (from `wait4(2)`'s rusage of that
//! very child, so each run's figures are its own), its exit status and its output.
//!
//! A key design decision is that every measured program — portwarden and each peer alike — is
//! started the same way: spawned directly by a thread that has entered the namespace (no
//! `ip netns exec` in front of one and not of the other), so start-up costs are comparable.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use portwarden_lab::Netns;

/// What one run of a program cost and printed.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Seconds from spawn to exit.
    pub wall: f64,
    /// User CPU seconds (the program and the children it waited for).
    pub user: f64,
    /// System CPU seconds.
    pub sys: f64,
    /// Peak resident memory in kB (`ru_maxrss`).
    pub max_rss_kb: u64,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Measured {
    /// CPU seconds, user plus system.
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }

    /// Fails with the command line and its standard error unless it exited 0.
    ///
    /// # Errors
    /// When the exit code was not 0.
    pub fn check(self, what: &str) -> Result<Measured> {
        if self.code == Some(0) {
            return Ok(self);
        }
        bail!(
            "{what} failed (exit {:?}): {}",
            self.code,
            self.stderr.trim().lines().last().unwrap_or("no error output")
        )
    }
}

/// A program and its arguments, with optional standard input and a time limit.
#[derive(Debug, Clone)]
pub struct Job {
    /// `argv[0]` and the arguments.
    pub argv: Vec<String>,
    /// Written to standard input, then closed.
    pub stdin: Option<String>,
    /// The program is killed (SIGKILL) when it runs longer than this.
    pub limit: Duration,
}

impl Job {
    /// A job with a default limit of ten minutes and no standard input.
    pub fn new<S: AsRef<str>>(argv: &[S]) -> Job {
        Job {
            argv: argv.iter().map(|s| s.as_ref().to_string()).collect(),
            stdin: None,
            limit: Duration::from_secs(600),
        }
    }

    /// Sets standard input.
    pub fn stdin(mut self, text: String) -> Job {
        self.stdin = Some(text);
        self
    }

    /// Sets the time limit.
    pub fn limit(mut self, limit: Duration) -> Job {
        self.limit = limit;
        self
    }

    /// The command line, for the report and error messages.
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }
}

/// Runs `job` inside `ns` and measures it.
///
/// # Errors
/// When the namespace cannot be entered or the program cannot be started or waited for.
pub fn run_in(ns: &Netns, job: Job) -> Result<Measured> {
    let shown = job.display();
    ns.run(move || run_here(&job))
        .with_context(|| format!("running `{shown}` in {}", ns.name))?
}

/// Runs `job` in the calling thread's namespace and measures it.
///
/// # Errors
/// When the program cannot be started or waited for.
pub fn run_here(job: &Job) -> Result<Measured> {
    let (program, args) = job.argv.split_first().context("empty command line")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if job.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}` (is it installed?)", job.display()))?;
    let started = Instant::now();
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let stdin = child.stdin.take();
    let text = job.stdin.clone();
    let writer = std::thread::spawn(move || {
        if let (Some(mut pipe), Some(text)) = (stdin, text) {
            // A program that exits without reading all of its input is not our error here;
            // its exit status tells.
            let _ = pipe.write_all(text.as_bytes());
        }
    });
    let mut out = child.stdout.take().context("no stdout pipe")?;
    let mut err = child.stderr.take().context("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let watchdog = Watchdog::start(pid, job.limit);
    let (status, usage) = wait4(pid).with_context(|| format!("waiting for `{}`", job.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let killed = watchdog.stop();
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let mut stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    if killed {
        stderr.push_str(&format!("\nkilled after the {:?} limit", job.limit));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        wall,
        user: tv(usage.ru_utime),
        sys: tv(usage.ru_stime),
        max_rss_kb: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout,
        stderr,
    })
}

/// Reaps `pid` and returns its wait status and resource usage.
fn wait4(pid: i32) -> std::io::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is a plain C struct for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers point to live, writable locals for the duration of the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Kills a process that outlives its limit. The child is reaped only by [`wait4`], so its pid
/// cannot be reused while the watchdog may still signal it.
struct Watchdog {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(pid: i32, limit: Duration) -> Watchdog {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || match rx.recv_timeout(limit) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // SAFETY: kill(2) with a pid of our own unreaped child and a valid signal.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                true
            }
            _ => false,
        });
        Watchdog { stop, handle }
    }

    /// Stops the watchdog; true when it had killed the process.
    fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.handle.join().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_program_and_captures_its_output() {
        let m = run_here(&Job::new(&["sh", "-c", "cat; echo err >&2; exit 3"]).stdin("hi\n".into()))
            .expect("runs");
        assert_eq!(m.stdout, "hi\n");
        assert_eq!(m.stderr.trim(), "err");
        assert_eq!(m.code, Some(3));
        assert!(m.max_rss_kb > 0);
        assert!(m.wall >= 0.0 && m.cpu() >= 0.0);
        let e = m.check("sh").expect_err("exit 3 is a failure");
        assert!(e.to_string().contains("exit Some(3)"), "{e}");
    }

    #[test]
    fn a_program_over_its_limit_is_killed() {
        let m = run_here(&Job::new(&["sleep", "30"]).limit(Duration::from_millis(100)))
            .expect("runs");
        assert_eq!(m.code, None);
        assert!(m.stderr.contains("killed after"), "{}", m.stderr);
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let e = run_here(&Job::new(&["/nonexistent/pw-bench-tool"])).expect_err("fails");
        assert!(e.to_string().contains("cannot start"), "{e}");
    }
}
