//! Runs an execution: every task attempt is one Docker container (host networking), bounded by
//! the execution's parallelism, retried up to maxRetries, killed at the task timeout or on
//! cancel, and removed when it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountTmpfsOptions, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{EXECUTION_LABEL, Phase, RunState, cancelled_result, now, rand_suffix, spec};
use crate::emulator::gcsfuse::{self, Budget, MountHandle, MountOptions};
use crate::gcp::run::{Container, Status, TaskAttemptResult, TaskTemplate};
use crate::suites::profile;

/// Bytes of container output kept in a failed task's message.
pub const LOG_TAIL_BYTES: usize = 4096;
/// Lines of container output asked from the engine for a failed task's message.
const LOG_TAIL_LINES: &str = "200";

/// What one execution runs (the job template with overrides applied).
pub(super) struct ExecPlan {
    pub job_id: String,
    pub exec_id: String,
    pub exec_name: String,
    pub task_count: i32,
    pub parallelism: usize,
    pub max_retries: i32,
    pub timeout: Duration,
    pub template: TaskTemplate,
}

enum Outcome {
    Succeeded,
    Failed(TaskAttemptResult),
    Cancelled,
}

fn failure(code: i32, message: String, exit_code: Option<i32>) -> Outcome {
    Outcome::Failed(TaskAttemptResult {
        status: Some(Status { code, message }),
        exit_code,
    })
}

/// Drives an execution from pending to its end; never panics on engine errors.
pub(super) async fn run_execution(st: Arc<RunState>, plan: ExecPlan, cancel: CancellationToken) {
    let plan = Arc::new(plan);
    // Injected start latency, then the latency profile's scheduling phase (an instance is
    // found for the execution); image pull and container start are per task attempt.
    let delay =
        st.cfg.faults.execution_start_delay() + st.cfg.faults.phase_delay(profile::EXEC_SCHEDULING);
    let cancelled_early = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = cancel.cancelled() => true,
    };
    if !cancelled_early {
        if st.cfg.faults.execution_start_fails() {
            let msg = "The execution failed to start: injected start failure \
                       (emulator fault p_execution_start_failure)."
                .to_string();
            tracing::info!(execution = %plan.exec_name, "injected execution start failure");
            st.update_exec(&plan.exec_name, |e| {
                let t = now();
                for task in &mut e.tasks {
                    task.phase = Phase::Failed;
                    task.task.completion_time = Some(t.clone());
                    task.task.last_attempt_result = Some(TaskAttemptResult {
                        status: Some(Status {
                            code: 14,
                            message: msg.clone(),
                        }),
                        exit_code: None,
                    });
                }
                e.start_failure = Some(msg);
                e.exec.completion_time = Some(t);
            });
            return;
        }
        st.update_exec(&plan.exec_name, |e| e.exec.start_time = Some(now()));
        let sem = Arc::new(Semaphore::new(plan.parallelism.max(1)));
        let mut set = JoinSet::new();
        for i in 0..plan.task_count.max(0) as usize {
            set.spawn(run_task(
                st.clone(),
                plan.clone(),
                i,
                sem.clone(),
                cancel.clone(),
            ));
        }
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                tracing::error!(execution = %plan.exec_name, error = %e, "task runner failed");
            }
        }
    }
    let was_cancelled = cancel.is_cancelled();
    st.update_exec(&plan.exec_name, |e| {
        let t = now();
        for task in e.tasks.iter_mut().filter(|t| !t.phase.terminal()) {
            task.task.completion_time = Some(t.clone());
            if was_cancelled {
                task.phase = Phase::Cancelled;
                task.task.last_attempt_result = Some(cancelled_result());
            } else {
                task.phase = Phase::Failed;
                task.task.last_attempt_result = Some(TaskAttemptResult {
                    status: Some(Status {
                        code: 13,
                        message: "The emulator's task runner stopped unexpectedly.".into(),
                    }),
                    exit_code: None,
                });
            }
        }
        e.exec.completion_time = Some(t);
    });
    tracing::debug!(execution = %plan.exec_name, "execution finished");
}

