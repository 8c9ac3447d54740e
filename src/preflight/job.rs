//! The preflight's test job: create a job with the executor image, run it with overrides, wait
//! for the execution, delete the job (always, once created).

use std::time::{Duration, Instant};

use super::{PreflightClients, PreflightOptions};
use crate::backends::cloudrun::{CloudRunConfig, LABEL};
use crate::gcp::run::{
    ContainerOverride, EnvVar, Execution, Job, Operation, Overrides, RunClient, format_duration,
};

/// Label marking preflight jobs (with `sandbox-harness=1`, so `gc` finds leftovers).
pub const PURPOSE_LABEL: &str = "sandbox-harness-purpose";

/// The default test command: a constant script that writes a file through each Cloud Storage
/// volume of the sandbox job spec (workspace and state), reads it back and compares, then
/// removes it; a failed step exits non-zero and fails the execution.
const MOUNT_CHECK: &str = "set -e\n\
for d in /workspace /sandbox-state; do\n\
  f=\"$d/.preflight-check\"\n\
  echo preflight-write-read > \"$f\"\n\
  test \"$(cat \"$f\")\" = preflight-write-read\n\
  rm \"$f\"\n\
  echo \"$d: written, read back and removed\"\n\
done\n";

fn default_command() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), MOUNT_CHECK.into()]
}

/// The real sandbox job spec of sandbox `id` (volumes, limits, service account), labelled as
/// a preflight job, with `command` in place of the worker.
fn test_job_spec(cfg: &CloudRunConfig, image: &str, id: &str, command: Vec<String>) -> Job {
    let mut spec = crate::backends::cloudrun::job_spec(cfg, image, id, false);
    spec.labels
        .insert(PURPOSE_LABEL.to_string(), "preflight".to_string());
    spec.labels.insert(LABEL.to_string(), "1".to_string());
    if let Some(c) = spec.template.template.containers.first_mut() {
        c.command = command;
        c.args.clear();
    }
    spec
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
    let command = opts.test_command.clone().unwrap_or_else(default_command);
    if command.is_empty() {
        return Err("the test command is empty".into());
    }
    let run = &clients.run;
    let parent = format!("projects/{}/locations/{}", clients.project, cfg.region);
    let name = format!("{parent}/jobs/{id}");
    let spec = test_job_spec(cfg, &image, &id, command);
    let deadline = Instant::now() + opts.job_timeout + Duration::from_secs(60);
    let created = match run.create_job(&parent, &id, &spec).await {
        Ok(op) => op,
        Err(e) => return Err(format!("creating job {id} failed: {e}")),
    };
    let ran = execute(run, &name, created, deadline, opts.job_timeout).await;
    let deleted = delete(run, &name).await;
    remove_objects(clients, &cfg.bucket, &id).await;
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

/// Removes what the test job left under its `sessions/` prefix (best effort: the 7-day
/// lifecycle rule and `gc` catch the rest).
async fn remove_objects(clients: &PreflightClients, bucket: &str, id: &str) {
    let opts = crate::gcp::storage::ListOptions {
        prefix: Some(crate::backends::cloudrun::sandbox_prefix(id)),
        ..Default::default()
    };
    if let Ok((objects, _)) = clients.storage.list_all(bucket, &opts).await {
        for o in objects {
            let _ = clients
                .storage
                .delete_object(bucket, &o.name, &Default::default())
                .await;
        }
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
