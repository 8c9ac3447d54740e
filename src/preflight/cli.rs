//! The `preflight` and `emulator` subcommands: their flags (clap) and what they do, so that
//! `main.rs` only dispatches.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{PreflightClients, PreflightError, PreflightOptions, PreflightReport};
use crate::backends::cloudrun::CloudRunConfig;
use crate::emulator::faults::{FaultConfig, Latency};
use crate::emulator::storage::MutationLimit;
use crate::emulator::{AuthMode, EmulatorConfig, LocalCloud};
use crate::gcp::auth::TokenSource;
use crate::gcp::storage::{BucketSpec, StorageClient};

/// Flags of `sandbox-harness preflight`.
#[derive(Debug, Clone, Args)]
pub struct PreflightArgs {
    /// Repair what can be repaired: create a missing bucket (the configured or the plan's
    /// location and class, with the lifecycle rule), set the sessions/ lifecycle rule.
    #[arg(long)]
    pub fix: bool,
    /// Also write the report as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
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
    /// Longest wait for the test job's execution, seconds.
    #[arg(long, default_value_t = 300)]
    pub job_timeout_secs: u64,
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
            job_timeout: Duration::from_secs(self.job_timeout_secs.max(1)),
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
        return Ok(super::run(&cfg, &clients, &opts).await);
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
        Ok(super::run(&cfg, &clients, &opts).await)
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
            cfg.project.as_deref().unwrap_or(super::LOCAL_PROJECT),
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
    crate::report::write_atomic(path, &json).map_err(|e| err(e.to_string()))
}

/// `sandbox-harness preflight`: prints the checklist, writes the JSON, returns the exit code
/// (0 all satisfied, 1 some item failed, 2 the preflight could not run).
pub async fn run_preflight(args: &PreflightArgs) -> ExitCode {
    let report = match preflight_report(args).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sandbox-harness: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.render());
    if let Some(p) = &args.json {
        if let Err(e) = write_json(&report, p) {
            eprintln!("sandbox-harness: {e}");
            return ExitCode::from(2);
        }
        eprintln!("wrote {}", p.display());
    }
    ExitCode::from(report.exit_code())
}

/// Flags of `sandbox-harness emulator`.
#[derive(Debug, Clone, Args)]
pub struct EmulatorArgs {
    /// Port on 127.0.0.1 (0: an ephemeral one).
    #[arg(long, default_value_t = 9023)]
    pub port: u16,
    /// Where buckets and objects live (default: a temp dir removed at exit).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Require bearer tokens issued by the emulator's /token or metadata endpoints.
    #[arg(long)]
    pub auth: bool,
    /// Latency added to every API call, ms: `MIN-MAX` or `N` (on top of `--profile`).
    #[arg(long, value_name = "MIN-MAX")]
    pub latency_ms: Option<String>,
    /// Latency and lifecycle profile: a built-in name (`none`, `gcp-published`) or a profile
    /// file, such as one `bench --record-profile` wrote (suites/profiles/ has the format).
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    /// Probability (0..1) of answering 503 on any API call.
    #[arg(long, value_name = "P")]
    pub p503: Option<f64>,
    /// Probability (0..1) of answering 429 on any API call.
    #[arg(long, value_name = "P")]
    pub p429: Option<f64>,
    /// Probability (0..1) that an execution fails to start.
    #[arg(long, value_name = "P")]
    pub start_failure: Option<f64>,
    /// Seed of the fault dice (latency draws, 429/503, start failures), for a replayable run;
    /// the counts at GET /emulator/v1/faults report the seed in use.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Fault configuration (TOML, fields of `FaultConfig`); the flags above override it.
    #[arg(long, value_name = "FILE.toml")]
    pub faults: Option<PathBuf>,
    /// Report this permission as not granted by testIamPermissions (repeatable).
    #[arg(long, value_name = "PERMISSION")]
    pub deny_permission: Vec<String>,
    /// Report this service as disabled by Service Usage (repeatable).
    #[arg(long, value_name = "SERVICE")]
    pub disable_service: Vec<String>,
    /// Sustained mutations per second allowed on one object name before 429s (Cloud Storage
    /// documents one write per second); 0 turns the limit off.
    #[arg(long, value_name = "PER_SECOND", default_value_t = MutationLimit::default().per_second)]
    pub object_mutation_rate: f64,
    /// Mutations of one object name that may come at once before the rate applies.
    #[arg(long, value_name = "N", default_value_t = MutationLimit::default().burst)]
    pub object_mutation_burst: u32,
}

/// Parses `MIN-MAX` or `N` (milliseconds).
pub fn parse_latency(s: &str) -> Result<Latency, String> {
    let num = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("{v:?} is not a number of milliseconds"))
    };
    let (min_ms, max_ms) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if min_ms > max_ms {
        return Err(format!("latency {s:?}: MIN is above MAX"));
    }
    Ok(Latency { min_ms, max_ms })
}

fn probability(flag: &str, p: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{flag} must be between 0 and 1, got {p}"))
    }
}

