//! Where a backend's figures come from ([`BackendOrigin`]): every backend declares it, and every
//! report carries it, so figures from the emulator or the twin are never read as Google Cloud's.

use serde::{Deserialize, Serialize};

use crate::suites::faults::FaultConfig;

/// Where a backend's figures come from; Cloud Run figures from an emulator are always labelled
/// so. The Cloud Run origins are derived from the configured endpoints
/// (`CloudRunConfig::target`), never from the project setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendOrigin {
    /// A Docker engine on this host.
    LocalDocker,
    /// A standalone `sandbox-harness emulator` reached on loopback endpoints.
    CloudRunEmulator {
        /// The emulator's endpoint (absent in reports written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// The injected latencies and faults (none when quiet).
        latency_profile: Option<FaultConfig>,
    },
    /// The Cloud Run twin embedded in the harness process.
    CloudRunTwin {
        /// Name of the latency profile it applies ("none": no injected latency).
        profile: String,
        /// The injected latencies and faults, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_profile: Option<FaultConfig>,
    },
    /// Real Google Cloud.
    CloudRunGcp {
        /// Project id.
        project: Option<String>,
        /// Region.
        region: Option<String>,
    },
    /// Anything else, described.
    Other {
        /// What it is.
        description: String,
    },
    /// The caller did not say; never presented as Google Cloud figures.
    #[default]
    Undeclared,
}

/// The flat latencies injected on top of the profile, in words; `None` when there are none.
fn injected(latency_profile: &Option<FaultConfig>) -> Option<String> {
    let p = latency_profile.as_ref()?;
    let mut parts = Vec::new();
    if p.call_latency.max_ms > 0 {
        parts.push(format!(
            "API calls {}-{} ms",
            p.call_latency.min_ms, p.call_latency.max_ms
        ));
    }
    if p.execution_start_latency.max_ms > 0 {
        parts.push(format!(
            "execution start {}-{} ms",
            p.execution_start_latency.min_ms, p.execution_start_latency.max_ms
        ));
    }
    (!parts.is_empty()).then(|| format!("added latency: {}", parts.join(", ")))
}

impl BackendOrigin {
    /// One plain sentence on where the figures come from.
    pub fn statement(&self) -> String {
        match self {
            BackendOrigin::LocalDocker => "Docker engine on this host".into(),
            BackendOrigin::CloudRunEmulator {
                endpoint,
                latency_profile,
            } => format!(
                "EMULATOR: standalone Cloud Run and Cloud Storage emulator at {} ({}); these are \
                 NOT Google Cloud figures",
                endpoint.as_deref().unwrap_or("an unrecorded endpoint"),
                match (
                    latency_profile.as_ref().map(|f| f.profile_name()),
                    injected(latency_profile)
                ) {
                    (Some(name), Some(l)) => format!("latency profile {name}, {l}"),
                    (Some(name), None) => format!("latency profile {name}"),
                    (None, Some(l)) => l,
                    (None, None) => "latency profile not recorded".into(),
                }
            ),
            BackendOrigin::CloudRunTwin {
                profile,
                latency_profile,
            } => format!(
                "SIMULATED: Cloud Run twin, profile {profile}{}; these are NOT Google Cloud \
                 figures",
                injected(latency_profile)
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            ),
            BackendOrigin::CloudRunGcp { project, region } => format!(
                "Google Cloud (project {}, region {})",
                project.as_deref().unwrap_or("?"),
                region.as_deref().unwrap_or("?")
            ),
            BackendOrigin::Other { description } => description.clone(),
            BackendOrigin::Undeclared => {
                "origin not declared by the caller; not to be read as Google Cloud figures".into()
            }
        }
    }

    /// True only for real Google Cloud.
    pub fn is_real_gcp(&self) -> bool {
        matches!(self, BackendOrigin::CloudRunGcp { .. })
    }

    /// True for the emulator and the twin: figures that imitate Cloud Run.
    pub fn is_emulated(&self) -> bool {
        matches!(
            self,
            BackendOrigin::CloudRunEmulator { .. } | BackendOrigin::CloudRunTwin { .. }
        )
    }
}
