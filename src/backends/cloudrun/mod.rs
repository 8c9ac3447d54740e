//! The Cloud Run Jobs backend: one job per sandbox, a session worker execution that stays up
//! between commands, and all state (workspace, shell sessions, background logs) in a Cloud
//! Storage bucket under `sessions/<sandbox id>/`.
//!
//! The protocol logic is the shared `GenericSandbox` over [`transport::CloudRunTransport`]; this
//! module creates, finds and removes jobs. With no GCP settings it runs against the embedded
//! local emulator (`crate::emulator::LocalCloud`), so everything works offline.

pub mod config;
pub mod deployment;
pub mod pool;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::emulator::LocalCloud;
use crate::gcp::clients::{ClientsError, GoogleClients};
use crate::gcp::run::{
    Container, ExecutionTemplate, GcsVolumeSource, Job, ResourceRequirements, RunClient, RunError,
    TaskTemplate, Volume, VolumeMount,
};
use crate::gcp::storage::{BucketSpec, ListOptions, StorageClient, WriteOptions};
use crate::generic::{BucketDir, GenericConfig, GenericSandbox, Lifecycle};
use crate::protocol::BackendOrigin;
use crate::protocol::{Capabilities, Result, Sandbox, SandboxBackend, SandboxError};

pub use config::{CloudRunConfig, Target};
pub use transport::{CloudRunTransport, STATE_MOUNT, WORKSPACE_MOUNT, sandbox_prefix};

/// The sandbox type this backend hands out.
pub type CloudRunSandbox = GenericSandbox<CloudRunTransport>;

/// Label every harness job carries.
pub const LABEL: &str = "sandbox-harness";
/// Label holding the sandbox id.
pub const LABEL_SANDBOX: &str = "sandbox-harness-sandbox";
/// Label of jobs the warm pool created (claimed or not).
pub const LABEL_POOL: &str = "sandbox-harness-pool";
/// The harness's bookkeeping on the worker's own file system (FIFOs, pids, spools, session
/// state as commands write it).
pub const LOCAL_BOOKKEEPING: &str = "/tmp/.sandbox-harness";
/// What of it outlives the worker, on the state volume (session state, mirrored by the
/// worker; finished background jobs).
pub const DURABLE_BOOKKEEPING: &str = "/sandbox-state/harness";

/// Prefix of job ids (`sandbox-<id>`).
pub const JOB_PREFIX: &str = "sandbox-";

/// What Cloud Run Jobs sandboxes support: no browser, no VNC (the migration plan says so);
/// stdin reaches running commands through the worker.
pub const CAPABILITIES: Capabilities = Capabilities {
    browser: false,
    vnc: false,
    stdin: true,
    background: true,
    reattach: true,
};

/// Checks a sandbox id: 1-40 lowercase hex digits or dashes (job ids must be DNS labels).
pub fn validate_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty()
        || id.len() > 40
        || !id
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '-')
    {
        return Err(format!("{id:?} is not a Cloud Run sandbox id"));
    }
    Ok(())
}

/// The Cloud Run Jobs backend.
pub struct CloudRunBackend {
    cfg: CloudRunConfig,
    storage: StorageClient,
    run: RunClient,
    image: String,
    parent: String,
    /// Keeps the embedded emulator alive as long as the backend.
    local: Option<Arc<LocalCloud>>,
    /// Where the figures come from, derived from the endpoints.
    origin: BackendOrigin,
    /// Pre-started worker executions `create` claims (`pool_size` > 0).
    pool: Option<Arc<pool::WarmPool>>,
}

/// How long a new job may take to be created and become ready.
pub const JOB_READY_LIMIT: Duration = Duration::from_secs(120);

fn cfg_err(op: &str, detail: impl Into<String>) -> SandboxError {
    SandboxError::invalid("-", op, detail)
}

