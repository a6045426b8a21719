//! # The space quota and the NOSPACE alarm
//!
//! A replicated store must never stop on an entry it has committed: every member would stop on
//! the same entry, and a restart would replay it and stop again. A full disk is the classic way to
//! get there. LMDB refuses a write transaction that would grow its file past the map size
//! (`MDB_MAP_FULL`), and whether that happens depends on this member's file, not on the log — so
//! it is a non-deterministic failure, and apply must stop the node on it (see
//! [`RequestError::is_deterministic`]). The cure is etcd's: keep client writes from ever getting
//! near the map's end.
//!
//! * **The quota** (`--quota-backend-bytes`, etcd's default 2 GiB) bounds the *backend size*,
//!   which cairn measures as the bytes of the LMDB pages in use ([`Store::db_size_in_use_bytes`],
//!   etcd's `dbSizeInUse`). etcd measures its bolt file instead and needs a defragmentation to
//!   shrink it; LMDB puts the pages a compaction frees back to work by itself, so here the size
//!   drops as soon as a compaction (or a delete) frees pages, and `Defragment` has nothing to do.
//! * **Before proposing** a request that adds data (a put, a txn with a put, a lease grant), the
//!   member checks `size in use + this member's writes in flight + the request's cost < quota`,
//!   with etcd's cost estimates ([`cost`]). A request that does not fit is refused with etcd's
//!   `etcdserver: mvcc: database space exceeded`, and the member raises the NOSPACE alarm.
//! * **The alarm goes through raft** (an [`AlarmRequest`] entry, as etcd's `InternalRaftRequest`
//!   carries one). Every member applies it in log order and persists it in the backend with the
//!   entry's index, so it survives restarts and snapshots. While any member's NOSPACE alarm is
//!   active, apply refuses — on every member alike, because the alarm list is replicated state —
//!   every put, every txn with a put in either branch, and every lease grant, with the same error.
//!   Reads, deletes, lease revokes, compactions and defragmentation go on, so an operator can make
//!   room; `etcdctl alarm disarm` (a DEACTIVATE entry) then lets writes in again.
//! * **At apply**, as etcd's quota applier does, a member that applies a write while its size plus
//!   the write's cost has reached the quota asks for the alarm too (the write itself is applied:
//!   whether to apply it cannot depend on a member's own file). This catches members whose
//!   backend grew through writes proposed elsewhere.
//! * **Headroom.** Writes already in the log when the alarm is raised still apply. The LMDB map is
//!   therefore sized well above the quota ([`map_size_bytes`]: twice the quota, at least
//!   [`MAP_HEADROOM_MIN_BYTES`] more), so the applies that cross the quota still fit. The map is
//!   only address space: the file grows with the data, not with the map. Should the map fill all
//!   the same (a burst from every member at once), the node stops on `MDB_MAP_FULL` as before, but
//!   a restart opens the map [`MAP_HEADROOM_MIN_BYTES`] beyond the file, so the entry that did not
//!   fit applies then rather than stopping the member forever.
//!
//! Where cairn differs from etcd 3.4, on purpose: a write that crosses the quota at apply is
//! answered with its real outcome (etcd applies it and still answers "database space exceeded");
//! a txn's cost counts the puts of nested txns too (etcd's counts only the top level, so a put
//! inside a nested txn slips past the alarm); the alarm list comes back sorted by alarm and member
//! (etcd's order is a Go map's); and clients may raise only NOSPACE (etcd would also take
//! CORRUPT, which cairn does not act on).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use prost::Message as _;
use tokio::sync::Notify;

use super::error::RequestError;
use crate::mvcc::{MvccError, Store, WriteTxn};
use crate::proto::cairnpb::request::Op;
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, request_op, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    PutRequest, RequestOp, TxnRequest,
};

/// etcd's estimate of what storing a key's metadata costs beyond its key and value.
pub const KV_OVERHEAD_BYTES: u64 = 256;
/// etcd's estimate of what storing a lease costs.
pub const LEASE_OVERHEAD_BYTES: u64 = 64;
/// The least the LMDB map extends beyond the quota, and beyond the file at start.
pub const MAP_HEADROOM_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// Alarms the table holds. Members raise at most one NOSPACE alarm each, but a client may name
/// any member id in an ACTIVATE; activations beyond this are ignored (deterministically: the
/// table is replicated state).
pub const ALARMS_MAX: usize = 1024;
/// Prefix of the backend meta blobs holding one alarm each: `alarm/<type>/<member id hex>`.
const ALARM_META_PREFIX: &str = "alarm/";

