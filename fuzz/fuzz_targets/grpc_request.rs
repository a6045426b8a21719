//! The KV request path of a one-member server, without the network: what the gRPC service does
//! with a decoded request (`validate::check_*`, then `apply::apply` for writes, as the apply loop
//! runs it for a committed entry, or `apply::range` for reads), against a real LMDB store.
//!
//! An input is a sequence of requests. Each one is either arbitrary bytes decoded with prost as
//! the message the fuzzer picks (RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest,
//! CompactionRequest: exactly what tonic hands the service), or a request built from structured
//! fields over a tiny key space, so that txns compare and overwrite keys that exist. Every input
//! starts from an empty store (one LMDB environment per input, on tmpfs when available), so a
//! crash replays from its input alone. Writes get raft indexes 1, 2, 3...
//!
//! Properties: nothing panics; every refusal is an etcd error (`etcdserver: ...`, deterministic,
//! never `Internal`); `apply` either succeeds or fails deterministically, and both record the raft
//! index and leave the store consistent (`Store::check_consistency`); a successful write with
//! events adds exactly one revision and its events carry it, one without events adds none, a
//! failure adds none; applying the same index again is refused as already applied; a range answer
//! respects its limit, its key range, `keys_only` and `count_only`; a read-only txn served outside
//! the log (`txn_read_only`) answers exactly what applying it answers.

