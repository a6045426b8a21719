//! The applied-request window: a proposal that reaches the log twice is applied once.
//!
//! A write travels from the member a client called to the leader as a raft `MsgPropose`. If that
//! message is delivered twice (a transport that resends a batch after a broken stream, a network
//! that duplicates), the leader appends the same request twice and, without this window, every
//! member would apply it twice: two revisions for one put, or a compare-and-swap that succeeds
//! and then runs again. The consistent index cannot catch it, since the two copies are different
//! entries.
//!
//! Every request carries the proposing member's id (`origin`) and a request id that is unique for
//! that member: a 16-bit start count and a 32-bit counter that only grows within one start (see
//! `server::initial_request_id`). Per (origin, start) the window remembers the highest counter
//! applied and which of the [`APPLIED_WINDOW_REQUESTS`] counters below it were applied — the
//! sliding-window check of anti-replay protocols. An entry is applied only if its counter is new;
//! a counter older than the window cannot be told apart from a duplicate and is refused too (its
//! client times out, an unknown outcome, which is always safe). At most [`APPLIED_ORIGINS_MAX`]
//! (origin, start) pairs are remembered; the one applied longest ago is forgotten first.
//!
//! Every decision depends only on the log, so all members decide alike. The window is stored in
//! the backend, staged with [`Store::stage_meta`] into the same LMDB transaction as the entry it
//! describes, so a crash never separates the two; a snapshot carries it to lagging members.

use std::collections::BTreeMap;

use crate::mvcc::{MvccError, Store};

/// How many request counters below the highest one applied are remembered per proposer start.
pub const APPLIED_WINDOW_REQUESTS: u64 = 4096;
/// How many (member, start) pairs the window remembers.
pub const APPLIED_ORIGINS_MAX: usize = 64;

/// Name prefix of the window's blobs in the backend.
pub const META_PREFIX: &str = "applied/";
const WINDOW_WORDS: usize = (APPLIED_WINDOW_REQUESTS / 64) as usize;

/// What the window says about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// First time: apply it.
    New,
    /// This request was applied before.
    Duplicate,
    /// Older than the window: it cannot be told apart from a duplicate, so it is not applied.
    TooOld,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    /// Raft index of the last entry admitted from this origin (for eviction).
    last_index: u64,
    /// Highest counter admitted.
    high: u64,
    /// Bit `c % APPLIED_WINDOW_REQUESTS` set: counter `c` (within the window) was admitted.
    bits: [u64; WINDOW_WORDS],
}

impl Window {
    fn bit(&self, counter: u64) -> bool {
        let at = (counter % APPLIED_WINDOW_REQUESTS) as usize;
        self.bits[at / 64] & (1 << (at % 64)) != 0
    }