/// etcd's `costPut`.
pub fn put_cost(p: &PutRequest) -> u64 {
    KV_OVERHEAD_BYTES + p.key.len() as u64 + p.value.len() as u64
}

/// etcd's `costTxn`: the larger branch's puts (either branch may run). Unlike etcd, the puts of
/// nested txns count too.
pub fn txn_cost(t: &TxnRequest) -> u64 {
    fn branch(ops: &[RequestOp]) -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => put_cost(p),
                Some(request_op::Request::RequestTxn(t)) => txn_cost(t),
                _ => 0,
            })
            .sum()
    }
    branch(&t.success).max(branch(&t.failure))
}

/// What a request may add to the backend, by etcd's estimates; 0 for requests that add nothing
/// (deletes, compactions, revokes, alarms), which the quota never refuses.
pub fn cost(op: &Op) -> u64 {
    match op {
        Op::Put(p) => put_cost(p),
        Op::Txn(t) => txn_cost(t),
        Op::LeaseGrant(_) => LEASE_OVERHEAD_BYTES,
        _ => 0,
    }
}

/// The LMDB map size for a quota of `quota_bytes` and a data file of `file_bytes` (0 for a new
/// store): twice the quota, at least [`MAP_HEADROOM_MIN_BYTES`] above it, and never less than
/// that much above the file (see the module docs).
pub fn map_size_bytes(quota_bytes: u64, file_bytes: u64) -> usize {
    let above_quota = quota_bytes.saturating_add(quota_bytes.max(MAP_HEADROOM_MIN_BYTES));
    let above_file = file_bytes.saturating_add(MAP_HEADROOM_MIN_BYTES);
    usize::try_from(above_quota.max(above_file)).unwrap_or(usize::MAX)
}

