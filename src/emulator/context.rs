//! What the emulator is started with ([`EmulatorConfig`]) and what each API half's handlers
//! get ([`EmulatorContext`]): state dir, configuration, auth, clock, storage and the fault layer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use serde::de::DeserializeOwned;

use super::auth::AuthChecker;
use super::base::{ApiError, AuthMode, Clock, Dialect, parse_json, read_limited};
use super::faults::FaultInjector;
use super::storage::store::{MutationLimit, StorageState};
use crate::suites::faults::FaultConfig;

/// How the emulator is started.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where buckets, objects and upload sessions live; a temp dir (removed on drop) when `None`.
    pub state_dir: Option<PathBuf>,
    /// TCP port on 127.0.0.1; 0 picks an ephemeral one.
    pub port: u16,
    /// Token requirement for API calls.
    pub auth: AuthMode,
    /// Latency and error injection.
    pub faults: FaultConfig,
    /// IAM permissions that testIamPermissions (bucket and project) reports as not granted.
    pub denied_permissions: BTreeSet<String>,
    /// Members (e.g. "serviceAccount:runner@p.iam.gserviceaccount.com") the bucket IAM
    /// policy grants `roles/storage.objectUser`.
    pub bucket_object_users: BTreeSet<String>,
    /// Service names (e.g. "run.googleapis.com") Service Usage reports as DISABLED.
    pub disabled_services: BTreeSet<String>,
    /// Largest accepted JSON request body (and multipart metadata part), bytes; larger is 413.
    pub max_json_body: usize,
    /// Lifecycle rules are swept at most this often per bucket (and whenever the clock is advanced).
    pub lifecycle_sweep_interval: Duration,
    /// Whether `/ready` pings the Docker engine (off: reported as "skipped").
    pub check_docker: bool,
    /// Per-object mutation rate limit (Cloud Storage's one write per second per object name);
    /// `None` turns it off.
    pub object_mutation_limit: Option<MutationLimit>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            state_dir: None,
            port: 0,
            auth: AuthMode::Off,
            faults: FaultConfig::default(),
            denied_permissions: BTreeSet::new(),
            bucket_object_users: BTreeSet::new(),
            disabled_services: BTreeSet::new(),
            max_json_body: 1024 * 1024,
            lifecycle_sweep_interval: Duration::from_secs(60),
            check_docker: true,
            object_mutation_limit: Some(MutationLimit::default()),
        }
    }
}

/// What each API half gets: state dir, faults, auth, clock, storage, config.
#[derive(Clone)]
pub struct EmulatorContext {
    pub(super) state_dir: PathBuf,
    /// The configuration the emulator was started with.
    pub config: Arc<EmulatorConfig>,
    /// Token issuing and checking.
    pub auth: AuthChecker,
    /// The shared clock (lifecycle rules, token expiry; the Run half may use it too).
    pub clock: Clock,
    /// The Cloud Storage state.
    pub storage: Arc<StorageState>,
    /// The fault layer both API halves and the runner share (dice and counts).
    pub injector: Arc<FaultInjector>,
}

impl EmulatorContext {
    /// The emulator's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The fault configuration.
    pub fn faults(&self) -> &FaultConfig {
        self.injector.config()
    }

    /// Applies the configured latency, then the 429/503 dice, for `endpoint`
    /// (e.g. "storage.objects.insert", "run.jobs.run"); `Err` is the answer to send.
    pub async fn inject(&self, endpoint: &str) -> Result<(), ApiError> {
        self.injector.inject(endpoint, Dialect::Storage).await
    }

    /// Waits as long as moving `bytes` through the Storage API takes at the latency profile's
    /// transfer rate (nothing without a profile rate).
    pub async fn transfer(&self, bytes: u64) {
        let d = self.injector.transfer_delay(bytes);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// Reads a JSON request body with the configured size limit (empty body = `{}`):
    /// 413 when too large, 400 when malformed.
    pub async fn json_body<T: DeserializeOwned>(&self, body: Body) -> Result<T, ApiError> {
        let bytes = read_limited(body, self.config.max_json_body).await?;
        parse_json(&bytes)
    }
}
