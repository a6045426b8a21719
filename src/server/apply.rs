//! etcd's request semantics on top of the store: what a committed request does, and what reads
//! return.
//!
//! [`apply`] is the state machine step of the replicated log: the apply loop hands it every
//! committed KV request in log order, and because it reads nothing but the store, the request and
//! the `lease_exists` answer (itself derived from the log), every member computes the same
//! response, the same revision and the same events. [`range`] serves reads outside the log (after
//! a ReadIndex round, or serializable), and [`txn_read_only`] serves transactions without writes
//! the same way.
//!
//! The rules are etcd 3.4's `applierV3backend` (`etcdserver/apply.go`), quirks included:
//!
//! * Range: with a sort order, or any min/max mod/create revision filter, the limit applies after
//!   filtering and sorting; otherwise one extra key is fetched to compute `more`. `count` is the
//!   number of keys in the range *before* the filters. A sort target other than KEY with sort
//!   order NONE sorts ascending, but keeps the early limit (etcd tests the raw sort order for
//!   that). A limit `<= 0` means none. The sort is stable, so ties keep key order.
//! * Txn: every compare of the whole txn tree, nested ones included, is evaluated against the
//!   state *before* the txn. A compare on keys that do not exist fails for target VALUE and
//!   otherwise compares against an empty KeyValue (version, create, mod and lease 0); with a
//!   `range_end`, every key in the range must satisfy it. Before anything is written the chosen
//!   branches are checked whole (puts with ignore_value/ignore_lease of missing keys, then
//!   unknown leases, then range revisions), so such a failure changes nothing. All ops run in one
//!   [`WriteTxn`]: one revision for the whole txn, and reads see earlier writes of the same txn.
//!   Inner put responses carry `header.revision` = the txn's new revision, inner ranges and
//!   deletes the revision as they see it, nested txn responses an empty header.
//!
//! # Idempotence and failures
//!
//! An entry at or below the store's consistent index was applied before (WAL replay after a
//! restart): `apply` does nothing and returns [`RequestError::AlreadyApplied`], and the caller
//! sends no events and answers no waiter. A deterministic failure (see
//! [`RequestError::is_deterministic`]) still records the entry's index, so replay skips it too. A
//! non-deterministic failure records nothing and the node must stop.
//!
//! One deliberate difference from etcd: a put with `ignore_value`/`ignore_lease` whose key existed
//! before the txn but was deleted earlier in the same txn (possible because etcd's duplicate-key
//! check never conflicts with a `"\0"`-ended delete) makes etcd panic on every member. Here the
//! txn fails with `KeyNotFound`, changes nothing, and the entry counts as applied.

use std::cmp::Ordering;

use super::error::RequestError;
use crate::mvcc::{MvccError, RangeOptions, RangeResult, ReadTxn, Store, WriteTxn};
use crate::proto::cairnpb::{self, request::Op};
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{Event, KeyValue};

/// What a successfully applied request answers. Only `header.revision` is set; the server fills
/// in cluster id, member id and raft term.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyResponse {
    /// Answer to a put.
    Put(PutResponse),
    /// Answer to a delete-range.
    DeleteRange(DeleteRangeResponse),
    /// Answer to a txn.
    Txn(TxnResponse),
    /// Answer to a compaction.
    Compaction(CompactionResponse),
    /// A member's attributes were recorded (applied by the node, see `server::membership`).
    Attributes,
    /// Answer to a lease grant (applied by the node with the lessor).
    LeaseGrant(crate::proto::etcdserverpb::LeaseGrantResponse),
    /// Answer to a lease revoke.
    LeaseRevoke(crate::proto::etcdserverpb::LeaseRevokeResponse),
    /// Answer to an alarm change (applied by the node, see `server::quota`).
    Alarm(crate::proto::etcdserverpb::AlarmResponse),
}

/// What applying a put needs to know of the lease table (the lessor's, itself derived from the
/// log, so the answers are the same on every member).
pub trait Leases {
    /// Whether lease `id` exists.
    fn exists(&self, id: i64) -> bool;
    /// Whether the puts `(lease, key)` of one entry may attach their keys without taking a lease
    /// over its key limit (see [`crate::lease::Lessor::check_attach`]).
    fn check_attach(&self, puts: &[(i64, &[u8])]) -> Result<(), RequestError>;
}

impl Leases for crate::lease::Lessor {
    fn exists(&self, id: i64) -> bool {
        crate::lease::Lessor::exists(self, id)
    }
    fn check_attach(&self, puts: &[(i64, &[u8])]) -> Result<(), RequestError> {
        crate::lease::Lessor::check_attach(self, puts)
    }
}

/// A bare existence test (tests and fuzz targets): leases without a key limit.
impl<F: Fn(i64) -> bool> Leases for F {
    fn exists(&self, id: i64) -> bool {
        self(id)
    }
    fn check_attach(&self, _puts: &[(i64, &[u8])]) -> Result<(), RequestError> {
        Ok(())
    }
}

/// Applies the committed KV request `req` of raft entry `raft_index` to `store`: puts,
/// delete-ranges, txns and compactions. Returns the response and the events of the new revision
/// (empty if nothing changed), in order, for watchers. Lease and auth requests belong to their own
/// modules and are refused here with a non-deterministic error. See the module docs for
/// idempotence.
pub fn apply(
    store: &Store,
    raft_index: u64,
    req: &cairnpb::Request,
    leases: &dyn Leases,
) -> Result<(ApplyResponse, Vec<Event>), RequestError> {
    let consistent_index = store.consistent_index();
    if raft_index <= consistent_index {
        return Err(RequestError::AlreadyApplied {
            raft_index,
            consistent_index,
        });
    }
    let op = match &req.op {
        Some(op @ (Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_))) => op,
        Some(Op::Compaction(c)) => {
            return match store.compact(raft_index, c.revision) {
                Ok(()) => {
                    let resp = CompactionResponse {
                        header: header(store.current_revision()),
                    };
                    Ok((ApplyResponse::Compaction(resp), Vec::new()))
                }
                Err(e) => Err(record_failure(store, raft_index, e.into())),
            };
        }
        Some(_) => {
            return Err(RequestError::Internal(
                "apply: lease and auth requests are applied by their own modules".into(),
            ))
        }
        None => {
            return Err(RequestError::Internal(
                "apply: request carries no operation".into(),
            ))
        }
    };

    let mut wt = store.write(raft_index)?;
    let result = match op {
        Op::Put(p) => put_request(&mut wt, p, Some(leases)).map(ApplyResponse::Put),
        Op::DeleteRange(d) => delete_request(&mut wt, d).map(ApplyResponse::DeleteRange),
        Op::Txn(t) => txn_request(&mut wt, t, leases).map(ApplyResponse::Txn),
        _ => unreachable!("filtered above"),
    };
    match result {
        Ok(resp) => {
            let events = wt.end()?;
            Ok((resp, events))
        }
        Err(e) if e.is_deterministic() => {
            if wt.has_changes() {
                // Failed halfway (the etcd-panics case in the module docs): discard the writes.
                drop(wt);
                Err(record_failure(store, raft_index, e))
            } else {
                // Nothing was written: committing records just the index.
                let events = wt.end()?;
                debug_assert!(events.is_empty());
                Err(e)
            }
        }
        // The txn is dropped: nothing is recorded, the node must stop.
        Err(e) => Err(e),
    }
}

