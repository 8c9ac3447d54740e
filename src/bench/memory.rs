//! An in-memory backend for testing the bench, metrics and reports without Docker: a tiny
//! simulated shell that understands exactly the commands the bench sends, an in-memory file
//! tree, and optional injected latency, failures and state loss. It is a test double, not a
//! sandbox: it runs nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;

use crate::protocol::*;

/// Largest file the double keeps (it holds files in memory).
pub const MAX_FILE: usize = 64 * 1024 * 1024;

/// Behaviour of the double.
#[derive(Debug, Clone, Default)]
pub struct MemoryConfig {
    /// Added to every operation.
    pub latency: Duration,
    /// Every n-th operation (counted across the backend) fails with this class.
    pub fail_every: Option<(u64, ErrorKind)>,
    /// Every n-th stateful command forgets the session's cwd and env first.
    pub lose_state_every: Option<u64>,
    /// Planted failures: the n-th call (1-based, counted per operation name across the
    /// backend, e.g. `("create", 7)`) fails with the class.
    pub fail_nth: Vec<(String, u64, ErrorKind)>,
}

/// The in-memory backend.
pub struct MemoryBackend {
    cfg: MemoryConfig,
    ops: Arc<AtomicU64>,
    per_op: Arc<Mutex<BTreeMap<String, u64>>>,
    next_id: AtomicU64,
}

impl MemoryBackend {
    /// A backend with this behaviour.
    pub fn new(cfg: MemoryConfig) -> MemoryBackend {
        MemoryBackend {
            cfg,
            ops: Arc::new(AtomicU64::new(0)),
            per_op: Arc::new(Mutex::new(BTreeMap::new())),
            next_id: AtomicU64::new(1),
        }
    }
}

#[async_trait]
impl SandboxBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            background: true,
            ..Default::default()
        }
    }

    async fn create(&self) -> Result<Arc<dyn Sandbox>> {
        let id = format!("mem-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let sb = MemorySandbox {
            id,
            cfg: self.cfg.clone(),
            ops: self.ops.clone(),
            per_op: self.per_op.clone(),
            state_cmds: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        };
        sb.tick("create").await?;
        Ok(Arc::new(sb))
    }

    async fn get(&self, id: &str) -> Result<Arc<dyn Sandbox>> {
        Err(SandboxError::unsupported(
            id,
            "get",
            "the memory backend cannot re-attach",
        ))
    }
}

#[derive(Default)]
struct Inner {
    files: BTreeMap<String, Vec<u8>>,
    sessions: BTreeMap<String, (String, BTreeMap<String, String>)>,
    next_pid: u32,
    bg: BTreeMap<u32, BackgroundProcess>,
}

/// A sandbox of the in-memory backend.
pub struct MemorySandbox {
    id: String,
    cfg: MemoryConfig,
    ops: Arc<AtomicU64>,
    per_op: Arc<Mutex<BTreeMap<String, u64>>>,
    state_cmds: AtomicU64,
    inner: Mutex<Inner>,
}

