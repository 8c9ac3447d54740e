//! Latency summaries from raw samples (hdrhistogram, microsecond resolution, 3 significant digits).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::suites::Statistic;

/// Highest latency a histogram records: one hour in microseconds (longer values are clamped
/// and counted in `clamped`).
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency distribution summary, seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    /// Samples recorded (successful ones only).
    pub count: u64,
    /// Smallest, s.
    pub min_seconds: f64,
    /// Median, s.
    pub p50_seconds: f64,
    /// 90th percentile, s.
    pub p90_seconds: f64,
    /// 95th percentile, s.
    pub p95_seconds: f64,
    /// 99th percentile, s.
    pub p99_seconds: f64,
    /// Largest, s.
    pub max_seconds: f64,
    /// Mean, s.
    pub mean_seconds: f64,
    /// Samples above the histogram's range (clamped to one hour).
    pub clamped: u64,
}

impl Summary {
    /// Summarises durations in microseconds; `None` when there are none.
    pub fn from_micros(values: impl IntoIterator<Item = u64>) -> Option<Summary> {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_MICROS, 3).ok()?;
        let mut clamped = 0;
        let mut sum: u128 = 0;
        for v in values {
            let v = v.max(1);
            if v > MAX_MICROS {
                clamped += 1;
            }
            sum += u128::from(v.min(MAX_MICROS));
            h.saturating_record(v);
        }
        if h.is_empty() {
            return None;
        }
        let s = |v: u64| v as f64 / 1e6;
        Some(Summary {
            count: h.len(),
            min_seconds: s(h.min()),
            p50_seconds: s(h.value_at_quantile(0.50)),
            p90_seconds: s(h.value_at_quantile(0.90)),
            p95_seconds: s(h.value_at_quantile(0.95)),
            p99_seconds: s(h.value_at_quantile(0.99)),
            max_seconds: s(h.max()),
            mean_seconds: (sum as f64 / h.len() as f64) / 1e6,
            clamped,
        })
    }

    /// The named statistic in seconds (`Rate` has no meaning here and yields `None`).
    pub fn get(&self, stat: Statistic) -> Option<f64> {
        Some(match stat {
            Statistic::P50 => self.p50_seconds,
            Statistic::P90 => self.p90_seconds,
            Statistic::P95 => self.p95_seconds,
            Statistic::P99 => self.p99_seconds,
            Statistic::Max => self.max_seconds,
            Statistic::Mean => self.mean_seconds,
            Statistic::Rate => return None,
        })
    }
}

/// Converts seconds (as written in events) back to whole microseconds.
pub fn seconds_to_micros(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1e6).round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=1000 ms
        let s = Summary::from_micros((1..=1000u64).map(|ms| ms * 1000)).unwrap();
        assert_eq!(s.count, 1000);
        assert!((s.p50_seconds - 0.5).abs() < 0.001, "{}", s.p50_seconds);
        assert!((s.p99_seconds - 0.99).abs() < 0.001, "{}", s.p99_seconds);
        assert!((s.max_seconds - 1.0).abs() < 0.001);
        assert!((s.mean_seconds - 0.5005).abs() < 1e-9);
        assert_eq!(s.get(Statistic::Rate), None);
    }

    #[test]
    fn empty_and_huge_values() {
        assert!(Summary::from_micros(Vec::new()).is_none());
        let s = Summary::from_micros([10, MAX_MICROS * 2]).unwrap();
        assert_eq!(s.clamped, 1);
        assert_eq!(seconds_to_micros(0.000_123), 123);
        assert_eq!(seconds_to_micros(f64::NAN), 0);
    }
}