/// After a failed request: a deterministic failure still counts as applied.
fn record_failure(store: &Store, raft_index: u64, e: RequestError) -> RequestError {
    if !e.is_deterministic() {
        return e;
    }
    match store.set_consistent_index(raft_index) {
        Ok(()) => e,
        Err(storage) => storage.into(),
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

/// Serves a range read outside the log, at `req.revision` (0 = current).
pub fn range(store: &Store, req: &RangeRequest) -> Result<RangeResponse, RequestError> {
    range_request(store, req)
}

/// Whether a txn only reads (etcd's `isTxnReadonly`): every top-level op of both branches is a
/// range. Such a txn needs no log entry. As in etcd, a nested txn counts as a write, even one that
/// only reads.
pub fn is_txn_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(op.request, Some(Request::RequestRange(_))))
}

/// Whether a read-only txn may skip the ReadIndex round (etcd's `isTxnSerializable`): every
/// top-level op of both branches is a serializable range.
pub fn is_txn_serializable(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(&op.request, Some(Request::RequestRange(r)) if r.serializable))
}

/// Serves a txn without writes outside the log, against one consistent view of the store.
pub fn txn_read_only(store: &Store, req: &TxnRequest) -> Result<TxnResponse, RequestError> {
    if !is_txn_read_only(req) {
        return Err(RequestError::Internal(
            "txn_read_only: the txn writes".into(),
        ));
    }
    let view = store.read()?;
    let path = compare_to_path(&view, req)?;
    check_ranges(&view, req, &path)?;
    let mut resp = read_only_ops(&view, req, &path)?;
    resp.header = header(View::rev(&view));
    Ok(resp)
}

/// A read view the request rules run against: the store, a read txn, or the write txn.
trait View {
    fn range(&self, key: &[u8], end: &[u8], opts: &RangeOptions) -> Result<RangeResult, MvccError>;
    /// The revision reads at 0 resolve to.
    fn rev(&self) -> i64;
    /// etcd's `FirstRev`: the compaction floor, -1 if never compacted.
    fn first_rev(&self) -> i64;
}

impl View for Store {
    fn range(&self, key: &[u8], end: &[u8], opts: &RangeOptions) -> Result<RangeResult, MvccError> {
        Store::range(self, key, end, opts)
    }
    fn rev(&self) -> i64 {
        self.current_revision()
    }
    fn first_rev(&self) -> i64 {
        self.first_revision()
    }
}

impl View for ReadTxn<'_> {
    fn range(&self, key: &[u8], end: &[u8], opts: &RangeOptions) -> Result<RangeResult, MvccError> {
        ReadTxn::range(self, key, end, opts)
    }
    fn rev(&self) -> i64 {
        ReadTxn::rev(self)
    }
    fn first_rev(&self) -> i64 {
        ReadTxn::first_rev(self)
    }
}

impl View for WriteTxn<'_> {
    fn range(&self, key: &[u8], end: &[u8], opts: &RangeOptions) -> Result<RangeResult, MvccError> {
        WriteTxn::range(self, key, end, opts)
    }
    fn rev(&self) -> i64 {
        WriteTxn::rev(self)
    }
    fn first_rev(&self) -> i64 {
        WriteTxn::first_rev(self)
    }
}

/// etcd's `applierV3backend.Range`.
fn range_request(view: &dyn View, req: &RangeRequest) -> Result<RangeResponse, RequestError> {
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // The raw sort order decides whether the limit waits for the sort (etcd quirk).
    let late_limit = req.sort_order != SortOrder::None as i32 || filtered;
    let fetch_limit = if late_limit || req.limit <= 0 {
        0
    } else {
        // One more than asked, to know whether there is more.
        (req.limit as u64).saturating_add(1).min(usize::MAX as u64) as usize
    };
    let opts = RangeOptions {
        rev: req.revision,
        limit: fetch_limit,
        count_only: req.count_only,
    };
    let rr = view.range(&req.key, &req.range_end, &opts)?;
    let mut kvs = rr.kvs;

    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }

    let mut order = SortOrder::try_from(req.sort_order).ok();
    if req.sort_target != SortTarget::Key as i32 && order == Some(SortOrder::None) {
        // mvcc returns key order already; any other target defaults to ascending.
        order = Some(SortOrder::Ascend);
    }
    let by: Option<fn(&KeyValue, &KeyValue) -> Ordering> =
        match SortTarget::try_from(req.sort_target).ok() {
            Some(SortTarget::Key) => Some(|a, b| a.key.cmp(&b.key)),
            Some(SortTarget::Version) => Some(|a, b| a.version.cmp(&b.version)),
            Some(SortTarget::Create) => Some(|a, b| a.create_revision.cmp(&b.create_revision)),
            Some(SortTarget::Mod) => Some(|a, b| a.mod_revision.cmp(&b.mod_revision)),
            Some(SortTarget::Value) => Some(|a, b| a.value.cmp(&b.value)),
            None => None,
        };
    match (order, by) {
        (Some(SortOrder::Ascend), Some(by)) => kvs.sort_by(by),
        (Some(SortOrder::Descend), Some(by)) => kvs.sort_by(|a, b| by(b, a)),
        _ => {}
    }

    let mut more = false;
    if req.limit > 0 && kvs.len() as u64 > req.limit as u64 {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: header(rr.rev),
        kvs,
        more,
        count: rr.count as i64,
    })
}

/// etcd's `applierV3backend.Put`. `leases` is `Some` outside a txn (inside one, the txn's
/// up-front check has looked the lease up and counted its keys already).
fn put_request(
    wt: &mut WriteTxn<'_>,
    req: &PutRequest,
    leases: Option<&dyn Leases>,
) -> Result<PutResponse, RequestError> {
    if let Some(leases) = leases {
        if req.lease != 0 && !leases.exists(req.lease) {
            return Err(RequestError::LeaseNotFound);
        }
        // With ignore_lease the key keeps the lease it holds: nothing new is attached.
        if req.lease != 0 {
            leases.check_attach(&[(req.lease, req.key.as_slice())])?;
        }
    }
    let mut value = req.value.as_slice();
    let mut lease = req.lease;
    let existing = if req.ignore_value || req.ignore_lease || req.prev_kv {
        wt.range(&req.key, b"", &RangeOptions::default())?.kvs.pop()
    } else {
        None
    };
    if req.ignore_value || req.ignore_lease {
        let Some(kv) = &existing else {
            return Err(RequestError::KeyNotFound);
        };
        if req.ignore_value {
            value = &kv.value;
        }
        if req.ignore_lease {
            lease = kv.lease;
        }
    }
    let value = value.to_vec();
    wt.put(&req.key, &value, lease)?;
    let prev_kv = if req.prev_kv { existing } else { None };
    Ok(PutResponse {
        header: header(wt.rev()),
        prev_kv,
    })
}

/// etcd's `applierV3backend.DeleteRange`.
fn delete_request(
    wt: &mut WriteTxn<'_>,
    req: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, RequestError> {
    let deleted = wt.delete_range(&req.key, &req.range_end)?;
    Ok(DeleteRangeResponse {
        header: header(wt.rev()),
        deleted: deleted.len() as i64,
        prev_kvs: if req.prev_kv { deleted } else { Vec::new() },
    })
}

/// Which branch each txn of a txn tree takes: `children` are the paths of the nested txns of the
/// chosen branch, in order.
#[derive(Debug)]
struct TxnPath {
    succeeded: bool,
    children: Vec<TxnPath>,
}

impl TxnPath {
    fn branch<'r>(&self, req: &'r TxnRequest) -> &'r [RequestOp] {
        if self.succeeded {
            &req.success
        } else {
            &req.failure
        }
    }
}