impl MemorySandbox {
    async fn tick(&self, op: &str) -> Result<()> {
        if !self.cfg.latency.is_zero() {
            tokio::time::sleep(self.cfg.latency).await;
        }
        let n = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some((every, kind)) = self.cfg.fail_every
            && every > 0
            && n.is_multiple_of(every)
        {
            return Err(SandboxError::new(kind, &self.id, op, "injected failure"));
        }
        if !self.cfg.fail_nth.is_empty() {
            let nth = {
                let mut g = self
                    .per_op
                    .lock()
                    .map_err(|_| SandboxError::backend(&self.id, op, "state poisoned"))?;
                let c = g.entry(op.to_string()).or_default();
                *c += 1;
                *c
            };
            if let Some((_, _, kind)) = self
                .cfg
                .fail_nth
                .iter()
                .find(|(o, n, _)| o == op && *n == nth)
            {
                return Err(SandboxError::new(*kind, &self.id, op, "planted failure"));
            }
        }
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| SandboxError::backend(&self.id, "lock", "state poisoned"))
    }

    fn abs(&self, session: &str, path: &str) -> Result<String> {
        let g = self.lock()?;
        let cwd = g
            .sessions
            .get(session)
            .map(|s| s.0.clone())
            .unwrap_or_else(|| "/workspace".into());
        crate::paths::resolve(&cwd, path)
            .map_err(|e| SandboxError::invalid(&self.id, "path", e.to_string()))
    }

    /// Runs the tiny command language; returns (exit, stdout).
    fn interpret(&self, session: &str, command: &str) -> Result<(i32, Vec<u8>, String)> {
        let mut g = self.lock()?;
        let (mut cwd, mut env) = g
            .sessions
            .get(session)
            .cloned()
            .unwrap_or_else(|| ("/workspace".into(), BTreeMap::new()));
        let n = self.state_cmds.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(every) = self.cfg.lose_state_every
            && every > 0
            && n.is_multiple_of(every)
        {
            cwd = "/".into();
            env.clear();
        }
        let mut out = Vec::new();
        let mut code = 0;
        for seg in command.split(';').flat_map(|s| s.split("&&")) {
            let seg = seg.trim();
            let (word, rest) = seg.split_once(' ').unwrap_or((seg, ""));
            match word {
                "" | "true" | "mkdir" | "sleep" => {}
                "echo" => {
                    out.extend_from_slice(rest.as_bytes());
                    out.push(b'\n');
                }
                "cd" => cwd = rest.to_string(),
                "export" => {
                    if let Some((k, v)) = rest.split_once('=') {
                        env.insert(k.to_string(), v.to_string());
                    }
                }
                "printf" => {
                    let v = env.get("BENCH_STATE").map_or("unset", String::as_str);
                    out.extend_from_slice(format!("{cwd}|{v}\n").as_bytes());
                }
                "exit" => {
                    code = rest.trim().parse().unwrap_or(2);
                    break;
                }
                _ => {
                    code = 127;
                    break;
                }
            }
        }
        g.sessions.insert(session.to_string(), (cwd.clone(), env));
        Ok((code, out, cwd))
    }
}

