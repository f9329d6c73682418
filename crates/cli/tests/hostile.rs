//! Hostile documents through `portwarden validate`: huge port lists, deep nesting (flow and
//! block), alias bombs, files over the size cap, files just under it full of nodes or
//! mistakes, non-UTF-8 bytes. Each must end with a clear, located error (or be accepted when it
//! is legitimately valid) in bounded memory: the peak RSS of the `portwarden` process, read
//! from `wait4`'s resource usage, must stay under [`MAX_RSS_MB`]. No timing is asserted.
//!
//! The small hostile fixtures live in `tests/fixtures/invalid/` (checked by `cli.rs` for their
//! exact location); the large ones are generated here, never committed.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Peak resident memory allowed to `portwarden validate` on any input (MiB). An 8 MiB file of
/// a million nodes is the largest thing it accepts to parse.
const MAX_RSS_MB: u64 = 200;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    peak_mb: u64,
}

/// Runs `portwarden validate FILE` and reaps it with `wait4` to read its peak RSS.
///
/// Linux carries the peak RSS of the memory a process had before `exec` into its `ru_maxrss`.
/// `Command` normally spawns with `vfork` semantics, which would count this test process's own
/// peak; an (empty) `pre_exec` hook makes it `fork`, whose copy starts at this process's
/// current RSS (a few MB), so the figure is the validator's own within that margin.
fn validate(file: &Path) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portwarden"));
    cmd.arg("validate")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || Ok(()));
    }
    // Reaped below by wait4 (std's wait would not report the resource usage).
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().expect("run portwarden");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        out.read_to_end(&mut s).unwrap();
        s
    });
    let mut stderr = Vec::new();
    err.read_to_end(&mut stderr).unwrap();
    let stdout = reader.join().unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (std only reaps in wait/try_wait, never
    // called on it); both pointers are valid for the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Run {
        code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        // ru_maxrss is in KiB on Linux.
        peak_mb: u64::try_from(usage.ru_maxrss).unwrap() / 1024,
    }
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn policy(ports_yaml: &str) -> String {
    format!(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: hostile\nspec:\n  ports:\n{ports_yaml}"
    )
}

/// Asserts an error located at `line` whose headline contains `message`, in bounded memory.
fn assert_refused(file: &Path, line: u32, message: &str) -> Run {
    let run = validate(file);
    let name = file.display().to_string();
    assert_eq!(run.code, Some(1), "{name}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{name}: {}", run.stdout);
    let first = run.stderr.lines().next().unwrap_or("");
    let want = format!("{name}:{line}:");
    assert!(
        first.starts_with(&want) && first.contains(message),
        "{name}: expected {want}..{message}, got:\n{}",
        &run.stderr[..run.stderr.len().min(2000)]
    );
    assert!(
        run.peak_mb < MAX_RSS_MB,
        "{name}: peak RSS {} MB",
        run.peak_mb
    );
    assert!(
        run.stderr.len() < 64 * 1024,
        "{name}: {} bytes of errors",
        run.stderr.len()
    );
    run
}

fn assert_accepted(file: &Path, summary: &str) -> Run {
    let run = validate(file);
    assert_eq!(run.code, Some(0), "{}: {}", file.display(), run.stderr);
    assert!(run.stdout.starts_with(summary), "{}", run.stdout);
    assert!(run.peak_mb < MAX_RSS_MB, "peak RSS {} MB", run.peak_mb);
    run
}