fn clients_err(op: &str, e: ClientsError) -> SandboxError {
    match e {
        ClientsError::Config(m) => cfg_err(op, m),
        ClientsError::Auth(m) => {
            SandboxError::new(crate::protocol::ErrorKind::Permission, "-", op, m)
        }
    }
}

impl CloudRunBackend {
    /// Connects with `cfg`; with no project and no endpoints, starts the embedded emulator.
    /// A configuration that mixes emulator and Google endpoints is refused.
    pub async fn connect(cfg: CloudRunConfig) -> Result<Self> {
        Self::connect_recorded(cfg, None).await
    }

    /// [`Self::connect`], with every Admin API and Storage call timed into `recorder`
    /// (`bench --record-profile`), the warm pool's included: the recorder is in place before
    /// the pool starts.
    pub async fn connect_recorded(
        cfg: CloudRunConfig,
        recorder: Option<crate::gcp::observe::CallRecorder>,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| cfg_err("connect", e.to_string()))?;
        if cfg.uses_embedded_emulator() {
            let profile = cfg
                .twin_profile()
                .map_err(|e| cfg_err("connect", e.to_string()))?;
            let emu = crate::emulator::EmulatorConfig {
                faults: crate::suites::faults::FaultConfig {
                    seed: cfg.emulator_seed,
                    profile: (!profile.is_empty()).then(|| Box::new(profile)),
                    ..Default::default()
                },
                ..Default::default()
            };
            let local = Arc::new(
                LocalCloud::start_with(emu)
                    .await
                    .map_err(|e| SandboxError::backend("-", "connect", e.to_string()))?,
            );
            return Self::with_local_recorded(cfg, local, recorder).await;
        }
        let clients = GoogleClients::for_config(&cfg)
            .await
            .map_err(|e| clients_err("connect", e))?;
        let image = cfg.executor_image.clone().ok_or_else(|| {
            cfg_err(
                "connect",
                "no executor image: build it with `sandbox-harness image default`, push it to your registry and set SANDBOX_EXECUTOR_IMAGE",
            )
        })?;
        let origin = match &clients.target {
            Target::Emulator { endpoint } => BackendOrigin::CloudRunEmulator {
                endpoint: Some(endpoint.clone()),
                latency_profile: None,
            },
            _ => BackendOrigin::CloudRunGcp {
                project: Some(clients.project.clone()),
                region: Some(cfg.region.clone()),
            },
        };
        Ok(CloudRunBackend {
            parent: clients.parent(&cfg.region),
            storage: clients.storage,
            run: clients.run,
            cfg,
            image,
            local: None,
            origin,
            pool: None,
        }
        .with_recorder(recorder)
        .with_pool())
    }

    /// Starts the warm pool when the configuration asks for one.
    fn with_pool(mut self) -> Self {
        if self.cfg.pool_size > 0 {
            self.pool = Some(pool::WarmPool::start(pool::PoolSetup {
                size: self.cfg.pool_size,
                run: self.run.clone(),
                storage: self.storage.clone(),
                cfg: self.cfg.clone(),
                image: self.image.clone(),
                parent: self.parent.clone(),
                local: self.local.clone(),
            }));
        }
        self
    }

    /// The warm pool, when configured.
    pub fn pool(&self) -> Option<&Arc<pool::WarmPool>> {
        self.pool.as_ref()
    }

    /// Stops the warm pool and removes every execution, job and object it holds for sandboxes
    /// nobody claimed. Claimed sandboxes are the caller's to destroy.
    pub async fn shutdown(&self) {
        if let Some(p) = &self.pool {
            p.shutdown().await;
        }
    }

    /// Uses an already running local emulator (tests share one across backends).
    pub async fn with_local(cfg: CloudRunConfig, local: Arc<LocalCloud>) -> Result<Self> {
        Self::with_local_recorded(cfg, local, None).await
    }

    /// [`Self::with_local`], with calls timed into `recorder` (see [`Self::connect_recorded`]).
    pub async fn with_local_recorded(
        cfg: CloudRunConfig,
        local: Arc<LocalCloud>,
        recorder: Option<crate::gcp::observe::CallRecorder>,
    ) -> Result<Self> {
        let clients = GoogleClients::for_local(&cfg, &local.base_url())
            .map_err(|e| clients_err("connect", e))?;
        let (storage, run) = (clients.storage, clients.run);
        let image = match &cfg.executor_image {
            Some(i) => i.clone(),
            None => crate::images::ensure_executor_image(local.docker())
                .await
                .map_err(|e| SandboxError::backend("-", "connect", e.to_string()))?,
        };
        let project = clients.project;
        match storage.get_bucket(&cfg.bucket).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                // Set up as the migration plan's Phase 0 sets up the real bucket: session state
                // expires after 7 days.
                storage
                    .insert_bucket(
                        &project,
                        &BucketSpec {
                            name: cfg.bucket.clone(),
                            lifecycle: Some(crate::gcp::storage::Lifecycle {
                                rule: vec![crate::gcp::storage::LifecycleRule::delete_after_days(
                                    7,
                                    &["sessions/"],
                                )],
                            }),
                            ..BucketSpec::default()
                        },
                    )
                    .await
                    .map_err(|e| e.into_sandbox_error("-", "connect"))?;
            }
            Err(e) => return Err(e.into_sandbox_error("-", "connect")),
        }
        let parent = format!("projects/{project}/locations/{}", cfg.region);
        // The label names the profile the running emulator applies, whoever started it.
        let faults = local.emulator().context().faults().clone();
        let origin = BackendOrigin::CloudRunTwin {
            profile: faults.profile_name().to_string(),
            latency_profile: Some(faults),
        };
        Ok(CloudRunBackend {
            cfg,
            storage,
            run,
            image,
            parent,
            local: Some(local),
            origin,
            pool: None,
        }
        .with_recorder(recorder)
        .with_pool())
    }

    /// Records how long each Admin API and Storage call takes; applied before the warm pool
    /// starts, which shares these clients.
    fn with_recorder(mut self, recorder: Option<crate::gcp::observe::CallRecorder>) -> Self {
        if let Some(r) = recorder {
            self.storage = self.storage.clone().with_recorder(r.clone());
            self.run = self.run.clone().with_recorder(r);
        }
        self
    }

    /// True when this backend runs on the embedded twin or a standalone emulator (reports
    /// must say so).
    pub fn is_emulated(&self) -> bool {
        self.origin.is_emulated()
    }

    /// The embedded emulator this backend runs on, if any.
    pub fn local_cloud(&self) -> Option<&Arc<LocalCloud>> {
        self.local.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &CloudRunConfig {
        &self.cfg
    }

    /// The Storage client (preflight and gc use it).
    pub fn storage(&self) -> &StorageClient {
        &self.storage
    }

    /// The Cloud Run client (preflight and gc use it).
    pub fn run_client(&self) -> &RunClient {
        &self.run
    }

    /// `projects/<p>/locations/<region>`.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    fn job_name(&self, id: &str) -> String {
        format!("{}/jobs/{JOB_PREFIX}{id}", self.parent)
    }

    /// The job resource of a new sandbox (see [`job_spec`]).
    pub fn job_spec(&self, id: &str) -> Job {
        job_spec(&self.cfg, &self.image, id, false)
    }

    fn sandbox(&self, id: &str, fresh: bool) -> Arc<CloudRunSandbox> {
        let transport = CloudRunTransport::new(
            id,
            self.storage.clone(),
            self.run.clone(),
            self.cfg.bucket.clone(),
            self.job_name(id),
            self.cfg.poll(),
            self.cfg.heartbeat_every(),
        );
        let lifecycle = Arc::new(CloudRunLifecycle {
            id: id.to_string(),
            job: self.job_name(id),
            bucket: self.cfg.bucket.clone(),
            storage: self.storage.clone(),
            run: self.run.clone(),
            _local: self.local.clone(),
        });
        let generic = GenericConfig {
            // FIFOs, pids and spools need POSIX: the container's own file system. What must
            // outlive the worker goes to the state volume (Cloud Storage FUSE rules).
            bookkeeping_dir: LOCAL_BOOKKEEPING.into(),
            durable_dir: Some(DURABLE_BOOKKEEPING.into()),
            bucket_dirs: vec![
                BucketDir {
                    mount: WORKSPACE_MOUNT.into(),
                    prefix_len: format!("{}workspace/", sandbox_prefix(id)).len(),
                },
                BucketDir {
                    mount: STATE_MOUNT.into(),
                    prefix_len: sandbox_prefix(id).len(),
                },
            ],
            capabilities: CAPABILITIES,
            backend_name: "cloudrun",
            ..GenericConfig::default()
        };
        Arc::new(GenericSandbox::new(transport, lifecycle, generic, fresh))
    }

    /// Creates a sandbox and returns the concrete type: claims a pre-started one from the
    /// warm pool when there is one ready, else creates one from zero.
    pub async fn create_cloudrun(&self) -> Result<Arc<CloudRunSandbox>> {
        if let Some(entry) = self.pool.as_ref().and_then(|p| p.claim()) {
            let sb = self.sandbox(&entry.id, true);
            sb.transport().adopt_execution(&entry.execution).await;
            tracing::info!(target: "sandbox_harness::events", event = "sandbox_created", backend = "cloudrun", sandbox_id = %entry.id, from = "warm_pool", execution_id = %entry.execution);
            return Ok(sb);
        }
        self.create_from_zero().await
    }

    /// Creates a sandbox from zero (a new job; its first command starts the worker), whether
    /// or not a warm pool is configured.
    pub async fn create_from_zero(&self) -> Result<Arc<CloudRunSandbox>> {
        let id = new_sandbox_id();
        create_job(&self.run, &self.parent, &id, &self.job_spec(&id)).await?;
        tracing::info!(target: "sandbox_harness::events", event = "sandbox_created", backend = "cloudrun", sandbox_id = %id);
        Ok(self.sandbox(&id, true))
    }
}

