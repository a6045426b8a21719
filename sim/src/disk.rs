//! A simulated disk: files in memory, with the failure modes of a real one.
//!
//! The model follows what POSIX promises and no more. Appended bytes are durable only once
//! `sync` returns; a new name (create, rename, remove) is durable only once its directory is
//! synced. A crash ([`SimDisk::crash`]) throws away everything else: files lose their unsynced
//! tails (or keep a torn prefix of them), and the namespace goes back to what the last directory
//! sync recorded. The disk outlives the node: a restarted node reopens the same `SimDisk`.
//!
//! Faults on demand: a failing fsync (the WAL must stop, and what it wrote may be lost), a full
//! disk (writes fail with `ENOSPC` once a few more bytes were accepted, the last write short), and
//! a flipped bit in synced WAL data (recovery must detect it and refuse to start, never serve it).
//! Bit flips are aimed: the WAL's record framing is decoded (through `cairn::wal::record_spans`)
//! so the flip lands in a record that recovery must read and trust — an entry the backend has not
//! applied yet when there is one — and never in the last record, which recovery may rightly take
//! for a torn write.
//! Handles opened before a crash are dead: using one is an error, as it would be for a process
//! that no longer exists.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn::io::{Disk, DiskFile, Rng, SplitMix64};

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// Bytes of `data` that survive a crash.
    synced_len: usize,
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The namespace as the running process sees it.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace as it survives a crash (updated by `sync_dir`).
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: std::collections::BTreeSet<PathBuf>,
    /// Bumped at every crash; handles from an older generation are dead.
    generation: u64,
    /// The next `sync` calls fail (an injected fsync error).
    fail_syncs: u32,
    syncs: u64,
    /// Bytes synced so far (for the trace).
    synced_bytes: u64,
    /// With a full disk: bytes that may still be written before writes fail with `ENOSPC`.
    space_left: Option<u64>,
}

/// An in-memory disk shared by all incarnations of one node.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

/// Where a bit was flipped, for the trace and the failure report.
#[derive(Debug, Clone)]
pub struct Flip {
    pub file: String,
    pub offset: u64,
    /// What the damaged record holds: "entry 12 (unapplied)", "hard state", ...
    pub target: String,
}

