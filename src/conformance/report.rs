//! Reports of a run: the parity matrix (case x backend), JSON records, Markdown, and the parity
//! verdict on core cases.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::output::{TableStyle, render};

use super::case::Outcome;
use super::runner::{CaseRecord, RunReport};
use super::terms::CaseLevel;

/// Whether the backends behave alike on core cases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParityVerdict {
    /// Every core case passed on every selected backend.
    pub at_parity: bool,
    /// Core cases that did not pass somewhere: (case, backend, outcome).
    pub blocking: Vec<(String, String, Outcome)>,
    /// Core cases whose outcome differs between backends.
    pub divergent: Vec<String>,
    /// A one-line verdict.
    pub summary: String,
}

/// The records that are the plan's documented limitations.
pub fn limitations(report: &RunReport) -> Vec<&CaseRecord> {
    report
        .records
        .iter()
        .filter(|r| r.limitation.is_some())
        .collect()
}

/// One line on the documented limitations, or nothing when there are none.
fn limitations_line(report: &RunReport) -> Option<String> {
    let lim = limitations(report);
    if lim.is_empty() {
        return None;
    }
    let mut backends: Vec<&str> = lim.iter().map(|r| r.backend.as_str()).collect();
    backends.dedup();
    Some(format!(
        "{} case result(s) on {} are the migration plan's documented limitations (not parity): {}",
        lim.len(),
        backends.join(", "),
        lim.iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The records that are documented platform differences (declared and observed).
pub fn differences(report: &RunReport) -> Vec<&CaseRecord> {
    report
        .records
        .iter()
        .filter(|r| r.outcome == Outcome::Divergent)
        .collect()
}

/// One line on the documented platform differences, or nothing when there are none.
fn differences_line(report: &RunReport) -> Option<String> {
    let d = differences(report);
    (!d.is_empty()).then(|| {
        format!(
            "{} case result(s) are documented platform differences (each declares its rule and source): {}",
            d.len(),
            d.iter()
                .map(|r| format!("{} on {}", r.id, r.backend))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Decides parity on core cases: every core case passes on every backend, or fails there as
/// a difference it declares (a documented platform rule); anything else blocks.
pub fn parity(report: &RunReport) -> ParityVerdict {
    let mut by_case: BTreeMap<&str, Vec<&CaseRecord>> = BTreeMap::new();
    for r in report.records.iter().filter(|r| r.level == CaseLevel::Core) {
        by_case.entry(&r.id).or_default().push(r);
    }
    let mut blocking = Vec::new();
    let mut divergent = Vec::new();
    for (id, recs) in &by_case {
        for r in recs {
            if !matches!(r.outcome, Outcome::Passed | Outcome::Divergent) {
                blocking.push((id.to_string(), r.backend.clone(), r.outcome));
            }
        }
        let undeclared: Vec<&&CaseRecord> = recs
            .iter()
            .filter(|r| r.outcome != Outcome::Divergent)
            .collect();
        if undeclared.windows(2).any(|w| w[0].outcome != w[1].outcome) {
            divergent.push(id.to_string());
        }
    }
    let documented = differences(report)
        .iter()
        .filter(|r| r.level == CaseLevel::Core)
        .count();
    let at_parity =
        blocking.is_empty() && !by_case.is_empty() && report.skipped_backends.is_empty();
    let summary = if at_parity {
        format!(
            "AT PARITY: all {} core cases pass on {}{}",
            by_case.len(),
            report.backends.join(", "),
            if documented > 0 {
                format!(" or differ by a documented platform rule ({documented} result(s))")
            } else {
                String::new()
            }
        )
    } else if by_case.is_empty() {
        "NOT AT PARITY: no core case ran".to_string()
    } else {
        format!(
            "NOT AT PARITY: {} core result(s) not passing, {} core case(s) differ between backends{}",
            blocking.len(),
            divergent.len(),
            if report.skipped_backends.is_empty() {
                String::new()
            } else {
                format!(
                    "; backend(s) not run: {}",
                    report
                        .skipped_backends
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )
    };
    ParityVerdict {
        at_parity,
        blocking,
        divergent,
        summary,
    }
}

fn cell(r: Option<&CaseRecord>) -> String {
    match r {
        None => "-".into(),
        Some(r) => match r.outcome {
            Outcome::Skipped => "skipped".into(),
            _ if r.limitation.is_some() => "documented limitation".into(),
            Outcome::Divergent => "documented difference".into(),
            o => format!("{} ({} ms)", o.as_str(), r.duration_ms),
        },
    }
}

/// The case x backend matrix.
pub fn render_matrix(report: &RunReport, style: TableStyle) -> String {
    let mut headers: Vec<&str> = vec!["case", "level"];
    headers.extend(report.backends.iter().map(String::as_str));
    let mut ids: Vec<(&str, CaseLevel)> = Vec::new();
    for r in &report.records {
        if !ids.iter().any(|(i, _)| *i == r.id) {
            ids.push((&r.id, r.level));
        }
    }
    let rows: Vec<Vec<String>> = ids
        .iter()
        .map(|(id, level)| {
            let mut row = vec![id.to_string(), level.as_str().to_string()];
            for b in &report.backends {
                row.push(cell(
                    report
                        .records
                        .iter()
                        .find(|r| r.id == *id && &r.backend == b),
                ));
            }
            row
        })
        .collect();
    render(&headers, &rows, style)
}

/// The statistics table (one row per backend).
pub fn render_stats(report: &RunReport, style: TableStyle) -> String {
    let rows: Vec<Vec<String>> = report
        .backends
        .iter()
        .map(|b| {
            let s = report.stats.get(b).copied().unwrap_or_default();
            vec![
                b.clone(),
                s.passed.to_string(),
                s.failed.to_string(),
                s.unsupported.to_string(),
                s.skipped.to_string(),
                s.timed_out.to_string(),
                s.divergent.to_string(),
            ]
        })
        .collect();
    render(
        &[
            "backend",
            "passed",
            "failed",
            "unsupported",
            "skipped",
            "timed out",
            "documented differences",
        ],
        &rows,
        style,
    )
}

/// Where each backend ran, one line per backend ("- cloudrun: SIMULATED: ..."); empty when
/// no backend declared it.
pub fn render_origins(report: &RunReport) -> String {
    let mut out = String::new();
    for (backend, statement) in &report.origins {
        let _ = writeln!(out, "- {backend}: {statement}");
    }
    out
}

/// The failures, each with case, backend, step and message.
pub fn render_failures(report: &RunReport) -> String {
    let mut out = String::new();
    for r in report
        .records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::TimedOut))
    {
        let _ = writeln!(
            out,
            "{} on {} ({}):\n  step: {}\n  {}\n",
            r.id,
            r.backend,
            r.outcome.as_str(),
            r.failed_step.as_deref().unwrap_or("-"),
            r.error.as_deref().unwrap_or("-").replace('\n', "\n  ")
        );
    }
    out
}

/// The JSON report: one record per case per backend plus statistics and the verdict.
pub fn to_json(report: &RunReport) -> serde_json::Value {
    serde_json::json!({
        "records": report.records,
        "stats": report.stats,
        "skipped_backends": report.skipped_backends,
        "excluded_heavy": report.excluded_heavy,
        "cleanup_errors": report.cleanup_errors,
        "duration_ms": report.duration_ms,
        "origins": report.origins,
        "parity": parity(report),
        "documented_limitations": limitations(report)
            .iter()
            .map(|r| serde_json::json!({"case": r.id, "backend": r.backend, "plan": r.limitation}))
            .collect::<Vec<_>>(),
        "documented_platform_differences": differences(report)
            .iter()
            .map(|r| serde_json::json!({
                "case": r.id,
                "backend": r.backend,
                "rule": r.divergence.as_ref().map(|d| d.rule.clone()),
                "source": r.divergence.as_ref().map(|d| d.source.clone()),
                "observed": r.error,
            }))
            .collect::<Vec<_>>(),
    })
}

/// The Markdown report: verdict, statistics, matrix, failures.
pub fn to_markdown(report: &RunReport) -> String {
    let v = parity(report);
    let mut out = String::from("# Conformance report\n\n");
    let _ = writeln!(out, "**{}**\n", v.summary);
    let origins = render_origins(report);
    if !origins.is_empty() {
        let _ = writeln!(out, "Where each backend ran:\n\n{origins}");
    }
    out.push_str("## Statistics\n\n");
    out.push_str(&render_stats(report, TableStyle::Markdown));
    out.push_str("\n\n## Parity matrix\n\n");
    out.push_str(&render_matrix(report, TableStyle::Markdown));
    out.push('\n');
    let lim = limitations(report);
    if !lim.is_empty() {
        out.push_str(
            "\n## Documented limitations\n\nThese cases answer `unsupported` where the migration plan says the backend lacks the capability; they are expected regressions, not parity.\n\n",
        );
        let rows: Vec<Vec<String>> = lim
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.backend.clone(),
                    r.limitation.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&render(
            &["case", "backend", "plan"],
            &rows,
            TableStyle::Markdown,
        ));
        out.push('\n');
    }
    let diffs = differences(report);
    if !diffs.is_empty() {
        out.push_str(
            "\n## Documented platform differences\n\nThese cases behave differently on a backend by a documented platform rule, which each case declares with its source (`expected-divergence`); a migration must account for them. A difference a case does not declare is a failure.\n\n",
        );
        let rows: Vec<Vec<String>> = diffs
            .iter()
            .map(|r| {
                let d = r.divergence.clone().unwrap_or(super::terms::Divergence {
                    backend: r.backend.clone(),
                    rule: String::new(),
                    source: String::new(),
                });
                vec![
                    r.id.clone(),
                    r.backend.clone(),
                    d.rule,
                    d.source,
                    r.error
                        .as_deref()
                        .and_then(|e| e.lines().find(|l| !l.trim().is_empty()))
                        .unwrap_or("-")
                        .trim()
                        .to_string(),
                ]
            })
            .collect();
        out.push_str(&render(
            &["case", "backend", "rule", "source", "observed"],
            &rows,
            TableStyle::Markdown,
        ));
        out.push('\n');
    }
    if !report.skipped_backends.is_empty() {
        out.push_str("\n## Backends not run\n\n");
        for (b, why) in &report.skipped_backends {
            let _ = writeln!(out, "- {b}: {why}");
        }
    }
    if !report.excluded_heavy.is_empty() {
        let _ = writeln!(
            out,
            "\nHeavy cases left out: {}",
            report.excluded_heavy.join(", ")
        );
    }
    let failures = render_failures(report);
    if !failures.is_empty() {
        out.push_str("\n## Failures\n\n```text\n");
        out.push_str(&failures);
        out.push_str("```\n");
    }
    if !report.cleanup_errors.is_empty() {
        out.push_str("\n## Clean-up errors\n\n");
        for e in &report.cleanup_errors {
            let _ = writeln!(out, "- {e}");
        }
    }
    out
}

/// The terminal summary: statistics, matrix, failures, verdict.
pub fn render_terminal(report: &RunReport) -> String {
    let origins = render_origins(report);
    format!(
        "{}{}\n{}\n{}{}{}{}\n",
        if origins.is_empty() {
            String::new()
        } else {
            format!("Where each backend ran:\n{origins}")
        },
        render_matrix(report, TableStyle::Terminal),
        render_stats(report, TableStyle::Terminal),
        render_failures(report),
        limitations_line(report)
            .map(|l| format!("{l}\n"))
            .unwrap_or_default(),
        differences_line(report)
            .map(|l| format!("{l}\n"))
            .unwrap_or_default(),
        parity(report).summary
    )
}

/// Writes `conformance.json` and `conformance.md` into `dir` (created if needed); each file is
/// written to a temporary name first and renamed, so no half-written report is left.
pub fn write_reports(report: &RunReport, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let json = serde_json::to_vec_pretty(&to_json(report)).map_err(std::io::Error::other)?;
    let md = to_markdown(report).into_bytes();
    let mut out = Vec::new();
    for (name, bytes) in [("conformance.json", json), ("conformance.md", md)] {
        let path = dir.join(name);
        crate::report::write_atomic(&path, &bytes).map_err(std::io::Error::other)?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::documented_limitation;
    use crate::conformance::terms::{Area, Capability};

    fn rec(id: &str, backend: &str, outcome: Outcome, level: CaseLevel) -> CaseRecord {
        CaseRecord {
            id: id.into(),
            area: Area::Files,
            level,
            backend: backend.into(),
            outcome,
            duration_ms: 5,
            error: (outcome == Outcome::Failed).then(|| "stdout differs".into()),
            failed_step: (outcome == Outcome::Failed).then(|| "f.scn:3: run s".into()),
            limitation: None,
            divergence: None,
        }
    }

    fn report(records: Vec<CaseRecord>) -> RunReport {
        let mut stats: BTreeMap<String, crate::conformance::Statistics> = BTreeMap::new();
        for r in &records {
            stats.entry(r.backend.clone()).or_default().add(r.outcome);
        }
        RunReport {
            backends: vec!["docker".into(), "cloudrun".into()],
            skipped_backends: BTreeMap::new(),
            records,
            stats,
            excluded_heavy: vec![],
            cleanup_errors: vec![],
            duration_ms: 10,
            origins: [
                (
                    "docker".to_string(),
                    "Docker engine on this host".to_string(),
                ),
                (
                    "cloudrun".to_string(),
                    crate::protocol::BackendOrigin::CloudRunTwin {
                        profile: "none".into(),
                        latency_profile: None,
                    }
                    .statement(),
                ),
            ]
            .into(),
        }
    }

    /// Every conformance format names where each backend ran; the twin is SIMULATED.
    #[test]
    fn every_format_labels_the_origin() {
        let r = report(vec![rec(
            "files.a",
            "cloudrun",
            Outcome::Passed,
            CaseLevel::Core,
        )]);
        let want = "SIMULATED: Cloud Run twin, profile none";
        assert!(to_markdown(&r).contains(want));
        assert!(render_terminal(&r).contains(want));
        assert!(
            to_json(&r)["origins"]["cloudrun"]
                .as_str()
                .unwrap()
                .contains(want)
        );
    }

    #[test]
    fn declared_differences_keep_parity_and_are_listed_with_their_rule() {
        let mut diff = rec(
            "files.fifo",
            "cloudrun",
            Outcome::Divergent,
            CaseLevel::Core,
        );
        diff.error = Some("stdout differs\nmkfifo: Operation not supported".into());
        diff.divergence = Some(crate::conformance::terms::Divergence {
            backend: "cloudrun".into(),
            rule: "no named pipes".into(),
            source: "gcsfuse docs/semantics.md".into(),
        });
        let r = report(vec![
            rec("files.fifo", "docker", Outcome::Passed, CaseLevel::Core),
            diff,
            rec("files.a", "docker", Outcome::Passed, CaseLevel::Core),
            rec("files.a", "cloudrun", Outcome::Passed, CaseLevel::Core),
        ]);
        let v = parity(&r);
        assert!(v.at_parity, "{v:?}");
        assert!(v.divergent.is_empty());
        assert!(
            v.summary.contains("documented platform rule (1 result"),
            "{}",
            v.summary
        );
        let md = to_markdown(&r);
        assert!(md.contains("## Documented platform differences"), "{md}");
        assert!(md.contains("no named pipes") && md.contains("gcsfuse docs/semantics.md"));
        assert!(md.contains("mkfifo: Operation not supported") || md.contains("stdout differs"));
        let j = to_json(&r);
        assert_eq!(
            j["documented_platform_differences"][0]["rule"],
            "no named pipes"
        );
        assert!(render_terminal(&r).contains("documented platform differences"));
        // An undeclared failure still blocks.
        let r2 = report(vec![
            rec("files.fifo", "docker", Outcome::Passed, CaseLevel::Core),
            rec("files.fifo", "cloudrun", Outcome::Failed, CaseLevel::Core),
        ]);
        assert!(!parity(&r2).at_parity);
    }

    #[test]
    fn parity_requires_every_core_case_to_pass_everywhere() {
        let ok = report(vec![
            rec("files.a", "docker", Outcome::Passed, CaseLevel::Core),
            rec("files.a", "cloudrun", Outcome::Passed, CaseLevel::Core),
            rec("files.b", "docker", Outcome::Passed, CaseLevel::Extended),
            rec("files.b", "cloudrun", Outcome::Failed, CaseLevel::Extended),
        ]);
        assert!(parity(&ok).at_parity, "{:?}", parity(&ok));
        let bad = report(vec![
            rec("files.a", "docker", Outcome::Passed, CaseLevel::Core),
            rec("files.a", "cloudrun", Outcome::Unsupported, CaseLevel::Core),
        ]);
        let v = parity(&bad);
        assert!(!v.at_parity);
        assert_eq!(v.divergent, vec!["files.a".to_string()]);
        assert_eq!(
            v.blocking,
            vec![("files.a".into(), "cloudrun".into(), Outcome::Unsupported)]
        );
        assert!(!parity(&report(vec![])).at_parity);
    }

    #[test]
    fn plan_limitations_are_reported_apart_from_parity() {
        use Capability::{Browser, Stdin, Vnc};
        let lim = |b, req: &[Capability], o| documented_limitation(b, req, o).is_some();
        assert!(lim("cloudrun", &[Browser], Outcome::Unsupported));
        assert!(lim("cloudrun", &[Vnc], Outcome::Unsupported));
        // Only an `unsupported` answer, only on the backend the plan names, only for browser/VNC.
        assert!(!lim("cloudrun", &[Browser], Outcome::Failed));
        assert!(!lim("cloudrun", &[Browser], Outcome::Passed));
        assert!(!lim("docker", &[Browser], Outcome::Unsupported));
        assert!(!lim("cloudrun", &[Stdin], Outcome::Unsupported));
        let mut cr = rec(
            "browser.get_browser",
            "cloudrun",
            Outcome::Unsupported,
            CaseLevel::Extended,
        );
        cr.limitation =
            documented_limitation("cloudrun", &[Browser], cr.outcome).map(|l| l.plan.to_string());
        let r = report(vec![
            rec("files.a", "docker", Outcome::Passed, CaseLevel::Core),
            rec("files.a", "cloudrun", Outcome::Passed, CaseLevel::Core),
            rec(
                "browser.get_browser",
                "docker",
                Outcome::Passed,
                CaseLevel::Extended,
            ),
            cr,
        ]);
        assert!(parity(&r).at_parity);
        let m = render_matrix(&r, TableStyle::Markdown);
        assert!(m.contains("documented limitation"), "{m}");
        let md = to_markdown(&r);
        assert!(
            md.contains("## Documented limitations") && md.contains("NotImplementedError"),
            "{md}"
        );
        let t = render_terminal(&r);
        assert!(
            t.contains("documented limitations (not parity): browser.get_browser"),
            "{t}"
        );
        let j = to_json(&r);
        assert_eq!(
            j["documented_limitations"][0]["case"],
            "browser.get_browser"
        );
        assert_eq!(j["documented_limitations"][0]["backend"], "cloudrun");
    }

    #[test]
    fn renders_matrix_json_markdown_and_writes_files() {
        let r = report(vec![
            rec("files.a", "docker", Outcome::Passed, CaseLevel::Core),
            rec("files.a", "cloudrun", Outcome::Failed, CaseLevel::Core),
        ]);
        let m = render_matrix(&r, TableStyle::Markdown);
        assert!(
            m.contains("pass (5 ms)") && m.contains("fail (5 ms)"),
            "{m}"
        );
        let j = to_json(&r);
        assert_eq!(j["records"].as_array().unwrap().len(), 2);
        assert_eq!(j["records"][1]["outcome"], "failed");
        assert_eq!(j["records"][1]["failed_step"], "f.scn:3: run s");
        assert_eq!(j["parity"]["at_parity"], false);
        let md = to_markdown(&r);
        assert!(
            md.contains("NOT AT PARITY")
                && md.contains("## Failures")
                && md.contains("stdout differs")
        );
        let dir = tempfile::tempdir().unwrap();
        let files = write_reports(&r, &dir.path().join("reports")).unwrap();
        assert_eq!(files.len(), 2);
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert_eq!(back["records"][0]["id"], "files.a");
    }
}
