//! The backend-agnostic conformance suite: cases (scenario files and Rust code) grouped by
//! protocol area, a backend registry, the runner with events and statistics, parity reports,
//! deliberately broken sandboxes for self-tests, and the `shell` REPL.
//!
//! Isolation: each area runs in a fresh sandbox per backend; every case gets fresh session
//! names (`c{n}-NAME`) and a private directory `/workspace/conformance/{case id}`; sandboxes are
//! destroyed after the area even when a case fails, times out or panics.

#[cfg(any(test, feature = "test-doubles"))]
pub mod broken;
mod browser;
pub mod case;
pub mod cases;
pub mod registry;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod shell;
pub mod steps;
pub mod terms;
pub mod text;

pub use case::{Case, CaseBody, Outcome};
pub use registry::{BackendEntry, BackendFactory, FactoryError, Registry, default_registry};
pub use report::{
    ParityVerdict, parity, render_matrix, render_terminal, to_json, to_markdown, write_reports,
};
pub use runner::{
    CaseRecord, LoadError, Reporter, RunEvent, RunOptions, RunReport, Statistics, builtin_cases,
    load_cases, run_cases, run_suite, run_with_reporters,
};
pub use steps::SandboxGuard;
pub use terms::{Area, Capability, CaseCtx, CaseFailure, CaseLevel, CaseResult};

/// A reporter that prints one line per finished case (and failure details) to a writer.
pub struct ConsoleReporter<W: std::io::Write + Send> {
    out: W,
}

impl<W: std::io::Write + Send> ConsoleReporter<W> {
    /// Prints to `out`.
    pub fn new(out: W) -> Self {
        ConsoleReporter { out }
    }
}

impl<W: std::io::Write + Send> Reporter for ConsoleReporter<W> {
    fn on_event(&mut self, event: &RunEvent) {
        let _ = match event {
            RunEvent::RunStarted { backends, cases } => writeln!(
                self.out,
                "conformance: {cases} case(s) on {}",
                backends.join(", ")
            ),
            RunEvent::BackendSkipped { backend, reason } => {
                writeln!(self.out, "SKIP {backend}: {reason}")
            }
            RunEvent::CaseStarted { .. } => Ok(()),
            RunEvent::CaseFinished(r) => {
                let head = writeln!(
                    self.out,
                    "{:<11} {:<9} {} ({} ms)",
                    r.outcome.as_str().to_uppercase(),
                    r.backend,
                    r.id,
                    r.duration_ms
                );
                if r.outcome == Outcome::Divergent
                    && let Some(d) = &r.divergence
                {
                    let _ = writeln!(self.out, "    documented: {} ({})", d.rule, d.source);
                }
                if matches!(r.outcome, Outcome::Failed | Outcome::TimedOut) {
                    let _ = writeln!(
                        self.out,
                        "    step: {}\n    {}",
                        r.failed_step.as_deref().unwrap_or("-"),
                        r.error.as_deref().unwrap_or("-").replace('\n', "\n    ")
                    );
                }
                head
            }
            RunEvent::RunFinished { stats } => {
                let mut res = Ok(());
                for (b, s) in stats {
                    res = writeln!(
                        self.out,
                        "{b}: {} passed, {} failed, {} unsupported, {} skipped, {} timed out, {} documented differences",
                        s.passed, s.failed, s.unsupported, s.skipped, s.timed_out, s.divergent
                    );
                }
                res
            }
        };
    }
}
