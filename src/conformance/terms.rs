//! What a case body (a scenario file or Rust code) is written against: the protocol areas,
//! levels and capabilities a case declares, its documented divergences, the context it runs
//! in, and how it fails. Scenario files and cases both build on it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::protocol::{Capabilities, ErrorKind, Sandbox, SandboxBackend, SandboxError};

/// The protocol area a case exercises (the first part of its id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// Create, re-attach, readiness, destroy, browser members.
    Lifecycle,
    /// Interactive `exec` / view / wait / stdin / kill.
    Exec,
    /// `exec_stateful`: cwd and env persistence, exit codes, streams.
    Stateful,
    /// Interactive processes driven through stdin.
    Interactive,
    /// Background processes.
    Background,
    /// File operations.
    Files,
    /// Streamed upload and download.
    Transfer,
    /// The sandbox's browser: DevTools endpoint, pages, VNC (in a sandbox that asked for one).
    Browser,
}

impl Area {
    /// Every area, in run order.
    pub const ALL: [Area; 8] = [
        Area::Lifecycle,
        Area::Exec,
        Area::Stateful,
        Area::Interactive,
        Area::Background,
        Area::Files,
        Area::Transfer,
        Area::Browser,
    ];

    /// The id prefix of the area.
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Lifecycle => "lifecycle",
            Area::Exec => "exec",
            Area::Stateful => "stateful",
            Area::Interactive => "interactive",
            Area::Background => "background",
            Area::Files => "files",
            Area::Transfer => "transfer",
            Area::Browser => "browser",
        }
    }

    /// The area named by an id prefix.
    pub fn parse(s: &str) -> Option<Area> {
        Area::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a case matters for parity (core or extended); not the target/acceptable level
/// a gate demands (`acceptance::Level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseLevel {
    /// Must pass on every backend for parity.
    Core,
    /// Reported, but not part of the parity verdict.
    Extended,
}

impl CaseLevel {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseLevel::Core => "core",
            CaseLevel::Extended => "extended",
        }
    }
}

/// One capability of [`Capabilities`] a case may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `Capabilities::browser`.
    Browser,
    /// `Capabilities::vnc`.
    Vnc,
    /// `Capabilities::stdin`.
    Stdin,
    /// `Capabilities::background`.
    Background,
    /// `Capabilities::reattach`.
    Reattach,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 5] = [
        Capability::Browser,
        Capability::Vnc,
        Capability::Stdin,
        Capability::Background,
        Capability::Reattach,
    ];

    /// The lower-case name used in scenario headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Browser => "browser",
            Capability::Vnc => "vnc",
            Capability::Stdin => "stdin",
            Capability::Background => "background",
            Capability::Reattach => "reattach",
        }
    }

    /// The capability with this name.
    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The capability request asking for every capability of `list`.
    pub fn request(list: &[Capability]) -> Capabilities {
        let mut c = Capabilities::default();
        for cap in list {
            match cap {
                Capability::Browser => c.browser = true,
                Capability::Vnc => c.vnc = true,
                Capability::Stdin => c.stdin = true,
                Capability::Background => c.background = true,
                Capability::Reattach => c.reattach = true,
            }
        }
        c
    }

    /// True when `caps` offers this capability.
    pub fn offered_by(self, caps: &Capabilities) -> bool {
        match self {
            Capability::Browser => caps.browser,
            Capability::Vnc => caps.vnc,
            Capability::Stdin => caps.stdin,
            Capability::Background => caps.background,
            Capability::Reattach => caps.reattach,
        }
    }
}

/// Why a case failed: the step (file:line and text, or a Rust step name), a message with
/// expected and actual values, and the sandbox error when one caused it.
#[derive(Debug, Clone)]
pub struct CaseFailure {
    /// Where: `file.scn:12: run s1` or a short Rust step description.
    pub step: Option<String>,
    /// What went wrong, with expected and actual values.
    pub message: String,
    /// The sandbox error that caused the failure, if any (its class decides "unsupported").
    pub error: Option<Box<SandboxError>>,
}

impl CaseFailure {
    /// A step expected an error of class `want` and got `e` of another class; an
    /// `Unsupported` error rides along so the runner can tell a documented limitation.
    pub fn class_differs(step: impl Into<String>, want: ErrorKind, e: SandboxError) -> Self {
        let mut f = CaseFailure::at(
            step,
            format!(
                "error class differs\n  expected: {want}\n    actual: {} ({e})",
                e.kind()
            ),
        );
        if e.kind() == ErrorKind::Unsupported {
            f.error = Some(Box::new(e));
        }
        f
    }

