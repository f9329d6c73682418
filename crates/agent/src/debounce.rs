//! When the standalone agent loads its policy files: a cheap fingerprint of what the
//! loader would read, the [`Debounce`] that waits for a change to hold still (but not
//! forever), and the change time the apply latency is measured from. Pure but for the
//! fingerprint's `stat`s, so tests drive it without sleeping.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A cheap fingerprint of what [`load_paths`] would read: path, size, modification time,
/// inode, and mode and owner of the given roots and of every policy file under them, and the
/// problems of the walk (a FIFO, a link out of the tree: not read, but a change to report). A
/// git checkout that swaps the directory or replaces files by rename changes inodes, so it is
/// seen too; mode and owner cover a `chmod`/`chown` that makes an unreadable file readable again.
pub(crate) type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64, (u32, u32, u32))>;

pub(crate) fn fingerprint(roots: &[&Path]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    // The walk already stat'ed every file; only the roots are stat'ed here.
    let (files, problems) = portwarden_policy::load::policy_files_with_metadata(roots);
    let roots = roots
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::metadata(p).ok()));
    let problems = problems.iter().map(|d| (PathBuf::from(d.headline()), None));
    roots
        .chain(files.into_iter().map(|(p, m)| (p, Some(m))))
        .chain(problems)
        .map(|(p, m)| match m {
            Some(m) => (
                p,
                m.len(),
                m.modified().ok(),
                m.ino(),
                (m.mode(), m.uid(), m.gid()),
            ),
            None => (p, u64::MAX, None, 0, (0, 0, 0)),
        })
        .collect()
}

/// While a load asked for by SIGHUP waits for a change to hold still, the files are checked at
/// least this often, however long `--poll-ms` is (an agent polling once an hour still loads
/// within a fraction of a second of the signal).
pub const ASKED_POLL: Duration = Duration::from_millis(200);

/// A pending change is loaded at the latest this many poll intervals after it was first seen,
/// even while edits keep coming (a CI job rewriting files every few hundred milliseconds, a
/// slow copy): 2 s with the default 200 ms poll.
pub const DEBOUNCE_MAX_POLLS: u32 = 10;

/// What [`Debounce::observe`] decided for one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed since the last load.
    Unchanged,
    /// A change is pending; the files have not held still yet.
    Wait,
    /// Load the documents now.
    Load {
        /// When the oldest change of this load was first seen (`None` for the first load).
        first_seen: Option<Instant>,
        /// The files were still changing: loaded because the change waited `max_wait`.
        forced: bool,
    },
}

/// When to load a changed policy directory: once its fingerprint held still for one poll, so
/// that an editor or a copy that writes a file in several steps is not caught half-way — or,
/// when edits keep coming faster than the poll, once the oldest unloaded change has waited
/// `max_wait`, so that a stream of changes cannot postpone loading forever.
///
/// A forced load can catch a file half-written. That is harmless: a half-written document is
/// invalid (the standalone agent refuses it, the last good state stays) or, if it happens to
/// parse, is replaced by the complete one at the next load — the completed write changes the
/// fingerprint again, so the last state written is always loaded.
///
/// Pure: the caller passes the fingerprint and the time, so tests drive it without sleeping.
#[derive(Debug)]
pub struct Debounce<F> {
    max_wait: Duration,
    loaded: Option<F>,
    /// The fingerprint of the last poll that saw a change, and when the oldest unloaded
    /// change was first seen.
    pending: Option<(F, Instant)>,
    /// A load was asked for ([`Debounce::force`]) and has not happened yet.
    asked: bool,
}

impl<F: PartialEq> Debounce<F> {
    /// A debounce that has loaded nothing yet: the first observation loads at once.
    pub fn new(max_wait: Duration) -> Debounce<F> {
        Debounce {
            max_wait,
            loaded: None,
            pending: None,
            asked: false,
        }
    }

    /// Asks for a load although nothing changed (SIGHUP): the next observation of an
    /// unchanged fingerprint loads. A change already pending is left alone — it loads once it
    /// holds still (or at `max_wait`), timed from its first sight as usual — so a reload asked
    /// for in the middle of a checkout does not catch it half-way. Either way the load that
    /// follows is the one asked for.
    pub fn force(&mut self) {
        self.asked = true;
    }

