//! The Phase 0 preflight: the checklist that must pass before the Cloud Run backend is used
//! (bucket, its location/class, the `sessions/` lifecycle rule, IAM permissions, the Cloud Run
//! Admin API, and a test job run end to end with the executor image).
//!
//! The same code runs against the local emulator and against real Google Cloud: only the base
//! URLs and the credentials differ ([`PreflightClients`]). `cli` holds the `preflight` and
//! `emulator` subcommands.

mod job;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backends::cloudrun::{CloudRunConfig, Target};
use crate::emulator::LocalCloud;
use crate::gate::PreflightSummary;
use crate::gcp::clients::{ClientsError, GoogleClients};
use crate::gcp::iam::{ResourceManagerClient, ServiceUsageClient};
use crate::gcp::retry::RetryPolicy;
use crate::gcp::run::RunClient;
use crate::gcp::storage::{Bucket, Lifecycle, LifecycleRule, StorageClient, StorageError};

/// The prefix the lifecycle rule must cover.
pub const SESSIONS_PREFIX: &str = "sessions/";
/// Days after which `sessions/` objects must be deleted.
pub const SESSIONS_TTL_DAYS: u32 = 7;
/// The service whose enablement is checked.
pub const RUN_SERVICE: &str = "run.googleapis.com";
/// Permissions the harness needs on the bucket.
pub const BUCKET_PERMISSIONS: [&str; 5] = [
    "storage.objects.create",
    "storage.objects.get",
    "storage.objects.list",
    "storage.objects.delete",
    "storage.buckets.get",
];
/// Permissions the harness needs on the project: what the backend, `gc` and this preflight
/// call (jobs, executions, tasks, operations), and `iam.serviceAccounts.actAs`, without
/// which a job that runs as a service account cannot be created
/// (https://cloud.google.com/run/docs/reference/iam/permissions,
/// https://cloud.google.com/run/docs/securing/service-identity). `actAs` granted on the
/// service account alone, not the project, is not seen here.
pub const PROJECT_PERMISSIONS: [&str; 14] = [
    "run.jobs.create",
    "run.jobs.get",
    "run.jobs.list",
    "run.jobs.delete",
    "run.jobs.run",
    "run.jobs.runWithOverrides",
    "run.executions.get",
    "run.executions.list",
    "run.executions.cancel",
    "run.executions.delete",
    "run.tasks.get",
    "run.tasks.list",
    "run.operations.get",
    "iam.serviceAccounts.actAs",
];
pub use crate::gcp::clients::LOCAL_PROJECT;

/// Ids of the checklist items, in the order they run.
pub mod ids {
    /// The bucket exists.
    pub const BUCKET_EXISTS: &str = "bucket.exists";
    /// The bucket is in the configured location.
    pub const BUCKET_LOCATION: &str = "bucket.location";
    /// The bucket has the configured storage class.
    pub const BUCKET_STORAGE_CLASS: &str = "bucket.storage_class";
    /// A lifecycle rule deletes `sessions/` after 7 days.
    pub const BUCKET_LIFECYCLE: &str = "bucket.lifecycle";
    /// Bucket permissions.
    pub const IAM_BUCKET: &str = "iam.bucket";
    /// Project permissions.
    pub const IAM_PROJECT: &str = "iam.project";
    /// The Cloud Run Admin API is enabled.
    pub const API_RUN: &str = "api.run";
    /// A test job is created, run and deleted.
    pub const TEST_JOB: &str = "run.test_job";
}

/// Why the preflight could not even start (configuration, credentials, emulator).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The configuration is unusable.
    #[error("preflight configuration: {0}")]
    Config(String),
    /// No credentials.
    #[error("preflight credentials: {0}")]
    Auth(String),
    /// The embedded emulator did not start.
    #[error("the embedded emulator did not start: {0}")]
    Emulator(String),
    /// The JSON report could not be written.
    #[error("cannot write the preflight report {path}: {detail}")]
    Write {
        /// Target path.
        path: String,
        /// Cause.
        detail: String,
    },
}

/// Outcome of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Satisfied.
    Pass,
    /// Not satisfied; the preflight fails.
    Fail,
    /// Not checked (not configured, not asked, or an earlier item failed).
    Skip,
}

