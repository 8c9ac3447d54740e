//! The Cloud Run transport: commands go to a session worker (a job execution running
//! `sandbox-executor worker`) through the state bucket's JSON API, in the object protocol of
//! `sandbox_executor::worker` (a sequence of inbox objects claimed by conditional deletes,
//! outbox, heartbeat); workspace transfers go straight through the Cloud Storage JSON API.
//!
//! Warm path: a worker stays up until its idle timeout, so a command costs one object write
//! at the sandbox's next sequence number, the worker's fetch and conditional delete of it, the
//! answer's write, and reads of the answer's name at the shortest polling interval (held
//! there for a while after the request was queued, then backing off). Cold path: when no
//! worker is alive the transport starts an execution and queues the request at once; the
//! worker takes it on boot.
//!
//! The client queues at the next sequence number it knows of: one past the last it used, or
//! the worker's position from its heartbeat and its answers, whichever is higher; a name
//! another client took (412 on a write sent once) moves it one further.
//!
//! A worker that dies never leaves a command waiting: while a request waits, the transport
//! asks the Admin API about the execution it counts on (at most once a second per sandbox,
//! shared by every waiting request), and when it has ended, the request is withdrawn by
//! deleting its inbox object at the generation its insert returned. If that delete wins, the
//! request never ran; if the worker's delete was first (404, 412), it may have run. Either
//! way the command fails with a Backend error naming the execution, and the next one starts a
//! new worker.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sandbox_executor::exec::{Request, Response, WorkerTiming, now_ms};
use sandbox_executor::worker::{HEARTBEAT, Heartbeat, PollSchedule, inbox_object, outbox_object};
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

/// How often a waiting request re-checks that a worker is there to serve it (one Admin API
/// read per sandbox however many requests wait).
const LIVENESS_EVERY: Duration = Duration::from_secs(1);
/// Most answer reads in flight at once (see `CloudRunTransport::answer_within`).
const MAX_OVERLAPPING_READS: usize = 8;
/// How long to wait for a started execution's worker to take a request before giving up.
const COLD_START_LIMIT: Duration = Duration::from_secs(120);

/// When this client started a worker execution (its clock), and which one: the cold-start
/// breakdown reads the execution's own timestamps from the Admin API afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionStart {
    /// `jobs/...:run` sent.
    pub run_sent: DateTime<Utc>,
    /// Its answer (the execution exists) received.
    pub run_returned: DateTime<Utc>,
    /// The execution's full resource name.
    pub execution: String,
}

/// The steps of the last request this transport served, each by the clock that saw it: the
/// client's (`sent`, `queued`, `answered`), Cloud Storage's (`answer_created`, only while
/// answer tracing is on: it costs one metadata read) and the worker's (`worker`).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTrace {
    /// The request's inbox object insert was sent.
    pub sent: DateTime<Utc>,
    /// That insert returned.
    pub queued: DateTime<Utc>,
    /// When the worker claimed and ran it.
    pub worker: Option<WorkerTiming>,
    /// The answer object's creation time.
    pub answer_created: Option<DateTime<Utc>>,
    /// The answer's body was in the client's hands.
    pub answered: DateTime<Utc>,
}

/// Where a request was queued.
struct Queued {
    /// Its inbox object.
    name: String,
    /// The generation its insert returned; `None` when a retried insert met its own first
    /// attempt already taken by the worker.
    generation: Option<i64>,
    /// When the bucket stored it (server time), when known.
    created: Option<DateTime<Utc>>,
}

/// What [`CloudRunTransport::take_answer`] learned besides the output.
struct AnswerMeta {
    worker: Option<WorkerTiming>,
    created: Option<DateTime<Utc>>,
    received: DateTime<Utc>,
}

