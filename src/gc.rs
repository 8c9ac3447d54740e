//! `sandbox-harness gc`: removes what a crashed run left behind, found by labels and prefixes.
//!
//! - Docker: containers labelled `sandbox-harness` (Docker sandboxes and emulator executions).
//! - Cloud Run: jobs labelled `sandbox-harness` in the configured project and region (their
//!   running executions are cancelled first).
//! - Cloud Storage: objects under `sessions/<id>/` whose job `sandbox-<id>` no longer exists.
//!
//! A [`GcScope`] restricts the sweep to given sandbox ids (tests, and runs that share an engine
//! with other harness runs); `dry_run` lists what would go and removes nothing.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};

use crate::backends::cloudrun::{self, CloudRunConfig, JOB_PREFIX};
use crate::gcp::run::RunClient;
use crate::gcp::storage::{ListOptions, StorageClient, WriteOptions};

/// Why a sweep could not run at all (single removals that fail are reported per item).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The Docker engine could not be listed.
    #[error("listing Docker containers failed: {0}")]
    Docker(String),
    /// The Cloud Run API could not be listed.
    #[error("listing Cloud Run jobs failed: {0}")]
    Run(String),
    /// Cloud Storage could not be listed.
    #[error("listing Cloud Storage objects failed: {0}")]
    Storage(String),
    /// The Cloud Run configuration is unusable.
    #[error("Cloud Run configuration: {0}")]
    Config(String),
}

/// Which leftovers a sweep may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GcScope {
    /// Everything carrying the harness labels.
    #[default]
    All,
    /// Only resources whose sandbox id, job name or harness label values contain one of these.
    Only(BTreeSet<String>),
}

impl GcScope {
    fn admits<'a>(&self, mut values: impl Iterator<Item = &'a str>) -> bool {
        match self {
            GcScope::All => true,
            GcScope::Only(ids) => values.any(|v| ids.iter().any(|id| v.contains(id.as_str()))),
        }
    }
}

/// Settings of one sweep.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// List what would be removed, remove nothing.
    pub dry_run: bool,
    /// What the sweep may touch.
    pub scope: GcScope,
    /// Only touch what is at least this old (a sandbox's objects: last written this long ago),
    /// so a sweep beside a live run spares it; items of unknown age are then left alone.
    pub older_than: Option<std::time::Duration>,
}

impl GcOptions {
    /// True when an item created (or last written) at `at` is old enough to sweep.
    fn old_enough(&self, at: Option<chrono::DateTime<chrono::Utc>>) -> bool {
        let Some(min) = self.older_than else {
            return true;
        };
        let Some(at) = at else { return false };
        chrono::Utc::now()
            .signed_duration_since(at)
            .to_std()
            .is_ok_and(|age| age >= min)
    }
}

/// What kind of leftover an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GcKind {
    /// A Docker container.
    Container,
    /// A Cloud Run job (with its executions).
    Job,
    /// A Cloud Run execution cancelled before its job was deleted.
    Execution,
    /// A Cloud Storage object.
    Object,
}

impl fmt::Display for GcKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GcKind::Container => "container",
            GcKind::Job => "job",
            GcKind::Execution => "execution",
            GcKind::Object => "object",
        })
    }
}

/// What happened to one leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// Removed.
    Removed,
    /// Would be removed (dry run).
    WouldRemove,
    /// Removal failed, with the reason.
    Failed(String),
}

/// One leftover found by a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcItem {
    /// Container, job, execution or object.
    pub kind: GcKind,
    /// Its name (container name, job or execution resource name, `bucket/object`).
    pub name: String,
    /// What was done.
    pub action: GcAction,
}

impl fmt::Display for GcItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match &self.action {
            GcAction::Removed => "removed".to_string(),
            GcAction::WouldRemove => "would remove".to_string(),
            GcAction::Failed(e) => format!("FAILED: {e}"),
        };
        write!(f, "{:<10} {:<13} {}", self.kind, action, self.name)
    }
}

