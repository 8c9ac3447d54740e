//! The Cloud Run Admin API v2 half of the emulator: jobs, executions, tasks and operations over
//! REST/JSON, with every task attempt run as a Docker container (see `runner`).
//!
//! Behaviour chosen where the real API is not mirrored exactly (documented here once):
//! - Job create/delete operations are `done` at once (the real ones reconcile for a while),
//!   unless [`JobOperations`] says otherwise: then they report `done: false` for a number of
//!   reads (`:wait` included, which then returns before the operation is done), end with an
//!   error, or the create is applied and its answer lost (a 503), as tests of clients need.
//! - Deleting a job cancels its running executions (their containers are killed and removed)
//!   and deletes them with it; an operation of a deleted execution reports `done` with a
//!   NOT_FOUND error. Deleting a running execution cancels it first, the same way.
//! - `:cancel` on a finished execution answers 400 FAILED_PRECONDITION.
//! - The "Completed" condition is CONDITION_PENDING before the execution starts,
//!   CONDITION_RECONCILING while it runs, then CONDITION_SUCCEEDED or CONDITION_FAILED
//!   (executionReason NON_ZERO_EXIT_CODE or CANCELLED).
//! - Messages follow the real wording where it is known: an execution's failed "Completed"
//!   condition says "Task {exec}-task{i} failed with message: {msg}", a timed-out attempt
//!   "The configured timeout was reached." (gRPC code 4); the non-zero-exit wording ("The
//!   container exited with an error", code 2) and the appended log tail are the emulator's own.
//! - One container per task (no sidecars), literal env values only (no secret refs), no job
//!   update (PATCH), no IAM; any project and location are accepted.

mod runner;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bollard::Docker;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::emulator::base::{ApiError, Dialect};
use crate::emulator::faults::FaultInjector;
use crate::emulator::gcsfuse::GcsFuse;
use crate::emulator::routes::{Api, RouteTable};
use crate::gcp::run::{
    Condition, EXECUTION_TYPE_URL, Execution, ExecutionReference, JOB_TYPE_URL, Job,
    ListExecutionsResponse, ListJobsResponse, ListTasksResponse, Operation, RunJobRequest, Status,
    Task, TaskAttemptResult, TaskTemplate, format_duration, parse_duration,
};
use crate::suites::profile;

/// Label every emulator container carries.
pub const HARNESS_LABEL: &str = "sandbox-harness";
/// Label naming the emulator instance that started a container.
pub const EMULATOR_LABEL: &str = "sandbox-harness.emulator";
/// Label naming the execution a container belongs to.
pub const EXECUTION_LABEL: &str = "sandbox-harness.run.execution";

/// Why the emulator could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RunEmulatorError {
    /// The configuration is unusable.
    #[error("Cloud Run emulator configuration: {0}")]
    Config(String),
}

/// How the Cloud Run half of the emulator is set up.
#[derive(Clone)]
pub struct RunConfig {
    /// The Docker engine that runs task containers.
    pub docker: Docker,
    /// Injected latency and faults (shared with the storage half).
    pub faults: Arc<FaultInjector>,
    /// This emulator instance's id (in the `sandbox-harness.emulator` label).
    pub instance_id: String,
    /// Labels put on every container (defaults: `sandbox-harness=1`, `sandbox-harness.emulator=<id>`).
    pub labels: BTreeMap<String, String>,
    /// The project answered for by default (any project is accepted).
    pub project: String,
    /// The region answered for by default (any location is accepted).
    pub region: String,
}

impl RunConfig {
    /// A configuration with no faults and the default labels for `instance_id` (the server's
    /// auth middleware checks tokens, see `emulator::auth`).
    pub fn new(docker: Docker, instance_id: &str) -> Self {
        let labels = BTreeMap::from([
            (HARNESS_LABEL.to_string(), "1".to_string()),
            (EMULATOR_LABEL.to_string(), instance_id.to_string()),
        ]);
        RunConfig {
            docker,
            faults: Arc::new(FaultInjector::default()),
            instance_id: instance_id.to_string(),
            labels,
            project: "local-project".into(),
            region: "us-central1".into(),
        }
    }
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig")
            .field("instance_id", &self.instance_id)
            .field("labels", &self.labels)
            .field("faults", &self.faults)
            .field("project", &self.project)
            .field("region", &self.region)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

struct TaskRec {
    task: Task,
    phase: Phase,
}

struct ExecRec {
    exec: Execution,
    tasks: Vec<TaskRec>,
    cancel: CancellationToken,
    start_failure: Option<String>,
}

enum OpRec {
    /// An operation on a job or execution record.
    Done {
        metadata: Value,
        response: Value,
        /// Reads left that answer `done: false`.
        pending_reads: u32,
        /// The error the operation ends with (no response then).
        error: Option<Status>,
        /// Not done before this instant (the profile's operation duration; at once when `None`).
        ready_at: Option<Instant>,
    },
    Exec {
        execution: String,
    },
}

/// How the emulator answers job create/delete operations; set at run time with
/// [`RunState::set_job_operations`]. The default answers `done` at once.
///
/// Google's job operations reconcile for a while (an `operations.get` answers `done: false`,
/// and `operations.wait` may return before the operation is done: "the method is not
/// guaranteed to wait until the specified time", <https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.operations/wait>),
/// and a finished operation may carry an `error` instead of a `response`
/// (<https://cloud.google.com/run/docs/reference/rest/Shared.Types/Operation>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOperations {
    /// Reads (get or `:wait`) of a new job operation that answer `done: false` first.
    pub pending_reads: u32,
    /// The next this many job operations end with `error` (a create leaves the job with a
    /// failed Ready terminal condition; a delete leaves the job in place).
    pub failing: u32,
    /// The error of failing operations (gRPC code, message).
    pub error: Status,
    /// The next this many job creates are applied and then answered 503, as a response lost
    /// on the way back (the client's retry meets its own job: 409 ALREADY_EXISTS).
    pub lost_create_responses: u32,
}