impl Status {
    /// The mark printed before the item: ✓, ✗ or –.
    pub fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Fail => "✗",
            Status::Skip => "–",
        }
    }
}

/// One checklist item's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Stable id (see [`ids`]).
    pub id: String,
    /// What is checked, in words.
    pub title: String,
    /// Outcome.
    pub status: Status,
    /// Why, with the values seen.
    pub reason: String,
    /// What `--fix` changed, when it changed something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// Time the item took, ms.
    pub elapsed_ms: f64,
}

/// The whole preflight outcome (also the JSON output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreflightReport {
    /// True when the target was an emulator (embedded or on loopback endpoints).
    pub emulated: bool,
    /// GCP project checked.
    pub project: String,
    /// Cloud Run region.
    pub region: String,
    /// State bucket.
    pub bucket: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// True when no item failed.
    pub passed: bool,
    /// The items, in order.
    pub checks: Vec<CheckResult>,
}

impl PreflightReport {
    /// The item with this id.
    pub fn check(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Counts of (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s| self.checks.iter().filter(|c| c.status == s).count();
        (n(Status::Pass), n(Status::Fail), n(Status::Skip))
    }

    /// The acceptance gate's view: failed items with their reasons, and items actually run.
    pub fn summary(&self) -> PreflightSummary {
        PreflightSummary {
            failures: self
                .checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| format!("{}: {}", c.id, c.reason))
                .collect(),
            checks: self
                .checks
                .iter()
                .filter(|c| c.status != Status::Skip)
                .count() as u64,
        }
    }

    /// Process exit code for CI: 0 when everything passed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.passed { 0 } else { 1 }
    }

    /// The checklist as text: one line per item (mark, id, reason), then a verdict line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Phase 0 preflight: project {} region {} bucket {}{}",
            self.project,
            self.region,
            self.bucket,
            if self.emulated { " (emulator)" } else { "" }
        );
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{} {:<width$}  {}",
                c.status.mark(),
                c.id,
                c.reason,
                width = width
            );
            if let Some(f) = &c.fixed {
                let _ = writeln!(out, "  {:<width$}  fixed: {f}", "", width = width);
            }
        }
        let (p, f, s) = self.counts();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            out,
            "preflight {verdict}: {p} of {} checks satisfied, {f} failing, {s} skipped",
            self.checks.len()
        );
        out
    }
}

impl From<&PreflightReport> for PreflightSummary {
    fn from(r: &PreflightReport) -> Self {
        r.summary()
    }
}

/// How the preflight runs.
#[derive(Debug, Clone)]
pub struct PreflightOptions {
    /// Repair what can be repaired (the lifecycle rule).
    pub fix: bool,
    /// Run the test job (off: the item is skipped).
    pub run_test_job: bool,
    /// Replaces the test job's command (default: the executor's worker with a short idle timeout).
    pub test_command: Option<Vec<String>>,
    /// Longest wait for the test job's execution.
    pub job_timeout: Duration,
}

impl Default for PreflightOptions {
    fn default() -> Self {
        PreflightOptions {
            fix: false,
            run_test_job: true,
            test_command: None,
            job_timeout: Duration::from_secs(300),
        }
    }
}

/// The clients and identities the checks use.
#[derive(Debug, Clone)]
pub struct PreflightClients {
    /// Cloud Storage.
    pub storage: StorageClient,
    /// Cloud Run Admin API v2.
    pub run: RunClient,
    /// Cloud Resource Manager (project testIamPermissions).
    pub resource_manager: ResourceManagerClient,
    /// Service Usage.
    pub service_usage: ServiceUsageClient,
    /// Project id.
    pub project: String,
    /// The executor image for the test job, or why there is none.
    pub executor_image: Result<String, String>,
    /// True when the target is an emulator.
    pub emulated: bool,
}

