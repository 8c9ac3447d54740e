//! `sandbox-harness emulator`: the local Cloud Run + Cloud Storage emulator until Ctrl-C.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use sandbox_harness::emulator::storage::MutationLimit;
use sandbox_harness::emulator::{AuthMode, EmulatorConfig, LocalCloud};
use sandbox_harness::suites::faults::{FaultConfig, Latency};

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
    /// Latency added to every API call: `MIN-MAX` or one duration, e.g. `10ms-50ms` (on top
    /// of `--profile`).
    #[arg(long, value_name = "MIN-MAX")]
    pub latency: Option<String>,
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

/// Parses `MIN-MAX` or one duration (`10ms-50ms`, `20ms`), each in the one duration syntax.
pub fn parse_latency(s: &str) -> Result<Latency, String> {
    let ms = |v: &str| super::duration::parse(v).map(|d| d.as_millis() as u64);
    let (min_ms, max_ms) = match s.split_once('-') {
        Some((a, b)) => (ms(a)?, ms(b)?),
        None => {
            let n = ms(s)?;
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
        if let Some(l) = &self.latency {
            faults.call_latency = parse_latency(l)?;
        }
        if let Some(p) = &self.profile {
            let p =
                sandbox_harness::suites::LatencyProfile::resolve(p).map_err(|e| e.to_string())?;
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
pub async fn run(args: &EmulatorArgs) -> ExitCode {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => return super::usage_error(&e),
    };
    let auth = cfg.auth;
    let local = match LocalCloud::start_with(cfg).await {
        Ok(l) => l,
        Err(e) => return super::failure(&format!("the emulator did not start: {e}")),
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
            parse_latency("10ms-50ms").unwrap(),
            Latency {
                min_ms: 10,
                max_ms: 50
            }
        );
        assert_eq!(parse_latency("7ms").unwrap().max_ms, 7);
        assert_eq!(parse_latency("1s").unwrap().min_ms, 1000);
        assert!(parse_latency("50ms-10ms").is_err());
        assert!(parse_latency("10-50").is_err(), "a duration needs its unit");
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
    fn profile_flag_takes_a_name_or_a_file_and_keeps_latency() {
        let c = cfg(&[
            "--profile",
            "gcp-published",
            "--latency",
            "5ms-9ms",
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
