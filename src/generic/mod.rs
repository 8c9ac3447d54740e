//! `GenericSandbox<T>`: the whole Sandbox protocol written once over a [`Transport`].
//!
//! Every operation is a constant script (see [`scripts`]) run through `Transport::run`, with
//! data as argv entries or stdin bytes, or a file stream through `Transport::upload` /
//! `Transport::download`.
//!
//! Layout of the bookkeeping directory `B` inside the sandbox (configurable, so the Cloud Run
//! backend can put it on its state volume):
//!
//! ```text
//! B/sessions/<session>.state   stateful shell: marker line, then the wrapper's state dump
//! B/bg/<pid>/{cmd,session,started,log,exit}    background jobs
//! B/sh/<session>/{cmd,pid,in,log,exit}        interactive command of a session (`in` a FIFO)
//! ```

mod replies;
pub mod scripts;
pub mod streams;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex as AsyncMutex, OnceCell};

use crate::paths;
use crate::protocol::{
    BackgroundProcess, BrowserInfo, ByteStream, Capabilities, ErrorKind, ExecOutcome, FileContent,
    FileEntry, ProcessSelector, ReadOptions, Result, Sandbox, SandboxError, SearchMatch,
    ShellResult, ShellView, StatefulExec, UploadBody, WriteOptions,
};
use crate::shell::{self, ShellState};
use crate::transport::{MAX_OUTPUT, RawExec, RawOutput, Transport};

use replies::{
    WaitReply, epoch, file_entries, found_paths, killed_pids, lossy_tail, parse_list, shell_view,
    stateful_stdout, wait_reply,
};
use scripts::*;

/// The working directory of a new session.
pub const DEFAULT_CWD: &str = "/workspace";

/// Hard cap of `file_read` when the caller gives no `max_length` (sets `truncated`).
pub const READ_HARD_CAP: usize = 16 * 1024 * 1024;

/// Most matches `file_search` returns; more is an `InvalidInput` error asking to narrow it.
pub const MAX_SEARCH_MATCHES: usize = 10_000;

/// Longest line `file_search` accepts.
pub const MAX_SEARCH_LINE: usize = 16 * 1024 * 1024;

/// Longest session name.
pub const MAX_SESSION_NAME: usize = 128;

/// Bytes kept from the end of a stateful command's raw stdout as its state dump (the whole
/// environment plus cwd always fits: argv+env of a process are limited to a few MiB).
const DUMP_TAIL: usize = 4 * 1024 * 1024;

/// Polling step of script-side waits.
const POLL: Duration = Duration::from_millis(50);

/// Deadline of short bookkeeping scripts.
const SHORT_DEADLINE: Duration = Duration::from_secs(60);

/// A directory of the sandbox that is a Cloud Storage volume: a path below it is an object
/// name, so Cloud Storage's naming rules apply to it
/// (<https://cloud.google.com/storage/docs/objects#naming>: at most 1024 bytes of UTF-8, no
/// carriage return or line feed). The protocol refuses such paths as `InvalidInput` up front
/// instead of letting the volume fail the call halfway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketDir {
    /// Where the volume is mounted (e.g. `/workspace`).
    pub mount: String,
    /// Length in bytes of the object-name prefix the mount stands for (e.g.
    /// `sessions/<id>/workspace/`).
    pub prefix_len: usize,
}

/// Longest Cloud Storage object name, bytes.
pub const MAX_OBJECT_NAME: usize = 1024;

impl BucketDir {
    /// Checks that normalised `path` (inside the mount) makes a valid object name.
    pub fn check(&self, path: &str) -> std::result::Result<(), String> {
        let rel = path
            .strip_prefix(self.mount.trim_end_matches('/'))
            .unwrap_or(path)
            .trim_start_matches('/');
        if rel.contains(['\r', '\n']) {
            return Err(format!(
                "{path:?} cannot be stored in {}: Cloud Storage object names may not contain a carriage return or a line feed",
                self.mount
            ));
        }
        if self.prefix_len + rel.len() > MAX_OBJECT_NAME {
            return Err(format!(
                "{path:?} is too long for {}: its Cloud Storage object name would be {} bytes, at most {MAX_OBJECT_NAME} are allowed",
                self.mount,
                self.prefix_len + rel.len()
            ));
        }
        Ok(())
    }
}

