//! One simulated run: build the cluster, run the workload under the nemesis, heal, and judge.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::bugs::Bug;
use cairn::crashpoint::Point;
use cairn::io::{Rng, SplitMix64};
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::RangeRequest;
use cairn::server::{InitialMember, Server, ServerConfig, ServerIo};
use tokio::sync::watch;

use crate::checker;
use crate::clock::{SimClock, Skew};
use crate::disk::SimDisk;
use crate::nemesis::{Fault, Scheduled, Swarm};
use crate::workload::{self, Endpoint, History, Op, OpKind, OpResult, Outcome, WorkloadConfig};
use crate::world::{Observed, SimTransport, World, FNV_OFFSET};

/// The cluster token every simulated member shares (it seeds the member ids).
const CLUSTER_TOKEN: &str = "cairn-sim";
const CLIENT_PORT: u16 = 2379;
/// Bounds of the heal phase: each step must finish within its bound or the run fails.
const HEAL_LEADER_MAX: Duration = Duration::from_secs(20);
const HEAL_WRITE_MAX: Duration = Duration::from_secs(20);
const HEAL_CONVERGE_MAX: Duration = Duration::from_secs(20);
/// Simulated time after which madsim aborts a run (a hang is a failure too).
const RUN_TIME_MAX: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    pub nodes: usize,
    pub bug: Option<Bug>,
    pub trace: bool,
    /// Keep only these entries of the fault schedule (for shrinking and replay).
    pub keep_faults: Option<BTreeSet<usize>>,
    pub chaos: Duration,
    /// Let the network duplicate forwarded proposals (MsgPropose).
    pub dup_proposals: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub failures: Vec<String>,
    pub inconclusive: Vec<String>,
    pub hash: u64,
    pub trace: Vec<String>,
    pub schedule: Vec<Scheduled>,
    pub swarm: String,
    pub sim_time: Duration,
    pub ops: usize,
}

/// Everything about one member that outlives its incarnations.
struct Slot {
    name: String,
    member: u64,
    ip: Ipv4Addr,
    disk: SimDisk,
    skew: Arc<Skew>,
    cfg: ServerConfig,
    madsim_id: Mutex<Option<madsim::task::NodeId>>,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Up from the harness's point of view (started, not killed).
    up: bool,
    /// A process fault (kill, pause, fsync failure, bit flip) holds this member.
    busy: bool,
    /// A bit was flipped in its WAL: refusing to start is the right answer.
    corrupted: bool,
    /// An injected fsync failure or full disk: stopping with a WAL error is the right answer.
    expect_stop: bool,
    incarnation: u64,
    /// A crash point the nemesis armed on this member; cleared when the member reaches it.
    armed: Option<Arm>,
    /// Where a bit was flipped in its WAL (with `corrupted`): starting would accept the damage.
    flip: Option<String>,
}

/// A crash point armed on a member.
#[derive(Debug, Clone, Copy)]
struct Arm {
    point: Point,
    /// Keep a torn prefix of the unsynced writes.
    torn: bool,
    /// Flip a bit in an entry the member has synced but not applied, then crash (the bit-flip
    /// fault's way of making the damage matter).
    flip: bool,
}

struct Ctx {
    seed: u64,
    world: Arc<World>,
    slots: Vec<Slot>,
    rng: Mutex<SplitMix64>,
}

impl Slot {
    fn st(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().expect("slot lock")
    }
    fn id(&self) -> madsim::task::NodeId {
        self.madsim_id
            .lock()
            .expect("slot lock")
            .expect("node created")
    }
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs one seed to completion and judges it.
pub fn run(opts: &RunOptions) -> Report {
    cairn::bugs::set_active(opts.bug.as_slice());
    let base = std::env::temp_dir().join(format!(
        "cairn-sim-{}-{}-{}",
        std::process::id(),
        opts.seed,
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let report = Arc::new(Mutex::new(Report::default()));
    let result = {
        let report = report.clone();
        let base = base.clone();
        let opts = opts.clone();
        // A fresh thread per run: raft-rs draws from `rand::thread_rng`, whose state would
        // otherwise carry over from the previous seed run on the same thread. The thread is
        // outside the simulation; the runtime lives entirely inside it.
        std::thread::spawn(move || {
            let mut rt = madsim::runtime::Runtime::with_seed_and_config(
                opts.seed,
                madsim::Config::default(),
            );
            rt.set_time_limit(RUN_TIME_MAX);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(scenario(opts, base, report))
            }));
            // The handler holds the run's context: drop it while the runtime still exists.
            cairn::crashpoint::set_handler(None);
            result
        })
        .join()
        .unwrap_or_else(Err)
    };
    // The runtime is gone: every task, and with it every LMDB environment, is dropped.
    let _ = std::fs::remove_dir_all(&base);
    let mut report = Arc::try_unwrap(report)
        .map(|m| m.into_inner().expect("report lock"))
        .unwrap_or_else(|arc| {
            let mut g = arc.lock().expect("report lock");
            std::mem::take(&mut *g)
        });
    if let Err(panic) = result {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".into());
        report.failures.push(format!("panic: {msg}"));
    }
    report
}

