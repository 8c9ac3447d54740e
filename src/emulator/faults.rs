//! Fault and latency injection for the emulator, set from config or flags.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A latency distribution in milliseconds: uniform between `min_ms` and `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Latency {
    /// Lower bound, ms.
    pub min_ms: u64,
    /// Upper bound, ms.
    pub max_ms: u64,
}

impl Latency {
    /// Draws one delay.
    pub fn sample(&self) -> Duration {
        if self.max_ms <= self.min_ms {
            return Duration::from_millis(self.min_ms);
        }
        let span = self.max_ms - self.min_ms;
        Duration::from_millis(self.min_ms + (rand::random::<u64>() % (span + 1)))
    }
}

/// What faults the emulator injects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FaultConfig {
    /// Added to every API call.
    pub call_latency: Latency,
    /// Added before an execution's containers start.
    pub execution_start_latency: Latency,
    /// Probability (0..1) of answering 429, per endpoint name ("*" for all).
    pub p429: BTreeMap<String, f64>,
    /// Probability (0..1) of answering 503, per endpoint name ("*" for all).
    pub p503: BTreeMap<String, f64>,
    /// Probability (0..1) that an execution fails to start.
    pub p_execution_start_failure: f64,
}

impl FaultConfig {
    /// True when nothing is injected.
    pub fn is_quiet(&self) -> bool {
        *self == FaultConfig::default()
    }

    /// The HTTP status to inject for `endpoint`, if the dice say so.
    pub fn injected_status(&self, endpoint: &str) -> Option<u16> {
        let p = |m: &BTreeMap<String, f64>| {
            m.get(endpoint)
                .or_else(|| m.get("*"))
                .copied()
                .unwrap_or(0.0)
        };
        if rand::random::<f64>() < p(&self.p429) {
            return Some(429);
        }
        if rand::random::<f64>() < p(&self.p503) {
            return Some(503);
        }
        None
    }
}
