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
//! the revisions they need, to open an LMDB read transaction (which pins a snapshot) and to take
//! the current uncommitted batch (see *Durability*); values are then read from those after the
//! lock is released. A writer adds its records to the batch *before* it publishes its revisions
//! in the index, a batch is replaced (never emptied) once LMDB holds it, and compaction removes
//! revisions from the index *before* it deletes them from LMDB, so every revision a reader finds
//! in the index is in the batch or the snapshot it took.
//!
//! # Compaction
//!
//! History grows without bound, so clients compact: [`Store::compact`] at revision C keeps, for
//! every key, the newest version at or below C (unless that is a tombstone, which goes with its
//! whole generation) and every version above C, and refuses later reads below C with
//! [`MvccError::Compacted`]. Reads *at* C still work. The logical compaction (the new floor and
//! the index) is recorded first, in one LMDB transaction with the raft index; the physical
//! deletion follows in bounded batches, one per [`Store::purge_step`] (the raft loop runs one a
//! tick, so that deleting millions of revisions never stops its heartbeats). Until it is done,
//! scans of LMDB (watch replay, `HashKV`) skip the revisions the compaction dropped, so what a
//! reader sees never depends on how far the deletion got. If the process dies between batches,
//! `open` notices that the finished compaction trails the scheduled one and completes it.
//!
//! # The consistent index
//!
//! Every LMDB commit also stores the raft index of the newest entry it holds (etcd's *consistent
//! index*), atomically with the entries' changes. After a restart the node replays the WAL from
//! its last snapshot marker and skips every entry at or below the consistent index: LMDB either
//! has an entry's whole effect and its index, or neither, so replay applies each entry exactly
//! once and is idempotent. Entries that change nothing still advance the index through
//! [`Store::set_consistent_index`].
//!
//! # Durability: why a power loss cannot corrupt the backend
//!
//! The raft WAL is the durable record of every acknowledged write; the backend only has to come
//! back *whole* after a crash, at some consistent index the WAL can replay from. Three rules make
//! that hold by construction:
//!
//! 1. **LMDB never tears a commit.** The environment runs with `MDB_NOMETASYNC`: each commit
//!    writes its data pages, `fdatasync`s them, and only then writes the meta page that makes
//!    them current, whose own sync is left to the next commit (or [`Store::sync`]). LMDB
//!    documents that this keeps atomicity and consistency and may only undo the last commit on a
//!    system crash: the file then opens at the previous meta page (already durable, as the
//!    newer commit's `fdatasync` flushed it), whose pages the newer commit did not overwrite (a
//!    commit reuses only pages that neither of the two newest commits refers to).
//!    `MDB_NOSYNC`, used before, gave no such order: the kernel may write the new meta page
//!    before the data pages it points at (ext4 and XFS do not keep write order), and as LMDB has
//!    no page checksums, the damage could come back silently.
//! 2. **The WAL outlives what LMDB may lose.** A crash may take the backend back to an older
//!    consistent index, so the WAL must still hold every entry after it. The node releases WAL
//!    segments (log compaction) only after [`Store::sync`] committed the batch and forced the
//!    meta page to disk; installing a snapshot syncs the new backend before the WAL may drop the
//!    entries it covers.
//! 3. **A crash loses a suffix, never a hole.** Applied entries collect in an in-memory batch
//!    (etcd's backend batch) that reaches LMDB in one transaction, in log order, with the
//!    consistent index of its newest entry: once a tick, when it holds [`BATCH_ENTRIES_MAX`]
//!    entries or [`BATCH_BYTES_MAX`] bytes, and before anything that reads or rewrites the whole
//!    file (compaction, snapshot export and install, copies, hashes of the file, sync). Readers
//!    see the batch at once, so a client acknowledged after apply reads its write; a crash loses
//!    the batch whole, and replaying the WAL from the consistent index LMDB reopens with brings
//!    back exactly what was lost.
//!
//! The put path stays fast because nothing in it waits for LMDB: the WAL's group-committed
//! fsync is the only one a write waits for, and one LMDB commit (one `fdatasync`) serves every
//! entry applied in a tick. `docs/performance.md` has the before/after figures.

mod index;
mod revision;
mod store;

#[cfg(test)]
mod tests;

pub use index::KeySpan;
pub use revision::Revision;
pub use store::{
    read_snapshot, verify_snapshot, ReadTxn, Store, WriteTxn, BATCH_BYTES_MAX, BATCH_ENTRIES_MAX,
    CLIENT_SNAPSHOT_PREFIX, EVENTS_BETWEEN_MAX, INSTALL_DIR, SNAPSHOT_MAGIC,
    SNAPSHOT_RECORD_BYTES_MAX,
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
