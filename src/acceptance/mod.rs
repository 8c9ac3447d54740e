//! The migration plan's acceptance tables as data (suites/*.toml), verdict logic and phase gates.
//!
//! Verdict semantics: a latency bound "a-b s" (a plan range) is met when the measured figure is
//! `<= b`; a figure below `a` is better than the plan expected and still meets it. "< x" and "> x"
//! are strict. A row with a target and an acceptable bound yields `MeetsTarget`, `Acceptable` or
//! `Fails`; a row without any bound yields `NoThreshold`; a row nothing was measured for yields
//! `NotMeasured`.

pub mod gate;
pub mod profile;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use gate::{GateCheck, GateInputs, GateOutcome, GateResult, Phase, PhaseFile, gate};
pub use profile::LatencyProfile;

/// The suites shipped with the harness (used when no file is given).
pub const DEFAULT_ACCEPTANCE_TOML: &str = include_str!("../../suites/acceptance.toml");
/// The shipped monitoring thresholds.
pub const DEFAULT_MONITORING_TOML: &str = include_str!("../../suites/monitoring.toml");
/// The shipped health endpoint table.
pub const DEFAULT_HEALTH_TOML: &str = include_str!("../../suites/health.toml");
/// The shipped phase gates.
pub const DEFAULT_PHASES_TOML: &str = include_str!("../../suites/phases.toml");

/// Failure to load or validate a suite file.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("cannot parse {path}: {detail}")]
    Parse {
        /// The file (or "<builtin>").
        path: String,
        /// Why.
        detail: String,
    },
    /// The file parsed but a value is inconsistent.
    #[error("invalid {path}: {detail}")]
    Invalid {
        /// The file (or "<builtin>").
        path: String,
        /// Why.
        detail: String,
    },
}

/// Reads and parses a TOML suite file.
pub(crate) fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_toml(&text, &path.display().to_string())
}

/// Parses TOML text; `origin` names it in errors.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, SuiteError> {
    toml::from_str(text).map_err(|e| SuiteError::Parse {
        path: origin.to_string(),
        detail: e.to_string(),
    })
}

/// A figure the acceptance tables judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricId {
    /// Create a sandbox to the first command's result (teardown not timed).
    ColdStart,
    /// A stateful command in a live sandbox.
    WarmExec,
    /// Upload of 10 MiB.
    #[serde(rename = "upload_10mb")]
    Upload10Mb,
    /// Download of 10 MiB.
    #[serde(rename = "download_10mb")]
    Download10Mb,
    /// Upload of 500 MiB.
    #[serde(rename = "upload_500mb")]
    Upload500Mb,
    /// Download of 500 MiB.
    #[serde(rename = "download_500mb")]
    Download500Mb,
    /// Start of a background process.
    BackgroundStart,
    /// Successful operations of the mixed workload, percent.
    SuccessRate,
    /// Operations failing with a timeout, percent of all operations.
    TimeoutErrorRate,
    /// Operations failing with a network error, percent.
    NetworkErrorRate,
    /// Operations failing with a permission error, percent.
    PermissionErrorRate,
    /// State checks (cwd and env) that held, percent.
    StateConsistency,
    /// A stateful command while C sessions run at once.
    ConcurrentExec,
    /// A browser sandbox created to its DevTools endpoint answering.
    BrowserStart,
    /// A page navigation over CDP (load and evaluate).
    BrowserNavigate,
}

impl MetricId {
    /// Every metric, in report order.
    pub const ALL: [MetricId; 15] = [
        MetricId::ColdStart,
        MetricId::WarmExec,
        MetricId::Upload10Mb,
        MetricId::Download10Mb,
        MetricId::Upload500Mb,
        MetricId::Download500Mb,
        MetricId::BackgroundStart,
        MetricId::SuccessRate,
        MetricId::TimeoutErrorRate,
        MetricId::NetworkErrorRate,
        MetricId::PermissionErrorRate,
        MetricId::StateConsistency,
        MetricId::ConcurrentExec,
        MetricId::BrowserStart,
        MetricId::BrowserNavigate,
    ];

