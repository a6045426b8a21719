//! Raft message stepping, with cairn's Ready handling and cairn's WAL underneath.
//!
//! Three members (ids 1, 2, 3) run raft-rs `RawNode<MemStorage>` configured by cairn
//! (`cairn::raft::raft_config`) and bootstrapped as cairn bootstraps a new cluster (one
//! ConfChange(AddNode) per member at term 1, committed). Each member handles `Ready` the way
//! cairn's driver does (`src/raft/node.rs`): send messages (a MsgSnapshot rewritten to describe
//! the backend's applied index, as `send_snapshot` does), install a snapshot from the leader
//! (backend, MemStorage, WAL snapshot marker), apply committed entries (conf changes through
//! `apply_conf_change`), append entries and the HardState to a real `cairn::wal::Wal` on an
//! in-memory disk and to the MemStorage, sync once, send persisted messages, advance, handle the
//! LightReady, and compact the log every `snapshot_count` applied entries (WAL snapshot marker,
//! `release_to`, `MemStorage::compact`). The backend (LMDB in cairn) is reduced to what the raft
//! path reads from it: the applied index and the membership as of it.
//!
//! This is a copy of the driver's logic, not the driver: `Node` can only be run as an async task
//! with real I/O seams, so the harness must follow `src/raft/node.rs` when that changes.
//!
//! The fuzzer is the network and the clock: it delivers, duplicates, drops and reorders messages,
//! ticks members, proposes entries, the membership changes cairn's server can propose (see
//! `Cluster::conf_change`), reads and leadership transfers, restarts a member from its WAL, and
//! injects arbitrary bytes decoded as an `eraftpb::Message` (protobuf 2) into member 1. A member
//! that applies its own removal stops, as cairn's does.
//!
//! # The filter on injected messages
//!
//! raft-rs trusts its peers: a forged message can make it panic on purpose (`fatal!`). Those
//! panics are raft-rs refusing a Byzantine peer, not cairn bugs, so injected messages are shaped
//! into what a member of this cluster could send: `to` is member 1, `from` is member 2 or 3, and
//! `plausible` drops the kinds of message no correct peer sends and on which raft-rs panics (each
//! rule says which panic). Every other field stays arbitrary.
//!
//! # Properties
//!
//! Nothing panics: not raft-rs, not the WAL's checks of what raft-rs asks it to persist (entries
//! contiguous, terms and commit never going back, votes never changing within a term), not the
//! compaction. After a restart, the WAL gives back exactly the log and HardState the member had
//! persisted (commit may lag, as cairn persists the LightReady commit lazily). Until the first
//! injected message (forged messages may legitimately break these): at most one leader per term,
//! and every member applies the same entry at each index.

#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use cairn::io::Disk;
use cairn::raft::NodeConfig;
use cairn::wal::{Wal, WalOptions};
use cairn_fuzz::MemDisk;
use libfuzzer_sys::fuzz_target;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
    MessageType, Snapshot,
};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole, Storage};

const MEMBERS: u64 = 3;
const ELECTION_TICKS: usize = 10;
const ACTIONS_MAX: usize = 256;
/// Messages in flight; beyond this the oldest are dropped (a bounded transport queue).
const NETWORK_MAX: usize = 512;
const WAL_DIR: &str = "/wal";

