//! The write-ahead log: raft's entries and HardState, made durable before anyone acts on them.
//!
//! # What the WAL owns
//!
//! Raft is only safe if a member remembers, across crashes, what it told others: the term it is
//! in, whom it voted for, and every entry it acknowledged (Raft paper, §5 and Figure 2, "persistent
//! state on all servers"). The WAL is where that memory lives. It holds three things: the opaque
//! metadata the node gave at create (member and cluster ids), the latest `HardState` (term, vote,
//! commit), and the raft log itself, as entries plus markers saying "a snapshot at (index, term)
//! exists, the log may start there". The state machine is not here: it lives in the MVCC backend,
//! which records the applied index in each of its commits, so replaying entries from the WAL after
//! a crash is idempotent (etcd's split, see `DESIGN.md`, decision 2).
//!
//! The WAL never touches `std::fs`. Everything goes through the [`Disk`] trait, so that the
//! simulator can lose unsynced writes, tear the last one, flip bits and fail `fsync`, and check
//! that recovery does the right thing each time.
//!
//! # The format
//!
//! The log is a sequence of segment files in one directory, named
//! `{seq:016x}-{first_index:016x}.wal` so that a sorted listing is the log in order (see
//! `segment.rs`). Each segment is a sequence of records, and each record is a 16-byte header
//! followed by a payload (see `record.rs` for the byte layout): a CRC-32 over the rest of the
//! header, the payload length, a type byte, and a CRC-32 over the type and payload. The types are
//! segment header, entry and hard state (protobuf encoded, as raft-rs defines them), and snapshot
//! marker (index and term). No record's payload may exceed [`RECORD_BYTES_MAX`].
//!
//! Every segment starts with exactly one header record (see `segment.rs` for its layout). It
//! carries the format version (currently [`FORMAT_VERSION`]), the segment's own sequence number and
//! first index (repeating its file name, so a renamed file is caught), the opaque metadata given at
//! create, the last snapshot marker if there is one, and the latest HardState. A segment is
//! therefore self-describing: after the segments before it are released, it still says which
//! member wrote it and where the log stands. A segment is written under a temporary name, synced,
//! then renamed into place and the directory synced, so a file with a segment's name always has a
//! complete header. When the live segment reaches [`WalOptions::segment_bytes_max`] it is synced
//! and the next record goes to a new segment.
//!
//! Segments are chained: the header of each new segment also records the length in bytes and the
//! CRC-32 of the whole segment before it, which is final from that moment on (only the last
//! segment is ever appended to). Recovery checks every segment but the last against the header
//! that follows it, so a sealed segment that lost its end, even exactly at a record boundary where
//! its own records would read as a valid shorter segment, is refused. No trailer record is needed:
//! the next header is the seal, written and synced only after the segment it describes.
//!
//! Format version 1 introduced the single header record and the chain. The earlier format started
//! each segment with separate metadata, snapshot marker and HardState records (record type 1 was
//! metadata, now retired); it is not read, and such a WAL is refused as having an unknown record
//! type (cairn had no release that wrote it).
//!
//! Entries are appended in index order. An entry whose index is at or below the last index
//! replaces the log from that index on: a follower truncates entries that conflict with its leader
//! (§5.3), and the WAL records the truncation simply by writing the new entries after the old
//! ones. Recovery replays the records in order and reproduces the same log.
//!
//! # Recovery
//!
//! [`Wal::open`] reads every segment in order and verifies every checksum. The one kind of damage
//! it repairs is a torn tail: a crash in the middle of a write leaves, at the end of the last
//! segment, a partial record, a record whose checksum fails, or zero bytes the file system
//! allocated but never wrote. Those bytes were never synced, so no one was told they were
//! durable: recovery cuts them off with [`DiskFile::truncate`] and continues with the valid prefix.
//!
//! Damage counts as a torn tail only if nothing valid follows it, and only after the last
//! segment's header. A crash tears the last write and nothing after it, so if a valid record can
//! be found anywhere after the damage (searching byte by byte when the damaged header no longer
//! says where the record ends), that later record was written, synced and maybe acknowledged after
//! the damaged one: the damage is in the middle. And a header is synced before its segment gets
//! its name, so a damaged or incomplete header is never a torn write: cutting it would silently
//! reset the HardState (and the vote in it) that the header carries. That, and everything else
//! unexpected, is refused with [`WalError::Corrupt`], naming the file and offset: damage in any
//! segment but the last (each was synced before the next one began), a segment whose length or
//! checksum differs from what the next header recorded, a header that disagrees with its file name
//! or with the log before it, a missing segment, a segment whose first index does not continue the
//! log, entries that skip an index or lower a term, a HardState that goes backwards, a commit index
//! beyond the log, an index or segment number at the top of the `u64` range (the next one must
//! exist; raft never gets there). Skipping such data would let a member forget a vote or an
//! acknowledged entry and silently break raft's safety; a node that refuses to start can be
//! repaired from its peers.
//!
//! Two ambiguities are inherent. Damage to the very last record looks exactly like a torn write
//! and is treated as one, so a bit flip there loses that record even if it had been synced; and
//! the last segment cut at a record boundary, or lost as a whole, reads as a shorter log that was
//! never synced further. No format can tell these apart without a second copy; raft assumes synced
//! data stays intact, and the simulator exercises both cases.
//!
//! # Snapshots and release
//!
//! [`Wal::record_snapshot`] writes a marker: the state machine holds everything up to (index,
//! term), so recovery returns only the entries after it. Entries after the marker survive if the
//! log agrees with the snapshot at its index (a local snapshot of applied entries); otherwise the
//! snapshot came from a leader and replaces the log, as raft-rs's storage does. Once a snapshot is
//! recorded, [`Wal::release_to`] deletes the oldest segments whose entries it covers. The segment
//! headers are what make this safe: the first segment left still carries the metadata, the
//! HardState and a snapshot marker, and its name says where its entries begin. Its own record of
//! the segment before it is not checked, since that segment is gone.
//!
//! # One fsync per Ready
//!
//! [`Wal::append`] only buffers; [`Wal::sync`] writes the buffer and calls `fdatasync` once. The
//! raft driver appends everything a `Ready` holds (entries, then the HardState) and syncs once
//! before sending the messages that depend on it: group commit. An `fsync` costs about as much for
//! one entry as for a thousand, so batching per Ready is what lets throughput grow with load. The
//! order within a batch matters: entries are written before the HardState whose commit index may
//! refer to them, so any prefix of the batch that survives a crash is consistent.
//!
//! If writing or syncing fails, the WAL refuses all further use ([`WalError::Poisoned`]): after a
//! failed `fsync` the kernel may have dropped the dirty pages and cleared the error, so a retry
//! could report success for data that is gone. The only safe continuation is to stop the node and
//! recover from what is on disk.