/// Counts of what [`JobOperations`] did, for tests to prove it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobOperationCounts {
    /// Reads answered `done: false` on purpose.
    pub pending_answers: u64,
    /// Operations ended with an error on purpose.
    pub failed: u64,
    /// Creates whose answer was replaced by a 503.
    pub lost_responses: u64,
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, Job>,
    executions: BTreeMap<String, ExecRec>,
    operations: HashMap<String, OpRec>,
    job_ops: JobOperations,
    job_op_counts: JobOperationCounts,
}

impl Inner {
    /// A job operation as [`JobOperations`] says; returns it and whether it fails.
    fn job_op(
        &mut self,
        parent: &str,
        resource: Value,
        ready_at: Option<Instant>,
    ) -> (String, bool) {
        let error = (self.job_ops.failing > 0).then(|| {
            self.job_ops.failing -= 1;
            self.job_op_counts.failed += 1;
            self.job_ops.error.clone()
        });
        let failed = error.is_some();
        let op = self.new_op(
            parent,
            OpRec::Done {
                metadata: resource.clone(),
                response: resource,
                pending_reads: self.job_ops.pending_reads,
                error,
                ready_at,
            },
        );
        (op, failed)
    }
}

/// The live state of the Cloud Run half: resources, running executions, operations.
pub struct RunState {
    cfg: RunConfig,
    /// `host:port` of the emulator's own APIs, given to task containers as
    /// `STORAGE_EMULATOR_HOST` and `GCE_METADATA_HOST` (set once the server listens).
    api_host: std::sync::OnceLock<String>,
    /// Mounts Cloud Storage volumes (set once the Storage endpoint is known).
    gcs_volumes: OnceLock<Arc<GcsFuse>>,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    shutdown: CancellationToken,
    runners: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState").field("cfg", &self.cfg).finish()
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn typed(v: &impl Serialize, type_url: &str) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("@type".into(), Value::String(type_url.into()));
    }
    v
}

fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn rand_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| CHARS[rand::random::<u32>() as usize % CHARS.len()] as char)
        .collect()
}

fn cond(type_: &str, state: &str, message: Option<String>, t: &Option<String>) -> Condition {
    Condition {
        message,
        last_transition_time: t.clone(),
        ..Condition::new(type_, state)
    }
}

