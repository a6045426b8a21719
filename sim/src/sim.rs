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
use crate::history::{MemberOp, WatchLog};
use crate::leases::LeaseHistory;
use crate::nemesis::{Fault, Scheduled, Swarm};
use crate::watcher::WatchControl;
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
    /// Removed from the cluster by a membership change: it never starts again.
    retired: bool,
    /// Its removal was requested: stopping because it learned of it is the right reaction.
    removing: bool,
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

/// The files under `dir` this process holds open (Linux's `/proc/self/fd`; none elsewhere), by
/// path, sorted.
fn open_files_under(dir: &std::path::Path) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    // With the separator: another run's dir may share this one's name as a prefix.
    let prefix = format!("{}/", dir.to_string_lossy());
    let mut open: Vec<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with(&prefix))
        .collect();
    open.sort();
    open
}

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
    // The runtime is gone: every task, and with it every LMDB environment, is dropped. A file of
    // the run still open now is a leak that a long sweep pays for in the end ("Too many open
    // files"), so the run that leaves one fails.
    let still_open = open_files_under(&base);
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
    if !still_open.is_empty() {
        report.failures.push(format!(
            "the run left {} file(s) open after its runtime was dropped, e.g. {}",
            still_open.len(),
            still_open[0]
        ));
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
    if slot.st().retired {
        return;
    }
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
    let (expected, removing) = {
        let st = slot.st();
        (st.expect_stop, st.removing)
    };
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
            // A member whose removal was asked for stops when it applies it.
            let removed = removing && matches!(e, cairn::raft::NodeError::Removed);
            if !expected && !removed {
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

/// Applied entries the log keeps behind each compaction for a seed's members: etcd's 5,000 for a
/// quarter of the seeds (a compacting seed then rarely needs a snapshot), fewer for the rest so
/// that snapshots are still sent, and followers a few entries behind a compaction are sent
/// entries. A stream of its own, like [`snapshot_count`].
fn snapshot_catch_up_entries(seed: u64) -> u64 {
    let mut rng = SplitMix64::new(seed ^ 0x6361_7463_6875_7000);
    [cairn::raft::SNAPSHOT_CATCH_UP_ENTRIES, 0, 10, 30][rng.range(0, 4) as usize]
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
            auto_compaction: None,
            wal_dir: None,
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
            snapshot_catch_up_entries: snapshot_catch_up_entries(opts.seed),
            max_request_bytes: cairn::config::MAX_REQUEST_BYTES_DEFAULT,
            max_txn_ops: 128,
            quota_backend_bytes: 64 * 1024 * 1024,
            strict_reconfig_check: true,
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
        world.host_created(node.id());
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
    let hosts = world.clone();
    let task = control.spawn(control_main(
        opts, ctx, world, endpoints, schedule, rng, report,
    ));
    task.await.expect("control task");
    // Dropping the runtime drops only the tasks that are ready to run: a task parked on a waker
    // that it (or another parked task) owns is never freed, and with it the member's LMDB
    // environment and its files stay open for the life of the process (eight or nine descriptors a
    // seed, until a long sweep runs out). A killed node's tasks are woken and dropped at once, so
    // kill every member before the run ends and give the executor a step to drop them.
    // Members added during the run are known only now.
    for id in hosts.hosts().into_iter().chain([control.id()]) {
        handle.kill(id);
    }
    madsim::time::sleep(Duration::from_millis(1)).await;
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
    // Watches, leases and membership changes, drawn per seed from their own stream so that the
    // draws above (the KV workload's parameters and the fault schedule) stay as they were.
    let mut xrng = SplitMix64::new(opts.seed ^ 0x5752_4b4c_4f41_4400);
    let extras = Extras::draw(&mut xrng, wcfg.keys, n);
    world.event(
        "workload",
        format!(
            "\"clients\":{clients},\"keys\":{},\"watches\":{},\"lease_clients\":{},\"membership\":{},\"replace\":\"{:?}\",\"compact\":{}",
            wcfg.keys,
            serde_json::Value::String(format!("{:?}", extras.watches)),
            extras.lease_clients,
            extras.membership,
            extras.replace,
            extras.compact
        ),
    );
    report.lock().expect("report lock").swarm.push_str(&format!(
        "; {} KV clients over {} keys, watches {:?}, {} lease clients, membership cycle: {} (replacing member index {:?}), compaction: {}",
        clients,
        wcfg.keys,
        extras.watches,
        extras.lease_clients,
        extras.membership,
        extras.replace,
        extras.compact
    ));
    // The current members' endpoints, kept up to date by the membership cycle (as an etcd
    // client's endpoint sync would): watchers, the membership client and the checks after the
    // heal use it; the KV and lease clients keep the original list.
    let current: Arc<Mutex<Vec<Endpoint>>> = Arc::new(Mutex::new(endpoints.clone()));
    let watch_control = Arc::new(WatchControl::default());
    let mut watch_logs = Vec::new();
    let mut watch_tasks = Vec::new();
    for (w, (key, range_end, start)) in extras.watches.iter().enumerate() {
        let host = handle
            .create_node()
            .name(format!("watcher{w}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, w as u8 + 1)))
            .build();
        let log = Arc::new(Mutex::new(WatchLog {
            watcher: w,
            key: key.clone(),
            range_end: range_end.clone(),
            segments: Vec::new(),
        }));
        watch_logs.push(log.clone());
        watch_tasks.push(host.spawn(crate::watcher::watcher(
            world.clone(),
            current.clone(),
            log,
            *start,
            opts.seed ^ 0x7761_7463_6800 ^ ((w as u64 + 1) << 40),
            watch_control.clone(),
        )));
    }
    let lease_history = Arc::new(LeaseHistory::default());
    for c in 0..extras.lease_clients {
        let host = handle
            .create_node()
            .name(format!("leaser{c}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 4, c as u8 + 1)))
            .build();
        client_tasks.push(host.spawn(crate::leases::client(
            world.clone(),
            lease_history.clone(),
            endpoints.clone(),
            c,
            opts.seed ^ 0x6c65_6173_6500 ^ ((c as u64 + 1) << 40),
            wcfg.timeout,
            stop.clone(),
        )));
    }
    if extras.compact {
        let host = handle
            .create_node()
            .name("compactor")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 5, 1)))
            .build();
        client_tasks.push(host.spawn(compactor(
            world.clone(),
            endpoints.clone(),
            opts.seed ^ 0x636f_6d70_6163_7400,
            stop.clone(),
        )));
    }
    let member_log: Arc<Mutex<Vec<MemberOp>>> = Arc::default();
    let member_abort = Arc::new(AtomicBool::new(false));
    let member_done = Arc::new(AtomicBool::new(false));
    let membership = extras.membership.then(|| {
        let delay = Duration::from_millis(xrng.range(0, chaos.as_millis() as u64 / 2 + 1));
        let fut = membership_cycle(
            ctx.clone(),
            current.clone(),
            ctx.slots[0].cfg.cluster_id,
            opts.seed ^ 0x6d65_6d62_6572,
            delay,
            extras.replace,
            member_log.clone(),
            member_abort.clone(),
        );
        let done = member_done.clone();
        madsim::task::spawn(async move {
            let outcome = fut.await;
            done.store(true, Ordering::Relaxed);
            outcome
        })
    });
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
    // A membership cycle still running finishes now, so the cluster is back to its nominal size.
    let mut membership_ok = true;
    let mut joined: Option<Arc<Ctx>> = None;
    let mut retired: Option<usize> = None;
    if let Some(task) = membership {
        wait_for(&world, MEMBERSHIP_AFTER_HEAL_MAX, || {
            member_done.load(Ordering::Relaxed)
        })
        .await;
        member_abort.store(true, Ordering::Relaxed);
        let outcome = task.await.unwrap_or_default();
        membership_ok = outcome.completed;
        joined = outcome.joined;
        retired = outcome.retired;
        if !membership_ok {
            world.fail(format!(
                "membership: the add-learner/promote/remove cycle did not complete within {MEMBERSHIP_AFTER_HEAL_MAX:?} after healing"
            ));
        }
    }
    let original_endpoints = endpoints.clone();
    let endpoints: Vec<Endpoint> = current.lock().expect("endpoints").clone();
    // The current members that run: (name, member id, client URL).
    let live = |ctx: &Ctx| -> Vec<(String, u64, String)> {
        let mut out: Vec<(String, u64, String)> = (0..n)
            .filter(|i| Some(*i) != retired && ctx.slots[*i].st().up)
            .map(|i| {
                let s = &ctx.slots[i];
                (s.name.clone(), s.member, original_endpoints[i].url.clone())
            })
            .collect();
        if let Some(j) = &joined {
            let s = &j.slots[0];
            if s.st().up {
                out.push((
                    s.name.clone(),
                    s.member,
                    format!("http://{}:{CLIENT_PORT}", s.ip),
                ));
            }
        }
        out
    };
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
                    .map(|(_, member, _)| g.status.get(member).map_or(0, |o| o.applied))
                    .collect()
            };
            if applied.len() == 1 {
                let mut snaps = Vec::new();
                for (name, _, url) in &ids {
                    snaps.push((name.clone(), snapshot_of(url).await));
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

    // Leases: once nobody keeps them alive, every leased key goes, on every member.
    let mut extra_failures = Vec::new();
    if converged && extras.lease_clients > 0 {
        let start = world.now();
        let mut left = None;
        let mut k = 0;
        while world.now() - start < LEASE_EXPIRY_MAX {
            k += 1;
            left = leased_keys(&endpoints[k % endpoints.len()].url, true).await;
            if left.as_ref().is_some_and(|l| l.is_empty()) {
                break;
            }
            madsim::time::sleep(Duration::from_millis(500)).await;
        }
        if !left.as_ref().is_some_and(|l| l.is_empty()) {
            extra_failures.push(format!(
                "lease: leased keys still present {LEASE_EXPIRY_MAX:?} after the workload stopped: {left:?}"
            ));
        } else {
            // Every live member applies the expiries too.
            let start = world.now();
            let mut last = Vec::new();
            while world.now() - start < HEAL_CONVERGE_MAX {
                last.clear();
                for (name, _, url) in live(&ctx) {
                    let l = leased_keys(&url, false).await;
                    if !l.as_ref().is_some_and(|l| l.is_empty()) {
                        last.push(format!("{name}: {l:?}"));
                    }
                }
                if last.is_empty() {
                    break;
                }
                madsim::time::sleep(Duration::from_millis(200)).await;
            }
            if !last.is_empty() {
                extra_failures.push(format!(
                    "lease: expired leases' keys still on members: {}",
                    last.join("; ")
                ));
            }
        }
    }
    // Membership: every answer to a change carries the list after the change, and every live
    // member lists what the acknowledged changes imply, all voters: the original members, with
    // the replaced one swapped for the new one if the cycle replaced a member.
    extra_failures.extend(
        checker::check_member_ops(&member_log.lock().expect("member log"))
            .into_iter()
            .map(|v| format!("membership: {v}")),
    );
    if converged && membership_ok {
        let mut expected: Vec<(u64, bool)> = ctx
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != retired)
            .map(|(_, s)| (s.member, false))
            .collect();
        if let Some(j) = &joined {
            expected.push((j.slots[0].member, false));
        }
        let lists = member_lists(&world, &live(&ctx)).await;
        extra_failures.extend(
            checker::check_members(&lists, &expected)
                .into_iter()
                .map(|v| format!("membership: {v}")),
        );
    }
    // Watches: every watcher catches up with the converged revision, then one reference watch
    // from revision 1 reads the whole committed history to judge them by.
    let mut watch_logs_done: Vec<WatchLog> = Vec::new();
    if !watch_tasks.is_empty() {
        if let Some((rev, _)) = &final_snapshot {
            watch_control.target.store(*rev, Ordering::Relaxed);
            let start = world.now();
            while world.now() - start < WATCH_CATCH_UP_MAX
                && watch_logs.iter().any(|l| {
                    let l = l.lock().expect("watch log");
                    l.segments.last().map_or(0, |s| s.covered_to()) < *rev
                })
            {
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
        }
        watch_control.give_up.store(true, Ordering::Relaxed);
        for t in watch_tasks {
            let _ = t.await;
        }
        watch_logs_done = watch_logs
            .iter()
            .map(|l| l.lock().expect("watch log").clone())
            .collect();
        if let Some((rev, kvs)) = &final_snapshot {
            for l in &watch_logs_done {
                let covered = l.segments.last().map_or(0, |s| s.covered_to());
                if covered < *rev {
                    extra_failures.push(format!(
                        "watch: watcher {} delivered only up to revision {covered}, not the converged {rev}, {WATCH_CATCH_UP_MAX:?} after healing ({} streams)",
                        l.watcher,
                        l.segments.len()
                    ));
                }
            }
            let upto = watch_logs_done
                .iter()
                .flat_map(|l| l.segments.iter().map(|s| s.delivered_to()))
                .max()
                .unwrap_or(0)
                .max(*rev);
            let reference_log = Arc::new(Mutex::new(WatchLog {
                watcher: usize::MAX,
                key: "\0".into(),
                range_end: "\0".into(),
                segments: Vec::new(),
            }));
            let control = Arc::new(WatchControl::default());
            control.target.store(upto, Ordering::Relaxed);
            let host = handle
                .create_node()
                .name("reference-watch")
                .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 200)))
                .build();
            let task = host.spawn(crate::watcher::watcher(
                world.clone(),
                current.clone(),
                reference_log.clone(),
                1,
                opts.seed ^ 0x7265_6600,
                control.clone(),
            ));
            wait_for(&world, WATCH_CATCH_UP_MAX, || {
                reference_log
                    .lock()
                    .expect("watch log")
                    .segments
                    .last()
                    .map_or(0, |s| s.covered_to())
                    >= upto
            })
            .await;
            control.give_up.store(true, Ordering::Relaxed);
            let _ = task.await;
            let reference_log = reference_log.lock().expect("watch log").clone();
            let reference_hi = reference_log.segments.last().map_or(0, |s| s.covered_to());
            // After a compaction the reference resumed at the floor F. Compaction keeps
            // revision F readable but drops a tombstone at F (as etcd's key index does), so a
            // watch from F may lack a delete at F: judge events from F + 1 on, on top of the
            // keyspace read at F.
            let floor = reference_log
                .segments
                .windows(2)
                .filter(|w| matches!(w[0].end, crate::history::SegmentEnd::Compacted(_)))
                .map(|w| w[1].start_rev)
                .max()
                .unwrap_or(1);
            let reference_from = if floor > 1 { floor + 1 } else { 1 };
            let mut base: Vec<checker::FinalKv> = Vec::new();
            if floor > 1 {
                let mut read = None;
                for ep in &endpoints {
                    read = keyspace_at(&ep.url, floor).await;
                    if read.is_some() {
                        break;
                    }
                }
                match read {
                    Some(kvs) => base = kvs,
                    None => extra_failures.push(format!(
                        "watch: cannot read the keyspace at the compaction floor {floor}"
                    )),
                }
            }
            // The reference is a watch like the others: judge its own order and continuity
            // against itself, then against the acknowledged writes and the converged keyspace.
            let reference: Vec<_> = reference_log
                .segments
                .iter()
                .flat_map(|s| s.events.iter().cloned())
                .filter(|e| e.rev >= reference_from)
                .collect();
            if reference_hi < upto {
                extra_failures.push(format!(
                    "watch: the reference watch from revision 1 covered only up to {reference_hi}, not {upto}"
                ));
            }
            let lease_ops = lease_history.finish();
            let fin: Vec<checker::FinalKv> = kvs
                .iter()
                .map(|(k, v, c, m, ver)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                        *c,
                        *m,
                        *ver,
                    )
                })
                .collect();
            let mut v = checker::check_watches(
                std::slice::from_ref(&reference_log),
                &reference,
                reference_from,
                reference_hi,
            );
            v.extend(checker::check_reference(
                &reference,
                reference_hi,
                &ops,
                &lease_ops,
                (if floor > 1 { floor } else { 1 }, &base),
                Some((*rev, &fin)),
            ));
            v.extend(checker::check_watches(
                &watch_logs_done,
                &reference,
                reference_from,
                reference_hi,
            ));
            extra_failures.extend(v.into_iter().map(|m| format!("watch: {m}")));
        }
    }
    let lease_ops = lease_history.finish();
    extra_failures.extend(
        checker::check_leases(&lease_ops)
            .into_iter()
            .map(|v| format!("lease: {v}")),
    );

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
    failures.extend(extra_failures);
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
    for op in &lease_ops {
        hash = crate::world::fnv(hash, format!("{op:?}").as_bytes());
    }
    for l in &watch_logs_done {
        hash = crate::world::fnv(hash, format!("{l:?}").as_bytes());
    }
    for op in member_log.lock().expect("member log").iter() {
        hash = crate::world::fnv(hash, format!("{op:?}").as_bytes());
    }
    let g = world.lock();
    hash = crate::world::fnv(hash, &g.hash.to_le_bytes());
    let mut r = report.lock().expect("report lock");
    r.failures = failures;
    r.inconclusive = verdict.inconclusive;
    r.hash = hash;
    r.ops = ops.len() + lease_ops.len();
    r.sim_time = world.now();
    if opts.trace {
        r.trace = g.trace.clone();
    }
}

