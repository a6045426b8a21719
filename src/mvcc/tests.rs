//! Tests of the store against etcd's MVCC rules.

use tempfile::TempDir;

use super::*;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::Event;

const MAP_SIZE_BYTES: usize = 64 << 20;

fn open() -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), MAP_SIZE_BYTES).unwrap();
    (dir, store)
}

/// A clean stop and start: the node syncs the store before it exits.
fn reopen(dir: &TempDir, store: Store) -> Store {
    store.sync().unwrap();
    drop(store);
    Store::open(dir.path(), MAP_SIZE_BYTES).unwrap()
}

/// Puts one key as raft entry `index`; returns the new revision.
fn put(s: &Store, index: u64, key: &str, value: &str) -> i64 {
    let mut w = s.write(index).unwrap();
    w.put(key.as_bytes(), value.as_bytes(), 0).unwrap();
    let rev = w.rev();
    w.end().unwrap();
    rev
}

fn del(s: &Store, index: u64, key: &str, end: &str) -> usize {
    let mut w = s.write(index).unwrap();
    let n = w
        .delete_range(key.as_bytes(), end.as_bytes())
        .unwrap()
        .len();
    w.end().unwrap();
    n
}

fn get_at(s: &Store, key: &str, rev: i64) -> Option<KeyValue> {
    let opts = RangeOptions {
        rev,
        ..RangeOptions::default()
    };
    s.range(key.as_bytes(), b"", &opts).unwrap().kvs.pop()
}

fn keys(r: &RangeResult) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn all(s: &Store) -> RangeResult {
    s.range(b"\0", b"\0", &RangeOptions::default()).unwrap()
}

fn kind(e: &Event) -> EventType {
    e.r#type()
}

#[test]
fn fresh_store_starts_at_revision_one() {
    let (_dir, s) = open();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(s.compact_revision(), 0);
    assert_eq!(s.consistent_index(), 0);
    let r = all(&s);
    assert_eq!((r.kvs.len(), r.count, r.rev), (0, 0, 1));
    s.check_consistency().unwrap();
}

#[test]
fn put_sets_create_mod_and_version() {
    let (_dir, s) = open();
    assert_eq!(put(&s, 1, "a", "1"), 2);
    assert_eq!(put(&s, 2, "a", "2"), 3);
    let kv = get_at(&s, "a", 0).unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(kv.value, b"2");
    let old = get_at(&s, "a", 2).unwrap();
    assert_eq!(
        (old.mod_revision, old.version, old.value.as_slice()),
        (2, 1, &b"1"[..])
    );
    assert_eq!(s.current_revision(), 3);
    assert_eq!(s.consistent_index(), 2);
}

#[test]
fn put_returns_prev_and_keeps_lease() {
    let (_dir, s) = open();
    let mut w = s.write(1).unwrap();
    assert_eq!(w.put(b"a", b"1", 7).unwrap(), None);
    let prev = w.put(b"a", b"2", 0).unwrap().unwrap();
    assert_eq!((prev.value.as_slice(), prev.lease), (&b"1"[..], 7));
    w.end().unwrap();
    // Both puts share revision 2; the key is at version 2.
    let kv = get_at(&s, "a", 0).unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        (2, 2, 2, 0)
    );
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn delete_then_put_starts_a_new_generation() {
    let (dir, s) = open();
    put(&s, 1, "a", "1");
    put(&s, 2, "a", "2");
    assert_eq!(del(&s, 3, "a", ""), 1);
    assert_eq!(s.current_revision(), 4);
    assert_eq!(get_at(&s, "a", 0), None);
    assert_eq!(get_at(&s, "a", 3).unwrap().version, 2);
    put(&s, 4, "a", "3");
    let kv = get_at(&s, "a", 0).unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    let s = reopen(&dir, s);
    let kv = get_at(&s, "a", 0).unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    assert_eq!(get_at(&s, "a", 4), None);
    s.check_consistency().unwrap();
}

#[test]
fn write_that_changes_nothing_creates_no_revision() {
    let (_dir, s) = open();
    put(&s, 1, "a", "1");
    assert_eq!(del(&s, 2, "zzz", ""), 0);
    assert_eq!(s.current_revision(), 2);
    assert_eq!(s.consistent_index(), 2);
    s.set_consistent_index(5).unwrap();
    assert_eq!((s.current_revision(), s.consistent_index()), (2, 5));
}

