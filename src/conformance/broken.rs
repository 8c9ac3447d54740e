//! Deliberately broken sandboxes that prove the suite can fail: wrappers around a real sandbox
//! with one planted bug each ([`Tamper`], at least one per protocol method the suite covers),
//! each naming the core cases that must catch it. For self-tests only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::protocol::*;

/// How a [`Tampered`] sandbox misbehaves: one planted bug, in one protocol method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// `exec_stateful`: every command runs in a brand-new session (cwd and env forgotten).
    ForgetEnv,
    /// `file_read`: only the first half of the content (and "not truncated").
    TruncateReads,
    /// `file_read`: a line range starts one line late.
    ReadRangeOffByOne,
    /// `exec_stateful`: stderr merged into stdout.
    StderrIntoStdout,
    /// `exec_stateful`: the exit code dropped (always 0).
    ExitCodeDropped,
    /// `exec_stateful`: the reported cwd is always `/`.
    CwdReportedWrong,
    /// `get_background_logs`: the logs of the next pid.
    BackgroundLogsWrongPid,
    /// `file_replace`: the old text used as a regular expression.
    ReplaceAsRegex,
    /// `file_read`: NotFound reported as a Backend error.
    NotFoundAsBackend,
    /// `file_download`: the last byte never arrives.
    TruncatedDownload,
    /// `file_write`: relative paths written from another session's cwd.
    WriteWrongSession,
    /// `file_exists`: always true.
    ExistsAlwaysTrue,
    /// `file_delete`: succeeds without deleting.
    DeleteNoop,
    /// `file_list`: the first entry dropped.
    ListDropsEntry,
    /// `file_list`: a missing directory listed as empty.
    ListMissingEmpty,
    /// `file_find`: no match ever.
    FindNothing,
    /// `file_search`: line numbers one too high.
    SearchLineOffByOne,
    /// `file_upload`: the last byte dropped.
    UploadDropsByte,
    /// `file_write`: append ignored (always overwrites).
    AppendIgnored,
    /// `exec`: the exec directory ignored.
    ExecDirIgnored,
    /// `exec`: the exit code of a completed command dropped.
    ExecExitDropped,
    /// `write_to_process`: Enter never pressed.
    EnterNeverPressed,
    /// `kill_process`: succeeds without killing.
    KillProcessNoop,
    /// `list_background_processes`: the session filter ignored.
    ListIgnoresSession,
    /// `kill_background_process`: kills nothing.
    KillBackgroundNoop,
    /// `view_shell`: the output is empty.
    ViewShellEmpty,
    /// `wait_for_process`: always exit code 0.
    WaitExitDropped,
    /// `ensure_ready`: fails the second time.
    EnsureReadyFailsAgain,
    /// `get` (backend): an unknown id is a Backend error instead of NotFound.
    GetUnknownAsBackend,
    /// `file_upload`: errors swallowed (reported as 0 bytes written).
    UploadErrorsHidden,
    /// `file_search`: a bad regular expression searched for literally instead of refused.
    SearchBadRegexAccepted,
}

impl Tamper {
    /// Every planted bug.
    pub const ALL: [Tamper; 31] = [
        Tamper::ForgetEnv,
        Tamper::TruncateReads,
        Tamper::ReadRangeOffByOne,
        Tamper::StderrIntoStdout,
        Tamper::ExitCodeDropped,
        Tamper::CwdReportedWrong,
        Tamper::BackgroundLogsWrongPid,
        Tamper::ReplaceAsRegex,
        Tamper::NotFoundAsBackend,
        Tamper::TruncatedDownload,
        Tamper::WriteWrongSession,
        Tamper::ExistsAlwaysTrue,
        Tamper::DeleteNoop,
        Tamper::ListDropsEntry,
        Tamper::ListMissingEmpty,
        Tamper::FindNothing,
        Tamper::SearchLineOffByOne,
        Tamper::UploadDropsByte,
        Tamper::AppendIgnored,
        Tamper::ExecDirIgnored,
        Tamper::ExecExitDropped,
        Tamper::EnterNeverPressed,
        Tamper::KillProcessNoop,
        Tamper::ListIgnoresSession,
        Tamper::KillBackgroundNoop,
        Tamper::ViewShellEmpty,
        Tamper::WaitExitDropped,
        Tamper::EnsureReadyFailsAgain,
        Tamper::GetUnknownAsBackend,
        Tamper::UploadErrorsHidden,
        Tamper::SearchBadRegexAccepted,
    ];

