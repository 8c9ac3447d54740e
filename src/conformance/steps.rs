//! What the Rust cases are written with: the deadline of one protocol call, the record of a
//! built-in case, step helpers that turn a sandbox call into a named step's failure, and the
//! guard that destroys a case's sandbox on every path.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::case::{Case, CaseBody};
use super::terms::{Area, Capability, CaseCtx, CaseFailure, CaseLevel, CaseResult};
use super::text::escape_bytes;
use crate::protocol::{ErrorKind, Sandbox, SandboxError, StatefulExec};

/// Deadline of one protocol call in a Rust case.
pub(super) const T: Duration = Duration::from_secs(60);

pub(super) fn case(
    id: &str,
    level: CaseLevel,
    requires: &[Capability],
    heavy: bool,
    f: super::case::RustCaseFn,
) -> Case {
    let area = Area::parse(id.split('.').next().unwrap_or_default())
        .expect("built-in ids use known areas");
    Case {
        id: id.to_string(),
        area,
        level,
        requires: requires.to_vec(),
        heavy,
        source: "builtin (src/conformance/cases.rs)".into(),
        divergences: Vec::new(),
        body: CaseBody::Rust(f),
    }
}

/// A sandbox-call failure at a named Rust step.
pub(super) fn sb<T>(step: &str, r: Result<T, SandboxError>) -> Result<T, CaseFailure> {
    r.map_err(|e| CaseFailure::sandbox(step, e))
}

pub(super) fn ensure(step: &str, cond: bool, msg: impl FnOnce() -> String) -> CaseResult {
    if cond {
        Ok(())
    } else {
        Err(CaseFailure::at(step, msg()))
    }
}

pub(super) fn expect_kind<T: std::fmt::Debug>(
    step: &str,
    r: Result<T, SandboxError>,
    want: ErrorKind,
) -> CaseResult {
    match r {
        Err(e) if e.kind() == want => Ok(()),
        Err(e) => Err(CaseFailure::class_differs(step, want, e)),
        Ok(v) => Err(CaseFailure::at(
            step,
            format!("expected an error of class {want}, got success: {v:?}"),
        )),
    }
}

/// Runs `cmd` as a stateful command in `session`; a sandbox error fails the case.
pub(super) async fn run_stateful(
    ctx: &CaseCtx,
    sandbox: &dyn Sandbox,
    session: &str,
    cmd: &str,
) -> Result<crate::protocol::ShellResult, CaseFailure> {
    let step = format!("exec_stateful {session}: {cmd}");
    let r = sb(
        &step,
        sandbox
            .exec_stateful(StatefulExec::new(ctx.session(session), cmd, T))
            .await,
    )?;
    ensure(&step, r.exit_code == 0, || {
        format!(
            "exit code differs\n  expected: 0\n    actual: {}\n  stderr: \"{}\"",
            r.exit_code,
            escape_bytes(&r.stderr)
        )
    })?;
    Ok(r)
}

/// Destroys a sandbox when dropped without an explicit `destroy` (panics, cancelled runs).
pub struct SandboxGuard {
    sandbox: Option<Arc<dyn Sandbox>>,
}

impl SandboxGuard {
    /// Guards `sandbox`.
    pub fn new(sandbox: Arc<dyn Sandbox>) -> Self {
        SandboxGuard {
            sandbox: Some(sandbox),
        }
    }

    /// The guarded sandbox.
    pub fn sandbox(&self) -> Arc<dyn Sandbox> {
        self.sandbox.clone().expect("present until destroyed")
    }

    /// Destroys the sandbox now and disarms the guard.
    pub async fn destroy(mut self) -> crate::protocol::Result<()> {
        match self.sandbox.take() {
            Some(sb) => sb.destroy().await,
            None => Ok(()),
        }
    }
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        if let Err(e) = sb.destroy().await {
                            warn!(sandbox = sb.id(), error = %e, "destroying a sandbox after an aborted case failed");
                        }
                    });
                }
                Err(_) => warn!(
                    sandbox = sb.id(),
                    "no runtime to destroy a sandbox; it is left behind"
                ),
            }
        }
    }
}