impl RunState {
    /// Sets up the state; nothing runs until jobs are run.
    pub fn new(cfg: RunConfig) -> Result<Arc<RunState>, RunEmulatorError> {
        if cfg.instance_id.is_empty() {
            return Err(RunEmulatorError::Config("instance_id is empty".into()));
        }
        let (changed, _) = watch::channel(0);
        Ok(Arc::new(RunState {
            cfg,
            api_host: std::sync::OnceLock::new(),
            gcs_volumes: OnceLock::new(),
            inner: Mutex::new(Inner::default()),
            changed,
            shutdown: CancellationToken::new(),
            runners: Mutex::new(Vec::new()),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    /// How job create/delete operations are answered from now on.
    pub fn set_job_operations(&self, ops: JobOperations) {
        self.lock().job_ops = ops;
    }

    /// What [`JobOperations`] did so far.
    pub fn job_operation_counts(&self) -> JobOperationCounts {
        self.lock().job_op_counts
    }

    /// Tells the runner where the emulator's APIs listen (`host:port`). Task containers then
    /// reach Cloud Storage and the metadata server there, through the variables Google's
    /// client libraries honour; on Cloud Run they reach Google's endpoints instead, a
    /// difference the twin knows of.
    pub fn set_api_host(&self, host: &str) {
        let _ = self.api_host.set(host.to_string());
    }

    /// Where task containers reach the emulator's APIs, once known.
    pub fn api_host(&self) -> Option<&str> {
        self.api_host.get().map(String::as_str)
    }

    /// Gives the runner its Cloud Storage FUSE mounter; without one, `gcs` volumes are refused.
    pub fn set_gcs_volumes(&self, g: Arc<GcsFuse>) -> Result<(), RunEmulatorError> {
        self.gcs_volumes
            .set(g)
            .map_err(|_| RunEmulatorError::Config("the gcs volume mounter is already set".into()))
    }

    /// The Cloud Storage FUSE mounter, if set.
    pub fn gcs_volumes(&self) -> Option<&Arc<GcsFuse>> {
        self.gcs_volumes.get()
    }

    /// Refuses templates with `gcs` volumes when this emulator cannot mount them, saying what
    /// is missing (no silent fallback to another volume mode).
    fn check_gcs_volumes(&self, t: &crate::gcp::run::TaskTemplate) -> Result<(), ApiError> {
        if !t.volumes.iter().any(|v| v.gcs.is_some()) {
            return Ok(());
        }
        if self.gcs_volumes.get().is_none() {
            return Err(precondition(
                "this emulator has no Cloud Storage endpoint to mount gcs volumes from \
                 (start the Cloud Run half together with the storage half, as LocalCloud does)",
            ));
        }
        crate::emulator::gcsfuse::check_available().map_err(precondition)
    }

    /// Cancels every running execution, waits for their containers to be removed, and removes
    /// any container left with this instance's label; later `:run` calls answer 503.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let handles: Vec<_> =
            std::mem::take(&mut *self.runners.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.await;
        }
        runner::remove_labelled_containers(&self.cfg.docker, EMULATOR_LABEL, &self.cfg.instance_id)
            .await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Applies `f` to a task's record, if the execution still exists.
    fn update_task(&self, exec: &str, index: usize, f: impl FnOnce(&mut Task, &mut Phase)) {
        {
            let mut g = self.lock();
            if let Some(t) = g
                .executions
                .get_mut(exec)
                .and_then(|e| e.tasks.get_mut(index))
            {
                f(&mut t.task, &mut t.phase);
                t.task.update_time = Some(now());
            }
        }
        self.bump();
    }

    /// Applies `f` to an execution's record, if it still exists.
    fn update_exec(&self, exec: &str, f: impl FnOnce(&mut ExecRec)) {
        {
            let mut g = self.lock();
            if let Some(e) = g.executions.get_mut(exec) {
                f(e);
                e.exec.update_time = Some(now());
            }
        }
        self.bump();
    }

    /// The Run half's fault layer: the injector shared with the storage half, answering in
    /// the Run dialect (auth is the server's middleware, in front of every route).
    async fn guard(&self, endpoint: &str) -> Result<(), ApiError> {
        self.cfg.faults.inject(endpoint, Dialect::Run).await
    }
}

fn task_view(t: &TaskRec) -> Task {
    let mut task = t.task.clone();
    let msg = task
        .last_attempt_result
        .as_ref()
        .and_then(|r| r.status.as_ref())
        .map(|s| s.message.clone());
    task.reconciling = !t.phase.terminal();
    let started = if t.phase == Phase::Pending {
        "CONDITION_PENDING"
    } else {
        "CONDITION_SUCCEEDED"
    };
    let mut completed = match t.phase {
        Phase::Pending => cond("Completed", "CONDITION_PENDING", None, &task.update_time),
        Phase::Running => cond(
            "Completed",
            "CONDITION_RECONCILING",
            None,
            &task.update_time,
        ),
        Phase::Succeeded => cond(
            "Completed",
            "CONDITION_SUCCEEDED",
            Some("Task completed successfully.".into()),
            &task.completion_time,
        ),
        Phase::Failed => cond("Completed", "CONDITION_FAILED", msg, &task.completion_time),
        Phase::Cancelled => cond("Completed", "CONDITION_FAILED", msg, &task.completion_time),
    };
    if t.phase == Phase::Cancelled {
        completed.execution_reason = Some("CANCELLED".into());
    } else if t.phase == Phase::Failed {
        completed.execution_reason = Some("NON_ZERO_EXIT_CODE".into());
    }
    task.conditions = vec![completed, cond("Started", started, None, &task.start_time)];
    task
}

fn exec_view(e: &ExecRec) -> Execution {
    let mut x = e.exec.clone();
    let count = |p: Phase| e.tasks.iter().filter(|t| t.phase == p).count() as i32;
    x.running_count = count(Phase::Running);
    x.succeeded_count = count(Phase::Succeeded);
    x.failed_count = count(Phase::Failed);
    x.cancelled_count = count(Phase::Cancelled);
    x.retried_count = e.tasks.iter().map(|t| t.task.retried).sum();
    x.reconciling = x.completion_time.is_none();
    let started = x.start_time.is_some();
    let (ra, st) = if let Some(f) = &e.start_failure {
        (
            cond(
                "ResourcesAvailable",
                "CONDITION_FAILED",
                Some(f.clone()),
                &x.completion_time,
            ),
            cond(
                "Started",
                "CONDITION_FAILED",
                Some(f.clone()),
                &x.completion_time,
            ),
        )
    } else if started {
        (
            cond(
                "ResourcesAvailable",
                "CONDITION_SUCCEEDED",
                None,
                &x.start_time,
            ),
            cond("Started", "CONDITION_SUCCEEDED", None, &x.start_time),
        )
    } else {
        (
            cond(
                "ResourcesAvailable",
                "CONDITION_PENDING",
                None,
                &x.create_time,
            ),
            cond("Started", "CONDITION_PENDING", None, &x.create_time),
        )
    };
    let completed = if x.completion_time.is_none() {
        let state = if started {
            "CONDITION_RECONCILING"
        } else {
            "CONDITION_PENDING"
        };
        cond("Completed", state, None, &x.update_time)
    } else if let Some(f) = &e.start_failure {
        cond(
            "Completed",
            "CONDITION_FAILED",
            Some(f.clone()),
            &x.completion_time,
        )
    } else if x.failed_count > 0 {
        let first = e
            .tasks
            .iter()
            .find(|t| t.phase == Phase::Failed)
            .map(|t| {
                let m = t
                    .task
                    .last_attempt_result
                    .as_ref()
                    .and_then(|r| r.status.as_ref())
                    .map(|s| s.message.clone())
                    .unwrap_or_default();
                format!("Task {} failed with message: {m}", short(&t.task.name))
            })
            .unwrap_or_default();
        let mut c = cond(
            "Completed",
            "CONDITION_FAILED",
            Some(format!(
                "{first} ({} of {} tasks failed)",
                x.failed_count,
                e.tasks.len()
            )),
            &x.completion_time,
        );
        c.execution_reason = Some("NON_ZERO_EXIT_CODE".into());
        c
    } else if x.cancelled_count > 0 {
        let mut c = cond(
            "Completed",
            "CONDITION_FAILED",
            Some("The execution was cancelled.".into()),
            &x.completion_time,
        );
        c.execution_reason = Some("CANCELLED".into());
        c
    } else {
        let secs = match (&x.start_time, &x.completion_time) {
            (Some(a), Some(b)) => chrono::DateTime::parse_from_rfc3339(b)
                .ok()
                .zip(chrono::DateTime::parse_from_rfc3339(a).ok())
                .map(|(b, a)| (b - a).num_milliseconds() as f64 / 1000.0)
                .unwrap_or(0.0),
            _ => 0.0,
        };
        cond(
            "Completed",
            "CONDITION_SUCCEEDED",
            Some(format!("Execution completed successfully in {secs:.2}s.")),
            &x.completion_time,
        )
    };
    x.conditions = vec![completed, ra, st];
    x
}

fn completion_status(x: &Execution) -> &'static str {
    match x.completed_condition() {
        Some(c) if c.state == "CONDITION_SUCCEEDED" => "EXECUTION_SUCCEEDED",
        Some(c) if c.execution_reason.as_deref() == Some("CANCELLED") => "EXECUTION_CANCELLED",
        Some(c) if c.state == "CONDITION_FAILED" => "EXECUTION_FAILED",
        _ if x.start_time.is_some() => "EXECUTION_RUNNING",
        _ => "EXECUTION_PENDING",
    }
}

impl Inner {
    fn job_view(&self, name: &str) -> Option<Job> {
        let mut j = self.jobs.get(name)?.clone();
        if let Some(r) = &mut j.latest_created_execution
            && let Some(e) = self.executions.get(&r.name)
        {
            let x = exec_view(e);
            r.completion_time = x.completion_time.clone();
            r.completion_status = Some(completion_status(&x).into());
        }
        Some(j)
    }

    fn op_view(&self, name: &str) -> Option<Operation> {
        let op = self.operations.get(name)?;
        Some(match op {
            OpRec::Done {
                metadata,
                response,
                pending_reads,
                error,
                ready_at,
            } => {
                let done = *pending_reads == 0 && ready_at.is_none_or(|t| Instant::now() >= t);
                let error = error.clone().filter(|_| done);
                Operation {
                    name: name.into(),
                    metadata: Some(metadata.clone()),
                    done,
                    response: (done && error.is_none()).then(|| response.clone()),
                    error,
                }
            }
            OpRec::Exec { execution } => match self.executions.get(execution) {
                Some(e) => {
                    let x = exec_view(e);
                    let v = typed(&x, EXECUTION_TYPE_URL);
                    let done = x.completion_time.is_some();
                    Operation {
                        name: name.into(),
                        metadata: Some(v.clone()),
                        done,
                        error: None,
                        response: done.then_some(v),
                    }
                }
                None => Operation {
                    name: name.into(),
                    metadata: None,
                    done: true,
                    error: Some(Status {
                        code: 5,
                        message: format!("Execution {execution} was deleted."),
                    }),
                    response: None,
                },
            },
        })
    }

    /// An operation as one read answers it: a pending job operation counts the read down.
    fn read_op(&mut self, name: &str) -> Option<Operation> {
        let view = self.op_view(name)?;
        if let Some(OpRec::Done { pending_reads, .. }) = self.operations.get_mut(name)
            && *pending_reads > 0
        {
            *pending_reads -= 1;
            self.job_op_counts.pending_answers += 1;
        }
        Some(view)
    }

    fn new_op(&mut self, parent: &str, rec: OpRec) -> String {
        let name = format!("{parent}/operations/{}", uuid::Uuid::new_v4());
        self.operations.insert(name.clone(), rec);
        name
    }
}

// The Run half's errors: the emulator's one `ApiError`, answered in the Run dialect.

fn not_found(what: &str) -> ApiError {
    ApiError::not_found(format!("Resource '{what}' was not found")).in_dialect(Dialect::Run)
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg).in_dialect(Dialect::Run)
}

/// FAILED_PRECONDITION, which the Run API answers with 400 (the Storage API with 412).
fn precondition(msg: impl Into<String>) -> ApiError {
    ApiError::new(400, "FAILED_PRECONDITION", "failedPrecondition", msg).in_dialect(Dialect::Run)
}

fn unavailable(msg: impl Into<String>) -> ApiError {
    ApiError::unavailable(msg).in_dialect(Dialect::Run)
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl Serialize) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("Invalid JSON payload received. {e}")))
}

