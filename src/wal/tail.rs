//! The rules that turn a stream of entry and snapshot records into a raft log.
//!
//! The same code runs in two places, which is the point of having it once: at append, over the
//! terms of the entries (the WAL does not keep entries in memory), where a broken rule is a bug in
//! the caller and panics; and at recovery, over the entries themselves, where a broken rule means
//! the files are not what this code wrote and recovery refuses them.

use std::fmt;

use ::raft::eraftpb::Entry;

/// The largest index an entry or snapshot marker may have. The index after the last one must
/// exist (the next entry goes there, and a new segment is named after it), so `u64::MAX` itself
/// is never used. Raft cannot get near it; only damaged files can, and recovery refuses them.
pub const INDEX_MAX: u64 = u64::MAX - 1;

/// What the tail keeps per entry: the entry itself at recovery, only its term at runtime.
pub trait Termed {
    fn term(&self) -> u64;
}

impl Termed for Entry {
    fn term(&self) -> u64 {
        self.term
    }
}

impl Termed for u64 {
    fn term(&self) -> u64 {
        *self
    }
}

/// The entries after the last snapshot, contiguous, with overwrites applied.
#[derive(Debug, Clone)]
pub struct LogTail<T> {
    /// The last snapshot marker, (index, term).
    snapshot: Option<(u64, u64)>,
    /// The index just before `items[0]`. Outside recovery of a log whose head was released this
    /// equals the snapshot index (or zero without a snapshot).
    base_index: u64,
    /// The term at `base_index`, when known (always, outside that same recovery).
    base_term: Option<u64>,
    items: Vec<T>,
}

/// A record that breaks the rules of a raft log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailError {
    /// An entry or snapshot marker beyond [`INDEX_MAX`].
    IndexTooLarge { index: u64 },
    /// An entry beyond the last index plus one: entries would be missing.
    Gap { index: u64, last_index: u64 },
    /// An entry at or below the snapshot: committed entries never change.
    BelowSnapshot { index: u64, snapshot_index: u64 },
    /// An entry whose term is lower than the term of the entry before it.
    TermRegression {
        index: u64,
        term: u64,
        previous_term: u64,
    },
    /// A snapshot marker older than the previous one.
    SnapshotBackwards { index: u64, snapshot_index: u64 },
    /// A snapshot marker at the previous marker's index with another term.
    SnapshotConflict {
        index: u64,
        term: u64,
        snapshot_term: u64,
    },
}

impl fmt::Display for TailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TailError::IndexTooLarge { index } => write!(
                f,
                "index {index} is beyond the largest index {INDEX_MAX}: no index is left for the entry after it"
            ),
            TailError::Gap { index, last_index } => {
                write!(f, "entry {index} does not follow the last index {last_index}")
            }
            TailError::BelowSnapshot { index, snapshot_index } => {
                write!(f, "entry {index} rewrites the log at or below the snapshot at {snapshot_index}")
            }
            TailError::TermRegression { index, term, previous_term } => {
                write!(f, "entry {index} has term {term}, lower than the previous term {previous_term}")
            }
            TailError::SnapshotBackwards { index, snapshot_index } => {
                write!(f, "snapshot marker {index} is older than the snapshot at {snapshot_index}")
            }
            TailError::SnapshotConflict { index, term, snapshot_term } => write!(
                f,
                "snapshot marker {index} has term {term}, the earlier marker there has term {snapshot_term}"
            ),
        }
    }
}

impl<T: Termed> LogTail<T> {
    /// An empty log whose next entry is `base_index + 1`.
    pub fn new(base_index: u64) -> Self {
        // A log that starts at index 1 has the empty entry 0 (term 0) before it.
        assert!(base_index <= INDEX_MAX, "log tail based at {base_index}");
        let base_term = if base_index == 0 { Some(0) } else { None };
        LogTail {
            snapshot: None,
            base_index,
            base_term,
            items: Vec::new(),
        }
    }

    pub fn snapshot(&self) -> Option<(u64, u64)> {
        self.snapshot
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.map_or(0, |(index, _)| index)
    }

    pub fn base_index(&self) -> u64 {
        self.base_index
    }

    pub fn last_index(&self) -> u64 {
        self.base_index + self.items.len() as u64
    }

    #[cfg(test)]
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Splits into the items and a tail that keeps only their terms.
    pub fn into_terms_and_items(self) -> (LogTail<u64>, Vec<T>) {
        let terms = LogTail {
            snapshot: self.snapshot,
            base_index: self.base_index,
            base_term: self.base_term,
            items: self.items.iter().map(Termed::term).collect(),
        };
        (terms, self.items)
    }

    /// Whether a snapshot covers every index up to the first entry held: false only while
    /// recovering a log whose head was released and whose covering marker was not read yet.
    pub fn is_anchored(&self) -> bool {
        self.snapshot_index() >= self.base_index
    }