    /// The snake_case name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricId::ColdStart => "cold_start",
            MetricId::WarmExec => "warm_exec",
            MetricId::Upload10Mb => "upload_10mb",
            MetricId::Download10Mb => "download_10mb",
            MetricId::Upload500Mb => "upload_500mb",
            MetricId::Download500Mb => "download_500mb",
            MetricId::BackgroundStart => "background_start",
            MetricId::SuccessRate => "success_rate",
            MetricId::TimeoutErrorRate => "timeout_error_rate",
            MetricId::NetworkErrorRate => "network_error_rate",
            MetricId::PermissionErrorRate => "permission_error_rate",
            MetricId::StateConsistency => "state_consistency",
            MetricId::ConcurrentExec => "concurrent_exec",
            MetricId::BrowserStart => "browser_start",
            MetricId::BrowserNavigate => "browser_navigate",
        }
    }

    /// A human label as in the plan.
    pub fn label(self) -> &'static str {
        match self {
            MetricId::ColdStart => "Cold start",
            MetricId::WarmExec => "Warm execution",
            MetricId::Upload10Mb => "10 MB upload",
            MetricId::Download10Mb => "10 MB download",
            MetricId::Upload500Mb => "500 MB upload",
            MetricId::Download500Mb => "500 MB download",
            MetricId::BackgroundStart => "Background process start",
            MetricId::SuccessRate => "Success rate",
            MetricId::TimeoutErrorRate => "Timeout errors",
            MetricId::NetworkErrorRate => "Network errors",
            MetricId::PermissionErrorRate => "Permission errors",
            MetricId::StateConsistency => "State consistency",
            MetricId::ConcurrentExec => "Concurrent execution",
            MetricId::BrowserStart => "Browser start (created to CDP answering)",
            MetricId::BrowserNavigate => "Browser navigation round trip",
        }
    }

    /// True when the figure is a percentage (else seconds).
    pub fn is_rate(self) -> bool {
        matches!(
            self,
            MetricId::SuccessRate
                | MetricId::TimeoutErrorRate
                | MetricId::NetworkErrorRate
                | MetricId::PermissionErrorRate
                | MetricId::StateConsistency
        )
    }
}

impl fmt::Display for MetricId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which figure of a distribution a row judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// Maximum.
    Max,
    /// Arithmetic mean.
    Mean,
    /// A percentage (rates).
    Rate,
}

impl Statistic {
    /// Short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::P50 => "p50",
            Statistic::P90 => "p90",
            Statistic::P95 => "p95",
            Statistic::P99 => "p99",
            Statistic::Max => "max",
            Statistic::Mean => "mean",
            Statistic::Rate => "rate",
        }
    }
}

/// A bound as written in a suite file; exactly one field is set, its unit is in its name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BoundSpec {
    /// Plan range "a-b s": met when `<= b`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_seconds: Option<[f64; 2]>,
    /// "< x s".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lt_seconds: Option<f64>,
    /// "<= x s".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub le_seconds: Option<f64>,
    /// "> x %".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gt_percent: Option<f64>,
    /// ">= x %".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ge_percent: Option<f64>,
    /// "< x %".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lt_percent: Option<f64>,
    /// "<= x %".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub le_percent: Option<f64>,
}

/// A comparison operator of a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    /// measured < value
    Lt,
    /// measured <= value
    Le,
    /// measured > value
    Gt,
    /// measured >= value
    Ge,
}

/// The unit of a bound and of the measured figure it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Percent (0-100).
    Percent,
}

/// A normalised bound: `measured <cmp> value` (in `unit`); `range_low` keeps a plan range's lower end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// The operator.
    pub cmp: Cmp,
    /// The limit.
    pub value: f64,
    /// The unit of `value`.
    pub unit: Unit,
    /// The lower end of a plan range (informational: below it still meets).
    pub range_low: Option<f64>,
}

