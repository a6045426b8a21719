//! [`Store`]: LMDB plus the key index, with one writer and many readers.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use prost::Message;

use super::index::{KeyIndex, KeySpan};
use super::revision::Revision;
use super::{MvccError, RangeOptions, RangeResult};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

/// LMDB databases in the environment: `kv` and `meta`.
const DATABASES_MAX: u32 = 2;
/// LMDB reader slots: concurrent read transactions (reads, watch replay, snapshots).
const READERS_MAX: u32 = 1024;
/// The map size is rounded up to this, a multiple of every common OS page size.
const MAP_SIZE_ALIGN_BYTES: usize = 64 * 1024;
/// Revisions examined per LMDB write transaction while physically compacting, so that one
/// compaction never holds the write lock, or grows a transaction, without bound.
const COMPACTION_BATCH_MAX: usize = 10_000;
/// Applied entries the store holds in memory before it commits them to LMDB in one transaction
/// (etcd's backend batch limit), whatever [`Store::commit`]'s caller does.
pub const BATCH_ENTRIES_MAX: usize = 10_000;
/// Bytes of uncommitted records (keys and values) that make the store commit its batch, so that
/// memory stays bounded however large the entries are.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Upper bound on the events one [`Store::events_between`] call returns (plus the rest of the
/// revision it stops in, which a txn-ops limit bounds).
pub const EVENTS_BETWEEN_MAX: usize = 10_000;

/// `meta` key of the consistent index (u64, big-endian).
const META_CONSISTENT_INDEX: &str = "cairn/consistent_index";
/// `meta` key of the compaction floor readers see (i64, big-endian; absent = never compacted).
const META_COMPACT_REV: &str = "cairn/compact_rev";
/// `meta` key of the last compaction whose physical deletion finished.
const META_FINISHED_COMPACT_REV: &str = "cairn/finished_compact_rev";
/// The directory, inside the store's, where [`Store::install_snapshot`] builds the new backend
/// before it takes the place of the current one; [`Store::open`] removes one a crash left behind.
pub const INSTALL_DIR: &str = "install";
/// The name LMDB gives its data file in an environment's directory.
const LMDB_DATA_FILE: &str = "data.mdb";
/// How long an install waits for readers of the old backend to finish. Readers hold it for one
/// synchronous read, so this is only reached if one is stuck (the install then fails, and the
/// node stops rather than hang).
const BACKEND_CLOSE_WAIT: Duration = Duration::from_secs(60);
/// Prefix of the named blobs of [`WriteTxn::meta_put`] / [`Store::meta_get`].
const META_BLOB_PREFIX: &str = "blob/";

/// Name prefix of the backend copies the Maintenance service streams to clients, kept in the
/// store's directory while they are sent; [`Store::open`] removes any a crash left behind.
pub const CLIENT_SNAPSHOT_PREFIX: &str = "client-snapshot-";

/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8] = b"CAIRNSNAP1";
/// Largest key or value a snapshot record may carry (LMDB's own limits are far below).
pub const SNAPSHOT_RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What [`read_snapshot`] calls with each record: tag (1 = kv, 2 = meta), key, value.
pub type SnapshotRecordFn<'a> = dyn FnMut(u8, &[u8], &[u8]) -> Result<(), MvccError> + 'a;

/// Reads a snapshot file written by [`Store::export_snapshot`] front to back, calling
/// `record(tag, key, value)` for each record (tag 1 = kv, 2 = meta), and checks its framing and
/// checksum as it goes. Memory stays at one record however large the file. The checksum is at
/// the end, so the records are only known good once this returns `Ok`: a caller that acts on them
/// must be able to undo that (install does it in one LMDB transaction it commits only then).
/// Returns the file's length in bytes.
pub fn read_snapshot(
    reader: impl std::io::Read,
    record: &mut SnapshotRecordFn<'_>,
) -> Result<u64, MvccError> {
    use std::io::Read as _;
    let bad = |why: &str| MvccError::Corrupt(format!("snapshot: {why}"));
    let mut r = std::io::BufReader::new(reader);
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    // Reads exactly buf.len() bytes into the checksum; `what` names the damage if the file ends.
    let mut take = |r: &mut std::io::BufReader<_>, buf: &mut [u8], what: &str| {
        r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad(what),
            _ => MvccError::from(e),
        })?;
        crc.update(buf);
        len += buf.len() as u64;
        Ok::<(), MvccError>(())
    };
    let mut magic = [0u8; SNAPSHOT_MAGIC.len()];
    take(&mut r, &mut magic, "not a cairn snapshot")?;
    if magic != SNAPSHOT_MAGIC {
        return Err(bad("not a cairn snapshot"));
    }
    let (mut key, mut value) = (Vec::new(), Vec::new());
    loop {
        let mut tag = [0u8; 1];
        take(&mut r, &mut tag, "truncated record")?;
        if tag[0] == 0 {
            break;
        }
        let mut lens = [0u8; 8];
        take(&mut r, &mut lens, "bad record header")?;
        if tag[0] > 2 {
            return Err(bad("bad record header"));
        }
        let klen = u32::from_le_bytes(lens[..4].try_into().expect("4 bytes")) as usize;
        let vlen = u32::from_le_bytes(lens[4..].try_into().expect("4 bytes")) as usize;
        if klen > SNAPSHOT_RECORD_BYTES_MAX || vlen > SNAPSHOT_RECORD_BYTES_MAX {
            return Err(bad("record length out of bounds"));
        }
        key.resize(klen, 0);
        value.resize(vlen, 0);
        take(&mut r, &mut key, "record length out of bounds")?;
        take(&mut r, &mut value, "record length out of bounds")?;
        record(tag[0], &key, &value)?;
    }
    let computed = crc.finalize();
    let mut stored = [0u8; 4];
    let n = read_full(&mut r, &mut stored)?;
    let mut extra = [0u8; 1];
    if n < 4 || read_full(&mut r, &mut extra)? != 0 {
        // The end marker must be followed by exactly the checksum.
        return Err(bad(if n < 4 {
            "truncated record"
        } else {
            "data after the end marker"
        }));
    }
    if u32::from_le_bytes(stored) != computed {
        return Err(bad("checksum mismatch"));
    }
    Ok(len + 4)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> Result<usize, MvccError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Checks a snapshot file's framing and checksum without keeping its records.
pub fn verify_snapshot(path: &Path) -> Result<u64, MvccError> {
    read_snapshot(std::fs::File::open(path)?, &mut |_, _, _| Ok(()))
}

/// The part of the store readers and the writer share behind one lock.
struct State {
    index: KeyIndex,
    /// The newest revision; 1 on a fresh store.
    current_rev: i64,
    /// The compaction floor; -1 when the store was never compacted (etcd's `compactMainRev`,
    /// which makes `compact(0)` on a fresh store succeed once, as in etcd).
    compact_rev: i64,
    /// Raft index of the last applied entry.
    consistent_index: u64,
    /// Applied writes not yet committed to LMDB. Replaced by an empty batch once committed;
    /// readers that took the old one keep reading from it.
    pending: Arc<Pending>,
}

/// The records of applied entries that LMDB does not hold yet (see the module docs on
/// durability). Every revision in it is newer than every revision LMDB holds, since nothing
/// reorders revisions and every operation that rewrites older ones (compaction, installs)
/// commits the batch first. Records are only ever added to a batch, never changed or removed:
/// a reader that found a revision in the index finds it here or in LMDB.
#[derive(Default)]
struct Pending {
    /// Key revisions: the LMDB key of a revision and its encoded value.
    kv: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// `meta` records by their LMDB name: `Some` writes one, `None` removes it.
    meta: RwLock<BTreeMap<String, Option<Vec<u8>>>>,
    /// Entries applied into this batch.
    entries: AtomicUsize,
    /// Bytes of the records' keys and values.
    bytes: AtomicUsize,
}

impl Pending {
    fn kv(&self) -> RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.kv.read().expect("pending kv lock poisoned")
    }

    fn meta(&self) -> RwLockReadGuard<'_, BTreeMap<String, Option<Vec<u8>>>> {
        self.meta.read().expect("pending meta lock poisoned")
    }

    fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Acquire) == 0
    }
}

