//! The one error type of the Sandbox protocol, with the classes the benchmarks count apart.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The class of a sandbox error; benchmarks and reports count errors by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The operation did not finish within its deadline.
    Timeout,
    /// A connection or transport failure between the harness and the backend.
    Network,
    /// The caller is not allowed to do this.
    Permission,
    /// The sandbox, session, process or file does not exist.
    NotFound,
    /// The request itself is malformed (bad path, regex, glob, env name, range...).
    InvalidInput,
    /// The backend does not offer this capability.
    Unsupported,
    /// Anything else that went wrong inside the backend.
    Backend,
}

impl ErrorKind {
    /// Every class, in a stable order (for reports).
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Timeout,
        ErrorKind::Network,
        ErrorKind::Permission,
        ErrorKind::NotFound,
        ErrorKind::InvalidInput,
        ErrorKind::Unsupported,
        ErrorKind::Backend,
    ];

    /// The snake_case name used in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
            ErrorKind::Permission => "permission",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Backend => "backend",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cause behind a [`SandboxError`], shared so the error stays cheap to clone.
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A failed sandbox operation: its class, what failed (`op`), on which sandbox, why, and
/// optionally the lower-level error that caused it (reachable through
/// [`std::error::Error::source`]).
#[derive(Debug, Clone)]
pub struct SandboxError {
    kind: ErrorKind,
    sandbox: String,
    op: String,
    detail: String,
    source: Option<ErrorSource>,
}

impl SandboxError {
    /// Builds an error of class `kind`.
    pub fn new(
        kind: ErrorKind,
        sandbox: impl Into<String>,
        op: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        SandboxError {
            kind,
            sandbox: sandbox.into(),
            op: op.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// The same error with `source` as its cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The sandbox the error is about.
    pub fn sandbox(&self) -> &str {
        &self.sandbox
    }

    /// The operation that failed.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// Why it failed.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The same error re-attributed to another operation (keeps class, detail and source).
    pub fn with_op(mut self, op: impl Into<String>) -> Self {
        self.op = op.into();
        self
    }

    /// Shorthand for an `InvalidInput` error.
    pub fn invalid(
        sandbox: impl Into<String>,
        op: impl Into<String>,
        d: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::InvalidInput, sandbox, op, d)
    }

    /// Shorthand for a `NotFound` error.
    pub fn not_found(
        sandbox: impl Into<String>,
        op: impl Into<String>,
        d: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::NotFound, sandbox, op, d)
    }

    /// Shorthand for an `Unsupported` error.
    pub fn unsupported(
        sandbox: impl Into<String>,
        op: impl Into<String>,
        d: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::Unsupported, sandbox, op, d)
    }

    /// Shorthand for a `Backend` error.
    pub fn backend(
        sandbox: impl Into<String>,
        op: impl Into<String>,
        d: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::Backend, sandbox, op, d)
    }

    /// Shorthand for a `Timeout` error.
    pub fn timeout(
        sandbox: impl Into<String>,
        op: impl Into<String>,
        d: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::Timeout, sandbox, op, d)
    }

    /// The words that open the message of each class.
    fn prefix(&self) -> &'static str {
        match self.kind {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network error",
            ErrorKind::Permission => "permission denied",
            ErrorKind::NotFound => "not found",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Backend => "backend error",
        }
    }
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} on sandbox {}: {}",
            self.prefix(),
            self.op,
            self.sandbox,
            self.detail
        )
    }
}

impl std::error::Error for SandboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Two errors are equal when class, sandbox, operation and detail agree; the cause is not
/// compared (it is kept for the chain, and its text is already in the detail where it matters).
impl PartialEq for SandboxError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.sandbox == other.sandbox
            && self.op == other.op
            && self.detail == other.detail
    }
}

impl Eq for SandboxError {}

/// Result alias of the Sandbox protocol.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_displays_context() {
        for kind in ErrorKind::ALL {
            let e = SandboxError::new(kind, "sb-1", "file_read", "no such file /x");
            assert_eq!(e.kind(), kind);
            let text = e.to_string();
            assert!(text.contains("sb-1") && text.contains("file_read") && text.contains("/x"));
            assert_eq!(e.clone().with_op("other").op(), "other");
        }
    }

    #[test]
    fn display_keeps_the_class_words_of_each_kind() {
        let cases = [
            (ErrorKind::Timeout, "timeout: "),
            (ErrorKind::Network, "network error: "),
            (ErrorKind::Permission, "permission denied: "),
            (ErrorKind::NotFound, "not found: "),
            (ErrorKind::InvalidInput, "invalid input: "),
            (ErrorKind::Unsupported, "unsupported: "),
            (ErrorKind::Backend, "backend error: "),
        ];
        for (kind, prefix) in cases {
            let e = SandboxError::new(kind, "sb", "exec", "why");
            assert_eq!(e.to_string(), format!("{prefix}exec on sandbox sb: why"));
        }
    }

    #[test]
    fn source_chains_to_the_cause_and_survives_clone_and_with_op() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe closed");
        let e = SandboxError::new(ErrorKind::Network, "sb", "exec", "lost").with_source(io);
        let moved = e.clone().with_op("file_read");
        for err in [&e, &moved] {
            let cause = err.source().expect("a source");
            assert_eq!(cause.to_string(), "pipe closed");
        }
        assert!(SandboxError::backend("sb", "exec", "x").source().is_none());
        assert_eq!(
            e,
            SandboxError::new(ErrorKind::Network, "sb", "exec", "lost")
        );
    }
}