/// Reads the worker heartbeat of the sandbox under `prefix` whose job is `job` (execution
/// as a full resource name: the worker knows only the short name Cloud Run gives it in
/// `CLOUD_RUN_EXECUTION`), with its age by the server's clock, and the object's generation.
pub async fn read_heartbeat(
    storage: &StorageClient,
    bucket: &str,
    prefix: &str,
    job: &str,
) -> std::result::Result<Option<(Heartbeat, i64)>, StorageError> {
    let (obj, date) = match storage
        .get_object_at(bucket, &format!("{prefix}{HEARTBEAT}"))
        .await
    {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let updated = obj.updated.map(|t| t.timestamp_millis());
    let now = date.map(|t| t.timestamp_millis());
    Ok(
        Heartbeat::from_metadata(&obj.metadata, updated, now).map(|mut hb| {
            if !hb.execution.is_empty() && !hb.execution.contains('/') {
                hb.execution = format!("{job}/executions/{}", hb.execution);
            }
            (hb, obj.generation)
        }),
    )
}

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

/// What a waiting request learns about the worker it counts on.
#[derive(Debug, Clone)]
enum WorkerState {
    /// A worker is running or starting.
    Serving,
    /// The execution we counted on has finished (`how`: succeeded, cancelled, failed: ...;
    /// `completed`: when, by Cloud Run's clock).
    Ended {
        execution: String,
        how: String,
        completed: Option<DateTime<Utc>>,
        /// Whether this client had reason to count on it: it started it, or got an answer
        /// from it. One adopted from a heartbeat alone may have been dying already.
        trusted: bool,
    },
}

#[derive(Debug, Default)]
struct WorkerView {
    /// The execution we count on to serve requests (full resource name): the one we started
    /// last, or a live one another process started that we adopted from its heartbeat.
    execution: Option<String>,
    /// When we started it (`None` for an adopted one).
    started_at: Option<Instant>,
    /// When a heartbeat or an answer last showed a serving worker.
    seen_alive: Option<Instant>,
    /// True when we started `execution` or got an answer while counting on it.
    trusted: bool,
    /// Executions seen finished: a heartbeat they left behind is not a live worker.
    ended: HashSet<String>,
    /// The last liveness check, shared by every waiting request.
    checked: Option<(Instant, WorkerState)>,
}

impl WorkerView {
    /// Forgets a finished execution, so the next request starts a new worker.
    fn forget(&mut self, execution: &str) {
        self.ended.insert(execution.to_string());
        if self.execution.as_deref() == Some(execution) {
            self.execution = None;
            self.started_at = None;
            self.seen_alive = None;
            self.trusted = false;
        }
        self.checked = None;
    }
}

/// Commands and transfers of one Cloud Run sandbox.
pub struct CloudRunTransport {
    sandbox_id: String,
    prefix: String,
    storage: StorageClient,
    run: RunClient,
    bucket: String,
    job: String,
    poll: PollSchedule,
    heartbeat_every: Duration,
    /// The inbox sequence number this client queues at next (see the module comment).
    next_seq: std::sync::Mutex<u64>,
    worker: Mutex<WorkerView>,
    /// Read the answer object's creation time for [`RequestTrace::answer_created`].
    trace_answers: AtomicBool,
    last_request: std::sync::Mutex<Option<RequestTrace>>,
    last_start: std::sync::Mutex<Option<ExecutionStart>>,
}

impl CloudRunTransport {
    /// A transport for sandbox `sandbox_id` whose job is `job` (full resource name); `poll` is
    /// how it waits for answers, `heartbeat_every` the worker's heartbeat interval.
    pub fn new(
        sandbox_id: impl Into<String>,
        storage: StorageClient,
        run: RunClient,
        bucket: impl Into<String>,
        job: impl Into<String>,
        poll: PollSchedule,
        heartbeat_every: Duration,
    ) -> Self {
        let sandbox_id = sandbox_id.into();
        CloudRunTransport {
            prefix: sandbox_prefix(&sandbox_id),
            sandbox_id,
            storage,
            run,
            bucket: bucket.into(),
            job: job.into(),
            poll,
            heartbeat_every,
            next_seq: std::sync::Mutex::new(0),
            worker: Mutex::new(WorkerView::default()),
            trace_answers: AtomicBool::new(false),
            last_request: std::sync::Mutex::new(None),
            last_start: std::sync::Mutex::new(None),
        }
    }

    /// Counts on `execution` (full name), just started for this sandbox by somebody else (the
    /// warm pool), as if this client had started it.
    pub async fn adopt_execution(&self, execution: &str) {
        let mut view = self.worker.lock().await;
        view.execution = Some(execution.to_string());
        view.started_at = Some(Instant::now());
        view.seen_alive = Some(Instant::now());
        view.trusted = true;
        view.checked = None;
    }

    /// Turns on reading each answer object's creation time (one metadata read per request,
    /// after the answer is in hand), for [`RequestTrace::answer_created`].
    pub fn set_answer_tracing(&self, on: bool) {
        self.trace_answers.store(on, Ordering::SeqCst);
    }

    /// The steps of the last request served.
    pub fn last_request_trace(&self) -> Option<RequestTrace> {
        self.last_request
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last worker execution this client started.
    pub fn last_execution_start(&self) -> Option<ExecutionStart> {
        self.last_start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The live worker's heartbeat, if any (the bench reads when the worker started).
    pub async fn worker_heartbeat(&self, op: &str) -> Result<Option<Heartbeat>> {
        Ok(self.heartbeat(op).await?.map(|(hb, _)| hb))
    }

    /// Raises the next sequence number to `next` (a position the worker reported).
    fn saw_seq(&self, next: u64) {
        let mut s = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        *s = (*s).max(next);
    }

    /// Takes the next sequence number for a request.
    fn reserve_seq(&self) -> u64 {
        let mut s = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        *s += 1;
        *s - 1
    }

    /// Gives back `seq` when its insert failed and nothing was reserved after it, so the
    /// sequence gets no gap.
    fn unreserve_seq(&self, seq: u64) {
        let mut s = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        if *s == seq + 1 {
            *s = seq;
        }
    }

    fn object(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    fn serr(&self, op: &str, e: StorageError) -> SandboxError {
        e.into_sandbox_error(&self.sandbox_id, op)
    }

    /// The worker's heartbeat (execution as a full resource name: the worker knows only the
    /// short name Cloud Run gives it in `CLOUD_RUN_EXECUTION`), its age by the server's clock,
    /// and the object's generation.
    async fn heartbeat(&self, op: &str) -> Result<Option<(Heartbeat, i64)>> {
        read_heartbeat(&self.storage, &self.bucket, &self.prefix, &self.job)
            .await
            .map_err(|e| self.serr(op, e))
    }

    /// Removes the heartbeat a finished execution left behind (only if it is still that
    /// execution's), so the next worker does not step aside for a dead one.
    async fn retire_heartbeat(&self, op: &str, execution: &str) -> Result<()> {
        let Some((hb, generation)) = self.heartbeat(op).await? else {
            return Ok(());
        };
        if hb.execution != execution {
            return Ok(());
        }
        match self
            .storage
            .delete_object(
                &self.bucket,
                &self.object(HEARTBEAT),
                &WriteOptions {
                    if_generation_match: Some(generation),
                    ..WriteOptions::default()
                },
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() || e.status() == Some(412) => Ok(()),
            Err(e) => Err(self.serr(op, e)),
        }
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
        if !force && let Some((hb, _)) = self.heartbeat(op).await? {
            // A live worker waits there; a stopped one's successor goes on from there.
            self.saw_seq(hb.next);
            if hb.is_live(self.heartbeat_every) && !view.ended.contains(&hb.execution) {
                if view.execution.as_deref() != Some(hb.execution.as_str()) {
                    view.execution = Some(hb.execution);
                    view.started_at = None;
                    view.trusted = false;
                }
                view.seen_alive = Some(Instant::now());
                return Ok(());
            }
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
        let run_sent = Utc::now();
        let operation = self
            .run
            .run_job(&self.job, None)
            .await
            .map_err(|e| e.into_sandbox_error(&self.sandbox_id, op))?;
        let execution = operation.execution().map(|e| e.name).unwrap_or_default();
        *self.last_start.lock().unwrap_or_else(|p| p.into_inner()) = Some(ExecutionStart {
            run_sent,
            run_returned: Utc::now(),
            execution: execution.clone(),
        });
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
        view.trusted = true;
        view.checked = None;
        Ok(())
    }

    /// Whether the execution we count on is still there to serve a waiting request, asked of
    /// the Admin API at most once per [`LIVENESS_EVERY`] for all waiting requests. This does
    /// not wait for the heartbeat to go stale: a dead worker is seen as soon as Cloud Run
    /// reports its execution finished.
    async fn worker_state(&self, op: &str) -> Result<WorkerState> {
        let (counted_on, ended, trusted) = {
            let view = self.worker.lock().await;
            if let Some((t, state)) = &view.checked
                && t.elapsed() < LIVENESS_EVERY
            {
                return Ok(state.clone());
            }
            (view.execution.clone(), view.ended.clone(), view.trusted)
        };
        let name = match counted_on {
            Some(n) => n,
            None => match self.heartbeat(op).await? {
                Some((hb, _)) if !hb.execution.is_empty() && !ended.contains(&hb.execution) => {
                    hb.execution
                }
                // Nobody we know of serves this sandbox: start a worker for the request.
                _ => {
                    self.ensure_worker(op, true).await?;
                    return Ok(WorkerState::Serving);
                }
            },
        };
        let (how, completed) = match self.run.get_execution(&name).await {
            Ok(e) if !e.is_done() => {
                self.worker.lock().await.checked = Some((Instant::now(), WorkerState::Serving));
                return Ok(WorkerState::Serving);
            }
            Ok(e) => (
                e.ending(),
                e.completion_time
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc)),
            ),
            Err(e) if e.is_not_found() => ("deleted".to_string(), None),
            Err(e) => return Err(e.into_sandbox_error(&self.sandbox_id, op)),
        };
        self.worker.lock().await.forget(&name);
        self.retire_heartbeat(op, &name).await?;
        // Another process's worker may be the one serving (ours then left at once).
        if let Some((hb, _)) = self.heartbeat(op).await?
            && hb.execution != name
            && !ended.contains(&hb.execution)
            && hb.is_live(self.heartbeat_every)
            && matches!(self.run.get_execution(&hb.execution).await, Ok(e) if !e.is_done())
        {
            let mut view = self.worker.lock().await;
            view.execution = Some(hb.execution);
            view.started_at = None;
            view.trusted = false;
            return Ok(WorkerState::Serving);
        }
        Ok(WorkerState::Ended {
            execution: name,
            how,
            completed,
            trusted,
        })
    }

    /// The worker's answer to request `id`, if it is there yet. The answer is removed in the
    /// background once read.
    async fn take_answer(&self, op: &str, id: &str) -> Result<Option<(RawOutput, AnswerMeta)>> {
        let outbox = outbox_object(&self.prefix, id);
        let d = match self.storage.download(&self.bucket, &outbox, None).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(self.serr(op, e)),
        };
        let bytes = d.collect().await.map_err(|e| self.serr(op, e))?;
        let received = Utc::now();
        let created = if self.trace_answers.load(Ordering::SeqCst) {
            self.storage
                .get_object_at(&self.bucket, &outbox)
                .await
                .ok()
                .and_then(|(o, _)| o.time_created)
        } else {
            None
        };
        self.clean_up(vec![outbox]);
        let resp: Response = serde_json::from_slice(&bytes).map_err(|e| {
            SandboxError::backend(&self.sandbox_id, op, format!("bad worker response: {e}"))
        })?;
        if let Some(next) = resp.inbox_next {
            self.saw_seq(next);
        }
        let worker = resp.timing;
        let out = output_from_response(&self.sandbox_id, op, resp)?;
        let mut view = self.worker.lock().await;
        view.seen_alive = Some(Instant::now());
        view.trusted = view.execution.is_some();
        Ok(Some((
            out,
            AnswerMeta {
                worker,
                created,
                received,
            },
        )))
    }

    /// Reads the answer to request `id` every `poll.min` for `window`, each read sent without
    /// waiting for the one before (a read takes a round trip: overlapping them sees an answer
    /// within `poll.min` of its landing instead of within a round trip); at most
    /// [`MAX_OVERLAPPING_READS`] in flight. `None` when none found it.
    async fn answer_within(
        &self,
        op: &str,
        id: &str,
        window: Duration,
    ) -> Result<Option<(RawOutput, AnswerMeta)>> {
        let until = tokio::time::Instant::now() + window;
        let mut reads = futures::stream::FuturesUnordered::new();
        let mut tick = tokio::time::interval(self.poll.min);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let open = tokio::time::Instant::now() < until;
            if !open && reads.is_empty() {
                return Ok(None);
            }
            tokio::select! {
                _ = tick.tick(), if open && reads.len() < MAX_OVERLAPPING_READS => {
                    reads.push(self.take_answer(op, id));
                }
                Some(read) = reads.next() => {
                    if let Some(found) = read? {
                        return Ok(Some(found));
                    }
                }
                _ = tokio::time::sleep_until(until), if open => {}
            }
        }
    }

    /// Keeps the steps of a served request (see [`RequestTrace`]).
    fn record(&self, sent: DateTime<Utc>, queued: DateTime<Utc>, meta: AnswerMeta) {
        *self.last_request.lock().unwrap_or_else(|p| p.into_inner()) = Some(RequestTrace {
            sent,
            queued,
            worker: meta.worker,
            answer_created: meta.created,
            answered: meta.received,
        });
    }

    /// Deletes protocol objects off the critical path (best effort: a leftover is removed with
    /// the sandbox, or by the bucket's lifecycle rule).
    fn clean_up(&self, names: Vec<String>) {
        let (storage, bucket) = (self.storage.clone(), self.bucket.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                for n in names {
                    let _ = storage
                        .delete_object(&bucket, &n, &WriteOptions::default())
                        .await;
                }
            });
        }
    }

    /// Queues request `id` (its JSON `body`) at the next sequence number; returns when the
    /// bucket stored it. A name another client's request holds moves it one further; a
    /// retried insert that meets its own first attempt, or finds the name emptied after it
    /// (the worker took that attempt), counts as queued.
    async fn enqueue(&self, op: &str, id: &str, body: Bytes) -> Result<Queued> {
        loop {
            let seq = self.reserve_seq();
            let name = inbox_object(&self.prefix, seq);
            let (r, sent_again) = self
                .storage
                .insert_object_once_or_more(
                    &self.bucket,
                    &name,
                    body.clone(),
                    &WriteOptions {
                        content_type: Some("application/json".into()),
                        if_generation_match: Some(0),
                        ..WriteOptions::default()
                    },
                )
                .await;
            let e = match r {
                Ok(obj) => {
                    return Ok(Queued {
                        name,
                        generation: Some(obj.generation),
                        created: obj.time_created,
                    });
                }
                Err(e) if e.status() == Some(412) => e,
                Err(e) => {
                    self.unreserve_seq(seq);
                    return Err(self.serr(op, e));
                }
            };
            // A write sent once met somebody else's request: try the next number.
            if !sent_again {
                continue;
            }
            match self.storage.download(&self.bucket, &name, None).await {
                Ok(d) => {
                    let generation = d.generation;
                    let held = d.collect().await.map_err(|e| self.serr(op, e))?;
                    if serde_json::from_slice::<Request>(&held).is_ok_and(|r| r.id == id) {
                        return Ok(Queued {
                            name,
                            generation,
                            created: None,
                        });
                    }
                }
                // Taken already: the worker took this write's own first attempt (only a
                // write sent twice gets here).
                Err(nf) if nf.is_not_found() => {
                    tracing::debug!(sandbox = %self.sandbox_id, %name, error = %e, "a retried insert found its name taken and emptied: queued");
                    return Ok(Queued {
                        name,
                        generation: None,
                        created: None,
                    });
                }
                Err(e) => return Err(self.serr(op, e)),
            }
        }
    }

    /// Withdraws a queued request by deleting its inbox object at the generation its insert
    /// returned: true when it never ran (the delete won), false when a worker took it first
    /// (404, 412; also a retried delete whose first attempt landed: "may have run" is the
    /// safe side).
    async fn withdraw(&self, op: &str, q: &Queued) -> Result<bool> {
        let Some(generation) = q.generation else {
            return Ok(false);
        };
        match self
            .storage
            .delete_object(
                &self.bucket,
                &q.name,
                &WriteOptions {
                    if_generation_match: Some(generation),
                    ..WriteOptions::default()
                },
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() || e.status() == Some(412) => Ok(false),
            Err(e) => Err(self.serr(op, e)),
        }
    }

    fn new_request_id() -> String {
        format!("{:013}-{}", now_ms(), uuid::Uuid::new_v4().simple())
    }
}