/// The error a full disk gives (`ENOSPC`).
fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// What a crash did to the disk, for the trace.
#[derive(Debug, Default)]
pub struct CrashReport {
    pub lost_bytes: u64,
    pub torn_bytes: u64,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sim disk lock poisoned")
    }

    /// A power failure: unsynced bytes and unsynced names are lost. With `torn`, each file with
    /// an unsynced tail keeps a random prefix of it, the last byte possibly garbage.
    pub fn crash(&self, rng: &mut SplitMix64, torn: bool) -> CrashReport {
        let mut st = self.lock();
        st.generation += 1;
        st.fail_syncs = 0;
        st.names = st.durable_names.clone();
        let live: std::collections::BTreeSet<u64> = st.names.values().copied().collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        let mut report = CrashReport::default();
        for inode in st.inodes.values_mut() {
            let unsynced = inode.data.len() - inode.synced_len;
            if unsynced == 0 {
                continue;
            }
            let keep = if torn {
                rng.range(0, unsynced as u64 + 1) as usize
            } else {
                0
            };
            inode.data.truncate(inode.synced_len + keep);
            if keep > 0 && rng.range(0, 2) == 0 {
                let last = inode.data.len() - 1;
                inode.data[last] ^= 1 << rng.range(0, 8);
            }
            report.lost_bytes += (unsynced - keep) as u64;
            report.torn_bytes += keep as u64;
            inode.synced_len = inode.data.len();
        }
        report
    }

    /// The next `n` fsyncs fail.
    pub fn fail_next_syncs(&self, n: u32) {
        self.lock().fail_syncs = n;
    }

    /// The disk fills up: after `slack` more bytes, writes (and file creations) fail with
    /// `ENOSPC`; the write that crosses the limit is short. `None` frees the space again.
    pub fn set_full(&self, slack: Option<u64>) {
        self.lock().space_left = slack;
    }

    /// Flips one bit in synced WAL data that recovery must read and trust, and returns where.
    ///
    /// Every segment's records are decoded, and the target is picked in this order: the payload
    /// of an entry beyond `applied` (the backend's consistent index: on restart the member applies
    /// it, and may send it to peers), preferring its request bytes; otherwise the last HardState
    /// record or any entry (entries the member may send to lagging peers). One time in eight the
    /// header is hit instead (which recovery must refuse even without payload checksums). The last
    /// record of the last segment is never a target: damage there is indistinguishable from a
    /// torn write and recovery rightly cuts it. Only synced bytes are touched. With
    /// `unapplied_only`, nothing is flipped (and `None` returned) unless an unapplied entry exists.
    pub fn flip_wal(
        &self,
        rng: &mut SplitMix64,
        applied: u64,
        unapplied_only: bool,
    ) -> Option<Flip> {
        let mut st = self.lock();
        // Segment names sort in log order.
        let files: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "wal"))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        struct Candidate {
            file: usize,
            span: cairn::wal::RecordSpan,
            unapplied: bool,
        }
        let mut candidates = Vec::new();
        for (f, (_, ino)) in files.iter().enumerate() {
            let inode = &st.inodes[ino];
            let spans = cairn::wal::record_spans(&inode.data[..inode.synced_len]);
            for span in spans {
                let unapplied = span.entry.as_ref().is_some_and(|(i, _)| *i > applied);
                candidates.push(Candidate {
                    file: f,
                    span,
                    unapplied,
                });
            }
        }
        // The very last record could be a torn write: never a target.
        candidates.pop();
        let unapplied: Vec<&Candidate> = candidates.iter().filter(|c| c.unapplied).collect();
        if unapplied_only && unapplied.is_empty() {
            return None;
        }
        let pool: Vec<&Candidate> = if !unapplied.is_empty() {
            unapplied
        } else if rng.range(0, 2) == 0 {
            candidates
                .iter()
                .rfind(|c| c.span.kind == cairn::wal::RecordType::HardState)
                .into_iter()
                .collect()
        } else {
            candidates
                .iter()
                .filter(|c| c.span.kind == cairn::wal::RecordType::Entry)
                .collect()
        };
        let pool = if pool.is_empty() {
            candidates.iter().collect()
        } else {
            pool
        };
        if pool.is_empty() {
            return None;
        }
        let c = pool[rng.range(0, pool.len() as u64) as usize];
        let payload = c.span.payload.clone();
        let data = c.span.entry.as_ref().and_then(|(_, d)| d.clone());
        let range = match rng.range(0, 8) {
            0 => c.span.offset..payload.start,
            1 | 2 => payload,
            _ => data.unwrap_or(payload),
        };
        let range = if range.is_empty() {
            c.span.offset..c.span.payload.end
        } else {
            range
        };
        let at = rng.range(range.start, range.end) as usize;
        let (path, ino) = &files[c.file];
        let inode = st.inodes.get_mut(ino)?;
        inode.data[at] ^= 1 << rng.range(0, 8);
        let target = match &c.span.entry {
            Some((index, _)) => format!(
                "entry {index}{}",
                if c.unapplied { " (unapplied)" } else { "" }
            ),
            None => format!("{:?}", c.span.kind),
        };
        let target = if at < c.span.payload.start as usize {
            format!("{target}, header")
        } else {
            target
        };
        Some(Flip {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            offset: at as u64,
            target,
        })
    }

    fn file(&self, path: &Path) -> io::Result<SimFile> {
        let mut st = self.lock();
        let ino = match st.names.get(path) {
            Some(i) => *i,
            None => {
                if let Some(parent) = path.parent() {
                    if !st.dirs.contains(parent) {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("{}: no such directory", parent.display()),
                        ));
                    }
                }
                if st.space_left == Some(0) {
                    return Err(no_space());
                }
                let i = st.next_inode;
                st.next_inode += 1;
                st.inodes.insert(i, Inode::default());
                st.names.insert(path.to_path_buf(), i);
                i
            }
        };
        Ok(SimFile {
            disk: self.clone(),
            ino,
            generation: st.generation,
        })
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() {
                break;
            }
            st.dirs.insert(p.to_path_buf());
            d = p.parent();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock();
        let ino = st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(st.inodes[ino].data.clone())
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(self.file(path)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let ino = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let current: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        st.durable_names.extend(current);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        st.names.contains_key(path) || st.dirs.contains(path)
    }
}

struct SimFile {
    disk: SimDisk,
    ino: u64,
    generation: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.disk.lock();
        if st.generation != self.generation {
            return Err(io::Error::other("file handle from before a crash"));
        }
        f(&mut st, self.ino)
    }
}

