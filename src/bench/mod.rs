//! The benchmark engine: measures each backend and keeps every raw sample, with the figures
//! summarised from them; judging those against the tables is `acceptance`'s. `run` never
//! retries an operation; every failure is counted with its class.

pub mod cloudrun_probe;
pub mod data;
pub mod environment;
pub mod events;
#[cfg(any(test, feature = "test-doubles"))]
pub mod memory;
pub mod phases;
pub mod raw_docker;
pub mod stats;

mod engine;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backends::OpenBackend;
use crate::protocol::{BackendOrigin, ErrorKind, Sandbox, SandboxError, UploadBody};
use crate::suites::{MetricId, RowVerdict, Statistic};
use environment::Environment;

pub use engine::run;
pub use events::{Event, EventKind, EventWriter};
pub use stats::Summary;

/// Cancels `token` on the first Ctrl-C (SIGINT), so a run stops cleanly and returns a partial
/// report; a second Ctrl-C is left to the default handler's successor (the process keeps running
/// until `run` returns).
pub fn cancel_on_ctrl_c(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!(
                "interrupted: finishing the current operation and writing a partial report"
            );
            token.cancel();
        }
    })
}

/// Version of the bench report JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Default rounds of the mixed workload: 100 x 7 = 700 cheap operations, so that with the other
/// measurements each backend's success-rate rows stand on more than the 600 operations a
/// "> 99.5 %" claim needs (rule of three, `acceptance::required_samples`). The "< 0.1 %"
/// error-rate rows need 3000 (`--mixed-rounds 430`); by default they say "insufficient samples".
/// On Cloud Run a round costs about 5 s on the emulator of a loaded 2-core host (debug build).
pub const DEFAULT_MIXED_ROUNDS: usize = 100;

/// Default lanes of the mixed workload: sessions on the one sandbox that run their rounds at
/// once, as an agent issuing parallel tool calls does. The operations and their count are
/// those of a one-lane run; only their overlap differs (each lane has its own session and file).
pub const DEFAULT_MIXED_LANES: usize = 8;

/// The lanes a mixed workload of `rounds` rounds runs in: `lanes`, at least 1, at most one per
/// round.
pub fn effective_lanes(lanes: usize, rounds: usize) -> usize {
    lanes.clamp(1, rounds.max(1))
}

/// How long one part of a backend's run took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartTiming {
    /// The part ("cold starts", "mixed workload", ...).
    pub part: String,
    /// Wall time, s.
    pub seconds: f64,
}

/// 10 MB as the benchmark transfers it (10 MiB).
pub const SMALL_TRANSFER_BYTES: u64 = 10 * 1024 * 1024;
/// 500 MB as the benchmark transfers it (500 MiB).
pub const LARGE_TRANSFER_BYTES: u64 = 500 * 1024 * 1024;

/// What one sample measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measurement {
    /// create + ready + first command.
    ColdStart,
    /// A stateful command in a live sandbox.
    WarmExec,
    /// The backend-specific raw baseline (e.g. a bare Docker exec of `true`).
    RawBaseline,
    /// 10 MiB upload.
    #[serde(rename = "upload_10mb")]
    Upload10Mb,
    /// 10 MiB download.
    #[serde(rename = "download_10mb")]
    Download10Mb,
    /// 500 MiB upload.
    #[serde(rename = "upload_500mb")]
    Upload500Mb,
    /// 500 MiB download.
    #[serde(rename = "download_500mb")]
    Download500Mb,
    /// 500 MiB upload through the backend's bare bulk path (Docker: what `docker cp` uses).
    #[serde(rename = "raw_upload_500mb")]
    RawUpload500Mb,
    /// 500 MiB download through the backend's bare bulk path.
    #[serde(rename = "raw_download_500mb")]
    RawDownload500Mb,
    /// Start of a background process.
    BackgroundStart,
    /// The mixed workload the success rate is computed over.
    Mixed,
    /// Commands whose cwd and env are checked.
    StateConsistency,
    /// Commands while C sessions run at once.
    Concurrent,
    /// Set-up and teardown operations (counted in the overall rates, not in latency rows).
    Setup,
    /// A browser sandbox's browser, from the sandbox created to its DevTools endpoint
    /// answering (`get_browser`).
    BrowserStart,
    /// A page navigated to a `data:` URL over CDP, loaded, and a script evaluated in it.
    BrowserNavigate,
}

