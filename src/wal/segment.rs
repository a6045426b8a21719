//! Segment file names.
//!
//! A segment is named `{seq:016x}-{first_index:016x}.wal`: `seq` counts segments from zero, with
//! no gaps, and `first_index` is the index the next entry had when the segment was started (the
//! log's last index plus one). Fixed-width lowercase hex makes lexicographic order equal log order,
//! so a sorted directory listing is the log. A segment being written before it is complete carries
//! the extra suffix `.tmp`; recovery deletes such files, because a segment only gets its final name
//! once its header records are synced.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
