//! Load: N concurrent sessions (RELIABILITY_SESSIONS, default 8) run a mixed workload for a
//! bounded time (RELIABILITY_SECS, default 8 per backend) on Docker and on Cloud Run (emulator).
//! Counts operations and p99 latency, checks that no session sees another's env, cwd or files,
//! and that nothing labelled is left afterwards. Figures only; no timed assertions.

#[path = "reliability_common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_harness::gcp::storage::ListOptions;
use sandbox_harness::protocol::{ReadOptions, Sandbox, SandboxBackend, WriteOptions};
use sandbox_harness::suites::faults::FaultConfig;

use common::{Cleanup, cloud_backend, cmd, docker_backend};

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// What a load run measured and checked.
struct Load {
    /// Latency of every operation.
    lat: Vec<Duration>,
    /// State checks made (each one asserted: a leak or a loss panics the session).
    checks: u64,
}

impl Load {
    /// "p50 X, p99 Y" from the samples; below 100 samples the top figure is the max of n.
    fn summary(&self) -> String {
        let mut l = self.lat.clone();
        l.sort();
        let at = |q: f64| {
            l[((l.len() as f64 * q).ceil() as usize)
                .saturating_sub(1)
                .min(l.len() - 1)]
        };
        if l.len() >= 100 {
            format!("p50 {:?}, p99 {:?}", at(0.5), at(0.99))
        } else {
            format!("p50 {:?}, max of {} {:?}", at(0.5), l.len(), l[l.len() - 1])
        }
    }
}

/// Runs the workload. Any leak or lost state panics the session; checks are counted.
async fn drive(sandboxes: &[Arc<dyn Sandbox>], sessions: usize, secs: u64) -> Load {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let sb = sandboxes[i % sandboxes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let s = format!("sess{i}");
            let dir = format!("/workspace/load-{i}");
            let mut lat = Vec::new();
            let mut checks = 0u64;
            let mut time = |t: Instant| lat.push(t.elapsed());
            let t = Instant::now();
            let r = sb
                .exec_stateful(cmd(
                    &s,
                    &format!("mkdir -p {dir} && cd {dir} && export MARK=m{i}"),
                ))
                .await
                .unwrap();
            assert_eq!(r.exit_code, 0);
            time(t);
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let body = format!("s{i}-n{n}\n");
                let t = Instant::now();
                sb.file_write(&s, "own.txt", body.as_bytes(), WriteOptions::default())
                    .await
                    .unwrap();
                time(t);
                let t = Instant::now();
                let c = sb
                    .file_read(&s, &format!("{dir}/own.txt"), ReadOptions::default())
                    .await
                    .unwrap();
                time(t);
                assert_eq!(
                    c.content,
                    body.as_bytes(),
                    "session {i} read another's file"
                );
                checks += 1;
                let t = Instant::now();
                let r = sb
                    .exec_stateful(cmd(&s, "pwd; echo $MARK; cat own.txt; echo x >> log"))
                    .await
                    .unwrap();
                time(t);
                assert_eq!(
                    String::from_utf8_lossy(&r.stdout),
                    format!("{dir}\nm{i}\n{body}"),
                    "session {i} state leaked or lost"
                );
                checks += 1;
            }
            let r = sb.exec_stateful(cmd(&s, "wc -l < log")).await.unwrap();
            assert_eq!(
                String::from_utf8_lossy(&r.stdout).trim(),
                n.to_string(),
                "session {i}: appends lost or duplicated"
            );
            (lat, checks + 1)
        }));
    }
    let mut load = Load {
        lat: Vec::new(),
        checks: 0,
    };
    for t in tasks {
        let (lat, checks) = t.await.expect("session task");
        load.lat.extend(lat);
        load.checks += checks;
    }
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_concurrent_sessions() {
    let sessions = env_num("RELIABILITY_SESSIONS", 8) as usize;
    let secs = env_num("RELIABILITY_SECS", 8);
    let backend = docker_backend().await;
    let cleanup = Cleanup::default();
    let n_sb = sessions.div_ceil(2).max(1);
    let mut sbs = Vec::new();
    for _ in 0..n_sb {
        sbs.push(cleanup.add(backend.create().await.unwrap()));
    }
    let load = drive(&sbs, sessions, secs).await;
    let ids: Vec<String> = sbs.iter().map(|s| s.id().to_string()).collect();
    for sb in &sbs {
        sb.destroy().await.unwrap();
    }
    for id in &ids {
        assert!(backend.get(id).await.is_err(), "{id} still there");
    }
    let left = common_containers(backend.docker(), &ids).await;
    assert_eq!(left, 0, "containers left");
    println!(
        "docker load: {sessions} sessions on {n_sb} sandboxes x {secs} s: {} ops ({}), {} state checks all kept, containers left {left}",
        load.lat.len(),
        load.summary(),
        load.checks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_concurrent_sessions() {
    let sessions = env_num("RELIABILITY_SESSIONS", 8) as usize;
    let secs = env_num("RELIABILITY_SECS", 8);
    let cleanup = Cleanup::default();
    let backend = cloud_backend(FaultConfig::default(), &cleanup).await;
    let n_sb = sessions.div_ceil(4).max(1);
    let mut sbs = Vec::new();
    for _ in 0..n_sb {
        sbs.push(cleanup.add(backend.create().await.unwrap()));
    }
    let load = drive(&sbs, sessions, secs).await;
    let ids: Vec<String> = sbs.iter().map(|s| s.id().to_string()).collect();
    for sb in &sbs {
        sb.destroy().await.unwrap();
    }
    let jobs = backend
        .run_client()
        .list_jobs(backend.parent(), None, None)
        .await
        .unwrap();
    assert!(jobs.jobs.is_empty(), "jobs left: {:?}", jobs.jobs.len());
    let (objects, _) = backend
        .storage()
        .list_all(
            &backend.config().bucket,
            &ListOptions {
                prefix: Some("sessions/".into()),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(objects.is_empty(), "objects left: {}", objects.len());
    // Cancelled workers' containers go shortly after.
    let docker = sandbox_harness::backends::docker::connect().await.unwrap();
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = common_containers(&docker, &ids).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(left, 0, "worker containers left");
    println!(
        "cloudrun load: {sessions} sessions on {n_sb} sandboxes x {secs} s: {} ops ({}), {} state checks all kept, jobs, objects and containers left {left}",
        load.lat.len(),
        load.summary(),
        load.checks
    );
}

/// Labelled containers whose labels or names mention one of `ids`.
async fn common_containers(docker: &bollard::Docker, ids: &[String]) -> usize {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec!["sandbox-harness".to_string()],
    )]);
    docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            let labels = c.labels.clone().unwrap_or_default();
            let names = c.names.clone().unwrap_or_default();
            labels
                .values()
                .chain(names.iter())
                .any(|v| ids.iter().any(|id| v.contains(id.as_str())))
        })
        .count()
}
