//! Backends by name: factories that build an `Arc<dyn SandboxBackend>` (async, fallible).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::backends::OpenError;
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

    /// The backends named by `spec`, by the one rule of [`crate::backends::open::parse_spec`]
    /// over the registered names.
    pub fn select(&self, spec: &str) -> Result<Vec<BackendEntry>, String> {
        let names = self.names();
        let picked = crate::backends::open::parse_spec(spec, &names).map_err(|e| e.to_string())?;
        Ok(picked
            .into_iter()
            .filter_map(|n| self.entries.iter().find(|e| e.name == n).cloned())
            .collect())
    }

    /// The opened backends, in spec order, each unavailable one as a factory that fails with
    /// why (the runner reports its cases as skipped).
    pub fn from_backends(backends: &crate::backends::Backends) -> Self {
        let mut r = Registry::new();
        for item in backends.in_order() {
            match item {
                Ok(b) => {
                    let backend = b.backend.clone();
                    r.register(&b.name, move || {
                        let b = backend.clone();
                        async move { Ok(b) }
                    });
                }
                Err(e) => {
                    let why = FactoryError::from(e);
                    r.register(e.backend(), move || {
                        let why = why.clone();
                        async move { Err(why) }
                    });
                }
            }
        }
        r
    }
}

impl From<&OpenError> for FactoryError {
    fn from(e: &OpenError) -> Self {
        match e {
            OpenError::NotConfigured { detail, .. } => FactoryError::NotConfigured(detail.clone()),
            OpenError::Unreachable { detail, .. } => FactoryError::Unreachable(detail.clone()),
            other => FactoryError::Failed(other.to_string()),
        }
    }
}

/// A registry with every backend this build knows, each opened by [`crate::backends::open`]
/// when the runner asks for it (`cloudrun` with no warm pool). For in-process tests: nothing
/// closes what a factory opened but the backend's own drop; the command line opens through
/// [`crate::backends::open`] and closes the result.
pub fn default_registry() -> Registry {
    let mut r = Registry::new();
    for name in crate::backends::open::KNOWN {
        r.register(name, move || async move {
            let opts = crate::backends::OpenOptions {
                pool_size: Some(0),
                ..Default::default()
            };
            match crate::backends::open::open_one(name, &opts).await {
                Ok(b) => Ok(b.backend),
                Err(crate::backends::open::SingleError::Open(e)) => Err(FactoryError::from(&e)),
                Err(e) => Err(FactoryError::Failed(e.to_string())),
            }
        });
    }
    r
}
