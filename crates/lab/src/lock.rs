//! A file lock held by another process, for tests of code that must wait on it (the xtables
//! lock): [`LockHolder`] runs `flock(1)` on a private lock file until dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::LabError;

/// A `flock(1)` child process holding a lock on a file; releases it (closes the child's stdin
/// and waits for it) when dropped.
#[derive(Debug)]
pub struct LockHolder(Child);

impl LockHolder {
    /// Locks `lock` (created if missing) from another process; returns once the lock is held.
    ///
    /// # Errors
    /// [`LabError::Spawn`] when `flock` cannot be started (util-linux missing), and
    /// [`LabError::CommandFailed`] when it exits before taking the lock.
    pub fn hold(lock: &Path) -> Result<LockHolder, LabError> {
        let command = format!("flock {} -c 'echo locked; read x'", lock.display());
        let mut child = Command::new("flock")
            .arg(lock)
            .args(["-c", "echo locked; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: command.clone(),
                source,
            })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            // Blocks until flock has the lock and runs the shell, or exits (EOF).
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "locked" {
            let status = child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(LabError::CommandFailed {
                command,
                status,
                stderr: "exited before holding the lock".into(),
            });
        }
        Ok(LockHolder(child))
    }

    /// The process id of the `flock` process holding the lock.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}
