//! Runs one measured program inside a lab namespace and records what it cost: wall time from
//! spawn to exit, user and system CPU time and peak memory (from `wait4(2)`'s rusage of that
//! very child, so each run's figures are its own), its exit status and its output.
//!
//! A key design decision is that every measured program — portwarden and each peer alike — is
//! started the same way: spawned directly by a thread that has entered the namespace (no
//! `ip netns exec` in front of one and not of the other), so start-up costs are comparable.
//!
//! Peak memory needs one more step. A process's `ru_maxrss` starts from the high-water mark of
//! the memory it was forked with, so a program spawned by the suite (tens of MB of results in
//! memory) would inherit the suite's figure. The suite therefore starts each program through a
//! fresh copy of its own small binary in helper mode ([`HELPER_FLAG`], [`use_helper`]), which
//! spawns the program, times it, reaps it and writes the program's own usage to a file.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use portwarden_lab::Netns;

/// The first argument that makes `portwarden-bench` the measuring helper:
/// `portwarden-bench __measure-exec USAGE_FILE PROGRAM ARGS...`.
pub const HELPER_FLAG: &str = "__measure-exec";

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Starts every later measured program through `exe` in helper mode, so its peak memory is
/// its own.
pub fn use_helper(exe: PathBuf) {
    let _ = HELPER.set(exe);
}

/// What one program used, as the helper reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Seconds from spawn to exit.
    pub wall: f64,
    /// User CPU seconds.
    pub user: f64,
    /// System CPU seconds.
    pub sys: f64,
    /// Peak resident memory in kB.
    pub max_rss_kb: u64,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
}

impl Usage {
    /// One line: `wall user sys max_rss_kb code` (code `-` for a signal).
    pub fn to_line(&self) -> String {
        let code = self.code.map_or("-".to_string(), |c| c.to_string());
        format!(
            "{} {} {} {} {code}",
            self.wall, self.user, self.sys, self.max_rss_kb
        )
    }

    /// Parses [`Usage::to_line`].
    pub fn parse(line: &str) -> Option<Usage> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [wall, user, sys, rss, code] = f.as_slice() else {
            return None;
        };
        Some(Usage {
            wall: wall.parse().ok()?,
            user: user.parse().ok()?,
            sys: sys.parse().ok()?,
            max_rss_kb: rss.parse().ok()?,
            code: if *code == "-" {
                None
            } else {
                Some(code.parse().ok()?)
            },
        })
    }
}

/// Spawns `argv` with this process's standard streams, waits for it and returns its usage.
///
/// # Errors
/// When it cannot be started or waited for.
pub fn measure_child(argv: &[String]) -> Result<Usage> {
    let (program, args) = argv.split_first().context("empty command line")?;
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot start `{}` (is it installed?)", argv.join(" ")))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let (status, usage) = wait4(pid).context("waiting for the program")?;
    Ok(Usage {
        wall: started.elapsed().as_secs_f64(),
        user: tv(usage.ru_utime),
        sys: tv(usage.ru_stime),
        max_rss_kb: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
    })
}

