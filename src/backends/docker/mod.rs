//! The Docker backend: one container per sandbox, driven through the engine API (bollard).
//!
//! The protocol logic is `GenericSandbox<DockerTransport>`; this module creates, finds and
//! removes the containers.
//!
//! A sandbox that asks for a browser (`create_with` a capability request, or every sandbox
//! with `SANDBOX_BROWSER=always`) runs the browser image instead of the small default one:
//! Chromium under a virtual display with a VNC server, started by the image's own main process
//! as an unprivileged user, inside the same container limits. Its DevTools and VNC ports are
//! published on the host's loopback interface only.

pub mod agent;
pub mod tar;
pub mod transport;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

pub use transport::{DockerTransport, collect_stream, map_bollard};

use crate::browser::cdp;
use crate::generic::{GenericConfig, GenericSandbox, Lifecycle};
use crate::images::browser::{CDP_PORT, VNC_PORT};
use crate::protocol::{
    BrowserInfo, Capabilities, ErrorKind, Result, Sandbox, SandboxBackend, SandboxError,
};
use crate::transport::{RawExec, Transport};

/// Label every harness container carries.
pub const LABEL: &str = "sandbox-harness";
/// Label holding the sandbox id.
pub const LABEL_SANDBOX: &str = "sandbox-harness.sandbox";
/// Prefix of container names (`sandbox-harness-<id>`).
pub const NAME_PREFIX: &str = "sandbox-harness-";
/// Label of sandboxes that run the browser image.
pub const LABEL_BROWSER: &str = "sandbox-harness.browser";

/// How long `get_browser` waits for a new browser to answer on its DevTools endpoint.
pub const BROWSER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Which sandboxes get a browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrowserMode {
    /// None: the backend declares no browser and no VNC.
    Off,
    /// Sandboxes created with a request for `browser` or `vnc` (the default).
    #[default]
    OnRequest,
    /// Every sandbox.
    Always,
}

impl BrowserMode {
    /// Parses `off`, `on-request` or `always` (the values of `SANDBOX_BROWSER`).
    pub fn parse(s: &str) -> Option<BrowserMode> {
        match s.trim() {
            "off" => Some(BrowserMode::Off),
            "on-request" => Some(BrowserMode::OnRequest),
            "always" => Some(BrowserMode::Always),
            _ => None,
        }
    }
}

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
    /// Which sandboxes get a browser.
    pub browser: BrowserMode,
    /// Image of browser sandboxes; `None` builds/uses the browser image
    /// (`SANDBOX_BROWSER_IMAGE` overrides).
    pub browser_image: Option<String>,
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
            browser: BrowserMode::OnRequest,
            browser_image: None,
            generic: GenericConfig {
                backend_name: "docker",
                ..GenericConfig::default()
            },
        }
    }
}

