//! Monotonic time for node code.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A source of monotonic time. Node code measures timeouts and ticks only through this trait.
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since an arbitrary, fixed origin of this clock.
    fn now(&self) -> Duration;
    /// Wall-clock time as nanoseconds since the Unix epoch; only for display and metrics, never for
    /// ordering or safety.
    fn wall_unix_nanos(&self) -> u128;
    /// Completes after `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The runtime's clock: tokio's in production, madsim's virtual clock in a simulation (the
/// `tokio` dependency is madsim-tokio, which switches under `--cfg madsim`).
#[derive(Debug, Clone)]
pub struct RuntimeClock {
    origin: tokio::time::Instant,
}

impl RuntimeClock {
    pub fn new() -> Self {
        #[allow(clippy::disallowed_methods)] // this is the seam itself
        let origin = tokio::time::Instant::now();
        RuntimeClock { origin }
    }
}

impl Default for RuntimeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RuntimeClock {
    fn now(&self) -> Duration {
        #[allow(clippy::disallowed_methods)] // this is the seam itself
        let now = tokio::time::Instant::now();
        now.duration_since(self.origin)
    }

    fn wall_unix_nanos(&self) -> u128 {
        #[allow(clippy::disallowed_methods)] // this is the seam itself
        let now = std::time::SystemTime::now();
        now.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        #[allow(clippy::disallowed_methods)] // this is the seam itself
        let f = tokio::time::sleep(d);
        Box::pin(f)
    }
}
