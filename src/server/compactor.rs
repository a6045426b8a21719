//! Automatic compaction: etcd 3.4's `--auto-compaction-mode` and `--auto-compaction-retention`.
//!
//! The leader compacts the key history on a schedule, through raft like a client's `compact`:
//! - **revision** mode keeps the last `retention` revisions: every five minutes it compacts at
//!   `current - retention`, unless that is not positive or was already done;
//! - **periodic** mode keeps `retention` of time (`1h`, `30m`; a bare number is hours): it
//!   records the current revision every tenth of the retention (of an hour at most), and once a
//!   full retention has passed since the start (or since the last success, an hour at most after
//!   the first) it compacts at the revision recorded one retention ago.
//!
//! Every member keeps the schedule, so a member that becomes leader compacts on time; only the
//! leader proposes. [`Schedule`] is the rule with no clock or I/O of its own, so it is tested
//! step by step; [`super::Server`] runs it on the clock seam.

use std::collections::VecDeque;
use std::time::Duration;

/// How often revision mode looks (etcd's `revInterval`).
pub const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The longest interval periodic mode waits between compactions once it has compacted.
pub const PERIODIC_INTERVAL_MAX: Duration = Duration::from_secs(60 * 60);
/// Periodic mode records a revision every this fraction of its interval.
pub const PERIODIC_RECORDS_PER_INTERVAL: u32 = 10;

/// What automatic compaction keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The history of the last this long.
    Periodic(Duration),
    /// The last this many revisions.
    Revision(i64),
}

impl Retention {
    /// Parses etcd's pair of flags; `Ok(None)` when the retention is zero (compaction off).
    pub fn parse(mode: &str, retention: &str) -> Result<Option<Retention>, String> {
        let parsed = match retention.parse::<i64>() {
            Ok(n) if n >= 0 => match mode {
                "revision" => Retention::Revision(n),
                "periodic" => Retention::Periodic(Duration::from_secs(n as u64 * 3600)),
                other => return Err(format!("unknown auto-compaction-mode {other:?}")),
            },
            _ => {
                let d = crate::config::go_duration(retention).map_err(|_| {
                    format!(
                        "error parsing CompactionRetention: time: invalid duration {}",
                        crate::gofmt::quote(retention.as_bytes())
                    )
                })?;
                match mode {
                    // etcd takes a duration in revision mode too, as that many revisions.
                    "revision" => Retention::Revision(d.as_nanos().min(i64::MAX as u128) as i64),
                    "periodic" => Retention::Periodic(d),
                    other => return Err(format!("unknown auto-compaction-mode {other:?}")),
                }
            }
        };
        Ok(match parsed {
            Retention::Periodic(d) if d.is_zero() => None,
            Retention::Revision(0) => None,
            r => Some(r),
        })
    }
}

/// The schedule of one member. Call [`Schedule::wait`] for how long to sleep, then
/// [`Schedule::poll`]; report a proposed compaction's outcome with [`Schedule::done`].
#[derive(Debug)]
pub struct Schedule {
    retention: Retention,
    /// Periodic: the revisions recorded once a record interval, oldest first; the front is the
    /// revision of one retention ago.
    revs: VecDeque<i64>,
    /// Periodic: when the last compaction succeeded (or the schedule started).
    last_success: Duration,
    /// Periodic: how long after `last_success` the next compaction is due.
    due_after: Duration,
    /// Revision: the last revision compacted at.
    prev: i64,
}

impl Schedule {
    /// A schedule started at `now`, when the store is at `revision`.
    pub fn new(retention: Retention, now: Duration, revision: i64) -> Schedule {
        let due_after = match retention {
            Retention::Periodic(d) => d,
            Retention::Revision(_) => Duration::ZERO,
        };
        Schedule {
            retention,
            revs: VecDeque::from([revision]),
            last_success: now,
            due_after,
            prev: 0,
        }
    }

    /// How long to wait before the next [`Schedule::poll`].
    pub fn wait(&self) -> Duration {
        match self.retention {
            Retention::Periodic(d) => (d.min(PERIODIC_INTERVAL_MAX)
                / PERIODIC_RECORDS_PER_INTERVAL)
                .max(Duration::from_millis(1)),
            Retention::Revision(_) => REVISION_MODE_INTERVAL,
        }
    }