#![no_main]

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use cairn::mvcc::Store;
use cairn::proto::cairnpb::{self, request::Op};
use cairn::proto::etcdserverpb::{
    compare::TargetUnion, request_op::Request, CompactionRequest, Compare, DeleteRangeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn::server::apply::{self, ApplyResponse};
use cairn::server::error::RequestError;
use cairn::server::validate;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// More than one input can write: LMDB grows the file lazily, so this is address space only.
const MAP_SIZE_BYTES: usize = 64 * 1024 * 1024;
/// Requests per input, to bound the time of one run.
const REQUESTS_MAX: usize = 48;
/// Leases that exist (the lessor is out of scope here): ids 1 to 3.
fn lease_exists(id: i64) -> bool {
    (1..=3).contains(&id)
}

/// A key of the tiny structured key space: "", "a", "b", "c", "d", "\0", or anything.
#[derive(Arbitrary, Debug, Clone)]
enum Key {
    Empty,
    Small(u8),
    Zero,
    Any(Vec<u8>),
}

impl Key {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Key::Empty => Vec::new(),
            Key::Small(n) => vec![b'a' + n % 4],
            Key::Zero => vec![0],
            Key::Any(b) => b.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
struct SRange {
    key: Key,
    end: Key,
    limit: i8,
    revision: i8,
    sort_order: u8,
    sort_target: u8,
    keys_only: bool,
    count_only: bool,
    min_mod: i8,
    max_mod: i8,
    min_create: i8,
    max_create: i8,
}

#[derive(Arbitrary, Debug, Clone)]
struct SPut {
    key: Key,
    value: u8,
    lease: i8,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

#[derive(Arbitrary, Debug, Clone)]
struct SDelete {
    key: Key,
    end: Key,
    prev_kv: bool,
}

#[derive(Arbitrary, Debug, Clone)]
struct SCompare {
    key: Key,
    end: Key,
    result: u8,
    target: u8,
    number: i8,
    value: u8,
}

#[derive(Arbitrary, Debug, Clone)]
enum SOp {
    Range(SRange),
    Put(SPut),
    Delete(SDelete),
    Txn(Box<STxn>),
    Empty,
}

#[derive(Arbitrary, Debug, Clone)]
struct STxn {
    compare: Vec<SCompare>,
    success: Vec<SOp>,
    failure: Vec<SOp>,
}

/// One request of an input.
#[derive(Arbitrary, Debug)]
enum Step {
    /// Bytes decoded with prost as the message `kind` selects.
    Raw {
        kind: u8,
        bytes: Vec<u8>,
    },
    Range(SRange),
    Put(SPut),
    Delete(SDelete),
    Txn(STxn),
    Compact {
        revision: i8,
    },
}

fn s_range(r: &SRange) -> RangeRequest {
    RangeRequest {
        key: r.key.bytes(),
        range_end: r.end.bytes(),
        limit: r.limit as i64,
        revision: r.revision as i64,
        sort_order: (r.sort_order % 4) as i32,
        sort_target: (r.sort_target % 6) as i32,
        serializable: true,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod as i64,
        max_mod_revision: r.max_mod as i64,
        min_create_revision: r.min_create as i64,
        max_create_revision: r.max_create as i64,
    }
}

fn s_put(p: &SPut) -> PutRequest {
    PutRequest {
        key: p.key.bytes(),
        value: if p.value == 0 {
            Vec::new()
        } else {
            vec![p.value]
        },
        lease: p.lease as i64 % 5,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

fn s_delete(d: &SDelete) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: d.key.bytes(),
        range_end: d.end.bytes(),
        prev_kv: d.prev_kv,
    }
}

fn s_compare(c: &SCompare) -> Compare {
    let n = c.number as i64;
    let target = c.target % 6;
    let target_union = match target {
        0 => Some(TargetUnion::Version(n)),
        1 => Some(TargetUnion::CreateRevision(n)),
        2 => Some(TargetUnion::ModRevision(n)),
        3 => Some(TargetUnion::Value(vec![c.value])),
        4 => Some(TargetUnion::Lease(n % 5)),
        _ => None,
    };
    Compare {
        result: (c.result % 5) as i32,
        target: (target % 5) as i32,
        key: c.key.bytes(),
        range_end: c.end.bytes(),
        target_union,
    }
}

fn s_op(op: &SOp, depth: usize) -> RequestOp {
    let request = match op {
        SOp::Range(r) => Some(Request::RequestRange(s_range(r))),
        SOp::Put(p) => Some(Request::RequestPut(s_put(p))),
        SOp::Delete(d) => Some(Request::RequestDeleteRange(s_delete(d))),
        SOp::Txn(t) if depth < 4 => Some(Request::RequestTxn(s_txn(t, depth + 1))),
        SOp::Txn(_) | SOp::Empty => None,
    };
    RequestOp { request }
}

fn s_txn(t: &STxn, depth: usize) -> TxnRequest {
    TxnRequest {
        compare: t.compare.iter().take(8).map(s_compare).collect(),
        success: t.success.iter().take(8).map(|o| s_op(o, depth)).collect(),
        failure: t.failure.iter().take(8).map(|o| s_op(o, depth)).collect(),
    }
}

/// A request as the service receives it.
enum Req {
    Range(RangeRequest),
    Write(Op),
}

fn request(step: &Step) -> Option<Req> {
    Some(match step {
        Step::Raw { kind, bytes } => match kind % 5 {
            0 => Req::Range(RangeRequest::decode(bytes.as_slice()).ok()?),
            1 => Req::Write(Op::Put(PutRequest::decode(bytes.as_slice()).ok()?)),
            2 => Req::Write(Op::DeleteRange(
                DeleteRangeRequest::decode(bytes.as_slice()).ok()?,
            )),
            3 => Req::Write(Op::Txn(TxnRequest::decode(bytes.as_slice()).ok()?)),
            _ => Req::Write(Op::Compaction(
                CompactionRequest::decode(bytes.as_slice()).ok()?,
            )),
        },
        Step::Range(r) => Req::Range(s_range(r)),
        Step::Put(p) => Req::Write(Op::Put(s_put(p))),
        Step::Delete(d) => Req::Write(Op::DeleteRange(s_delete(d))),
        Step::Txn(t) => Req::Write(Op::Txn(s_txn(t, 0))),
        Step::Compact { revision } => Req::Write(Op::Compaction(CompactionRequest {
            revision: *revision as i64,
            physical: false,
        })),
    })
}

/// An error the client may see: one of etcd's, decided by the request and the log alone.
fn check_answer_error(e: &RequestError, what: &str) {
    assert!(
        e.is_deterministic(),
        "{what}: non-deterministic error {e:?}"
    );
    assert!(
        !matches!(
            e,
            RequestError::Internal(_) | RequestError::AlreadyApplied { .. }
        ),
        "{what}: {e:?}"
    );
    assert!(e.to_string().starts_with("etcdserver: "), "{what}: {e}");
}

/// The server-side checks of a request, as the gRPC service runs them before proposing.
fn validate(req: &Req) -> Result<(), RequestError> {
    match req {
        Req::Range(r) => validate::check_range(r),
        Req::Write(Op::Put(p)) => validate::check_put(p),
        Req::Write(Op::DeleteRange(d)) => validate::check_delete_range(d),
        Req::Write(Op::Txn(t)) => validate::check_txn(t, validate::MAX_TXN_OPS_DEFAULT),
        Req::Write(_) => Ok(()),
    }
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

fn check_range(store: &Store, req: &RangeRequest) {
    match apply::range(store, req) {
        Ok(resp) => {
            let header = resp.header.as_ref().expect("a range answer has a header");
            assert_eq!(
                header.revision,
                store.current_revision(),
                "range header revision"
            );
            if req.limit > 0 {
                assert!(
                    resp.kvs.len() as i64 <= req.limit,
                    "range ignores its limit"
                );
            }
            if req.count_only {
                assert!(resp.kvs.is_empty(), "count_only returned key-values");
            }
            assert!(
                resp.kvs.len() as i64 <= resp.count,
                "more key-values than the count"
            );
            for kv in &resp.kvs {
                assert!(
                    in_range(&kv.key, &req.key, &req.range_end),
                    "range returned {kv:?} outside {req:?}"
                );
                if req.keys_only {
                    assert!(kv.value.is_empty(), "keys_only returned a value");
                }
                assert!(
                    kv.mod_revision <= header.revision && kv.create_revision <= kv.mod_revision
                );
            }
        }
        Err(e) => check_answer_error(&e, "range"),
    }
}

/// The fresh store of one input, deleted afterwards.
struct TempStore {
    store: Option<Store>,
    _dir: tempfile::TempDir,
}

fn temp_store() -> TempStore {
    // tmpfs makes opening an LMDB environment per input cheap.
    let shm = PathBuf::from("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("cairn-fuzz-")
            .tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("cairn-fuzz-").tempdir()
    }
    .expect("temp dir");
    let store = Store::open(dir.path(), MAP_SIZE_BYTES).expect("open a fresh store");
    TempStore {
        store: Some(store),
        _dir: dir,
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        // Close LMDB before the directory goes.
        self.store.take();
    }
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let ts = temp_store();
    let store = ts.store.as_ref().expect("open");
    let mut raft_index = 0u64;
    for _ in 0..REQUESTS_MAX {
        if u.is_empty() {
            break;
        }
        let step = Step::arbitrary(u)?;
        let Some(req) = request(&step) else {
            continue; // tonic would have refused the bytes before cairn saw them
        };
        if let Err(e) = validate(&req) {
            check_answer_error(&e, "validate");
            continue;
        }
        let op = match req {
            Req::Range(r) => {
                check_range(store, &r);
                continue;
            }
            Req::Write(op) => op,
        };

        // A read-only txn can be served outside the log: it must answer what applying it does.
        let read_only = match &op {
            Op::Txn(t) if apply::is_txn_read_only(t) => Some(apply::txn_read_only(store, t)),
            _ => None,
        };

        raft_index += 1;
        let rev_before = store.current_revision();
        let request = cairnpb::Request {
            id: raft_index,
            op: Some(op),
            origin: 0,
            ..Default::default()
        };
        let result = apply::apply(store, raft_index, &request, &lease_exists);
        assert_eq!(
            store.consistent_index(),
            raft_index,
            "apply did not record its index: {result:?}"
        );
        let rev_after = store.current_revision();
        match &result {
            Ok((resp, events)) => {
                if events.is_empty() {
                    assert_eq!(
                        rev_after, rev_before,
                        "a write without events changed the revision"
                    );
                } else {
                    assert_eq!(rev_after, rev_before + 1, "a write adds one revision");
                    for ev in events {
                        let kv = ev.kv.as_ref().expect("an event has a key-value");
                        assert_eq!(kv.mod_revision, rev_after, "event revision");
                    }
                }
                let header = match resp {
                    ApplyResponse::Put(r) => r.header.as_ref(),
                    ApplyResponse::DeleteRange(r) => r.header.as_ref(),
                    ApplyResponse::Txn(r) => r.header.as_ref(),
                    ApplyResponse::Compaction(r) => r.header.as_ref(),
                    other => panic!("a KV request answered {other:?}"),
                };
                let header = header.expect("a write answer has a header");
                assert_eq!(header.revision, rev_after, "write header revision");
            }
            Err(e) => {
                check_answer_error(e, "apply");
                assert_eq!(rev_after, rev_before, "a failed write changed the revision");
            }
        }
        if let Some(ro) = read_only {
            let applied = match &result {
                Ok((ApplyResponse::Txn(r), _)) => Ok(r.clone()),
                Ok((other, _)) => panic!("a txn answered {other:?}"),
                Err(e) => Err(e.clone()),
            };
            assert_eq!(
                ro, applied,
                "read-only txn served outside the log differs from applying it"
            );
        }
        if let Err(e) = store.check_consistency() {
            panic!("store inconsistent after applying {request:?}: {e}");
        }
        match apply::apply(store, raft_index, &request, &lease_exists) {
            Err(RequestError::AlreadyApplied { .. }) => {}
            other => panic!("applying index {raft_index} twice: {other:?}"),
        }
        assert_eq!(
            store.current_revision(),
            rev_after,
            "a replayed entry changed the revision"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
