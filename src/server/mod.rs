//! # The server: from a client request to a response
//!
//! The server sits between the gRPC services ([`crate::api`]) and the raft driver
//! ([`crate::raft`]). For a write it checks the request as etcd does (empty key, txn size,
//! duplicate keys, request size), gives it a cluster-unique id, hands it to the node as a proposal
//! and waits — bounded by the request timeout — for the node to apply it and answer. For a read it
//! either serves from the local store at once (serializable) or first asks the node for a ReadIndex
//! round (linearizable).
//!
//! It also owns the member's data directory: `member/wal/` holds the write-ahead log and
//! `member/db/` the LMDB backend. The WAL's metadata names the member and its cluster, so a data
//! directory is never served by a member it does not belong to.
//!
//! Request semantics (what a put, delete, txn or compaction does to the store) live in [`apply`]
//! and the etcd-compatible pre-checks in [`validate`]; both are deterministic, so every replica
//! computes the same responses. The space quota and the NOSPACE alarm, which keep a full backend
//! from ever failing an apply, are in [`quota`].

pub mod apply;
pub mod compactor;
#[cfg(test)]
mod driver_tests;
pub mod error;
#[cfg(test)]
mod leader_tests;
pub mod membership;
pub mod metrics;
pub mod quota;
pub mod restore;
pub mod validate;
// The file is watch.rs; the module is `watches` because `watch` here is tokio's channel.
#[path = "watch.rs"]
pub mod watches;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::raft::eraftpb::{ConfChangeType, Message};
use ::raft::RawNode;
use prost::Message as _;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::io::{Clock, Disk, Rng, Transport};
use crate::lease::Lessor;
use crate::mvcc::Store;
use crate::proto::cairnpb;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, HashKvResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    StatusResponse, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::Event;
use crate::raft::dedup::AppliedRequests;
use crate::raft::{self as node, Command, Node, NodeConfig, NodeParts, NodeStatus};
use crate::wal::{Wal, WalOptions};
use apply::ApplyResponse;
use error::RequestError;

/// The etcd API version cairn implements, reported by `Status` and `/version` so that clients that
/// gate features on the server version treat cairn as the etcd release it is compatible with.
pub const ETCD_API_VERSION: &str = "3.4.23";
/// Commands queued to the node, beyond which callers wait (backpressure).
pub const NODE_COMMANDS_MAX: usize = 8192;
/// Raft messages received from peers and not yet stepped, beyond which new ones are dropped.
pub const INBOUND_MESSAGES_MAX: usize = 8192;
/// Events of applied revisions buffered for slow watchers before they must resynchronise.
pub const EVENT_BUFFER_MAX: usize = 1024;
/// How often the leader looks for expired leases.
pub const LEASE_TICK: Duration = Duration::from_millis(500);
/// Pause between two attempts to publish this member's attributes.
pub const PUBLISH_RETRY: Duration = Duration::from_millis(500);
/// How often a `physical` compaction checks whether the backend's deletion finished.
const PHYSICAL_COMPACTION_POLL: Duration = Duration::from_millis(10);
/// How long a `physical` compaction waits for the deletion before it answers with a timeout (the
/// compaction itself has happened then; only the answer gives up).
const PHYSICAL_COMPACTION_WAIT_MAX: Duration = Duration::from_secs(300);
/// Extra bytes gRPC accepts beyond --max-request-bytes, so that an oversized request reaches the
/// server's own check and gets etcd's "request is too large" rather than a transport error.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub id: u64,
    pub peer_urls: Vec<String>,
}

/// Everything the server needs to know, from flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// etcd's `--wal-dir`: the WAL on a disk of its own; `None` keeps it in the data dir.
    pub wal_dir: Option<PathBuf>,
    pub member_id: u64,
    pub cluster_id: u64,
    pub initial_cluster: Vec<InitialMember>,
    pub client_urls: Vec<String>,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    /// Applied entries the log keeps behind each compaction, so a follower that lags by fewer
    /// gets entries rather than a snapshot (etcd's `--experimental-snapshot-catchup-entries`).
    pub snapshot_catch_up_entries: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub quota_backend_bytes: u64,
    /// etcd's --strict-reconfig-check: refuse membership changes that would lose quorum.
    pub strict_reconfig_check: bool,
    /// etcd's --auto-compaction-mode and --auto-compaction-retention; `None` when off.
    pub auto_compaction: Option<compactor::Retention>,
    /// Joining a running cluster (`--initial-cluster-state existing`): start with an empty log
    /// and learn everything, membership included, from the leader.
    pub join_existing: bool,
}

impl ServerConfig {
    /// Where the WAL lives: `--wal-dir`, or `<data-dir>/member/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("member").join("wal"))
    }

    /// How long a request may wait for its answer before failing with "request timed out": etcd's
    /// 5 s plus two election timeouts, so a request survives one election.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.election_timeout
    }

    /// etcd's shortest lease TTL: 1.5 election timeouts, rounded up to whole seconds.
    pub fn min_lease_ttl_seconds(&self) -> i64 {
        let ms = (3 * self.election_ticks() as u128 / 2) * self.heartbeat_interval.as_millis();
        ms.div_ceil(1000) as i64
    }

    fn election_ticks(&self) -> usize {
        let hb = self.heartbeat_interval.as_millis().max(1);
        ((self.election_timeout.as_millis() / hb) as usize).max(2)
    }
}

/// The I/O a server runs on: production or simulated (see [`crate::io`]).
pub struct ServerIo {
    pub disk: Arc<dyn Disk>,
    pub clock: Arc<dyn Clock>,
    pub transport: Arc<dyn Transport>,
    pub rng: Box<dyn Rng>,
}

/// Errors that prevent a member from starting. Each renders as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot access data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    WrongMember(String),
    #[error("cannot open WAL: {0}")]
    Wal(String),
    #[error("cannot open backend: {0}")]
    Backend(String),
    #[error("cannot restore raft state: {0}")]
    Raft(String),
}

