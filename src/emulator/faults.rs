//! Fault and latency injection for the emulator, set from config or flags: what to inject
//! (`suites::faults::FaultConfig`), and the one place that draws the dice, applies them and counts every
//! injection per fault kind and API ([`FaultInjector`]), so a test can prove its faults happened.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::base::{ApiError, Dialect};
use crate::suites::faults::{FaultConfig, Latency, WorkerCrash};
use crate::suites::profile;

/// Draws one delay from `latency` with `rng`.
fn draw(latency: &Latency, rng: &mut StdRng) -> Duration {
    if latency.max_ms <= latency.min_ms {
        return Duration::from_millis(latency.min_ms);
    }
    Duration::from_millis(rng.random_range(latency.min_ms..=latency.max_ms))
}

/// Fault kinds as counted.
pub mod kind {
    /// Latency added to an API call.
    pub const CALL_LATENCY: &str = "call_latency";
    /// An API call answered 429.
    pub const HTTP_429: &str = "http_429";
    /// An API call answered 503.
    pub const HTTP_503: &str = "http_503";
    /// Latency added before an execution starts.
    pub const START_LATENCY: &str = "execution_start_latency";
    /// An execution that failed to start.
    pub const START_FAILURE: &str = "execution_start_failure";
    /// A task container whose worker was armed to crash.
    pub const WORKER_CRASH: &str = "worker_crash";
    /// Latency drawn from the profile (counted per operation key or method id).
    pub const PROFILE_LATENCY: &str = "profile_latency";
    /// An `operations.wait` made to return before its operation was done.
    pub const WAIT_EARLY: &str = "operations_wait_early";
    /// A media download cut halfway.
    pub const BROKEN_DOWNLOAD: &str = "broken_download";
    /// An upload committed and its answer replaced by a 503.
    pub const LOST_RESPONSE: &str = "lost_response";
}

/// What a [`FaultInjector`] has injected so far: the seed, and per kind, per API, how often.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// The seed the dice run with.
    pub seed: u64,
    /// kind -> API (endpoint name, or "run.executions" for execution faults) -> count.
    pub injected: BTreeMap<String, BTreeMap<String, u64>>,
    /// Total injected milliseconds of latency per kind.
    pub latency_ms: BTreeMap<String, u64>,
}