impl Measurement {
    /// Every measurement, in report order.
    pub const ALL: [Measurement; 16] = [
        Measurement::ColdStart,
        Measurement::WarmExec,
        Measurement::RawBaseline,
        Measurement::Upload10Mb,
        Measurement::Download10Mb,
        Measurement::Upload500Mb,
        Measurement::Download500Mb,
        Measurement::RawUpload500Mb,
        Measurement::RawDownload500Mb,
        Measurement::BackgroundStart,
        Measurement::Mixed,
        Measurement::StateConsistency,
        Measurement::Concurrent,
        Measurement::Setup,
        Measurement::BrowserStart,
        Measurement::BrowserNavigate,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Measurement::ColdStart => "cold_start",
            Measurement::WarmExec => "warm_exec",
            Measurement::RawBaseline => "raw_baseline",
            Measurement::Upload10Mb => "upload_10mb",
            Measurement::Download10Mb => "download_10mb",
            Measurement::Upload500Mb => "upload_500mb",
            Measurement::Download500Mb => "download_500mb",
            Measurement::RawUpload500Mb => "raw_upload_500mb",
            Measurement::RawDownload500Mb => "raw_download_500mb",
            Measurement::BackgroundStart => "background_start",
            Measurement::Mixed => "mixed",
            Measurement::StateConsistency => "state_consistency",
            Measurement::Concurrent => "concurrent",
            Measurement::Setup => "setup",
            Measurement::BrowserStart => "browser_start",
            Measurement::BrowserNavigate => "browser_navigate",
        }
    }

    /// Bytes moved per operation, for transfers.
    pub fn transfer_bytes(self) -> Option<u64> {
        match self {
            Measurement::Upload10Mb | Measurement::Download10Mb => Some(SMALL_TRANSFER_BYTES),
            Measurement::Upload500Mb
            | Measurement::Download500Mb
            | Measurement::RawUpload500Mb
            | Measurement::RawDownload500Mb => Some(LARGE_TRANSFER_BYTES),
            _ => None,
        }
    }
}

/// Why a sample failed: an `ErrorKind`, or a result that came back wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Deadline exceeded (the backend's or the harness's).
    Timeout,
    /// Transport failure.
    Network,
    /// Permission denied.
    Permission,
    /// Something did not exist.
    NotFound,
    /// Malformed request.
    InvalidInput,
    /// Capability missing.
    Unsupported,
    /// Other backend failure.
    Backend,
    /// The operation returned, but its result was wrong (bad output, hash mismatch, state lost).
    WrongResult,
}

impl ErrorClass {
    /// The snake_case name (as in events).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Network => "network",
            ErrorClass::Permission => "permission",
            ErrorClass::NotFound => "not_found",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::Unsupported => "unsupported",
            ErrorClass::Backend => "backend",
            ErrorClass::WrongResult => "wrong_result",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<ErrorClass> {
        Some(match s {
            "timeout" => ErrorClass::Timeout,
            "network" => ErrorClass::Network,
            "permission" => ErrorClass::Permission,
            "not_found" => ErrorClass::NotFound,
            "invalid_input" => ErrorClass::InvalidInput,
            "unsupported" => ErrorClass::Unsupported,
            "backend" => ErrorClass::Backend,
            "wrong_result" => ErrorClass::WrongResult,
            _ => return None,
        })
    }
}

impl From<ErrorKind> for ErrorClass {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::Timeout => ErrorClass::Timeout,
            ErrorKind::Network => ErrorClass::Network,
            ErrorKind::Permission => ErrorClass::Permission,
            ErrorKind::NotFound => ErrorClass::NotFound,
            ErrorKind::InvalidInput => ErrorClass::InvalidInput,
            ErrorKind::Unsupported => ErrorClass::Unsupported,
            ErrorKind::Backend => ErrorClass::Backend,
        }
    }
}

