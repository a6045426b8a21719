//! The in-memory key index: for every key, the revisions at which it changed.
//!
//! This is etcd's `treeIndex`/`keyIndex`. LMDB is keyed by revision, so it can answer "what
//! happened at revision R" but not "what was key K at revision R"; the index answers the second
//! question without touching disk. Each key has a list of *generations*: a generation starts with
//! the put that created the key and ends with the tombstone that deleted it; the last generation is
//! the open one (empty when the key is currently deleted). Revisions only grow, inside a
//! generation and across generations, which the index asserts on every change.
//!
//! Example: put a@2, put a@3, delete a@4, put a@6 gives `[{2,3,4t}, {6}]`; reading `a` at 3
//! finds revision 3 in the first generation, at 5 finds nothing (the key was deleted at 4),
//! at 7 finds 6.

use std::collections::{BTreeMap, HashSet};
use std::ops::{Bound, ControlFlow};

use super::revision::Revision;
use super::MvccError;

/// Start and end bounds of a key range, as `BTreeMap::range` takes them.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Which keys a request covers, decoded from etcd's `(key, range_end)` convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpan<'a> {
    /// `range_end` empty: exactly this key.
    Single(&'a [u8]),
    /// `range_end == "\0"`: every key `>= key`.
    From(&'a [u8]),
    /// `[key, range_end)`; empty when `range_end <= key`.
    Range(&'a [u8], &'a [u8]),
}

impl<'a> KeySpan<'a> {
    /// Decodes etcd's convention: empty `range_end` is the single key, `"\0"` means "every key
    /// from `key` on", anything else is the half-open interval `[key, range_end)`.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeySpan<'a> {
        match range_end {
            [] => KeySpan::Single(key),
            [0] => KeySpan::From(key),
            end => KeySpan::Range(key, end),
        }
    }

    /// Whether `k` lies in the span.
    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeySpan::Single(key) => k == key,
            KeySpan::From(key) => k >= key,
            KeySpan::Range(key, end) => k >= key && k < end,
        }
    }

    /// The span as BTreeMap bounds, or `None` when it is empty (BTreeMap panics on inverted
    /// bounds, so an inverted `[key, range_end)` must never reach it).
    pub(crate) fn bounds(&self) -> Option<KeyBounds<'a>> {
        match *self {
            KeySpan::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeySpan::From(key) => Some((Bound::Included(key), Bound::Unbounded)),
            KeySpan::Range(key, end) if end > key => {
                Some((Bound::Included(key), Bound::Excluded(end)))
            }
            KeySpan::Range(..) => None,
        }
    }
}

/// One incarnation of a key: from the put that created it to the tombstone that deleted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Generation {
    /// The main revision of the put that created this incarnation (`create_revision`).
    pub(crate) created: i64,
    /// Number of changes in this generation, counting ones compaction removed from `revs` and
    /// counting the tombstone (as etcd does): the version of `revs[i]` is
    /// `version - (revs.len() - 1 - i)`.
    pub(crate) version: i64,
    /// Revisions still present in LMDB, ascending; a closed generation ends with its tombstone.
    pub(crate) revs: Vec<Revision>,
}

impl Generation {
    fn empty() -> Generation {
        Generation {
            created: 0,
            version: 0,
            revs: Vec::new(),
        }
    }
}

/// The history of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyHistory {
    /// The newest revision of the key (put or tombstone).
    pub(crate) modified: Revision,
    /// Never empty; the last generation is the open one and is empty iff the key is deleted.
    pub(crate) generations: Vec<Generation>,
}

impl KeyHistory {
    fn new() -> KeyHistory {
        KeyHistory {
            modified: Revision::new(0, 0),
            generations: vec![Generation::empty()],
        }
    }

    fn last_mut(&mut self) -> &mut Generation {
        self.generations
            .last_mut()
            .expect("a key history always has a generation")
    }

    /// Whether the key exists now (its open generation is non-empty).
    pub(crate) fn is_alive(&self) -> bool {
        !self.generations.last().expect("generation").revs.is_empty()
    }

