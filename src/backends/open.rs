//! `--backend` specs and opening what they name: the one place that parses a backend list and
//! the one owner of what opening started (the embedded emulator, the warm pool), which
//! [`Backends::close`] stops.

use std::sync::Arc;

use crate::backends::cloudrun::{CloudRunBackend, CloudRunConfig};
use crate::backends::docker::{DockerBackend, DockerConfig};
use crate::protocol::{BackendOrigin, ErrorKind, SandboxBackend, SandboxError};

/// The backends this build knows, in the order `all` opens them.
pub const KNOWN: [&str; 2] = ["docker", "cloudrun"];

/// Why a backend spec was refused or a backend could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The spec names something that is not a backend, or nothing at all.
    #[error("unknown backend {name:?}: use {}, all, or a comma-separated list", known.join(", "))]
    UnknownBackend {
        /// The word that is not a backend.
        name: String,
        /// The backends there are.
        known: Vec<String>,
    },
    /// The backend needs configuration that is missing (project, bucket, credentials...).
    #[error("cannot open the {backend} backend: not configured: {detail}")]
    NotConfigured {
        /// Which.
        backend: String,
        /// Why.
        detail: String,
    },
    /// The engine or service cannot be reached.
    #[error("cannot open the {backend} backend: unreachable: {detail}")]
    Unreachable {
        /// Which.
        backend: String,
        /// Why.
        detail: String,
    },
    /// Anything else.
    #[error("cannot open the {backend} backend: {detail}")]
    Failed {
        /// Which.
        backend: String,
        /// Why.
        detail: String,
    },
}

impl OpenError {
    /// True when the user's spec is at fault (a usage error), not the backend.
    pub fn is_usage(&self) -> bool {
        matches!(self, OpenError::UnknownBackend { .. })
    }

    /// The backend (or the unknown word) this error is about.
    pub fn backend(&self) -> &str {
        match self {
            OpenError::UnknownBackend { name, .. } => name,
            OpenError::NotConfigured { backend, .. }
            | OpenError::Unreachable { backend, .. }
            | OpenError::Failed { backend, .. } => backend,
        }
    }

    fn from_sandbox(backend: &str, e: &SandboxError) -> Self {
        let backend = backend.to_string();
        let detail = e.to_string();
        match e.kind() {
            ErrorKind::Network | ErrorKind::Timeout => OpenError::Unreachable { backend, detail },
            ErrorKind::InvalidInput => OpenError::NotConfigured { backend, detail },
            _ => OpenError::Failed { backend, detail },
        }
    }
}

/// Splits a backend spec against the names `known`: one name, `all` (every known name, in
/// order), or a comma-separated list of those. `all` may appear in a list (`docker,all` is
/// every backend); each backend is named once, in the order first named.
pub fn parse_spec<'a>(spec: &str, known: &[&'a str]) -> Result<Vec<&'a str>, OpenError> {
    let unknown = |name: &str| OpenError::UnknownBackend {
        name: name.to_string(),
        known: known.iter().map(|k| k.to_string()).collect(),
    };
    let mut out: Vec<&'a str> = Vec::new();
    for word in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let names: Vec<&'a str> = if word == "all" {
            known.to_vec()
        } else {
            vec![
                *known
                    .iter()
                    .find(|k| **k == word)
                    .ok_or_else(|| unknown(word))?,
            ]
        };
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    if out.is_empty() {
        return Err(unknown(spec));
    }
    Ok(out)
}

/// How the Cloud Run backend is opened besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The twin's latency profile asked for on the command line (wins over the configuration).
    pub profile: Option<String>,
    /// The profile when neither the command line nor the configuration names one (the bench
    /// measures with `gcp-published`, conformance checks behaviour with `none`).
    pub default_profile: Option<String>,
    /// Records every Admin API and Storage call (`bench --record-profile`).
    pub recorder: Option<crate::gcp::observe::CallRecorder>,
    /// Cloud Run warm pool size (`--pool-size`); `None` keeps the configured one.
    pub pool_size: Option<usize>,
}