impl Bound {
    /// Normalises a spec; errors when not exactly one field is set or a value is not finite.
    pub fn from_spec(spec: &BoundSpec) -> Result<Bound, String> {
        let mut found: Vec<Bound> = Vec::new();
        let mut push = |cmp, value: f64, unit, range_low| {
            found.push(Bound {
                cmp,
                value,
                unit,
                range_low,
            })
        };
        if let Some([a, b]) = spec.range_seconds {
            if a > b {
                return Err(format!("range_seconds [{a}, {b}] is reversed"));
            }
            push(Cmp::Le, b, Unit::Seconds, Some(a));
        }
        if let Some(v) = spec.lt_seconds {
            push(Cmp::Lt, v, Unit::Seconds, None);
        }
        if let Some(v) = spec.le_seconds {
            push(Cmp::Le, v, Unit::Seconds, None);
        }
        if let Some(v) = spec.gt_percent {
            push(Cmp::Gt, v, Unit::Percent, None);
        }
        if let Some(v) = spec.ge_percent {
            push(Cmp::Ge, v, Unit::Percent, None);
        }
        if let Some(v) = spec.lt_percent {
            push(Cmp::Lt, v, Unit::Percent, None);
        }
        if let Some(v) = spec.le_percent {
            push(Cmp::Le, v, Unit::Percent, None);
        }
        match found.as_slice() {
            [b] if b.value.is_finite() && b.range_low.is_none_or(f64::is_finite) => Ok(*b),
            [_] => Err("bound value is not a finite number".into()),
            [] => Err("bound has no field set".into()),
            _ => Err("bound has more than one field set".into()),
        }
    }

    /// True when `measured` (in this bound's unit) satisfies the bound.
    pub fn holds(&self, measured: f64) -> bool {
        match self.cmp {
            Cmp::Lt => measured < self.value,
            Cmp::Le => measured <= self.value,
            Cmp::Gt => measured > self.value,
            Cmp::Ge => measured >= self.value,
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            Unit::Seconds => "s",
            Unit::Percent => "%",
        };
        if let Some(low) = self.range_low {
            return write!(f, "{low}-{} {unit}", self.value);
        }
        let op = match self.cmp {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        };
        write!(f, "{op} {} {unit}", self.value)
    }
}

/// Where a row's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RowSource {
    /// Reproduced from the migration plan.
    #[default]
    Plan,
    /// Set by this harness (the row says why).
    Derived,
}

/// One row of a table as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    /// The figure judged.
    pub metric: MetricId,
    /// Which statistic of the distribution is compared.
    pub statistic: Statistic,
    /// The plan's text for this cell, verbatim.
    pub plan: String,
    /// The target bound (none: no threshold).
    pub target: Option<BoundSpec>,
    /// The acceptable bound (none: only the target counts).
    pub acceptable: Option<BoundSpec>,
    /// Plan or derived.
    #[serde(default)]
    pub source: RowSource,
    /// Why a derived figure was set.
    pub why: Option<String>,
}

/// One validated row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The figure judged.
    pub metric: MetricId,
    /// Which statistic is compared.
    pub statistic: Statistic,
    /// The plan's text.
    pub plan: String,
    /// Target bound.
    pub target: Option<Bound>,
    /// Acceptable bound.
    pub acceptable: Option<Bound>,
    /// Plan or derived.
    pub source: RowSource,
    /// Why a derived figure was set.
    pub why: Option<String>,
}

/// One table as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Stable id ("docker_baseline").
    pub id: String,
    /// Backend name the table applies to ("*" for every backend).
    pub backend: String,
    /// Title as in the plan.
    pub title: String,
    /// Where in the plan it comes from.
    pub citation: String,
    /// The rows.
    #[serde(default, rename = "row")]
    pub rows: Vec<RowSpec>,
}

/// One validated table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Stable id.
    pub id: String,
    /// Backend name ("*" for all).
    pub backend: String,
    /// Title.
    pub title: String,
    /// Citation.
    pub citation: String,
    /// Rows.
    pub rows: Vec<Row>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptanceFile {
    #[serde(rename = "table")]
    tables: Vec<TableSpec>,
}

/// All acceptance tables (suites/acceptance.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tables {
    /// The tables in file order.
    pub tables: Vec<Table>,
}

impl Tables {
    /// The shipped tables.
    pub fn builtin() -> Tables {
        // The shipped file is covered by a unit test; a failure here is a build defect.
        Tables::parse(DEFAULT_ACCEPTANCE_TOML, "<builtin acceptance.toml>")
            .expect("shipped suites/acceptance.toml is valid")
    }

