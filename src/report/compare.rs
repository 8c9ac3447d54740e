//! Comparison of two bench reports: which figures regressed beyond a tolerance.

use serde::{Deserialize, Serialize};

use crate::bench::{BackendReport, BenchReport, Measurement};
use crate::output::{fmt_figure, render_table};

/// Tolerances of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompareOptions {
    /// A latency may grow (or a throughput shrink) by this much before it is a regression, percent.
    pub tolerance_percent: f64,
    /// Latency changes smaller than this are noise whatever their percentage, seconds.
    pub min_delta_seconds: f64,
    /// A rate (success, consistency) may drop by this many percentage points.
    pub rate_tolerance_points: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            tolerance_percent: 10.0,
            min_delta_seconds: 0.005,
            rate_tolerance_points: 0.5,
        }
    }
}

/// The status of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareStatus {
    /// Worse beyond tolerance.
    Regression,
    /// Better beyond tolerance.
    Improvement,
    /// Within tolerance.
    Unchanged,
    /// In the old report only (no longer measured).
    Missing,
    /// In the new report only.
    New,
}

/// How a figure's direction reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Latency, seconds: lower is better.
    LowerSeconds,
    /// Rate, percent: higher is better.
    HigherPercent,
    /// Throughput: higher is better.
    HigherThroughput,
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    /// Backend label.
    pub backend: String,
    /// Figure name ("warm_exec p50").
    pub figure: String,
    /// How to read it.
    pub direction: Direction,
    /// Old value.
    pub old: Option<f64>,
    /// New value.
    pub new: Option<f64>,
    /// Relative change, percent.
    pub change_percent: Option<f64>,
    /// The status.
    pub status: CompareStatus,
}

/// The comparison of two reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Tolerances used.
    pub options: CompareOptions,
    /// Every compared figure.
    pub rows: Vec<CompareRow>,
}

impl Comparison {
    /// The regressed figures.
    pub fn regressions(&self) -> Vec<&CompareRow> {
        self.rows
            .iter()
            .filter(|r| r.status == CompareStatus::Regression)
            .collect()
    }

    /// True when anything regressed.
    pub fn has_regressions(&self) -> bool {
        !self.regressions().is_empty()
    }

    /// The comparison as a table.
    pub fn render(&self) -> String {
        let fmt = |v: Option<f64>, d: Direction| match d {
            Direction::LowerSeconds => fmt_figure(v, false),
            Direction::HigherPercent => fmt_figure(v, true),
            Direction::HigherThroughput => v.map_or("-".into(), |v| format!("{v:.2}/s")),
        };
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.backend.clone(),
                    r.figure.clone(),
                    fmt(r.old, r.direction),
                    fmt(r.new, r.direction),
                    r.change_percent
                        .map_or("-".into(), |c| format!("{c:+.1} %")),
                    match r.status {
                        CompareStatus::Regression => "REGRESSION".into(),
                        CompareStatus::Improvement => "improvement".into(),
                        CompareStatus::Unchanged => "unchanged".into(),
                        CompareStatus::Missing => "missing in new".into(),
                        CompareStatus::New => "new".into(),
                    },
                ]
            })
            .collect();
        let mut out = render_table(
            &["Backend", "Figure", "Old", "New", "Change", "Status"],
            &rows,
        );
        out.push_str(&format!(
            "\n{} regression(s); tolerance {} % (latency changes under {} s ignored), rates {} points.\n",
            self.regressions().len(),
            self.options.tolerance_percent,
            self.options.min_delta_seconds,
            self.options.rate_tolerance_points
        ));
        out
    }
}