/// One LMDB environment and its databases. Cheap to clone (the environment is reference
/// counted); the environment closes when its last clone, and its last transaction, is gone.
#[derive(Clone)]
struct Backend {
    env: Env<WithoutTls>,
    kv: Database<'static, Bytes, Bytes>,
    meta: Database<'static, Str, Bytes>,
}

impl Backend {
    /// Opens (creating if needed) the LMDB environment in `dir`.
    fn open(dir: &Path, map_size_bytes: usize) -> Result<Backend, MvccError> {
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(map_size_bytes)
            .max_dbs(DATABASES_MAX)
            .max_readers(READERS_MAX);
        // SAFETY: NO_META_SYNC keeps LMDB crash-safe: every commit writes and fdatasyncs its data
        // pages before it writes the meta page that points at them, and only that meta page's
        // sync is deferred (to the next commit's, or `force_sync`). A power loss may therefore
        // undo the newest commit, never tear one: the file opens at an older, whole commit, and
        // the WAL, released only up to a synced backend, replays the rest (see the module docs).
        // NO_SYNC would not be safe: without any sync, the kernel may write the new meta page
        // before the data pages it points to. The directory is private to this store: nothing
        // else maps or modifies the file while it is open.
        let env = unsafe {
            options.flags(EnvFlags::NO_META_SYNC);
            options.open(dir)?
        };
        let wtxn = env.write_txn()?;
        let (kv, meta) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, heed::Error> {
                let kv = opener.create_database::<Bytes, Bytes>(wtxn, Some("kv"))?;
                let meta = opener.create_database::<Str, Bytes>(wtxn, Some("meta"))?;
                Ok(CommitOrAbort::<_, ()>::Commit((kv, meta)))
            })?
            .unwrap_commit();
        Ok(Backend { env, kv, meta })
    }

    /// Closes the environment, waiting for the transactions and clones other threads hold (every
    /// reader keeps them for one short, synchronous read). LMDB allows one environment per file
    /// in a process, so the file can be replaced and opened again only after this.
    fn close(self) -> Result<(), MvccError> {
        let closing = self.env.prepare_for_closing();
        if closing.wait_timeout(BACKEND_CLOSE_WAIT) {
            Ok(())
        } else {
            Err(MvccError::Storage(format!(
                "the backend was still in use {BACKEND_CLOSE_WAIT:?} after it was closed"
            )))
        }
    }
}

/// The revisioned key-value store. Shared as `Arc<Store>`: any number of concurrent readers, and
/// one writer at a time (the apply task), serialized by an internal mutex.
///
/// Installing a snapshot replaces the LMDB environment (see [`Store::install_snapshot`]): it
/// holds `writer` and the `backend` lock while it waits for the old environment's clones to go.
/// So an operation clones the backend once (see [`Store::backend`]) and calls no other `Store`
/// method while it holds the clone; the `state` lock is free then (only writers, which hold
/// `writer`, take it for writing), so every holder of a clone finishes.
pub struct Store {
    dir: PathBuf,
    /// The map size every environment of this store is opened with.
    map_size_bytes: usize,
    /// The current LMDB environment; `None` only if replacing it failed (the node stops then).
    backend: RwLock<Option<Backend>>,
    state: RwLock<State>,
    writer: Mutex<()>,
    /// Named blobs waiting for the next commit that records a raft index (see
    /// [`Store::stage_meta`]).
    staged: Mutex<Vec<(String, Option<Vec<u8>>)>>,
    /// The physical deletion of the last compaction, while it is under way.
    purge_job: Mutex<Option<PurgeJob>>,
}

/// A compaction's physical deletion, run in bounded steps (see [`Store::purge_step`]).
#[derive(Clone)]
struct PurgeJob {
    /// The compaction floor.
    at_rev: i64,
    /// The revisions at or below the floor that stay.
    keep: Arc<HashSet<Revision>>,
    /// The LMDB key the next step starts at.
    cursor: Vec<u8>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state_read();
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("current_rev", &st.current_rev)
            .field("compact_rev", &st.compact_rev)
            .field("consistent_index", &st.consistent_index)
            .field("keys", &st.index.len())
            .finish()
    }
}

fn corrupt(what: impl fmt::Display) -> MvccError {
    MvccError::Corrupt(what.to_string())
}

fn blob_key(name: &str) -> String {
    format!("{META_BLOB_PREFIX}{name}")
}

fn read_u64(
    meta: &Database<'_, Str, Bytes>,
    txn: &RoTxn,
    name: &str,
) -> Result<Option<u64>, MvccError> {
    match meta.get(txn, name)? {
        None => Ok(None),
        Some(b) => {
            let a: [u8; 8] = b
                .try_into()
                .map_err(|_| corrupt(format!("meta {name}: {b:02x?}")))?;
            Ok(Some(u64::from_be_bytes(a)))
        }
    }
}

fn read_i64(
    meta: &Database<'_, Str, Bytes>,
    txn: &RoTxn,
    name: &str,
) -> Result<Option<i64>, MvccError> {
    Ok(read_u64(meta, txn, name)?.map(|v| v as i64))
}