#[test]
fn raft_index_must_grow() {
    let (_dir, s) = open();
    put(&s, 3, "a", "1");
    assert!(matches!(s.write(3), Err(MvccError::IndexRegression { .. })));
    assert!(matches!(
        s.set_consistent_index(2),
        Err(MvccError::IndexRegression { .. })
    ));
    assert!(matches!(
        s.compact(1, 1),
        Err(MvccError::IndexRegression { .. })
    ));
}

#[test]
fn dropped_write_txn_changes_nothing() {
    let (_dir, s) = open();
    put(&s, 1, "a", "1");
    {
        let mut w = s.write(2).unwrap();
        w.put(b"b", b"x", 0).unwrap();
        w.delete_range(b"a", b"").unwrap();
    }
    assert_eq!((s.current_revision(), s.consistent_index()), (2, 1));
    assert_eq!(keys(&all(&s)), ["a"]);
    s.check_consistency().unwrap();
    put(&s, 2, "c", "1");
    assert_eq!(s.current_revision(), 3);
}

#[test]
fn range_end_conventions() {
    let (_dir, s) = open();
    for (i, k) in ["a", "ab", "b", "c"].iter().enumerate() {
        put(&s, i as u64 + 1, k, "v");
    }
    let r = |k: &str, e: &str| {
        keys(
            &s.range(k.as_bytes(), e.as_bytes(), &RangeOptions::default())
                .unwrap(),
        )
    };
    assert_eq!(r("a", ""), ["a"]);
    assert_eq!(r("a", "b"), ["a", "ab"]);
    assert_eq!(r("ab", "\0"), ["ab", "b", "c"]);
    assert_eq!(r("\0", "\0"), ["a", "ab", "b", "c"]);
    assert!(r("c", "a").is_empty());
    assert!(r("zz", "").is_empty());
}

#[test]
fn range_limit_count_and_count_only() {
    let (_dir, s) = open();
    for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
        put(&s, i as u64 + 1, k, "v");
    }
    let opts = RangeOptions {
        limit: 2,
        ..RangeOptions::default()
    };
    let r = s.range(b"a", b"\0", &opts).unwrap();
    assert_eq!(
        (keys(&r), r.count, r.rev),
        (vec!["a".to_string(), "b".to_string()], 4, 5)
    );
    let opts = RangeOptions {
        count_only: true,
        ..RangeOptions::default()
    };
    let r = s.range(b"a", b"\0", &opts).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 4));
    // At an old revision the count is of that revision, the rev is the current one.
    let opts = RangeOptions {
        rev: 3,
        ..RangeOptions::default()
    };
    let r = s.range(b"a", b"\0", &opts).unwrap();
    assert_eq!((r.count, r.rev), (2, 5));
}

#[test]
fn range_revision_rules() {
    let (_dir, s) = open();
    put(&s, 1, "a", "1");
    put(&s, 2, "a", "2");
    put(&s, 3, "a", "3");
    let at = |rev| {
        s.range(
            b"a",
            b"",
            &RangeOptions {
                rev,
                ..RangeOptions::default()
            },
        )
    };
    assert!(matches!(at(5), Err(MvccError::FutureRevision)));
    assert_eq!(at(-1).unwrap().kvs[0].value, b"3");
    s.compact(4, 3).unwrap();
    assert!(matches!(at(2), Err(MvccError::Compacted)));
    assert_eq!(at(3).unwrap().kvs[0].value, b"2");
    assert_eq!(at(0).unwrap().kvs[0].value, b"3");
    assert_eq!(s.compact_revision(), 3);
    assert_eq!(s.current_revision(), 4);
}

#[test]
fn compaction_rules() {
    let (_dir, s) = open();
    put(&s, 1, "a", "1");
    assert!(matches!(s.compact(2, 3), Err(MvccError::FutureRevision)));
    s.compact(3, 2).unwrap();
    assert_eq!(s.consistent_index(), 3);
    assert!(matches!(s.compact(4, 2), Err(MvccError::Compacted)));
    assert!(matches!(s.compact(5, 1), Err(MvccError::Compacted)));
}

#[test]
fn compacting_zero_on_a_fresh_store_succeeds_once_as_in_etcd() {
    let (_dir, s) = open();
    s.compact(1, 0).unwrap();
    assert!(matches!(s.compact(2, 0), Err(MvccError::Compacted)));
    assert!(matches!(s.compact(3, -5), Err(MvccError::Compacted)));
}

