//! Tests of the WAL as a whole: on the real file system (`FsDisk` in a temporary directory) and
//! on a small in-memory disk that can lose unsynced writes and fail `fsync`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ::raft::eraftpb::{Entry, HardState};
use proptest::prelude::*;
use protobuf::Message as _;

use super::segment::SegmentName;
use super::*;
use crate::io::{Disk, DiskFile, FsDisk};

// ---------------------------------------------------------------------------------------------
// An in-memory disk.

#[derive(Debug, Default)]
struct MemFileData {
    data: Vec<u8>,
    /// Bytes that survive a crash.
    synced: usize,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<PathBuf, MemFileData>,
    dirs: BTreeSet<PathBuf>,
    fail_syncs: bool,
}

/// A disk in memory. Directory operations are durable at once; file contents only up to the
/// last sync, and [`MemDisk::crash`] drops the rest.
#[derive(Debug, Default, Clone)]
struct MemDisk(Arc<Mutex<MemState>>);

impl MemDisk {
    fn crash(&self) {
        for file in self.0.lock().unwrap().files.values_mut() {
            file.data.truncate(file.synced);
        }
    }

    fn fail_syncs(&self, fail: bool) {
        self.0.lock().unwrap().fail_syncs = fail;
    }
}

struct MemFile {
    state: Arc<Mutex<MemState>>,
    path: PathBuf,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl Disk for MemDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.0.lock().unwrap();
        for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            state.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.0.lock().unwrap();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let names = state.files.keys().filter(|p| p.parent() == Some(dir));
        Ok(names
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.0.lock().unwrap();
        state
            .files
            .get(path)
            .map(|f| f.data.clone())
            .ok_or_else(|| not_found(path))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut state = self.0.lock().unwrap();
        if !state.dirs.contains(path.parent().unwrap()) {
            return Err(not_found(path));
        }
        state.files.entry(path.to_path_buf()).or_default();
        Ok(Box::new(MemFile {
            state: self.0.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.0.lock().unwrap();
        let file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.0.lock().unwrap();
        state
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.0.lock().unwrap();
        state.files.contains_key(path) || state.dirs.contains(path)
    }
}

impl DiskFile for MemFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        file.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.fail_syncs {
            return Err(io::Error::other("injected fsync failure"));
        }
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        file.synced = file.data.len();
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        file.data.truncate(len as usize);
        file.synced = file.synced.min(file.data.len());
        Ok(())
    }

    fn len(&self) -> u64 {
        let state = self.state.lock().unwrap();
        state
            .files
            .get(&self.path)
            .map_or(0, |f| f.data.len() as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes().into(),
        ..Entry::default()
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|index| entry(index, term)).collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

const METADATA: &[u8] = b"member 1 of cluster 7";

/// A temporary directory on the real file system; the WAL lives in a subdirectory it creates.
fn fs_setup() -> (tempfile::TempDir, Arc<dyn Disk>, PathBuf) {
    let temp = tempfile::TempDir::new().unwrap();
    let dir = temp.path().join("member").join("wal");
    (temp, Arc::new(FsDisk), dir)
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes_max: 512,
    }
}

fn segment_paths(disk: &dyn Disk, dir: &Path) -> Vec<PathBuf> {
    let names = disk.list(dir).unwrap();
    names
        .iter()
        .filter(|n| SegmentName::parse(n).is_some())
        .map(|n| dir.join(n))
        .collect()
}

fn last_segment(disk: &dyn Disk, dir: &Path) -> PathBuf {
    segment_paths(disk, dir).pop().unwrap()
}

/// Replaces a file's content through the `Disk` trait, as a disk fault would.
fn rewrite(disk: &dyn Disk, path: &Path, data: &[u8]) {
    disk.remove(path).unwrap();
    let mut file = disk.open_append(path).unwrap();
    file.append(data).unwrap();
    file.sync().unwrap();
}

/// Where each record of a segment starts, read through the codec.
fn record_offsets(disk: &dyn Disk, path: &Path) -> Vec<u64> {
    let data = disk.read(path).unwrap();
    let scan = record::scan(&data, false).unwrap();
    scan.records.iter().map(|r| r.offset).collect()
}

fn reopen(disk: &Arc<dyn Disk>, dir: &Path, opts: WalOptions) -> (Wal, WalContents) {
    Wal::open(disk.clone(), dir, opts).unwrap()
}

fn open_err(disk: &Arc<dyn Disk>, dir: &Path) -> WalError {
    Wal::open(disk.clone(), dir, WalOptions::default()).unwrap_err()
}

/// A WAL with entries 1..=5 of term 1 and a hard state, synced and closed; one segment.
fn five_entries(disk: &Arc<dyn Disk>, dir: &Path) {
    let mut wal = Wal::create(disk.clone(), dir, METADATA, WalOptions::default()).unwrap();
    for index in 1..=5 {
        wal.append(&[entry(index, 1)], None).unwrap();
    }
    wal.append(&[], Some(&hard_state(1, 1, 3))).unwrap();
    wal.sync().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn round_trip_of_entries_and_hard_state_survives_reopen() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, WalOptions::default()).unwrap();
    wal.append(&entries(1..=3, 1), Some(&hard_state(1, 1, 0)))
        .unwrap();
    wal.append(&entries(4..=6, 2), Some(&hard_state(2, 2, 5)))
        .unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), 6);
    drop(wal);

    let (wal, contents) = reopen(&disk, &dir, WalOptions::default());
    assert_eq!(contents.metadata, METADATA);
    assert_eq!(contents.hard_state, hard_state(2, 2, 5));
    assert_eq!(contents.snapshot, None);
    let expected: Vec<Entry> = entries(1..=3, 1)
        .into_iter()
        .chain(entries(4..=6, 2))
        .collect();
    assert_eq!(contents.entries, expected);
    assert_eq!(wal.last_index(), 6);
    assert_eq!(wal.hard_state(), &hard_state(2, 2, 5));
    assert_eq!(wal.metadata(), METADATA);
}