async fn run_task(
    st: Arc<RunState>,
    plan: Arc<ExecPlan>,
    index: usize,
    sem: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let name = plan.exec_name.as_str();
    let permit = tokio::select! {
        p = sem.acquire_owned() => p.ok(),
        _ = cancel.cancelled() => None,
    };
    let mark_cancelled = |st: &RunState| {
        st.update_task(name, index, |t, ph| {
            *ph = Phase::Cancelled;
            t.completion_time = Some(now());
            t.last_attempt_result = Some(cancelled_result());
        })
    };
    let Some(_permit) = permit else {
        mark_cancelled(&st);
        return;
    };
    let mut attempt = 0;
    loop {
        if cancel.is_cancelled() {
            mark_cancelled(&st);
            return;
        }
        st.update_task(name, index, |t, ph| {
            *ph = Phase::Running;
            t.start_time = Some(now());
        });
        let outcome = run_attempt(&st, &plan, index, attempt, &cancel).await;
        // The latency profile: the task's end reaches its status (and the execution's) after
        // a while.
        if !matches!(outcome, Outcome::Cancelled) {
            let d = st.cfg.faults.phase_delay(profile::EXEC_COMPLETION_VISIBLE);
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = cancel.cancelled() => {}
            }
        }
        match outcome {
            Outcome::Succeeded => {
                st.update_task(name, index, |t, ph| {
                    *ph = Phase::Succeeded;
                    t.completion_time = Some(now());
                    t.last_attempt_result = Some(TaskAttemptResult {
                        status: Some(Status {
                            code: 0,
                            message: String::new(),
                        }),
                        exit_code: Some(0),
                    });
                });
                return;
            }
            Outcome::Cancelled => {
                mark_cancelled(&st);
                return;
            }
            Outcome::Failed(res) => {
                if attempt < plan.max_retries && !cancel.is_cancelled() {
                    st.update_task(name, index, |t, _| {
                        t.retried += 1;
                        t.last_attempt_result = Some(res);
                    });
                    attempt += 1;
                    continue;
                }
                st.update_task(name, index, |t, ph| {
                    *ph = Phase::Failed;
                    t.completion_time = Some(now());
                    t.last_attempt_result = Some(res);
                });
                return;
            }
        }
    }
}

async fn run_attempt(
    st: &RunState,
    plan: &ExecPlan,
    index: usize,
    attempt: i32,
    cancel: &CancellationToken,
) -> Outcome {
    let docker = &st.cfg.docker;
    // Staged writes of Cloud Storage volumes count against the container's memory (Cloud
    // Run's jobs page, "Memory requirements"); Cloud Run's default limit when none is set.
    let limit = plan
        .template
        .containers
        .first()
        .and_then(memory_limit)
        .map_or(gcsfuse::options::CLOUD_RUN_DEFAULT_MEMORY, |m| m as u64);
    let budget = Budget::new(limit);
    let mounts = match mount_volumes(st, plan, &budget).await {
        Ok(m) => m,
        Err(msg) => return failure(9, msg, None),
    };
    let body = match container_body(st, plan, index, attempt, &mounts) {
        Ok(b) => b,
        Err(msg) => return failure(9, msg, None),
    };
    let cname = format!(
        "run-{}-{}-{}-{}",
        plan.exec_id,
        index,
        attempt,
        rand_suffix(6)
    );
    // The latency profile's image pull (fixed part plus size at the pull rate) and container
    // start; the image is already local, so only the time is modelled.
    let pull_and_start = {
        let f = &st.cfg.faults;
        let size = match f.config().profile.as_ref() {
            Some(p) if p.lifecycle.image_pull_mib_per_s > 0.0 => image_size(docker, plan).await,
            _ => 0,
        };
        f.image_pull_delay(size) + f.phase_delay(profile::EXEC_CONTAINER_START)
    };
    if !pull_and_start.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(pull_and_start) => {}
            _ = cancel.cancelled() => return Outcome::Cancelled,
        }
    }
    let opts = CreateContainerOptionsBuilder::new().name(&cname).build();
    let id = match docker.create_container(Some(opts), body).await {
        Ok(r) => r.id,
        Err(e) => {
            return failure(13, format!("The container could not be created: {e}"), None);
        }
    };
    let out = supervise(docker, &id, plan, index, cancel, &budget).await;
    let rm = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(&id, Some(rm)).await {
        tracing::warn!(container = %id, error = %e, "removing a task container failed");
    }
    // The container is gone: unmount its Cloud Storage volumes.
    drop(mounts);
    out
}

/// The size of the task's image as the engine reports it (0 when unknown).
async fn image_size(docker: &Docker, plan: &ExecPlan) -> u64 {
    let Some(c) = plan.template.containers.first() else {
        return 0;
    };
    match docker.inspect_image(&c.image).await {
        Ok(i) => i.size.unwrap_or(0).max(0) as u64,
        Err(e) => {
            tracing::debug!(image = %c.image, error = %e, "image size unknown");
            0
        }
    }
}

/// The container's memory limit in bytes, if it sets one.
fn memory_limit(c: &Container) -> Option<i64> {
    c.resources
        .as_ref()
        .and_then(|r| r.limits.get("memory"))
        .and_then(|s| spec::parse_memory(s))
}