/// The workload parts drawn per seed on top of the KV clients (swarm style: each seed has some,
/// so the other checkers keep their power on seeds without them).
#[derive(Debug, Clone)]
struct Extras {
    /// Per watcher: key, range_end, start revision (0: from now).
    watches: Vec<(String, String, i64)>,
    lease_clients: usize,
    /// Add a learner, promote it, remove it, while the faults run.
    membership: bool,
    /// A client compacts the history every few seconds (watchers then see compacted cancels).
    compact: bool,
    /// The membership cycle replaces this original member by the new one instead of removing
    /// the new one again.
    replace: Option<usize>,
}

impl Extras {
    fn draw(rng: &mut SplitMix64, keys: usize, nodes: usize) -> Extras {
        let watchers = if rng.range(0, 3) == 0 {
            0
        } else {
            rng.range(1, 4) as usize
        };
        let mut watches = Vec::new();
        for _ in 0..watchers {
            let (key, range_end) = match rng.range(0, 3) {
                0 => ("\0".to_string(), "\0".to_string()),
                1 => ("k".to_string(), "l".to_string()),
                _ => (format!("k{}", rng.range(0, keys as u64)), String::new()),
            };
            let start = match rng.range(0, 3) {
                0 => 0,
                1 => 1,
                _ => rng.range(1, 40) as i64,
            };
            watches.push((key, range_end, start));
        }
        let lease_clients = if rng.range(0, 2) == 0 {
            0
        } else {
            rng.range(1, 3) as usize
        };
        let membership = rng.range(0, 3) == 0;
        let compact = rng.range(0, 3) == 0;
        let replace = (rng.range(0, 2) == 0).then(|| rng.range(0, nodes as u64) as usize);
        Extras {
            watches,
            lease_clients,
            membership,
            compact,
            replace: replace.filter(|_| membership),
        }
    }
}

