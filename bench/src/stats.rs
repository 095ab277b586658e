//! Latency percentiles and the numbers a row reports.

use std::time::Duration;

/// The `p`th percentile (0–100) of `samples`, by nearest rank; zero if there are none.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil().max(1.0) as usize;
    samples[rank.min(samples.len()) - 1]
}

/// Milliseconds with three decimals, for tables and JSON alike.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub fn per_second(count: usize, over: Duration) -> f64 {
    if over.is_zero() {
        return 0.0;
    }
    (count as f64 / over.as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&mut v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&mut v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&mut [], 50.0), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(1234)), 1.234);
        assert_eq!(per_second(30, Duration::from_secs(2)), 15.0);
    }
}
