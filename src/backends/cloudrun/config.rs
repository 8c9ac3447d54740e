//! Configuration of the Cloud Run Jobs backend: from a TOML file, then the environment, then
//! flags (each later source overrides the earlier).

use std::path::Path;
use std::time::Duration;

use sandbox_executor::worker::PollSchedule;
use serde::{Deserialize, Serialize};

/// Default state bucket, as in the migration plan.
pub const DEFAULT_BUCKET: &str = "manus-sandbox-state";

/// The largest warm pool the configuration accepts.
pub const MAX_POOL_SIZE: usize = 50;

/// Settings of the Cloud Run Jobs backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudRunConfig {
    /// GCP project; `None` means: use the embedded emulator.
    pub project: Option<String>,
    /// Cloud Run region.
    pub region: String,
    /// State bucket.
    pub bucket: String,
    /// Executor image; `None` builds the local one (emulator) or fails with a hint (real GCP).
    pub executor_image: Option<String>,
    /// vCPU limit of a job's task.
    pub cpu: String,
    /// Memory limit of a job's task.
    pub memory: String,
    /// Task timeout in seconds.
    pub task_timeout_secs: u64,
    /// Service account the job runs as.
    pub service_account: Option<String>,
    /// A worker with no command for this long stops itself (cost), seconds.
    pub worker_idle_secs: u64,
    /// Shortest polling interval, ms: the worker fetches the next inbox name and the client
    /// reads the answer this often right after activity.
    pub poll_min_ms: u64,
    /// Longest polling interval, ms: idle polling doubles up to this.
    pub poll_max_ms: u64,
    /// How long polling stays at `poll_min_ms` after activity before it backs off, ms.
    pub poll_hold_ms: u64,
    /// How often the worker rewrites its heartbeat, seconds (Cloud Storage allows about one
    /// write a second to one object; 5-10 s leaves room).
    pub heartbeat_secs: u64,
    /// Worker executions kept started and idle for `create` to claim (the warm pool); 0 (the
    /// default) turns the pool off. Each is billed while it waits.
    pub pool_size: usize,
    /// Cloud Run Admin API base URL; `None` = https://run.googleapis.com.
    pub run_endpoint: Option<String>,
    /// Cloud Storage base URL; `None` = STORAGE_EMULATOR_HOST or https://storage.googleapis.com.
    pub storage_endpoint: Option<String>,
    /// A static bearer token (emulators, tests); `None` = Google credentials or anonymous.
    pub token: Option<String>,
    /// Where the state bucket must be (e.g. "US-CENTRAL1"); `None` = not checked by preflight.
    pub bucket_location: Option<String>,
    /// The bucket's storage class (e.g. "STANDARD"); `None` = not checked by preflight.
    pub bucket_storage_class: Option<String>,
    /// Cloud Resource Manager base URL; `None` = the run endpoint when it is a loopback
    /// emulator, else https://cloudresourcemanager.googleapis.com.
    pub resource_manager_endpoint: Option<String>,
    /// Service Usage base URL; `None` = the run endpoint when it is a loopback emulator, else
    /// https://serviceusage.googleapis.com.
    pub service_usage_endpoint: Option<String>,
    /// A Google credentials file (service-account key, user ADC, external account /
    /// Workload Identity Federation, impersonation); `None` = Application Default Credentials.
    pub credentials_file: Option<String>,
    /// Project billed for API quota, sent as `x-goog-user-project` with Google credentials.
    pub quota_project: Option<String>,
    /// The embedded emulator's latency profile: a built-in name (`none`, `gcp-published`) or
    /// a profile file; `None` = what the command defaults to (see [`CloudRunConfig::twin_profile`]).
    pub latency_profile: Option<String>,
    /// Seed of the embedded emulator's dice (profile sampling, faults); `None` = random.
    pub emulator_seed: Option<u64>,
}

