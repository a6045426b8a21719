//! A simulated disk: files in memory, with the failure modes of a real one.
//!
//! The model follows what POSIX promises and no more. Appended bytes are durable only once
//! `sync` returns; a new name (create, rename, remove) is durable only once its directory is
//! synced. A crash ([`SimDisk::crash`]) throws away everything else: files lose their unsynced
//! tails (or keep a torn prefix of them), and the namespace goes back to what the last directory
//! sync recorded. The disk outlives the node: a restarted node reopens the same `SimDisk`.
//!
//! Faults on demand: a failing fsync (the WAL must stop, and what it wrote may be lost), and a
//! flipped bit in synced data (recovery must detect it and refuse to start, never serve it).
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
}

/// An in-memory disk shared by all incarnations of one node.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
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

    /// Flips one bit in synced data of the largest file, away from its end (so that a valid
    /// record follows and the damage cannot pass for a torn write). Returns the file and offset.
    pub fn flip_bit(&self, rng: &mut SplitMix64) -> Option<(String, u64)> {
        /// Damage this close to the end could be the last record, which recovery must treat as
        /// a torn write; the sim wants damage that has to be detected.
        const TAIL_GUARD_BYTES: usize = 512;
        let mut st = self.lock();
        let (path, ino) = st
            .names
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "wal"))
            .map(|(p, i)| (p.clone(), *i))
            .max_by_key(|(p, i)| (st.inodes[i].synced_len, p.clone()))?;
        let inode = st.inodes.get_mut(&ino)?;
        if inode.synced_len <= TAIL_GUARD_BYTES * 2 {
            return None;
        }
        let at = rng.range(0, (inode.synced_len - TAIL_GUARD_BYTES) as u64) as usize;
        inode.data[at] ^= 1 << rng.range(0, 8);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Some((name, at as u64))
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
            let inode = st
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| io::Error::other("file was removed"))?;
            inode.data.extend_from_slice(buf);
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
}
