//! The runner: loads cases, runs them on every selected backend (one fresh sandbox per area and
//! backend, fresh sessions and a private directory per case), sends events to reporters and
//! keeps statistics apart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::protocol::{Capabilities, ErrorKind, SandboxBackend};

use super::case::{Case, CaseBody, Outcome};
use super::registry::BackendEntry;
use super::scenario::{self, ParseError, run_scenario};
use super::steps::SandboxGuard;
use super::terms::{Area, Capability, CaseCtx, CaseFailure, CaseLevel};

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A skip counts as a failure.
    pub strict: bool,
    /// Only cases whose id contains this text, or matches it as a glob (`files.*`).
    pub filter: Option<String>,
    /// Extra directories of `*.scn` files.
    pub scenario_dirs: Vec<PathBuf>,
    /// Leave out the built-in cases (only the extra scenario dirs run).
    pub no_builtin: bool,
    /// Each case is stopped after this long and reported as timed out.
    pub case_timeout: Duration,
    /// Leave out heavy cases (e.g. the 500 MB transfer).
    pub skip_heavy: bool,
    /// Deadline for creating (and readying) an area's sandbox.
    pub create_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            strict: false,
            filter: None,
            scenario_dirs: Vec::new(),
            no_builtin: false,
            case_timeout: Duration::from_secs(300),
            skip_heavy: false,
            create_timeout: Duration::from_secs(300),
        }
    }
}

/// Why the case list could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// A scenario file does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The filter is not a valid glob.
    #[error("bad filter {0:?}: {1}")]
    Filter(String, String),
    /// Two cases share an id.
    #[error("case id {0} is defined twice ({1} and {2})")]
    Duplicate(String, String, String),
}

/// One case on one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Case id.
    pub id: String,
    /// Area.
    pub area: Area,
    /// Core or extended.
    pub level: CaseLevel,
    /// Backend name.
    pub backend: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Wall time.
    pub duration_ms: u64,
    /// Failure, skip or unsupported text.
    pub error: Option<String>,
    /// The step that failed (`file.scn:12: run s`).
    pub failed_step: Option<String>,
    /// For an `unsupported` outcome the migration plan expects: the plan's words (see
    /// [`super::report::PLAN_LIMITATIONS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limitation: Option<String>,
    /// For a `documented difference` outcome: the platform rule the case declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<super::terms::Divergence>,
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statistics {
    /// Passed cases.
    pub passed: usize,
    /// Failed cases.
    pub failed: usize,
    /// Unsupported (capability missing, correctly reported).
    pub unsupported: usize,
    /// Skipped cases.
    pub skipped: usize,
    /// Timed-out cases.
    pub timed_out: usize,
    /// Documented platform differences (declared, and observed).
    #[serde(default)]
    pub divergent: usize,
}

impl Statistics {
    /// Counts one outcome.
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Unsupported => self.unsupported += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::Divergent => self.divergent += 1,
        }
    }

    /// All counted cases.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.unsupported + self.skipped + self.timed_out
    }
}

/// Events from the runner to reporters.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run begins.
    RunStarted {
        /// Selected backends.
        backends: Vec<String>,
        /// Number of cases per backend.
        cases: usize,
    },
    /// A backend could not be built; its cases are skipped.
    BackendSkipped {
        /// Backend.
        backend: String,
        /// Why.
        reason: String,
    },
    /// A case begins.
    CaseStarted {
        /// Backend.
        backend: String,
        /// Case id.
        id: String,
    },
    /// A case ended.
    CaseFinished(CaseRecord),
    /// The run ended.
    RunFinished {
        /// Statistics per backend.
        stats: BTreeMap<String, Statistics>,
    },
}

/// Receives run events (console output, progress, collectors).
pub trait Reporter: Send {
    /// Handles one event.
    fn on_event(&mut self, event: &RunEvent);
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Selected backends, in order.
    pub backends: Vec<String>,
    /// Backends that could not be built, with the reason.
    pub skipped_backends: BTreeMap<String, String>,
    /// One record per case per backend.
    pub records: Vec<CaseRecord>,
    /// Statistics per backend.
    pub stats: BTreeMap<String, Statistics>,
    /// Heavy cases left out by `skip_heavy`.
    pub excluded_heavy: Vec<String>,
    /// Sandboxes that could not be destroyed (backend, sandbox id, error).
    pub cleanup_errors: Vec<String>,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// Where each backend ran, in one sentence (`SandboxBackend::origin`): Docker, Google
    /// Cloud, a standalone emulator or the SIMULATED twin.
    #[serde(default)]
    pub origins: BTreeMap<String, String>,
}

