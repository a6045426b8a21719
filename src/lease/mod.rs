//! # Leases
//!
//! A lease is a time-to-live that keys can be attached to: when it expires or is revoked, every key
//! attached to it is deleted in one revision. Like etcd, cairn splits a lease's life in two:
//!
//! * **What every replica must agree on** goes through raft and is applied deterministically:
//!   granting (id and TTL), revoking (and the deletion of the attached keys), and which keys are
//!   attached (derived from the `lease` field of every applied put and delete). The lease table is
//!   stored in the backend next to the consistent index, so a restart recovers it exactly; the
//!   key attachments are rebuilt from the keys themselves.
//! * **Time** is the leader's business alone. Only the leader (the *primary* lessor) tracks
//!   deadlines, renews them on keep-alive, and, when one passes, proposes a revoke through raft.
//!   Followers keep no deadlines, so clock differences between members cannot make replicas
//!   disagree. A new leader gives every lease a fresh full TTL plus an election timeout, because it
//!   cannot know when the old leader last renewed them: a lease may live longer than its TTL
//!   across a leader change, never shorter.
//!
//! Deadlines are read from the node's [`crate::io::Clock`], so the simulator can skew and jump them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::mvcc::{MvccError, RangeOptions, Store, WriteTxn};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::Event;
use crate::server::error::RequestError;

/// etcd's largest TTL, in seconds.
pub const LEASE_TTL_MAX_SECONDS: i64 = 9_000_000_000;
/// Leases the cluster may hold at once; the server refuses grants beyond it before proposing (apply
/// itself must not refuse what other replicas might accept).
pub const LEASES_MAX: usize = 1_000_000;
/// Expired leases the primary revokes per round (etcd revokes at most 1000 per second).
pub const EXPIRED_PER_ROUND_MAX: usize = 500;
/// Keys one lease may hold, so that revoking it (one revision deleting them all) is bounded work.
/// A put that would attach one more key to a full lease fails at apply with
/// [`RequestError::LeaseKeysExceeded`]: the count is derived from the log, so every member refuses
/// the same put, and a revoke never meets a lease over the limit. etcd has no such limit.
pub const KEYS_PER_LEASE_MAX: usize = 1_000_000;
/// Prefix of the backend meta blobs holding one lease each (`lease/<id hex>` → TTL).
const LEASE_META_PREFIX: &str = "lease/";

#[derive(Debug, Clone, Default)]
struct Lease {
    /// Granted TTL in seconds (after raising it to the minimum).
    ttl: i64,
    /// Monotonic deadline, kept only while this member is the primary.
    deadline: Option<Duration>,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    leases: BTreeMap<i64, Lease>,
    /// The raft term in which this member became the primary, while it is.
    primary: Option<u64>,
}

/// What `TimeToLive` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub granted_ttl: i64,
    /// Remaining seconds; the granted TTL on a member that is not the primary.
    pub remaining: i64,
    pub keys: Vec<Vec<u8>>,
}

/// The lease table of one member. Shared by the node (apply), the server (keep-alive, queries)
/// and the expiry task.
#[derive(Debug)]
pub struct Lessor {
    min_ttl: i64,
    /// [`KEYS_PER_LEASE_MAX`], smaller in tests. Part of the replicated state machine: every member
    /// must use the same value.
    keys_per_lease_max: usize,
    inner: Mutex<Inner>,
}

