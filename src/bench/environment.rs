//! Where a report was measured: host, Docker engine, backend origins, harness commit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BackendOrigin;

/// The environment of a bench run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Environment {
    /// Host name.
    pub host_name: Option<String>,
    /// CPUs available to the harness.
    pub cpu_count: usize,
    /// Operating system and architecture.
    pub os: String,
    /// Docker engine version, when an engine answered.
    pub docker_engine_version: Option<String>,
    /// Docker API version, when an engine answered.
    pub docker_api_version: Option<String>,
    /// Each backend label with its origin.
    pub backends: Vec<BackendEnvironment>,
    /// `git rev-parse HEAD` of the working directory, when available.
    pub git_commit: Option<String>,
    /// The harness version.
    pub harness_version: String,
    /// True when any backend's figures come from an emulator or the twin.
    pub uses_emulator: bool,
}

/// One backend's origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendEnvironment {
    /// Label.
    pub name: String,
    /// Origin.
    pub origin: BackendOrigin,
    /// Origin in one sentence.
    pub statement: String,
}

impl Environment {
    /// Collects the environment (the Docker engine is asked with a short deadline).
    pub async fn collect(origins: &[(String, BackendOrigin)]) -> Environment {
        let (docker_engine_version, docker_api_version) = docker_version().await;
        Environment {
            host_name: host_name(),
            cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            docker_engine_version,
            docker_api_version,
            uses_emulator: origins.iter().any(|(_, o)| o.is_emulated()),
            backends: origins
                .iter()
                .map(|(name, origin)| BackendEnvironment {
                    name: name.clone(),
                    statement: origin.statement(),
                    origin: origin.clone(),
                })
                .collect(),
            git_commit: git_commit(),
            harness_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

async fn docker_version() -> (Option<String>, Option<String>) {
    let Ok(docker) = bollard::Docker::connect_with_local_defaults() else {
        return (None, None);
    };
    match tokio::time::timeout(Duration::from_secs(3), docker.version()).await {
        Ok(Ok(v)) => (v.version, v.api_version),
        _ => (None, None),
    }
}