#[async_trait]
impl Sandbox for MemorySandbox {
    fn id(&self) -> &str {
        &self.id
    }
    fn backend_name(&self) -> &'static str {
        "memory"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            background: true,
            ..Default::default()
        }
    }
    async fn ensure_ready(&self) -> Result<()> {
        Ok(())
    }
    async fn destroy(&self) -> Result<()> {
        self.lock()?.files.clear();
        Ok(())
    }
    async fn exec(&self, _: &str, _: &str, _: &str) -> Result<ExecOutcome> {
        Err(SandboxError::unsupported(&self.id, "exec", "memory double"))
    }
    async fn exec_stateful(&self, req: StatefulExec) -> Result<ShellResult> {
        self.tick("exec_stateful").await?;
        let (exit_code, stdout, cwd) = self.interpret(&req.session, &req.command)?;
        let mut background_pid = None;
        if req.background {
            let mut g = self.lock()?;
            g.next_pid += 1;
            let pid = 1000 + g.next_pid;
            g.bg.insert(
                pid,
                BackgroundProcess {
                    pid,
                    session: req.session.clone(),
                    command: req.command.clone(),
                    running: true,
                    started_at: Utc::now(),
                },
            );
            background_pid = Some(pid);
        }
        Ok(ShellResult {
            exit_code,
            stdout,
            stderr: Vec::new(),
            output_truncated: false,
            cwd,
            duration: self.cfg.latency,
            background_pid,
        })
    }
    async fn view_shell(&self, _: &str) -> Result<ShellView> {
        Err(SandboxError::unsupported(
            &self.id,
            "view_shell",
            "memory double",
        ))
    }
    async fn wait_for_process(&self, _: &str, _: Duration) -> Result<i32> {
        Err(SandboxError::unsupported(
            &self.id,
            "wait_for_process",
            "memory double",
        ))
    }
    async fn write_to_process(&self, _: &str, _: &[u8], _: bool) -> Result<()> {
        Err(SandboxError::unsupported(
            &self.id,
            "write_to_process",
            "memory double",
        ))
    }
    async fn kill_process(&self, _: &str) -> Result<()> {
        Err(SandboxError::unsupported(
            &self.id,
            "kill_process",
            "memory double",
        ))
    }
    async fn list_background_processes(&self, s: Option<&str>) -> Result<Vec<BackgroundProcess>> {
        let g = self.lock()?;
        Ok(g.bg
            .values()
            .filter(|p| s.is_none_or(|s| p.session == s))
            .cloned()
            .collect())
    }
    async fn kill_background_process(&self, sel: ProcessSelector) -> Result<Vec<u32>> {
        self.tick("kill_background_process").await?;
        let mut g = self.lock()?;
        let pids: Vec<u32> =
            g.bg.values()
                .filter(|p| match &sel {
                    ProcessSelector::Pid(pid) => p.pid == *pid,
                    ProcessSelector::Session(s) => &p.session == s,
                    ProcessSelector::Pattern(t) => p.command.contains(t.as_str()),
                })
                .map(|p| p.pid)
                .collect();
        for p in &pids {
            g.bg.remove(p);
        }
        Ok(pids)
    }
    async fn get_background_logs(&self, pid: u32) -> Result<Vec<u8>> {
        Err(SandboxError::not_found(
            &self.id,
            "get_background_logs",
            pid.to_string(),
        ))
    }
    async fn file_read(&self, s: &str, path: &str, _opts: ReadOptions) -> Result<FileContent> {
        self.tick("file_read").await?;
        let p = self.abs(s, path)?;
        let g = self.lock()?;
        let content = g
            .files
            .get(&p)
            .cloned()
            .ok_or_else(|| SandboxError::not_found(&self.id, "file_read", p.clone()))?;
        Ok(FileContent {
            content,
            truncated: false,
        })
    }
    async fn file_write(&self, s: &str, path: &str, content: &[u8], _: WriteOptions) -> Result<()> {
        self.tick("file_write").await?;
        let p = self.abs(s, path)?;
        self.lock()?.files.insert(p, content.to_vec());
        Ok(())
    }
    async fn file_exists(&self, s: &str, path: &str) -> Result<bool> {
        self.tick("file_exists").await?;
        let p = self.abs(s, path)?;
        let g = self.lock()?;
        let prefix = format!("{p}/");
        Ok(g.files.contains_key(&p) || g.files.keys().any(|k| k.starts_with(&prefix)))
    }
    async fn file_delete(&self, s: &str, path: &str) -> Result<()> {
        self.tick("file_delete").await?;
        let p = self.abs(s, path)?;
        self.lock()?
            .files
            .remove(&p)
            .map(|_| ())
            .ok_or_else(|| SandboxError::not_found(&self.id, "file_delete", p))
    }
    async fn file_list(&self, s: &str, path: &str) -> Result<Vec<FileEntry>> {
        self.tick("file_list").await?;
        let p = self.abs(s, path)?;
        let prefix = format!("{p}/");
        let g = self.lock()?;
        Ok(g.files
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&prefix)?;
                (!rest.contains('/')).then(|| FileEntry {
                    name: rest.to_string(),
                    kind: FileKind::File,
                    size: v.len() as u64,
                    mtime: Utc::now(),
                })
            })
            .collect())
    }
    async fn file_find(&self, _: &str, _: &str, _: &str) -> Result<Vec<String>> {
        Err(SandboxError::unsupported(
            &self.id,
            "file_find",
            "memory double",
        ))
    }
    async fn file_search(&self, s: &str, path: &str, pattern: &str) -> Result<Vec<SearchMatch>> {
        self.tick("file_search").await?;
        let re = regex::bytes::Regex::new(pattern)
            .map_err(|e| SandboxError::invalid(&self.id, "file_search", e.to_string()))?;
        let c = self
            .file_read(s, path, ReadOptions::default())
            .await?
            .content;
        Ok(c.split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| re.is_match(l))
            .map(|(line, text)| SearchMatch {
                line,
                text: text.to_vec(),
            })
            .collect())
    }
    async fn file_replace(&self, _: &str, _: &str, _: &[u8], _: &[u8]) -> Result<u64> {
        Err(SandboxError::unsupported(
            &self.id,
            "file_replace",
            "memory double",
        ))
    }
    async fn file_upload(&self, s: &str, path: &str, mut body: UploadBody) -> Result<u64> {
        self.tick("file_upload").await?;
        let p = self.abs(s, path)?;
        let mut buf = Vec::new();
        while let Some(c) = body.stream.next().await {
            let c = c?;
            if buf.len() + c.len() > MAX_FILE {
                return Err(SandboxError::unsupported(
                    &self.id,
                    "file_upload",
                    format!("the memory double keeps files up to {MAX_FILE} bytes"),
                ));
            }
            buf.extend_from_slice(&c);
        }
        let n = buf.len() as u64;
        self.lock()?.files.insert(p, buf);
        Ok(n)
    }
    async fn file_download(&self, s: &str, path: &str) -> Result<ByteStream> {
        self.tick("file_download").await?;
        let p = self.abs(s, path)?;
        let data = self
            .lock()?
            .files
            .get(&p)
            .cloned()
            .ok_or_else(|| SandboxError::not_found(&self.id, "file_download", p))?;
        let chunks: Vec<Result<Bytes>> = data
            .chunks(256 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}