    /// One look at the store, a wait after the last: the revision to compact at, if a compaction
    /// is due and this member leads. `revision` is the store's current revision.
    pub fn poll(&mut self, now: Duration, revision: i64, leader: bool) -> Option<i64> {
        match self.retention {
            Retention::Revision(keep) => {
                let at = revision - keep;
                if !leader || at <= 0 || at == self.prev {
                    return None;
                }
                Some(at)
            }
            Retention::Periodic(period) => {
                let due = leader && now.saturating_sub(self.last_success) >= self.due_after;
                let at = self.revs.front().copied();
                // The next record, for the next look (etcd records at the top of its loop).
                self.revs.push_back(revision);
                let keep = (period.as_nanos() / self.wait().as_nanos().max(1)) as usize + 1;
                while self.revs.len() > keep {
                    self.revs.pop_front();
                }
                if !due {
                    return None;
                }
                // After the first compaction, one an interval (an hour at most).
                self.due_after = period.min(PERIODIC_INTERVAL_MAX);
                at
            }
        }
    }

    /// The outcome of compacting at `at` (a compaction below the floor already counts as done).
    pub fn done(&mut self, at: i64, now: Duration, ok: bool) {
        if !ok {
            return;
        }
        match self.retention {
            Retention::Revision(_) => self.prev = at,
            Retention::Periodic(_) => self.last_success = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn retention_parses_as_etcd_parses_it() {
        let p = Retention::parse;
        assert_eq!(p("periodic", "0").unwrap(), None);
        assert_eq!(
            p("periodic", "1").unwrap(),
            Some(Retention::Periodic(60 * MIN))
        );
        assert_eq!(
            p("periodic", "30m").unwrap(),
            Some(Retention::Periodic(30 * MIN))
        );
        assert_eq!(
            p("revision", "1000").unwrap(),
            Some(Retention::Revision(1000))
        );
        assert_eq!(p("revision", "0").unwrap(), None);
        assert!(p("periodic", "soon")
            .unwrap_err()
            .starts_with("error parsing CompactionRetention"));
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions_and_only_the_leader_compacts() {
        let mut s = Schedule::new(Retention::Revision(100), Duration::ZERO, 1);
        assert_eq!(s.wait(), REVISION_MODE_INTERVAL);
        assert_eq!(
            s.poll(5 * MIN, 50, true),
            None,
            "nothing below the retention yet"
        );
        assert_eq!(
            s.poll(10 * MIN, 250, false),
            None,
            "a follower never proposes"
        );
        assert_eq!(s.poll(10 * MIN, 250, true), Some(150));
        s.done(150, 10 * MIN, true);
        assert_eq!(s.poll(15 * MIN, 250, true), None, "already compacted there");
        assert_eq!(s.poll(20 * MIN, 260, true), Some(160));
        s.done(160, 20 * MIN, false);
        assert_eq!(
            s.poll(25 * MIN, 260, true),
            Some(160),
            "a failure is retried"
        );
    }

    #[test]
    fn periodic_mode_compacts_at_the_revision_of_one_retention_ago() {
        // One hour: a record every six minutes, the first compaction an hour after the start.
        let mut s = Schedule::new(Retention::Periodic(60 * MIN), Duration::ZERO, 1);
        assert_eq!(s.wait(), 6 * MIN);
        let mut now = Duration::ZERO;
        let mut rev = 1;
        let mut got = Vec::new();
        for _ in 0..20 {
            now += s.wait();
            rev += 10;
            if let Some(at) = s.poll(now, rev, true) {
                got.push((now.as_secs() / 60, at));
                s.done(at, now, true);
            }
        }
        // At 60 min the revision recorded at the start (1); then one an hour: at 120 min, the one
        // recorded at 60 min (rev 91, the record taken at that look).
        assert_eq!(got, vec![(60, 1), (120, 91)]);
    }

    #[test]
    fn a_short_period_compacts_every_period_and_a_new_leader_catches_up() {
        // Five seconds: records every half second.
        let mut s = Schedule::new(
            Retention::Periodic(Duration::from_secs(5)),
            Duration::ZERO,
            1,
        );
        assert_eq!(s.wait(), Duration::from_millis(500));
        let mut now = Duration::ZERO;
        let mut first = None;
        for i in 1..=30 {
            now += s.wait();
            // A follower until 8 s: it records, never proposes.
            let leader = now >= Duration::from_secs(8);
            if let Some(at) = s.poll(now, 1 + i, leader) {
                first.get_or_insert((now, at));
                s.done(at, now, true);
            }
        }
        let (when, at) = first.unwrap();
        assert_eq!(
            when,
            Duration::from_secs(8),
            "due since 5 s, proposed once leading"
        );
        // The oldest of the eleven records kept (a retention's worth): taken at 2.5 s (look 5,
        // revision 6).
        assert_eq!(at, 6);
    }
}
