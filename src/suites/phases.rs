//! The phase gates (suites/phases.toml): each gate names what it checks. `gate` evaluates them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_PHASES_TOML, Level, SuiteError, load_toml, parse_toml};

/// What a gate checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum GateCheck {
    /// A complete bench report exists for the backend.
    BenchReport {
        /// Backend name.
        backend: String,
    },
    /// Every row of the backend's tables satisfies `level`.
    Acceptance {
        /// Backend name.
        backend: String,
        /// Target or acceptable.
        level: Level,
    },
    /// The preflight checks passed.
    Preflight,
    /// Health endpoints within max acceptable latency.
    Health,
    /// The conformance suite found no divergence.
    ConformanceParity,
    /// No state loss in the bench.
    StateConsistency {
        /// Backend name.
        backend: String,
    },
    /// Event-log metrics meet the monitoring targets without alert.
    Monitoring,
    /// Projected monthly cost within budget.
    CostBudget,
    /// Figures come from real Google Cloud.
    RealGcp {
        /// Backend name.
        backend: String,
    },
}

/// One gate of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateSpec {
    /// Stable id.
    pub id: String,
    /// What it means.
    pub description: String,
    /// What it checks.
    #[serde(flatten)]
    pub check: GateCheck,
}

/// One phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Phase number.
    pub number: u32,
    /// Name.
    pub name: String,
    /// Gates.
    #[serde(rename = "gate")]
    pub gates: Vec<GateSpec>,
}

/// suites/phases.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseFile {
    /// Phases.
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
}

impl PhaseFile {
    /// The shipped phases.
    pub fn builtin() -> PhaseFile {
        parse_toml(DEFAULT_PHASES_TOML, "<builtin phases.toml>")
            .expect("shipped suites/phases.toml is valid")
    }

    /// Loads phases from a file.
    pub fn load(path: &Path) -> Result<PhaseFile, SuiteError> {
        load_toml(path)
    }

    /// Parses phases from TOML text.
    pub fn parse(text: &str, origin: &str) -> Result<PhaseFile, SuiteError> {
        parse_toml(text, origin)
    }

    /// The phase with this number.
    pub fn phase(&self, n: u32) -> Option<&Phase> {
        self.phases.iter().find(|p| p.number == n)
    }
}