impl EmulatorArgs {
    /// The emulator configuration these flags select.
    pub fn config(&self) -> Result<EmulatorConfig, String> {
        let mut faults = match &self.faults {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                toml::from_str::<FaultConfig>(&text)
                    .map_err(|e| format!("invalid fault file {}: {e}", p.display()))?
            }
            None => FaultConfig::default(),
        };
        if let Some(l) = &self.latency_ms {
            faults.call_latency = parse_latency(l)?;
        }
        if let Some(p) = &self.profile {
            let p = crate::suites::LatencyProfile::resolve(p).map_err(|e| e.to_string())?;
            faults.profile = (!p.is_empty()).then(|| Box::new(p));
        }
        if let Some(p) = self.p503 {
            faults.p503.insert("*".into(), probability("--p503", p)?);
        }
        if let Some(p) = self.p429 {
            faults.p429.insert("*".into(), probability("--p429", p)?);
        }
        if let Some(p) = self.start_failure {
            faults.p_execution_start_failure = probability("--start-failure", p)?;
        }
        if let Some(seed) = self.seed {
            faults.seed = Some(seed);
        }
        let rate = self.object_mutation_rate;
        if !rate.is_finite() || rate < 0.0 {
            return Err(format!(
                "--object-mutation-rate must be a non-negative number, got {rate}"
            ));
        }
        if rate > 0.0 && self.object_mutation_burst == 0 {
            return Err("--object-mutation-burst must be at least 1".into());
        }
        let object_mutation_limit = (rate > 0.0).then_some(MutationLimit {
            per_second: rate,
            burst: self.object_mutation_burst,
        });
        Ok(EmulatorConfig {
            object_mutation_limit,
            state_dir: self.state_dir.clone(),
            port: self.port,
            auth: if self.auth {
                AuthMode::Required
            } else {
                AuthMode::Off
            },
            faults,
            denied_permissions: self
                .deny_permission
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            disabled_services: self
                .disable_service
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            ..EmulatorConfig::default()
        })
    }
}

/// Resolves when the process gets Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `sandbox-harness emulator`: serves the local cloud on 127.0.0.1 until Ctrl-C or SIGTERM,
/// then cancels executions, removes their containers and stops.
pub async fn run_emulator(args: &EmulatorArgs) -> ExitCode {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandbox-harness: {e}");
            return ExitCode::from(2);
        }
    };
    let auth = cfg.auth;
    let local = match LocalCloud::start_with(cfg).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sandbox-harness: the emulator did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = local.base_url();
    let mut out = std::io::stdout().lock();
    let printed = writeln!(out, "emulator listening on {base} (Ctrl-C stops it)")
        .and_then(|_| writeln!(out, "STORAGE_EMULATOR_HOST={base}"))
        .and_then(|_| writeln!(out, "CLOUD_RUN_EMULATOR_HOST={base}"))
        .and_then(|_| {
            if auth == AuthMode::Required {
                writeln!(
                    out,
                    "auth required: get a token with POST {base}/token (JWT bearer grant) or GET \
                     {base}/computeMetadata/v1/instance/service-accounts/default/token \
                     (Metadata-Flavor: Google), then set CLOUDRUN_TOKEN"
                )
            } else {
                Ok(())
            }
        })
        .and_then(|_| out.flush());
    drop(out);
    if let Err(e) = printed {
        eprintln!("sandbox-harness: cannot write to stdout: {e}");
    }
    stop_signal().await;
    eprintln!("stopping the emulator: cancelling executions, removing containers");
    local.shutdown().await;
    drop(local);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_and_probabilities() {
        assert_eq!(
            parse_latency("10-50").unwrap(),
            Latency {
                min_ms: 10,
                max_ms: 50
            }
        );
        assert_eq!(parse_latency("7").unwrap().max_ms, 7);
        assert!(parse_latency("50-10").is_err());
        assert!(parse_latency("x").is_err());
        assert!(probability("--p503", 1.5).is_err());
        assert!(probability("--p503", 0.25).is_ok());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    fn cfg(argv: &[&str]) -> Result<EmulatorConfig, String> {
        use clap::Parser;
        let mut all = vec!["emulator"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .args
            .config()
    }

    #[test]
    fn object_mutation_limit_flags() {
        assert_eq!(
            cfg(&[]).unwrap().object_mutation_limit,
            Some(MutationLimit::default())
        );
        assert_eq!(
            cfg(&["--object-mutation-rate", "0"])
                .unwrap()
                .object_mutation_limit,
            None
        );
        let l = cfg(&[
            "--object-mutation-rate",
            "2.5",
            "--object-mutation-burst",
            "9",
        ])
        .unwrap()
        .object_mutation_limit
        .unwrap();
        assert_eq!((l.per_second, l.burst), (2.5, 9));
        assert!(cfg(&["--object-mutation-rate", "-1"]).is_err());
        assert!(cfg(&["--object-mutation-burst", "0"]).is_err());
    }

    #[test]
    fn profile_flag_takes_a_name_or_a_file_and_keeps_latency_ms() {
        let c = cfg(&[
            "--profile",
            "gcp-published",
            "--latency-ms",
            "5-9",
            "--seed",
            "4",
        ])
        .unwrap();
        assert_eq!(c.faults.profile_name(), "gcp-published");
        assert_eq!(
            (c.faults.call_latency.min_ms, c.faults.call_latency.max_ms),
            (5, 9)
        );
        assert_eq!(c.faults.seed, Some(4));
        assert_eq!(cfg(&["--profile", "none"]).unwrap().faults.profile, None);
        let err = cfg(&["--profile", "/no/such/profile.toml"]).unwrap_err();
        assert!(err.contains("no such profile"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "name = \"x\"\n[latency.\"storage.read\"]\np50_ms = 1\n",
        )
        .unwrap();
        let err = cfg(&["--profile", bad.to_str().unwrap()]).unwrap_err();
        assert!(
            err.contains("cannot parse") && err.contains("min_ms"),
            "{err}"
        );
    }
}