impl Default for CloudRunConfig {
    fn default() -> Self {
        CloudRunConfig {
            project: None,
            region: "us-central1".into(),
            bucket: DEFAULT_BUCKET.into(),
            executor_image: None,
            cpu: "1".into(),
            memory: "512Mi".into(),
            task_timeout_secs: 3600,
            service_account: None,
            worker_idle_secs: 120,
            poll_min_ms: 25,
            poll_max_ms: 1000,
            poll_hold_ms: 2000,
            heartbeat_secs: 5,
            pool_size: 0,
            run_endpoint: None,
            storage_endpoint: None,
            token: None,
            bucket_location: None,
            bucket_storage_class: None,
            resource_manager_endpoint: None,
            service_usage_endpoint: None,
            credentials_file: None,
            quota_project: None,
            latency_profile: None,
            emulator_seed: None,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read Cloud Run config {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid Cloud Run config {path}: {message}")]
    Parse {
        /// File path.
        path: String,
        /// Parser message.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid Cloud Run setting {field}: {message}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Why.
        message: String,
    },
}

impl CloudRunConfig {
    /// Loads a TOML file (fields as in this struct).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The configuration from `$CLOUDRUN_CONFIG` (a TOML file, when set) and the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut cfg = match std::env::var_os("CLOUDRUN_CONFIG") {
            Some(p) if !p.is_empty() => Self::from_file(Path::new(&p))?,
            _ => Self::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Applies environment overrides through `get` (std::env::var in production).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(v) = nonempty("CLOUDRUN_PROJECT").or_else(|| nonempty("GOOGLE_CLOUD_PROJECT")) {
            self.project = Some(v);
        }
        if let Some(v) = nonempty("CLOUDRUN_REGION") {
            self.region = v;
        }
        if let Some(v) = nonempty("SANDBOX_BUCKET") {
            self.bucket = v;
        }
        if let Some(v) = nonempty("SANDBOX_EXECUTOR_IMAGE") {
            self.executor_image = Some(v);
        }
        if let Some(v) = nonempty("CLOUDRUN_SERVICE_ACCOUNT") {
            self.service_account = Some(v);
        }
        if let Some(v) = nonempty("CLOUD_RUN_EMULATOR_HOST") {
            self.run_endpoint = Some(with_scheme(&v));
        }
        if let Some(v) = nonempty("STORAGE_EMULATOR_HOST") {
            self.storage_endpoint = Some(with_scheme(&v));
        }
        if let Some(v) = nonempty("SANDBOX_BUCKET_LOCATION") {
            self.bucket_location = Some(v);
        }
        if let Some(v) = nonempty("SANDBOX_BUCKET_STORAGE_CLASS") {
            self.bucket_storage_class = Some(v);
        }
        if let Some(v) = nonempty("CLOUDRUN_CREDENTIALS_FILE") {
            self.credentials_file = Some(v);
        }
        if let Some(v) = nonempty("CLOUDRUN_QUOTA_PROJECT") {
            self.quota_project = Some(v);
        }
        if let Some(v) = nonempty("CLOUDRUN_TOKEN") {
            self.token = Some(v);
        }
        if let Some(v) = nonempty("SANDBOX_TWIN_PROFILE") {
            self.latency_profile = Some(v);
        }
        if let Some(v) = nonempty("SANDBOX_TWIN_SEED") {
            self.emulator_seed = Some(v.parse().map_err(|_| ConfigError::Invalid {
                field: "SANDBOX_TWIN_SEED",
                message: format!("{v:?} is not a number"),
            })?);
        }
        if let Some(v) = nonempty("CLOUDRUN_WORKER_IDLE_SECS") {
            self.worker_idle_secs = v.parse().map_err(|_| ConfigError::Invalid {
                field: "CLOUDRUN_WORKER_IDLE_SECS",
                message: format!("{v:?} is not a number of seconds"),
            })?;
        }
        if let Some(v) = nonempty("CLOUDRUN_POOL_SIZE") {
            self.pool_size = v.parse().map_err(|_| ConfigError::Invalid {
                field: "CLOUDRUN_POOL_SIZE",
                message: format!("{v:?} is not a number of executions"),
            })?;
        }
        self.validate()
    }

    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        if !bucket_ok {
            return Err(ConfigError::Invalid {
                field: "bucket",
                message: format!("{:?} is not a valid bucket name", self.bucket),
            });
        }
        if self.poll_min_ms == 0 || self.poll_min_ms > self.poll_max_ms || self.poll_max_ms > 60_000
        {
            return Err(ConfigError::Invalid {
                field: "poll_min_ms",
                message: "polling needs 1 <= poll_min_ms <= poll_max_ms <= 60000".into(),
            });
        }
        if self.poll_hold_ms > 600_000 {
            return Err(ConfigError::Invalid {
                field: "poll_hold_ms",
                message: "poll_hold_ms is at most 600000 (10 minutes)".into(),
            });
        }
        if !(1..=60).contains(&self.heartbeat_secs) {
            return Err(ConfigError::Invalid {
                field: "heartbeat_secs",
                message: "must be between 1 and 60".into(),
            });
        }
        if self.pool_size > MAX_POOL_SIZE {
            return Err(ConfigError::Invalid {
                field: "pool_size",
                message: format!("at most {MAX_POOL_SIZE} pre-started executions"),
            });
        }
        if self.worker_idle_secs == 0 || self.worker_idle_secs >= self.task_timeout_secs {
            return Err(ConfigError::Invalid {
                field: "worker_idle_secs",
                message: "must be above 0 and below the task timeout".into(),
            });
        }
        self.twin_profile()?;
        self.target().map(|_| ())
    }

    /// The embedded emulator's latency profile: `latency_profile`, else `none`. The one place
    /// the twin's profile is decided; reports name it (`FaultConfig::profile_name`).
    pub fn twin_profile(&self) -> Result<crate::suites::LatencyProfile, ConfigError> {
        let name = self.latency_profile.as_deref().unwrap_or("none");
        crate::suites::LatencyProfile::resolve(name).map_err(|e| ConfigError::Invalid {
            field: "latency_profile",
            message: e.to_string(),
        })
    }

    /// True when no real GCP is configured: the embedded emulator is used.
    pub fn uses_embedded_emulator(&self) -> bool {
        self.project.is_none() && self.explicit_endpoints().is_empty()
    }

    fn explicit_endpoints(&self) -> Vec<(&'static str, &str)> {
        [
            ("run_endpoint", &self.run_endpoint),
            ("storage_endpoint", &self.storage_endpoint),
            ("resource_manager_endpoint", &self.resource_manager_endpoint),
            ("service_usage_endpoint", &self.service_usage_endpoint),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    /// Where the clients of this configuration go, derived from the endpoints alone (never
    /// from the project): no endpoint and no project is the embedded twin; loopback endpoints
    /// are a standalone emulator; Google's endpoints (`*.googleapis.com`, the defaults of the
    /// Admin and Storage endpoints left unset) are Google Cloud. A mix of emulator and Google
    /// endpoints, and hosts that are neither, are refused: figures from such a setup could
    /// not be labelled truthfully.
    pub fn target(&self) -> Result<Target, ConfigError> {
        let explicit = self.explicit_endpoints();
        if explicit.is_empty() {
            return Ok(if self.project.is_some() {
                Target::Google
            } else {
                Target::Embedded
            });
        }
        let mut emulator = Vec::new();
        let mut google = Vec::new();
        for (field, url) in &explicit {
            match endpoint_kind(url) {
                Some(EndpointKind::Loopback) => emulator.push(format!("{field}={url}")),
                Some(EndpointKind::Google) => google.push(format!("{field}={url}")),
                None => {
                    return Err(ConfigError::Invalid {
                        field,
                        message: format!(
                            "{url:?} is neither an emulator on this host's loopback nor a                              Google endpoint (*.googleapis.com)"
                        ),
                    });
                }
            }
        }
        // The Admin API and Storage endpoints default to Google when unset; the resource
        // manager and service usage ones follow the Admin API endpoint.
        for (field, url) in [
            ("run_endpoint", &self.run_endpoint),
            ("storage_endpoint", &self.storage_endpoint),
        ] {
            if url.is_none() {
                google.push(format!("{field} unset (Google's)"));
            }
        }
        match (emulator.first(), google.is_empty()) {
            (None, _) => Ok(Target::Google),
            (Some(first), true) => Ok(Target::Emulator {
                endpoint: first
                    .split_once('=')
                    .map_or(first.clone(), |(_, u)| u.to_string()),
            }),
            (Some(_), false) => Err(ConfigError::Invalid {
                field: "endpoints",
                message: format!(
                    "the configuration mixes emulator endpoints ({}) with Google Cloud ones                      ({}); point every endpoint at the emulator (CLOUD_RUN_EMULATOR_HOST and                      STORAGE_EMULATOR_HOST) or none",
                    emulator.join(", "),
                    google.join(", ")
                ),
            }),
        }
    }

    /// The polling schedule of the worker and of the client waiting for answers.
    pub fn poll(&self) -> PollSchedule {
        PollSchedule {
            min: Duration::from_millis(self.poll_min_ms),
            max: Duration::from_millis(self.poll_max_ms),
            hold: Duration::from_millis(self.poll_hold_ms),
        }
    }

    /// The worker's heartbeat interval.
    pub fn heartbeat_every(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// The task's vCPU limit as a number (`"1"`, `"2"`, `"500m"`), as Cloud Run bills it.
    pub fn vcpu(&self) -> Result<f64, ConfigError> {
        let bad = || ConfigError::Invalid {
            field: "cpu",
            message: format!("{:?} is not a CPU quantity", self.cpu),
        };
        match self.cpu.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0).map_err(|_| bad()),
            None => self.cpu.parse::<f64>().map_err(|_| bad()),
        }
        .and_then(|v| if v > 0.0 { Ok(v) } else { Err(bad()) })
    }

    /// The task's memory limit in GiB (`"512Mi"`, `"2Gi"`, `"1G"`), as Cloud Run bills it.
    pub fn memory_gib(&self) -> Result<f64, ConfigError> {
        let bad = || ConfigError::Invalid {
            field: "memory",
            message: format!("{:?} is not a memory quantity", self.memory),
        };
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        let units: [(&str, f64); 6] = [
            ("Gi", 1.0),
            ("Mi", 1.0 / 1024.0),
            ("Ki", 1.0 / (1024.0 * 1024.0)),
            ("G", 1e9 / GIB),
            ("M", 1e6 / GIB),
            ("k", 1e3 / GIB),
        ];
        let (num, scale) = units
            .iter()
            .find_map(|(u, f)| self.memory.strip_suffix(u).map(|n| (n, *f)))
            .unwrap_or((self.memory.as_str(), 1.0 / GIB));
        num.parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0)
            .map(|v| v * scale)
            .ok_or_else(bad)
    }
}

/// Where a configuration's clients go (see [`CloudRunConfig::target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No endpoint and no project: the embedded twin started in-process.
    Embedded,
    /// Endpoints on this host's loopback: a standalone emulator.
    Emulator {
        /// The first emulator endpoint configured.
        endpoint: String,
    },
    /// Google Cloud.
    Google,
}