/// Mounts every `gcs` volume the container uses with the twin's Cloud Storage FUSE, keyed by
/// volume name; the error is the attempt's failure message.
async fn mount_volumes(
    st: &RunState,
    plan: &ExecPlan,
    budget: &Arc<Budget>,
) -> Result<HashMap<String, MountHandle>, String> {
    let mut out = HashMap::new();
    let Some(c) = plan.template.containers.first() else {
        return Ok(out);
    };
    for vm in &c.volume_mounts {
        if out.contains_key(&vm.name) {
            continue;
        }
        let Some(g) = plan
            .template
            .volumes
            .iter()
            .find(|v| v.name == vm.name)
            .and_then(|v| v.gcs.as_ref())
        else {
            continue;
        };
        let mounter = st
            .gcs_volumes()
            .cloned()
            .ok_or("this emulator cannot mount Cloud Storage volumes (no Storage endpoint)")?;
        let opts = MountOptions::parse(&g.mount_options)?;
        let (bucket, ro, budget) = (g.bucket.clone(), g.read_only, budget.clone());
        let m = tokio::task::spawn_blocking(move || mounter.mount(&bucket, &opts, ro, budget))
            .await
            .map_err(|e| format!("mounting volume {} failed: {e}", vm.name))??;
        out.insert(vm.name.clone(), m);
    }
    Ok(out)
}

async fn supervise(
    docker: &Docker,
    id: &str,
    plan: &ExecPlan,
    index: usize,
    cancel: &CancellationToken,
    budget: &Budget,
) -> Outcome {
    if let Err(e) = docker.start_container(id, None).await {
        return failure(13, format!("The container could not be started: {e}"), None);
    }
    enum End {
        Exit(i64),
        WaitErr(String),
        Timeout,
        Cancel,
        OutOfMemory(u64),
    }
    let end = {
        let mut wait = docker.wait_container(id, None);
        tokio::select! {
            r = wait.next() => match r {
                Some(Ok(r)) => End::Exit(r.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => End::Exit(code),
                Some(Err(e)) => End::WaitErr(e.to_string()),
                None => End::WaitErr("the engine's wait stream ended".into()),
            },
            _ = tokio::time::sleep(plan.timeout) => End::Timeout,
            _ = cancel.cancelled() => End::Cancel,
            used = budget.wait_exceeded() => End::OutOfMemory(used),
        }
    };
    let kill = || async {
        let opts = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        if let Err(e) = docker.kill_container(id, Some(opts)).await {
            tracing::debug!(container = %id, error = %e, "kill failed (it may have exited)");
        }
    };
    let task = format!("{}-task{index}", plan.exec_id);
    match end {
        End::Exit(0) => Outcome::Succeeded,
        End::Exit(code) => {
            let logs = log_tail(docker, id).await;
            failure(
                2,
                format!("The container exited with an error (exit code {code}).{logs}"),
                Some(code as i32),
            )
        }
        End::Timeout => {
            kill().await;
            let logs = log_tail(docker, id).await;
            failure(
                4,
                format!(
                    "The configured timeout was reached. Task {task} timed out after {}s.{logs}",
                    plan.timeout.as_secs_f64()
                ),
                None,
            )
        }
        End::Cancel => {
            kill().await;
            Outcome::Cancelled
        }
        End::OutOfMemory(used) => {
            // Cloud Run kills an instance past its memory limit; staged writes of Cloud
            // Storage volumes count (Cloud Run's jobs page, "Memory requirements").
            kill().await;
            tracing::info!(task = %task, used, limit = budget.limit(), "task out of memory");
            failure(
                8,
                gcsfuse::oom_message(budget.limit(), used),
                Some(gcsfuse::OOM_EXIT_CODE),
            )
        }
        End::WaitErr(e) => {
            kill().await;
            failure(13, format!("Waiting for the container failed: {e}"), None)
        }
    }
}

/// The last lines of a container's output, prefixed with a header saying how it was cut.
async fn log_tail(docker: &Docker, id: &str) -> String {
    let opts = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(LOG_TAIL_LINES)
        .build();
    let mut stream = docker.logs(id, Some(opts));
    let mut buf: Vec<u8> = Vec::new();
    let mut cut = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                buf.extend_from_slice(chunk.as_ref());
                if buf.len() > 2 * LOG_TAIL_BYTES {
                    let drop = buf.len() - LOG_TAIL_BYTES;
                    buf.drain(..drop);
                    cut = true;
                }
            }
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "reading logs failed");
                break;
            }
        }
    }
    if buf.len() > LOG_TAIL_BYTES {
        let drop = buf.len() - LOG_TAIL_BYTES;
        buf.drain(..drop);
        cut = true;
    }
    if buf.is_empty() {
        return String::new();
    }
    let header = if cut {
        format!(" Last {LOG_TAIL_BYTES} bytes of output (earlier output cut):")
    } else {
        format!(" Last output (at most {LOG_TAIL_LINES} lines):")
    };
    format!("{header}\n{}", String::from_utf8_lossy(&buf))
}