#[test]
fn created_wal_is_empty_and_durable() {
    let (_temp, disk, dir) = fs_setup();
    assert!(!Wal::exists(&*disk, &dir));
    let wal = Wal::create(disk.clone(), &dir, METADATA, WalOptions::default()).unwrap();
    assert!(Wal::exists(&*disk, &dir));
    assert_eq!(wal.last_index(), 0);
    drop(wal);
    let (_, contents) = reopen(&disk, &dir, WalOptions::default());
    assert_eq!(
        contents,
        WalContents {
            metadata: METADATA.to_vec(),
            ..WalContents::default()
        }
    );
}

#[test]
fn create_refuses_a_directory_that_already_holds_a_wal() {
    let (_temp, disk, dir) = fs_setup();
    Wal::create(disk.clone(), &dir, METADATA, WalOptions::default()).unwrap();
    let err = Wal::create(disk.clone(), &dir, METADATA, WalOptions::default()).unwrap_err();
    assert!(matches!(err, WalError::AlreadyExists { .. }), "{err}");
}

#[test]
fn open_without_a_wal_is_not_found() {
    let (_temp, disk, dir) = fs_setup();
    assert!(matches!(open_err(&disk, &dir), WalError::NotFound { .. }));
    disk.create_dir_all(&dir).unwrap();
    assert!(matches!(open_err(&disk, &dir), WalError::NotFound { .. }));
}

#[test]
fn oversized_records_are_refused_and_leave_the_log_unchanged() {
    let (_temp, disk, dir) = fs_setup();
    let big = vec![0u8; METADATA_BYTES_MAX + 1];
    let err = Wal::create(disk.clone(), &dir, &big, WalOptions::default()).unwrap_err();
    assert!(matches!(err, WalError::TooLarge { .. }), "{err}");

    let mut wal = Wal::create(disk.clone(), &dir, METADATA, WalOptions::default()).unwrap();
    let mut huge = entry(2, 1);
    huge.data = vec![7u8; RECORD_BYTES_MAX].into();
    let err = wal.append(&[entry(1, 1), huge], None).unwrap_err();
    assert!(matches!(err, WalError::TooLarge { .. }), "{err}");
    // Nothing of the refused batch was taken, and the WAL is still usable.
    assert_eq!(wal.last_index(), 0);
    wal.append(&[entry(1, 1)], None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, contents) = reopen(&disk, &dir, WalOptions::default());
    assert_eq!(contents.entries, vec![entry(1, 1)]);
}

#[test]
fn overwrite_of_a_suffix_is_reproduced_by_recovery() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, WalOptions::default()).unwrap();
    wal.append(&entries(1..=5, 1), Some(&hard_state(1, 0, 2)))
        .unwrap();
    wal.sync().unwrap();
    // A new leader in term 2 replaces the follower's uncommitted entries from 3 on (§5.3).
    wal.append(&entries(3..=4, 2), Some(&hard_state(2, 0, 2)))
        .unwrap();
    assert_eq!(wal.last_index(), 4);
    wal.sync().unwrap();
    drop(wal);

    let (mut wal, contents) = reopen(&disk, &dir, WalOptions::default());
    let expected: Vec<Entry> = entries(1..=2, 1)
        .into_iter()
        .chain(entries(3..=4, 2))
        .collect();
    assert_eq!(contents.entries, expected);
    assert_eq!(wal.last_index(), 4);
    // The reopened WAL continues from the overwritten log.
    wal.append(&[entry(5, 2)], None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, contents) = reopen(&disk, &dir, WalOptions::default());
    assert_eq!(contents.entries.last(), Some(&entry(5, 2)));
    assert_eq!(contents.entries.len(), 5);
}

#[test]
fn segments_roll_at_the_size_limit_and_each_starts_with_a_header_chained_to_the_one_before() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, small_segments()).unwrap();
    for index in 1..=40 {
        wal.append(&[entry(index, 1)], Some(&hard_state(1, 1, index - 1)))
            .unwrap();
        wal.sync().unwrap();
    }
    drop(wal);

    let paths = segment_paths(&*disk, &dir);
    assert!(paths.len() > 3, "{} segments", paths.len());
    let mut previous: Option<SegmentName> = None;
    let mut latest = HardState::default();
    for path in &paths {
        let name = SegmentName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
        let data = disk.read(path).unwrap();
        let scan = record::scan(&data, false).unwrap();
        assert_eq!(scan.records[0].kind, record::RecordType::Header);
        let header = segment::Header::decode(scan.records[0].payload).unwrap();
        assert_eq!(header.name, name);
        assert_eq!(header.metadata, METADATA);
        assert!(scan.records[1..]
            .iter()
            .all(|r| r.kind != record::RecordType::Header));
        if let Some(previous) = previous {
            assert_eq!(name.seq, previous.seq + 1);
            // The header repeats the latest HardState written before the roll.
            assert_eq!(header.hard_state, latest);
            // And records the length and checksum of the segment before, which is final.
            let previous_data = disk.read(&dir.join(previous.to_string())).unwrap();
            assert_eq!(header.previous.bytes, previous_data.len() as u64);
            assert_eq!(header.previous.checksum, crc32fast::hash(&previous_data));
            // A segment reaches the limit and exceeds it by at most one record.
            let previous_bytes = previous_data.len() as u64;
            assert!(previous_bytes >= small_segments().segment_bytes_max);
            assert!(
                previous_bytes < small_segments().segment_bytes_max + 100,
                "{previous_bytes}"
            );
        }
        for record in &scan.records {
            if record.kind == record::RecordType::HardState {
                latest = HardState::parse_from_bytes(record.payload).unwrap();
            }
        }
        previous = Some(name);
    }

    let (wal, contents) = reopen(&disk, &dir, small_segments());
    assert_eq!(contents.entries, entries(1..=40, 1));
    assert_eq!(contents.hard_state, hard_state(1, 1, 39));
    assert_eq!(wal.last_index(), 40);
}