    /// The protocol method the bug is planted in.
    pub fn method(self) -> &'static str {
        match self {
            Tamper::ForgetEnv
            | Tamper::StderrIntoStdout
            | Tamper::ExitCodeDropped
            | Tamper::CwdReportedWrong => "exec_stateful",
            Tamper::TruncateReads | Tamper::ReadRangeOffByOne | Tamper::NotFoundAsBackend => {
                "file_read"
            }
            Tamper::BackgroundLogsWrongPid => "get_background_logs",
            Tamper::ReplaceAsRegex => "file_replace",
            Tamper::TruncatedDownload => "file_download",
            Tamper::WriteWrongSession | Tamper::AppendIgnored => "file_write",
            Tamper::ExistsAlwaysTrue => "file_exists",
            Tamper::DeleteNoop => "file_delete",
            Tamper::ListDropsEntry | Tamper::ListMissingEmpty => "file_list",
            Tamper::FindNothing => "file_find",
            Tamper::SearchLineOffByOne | Tamper::SearchBadRegexAccepted => "file_search",
            Tamper::UploadDropsByte | Tamper::UploadErrorsHidden => "file_upload",
            Tamper::ExecDirIgnored | Tamper::ExecExitDropped => "exec",
            Tamper::EnterNeverPressed => "write_to_process",
            Tamper::KillProcessNoop => "kill_process",
            Tamper::ListIgnoresSession => "list_background_processes",
            Tamper::KillBackgroundNoop => "kill_background_process",
            Tamper::ViewShellEmpty => "view_shell",
            Tamper::WaitExitDropped => "wait_for_process",
            Tamper::EnsureReadyFailsAgain => "ensure_ready",
            Tamper::GetUnknownAsBackend => "get",
        }
    }

    /// The core cases (a `--filter` pattern) that must catch the bug.
    pub fn caught_by(self) -> &'static str {
        match self {
            Tamper::ForgetEnv => "stateful.export_with_space",
            Tamper::TruncateReads => "files.write_read",
            Tamper::ReadRangeOffByOne => "files.read_line_range",
            Tamper::StderrIntoStdout => "stateful.stdout_stderr_separate",
            Tamper::ExitCodeDropped => "stateful.exit_codes",
            Tamper::CwdReportedWrong => "stateful.cd_*",
            Tamper::BackgroundLogsWrongPid => "background.logs",
            Tamper::ReplaceAsRegex => "files.replace_regex_chars_are_literal",
            Tamper::NotFoundAsBackend => "files.read_missing",
            Tamper::TruncatedDownload => "transfer.roundtrip_10mb",
            Tamper::WriteWrongSession => "files.relative_path_uses_session_cwd",
            Tamper::ExistsAlwaysTrue => "files.exists",
            Tamper::DeleteNoop => "files.delete_file_and_tree",
            Tamper::ListDropsEntry => "files.list_directory",
            Tamper::ListMissingEmpty => "files.list_missing",
            Tamper::FindNothing => "files.find_recursive",
            Tamper::SearchLineOffByOne => "files.search_line_numbers",
            Tamper::UploadDropsByte => "transfer.roundtrip_10mb",
            Tamper::AppendIgnored => "files.write_append",
            Tamper::ExecDirIgnored => "exec.exec_dir",
            Tamper::ExecExitDropped => "exec.exit_code",
            Tamper::EnterNeverPressed => "interactive.press_enter",
            Tamper::KillProcessNoop => "interactive.kill_reader",
            Tamper::ListIgnoresSession => "background.list_filters_by_session",
            Tamper::KillBackgroundNoop => "background.start_list_kill",
            Tamper::ViewShellEmpty => "exec.running_then_wait",
            Tamper::WaitExitDropped => "exec.wait_reports_exit_code",
            Tamper::EnsureReadyFailsAgain => "lifecycle.ensure_ready_repeatable",
            Tamper::GetUnknownAsBackend => "lifecycle.get_unknown_id",
            Tamper::UploadErrorsHidden => "files.upload_bad_path_rejected",
            Tamper::SearchBadRegexAccepted => "files.search_bad_regex",
        }
    }
}