struct Inner {
    cfg: ServerConfig,
    store: Arc<Store>,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<NodeStatus>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    /// This member's start count (see [`next_boot_count`]); requests carry it.
    boot: u64,
    /// The counter of this start's next request (and membership change), from 1.
    next_request_id: AtomicU64,
    /// Counters of the requests whose clients still wait: the smallest is the floor every new
    /// request carries (see [`crate::raft::dedup`]).
    pending: Mutex<BTreeSet<u64>>,
    /// The next lease id this member hands out when a client lets the server choose.
    next_lease_id: AtomicU64,
    metrics: Arc<metrics::Metrics>,
    lessor: Arc<Lessor>,
    /// The replicated alarm table (applied by the node).
    alarms: Arc<quota::Alarms>,
    /// A NOSPACE alarm of this member is being proposed: others need not propose it too.
    raising_alarm: AtomicBool,
    /// The quota cost of this member's writes proposed and not yet answered: they will add to the
    /// backend, so the quota check counts them (see [`quota`]).
    writes_in_flight_bytes: AtomicU64,
    clock: Arc<dyn Clock>,
}

/// A running member, shared by the API services. Cloning is cheap.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

/// The running node task; await it to learn how the node stopped.
pub type NodeHandle = tokio::task::JoinHandle<Result<(), node::NodeError>>;

impl Server {
    /// Opens (or creates) the member's data dir, recovers the WAL and backend, and starts the raft
    /// node task. Returns the server handle, the sender for raft messages from peers, and the task.
    pub fn start(
        mut cfg: ServerConfig,
        io: ServerIo,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Server, mpsc::Sender<Message>, NodeHandle), StartError> {
        let member_dir = cfg.data_dir.join("member");
        let wal_dir = cfg.wal_dir();
        let db_dir = member_dir.join("db");
        for dir in [&cfg.data_dir, &member_dir, &db_dir] {
            io.disk
                .create_dir_all(dir)
                .map_err(|source| StartError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
        }
        check_writable(&cfg.data_dir)?;
        let (wal, contents) = if Wal::exists(io.disk.as_ref(), &wal_dir) {
            let (wal, contents) = Wal::open(io.disk.clone(), &wal_dir, WalOptions::default())
                .map_err(|e| StartError::Wal(e.to_string()))?;
            let (member_id, cluster_id) = check_metadata(&cfg, &contents.metadata)?;
            // A restarted member keeps the identity it was created with, whatever the
            // initial-cluster flags say now (as etcd does).
            cfg.member_id = member_id;
            cfg.cluster_id = cluster_id;
            (wal, contents)
        } else {
            create_wal(&cfg, io.disk.clone(), &wal_dir)?
        };
        let map_size =
            quota::map_size_bytes(cfg.quota_backend_bytes, quota::data_file_bytes(&db_dir));
        let store = Arc::new(
            Store::open(&db_dir, map_size).map_err(|e| StartError::Backend(e.to_string()))?,
        );
        finish_snapshot_install(&store, &contents, &member_dir.join("snap"))?;
        remove_stale_snapshot_files(&member_dir.join("snap"));
        let (storage, snapshot_index) = node::restore_storage(&contents, &store)
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let boot = next_boot_count(io.disk.as_ref(), &member_dir).map_err(|source| {
            StartError::DataDir {
                path: member_dir.display().to_string(),
                source,
            }
        })?;
        let node_cfg = NodeConfig {
            id: cfg.member_id,
            tick_interval: cfg.heartbeat_interval,
            election_ticks: cfg.election_ticks(),
            heartbeat_ticks: 1,
            snapshot_count: cfg.snapshot_count,
            catch_up_entries: cfg.snapshot_catch_up_entries,
            read_timeout: cfg.request_timeout(),
            leader_wait: cfg.request_timeout(),
            // A lost ReadIndex request or answer is asked again after a few heartbeats.
            read_retry: 3 * cfg.heartbeat_interval,
            snap_dir: member_dir.join("snap"),
            boot,
            strict_reconfig_check: cfg.strict_reconfig_check,
            quota_backend_bytes: cfg.quota_backend_bytes,
        };
        let raft_cfg = node::raft_config(&node_cfg, store.consistent_index());
        let raw = RawNode::new(&raft_cfg, storage, &node::raft_logger())
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let (cmd_tx, cmd_rx) = mpsc::channel(NODE_COMMANDS_MAX);
        let (msg_tx, msg_rx) = mpsc::channel(INBOUND_MESSAGES_MAX);
        let (status_tx, status_rx) = watch::channel(NodeStatus {
            id: cfg.member_id,
            ..Default::default()
        });
        let (events_tx, _) = broadcast::channel(EVENT_BUFFER_MAX);
        let metrics = Arc::new(metrics::Metrics::default());
        let lessor = Arc::new(
            Lessor::recover(&store, cfg.min_lease_ttl_seconds())
                .map_err(|e| StartError::Backend(e.to_string()))?,
        );
        let alarms =
            Arc::new(quota::Alarms::load(&store).map_err(|e| StartError::Backend(e.to_string()))?);
        let publish_clock = io.clock.clone();
        let publish_stop = shutdown.clone();
        let expire_stop = shutdown.clone();
        let alarm_stop = shutdown.clone();
        let compact_stop = shutdown.clone();
        let first_lease_id = initial_lease_id(cfg.member_id, boot);
        let node = Node::new(NodeParts {
            config: node_cfg,
            raw_node: raw,
            wal,
            store: store.clone(),
            transport: io.transport,
            clock: io.clock,
            rng: io.rng,
            commands: cmd_rx,
            inbound: msg_rx,
            status: status_tx,
            events: events_tx.clone(),
            metrics: metrics.clone(),
            members: membership::load(&store).map_err(|e| StartError::Backend(e.to_string()))?,
            lessor: lessor.clone(),
            alarms: alarms.clone(),
            snapshot_index,
            applied: AppliedRequests::load(&store)
                .map_err(|e| StartError::Backend(e.to_string()))?,
        });
        let span = tracing::info_span!("node", member = %format!("{:x}", cfg.member_id));
        let task = tokio::spawn(tracing::Instrument::instrument(node.run(shutdown), span));
        let inner = Inner {
            cfg,
            store,
            commands: cmd_tx,
            status: status_rx,
            events: events_tx,
            boot,
            next_request_id: AtomicU64::new(1),
            pending: Mutex::new(BTreeSet::new()),
            next_lease_id: AtomicU64::new(first_lease_id),
            metrics,
            lessor,
            alarms,
            raising_alarm: AtomicBool::new(false),
            writes_in_flight_bytes: AtomicU64::new(0),
            clock: publish_clock.clone(),
        };
        let server = Server {
            inner: Arc::new(inner),
        };
        let expirer = server.clone();
        tokio::spawn(async move { expirer.run_lease_expiry(expire_stop).await });
        let alarmer = server.clone();
        tokio::spawn(async move { alarmer.run_quota_alarm(alarm_stop).await });
        if let Some(retention) = server.inner.cfg.auto_compaction {
            let compactor = server.clone();
            tokio::spawn(
                async move { compactor.run_auto_compaction(retention, compact_stop).await },
            );
        }
        let publisher = server.clone();
        tokio::spawn(async move {
            publisher
                .publish_attributes(publish_clock, publish_stop)
                .await
        });
        Ok((server, msg_tx, task))
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The node's latest published status.
    pub fn node_status(&self) -> NodeStatus {
        self.inner.status.borrow().clone()
    }

    /// A receiver of node status changes (leader, term, applied index).
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.inner.status.clone()
    }

    /// Events of every applied revision, in order.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<Vec<Event>>> {
        self.inner.events.subscribe()
    }

