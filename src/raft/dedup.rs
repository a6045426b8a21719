//! Applied-request bookkeeping: a proposal that reaches the log twice is applied once, and a
//! proposal whose client still waits is never refused.
//!
//! A write travels from the member a client called to the leader as a raft `MsgPropose`. If that
//! message is delivered twice (a transport that resends a batch after a broken stream, a network
//! that duplicates), the leader appends the same request twice and, without this bookkeeping,
//! every member would apply it twice: two revisions for one put, or a compare-and-swap that
//! succeeds and then runs again. The consistent index cannot catch it, since the two copies are
//! different entries.
//!
//! # The rule
//!
//! Every request carries who proposed it and when: the proposing member (`origin`), that member's
//! start count (`boot`, durable, see `server::next_boot_count`), a counter `id` that only grows
//! within one start, and a *floor*: the smallest counter of that start whose client was still
//! waiting when the request was made (the request's own counter if none older was). A request
//! whose client stopped waiting (answered, timed out, or its member restarted) has an outcome the
//! client already accepted as known or unknown, so refusing a late copy of it is always safe;
//! applying a copy of an applied request never is.
//!
//! Per origin the bookkeeping remembers the latest start seen, the highest floor seen, and the
//! counters at or above that floor that were applied. An entry is applied exactly when:
//!
//! * its start is the latest one seen for its origin (an entry of an older start belongs to an
//!   incarnation whose clients are gone; a newer start replaces the state);
//! * its counter is at or above the floor (below it, its client no longer waits);
//! * its counter is not among those applied.
//!
//! Why no waiting request can be refused: while request `r` is pending, every request its member
//! makes carries a floor at most `r`, and requests made before `r` carry floors at most their own
//! counters, which are below `r`. So every floor in the log is at most `r` until `r`'s client stops
//! waiting, and `r` is neither below the floor nor (being new) among the applied counters. Why
//! nothing is applied twice: an applied counter stays in the set until the floor passes it, and
//! from then on every copy is below the floor. The proposer bounds how far the floor may trail its
//! newest counter ([`PENDING_SPAN_MAX`]), which bounds the set. A member that has been removed from
//! the cluster is forgotten, and its late entries are refused.
//!
//! Every decision depends only on the log, so all members decide alike. The state is stored in
//! the backend, staged with [`Store::stage_meta`] into the same LMDB transaction as the entry it
//! describes, so a crash never separates the two; a snapshot carries it to lagging members. Each
//! applied entry writes its origin's small state blob and one counter key, and deletes the counter
//! keys the floor passed: constant work per entry, amortised.

use std::collections::{BTreeMap, BTreeSet};

use crate::mvcc::{MvccError, Store};

/// How far the oldest pending request of a member may trail its newest one, in counters. The
/// proposer refuses a new request beyond it ("too many requests"); it bounds the applied set kept
/// per origin. Pending requests time out after the request timeout, so under any real load the
/// span stays far below this.
pub const PENDING_SPAN_MAX: u64 = 1 << 20;

/// Name prefix of the bookkeeping blobs in the backend.
pub const META_PREFIX: &str = "applied/";

/// What the bookkeeping says about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// First time: apply it.
    New,
    /// This request was applied before.
    Duplicate,
    /// Its client no longer waits for it (below the floor, an older start of its member, or a
    /// member that was removed): not applied.
    Abandoned,
}

/// Who proposed a request and when, as it travels in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposer {
    pub origin: u64,
    pub boot: u64,
    pub counter: u64,
    pub floor: u64,
}