/// Resolves the revision to read at, in etcd's order of checks: a future revision is refused
/// first, then 0 or a negative revision means `current`, then a compacted one is refused.
fn read_revision(requested: i64, current: i64, compact: i64) -> Result<i64, MvccError> {
    if requested > current {
        return Err(MvccError::FutureRevision);
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compact {
        return Err(MvccError::Compacted);
    }
    Ok(rev)
}

/// Reads the values of put revisions the index returned, from the uncommitted batch or LMDB,
/// checking that they agree with the index.
fn fetch(
    kv: &Database<'_, Bytes, Bytes>,
    txn: &RoTxn,
    pending: &Pending,
    revs: &[Revision],
) -> Result<Vec<KeyValue>, MvccError> {
    let mut out = Vec::with_capacity(revs.len());
    let batch = pending.kv();
    for rev in revs {
        let key = rev.to_key(false);
        let bytes = match batch.get(&key) {
            Some(v) => v.as_slice(),
            None => kv.get(txn, &key)?.ok_or_else(|| {
                corrupt(format!("revision {rev} is in the index but not in LMDB"))
            })?,
        };
        let value = KeyValue::decode(bytes).map_err(|e| corrupt(format!("value at {rev}: {e}")))?;
        if value.mod_revision != rev.main {
            return Err(corrupt(format!(
                "value at {rev} has mod_revision {}",
                value.mod_revision
            )));
        }
        out.push(value);
    }
    Ok(out)
}

/// Whether `rev` was dropped by a compaction whose physical deletion is still under way.
fn is_doomed(doomed: &Option<(i64, Arc<HashSet<Revision>>)>, rev: Revision) -> bool {
    doomed
        .as_ref()
        .is_some_and(|(floor, keep)| rev.main <= *floor && !keep.contains(&rev))
}

/// Whether an event creates its key (etcd's `IsCreateEvent`): such events never carry a prev_kv.
fn is_create(kind: EventType, kv: &KeyValue) -> bool {
    kind == EventType::Put && kv.create_revision == kv.mod_revision
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, rebuilding the key index from LMDB and
    /// finishing a compaction a crash interrupted. `map_size_bytes` is the most LMDB may grow to.
    pub fn open(dir: &Path, map_size_bytes: usize) -> Result<Store, MvccError> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(CLIENT_SNAPSHOT_PREFIX)
            {
                std::fs::remove_file(entry.path())?;
            }
        }
        // A backend an install was building when the member stopped: the install starts over.
        let install = dir.join(INSTALL_DIR);
        if install.exists() {
            std::fs::remove_dir_all(&install)?;
        }
        let map_size = map_size_bytes
            .max(MAP_SIZE_ALIGN_BYTES)
            .div_ceil(MAP_SIZE_ALIGN_BYTES)
            * MAP_SIZE_ALIGN_BYTES;
        let backend = Backend::open(dir, map_size)?;
        let store = Store {
            dir: dir.to_path_buf(),
            map_size_bytes: map_size,
            backend: RwLock::new(Some(backend)),
            state: RwLock::new(State {
                index: KeyIndex::new(),
                current_rev: 1,
                compact_rev: -1,
                consistent_index: 0,
                pending: Arc::new(Pending::default()),
            }),
            writer: Mutex::new(()),
            staged: Mutex::new(Vec::new()),
            purge_job: Mutex::new(None),
        };
        store.rebuild()?;
        Ok(store)
    }

    /// Rebuilds the in-memory state (key index, revisions, consistent index) from LMDB, finishing
    /// an interrupted compaction on the way. Used at open and after a snapshot was installed.
    fn rebuild(&self) -> Result<(), MvccError> {
        let backend = self.backend()?;
        let (env, kv, meta) = (&backend.env, &backend.kv, &backend.meta);
        let rtxn = env.read_txn()?;
        let consistent_index = read_u64(meta, &rtxn, META_CONSISTENT_INDEX)?.unwrap_or(0);
        let compact_rev = read_i64(meta, &rtxn, META_COMPACT_REV)?.unwrap_or(-1);
        let finished_rev = read_i64(meta, &rtxn, META_FINISHED_COMPACT_REV)?.unwrap_or(-1);
        if finished_rev > compact_rev {
            return Err(corrupt(format!(
                "finished compaction {finished_rev} is above the scheduled one {compact_rev}"
            )));
        }

        // Rebuild the index with one pass in revision order. The pass is bounded by the entry
        // count LMDB reports for the same snapshot.
        let entries_max = kv.len(&rtxn)?;
        let mut index = KeyIndex::new();
        let mut stored: Vec<Revision> = Vec::with_capacity(entries_max as usize);
        for item in kv.iter(&rtxn)? {
            let (key, value) = item?;
            if stored.len() as u64 >= entries_max {
                return Err(corrupt("more LMDB entries than the database reports"));
            }
            let (rev, tombstone) = Revision::from_key(key)?;
            if let Some(prev) = stored.last() {
                if rev <= *prev {
                    return Err(corrupt(format!("revision {rev} stored after {prev}")));
                }
            }
            let kv =
                KeyValue::decode(value).map_err(|e| corrupt(format!("value at {rev}: {e}")))?;
            if !tombstone && kv.mod_revision != rev.main {
                return Err(corrupt(format!(
                    "value at {rev} has mod_revision {}",
                    kv.mod_revision
                )));
            }
            index.restore(&kv.key, rev, tombstone, kv.create_revision, kv.version)?;
            stored.push(rev);
        }
        drop(rtxn);
        // `purge` clones the backend itself (an operation holds one clone at a time).
        drop(backend);
        let last_main = stored.last().map_or(1, |r| r.main);
        // Compaction may have removed the newest revisions (tombstones at the floor), so the
        // floor also bounds the current revision from below, as etcd's restore does.
        let current_rev = last_main.max(compact_rev).max(1);
        {
            let mut st = self.state_write();
            st.index = KeyIndex::new();
            st.current_rev = current_rev;
            st.compact_rev = compact_rev;
            st.consistent_index = consistent_index;
            st.pending = Arc::new(Pending::default());
        }

        // The index must match LMDB compacted at the floor: compacting the rebuilt index is a
        // no-op if the last physical compaction finished, and yields its keep set otherwise.
        let keep = if compact_rev >= 0 {
            index.compact(compact_rev)
        } else {
            HashSet::new()
        };
        if compact_rev > finished_rev {
            tracing::info!(
                compact_rev,
                finished_rev,
                "finishing an interrupted compaction"
            );
            self.purge(compact_rev, &keep)?;
        }
        stored.retain(|r| r.main > compact_rev || keep.contains(r));
        let indexed: Vec<Revision> = index.all_revisions().into_iter().map(|(r, _)| r).collect();
        if indexed != stored {
            return Err(corrupt(format!(
                "key index ({} revisions) and LMDB ({} revisions) disagree after restore",
                indexed.len(),
                stored.len()
            )));
        }
        index.check();
        self.state_write().index = index;
        Ok(())
    }

    fn state_read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .expect("mvcc state lock poisoned by a panic")
    }

    fn state_write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .expect("mvcc state lock poisoned by a panic")
    }

    /// A clone of the current backend, for one operation: hold it only for that operation, and
    /// call no other `Store` method meanwhile (see [`Store`] on installs).
    fn backend(&self) -> Result<Backend, MvccError> {
        self.backend
            .read()
            .expect("mvcc backend lock poisoned by a panic")
            .clone()
            .ok_or_else(|| MvccError::Storage("the backend was closed by a failed install".into()))
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer
            .lock()
            .expect("mvcc writer lock poisoned by a panic")
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest revision: 1 on a fresh store; each write that changes something adds one.
    pub fn current_revision(&self) -> i64 {
        self.state_read().current_rev
    }

    /// The compaction floor: reads below it fail. 0 if never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.state_read().compact_rev.max(0)
    }

    /// The oldest revision a read may ask for, as etcd's `FirstRev`: the compaction floor, or -1
    /// if the store was never compacted (so a negative revision is not "compacted" then).
    pub fn first_revision(&self) -> i64 {
        self.state_read().compact_rev
    }

    /// The raft index of the last entry applied to the store.
    pub fn consistent_index(&self) -> u64 {
        self.state_read().consistent_index
    }

    /// Number of keys with any history left in the index (alive or not yet compacted away).
    pub fn key_count(&self) -> usize {
        self.state_read().index.len()
    }

    /// Reads `[key, range_end)` (etcd's conventions: empty `range_end` = the single key, `"\0"` =
    /// every key `>= key`) at `opts.rev`. The index lock is held only to find the revisions and to
    /// open the LMDB snapshot the values are then read from.
    pub fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        opts: &RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let b = self.backend()?;
        let span = KeySpan::new(key, range_end);
        let (revs, count, current, txn, pending) = {
            let st = self.state_read();
            let rev = read_revision(opts.rev, st.current_rev, st.compact_rev)?;
            let (revs, count) = st.index.revisions(span, rev, opts.limit, opts.count_only);
            // Opened under the lock: every revision just found is in this snapshot or batch.
            let txn = b.env.read_txn()?;
            (revs, count, st.current_rev, txn, st.pending.clone())
        };
        let kvs = fetch(&b.kv, &txn, &pending, &revs)?;
        Ok(RangeResult {
            kvs,
            count,
            rev: current,
        })
    }

    /// A consistent read view for several reads (a read-only txn). It holds the index lock for
    /// its lifetime, so the writer waits: keep it short, never hold it across an `.await` (under
    /// the simulator's single thread that would deadlock the apply task), and call no other
    /// `Store` method while holding it (the lock is not re-entrant once a writer waits).
    pub fn read(&self) -> Result<ReadTxn<'_>, MvccError> {
        let b = self.backend()?;
        let state = self.state_read();
        // The transaction owns a handle of its environment: the view does not borrow the
        // backend an install may replace (the install waits for the view to end).
        let txn = b.env.static_read_txn()?;
        Ok(ReadTxn {
            kv: b.kv,
            txn,
            state,
        })
    }

    /// Starts the write of raft entry `raft_index`. Blocks while another write is open.
    pub fn write(&self, raft_index: u64) -> Result<WriteTxn<'_>, MvccError> {
        let writer = self.lock_writer();
        let (begin_rev, compact_rev, consistent_index, pending) = {
            let st = self.state_read();
            (
                st.current_rev,
                st.compact_rev,
                st.consistent_index,
                st.pending.clone(),
            )
        };
        if raft_index <= consistent_index {
            return Err(MvccError::IndexRegression {
                raft_index,
                consistent_index,
            });
        }
        let b = self.backend()?;
        // Reads of the values before this txn: the batch first, then LMDB.
        let txn = b.env.static_read_txn()?;
        Ok(WriteTxn {
            store: self,
            txn,
            kv: b.kv,
            pending,
            _writer: writer,
            raft_index,
            begin_rev,
            compact_rev,
            changes: Vec::new(),
            records: Vec::new(),
            meta_ops: Vec::new(),
            overlay: BTreeMap::new(),
            events: Vec::new(),
        })
    }

    /// Records that raft entry `raft_index` was applied without changing any key.
    pub fn set_consistent_index(&self, raft_index: u64) -> Result<(), MvccError> {
        self.write(raft_index)?
            .end()
            .map(|events| debug_assert!(events.is_empty()))
    }

    /// Commits the applied entries the store holds in memory to LMDB, in one transaction with
    /// the newest one's consistent index (see the module docs on durability). Returns whether
    /// there was anything to commit.
    pub fn commit(&self) -> Result<bool, MvccError> {
        let _writer = self.lock_writer();
        self.commit_locked()
    }

    /// Commits the batch if it reached [`BATCH_ENTRIES_MAX`] entries or [`BATCH_BYTES_MAX`]
    /// bytes. Returns whether it did.
    pub fn commit_if_full(&self) -> Result<bool, MvccError> {
        let full = {
            let st = self.state_read();
            st.pending.entries.load(Ordering::Acquire) >= BATCH_ENTRIES_MAX
                || st.pending.bytes.load(Ordering::Acquire) >= BATCH_BYTES_MAX
        };
        if full {
            self.commit()
        } else {
            Ok(false)
        }
    }

    /// Commits the batch and finishes any physical deletion, for callers that read the whole
    /// LMDB file (hashes of it, record counts, consistency checks).
    fn commit_and_purge(&self) -> Result<(), MvccError> {
        let _writer = self.lock_writer();
        self.commit_locked()?;
        self.finish_purge_locked()
    }

    /// Applied entries not yet committed to LMDB.
    pub fn uncommitted_entries(&self) -> usize {
        self.state_read().pending.entries.load(Ordering::Acquire)
    }

    /// [`Store::commit`] for a caller that holds the writer lock.
    fn commit_locked(&self) -> Result<bool, MvccError> {
        let pending = self.state_read().pending.clone();
        if pending.is_empty() {
            return Ok(false);
        }
        let b = self.backend()?;
        let mut txn = b.env.write_txn()?;
        for (key, value) in pending.kv().iter() {
            b.kv.put(&mut txn, key, value)?;
        }
        for (name, value) in pending.meta().iter() {
            match value {
                Some(v) => b.meta.put(&mut txn, name, v)?,
                None => {
                    b.meta.delete(&mut txn, name)?;
                }
            }
        }
        txn.commit()?;
        // LMDB holds the batch now; readers that took it keep it, new ones start from LMDB.
        self.state_write().pending = Arc::new(Pending::default());
        Ok(true)
    }

    /// Compacts at `rev` as raft entry `raft_index`: later reads below `rev` fail; for every key
    /// the newest version at or below `rev` stays unless it is a tombstone; everything older is
    /// dropped from the index at once, and deleted from LMDB by later [`Store::purge_step`]
    /// calls (readers never see it meanwhile). The current revision does not change.
    pub fn compact(&self, raft_index: u64, rev: i64) -> Result<(), MvccError> {
        let _writer = self.lock_writer();
        // The batch first: compaction rewrites LMDB below the floor, and the batch must never
        // hold a revision older than one LMDB holds.
        self.commit_locked()?;
        let b = self.backend()?;
        {
            let st = self.state_read();
            if raft_index <= st.consistent_index {
                return Err(MvccError::IndexRegression {
                    raft_index,
                    consistent_index: st.consistent_index,
                });
            }
            if rev <= st.compact_rev {
                return Err(MvccError::Compacted);
            }
            if rev > st.current_rev {
                return Err(MvccError::FutureRevision);
            }
        }
        // 1. The new floor and the raft index, durably together: from here on the compaction
        //    has happened, and `open` finishes it if we crash before the deletion does.
        let mut wtxn = b.env.write_txn()?;
        b.meta
            .put(&mut wtxn, META_COMPACT_REV, &rev.to_be_bytes())?;
        self.write_staged(&b.meta, &mut wtxn)?;
        b.meta
            .put(&mut wtxn, META_CONSISTENT_INDEX, &raft_index.to_be_bytes())?;
        wtxn.commit()?;
        // 2. The index forgets the revisions before LMDB loses them (see the module docs).
        let keep = {
            let mut st = self.state_write();
            st.compact_rev = rev;
            st.consistent_index = raft_index;
            st.index.compact(rev)
        };
        // 3. The physical deletion, in batches the raft loop runs once a tick (`purge_step`), so
        //    that a large compaction never stalls it. A later compaction takes over: its keep
        //    set covers what this one would still delete.
        tracing::debug!(
            rev,
            kept = keep.len(),
            "compacted; the deletion follows in steps"
        );
        *self.purge_job() = Some(PurgeJob {
            at_rev: rev,
            keep: Arc::new(keep),
            cursor: Revision::bound_key(0),
        });
        Ok(())
    }

    /// Deletes from LMDB every revision `<= at_rev` not in `keep`, in batches of
    /// [`COMPACTION_BATCH_MAX`], then records the compaction as finished. Idempotent.
    fn purge(&self, at_rev: i64, keep: &HashSet<Revision>) -> Result<usize, MvccError> {
        let batches_max = {
            let b = self.backend()?;
            let rtxn = b.env.read_txn()?;
            b.kv.len(&rtxn)? as usize / COMPACTION_BATCH_MAX + 2
        };
        let mut cursor: Vec<u8> = Revision::bound_key(0);
        let mut deleted = 0usize;
        for _ in 0..batches_max {
            let (next, n) = self.purge_batch(at_rev, keep, &cursor)?;
            deleted += n;
            match next {
                None => return Ok(deleted),
                Some(key) => cursor = key,
            }
        }
        Err(corrupt(format!(
            "compaction at {at_rev} did not finish in {batches_max} batches"
        )))
    }

    /// One LMDB transaction of a purge: examines up to [`COMPACTION_BATCH_MAX`] revisions from
    /// `cursor` on, deletes those `<= at_rev` not in `keep`, and records the compaction as
    /// finished if it reached the end. Returns where the next batch starts (`None`: finished) and
    /// how many revisions it deleted. The caller holds the writer lock.
    fn purge_batch(
        &self,
        at_rev: i64,
        keep: &HashSet<Revision>,
        cursor: &[u8],
    ) -> Result<(Option<Vec<u8>>, usize), MvccError> {
        let b = self.backend()?;
        let end = Revision::bound_key(at_rev.saturating_add(1));
        let mut wtxn = b.env.write_txn()?;
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        let mut next: Option<Vec<u8>> = None;
        {
            let bounds = (Bound::Included(cursor), Bound::Excluded(end.as_slice()));
            for (scanned, item) in b.kv.range(&wtxn, &bounds)?.enumerate() {
                let (key, _) = item?;
                if scanned == COMPACTION_BATCH_MAX {
                    next = Some(key.to_vec());
                    break;
                }
                let (rev, _) = Revision::from_key(key)?;
                assert!(rev.main <= at_rev, "purge scanned {rev} above {at_rev}");
                if !keep.contains(&rev) {
                    doomed.push(key.to_vec());
                }
            }
        }
        for key in &doomed {
            let existed = b.kv.delete(&mut wtxn, key)?;
            assert!(existed, "purge deletes only keys it just read");
        }
        if next.is_none() {
            b.meta
                .put(&mut wtxn, META_FINISHED_COMPACT_REV, &at_rev.to_be_bytes())?;
        }
        wtxn.commit()?;
        Ok((next, doomed.len()))
    }

    /// Runs one batch of the physical deletion a compaction left (see [`Store::compact`]):
    /// bounded work, so that the raft loop can call it once a tick and keep its heartbeats.
    /// Returns whether any deletion is left after it.
    pub fn purge_step(&self) -> Result<bool, MvccError> {
        let _writer = self.lock_writer();
        self.purge_step_locked()
    }

    fn purge_step_locked(&self) -> Result<bool, MvccError> {
        let Some(job) = self.purge_job().clone() else {
            return Ok(false);
        };
        let (next, deleted) = self.purge_batch(job.at_rev, &job.keep, &job.cursor)?;
        tracing::debug!(
            rev = job.at_rev,
            deleted,
            done = next.is_none(),
            "purge step"
        );
        let mut slot = self.purge_job();
        *slot = next.map(|cursor| PurgeJob { cursor, ..job });
        Ok(slot.is_some())
    }

    /// Defragmentation as LMDB has it: finishes the physical deletion of any compaction still in
    /// progress and commits the batch, so that the pages it frees are free (and Status's size in
    /// use says so) when the call returns, as etcd's defragment leaves only live data behind.
    /// LMDB reuses free pages itself, so nothing is rewritten and the file keeps its size.
    pub fn defragment(&self) -> Result<(), MvccError> {
        let _writer = self.lock_writer();
        self.finish_purge_locked()?;
        self.commit_locked()?;
        Ok(())
    }

    /// Finishes the physical deletion a compaction left, for callers that read the whole file.
    fn finish_purge_locked(&self) -> Result<(), MvccError> {
        while self.purge_step_locked()? {}
        Ok(())
    }

    /// Whether every compaction applied so far is also physically done: the revisions it
    /// dropped are gone from LMDB, not only from the index (etcd's `physical` compaction).
    pub fn is_physically_compacted(&self) -> bool {
        self.purge_job().is_none()
    }

    fn purge_job(&self) -> MutexGuard<'_, Option<PurgeJob>> {
        self.purge_job.lock().expect("purge job lock poisoned")
    }

    /// The revisions a compaction still in progress has dropped from the index but not yet from
    /// LMDB: `(floor, kept)`; a revision at or below the floor that is not kept is gone for
    /// readers, though a scan of LMDB may still meet it.
    fn doomed(&self) -> Option<(i64, Arc<HashSet<Revision>>)> {
        self.purge_job()
            .as_ref()
            .map(|j| (j.at_rev, j.keep.clone()))
    }

    /// The events (puts and deletes) of keys in `[key, range_end)` with
    /// `start_rev <= mod_revision <= end_rev`, in revision order, for watchers catching up.
    /// A delete's `kv` holds the key and its `mod_revision`. `prev_kv` is set as etcd's watch sets
    /// it: the key's value at `mod_revision - 1`, if that is not compacted and the event does not
    /// create the key. At most `limit` events (0, or anything above
    /// [`EVENTS_BETWEEN_MAX`](crate::mvcc::EVENTS_BETWEEN_MAX), means that maximum), but a
    /// revision is never split: the caller resumes at the last event's `mod_revision + 1`.
    /// Fails with `Compacted` if `start_rev` is below the floor.
    pub fn events_between(
        &self,
        start_rev: i64,
        end_rev: i64,
        key: &[u8],
        range_end: &[u8],
        limit: usize,
    ) -> Result<Vec<Event>, MvccError> {
        let b = self.backend()?;
        let limit = if limit == 0 {
            EVENTS_BETWEEN_MAX
        } else {
            limit.min(EVENTS_BETWEEN_MAX)
        };
        let span = KeySpan::new(key, range_end);
        let (txn, current, pending, doomed) = {
            let st = self.state_read();
            if start_rev < st.compact_rev {
                return Err(MvccError::Compacted);
            }
            (
                b.env.read_txn()?,
                st.current_rev,
                st.pending.clone(),
                self.doomed(),
            )
        };
        let start = start_rev.max(1);
        let end = end_rev.min(current);
        if start > end {
            return Ok(Vec::new());
        }
        let lo = Revision::bound_key(start);
        let hi = Revision::bound_key(end + 1);
        let mut events: Vec<Event> = Vec::new();
        let mut last_main = 0i64;
        // One record in revision order; `Break` once the limit is reached at a revision's end.
        let mut visit = |k: &[u8], v: &[u8]| -> Result<ControlFlow<()>, MvccError> {
            let (rev, tombstone) = Revision::from_key(k)?;
            assert!(
                rev.main >= start && rev.main <= end,
                "scan left its bounds at {rev}"
            );
            if events.len() >= limit && rev.main != last_main {
                return Ok(ControlFlow::Break(()));
            }
            if is_doomed(&doomed, rev) {
                // Compacted away; only its physical deletion is still to come.
                return Ok(ControlFlow::Continue(()));
            }
            let mut kv =
                KeyValue::decode(v).map_err(|e| corrupt(format!("value at {rev}: {e}")))?;
            if !span.contains(&kv.key) {
                return Ok(ControlFlow::Continue(()));
            }
            let kind = if tombstone {
                // As etcd does, so watchers see the delete's revision.
                kv.mod_revision = rev.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            last_main = rev.main;
            events.push(Event {
                r#type: kind as i32,
                kv: Some(kv),
                prev_kv: None,
            });
            Ok(ControlFlow::Continue(()))
        };
        let bounds = (
            Bound::Included(lo.as_slice()),
            Bound::Excluded(hi.as_slice()),
        );
        // LMDB's revisions, then the batch's: every one in the batch is newer.
        let mut stopped = false;
        for item in b.kv.range(&txn, &bounds)? {
            let (k, v) = item?;
            if visit(k, v)?.is_break() {
                stopped = true;
                break;
            }
        }
        if !stopped {
            for (k, v) in pending.kv().range::<[u8], _>(bounds) {
                if visit(k, v)?.is_break() {
                    break;
                }
            }
        }
        // prev_kv: look the previous revisions up under the lock, read them from the snapshot.
        // The snapshot predates any compaction that runs after it was opened, so a revision the
        // index still holds is in it.
        let prev_revs: Vec<Option<Revision>> = {
            let st = self.state_read();
            events
                .iter()
                .map(|e| {
                    let kv = e.kv.as_ref().expect("events carry kv");
                    let at = kv.mod_revision - 1;
                    if is_create(e.r#type(), kv) || at < 1 || at < st.compact_rev {
                        return None;
                    }
                    st.index.get(&kv.key, at).map(|(r, _, _)| r)
                })
                .collect()
        };
        for (e, prev) in events.iter_mut().zip(prev_revs) {
            if let Some(rev) = prev {
                e.prev_kv = fetch(&b.kv, &txn, &pending, &[rev])?.pop();
            }
        }
        Ok(events)
    }

    /// The named blob last written with [`WriteTxn::meta_put`].
    /// A CRC-32 hash over every stored revision up to `rev` (0 = current) — keys and values as
    /// LMDB holds them — for comparing members (`HashKV`). Members that applied the same log hold
    /// the same revisions (compaction is applied at the same index everywhere), so equal hashes at
    /// the same revision mean equal key spaces. Returns (hash, compact revision, revision hashed).
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64), MvccError> {
        let b = self.backend()?;
        let (current, compact, txn, pending, doomed) = {
            let st = self.state_read();
            (
                st.current_rev,
                st.compact_rev,
                b.env.read_txn()?,
                st.pending.clone(),
                self.doomed(),
            )
        };
        let rev = read_revision(rev, current, compact)?;
        let upper = Revision::bound_key(rev + 1);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(b"key");
        // LMDB's revisions, then the batch's (all newer).
        let below = (Bound::Unbounded, Bound::Excluded(upper.as_slice()));
        for item in b.kv.range(&txn, &below)? {
            let (k, v) = item?;
            // Members hash what compaction left, however far each one's deletion has got.
            if is_doomed(&doomed, Revision::from_key(k)?.0) {
                continue;
            }
            hasher.update(k);
            hasher.update(v);
        }
        for (k, v) in pending.kv().range::<[u8], _>(below) {
            hasher.update(k);
            hasher.update(v);
        }
        Ok((hasher.finalize(), compact.max(0), rev))
    }

    /// Writes the whole backend — every stored revision and every meta record, consistent index
    /// included — to `path` as a snapshot file, from one read transaction. Returns the consistent
    /// index the file holds. Format: the magic [`SNAPSHOT_MAGIC`], then records `[tag u8][key len
    /// u32 LE][value len u32 LE][key][value]` (tag 1 = kv, 2 = meta), then tag 0 and a CRC-32 (LE) of
    /// everything before it.
    pub fn export_snapshot(&self, path: &Path) -> Result<u64, MvccError> {
        self.commit()?;
        let b = self.backend()?;
        use std::io::Write as _;
        let file = std::fs::File::create(path)?;
        let mut out = std::io::BufWriter::new(file);
        let mut crc = crc32fast::Hasher::new();
        let mut put =
            |out: &mut std::io::BufWriter<std::fs::File>, bytes: &[u8]| -> Result<(), MvccError> {
                crc.update(bytes);
                out.write_all(bytes)?;
                Ok(())
            };
        let txn = b.env.read_txn()?;
        let consistent_index = read_u64(&b.meta, &txn, META_CONSISTENT_INDEX)?.unwrap_or(0);
        put(&mut out, SNAPSHOT_MAGIC)?;
        for item in b.kv.iter(&txn)? {
            let (k, v) = item?;
            put(&mut out, &[1])?;
            put(&mut out, &(k.len() as u32).to_le_bytes())?;
            put(&mut out, &(v.len() as u32).to_le_bytes())?;
            put(&mut out, k)?;
            put(&mut out, v)?;
        }
        for item in b.meta.iter(&txn)? {
            let (k, v) = item?;
            put(&mut out, &[2])?;
            put(&mut out, &(k.len() as u32).to_le_bytes())?;
            put(&mut out, &(v.len() as u32).to_le_bytes())?;
            put(&mut out, k.as_bytes())?;
            put(&mut out, v)?;
        }
        put(&mut out, &[0])?;
        out.write_all(&crc.finalize().to_le_bytes())?;
        let file = out
            .into_inner()
            .map_err(|e| MvccError::Storage(e.to_string()))?;
        file.sync_all()?;
        Ok(consistent_index)
    }

    /// Replaces the whole backend with a snapshot file written by [`Store::export_snapshot`] (on
    /// the leader), then rebuilds the in-memory state. Returns the consistent index the store
    /// now holds.
    ///
    /// As etcd installs a received snapshot by renaming its file into place, the new backend is
    /// built as a fresh LMDB file beside the current one (in [`INSTALL_DIR`]), synced, and
    /// renamed over it. So the install never needs room for the old and the new data in one
    /// LMDB map: clearing and refilling the current file in one transaction did, since LMDB
    /// frees the old pages only once that transaction commits, and a backend above half of the
    /// map could never install a snapshot of its own size (the member then stopped on every
    /// start). The file is read as a stream, and the new backend takes the old one's place only
    /// once the checksum matched: a damaged snapshot is refused, never served, and leaves the
    /// store as it was. A crash before the rename leaves the old backend (and a half-built one
    /// that [`Store::open`] removes); after it, the new one, synced. Either way the member's
    /// restart finishes the install from the snapshot file if the backend is behind it.
    pub fn install_snapshot(&self, path: &Path) -> Result<u64, MvccError> {
        let file = std::fs::File::open(path)?;
        let _writer = self.lock_writer();
        // What was applied before stays whole if the install fails.
        self.commit_locked()?;
        // The new file's own compaction state decides what is left to delete (`rebuild`).
        let job = self.purge_job().take();
        self.staged
            .lock()
            .expect("staged meta lock poisoned")
            .clear();
        let fresh_dir = self.dir.join(INSTALL_DIR);
        if fresh_dir.exists() {
            std::fs::remove_dir_all(&fresh_dir)?;
        }
        std::fs::create_dir(&fresh_dir)?;
        let built = self.build_backend(&fresh_dir, file);
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&fresh_dir);
            // The store stays as it was, its deletion under way included.
            *self.purge_job() = job;
            return Err(e);
        }
        drop(job);
        self.replace_backend(&fresh_dir)?;
        self.rebuild()?;
        Ok(self.consistent_index())
    }

    /// Fills a new LMDB environment in `dir` from a snapshot file, syncs it and closes it.
    fn build_backend(&self, dir: &Path, file: std::fs::File) -> Result<(), MvccError> {
        let fresh = Backend::open(dir, self.map_size_bytes)?;
        {
            let mut txn = fresh.env.write_txn()?;
            // The checksum comes last: a bad file leaves the transaction uncommitted.
            read_snapshot(file, &mut |tag, k, v| {
                match tag {
                    1 => fresh.kv.put(&mut txn, k, v)?,
                    _ => {
                        let name = std::str::from_utf8(k)
                            .map_err(|_| corrupt("snapshot meta name is not UTF-8"))?;
                        fresh.meta.put(&mut txn, name, v)?
                    }
                }
                Ok(())
            })?;
            txn.commit()?;
        }
        fresh.env.force_sync()?;
        fresh.close()
    }

    /// Puts the backend built in `fresh_dir` in the current one's place: closes the current
    /// environment (readers that hold it finish first; new ones wait on the lock), renames the
    /// new file over the old and syncs the directory, then opens it. Holds the writer lock.
    fn replace_backend(&self, fresh_dir: &Path) -> Result<(), MvccError> {
        let mut slot = self
            .backend
            .write()
            .expect("mvcc backend lock poisoned by a panic");
        if let Some(old) = slot.take() {
            old.close()?;
        }
        let replaced = (|| {
            std::fs::rename(
                fresh_dir.join(LMDB_DATA_FILE),
                self.dir.join(LMDB_DATA_FILE),
            )?;
            // The rename is durable only once the directory is: until then a power loss may
            // bring back the old file, which the restart then replaces again from the snapshot.
            std::fs::File::open(&self.dir)?.sync_all()?;
            std::fs::remove_dir_all(fresh_dir)
        })();
        // Whichever file is in place now (the new one, or the old one if the rename failed).
        *slot = Some(Backend::open(&self.dir, self.map_size_bytes)?);
        Ok(replaced?)
    }

    /// Stages a named blob (`None` removes it) for the next commit that records a raft index
    /// ([`WriteTxn::end`], [`Store::set_consistent_index`] or [`Store::compact`]): the apply path
    /// uses it for bookkeeping that must be durable exactly when the entry it describes is, even
    /// though another module opens that entry's transaction. A commit that fails loses them (the
    /// node stops on such a failure); installing a snapshot discards them.
    pub fn stage_meta(&self, name: &str, value: Option<Vec<u8>>) {
        self.staged
            .lock()
            .expect("staged meta lock poisoned")
            .push((blob_key(name), value));
    }

    fn write_staged(
        &self,
        meta: &Database<'static, Str, Bytes>,
        txn: &mut RwTxn<'_>,
    ) -> Result<(), MvccError> {
        let staged: Vec<_> = self
            .staged
            .lock()
            .expect("staged meta lock poisoned")
            .drain(..)
            .collect();
        for (name, value) in &staged {
            match value {
                Some(v) => meta.put(txn, name, v)?,
                None => {
                    meta.delete(txn, name)?;
                }
            }
        }
        Ok(())
    }

    /// Every named blob whose name starts with `prefix`, in name order.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, MvccError> {
        let b = self.backend()?;
        let (txn, pending) = self.meta_view(&b)?;
        let full = blob_key(prefix);
        let mut found: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for item in b.meta.prefix_iter(&txn, &full)? {
            let (name, value) = item?;
            found.insert(name.to_string(), value.to_vec());
        }
        // The batch's writes and removals override what LMDB holds.
        let from = full.clone();
        for (name, value) in pending.meta().range(from..) {
            if !name.starts_with(&full) {
                break;
            }
            match value {
                Some(v) => found.insert(name.clone(), v.clone()),
                None => found.remove(name),
            };
        }
        Ok(found
            .into_iter()
            .map(|(name, value)| (name[META_BLOB_PREFIX.len()..].to_string(), value))
            .collect())
    }

    pub fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, MvccError> {
        let b = self.backend()?;
        let (txn, pending) = self.meta_view(&b)?;
        let name = blob_key(name);
        if let Some(value) = pending.meta().get(&name) {
            return Ok(value.clone());
        }
        Ok(b.meta.get(&txn, &name)?.map(<[u8]>::to_vec))
    }

    /// An LMDB snapshot and the batch to read `meta` records from, taken together.
    fn meta_view<'b>(
        &self,
        b: &'b Backend,
    ) -> Result<(RoTxn<'b, WithoutTls>, Arc<Pending>), MvccError> {
        let st = self.state_read();
        let txn = b.env.read_txn()?;
        Ok((txn, st.pending.clone()))
    }

    /// Size of the LMDB data file.
    pub fn db_size_bytes(&self) -> u64 {
        self.backend()
            .ok()
            .and_then(|b| b.env.real_disk_size().ok())
            .unwrap_or(0)
    }

    /// Bytes of the pages the databases use (free pages excluded), like etcd's `dbSizeInUse`.
    pub fn db_size_in_use_bytes(&self) -> u64 {
        let Ok(b) = self.backend() else {
            return 0;
        };
        let (txn, pending) = {
            let st = self.state_read();
            let Ok(txn) = b.env.read_txn() else {
                return 0;
            };
            (txn, st.pending.clone())
        };
        let main = b.env.unnamed_database_stat();
        // The batch's records are about to take pages; counting their bytes keeps the quota
        // check from trailing the applied state by a whole batch.
        let mut bytes =
            main.non_free_page_size() as u64 + pending.bytes.load(Ordering::Acquire) as u64;
        // The two meta pages LMDB keeps at the head of the file.
        bytes += 2 * u64::from(main.page_size);
        for stat in [b.kv.stat(&txn), b.meta.stat(&txn)].into_iter().flatten() {
            bytes += stat.non_free_page_size() as u64;
        }
        bytes
    }

    /// Commits the batch and forces everything to disk, the meta page included: after this a
    /// power loss loses nothing applied so far, so the WAL may drop the entries before it.
    pub fn sync(&self) -> Result<(), MvccError> {
        self.commit()?;
        let b = self.backend()?;
        b.env.force_sync()?;
        Ok(())
    }

    /// Makes a copy of another cluster's backend the start of a new one (`snapshot restore`): the
    /// applied index goes back to 0, so that the new cluster's first entries apply, and the blobs
    /// under `blob_prefixes` (the old cluster's membership) are removed. Keys, revisions and every
    /// other blob (leases) stay.
    pub fn reset_for_new_cluster(&self, blob_prefixes: &[&str]) -> Result<(), MvccError> {
        let _writer = self.lock_writer();
        self.commit_locked()?;
        let b = self.backend()?;
        let mut txn = b.env.write_txn()?;
        let mut doomed = Vec::new();
        for prefix in blob_prefixes {
            for item in b.meta.prefix_iter(&txn, &blob_key(prefix))? {
                doomed.push(item?.0.to_string());
            }
        }
        for name in &doomed {
            b.meta.delete(&mut txn, name)?;
        }
        b.meta
            .put(&mut txn, META_CONSISTENT_INDEX, &0u64.to_be_bytes())?;
        txn.commit()?;
        b.env.force_sync()?;
        self.state_write().consistent_index = 0;
        Ok(())
    }

    /// How many records the backend holds: key revisions plus metadata records.
    pub fn record_count(&self) -> Result<u64, MvccError> {
        self.commit_and_purge()?;
        let b = self.backend()?;
        let txn = b.env.read_txn()?;
        Ok(b.kv.len(&txn)? + b.meta.len(&txn)?)
    }

    /// A CRC-32 of the whole backend: every key revision, then every metadata record but the
    /// applied index (members that applied the same entries agree; the index moves with every
    /// entry, including ones that change nothing).
    pub fn hash_backend(&self) -> Result<u32, MvccError> {
        self.commit_and_purge()?;
        let b = self.backend()?;
        let txn = b.env.read_txn()?;
        let mut crc = crc32fast::Hasher::new();
        for item in b.kv.iter(&txn)? {
            let (k, v) = item?;
            for part in [k, v] {
                crc.update(&(part.len() as u32).to_le_bytes());
                crc.update(part);
            }
        }
        for item in b.meta.iter(&txn)? {
            let (k, v) = item?;
            if k != META_CONSISTENT_INDEX {
                for part in [k.as_bytes(), v] {
                    crc.update(&(part.len() as u32).to_le_bytes());
                    crc.update(part);
                }
            }
        }
        Ok(crc.finalize())
    }

    /// Writes a consistent, compacted copy of the LMDB file to `path` (a snapshot: open it with
    /// [`Store::open`] after moving it to `<dir>/data.mdb`). Writers are not blocked.
    pub fn copy_to(&self, path: &Path) -> Result<(), MvccError> {
        self.commit()?;
        let file = self
            .backend()?
            .env
            .copy_to_path(path, heed::CompactionOption::Enabled)?;
        // LMDB's copy does not sync; a snapshot must be durable before it is used.
        file.sync_all()?;
        Ok(())
    }

    /// The flags the LMDB environment runs with.
    #[cfg(test)]
    pub(crate) fn lmdb_flags(&self) -> EnvFlags {
        let flags = self.backend().unwrap().env.flags().unwrap();
        flags.expect("LMDB reports only flags heed knows")
    }

    /// Records a compaction floor without compacting, as a crash right after step 1 of
    /// [`Store::compact`] leaves it.
    #[cfg(test)]
    pub(crate) fn simulate_interrupted_compaction(&self, rev: i64) {
        self.commit().unwrap();
        let b = self.backend().unwrap();
        let mut wtxn = b.env.write_txn().unwrap();
        b.meta
            .put(&mut wtxn, META_COMPACT_REV, &rev.to_be_bytes())
            .unwrap();
        wtxn.commit().unwrap();
    }

    /// Asserts that the key index and LMDB hold exactly the same revisions and that every stored
    /// value agrees with its key. For tests and debugging: it reads everything.
    pub fn check_consistency(&self) -> Result<(), MvccError> {
        self.commit_and_purge()?;
        let b = self.backend()?;
        let st = self.state_read();
        st.index.check();
        let txn = b.env.read_txn()?;
        let indexed = st.index.all_revisions();
        let mut stored = Vec::new();
        for item in b.kv.iter(&txn)? {
            let (k, v) = item?;
            let (rev, _) = Revision::from_key(k)?;
            let kv = KeyValue::decode(v).map_err(|e| corrupt(format!("value at {rev}: {e}")))?;
            stored.push((rev, kv.key));
        }
        if indexed != stored {
            return Err(corrupt(format!(
                "index has {} revisions, LMDB {}",
                indexed.len(),
                stored.len()
            )));
        }
        if let Some((last, _)) = stored.last() {
            assert!(
                last.main <= st.current_rev,
                "stored revision {last} above current"
            );
        }
        Ok(())
    }
}

