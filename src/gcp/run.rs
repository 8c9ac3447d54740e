//! Cloud Run Admin API v2 client (jobs, executions, tasks, operations) over reqwest.
//!
//! The same client talks to `https://run.googleapis.com` and to the local emulator: the base URL
//! comes from [`RunClient::new`], or from the `CLOUD_RUN_EMULATOR_HOST` environment variable in
//! [`RunClient::from_env`] (like `STORAGE_EMULATOR_HOST`: `host:port` means `http://host:port`,
//! a value with a scheme is used as is). Calls are retried with [`RetryPolicy`] on 429, 5xx and
//! transport errors. Resource names are full names (`projects/{p}/locations/{l}/jobs/{j}`...).
//!
//! Note: `run_job` is retried like every call; a 5xx on Google's side after the execution was
//! created could, in theory, start a second execution (the real API has no request id here).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::gcp::retry::{RetryPolicy, retryable_status};
use crate::protocol::{ErrorKind, SandboxError};

/// Default base URL of the Cloud Run Admin API.
pub const DEFAULT_RUN_BASE_URL: &str = "https://run.googleapis.com";

/// Environment variable that points the client at an emulator (`host:port` or a URL).
pub const RUN_EMULATOR_HOST_ENV: &str = "CLOUD_RUN_EMULATOR_HOST";

/// The `@type` of an Execution inside an Operation's metadata/response.
pub const EXECUTION_TYPE_URL: &str = "type.googleapis.com/google.cloud.run.v2.Execution";

/// The `@type` of a Job inside an Operation's metadata/response.
pub const JOB_TYPE_URL: &str = "type.googleapis.com/google.cloud.run.v2.Job";

/// Serialises an `Option<i64>` the Google way: as a JSON string; accepts strings or numbers.
pub mod int64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the value as a string.
    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads a string or a number.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(i64),
        }
        match Option::<Either>::deserialize(d)? {
            None => Ok(None),
            Some(Either::N(n)) => Ok(Some(n)),
            Some(Either::S(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// A Cloud Run job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Job {
    /// Full name `projects/{p}/locations/{l}/jobs/{id}`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Server-assigned unique id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Generation (int64 as a string on the wire).
    #[serde(with = "int64_string", skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// User labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// RFC 3339 last update time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// Launch stage (e.g. "GA").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_stage: Option<String>,
    /// The template of every execution.
    pub template: ExecutionTemplate,
    /// Generation last reconciled.
    #[serde(with = "int64_string", skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Ready condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_condition: Option<Condition>,
    /// Other conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Executions created so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<i32>,
    /// The newest execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_created_execution: Option<ExecutionReference>,
    /// True while the job is being reconciled.
    pub reconciling: bool,
    /// Entity tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// What every execution of a job runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecutionTemplate {
    /// Labels copied to executions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Max tasks running at once (0 or absent: as many as possible).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// Tasks per execution (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_count: Option<i32>,
    /// The task template.
    pub template: TaskTemplate,
}

/// What one task runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskTemplate {
    /// The containers (the emulator runs exactly one).
    pub containers: Vec<Container>,
    /// Volumes the containers can mount.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Retries per task (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Per-attempt timeout, e.g. "600s".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Service account email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Execution environment (e.g. "EXECUTION_ENVIRONMENT_GEN2").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_environment: Option<String>,
}

/// A container of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// Container name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image reference.
    pub image: String,
    /// Entrypoint override.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Resource limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Volume mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// One environment variable (literal values only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Literal value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl EnvVar {
    /// A name/value pair.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

/// Resource limits: `cpu` ("1", "1000m") and `memory` ("512Mi", "2Gi").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceRequirements {
    /// Limits by resource name.
    pub limits: BTreeMap<String, String>,
}

/// Where a volume appears in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    /// Volume name.
    pub name: String,
    /// Absolute path in the container.
    pub mount_path: String,
}