fn container_body(
    st: &RunState,
    plan: &ExecPlan,
    index: usize,
    attempt: i32,
    mounts: &HashMap<String, MountHandle>,
) -> Result<ContainerCreateBody, String> {
    let c = plan
        .template
        .containers
        .first()
        .ok_or("the task template has no container")?;
    let mut env: Vec<String> = c
        .env
        .iter()
        .map(|e| format!("{}={}", e.name, e.value.as_deref().unwrap_or("")))
        .collect();
    env.extend([
        format!("CLOUD_RUN_JOB={}", plan.job_id),
        format!("CLOUD_RUN_EXECUTION={}", plan.exec_id),
        format!("CLOUD_RUN_TASK_INDEX={index}"),
        format!("CLOUD_RUN_TASK_ATTEMPT={attempt}"),
        format!("CLOUD_RUN_TASK_COUNT={}", plan.task_count),
    ]);
    if let Some(host) = st.api_host() {
        // The twin's Cloud Storage and metadata server, unless the job points elsewhere.
        for (k, v) in [
            ("STORAGE_EMULATOR_HOST", format!("http://{host}")),
            ("GCE_METADATA_HOST", host.to_string()),
        ] {
            if !c.env.iter().any(|e| e.name == k) {
                env.push(format!("{k}={v}"));
            }
        }
    }
    if let Some(at) = st.cfg.faults.arm_worker_crash() {
        // Injected fault: the worker in this container crashes on purpose (counted).
        env.push(format!("SANDBOX_EXECUTOR_CRASH={}", at.as_str()));
    }
    let mut labels: HashMap<String, String> = st
        .cfg
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(EXECUTION_LABEL.into(), plan.exec_name.clone());
    labels.insert("sandbox-harness.run.task-index".into(), index.to_string());
    labels.insert("sandbox-harness.run.attempt".into(), attempt.to_string());

    let mut mounts_out = Vec::new();
    for vm in &c.volume_mounts {
        let vol = plan
            .template
            .volumes
            .iter()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| format!("volume {:?} is not defined", vm.name))?;
        if let Some(g) = &vol.gcs {
            let m = mounts
                .get(&vm.name)
                .ok_or_else(|| format!("volume {:?} was not mounted", vm.name))?;
            mounts_out.push(Mount {
                target: Some(vm.mount_path.clone()),
                source: Some(m.path().to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(g.read_only),
                ..Default::default()
            });
        } else if let Some(e) = &vol.empty_dir {
            let size = e.size_limit.as_deref().and_then(spec::parse_memory);
            let memory = e.medium.as_deref() == Some("MEMORY");
            mounts_out.push(Mount {
                target: Some(vm.mount_path.clone()),
                typ: Some(if memory {
                    MountType::TMPFS
                } else {
                    MountType::VOLUME
                }),
                tmpfs_options: memory.then_some(MountTmpfsOptions {
                    size_bytes: size,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }

    let limits = c.resources.as_ref().map(|r| &r.limits);
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1)
        * 1_000_000_000;
    let nano_cpus = limits
        .and_then(|l| l.get("cpu"))
        .and_then(|s| spec::parse_cpu(s))
        .map(|n| n.clamp(10_000_000, host_cpus));
    let memory = limits
        .and_then(|l| l.get("memory"))
        .and_then(|s| spec::parse_memory(s))
        .map(|m| m.max(8 * 1024 * 1024));
    let host_config = HostConfig {
        network_mode: Some("host".into()),
        nano_cpus,
        memory,
        mounts: Some(mounts_out),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(c.image.clone()),
        entrypoint: (!c.command.is_empty()).then(|| c.command.clone()),
        cmd: (!c.args.is_empty()).then(|| c.args.clone()),
        env: Some(env),
        working_dir: c.working_dir.clone(),
        labels: Some(labels),
        tty: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// Force-removes every container (running or not) labelled `key=value`.
pub async fn remove_labelled_containers(docker: &Docker, key: &str, value: &str) {
    let filters = HashMap::from([("label".to_string(), vec![format!("{key}={value}")])]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let list = match docker.list_containers(Some(opts)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "listing emulator containers failed");
            return;
        }
    };
    for c in list {
        let Some(id) = c.id else { continue };
        let rm = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = docker.remove_container(&id, Some(rm)).await {
            tracing::warn!(container = %id, error = %e, "removing an emulator container failed");
        }
    }
}
