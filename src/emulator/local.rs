//! The whole local cloud in-process: the Cloud Storage and Cloud Run halves behind one server;
//! task containers see Cloud Storage volumes through the twin's Cloud Storage FUSE
//! (`emulator::gcsfuse`), which calls the storage half over HTTP.

use std::sync::Arc;

use bollard::Docker;

use super::auth::AuthChecker;
use super::base::AuthMode;
use super::context::EmulatorConfig;
use super::faults::{FaultCounts, FaultInjector};
use super::gcsfuse::GcsFuse;
use super::run::{self, RunConfig, RunState};
use super::server::{Emulator, EmulatorError};
use crate::gcp::auth::TokenSource;

/// Why the local cloud could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalCloudError {
    /// The Docker engine is not reachable.
    #[error("the Docker engine is not reachable: {0}")]
    Docker(crate::protocol::SandboxError),
    /// The Cloud Run half refused its configuration.
    #[error(transparent)]
    Run(#[from] run::RunEmulatorError),
    /// The server could not start.
    #[error(transparent)]
    Server(#[from] EmulatorError),
}

/// A running local Cloud Run + Cloud Storage emulator.
pub struct LocalCloud {
    emulator: Emulator,
    run: Arc<RunState>,
    docker: Docker,
}

impl LocalCloud {
    /// Starts with the default configuration (ephemeral port, temp state dir, no faults).
    pub async fn start() -> Result<Self, LocalCloudError> {
        Self::start_with(EmulatorConfig::default()).await
    }

    /// Starts with `cfg` (port, state dir, auth, faults, denied permissions...).
    pub async fn start_with(cfg: EmulatorConfig) -> Result<Self, LocalCloudError> {
        let docker = crate::backends::docker::connect()
            .await
            .map_err(LocalCloudError::Docker)?;
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let mut run_cfg = RunConfig::new(docker.clone(), &instance);
        let injector = Arc::new(FaultInjector::new(cfg.faults.clone()));
        run_cfg.faults = injector.clone();
        let run_state = RunState::new(run_cfg)?;
        let for_router = run_state.clone();
        let emulator =
            Emulator::start_shared(cfg, injector, move |_| run::routes(for_router)).await?;
        run_state.set_api_host(&emulator.addr().to_string());
        let auth: AuthChecker = emulator.context().auth.clone();
        let tokens = Arc::new(move || match auth.mode() {
            AuthMode::Off => TokenSource::Anonymous,
            AuthMode::Required => TokenSource::Static(auth.issue().0),
        });
        let mounter = GcsFuse::new(&emulator.base_url(), emulator.clock(), tokens, &instance)
            .map_err(run::RunEmulatorError::Config)?;
        run_state.set_gcs_volumes(Arc::new(mounter))?;
        // The instance id is the value of the `sandbox-harness.emulator` label on every
        // container this emulator runs (tests look for leftovers by it).
        tracing::info!(instance = %instance, url = %emulator.base_url(), "emulator started");
        Ok(LocalCloud {
            emulator,
            run: run_state,
            docker,
        })
    }

    /// `http://127.0.0.1:<port>`, for both APIs.
    pub fn base_url(&self) -> String {
        self.emulator.base_url()
    }

    /// The server handle (storage state, clock, context).
    pub fn emulator(&self) -> &Emulator {
        &self.emulator
    }

    /// The Cloud Run half.
    pub fn run_state(&self) -> &Arc<RunState> {
        &self.run
    }

    /// What the emulator injected so far (per fault kind and API), and the seed.
    pub fn fault_counts(&self) -> FaultCounts {
        self.emulator.context().injector.counts()
    }

    /// The Docker client the executions run on.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Cancels every execution, removes their containers and stops the server.
    pub async fn shutdown(&self) {
        self.run.shutdown().await;
    }
}

impl Drop for LocalCloud {
    fn drop(&mut self) {
        // Best effort when nobody called shutdown(): remove the containers in the background.
        let run = self.run.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { run.shutdown().await });
        }
    }
}