#[derive(Arbitrary, Debug)]
enum Action {
    Tick(u8),
    /// Deliver the message at this position of the in-flight queue (reordering).
    Deliver(u16),
    Duplicate(u16),
    Drop(u16),
    /// Rounds of: tick everyone, deliver everything in flight.
    Run(u8),
    Propose(u8, Vec<u8>),
    /// A proposal at whichever member leads now (fewer dropped proposals, deeper logs).
    ProposeAtLeader(Vec<u8>),
    /// A membership change as cairn's server proposes them (see `Cluster::conf_change`).
    ConfChange {
        node: u8,
        kind: u8,
        id: u8,
    },
    ReadIndex(u8),
    Transfer {
        node: u8,
        to: u8,
    },
    Campaign(u8),
    Restart(u8),
    /// Arbitrary bytes, parsed as a raft message for member 1 from member 2 or 3.
    Inject {
        from_3: bool,
        bytes: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// 0: never compact the log; otherwise every `2 + n % 16` applied entries.
    snapshot_count: u8,
    /// Start from a cluster that has elected a leader (saves the fuzzer finding an election).
    elect_first: bool,
    actions: Vec<Action>,
}

fn node_config(id: u64, snapshot_count: u64) -> NodeConfig {
    NodeConfig {
        id,
        snap_dir: "/nonexistent/snap".into(),
        tick_interval: Duration::from_millis(100),
        election_ticks: ELECTION_TICKS,
        heartbeat_ticks: 1,
        snapshot_count,
        read_timeout: Duration::from_secs(5),
        leader_wait: Duration::from_secs(5),
        read_retry: Duration::from_secs(1),
        boot: 1,
        strict_reconfig_check: true,
        quota_backend_bytes: cairn::config::QUOTA_BACKEND_BYTES_DEFAULT,
        // This target compacts the log itself (`Member::maybe_compact_log`), right up to the
        // applied index: no catch-up window, so lagging followers need snapshots sooner.
        catch_up_entries: 0,
    }
}

/// The first entries of a new cluster, as cairn writes them (`server::bootstrap_entries`).
fn bootstrap() -> (Vec<Entry>, HardState) {
    let entries = (1..=MEMBERS)
        .map(|id| {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::AddNode);
            cc.node_id = id;
            let mut e = Entry {
                term: 1,
                index: id,
                data: cc.write_to_bytes().expect("encode").into(),
                ..Default::default()
            };
            e.set_entry_type(EntryType::EntryConfChange);
            e
        })
        .collect();
    let hs = HardState {
        term: 1,
        commit: MEMBERS,
        ..Default::default()
    };
    (entries, hs)
}

/// Why a member stopped, as cairn's driver would stop it (read through `Debug` when looking at
/// an input).
#[derive(Debug)]
#[allow(dead_code)]
enum Stop {
    /// raft-rs refused a snapshot from the leader (`NodeError::Raft`).
    Snapshot(String),
    /// A committed conf change raft-rs refused (`NodeError::Raft`).
    ConfChange(String),
    /// The member applied its own removal (`NodeError::Removed`).
    Removed,
}

/// What a member's backend (LMDB in cairn) remembers across a restart: the applied index and the
/// membership as of it.
#[derive(Debug, Clone, Default)]
struct Backend {
    applied: u64,
    conf_state: ConfState,
}

struct Member {
    id: u64,
    disk: MemDisk,
    /// `None` once stopped.
    raw: Option<RawNode<MemStorage>>,
    wal: Option<Wal>,
    backend: Backend,
    snapshot_index: u64,
    snapshot_count: u64,
    last_role: (u64, StateRole, u64),
    last_timeout: usize,
    stopped: Option<Stop>,
}

/// Everything the cluster observed, for the safety checks.
#[derive(Default)]
struct World {
    network: VecDeque<Message>,
    /// The leader of each term seen.
    leaders: BTreeMap<u64, u64>,
    /// The entry applied at each index, by any member: (term, type, data).
    applied: BTreeMap<u64, (u64, i32, Vec<u8>)>,
    /// Set by the first injected message; safety checks stop there.
    forged: bool,
    /// Members that applied their own removal: ids are never reused.
    removed: Vec<u64>,
}

