//! `DockerTransport`: the transport primitives over the engine's exec and archive APIs.
//!
//! Commands go to the sandbox's agent (`sandbox-executor serve`, see [`super::agent`]) when the
//! image has one, and otherwise each becomes its own engine exec. Files move through the
//! engine's archive API either way.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sandbox_executor::exec::Request;
use tokio::io::AsyncWriteExt;

use super::agent::{Agent, Started, exit_code};
use super::error::map_bollard;
use super::tar::{BLOCK, FileExtractor, file_header, padding};
use crate::paths;
use crate::protocol::{ByteStream, ErrorKind, Result, SandboxError, UploadBody};
use crate::transport::{CappedBuf, RawExec, RawOutput, Transport, output_from_response};

/// Runs commands and moves files in one container through the Docker engine API.
#[derive(Clone)]
pub struct DockerTransport {
    docker: Docker,
    container: String,
    sandbox_id: String,
    agent: Arc<tokio::sync::Mutex<AgentSlot>>,
}

/// The agent connection of a transport (shared by its clones).
enum AgentSlot {
    /// Not started yet (or the last one went away): the next command starts one.
    Idle,
    /// An open connection.
    Live(Arc<Agent>),
    /// Not used: turned off, or the container cannot run it.
    Off,
}

/// How long the agent waits past the harness's deadline before it kills a command's group.
const AGENT_GRACE: Duration = Duration::from_secs(2);

/// Exit code of the upload-finishing script when the target is a directory.
const EC_TARGET_IS_DIR: i32 = 201;

/// Moves an uploaded temp file over the target. $1 temp, $2 target.
const UPLOAD_FINISH: &str = r#"if [ -d "$2" ]; then rm -f -- "$1"; exit 201; fi
mv -f -- "$1" "$2"
"#;

/// Resolves a download source: prints the real path of a regular file; 200 missing, 201
/// directory, 202 other. $1 path. (The `x` keeps a trailing newline of the name from `$(...)`.)
const DOWNLOAD_CHECK: &str = r#"[ -e "$1" ] || exit 200
[ -d "$1" ] && exit 201
[ -f "$1" ] || exit 202
__r=$(readlink -fn -- "$1" && printf x) || exit 200
printf '%s' "${__r%x}"
"#;

impl DockerTransport {
    /// A transport for `container` (name or id) of sandbox `sandbox_id`.
    pub fn new(
        docker: Docker,
        container: impl Into<String>,
        sandbox_id: impl Into<String>,
    ) -> Self {
        DockerTransport {
            docker,
            container: container.into(),
            sandbox_id: sandbox_id.into(),
            agent: Arc::new(tokio::sync::Mutex::new(AgentSlot::Idle)),
        }
    }

    /// The same transport with one engine exec per command (no agent).
    pub fn without_agent(self) -> Self {
        DockerTransport {
            agent: Arc::new(tokio::sync::Mutex::new(AgentSlot::Off)),
            ..self
        }
    }

    /// The agent to send commands to, started when needed; `None` means exec per command.
    async fn agent(&self, op: &str) -> Result<Option<Arc<Agent>>> {
        let mut slot = self.agent.lock().await;
        match &*slot {
            AgentSlot::Live(a) if a.is_alive() => return Ok(Some(a.clone())),
            AgentSlot::Off => return Ok(None),
            _ => {}
        }
        match Agent::start(&self.docker, &self.container, &self.sandbox_id, op).await? {
            Started::Ready(a) => {
                let a = Arc::new(a);
                *slot = AgentSlot::Live(a.clone());
                Ok(Some(a))
            }
            Started::Unavailable(why) => {
                tracing::info!(sandbox = %self.sandbox_id, %why, "no sandbox agent: one engine exec per command");
                *slot = AgentSlot::Off;
                Ok(None)
            }
        }
    }

    /// The error for a command whose agent went away before answering.
    async fn agent_lost(&self, op: &str) -> SandboxError {
        match self.docker.inspect_container(&self.container, None).await {
            Err(e) => self.map(op, e),
            Ok(info) if info.state.as_ref().and_then(|s| s.running) != Some(true) => self.err(
                ErrorKind::NotFound,
                op,
                "the sandbox stopped while the command ran",
            ),
            Ok(_) => self.err(
                ErrorKind::Backend,
                op,
                "the sandbox agent exited before answering (killed from inside the sandbox?); \
                 the command may have run; the next command starts a new agent",
            ),
        }
    }

    async fn run_by_agent(&self, op: &str, agent: &Agent, req: RawExec) -> Result<RawOutput> {
        let request = Request {
            id: uuid::Uuid::new_v4().simple().to_string(),
            argv: req.argv,
            stdin_b64: req.stdin.as_ref().map(|b| B64.encode(b)),
            deadline_ms: (req.deadline + AGENT_GRACE).as_millis() as u64,
        };
        match agent
            .call(&self.sandbox_id, op, &request, req.deadline)
            .await?
        {
            Some(resp) => output_from_response(&self.sandbox_id, op, resp),
            None => Err(self.agent_lost(op).await),
        }
    }

