//! Latency and lifecycle profiles of the Cloud Run twin (`suites/profiles/*.toml`): how long
//! the platform takes for each operation, as distributions given by quantiles, each figure
//! with its source. The emulator samples them (`emulator::faults`); `bench --record-profile`
//! writes what it observed in the same format, so a recorded profile replays as it is.
//!
//! Operation keys:
//! - `admin.call`: every Admin API call (Cloud Run, Resource Manager, Service Usage); a key
//!   with the method id (`run.jobs.create`) overrides it for that method;
//! - `storage.read`, `storage.write`, `storage.list`, `storage.delete`: every Cloud Storage
//!   JSON API call of that class (see [`storage_class`]); a method id (`storage.objects.get`)
//!   overrides its class;
//! - lifecycle phases: [`JOB_CREATE_OP`], [`EXEC_SCHEDULING`], [`EXEC_IMAGE_PULL`],
//!   [`EXEC_CONTAINER_START`], [`EXEC_COMPLETION_VISIBLE`], [`WAIT_EARLY`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SuiteError;

/// Every Admin API call, unless a method id has its own entry.
pub const ADMIN_CALL: &str = "admin.call";
/// A job-create operation: from the create call's answer until the operation is done.
pub const JOB_CREATE_OP: &str = "run.job_create_op";
/// An execution's scheduling: from `jobs.run` until an instance is assigned.
pub const EXEC_SCHEDULING: &str = "run.execution.scheduling";
/// An image pull's fixed part (the size-dependent part is `image_pull_mib_per_s`).
pub const EXEC_IMAGE_PULL: &str = "run.execution.image_pull";
/// A task container's start, from the image being there to its process running.
pub const EXEC_CONTAINER_START: &str = "run.execution.container_start";
/// From a task's exit until the task and execution report it.
pub const EXEC_COMPLETION_VISIBLE: &str = "run.execution.completion_visible";
/// How long `operations.wait` waits when it returns before the operation is done.
pub const WAIT_EARLY: &str = "run.operations_wait_early";

/// The profile names shipped with the harness and their files.
pub const BUILTIN: &[(&str, &str)] = &[
    ("none", include_str!("../../suites/profiles/none.toml")),
    (
        "gcp-published",
        include_str!("../../suites/profiles/gcp-published.toml"),
    ),
];

/// The profile the bench measures Cloud Run with unless told otherwise.
pub const BENCH_DEFAULT: &str = "gcp-published";
/// The profile conformance runs with unless told otherwise (behaviour, not timing).
pub const CONFORMANCE_DEFAULT: &str = "none";

/// One latency distribution in milliseconds, given by quantiles; sampled by linear
/// interpolation of the inverse distribution through (0, min), (.5, p50), (.9, p90),
/// (.99, p99), (1, max).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dist {
    /// Smallest value.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest value.
    pub max_ms: f64,
    /// Where the figure comes from (a URL, a measurement, or "assumption: ..." with its range).
    pub source: String,
    /// How many observations it was recorded from (recorded profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
}

impl Dist {
    fn points(&self) -> [(f64, f64); 5] {
        [
            (0.0, self.min_ms),
            (0.5, self.p50_ms),
            (0.9, self.p90_ms),
            (0.99, self.p99_ms),
            (1.0, self.max_ms),
        ]
    }