/// A volume: a Cloud Storage bucket or an emptyDir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    /// Volume name.
    pub name: String,
    /// A Cloud Storage bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsVolumeSource>,
    /// A scratch directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
}

/// A Cloud Storage volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GcsVolumeSource {
    /// Bucket name.
    pub bucket: String,
    /// Mount read-only.
    pub read_only: bool,
    /// gcsfuse options, e.g. "only-dir=sessions/x/workspace".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
}

/// An emptyDir volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmptyDirVolumeSource {
    /// "MEMORY" for a tmpfs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// Size limit, e.g. "64Mi".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
}

/// A resource condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// Condition type ("Ready", "Completed", "Started", "ResourcesAvailable").
    #[serde(rename = "type")]
    pub type_: String,
    /// CONDITION_SUCCEEDED / CONDITION_FAILED / CONDITION_PENDING / CONDITION_RECONCILING.
    pub state: String,
    /// Human-readable detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the state last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// ERROR / WARNING / INFO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Common reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Execution reason (NON_ZERO_EXIT_CODE, CANCELLED...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_reason: Option<String>,
}

impl Condition {
    /// A condition of `type_` in `state`.
    pub fn new(type_: &str, state: &str) -> Self {
        Condition {
            type_: type_.into(),
            state: state.into(),
            ..Default::default()
        }
    }
}

/// A short reference to an execution (on the job).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecutionReference {
    /// Execution full name.
    pub name: String,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// Completion time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// EXECUTION_SUCCEEDED / EXECUTION_FAILED / EXECUTION_RUNNING / EXECUTION_PENDING / EXECUTION_CANCELLED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_status: Option<String>,
}

/// One execution of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Execution {
    /// Full name `.../jobs/{j}/executions/{e}`.
    pub name: String,
    /// Unique id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Generation.
    #[serde(with = "int64_string", skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// When the first task started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the execution finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Last update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// Launch stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_stage: Option<String>,
    /// The job's short id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job: String,
    /// Max tasks at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// Number of tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_count: Option<i32>,
    /// The task template (after overrides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TaskTemplate>,
    /// True while not finished.
    pub reconciling: bool,
    /// Conditions ("Completed", "ResourcesAvailable", "Started").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation observed.
    #[serde(with = "int64_string", skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Tasks running now.
    pub running_count: i32,
    /// Tasks that succeeded.
    pub succeeded_count: i32,
    /// Tasks that failed.
    pub failed_count: i32,
    /// Tasks that were cancelled.
    pub cancelled_count: i32,
    /// Retries across tasks.
    pub retried_count: i32,
    /// Where the logs are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_uri: Option<String>,
    /// Entity tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl Execution {
    /// The "Completed" condition, if present.
    pub fn completed_condition(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Completed")
    }

    /// True once the execution has finished (successfully or not).
    pub fn is_done(&self) -> bool {
        self.completion_time.is_some()
    }

    /// True when it finished and every task succeeded.
    pub fn succeeded(&self) -> bool {
        self.completed_condition()
            .is_some_and(|c| c.state == "CONDITION_SUCCEEDED")
    }

    /// How a finished execution ended, for error messages: "succeeded", "cancelled" or
    /// "failed: <the Completed condition's message>".
    pub fn ending(&self) -> String {
        let cond = self.completed_condition();
        if self.succeeded() {
            return "succeeded".into();
        }
        let cancelled = self.cancelled_count > 0
            || cond.is_some_and(|c| c.execution_reason.as_deref() == Some("CANCELLED"));
        let message = cond
            .and_then(|c| c.message.as_deref())
            .map(|m| m.lines().next().unwrap_or(m).trim().to_string())
            .filter(|m| !m.is_empty());
        match (cancelled, message) {
            (true, _) => "cancelled".into(),
            (false, Some(m)) => format!("failed: {m}"),
            (false, None) => "failed".into(),
        }
    }
}

