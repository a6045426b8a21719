//! The Ready loop: one task per member owns the raft-rs `RawNode`, the WAL and the apply path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ::raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
    Snapshot,
};
use ::raft::storage::MemStorage;
use ::raft::{RawNode, StateRole};
use prost::Message as _;
use protobuf::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::dedup::{Admit, AppliedRequests, Proposer};
use crate::crashpoint::{self, Point};
use crate::io::{Clock, Rng, Transport};
use crate::lease::Lessor;
use crate::mvcc::Store;
use crate::proto::cairnpb;
use crate::proto::etcdserverpb::AlarmType;
use crate::proto::mvccpb::Event;
use crate::server::apply::{self, ApplyResponse};
use crate::server::error::RequestError;
use crate::server::membership::{self, Change, Member};
use crate::server::metrics::Metrics;
use crate::server::quota::{self, Alarms};
use crate::wal::Wal;

/// Commands drained from the queue per loop turn: bounds the work between two Ready rounds while
/// still letting many proposals share one WAL fsync (group commit).
pub const COMMANDS_PER_TURN_MAX: usize = 1024;
/// Proposals parked while no leader is known, beyond which new ones fail with "no leader".
pub const PARKED_PROPOSALS_MAX: usize = 4096;
/// Outstanding proposals awaiting their apply, beyond which new ones fail with "too many requests".
pub const WAITERS_MAX: usize = 65_536;
/// Read batches waiting for a ReadIndex answer or for apply to catch up.
pub const READ_BATCHES_MAX: usize = 4096;
/// Election timeouts a leader that applied its own removal waits, at most, for the remaining
/// members to learn that the removal is committed (see [`Leaving`]) before it stops anyway.
pub const LEAVE_ELECTION_TIMEOUTS_MAX: u32 = 3;

/// The outcome of a proposal, handed back to the member that proposed it.
pub type ProposalResult = Result<Applied, RequestError>;

/// A request applied to the state machine, with the term it was applied in (for response headers).
#[derive(Debug)]
pub struct Applied {
    pub response: ApplyResponse,
    pub term: u64,
}

/// What the server asks of the node.
pub enum Command {
    /// Replicate `request` (already validated) and reply once it is applied locally.
    Propose {
        request: cairnpb::Request,
        reply: oneshot::Sender<ProposalResult>,
    },
    /// Confirm leadership (ReadIndex) and reply once the local state machine has applied at least
    /// the read index: after that, a local read is linearizable.
    ReadIndex {
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    /// Propose a membership change; reply with the member list once it is applied locally. The
    /// context's `request_id` field keys the waiter.
    ConfChange {
        change: ConfChange,
        request_id: u64,
        /// For a promotion: refuse unless the learner is caught up with the leader.
        require_learner_in_sync: bool,
        reply: oneshot::Sender<Result<(Vec<Member>, u64), RequestError>>,
    },
    /// Hand leadership to `transferee` (leader only); reply once it leads or the wait times out.
    TransferLeader {
        transferee: u64,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
}

/// Where a membership change is answered: the member list after it, and the raft term.
pub type ConfChangeReply = oneshot::Sender<Result<(Vec<Member>, u64), RequestError>>;
/// Where a leadership transfer is answered.
pub type TransferReply = oneshot::Sender<Result<(), RequestError>>;

/// Applied entries the log keeps behind a compaction (etcd's `DefaultSnapshotCatchUpEntries`):
/// a follower that lags by fewer is sent the entries it misses, not a whole snapshot of the
/// backend. etcd sizes it as about half a second of its peak throughput.
pub const SNAPSHOT_CATCH_UP_ENTRIES: u64 = 5_000;

/// Snapshot exports running off the loop at once (one per follower at most), beyond which a
/// follower's snapshot is refused for now and raft tries again later.
pub const SNAPSHOT_EXPORTS_MAX: usize = 16;

/// A learner may be promoted once it has at least this share (in percent) of the leader's log.
pub const LEARNER_READY_PERCENT: u64 = 90;

/// A point-in-time view of the node, published after every loop turn for Status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub is_leader: bool,
    pub is_learner: bool,
    /// Whether this member votes in the applied configuration; a member that joined but has not
    /// yet applied its own addition is neither voter nor known learner.
    pub is_voter: bool,
}

/// Static settings of the node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    /// Length of one raft tick (etcd's --heartbeat-interval).
    pub tick_interval: Duration,
    /// Ticks without a heartbeat before a follower campaigns (election timeout / heartbeat interval).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats; cairn uses one tick per heartbeat interval.
    pub heartbeat_ticks: usize,
    /// Applied entries between two log compactions (etcd's --snapshot-count).
    pub snapshot_count: u64,
    /// Applied entries kept in the log behind each compaction ([`SNAPSHOT_CATCH_UP_ENTRIES`]
    /// unless a test or the simulator wants snapshots sooner).
    pub catch_up_entries: u64,
    /// How long a read may wait for its ReadIndex round before failing with a timeout.
    pub read_timeout: Duration,
    /// How long a proposal may stay parked without a leader.
    pub leader_wait: Duration,
    /// Where snapshot files are written and received.
    pub snap_dir: std::path::PathBuf,
    /// How long to wait after a ReadIndex request before re-sending it (lost messages).
    pub read_retry: Duration,
    /// This member's start count (durable, grows by one every start): read contexts and requests
    /// carry it, so nothing a previous incarnation asked for is taken as this one's.
    pub boot: u64,
    /// etcd's --strict-reconfig-check: the leader refuses a membership change that would leave
    /// too few running voters for a quorum.
    pub strict_reconfig_check: bool,
    /// etcd's --quota-backend-bytes: a write applied while the backend's size in use plus the
    /// write's cost reaches it asks for the NOSPACE alarm (see [`crate::server::quota`]).
    pub quota_backend_bytes: u64,
}

/// Everything the node task needs, already built by the server (the library takes ready-made I/O).
pub struct NodeParts {
    pub config: NodeConfig,
    pub raw_node: RawNode<MemStorage>,
    pub wal: Wal,
    pub store: Arc<Store>,
    pub transport: Arc<dyn Transport>,
    pub clock: Arc<dyn Clock>,
    pub rng: Box<dyn Rng>,
    pub commands: mpsc::Receiver<Command>,
    pub inbound: mpsc::Receiver<Message>,
    pub status: watch::Sender<NodeStatus>,
    pub events: tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
    pub metrics: Arc<Metrics>,
    /// The applied member list (from the backend).
    pub members: Vec<Member>,
    pub lessor: Arc<Lessor>,
    /// The replicated alarm table.
    pub alarms: Arc<Alarms>,
    /// Index of the WAL's snapshot marker, where the log starts (0 when it was never compacted).
    pub snapshot_index: u64,
    /// Which requests were applied (from the backend), so a duplicated proposal applies once.
    pub applied: AppliedRequests,
}

struct ReadBatch {
    senders: Vec<oneshot::Sender<Result<(), RequestError>>>,
    requested_at: Duration,
    sent_at: Duration,
    /// Known once the leader answered.
    index: Option<u64>,
}

