//! The nemesis: a fault schedule drawn from the seed, "swarm" style.
//!
//! Each seed first draws which kinds of fault it will use and how often (a swarm: some seeds only
//! partition, some only crash, some do everything at a high rate), then draws a schedule of timed
//! faults from that mix. Every fault has a start and a duration and undoes itself at the end, so
//! the schedule is a plain list: the shrinker removes entries and reruns the seed to find a
//! smaller list that still fails.

use std::fmt;
use std::time::Duration;

use cairn::crashpoint::Point;
use cairn::io::{Rng, SplitMix64};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Partition,
    IsolateLeader,
    Bridge,
    OneWay,
    Clog,
    Lossy,
    Kill,
    PowerFailAll,
    Pause,
    ClockJump,
    ClockRate,
    FsyncFail,
    BitFlip,
    CrashAt,
    DiskFull,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Partition,
        Kind::IsolateLeader,
        Kind::Bridge,
        Kind::OneWay,
        Kind::Clog,
        Kind::Lossy,
        Kind::Kill,
        Kind::PowerFailAll,
        Kind::Pause,
        Kind::ClockJump,
        Kind::ClockRate,
        Kind::FsyncFail,
        Kind::BitFlip,
        Kind::CrashAt,
        Kind::DiskFull,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `side` and the other members cannot talk (both directions).
    Partition { side: Vec<usize> },
    /// The current leader is cut off from everyone; it keeps running (split brain).
    IsolateLeader,
    /// `left` and `right` cannot talk directly; `bridge` talks to both.
    Bridge {
        left: Vec<usize>,
        right: Vec<usize>,
        bridge: usize,
    },
    /// Messages from `from` to `to` are dropped; the other direction works.
    OneWay { from: usize, to: usize },
    /// Directed links blocked one at a time over the fault's duration, then released in another
    /// order.
    Clog {
        links: Vec<(usize, usize)>,
        release: Vec<usize>,
    },
    /// Message loss, duplication and delay (which reorders) on every link.
    Lossy {
        loss_ppm: u64,
        dup_ppm: u64,
        delay_max_ms: u64,
    },
    /// The node crashes (power failure: unsynced writes lost, the last one maybe torn) and is
    /// restarted at the end.
    Kill { node: usize, torn: bool },
    /// Every node crashes at once and restarts at a random point within the fault.
    PowerFailAll { torn: bool, restart_ms: Vec<u64> },
    /// The node freezes, then resumes with stale beliefs.
    Pause { node: usize },
    /// The node's clock jumps forward.
    ClockJump { node: usize, ms: u64 },
    /// The node's clock runs at `ppm` parts per million of real time for the duration.
    ClockRate { node: usize, ppm: u64 },
    /// The node's next fsync fails; the node must stop, and is crashed and restarted at the end.
    FsyncFail { node: usize },
    /// The node crashes (preferably right after a WAL sync that left unapplied entries), a bit
    /// flips in a record of its synced WAL that recovery must trust, and it restarts at the end:
    /// it must refuse to start.
    BitFlip { node: usize },
    /// The node crashes the first time it reaches `point` within the fault (power failure right
    /// there, unsynced writes lost or torn) and restarts at the end; nothing if it never does.
    /// With `node: None`, whichever member reaches the point first (snapshots are sent by the
    /// leader and installed by a lagging follower, which a schedule cannot name in advance).
    CrashAt {
        node: Option<usize>,
        point: Point,
        torn: bool,
    },
    /// The node's disk fills up: after `slack` more bytes every write fails with ENOSPC. The node
    /// must stop (or refuse writes) without acknowledging what it did not persist; it is crashed
    /// and restarted at the end if it stopped.
    DiskFull { node: usize, slack: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub at: Duration,
    pub dur: Duration,
    pub fault: Fault,
}

impl fmt::Display for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {:.3}s for {:.3}s: {:?}",
            self.at.as_secs_f64(),
            self.dur.as_secs_f64(),
            self.fault
        )
    }
}

/// The mix a seed draws: which kinds, and the mean gap between faults.
#[derive(Debug, Clone)]
pub struct Swarm {
    pub kinds: Vec<Kind>,
    pub gap_mean_ms: u64,
}

fn pick<T: Clone>(rng: &mut SplitMix64, xs: &[T]) -> T {
    xs[rng.range(0, xs.len() as u64) as usize].clone()
}

fn shuffle<T>(rng: &mut SplitMix64, xs: &mut [T]) {
    for i in (1..xs.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        xs.swap(i, j);
    }
}