impl RunReport {
    /// Statistics over every backend.
    pub fn totals(&self) -> Statistics {
        let mut t = Statistics::default();
        for r in &self.records {
            t.add(r.outcome);
        }
        t
    }

    /// The process exit status: 1 on any failure or timeout, and in strict mode on any skip.
    pub fn exit_code(&self, strict: bool) -> i32 {
        let t = self.totals();
        if t.failed > 0 || t.timed_out > 0 || (strict && t.skipped > 0) {
            1
        } else {
            0
        }
    }
}

/// Every built-in case: the Rust cases and the embedded scenario files.
pub fn builtin_cases() -> Result<Vec<Case>, LoadError> {
    let mut out = super::cases::rust_cases();
    for (name, text) in super::cases::BUILTIN_SCENARIOS {
        for sc in scenario::parse(&format!("suites/scenarios/{name}"), text)? {
            out.push(scenario_case(sc));
        }
    }
    Ok(out)
}

/// A case from a parsed scenario.
pub fn scenario_case(sc: scenario::Scenario) -> Case {
    Case {
        id: sc.id.clone(),
        area: Area::parse(sc.id.split('.').next().unwrap_or_default()).unwrap_or(Area::Files),
        level: sc.level,
        requires: sc.requires.clone(),
        heavy: false,
        source: format!("{}:{}", sc.file, sc.line),
        divergences: sc.divergences.clone(),
        body: CaseBody::Scenario(Arc::new(sc)),
    }
}