/// One raw sample: one operation the harness performed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// What it measured.
    pub measurement: Measurement,
    /// The protocol operation.
    pub op: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Wall time, microseconds.
    pub duration_us: u64,
    /// True when it succeeded and its result was right.
    pub ok: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Exit status of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Error detail (failures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A backend-specific reference measurement (e.g. a bare `docker exec true`), reported next to
/// the harness's warm-exec figure so the harness's own overhead is visible.
#[async_trait]
pub trait RawBaseline: Send + Sync {
    /// What is measured, for the report.
    fn description(&self) -> String;

    /// Runs the reference operation once against the live sandbox.
    async fn run_once(&self, sandbox: &dyn Sandbox) -> Result<(), SandboxError>;

    /// What the bare transfer path is, when the backend has one to compare the 500 MB
    /// transfers with.
    fn transfer_description(&self) -> Option<String> {
        None
    }

    /// Writes `len` bytes of `body` to the absolute `path` through the bare transfer path.
    async fn upload_once(
        &self,
        sandbox: &dyn Sandbox,
        path: &str,
        body: UploadBody,
        len: u64,
    ) -> Result<(), SandboxError> {
        let _ = (path, body, len);
        Err(SandboxError::unsupported(
            sandbox.id(),
            "raw_upload",
            "no bare transfer path",
        ))
    }

    /// Reads the file at the absolute `path` through the bare transfer path; returns the bytes
    /// that crossed (archive framing included).
    async fn download_once(&self, sandbox: &dyn Sandbox, path: &str) -> Result<u64, SandboxError> {
        let _ = path;
        Err(SandboxError::unsupported(
            sandbox.id(),
            "raw_download",
            "no bare transfer path",
        ))
    }
}

/// Options of a bench run.
#[derive(Clone)]
pub struct BenchOptions {
    /// Recorded iterations per measurement.
    pub iterations: usize,
    /// Recorded rounds of the mixed workload (7 cheap operations each: warm execs and small
    /// file operations); they give the success and error-rate rows their sample counts.
    pub mixed_rounds: usize,
    /// Lanes the mixed workload runs in at once (sessions on one sandbox; see
    /// [`DEFAULT_MIXED_LANES`]).
    pub mixed_lanes: usize,
    /// Discarded warm-up runs before each measurement (no samples, no events).
    pub warmup: usize,
    /// Discarded cold starts before the recorded ones; `None`: `warmup` of them (a budget
    /// sets it: on the twin every execution draws its start from the profile, so a warm-up
    /// cold start only costs time).
    pub cold_start_warmup: Option<usize>,
    /// Recorded cold starts (each creates and destroys a sandbox).
    pub cold_start_iterations: usize,
    /// Recorded 500 MiB round trips.
    pub large_transfer_iterations: usize,
    /// Sessions (sandboxes) run at once in the concurrency measurement; 0 skips it.
    pub concurrency: usize,
    /// Recorded browser starts (each creates and destroys a browser sandbox) on backends that
    /// offer a browser; 0 skips the browser measurements. Navigations use `iterations`.
    pub browser_starts: usize,
    /// Include the 500 MiB transfers.
    pub include_large: bool,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Cancel to stop early; what was measured is still returned, marked partial.
    pub cancel: CancellationToken,
    /// Harness deadline for one operation.
    pub op_timeout: Duration,
    /// Harness deadline for one 500 MiB transfer.
    pub large_op_timeout: Duration,
    /// Where execution events go (besides tracing).
    pub events: Option<Arc<EventWriter>>,
    /// Where each backend's figures come from, by backend label.
    pub origins: BTreeMap<String, BackendOrigin>,
    /// Raw baselines, by backend label.
    pub raw_baselines: BTreeMap<String, Arc<dyn RawBaseline>>,
    /// Per-phase probes (cold start and warm command breakdowns), by backend label.
    pub phase_probes: BTreeMap<String, Arc<dyn phases::PhaseProbe>>,
    /// Scratch directory inside each sandbox.
    pub workdir: String,
    /// Keep raw samples in the report.
    pub keep_samples: bool,
    /// Fewer iterations and cold starts for some backends (by label): the Cloud Run twin
    /// under a realistic profile spends tens of seconds per cold start and tens of ms per
    /// Storage call, and the main job must stay short.
    pub budgets: BTreeMap<String, BackendBudget>,
}

/// A backend's own iteration counts (see [`BenchOptions::budgets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendBudget {
    /// Recorded iterations per measurement.
    pub iterations: usize,
    /// Recorded cold starts.
    pub cold_start_iterations: usize,
    /// Discarded cold starts before them (reports from before this field used the run's
    /// warm-up count, 2).
    #[serde(default = "two_warmups")]
    pub cold_start_warmup: usize,
}

fn two_warmups() -> usize {
    2
}

