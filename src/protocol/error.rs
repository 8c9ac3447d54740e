//! The one error type of the Sandbox protocol, with the classes the benchmarks count apart.

use std::fmt;

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

/// A failed sandbox operation: what failed (`op`), on which sandbox, and why.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    /// The operation did not finish within its deadline.
    #[error("timeout: {op} on sandbox {sandbox}: {detail}")]
    Timeout {
        /// Sandbox id (or "-" before one exists).
        sandbox: String,
        /// The protocol operation.
        op: String,
        /// Why.
        detail: String,
    },
    /// A connection or transport failure.
    #[error("network error: {op} on sandbox {sandbox}: {detail}")]
    Network {
        /// Sandbox id.
        sandbox: String,
        /// The protocol operation.
        op: String,
        /// Why.
        detail: String,
    },
    /// Permission denied.
    #[error("permission denied: {op} on sandbox {sandbox}: {detail}")]
    Permission {
        /// Sandbox id.
        sandbox: String,
        /// The protocol operation.
        op: String,
        /// Why.
        detail: String,
    },
    /// Something does not exist.
    #[error("not found: {op} on sandbox {sandbox}: {detail}")]
    NotFound {
        /// Sandbox id.
        sandbox: String,
        /// The protocol operation.
        op: String,
        /// Why.
        detail: String,
    },
    /// The request is malformed.
    #[error("invalid input: {op} on sandbox {sandbox}: {detail}")]
    InvalidInput {
        /// Sandbox id.
        sandbox: String,
        /// The protocol operation.
        op: String,
        /// Why.
        detail: String,
    },
    /// The backend does not offer this capability.
    #[error("unsupported: {op} on sandbox {sandbox}: {detail}")]
    Unsupported {
        /// Sandbox id.
        sandbox: String,
        /// The protocol operation.
        op: String,
        /// Why.
        detail: String,
    },
    /// Anything else inside the backend.
    #[error("backend error: {op} on sandbox {sandbox}: {detail}")]
    Backend {
        /// Sandbox id.
        sandbox: String,
        /// The protocol operation.
        op: String,
        /// Why.
        detail: String,
    },
}

impl SandboxError {
    /// Builds an error of class `kind`.
    pub fn new(
        kind: ErrorKind,
        sandbox: impl Into<String>,
        op: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        let (sandbox, op, detail) = (sandbox.into(), op.into(), detail.into());
        match kind {
            ErrorKind::Timeout => SandboxError::Timeout {
                sandbox,
                op,
                detail,
            },
            ErrorKind::Network => SandboxError::Network {
                sandbox,
                op,
                detail,
            },
            ErrorKind::Permission => SandboxError::Permission {
                sandbox,
                op,
                detail,
            },
            ErrorKind::NotFound => SandboxError::NotFound {
                sandbox,
                op,
                detail,
            },
            ErrorKind::InvalidInput => SandboxError::InvalidInput {
                sandbox,
                op,
                detail,
            },
            ErrorKind::Unsupported => SandboxError::Unsupported {
                sandbox,
                op,
                detail,
            },
            ErrorKind::Backend => SandboxError::Backend {
                sandbox,
                op,
                detail,
            },
        }
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::Timeout { .. } => ErrorKind::Timeout,
            SandboxError::Network { .. } => ErrorKind::Network,
            SandboxError::Permission { .. } => ErrorKind::Permission,
            SandboxError::NotFound { .. } => ErrorKind::NotFound,
            SandboxError::InvalidInput { .. } => ErrorKind::InvalidInput,
            SandboxError::Unsupported { .. } => ErrorKind::Unsupported,
            SandboxError::Backend { .. } => ErrorKind::Backend,
        }
    }

    fn parts(&self) -> (&str, &str, &str) {
        match self {
            SandboxError::Timeout {
                sandbox,
                op,
                detail,
            }
            | SandboxError::Network {
                sandbox,
                op,
                detail,
            }
            | SandboxError::Permission {
                sandbox,
                op,
                detail,
            }
            | SandboxError::NotFound {
                sandbox,
                op,
                detail,
            }
            | SandboxError::InvalidInput {
                sandbox,
                op,
                detail,
            }
            | SandboxError::Unsupported {
                sandbox,
                op,
                detail,
            }
            | SandboxError::Backend {
                sandbox,
                op,
                detail,
            } => (sandbox, op, detail),
        }
    }

    /// The sandbox the error is about.
    pub fn sandbox(&self) -> &str {
        self.parts().0
    }

    /// The operation that failed.
    pub fn op(&self) -> &str {
        self.parts().1
    }

    /// Why it failed.
    pub fn detail(&self) -> &str {
        self.parts().2
    }

    /// The same error re-attributed to another operation (keeps class and detail).
    pub fn with_op(self, op: impl Into<String>) -> Self {
        let kind = self.kind();
        let (sandbox, _, detail) = self.parts();
        SandboxError::new(kind, sandbox.to_string(), op, detail.to_string())
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
}

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
}