enum EndpointKind {
    Loopback,
    Google,
}

fn endpoint_kind(u: &str) -> Option<EndpointKind> {
    let url = url::Url::parse(u).ok()?;
    let host = url.host_str()?.trim_matches(|c| c == '[' || c == ']');
    if host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return Some(EndpointKind::Loopback);
    }
    let host = host.to_ascii_lowercase();
    (url.scheme() == "https" && (host == "googleapis.com" || host.ends_with(".googleapis.com")))
        .then_some(EndpointKind::Google)
}

/// True when `u` is a URL whose host is this machine's loopback (an emulator).
pub fn is_loopback_url(u: &str) -> bool {
    matches!(endpoint_kind(u), Some(EndpointKind::Loopback))
}

/// `host:port` as Google's libraries read STORAGE_EMULATOR_HOST: a bare host gets `http://`.
pub fn with_scheme(host: &str) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        host.trim_end_matches('/').to_string()
    } else {
        format!("http://{}", host.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_overrides_and_validation() {
        let env: HashMap<&str, &str> = [
            ("GOOGLE_CLOUD_PROJECT", "p1"),
            ("STORAGE_EMULATOR_HOST", "127.0.0.1:9023"),
            ("CLOUD_RUN_EMULATOR_HOST", "127.0.0.1:9023"),
            ("SANDBOX_BUCKET", "my-bucket"),
        ]
        .into();
        let mut c = CloudRunConfig::default();
        c.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.project.as_deref(), Some("p1"));
        assert_eq!(c.storage_endpoint.as_deref(), Some("http://127.0.0.1:9023"));
        assert_eq!(c.bucket, "my-bucket");
        assert!(!c.uses_embedded_emulator());
        assert!(CloudRunConfig::default().uses_embedded_emulator());
        let mut bad = CloudRunConfig::default();
        assert!(
            bad.apply_env(|k| (k == "SANDBOX_BUCKET").then(|| "Bad Name".into()))
                .is_err()
        );
    }

    /// The origin of figures comes from the endpoints, not from the project: a project with
    /// emulator endpoints is still an emulator, and a mix is refused.
    #[test]
    fn target_is_derived_from_endpoints() {
        let cfg =
            |project: Option<&str>, run: Option<&str>, storage: Option<&str>| CloudRunConfig {
                project: project.map(Into::into),
                run_endpoint: run.map(Into::into),
                storage_endpoint: storage.map(Into::into),
                ..CloudRunConfig::default()
            };
        let emu = "http://127.0.0.1:9023";
        assert_eq!(cfg(None, None, None).target().unwrap(), Target::Embedded);
        assert_eq!(cfg(Some("p"), None, None).target().unwrap(), Target::Google);
        assert_eq!(
            cfg(Some("p"), Some(emu), Some(emu)).target().unwrap(),
            Target::Emulator {
                endpoint: emu.into()
            }
        );
        assert_eq!(
            cfg(None, Some("http://localhost:1"), Some("http://[::1]:2"))
                .target()
                .unwrap(),
            Target::Emulator {
                endpoint: "http://localhost:1".into()
            }
        );
        assert_eq!(
            cfg(
                Some("p"),
                Some("https://us-central1-run.googleapis.com"),
                Some("https://storage.googleapis.com")
            )
            .target()
            .unwrap(),
            Target::Google
        );
        // Emulator Storage with Google's Admin API (the default when unset): refused.
        let mixed = cfg(Some("p"), None, Some(emu));
        let err = mixed.target().unwrap_err().to_string();
        assert!(err.contains("mixes emulator endpoints"), "{err}");
        assert!(err.contains("run_endpoint unset"), "{err}");
        assert!(mixed.validate().is_err());
        let err = cfg(Some("p"), Some(emu), Some("https://storage.googleapis.com"))
            .target()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage_endpoint=https://storage.googleapis.com"),
            "{err}"
        );
        // A host that is neither loopback nor Google's cannot be labelled: refused.
        let err = cfg(Some("p"), Some("http://10.0.0.5:80"), Some(emu))
            .target()
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither an emulator"), "{err}");
        // Plain http to Google is not Google's endpoint either.
        assert!(
            cfg(Some("p"), Some("http://run.googleapis.com"), None)
                .target()
                .is_err()
        );
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:9023"));
        assert!(is_loopback_url("http://localhost:1"));
        assert!(is_loopback_url("http://[::1]:1"));
        assert!(!is_loopback_url("https://run.googleapis.com"));
    }

    #[test]
    fn twin_profile_defaults_to_none() {
        assert_eq!(
            CloudRunConfig::default().twin_profile().unwrap().name,
            "none"
        );
        let c = CloudRunConfig {
            latency_profile: Some("gcp-published".into()),
            ..CloudRunConfig::default()
        };
        assert_eq!(c.twin_profile().unwrap().name, "gcp-published");
    }

    #[test]
    fn resources_and_pool_size() {
        let mut c = CloudRunConfig::default();
        assert_eq!(c.vcpu().unwrap(), 1.0);
        assert_eq!(c.memory_gib().unwrap(), 0.5);
        c.cpu = "500m".into();
        c.memory = "2Gi".into();
        assert_eq!(c.vcpu().unwrap(), 0.5);
        assert_eq!(c.memory_gib().unwrap(), 2.0);
        c.memory = "lots".into();
        assert!(matches!(
            c.memory_gib(),
            Err(ConfigError::Invalid {
                field: "memory",
                ..
            })
        ));
        let mut p = CloudRunConfig::default();
        p.apply_env(|k| (k == "CLOUDRUN_POOL_SIZE").then(|| "2".into()))
            .unwrap();
        assert_eq!(p.pool_size, 2);
        assert!(
            CloudRunConfig::default()
                .apply_env(|k| (k == "CLOUDRUN_POOL_SIZE").then(|| "many".into()))
                .is_err()
        );
        p.pool_size = MAX_POOL_SIZE + 1;
        assert!(p.validate().is_err());
    }

    #[test]
    fn file_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "project = \"x\"\nregion = \"europe-west1\"\n").unwrap();
        let c = CloudRunConfig::from_file(&p).unwrap();
        assert_eq!(c.region, "europe-west1");
        std::fs::write(&p, "projekt = \"x\"\n").unwrap();
        assert!(matches!(
            CloudRunConfig::from_file(&p),
            Err(ConfigError::Parse { .. })
        ));
    }
}