/// How long the heal phase waits for an unfinished membership cycle, the watchers and the leases.
const MEMBERSHIP_AFTER_HEAL_MAX: Duration = Duration::from_secs(60);
const WATCH_CATCH_UP_MAX: Duration = Duration::from_secs(20);
const LEASE_EXPIRY_MAX: Duration = Duration::from_secs(30);

/// Records a membership call in the trace and the membership log.
fn member_op(world: &World, log: &Mutex<Vec<MemberOp>>, op: MemberOp) {
    world.event(
        "member_change",
        format!(
            "\"what\":\"{}\",\"member\":\"{:x}\",\"node\":\"{}\",\"result\":{},\"members\":\"{:x?}\"",
            op.what,
            op.member,
            op.node,
            serde_json::Value::String(op.result.clone()),
            op.members
        ),
    );
    log.lock().expect("member log").push(op);
}

/// One Cluster call with a deadline: Ok(members as (id, learner, name, peer urls)) or the error.
async fn cluster_call(
    url: &str,
    what: &str,
    spare_url: &str,
    id: u64,
) -> Result<Vec<(u64, bool, String, Vec<String>)>, String> {
    use cairn::proto::etcdserverpb::cluster_client::ClusterClient;
    use cairn::proto::etcdserverpb::{
        MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    };
    let fut = async {
        let mut c = ClusterClient::connect(url.to_string())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let members = match what {
            "add-learner" => c
                .member_add(MemberAddRequest {
                    peer_ur_ls: vec![spare_url.to_string()],
                    is_learner: true,
                })
                .await
                .map(|r| r.into_inner().members),
            "promote" => c
                .member_promote(MemberPromoteRequest { id })
                .await
                .map(|r| r.into_inner().members),
            "remove" => c
                .member_remove(MemberRemoveRequest { id })
                .await
                .map(|r| r.into_inner().members),
            _ => c
                .member_list(MemberListRequest {
                    linearizable: what == "list-linearizable",
                })
                .await
                .map(|r| r.into_inner().members),
        }
        .map_err(|s| s.message().to_string())?;
        Ok(members
            .into_iter()
            .map(|m| (m.id, m.is_learner, m.name, m.peer_ur_ls))
            .collect())
    };
    madsim::time::timeout(Duration::from_secs(3), fut)
        .await
        .unwrap_or_else(|_| Err("client timeout".into()))
}