#[test]
fn release_to_deletes_only_segments_covered_by_the_snapshot() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, small_segments()).unwrap();
    for index in 1..=40 {
        wal.append(&[entry(index, 1)], Some(&hard_state(1, 1, index)))
            .unwrap();
        wal.sync().unwrap();
    }
    let before = segment_paths(&*disk, &dir);
    wal.record_snapshot(20, 1).unwrap();
    wal.release_to(20).unwrap();
    let after = segment_paths(&*disk, &dir);
    assert!(after.len() < before.len());
    assert_eq!(after, before[before.len() - after.len()..].to_vec());
    // Every segment released held only entries the snapshot covers: the first one kept starts
    // at or below 21, and the one after it starts above 21.
    let first_index = |path: &PathBuf| {
        SegmentName::parse(path.file_name().unwrap().to_str().unwrap())
            .unwrap()
            .first_index
    };
    assert!(first_index(&after[0]) <= 21);
    assert!(first_index(&after[1]) > 21);
    drop(wal);

    let (mut wal, contents) = reopen(&disk, &dir, small_segments());
    assert_eq!(contents.snapshot, Some((20, 1)));
    assert_eq!(contents.entries, entries(21..=40, 1));
    // Releasing everything up to the live segment keeps the live segment.
    wal.record_snapshot(40, 1).unwrap();
    wal.release_to(40).unwrap();
    assert_eq!(segment_paths(&*disk, &dir).len(), 1);
    drop(wal);
    let (_, contents) = reopen(&disk, &dir, small_segments());
    assert_eq!(contents.snapshot, Some((40, 1)));
    assert!(contents.entries.is_empty());
    assert_eq!(contents.hard_state, hard_state(1, 1, 40));
}

/// The raft driver keeps a window of catch-up entries behind each compaction: its markers trail
/// the applied index, one after another, and each release keeps the window's segments. Every
/// reopen, also after a crash between the marker and the release, starts at the last marker and
/// holds the whole window and everything after it.
#[test]
fn trailing_snapshot_markers_keep_the_window_across_releases_and_reopens() {
    const WINDOW: u64 = 15;
    let disk = MemDisk::default();
    let shared: Arc<dyn Disk> = Arc::new(disk.clone());
    let dir = Path::new("/wal");
    let mut wal = Wal::create(shared.clone(), dir, METADATA, small_segments()).unwrap();
    let mut marker = 0;
    for applied in (10..=100).step_by(10) {
        let first = wal.last_index() + 1;
        wal.append(
            &entries(first..=applied, 1),
            Some(&hard_state(1, 1, applied)),
        )
        .unwrap();
        wal.sync().unwrap();
        let compact_to = applied.saturating_sub(WINDOW).max(marker);
        if compact_to > marker {
            wal.record_snapshot(compact_to, 1).unwrap();
            marker = compact_to;
            if applied == 60 {
                // A crash between the marker and the release: nothing was released.
                disk.crash();
                drop(wal);
                let (reopened, contents) =
                    Wal::open(shared.clone(), dir, small_segments()).unwrap();
                assert_eq!(contents.snapshot, Some((marker, 1)));
                assert_eq!(contents.entries, entries(marker + 1..=applied, 1));
                wal = reopened;
            }
            wal.release_to(compact_to).unwrap();
        }
        drop(wal);
        let (reopened, contents) = Wal::open(shared.clone(), dir, small_segments()).unwrap();
        let expected_snapshot = (marker > 0).then_some((marker, 1));
        assert_eq!(contents.snapshot, expected_snapshot, "applied {applied}");
        assert_eq!(contents.entries, entries(marker + 1..=applied, 1));
        assert_eq!(contents.hard_state, hard_state(1, 1, applied));
        wal = reopened;
    }
    assert_eq!(marker, 100 - WINDOW);
    // Segments wholly inside the released part are gone.
    let first_kept = segment_paths(&*shared, dir)
        .iter()
        .map(|p| {
            SegmentName::parse(p.file_name().unwrap().to_str().unwrap())
                .unwrap()
                .first_index
        })
        .min()
        .unwrap();
    assert!(first_kept > 1 && first_kept <= marker + 1, "{first_kept}");
}

#[test]
#[should_panic(expected = "beyond the snapshot")]
fn release_beyond_the_snapshot_panics() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let mut wal = Wal::create(disk, Path::new("/wal"), METADATA, small_segments()).unwrap();
    wal.append(&entries(1..=10, 1), None).unwrap();
    wal.record_snapshot(5, 1).unwrap();
    let _ = wal.release_to(6);
}

#[test]
fn local_snapshot_keeps_later_entries_and_leader_snapshot_replaces_the_log() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, WalOptions::default()).unwrap();
    wal.append(&entries(1..=10, 1), Some(&hard_state(1, 1, 8)))
        .unwrap();
    wal.record_snapshot(8, 1).unwrap();
    assert_eq!(wal.last_index(), 10);
    drop(wal);
    let (mut wal, contents) = reopen(&disk, &dir, WalOptions::default());
    assert_eq!(contents.snapshot, Some((8, 1)));
    assert_eq!(contents.entries, entries(9..=10, 1));

    // The leader sends a snapshot at 20, term 3, which our log does not hold.
    wal.record_snapshot(20, 3).unwrap();
    wal.append(&[], Some(&hard_state(3, 0, 20))).unwrap();
    assert_eq!(wal.last_index(), 20);
    wal.append(&[entry(21, 3)], None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, contents) = reopen(&disk, &dir, WalOptions::default());
    assert_eq!(contents.snapshot, Some((20, 3)));
    assert_eq!(contents.entries, vec![entry(21, 3)]);
    assert_eq!(contents.hard_state, hard_state(3, 0, 20));
}

#[test]
fn torn_tail_mid_record_recovers_the_prefix() {
    let (_temp, disk, dir) = fs_setup();
    five_entries(&disk, &dir);
    let path = last_segment(&*disk, &dir);
    let original = disk.read(&path).unwrap();
    let offsets = record_offsets(&*disk, &path);
    // Records: segment header, entries 1..=5, hard state. Cut inside entry 5 (index 5) at a few
    // places: in its header and in its payload.
    let (start, end) = (offsets[5] as usize, offsets[6] as usize);
    for cut in [
        start + 1,
        start + record::HEADER_BYTES - 1,
        start + record::HEADER_BYTES + 3,
        end - 1,
    ] {
        rewrite(&*disk, &path, &original[..cut]);
        let (mut wal, contents) = reopen(&disk, &dir, WalOptions::default());
        assert_eq!(contents.entries, entries(1..=4, 1), "cut at {cut}");
        assert_eq!(contents.hard_state, HardState::default(), "cut at {cut}");
        assert_eq!(
            disk.read(&path).unwrap().len(),
            start,
            "torn tail truncated"
        );
        assert_eq!(wal.last_index(), 4);
        // The log continues from the prefix.
        wal.append(&[entry(5, 2)], None).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, contents) = reopen(&disk, &dir, WalOptions::default());
        assert_eq!(contents.entries.last(), Some(&entry(5, 2)));
    }
}

