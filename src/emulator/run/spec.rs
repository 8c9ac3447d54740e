//! Validation of job templates and their translation into what a container needs: limits,
//! mounts, environment, with RunJobRequest overrides applied.

use std::time::Duration;

use crate::emulator::gcsfuse::options::{MountOptions, check_mount_path};
use crate::gcp::run::{
    ContainerOverride, EnvVar, ExecutionTemplate, Overrides, TaskTemplate, parse_duration,
};

/// Default per-attempt timeout of Cloud Run jobs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default retries per task of Cloud Run jobs.
pub const DEFAULT_MAX_RETRIES: i32 = 3;
/// Upper bound on tasks per execution (the real limit is 10000).
pub const MAX_TASK_COUNT: i32 = 10_000;

/// Parses a CPU quantity ("1", "2", "1000m", "0.5") into nano-CPUs.
pub fn parse_cpu(s: &str) -> Option<i64> {
    let s = s.trim();
    let nanos = if let Some(m) = s.strip_suffix('m') {
        m.parse::<f64>().ok()? * 1e6
    } else {
        s.parse::<f64>().ok()? * 1e9
    };
    (nanos.is_finite() && nanos > 0.0 && nanos < 1e15).then_some(nanos as i64)
}

/// Parses a memory quantity ("512Mi", "2Gi", "1G", "100M", "1024") into bytes.
pub fn parse_memory(s: &str) -> Option<i64> {
    let s = s.trim();
    const UNITS: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (num, mul) = UNITS
        .iter()
        .find_map(|(u, m)| s.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((s, 1.0));
    let v = num.parse::<f64>().ok()? * mul;
    (v.is_finite() && v > 0.0 && v < 1e16).then_some(v as i64)
}

/// Checks a job or execution id: lowercase letter first, then [-a-z0-9], no trailing '-',
/// at most 63 characters.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !id.ends_with('-')
}

/// Validates an execution template as the emulator can run it; the error is a 400 message.
pub fn validate(t: &ExecutionTemplate) -> Result<(), String> {
    if let Some(n) = t.task_count
        && !(1..=MAX_TASK_COUNT).contains(&n)
    {
        return Err(format!(
            "template.taskCount must be in 1..={MAX_TASK_COUNT}, got {n}"
        ));
    }
    if let Some(p) = t.parallelism
        && p < 0
    {
        return Err(format!(
            "template.parallelism must not be negative, got {p}"
        ));
    }
    validate_task(&t.template)
}

fn validate_task(t: &TaskTemplate) -> Result<(), String> {
    match t.containers.len() {
        0 => return Err("template.template.containers: exactly one container is required".into()),
        1 => {}
        n => {
            return Err(format!(
                "template.template.containers: the emulator runs one container per task, got {n} (sidecars are not built)"
            ));
        }
    }
    if let Some(r) = t.max_retries
        && !(0..=10).contains(&r)
    {
        return Err(format!(
            "template.template.maxRetries must be in 0..=10, got {r}"
        ));
    }
    if let Some(s) = &t.timeout {
        parse_duration(s)
            .ok_or_else(|| format!("template.template.timeout: bad duration {s:?}"))?;
    }
    for v in &t.volumes {
        if v.name.is_empty() {
            return Err("volumes[].name is required".into());
        }
        match (&v.gcs, &v.empty_dir) {
            (Some(g), None) => {
                if g.bucket.is_empty() {
                    return Err(format!("volume {}: gcs.bucket is required", v.name));
                }
                MountOptions::parse(&g.mount_options)
                    .map_err(|e| format!("volume {}: {e}", v.name))?;
            }
            (None, Some(e)) => {
                if let Some(sz) = &e.size_limit {
                    parse_memory(sz).ok_or_else(|| {
                        format!("volume {}: bad emptyDir.sizeLimit {sz:?}", v.name)
                    })?;
                }
            }
            _ => {
                return Err(format!(
                    "volume {}: exactly one of gcs or emptyDir is required (other volume kinds are not built)",
                    v.name
                ));
            }
        }
    }
    let c = &t.containers[0];
    if c.image.trim().is_empty() {
        return Err("containers[0].image is required".into());
    }
    if let Some(r) = &c.resources {
        for (k, v) in &r.limits {
            match k.as_str() {
                "cpu" => {
                    parse_cpu(v)
                        .ok_or_else(|| format!("resources.limits.cpu: bad quantity {v:?}"))?;
                }
                "memory" => {
                    parse_memory(v)
                        .ok_or_else(|| format!("resources.limits.memory: bad quantity {v:?}"))?;
                }
                _ => {}
            }
        }
    }
    for m in &c.volume_mounts {
        if !t.volumes.iter().any(|v| v.name == m.name) {
            return Err(format!("volumeMounts: no volume named {:?}", m.name));
        }
        if !m.mount_path.starts_with('/') {
            return Err(format!(
                "volumeMounts: mountPath {:?} is not absolute",
                m.mount_path
            ));
        }
        check_mount_path(&m.mount_path)?;
    }
    for e in &c.env {
        if e.name.is_empty() || e.name.contains('=') {
            return Err(format!("env: bad variable name {:?}", e.name));
        }
    }
    Ok(())
}