impl BenchOptions {
    /// The options `label` is measured with: its budget, capped by the run's own counts.
    pub fn for_backend(&self, label: &str) -> std::borrow::Cow<'_, BenchOptions> {
        match self.budgets.get(label) {
            Some(b) => std::borrow::Cow::Owned(BenchOptions {
                iterations: b.iterations.min(self.iterations).max(1),
                cold_start_iterations: b.cold_start_iterations.min(self.cold_start_iterations),
                cold_start_warmup: Some(b.cold_start_warmup.min(self.warmup)),
                ..self.clone()
            }),
            None => std::borrow::Cow::Borrowed(self),
        }
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            iterations: 20,
            mixed_rounds: DEFAULT_MIXED_ROUNDS,
            mixed_lanes: DEFAULT_MIXED_LANES,
            warmup: 2,
            cold_start_warmup: None,
            cold_start_iterations: 5,
            large_transfer_iterations: 1,
            concurrency: 4,
            browser_starts: 3,
            include_large: true,
            progress: true,
            cancel: CancellationToken::new(),
            op_timeout: Duration::from_secs(120),
            large_op_timeout: Duration::from_secs(1800),
            events: None,
            origins: BTreeMap::new(),
            raw_baselines: BTreeMap::new(),
            phase_probes: BTreeMap::new(),
            workdir: "/workspace/.sandbox-harness-bench".into(),
            keep_samples: true,
            budgets: BTreeMap::new(),
        }
    }
}

/// The options as recorded in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionsRecord {
    /// Iterations.
    pub iterations: usize,
    /// Rounds of the mixed workload.
    #[serde(default)]
    pub mixed_rounds: usize,
    /// Lanes the mixed workload ran in at once (reports from before lanes ran one).
    #[serde(default = "one_lane")]
    pub mixed_lanes: usize,
    /// Warm-up runs.
    pub warmup: usize,
    /// Cold starts.
    pub cold_start_iterations: usize,
    /// 500 MiB round trips.
    pub large_transfer_iterations: usize,
    /// Concurrency.
    pub concurrency: usize,
    /// Browser starts.
    #[serde(default)]
    pub browser_starts: usize,
    /// 500 MiB transfers included.
    pub include_large: bool,
    /// Per-operation deadline, s.
    pub op_timeout_seconds: f64,
    /// Backends measured with fewer iterations and cold starts, by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, BackendBudget>,
}

impl From<&BenchOptions> for OptionsRecord {
    fn from(o: &BenchOptions) -> Self {
        OptionsRecord {
            iterations: o.iterations,
            mixed_rounds: o.mixed_rounds,
            mixed_lanes: effective_lanes(o.mixed_lanes, o.mixed_rounds),
            warmup: o.warmup,
            cold_start_iterations: o.cold_start_iterations,
            large_transfer_iterations: o.large_transfer_iterations,
            concurrency: o.concurrency,
            browser_starts: o.browser_starts,
            include_large: o.include_large,
            op_timeout_seconds: o.op_timeout.as_secs_f64(),
            budgets: o
                .budgets
                .keys()
                .map(|k| {
                    let b = o.for_backend(k);
                    (
                        k.clone(),
                        BackendBudget {
                            iterations: b.iterations,
                            cold_start_iterations: b.cold_start_iterations,
                            cold_start_warmup: b.cold_start_warmup.unwrap_or(b.warmup),
                        },
                    )
                })
                .collect(),
        }
    }
}

fn one_lane() -> usize {
    1
}

/// Per-measurement figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MeasurementSummary {
    /// Operations attempted.
    pub attempted: u64,
    /// Operations that succeeded with the right result.
    pub succeeded: u64,
    /// Failures by class.
    pub errors: BTreeMap<ErrorClass, u64>,
    /// Latency of successful operations.
    pub latency: Option<Summary>,
    /// Median throughput of transfers, MiB/s.
    pub throughput_p50_mib_per_second: Option<f64>,
}

/// Success and error rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rates {
    /// Every operation the harness performed (all measurements, set-up included).
    pub operations: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// succeeded / operations, percent.
    pub overall_success_percent: Option<f64>,
    /// Success over the mixed workload alone, percent (the table's success rate is `overall_success_percent`).
    pub mixed_success_percent: Option<f64>,
    /// Failures by class, over every operation.
    pub errors_by_class: BTreeMap<ErrorClass, u64>,
    /// Failures by class, percent of every operation.
    pub error_percent_by_class: BTreeMap<ErrorClass, f64>,
}

