//! The preflight's test job: create a job with the executor image, run it with overrides, wait
//! for the execution, delete the job (always, once created).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{PreflightClients, PreflightOptions};
use crate::backends::cloudrun::{CloudRunConfig, LABEL};
use crate::gcp::run::{
    Container, ContainerOverride, EnvVar, Execution, ExecutionTemplate, Job, Operation, Overrides,
    ResourceRequirements, RunClient, TaskTemplate, format_duration,
};

/// Label marking preflight jobs (with `sandbox-harness=1`, so `gc` finds leftovers).
pub const PURPOSE_LABEL: &str = "sandbox-harness-purpose";

/// The default test command: the executor's worker on the test job's own `sessions/` prefix
/// (which the 7-day lifecycle rule and `gc` clean), exiting 0 after a short idle time, so it
/// reaches Cloud Storage as a sandbox's worker does.
fn default_command(cfg: &CloudRunConfig, id: &str) -> Vec<String> {
    vec![
        crate::images::EXECUTOR_PATH.into(),
        "worker".into(),
        "--bucket".into(),
        cfg.bucket.clone(),
        "--prefix".into(),
        crate::backends::cloudrun::sandbox_prefix(id),
        "--idle-timeout-ms".into(),
        "200".into(),
        "--poll-min-ms".into(),
        "20".into(),
        "--poll-max-ms".into(),
        "100".into(),
        "--max-lifetime-ms".into(),
        "20000".into(),
    ]
}

fn job_spec(cfg: &CloudRunConfig, image: &str, command: Vec<String>, timeout: Duration) -> Job {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL.to_string(), "1".to_string());
    labels.insert(PURPOSE_LABEL.to_string(), "preflight".to_string());
    let mut limits = BTreeMap::new();
    limits.insert("cpu".to_string(), cfg.cpu.clone());
    limits.insert("memory".to_string(), cfg.memory.clone());
    Job {
        labels,
        template: ExecutionTemplate {
            task_count: Some(1),
            parallelism: Some(1),
            template: TaskTemplate {
                containers: vec![Container {
                    name: Some("preflight".into()),
                    image: image.to_string(),
                    command,
                    resources: Some(ResourceRequirements { limits }),
                    ..Container::default()
                }],
                max_retries: Some(0),
                timeout: Some(format_duration(timeout)),
                service_account: cfg.service_account.clone(),
                ..TaskTemplate::default()
            },
            ..ExecutionTemplate::default()
        },
        ..Job::default()
    }
}

/// Why the execution failed, from its first task's last attempt.
async fn failure_detail(run: &RunClient, x: &Execution) -> String {
    let from_task = match run.list_tasks(&x.name, None, None).await {
        Ok(list) => list.tasks.into_iter().find_map(|t| {
            t.last_attempt_result
                .and_then(|r| r.status)
                .map(|s| s.message)
                .filter(|m| !m.is_empty())
        }),
        Err(e) => Some(format!("(listing its tasks failed: {e})")),
    };
    from_task
        .or_else(|| {
            x.completed_condition()
                .and_then(|c| c.message.clone())
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_else(|| "no failure message reported".into())
}

/// Creates, runs and deletes the test job; `Ok(what happened)` or `Err(why it failed)`.
pub(super) async fn round_trip(
    cfg: &CloudRunConfig,
    clients: &PreflightClients,
    opts: &PreflightOptions,
) -> Result<String, String> {
    let image = clients.executor_image.clone()?;
    let id = format!(
        "preflight-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let command = opts
        .test_command
        .clone()
        .unwrap_or_else(|| default_command(cfg, &id));
    if command.is_empty() {
        return Err("the test command is empty".into());
    }
    let run = &clients.run;
    let parent = format!("projects/{}/locations/{}", clients.project, cfg.region);
    let name = format!("{parent}/jobs/{id}");
    let spec = job_spec(cfg, &image, command, opts.job_timeout);
    let deadline = Instant::now() + opts.job_timeout + Duration::from_secs(60);
    let created = match run.create_job(&parent, &id, &spec).await {
        Ok(op) => op,
        Err(e) => return Err(format!("creating job {id} failed: {e}")),
    };
    let ran = execute(run, &name, created, deadline, opts.job_timeout).await;
    let deleted = delete(run, &name).await;
    match (ran, deleted) {
        (Ok(ran), Ok(())) => Ok(format!(
            "job {id} created, ran with image {image} ({ran}) and deleted"
        )),
        (Ok(ran), Err(d)) => Err(format!("job {id} ran ({ran}) but {d}; delete it by hand")),
        (Err(r), Ok(())) => Err(format!("job {id} with image {image}: {r} (job deleted)")),
        (Err(r), Err(d)) => Err(format!(
            "job {id} with image {image}: {r}; also {d}; delete it by hand"
        )),
    }
}

async fn execute(
    run: &RunClient,
    name: &str,
    created: Operation,
    deadline: Instant,
    timeout: Duration,
) -> Result<String, String> {
    match run.poll_operation(created, deadline).await {
        Ok(Some(op)) => {
            if let Some(e) = op.error {
                return Err(format!("job creation failed: {}", e.message));
            }
        }
        Ok(None) => return Err("job creation did not finish in time".into()),
        Err(e) => return Err(format!("waiting for job creation failed: {e}")),
    }
    let overrides = Overrides {
        container_overrides: vec![ContainerOverride {
            env: vec![EnvVar::new("SANDBOX_HARNESS_PREFLIGHT", "1")],
            ..ContainerOverride::default()
        }],
        timeout: Some(format_duration(timeout)),
        ..Overrides::default()
    };
    let started = Instant::now();
    let op = run
        .run_job(name, Some(overrides))
        .await
        .map_err(|e| format!("running it failed: {e}"))?;
    let exec_name = op.execution().map(|x| x.name);
    let done = match run.poll_operation(op, deadline).await {
        Ok(Some(op)) => op,
        Ok(None) => {
            if let Some(x) = &exec_name {
                let _ = run.cancel_execution(x).await;
            }
            return Err(format!(
                "the execution did not finish in {} s (cancelled)",
                timeout.as_secs()
            ));
        }
        Err(e) => return Err(format!("waiting for the execution failed: {e}")),
    };
    let execution = match done.execution() {
        Some(x) => x,
        None => match &exec_name {
            Some(n) => run
                .get_execution(n)
                .await
                .map_err(|e| format!("reading the execution failed: {e}"))?,
            None => return Err("the run operation named no execution".into()),
        },
    };
    let short = execution
        .name
        .rsplit('/')
        .next()
        .unwrap_or(&execution.name)
        .to_string();
    if execution.succeeded() {
        Ok(format!(
            "execution {short} succeeded in {:.1} s",
            started.elapsed().as_secs_f64()
        ))
    } else {
        let detail = match &done.error {
            Some(e) if !e.message.is_empty() => e.message.clone(),
            _ => failure_detail(run, &execution).await,
        };
        Err(format!("execution {short} failed: {detail}"))
    }
}

async fn delete(run: &RunClient, name: &str) -> Result<(), String> {
    let op = match run.delete_job(name).await {
        Ok(op) => op,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(format!("deleting the job failed: {e}")),
    };
    match run
        .poll_operation(op, Instant::now() + Duration::from_secs(120))
        .await
    {
        Ok(Some(op)) => match op.error {
            Some(e) => Err(format!("deleting the job failed: {}", e.message)),
            None => Ok(()),
        },
        Ok(None) => Err("deleting the job did not finish in 120 s".into()),
        Err(e) => Err(format!("waiting for the job deletion failed: {e}")),
    }
}