    /// Loads tables from a file.
    pub fn load(path: &Path) -> Result<Tables, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Tables::parse(&text, &path.display().to_string())
    }

    /// Parses and validates tables from TOML text.
    pub fn parse(text: &str, origin: &str) -> Result<Tables, SuiteError> {
        let file: AcceptanceFile = parse_toml(text, origin)?;
        let invalid = |detail: String| SuiteError::Invalid {
            path: origin.to_string(),
            detail,
        };
        let mut tables = Vec::new();
        for t in file.tables {
            let mut rows = Vec::new();
            for r in t.rows {
                let conv =
                    |spec: &Option<BoundSpec>, which: &str| -> Result<Option<Bound>, SuiteError> {
                        let Some(spec) = spec else { return Ok(None) };
                        let b = Bound::from_spec(spec).map_err(|e| {
                            invalid(format!("table {} row {} {which}: {e}", t.id, r.metric))
                        })?;
                        let want = if r.metric.is_rate() {
                            Unit::Percent
                        } else {
                            Unit::Seconds
                        };
                        if b.unit != want {
                            return Err(invalid(format!(
                                "table {} row {} {which}: unit {:?} does not fit the metric",
                                t.id, r.metric, b.unit
                            )));
                        }
                        Ok(Some(b))
                    };
                let target = conv(&r.target, "target")?;
                let acceptable = conv(&r.acceptable, "acceptable")?;
                if acceptable.is_some() && target.is_none() {
                    return Err(invalid(format!(
                        "table {} row {}: acceptable without target",
                        t.id, r.metric
                    )));
                }
                if r.metric.is_rate() != (r.statistic == Statistic::Rate) {
                    return Err(invalid(format!(
                        "table {} row {}: statistic {} does not fit the metric",
                        t.id,
                        r.metric,
                        r.statistic.as_str()
                    )));
                }
                rows.push(Row {
                    metric: r.metric,
                    statistic: r.statistic,
                    plan: r.plan,
                    target,
                    acceptable,
                    source: r.source,
                    why: r.why,
                });
            }
            tables.push(Table {
                id: t.id,
                backend: t.backend,
                title: t.title,
                citation: t.citation,
                rows,
            });
        }
        Ok(Tables { tables })
    }

    /// The tables that apply to a backend: its own first, then those for every backend ("*").
    pub fn for_backend(&self, backend: &str) -> Vec<&Table> {
        let own = self.tables.iter().filter(|t| t.backend == backend);
        let all = self.tables.iter().filter(|t| t.backend == "*");
        own.chain(all).collect()
    }

    /// The table with this id.
    pub fn by_id(&self, id: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.id == id)
    }
}

/// The outcome of comparing one figure with its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the target bound.
    MeetsTarget,
    /// Outside the target, within the acceptable bound.
    Acceptable,
    /// Outside every bound.
    Fails,
    /// The row has no bound (e.g. Docker cold start: N/A).
    NoThreshold,
    /// Nothing was measured for the row (skipped, failed setup, or cancelled).
    NotMeasured,
    /// The figure is within a bound, but too few samples stand behind it to claim so (see
    /// [`Bound::required_samples`]); never counts as meeting anything.
    InsufficientSamples,
}

