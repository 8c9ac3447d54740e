//! The primitive layer each backend provides (run an argv, stream a file in or out); the
//! protocol logic shared by every backend (`crate::generic`) is written once on top of it.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::protocol::{ByteStream, Result, UploadBody};

use sandbox_executor::exec::Response;
pub use sandbox_executor::output::{CappedBuf, MAX_OUTPUT, truncation_marker};

use crate::protocol::SandboxError;

/// One process to run inside the sandbox.
#[derive(Debug, Clone)]
pub struct RawExec {
    /// Program and arguments (no shell parsing happens on the harness side).
    pub argv: Vec<String>,
    /// Bytes for the process's stdin (closed after them); `None` gives an empty stdin.
    pub stdin: Option<Bytes>,
    /// A client-side safety deadline; the transport fails with `Timeout` after it.
    pub deadline: Duration,
}

impl RawExec {
    /// A process with no stdin and the given deadline.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>, deadline: Duration) -> Self {
        RawExec {
            argv: argv.into_iter().map(Into::into).collect(),
            stdin: None,
            deadline,
        }
    }

    /// The same process with these bytes on stdin.
    pub fn with_stdin(mut self, stdin: impl Into<Bytes>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }
}

/// What a process returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOutput {
    /// Exit status (128 + n when killed by signal n).
    pub exit_code: i32,
    /// Stdout, at most [`MAX_OUTPUT`] bytes plus a truncation marker.
    pub stdout: Vec<u8>,
    /// Stderr, at most [`MAX_OUTPUT`] bytes plus a truncation marker.
    pub stderr: Vec<u8>,
    /// True when stdout or stderr was cut.
    pub truncated: bool,
}

/// The primitives a backend offers to the shared protocol logic.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The sandbox these primitives act on.
    fn sandbox_id(&self) -> &str;

    /// Runs a process to completion (or until `deadline`); `op` names the protocol operation
    /// for error messages.
    async fn run(&self, op: &str, req: RawExec) -> Result<RawOutput>;

    /// Writes the stream to `path` (absolute; the parent directory exists) atomically: the
    /// file appears whole or not at all. Returns the bytes written.
    async fn upload(&self, op: &str, path: &str, body: UploadBody) -> Result<u64>;

    /// Streams the regular file at `path` (absolute).
    async fn download(&self, op: &str, path: &str) -> Result<ByteStream>;
}

/// The output an in-sandbox executor (Cloud Run worker or Docker agent) answered with.
pub fn output_from_response(sandbox: &str, op: &str, resp: Response) -> Result<RawOutput> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    if let Some(err) = resp.error {
        return Err(SandboxError::backend(sandbox, op, err));
    }
    if resp.timed_out {
        tracing::debug!(
            sandbox,
            op,
            "the executor killed the request at its deadline"
        );
    }
    let decode = |s: &str| {
        B64.decode(s)
            .map_err(|e| SandboxError::backend(sandbox, op, format!("bad output: {e}")))
    };
    Ok(RawOutput {
        exit_code: resp.exit_code,
        stdout: decode(&resp.stdout_b64)?,
        stderr: decode(&resp.stderr_b64)?,
        truncated: resp.truncated,
    })
}