fn paginate<T>(
    items: Vec<(String, T)>,
    q: &HashMap<String, String>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let size = match q.get("pageSize") {
        None => 100,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| invalid(format!("Invalid pageSize {s:?}")))?,
    };
    let size = if size == 0 {
        100
    } else {
        size.min(1000) as usize
    };
    let token = q.get("pageToken").filter(|t| !t.is_empty());
    let mut rest: Vec<_> = items
        .into_iter()
        .filter(|(n, _)| token.is_none_or(|t| n.as_str() > t.as_str()))
        .collect();
    let more = rest.len() > size;
    rest.truncate(size);
    let next = if more {
        rest.last().map(|(n, _)| n.clone())
    } else {
        None
    };
    Ok((rest.into_iter().map(|(_, v)| v).collect(), next))
}

type P2 = Path<(String, String)>;
type P3 = Path<(String, String, String)>;
type P4 = Path<(String, String, String, String)>;
type P5 = Path<(String, String, String, String, String)>;
type Q = Query<HashMap<String, String>>;
type St = State<Arc<RunState>>;

/// The axum router of the Cloud Run Admin API v2 endpoints (paths start with `/v2/`).
pub fn router(state: Arc<RunState>) -> Router {
    routes(state).into_router()
}

/// The Cloud Run Admin API v2 routes, each with the discovery-document methods it serves
/// (custom verbs such as `jobs/{job}:run` share their path pattern with the resource in axum).
pub fn routes(state: Arc<RunState>) -> RouteTable {
    const JOBS: &str = "/v2/projects/{project}/locations/{location}/jobs";
    const JOB: &str = "/v2/projects/{project}/locations/{location}/jobs/{job}";
    const EXECS: &str = "/v2/projects/{project}/locations/{location}/jobs/{job}/executions";
    const EXEC: &str =
        "/v2/projects/{project}/locations/{location}/jobs/{job}/executions/{execution}";
    const TASKS: &str =
        "/v2/projects/{project}/locations/{location}/jobs/{job}/executions/{execution}/tasks";
    const TASK: &str = "/v2/projects/{project}/locations/{location}/jobs/{job}/executions/{execution}/tasks/{task}";
    const OP: &str = "/v2/projects/{project}/locations/{location}/operations/{operation}";
    fn g(ids: &'static [&'static str]) -> Api {
        Api::Google("run.v2", ids)
    }
    RouteTable::new()
        .route(
            Method::GET,
            JOBS,
            g(&["run.projects.locations.jobs.list"]),
            list_jobs,
        )
        .route(
            Method::POST,
            JOBS,
            g(&["run.projects.locations.jobs.create"]),
            create_job,
        )
        .route(
            Method::GET,
            JOB,
            g(&["run.projects.locations.jobs.get"]),
            get_job,
        )
        .route(
            Method::DELETE,
            JOB,
            g(&["run.projects.locations.jobs.delete"]),
            delete_job,
        )
        .route(
            Method::POST,
            JOB,
            g(&["run.projects.locations.jobs.run"]),
            post_job,
        )
        .route(
            Method::GET,
            EXECS,
            g(&["run.projects.locations.jobs.executions.list"]),
            list_executions,
        )
        .route(
            Method::GET,
            EXEC,
            g(&["run.projects.locations.jobs.executions.get"]),
            get_execution,
        )
        .route(
            Method::DELETE,
            EXEC,
            g(&["run.projects.locations.jobs.executions.delete"]),
            delete_execution,
        )
        .route(
            Method::POST,
            EXEC,
            g(&["run.projects.locations.jobs.executions.cancel"]),
            post_execution,
        )
        .route(
            Method::GET,
            TASKS,
            g(&["run.projects.locations.jobs.executions.tasks.list"]),
            list_tasks,
        )
        .route(
            Method::GET,
            TASK,
            g(&["run.projects.locations.jobs.executions.tasks.get"]),
            get_task,
        )
        .route(
            Method::GET,
            OP,
            g(&["run.projects.locations.operations.get"]),
            get_operation,
        )
        .route(
            Method::POST,
            OP,
            g(&["run.projects.locations.operations.wait"]),
            post_operation,
        )
        .with_state(state)
}

