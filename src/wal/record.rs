//! Record framing: how one record is laid out in a segment, and how a segment's bytes are read
//! back, telling a torn tail (cut away) from corruption (refused).
//!
//! ```text
//! offset  bytes  field
//!      0      4  header_checksum   CRC-32 of bytes 4..16, little endian
//!      4      4  payload_bytes     length of the payload, u32 little endian
//!      8      1  record type       2 entry, 3 hard state, 4 snapshot marker, 5 segment header
//!      9      3  reserved          zero
//!     12      4  payload_checksum  CRC-32 of (record type ‖ payload), little endian
//!     16      n  payload
//! ```
//!
//! The header has its own checksum so that a damaged length is never trusted: without it, a bit
//! flip in the length of a record in the middle of a file could point past the end of the file and
//! make the rest of the file look like a torn tail. Zero is not a valid record type and the CRC-32
//! of twelve zero bytes is not zero, so a run of zero bytes (a file extended by the file system but
//! never written) never reads as a record.

use std::fmt;

/// Bytes in a record header.
pub const HEADER_BYTES: usize = 16;

/// The largest payload a record may carry. An entry larger than this is refused at append, and a
/// header that claims more is damage, not data: without a limit, a corrupt length would make
/// recovery try to allocate gigabytes.
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The kinds of record. The numbers are part of the on-disk format: never renumber them, and
/// never reuse 1 (the metadata record that started a segment before format version 1; reading
/// one is refused as an unknown type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// A raft `Entry`, protobuf encoded.
    Entry = 2,
    /// A raft `HardState`, protobuf encoded.
    HardState = 3,
    /// A snapshot marker: index and term, two u64 little endian.
    Snapshot = 4,
    /// The first record of every segment and only there: see `segment.rs`.
    Header = 5,
}

impl RecordType {
    fn from_byte(byte: u8) -> Option<RecordType> {
        match byte {
            2 => Some(RecordType::Entry),
            3 => Some(RecordType::HardState),
            4 => Some(RecordType::Snapshot),
            5 => Some(RecordType::Header),
            _ => None,
        }
    }
}

/// Appends one framed record to `buf`.
pub fn encode(buf: &mut Vec<u8>, kind: RecordType, payload: &[u8]) {
    // Callers check the size and return an error first; reaching this with a larger payload is a
    // bug, and writing it would produce a record recovery refuses.
    assert!(
        payload.len() <= RECORD_BYTES_MAX,
        "record payload of {} bytes",
        payload.len()
    );
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // header checksum, filled in below
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(&[0; 3]);
    buf.extend_from_slice(&payload_checksum(kind as u8, payload).to_le_bytes());
    let header_checksum = crc32fast::hash(&buf[start + 4..start + HEADER_BYTES]);
    buf[start..start + 4].copy_from_slice(&header_checksum.to_le_bytes());
    buf.extend_from_slice(payload);
    debug_assert_eq!(buf.len() - start, HEADER_BYTES + payload.len());
}

fn payload_checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// One record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordType,
    pub payload: &'a [u8],
    /// Where the record's header starts in the segment.
    pub offset: u64,
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bad {
    /// Fewer than a header's worth of bytes remain.
    HeaderTruncated { remaining: usize },
    /// The header checksum does not match: nothing in the header can be trusted, not even the
    /// length, so we do not know where this record would end.
    HeaderChecksum,
    /// The header checksum matches but the header says something this code never writes (an
    /// unknown type, a length over the limit, reserved bits set). This is not a torn write.
    HeaderInvalid { reason: String },
    /// The header is sound and the payload runs past the end of the file.
    PayloadTruncated { payload_bytes: usize, end: usize },
    /// The header is sound and the payload does not match its checksum.
    PayloadChecksum { end: usize },
}

impl Bad {
    /// Where the damaged record ends, when its header can be trusted to say so.
    fn end(&self) -> Option<usize> {
        match self {
            Bad::PayloadTruncated { end, .. } | Bad::PayloadChecksum { end } => Some(*end),
            Bad::HeaderTruncated { .. } | Bad::HeaderChecksum | Bad::HeaderInvalid { .. } => None,
        }
    }
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::HeaderTruncated { remaining } => {
                write!(
                    f,
                    "partial record header ({remaining} of {HEADER_BYTES} bytes)"
                )
            }
            Bad::HeaderChecksum => write!(f, "record header checksum mismatch"),
            Bad::HeaderInvalid { reason } => write!(f, "invalid record header: {reason}"),
            Bad::PayloadTruncated { payload_bytes, end } => {
                write!(
                    f,
                    "partial record ({payload_bytes} byte payload would end at {end})"
                )
            }
            Bad::PayloadChecksum { .. } => write!(f, "record payload checksum mismatch"),
        }
    }
}

