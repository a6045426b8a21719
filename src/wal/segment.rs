//! Segment files: their names, and the header record every segment starts with.
//!
//! A segment is named `{seq:016x}-{first_index:016x}.wal`: `seq` counts segments from zero, with
//! no gaps, and `first_index` is the index the next entry had when the segment was started (the
//! log's last index plus one). Fixed-width lowercase hex makes lexicographic order equal log order,
//! so a sorted directory listing is the log. A segment being written before it is complete carries
//! the extra suffix `.tmp`; recovery deletes such files, because a segment only gets its final name
//! once its header is synced.
//!
//! The header is the first record of every segment (record type 5, see `record.rs`), and the only
//! one of its type. Its payload, integers little endian:
//!
//! ```text
//! offset  bytes  field
//!      0      4  format version, u32: 1 (FORMAT_VERSION)
//!      4      8  seq, as in the file name
//!     12      8  first_index, as in the file name
//!     20      8  previous_bytes: length of segment seq-1 when this one was started (0 for seq 0)
//!     28      4  previous_checksum: CRC-32 of those bytes (0 for seq 0)
//!     32      1  1 if a snapshot marker follows, 0 if not
//!     33      8  snapshot index (0 without a marker)
//!     41      8  snapshot term (0 without a marker)
//!     49      4  hard_state_bytes, u32
//!     53      n  the latest HardState, protobuf encoded
//!   53+n      4  metadata_bytes, u32
//!   57+n      m  the metadata given at create
//! ```
//!
//! Nothing may follow the metadata. `previous_*` chain each segment to the one before it: a
//! segment is only ever appended to while it is the last, so once the next one is started its
//! length and content are final, and recovery checks them against what the next header recorded.

use std::fmt;

use ::raft::eraftpb::HardState;
use protobuf::Message as _;

/// Suffix of a complete segment.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment still being prepared (see the module doc).
pub const TEMP_SUFFIX: &str = ".wal.tmp";

/// Characters in a segment file name: two 16-digit hex numbers, a dash and the suffix.
const NAME_CHARS: usize = 16 + 1 + 16 + SEGMENT_SUFFIX.len();

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    /// Position in the sequence of segments, from zero, without gaps.
    pub seq: u64,
    /// The log's last index plus one when this segment was started.
    pub first_index: u64,
}

impl SegmentName {
    /// Parses a file name; `None` for anything that is not a complete segment's name.
    pub fn parse(name: &str) -> Option<SegmentName> {
        if name.len() != NAME_CHARS || !name.is_ascii() || !name.ends_with(SEGMENT_SUFFIX) {
            return None;
        }
        let (seq, rest) = name.split_at(16);
        let first_index = rest.strip_prefix('-')?.strip_suffix(SEGMENT_SUFFIX)?;
        let hex = |s: &str| {
            // `from_str_radix` accepts upper case and a leading `+`: insist on exactly what we
            // write so that a name maps to one segment only.
            let ok = s.len() == 16
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if ok {
                u64::from_str_radix(s, 16).ok()
            } else {
                None
            }
        };
        Some(SegmentName {
            seq: hex(seq)?,
            first_index: hex(first_index)?,
        })
    }

    /// The name while the segment is being prepared.
    pub fn temp_name(&self) -> String {
        format!("{:016x}-{:016x}{TEMP_SUFFIX}", self.seq, self.first_index)
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}-{:016x}{SEGMENT_SUFFIX}",
            self.seq, self.first_index
        )
    }
}

/// The version of the on-disk format, carried by every segment header. Version 1 introduced the
/// single header record and the chain between segments; earlier WALs started with a metadata
/// record (type 1) and are not read.
pub const FORMAT_VERSION: u32 = 1;

/// Bytes of a header payload before its two variable fields.
const HEADER_FIXED_BYTES: usize = 49;

/// What a segment's length and checksum were when the next segment was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Previous {
    pub bytes: u64,
    pub checksum: u32,
}

/// The first record of every segment: where it stands in the log and what the log was when it
/// was started. See the module documentation for the byte layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub name: SegmentName,
    /// The segment before this one (all zero for the first segment ever written).
    pub previous: Previous,
    /// The last snapshot marker written before this segment, (index, term).
    pub snapshot: Option<(u64, u64)>,
    /// The latest HardState written before this segment.
    pub hard_state: HardState,
    pub metadata: Vec<u8>,
}

