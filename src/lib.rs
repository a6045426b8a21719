//! # cairn
//!
//! An etcd v3–compatible, Raft-replicated key-value store whose node code runs unchanged inside a
//! deterministic simulation.
//!
//! # Layout
//!
//! * [`io`]: the seams (Clock, Disk, Transport, Rng) and their production implementations.
//! * [`wal`]: the write-ahead log of raft entries and HardState, segmented and checksummed.
//! * [`raft`]: the node: the raft-rs `RawNode` driver, its Ready loop, ReadIndex, conf changes and
//!   snapshots.
//! * [`mvcc`]: the revisioned key-value store on LMDB (key index, revisions, compaction, events,
//!   snapshot export and install).
//! * [`lease`]: the lease table: grants and revokes applied through raft, deadlines on the leader.
//! * [`server`]: request → proposal → apply → response; etcd's checks and apply semantics;
//!   membership; metrics.
//! * [`api`]: the gRPC services, the HTTP endpoints, and the mapping of errors to etcd's codes
//!   and messages.
//! * [`peer`]: the production peer transport (raft messages and snapshots over gRPC streams).
//! * [`config`] and [`run`]: the server's flags and the production wiring of a member.
//! * [`ctl`]: the `cairnctl` command-line client.
//! * [`tls`]: TLS on the client and peer ports: certificates from etcd's flags, `--auto-tls`, and
//!   the listener that serves plain and TLS connections on one port.
//! * [`tcp_proxy`]: `cairn gateway start`, etcd's stateless TCP gateway in front of a cluster.
//! * [`gofmt`]: Go's formatting and parsing (quoting, durations, booleans), which etcdctl's output
//!   and etcd's flag syntax follow.
//! * [`bugs`] and [`crashpoint`]: injectable bugs and crash points, live only in simulation builds.
//! * [`proto`]: generated wire types.

pub mod api;
/// Realistic bugs that only simulation builds can switch on, to show the checkers bite.
pub mod bugs;
pub mod config;
/// Named places where the simulator may crash a member; compiled to nothing outside simulation.
pub mod crashpoint;
pub mod ctl;
pub(crate) mod gofmt;
pub mod io;
pub mod lease;
pub mod mvcc;
pub mod peer;
pub mod proto;
pub mod raft;
/// Production wiring only: the simulator builds its members itself.
#[cfg(not(madsim))]
pub mod run;
pub mod server;
#[cfg(not(madsim))]
pub mod tcp_proxy;
pub mod tls;
pub mod wal;
