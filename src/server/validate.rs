//! etcd's API-level request checks, run before a request is proposed.
//!
//! These are pure functions of the request (etcd's `v3rpc/key.go`): they need no state, so the
//! member that receives a request rejects a malformed one at once instead of spending a raft
//! round on it. Checks that depend on the store (does the key exist, does the lease exist, is the
//! revision compacted) happen at apply time, in [`super::apply`].
//!
//! The txn checks follow etcd 3.4 exactly, including two quirks: a nested txn may hold only
//! `max_txn_ops - opc` operations per branch, where `opc` is the largest of its parent's compare,
//! success and failure counts; and the duplicate-key check (`checkIntervals`) treats a delete whose
//! `range_end` is `"\0"` ("every key from here on") as the empty interval `[key, "\0")`, so it
//! never conflicts with a put. Nested txns are checked against the deletes of earlier siblings
//! only, also as etcd does.

use std::collections::HashSet;

use super::error::RequestError;
use crate::proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS_DEFAULT: usize = 128;

/// A range read needs a key.
pub fn check_range(req: &RangeRequest) -> Result<(), RequestError> {
    if req.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    Ok(())
}

/// A put needs a key; `ignore_value` excludes a value and `ignore_lease` a lease.
pub fn check_put(req: &PutRequest) -> Result<(), RequestError> {
    if req.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(RequestError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(RequestError::LeaseProvided);
    }
    Ok(())
}

/// A delete needs a key.
pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<(), RequestError> {
    if req.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    Ok(())
}

