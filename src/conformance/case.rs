//! Conformance cases: id, area, level, required capabilities and a body (a scenario file or
//! Rust code), and what a case's outcome on a backend means.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::scenario::Scenario;
use super::terms::{Area, Capability, CaseCtx, CaseLevel, CaseResult, Divergence};

/// A case written in Rust.
pub type RustCaseFn = fn(CaseCtx) -> BoxFuture<'static, CaseResult>;

/// The body of a case.
#[derive(Clone)]
pub enum CaseBody {
    /// Steps from a scenario file.
    Scenario(Arc<Scenario>),
    /// Rust code.
    Rust(RustCaseFn),
}

/// One conformance case.
#[derive(Clone)]
pub struct Case {
    /// `area.name`.
    pub id: String,
    /// The area (the id prefix).
    pub area: Area,
    /// Core or Extended.
    pub level: CaseLevel,
    /// Capabilities the case needs; without them it must fail with `Unsupported`.
    pub requires: Vec<Capability>,
    /// Slow or big (e.g. 500 MB); `RunOptions::skip_heavy` leaves it out.
    pub heavy: bool,
    /// Where the case comes from (`builtin`, a file path).
    pub source: String,
    /// Backends on which the case is declared to differ from the baseline by a documented
    /// platform rule: it must fail there, and is reported as a documented difference.
    pub divergences: Vec<Divergence>,
    /// What it does.
    pub body: CaseBody,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("level", &self.level)
            .field("requires", &self.requires)
            .field("source", &self.source)
            .finish()
    }
}

/// The outcome of one case on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step behaved as expected.
    Passed,
    /// A step did not.
    Failed,
    /// The backend lacks a required capability and said so with `Unsupported`.
    Unsupported,
    /// Not run (backend unavailable).
    Skipped,
    /// The case exceeded its time limit.
    TimedOut,
    /// The case failed where it declares a documented platform difference (the rule and its
    /// source are in the record's `divergence`): an expected difference, not a failure.
    Divergent,
}

impl Outcome {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "pass",
            Outcome::Failed => "fail",
            Outcome::Unsupported => "unsupported",
            Outcome::Skipped => "skipped",
            Outcome::TimedOut => "timed out",
            Outcome::Divergent => "documented difference",
        }
    }
}

/// A capability the migration plan says a backend will not have: cases needing it that come
/// out `unsupported` there are the plan's documented limitations, reported as such and never
/// as parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimitation {
    /// The backend name.
    pub backend: &'static str,
    /// The capability it lacks.
    pub capability: Capability,
    /// What the plan says.
    pub plan: &'static str,
}

/// The migration plan's "Known limitations" of Cloud Run Jobs sandboxes.
pub const PLAN_LIMITATIONS: &[PlanLimitation] = &[
    PlanLimitation {
        backend: "cloudrun",
        capability: Capability::Browser,
        plan: "migration plan, Known limitations: no display and no browser/CDP access in Cloud Run Jobs (get_browser raises NotImplementedError)",
    },
    PlanLimitation {
        backend: "cloudrun",
        capability: Capability::Vnc,
        plan: "migration plan, Known limitations: no VNC in Cloud Run Jobs",
    },
];

/// The plan limitation an outcome on `backend` of a case requiring `requires` is, if any: only
/// an `unsupported` outcome of a case that needs a capability the plan says the backend lacks.
pub fn documented_limitation(
    backend: &str,
    requires: &[Capability],
    outcome: Outcome,
) -> Option<&'static PlanLimitation> {
    if outcome != Outcome::Unsupported {
        return None;
    }
    PLAN_LIMITATIONS
        .iter()
        .find(|l| l.backend == backend && requires.contains(&l.capability))
}