/// State consistency over the checked commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StateSummary {
    /// Commands whose cwd and env were checked.
    pub checks: u64,
    /// Checks that found cwd or env lost.
    pub losses: u64,
    /// (checks - losses) / checks, percent.
    pub consistency_percent: Option<f64>,
}

/// C sessions at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencySummary {
    /// Sessions run at once.
    pub sessions: usize,
    /// Commands attempted.
    pub commands: u64,
    /// Commands that succeeded.
    pub succeeded: u64,
    /// Wall time of the concurrent phase, s.
    pub wall_seconds: f64,
    /// Successful commands per second over the phase.
    pub throughput_commands_per_second: f64,
    /// Per-command latency under concurrency.
    pub latency: Option<Summary>,
}

/// The raw baseline next to the harness's figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawBaselineSummary {
    /// What the baseline measures.
    pub description: String,
    /// Its latency.
    pub latency: Option<Summary>,
    /// The harness's warm-exec p50, s.
    pub harness_warm_exec_p50_seconds: Option<f64>,
    /// Harness p50 minus baseline p50, s.
    pub overhead_p50_seconds: Option<f64>,
    /// The 500 MB transfers against the bare transfer path, when both were measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferBaseline>,
}

/// The harness's 500 MB transfers next to the backend's bare transfer path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferBaseline {
    /// What the bare path is.
    pub description: String,
    /// Bare upload p50, s.
    pub raw_upload_p50_seconds: Option<f64>,
    /// Bare download p50, s.
    pub raw_download_p50_seconds: Option<f64>,
    /// Harness upload p50 over bare upload p50.
    pub upload_ratio: Option<f64>,
    /// Harness download p50 over bare download p50.
    pub download_ratio: Option<f64>,
}

/// Everything measured for one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// The label given to `run`.
    pub name: String,
    /// `SandboxBackend::name()` (selects the acceptance table).
    pub backend: String,
    /// Where the figures come from.
    pub origin: BackendOrigin,
    /// `origin` in one sentence.
    pub origin_statement: String,
    /// True when the run stopped before this backend's measurements were complete.
    pub partial: bool,
    /// Per-measurement figures.
    pub measurements: BTreeMap<Measurement, MeasurementSummary>,
    /// Latency of every successful `exec_stateful` (any measurement); the monitoring figure.
    pub exec_latency: Option<Summary>,
    /// Rates.
    pub rates: Rates,
    /// State consistency.
    pub state: StateSummary,
    /// Concurrency.
    pub concurrency: Option<ConcurrencySummary>,
    /// Raw baseline.
    pub raw_baseline: Option<RawBaselineSummary>,
    /// Resident memory of the harness process while the 500 MB transfers ran (the embedded
    /// emulator, when used, is in the same process and counted too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_transfer_rss: Option<RssWindow>,
    /// Where the time of a cold start and of a warm command goes, from the backend's phase
    /// probe (none for backends without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<phases::PhaseReport>,
    /// Each table row judged.
    pub verdicts: Vec<RowVerdict>,
    /// Set-up problems that stopped measurements.
    pub setup_errors: Vec<String>,
    /// How long each part of the run took, in order.
    #[serde(default)]
    pub parts: Vec<PartTiming>,
    /// Every raw sample (empty when the caller chose not to keep them).
    pub samples: Vec<Sample>,
}

/// A bench run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// True when cancelled (or a backend could not be completed).
    pub partial: bool,
    /// Why it is partial.
    pub partial_reason: Option<String>,
    /// Host, engine, origin, commit.
    pub environment: Environment,
    /// The options used.
    pub options: OptionsRecord,
    /// One entry per backend, in the order given.
    pub backends: Vec<BackendReport>,
}

impl BenchReport {
    /// The backend report with this label or backend name.
    pub fn backend(&self, name: &str) -> Option<&BackendReport> {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .or_else(|| self.backends.iter().find(|b| b.backend == name))
    }
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// This process's resident set size in KiB (`None` where /proc is not available).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The harness process's resident memory over a stretch of the run, MiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RssWindow {
    /// When the stretch began (what earlier phases left allocated).
    pub start_mib: f64,
    /// The highest sample.
    pub peak_mib: f64,
}