/// Adds a fresh member as a learner, starts it with an empty disk joining the running cluster,
/// promotes it, and removes it again (or, with `replace`, removes that original member
/// instead), all while the nemesis runs; each step is retried until it is acknowledged (a retry
/// after an unknown outcome may learn that the step already happened).
#[allow(clippy::too_many_arguments)]
async fn membership_cycle(
    ctx: Arc<Ctx>,
    endpoints: Arc<Mutex<Vec<Endpoint>>>,
    cluster_id: u64,
    seed: u64,
    delay: Duration,
    replace: Option<usize>,
    log: Arc<Mutex<Vec<MemberOp>>>,
    abort: Arc<AtomicBool>,
) -> MembershipOutcome {
    let world = ctx.world.clone();
    let mut rng = SplitMix64::new(seed);
    madsim::time::sleep(delay).await;
    let n = ctx.slots.len();
    let ip = Ipv4Addr::new(10, 0, 0, n as u8 + 1);
    let spare_url = format!("http://{ip}:2380");
    let name = format!("n{}", n + 1);
    let step = |what: &'static str, id: u64, rng: &mut SplitMix64| {
        let ep = {
            let eps = endpoints.lock().expect("endpoints");
            eps[rng.range(0, eps.len() as u64) as usize].clone()
        };
        let world = world.clone();
        let log = log.clone();
        let spare_url = spare_url.clone();
        async move {
            let invoke_ns = world.now().as_nanos() as u64;
            let r = cluster_call(&ep.url, what, &spare_url, id).await;
            member_op(
                &world,
                &log,
                MemberOp {
                    what: what.to_string(),
                    member: id,
                    node: ep.name.clone(),
                    invoke_ns,
                    complete_ns: world.now().as_nanos() as u64,
                    result: match &r {
                        Ok(_) => "ok".into(),
                        Err(e) => e.clone(),
                    },
                    members: match &r {
                        Ok(m) => m.iter().map(|(id, l, _, _)| (*id, *l)).collect(),
                        Err(_) => Vec::new(),
                    },
                },
            );
            r
        }
    };
    // Add as a learner; after an unknown outcome the URL may already be there.
    let mut members = None;
    let mut replaced_first: Option<usize> = None;
    while members.is_none() {
        if abort.load(Ordering::Relaxed) {
            return MembershipOutcome::default();
        }
        match step("add-learner", 0, &mut rng).await {
            Ok(m) => members = Some(m),
            Err(e) if e.contains("Peer URLs already exists") => {
                if let Ok(m) = step("list-linearizable", 0, &mut rng).await {
                    members = Some(m);
                }
            }
            Err(e) if e.contains("unhealthy cluster") && replaced_first.is_none() => {
                // The strict reconfiguration check refuses every add while a voter is down. One
                // that refused to start for good (its WAL is damaged) never comes back, so the
                // operator follows etcd's procedure for a failed member: remove it first, then
                // add its replacement (which then stays).
                let broken = (0..n).find(|i| {
                    let st = ctx.slots[*i].st();
                    st.corrupted && !st.up && !st.retired
                });
                match broken {
                    Some(r) => {
                        if !retire_original(&ctx, &endpoints, &world, r, &abort, &step, &mut rng)
                            .await
                        {
                            return MembershipOutcome::default();
                        }
                        replaced_first = Some(r);
                    }
                    None => madsim::time::sleep(Duration::from_millis(300)).await,
                }
            }
            Err(_) => madsim::time::sleep(Duration::from_millis(300)).await,
        }
    }
    let members = members.expect("added");
    let Some(spare) = members
        .iter()
        .find(|m| m.3 == [spare_url.clone()])
        .map(|m| m.0)
    else {
        world.fail(format!(
            "membership: {spare_url} was added but is not in the member list {members:?}"
        ));
        return MembershipOutcome::default();
    };
    // Start it: an empty disk, joining the running cluster.
    // The new member has no published name yet: it goes by the one it will publish.
    let initial: Vec<InitialMember> = members
        .iter()
        .map(|(id, _, published, urls)| InitialMember {
            id: *id,
            name: if *id == spare {
                name.clone()
            } else {
                published.clone()
            },
            peer_urls: urls.clone(),
        })
        .collect();
    let base = ctx.slots[0]
        .cfg
        .data_dir
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let mut cfg = ctx.slots[0].cfg.clone();
    cfg.name = name.clone();
    cfg.data_dir = base.join(&name);
    cfg.member_id = spare;
    cfg.cluster_id = cluster_id;
    cfg.initial_cluster = initial;
    cfg.client_urls = vec![format!("http://{ip}:{CLIENT_PORT}")];
    cfg.join_existing = true;
    let slot = Slot {
        name: name.clone(),
        member: spare,
        ip,
        disk: SimDisk::new(),
        skew: Skew::new(Duration::from_millis(rng.range(0, 2000)), 1_000_000),
        cfg,
        madsim_id: Mutex::new(None),
        state: Mutex::new(SlotState::default()),
    };
    let spare_ctx = Arc::new(Ctx {
        seed: ctx.seed ^ 0x5350_4152_4500,
        world: world.clone(),
        slots: vec![slot],
        rng: Mutex::new(SplitMix64::new(seed ^ 0xd15c)),
    });
    let c = spare_ctx.clone();
    let node = madsim::runtime::Handle::current()
        .create_node()
        .name(name.clone())
        .ip(IpAddr::V4(ip))
        .init(move || member_main(c.clone(), 0))
        .build();
    *spare_ctx.slots[0].madsim_id.lock().expect("slot lock") = Some(node.id());
    world.host_created(node.id());
    endpoints.lock().expect("endpoints").push(Endpoint {
        name: name.clone(),
        url: format!("http://{ip}:{CLIENT_PORT}"),
    });
    world.event(
        "member_join",
        format!("\"node\":\"{name}\",\"member\":\"{spare:x}\""),
    );
    // The nemesis's schedule covers the nominal members only; the new member gets a fault of
    // its own while it is in the cluster: a crash (maybe tearing its WAL tail) and restart from
    // its own disk, or an isolation from every other member.
    let removed = Arc::new(AtomicBool::new(false));
    let calm = Arc::new(AtomicBool::new(false));
    let spare_fault = {
        let spare_ctx = spare_ctx.clone();
        let removed = removed.clone();
        let calm = calm.clone();
        let world = world.clone();
        let others: Vec<u64> = ctx.slots.iter().map(|s| s.member).collect();
        let kind = rng.range(0, 3);
        let at = Duration::from_millis(rng.range(0, 5000));
        let dur = Duration::from_millis(rng.range(200, 3000));
        let torn = rng.range(0, 2) == 0;
        madsim::task::spawn(async move {
            madsim::time::sleep(at).await;
            if calm.load(Ordering::Relaxed) {
                return;
            }
            match kind {
                0 => {
                    world.event(
                        "spare_fault",
                        format!(
                            "\"fault\":\"kill\",\"torn\":{torn},\"ms\":{}",
                            dur.as_millis()
                        ),
                    );
                    kill(&spare_ctx, 0, torn);
                    madsim::time::sleep(dur).await;
                    if !removed.load(Ordering::Relaxed) {
                        restart(&spare_ctx, 0);
                    }
                }
                1 => {
                    world.event(
                        "spare_fault",
                        format!("\"fault\":\"isolate\",\"ms\":{}", dur.as_millis()),
                    );
                    let links: Vec<(u64, u64)> = others
                        .iter()
                        .flat_map(|o| [(spare, *o), (*o, spare)])
                        .collect();
                    world.block(&links);
                    madsim::time::sleep(dur).await;
                    world.unblock(&links);
                }
                _ => {}
            }
        })
    };
    // Promote once it has caught up (the leader refuses until then).
    madsim::time::sleep(Duration::from_millis(rng.range(500, 4000))).await;
    loop {
        if abort.load(Ordering::Relaxed) {
            return MembershipOutcome::default();
        }
        match step("promote", spare, &mut rng).await {
            Ok(_) => break,
            Err(e) if e.contains("can only promote a learner member") && !e.contains("in sync") => {
                break
            }
            Err(_) => madsim::time::sleep(Duration::from_millis(300)).await,
        }
    }
    // Remove it again, or remove the original member it replaces: the cluster goes back to its
    // nominal size.
    madsim::time::sleep(Duration::from_millis(rng.range(500, 4000))).await;
    let retired = match (replaced_first, replace) {
        (Some(r), _) => Some(r),
        (None, Some(r)) => {
            if !retire_original(&ctx, &endpoints, &world, r, &abort, &step, &mut rng).await {
                return MembershipOutcome::default();
            }
            Some(r)
        }
        (None, None) => None,
    };
    if retired.is_some() {
        calm.store(true, Ordering::Relaxed);
        let _ = spare_fault.await;
        return MembershipOutcome {
            completed: true,
            joined: Some(spare_ctx),
            retired,
        };
    }
    spare_ctx.slots[0].st().removing = true;
    loop {
        if abort.load(Ordering::Relaxed) {
            return MembershipOutcome::default();
        }
        match step("remove", spare, &mut rng).await {
            Ok(_) => break,
            Err(e) if e.contains("member not found") => break,
            Err(_) => madsim::time::sleep(Duration::from_millis(300)).await,
        }
    }
    // A removed member stops (it may not have learned it was removed: stop it, as etcd's peers
    // would by refusing its messages).
    removed.store(true, Ordering::Relaxed);
    calm.store(true, Ordering::Relaxed);
    let _ = spare_fault.await;
    await_self_stop(&spare_ctx, 0).await;
    if spare_ctx.slots[0].st().up {
        kill(&spare_ctx, 0, false);
    }
    endpoints
        .lock()
        .expect("endpoints")
        .retain(|e| e.name != name);
    world.event(
        "member_removed",
        format!("\"node\":\"{name}\",\"member\":\"{spare:x}\""),
    );
    MembershipOutcome {
        completed: true,
        joined: None,
        retired: None,
    }
}

