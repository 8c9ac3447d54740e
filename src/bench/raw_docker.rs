//! The Docker raw baseline: a bare engine exec of `true` in the sandbox's container, with none of
//! the harness's shell wrapping, so the harness's own overhead shows next to its warm-exec figure;
//! and bare archive PUT / GET of a file (what `docker cp` does), next to its 500 MB transfers.

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures::StreamExt;

use super::RawBaseline;
use crate::backends::docker::agent::exit_code;
use crate::backends::docker::transport::tar_stream;
use crate::backends::docker::{NAME_PREFIX, map_bollard};
use crate::paths;
use crate::protocol::{Sandbox, SandboxError, UploadBody};

/// `docker exec <container> true` through the engine API.
pub struct DockerRawExec {
    docker: Docker,
}

impl DockerRawExec {
    /// A baseline using this engine client.
    pub fn new(docker: Docker) -> DockerRawExec {
        DockerRawExec { docker }
    }
}

#[async_trait]
impl RawBaseline for DockerRawExec {
    fn description(&self) -> String {
        "engine exec of `true` (no shell wrapper, no state capture)".into()
    }

    fn transfer_description(&self) -> Option<String> {
        Some(
            "engine archive PUT / GET of one file, as `docker cp` does (no temp file, no checks)"
                .into(),
        )
    }

    async fn upload_once(
        &self,
        sandbox: &dyn Sandbox,
        path: &str,
        body: UploadBody,
        len: u64,
    ) -> Result<(), SandboxError> {
        let id = sandbox.id();
        let op = "raw_upload";
        let dir = paths::parent(path).to_string();
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        let content = body
            .stream
            .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
        self.docker
            .upload_to_container(
                &format!("{NAME_PREFIX}{id}"),
                Some(UploadToContainerOptions {
                    path: dir,
                    ..Default::default()
                }),
                bollard::body_try_stream(tar_stream(name, len, content)),
            )
            .await
            .map_err(|e| map_bollard(id, op, e))
    }

    async fn download_once(&self, sandbox: &dyn Sandbox, path: &str) -> Result<u64, SandboxError> {
        let id = sandbox.id();
        let mut archive = self.docker.download_from_container(
            &format!("{NAME_PREFIX}{id}"),
            Some(DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        let mut n = 0u64;
        while let Some(chunk) = archive.next().await {
            n += chunk.map_err(|e| map_bollard(id, "raw_download", e))?.len() as u64;
        }
        Ok(n)
    }

    async fn run_once(&self, sandbox: &dyn Sandbox) -> Result<(), SandboxError> {
        let id = sandbox.id();
        let container = format!("{NAME_PREFIX}{id}");
        let op = "raw_baseline";
        let exec = self
            .docker
            .create_exec(
                &container,
                CreateExecOptions::<String> {
                    cmd: Some(vec!["true".into()]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_bollard(id, op, e))?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| map_bollard(id, op, e))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(item) = output.next().await {
                item.map_err(|e| map_bollard(id, op, e))?;
            }
        }
        match exit_code(&self.docker, &exec.id).await {
            Some(0) => Ok(()),
            Some(other) => Err(SandboxError::backend(
                id,
                op,
                format!("`true` exited with {other}"),
            )),
            None => Err(SandboxError::timeout(id, op, "the exec did not finish")),
        }
    }
}
