//! WAL recovery on any bytes.
//!
//! Three kinds of input, chosen by the fuzzer:
//!
//! * `Raw`: arbitrary files, under segment names (and temporary and foreign names), with arbitrary
//!   bytes. Checks the framing and checksum code against anything.
//! * `Framed`: segments built from records with *valid* checksums (arbitrary types, entries,
//!   hard states, snapshot markers, segment headers that agree with the file name, the segment
//!   before and the records before them), so the fuzzer gets past the CRCs and the chain between
//!   segments to the log rules.
//! * `Written`: a WAL written through the real `Wal` API (appends with overwrites, hard states,
//!   snapshot markers, segment rolls, release of old segments) while a model tracks the log after
//!   every record, then damaged: a crash during the final sync (torn tail), a segment cut short
//!   anywhere (synced data lost), a flipped bit, zeros or garbage at the end, a lost segment, or
//!   the loss of everything appended after the last sync.
//!
//! Properties, on every input: `Wal::open` never panics. When it succeeds, the entries are
//! contiguous, start right after the snapshot marker (or at 1), never lower a term, the commit
//! index is within the log; opening again gives the same contents (recovery is idempotent), and
//! the WAL is usable: an entry appended and synced is there on the next open. For `Written`
//! inputs, whenever recovery succeeds the log, HardState and snapshot marker are exactly the
//! model's after some prefix of the records written (after every synced record when nothing was
//! damaged, after every record synced before the final sync when that sync was torn); a torn or
//! zero-filled tail is always recovered; a flipped bit in any segment but the last is always
//! refused. Damage recovery cannot detect is fine only if what it returns is such a prefix.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbitrary::Arbitrary;
use cairn::io::Disk;
use cairn::wal::{Wal, WalContents, WalError, WalOptions, INDEX_MAX};
use cairn_fuzz::{record, segment_name, MemDisk};
use libfuzzer_sys::fuzz_target;
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, HardState};

/// The WAL directory on the in-memory disk.
const DIR: &str = "/data/member/wal";

/// A number: mostly small (so logs line up and rules can be met), sometimes at the top of the
/// range (overflow), sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Num {
    Small(u8),
    NearMax(u8),
    Any(u64),
}