#[test]
fn flipped_bit_in_the_last_record_is_treated_as_a_torn_tail() {
    let (_temp, disk, dir) = fs_setup();
    five_entries(&disk, &dir);
    let path = last_segment(&*disk, &dir);
    let original = disk.read(&path).unwrap();
    let last = *record_offsets(&*disk, &path).last().unwrap() as usize;
    // A bit in the header, then one in the payload, of the final hard state record.
    for at in [last + 5, original.len() - 1] {
        let mut damaged = original.clone();
        damaged[at] ^= 0x10;
        rewrite(&*disk, &path, &damaged);
        let (_, contents) = reopen(&disk, &dir, WalOptions::default());
        assert_eq!(contents.entries, entries(1..=5, 1));
        assert_eq!(
            contents.hard_state,
            HardState::default(),
            "the damaged hard state is dropped"
        );
        assert_eq!(disk.read(&path).unwrap(), original[..last].to_vec());
    }
}

#[test]
fn flipped_bit_in_a_middle_record_is_corrupt() {
    let (_temp, disk, dir) = fs_setup();
    five_entries(&disk, &dir);
    let path = last_segment(&*disk, &dir);
    let original = disk.read(&path).unwrap();
    let offsets = record_offsets(&*disk, &path);
    let entry_3 = offsets[3] as usize;
    // The length field in the header, the payload checksum, and the payload.
    for at in [
        entry_3 + 5,
        entry_3 + 13,
        entry_3 + record::HEADER_BYTES + 2,
    ] {
        let mut damaged = original.clone();
        damaged[at] ^= 0x01;
        rewrite(&*disk, &path, &damaged);
        match open_err(&disk, &dir) {
            WalError::Corrupt {
                segment,
                offset,
                reason,
            } => {
                assert_eq!(segment, path.display().to_string());
                assert_eq!(offset, entry_3 as u64, "{reason}");
                assert!(reason.contains("valid record follows"), "{reason}");
            }
            err => panic!("expected corruption, got {err}"),
        }
        // Refusing must not have touched the file.
        assert_eq!(disk.read(&path).unwrap(), damaged);
    }
}

#[test]
fn trailing_zero_bytes_are_truncated() {
    let (_temp, disk, dir) = fs_setup();
    five_entries(&disk, &dir);
    let path = last_segment(&*disk, &dir);
    let original = disk.read(&path).unwrap();
    for zeros in [1, record::HEADER_BYTES, 4096] {
        let mut padded = original.clone();
        padded.resize(original.len() + zeros, 0);
        rewrite(&*disk, &path, &padded);
        let (_, contents) = reopen(&disk, &dir, WalOptions::default());
        assert_eq!(contents.entries, entries(1..=5, 1));
        assert_eq!(contents.hard_state, hard_state(1, 1, 3));
        assert_eq!(disk.read(&path).unwrap(), original);
    }
}

#[test]
fn zero_bytes_followed_by_records_are_corrupt() {
    let (_temp, disk, dir) = fs_setup();
    five_entries(&disk, &dir);
    let path = last_segment(&*disk, &dir);
    let original = disk.read(&path).unwrap();
    let offsets = record_offsets(&*disk, &path);
    // A sector's worth of zeros over entries 2 and 3, with entries after them intact.
    let mut damaged = original.clone();
    let (start, end) = (offsets[2] as usize, offsets[4] as usize);
    damaged[start..end].fill(0);
    rewrite(&*disk, &path, &damaged);
    assert!(
        matches!(open_err(&disk, &dir), WalError::Corrupt { offset, .. } if offset == start as u64)
    );
}

#[test]
fn reopen_after_recovery_appends_more() {
    let disk = MemDisk::default();
    let dyn_disk: Arc<dyn Disk> = Arc::new(disk.clone());
    let dir = Path::new("/data/wal");
    // Large enough that the unsynced batch below does not roll (a roll syncs), small enough
    // that the rounds after recovery do.
    let opts = WalOptions {
        segment_bytes_max: 1500,
    };
    let mut wal = Wal::create(dyn_disk.clone(), dir, METADATA, opts).unwrap();
    wal.append(&entries(1..=20, 1), Some(&hard_state(1, 1, 10)))
        .unwrap();
    wal.sync().unwrap();
    // Buffered but never synced: lost in the crash.
    wal.append(&entries(21..=22, 1), Some(&hard_state(1, 1, 22)))
        .unwrap();
    drop(wal);
    disk.crash();

    let (mut wal, contents) = reopen(&dyn_disk, dir, opts);
    assert_eq!(contents.entries, entries(1..=20, 1));
    assert_eq!(contents.hard_state, hard_state(1, 1, 10));
    for round in 0..3u64 {
        let first = wal.last_index() + 1;
        wal.append(
            &entries(first..=first + 4, 2),
            Some(&hard_state(2, 1, first)),
        )
        .unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (reopened, contents) = reopen(&dyn_disk, dir, opts);
        assert_eq!(contents.entries.len() as u64, 20 + 5 * (round + 1));
        assert_eq!(contents.entries.last(), Some(&entry(first + 4, 2)));
        wal = reopened;
    }
    assert!(
        segment_paths(&*dyn_disk, dir).len() > 1,
        "the rounds rolled a segment"
    );
}