    /// Records the fingerprint seen at `now` and says whether to load. After
    /// [`Step::Load`] the fingerprint counts as loaded.
    pub fn observe(&mut self, fp: F, now: Instant) -> Step {
        let Some(loaded) = &self.loaded else {
            self.loaded = Some(fp);
            return Step::Load {
                first_seen: None,
                forced: false,
            };
        };
        if *loaded == fp {
            // Unchanged, or changed and changed back before it was loaded.
            self.pending = None;
            if std::mem::take(&mut self.asked) {
                return Step::Load {
                    first_seen: None,
                    forced: false,
                };
            }
            return Step::Unchanged;
        }
        let (settled, first_seen) = match self.pending.take() {
            Some((pending, first_seen)) => (pending == fp, first_seen),
            None => (false, now),
        };
        let forced = !settled && now.saturating_duration_since(first_seen) >= self.max_wait;
        if settled || forced {
            self.loaded = Some(fp);
            self.asked = false;
            return Step::Load {
                first_seen: Some(first_seen),
                forced,
            };
        }
        self.pending = Some((fp, first_seen));
        Step::Wait
    }

    /// The fingerprint of the last load.
    pub fn loaded(&self) -> Option<&F> {
        self.loaded.as_ref()
    }

    /// Whether a load asked for by [`Debounce::force`] is still to come (a change it waits
    /// for has not held still yet).
    pub fn asked(&self) -> bool {
        self.asked
    }
}