mod record;
mod segment;
mod tail;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::raft::eraftpb::{Entry, HardState};
use protobuf::Message as _;

use crate::io::{Disk, DiskFile};
pub use record::RecordType;
pub use record::RECORD_BYTES_MAX;
pub use segment::FORMAT_VERSION;
use segment::{Header, Previous, SegmentName, TEMP_SUFFIX};
use tail::LogTail;
pub use tail::INDEX_MAX;

/// Default size at which the live segment is closed and a new one started.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// The largest metadata accepted at create. It is copied into the header of every segment, so it
/// must stay small; member and cluster ids take a few dozen bytes.
pub const METADATA_BYTES_MAX: usize = 64 * 1024;

/// Appended records are buffered in memory until [`Wal::sync`], so that a Ready costs one write
/// call; past this many bytes the buffer is handed to the file early, to bound memory.
const WRITE_BUFFER_BYTES_MAX: usize = 1024 * 1024;

/// Bytes in a snapshot marker's payload: index and term, u64 little endian.
const SNAPSHOT_PAYLOAD_BYTES: usize = 16;

/// Tuning of the WAL. Nothing here changes the format: a WAL opens with any options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// The live segment is closed and a new one started once it holds this many bytes. A segment
    /// can exceed it by one record, because records are never split across segments.
    pub segment_bytes_max: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
        }
    }
}

/// Everything recovery read back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WalContents {
    /// The opaque bytes given at create (member id, cluster id ...).
    pub metadata: Vec<u8>,
    /// The last HardState saved (the default if none was).
    pub hard_state: HardState,
    /// (index, term) of the last snapshot marker recorded, if any.
    pub snapshot: Option<(u64, u64)>,
    /// The entries after the snapshot marker, contiguous, in order, with overwrites applied.
    pub entries: Vec<Entry>,
}

/// Errors of the WAL.
///
/// Only [`WalError::TooLarge`] is deterministic (the caller's input is refused and the WAL is
/// unchanged, so it may go back to the client). Every other error means this member's durable
/// state is unknown or damaged: the node must stop rather than carry on and diverge.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The disk failed; the message names the operation and file.
    #[error("wal i/o error: {0}")]
    Io(#[from] io::Error),
    /// The files are not what this code writes, and not a torn tail it may cut: refuse to start.
    #[error("wal corrupt: {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
    /// [`Wal::open`] found no segment in the directory.
    #[error("no wal in {dir}")]
    NotFound { dir: String },
    /// [`Wal::create`] found segments in the directory.
    #[error("a wal already exists in {dir}")]
    AlreadyExists { dir: String },
    /// An entry or the metadata is over its limit; nothing was written.
    #[error("wal record of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    /// Protobuf refused to encode a message.
    #[error("wal encode: {0}")]
    Encode(#[from] protobuf::ProtobufError),
    /// An earlier write or sync failed; see the module documentation.
    #[error("wal unusable after an earlier i/o error: restart and recover from disk")]
    Poisoned,
}

/// Adds the operation and path to an I/O error, so the operator knows which file failed.
fn io_error(op: &str, path: &Path, err: io::Error) -> WalError {
    WalError::Io(io::Error::new(
        err.kind(),
        format!("{op} {}: {err}", path.display()),
    ))
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        segment: path.display().to_string(),
        offset,
        reason: reason.into(),
    }
}