    /// The value at quantile `u` (0..=1).
    pub fn quantile(&self, u: f64) -> Duration {
        let u = u.clamp(0.0, 1.0);
        let pts = self.points();
        let mut ms = self.max_ms;
        for w in pts.windows(2) {
            let ((u0, v0), (u1, v1)) = (w[0], w[1]);
            if u <= u1 {
                ms = if u1 > u0 {
                    v0 + (v1 - v0) * (u - u0) / (u1 - u0)
                } else {
                    v1
                };
                break;
            }
        }
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    /// A distribution summarising observed samples (milliseconds), with `source`.
    pub fn from_samples(samples: &[f64], source: &str) -> Option<Dist> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            // Linear interpolation between closest ranks.
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        let round = |x: f64| (x * 100.0).round() / 100.0;
        Some(Dist {
            min_ms: round(v[0]),
            p50_ms: round(q(0.5)),
            p90_ms: round(q(0.9)),
            p99_ms: round(q(0.99)),
            max_ms: round(v[v.len() - 1]),
            source: source.to_string(),
            samples: Some(v.len() as u64),
        })
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        let vals = [
            ("min_ms", self.min_ms),
            ("p50_ms", self.p50_ms),
            ("p90_ms", self.p90_ms),
            ("p99_ms", self.p99_ms),
            ("max_ms", self.max_ms),
        ];
        for (n, v) in vals {
            if !v.is_finite() || !(0.0..=MAX_MS).contains(&v) {
                return Err(format!(
                    "{key}.{n} = {v}: must be a number of milliseconds between 0 and {MAX_MS}"
                ));
            }
        }
        for w in vals.windows(2) {
            if w[1].1 < w[0].1 {
                return Err(format!(
                    "{key}: {} ({}) is below {} ({}); quantiles must not decrease",
                    w[1].0, w[1].1, w[0].0, w[0].1
                ));
            }
        }
        if self.source.trim().is_empty() {
            return Err(format!(
                "{key}: every figure needs a source (a URL, a measurement, or a stated assumption)"
            ));
        }
        Ok(())
    }
}

/// Largest latency a profile may give one operation: one hour.
const MAX_MS: f64 = 3_600_000.0;

/// Cloud Storage transfer rates, MiB/s per stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    /// From a client in the bucket's region (a Cloud Run task).
    pub in_region_mib_s: f64,
    /// From a client outside Google Cloud.
    pub external_mib_s: f64,
    /// Which of the two the emulator applies to every caller: "in-region" or "external".
    #[serde(default = "in_region")]
    pub apply: String,
    /// Where the figures come from.
    pub source: String,
}

fn in_region() -> String {
    "in-region".into()
}

impl Throughput {
    /// The rate the emulator applies, MiB/s.
    pub fn applied_mib_s(&self) -> f64 {
        if self.apply == "external" {
            self.external_mib_s
        } else {
            self.in_region_mib_s
        }
    }
}

/// Lifecycle settings that are not a single latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    /// Image pull rate for the size-dependent part of a pull, MiB/s (0: size is free).
    #[serde(default)]
    pub image_pull_mib_per_s: f64,
    /// Source of `image_pull_mib_per_s`.
    #[serde(default)]
    pub image_pull_source: String,
    /// Probability (0..1) that `operations.wait` returns before the operation is done (after
    /// a [`WAIT_EARLY`] delay).
    #[serde(default)]
    pub wait_early_probability: f64,
    /// Source of `wait_early_probability`.
    #[serde(default)]
    pub wait_early_source: String,
}

/// A latency and lifecycle profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyProfile {
    /// Its name (shown in reports).
    pub name: String,
    /// What it models.
    #[serde(default)]
    pub description: String,
    /// Operation key -> distribution (see the module docs for the keys).
    #[serde(default)]
    pub latency: BTreeMap<String, Dist>,
    /// Cloud Storage transfer rates; none: transfers cost nothing extra.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// Image pull rate, early returns of `operations.wait`.
    #[serde(default)]
    pub lifecycle: LifecycleSettings,
}

/// The Cloud Storage operation class of a JSON API method id (`storage.objects.get`):
/// read (object and bucket reads, metadata or media), write (inserts, patches, copies,
/// composes, moves, bucket changes), list, delete; `None` for other APIs.
pub fn storage_class(method: &str) -> Option<&'static str> {
    let m = method.strip_prefix("storage.")?;
    Some(if m.ends_with(".list") {
        "storage.list"
    } else if m.ends_with(".delete") {
        "storage.delete"
    } else if m.ends_with(".get")
        || m.ends_with(".testIamPermissions")
        || m.ends_with(".getStorageLayout")
    {
        "storage.read"
    } else {
        "storage.write"
    })
}

impl LatencyProfile {
    /// The profile without any latency (`none`).
    pub fn none() -> LatencyProfile {
        LatencyProfile {
            name: "none".into(),
            description: String::new(),
            latency: BTreeMap::new(),
            throughput: None,
            lifecycle: LifecycleSettings::default(),
        }
    }

