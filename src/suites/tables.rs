//! The acceptance tables (suites/acceptance.toml): metrics, statistics, bounds, rows, and the
//! vocabulary of their outcome (`Verdict`, `RowVerdict`, the `Level` a gate demands). The rules
//! that produce a verdict are in `acceptance`.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_ACCEPTANCE_TOML, SuiteError, parse_toml};

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
    /// `acceptance::required_samples`); never counts as meeting anything.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suites::{HealthTable, Monitoring};

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
}