    fn set(&mut self, counter: u64, on: bool) {
        let at = (counter % APPLIED_WINDOW_REQUESTS) as usize;
        if on {
            self.bits[at / 64] |= 1 << (at % 64);
        } else {
            self.bits[at / 64] &= !(1 << (at % 64));
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + WINDOW_WORDS * 8);
        out.extend_from_slice(&self.last_index.to_be_bytes());
        out.extend_from_slice(&self.high.to_be_bytes());
        for w in &self.bits {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Window> {
        if bytes.len() != 16 + WINDOW_WORDS * 8 {
            return None;
        }
        let word = |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        let mut bits = [0; WINDOW_WORDS];
        for (i, b) in bits.iter_mut().enumerate() {
            *b = word(i + 2);
        }
        Some(Window {
            last_index: word(0),
            high: word(1),
            bits,
        })
    }
}

/// The window of applied requests, per proposing member and start. See the module docs.
#[derive(Debug, Default)]
pub struct AppliedRequests {
    /// Keyed by (origin member id, start count).
    windows: BTreeMap<(u64, u64), Window>,
}

fn meta_name((origin, start): (u64, u64)) -> String {
    format!("{META_PREFIX}{origin:016x}-{start:04x}")
}

impl AppliedRequests {
    /// Loads the window the backend holds (empty for a new member).
    pub fn load(store: &Store) -> Result<AppliedRequests, MvccError> {
        let mut windows = BTreeMap::new();
        for (name, value) in store.meta_with_prefix(META_PREFIX)? {
            let key = name[META_PREFIX.len()..]
                .split_once('-')
                .and_then(|(o, s)| {
                    Some((
                        u64::from_str_radix(o, 16).ok()?,
                        u64::from_str_radix(s, 16).ok()?,
                    ))
                });
            match (key, Window::decode(&value)) {
                (Some(key), Some(w)) => {
                    windows.insert(key, w);
                }
                _ => {
                    return Err(MvccError::Corrupt(format!(
                        "applied-request window {name:?} is malformed"
                    )))
                }
            }
        }
        Ok(AppliedRequests { windows })
    }

    /// Decides whether entry `index`, request `id` proposed by member `origin`, is applied, and
    /// records the decision; the change is staged into the entry's backend transaction, so the
    /// caller must commit that entry (apply it, or record its index) next. Requests without an
    /// origin are always new.
    pub fn admit(&mut self, store: &Store, origin: u64, id: u64, index: u64) -> Admit {
        if origin == 0 {
            return Admit::New;
        }
        let key = (origin, id >> 32);
        let counter = id & 0xffff_ffff;
        let verdict = match self.windows.get_mut(&key) {
            None => {
                let mut w = Window {
                    last_index: index,
                    high: counter,
                    bits: [0; WINDOW_WORDS],
                };
                w.set(counter, true);
                self.windows.insert(key, w);
                Admit::New
            }
            Some(w) if counter > w.high => {
                if counter - w.high >= APPLIED_WINDOW_REQUESTS {
                    w.bits = [0; WINDOW_WORDS];
                } else {
                    for c in w.high + 1..counter {
                        w.set(c, false);
                    }
                }
                w.high = counter;
                w.set(counter, true);
                w.last_index = index;
                Admit::New
            }
            Some(w) if w.high - counter >= APPLIED_WINDOW_REQUESTS => Admit::TooOld,
            Some(w) if w.bit(counter) => Admit::Duplicate,
            Some(w) => {
                w.set(counter, true);
                w.last_index = index;
                Admit::New
            }
        };
        if verdict == Admit::New {
            store.stage_meta(&meta_name(key), Some(self.windows[&key].encode()));
            if self.windows.len() > APPLIED_ORIGINS_MAX {
                let oldest = self
                    .windows
                    .iter()
                    .min_by_key(|(k, w)| (w.last_index, **k))
                    .map(|(k, _)| *k)
                    .expect("more than the maximum, so not empty");
                self.windows.remove(&oldest);
                store.stage_meta(&meta_name(oldest), None);
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 26).unwrap();
        (dir, store)
    }

    /// Admits like the node does: decide, then commit the entry's index.
    fn admit(w: &mut AppliedRequests, s: &Store, origin: u64, id: u64, index: u64) -> Admit {
        let v = w.admit(s, origin, id, index);
        s.set_consistent_index(index).unwrap();
        v
    }

    #[test]
    fn a_request_is_admitted_once_even_out_of_order() {
        let (_d, s) = store();
        let mut w = AppliedRequests::default();
        let start = 3u64 << 32;
        assert_eq!(admit(&mut w, &s, 7, start | 10, 1), Admit::New);
        assert_eq!(admit(&mut w, &s, 7, start | 12, 2), Admit::New);
        assert_eq!(admit(&mut w, &s, 7, start | 11, 3), Admit::New);
        assert_eq!(admit(&mut w, &s, 7, start | 12, 4), Admit::Duplicate);
        assert_eq!(admit(&mut w, &s, 7, start | 10, 5), Admit::Duplicate);
        // The same id from another member, or from another start, is another request.
        assert_eq!(admit(&mut w, &s, 8, start | 12, 6), Admit::New);
        assert_eq!(admit(&mut w, &s, 7, (4 << 32) | 12, 7), Admit::New);
        // Without an origin there is nothing to compare.
        assert_eq!(admit(&mut w, &s, 0, 5, 8), Admit::New);
        assert_eq!(admit(&mut w, &s, 0, 5, 9), Admit::New);
    }

    #[test]
    fn counters_below_the_window_are_refused_and_slots_are_reused() {
        let (_d, s) = store();
        let mut w = AppliedRequests::default();
        assert_eq!(admit(&mut w, &s, 1, 5, 1), Admit::New);
        let far = 5 + APPLIED_WINDOW_REQUESTS;
        assert_eq!(admit(&mut w, &s, 1, far, 2), Admit::New);
        assert_eq!(admit(&mut w, &s, 1, 5, 3), Admit::TooOld);
        // Counter `far - 1` shares no slot with an admitted one: its bit was cleared on the slide.
        assert_eq!(admit(&mut w, &s, 1, far - 1, 4), Admit::New);
        assert_eq!(admit(&mut w, &s, 1, far - 1, 5), Admit::Duplicate);
        // A slide by less than the window clears the slots it passes over.
        assert_eq!(admit(&mut w, &s, 1, far + 3, 6), Admit::New);
        assert_eq!(admit(&mut w, &s, 1, far + 1, 7), Admit::New);
        assert_eq!(admit(&mut w, &s, 1, far + 2, 8), Admit::New);
        assert_eq!(admit(&mut w, &s, 1, far + 2, 9), Admit::Duplicate);
    }

    #[test]
    fn the_window_survives_a_restart_with_the_entries_it_describes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 1 << 26).unwrap();
            let mut w = AppliedRequests::default();
            assert_eq!(admit(&mut w, &s, 9, 100, 1), Admit::New);
            // Decided but never committed: a crash before the entry's commit forgets it too.
            assert_eq!(w.admit(&s, 9, 101, 2), Admit::New);
        }
        let s = Store::open(dir.path(), 1 << 26).unwrap();
        let mut w = AppliedRequests::load(&s).unwrap();
        assert_eq!(admit(&mut w, &s, 9, 100, 2), Admit::Duplicate);
        assert_eq!(admit(&mut w, &s, 9, 101, 3), Admit::New);
    }

    #[test]
    fn the_origin_applied_longest_ago_is_forgotten_first() {
        let (_d, s) = store();
        let mut w = AppliedRequests::default();
        let n = APPLIED_ORIGINS_MAX as u64;
        for origin in 1..=n {
            assert_eq!(admit(&mut w, &s, origin, 1, origin), Admit::New);
        }
        // Origin 1 proposes again, so origin 2 is now the one applied longest ago.
        assert_eq!(admit(&mut w, &s, 1, 2, n + 1), Admit::New);
        assert_eq!(admit(&mut w, &s, n + 1, 1, n + 2), Admit::New);
        let reloaded = AppliedRequests::load(&s).unwrap();
        assert_eq!(reloaded.windows.len(), APPLIED_ORIGINS_MAX);
        assert!(!reloaded.windows.contains_key(&(2, 0)));
        assert!(reloaded.windows.contains_key(&(1, 0)));
        let mut w = reloaded;
        assert_eq!(admit(&mut w, &s, 2, 1, n + 3), Admit::New, "forgotten");
        assert_eq!(admit(&mut w, &s, 1, 2, n + 4), Admit::Duplicate);
    }
}
