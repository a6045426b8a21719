//! # The peer transport: raft messages between members over gRPC streams
//!
//! Members talk to each other through one long-lived client stream per peer
//! (`cairnpb.Peer/Send`), carrying batches of raft messages each encoded with protobuf 2 as raft-rs
//! defines them. gRPC streaming was chosen over a framed TCP protocol of our own because it gives
//! HTTP/2 flow control, TLS later at no extra cost, and — under madsim — the same code runs on
//! the simulated network, so the simulator exercises the transport that ships.
//!
//! Sending never blocks the raft node: [`GrpcTransport::send`] puts the message on the peer's
//! bounded queue (`PEER_QUEUE_MAX`) and drops it when the queue is full. Raft tolerates loss — a
//! lost append is retried, a lost heartbeat is replaced by the next — while a blocked node would
//! stall every other member. A task per peer drains its queue in batches (`PEER_BATCH_MAX`),
//! connects lazily and reconnects with capped exponential backoff.
//!
//! The receiving side checks the cluster id in every batch and refuses peers from another cluster
//! with a clear log line, so two clusters started with different tokens never mix their logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::raft::eraftpb::{Message, MessageType};
use protobuf::Message as _;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

use crate::io::{Clock, Disk, Transport};
use crate::proto::cairnpb::peer_client::PeerClient;
use crate::proto::cairnpb::peer_server::{Peer, PeerServer};
use crate::proto::cairnpb::{PeerAck, RaftBatch, SnapshotChunk};
use crate::tls::dial::Dialer;

/// Raft messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;
/// Raft messages sent together in one stream frame.
pub const PEER_BATCH_MAX: usize = 64;
/// How often an idle link sends an empty batch, so that a removed member hears of it.
pub const LINK_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Longest pause between two reconnection attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// First pause after a failed connection.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Largest peer message accepted (a batch of appends); snapshots travel separately.
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Sends raft messages to peers over gRPC client streams.
/// What a member tells a peer it removed from the cluster; the peer then stops, as in etcd.
pub const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";

/// Answers whether a member id was removed from the cluster.
pub type RemovedCheck = Arc<dyn Fn(u64) -> bool + Send + Sync>;

pub struct GrpcTransport {
    /// Set when a peer told this member it was removed from the cluster.
    removed: Arc<tokio::sync::watch::Sender<bool>>,
    /// Where snapshot transfers report their outcome (the local node's inbound queue).
    inbound: Mutex<Option<mpsc::Sender<Message>>>,
    cluster_id: AtomicU64,
    member_id: AtomicU64,
    clock: Arc<dyn Clock>,
    /// Dials peer URLs: plaintext for `http://`, the peer TLS settings for `https://`.
    dialer: Dialer,
    peers: Mutex<BTreeMap<u64, PeerLink>>,
}

