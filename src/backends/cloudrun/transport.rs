//! The Cloud Run transport: commands go to a session worker (a job execution running
//! `sandbox-executor worker`) through the state bucket; workspace transfers go straight through
//! the Cloud Storage JSON API.
//!
//! Warm path: a worker stays up until its idle timeout, so a command costs one object write and
//! a few polls. Cold path: when no worker is alive the transport starts an execution and
//! queues the request at once; the worker takes it on boot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::StreamExt;
use sandbox_executor::worker::{Heartbeat, Request, Response};
use tokio::sync::Mutex;

use crate::gcp::run::RunClient;
use crate::gcp::storage::{ListOptions, StorageClient, StorageError, WriteOptions};
use crate::paths;
use crate::protocol::{ByteStream, ErrorKind, Result, SandboxError, UploadBody};
use crate::transport::{RawExec, RawOutput, Transport, output_from_response};

/// Where the state volume (`sessions/<id>/`) is mounted in the worker.
pub const STATE_MOUNT: &str = "/sandbox-state";
/// Where the workspace volume (`sessions/<id>/workspace/`) is mounted in the worker.
pub const WORKSPACE_MOUNT: &str = "/workspace";

/// How often a waiting request re-checks that a worker is there to serve it.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);
/// How long to wait for a started execution's worker to take a request before giving up.
const COLD_START_LIMIT: Duration = Duration::from_secs(120);

/// The object prefix of a sandbox: `sessions/<id>/`.
pub fn sandbox_prefix(sandbox_id: &str) -> String {
    format!("sessions/{sandbox_id}/")
}

/// Maps an absolute, normalised path inside `/workspace` to its object name; `None` for paths
/// outside the workspace and for the workspace root itself.
pub fn workspace_object(sandbox_id: &str, path: &str) -> Option<String> {
    let rel = path.strip_prefix(WORKSPACE_MOUNT)?.strip_prefix('/')?;
    if rel.is_empty() {
        return None;
    }
    Some(format!("{}workspace/{rel}", sandbox_prefix(sandbox_id)))
}

#[derive(Debug, Default)]
struct WorkerView {
    /// The execution we started last (full resource name).
    execution: Option<String>,
    /// When we started it.
    started_at: Option<Instant>,
    /// When a heartbeat last showed a running worker.
    seen_alive: Option<Instant>,
}

/// Commands and transfers of one Cloud Run sandbox.
pub struct CloudRunTransport {
    sandbox_id: String,
    storage: StorageClient,
    run: RunClient,
    bucket: String,
    job: String,
    poll: Duration,
    worker: Mutex<WorkerView>,
}

impl CloudRunTransport {
    /// A transport for sandbox `sandbox_id` whose job is `job` (full resource name).
    pub fn new(
        sandbox_id: impl Into<String>,
        storage: StorageClient,
        run: RunClient,
        bucket: impl Into<String>,
        job: impl Into<String>,
        poll: Duration,
    ) -> Self {
        CloudRunTransport {
            sandbox_id: sandbox_id.into(),
            storage,
            run,
            bucket: bucket.into(),
            job: job.into(),
            poll,
            worker: Mutex::new(WorkerView::default()),
        }
    }

    fn object(&self, rel: &str) -> String {
        format!("{}{rel}", sandbox_prefix(&self.sandbox_id))
    }

    fn serr(&self, op: &str, e: StorageError) -> SandboxError {
        e.into_sandbox_error(&self.sandbox_id, op)
    }

    async fn heartbeat(&self, op: &str) -> Result<Option<Heartbeat>> {
        match self
            .storage
            .download(&self.bucket, &self.object("worker.json"), None)
            .await
        {
            Ok(d) => {
                let body = d.collect().await.map_err(|e| self.serr(op, e))?;
                Ok(serde_json::from_slice(&body).ok())
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.serr(op, e)),
        }
    }

    fn alive(hb: &Heartbeat) -> bool {
        let age = sandbox_executor::worker::now_ms().saturating_sub(hb.beat_ms);
        hb.status == "running" && Duration::from_millis(age) < sandbox_executor::worker::STALE_AFTER
    }

