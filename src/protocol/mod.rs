//! The Sandbox protocol: one object-safe async trait every backend implements, its typed results
//! and its one error type.

pub mod error;
pub mod origin;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use error::{ErrorKind, Result, SandboxError};
pub use origin::BackendOrigin;
pub use types::*;

/// A live sandbox: one isolated environment with shell sessions, processes and files.
///
/// Paths are absolute, or relative to the cwd of the named session. Contents are bytes.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// The sandbox id (stable; `SandboxBackend::get` re-attaches with it).
    fn id(&self) -> &str;

    /// The name of the backend that runs this sandbox ("docker", "cloudrun", ...).
    fn backend_name(&self) -> &'static str;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Waits until the sandbox accepts commands.
    async fn ensure_ready(&self) -> Result<()>;

    /// Removes the sandbox and everything it holds; destroying twice is not an error.
    async fn destroy(&self) -> Result<()>;

    /// True when a browser is available in this sandbox.
    fn supports_browser(&self) -> bool {
        self.capabilities().browser
    }

    /// The CDP URL of the browser, or empty when there is none.
    fn cdp_url(&self) -> String {
        String::new()
    }

    /// The VNC URL, or empty when there is none.
    fn vnc_url(&self) -> String {
        String::new()
    }

    /// The browser endpoints, once the browser answers (with its version); `Unsupported` when
    /// the sandbox has no browser.
    async fn get_browser(&self) -> Result<BrowserInfo> {
        Err(SandboxError::unsupported(
            self.id(),
            "get_browser",
            format!("the {} backend offers no browser", self.backend_name()),
        ))
    }

    /// Runs `command` in the session's interactive shell in `exec_dir`; waits a short,
    /// configurable time and returns the result or `Running`.
    async fn exec(&self, session: &str, exec_dir: &str, command: &str) -> Result<ExecOutcome>;

    /// Runs a command whose cwd and environment persist within the session.
    async fn exec_stateful(&self, req: StatefulExec) -> Result<ShellResult>;

    /// The output so far of the session's interactive command.
    async fn view_shell(&self, session: &str) -> Result<ShellView>;

    /// Waits up to `timeout` for the session's interactive command; its exit code or `Timeout`.
    async fn wait_for_process(&self, session: &str, timeout: Duration) -> Result<i32>;

    /// Writes to the stdin of the session's running interactive command.
    async fn write_to_process(&self, session: &str, input: &[u8], press_enter: bool) -> Result<()>;

    /// Kills the session's interactive command.
    async fn kill_process(&self, session: &str) -> Result<()>;

    /// Background processes, of one session or of all.
    async fn list_background_processes(
        &self,
        session: Option<&str>,
    ) -> Result<Vec<BackgroundProcess>>;

    /// Kills background processes; returns the PIDs that were killed.
    async fn kill_background_process(&self, selector: ProcessSelector) -> Result<Vec<u32>>;

    /// The output so far of a background process.
    async fn get_background_logs(&self, pid: u32) -> Result<Vec<u8>>;

    /// Reads a line range of a file (0-based lines, exclusive end), explicit about truncation.
    async fn file_read(&self, session: &str, path: &str, opts: ReadOptions) -> Result<FileContent>;

    /// Writes a file, creating parent directories.
    async fn file_write(
        &self,
        session: &str,
        path: &str,
        content: &[u8],
        opts: WriteOptions,
    ) -> Result<()>;

    /// True when the path exists (file, directory or link).
    async fn file_exists(&self, session: &str, path: &str) -> Result<bool>;

    /// Deletes a file or a directory tree; `NotFound` when absent.
    async fn file_delete(&self, session: &str, path: &str) -> Result<()>;

    /// Lists a directory.
    async fn file_list(&self, session: &str, path: &str) -> Result<Vec<FileEntry>>;

    /// Paths below `dir` (recursive) matching a glob such as `**/*.rs`, sorted.
    async fn file_find(&self, session: &str, dir: &str, glob: &str) -> Result<Vec<String>>;

    /// Lines of a file matching a regex.
    async fn file_search(&self, session: &str, path: &str, regex: &str)
    -> Result<Vec<SearchMatch>>;

    /// Replaces every literal occurrence of `old` with `new`; returns the count.
    async fn file_replace(&self, session: &str, path: &str, old: &[u8], new: &[u8]) -> Result<u64>;

    /// Streams a file into the sandbox; returns the number of bytes written.
    async fn file_upload(&self, session: &str, path: &str, body: UploadBody) -> Result<u64>;

    /// Streams a file out of the sandbox.
    async fn file_download(&self, session: &str, path: &str) -> Result<ByteStream>;
}

/// A backend: creates sandboxes and re-attaches to live ones.
#[async_trait]
pub trait SandboxBackend: Send + Sync {
    /// The backend name ("docker", "cloudrun").
    fn name(&self) -> &'static str;

    /// What sandboxes of this backend support.
    fn capabilities(&self) -> Capabilities;

    /// Creates a new sandbox.
    async fn create(&self) -> Result<Arc<dyn Sandbox>>;

    /// Creates a sandbox that offers at least `wants` (a capability request: e.g. a browser,
    /// which a backend may give only to sandboxes that ask for it); `Unsupported` when the
    /// backend cannot offer them.
    async fn create_with(&self, wants: Capabilities) -> Result<Arc<dyn Sandbox>> {
        check_request(self.name(), &self.capabilities(), &wants)?;
        self.create().await
    }

    /// Re-attaches to a live sandbox by id.
    async fn get(&self, id: &str) -> Result<Arc<dyn Sandbox>>;

    /// Where this backend's figures come from; every report labels them with it.
    fn origin(&self) -> BackendOrigin {
        BackendOrigin::Undeclared
    }
}

/// `Unsupported` (op `create`) when a capability request asks for more than `offered`.
pub fn check_request(backend: &str, offered: &Capabilities, wants: &Capabilities) -> Result<()> {
    let missing = offered.missing(wants);
    if missing.is_empty() {
        return Ok(());
    }
    Err(SandboxError::unsupported(
        "-",
        "create",
        format!(
            "the {backend} backend does not offer {}",
            missing.join(", ")
        ),
    ))
}