struct PeerLink {
    url: String,
    queue: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcTransport {
    pub fn new(
        cluster_id: u64,
        member_id: u64,
        clock: Arc<dyn Clock>,
        dialer: Dialer,
    ) -> Arc<GrpcTransport> {
        Arc::new(GrpcTransport {
            dialer,
            removed: Arc::new(tokio::sync::watch::channel(false).0),
            inbound: Mutex::new(None),
            cluster_id: AtomicU64::new(cluster_id),
            member_id: AtomicU64::new(member_id),
            clock,
            peers: Mutex::new(BTreeMap::new()),
        })
    }

    /// Resolves to `true` once a peer has told this member it was removed from the cluster.
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// The local node's inbound queue, where finished snapshot transfers are reported.
    pub fn set_inbound(&self, inbound: mpsc::Sender<Message>) {
        *self.inbound.lock().expect("inbound lock") = Some(inbound);
    }

    /// Sets the identity recorded in the data dir, which wins over the flags' on a restart.
    pub fn set_identity(&self, cluster_id: u64, member_id: u64) {
        self.cluster_id.store(cluster_id, Ordering::Relaxed);
        self.member_id.store(member_id, Ordering::Relaxed);
    }

    /// Starts (or restarts) the link to peer `id` at `url` (an `http://host:port` peer URL).
    pub fn add_peer(&self, id: u64, url: String) {
        if id == self.member_id.load(Ordering::Relaxed) {
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
        let ends = LinkEnds {
            cluster_id: self.cluster_id.load(Ordering::Relaxed),
            from: self.member_id.load(Ordering::Relaxed),
            to: id,
            url: url.clone(),
        };
        let task = tokio::spawn(run_link(
            ends,
            rx,
            self.clock.clone(),
            self.dialer.clone(),
            self.removed.clone(),
        ));
        let mut peers = self.peers.lock().expect("peer map lock");
        if let Some(old) = peers.insert(
            id,
            PeerLink {
                url,
                queue: tx,
                task,
            },
        ) {
            old.task.abort();
        }
    }

    /// Stops the link to peer `id` (after it left the cluster).
    pub fn remove_peer(&self, id: u64) {
        if let Some(old) = self.peers.lock().expect("peer map lock").remove(&id) {
            old.task.abort();
        }
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        if let Ok(peers) = self.peers.lock() {
            for link in peers.values() {
                link.task.abort();
            }
        }
    }
}

impl Transport for GrpcTransport {
    fn send_snapshot(&self, msg: Message, path: PathBuf) {
        let url = self
            .peers
            .lock()
            .expect("peer map lock")
            .get(&msg.to)
            .map(|l| l.url.clone());
        let inbound = self.inbound.lock().expect("inbound lock").clone();
        let cluster_id = self.cluster_id.load(Ordering::Relaxed);
        let from = self.member_id.load(Ordering::Relaxed);
        let dialer = self.dialer.clone();
        tokio::spawn(async move {
            let to = msg.to;
            let result = match url {
                Some(url) => send_snapshot_file(&dialer, url, cluster_id, from, msg, &path).await,
                None => Err("no link to the peer".to_string()),
            };
            let _ = std::fs::remove_file(&path);
            match &result {
                Ok(bytes) => tracing::info!(peer = %format!("{to:x}"), bytes, "sent a snapshot"),
                Err(e) => {
                    tracing::warn!(peer = %format!("{to:x}"), error = %e, "sending a snapshot failed")
                }
            }
            if let Some(tx) = inbound {
                let mut status = Message::default();
                status.set_msg_type(MessageType::MsgSnapStatus);
                status.from = to;
                status.to = from;
                status.reject = result.is_err();
                let _ = tx.send(status).await;
            }
        });
    }

    fn set_peers(&self, peers: &[(u64, Vec<String>)]) {
        let current: Vec<u64> = self
            .peers
            .lock()
            .expect("peer map lock")
            .keys()
            .copied()
            .collect();
        for id in current {
            if !peers.iter().any(|(p, _)| *p == id) {
                tracing::info!(peer = %format!("{id:x}"), "closing the link to a removed member");
                self.remove_peer(id);
            }
        }
        for (id, urls) in peers {
            let known = self
                .peers
                .lock()
                .expect("peer map lock")
                .get(id)
                .map(|l| l.url.clone());
            if let Some(url) = urls.first() {
                if known.as_ref() != Some(url) {
                    self.add_peer(*id, url.clone());
                }
            }
        }
    }

    fn send(&self, msg: Message) {
        let peers = self.peers.lock().expect("peer map lock");
        match peers.get(&msg.to) {
            Some(link) => {
                if link.queue.try_send(msg).is_err() {
                    tracing::debug!("peer queue full or closed: raft message dropped");
                }
            }
            None => tracing::debug!(to = msg.to, "no link to peer: raft message dropped"),
        }
    }
}

/// Who a link joins: this member and the peer, in one cluster, at the peer's URL.
struct LinkEnds {
    cluster_id: u64,
    from: u64,
    to: u64,
    url: String,
}

/// One peer's sender: connect, stream batches until the stream breaks, back off, reconnect.
async fn run_link(
    ends: LinkEnds,
    mut queue: mpsc::Receiver<Message>,
    clock: Arc<dyn Clock>,
    dialer: Dialer,
    removed: Arc<tokio::sync::watch::Sender<bool>>,
) {
    let LinkEnds {
        cluster_id,
        from,
        to,
        url,
    } = ends;
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        // Connect eagerly and keep probing an idle link (see the loop below): a member removed
        // from the cluster learns it from its peers' refusal even if it never sends on its own,
        // as a learner does not.
        let mut client = match dialer.connect(&url).await.map(PeerClient::new) {
            Ok(c) => c.max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
            Err(e) => {
                tracing::debug!(peer = %format!("{to:x}"), %url, error = %e, "cannot reach peer");
                clock.sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        let (batch_tx, batch_rx) = mpsc::channel::<RaftBatch>(16);
        let stream = tokio_stream::wrappers::ReceiverStream::new(batch_rx);
        let call = tokio::spawn(async move { client.send(stream).await });
        let mut pending: Vec<Message> = Vec::new();
        loop {
            while pending.len() < PEER_BATCH_MAX {
                match queue.try_recv() {
                    Ok(m) => pending.push(m),
                    Err(_) => break,
                }
            }
            let messages = pending
                .drain(..)
                .filter_map(|m| m.write_to_bytes().ok())
                .collect();
            let batch = RaftBatch {
                cluster_id,
                from,
                to,
                messages,
            };
            if batch_tx.send(batch).await.is_err() {
                break;
            }
            backoff = RECONNECT_BACKOFF_MIN;
            tokio::select! {
                m = queue.recv() => match m {
                    Some(m) => pending.push(m),
                    None => return,
                },
                // Nothing to send: an empty batch keeps the link checked.
                _ = clock.sleep(LINK_PROBE_INTERVAL) => {}
            }
        }
        drop(batch_tx);
        match call.await {
            Ok(Err(status)) if status.message() == REMOVED_MESSAGE => {
                tracing::error!(peer = %format!("{to:x}"), "{REMOVED_MESSAGE}");
                let _ = removed.send(true);
                return;
            }
            Ok(Err(status)) => {
                tracing::warn!(peer = %format!("{to:x}"), %url, error = %status.message(), "peer stream closed")
            }
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
        clock.sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// Streams one snapshot file to a peer: the raft message and size first, then the bytes in
/// chunks of [`SNAPSHOT_CHUNK_BYTES`], with at most [`SNAPSHOT_CHUNKS_IN_FLIGHT`] chunks buffered.
async fn send_snapshot_file(
    dialer: &Dialer,
    url: String,
    cluster_id: u64,
    from: u64,
    msg: Message,
    path: &Path,
) -> Result<u64, String> {
    use std::io::Read as _;
    let to = msg.to;
    let raft_message = msg.write_to_bytes().map_err(|e| e.to_string())?;
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let total_bytes = file.metadata().map_err(|e| e.to_string())?.len();
    let mut client = PeerClient::new(dialer.connect(&url).await.map_err(|e| e.to_string())?);
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(SNAPSHOT_CHUNKS_IN_FLIGHT);
    let call = tokio::spawn(async move {
        client
            .snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let mut first = Some(raft_message);
    let mut sent = 0u64;
    loop {
        let mut data = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let n = file.read(&mut data).map_err(|e| e.to_string())?;
        data.truncate(n);
        if n == 0 && first.is_none() {
            break;
        }
        sent += n as u64;
        let chunk = SnapshotChunk {
            cluster_id,
            from,
            to,
            raft_message: first.take().unwrap_or_default(),
            total_bytes,
            data,
        };
        if tx.send(chunk).await.is_err() {
            break;
        }
        if n == 0 {
            break;
        }
    }
    drop(tx);
    match call.await {
        Ok(Ok(_)) if sent == total_bytes => Ok(sent),
        Ok(Ok(_)) => Err(format!("sent {sent} of {total_bytes} bytes")),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Bytes per snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Snapshot chunks buffered between the file reader and the stream.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;
/// Largest snapshot a member accepts (etcd's backend quota ceiling).
pub const SNAPSHOT_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;

/// The file a received snapshot at raft index `index` is stored in until the node installs it.
pub fn snapshot_path(snap_dir: &Path, index: u64) -> PathBuf {
    snap_dir.join(format!("{index:016x}.snap"))
}

/// Creates the directory received snapshots go to, and makes its name durable: a snapshot file
/// inside a directory that a power loss forgets is lost with it.
pub fn prepare_snapshot_dir(disk: &dyn Disk, snap_dir: &Path) -> std::io::Result<()> {
    if disk.exists(snap_dir) {
        return Ok(());
    }
    disk.create_dir_all(snap_dir)?;
    match snap_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => disk.sync_dir(parent),
        _ => Ok(()),
    }
}

/// Gives a received, synced and verified snapshot file (`tmp`) its final name, durably.
///
/// The node is told about the snapshot only after this returns, and it then syncs a WAL record
/// that says "the log starts at this snapshot" before it installs the file. At restart,
/// `Server::start` finishes an interrupted install from the file. So the file's name must be
/// durable before the node can sync that record: a rename is durable only once its directory is
/// synced, and without that sync a power loss could keep the WAL record and lose the file, leaving
/// a member that refuses to start, forever.
pub fn publish_snapshot(disk: &dyn Disk, tmp: &Path, final_path: &Path) -> std::io::Result<()> {
    disk.rename(tmp, final_path)?;
    let dir = final_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    disk.sync_dir(dir)
}

/// The generated server type: madsim-tonic's carries an interceptor parameter, tonic's does not.
#[cfg(not(madsim))]
pub type PeerServerOf = PeerServer<PeerService>;
#[cfg(madsim)]
pub type PeerServerOf = PeerServer<PeerService, tonic::codegen::IdentityInterceptor>;

/// The receiving side: checks the cluster id and hands raft messages to the local node.
pub struct PeerService {
    cluster_id: u64,
    member_id: u64,
    inbound: mpsc::Sender<Message>,
    snap_dir: PathBuf,
    is_removed: RemovedCheck,
}

impl PeerService {
    pub fn new(
        cluster_id: u64,
        member_id: u64,
        inbound: mpsc::Sender<Message>,
        snap_dir: PathBuf,
        is_removed: RemovedCheck,
    ) -> PeerServerOf {
        PeerServer::new(PeerService {
            cluster_id,
            member_id,
            inbound,
            snap_dir,
            is_removed,
        })
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }
}

impl PeerService {
    fn check_cluster(&self, cluster_id: u64, from: u64) -> Result<(), tonic::Status> {
        if cluster_id == self.cluster_id {
            return Ok(());
        }
        tracing::warn!(
            local_cluster = %format!("{:x}", self.cluster_id),
            remote_cluster = %format!("{cluster_id:x}"),
            from = %format!("{from:x}"),
            "rejected a peer from another cluster (check --initial-cluster-token and --initial-cluster)"
        );
        Err(tonic::Status::permission_denied(format!(
            "cluster ID mismatch: local {:x}, remote {cluster_id:x}",
            self.cluster_id
        )))
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    /// Receives a snapshot into `snap_dir`, verifies it, and only then hands the MsgSnapshot to
    /// the node, which installs the file when raft tells it to.
    async fn snapshot(
        &self,
        request: tonic::Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<PeerAck>, tonic::Status> {
        use std::io::Write as _;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::invalid_argument("empty snapshot stream"))?;
        self.check_cluster(first.cluster_id, first.from)?;
        let msg = Message::parse_from_bytes(&first.raft_message)
            .map_err(|e| tonic::Status::invalid_argument(format!("bad raft message: {e}")))?;
        if msg.get_msg_type() != MessageType::MsgSnapshot || first.total_bytes > SNAPSHOT_BYTES_MAX
        {
            return Err(tonic::Status::invalid_argument(
                "not a snapshot message, or too large",
            ));
        }
        let index = msg.get_snapshot().get_metadata().index;
        // The snapshot directory is on the real file system in both builds, because LMDB's
        // install reads the file with std::fs; the Disk seam is used for the naming steps, whose
        // durability the simulated disk's tests check (sim/src/disk.rs).
        let disk = crate::io::FsDisk;
        prepare_snapshot_dir(&disk, &self.snap_dir)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let final_path = snapshot_path(&self.snap_dir, index);
        let tmp = final_path.with_extension("tmp");
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut received = first.data.len() as u64;
        file.write_all(&first.data)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        while let Some(chunk) = stream.message().await? {
            received += chunk.data.len() as u64;
            if received > first.total_bytes {
                return Err(tonic::Status::invalid_argument(
                    "snapshot larger than announced",
                ));
            }
            file.write_all(&chunk.data)
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
        }
        if received != first.total_bytes {
            return Err(tonic::Status::invalid_argument(format!(
                "snapshot truncated: {received} of {} bytes",
                first.total_bytes
            )));
        }
        file.sync_all()
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        drop(file);
        if let Err(e) = crate::mvcc::verify_snapshot(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(tonic::Status::data_loss(e.to_string()));
        }
        publish_snapshot(&disk, &tmp, &final_path)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        tracing::info!(index, bytes = received, "received a snapshot");
        self.inbound
            .send(msg)
            .await
            .map_err(|_| tonic::Status::unavailable("member stopping"))?;
        Ok(tonic::Response::new(PeerAck {}))
    }

    async fn send(
        &self,
        request: tonic::Request<tonic::Streaming<RaftBatch>>,
    ) -> Result<tonic::Response<PeerAck>, tonic::Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            if batch.cluster_id != self.cluster_id {
                tracing::warn!(
                    local_cluster = %format!("{:x}", self.cluster_id),
                    remote_cluster = %format!("{:x}", batch.cluster_id),
                    from = %format!("{:x}", batch.from),
                    "rejected a peer from another cluster (check --initial-cluster-token and --initial-cluster)"
                );
                return Err(tonic::Status::permission_denied(format!(
                    "cluster ID mismatch: local {:x}, remote {:x}",
                    self.cluster_id, batch.cluster_id
                )));
            }
            if (self.is_removed)(batch.from) {
                return Err(tonic::Status::failed_precondition(REMOVED_MESSAGE));
            }
            if batch.to != self.member_id {
                return Err(tonic::Status::failed_precondition(format!(
                    "message for member {:x} reached member {:x}",
                    batch.to, self.member_id
                )));
            }
            for bytes in batch.messages {
                match Message::parse_from_bytes(&bytes) {
                    Ok(m) => {
                        if self.inbound.try_send(m).is_err() {
                            tracing::debug!("inbound raft queue full: message dropped");
                        }
                    }
                    Err(e) => {
                        return Err(tonic::Status::invalid_argument(format!(
                            "bad raft message: {e}"
                        )))
                    }
                }
            }
        }
        Ok(tonic::Response::new(PeerAck {}))
    }
}