    /// The container name.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn map(&self, op: &str, e: bollard::errors::Error) -> SandboxError {
        map_bollard(&self.sandbox_id, op, e)
    }

    fn err(&self, kind: ErrorKind, op: &str, detail: impl Into<String>) -> SandboxError {
        SandboxError::new(kind, &self.sandbox_id, op, detail)
    }

    async fn run_inner(&self, op: &str, req: RawExec) -> Result<RawOutput> {
        let has_stdin = req.stdin.is_some();
        let exec = self
            .docker
            .create_exec(
                &self.container,
                CreateExecOptions::<String> {
                    cmd: Some(req.argv),
                    attach_stdin: Some(has_stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.map(op, e))?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(64 * 1024),
                }),
            )
            .await
            .map_err(|e| self.map(op, e))?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(self.err(ErrorKind::Backend, op, "the exec started detached"));
        };
        let stdin = req.stdin;
        let writer = async move {
            let mut input = input;
            if let Some(data) = stdin {
                // The process may exit without reading its stdin; that is not an error.
                let _ = input.write_all(&data).await;
                let _ = input.shutdown().await;
            }
            // Keep the write half alive until the output is drained when there is no stdin.
            input
        };
        let reader = async {
            let mut out = CappedBuf::new();
            let mut err = CappedBuf::new();
            while let Some(item) = output.next().await {
                match item.map_err(|e| self.map(op, e))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        out.push(&message)
                    }
                    LogOutput::StdErr { message } => err.push(&message),
                    LogOutput::StdIn { .. } => {}
                }
            }
            Ok::<_, SandboxError>((out, err))
        };
        tokio::pin!(writer, reader);
        // When the output ends first the process is gone: a writer still blocked on stdin the
        // process never read (e.g. `cat` failing on a full disk) is abandoned, not waited for.
        let read = tokio::select! {
            r = &mut reader => r,
            input = &mut writer => {
                let _keep = input;
                reader.await
            }
        };
        let (out, err) = read?;
        let exit_code = exit_code(&self.docker, &exec.id).await.ok_or_else(|| {
            self.err(
                ErrorKind::Backend,
                op,
                "the exec's output ended but the engine reports no exit status",
            )
        })?;
        let (stdout, t1) = out.finish();
        let (stderr, t2) = err.finish();
        Ok(RawOutput {
            exit_code: exit_code as i32,
            stdout,
            stderr,
            truncated: t1 || t2,
        })
    }
}

/// The tar stream of one file: header, content (checked against `len`), padding, end blocks.
pub fn tar_stream(
    name: String,
    len: u64,
    content: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let mtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = file_header(&name, len, 0o644, mtime)
        .map(|h| Bytes::copy_from_slice(&h))
        .map_err(std::io::Error::other);
    let head = futures::stream::once(async move { header });
    let mut seen: u64 = 0;
    let body = content.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > len {
            return Err(std::io::Error::other(format!(
                "the upload stream is longer than its declared length {len}"
            )));
        }
        Ok(chunk)
    });
    let checked = body.chain(futures::stream::once(async move { Ok(Bytes::new()) }));
    // The tail verifies the total length before the padding is sent.
    let mut total: u64 = 0;
    let checked = checked.map(move |r: std::io::Result<Bytes>| {
        let b = r?;
        if b.is_empty() {
            if total != len {
                return Err(std::io::Error::other(format!(
                    "the upload stream ended after {total} of {len} bytes"
                )));
            }
            return Ok(Bytes::from(vec![0u8; padding(len) + 2 * BLOCK]));
        }
        total += b.len() as u64;
        Ok(b)
    });
    head.chain(checked)
}

#[async_trait]
impl Transport for DockerTransport {
    fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    async fn run(&self, op: &str, req: RawExec) -> Result<RawOutput> {
        if let Some(agent) = self.agent(op).await? {
            return self.run_by_agent(op, &agent, req).await;
        }
        let deadline = req.deadline;
        match tokio::time::timeout(deadline, self.run_inner(op, req)).await {
            Ok(r) => r,
            Err(_) => Err(self.err(
                ErrorKind::Timeout,
                op,
                format!("the engine exec did not finish within {deadline:?}"),
            )),
        }
    }