impl Member {
    fn new(id: u64, snapshot_count: u64) -> Member {
        let disk = MemDisk::new();
        let arc: Arc<dyn Disk> = Arc::new(disk.clone());
        let mut wal = Wal::create(
            arc,
            WAL_DIR.as_ref(),
            b"cairn-fuzz",
            WalOptions {
                segment_bytes_max: 4096,
            },
        )
        .expect("create wal");
        let (entries, hs) = bootstrap();
        wal.append(&entries, Some(&hs)).expect("append bootstrap");
        wal.sync().expect("sync");
        let storage = MemStorage::new();
        storage.wl().append(&entries).expect("append");
        storage.wl().set_hardstate(hs);
        let cfg = cairn::raft::raft_config(&node_config(id, snapshot_count), 0);
        let raw = RawNode::new(&cfg, storage, &cairn_fuzz::raft_logger()).expect("raw node");
        let mut m = Member {
            id,
            disk,
            raw: Some(raw),
            wal: Some(wal),
            backend: Backend::default(),
            snapshot_index: 0,
            snapshot_count,
            last_role: (0, StateRole::Follower, 0),
            last_timeout: 0,
            stopped: None,
        };
        m.reseed(true);
        m
    }

    /// raft-rs draws election timeouts from a thread RNG; like cairn's driver, replace every
    /// fresh draw with a deterministic one so that an input replays exactly.
    fn reseed(&mut self, force: bool) {
        let Some(raw) = self.raw.as_mut() else { return };
        let r = &raw.raft;
        let role = (r.term, r.state, r.leader_id);
        if force || role != self.last_role || r.randomized_election_timeout() != self.last_timeout {
            self.last_role = role;
            let spread = (self.id * 7 + r.term * 3) as usize % ELECTION_TICKS;
            self.last_timeout = ELECTION_TICKS + spread;
            raw.raft.set_randomized_election_timeout(self.last_timeout);
        }
    }

    fn stop(&mut self, why: Stop) {
        self.raw = None;
        self.wal = None;
        self.stopped = Some(why);
    }