/// Applies RunJobRequest overrides to a job's execution template; the error is a 400 message.
pub fn apply_overrides(
    t: &ExecutionTemplate,
    o: Option<&Overrides>,
) -> Result<ExecutionTemplate, String> {
    let mut t = t.clone();
    let Some(o) = o else { return Ok(t) };
    if let Some(n) = o.task_count {
        t.task_count = Some(n);
    }
    if let Some(to) = &o.timeout {
        t.template.timeout = Some(to.clone());
    }
    for co in &o.container_overrides {
        let c = if co.name.is_empty() {
            t.template.containers.first_mut()
        } else {
            t.template
                .containers
                .iter_mut()
                .find(|c| c.name.as_deref() == Some(co.name.as_str()))
        };
        let Some(c) = c else {
            return Err(format!(
                "containerOverrides: no container named {:?}",
                co.name
            ));
        };
        override_container(&mut c.args, &mut c.env, co);
    }
    validate(&t)?;
    Ok(t)
}

fn override_container(args: &mut Vec<String>, env: &mut Vec<EnvVar>, co: &ContainerOverride) {
    if co.clear_args {
        args.clear();
    } else if !co.args.is_empty() {
        *args = co.args.clone();
    }
    for e in &co.env {
        match env.iter_mut().find(|x| x.name == e.name) {
            Some(x) => x.value = e.value.clone(),
            None => env.push(e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcp::run::Container;

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu("1"), Some(1_000_000_000));
        assert_eq!(parse_cpu("1000m"), Some(1_000_000_000));
        assert_eq!(parse_cpu("0.5"), Some(500_000_000));
        assert_eq!(parse_cpu("x"), None);
        assert_eq!(parse_memory("512Mi"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("2Gi"), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("-1Mi"), None);
    }

    #[test]
    fn ids() {
        assert!(valid_id("job-1"));
        assert!(!valid_id("Job"));
        assert!(!valid_id("1job"));
        assert!(!valid_id("job-"));
    }

    #[test]
    fn overrides_replace_clear_and_merge() {
        let mut t = ExecutionTemplate::default();
        t.template.containers.push(Container {
            image: "i".into(),
            args: vec!["a".into()],
            env: vec![EnvVar::new("A", "1")],
            ..Default::default()
        });
        let o = Overrides {
            container_overrides: vec![ContainerOverride {
                args: vec!["b".into()],
                env: vec![EnvVar::new("A", "2"), EnvVar::new("B", "3")],
                ..Default::default()
            }],
            task_count: Some(2),
            timeout: Some("5s".into()),
        };
        let r = apply_overrides(&t, Some(&o)).unwrap();
        assert_eq!(r.template.containers[0].args, vec!["b"]);
        assert_eq!(r.template.containers[0].env.len(), 2);
        assert_eq!(r.template.containers[0].env[0].value.as_deref(), Some("2"));
        assert_eq!(r.task_count, Some(2));
        let clear = Overrides {
            container_overrides: vec![ContainerOverride {
                clear_args: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(
            apply_overrides(&t, Some(&clear))
                .unwrap()
                .template
                .containers[0]
                .args
                .is_empty()
        );
        let bad = Overrides {
            task_count: Some(0),
            ..Default::default()
        };
        assert!(apply_overrides(&t, Some(&bad)).is_err());
    }
}