impl DockerConfig {
    /// The default configuration with the settings of the environment applied:
    /// `SANDBOX_BROWSER` (`off`, `on-request` or `always`).
    pub fn from_env() -> Result<DockerConfig> {
        let mut c = DockerConfig::default();
        if let Ok(v) = std::env::var("SANDBOX_BROWSER")
            && !v.is_empty()
        {
            c.browser = BrowserMode::parse(&v).ok_or_else(|| {
                SandboxError::invalid(
                    "-",
                    "connect",
                    format!("SANDBOX_BROWSER={v:?}: use off, on-request or always"),
                )
            })?;
        }
        Ok(c)
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
    browser_image: tokio::sync::OnceCell<String>,
    http: reqwest::Client,
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
            browser_image: tokio::sync::OnceCell::new(),
            http: reqwest::Client::new(),
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

    /// The image browser sandboxes run (built on first use when not configured: a few minutes
    /// the first time on a machine, see `images::browser`).
    pub async fn browser_image(&self) -> Result<String> {
        self.browser_image
            .get_or_try_init(|| async {
                match &self.config.browser_image {
                    Some(i) => Ok(i.clone()),
                    None => crate::images::browser::ensure_browser_image(&self.docker)
                        .await
                        .map_err(|e| SandboxError::backend("-", "create", e.to_string())),
                }
            })
            .await
            .cloned()
    }

    /// Whether a sandbox created with the request `wants` gets a browser.
    fn wants_browser(&self, wants: &Capabilities) -> Result<bool> {
        match self.config.browser {
            BrowserMode::Always => Ok(true),
            BrowserMode::OnRequest => Ok(wants.browser || wants.vnc),
            BrowserMode::Off if wants.browser || wants.vnc => Err(SandboxError::unsupported(
                "-",
                "create",
                "browser sandboxes are switched off (SANDBOX_BROWSER=off)",
            )),
            BrowserMode::Off => Ok(false),
        }
    }

    fn sandbox(
        &self,
        id: &str,
        fresh: bool,
        browser: Option<BrowserEndpoints>,
    ) -> Arc<DockerSandbox> {
        let name = container_name(id);
        let mut transport = DockerTransport::new(self.docker.clone(), name.clone(), id);
        if !self.config.agent {
            transport = transport.without_agent();
        }
        let mut generic = self.config.generic.clone();
        generic.capabilities.browser = browser.is_some();
        generic.capabilities.vnc = browser.is_some();
        let lifecycle = Arc::new(DockerLifecycle {
            docker: self.docker.clone(),
            transport: transport.clone(),
            container: name,
            id: id.to_string(),
            browser,
            http: self.http.clone(),
        });
        Arc::new(GenericSandbox::new(transport, lifecycle, generic, fresh))
    }

    /// Creates a sandbox (without a browser unless `SANDBOX_BROWSER=always`) and returns its
    /// concrete type.
    pub async fn create_docker(&self) -> Result<Arc<DockerSandbox>> {
        self.create_docker_with(Capabilities::default()).await
    }

    /// Creates a sandbox offering at least `wants` and returns its concrete type.
    pub async fn create_docker_with(&self, wants: Capabilities) -> Result<Arc<DockerSandbox>> {
        crate::protocol::check_request("docker", &SandboxBackend::capabilities(self), &wants)?;
        let browser = self.wants_browser(&wants)?;
        if browser && matches!(self.config.network_mode.as_deref(), Some("none" | "host")) {
            return Err(SandboxError::invalid(
                "-",
                "create",
                "a browser sandbox publishes its DevTools and VNC ports: it needs a bridge \
                 network, not network_mode none or host",
            ));
        }
        let image = if browser {
            self.browser_image().await?
        } else {
            self.image().await?
        };
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
        let (exposed_ports, port_bindings) = if browser {
            labels.insert(LABEL_BROWSER.to_string(), "1".to_string());
            // Loopback only, on ports the engine picks: the endpoints have no authentication.
            let ports = [CDP_PORT, VNC_PORT].map(|p| format!("{p}/tcp"));
            let bindings = ports
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some(String::new()),
                        }]),
                    )
                })
                .collect();
            (Some(ports.to_vec()), Some(bindings))
        } else {
            (None, None)
        };
        let body = ContainerCreateBody {
            image: Some(image),
            labels: Some(labels),
            working_dir: Some(crate::generic::DEFAULT_CWD.to_string()),
            exposed_ports,
            host_config: Some(HostConfig {
                port_bindings,
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
        let plain = self.sandbox(&id, true, None);
        if let Err(e) = self.docker.start_container(&name, None).await {
            let _ = plain.destroy().await;
            return Err(map_bollard(&id, "create", e));
        }
        let sb = if browser {
            let endpoints = match self.docker.inspect_container(&name, None).await {
                Ok(info) => BrowserEndpoints::from_inspect(&id, &info),
                Err(e) => Err(map_bollard(&id, "create", e)),
            };
            match endpoints {
                Ok(ep) => self.sandbox(&id, true, Some(ep)),
                Err(e) => {
                    let _ = plain.destroy().await;
                    return Err(e);
                }
            }
        } else {
            plain
        };
        tracing::info!(sandbox = %id, container = %name, browser, "created docker sandbox");
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
        let browser = if labels.get(LABEL_BROWSER).map(String::as_str) == Some("1") {
            Some(BrowserEndpoints::from_inspect(id, &info)?)
        } else {
            None
        };
        Ok(self.sandbox(id, false, browser))
    }
}

#[async_trait]
impl SandboxBackend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = self.config.generic.capabilities;
        c.browser = self.config.browser != BrowserMode::Off;
        c.vnc = c.browser;
        c
    }

    fn origin(&self) -> crate::protocol::BackendOrigin {
        crate::protocol::BackendOrigin::LocalDocker
    }

    async fn create(&self) -> Result<Arc<dyn Sandbox>> {
        Ok(self.create_docker().await?)
    }

    async fn create_with(&self, wants: Capabilities) -> Result<Arc<dyn Sandbox>> {
        Ok(self.create_docker_with(wants).await?)
    }

    async fn get(&self, id: &str) -> Result<Arc<dyn Sandbox>> {
        Ok(self.get_docker(id).await?)
    }
}

/// Where a browser sandbox's endpoints are published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BrowserEndpoints {
    cdp_url: String,
    vnc_url: String,
}

impl BrowserEndpoints {
    /// The host addresses the engine bound the DevTools and VNC ports to.
    fn from_inspect(id: &str, info: &ContainerInspectResponse) -> Result<BrowserEndpoints> {
        let ports = info
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref());
        let host = |port: u16| {
            let b = ports
                .and_then(|p| p.get(&format!("{port}/tcp")))
                .and_then(|b| b.as_ref())
                .and_then(|b| b.first())
                .ok_or_else(|| {
                    SandboxError::backend(
                        id,
                        "create",
                        format!("the engine published no host port for the sandbox's port {port}"),
                    )
                })?;
            let ip = match b.host_ip.as_deref() {
                None | Some("" | "0.0.0.0" | "::") => "127.0.0.1",
                Some(ip) => ip,
            };
            let p = b.host_port.as_deref().unwrap_or_default();
            if p.parse::<u16>().is_err() {
                return Err(SandboxError::backend(
                    id,
                    "create",
                    format!("the engine published port {port} on {p:?}"),
                ));
            }
            Ok(if ip.contains(':') {
                format!("[{ip}]:{p}")
            } else {
                format!("{ip}:{p}")
            })
        };
        Ok(BrowserEndpoints {
            cdp_url: format!("http://{}", host(CDP_PORT)?),
            vnc_url: format!("vnc://{}", host(VNC_PORT)?),
        })
    }
}