/// Removes (or lists, on a dry run) every container labelled `sandbox-harness`.
pub async fn gc_docker(docker: &Docker, opts: &GcOptions) -> Result<Vec<GcItem>, GcError> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![crate::backends::docker::LABEL.to_string()],
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| GcError::Docker(e.to_string()))?;
    let mut out = Vec::new();
    for c in list {
        let labels = c.labels.clone().unwrap_or_default();
        let names: Vec<String> = c
            .names
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.trim_start_matches('/').to_string())
            .collect();
        let harness_values = labels
            .iter()
            .filter(|(k, _)| k.starts_with(crate::backends::docker::LABEL))
            .map(|(_, v)| v.as_str());
        if !opts
            .scope
            .admits(harness_values.chain(names.iter().map(String::as_str)))
            || !opts.old_enough(
                c.created
                    .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            )
        {
            continue;
        }
        let Some(id) = c.id.clone() else { continue };
        let name = names.first().cloned().unwrap_or_else(|| id.clone());
        let action = if opts.dry_run {
            GcAction::WouldRemove
        } else {
            match docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => GcAction::Removed,
                // Gone meanwhile (an emulator shut down, a removal in progress): removed.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => GcAction::Removed,
                Err(e) => GcAction::Failed(e.to_string()),
            }
        };
        out.push(GcItem {
            kind: GcKind::Container,
            name,
            action,
        });
    }
    Ok(out)
}

/// Removes harness jobs under `parent` (cancelling their executions), then the objects under
/// `sessions/<id>/` in `bucket` whose job no longer exists.
pub async fn gc_cloudrun(
    run: &RunClient,
    storage: &StorageClient,
    parent: &str,
    bucket: &str,
    opts: &GcOptions,
) -> Result<Vec<GcItem>, GcError> {
    let mut out = Vec::new();
    let mut jobs = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = run
            .list_jobs(parent, Some(100), token.as_deref())
            .await
            .map_err(|e| GcError::Run(e.to_string()))?;
        jobs.extend(page.jobs);
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    // Job ids that stay (not harness jobs, out of scope, or failed to delete).
    let mut live: BTreeSet<String> = BTreeSet::new();
    for job in jobs {
        let short = job.name.rsplit('/').next().unwrap_or_default().to_string();
        let harness = job.labels.contains_key(cloudrun::LABEL);
        let values = job
            .labels
            .iter()
            .filter(|(k, _)| k.starts_with(cloudrun::LABEL))
            .map(|(_, v)| v.as_str())
            .chain(std::iter::once(job.name.as_str()));
        let created = job
            .create_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        if !harness || !opts.scope.admits(values) || !opts.old_enough(created) {
            live.insert(short);
            continue;
        }
        if let Ok(list) = run.list_executions(&job.name, None, None).await {
            for e in list.executions.into_iter().filter(|e| !e.is_done()) {
                let action = if opts.dry_run {
                    GcAction::WouldRemove
                } else {
                    match run.cancel_execution(&e.name).await {
                        Ok(_) => GcAction::Removed,
                        Err(err) if err.is_not_found() => GcAction::Removed,
                        Err(err) => GcAction::Failed(err.to_string()),
                    }
                };
                out.push(GcItem {
                    kind: GcKind::Execution,
                    name: e.name,
                    action,
                });
            }
        }
        let action = if opts.dry_run {
            GcAction::WouldRemove
        } else {
            match run.delete_job(&job.name).await {
                Ok(_) => GcAction::Removed,
                Err(e) if e.is_not_found() => GcAction::Removed,
                Err(e) => {
                    live.insert(short.clone());
                    GcAction::Failed(e.to_string())
                }
            }
        };
        out.push(GcItem {
            kind: GcKind::Job,
            name: job.name,
            action,
        });
    }
    // Objects of sandboxes whose job is gone (or goes in this sweep).
    let (_, prefixes) = storage
        .list_all(
            bucket,
            &ListOptions {
                prefix: Some("sessions/".into()),
                delimiter: Some("/".into()),
                ..ListOptions::default()
            },
        )
        .await
        .map_err(|e| GcError::Storage(e.to_string()))?;
    for prefix in prefixes {
        let id = prefix
            .trim_start_matches("sessions/")
            .trim_end_matches('/')
            .to_string();
        if id.is_empty()
            || live.contains(&format!("{JOB_PREFIX}{id}"))
            || !opts.scope.admits(std::iter::once(id.as_str()))
        {
            continue;
        }
        let (objects, _) = storage
            .list_all(
                bucket,
                &ListOptions {
                    prefix: Some(prefix.clone()),
                    ..ListOptions::default()
                },
            )
            .await
            .map_err(|e| GcError::Storage(e.to_string()))?;
        // A sandbox written to recently may belong to a live run: keep all of it.
        if !objects
            .iter()
            .all(|o| opts.old_enough(o.updated.or(o.time_created)))
        {
            continue;
        }
        for o in objects {
            let action = if opts.dry_run {
                GcAction::WouldRemove
            } else {
                match storage
                    .delete_object(bucket, &o.name, &WriteOptions::default())
                    .await
                {
                    Ok(()) => GcAction::Removed,
                    Err(e) if e.is_not_found() => GcAction::Removed,
                    Err(e) => GcAction::Failed(e.to_string()),
                }
            };
            out.push(GcItem {
                kind: GcKind::Object,
                name: format!("{bucket}/{}", o.name),
                action,
            });
        }
    }
    Ok(out)
}