/// One task of an execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Task {
    /// Full name `.../executions/{e}/tasks/{t}`.
    pub name: String,
    /// Unique id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Generation.
    #[serde(with = "int64_string", skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// When the current attempt started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the task finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Last update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// Job short id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job: String,
    /// Execution short id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub execution: String,
    /// Containers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// Volumes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Retries allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Per-attempt timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// True while not finished.
    pub reconciling: bool,
    /// Conditions ("Completed", "Started").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Index within the execution.
    pub index: i32,
    /// Retries so far.
    pub retried: i32,
    /// Result of the last finished attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt_result: Option<TaskAttemptResult>,
    /// Where the logs are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_uri: Option<String>,
    /// Entity tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl Task {
    /// The "Completed" condition, if present.
    pub fn completed_condition(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Completed")
    }
}

/// How a task attempt ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskAttemptResult {
    /// google.rpc.Status of the attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Container exit code (absent when it never exited by itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A google.rpc.Status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    /// gRPC code (0 OK, 1 CANCELLED, 4 DEADLINE_EXCEEDED...).
    pub code: i32,
    /// Message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A long-running operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    /// Full name `projects/{p}/locations/{l}/operations/{id}`.
    pub name: String,
    /// The resource being worked on, with `@type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// True when finished.
    pub done: bool,
    /// The error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Status>,
    /// The result, with `@type`, if it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

impl Operation {
    /// The execution in the response, else in the metadata.
    pub fn execution(&self) -> Option<Execution> {
        self.typed(EXECUTION_TYPE_URL)
    }

    /// The job in the response, else in the metadata.
    pub fn job(&self) -> Option<Job> {
        self.typed(JOB_TYPE_URL)
    }

    fn typed<T: DeserializeOwned>(&self, type_url: &str) -> Option<T> {
        [&self.response, &self.metadata]
            .into_iter()
            .flatten()
            .find(|v| v.get("@type").and_then(|t| t.as_str()) == Some(type_url))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// Body of `jobs/{j}:run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunJobRequest {
    /// Per-execution overrides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Overrides>,
    /// Validate only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub validate_only: bool,
    /// Entity tag precondition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// RunJobRequest overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Overrides {
    /// Per-container overrides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_overrides: Vec<ContainerOverride>,
    /// Task count override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_count: Option<i32>,
    /// Timeout override, e.g. "30s".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Overrides of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerOverride {
    /// Container name (empty: the only container).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Replacement args (when non-empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Env vars added or replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Clear the args.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub clear_args: bool,
}

/// A page of jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListJobsResponse {
    /// Jobs.
    pub jobs: Vec<Job>,
    /// Token of the next page, absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A page of executions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListExecutionsResponse {
    /// Executions.
    pub executions: Vec<Execution>,
    /// Token of the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListTasksResponse {
    /// Tasks.
    pub tasks: Vec<Task>,
    /// Token of the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The Google error envelope `{"error": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The body of a Google API error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    /// HTTP status code.
    pub code: u16,
    /// Message.
    pub message: String,
    /// Canonical status name (NOT_FOUND...).
    pub status: String,
}

/// Why a Cloud Run API call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// The API answered with an error status.
    #[error("Cloud Run API {method} {path}: HTTP {status} {code}: {message}")]
    Api {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// Canonical code name (e.g. NOT_FOUND), empty if the body had none.
        code: String,
        /// Google's message (or the raw body).
        message: String,
    },
    /// The request did not get an HTTP answer.
    #[error("Cloud Run API {method} {path}: transport error: {detail}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// The transport error.
        detail: String,
        /// True when it was a timeout.
        timeout: bool,
    },
    /// The answer could not be decoded.
    #[error("Cloud Run API {path}: undecodable response: {detail}")]
    Decode {
        /// Request path.
        path: String,
        /// The decoder's message.
        detail: String,
    },
    /// No access token could be obtained.
    #[error("Cloud Run API: getting an access token failed: {0}")]
    Auth(String),
    /// The client was configured wrongly.
    #[error("Cloud Run API: bad configuration: {0}")]
    Config(String),
    /// A long-running operation finished with an error.
    #[error("Cloud Run operation {operation} ({what}) failed: code {code}: {message}")]
    OperationFailed {
        /// What the operation did ("job creation"...).
        what: String,
        /// Operation name.
        operation: String,
        /// gRPC code of its error.
        code: i32,
        /// Its message.
        message: String,
    },
    /// A resource reports a failed terminal condition.
    #[error("Cloud Run {name} is not ready: {state}: {message}")]
    NotReady {
        /// Resource name.
        name: String,
        /// The condition's state.
        state: String,
        /// The condition's message.
        message: String,
    },
    /// Waiting for an operation or a resource ran out of time.
    #[error("Cloud Run: {what} did not finish in {secs} s")]
    Deadline {
        /// What was awaited.
        what: String,
        /// The limit.
        secs: u64,
    },
}

