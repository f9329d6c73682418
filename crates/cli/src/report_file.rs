//! A file a command writes a report to after its work (`verify --html FILE`): checked before
//! the work starts, so a typo fails in a second rather than after a scan of minutes; written
//! whole or not at all (a temporary file beside it, renamed over it), so a CI job that
//! publishes it never publishes half a page; and removed again when the work fails.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A report file being prepared: a temporary file beside `target` until [`ReportFile::commit`].
#[derive(Debug)]
pub struct ReportFile {
    flag: &'static str,
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl ReportFile {
    /// Prepares `target`, the value of `flag`: fails now, saying why and what to do, when it
    /// could not be written later (a directory, a missing or read-only directory).
    pub fn create(flag: &'static str, target: &Path) -> anyhow::Result<ReportFile> {
        let shown = target.display();
        if target.is_dir() {
            bail!(
                "{flag} {shown}: is a directory; give a file name (e.g. {flag} {shown}/portwarden.html)"
            );
        }
        let Some(name) = target.file_name() else {
            bail!("{flag} {shown}: not a file name; give one (e.g. {flag} portwarden.html)");
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| {
                format!(
                    "{flag} {shown}: cannot create a file in {}; check that the directory exists and is writable",
                    dir.display()
                )
            })?;
        Ok(ReportFile {
            flag,
            target: target.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    /// Writes `text` and puts the file in place of the target.
    pub fn commit(mut self, text: &str) -> anyhow::Result<()> {
        let shown = self.target.display().to_string();
        let flag = self.flag;
        let mut file = self
            .file
            .take()
            .with_context(|| format!("{flag} {shown}: already written"))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("{flag} {shown}: cannot write {}", self.tmp.display()))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.target).with_context(|| {
            format!(
                "{flag} {shown}: cannot put {} in its place",
                self.tmp.display()
            )
        })?;
        // In place: nothing left to remove.
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for ReportFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_at_commit_and_nothing_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.html");
        let f = ReportFile::create("--html", &target).unwrap();
        assert!(!target.exists(), "nothing in place before the commit");
        f.commit("<p>hi</p>").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "<p>hi</p>");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // An existing file is replaced.
        ReportFile::create("--html", &target)
            .unwrap()
            .commit("new")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    }

    #[test]
    fn dropped_uncommitted_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        drop(ReportFile::create("--html", &dir.path().join("r.html")).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn unwritable_targets_fail_at_once_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let e = ReportFile::create("--html", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory; give a file name"), "{e}");
        let missing = dir.path().join("no/such/dir/r.html");
        let e = format!("{:#}", ReportFile::create("--html", &missing).unwrap_err());
        assert!(
            e.starts_with(&format!(
                "--html {}: cannot create a file in ",
                missing.display()
            )) && e.contains("check that the directory exists and is writable")
                && e.contains("No such file or directory"),
            "{e}"
        );
    }
}