    /// A failure with a message at a step.
    pub fn at(step: impl Into<String>, message: impl Into<String>) -> Self {
        CaseFailure {
            step: Some(step.into()),
            message: message.into(),
            error: None,
        }
    }

    /// A failure caused by a sandbox error at a step.
    pub fn sandbox(step: impl Into<String>, err: SandboxError) -> Self {
        CaseFailure {
            step: Some(step.into()),
            message: format!("unexpected error [{}]: {err}", err.kind()),
            error: Some(Box::new(err)),
        }
    }

    /// The error class of the underlying sandbox error.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error.as_ref().map(|e| e.kind())
    }
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "{step}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The result of a case body.
pub type CaseResult = Result<(), CaseFailure>;

/// What a case body gets: its sandbox, the backend (for lifecycle cases), a private directory
/// and a private session-name prefix.
#[derive(Clone)]
pub struct CaseCtx {
    /// The sandbox shared by the cases of this area (fresh per area and backend).
    pub sandbox: Arc<dyn Sandbox>,
    /// The backend, for cases that create or re-attach sandboxes themselves.
    pub backend: Arc<dyn SandboxBackend>,
    /// A directory private to this case (`${CASE}` in scenarios); not created in advance.
    pub case_dir: String,
    /// Prefix that makes session names private to this case.
    pub session_prefix: String,
    /// The capabilities the backend declares.
    pub caps: Capabilities,
    /// The capability request the area's sandbox was created with (what its cases require,
    /// as far as the backend offers it).
    pub wants: Capabilities,
}

impl CaseCtx {
    /// The backend session name for a case-local session name.
    pub fn session(&self, name: &str) -> String {
        format!("{}{name}", self.session_prefix)
    }
}

/// A documented platform difference a case declares (`expected-divergence` in a scenario).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Divergence {
    /// The backend that differs ("cloudrun").
    pub backend: String,
    /// The platform rule, in a sentence.
    pub rule: String,
    /// Where the rule is documented (a URL and section).
    pub source: String,
}

impl Divergence {
    /// Parses `BACKEND | RULE | SOURCE`.
    pub fn parse(v: &str) -> Result<Divergence, String> {
        let parts: Vec<&str> = v.split('|').map(str::trim).collect();
        match parts.as_slice() {
            [b, rule, source]
                if !b.is_empty() && !rule.is_empty() && !source.is_empty() && !b.contains(' ') =>
            {
                Ok(Divergence {
                    backend: b.to_string(),
                    rule: rule.to_string(),
                    source: source.to_string(),
                })
            }
            _ => Err(format!(
                "expected-divergence takes `BACKEND | RULE | SOURCE`, got {v:?}"
            )),
        }
    }
}

/// Checks a case id: `area.name` with a known area and `[a-z0-9_-]` in the name.
pub fn validate_id(id: &str) -> Result<Area, String> {
    let (area, name) = id
        .split_once('.')
        .ok_or_else(|| format!("case id {id:?} is not of the form area.name"))?;
    let area = Area::parse(area).ok_or_else(|| {
        format!(
            "case id {id:?}: unknown area {area:?} (one of {})",
            Area::ALL.map(Area::as_str).join(", ")
        )
    })?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "case id {id:?}: the name may hold only a-z, 0-9, '_' and '-'"
        ));
    }
    Ok(area)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert_eq!(validate_id("files.read_range"), Ok(Area::Files));
        assert!(validate_id("files").is_err());
        assert!(validate_id("disk.x").is_err());
        assert!(validate_id("files.Bad").is_err());
        assert!(validate_id("files.a b").is_err());
    }

    #[test]
    fn capabilities_gate() {
        let caps = Capabilities {
            stdin: true,
            ..Default::default()
        };
        assert!(Capability::Stdin.offered_by(&caps));
        assert!(!Capability::Browser.offered_by(&caps));
        for c in Capability::ALL {
            assert_eq!(Capability::parse(c.as_str()), Some(c));
            assert!(c.offered_by(&Capability::request(&[c])));
            assert!(!c.offered_by(&Capability::request(&[])));
        }
    }
}
