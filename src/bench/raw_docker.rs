//! The Docker raw baseline: a bare engine exec of `true` in the sandbox's container, with none of
//! the harness's shell wrapping, so the harness's own overhead shows next to its warm-exec figure.

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;

use super::RawBaseline;
use crate::backends::docker::agent::exit_code;
use crate::backends::docker::{NAME_PREFIX, map_bollard};
use crate::protocol::{Sandbox, SandboxError};

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