impl Header {
    pub fn encode(&self) -> Result<Vec<u8>, protobuf::ProtobufError> {
        let hard_state = self.hard_state.write_to_bytes()?;
        let mut buf =
            Vec::with_capacity(HEADER_FIXED_BYTES + 8 + hard_state.len() + self.metadata.len());
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&self.name.seq.to_le_bytes());
        buf.extend_from_slice(&self.name.first_index.to_le_bytes());
        buf.extend_from_slice(&self.previous.bytes.to_le_bytes());
        buf.extend_from_slice(&self.previous.checksum.to_le_bytes());
        let (index, term) = self.snapshot.unwrap_or((0, 0));
        buf.push(u8::from(self.snapshot.is_some()));
        buf.extend_from_slice(&index.to_le_bytes());
        buf.extend_from_slice(&term.to_le_bytes());
        debug_assert_eq!(buf.len(), HEADER_FIXED_BYTES);
        for field in [&hard_state, &self.metadata] {
            let len = u32::try_from(field.len()).expect("header fields are small");
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(field);
        }
        Ok(buf)
    }

    /// Decodes a header payload; the error says what is wrong with it. Total on any bytes.
    pub fn decode(payload: &[u8]) -> Result<Header, String> {
        let mut r = Reader(payload);
        let version = r.u32().ok_or("header too short")?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this code reads version {FORMAT_VERSION}"
            ));
        }
        let truncated = || "header too short".to_string();
        let seq = r.u64().ok_or_else(truncated)?;
        let first_index = r.u64().ok_or_else(truncated)?;
        let previous = Previous {
            bytes: r.u64().ok_or_else(truncated)?,
            checksum: r.u32().ok_or_else(truncated)?,
        };
        let has_snapshot = r.bytes(1).ok_or_else(truncated)?[0];
        let index = r.u64().ok_or_else(truncated)?;
        let term = r.u64().ok_or_else(truncated)?;
        let snapshot = match has_snapshot {
            0 if (index, term) == (0, 0) => None,
            1 => Some((index, term)),
            _ => return Err("invalid snapshot marker in header".into()),
        };
        let hard_state = r.field().ok_or_else(truncated)?;
        let hard_state = HardState::parse_from_bytes(hard_state)
            .map_err(|e| format!("undecodable hard state in header: {e}"))?;
        let metadata = r.field().ok_or_else(truncated)?.to_vec();
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the header's fields", r.0.len()));
        }
        Ok(Header {
            name: SegmentName { seq, first_index },
            previous,
            snapshot,
            hard_state,
            metadata,
        })
    }
}

/// Reads fields off the front of a byte slice; `None` when too few bytes remain.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    /// A u32 length, then that many bytes.
    fn field(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.bytes(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(seq: u64, first_index: u64, snapshot: Option<(u64, u64)>) -> Header {
        Header {
            name: SegmentName { seq, first_index },
            previous: Previous {
                bytes: 1234,
                checksum: 0xdead_beef,
            },
            snapshot,
            hard_state: HardState {
                term: 3,
                vote: 2,
                commit: 9,
                ..HardState::default()
            },
            metadata: b"member 1".to_vec(),
        }
    }

    #[test]
    fn headers_round_trip_and_any_cut_is_refused() {
        for snapshot in [None, Some((7, 2))] {
            let h = header(4, 11, snapshot);
            let bytes = h.encode().unwrap();
            assert_eq!(Header::decode(&bytes), Ok(h));
            for cut in 0..bytes.len() {
                assert!(Header::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Header::decode(&longer).is_err());
            let mut other_version = bytes.clone();
            other_version[0] = 2;
            assert!(Header::decode(&other_version)
                .unwrap_err()
                .contains("version"));
        }
    }

    #[test]
    fn names_that_are_not_segments_are_ignored() {
        for name in [
            "",
            "0000000000000000-0000000000000001.wal.tmp",
            "0000000000000000-000000000000000A.wal",
            "000000000000000-00000000000000001.wal",
            "+000000000000000-0000000000000001.wal",
            "0000000000000000_0000000000000001.wal",
            "0000000000000000-0000000000000001.log",
            "snapshot.db",
        ] {
            assert_eq!(SegmentName::parse(name), None, "{name}");
        }
    }

    proptest! {
        #[test]
        fn names_round_trip_and_sort_in_log_order(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let a = SegmentName { seq: a.0, first_index: a.1 };
            let b = SegmentName { seq: b.0, first_index: b.1 };
            prop_assert_eq!(SegmentName::parse(&a.to_string()), Some(a));
            prop_assert_eq!(a.to_string().cmp(&b.to_string()), a.cmp(&b));
        }
    }
}