async fn create_job(State(st): St, Path((p, l)): P2, Query(q): Q, body: Bytes) -> ApiResult {
    st.guard("run.jobs.create").await?;
    let mut job: Job = parse_body(&body)?;
    let id = q.get("jobId").ok_or_else(|| invalid("jobId is required"))?;
    if !spec::valid_id(id) {
        return Err(invalid(format!(
            "Invalid jobId {id:?}: it must start with a lowercase letter, contain only lowercase letters, digits and hyphens, not end with a hyphen, and be at most 63 characters"
        )));
    }
    spec::validate(&job.template).map_err(invalid)?;
    st.check_gcs_volumes(&job.template.template)?;
    let parent = format!("projects/{p}/locations/{l}");
    let name = format!("{parent}/jobs/{id}");
    let t = now();
    job.name = name.clone();
    job.uid = uuid::Uuid::new_v4().to_string();
    job.generation = Some(1);
    job.observed_generation = Some(1);
    job.create_time = Some(t.clone());
    job.update_time = Some(t.clone());
    job.launch_stage.get_or_insert_with(|| "GA".into());
    job.terminal_condition = Some(cond("Ready", "CONDITION_SUCCEEDED", None, &Some(t)));
    job.conditions = vec![];
    job.execution_count = Some(0);
    job.latest_created_execution = None;
    job.reconciling = false;
    job.etag = Some(format!("\"{}\"", rand_suffix(12)));
    // The latency profile's job-create operation: done after a while, as Google's reconciles.
    // The job itself is readable and runnable at once (the twin does not model a job that
    // cannot run before its create operation is done; Google does not document either way).
    let create_delay = st.cfg.faults.phase_delay(profile::JOB_CREATE_OP);
    let create_ready = (!create_delay.is_zero()).then(|| Instant::now() + create_delay);
    let op = {
        let mut g = st.lock();
        if g.jobs.contains_key(&name) {
            return Err(
                ApiError::conflict(format!("Resource '{name}' already exists."))
                    .in_dialect(Dialect::Run),
            );
        }
        let (op, failed) = g.job_op(&parent, typed(&job, JOB_TYPE_URL), create_ready);
        if failed {
            job.terminal_condition = Some(cond(
                "Ready",
                "CONDITION_FAILED",
                Some(g.job_ops.error.message.clone()),
                &job.create_time,
            ));
            if let Some(OpRec::Done {
                metadata, response, ..
            }) = g.operations.get_mut(&op)
            {
                *metadata = typed(&job, JOB_TYPE_URL);
                *response = metadata.clone();
            }
        }
        g.jobs.insert(name.clone(), job.clone());
        let lost = g.job_ops.lost_create_responses > 0;
        if lost {
            g.job_ops.lost_create_responses -= 1;
            g.job_op_counts.lost_responses += 1;
        }
        (g.read_op(&op), lost)
    };
    st.bump();
    match op {
        (_, true) => Err(unavailable(
            "The service is currently unavailable (emulator: the job was created and this answer dropped).",
        )),
        (op, false) => ok(op),
    }
}

