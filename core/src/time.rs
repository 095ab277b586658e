//! Time as the core sees it: instants on this node's own monotonic clock, handed in by the caller.
//!
//! The core never reads a clock. The runtime passes `Time` values read from a clock that keeps
//! running through suspend (Linux `CLOCK_BOOTTIME`); the simulator passes its own per-node clocks.

use serde::{Deserialize, Serialize};

/// An instant on the local monotonic clock, in microseconds since an arbitrary origin.
///
/// Instants from two different nodes are never compared: only durations measured on one
/// clock cross the wire (as ages), and those are corrected for drift (see `lease`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    pub fn from_micros(us: u64) -> Time {
        Time(us)
    }

    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Microseconds from `earlier` to `self`, or 0 if `earlier` is later (never negative).
    pub fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn plus_micros(self, us: u64) -> Time {
        Time(self.0.saturating_add(us))
    }
}