    async fn upload(&self, op: &str, path: &str, body: UploadBody) -> Result<u64> {
        let dir = paths::parent(path).to_string();
        let tmp_name = format!(".sandbox-harness-up.{}", uuid::Uuid::new_v4().simple());
        let tmp_path = if dir == "/" {
            format!("/{tmp_name}")
        } else {
            format!("{dir}/{tmp_name}")
        };
        let to_io = |e: SandboxError| std::io::Error::other(e.to_string());
        // Spool to a host temp file when the length is unknown (bounded memory).
        let _spool_guard;
        let (len, content): (
            u64,
            futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
        ) = match body.len {
            Some(len) => (len, body.stream.map(move |r| r.map_err(to_io)).boxed()),
            None => {
                let io_err = |e: std::io::Error| {
                    self.err(ErrorKind::Backend, op, format!("spooling the upload: {e}"))
                };
                let spool = tempfile::NamedTempFile::new().map_err(io_err)?;
                let mut f = tokio::fs::File::from_std(spool.reopen().map_err(io_err)?);
                let mut stream = body.stream;
                let mut len = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| e.with_op(op))?;
                    f.write_all(&chunk).await.map_err(io_err)?;
                    len += chunk.len() as u64;
                }
                f.flush().await.map_err(io_err)?;
                drop(f);
                let reader = tokio::fs::File::open(spool.path()).await.map_err(io_err)?;
                _spool_guard = spool;
                (
                    len,
                    tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).boxed(),
                )
            }
        };
        let tar = tar_stream(tmp_name, len, content);
        let put = self
            .docker
            .upload_to_container(
                &self.container,
                Some(UploadToContainerOptions {
                    path: dir.clone(),
                    ..Default::default()
                }),
                bollard::body_try_stream(tar),
            )
            .await
            .map_err(|e| self.map(op, e));
        if let Err(e) = put {
            // Nothing appears at the target; remove any partial temp file.
            let _ = self
                .run(
                    op,
                    RawExec::new(
                        ["rm", "-f", "--", tmp_path.as_str()],
                        Duration::from_secs(30),
                    ),
                )
                .await;
            return Err(e);
        }
        let out = self
            .run(
                op,
                RawExec::new(
                    ["sh", "-c", UPLOAD_FINISH, "sh", tmp_path.as_str(), path],
                    Duration::from_secs(60),
                ),
            )
            .await?;
        match out.exit_code {
            0 => Ok(len),
            EC_TARGET_IS_DIR => Err(self.err(
                ErrorKind::InvalidInput,
                op,
                format!("{path} is a directory"),
            )),
            c => Err(self.err(
                if String::from_utf8_lossy(&out.stderr).contains("ermission denied") {
                    ErrorKind::Permission
                } else {
                    ErrorKind::Backend
                },
                op,
                format!(
                    "moving the upload into place failed (exit {c}): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )),
        }
    }

    async fn download(&self, op: &str, path: &str) -> Result<ByteStream> {
        let out = self
            .run(
                op,
                RawExec::new(
                    ["sh", "-c", DOWNLOAD_CHECK, "sh", path],
                    Duration::from_secs(60),
                ),
            )
            .await?;
        match out.exit_code {
            0 => {}
            200 => {
                return Err(self.err(ErrorKind::NotFound, op, format!("{path} does not exist")));
            }
            201 => {
                return Err(self.err(
                    ErrorKind::InvalidInput,
                    op,
                    format!("{path} is a directory"),
                ));
            }
            202 => {
                return Err(self.err(
                    ErrorKind::InvalidInput,
                    op,
                    format!("{path} is not a regular file"),
                ));
            }
            c => {
                return Err(self.err(
                    ErrorKind::Backend,
                    op,
                    format!(
                        "checking {path} failed (exit {c}): {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ));
            }
        }
        let real = String::from_utf8_lossy(&out.stdout).into_owned();
        let real = if real.is_empty() {
            path.to_string()
        } else {
            real
        };
        let mut archive = Box::pin(self.docker.download_from_container(
            &self.container,
            Some(DownloadFromContainerOptions { path: real.clone() }),
        ));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(8);
        let sid = self.sandbox_id.clone();
        let op_name = op.to_string();
        tokio::spawn(async move {
            let mut x = FileExtractor::new();
            while let Some(item) = archive.next().await {
                let chunk = match item {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(map_bollard(&sid, &op_name, e))).await;
                        return;
                    }
                };
                let mut pieces: Vec<Bytes> = Vec::new();
                let fed = x.feed(&chunk, &mut |b| pieces.push(Bytes::copy_from_slice(b)));
                for p in pieces {
                    if tx.send(Ok(p)).await.is_err() {
                        return;
                    }
                }
                if let Err(e) = fed {
                    let _ = tx
                        .send(Err(SandboxError::new(
                            ErrorKind::Backend,
                            &sid,
                            &op_name,
                            format!("reading the archive of {real}: {e}"),
                        )))
                        .await;
                    return;
                }
                if x.done() {
                    return;
                }
            }
            if !x.done() {
                let _ = tx
                    .send(Err(SandboxError::new(
                        ErrorKind::Network,
                        &sid,
                        &op_name,
                        format!("the archive of {real} ended early"),
                    )))
                    .await;
            }
        });
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })))
    }
}

/// Reads a whole small stream into memory (helper for tests and tools).
pub async fn collect_stream(mut s: ByteStream) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(c) = s.next().await {
        v.extend_from_slice(&c?);
    }
    Ok(v)
}
