//! State shared by everything in one simulated run: the peer network, the trace, and what the
//! harness observed of the nodes (roles and terms, failures).
//!
//! Everything here is behind one mutex and iterated in `BTreeMap` order, so that a run is a pure
//! function of its seed.

// madsim's virtual time *is* the simulated clock: this module implements the seam, so it may
// read `Instant::now` (which madsim intercepts) directly.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn::io::{Rng, SplitMix64, Transport};
use raft::eraftpb::Message;
use tokio::sync::mpsc;

/// Messages that may be in flight in the simulated peer network at once; beyond this the
/// network drops new ones, as a congested real one would.
pub const IN_FLIGHT_MESSAGES_MAX: usize = 100_000;

/// Faults of the peer network, changed by the nemesis.
#[derive(Debug, Clone, Default)]
pub struct NetFaults {
    /// Directed links (from member, to member) that drop everything, with how many faults block
    /// each (faults overlap; a link opens when the last one heals).
    pub blocked: BTreeMap<(u64, u64), u32>,
    pub loss_ppm: u64,
    pub dup_ppm: u64,
    pub delay_min: Duration,
    pub delay_max: Duration,
}

pub struct NetState {
    pub inbound: BTreeMap<u64, mpsc::Sender<Message>>,
    /// Where each member's node looks for received snapshot files.
    pub snap_dirs: BTreeMap<u64, std::path::PathBuf>,
    pub faults: NetFaults,
    rng: SplitMix64,
    in_flight: usize,
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
}

/// The latest status each member published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub term: u64,
    pub leader: u64,
    pub is_leader: bool,
    pub applied: u64,
    pub commit: u64,
    pub up: bool,
}

pub struct Inner {
    pub net: NetState,
    pub status: BTreeMap<u64, Observed>,
    /// Leaders seen per term (election safety: at most one).
    pub leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// Problems found while running (a node failing without an injected cause, a panic).
    pub failures: Vec<String>,
    pub trace: Vec<String>,
    /// FNV-1a over every trace event, kept even when the trace is not written.
    pub hash: u64,
    trace_messages: bool,
}

pub struct World {
    inner: Mutex<Inner>,
    router: madsim::runtime::NodeHandle,
    origin: madsim::time::Instant,
    pub names: BTreeMap<u64, String>,
    /// The run's temp dir, replaced by `$DATA` in events: its name differs between runs.
    redact: String,
    /// Every simulated host a member ran on, killed when the run ends (see [`World::hosts`]).
    hosts: Mutex<Vec<madsim::task::NodeId>>,
}