/// A new sandbox id (20 hex digits).
fn new_sandbox_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_string()
}

/// The job resource of sandbox `id` with executor `image`: the worker container, the state
/// and workspace Cloud Storage volumes, limits, timeout and service account of `cfg`; `pooled`
/// marks a warm-pool job (label `sandbox-harness-pool`, so gc can tell them apart). The
/// backend creates every sandbox with it and the preflight's test job uses it too.
pub fn job_spec(cfg: &CloudRunConfig, image: &str, id: &str, pooled: bool) -> Job {
    let prefix = sandbox_prefix(id);
    let idle_ms = cfg.worker_idle_secs * 1000;
    let lifetime_ms = cfg.task_timeout_secs.saturating_sub(60).max(60) * 1000;
    let mut limits = BTreeMap::new();
    limits.insert("cpu".to_string(), cfg.cpu.clone());
    limits.insert("memory".to_string(), cfg.memory.clone());
    let mut labels = BTreeMap::new();
    labels.insert(LABEL.to_string(), "1".to_string());
    labels.insert(LABEL_SANDBOX.to_string(), id.to_string());
    if pooled {
        labels.insert(LABEL_POOL.to_string(), "1".to_string());
    }
    // The workspace is written through the API too (transfers), so its volume caches no
    // metadata: with Cloud Run's default 60 s stat cache and 5 s negative cache, a command
    // would see an uploaded file stale or missing. The state volume is written by the
    // worker alone and keeps the defaults, except for missing entries.
    let gcs = |dir: String, options: &[&str]| GcsVolumeSource {
        bucket: cfg.bucket.clone(),
        read_only: false,
        mount_options: std::iter::once(format!("only-dir={dir}"))
            .chain(options.iter().map(|o| o.to_string()))
            .collect(),
    };
    Job {
        labels,
        template: ExecutionTemplate {
            task_count: Some(1),
            parallelism: Some(1),
            template: TaskTemplate {
                containers: vec![Container {
                    name: Some("executor".into()),
                    image: image.to_string(),
                    command: vec![crate::images::EXECUTOR_PATH.into()],
                    args: vec![
                        "worker".into(),
                        "--bucket".into(),
                        cfg.bucket.clone(),
                        "--prefix".into(),
                        prefix.clone(),
                        "--idle-timeout-ms".into(),
                        idle_ms.to_string(),
                        "--poll-min-ms".into(),
                        cfg.poll_min_ms.to_string(),
                        "--poll-max-ms".into(),
                        cfg.poll_max_ms.to_string(),
                        "--poll-hold-ms".into(),
                        cfg.poll_hold_ms.to_string(),
                        "--heartbeat-ms".into(),
                        (cfg.heartbeat_secs * 1000).to_string(),
                        "--max-lifetime-ms".into(),
                        lifetime_ms.to_string(),
                        "--mirror".into(),
                        format!("{LOCAL_BOOKKEEPING}/sessions={DURABLE_BOOKKEEPING}/sessions"),
                    ],
                    resources: Some(ResourceRequirements { limits }),
                    volume_mounts: vec![
                        VolumeMount {
                            name: "state".into(),
                            mount_path: STATE_MOUNT.into(),
                        },
                        VolumeMount {
                            name: "workspace".into(),
                            mount_path: WORKSPACE_MOUNT.into(),
                        },
                    ],
                    working_dir: Some(WORKSPACE_MOUNT.into()),
                    ..Container::default()
                }],
                volumes: vec![
                    Volume {
                        name: "state".into(),
                        gcs: Some(gcs(
                            prefix.trim_end_matches('/').to_string(),
                            &["metadata-cache-negative-ttl-secs=0"],
                        )),
                        ..Volume::default()
                    },
                    Volume {
                        name: "workspace".into(),
                        gcs: Some(gcs(
                            format!("{prefix}workspace"),
                            &[
                                "metadata-cache-ttl-secs=0",
                                "metadata-cache-negative-ttl-secs=0",
                                // chmod is ignored: files are executable, so a script
                                // an agent writes and runs works as on Docker.
                                "file-mode=755",
                                // A directory rename moves each object (not atomic).
                                "rename-dir-limit=10000",
                            ],
                        )),
                        ..Volume::default()
                    },
                ],
                max_retries: Some(0),
                timeout: Some(format!("{}s", cfg.task_timeout_secs)),
                service_account: cfg.service_account.clone(),
                ..TaskTemplate::default()
            },
            ..ExecutionTemplate::default()
        },
        ..Job::default()
    }
}