impl FaultCounts {
    /// How many faults of `kind` were injected, over every API.
    pub fn total(&self, kind: &str) -> u64 {
        self.injected
            .get(kind)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// How many faults of `kind` were injected on APIs whose name starts with `prefix`.
    pub fn on(&self, kind: &str, prefix: &str) -> u64 {
        self.injected
            .get(kind)
            .map(|m| {
                m.iter()
                    .filter(|(api, _)| api.starts_with(prefix))
                    .map(|(_, n)| n)
                    .sum()
            })
            .unwrap_or(0)
    }
}

struct Dice {
    rng: StdRng,
    counts: FaultCounts,
    crashes_left: u32,
    crash_skip_left: u32,
    breaks_left: u32,
    losses_left: u32,
}

/// The emulator's one fault layer: both API halves and the execution runner ask it.
pub struct FaultInjector {
    cfg: FaultConfig,
    dice: Mutex<Dice>,
}

impl std::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Default for FaultInjector {
    fn default() -> Self {
        Self::new(FaultConfig::default())
    }
}

impl FaultInjector {
    /// An injector for `cfg`, seeded with `cfg.seed` (or a random seed).
    pub fn new(cfg: FaultConfig) -> Self {
        let seed = cfg.seed.unwrap_or_else(rand::random);
        let crashes_left = match (cfg.worker_crash, cfg.worker_crash_count) {
            (None, _) => 0,
            (Some(_), 0) => 1,
            (Some(_), n) => n,
        };
        FaultInjector {
            dice: Mutex::new(Dice {
                rng: StdRng::seed_from_u64(seed),
                counts: FaultCounts {
                    seed,
                    ..FaultCounts::default()
                },
                crashes_left,
                crash_skip_left: cfg.worker_crash_skip,
                breaks_left: cfg.broken_downloads,
                losses_left: cfg.lost_insert_responses,
            }),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.cfg
    }

    /// What was injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.lock().counts.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dice> {
        self.dice.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(d: &mut Dice, kind: &str, api: &str) {
        *d.counts
            .injected
            .entry(kind.to_string())
            .or_default()
            .entry(api.to_string())
            .or_default() += 1;
    }

    fn latency(d: &mut Dice, kind: &str, api: &str, l: &Latency) -> Duration {
        if l.is_zero() {
            return Duration::ZERO;
        }
        let delay = draw(l, &mut d.rng);
        Self::count(d, kind, api);
        *d.counts.latency_ms.entry(kind.to_string()).or_default() += delay.as_millis() as u64;
        delay
    }

    fn draw(d: &mut Dice, key: &str, dist: &profile::Dist) -> Duration {
        let delay = dist.quantile(d.rng.random::<f64>());
        Self::count(d, kind::PROFILE_LATENCY, key);
        *d.counts
            .latency_ms
            .entry(kind::PROFILE_LATENCY.to_string())
            .or_default() += delay.as_millis() as u64;
        delay
    }

    /// A delay drawn for lifecycle phase `key` of the profile (zero without one).
    pub fn phase_delay(&self, key: &str) -> Duration {
        let Some(dist) = self.cfg.profile.as_ref().and_then(|p| p.phase(key)) else {
            return Duration::ZERO;
        };
        Self::draw(&mut self.lock(), key, dist)
    }

    /// An image pull of `size_bytes`: the profile's fixed part plus the size at its pull rate.
    pub fn image_pull_delay(&self, size_bytes: u64) -> Duration {
        let base = self.phase_delay(profile::EXEC_IMAGE_PULL);
        let rate = self
            .cfg
            .profile
            .as_ref()
            .map_or(0.0, |p| p.lifecycle.image_pull_mib_per_s);
        if rate <= 0.0 {
            return base;
        }
        base + Duration::from_secs_f64(size_bytes as f64 / (rate * 1024.0 * 1024.0))
    }

    /// How long moving `bytes` through the Storage API takes at the profile's rate.
    pub fn transfer_delay(&self, bytes: u64) -> Duration {
        match self
            .cfg
            .profile
            .as_ref()
            .and_then(|p| p.throughput.as_ref())
        {
            Some(t) if bytes > 0 => {
                Duration::from_secs_f64(bytes as f64 / (t.applied_mib_s() * 1024.0 * 1024.0))
            }
            _ => Duration::ZERO,
        }
    }

    /// Whether this `operations.wait` returns before its operation is done, and after how
    /// long (`None`: it waits as asked).
    pub fn wait_returns_early(&self) -> Option<Duration> {
        let p = self.cfg.profile.as_ref()?;
        let prob = p.lifecycle.wait_early_probability;
        let dist = p.phase(profile::WAIT_EARLY)?;
        if prob <= 0.0 {
            return None;
        }
        let mut d = self.lock();
        if d.rng.random::<f64>() >= prob {
            return None;
        }
        Self::count(&mut d, kind::WAIT_EARLY, "run.operations.wait");
        Some(Self::draw(&mut d, profile::WAIT_EARLY, dist))
    }

    /// The fault layer of every API call: applies the configured latency, then the 429/503
    /// dice, for `endpoint` (e.g. "storage.objects.insert", "run.jobs.run"); `Err` is the
    /// answer to send, worded and shaped as the API of `dialect` words it.
    pub async fn inject(&self, endpoint: &str, dialect: Dialect) -> Result<(), ApiError> {
        let Some(status) = self.call(endpoint).await else {
            return Ok(());
        };
        Err(match (dialect, status) {
            (Dialect::Storage, 429) => {
                ApiError::rate_limited(format!("injected fault: rate limit exceeded on {endpoint}"))
            }
            (Dialect::Storage, _) => {
                ApiError::unavailable(format!("injected fault: service unavailable on {endpoint}"))
            }
            (Dialect::Run, 429) => {
                ApiError::rate_limited(format!("Quota exceeded (injected fault on {endpoint})."))
                    .in_dialect(Dialect::Run)
            }
            (Dialect::Run, _) => ApiError::unavailable(format!(
                "The service is currently unavailable (injected fault on {endpoint})."
            ))
            .in_dialect(Dialect::Run),
        })
    }

    /// Applies the call latency for `endpoint`, then rolls the 429/503 dice: `Some(status)` is
    /// the error status to answer with.
    pub async fn call(&self, endpoint: &str) -> Option<u16> {
        if self.cfg.is_quiet() {
            return None;
        }
        let (delay, status) = {
            let mut d = self.lock();
            let mut delay =
                Self::latency(&mut d, kind::CALL_LATENCY, endpoint, &self.cfg.call_latency);
            if let Some(dist) = self.cfg.profile.as_ref().and_then(|p| p.call(endpoint)) {
                delay += Self::draw(&mut d, endpoint, dist);
            }
            let p = |m: &BTreeMap<String, f64>| {
                m.get(endpoint)
                    .or_else(|| m.get("*"))
                    .copied()
                    .unwrap_or(0.0)
            };
            let (p429, p503) = (p(&self.cfg.p429), p(&self.cfg.p503));
            let status = if p429 > 0.0 && d.rng.random::<f64>() < p429 {
                Self::count(&mut d, kind::HTTP_429, endpoint);
                Some(429)
            } else if p503 > 0.0 && d.rng.random::<f64>() < p503 {
                Self::count(&mut d, kind::HTTP_503, endpoint);
                Some(503)
            } else {
                None
            };
            (delay, status)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        status
    }

    /// The delay before an execution's containers start.
    pub fn execution_start_delay(&self) -> Duration {
        let mut d = self.lock();
        Self::latency(
            &mut d,
            kind::START_LATENCY,
            "run.executions",
            &self.cfg.execution_start_latency,
        )
    }

    /// True when this execution is to fail to start.
    pub fn execution_start_fails(&self) -> bool {
        let p = self.cfg.p_execution_start_failure;
        if p <= 0.0 {
            return false;
        }
        let mut d = self.lock();
        let fails = d.rng.random::<f64>() < p;
        if fails {
            Self::count(&mut d, kind::START_FAILURE, "run.executions");
        }
        fails
    }

    /// True when this media download is to be cut halfway (while the budget lasts).
    pub fn break_download(&self) -> bool {
        let mut d = self.lock();
        if d.breaks_left == 0 {
            return false;
        }
        d.breaks_left -= 1;
        Self::count(&mut d, kind::BROKEN_DOWNLOAD, "storage.objects.get");
        true
    }

    /// True when this committed upload's answer is to be replaced by a 503.
    pub fn lose_insert_response(&self) -> bool {
        let mut d = self.lock();
        if d.losses_left == 0 {
            return false;
        }
        d.losses_left -= 1;
        Self::count(&mut d, kind::LOST_RESPONSE, "storage.objects.insert");
        true
    }

    /// The crash point to arm the next task container's worker with, while the budget lasts.
    pub fn arm_worker_crash(&self) -> Option<WorkerCrash> {
        let at = self.cfg.worker_crash?;
        let mut d = self.lock();
        if d.crashes_left == 0 {
            return None;
        }
        if d.crash_skip_left > 0 {
            d.crash_skip_left -= 1;
            return None;
        }
        d.crashes_left -= 1;
        Self::count(&mut d, kind::WORKER_CRASH, at.as_str());
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(seed: u64) -> FaultConfig {
        FaultConfig {
            seed: Some(seed),
            call_latency: Latency {
                min_ms: 0,
                max_ms: 3,
            },
            p429: BTreeMap::from([("*".to_string(), 0.2)]),
            p503: BTreeMap::from([("*".to_string(), 0.2)]),
            ..FaultConfig::default()
        }
    }

    #[tokio::test]
    async fn the_same_seed_draws_the_same_faults_and_counts_them() {
        let run = |seed| async move {
            let f = FaultInjector::new(noisy(seed));
            let mut seq = Vec::new();
            for i in 0..200 {
                seq.push(f.call(if i % 2 == 0 { "a.get" } else { "b.put" }).await);
            }
            (seq, f.counts())
        };
        let (a, ca) = run(7).await;
        let (b, cb) = run(7).await;
        assert_eq!(a, b, "one seed, one sequence");
        assert_eq!(ca, cb);
        let n429 = a.iter().filter(|s| **s == Some(429)).count() as u64;
        let n503 = a.iter().filter(|s| **s == Some(503)).count() as u64;
        assert_eq!(ca.total(kind::HTTP_429), n429);
        assert_eq!(ca.total(kind::HTTP_503), n503);
        assert!(n429 > 10 && n503 > 10, "{n429} {n503}");
        assert_eq!(
            ca.on(kind::HTTP_429, "a.") + ca.on(kind::HTTP_429, "b."),
            n429
        );
        assert_eq!(ca.seed, 7);
        let (c, _) = run(8).await;
        assert_ne!(a, c, "another seed, another sequence");
    }

    #[test]
    fn worker_crashes_are_armed_while_the_budget_lasts() {
        let f = FaultInjector::new(FaultConfig {
            worker_crash: Some(WorkerCrash::BeforeClaim),
            worker_crash_count: 2,
            worker_crash_skip: 1,
            ..FaultConfig::default()
        });
        assert_eq!(f.arm_worker_crash(), None, "the first container is skipped");
        assert_eq!(f.arm_worker_crash(), Some(WorkerCrash::BeforeClaim));
        assert_eq!(f.arm_worker_crash(), Some(WorkerCrash::BeforeClaim));
        assert_eq!(f.arm_worker_crash(), None);
        assert_eq!(f.counts().total(kind::WORKER_CRASH), 2);
        assert!(FaultInjector::default().arm_worker_crash().is_none());
    }

    #[test]
    fn a_seed_alone_is_quiet() {
        assert!(
            FaultConfig {
                seed: Some(3),
                ..FaultConfig::default()
            }
            .is_quiet()
        );
        assert!(!noisy(1).is_quiet());
    }
}