struct DockerLifecycle {
    docker: Docker,
    transport: DockerTransport,
    container: String,
    id: String,
    browser: Option<BrowserEndpoints>,
    http: reqwest::Client,
}

impl DockerLifecycle {
    /// Polls the DevTools endpoint until it answers; fails early when the container is gone.
    async fn wait_for_browser(&self, ep: &BrowserEndpoints) -> Result<BrowserInfo> {
        const OP: &str = "get_browser";
        let deadline = Instant::now() + BROWSER_START_TIMEOUT;
        let mut polls = 0u32;
        loop {
            let err = match cdp::version(&self.http, &ep.cdp_url, Duration::from_secs(5)).await {
                Ok(v) => {
                    return Ok(BrowserInfo {
                        cdp_url: ep.cdp_url.clone(),
                        vnc_url: Some(ep.vnc_url.clone()),
                        version: Some(v.browser),
                        websocket_url: Some(v.websocket_url),
                    });
                }
                Err(e) => e,
            };
            if polls.is_multiple_of(10) {
                match self.docker.inspect_container(&self.container, None).await {
                    Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true) => {}
                    Ok(_) => {
                        return Err(SandboxError::not_found(
                            &self.id,
                            OP,
                            "the sandbox is not running",
                        ));
                    }
                    Err(e) => return Err(map_bollard(&self.id, OP, e)),
                }
            }
            polls += 1;
            if Instant::now() >= deadline {
                return Err(SandboxError::new(
                    ErrorKind::Timeout,
                    &self.id,
                    OP,
                    format!(
                        "the browser did not answer on {} within {BROWSER_START_TIMEOUT:?} ({err}); \
                         its logs are in /var/log/sandbox-browser/ inside the sandbox",
                        ep.cdp_url
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[async_trait]
impl Lifecycle for DockerLifecycle {
    fn browser(&self) -> Option<BrowserInfo> {
        self.browser.as_ref().map(|ep| BrowserInfo {
            cdp_url: ep.cdp_url.clone(),
            vnc_url: Some(ep.vnc_url.clone()),
            version: None,
            websocket_url: None,
        })
    }

    async fn browser_ready(&self) -> Option<Result<BrowserInfo>> {
        let ep = self.browser.as_ref()?;
        Some(self.wait_for_browser(ep).await)
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::NetworkSettings;

    fn inspect(ports: &[(&str, Option<&str>, &str)]) -> ContainerInspectResponse {
        let map = ports
            .iter()
            .map(|(p, ip, hp)| {
                (
                    p.to_string(),
                    Some(vec![PortBinding {
                        host_ip: ip.map(str::to_string),
                        host_port: Some(hp.to_string()),
                    }]),
                )
            })
            .collect();
        ContainerInspectResponse {
            network_settings: Some(NetworkSettings {
                ports: Some(map),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_come_from_the_published_ports() {
        let ep = BrowserEndpoints::from_inspect(
            "x",
            &inspect(&[
                ("9223/tcp", Some("127.0.0.1"), "32770"),
                ("5900/tcp", Some("0.0.0.0"), "32771"),
            ]),
        )
        .unwrap();
        assert_eq!(ep.cdp_url, "http://127.0.0.1:32770");
        assert_eq!(ep.vnc_url, "vnc://127.0.0.1:32771");
        let v6 = BrowserEndpoints::from_inspect(
            "x",
            &inspect(&[("9223/tcp", Some("::1"), "1"), ("5900/tcp", None, "2")]),
        )
        .unwrap();
        assert_eq!(v6.cdp_url, "http://[::1]:1");
        // A port the engine did not publish, or published oddly, is a Backend error.
        for bad in [
            inspect(&[("9223/tcp", Some("127.0.0.1"), "1")]),
            inspect(&[("9223/tcp", None, ""), ("5900/tcp", None, "2")]),
        ] {
            let e = BrowserEndpoints::from_inspect("x", &bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
        }
    }

    #[test]
    fn browser_modes_parse() {
        assert_eq!(BrowserMode::parse("off"), Some(BrowserMode::Off));
        assert_eq!(
            BrowserMode::parse("on-request"),
            Some(BrowserMode::OnRequest)
        );
        assert_eq!(BrowserMode::parse(" always "), Some(BrowserMode::Always));
        assert_eq!(BrowserMode::parse("yes"), None);
        assert_eq!(BrowserMode::default(), BrowserMode::OnRequest);
    }
}