/// Decodes the record whose header starts at `offset`, returning it and the offset after it.
fn decode_at(data: &[u8], offset: usize) -> Result<(Record<'_>, usize), Bad> {
    let remaining = data.len() - offset;
    if remaining < HEADER_BYTES {
        return Err(Bad::HeaderTruncated { remaining });
    }
    let header = &data[offset..offset + HEADER_BYTES];
    let header_checksum = u32::from_le_bytes(header[0..4].try_into().unwrap());
    if crc32fast::hash(&header[4..HEADER_BYTES]) != header_checksum {
        return Err(Bad::HeaderChecksum);
    }
    let payload_bytes = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
    let kind = RecordType::from_byte(header[8]).ok_or_else(|| Bad::HeaderInvalid {
        reason: format!("unknown record type {}", header[8]),
    })?;
    if header[9..12] != [0; 3] {
        return Err(Bad::HeaderInvalid {
            reason: "reserved header bytes are not zero".into(),
        });
    }
    if payload_bytes > RECORD_BYTES_MAX {
        return Err(Bad::HeaderInvalid {
            reason: format!("payload of {payload_bytes} bytes exceeds {RECORD_BYTES_MAX}"),
        });
    }
    let start = offset + HEADER_BYTES;
    let end = start + payload_bytes;
    if end > data.len() {
        return Err(Bad::PayloadTruncated { payload_bytes, end });
    }
    let payload = &data[start..end];
    let expected = u32::from_le_bytes(header[12..16].try_into().unwrap());
    if payload_checksum(header[8], payload) != expected
        && !crate::bugs::active(crate::bugs::Bug::SkipWalChecksum)
    {
        return Err(Bad::PayloadChecksum { end });
    }
    Ok((
        Record {
            kind,
            payload,
            offset: offset as u64,
        },
        end,
    ))
}

/// The first offset at or after `from` where a complete, valid record starts, if any.
///
/// This is how recovery tells a torn tail from corruption: a write torn by a crash is the last
/// thing in the file, so if any valid record follows the damage, the damage is in the middle.
/// The search tries every byte offset, because after damage we no longer know where records
/// start; the header checksum makes each try cheap. It is only run on the damaged path.
fn find_valid_record(data: &[u8], from: usize) -> Option<usize> {
    if data.len() < HEADER_BYTES {
        return None;
    }
    (from..=data.len() - HEADER_BYTES).find(|&p| decode_at(data, p).is_ok())
}

/// The valid records of a segment, and what was cut from its end.
#[derive(Debug)]
pub struct Scan<'a> {
    pub records: Vec<Record<'a>>,
    /// Bytes of valid records from the start: the length to truncate the file to.
    pub valid_bytes: u64,
    /// Why the bytes after `valid_bytes` were judged a torn tail, if there were any.
    pub torn: Option<String>,
}

/// Damage that is not a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

