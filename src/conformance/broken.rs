//! Deliberately broken sandboxes that prove the suite can fail: wrappers around a real sandbox
//! that forget environment changes or truncate file contents. For self-tests only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::protocol::*;

/// How a [`Tampered`] sandbox misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Every stateful command runs in a brand-new session: cwd and env changes are forgotten.
    ForgetEnv,
    /// `file_read` returns only the first half of the content (and says it is not truncated).
    TruncateReads,
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
    fn origin(&self) -> crate::bench::BackendOrigin {
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
        Ok(Arc::new(Tampered::new(
            self.inner.get(id).await?,
            self.mode,
        )))
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
        self.inner.ensure_ready().await
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
        self.inner.exec(session, exec_dir, command).await
    }
    async fn exec_stateful(&self, mut req: StatefulExec) -> Result<ShellResult> {
        if self.mode == Tamper::ForgetEnv {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            req.session = format!("{}-forgotten{n}", req.session);
        }
        self.inner.exec_stateful(req).await
    }
    async fn view_shell(&self, session: &str) -> Result<ShellView> {
        self.inner.view_shell(session).await
    }
    async fn wait_for_process(&self, session: &str, timeout: Duration) -> Result<i32> {
        self.inner.wait_for_process(session, timeout).await
    }
    async fn write_to_process(&self, session: &str, input: &[u8], press_enter: bool) -> Result<()> {
        self.inner
            .write_to_process(session, input, press_enter)
            .await
    }
    async fn kill_process(&self, session: &str) -> Result<()> {
        self.inner.kill_process(session).await
    }
    async fn list_background_processes(
        &self,
        session: Option<&str>,
    ) -> Result<Vec<BackgroundProcess>> {
        self.inner.list_background_processes(session).await
    }
    async fn kill_background_process(&self, selector: ProcessSelector) -> Result<Vec<u32>> {
        self.inner.kill_background_process(selector).await
    }
    async fn get_background_logs(&self, pid: u32) -> Result<Vec<u8>> {
        self.inner.get_background_logs(pid).await
    }
    async fn file_read(&self, session: &str, path: &str, opts: ReadOptions) -> Result<FileContent> {
        let mut c = self.inner.file_read(session, path, opts).await?;
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
        self.inner.file_write(session, path, content, opts).await
    }
    async fn file_exists(&self, session: &str, path: &str) -> Result<bool> {
        self.inner.file_exists(session, path).await
    }
    async fn file_delete(&self, session: &str, path: &str) -> Result<()> {
        self.inner.file_delete(session, path).await
    }
    async fn file_list(&self, session: &str, path: &str) -> Result<Vec<FileEntry>> {
        self.inner.file_list(session, path).await
    }
    async fn file_find(&self, session: &str, dir: &str, glob: &str) -> Result<Vec<String>> {
        self.inner.file_find(session, dir, glob).await
    }
    async fn file_search(
        &self,
        session: &str,
        path: &str,
        regex: &str,
    ) -> Result<Vec<SearchMatch>> {
        self.inner.file_search(session, path, regex).await
    }
    async fn file_replace(&self, session: &str, path: &str, old: &[u8], new: &[u8]) -> Result<u64> {
        self.inner.file_replace(session, path, old, new).await
    }
    async fn file_upload(&self, session: &str, path: &str, body: UploadBody) -> Result<u64> {
        self.inner.file_upload(session, path, body).await
    }
    async fn file_download(&self, session: &str, path: &str) -> Result<ByteStream> {
        self.inner.file_download(session, path).await
    }
}