/// This member, as leader, applied its own removal, and the remaining members may not know yet.
///
/// raft-rs switches a member to a new configuration when that member *applies* the conf change,
/// and a follower learns that an entry is committed only from the leader's next message. A
/// leader that stopped the moment it applied its own removal left its followers with the entry
/// in their logs, uncommitted, still counting the removed leader as a voter. With one more
/// member down for good that is a configuration they can never win an election in (seed 9136 of
/// the simulator: 4 voters of which 2 run, while the committed configuration, 3 voters of which
/// 2 run, has a quorum), and nobody is left to tell them otherwise. etcd stops a removed member
/// only after a delay for the same reason. Here the member takes no new work and steps nothing
/// more into raft-rs (which cannot run a leader outside its own configuration), but sends a
/// heartbeat carrying the commit index every tick, and stops once a quorum of the new
/// configuration has reported a commit index covering the removal (their append and heartbeat
/// responses carry it), once another leader tells it a commit index that covers it, or after
/// [`LEAVE_ELECTION_TIMEOUTS_MAX`] election timeouts. The client that asked for the removal is
/// answered when the removal applies, as etcd answers it.
struct Leaving {
    /// Index of the conf change that removed this member.
    index: u64,
    /// Voters of the new configuration (incoming and, when joint, outgoing).
    voters: Vec<u64>,
    voters_outgoing: Vec<u64>,
    /// Voters that reported a commit index at or above `index`.
    informed: BTreeSet<u64>,
    /// Another member leads and already knows the removal is committed.
    leader_informed: bool,
    deadline: Duration,
}

impl Leaving {
    fn done(&self, now: Duration) -> bool {
        let majority = |voters: &[u64]| {
            voters.is_empty()
                || voters.iter().filter(|v| self.informed.contains(v)).count() > voters.len() / 2
        };
        self.leader_informed
            || now >= self.deadline
            || (majority(&self.voters) && majority(&self.voters_outgoing))
    }
}

/// An outgoing snapshot written off the loop (see [`Node::start_export`]), handed back to it.
struct ExportDone {
    /// raft-rs's MsgSnapshot, whose metadata still describes raft's idea of the snapshot.
    msg: Message,
    path: std::path::PathBuf,
    /// The consistent index the file holds, or why it could not be written.
    result: Result<u64, String>,
}

/// Writes the backend to a snapshot file and syncs it.
fn export(store: &Store, path: &std::path::Path) -> Result<u64, String> {
    store.export_snapshot(path).map_err(|e| e.to_string())
}

/// Runs [`export`] on a blocking thread and sends the outcome to the loop. Under the simulator,
/// which has no blocking pool, it runs in a task of its own: the loop still goes on before the
/// result is back, at a point of the schedule the seed decides.
fn spawn_export(
    store: Arc<Store>,
    msg: Message,
    path: std::path::PathBuf,
    done: mpsc::Sender<ExportDone>,
) {
    tokio::spawn(async move {
        #[cfg(not(madsim))]
        let result = {
            let path = path.clone();
            match tokio::task::spawn_blocking(move || export(&store, &path)).await {
                Ok(result) => result,
                Err(e) => Err(format!("the export stopped: {e}")),
            }
        };
        #[cfg(madsim)]
        let result = export(&store, &path);
        if let Err(unsent) = done.send(ExportDone { msg, path, result }).await {
            // The node stopped meanwhile.
            let _ = std::fs::remove_file(&unsent.0.path);
        }
    });
}

struct Parked {
    request: cairnpb::Request,
    reply: oneshot::Sender<ProposalResult>,
    parked_at: Duration,
}

/// The member's raft driver. See the module documentation of [`crate::raft`].
pub struct Node {
    cfg: NodeConfig,
    raw: RawNode<MemStorage>,
    wal: Wal,
    store: Arc<Store>,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    rng: Box<dyn Rng>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Receiver<Message>,
    status: watch::Sender<NodeStatus>,
    events: tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
    metrics: Arc<Metrics>,
    members: Vec<Member>,
    conf_waiters: BTreeMap<u64, ConfChangeReply>,
    /// When each peer was last heard from: the leader's view of which members are running.
    last_heard: BTreeMap<u64, Duration>,
    /// Leadership transfers in flight: transferee, deadline, waiter.
    transfers: Vec<(u64, Duration, TransferReply)>,
    lessor: Arc<Lessor>,
    alarms: Arc<Alarms>,
    last_leader: u64,
    waiters: BTreeMap<u64, oneshot::Sender<ProposalResult>>,
    parked: VecDeque<Parked>,
    /// Read batches by their ReadIndex context id.
    reads: BTreeMap<u64, ReadBatch>,
    next_read_id: u64,
    pending_reads: Vec<oneshot::Sender<Result<(), RequestError>>>,
    /// Where the log starts: the index of the WAL's last snapshot marker.
    snapshot_index: u64,
    /// The applied index at the last compaction (or snapshot install): the next compaction
    /// comes `snapshot_count` entries after it.
    compacted_at: u64,
    applied: AppliedRequests,
    /// A conf change was applied in this batch: the transport needs the new member list.
    peers_changed: bool,
    last_timeout: usize,
    last_role: (u64, StateRole, u64),
    /// Set once this member, as leader, applied its own removal: see [`Leaving`].
    leaving: Option<Leaving>,
    /// Followers whose snapshot is being exported off the loop.
    exporting: BTreeSet<u64>,
    exports_tx: mpsc::Sender<ExportDone>,
    exports: mpsc::Receiver<ExportDone>,
    /// Index of the last membership change this start applied or installed: an export of an
    /// older index holds an older ConfState than the backend's.
    conf_changed_at: u64,
}

impl Node {
    pub fn new(parts: NodeParts) -> Node {
        let (exports_tx, exports) = mpsc::channel(SNAPSHOT_EXPORTS_MAX);
        let mut node = Node {
            cfg: parts.config,
            raw: parts.raw_node,
            wal: parts.wal,
            store: parts.store,
            transport: parts.transport,
            clock: parts.clock,
            rng: parts.rng,
            commands: parts.commands,
            inbound: parts.inbound,
            status: parts.status,
            events: parts.events,
            metrics: parts.metrics,
            members: parts.members,
            conf_waiters: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            transfers: Vec::new(),
            lessor: parts.lessor,
            alarms: parts.alarms,
            last_leader: 0,
            waiters: BTreeMap::new(),
            parked: VecDeque::new(),
            reads: BTreeMap::new(),
            next_read_id: 1,
            pending_reads: Vec::new(),
            snapshot_index: parts.snapshot_index,
            compacted_at: parts.snapshot_index,
            applied: parts.applied,
            peers_changed: false,
            last_timeout: 0,
            last_role: (0, StateRole::Follower, 0),
            leaving: None,
            exporting: BTreeSet::new(),
            exports_tx,
            exports,
            conf_changed_at: 0,
        };
        node.reseed_election_timeout(true);
        node
    }