/// A sandbox that delegates to a real one but misbehaves as configured.
pub struct Tampered {
    inner: Arc<dyn Sandbox>,
    mode: Tamper,
    counter: AtomicU64,
}

impl Tampered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Sandbox>, mode: Tamper) -> Self {
        Tampered {
            inner,
            mode,
            counter: AtomicU64::new(0),
        }
    }
}

/// A backend whose sandboxes are [`Tampered`].
pub struct TamperedBackend {
    inner: Arc<dyn SandboxBackend>,
    mode: Tamper,
}

impl TamperedBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn SandboxBackend>, mode: Tamper) -> Self {
        TamperedBackend { inner, mode }
    }
}

#[async_trait]
impl SandboxBackend for TamperedBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn origin(&self) -> crate::protocol::BackendOrigin {
        self.inner.origin()
    }
    async fn create(&self) -> Result<Arc<dyn Sandbox>> {
        Ok(Arc::new(Tampered::new(
            self.inner.create().await?,
            self.mode,
        )))
    }
    async fn create_with(&self, wants: Capabilities) -> Result<Arc<dyn Sandbox>> {
        Ok(Arc::new(Tampered::new(
            self.inner.create_with(wants).await?,
            self.mode,
        )))
    }
    async fn get(&self, id: &str) -> Result<Arc<dyn Sandbox>> {
        let sb = match self.inner.get(id).await {
            Err(e)
                if self.mode == Tamper::GetUnknownAsBackend && e.kind() == ErrorKind::NotFound =>
            {
                return Err(SandboxError::backend(id, "get", e.to_string()));
            }
            r => r?,
        };
        Ok(Arc::new(Tampered::new(sb, self.mode)))
    }
}

