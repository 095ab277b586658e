//! Simulated clocks: each node and client reads its own clock, offset and running at its own
//! rate within the drift bound. True time is the simulator's; nobody inside sees it.

use lockmesh_core::Time;

/// A clock that reads `offset + t * (1 + rate_ppm / 10^6)` at true time `t` (microseconds).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub offset_us: u64,
    /// Rate error in parts per million, within ± the drift bound.
    pub rate_ppm: i64,
}

const MILLION: i128 = 1_000_000;

impl Clock {
    pub fn local(&self, true_us: u64) -> Time {
        let scaled = true_us as i128 * (MILLION + self.rate_ppm as i128) / MILLION;
        Time(self.offset_us + scaled as u64)
    }

    /// The earliest true time at which this clock reads at least `local`.
    pub fn true_at(&self, local: Time) -> u64 {
        let Some(rel) = local.0.checked_sub(self.offset_us) else { return 0 };
        let rate = MILLION + self.rate_ppm as i128;
        let mut t = ((rel as i128 * MILLION + rate - 1) / rate) as u64;
        while self.local(t) < local {
            t += 1;
        }
        while t > 0 && self.local(t - 1) >= local {
            t -= 1;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_at_inverts_local() {
        for rate_ppm in [-50_000, -1, 0, 7, 50_000] {
            let c = Clock { offset_us: 123_456, rate_ppm };
            for t in [0u64, 1, 999, 1_000_000, 37_000_123] {
                let l = c.local(t);
                let back = c.true_at(l);
                assert!(back <= t && c.local(back) >= l, "rate {rate_ppm} t {t}");
            }
        }
    }
}
