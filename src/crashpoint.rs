//! Crash points: named places in the raft driver where the simulator may crash a member on purpose.
//!
//! A process can die between any two instructions, but a simulator that only kills members from
//! the outside kills them between two awaits, when the Ready loop is idle: it never sees a member
//! die after its WAL fsync but before the acknowledgements left, halfway through applying a batch
//! of committed entries, or between writing a snapshot marker and releasing old segments. Those
//! windows are where the recovery arguments of the WAL and the consistent index are actually
//! needed, so the driver marks them with one line each:
//!
//! ```ignore
//! crate::crashpoint::reached(self.cfg.id, Point::AfterWalSync, applied)?;
//! ```
//!
//! In simulation builds (`--cfg madsim`) the call asks a handler the simulator installed whether
//! to crash here. If so, the simulator has already cut the member's power (its simulated disk
//! loses what was not synced) and killed its tasks, and [`reached`] returns [`Crashed`]: the caller
//! returns at once, so the member does nothing more (no message, no write, no apply) before the
//! runtime drops it. In every other build [`reached`] is an inline `Ok(())`, there is no handler
//! and no way to install one: production cannot be made to crash through this module, in the
//! same spirit as [`crate::bugs`].

/// A place in the raft driver where a crash is interesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Point {
    /// A Ready's entries and HardState are appended to the WAL but not yet synced.
    BeforeWalSync,
    /// The WAL is synced; the messages that depend on it (votes, append acknowledgements) have
    /// not been sent.
    AfterWalSync,
    /// One committed entry was applied and committed to the backend; the rest of the batch and
    /// raft's `advance` have not happened.
    AfterApply,
    /// The leader exported a snapshot for a follower and is about to hand it to the transport.
    SnapshotSend,
    /// A follower recorded a received snapshot in its WAL; its backend does not hold it yet.
    SnapshotInstall,
    /// Log compaction wrote its snapshot marker to the WAL; old segments are not released yet.
    Compaction,
}

impl Point {
    /// Every crash point, in a stable order.
    pub const ALL: [Point; 6] = [
        Point::BeforeWalSync,
        Point::AfterWalSync,
        Point::AfterApply,
        Point::SnapshotSend,
        Point::SnapshotInstall,
        Point::Compaction,
    ];

    /// A short stable name (traces, command lines).
    pub fn name(self) -> &'static str {
        match self {
            Point::BeforeWalSync => "before-wal-sync",
            Point::AfterWalSync => "after-wal-sync",
            Point::AfterApply => "after-apply",
            Point::SnapshotSend => "snapshot-send",
            Point::SnapshotInstall => "snapshot-install",
            Point::Compaction => "compaction",
        }
    }
}

/// The member was crashed at this point: return without doing anything more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crashed(pub Point);

impl std::fmt::Display for Crashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "crashed on purpose at {}", self.0.name())
    }
}

impl std::error::Error for Crashed {}

/// Marks that member `member` reached `point`, with `applied` the backend's consistent index at
/// that moment. Returns [`Crashed`] if the simulator crashed the member here; always `Ok(())`
/// outside simulation builds.
#[inline(always)]
pub fn reached(member: u64, point: Point, applied: u64) -> Result<(), Crashed> {
    #[cfg(madsim)]
    {
        sim::reached(member, point, applied)
    }
    #[cfg(not(madsim))]
    {
        let _ = (member, point, applied);
        Ok(())
    }
}

#[cfg(madsim)]
pub use sim::{set_handler, Handler};

#[cfg(madsim)]
mod sim {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::{Crashed, Point};

    /// Decides whether to crash `member` at `point` (given its applied index), and if so crashes
    /// it before returning `true`.
    pub type Handler = Rc<dyn Fn(u64, Point, u64) -> bool>;

    thread_local! {
        // Per thread: the simulator runs each seed's runtime on its own thread, and runs may go
        // on in parallel.
        static HANDLER: RefCell<Option<Handler>> = const { RefCell::new(None) };
    }

    /// Installs (or with `None` removes) this thread's crash-point handler. Simulation builds only.
    pub fn set_handler(handler: Option<Handler>) {
        HANDLER.with(|h| *h.borrow_mut() = handler);
    }

    pub(super) fn reached(member: u64, point: Point, applied: u64) -> Result<(), Crashed> {
        // Clone out of the cell first: the handler may itself touch the cell.
        let handler = HANDLER.with(|h| h.borrow().clone());
        match handler {
            Some(h) if h(member, point, applied) => Err(Crashed(point)),
            _ => Ok(()),
        }
    }
}
