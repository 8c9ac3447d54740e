//! `sandbox-harness preflight`: the Phase 0 checklist on the configured target.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use sandbox_harness::backends::cloudrun::CloudRunConfig;
use sandbox_harness::emulator::{EmulatorConfig, LocalCloud};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient};
use sandbox_harness::preflight::{
    self, PreflightClients, PreflightError, PreflightOptions, PreflightReport,
};

/// Flags of `sandbox-harness preflight`.
#[derive(Debug, Clone, Args)]
pub struct PreflightArgs {
    /// Repair what can be repaired: create a missing bucket (the configured or the plan's
    /// location and class, with the lifecycle rule), set the sessions/ lifecycle rule.
    #[arg(long)]
    pub fix: bool,
    /// Also write the report as DIR/preflight.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Cloud Run backend config (TOML); default $CLOUDRUN_CONFIG, then the environment.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// GCP project (none: the embedded emulator).
    #[arg(long)]
    pub project: Option<String>,
    /// Cloud Run region.
    #[arg(long)]
    pub region: Option<String>,
    /// State bucket.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Location the bucket must be in (e.g. US-CENTRAL1).
    #[arg(long)]
    pub bucket_location: Option<String>,
    /// Storage class the bucket must have (e.g. STANDARD).
    #[arg(long)]
    pub bucket_storage_class: Option<String>,
    /// Executor image of the test job.
    #[arg(long)]
    pub executor_image: Option<String>,
    /// Command of the test job instead of the executor's worker (repeat for each argument).
    #[arg(long = "test-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub test_command: Vec<String>,
    /// Do not run the test job.
    #[arg(long)]
    pub skip_job: bool,
    /// Longest wait for the test job's execution.
    #[arg(long, value_name = super::duration::VALUE_NAME, default_value = "5m",
          value_parser = super::duration::parse)]
    pub job_timeout: Duration,
    /// Embedded emulator only: report this permission as not granted (repeatable).
    #[arg(long, value_name = "PERMISSION")]
    pub deny_permission: Vec<String>,
    /// Embedded emulator only: report this service as disabled (repeatable).
    #[arg(long, value_name = "SERVICE")]
    pub disable_service: Vec<String>,
    /// Embedded emulator only: do not create the bucket first.
    #[arg(long)]
    pub no_bucket: bool,
}

impl PreflightArgs {
    /// The backend configuration these flags select.
    pub fn config(&self) -> Result<CloudRunConfig, PreflightError> {
        let mut cfg = match &self.config {
            Some(p) => {
                let mut c = CloudRunConfig::from_file(p)
                    .map_err(|e| PreflightError::Config(e.to_string()))?;
                c.apply_env(|k| std::env::var(k).ok())
                    .map_err(|e| PreflightError::Config(e.to_string()))?;
                c
            }
            None => {
                CloudRunConfig::from_env().map_err(|e| PreflightError::Config(e.to_string()))?
            }
        };
        let set = |dst: &mut Option<String>, v: &Option<String>| {
            if let Some(v) = v {
                *dst = Some(v.clone());
            }
        };
        set(&mut cfg.project, &self.project);
        set(&mut cfg.bucket_location, &self.bucket_location);
        set(&mut cfg.bucket_storage_class, &self.bucket_storage_class);
        set(&mut cfg.executor_image, &self.executor_image);
        if let Some(r) = &self.region {
            cfg.region = r.clone();
        }
        if let Some(b) = &self.bucket {
            cfg.bucket = b.clone();
        }
        cfg.validate()
            .map_err(|e| PreflightError::Config(e.to_string()))?;
        Ok(cfg)
    }

    /// The run options these flags select.
    pub fn options(&self) -> PreflightOptions {
        PreflightOptions {
            fix: self.fix,
            run_test_job: !self.skip_job,
            test_command: (!self.test_command.is_empty()).then(|| self.test_command.clone()),
            job_timeout: self.job_timeout.max(Duration::from_secs(1)),
        }
    }

    fn emulator_only_flags(&self) -> bool {
        !self.deny_permission.is_empty() || !self.disable_service.is_empty() || self.no_bucket
    }
}

/// Runs the preflight on the configured target: the embedded emulator when no project or
/// endpoint is configured, else the configured endpoints.
pub async fn preflight_report(args: &PreflightArgs) -> Result<PreflightReport, PreflightError> {
    let cfg = args.config()?;
    let opts = args.options();
    if !cfg.uses_embedded_emulator() {
        if args.emulator_only_flags() {
            return Err(PreflightError::Config(
                "--deny-permission, --disable-service and --no-bucket apply only to the embedded \
                 emulator (no project or endpoints configured)"
                    .into(),
            ));
        }
        let clients = PreflightClients::for_config(&cfg).await?;
        return Ok(preflight::run_checklist(&cfg, &clients, &opts).await);
    }
    let emu_cfg = EmulatorConfig {
        denied_permissions: args.deny_permission.iter().cloned().collect(),
        disabled_services: args.disable_service.iter().cloned().collect(),
        ..EmulatorConfig::default()
    };
    let local = LocalCloud::start_with(emu_cfg)
        .await
        .map_err(|e| PreflightError::Emulator(e.to_string()))?;
    let result = async {
        if !args.no_bucket {
            provision_bucket(&local.base_url(), &cfg).await?;
        }
        let clients = PreflightClients::for_local(&cfg, &local).await?;
        Ok(preflight::run_checklist(&cfg, &clients, &opts).await)
    }
    .await;
    local.shutdown().await;
    result
}

/// Creates the configured bucket (location and class as configured, no lifecycle) in an
/// emulator, so that a demonstration starts from a realistic state.
pub async fn provision_bucket(base_url: &str, cfg: &CloudRunConfig) -> Result<(), PreflightError> {
    let storage = StorageClient::new(base_url, TokenSource::Anonymous)
        .map_err(|e| PreflightError::Emulator(e.to_string()))?;
    let spec = BucketSpec {
        name: cfg.bucket.clone(),
        location: cfg.bucket_location.clone(),
        storage_class: cfg.bucket_storage_class.clone(),
        lifecycle: None,
    };
    storage
        .insert_bucket(
            cfg.project.as_deref().unwrap_or(preflight::LOCAL_PROJECT),
            &spec,
        )
        .await
        .map(|_| ())
        .map_err(|e| PreflightError::Emulator(format!("creating the bucket failed: {e}")))
}

/// Writes the report as pretty JSON, through a temp file renamed into place.
pub fn write_json(report: &PreflightReport, path: &Path) -> Result<(), PreflightError> {
    let err = |detail: String| PreflightError::Write {
        path: path.display().to_string(),
        detail,
    };
    let mut json = serde_json::to_vec_pretty(report).map_err(|e| err(e.to_string()))?;
    json.push(b'\n');
    sandbox_harness::report::write_atomic(path, &json).map_err(|e| err(e.to_string()))
}

/// `sandbox-harness preflight`: prints the checklist, writes the JSON, returns the exit code
/// (0 all satisfied, 1 some item failed or the preflight could not run, 2 flags or
/// configuration that do not fit together).
pub async fn run(args: &PreflightArgs) -> ExitCode {
    let report = match preflight_report(args).await {
        Ok(r) => r,
        Err(e @ PreflightError::Config(_)) => return super::usage_error(&e),
        Err(e) => return super::failure(&e),
    };
    print!("{}", report.render());
    if let Some(dir) = &args.out {
        let path = dir.join("preflight.json");
        if let Err(e) = write_json(&report, &path) {
            return super::failure(&e);
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::from(report.exit_code())
}
