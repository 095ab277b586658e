//! A scope's history of hold durations, and the auto lease chosen from it.
//!
//! Ended holds are counted in one sparse log-scale histogram per day, for the last
//! `MAX_WINDOW_DAYS` days: a record's size is bounded whatever the traffic (at most
//! `MAX_WINDOW_DAYS × BUCKETS` counters, and typically a handful). Everything here is integer
//! arithmetic on the replicated record, so every node chooses the same lease.
//!
//! The rule (`"timeout": "auto"`): with at least `MIN_HOLDS` holds released in the learning
//! window, the lease is 1.5 × the upper bound of the histogram bucket that holds the 99th
//! percentile (with fewer than 100 holds, that is the longest), clamped to `[min, max]`; with
//! fewer, it is `max`. Holds that expired are not counted (they measure the lease, not the
//! work), nor grants cancelled before their holder heard of them. Buckets are a quarter of a
//! doubling wide (19 %), so the percentile is over-estimated by at most that much.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

pub const DAY_US: u64 = 86_400_000_000;
/// The longest learning window, and so how long a hold is remembered.
pub const MAX_WINDOW_DAYS: u8 = 30;
/// Fewer holds than this in the window say too little: the lease is the maximum.
pub const MIN_HOLDS: u64 = 10;
/// Buckets per doubling of the duration, and how many there are (the last one is open).
const PER_DOUBLING: u32 = 4;
const BUCKETS: u32 = 128;
/// 2^(i/4) for i = 0..=4, scaled by 10,000.
const QUARTERS: [u64; 5] = [10_000, 11_892, 14_142, 16_818, 20_000];

/// How an auto lease is chosen (`"timeout": "auto"` and its bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoLease {
    pub min_us: u64,
    pub max_us: u64,
    /// Holds that ended within this many days count (1..=`MAX_WINDOW_DAYS`).
    pub window_days: u8,
}

/// What an auto lease was chosen from, for the client's `timeout_source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoChoice {
    /// Holds that ended in the window.
    pub holds: u64,
    /// The 99th percentile's bucket bound, if there were at least `MIN_HOLDS`.
    pub p99_us: Option<u64>,
    pub window_days: u8,
}

/// The holds that ended during one day, by duration bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Day {
    /// Lower bound of the time since this day's histogram was opened.
    pub age_floor_us: u64,
    /// `(bucket, count)`, sorted by bucket; only non-empty buckets.
    pub buckets: Vec<(u8, u32)>,
}

/// Per-day histograms, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldHistory {
    pub days: Vec<Day>,
}

impl HoldHistory {
    /// Ages every day by a lower bound of the time passed and forgets the ones past the
    /// longest window.
    pub fn advance(&mut self, elapsed_us: u64) {
        for d in &mut self.days {
            d.age_floor_us = d.age_floor_us.saturating_add(elapsed_us);
        }
        self.days.retain(|d| d.age_floor_us < DAY_US * u64::from(MAX_WINDOW_DAYS));
    }

    /// Counts one ended hold.
    pub fn count(&mut self, held_us: u64) {
        if self.days.last().is_none_or(|d| d.age_floor_us >= DAY_US) {
            self.days.push(Day::default());
        }
        let Some(day) = self.days.last_mut() else { return };
        let bucket = bucket_of(held_us);
        match day.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => day.buckets[at].1 = day.buckets[at].1.saturating_add(1),
            Err(at) => day.buckets.insert(at, (bucket, 1)),
        }
    }

    /// The lease for an auto request, and what it was chosen from.
    pub fn choose(&self, rule: &AutoLease) -> (u64, AutoChoice) {
        let window_us = DAY_US * u64::from(rule.window_days);
        let mut counts = [0u64; BUCKETS as usize];
        for day in self.days.iter().filter(|d| d.age_floor_us < window_us) {
            for (b, n) in &day.buckets {
                if let Some(count) = counts.get_mut(usize::from(*b)) {
                    *count += u64::from(*n);
                }
            }
        }
        let holds: u64 = counts.iter().sum();
        let choice = |p99_us| AutoChoice { holds, p99_us, window_days: rule.window_days };
        if holds < MIN_HOLDS {
            return (rule.max_us, choice(None));
        }
        // The smallest bucket by which at least 99 % of the holds had ended.
        let rank = (holds * 99).div_ceil(100);
        let mut seen = 0;
        let bucket = counts.iter().position(|n| {
            seen += n;
            seen >= rank
        });
        let p99_us = upper_us(bucket.unwrap_or(BUCKETS as usize - 1) as u32);
        let lease = headroom(p99_us).clamp(rule.min_us, rule.max_us.max(rule.min_us));
        (lease, choice(Some(p99_us)))
    }
}