/// A txn: bounded sizes, keys on every compare, every op valid (recursively), and no branch that
/// writes a key twice or puts a key it deletes (etcd's `checkTxnRequest` then `checkIntervals`).
pub fn check_txn(req: &TxnRequest, max_txn_ops: usize) -> Result<(), RequestError> {
    check_txn_request(req, max_txn_ops as i64)?;
    // Done after the cheap checks, as etcd does, to avoid quadratic work on oversized requests.
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_request(req: &TxnRequest, max_txn_ops: i64) -> Result<(), RequestError> {
    let opc = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len()) as i64;
    if opc > max_txn_ops {
        return Err(RequestError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(RequestError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        check_request_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), RequestError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete_range(r),
        Some(Request::RequestTxn(r)) => check_txn_request(r, max_txn_ops),
        // An empty op: etcd answers "key not found".
        None => Err(RequestError::KeyNotFound),
    }
}

/// A deleted interval as etcd's `adt` sees it: a point `[key, key\0)` or `[key, range_end)`,
/// including the inverted and `"\0"`-ended ones, which contain no key.
#[derive(Clone, Debug)]
enum Interval {
    Point(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
}

impl Interval {
    fn of(req: &DeleteRangeRequest) -> Interval {
        if req.range_end.is_empty() {
            Interval::Point(req.key.clone())
        } else {
            Interval::Range(req.key.clone(), req.range_end.clone())
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        match self {
            Interval::Point(k) => k == key,
            Interval::Range(begin, end) => begin.as_slice() <= key && key < end.as_slice(),
        }
    }
}

fn intersects(dels: &[Interval], key: &[u8]) -> bool {
    dels.iter().any(|iv| iv.contains(key))
}

/// etcd's `checkIntervals`: returns the keys this branch (with its nested txns) puts and the
/// intervals it deletes, or `DuplicateKey`.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Interval>), RequestError> {
    // This level's deletes come first, so nested puts are checked against them.
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Interval::of(d)),
            _ => None,
        })
        .collect();

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(txn)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&txn.success)?;
        let (puts_else, dels_else) = check_intervals(&txn.failure)?;
        for k in &puts_then {
            if puts.contains(k) || intersects(&dels, k) {
                return Err(RequestError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // Then and else never both run: a key put by both branches of one txn is fine.
            if (puts.contains(k) && !puts_then.contains(k)) || intersects(&dels, k) {
                return Err(RequestError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }

    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || intersects(&dels, &p.key) {
            return Err(RequestError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::Compare;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn get(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(txn(success, failure))),
        }
    }

    fn check(t: &TxnRequest) -> Result<(), RequestError> {
        check_txn(t, MAX_TXN_OPS_DEFAULT)
    }

    #[test]
    fn empty_keys_are_refused() {
        assert_eq!(
            check_range(&RangeRequest::default()),
            Err(RequestError::EmptyKey)
        );
        assert_eq!(
            check_put(&PutRequest::default()),
            Err(RequestError::EmptyKey)
        );
        assert_eq!(
            check_delete_range(&DeleteRangeRequest::default()),
            Err(RequestError::EmptyKey)
        );
        let t = TxnRequest {
            compare: vec![Compare::default()],
            ..Default::default()
        };
        assert_eq!(check(&t), Err(RequestError::EmptyKey));
        assert_eq!(
            check(&txn(vec![put("")], vec![])),
            Err(RequestError::EmptyKey)
        );
        assert_eq!(
            check(&txn(vec![], vec![nested(vec![get("")], vec![])])),
            Err(RequestError::EmptyKey)
        );
    }

    #[test]
    fn put_ignore_flags_exclude_value_and_lease() {
        let p = |v: &str, lease, iv, il| PutRequest {
            key: b"k".to_vec(),
            value: v.into(),
            lease,
            ignore_value: iv,
            ignore_lease: il,
            ..Default::default()
        };
        assert_eq!(
            check_put(&p("x", 0, true, false)),
            Err(RequestError::ValueProvided)
        );
        assert_eq!(
            check_put(&p("", 5, false, true)),
            Err(RequestError::LeaseProvided)
        );
        assert_eq!(check_put(&p("", 0, true, true)), Ok(()));
        assert_eq!(check_put(&p("x", 5, false, false)), Ok(()));
    }

    #[test]
    fn empty_op_in_txn_is_key_not_found() {
        let t = txn(vec![RequestOp { request: None }], vec![]);
        assert_eq!(check(&t), Err(RequestError::KeyNotFound));
    }

    #[test]
    fn too_many_ops() {
        let ops: Vec<RequestOp> = (0..3).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(
            check_txn(&txn(ops.clone(), vec![]), 2),
            Err(RequestError::TooManyOps)
        );
        assert_eq!(
            check_txn(&txn(vec![], ops.clone()), 2),
            Err(RequestError::TooManyOps)
        );
        assert_eq!(check_txn(&txn(ops.clone(), vec![]), 3), Ok(()));
        let t = TxnRequest {
            compare: vec![
                Compare {
                    key: b"k".to_vec(),
                    ..Default::default()
                };
                3
            ],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 2), Err(RequestError::TooManyOps));
    }

    #[test]
    fn nested_txn_gets_the_remaining_op_budget() {
        // The outer txn uses 2 of 3; the nested one may hold only 1 per branch.
        let inner = nested(vec![put("a"), put("b")], vec![]);
        let t = txn(vec![inner, put("c")], vec![]);
        assert_eq!(check_txn(&t, 3), Err(RequestError::TooManyOps));
        assert_eq!(check_txn(&t, 4), Ok(()));
    }

    #[test]
    fn duplicate_puts_in_one_branch() {
        assert_eq!(
            check(&txn(vec![put("a"), put("a")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        // Different branches never both run.
        assert_eq!(check(&txn(vec![put("a")], vec![put("a")])), Ok(()));
    }

    #[test]
    fn put_inside_a_delete_of_the_same_branch() {
        assert_eq!(
            check(&txn(vec![del("a", ""), put("a")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        assert_eq!(
            check(&txn(vec![put("b"), del("a", "c")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        assert_eq!(check(&txn(vec![put("c"), del("a", "c")], vec![])), Ok(()));
        // Two overlapping deletes are fine.
        assert_eq!(
            check(&txn(vec![del("a", "c"), del("b", "")], vec![])),
            Ok(())
        );
    }

    #[test]
    fn from_key_delete_does_not_conflict_as_in_etcd() {
        // etcd's interval for range_end "\0" is [key, "\0"), which contains no key.
        assert_eq!(check(&txn(vec![del("a", "\0"), put("b")], vec![])), Ok(()));
        // An inverted range contains nothing either.
        assert_eq!(check(&txn(vec![del("c", "a"), put("b")], vec![])), Ok(()));
    }

    #[test]
    fn nested_txns_are_checked_against_the_outer_branch() {
        let t = txn(vec![put("a"), nested(vec![put("a")], vec![])], vec![]);
        assert_eq!(check(&t), Err(RequestError::DuplicateKey));
        let t = txn(vec![del("a", "z"), nested(vec![], vec![put("b")])], vec![]);
        assert_eq!(check(&t), Err(RequestError::DuplicateKey));
        let t = txn(vec![nested(vec![del("a", "")], vec![]), put("a")], vec![]);
        assert_eq!(check(&t), Err(RequestError::DuplicateKey));
        // Both branches of one nested txn may put the same key.
        let t = txn(vec![nested(vec![put("a")], vec![put("a")])], vec![]);
        assert_eq!(check(&t), Ok(()));
        // Two sibling nested txns may not.
        let t = txn(
            vec![
                nested(vec![put("a")], vec![]),
                nested(vec![], vec![put("a")]),
            ],
            vec![],
        );
        assert_eq!(check(&t), Err(RequestError::DuplicateKey));
        // Deeper nesting too.
        let deep = nested(vec![nested(vec![put("a")], vec![])], vec![]);
        let t = txn(vec![deep, put("a")], vec![]);
        assert_eq!(check(&t), Err(RequestError::DuplicateKey));
    }

    #[test]
    fn sibling_order_quirk_of_check_intervals() {
        // A nested put followed by a later sibling's delete of the same key passes (etcd checks
        // nested puts only against the deletes collected so far), the reverse order does not.
        let t = txn(
            vec![
                nested(vec![put("a")], vec![]),
                nested(vec![del("a", "")], vec![]),
            ],
            vec![],
        );
        assert_eq!(check(&t), Ok(()));
        let t = txn(
            vec![
                nested(vec![del("a", "")], vec![]),
                nested(vec![put("a")], vec![]),
            ],
            vec![],
        );
        assert_eq!(check(&t), Err(RequestError::DuplicateKey));
    }
}