/// Times a request whose worker stopped cleanly (idle or out of lifetime) before taking it is
/// queued again for a new worker; a worker that died instead fails the request.
const REQUEUE_LIMIT: u32 = 2;

#[async_trait]
impl Transport for CloudRunTransport {
    fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    async fn run(&self, op: &str, req: RawExec) -> Result<RawOutput> {
        let started = Instant::now();
        let mut request = Request {
            id: Self::new_request_id(),
            argv: req.argv,
            stdin_b64: req.stdin.as_ref().map(|b| B64.encode(b)),
            deadline_ms: req.deadline.as_millis() as u64,
        };
        let encode = |r: &Request| -> Result<Bytes> {
            serde_json::to_vec(r)
                .map(Bytes::from)
                .map_err(|e| SandboxError::backend(&self.sandbox_id, op, e.to_string()))
        };
        self.ensure_worker(op, false).await?;
        let mut sent = Utc::now();
        let mut inbox = self.enqueue(op, &request.id, encode(&request)?).await?;
        let mut queued = Utc::now();
        let mut since = Instant::now();
        let mut requeued = 0;
        // The worker enforces the deadline itself; allow it time to start and to answer.
        let limit = req.deadline + COLD_START_LIMIT;
        let mut wait = self.poll.min;
        loop {
            // Within the hold the reads overlap (see `answer_within`); after it they back off.
            let held = self.poll.hold.saturating_sub(since.elapsed());
            let answer = if held.is_zero() {
                tokio::time::sleep(wait).await;
                wait = self.poll.next(wait, since.elapsed());
                self.take_answer(op, &request.id).await?
            } else {
                self.answer_within(op, &request.id, held.min(LIVENESS_EVERY))
                    .await?
            };
            if let Some((out, meta)) = answer {
                tracing::debug!(sandbox = %self.sandbox_id, op, ms = started.elapsed().as_millis() as u64, "request served");
                self.record(sent, queued, meta);
                return Ok(out);
            }
            if started.elapsed() > limit {
                return Err(SandboxError::timeout(
                    &self.sandbox_id,
                    op,
                    format!("no answer from the worker within {limit:?}"),
                ));
            }
            let WorkerState::Ended {
                execution,
                how,
                completed,
                trusted,
            } = self.worker_state(op).await?
            else {
                continue;
            };
            // An answer written before the end still counts.
            if let Some((out, meta)) = self.take_answer(op, &request.id).await? {
                self.record(sent, queued, meta);
                return Ok(out);
            }
            if !self.withdraw(op, &inbox).await? {
                return Err(SandboxError::backend(
                    &self.sandbox_id,
                    op,
                    format!(
                        "the worker execution {execution} ended ({how}) while running the request; it may have run"
                    ),
                ));
            }
            // Not claimed. A worker that stopped cleanly, was gone before the request was
            // queued, or was only adopted from a heartbeat it may have left while dying, was
            // never going to take it: queue it again (under a new id: the old one is withdrawn
            // for good) for a new worker. One this client counted on that died after the
            // request was queued fails the request.
            let gone_before = matches!((completed, inbox.created), (Some(c), Some(q)) if c < q);
            if !(how == "succeeded" || gone_before || !trusted) || requeued >= REQUEUE_LIMIT {
                return Err(SandboxError::backend(
                    &self.sandbox_id,
                    op,
                    format!(
                        "the worker execution {execution} ended ({how}) before taking the request; it did not run"
                    ),
                ));
            }
            tracing::debug!(sandbox = %self.sandbox_id, %execution, %how, "the worker was gone before taking a request; starting another");
            requeued += 1;
            self.ensure_worker(op, true).await?;
            request.id = Self::new_request_id();
            sent = Utc::now();
            inbox = self.enqueue(op, &request.id, encode(&request)?).await?;
            queued = Utc::now();
            since = Instant::now();
            wait = self.poll.min;
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