impl Num {
    fn get(self) -> u64 {
        match self {
            Num::Small(n) => n as u64,
            Num::NearMax(n) => u64::MAX - (n % 4) as u64,
            Num::Any(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Name {
    Segment { seq: Num, first_index: Num },
    Temp { seq: u8, first_index: u8 },
    Other(String),
}

impl Name {
    fn file_name(&self) -> String {
        match self {
            Name::Segment { seq, first_index } => segment_name(seq.get(), first_index.get()),
            Name::Temp { seq, first_index } => {
                format!("{}.tmp", segment_name(*seq as u64, *first_index as u64))
            }
            // Keep foreign names inside the directory.
            Name::Other(s) => s.replace(['/', '\0'], "_"),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RawFile {
    name: Name,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum FramedRecord {
    /// A segment header with this metadata, agreeing with the segment's name, the bytes of the
    /// segment built before it, and the last snapshot marker and hard state framed before it.
    /// (`Other` with type 5 frames arbitrary headers.)
    Header(Vec<u8>),
    Entry {
        index: Num,
        term: Num,
        conf_change: bool,
        data: Vec<u8>,
    },
    HardState {
        term: Num,
        vote: u8,
        commit: Num,
    },
    Snapshot {
        index: Num,
        term: Num,
    },
    /// Any type byte and payload, framed with good checksums.
    Other {
        kind: u8,
        payload: Vec<u8>,
    },
    /// Unframed bytes.
    Garbage(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct FramedSegment {
    name: Name,
    records: Vec<FramedRecord>,
}

/// One call on the real WAL. Arguments are shaped into what raft would do (see `Writer`).
#[derive(Arbitrary, Debug)]
enum Op {
    Append {
        /// How far before the end the first entry goes (0 = right after the last one).
        rewind: u8,
        /// Term increases, one per entry.
        terms: Vec<u8>,
        data: Vec<u8>,
        hard_state: Option<HsStep>,
    },
    HardState(HsStep),
    Sync,
    /// A local snapshot (compaction) at some committed index.
    LocalSnapshot {
        back: u8,
    },
    /// A snapshot from the leader, past the end of the log.
    LeaderSnapshot {
        ahead: u8,
        term_bump: u8,
    },
    Release {
        back: u8,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct HsStep {
    term_bump: u8,
    vote: u8,
    commit_ahead: u8,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    None,
    /// A crash during the final sync: the last segment keeps only part of what that sync wrote.
    /// Without a final sync, a cut anywhere after the last segment's header.
    Torn {
        at: u32,
    },
    /// Cut any segment anywhere (synced data lost: a disk fault, not a crash).
    Truncate {
        file: u8,
        at: u32,
    },
    Flip {
        file: u8,
        at: u32,
        bit: u8,
    },
    Zeros {
        bytes: u16,
    },
    Garbage(Vec<u8>),
    Delete {
        file: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<RawFile>),
    Framed(Vec<FramedSegment>, Damage),
    Written {
        metadata: Vec<u8>,
        segment_bytes_max: u16,
        ops: Vec<Op>,
        final_sync: bool,
        damage: Damage,
    },
}

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

fn entry(index: u64, term: u64, data: &[u8], conf_change: bool) -> Entry {
    let mut e = Entry {
        index,
        term,
        data: data.to_vec().into(),
        ..Default::default()
    };
    if conf_change {
        e.set_entry_type(EntryType::EntryConfChange);
    }
    e
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

/// The log as the WAL should hold it after some records: the model recovery must agree with.
#[derive(Debug, Clone, PartialEq, Default)]
struct Model {
    hard_state: HardState,
    snapshot: Option<(u64, u64)>,
    entries: Vec<Entry>,
}

impl Model {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.map_or(0, |(i, _)| i)
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return Some(self.snapshot.map_or(0, |(_, t)| t));
        }
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }

    fn last_term(&self) -> u64 {
        self.term_at(self.last_index()).unwrap_or(0)
    }

    fn push(&mut self, e: Entry) {
        self.entries.retain(|x| x.index < e.index);
        self.entries.push(e);
    }

    fn apply_snapshot(&mut self, index: u64, term: u64) {
        if self.term_at(index) == Some(term) {
            self.entries.retain(|e| e.index > index);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some((index, term));
    }

    fn matches(&self, c: &WalContents) -> bool {
        self.hard_state == c.hard_state && self.snapshot == c.snapshot && self.entries == c.entries
    }
}

/// Drives the real WAL with raft-shaped calls and records the model after every record.
struct Writer {
    wal: Wal,
    model: Model,
    /// The model after every record written, in order (the first is the empty log).
    states: Vec<Model>,
    /// `states[synced..]` are the states a crash may leave (everything before was synced).
    synced: usize,
}

impl Writer {
    fn record(&mut self) {
        self.states.push(self.model.clone());
    }

    fn hs_step(&self, step: HsStep, last_index: u64) -> Option<HardState> {
        let prev = &self.model.hard_state;
        if prev.commit > last_index {
            return None;
        }
        let term = prev.term + (step.term_bump % 3) as u64;
        let vote = if term == prev.term && prev.vote != 0 {
            prev.vote
        } else {
            (step.vote % 4) as u64
        };
        let commit = (prev.commit + step.commit_ahead as u64).min(last_index);
        Some(hard_state(term, vote, commit))
    }

    fn run(&mut self, op: &Op) -> Result<(), WalError> {
        match op {
            Op::Append {
                rewind,
                terms,
                data,
                hard_state,
            } => {
                let m = &self.model;
                // Never rewrite committed entries or entries under the snapshot: raft does not.
                let floor = m.hard_state.commit.max(m.snapshot_index()) + 1;
                let first = (m.last_index() + 1)
                    .saturating_sub(*rewind as u64)
                    .max(floor);
                let mut term = m.term_at(first - 1).unwrap_or(0);
                let mut entries = Vec::new();
                for (i, bump) in terms.iter().take(32).enumerate() {
                    term += (*bump % 3) as u64;
                    let d = &data[..data.len().min(i * 3)];
                    entries.push(entry(first + i as u64, term, d, bump % 7 == 0));
                }
                let last_index = entries.last().map_or(m.last_index(), |e| e.index);
                let hs = hard_state.and_then(|s| self.hs_step(s, last_index));
                self.wal.append(&entries, hs.as_ref())?;
                for e in entries {
                    self.model.push(e);
                    self.record();
                }
                if let Some(hs) = hs {
                    self.model.hard_state = hs;
                    self.record();
                }
            }
            Op::HardState(step) => {
                if let Some(hs) = self.hs_step(*step, self.model.last_index()) {
                    self.wal.append(&[], Some(&hs))?;
                    self.model.hard_state = hs;
                    self.record();
                }
            }
            Op::Sync => {
                self.wal.sync()?;
                self.synced = self.states.len() - 1;
            }
            Op::LocalSnapshot { back } => {
                let m = &self.model;
                let lo = m.snapshot_index();
                let hi = m.hard_state.commit.min(m.last_index());
                if hi >= lo {
                    let index = hi - (*back as u64).min(hi - lo);
                    let term = m
                        .term_at(index)
                        .expect("the model knows every term from the snapshot on");
                    self.wal.record_snapshot(index, term)?;
                    self.model.apply_snapshot(index, term);
                    self.record();
                    self.synced = self.states.len() - 1;
                }
            }
            Op::LeaderSnapshot { ahead, term_bump } => {
                let m = &self.model;
                let index = m.last_index() + 1 + *ahead as u64;
                let term = m.last_term().max(m.hard_state.term) + (*term_bump % 3) as u64;
                self.wal.record_snapshot(index, term)?;
                self.model.apply_snapshot(index, term);
                self.record();
                self.synced = self.states.len() - 1;
            }
            Op::Release { back } => {
                let index = self.model.snapshot_index().saturating_sub(*back as u64);
                self.wal.release_to(index)?;
            }
        }
        Ok(())
    }
}

/// The segments in the directory, in order (by name, as recovery sees them).
fn segments(disk: &MemDisk) -> Vec<PathBuf> {
    disk.files()
        .into_keys()
        .filter(|p| p.parent() == Some(Path::new(DIR)) && p.to_string_lossy().ends_with(".wal"))
        .collect()
}

/// What kind of result a damage allows.
enum Expect {
    /// Must open, with one of these states.
    Ok,
    /// Must be refused.
    Err,
    /// Either; if it opens, the state is one of these.
    Either,
    /// Either, and an opened state need not be one the model knows (new valid records).
    Anything,
}

/// `in_flight`: the last segment and its length before the final sync, when there was one.
fn damage(disk: &MemDisk, d: &Damage, in_flight: Option<(&Path, usize)>) -> Expect {
    let segs = segments(disk);
    let Some(last) = segs.last().cloned() else {
        return Expect::Anything;
    };
    let pick = |i: u8| segs[i as usize % segs.len()].clone();
    match d {
        Damage::None => Expect::Ok,
        Damage::Torn { at } => {
            let f = disk.file(&last).expect("listed");
            match in_flight {
                Some((path, before)) if path == last => {
                    // Those bytes were never acknowledged: recovery must cut them and open.
                    let cut = before + *at as usize % (f.data.len() - before + 1);
                    disk.set_data(&last, f.data[..cut].to_vec());
                    Expect::Ok
                }
                _ => {
                    // Synced bytes may be lost too: that is damage, which may be refused (a
                    // released segment's entries may be covered only by the cut marker).
                    let cut = f.named_bytes + *at as usize % (f.data.len() - f.named_bytes + 1);
                    disk.set_data(&last, f.data[..cut].to_vec());
                    Expect::Either
                }
            }
        }
        Damage::Truncate { file, at } => {
            let path = pick(*file);
            let f = disk.file(&path).expect("listed");
            let cut = *at as usize % (f.data.len() + 1);
            disk.set_data(&path, f.data[..cut].to_vec());
            if path != last && cut < f.data.len() {
                // The next segment's header recorded this one's length and checksum.
                Expect::Err
            } else if cut < f.named_bytes {
                // A segment's header was synced before it got its name: never a torn tail.
                Expect::Err
            } else {
                // The last segment cut after its header looks like a crash that lost the end.
                Expect::Either
            }
        }
        Damage::Flip { file, at, bit } => {
            let path = pick(*file);
            let mut data = disk.file(&path).expect("listed").data;
            if data.is_empty() {
                return Expect::Either;
            }
            let at = *at as usize % data.len();
            data[at] ^= 1 << (bit % 8);
            let named_bytes = disk.file(&path).expect("listed").named_bytes;
            disk.set_data(&path, data);
            // CRC-32 catches every single-bit error: a sealed segment, or any segment's header,
            // must be refused.
            if path == last && at >= named_bytes {
                Expect::Either
            } else {
                Expect::Err
            }
        }
        Damage::Zeros { bytes } => {
            let mut data = disk.file(&last).expect("listed").data;
            data.resize(data.len() + *bytes as usize, 0);
            disk.set_data(&last, data);
            Expect::Ok
        }
        Damage::Garbage(bytes) => {
            let mut data = disk.file(&last).expect("listed").data;
            data.extend_from_slice(bytes);
            disk.set_data(&last, data);
            Expect::Anything
        }
        Damage::Delete { file } => {
            disk.delete(&pick(*file));
            Expect::Either
        }
    }
}

/// The properties of any successful recovery.
fn check_contents(c: &WalContents) {
    let snapshot_index = c.snapshot.map_or(0, |(i, _)| i);
    let mut prev_term = c.snapshot.map_or(0, |(_, t)| t);
    for (k, e) in c.entries.iter().enumerate() {
        assert_eq!(
            e.index,
            snapshot_index + 1 + k as u64,
            "entries not contiguous after the snapshot: {c:?}"
        );
        assert!(
            e.term >= prev_term,
            "entry {} lowers the term: {c:?}",
            e.index
        );
        prev_term = e.term;
    }
    let last_index = c.entries.last().map_or(snapshot_index, |e| e.index);
    assert!(
        c.hard_state.commit <= last_index,
        "commit beyond the log: {c:?}"
    );
}

/// After a successful open: reopening gives the same, and an appended entry survives.
fn check_usable(disk: &MemDisk, wal: Wal, contents: &WalContents) {
    drop(wal);
    let arc: Arc<dyn Disk> = Arc::new(disk.clone());
    let (mut wal, again) = Wal::open(arc.clone(), &dir(), WalOptions::default())
        .unwrap_or_else(|e| panic!("a WAL that opened fails to open again: {e}"));
    assert_eq!(&again, contents, "recovery is not idempotent");

    let last_index = wal.last_index();
    if last_index >= INDEX_MAX {
        // The log is full: no index is left for another entry (raft never gets here).
        return;
    }
    let index = last_index + 1;
    let term = contents
        .entries
        .iter()
        .map(|e| e.term)
        .chain(contents.snapshot.map(|(_, t)| t))
        .chain([contents.hard_state.term])
        .max()
        .unwrap_or(0);
    let e = entry(index, term, b"after recovery", false);
    wal.append(std::slice::from_ref(&e), None)
        .expect("append after recovery");
    wal.sync().expect("sync after recovery");
    drop(wal);
    let (_, after) = Wal::open(arc, &dir(), WalOptions::default())
        .unwrap_or_else(|err| panic!("reopen after an append fails: {err}"));
    let mut want = contents.clone();
    want.entries.push(e);
    assert_eq!(
        after, want,
        "the entry appended after recovery is not recovered"
    );
}

fn open(disk: &MemDisk) -> Result<(Wal, WalContents), WalError> {
    Wal::open(Arc::new(disk.clone()), &dir(), WalOptions::default())
}

fn framed(disk: &MemDisk, segs: &[FramedSegment]) {
    // What a header must agree with: the segment before, the last marker and hard state.
    let mut previous: Vec<u8> = Vec::new();
    let mut snapshot = None;
    let mut hs = HardState::default();
    for seg in segs.iter().take(8) {
        let mut data = Vec::new();
        let (seq, first_index) = match &seg.name {
            Name::Segment { seq, first_index } => (seq.get(), first_index.get()),
            Name::Temp { seq, first_index } => (*seq as u64, *first_index as u64),
            Name::Other(_) => (0, 0),
        };
        for r in seg.records.iter().take(64) {
            match r {
                FramedRecord::Header(m) => {
                    let (previous_bytes, previous_checksum) = if seq == 0 {
                        (0, 0)
                    } else {
                        (previous.len() as u64, crc32fast::hash(&previous))
                    };
                    let h = record::Header {
                        seq,
                        first_index,
                        previous_bytes,
                        previous_checksum,
                        snapshot,
                        hard_state: hs.write_to_bytes().unwrap(),
                        metadata: m.clone(),
                    };
                    record::encode(
                        &mut data,
                        record::SEGMENT_HEADER,
                        &record::header_payload(&h),
                    );
                }
                FramedRecord::Entry {
                    index,
                    term,
                    conf_change,
                    data: d,
                } => {
                    let e = entry(index.get(), term.get(), d, *conf_change);
                    record::encode(&mut data, record::ENTRY, &e.write_to_bytes().unwrap());
                }
                FramedRecord::HardState { term, vote, commit } => {
                    hs = hard_state(term.get(), *vote as u64, commit.get());
                    record::encode(&mut data, record::HARD_STATE, &hs.write_to_bytes().unwrap());
                }
                FramedRecord::Snapshot { index, term } => {
                    snapshot = Some((index.get(), term.get()));
                    record::encode(
                        &mut data,
                        record::SNAPSHOT,
                        &record::snapshot_payload(index.get(), term.get()),
                    )
                }
                FramedRecord::Other { kind, payload } => record::encode(&mut data, *kind, payload),
                FramedRecord::Garbage(g) => data.extend_from_slice(g),
            }
        }
        disk.put(&dir().join(seg.name.file_name()), data.clone());
        previous = data;
    }
}

fuzz_target!(|input: Input| {
    let disk = MemDisk::new();
    disk.create_dir_all(&dir()).unwrap();
    let (expect, states, lo) = match &input {
        Input::Raw(files) => {
            for f in files.iter().take(8) {
                disk.put(&dir().join(f.name.file_name()), f.data.clone());
            }
            (Expect::Anything, Vec::new(), 0)
        }
        Input::Framed(segs, d) => {
            framed(&disk, segs);
            damage(&disk, d, None);
            (Expect::Anything, Vec::new(), 0)
        }
        Input::Written {
            metadata,
            segment_bytes_max,
            ops,
            final_sync,
            damage: d,
        } => {
            let opts = WalOptions {
                segment_bytes_max: 64 + *segment_bytes_max as u64 % 4096,
            };
            let wal = Wal::create(Arc::new(disk.clone()), &dir(), metadata, opts)
                .expect("create on an empty in-memory disk");
            let mut w = Writer {
                wal,
                model: Model::default(),
                states: vec![Model::default()],
                synced: 0,
            };
            for op in ops.iter().take(64) {
                w.run(op).expect("the in-memory disk never fails");
            }
            let synced_before = w.synced;
            let mut in_flight = None;
            if *final_sync {
                let last = segments(&disk).pop().expect("a wal has a segment");
                let before = disk.file(&last).expect("listed").data.len();
                w.wal.sync().expect("sync");
                w.synced = w.states.len() - 1;
                in_flight = Some((last, before));
            }
            // A crash: whatever was only buffered is gone.
            drop(w.wal);
            let expect = damage(&disk, d, in_flight.as_ref().map(|(p, n)| (p.as_path(), *n)));
            // Undamaged (or only zero-extended), everything synced must come back; torn during
            // the final sync, everything synced before it.
            let lo = match (d, &expect) {
                (Damage::None | Damage::Zeros { .. }, _) => w.synced,
                (Damage::Torn { .. }, Expect::Ok) => synced_before,
                _ => 0,
            };
            (expect, w.states, lo)
        }
    };

    let result = open(&disk);
    if let Ok((_, c)) = &result {
        check_contents(c);
    }
    match expect {
        Expect::Anything => {}
        Expect::Ok | Expect::Either => {
            if let Ok((_, c)) = &result {
                assert!(
                    states[lo..].iter().any(|m| m.matches(c)),
                    "recovered {c:?}, not the log after any prefix of the records written (from {lo} of {})",
                    states.len()
                );
            } else if matches!(expect, Expect::Ok) {
                panic!(
                    "a torn tail was refused: {}",
                    result.as_ref().err().unwrap()
                );
            }
        }
        Expect::Err => {
            if let Ok((_, c)) = &result {
                panic!("damage to a sealed segment went unnoticed: recovered {c:?}");
            }
        }
    }
    if let Ok((wal, c)) = result {
        check_usable(&disk, wal, &c);
    }
});