/// The cases a run with these options executes (filtered; heavy ones removed when asked),
/// plus the ids of heavy cases that were left out.
pub fn load_cases(opts: &RunOptions) -> Result<(Vec<Case>, Vec<String>), LoadError> {
    let mut all = if opts.no_builtin {
        Vec::new()
    } else {
        builtin_cases()?
    };
    for dir in &opts.scenario_dirs {
        all.extend(scenario::parse_dir(dir)?.into_iter().map(scenario_case));
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for c in &all {
        if let Some(prev) = seen.insert(c.id.clone(), c.source.clone()) {
            return Err(LoadError::Duplicate(c.id.clone(), prev, c.source.clone()));
        }
    }
    let matcher = match &opts.filter {
        Some(f) if f.contains(['*', '?', '[']) => Some(
            globset::Glob::new(f)
                .map_err(|e| LoadError::Filter(f.clone(), e.to_string()))?
                .compile_matcher(),
        ),
        _ => None,
    };
    let mut excluded = Vec::new();
    let mut cases: Vec<Case> = all
        .into_iter()
        .filter(|c| match (&matcher, &opts.filter) {
            (Some(m), _) => m.is_match(&c.id),
            (None, Some(f)) => c.id.contains(f.as_str()),
            (None, None) => true,
        })
        .filter(|c| {
            if opts.skip_heavy && c.heavy {
                excluded.push(c.id.clone());
                false
            } else {
                true
            }
        })
        .collect();
    cases.sort_by(|a, b| (a.area, &a.id).cmp(&(b.area, &b.id)));
    Ok((cases, excluded))
}

/// Runs the suite on `backends` without reporters.
pub async fn run_suite(
    backends: &[BackendEntry],
    opts: &RunOptions,
) -> Result<RunReport, LoadError> {
    run_with_reporters(backends, opts, &mut []).await
}

/// Runs the suite on `backends`, sending events to `reporters`.
pub async fn run_with_reporters(
    backends: &[BackendEntry],
    opts: &RunOptions,
    reporters: &mut [Box<dyn Reporter>],
) -> Result<RunReport, LoadError> {
    let (cases, excluded_heavy) = load_cases(opts)?;
    run_cases(backends, cases, excluded_heavy, opts, reporters).await
}

/// Runs the given cases (already loaded and filtered) on `backends`.
pub async fn run_cases(
    backends: &[BackendEntry],
    cases: Vec<Case>,
    excluded_heavy: Vec<String>,
    opts: &RunOptions,
    reporters: &mut [Box<dyn Reporter>],
) -> Result<RunReport, LoadError> {
    let started = Instant::now();
    let mut report = RunReport {
        backends: backends.iter().map(|b| b.name.clone()).collect(),
        skipped_backends: BTreeMap::new(),
        records: Vec::new(),
        stats: BTreeMap::new(),
        excluded_heavy,
        cleanup_errors: Vec::new(),
        duration_ms: 0,
        origins: BTreeMap::new(),
    };
    emit(
        reporters,
        &RunEvent::RunStarted {
            backends: report.backends.clone(),
            cases: cases.len(),
        },
    );
    for entry in backends {
        report.stats.entry(entry.name.clone()).or_default();
        let backend = match (entry.factory)().await {
            Ok(b) => b,
            Err(e) => {
                let reason = e.to_string();
                emit(
                    reporters,
                    &RunEvent::BackendSkipped {
                        backend: entry.name.clone(),
                        reason: reason.clone(),
                    },
                );
                report
                    .skipped_backends
                    .insert(entry.name.clone(), reason.clone());
                for c in &cases {
                    let rec = record(
                        c,
                        &entry.name,
                        Outcome::Skipped,
                        Duration::ZERO,
                        Some(reason.clone()),
                        None,
                    );
                    finish(&mut report, reporters, rec);
                }
                continue;
            }
        };
        report
            .origins
            .insert(entry.name.clone(), backend.origin().statement());
        run_backend(&entry.name, backend, &cases, opts, &mut report, reporters).await;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    emit(
        reporters,
        &RunEvent::RunFinished {
            stats: report.stats.clone(),
        },
    );
    Ok(report)
}

fn emit(reporters: &mut [Box<dyn Reporter>], ev: &RunEvent) {
    for r in reporters.iter_mut() {
        r.on_event(ev);
    }
}

fn finish(report: &mut RunReport, reporters: &mut [Box<dyn Reporter>], rec: CaseRecord) {
    report
        .stats
        .entry(rec.backend.clone())
        .or_default()
        .add(rec.outcome);
    emit(reporters, &RunEvent::CaseFinished(rec.clone()));
    report.records.push(rec);
}

fn record(
    c: &Case,
    backend: &str,
    outcome: Outcome,
    d: Duration,
    error: Option<String>,
    step: Option<String>,
) -> CaseRecord {
    CaseRecord {
        id: c.id.clone(),
        area: c.area,
        level: c.level,
        backend: backend.to_string(),
        outcome,
        duration_ms: d.as_millis() as u64,
        error,
        failed_step: step,
        limitation: super::case::documented_limitation(backend, &c.requires, outcome)
            .map(|l| l.plan.to_string()),
        divergence: None,
    }
}

/// Applies a case's declared divergence on `backend`: a failure there is the documented
/// difference; a pass means the declaration no longer holds, which fails the case.
fn apply_divergence(c: &Case, mut rec: CaseRecord) -> CaseRecord {
    let Some(d) = c.divergences.iter().find(|d| d.backend == rec.backend) else {
        return rec;
    };
    match rec.outcome {
        Outcome::Failed => {
            rec.outcome = Outcome::Divergent;
            rec.divergence = Some(d.clone());
        }
        Outcome::Passed => {
            rec.outcome = Outcome::Failed;
            rec.error = Some(format!(
                "the case declares a documented difference on {} ({}; {}), but it passed there: the declaration no longer holds",
                d.backend, d.rule, d.source
            ));
        }
        _ => {}
    }
    rec
}

async fn run_backend(
    name: &str,
    backend: Arc<dyn SandboxBackend>,
    cases: &[Case],
    opts: &RunOptions,
    report: &mut RunReport,
    reporters: &mut [Box<dyn Reporter>],
) {
    let caps = backend.capabilities();
    let mut index = 0usize;
    for area in Area::ALL {
        let area_cases: Vec<&Case> = cases.iter().filter(|c| c.area == area).collect();
        if area_cases.is_empty() {
            continue;
        }
        // The area's sandbox offers what its cases require, as far as the backend can (a
        // backend may give a browser only to sandboxes that ask for one).
        let required: Vec<Capability> = area_cases
            .iter()
            .flat_map(|c| c.requires.iter().copied())
            .collect();
        let wants = Capability::request(&required).intersection(&caps);
        let created = tokio::time::timeout(opts.create_timeout, async {
            let sb = backend.create_with(wants).await?;
            let guard = SandboxGuard::new(sb);
            guard.sandbox().ensure_ready().await?;
            Ok::<_, crate::protocol::SandboxError>(guard)
        })
        .await;
        let guard = match created {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                fail_area(
                    name,
                    &area_cases,
                    format!("creating the {area} sandbox failed: {e}"),
                    report,
                    reporters,
                );
                continue;
            }
            Err(_) => {
                fail_area(
                    name,
                    &area_cases,
                    format!(
                        "creating the {area} sandbox took longer than {:?}",
                        opts.create_timeout
                    ),
                    report,
                    reporters,
                );
                continue;
            }
        };
        let sandbox = guard.sandbox();
        for case in area_cases {
            index += 1;
            emit(
                reporters,
                &RunEvent::CaseStarted {
                    backend: name.to_string(),
                    id: case.id.clone(),
                },
            );
            let ctx = CaseCtx {
                sandbox: sandbox.clone(),
                backend: backend.clone(),
                case_dir: format!("/workspace/conformance/{}", case.id),
                session_prefix: format!("c{index}-"),
                caps,
                wants,
            };
            let rec = run_one(name, case, ctx, caps, opts.case_timeout).await;
            finish(report, reporters, rec);
        }
        let id = sandbox.id().to_string();
        drop(sandbox);
        match tokio::time::timeout(Duration::from_secs(120), guard.destroy()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => report
                .cleanup_errors
                .push(format!("{name}: sandbox {id}: {e}")),
            Err(_) => report
                .cleanup_errors
                .push(format!("{name}: sandbox {id}: destroy timed out")),
        }
    }
}

fn fail_area(
    name: &str,
    cases: &[&Case],
    why: String,
    report: &mut RunReport,
    reporters: &mut [Box<dyn Reporter>],
) {
    for c in cases {
        let rec = record(
            c,
            name,
            Outcome::Failed,
            Duration::ZERO,
            Some(why.clone()),
            None,
        );
        finish(report, reporters, rec);
    }
}

/// Runs one case in its own task (panics are caught) with a time limit, and classifies it.
async fn run_one(
    backend: &str,
    case: &Case,
    ctx: CaseCtx,
    caps: Capabilities,
    limit: Duration,
) -> CaseRecord {
    let started = Instant::now();
    let body = case.body.clone();
    let handle = tokio::spawn(async move {
        match body {
            CaseBody::Scenario(sc) => run_scenario(&sc, &ctx).await,
            CaseBody::Rust(f) => f(ctx).await,
        }
    });
    let abort = handle.abort_handle();
    let res = tokio::time::timeout(limit, handle).await;
    let d = started.elapsed();
    let result = match res {
        Err(_) => {
            abort.abort();
            return record(
                case,
                backend,
                Outcome::TimedOut,
                d,
                Some(format!("the case did not finish within {limit:?}")),
                None,
            );
        }
        Ok(Err(join)) => {
            let msg = if join.is_panic() {
                let p = join.into_panic();
                let text = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(non-text panic)".into());
                format!("the case panicked: {text}")
            } else {
                "the case task was cancelled".to_string()
            };
            Err(CaseFailure {
                step: None,
                message: msg,
                error: None,
            })
        }
        Ok(Ok(r)) => r,
    };
    let (outcome, error, step) = classify(&case.requires, &caps, result);
    apply_divergence(case, record(case, backend, outcome, d, error, step))
}

/// Decides the outcome from the case result and the capabilities the backend lacks.
pub fn classify(
    requires: &[Capability],
    caps: &Capabilities,
    result: Result<(), CaseFailure>,
) -> (Outcome, Option<String>, Option<String>) {
    let missing: Vec<&str> = requires
        .iter()
        .filter(|c| !c.offered_by(caps))
        .map(|c| c.as_str())
        .collect();
    match result {
        Ok(()) if missing.is_empty() => (Outcome::Passed, None, None),
        Ok(()) => (
            Outcome::Failed,
            Some(format!(
                "the backend does not declare capability {}, so the case must fail with an `unsupported` error, but every step succeeded",
                missing.join(", ")
            )),
            None,
        ),
        Err(f) if f.error_kind() == Some(ErrorKind::Unsupported) && !missing.is_empty() => {
            (Outcome::Unsupported, Some(f.message.clone()), f.step)
        }
        Err(f) => {
            let mut msg = f.message.clone();
            if !missing.is_empty() {
                msg.push_str(&format!(
                    "\n  (the backend lacks {}: expected an `unsupported` error instead)",
                    missing.join(", ")
                ));
            }
            (Outcome::Failed, Some(msg), f.step)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SandboxError;

    fn unsupported() -> CaseFailure {
        CaseFailure::sandbox(
            "x.scn:3: bg s",
            SandboxError::unsupported("sb", "exec_stateful", "no background"),
        )
    }

    #[test]
    fn a_declared_divergence_must_fail_where_declared() {
        let case = Case {
            id: "files.x".into(),
            area: Area::Files,
            level: CaseLevel::Core,
            requires: vec![],
            heavy: false,
            source: "t".into(),
            divergences: vec![
                crate::conformance::terms::Divergence::parse("cloudrun | a rule | a source")
                    .unwrap(),
            ],
            body: CaseBody::Rust(|_| Box::pin(async { Ok(()) })),
        };
        let rec = |b: &str, o: Outcome| record(&case, b, o, Duration::ZERO, None, None);
        let d = apply_divergence(&case, rec("cloudrun", Outcome::Failed));
        assert_eq!(d.outcome, Outcome::Divergent);
        assert_eq!(d.divergence.as_ref().unwrap().rule, "a rule");
        let stale = apply_divergence(&case, rec("cloudrun", Outcome::Passed));
        assert_eq!(stale.outcome, Outcome::Failed);
        assert!(stale.error.unwrap().contains("no longer holds"));
        assert_eq!(
            apply_divergence(&case, rec("docker", Outcome::Failed)).outcome,
            Outcome::Failed,
            "only the declared backend"
        );
        assert!(crate::conformance::terms::Divergence::parse("cloud run | r | s").is_err());
        assert!(crate::conformance::terms::Divergence::parse("cloudrun | r").is_err());
    }

    #[test]
    fn classification_is_capability_gated() {
        let none = Capabilities::default();
        let all = Capabilities {
            browser: true,
            vnc: true,
            stdin: true,
            background: true,
            reattach: true,
        };
        let req = [Capability::Background];
        assert_eq!(classify(&[], &none, Ok(())).0, Outcome::Passed);
        assert_eq!(classify(&req, &all, Ok(())).0, Outcome::Passed);
        let (o, e, _) = classify(&req, &none, Ok(()));
        assert_eq!(o, Outcome::Failed);
        assert!(e.unwrap().contains("must fail with an `unsupported` error"));
        let (o, _, step) = classify(&req, &none, Err(unsupported()));
        assert_eq!(o, Outcome::Unsupported);
        assert_eq!(step.as_deref(), Some("x.scn:3: bg s"));
        // Declared capability but Unsupported returned: a failure.
        assert_eq!(classify(&req, &all, Err(unsupported())).0, Outcome::Failed);
        // Missing capability but another error class: a failure that says so.
        let other = CaseFailure::sandbox("s", SandboxError::backend("sb", "op", "boom"));
        let (o, e, _) = classify(&req, &none, Err(other));
        assert_eq!(o, Outcome::Failed);
        assert!(e.unwrap().contains("expected an `unsupported` error"));
    }

    #[test]
    fn exit_code_depends_on_strictness() {
        let mut r = RunReport {
            backends: vec!["x".into()],
            skipped_backends: BTreeMap::new(),
            records: Vec::new(),
            stats: BTreeMap::new(),
            excluded_heavy: Vec::new(),
            cleanup_errors: Vec::new(),
            duration_ms: 0,
            origins: BTreeMap::new(),
        };
        let rec = |o| CaseRecord {
            id: "files.a".into(),
            area: Area::Files,
            level: CaseLevel::Core,
            backend: "x".into(),
            outcome: o,
            duration_ms: 1,
            error: None,
            failed_step: None,
            limitation: None,
            divergence: None,
        };
        r.records.push(rec(Outcome::Passed));
        r.records.push(rec(Outcome::Unsupported));
        assert_eq!((r.exit_code(false), r.exit_code(true)), (0, 0));
        r.records.push(rec(Outcome::Skipped));
        assert_eq!((r.exit_code(false), r.exit_code(true)), (0, 1));
        r.records.push(rec(Outcome::TimedOut));
        assert_eq!(r.exit_code(false), 1);
    }

    #[test]
    fn filters_by_substring_glob_and_heavy() {
        let opts = RunOptions {
            filter: Some("files.*".into()),
            ..Default::default()
        };
        let (cases, _) = load_cases(&opts).unwrap();
        assert!(!cases.is_empty() && cases.iter().all(|c| c.id.starts_with("files.")));
        let opts = RunOptions {
            filter: Some("500mb".into()),
            skip_heavy: true,
            ..Default::default()
        };
        let (cases, excluded) = load_cases(&opts).unwrap();
        assert!(cases.is_empty());
        assert_eq!(excluded, vec!["transfer.roundtrip_500mb".to_string()]);
        let (all, _) = load_cases(&RunOptions::default()).unwrap();
        assert!(all.len() >= 60, "only {} cases", all.len());
        for area in Area::ALL {
            assert!(all.iter().any(|c| c.area == area), "no case in {area}");
        }
        assert!(
            load_cases(&RunOptions {
                filter: Some("[".into()),
                ..Default::default()
            })
            .is_err()
        );
    }
}