impl PreflightClients {
    /// Clients for the endpoints of `cfg` (real Google Cloud, or an emulator on loopback
    /// endpoints), from the one client factory. Fails without a project when the target is
    /// Google, and on a configuration that mixes emulator and Google endpoints.
    pub async fn for_config(cfg: &CloudRunConfig) -> Result<Self, PreflightError> {
        let clients = GoogleClients::for_config(cfg).await.map_err(|e| match e {
            ClientsError::Config(m) => PreflightError::Config(m),
            ClientsError::Auth(m) => PreflightError::Auth(m),
        })?;
        let executor_image = cfg.executor_image.clone().ok_or_else(|| {
            "no executor image configured: build it with `sandbox-harness image default`, push it to \
             your registry and set SANDBOX_EXECUTOR_IMAGE (or executor_image in the config)"
                .to_string()
        });
        Ok(Self::from_clients(clients, executor_image))
    }

    fn from_clients(clients: GoogleClients, executor_image: Result<String, String>) -> Self {
        PreflightClients {
            emulated: !matches!(clients.target, Target::Google),
            storage: clients.storage,
            run: clients.run,
            resource_manager: clients.resource_manager,
            service_usage: clients.service_usage,
            project: clients.project,
            executor_image,
        }
    }

    /// Clients for an in-process emulator; the executor image is `cfg.executor_image` or the
    /// locally built one.
    pub async fn for_local(
        cfg: &CloudRunConfig,
        local: &LocalCloud,
    ) -> Result<Self, PreflightError> {
        let executor_image = match &cfg.executor_image {
            Some(i) => Ok(i.clone()),
            None => crate::images::ensure_executor_image(local.docker())
                .await
                .map_err(|e| format!("building the executor image failed: {e}")),
        };
        let clients = GoogleClients::for_local(cfg, &local.base_url())
            .map_err(|e| PreflightError::Config(e.to_string()))?;
        Ok(Self::from_clients(clients, executor_image))
    }

    /// Uses `retry` for every client.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.storage = self.storage.with_retry(retry);
        self.run = self.run.with_retry(retry);
        self.resource_manager = self.resource_manager.with_retry(retry);
        self.service_usage = self.service_usage.with_retry(retry);
        self
    }
}

struct Item {
    id: &'static str,
    title: &'static str,
    started: Instant,
}

impl Item {
    fn start(id: &'static str, title: &'static str) -> Self {
        Item {
            id,
            title,
            started: Instant::now(),
        }
    }

    fn done(self, status: Status, reason: impl Into<String>) -> CheckResult {
        CheckResult {
            id: self.id.into(),
            title: self.title.into(),
            status,
            reason: reason.into(),
            fixed: None,
            elapsed_ms: (self.started.elapsed().as_secs_f64() * 1e6).round() / 1000.0,
        }
    }
}

/// Whether `rule` deletes every object under `sessions/` once old enough; returns its age.
fn covering_delete_age(rule: &LifecycleRule) -> Option<u32> {
    let c = &rule.condition;
    let covers = rule.action.kind == "Delete"
        && c.matches_suffix.is_empty()
        && c.other.is_empty()
        && (c.matches_prefix.is_empty()
            || c.matches_prefix
                .iter()
                .any(|p| SESSIONS_PREFIX.starts_with(p.as_str())));
    if covers { c.age } else { None }
}

/// Judges a lifecycle configuration: `Ok(description)` when the earliest rule deleting every
/// `sessions/` object does so after exactly 7 days, `Err(why not)` otherwise.
pub fn judge_lifecycle(lifecycle: Option<&Lifecycle>) -> Result<String, String> {
    let earliest = lifecycle
        .map(|l| l.rule.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(covering_delete_age)
        .min();
    match earliest {
        None => Err(format!(
            "no lifecycle rule deletes {SESSIONS_PREFIX} objects (want: Delete when age >= \
             {SESSIONS_TTL_DAYS} days, matchesPrefix {SESSIONS_PREFIX}; --fix adds it)"
        )),
        Some(d) if d < SESSIONS_TTL_DAYS => Err(format!(
            "a lifecycle rule deletes {SESSIONS_PREFIX} objects after {d} days, before the \
             {SESSIONS_TTL_DAYS} days sessions must survive"
        )),
        Some(d) if d > SESSIONS_TTL_DAYS => Err(format!(
            "{SESSIONS_PREFIX} objects are deleted only after {d} days (want {SESSIONS_TTL_DAYS}; \
             --fix replaces a {SESSIONS_PREFIX} rule)"
        )),
        Some(d) => Ok(format!(
            "a lifecycle rule deletes {SESSIONS_PREFIX} objects after {d} days"
        )),
    }
}

/// The lifecycle `--fix` writes: the existing rules, minus Delete rules on exactly
/// `sessions/` (with the wrong age), plus the 7-day rule.
pub fn fixed_lifecycle(current: Option<&Lifecycle>) -> Lifecycle {
    let mut rules: Vec<LifecycleRule> = current
        .map(|l| l.rule.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            !(r.action.kind == "Delete"
                && r.condition.matches_prefix == [SESSIONS_PREFIX]
                && r.condition.matches_suffix.is_empty()
                && r.condition.other.is_empty())
        })
        .collect();
    rules.push(LifecycleRule::delete_after_days(
        SESSIONS_TTL_DAYS,
        &[SESSIONS_PREFIX],
    ));
    Lifecycle { rule: rules }
}