/// Creates the job of sandbox `id` from `spec` and waits until it is ready; a job whose
/// creation failed is deleted again (it may exist with a failed Ready condition).
async fn create_job(run: &RunClient, parent: &str, id: &str, spec: &Job) -> Result<()> {
    let name = format!("{parent}/jobs/{JOB_PREFIX}{id}");
    let deadline = Instant::now() + JOB_READY_LIMIT;
    if let Err(e) = create_job_ready(run, parent, id, &name, spec, deadline).await {
        if let Ok(op) = run.delete_job(&name).await {
            let _ = run
                .poll_operation(op, Instant::now() + Duration::from_secs(30))
                .await;
        }
        return Err(e.into_sandbox_error(id, "create"));
    }
    Ok(())
}

/// Creates job `name` for sandbox `id` and waits until it is ready: the operation polled
/// until done (its `error` fails the call), then the job's `terminalCondition` checked.
/// The client retries a create whose answer was lost; the retry then meets the first
/// attempt's job (409 ALREADY_EXISTS, or 412), which counts as created when it carries
/// this sandbox's label (job ids are random, so nobody else wrote it).
async fn create_job_ready(
    run: &RunClient,
    parent: &str,
    id: &str,
    name: &str,
    spec: &Job,
    deadline: Instant,
) -> std::result::Result<(), RunError> {
    match run
        .create_job(parent, &format!("{JOB_PREFIX}{id}"), spec)
        .await
    {
        Ok(op) => {
            run.finish_operation(op, deadline, "job creation").await?;
        }
        Err(e) if matches!(e.status(), Some(409 | 412)) => {
            let job = run.get_job(name).await?;
            if job.labels.get(LABEL_SANDBOX).map(String::as_str) != Some(id) {
                return Err(e);
            }
            tracing::debug!(sandbox_id = %id, "a retried job create met its own first attempt");
        }
        Err(e) => return Err(e),
    }
    run.wait_job_ready(name, deadline).await.map(|_| ())
}