impl Verdict {
    /// Text as shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::MeetsTarget => "meets target",
            Verdict::Acceptable => "acceptable",
            Verdict::Fails => "fails",
            Verdict::NoThreshold => "no threshold",
            Verdict::NotMeasured => "not measured",
            Verdict::InsufficientSamples => "insufficient samples",
        }
    }

    /// True when the verdict satisfies `level`.
    pub fn satisfies(self, level: Level) -> bool {
        match level {
            Level::Target => self == Verdict::MeetsTarget,
            Level::Acceptable => matches!(self, Verdict::MeetsTarget | Verdict::Acceptable),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The level a gate demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The target column.
    Target,
    /// The acceptable column (or the target when a row has no acceptable bound).
    Acceptable,
}

/// Samples a claim about `statistic` against `bound` needs before it can be called met.
///
/// Rates: with no failure seen in n operations, a 95 % upper bound on the failure rate is about
/// 3/n (the "rule of three"), so claiming a failure rate below f needs n >= 3/f: "> 99.5 %"
/// (f = 0.5 %) needs 600, "> 99 %" 300, "< 0.1 %" 3000. A bound that allows no failure at all
/// ("100 %", alert on any loss) is a count, not an estimate: one check is enough to judge it.
/// Latencies: percentile q is distinct from the largest sample only with n >= 1/(1-q): p90 needs
/// 10, p95 20, p99 100; a median, mean or maximum is judged on whatever was measured.
pub fn required_samples(statistic: Statistic, bound: &Bound) -> u64 {
    let by_fraction = |f: f64| -> u64 {
        if f <= 0.0 {
            return 1;
        }
        // Round away float noise (3 / 0.005 = 599.999...) before taking the ceiling.
        (((3.0 / f) * 1e6).round() / 1e6).ceil().max(1.0) as u64
    };
    match bound.unit {
        Unit::Percent => match bound.cmp {
            // A success-type bound: the failures it allows are what is left of 100 %.
            Cmp::Gt | Cmp::Ge => by_fraction((100.0 - bound.value) / 100.0),
            // An error-type bound: the failures it allows are the bound itself.
            Cmp::Lt | Cmp::Le => by_fraction(bound.value / 100.0),
        },
        Unit::Seconds => match statistic {
            Statistic::P90 => 10,
            Statistic::P95 => 20,
            Statistic::P99 => 100,
            Statistic::P50 | Statistic::Max | Statistic::Mean | Statistic::Rate => 1,
        },
    }
}

/// The note of a verdict that lacks samples: "insufficient samples (n, need N)".
pub fn insufficient_note(n: u64, need: u64) -> String {
    format!("insufficient samples ({n}, need {need})")
}

/// Judges a figure against a row as [`verdict`] does, knowing the `n` samples behind it: a bound
/// the figure satisfies counts only when `n` reaches [`required_samples`] for it; otherwise the
/// verdict is [`Verdict::InsufficientSamples`] with a note saying how many are needed. A figure
/// outside every bound fails whatever `n` is.
pub fn verdict_with_samples(row: &Row, measured: Option<f64>, n: u64) -> (Verdict, Option<String>) {
    let plain = verdict(row, measured);
    let need = |b: Option<Bound>| b.map_or(0, |b| required_samples(row.statistic, &b));
    match plain {
        Verdict::MeetsTarget => {
            let t = need(row.target);
            if n >= t {
                return (Verdict::MeetsTarget, None);
            }
            let a = need(row.acceptable);
            if row.acceptable.is_some() && n >= a {
                return (
                    Verdict::Acceptable,
                    Some(format!("target needs {t} samples, have {n}")),
                );
            }
            let least = if row.acceptable.is_some() { a } else { t };
            (
                Verdict::InsufficientSamples,
                Some(insufficient_note(n, least)),
            )
        }
        Verdict::Acceptable => {
            let a = need(row.acceptable);
            if n >= a {
                (Verdict::Acceptable, None)
            } else {
                (Verdict::InsufficientSamples, Some(insufficient_note(n, a)))
            }
        }
        other => (other, None),
    }
}

/// Judges a measured figure (seconds, or percent for rates) against a row.
pub fn verdict(row: &Row, measured: Option<f64>) -> Verdict {
    let Some(target) = row.target else {
        return Verdict::NoThreshold;
    };
    let Some(m) = measured.filter(|m| m.is_finite()) else {
        return Verdict::NotMeasured;
    };
    if target.holds(m) {
        Verdict::MeetsTarget
    } else if row.acceptable.is_some_and(|a| a.holds(m)) {
        Verdict::Acceptable
    } else {
        Verdict::Fails
    }
}

/// A row judged: the table row, the measured figure and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowVerdict {
    /// Table id.
    pub table: String,
    /// The row.
    pub row: Row,
    /// The measured figure (seconds or percent), if any.
    pub measured: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why the verdict is what it is, when not obvious ("not run", "no attempt succeeded").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Monitoring thresholds (suites/monitoring.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Where in the plan.
    pub citation: String,
    /// p50 execution latency target.
    pub exec_latency_p50_target_lt_seconds: f64,
    /// p99 execution latency target.
    pub exec_latency_p99_target_lt_seconds: f64,
    /// p99 execution latency alert.
    pub exec_latency_p99_alert_gt_seconds: f64,
    /// Error rate target.
    pub error_rate_target_lt_percent: f64,
    /// Error rate alert.
    pub error_rate_alert_gt_percent: f64,
    /// Success rate target (the plan: > 99.5 %).
    #[serde(default = "default_success_target")]
    pub success_rate_target_gt_percent: f64,
    /// Success rate alert (the plan: alert below 99 %).
    #[serde(default = "default_success_alert")]
    pub success_rate_alert_lt_percent: f64,
    /// Monthly cost budget.
    pub cost_budget_usd_per_month: f64,
    /// Monthly cost alert.
    pub cost_alert_gt_usd_per_month: f64,
    /// State consistency target.
    pub state_consistency_target_percent: f64,
    /// Alert when more state losses than this are seen.
    pub state_loss_alert_gt_count: u64,
}

fn default_success_target() -> f64 {
    99.5
}

fn default_success_alert() -> f64 {
    99.0
}

impl Monitoring {
    /// The shipped thresholds.
    pub fn builtin() -> Monitoring {
        parse_toml(DEFAULT_MONITORING_TOML, "<builtin monitoring.toml>")
            .expect("shipped suites/monitoring.toml is valid")
    }

    /// Loads thresholds from a file.
    pub fn load(path: &Path) -> Result<Monitoring, SuiteError> {
        load_toml(path)
    }
}

/// One health endpoint's latency thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthEndpoint {
    /// "/health", "/ready", "/live".
    pub path: String,
    /// Target: below this.
    pub target_lt_ms: f64,
    /// What the plan expects typically.
    pub typical_ms: f64,
    /// Beyond this the endpoint fails.
    pub max_acceptable_ms: f64,
}

