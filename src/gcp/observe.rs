//! What a client observed of Google's APIs: per method, how long each call took (request sent
//! to response headers). `bench --record-profile` turns it into a latency profile
//! (`suites::profile`) that `emulator --profile FILE` replays.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::suites::profile::{Dist, LatencyProfile};

/// Calls whose time is the server waiting on purpose, not the call's latency.
const NOT_A_LATENCY: &[&str] = &["run.operations.wait"];

/// Per-method call durations, shared by every client that was given it.
#[derive(Debug, Clone, Default)]
pub struct CallRecorder {
    inner: Arc<Mutex<BTreeMap<String, Vec<f64>>>>,
}

impl CallRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one call of `method` (a method id such as `storage.objects.get`).
    pub fn record(&self, method: &str, took: Duration) {
        if NOT_A_LATENCY.contains(&method) {
            return;
        }
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method.to_string())
            .or_default()
            .push(took.as_secs_f64() * 1000.0);
    }

    /// Method id -> observed milliseconds.
    pub fn samples(&self) -> BTreeMap<String, Vec<f64>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The observations as a profile named `name`, each distribution's source saying
    /// `source` and how many calls it summarises.
    pub fn to_profile(&self, name: &str, source: &str) -> LatencyProfile {
        let mut p = LatencyProfile::none();
        p.name = name.to_string();
        p.description = format!("recorded: {source}");
        for (method, v) in self.samples() {
            if let Some(d) = Dist::from_samples(&v, &format!("recorded: {source}")) {
                p.latency.insert(method, d);
            }
        }
        p
    }
}

/// The Cloud Storage JSON API method id of a client operation name (`objects.get`).
pub fn storage_method(op: &str) -> String {
    match op {
        "objects.download" => "storage.objects.get".into(),
        other => format!("storage.{other}"),
    }
}

/// The Cloud Run Admin API v2 method id of a request (`POST v2/projects/p/locations/l/jobs`
/// is `run.jobs.create`), as the emulator names its endpoints.
pub fn run_method(method: &reqwest::Method, path: &str) -> String {
    let path = path.trim_start_matches('/');
    let (path, verb) = match path.rsplit_once(':') {
        Some((p, v)) if !v.contains('/') => (p, Some(v)),
        _ => (path, None),
    };
    let segs: Vec<&str> = path.split('/').collect();
    // v2 / projects / p / locations / l / <collection> / id / <collection> / id ...
    let rest = segs.get(5..).unwrap_or(&[]);
    let (collection, has_id) = match rest.len() {
        0 => ("", false),
        n if n % 2 == 1 => (rest[n - 1], false),
        n => (rest[n - 2], true),
    };
    let noun = match collection {
        "jobs" => "jobs",
        "executions" => "executions",
        "tasks" => "tasks",
        "operations" => "operations",
        _ => "other",
    };
    let action = match (verb, has_id, method.as_str()) {
        (Some(v), _, _) => v,
        (None, false, "POST") => "create",
        (None, false, _) => "list",
        (None, true, "DELETE") => "delete",
        (None, true, "PATCH") => "patch",
        (None, true, _) => "get",
    };
    format!("run.{noun}.{action}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;

    #[test]
    fn requests_map_to_the_method_ids_the_emulator_names() {
        let p = "v2/projects/p/locations/l";
        let cases = [
            (Method::POST, format!("{p}/jobs"), "run.jobs.create"),
            (Method::GET, format!("{p}/jobs"), "run.jobs.list"),
            (Method::GET, format!("{p}/jobs/j"), "run.jobs.get"),
            (Method::DELETE, format!("{p}/jobs/j"), "run.jobs.delete"),
            (Method::POST, format!("{p}/jobs/j:run"), "run.jobs.run"),
            (
                Method::GET,
                format!("{p}/jobs/j/executions"),
                "run.executions.list",
            ),
            (
                Method::GET,
                format!("{p}/jobs/j/executions/e"),
                "run.executions.get",
            ),
            (
                Method::POST,
                format!("{p}/jobs/j/executions/e:cancel"),
                "run.executions.cancel",
            ),
            (
                Method::GET,
                format!("{p}/jobs/j/executions/e/tasks/t"),
                "run.tasks.get",
            ),
            (
                Method::GET,
                format!("{p}/operations/o"),
                "run.operations.get",
            ),
            (
                Method::POST,
                format!("{p}/operations/o:wait"),
                "run.operations.wait",
            ),
        ];
        for (m, path, want) in cases {
            assert_eq!(run_method(&m, &path), want, "{m} {path}");
        }
        assert_eq!(storage_method("objects.download"), "storage.objects.get");
        assert_eq!(storage_method("objects.list"), "storage.objects.list");
    }

    #[test]
    fn recorded_calls_become_a_profile_without_server_side_waits() {
        let r = CallRecorder::new();
        for ms in [10, 20, 30] {
            r.record("storage.objects.get", Duration::from_millis(ms));
        }
        r.record("run.operations.wait", Duration::from_secs(5));
        let p = r.to_profile("rec", "test");
        assert_eq!(p.latency.len(), 1);
        let d = &p.latency["storage.objects.get"];
        assert_eq!((d.p50_ms, d.samples), (20.0, Some(3)));
        p.validate().unwrap();
    }
}
