//! Backends by name: factories that build an `Arc<dyn SandboxBackend>` (async, fallible).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::protocol::SandboxBackend;

/// Why a backend could not be built; the runner reports its cases as skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactoryError {
    /// The backend needs configuration that is missing (project, bucket, credentials...).
    #[error("backend not configured: {0}")]
    NotConfigured(String),
    /// The engine or service cannot be reached.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// Anything else.
    #[error("backend unavailable: {0}")]
    Failed(String),
}

/// A factory that builds a backend.
pub type BackendFactory = Arc<
    dyn Fn() -> BoxFuture<'static, Result<Arc<dyn SandboxBackend>, FactoryError>> + Send + Sync,
>;

/// A named backend factory.
#[derive(Clone)]
pub struct BackendEntry {
    /// The backend name (`docker`, `cloudrun`).
    pub name: String,
    /// Builds it.
    pub factory: BackendFactory,
}

/// The backends the suite can run against, in registration order.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Vec<BackendEntry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) a backend factory under `name`.
    pub fn register<F, Fut>(&mut self, name: &str, factory: F) -> &mut Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn SandboxBackend>, FactoryError>>
            + Send
            + 'static,
    {
        let factory: BackendFactory = Arc::new(move || Box::pin(factory()));
        self.entries.retain(|e| e.name != name);
        self.entries.push(BackendEntry {
            name: name.to_string(),
            factory,
        });
        self
    }

    /// Registers a backend that already exists.
    pub fn register_instance(&mut self, backend: Arc<dyn SandboxBackend>) -> &mut Self {
        let name = backend.name();
        self.register(name, move || {
            let b = backend.clone();
            async move { Ok(b) }
        })
    }

    /// The registered names.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The backends named by `spec`: `all`, one name, or a comma-separated list.
    pub fn select(&self, spec: &str) -> Result<Vec<BackendEntry>, String> {
        if spec.trim() == "all" {
            return Ok(self.entries.clone());
        }
        let mut out = Vec::new();
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let e = self
                .entries
                .iter()
                .find(|e| e.name == name)
                .ok_or_else(|| {
                    format!(
                        "unknown backend {name:?}; registered: {}",
                        self.names().join(", ")
                    )
                })?;
            if !out.iter().any(|x: &BackendEntry| x.name == name) {
                out.push(e.clone());
            }
        }
        if out.is_empty() {
            return Err("no backend selected".into());
        }
        Ok(out)
    }
}

/// A registry with every backend this build knows: `docker` (the local engine, default
/// configuration) and `cloudrun` (configured from the environment; the embedded emulator when
/// no GCP project is set).
pub fn default_registry() -> Registry {
    default_registry_with(None)
}

/// [`default_registry`] with the Cloud Run twin's latency profile set (a built-in name or a
/// file; `None`: the configuration's, else `none`).
pub fn default_registry_with(twin_profile: Option<String>) -> Registry {
    let mut r = Registry::new();
    r.register("docker", || async {
        use crate::backends::docker::{DockerBackend, DockerConfig};
        let config = DockerConfig::from_env().map_err(|e| FactoryError::Failed(e.to_string()))?;
        match DockerBackend::connect(config).await {
            Ok(b) => Ok(Arc::new(b) as Arc<dyn SandboxBackend>),
            Err(e)
                if matches!(
                    e.kind(),
                    crate::protocol::ErrorKind::Network | crate::protocol::ErrorKind::Timeout
                ) =>
            {
                Err(FactoryError::Unreachable(e.to_string()))
            }
            Err(e) => Err(FactoryError::Failed(e.to_string())),
        }
    });
    r.register("cloudrun", move || {
        let twin_profile = twin_profile.clone();
        async move {
            use crate::backends::cloudrun::{CloudRunBackend, CloudRunConfig};
            let mut cfg = CloudRunConfig::from_env()
                .map_err(|e| FactoryError::NotConfigured(e.to_string()))?;
            // No warm pool here: nothing would shut it down (`pipeline::open_backends_with`
            // runs one and closes it).
            cfg.pool_size = 0;
            if twin_profile.is_some() {
                cfg.latency_profile = twin_profile;
            }
            match CloudRunBackend::connect(cfg).await {
                Ok(b) => Ok(Arc::new(b) as Arc<dyn SandboxBackend>),
                Err(e)
                    if matches!(
                        e.kind(),
                        crate::protocol::ErrorKind::Network | crate::protocol::ErrorKind::Timeout
                    ) =>
                {
                    Err(FactoryError::Unreachable(e.to_string()))
                }
                Err(e) if e.kind() == crate::protocol::ErrorKind::InvalidInput => {
                    Err(FactoryError::NotConfigured(e.to_string()))
                }
                Err(e) => Err(FactoryError::Failed(e.to_string())),
            }
        }
    });
    r
}