    /// True when it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.latency.is_empty()
            && self.throughput.is_none()
            && self.lifecycle.wait_early_probability == 0.0
    }

    /// Parses and validates profile text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<LatencyProfile, SuiteError> {
        let p: LatencyProfile = super::parse_toml(text, origin)?;
        p.validate().map_err(|detail| SuiteError::Invalid {
            path: origin.to_string(),
            detail,
        })?;
        Ok(p)
    }

    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<LatencyProfile, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// A built-in profile by name, or else a file by path (a name that is neither is an error
    /// listing the built-in names).
    pub fn resolve(name_or_path: &str) -> Result<LatencyProfile, SuiteError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, &format!("<builtin profile {name_or_path}>"));
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            return Self::load(path);
        }
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        Err(SuiteError::Invalid {
            path: name_or_path.to_string(),
            detail: format!(
                "no such profile: neither a built-in name ({}) nor an existing file",
                names.join(", ")
            ),
        })
    }

    /// Checks names, quantile order, ranges and that every figure has a source.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name is empty".into());
        }
        for (key, d) in &self.latency {
            let known = key == ADMIN_CALL
                || key.starts_with("run.")
                || key.starts_with("storage.")
                || key.starts_with("cloudresourcemanager.")
                || key.starts_with("serviceusage.");
            if !known {
                return Err(format!(
                    "unknown operation key {key:?} (admin.call, storage.read|write|list|delete, \
                     run.*, storage.* method ids, or a lifecycle phase)"
                ));
            }
            d.validate(key)?;
        }
        if let Some(t) = &self.throughput {
            for (n, v) in [
                ("in_region_mib_s", t.in_region_mib_s),
                ("external_mib_s", t.external_mib_s),
            ] {
                if !v.is_finite() || v <= 0.0 {
                    return Err(format!("throughput.{n} = {v}: must be a positive MiB/s"));
                }
            }
            if t.apply != "in-region" && t.apply != "external" {
                return Err(format!(
                    "throughput.apply = {:?}: use \"in-region\" or \"external\"",
                    t.apply
                ));
            }
            if t.source.trim().is_empty() {
                return Err("throughput: the figures need a source".into());
            }
        }
        let l = &self.lifecycle;
        if !l.image_pull_mib_per_s.is_finite() || l.image_pull_mib_per_s < 0.0 {
            return Err(format!(
                "lifecycle.image_pull_mib_per_s = {}: must be 0 (free) or a positive MiB/s",
                l.image_pull_mib_per_s
            ));
        }
        if l.image_pull_mib_per_s > 0.0 && l.image_pull_source.trim().is_empty() {
            return Err("lifecycle.image_pull_mib_per_s needs image_pull_source".into());
        }
        if !(0.0..=1.0).contains(&l.wait_early_probability) {
            return Err(format!(
                "lifecycle.wait_early_probability = {}: must be between 0 and 1",
                l.wait_early_probability
            ));
        }
        if l.wait_early_probability > 0.0 {
            if l.wait_early_source.trim().is_empty() {
                return Err("lifecycle.wait_early_probability needs wait_early_source".into());
            }
            if !self.latency.contains_key(WAIT_EARLY) {
                return Err(format!(
                    "lifecycle.wait_early_probability needs a [latency.\"{WAIT_EARLY}\"] entry"
                ));
            }
        }
        Ok(())
    }

    /// The distribution of an API call to `method` (a method id such as `run.jobs.create` or
    /// `storage.objects.get`): its own entry, else its class's.
    pub fn call(&self, method: &str) -> Option<&Dist> {
        if let Some(d) = self.latency.get(method) {
            return Some(d);
        }
        match storage_class(method) {
            Some(class) => self.latency.get(class),
            None => self.latency.get(ADMIN_CALL),
        }
    }

    /// The distribution of a lifecycle phase (one of the phase constants).
    pub fn phase(&self, key: &str) -> Option<&Dist> {
        self.latency.get(key)
    }

    /// Serialises as TOML (the format `parse` reads).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_profiles_load_and_none_is_empty() {
        for (name, _) in BUILTIN {
            let p = LatencyProfile::resolve(name).unwrap();
            assert_eq!(&p.name, name);
        }
        assert!(LatencyProfile::resolve("none").unwrap().is_empty());
        let g = LatencyProfile::resolve("gcp-published").unwrap();
        for key in [
            ADMIN_CALL,
            "storage.read",
            "storage.write",
            "storage.list",
            "storage.delete",
            JOB_CREATE_OP,
            EXEC_SCHEDULING,
            EXEC_IMAGE_PULL,
            EXEC_CONTAINER_START,
            EXEC_COMPLETION_VISIBLE,
            WAIT_EARLY,
        ] {
            assert!(g.latency.contains_key(key), "gcp-published lacks {key}");
        }
        assert!(g.throughput.is_some());
        assert!(g.lifecycle.wait_early_probability > 0.0);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        let err = |text: &str| {
            LatencyProfile::parse(text, "t.toml")
                .unwrap_err()
                .to_string()
        };
        let dist = |p50: f64, p90: f64, src: &str| {
            format!(
                "name = \"x\"\n[latency.\"storage.read\"]\nmin_ms = 1\np50_ms = {p50}\n\
                 p90_ms = {p90}\np99_ms = 90\nmax_ms = 100\nsource = \"{src}\"\n"
            )
        };
        assert!(err(&dist(50.0, 40.0, "a")).contains("quantiles must not decrease"));
        assert!(err(&dist(50.0, 60.0, " ")).contains("needs a source"));
        assert!(err("name = \"x\"\nbogus = 1\n").contains("cannot parse t.toml"));
        assert!(err("name = \"\"\n").contains("name is empty"));
        let unknown = "name = \"x\"\n[latency.\"disk.read\"]\nmin_ms = 1\np50_ms = 1\n\
                       p90_ms = 1\np99_ms = 1\nmax_ms = 1\nsource = \"s\"\n";
        assert!(err(unknown).contains("unknown operation key"));
        let wait = "name = \"x\"\n[lifecycle]\nwait_early_probability = 0.5\n\
                    wait_early_source = \"s\"\n";
        assert!(err(wait).contains("run.operations_wait_early"));
        assert!(
            LatencyProfile::resolve("no-such-profile")
                .unwrap_err()
                .to_string()
                .contains("gcp-published")
        );
        assert!(LatencyProfile::parse(&dist(50.0, 60.0, "a"), "t").is_ok());
    }

    #[test]
    fn quantiles_interpolate_and_classes_resolve() {
        let d = Dist {
            min_ms: 10.0,
            p50_ms: 20.0,
            p90_ms: 60.0,
            p99_ms: 100.0,
            max_ms: 200.0,
            source: "t".into(),
            samples: None,
        };
        assert_eq!(d.quantile(0.0), Duration::from_millis(10));
        assert_eq!(d.quantile(0.5), Duration::from_millis(20));
        assert_eq!(d.quantile(0.7), Duration::from_millis(40));
        assert_eq!(d.quantile(1.0), Duration::from_millis(200));
        assert_eq!(storage_class("storage.objects.get"), Some("storage.read"));
        assert_eq!(storage_class("storage.objects.list"), Some("storage.list"));
        assert_eq!(
            storage_class("storage.objects.insert"),
            Some("storage.write")
        );
        assert_eq!(
            storage_class("storage.objects.delete"),
            Some("storage.delete")
        );
        assert_eq!(storage_class("run.jobs.get"), None);
        let mut p = LatencyProfile::none();
        p.latency.insert("storage.read".into(), d.clone());
        p.latency.insert(ADMIN_CALL.into(), d.clone());
        let mut fast = d.clone();
        fast.p50_ms = 15.0;
        p.latency.insert("storage.objects.get".into(), fast);
        assert_eq!(p.call("storage.objects.get").unwrap().p50_ms, 15.0);
        assert_eq!(p.call("storage.buckets.get").unwrap().p50_ms, 20.0);
        assert_eq!(p.call("run.jobs.create").unwrap().p50_ms, 20.0);
        assert!(p.call("storage.objects.list").is_none());
    }

    #[test]
    fn samples_summarise_into_a_profile_that_round_trips() {
        let samples: Vec<f64> = (1..=101).map(f64::from).collect();
        let d = Dist::from_samples(&samples, "recorded").unwrap();
        assert_eq!(
            (d.min_ms, d.p50_ms, d.p90_ms, d.max_ms),
            (1.0, 51.0, 91.0, 101.0)
        );
        assert_eq!(d.samples, Some(101));
        let mut p = LatencyProfile::none();
        p.name = "rec".into();
        p.latency.insert("storage.objects.get".into(), d);
        let text = p.to_toml().unwrap();
        assert_eq!(LatencyProfile::parse(&text, "rec").unwrap(), p);
        assert!(Dist::from_samples(&[], "x").is_none());
    }
}