fn server_io(ctx: &Ctx, i: usize, incarnation: u64) -> ServerIo {
    let slot = &ctx.slots[i];
    // Where the node looks for snapshots it received (Server::start's layout).
    ctx.world
        .set_snap_dir(slot.member, slot.cfg.data_dir.join("member").join("snap"));
    ServerIo {
        disk: Arc::new(slot.disk.clone()),
        clock: Arc::new(SimClock::new(slot.skew.clone())),
        transport: Arc::new(SimTransport {
            world: ctx.world.clone(),
        }),
        rng: Box::new(SplitMix64::new(
            ctx.seed ^ ((i as u64 + 1) << 40) ^ incarnation.wrapping_mul(0x9E37_79B9),
        )),
    }
}

/// The body of one member's incarnation: start the server and the API, watch its status, and
/// report how it ended.
async fn member_main(ctx: Arc<Ctx>, i: usize) {
    let slot = &ctx.slots[i];
    let world = ctx.world.clone();
    let incarnation = {
        let mut st = slot.st();
        st.incarnation += 1;
        st.up = true;
        st.incarnation
    };
    world.event(
        "start",
        format!("\"node\":\"{}\",\"incarnation\":{incarnation}", slot.name),
    );
    let (_stop_tx, stop_rx) = watch::channel(false);
    // LMDB lives in real files under the data dir; the WAL lives on the simulated disk.
    if let Err(e) = std::fs::create_dir_all(&slot.cfg.data_dir) {
        world.fail(format!(
            "{}: cannot create {}: {e}",
            slot.name,
            slot.cfg.data_dir.display()
        ));
        return;
    }
    let mut attempts = 0;
    let (server, inbound, node) = loop {
        match Server::start(
            slot.cfg.clone(),
            server_io(&ctx, i, incarnation),
            stop_rx.clone(),
        ) {
            Ok(started) => break started,
            Err(e) => {
                let msg = e.to_string();
                // The previous incarnation's tasks (and its LMDB environment) are dropped lazily
                // after a kill; wait for them rather than fail.
                if msg.to_lowercase().contains("already opened") && attempts < 100 {
                    attempts += 1;
                    madsim::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let corrupted = slot.st().corrupted;
                world.event(
                    "start_refused",
                    format!(
                        "\"node\":\"{}\",\"error\":{}",
                        slot.name,
                        serde_json::Value::String(msg.clone())
                    ),
                );
                if !corrupted {
                    world.fail(format!(
                        "{} refused to start without injected corruption: {msg}",
                        slot.name
                    ));
                }
                slot.st().up = false;
                world.observe(slot.member, Observed::default());
                return;
            }
        }
    };
    let flipped = slot.st().flip.clone();
    if let Some(flip) = flipped {
        // Checksums detect every single-bit error, and the flip is never in the last record
        // (which could pass for a torn write): recovery must have refused this WAL.
        world.fail(format!(
            "{} started although a bit was flipped in its synced WAL ({flip}): recovery accepted \
             damage it must refuse",
            slot.name
        ));
    }
    world.register_inbound(slot.member, inbound);
    {
        let world = world.clone();
        let member = slot.member;
        let mut rx = server.watch_status();
        tokio::spawn(async move {
            loop {
                let s = rx.borrow_and_update().clone();
                world.observe(
                    member,
                    Observed {
                        term: s.term,
                        leader: s.leader,
                        is_leader: s.is_leader,
                        applied: s.applied,
                        commit: s.commit,
                        up: true,
                    },
                );
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
    }
    let addr = SocketAddr::new(IpAddr::V4(slot.ip), CLIENT_PORT);
    let api = tokio::spawn(cairn::api::serve(
        server.clone(),
        addr,
        std::future::pending(),
    ));
    drop(server);
    let result = node.await;
    api.abort();
    world.unregister_inbound(slot.member);
    let expected = slot.st().expect_stop;
    match result {
        Ok(Ok(())) => world.event("stopped", format!("\"node\":\"{}\"", slot.name)),
        Ok(Err(e)) => {
            world.event(
                "stopped",
                format!(
                    "\"node\":\"{}\",\"error\":{}",
                    slot.name,
                    serde_json::Value::String(e.to_string())
                ),
            );
            if !expected {
                world.fail(format!(
                    "{} stopped without an injected cause: {e}",
                    slot.name
                ));
            }
        }
        Err(e) => world.fail(format!("{}: node task failed: {e}", slot.name)),
    }
    slot.st().up = false;
    world.observe(slot.member, Observed::default());
}

fn kill(ctx: &Ctx, i: usize, torn: bool) {
    let slot = &ctx.slots[i];
    madsim::runtime::Handle::current().kill(slot.id());
    ctx.world.unregister_inbound(slot.member);
    let report = {
        let mut rng = ctx.rng.lock().expect("rng lock");
        slot.disk.crash(&mut rng, torn)
    };
    slot.st().up = false;
    ctx.world.observe(slot.member, Observed::default());
    ctx.world.event(
        "crash",
        format!(
            "\"node\":\"{}\",\"torn\":{torn},\"lost_bytes\":{},\"torn_bytes\":{}",
            slot.name, report.lost_bytes, report.torn_bytes
        ),
    );
}

/// Called by the node code at every crash point (through `cairn::crashpoint`): crashes the
/// member right there if the nemesis armed that point on it. Runs inside the member's task, so
/// the member's code does nothing more after this returns `true`.
fn on_crash_point(ctx: &Ctx, member: u64, point: Point, applied: u64) -> bool {
    let Some(i) = ctx.slots.iter().position(|s| s.member == member) else {
        return false;
    };
    let slot = &ctx.slots[i];
    let arm = match slot.st().armed {
        Some(arm) if arm.point == point => arm,
        _ => return false,
    };
    if arm.flip {
        // Only worth it when the synced WAL holds entries the backend has not applied (at this
        // point everything appended is synced); otherwise wait for a later Ready.
        let flip = {
            let mut rng = ctx.rng.lock().expect("rng lock");
            slot.disk.flip_wal(&mut rng, applied, true)
        };
        let Some(flip) = flip else { return false };
        record_flip(ctx, i, &flip);
    }
    slot.st().armed = None;
    ctx.world.event(
        "crashpoint",
        format!(
            "\"node\":\"{}\",\"point\":\"{}\",\"applied\":{applied}",
            slot.name,
            point.name()
        ),
    );
    kill(ctx, i, arm.torn);
    true
}

fn install_crash_handler(ctx: &Arc<Ctx>) {
    let ctx = ctx.clone();
    cairn::crashpoint::set_handler(Some(std::rc::Rc::new(move |member, point, applied| {
        on_crash_point(&ctx, member, point, applied)
    })));
}

fn record_flip(ctx: &Ctx, i: usize, flip: &crate::disk::Flip) {
    let slot = &ctx.slots[i];
    let what = format!("{} offset {}: {}", flip.file, flip.offset, flip.target);
    {
        let mut st = slot.st();
        st.corrupted = true;
        st.flip = Some(what);
    }
    ctx.world.event(
        "bitflip",
        format!(
            "\"node\":\"{}\",\"file\":\"{}\",\"offset\":{},\"target\":\"{}\"",
            slot.name, flip.file, flip.offset, flip.target
        ),
    );
}

/// Arms a crash point on the members `ids` and waits up to `max` for one of them to reach it.
/// Returns the one that did (it is then down); the point is disarmed on the others.
async fn arm_and_wait(ctx: &Ctx, ids: &[usize], arm: Arm, max: Duration) -> Option<usize> {
    for i in ids {
        ctx.slots[*i].st().armed = Some(arm);
    }
    let hit = || {
        ids.iter()
            .copied()
            .find(|i| ctx.slots[*i].st().armed.is_none())
    };
    wait_for(&ctx.world, max, || hit().is_some()).await;
    let found = hit();
    for i in ids {
        ctx.slots[*i].st().armed = None;
    }
    if found.is_none() {
        let names: Vec<&str> = ids.iter().map(|i| ctx.slots[*i].name.as_str()).collect();
        ctx.world.event(
            "crashpoint_missed",
            format!(
                "\"node\":\"{}\",\"point\":\"{}\"",
                names.join(","),
                arm.point.name()
            ),
        );
    }
    found
}

fn restart(ctx: &Ctx, i: usize) {
    let slot = &ctx.slots[i];
    ctx.world
        .event("restart", format!("\"node\":\"{}\"", slot.name));
    madsim::runtime::Handle::current().restart(slot.id());
}

fn links_between(ctx: &Ctx, a: &[usize], b: &[usize]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if x != y {
                out.push((ctx.slots[*x].member, ctx.slots[*y].member));
                out.push((ctx.slots[*y].member, ctx.slots[*x].member));
            }
        }
    }
    out
}

/// Takes a member for a process fault, unless another one holds it.
fn take(ctx: &Ctx, i: usize) -> bool {
    let mut st = ctx.slots[i].st();
    if st.busy || st.corrupted {
        return false;
    }
    st.busy = true;
    true
}

fn release(ctx: &Ctx, i: usize) {
    ctx.slots[i].st().busy = false;
}

/// Applies one scheduled fault at its time, and undoes it at its end.
async fn run_fault(ctx: Arc<Ctx>, index: usize, f: Scheduled) {
    madsim::time::sleep(f.at).await;
    let world = ctx.world.clone();
    let n = ctx.slots.len();
    let all: Vec<usize> = (0..n).collect();
    world.event(
        "fault",
        format!(
            "\"index\":{index},\"fault\":{}",
            serde_json::Value::String(format!("{:?}", f.fault))
        ),
    );
    match f.fault.clone() {
        Fault::Partition { side } => {
            let other: Vec<usize> = all.iter().copied().filter(|i| !side.contains(i)).collect();
            let links = links_between(&ctx, &side, &other);
            world.block(&links);
            madsim::time::sleep(f.dur).await;
            world.unblock(&links);
        }
        Fault::IsolateLeader => {
            let Some(leader) = world.leader() else { return };
            let Some(li) = ctx.slots.iter().position(|s| s.member == leader) else {
                return;
            };
            let other: Vec<usize> = all.iter().copied().filter(|i| *i != li).collect();
            let links = links_between(&ctx, &[li], &other);
            world.block(&links);
            madsim::time::sleep(f.dur).await;
            world.unblock(&links);
        }
        Fault::Bridge { left, right, .. } => {
            let links = links_between(&ctx, &left, &right);
            world.block(&links);
            madsim::time::sleep(f.dur).await;
            world.unblock(&links);
        }
        Fault::OneWay { from, to } => {
            let links = vec![(ctx.slots[from].member, ctx.slots[to].member)];
            world.block(&links);
            madsim::time::sleep(f.dur).await;
            world.unblock(&links);
        }
        Fault::Clog { links, release } => {
            let links: Vec<(u64, u64)> = links
                .iter()
                .map(|(a, b)| (ctx.slots[*a].member, ctx.slots[*b].member))
                .collect();
            let step = f.dur / (2 * links.len() as u32).max(1);
            for l in &links {
                world.block(std::slice::from_ref(l));
                madsim::time::sleep(step).await;
            }
            for r in release {
                world.unblock(std::slice::from_ref(&links[r]));
                madsim::time::sleep(step).await;
            }
        }
        Fault::Lossy {
            loss_ppm,
            dup_ppm,
            delay_max_ms,
        } => {
            world.set_faults(|nf| {
                nf.loss_ppm = loss_ppm;
                nf.dup_ppm = dup_ppm;
                nf.delay_max = Duration::from_millis(delay_max_ms);
            });
            madsim::time::sleep(f.dur).await;
            world.set_faults(|nf| {
                nf.loss_ppm = 0;
                nf.dup_ppm = 0;
                nf.delay_max = Duration::from_millis(5);
            });
        }
        Fault::Kill { node, torn } => {
            if !take(&ctx, node) {
                return;
            }
            kill(&ctx, node, torn);
            madsim::time::sleep(f.dur).await;
            restart(&ctx, node);
            release(&ctx, node);
        }
        Fault::PowerFailAll { torn, restart_ms } => {
            let taken: Vec<usize> = all.iter().copied().filter(|i| take(&ctx, *i)).collect();
            for i in &taken {
                kill(&ctx, *i, torn);
            }
            let mut order: Vec<(u64, usize)> = taken.iter().map(|i| (restart_ms[*i], *i)).collect();
            order.sort();
            let mut elapsed = 0;
            for (ms, i) in order {
                madsim::time::sleep(Duration::from_millis(ms - elapsed)).await;
                elapsed = ms;
                restart(&ctx, i);
                release(&ctx, i);
            }
        }
        Fault::Pause { node } => {
            if !take(&ctx, node) {
                return;
            }
            let h = madsim::runtime::Handle::current();
            h.pause(ctx.slots[node].id());
            madsim::time::sleep(f.dur).await;
            h.resume(ctx.slots[node].id());
            world.event("resume", format!("\"node\":\"{}\"", ctx.slots[node].name));
            release(&ctx, node);
        }
        Fault::ClockJump { node, ms } => ctx.slots[node].skew.jump(Duration::from_millis(ms)),
        Fault::ClockRate { node, ppm } => {
            ctx.slots[node].skew.rate_ppm.store(ppm, Ordering::Relaxed);
            madsim::time::sleep(f.dur).await;
            ctx.slots[node]
                .skew
                .rate_ppm
                .store(1_000_000, Ordering::Relaxed);
        }
        Fault::FsyncFail { node } => {
            if !take(&ctx, node) {
                return;
            }
            let slot = &ctx.slots[node];
            slot.st().expect_stop = true;
            slot.disk.fail_next_syncs(1);
            madsim::time::sleep(f.dur).await;
            let stopped = !slot.st().up;
            if stopped {
                // The node stopped at the failed fsync; what it wrote may be partly on disk.
                kill(&ctx, node, true);
                restart(&ctx, node);
            } else {
                slot.disk.fail_next_syncs(0);
            }
            slot.st().expect_stop = false;
            release(&ctx, node);
        }
        Fault::BitFlip { node } => {
            if !take(&ctx, node) {
                return;
            }
            let started = world.now();
            // Best: crash right after a WAL sync that left entries the backend has not applied,
            // and damage one of them. Failing that within half the fault, crash now and damage
            // what there is.
            let arm = Arm {
                point: Point::AfterWalSync,
                torn: false,
                flip: true,
            };
            if arm_and_wait(&ctx, &[node], arm, f.dur / 2).await.is_none() {
                let applied = {
                    let g = world.lock();
                    g.status
                        .get(&ctx.slots[node].member)
                        .map_or(0, |o| o.applied)
                };
                kill(&ctx, node, false);
                let flip = {
                    let mut rng = ctx.rng.lock().expect("rng lock");
                    ctx.slots[node].disk.flip_wal(&mut rng, applied, false)
                };
                if let Some(flip) = flip {
                    record_flip(&ctx, node, &flip);
                }
            }
            madsim::time::sleep(f.dur.saturating_sub(world.now() - started)).await;
            restart(&ctx, node);
            release(&ctx, node);
        }
        Fault::CrashAt { node, point, torn } => {
            let candidates: Vec<usize> = match node {
                Some(i) => vec![i],
                None => all.clone(),
            };
            let taken: Vec<usize> = candidates.into_iter().filter(|i| take(&ctx, *i)).collect();
            if taken.is_empty() {
                return;
            }
            let started = world.now();
            let arm = Arm {
                point,
                torn,
                flip: false,
            };
            let hit = arm_and_wait(&ctx, &taken, arm, f.dur).await;
            for i in &taken {
                if Some(*i) != hit {
                    release(&ctx, *i);
                }
            }
            if let Some(i) = hit {
                let rest = f.dur.saturating_sub(world.now() - started);
                madsim::time::sleep(rest.max(Duration::from_millis(100))).await;
                restart(&ctx, i);
                release(&ctx, i);
            }
        }
        Fault::DiskFull { node, slack } => {
            if !take(&ctx, node) {
                return;
            }
            let slot = &ctx.slots[node];
            slot.st().expect_stop = true;
            slot.disk.set_full(Some(slack));
            madsim::time::sleep(f.dur).await;
            slot.disk.set_full(None);
            let stopped = !slot.st().up;
            if stopped {
                // The node stopped at a failed write (as etcd exits on a WAL error); what it
                // wrote since its last sync may be partly on disk.
                kill(&ctx, node, true);
                restart(&ctx, node);
            }
            slot.st().expect_stop = false;
            release(&ctx, node);
        }
    }
    world.event("fault_end", format!("\"index\":{index}"));
}

async fn wait_for(world: &World, max: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = world.now();
    while world.now() - start < max {
        if f() {
            return true;
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

type Snapshot = (i64, Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)>);

/// A member's whole keyspace as a serializable read sees it (local state, no raft round).
async fn snapshot_of(url: &str) -> Option<Snapshot> {
    let fut = async {
        let mut c = KvClient::connect(url.to_string()).await.ok()?;
        let r = c
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                serializable: true,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        let rev = r.header.map(|h| h.revision).unwrap_or(0);
        Some((
            rev,
            r.kvs
                .into_iter()
                .map(|kv| {
                    (
                        kv.key,
                        kv.value,
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                    )
                })
                .collect(),
        ))
    };
    madsim::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// Applied entries between log compactions for a seed's members.
fn snapshot_count(seed: u64) -> u64 {
    let mut rng = SplitMix64::new(seed ^ 0x736e_6170_7368_6f74);
    [100_000, 100_000, 200, 50][rng.range(0, 4) as usize]
}

async fn scenario(opts: RunOptions, base: PathBuf, report: Arc<Mutex<Report>>) {
    let handle = madsim::runtime::Handle::current();
    let n = opts.nodes;
    let mut rng = SplitMix64::new(opts.seed ^ 0x5357_4152_4d00);
    let swarm = Swarm::draw(&mut rng, n);
    let chaos = opts.chaos;
    let mut schedule = swarm.schedule(&mut rng, n, chaos);
    if let Some(keep) = &opts.keep_faults {
        schedule = schedule
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, s)| s)
            .collect();
    }
    {
        let mut r = report.lock().expect("report lock");
        r.schedule = schedule.clone();
        r.swarm = format!("{:?} every ~{}ms", swarm.kinds, swarm.gap_mean_ms);
    }

    let mut members = Vec::new();
    let mut names = BTreeMap::new();
    for i in 0..n {
        let ip = Ipv4Addr::new(10, 0, 0, i as u8 + 1);
        let url = format!("http://{ip}:2380");
        let id = cairn::config::member_id(std::slice::from_ref(&url), CLUSTER_TOKEN);
        names.insert(id, format!("n{}", i + 1));
        members.push(InitialMember {
            id,
            name: format!("n{}", i + 1),
            peer_urls: vec![url],
        });
    }
    let cluster_id = cairn::config::cluster_id(&members);
    let router = handle
        .create_node()
        .name("net")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1)))
        .build();
    let world = World::new(
        opts.seed,
        router,
        names,
        opts.trace,
        base.display().to_string(),
    );
    world.set_faults(|nf| nf.dup_proposals = opts.dup_proposals);
    let mut slots = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let ip = Ipv4Addr::new(10, 0, 0, i as u8 + 1);
        // Clocks start skewed: up to 2 s of offset and 1% of drift either way.
        let skew = Skew::new(
            Duration::from_millis(rng.range(0, 2000)),
            rng.range(990_000, 1_010_001),
        );
        let cfg = ServerConfig {
            name: m.name.clone(),
            data_dir: base.join(&m.name),
            member_id: m.id,
            cluster_id,
            initial_cluster: members.clone(),
            client_urls: vec![format!("http://{ip}:{CLIENT_PORT}")],
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            // Most seeds never compact; some compact often, so that followers that fell behind
            // need snapshots (and the snapshot and compaction crash points are reached). A
            // stream of its own, so the other draws of a seed do not move.
            snapshot_count: snapshot_count(opts.seed),
            max_request_bytes: cairn::config::MAX_REQUEST_BYTES_DEFAULT,
            max_txn_ops: 128,
            quota_backend_bytes: 64 * 1024 * 1024,
            join_existing: false,
        };
        slots.push(Slot {
            name: m.name.clone(),
            member: m.id,
            ip,
            disk: SimDisk::new(),
            skew,
            cfg,
            madsim_id: Mutex::new(None),
            state: Mutex::new(SlotState::default()),
        });
    }
    let ctx = Arc::new(Ctx {
        seed: opts.seed,
        world: world.clone(),
        slots,
        rng: Mutex::new(SplitMix64::new(opts.seed ^ 0xd15c)),
    });
    install_crash_handler(&ctx);
    for i in 0..n {
        let c = ctx.clone();
        let node = handle
            .create_node()
            .name(ctx.slots[i].name.clone())
            .ip(IpAddr::V4(ctx.slots[i].ip))
            .init(move || member_main(c.clone(), i))
            .build();
        *ctx.slots[i].madsim_id.lock().expect("slot lock") = Some(node.id());
    }
    let endpoints: Vec<Endpoint> = ctx
        .slots
        .iter()
        .map(|s| Endpoint {
            name: s.name.clone(),
            url: format!("http://{}:{CLIENT_PORT}", s.ip),
        })
        .collect();

    // The supervisor has no network identity: the rest runs on a control host that does.
    let control = handle
        .create_node()
        .name("control")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)))
        .build();
    let task = control.spawn(control_main(
        opts, ctx, world, endpoints, schedule, rng, report,
    ));
    task.await.expect("control task");
}