async fn list_jobs(State(st): St, Path((p, l)): P2, Query(q): Q) -> ApiResult {
    st.guard("run.jobs.list").await?;
    let prefix = format!("projects/{p}/locations/{l}/jobs/");
    let items: Vec<(String, Job)> = {
        let g = st.lock();
        g.jobs
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .filter_map(|n| g.job_view(n).map(|j| (n.clone(), j)))
            .collect()
    };
    let (jobs, next_page_token) = paginate(items, &q)?;
    ok(ListJobsResponse {
        jobs,
        next_page_token,
    })
}

async fn get_job(State(st): St, Path((p, l, j)): P3) -> ApiResult {
    st.guard("run.jobs.get").await?;
    let name = format!("projects/{p}/locations/{l}/jobs/{j}");
    let job = st.lock().job_view(&name);
    ok(job.ok_or_else(|| not_found(&name))?)
}

async fn delete_job(State(st): St, Path((p, l, j)): P3) -> ApiResult {
    st.guard("run.jobs.delete").await?;
    let parent = format!("projects/{p}/locations/{l}");
    let name = format!("{parent}/jobs/{j}");
    let op = {
        let mut g = st.lock();
        let job = g.job_view(&name).ok_or_else(|| not_found(&name))?;
        let (op, failed) = g.job_op(&parent, typed(&job, JOB_TYPE_URL), None);
        if failed {
            return ok(g.read_op(&op));
        }
        g.jobs.remove(&name);
        let prefix = format!("{name}/executions/");
        let execs: Vec<String> = g
            .executions
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect();
        for e in execs {
            if let Some(rec) = g.executions.remove(&e) {
                rec.cancel.cancel();
            }
        }
        g.read_op(&op)
    };
    st.bump();
    ok(op)
}