#[async_trait]
impl Sandbox for Tampered {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn ensure_ready(&self) -> Result<()> {
        self.inner.ensure_ready().await?;
        if self.mode == Tamper::EnsureReadyFailsAgain
            && self.counter.fetch_add(1, Ordering::Relaxed) > 0
        {
            return Err(SandboxError::backend(
                self.id(),
                "ensure_ready",
                "planted: not ready again",
            ));
        }
        Ok(())
    }
    async fn destroy(&self) -> Result<()> {
        self.inner.destroy().await
    }
    fn supports_browser(&self) -> bool {
        self.inner.supports_browser()
    }
    fn cdp_url(&self) -> String {
        self.inner.cdp_url()
    }
    fn vnc_url(&self) -> String {
        self.inner.vnc_url()
    }
    async fn get_browser(&self) -> Result<BrowserInfo> {
        self.inner.get_browser().await
    }
    async fn exec(&self, session: &str, exec_dir: &str, command: &str) -> Result<ExecOutcome> {
        let dir = if self.mode == Tamper::ExecDirIgnored {
            ""
        } else {
            exec_dir
        };
        let out = self.inner.exec(session, dir, command).await?;
        Ok(match (self.mode, out) {
            (Tamper::ExecExitDropped, ExecOutcome::Completed { output, .. }) => {
                ExecOutcome::Completed {
                    exit_code: 0,
                    output,
                }
            }
            (_, o) => o,
        })
    }
    async fn exec_stateful(&self, mut req: StatefulExec) -> Result<ShellResult> {
        if self.mode == Tamper::ForgetEnv {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            req.session = format!("{}-forgotten{n}", req.session);
        }
        let mut r = self.inner.exec_stateful(req).await?;
        match self.mode {
            Tamper::StderrIntoStdout => {
                let err = std::mem::take(&mut r.stderr);
                r.stdout.extend_from_slice(&err);
            }
            Tamper::ExitCodeDropped => r.exit_code = 0,
            Tamper::CwdReportedWrong => r.cwd = "/".into(),
            _ => {}
        }
        Ok(r)
    }
    async fn view_shell(&self, session: &str) -> Result<ShellView> {
        let mut v = self.inner.view_shell(session).await?;
        if self.mode == Tamper::ViewShellEmpty {
            v.output.clear();
        }
        Ok(v)
    }
    async fn wait_for_process(&self, session: &str, timeout: Duration) -> Result<i32> {
        let code = self.inner.wait_for_process(session, timeout).await?;
        Ok(if self.mode == Tamper::WaitExitDropped {
            0
        } else {
            code
        })
    }
    async fn write_to_process(&self, session: &str, input: &[u8], press_enter: bool) -> Result<()> {
        let enter = press_enter && self.mode != Tamper::EnterNeverPressed;
        self.inner.write_to_process(session, input, enter).await
    }
    async fn kill_process(&self, session: &str) -> Result<()> {
        if self.mode == Tamper::KillProcessNoop {
            return Ok(());
        }
        self.inner.kill_process(session).await
    }
    async fn list_background_processes(
        &self,
        session: Option<&str>,
    ) -> Result<Vec<BackgroundProcess>> {
        let s = if self.mode == Tamper::ListIgnoresSession {
            None
        } else {
            session
        };
        self.inner.list_background_processes(s).await
    }
    async fn kill_background_process(&self, selector: ProcessSelector) -> Result<Vec<u32>> {
        if self.mode == Tamper::KillBackgroundNoop {
            return Ok(Vec::new());
        }
        self.inner.kill_background_process(selector).await
    }
    async fn get_background_logs(&self, pid: u32) -> Result<Vec<u8>> {
        let pid = if self.mode == Tamper::BackgroundLogsWrongPid {
            pid.wrapping_add(1)
        } else {
            pid
        };
        self.inner.get_background_logs(pid).await
    }
    async fn file_read(
        &self,
        session: &str,
        path: &str,
        mut opts: ReadOptions,
    ) -> Result<FileContent> {
        if self.mode == Tamper::ReadRangeOffByOne {
            opts.start_line = opts.start_line.map(|l| l + 1);
        }
        let mut c = match self.inner.file_read(session, path, opts).await {
            Err(e) if self.mode == Tamper::NotFoundAsBackend && e.kind() == ErrorKind::NotFound => {
                return Err(SandboxError::backend(self.id(), "file_read", e.to_string()));
            }
            r => r?,
        };
        if self.mode == Tamper::TruncateReads {
            c.content.truncate(c.content.len() / 2);
        }
        Ok(c)
    }
    async fn file_write(
        &self,
        session: &str,
        path: &str,
        content: &[u8],
        opts: WriteOptions,
    ) -> Result<()> {
        let mut opts = opts;
        if self.mode == Tamper::AppendIgnored {
            opts.append = false;
        }
        let session = if self.mode == Tamper::WriteWrongSession {
            "planted-other-session"
        } else {
            session
        };
        self.inner.file_write(session, path, content, opts).await
    }
    async fn file_exists(&self, session: &str, path: &str) -> Result<bool> {
        let e = self.inner.file_exists(session, path).await?;
        Ok(e || self.mode == Tamper::ExistsAlwaysTrue)
    }
    async fn file_delete(&self, session: &str, path: &str) -> Result<()> {
        if self.mode == Tamper::DeleteNoop {
            return Ok(());
        }
        self.inner.file_delete(session, path).await
    }
    async fn file_list(&self, session: &str, path: &str) -> Result<Vec<FileEntry>> {
        let mut l = match self.inner.file_list(session, path).await {
            Err(e) if self.mode == Tamper::ListMissingEmpty && e.kind() == ErrorKind::NotFound => {
                return Ok(Vec::new());
            }
            r => r?,
        };
        if self.mode == Tamper::ListDropsEntry && !l.is_empty() {
            l.remove(0);
        }
        Ok(l)
    }
    async fn file_find(&self, session: &str, dir: &str, glob: &str) -> Result<Vec<String>> {
        let found = self.inner.file_find(session, dir, glob).await?;
        Ok(if self.mode == Tamper::FindNothing {
            Vec::new()
        } else {
            found
        })
    }
    async fn file_search(
        &self,
        session: &str,
        path: &str,
        regex: &str,
    ) -> Result<Vec<SearchMatch>> {
        let regex = if self.mode == Tamper::SearchBadRegexAccepted
            && regex::bytes::Regex::new(regex).is_err()
        {
            regex::escape(regex)
        } else {
            regex.to_string()
        };
        let mut m = self.inner.file_search(session, path, &regex).await?;
        if self.mode == Tamper::SearchLineOffByOne {
            for x in &mut m {
                x.line += 1;
            }
        }
        Ok(m)
    }
    async fn file_replace(&self, session: &str, path: &str, old: &[u8], new: &[u8]) -> Result<u64> {
        if self.mode != Tamper::ReplaceAsRegex {
            return self.inner.file_replace(session, path, old, new).await;
        }
        let re = regex::bytes::Regex::new(&String::from_utf8_lossy(old))
            .map_err(|e| SandboxError::invalid(self.id(), "file_replace", e.to_string()))?;
        let content = self
            .inner
            .file_read(session, path, ReadOptions::default())
            .await?
            .content;
        let n = re.find_iter(&content).count() as u64;
        let out = re
            .replace_all(&content, regex::bytes::NoExpand(new))
            .into_owned();
        self.inner
            .file_write(session, path, &out, WriteOptions::default())
            .await?;
        Ok(n)
    }
    async fn file_upload(&self, session: &str, path: &str, body: UploadBody) -> Result<u64> {
        let body = if self.mode == Tamper::UploadDropsByte {
            drop_last_byte(body)
        } else {
            body
        };
        match self.inner.file_upload(session, path, body).await {
            Err(_) if self.mode == Tamper::UploadErrorsHidden => Ok(0),
            r => r,
        }
    }
    async fn file_download(&self, session: &str, path: &str) -> Result<ByteStream> {
        let s = self.inner.file_download(session, path).await?;
        if self.mode != Tamper::TruncatedDownload {
            return Ok(s);
        }
        // Buffer one chunk behind, and cut the last byte of the last one.
        let stream = async_stream_drop_last(s);
        Ok(stream)
    }
}

/// A body whose last byte never arrives (its declared length is one less too).
fn drop_last_byte(body: UploadBody) -> UploadBody {
    UploadBody {
        stream: async_stream_drop_last(body.stream),
        len: body.len.map(|l| l.saturating_sub(1)),
    }
}

/// The stream without its last byte: each chunk is held back until the next one arrives.
fn async_stream_drop_last(s: ByteStream) -> ByteStream {
    use futures::StreamExt;
    let state = (s, None::<bytes::Bytes>, false);
    Box::pin(futures::stream::unfold(
        state,
        |(mut s, mut held, done)| async move {
            if done {
                return None;
            }
            loop {
                match s.next().await {
                    Some(Ok(c)) if c.is_empty() => continue,
                    Some(Ok(c)) => {
                        if let Some(prev) = held.replace(c) {
                            return Some((Ok(prev), (s, held, false)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (s, None, true))),
                    None => {
                        let last = held.take()?;
                        let cut = last.slice(..last.len() - 1);
                        return Some((Ok(cut), (s, None, true)));
                    }
                }
            }
        },
    ))
}