/// An opened backend with what the reports need to know about it.
pub struct OpenBackend {
    /// "docker" or "cloudrun".
    pub name: String,
    /// The backend.
    pub backend: Arc<dyn SandboxBackend>,
    /// Where its figures come from.
    pub origin: BackendOrigin,
    /// The Docker backend itself (the bench measures its raw engine baseline).
    pub docker: Option<Arc<DockerBackend>>,
    /// The embedded emulator a Cloud Run backend runs on.
    pub local: Option<Arc<crate::emulator::LocalCloud>>,
    /// The Cloud Run backend itself (its warm pool is shut down on close; the bench probes
    /// its phases).
    pub cloudrun: Option<Arc<CloudRunBackend>>,
}

/// What [`open`] opened, and what it could not; [`Backends::close`] stops what opening started.
#[derive(Default)]
pub struct Backends {
    opened: Vec<OpenBackend>,
    unavailable: Vec<OpenError>,
    order: Vec<&'static str>,
}

impl Backends {
    /// The backends that opened, in spec order.
    pub fn opened(&self) -> &[OpenBackend] {
        &self.opened
    }

    /// The backends that could not be opened, each with why.
    pub fn unavailable(&self) -> &[OpenError] {
        &self.unavailable
    }

    /// Each named backend in spec order: opened, or why not.
    pub fn in_order(&self) -> impl Iterator<Item = Result<&OpenBackend, &OpenError>> {
        self.order
            .iter()
            .filter_map(|n| match self.opened.iter().find(|b| b.name == *n) {
                Some(b) => Some(Ok(b)),
                None => self.unavailable.iter().find(|e| e.backend() == *n).map(Err),
            })
    }

    /// The one backend the spec named, opened; otherwise why not, after closing what did open.
    async fn into_single(mut self) -> Result<OpenBackend, SingleError> {
        if self.order.len() != 1 {
            let named = self.order.join(", ");
            self.close().await;
            return Err(SingleError::NotOne(named));
        }
        match self.opened.pop() {
            Some(b) => Ok(b),
            None => Err(SingleError::Open(self.unavailable.remove(0))),
        }
    }

    /// Every named backend opened, or the first failure (after closing the ones that did).
    pub async fn require_all(self) -> Result<Self, OpenError> {
        match self.unavailable.first().cloned() {
            None => Ok(self),
            Some(e) => {
                self.close().await;
                Err(e)
            }
        }
    }

    /// Stops what the backends started for this run: the warm pool's executions, and the
    /// embedded emulator with every container it ran.
    pub async fn close(&self) {
        for b in &self.opened {
            b.close().await;
        }
    }
}

impl OpenBackend {
    /// Stops what opening this backend started: the warm pool's executions, and the embedded
    /// emulator with every container it ran.
    pub async fn close(&self) {
        if let Some(c) = &self.cloudrun {
            c.shutdown().await;
        }
        if let Some(local) = &self.local {
            local.shutdown().await;
        }
    }
}

/// Why [`Backends::into_single`] has no one backend to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SingleError {
    /// The spec named none or several backends (a usage error).
    #[error("this command takes exactly one backend, not {0}")]
    NotOne(String),
    /// The one backend did not open.
    #[error(transparent)]
    Open(OpenError),
}

impl SingleError {
    /// True when the user's spec is at fault (a usage error), not the backend.
    pub fn is_usage(&self) -> bool {
        match self {
            SingleError::NotOne(_) => true,
            SingleError::Open(e) => e.is_usage(),
        }
    }
}