fn figures(b: &BackendReport) -> Vec<(String, Direction, Option<f64>)> {
    let mut out = Vec::new();
    for m in Measurement::ALL {
        if m == Measurement::Setup {
            continue;
        }
        if let Some(s) = b.measurements.get(&m) {
            let l = s.latency.as_ref();
            out.push((
                format!("{} p50", m.as_str()),
                Direction::LowerSeconds,
                l.map(|l| l.p50_seconds),
            ));
            out.push((
                format!("{} p99", m.as_str()),
                Direction::LowerSeconds,
                l.map(|l| l.p99_seconds),
            ));
        }
    }
    out.push((
        "success rate (mixed)".into(),
        Direction::HigherPercent,
        b.rates.mixed_success_percent,
    ));
    out.push((
        "success rate (all operations)".into(),
        Direction::HigherPercent,
        b.rates.overall_success_percent,
    ));
    out.push((
        "state consistency".into(),
        Direction::HigherPercent,
        b.state.consistency_percent,
    ));
    if let Some(c) = &b.concurrency {
        out.push((
            format!("concurrent throughput (C={})", c.sessions),
            Direction::HigherThroughput,
            Some(c.throughput_commands_per_second),
        ));
    }
    out
}

fn judge(old: f64, new: f64, d: Direction, o: &CompareOptions) -> CompareStatus {
    let worse = match d {
        Direction::LowerSeconds => {
            let delta = new - old;
            if delta.abs() < o.min_delta_seconds {
                return CompareStatus::Unchanged;
            }
            let rel = if old > 0.0 {
                delta / old * 100.0
            } else {
                f64::INFINITY
            };
            if rel > o.tolerance_percent {
                Some(true)
            } else if rel < -o.tolerance_percent {
                Some(false)
            } else {
                None
            }
        }
        Direction::HigherPercent => {
            let delta = new - old;
            if delta < -o.rate_tolerance_points {
                Some(true)
            } else if delta > o.rate_tolerance_points {
                Some(false)
            } else {
                None
            }
        }
        Direction::HigherThroughput => {
            let rel = if old > 0.0 {
                (new - old) / old * 100.0
            } else {
                0.0
            };
            if rel < -o.tolerance_percent {
                Some(true)
            } else if rel > o.tolerance_percent {
                Some(false)
            } else {
                None
            }
        }
    };
    match worse {
        Some(true) => CompareStatus::Regression,
        Some(false) => CompareStatus::Improvement,
        None => CompareStatus::Unchanged,
    }
}

/// Compares every figure of every backend present in either report.
pub fn compare(old: &BenchReport, new: &BenchReport, options: CompareOptions) -> Comparison {
    let mut rows = Vec::new();
    let mut names: Vec<&str> = old.backends.iter().map(|b| b.name.as_str()).collect();
    for b in &new.backends {
        if !names.contains(&b.name.as_str()) {
            names.push(&b.name);
        }
    }
    for name in names {
        let o = old
            .backends
            .iter()
            .find(|b| b.name == name)
            .map(figures)
            .unwrap_or_default();
        let n = new
            .backends
            .iter()
            .find(|b| b.name == name)
            .map(figures)
            .unwrap_or_default();
        let mut keys: Vec<(String, Direction)> =
            o.iter().map(|(k, d, _)| (k.clone(), *d)).collect();
        for (k, d, _) in &n {
            if !keys.iter().any(|(x, _)| x == k) {
                keys.push((k.clone(), *d));
            }
        }
        for (key, d) in keys {
            let ov = o.iter().find(|(k, _, _)| *k == key).and_then(|x| x.2);
            let nv = n.iter().find(|(k, _, _)| *k == key).and_then(|x| x.2);
            let (status, change) = match (ov, nv) {
                (Some(a), Some(b)) => (
                    judge(a, b, d, &options),
                    (a != 0.0).then(|| (b - a) / a * 100.0),
                ),
                (Some(_), None) => (CompareStatus::Missing, None),
                (None, Some(_)) => (CompareStatus::New, None),
                (None, None) => continue,
            };
            rows.push(CompareRow {
                backend: name.to_string(),
                figure: key,
                direction: d,
                old: ov,
                new: nv,
                change_percent: change,
                status,
            });
        }
    }
    Comparison { options, rows }
}
