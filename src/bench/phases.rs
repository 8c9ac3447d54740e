//! Per-phase breakdowns: where the time of one cold start and of one warm command goes, from
//! a backend-specific probe ([`PhaseProbe`]) that the bench runs once per backend. Each phase
//! runs from one timestamp to the next and names the clocks those timestamps come from (the
//! client's, a cloud API's, the worker's), so a phase between two clocks carries their skew;
//! the phases always add up to the client-measured total.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::protocol::SandboxError;

/// A point on a timeline and the clock that saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// The instant.
    pub at: DateTime<Utc>,
    /// Whose clock: "client", "Admin API", "Cloud Storage", "worker".
    pub clock: &'static str,
}

impl Mark {
    /// A mark by `clock`.
    pub fn new(at: DateTime<Utc>, clock: &'static str) -> Mark {
        Mark { at, clock }
    }
}

/// One phase of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// What happens in it.
    pub name: String,
    /// How long, seconds (negative only through clock skew between two sources).
    pub seconds: f64,
    /// The clocks of its start and end ("client", or "Admin API -> worker").
    pub source: String,
}

/// A sequence of phases that together make one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimeline {
    /// The operation.
    pub what: String,
    /// Its phases in order.
    pub phases: Vec<Phase>,
    /// First mark to last, seconds.
    pub total_seconds: f64,
    /// Anything a reader must know (what was missing and what stood in for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl PhaseTimeline {
    /// The timeline through `start` and each `(phase name, end mark)` in turn.
    pub fn from_marks(what: &str, start: Mark, ends: Vec<(&str, Mark)>) -> PhaseTimeline {
        let mut prev = start.clone();
        let mut phases = Vec::new();
        for (name, end) in ends {
            let source = if prev.clock == end.clock {
                end.clock.to_string()
            } else {
                format!("{} -> {}", prev.clock, end.clock)
            };
            phases.push(Phase {
                name: name.to_string(),
                seconds: seconds_between(prev.at, end.at),
                source,
            });
            prev = end;
        }
        PhaseTimeline {
            what: what.to_string(),
            phases,
            total_seconds: seconds_between(start.at, prev.at),
            notes: Vec::new(),
        }
    }
}

fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    let d = b - a;
    d.num_nanoseconds()
        .map_or_else(|| d.num_milliseconds() as f64 / 1e3, |ns| ns as f64 / 1e9)
}

/// Sandbox creation measured one way (from zero, or claimed from a warm pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreationFigure {
    /// "from zero" or "from the warm pool".
    pub from: String,
    /// What was timed.
    pub what: String,
    /// Each sample, seconds.
    pub samples_seconds: Vec<f64>,
    /// Their median.
    pub p50_seconds: Option<f64>,
    /// Why there is no figure, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

impl CreationFigure {
    /// A figure from its samples.
    pub fn new(from: &str, what: &str, samples_seconds: Vec<f64>) -> CreationFigure {
        let p50_seconds = crate::bench::Summary::from_micros(
            samples_seconds.iter().map(|s| (s * 1e6).max(0.0) as u64),
        )
        .map(|s| s.p50_seconds);
        CreationFigure {
            from: from.into(),
            what: what.into(),
            samples_seconds,
            p50_seconds,
            missing: None,
        }
    }
}

/// What a backend's probe found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// One cold start, phase by phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<PhaseTimeline>,
    /// One warm command, phase by phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_command: Option<PhaseTimeline>,
    /// Sandbox creation from zero and from the warm pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creation: Vec<CreationFigure>,
    /// The Cloud Run deployment the figures were taken on (the cost model prices it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<crate::backends::cloudrun::deployment::Deployment>,
    /// Problems met while probing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A backend-specific probe of where time goes; the bench runs it once per backend after the
/// other measurements (`BenchOptions::phase_probes`).
#[async_trait]
pub trait PhaseProbe: Send + Sync {
    /// Runs the probe: `creations` sandbox creations of each kind it offers.
    async fn probe(&self, creations: usize) -> Result<PhaseReport, SandboxError>;
}

/// Renders the breakdowns as text tables (stdout and Markdown share it).
pub fn render(report: &PhaseReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for t in [&report.cold_start, &report.warm_command]
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "{} ({:.3} s in all):", t.what, t.total_seconds);
        let rows: Vec<Vec<String>> = t
            .phases
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    format!("{:.3}", p.seconds),
                    share(p.seconds, t.total_seconds),
                    p.source.clone(),
                ]
            })
            .collect();
        out.push_str(&crate::output::render_table(
            &["Phase", "Seconds", "Share", "Timestamps from"],
            &rows,
        ));
        for n in &t.notes {
            let _ = writeln!(out, "Note: {n}");
        }
        out.push('\n');
    }
    if !report.creation.is_empty() {
        let rows: Vec<Vec<String>> = report
            .creation
            .iter()
            .map(|c| {
                vec![
                    c.from.clone(),
                    c.p50_seconds
                        .map_or_else(|| "-".into(), |v| format!("{v:.3}")),
                    c.samples_seconds.len().to_string(),
                    c.missing.clone().unwrap_or_else(|| c.what.clone()),
                ]
            })
            .collect();
        out.push_str("Sandbox creation:\n");
        out.push_str(&crate::output::render_table(
            &["From", "p50 s", "Samples", "What"],
            &rows,
        ));
        out.push('\n');
    }
    if let Some(d) = &report.deployment {
        let _ = writeln!(
            out,
            "Deployment: {} vCPU / {} GiB, polls ({}) every {}-{} ms (held {} ms after activity), inbox sweep ({}) every {} ms, heartbeat every {} s, worker idle timeout {} s, warm pool of {}.",
            d.vcpu,
            d.memory_gib,
            d.worker_poll_method,
            d.poll_min_ms,
            d.poll_max_ms,
            d.poll_hold_ms,
            d.worker_sweep_method,
            d.worker_sweep_every_ms,
            d.heartbeat_secs,
            d.worker_idle_secs,
            d.pool_size
        );
    }
    for e in &report.errors {
        let _ = writeln!(out, "Probe problem: {e}");
    }
    out
}

fn share(part: f64, total: f64) -> String {
    if total > 0.0 {
        format!("{:.0} %", part * 100.0 / total)
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn phases_run_mark_to_mark_and_add_up() {
        let t = PhaseTimeline::from_marks(
            "warm command",
            Mark::new(at(0), "client"),
            vec![
                ("upload", Mark::new(at(40), "client")),
                ("pickup", Mark::new(at(140), "worker")),
                ("run", Mark::new(at(150), "worker")),
                ("fetch", Mark::new(at(400), "client")),
            ],
        );
        let secs: Vec<f64> = t.phases.iter().map(|p| p.seconds).collect();
        assert_eq!(secs, vec![0.04, 0.1, 0.01, 0.25]);
        assert_eq!(t.phases[0].source, "client");
        assert_eq!(t.phases[1].source, "client -> worker");
        assert_eq!(t.phases[2].source, "worker");
        assert!((t.total_seconds - secs.iter().sum::<f64>()).abs() < 1e-9);
        let text = render(&PhaseReport {
            warm_command: Some(t),
            ..PhaseReport::default()
        });
        assert!(text.contains("client -> worker"), "{text}");
        assert!(text.contains("| 25 %"), "{text}");
    }
}