/// Clients for the Cloud Run sweep from a configuration that names a real or emulator endpoint;
/// `None` when only the embedded emulator is configured (it leaves nothing behind but
/// containers, which the Docker sweep removes).
pub async fn cloudrun_clients(
    cfg: &CloudRunConfig,
) -> Result<Option<(RunClient, StorageClient, String)>, GcError> {
    if cfg.uses_embedded_emulator() {
        return Ok(None);
    }
    let clients = crate::gcp::clients::GoogleClients::for_config(cfg)
        .await
        .map_err(|e| GcError::Config(e.to_string()))?;
    let parent = clients.parent(&cfg.region);
    Ok(Some((clients.run, clients.storage, parent)))
}

/// The whole sweep the CLI runs: Docker (when reachable) and Cloud Run (when configured).
/// Returns the items and the sweeps that could not run.
pub async fn gc_all(opts: &GcOptions) -> (Vec<GcItem>, Vec<GcError>) {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    match crate::backends::docker::connect().await {
        Ok(docker) => match gc_docker(&docker, opts).await {
            Ok(i) => items.extend(i),
            Err(e) => errors.push(e),
        },
        Err(e) => errors.push(GcError::Docker(e.to_string())),
    }
    match CloudRunConfig::from_env() {
        Ok(cfg) => match cloudrun_clients(&cfg).await {
            Ok(Some((run, storage, parent))) => {
                match gc_cloudrun(&run, &storage, &parent, &cfg.bucket, opts).await {
                    Ok(i) => items.extend(i),
                    Err(e) => errors.push(e),
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        },
        Err(e) => errors.push(GcError::Config(e.to_string())),
    }
    (items, errors)
}

/// Renders a sweep's items as lines, with a closing count.
pub fn render(items: &[GcItem], dry_run: bool) -> String {
    let mut s = String::new();
    for i in items {
        s.push_str(&i.to_string());
        s.push('\n');
    }
    let failed = items
        .iter()
        .filter(|i| matches!(i.action, GcAction::Failed(_)))
        .count();
    let verb = if dry_run { "would remove" } else { "removed" };
    s.push_str(&format!(
        "gc: {verb} {} item(s), {failed} failed\n",
        items.len() - failed
    ));
    s
}