/// A consistent read view of the store (see [`Store::read`]).
pub struct ReadTxn<'s> {
    kv: Database<'static, Bytes, Bytes>,
    txn: RoTxn<'static, WithoutTls>,
    state: RwLockReadGuard<'s, State>,
}

impl ReadTxn<'_> {
    /// The current revision of this view.
    pub fn rev(&self) -> i64 {
        self.state.current_rev
    }

    /// The compaction floor of this view, -1 if never compacted (etcd's `FirstRev`).
    pub fn first_rev(&self) -> i64 {
        self.state.compact_rev
    }

    /// As [`Store::range`], within this view.
    pub fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        opts: &RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let st = &self.state;
        let rev = read_revision(opts.rev, st.current_rev, st.compact_rev)?;
        let (revs, count) = st.index.revisions(
            KeySpan::new(key, range_end),
            rev,
            opts.limit,
            opts.count_only,
        );
        let kvs = fetch(&self.kv, &self.txn, &st.pending, &revs)?;
        Ok(RangeResult {
            kvs,
            count,
            rev: st.current_rev,
        })
    }
}

/// One change recorded by a [`WriteTxn`], published to the index at [`WriteTxn::end`].
struct Change {
    key: Vec<u8>,
    rev: Revision,
    tombstone: bool,
}