/// Settings of a generic sandbox.
#[derive(Debug, Clone)]
pub struct GenericConfig {
    /// How long `exec` waits for the interactive command before returning `Running`.
    pub exec_wait: Duration,
    /// Timeout of a stateful command whose request gives a zero timeout.
    pub default_timeout: Duration,
    /// Extra time the transport waits beyond a command's own timeout.
    pub transport_slack: Duration,
    /// Where the harness keeps its bookkeeping inside the sandbox: a POSIX file system local to
    /// the process that runs commands (FIFOs, pids, spooled output, live background jobs).
    pub bookkeeping_dir: String,
    /// Where what must outlive that process is kept (session state, finished background jobs'
    /// logs): on Cloud Run the state bucket volume, which has Cloud Storage FUSE's rules (no
    /// FIFOs, no hard links, uploads on close). `None`: the bookkeeping dir.
    pub durable_dir: Option<String>,
    /// Directories that are Cloud Storage volumes (their paths are object names).
    pub bucket_dirs: Vec<BucketDir>,
    /// What this backend supports.
    pub capabilities: Capabilities,
    /// The backend name reported by `Sandbox::backend_name`.
    pub backend_name: &'static str,
}

impl Default for GenericConfig {
    fn default() -> Self {
        GenericConfig {
            exec_wait: Duration::from_secs(1),
            default_timeout: Duration::from_secs(120),
            transport_slack: Duration::from_secs(5),
            bookkeeping_dir: "/tmp/.sandbox-harness".into(),
            durable_dir: None,
            bucket_dirs: Vec::new(),
            capabilities: Capabilities {
                browser: false,
                vnc: false,
                stdin: true,
                background: true,
                reattach: true,
            },
            backend_name: "generic",
        }
    }
}

/// The parts of a sandbox's life the transport does not cover: readiness, removal, browser.
#[async_trait]
pub trait Lifecycle: Send + Sync + 'static {
    /// Waits until the sandbox accepts commands.
    async fn ensure_ready(&self) -> Result<()>;
    /// Removes the sandbox; removing a missing sandbox is not an error.
    async fn destroy(&self) -> Result<()>;
    /// The browser's addresses, known without asking it, when the sandbox has a browser.
    fn browser(&self) -> Option<BrowserInfo> {
        None
    }
    /// Waits until the browser answers and returns its endpoints with its version; `None`
    /// when the sandbox has no browser.
    async fn browser_ready(&self) -> Option<Result<BrowserInfo>> {
        None
    }
}

type SessionSlot = Arc<AsyncMutex<Option<ShellState>>>;

/// The Sandbox protocol over a transport.
pub struct GenericSandbox<T: Transport> {
    transport: Arc<T>,
    lifecycle: Arc<dyn Lifecycle>,
    cfg: GenericConfig,
    sessions: Mutex<HashMap<String, SessionSlot>>,
    loaded: OnceCell<()>,
}

