//! The Maintenance service: Status (clients call it first to pick an endpoint), alarms, hashes,
//! defragment, leader transfer, and backend snapshots (`etcdctl snapshot save`).
//!
//! A snapshot is what etcd streams: the backend file, then its SHA-256. cairn's backend is LMDB,
//! so the file is a compacted LMDB copy (taken in a read transaction: writers go on), streamed in
//! [`SNAPSHOT_CHUNK_BYTES`] messages that say how many bytes remain, then one 32-byte message
//! with the digest. `cairnctl snapshot restore` turns such a file into a new member's data dir.

use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::Digest as _;
use tokio::sync::{mpsc, Semaphore};
use tonic::{Request, Response, Status};

use crate::mvcc::CLIENT_SNAPSHOT_PREFIX;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{SnapshotResponse, StatusRequest, StatusResponse};
use crate::server::error::RequestError;
use crate::server::Server;

/// Bytes of backend per Snapshot message (etcd's size).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// Snapshot streams served at once: each holds a compacted copy of the backend on disk.
pub const SNAPSHOT_STREAMS_MAX: usize = 2;
/// Snapshot messages read ahead of a slow client.
pub const SNAPSHOT_MESSAGES_IN_FLIGHT: usize = 16;

pub struct MaintenanceService {
    server: Server,
    snapshots: Arc<Semaphore>,
    next_snapshot: AtomicU64,
}

impl MaintenanceService {
    pub fn new(server: Server) -> Self {
        MaintenanceService {
            server,
            snapshots: Arc::new(Semaphore::new(SNAPSHOT_STREAMS_MAX)),
            next_snapshot: AtomicU64::new(0),
        }
    }
}

/// Sends the file at `path` as Snapshot messages, then its SHA-256. Stops quietly if the client
/// went away.
async fn stream_file(
    path: &std::path::Path,
    tx: &mpsc::Sender<Result<SnapshotResponse, Status>>,
) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("snapshot: {e}"));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut digest = sha2::Sha256::new();
    let mut sent = 0u64;
    while sent < size {
        let mut blob = vec![0u8; (size - sent).min(SNAPSHOT_CHUNK_BYTES as u64) as usize];
        file.read_exact(&mut blob).map_err(io)?;
        sent += blob.len() as u64;
        digest.update(&blob);
        let msg = SnapshotResponse {
            header: None,
            remaining_bytes: size - sent,
            blob,
            version: String::new(),
        };
        if tx.send(Ok(msg)).await.is_err() {
            return Ok(());
        }
    }
    let last = SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: digest.finalize().to_vec(),
        version: String::new(),
    };
    let _ = tx.send(Ok(last)).await;
    Ok(())
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.server.status()))
    }

    /// etcd's Alarm: list, raise or clear alarms (see `server::quota`). cairn acts on NOSPACE
    /// only, so a client may raise no other alarm.
    async fn alarm(
        &self,
        request: Request<crate::proto::etcdserverpb::AlarmRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::AlarmResponse>, Status> {
        use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmType};
        let req = request.into_inner();
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) | Ok(AlarmAction::Deactivate) => {}
            Ok(AlarmAction::Activate) if req.alarm == AlarmType::Nospace as i32 => {}
            Ok(AlarmAction::Activate) => {
                return Err(Status::unimplemented("cairn raises only the NOSPACE alarm"))
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown alarm action {}",
                    req.action
                )))
            }
        }
        Ok(Response::new(self.server.alarm(req).await?))
    }

    /// etcd rewrites its bolt file here to reuse the space freed by compaction. LMDB reuses freed
    /// pages by itself (the "in use" size of Status drops after a compaction, and later writes
    /// fill the free pages before the file grows), so there is nothing to rewrite: the call
    /// finishes what a compaction still has to delete and commits it ([`crate::mvcc::Store::defragment`]),
    /// and the file keeps its size. The space quota counts pages in use, not the file (see
    /// `server::quota`), so after a compaction frees room the NOSPACE alarm can be disarmed with
    /// or without a defragmentation.
    async fn defragment(
        &self,
        _request: Request<crate::proto::etcdserverpb::DefragmentRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::DefragmentResponse>, Status> {
        let store = self.server.store().clone();
        // Off the async workers, like the snapshot copy: a large compaction's rest may take a
        // while. (Inline under the simulator, which has no blocking pool.)
        #[cfg(not(madsim))]
        let done = tokio::task::spawn_blocking(move || store.defragment())
            .await
            .map_err(|e| Status::internal(format!("defragment: {e}")))?;
        #[cfg(madsim)]
        let done = store.defragment();
        done.map_err(RequestError::from)?;
        // etcd answers without a header.
        Ok(Response::new(
            crate::proto::etcdserverpb::DefragmentResponse { header: None },
        ))
    }

    /// A checksum of the whole backend: every key revision and every metadata blob but the
    /// applied index, so members that applied the same entries answer the same hash.
    async fn hash(
        &self,
        _request: Request<crate::proto::etcdserverpb::HashRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::HashResponse>, Status> {
        let store = self.server.store();
        let hash = store.hash_backend().map_err(RequestError::from)?;
        let header = Some(self.server.header(store.current_revision()));
        Ok(Response::new(crate::proto::etcdserverpb::HashResponse {
            header,
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<crate::proto::etcdserverpb::HashKvRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::HashKvResponse>, Status> {
        Ok(Response::new(
            self.server.hash_kv(request.into_inner().revision)?,
        ))
    }

    async fn move_leader(
        &self,
        request: Request<crate::proto::etcdserverpb::MoveLeaderRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::MoveLeaderResponse>, Status> {
        self.server
            .move_leader(request.into_inner().target_id)
            .await?;
        // etcd answers without a header.
        Ok(Response::new(
            crate::proto::etcdserverpb::MoveLeaderResponse { header: None },
        ))
    }

    async fn downgrade(
        &self,
        _request: Request<crate::proto::etcdserverpb::DowngradeRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("downgrade is not implemented yet"))
    }

    type SnapshotStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<crate::proto::etcdserverpb::SnapshotResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn snapshot(
        &self,
        _request: Request<crate::proto::etcdserverpb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let permit = self.snapshots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many snapshots in progress (at most {SNAPSHOT_STREAMS_MAX})"
            ))
        })?;
        let store = self.server.store().clone();
        let n = self.next_snapshot.fetch_add(1, Ordering::Relaxed);
        let path = store.dir().join(format!("{CLIENT_SNAPSHOT_PREFIX}{n}.tmp"));
        // The copy blocks for as long as the backend takes to read: off the async workers. (The
        // simulator has no blocking pool; there it runs inline.)
        #[cfg(not(madsim))]
        let copy = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || store.copy_to(&path)).await
        };
        #[cfg(madsim)]
        let copy: Result<_, std::convert::Infallible> = Ok(store.copy_to(&path));
        match copy {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = std::fs::remove_file(&path);
                return Err(RequestError::from(e).into());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(Status::internal(format!("snapshot: {e}")));
            }
        }
        let (tx, rx) = mpsc::channel(SNAPSHOT_MESSAGES_IN_FLIGHT);
        tokio::spawn(async move {
            let _permit = permit;
            let result = stream_file(&path, &tx).await;
            let _ = std::fs::remove_file(&path);
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}