    /// Runs the Ready loop until `shutdown` resolves or a non-deterministic failure (disk) forces
    /// the node to stop so that replicas never diverge.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), NodeError> {
        let result = self.run_loop(shutdown).await;
        match &result {
            // A simulated crash: the member is gone, there is nobody to tell.
            Err(NodeError::Crashed(_)) | Ok(()) => {}
            Err(e) => tracing::error!(
                error = %e,
                "the raft node stops: it cannot go on without risking divergence; restart it to \
                 recover from what is on disk"
            ),
        }
        result
    }

    async fn run_loop(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), NodeError> {
        if self.raw.has_ready() {
            // Bootstrap entries and restart replay: apply what is committed before serving.
            self.on_ready()?;
        }
        self.campaign_if_alone();
        let mut next_tick = self.clock.now() + self.cfg.tick_interval;
        loop {
            let now = self.clock.now();
            let wait = next_tick.saturating_sub(now);
            let sleep = self.clock.sleep(wait);
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = sleep => {
                    next_tick += self.cfg.tick_interval;
                    if next_tick < self.clock.now() {
                        // The process stalled (pause, clock jump): do not tick in a burst.
                        next_tick = self.clock.now() + self.cfg.tick_interval;
                    }
                    if self.leaving.is_some() {
                        // raft-rs cannot run a leader that is out of its own configuration (it
                        // looks up its own progress): the leaving member only tells its
                        // followers the commit index, once a tick.
                        self.raw.raft.bcast_heartbeat();
                    } else {
                        self.raw.tick();
                    }
                    self.on_tick()?;
                }
                msg = self.inbound.recv() => {
                    if let Some(msg) = msg {
                        self.step(msg);
                        for _ in 0..COMMANDS_PER_TURN_MAX {
                            match self.inbound.try_recv() {
                                Ok(msg) => self.step(msg),
                                Err(_) => break,
                            }
                        }
                    }
                }
                done = self.exports.recv() => {
                    if let Some(done) = done {
                        self.on_export(done)?;
                    }
                }
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd);
                    for _ in 0..COMMANDS_PER_TURN_MAX {
                        match self.commands.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.campaign_if_alone();
            self.check_transfers();
            self.reseed_election_timeout(false);
            self.flush_reads();
            self.unpark();
            if !self.exporting.is_empty() && self.raw.raft.raft_log.unstable.snapshot.is_some() {
                self.finish_exports().await?;
            }
            if self.raw.has_ready() {
                self.on_ready()?;
            }
            self.publish_status();
            if self
                .leaving
                .as_ref()
                .is_some_and(|l| l.done(self.clock.now()))
            {
                return Err(NodeError::Removed);
            }
        }
        self.store
            .sync()
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        self.wal.sync().map_err(|e| NodeError::Wal(e.to_string()))?;
        // In request-id order: the order in which waiting clients hear of the stop is
        // observable, and a hash map's order would differ from run to run.
        for (_, w) in std::mem::take(&mut self.waiters) {
            let _ = w.send(Err(RequestError::Stopped));
        }
        Ok(())
    }

    /// A one-member cluster needs no election timeout to find out that it wins.
    fn campaign_if_alone(&mut self) {
        let r = &self.raw.raft;
        if r.state != StateRole::Follower || r.leader_id != ::raft::INVALID_ID {
            return;
        }
        let voters = r.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(self.cfg.id) {
            let _ = self.raw.campaign();
        }
    }

    fn step(&mut self, msg: Message) {
        match msg.get_msg_type() {
            // Local outcomes the transport reports: raft-rs refuses them through `step`.
            MessageType::MsgSnapStatus => {
                let status = if msg.reject {
                    ::raft::SnapshotStatus::Failure
                } else {
                    ::raft::SnapshotStatus::Finish
                };
                self.raw.report_snapshot(msg.from, status);
                return;
            }
            MessageType::MsgUnreachable => {
                self.raw.report_unreachable(msg.from);
                return;
            }
            // raft-rs aborts on an empty proposal; a peer must never be able to trigger that.
            MessageType::MsgPropose if msg.entries.is_empty() => {
                tracing::warn!(from = msg.from, "dropped an empty proposal from a peer");
                return;
            }
            _ => {}
        }
        if msg.to != self.cfg.id {
            tracing::debug!(
                to = msg.to,
                "dropped a raft message addressed to another member"
            );
            return;
        }
        if msg.from != ::raft::INVALID_ID {
            self.last_heard.insert(msg.from, self.clock.now());
        }
        if let Some(l) = &mut self.leaving {
            if msg.commit >= l.index {
                match msg.get_msg_type() {
                    MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse => {
                        l.informed.insert(msg.from);
                    }
                    MessageType::MsgAppend | MessageType::MsgHeartbeat => {
                        l.leader_informed = true;
                    }
                    _ => {}
                }
            }
            // Nothing reaches raft-rs any more (see the tick): answers are only counted.
            return;
        }
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(error = %e, "raft step rejected a message");
        }
    }

    fn handle(&mut self, cmd: Command) {
        if self.leaving.is_some() {
            // Removed: it only waits for the others to learn of it (see `Leaving`).
            match cmd {
                Command::Propose { reply, .. } => drop(reply.send(Err(RequestError::Stopped))),
                Command::ReadIndex { reply } => drop(reply.send(Err(RequestError::Stopped))),
                Command::ConfChange { reply, .. } => drop(reply.send(Err(RequestError::Stopped))),
                Command::TransferLeader { reply, .. } => {
                    drop(reply.send(Err(RequestError::Stopped)))
                }
            }
            return;
        }
        match cmd {
            Command::Propose { request, reply } => self.propose(request, reply),
            Command::ReadIndex { reply } if crate::bugs::active(crate::bugs::Bug::StaleRead) => {
                drop(reply.send(Ok(())))
            }
            Command::ReadIndex { reply } => self.pending_reads.push(reply),
            Command::ConfChange {
                change,
                request_id,
                require_learner_in_sync,
                reply,
            } => self.propose_conf_change(change, request_id, require_learner_in_sync, reply),
            Command::TransferLeader { transferee, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(RequestError::NotLeader));
                    return;
                }
                if transferee == self.cfg.id {
                    let _ = reply.send(Ok(()));
                    return;
                }
                self.raw.transfer_leader(transferee);
                let deadline = self.clock.now() + self.cfg.read_timeout;
                self.transfers.push((transferee, deadline, reply));
            }
        }
    }

    fn propose_conf_change(
        &mut self,
        change: ConfChange,
        request_id: u64,
        require_learner_in_sync: bool,
        reply: oneshot::Sender<Result<(Vec<Member>, u64), RequestError>>,
    ) {
        if self.raw.raft.leader_id == ::raft::INVALID_ID {
            let _ = reply.send(Err(RequestError::NoLeader));
            return;
        }
        if require_learner_in_sync && self.raw.raft.state == StateRole::Leader {
            let last = self.raw.raft.raft_log.last_index();
            let matched = self
                .raw
                .raft
                .prs()
                .get(change.node_id)
                .map(|p| p.matched)
                .unwrap_or(0);
            if matched * 100 < last * LEARNER_READY_PERCENT {
                let _ = reply.send(Err(RequestError::LearnerNotReady));
                return;
            }
        }
        if self.cfg.strict_reconfig_check
            && self.raw.raft.state == StateRole::Leader
            && !self.reconfiguration_keeps_quorum(&change)
        {
            let _ = reply.send(Err(RequestError::UnhealthyCluster));
            return;
        }
        if self.conf_waiters.len() >= WAITERS_MAX {
            let _ = reply.send(Err(RequestError::TooManyRequests));
            return;
        }
        match self.raw.propose_conf_change(Vec::new(), change) {
            Ok(()) => {
                self.conf_waiters.insert(request_id, reply);
            }
            Err(e) => {
                tracing::debug!(error = %e, "conf change dropped");
                let _ = reply.send(Err(RequestError::NoLeader));
            }
        }
    }

    /// etcd's strict reconfiguration check, on the leader. Removing a member must leave enough
    /// running voters for a quorum; adding one (voter or learner) needs every voter running, as
    /// a new voter counts towards the quorum before it has started. Updating or promoting a
    /// member already in the configuration is not checked here.
    fn reconfiguration_keeps_quorum(&self, change: &ConfChange) -> bool {
        let conf = self.raw.raft.prs().conf();
        match change.get_change_type() {
            ConfChangeType::RemoveNode => self.quorum_survives_removal(change.node_id),
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
                if !conf.voters().contains(change.node_id)
                    && !conf.learners().contains(&change.node_id) =>
            {
                conf.voters().ids().iter().all(|id| self.is_running(id))
            }
            _ => true,
        }
    }

    /// This member, or a peer heard from within an election timeout.
    fn is_running(&self, id: u64) -> bool {
        let window = self.cfg.tick_interval * self.cfg.election_ticks as u32;
        id == self.cfg.id
            || self
                .last_heard
                .get(&id)
                .is_some_and(|t| self.clock.now().saturating_sub(*t) <= window)
    }

    /// Removing `node` must leave enough running voters for a quorum.
    fn quorum_survives_removal(&self, node: u64) -> bool {
        let voters: Vec<u64> = self
            .raw
            .raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter(|id| *id != node)
            .collect();
        let active = voters.iter().filter(|id| self.is_running(**id)).count();
        // A quorum of the remaining voters: more than half of them.
        active > voters.len() / 2
    }

    /// Answers leadership transfers that completed or timed out.
    fn check_transfers(&mut self) {
        if self.transfers.is_empty() {
            return;
        }
        let now = self.clock.now();
        let leader = self.raw.raft.leader_id;
        let pending = std::mem::take(&mut self.transfers);
        for (to, deadline, reply) in pending {
            if leader == to {
                let _ = reply.send(Ok(()));
            } else if now >= deadline {
                let _ = reply.send(Err(RequestError::LeaderTransferTimeout));
            } else {
                self.transfers.push((to, deadline, reply));
            }
        }
    }

    fn propose(&mut self, request: cairnpb::Request, reply: oneshot::Sender<ProposalResult>) {
        if self.leaving.is_some() {
            let _ = reply.send(Err(RequestError::Stopped));
            return;
        }
        if self.waiters.len() >= WAITERS_MAX {
            let _ = reply.send(Err(RequestError::TooManyRequests));
            return;
        }
        if request.expiry_term != 0
            && (self.raw.raft.state != StateRole::Leader
                || self.raw.raft.term != request.expiry_term)
            && !crate::bugs::active(crate::bugs::Bug::ExpiryAnyTerm)
        {
            // A lease expiry is the judgement of the leader of one term: parked for a later
            // leader, or forwarded to another, it would revoke a lease that leader keeps alive.
            let _ = reply.send(Err(RequestError::NotLeader));
            return;
        }
        if self.raw.raft.leader_id == ::raft::INVALID_ID {
            if self.parked.len() >= PARKED_PROPOSALS_MAX {
                let _ = reply.send(Err(RequestError::NoLeader));
            } else {
                self.parked.push_back(Parked {
                    request,
                    reply,
                    parked_at: self.clock.now(),
                });
            }
            return;
        }
        let id = request.id;
        let data = request.encode_to_vec();
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => {
                debug_assert!(!self.waiters.contains_key(&id), "request ids are unique");
                self.waiters.insert(id, reply);
            }
            Err(e) => {
                tracing::debug!(error = %e, "proposal dropped");
                let _ = reply.send(Err(RequestError::NoLeader));
            }
        }
    }

    /// Re-proposes parked proposals once a leader is known; fails those parked too long.
    fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let now = self.clock.now();
        if self.raw.raft.leader_id == ::raft::INVALID_ID {
            while let Some(p) = self.parked.front() {
                if now.saturating_sub(p.parked_at) < self.cfg.leader_wait {
                    break;
                }
                let p = self.parked.pop_front().expect("front exists");
                let _ = p.reply.send(Err(RequestError::NoLeader));
            }
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            self.propose(p.request, p.reply);
        }
    }

    /// Sends one ReadIndex request for every read that arrived during this turn: one heartbeat round
    /// then confirms leadership for all of them.
    fn flush_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let senders = std::mem::take(&mut self.pending_reads);
        if self.reads.len() >= READ_BATCHES_MAX {
            for s in senders {
                let _ = s.send(Err(RequestError::TooManyRequests));
            }
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.metrics
            .read_indexes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = self.clock.now();
        self.reads.insert(
            id,
            ReadBatch {
                senders,
                requested_at: now,
                sent_at: now,
                index: None,
            },
        );
        self.raw.read_index(self.read_context(id));
    }

    fn on_tick(&mut self) -> Result<(), NodeError> {
        self.commit_backend(false)?;
        // One bounded batch of a compaction's physical deletion per tick.
        self.store
            .purge_step()
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let now = self.clock.now();
        // Reads whose ReadIndex round got no answer (lost message, leader change) are asked again,
        // and fail once they are older than the read timeout.
        let mut expired = Vec::new();
        let mut resend = Vec::new();
        for (id, batch) in &mut self.reads {
            if now.saturating_sub(batch.requested_at) >= self.cfg.read_timeout {
                expired.push(*id);
            } else if batch.index.is_none()
                && now.saturating_sub(batch.sent_at) >= self.cfg.read_retry
            {
                batch.sent_at = now;
                resend.push(*id);
            }
        }
        for id in expired {
            if let Some(batch) = self.reads.remove(&id) {
                self.metrics
                    .read_index_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for s in batch.senders {
                    let _ = s.send(Err(RequestError::Timeout));
                }
            }
        }
        for id in resend {
            self.raw.read_index(self.read_context(id));
        }
        // Waiters whose client went away will never be read; forget them. Conf-change waiters
        // too: otherwise abandoned ones pile up to WAITERS_MAX and every later change is refused.
        self.waiters.retain(|_, w| !w.is_closed());
        self.conf_waiters.retain(|_, w| !w.is_closed());
        Ok(())
    }

    /// raft-rs draws election timeouts from a thread-local RNG; cairn overrides every fresh draw
    /// with one from the node's seeded [`Rng`] so that a simulated run replays from its seed. A
    /// draw happens whenever the node changes term, role or leader.
    fn reseed_election_timeout(&mut self, force: bool) {
        let r = &self.raw.raft;
        let role = (r.term, r.state, r.leader_id);
        if force || role != self.last_role || r.randomized_election_timeout() != self.last_timeout {
            self.last_role = role;
            let min = self.cfg.election_ticks as u64;
            let t = self.rng.range(min, 2 * min) as usize;
            self.raw.raft.set_randomized_election_timeout(t);
            self.last_timeout = t;
        }
    }

    fn send(&mut self, msgs: Vec<Message>) -> Result<(), NodeError> {
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.start_export(m);
            } else {
                self.transport.send(m);
            }
        }
        Ok(())
    }

    /// A follower needs entries the log no longer holds: export the backend to a snapshot file,
    /// off the loop, and let [`Node::on_export`] send it once it is written.
    ///
    /// Writing and syncing a copy of the whole backend takes as long as the backend is large;
    /// done here, the leader would send no heartbeat meanwhile and the followers would elect
    /// another leader. The export reads from its own LMDB read transaction, so it sees one
    /// consistent state while the loop goes on applying. One export per follower at a time:
    /// raft-rs keeps the follower paused until it hears how the snapshot went, so a second
    /// request for the same follower (after a leader change and back) is answered by the first.
    fn start_export(&mut self, msg: Message) {
        let to = msg.to;
        if self.exporting.contains(&to) {
            tracing::debug!(to = %format!("{to:x}"), "a snapshot for this follower is being exported");
            return;
        }
        let refused = if self.exporting.len() >= SNAPSHOT_EXPORTS_MAX {
            Some(format!(
                "{SNAPSHOT_EXPORTS_MAX} snapshot exports already run"
            ))
        } else {
            std::fs::create_dir_all(&self.cfg.snap_dir)
                .err()
                .map(|e| e.to_string())
        };
        if let Some(why) = refused {
            tracing::warn!(to = %format!("{to:x}"), %why, "cannot prepare a snapshot");
            // Raft paused the follower for this snapshot; it must try again later.
            self.raw
                .report_snapshot(to, ::raft::SnapshotStatus::Failure);
            return;
        }
        let path = self.snapshot_out_path(to);
        self.exporting.insert(to);
        spawn_export(self.store.clone(), msg, path, self.exports_tx.clone());
    }

    fn snapshot_out_path(&self, to: u64) -> std::path::PathBuf {
        self.cfg
            .snap_dir
            .join(format!("out-{:x}-{}.snap", to, self.clock.now().as_nanos()))
    }

    /// An export finished: describe exactly what the file holds in the message (its consistent
    /// index, that entry's term, the ConfState applied with it), so the follower never skips
    /// entries the file lacks, and hand it to the transport; entries the file already covers are
    /// skipped by the follower's consistent index. If the file cannot be described any more, or
    /// the member no longer leads the term that asked for it, raft hears of a failure, which
    /// unpauses the follower so that a new snapshot is tried. The error is a crash point stopping
    /// the node.
    fn on_export(&mut self, done: ExportDone) -> Result<(), NodeError> {
        let ExportDone {
            mut msg,
            path,
            result,
        } = done;
        let to = msg.to;
        let removed = self.exporting.remove(&to);
        assert!(
            removed,
            "every export result belongs to an export in flight"
        );
        let prepared = result.and_then(|index| {
            let r = &self.raw.raft;
            if r.state != StateRole::Leader || r.term != msg.term {
                return Err("leadership changed while the snapshot was exported".to_string());
            }
            // The entry must still be in the log (the catch-up window keeps it there).
            let term = match r.raft_log.term(index) {
                Ok(t) if t > 0 => t,
                _ => return Err(format!("no term known for index {index}")),
            };
            if self.conf_changed_at > index {
                // The backend's ConfState is newer than the one the file holds.
                return Err(format!(
                    "the membership changed at {} after the exported index {index}",
                    self.conf_changed_at
                ));
            }
            let conf_state = match self.store.meta_get(super::CONF_STATE_META) {
                Ok(Some(bytes)) => {
                    ConfState::parse_from_bytes(&bytes).map_err(|e| e.to_string())?
                }
                _ => return Err("no applied ConfState".to_string()),
            };
            Ok((index, term, conf_state))
        });
        let (index, term, conf_state) = match prepared {
            Ok(p) => p,
            Err(why) => {
                let _ = std::fs::remove_file(&path);
                tracing::warn!(to = %format!("{to:x}"), %why, "cannot prepare a snapshot");
                self.raw
                    .report_snapshot(to, ::raft::SnapshotStatus::Failure);
                return Ok(());
            }
        };
        let meta = msg.mut_snapshot().mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        crashpoint::reached(
            self.cfg.id,
            Point::SnapshotSend,
            self.store.consistent_index(),
        )?;
        tracing::info!(to = %format!("{to:x}"), index, term, "sending a snapshot");
        self.transport.send_snapshot(msg, path);
        Ok(())
    }

    /// Waits for every export in flight. Installing a snapshot replaces the backend, which waits
    /// for every reader of the old one to finish, and an export is such a reader: the member is
    /// a follower then (it received a snapshot), so it has no heartbeats to send meanwhile.
    async fn finish_exports(&mut self) -> Result<(), NodeError> {
        while !self.exporting.is_empty() {
            let Some(done) = self.exports.recv().await else {
                break;
            };
            self.on_export(done)?;
        }
        Ok(())
    }

    /// Installs a snapshot the leader sent (already received and verified by the transport):
    /// records the compaction point in the WAL, replaces the backend, and rebuilds membership and
    /// leases from it.
    ///
    /// The order is etcd's (save the snapshot, then apply it): the WAL marker is durable before
    /// the backend changes, and the file stays until the backend holds it durably. A crash in
    /// between leaves a WAL that starts at the snapshot and a backend behind it, which
    /// `Server::start` completes from the file. The other order would leave a backend ahead of a
    /// WAL that still expects the entries before the snapshot, and the member could never restart.
    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), NodeError> {
        let meta = snap.get_metadata();
        let path = crate::peer::snapshot_path(&self.cfg.snap_dir, meta.index);
        let storage = |e: crate::mvcc::MvccError| NodeError::Storage(e.to_string());
        self.wal
            .record_snapshot(meta.index, meta.term)
            .map_err(|e| NodeError::Wal(e.to_string()))?;
        crashpoint::reached(
            self.cfg.id,
            Point::SnapshotInstall,
            self.store.consistent_index(),
        )?;
        let installed = self.store.install_snapshot(&path).map_err(storage)?;
        if installed != meta.index {
            return Err(NodeError::Corrupt(format!(
                "snapshot file holds index {installed}, raft expected {}",
                meta.index
            )));
        }
        // `install_snapshot` synced the backend: the file is no longer needed (removed below).
        self.raw
            .mut_store()
            .wl()
            .apply_snapshot(snap.clone())
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        self.members = membership::load(&self.store).map_err(storage)?;
        self.set_transport_peers();
        self.lessor.reload(&self.store).map_err(storage)?;
        self.alarms.reload(&self.store).map_err(storage)?;
        self.applied = AppliedRequests::load(&self.store).map_err(storage)?;
        self.snapshot_index = meta.index;
        self.compacted_at = meta.index;
        self.conf_changed_at = meta.index;
        let _ = std::fs::remove_file(&path);
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Handles one Ready in the order raft-rs documents: messages, snapshot, committed entries,
    /// new entries and HardState (one WAL fsync for all of them), persisted messages, advance, and
    /// then the LightReady's commit index, messages and committed entries.
    fn on_ready(&mut self) -> Result<(), NodeError> {
        self.take_lease_primacy();
        let mut rd = self.raw.ready();
        if !rd.messages().is_empty() {
            self.send(rd.take_messages())?;
        }
        if *rd.snapshot() != Snapshot::default() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(&snap)?;
        }
        self.handle_read_states(rd.take_read_states());
        let committed = rd.take_committed_entries();
        self.apply(committed)?;

        let mut synced = false;
        if !rd.entries().is_empty() {
            let entries = rd.take_entries();
            self.wal
                .append(&entries, None)
                .map_err(|e| NodeError::Wal(e.to_string()))?;
            self.raw
                .mut_store()
                .wl()
                .append(&entries)
                .map_err(|e| NodeError::Raft(e.to_string()))?;
            synced = true;
        }
        if let Some(hs) = rd.hs() {
            self.wal
                .append(&[], Some(hs))
                .map_err(|e| NodeError::Wal(e.to_string()))?;
            self.raw.mut_store().wl().set_hardstate(hs.clone());
            synced = true;
        }
        if synced {
            crashpoint::reached(
                self.cfg.id,
                Point::BeforeWalSync,
                self.store.consistent_index(),
            )?;
        }
        if synced && !crate::bugs::active(crate::bugs::Bug::EarlyAck) {
            let started = self.clock.now();
            self.wal.sync().map_err(|e| NodeError::Wal(e.to_string()))?;
            self.metrics
                .wal_fsync
                .observe(self.clock.now().saturating_sub(started));
        }
        if synced {
            crashpoint::reached(
                self.cfg.id,
                Point::AfterWalSync,
                self.store.consistent_index(),
            )?;
        }
        if !rd.persisted_messages().is_empty() {
            self.send(rd.take_persisted_messages())?;
        }
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw
                .mut_store()
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        self.send(light.take_messages())?;
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.release_reads();
        self.maybe_compact_log()?;
        Ok(())
    }

    /// A member that became leader takes over the lease deadlines before it applies anything of
    /// its term, as etcd promotes its lessor in the raft loop: every lease then runs from now plus
    /// an election timeout, and a lease granted after that runs from its grant. The lease task
    /// notices leadership only once a `LEASE_TICK`; promoting there alone let a lease granted in
    /// between get the extension too, and expire up to 1.5 s late (etcd's e2e
    /// `TestCtlV3LeaseTestTimeToLiveExpiredNoTLS` saw it). Demotion stays with that task.
    fn take_lease_primacy(&self) {
        let r = &self.raw.raft;
        if r.state == StateRole::Leader && self.lessor.primary_term() != Some(r.term) {
            let extend = self.cfg.tick_interval * self.cfg.election_ticks as u32;
            self.lessor.promote(self.clock.now(), extend, r.term);
        }
    }

    /// The ReadIndex context of batch `id`: this member's id, its start count, then the batch
    /// number. raft-rs drops a read whose context is already pending at the leader, so contexts
    /// must be unique across the cluster, not just on this member; and they must be unique
    /// across this member's starts, or an answer to a read the previous incarnation asked for
    /// (still pending at the leader, or queued for this member) would release this one's batch of
    /// the same number at an index older than writes acknowledged since.
    fn read_context(&self, id: u64) -> Vec<u8> {
        ReadContext {
            member: self.cfg.id,
            boot: self.read_boot(),
            batch: id,
        }
        .encode()
    }

    /// The start count read contexts carry (the same for every start with the reuse bug on).
    fn read_boot(&self) -> u64 {
        if crate::bugs::active(crate::bugs::Bug::ReadIndexReuse) {
            0
        } else {
            self.cfg.boot
        }
    }

    /// Takes the read indexes the leader answered for batches this incarnation asked for; any
    /// other context (another member's, a previous start's, malformed) is ignored.
    fn handle_read_states(&mut self, states: Vec<::raft::ReadState>) {
        for rs in states {
            let Some(ctx) = ReadContext::decode(&rs.request_ctx) else {
                tracing::debug!("ignored a read state with a malformed context");
                continue;
            };
            if ctx.member != self.cfg.id || ctx.boot != self.read_boot() {
                tracing::debug!(
                    member = %format!("{:x}", ctx.member),
                    boot = ctx.boot,
                    "ignored a read state this incarnation did not ask for"
                );
                continue;
            }
            if let Some(batch) = self.reads.get_mut(&ctx.batch) {
                assert!(
                    rs.index <= self.raw.raft.raft_log.committed
                        || self.raw.raft.state != StateRole::Leader,
                    "a leader's read index never exceeds its commit index"
                );
                batch.index = Some(rs.index);
            }
        }
    }

    /// Answers every read batch whose read index the state machine has reached.
    fn release_reads(&mut self) {
        let applied = self.store.consistent_index();
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, b)| b.index.is_some_and(|i| i <= applied))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(batch) = self.reads.remove(&id) {
                for s in batch.senders {
                    let _ = s.send(Ok(()));
                }
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.apply_entries(entries)?;
        self.commit_backend(true)
    }

    /// The store holds applied entries in memory and commits them to LMDB in batches: once a
    /// tick, and after applying when a batch is full (see `mvcc`'s module docs on durability).
    fn commit_backend(&mut self, only_if_full: bool) -> Result<(), NodeError> {
        let started = self.clock.now();
        let committed = if only_if_full {
            self.store.commit_if_full()
        } else {
            self.store.commit()
        };
        if committed.map_err(|e| NodeError::Storage(e.to_string()))? {
            self.metrics
                .backend_commit
                .observe(self.clock.now().saturating_sub(started));
        }
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        let result = self.apply_each(entries);
        if std::mem::take(&mut self.peers_changed) {
            // Once per batch: the bootstrap conf changes, replayed one by one, would each show the
            // transport a partial member list and make it drop links it needs a moment later.
            self.set_transport_peers();
        }
        result
    }

    /// Whether a request or change proposed by `origin` in its start `boot` is this member's, of
    /// this start: only those have waiters here.
    fn is_own(&self, origin: u64, boot: u64) -> bool {
        if crate::bugs::active(crate::bugs::Bug::WaiterIgnoresOrigin) {
            return true;
        }
        origin == self.cfg.id && boot == self.cfg.boot
    }

    fn set_transport_peers(&self) {
        let peers: Vec<(u64, Vec<String>)> = self
            .members
            .iter()
            .map(|m| (m.id, m.peer_urls.clone()))
            .collect();
        self.transport.set_peers(&peers);
    }

    fn apply_each(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        for entry in entries {
            let index = entry.index;
            if index <= self.store.consistent_index()
                && !crate::bugs::active(crate::bugs::Bug::SkipConsistentIndex)
            {
                // Already in the backend: WAL replay after a restart. Applying again would
                // duplicate revisions, so skip it (the consistent index makes replay idempotent).
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(index, entry.term, &entry.data)?,
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    cc.merge_from_bytes(&entry.data)
                        .map_err(|e| NodeError::Raft(e.to_string()))?;
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .map_err(|e| NodeError::Raft(e.to_string()))?;
                    let change = [(cc.get_change_type(), cc.node_id)];
                    self.record_conf_change(index, &cs, &change, &cc.context)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let mut cc = ConfChangeV2::default();
                    cc.merge_from_bytes(&entry.data)
                        .map_err(|e| NodeError::Raft(e.to_string()))?;
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .map_err(|e| NodeError::Raft(e.to_string()))?;
                    let changes: Vec<_> = cc
                        .changes
                        .iter()
                        .map(|c| (c.get_change_type(), c.node_id))
                        .collect();
                    self.record_conf_change(index, &cs, &changes, &cc.context)?;
                }
            }
            assert_eq!(
                self.store.consistent_index(),
                index,
                "every applied entry records its index"
            );
            crashpoint::reached(self.cfg.id, Point::AfterApply, index)?;
        }
        Ok(())
    }

    fn apply_normal(&mut self, index: u64, term: u64, data: &[u8]) -> Result<(), NodeError> {
        if data.is_empty() {
            // A new leader's empty entry: nothing to apply, but record that it was applied.
            return self
                .store
                .set_consistent_index(index)
                .map_err(|e| NodeError::Storage(e.to_string()));
        }
        let request = cairnpb::Request::decode(data)
            .map_err(|e| NodeError::Corrupt(format!("entry {index}: {e}")))?;
        let proposer = Proposer::of(&request);
        // The re-apply bug ignores both of the guards against applying a request twice.
        if !crate::bugs::active(crate::bugs::Bug::SkipConsistentIndex) {
            let admit = self.applied.admit(&self.store, proposer);
            if admit != Admit::New {
                // Its first copy answered the waiter, or its client no longer waits.
                tracing::warn!(
                    index,
                    origin = %format!("{:x}", request.origin),
                    request = %format!("{:x}", request.id),
                    ?admit,
                    "not applying a request that reached the log twice"
                );
                self.metrics
                    .proposals_duplicated
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return self
                    .store
                    .set_consistent_index(index)
                    .map_err(|e| NodeError::Storage(e.to_string()));
            }
        }
        let cost = request.op.as_ref().map_or(0, quota::cost);
        let capped = cost > 0 && self.alarms.is_active(AlarmType::Nospace);
        if cost > 0 && !capped {
            // etcd's quota applier: the write applies whatever this member's file holds (that
            // cannot decide what the log does), but a member at its quota asks for the alarm.
            let used = self.store.db_size_in_use_bytes();
            if used.saturating_add(cost) >= self.cfg.quota_backend_bytes {
                self.alarms.ask_to_raise();
            }
        }
        let result = match &request.op {
            // The NOSPACE alarm is replicated state: every member refuses the same writes.
            Some(_) if capped => {
                self.store
                    .set_consistent_index(index)
                    .map_err(|e| NodeError::Storage(e.to_string()))?;
                Err(RequestError::NoSpace)
            }
            Some(cairnpb::request::Op::Alarm(a)) => self.apply_alarm(index, a),
            Some(cairnpb::request::Op::MemberAttributes(a)) => {
                Ok((self.apply_attributes(index, a)?, Vec::new()))
            }
            Some(cairnpb::request::Op::LeaseGrant(g)) => self.apply_lease_grant(index, g),
            Some(cairnpb::request::Op::LeaseRevoke(r))
                if request.expiry_term != 0
                    && request.expiry_term != term
                    && !crate::bugs::active(crate::bugs::Bug::ExpiryAnyTerm) =>
            {
                // The proposer stopped leading before its expiry reached the log; the lease's
                // deadline is the current leader's to judge.
                tracing::info!(
                    lease = %format!("{:x}", r.id),
                    proposed_in = request.expiry_term,
                    appended_in = term,
                    "not applying a lease expiry from another term"
                );
                self.store
                    .set_consistent_index(index)
                    .map_err(|e| NodeError::Storage(e.to_string()))?;
                Err(RequestError::ExpiryFromAnotherTerm)
            }
            Some(cairnpb::request::Op::LeaseRevoke(r)) => self.apply_lease_revoke(index, r.id),
            _ => apply::apply(&self.store, index, &request, self.lessor.as_ref()),
        };
        if let Ok((_, events)) = &result {
            self.lessor.on_events(events);
            let puts = events
                .iter()
                .filter(|e| e.r#type == crate::proto::mvccpb::event::EventType::Put as i32)
                .count() as u64;
            self.metrics
                .mvcc_puts
                .fetch_add(puts, std::sync::atomic::Ordering::Relaxed);
        }
        let term = self.raw.raft.term;
        let reply = match result {
            Ok((response, events)) => {
                if !events.is_empty() {
                    let _ = self.events.send(Arc::new(events));
                }
                Ok(Applied { response, term })
            }
            Err(e) if e.is_deterministic() => {
                self.metrics
                    .proposals_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
            Err(e) => return Err(NodeError::Storage(e.to_string())),
        };
        // Only this member's own requests of this start have waiters here: another member's, or
        // an earlier start's, request may carry the same counter.
        if self.is_own(proposer.origin, proposer.boot) {
            if let Some(w) = self.waiters.remove(&proposer.counter) {
                let _ = w.send(reply);
            }
        }
        Ok(())
    }

    /// Records a membership change: raft's new ConfState and the member list, in the same backend
    /// transaction as the entry's index; then tells the transport whom to talk to.
    fn record_conf_change(
        &mut self,
        index: u64,
        cs: &ConfState,
        changes: &[(ConfChangeType, u64)],
        context: &[u8],
    ) -> Result<(), NodeError> {
        let mut members = self.members.clone();
        for (kind, node_id) in changes {
            let change = match kind {
                ConfChangeType::AddNode => Change::AddVoter,
                ConfChangeType::AddLearnerNode => Change::AddLearner,
                ConfChangeType::RemoveNode => Change::Remove,
            };
            membership::apply_change(&mut members, change, *node_id, context);
        }
        let bytes = cs
            .write_to_bytes()
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let storage = |e: crate::mvcc::MvccError| NodeError::Storage(e.to_string());
        let newly_removed: Vec<u64> = changes
            .iter()
            .filter(|(k, _)| *k == ConfChangeType::RemoveNode)
            .map(|(_, id)| *id)
            .collect();
        let mut removed = Vec::new();
        if !newly_removed.is_empty() {
            removed = membership::load_removed(&self.store).map_err(storage)?;
            removed.extend(newly_removed.iter().copied());
            removed.sort_unstable();
            removed.dedup();
        }
        for id in &newly_removed {
            // Staged into this transaction: a removed member's late requests are refused.
            self.applied.forget(&self.store, *id);
        }
        let mut w = self.store.write(index).map_err(storage)?;
        w.meta_put(super::CONF_STATE_META, &bytes)
            .map_err(storage)?;
        membership::save(&mut w, &members).map_err(storage)?;
        if !newly_removed.is_empty() {
            membership::save_removed(&mut w, &removed).map_err(storage)?;
        }
        w.end().map_err(storage)?;
        self.raw.mut_store().wl().set_conf_state(cs.clone());
        self.members = members;
        self.peers_changed = true;
        self.conf_changed_at = index;
        let context = serde_json::from_slice::<serde_json::Value>(context).ok();
        let request = context.as_ref().and_then(|v| {
            let own = self.is_own(v["request_origin"].as_u64()?, v["request_boot"].as_u64()?);
            own.then(|| v["request_id"].as_u64()).flatten()
        });
        if let Some(w) = request.and_then(|id| self.conf_waiters.remove(&id)) {
            // Answered when the change applies, as etcd does, also when it removes this member:
            // the peers that learn of the removal refuse this member's messages and may stop it
            // before it leaves on its own.
            let _ = w.send(Ok((self.members.clone(), self.raw.raft.term)));
        }
        let removed_self = changes
            .iter()
            .any(|(k, id)| *k == ConfChangeType::RemoveNode && *id == self.cfg.id);
        if removed_self
            && self.raw.raft.state == StateRole::Leader
            && !cs.voters.is_empty()
            && !crate::bugs::active(crate::bugs::Bug::RemovedLeaderStopsAtOnce)
        {
            let timeout = self.cfg.tick_interval * self.cfg.election_ticks as u32;
            tracing::info!(
                index,
                "removed from the cluster while leading: staying until the others know"
            );
            self.leaving = Some(Leaving {
                index,
                voters: cs.voters.clone(),
                voters_outgoing: cs.voters_outgoing.clone(),
                informed: BTreeSet::new(),
                leader_informed: false,
                deadline: self.clock.now() + timeout * LEAVE_ELECTION_TIMEOUTS_MAX,
            });
            return Ok(());
        }
        if removed_self {
            return Err(NodeError::Removed);
        }
        Ok(())
    }

    fn apply_lease_grant(
        &mut self,
        index: u64,
        g: &crate::proto::etcdserverpb::LeaseGrantRequest,
    ) -> Result<(ApplyResponse, Vec<Event>), RequestError> {
        let mut w = self.store.write(index)?;
        match self
            .lessor
            .apply_grant(&mut w, g.id, g.ttl, self.clock.now())
        {
            Ok(ttl) => {
                w.end()?;
                let header = Some(crate::proto::etcdserverpb::ResponseHeader {
                    revision: self.store.current_revision(),
                    ..Default::default()
                });
                let resp = crate::proto::etcdserverpb::LeaseGrantResponse {
                    header,
                    id: g.id,
                    ttl,
                    error: String::new(),
                };
                Ok((ApplyResponse::LeaseGrant(resp), Vec::new()))
            }
            Err(e) => {
                // A refused grant still counts as applied.
                w.end()?;
                Err(e)
            }
        }
    }

    fn apply_lease_revoke(
        &mut self,
        index: u64,
        id: i64,
    ) -> Result<(ApplyResponse, Vec<Event>), RequestError> {
        let mut w = self.store.write(index)?;
        match self.lessor.apply_revoke(&mut w, id) {
            Ok(()) => {
                let events = w.end()?;
                let header = Some(crate::proto::etcdserverpb::ResponseHeader {
                    revision: self.store.current_revision(),
                    ..Default::default()
                });
                Ok((
                    ApplyResponse::LeaseRevoke(crate::proto::etcdserverpb::LeaseRevokeResponse {
                        header,
                    }),
                    events,
                ))
            }
            Err(e) if e.is_deterministic() => {
                drop(w);
                self.store.set_consistent_index(index)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// An alarm raised or cleared through raft (etcd's `applierV3backend.Alarm`).
    fn apply_alarm(
        &mut self,
        index: u64,
        a: &crate::proto::etcdserverpb::AlarmRequest,
    ) -> Result<(ApplyResponse, Vec<Event>), RequestError> {
        let mut w = self.store.write(index)?;
        let resp = self.alarms.apply(&mut w, a)?;
        w.end()?;
        Ok((ApplyResponse::Alarm(resp), Vec::new()))
    }

    /// A member's announced name and client URLs (etcd's publish).
    fn apply_attributes(
        &mut self,
        index: u64,
        a: &cairnpb::MemberAttributes,
    ) -> Result<ApplyResponse, NodeError> {
        let storage = |e: crate::mvcc::MvccError| NodeError::Storage(e.to_string());
        let mut members = self.members.clone();
        let mut w = self.store.write(index).map_err(storage)?;
        if membership::apply_attributes(&mut members, a.id, &a.name, &a.client_urls) {
            membership::save(&mut w, &members).map_err(storage)?;
        }
        w.end().map_err(storage)?;
        self.members = members;
        Ok(ApplyResponse::Attributes)
    }

    /// After `snapshot_count` applied entries, the old part of the log is only needed by
    /// followers that fell far behind: flush the backend (which holds the applied state and its
    /// consistent index), mark the compaction point in the WAL, and drop older segments.
    ///
    /// The newest `catch_up_entries` applied entries stay, in memory and in the WAL, as etcd keeps
    /// them: a follower that lags a little (a slow disk, a short pause, a restart) is sent what it
    /// misses instead of a snapshot of the whole backend. The marker therefore sits below the
    /// applied index, and that is the ordinary restart case: the backend, synced here, holds
    /// everything up to the applied index, so a replay from the marker skips the entries at or
    /// below the store's consistent index (see `apply_each`).
    fn maybe_compact_log(&mut self) -> Result<(), NodeError> {
        let applied = self.store.consistent_index();
        if applied < self.compacted_at + self.cfg.snapshot_count.max(1) {
            return Ok(());
        }
        self.compacted_at = applied;
        let compact_to = applied
            .saturating_sub(self.cfg.catch_up_entries)
            .max(self.snapshot_index);
        if compact_to == self.snapshot_index {
            // Still inside the window: nothing the log holds is old enough to drop.
            return Ok(());
        }
        assert!(compact_to <= applied, "only applied entries are compacted");
        let entry_term = match ::raft::Storage::term(self.raw.store(), compact_to) {
            Ok(t) if t > 0 => t,
            other => {
                // A marker with the wrong term would make recovery drop the log after it.
                tracing::warn!(index = compact_to, term = ?other, "no term for the compaction point: not compacting");
                return Ok(());
            }
        };
        self.store
            .sync()
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        self.wal
            .record_snapshot(compact_to, entry_term)
            .map_err(|e| NodeError::Wal(e.to_string()))?;
        crashpoint::reached(self.cfg.id, Point::Compaction, applied)?;
        self.wal
            .release_to(compact_to)
            .map_err(|e| NodeError::Wal(e.to_string()))?;
        self.raw
            .mut_store()
            .wl()
            .compact(compact_to)
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        tracing::info!(
            index = compact_to,
            term = entry_term,
            applied,
            "compacted the raft log"
        );
        self.snapshot_index = compact_to;
        Ok(())
    }

    fn publish_status(&mut self) {
        let r = &self.raw.raft;
        if r.leader_id != self.last_leader {
            if r.leader_id != ::raft::INVALID_ID {
                self.metrics
                    .leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.last_leader = r.leader_id;
        }
        // Membership changes are proposals too; a waiter whose client went away counts until
        // the next tick forgets it.
        self.metrics.proposals_pending.store(
            (self.waiters.len() + self.conf_waiters.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let status = NodeStatus {
            id: self.cfg.id,
            leader: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: self.store.consistent_index(),
            last_index: r.raft_log.last_index(),
            is_leader: r.state == StateRole::Leader,
            is_learner: r.prs().conf().learners().contains(&self.cfg.id),
            is_voter: r.prs().conf().voters().contains(self.cfg.id),
        };
        self.status.send_if_modified(|s| {
            if *s != status {
                *s = status;
                true
            } else {
                false
            }
        });
    }
}

/// What a ReadIndex request carries as its context, to find its batch again in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadContext {
    member: u64,
    boot: u64,
    batch: u64,
}

impl ReadContext {
    const BYTES: usize = 24;

    fn encode(self) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(Self::BYTES);
        ctx.extend_from_slice(&self.member.to_be_bytes());
        ctx.extend_from_slice(&self.boot.to_be_bytes());
        ctx.extend_from_slice(&self.batch.to_be_bytes());
        ctx
    }

    fn decode(bytes: &[u8]) -> Option<ReadContext> {
        let bytes = <[u8; Self::BYTES]>::try_from(bytes).ok()?;
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Some(ReadContext {
            member: word(0),
            boot: word(8),
            batch: word(16),
        })
    }
}

/// Failures that stop the node. None of them is the client's fault, and none may be ignored: a
/// member that cannot persist or apply what it acknowledged must stop rather than diverge.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("wal: {0}")]
    Wal(String),
    #[error("backend: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("corrupt log entry: {0}")]
    Corrupt(String),
    #[error("not supported yet: {0}")]
    Unsupported(String),
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    /// The simulator crashed the member at a crash point (simulation builds only).
    #[error("{0}")]
    Crashed(#[from] crashpoint::Crashed),
}