/// When the oldest change from `old` to `new` was made, for the change-to-applied latency:
/// the oldest modification time among the files that are new or changed, but no later than
/// `first_seen` (a rename or a deletion can be older than its file's time) and no earlier than
/// `floor` (when `old` was read: a file copied with its old time, `rsync -t` say, changed
/// after that).
pub(crate) fn change_time(
    old: &Fingerprint,
    new: &Fingerprint,
    first_seen: SystemTime,
    floor: SystemTime,
) -> SystemTime {
    new.iter()
        .filter(|entry| !old.contains(entry))
        .filter_map(|(_, _, mtime, _, _)| *mtime)
        .chain([first_seen])
        .min()
        .unwrap_or(first_seen)
        .max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sees_edits_new_files_and_swaps() {
        let dir = tempfile_dir();
        let a = dir.join("a.yaml");
        std::fs::write(&a, "x").unwrap();
        let f1 = fingerprint(&[&dir]);
        std::fs::write(&a, "xy").unwrap();
        let f2 = fingerprint(&[&dir]);
        assert_ne!(f1, f2);
        std::fs::write(dir.join("b.yml"), "z").unwrap();
        let f3 = fingerprint(&[&dir]);
        assert_ne!(f2, f3);
        // Replace a file by rename (what git does): the inode changes.
        std::fs::write(dir.join(".tmp"), "xy").unwrap();
        std::fs::rename(dir.join(".tmp"), &a).unwrap();
        let f4 = fingerprint(&[&dir]);
        assert_ne!(f3, f4);
        // A chmod alone (an unreadable file made readable) changes no size, time or inode.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(f4, fingerprint(&[&dir]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const POLL: Duration = Duration::from_millis(200);

    fn load(forced: bool) -> impl Fn(&Step) -> bool {
        move |s| matches!(s, Step::Load { forced: f, .. } if *f == forced)
    }

    #[test]
    fn debounce_loads_the_first_state_at_once_then_waits_for_one_quiet_poll() {
        let t0 = Instant::now();
        let mut d = Debounce::new(POLL * DEBOUNCE_MAX_POLLS);
        assert_eq!(
            d.observe(1, t0),
            Step::Load {
                first_seen: None,
                forced: false
            }
        );
        assert_eq!(d.observe(1, t0 + POLL), Step::Unchanged);
        // A change is seen, then holds still for one poll: loaded, timed from the first sight.
        assert_eq!(d.observe(2, t0 + POLL * 2), Step::Wait);
        assert_eq!(
            d.observe(2, t0 + POLL * 3),
            Step::Load {
                first_seen: Some(t0 + POLL * 2),
                forced: false
            }
        );
        assert_eq!(d.loaded(), Some(&2));
        assert_eq!(d.observe(2, t0 + POLL * 4), Step::Unchanged);
    }

    #[test]
    fn debounce_ignores_a_change_reverted_before_it_settled() {
        let t0 = Instant::now();
        let mut d = Debounce::new(POLL * DEBOUNCE_MAX_POLLS);
        d.observe(1, t0);
        assert_eq!(d.observe(2, t0 + POLL), Step::Wait);
        assert_eq!(d.observe(1, t0 + POLL * 2), Step::Unchanged);
        // A later change starts a fresh wait: its first sight is its own.
        assert_eq!(d.observe(3, t0 + POLL * 3), Step::Wait);
        assert_eq!(
            d.observe(3, t0 + POLL * 4),
            Step::Load {
                first_seen: Some(t0 + POLL * 3),
                forced: false
            }
        );
    }

    #[test]
    fn debounce_bounds_the_wait_under_a_stream_of_changes() {
        // Every poll sees a new state: with "held still for one poll" alone nothing would
        // ever load. The oldest change waits at most max_wait, then the latest state loads.
        let t0 = Instant::now();
        let max_wait = POLL * DEBOUNCE_MAX_POLLS;
        let mut d = Debounce::new(max_wait);
        d.observe(0u32, t0);
        let mut loads = Vec::new();
        for i in 1..=100u32 {
            let now = t0 + POLL * i;
            let step = d.observe(i, now);
            if let Step::Load { first_seen, forced } = step {
                assert!(forced, "poll {i}: {step:?}");
                let first_seen = first_seen.unwrap();
                assert_eq!(now - first_seen, max_wait, "poll {i}");
                assert_eq!(d.loaded(), Some(&i), "the latest state is the one loaded");
                loads.push(i);
            } else {
                assert_eq!(step, Step::Wait, "poll {i}");
            }
        }
        // One load per max_wait + one poll (the poll after a load starts the next wait).
        let period = DEBOUNCE_MAX_POLLS + 1;
        let expected: Vec<u32> = (1..=100).filter(|i| i % period == 0).collect();
        assert_eq!(loads, expected);
        // When the stream stops, the final state loads one quiet poll later.
        let last = t0 + POLL * 100;
        let settle = d.observe(100, last + POLL);
        assert!(load(false)(&settle), "{settle:?}");
        assert_eq!(d.loaded(), Some(&100));
        assert_eq!(d.observe(100, last + POLL * 2), Step::Unchanged);
    }

    #[test]
    fn debounce_bound_counts_time_not_polls() {
        // Polls are late when an apply takes long: the bound is still the time since the
        // change was first seen.
        let t0 = Instant::now();
        let mut d = Debounce::new(Duration::from_secs(2));
        d.observe(0, t0);
        assert_eq!(d.observe(1, t0 + Duration::from_millis(100)), Step::Wait);
        let step = d.observe(2, t0 + Duration::from_millis(2100));
        assert!(load(true)(&step), "{step:?}");
    }

    #[test]
    fn change_time_is_the_oldest_changed_file_within_bounds() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let entry = |name: &str, size: u64, t: u64| {
            (PathBuf::from(name), size, Some(at(t)), 1, (0o100644, 0, 0))
        };
        let old = vec![entry("a", 1, 10), entry("b", 1, 10), entry("c", 1, 10)];
        let new = vec![entry("a", 2, 105), entry("b", 1, 10), entry("c", 3, 103)];
        // c changed first (103), a later (105); both after the last load (100).
        assert_eq!(change_time(&old, &new, at(107), at(100)), at(103));
        // A file renamed into place with an old time: no earlier than the last load.
        let copied = vec![entry("a", 2, 50), entry("b", 1, 10), entry("c", 1, 10)];
        assert_eq!(change_time(&old, &copied, at(107), at(100)), at(100));
        // Only a deletion: when it was first seen.
        let deleted = vec![entry("a", 1, 10), entry("b", 1, 10)];
        assert_eq!(change_time(&old, &deleted, at(107), at(100)), at(107));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("pw-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_forced_load_loads_an_unchanged_state_once() {
        let t0 = Instant::now();
        let mut d = Debounce::new(POLL * DEBOUNCE_MAX_POLLS);
        d.observe(1, t0);
        assert_eq!(d.observe(1, t0 + POLL), Step::Unchanged);
        // SIGHUP, twice before the next poll: one load, not timed (nothing changed).
        d.force();
        d.force();
        assert_eq!(
            d.observe(1, t0 + POLL * 2),
            Step::Load {
                first_seen: None,
                forced: false
            }
        );
        assert_eq!(d.observe(1, t0 + POLL * 3), Step::Unchanged);
    }

    #[test]
    fn a_forced_load_waits_for_a_pending_change_to_hold_still() {
        // A SIGHUP in the middle of a checkout: the files are still changing.
        let t0 = Instant::now();
        let mut d = Debounce::new(POLL * DEBOUNCE_MAX_POLLS);
        d.observe(1, t0);
        assert_eq!(d.observe(2, t0 + POLL), Step::Wait);
        d.force();
        assert_eq!(
            d.observe(3, t0 + POLL * 2),
            Step::Wait,
            "not caught half-way"
        );
        // Once it holds still it loads, timed from its first sight; that was the load asked
        // for, so the next quiet poll loads nothing.
        assert_eq!(
            d.observe(3, t0 + POLL * 3),
            Step::Load {
                first_seen: Some(t0 + POLL),
                forced: false
            }
        );
        assert_eq!(d.observe(3, t0 + POLL * 4), Step::Unchanged);
    }
}
