//! The runtime's clock: `CLOCK_BOOTTIME`, which keeps running through system suspend, so a
//! lease measured on it is never over-trusted after a suspend (DESIGN contract 3).

use crate::core::Time;

/// Microseconds on `CLOCK_BOOTTIME`.
pub fn now() -> Time {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer we pass; BOOTTIME
    // exists on every Linux this runs on. If it failed, ts stays 0 and time stands still,
    // which makes leases look younger: safe for voters.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Time(ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}