    /// True when nothing of the key remains (compaction removed its last tombstone).
    fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].revs.is_empty()
    }

    fn put(&mut self, rev: Revision) {
        assert!(
            rev > self.modified,
            "put at {rev} after {} : revisions must grow",
            self.modified
        );
        let g = self.last_mut();
        if g.revs.is_empty() {
            g.created = rev.main;
        }
        g.revs.push(rev);
        g.version += 1;
        self.modified = rev;
    }

    fn tombstone(&mut self, rev: Revision) -> Result<(), MvccError> {
        if !self.is_alive() {
            return Err(MvccError::Corrupt(format!(
                "tombstone at {rev} for a deleted key"
            )));
        }
        self.put(rev);
        self.generations.push(Generation::empty());
        Ok(())
    }

    /// The revision of the key visible at store revision `at_rev`, with its create revision
    /// and version, or `None` if the key did not exist then (etcd's `keyIndex.get`).
    pub(crate) fn get(&self, at_rev: i64) -> Option<(Revision, i64, i64)> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let Some(newest) = g.revs.last() else {
                continue;
            };
            if i != last && newest.main <= at_rev {
                // The generation was closed (its tombstone) at or before `at_rev`.
                return None;
            }
            if g.revs[0].main <= at_rev {
                let n = g
                    .revs
                    .iter()
                    .rposition(|r| r.main <= at_rev)
                    .expect("revs[0] qualifies");
                let version = g.version - (g.revs.len() - 1 - n) as i64;
                return Some((g.revs[n], g.created, version));
            }
        }
        None
    }

    /// Removes every revision compaction at `at_rev` makes unreachable and records the one it
    /// keeps (the newest `<= at_rev`, unless that is a tombstone) in `keep` (etcd's
    /// `keyIndex.compact`).
    fn compact(&mut self, at_rev: i64, keep: &mut HashSet<Revision>) {
        // The first generation still alive after `at_rev`: earlier ones ended with a tombstone at
        // or before it and vanish entirely.
        let mut gi = 0;
        while gi < self.generations.len() - 1 {
            let tomb = self.generations[gi]
                .revs
                .last()
                .expect("closed generation")
                .main;
            if tomb > at_rev {
                break;
            }
            gi += 1;
        }
        let last = self.generations.len() - 1;
        let g = &mut self.generations[gi];
        if let Some(n) = g.revs.iter().rposition(|r| r.main <= at_rev) {
            keep.insert(g.revs[n]);
            g.revs.drain(..n);
        }
        if g.revs.len() == 1 && gi != last {
            // Only a tombstone is left of this generation: it goes too.
            keep.remove(&g.revs[0]);
            gi += 1;
        }
        self.generations.drain(..gi);
    }

    /// Asserts the structural invariants; used by tests and after restore.
    pub(crate) fn check(&self, key: &[u8]) {
        assert!(!self.generations.is_empty(), "{key:?}: no generation");
        let mut prev: Option<Revision> = None;
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate() {
            if i != last {
                assert!(!g.revs.is_empty(), "{key:?}: empty closed generation");
            }
            for r in &g.revs {
                if let Some(p) = prev {
                    assert!(*r > p, "{key:?}: revisions not increasing: {p} then {r}");
                }
                prev = Some(*r);
            }
            if let Some(first) = g.revs.first() {
                assert!(
                    g.created <= first.main,
                    "{key:?}: created after first revision"
                );
                assert!(
                    g.version >= g.revs.len() as i64,
                    "{key:?}: version below revision count"
                );
            }
        }
        if let Some(p) = prev {
            assert_eq!(
                p, self.modified,
                "{key:?}: modified is not the newest revision"
            );
        }
    }
}

/// The key index: key -> history, ordered by key like etcd's B-tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    keys: BTreeMap<Vec<u8>, KeyHistory>,
}

impl KeyIndex {
    pub(crate) fn new() -> KeyIndex {
        KeyIndex::default()
    }

