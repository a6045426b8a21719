//! Helpers shared by the fuzz targets: an in-memory [`Disk`], the WAL's record framing (so inputs
//! can carry valid checksums), and a quiet slog logger for raft-rs.
//!
//! The targets themselves live in `fuzz_targets/`; `README.md` says what each one checks.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn::io::{Disk, DiskFile};

/// One file of the in-memory disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemFile {
    pub data: Vec<u8>,
    /// Bytes made durable by the last `sync` (a crash keeps at least these).
    pub synced_bytes: usize,
    /// Length when the file got its current name (a WAL segment's header length).
    pub named_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, MemFile>,
    dirs: BTreeSet<PathBuf>,
}

/// A file system in memory: much faster than the real one, deterministic, and easy to damage.
/// Cloning shares the same files.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", path.display()),
    )
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a finding already being reported; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a file in place as if it had been written and synced, creating its directory.
    pub fn put(&self, path: &Path, data: Vec<u8>) {
        let mut st = self.lock();
        if let Some(parent) = path.parent() {
            add_dirs(&mut st, parent);
        }
        let len = data.len();
        st.files.insert(
            path.to_path_buf(),
            MemFile {
                data,
                synced_bytes: len,
                named_bytes: len,
            },
        );
    }

    /// A copy of one file, if it exists.
    pub fn file(&self, path: &Path) -> Option<MemFile> {
        self.lock().files.get(path).cloned()
    }

    /// Every file, by path.
    pub fn files(&self) -> BTreeMap<PathBuf, MemFile> {
        self.lock().files.clone()
    }

    /// Replaces a file's bytes (damage); the file stays "synced" at its new length.
    pub fn set_data(&self, path: &Path, data: Vec<u8>) {
        let mut st = self.lock();
        if let Some(f) = st.files.get_mut(path) {
            f.synced_bytes = f.synced_bytes.min(data.len());
            f.named_bytes = f.named_bytes.min(data.len());
            f.data = data;
        }
    }

    /// Removes a file outright (a lost segment).
    pub fn delete(&self, path: &Path) {
        self.lock().files.remove(path);
    }
}

fn add_dirs(st: &mut State, dir: &Path) {
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty()) {
        st.dirs.insert(p.to_path_buf());
        d = p.parent();
    }
}

impl Disk for MemDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        add_dirs(&mut self.lock(), dir);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        // BTreeMap order of full paths in one directory is the order of their names.
        let mut names: Vec<String> = st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock();
        st.files
            .get(path)
            .map(|f| f.data.clone())
            .ok_or_else(|| not_found(path))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut st = self.lock();
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !st.dirs.contains(parent) => {
                return Err(not_found(parent));
            }
            _ => {}
        }
        st.files.entry(path.to_path_buf()).or_default();
        Ok(Box::new(MemHandle {
            disk: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let mut f = st.files.remove(from).ok_or_else(|| not_found(from))?;
        f.named_bytes = f.data.len();
        st.files.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.lock().dirs.contains(dir) {
            Ok(())
        } else {
            Err(not_found(dir))
        }
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        st.files.contains_key(path) || st.dirs.contains(path)
    }
}

/// An open file of a [`MemDisk`]. Like a real descriptor after an unlink or rename, it follows
/// the path it was opened with; the WAL never writes to a file it renamed or removed.
struct MemHandle {
    disk: MemDisk,
    path: PathBuf,
}

impl MemHandle {
    fn with<T>(&self, f: impl FnOnce(&mut MemFile) -> T) -> io::Result<T> {
        let mut st = self.disk.lock();
        st.files
            .get_mut(&self.path)
            .map(f)
            .ok_or_else(|| not_found(&self.path))
    }
}

impl DiskFile for MemHandle {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with(|f| f.data.extend_from_slice(buf))
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with(|f| f.synced_bytes = f.data.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|f| {
            f.data.truncate(len as usize);
            f.synced_bytes = f.synced_bytes.min(f.data.len());
        })
    }

    fn len(&self) -> u64 {
        self.with(|f| f.data.len() as u64).unwrap_or(0)
    }
}

/// The WAL's record framing, written from the format documented in `src/wal/record.rs` (the
/// library keeps its encoder private). Lets inputs carry valid checksums, so the fuzzer reaches
/// the log rules behind them instead of stopping at the first CRC.
pub mod record {
    pub const HEADER_BYTES: usize = 16;
    pub const ENTRY: u8 = 2;
    pub const HARD_STATE: u8 = 3;
    pub const SNAPSHOT: u8 = 4;
    /// The segment header, first record of every segment (`src/wal/segment.rs`).
    pub const SEGMENT_HEADER: u8 = 5;
    /// The format version segment headers carry.
    pub const FORMAT_VERSION: u32 = 1;

    /// Appends one framed record of type `kind` (any byte, so invalid types can be framed too).
    pub fn encode(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) {
        let start = buf.len();
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.push(kind);
        buf.extend_from_slice(&[0; 3]);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[kind]);
        hasher.update(payload);
        buf.extend_from_slice(&hasher.finalize().to_le_bytes());
        let header_checksum = crc32fast::hash(&buf[start + 4..start + HEADER_BYTES]);
        buf[start..start + 4].copy_from_slice(&header_checksum.to_le_bytes());
        buf.extend_from_slice(payload);
    }

    /// What a segment header says (see `src/wal/segment.rs` for the layout).
    #[derive(Debug, Clone, Default)]
    pub struct Header {
        pub seq: u64,
        pub first_index: u64,
        pub previous_bytes: u64,
        pub previous_checksum: u32,
        pub snapshot: Option<(u64, u64)>,
        /// The HardState, protobuf encoded.
        pub hard_state: Vec<u8>,
        pub metadata: Vec<u8>,
    }

    /// A segment header's payload.
    pub fn header_payload(h: &Header) -> Vec<u8> {
        let mut p = FORMAT_VERSION.to_le_bytes().to_vec();
        p.extend_from_slice(&h.seq.to_le_bytes());
        p.extend_from_slice(&h.first_index.to_le_bytes());
        p.extend_from_slice(&h.previous_bytes.to_le_bytes());
        p.extend_from_slice(&h.previous_checksum.to_le_bytes());
        p.push(h.snapshot.is_some() as u8);
        let (index, term) = h.snapshot.unwrap_or((0, 0));
        p.extend_from_slice(&index.to_le_bytes());
        p.extend_from_slice(&term.to_le_bytes());
        for field in [&h.hard_state, &h.metadata] {
            p.extend_from_slice(&(field.len() as u32).to_le_bytes());
            p.extend_from_slice(field);
        }
        p
    }

    /// A snapshot marker's payload: index and term, u64 little endian.
    pub fn snapshot_payload(index: u64, term: u64) -> Vec<u8> {
        let mut p = index.to_le_bytes().to_vec();
        p.extend_from_slice(&term.to_le_bytes());
        p
    }
}

/// A WAL segment's file name, `{seq:016x}-{first_index:016x}.wal` (see `src/wal/segment.rs`).
pub fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// A slog logger that drops everything: raft-rs logs a lot, and the fuzzer runs millions of
/// iterations.
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}