    /// Applies committed entries as cairn's `apply_entries` does (no state machine here: normal
    /// entries only advance the applied index).
    fn apply(&mut self, entries: Vec<Entry>, world: &mut World) -> Result<(), Stop> {
        let raw = self.raw.as_mut().expect("running");
        for entry in entries {
            let index = entry.index;
            let mut removed_self = false;
            if index <= self.backend.applied {
                continue;
            }
            if !world.forged {
                let seen = (
                    entry.term,
                    entry.get_entry_type() as i32,
                    entry.data.to_vec(),
                );
                if let Some(prev) = world.applied.get(&index) {
                    assert_eq!(
                        prev, &seen,
                        "members applied different entries at index {index}"
                    );
                } else {
                    world.applied.insert(index, seen);
                }
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    cc.merge_from_bytes(&entry.data)
                        .map_err(|e| Stop::ConfChange(e.to_string()))?;
                    let cs = raw
                        .apply_conf_change(&cc)
                        .map_err(|e| Stop::ConfChange(e.to_string()))?;
                    self.backend.conf_state = cs;
                    removed_self |=
                        cc.get_change_type() == ConfChangeType::RemoveNode && cc.node_id == self.id;
                }
                EntryType::EntryConfChangeV2 => {
                    let mut cc = ConfChangeV2::default();
                    cc.merge_from_bytes(&entry.data)
                        .map_err(|e| Stop::ConfChange(e.to_string()))?;
                    let cs = raw
                        .apply_conf_change(&cc)
                        .map_err(|e| Stop::ConfChange(e.to_string()))?;
                    self.backend.conf_state = cs;
                    removed_self |= cc.changes.iter().any(|c| {
                        c.get_change_type() == ConfChangeType::RemoveNode && c.node_id == self.id
                    });
                }
            }
            self.backend.applied = index;
            if removed_self {
                // cairn's `record_conf_change`: a member that applies its own removal stops
                // (`NodeError::Removed`), as etcd's does.
                world.removed.push(self.id);
                return Err(Stop::Removed);
            }
        }
        Ok(())
    }

    fn on_ready(&mut self, world: &mut World) {
        if let Err(why) = self.try_ready(world) {
            self.stop(why);
        }
    }

    /// cairn's `Node::on_ready`, step for step.
    fn try_ready(&mut self, world: &mut World) -> Result<(), Stop> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(());
        };
        if !raw.has_ready() {
            return Ok(());
        }
        let mut rd = raw.ready();
        let msgs = rd.take_messages();
        self.send(msgs, world);
        if *rd.snapshot() != Snapshot::default() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(&snap)?;
        }
        let committed = rd.take_committed_entries();
        self.apply(committed, world)?;

        let raw = self.raw.as_mut().expect("running");
        let wal = self.wal.as_mut().expect("running");
        let mut synced = false;
        if !rd.entries().is_empty() {
            let entries = rd.take_entries();
            wal.append(&entries, None).expect("wal append");
            raw.mut_store()
                .wl()
                .append(&entries)
                .expect("storage append");
            synced = true;
        }
        if let Some(hs) = rd.hs() {
            wal.append(&[], Some(hs)).expect("wal hard state");
            raw.mut_store().wl().set_hardstate(hs.clone());
            synced = true;
        }
        if synced {
            wal.sync().expect("wal sync");
        }
        let msgs = rd.take_persisted_messages();
        let mut light = raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            raw.mut_store().wl().mut_hard_state().set_commit(commit);
        }
        let light_msgs = light.take_messages();
        self.send(msgs, world);
        self.send(light_msgs, world);
        let committed = light.take_committed_entries();
        self.apply(committed, world)?;
        self.raw.as_mut().expect("running").advance_apply();
        self.maybe_compact_log();
        Ok(())
    }

    /// cairn's `Node::send`: a MsgSnapshot goes out described as what the backend holds (cairn's
    /// `Node::send_snapshot` exports the store at its consistent index and rewrites the metadata
    /// to match; if the term of that index is unknown it gives up and sends nothing).
    fn send(&self, msgs: Vec<Message>, world: &mut World) {
        let raw = self.raw.as_ref().expect("running");
        for mut m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let index = self.backend.applied;
                let term = match raw.raft.raft_log.term(index) {
                    Ok(t) if t > 0 => t,
                    _ => continue,
                };
                let meta = m.mut_snapshot().mut_metadata();
                meta.index = index;
                meta.term = term;
                meta.set_conf_state(self.backend.conf_state.clone());
            }
            world.network.push_back(m);
        }
    }

    /// cairn's `Node::install_snapshot`: the backend becomes the leader's (applied index and
    /// membership as of the snapshot), then raft's storage and the WAL's compaction point.
    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), Stop> {
        let meta = snap.get_metadata();
        self.backend.applied = meta.index;
        self.backend.conf_state = meta.get_conf_state().clone();
        let raw = self.raw.as_mut().expect("running");
        raw.mut_store()
            .wl()
            .apply_snapshot(snap.clone())
            .map_err(|e| Stop::Snapshot(e.to_string()))?;
        let wal = self.wal.as_mut().expect("running");
        wal.record_snapshot(meta.index, meta.term)
            .expect("wal snapshot marker");
        self.snapshot_index = meta.index;
        Ok(())
    }

    /// cairn's `Node::maybe_compact_log`.
    fn maybe_compact_log(&mut self) {
        if self.snapshot_count == 0 {
            return;
        }
        let applied = self.backend.applied;
        if applied < self.snapshot_index + self.snapshot_count {
            return;
        }
        let raw = self.raw.as_mut().expect("running");
        let term = raw.store().rl().hard_state().term;
        let entry_term = Storage::term(raw.store(), applied).unwrap_or(term);
        let wal = self.wal.as_mut().expect("running");
        wal.record_snapshot(applied, entry_term)
            .expect("wal snapshot marker");
        wal.release_to(applied).expect("wal release");
        raw.mut_store().wl().compact(applied).expect("compact");
        self.snapshot_index = applied;
    }

    /// A crash and restart: the process loses its memory; the WAL and the backend survive.
    fn restart(&mut self) {
        let Some(raw) = self.raw.take() else { return };
        let before = persisted(raw.store());
        drop(raw);
        self.wal = None;

        let arc: Arc<dyn Disk> = Arc::new(self.disk.clone());
        let (wal, contents) = Wal::open(
            arc,
            WAL_DIR.as_ref(),
            WalOptions {
                segment_bytes_max: 4096,
            },
        )
        .unwrap_or_else(|e| panic!("member {} cannot reopen its WAL: {e}", self.id));

        // What the WAL gives back is what the member persisted.
        assert_eq!(
            contents.hard_state.term, before.hs.term,
            "term lost across restart"
        );
        assert_eq!(
            contents.hard_state.vote, before.hs.vote,
            "vote lost across restart"
        );
        assert!(contents.hard_state.commit <= before.hs.commit);
        let snapshot_index = contents.snapshot.map_or(0, |(i, _)| i);
        let last = contents.entries.last().map_or(snapshot_index, |e| e.index);
        assert_eq!(last, before.last_index, "log end differs across restart");
        let kept: Vec<&Entry> = before
            .entries
            .iter()
            .filter(|e| e.index > snapshot_index)
            .collect();
        let got: Vec<&Entry> = contents
            .entries
            .iter()
            .filter(|e| e.index >= before.first_index)
            .collect();
        assert_eq!(kept, got, "entries differ across restart");

        // cairn's `raft::restore_storage`, with the backend's applied index and membership.
        let applied = self.backend.applied;
        let storage = MemStorage::new();
        {
            let mut core = storage.wl();
            if let Some((index, term)) = contents.snapshot {
                assert!(
                    applied >= index,
                    "the backend is behind the WAL's compaction point"
                );
                let mut snap = Snapshot::default();
                snap.mut_metadata().index = index;
                snap.mut_metadata().term = term;
                snap.mut_metadata()
                    .set_conf_state(self.backend.conf_state.clone());
                core.apply_snapshot(snap).expect("restore snapshot");
            } else {
                core.set_conf_state(self.backend.conf_state.clone());
            }
            let entries: Vec<Entry> = contents
                .entries
                .iter()
                .filter(|e| e.index > snapshot_index)
                .cloned()
                .collect();
            core.append(&entries).expect("restore entries");
            let mut hs = contents.hard_state.clone();
            hs.commit = hs.commit.max(applied).max(snapshot_index);
            hs.term = hs.term.max(core.hard_state().term);
            core.set_hardstate(hs);
        }
        let cfg = cairn::raft::raft_config(&node_config(self.id, self.snapshot_count), applied);
        let raw =
            RawNode::new(&cfg, storage, &cairn_fuzz::raft_logger()).expect("restart raw node");
        self.raw = Some(raw);
        self.wal = Some(wal);
        self.snapshot_index = snapshot_index;
        self.reseed(true);
    }
}