async fn post_job(State(st): St, Path((p, l, seg)): P3, body: Bytes) -> ApiResult {
    let Some((j, "run")) = seg.split_once(':') else {
        return Err(not_found(&format!("POST jobs/{seg}")));
    };
    st.guard("run.jobs.run").await?;
    if st.shutdown.is_cancelled() {
        return Err(unavailable("The emulator is shutting down."));
    }
    let req: RunJobRequest = parse_body(&body)?;
    let parent = format!("projects/{p}/locations/{l}");
    let job_name = format!("{parent}/jobs/{j}");
    let job = st
        .lock()
        .jobs
        .get(&job_name)
        .cloned()
        .ok_or_else(|| not_found(&job_name))?;
    if let Some(etag) = &req.etag
        && job.etag.as_ref() != Some(etag)
    {
        return Err(precondition("The etag does not match the job's."));
    }
    let tmpl = spec::apply_overrides(&job.template, req.overrides.as_ref()).map_err(invalid)?;
    st.check_gcs_volumes(&tmpl.template)?;
    let task_count = tmpl.task_count.unwrap_or(1);
    let parallelism = tmpl.parallelism.unwrap_or(0);
    let max_retries = tmpl
        .template
        .max_retries
        .unwrap_or(spec::DEFAULT_MAX_RETRIES);
    let timeout = tmpl
        .template
        .timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(spec::DEFAULT_TIMEOUT);
    let mut task_template = tmpl.template.clone();
    task_template.max_retries = Some(max_retries);
    task_template.timeout = Some(format_duration(timeout));
    if req.validate_only {
        return validated_run(j, task_count, parallelism, task_template);
    }
    let exec_id = format!("{}-{}", j, rand_suffix(5));
    let exec_name = format!("{job_name}/executions/{exec_id}");
    let t = now();
    let cancel = st.shutdown.child_token();
    let exec = Execution {
        name: exec_name.clone(),
        uid: uuid::Uuid::new_v4().to_string(),
        generation: Some(1),
        observed_generation: Some(1),
        labels: tmpl.labels.clone(),
        create_time: Some(t.clone()),
        update_time: Some(t.clone()),
        launch_stage: job.launch_stage.clone(),
        job: j.to_string(),
        parallelism: Some(parallelism),
        task_count: Some(task_count),
        template: Some(task_template.clone()),
        etag: Some(format!("\"{}\"", rand_suffix(12))),
        ..Default::default()
    };
    let tasks = (0..task_count)
        .map(|i| TaskRec {
            phase: Phase::Pending,
            task: Task {
                name: format!("{exec_name}/tasks/{exec_id}-task{i}"),
                uid: uuid::Uuid::new_v4().to_string(),
                generation: Some(1),
                create_time: Some(t.clone()),
                update_time: Some(t.clone()),
                job: j.to_string(),
                execution: exec_id.clone(),
                containers: task_template.containers.clone(),
                volumes: task_template.volumes.clone(),
                max_retries: Some(max_retries),
                timeout: Some(format_duration(timeout)),
                index: i,
                ..Default::default()
            },
        })
        .collect();
    let op = {
        let mut g = st.lock();
        let Some(jr) = g.jobs.get_mut(&job_name) else {
            return Err(not_found(&job_name));
        };
        jr.execution_count = Some(jr.execution_count.unwrap_or(0) + 1);
        jr.latest_created_execution = Some(ExecutionReference {
            name: exec_name.clone(),
            create_time: Some(t.clone()),
            completion_time: None,
            completion_status: Some("EXECUTION_PENDING".into()),
        });
        g.executions.insert(
            exec_name.clone(),
            ExecRec {
                exec,
                tasks,
                cancel: cancel.clone(),
                start_failure: None,
            },
        );
        let op = g.new_op(
            &parent,
            OpRec::Exec {
                execution: exec_name.clone(),
            },
        );
        g.op_view(&op)
    };
    let plan = runner::ExecPlan {
        job_id: j.to_string(),
        exec_id,
        exec_name,
        task_count,
        parallelism: if parallelism <= 0 {
            task_count as usize
        } else {
            parallelism as usize
        },
        max_retries,
        timeout,
        template: task_template,
    };
    start_runner(&st, plan, cancel);
    st.bump();
    ok(op)
}

/// The reply to a `validateOnly` run: a finished operation describing the execution that
/// would have started, and nothing started.
fn validated_run(
    job: &str,
    task_count: i32,
    parallelism: i32,
    template: TaskTemplate,
) -> ApiResult {
    let x = Execution {
        job: job.to_string(),
        task_count: Some(task_count),
        parallelism: Some(parallelism),
        template: Some(template),
        ..Default::default()
    };
    ok(Operation {
        name: String::new(),
        metadata: Some(typed(&x, EXECUTION_TYPE_URL)),
        done: true,
        error: None,
        response: Some(typed(&x, EXECUTION_TYPE_URL)),
    })
}

/// Runs an execution's tasks in the background, kept with the other runners (finished ones
/// are dropped) so shutdown can wait for them.
fn start_runner(st: &Arc<RunState>, plan: runner::ExecPlan, cancel: CancellationToken) {
    let handle = tokio::spawn(runner::run_execution(st.clone(), plan, cancel));
    let mut r = st.runners.lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|h| !h.is_finished());
    r.push(handle);
}

async fn list_executions(State(st): St, Path((p, l, j)): P3, Query(q): Q) -> ApiResult {
    st.guard("run.executions.list").await?;
    let job = format!("projects/{p}/locations/{l}/jobs/{j}");
    let prefix = format!("{job}/executions/");
    let items: Vec<(String, Execution)> = {
        let g = st.lock();
        if !g.jobs.contains_key(&job) {
            return Err(not_found(&job));
        }
        g.executions
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(n, e)| (n.clone(), exec_view(e)))
            .collect()
    };
    let (executions, next_page_token) = paginate(items, &q)?;
    ok(ListExecutionsResponse {
        executions,
        next_page_token,
    })
}

async fn get_execution(State(st): St, Path((p, l, j, e)): P4) -> ApiResult {
    st.guard("run.executions.get").await?;
    let name = format!("projects/{p}/locations/{l}/jobs/{j}/executions/{e}");
    let x = st.lock().executions.get(&name).map(exec_view);
    ok(x.ok_or_else(|| not_found(&name))?)
}