    /// A response header for this member at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let st = self.inner.status.borrow();
        ResponseHeader {
            cluster_id: self.inner.cfg.cluster_id,
            member_id: self.inner.cfg.member_id,
            revision,
            raft_term: st.term,
        }
    }

    fn fill_header(&self, header: &mut Option<ResponseHeader>, term: Option<u64>) {
        let revision = header
            .as_ref()
            .map(|h| h.revision)
            .unwrap_or_else(|| self.inner.store.current_revision());
        let mut h = self.header(revision);
        if let Some(t) = term {
            h.raft_term = t;
        }
        *header = Some(h);
    }

    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, RequestError> {
        validate::check_range(&req)?;
        if !req.serializable {
            self.check_not_learner()?;
            self.read_index().await?;
        }
        let mut resp = apply::range(&self.inner.store, &req)?;
        self.fill_header(&mut resp.header, None);
        Ok(resp)
    }

    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, RequestError> {
        validate::check_put(&req)?;
        let op = cairnpb::request::Op::Put(req);
        let _space = self.reserve_space(&op).await?;
        self.write(op).await
    }

    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, RequestError> {
        validate::check_delete_range(&req)?;
        self.write(cairnpb::request::Op::DeleteRange(req)).await
    }

    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, RequestError> {
        validate::check_txn(&req, self.inner.cfg.max_txn_ops)?;
        if !apply::is_txn_read_only(&req) {
            let op = cairnpb::request::Op::Txn(req);
            let _space = self.reserve_space(&op).await?;
            return self.write(op).await;
        }
        // As etcd: a txn that only reads needs no log entry, just the read path of a range —
        // after a ReadIndex round unless every top-level op is a serializable range.
        self.check_not_learner()?;
        if !apply::is_txn_serializable(&req) {
            self.read_index().await?;
        }
        let mut resp = apply::txn_read_only(&self.inner.store, &req)?;
        self.fill_header(&mut resp.header, None);
        Ok(resp)
    }

    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn compact(
        &self,
        req: CompactionRequest,
    ) -> Result<CompactionResponse, RequestError> {
        let physical = req.physical;
        let resp = self.write(cairnpb::request::Op::Compaction(req)).await?;
        if physical {
            // etcd's `physical`: answer once this member's backend has deleted what the
            // compaction dropped (the raft loop deletes a bounded batch a tick).
            let started = self.inner.clock.now();
            while !self.inner.store.is_physically_compacted() {
                if self.inner.clock.now().saturating_sub(started) >= PHYSICAL_COMPACTION_WAIT_MAX {
                    return Err(RequestError::Timeout);
                }
                self.inner.clock.sleep(PHYSICAL_COMPACTION_POLL).await;
            }
        }
        Ok(resp)
    }

    /// `GET /metrics`: Prometheus text under etcd's metric names.
    pub fn render_metrics(&self) -> String {
        let st = self.node_status();
        let store = &self.inner.store;
        self.inner.metrics.render(metrics::Gauges {
            has_leader: st.leader != 0,
            is_leader: st.is_leader,
            term: st.term,
            commit: st.commit,
            applied: st.applied,
            db_size_bytes: store.db_size_bytes(),
            db_size_in_use_bytes: store.db_size_in_use_bytes(),
            quota_backend_bytes: self.inner.cfg.quota_backend_bytes,
            revision: store.current_revision(),
            compact_revision: store.compact_revision(),
        })
    }

    /// `GET /health`: healthy when the member knows a leader and a linearizable read (a ReadIndex
    /// round) completes within `timeout` — that is, the cluster can still commit.
    pub async fn health(&self, timeout: Duration) -> Result<(), String> {
        // etcd 3.4: any raised alarm (NOSPACE, CORRUPT) makes the member unhealthy.
        if let Some(alarm) = self.alarms().first() {
            let kind = crate::proto::etcdserverpb::AlarmType::try_from(alarm.alarm)
                .map(|a| a.as_str_name())
                .unwrap_or("UNKNOWN");
            return Err(format!("alarm {kind} on member {:x}", alarm.member_id));
        }
        if self.node_status().leader == 0 {
            return Err("RAFT NO LEADER".into());
        }
        match tokio::time::timeout(timeout, self.read_index()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out waiting for a linearizable read".into()),
        }
    }

    /// Grants a lease through raft; an id of 0 asks the server to choose one.
    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn lease_grant(
        &self,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, RequestError> {
        if self.inner.lessor.len() >= crate::lease::LEASES_MAX {
            return Err(RequestError::TooManyRequests);
        }
        while req.id <= 0 {
            req.id = (self.inner.next_lease_id.fetch_add(1, Ordering::Relaxed) & (i64::MAX as u64))
                as i64;
        }
        let op = cairnpb::request::Op::LeaseGrant(req);
        let _space = self.reserve_space(&op).await?;
        self.write(op).await
    }

    /// Revokes a lease through raft, deleting its keys.
    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, RequestError> {
        self.write(cairnpb::request::Op::LeaseRevoke(req)).await
    }

    /// One keep-alive: renews the lease on the leader and answers its TTL (0 for an unknown lease,
    /// as etcd does). Keep-alives are not replicated; only the leader tracks deadlines, so a
    /// member that is not the leader refuses (the Lease service forwards to the leader first).
    pub fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, RequestError> {
        let st = self.node_status();
        if !st.is_leader {
            return Err(if st.leader == 0 {
                RequestError::NoLeader
            } else {
                RequestError::NotLeader
            });
        }
        let ttl = self
            .inner
            .lessor
            .renew(id, self.inner.clock.now())
            .unwrap_or(0);
        Ok(self.lease_keep_alive_answer(id, ttl))
    }

    /// The answer to a keep-alive the leader renewed to `ttl`, with this member's header.
    pub fn lease_keep_alive_answer(&self, id: i64, ttl: i64) -> LeaseKeepAliveResponse {
        LeaseKeepAliveResponse {
            header: Some(self.header(self.inner.store.current_revision())),
            id,
            ttl,
        }
    }

    /// Remaining and granted TTL of a lease; TTL -1 for an unknown lease, as etcd answers.
    pub fn lease_time_to_live(&self, req: &LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse {
        let header = Some(self.header(self.inner.store.current_revision()));
        match self
            .inner
            .lessor
            .time_to_live(req.id, self.inner.clock.now(), req.keys)
        {
            Some(info) => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: info.remaining,
                granted_ttl: info.granted_ttl,
                keys: info.keys,
            },
            None => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        }
    }

    /// Every lease, by id.
    pub fn lease_leases(&self) -> LeaseLeasesResponse {
        LeaseLeasesResponse {
            header: Some(self.header(self.inner.store.current_revision())),
            leases: self
                .inner
                .lessor
                .leases()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }
    }

    /// Automatic compaction ([`compactor`]): every member keeps the schedule, the leader proposes.
    async fn run_auto_compaction(
        &self,
        retention: compactor::Retention,
        mut stop: watch::Receiver<bool>,
    ) {
        let clock = &self.inner.clock;
        let store = &self.inner.store;
        let mut schedule =
            compactor::Schedule::new(retention, clock.now(), store.current_revision());
        tracing::info!(?retention, "automatic compaction enabled");
        loop {
            tokio::select! {
                _ = clock.sleep(schedule.wait()) => {}
                _ = stop.changed() => return,
            }
            let leader = self.node_status().is_leader;
            let Some(at) = schedule.poll(clock.now(), store.current_revision(), leader) else {
                continue;
            };
            tracing::info!(revision = at, ?retention, "starting auto compaction");
            let result = self
                .compact(CompactionRequest {
                    revision: at,
                    physical: false,
                })
                .await;
            match &result {
                Ok(_) | Err(RequestError::Compacted) => {
                    tracing::info!(revision = at, "finished auto compaction")
                }
                Err(e) => {
                    tracing::warn!(revision = at, error = %e, "auto compaction failed; retrying later")
                }
            }
            let ok = matches!(result, Ok(_) | Err(RequestError::Compacted));
            schedule.done(at, clock.now(), ok);
        }
    }

    /// The leader's lease clock: takes over deadlines when this member becomes leader, drops them
    /// when it stops being leader, and proposes a revoke for every lease that expired.
    async fn run_lease_expiry(&self, mut stop: watch::Receiver<bool>) {
        let lessor = &self.inner.lessor;
        loop {
            tokio::select! {
                _ = self.inner.clock.sleep(LEASE_TICK) => {}
                _ = stop.changed() => return,
            }
            let st = self.node_status();
            let now = self.inner.clock.now();
            if st.is_leader && lessor.primary_term() != Some(st.term) {
                lessor.promote(now, self.inner.cfg.election_timeout, st.term);
            } else if !st.is_leader && lessor.is_primary() {
                lessor.demote();
            }
            let Some(term) = lessor.primary_term() else {
                continue;
            };
            for id in lessor.expired(now) {
                // Each revoke may wait; leadership and the lease's deadline are judged again
                // right before each one, and the revoke carries the term it was judged in.
                let st = self.node_status();
                if !st.is_leader || st.term != term {
                    break;
                }
                if !lessor.is_expired(id, self.inner.clock.now()) {
                    continue;
                }
                tracing::debug!(lease = %format!("{id:x}"), term, "lease expired; revoking");
                let op = cairnpb::request::Op::LeaseRevoke(LeaseRevokeRequest { id });
                if let Err(e) = self.propose_request(op, term).await {
                    tracing::debug!(lease = %format!("{id:x}"), error = %e, "revoking an expired lease failed; will retry");
                }
            }
        }
    }

    /// etcd's quota check before proposing a write (its `quotaKVServer`): a write that adds data
    /// and would take the backend (pages in use, plus this member's writes in flight) to the
    /// quota is refused with "database space exceeded", and this member raises the NOSPACE alarm.
    /// Otherwise the write's cost counts as in flight until the returned guard drops.
    async fn reserve_space(
        &self,
        op: &cairnpb::request::Op,
    ) -> Result<SpaceReservation<'_>, RequestError> {
        let cost = quota::cost(op);
        if cost == 0 {
            return Ok(SpaceReservation {
                inner: &self.inner,
                bytes: 0,
            });
        }
        // As in etcd, a learner refuses the write before the quota is looked at (and could not
        // propose the alarm anyway).
        self.check_not_learner()?;
        let in_flight = self
            .inner
            .writes_in_flight_bytes
            .fetch_add(cost, Ordering::AcqRel);
        let reservation = SpaceReservation {
            inner: &self.inner,
            bytes: cost,
        };
        let used = self.inner.store.db_size_in_use_bytes();
        if used.saturating_add(in_flight).saturating_add(cost) < self.inner.cfg.quota_backend_bytes
        {
            return Ok(reservation);
        }
        drop(reservation);
        tracing::warn!(
            quota_bytes = self.inner.cfg.quota_backend_bytes,
            used_bytes = used,
            in_flight_bytes = in_flight,
            cost_bytes = cost,
            "a write exceeds the backend quota; refusing it"
        );
        self.raise_nospace_alarm().await;
        Err(RequestError::NoSpace)
    }

    /// Proposes this member's NOSPACE alarm unless it is active already (or being proposed), and
    /// waits for it to apply. Failures are logged only: the write that needed room is refused
    /// either way, and the next one tries again.
    async fn raise_nospace_alarm(&self) {
        use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
        let me = self.inner.cfg.member_id;
        if self.inner.alarms.is_raised_by(me, AlarmType::Nospace)
            || self.inner.raising_alarm.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let op = cairnpb::request::Op::Alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: me,
            alarm: AlarmType::Nospace as i32,
        });
        if let Err(e) = self.propose(op).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm failed; the next write that needs room retries");
        }
        self.inner.raising_alarm.store(false, Ordering::Release);
    }

    /// Raises this member's NOSPACE alarm when the apply path asks for it (a write applied here
    /// found the backend at its quota) and no member's NOSPACE alarm is active yet.
    async fn run_quota_alarm(&self, mut stop: watch::Receiver<bool>) {
        use crate::proto::etcdserverpb::AlarmType;
        loop {
            tokio::select! {
                _ = self.inner.alarms.raise_asked() => {}
                _ = stop.changed() => return,
            }
            if !self.inner.alarms.is_active(AlarmType::Nospace) {
                tracing::warn!(
                    quota_bytes = self.inner.cfg.quota_backend_bytes,
                    "the backend reached its space quota at apply; raising the NOSPACE alarm"
                );
                self.raise_nospace_alarm().await;
            }
        }
    }

    /// etcd's `Maintenance.Alarm`: GET answers the alarm list after a ReadIndex round (etcd reads
    /// it through raft); ACTIVATE and DEACTIVATE go through raft and answer the alarm they
    /// changed. Like etcd, the answer carries no header.
    pub async fn alarm(
        &self,
        req: crate::proto::etcdserverpb::AlarmRequest,
    ) -> Result<crate::proto::etcdserverpb::AlarmResponse, RequestError> {
        use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmResponse, AlarmType};
        if req.action == AlarmAction::Get as i32 {
            self.check_not_learner()?;
            self.read_index().await?;
            let alarm = AlarmType::try_from(req.alarm).unwrap_or(AlarmType::None);
            return Ok(AlarmResponse {
                header: None,
                alarms: self.inner.alarms.list(alarm),
            });
        }
        let (applied, _) = self.propose(cairnpb::request::Op::Alarm(req)).await?;
        AlarmResponse::from_apply(applied).map_err(unexpected)
    }

    /// Every active alarm, by type and member.
    pub fn alarms(&self) -> Vec<crate::proto::etcdserverpb::AlarmMember> {
        self.inner
            .alarms
            .list(crate::proto::etcdserverpb::AlarmType::None)
    }

    /// Adds a member (a voter, or a learner that receives the log but does not vote) through a raft
    /// conf change. Returns the new member and the member list after the change.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(membership::Member, Vec<membership::Member>), RequestError> {
        for url in &peer_urls {
            crate::config::split_url(url).map_err(|_| RequestError::InvalidPeerUrl)?;
        }
        if peer_urls.is_empty() {
            return Err(RequestError::InvalidPeerUrl);
        }
        let members = self.members()?;
        if members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(RequestError::PeerUrlExists);
        }
        if members.len() >= membership::MEMBERS_MAX {
            return Err(RequestError::TooManyRequests);
        }
        if self.inner.cfg.strict_reconfig_check
            && !is_learner
            && !membership::ready_for_another_voter(&members, false)
        {
            return Err(RequestError::NotEnoughStartedMembers);
        }
        // Like etcd, a member added at runtime gets an id from its peer URLs, the cluster and the
        // time, so re-adding the same URLs later yields a new id.
        let salt = format!(
            "{:x}{}",
            self.inner.cfg.cluster_id,
            self.inner.clock.wall_unix_nanos()
        );
        let id = crate::config::member_id(&peer_urls, &salt);
        if members.iter().any(|m| m.id == id) {
            return Err(RequestError::MemberExists);
        }
        let member = membership::Member {
            id,
            peer_urls,
            is_learner,
            ..Default::default()
        };
        let kind = if is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let (members, _) = self.conf_change(kind, &member, false).await?;
        Ok((member, members))
    }

    /// Removes a member through a raft conf change.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<membership::Member>, RequestError> {
        let member = self.member(id)?;
        Ok(self
            .conf_change(ConfChangeType::RemoveNode, &member, false)
            .await?
            .0)
    }

    /// Changes a member's peer URLs through a raft conf change that keeps its role.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Vec<membership::Member>, RequestError> {
        let mut member = self.member(id)?;
        for url in &peer_urls {
            crate::config::split_url(url).map_err(|_| RequestError::InvalidPeerUrl)?;
        }
        let others = self.members()?;
        if others
            .iter()
            .any(|m| m.id != id && m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(RequestError::PeerUrlExists);
        }
        member.peer_urls = peer_urls;
        let kind = if member.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        Ok(self.conf_change(kind, &member, false).await?.0)
    }

    /// Promotes a learner that has caught up with the leader to a voter.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<membership::Member>, RequestError> {
        let member = self.member(id)?;
        if !member.is_learner {
            return Err(RequestError::MemberNotLearner);
        }
        if self.inner.cfg.strict_reconfig_check
            && !membership::ready_for_another_voter(&self.members()?, true)
        {
            return Err(RequestError::NotEnoughStartedMembers);
        }
        Ok(self
            .conf_change(ConfChangeType::AddNode, &member, true)
            .await?
            .0)
    }

    /// Asks the leader (this member) to hand leadership to `target`.
    pub async fn move_leader(&self, target: u64) -> Result<(), RequestError> {
        let st = self.node_status();
        if !st.is_leader {
            return Err(RequestError::NotLeader);
        }
        let member = self
            .member(target)
            .map_err(|_| RequestError::BadLeaderTransferee)?;
        if member.is_learner {
            return Err(RequestError::BadLeaderTransferee);
        }
        let (tx, rx) = oneshot::channel();
        self.send_command(Command::TransferLeader {
            transferee: target,
            reply: tx,
        })
        .await?;
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// `HashKV`: a hash of the key space up to `rev` (0 = current) for comparing members.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKvResponse, RequestError> {
        let (hash, compact_revision, hash_revision) = self.inner.store.hash_kv(rev)?;
        Ok(HashKvResponse {
            header: Some(self.header(self.inner.store.current_revision())),
            hash,
            compact_revision,
            hash_revision,
        })
    }

    fn member(&self, id: u64) -> Result<membership::Member, RequestError> {
        self.members()?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(RequestError::MemberNotFound)
    }

    async fn conf_change(
        &self,
        kind: ConfChangeType,
        member: &membership::Member,
        require_learner_in_sync: bool,
    ) -> Result<(Vec<membership::Member>, u64), RequestError> {
        let request_id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut context = member.to_json();
        // The waiter is this start's: the node answers it only for a change from this member and
        // start (another member's or start's counter may be the same number).
        context["request_id"] = serde_json::json!(request_id);
        context["request_origin"] = serde_json::json!(self.inner.cfg.member_id);
        context["request_boot"] = serde_json::json!(self.inner.boot);
        let mut change = ::raft::eraftpb::ConfChange::default();
        change.set_change_type(kind);
        change.node_id = member.id;
        change.context = context.to_string().into_bytes().into();
        let (tx, rx) = oneshot::channel();
        self.send_command(Command::ConfChange {
            change,
            request_id,
            require_learner_in_sync,
            reply: tx,
        })
        .await?;
        match tokio::time::timeout(self.inner.cfg.request_timeout(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RequestError::Stopped),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// Where membership changes must be sent: `None` when this member leads, else the leader's
    /// client URL. Like etcd, a follower forwards them so that the leader, which alone knows how
    /// far every member's log is and which members are running, can check them.
    pub fn leader_client_url(&self) -> Result<Option<String>, RequestError> {
        let st = self.node_status();
        if st.is_leader {
            return Ok(None);
        }
        if st.leader == 0 {
            return Err(RequestError::NoLeader);
        }
        let leader = self.member(st.leader).map_err(|_| RequestError::NoLeader)?;
        leader
            .client_urls
            .first()
            .cloned()
            .map(Some)
            .ok_or(RequestError::NoLeader)
    }

    /// The applied member list.
    pub fn members(&self) -> Result<Vec<membership::Member>, RequestError> {
        Ok(membership::load(&self.inner.store)?)
    }

    /// The lines etcd logs once a member has joined its cluster and serves it, which scripts and
    /// etcd's own end-to-end tests wait for: the API version the cluster runs, then the published
    /// attributes.
    fn log_published(&self, attrs: &cairnpb::MemberAttributes) {
        tracing::info!(
            cluster_version = "3.4",
            "enabled capabilities for version 3.4"
        );
        tracing::info!(
            "published {{Name:{} ClientURLs:[{}]}} to cluster {:x}",
            attrs.name,
            attrs.client_urls.join(" "),
            self.inner.cfg.cluster_id
        );
    }

    /// Announces this member's name and client URLs through raft (etcd's publish), retrying every
    /// [`PUBLISH_RETRY`] until it is applied or the member stops.
    async fn publish_attributes(&self, clock: Arc<dyn Clock>, mut stop: watch::Receiver<bool>) {
        let cfg = &self.inner.cfg;
        let attrs = cairnpb::MemberAttributes {
            id: cfg.member_id,
            name: cfg.name.clone(),
            client_urls: cfg.client_urls.clone(),
        };
        loop {
            if let Ok(members) = self.members() {
                if members.iter().any(|m| {
                    m.id == cfg.member_id
                        && m.name == attrs.name
                        && m.client_urls == attrs.client_urls
                }) {
                    self.log_published(&attrs);
                    return;
                }
            }
            tokio::select! {
                r = self.propose(cairnpb::request::Op::MemberAttributes(attrs.clone())) => {
                    match r {
                        Ok(_) => {
                            self.log_published(&attrs);
                            return;
                        }
                        Err(e) => tracing::debug!(error = %e, "publishing member attributes failed; retrying"),
                    }
                }
                _ = stop.changed() => return,
            }
            tokio::select! {
                _ = clock.sleep(PUBLISH_RETRY) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// This member's view for `Maintenance.Status`.
    pub fn status(&self) -> StatusResponse {
        let st = self.node_status();
        let store = &self.inner.store;
        StatusResponse {
            header: Some(self.header(store.current_revision())),
            version: ETCD_API_VERSION.to_string(),
            db_size: store.db_size_bytes() as i64,
            leader: st.leader,
            raft_index: st.commit,
            raft_term: st.term,
            raft_applied_index: st.applied,
            // etcd lists every active alarm among the errors, in its own text.
            errors: self.alarms().iter().map(quota::alarm_text).collect(),
            db_size_in_use: store.db_size_in_use_bytes() as i64,
            is_learner: st.is_learner,
            ..Default::default()
        }
    }

    /// A learner serves only serializable reads and status, as in etcd.
    pub fn check_not_learner(&self) -> Result<(), RequestError> {
        let st = self.node_status();
        if st.is_learner || !st.is_voter {
            return Err(RequestError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// Waits until a read at this moment would be linearizable on this member.
    pub async fn read_index(&self) -> Result<(), RequestError> {
        let (tx, rx) = oneshot::channel();
        self.send_command(Command::ReadIndex { reply: tx }).await?;
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(RequestError::Stopped),
        }
    }

    async fn send_command(&self, cmd: Command) -> Result<(), RequestError> {
        self.inner
            .commands
            .send(cmd)
            .await
            .map_err(|_| RequestError::Stopped)
    }

    /// Replicates one write, waits for this member to apply it, and answers with the response of
    /// the kind `R` the write produces, its header filled in.
    async fn write<R: WriteAnswer>(&self, op: cairnpb::request::Op) -> Result<R, RequestError> {
        let (applied, term) = self.propose(op).await?;
        let mut r = R::from_apply(applied).map_err(unexpected)?;
        self.fill_header(r.header_mut(), Some(term));
        Ok(r)
    }

    /// Replicates one write and waits for this member to apply it.
    async fn propose(
        &self,
        op: cairnpb::request::Op,
    ) -> Result<(ApplyResponse, u64), RequestError> {
        self.propose_request(op, 0).await
    }

    /// [`Server::propose`], for a lease expiry judged by the leader of `expiry_term` when that
    /// is not 0: such a request is never parked or forwarded, and applies only if the leader of
    /// that term appended it.
    async fn propose_request(
        &self,
        op: cairnpb::request::Op,
        expiry_term: u64,
    ) -> Result<(ApplyResponse, u64), RequestError> {
        if !matches!(op, cairnpb::request::Op::MemberAttributes(_)) {
            self.check_not_learner()?;
        }
        let pending = Pending::new(&self.inner)?;
        let request = cairnpb::Request {
            id: pending.id,
            op: Some(op),
            origin: self.inner.cfg.member_id,
            boot: self.inner.boot,
            floor: pending.floor,
            expiry_term,
        };
        if request.encoded_len() > self.inner.cfg.max_request_bytes {
            return Err(RequestError::RequestTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        self.send_command(Command::Propose { request, reply: tx })
            .await?;
        let timeout = self.inner.cfg.request_timeout();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(applied))) => Ok((applied.response, applied.term)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(RequestError::Stopped),
            Err(_) => Err(RequestError::Timeout),
        }
    }
}

/// The first log entries of a new cluster, as etcd writes them: one ConfChange(AddNode) per
/// initial member at term 1, already committed. Every member of a new cluster starts from the
/// same log, learns the membership by applying it, and the first election then happens at term 2
/// — so response headers carry the same raft terms as etcd's.
/// Creates a new member's WAL: its identity as metadata and, unless it joins a running cluster,
/// the bootstrap membership as the first entries (committed at term 1).
pub(crate) fn create_wal(
    cfg: &ServerConfig,
    disk: Arc<dyn Disk>,
    wal_dir: &Path,
) -> Result<(Wal, crate::wal::WalContents), StartError> {
    let meta = encode_metadata(cfg);
    let mut wal = Wal::create(disk, wal_dir, meta.as_bytes(), WalOptions::default())
        .map_err(|e| StartError::Wal(e.to_string()))?;
    let (entries, hard_state) = if cfg.join_existing {
        (Vec::new(), Default::default())
    } else {
        bootstrap_entries(&cfg.initial_cluster)
    };
    wal.append(&entries, Some(&hard_state))
        .map_err(|e| StartError::Wal(e.to_string()))?;
    wal.sync().map_err(|e| StartError::Wal(e.to_string()))?;
    let contents = crate::wal::WalContents {
        metadata: meta.into_bytes(),
        hard_state,
        snapshot: None,
        entries,
    };
    Ok((wal, contents))
}

fn bootstrap_entries(
    members: &[InitialMember],
) -> (Vec<::raft::eraftpb::Entry>, ::raft::eraftpb::HardState) {
    use ::raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, HardState};
    use protobuf::Message as _;
    let mut sorted = members.to_vec();
    sorted.sort_by_key(|m| m.id);
    let entries: Vec<Entry> = sorted
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::AddNode);
            cc.node_id = m.id;
            cc.context = member_context(m).into();
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.term = 1;
            e.index = i as u64 + 1;
            e.data = cc.write_to_bytes().expect("encode conf change").into();
            e
        })
        .collect();
    let hs = HardState {
        term: 1,
        commit: entries.len() as u64,
        ..Default::default()
    };
    (entries, hs)
}

/// The context of a membership conf change: who the member is, as JSON.
pub fn member_context(m: &InitialMember) -> String {
    serde_json::json!({"id": format!("{:x}", m.id), "name": m.name, "peer_urls": m.peer_urls})
        .to_string()
}

/// A response that a write's apply produces: how to take it out of an [`ApplyResponse`], and
/// where its header is.
trait WriteAnswer: Sized {
    fn from_apply(r: ApplyResponse) -> Result<Self, ApplyResponse>;
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! write_answer {
    ($($variant:ident => $ty:ty),* $(,)?) => {$(
        impl WriteAnswer for $ty {
            fn from_apply(r: ApplyResponse) -> Result<Self, ApplyResponse> {
                match r {
                    ApplyResponse::$variant(x) => Ok(x),
                    other => Err(other),
                }
            }
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}

write_answer!(
    Put => PutResponse,
    DeleteRange => DeleteRangeResponse,
    Txn => TxnResponse,
    Compaction => CompactionResponse,
    LeaseGrant => LeaseGrantResponse,
    LeaseRevoke => LeaseRevokeResponse,
    Alarm => crate::proto::etcdserverpb::AlarmResponse,
);

fn unexpected(r: ApplyResponse) -> RequestError {
    RequestError::Internal(format!(
        "apply answered with the wrong response kind: {r:?}"
    ))
}

/// A write's quota cost, counted in [`Inner::writes_in_flight_bytes`] until it is answered.
struct SpaceReservation<'a> {
    inner: &'a Inner,
    bytes: u64,
}

impl Drop for SpaceReservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let before = self
                .inner
                .writes_in_flight_bytes
                .fetch_sub(self.bytes, Ordering::AcqRel);
            debug_assert!(before >= self.bytes, "in-flight bytes never go negative");
        }
    }
}

/// A request whose client waits for it: registered under its counter until the request is
/// answered, fails or times out (the guard's drop), so that every request made meanwhile carries
/// a floor at most its counter and the log can never refuse it as abandoned.
struct Pending<'a> {
    inner: &'a Inner,
    id: u64,
    floor: u64,
}

impl<'a> Pending<'a> {
    fn new(inner: &'a Inner) -> Result<Pending<'a>, RequestError> {
        let mut pending = inner.pending.lock().expect("pending requests lock");
        // Counter and floor under one lock: a request made later never carries an older floor.
        let id = inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let floor = pending.first().copied().unwrap_or(id);
        if id - floor >= crate::raft::dedup::PENDING_SPAN_MAX {
            return Err(RequestError::TooManyRequests);
        }
        pending.insert(id);
        Ok(Pending { inner, id, floor })
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let removed = self
            .inner
            .pending
            .lock()
            .expect("pending requests lock")
            .remove(&self.id);
        debug_assert!(removed, "a pending request is registered once");
    }
}

/// Lease ids a member chooses are unlikely to collide with another member's (a collision is
/// refused at apply as "lease already exists"): the low 16 bits of the member id in the top 16
/// bits, this start's number in the next 16, then a 32-bit counter.
fn initial_lease_id(member_id: u64, boot: u64) -> u64 {
    ((member_id & 0xffff) << 48) | ((boot & 0xffff) << 32)
}

/// Counts this member's starts in `member/boot`, durably, before anything is proposed. Request
/// ids include it, so a proposal from before a crash that commits after the restart can never be
/// mistaken for a new one with the same id (a clock-based id can repeat when the clock goes back).
fn next_boot_count(disk: &dyn Disk, member_dir: &Path) -> std::io::Result<u64> {
    let path = member_dir.join("boot");
    let tmp = member_dir.join("boot.tmp");
    let last = if disk.exists(&path) {
        let text = disk.read(&path)?;
        String::from_utf8_lossy(&text)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    } else {
        0
    };
    let next = last + 1;
    if disk.exists(&tmp) {
        disk.remove(&tmp)?;
    }
    let mut f = disk.open_append(&tmp)?;
    f.append(format!("{next}\n").as_bytes())?;
    f.sync()?;
    drop(f);
    disk.rename(&tmp, &path)?;
    disk.sync_dir(member_dir)?;
    Ok(next)
}

/// A snapshot received from the leader is recorded in the WAL before it replaces the backend
/// (see `Node::install_snapshot`), and its file is kept until the backend holds it. If the member
/// crashed in between, the WAL starts at a snapshot the backend is behind: install it now.
fn finish_snapshot_install(
    store: &Store,
    contents: &crate::wal::WalContents,
    snap_dir: &Path,
) -> Result<(), StartError> {
    let Some((index, _)) = contents.snapshot else {
        return Ok(());
    };
    let applied = store.consistent_index();
    if applied >= index {
        return Ok(());
    }
    let path = crate::peer::snapshot_path(snap_dir, index);
    if !path.exists() {
        // restore_storage refuses this state with a clear error.
        return Ok(());
    }
    let installed = store
        .install_snapshot(&path)
        .map_err(|e| StartError::Backend(e.to_string()))?;
    if installed != index {
        return Err(StartError::Backend(format!(
            "snapshot file {} holds index {installed}, the WAL expects {index}",
            path.display()
        )));
    }
    tracing::info!(
        index,
        previously_applied = applied,
        "finished installing a snapshot received before a crash"
    );
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// At start no snapshot is being sent or received, and an interrupted install has just been
/// finished: whatever is left in the snapshot directory (exports for a follower, partial or
/// received files a crash left behind) is garbage that would otherwise pile up.
fn remove_stale_snapshot_files(snap_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed a stale snapshot file"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale snapshot file")
                }
            }
        }
    }
}