/// Checks a session name: non-empty, at most 128 bytes of `[A-Za-z0-9_.-]`, not `.`/`..`.
pub fn validate_session(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the session name is empty".into());
    }
    if name.len() > MAX_SESSION_NAME {
        return Err(format!(
            "the session name is longer than {MAX_SESSION_NAME} bytes"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("the session name {name:?} is reserved"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        return Err(format!(
            "the session name {name:?} may only hold letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

fn polls(d: Duration) -> u64 {
    d.as_millis().div_ceil(POLL.as_millis()) as u64
}

impl<T: Transport> GenericSandbox<T> {
    /// A sandbox over `transport`. `fresh` says it was just created (no persisted sessions to
    /// load); re-attached sandboxes load their sessions on first use.
    pub fn new(
        transport: T,
        lifecycle: Arc<dyn Lifecycle>,
        cfg: GenericConfig,
        fresh: bool,
    ) -> Self {
        let loaded = if fresh {
            OnceCell::new_with(Some(()))
        } else {
            OnceCell::new()
        };
        GenericSandbox {
            transport: Arc::new(transport),
            lifecycle,
            cfg,
            sessions: Mutex::new(HashMap::new()),
            loaded,
        }
    }

    /// The transport underneath.
    pub fn transport(&self) -> &Arc<T> {
        &self.transport
    }

    /// The configuration.
    pub fn config(&self) -> &GenericConfig {
        &self.cfg
    }

    fn sid(&self) -> &str {
        self.transport.sandbox_id()
    }

    fn err(&self, kind: ErrorKind, op: &str, detail: impl Into<String>) -> SandboxError {
        SandboxError::new(kind, self.sid(), op, detail)
    }

    fn invalid(&self, op: &str, detail: impl Into<String>) -> SandboxError {
        self.err(ErrorKind::InvalidInput, op, detail)
    }

    async fn run(
        &self,
        op: &str,
        script: &str,
        args: &[&str],
        stdin: Option<Bytes>,
        deadline: Duration,
    ) -> Result<RawOutput> {
        let mut argv: Vec<String> = Vec::with_capacity(args.len() + 4);
        argv.extend(["sh", "-c", script, "sh"].map(String::from));
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut req = RawExec::new(argv, deadline);
        req.stdin = stdin;
        self.transport.run(op, req).await
    }

    /// Maps a script's exit code (one of [`scripts`]'s codes, else stderr) to an error.
    fn classify(&self, op: &str, what: &str, out: &RawOutput) -> SandboxError {
        let stderr = lossy_tail(&out.stderr);
        let (kind, detail) = match out.exit_code {
            EC_NOT_FOUND => (ErrorKind::NotFound, format!("{what} does not exist")),
            EC_IS_DIR => (ErrorKind::InvalidInput, format!("{what} is a directory")),
            EC_NOT_DIR => (
                ErrorKind::InvalidInput,
                format!("{what} is not a directory"),
            ),
            EC_PERMISSION => (ErrorKind::Permission, format!("{what}: permission denied")),
            EC_BUSY => (
                ErrorKind::InvalidInput,
                format!("{what}: a command is still running"),
            ),
            EC_NOT_RUNNING => (
                ErrorKind::InvalidInput,
                format!("{what}: nothing is running"),
            ),
            code => {
                let kind = if stderr.contains("Permission denied")
                    || stderr.contains("Read-only file system")
                    || stderr.contains("Operation not permitted")
                {
                    ErrorKind::Permission
                } else if stderr.contains("Not a directory")
                    || stderr.contains("Is a directory")
                    || stderr.contains("File exists")
                {
                    ErrorKind::InvalidInput
                } else if stderr.contains("No such file") {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Backend
                };
                (kind, format!("{what}: exit status {code}: {stderr}"))
            }
        };
        self.err(kind, op, detail)
    }

    async fn run_ok(
        &self,
        op: &str,
        what: &str,
        script: &str,
        args: &[&str],
        stdin: Option<Bytes>,
    ) -> Result<RawOutput> {
        let out = self.run(op, script, args, stdin, SHORT_DEADLINE).await?;
        if out.exit_code != 0 {
            return Err(self.classify(op, what, &out));
        }
        Ok(out)
    }

    fn durable_dir(&self) -> &str {
        self.cfg
            .durable_dir
            .as_deref()
            .unwrap_or(&self.cfg.bookkeeping_dir)
    }

    /// Where each command writes its session's state: local, so a command never waits on a
    /// bucket write (and a session's one state object is not rewritten per command, beyond
    /// Cloud Storage's one write a second); the Cloud Run worker mirrors it to the durable dir.
    fn sessions_dir(&self) -> String {
        format!("{}/sessions", self.cfg.bookkeeping_dir)
    }

    /// The mirrored copy of [`Self::sessions_dir`] that outlives the worker.
    fn durable_sessions_dir(&self) -> String {
        format!("{}/sessions", self.durable_dir())
    }

    fn spool_dir(&self) -> String {
        format!("{}/spool", self.cfg.bookkeeping_dir)
    }

    fn bg_dir(&self) -> String {
        format!("{}/bg", self.cfg.bookkeeping_dir)
    }

    fn durable_bg_dir(&self) -> String {
        format!("{}/bg", self.durable_dir())
    }

    fn sh_dir(&self, session: &str) -> String {
        format!("{}/sh/{session}", self.cfg.bookkeeping_dir)
    }

    /// Loads the sessions persisted in the sandbox (once, for re-attached sandboxes).
    async fn ensure_loaded(&self) -> Result<()> {
        self.loaded
            .get_or_try_init(|| async {
                let (dir, durable) = (self.sessions_dir(), self.durable_sessions_dir());
                let out = self
                    .run(
                        "load_sessions",
                        LOAD_SESSIONS,
                        &[&dir, &durable],
                        None,
                        SHORT_DEADLINE,
                    )
                    .await?;
                let mut rest = out.stdout.as_slice();
                let mut loaded = Vec::new();
                while !rest.is_empty() {
                    let Some(nul) = rest.iter().position(|&b| b == 0) else {
                        break;
                    };
                    let name = String::from_utf8_lossy(&rest[..nul]).into_owned();
                    rest = &rest[nul + 1..];
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        break;
                    };
                    let size: usize = String::from_utf8_lossy(&rest[..nl])
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    rest = &rest[nl + 1..];
                    let body = &rest[..size.min(rest.len())];
                    rest = &rest[size.min(rest.len())..];
                    let Some(mnl) = body.iter().position(|&b| b == b'\n') else {
                        continue;
                    };
                    let marker = String::from_utf8_lossy(&body[..mnl]).into_owned();
                    match shell::unwrap(&body[mnl + 1..], &marker) {
                        Ok(u) => loaded.push((name, u.state)),
                        Err(e) => tracing::warn!(session = %name, "ignoring persisted state: {e}"),
                    }
                }
                let mut map = self.sessions.lock().expect("sessions lock");
                for (name, state) in loaded {
                    map.entry(name)
                        .or_insert_with(|| Arc::new(AsyncMutex::new(Some(state))));
                }
                Ok::<(), SandboxError>(())
            })
            .await
            .map(|_| ())
    }

    async fn slot(&self, op: &str, session: &str) -> Result<SessionSlot> {
        validate_session(session).map_err(|e| self.invalid(op, e))?;
        self.ensure_loaded().await.map_err(|e| e.with_op(op))?;
        let mut map = self.sessions.lock().expect("sessions lock");
        Ok(map.entry(session.to_string()).or_default().clone())
    }

    /// The session's cwd (the default for a session that ran nothing yet).
    async fn cwd(&self, op: &str, session: &str) -> Result<String> {
        let slot = self.slot(op, session).await?;
        let guard = slot.lock().await;
        Ok(guard
            .as_ref()
            .map_or_else(|| DEFAULT_CWD.to_string(), |s| s.cwd.clone()))
    }

    async fn resolve(&self, op: &str, session: &str, path: &str) -> Result<String> {
        let cwd = self.cwd(op, session).await?;
        let p = paths::resolve(&cwd, path).map_err(|e| self.invalid(op, e))?;
        for b in &self.cfg.bucket_dirs {
            if paths::is_within(&p, &b.mount) {
                b.check(&p).map_err(|e| self.invalid(op, e))?;
            }
        }
        Ok(p)
    }

    /// Argv prefix that applies a session's environment (`env -i K=V...`), empty for a new
    /// session (which runs in the sandbox's default environment).
    fn env_prefix(state: Option<&ShellState>) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(s) = state {
            v.push("env".into());
            v.push("-i".into());
            for (k, val) in &s.env {
                if shell::valid_env_name(k) && !val.contains('\0') {
                    v.push(format!("{k}={val}"));
                }
            }
        }
        v
    }

    async fn run_in_env(
        &self,
        op: &str,
        state: Option<&ShellState>,
        script: &str,
        args: &[&str],
        deadline: Duration,
    ) -> Result<RawOutput> {
        let mut argv = Self::env_prefix(state);
        argv.extend(["sh", "-c", script, "sh"].map(String::from));
        argv.extend(args.iter().map(|s| s.to_string()));
        self.transport.run(op, RawExec::new(argv, deadline)).await
    }

    async fn start_background(
        &self,
        op: &str,
        session: &str,
        state: Option<&ShellState>,
        command: &str,
    ) -> Result<u32> {
        let cwd = state.map_or(DEFAULT_CWD, |s| s.cwd.as_str());
        let bg = self.bg_dir();
        let durable = self.durable_bg_dir();
        let out = self
            .run_in_env(
                op,
                state,
                BG_START,
                &[&bg, session, cwd, command, BG_CHILD, &durable],
                SHORT_DEADLINE,
            )
            .await?;
        if out.exit_code != 0 {
            return Err(self.classify(op, "starting the background process", &out));
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                self.err(
                    ErrorKind::Backend,
                    op,
                    format!(
                        "no pid from the background start: {}",
                        lossy_tail(&out.stdout)
                    ),
                )
            })
    }

    async fn read_stream(&self, op: &str, path: &str) -> Result<ByteStream> {
        self.transport
            .download(op, path)
            .await
            .map_err(|e| e.with_op(op))
    }
}

#[async_trait]
impl<T: Transport> Sandbox for GenericSandbox<T> {
    fn id(&self) -> &str {
        self.sid()
    }

    fn backend_name(&self) -> &'static str {
        self.cfg.backend_name
    }

    fn capabilities(&self) -> Capabilities {
        self.cfg.capabilities
    }

    async fn ensure_ready(&self) -> Result<()> {
        self.lifecycle.ensure_ready().await
    }

    async fn destroy(&self) -> Result<()> {
        self.lifecycle.destroy().await
    }

    fn cdp_url(&self) -> String {
        self.lifecycle
            .browser()
            .map(|b| b.cdp_url)
            .unwrap_or_default()
    }

    fn vnc_url(&self) -> String {
        self.lifecycle
            .browser()
            .and_then(|b| b.vnc_url)
            .unwrap_or_default()
    }

    async fn get_browser(&self) -> Result<BrowserInfo> {
        match self.lifecycle.browser_ready().await {
            Some(r) => r,
            None => Err(SandboxError::unsupported(
                self.sid(),
                "get_browser",
                format!("this {} sandbox has no browser", self.cfg.backend_name),
            )),
        }
    }

    async fn exec(&self, session: &str, exec_dir: &str, command: &str) -> Result<ExecOutcome> {
        const OP: &str = "exec";
        let slot = self.slot(OP, session).await?;
        let state = slot.lock().await.clone();
        let cwd = state.as_ref().map_or(DEFAULT_CWD, |s| s.cwd.as_str());
        let dir = if exec_dir.is_empty() {
            cwd.to_string()
        } else {
            paths::resolve(cwd, exec_dir).map_err(|e| self.invalid(OP, e))?
        };
        let d = self.sh_dir(session);
        let n = polls(self.cfg.exec_wait).to_string();
        let out = self
            .run_in_env(
                OP,
                state.as_ref(),
                INTERACTIVE_START,
                &[&d, &dir, command, &n, INTERACTIVE_CHILD],
                self.cfg.exec_wait + SHORT_DEADLINE,
            )
            .await?;
        if out.exit_code != 0 {
            return Err(self.classify(OP, &format!("exec in {dir}"), &out));
        }
        let nl = out.stdout.iter().position(|&b| b == b'\n').unwrap_or(0);
        let head = String::from_utf8_lossy(&out.stdout[..nl]).into_owned();
        let bad = || {
            self.err(
                ErrorKind::Backend,
                OP,
                format!("unexpected reply {:?}", lossy_tail(&out.stdout)),
            )
        };
        if let Some(code) = head.strip_prefix('C') {
            let exit_code = code.trim().parse().map_err(|_| bad())?;
            let mut output = out.stdout[nl + 1..].to_vec();
            if out.truncated && !output.ends_with(b"\n") {
                output.push(b'\n');
            }
            Ok(ExecOutcome::Completed { exit_code, output })
        } else if let Some(pid) = head.strip_prefix('R') {
            Ok(ExecOutcome::Running {
                pid: pid.trim().parse().map_err(|_| bad())?,
            })
        } else {
            Err(bad())
        }
    }

    async fn exec_stateful(&self, req: StatefulExec) -> Result<ShellResult> {
        const OP: &str = "exec_stateful";
        let started = Instant::now();
        let slot = self.slot(OP, &req.session).await?;
        let mut guard = slot.lock().await;
        let timeout = if req.timeout.is_zero() {
            self.cfg.default_timeout
        } else {
            req.timeout
        };
        if req.background || shell::is_background(&req.command) {
            let cmd = shell::strip_background(&req.command);
            if cmd.trim().is_empty() {
                return Err(self.invalid(OP, "the background command is empty"));
            }
            let pid = self
                .start_background(OP, &req.session, guard.as_ref(), cmd)
                .await?;
            return Ok(ShellResult {
                exit_code: 0,
                stdout: Vec::new(),
                stderr: Vec::new(),
                output_truncated: false,
                cwd: guard
                    .as_ref()
                    .map_or_else(|| DEFAULT_CWD.to_string(), |s| s.cwd.clone()),
                duration: started.elapsed(),
                background_pid: Some(pid),
            });
        }
        let marker = shell::new_marker(uuid::Uuid::new_v4().as_u128());
        let mut inner = shell::wrap(guard.as_ref(), &req.command, ceil_secs(timeout), &marker);
        if guard.is_none() {
            // A new session starts in the default environment, in /workspace.
            let n = inner.len();
            inner[n - 4] = DEFAULT_CWD.to_string();
        }
        let state_file = format!("{}/{}.state", self.sessions_dir(), req.session);
        let lim = MAX_OUTPUT - DUMP_TAIL - 1024;
        let mut argv: Vec<String> = ["sh", "-c", STATEFUL_OUTER, "sh"]
            .map(String::from)
            .to_vec();
        argv.extend([
            state_file,
            marker.clone(),
            lim.to_string(),
            DUMP_TAIL.to_string(),
            self.spool_dir(),
        ]);
        argv.extend(inner);
        let raw = match self
            .transport
            .run(OP, RawExec::new(argv, timeout + self.cfg.transport_slack))
            .await
        {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::Timeout => {
                return Err(self.err(
                    ErrorKind::Timeout,
                    OP,
                    format!(
                        "the command did not finish within {timeout:?}: {}",
                        e.detail()
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        match shell::unwrap(&raw.stdout, &marker) {
            Ok(u) => {
                let (stdout, noted) = stateful_stdout(u.stdout, &marker);
                let truncated = raw.truncated || noted;
                let cwd = u.state.cwd.clone();
                *guard = Some(u.state);
                Ok(ShellResult {
                    exit_code: u.exit_code,
                    stdout,
                    stderr: raw.stderr,
                    output_truncated: truncated,
                    cwd,
                    duration: started.elapsed(),
                    background_pid: None,
                })
            }
            Err(shell::UnwrapError::MissingDump) if started.elapsed() >= timeout => Err(self.err(
                ErrorKind::Timeout,
                OP,
                format!("the command was killed after its timeout of {timeout:?}"),
            )),
            Err(e) => Err(self.err(
                ErrorKind::Backend,
                OP,
                format!(
                    "{e} (exit status {}); stderr: {}",
                    raw.exit_code,
                    lossy_tail(&raw.stderr)
                ),
            )),
        }
    }

    async fn view_shell(&self, session: &str) -> Result<ShellView> {
        const OP: &str = "view_shell";
        validate_session(session).map_err(|e| self.invalid(OP, e))?;
        let d = self.sh_dir(session);
        let out = self
            .run_ok(
                OP,
                &format!("the interactive command of session {session}"),
                INTERACTIVE_VIEW,
                &[&d],
                None,
            )
            .await?;
        shell_view(&out.stdout).ok_or_else(|| {
            self.err(
                ErrorKind::Backend,
                OP,
                "unexpected reply from the view script",
            )
        })
    }

    async fn wait_for_process(&self, session: &str, timeout: Duration) -> Result<i32> {
        const OP: &str = "wait_for_process";
        validate_session(session).map_err(|e| self.invalid(OP, e))?;
        let d = self.sh_dir(session);
        let n = polls(timeout).to_string();
        let out = self
            .run(
                OP,
                INTERACTIVE_WAIT,
                &[&d, &n],
                None,
                timeout + SHORT_DEADLINE,
            )
            .await?;
        if out.exit_code != 0 {
            return Err(self.classify(
                OP,
                &format!("the interactive command of session {session}"),
                &out,
            ));
        }
        match wait_reply(&out.stdout) {
            WaitReply::Running => Err(self.err(
                ErrorKind::Timeout,
                OP,
                format!("the command is still running after {timeout:?}"),
            )),
            WaitReply::Exited(code) => Ok(code),
            WaitReply::Unexpected(t) => {
                Err(self.err(ErrorKind::Backend, OP, format!("unexpected reply {t:?}")))
            }
        }
    }

    async fn write_to_process(&self, session: &str, input: &[u8], press_enter: bool) -> Result<()> {
        const OP: &str = "write_to_process";
        validate_session(session).map_err(|e| self.invalid(OP, e))?;
        let d = self.sh_dir(session);
        let mut data = input.to_vec();
        if press_enter {
            data.push(b'\n');
        }
        self.run_ok(
            OP,
            &format!("the interactive command of session {session}"),
            INTERACTIVE_WRITE,
            &[&d],
            Some(Bytes::from(data)),
        )
        .await
        .map(|_| ())
    }

    async fn kill_process(&self, session: &str) -> Result<()> {
        const OP: &str = "kill_process";
        validate_session(session).map_err(|e| self.invalid(OP, e))?;
        let d = self.sh_dir(session);
        self.run_ok(
            OP,
            &format!("the interactive command of session {session}"),
            INTERACTIVE_KILL,
            &[&d],
            None,
        )
        .await
        .map(|_| ())
    }

    async fn list_background_processes(
        &self,
        session: Option<&str>,
    ) -> Result<Vec<BackgroundProcess>> {
        const OP: &str = "list_background_processes";
        if let Some(s) = session {
            validate_session(s).map_err(|e| self.invalid(OP, e))?;
        }
        let (bg, durable) = (self.bg_dir(), self.durable_bg_dir());
        let out = self
            .run_ok(OP, "the background table", BG_LIST, &[&bg, &durable], None)
            .await?;
        let mut v: Vec<BackgroundProcess> = parse_list(&out.stdout)
            .into_iter()
            .filter(|r| session.is_none_or(|s| s == r.3))
            .map(
                |(pid, running, started, session, command)| BackgroundProcess {
                    pid,
                    session,
                    command,
                    running,
                    started_at: epoch(started),
                },
            )
            .collect();
        v.sort_by_key(|p| (p.started_at, p.pid));
        Ok(v)
    }

    async fn kill_background_process(&self, selector: ProcessSelector) -> Result<Vec<u32>> {
        const OP: &str = "kill_background_process";
        if let ProcessSelector::Session(s) = &selector {
            validate_session(s).map_err(|e| self.invalid(OP, e))?;
        }
        if let ProcessSelector::Pattern(p) = &selector
            && p.is_empty()
        {
            return Err(self.invalid(OP, "the pattern is empty"));
        }
        let all = self
            .list_background_processes(None)
            .await
            .map_err(|e| e.with_op(OP))?;
        if let ProcessSelector::Pid(pid) = &selector
            && !all.iter().any(|p| p.pid == *pid)
        {
            return Err(self.err(
                ErrorKind::NotFound,
                OP,
                format!("no background process with pid {pid}"),
            ));
        }
        let targets: Vec<String> = all
            .iter()
            .filter(|p| p.running)
            .filter(|p| match &selector {
                ProcessSelector::Pid(pid) => p.pid == *pid,
                ProcessSelector::Session(s) => &p.session == s,
                ProcessSelector::Pattern(pat) => p.command.contains(pat.as_str()),
            })
            .map(|p| p.pid.to_string())
            .collect();
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<&str> = targets.iter().map(String::as_str).collect();
        let out = self
            .run_ok(OP, "killing background processes", BG_KILL, &args, None)
            .await?;
        Ok(killed_pids(&out.stdout))
    }

    async fn get_background_logs(&self, pid: u32) -> Result<Vec<u8>> {
        const OP: &str = "get_background_logs";
        let d = format!("{}/{pid}", self.bg_dir());
        let durable = format!("{}/{pid}", self.durable_bg_dir());
        let out = self
            .run_ok(
                OP,
                &format!("background process {pid}"),
                BG_LOG,
                &[&d, &durable],
                None,
            )
            .await?;
        Ok(out.stdout)
    }

    async fn file_read(&self, session: &str, path: &str, opts: ReadOptions) -> Result<FileContent> {
        const OP: &str = "file_read";
        let p = self.resolve(OP, session, path).await?;
        let cap = opts.max_length.unwrap_or(READ_HARD_CAP);
        let mut sel = streams::LineSelector::new(opts.start_line.unwrap_or(0), opts.end_line, cap);
        if sel.done {
            // An empty range still reports a missing file.
            if !self.file_exists(session, path).await? {
                return Err(self.err(ErrorKind::NotFound, OP, format!("{p} does not exist")));
            }
            return Ok(FileContent {
                content: Vec::new(),
                truncated: false,
            });
        }
        let mut stream = self.read_stream(OP, &p).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.with_op(OP))?;
            sel.feed(&chunk);
            if sel.done {
                break;
            }
        }
        Ok(FileContent {
            content: sel.out,
            truncated: sel.truncated,
        })
    }

    async fn file_write(
        &self,
        session: &str,
        path: &str,
        content: &[u8],
        opts: WriteOptions,
    ) -> Result<()> {
        const OP: &str = "file_write";
        let p = self.resolve(OP, session, path).await?;
        if p == "/" {
            return Err(self.invalid(OP, "/ is a directory"));
        }
        let mut data = Vec::with_capacity(content.len() + 2);
        if opts.leading_newline {
            data.push(b'\n');
        }
        data.extend_from_slice(content);
        if opts.trailing_newline {
            data.push(b'\n');
        }
        let append = if opts.append { "1" } else { "0" };
        self.run_ok(OP, &p, FILE_WRITE, &[&p, append], Some(Bytes::from(data)))
            .await
            .map(|_| ())
    }

    async fn file_exists(&self, session: &str, path: &str) -> Result<bool> {
        const OP: &str = "file_exists";
        let p = self.resolve(OP, session, path).await?;
        let out = self
            .run(OP, FILE_EXISTS, &[&p], None, SHORT_DEADLINE)
            .await?;
        match out.exit_code {
            0 => Ok(true),
            1 => Ok(false),
            _ => Err(self.classify(OP, &p, &out)),
        }
    }

    async fn file_delete(&self, session: &str, path: &str) -> Result<()> {
        const OP: &str = "file_delete";
        let p = self.resolve(OP, session, path).await?;
        if p == "/" {
            return Err(self.invalid(OP, "refusing to delete /"));
        }
        self.run_ok(OP, &p, FILE_DELETE, &[&p], None)
            .await
            .map(|_| ())
    }

    async fn file_list(&self, session: &str, path: &str) -> Result<Vec<FileEntry>> {
        const OP: &str = "file_list";
        let p = self.resolve(OP, session, path).await?;
        let out = self.run_ok(OP, &p, FILE_LIST, &[&p], None).await?;
        if out.truncated {
            return Err(self.invalid(
                OP,
                format!("{p} has too many entries to list within {MAX_OUTPUT} bytes"),
            ));
        }
        Ok(file_entries(&out.stdout))
    }

    async fn file_find(&self, session: &str, dir: &str, glob: &str) -> Result<Vec<String>> {
        const OP: &str = "file_find";
        let d = self.resolve(OP, session, dir).await?;
        let matcher = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| self.invalid(OP, format!("invalid glob {glob:?}: {e}")))?
            .compile_matcher();
        let out = self.run_ok(OP, &d, FILE_FIND, &[&d], None).await?;
        if out.truncated {
            return Err(self.invalid(
                OP,
                format!("{d} holds too many paths to search within {MAX_OUTPUT} bytes"),
            ));
        }
        Ok(found_paths(&out.stdout, &d, &matcher))
    }

    async fn file_search(
        &self,
        session: &str,
        path: &str,
        regex: &str,
    ) -> Result<Vec<SearchMatch>> {
        const OP: &str = "file_search";
        let p = self.resolve(OP, session, path).await?;
        let re = regex::bytes::Regex::new(regex)
            .map_err(|e| self.invalid(OP, format!("invalid regex: {e}")))?;
        let mut stream = self.read_stream(OP, &p).await?;
        let mut split = streams::LineSplitter::new(MAX_SEARCH_LINE);
        let mut matches = Vec::new();
        let mut on_line = |n: usize, line: &[u8]| -> std::result::Result<(), String> {
            if re.is_match(line) {
                if matches.len() >= MAX_SEARCH_MATCHES {
                    return Err(format!(
                        "more than {MAX_SEARCH_MATCHES} lines match; narrow the regex"
                    ));
                }
                matches.push(SearchMatch {
                    line: n,
                    text: line.to_vec(),
                });
            }
            Ok(())
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.with_op(OP))?;
            split
                .feed(&chunk, &mut on_line)
                .map_err(|e| self.invalid(OP, format!("{p}: {e}")))?;
        }
        split
            .finish(&mut on_line)
            .map_err(|e| self.invalid(OP, format!("{p}: {e}")))?;
        Ok(matches)
    }

    async fn file_replace(&self, session: &str, path: &str, old: &[u8], new: &[u8]) -> Result<u64> {
        const OP: &str = "file_replace";
        let p = self.resolve(OP, session, path).await?;
        let mut rep = streams::Replacer::new(old, new).map_err(|e| self.invalid(OP, e))?;
        let mode_out = self.run_ok(OP, &p, FILE_MODE, &[&p], None).await?;
        let mode = String::from_utf8_lossy(&mode_out.stdout).trim().to_string();
        let io_err = |e: std::io::Error| {
            self.err(
                ErrorKind::Backend,
                OP,
                format!("spooling the new content on the host failed: {e}"),
            )
        };
        let tmp = tempfile::NamedTempFile::new().map_err(io_err)?;
        let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(io_err)?);
        let mut stream = self.read_stream(OP, &p).await?;
        let mut out = Vec::with_capacity(256 * 1024);
        let mut len: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.with_op(OP))?;
            rep.feed(&chunk, &mut out);
            if out.len() >= 128 * 1024 {
                file.write_all(&out).await.map_err(io_err)?;
                len += out.len() as u64;
                out.clear();
            }
        }
        rep.finish(&mut out);
        file.write_all(&out).await.map_err(io_err)?;
        len += out.len() as u64;
        file.flush().await.map_err(io_err)?;
        drop(file);
        if rep.count == 0 {
            return Ok(0);
        }
        let reader = tokio::fs::File::open(tmp.path()).await.map_err(io_err)?;
        let body = UploadBody {
            stream: Box::pin(
                tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).map(move |r| {
                    r.map_err(|e| {
                        SandboxError::backend("-", OP, format!("reading the spooled file: {e}"))
                    })
                }),
            ),
            len: Some(len),
        };
        self.transport
            .upload(OP, &p, body)
            .await
            .map_err(|e| e.with_op(OP))?;
        if !mode.is_empty() && mode != "644" {
            self.run_ok(OP, &p, FILE_CHMOD, &[&p, &mode], None).await?;
        }
        Ok(rep.count)
    }

    async fn file_upload(&self, session: &str, path: &str, body: UploadBody) -> Result<u64> {
        const OP: &str = "file_upload";
        let p = self.resolve(OP, session, path).await?;
        if p == "/" {
            return Err(self.invalid(OP, "/ is a directory"));
        }
        let parent = paths::parent(&p).to_string();
        self.run_ok(OP, &p, UPLOAD_PREPARE, &[&parent, &p], None)
            .await?;
        self.transport
            .upload(OP, &p, body)
            .await
            .map_err(|e| e.with_op(OP))
    }

    async fn file_download(&self, session: &str, path: &str) -> Result<ByteStream> {
        const OP: &str = "file_download";
        let p = self.resolve(OP, session, path).await?;
        self.read_stream(OP, &p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_dirs_apply_cloud_storage_naming() {
        let b = BucketDir {
            mount: "/workspace".into(),
            prefix_len: 40,
        };
        assert!(b.check("/workspace/a b/ü.txt").is_ok());
        assert!(
            b.check("/workspace/a\nb")
                .unwrap_err()
                .contains("line feed")
        );
        assert!(b.check("/workspace/a\rb").is_err());
        let long = format!("/workspace/{}", "a/".repeat(500));
        assert!(b.check(&long).unwrap_err().contains("1024"));
        assert!(b.check(&format!("/workspace/{}", "a".repeat(984))).is_ok());
        assert!(b.check(&format!("/workspace/{}", "a".repeat(985))).is_err());
    }

    #[test]
    fn session_names() {
        assert!(validate_session("main").is_ok());
        assert!(validate_session("a.b-c_1").is_ok());
        assert!(validate_session("").is_err());
        assert!(validate_session("..").is_err());
        assert!(validate_session("a/b").is_err());
        assert!(validate_session("a b").is_err());
        assert!(validate_session(&"x".repeat(129)).is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(0)), 1);
        assert_eq!(polls(Duration::from_secs(1)), 20);
    }
}
