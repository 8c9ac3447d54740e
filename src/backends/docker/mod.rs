//! The Docker backend: one container per sandbox, driven through the engine API (bollard).
//!
//! The protocol logic is `GenericSandbox<DockerTransport>`; this module creates, finds and
//! removes the containers.

pub mod agent;
pub mod tar;
pub mod transport;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

pub use transport::{DockerTransport, collect_stream, map_bollard};

use crate::generic::{GenericConfig, GenericSandbox, Lifecycle};
use crate::protocol::{Capabilities, ErrorKind, Result, Sandbox, SandboxBackend, SandboxError};
use crate::transport::{RawExec, Transport};

/// Label every harness container carries.
pub const LABEL: &str = "sandbox-harness";
/// Label holding the sandbox id.
pub const LABEL_SANDBOX: &str = "sandbox-harness.sandbox";
/// Prefix of container names (`sandbox-harness-<id>`).
pub const NAME_PREFIX: &str = "sandbox-harness-";

/// The sandbox type this backend hands out.
pub type DockerSandbox = GenericSandbox<DockerTransport>;

/// Settings of the Docker backend.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Image to run; `None` builds/uses the default image (`SANDBOX_IMAGE` overrides).
    pub image: Option<String>,
    /// CPU limit in units of 1e-9 CPUs (default 1 CPU).
    pub nano_cpus: i64,
    /// Memory limit in bytes (default 512 MiB).
    pub memory_bytes: i64,
    /// Most processes in the container (default 512).
    pub pids_limit: i64,
    /// Network mode (`None`: the engine default bridge; `"none"`, `"host"`...).
    pub network_mode: Option<String>,
    /// Labels added to every container besides the harness's own (e.g. a test run's id).
    pub extra_labels: BTreeMap<String, String>,
    /// Send commands through the in-sandbox agent (when the image has it) rather than one
    /// engine exec per command.
    pub agent: bool,
    /// Protocol-level settings (exec wait, default timeout, bookkeeping dir, capabilities).
    pub generic: GenericConfig,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            image: None,
            nano_cpus: 1_000_000_000,
            memory_bytes: 512 * 1024 * 1024,
            pids_limit: 512,
            network_mode: None,
            extra_labels: BTreeMap::new(),
            agent: true,
            generic: GenericConfig {
                backend_name: "docker",
                ..GenericConfig::default()
            },
        }
    }
}

/// Capabilities a root shell in the sandbox needs; everything else is dropped.
pub const CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
];

/// Creates sandboxes as containers and re-attaches to them.
pub struct DockerBackend {
    docker: Docker,
    config: DockerConfig,
    image: tokio::sync::OnceCell<String>,
}

/// Connects to the engine named by `DOCKER_HOST` (or the default socket) at an API version
/// both sides speak.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| map_bollard("-", "connect", e))?
        .with_timeout(Duration::from_secs(24 * 3600));
    docker
        .negotiate_version()
        .await
        .map_err(|e| map_bollard("-", "connect", e))
}

fn container_name(id: &str) -> String {
    format!("{NAME_PREFIX}{id}")
}