impl Proposer {
    /// Reads a request's identity. Requests written before starts and floors travelled as their
    /// own fields kept the start in bits 32..48 of the id and had no floor.
    pub fn of(request: &crate::proto::cairnpb::Request) -> Proposer {
        if request.boot == 0 {
            return Proposer {
                origin: request.origin,
                boot: (request.id >> 32) & 0xffff,
                counter: request.id & 0xffff_ffff,
                floor: 0,
            };
        }
        Proposer {
            origin: request.origin,
            boot: request.boot,
            counter: request.id,
            floor: request.floor,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OriginState {
    /// The member was removed from the cluster: every later entry of it is refused.
    removed: bool,
    boot: u64,
    floor: u64,
    /// Counters at or above `floor` that were applied.
    applied: BTreeSet<u64>,
}

const STATE_BYTES: usize = 1 + 8 + 8;

impl OriginState {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_BYTES);
        out.push(u8::from(self.removed));
        out.extend_from_slice(&self.boot.to_be_bytes());
        out.extend_from_slice(&self.floor.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<OriginState> {
        if bytes.len() != STATE_BYTES || bytes[0] > 1 {
            return None;
        }
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Some(OriginState {
            removed: bytes[0] == 1,
            boot: word(1),
            floor: word(9),
            applied: BTreeSet::new(),
        })
    }
}

/// The applied-request bookkeeping of every origin. See the module docs.
#[derive(Debug, Default)]
pub struct AppliedRequests {
    origins: BTreeMap<u64, OriginState>,
}

fn state_name(origin: u64) -> String {
    format!("{META_PREFIX}{origin:016x}")
}

fn counter_name(origin: u64, counter: u64) -> String {
    format!("{META_PREFIX}{origin:016x}/{counter:016x}")
}

impl AppliedRequests {
    /// Loads the bookkeeping the backend holds (empty for a new member). Blobs of the earlier
    /// window format (`applied/<origin>-<start>`) are ignored: they only guarded against copies
    /// of requests made before the upgrade.
    pub fn load(store: &Store) -> Result<AppliedRequests, MvccError> {
        let mut origins: BTreeMap<u64, OriginState> = BTreeMap::new();
        let malformed = |name: &str| {
            MvccError::Corrupt(format!("applied-request record {name:?} is malformed"))
        };
        let blobs = store.meta_with_prefix(META_PREFIX)?;
        for (name, value) in &blobs {
            let rest = &name[META_PREFIX.len()..];
            if rest.contains('-') {
                continue;
            }
            if rest.contains('/') {
                continue;
            }
            let origin = u64::from_str_radix(rest, 16).map_err(|_| malformed(name))?;
            let state = OriginState::decode(value).ok_or_else(|| malformed(name))?;
            origins.insert(origin, state);
        }
        for (name, _) in &blobs {
            let rest = &name[META_PREFIX.len()..];
            let Some((origin, counter)) = rest.split_once('/') else {
                continue;
            };
            let origin = u64::from_str_radix(origin, 16).map_err(|_| malformed(name))?;
            let counter = u64::from_str_radix(counter, 16).map_err(|_| malformed(name))?;
            let state = origins.get_mut(&origin).ok_or_else(|| malformed(name))?;
            state.applied.insert(counter);
        }
        Ok(AppliedRequests { origins })
    }

    /// Decides whether an entry proposed by `p` is applied, and records the decision; the change
    /// is staged into the entry's backend transaction, so the caller must commit that entry (apply
    /// it, or record its index) next. Requests without an origin are always new.
    pub fn admit(&mut self, store: &Store, p: Proposer) -> Admit {
        if p.origin == 0 {
            return Admit::New;
        }
        let state = self.origins.entry(p.origin).or_default();
        if state.removed || p.boot < state.boot {
            return Admit::Abandoned;
        }
        if p.boot > state.boot {
            for c in std::mem::take(&mut state.applied) {
                store.stage_meta(&counter_name(p.origin, c), None);
            }
            *state = OriginState {
                removed: false,
                boot: p.boot,
                floor: 0,
                applied: BTreeSet::new(),
            };
        }
        if p.counter < state.floor {
            return Admit::Abandoned;
        }
        if state.applied.contains(&p.counter) {
            return Admit::Duplicate;
        }
        state.applied.insert(p.counter);
        store.stage_meta(&counter_name(p.origin, p.counter), Some(Vec::new()));
        // A floor above the request's own counter would be a proposer bug; never let it hide the
        // request just admitted.
        let floor = p.floor.min(p.counter);
        if floor > state.floor {
            state.floor = floor;
            let keep = state.applied.split_off(&floor);
            for c in std::mem::replace(&mut state.applied, keep) {
                store.stage_meta(&counter_name(p.origin, c), None);
            }
        }
        debug_assert!(state.applied.iter().all(|c| *c >= state.floor));
        store.stage_meta(&state_name(p.origin), Some(state.encode()));
        Admit::New
    }

    /// `origin` was removed from the cluster: forget what it applied and refuse its late entries.
    /// Staged like [`AppliedRequests::admit`], into the conf change's transaction.
    pub fn forget(&mut self, store: &Store, origin: u64) {
        if origin == 0 {
            return;
        }
        let state = self.origins.entry(origin).or_default();
        for c in std::mem::take(&mut state.applied) {
            store.stage_meta(&counter_name(origin, c), None);
        }
        state.removed = true;
        store.stage_meta(&state_name(origin), Some(state.encode()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 26).unwrap();
        (dir, store)
    }

    fn p(origin: u64, boot: u64, counter: u64, floor: u64) -> Proposer {
        Proposer {
            origin,
            boot,
            counter,
            floor,
        }
    }

    /// Admits like the node does: decide, then commit the entry's index.
    fn admit(w: &mut AppliedRequests, s: &Store, at: Proposer, index: u64) -> Admit {
        let v = w.admit(s, at);
        s.set_consistent_index(index).unwrap();
        v
    }

    #[test]
    fn a_request_is_admitted_once_even_out_of_order() {
        let (_d, s) = store();
        let mut w = AppliedRequests::default();
        assert_eq!(admit(&mut w, &s, p(7, 3, 10, 10), 1), Admit::New);
        assert_eq!(admit(&mut w, &s, p(7, 3, 12, 11), 2), Admit::New);
        assert_eq!(admit(&mut w, &s, p(7, 3, 11, 11), 3), Admit::New);
        assert_eq!(admit(&mut w, &s, p(7, 3, 12, 11), 4), Admit::Duplicate);
        assert_eq!(admit(&mut w, &s, p(7, 3, 10, 10), 5), Admit::Abandoned);
        // The same counter from another member is another request.
        assert_eq!(admit(&mut w, &s, p(8, 3, 12, 12), 6), Admit::New);
        // Without an origin there is nothing to compare.
        assert_eq!(admit(&mut w, &s, p(0, 0, 5, 0), 7), Admit::New);
        assert_eq!(admit(&mut w, &s, p(0, 0, 5, 0), 8), Admit::New);
    }

    /// The defect this replaces: a request parked while no leader was known, re-proposed after
    /// more than a fixed window of newer requests had applied, was refused as "too old" although
    /// its client still waited. With floors, a waiting request is admitted however late it is.
    #[test]
    fn a_waiting_request_is_admitted_however_many_newer_ones_applied_first() {
        let (_d, s) = store();
        let mut w = AppliedRequests::default();
        // Request 1 stays pending: every later request carries floor 1.
        for c in 2..10_000 {
            assert_eq!(admit(&mut w, &s, p(7, 1, c, 1), c), Admit::New);
        }
        assert_eq!(admit(&mut w, &s, p(7, 1, 1, 1), 10_000), Admit::New);
        assert_eq!(
            admit(&mut w, &s, p(7, 1, 5_000, 1), 10_001),
            Admit::Duplicate
        );
        // Once it is answered, the floor moves past everything and the set shrinks to one.
        assert_eq!(
            admit(&mut w, &s, p(7, 1, 10_000, 10_000), 10_002),
            Admit::New
        );
        assert_eq!(w.origins[&7].applied.len(), 1);
        assert_eq!(
            admit(&mut w, &s, p(7, 1, 9_999, 1), 10_003),
            Admit::Abandoned
        );
    }

    #[test]
    fn an_older_start_is_refused_and_a_newer_one_starts_afresh() {
        let (_d, s) = store();
        let mut w = AppliedRequests::default();
        assert_eq!(admit(&mut w, &s, p(7, 1, 5, 5), 1), Admit::New);
        assert_eq!(admit(&mut w, &s, p(7, 2, 1, 1), 2), Admit::New);
        assert_eq!(admit(&mut w, &s, p(7, 1, 6, 5), 3), Admit::Abandoned);
        assert_eq!(admit(&mut w, &s, p(7, 2, 1, 1), 4), Admit::Duplicate);
        assert_eq!(admit(&mut w, &s, p(7, 2, 2, 1), 5), Admit::New);
    }

    #[test]
    fn a_removed_member_is_forgotten_and_its_late_entries_refused() {
        let (_d, s) = store();
        let mut w = AppliedRequests::default();
        assert_eq!(admit(&mut w, &s, p(7, 1, 5, 5), 1), Admit::New);
        w.forget(&s, 7);
        s.set_consistent_index(2).unwrap();
        assert_eq!(admit(&mut w, &s, p(7, 1, 6, 5), 3), Admit::Abandoned);
        assert_eq!(admit(&mut w, &s, p(7, 2, 1, 1), 4), Admit::Abandoned);
        let reloaded = AppliedRequests::load(&s).unwrap();
        assert!(reloaded.origins[&7].removed);
        assert!(reloaded.origins[&7].applied.is_empty());
    }

    #[test]
    fn the_state_survives_a_restart_with_the_entries_it_describes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 1 << 26).unwrap();
            let mut w = AppliedRequests::default();
            assert_eq!(admit(&mut w, &s, p(9, 1, 100, 99), 1), Admit::New);
            // Decided but never committed: a crash before the entry's commit forgets it too.
            assert_eq!(w.admit(&s, p(9, 1, 101, 99)), Admit::New);
            // A clean stop: the store commits what was applied (entry 1), not the decision.
            s.sync().unwrap();
        }
        let s = Store::open(dir.path(), 1 << 26).unwrap();
        let mut w = AppliedRequests::load(&s).unwrap();
        assert_eq!(admit(&mut w, &s, p(9, 1, 100, 99), 2), Admit::Duplicate);
        assert_eq!(admit(&mut w, &s, p(9, 1, 101, 99), 3), Admit::New);
        assert_eq!(admit(&mut w, &s, p(9, 1, 99, 99), 4), Admit::New);
        let reloaded = AppliedRequests::load(&s).unwrap();
        assert_eq!(reloaded.origins, w.origins);
    }

    /// One step of the model: what a proposing member and the network do.
    #[derive(Debug, Clone)]
    enum Step {
        /// The member makes a request (it becomes pending).
        Make,
        /// A copy of the message of the n-th request (mod the number made) reaches the log.
        Deliver(usize),
        /// The client of the n-th pending request stops waiting (answered or timed out).
        Finish(usize),
        /// The member restarts: every pending request is abandoned, counters start again.
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Make),
            4 => any::<usize>().prop_map(Step::Deliver),
            2 => any::<usize>().prop_map(Step::Finish),
            1 => Just(Step::Restart),
        ]
    }

    proptest! {
        /// For any interleaving of requests made, copies delivered (duplicated, reordered, late)
        /// and clients that stop waiting: no request is applied twice, and every copy that reaches
        /// the log while its client waits is applied if no copy was before. Also across a reload
        /// from the backend at any point.
        #[test]
        fn no_request_applies_twice_and_no_waiting_request_is_refused(
            steps in proptest::collection::vec(step(), 1..300),
            reload_at in 0usize..300,
        ) {
            let (_d, s) = store();
            let mut w = AppliedRequests::default();
            let mut boot = 1u64;
            let mut next = 1u64;
            // Every message made: (boot, counter, floor).
            let mut made: Vec<(u64, u64, u64)> = Vec::new();
            let mut pending: BTreeSet<(u64, u64)> = BTreeSet::new();
            let mut applied: BTreeSet<(u64, u64)> = BTreeSet::new();
            let mut index = 0;
            for (i, st) in steps.into_iter().enumerate() {
                if i == reload_at {
                    w = AppliedRequests::load(&s).unwrap();
                }
                match st {
                    Step::Make => {
                        let counter = next;
                        next += 1;
                        pending.insert((boot, counter));
                        let floor = pending
                            .iter()
                            .filter(|(b, _)| *b == boot)
                            .map(|(_, c)| *c)
                            .min()
                            .unwrap();
                        made.push((boot, counter, floor));
                    }
                    Step::Deliver(n) if !made.is_empty() => {
                        let (b, c, f) = made[n % made.len()];
                        index += 1;
                        let verdict = admit(&mut w, &s, p(7, b, c, f), index);
                        if verdict == Admit::New {
                            prop_assert!(applied.insert((b, c)), "applied twice: {b}/{c}");
                        } else if pending.contains(&(b, c)) {
                            prop_assert!(applied.contains(&(b, c)), "waiting request refused: {b}/{c} {verdict:?}");
                        }
                    }
                    Step::Finish(n) if !pending.is_empty() => {
                        let k = *pending.iter().nth(n % pending.len()).unwrap();
                        pending.remove(&k);
                    }
                    Step::Restart => {
                        pending.clear();
                        boot += 1;
                        next = 1;
                    }
                    _ => {}
                }
            }
        }
    }
}