fn compare_setting(
    item: Item,
    what: &str,
    wanted: Option<&str>,
    actual: Option<&str>,
) -> CheckResult {
    let actual_s = actual.unwrap_or("(not reported)");
    match wanted {
        None => item.done(
            Status::Skip,
            format!("no {what} configured; the bucket's is {actual_s}"),
        ),
        Some(w) if actual.is_some_and(|a| a.eq_ignore_ascii_case(w)) => {
            item.done(Status::Pass, format!("{what} is {actual_s}, as configured"))
        }
        Some(w) => item.done(
            Status::Fail,
            format!("{what} is {actual_s}, configured {w} (a bucket's {what} cannot be changed: recreate it)"),
        ),
    }
}

fn missing(wanted: &[&str], granted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|p| !granted.iter().any(|g| g == *p))
        .map(|p| p.to_string())
        .collect()
}

fn storage_reason(bucket: &str, e: &StorageError) -> String {
    match e.status() {
        Some(404) => format!("bucket {bucket} does not exist"),
        Some(401) | Some(403) => format!("no access to bucket {bucket}: {e}"),
        _ => format!("reading bucket {bucket} failed: {e}"),
    }
}

/// Runs the checklist against `clients`, with the bucket and region of `cfg`.
pub async fn run_checklist(
    cfg: &CloudRunConfig,
    clients: &PreflightClients,
    opts: &PreflightOptions,
) -> PreflightReport {
    let started_at = Utc::now();
    let mut checks = Vec::new();
    let bucket_name = &cfg.bucket;

    // The bucket and what depends on reading it.
    let (exists, bucket) = check_bucket_exists(cfg, clients, opts).await;
    checks.push(exists);
    match &bucket {
        Some(b) => {
            checks.push(compare_setting(
                Item::start(ids::BUCKET_LOCATION, "bucket in the configured location"),
                "location",
                cfg.bucket_location.as_deref(),
                b.location.as_deref(),
            ));
            checks.push(compare_setting(
                Item::start(
                    ids::BUCKET_STORAGE_CLASS,
                    "bucket has the configured storage class",
                ),
                "storage class",
                cfg.bucket_storage_class.as_deref(),
                b.storage_class.as_deref(),
            ));
            checks.push(check_lifecycle(clients, bucket_name, b, opts.fix).await);
        }
        None => {
            for (id, title) in [
                (ids::BUCKET_LOCATION, "bucket in the configured location"),
                (
                    ids::BUCKET_STORAGE_CLASS,
                    "bucket has the configured storage class",
                ),
                (
                    ids::BUCKET_LIFECYCLE,
                    "lifecycle deletes sessions/ after 7 days",
                ),
            ] {
                checks.push(Item::start(id, title).done(Status::Skip, unread(bucket_name)));
            }
        }
    }

    checks.push(check_bucket_iam(cfg, clients, bucket.is_some()).await);

    checks.push(check_project_iam(clients).await);

    checks.push(check_run_api(clients).await);

    let item = Item::start(ids::TEST_JOB, "a test job is created, run and deleted");
    checks.push(if !opts.run_test_job {
        item.done(Status::Skip, "not asked for (--skip-job)")
    } else {
        match job::round_trip(cfg, clients, opts).await {
            Ok(reason) => item.done(Status::Pass, reason),
            Err(reason) => item.done(Status::Fail, reason),
        }
    });

    let passed = checks.iter().all(|c| c.status != Status::Fail);
    PreflightReport {
        emulated: clients.emulated,
        project: clients.project.clone(),
        region: cfg.region.clone(),
        bucket: bucket_name.clone(),
        started_at,
        passed,
        checks,
    }
}