/// 1.5 × the percentile.
pub fn headroom(p99_us: u64) -> u64 {
    p99_us.saturating_mul(3) / 2
}

/// The bucket of a duration: `4·log2(ms)` rounded down, so bucket `b` holds durations below
/// `upper_us(b)`; everything under 1 ms is bucket 0 and everything over ~42 days the last.
fn bucket_of(held_us: u64) -> u8 {
    let ms = (held_us / 1000).max(1);
    let k = 63 - ms.leading_zeros();
    // Quarters of this doubling that `ms` reaches: ms ≥ 2^k · 2^(q/4).
    let q = (1..4).filter(|q| u128::from(ms) * 10_000 >= (1u128 << k) * u128::from(QUARTERS[*q])).count() as u32;
    (k * PER_DOUBLING + q).min(BUCKETS - 1) as u8
}

/// The (exclusive) upper bound of a bucket, in microseconds.
fn upper_us(bucket: u32) -> u64 {
    let (k, q) = (bucket / PER_DOUBLING, bucket % PER_DOUBLING);
    let ms = ((1u128 << k) * u128::from(QUARTERS[q as usize + 1])).div_ceil(10_000);
    u64::try_from(ms * 1000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: AutoLease = AutoLease { min_us: 5_000_000, max_us: 300_000_000, window_days: 7 };

    #[test]
    fn buckets_are_a_quarter_doubling_wide_and_bound_what_they_hold() {
        for ms in [1, 2, 3, 7, 100, 999, 1000, 1189, 1190, 42_000, 3_600_000, 86_400_000] {
            let b = bucket_of(ms * 1000);
            assert!(ms * 1000 < upper_us(u32::from(b)), "{ms} ms, bucket {b}");
            assert!(b == 0 || ms * 1000 >= upper_us(u32::from(b) - 1), "{ms} ms, bucket {b}");
            assert!(upper_us(u32::from(b)) <= ms * 1000 * 1195 / 1000 + 1000, "{ms} ms: at most 19 % above");
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), 127);
    }

    #[test]
    fn too_little_history_gives_the_maximum() {
        let mut h = HoldHistory::default();
        for _ in 0..9 {
            h.count(2_000_000);
        }
        assert_eq!(h.choose(&RULE), (300_000_000, AutoChoice { holds: 9, p99_us: None, window_days: 7 }));
    }

    #[test]
    fn the_lease_is_one_and_a_half_times_the_p99_within_the_bounds() {
        let mut h = HoldHistory::default();
        for _ in 0..99 {
            h.count(20_000_000);
        }
        h.count(200_000_000); // the one slowest hold is the 1 % above p99
        let (lease, choice) = h.choose(&RULE);
        let p99 = choice.p99_us.unwrap();
        assert!((20_000_000..24_000_000).contains(&p99), "{p99}");
        assert_eq!(lease, p99 * 3 / 2);
        assert_eq!(choice.holds, 100);
        // Short holds are clamped up to the minimum, long ones down to the maximum.
        let mut short = HoldHistory::default();
        let mut long = HoldHistory::default();
        for _ in 0..20 {
            short.count(100_000);
            long.count(3_600_000_000);
        }
        assert_eq!(short.choose(&RULE).0, 5_000_000);
        assert_eq!(long.choose(&RULE).0, 300_000_000);
    }

    #[test]
    fn holds_older_than_the_window_are_not_counted_and_old_days_are_dropped() {
        let mut h = HoldHistory::default();
        for _ in 0..50 {
            h.count(100_000_000);
        }
        h.advance(3 * DAY_US);
        for _ in 0..50 {
            h.count(10_000_000);
        }
        assert_eq!(h.days.len(), 2);
        assert_eq!(h.choose(&RULE).1.holds, 100);
        let recent = AutoLease { window_days: 2, ..RULE };
        let (lease, choice) = h.choose(&recent);
        assert_eq!(choice.holds, 50);
        assert!(lease < 20_000_000, "only the short recent holds count: {lease}");
        h.advance(u64::from(MAX_WINDOW_DAYS) * DAY_US);
        assert!(h.days.is_empty());
    }

    #[test]
    fn the_size_is_bounded_whatever_the_traffic() {
        let mut h = HoldHistory::default();
        let mut held = 1u64;
        for _ in 0..80 {
            for _ in 0..200 {
                held = held.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                h.count(held >> 20);
            }
            h.advance(DAY_US / 2);
        }
        assert!(h.days.len() <= usize::from(MAX_WINDOW_DAYS));
        assert!(h.days.iter().all(|d| d.buckets.len() <= BUCKETS as usize));
    }
}
