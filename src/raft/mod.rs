//! # The raft driver
//!
//! Every member runs one task, [`Node`], that owns the raft-rs `RawNode`, the write-ahead log and
//! the apply path. raft-rs is a pure state machine (the algorithm of Ongaro and Ousterhout's "In
//! Search of an Understandable Consensus Algorithm"): it never does I/O, it only tells the driver,
//! through a `Ready`, what must be sent, persisted and applied. The driver does that work in the
//! order that keeps Raft's promises (§5.1–§5.4 of the paper):
//!
//! 1. messages to followers may leave at once (a leader may send entries before persisting them);
//! 2. committed entries are applied to the MVCC store, each in one LMDB transaction that also
//!    records its raft index (the *consistent index*), so that replaying the WAL after a crash skips
//!    what is already applied;
//! 3. new entries and the HardState (term, vote, commit) go to the WAL with **one fdatasync** for
//!    the whole Ready: many proposals share one sync (group commit);
//! 4. only then do the *persisted messages* leave — votes and append acknowledgements, which
//!    promise other members that this one will remember what it said even across a crash;
//! 5. `advance` hands back a `LightReady` with the new commit index and more entries to apply.
//!
//! Client writes reach the node as [`Command::Propose`] with a unique request id; the node keeps a
//! waiter per id and answers it when the entry is applied — on the member that proposed it, which
//! need not be the leader. Linearizable reads use ReadIndex (§6.4 of Ongaro's thesis): all reads
//! that arrive in one loop turn share one ReadIndex request, the leader confirms it still leads
//! with a heartbeat round, and each read is answered once the local applied index reaches the
//! returned commit index.
//!
//! The driver takes time only from [`crate::io::Clock`] and randomness only from
//! [`crate::io::Rng`]: raft-rs's own election-timeout draw is overridden with a seeded one, so a
//! simulated run replays from its seed.

pub mod dedup;
mod logger;
mod node;

pub use logger::raft_logger;
pub use node::{
    Applied, Command, Node, NodeConfig, NodeError, NodeParts, NodeStatus, ProposalResult,
    COMMANDS_PER_TURN_MAX, PARKED_PROPOSALS_MAX, READ_BATCHES_MAX, SNAPSHOT_CATCH_UP_ENTRIES,
    WAITERS_MAX,
};

use ::raft::eraftpb::{ConfState, Snapshot};
use ::raft::storage::MemStorage;
use protobuf::Message as _;

use crate::mvcc::Store;
use crate::wal::WalContents;

/// Name of the backend meta blob holding the ConfState as of the consistent index.
pub const CONF_STATE_META: &str = "raft_conf_state";

/// Rebuilds raft's in-memory log from what survived on disk: the last compaction point and the
/// entries after it from the WAL, the HardState, and the membership from the backend (as of its
/// consistent index) or, before any conf change was applied, none (the log's first entries add
/// the initial members).
///
/// Returns the storage and the compaction index.
pub fn restore_storage(
    contents: &WalContents,
    store: &Store,
) -> Result<(MemStorage, u64), NodeError> {
    let applied = store.consistent_index();
    let conf_state = match store
        .meta_get(CONF_STATE_META)
        .map_err(|e| NodeError::Storage(e.to_string()))?
    {
        Some(bytes) => {
            ConfState::parse_from_bytes(&bytes).map_err(|e| NodeError::Corrupt(e.to_string()))?
        }
        // Nothing applied yet: the membership comes from the bootstrap conf changes in the log.
        None => ConfState::default(),
    };
    let storage = MemStorage::new();
    let mut snapshot_index = 0;
    {
        let mut core = storage.wl();
        if let Some((index, term)) = contents.snapshot {
            if applied < index {
                return Err(NodeError::Corrupt(format!(
                    "the backend has applied up to index {applied} but the WAL was compacted at {index}: the backend lost synced data"
                )));
            }
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = index;
            snap.mut_metadata().term = term;
            snap.mut_metadata().set_conf_state(conf_state);
            core.apply_snapshot(snap)
                .map_err(|e| NodeError::Raft(e.to_string()))?;
            snapshot_index = index;
        } else {
            core.set_conf_state(conf_state);
        }
        let entries: Vec<_> = contents
            .entries
            .iter()
            .filter(|e| e.index > snapshot_index)
            .cloned()
            .collect();
        if let Some(first) = entries.first() {
            if first.index != snapshot_index + 1 {
                return Err(NodeError::Corrupt(format!(
                    "the WAL resumes at index {} after a compaction point at {snapshot_index}",
                    first.index
                )));
            }
        }
        core.append(&entries)
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let last = entries.last().map(|e| e.index).unwrap_or(snapshot_index);
        if applied > last {
            return Err(NodeError::Corrupt(format!(
                "the backend has applied up to index {applied} but the WAL ends at {last}: synced WAL records are missing"
            )));
        }
        let mut hs = contents.hard_state.clone();
        if crate::bugs::active(crate::bugs::Bug::ForgetVote) {
            hs.vote = 0;
        }
        // Everything applied was committed; the commit index in the HardState may lag because it is
        // persisted lazily.
        hs.commit = hs.commit.max(applied).max(snapshot_index);
        hs.term = hs.term.max(core.hard_state().term);
        core.set_hardstate(hs);
    }
    Ok((storage, snapshot_index))
}

/// raft-rs settings for this member.
pub fn raft_config(cfg: &NodeConfig, applied: u64) -> ::raft::Config {
    ::raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied: if crate::bugs::active(crate::bugs::Bug::SkipConsistentIndex) {
            0
        } else {
            applied
        },
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ::raft::ReadOnlyOption::Safe,
        ..Default::default()
    }
}