/// Reads every record of a segment.
///
/// With `tail_may_be_torn` (only for the last segment, the only one written to at a crash), damage
/// that nothing valid follows is a torn tail: the records before it are returned and the caller
/// truncates the rest. Any other damage is an error, because cutting it away would lose records
/// that were written, synced and acknowledged after it.
pub fn scan(data: &[u8], tail_may_be_torn: bool) -> Result<Scan<'_>, Damage> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        match decode_at(data, offset) {
            Ok((record, end)) => {
                debug_assert!(end > offset);
                records.push(record);
                offset = end;
            }
            Err(bad) => {
                let zeros = data[offset..].iter().all(|&b| b == 0);
                let reason = if zeros {
                    format!("{} trailing zero bytes", data.len() - offset)
                } else {
                    bad.to_string()
                };
                if !tail_may_be_torn {
                    return Err(Damage {
                        offset: offset as u64,
                        reason: format!("{reason} in a segment that was complete and synced"),
                    });
                }
                if let Bad::HeaderInvalid { .. } = bad {
                    // A header with a good checksum was written as it is: no crash produces it.
                    return Err(Damage {
                        offset: offset as u64,
                        reason,
                    });
                }
                let resume = bad.end().map_or(offset + 1, |end| end.min(data.len()));
                if let Some(next) = find_valid_record(data, resume) {
                    return Err(Damage {
                        offset: offset as u64,
                        reason: format!(
                            "{reason}, yet a valid record follows at offset {next}: \
                             damage in the middle of the log, not a torn write"
                        ),
                    });
                }
                return Ok(Scan {
                    records,
                    valid_bytes: offset as u64,
                    torn: Some(reason),
                });
            }
        }
    }
    debug_assert_eq!(offset, data.len());
    Ok(Scan {
        records,
        valid_bytes: offset as u64,
        torn: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds() -> impl Strategy<Value = RecordType> {
        prop_oneof![
            Just(RecordType::Header),
            Just(RecordType::Entry),
            Just(RecordType::HardState),
            Just(RecordType::Snapshot),
        ]
    }

    fn records() -> impl Strategy<Value = Vec<(RecordType, Vec<u8>)>> {
        prop::collection::vec((kinds(), prop::collection::vec(any::<u8>(), 0..64)), 0..16)
    }

    /// Encodes `records`, returning the bytes and the offset where each record ends.
    fn encode_all(records: &[(RecordType, Vec<u8>)]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for (kind, payload) in records {
            encode(&mut buf, *kind, payload);
            ends.push(buf.len());
        }
        (buf, ends)
    }

    fn decoded(scan: &Scan<'_>) -> Vec<(RecordType, Vec<u8>)> {
        scan.records
            .iter()
            .map(|r| (r.kind, r.payload.to_vec()))
            .collect()
    }

    #[test]
    fn zero_bytes_never_decode_as_a_record() {
        let zeros = [0u8; 64];
        assert!(decode_at(&zeros, 0).is_err());
        let scan = scan(&zeros, true).unwrap();
        assert!(scan.records.is_empty());
        assert_eq!(scan.valid_bytes, 0);
        assert!(scan.torn.unwrap().contains("trailing zero bytes"));
    }

    #[test]
    fn header_claiming_more_than_the_limit_is_corrupt_even_at_the_tail() {
        let mut buf = Vec::new();
        encode(&mut buf, RecordType::Entry, b"x");
        // Rewrite the length to an absurd value and fix up the header checksum, as a buggy
        // writer (not a crash) would.
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let checksum = crc32fast::hash(&buf[4..HEADER_BYTES]);
        buf[0..4].copy_from_slice(&checksum.to_le_bytes());
        let damage = scan(&buf, true).unwrap_err();
        assert_eq!(damage.offset, 0);
        assert!(damage.reason.contains("exceeds"), "{}", damage.reason);
    }

    #[test]
    fn torn_tail_in_a_sealed_segment_is_corrupt() {
        let mut buf = Vec::new();
        encode(&mut buf, RecordType::Entry, b"hello");
        let cut = &buf[..buf.len() - 1];
        let damage = scan(cut, false).unwrap_err();
        assert_eq!(damage.offset, 0);
        assert!(scan(cut, true).is_ok());
    }

    proptest! {
        #[test]
        fn any_sequence_of_records_round_trips(records in records()) {
            let (buf, _) = encode_all(&records);
            let scan = scan(&buf, false).unwrap();
            prop_assert_eq!(scan.valid_bytes, buf.len() as u64);
            prop_assert!(scan.torn.is_none());
            prop_assert_eq!(decoded(&scan), records);
        }

        #[test]
        fn any_truncation_recovers_exactly_a_prefix(records in records(), cut in any::<prop::sample::Index>()) {
            let (buf, ends) = encode_all(&records);
            let cut = cut.index(buf.len() + 1);
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            let scan = scan(&buf[..cut], true).unwrap();
            prop_assert_eq!(decoded(&scan), records[..whole].to_vec());
            let boundary = if whole == 0 { 0 } else { ends[whole - 1] };
            prop_assert_eq!(scan.valid_bytes, boundary as u64);
            prop_assert_eq!(scan.torn.is_some(), cut != boundary);
        }

        #[test]
        fn a_flipped_bit_is_a_torn_tail_only_in_the_last_record(
            records in prop::collection::vec((kinds(), prop::collection::vec(any::<u8>(), 0..64)), 1..8),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let (mut buf, ends) = encode_all(&records);
            let at = at.index(buf.len());
            buf[at] ^= 1 << bit;
            let damaged = ends.iter().position(|&end| at < end).unwrap();
            let start = if damaged == 0 { 0 } else { ends[damaged - 1] };
            if damaged == records.len() - 1 {
                let scan = scan(&buf, true).unwrap();
                prop_assert_eq!(decoded(&scan), records[..damaged].to_vec());
                prop_assert_eq!(scan.valid_bytes, start as u64);
            } else {
                let damage = scan(&buf, true).unwrap_err();
                prop_assert_eq!(damage.offset, start as u64);
            }
        }
    }
}