async fn delete_execution(State(st): St, Path((p, l, j, e)): P4) -> ApiResult {
    st.guard("run.executions.delete").await?;
    let parent = format!("projects/{p}/locations/{l}");
    let name = format!("{parent}/jobs/{j}/executions/{e}");
    let op = {
        let mut g = st.lock();
        let rec = g.executions.remove(&name).ok_or_else(|| not_found(&name))?;
        rec.cancel.cancel();
        let v = typed(&exec_view(&rec), EXECUTION_TYPE_URL);
        let op = g.new_op(
            &parent,
            OpRec::Done {
                metadata: v.clone(),
                response: v,
                pending_reads: 0,
                error: None,
                ready_at: None,
            },
        );
        g.op_view(&op)
    };
    st.bump();
    ok(op)
}

async fn post_execution(State(st): St, Path((p, l, j, seg)): P4, body: Bytes) -> ApiResult {
    let Some((e, "cancel")) = seg.split_once(':') else {
        return Err(not_found(&format!("POST executions/{seg}")));
    };
    st.guard("run.executions.cancel").await?;
    let _: Value = parse_body(&body)?;
    let parent = format!("projects/{p}/locations/{l}");
    let name = format!("{parent}/jobs/{j}/executions/{e}");
    let op = {
        let mut g = st.lock();
        let rec = g.executions.get(&name).ok_or_else(|| not_found(&name))?;
        if rec.exec.completion_time.is_some() {
            return Err(precondition(format!(
                "Execution {name} has already completed and cannot be cancelled."
            )));
        }
        rec.cancel.cancel();
        let op = g.new_op(
            &parent,
            OpRec::Exec {
                execution: name.clone(),
            },
        );
        g.op_view(&op)
    };
    st.bump();
    ok(op)
}

async fn list_tasks(State(st): St, Path((p, l, j, e)): P4, Query(q): Q) -> ApiResult {
    st.guard("run.tasks.list").await?;
    let name = format!("projects/{p}/locations/{l}/jobs/{j}/executions/{e}");
    let items: Vec<(String, Task)> = {
        let g = st.lock();
        let rec = g.executions.get(&name).ok_or_else(|| not_found(&name))?;
        // Task names sort by index only within a width; order by index and key by a padded index.
        rec.tasks
            .iter()
            .map(|t| (format!("{:08}", t.task.index), task_view(t)))
            .collect()
    };
    let (tasks, next_page_token) = paginate(items, &q)?;
    ok(ListTasksResponse {
        tasks,
        next_page_token,
    })
}

async fn get_task(State(st): St, Path((p, l, j, e, t)): P5) -> ApiResult {
    st.guard("run.tasks.get").await?;
    let exec = format!("projects/{p}/locations/{l}/jobs/{j}/executions/{e}");
    let name = format!("{exec}/tasks/{t}");
    let task = st.lock().executions.get(&exec).and_then(|rec| {
        rec.tasks
            .iter()
            .find(|x| x.task.name == name)
            .map(task_view)
    });
    ok(task.ok_or_else(|| not_found(&name))?)
}

async fn get_operation(State(st): St, Path((p, l, o)): P3) -> ApiResult {
    st.guard("run.operations.get").await?;
    let name = format!("projects/{p}/locations/{l}/operations/{o}");
    let op = st.lock().read_op(&name);
    ok(op.ok_or_else(|| not_found(&name))?)
}

/// Longest server-side wait of `operations/{id}:wait`.
const MAX_WAIT: Duration = Duration::from_secs(600);

async fn post_operation(State(st): St, Path((p, l, seg)): P3, body: Bytes) -> ApiResult {
    let Some((o, "wait")) = seg.split_once(':') else {
        return Err(not_found(&format!("POST operations/{seg}")));
    };
    st.guard("run.operations.wait").await?;
    let req: Value = parse_body(&body)?;
    let timeout = match req.get("timeout") {
        None | Some(Value::Null) => MAX_WAIT,
        Some(Value::String(s)) => parse_duration(s)
            .ok_or_else(|| invalid(format!("Invalid timeout {s:?}")))?
            .min(MAX_WAIT),
        Some(other) => return Err(invalid(format!("Invalid timeout {other}"))),
    };
    let name = format!("projects/{p}/locations/{l}/operations/{o}");
    let mut deadline = Instant::now() + timeout;
    // WaitOperation is best effort and may return before the operation is done, even at once
    // (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.operations/wait);
    // the latency profile says how often and how soon.
    if let Some(early) = st.cfg.faults.wait_returns_early() {
        deadline = deadline.min(Instant::now() + early);
    }
    let mut rx = st.changed.subscribe();
    loop {
        let (op, pending, ready_at) = {
            let mut g = st.lock();
            let (pending, ready_at) = match g.operations.get(&name) {
                Some(OpRec::Done {
                    pending_reads,
                    ready_at,
                    ..
                }) => (*pending_reads > 0, *ready_at),
                _ => (false, None),
            };
            (g.read_op(&name), pending, ready_at)
        };
        let op = op.ok_or_else(|| not_found(&name))?;
        // A pending job operation returns before it is done, as Google's wait may.
        if op.done || pending || Instant::now() >= deadline {
            return ok(op);
        }
        let wake = ready_at.map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            r = rx.changed() => { if r.is_err() { return ok(op); } }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// The last-attempt result of a task that was cancelled.
fn cancelled_result() -> TaskAttemptResult {
    TaskAttemptResult {
        status: Some(Status {
            code: 1,
            message: "The task was cancelled.".into(),
        }),
        exit_code: None,
    }
}
