//! The connection to the in-sandbox agent (`sandbox-executor serve`): one engine exec whose
//! stdin and stdout carry JSON lines, so each command is a round trip on an open stream rather
//! than a new engine exec (which costs tens of milliseconds of container-runtime work).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;
use sandbox_executor::exec::{Request, Response};
use sandbox_executor::serve::{Hello, PROTOCOL};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::error::map_bollard;
use crate::protocol::{ErrorKind, Result, SandboxError};

/// Where the agent binary sits in the harness's images.
pub const AGENT_PATH: &str = crate::images::EXECUTOR_PATH;

/// How long a starting agent has to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(15);

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>;

/// An open agent connection.
pub struct Agent {
    input: tokio::sync::Mutex<Option<Pin<Box<dyn AsyncWrite + Send>>>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
    pid: u32,
}

/// What starting an agent gave.
pub enum Started {
    /// The agent answered its hello.
    Ready(Agent),
    /// The container has no usable agent (a foreign image): fall back to one exec per command.
    Unavailable(String),
}

/// The output stream of the agent's exec.
type AgentOutput = Pin<
    Box<dyn futures::Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// The agent's reader task: the first JSON line is its hello (sent to `hello_tx`, or what the
/// agent printed instead when the stream ends first), every later line a reply handed to its
/// waiter. When the stream ends the agent is marked dead and every waiter dropped.
async fn read_agent_output(
    mut output: AgentOutput,
    pending: Pending,
    alive: Arc<AtomicBool>,
    sandbox: String,
    hello_tx: oneshot::Sender<std::result::Result<Hello, String>>,
) {
    let mut hello_tx = Some(hello_tx);
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = String::new();
    while let Some(item) = output.next().await {
        let message = match item {
            Ok(LogOutput::StdOut { message }) => message,
            Ok(LogOutput::StdErr { message }) => {
                let text = String::from_utf8_lossy(&message);
                tracing::debug!(sandbox = %sandbox, stderr = %text.trim_end(), "agent stderr");
                if hello_tx.is_some() && seen.len() < 4096 {
                    seen.push_str(&text);
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(sandbox = %sandbox, error = %e, "agent stream failed");
                break;
            }
        };
        // Only the new bytes are searched: an answer line can be tens of MiB.
        let from = buf.len();
        buf.extend_from_slice(&message);
        let mut search_from = from;
        while let Some(at) = buf[search_from..].iter().position(|b| *b == b'\n') {
            let end = search_from + at;
            let line: Vec<u8> = buf.drain(..=end).collect();
            search_from = 0;
            if let Some(tx) = hello_tx.take() {
                match serde_json::from_slice::<Hello>(&line) {
                    Ok(h) => {
                        let _ = tx.send(Ok(h));
                    }
                    Err(_) => {
                        seen.push_str(&String::from_utf8_lossy(&line));
                        hello_tx = Some(tx);
                    }
                }
                continue;
            }
            match serde_json::from_slice::<Response>(&line) {
                Ok(resp) => {
                    let waiter = pending.lock().ok().and_then(|mut p| p.remove(&resp.id));
                    if let Some(w) = waiter {
                        let _ = w.send(resp);
                    } else if let Some(err) = resp.error {
                        tracing::warn!(sandbox = %sandbox, error = %err, "the agent refused a request");
                    }
                }
                Err(e) => {
                    tracing::warn!(sandbox = %sandbox, error = %e, "unreadable line from the agent")
                }
            }
        }
    }
    alive.store(false, Ordering::SeqCst);
    if let Ok(mut p) = pending.lock() {
        // Dropping the senders tells every waiter the agent is gone.
        p.clear();
    }
    if let Some(tx) = hello_tx {
        let _ = tx.send(Err(seen));
    }
}

impl Agent {
    /// Starts `sandbox-executor serve` in `container` and waits for its hello.
    pub async fn start(
        docker: &Docker,
        container: &str,
        sandbox: &str,
        op: &str,
    ) -> Result<Started> {
        let exec = docker
            .create_exec(
                container,
                CreateExecOptions::<String> {
                    cmd: Some(vec![AGENT_PATH.into(), "serve".into()]),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_bollard(sandbox, op, e))?;
        let started = docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(256 * 1024),
                }),
            )
            .await
            .map_err(|e| map_bollard(sandbox, op, e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(SandboxError::backend(
                sandbox,
                op,
                "the agent exec started detached",
            ));
        };
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (hello_tx, hello_rx) = oneshot::channel::<std::result::Result<Hello, String>>();
        let reader = tokio::spawn(read_agent_output(
            output,
            pending.clone(),
            alive.clone(),
            sandbox.to_string(),
            hello_tx,
        ));
        let hello = match tokio::time::timeout(HELLO_WITHIN, hello_rx).await {
            Ok(Ok(Ok(h))) => h,
            Ok(Ok(Err(seen))) => {
                // The exec ended without a hello: find out whether the binary is missing.
                let code = exit_code(docker, &exec.id).await;
                if matches!(code, Some(126 | 127)) {
                    return Ok(Started::Unavailable(format!(
                        "{AGENT_PATH} cannot run in the container (exit {}): {}",
                        code.unwrap_or_default(),
                        seen.trim()
                    )));
                }
                return Err(SandboxError::backend(
                    sandbox,
                    op,
                    format!(
                        "the sandbox agent exited before its hello ({code:?}): {}",
                        seen.trim()
                    ),
                ));
            }
            Ok(Err(_)) => {
                return Err(SandboxError::backend(
                    sandbox,
                    op,
                    "the agent reader stopped",
                ));
            }
            Err(_) => {
                reader.abort();
                return Err(SandboxError::timeout(
                    sandbox,
                    op,
                    format!("the sandbox agent did not say hello within {HELLO_WITHIN:?}"),
                ));
            }
        };
        if hello.protocol != PROTOCOL {
            reader.abort();
            return Ok(Started::Unavailable(format!(
                "the container's agent speaks protocol {}, this harness {PROTOCOL}",
                hello.protocol
            )));
        }
        tracing::debug!(sandbox = %sandbox, pid = hello.pid, "sandbox agent ready");
        Ok(Started::Ready(Agent {
            input: tokio::sync::Mutex::new(Some(input)),
            pending,
            alive,
            reader,
            pid: hello.pid,
        }))
    }

    /// True while the agent's stream is open.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// The agent's pid inside the container.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends one request and waits up to `wait` for its answer. `Ok(None)` means the agent
    /// went away before answering (the command may or may not have run).
    pub async fn call(
        &self,
        sandbox: &str,
        op: &str,
        req: &Request,
        wait: Duration,
    ) -> Result<Option<Response>> {
        let mut line = serde_json::to_vec(req)
            .map_err(|e| SandboxError::backend(sandbox, op, format!("encoding a request: {e}")))?;
        line.push(b'\n');
        let (tx, rx) = oneshot::channel();
        let forget = || {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&req.id);
            }
        };
        match self.pending.lock() {
            Ok(mut p) => {
                p.insert(req.id.clone(), tx);
            }
            Err(_) => return Err(SandboxError::backend(sandbox, op, "agent state poisoned")),
        }
        // The reader marks the agent dead before it drops the waiters: checking after the
        // insert catches a reader that ended in between.
        if !self.is_alive() {
            forget();
            return Ok(None);
        }
        let wrote = async {
            let mut guard = self.input.lock().await;
            let input = guard
                .as_mut()
                .ok_or_else(|| std::io::Error::other("agent closed"))?;
            input.write_all(&line).await?;
            input.flush().await
        };
        let outcome = tokio::time::timeout(wait, async {
            if let Err(e) = wrote.await {
                tracing::debug!(sandbox = %sandbox, error = %e, "writing to the agent failed");
                return None;
            }
            rx.await.ok()
        })
        .await;
        match outcome {
            Ok(answer) => {
                if answer.is_none() {
                    forget();
                }
                Ok(answer)
            }
            Err(_) => {
                forget();
                Err(SandboxError::new(
                    ErrorKind::Timeout,
                    sandbox,
                    op,
                    format!("the command did not finish within {wait:?}"),
                ))
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Closing the stream ends the agent's stdin; it finishes what runs and exits.
        self.reader.abort();
        if let Some(mut input) = self.input.get_mut().take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = input.shutdown().await;
            });
        }
    }
}

/// The exit code of a finished exec (polled briefly: the engine records it shortly after the
/// stream ends).
pub async fn exit_code(docker: &Docker, exec_id: &str) -> Option<i64> {
    for attempt in 0..100 {
        let info = docker.inspect_exec(exec_id).await.ok()?;
        if info.running != Some(true) {
            return info.exit_code;
        }
        tokio::time::sleep(Duration::from_millis(if attempt < 10 { 2 } else { 20 })).await;
    }
    None
}