/// Checks that the state bucket exists (creating it with `--fix`); returns the check and the
/// bucket if it could be read.
async fn check_bucket_exists(
    cfg: &CloudRunConfig,
    clients: &PreflightClients,
    opts: &PreflightOptions,
) -> (CheckResult, Option<Bucket>) {
    let bucket_name = &cfg.bucket;
    let item = Item::start(ids::BUCKET_EXISTS, "state bucket exists");
    match clients.storage.get_bucket(bucket_name).await {
        Ok(b) => {
            let (location, class) = location_and_class(&b);
            let reason = format!("bucket {bucket_name} exists ({location}, {class})");
            (item.done(Status::Pass, reason), Some(b))
        }
        Err(e) if e.status() == Some(404) && opts.fix => match create_bucket(cfg, clients).await {
            Ok(b) => {
                let (location, class) = location_and_class(&b);
                let reason = format!(
                    "bucket {bucket_name} created (fix): {location}, {class}, sessions/ deleted after {SESSIONS_TTL_DAYS} days"
                );
                (item.done(Status::Pass, reason), Some(b))
            }
            Err(e) => {
                let reason =
                    format!("bucket {bucket_name} does not exist and creating it failed: {e}");
                (item.done(Status::Fail, reason), None)
            }
        },
        Err(e) => (
            item.done(Status::Fail, storage_reason(bucket_name, &e)),
            None,
        ),
    }
}

/// A bucket's location and storage class as reported, or that they were not.
fn location_and_class(b: &Bucket) -> (&str, &str) {
    (
        b.location.as_deref().unwrap_or("location not reported"),
        b.storage_class.as_deref().unwrap_or("class not reported"),
    )
}

/// Checks the caller's (and the runtime account's) permissions on the bucket, skipped when
/// the bucket could not be read.
async fn check_bucket_iam(
    cfg: &CloudRunConfig,
    clients: &PreflightClients,
    bucket_read: bool,
) -> CheckResult {
    let bucket_name = &cfg.bucket;
    let item = Item::start(ids::IAM_BUCKET, "caller's permissions on the bucket");
    if !bucket_read {
        item.done(Status::Skip, unread(bucket_name))
    } else {
        match clients
            .storage
            .test_iam_permissions(bucket_name, &BUCKET_PERMISSIONS)
            .await
        {
            Ok(granted) => match &cfg.service_account {
                None => permissions_result(item, &BUCKET_PERMISSIONS, &granted, "bucket"),
                Some(sa) => {
                    let caller = permissions_result(item, &BUCKET_PERMISSIONS, &granted, "bucket");
                    runtime_account_access(caller, clients, bucket_name, sa).await
                }
            },
            Err(e) => item.done(
                Status::Fail,
                format!("testIamPermissions on the bucket failed: {e}"),
            ),
        }
    }
}

/// The reason a check on the bucket is skipped when the bucket could not be read.
fn unread(bucket_name: &str) -> String {
    format!("skipped: bucket {bucket_name} could not be read")
}

/// Checks the caller's Cloud Run permissions on the project.
async fn check_project_iam(clients: &PreflightClients) -> CheckResult {
    let item = Item::start(
        ids::IAM_PROJECT,
        "caller's Cloud Run permissions on the project",
    );
    match clients
        .resource_manager
        .test_iam_permissions(&clients.project, &PROJECT_PERMISSIONS)
        .await
    {
        Ok(granted) => permissions_result(item, &PROJECT_PERMISSIONS, &granted, "project"),
        Err(e) => item.done(
            Status::Fail,
            format!(
                "testIamPermissions on project {} failed: {e}",
                clients.project
            ),
        ),
    }
}