impl HealthEndpoint {
    /// Judges an endpoint as the plan's table reads: the typical figure (p50, ms) against the
    /// target, the tail (p99, ms; with few probes the largest one) against max acceptable.
    pub fn verdict(&self, p50_ms: Option<f64>, p99_ms: Option<f64>) -> Verdict {
        let finite = |v: Option<f64>| v.filter(|m| m.is_finite());
        match (finite(p50_ms), finite(p99_ms)) {
            (None, _) | (_, None) => Verdict::NotMeasured,
            (_, Some(tail)) if tail > self.max_acceptable_ms => Verdict::Fails,
            (Some(m), _) if m < self.target_lt_ms => Verdict::MeetsTarget,
            (Some(_), _) => Verdict::Acceptable,
        }
    }
}

/// The health endpoint table (suites/health.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthTable {
    /// Where in the plan.
    pub citation: String,
    /// Endpoints.
    #[serde(rename = "endpoint")]
    pub endpoints: Vec<HealthEndpoint>,
}

impl HealthTable {
    /// The shipped table.
    pub fn builtin() -> HealthTable {
        parse_toml(DEFAULT_HEALTH_TOML, "<builtin health.toml>")
            .expect("shipped suites/health.toml is valid")
    }

    /// Loads the table from a file.
    pub fn load(path: &Path) -> Result<HealthTable, SuiteError> {
        load_toml(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: BoundSpec, acceptable: Option<BoundSpec>) -> Row {
        Row {
            metric: MetricId::WarmExec,
            statistic: Statistic::P50,
            plan: String::new(),
            target: Some(Bound::from_spec(&target).unwrap()),
            acceptable: acceptable.map(|a| Bound::from_spec(&a).unwrap()),
            source: RowSource::Plan,
            why: None,
        }
    }

    #[test]
    fn shipped_suites_parse() {
        let t = Tables::builtin();
        assert!(t.by_id("docker_baseline").is_some());
        assert!(t.by_id("cloudrun_target").is_some());
        assert_eq!(t.for_backend("docker").len(), 2);
        Monitoring::builtin();
        assert_eq!(HealthTable::builtin().endpoints.len(), 3);
    }

    #[test]
    fn range_is_met_below_its_low_end_and_up_to_its_high_end() {
        let r = row(
            BoundSpec {
                range_seconds: Some([0.5, 2.0]),
                ..Default::default()
            },
            Some(BoundSpec {
                lt_seconds: Some(3.0),
                ..Default::default()
            }),
        );
        assert_eq!(verdict(&r, Some(0.03)), Verdict::MeetsTarget);
        assert_eq!(verdict(&r, Some(2.0)), Verdict::MeetsTarget);
        assert_eq!(verdict(&r, Some(2.5)), Verdict::Acceptable);
        assert_eq!(verdict(&r, Some(3.0)), Verdict::Fails);
        assert_eq!(verdict(&r, None), Verdict::NotMeasured);
        assert_eq!(verdict(&r, Some(f64::NAN)), Verdict::NotMeasured);
    }

    #[test]
    fn percent_bounds_are_strict() {
        let r = row(
            BoundSpec {
                gt_percent: Some(99.5),
                ..Default::default()
            },
            Some(BoundSpec {
                gt_percent: Some(99.0),
                ..Default::default()
            }),
        );
        assert_eq!(verdict(&r, Some(100.0)), Verdict::MeetsTarget);
        assert_eq!(verdict(&r, Some(99.5)), Verdict::Acceptable);
        assert_eq!(verdict(&r, Some(99.0)), Verdict::Fails);
    }

    #[test]
    fn no_target_means_no_threshold() {
        let mut r = row(
            BoundSpec {
                lt_seconds: Some(1.0),
                ..Default::default()
            },
            None,
        );
        r.target = None;
        assert_eq!(verdict(&r, Some(100.0)), Verdict::NoThreshold);
    }

    #[test]
    fn bad_tables_are_rejected() {
        let two_fields = r#"
[[table]]
id = "x"
backend = "docker"
title = "x"
citation = "x"
[[table.row]]
metric = "warm_exec"
statistic = "p50"
plan = "x"
target = { lt_seconds = 1.0, le_seconds = 2.0 }
"#;
        assert!(matches!(
            Tables::parse(two_fields, "t"),
            Err(SuiteError::Invalid { .. })
        ));
        let wrong_unit =
            two_fields.replace("lt_seconds = 1.0, le_seconds = 2.0", "gt_percent = 9.0");
        assert!(Tables::parse(&wrong_unit, "t").is_err());
        let unknown = two_fields.replace("lt_seconds = 1.0, le_seconds = 2.0", "lt_minutes = 1.0");
        assert!(matches!(
            Tables::parse(&unknown, "t"),
            Err(SuiteError::Parse { .. })
        ));
    }

    #[test]
    fn required_samples_follow_the_rule_of_three_and_the_percentile() {
        let pct = |spec: BoundSpec| Bound::from_spec(&spec).unwrap();
        let gt = |v| {
            pct(BoundSpec {
                gt_percent: Some(v),
                ..Default::default()
            })
        };
        let lt = |v| {
            pct(BoundSpec {
                lt_percent: Some(v),
                ..Default::default()
            })
        };
        assert_eq!(required_samples(Statistic::Rate, &gt(99.5)), 600);
        assert_eq!(required_samples(Statistic::Rate, &gt(99.0)), 300);
        assert_eq!(required_samples(Statistic::Rate, &lt(0.1)), 3000);
        let all = pct(BoundSpec {
            ge_percent: Some(100.0),
            ..Default::default()
        });
        assert_eq!(required_samples(Statistic::Rate, &all), 1);
        let secs = pct(BoundSpec {
            lt_seconds: Some(1.0),
            ..Default::default()
        });
        assert_eq!(required_samples(Statistic::P99, &secs), 100);
        assert_eq!(required_samples(Statistic::P50, &secs), 1);
    }

    #[test]
    fn too_few_samples_never_meet() {
        let mut r = row(
            BoundSpec {
                gt_percent: Some(99.5),
                ..Default::default()
            },
            Some(BoundSpec {
                gt_percent: Some(99.0),
                ..Default::default()
            }),
        );
        r.metric = MetricId::SuccessRate;
        r.statistic = Statistic::Rate;
        assert_eq!(
            verdict_with_samples(&r, Some(100.0), 140),
            (
                Verdict::InsufficientSamples,
                Some("insufficient samples (140, need 300)".into())
            )
        );
        let (v, note) = verdict_with_samples(&r, Some(100.0), 450);
        assert_eq!(v, Verdict::Acceptable);
        assert!(note.unwrap().contains("target needs 600"));
        assert_eq!(
            verdict_with_samples(&r, Some(100.0), 600),
            (Verdict::MeetsTarget, None)
        );
        // Failures seen are evidence whatever n is.
        assert_eq!(verdict_with_samples(&r, Some(90.0), 10).0, Verdict::Fails);
        assert!(!Verdict::InsufficientSamples.satisfies(Level::Acceptable));
    }

    #[test]
    fn health_verdicts() {
        // /health: target < 100 ms, max acceptable 200 ms.
        let h = &HealthTable::builtin().endpoints[0];
        assert_eq!(h.verdict(Some(50.0), Some(90.0)), Verdict::MeetsTarget);
        assert_eq!(h.verdict(Some(150.0), Some(190.0)), Verdict::Acceptable);
        // A good median does not hide a tail beyond max acceptable.
        assert_eq!(h.verdict(Some(50.0), Some(250.0)), Verdict::Fails);
        assert_eq!(h.verdict(Some(50.0), None), Verdict::NotMeasured);
    }
}

/// Every suite file, loaded from a directory (each file falls back to the shipped copy when the
/// directory does not hold it).
#[derive(Debug, Clone)]
pub struct Suites {
    /// acceptance.toml
    pub tables: Tables,
    /// monitoring.toml
    pub monitoring: Monitoring,
    /// health.toml
    pub health: HealthTable,
    /// phases.toml
    pub phases: PhaseFile,
    /// prices.toml
    pub prices: crate::cost::Prices,
    /// cost.toml
    pub cost_profile: crate::cost::CostProfile,
}

impl Suites {
    /// The shipped suites.
    pub fn builtin() -> Suites {
        Suites {
            tables: Tables::builtin(),
            monitoring: Monitoring::builtin(),
            health: HealthTable::builtin(),
            phases: PhaseFile::builtin(),
            prices: crate::cost::Prices::builtin(),
            cost_profile: crate::cost::CostProfile::builtin(),
        }
    }

