//! The runtime's clock: `CLOCK_BOOTTIME`, which keeps running through system suspend, so a
//! lease measured on it is never over-trusted after a suspend (PROTOCOL §0, contract 3).

use std::time::Duration;

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

/// An instant on `CLOCK_BOOTTIME`, for holders: what `std::time::Instant` is, except that it
/// keeps counting while the machine is suspended. A holder that measured its lease on
/// `Instant` (CLOCK_MONOTONIC) would, after a suspend, trust a lease the voters already let
/// run out. Every lease a client trusts is measured on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(Time);

impl BootInstant {
    pub fn now() -> BootInstant {
        BootInstant(now())
    }

    /// The time since this instant (zero if it is in the future).
    pub fn elapsed(self) -> Duration {
        BootInstant::now().saturating_duration_since(self)
    }

    /// The time from `earlier` to this instant, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        Duration::from_micros(self.0.since(earlier.0))
    }
}

impl std::ops::Add<Duration> for BootInstant {
    type Output = BootInstant;

    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0.plus_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }
}

impl std::ops::Sub<BootInstant> for BootInstant {
    type Output = Duration;

    /// Saturating: an instant minus a later one is zero, never a panic.
    fn sub(self, earlier: BootInstant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_instants_move_forward_and_never_underflow() {
        let a = BootInstant::now();
        std::thread::sleep(Duration::from_millis(5));
        let b = BootInstant::now();
        assert!(b > a && b - a >= Duration::from_millis(5));
        assert_eq!(a - b, Duration::ZERO);
        assert_eq!((a + Duration::from_secs(2)) - a, Duration::from_secs(2));
        assert!(a.elapsed() >= Duration::from_millis(5));
    }
}
