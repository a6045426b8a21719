//! `cairn-sim`: runs cairn clusters inside madsim under a nemesis and checks what clients saw.
//!
//! ```text
//! cargo sim run --seeds A..B [--nodes N] [--bug NAME] [--trace FILE] [--expect-failure]
//!               [--faults I,J,...] [--chaos-secs S] [--jobs J] [--no-shrink]
//! cargo sim bugs
//! ```
//!
//! Every seed is a fresh simulated world: the same seed replays the same run. See
//! `docs/simulation.md` for the fault model, the checkers and how to shrink a failure.

#[cfg_attr(not(madsim), allow(dead_code))]
mod checker;
#[cfg(madsim)]
mod clock;
#[cfg_attr(not(madsim), allow(dead_code))]
mod disk;
#[cfg_attr(not(madsim), allow(dead_code))]
mod history;
#[cfg(madsim)]
mod leases;
#[cfg(madsim)]
mod nemesis;
#[cfg(madsim)]
mod sim;
#[cfg(madsim)]
mod watcher;
#[cfg(madsim)]
mod workload;
#[cfg(madsim)]
mod world;

#[cfg(not(madsim))]
fn main() {
    eprintln!("cairn-sim must be built with --cfg madsim: run it as `cargo sim run --seeds 0..10` (see .cargo/config.toml)");
    std::process::exit(1);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(madsim)]
mod cli {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use cairn::bugs::Bug;

    use crate::sim::{self, Report, RunOptions};

    const USAGE: &str = "usage:
  cairn-sim run --seeds A..B [--nodes N] [--bug NAME] [--trace FILE] [--expect-failure]
                [--faults I,J,...] [--chaos-secs S] [--jobs J] [--no-shrink]
                [--check-determinism]
  cairn-sim bugs [--all]";