/// How long the simulated operator gives a removed member to stop by itself before stopping it.
/// etcd's procedure is to remove a member and let it stop on its own; a removed leader stays
/// until its followers know the removal committed (at most three election timeouts, see
/// `raft::node::Leaving`). An operator that killed it at once could leave the others holding the
/// removal uncommitted, counting a voter that is gone: seed 12917 of a 10,000-seed sweep did,
/// and no leader was elected again (raft counts a removed voter until the removal is committed
/// and applied, in etcd as here).
const REMOVED_SELF_STOP_MAX: Duration = Duration::from_secs(5);

/// Waits until member `i` of `ctx` is down, or [`REMOVED_SELF_STOP_MAX`] passed.
async fn await_self_stop(ctx: &Ctx, i: usize) {
    let deadline = madsim::time::Instant::now() + REMOVED_SELF_STOP_MAX;
    while ctx.slots[i].st().up && madsim::time::Instant::now() < deadline {
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes original member `r` from the cluster for good (the membership cycle replaces it).
/// Returns false when the run was aborted first.
async fn retire_original<F, Fut>(
    ctx: &Ctx,
    endpoints: &Mutex<Vec<Endpoint>>,
    world: &World,
    r: usize,
    abort: &AtomicBool,
    step: &F,
    rng: &mut SplitMix64,
) -> bool
where
    F: Fn(&'static str, u64, &mut SplitMix64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(u64, bool, String, Vec<String>)>, String>>,
{
    let old = ctx.slots[r].member;
    // It may learn of its removal and stop: the right reaction.
    ctx.slots[r].st().removing = true;
    loop {
        if abort.load(Ordering::Relaxed) {
            return false;
        }
        match step("remove", old, rng).await {
            Ok(_) => break,
            Err(e) if e.contains("member not found") => break,
            Err(_) => madsim::time::sleep(Duration::from_millis(300)).await,
        }
    }
    {
        let mut st = ctx.slots[r].st();
        st.retired = true;
        // Nothing restarts it or takes it for a fault any more.
        st.corrupted = true;
    }
    await_self_stop(ctx, r).await;
    if ctx.slots[r].st().up {
        kill(ctx, r, false);
    }
    let gone = ctx.slots[r].name.clone();
    endpoints
        .lock()
        .expect("endpoints")
        .retain(|e| e.name != gone);
    world.event(
        "member_removed",
        format!("\"node\":\"{}\",\"member\":\"{old:x}\"", ctx.slots[r].name),
    );
    true
}

/// How a membership cycle ended: whether every step was acknowledged, the new member if it
/// stays (it replaced an original one), and the original member it replaced.
#[derive(Default)]
struct MembershipOutcome {
    completed: bool,
    joined: Option<Arc<Ctx>>,
    retired: Option<usize>,
}

/// Every live member's member list: (name, [(id, learner)]).
async fn member_lists(
    world: &World,
    live: &[(String, u64, String)],
) -> Vec<(String, Vec<(u64, bool)>)> {
    let mut out = Vec::new();
    for (name, _, url) in live {
        let list = match cluster_call(url, "list", "", 0).await {
            Ok(m) => m.into_iter().map(|(id, l, _, _)| (id, l)).collect(),
            Err(e) => {
                world.fail(format!("{name}: member list failed after healing: {e}"));
                continue;
            }
        };
        out.push((name.clone(), list));
    }
    out
}

/// Counts the leased keys a member holds (serializable: its own state) or the cluster holds
/// (linearizable).
async fn leased_keys(url: &str, linearizable: bool) -> Option<Vec<String>> {
    let fut = async {
        let mut c = KvClient::connect(url.to_string()).await.ok()?;
        let r = c
            .range(RangeRequest {
                key: crate::leases::LEASED_PREFIX.as_bytes().to_vec(),
                range_end: vec![crate::leases::LEASED_PREFIX.as_bytes()[0] + 1],
                serializable: !linearizable,
                keys_only: true,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        Some(
            r.kvs
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect(),
        )
    };
    madsim::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// Compacts the history every 1–4 s to a revision a little below the current one, until `stop`.
async fn compactor(world: Arc<World>, endpoints: Vec<Endpoint>, seed: u64, stop: Arc<AtomicBool>) {
    use cairn::proto::etcdserverpb::CompactionRequest;
    let mut rng = SplitMix64::new(seed);
    while !stop.load(Ordering::Relaxed) {
        madsim::time::sleep(Duration::from_millis(rng.range(1000, 4000))).await;
        let ep = &endpoints[rng.range(0, endpoints.len() as u64) as usize];
        let probe = OpKind::Get {
            key: "k0".into(),
            linearizable: false,
        };
        let Outcome::Ok(r) = workload::call(&ep.url, &probe, Duration::from_secs(1)).await else {
            continue;
        };
        let revision = (r.rev() - rng.range(0, 10) as i64).max(1);
        let ep = &endpoints[rng.range(0, endpoints.len() as u64) as usize];
        let fut = async {
            let mut c = KvClient::connect(ep.url.clone())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            c.compact(CompactionRequest {
                revision,
                physical: false,
            })
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
        };
        let result = madsim::time::timeout(Duration::from_secs(2), fut)
            .await
            .unwrap_or_else(|_| Err("client timeout".into()));
        world.event(
            "compact",
            format!(
                "\"node\":\"{}\",\"revision\":{revision},\"result\":{}",
                ep.name,
                serde_json::Value::String(match result {
                    Ok(()) => "ok".into(),
                    Err(e) => e,
                })
            ),
        );
    }
}

/// The whole keyspace at `revision` (a linearizable read), as the checkers' rows.
async fn keyspace_at(url: &str, revision: i64) -> Option<Vec<checker::FinalKv>> {
    let fut = async {
        let mut c = KvClient::connect(url.to_string()).await.ok()?;
        let r = c
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        Some(
            r.kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        String::from_utf8_lossy(&kv.value).into_owned(),
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                    )
                })
                .collect(),
        )
    };
    madsim::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}
