//! The seams: every way node code touches the outside world.
//!
//! cairn's node logic (raft driver, WAL, server) never reads the time, draws a random number or
//! touches a file or socket directly. It asks one of the four traits here:
//!
//! * [`Clock`]: monotonic time and sleeping. Production uses the runtime's clock; the simulator gives
//!   every node its own offset, drift and jumps.
//! * [`Disk`]: the files of the write-ahead log and snapshots. Production uses the real file system
//!   ([`FsDisk`]); the simulator keeps bytes in memory and can lose unsynced writes, tear the last
//!   one, flip bits, fail fsync or fill up.
//! * [`Transport`]: raft messages between members. Production sends them over the network; the
//!   simulator partitions, delays, drops and duplicates them.
//! * [`Rng`]: seeded randomness, so a simulated run replays from its seed.
//!
//! Because all four are injected, the same node code runs under tokio in production and under
//! madsim in `cairn-sim`, and `clippy.toml` forbids the direct calls that would bypass them.

mod clock;
mod disk;
mod rng;
mod transport;

pub use clock::{Clock, RuntimeClock};
pub use disk::{Disk, DiskFile, FsDisk};
pub use rng::{Rng, SplitMix64};
pub use transport::{LocalTransport, Transport};