#[test]
fn huge_port_lists_are_accepted_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // Every port, one list item each.
    let items: String = (1..=65535).map(|p| format!("      - {p}\n")).collect();
    let all = write(
        dir.path(),
        "all-ports.yaml",
        policy(&format!("    - state: closed\n      ports:\n{items}")).as_bytes(),
    );
    let r = assert_accepted(&all, "ok: 1 policy (1 entries)");
    eprintln!("all 65535 ports as a list: peak {} MB", r.peak_mb);
    // Every port in one string with 65,534 commas.
    let list: Vec<String> = (1..=65535).map(|p| p.to_string()).collect();
    let commas = write(
        dir.path(),
        "commas.yaml",
        policy(&format!(
            "    - state: closed\n      ports: \"{}\"\n",
            list.join(",")
        ))
        .as_bytes(),
    );
    let r = assert_accepted(&commas, "ok: 1 policy (1 entries)");
    eprintln!("all 65535 ports in one string: peak {} MB", r.peak_mb);
    // 100,000 entries.
    let entries: String = (0..100_000)
        .map(|i| format!("    - {{ports: {}, state: open}}\n", i % 65535 + 1))
        .collect();
    let many = write(dir.path(), "entries.yaml", policy(&entries).as_bytes());
    let r = assert_accepted(&many, "ok: 1 policy (100000 entries)");
    eprintln!("100,000 entries: peak {} MB", r.peak_mb);
}

#[test]
fn huge_invalid_port_lists_report_the_first_problems() {
    let dir = tempfile::tempdir().unwrap();
    // 1,000,000 invalid ports in one string on one line (7 MB).
    let bad = vec!["99999"; 1_000_000].join(",");
    let f = write(
        dir.path(),
        "bad-commas.yaml",
        policy(&format!("    - state: closed\n      ports: \"{bad}\"\n")).as_bytes(),
    );
    let r = assert_refused(&f, 8, "port 99999 is out of range");
    eprintln!("1M bad ports in a string: peak {} MB", r.peak_mb);
    // 900,000 invalid ports as a flow list on one line: one problem each, the first shown
    // with a short snippet, then a count.
    let bad = vec!["0"; 900_000].join(",");
    let f = write(
        dir.path(),
        "bad-list.yaml",
        policy(&format!("    - state: closed\n      ports: [{bad}]\n")).as_bytes(),
    );
    let r = assert_refused(&f, 8, "port 0 is not a valid port");
    assert!(
        r.stderr
            .contains("899960 more problems in this document not shown"),
        "{}",
        &r.stderr[r.stderr.len() - 500..]
    );
    assert!(
        r.stderr.lines().all(|l| l.len() < 300),
        "a snippet line is not cut"
    );
    eprintln!("900k bad ports in a list: peak {} MB", r.peak_mb);
}

#[test]
fn deep_nesting_is_refused_flow_and_block() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "flow.yaml",
        format!("a: {}\n", "[".repeat(1_000_000)).as_bytes(),
    );
    let r = assert_refused(&flow, 1, "");
    eprintln!(
        "1M open brackets: peak {} MB: {}",
        r.peak_mb,
        r.stderr.lines().next().unwrap()
    );
    let block: String = (0..2_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    let block = write(dir.path(), "block.yaml", block.as_bytes());
    let r = assert_refused(&block, 33, "nesting deeper than 32 levels");
    eprintln!("2,000 block levels: peak {} MB", r.peak_mb);
    let seqs: String = (0..2_000)
        .map(|i| format!("{}-\n", " ".repeat(i)))
        .collect();
    let seqs = write(dir.path(), "seqs.yaml", seqs.as_bytes());
    assert_refused(&seqs, 33, "nesting deeper than 32 levels");
}

#[test]
fn billion_laughs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 30 levels of 10 aliases each (10^30 nodes expanded).
    let mut text = String::from("l0: &l0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for i in 1..30 {
        let refs = vec![format!("*l{}", i - 1); 10].join(",");
        text.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    let f = write(dir.path(), "laughs.yaml", text.as_bytes());
    // Refused where the expansion passes 10,000 nodes (10^4 at l3).
    let r = assert_refused(&f, 4, "billion laughs");
    eprintln!("billion laughs: peak {} MB", r.peak_mb);
    // Nested anchors around a large list, then an alias to the outermost.
    let mut inner = vec!["1"; 200_000].join(",");
    for i in 0..30 {
        inner = format!("&a{i} [{inner}]");
    }
    let f = write(
        dir.path(),
        "anchors.yaml",
        format!("x: {inner}\ny: *a29\n").as_bytes(),
    );
    let r = assert_refused(&f, 2, "billion laughs");
    eprintln!("nested anchors: peak {} MB", r.peak_mb);
}