impl DockerBackend {
    /// Connects to the engine (see [`connect`]) with this configuration.
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        Ok(Self::with_client(connect().await?, config))
    }

    /// A backend over an existing engine client (its API version must be ≤ the engine's).
    pub fn with_client(docker: Docker, config: DockerConfig) -> Self {
        DockerBackend {
            docker,
            config,
            image: tokio::sync::OnceCell::new(),
        }
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The image sandboxes run (built on first use when not configured).
    pub async fn image(&self) -> Result<String> {
        self.image
            .get_or_try_init(|| async {
                match &self.config.image {
                    Some(i) => Ok(i.clone()),
                    None => crate::images::ensure_sandbox_image(&self.docker)
                        .await
                        .map_err(|e| SandboxError::backend("-", "create", e.to_string())),
                }
            })
            .await
            .cloned()
    }

    fn sandbox(&self, id: &str, fresh: bool) -> Arc<DockerSandbox> {
        let name = container_name(id);
        let mut transport = DockerTransport::new(self.docker.clone(), name.clone(), id);
        if !self.config.agent {
            transport = transport.without_agent();
        }
        let lifecycle = Arc::new(DockerLifecycle {
            docker: self.docker.clone(),
            transport: transport.clone(),
            container: name,
            id: id.to_string(),
        });
        Arc::new(GenericSandbox::new(
            transport,
            lifecycle,
            self.config.generic.clone(),
            fresh,
        ))
    }

    /// Creates a sandbox and returns its concrete type.
    pub async fn create_docker(&self) -> Result<Arc<DockerSandbox>> {
        let image = self.image().await?;
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let name = container_name(&id);
        let mut labels: HashMap<String, String> = self
            .config
            .extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL.to_string(), "1".to_string());
        labels.insert(LABEL_SANDBOX.to_string(), id.clone());
        let body = ContainerCreateBody {
            image: Some(image),
            labels: Some(labels),
            working_dir: Some(crate::generic::DEFAULT_CWD.to_string()),
            host_config: Some(HostConfig {
                nano_cpus: Some(self.config.nano_cpus),
                memory: Some(self.config.memory_bytes),
                pids_limit: Some(self.config.pids_limit),
                privileged: Some(false),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(CAPS.iter().map(|c| c.to_string()).collect()),
                security_opt: Some(vec!["no-new-privileges".into()]),
                init: Some(true),
                network_mode: self.config.network_mode.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| map_bollard(&id, "create", e))?;
        let sb = self.sandbox(&id, true);
        if let Err(e) = self.docker.start_container(&name, None).await {
            let _ = sb.destroy().await;
            return Err(map_bollard(&id, "create", e));
        }
        tracing::info!(sandbox = %id, container = %name, "created docker sandbox");
        Ok(sb)
    }

    /// Re-attaches to a live sandbox and returns its concrete type.
    pub async fn get_docker(&self, id: &str) -> Result<Arc<DockerSandbox>> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(SandboxError::invalid(id, "get", "malformed sandbox id"));
        }
        let info = self
            .docker
            .inspect_container(&container_name(id), None)
            .await
            .map_err(|e| map_bollard(id, "get", e))?;
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        if labels.get(LABEL).map(String::as_str) != Some("1")
            || labels.get(LABEL_SANDBOX).map(String::as_str) != Some(id)
        {
            return Err(SandboxError::not_found(
                id,
                "get",
                "the container is not a sandbox-harness sandbox",
            ));
        }
        if info.state.as_ref().and_then(|s| s.running) != Some(true) {
            return Err(SandboxError::not_found(
                id,
                "get",
                "the sandbox is not running",
            ));
        }
        Ok(self.sandbox(id, false))
    }
}

#[async_trait]
impl SandboxBackend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        self.config.generic.capabilities
    }

    async fn create(&self) -> Result<Arc<dyn Sandbox>> {
        Ok(self.create_docker().await?)
    }

    async fn get(&self, id: &str) -> Result<Arc<dyn Sandbox>> {
        Ok(self.get_docker(id).await?)
    }
}

struct DockerLifecycle {
    docker: Docker,
    transport: DockerTransport,
    container: String,
    id: String,
}

#[async_trait]
impl Lifecycle for DockerLifecycle {
    async fn ensure_ready(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            // Through the sandbox's own transport, so its agent is up once this returns.
            match self
                .transport
                .run(
                    "ensure_ready",
                    RawExec::new(["true"], Duration::from_secs(10)),
                )
                .await
            {
                Ok(o) if o.exit_code == 0 => return Ok(()),
                Ok(o) => {
                    return Err(SandboxError::backend(
                        &self.id,
                        "ensure_ready",
                        format!("`true` exited with {}", o.exit_code),
                    ));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(e),
                Err(e) if start.elapsed() > Duration::from_secs(30) => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn destroy(&self) -> Result<()> {
        match self
            .docker
            .remove_container(
                &self.container,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // A removal already in progress counts as removed.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(map_bollard(&self.id, "destroy", e)),
        }
    }
}