impl DiskFile for SimFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with(|st, ino| {
            let room = st
                .space_left
                .map_or(buf.len(), |left| buf.len().min(left as usize));
            if let Some(left) = st.space_left.as_mut() {
                *left -= room as u64;
            }
            let inode = st
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| io::Error::other("file was removed"))?;
            // A short write, then ENOSPC: what `write_all` sees when the disk fills up mid-write.
            inode.data.extend_from_slice(&buf[..room]);
            if room < buf.len() {
                return Err(no_space());
            }
            Ok(())
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with(|st, ino| {
            if st.fail_syncs > 0 {
                st.fail_syncs -= 1;
                return Err(io::Error::other("injected fsync failure"));
            }
            st.syncs += 1;
            let inode = st
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| io::Error::other("file was removed"))?;
            let n = (inode.data.len() - inode.synced_len) as u64;
            inode.synced_len = inode.data.len();
            st.synced_bytes += n;
            Ok(())
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|st, ino| {
            let inode = st
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| io::Error::other("file was removed"))?;
            inode.data.truncate(len as usize);
            // Truncation is treated as durable at once: recovery truncates only bytes that
            // were never acknowledged, so keeping them or not after a crash changes nothing.
            inode.synced_len = inode.synced_len.min(inode.data.len());
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        self.with(|st, ino| Ok(st.inodes.get(&ino).map_or(0, |i| i.data.len() as u64)))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_names_are_lost_at_a_crash() {
        let disk = SimDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).unwrap();
        let mut f = disk.open_append(&dir.join("a.wal")).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        f.append(b" world").unwrap();
        // The name was never synced: the file disappears.
        let mut rng = SplitMix64::new(1);
        disk.crash(&mut rng, false);
        assert!(!disk.exists(&dir.join("a.wal")));
        assert!(f.append(b"x").is_err(), "old handles are dead");

        let mut f = disk.open_append(&dir.join("b.wal")).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        disk.sync_dir(dir).unwrap();
        f.append(b" world").unwrap();
        disk.crash(&mut rng, false);
        assert_eq!(disk.read(&dir.join("b.wal")).unwrap(), b"hello");
    }

    #[test]
    fn a_full_disk_takes_a_short_write_then_fails_with_enospc() {
        let disk = SimDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).unwrap();
        let mut f = disk.open_append(&dir.join("a.wal")).unwrap();
        disk.set_full(Some(3));
        let err = f.append(b"hello").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(disk.read(&dir.join("a.wal")).unwrap(), b"hel");
        assert!(
            disk.open_append(&dir.join("b.wal")).is_err(),
            "no room for a new file"
        );
        disk.set_full(None);
        f.append(b"lo").unwrap();
        assert_eq!(disk.read(&dir.join("a.wal")).unwrap(), b"hello");
    }

    #[test]
    fn bit_flips_spare_the_last_record_and_prefer_unapplied_entries() {
        use cairn::wal::{Wal, WalOptions};
        let disk = SimDisk::new();
        let dir = Path::new("/m/wal");
        let arc: std::sync::Arc<dyn Disk> = std::sync::Arc::new(disk.clone());
        let mut wal = Wal::create(arc, dir, b"meta", WalOptions::default()).unwrap();
        let entries: Vec<raft::eraftpb::Entry> = (1..=6)
            .map(|index| raft::eraftpb::Entry {
                index,
                term: 1,
                data: format!("value {index}").into_bytes().into(),
                ..Default::default()
            })
            .collect();
        wal.append(&entries, None).unwrap();
        wal.sync().unwrap();
        let mut rng = SplitMix64::new(7);
        // Entries 5 and 6 are unapplied, but 6 is the last record: only 5 may be hit.
        for _ in 0..50 {
            let segment = disk
                .list(dir)
                .unwrap()
                .into_iter()
                .find(|n| n.ends_with(".wal"))
                .unwrap();
            let before = disk.read(&dir.join(segment));
            let flip = disk.flip_wal(&mut rng, 4, true).unwrap();
            assert!(flip.target.starts_with("entry 5 (unapplied)"), "{flip:?}");
            // Undo the flip so the next round sees a clean file.
            let path = dir.join(&flip.file);
            let damaged = disk.read(&path).unwrap();
            let mut st = disk.lock();
            let ino = st.names[&path];
            st.inodes.get_mut(&ino).unwrap().data = before.unwrap();
            drop(st);
            assert_ne!(damaged, disk.read(&path).unwrap());
        }
        assert!(
            disk.flip_wal(&mut rng, 6, true).is_none(),
            "nothing unapplied"
        );
    }

    /// Issue 8, item 7: the received snapshot's rename must be durable before the node syncs
    /// the WAL record that points at it. The receiving side publishes the file with
    /// `cairn::peer::publish_snapshot`; a power loss right after it returns must keep the file
    /// under its final name (without the directory sync it is gone, and the member never starts).
    #[test]
    fn a_published_snapshot_survives_a_power_loss() {
        let disk = SimDisk::new();
        let snap = Path::new("/m/member/snap");
        cairn::peer::prepare_snapshot_dir(&disk, snap).unwrap();
        let tmp = snap.join("0000000000000007.tmp");
        let path = cairn::peer::snapshot_path(snap, 7);
        let mut f = disk.open_append(&tmp).unwrap();
        f.append(b"snapshot bytes").unwrap();
        f.sync().unwrap();
        cairn::peer::publish_snapshot(&disk, &tmp, &path).unwrap();
        disk.crash(&mut SplitMix64::new(3), false);
        assert_eq!(disk.read(&path).unwrap(), b"snapshot bytes");
        assert!(!disk.exists(&tmp));
    }
}
