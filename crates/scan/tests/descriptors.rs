//! A scanner out of file descriptors (EMFILE) fails with a socket error; it does not report its
//! targets as unreachable. Per-target "no route" lets a scan (and verify) go on without the
//! target, so an error that is the scanner's own must not be taken for one: under descriptor
//! pressure every node looked unreachable and verify exited 0.
//!
//! The only test of this binary: it lowers the process's descriptor limit, which would break
//! tests running beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::IpAddr;

use portwarden_scan::{PortList, ScanConfig, ScanError, ScanKind, Scanner, source_for};

/// Descriptors held open until the process has none left, and the limit to restore.
struct Exhausted {
    _files: Vec<std::fs::File>,
    limit: libc::rlimit,
}

impl Exhausted {
    fn new() -> Exhausted {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid rlimit for the call to fill.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let low = libc::rlimit {
            rlim_cur: (open + 32).min(limit.rlim_cur),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `low` is a valid rlimit; only the soft limit is lowered.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        let mut files = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => files.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("opening /dev/null: {e}"),
            }
        }
        Exhausted {
            _files: files,
            limit,
        }
    }
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        // SAFETY: restores the limit read in `new`.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.limit) };
    }
}

#[test]
fn running_out_of_descriptors_is_a_socket_error_not_an_unreachable_target() {
    let target: IpAddr = "127.0.0.1".parse().unwrap();
    let ports = PortList::parse("80").unwrap();
    let (routed, scanned) = {
        let _held = Exhausted::new();
        let routed = source_for(target);
        let scanned =
            Scanner::new(ScanConfig::default()).scan(&[target], &ports, ScanKind::Connect);
        (routed, scanned)
    };
    match routed {
        Err(ScanError::Socket { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EMFILE), "{source}")
        }
        other => panic!("source_for under EMFILE: {other:?}"),
    }
    match scanned {
        Err(e @ ScanError::Socket { .. }) => {
            assert!(e.to_string().contains("Too many open files"), "{e}")
        }
        Ok(report) => panic!(
            "the scan went on and reported the target as {:?}",
            report.hosts[0].error
        ),
        Err(e) => panic!("scan under EMFILE: {e}"),
    }
    // With descriptors again, the same scan runs.
    let report = Scanner::new(ScanConfig::default())
        .scan(&[target], &ports, ScanKind::Connect)
        .unwrap();
    assert_eq!(report.hosts[0].error, None);
}
