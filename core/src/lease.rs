//! Lease arithmetic under a bound on clock *rate* drift; no two clocks are ever compared.
//!
//! A clock may run fast or slow by at most `drift_ppm` parts per million. A duration `m`
//! measured on any clock therefore lies within `t * (1 ± d)` of the true duration `t`.
//! - A voter's measured age overstates true time by at most `(1 + d)`, so `m / (1 + d)` is a
//!   lower bound of the true time since it accepted a record.
//! - A holder that trusts its lease for `lease * (1 - d)` on its own clock, counted from the
//!   send of its request, trusts for at most `lease` of true time.
//! Voters expire a grant only when their lower bound exceeds `lease`; so when they do, the
//! holder has stopped trusting. Integer arithmetic rounds every bound towards safety.

use serde::{Deserialize, Serialize};

const MILLION: u128 = 1_000_000;

/// The configured bound on clock rate drift, in parts per million (10_000 = 1 %).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    ppm: u32,
}

impl Drift {
    /// A drift bound; values of 100 % or more make leases meaningless and are capped below it.
    pub fn from_ppm(ppm: u32) -> Drift {
        Drift { ppm: ppm.min(500_000) }
    }

    pub fn ppm(self) -> u32 {
        self.ppm
    }

    /// A lower bound on the true time that passed while a clock measured `measured_us`.
    pub fn true_elapsed_floor(self, measured_us: u64) -> u64 {
        (measured_us as u128 * MILLION / (MILLION + self.ppm as u128)) as u64
    }

    /// An upper bound on the true time that passed while a clock measured `measured_us`.
    pub fn true_elapsed_ceiling(self, measured_us: u64) -> u64 {
        let m = MILLION - self.ppm as u128;
        (measured_us as u128 * MILLION).div_ceil(m).min(u64::MAX as u128) as u64
    }

    /// How long, on its own clock, a holder may trust a lease of `lease_us` counted from the
    /// send of the request that obtained or renewed it.
    pub fn holder_trust(self, lease_us: u64) -> u64 {
        (lease_us as u128 * (MILLION - self.ppm as u128) / MILLION) as u64
    }
}

/// Whether a lease of `lease_us` has certainly run out, given a proven lower bound of the
/// true time since it started.
pub fn is_expired(elapsed_floor_us: u64, lease_us: u64) -> bool {
    elapsed_floor_us > lease_us
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_trust_bracket_true_time() {
        let d = Drift::from_ppm(10_000);
        // A voter clock running 1 % fast measures 30.3 s for 30 s of true time.
        assert_eq!(d.true_elapsed_floor(30_300_000), 30_000_000);
        // The floor never overstates.
        assert!(d.true_elapsed_floor(1_000_000) < 1_000_000);
        // A clock running 1 % slow measures 29.7 s for 30 s of true time: the ceiling of
        // 29.7 s is 30 s; it never understates.
        assert_eq!(d.true_elapsed_ceiling(29_700_000), 30_000_000);
        assert!(d.true_elapsed_ceiling(1_000_000) > 1_000_000);
        assert_eq!(d.true_elapsed_ceiling(0), 0);
        // A holder trusts 1 % less than the lease on its own clock.
        assert_eq!(d.holder_trust(30_000_000), 29_700_000);
    }

    #[test]
    fn holder_stops_before_voters_expire() {
        // Worst case: holder clock slow by d (trusts longest in true time), voter clock fast
        // by d (expires earliest in true time). Holder's true trust ends at trust / (1 - d);
        // the voter's floor exceeds the lease only after true time > lease.
        let d = Drift::from_ppm(50_000);
        let lease = 10_000_000u64;
        let holder_true_end = d.holder_trust(lease) as f64 / 0.95;
        assert!(holder_true_end <= lease as f64);
        let voter_measured_at_lease = (lease as f64 * 1.05) as u64;
        assert!(!is_expired(d.true_elapsed_floor(voter_measured_at_lease), lease));
    }

    #[test]
    fn expiry_is_strict() {
        assert!(!is_expired(10, 10));
        assert!(is_expired(11, 10));
    }
}