struct Persisted {
    hs: HardState,
    first_index: u64,
    last_index: u64,
    entries: Vec<Entry>,
}

fn persisted(store: &MemStorage) -> Persisted {
    let first_index = store.first_index().expect("first");
    let last_index = store.last_index().expect("last");
    // MemStorage indexes its first entry even for an empty range: ask only for a non-empty one.
    let entries = if last_index >= first_index {
        store
            .entries(
                first_index,
                last_index + 1,
                None,
                raft::GetEntriesContext::empty(false),
            )
            .expect("persisted entries")
    } else {
        Vec::new()
    };
    Persisted {
        hs: store.rl().hard_state().clone(),
        first_index,
        last_index,
        entries,
    }
}

fn member_index(n: u8) -> usize {
    (n as u64 % MEMBERS) as usize
}

/// The rest of the injection filter (see the module documentation): messages no correct raft-rs
/// peer sends and on which raft-rs panics by design. Each rule names the panic it avoids. cairn's
/// peer service steps whatever it decodes, so each of these is also a way for one bad peer
/// message to crash a member (reported with the fuzz results).
fn plausible(m: &Message, _target: &RawNode<MemStorage>) -> bool {
    // raft.rs `step_leader`: `fatal!("stepped empty MsgProp")`. Followers forward proposals with
    // their entries; a proposal without entries is never sent.
    if m.get_msg_type() == MessageType::MsgPropose && m.entries.is_empty() {
        return false;
    }
    true
}