pub fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    let mut h = hash;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl World {
    /// Records a host a member runs on.
    pub fn host_created(&self, id: madsim::task::NodeId) {
        self.hosts.lock().expect("hosts lock").push(id);
    }

    /// The hosts members ran on, the router's first, in creation order.
    pub fn hosts(&self) -> Vec<madsim::task::NodeId> {
        let mut all = vec![self.router.id()];
        all.extend(self.hosts.lock().expect("hosts lock").iter().copied());
        all
    }

    pub fn new(
        seed: u64,
        router: madsim::runtime::NodeHandle,
        names: BTreeMap<u64, String>,
        trace_messages: bool,
        redact: String,
    ) -> Arc<World> {
        Arc::new(World {
            inner: Mutex::new(Inner {
                net: NetState {
                    inbound: BTreeMap::new(),
                    snap_dirs: BTreeMap::new(),
                    faults: NetFaults {
                        delay_min: Duration::from_millis(1),
                        delay_max: Duration::from_millis(5),
                        ..Default::default()
                    },
                    rng: SplitMix64::new(seed ^ 0x6e65_7477_6f72_6b00),
                    in_flight: 0,
                    sent: 0,
                    delivered: 0,
                    dropped: 0,
                },
                status: BTreeMap::new(),
                leaders: BTreeMap::new(),
                failures: Vec::new(),
                trace: Vec::new(),
                hash: FNV_OFFSET,
                trace_messages,
            }),
            router,
            origin: madsim::time::Instant::now(),
            names,
            redact,
            hosts: Mutex::new(Vec::new()),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("world lock poisoned")
    }

    /// Simulated time since the run began.
    pub fn now(&self) -> Duration {
        madsim::time::Instant::now().duration_since(self.origin)
    }

    pub fn name(&self, id: u64) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("{id:x}"))
    }

    /// Records one trace event: `kind` plus JSON fields (already formatted, without braces).
    pub fn event(&self, kind: &str, fields: String) {
        let fields = if self.redact.is_empty() {
            fields
        } else {
            fields.replace(&self.redact, "$DATA")
        };
        let line = format!(
            "{{\"t_ms\":{},\"ev\":\"{kind}\"{}{fields}}}",
            self.now().as_millis(),
            if fields.is_empty() { "" } else { "," }
        );
        let mut g = self.lock();
        g.hash = fnv(g.hash, line.as_bytes());
        g.trace.push(line);
    }

    /// Records a member's status: trace role and term changes, and note leaders per term.
    pub fn observe(&self, member: u64, o: Observed) {
        let changed = {
            let mut g = self.lock();
            let prev = g.status.insert(member, o.clone()).unwrap_or_default();
            if o.is_leader {
                g.leaders.entry(o.term).or_default().insert(member);
            }
            (prev.term, prev.is_leader, prev.leader, prev.up)
                != (o.term, o.is_leader, o.leader, o.up)
        };
        if changed {
            self.event(
                "status",
                format!(
                    "\"node\":\"{}\",\"up\":{},\"term\":{},\"role\":\"{}\",\"leader\":\"{}\",\"commit\":{},\"applied\":{}",
                    self.name(member),
                    o.up,
                    o.term,
                    if o.is_leader { "leader" } else { "follower" },
                    if o.leader == 0 { "-".to_string() } else { self.name(o.leader) },
                    o.commit,
                    o.applied
                ),
            );
        }
    }

    /// The member that leads in the highest term among members that are up, if any.
    pub fn leader(&self) -> Option<u64> {
        let g = self.lock();
        g.status
            .iter()
            .filter(|(_, o)| o.up && o.is_leader)
            .max_by_key(|(_, o)| o.term)
            .map(|(id, _)| *id)
    }

    pub fn fail(&self, what: String) {
        let what = if self.redact.is_empty() {
            what
        } else {
            what.replace(&self.redact, "$DATA")
        };
        self.event(
            "failure",
            format!("\"what\":{}", serde_json::Value::String(what.clone())),
        );
        self.lock().failures.push(what);
    }

    pub fn set_faults(&self, f: impl FnOnce(&mut NetFaults)) {
        f(&mut self.lock().net.faults);
    }

    /// Blocks the directed links, counting overlapping faults.
    pub fn block(&self, links: &[(u64, u64)]) {
        let mut g = self.lock();
        for l in links {
            *g.net.faults.blocked.entry(*l).or_insert(0) += 1;
        }
    }

    pub fn unblock(&self, links: &[(u64, u64)]) {
        let mut g = self.lock();
        for l in links {
            if let Some(c) = g.net.faults.blocked.get_mut(l) {
                *c -= 1;
                if *c == 0 {
                    g.net.faults.blocked.remove(l);
                }
            }
        }
    }

    pub fn register_inbound(&self, id: u64, tx: mpsc::Sender<Message>) {
        self.lock().net.inbound.insert(id, tx);
    }

    pub fn unregister_inbound(&self, id: u64) {
        self.lock().net.inbound.remove(&id);
    }

    pub fn set_snap_dir(&self, id: u64, dir: std::path::PathBuf) {
        self.lock().net.snap_dirs.insert(id, dir);
    }

    /// Sends a snapshot file with its MsgSnapshot, as the production transport streams it: the
    /// transfer takes time (delay plus size at `SNAPSHOT_BYTES_PER_SEC`), fails on a blocked or
    /// lossy link or when the receiver is down, and on success the file is in the receiver's
    /// snapshot directory before its node sees the message. Either way the sender's node gets a
    /// MsgSnapStatus. The sender's file is consumed.
    fn route_snapshot(self: &Arc<World>, msg: Message, path: std::path::PathBuf) {
        /// Simulated bandwidth of a snapshot stream.
        const SNAPSHOT_BYTES_PER_SEC: u64 = 50 * 1024 * 1024;
        let (from, to) = (msg.from, msg.to);
        let bytes = std::fs::read(&path).ok();
        let _ = std::fs::remove_file(&path);
        let (lost, delay) = {
            let mut g = self.lock();
            let net = &mut g.net;
            net.sent += 1;
            let f = &net.faults;
            let lost = bytes.is_none()
                || f.blocked.get(&(from, to)).is_some_and(|c| *c > 0)
                || (f.loss_ppm > 0 && net.rng.range(0, 1_000_000) < f.loss_ppm);
            let (lo, hi) = (
                f.delay_min.as_micros() as u64,
                f.delay_max.as_micros() as u64,
            );
            let size = bytes.as_ref().map_or(0, |b| b.len() as u64);
            let delay = Duration::from_micros(net.rng.range(lo, hi.max(lo + 1)))
                + Duration::from_micros(size * 1_000_000 / SNAPSHOT_BYTES_PER_SEC);
            (lost, delay)
        };
        self.event(
            "snapshot_sent",
            format!(
                "\"from\":\"{}\",\"to\":\"{}\",\"index\":{},\"bytes\":{},\"lost\":{lost}",
                self.name(from),
                self.name(to),
                msg.get_snapshot().get_metadata().index,
                bytes.as_ref().map_or(0, Vec::len)
            ),
        );
        let world = self.clone();
        self.router.spawn(async move {
            madsim::time::sleep(delay).await;
            let (dest, dir, source) = {
                let g = world.lock();
                (
                    g.net.inbound.get(&to).cloned(),
                    g.net.snap_dirs.get(&to).cloned(),
                    g.net.inbound.get(&from).cloned(),
                )
            };
            let mut ok = false;
            if let (false, Some(bytes), Some(dest), Some(dir)) = (lost, bytes, dest, dir) {
                let index = msg.get_snapshot().get_metadata().index;
                let file = cairn::peer::snapshot_path(&dir, index);
                let tmp = file.with_extension("tmp");
                let written = std::fs::create_dir_all(&dir)
                    .and_then(|_| std::fs::write(&tmp, &bytes))
                    .and_then(|_| std::fs::rename(&tmp, &file));
                ok = written.is_ok() && dest.try_send(msg).is_ok();
            }
            {
                let mut g = world.lock();
                if ok {
                    g.net.delivered += 1;
                } else {
                    g.net.dropped += 1;
                }
            }
            if let Some(source) = source {
                let mut status = Message::default();
                status.set_msg_type(raft::eraftpb::MessageType::MsgSnapStatus);
                status.from = to;
                status.to = from;
                status.reject = !ok;
                let _ = source.try_send(status);
            }
        });
    }

    /// Sends a raft message through the simulated network: dropped on a blocked link, lost or
    /// duplicated at the configured rates, and delivered after a random delay (which reorders).
    fn route(self: &Arc<World>, msg: Message) {
        let (from, to) = (msg.from, msg.to);
        let mut deliveries = Vec::new();
        {
            let mut g = self.lock();
            let trace_messages = g.trace_messages;
            let net = &mut g.net;
            net.sent += 1;
            let f = &net.faults;
            let lost = f.blocked.get(&(from, to)).is_some_and(|c| *c > 0)
                || net.in_flight >= IN_FLIGHT_MESSAGES_MAX
                || (f.loss_ppm > 0 && net.rng.range(0, 1_000_000) < f.loss_ppm);
            if lost {
                net.dropped += 1;
                drop(g);
                if trace_messages {
                    self.event(
                        "msg_dropped",
                        format!(
                            "\"from\":\"{}\",\"to\":\"{}\",\"type\":\"{:?}\"",
                            self.name(from),
                            self.name(to),
                            msg.get_msg_type()
                        ),
                    );
                }
                return;
            }
            let copies = if f.dup_ppm > 0 && net.rng.range(0, 1_000_000) < f.dup_ppm {
                2
            } else {
                1
            };
            let (lo, hi) = (
                f.delay_min.as_micros() as u64,
                f.delay_max.as_micros() as u64,
            );
            for _ in 0..copies {
                let d = Duration::from_micros(net.rng.range(lo, hi.max(lo + 1)));
                deliveries.push(d);
            }
            net.in_flight += copies;
            if trace_messages {
                drop(g);
                self.event("msg_sent", format!("\"from\":\"{}\",\"to\":\"{}\",\"type\":\"{:?}\",\"term\":{},\"index\":{},\"entries\":{},\"commit\":{}", self.name(from), self.name(to), msg.get_msg_type(), msg.term, msg.index, msg.entries.len(), msg.commit));
            }
        }
        for d in deliveries {
            let world = self.clone();
            let msg = msg.clone();
            self.router.spawn(async move {
                madsim::time::sleep(d).await;
                let sender = {
                    let mut g = world.lock();
                    g.net.in_flight -= 1;
                    g.net.inbound.get(&to).cloned()
                };
                let ok = sender.is_some_and(|s| s.try_send(msg).is_ok());
                let mut g = world.lock();
                if ok {
                    g.net.delivered += 1;
                } else {
                    g.net.dropped += 1;
                }
            });
        }
    }
}

/// The [`Transport`] one node uses: everything goes through the [`World`]'s router.
pub struct SimTransport {
    pub world: Arc<World>,
}

impl Transport for SimTransport {
    fn send(&self, msg: Message) {
        self.world.route(msg);
    }

    fn send_snapshot(&self, msg: Message, path: std::path::PathBuf) {
        self.world.route_snapshot(msg, path);
    }
}