/// Checks that the Cloud Run Admin API is enabled in the project.
async fn check_run_api(clients: &PreflightClients) -> CheckResult {
    let item = Item::start(ids::API_RUN, "Cloud Run Admin API enabled");
    match clients
            .service_usage
            .get_service(&clients.project, RUN_SERVICE)
            .await
        {
            Ok(s) if s.is_enabled() => item.done(
                Status::Pass,
                format!("{RUN_SERVICE} is ENABLED in project {}", clients.project),
            ),
            Ok(s) => item.done(
                Status::Fail,
                format!(
                    "{RUN_SERVICE} is {} in project {} (enable it: gcloud services enable {RUN_SERVICE})",
                    if s.state.is_empty() { "in an unknown state" } else { &s.state },
                    clients.project
                ),
            ),
            Err(e) => item.done(
                Status::Fail,
                format!("reading the state of {RUN_SERVICE} failed: {e}"),
            ),
        }
}

/// Bucket roles that let a job's service account read, write, list and delete objects.
pub const OBJECT_ROLES: [&str; 3] = [
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
    "roles/storage.admin",
];

/// Adds the runtime service account's access (the bucket's IAM policy grants it one of
/// [`OBJECT_ROLES`]) to the bucket permission check.
async fn runtime_account_access(
    mut caller: CheckResult,
    clients: &PreflightClients,
    bucket: &str,
    sa: &str,
) -> CheckResult {
    let member = format!("serviceAccount:{sa}");
    let found = match clients.storage.get_bucket_iam_policy(bucket).await {
        Ok(policy) => OBJECT_ROLES
            .iter()
            .find(|r| policy.get(**r).is_some_and(|m| m.contains(&member)))
            .map(|r| r.to_string())
            .ok_or_else(|| {
                format!(
                    "the runtime service account {sa} has none of {} on the bucket's policy \
                     (grant roles/storage.objectUser on the bucket; a project-level grant is \
                     not visible here)",
                    OBJECT_ROLES.join(", ")
                )
            }),
        Err(e) => Err(format!("reading the bucket's IAM policy failed: {e}")),
    };
    match found {
        Ok(role) => caller.reason = format!("{}; {sa} has {role} on it", caller.reason),
        Err(why) => {
            caller.status = Status::Fail;
            caller.reason = if caller.reason.starts_with("missing") {
                format!("{}; {why}", caller.reason)
            } else {
                why
            };
        }
    }
    caller
}

/// The plan's bucket location when none is configured (Phase 0: us-central1).
pub const PLAN_LOCATION: &str = "US-CENTRAL1";
/// The plan's storage class when none is configured.
pub const PLAN_STORAGE_CLASS: &str = "STANDARD";

/// Creates the state bucket as the plan sets it up: the configured (else the plan's) location
/// and class, and the 7-day lifecycle rule on `sessions/`.
async fn create_bucket(
    cfg: &CloudRunConfig,
    clients: &PreflightClients,
) -> Result<Bucket, StorageError> {
    clients
        .storage
        .insert_bucket(
            &clients.project,
            &crate::gcp::storage::BucketSpec {
                name: cfg.bucket.clone(),
                location: Some(
                    cfg.bucket_location
                        .clone()
                        .unwrap_or_else(|| PLAN_LOCATION.into()),
                ),
                storage_class: Some(
                    cfg.bucket_storage_class
                        .clone()
                        .unwrap_or_else(|| PLAN_STORAGE_CLASS.into()),
                ),
                lifecycle: Some(Lifecycle {
                    rule: vec![LifecycleRule::delete_after_days(
                        SESSIONS_TTL_DAYS,
                        &[SESSIONS_PREFIX],
                    )],
                }),
            },
        )
        .await
}

fn permissions_result(item: Item, wanted: &[&str], granted: &[String], on: &str) -> CheckResult {
    let miss = missing(wanted, granted);
    if miss.is_empty() {
        item.done(
            Status::Pass,
            format!("all {} permissions granted on the {on}", wanted.len()),
        )
    } else {
        item.done(
            Status::Fail,
            format!("missing on the {on}: {}", miss.join(", ")),
        )
    }
}

