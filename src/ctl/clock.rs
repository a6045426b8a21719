//! Wall-clock time, timers and randomness for the command-line client.
//!
//! Node code takes time and randomness only from the `io` seams so simulated runs replay; cairnctl
//! is not node code. It is an interactive tool that measures real latency (`endpoint health`),
//! enforces real timeouts and stamps its log lines with the local time, so it reads the real
//! clock, here and nowhere else in `ctl`.
#![allow(clippy::disallowed_methods)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock.
pub fn now() -> Instant {
    Instant::now()
}

pub async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Seconds and nanoseconds since the Unix epoch.
pub fn unix_now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// The local time zone's offset from UTC at `unix_secs`, in seconds.
pub fn local_offset(unix_secs: i64) -> i64 {
    let t: libc::time_t = unix_secs as libc::time_t;
    // SAFETY: `tm` is plain old data that `localtime_r` fills in; both pointers are valid for the
    // duration of the call and `localtime_r` keeps neither.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff as i64
    }
}

/// 64 unpredictable bits, from the standard library's per-process random hash keys.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    let (s, n) = unix_now();
    h.write_i64(s);
    h.write_u32(n);
    h.finish()
}

/// A random (version 4) UUID in its text form, as Go's `uuid.New().String()` prints one.
pub fn uuid_v4() -> String {
    let (a, b) = (random_u64(), random_u64());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