#[allow(clippy::too_many_arguments)]
async fn control_main(
    opts: RunOptions,
    ctx: Arc<Ctx>,
    world: Arc<World>,
    endpoints: Vec<Endpoint>,
    schedule: Vec<Scheduled>,
    mut rng: SplitMix64,
    report: Arc<Mutex<Report>>,
) {
    let handle = madsim::runtime::Handle::current();
    let n = opts.nodes;
    let chaos = opts.chaos;
    if !wait_for(&world, Duration::from_secs(15), || world.leader().is_some()).await {
        world.fail("no leader within 15 s of start".into());
    }

    // The workload and the nemesis run together for the chaos phase.
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = rng.range(2, 6) as usize;
    let wcfg = WorkloadConfig {
        keys: rng.range(1, 6) as usize,
        timeout: Duration::from_millis(rng.range(500, 3000)),
        think_max: Duration::from_millis([10, 50, 200][rng.range(0, 3) as usize]),
        weights: [3, 3, 1, 1, 2],
    };
    let mut client_tasks = Vec::new();
    for c in 0..clients {
        let host = handle
            .create_node()
            .name(format!("client{c}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, c as u8 + 1)))
            .build();
        client_tasks.push(host.spawn(workload::client(
            world.clone(),
            history.clone(),
            endpoints.clone(),
            wcfg.clone(),
            c,
            opts.seed ^ ((c as u64 + 1) << 48),
            stop.clone(),
        )));
    }
    let faults: Vec<_> = schedule
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, f)| madsim::task::spawn(run_fault(ctx.clone(), i, f)))
        .collect();
    madsim::time::sleep(chaos).await;
    for f in faults {
        let _ = f.await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in client_tasks {
        let _ = c.await;
    }

    // Heal: the network is whole again and every member that should run, runs.
    world.event("heal", String::new());
    world.set_faults(|nf| {
        nf.blocked.clear();
        nf.loss_ppm = 0;
        nf.dup_ppm = 0;
        nf.delay_max = Duration::from_millis(5);
    });
    for (i, s) in ctx.slots.iter().enumerate() {
        let (up, corrupted) = {
            let st = s.st();
            (st.up, st.corrupted)
        };
        if !up && !corrupted {
            restart(&ctx, i);
        }
    }
    let live = |ctx: &Ctx| -> Vec<usize> { (0..n).filter(|i| ctx.slots[*i].st().up).collect() };

    let mut converged = true;
    if !wait_for(&world, HEAL_LEADER_MAX, || world.leader().is_some()).await {
        world.fail(format!(
            "no leader within {HEAL_LEADER_MAX:?} after healing"
        ));
        converged = false;
    }
    if converged {
        let start = world.now();
        let mut ok = false;
        let mut k = 0;
        while world.now() - start < HEAL_WRITE_MAX {
            let ep = &endpoints[k % endpoints.len()];
            k += 1;
            let kind = OpKind::Put {
                key: "heal".into(),
                value: format!("heal-{k}"),
            };
            if let Outcome::Ok(_) = workload::call(&ep.url, &kind, Duration::from_secs(2)).await {
                ok = true;
                break;
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        if !ok {
            world.fail(format!(
                "no write committed within {HEAL_WRITE_MAX:?} after healing"
            ));
            converged = false;
        }
    }
    let mut final_snapshot: Option<Snapshot> = None;
    if converged {
        // Every live member reaches the same applied index and the same keyspace.
        let start = world.now();
        let mut last_diff = String::new();
        let mut equal = false;
        while world.now() - start < HEAL_CONVERGE_MAX {
            let ids = live(&ctx);
            let applied: BTreeSet<u64> = {
                let g = world.lock();
                ids.iter()
                    .map(|i| g.status.get(&ctx.slots[*i].member).map_or(0, |o| o.applied))
                    .collect()
            };
            if applied.len() == 1 {
                let mut snaps = Vec::new();
                for i in &ids {
                    snaps.push((
                        ctx.slots[*i].name.clone(),
                        snapshot_of(&endpoints[*i].url).await,
                    ));
                }
                let first = snaps[0].1.clone();
                if first.is_some() && snaps.iter().all(|(_, s)| *s == first) {
                    equal = true;
                    final_snapshot = first;
                    break;
                }
                last_diff = snaps
                    .iter()
                    .map(|(name, s)| match s {
                        Some((rev, kvs)) => format!("{name}: rev {rev}, {} keys", kvs.len()),
                        None => format!("{name}: no answer"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            } else {
                last_diff = format!("applied indexes differ: {applied:?}");
            }
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
        if !equal {
            world.fail(format!(
                "live members did not converge within {HEAL_CONVERGE_MAX:?}: {last_diff}"
            ));
        }
    }

    // Final linearizable reads join the history: lost acknowledged writes show up there.
    let mut final_state = BTreeMap::new();
    if converged {
        for k in 0..wcfg.keys {
            let key = format!("k{k}");
            workload::final_read(&world, &history, &endpoints, &key, Duration::from_secs(10)).await;
        }
        let ops = history.finish();
        for op in ops.iter().filter(|o| o.client == usize::MAX) {
            if let Outcome::Ok(OpResult::Get { kv, .. }) = &op.outcome {
                final_state.insert(op.kind.key().to_string(), kv.clone());
            }
        }
    }
    let ops: Vec<Op> = history.finish();

    // Judge.
    let mut failures = Vec::new();
    {
        let g = world.lock();
        for (term, leaders) in &g.leaders {
            if leaders.len() > 1 {
                let names: Vec<String> = leaders.iter().map(|l| world.name(*l)).collect();
                failures.push(format!(
                    "election safety: {} leaders in term {term}: {}",
                    leaders.len(),
                    names.join(", ")
                ));
            }
        }
        failures.extend(g.failures.iter().cloned());
    }
    let verdict = checker::check(&ops);
    failures.extend(
        verdict
            .violations
            .iter()
            .map(|v| format!("linearizability: {v}")),
    );
    if let Some((rev, _)) = &final_snapshot {
        failures.extend(
            checker::check_durability(&ops, &final_state, *rev)
                .into_iter()
                .map(|v| format!("durability: {v}")),
        );
    }
    let mut hash = FNV_OFFSET;
    for op in &ops {
        hash = crate::world::fnv(hash, format!("{op:?}").as_bytes());
    }
    let g = world.lock();
    hash = crate::world::fnv(hash, &g.hash.to_le_bytes());
    let mut r = report.lock().expect("report lock");
    r.failures = failures;
    r.inconclusive = verdict.inconclusive;
    r.hash = hash;
    r.ops = ops.len();
    r.sim_time = world.now();
    if opts.trace {
        r.trace = g.trace.clone();
    }
}