    struct Args {
        seeds: std::ops::Range<u64>,
        nodes: usize,
        bug: Option<Bug>,
        trace: Option<String>,
        expect_failure: bool,
        faults: Option<BTreeSet<usize>>,
        chaos_secs: u64,
        jobs: usize,
        shrink: bool,
        check_determinism: bool,
    }

    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            seeds: 0..1,
            nodes: 3,
            bug: None,
            trace: None,
            expect_failure: false,
            faults: None,
            chaos_secs: 20,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shrink: true,
            check_determinism: std::env::var("MADSIM_TEST_CHECK_DETERMINISM")
                .is_ok_and(|v| !v.is_empty() && v != "0"),
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--seeds" => {
                    let v = value()?;
                    let (lo, hi) = v.split_once("..").ok_or("--seeds takes A..B")?;
                    let lo: u64 = lo.parse().map_err(|_| format!("bad seed {lo:?}"))?;
                    let hi: u64 = hi.parse().map_err(|_| format!("bad seed {hi:?}"))?;
                    if hi <= lo {
                        return Err("--seeds A..B needs A < B".into());
                    }
                    a.seeds = lo..hi;
                }
                "--nodes" => {
                    a.nodes = value()?.parse().map_err(|_| "bad --nodes")?;
                    if ![1, 3, 5, 7].contains(&a.nodes) {
                        return Err("--nodes must be 1, 3, 5 or 7".into());
                    }
                }
                "--bug" => {
                    let v = value()?;
                    a.bug = Some(
                        Bug::from_name(&v)
                            .ok_or_else(|| format!("unknown bug {v:?}: see `cargo sim bugs`"))?,
                    );
                }
                "--trace" => a.trace = Some(value()?),
                "--expect-failure" => a.expect_failure = true,
                "--faults" => {
                    let v = value()?;
                    let set: Result<BTreeSet<usize>, _> = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::parse)
                        .collect();
                    a.faults = Some(set.map_err(|_| "bad --faults")?);
                }
                "--chaos-secs" => {
                    a.chaos_secs = value()?.parse().map_err(|_| "bad --chaos-secs")?
                }
                "--jobs" => a.jobs = value()?.parse::<usize>().map_err(|_| "bad --jobs")?.max(1),
                "--no-shrink" => a.shrink = false,
                "--check-determinism" => a.check_determinism = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(a)
    }

    pub fn main() -> i32 {
        let mut args = std::env::args().skip(1);
        match args.next().as_deref() {
            Some("bugs") => {
                // The bugs the checkers must catch. `--all` adds the ones no simulated scenario
                // reaches yet (each has a test of its own that fails when it is switched on).
                let all = args.next().as_deref() == Some("--all");
                for b in Bug::ALL {
                    if b.sim_reaches() {
                        println!("{}\t{}", b.name(), b.description());
                    } else if all {
                        println!(
                            "{}\t{} (not reached by the simulator yet)",
                            b.name(),
                            b.description()
                        );
                    }
                }
                0
            }
            Some("run") => match parse(args) {
                Ok(a) => run(a),
                Err(e) => {
                    eprintln!("error: {e}\n{USAGE}");
                    2
                }
            },
            _ => {
                eprintln!("{USAGE}");
                2
            }
        }
    }

    fn options(a: &Args, seed: u64) -> RunOptions {
        RunOptions {
            seed,
            nodes: a.nodes,
            bug: a.bug,
            trace: a.trace.is_some(),
            keep_faults: a.faults.clone(),
            chaos: Duration::from_secs(a.chaos_secs),
        }
    }

    fn replay(a: &Args, seed: u64, faults: Option<&BTreeSet<usize>>) -> String {
        let mut s = format!(
            "cargo sim run --seeds {seed}..{} --nodes {}",
            seed + 1,
            a.nodes
        );
        if let Some(b) = a.bug {
            s.push_str(&format!(" --bug {}", b.name()));
        }
        if a.chaos_secs != 20 {
            s.push_str(&format!(" --chaos-secs {}", a.chaos_secs));
        }
        if let Some(f) = faults {
            let list: Vec<String> = f.iter().map(|i| i.to_string()).collect();
            s.push_str(&format!(
                " --faults {}",
                if list.is_empty() {
                    "''".to_string()
                } else {
                    list.join(",")
                }
            ));
        }
        s
    }

    /// Runs a seed, and again when checking determinism.
    fn run_one(a: &Args, seed: u64) -> Report {
        let opts = options(a, seed);
        let mut r = sim::run(&opts);
        if a.check_determinism {
            let again = sim::run(&opts);
            if again.hash != r.hash {
                r.failures.push(format!(
                    "non-deterministic: two runs of seed {seed} differ (hash {:016x} vs {:016x}, {} vs {} ops)",
                    r.hash, again.hash, r.ops, again.ops
                ));
            }
        }
        r
    }

    /// Greedy shrinking of a failing seed's fault schedule: drop halves, then single faults,
    /// keeping every removal after which the seed still fails.
    fn shrink(a: &Args, seed: u64, schedule_len: usize) -> Option<(BTreeSet<usize>, Report)> {
        /// Reruns spent on shrinking one seed.
        const SHRINK_RUNS_MAX: usize = 40;
        let mut keep: BTreeSet<usize> = a
            .faults
            .clone()
            .unwrap_or_else(|| (0..schedule_len).collect());
        let mut best: Option<Report> = None;
        let mut runs = 0;
        let try_keep = |candidate: &BTreeSet<usize>, runs: &mut usize| -> Option<Report> {
            *runs += 1;
            let mut opts = options(a, seed);
            opts.keep_faults = Some(candidate.clone());
            opts.trace = false;
            let r = sim::run(&opts);
            (!r.failures.is_empty()).then_some(r)
        };
        let mut chunk = keep.len().div_ceil(2);
        while chunk >= 1 && runs < SHRINK_RUNS_MAX {
            let items: Vec<usize> = keep.iter().copied().collect();
            let mut removed_any = false;
            for part in items.chunks(chunk) {
                if runs >= SHRINK_RUNS_MAX {
                    break;
                }
                let candidate: BTreeSet<usize> =
                    keep.iter().copied().filter(|i| !part.contains(i)).collect();
                if candidate.len() == keep.len() {
                    continue;
                }
                if let Some(r) = try_keep(&candidate, &mut runs) {
                    keep = candidate;
                    best = Some(r);
                    removed_any = true;
                }
            }
            if !removed_any {
                if chunk == 1 {
                    break;
                }
                chunk = chunk.div_ceil(2);
            } else {
                chunk = chunk.min(keep.len().div_ceil(2)).max(1);
            }
            if keep.is_empty() {
                break;
            }
        }
        best.map(|r| (keep, r))
    }

    /// Real elapsed time. madsim replaces the clock system calls (and with them
    /// `std::time::Instant`) for the whole process, so the wall clock is read from /proc/uptime
    /// (10 ms resolution, plenty for seeds per minute).
    #[derive(Clone, Copy)]
    struct Instant(Duration);

    impl Instant {
        fn now() -> Instant {
            let secs = std::fs::read_to_string("/proc/uptime")
                .ok()
                .and_then(|s| {
                    s.split_whitespace()
                        .next()
                        .and_then(|x| x.parse::<f64>().ok())
                })
                .unwrap_or(0.0);
            Instant(Duration::from_secs_f64(secs))
        }

        fn elapsed(&self) -> Duration {
            Instant::now().0.saturating_sub(self.0)
        }
    }

    fn run(a: Args) -> i32 {
        // Panics inside a run are caught and reported with the seed; keep stderr quiet.
        if std::env::var_os("CAIRN_SIM_VERBOSE").is_none() {
            std::panic::set_hook(Box::new(|_| {}));
        }
        // The node's own logs (raft-rs's elections and votes included), one span per member, for
        // replaying a single seed: `CAIRN_SIM_LOG=raft=debug,cairn=info`. Off by default: the
        // logs of a sweep would drown the report.
        if let Ok(filter) = std::env::var("CAIRN_SIM_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .without_time()
                .with_writer(std::io::stderr)
                .try_init();
        }
        let started = Instant::now();
        let mut trace_out = match &a.trace {
            Some(path) => match std::fs::File::create(path) {
                Ok(f) => Some(std::io::BufWriter::new(f)),
                Err(e) => {
                    eprintln!("error: cannot create {path}: {e}");
                    return 2;
                }
            },
            None => None,
        };
        let a = Arc::new(a);
        let next = Arc::new(AtomicU64::new(a.seeds.start));
        let (tx, rx) = mpsc::channel::<(u64, Report, Duration)>();
        let jobs = a.jobs.min((a.seeds.end - a.seeds.start) as usize).max(1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for _ in 0..jobs {
            let (a, next, tx, stop) = (a.clone(), next.clone(), tx.clone(), stop.clone());
            threads.push(std::thread::spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= a.seeds.end {
                    break;
                }
                let t = Instant::now();
                let r = run_one(&a, seed);
                if tx.send((seed, r, t.elapsed())).is_err() {
                    break;
                }
            }));
        }
        drop(tx);
        let mut results = std::collections::BTreeMap::new();
        let mut sim_secs = 0.0;
        let mut failed = Vec::new();
        let mut inconclusive = 0;
        for (seed, r, wall) in rx {
            sim_secs += r.sim_time.as_secs_f64();
            if !r.inconclusive.is_empty() {
                inconclusive += 1;
            }
            if !r.failures.is_empty() {
                failed.push(seed);
                if a.expect_failure {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            if std::env::var_os("CAIRN_SIM_PROGRESS").is_some() {
                eprintln!(
                    "seed {seed}: {} ({} ops, {:.1}s simulated in {:.1}s)",
                    if r.failures.is_empty() {
                        "ok"
                    } else {
                        "FAILED"
                    },
                    r.ops,
                    r.sim_time.as_secs_f64(),
                    wall.as_secs_f64()
                );
            }
            results.insert(seed, r);
        }
        for t in threads {
            let _ = t.join();
        }
        let wall = started.elapsed();
        let out = std::io::stdout();
        let mut out = out.lock();
        for (seed, r) in &results {
            if let Some(w) = trace_out.as_mut() {
                for line in &r.trace {
                    let _ = writeln!(w, "{{\"seed\":{seed},{}", &line[1..]);
                }
            }
            for i in &r.inconclusive {
                let _ = writeln!(out, "seed {seed}: inconclusive: {i}");
            }
            if r.failures.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "seed {seed}: FAILED ({} nodes{}, swarm {})",
                a.nodes,
                a.bug
                    .map(|b| format!(", bug {}", b.name()))
                    .unwrap_or_default(),
                r.swarm
            );
            for f in &r.failures {
                let _ = writeln!(out, "  - {f}");
            }
            let _ = writeln!(out, "  fault schedule ({} faults):", r.schedule.len());
            for (i, s) in r.schedule.iter().enumerate() {
                let _ = writeln!(out, "    [{i}] {s}");
            }
            let _ = writeln!(out, "  replay: {}", replay(&a, *seed, a.faults.as_ref()));
            if a.shrink && !a.expect_failure && !r.schedule.is_empty() {
                let _ = out.flush();
                match shrink(&a, *seed, r.schedule.len()) {
                    Some((keep, small)) => {
                        let _ = writeln!(
                            out,
                            "  shrunk to {} of {} faults, failing with:",
                            keep.len(),
                            r.schedule.len()
                        );
                        for f in small.failures.iter().take(3) {
                            let _ = writeln!(out, "    - {}", f.lines().next().unwrap_or(""));
                        }
                        for s in &small.schedule {
                            let _ = writeln!(out, "    {s}");
                        }
                        let _ =
                            writeln!(out, "  replay shrunk: {}", replay(&a, *seed, Some(&keep)));
                    }
                    None => {
                        let _ = writeln!(out, "  (no smaller fault schedule fails)");
                    }
                }
            }
        }
        if let Some(mut w) = trace_out {
            let _ = w.flush();
        }
        let n = results.len();
        let _ = writeln!(
            out,
            "simulated {:.0}s in {:.1}s wall ({:.1} simulated s per wall s, {:.0} seeds/min, {} jobs); inconclusive: {inconclusive}",
            sim_secs,
            wall.as_secs_f64(),
            sim_secs / wall.as_secs_f64().max(1e-9),
            n as f64 * 60.0 / wall.as_secs_f64().max(1e-9),
            jobs
        );
        let _ = writeln!(out, "seeds: {n}, failed: {}", failed.len());
        if a.expect_failure {
            match (a.bug, failed.first()) {
                (Some(b), Some(seed)) => {
                    let _ = writeln!(
                        out,
                        "expected failure: bug {} caught at seed {seed}",
                        b.name()
                    );
                    0
                }
                (_, Some(seed)) => {
                    let _ = writeln!(out, "expected failure: caught at seed {seed}");
                    0
                }
                _ => {
                    let _ = writeln!(out, "expected a failure, but every seed passed");
                    1
                }
            }
        } else if failed.is_empty() {
            0
        } else {
            1
        }
    }
}