#[async_trait]
impl SandboxBackend for CloudRunBackend {
    fn name(&self) -> &'static str {
        "cloudrun"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn origin(&self) -> BackendOrigin {
        self.origin.clone()
    }

    async fn create(&self) -> Result<Arc<dyn Sandbox>> {
        Ok(self.create_cloudrun().await?)
    }

    async fn get(&self, id: &str) -> Result<Arc<dyn Sandbox>> {
        validate_id(id).map_err(|e| SandboxError::invalid(id, "get", e))?;
        self.run
            .get_job(&self.job_name(id))
            .await
            .map_err(|e| e.into_sandbox_error(id, "get"))?;
        Ok(self.sandbox(id, false))
    }
}

struct CloudRunLifecycle {
    id: String,
    job: String,
    bucket: String,
    storage: StorageClient,
    run: RunClient,
    _local: Option<Arc<LocalCloud>>,
}

#[async_trait]
impl Lifecycle for CloudRunLifecycle {
    async fn ensure_ready(&self) -> Result<()> {
        self.run
            .get_job(&self.job)
            .await
            .map(|_| ())
            .map_err(|e| e.into_sandbox_error(&self.id, "ensure_ready"))
    }

    async fn destroy(&self) -> Result<()> {
        let op = "destroy";
        // Stop workers first so nothing writes while the objects go.
        let running: Vec<String> = match self.run.list_executions(&self.job, None, None).await {
            Ok(list) => list
                .executions
                .into_iter()
                .filter(|e| !e.is_done())
                .map(|e| e.name)
                .collect(),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into_sandbox_error(&self.id, op)),
        };
        for name in &running {
            let _ = self.run.cancel_execution(name).await;
        }
        // Wait for the cancelled executions to end (their containers are gone then), so a
        // destroyed sandbox leaves nothing running behind, even if the caller exits next.
        // Reads back off (50 ms doubling to 2 s): Cloud Run takes seconds to stop a task.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(50);
        for name in &running {
            loop {
                match self.run.get_execution(name).await {
                    Ok(e) if !e.is_done() && Instant::now() < deadline => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    _ => break,
                }
            }
        }
        match self.run.delete_job(&self.job).await {
            Ok(deletion) => {
                self.run
                    .finish_operation(deletion, Instant::now() + JOB_READY_LIMIT, "job deletion")
                    .await
                    .map_err(|e| e.into_sandbox_error(&self.id, op))?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into_sandbox_error(&self.id, op)),
        }
        let (objects, _) = self
            .storage
            .list_all(
                &self.bucket,
                &ListOptions {
                    prefix: Some(sandbox_prefix(&self.id)),
                    ..ListOptions::default()
                },
            )
            .await
            .map_err(|e| e.into_sandbox_error(&self.id, op))?;
        for o in objects {
            match self
                .storage
                .delete_object(&self.bucket, &o.name, &WriteOptions::default())
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into_sandbox_error(&self.id, op)),
            }
        }
        tracing::info!(target: "sandbox_harness::events", event = "sandbox_destroyed", backend = "cloudrun", sandbox_id = %self.id);
        Ok(())
    }
}