    /// Loads the suites in `dir` (e.g. `suites/`); `None` gives the shipped ones.
    pub fn load(dir: Option<&Path>) -> Result<Suites, SuiteError> {
        let mut s = Suites::builtin();
        let Some(dir) = dir else { return Ok(s) };
        let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        if let Some(p) = file("acceptance.toml") {
            s.tables = Tables::load(&p)?;
        }
        if let Some(p) = file("monitoring.toml") {
            s.monitoring = Monitoring::load(&p)?;
        }
        if let Some(p) = file("health.toml") {
            s.health = HealthTable::load(&p)?;
        }
        if let Some(p) = file("phases.toml") {
            s.phases = PhaseFile::load(&p)?;
        }
        if let Some(p) = file("prices.toml") {
            s.prices = crate::cost::Prices::load(&p)?;
        }
        if let Some(p) = file("cost.toml") {
            s.cost_profile = crate::cost::CostProfile::load(&p)?;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod suite_tests {
    use super::*;

    #[test]
    fn suites_dir_overrides_the_shipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let prices = crate::cost::DEFAULT_PRICES_TOML.replace("0.000018", "0.5");
        std::fs::write(dir.path().join("prices.toml"), prices).unwrap();
        let s = Suites::load(Some(dir.path())).unwrap();
        assert_eq!(s.prices.cloud_run_jobs.vcpu_second_usd, 0.5);
        assert_eq!(s.tables, Tables::builtin());
        std::fs::write(dir.path().join("monitoring.toml"), "nonsense = 1").unwrap();
        assert!(Suites::load(Some(dir.path())).is_err());
    }
}