#[test]
fn files_at_and_over_the_size_cap() {
    let dir = tempfile::tempdir().unwrap();
    // 10 MB: refused before parsing, without reading it all.
    let big = write(dir.path(), "ten-mb.yaml", &vec![b'#'; 10 * 1024 * 1024]);
    let r = validate(&big);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("file is larger than 8 MiB"),
        "{}",
        r.stderr
    );
    assert!(r.peak_mb < MAX_RSS_MB, "peak RSS {} MB", r.peak_mb);
    eprintln!("10 MB file: peak {} MB", r.peak_mb);
    // Just under 8 MiB of list items: more nodes than allowed.
    let n = (8 * 1024 * 1024 - 200) / 4;
    let items = vec!["1"; n].join(", ");
    let f = write(
        dir.path(),
        "nodes.yaml",
        policy(&format!("    - state: open\n      ports: [{items}]\n")).as_bytes(),
    );
    let r = assert_refused(&f, 8, "more than 1000000 nodes");
    eprintln!("8 MiB of nodes: peak {} MB", r.peak_mb);
    // Just under 8 MiB of distinct keys (a mapping of ~700,000 keys).
    let mut keys = String::from("labels:\n");
    let mut i = 0;
    while keys.len() < 8 * 1024 * 1024 - 100 {
        keys.push_str(&format!("  k{i}: v\n"));
        i += 1;
    }
    let f = write(dir.path(), "keys.yaml", keys.as_bytes());
    let r = validate(&f);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.peak_mb < MAX_RSS_MB, "peak RSS {} MB", r.peak_mb);
    eprintln!(
        "8 MiB of keys: peak {} MB: {}",
        r.peak_mb,
        r.stderr.lines().next().unwrap()
    );
}

#[test]
fn non_utf8_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = policy("    - ports: 80\n      state: open\n").into_bytes();
    bytes.extend_from_slice(b"    - ports: 81\n      reason: caf\xe9\n");
    let f = write(dir.path(), "latin1.yaml", &bytes);
    let r = assert_refused(&f, 10, "file is not valid UTF-8");
    // "      reason: caf" is 17 characters: the byte after it is column 18.
    assert!(
        r.stderr.starts_with(&format!("{}:10:18:", f.display())),
        "{}",
        r.stderr
    );
    // Binary garbage.
    let garbage: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let f = write(dir.path(), "garbage.yaml", &garbage);
    let r = validate(&f);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("not valid UTF-8"), "{}", r.stderr);
    // UTF-16 (a BOM and NULs): also not UTF-8.
    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain("a: 1\n".bytes().flat_map(|b| [b, 0]))
        .collect();
    let f = write(dir.path(), "utf16.yaml", &utf16);
    assert_refused(&f, 1, "file is not valid UTF-8");
}

#[test]
fn symlink_loops_are_walked_once_in_bounded_memory() {
    // `ln -s . a; ln -s . b` made the walk exponential (a/b/a/b/... until PATH_MAX): 100 % CPU
    // and memory growing by megabytes a second, without end. Each directory is walked once.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "web.yaml",
        policy("    - ports: 80\n      state: open\n").as_bytes(),
    );
    for link in ["a", "b", "c"] {
        std::os::unix::fs::symlink(".", dir.path().join(link)).unwrap();
    }
    let run = assert_accepted(dir.path(), "ok: 1 policy (1 entries)");
    eprintln!("three links to .: peak RSS {} MB", run.peak_mb);
    // A link out of the tree is refused, and what it points to is never read.
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd.yaml")).unwrap();
    let run = validate(dir.path());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "passwd.yaml: error: symbolic link to /etc/passwd, outside the policy directory"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("root:"), "{}", run.stderr);
}
