//! The engine's errors in the protocol's classes (one mapping for the backend, its agent
//! connection and its transport).

use crate::protocol::{ErrorKind, SandboxError};

/// Maps an engine error into the protocol's error classes.
pub fn map_bollard(sandbox: &str, op: &str, e: bollard::errors::Error) -> SandboxError {
    use bollard::errors::Error as E;
    let kind = match &e {
        E::DockerResponseServerError { status_code, .. } => match *status_code {
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::Permission,
            400 => ErrorKind::InvalidInput,
            _ => ErrorKind::Backend,
        },
        E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. }
        | E::RequestTimeoutError
        | E::SocketNotFoundError(_)
        | E::HttpClientError { .. } => ErrorKind::Network,
        _ => ErrorKind::Backend,
    };
    let detail = e.to_string();
    let kind = if kind == ErrorKind::Network && detail.contains("ermission denied") {
        ErrorKind::Permission
    } else {
        kind
    };
    SandboxError::new(kind, sandbox, op, detail).with_source(e)
}
