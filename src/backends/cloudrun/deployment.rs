//! The Cloud Run deployment a backend configuration runs, as the bench records it and the cost
//! projection prices it.

use std::time::Duration;

use sandbox_executor::worker::PollSchedule;
use serde::{Deserialize, Serialize};

use super::config::{CloudRunConfig, ConfigError};

/// The Cloud Run deployment the projection prices: the backend's own configuration (the
/// values its worker and client run with), not assumptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// vCPUs of a worker execution.
    pub vcpu: f64,
    /// Memory of a worker execution, GiB.
    pub memory_gib: f64,
    /// Shortest polling interval (worker inbox and client answer), ms.
    pub poll_min_ms: u64,
    /// Longest polling interval, ms.
    pub poll_max_ms: u64,
    /// How long polling stays at the shortest interval after activity, ms.
    #[serde(default)]
    pub poll_hold_ms: u64,
    /// The Cloud Storage method of one worker poll (`sandbox_executor::worker::POLL_METHOD`).
    pub worker_poll_method: String,
    /// The method of one worker inbox sweep (`sandbox_executor::worker::SWEEP_METHOD`).
    #[serde(default = "default_sweep_method")]
    pub worker_sweep_method: String,
    /// How often the worker sweeps its inbox, ms (`sandbox_executor::worker::SWEEP_EVERY`).
    #[serde(default = "default_sweep_ms")]
    pub worker_sweep_every_ms: u64,
    /// Heartbeat interval, s.
    pub heartbeat_secs: u64,
    /// A worker stops after this long without a command, s.
    pub worker_idle_secs: u64,
    /// Pre-started executions kept waiting (0: no warm pool).
    pub pool_size: usize,
}

impl Deployment {
    /// The deployment a backend configuration runs.
    pub fn from_config(cfg: &CloudRunConfig) -> Result<Deployment, ConfigError> {
        Ok(Deployment {
            vcpu: cfg.vcpu()?,
            memory_gib: cfg.memory_gib()?,
            poll_min_ms: cfg.poll_min_ms,
            poll_max_ms: cfg.poll_max_ms,
            poll_hold_ms: cfg.poll_hold_ms,
            worker_poll_method: sandbox_executor::worker::POLL_METHOD.to_string(),
            worker_sweep_method: default_sweep_method(),
            worker_sweep_every_ms: default_sweep_ms(),
            heartbeat_secs: cfg.heartbeat_secs,
            worker_idle_secs: cfg.worker_idle_secs,
            pool_size: cfg.pool_size,
        })
    }

    /// The default configuration's deployment.
    pub fn builtin() -> Deployment {
        Deployment::from_config(&CloudRunConfig::default())
            .expect("the default Cloud Run configuration is valid")
    }

    /// The polling schedule the worker and the client follow.
    pub fn poll(&self) -> PollSchedule {
        PollSchedule {
            min: Duration::from_millis(self.poll_min_ms),
            max: Duration::from_millis(self.poll_max_ms),
            hold: Duration::from_millis(self.poll_hold_ms),
        }
    }
}

/// The worker's sweep method (also for reports written before sweeps were priced).
fn default_sweep_method() -> String {
    sandbox_executor::worker::SWEEP_METHOD.to_string()
}

/// The worker's sweep interval, ms.
fn default_sweep_ms() -> u64 {
    sandbox_executor::worker::SWEEP_EVERY.as_millis() as u64
}