impl Swarm {
    pub fn draw(rng: &mut SplitMix64, nodes: usize) -> Swarm {
        let mut kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| {
                nodes >= 3
                    || !matches!(
                        k,
                        Kind::Partition
                            | Kind::IsolateLeader
                            | Kind::Bridge
                            | Kind::OneWay
                            | Kind::Clog
                            | Kind::BitFlip
                    )
            })
            .filter(|_| rng.range(0, 2) == 0)
            .collect();
        if kinds.is_empty() {
            kinds.push(if nodes >= 3 {
                Kind::Partition
            } else {
                Kind::Kill
            });
        }
        let gap_mean_ms = pick(rng, &[300, 800, 1500, 3000]);
        Swarm { kinds, gap_mean_ms }
    }

    /// A schedule of faults that all end by `chaos`.
    pub fn schedule(&self, rng: &mut SplitMix64, nodes: usize, chaos: Duration) -> Vec<Scheduled> {
        let mut out = Vec::new();
        let mut t = Duration::from_millis(rng.range(0, self.gap_mean_ms));
        let mut bitflips = 0;
        let all: Vec<usize> = (0..nodes).collect();
        while t < chaos {
            let dur = Duration::from_millis(rng.range(200, 4000));
            if t + dur > chaos {
                break;
            }
            let kind = pick(rng, &self.kinds);
            let fault = match kind {
                Kind::Partition => {
                    let mut ids = all.clone();
                    shuffle(rng, &mut ids);
                    let k = rng.range(1, (nodes / 2) as u64 + 1) as usize;
                    Fault::Partition {
                        side: ids[..k].to_vec(),
                    }
                }
                Kind::IsolateLeader => Fault::IsolateLeader,
                Kind::Bridge => {
                    let mut ids = all.clone();
                    shuffle(rng, &mut ids);
                    let bridge = ids[0];
                    let rest = &ids[1..];
                    let half = rest.len() / 2;
                    Fault::Bridge {
                        left: rest[..half].to_vec(),
                        right: rest[half..].to_vec(),
                        bridge,
                    }
                }
                Kind::OneWay => {
                    let from = pick(rng, &all);
                    let to = (from + rng.range(1, nodes as u64) as usize) % nodes;
                    Fault::OneWay { from, to }
                }
                Kind::Clog => {
                    let mut links: Vec<(usize, usize)> = all
                        .iter()
                        .flat_map(|a| all.iter().filter(move |b| *b != a).map(move |b| (*a, *b)))
                        .collect();
                    shuffle(rng, &mut links);
                    links.truncate(rng.range(1, links.len() as u64 + 1) as usize);
                    let mut release: Vec<usize> = (0..links.len()).collect();
                    shuffle(rng, &mut release);
                    Fault::Clog { links, release }
                }
                Kind::Lossy => Fault::Lossy {
                    loss_ppm: pick(rng, &[0, 10_000, 100_000, 300_000]),
                    dup_ppm: pick(rng, &[0, 10_000, 100_000]),
                    delay_max_ms: pick(rng, &[5, 50, 300, 1500]),
                },
                Kind::Kill => Fault::Kill {
                    node: pick(rng, &all),
                    torn: rng.range(0, 2) == 0,
                },
                Kind::PowerFailAll => Fault::PowerFailAll {
                    torn: rng.range(0, 2) == 0,
                    restart_ms: all
                        .iter()
                        .map(|_| rng.range(0, dur.as_millis() as u64 + 1))
                        .collect(),
                },
                Kind::Pause => Fault::Pause {
                    node: pick(rng, &all),
                },
                Kind::ClockJump => Fault::ClockJump {
                    node: pick(rng, &all),
                    ms: pick(rng, &[100, 1000, 5000, 30_000]),
                },
                Kind::ClockRate => Fault::ClockRate {
                    node: pick(rng, &all),
                    ppm: pick(rng, &[500_000, 900_000, 1_100_000, 2_000_000]),
                },
                Kind::FsyncFail => Fault::FsyncFail {
                    node: pick(rng, &all),
                },
                Kind::CrashAt => {
                    let point = pick(rng, &Point::ALL);
                    let node = pick(rng, &all);
                    let anyone = matches!(
                        point,
                        Point::SnapshotSend | Point::SnapshotInstall | Point::Compaction
                    );
                    Fault::CrashAt {
                        node: (!anyone).then_some(node),
                        point,
                        torn: rng.range(0, 2) == 0,
                    }
                }
                Kind::DiskFull => Fault::DiskFull {
                    node: pick(rng, &all),
                    slack: pick(rng, &[0, 100, 4096, 65_536]),
                },
                Kind::BitFlip => {
                    // One corrupted member at most: more could leave no quorum, which proves nothing.
                    if bitflips > 0 {
                        t += Duration::from_millis(rng.range(1, 2 * self.gap_mean_ms));
                        continue;
                    }
                    bitflips += 1;
                    Fault::BitFlip {
                        node: pick(rng, &all),
                    }
                }
            };
            out.push(Scheduled { at: t, dur, fault });
            t += Duration::from_millis(rng.range(1, 2 * self.gap_mean_ms));
        }
        out
    }
}