impl RunError {
    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RunError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when retrying may help (429, 5xx, transport).
    pub fn is_retryable(&self) -> bool {
        match self {
            RunError::Api { status, .. } => retryable_status(*status),
            RunError::Transport { .. } => true,
            _ => false,
        }
    }

    /// The protocol error class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Api { status, .. } => match *status {
                400 | 409 | 412 => ErrorKind::InvalidInput,
                401 | 403 => ErrorKind::Permission,
                404 => ErrorKind::NotFound,
                408 | 504 => ErrorKind::Timeout,
                501 => ErrorKind::Unsupported,
                // What is still failing after the retries is the service's availability, as the
                // Storage client counts it.
                429 | 500 | 502 | 503 => ErrorKind::Network,
                _ => ErrorKind::Backend,
            },
            RunError::Transport { timeout: true, .. } => ErrorKind::Timeout,
            RunError::Transport { .. } => ErrorKind::Network,
            RunError::Auth(_) => ErrorKind::Permission,
            RunError::Decode { .. } | RunError::Config(_) | RunError::NotReady { .. } => {
                ErrorKind::Backend
            }
            RunError::Deadline { .. } => ErrorKind::Timeout,
            // google.rpc.Code of the operation's error.
            RunError::OperationFailed { code, .. } => match code {
                3 | 6 | 9 | 11 => ErrorKind::InvalidInput,
                4 => ErrorKind::Timeout,
                5 => ErrorKind::NotFound,
                7 | 16 => ErrorKind::Permission,
                12 => ErrorKind::Unsupported,
                14 => ErrorKind::Network,
                _ => ErrorKind::Backend,
            },
        }
    }

    /// This failure as a protocol error of sandbox `sandbox` in operation `op`.
    pub fn into_sandbox_error(self, sandbox: &str, op: &str) -> SandboxError {
        SandboxError::new(self.kind(), sandbox, op, self.to_string()).with_source(self)
    }
}

/// Produces a bearer token for each request (e.g. from `gcp::auth`).
pub type TokenProvider = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// Time limit of one Admin API request (each attempt; `operations.wait` adds its own wait).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest server-side wait asked of one `operations.wait`.
const WAIT_SLICE: Duration = Duration::from_secs(30);

/// A Cloud Run Admin API v2 client.
#[derive(Clone)]
pub struct RunClient {
    http: reqwest::Client,
    base: String,
    token: Option<TokenProvider>,
    tokens: crate::gcp::auth::TokenSource,
    retry: RetryPolicy,
    recorder: Option<super::observe::CallRecorder>,
    call_timeout: Duration,
}

impl std::fmt::Debug for RunClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunClient")
            .field("base", &self.base)
            .field("auth", &self.token.is_some())
            .field("retry", &self.retry)
            .finish()
    }
}

