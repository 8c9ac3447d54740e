//! The one place the Google clients are built from a [`CloudRunConfig`]: the backend, `gc`
//! and `preflight` all get their Cloud Run, Cloud Storage, Resource Manager and Service Usage
//! clients here, with the same endpoints, credentials and origin.

use crate::backends::cloudrun::config::{CloudRunConfig, Target};
use crate::gcp::auth::TokenSource;
use crate::gcp::iam::{
    DEFAULT_RESOURCE_MANAGER_URL, DEFAULT_SERVICE_USAGE_URL, ResourceManagerClient,
    ServiceUsageClient,
};
use crate::gcp::retry::RetryPolicy;
use crate::gcp::run::{DEFAULT_RUN_BASE_URL, RunClient};
use crate::gcp::storage::{DEFAULT_ENDPOINT, StorageClient};

/// Project id used when an emulator is the target and none is configured.
pub const LOCAL_PROJECT: &str = "local-project";

/// Why the clients could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientsError {
    /// The configuration is unusable (mixed endpoints, no project, bad URL...).
    #[error("{0}")]
    Config(String),
    /// No credentials could be found or loaded.
    #[error("{0}")]
    Auth(String),
}

/// The Google clients of one configuration.
#[derive(Debug, Clone)]
pub struct GoogleClients {
    /// Cloud Run Admin API v2.
    pub run: RunClient,
    /// Cloud Storage JSON API.
    pub storage: StorageClient,
    /// Cloud Resource Manager (project testIamPermissions).
    pub resource_manager: ResourceManagerClient,
    /// Service Usage.
    pub service_usage: ServiceUsageClient,
    /// Project id (the configured one, or [`LOCAL_PROJECT`] on an emulator).
    pub project: String,
    /// Where the clients go, derived from the endpoints.
    pub target: Target,
    /// The credentials every client sends.
    pub tokens: TokenSource,
}

impl GoogleClients {
    /// Clients for the endpoints of `cfg`: a standalone emulator (loopback endpoints; no
    /// credentials needed) or Google Cloud (credentials from `cfg.token` or Google's chain).
    /// The embedded twin has no endpoints yet: use [`GoogleClients::for_local`] with its URL.
    pub async fn for_config(cfg: &CloudRunConfig) -> Result<Self, ClientsError> {
        let target = cfg
            .target()
            .map_err(|e| ClientsError::Config(e.to_string()))?;
        let project = match (&cfg.project, &target) {
            (Some(p), _) => p.clone(),
            (None, Target::Emulator { .. }) => LOCAL_PROJECT.to_string(),
            (None, _) => {
                return Err(ClientsError::Config(
                    "no GCP project: set --project, CLOUDRUN_PROJECT or GOOGLE_CLOUD_PROJECT"
                        .into(),
                ));
            }
        };
        let tokens = match (&cfg.token, &target) {
            (Some(t), _) => TokenSource::Static(t.clone()),
            (None, Target::Emulator { .. }) => TokenSource::Anonymous,
            (None, _) => match &cfg.credentials_file {
                Some(f) => {
                    TokenSource::from_file(std::path::Path::new(f), cfg.quota_project.as_deref())
                }
                None => TokenSource::google(cfg.quota_project.as_deref()).await,
            }
            .map_err(|e| ClientsError::Auth(e.to_string()))?,
        };
        let emulator_run = match &target {
            Target::Emulator { .. } => cfg.run_endpoint.clone(),
            _ => None,
        };
        let run_url = cfg.run_endpoint.as_deref().unwrap_or(DEFAULT_RUN_BASE_URL);
        let storage_url = cfg.storage_endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let crm_url = cfg
            .resource_manager_endpoint
            .clone()
            .or_else(|| emulator_run.clone())
            .unwrap_or_else(|| DEFAULT_RESOURCE_MANAGER_URL.into());
        let su_url = cfg
            .service_usage_endpoint
            .clone()
            .or(emulator_run)
            .unwrap_or_else(|| DEFAULT_SERVICE_USAGE_URL.into());
        Self::build(
            run_url,
            storage_url,
            &crm_url,
            &su_url,
            project,
            target,
            tokens,
        )
    }

    /// Clients for the embedded twin listening at `base_url` (every API on one port, no
    /// credentials).
    pub fn for_local(cfg: &CloudRunConfig, base_url: &str) -> Result<Self, ClientsError> {
        let project = cfg
            .project
            .clone()
            .unwrap_or_else(|| LOCAL_PROJECT.to_string());
        Self::build(
            base_url,
            base_url,
            base_url,
            base_url,
            project,
            Target::Embedded,
            TokenSource::Anonymous,
        )
    }

    fn build(
        run: &str,
        storage: &str,
        crm: &str,
        su: &str,
        project: String,
        target: Target,
        tokens: TokenSource,
    ) -> Result<Self, ClientsError> {
        let cfg_err = |e: &dyn std::fmt::Display| ClientsError::Config(e.to_string());
        Ok(GoogleClients {
            run: RunClient::new(run)
                .map_err(|e| cfg_err(&e))?
                .with_tokens(tokens.clone()),
            storage: StorageClient::new(storage, tokens.clone()).map_err(|e| cfg_err(&e))?,
            resource_manager: ResourceManagerClient::new(crm, tokens.clone())
                .map_err(|e| cfg_err(&e))?,
            service_usage: ServiceUsageClient::new(su, tokens.clone()).map_err(|e| cfg_err(&e))?,
            project,
            target,
            tokens,
        })
    }

    /// Uses `retry` for every client.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.storage = self.storage.with_retry(retry);
        self.run = self.run.with_retry(retry);
        self.resource_manager = self.resource_manager.with_retry(retry);
        self.service_usage = self.service_usage.with_retry(retry);
        self
    }

    /// `projects/<project>/locations/<region>`.
    pub fn parent(&self, region: &str) -> String {
        format!("projects/{}/locations/{region}", self.project)
    }
}