/// The helper: `args` = `USAGE_FILE PROGRAM ARGS...`. Runs the program, writes its usage to
/// the file and returns its exit code (1 on a failure of the helper itself, 128+n when the
/// program died of signal n).
pub fn helper_main(args: &[String]) -> i32 {
    let Some((out, argv)) = args.split_first() else {
        eprintln!("portwarden-bench {HELPER_FLAG}: usage: USAGE_FILE PROGRAM ARGS...");
        return 1;
    };
    match measure_child(argv) {
        Ok(u) => {
            if let Err(e) = std::fs::write(out, u.to_line()) {
                eprintln!("portwarden-bench {HELPER_FLAG}: writing {out}: {e}");
                return 1;
            }
            u.code.unwrap_or(128 + 9)
        }
        Err(e) => {
            eprintln!("portwarden-bench {HELPER_FLAG}: {e:#}");
            1
        }
    }
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// What one run of a program cost and printed.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Seconds from spawn to exit.
    pub wall: f64,
    /// User CPU seconds (the program and the children it waited for).
    pub user: f64,
    /// System CPU seconds.
    pub sys: f64,
    /// Peak resident memory in kB (`ru_maxrss`); `None` when the program was not started
    /// through the helper (then the figure would be the suite's own).
    pub max_rss_kb: Option<u64>,
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
            self.stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("no error output")
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
    let usage_file = match HELPER.get() {
        Some(_) => Some(tempfile::NamedTempFile::new().context("creating a usage file")?),
        None => None,
    };
    let argv = command_line(job, usage_file.as_ref());
    let (program, args) = argv.split_first().context("empty command line")?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if job.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the watchdog can kill the helper and the program at once.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{}` (is it installed?)", job.display()))?;
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
    let direct = Usage {
        wall,
        user: tv(usage.ru_utime),
        sys: tv(usage.ru_stime),
        max_rss_kb: 0,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
    };
    let (u, rss) = chosen_usage(usage_file.as_ref(), direct, killed);
    Ok(Measured {
        wall: u.wall,
        user: u.user,
        sys: u.sys,
        max_rss_kb: rss,
        code: u.code,
        stdout,
        stderr,
    })
}

/// The command line to start: the program itself, or the usage helper wrapped around it when
/// one is set (it writes the program's usage, peak memory included, to `usage_file`).
fn command_line(job: &Job, usage_file: Option<&tempfile::NamedTempFile>) -> Vec<String> {
    match (HELPER.get(), usage_file) {
        (Some(helper), Some(file)) => [
            helper.to_string_lossy().into_owned(),
            HELPER_FLAG.into(),
            file.path().to_string_lossy().into_owned(),
        ]
        .into_iter()
        .chain(job.argv.iter().cloned())
        .collect(),
        _ => job.argv.clone(),
    }
}

/// The usage to report, with the peak memory when known: the helper's report when a helper
/// ran, wrote one and the program was not killed; the direct usage without an exit code when
/// a helper ran otherwise; the direct usage when no helper ran.
fn chosen_usage(
    usage_file: Option<&tempfile::NamedTempFile>,
    direct: Usage,
    killed: bool,
) -> (Usage, Option<u64>) {
    let reported = usage_file
        .and_then(|f| std::fs::read_to_string(f.path()).ok())
        .and_then(|l| Usage::parse(&l));
    match (usage_file, reported) {
        (Some(_), Some(u)) if !killed => (u, Some(u.max_rss_kb)),
        (Some(_), _) => (
            Usage {
                code: None,
                ..direct
            },
            None,
        ),
        (None, _) => (direct, None),
    }
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
                // SAFETY: kill(2) of the process group our own unreaped child leads.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
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
        let m =
            run_here(&Job::new(&["sh", "-c", "cat; echo err >&2; exit 3"]).stdin("hi\n".into()))
                .expect("runs");
        assert_eq!(m.stdout, "hi\n");
        assert_eq!(m.stderr.trim(), "err");
        assert_eq!(m.code, Some(3));
        assert_eq!(m.max_rss_kb, None, "no helper in unit tests");
        assert!(m.wall >= 0.0 && m.cpu() >= 0.0);
        let e = m.check("sh").expect_err("exit 3 is a failure");
        assert!(e.to_string().contains("exit Some(3)"), "{e}");
    }

    #[test]
    fn the_helper_measures_its_child_and_reports_a_line() {
        let u = measure_child(&["sh".into(), "-c".into(), "exit 4".into()]).expect("runs");
        assert_eq!(u.code, Some(4));
        assert!(u.max_rss_kb > 0 && u.wall >= 0.0);
        assert_eq!(Usage::parse(&u.to_line()), Some(u));
        let killed = Usage { code: None, ..u };
        assert_eq!(Usage::parse(&killed.to_line()), Some(killed));
        assert_eq!(Usage::parse("1 2 3"), None);
        assert_eq!(Usage::parse("a b c d e"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("usage");
        let code = helper_main(&[
            out.to_string_lossy().into_owned(),
            "sh".into(),
            "-c".into(),
            "exit 5".into(),
        ]);
        assert_eq!(code, 5);
        let line = std::fs::read_to_string(&out).expect("usage written");
        assert_eq!(Usage::parse(&line).map(|u| u.code), Some(Some(5)));
        assert_eq!(helper_main(&[]), 1);
    }

    #[test]
    fn a_program_over_its_limit_is_killed() {
        let m =
            run_here(&Job::new(&["sleep", "30"]).limit(Duration::from_millis(100))).expect("runs");
        assert_eq!(m.code, None);
        assert!(m.stderr.contains("killed after"), "{}", m.stderr);
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let e = run_here(&Job::new(&["/nonexistent/pw-bench-tool"])).expect_err("fails");
        assert!(e.to_string().contains("cannot start"), "{e}");
    }
}
