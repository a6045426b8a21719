//! Revisions and their on-disk encoding.
//!
//! A revision names one change of one key: `main` is the store revision of the write (one per
//! raft entry that changed something), `sub` orders the changes inside that write. LMDB sorts keys
//! bytewise, so both are stored big-endian: the `kv` database then iterates in revision order,
//! which is what history replay (watch) and compaction scan. A tombstone (the record of a delete)
//! carries one extra marker byte, as in etcd, so that replay can tell a delete from a put without
//! decoding the value.

use std::fmt;

use super::MvccError;

/// Length of the LMDB key of a put: main (8 bytes) + sub (8 bytes), both big-endian.
pub(crate) const REVISION_KEY_LEN: usize = 16;
/// Length of the LMDB key of a tombstone: a put key followed by [`TOMBSTONE_MARKER`].
pub(crate) const TOMBSTONE_KEY_LEN: usize = REVISION_KEY_LEN + 1;
/// The byte that marks a tombstone key (etcd uses the same letter).
pub(crate) const TOMBSTONE_MARKER: u8 = b't';

/// One change of one key: the store revision (`main`) and its position inside that write (`sub`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The store revision of the write (etcd's `mod_revision`).
    pub main: i64,
    /// The index of the change inside the write, from 0.
    pub sub: i64,
}

impl Revision {
    /// Builds a revision; both parts must be non-negative so the big-endian encoding sorts.
    pub fn new(main: i64, sub: i64) -> Revision {
        assert!(main >= 0, "revision main must be non-negative: {main}");
        assert!(sub >= 0, "revision sub must be non-negative: {sub}");
        Revision { main, sub }
    }

    /// The LMDB key of this revision; `tombstone` appends the delete marker.
    pub(crate) fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut key = Vec::with_capacity(TOMBSTONE_KEY_LEN);
        key.extend_from_slice(&(self.main as u64).to_be_bytes());
        key.extend_from_slice(&(self.sub as u64).to_be_bytes());
        if tombstone {
            key.push(TOMBSTONE_MARKER);
        }
        key
    }

    /// The smallest LMDB key of store revision `main` (sub 0, no marker): a scan bound.
    pub(crate) fn bound_key(main: i64) -> Vec<u8> {
        Revision::new(main.max(0), 0).to_key(false)
    }

    /// Decodes an LMDB key into the revision and whether it is a tombstone.
    pub(crate) fn from_key(key: &[u8]) -> Result<(Revision, bool), MvccError> {
        let tombstone = match key.len() {
            REVISION_KEY_LEN => false,
            TOMBSTONE_KEY_LEN if key[REVISION_KEY_LEN] == TOMBSTONE_MARKER => true,
            _ => {
                return Err(MvccError::Corrupt(format!(
                    "revision key of {} bytes: {key:02x?}",
                    key.len()
                )))
            }
        };
        let main = u64::from_be_bytes(key[0..8].try_into().expect("8 bytes"));
        let sub = u64::from_be_bytes(key[8..16].try_into().expect("8 bytes"));
        if main > i64::MAX as u64 || sub > i64::MAX as u64 {
            return Err(MvccError::Corrupt(format!(
                "revision key out of range: {key:02x?}"
            )));
        }
        Ok((Revision::new(main as i64, sub as i64), tombstone))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_key_round_trips_and_sorts_like_revisions() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(255, 7),
            Revision::new(256, 0),
            Revision::new(i64::MAX, 3),
        ];
        for (i, r) in revs.iter().enumerate() {
            for tomb in [false, true] {
                let key = r.to_key(tomb);
                assert_eq!(Revision::from_key(&key).unwrap(), (*r, tomb));
            }
            if i > 0 {
                assert!(revs[i - 1].to_key(true) < r.to_key(false));
            }
        }
    }

    #[test]
    fn revision_key_rejects_garbage() {
        assert!(Revision::from_key(b"short").is_err());
        let mut key = Revision::new(3, 0).to_key(false);
        key.push(b'x');
        assert!(Revision::from_key(&key).is_err());
    }
}