    /// Number of keys with any history left.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    pub(crate) fn history(&self, key: &[u8]) -> Option<&KeyHistory> {
        self.keys.get(key)
    }

    /// The revision of `key` visible at `at_rev` with create revision and version.
    pub(crate) fn get(&self, key: &[u8], at_rev: i64) -> Option<(Revision, i64, i64)> {
        self.keys.get(key).and_then(|h| h.get(at_rev))
    }

    /// Calls `f` with every key of `span` that exists at `at_rev` and its visible revision, in
    /// key order, until `f` breaks.
    pub(crate) fn visit(
        &self,
        span: KeySpan<'_>,
        at_rev: i64,
        mut f: impl FnMut(&[u8], Revision) -> ControlFlow<()>,
    ) {
        let Some(bounds) = span.bounds() else { return };
        for (k, h) in self.keys.range::<[u8], _>(bounds) {
            if let Some((rev, _, _)) = h.get(at_rev) {
                if f(k, rev).is_break() {
                    return;
                }
            }
        }
    }

    /// The visible revisions of the keys of `span` at `at_rev` (at most `limit` of them, 0 for
    /// all; none if `count_only`) and how many keys the span holds at `at_rev` in total (etcd's
    /// `Revisions` and `Count`).
    pub(crate) fn revisions(
        &self,
        span: KeySpan<'_>,
        at_rev: i64,
        limit: usize,
        count_only: bool,
    ) -> (Vec<Revision>, usize) {
        let mut revs = Vec::new();
        let mut count = 0usize;
        self.visit(span, at_rev, |_, rev| {
            if !count_only && (limit == 0 || revs.len() < limit) {
                revs.push(rev);
            }
            count += 1;
            ControlFlow::Continue(())
        });
        (revs, count)
    }

    /// Records a put of `key` at `rev`.
    pub(crate) fn put(&mut self, key: &[u8], rev: Revision) {
        self.keys
            .entry(key.to_vec())
            .or_insert_with(KeyHistory::new)
            .put(rev);
    }

    /// Records a delete of `key` at `rev`; the key must be alive.
    pub(crate) fn tombstone(&mut self, key: &[u8], rev: Revision) -> Result<(), MvccError> {
        match self.keys.get_mut(key) {
            Some(h) => h.tombstone(rev),
            None => Err(MvccError::Corrupt(format!(
                "tombstone at {rev} for unknown key {key:?}"
            ))),
        }
    }

    /// Rebuilds one revision read from LMDB at open, in revision order. Unlike [`Self::put`] it
    /// takes `create_revision` and `version` from the stored value, because compaction may have
    /// removed the put that created the generation. A tombstone whose generation compaction had
    /// already removed (possible only when a compaction was interrupted) becomes a lone closed
    /// generation, which finishing the compaction removes again.
    pub(crate) fn restore(
        &mut self,
        key: &[u8],
        rev: Revision,
        tombstone: bool,
        create_revision: i64,
        version: i64,
    ) -> Result<(), MvccError> {
        let h = self
            .keys
            .entry(key.to_vec())
            .or_insert_with(KeyHistory::new);
        if rev <= h.modified {
            return Err(MvccError::Corrupt(format!(
                "key {key:?}: revision {rev} after {}",
                h.modified
            )));
        }
        let g = h.last_mut();
        if tombstone {
            if g.revs.is_empty() {
                g.created = rev.main;
            }
            g.revs.push(rev);
            g.version += 1;
            h.modified = rev;
            h.generations.push(Generation::empty());
            return Ok(());
        }
        if g.revs.is_empty() {
            if create_revision > rev.main || version < 1 {
                return Err(MvccError::Corrupt(format!(
                    "key {key:?} at {rev}: create revision {create_revision}, version {version}"
                )));
            }
            g.created = create_revision;
            g.version = version;
        } else {
            g.version += 1;
            if g.created != create_revision || g.version != version {
                return Err(MvccError::Corrupt(format!(
                    "key {key:?} at {rev}: stored create {create_revision} version {version}, \
                     index expects create {} version {}",
                    g.created, g.version
                )));
            }
        }
        g.revs.push(rev);
        h.modified = rev;
        Ok(())
    }

    /// Compacts every key at `at_rev` and returns the revisions `<= at_rev` that stay (etcd's
    /// `treeIndex.Compact`). Keys with nothing left are removed.
    pub(crate) fn compact(&mut self, at_rev: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, h| {
            h.compact(at_rev, &mut keep);
            !h.is_empty()
        });
        keep
    }

    /// All revisions the index references, for checking it against LMDB.
    pub(crate) fn all_revisions(&self) -> Vec<(Revision, Vec<u8>)> {
        let mut out = Vec::new();
        for (k, h) in &self.keys {
            for g in &h.generations {
                out.extend(g.revs.iter().map(|r| (*r, k.clone())));
            }
        }
        out.sort();
        out
    }

    /// Asserts every key's invariants.
    pub(crate) fn check(&self) {
        for (k, h) in &self.keys {
            h.check(k);
            assert!(!h.is_empty(), "{k:?}: empty history kept in the index");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put a@2, put a@3, delete a@4, put a@6, put a@7.
    fn sample() -> KeyIndex {
        let mut ix = KeyIndex::new();
        ix.put(b"a", r(2));
        ix.put(b"a", r(3));
        ix.tombstone(b"a", r(4)).unwrap();
        ix.put(b"a", r(6));
        ix.put(b"a", r(7));
        ix.check();
        ix
    }

    #[test]
    fn key_span_follows_etcd_range_end_convention() {
        assert!(KeySpan::new(b"a", b"").contains(b"a"));
        assert!(!KeySpan::new(b"a", b"").contains(b"ab"));
        assert!(KeySpan::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeySpan::new(b"b", b"\0").contains(b"a"));
        assert!(KeySpan::new(b"\0", b"\0").contains(b"\0"));
        assert!(KeySpan::new(b"a", b"c").contains(b"b"));
        assert!(!KeySpan::new(b"a", b"c").contains(b"c"));
        assert_eq!(KeySpan::new(b"c", b"a").bounds(), None);
        assert_eq!(KeySpan::new(b"a", b"a").bounds(), None);
    }

    #[test]
    fn get_sees_generations_and_tombstones() {
        let ix = sample();
        assert_eq!(ix.get(b"a", 1), None);
        assert_eq!(ix.get(b"a", 2), Some((r(2), 2, 1)));
        assert_eq!(ix.get(b"a", 3), Some((r(3), 2, 2)));
        assert_eq!(ix.get(b"a", 4), None);
        assert_eq!(ix.get(b"a", 5), None);
        assert_eq!(ix.get(b"a", 6), Some((r(6), 6, 1)));
        assert_eq!(ix.get(b"a", 100), Some((r(7), 6, 2)));
        assert_eq!(ix.get(b"b", 100), None);
    }

    #[test]
    fn get_inside_one_revision_uses_sub_order() {
        // A txn that deletes a key and puts it again at the same main revision.
        let mut ix = KeyIndex::new();
        ix.put(b"a", r(2));
        ix.tombstone(b"a", Revision::new(3, 0)).unwrap();
        ix.put(b"a", Revision::new(3, 1));
        assert_eq!(ix.get(b"a", 3), Some((Revision::new(3, 1), 3, 1)));
        // And the reverse: put then delete at one revision.
        let mut ix = KeyIndex::new();
        ix.put(b"b", Revision::new(2, 0));
        ix.tombstone(b"b", Revision::new(2, 1)).unwrap();
        assert_eq!(ix.get(b"b", 2), None);
    }

    #[test]
    #[should_panic(expected = "revisions must grow")]
    fn put_asserts_increasing_revisions() {
        let mut ix = sample();
        ix.put(b"a", r(5));
    }

    #[test]
    fn tombstone_of_deleted_key_is_an_error() {
        let mut ix = KeyIndex::new();
        assert!(ix.tombstone(b"a", r(2)).is_err());
        ix.put(b"a", r(2));
        ix.tombstone(b"a", r(3)).unwrap();
        assert!(ix.tombstone(b"a", r(4)).is_err());
    }

    #[test]
    fn compaction_keeps_newest_revision_at_or_below() {
        let mut ix = sample();
        let keep = ix.compact(3);
        assert_eq!(keep, HashSet::from([r(3)]));
        assert_eq!(ix.get(b"a", 3), Some((r(3), 2, 2)));
        assert_eq!(ix.get(b"a", 7), Some((r(7), 6, 2)));
        ix.check();
    }

    #[test]
    fn compaction_drops_tombstone_and_its_generation() {
        let mut ix = sample();
        let keep = ix.compact(5);
        assert!(keep.is_empty());
        assert_eq!(ix.history(b"a").unwrap().generations.len(), 1);
        assert_eq!(ix.get(b"a", 7), Some((r(7), 6, 2)));
        let keep = ix.compact(7);
        assert_eq!(keep, HashSet::from([r(7)]));
        ix.check();
    }

    #[test]
    fn compaction_removes_keys_whose_last_change_is_a_delete() {
        let mut ix = KeyIndex::new();
        ix.put(b"a", r(2));
        ix.tombstone(b"a", r(3)).unwrap();
        ix.put(b"b", r(4));
        let keep = ix.compact(3);
        assert!(keep.is_empty());
        assert!(ix.history(b"a").is_none());
        assert_eq!(ix.len(), 1);
        // Compacting below b's first revision keeps nothing of b but leaves it intact.
        ix.check();
    }

    #[test]
    fn revisions_counts_all_and_limits_list() {
        let mut ix = KeyIndex::new();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            ix.put(*k, r(2 + i as i64));
        }
        ix.tombstone(b"c", r(6)).unwrap();
        let (revs, count) = ix.revisions(KeySpan::new(b"a", b"\0"), 6, 2, false);
        assert_eq!((revs, count), (vec![r(2), r(3)], 3));
        let (revs, count) = ix.revisions(KeySpan::new(b"a", b"\0"), 5, 0, false);
        assert_eq!((revs.len(), count), (4, 4));
        let (revs, count) = ix.revisions(KeySpan::new(b"d", b"a"), 6, 0, false);
        assert_eq!((revs.len(), count), (0, 0));
    }

    #[test]
    fn restore_rebuilds_the_same_index() {
        let ix = sample();
        let mut rebuilt = KeyIndex::new();
        let versions = [(2, 2, 1), (3, 2, 2), (6, 6, 1), (7, 6, 2)];
        for (rev, key) in ix.all_revisions() {
            let tomb = rev.main == 4;
            let (create, version) = versions
                .iter()
                .find(|v| v.0 == rev.main)
                .map(|v| (v.1, v.2))
                .unwrap_or((0, 0));
            rebuilt.restore(&key, rev, tomb, create, version).unwrap();
        }
        assert_eq!(rebuilt, ix);
    }
}