impl Lessor {
    /// Rebuilds the table from the backend: the leases from their meta blobs, the attachments from
    /// the `lease` field of every live key.
    pub fn recover(store: &Store, min_ttl: i64) -> Result<Lessor, MvccError> {
        let mut leases = BTreeMap::new();
        for (name, value) in store.meta_with_prefix(LEASE_META_PREFIX)? {
            let id = i64::from_str_radix(&name[LEASE_META_PREFIX.len()..], 16)
                .map_err(|_| MvccError::Corrupt(format!("lease blob name {name:?}")))?;
            let ttl = i64::from_be_bytes(
                value
                    .as_slice()
                    .try_into()
                    .map_err(|_| MvccError::Corrupt(format!("lease {id:x} ttl")))?,
            );
            leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: None,
                    keys: BTreeSet::new(),
                },
            );
        }
        let all = store.range(b"\0", b"\0", &RangeOptions::default())?;
        for kv in all.kvs {
            if kv.lease != 0 {
                if let Some(l) = leases.get_mut(&kv.lease) {
                    l.keys.insert(kv.key);
                }
            }
        }
        Ok(Lessor {
            min_ttl,
            keys_per_lease_max: KEYS_PER_LEASE_MAX,
            inner: Mutex::new(Inner {
                leases,
                primary: None,
            }),
        })
    }

    /// The same lessor with a smaller key limit per lease (tests: a full lease of
    /// [`KEYS_PER_LEASE_MAX`] keys is slow to build).
    pub fn with_keys_per_lease_max(mut self, keys_per_lease_max: usize) -> Lessor {
        assert!(keys_per_lease_max <= KEYS_PER_LEASE_MAX);
        self.keys_per_lease_max = keys_per_lease_max;
        self
    }

    /// Replaces the table with the backend's after a snapshot was installed; deadlines are
    /// dropped (this member is a follower then).
    pub fn reload(&self, store: &Store) -> Result<(), MvccError> {
        let fresh = Lessor::recover(store, self.min_ttl)?;
        let leases = std::mem::take(&mut fresh.lock().leases);
        let mut inner = self.lock();
        inner.leases = leases;
        inner.primary = None;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("lessor lock")
    }

    /// The shortest TTL granted (etcd: 1.5 election timeouts, rounded up to whole seconds).
    pub fn min_ttl(&self) -> i64 {
        self.min_ttl
    }

    pub fn len(&self) -> usize {
        self.lock().leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// Applies a grant within the entry's write transaction. Returns the granted TTL.
    pub fn apply_grant(
        &self,
        w: &mut WriteTxn<'_>,
        id: i64,
        ttl: i64,
        now: Duration,
    ) -> Result<i64, RequestError> {
        if id == 0 {
            return Err(RequestError::LeaseNotFound);
        }
        if ttl > LEASE_TTL_MAX_SECONDS {
            return Err(RequestError::LeaseTtlTooLarge);
        }
        let mut inner = self.lock();
        if inner.leases.contains_key(&id) {
            return Err(RequestError::LeaseExists);
        }
        let ttl = ttl.max(self.min_ttl);
        w.meta_put(&lease_blob(id), &ttl.to_be_bytes())
            .map_err(RequestError::from)?;
        let deadline = inner.primary.map(|_| now + Duration::from_secs(ttl as u64));
        inner.leases.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        Ok(ttl)
    }

    /// Checks, at apply and before anything is written, that the puts of one entry may attach
    /// their keys: a `(lease, key)` pair whose key the lease does not hold yet adds one key, and no
    /// lease may end up with more than the limit. Pairs naming a lease that does not exist are
    /// left to the caller's not-found check. Deterministic: the table is derived from the log.
    pub fn check_attach(&self, puts: &[(i64, &[u8])]) -> Result<(), RequestError> {
        let inner = self.lock();
        let mut added: BTreeMap<i64, BTreeSet<&[u8]>> = BTreeMap::new();
        for &(id, key) in puts {
            let Some(lease) = inner.leases.get(&id) else {
                continue;
            };
            if lease.keys.contains(key) {
                continue;
            }
            let new = added.entry(id).or_default();
            new.insert(key);
            if lease.keys.len() + new.len() > self.keys_per_lease_max {
                return Err(RequestError::LeaseKeysExceeded);
            }
        }
        Ok(())
    }

    /// Applies a revoke within the entry's write transaction: deletes every attached key (one
    /// revision) and the lease. Never fails for the number of keys: [`Lessor::check_attach`]
    /// keeps every lease within the limit.
    pub fn apply_revoke(&self, w: &mut WriteTxn<'_>, id: i64) -> Result<(), RequestError> {
        let keys: Vec<Vec<u8>> = {
            let inner = self.lock();
            let lease = inner.leases.get(&id).ok_or(RequestError::LeaseNotFound)?;
            lease.keys.iter().cloned().collect()
        };
        for key in &keys {
            if crate::bugs::active(crate::bugs::Bug::RevokeKeepsKeys) {
                break;
            }
            w.delete_range(key, b"").map_err(RequestError::from)?;
        }
        w.meta_delete(&lease_blob(id)).map_err(RequestError::from)?;
        self.lock().leases.remove(&id);
        Ok(())
    }

    /// Keeps the attachments in step with applied writes: a put attaches its key to its lease and
    /// detaches it from the previous one; a delete detaches it.
    pub fn on_events(&self, events: &[Event]) {
        let mut inner = self.lock();
        for ev in events {
            let Some(kv) = &ev.kv else { continue };
            let prev_lease = ev.prev_kv.as_ref().map(|p| p.lease).unwrap_or(0);
            if prev_lease != 0 {
                if let Some(l) = inner.leases.get_mut(&prev_lease) {
                    l.keys.remove(&kv.key);
                }
            }
            if ev.r#type == EventType::Put as i32 && kv.lease != 0 {
                if let Some(l) = inner.leases.get_mut(&kv.lease) {
                    l.keys.insert(kv.key.clone());
                }
            }
        }
    }

    /// This member became leader in `term`: every lease gets a full TTL plus `extend` from `now`.
    /// Called again when the member leads a later term (it may have lost leadership in between
    /// without the expiry task noticing), so no deadline outlives the term it was judged in.
    pub fn promote(&self, now: Duration, extend: Duration, term: u64) {
        let mut inner = self.lock();
        inner.primary = Some(term);
        for l in inner.leases.values_mut() {
            l.deadline = Some(now + extend + Duration::from_secs(l.ttl as u64));
        }
    }

    /// This member stopped being leader: it forgets every deadline.
    pub fn demote(&self) {
        let mut inner = self.lock();
        inner.primary = None;
        for l in inner.leases.values_mut() {
            l.deadline = None;
        }
    }

    pub fn is_primary(&self) -> bool {
        self.lock().primary.is_some()
    }

    /// The term this member has been the primary in, if it is.
    pub fn primary_term(&self) -> Option<u64> {
        self.lock().primary
    }

    /// Whether lease `id` exists and its deadline has passed (primary only).
    pub fn is_expired(&self, id: i64, now: Duration) -> bool {
        self.lock()
            .leases
            .get(&id)
            .and_then(|l| l.deadline)
            .is_some_and(|d| d <= now)
    }

    /// Leases whose deadline has passed (primary only), oldest first, at most
    /// [`EXPIRED_PER_ROUND_MAX`].
    pub fn expired(&self, now: Duration) -> Vec<i64> {
        let inner = self.lock();
        let mut due: Vec<(Duration, i64)> = inner
            .leases
            .iter()
            .filter_map(|(id, l)| l.deadline.filter(|d| *d <= now).map(|d| (d, *id)))
            .collect();
        due.sort();
        due.into_iter()
            .take(EXPIRED_PER_ROUND_MAX)
            .map(|(_, id)| id)
            .collect()
    }

    /// Keep-alive on the primary: a new deadline one TTL from `now`. Returns the TTL, or `None`
    /// when the lease does not exist (etcd then answers TTL 0).
    pub fn renew(&self, id: i64, now: Duration) -> Option<i64> {
        let mut inner = self.lock();
        let primary = inner.primary.is_some();
        let lease = inner.leases.get_mut(&id)?;
        if primary {
            lease.deadline = Some(now + Duration::from_secs(lease.ttl as u64));
        }
        Some(lease.ttl)
    }

    pub fn time_to_live(&self, id: i64, now: Duration, with_keys: bool) -> Option<LeaseInfo> {
        let inner = self.lock();
        let lease = inner.leases.get(&id)?;
        let remaining = match lease.deadline {
            Some(d) => d.saturating_sub(now).as_secs() as i64,
            None => lease.ttl,
        };
        Some(LeaseInfo {
            granted_ttl: lease.ttl,
            remaining,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Every lease id, ascending.
    pub fn leases(&self) -> Vec<i64> {
        self.lock().leases.keys().copied().collect()
    }
}

fn lease_blob(id: i64) -> String {
    format!("{LEASE_META_PREFIX}{id:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64 << 20).unwrap();
        (dir, store)
    }

    #[test]
    fn grant_raises_short_ttls_to_the_minimum_and_refuses_duplicates_and_huge_ttls() {
        let (_d, store) = store();
        let lessor = Lessor::recover(&store, 2).unwrap();
        let mut w = store.write(1).unwrap();
        assert_eq!(lessor.apply_grant(&mut w, 7, 1, Duration::ZERO), Ok(2));
        assert_eq!(
            lessor.apply_grant(&mut w, 7, 10, Duration::ZERO),
            Err(RequestError::LeaseExists)
        );
        assert_eq!(
            lessor.apply_grant(&mut w, 8, LEASE_TTL_MAX_SECONDS + 1, Duration::ZERO),
            Err(RequestError::LeaseTtlTooLarge)
        );
        w.end().unwrap();
        assert!(lessor.exists(7));
    }

    #[test]
    fn revoke_deletes_attached_keys_in_one_revision_and_recovery_rebuilds_the_table() {
        let (_d, store) = store();
        let lessor = Lessor::recover(&store, 2).unwrap();
        let mut w = store.write(1).unwrap();
        lessor.apply_grant(&mut w, 5, 60, Duration::ZERO).unwrap();
        w.end().unwrap();
        let mut w = store.write(2).unwrap();
        w.put(b"a", b"1", 5).unwrap();
        w.put(b"b", b"2", 5).unwrap();
        w.put(b"c", b"3", 0).unwrap();
        let events = w.end().unwrap();
        lessor.on_events(&events);
        assert_eq!(
            lessor.time_to_live(5, Duration::ZERO, true).unwrap().keys,
            vec![b"a".to_vec(), b"b".to_vec()]
        );

        let recovered = Lessor::recover(&store, 2).unwrap();
        assert_eq!(
            recovered
                .time_to_live(5, Duration::ZERO, true)
                .unwrap()
                .keys
                .len(),
            2
        );

        let before = store.current_revision();
        let mut w = store.write(3).unwrap();
        lessor.apply_revoke(&mut w, 5).unwrap();
        w.end().unwrap();
        assert_eq!(store.current_revision(), before + 1);
        let left = store.range(b"\0", b"\0", &RangeOptions::default()).unwrap();
        assert_eq!(
            left.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
            vec![b"c".to_vec()]
        );
        assert!(!lessor.exists(5));
        assert!(Lessor::recover(&store, 2).unwrap().leases().is_empty());
    }

    /// Issue 8: a lease over the key limit used to make its revoke fail at apply on every
    /// member, forever. Now the put that would take it over is refused, deterministically.
    #[test]
    fn a_put_that_would_take_a_lease_over_its_key_limit_is_refused_and_revoke_never_fails() {
        use crate::proto::cairnpb::{request::Op, Request};
        use crate::proto::etcdserverpb::{
            request_op, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
        };
        use crate::server::apply;

        let (_d, store) = store();
        let lessor = Lessor::recover(&store, 2)
            .unwrap()
            .with_keys_per_lease_max(2);
        let mut w = store.write(1).unwrap();
        lessor.apply_grant(&mut w, 5, 60, Duration::ZERO).unwrap();
        w.end().unwrap();
        let mut index = 1;
        let mut run = |op: Op| {
            index += 1;
            let req = Request {
                id: index,
                op: Some(op),
                ..Default::default()
            };
            let result = apply::apply(&store, index, &req, &lessor);
            assert_eq!(store.consistent_index(), index, "every outcome is recorded");
            if let Ok((_, events)) = &result {
                lessor.on_events(events);
            }
            result.map(|_| ())
        };
        let put = |key: &str| PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease: 5,
            ..Default::default()
        };
        let txn_put = |key: &str| RequestOp {
            request: Some(request_op::Request::RequestPut(put(key))),
        };
        assert_eq!(run(Op::Put(put("a"))), Ok(()));
        assert_eq!(run(Op::Put(put("b"))), Ok(()));
        assert_eq!(run(Op::Put(put("c"))), Err(RequestError::LeaseKeysExceeded));
        assert!(RequestError::LeaseKeysExceeded.is_deterministic());
        // Overwriting a key the lease holds attaches nothing new.
        assert_eq!(run(Op::Put(put("a"))), Ok(()));
        // A txn is counted whole, before it writes anything.
        let txn = TxnRequest {
            success: vec![txn_put("a"), txn_put("c")],
            ..Default::default()
        };
        assert_eq!(run(Op::Txn(txn)), Err(RequestError::LeaseKeysExceeded));
        let all = store.range(b"\0", b"\0", &RangeOptions::default()).unwrap();
        assert_eq!(all.kvs.len(), 2);
        assert_eq!(
            run(Op::DeleteRange(DeleteRangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            })),
            Ok(())
        );
        let txn = TxnRequest {
            success: vec![txn_put("a"), txn_put("c")],
            ..Default::default()
        };
        assert_eq!(run(Op::Txn(txn)), Ok(()));
        assert_eq!(
            lessor
                .time_to_live(5, Duration::ZERO, true)
                .unwrap()
                .keys
                .len(),
            2
        );

        let mut w = store.write(index + 1).unwrap();
        assert_eq!(lessor.apply_revoke(&mut w, 5), Ok(()));
        w.end().unwrap();
        let left = store.range(b"\0", b"\0", &RangeOptions::default()).unwrap();
        assert!(left.kvs.is_empty());
    }

    /// How long revoking a full lease and reloading the lease table take (see
    /// docs/performance.md). A measurement, run by hand in a release build:
    /// `CAIRN_LEASE_KEYS=1000000 cargo test --release --lib measure_full_lease -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand: see docs/performance.md"]
    #[allow(clippy::disallowed_methods)]
    fn measure_full_lease_revoke_and_table_reload() {
        use std::time::Instant;
        const BATCH_KEYS: usize = 10_000;
        let keys: usize = std::env::var("CAIRN_LEASE_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(KEYS_PER_LEASE_MAX);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 30).unwrap();
        let lessor = Lessor::recover(&store, 2).unwrap();
        let mut index = 1;
        let mut w = store.write(index).unwrap();
        lessor.apply_grant(&mut w, 1, 60, Duration::ZERO).unwrap();
        w.end().unwrap();
        let started = Instant::now();
        let value = [b'v'; 100];
        for batch in 0..keys.div_ceil(BATCH_KEYS) {
            index += 1;
            let mut w = store.write(index).unwrap();
            for i in batch * BATCH_KEYS..((batch + 1) * BATCH_KEYS).min(keys) {
                w.put(format!("lease/key/{i:08}").as_bytes(), &value, 1)
                    .unwrap();
            }
            lessor.on_events(&w.end().unwrap());
        }
        println!("{keys} keys attached in {:?}", started.elapsed());

        // What a follower that installs this backend as a snapshot does, for scale.
        let file = dir.path().join("out.snap");
        let started = Instant::now();
        store.export_snapshot(&file).unwrap();
        println!(
            "snapshot export (off the raft loop): {:?}, {} bytes",
            started.elapsed(),
            std::fs::metadata(&file).unwrap().len()
        );
        let follower_dir = tempfile::tempdir().unwrap();
        let follower = Store::open(follower_dir.path(), 8 << 30).unwrap();
        let started = Instant::now();
        follower.install_snapshot(&file).unwrap();
        println!("snapshot install: {:?}", started.elapsed());
        drop(follower);

        let started = Instant::now();
        lessor.reload(&store).unwrap();
        println!("reload (scan of every key): {:?}", started.elapsed());
        assert_eq!(
            lessor.time_to_live(1, Duration::ZERO, false).map(|_| ()),
            Some(())
        );

        index += 1;
        let started = Instant::now();
        let mut w = store.write(index).unwrap();
        lessor.apply_revoke(&mut w, 1).unwrap();
        let staged = started.elapsed();
        let events = w.end().unwrap();
        println!(
            "revoke: {staged:?} to delete the keys, {:?} with the commit ({} events)",
            started.elapsed(),
            events.len()
        );
        assert_eq!(events.len(), keys);
        let started = Instant::now();
        store.sync().unwrap();
        println!("backend sync after it: {:?}", started.elapsed());
    }

    #[test]
    fn only_the_primary_keeps_deadlines_and_a_new_primary_extends_them() {
        let (_d, store) = store();
        let lessor = Lessor::recover(&store, 2).unwrap();
        let mut w = store.write(1).unwrap();
        lessor.apply_grant(&mut w, 1, 10, Duration::ZERO).unwrap();
        w.end().unwrap();
        assert!(
            lessor.expired(Duration::from_secs(100)).is_empty(),
            "followers never expire leases"
        );
        lessor.promote(Duration::from_secs(100), Duration::from_secs(1), 2);
        assert!(lessor.expired(Duration::from_secs(110)).is_empty());
        assert_eq!(lessor.expired(Duration::from_secs(111)), vec![1]);
        assert_eq!(lessor.renew(1, Duration::from_secs(111)), Some(10));
        assert!(lessor.expired(Duration::from_secs(120)).is_empty());
        assert_eq!(lessor.renew(99, Duration::from_secs(111)), None);
        lessor.demote();
        assert!(lessor.expired(Duration::from_secs(1000)).is_empty());
    }

    #[test]
    fn leading_a_later_term_renews_every_deadline() {
        let (_d, store) = store();
        let lessor = Lessor::recover(&store, 2).unwrap();
        let mut w = store.write(1).unwrap();
        lessor.apply_grant(&mut w, 1, 10, Duration::ZERO).unwrap();
        w.end().unwrap();
        lessor.promote(Duration::ZERO, Duration::ZERO, 2);
        assert_eq!(lessor.primary_term(), Some(2));
        assert!(lessor.is_expired(1, Duration::from_secs(10)));
        // Leadership was lost and won again (term 4) between two looks of the expiry task: the
        // deadline judged in term 2 must not survive into term 4.
        lessor.promote(Duration::from_secs(10), Duration::ZERO, 4);
        assert_eq!(lessor.primary_term(), Some(4));
        assert!(!lessor.is_expired(1, Duration::from_secs(19)));
        assert!(lessor.is_expired(1, Duration::from_secs(20)));
        assert!(
            !lessor.is_expired(99, Duration::from_secs(20)),
            "unknown lease"
        );
    }
}