    /// Makes sure a worker is running or starting; starts an execution when none is.
    async fn ensure_worker(&self, op: &str, force: bool) -> Result<()> {
        let mut view = self.worker.lock().await;
        if !force
            && let Some(t) = view.seen_alive
            && t.elapsed() < Duration::from_secs(2)
        {
            return Ok(());
        }
        if !force
            && let Some(hb) = self.heartbeat(op).await?
            && Self::alive(&hb)
        {
            view.seen_alive = Some(Instant::now());
            return Ok(());
        }
        // A worker we started may still be booting: don't start a second one.
        if !force
            && let (Some(exec), Some(t)) = (&view.execution, view.started_at)
            && t.elapsed() < COLD_START_LIMIT
        {
            match self.run.get_execution(exec).await {
                Ok(e) if !e.is_done() => return Ok(()),
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into_sandbox_error(&self.sandbox_id, op)),
            }
        }
        let started = Instant::now();
        let operation = self
            .run
            .run_job(&self.job, None)
            .await
            .map_err(|e| e.into_sandbox_error(&self.sandbox_id, op))?;
        let execution = operation.execution().map(|e| e.name).unwrap_or_default();
        tracing::info!(
            target: "sandbox_harness::events",
            event = "job_execution_started",
            backend = "cloudrun",
            sandbox_id = %self.sandbox_id,
            execution_id = %execution,
            duration_seconds = started.elapsed().as_secs_f64(),
            timestamp = %chrono::Utc::now().to_rfc3339(),
        );
        view.execution = Some(execution);
        view.started_at = Some(Instant::now());
        view.seen_alive = None;
        Ok(())
    }

    /// Checks, while a request waits, that something will serve it; restarts the worker when
    /// the one we counted on stopped before claiming the request.
    async fn check_liveness(&self, op: &str, inbox_name: &str) -> Result<()> {
        let execution = self.worker.lock().await.execution.clone();
        if let Some(hb) = self.heartbeat(op).await?
            && Self::alive(&hb)
        {
            self.worker.lock().await.seen_alive = Some(Instant::now());
            return Ok(());
        }
        let finished = match &execution {
            Some(name) => match self.run.get_execution(name).await {
                Ok(e) => e.is_done(),
                Err(e) if e.is_not_found() => true,
                Err(e) => return Err(e.into_sandbox_error(&self.sandbox_id, op)),
            },
            None => true,
        };
        if !finished {
            return Ok(());
        }
        let still_queued = match self.storage.get_object(&self.bucket, inbox_name).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(self.serr(op, e)),
        };
        if still_queued {
            tracing::debug!(sandbox = %self.sandbox_id, "worker stopped before taking a request; starting another");
            self.ensure_worker(op, true).await
        } else {
            Err(SandboxError::backend(
                &self.sandbox_id,
                op,
                format!(
                    "the worker execution {} ended while running the request",
                    execution.unwrap_or_default()
                ),
            ))
        }
    }
}