#[test]
fn compaction_keeps_latest_and_drops_tombstones() {
    let (dir, s) = open();
    put(&s, 1, "a", "1"); // 2
    put(&s, 2, "a", "2"); // 3
    put(&s, 3, "b", "1"); // 4
    del(&s, 4, "b", ""); // 5
    put(&s, 5, "c", "1"); // 6
    s.compact(6, 5).unwrap();
    s.check_consistency().unwrap();
    // a@3 stays; b's tombstone and its generation vanish; c is above the floor.
    assert_eq!(get_at(&s, "a", 5).unwrap().mod_revision, 3);
    assert_eq!(get_at(&s, "b", 5), None);
    assert_eq!(s.key_count(), 2);
    assert_eq!(s.current_revision(), 6);
    let s = reopen(&dir, s);
    s.check_consistency().unwrap();
    assert_eq!(
        (
            s.current_revision(),
            s.compact_revision(),
            s.consistent_index()
        ),
        (6, 5, 6)
    );
    assert_eq!(get_at(&s, "a", 5).unwrap().version, 2);
}

#[test]
fn compaction_at_a_trailing_tombstone_keeps_the_current_revision_across_restart() {
    let (dir, s) = open();
    put(&s, 1, "a", "1"); // 2
    del(&s, 2, "a", ""); // 3
    s.compact(3, 3).unwrap();
    let s = reopen(&dir, s);
    // LMDB is empty now; the floor still says revision 3.
    assert_eq!(s.current_revision(), 3);
    assert_eq!(put(&s, 4, "a", "2"), 4);
    assert_eq!(get_at(&s, "a", 0).unwrap().create_revision, 4);
}

#[test]
fn restart_restores_everything() {
    let (dir, s) = open();
    for i in 0..50u64 {
        let k = format!("k{}", i % 7);
        if i % 5 == 4 {
            del(&s, i + 1, &k, "");
        } else {
            put(&s, i + 1, &k, &i.to_string());
        }
    }
    let before = all(&s);
    let at_20 = s
        .range(
            b"\0",
            b"\0",
            &RangeOptions {
                rev: 20,
                ..RangeOptions::default()
            },
        )
        .unwrap();
    let (cur, ci) = (s.current_revision(), s.consistent_index());
    let s = reopen(&dir, s);
    assert_eq!(all(&s), before);
    assert_eq!(
        s.range(
            b"\0",
            b"\0",
            &RangeOptions {
                rev: 20,
                ..RangeOptions::default()
            }
        )
        .unwrap(),
        at_20
    );
    assert_eq!((s.current_revision(), s.consistent_index()), (cur, ci));
    s.check_consistency().unwrap();
}