    /// The term at `index`, if this tail knows it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.base_index {
            self.base_term
        } else if index > self.base_index && index <= self.last_index() {
            Some(self.items[(index - self.base_index - 1) as usize].term())
        } else {
            None
        }
    }

    /// Applies an entry at `index`: appended after the last one, or replacing the suffix from
    /// `index` on (raft truncates a follower's conflicting entries). Nothing changes on error.
    pub fn push(&mut self, index: u64, item: T) -> Result<(), TailError> {
        if index > INDEX_MAX {
            return Err(TailError::IndexTooLarge { index });
        }
        // Every index held is at most INDEX_MAX, so this cannot overflow.
        let last_index = self.last_index();
        if index > last_index + 1 {
            return Err(TailError::Gap { index, last_index });
        }
        let snapshot_index = self.snapshot_index();
        if index <= snapshot_index {
            return Err(TailError::BelowSnapshot {
                index,
                snapshot_index,
            });
        }
        let previous_term = if index > self.base_index {
            self.term_at(index - 1)
        } else if index - 1 == snapshot_index {
            self.snapshot.map(|(_, term)| term).or(Some(0))
        } else {
            None
        };
        if let Some(previous_term) = previous_term {
            if item.term() < previous_term {
                return Err(TailError::TermRegression {
                    index,
                    term: item.term(),
                    previous_term,
                });
            }
        }
        if index > self.base_index {
            self.items.truncate((index - self.base_index - 1) as usize);
        } else {
            // The overwrite reaches below the first entry held. This happens only during recovery
            // of a log whose head segments were released: the overwritten entries lived in a
            // released segment. The entries before `index` must then be covered by a snapshot
            // marker read later, which `is_anchored` checks at the end.
            self.items.clear();
            self.base_index = index - 1;
            self.base_term = previous_term;
        }
        self.items.push(item);
        debug_assert_eq!(self.last_index(), index);
        Ok(())
    }

    /// Applies a snapshot marker at (index, term). The entries after it survive only if the log
    /// agrees with the snapshot at its index: a local snapshot (compaction) keeps the entries
    /// after the applied index, while a snapshot from the leader that our log does not match
    /// replaces the whole log, as raft's storage does. Nothing changes on error.
    pub fn apply_snapshot(&mut self, index: u64, term: u64) -> Result<(), TailError> {
        if index > INDEX_MAX {
            return Err(TailError::IndexTooLarge { index });
        }
        if let Some((snapshot_index, snapshot_term)) = self.snapshot {
            if index < snapshot_index {
                return Err(TailError::SnapshotBackwards {
                    index,
                    snapshot_index,
                });
            }
            if index == snapshot_index && term != snapshot_term {
                return Err(TailError::SnapshotConflict {
                    index,
                    term,
                    snapshot_term,
                });
            }
        }
        match self.term_at(index) {
            Some(known) if known == term => {
                self.items.drain(..(index - self.base_index) as usize);
                self.base_index = index;
                self.base_term = Some(term);
            }
            Some(_) => {
                self.items.clear();
                self.base_index = index;
                self.base_term = Some(term);
            }
            None if index > self.last_index() => {
                self.items.clear();
                self.base_index = index;
                self.base_term = Some(term);
            }
            None => {
                // The entry at `index` is not held: it was in a released segment (only during
                // recovery) and was checked when the marker was written. Keep what we have.
                if index == self.base_index {
                    self.base_term = Some(term);
                }
            }
        }
        self.snapshot = Some((index, term));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(terms: &[u64]) -> LogTail<u64> {
        let mut tail = LogTail::new(0);
        for (i, &term) in terms.iter().enumerate() {
            tail.push(i as u64 + 1, term).unwrap();
        }
        tail
    }

    #[test]
    fn entries_must_follow_the_last_index() {
        let mut t = tail(&[1, 1]);
        assert_eq!(
            t.push(4, 1),
            Err(TailError::Gap {
                index: 4,
                last_index: 2
            })
        );
        assert_eq!(t.items(), &[1, 1]);
    }

    #[test]
    fn an_entry_at_or_below_the_last_index_replaces_the_suffix() {
        let mut t = tail(&[1, 1, 1, 1]);
        t.push(3, 2).unwrap();
        assert_eq!(t.items(), &[1, 1, 2]);
        assert_eq!(t.last_index(), 3);
    }

    #[test]
    fn terms_never_decrease() {
        let mut t = tail(&[1, 2]);
        assert!(matches!(
            t.push(3, 1),
            Err(TailError::TermRegression { .. })
        ));
        assert!(matches!(
            t.push(2, 0),
            Err(TailError::TermRegression { .. })
        ));
    }

    #[test]
    fn indexes_stop_one_short_of_the_top_of_the_range() {
        let mut t = LogTail::<u64>::new(INDEX_MAX - 1);
        t.push(INDEX_MAX, 1).unwrap();
        assert_eq!(
            t.push(u64::MAX, 1),
            Err(TailError::IndexTooLarge { index: u64::MAX })
        );
        assert_eq!(
            t.apply_snapshot(u64::MAX, 1),
            Err(TailError::IndexTooLarge { index: u64::MAX })
        );
        t.apply_snapshot(INDEX_MAX, 1).unwrap();
        assert_eq!(t.last_index(), INDEX_MAX);
    }

    #[test]
    fn a_matching_snapshot_keeps_the_entries_after_it() {
        let mut t = tail(&[1, 1, 2, 2]);
        t.apply_snapshot(2, 1).unwrap();
        assert_eq!(t.items(), &[2, 2]);
        assert_eq!((t.base_index(), t.last_index()), (2, 4));
        assert!(matches!(t.push(2, 3), Err(TailError::BelowSnapshot { .. })));
    }

    #[test]
    fn a_conflicting_or_newer_snapshot_replaces_the_log() {
        let mut t = tail(&[1, 1, 2, 2]);
        t.apply_snapshot(3, 3).unwrap();
        assert!(t.items().is_empty());
        assert_eq!(t.last_index(), 3);
        t.apply_snapshot(10, 4).unwrap();
        assert_eq!(t.last_index(), 10);
        t.push(11, 4).unwrap();
        assert!(matches!(
            t.apply_snapshot(9, 4),
            Err(TailError::SnapshotBackwards { .. })
        ));
        assert!(matches!(
            t.apply_snapshot(10, 5),
            Err(TailError::SnapshotConflict { .. })
        ));
    }
}