#[async_trait]
impl Transport for CloudRunTransport {
    fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    async fn run(&self, op: &str, req: RawExec) -> Result<RawOutput> {
        let started = Instant::now();
        let id = format!(
            "{:013}-{}",
            sandbox_executor::worker::now_ms(),
            uuid::Uuid::new_v4().simple()
        );
        let request = Request {
            id: id.clone(),
            argv: req.argv,
            stdin_b64: req.stdin.as_ref().map(|b| B64.encode(b)),
            deadline_ms: req.deadline.as_millis() as u64,
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| SandboxError::backend(&self.sandbox_id, op, e.to_string()))?;
        self.ensure_worker(op, false).await?;
        let inbox = self.object(&format!("inbox/{id}.json"));
        let outbox = self.object(&format!("outbox/{id}.json"));
        self.storage
            .insert_object(
                &self.bucket,
                &inbox,
                Bytes::from(body),
                &WriteOptions {
                    content_type: Some("application/json".into()),
                    if_generation_match: Some(0),
                    ..WriteOptions::default()
                },
            )
            .await
            .map_err(|e| self.serr(op, e))?;
        // The worker enforces the deadline itself; allow it time to start and to answer.
        let limit = req.deadline + COLD_START_LIMIT;
        let mut last_check = Instant::now();
        loop {
            match self.storage.download(&self.bucket, &outbox, None).await {
                Ok(d) => {
                    let bytes = d.collect().await.map_err(|e| self.serr(op, e))?;
                    let _ = self
                        .storage
                        .delete_object(&self.bucket, &outbox, &WriteOptions::default())
                        .await;
                    let resp: Response = serde_json::from_slice(&bytes).map_err(|e| {
                        SandboxError::backend(
                            &self.sandbox_id,
                            op,
                            format!("bad worker response: {e}"),
                        )
                    })?;
                    let out = output_from_response(&self.sandbox_id, op, resp)?;
                    self.worker.lock().await.seen_alive = Some(Instant::now());
                    tracing::debug!(sandbox = %self.sandbox_id, op, ms = started.elapsed().as_millis() as u64, "request served");
                    return Ok(out);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(self.serr(op, e)),
            }
            if started.elapsed() > limit {
                return Err(SandboxError::timeout(
                    &self.sandbox_id,
                    op,
                    format!("no answer from the worker within {limit:?}"),
                ));
            }
            if last_check.elapsed() >= LIVENESS_EVERY {
                last_check = Instant::now();
                self.check_liveness(op, &inbox).await?;
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn upload(&self, op: &str, path: &str, body: UploadBody) -> Result<u64> {
        if let Some(name) = workspace_object(&self.sandbox_id, path) {
            let obj = self
                .storage
                .upload_object(
                    &self.bucket,
                    &name,
                    body.stream,
                    body.len,
                    &WriteOptions::default(),
                )
                .await
                .map_err(|e| self.serr(op, e))?;
            return Ok(obj.size);
        }
        // Outside the workspace: stage the object, then let the worker copy it into place.
        let staged = format!("staging/{}", uuid::Uuid::new_v4().simple());
        let obj = self
            .storage
            .upload_object(
                &self.bucket,
                &self.object(&staged),
                body.stream,
                body.len,
                &WriteOptions::default(),
            )
            .await
            .map_err(|e| self.serr(op, e))?;
        let tmp = format!(
            "{}/.{}.upload-{}",
            paths::parent(path),
            paths::file_name(path),
            uuid::Uuid::new_v4().simple()
        );
        let out = self
            .run(
                op,
                RawExec::new(
                    [
                        "sh",
                        "-c",
                        r#"cp -- "$1" "$2" && mv -f -- "$2" "$3" || { rm -f -- "$2"; exit 1; }"#,
                        "sh",
                        &format!("{STATE_MOUNT}/{staged}"),
                        &tmp,
                        path,
                    ],
                    Duration::from_secs(600),
                ),
            )
            .await;
        let _ = self
            .storage
            .delete_object(
                &self.bucket,
                &self.object(&staged),
                &WriteOptions::default(),
            )
            .await;
        let out = out?;
        if out.exit_code != 0 {
            return Err(SandboxError::backend(
                &self.sandbox_id,
                op,
                format!(
                    "placing the upload at {path} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(obj.size)
    }

    async fn download(&self, op: &str, path: &str) -> Result<ByteStream> {
        if let Some(name) = workspace_object(&self.sandbox_id, path) {
            return match self.storage.download(&self.bucket, &name, None).await {
                Ok(d) => Ok(d.into_byte_stream(&self.sandbox_id, op)),
                Err(e) if e.is_not_found() => {
                    let page = self
                        .storage
                        .list_objects(
                            &self.bucket,
                            &ListOptions {
                                prefix: Some(format!("{name}/")),
                                max_results: Some(1),
                                ..ListOptions::default()
                            },
                        )
                        .await
                        .map_err(|e| self.serr(op, e))?;
                    if page.items.is_empty() && page.prefixes.is_empty() {
                        Err(SandboxError::not_found(
                            &self.sandbox_id,
                            op,
                            format!("{path}: no such file"),
                        ))
                    } else {
                        Err(SandboxError::invalid(
                            &self.sandbox_id,
                            op,
                            format!("{path} is a directory"),
                        ))
                    }
                }
                Err(e) => Err(self.serr(op, e)),
            };
        }
        // Outside the workspace: the worker copies the file onto the state volume first.
        let staged = format!("staging/{}", uuid::Uuid::new_v4().simple());
        let out = self
            .run(
                op,
                RawExec::new(
                    [
                        "sh",
                        "-c",
                        r#"if [ -d "$1" ]; then exit 21; fi; [ -e "$1" ] || exit 20; [ -r "$1" ] || exit 22
mkdir -p -- "$3" && cp -- "$1" "$2""#,
                        "sh",
                        path,
                        &format!("{STATE_MOUNT}/{staged}"),
                        &format!("{STATE_MOUNT}/staging"),
                    ],
                    Duration::from_secs(600),
                ),
            )
            .await?;
        match out.exit_code {
            0 => {}
            20 => {
                return Err(SandboxError::not_found(
                    &self.sandbox_id,
                    op,
                    format!("{path}: no such file"),
                ));
            }
            21 => {
                return Err(SandboxError::invalid(
                    &self.sandbox_id,
                    op,
                    format!("{path} is a directory"),
                ));
            }
            code => {
                return Err(SandboxError::new(
                    if code == 22 {
                        ErrorKind::Permission
                    } else {
                        ErrorKind::Backend
                    },
                    &self.sandbox_id,
                    op,
                    format!(
                        "staging {path} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ));
            }
        }
        let object = self.object(&staged);
        let d = self
            .storage
            .download(&self.bucket, &object, None)
            .await
            .map_err(|e| self.serr(op, e))?;
        let inner = d.into_byte_stream(&self.sandbox_id, op);
        // Remove the staged copy once the stream is consumed or dropped.
        let cleanup = StagedCleanup {
            storage: self.storage.clone(),
            bucket: self.bucket.clone(),
            object,
        };
        Ok(Box::pin(inner.chain(futures::stream::empty()).map(
            move |item| {
                let _keep = &cleanup;
                item
            },
        )))
    }
}

/// Deletes a staged object when dropped (in the background).
struct StagedCleanup {
    storage: StorageClient,
    bucket: String,
    object: String,
}

impl Drop for StagedCleanup {
    fn drop(&mut self) {
        let (storage, bucket, object) = (
            self.storage.clone(),
            self.bucket.clone(),
            self.object.clone(),
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = storage
                    .delete_object(&bucket, &object, &WriteOptions::default())
                    .await;
            });
        }
    }
}

/// Shared handle type for the transport.
pub type SharedTransport = Arc<CloudRunTransport>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_map_into_the_sandbox_prefix() {
        assert_eq!(
            workspace_object("abc", "/workspace/a b/c").as_deref(),
            Some("sessions/abc/workspace/a b/c")
        );
        assert_eq!(workspace_object("abc", "/workspace"), None);
        assert_eq!(workspace_object("abc", "/workspacex/a"), None);
        assert_eq!(workspace_object("abc", "/etc/passwd"), None);
    }
}
