//! A simulated clock per node: madsim's virtual time, skewed by a per-node offset and drift, and
//! able to jump forward.
//!
//! The node only asks its [`Clock`] for elapsed time and for sleeps, so skew is all it can see:
//! a node whose clock runs 5% fast ticks 5% more often and times out elections sooner. Raft must
//! stay safe under any of this (it never uses time for safety, only for liveness), and the
//! checkers verify that it does.

// madsim's virtual time *is* the simulated clock: this module implements the seam, so it may
// read `Instant::now` (which madsim intercepts) directly.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::io::Clock;

/// Parts per million of drift: 1_000_000 is a perfect clock.
const PPM: u128 = 1_000_000;

/// Skew shared between the harness (which sets it) and every incarnation of the node.
#[derive(Debug)]
pub struct Skew {
    /// Nanoseconds added to the node's view of time; only grows (a monotonic clock jumps forward).
    pub offset_nanos: AtomicU64,
    /// Rate of the node's clock in parts per million of real (simulated) time.
    pub rate_ppm: AtomicU64,
}

impl Skew {
    pub fn new(offset: Duration, rate_ppm: u64) -> Arc<Skew> {
        Arc::new(Skew {
            offset_nanos: AtomicU64::new(offset.as_nanos() as u64),
            rate_ppm: AtomicU64::new(rate_ppm),
        })
    }

    /// Moves the node's clock forward by `d` at once.
    pub fn jump(&self, d: Duration) {
        self.offset_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

pub struct SimClock {
    origin: madsim::time::Instant,
    skew: Arc<Skew>,
}

impl SimClock {
    pub fn new(skew: Arc<Skew>) -> SimClock {
        SimClock {
            origin: madsim::time::Instant::now(),
            skew,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        let real = madsim::time::Instant::now()
            .duration_since(self.origin)
            .as_nanos();
        let rate = u128::from(self.skew.rate_ppm.load(Ordering::Relaxed));
        let offset = u128::from(self.skew.offset_nanos.load(Ordering::Relaxed));
        Duration::from_nanos((real * rate / PPM + offset) as u64)
    }

    fn wall_unix_nanos(&self) -> u128 {
        // A fixed, plausible epoch: wall time is only for display.
        1_700_000_000_000_000_000 + self.now().as_nanos()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let rate = u128::from(self.skew.rate_ppm.load(Ordering::Relaxed)).max(1);
        let real = Duration::from_nanos((d.as_nanos() * PPM / rate) as u64);
        Box::pin(madsim::time::sleep(real))
    }
}