/// Opens the backends `spec` names (Cloud Run from the environment; the embedded emulator when
/// no project or endpoint is configured). A bad spec is an error; a backend that does not open
/// is listed in [`Backends::unavailable`]. The caller closes the result on every path.
pub async fn open(spec: &str, opts: &OpenOptions) -> Result<Backends, OpenError> {
    let mut out = Backends {
        order: parse_spec(spec, &KNOWN)?,
        ..Backends::default()
    };
    for name in out.order.clone() {
        let opened = match name {
            "docker" => open_docker().await,
            _ => open_cloudrun(opts).await,
        };
        match opened {
            Ok(b) => out.opened.push(b),
            Err(e) => out.unavailable.push(e),
        }
    }
    Ok(out)
}

/// Opens the one backend `spec` names (`shell` takes exactly one); a spec naming several is
/// refused before anything opens. The caller closes the result on every path.
pub async fn open_one(spec: &str, opts: &OpenOptions) -> Result<OpenBackend, SingleError> {
    let names = parse_spec(spec, &KNOWN).map_err(SingleError::Open)?;
    if names.len() != 1 {
        return Err(SingleError::NotOne(names.join(", ")));
    }
    open(spec, opts)
        .await
        .map_err(SingleError::Open)?
        .into_single()
        .await
}

async fn open_docker() -> Result<OpenBackend, OpenError> {
    let name = "docker";
    let config = DockerConfig::from_env().map_err(|e| OpenError::NotConfigured {
        backend: name.into(),
        detail: e.to_string(),
    })?;
    let b = DockerBackend::connect(config)
        .await
        .map_err(|e| OpenError::from_sandbox(name, &e))?;
    let b = Arc::new(b);
    Ok(OpenBackend {
        name: name.into(),
        backend: b.clone(),
        origin: BackendOrigin::LocalDocker,
        docker: Some(b),
        local: None,
        cloudrun: None,
    })
}

async fn open_cloudrun(opts: &OpenOptions) -> Result<OpenBackend, OpenError> {
    let name = "cloudrun";
    let not_configured = |e: &dyn std::fmt::Display| OpenError::NotConfigured {
        backend: name.into(),
        detail: e.to_string(),
    };
    let mut cfg = CloudRunConfig::from_env().map_err(|e| not_configured(&e))?;
    if let Some(p) = &opts.profile {
        cfg.latency_profile = Some(p.clone());
    } else if cfg.latency_profile.is_none() {
        cfg.latency_profile = opts.default_profile.clone();
    }
    if let Some(n) = opts.pool_size {
        cfg.pool_size = n;
        cfg.validate().map_err(|e| not_configured(&e))?;
    }
    // The recorder goes in before the warm pool starts, so its calls count too.
    let b = CloudRunBackend::connect_recorded(cfg, opts.recorder.clone())
        .await
        .map_err(|e| OpenError::from_sandbox(name, &e))?;
    let b = Arc::new(b);
    Ok(OpenBackend {
        name: name.into(),
        local: b.local_cloud().cloned(),
        origin: b.origin(),
        backend: b.clone(),
        docker: None,
        cloudrun: Some(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_backend_lists() {
        let p = |s: &str| parse_spec(s, &KNOWN);
        assert_eq!(p("all").unwrap(), ["docker", "cloudrun"]);
        assert_eq!(p("cloudrun").unwrap(), ["cloudrun"]);
        assert_eq!(p("cloudrun, docker").unwrap(), ["cloudrun", "docker"]);
        // `all` inside a list is every backend, each once, in the order first named.
        assert_eq!(p("docker,all").unwrap(), ["docker", "cloudrun"]);
        assert_eq!(p("cloudrun,all").unwrap(), ["cloudrun", "docker"]);
        assert_eq!(p("docker,docker").unwrap(), ["docker"]);
        for bad in ["k8s", "docker,k8s", " , ", "", "ALL"] {
            let e = p(bad).unwrap_err();
            assert!(e.is_usage(), "{bad:?}: {e}");
            assert!(e.to_string().contains("docker, cloudrun, all"), "{e}");
        }
        // Other registries (test doubles) use the same rule over their own names.
        assert_eq!(
            parse_spec("all,broken", &["ok", "broken"]).unwrap(),
            ["ok", "broken"]
        );
    }
}