#[test]
fn unsynced_appends_are_lost_in_a_crash_and_synced_ones_survive() {
    let disk = MemDisk::default();
    let dyn_disk: Arc<dyn Disk> = Arc::new(disk.clone());
    let dir = Path::new("/wal");
    let mut wal = Wal::create(dyn_disk.clone(), dir, METADATA, WalOptions::default()).unwrap();
    wal.append(&entries(1..=3, 1), Some(&hard_state(1, 1, 1)))
        .unwrap();
    wal.sync().unwrap();
    wal.append(&entries(4..=6, 1), Some(&hard_state(1, 1, 5)))
        .unwrap();
    // Even handed to the file (as a large batch would be), unsynced bytes are not durable.
    wal.flush().unwrap();
    drop(wal);
    disk.crash();
    let (_, contents) = reopen(&dyn_disk, dir, WalOptions::default());
    assert_eq!(contents.entries, entries(1..=3, 1));
    assert_eq!(contents.hard_state, hard_state(1, 1, 1));
}

#[test]
fn failed_fsync_poisons_the_wal() {
    let disk = MemDisk::default();
    let dyn_disk: Arc<dyn Disk> = Arc::new(disk.clone());
    let dir = Path::new("/wal");
    let mut wal = Wal::create(dyn_disk.clone(), dir, METADATA, WalOptions::default()).unwrap();
    wal.append(&entries(1..=3, 1), None).unwrap();
    disk.fail_syncs(true);
    assert!(matches!(wal.sync(), Err(WalError::Io(_))));
    disk.fail_syncs(false);
    // A retry could report success for pages the kernel already dropped: refuse instead.
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    assert!(matches!(
        wal.append(&[entry(4, 1)], None),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(wal.record_snapshot(1, 1), Err(WalError::Poisoned)));
    drop(wal);
    disk.crash();
    let (_, contents) = reopen(&dyn_disk, dir, WalOptions::default());
    assert!(contents.entries.is_empty());
}

#[test]
fn missing_middle_segment_is_corrupt() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, small_segments()).unwrap();
    wal.append(&entries(1..=40, 1), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let paths = segment_paths(&*disk, &dir);
    assert!(paths.len() >= 3);
    disk.remove(&paths[1]).unwrap();
    match open_err(&disk, &dir) {
        WalError::Corrupt {
            segment, reason, ..
        } => {
            assert_eq!(segment, paths[2].display().to_string());
            assert!(reason.contains("missing"), "{reason}");
        }
        err => panic!("expected corruption, got {err}"),
    }
}

#[test]
fn missing_first_segment_is_corrupt() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, small_segments()).unwrap();
    wal.append(&entries(1..=40, 1), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let paths = segment_paths(&*disk, &dir);
    // Without a snapshot covering them, the entries of a deleted head are simply missing.
    disk.remove(&paths[0]).unwrap();
    match open_err(&disk, &dir) {
        WalError::Corrupt { reason, .. } => assert!(reason.contains("missing"), "{reason}"),
        err => panic!("expected corruption, got {err}"),
    }
}

#[test]
fn segment_whose_first_index_does_not_continue_the_log_is_corrupt() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, small_segments()).unwrap();
    wal.append(&entries(1..=20, 1), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    // A segment started with a well-formed header, chained to the last one, but one index past
    // where the log ends.
    let path = last_segment(&*disk, &dir);
    let last = SegmentName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
    let data = disk.read(&path).unwrap();
    let header = segment::Header {
        name: SegmentName {
            seq: last.seq + 1,
            first_index: 22,
        },
        previous: segment::Previous {
            bytes: data.len() as u64,
            checksum: crc32fast::hash(&data),
        },
        snapshot: None,
        hard_state: HardState::default(),
        metadata: METADATA.to_vec(),
    };
    write_segment(&*disk, &dir, &header).unwrap();
    match open_err(&disk, &dir) {
        WalError::Corrupt { reason, .. } => {
            assert!(reason.contains("log before it ends"), "{reason}")
        }
        err => panic!("expected corruption, got {err}"),
    }
}

#[test]
fn renamed_segment_is_corrupt() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, small_segments()).unwrap();
    wal.append(&entries(1..=20, 1), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let path = last_segment(&*disk, &dir);
    let mut name = SegmentName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
    name.first_index += 1;
    let renamed = dir.join(name.to_string());
    disk.rename(&path, &renamed).unwrap();
    match open_err(&disk, &dir) {
        WalError::Corrupt {
            segment, reason, ..
        } => {
            assert_eq!(segment, renamed.display().to_string());
            assert!(reason.contains("header belongs to segment"), "{reason}")
        }
        err => panic!("expected corruption, got {err}"),
    }
}

#[test]
fn damage_at_the_end_of_a_sealed_segment_is_corrupt() {
    let (_temp, disk, dir) = fs_setup();
    let mut wal = Wal::create(disk.clone(), &dir, METADATA, small_segments()).unwrap();
    wal.append(&entries(1..=40, 1), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    // Only the last segment may have a torn tail: the others were synced before the next began.
    let first = segment_paths(&*disk, &dir).remove(0);
    let data = disk.read(&first).unwrap();
    rewrite(&*disk, &first, &data[..data.len() - 1]);
    match open_err(&disk, &dir) {
        WalError::Corrupt {
            segment, reason, ..
        } => {
            assert_eq!(segment, first.display().to_string());
            assert!(reason.contains("complete and synced"), "{reason}");
        }
        err => panic!("expected corruption, got {err}"),
    }
}

#[test]
fn leftover_temporary_segment_is_removed_on_open() {
    let (_temp, disk, dir) = fs_setup();
    five_entries(&disk, &dir);
    // A crash while preparing the next segment leaves a half-written temporary file.
    let stray = dir.join(
        SegmentName {
            seq: 1,
            first_index: 6,
        }
        .temp_name(),
    );
    let mut file = disk.open_append(&stray).unwrap();
    file.append(b"half a header").unwrap();
    drop(file);
    let (mut wal, contents) = reopen(
        &disk,
        &dir,
        WalOptions {
            segment_bytes_max: 1,
        },
    );
    assert_eq!(contents.entries, entries(1..=5, 1));
    assert!(!disk.exists(&stray));
    // The next roll prepares that same segment cleanly.
    wal.append(&[entry(6, 1)], None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, contents) = reopen(&disk, &dir, WalOptions::default());
    assert_eq!(contents.entries, entries(1..=6, 1));
    assert_eq!(segment_paths(&*disk, &dir).len(), 2);
}

#[test]
#[should_panic(expected = "does not follow the last index")]
fn append_that_skips_an_index_panics() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let mut wal = Wal::create(disk, Path::new("/wal"), METADATA, WalOptions::default()).unwrap();
    wal.append(&entries(1..=3, 1), None).unwrap();
    let _ = wal.append(&[entry(5, 1)], None);
}