#[test]
fn write_txn_reads_its_own_writes() {
    let (_dir, s) = open();
    put(&s, 1, "a", "1");
    put(&s, 2, "b", "1");
    let mut w = s.write(3).unwrap();
    let r = w.range(b"a", b"\0", &RangeOptions::default()).unwrap();
    assert_eq!((r.count, r.rev), (2, 3));
    w.put(b"c", b"1", 0).unwrap();
    w.delete_range(b"a", b"").unwrap();
    assert_eq!(w.rev(), 4);
    let r = w.range(b"a", b"\0", &RangeOptions::default()).unwrap();
    assert_eq!(
        (keys(&r), r.count, r.rev),
        (vec!["b".to_string(), "c".to_string()], 2, 4)
    );
    // The committed view at the begin revision is still readable.
    let r = w
        .range(
            b"a",
            b"\0",
            &RangeOptions {
                rev: 3,
                ..RangeOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        (keys(&r), r.rev),
        (vec!["a".to_string(), "b".to_string()], 4)
    );
    assert!(matches!(
        w.range(
            b"a",
            b"",
            &RangeOptions {
                rev: 5,
                ..RangeOptions::default()
            }
        ),
        Err(MvccError::FutureRevision)
    ));
    let r = w
        .range(
            b"a",
            b"\0",
            &RangeOptions {
                limit: 1,
                ..RangeOptions::default()
            },
        )
        .unwrap();
    assert_eq!((keys(&r), r.count), (vec!["b".to_string()], 2));
    // Readers do not see the txn before it ends.
    assert_eq!(keys(&all(&s)), ["a", "b"]);
    let events = w.end().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(keys(&all(&s)), ["b", "c"]);
}

#[test]
fn end_returns_events_with_prev_kv() {
    let (_dir, s) = open();
    put(&s, 1, "a", "1"); // 2
    let mut w = s.write(2).unwrap();
    w.put(b"a", b"2", 0).unwrap();
    w.put(b"b", b"1", 0).unwrap();
    w.delete_range(b"a", b"").unwrap();
    let events = w.end().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(kind(&events[0]), EventType::Put);
    assert_eq!(events[0].prev_kv.as_ref().unwrap().value, b"1");
    // Creating b: no prev_kv.
    assert_eq!(events[1].prev_kv, None);
    assert_eq!(events[1].kv.as_ref().unwrap().create_revision, 3);
    // The delete reports a's value before this revision, as etcd's watch does.
    assert_eq!(kind(&events[2]), EventType::Delete);
    let kv = events[2].kv.as_ref().unwrap();
    assert_eq!(
        (kv.key.as_slice(), kv.mod_revision, kv.version),
        (&b"a"[..], 3, 0)
    );
    assert_eq!(events[2].prev_kv.as_ref().unwrap().mod_revision, 2);
}

#[test]
fn events_between_replays_history() {
    let (_dir, s) = open();
    put(&s, 1, "a", "1"); // 2
    put(&s, 2, "b", "1"); // 3
    put(&s, 3, "a", "2"); // 4
    del(&s, 4, "a", ""); // 5
    let ev = s.events_between(2, 5, b"a", b"", 0).unwrap();
    let revs: Vec<i64> = ev
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, [2, 4, 5]);
    assert_eq!(kind(&ev[2]), EventType::Delete);
    assert_eq!(ev[0].prev_kv, None);
    assert_eq!(ev[1].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(ev[2].prev_kv.as_ref().unwrap().value, b"2");
    let all_ev = s.events_between(1, 100, b"\0", b"\0", 0).unwrap();
    assert_eq!(all_ev.len(), 4);
    // A limit never splits a revision but stops after it.
    let ev = s.events_between(1, 100, b"\0", b"\0", 2).unwrap();
    assert_eq!(ev.len(), 2);
    s.compact(5, 4).unwrap();
    assert!(matches!(
        s.events_between(3, 5, b"a", b"", 0),
        Err(MvccError::Compacted)
    ));
    let ev = s.events_between(4, 5, b"a", b"", 0).unwrap();
    assert_eq!(ev.len(), 2);
    // prev of the event at 4 is at 3, below the floor: etcd sends none.
    assert_eq!(ev[0].prev_kv, None);
    assert_eq!(ev[1].prev_kv.as_ref().unwrap().mod_revision, 4);
}

#[test]
fn events_between_keeps_a_revision_whole() {
    let (_dir, s) = open();
    let mut w = s.write(1).unwrap();
    for k in ["a", "b", "c"] {
        w.put(k.as_bytes(), b"v", 0).unwrap();
    }
    w.end().unwrap();
    put(&s, 2, "d", "v");
    let ev = s.events_between(1, 3, b"\0", b"\0", 1).unwrap();
    assert_eq!(ev.len(), 3);
}

#[test]
fn meta_blobs_commit_with_the_txn() {
    let (dir, s) = open();
    assert_eq!(s.meta_get("lease").unwrap(), None);
    let mut w = s.write(1).unwrap();
    w.meta_put("lease", b"state").unwrap();
    assert!(w.end().unwrap().is_empty());
    assert_eq!(s.current_revision(), 1);
    {
        let mut w = s.write(2).unwrap();
        w.meta_put("lease", b"dropped").unwrap();
    }
    let s = reopen(&dir, s);
    assert_eq!(s.meta_get("lease").unwrap().as_deref(), Some(&b"state"[..]));
    assert_eq!(s.consistent_index(), 1);
}

#[test]
fn sizes_and_sync() {
    let (_dir, s) = open();
    for i in 0..100u64 {
        put(&s, i + 1, &format!("key{i}"), &"x".repeat(100));
    }
    s.sync().unwrap();
    assert!(s.db_size_bytes() > 0);
    assert!(s.db_size_in_use_bytes() > 0);
    assert!(s.db_size_in_use_bytes() <= s.db_size_bytes());
}

#[test]
fn interrupted_compaction_is_finished_at_open() {
    let (dir, s) = open();
    put(&s, 1, "a", "1"); // 2
    put(&s, 2, "a", "2"); // 3
    del(&s, 3, "a", ""); // 4
    put(&s, 4, "b", "1"); // 5
                          // Simulate a crash after the floor was recorded but before any deletion.
    s.simulate_interrupted_compaction(4);
    let s = reopen(&dir, s);
    assert_eq!(s.compact_revision(), 4);
    s.check_consistency().unwrap();
    assert_eq!(s.key_count(), 1);
    assert_eq!(s.current_revision(), 5);
}

#[test]
fn readers_and_one_writer_run_concurrently() {
    let (_dir, s) = open();
    let s = std::sync::Arc::new(s);
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut index = 0u64;
            for i in 0..200u64 {
                index += 1;
                put(&s, index, &format!("k{}", i % 10), &i.to_string());
                if i % 50 == 49 {
                    index += 1;
                    s.compact(index, s.current_revision() - 5).unwrap();
                }
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let cur = s.current_revision();
                    let floor = s.compact_revision();
                    let rev = (cur - 3).max(floor).max(1);
                    match s.range(
                        b"\0",
                        b"\0",
                        &RangeOptions {
                            rev,
                            ..RangeOptions::default()
                        },
                    ) {
                        Ok(r) => assert!(r.kvs.iter().all(|kv| kv.mod_revision <= rev)),
                        Err(MvccError::Compacted) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    s.check_consistency().unwrap();
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn copy_to_makes_an_openable_snapshot() {
    let (_dir, s) = open();
    put(&s, 1, "a", "1");
    put(&s, 2, "b", "1");
    del(&s, 3, "a", "");
    let mut w = s.write(4).unwrap();
    w.meta_put("lease", b"blob").unwrap();
    w.end().unwrap();
    let snap = TempDir::new().unwrap();
    s.copy_to(&snap.path().join("data.mdb")).unwrap();
    let copy = Store::open(snap.path(), MAP_SIZE_BYTES).unwrap();
    assert_eq!(all(&copy), all(&s));
    assert_eq!(copy.consistent_index(), 4);
    assert_eq!(copy.current_revision(), 4);
    assert_eq!(
        copy.meta_get("lease").unwrap().as_deref(),
        Some(&b"blob"[..])
    );
    copy.check_consistency().unwrap();
}

#[test]
fn a_snapshot_file_installs_the_same_store_and_damage_changes_nothing() {
    let (_dir, leader) = open();
    put(&leader, 1, "a", "1");
    put(&leader, 2, "b", "2");
    del(&leader, 3, "a", "");
    let mut w = leader.write(4).unwrap();
    w.meta_put("lease", b"blob").unwrap();
    w.end().unwrap();
    let files = TempDir::new().unwrap();
    let path = files.path().join("snap");
    assert_eq!(leader.export_snapshot(&path).unwrap(), 4);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(verify_snapshot(&path).unwrap(), bytes.len() as u64);

    // A follower with other data: every kind of damage is refused and leaves it as it was.
    let (_fdir, follower) = open();
    put(&follower, 1, "old", "x");
    let before = all(&follower);
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    let mut trailing = bytes.clone();
    trailing.push(0);
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 1;
    let damaged = [
        ("flipped", flipped),
        ("truncated", bytes[..bytes.len() - 1].to_vec()),
        ("cut mid-record", bytes[..bytes.len() / 2].to_vec()),
        ("trailing", trailing),
        ("magic", bad_magic),
        ("empty", Vec::new()),
    ];
    for (what, data) in damaged {
        let p = files.path().join(what);
        std::fs::write(&p, &data).unwrap();
        assert!(
            matches!(verify_snapshot(&p), Err(MvccError::Corrupt(_))),
            "{what}: {:?}",
            verify_snapshot(&p)
        );
        assert!(follower.install_snapshot(&p).is_err(), "{what}");
        assert_eq!(all(&follower), before, "{what}");
        assert_eq!(follower.consistent_index(), 1, "{what}");
    }

    // The good file: the follower becomes the leader's copy, meta included.
    assert_eq!(follower.install_snapshot(&path).unwrap(), 4);
    assert_eq!(all(&follower), all(&leader));
    assert_eq!(follower.current_revision(), leader.current_revision());
    assert_eq!(
        follower.meta_get("lease").unwrap().as_deref(),
        Some(&b"blob"[..])
    );
    assert_eq!(follower.hash_kv(0).unwrap(), leader.hash_kv(0).unwrap());
    follower.check_consistency().unwrap();
}

/// Puts `count` keys `<prefix><i>` of `value_bytes` bytes each, one raft entry per 16 keys
/// from `index` on; returns the next free index.
fn fill(s: &Store, mut index: u64, prefix: &str, count: usize, value_bytes: usize) -> u64 {
    let value = vec![b'v'; value_bytes];
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let mut w = s.write(index).unwrap();
        for i in chunk {
            w.put(format!("{prefix}{i}").as_bytes(), &value, 0).unwrap();
        }
        w.end().unwrap();
        index += 1;
    }
    index
}

/// Issue 8, item 7: installing cleared and refilled the backend in one LMDB transaction, which
/// needs room in the map for the old and the new data at once (LMDB frees the old pages only
/// when that transaction commits). A follower whose backend used more than half of the map
/// could not install a snapshot of the same size: the install failed with "map full" and the
/// member stopped, at every start. The install builds a fresh file and renames it into place.
#[test]
fn a_snapshot_installs_into_a_fresh_file_when_old_and_new_do_not_fit_in_one_map() {
    const MAP: usize = 8 << 20;
    let (ldir, fdir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let leader = Store::open(ldir.path(), MAP).unwrap();
    let follower = Store::open(fdir.path(), MAP).unwrap();
    // About 5 MiB each, of 8: either fits, both do not.
    let next = fill(&follower, 1, "old/", 1200, 4000);
    fill(&leader, 1000, "new/", 1200, 4000);
    let path = ldir.path().join("snap");
    let index = leader.export_snapshot(&path).unwrap();
    assert!(index > next, "the snapshot is ahead of the follower");

    assert_eq!(follower.install_snapshot(&path).unwrap(), index);
    assert_eq!(follower.hash_kv(0).unwrap(), leader.hash_kv(0).unwrap());
    assert_eq!(all(&follower), all(&leader));
    follower.check_consistency().unwrap();
    assert!(!fdir.path().join(INSTALL_DIR).exists());
    // The store goes on: writes, and the installed file is what a restart opens.
    put(&follower, index + 1, "after", "1");
    follower.sync().unwrap();
    drop(follower);
    let follower = Store::open(fdir.path(), MAP).unwrap();
    assert_eq!(follower.consistent_index(), index + 1);
    assert_eq!(follower.key_count(), 1201);
    follower.check_consistency().unwrap();
}

/// A crash while an install was building its new backend leaves the half-built one beside the
/// store: opening removes it and keeps the store as it was.
#[test]
fn a_half_built_install_is_removed_at_open() {
    let (dir, s) = open();
    put(&s, 1, "a", "1");
    let before = all(&s);
    s.sync().unwrap();
    drop(s);
    let install = dir.path().join(INSTALL_DIR);
    std::fs::create_dir(&install).unwrap();
    std::fs::write(install.join("data.mdb"), b"half a backend").unwrap();
    let s = Store::open(dir.path(), MAP_SIZE_BYTES).unwrap();
    assert!(!install.exists());
    assert_eq!(all(&s), before);
    assert_eq!(s.consistent_index(), 1);
}

/// Readers and writers go on across an install: a view opened before it keeps its snapshot of
/// the old backend, and the install waits for it (on another thread) instead of pulling the
/// file from under it.
#[test]
fn an_install_waits_for_a_view_of_the_old_backend() {
    let (_ldir, leader) = open();
    put(&leader, 1, "k", "new");
    put(&leader, 2, "j", "new");
    let files = TempDir::new().unwrap();
    let path = files.path().join("snap");
    leader.export_snapshot(&path).unwrap();
    let (_fdir, follower) = open();
    put(&follower, 1, "k", "old");
    let follower = std::sync::Arc::new(follower);
    let view = follower.read().unwrap();
    let installer = {
        let f = follower.clone();
        let path = path.clone();
        std::thread::spawn(move || f.install_snapshot(&path).unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!installer.is_finished(), "the install waits for the view");
    let old = view.range(b"k", b"", &RangeOptions::default()).unwrap();
    assert_eq!(old.kvs[0].value, b"old");
    drop(view);
    assert_eq!(installer.join().unwrap(), 2);
    let new = follower.range(b"k", b"", &RangeOptions::default()).unwrap();
    assert_eq!(new.kvs[0].value, b"new");
    put(&follower, 3, "k", "newer");
}

/// Issue 8, item 4: LMDB ran with `NO_SYNC`, which LMDB documents as able to corrupt the
/// database on a system crash (the meta page may reach the disk before the data pages it points
/// to; ext4 and XFS do not keep write order). The store must run with `NO_META_SYNC` (data
/// synced before each meta page) and never with `NO_SYNC` or `MAP_ASYNC`, in every environment
/// it opens, the one an install builds included.
#[test]
fn lmdb_syncs_data_before_each_meta_page() {
    let (dir, s) = open();
    let check = |s: &Store| {
        let flags = s.lmdb_flags();
        assert!(flags.contains(heed::EnvFlags::NO_META_SYNC), "{flags:?}");
        assert!(!flags.contains(heed::EnvFlags::NO_SYNC), "{flags:?}");
        assert!(!flags.contains(heed::EnvFlags::MAP_ASYNC), "{flags:?}");
    };
    check(&s);
    put(&s, 1, "a", "1");
    let snap = dir.path().join("snap");
    let index = s.export_snapshot(&snap).unwrap();
    let (_other, t) = open();
    assert_eq!(t.install_snapshot(&snap).unwrap(), index);
    check(&t);
}

/// Applied entries live in the store's batch until it commits them to LMDB in one transaction.
/// Everything a reader can ask sees them at once; a crash (the store dropped without a commit)
/// loses the whole uncommitted batch and nothing else, and the consistent index it reopens with
/// is where the WAL replay starts, so replay brings back exactly what was lost.
#[test]
fn an_uncommitted_batch_is_read_everywhere_and_lost_whole_in_a_crash() {
    let (dir, s) = open();
    put(&s, 1, "a", "1");
    let mut w = s.write(2).unwrap();
    w.meta_put("lease/1", b"one").unwrap();
    w.end().unwrap();
    assert!(s.commit().unwrap(), "entries 1 and 2 reach LMDB");
    assert!(!s.commit().unwrap(), "nothing is left to commit");
    let committed_hash = s.hash_kv(0).unwrap();

    // Entries 3..=5 stay in the batch.
    let entries_3_to_5 = |s: &Store| {
        put(s, 3, "a", "2");
        put(s, 4, "b", "1");
        let mut w = s.write(5).unwrap();
        w.delete_range(b"a", b"").unwrap();
        w.meta_put("lease/2", b"two").unwrap();
        w.meta_delete("lease/1").unwrap();
        w.end().unwrap();
    };
    entries_3_to_5(&s);
    assert_eq!(s.uncommitted_entries(), 3);
    assert_eq!(s.consistent_index(), 5);
    assert_eq!(keys(&all(&s)), ["b"]);
    assert_eq!(get_at(&s, "a", 3).unwrap().value, b"2");
    let events = s.events_between(2, 10, b"a", b"c", 0).unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (kind(e), e.kv.as_ref().unwrap().mod_revision))
        .collect();
    assert_eq!(
        seen,
        [
            (EventType::Put, 2),
            (EventType::Put, 3),
            (EventType::Put, 4),
            (EventType::Delete, 5)
        ]
    );
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(
        s.meta_with_prefix("lease/").unwrap(),
        [("lease/2".to_string(), b"two".to_vec())]
    );
    assert_eq!(s.meta_get("lease/1").unwrap(), None);
    let hash = s.hash_kv(0).unwrap();
    assert_ne!(hash, committed_hash);
    assert_eq!(s.hash_kv(2).unwrap(), (committed_hash.0, 0, 2));
    let r = s.read().unwrap();
    assert_eq!(
        keys(&r.range(b"a", b"\0", &RangeOptions::default()).unwrap()),
        ["b"]
    );
    drop(r);

    // A crash: the batch is gone, whole; LMDB is at entry 2.
    drop(s);
    let s = Store::open(dir.path(), MAP_SIZE_BYTES).unwrap();
    assert_eq!(s.consistent_index(), 2);
    assert_eq!(s.current_revision(), 2);
    assert_eq!(s.hash_kv(0).unwrap(), committed_hash);
    assert_eq!(
        s.meta_with_prefix("lease/").unwrap(),
        [("lease/1".to_string(), b"one".to_vec())]
    );
    s.check_consistency().unwrap();

    // Replaying entries 3..=5 brings the same store back.
    entries_3_to_5(&s);
    assert_eq!(s.hash_kv(0).unwrap(), hash);
    let s = reopen(&dir, s);
    assert_eq!(s.consistent_index(), 5);
    assert_eq!(s.hash_kv(0).unwrap(), hash);
    s.check_consistency().unwrap();
}

/// A compaction commits the batch first: LMDB below the floor is rewritten, and the batch never
/// holds a revision older than one LMDB holds.
#[test]
fn compaction_commits_the_batch_first() {
    let (dir, s) = open();
    put(&s, 1, "a", "1");
    put(&s, 2, "a", "2");
    s.compact(3, 2).unwrap();
    assert_eq!(s.uncommitted_entries(), 0);
    put(&s, 4, "a", "3");
    // A crash loses entry 4 only.
    drop(s);
    let s = Store::open(dir.path(), MAP_SIZE_BYTES).unwrap();
    assert_eq!(s.consistent_index(), 3);
    assert_eq!(s.compact_revision(), 2);
    assert_eq!(get_at(&s, "a", 0).unwrap().value, b"2");
    s.check_consistency().unwrap();
    drop(dir);
}

/// Issue 8, item 8: the physical deletion of a compaction ran inside the apply of the compaction
/// entry, in the raft loop, however many revisions it deleted; a big one stopped heartbeats. It
/// now runs in bounded steps, and nothing a reader sees depends on how far it got: watch replay
/// and `HashKV` skip what the compaction dropped, and the deletion is finished before anything
/// reads the whole file.
#[test]
fn a_compaction_deletes_in_bounded_steps_that_readers_never_notice() {
    let (dir, s) = open();
    // Three keys rewritten 8,000 times: 24,000 revisions, of which compaction drops all but 3.
    let mut index = 0;
    for round in 0..8_000 {
        index += 1;
        let mut w = s.write(index).unwrap();
        for key in ["a", "b", "c"] {
            w.put(key.as_bytes(), format!("{round}").as_bytes(), 0)
                .unwrap();
        }
        w.end().unwrap();
    }
    let mut w = s.write(index + 1).unwrap();
    w.delete_range(b"c", b"").unwrap();
    w.end().unwrap();
    put(&s, index + 2, "d", "1");
    let floor = s.current_revision() - 1;
    index += 3;
    s.compact(index, floor).unwrap();
    assert!(
        !s.is_physically_compacted(),
        "the deletion is left to steps"
    );

    let events = || s.events_between(floor, i64::MAX, b"\0", b"\0", 0).unwrap();
    let seen = (events(), s.hash_kv(0).unwrap(), all(&s));
    // The delete of c at the floor went with c's generation (until the deletion reaches it, LMDB
    // still holds its tombstone); the put of d is above the floor.
    assert_eq!(seen.0.len(), 1);
    assert_eq!(seen.0[0].kv.as_ref().unwrap().key, b"d");
    let mut steps = 0;
    while s.purge_step().unwrap() {
        steps += 1;
        assert_eq!((events(), s.hash_kv(0).unwrap(), all(&s)), seen);
    }
    assert!(s.is_physically_compacted());
    assert!(
        steps >= 2,
        "24,000 revisions take more than one bounded step"
    );
    assert_eq!((events(), s.hash_kv(0).unwrap(), all(&s)), seen);
    // a and b at the floor, d above it; c went with its generation (its tombstone is at the
    // floor); LMDB holds exactly what the index holds.
    assert_eq!(s.key_count(), 3);
    s.check_consistency().unwrap();

    // A crash in the middle of a deletion: `open` finishes it.
    for round in 0..12_000 {
        index += 1;
        put(&s, index, "a", &format!("{round}"));
    }
    index += 1;
    s.compact(index, s.current_revision()).unwrap();
    assert!(s.purge_step().unwrap(), "more steps are left");
    drop(s);
    let s = Store::open(dir.path(), MAP_SIZE_BYTES).unwrap();
    assert_eq!(s.key_count(), 3);
    s.check_consistency().unwrap();
}

/// A defragmentation right after a compaction (etcd users run `compact` then `defrag` to get
/// below the quota) must find the compacted revisions gone and their pages free, not wait for the
/// tick-by-tick deletion to get there.
#[test]
fn defragment_finishes_a_compaction_and_frees_its_pages() {
    let (_dir, s) = open();
    let value = "x".repeat(4096);
    let mut index = 0;
    for _ in 0..500 {
        index += 1;
        put(&s, index, "k", &value);
    }
    s.commit().unwrap();
    let before = s.db_size_in_use_bytes();
    index += 1;
    s.compact(index, s.current_revision()).unwrap();
    s.commit().unwrap();
    assert!(
        !s.is_physically_compacted(),
        "the deletion is left to steps"
    );
    s.defragment().unwrap();
    assert!(s.is_physically_compacted());
    let after = s.db_size_in_use_bytes();
    assert!(
        after < before / 4,
        "in use {before} bytes before, {after} after the defragmentation"
    );
    assert_eq!(s.key_count(), 1);
    s.check_consistency().unwrap();
}