impl RunClient {
    /// A client for `base_url` (e.g. `https://run.googleapis.com` or `http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<Self, RunError> {
        let base = base_url.trim_end_matches('/').to_string();
        url::Url::parse(&base).map_err(|e| RunError::Config(format!("base URL {base}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RunError::Config(e.to_string()))?;
        Ok(RunClient {
            http,
            base,
            token: None,
            tokens: crate::gcp::auth::TokenSource::Anonymous,
            retry: RetryPolicy::default(),
            recorder: None,
            call_timeout: CALL_TIMEOUT,
        })
    }

    /// A client for `$CLOUD_RUN_EMULATOR_HOST` when set, else for Google.
    pub fn from_env() -> Result<Self, RunError> {
        match std::env::var(RUN_EMULATOR_HOST_ENV) {
            Ok(h) if !h.trim().is_empty() => {
                let h = h.trim();
                if h.contains("://") {
                    Self::new(h)
                } else {
                    Self::new(&format!("http://{h}"))
                }
            }
            _ => Self::new(DEFAULT_RUN_BASE_URL),
        }
    }

    /// Sends `Authorization: Bearer <token>` from `provider` on every request.
    pub fn with_token_provider(mut self, provider: TokenProvider) -> Self {
        self.token = Some(provider);
        self
    }

    /// Sends the headers of `tokens` (bearer token, quota project; nothing when anonymous)
    /// on every request.
    pub fn with_tokens(mut self, tokens: crate::gcp::auth::TokenSource) -> Self {
        self.tokens = tokens;
        self
    }

    /// Records how long each call takes (`bench --record-profile`).
    pub fn with_recorder(mut self, recorder: super::observe::CallRecorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Uses `policy` for retries.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Limits each request to `timeout` (default [`CALL_TIMEOUT`]).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Polls `op` until it is done or `deadline` passes; `Ok(None)` when time ran out. Reads
    /// are `operations.wait` calls of at most 30 s each; one that comes back early and not
    /// done (Google's wait may) is followed by a growing pause (100 ms doubling to 5 s), so
    /// an operation that reconciles for a while is not polled in a tight loop. The
    /// operation's `error` is not judged here (see [`RunClient::finish_operation`]).
    pub async fn poll_operation(
        &self,
        op: Operation,
        deadline: std::time::Instant,
    ) -> Result<Option<Operation>, RunError> {
        let mut op = op;
        let mut pause = Duration::from_millis(100);
        loop {
            if op.done {
                return Ok(Some(op));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let asked = left.min(WAIT_SLICE);
            let sent = std::time::Instant::now();
            op = self.wait_operation(&op.name, asked).await?;
            if !op.done && sent.elapsed() < asked {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Polls `op` (`what` names it in errors) until done: an operation that ends with an
    /// `error`, or is not done by `deadline`, is an error.
    pub async fn finish_operation(
        &self,
        op: Operation,
        deadline: std::time::Instant,
        what: &str,
    ) -> Result<Operation, RunError> {
        let started = std::time::Instant::now();
        let name = op.name.clone();
        let op = self
            .poll_operation(op, deadline)
            .await?
            .ok_or_else(|| RunError::Deadline {
                what: format!("{what} (operation {name})"),
                secs: deadline.saturating_duration_since(started).as_secs(),
            })?;
        match &op.error {
            Some(e) => Err(RunError::OperationFailed {
                what: what.into(),
                operation: op.name.clone(),
                code: e.code,
                message: e.message.clone(),
            }),
            None => Ok(op),
        }
    }

    /// Reads job `name` until its `terminalCondition` (Ready) has succeeded: failed is an
    /// error, and a job still reconciling at `deadline` is a [`RunError::Deadline`]. Reads
    /// back off from 100 ms to 5 s.
    pub async fn wait_job_ready(
        &self,
        name: &str,
        deadline: std::time::Instant,
    ) -> Result<Job, RunError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let job = self.get_job(name).await?;
            let cond = job.terminal_condition.clone().unwrap_or_default();
            match cond.state.as_str() {
                "CONDITION_SUCCEEDED" => return Ok(job),
                "CONDITION_FAILED" => {
                    return Err(RunError::NotReady {
                        name: name.into(),
                        state: cond.state,
                        message: cond.message.unwrap_or_default(),
                    });
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(RunError::Deadline {
                    what: format!("job {name} becoming ready"),
                    secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Creates job `job_id` under `parent` (`projects/{p}/locations/{l}`); returns the operation.
    pub async fn create_job(
        &self,
        parent: &str,
        job_id: &str,
        job: &Job,
    ) -> Result<Operation, RunError> {
        let body = serde_json::to_value(job).map_err(|e| RunError::Config(e.to_string()))?;
        self.call(
            reqwest::Method::POST,
            &format!("v2/{parent}/jobs"),
            &[("jobId", job_id.to_string())],
            Some(body),
        )
        .await
    }

    /// Gets a job by full name.
    pub async fn get_job(&self, name: &str) -> Result<Job, RunError> {
        self.call(reqwest::Method::GET, &format!("v2/{name}"), &[], None)
            .await
    }

    /// Lists one page of jobs under `parent`.
    pub async fn list_jobs(
        &self,
        parent: &str,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<ListJobsResponse, RunError> {
        self.call(
            reqwest::Method::GET,
            &format!("v2/{parent}/jobs"),
            &page_query(page_size, page_token),
            None,
        )
        .await
    }

    /// Deletes a job; returns the operation.
    pub async fn delete_job(&self, name: &str) -> Result<Operation, RunError> {
        self.call(reqwest::Method::DELETE, &format!("v2/{name}"), &[], None)
            .await
    }

    /// Starts an execution of a job, with optional overrides; the operation's metadata is the
    /// execution and it is done when the execution ends.
    pub async fn run_job(
        &self,
        name: &str,
        overrides: Option<Overrides>,
    ) -> Result<Operation, RunError> {
        let req = RunJobRequest {
            overrides,
            ..Default::default()
        };
        let body = serde_json::to_value(&req).map_err(|e| RunError::Config(e.to_string()))?;
        self.call(
            reqwest::Method::POST,
            &format!("v2/{name}:run"),
            &[],
            Some(body),
        )
        .await
    }

    /// Gets an operation by full name.
    pub async fn get_operation(&self, name: &str) -> Result<Operation, RunError> {
        self.call(reqwest::Method::GET, &format!("v2/{name}"), &[], None)
            .await
    }

    /// Waits server-side up to `timeout` for an operation; returns it, done or not.
    pub async fn wait_operation(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Operation, RunError> {
        let body = serde_json::json!({ "timeout": format_duration(timeout) });
        self.call_timed(
            reqwest::Method::POST,
            &format!("v2/{name}:wait"),
            &[],
            Some(body),
            self.call_timeout + timeout,
        )
        .await
    }

    /// Gets an execution by full name.
    pub async fn get_execution(&self, name: &str) -> Result<Execution, RunError> {
        self.call(reqwest::Method::GET, &format!("v2/{name}"), &[], None)
            .await
    }

    /// Lists one page of executions of a job.
    pub async fn list_executions(
        &self,
        job: &str,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<ListExecutionsResponse, RunError> {
        self.call(
            reqwest::Method::GET,
            &format!("v2/{job}/executions"),
            &page_query(page_size, page_token),
            None,
        )
        .await
    }

    /// Cancels a running execution; returns the operation.
    pub async fn cancel_execution(&self, name: &str) -> Result<Operation, RunError> {
        self.call(
            reqwest::Method::POST,
            &format!("v2/{name}:cancel"),
            &[],
            Some(serde_json::json!({})),
        )
        .await
    }

    /// Deletes an execution; returns the operation.
    pub async fn delete_execution(&self, name: &str) -> Result<Operation, RunError> {
        self.call(reqwest::Method::DELETE, &format!("v2/{name}"), &[], None)
            .await
    }

    /// Lists one page of tasks of an execution.
    pub async fn list_tasks(
        &self,
        execution: &str,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<ListTasksResponse, RunError> {
        self.call(
            reqwest::Method::GET,
            &format!("v2/{execution}/tasks"),
            &page_query(page_size, page_token),
            None,
        )
        .await
    }

    /// Gets a task by full name.
    pub async fn get_task(&self, name: &str) -> Result<Task, RunError> {
        self.call(reqwest::Method::GET, &format!("v2/{name}"), &[], None)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<T, RunError> {
        self.call_timed(method, path, query, body, self.call_timeout)
            .await
    }

    async fn call_timed<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<T, RunError> {
        let url = format!("{}/{}", self.base, path);
        let bytes = self
            .retry
            .run(
                |_| self.once(method.clone(), &url, path, query, body.as_ref(), timeout),
                RunError::is_retryable,
            )
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| RunError::Decode {
            path: path.to_string(),
            detail: e.to_string(),
        })
    }

    async fn once(
        &self,
        method: reqwest::Method,
        url: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, RunError> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .query(query)
            .timeout(timeout);
        if let Some(p) = &self.token {
            let tok = p().await.map_err(RunError::Auth)?;
            req = req.bearer_auth(tok);
        } else {
            req = self
                .tokens
                .authorize(req)
                .await
                .map_err(|e| RunError::Auth(e.to_string()))?;
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let transport = |e: reqwest::Error| RunError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            timeout: e.is_timeout(),
            detail: e.to_string(),
        };
        let sent = std::time::Instant::now();
        let resp = req.send().await.map_err(transport)?;
        if let Some(r) = &self.recorder {
            r.record(&super::observe::run_method(&method, path), sent.elapsed());
        }
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
            Ok(env) if !env.error.message.is_empty() || !env.error.status.is_empty() => {
                (env.error.status, env.error.message)
            }
            _ => (String::new(), String::from_utf8_lossy(&bytes).into_owned()),
        };
        tracing::debug!(%method, path, status, %code, %message, "Cloud Run API error");
        Err(RunError::Api {
            method: method.to_string(),
            path: path.to_string(),
            status,
            code,
            message,
        })
    }
}

fn page_query(page_size: Option<u32>, page_token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(n) = page_size {
        q.push(("pageSize", n.to_string()));
    }
    if let Some(t) = page_token {
        q.push(("pageToken", t.to_string()));
    }
    q
}

/// Formats a duration the protobuf JSON way ("600s", "1.5s").
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{:.9}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Parses a protobuf JSON duration ("600s", "0.5s"); None when malformed or negative.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let num = s.trim().strip_suffix('s')?;
    let secs: f64 = num.parse().ok()?;
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_fields_are_strings_both_ways() {
        let j = Job {
            generation: Some(3),
            ..Default::default()
        };
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["generation"], "3");
        let back: Job = serde_json::from_value(serde_json::json!({"generation": "7"})).unwrap();
        assert_eq!(back.generation, Some(7));
        let back: Job = serde_json::from_value(serde_json::json!({"generation": 8})).unwrap();
        assert_eq!(back.generation, Some(8));
        assert!(serde_json::from_value::<Job>(serde_json::json!({"generation": "x"})).is_err());
    }

    #[test]
    fn durations_round_trip() {
        assert_eq!(format_duration(Duration::from_secs(600)), "600s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(parse_duration("600s"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("0.25s"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn error_kinds() {
        let api = |status| RunError::Api {
            method: "GET".into(),
            path: "p".into(),
            status,
            code: String::new(),
            message: String::new(),
        };
        assert_eq!(api(404).kind(), ErrorKind::NotFound);
        assert_eq!(api(403).kind(), ErrorKind::Permission);
        assert!(api(429).is_retryable());
        assert!(!api(409).is_retryable());
    }

    #[test]
    fn operation_decodes_typed_payloads() {
        let op: Operation = serde_json::from_value(serde_json::json!({
            "name": "projects/p/locations/l/operations/o",
            "metadata": {"@type": EXECUTION_TYPE_URL, "name": "e", "taskCount": 2},
            "done": false
        }))
        .unwrap();
        assert_eq!(op.execution().unwrap().task_count, Some(2));
        assert!(op.job().is_none());
    }
}
