//! `snapshot restore` and `snapshot status`: what a backend snapshot holds, and a new member's
//! data dir made from one.
//!
//! A snapshot (Maintenance.Snapshot, `etcdctl snapshot save`) is a compacted copy of the LMDB
//! backend followed by its SHA-256. Restoring it, as etcd does, starts a *new* cluster from the
//! old one's keys: the digest is checked, the copy becomes `<data-dir>/member/db/data.mdb`, the
//! old cluster's membership and applied index are dropped from it, and a new WAL holds the new
//! member's identity and the new cluster's bootstrap membership (from `--initial-cluster` and
//! `--initial-cluster-token`, exactly as `cairn` derives them). Keys keep their revisions, leases
//! stay. Every member of the new cluster is restored from the same file with its own `--name`
//! and then started with the same flags.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest as _;

use super::{create_wal, membership, ServerConfig};
use crate::io::FsDisk;
use crate::mvcc::Store;

/// A snapshot file carries a digest when its length is a whole number of 512-byte blocks plus
/// the 32 bytes of a SHA-256 (the backend file itself is a whole number of pages).
const HASH_BYTES: u64 = 32;
const BLOCK_BYTES: u64 = 512;
/// Copy buffer size.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Why a restore or status failed. Texts follow etcdctl's.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("data-dir {0:?} exists")]
    DataDirExists(PathBuf),
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    #[error("expected sha256 {expected:?}, got {got:?}")]
    HashMismatch { expected: Vec<u8>, got: Vec<u8> },
    /// A file operation failed (`op` is Go's name for it: open, stat, read, ...).
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Backend(String),
}

/// What a snapshot holds (`etcdctl snapshot status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32 of the backend's records (see `Store::hash_backend`).
    pub hash: u32,
    pub revision: i64,
    /// Key revisions plus metadata records.
    pub total_keys: u64,
    /// The file's length in bytes.
    pub total_size: u64,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the backend part of `snapshot` to `dest`, checking the trailing digest unless
/// `skip_hash_check` (a file without one is refused unless `skip_hash_check`).
fn copy_backend(snapshot: &Path, dest: &Path, skip_hash_check: bool) -> Result<(), RestoreError> {
    let mut file = std::fs::File::open(snapshot).map_err(io_err(snapshot, "open"))?;
    let size = file.metadata().map_err(io_err(snapshot, "stat"))?.len();
    let has_hash = size % BLOCK_BYTES == HASH_BYTES;
    if !has_hash && !skip_hash_check {
        return Err(RestoreError::MissingHash);
    }
    let body = if has_hash { size - HASH_BYTES } else { size };
    let mut out = std::fs::File::create(dest).map_err(io_err(dest, "open"))?;
    let mut digest = sha2::Sha256::new();
    let mut left = body;
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    while left > 0 {
        let n = left.min(COPY_CHUNK_BYTES as u64) as usize;
        file.read_exact(&mut buf[..n])
            .map_err(io_err(snapshot, "read"))?;
        digest.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(dest, "write"))?;
        left -= n as u64;
    }
    if has_hash && !skip_hash_check {
        let mut stored = vec![0u8; HASH_BYTES as usize];
        file.read_exact(&mut stored)
            .map_err(io_err(snapshot, "read"))?;
        let computed = digest.finalize().to_vec();
        if computed != stored {
            return Err(RestoreError::HashMismatch {
                expected: stored,
                got: computed,
            });
        }
    }
    out.sync_all().map_err(io_err(dest, "sync"))?;
    Ok(())
}

/// Builds the data dir of member `cfg.name` of a new cluster from `snapshot`. `cfg` is what
/// `cairn` derives from the same `--name`, `--initial-cluster`, `--initial-cluster-token` and
/// `--initial-advertise-peer-urls`; `cfg.data_dir` must not exist yet. On failure nothing is left
/// behind.
pub fn restore(
    snapshot: &Path,
    cfg: &ServerConfig,
    skip_hash_check: bool,
) -> Result<SnapshotStatus, RestoreError> {
    let data_dir = &cfg.data_dir;
    if data_dir.exists() {
        return Err(RestoreError::DataDirExists(data_dir.clone()));
    }
    let result = build(snapshot, cfg, skip_hash_check);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(data_dir);
    }
    result
}

fn build(
    snapshot: &Path,
    cfg: &ServerConfig,
    skip_hash_check: bool,
) -> Result<SnapshotStatus, RestoreError> {
    let member_dir = cfg.data_dir.join("member");
    let db_dir = member_dir.join("db");
    std::fs::create_dir_all(&db_dir).map_err(io_err(&db_dir, "mkdir"))?;
    copy_backend(snapshot, &db_dir.join("data.mdb"), skip_hash_check)?;
    let status = {
        let store = open_store(&db_dir, cfg.quota_backend_bytes)?;
        store
            .reset_for_new_cluster(&[
                crate::raft::CONF_STATE_META,
                membership::MEMBERS_META,
                membership::REMOVED_META,
                crate::raft::dedup::META_PREFIX,
            ])
            .map_err(|e| RestoreError::Backend(e.to_string()))?;
        status_of(&store, snapshot)?
    };
    create_wal(cfg, Arc::new(FsDisk), &cfg.wal_dir())
        .map_err(|e| RestoreError::Backend(e.to_string()))?;
    Ok(status)
}

fn open_store(db_dir: &Path, quota_bytes: u64) -> Result<Store, RestoreError> {
    let map_size = super::quota::map_size_bytes(quota_bytes, super::quota::data_file_bytes(db_dir));
    Store::open(db_dir, map_size).map_err(|e| RestoreError::Backend(e.to_string()))
}

fn status_of(store: &Store, snapshot: &Path) -> Result<SnapshotStatus, RestoreError> {
    let backend = |e: crate::mvcc::MvccError| RestoreError::Backend(e.to_string());
    Ok(SnapshotStatus {
        hash: store.hash_backend().map_err(backend)?,
        revision: store.current_revision(),
        total_keys: store.record_count().map_err(backend)?,
        total_size: std::fs::metadata(snapshot)
            .map_err(io_err(snapshot, "stat"))?
            .len(),
    })
}

/// Reads what a snapshot file holds, through a scratch copy under `scratch_dir` (removed after).
pub fn status(snapshot: &Path, scratch_dir: &Path) -> Result<SnapshotStatus, RestoreError> {
    std::fs::metadata(snapshot).map_err(io_err(snapshot, "stat"))?;
    let dir = scratch_dir.join(format!("cairn-snapshot-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir, "mkdir"))?;
    let result = (|| {
        copy_backend(snapshot, &dir.join("data.mdb"), true)?;
        let store = open_store(&dir, 0)?;
        status_of(&store, snapshot)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
