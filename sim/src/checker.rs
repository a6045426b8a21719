//! Checkers: is what the clients saw possible for a correct etcd?
//!
//! **Linearizability** (Herlihy and Wing): every operation must appear to take effect at one
//! instant between its invocation and its response, in an order consistent with a sequential
//! model of the store. The search is Wing and Gong's, with Lowe's memoisation (as in Knossos and
//! Porcupine): repeatedly pick an operation that may go next — one invoked before every remaining
//! operation's response — apply it to the model, and backtrack when the model disagrees with
//! what the client was told; a (set of linearized operations, model state) pair seen before is not
//! explored twice. Keys are independent in etcd's data model, so the history is split per key and
//! each part searched alone; the global revision, which ties keys together, is checked separately
//! by necessary conditions (unique revisions for writes, revisions that never go backwards in real
//! time, one revision per value). Operations with unknown outcome never respond: they may take
//! effect anywhere after their invocation, including never (at the very end, where nothing
//! observes them). The search is bounded; hitting the bound reports *inconclusive*, never a pass.
//!
//! Serializable reads may be stale by design and are not part of the linearizability check; they
//! must still return a value some client wrote.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::history::{Op, OpKind, OpResult, Outcome};

/// Model states explored per key before the search gives up as inconclusive.
pub const SEARCH_STATES_MAX: usize = 500_000;

#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub inconclusive: Vec<String>,
}

/// Value ids: index into the list of written values, so the model state is a small integer.
type Val = Option<u32>;

#[derive(Debug, Clone)]
struct KeyOp {
    invoke: u64,
    complete: u64,
    kind: KOp,
    id: usize,
}

#[derive(Debug, Clone)]
enum KOp {
    Put(u32),
    Get(Val),
    /// `Some(n)`: deleted n keys (known); None: unknown.
    Delete(Option<i64>),
    /// expect, new value, result: None = unknown, Some((succeeded, observed on failure)).
    Cas(Val, u32, Option<(bool, Val)>),
}

fn step(state: Val, op: &KOp) -> Option<Val> {
    match op {
        KOp::Put(v) => Some(Some(*v)),
        KOp::Get(seen) => (*seen == state).then_some(state),
        KOp::Delete(None) => Some(None),
        KOp::Delete(Some(n)) => ((*n > 0) == state.is_some()).then_some(None),
        KOp::Cas(expect, new, None) => Some(if *expect == state { Some(*new) } else { state }),
        KOp::Cas(expect, new, Some((succeeded, seen))) => {
            let cond = *expect == state;
            if cond != *succeeded {
                None
            } else if cond {
                Some(Some(*new))
            } else {
                (*seen == state).then_some(state)
            }
        }
    }
}

enum Search {
    Ok,
    Violation { deepest: usize, stuck: Vec<usize> },
    Inconclusive,
}