struct Cluster {
    members: Vec<Member>,
    world: World,
}

impl Cluster {
    fn deliver(&mut self, m: Message) {
        let to = m.to;
        if to == 0 || to > MEMBERS {
            return;
        }
        let (from, is_snapshot) = (m.from, m.get_msg_type() == MessageType::MsgSnapshot);
        let member = &mut self.members[(to - 1) as usize];
        if let Some(raw) = member.raw.as_mut() {
            // cairn's `Node::step`. Rejections (unknown peer, local message type) are fine:
            // cairn logs and drops them.
            let _ = raw.step(m);
        }
        member.on_ready(&mut self.world);
        if is_snapshot && (1..=MEMBERS).contains(&from) {
            // The transport reports the end of a snapshot transfer to the sender as a
            // MsgSnapStatus on its inbound queue, which the driver steps like any message.
            // (raft-rs refuses it there as a local message: `report_snapshot` is never called.)
            let mut status = Message::default();
            status.set_msg_type(MessageType::MsgSnapStatus);
            status.from = to;
            status.to = from;
            let sender = &mut self.members[(from - 1) as usize];
            if let Some(raw) = sender.raw.as_mut() {
                let _ = raw.step(status);
            }
            sender.on_ready(&mut self.world);
        }
    }

    fn settle(&mut self) {
        for member in &mut self.members {
            member.on_ready(&mut self.world);
            member.reseed(false);
        }
        while self.world.network.len() > NETWORK_MAX {
            self.world.network.pop_front();
        }
        if !self.world.forged {
            for member in &self.members {
                let Some(raw) = member.raw.as_ref() else {
                    continue;
                };
                if raw.raft.state == StateRole::Leader {
                    let term = raw.raft.term;
                    let leader = *self.world.leaders.entry(term).or_insert(member.id);
                    assert_eq!(leader, member.id, "two leaders in term {term}");
                }
            }
        }
    }

    /// Only the conf changes cairn's server proposes (`Server::member_add`, `member_remove`,
    /// `member_promote`, `member_update`), checked against the proposing member's applied
    /// membership: add a voter or learner under an id never used (4 is a member that never
    /// starts), remove a member, promote a learner, or re-add a member in its role. Arbitrary conf
    /// changes reach raft-rs paths cairn never takes (a voter demoted to learner, a removed id
    /// added back).
    fn conf_change(&mut self, node: u8, kind: u8, id: u8) {
        let removed = self.world.removed.clone();
        let member = &mut self.members[member_index(node)];
        let Some(raw) = member.raw.as_mut() else {
            return;
        };
        if raw.raft.leader_id == raft::INVALID_ID {
            return; // `propose_conf_change` answers "no leader"
        }
        let id = 1 + id as u64 % (MEMBERS + 1);
        let cs = &member.backend.conf_state;
        let (voter, learner) = (cs.voters.contains(&id), cs.learners.contains(&id));
        let known = voter || learner || removed.contains(&id);
        let change = match kind % 5 {
            0 if !known => ConfChangeType::AddNode,
            1 if !known => ConfChangeType::AddLearnerNode,
            2 if voter || learner => ConfChangeType::RemoveNode,
            3 if learner => ConfChangeType::AddNode,
            4 if voter => ConfChangeType::AddNode,
            4 if learner => ConfChangeType::AddLearnerNode,
            _ => return,
        };
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = id;
        let _ = raw.propose_conf_change(Vec::new(), cc);
    }

