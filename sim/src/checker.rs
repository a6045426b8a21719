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

use crate::history::{
    LeaseOp, LeaseOpKind, LeaseOutcome, LeaseResult, MemberOp, Op, OpKind, OpResult, Outcome,
    SegmentEnd, WatchEvent, WatchLog,
};

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

/// Watches: every watcher received, on each stream, the committed events of its keys in revision
/// order, each once, with nothing missing between the stream's start and the highest revision it
/// is known to have delivered completely (its last event, or a progress response); and when a
/// stream broke, the next one started right after what the last one covered (etcd's clients
/// resume from the last revision + 1), unless compaction cancelled it. `reference` is the whole
/// committed history, read by a watch from revision 1 once the cluster healed, complete up to
/// `reference_hi` and from `reference_from` (1, or the compaction floor if the history was
/// compacted); events outside that range are only checked for order.
pub fn check_watches(
    logs: &[WatchLog],
    reference: &[WatchEvent],
    reference_from: i64,
    reference_hi: i64,
) -> Vec<String> {
    let mut out = Vec::new();
    let by_rev_key: BTreeMap<(i64, &str), &WatchEvent> = reference
        .iter()
        .map(|e| ((e.rev, e.key.as_str()), e))
        .collect();
    for log in logs {
        let w = log.watcher;
        let mut last_rev = 0;
        let mut all: BTreeSet<(i64, &str)> = BTreeSet::new();
        let mut next_start: Option<i64> = None;
        for (si, seg) in log.segments.iter().enumerate() {
            if let Some(expected) = next_start {
                if seg.start_rev > expected {
                    out.push(format!(
                        "watcher {w}: stream {si} on {} resumed at revision {} but the previous one covered only up to {}",
                        seg.node,
                        seg.start_rev,
                        expected - 1
                    ));
                }
            }
            let mut got: BTreeSet<(i64, &str)> = BTreeSet::new();
            for e in &seg.events {
                if e.rev < last_rev {
                    out.push(format!(
                        "watcher {w}: stream {si} on {}: event {e:?} after an event at revision {last_rev} (out of order)",
                        seg.node
                    ));
                }
                last_rev = last_rev.max(e.rev);
                got.insert((e.rev, e.key.as_str()));
                if !all.insert((e.rev, e.key.as_str())) {
                    out.push(format!(
                        "watcher {w}: stream {si} on {}: event of {:?} at revision {} delivered twice",
                        seg.node, e.key, e.rev
                    ));
                }
                if e.rev < seg.start_rev {
                    out.push(format!(
                        "watcher {w}: stream {si} on {} started at revision {} but delivered {e:?}",
                        seg.node, seg.start_rev
                    ));
                }
                if !log.watches(&e.key) {
                    out.push(format!(
                        "watcher {w}: stream {si} on {}: event of unwatched key: {e:?}",
                        seg.node
                    ));
                }
                if (reference_from..=reference_hi).contains(&e.rev) {
                    match by_rev_key.get(&(e.rev, e.key.as_str())) {
                        Some(r) if *r == e => {}
                        Some(r) => out.push(format!(
                            "watcher {w}: stream {si} on {}: event {e:?} but the committed history has {r:?}",
                            seg.node
                        )),
                        None => out.push(format!(
                            "watcher {w}: stream {si} on {}: event {e:?} is not in the committed history",
                            seg.node
                        )),
                    }
                }
            }
            // No gaps: every committed event of a watched key in [start, covered] was delivered.
            let covered = seg.covered_to().min(reference_hi);
            let from = seg.start_rev.max(reference_from);
            if covered >= from {
                for ((rev, key), r) in by_rev_key.range((from, "")..) {
                    if *rev > covered {
                        break;
                    }
                    if log.watches(key) && !got.contains(&(*rev, *key)) {
                        out.push(format!(
                            "watcher {w}: stream {si} on {} (from revision {}, complete to {}) missed {r:?}",
                            seg.node,
                            seg.start_rev,
                            seg.covered_to()
                        ));
                        break;
                    }
                }
            }
            next_start = match seg.end {
                SegmentEnd::Compacted(c) => Some(c.max(seg.covered_to() + 1)),
                _ => Some(seg.covered_to() + 1),
            };
        }
    }
    out
}