/// etcd's `compareToPath`: all compares of the tree, against one view.
fn compare_to_path(view: &dyn View, req: &TxnRequest) -> Result<TxnPath, RequestError> {
    let mut succeeded = true;
    for c in &req.compare {
        if !apply_compare(view, c)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut children = Vec::new();
    for op in ops {
        if let Some(Request::RequestTxn(t)) = &op.request {
            children.push(compare_to_path(view, t)?);
        }
    }
    Ok(TxnPath {
        succeeded,
        children,
    })
}

/// etcd's `applyCompare`. A read error other than a storage failure makes the compare false.
fn apply_compare(view: &dyn View, c: &Compare) -> Result<bool, RequestError> {
    let kvs = match view.range(&c.key, &c.range_end, &RangeOptions::default()) {
        Ok(rr) => rr.kvs,
        Err(MvccError::Compacted | MvccError::FutureRevision) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if kvs.is_empty() {
        if c.target == CompareTarget::Value as i32 {
            // A missing key has no value to compare; etcd always fails this compare.
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

/// etcd's `compareKV`. A target union that does not match the target compares against zero (or
/// empty bytes); an unknown target compares equal; an unknown result is true.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let target = CompareTarget::try_from(c.target).ok();
    // The number to compare with, when the union holds the variant of the target (else 0).
    let number = match (target, c.target_union.as_ref()) {
        (Some(CompareTarget::Create), Some(TargetUnion::CreateRevision(v)))
        | (Some(CompareTarget::Mod), Some(TargetUnion::ModRevision(v)))
        | (Some(CompareTarget::Version), Some(TargetUnion::Version(v)))
        | (Some(CompareTarget::Lease), Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    };
    let ord = match target {
        Some(CompareTarget::Value) => {
            let want: &[u8] = match c.target_union.as_ref() {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Some(CompareTarget::Create) => kv.create_revision.cmp(&number),
        Some(CompareTarget::Mod) => kv.mod_revision.cmp(&number),
        Some(CompareTarget::Version) => kv.version.cmp(&number),
        Some(CompareTarget::Lease) => kv.lease.cmp(&number),
        None => Ordering::Equal,
    };
    match CompareResult::try_from(c.result).ok() {
        Some(CompareResult::Equal) => ord == Ordering::Equal,
        Some(CompareResult::NotEqual) => ord != Ordering::Equal,
        Some(CompareResult::Greater) => ord == Ordering::Greater,
        Some(CompareResult::Less) => ord == Ordering::Less,
        None => true,
    }
}

/// Calls `f` on every non-txn op of the branches `path` chooses, depth first.
fn for_each_op<'r>(
    req: &'r TxnRequest,
    path: &TxnPath,
    f: &mut dyn FnMut(&'r Request) -> Result<(), RequestError>,
) -> Result<(), RequestError> {
    let mut children = path.children.iter();
    for op in path.branch(req) {
        match &op.request {
            Some(Request::RequestTxn(t)) => {
                let child = children.next().expect("one path per nested txn");
                for_each_op(t, child, f)?;
            }
            Some(r) => f(r)?,
            None => {}
        }
    }
    Ok(())
}

/// etcd's `checkPut` over the chosen branches, against the state before the txn; then cairn's
/// key limit per lease over all of the txn's attachments at once.
fn check_puts(
    view: &dyn View,
    req: &TxnRequest,
    path: &TxnPath,
    leases: &dyn Leases,
) -> Result<(), RequestError> {
    let mut attach: Vec<(i64, &[u8])> = Vec::new();
    for_each_op(req, path, &mut |r| {
        if let Request::RequestPut(p) = r {
            if p.lease != 0 {
                attach.push((p.lease, &p.key));
            }
        }
        Ok(())
    })?;
    for_each_op(req, path, &mut |r| {
        let Request::RequestPut(p) = r else {
            return Ok(());
        };
        if p.ignore_value || p.ignore_lease {
            let rr = view.range(&p.key, b"", &RangeOptions::default())?;
            if rr.kvs.is_empty() {
                return Err(RequestError::KeyNotFound);
            }
        }
        if p.lease != 0 && !leases.exists(p.lease) {
            return Err(RequestError::LeaseNotFound);
        }
        Ok(())
    })?;
    leases.check_attach(&attach)
}

/// etcd's `checkRange` over the chosen branches.
fn check_ranges(view: &dyn View, req: &TxnRequest, path: &TxnPath) -> Result<(), RequestError> {
    let (rev, first_rev) = (view.rev(), view.first_rev());
    for_each_op(req, path, &mut |r| {
        let Request::RequestRange(rr) = r else {
            return Ok(());
        };
        match rr.revision {
            0 => Ok(()),
            x if x > rev => Err(RequestError::FutureRev),
            x if x < first_rev => Err(RequestError::Compacted),
            _ => Ok(()),
        }
    })
}

/// etcd's `applierV3backend.Txn`.
fn txn_request(
    wt: &mut WriteTxn<'_>,
    req: &TxnRequest,
    leases: &dyn Leases,
) -> Result<TxnResponse, RequestError> {
    assert!(!wt.has_changes(), "a txn starts on a fresh write");
    let path = compare_to_path(&*wt, req)?;
    check_puts(&*wt, req, &path, leases)?;
    check_ranges(&*wt, req, &path)?;
    let mut resp = txn_ops(wt, req, &path)?;
    resp.header = header(wt.rev());
    Ok(resp)
}

/// Runs the chosen branch of one (possibly nested) txn; its header is left empty as etcd does.
fn txn_ops(
    wt: &mut WriteTxn<'_>,
    req: &TxnRequest,
    path: &TxnPath,
) -> Result<TxnResponse, RequestError> {
    let ops = path.branch(req);
    let mut children = path.children.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => {
                Some(Response::ResponseRange(range_request(&*wt, r)?))
            }
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(put_request(wt, p, None)?)),
            Some(Request::RequestDeleteRange(d)) => {
                Some(Response::ResponseDeleteRange(delete_request(wt, d)?))
            }
            Some(Request::RequestTxn(t)) => {
                let child = children.next().expect("one path per nested txn");
                Some(Response::ResponseTxn(txn_ops(wt, t, child)?))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded: path.succeeded,
        responses,
    })
}

/// [`txn_ops`] for a txn without writes.
fn read_only_ops(
    view: &dyn View,
    req: &TxnRequest,
    path: &TxnPath,
) -> Result<TxnResponse, RequestError> {
    let ops = path.branch(req);
    let mut children = path.children.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => {
                Some(Response::ResponseRange(range_request(view, r)?))
            }
            Some(Request::RequestTxn(t)) => {
                let child = children.next().expect("one path per nested txn");
                Some(Response::ResponseTxn(read_only_ops(view, t, child)?))
            }
            Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) => {
                unreachable!("checked read-only")
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded: path.succeeded,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use tempfile::TempDir;

    use super::*;
    use crate::mvcc::KeySpan;
    use crate::proto::etcdserverpb::CompactionRequest;
    use crate::proto::mvccpb::event::EventType;

    const MAP_SIZE_BYTES: usize = 64 << 20;
    /// The only lease that exists in these tests.
    const LEASE: i64 = 100;

    struct Harness {
        dir: TempDir,
        store: Option<Store>,
        index: u64,
    }

    impl Harness {
        fn new() -> Harness {
            let dir = TempDir::new().unwrap();
            let store = Some(Store::open(dir.path(), MAP_SIZE_BYTES).unwrap());
            Harness {
                dir,
                store,
                index: 0,
            }
        }

        fn store(&self) -> &Store {
            self.store.as_ref().unwrap()
        }

        /// A clean stop and start (the node syncs the store before it exits).
        fn reopen(&mut self) {
            self.store().sync().unwrap();
            drop(self.store.take());
            self.store = Some(Store::open(self.dir.path(), MAP_SIZE_BYTES).unwrap());
        }

        fn apply(&mut self, op: Op) -> Result<(ApplyResponse, Vec<Event>), RequestError> {
            self.index += 1;
            let req = cairnpb::Request {
                id: self.index,
                op: Some(op),
                origin: 0,
                ..Default::default()
            };
            let result = apply(self.store(), self.index, &req, &|l| l == LEASE);
            if let Err(e) = &result {
                assert!(e.is_deterministic(), "{e}");
            }
            // Applied or failed deterministically, the entry is recorded.
            assert_eq!(self.store().consistent_index(), self.index);
            result
        }

        fn put(&mut self, p: PutRequest) -> Result<PutResponse, RequestError> {
            match self.apply(Op::Put(p))? {
                (ApplyResponse::Put(r), _) => Ok(r),
                other => panic!("{other:?}"),
            }
        }

        fn put_kv(&mut self, k: &str, v: &str) -> PutResponse {
            self.put(put_req(k, v)).unwrap()
        }

        fn delete(&mut self, d: DeleteRangeRequest) -> DeleteRangeResponse {
            match self.apply(Op::DeleteRange(d)).unwrap() {
                (ApplyResponse::DeleteRange(r), _) => r,
                other => panic!("{other:?}"),
            }
        }

        fn txn(&mut self, t: TxnRequest) -> Result<(TxnResponse, Vec<Event>), RequestError> {
            match self.apply(Op::Txn(t))? {
                (ApplyResponse::Txn(r), events) => Ok((r, events)),
                other => panic!("{other:?}"),
            }
        }

        fn compact(&mut self, revision: i64) -> Result<CompactionResponse, RequestError> {
            match self.apply(Op::Compaction(CompactionRequest {
                revision,
                physical: false,
            }))? {
                (ApplyResponse::Compaction(r), _) => Ok(r),
                other => panic!("{other:?}"),
            }
        }

        fn range(&self, r: RangeRequest) -> Result<RangeResponse, RequestError> {
            range(self.store(), &r)
        }

        fn rev(&self) -> i64 {
            self.store().current_revision()
        }
    }

    fn put_req(k: &str, v: &str) -> PutRequest {
        PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }
    }

    fn del_req(k: &str, end: &str) -> DeleteRangeRequest {
        DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            ..Default::default()
        }
    }

    fn range_req(k: &str, end: &str) -> RangeRequest {
        RangeRequest {
            key: k.into(),
            range_end: end.into(),
            ..Default::default()
        }
    }

    fn op(r: Request) -> RequestOp {
        RequestOp { request: Some(r) }
    }

    fn op_put(k: &str, v: &str) -> RequestOp {
        op(Request::RequestPut(put_req(k, v)))
    }

    fn op_del(k: &str, end: &str) -> RequestOp {
        op(Request::RequestDeleteRange(del_req(k, end)))
    }

    fn op_get(k: &str, end: &str) -> RequestOp {
        op(Request::RequestRange(range_req(k, end)))
    }

    fn cmp(key: &str, target: CompareTarget, result: CompareResult, tu: TargetUnion) -> Compare {
        Compare {
            key: key.into(),
            target: target as i32,
            result: result as i32,
            target_union: Some(tu),
            ..Default::default()
        }
    }

    fn keys(kvs: &[KeyValue]) -> Vec<String> {
        kvs.iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect()
    }

    fn resp_range(r: &ResponseOp) -> &RangeResponse {
        match &r.response {
            Some(Response::ResponseRange(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn resp_put(r: &ResponseOp) -> &PutResponse {
        match &r.response {
            Some(Response::ResponsePut(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn rev_of(h: &Option<ResponseHeader>) -> i64 {
        h.as_ref().unwrap().revision
    }

    // ---- Range ----

    /// a..e with versions e:1, d:2, c:3, b:4, a:5 (a is written last).
    fn sorted_fixture() -> Harness {
        let mut h = Harness::new();
        for (i, k) in ["e", "d", "c", "b", "a"].iter().enumerate() {
            for _ in 0..=i {
                h.put_kv(k, &format!("{}", 9 - i));
            }
        }
        h
    }

    #[test]
    fn range_header_is_current_revision_and_count_ignores_limit() {
        let h = sorted_fixture();
        let r = h
            .range(RangeRequest {
                limit: 2,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!(keys(&r.kvs), ["a", "b"]);
        assert_eq!((r.count, r.more, rev_of(&r.header)), (5, true, h.rev()));
        let r = h
            .range(RangeRequest {
                limit: 5,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert!(!r.more);
        let r = h
            .range(RangeRequest {
                limit: -1,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!((r.kvs.len(), r.more), (5, false));
    }

    #[test]
    fn range_sort_target_without_order_sorts_ascending() {
        let h = sorted_fixture();
        let r = h
            .range(RangeRequest {
                sort_target: SortTarget::Version as i32,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!(keys(&r.kvs), ["e", "d", "c", "b", "a"]);
        // ...but keeps the early limit: limit + 1 keys by key order (a, b, c), sorted by version
        // (c:3, b:4, a:5), then cut to the limit (etcd quirk).
        let r = h
            .range(RangeRequest {
                sort_target: SortTarget::Version as i32,
                limit: 2,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!(
            (keys(&r.kvs), r.more, r.count),
            (vec!["c".into(), "b".into()], true, 5)
        );
    }

    #[test]
    fn range_with_sort_order_limits_after_sorting() {
        let h = sorted_fixture();
        let r = h
            .range(RangeRequest {
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Key as i32,
                limit: 2,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!(
            (keys(&r.kvs), r.more, r.count),
            (vec!["e".into(), "d".into()], true, 5)
        );
        let r = h
            .range(RangeRequest {
                sort_order: SortOrder::Ascend as i32,
                sort_target: SortTarget::Mod as i32,
                limit: 1,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!(keys(&r.kvs), ["e"]);
        let r = h
            .range(RangeRequest {
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Value as i32,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!(keys(&r.kvs), ["e", "d", "c", "b", "a"]);
        let r = h
            .range(RangeRequest {
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!(keys(&r.kvs), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn range_sort_is_stable() {
        let mut h = Harness::new();
        for k in ["c", "a", "b"] {
            h.put_kv(k, "same");
        }
        for order in [SortOrder::Ascend, SortOrder::Descend] {
            let r = h
                .range(RangeRequest {
                    sort_order: order as i32,
                    sort_target: SortTarget::Value as i32,
                    ..range_req("a", "\0")
                })
                .unwrap();
            assert_eq!(keys(&r.kvs), ["a", "b", "c"]);
        }
    }

    #[test]
    fn range_filters_apply_after_count() {
        let h = sorted_fixture();
        // Mod revisions: e=2, d=4, c=7, b=11, a=16.
        let r = h
            .range(RangeRequest {
                min_mod_revision: 5,
                max_mod_revision: 11,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!((keys(&r.kvs), r.count), (vec!["b".into(), "c".into()], 5));
        let r = h
            .range(RangeRequest {
                max_create_revision: 2,
                limit: 1,
                ..range_req("a", "\0")
            })
            .unwrap();
        // The limit waits for the filter: e (created at 2) is found although it is last by key.
        assert_eq!((keys(&r.kvs), r.more), (vec!["e".into()], false));
        let r = h
            .range(RangeRequest {
                min_create_revision: 12,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!(keys(&r.kvs), ["a"]);
    }

    #[test]
    fn range_keys_only_and_count_only() {
        let h = sorted_fixture();
        let r = h
            .range(RangeRequest {
                keys_only: true,
                ..range_req("a", "c")
            })
            .unwrap();
        assert_eq!(keys(&r.kvs), ["a", "b"]);
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
        let r = h
            .range(RangeRequest {
                count_only: true,
                limit: 1,
                ..range_req("a", "\0")
            })
            .unwrap();
        assert_eq!((r.kvs.len(), r.count, r.more), (0, 5, false));
    }

    #[test]
    fn range_revision_errors() {
        let mut h = Harness::new();
        h.put_kv("a", "1");
        h.put_kv("a", "2");
        let r = h.range(RangeRequest {
            revision: 10,
            ..range_req("a", "")
        });
        assert_eq!(r, Err(RequestError::FutureRev));
        h.compact(3).unwrap();
        let r = h.range(RangeRequest {
            revision: 2,
            ..range_req("a", "")
        });
        assert_eq!(r, Err(RequestError::Compacted));
        let r = h
            .range(RangeRequest {
                revision: 3,
                ..range_req("a", "")
            })
            .unwrap();
        assert_eq!(r.kvs[0].value, b"2");
    }

    // ---- Put ----

    #[test]
    fn put_reports_new_revision_and_prev_kv() {
        let mut h = Harness::new();
        let r = h.put_kv("a", "1");
        assert_eq!((rev_of(&r.header), r.prev_kv), (2, None));
        let r = h
            .put(PutRequest {
                prev_kv: true,
                ..put_req("a", "2")
            })
            .unwrap();
        assert_eq!(rev_of(&r.header), 3);
        assert_eq!(r.prev_kv.unwrap().value, b"1");
        // Without prev_kv asked, none is returned.
        assert_eq!(h.put_kv("a", "3").prev_kv, None);
    }

    #[test]
    fn put_ignore_value_and_ignore_lease_need_an_existing_key() {
        let mut h = Harness::new();
        let r = h.put(PutRequest {
            ignore_value: true,
            ..put_req("a", "")
        });
        assert_eq!(r, Err(RequestError::KeyNotFound));
        let r = h.put(PutRequest {
            ignore_lease: true,
            ..put_req("a", "x")
        });
        assert_eq!(r, Err(RequestError::KeyNotFound));
        // A failed put creates no revision but counts as applied.
        assert_eq!(h.rev(), 1);
        h.put(PutRequest {
            lease: LEASE,
            ..put_req("a", "1")
        })
        .unwrap();
        h.put(PutRequest {
            ignore_value: true,
            ..put_req("a", "")
        })
        .unwrap();
        let kv = h.range(range_req("a", "")).unwrap().kvs.remove(0);
        // ignore_value keeps the value; a put without ignore_lease drops the lease.
        assert_eq!(
            (kv.value.as_slice(), kv.lease, kv.version),
            (&b"1"[..], 0, 2)
        );
        h.put(PutRequest {
            lease: LEASE,
            ..put_req("a", "2")
        })
        .unwrap();
        h.put(PutRequest {
            ignore_lease: true,
            ..put_req("a", "3")
        })
        .unwrap();
        let kv = h.range(range_req("a", "")).unwrap().kvs.remove(0);
        assert_eq!((kv.value.as_slice(), kv.lease), (&b"3"[..], LEASE));
    }

    #[test]
    fn put_with_unknown_lease_fails() {
        let mut h = Harness::new();
        let r = h.put(PutRequest {
            lease: 7,
            ..put_req("a", "1")
        });
        assert_eq!(r, Err(RequestError::LeaseNotFound));
        assert_eq!(h.rev(), 1);
    }

    // ---- DeleteRange ----

    #[test]
    fn delete_range_counts_and_returns_prev_kvs() {
        let mut h = Harness::new();
        for k in ["a", "b", "c"] {
            h.put_kv(k, "v");
        }
        let r = h.delete(DeleteRangeRequest {
            prev_kv: true,
            ..del_req("a", "c")
        });
        assert_eq!(
            (r.deleted, keys(&r.prev_kvs), rev_of(&r.header)),
            (2, vec!["a".into(), "b".into()], 5)
        );
        let r = h.delete(del_req("a", "c"));
        // Nothing deleted: no new revision.
        assert_eq!((r.deleted, rev_of(&r.header)), (0, 5));
        let r = h.delete(del_req("\0", "\0"));
        assert_eq!((r.deleted, r.prev_kvs.len(), rev_of(&r.header)), (1, 0, 6));
    }

    // ---- Txn ----

    #[test]
    fn txn_compare_on_missing_key() {
        let mut h = Harness::new();
        // VALUE on a missing key always fails, even against an empty value.
        let t = TxnRequest {
            compare: vec![cmp(
                "a",
                CompareTarget::Value,
                CompareResult::Equal,
                TargetUnion::Value(vec![]),
            )],
            success: vec![op_put("s", "1")],
            failure: vec![op_put("f", "1")],
        };
        let (r, _) = h.txn(t).unwrap();
        assert!(!r.succeeded);
        // Other targets compare against an empty KeyValue: version 0, create 0, mod 0, lease 0.
        for (target, tu) in [
            (CompareTarget::Version, TargetUnion::Version(0)),
            (CompareTarget::Create, TargetUnion::CreateRevision(0)),
            (CompareTarget::Mod, TargetUnion::ModRevision(0)),
            (CompareTarget::Lease, TargetUnion::Lease(0)),
        ] {
            let t = TxnRequest {
                compare: vec![cmp("missing", target, CompareResult::Equal, tu)],
                ..Default::default()
            };
            assert!(h.txn(t).unwrap().0.succeeded, "{target:?}");
        }
    }

    #[test]
    fn txn_compare_results_and_ranges() {
        let mut h = Harness::new();
        h.put_kv("a", "1"); // 2
        h.put_kv("b", "2"); // 3
        h.put_kv("b", "3"); // 4
        let check = |h: &mut Harness, c: Compare| {
            let t = TxnRequest {
                compare: vec![c],
                ..Default::default()
            };
            h.txn(t).unwrap().0.succeeded
        };
        use CompareResult::*;
        use CompareTarget as T;
        assert!(check(
            &mut h,
            cmp("b", T::Version, Equal, TargetUnion::Version(2))
        ));
        assert!(check(
            &mut h,
            cmp("b", T::Create, Equal, TargetUnion::CreateRevision(3))
        ));
        assert!(check(
            &mut h,
            cmp("b", T::Mod, Greater, TargetUnion::ModRevision(3))
        ));
        assert!(check(
            &mut h,
            cmp("b", T::Mod, Less, TargetUnion::ModRevision(5))
        ));
        assert!(check(
            &mut h,
            cmp("b", T::Value, NotEqual, TargetUnion::Value(b"2".to_vec()))
        ));
        assert!(check(
            &mut h,
            cmp("a", T::Value, Less, TargetUnion::Value(b"10".to_vec()))
        ));
        assert!(!check(
            &mut h,
            cmp("a", T::Value, Greater, TargetUnion::Value(b"1".to_vec()))
        ));
        // A mismatched target union compares against zero.
        assert!(check(
            &mut h,
            cmp("b", T::Version, Greater, TargetUnion::ModRevision(100))
        ));
        // With range_end, every key in the range must satisfy the compare.
        let mut c = cmp("a", T::Version, Equal, TargetUnion::Version(1));
        c.range_end = b"c".to_vec();
        assert!(!check(&mut h, c.clone()));
        c.result = Greater as i32;
        c.target_union = Some(TargetUnion::Version(0));
        assert!(check(&mut h, c));
        // No compare at all succeeds.
        assert!(check(
            &mut h,
            Compare {
                key: b"a".to_vec(),
                result: 99,
                ..Default::default()
            }
        ));
        // Read-only txns create no revision.
        assert_eq!(h.rev(), 4);
    }

    #[test]
    fn txn_runs_in_one_revision_and_reads_its_own_writes() {
        let mut h = Harness::new();
        h.put_kv("a", "1"); // 2
        let t = TxnRequest {
            compare: vec![],
            success: vec![
                op_get("a", "\0"),
                op_put("b", "1"),
                op_get("a", "\0"),
                op_del("a", ""),
                op_del("zzz", ""),
                op_put("c", "1"),
            ],
            failure: vec![],
        };
        let (r, events) = h.txn(t).unwrap();
        assert!(r.succeeded);
        assert_eq!(rev_of(&r.header), 3);
        let first = resp_range(&r.responses[0]);
        assert_eq!(
            (keys(&first.kvs), rev_of(&first.header)),
            (vec!["a".into()], 2)
        );
        assert_eq!(rev_of(&resp_put(&r.responses[1]).header), 3);
        let second = resp_range(&r.responses[2]);
        assert_eq!(
            (keys(&second.kvs), rev_of(&second.header)),
            (vec!["a".into(), "b".into()], 3)
        );
        let kinds: Vec<EventType> = events.iter().map(|e| e.r#type()).collect();
        assert_eq!(kinds, [EventType::Put, EventType::Delete, EventType::Put]);
        assert!(events
            .iter()
            .all(|e| e.kv.as_ref().unwrap().mod_revision == 3));
        assert_eq!(h.rev(), 3);
        let all = h.range(range_req("a", "\0")).unwrap();
        assert_eq!(keys(&all.kvs), ["b", "c"]);
    }

    #[test]
    fn txn_delete_response_revision_follows_changes() {
        let mut h = Harness::new();
        h.put_kv("a", "1"); // 2
        let t = TxnRequest {
            success: vec![op_del("zzz", ""), op_put("b", "1"), op_del("yyy", "")],
            ..Default::default()
        };
        let (r, _) = h.txn(t).unwrap();
        let rev = |i: usize| match &r.responses[i].response {
            Some(Response::ResponseDeleteRange(d)) => rev_of(&d.header),
            other => panic!("{other:?}"),
        };
        // Before any change the txn is at 2, after the put at 3.
        assert_eq!((rev(0), rev(2)), (2, 3));
    }

    #[test]
    fn txn_without_changes_keeps_revision() {
        let mut h = Harness::new();
        h.put_kv("a", "1");
        let t = TxnRequest {
            success: vec![op_get("a", ""), op_del("b", "")],
            ..Default::default()
        };
        let (r, events) = h.txn(t).unwrap();
        assert_eq!((rev_of(&r.header), events.len(), h.rev()), (2, 0, 2));
    }

    #[test]
    fn nested_txn_compares_see_the_state_before_the_txn() {
        let mut h = Harness::new();
        let inner = TxnRequest {
            // "a" is put by the outer branch before this nested txn runs, yet the compare sees
            // the state before the whole txn, where "a" does not exist.
            compare: vec![cmp(
                "a",
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(0),
            )],
            success: vec![op_put("inner-then", "1")],
            failure: vec![op_put("inner-else", "1")],
        };
        let t = TxnRequest {
            success: vec![op_put("a", "1"), op(Request::RequestTxn(inner))],
            ..Default::default()
        };
        let (r, _) = h.txn(t).unwrap();
        let nested = match &r.responses[1].response {
            Some(Response::ResponseTxn(t)) => t,
            other => panic!("{other:?}"),
        };
        assert!(nested.succeeded);
        // Nested txn responses carry an empty header, as in etcd.
        assert_eq!(nested.header, Some(ResponseHeader::default()));
        assert_eq!(rev_of(&resp_put(&nested.responses[0]).header), 2);
        assert_eq!(
            keys(&h.range(range_req("a", "\0")).unwrap().kvs),
            ["a", "inner-then"]
        );
    }

    #[test]
    fn txn_checks_the_branch_before_writing() {
        let mut h = Harness::new();
        h.put_kv("a", "1"); // 2
        let bad_put = TxnRequest {
            success: vec![
                op_put("b", "1"),
                op(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put_req("missing", "")
                })),
            ],
            ..Default::default()
        };
        assert_eq!(h.txn(bad_put).map(|_| ()), Err(RequestError::KeyNotFound));
        let bad_lease = TxnRequest {
            success: vec![
                op_put("b", "1"),
                op(Request::RequestPut(PutRequest {
                    lease: 7,
                    ..put_req("c", "1")
                })),
            ],
            ..Default::default()
        };
        assert_eq!(
            h.txn(bad_lease).map(|_| ()),
            Err(RequestError::LeaseNotFound)
        );
        let future = TxnRequest {
            success: vec![
                op_put("b", "1"),
                op(Request::RequestRange(RangeRequest {
                    revision: 3,
                    ..range_req("a", "")
                })),
            ],
            ..Default::default()
        };
        assert_eq!(h.txn(future).map(|_| ()), Err(RequestError::FutureRev));
        // The failure branch is the one checked when compares fail.
        let failing = TxnRequest {
            compare: vec![cmp(
                "a",
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(9),
            )],
            success: vec![op(Request::RequestPut(PutRequest {
                lease: 7,
                ..put_req("c", "1")
            }))],
            failure: vec![op_put("f", "1")],
        };
        assert!(!h.txn(failing).unwrap().0.succeeded);
        assert_eq!(h.rev(), 3);
        assert_eq!(
            keys(&h.range(range_req("a", "\0")).unwrap().kvs),
            ["a", "f"]
        );
    }

    #[test]
    fn txn_put_check_precedes_range_check() {
        let mut h = Harness::new();
        let t = TxnRequest {
            success: vec![
                op(Request::RequestRange(RangeRequest {
                    revision: 50,
                    ..range_req("a", "")
                })),
                op(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put_req("a", "")
                })),
            ],
            ..Default::default()
        };
        assert_eq!(h.txn(t).map(|_| ()), Err(RequestError::KeyNotFound));
    }

    #[test]
    fn txn_range_at_compacted_revision_fails() {
        let mut h = Harness::new();
        h.put_kv("a", "1");
        h.put_kv("a", "2");
        h.compact(3).unwrap();
        let t = TxnRequest {
            success: vec![op(Request::RequestRange(RangeRequest {
                revision: 2,
                ..range_req("a", "")
            }))],
            ..Default::default()
        };
        assert_eq!(h.txn(t).map(|_| ()), Err(RequestError::Compacted));
        // A negative revision is "compacted" once a floor exists (etcd compares with FirstRev).
        let t = TxnRequest {
            success: vec![op(Request::RequestRange(RangeRequest {
                revision: -1,
                ..range_req("a", "")
            }))],
            ..Default::default()
        };
        assert_eq!(h.txn(t).map(|_| ()), Err(RequestError::Compacted));
    }

    #[test]
    fn txn_failing_halfway_changes_nothing() {
        // etcd panics here (see the module docs); cairn fails the txn as a whole.
        let mut h = Harness::new();
        h.put_kv("a", "1");
        let t = TxnRequest {
            success: vec![
                op_del("a", "\0"),
                op(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put_req("a", "")
                })),
            ],
            ..Default::default()
        };
        assert_eq!(super::super::validate::check_txn(&t, 128), Ok(()));
        assert_eq!(h.txn(t).map(|_| ()), Err(RequestError::KeyNotFound));
        assert_eq!(h.rev(), 2);
        assert_eq!(h.range(range_req("a", "")).unwrap().kvs.len(), 1);
        h.store().check_consistency().unwrap();
    }

    #[test]
    fn txn_read_only_serves_from_one_view() {
        let mut h = Harness::new();
        h.put_kv("a", "1");
        let t = TxnRequest {
            compare: vec![cmp(
                "a",
                CompareTarget::Value,
                CompareResult::Equal,
                TargetUnion::Value(b"1".to_vec()),
            )],
            success: vec![op_get("a", "")],
            failure: vec![op_get("b", "")],
        };
        assert!(is_txn_read_only(&t));
        // etcd's rule: a nested txn counts as a write even if it only reads.
        let nested = TxnRequest {
            success: vec![op(Request::RequestTxn(TxnRequest {
                success: vec![op_get("b", "")],
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert!(!is_txn_read_only(&nested));
        let r = txn_read_only(h.store(), &t).unwrap();
        assert!(r.succeeded);
        assert_eq!(rev_of(&r.header), 2);
        assert_eq!(resp_range(&r.responses[0]).kvs[0].value, b"1");
        assert!(!is_txn_read_only(&TxnRequest {
            failure: vec![op_put("a", "1")],
            ..Default::default()
        }));
    }

    // ---- Compaction, idempotence, routing ----

    #[test]
    fn compaction_errors_and_header() {
        let mut h = Harness::new();
        h.put_kv("a", "1"); // 2
        h.put_kv("a", "2"); // 3
        assert_eq!(h.compact(4), Err(RequestError::FutureRev));
        let r = h.compact(2).unwrap();
        assert_eq!(rev_of(&r.header), 3);
        assert_eq!(h.compact(2), Err(RequestError::Compacted));
        assert_eq!(h.compact(1), Err(RequestError::Compacted));
        assert_eq!(h.rev(), 3);
    }

    #[test]
    fn applying_an_entry_twice_is_a_no_op() {
        let mut h = Harness::new();
        h.put_kv("a", "1");
        let req = cairnpb::Request {
            id: 1,
            op: Some(Op::Put(put_req("a", "2"))),
            origin: 0,
            ..Default::default()
        };
        let again = apply(h.store(), h.index, &req, &|_| true);
        assert_eq!(
            again,
            Err(RequestError::AlreadyApplied {
                raft_index: 1,
                consistent_index: 1
            })
        );
        assert_eq!(h.rev(), 2);
        // After a restart too.
        h.reopen();
        let again = apply(h.store(), 1, &req, &|_| true);
        assert!(matches!(again, Err(RequestError::AlreadyApplied { .. })));
        assert_eq!(h.range(range_req("a", "")).unwrap().kvs[0].value, b"1");
    }

    #[test]
    fn non_kv_requests_are_refused_without_recording() {
        let h = Harness::new();
        let req = cairnpb::Request {
            id: 1,
            op: Some(Op::LeaseRevoke(
                crate::proto::etcdserverpb::LeaseRevokeRequest { id: 5 },
            )),
            origin: 0,
            ..Default::default()
        };
        let r = apply(h.store(), 1, &req, &|_| true);
        assert!(matches!(&r, Err(e) if !e.is_deterministic()));
        let r = apply(
            h.store(),
            1,
            &cairnpb::Request {
                id: 1,
                op: None,
                origin: 0,
                ..Default::default()
            },
            &|_| true,
        );
        assert!(matches!(&r, Err(e) if !e.is_deterministic()));
        assert_eq!(h.store().consistent_index(), 0);
    }

    // ---- The model check ----

    /// The reference: every key's full history as (revision, state after), no index, no LMDB.
    struct Model {
        keys: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
        current: i64,
        /// -1 until the first compaction, as etcd's compactMainRev.
        compact: i64,
    }

    impl Model {
        fn new() -> Model {
            Model {
                keys: BTreeMap::new(),
                current: 1,
                compact: -1,
            }
        }

        fn at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
            let history = self.keys.get(key)?;
            history
                .iter()
                .rev()
                .find(|(r, _)| *r <= rev)
                .and_then(|(_, s)| s.clone())
        }

        fn read_rev(&self, rev: i64) -> Result<i64, RequestError> {
            if rev > self.current {
                return Err(RequestError::FutureRev);
            }
            let rev = if rev <= 0 { self.current } else { rev };
            if rev < self.compact {
                return Err(RequestError::Compacted);
            }
            Ok(rev)
        }

        fn range(&self, key: &[u8], end: &[u8], rev: i64) -> Result<Vec<KeyValue>, RequestError> {
            let rev = self.read_rev(rev)?;
            let span = KeySpan::new(key, end);
            Ok(self
                .keys
                .keys()
                .filter(|k| span.contains(k))
                .filter_map(|k| self.at(k, rev))
                .collect())
        }

        /// The view inside a txn: staged changes over the current state.
        fn staged_range(
            &self,
            staged: &BTreeMap<Vec<u8>, Option<KeyValue>>,
            key: &[u8],
            end: &[u8],
        ) -> Vec<KeyValue> {
            let span = KeySpan::new(key, end);
            let mut all: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
            for k in self.keys.keys().filter(|k| span.contains(k)) {
                if let Some(kv) = self.at(k, self.current) {
                    all.insert(k.clone(), kv);
                }
            }
            for (k, s) in staged.iter().filter(|(k, _)| span.contains(k)) {
                match s {
                    Some(kv) => all.insert(k.clone(), kv.clone()),
                    None => all.remove(k),
                };
            }
            all.into_values().collect()
        }

        fn put(
            &self,
            staged: &mut BTreeMap<Vec<u8>, Option<KeyValue>>,
            key: &[u8],
            value: &[u8],
        ) -> Option<KeyValue> {
            let rev = self.current + 1;
            let prev = match staged.get(key) {
                Some(s) => s.clone(),
                None => self.at(key, self.current),
            };
            let (create_revision, version) = prev
                .as_ref()
                .map_or((rev, 1), |p| (p.create_revision, p.version + 1));
            let kv = KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: rev,
                version,
                value: value.to_vec(),
                lease: 0,
            };
            staged.insert(key.to_vec(), Some(kv));
            prev
        }

        fn delete(
            &self,
            staged: &mut BTreeMap<Vec<u8>, Option<KeyValue>>,
            key: &[u8],
            end: &[u8],
        ) -> Vec<KeyValue> {
            let gone = self.staged_range(staged, key, end);
            for kv in &gone {
                staged.insert(kv.key.clone(), None);
            }
            gone
        }

        fn commit(&mut self, staged: BTreeMap<Vec<u8>, Option<KeyValue>>) {
            if staged.is_empty() {
                return;
            }
            self.current += 1;
            for (k, s) in staged {
                self.keys.entry(k).or_default().push((self.current, s));
            }
        }
    }

    const KEYS: [&str; 4] = ["a", "b", "c", "d"];

    #[derive(Clone, Debug)]
    enum TestOp {
        Put {
            key: usize,
            value: u8,
            prev_kv: bool,
        },
        Delete {
            key: usize,
            end: usize,
            prev_kv: bool,
        },
        Txn {
            cmp_key: usize,
            cmp_version: i64,
            then_key: usize,
            value: u8,
            else_key: usize,
            else_end: usize,
        },
        Compact {
            back: i64,
        },
        Range {
            key: usize,
            end: usize,
            back: i64,
            limit: i64,
        },
        Reopen,
    }

    /// `end` 0: the single key; 1: up to the key after next; 2: every key from here on.
    fn end_of(key: usize, end: usize) -> Vec<u8> {
        match end {
            0 => Vec::new(),
            1 => KEYS
                .get(key + 2)
                .map_or(b"e".to_vec(), |k| k.as_bytes().to_vec()),
            _ => vec![0],
        }
    }

    fn test_op() -> impl Strategy<Value = TestOp> {
        prop_oneof![
            4 => (0..4usize, any::<u8>(), any::<bool>())
                .prop_map(|(key, value, prev_kv)| TestOp::Put { key, value, prev_kv }),
            2 => (0..4usize, 0..3usize, any::<bool>())
                .prop_map(|(key, end, prev_kv)| TestOp::Delete { key, end, prev_kv }),
            2 => (0..4usize, 0..3i64, 0..4usize, any::<u8>(), 0..4usize, 0..3usize).prop_map(
                |(cmp_key, cmp_version, then_key, value, else_key, else_end)| TestOp::Txn {
                    cmp_key, cmp_version, then_key, value, else_key, else_end
                }
            ),
            1 => (-1..6i64).prop_map(|back| TestOp::Compact { back }),
            3 => (0..4usize, 0..3usize, -1..8i64, 0..3i64)
                .prop_map(|(key, end, back, limit)| TestOp::Range { key, end, back, limit }),
            1 => Just(TestOp::Reopen),
        ]
    }

    fn check_all_revisions(h: &Harness, m: &Model) {
        let s = h.store();
        assert_eq!(s.current_revision(), m.current);
        assert_eq!(s.compact_revision(), m.compact.max(0));
        for rev in (m.compact.max(1))..=m.current {
            let got = h
                .range(RangeRequest {
                    revision: rev,
                    ..range_req("\0", "\0")
                })
                .unwrap();
            let want = m.range(b"\0", b"\0", rev).unwrap();
            assert_eq!(got.kvs, want, "everything at revision {rev}");
            assert_eq!(
                (got.count as usize, rev_of(&got.header)),
                (want.len(), m.current)
            );
        }
    }

    fn run_model_check(ops: Vec<TestOp>) {
        let mut h = Harness::new();
        let mut m = Model::new();
        for step in ops {
            match step {
                TestOp::Put {
                    key,
                    value,
                    prev_kv,
                } => {
                    let k = KEYS[key];
                    let mut staged = BTreeMap::new();
                    let prev = m.put(&mut staged, k.as_bytes(), &[value]);
                    m.commit(staged);
                    let r = h
                        .put(PutRequest {
                            key: k.into(),
                            value: vec![value],
                            prev_kv,
                            ..Default::default()
                        })
                        .unwrap();
                    assert_eq!(rev_of(&r.header), m.current);
                    assert_eq!(r.prev_kv, if prev_kv { prev } else { None });
                }
                TestOp::Delete { key, end, prev_kv } => {
                    let (k, e) = (KEYS[key].as_bytes(), end_of(key, end));
                    let mut staged = BTreeMap::new();
                    let gone = m.delete(&mut staged, k, &e);
                    m.commit(staged);
                    let r = h.delete(DeleteRangeRequest {
                        key: k.to_vec(),
                        range_end: e,
                        prev_kv,
                    });
                    assert_eq!(r.deleted as usize, gone.len());
                    assert_eq!(r.prev_kvs, if prev_kv { gone } else { Vec::new() });
                    assert_eq!(rev_of(&r.header), m.current);
                }
                TestOp::Txn {
                    cmp_key,
                    cmp_version,
                    then_key,
                    value,
                    else_key,
                    else_end,
                } => {
                    let ck = KEYS[cmp_key].as_bytes();
                    let version = m.at(ck, m.current).map_or(0, |kv| kv.version);
                    let succeeded = version == cmp_version;
                    let begin = m.current;
                    let mut staged = BTreeMap::new();
                    let (inner_rev, seen) = if succeeded {
                        m.put(&mut staged, KEYS[then_key].as_bytes(), &[value]);
                        (begin + 1, m.staged_range(&staged, b"\0", b"\0"))
                    } else {
                        let e = end_of(else_key, else_end);
                        let gone = m.delete(&mut staged, KEYS[else_key].as_bytes(), &e);
                        let rev = if gone.is_empty() { begin } else { begin + 1 };
                        (rev, m.staged_range(&staged, b"\0", b"\0"))
                    };
                    m.commit(staged);
                    let t = TxnRequest {
                        compare: vec![cmp(
                            KEYS[cmp_key],
                            CompareTarget::Version,
                            CompareResult::Equal,
                            TargetUnion::Version(cmp_version),
                        )],
                        success: vec![
                            op(Request::RequestPut(PutRequest {
                                key: KEYS[then_key].into(),
                                value: vec![value],
                                ..Default::default()
                            })),
                            op_get("\0", "\0"),
                        ],
                        failure: vec![
                            op(Request::RequestDeleteRange(DeleteRangeRequest {
                                key: KEYS[else_key].into(),
                                range_end: end_of(else_key, else_end),
                                ..Default::default()
                            })),
                            op_get("\0", "\0"),
                        ],
                    };
                    let (r, events) = h.txn(t).unwrap();
                    assert_eq!(r.succeeded, succeeded);
                    assert_eq!(rev_of(&r.header), m.current);
                    let inner = resp_range(&r.responses[1]);
                    assert_eq!(inner.kvs, seen);
                    assert_eq!(rev_of(&inner.header), inner_rev);
                    assert_eq!(events.is_empty(), m.current == begin);
                }
                TestOp::Compact { back } => {
                    let rev = m.current - back;
                    let want = if rev <= m.compact {
                        Err(RequestError::Compacted)
                    } else if rev > m.current {
                        Err(RequestError::FutureRev)
                    } else {
                        m.compact = rev;
                        Ok(m.current)
                    };
                    let got = h.compact(rev).map(|r| rev_of(&r.header));
                    assert_eq!(got, want);
                }
                TestOp::Range {
                    key,
                    end,
                    back,
                    limit,
                } => {
                    let (k, e) = (KEYS[key].as_bytes(), end_of(key, end));
                    let rev = if back < 0 { 0 } else { m.current - back };
                    let got = h.range(RangeRequest {
                        key: k.to_vec(),
                        range_end: e.clone(),
                        revision: rev,
                        limit,
                        ..Default::default()
                    });
                    match m.range(k, &e, rev) {
                        Err(want) => assert_eq!(got, Err(want)),
                        Ok(mut want) => {
                            let got = got.unwrap();
                            let count = want.len();
                            let more = limit > 0 && want.len() > limit as usize;
                            if more {
                                want.truncate(limit as usize);
                            }
                            assert_eq!(got.kvs, want);
                            assert_eq!((got.count as usize, got.more), (count, more));
                            assert_eq!(rev_of(&got.header), m.current);
                        }
                    }
                }
                TestOp::Reopen => h.reopen(),
            }
            check_all_revisions(&h, &m);
        }
        h.store().check_consistency().unwrap();
        h.reopen();
        check_all_revisions(&h, &m);
        h.store().check_consistency().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The store, driven through `apply` and `range`, agrees with a plain history model on
        /// every read at every revision, every response revision, version and create/mod
        /// revision, across compactions and restarts.
        #[test]
        fn store_matches_model(ops in proptest::collection::vec(test_op(), 1..40)) {
            run_model_check(ops);
        }
    }
}
