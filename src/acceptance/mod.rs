//! Judging: a bench report's figures against the acceptance tables (`suites::tables`), and the
//! health endpoints against their table.
//!
//! Verdict semantics: a latency bound "a-b s" (a plan range) is met when the measured figure is
//! `<= b`; a figure below `a` is better than the plan expected and still meets it. "< x" and "> x"
//! are strict. A row with a target and an acceptable bound yields `MeetsTarget`, `Acceptable` or
//! `Fails`; a row without any bound yields `NoThreshold`; a row nothing was measured for yields
//! `NotMeasured`.

use crate::bench::{BackendReport, BenchReport};
use crate::suites::{
    Bound, Cmp, HealthEndpoint, Row, RowVerdict, Statistic, Tables, Unit, Verdict,
};

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

/// Judges an endpoint as the plan's table reads: the typical figure (p50, ms) against the
/// target, the tail (p99, ms; with few probes the largest one) against max acceptable.
pub fn health_verdict(
    endpoint: &HealthEndpoint,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
) -> Verdict {
    let finite = |v: Option<f64>| v.filter(|m| m.is_finite());
    match (finite(p50_ms), finite(p99_ms)) {
        (None, _) | (_, None) => Verdict::NotMeasured,
        (_, Some(tail)) if tail > endpoint.max_acceptable_ms => Verdict::Fails,
        (Some(m), _) if m < endpoint.target_lt_ms => Verdict::MeetsTarget,
        (Some(_), _) => Verdict::Acceptable,
    }
}

/// Fills in the verdicts of every backend of a bench report (see [`judge_backend`]).
pub fn judge(report: &mut BenchReport, tables: &Tables) {
    for b in &mut report.backends {
        b.verdicts = judge_backend(b, tables);
    }
}

/// Judges every row of the tables that apply to backend `b`. A latency row whose
/// measurement had failed samples fails and names them (its figure covers only the
/// successes); a row with too few samples behind it says so instead of meeting.
pub fn judge_backend(b: &BackendReport, tables: &Tables) -> Vec<RowVerdict> {
    let mut out = Vec::new();
    for t in tables.for_backend(&b.backend) {
        for row in &t.rows {
            let (measured, attempts) = b.measured(row.metric, row.statistic);
            let samples = match BackendReport::latency_measurement(row.metric) {
                Some(m) => b
                    .measurements
                    .get(&m)
                    .and_then(|s| s.latency.as_ref())
                    .map_or(0, |l| l.count),
                None => attempts,
            };
            let (mut v, mut note) = verdict_with_samples(row, measured, samples);
            let failed = BackendReport::latency_measurement(row.metric)
                .and_then(|m| b.measurements.get(&m))
                .filter(|s| s.attempted > s.succeeded);
            if v == Verdict::NotMeasured && attempts > 0 {
                // Attempted but nothing succeeded: that is a failure, not an absence.
                v = Verdict::Fails;
                note = Some(format!("{attempts} attempts, none succeeded"));
            } else if let Some(s) = failed
                && v != Verdict::NoThreshold
            {
                v = Verdict::Fails;
                note = Some(format!(
                    "{} of {} failed ({})",
                    s.attempted - s.succeeded,
                    s.attempted,
                    s.errors
                        .iter()
                        .map(|(c, n)| format!("{}: {n}", c.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            } else if row.target.is_some() && measured.is_none() && attempts == 0 {
                note = Some("not run".into());
            }
            out.push(RowVerdict {
                table: t.id.clone(),
                row: row.clone(),
                measured,
                verdict: v,
                note,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suites::{BoundSpec, HealthTable, Level, MetricId, RowSource};

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
        assert_eq!(
            health_verdict(h, Some(50.0), Some(90.0)),
            Verdict::MeetsTarget
        );
        assert_eq!(
            health_verdict(h, Some(150.0), Some(190.0)),
            Verdict::Acceptable
        );
        // A good median does not hide a tail beyond max acceptable.
        assert_eq!(health_verdict(h, Some(50.0), Some(250.0)), Verdict::Fails);
        assert_eq!(health_verdict(h, Some(50.0), None), Verdict::NotMeasured);
    }
}