/// Wing–Gong search over the operations of one key, with memoisation.
fn search(ops: &[KeyOp]) -> Search {
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let mut done = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Val)> = HashSet::new();
    // Stack of (op linearized, state before it, next candidate position to try after backtrack).
    let mut stack: Vec<(usize, Val)> = Vec::new();
    let mut state: Val = None;
    let mut deepest = 0;
    let mut deepest_stuck = Vec::new();
    let is_done = |d: &Vec<u64>, i: usize| d[i / 64] & (1 << (i % 64)) != 0;
    // Candidates at the current point: not done, invoked before the earliest pending response.
    let candidates = |d: &Vec<u64>| -> Vec<usize> {
        let min_complete = (0..n)
            .filter(|i| !is_done(d, *i))
            .map(|i| ops[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        // Invocation order: the usual linearization is found without backtracking; unknown
        // writes become candidates only as time passes their invocation.
        (0..n)
            .filter(|i| !is_done(d, *i) && ops[*i].invoke <= min_complete)
            .collect()
    };
    // Operations with a known outcome; once all are linearized, the unknown ones left can take
    // effect at the very end, where nothing observes them.
    let known = ops.iter().filter(|o| o.complete != u64::MAX).count();
    let mut known_done = 0;
    let mut frames: Vec<(Vec<usize>, usize)> = vec![(candidates(&done), 0)];
    loop {
        if known_done == known {
            return Search::Ok;
        }
        let (cands, pos) = frames.last_mut().expect("a frame per depth");
        let mut advanced = false;
        while *pos < cands.len() {
            let i = cands[*pos];
            *pos += 1;
            if let Some(next) = step(state, &ops[i].kind) {
                done[i / 64] |= 1 << (i % 64);
                if seen.insert((done.clone(), next)) {
                    if seen.len() > SEARCH_STATES_MAX {
                        return Search::Inconclusive;
                    }
                    stack.push((i, state));
                    if ops[i].complete != u64::MAX {
                        known_done += 1;
                    }
                    state = next;
                    advanced = true;
                    break;
                }
                done[i / 64] &= !(1 << (i % 64));
            }
        }
        if advanced {
            if stack.len() > deepest {
                deepest = stack.len();
            }
            let c = candidates(&done);
            frames.push((c, 0));
            continue;
        }
        if stack.len() >= deepest {
            deepest_stuck = cands.clone();
        }
        frames.pop();
        match stack.pop() {
            Some((i, prev)) => {
                if ops[i].complete != u64::MAX {
                    known_done -= 1;
                }
                done[i / 64] &= !(1 << (i % 64));
                state = prev;
            }
            None => {
                return Search::Violation {
                    deepest,
                    stuck: deepest_stuck,
                }
            }
        }
    }
}

fn describe(op: &Op) -> String {
    let end = if op.complete_ns == u64::MAX {
        "?".to_string()
    } else {
        format!("{:.3}s", op.complete_ns as f64 / 1e9)
    };
    format!(
        "op {} client {} on {} [{:.3}s..{end}] {:?} -> {:?}",
        op.id,
        if op.client == usize::MAX {
            "final".to_string()
        } else {
            op.client.to_string()
        },
        op.node,
        op.invoke_ns as f64 / 1e9,
        op.kind,
        op.outcome
    )
}

/// Checks the whole history. `final_rev` is the revision the converged cluster reported.
pub fn check(history: &[Op]) -> Verdict {
    let mut v = Verdict::default();
    let mut values: BTreeMap<String, u32> = BTreeMap::new();
    let mut written_by: BTreeMap<String, usize> = BTreeMap::new();
    for op in history {
        match &op.kind {
            OpKind::Put { value, .. } | OpKind::Cas { value, .. } => {
                let id = values.len() as u32;
                values.insert(value.clone(), id);
                written_by.insert(value.clone(), op.id);
            }
            _ => {}
        }
    }
    let val = |s: &Option<String>| -> Result<Val, String> {
        match s {
            None => Ok(None),
            Some(s) => values
                .get(s)
                .copied()
                .map(Some)
                .ok_or_else(|| format!("value {s:?} was never written")),
        }
    };

    // Every value read anywhere (serializable reads included) must have been written.
    // One mod revision per value, equal to the revision the write was acknowledged with.
    let mut rev_of: BTreeMap<String, (i64, usize)> = BTreeMap::new();
    for op in history {
        if let OpKind::Put { value, .. } | OpKind::Cas { value, .. } = &op.kind {
            let acked = match &op.outcome {
                Outcome::Ok(OpResult::Put { rev }) => Some(*rev),
                Outcome::Ok(OpResult::Cas {
                    rev,
                    succeeded: true,
                    ..
                }) => Some(*rev),
                _ => None,
            };
            if let Some(rev) = acked {
                rev_of.insert(value.clone(), (rev, op.id));
            }
        }
    }
    for op in history {
        let observed = match &op.outcome {
            Outcome::Ok(OpResult::Get {
                kv: Some((value, mod_rev)),
                rev,
            }) => Some((value, *mod_rev, *rev)),
            Outcome::Ok(OpResult::Cas {
                kv: Some((value, mod_rev)),
                rev,
                succeeded: false,
            }) => Some((value, *mod_rev, *rev)),
            _ => None,
        };
        let Some((value, mod_rev, header_rev)) = observed else {
            continue;
        };
        if !values.contains_key(value) {
            v.violations
                .push(format!("read a value nobody wrote: {}", describe(op)));
            continue;
        }
        if mod_rev > header_rev {
            v.violations.push(format!(
                "mod revision {mod_rev} above the response revision {header_rev}: {}",
                describe(op)
            ));
        }
        match rev_of.get(value) {
            Some((rev, writer)) if *rev != mod_rev => v.violations.push(format!(
                "value written at revision {rev} (op {writer}) read with mod revision {mod_rev}: {}",
                describe(op)
            )),
            Some(_) => {}
            None => {
                rev_of.insert(value.clone(), (mod_rev, op.id));
            }
        }
    }

    // Revisions of acknowledged writes that changed the store are unique.
    let mut by_rev: BTreeMap<i64, usize> = BTreeMap::new();
    for op in history {
        let changed = match &op.outcome {
            Outcome::Ok(OpResult::Put { rev }) => Some(*rev),
            Outcome::Ok(OpResult::Cas {
                rev,
                succeeded: true,
                ..
            }) => Some(*rev),
            Outcome::Ok(OpResult::Delete { rev, deleted }) if *deleted > 0 => Some(*rev),
            _ => None,
        };
        if let Some(rev) = changed {
            if let Some(other) = by_rev.insert(rev, op.id) {
                v.violations.push(format!(
                    "two writes acknowledged with revision {rev}: {} and {}",
                    describe(&history[other]),
                    describe(op)
                ));
            }
        }
    }

    // Real time: an operation invoked after another completed sees at least its revision (a
    // write that changed the store, strictly more). Serializable reads are exempt.
    let mut done: Vec<(u64, i64, usize)> = history
        .iter()
        .filter(|op| {
            !matches!(
                op.kind,
                OpKind::Get {
                    linearizable: false,
                    ..
                }
            )
        })
        .filter_map(|op| match &op.outcome {
            Outcome::Ok(r) => Some((op.complete_ns, r.rev(), op.id)),
            _ => None,
        })
        .collect();
    done.sort();
    let mut prefix_max: Vec<(i64, usize)> = Vec::with_capacity(done.len());
    for (_, rev, id) in &done {
        let prev = prefix_max.last().copied().unwrap_or((0, usize::MAX));
        prefix_max.push(if *rev > prev.0 { (*rev, *id) } else { prev });
    }
    for op in history {
        if matches!(
            op.kind,
            OpKind::Get {
                linearizable: false,
                ..
            }
        ) {
            continue;
        }
        let Outcome::Ok(r) = &op.outcome else {
            continue;
        };
        let before = done.partition_point(|(c, _, _)| *c < op.invoke_ns);
        if before == 0 {
            continue;
        }
        let (max_rev, by) = prefix_max[before - 1];
        if r.rev() < max_rev {
            v.violations.push(format!(
                "revision went backwards: {} answered revision {} after {} had completed with revision {max_rev}",
                describe(op),
                r.rev(),
                describe(&history[by])
            ));
        }
    }

    // Per-key linearizability. A write with unknown outcome whose value nobody observed can
    // always take effect at the very end, after everything else, so it changes nothing: leave it
    // out. This keeps the search small, since unknown writes are what make it branch.
    let mut observed: BTreeSet<&str> = BTreeSet::new();
    for op in history {
        match (&op.kind, &op.outcome) {
            (
                _,
                Outcome::Ok(OpResult::Get {
                    kv: Some((v, _)), ..
                }),
            )
            | (
                _,
                Outcome::Ok(OpResult::Cas {
                    kv: Some((v, _)), ..
                }),
            ) => {
                observed.insert(v);
            }
            _ => {}
        }
        if let OpKind::Cas {
            expect: Some(v), ..
        } = &op.kind
        {
            if !matches!(
                op.outcome,
                Outcome::Failed(_)
                    | Outcome::Ok(OpResult::Cas {
                        succeeded: false,
                        ..
                    })
            ) {
                observed.insert(v);
            }
        }
    }
    // A delete that removed something observes that some value existed, not which: on such keys
    // every unknown write stays in.
    let deleted_something: BTreeSet<&str> = history
        .iter()
        .filter(
            |op| matches!(op.outcome, Outcome::Ok(OpResult::Delete { deleted, .. }) if deleted > 0),
        )
        .map(|op| op.kind.key())
        .collect();
    let mut per_key: BTreeMap<String, Vec<KeyOp>> = BTreeMap::new();
    for op in history {
        if let OpKind::Put { key, value } | OpKind::Cas { key, value, .. } = &op.kind {
            if matches!(op.outcome, Outcome::Unknown(_) | Outcome::Pending)
                && !observed.contains(value.as_str())
                && !deleted_something.contains(key.as_str())
            {
                continue;
            }
        }
        let key = op.kind.key().to_string();
        let kop = match (&op.kind, &op.outcome) {
            (_, Outcome::Pending) | (_, Outcome::Failed(_)) => continue,
            (
                OpKind::Get {
                    linearizable: false,
                    ..
                },
                _,
            ) => continue,
            (OpKind::Get { .. }, Outcome::Ok(OpResult::Get { kv, .. })) => {
                match val(&kv.as_ref().map(|(s, _)| s.clone())) {
                    Ok(x) => KOp::Get(x),
                    Err(_) => continue, // reported above
                }
            }
            (OpKind::Get { .. }, _) => continue,
            (OpKind::Put { value, .. }, _) => KOp::Put(values[value]),
            (OpKind::Delete { .. }, Outcome::Ok(OpResult::Delete { deleted, .. })) => {
                KOp::Delete(Some(*deleted))
            }
            (OpKind::Delete { .. }, _) => KOp::Delete(None),
            (OpKind::Cas { expect, value, .. }, outcome) => {
                let expect = match val(expect) {
                    Ok(x) => x,
                    Err(_) => continue,
                };
                let result = match outcome {
                    Outcome::Ok(OpResult::Cas { succeeded, kv, .. }) => {
                        match val(&kv.as_ref().map(|(s, _)| s.clone())) {
                            Ok(x) => Some((*succeeded, x)),
                            Err(_) => continue,
                        }
                    }
                    _ => None,
                };
                KOp::Cas(expect, values[value], result)
            }
        };
        per_key.entry(key).or_default().push(KeyOp {
            invoke: op.invoke_ns,
            complete: op.complete_ns,
            kind: kop,
            id: op.id,
        });
    }
    for (key, ops) in per_key {
        match search(&ops) {
            Search::Ok => {}
            Search::Inconclusive => v.inconclusive.push(format!(
                "key {key}: linearizability search of {} operations gave up after {SEARCH_STATES_MAX} states",
                ops.len()
            )),
            Search::Violation { deepest, stuck } => {
                let mut msg = format!(
                    "key {key}: not linearizable ({} operations; at most {deepest} could be ordered). Operations that could not go next:",
                    ops.len()
                );
                for i in stuck.iter().take(6) {
                    msg.push_str("\n      ");
                    msg.push_str(&describe(&history[ops[*i].id]));
                }
                v.violations.push(msg);
            }
        }
    }
    v
}

/// Durability: every acknowledged write is still visible in the final state, or was overwritten
/// or deleted by a later write of the same key. `final_state` maps keys to (value, mod revision)
/// read after the cluster healed; `final_rev` is the revision it was read at.
pub fn check_durability(
    history: &[Op],
    final_state: &BTreeMap<String, Seen2>,
    final_rev: i64,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut max_acked = 0;
    let mut deleted_keys: BTreeSet<String> = BTreeSet::new();
    for op in history {
        if let OpKind::Delete { key } = &op.kind {
            if !matches!(op.outcome, Outcome::Failed(_)) {
                deleted_keys.insert(key.clone());
            }
        }
    }
    for op in history {
        let acked = match (&op.kind, &op.outcome) {
            (OpKind::Put { key, .. }, Outcome::Ok(OpResult::Put { rev })) => Some((key, *rev)),
            (
                OpKind::Cas { key, .. },
                Outcome::Ok(OpResult::Cas {
                    rev,
                    succeeded: true,
                    ..
                }),
            ) => Some((key, *rev)),
            _ => None,
        };
        let Some((key, rev)) = acked else { continue };
        max_acked = max_acked.max(rev);
        let Some(fin) = final_state.get(key) else {
            continue;
        };
        match fin {
            Some((_, mod_rev)) if *mod_rev >= rev => {}
            None if deleted_keys.contains(key) => {}
            other => out.push(format!(
                "acknowledged write lost: {} but the final state has {other:?}",
                describe(op)
            )),
        }
    }
    if final_rev < max_acked {
        out.push(format!(
            "final revision {final_rev} is below acknowledged revision {max_acked}"
        ));
    }
    out
}

/// A key's final (value, mod revision), or None when absent.
pub type Seen2 = Option<(String, i64)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, invoke: u64, complete: u64, kind: OpKind, outcome: Outcome) -> Op {
        Op {
            id,
            client: 0,
            node: "n0".into(),
            kind,
            invoke_ns: invoke,
            complete_ns: complete,
            outcome,
        }
    }

    fn put(k: &str, v: &str) -> OpKind {
        OpKind::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    fn get(k: &str) -> OpKind {
        OpKind::Get {
            key: k.into(),
            linearizable: true,
        }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not_linearizable() {
        let h = vec![
            op(
                0,
                0,
                10,
                put("a", "1"),
                Outcome::Ok(OpResult::Put { rev: 2 }),
            ),
            op(
                1,
                20,
                30,
                put("a", "2"),
                Outcome::Ok(OpResult::Put { rev: 3 }),
            ),
            op(
                2,
                40,
                50,
                get("a"),
                Outcome::Ok(OpResult::Get {
                    rev: 3,
                    kv: Some(("1".into(), 2)),
                }),
            ),
        ];
        let v = check(&h);
        assert!(
            v.violations.iter().any(|m| m.contains("not linearizable")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn concurrent_and_unknown_writes_may_take_effect_in_either_order() {
        let h = vec![
            op(
                0,
                0,
                100,
                put("a", "1"),
                Outcome::Ok(OpResult::Put { rev: 3 }),
            ),
            op(
                1,
                10,
                u64::MAX,
                put("a", "2"),
                Outcome::Unknown("timeout".into()),
            ),
            op(
                2,
                110,
                120,
                get("a"),
                Outcome::Ok(OpResult::Get {
                    rev: 3,
                    kv: Some(("1".into(), 3)),
                }),
            ),
            op(
                3,
                130,
                140,
                get("a"),
                Outcome::Ok(OpResult::Get {
                    rev: 4,
                    kv: Some(("2".into(), 4)),
                }),
            ),
        ];
        let v = check(&h);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
    }

    #[test]
    fn revisions_never_go_backwards_in_real_time() {
        let h = vec![
            op(
                0,
                0,
                10,
                put("a", "1"),
                Outcome::Ok(OpResult::Put { rev: 5 }),
            ),
            op(
                1,
                20,
                30,
                get("b"),
                Outcome::Ok(OpResult::Get { rev: 4, kv: None }),
            ),
        ];
        assert!(!check(&h).violations.is_empty());
    }
}
