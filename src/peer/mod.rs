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

use ::raft::eraftpb::Message;
use protobuf::Message as _;
use tokio::sync::mpsc;

use crate::io::{Clock, Transport};
use crate::proto::cairnpb::peer_client::PeerClient;
use crate::proto::cairnpb::peer_server::{Peer, PeerServer};
use crate::proto::cairnpb::{PeerAck, RaftBatch};

/// Raft messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;
/// Raft messages sent together in one stream frame.
pub const PEER_BATCH_MAX: usize = 64;
/// Longest pause between two reconnection attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// First pause after a failed connection.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Largest peer message accepted (a batch of appends); snapshots travel separately.
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Sends raft messages to peers over gRPC client streams.
pub struct GrpcTransport {
    cluster_id: AtomicU64,
    member_id: AtomicU64,
    clock: Arc<dyn Clock>,
    peers: Mutex<BTreeMap<u64, PeerLink>>,
}

struct PeerLink {
    url: String,
    queue: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcTransport {
    pub fn new(cluster_id: u64, member_id: u64, clock: Arc<dyn Clock>) -> Arc<GrpcTransport> {
        Arc::new(GrpcTransport {
            cluster_id: AtomicU64::new(cluster_id),
            member_id: AtomicU64::new(member_id),
            clock,
            peers: Mutex::new(BTreeMap::new()),
        })
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
        let task = tokio::spawn(run_link(
            self.cluster_id.load(Ordering::Relaxed),
            self.member_id.load(Ordering::Relaxed),
            id,
            url.clone(),
            rx,
            self.clock.clone(),
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

/// One peer's sender: connect, stream batches until the stream breaks, back off, reconnect.
async fn run_link(
    cluster_id: u64,
    from: u64,
    to: u64,
    url: String,
    mut queue: mpsc::Receiver<Message>,
    clock: Arc<dyn Clock>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        // Wait for something to send before connecting, so an idle link costs nothing.
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut client = match PeerClient::connect(url.clone()).await {
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
        let mut pending = vec![first];
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
            match queue.recv().await {
                Some(m) => pending.push(m),
                None => return,
            }
        }
        drop(batch_tx);
        match call.await {
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
}

impl PeerService {
    pub fn new(cluster_id: u64, member_id: u64, inbound: mpsc::Sender<Message>) -> PeerServerOf {
        PeerServer::new(PeerService {
            cluster_id,
            member_id,
            inbound,
        })
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
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