/// The write of one raft entry: all its changes share one new revision and reach the store's
/// batch, and later LMDB, atomically with the entry's raft index. Dropping it without
/// [`WriteTxn::end`] discards everything. It holds the writer lock: never keep it across an
/// `.await`.
pub struct WriteTxn<'s> {
    store: &'s Store,
    /// The values before this txn: the batch, then this LMDB snapshot.
    txn: RoTxn<'static, WithoutTls>,
    kv: Database<'static, Bytes, Bytes>,
    pending: Arc<Pending>,
    _writer: MutexGuard<'s, ()>,
    raft_index: u64,
    begin_rev: i64,
    compact_rev: i64,
    changes: Vec<Change>,
    /// The key revisions this txn writes (LMDB key, encoded value), in revision order.
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// The `meta` records this txn writes (`Some`) or removes (`None`), by LMDB name.
    meta_ops: Vec<(String, Option<Vec<u8>>)>,
    /// The state of every key this txn changed: `Some` = alive with that value, `None` = deleted.
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    events: Vec<Event>,
}

impl WriteTxn<'_> {
    /// The revision this txn reads at: the begin revision, plus one once anything changed.
    pub fn rev(&self) -> i64 {
        self.begin_rev + i64::from(!self.changes.is_empty())
    }

    /// The revision the store was at when this txn began.
    pub fn begin_rev(&self) -> i64 {
        self.begin_rev
    }

    /// The compaction floor, -1 if never compacted (etcd's `FirstRev`).
    pub fn first_rev(&self) -> i64 {
        self.compact_rev
    }

    /// Whether this txn has changed any key.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The raft index this txn records.
    pub fn raft_index(&self) -> u64 {
        self.raft_index
    }

    fn next_revision(&self) -> Revision {
        Revision::new(self.begin_rev + 1, self.changes.len() as i64)
    }

    /// The value of `key` before this txn (at `begin_rev`), from the index and LMDB.
    fn base_get(&self, key: &[u8], at_rev: i64) -> Result<Option<KeyValue>, MvccError> {
        let found = self.store.state_read().index.get(key, at_rev);
        let Some((rev, created, version)) = found else {
            return Ok(None);
        };
        let kv = fetch(&self.kv, &self.txn, &self.pending, &[rev])?
            .pop()
            .expect("one revision, one value");
        if kv.key != key || kv.create_revision != created || kv.version != version {
            return Err(corrupt(format!(
                "value at {rev} (key {:?}, create {}, version {}) disagrees with the index \
                 (key {key:?}, create {created}, version {version})",
                kv.key, kv.create_revision, kv.version
            )));
        }
        Ok(Some(kv))
    }

    /// The value of `key` as this txn sees it now (its own writes included).
    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        match self.overlay.get(key) {
            Some(state) => Ok(state.clone()),
            None => self.base_get(key, self.begin_rev),
        }
    }

    /// Reads like [`Store::range`], but sees this txn's own writes; `rev` in the result is
    /// [`WriteTxn::rev`].
    pub fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        opts: &RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let txn_rev = self.rev();
        let rev = read_revision(opts.rev, txn_rev, self.compact_rev)?;
        let span = KeySpan::new(key, range_end);
        if rev <= self.begin_rev {
            // Nothing this txn wrote is visible at `rev`: the committed view answers.
            let (revs, count) =
                self.store
                    .state_read()
                    .index
                    .revisions(span, rev, opts.limit, opts.count_only);
            let kvs = fetch(&self.kv, &self.txn, &self.pending, &revs)?;
            return Ok(RangeResult {
                kvs,
                count,
                rev: txn_rev,
            });
        }
        // Merge the committed keys with this txn's changes, in key order.
        enum Source {
            Base(Revision),
            Own(KeyValue),
        }
        let mut merged: BTreeMap<Vec<u8>, Source> = BTreeMap::new();
        self.store
            .state_read()
            .index
            .visit(span, self.begin_rev, |k, r| {
                if !self.overlay.contains_key(k) {
                    merged.insert(k.to_vec(), Source::Base(r));
                }
                ControlFlow::Continue(())
            });
        if let Some(bounds) = span.bounds() {
            for (k, state) in self.overlay.range::<[u8], _>(bounds) {
                if let Some(kv) = state {
                    merged.insert(k.clone(), Source::Own(kv.clone()));
                }
            }
        }
        let count = merged.len();
        let mut kvs = Vec::new();
        if !opts.count_only {
            let take = if opts.limit == 0 {
                count
            } else {
                opts.limit.min(count)
            };
            for (_, source) in merged.into_iter().take(take) {
                kvs.push(match source {
                    Source::Base(r) => fetch(&self.kv, &self.txn, &self.pending, &[r])?
                        .pop()
                        .expect("one"),
                    Source::Own(kv) => kv,
                });
            }
        }
        Ok(RangeResult {
            kvs,
            count,
            rev: txn_rev,
        })
    }

    /// Puts `key = value` with `lease` (0 for none) and returns the previous value as this txn
    /// sees it. Keeps `create_revision` if the key is alive, else starts a new generation.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<Option<KeyValue>, MvccError> {
        let touched = self.overlay.contains_key(key);
        let prev = self.latest(key)?;
        let rev = self.next_revision();
        let (create_revision, version) = prev
            .as_ref()
            .map_or((rev.main, 1), |p| (p.create_revision, p.version + 1));
        assert!(
            create_revision <= rev.main,
            "create revision above mod revision"
        );
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: rev.main,
            version,
            value: value.to_vec(),
            lease,
        };
        self.records.push((rev.to_key(false), kv.encode_to_vec()));
        // etcd's watch reports the key as it was before this revision as prev_kv, and none for
        // an event that creates the key.
        let event_prev = if is_create(EventType::Put, &kv) {
            None
        } else if touched {
            self.base_get(key, self.begin_rev)?
        } else {
            prev.clone()
        };
        self.changes.push(Change {
            key: key.to_vec(),
            rev,
            tombstone: false,
        });
        self.overlay.insert(key.to_vec(), Some(kv.clone()));
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: event_prev,
        });
        Ok(prev)
    }

    /// Deletes every key in `[key, range_end)` alive in this txn's view (writing a tombstone for
    /// each) and returns their values before the delete, in key order.
    pub fn delete_range(
        &mut self,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Vec<KeyValue>, MvccError> {
        let alive = self.range(key, range_end, &RangeOptions::default())?.kvs;
        for prev in &alive {
            let touched = self.overlay.contains_key(&prev.key);
            let rev = self.next_revision();
            let tomb = KeyValue {
                key: prev.key.clone(),
                mod_revision: rev.main,
                ..KeyValue::default()
            };
            self.records.push((rev.to_key(true), tomb.encode_to_vec()));
            // etcd's watch reports the key as it was before this revision as prev_kv.
            let event_prev = if touched {
                self.base_get(&prev.key, self.begin_rev)?
            } else {
                Some(prev.clone())
            };
            self.changes.push(Change {
                key: prev.key.clone(),
                rev,
                tombstone: true,
            });
            self.overlay.insert(prev.key.clone(), None);
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: event_prev,
            });
        }
        Ok(alive)
    }

    /// Stores a named blob (e.g. lease or auth state) atomically with this txn.
    pub fn meta_put(&mut self, name: &str, value: &[u8]) -> Result<(), MvccError> {
        self.meta_ops.push((blob_key(name), Some(value.to_vec())));
        Ok(())
    }

    /// Removes a named blob, committed with this txn.
    pub fn meta_delete(&mut self, name: &str) -> Result<(), MvccError> {
        self.meta_ops.push((blob_key(name), None));
        Ok(())
    }

    /// Adds the txn, with its raft index, to the store's batch and publishes its changes to
    /// readers. Returns the events of the new revision in order (empty if nothing changed).
    pub fn end(self) -> Result<Vec<Event>, MvccError> {
        let WriteTxn {
            store,
            txn,
            pending,
            _writer,
            raft_index,
            begin_rev,
            changes,
            records,
            mut meta_ops,
            events,
            ..
        } = self;
        drop(txn);
        assert_eq!(changes.len(), events.len(), "one event per change");
        meta_ops.extend(
            store
                .staged
                .lock()
                .expect("staged meta lock poisoned")
                .drain(..),
        );
        meta_ops.push((
            META_CONSISTENT_INDEX.to_string(),
            Some(raft_index.to_be_bytes().to_vec()),
        ));
        let mut bytes = 0usize;
        {
            let mut kv = pending.kv.write().expect("pending kv lock poisoned");
            for (key, value) in records {
                bytes += key.len() + value.len();
                let fresh = kv.insert(key, value).is_none();
                assert!(fresh, "a revision is written once");
            }
            let mut meta = pending.meta.write().expect("pending meta lock poisoned");
            for (name, value) in meta_ops {
                bytes += name.len() + value.as_ref().map_or(0, Vec::len);
                meta.insert(name, value);
            }
        }
        pending.bytes.fetch_add(bytes, Ordering::AcqRel);
        pending.entries.fetch_add(1, Ordering::AcqRel);
        // The batch first, then the index: a reader never finds a revision it cannot read.
        let mut st = store.state_write();
        assert!(
            Arc::ptr_eq(&st.pending, &pending),
            "the batch was committed during this txn"
        );
        assert_eq!(
            st.current_rev, begin_rev,
            "another writer ran during this txn"
        );
        assert!(
            raft_index > st.consistent_index,
            "raft index went backwards"
        );
        for c in &changes {
            assert_eq!(
                c.rev.main,
                begin_rev + 1,
                "all changes share the txn's revision"
            );
            if c.tombstone {
                st.index
                    .tombstone(&c.key, c.rev)
                    .expect("the txn deleted only keys alive in its view");
            } else {
                st.index.put(&c.key, c.rev);
            }
        }
        if !changes.is_empty() {
            st.current_rev = begin_rev + 1;
        }
        st.consistent_index = raft_index;
        drop(st);
        Ok(events)
    }
}