impl RssWindow {
    /// What the stretch itself added at its peak.
    pub fn growth_mib(&self) -> f64 {
        (self.peak_mib - self.start_mib).max(0.0)
    }
}

/// Samples [`rss_kib`] every few milliseconds until dropped, keeping the peak.
pub struct RssSampler {
    start: Option<u64>,
    peak: Arc<std::sync::atomic::AtomicU64>,
    stop: CancellationToken,
}

impl RssSampler {
    /// Starts sampling on the current runtime.
    pub fn start() -> RssSampler {
        use std::sync::atomic::Ordering;
        let start = rss_kib();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(start.unwrap_or(0)));
        let stop = CancellationToken::new();
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                if let Some(k) = rss_kib() {
                    p.fetch_max(k, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        });
        RssSampler { start, peak, stop }
    }

    /// Start and peak so far (`None` when /proc is unreadable).
    pub fn window(&self) -> Option<RssWindow> {
        let start = self.start?;
        let peak = self.peak.load(std::sync::atomic::Ordering::Relaxed);
        Some(RssWindow {
            start_mib: start as f64 / 1024.0,
            peak_mib: peak as f64 / 1024.0,
        })
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Inputs of [`BackendReport::from_samples`] besides the samples.
#[derive(Debug, Clone, Default)]
pub struct BackendContext {
    /// Label.
    pub name: String,
    /// Backend name.
    pub backend: String,
    /// Origin.
    pub origin: BackendOrigin,
    /// Partial?
    pub partial: bool,
    /// (sessions, wall seconds) of the concurrency phase, when it ran.
    pub concurrency: Option<(usize, f64)>,
    /// Raw baseline description, when one ran.
    pub raw_baseline: Option<String>,
    /// Bare transfer path description, when the 500 MB comparison ran.
    pub raw_transfer: Option<String>,
    /// Resident memory during the 500 MB transfers.
    pub large_transfer_rss: Option<RssWindow>,
    /// The phase probe's findings.
    pub phases: Option<phases::PhaseReport>,
    /// Set-up problems.
    pub setup_errors: Vec<String>,
    /// How long each part took.
    pub parts: Vec<PartTiming>,
}

impl BackendReport {
    /// Computes every figure from raw samples; the verdicts are left empty for
    /// `acceptance::judge_backend` to fill in.
    pub fn from_samples(ctx: BackendContext, samples: Vec<Sample>) -> BackendReport {
        let (measurements, rates) = summarise_measurements(&samples);
        let exec_latency = Summary::from_micros(
            samples
                .iter()
                .filter(|s| s.ok && s.op == "exec_stateful")
                .map(|s| s.duration_us),
        );
        let state_samples = samples
            .iter()
            .filter(|s| s.measurement == Measurement::StateConsistency);
        let (mut checks, mut losses) = (0u64, 0u64);
        // A check that errored could not show the state was kept: it counts as a loss (no
        // state command of the bench has an error as its documented answer).
        for s in state_samples {
            checks += 1;
            if !s.ok {
                losses += 1;
            }
        }
        let state = StateSummary {
            checks,
            losses,
            consistency_percent: percent(checks - losses, checks),
        };
        let concurrency = ctx
            .concurrency
            .map(|(sessions, wall)| concurrency_summary(&measurements, sessions, wall));
        let raw_baseline = raw_baseline_summary(ctx.raw_baseline, ctx.raw_transfer, &measurements);
        BackendReport {
            origin_statement: ctx.origin.statement(),
            name: ctx.name,
            backend: ctx.backend,
            origin: ctx.origin,
            partial: ctx.partial,
            measurements,
            exec_latency,
            rates,
            state,
            concurrency,
            raw_baseline,
            large_transfer_rss: ctx.large_transfer_rss,
            phases: ctx.phases,
            verdicts: Vec::new(),
            setup_errors: ctx.setup_errors,
            parts: ctx.parts,
            samples,
        }
    }

    /// The measured figure for a table metric (seconds, or percent for rates), with the number
    /// of attempts behind it.
    pub fn measured(&self, metric: MetricId, stat: Statistic) -> (Option<f64>, u64) {
        let latency = |m: Measurement| {
            let s = self.measurements.get(&m);
            (
                s.and_then(|s| s.latency.as_ref()).and_then(|l| l.get(stat)),
                s.map_or(0, |s| s.attempted),
            )
        };
        let class_rate = |c: ErrorClass| {
            (
                self.rates.error_percent_by_class.get(&c).copied(),
                self.rates.operations,
            )
        };
        match metric {
            MetricId::ColdStart => latency(Measurement::ColdStart),
            MetricId::WarmExec => latency(Measurement::WarmExec),
            MetricId::Upload10Mb => latency(Measurement::Upload10Mb),
            MetricId::Download10Mb => latency(Measurement::Download10Mb),
            MetricId::Upload500Mb => latency(Measurement::Upload500Mb),
            MetricId::Download500Mb => latency(Measurement::Download500Mb),
            MetricId::BackgroundStart => latency(Measurement::BackgroundStart),
            MetricId::ConcurrentExec => latency(Measurement::Concurrent),
            MetricId::BrowserStart => latency(Measurement::BrowserStart),
            MetricId::BrowserNavigate => latency(Measurement::BrowserNavigate),
            // Every operation the bench performed counts, not only the mixed workload.
            MetricId::SuccessRate => (self.rates.overall_success_percent, self.rates.operations),
            MetricId::TimeoutErrorRate => class_rate(ErrorClass::Timeout),
            MetricId::NetworkErrorRate => class_rate(ErrorClass::Network),
            MetricId::PermissionErrorRate => class_rate(ErrorClass::Permission),
            MetricId::StateConsistency => (self.state.consistency_percent, self.state.checks),
        }
    }

    /// The measurement behind a latency metric (`None` for rates).
    pub fn latency_measurement(metric: MetricId) -> Option<Measurement> {
        Some(match metric {
            MetricId::ColdStart => Measurement::ColdStart,
            MetricId::WarmExec => Measurement::WarmExec,
            MetricId::Upload10Mb => Measurement::Upload10Mb,
            MetricId::Download10Mb => Measurement::Download10Mb,
            MetricId::Upload500Mb => Measurement::Upload500Mb,
            MetricId::Download500Mb => Measurement::Download500Mb,
            MetricId::BackgroundStart => Measurement::BackgroundStart,
            MetricId::ConcurrentExec => Measurement::Concurrent,
            MetricId::BrowserStart => Measurement::BrowserStart,
            MetricId::BrowserNavigate => Measurement::BrowserNavigate,
            _ => return None,
        })
    }
}

/// Counts attempts, successes and errors per measurement and overall, with each measurement's
/// latency and throughput.
fn summarise_measurements(
    samples: &[Sample],
) -> (BTreeMap<Measurement, MeasurementSummary>, Rates) {
    let mut measurements: BTreeMap<Measurement, MeasurementSummary> = BTreeMap::new();
    let mut rates = Rates::default();
    for s in samples {
        let m = measurements.entry(s.measurement).or_default();
        m.attempted += 1;
        rates.operations += 1;
        if s.ok {
            m.succeeded += 1;
            rates.succeeded += 1;
        } else {
            let class = s.error_class.unwrap_or(ErrorClass::Backend);
            *m.errors.entry(class).or_default() += 1;
            *rates.errors_by_class.entry(class).or_default() += 1;
        }
    }
    for (meas, m) in measurements.iter_mut() {
        m.latency = Summary::from_micros(
            samples
                .iter()
                .filter(|s| s.measurement == *meas && s.ok)
                .map(|s| s.duration_us),
        );
        if let (Some(bytes), Some(l)) = (meas.transfer_bytes(), &m.latency)
            && l.p50_seconds > 0.0
        {
            m.throughput_p50_mib_per_second =
                Some(bytes as f64 / (1024.0 * 1024.0) / l.p50_seconds);
        }
    }
    rates.overall_success_percent = percent(rates.succeeded, rates.operations);
    rates.mixed_success_percent = measurements
        .get(&Measurement::Mixed)
        .and_then(|m| percent(m.succeeded, m.attempted));
    if rates.operations > 0 {
        for class in [
            ErrorClass::Timeout,
            ErrorClass::Network,
            ErrorClass::Permission,
        ]
        .into_iter()
        .chain(rates.errors_by_class.keys().copied().collect::<Vec<_>>())
        {
            let n = rates.errors_by_class.get(&class).copied().unwrap_or(0);
            rates
                .error_percent_by_class
                .insert(class, n as f64 * 100.0 / rates.operations as f64);
        }
    }
    (measurements, rates)
}

/// The concurrency phase's figures from its samples' summary.
fn concurrency_summary(
    measurements: &BTreeMap<Measurement, MeasurementSummary>,
    sessions: usize,
    wall: f64,
) -> ConcurrencySummary {
    let m = measurements
        .get(&Measurement::Concurrent)
        .cloned()
        .unwrap_or_default();
    ConcurrencySummary {
        sessions,
        commands: m.attempted,
        succeeded: m.succeeded,
        wall_seconds: wall,
        throughput_commands_per_second: if wall > 0.0 {
            m.succeeded as f64 / wall
        } else {
            0.0
        },
        latency: m.latency,
    }
}

/// The raw baseline next to the harness's warm exec (and 500 MB transfers), when one ran.
fn raw_baseline_summary(
    raw_baseline: Option<String>,
    raw_transfer: Option<String>,
    measurements: &BTreeMap<Measurement, MeasurementSummary>,
) -> Option<RawBaselineSummary> {
    let harness_p50 = measurements
        .get(&Measurement::WarmExec)
        .and_then(|m| m.latency.as_ref())
        .map(|l| l.p50_seconds);
    raw_baseline.map(|description| {
        let latency = measurements
            .get(&Measurement::RawBaseline)
            .and_then(|m| m.latency.clone());
        let overhead = match (harness_p50, &latency) {
            (Some(h), Some(l)) => Some(h - l.p50_seconds),
            _ => None,
        };
        let p50 = |m: Measurement| {
            measurements
                .get(&m)
                .and_then(|s| s.latency.as_ref())
                .map(|l| l.p50_seconds)
        };
        let ratio = |harness: Measurement, raw: Measurement| match (p50(harness), p50(raw)) {
            (Some(h), Some(r)) if r > 0.0 => Some(h / r),
            _ => None,
        };
        let transfer = raw_transfer.and_then(|description| {
            let (up, down) = (
                p50(Measurement::RawUpload500Mb),
                p50(Measurement::RawDownload500Mb),
            );
            (up.is_some() || down.is_some()).then(|| TransferBaseline {
                description,
                raw_upload_p50_seconds: up,
                raw_download_p50_seconds: down,
                upload_ratio: ratio(Measurement::Upload500Mb, Measurement::RawUpload500Mb),
                download_ratio: ratio(Measurement::Download500Mb, Measurement::RawDownload500Mb),
            })
        });
        RawBaselineSummary {
            description,
            latency,
            harness_warm_exec_p50_seconds: harness_p50,
            overhead_p50_seconds: overhead,
            transfer,
        }
    })
}

/// The raw engine baseline the bench compares `b` with, when it has one (Docker).
pub fn raw_baseline(b: &OpenBackend) -> Option<Arc<dyn RawBaseline>> {
    b.docker.as_ref().map(|d| {
        Arc::new(raw_docker::DockerRawExec::new(d.docker().clone())) as Arc<dyn RawBaseline>
    })
}

/// The per-phase probe the bench runs on `b`, when it has one (Cloud Run).
pub fn phase_probe(b: &OpenBackend) -> Option<Arc<dyn phases::PhaseProbe>> {
    b.cloudrun.as_ref().map(|c| {
        Arc::new(cloudrun_probe::CloudRunPhaseProbe::new(c.clone())) as Arc<dyn phases::PhaseProbe>
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_budget_caps_its_counts_and_is_recorded() {
        let mut o = BenchOptions {
            iterations: 20,
            cold_start_iterations: 1,
            ..BenchOptions::default()
        };
        o.budgets.insert(
            "cloudrun".into(),
            BackendBudget {
                iterations: 10,
                cold_start_iterations: 2,
                cold_start_warmup: 0,
            },
        );
        let c = o.for_backend("cloudrun");
        assert_eq!((c.iterations, c.cold_start_iterations), (10, 1));
        assert_eq!((c.warmup, c.cold_start_warmup), (2, Some(0)));
        let d = o.for_backend("docker");
        assert_eq!((d.iterations, d.cold_start_iterations), (20, 1));
        assert_eq!(d.cold_start_warmup, None);
        let rec = OptionsRecord::from(&o);
        assert_eq!(rec.iterations, 20);
        assert_eq!(
            rec.budgets["cloudrun"],
            BackendBudget {
                iterations: 10,
                cold_start_iterations: 1,
                cold_start_warmup: 0,
            }
        );
    }
}