fn check_size(bytes: usize, max: usize) -> Result<(), WalError> {
    if bytes > max {
        return Err(WalError::TooLarge { bytes, max });
    }
    Ok(())
}

/// The rules a new HardState must follow relative to the previous one. A member's term never
/// goes back, it never changes its vote within a term (that would let two leaders be elected in
/// one term, §5.2), and its commit index never goes back (committed entries are forever, §5.4).
fn check_hard_state_step(previous: &HardState, next: &HardState) -> Result<(), String> {
    if next.term < previous.term {
        return Err(format!(
            "term goes back from {} to {}",
            previous.term, next.term
        ));
    }
    if next.term == previous.term && previous.vote != 0 && next.vote != previous.vote {
        let (from, to, term) = (previous.vote, next.vote, next.term);
        return Err(format!(
            "vote changes from {from} to {to} within term {term}"
        ));
    }
    if next.commit < previous.commit {
        return Err(format!(
            "commit goes back from {} to {}",
            previous.commit, next.commit
        ));
    }
    Ok(())
}

fn snapshot_payload(index: u64, term: u64) -> [u8; SNAPSHOT_PAYLOAD_BYTES] {
    let mut payload = [0; SNAPSHOT_PAYLOAD_BYTES];
    payload[..8].copy_from_slice(&index.to_le_bytes());
    payload[8..].copy_from_slice(&term.to_le_bytes());
    payload
}

/// Where one record lies in a segment file's bytes. For tools that inspect WAL files, and for the
/// simulator, which damages chosen records on purpose; recovery does not use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpan {
    pub kind: RecordType,
    /// Where the record's header starts.
    pub offset: u64,
    /// The payload's bytes in the file (the header is everything from `offset` up to here).
    pub payload: std::ops::Range<u64>,
    /// For an entry record: the entry's index, and where its `data` lies in the file when it
    /// could be located.
    pub entry: Option<(u64, Option<std::ops::Range<u64>>)>,
}

/// The valid records at the start of a segment's bytes, in order, up to the first byte that is not
/// a valid record (a torn tail, damage, or the end). Never fails: damage only ends the list.
pub fn record_spans(data: &[u8]) -> Vec<RecordSpan> {
    // Damage in the middle fails the scan as a whole; what precedes it is still records.
    let valid = match record::scan(data, true) {
        Ok(_) => data,
        Err(damage) => &data[..damage.offset as usize],
    };
    let records = record::scan(valid, true).map_or(Vec::new(), |scan| scan.records);
    records
        .into_iter()
        .map(|r| {
            let start = r.offset + record::HEADER_BYTES as u64;
            let end = start + r.payload.len() as u64;
            let entry = (r.kind == RecordType::Entry)
                .then(|| Entry::parse_from_bytes(r.payload).ok())
                .flatten()
                .map(|e| {
                    // The protobuf encoder writes `data` after the fixed fields; when nothing
                    // follows it, it ends the payload.
                    let data = (!e.data.is_empty() && r.payload.ends_with(&e.data))
                        .then(|| end - e.data.len() as u64..end);
                    (e.index, data)
                });
            RecordSpan {
                kind: r.kind,
                offset: r.offset,
                payload: start..end,
                entry,
            }
        })
        .collect()
}