/// The reference history itself must agree with what clients were told: every acknowledged put
/// (plain or leased) and every acknowledged delete that removed something is the event at its
/// revision; every revision from 2 to `reference_hi` changed something (etcd only creates a
/// revision for a change); and replaying the events on `base` gives exactly the converged
/// keyspace (`final_kvs` at `final_rev`: key, value, create revision, mod revision, version).
/// `base` is the keyspace at a revision: 1 and empty, unless the history was compacted; then
/// `base` is the keyspace read at the compaction floor, and only the revisions after it are
/// judged (compaction drops a tombstone at the floor itself, so a watch from the floor may lack
/// that delete).
pub fn check_reference(
    reference: &[WatchEvent],
    reference_hi: i64,
    history: &[Op],
    leases: &[LeaseOp],
    base: (i64, &[FinalKv]),
    final_state: Option<(i64, &[FinalKv])>,
) -> Vec<String> {
    let (base_rev, base_kvs) = base;
    let mut out = Vec::new();
    let by_rev_key: BTreeMap<(i64, &str), &WatchEvent> = reference
        .iter()
        .map(|e| ((e.rev, e.key.as_str()), e))
        .collect();
    let mut expect = |rev: i64, key: &str, put: Option<&str>, what: String| {
        if rev > reference_hi || rev <= base_rev {
            return;
        }
        match (by_rev_key.get(&(rev, key)), put) {
            (Some(e), Some(v)) if e.put && e.value == v => {}
            (Some(e), None) if !e.put => {}
            (found, _) => out.push(format!(
                "reference history: {what} acknowledged at revision {rev}, but the event there is {found:?}"
            )),
        }
    };
    for op in history {
        match (&op.kind, &op.outcome) {
            (OpKind::Put { key, value }, Outcome::Ok(OpResult::Put { rev }))
            | (
                OpKind::Cas { key, value, .. },
                Outcome::Ok(OpResult::Cas {
                    rev,
                    succeeded: true,
                    ..
                }),
            ) => expect(*rev, key, Some(value), describe(op)),
            (OpKind::Delete { key }, Outcome::Ok(OpResult::Delete { rev, deleted }))
                if *deleted > 0 =>
            {
                expect(*rev, key, None, describe(op))
            }
            _ => {}
        }
    }
    for op in leases {
        if let (LeaseOpKind::Put { key, value, .. }, LeaseOutcome::Ok(LeaseResult::Put { rev })) =
            (&op.kind, &op.outcome)
        {
            expect(
                *rev,
                key,
                Some(value),
                format!("lease op {} {:?}", op.id, op.kind),
            );
        }
    }
    let revs: BTreeSet<i64> = reference.iter().map(|e| e.rev).collect();
    if let Some(missing) = (base_rev.max(1) + 1..=reference_hi).find(|r| !revs.contains(r)) {
        out.push(format!(
            "reference history: revision {missing} has no event (up to {reference_hi})"
        ));
    }
    if let Some((final_rev, kvs)) = final_state {
        if final_rev <= reference_hi {
            let mut state: BTreeMap<&str, (&str, i64, i64, i64)> = base_kvs
                .iter()
                .map(|(k, v, c, m, ver)| (k.as_str(), (v.as_str(), *c, *m, *ver)))
                .collect();
            for e in reference
                .iter()
                .filter(|e| e.rev > base_rev && e.rev <= final_rev)
            {
                if e.put {
                    state.insert(&e.key, (&e.value, e.create_rev, e.rev, e.version));
                } else {
                    state.remove(e.key.as_str());
                }
            }
            let fin: BTreeMap<&str, (&str, i64, i64, i64)> = kvs
                .iter()
                .map(|(k, v, c, m, ver)| (k.as_str(), (v.as_str(), *c, *m, *ver)))
                .collect();
            if state != fin {
                let diff: Vec<String> = state
                    .keys()
                    .chain(fin.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter(|k| state.get(*k) != fin.get(*k))
                    .take(4)
                    .map(|k| format!("{k}: history {:?}, keyspace {:?}", state.get(k), fin.get(k)))
                    .collect();
                out.push(format!(
                    "reference history replayed to revision {final_rev} differs from the converged keyspace: {}",
                    diff.join("; ")
                ));
            }
        }
    }
    out
}

/// A key of the converged keyspace: key, value, create revision, mod revision, version.
pub type FinalKv = (String, String, i64, i64, i64);

/// Lease safety, as etcd guarantees it whatever the clocks do: once a revoke was acknowledged,
/// a linearizable read that starts later does not see the lease's keys, and a put attached to the
/// lease that starts later does not succeed (it is ordered after the revoke in the log). A leased
/// key, written once, only ever holds the value written to it. Keep-alives are not judged: etcd
/// answers them from the leader's lessor without a raft round, so a deposed leader that has not
/// noticed yet may still renew a revoked lease. Timely expiry is not checked either (it runs on
/// the leader's skewed clock); eventual expiry after the heal is checked by the simulator.
pub fn check_leases(ops: &[LeaseOp]) -> Vec<String> {
    let mut out = Vec::new();
    let mut revoked: BTreeMap<i64, &LeaseOp> = BTreeMap::new();
    let mut key_lease: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    for op in ops {
        match (&op.kind, &op.outcome) {
            (LeaseOpKind::Revoke { lease }, LeaseOutcome::Ok(_)) => {
                let e = revoked.entry(*lease).or_insert(op);
                if op.complete_ns < e.complete_ns {
                    *e = op;
                }
            }
            (LeaseOpKind::Put { lease, key, value }, _) => {
                key_lease.insert(key, (*lease, value));
            }
            _ => {}
        }
    }
    let after_revoke = |lease: i64, op: &LeaseOp| -> Option<String> {
        revoked
            .get(&lease)
            .filter(|r| r.complete_ns < op.invoke_ns)
            .map(|r| {
                format!(
                    "lease {lease:x} revoked (op {} on {}, acknowledged at {:.3}s), then op {} on {} [{:.3}s..] {:?} -> {:?}",
                    r.id,
                    r.node,
                    r.complete_ns as f64 / 1e9,
                    op.id,
                    op.node,
                    op.invoke_ns as f64 / 1e9,
                    op.kind,
                    op.outcome
                )
            })
    };
    for op in ops {
        match (&op.kind, &op.outcome) {
            (LeaseOpKind::Get { key }, LeaseOutcome::Ok(LeaseResult::Get { value: Some(v) })) => {
                match key_lease.get(key.as_str()) {
                    Some((lease, written)) => {
                        if v != written {
                            out.push(format!(
                                "leased key {key} read {v:?} but only {written:?} was written to it (op {})",
                                op.id
                            ));
                        }
                        if let Some(msg) = after_revoke(*lease, op) {
                            out.push(format!("a revoked lease's key is still readable: {msg}"));
                        }
                    }
                    None => out.push(format!(
                        "leased key {key} read {v:?} but nothing was written to it (op {})",
                        op.id
                    )),
                }
            }
            (LeaseOpKind::Put { lease, .. }, LeaseOutcome::Ok(_)) => {
                if let Some(msg) = after_revoke(*lease, op) {
                    out.push(format!(
                        "a put attached to a revoked lease succeeded: {msg}"
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// Membership: every live member lists the same members (id, learner flag), and that list is
/// what the acknowledged changes imply (`expected`).
pub fn check_members(
    lists: &[(String, Vec<(u64, bool)>)],
    expected: &[(u64, bool)],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = expected.to_vec();
    want.sort();
    for (node, list) in lists {
        let mut got = list.clone();
        got.sort();
        if got != want {
            out.push(format!(
                "{node} lists members {} but the acknowledged changes imply {}",
                fmt_members(&got),
                fmt_members(&want)
            ));
        }
    }
    out
}

/// Membership answers: etcd answers a change with the member list after it. An acknowledged
/// add-learner lists exactly one learner (the workload adds one at a time), an acknowledged
/// promote lists the member as a voter, an acknowledged remove no longer lists it.
pub fn check_member_ops(ops: &[MemberOp]) -> Vec<String> {
    let mut out = Vec::new();
    for op in ops.iter().filter(|o| o.result == "ok") {
        let ok = match op.what.as_str() {
            "add-learner" => op.members.iter().filter(|(_, l)| *l).count() == 1,
            "promote" => op.members.contains(&(op.member, false)),
            "remove" => op.members.iter().all(|(id, _)| *id != op.member),
            _ => true,
        };
        if !ok {
            out.push(format!(
                "{} of {:x} on {} acknowledged with member list {}",
                op.what,
                op.member,
                op.node,
                fmt_members(&op.members)
            ));
        }
    }
    out
}

fn fmt_members(m: &[(u64, bool)]) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(id, learner)| format!("{id:x}{}", if *learner { " (learner)" } else { "" }))
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::WatchSegment;

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

    fn ev(rev: i64, key: &str, value: &str) -> WatchEvent {
        WatchEvent {
            rev,
            key: key.into(),
            put: true,
            value: value.into(),
            create_rev: rev,
            version: 1,
        }
    }

    fn del(rev: i64, key: &str) -> WatchEvent {
        WatchEvent {
            rev,
            key: key.into(),
            put: false,
            value: String::new(),
            create_rev: 0,
            version: 0,
        }
    }

    fn seg(start: i64, events: Vec<WatchEvent>, progress: i64, end: SegmentEnd) -> WatchSegment {
        WatchSegment {
            node: "n1".into(),
            start_rev: start,
            events,
            progress_rev: progress,
            end,
        }
    }

    fn wlog(key: &str, range_end: &str, segments: Vec<WatchSegment>) -> WatchLog {
        WatchLog {
            watcher: 0,
            key: key.into(),
            range_end: range_end.into(),
            segments,
        }
    }

    /// Revisions 2..=6: a=1, b=2, a=3, delete b, a=5.
    fn reference() -> Vec<WatchEvent> {
        vec![
            ev(2, "a", "1"),
            ev(3, "b", "2"),
            ev(4, "a", "3"),
            del(5, "b"),
            ev(6, "a", "5"),
        ]
    }

    fn broken() -> SegmentEnd {
        SegmentEnd::Broken("stream ended".into())
    }

    #[test]
    fn a_watch_resumed_after_the_last_revision_it_saw_passes() {
        let log = wlog(
            "\0",
            "\0",
            vec![
                seg(2, vec![ev(2, "a", "1"), ev(3, "b", "2")], 0, broken()),
                seg(4, vec![ev(4, "a", "3"), del(5, "b")], 5, broken()),
                seg(6, vec![ev(6, "a", "5")], 0, SegmentEnd::Open),
            ],
        );
        let single = wlog("a", "", vec![seg(3, vec![ev(4, "a", "3")], 5, broken())]);
        let v = check_watches(&[log, single], &reference(), 1, 6);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_watch_that_skips_a_committed_event_has_a_gap() {
        let log = wlog(
            "\0",
            "\0",
            vec![seg(
                2,
                vec![ev(2, "a", "1"), ev(4, "a", "3")],
                0,
                SegmentEnd::Open,
            )],
        );
        let v = check_watches(&[log], &reference(), 1, 6);
        assert!(v.iter().any(|m| m.contains("missed")), "{v:?}");
    }

    #[test]
    fn a_progress_response_promises_every_event_below_it() {
        // No event after revision 2, but a progress response at 5: revisions 3..5 are missing.
        let log = wlog("\0", "\0", vec![seg(2, vec![ev(2, "a", "1")], 5, broken())]);
        let v = check_watches(&[log], &reference(), 1, 6);
        assert!(v.iter().any(|m| m.contains("missed")), "{v:?}");
    }

    #[test]
    fn a_resume_past_the_last_revision_seen_is_a_gap() {
        let log = wlog(
            "\0",
            "\0",
            vec![
                seg(2, vec![ev(2, "a", "1")], 0, broken()),
                seg(4, vec![ev(4, "a", "3")], 0, SegmentEnd::Open),
            ],
        );
        let v = check_watches(&[log], &reference(), 1, 6);
        assert!(
            v.iter().any(|m| m.contains("resumed at revision 4")),
            "{v:?}"
        );
    }

    #[test]
    fn compaction_lets_a_watch_resume_later() {
        let log = wlog(
            "\0",
            "\0",
            vec![
                seg(2, vec![ev(2, "a", "1")], 0, SegmentEnd::Compacted(5)),
                seg(5, vec![del(5, "b"), ev(6, "a", "5")], 0, SegmentEnd::Open),
            ],
        );
        let v = check_watches(&[log], &reference(), 1, 6);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn repeated_out_of_order_and_invented_events_are_caught() {
        let repeated = wlog(
            "\0",
            "\0",
            vec![
                seg(2, vec![ev(2, "a", "1"), ev(3, "b", "2")], 0, broken()),
                seg(3, vec![ev(3, "b", "2")], 0, SegmentEnd::Open),
            ],
        );
        let v = check_watches(&[repeated], &reference(), 1, 6);
        assert!(v.iter().any(|m| m.contains("twice")), "{v:?}");
        let disordered = wlog(
            "a",
            "",
            vec![seg(
                2,
                vec![ev(4, "a", "3"), ev(2, "a", "1")],
                0,
                SegmentEnd::Open,
            )],
        );
        let v = check_watches(&[disordered], &reference(), 1, 6);
        assert!(v.iter().any(|m| m.contains("out of order")), "{v:?}");
        let invented = wlog(
            "a",
            "",
            vec![seg(2, vec![ev(2, "a", "9")], 0, SegmentEnd::Open)],
        );
        let v = check_watches(&[invented], &reference(), 1, 6);
        assert!(
            v.iter().any(|m| m.contains("committed history has")),
            "{v:?}"
        );
        let unwatched = wlog(
            "a",
            "",
            vec![seg(3, vec![ev(3, "b", "2")], 0, SegmentEnd::Open)],
        );
        let v = check_watches(&[unwatched], &reference(), 1, 6);
        assert!(v.iter().any(|m| m.contains("unwatched")), "{v:?}");
    }

    fn final_kvs() -> Vec<FinalKv> {
        // a was created at 2 and written three times.
        vec![("a".into(), "5".into(), 2, 6, 3)]
    }

    fn reference_with_versions() -> Vec<WatchEvent> {
        let mut r = reference();
        for e in &mut r {
            if e.key == "a" {
                e.create_rev = 2;
                e.version = match e.rev {
                    2 => 1,
                    4 => 2,
                    _ => 3,
                };
            }
        }
        r
    }

    #[test]
    fn the_reference_agrees_with_acknowledged_writes_and_the_final_keyspace() {
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
                OpKind::Delete { key: "b".into() },
                Outcome::Ok(OpResult::Delete { rev: 5, deleted: 1 }),
            ),
        ];
        let r = reference_with_versions();
        let fin = final_kvs();
        let v = check_reference(&r, 6, &h, &[], (1, &[]), Some((6, &fin)));
        assert!(v.is_empty(), "{v:?}");
        // An acknowledged put that is not the event at its revision.
        let h2 = vec![op(
            0,
            0,
            10,
            put("a", "7"),
            Outcome::Ok(OpResult::Put { rev: 4 }),
        )];
        let v = check_reference(&r, 6, &h2, &[], (1, &[]), Some((6, &fin)));
        assert!(
            v.iter().any(|m| m.contains("acknowledged at revision 4")),
            "{v:?}"
        );
        // A revision without an event.
        let mut gap = r.clone();
        gap.retain(|e| e.rev != 3);
        let v = check_reference(&gap, 6, &[], &[], (1, &[]), None);
        assert!(
            v.iter().any(|m| m.contains("revision 3 has no event")),
            "{v:?}"
        );
        // A final keyspace the history does not lead to.
        let wrong = vec![
            ("a".into(), "5".into(), 2, 6, 3),
            ("b".into(), "2".into(), 3, 3, 1),
        ];
        let v = check_reference(&r, 6, &[], &[], (1, &[]), Some((6, &wrong)));
        assert!(v.iter().any(|m| m.contains("differs")), "{v:?}");
    }

    #[test]
    fn a_compacted_reference_replays_from_the_keyspace_at_its_floor() {
        // Compacted at 4: the reference starts there; the keyspace at 4 is a=3 (v2), b=2.
        let r: Vec<WatchEvent> = reference_with_versions()
            .into_iter()
            .filter(|e| e.rev >= 4)
            .collect();
        let base: Vec<FinalKv> = vec![
            ("a".into(), "3".into(), 2, 4, 2),
            ("b".into(), "2".into(), 3, 3, 1),
        ];
        let fin = final_kvs();
        // A put acknowledged below the floor cannot be checked any more.
        let h = vec![op(
            0,
            0,
            10,
            put("a", "1"),
            Outcome::Ok(OpResult::Put { rev: 2 }),
        )];
        let v = check_reference(&r, 6, &h, &[], (4, &base), Some((6, &fin)));
        assert!(v.is_empty(), "{v:?}");
        let stale_base: Vec<FinalKv> = vec![("c".into(), "0".into(), 2, 2, 1)];
        let v = check_reference(&r, 6, &[], &[], (4, &stale_base), Some((6, &fin)));
        assert!(v.iter().any(|m| m.contains("differs")), "{v:?}");
        // A watcher is judged from the floor on: its events below it are not in the reference.
        let ok = wlog(
            "\0",
            "\0",
            vec![
                seg(2, vec![ev(2, "a", "1")], 0, SegmentEnd::Compacted(4)),
                seg(4, vec![r[0].clone(), r[1].clone()], 5, SegmentEnd::Open),
            ],
        );
        let v = check_watches(&[ok], &r, 4, 6);
        assert!(v.is_empty(), "{v:?}");
        let gap = wlog(
            "\0",
            "\0",
            vec![
                seg(2, vec![ev(2, "a", "1")], 0, SegmentEnd::Compacted(4)),
                seg(4, vec![r[0].clone()], 6, SegmentEnd::Open),
            ],
        );
        let v = check_watches(&[gap], &r, 4, 6);
        assert!(v.iter().any(|m| m.contains("missed")), "{v:?}");
    }

    fn lop(
        id: usize,
        invoke: u64,
        complete: u64,
        kind: LeaseOpKind,
        outcome: LeaseOutcome,
    ) -> LeaseOp {
        LeaseOp {
            id,
            client: 0,
            node: "n1".into(),
            kind,
            invoke_ns: invoke,
            complete_ns: complete,
            outcome,
        }
    }

    fn lease_history(read_at: u64, late_put: bool) -> Vec<LeaseOp> {
        let mut h = vec![
            lop(
                0,
                0,
                10,
                LeaseOpKind::Grant { ttl: 3 },
                LeaseOutcome::Ok(LeaseResult::Granted { lease: 7, ttl: 3 }),
            ),
            lop(
                1,
                20,
                30,
                LeaseOpKind::Put {
                    lease: 7,
                    key: "L0-1-0".into(),
                    value: "l0-1-0".into(),
                },
                LeaseOutcome::Ok(LeaseResult::Put { rev: 4 }),
            ),
            lop(
                2,
                40,
                50,
                LeaseOpKind::Revoke { lease: 7 },
                LeaseOutcome::Ok(LeaseResult::Revoked { rev: 5 }),
            ),
            lop(
                3,
                read_at,
                read_at + 10,
                LeaseOpKind::Get {
                    key: "L0-1-0".into(),
                },
                LeaseOutcome::Ok(LeaseResult::Get {
                    value: Some("l0-1-0".into()),
                }),
            ),
        ];
        if late_put {
            h.push(lop(
                4,
                60,
                70,
                LeaseOpKind::Put {
                    lease: 7,
                    key: "L0-1-late".into(),
                    value: "l0-1-late".into(),
                },
                LeaseOutcome::Ok(LeaseResult::Put { rev: 6 }),
            ));
        }
        h
    }

    #[test]
    fn a_revoked_leases_key_must_not_be_read_after_the_revoke_was_acknowledged() {
        // Read concurrently with the revoke: either answer is fine.
        let v = check_leases(&lease_history(45, false));
        assert!(v.is_empty(), "{v:?}");
        // Read invoked after the revoke was acknowledged: the key must be gone.
        let v = check_leases(&lease_history(55, false));
        assert!(v.iter().any(|m| m.contains("still readable")), "{v:?}");
    }

    #[test]
    fn a_put_attached_to_a_revoked_lease_must_fail() {
        let v = check_leases(&lease_history(45, true));
        assert!(
            v.iter().any(|m| m.contains("revoked lease succeeded")),
            "{v:?}"
        );
    }

    #[test]
    fn a_membership_answer_must_carry_the_list_after_the_change() {
        let mop = |what: &str, members: Vec<(u64, bool)>| MemberOp {
            what: what.into(),
            member: 9,
            node: "n1".into(),
            invoke_ns: 0,
            complete_ns: 1,
            result: "ok".into(),
            members,
        };
        let good = vec![
            mop("add-learner", vec![(1, false), (9, true)]),
            mop("promote", vec![(1, false), (9, false)]),
            mop("remove", vec![(1, false)]),
        ];
        assert!(check_member_ops(&good).is_empty());
        let bad = vec![
            mop("add-learner", vec![(1, false)]),
            mop("promote", vec![(1, false), (9, true)]),
            mop("remove", vec![(1, false), (9, false)]),
        ];
        assert_eq!(
            check_member_ops(&bad).len(),
            3,
            "{:?}",
            check_member_ops(&bad)
        );
    }

    #[test]
    fn members_must_list_what_the_acknowledged_changes_imply() {
        let expected = [(1, false), (2, false), (3, false)];
        let ok = vec![("n1".to_string(), vec![(3, false), (1, false), (2, false)])];
        assert!(check_members(&ok, &expected).is_empty());
        let extra = vec![(
            "n2".to_string(),
            vec![(1, false), (2, false), (3, false), (9, true)],
        )];
        assert_eq!(check_members(&extra, &expected).len(), 1);
        let learner = vec![("n3".to_string(), vec![(1, false), (2, false), (3, true)])];
        assert_eq!(check_members(&learner, &expected).len(), 1);
    }
}