    fn act(&mut self, action: &Action) {
        let net_pick = |n: u16, len: usize| (n as usize) % len;
        match action {
            Action::Tick(n) => {
                if let Some(raw) = self.members[member_index(*n)].raw.as_mut() {
                    raw.tick();
                }
            }
            Action::Deliver(i) => {
                if !self.world.network.is_empty() {
                    let i = net_pick(*i, self.world.network.len());
                    let m = self.world.network.remove(i).expect("in range");
                    self.deliver(m);
                }
            }
            Action::Duplicate(i) => {
                if !self.world.network.is_empty() {
                    let i = net_pick(*i, self.world.network.len());
                    let m = self.world.network[i].clone();
                    self.world.network.push_back(m);
                }
            }
            Action::Drop(i) => {
                if !self.world.network.is_empty() {
                    let i = net_pick(*i, self.world.network.len());
                    self.world.network.remove(i);
                }
            }
            Action::Run(rounds) => {
                for _ in 0..(rounds % 32) {
                    for member in &mut self.members {
                        if let Some(raw) = member.raw.as_mut() {
                            raw.tick();
                        }
                        member.on_ready(&mut self.world);
                    }
                    let batch: Vec<Message> = self.world.network.drain(..).collect();
                    for m in batch {
                        self.deliver(m);
                    }
                    self.settle();
                }
            }
            Action::Propose(n, data) => {
                if let Some(raw) = self.members[member_index(*n)].raw.as_mut() {
                    let mut data = data.clone();
                    data.truncate(64);
                    let _ = raw.propose(Vec::new(), data);
                }
            }
            Action::ProposeAtLeader(data) => {
                let leader = self
                    .members
                    .iter_mut()
                    .filter_map(|m| m.raw.as_mut())
                    .find(|r| r.raft.state == StateRole::Leader);
                if let Some(raw) = leader {
                    let mut data = data.clone();
                    data.truncate(64);
                    let _ = raw.propose(Vec::new(), data);
                }
            }
            Action::ConfChange { node, kind, id } => self.conf_change(*node, *kind, *id),
            Action::ReadIndex(n) => {
                if let Some(raw) = self.members[member_index(*n)].raw.as_mut() {
                    raw.read_index(b"read".to_vec());
                }
            }
            Action::Transfer { node, to } => {
                if let Some(raw) = self.members[member_index(*node)].raw.as_mut() {
                    raw.transfer_leader(1 + *to as u64 % MEMBERS);
                }
            }
            Action::Campaign(n) => {
                if let Some(raw) = self.members[member_index(*n)].raw.as_mut() {
                    let _ = raw.campaign();
                }
            }
            Action::Restart(n) => {
                self.members[member_index(*n)].restart();
            }
            Action::Inject { from_3, bytes } => {
                let Ok(mut m) = Message::parse_from_bytes(bytes) else {
                    return; // the peer service refuses undecodable messages
                };
                m.to = 1;
                m.from = if *from_3 { 3 } else { 2 };
                let target = &self.members[0];
                let Some(raw) = target.raw.as_ref() else {
                    return;
                };
                if !plausible(&m, raw) {
                    return;
                }
                self.world.forged = true;
                self.deliver(m);
            }
        }
        self.settle();
    }
}

fuzz_target!(|input: Input| {
    let snapshot_count = if input.snapshot_count == 0 {
        0
    } else {
        2 + input.snapshot_count as u64 % 16
    };
    let mut cluster = Cluster {
        members: (1..=MEMBERS)
            .map(|id| Member::new(id, snapshot_count))
            .collect(),
        world: World::default(),
    };
    cluster.settle();
    if input.elect_first {
        for _ in 0..4 * ELECTION_TICKS {
            if cluster.members.iter().any(|m| {
                m.raw
                    .as_ref()
                    .is_some_and(|r| r.raft.state == StateRole::Leader)
            }) {
                break;
            }
            cluster.act(&Action::Run(1));
        }
    }
    for action in input.actions.iter().take(ACTIONS_MAX) {
        cluster.act(action);
    }
});