#[test]
#[should_panic(expected = "vote changes")]
fn vote_change_within_a_term_panics() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let mut wal = Wal::create(disk, Path::new("/wal"), METADATA, WalOptions::default()).unwrap();
    wal.append(&[], Some(&hard_state(3, 1, 0))).unwrap();
    let _ = wal.append(&[], Some(&hard_state(3, 2, 0)));
}

// ---------------------------------------------------------------------------------------------
// A model check: any sequence of operations a raft node may perform reads back as the log a
// simple in-memory model says it should be, across reopens, rolls and releases.

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` entries starting `back` entries before the end (an overwrite if > 0),
    /// optionally in a new term, optionally with a hard state.
    Append {
        back: u64,
        count: u64,
        new_term: bool,
        with_hard_state: bool,
    },
    /// A local snapshot at the commit index.
    LocalSnapshot,
    /// A snapshot from a leader, `ahead` entries beyond our log, in a new term.
    LeaderSnapshot {
        ahead: u64,
    },
    Release,
    Reopen,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0u64..4, 0u64..6, prop::bool::weighted(0.2), any::<bool>()).prop_map(
            |(back, count, new_term, with_hard_state)| Op::Append { back, count, new_term, with_hard_state }
        ),
        1 => Just(Op::LocalSnapshot),
        1 => (1u64..5).prop_map(|ahead| Op::LeaderSnapshot { ahead }),
        1 => Just(Op::Release),
        1 => Just(Op::Reopen),
    ];
    prop::collection::vec(op, 1..40)
}

#[derive(Debug, Default)]
struct Model {
    term: u64,
    hard_state: HardState,
    snapshot: Option<(u64, u64)>,
    entries: Vec<Entry>,
}

impl Model {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.map_or(0, |(index, _)| index)
    }

    fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    fn term_at(&self, index: u64) -> u64 {
        match self.snapshot {
            Some((i, t)) if i == index => t,
            _ if index == 0 => 0,
            _ => self.entries[(index - self.snapshot_index() - 1) as usize].term,
        }
    }

    fn contents(&self) -> WalContents {
        WalContents {
            metadata: METADATA.to_vec(),
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot,
            entries: self.entries.clone(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn wal_reads_back_what_a_model_of_the_raft_log_says(ops in ops(), segment_bytes_max in 200u64..2000) {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
        let dir = Path::new("/wal");
        let opts = WalOptions { segment_bytes_max };
        let mut wal = Wal::create(disk.clone(), dir, METADATA, opts).unwrap();
        let mut model = Model { term: 1, ..Model::default() };
        for op in ops {
            match op {
                Op::Append { back, count, new_term, with_hard_state } => {
                    if new_term {
                        model.term += 1;
                    }
                    // Raft only ever overwrites uncommitted entries after the snapshot.
                    let floor = model.hard_state.commit.max(model.snapshot_index()) + 1;
                    let start = (model.last_index() + 1).saturating_sub(back).max(floor);
                    let batch: Vec<Entry> =
                        (start..start + count).map(|index| entry(index, model.term)).collect();
                    if !batch.is_empty() {
                        model.entries.truncate((start - model.snapshot_index() - 1) as usize);
                        model.entries.extend_from_slice(&batch);
                    }
                    let hs = with_hard_state.then(|| {
                        let commit = model.last_index().saturating_sub(2).max(model.hard_state.commit);
                        hard_state(model.term, 1, commit)
                    });
                    wal.append(&batch, hs.as_ref()).unwrap();
                    if let Some(hs) = hs {
                        model.hard_state = hs;
                    }
                    wal.sync().unwrap();
                }
                Op::LocalSnapshot => {
                    let index = model.hard_state.commit;
                    if index > 0 {
                        let term = model.term_at(index);
                        wal.record_snapshot(index, term).unwrap();
                        let drop = (index - model.snapshot_index()) as usize;
                        model.entries.drain(..drop);
                        model.snapshot = Some((index, term));
                    }
                }
                Op::LeaderSnapshot { ahead } => {
                    model.term += 1;
                    let index = model.last_index() + ahead;
                    wal.record_snapshot(index, model.term).unwrap();
                    let hs = hard_state(model.term, 0, index);
                    wal.append(&[], Some(&hs)).unwrap();
                    wal.sync().unwrap();
                    model.snapshot = Some((index, model.term));
                    model.entries.clear();
                    model.hard_state = hs;
                }
                Op::Release => wal.release_to(model.snapshot_index()).unwrap(),
                Op::Reopen => {
                    drop(wal);
                    let (reopened, contents) = Wal::open(disk.clone(), dir, opts).unwrap();
                    prop_assert_eq!(contents, model.contents());
                    wal = reopened;
                }
            }
            prop_assert_eq!(wal.last_index(), model.last_index());
        }
        drop(wal);
        let (_, contents) = Wal::open(disk.clone(), dir, opts).unwrap();
        prop_assert_eq!(contents, model.contents());
    }
}

#[test]
fn record_spans_locate_each_entry_and_its_data() {
    let (_temp, disk, dir) = fs_setup();
    five_entries(&disk, &dir);
    let data = disk.read(&last_segment(&*disk, &dir)).unwrap();
    let spans = record_spans(&data);
    let indexes: Vec<u64> = spans
        .iter()
        .filter_map(|s| s.entry.as_ref().map(|(i, _)| *i))
        .collect();
    assert_eq!(indexes, vec![1, 2, 3, 4, 5]);
    assert_eq!(spans.last().unwrap().kind, RecordType::HardState);
    assert_eq!(spans.last().unwrap().payload.end, data.len() as u64);
    for span in &spans {
        if let Some((index, Some(range))) = &span.entry {
            let bytes = &data[range.start as usize..range.end as usize];
            assert_eq!(bytes, format!("entry {index} of term 1").as_bytes());
        }
    }
    // Damage ends the list instead of failing.
    let mut damaged = data.clone();
    let third = spans
        .iter()
        .position(|s| s.kind == RecordType::Entry)
        .unwrap()
        + 2;
    damaged[spans[third].offset as usize] ^= 1;
    assert_eq!(record_spans(&damaged), spans[..third].to_vec());
}

#[test]
fn a_flipped_bit_in_an_entry_that_is_not_last_is_refused() {
    let (_temp, disk, dir) = fs_setup();
    five_entries(&disk, &dir);
    let path = last_segment(&*disk, &dir);
    let data = disk.read(&path).unwrap();
    let spans = record_spans(&data);
    // Entry 4's data: followed by entry 5 and the hard state, so it cannot pass for a torn write.
    let range = spans
        .iter()
        .find_map(|s| match &s.entry {
            Some((4, Some(range))) => Some(range.clone()),
            _ => None,
        })
        .unwrap();
    let mut damaged = data.clone();
    damaged[range.start as usize + 2] ^= 0x10;
    rewrite(&*disk, &path, &damaged);
    match open_err(&disk, &dir) {
        WalError::Corrupt { reason, .. } => assert!(reason.contains("checksum"), "{reason}"),
        other => panic!("expected corruption, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers at the top of the range: refused as corruption, never an arithmetic overflow.

/// Appends framed records to a segment, as a writer other than this code (or damage) would.
fn append_raw(disk: &dyn Disk, path: &Path, records: &[(record::RecordType, Vec<u8>)]) {
    let mut data = disk.read(path).unwrap();
    for (kind, payload) in records {
        record::encode(&mut data, *kind, payload);
    }
    rewrite(disk, path, &data);
}

#[test]
fn snapshot_marker_at_the_largest_index_is_corrupt_not_an_overflow() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let dir = Path::new("/wal");
    five_entries(&disk, dir);
    let path = last_segment(&*disk, dir);
    let marker_at = disk.read(&path).unwrap().len() as u64;
    // A marker at u64::MAX leaves no index for the entry after it.
    append_raw(
        &*disk,
        &path,
        &[
            (
                record::RecordType::Snapshot,
                snapshot_payload(u64::MAX, 1).to_vec(),
            ),
            (
                record::RecordType::Entry,
                entry(6, 1).write_to_bytes().unwrap(),
            ),
        ],
    );
    match open_err(&disk, dir) {
        WalError::Corrupt {
            segment,
            offset,
            reason,
        } => {
            assert_eq!(segment, path.display().to_string());
            assert_eq!(offset, marker_at, "{reason}");
            assert!(reason.contains("largest index"), "{reason}");
        }
        err => panic!("expected corruption, got {err}"),
    }
}

#[test]
fn entry_at_the_largest_index_is_corrupt_not_an_overflow() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let dir = Path::new("/wal");
    five_entries(&disk, dir);
    let path = last_segment(&*disk, dir);
    let entry_at = disk.read(&path).unwrap().len() as u64 + 32;
    // A leader snapshot just below the top, then the one entry that would end the index space.
    append_raw(
        &*disk,
        &path,
        &[
            (
                record::RecordType::Snapshot,
                snapshot_payload(u64::MAX - 1, 1).to_vec(),
            ),
            (
                record::RecordType::Entry,
                entry(u64::MAX, 1).write_to_bytes().unwrap(),
            ),
        ],
    );
    match open_err(&disk, dir) {
        WalError::Corrupt {
            segment,
            offset,
            reason,
        } => {
            assert_eq!(segment, path.display().to_string());
            assert_eq!(offset, entry_at, "{reason}");
            assert!(reason.contains("largest index"), "{reason}");
        }
        err => panic!("expected corruption, got {err}"),
    }
}

#[test]
fn segment_sequence_number_at_the_top_is_corrupt_not_an_overflow() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let dir = Path::new("/wal");
    five_entries(&disk, dir);
    let path = last_segment(&*disk, dir);
    let data = disk.read(&path).unwrap();
    let top = |first_index| {
        dir.join(
            SegmentName {
                seq: u64::MAX,
                first_index,
            }
            .to_string(),
        )
    };
    // Alone, the segment could never roll; followed by another of the same number, the check
    // that numbers have no gap would overflow.
    disk.rename(&path, &top(1)).unwrap();
    for extra in [None, Some(top(6))] {
        if let Some(extra) = &extra {
            let mut file = disk.open_append(extra).unwrap();
            file.append(&data).unwrap();
            file.sync().unwrap();
        }
        match open_err(&disk, dir) {
            WalError::Corrupt {
                segment,
                offset,
                reason,
            } => {
                assert_eq!(segment, top(1).display().to_string());
                assert_eq!(offset, 0, "{reason}");
                assert!(reason.contains("sequence number"), "{reason}");
            }
            err => panic!("expected corruption, got {err}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Segment headers and the chain between segments.

/// A WAL whose last segment was started by a roll after a snapshot and a vote, so that its
/// header carries both. Returns the last segment, its header's length (the file's length when it
/// got its name) and the HardState.
fn rolled_with_vote(disk: &Arc<dyn Disk>, dir: &Path) -> (PathBuf, usize, HardState) {
    let mut wal = Wal::create(disk.clone(), dir, METADATA, small_segments()).unwrap();
    let hs = hard_state(2, 3, 1);
    wal.append(&[entry(1, 2)], Some(&hs)).unwrap();
    wal.record_snapshot(1, 2).unwrap();
    for index in 2.. {
        let before = segment_paths(&**disk, dir).len();
        // A roll happens before the entry's record, which stays buffered until the sync.
        wal.append(&[entry(index, 2)], None).unwrap();
        if segment_paths(&**disk, dir).len() > before {
            let path = last_segment(&**disk, dir);
            let header_bytes = disk.read(&path).unwrap().len();
            wal.sync().unwrap();
            return (path, header_bytes, hs);
        }
        wal.sync().unwrap();
    }
    unreachable!()
}

#[test]
fn last_segment_cut_inside_its_header_is_corrupt_and_the_vote_is_not_forgotten() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let dir = Path::new("/wal");
    let (path, header_bytes, hs) = rolled_with_vote(&disk, dir);
    let original = disk.read(&path).unwrap();
    // A segment gets its name only after its header is synced: no crash leaves it incomplete,
    // so recovery must not take a cut header for a torn tail and carry on without the vote.
    for cut in 0..header_bytes {
        rewrite(&*disk, &path, &original[..cut]);
        match open_err(&disk, dir) {
            WalError::Corrupt {
                segment,
                offset,
                reason,
            } => {
                assert_eq!(segment, path.display().to_string(), "cut at {cut}");
                assert_eq!(offset, 0, "cut at {cut}: {reason}");
                assert!(reason.contains("header"), "cut at {cut}: {reason}");
            }
            err => panic!("cut at {cut}: expected corruption, got {err}"),
        }
        assert_eq!(disk.read(&path).unwrap(), &original[..cut], "untouched");
    }
    // A cut after the header is a torn tail: the entry after it goes, the vote stays.
    rewrite(&*disk, &path, &original[..header_bytes + 3]);
    let (_, contents) = reopen(&disk, dir, small_segments());
    assert_eq!(contents.hard_state, hs);
    assert_eq!(contents.snapshot, Some((1, 2)));
    assert_eq!(disk.read(&path).unwrap(), &original[..header_bytes]);
}

#[test]
fn sealed_segment_cut_at_a_record_boundary_is_corrupt() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let dir = Path::new("/wal");
    let mut wal = Wal::create(disk.clone(), dir, METADATA, small_segments()).unwrap();
    for index in 1..=40 {
        wal.append(&[entry(index, 1)], None).unwrap();
        wal.append(&[], Some(&hard_state(1, 1, index - 1))).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let paths = segment_paths(&*disk, dir);
    assert!(paths.len() >= 3);
    let mut ends_with_hard_state = 0;
    for sealed in &paths[..paths.len() - 1] {
        let original = disk.read(sealed).unwrap();
        let scan = record::scan(&original, false).unwrap();
        if scan.records.last().unwrap().kind == record::RecordType::HardState {
            ends_with_hard_state += 1;
        }
        // Every boundary after the header, down to losing only the final record. When that is
        // a HardState, the next segment's header repeats it: nothing else shows the loss.
        for record in &scan.records[1..] {
            let cut = record.offset as usize;
            rewrite(&*disk, sealed, &original[..cut]);
            match open_err(&disk, dir) {
                WalError::Corrupt {
                    segment, reason, ..
                } => {
                    assert_eq!(segment, sealed.display().to_string(), "cut at {cut}");
                    assert!(reason.contains("cut short"), "cut at {cut}: {reason}");
                }
                err => panic!("cut at {cut}: expected corruption, got {err}"),
            }
        }
        rewrite(&*disk, sealed, &original);
    }
    assert!(ends_with_hard_state > 0, "no segment ends with a HardState");
    reopen(&disk, dir, small_segments());
}

#[test]
fn sealed_segment_rewritten_with_valid_records_is_corrupt() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let dir = Path::new("/wal");
    let mut wal = Wal::create(disk.clone(), dir, METADATA, small_segments()).unwrap();
    wal.append(&entries(1..=40, 1), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let first = segment_paths(&*disk, dir).remove(0);
    let data = disk.read(&first).unwrap();
    let offsets = record_offsets(&*disk, &first);
    // Entry 2 replaced by another entry 2 of the same size with a good checksum: every record
    // reads as valid and the log rules hold, only the chain can tell.
    let (start, end) = (offsets[2] as usize, offsets[3] as usize);
    let mut forged = entry(2, 1);
    forged.data = b"entry 2 of term X".to_vec().into();
    let mut replacement = Vec::new();
    record::encode(
        &mut replacement,
        record::RecordType::Entry,
        &forged.write_to_bytes().unwrap(),
    );
    assert_eq!(replacement.len(), end - start);
    let mut damaged = data.clone();
    damaged[start..end].copy_from_slice(&replacement);
    rewrite(&*disk, &first, &damaged);
    match open_err(&disk, dir) {
        WalError::Corrupt {
            segment, reason, ..
        } => {
            assert_eq!(segment, first.display().to_string());
            assert!(reason.contains("CRC-32"), "{reason}");
        }
        err => panic!("expected corruption, got {err}"),
    }
}

#[test]
fn segment_header_that_disagrees_with_the_log_before_it_is_corrupt() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::default());
    let dir = Path::new("/wal");
    let mut wal = Wal::create(disk.clone(), dir, METADATA, WalOptions::default()).unwrap();
    wal.append(&entries(1..=5, 2), Some(&hard_state(2, 3, 4)))
        .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let path = last_segment(&*disk, dir);
    let data = disk.read(&path).unwrap();
    // A next segment, chained correctly, whose header would hand the vote in term 2 to member 1:
    // taken at its word, it would make this member vote twice in one term.
    let header = segment::Header {
        name: SegmentName {
            seq: 1,
            first_index: 6,
        },
        previous: segment::Previous {
            bytes: data.len() as u64,
            checksum: crc32fast::hash(&data),
        },
        snapshot: None,
        hard_state: hard_state(2, 1, 4),
        metadata: METADATA.to_vec(),
    };
    write_segment(&*disk, dir, &header).unwrap();
    let next = last_segment(&*disk, dir);
    match open_err(&disk, dir) {
        WalError::Corrupt {
            segment,
            offset,
            reason,
        } => {
            assert_eq!(segment, next.display().to_string());
            assert_eq!(offset, 0, "{reason}");
            assert!(reason.contains("the log before it"), "{reason}");
        }
        err => panic!("expected corruption, got {err}"),
    }
    // With the HardState the log really had, the same segment opens.
    disk.remove(&next).unwrap();
    let header = segment::Header {
        hard_state: hard_state(2, 3, 4),
        ..header
    };
    write_segment(&*disk, dir, &header).unwrap();
    let (_, contents) = reopen(&disk, dir, WalOptions::default());
    assert_eq!(contents.hard_state, hard_state(2, 3, 4));
    assert_eq!(contents.entries, entries(1..=5, 2));
}