/// The size of the LMDB data file in `db_dir` (0 when there is none yet).
pub fn data_file_bytes(db_dir: &Path) -> u64 {
    std::fs::metadata(db_dir.join("data.mdb"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// etcd's text for one alarm (gogoproto's `String()` of an AlarmMember, trailing space included),
/// as `Status` lists it among its errors and `etcdctl alarm list` prints it.
pub fn alarm_text(m: &AlarmMember) -> String {
    let name = AlarmType::try_from(m.alarm)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| m.alarm.to_string());
    format!("memberID:{} alarm:{name} ", m.member_id)
}

/// The replicated alarm table: which members raised which alarm. The node applies changes to it
/// in log order (and persists them with the entry's index); the server reads it.
#[derive(Debug, Default)]
pub struct Alarms {
    /// `(alarm type, member id)`.
    set: Mutex<BTreeSet<(i32, u64)>>,
    /// The node asks the server to raise this member's NOSPACE alarm (apply cannot propose).
    raise: Notify,
}

fn blob(alarm: i32, member: u64) -> String {
    format!("{ALARM_META_PREFIX}{alarm}/{member:016x}")
}

impl Alarms {
    /// The table as the backend holds it.
    pub fn load(store: &Store) -> Result<Alarms, MvccError> {
        let alarms = Alarms::default();
        alarms.reload(store)?;
        Ok(alarms)
    }

    /// Replaces the table with the backend's (at start, and after a snapshot was installed).
    pub fn reload(&self, store: &Store) -> Result<(), MvccError> {
        let mut set = BTreeSet::new();
        for (name, value) in store.meta_with_prefix(ALARM_META_PREFIX)? {
            let m = AlarmMember::decode(value.as_slice())
                .map_err(|e| MvccError::Corrupt(format!("alarm blob {name:?}: {e}")))?;
            if blob(m.alarm, m.member_id) != name {
                return Err(MvccError::Corrupt(format!(
                    "alarm blob {name:?} holds {m:?}"
                )));
            }
            set.insert((m.alarm, m.member_id));
        }
        assert!(set.len() <= ALARMS_MAX, "the alarm table is bounded");
        *self.lock() = set;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(i32, u64)>> {
        self.set.lock().expect("alarm table lock")
    }

    /// The alarms of type `alarm` (every alarm for [`AlarmType::None`]), by type and member.
    pub fn list(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        self.lock()
            .iter()
            .filter(|(t, _)| alarm == AlarmType::None || *t == alarm as i32)
            .map(|&(alarm, member_id)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// Whether any member's alarm of type `alarm` is active.
    pub fn is_active(&self, alarm: AlarmType) -> bool {
        self.lock().iter().any(|(t, _)| *t == alarm as i32)
    }

    /// Whether `member` raised an alarm of type `alarm`.
    pub fn is_raised_by(&self, member: u64, alarm: AlarmType) -> bool {
        self.lock().contains(&(alarm as i32, member))
    }

    /// Applies an alarm entry within its write transaction (etcd's `applierV3backend.Alarm`):
    /// ACTIVATE adds the alarm and answers it (also when it was active already), DEACTIVATE
    /// removes it and answers it if it was active, GET answers the list.
    pub fn apply(
        &self,
        w: &mut WriteTxn<'_>,
        req: &AlarmRequest,
    ) -> Result<AlarmResponse, RequestError> {
        let mut set = self.lock();
        let key = (req.alarm, req.member_id);
        let m = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let mut resp = AlarmResponse::default();
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                drop(set);
                resp.alarms = self.list(AlarmType::try_from(req.alarm).unwrap_or_default());
            }
            Ok(AlarmAction::Activate) => {
                if !set.contains(&key) {
                    if set.len() >= ALARMS_MAX {
                        return Ok(resp);
                    }
                    w.meta_put(&blob(req.alarm, req.member_id), &m.encode_to_vec())?;
                    set.insert(key);
                    tracing::warn!(alarm = %alarm_text(&m), "alarm raised");
                }
                resp.alarms.push(m);
            }
            Ok(AlarmAction::Deactivate) => {
                if set.remove(&key) {
                    w.meta_delete(&blob(req.alarm, req.member_id))?;
                    tracing::warn!(alarm = %alarm_text(&m), "alarm disarmed");
                    resp.alarms.push(m);
                }
            }
            // An action this version does not know: nothing to do, as etcd.
            Err(_) => {}
        }
        Ok(resp)
    }

    /// Asks the server to raise this member's NOSPACE alarm through raft (see
    /// [`Alarms::raise_asked`]). Cheap and idempotent: the apply path calls it.
    pub fn ask_to_raise(&self) {
        self.raise.notify_one();
    }

    /// Resolves once [`Alarms::ask_to_raise`] was called since the last time it resolved.
    pub async fn raise_asked(&self) {
        self.raise.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{LeaseGrantRequest, RequestOp};

    fn put(key: &str, value_bytes: usize) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: vec![b'v'; value_bytes],
            ..Default::default()
        }
    }

    fn op_put(p: PutRequest) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(p)),
        }
    }

    #[test]
    fn costs_are_etcds_estimates() {
        assert_eq!(cost(&Op::Put(put("ab", 10))), 256 + 2 + 10);
        assert_eq!(cost(&Op::LeaseGrant(LeaseGrantRequest::default())), 64);
        assert_eq!(
            cost(&Op::DeleteRange(Default::default())),
            0,
            "a delete adds nothing"
        );
        assert_eq!(cost(&Op::Compaction(Default::default())), 0);
        // The larger branch counts; deletes and ranges cost nothing.
        let txn = TxnRequest {
            success: vec![op_put(put("a", 1)), op_put(put("b", 1))],
            failure: vec![op_put(put("c", 600))],
            ..Default::default()
        };
        assert_eq!(txn_cost(&txn), 256 + 1 + 600);
        assert_eq!(txn_cost(&TxnRequest::default()), 0);
        // cairn counts a nested txn's puts (etcd does not).
        let nested = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(txn)),
            }],
            ..Default::default()
        };
        assert_eq!(txn_cost(&nested), 256 + 1 + 600);
    }

    #[test]
    fn the_map_leaves_headroom_above_the_quota_and_the_file() {
        let mib = 1024 * 1024;
        assert_eq!(map_size_bytes(mib, 0), (65 * mib) as usize);
        assert_eq!(map_size_bytes(2048 * mib, 0), (4096 * mib) as usize);
        // A file that filled its map once gets room beyond it at the next start.
        assert_eq!(map_size_bytes(mib, 65 * mib), (129 * mib) as usize);
    }

    /// A map that filled anyway (`MDB_MAP_FULL` stops the node: it is this member's failure) is
    /// reopened with room beyond its file, so the entry that did not fit applies after a restart
    /// instead of stopping the member on every start.
    #[test]
    fn a_store_whose_map_filled_gets_room_at_the_next_open() {
        let dir = tempfile::TempDir::new().unwrap();
        let value = vec![b'v'; 64 * 1024];
        let mut index = 0;
        let put = |store: &Store, index: u64, key: &str| -> Result<(), MvccError> {
            let mut w = store.write(index)?;
            w.put(key.as_bytes(), &value, 0)?;
            w.end()?;
            // The map fills when the batch reaches LMDB.
            store.commit().map(|_| ())
        };
        let full_at = {
            let store = Store::open(dir.path(), 1024 * 1024).unwrap();
            loop {
                index += 1;
                match put(&store, index, &format!("k{index}")) {
                    Ok(()) => continue,
                    Err(MvccError::NoSpace) => break index,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        assert!(full_at > 1, "some puts fit in the small map");
        let file = data_file_bytes(dir.path());
        assert!(file > 0);
        let store = Store::open(dir.path(), map_size_bytes(0, file)).unwrap();
        assert_eq!(store.consistent_index(), full_at - 1);
        put(&store, full_at, &format!("k{full_at}")).unwrap();
        assert_eq!(store.consistent_index(), full_at);
    }

    #[test]
    fn alarm_texts_are_etcds() {
        let m = AlarmMember {
            member_id: 13668033151171901709,
            alarm: AlarmType::Nospace as i32,
        };
        assert_eq!(
            alarm_text(&m),
            "memberID:13668033151171901709 alarm:NOSPACE "
        );
    }

    #[test]
    fn alarms_are_applied_persisted_and_reloaded() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(dir.path(), 64 << 20).unwrap();
        let alarms = Alarms::load(&store).unwrap();
        let req = |action: AlarmAction, member_id: u64| AlarmRequest {
            action: action as i32,
            member_id,
            alarm: AlarmType::Nospace as i32,
        };
        let mut index = 0;
        let mut apply = |r: AlarmRequest| {
            index += 1;
            let mut w = store.write(index).unwrap();
            let resp = alarms.apply(&mut w, &r).unwrap();
            w.end().unwrap();
            resp.alarms
        };
        let nospace = |member_id| AlarmMember {
            member_id,
            alarm: AlarmType::Nospace as i32,
        };
        assert_eq!(apply(req(AlarmAction::Activate, 7)), vec![nospace(7)]);
        assert_eq!(apply(req(AlarmAction::Activate, 7)), vec![nospace(7)]);
        assert_eq!(apply(req(AlarmAction::Activate, 3)), vec![nospace(3)]);
        assert_eq!(
            apply(AlarmRequest {
                action: AlarmAction::Get as i32,
                ..Default::default()
            }),
            vec![nospace(3), nospace(7)]
        );
        assert!(alarms.is_active(AlarmType::Nospace));
        assert!(alarms.is_raised_by(7, AlarmType::Nospace));
        assert!(!alarms.is_active(AlarmType::Corrupt));
        assert_eq!(apply(req(AlarmAction::Deactivate, 3)), vec![nospace(3)]);
        assert_eq!(apply(req(AlarmAction::Deactivate, 3)), vec![]);
        // A clean stop commits the applied entries (the node syncs the store before it exits).
        store.sync().unwrap();
        drop(store);

        let store = Store::open(dir.path(), 64 << 20).unwrap();
        let reloaded = Alarms::load(&store).unwrap();
        assert_eq!(reloaded.list(AlarmType::None), vec![nospace(7)]);
        assert_eq!(reloaded.list(AlarmType::Corrupt), vec![]);
    }
}
