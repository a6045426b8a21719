//! # cairn
//!
//! An etcd v3–compatible, Raft-replicated key-value store whose node code runs unchanged inside a
//! deterministic simulation.
//!
//! # Layout
//!
//! * [`io`]: the seams (Clock, Disk, Transport, Rng) and their production implementations.
//! * [`wal`]: the write-ahead log of raft entries and HardState, segmented and checksummed.
//! * [`raft`]: the node: the raft-rs `RawNode` driver and its Ready loop.
//! * [`mvcc`]: the revisioned key-value store on LMDB (key index, revisions, compaction, events).
//! * [`server`]: request → proposal → apply → response; waiters; linearizable reads.
//! * [`api`]: the gRPC services and the mapping of errors to etcd's codes and messages.
//! * [`ctl`]: the `cairnctl` command-line client.
//! * [`proto`]: generated wire types.

pub mod api;
pub mod config;
pub mod ctl;
pub mod io;
pub mod lease;
pub mod mvcc;
pub mod peer;
pub mod proto;
pub mod raft;
pub mod run;
pub mod server;
pub mod wal;
