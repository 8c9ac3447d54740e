//! What the twin injects: flat latencies, faults, a worker crash point and the latency profile
//! on top ([`FaultConfig`]). Plain settings, recorded in reports with a backend's origin;
//! `emulator::faults::FaultInjector` is what draws and applies them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::profile::LatencyProfile;

/// A latency distribution in milliseconds: uniform between `min_ms` and `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Latency {
    /// Lower bound, ms.
    pub min_ms: u64,
    /// Upper bound, ms.
    pub max_ms: u64,
}

impl Latency {
    /// True when it adds nothing.
    pub fn is_zero(&self) -> bool {
        self.min_ms == 0 && self.max_ms == 0
    }
}

/// Where an armed worker crashes on purpose (see [`FaultConfig::worker_crash`]); the value is
/// passed to task containers as `SANDBOX_EXECUTOR_CRASH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerCrash {
    /// When the first request shows up, before claiming it.
    BeforeClaim,
    /// After running the first request, before its answer is in place.
    BeforeAnswer,
}

impl WorkerCrash {
    /// The `SANDBOX_EXECUTOR_CRASH` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerCrash::BeforeClaim => "before-claim",
            WorkerCrash::BeforeAnswer => "before-answer",
        }
    }
}

/// What faults the emulator injects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FaultConfig {
    /// Seed of the dice (latency draws, 429/503, start failures); random when `None`. The seed
    /// in use is reported with the counts, so a failing run can be replayed.
    pub seed: Option<u64>,
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
    /// Arms the workers of the next `worker_crash_count` task containers to crash at this point.
    pub worker_crash: Option<WorkerCrash>,
    /// How many task containers get an armed worker (0 with `worker_crash` set means 1).
    pub worker_crash_count: u32,
    /// How many task containers start unarmed before the first armed one.
    pub worker_crash_skip: u32,
    /// The latency and lifecycle profile sampled on top of the flat latencies above (API
    /// calls by method and Storage class, transfers, job-create operations, execution start
    /// phases, completion visibility, early `operations.wait` returns); `None` adds nothing.
    pub profile: Option<Box<LatencyProfile>>,
    /// The next this many media downloads of 2 bytes or more send half their bytes and then
    /// break the connection (as a stream cut in transit).
    pub broken_downloads: u32,
    /// The next this many multipart uploads are committed and then answered 503, as an
    /// answer lost on the way back.
    pub lost_insert_responses: u32,
}

impl FaultConfig {
    /// True when nothing is injected.
    pub fn is_quiet(&self) -> bool {
        FaultConfig {
            seed: None,
            profile: None,
            ..self.clone()
        } == FaultConfig::default()
            && self.profile.as_ref().is_none_or(|p| p.is_empty())
    }

    /// The name of the profile in use ("none" without one): what reports label the twin with.
    pub fn profile_name(&self) -> &str {
        self.profile.as_ref().map_or("none", |p| p.name.as_str())
    }
}