fn check_writable(dir: &Path) -> Result<(), StartError> {
    let probe = dir.join(".touch");
    std::fs::write(&probe, b"")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|source| StartError::DataDir {
            path: dir.display().to_string(),
            source,
        })
}

fn encode_metadata(cfg: &ServerConfig) -> String {
    let members: Vec<serde_json::Value> = cfg
        .initial_cluster
        .iter()
        .map(|m| serde_json::json!({"name": m.name, "id": format!("{:x}", m.id), "peer_urls": m.peer_urls}))
        .collect();
    serde_json::json!({
        "name": cfg.name,
        "member_id": format!("{:x}", cfg.member_id),
        "cluster_id": format!("{:x}", cfg.cluster_id),
        "initial_cluster": members,
    })
    .to_string()
}

/// Refuses a data dir written by another member: serving it would give this member another
/// member's log and identity.
fn check_metadata(cfg: &ServerConfig, meta: &[u8]) -> Result<(u64, u64), StartError> {
    let v: serde_json::Value = serde_json::from_slice(meta).map_err(|e| {
        StartError::Wal(format!(
            "unreadable WAL metadata in {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let name = v["name"].as_str().unwrap_or_default();
    let member_id = v["member_id"].as_str().unwrap_or_default();
    if name != cfg.name {
        return Err(StartError::WrongMember(format!(
            "data dir {} belongs to member {name:?} (id {member_id}), not to --name {:?}",
            cfg.data_dir.display(),
            cfg.name
        )));
    }
    let parse = |field: &str| {
        v[field]
            .as_str()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                StartError::Wal(format!(
                    "WAL metadata in {} lacks {field}",
                    cfg.data_dir.display()
                ))
            })
    };
    Ok((parse("member_id")?, parse("cluster_id")?))
}