async fn check_lifecycle(
    clients: &PreflightClients,
    bucket_name: &str,
    bucket: &Bucket,
    fix: bool,
) -> CheckResult {
    let item = Item::start(
        ids::BUCKET_LIFECYCLE,
        "lifecycle deletes sessions/ after 7 days",
    );
    let why = match judge_lifecycle(bucket.lifecycle.as_ref()) {
        Ok(ok) => return item.done(Status::Pass, ok),
        Err(why) => why,
    };
    if !fix {
        return item.done(Status::Fail, why);
    }
    let wanted = fixed_lifecycle(bucket.lifecycle.as_ref());
    match clients
        .storage
        .patch_bucket_lifecycle(bucket_name, Some(&wanted))
        .await
    {
        Ok(after) => {
            let fixed = format!(
                "set a Delete rule for {SESSIONS_PREFIX} at {SESSIONS_TTL_DAYS} days (was: {why})"
            );
            let mut r = match judge_lifecycle(after.lifecycle.as_ref()) {
                Ok(ok) => item.done(Status::Pass, ok),
                Err(still) => item.done(Status::Fail, format!("after --fix: {still}")),
            };
            r.fixed = Some(fixed);
            r
        }
        Err(e) => item.done(
            Status::Fail,
            format!("{why}; --fix could not set the rule: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcp::storage::LifecycleRule;

    fn lc(rules: Vec<LifecycleRule>) -> Lifecycle {
        Lifecycle { rule: rules }
    }

    #[test]
    fn lifecycle_judgement() {
        assert!(judge_lifecycle(None).is_err());
        let ok = lc(vec![LifecycleRule::delete_after_days(7, &["sessions/"])]);
        assert!(judge_lifecycle(Some(&ok)).is_ok());
        let all = lc(vec![LifecycleRule::delete_after_days(7, &[])]);
        assert!(judge_lifecycle(Some(&all)).is_ok());
        let other = lc(vec![LifecycleRule::delete_after_days(7, &["tmp/"])]);
        assert!(judge_lifecycle(Some(&other)).is_err());
        let partial = lc(vec![LifecycleRule::delete_after_days(7, &["sessions/x"])]);
        assert!(judge_lifecycle(Some(&partial)).is_err());
        let early = lc(vec![
            LifecycleRule::delete_after_days(7, &["sessions/"]),
            LifecycleRule::delete_after_days(2, &[]),
        ]);
        let e = judge_lifecycle(Some(&early)).unwrap_err();
        assert!(e.contains("after 2 days"), "{e}");
        let late = lc(vec![LifecycleRule::delete_after_days(30, &["sessions/"])]);
        assert!(judge_lifecycle(Some(&late)).unwrap_err().contains("30"));
    }

    #[test]
    fn fix_keeps_other_rules_and_replaces_a_wrong_sessions_rule() {
        let mut odd = LifecycleRule::delete_after_days(1, &["tmp/"]);
        odd.condition
            .other
            .insert("isLive".into(), serde_json::json!(false));
        let cur = lc(vec![
            odd.clone(),
            LifecycleRule::delete_after_days(30, &["sessions/"]),
        ]);
        let fixed = fixed_lifecycle(Some(&cur));
        assert_eq!(fixed.rule.len(), 2);
        assert_eq!(fixed.rule[0], odd);
        assert!(judge_lifecycle(Some(&fixed)).is_ok());
        // Unknown conditions survive a JSON round trip.
        let v = serde_json::to_value(&fixed).unwrap();
        assert_eq!(v["rule"][0]["condition"]["isLive"], false);
        let back: Lifecycle = serde_json::from_value(v).unwrap();
        assert_eq!(back, fixed);
    }

    #[test]
    fn summary_and_exit_code() {
        let mk = |id: &str, status| CheckResult {
            id: id.into(),
            title: id.into(),
            status,
            reason: format!("because {id}"),
            fixed: None,
            elapsed_ms: 0.0,
        };
        let r = PreflightReport {
            emulated: true,
            project: "p".into(),
            region: "r".into(),
            bucket: "b".into(),
            started_at: Utc::now(),
            passed: false,
            checks: vec![
                mk("a", Status::Pass),
                mk("b", Status::Fail),
                mk("c", Status::Skip),
            ],
        };
        let s = r.summary();
        assert_eq!(s.checks, 2);
        assert_eq!(s.failures, vec!["b: because b".to_string()]);
        assert_eq!(r.exit_code(), 1);
        let text = r.render();
        assert!(text.contains("✓ a"), "{text}");
        assert!(text.contains("✗ b"), "{text}");
        assert!(text.contains("– c"), "{text}");
    }
}
