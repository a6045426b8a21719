//! The revisioned key-value store: every version of every key, on LMDB.
//!
//! # What the store owns
//!
//! etcd's data model is a multi-version map: a write never overwrites, it adds a new version of
//! the key at a new *revision*, and any reader may ask for the whole key space as it was at an
//! older revision. The [`Store`] owns that history. It is the state machine of the Raft log
//! (Ongaro and Ousterhout, "In Search of an Understandable Consensus Algorithm", §5.3): every
//! member applies the same committed entries in the same order through [`Store::write`], so every
//! member computes the same revisions, versions and values. Leases, auth and the request rules of
//! etcd's API live above it (`server::apply`); the store only knows keys, values and revisions.
//!
//! # Revisions
//!
//! A fresh store is at revision 1. Each raft entry that changes at least one key becomes one
//! [`WriteTxn`] and produces exactly one new *main* revision (current + 1), however many keys it
//! touches; the changes inside it are ordered by a *sub* revision 0, 1, 2, ... An entry that
//! changes nothing (a delete that matched no key, a failed transaction) creates no revision. A put
//! keeps the key's `create_revision` while the key is alive, sets `mod_revision` to the new
//! revision and increments `version`; a delete writes a *tombstone*, and the next put of the key
//! starts a new incarnation (a *generation*) at version 1.
//!
//! LMDB holds one record per change, keyed by the revision (main and sub, big-endian so that
//! LMDB's byte order is revision order; a trailing `t` marks a tombstone, as in etcd) whose value
//! is the encoded `mvccpb::KeyValue`. Ordering by revision makes the two scans the store needs
//! cheap: history replay for watchers ([`Store::events_between`]) and compaction.
//!
//! # The key index
//!
//! To answer "what was key K at revision R" without scanning, an in-memory index (etcd's
//! `treeIndex`; see the `index` module) maps each key, in key order, to its generations of revisions. It is
//! not persisted: [`Store::open`] rebuilds it by one pass over LMDB, checking on the way that
//! revisions only grow and that stored versions match. Readers lock it only long enough to find
//! the revisions they need and to open an LMDB read transaction, which pins a snapshot; values
//! are then read from that snapshot after the lock is released. A writer commits to LMDB *before*
//! it publishes its revisions in the index, and compaction removes revisions from the index
//! *before* it deletes them from LMDB, so every revision a reader finds in the index is present in
//! the snapshot it opened.
//!
//! # Compaction
//!
//! History grows without bound, so clients compact: [`Store::compact`] at revision C keeps, for
//! every key, the newest version at or below C (unless that is a tombstone, which goes with its
//! whole generation) and every version above C, and refuses later reads below C with
//! [`MvccError::Compacted`]. Reads *at* C still work. The logical compaction (the new floor and
//! the index) is recorded first, in one LMDB transaction with the raft index; the physical
//! deletion follows in bounded batches. If the process dies between batches, `open` notices that
//! the finished compaction trails the scheduled one and completes it.
//!
//! # The consistent index
//!
//! The Raft WAL is the durable record; LMDB runs with `NO_SYNC`, so a crash may lose its newest
//! commits. Every LMDB write transaction therefore also stores the raft index of the entry it
//! applies (etcd's *consistent index*), atomically with the change. After a restart the node
//! replays the WAL from its last snapshot and skips every entry at or below the consistent index:
//! LMDB either has an entry's whole effect and its index, or neither, so replay applies each entry
//! exactly once and is idempotent. Entries that change nothing still advance the index through
//! [`Store::set_consistent_index`]. [`Store::sync`] forces the data to disk (before a snapshot or
//! at shutdown).

mod index;
mod revision;
mod store;

#[cfg(test)]
mod tests;

pub use index::KeySpan;
pub use revision::Revision;
pub use store::{
    read_snapshot, verify_snapshot, ReadTxn, Store, WriteTxn, CLIENT_SNAPSHOT_PREFIX,
    EVENTS_BETWEEN_MAX, INSTALL_DIR, SNAPSHOT_MAGIC, SNAPSHOT_RECORD_BYTES_MAX,
};

use crate::proto::mvccpb::KeyValue;

/// How to read a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// The revision to read at; 0 (or negative, as in etcd) means the current revision.
    pub rev: i64,
    /// Return at most this many key-values; 0 means no limit. `count` is not limited.
    pub limit: usize,
    /// Only count the keys; return no key-values.
    pub count_only: bool,
}

/// The answer to a range read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeResult {
    /// The key-values, in key order, at most `limit` of them.
    pub kvs: Vec<KeyValue>,
    /// How many keys the range holds at the read revision, before the limit.
    pub count: usize,
    /// The store's current revision (what etcd puts in the response header), not the revision
    /// read at.
    pub rev: i64,
}

/// Failures of the store. `Compacted` and `FutureRevision` are answers to a request every member
/// computes identically; the others are local failures that must stop the node.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The requested revision is below the compaction floor.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// The LMDB map is full (`MDB_MAP_FULL`). A local failure: the map is sized with headroom
    /// above the space quota so that client writes are refused long before this.
    #[error("mvcc: the LMDB map is full (MDB_MAP_FULL)")]
    NoSpace,
    /// A write was asked for with a raft index the store has already applied; replay must skip
    /// such entries before writing.
    #[error("mvcc: raft index {raft_index} is not above the consistent index {consistent_index}")]
    IndexRegression {
        /// The index of the entry being applied.
        raft_index: u64,
        /// The index the store has already applied.
        consistent_index: u64,
    },
    /// LMDB or the file system failed.
    #[error("mvcc: storage failure: {0}")]
    Storage(String),
    /// The stored data contradicts itself (bad key, undecodable value, index and LMDB disagree).
    #[error("mvcc: corrupt store: {0}")]
    Corrupt(String),
}

impl From<heed::Error> for MvccError {
    fn from(e: heed::Error) -> MvccError {
        match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => MvccError::NoSpace,
            e => MvccError::Storage(e.to_string()),
        }
    }
}

impl From<std::io::Error> for MvccError {
    fn from(e: std::io::Error) -> MvccError {
        MvccError::Storage(e.to_string())
    }
}