/// The write-ahead log. See the module documentation.
pub struct Wal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    opts: WalOptions,
    metadata: Vec<u8>,
    /// The latest HardState appended (not necessarily synced yet).
    hard_state: HardState,
    /// The log as appended so far, by term only: enough to check every append and snapshot
    /// marker against the raft log rules without keeping entries in memory.
    tail: LogTail<u64>,
    /// The segments on disk, in order; the last one is live (being appended to).
    segments: Vec<SegmentName>,
    /// The live segment.
    file: Box<dyn DiskFile>,
    /// CRC-32 of everything handed to the live segment's file: the next segment's header records
    /// it (see "The format" in the module documentation).
    live_checksum: crc32fast::Hasher,
    /// Records appended but not yet handed to `file`.
    pending: Vec<u8>,
    /// Whether anything was appended since the last sync.
    dirty: bool,
    /// Set by a failed write or sync; see the module documentation.
    poisoned: bool,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field(
                "live_segment",
                &self.segments.last().map(ToString::to_string),
            )
            .field("snapshot", &self.tail.snapshot())
            .field("last_index", &self.tail.last_index())
            .field("pending_bytes", &self.pending.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Wal {
    /// Whether `dir` holds a WAL (at least one complete segment).
    pub fn exists(disk: &dyn Disk, dir: &Path) -> bool {
        match disk.list(dir) {
            Ok(names) => names.iter().any(|name| SegmentName::parse(name).is_some()),
            Err(_) => false,
        }
    }

    /// Creates a new, empty WAL in `dir` (created if missing) with the given metadata, durable on
    /// return.
    pub fn create(
        disk: Arc<dyn Disk>,
        dir: &Path,
        metadata: &[u8],
        opts: WalOptions,
    ) -> Result<Wal, WalError> {
        assert!(
            opts.segment_bytes_max > 0,
            "segment_bytes_max must be positive"
        );
        check_size(metadata.len(), METADATA_BYTES_MAX)?;
        if Wal::exists(&*disk, dir) {
            return Err(WalError::AlreadyExists {
                dir: dir.display().to_string(),
            });
        }

        // Every directory we create must itself be recorded durably in its parent, or a crash
        // could lose the whole WAL along with its directory entry.
        let mut missing = Vec::new();
        let mut next = Some(dir);
        while let Some(d) = next.filter(|d| !d.as_os_str().is_empty() && !disk.exists(d)) {
            missing.push(d);
            next = d.parent();
        }
        disk.create_dir_all(dir)
            .map_err(|e| io_error("create directory", dir, e))?;
        for d in missing.iter().rev() {
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                disk.sync_dir(parent)
                    .map_err(|e| io_error("sync directory", parent, e))?;
            }
        }
        remove_temp_files(&*disk, dir)?;

        // The log starts empty: its last index is 0, so the first entry is 1.
        let name = SegmentName {
            seq: 0,
            first_index: 1,
        };
        let hard_state = HardState::default();
        let header = Header {
            name,
            previous: Previous::default(),
            snapshot: None,
            hard_state: hard_state.clone(),
            metadata: metadata.to_vec(),
        };
        let (file, live_checksum) = write_segment(&*disk, dir, &header)?;
        tracing::info!(dir = %dir.display(), "created wal");
        Ok(Wal {
            disk,
            dir: dir.to_path_buf(),
            opts,
            metadata: metadata.to_vec(),
            hard_state,
            tail: LogTail::new(0),
            segments: vec![name],
            file,
            live_checksum,
            pending: Vec::new(),
            dirty: false,
            poisoned: false,
        })
    }

    /// Opens an existing WAL and reads everything back (recovery), ready to append.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        opts: WalOptions,
    ) -> Result<(Wal, WalContents), WalError> {
        assert!(
            opts.segment_bytes_max > 0,
            "segment_bytes_max must be positive"
        );
        let names = match disk.list(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(WalError::NotFound {
                    dir: dir.display().to_string(),
                })
            }
            Err(e) => return Err(io_error("list", dir, e)),
        };
        remove_temp_files(&*disk, dir)?;
        let segments: Vec<SegmentName> = names
            .iter()
            .filter_map(|name| SegmentName::parse(name))
            .collect();
        if segments.is_empty() {
            return Err(WalError::NotFound {
                dir: dir.display().to_string(),
            });
        }

        let recovered = recover(&*disk, dir, &segments)?;
        let live_path = dir.join(segments.last().unwrap().to_string());
        let mut file = disk
            .open_append(&live_path)
            .map_err(|e| io_error("open", &live_path, e))?;
        if let Some(reason) = &recovered.torn {
            tracing::warn!(
                segment = %live_path.display(),
                valid_bytes = recovered.live_valid_bytes,
                cut_bytes = file.len() - recovered.live_valid_bytes,
                reason = %reason,
                "wal: truncating torn tail"
            );
            file.truncate(recovered.live_valid_bytes)
                .map_err(|e| io_error("truncate", &live_path, e))?;
            // The truncation must be durable before anything is appended after it, or a crash
            // could bring the torn bytes back in front of the new records.
            file.sync().map_err(|e| io_error("sync", &live_path, e))?;
        }
        // What the file holds must be exactly what recovery read and kept.
        assert_eq!(
            file.len(),
            recovered.live_valid_bytes,
            "{}",
            live_path.display()
        );

        let snapshot = recovered.tail.snapshot();
        let (tail, entries) = recovered.tail.into_terms_and_items();
        let contents = WalContents {
            metadata: recovered.metadata,
            hard_state: recovered.hard_state,
            snapshot,
            entries,
        };
        assert_eq!(
            tail.snapshot().map_or(0, |(index, _)| index),
            tail.base_index()
        );
        tracing::info!(
            dir = %dir.display(),
            segments = segments.len(),
            snapshot = ?contents.snapshot,
            last_index = tail.last_index(),
            "opened wal"
        );
        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            opts,
            metadata: contents.metadata.clone(),
            hard_state: contents.hard_state.clone(),
            tail,
            segments,
            file,
            live_checksum: recovered.live_checksum,
            pending: Vec::new(),
            dirty: false,
            poisoned: false,
        };
        Ok((wal, contents))
    }

    /// Buffers entries and/or a HardState as records at the end of the log (not durable yet).
    ///
    /// Entries whose index is at or below the last index replace the old suffix from that index
    /// on (raft truncates conflicting entries), and recovery reproduces that. Entries must be
    /// contiguous, start after the snapshot and at most one past the last index, never lower a
    /// term, and never pass [`INDEX_MAX`]; a HardState must never lower its term or commit, never
    /// change a vote within a term, and commit no further than the last index. Breaking these is
    /// a bug in the caller and panics. Only [`WalError::TooLarge`] leaves the WAL usable.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), WalError> {
        self.check_usable()?;
        // Encode and check every size first, so that a refused call leaves the log unchanged.
        let mut payloads = Vec::with_capacity(entries.len());
        for entry in entries {
            let payload = entry.write_to_bytes()?;
            check_size(payload.len(), RECORD_BYTES_MAX)?;
            payloads.push(payload);
        }
        let hard_state_payload = hard_state.map(|hs| hs.write_to_bytes()).transpose()?;
        for pair in entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index + 1,
                "wal: appended entries are not contiguous"
            );
        }

        for (entry, payload) in entries.iter().zip(&payloads) {
            // Roll before updating the tail: the new segment's header describes the log as it is
            // before this record.
            self.roll_if_full()?;
            if let Err(err) = self.tail.push(entry.index, entry.term) {
                panic!("wal: append breaks the raft log: {err}");
            }
            self.write_record(RecordType::Entry, payload)?;
        }
        if let (Some(hs), Some(payload)) = (hard_state, hard_state_payload) {
            if let Err(reason) = check_hard_state_step(&self.hard_state, hs) {
                panic!("wal: hard state breaks raft's rules: {reason}");
            }
            let last_index = self.tail.last_index();
            assert!(
                hs.commit <= last_index,
                "wal: commit {} beyond last index {last_index}",
                hs.commit
            );
            self.roll_if_full()?;
            self.write_record(RecordType::HardState, &payload)?;
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Makes everything appended durable: one write of the buffer and one fdatasync (group
    /// commit: the raft driver calls this once per Ready). Does nothing if nothing was appended.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        if !self.dirty {
            debug_assert!(self.pending.is_empty());
            return Ok(());
        }
        self.flush()?;
        let result = self.file.sync();
        self.check_io("sync", result)?;
        self.dirty = false;
        Ok(())
    }

    /// Records that a snapshot at (index, term) exists, so recovery may start there; durable on
    /// return (together with anything appended before).
    ///
    /// Entries after `index` survive if the log holds `index` with this `term` (a local snapshot);
    /// otherwise the log is replaced by the snapshot (one received from the leader) and the next
    /// entry appended must be `index + 1`. Snapshots never go backwards: that panics.
    pub fn record_snapshot(&mut self, index: u64, term: u64) -> Result<(), WalError> {
        self.check_usable()?;
        self.roll_if_full()?;
        if let Err(err) = self.tail.apply_snapshot(index, term) {
            panic!("wal: snapshot marker breaks the raft log: {err}");
        }
        assert_eq!(self.tail.base_index(), index);
        self.write_record(RecordType::Snapshot, &snapshot_payload(index, term))?;
        self.sync()
    }

    /// Deletes whole segment files whose entries are all at or below `index` (never the live
    /// segment), after a snapshot. `index` must not exceed the last snapshot marker recorded:
    /// the entries released must be covered by a snapshot, or recovery would find them missing.
    pub fn release_to(&mut self, index: u64) -> Result<(), WalError> {
        self.check_usable()?;
        let snapshot_index = self.tail.snapshot().map_or(0, |(index, _)| index);
        assert!(
            index <= snapshot_index,
            "wal: release_to({index}) beyond the snapshot at {snapshot_index}"
        );
        // A segment's live entries all sit below the next segment's first index: that segment
        // was started when the log ended just before it, and entries overwritten later are dead.
        // Segments go oldest first and the directory is synced after each removal, so a crash
        // leaves a contiguous run of segments, never a hole.
        while self.segments.len() > 1 && self.segments[1].first_index - 1 <= index {
            let path = self.dir.join(self.segments[0].to_string());
            let result = self.disk.remove(&path);
            result.map_err(|e| io_error("remove", &path, e))?;
            let result = self.disk.sync_dir(&self.dir);
            if let Err(e) = result {
                self.poisoned = true;
                return Err(io_error("sync directory", &self.dir, e));
            }
            tracing::debug!(segment = %path.display(), "wal: released segment");
            self.segments.remove(0);
        }
        Ok(())
    }

    /// The index of the last entry appended, or of the snapshot if no entry follows it.
    pub fn last_index(&self) -> u64 {
        self.tail.last_index()
    }

    /// The last snapshot marker recorded, (index, term).
    pub fn snapshot(&self) -> Option<(u64, u64)> {
        self.tail.snapshot()
    }

    /// The latest HardState appended.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The metadata given at create.
    pub fn metadata(&self) -> &[u8] {
        &self.metadata
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    fn live_path(&self) -> PathBuf {
        self.dir.join(
            self.segments
                .last()
                .expect("a wal always has a live segment")
                .to_string(),
        )
    }

    /// Passes `result` through, poisoning the WAL if it is an error.
    fn check_io<T>(&mut self, op: &str, result: io::Result<T>) -> Result<T, WalError> {
        result.map_err(|e| {
            self.poisoned = true;
            io_error(op, &self.live_path(), e)
        })
    }

    fn write_record(&mut self, kind: RecordType, payload: &[u8]) -> Result<(), WalError> {
        debug_assert!(payload.len() <= RECORD_BYTES_MAX);
        record::encode(&mut self.pending, kind, payload);
        self.dirty = true;
        if self.pending.len() >= WRITE_BUFFER_BYTES_MAX {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the buffered records to the file (no sync).
    fn flush(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.append(&self.pending);
        self.check_io("append to", result)?;
        self.live_checksum.update(&self.pending);
        self.pending.clear();
        Ok(())
    }

    /// Starts a new segment if the live one is full. The live segment is synced first: recovery
    /// only forgives damage in the last segment, so every earlier one must be complete on disk
    /// before a later one exists.
    fn roll_if_full(&mut self) -> Result<(), WalError> {
        let live_bytes = self.file.len() + self.pending.len() as u64;
        if live_bytes < self.opts.segment_bytes_max {
            return Ok(());
        }
        self.flush()?;
        let result = self.file.sync();
        self.check_io("sync", result)?;
        let live = *self
            .segments
            .last()
            .expect("a wal always has a live segment");
        // Neither number can overflow: recovery refuses a segment numbered u64::MAX, and the
        // log's last index is at most `INDEX_MAX`.
        let name = SegmentName {
            seq: live
                .seq
                .checked_add(1)
                .expect("segment numbers end below u64::MAX"),
            first_index: self.tail.last_index() + 1,
        };
        // The live segment is final from here on: the new header records its length and checksum.
        let previous = Previous {
            bytes: self.file.len(),
            checksum: self.live_checksum.clone().finalize(),
        };
        debug_assert_eq!(previous.bytes, live_bytes);
        let header = Header {
            name,
            previous,
            snapshot: self.tail.snapshot(),
            hard_state: self.hard_state.clone(),
            metadata: self.metadata.clone(),
        };
        let result = write_segment(&*self.disk, &self.dir, &header);
        let (file, live_checksum) = result.inspect_err(|_| self.poisoned = true)?;
        tracing::debug!(segment = %name, previous_bytes = live_bytes, "wal: started segment");
        self.file = file;
        self.live_checksum = live_checksum;
        self.segments.push(name);
        self.dirty = false;
        Ok(())
    }
}

/// Writes a new segment with its header record, durably: under a temporary name first, synced,
/// then renamed into place and the directory synced. Returns the segment opened for appending,
/// and the running checksum of its content (the header so far).
fn write_segment(
    disk: &dyn Disk,
    dir: &Path,
    header: &Header,
) -> Result<(Box<dyn DiskFile>, crc32fast::Hasher), WalError> {
    let name = header.name;
    let mut bytes = Vec::new();
    let payload = header.encode()?;
    check_size(payload.len(), RECORD_BYTES_MAX)?;
    record::encode(&mut bytes, RecordType::Header, &payload);

    let temp = dir.join(name.temp_name());
    let path = dir.join(name.to_string());
    if disk.exists(&path) {
        // Names are never reused; finding one means another writer shares this directory.
        let err = io::Error::new(io::ErrorKind::AlreadyExists, "segment exists");
        return Err(io_error("create", &path, err));
    }
    if disk.exists(&temp) {
        disk.remove(&temp)
            .map_err(|e| io_error("remove", &temp, e))?;
    }
    let mut file = disk
        .open_append(&temp)
        .map_err(|e| io_error("create", &temp, e))?;
    assert_eq!(file.len(), 0, "{}", temp.display());
    file.append(&bytes)
        .map_err(|e| io_error("append to", &temp, e))?;
    file.sync().map_err(|e| io_error("sync", &temp, e))?;
    drop(file);
    disk.rename(&temp, &path)
        .map_err(|e| io_error("rename", &temp, e))?;
    disk.sync_dir(dir)
        .map_err(|e| io_error("sync directory", dir, e))?;

    let file = disk
        .open_append(&path)
        .map_err(|e| io_error("open", &path, e))?;
    assert_eq!(file.len(), bytes.len() as u64, "{}", path.display());
    let mut checksum = crc32fast::Hasher::new();
    checksum.update(&bytes);
    Ok((file, checksum))
}

/// Removes segments left half-prepared by a crash (see `segment.rs`). They were never part of
/// the log: a segment joins the log only when it is renamed into place.
fn remove_temp_files(disk: &dyn Disk, dir: &Path) -> Result<(), WalError> {
    let names = disk.list(dir).map_err(|e| io_error("list", dir, e))?;
    let mut removed = false;
    for name in names.iter().filter(|name| name.ends_with(TEMP_SUFFIX)) {
        let path = dir.join(name);
        tracing::info!(file = %path.display(), "wal: removing unfinished segment");
        disk.remove(&path)
            .map_err(|e| io_error("remove", &path, e))?;
        removed = true;
    }
    if removed {
        disk.sync_dir(dir)
            .map_err(|e| io_error("sync directory", dir, e))?;
    }
    Ok(())
}

/// What recovery read, before the torn tail (if any) is cut.
struct Recovered {
    metadata: Vec<u8>,
    hard_state: HardState,
    tail: LogTail<Entry>,
    /// Bytes of valid records in the last segment.
    live_valid_bytes: u64,
    /// CRC-32 of those bytes, to continue as records are appended.
    live_checksum: crc32fast::Hasher,
    /// Why the last segment's tail was judged torn, if it was.
    torn: Option<String>,
}

/// A segment already read, as the next segment's header must describe it.
struct Read {
    name: SegmentName,
    path: PathBuf,
    previous: Previous,
}

/// Reads and checks every segment, in order. See "Recovery" in the module documentation.
fn recover(disk: &dyn Disk, dir: &Path, segments: &[SegmentName]) -> Result<Recovered, WalError> {
    let first_path = dir.join(segments[0].to_string());
    let mut tail: Option<LogTail<Entry>> = None;
    let mut metadata: Option<Vec<u8>> = None;
    let mut hard_state = HardState::default();
    let mut live_valid_bytes = 0;
    let mut live_checksum = crc32fast::Hasher::new();
    let mut torn = None;
    let mut before: Option<Read> = None;

    for (k, name) in segments.iter().enumerate() {
        let path = dir.join(name.to_string());
        if name.seq == u64::MAX {
            // No segment could follow this one; this code never gets there (it would take 2^64
            // segments), so the name is damage.
            let reason = format!(
                "sequence number {} leaves none for the next segment",
                name.seq
            );
            return Err(corrupt(&path, 0, reason));
        }
        if name.first_index == 0 || name.first_index > tail::INDEX_MAX {
            let reason = format!("segment name gives first index {}", name.first_index);
            return Err(corrupt(&path, 0, reason));
        }
        if let Some(previous) = &before {
            if previous.name.seq.checked_add(1) != Some(name.seq) {
                let reason = format!(
                    "segment sequence jumps from {} to {}: a segment is missing",
                    previous.name.seq, name.seq
                );
                return Err(corrupt(&path, 0, reason));
            }
        }

        let data = disk.read(&path).map_err(|e| io_error("read", &path, e))?;
        let is_last = k == segments.len() - 1;
        let scan = record::scan(&data, is_last).map_err(|d| corrupt(&path, d.offset, d.reason))?;
        // The header was synced before the segment got its name, so no crash leaves it damaged
        // or incomplete, even in the last segment: a torn tail can only begin after it.
        let header = match scan.records.first() {
            None => {
                let reason = match &scan.torn {
                    Some(torn) => format!("segment header damaged or incomplete: {torn}"),
                    None => "empty segment: no header".to_string(),
                };
                return Err(corrupt(&path, 0, reason));
            }
            Some(record) if record.kind != RecordType::Header => {
                let reason = format!("segment starts with {:?}, not a header", record.kind);
                return Err(corrupt(&path, 0, reason));
            }
            Some(record) => Header::decode(record.payload)
                .map_err(|reason| corrupt(&path, 0, format!("segment header: {reason}")))?,
        };
        if header.name != *name {
            let reason = format!("header belongs to segment {}", header.name);
            return Err(corrupt(&path, 0, reason));
        }

        match (&before, &tail) {
            (Some(previous), Some(log)) => {
                // The segment before was final when this one was started: what its header
                // recorded must still be there, byte for byte. A cut at a record boundary, which
                // reads as a valid shorter segment, shows up here.
                if header.previous.bytes != previous.previous.bytes {
                    let reason = format!(
                        "{} bytes, but the next segment's header recorded {}: the segment was {}",
                        previous.previous.bytes,
                        header.previous.bytes,
                        if previous.previous.bytes < header.previous.bytes {
                            "cut short"
                        } else {
                            "extended"
                        }
                    );
                    return Err(corrupt(&previous.path, previous.previous.bytes, reason));
                }
                if header.previous.checksum != previous.previous.checksum {
                    let reason = format!(
                        "content has CRC-32 {:08x}, but the next segment's header recorded {:08x}",
                        previous.previous.checksum, header.previous.checksum
                    );
                    return Err(corrupt(&previous.path, 0, reason));
                }
                // Each segment was started when the log ended just before its first index, with
                // every earlier segment synced: the log replayed so far must end there too, and
                // the header repeats the marker and HardState written before it.
                if log.last_index() + 1 != name.first_index {
                    let reason = format!(
                        "segment starts at index {} but the log before it ends at {}",
                        name.first_index,
                        log.last_index()
                    );
                    return Err(corrupt(&path, 0, reason));
                }
                if header.snapshot != log.snapshot() || header.hard_state != hard_state {
                    let reason = format!(
                        "header says snapshot {:?} and hard state {{{:?}}}, the log before it \
                         says {:?} and {{{:?}}}",
                        header.snapshot,
                        header.hard_state,
                        log.snapshot(),
                        hard_state
                    );
                    return Err(corrupt(&path, 0, reason));
                }
                if metadata.as_deref() != Some(header.metadata.as_slice()) {
                    return Err(corrupt(
                        &path,
                        0,
                        "metadata differs from the first segment's",
                    ));
                }
            }
            _ => {
                // The first segment left: the ones before it were released (or this is segment
                // 0, which has none). Its header says where the log stands.
                if name.seq == 0 && header.previous != Previous::default() {
                    let reason = "the first segment's header names a segment before it";
                    return Err(corrupt(&path, 0, reason));
                }
                let mut log = LogTail::<Entry>::new(name.first_index - 1);
                if let Some((index, term)) = header.snapshot {
                    log.apply_snapshot(index, term)
                        .map_err(|e| corrupt(&path, 0, format!("segment header: {e}")))?;
                }
                check_hard_state_step(&hard_state, &header.hard_state)
                    .map_err(|reason| corrupt(&path, 0, format!("hard state: {reason}")))?;
                hard_state = header.hard_state.clone();
                metadata = Some(header.metadata.clone());
                tail = Some(log);
            }
        }
        let log = tail.as_mut().expect("set by the first segment");

        for record in &scan.records[1..] {
            let at = |reason: String| corrupt(&path, record.offset, reason);
            match record.kind {
                RecordType::Header => {
                    return Err(at("segment header after the start of the segment".into()))
                }
                RecordType::Entry => {
                    let entry = Entry::parse_from_bytes(record.payload)
                        .map_err(|e| at(format!("undecodable entry: {e}")))?;
                    let index = entry.index;
                    log.push(index, entry).map_err(|e| at(e.to_string()))?;
                }
                RecordType::HardState => {
                    let hs = HardState::parse_from_bytes(record.payload)
                        .map_err(|e| at(format!("undecodable hard state: {e}")))?;
                    check_hard_state_step(&hard_state, &hs)
                        .map_err(|reason| at(format!("hard state: {reason}")))?;
                    hard_state = hs;
                }
                RecordType::Snapshot => {
                    let payload: [u8; SNAPSHOT_PAYLOAD_BYTES] = record
                        .payload
                        .try_into()
                        .map_err(|_| at("snapshot marker of the wrong size".into()))?;
                    let index = u64::from_le_bytes(payload[..8].try_into().unwrap());
                    let term = u64::from_le_bytes(payload[8..].try_into().unwrap());
                    log.apply_snapshot(index, term)
                        .map_err(|e| at(e.to_string()))?;
                }
            }
        }
        if is_last {
            live_valid_bytes = scan.valid_bytes;
            live_checksum.update(&data[..scan.valid_bytes as usize]);
            torn = scan.torn;
        }
        before = Some(Read {
            name: *name,
            path,
            previous: Previous {
                bytes: data.len() as u64,
                checksum: crc32fast::hash(&data),
            },
        });
    }

    let tail = tail.expect("there is at least one segment");
    let last_path = dir.join(segments[segments.len() - 1].to_string());
    if !tail.is_anchored() {
        let snapshot_index = tail.snapshot().map_or(0, |(index, _)| index);
        let reason = format!(
            "entries {}..={} are missing: the log starts after {} but the last snapshot is at {}",
            snapshot_index + 1,
            tail.base_index(),
            tail.base_index(),
            snapshot_index
        );
        return Err(corrupt(&first_path, 0, reason));
    }
    if hard_state.commit > tail.last_index() {
        let reason = format!(
            "hard state commits {} but the log ends at {}: entries are missing",
            hard_state.commit,
            tail.last_index()
        );
        return Err(corrupt(&last_path, live_valid_bytes, reason));
    }
    Ok(Recovered {
        metadata: metadata.expect("every segment has a header"),
        hard_state,
        tail,
        live_valid_bytes,
        live_checksum,
        torn,
    })
}
