//! Dealing a scan's first probes out to its send threads (the raw engine's several; the
//! connect engine's one takes them all, in order).
//!
//! Every (target, port) index gets its first probe from exactly one send thread, which then
//! owns that probe's retransmissions. Fixed stripes (thread `k` takes `k, k + n, ...`) make the
//! scan as slow as its slowest thread: on a loaded machine, or on the CPU the receive thread
//! also runs on, one thread falls behind while the other finishes its stripe and idles (on the
//! 2-core lab one stripe ended up to 90 ms after the other when the machine was quiet, 0.3–0.5 s
//! when it was busy). Instead the threads take consecutive chunks of indexes from one shared
//! cursor, so their first passes end within a chunk of each other, and the order of first
//! probes stays the scan's order (port-major) as before.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The next unclaimed index of the scan's first pass, shared by its send threads.
pub(crate) struct FreshCursor {
    next: AtomicUsize,
    total: usize,
}

impl FreshCursor {
    /// Indexes one claim takes: one atomic operation per this many probes, and at the end of
    /// the first pass the threads are at most this many probes apart (well under a millisecond
    /// of sending).
    pub const CHUNK: usize = 64;

    /// A cursor over the indexes `0..total`.
    pub fn new(total: usize) -> Self {
        FreshCursor {
            next: AtomicUsize::new(0),
            total,
        }
    }

    /// Indexes the cursor deals, `0..total`.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Makes `*next` the next index this thread should probe first, claiming a new chunk
    /// (`*next..*end`) when the current one is used up; the caller advances `*next` once that
    /// probe is on its way. Returns `false` once every index has been claimed and this thread's
    /// chunk is finished; `*next` is then `total`.
    pub fn next(&self, next: &mut usize, end: &mut usize) -> bool {
        if *next < *end {
            return true;
        }
        let start = self.next.fetch_add(Self::CHUNK, Ordering::Relaxed);
        if start >= self.total {
            // Keep the counter from wrapping however often finished threads ask again.
            self.next.store(self.total, Ordering::Relaxed);
            (*next, *end) = (self.total, self.total);
            return false;
        }
        (*next, *end) = (start, (start + Self::CHUNK).min(self.total));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_is_dealt_once_across_threads() {
        let total = 10 * FreshCursor::CHUNK + 7;
        let cursor = FreshCursor::new(total);
        let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let (mut next, mut end) = (0, 0);
                    while cursor.next(&mut next, &mut end) {
                        seen[next].fetch_add(1, Ordering::Relaxed);
                        next += 1;
                    }
                    assert_eq!(next, total);
                    // Asking again after the end stays at the end.
                    assert!(!cursor.next(&mut next, &mut end));
                });
            }
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn a_thread_probes_its_chunk_in_order() {
        let cursor = FreshCursor::new(100);
        let (mut a, mut a_end) = (0, 0);
        let (mut b, mut b_end) = (0, 0);
        assert!(cursor.next(&mut a, &mut a_end));
        assert!(cursor.next(&mut b, &mut b_end));
        assert_eq!((a, a_end), (0, FreshCursor::CHUNK));
        assert_eq!((b, b_end), (FreshCursor::CHUNK, 100));
        // Not advanced: the same index again.
        assert!(cursor.next(&mut a, &mut a_end));
        assert_eq!(a, 0);
        a = a_end;
        assert!(!cursor.next(&mut a, &mut a_end));
        assert_eq!(a, 100);
    }
}
