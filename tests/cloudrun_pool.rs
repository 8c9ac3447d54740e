//! The Cloud Run warm pool and the phase probe on the embedded emulator: a created sandbox is
//! served by a pre-started execution (seen through the pool's counters and the Admin API, not
//! through time), the pool refills, and shutdown leaves no job or object behind; the probe
//! takes a cold start and a warm command apart and times creation from zero and from the pool.

use std::sync::Arc;
use std::time::Duration;

use sandbox_harness::backends::cloudrun::{CloudRunBackend, CloudRunConfig, LABEL, LABEL_POOL};
use sandbox_harness::bench::cloudrun_probe::CloudRunPhaseProbe;
use sandbox_harness::bench::phases::PhaseProbe;
use sandbox_harness::bench::{BackendContext, BackendReport};
use sandbox_harness::emulator::LocalCloud;
use sandbox_harness::gcp::observe::CallRecorder;
use sandbox_harness::gcp::storage::ListOptions;
use sandbox_harness::protocol::{Sandbox, StatefulExec};

/// How long a test waits for the pool to have a ready entry (a condition, not a timing).
const READY_WAIT: Duration = Duration::from_secs(180);

/// Shuts the emulator down even when a test panicked.
struct Guard(Arc<LocalCloud>);

impl Drop for Guard {
    fn drop(&mut self) {
        let local = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move { local.shutdown().await })
        })
        .join();
    }
}

async fn setup(pool_size: usize) -> (Arc<CloudRunBackend>, Guard) {
    setup_recorded(pool_size, None).await
}

async fn setup_recorded(
    pool_size: usize,
    recorder: Option<CallRecorder>,
) -> (Arc<CloudRunBackend>, Guard) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let local = Arc::new(LocalCloud::start().await.expect("emulator starts"));
    let cfg = CloudRunConfig {
        worker_idle_secs: 60,
        pool_size,
        ..CloudRunConfig::default()
    };
    let backend = Arc::new(
        CloudRunBackend::with_local_recorded(cfg, local.clone(), recorder)
            .await
            .expect("backend connects"),
    );
    (backend, Guard(local))
}

/// `bench --record-profile` times every call the Cloud Run clients make, the warm pool's too:
/// the pool starts while the backend connects, so the recorder must be in place by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_sees_the_warm_pools_calls() {
    let recorder = CallRecorder::new();
    let (backend, _guard) = setup_recorded(1, Some(recorder.clone())).await;
    let pool = backend.pool().expect("pool_size 1 starts a pool").clone();
    let s = pool.wait_ready(1, READY_WAIT).await;
    assert_eq!(s.ready, 1, "no ready entry: {s:?}");
    // Nothing but the pool has created a job or started an execution.
    let samples = recorder.samples();
    for method in ["run.jobs.create", "run.jobs.run"] {
        assert!(
            samples.get(method).is_some_and(|v| !v.is_empty()),
            "{method} not recorded: {:?}",
            samples.keys().collect::<Vec<_>>()
        );
    }
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_sandbox_is_served_by_a_pre_started_execution_and_the_pool_refills() {
    let (backend, _guard) = setup(1).await;
    let pool = backend.pool().expect("pool_size 1 starts a pool").clone();
    let s = pool.wait_ready(1, READY_WAIT).await;
    assert_eq!(s.ready, 1, "no ready entry: {s:?}");
    assert_eq!(s.executions_started, 1, "{s:?}");
    let entry = pool.ready_entries().remove(0);
    let run = backend.run_client();
    let job = run.get_job(&entry.job).await.unwrap();
    assert_eq!(job.labels.get(LABEL).map(String::as_str), Some("1"));
    assert_eq!(job.labels.get(LABEL_POOL).map(String::as_str), Some("1"));

    // `create` is `create_cloudrun` behind the trait; the concrete type shows the transport.
    let sb = backend.create_cloudrun().await.expect("create");
    assert_eq!(sb.id(), entry.id, "create claimed the ready entry");
    let s = pool.stats();
    assert_eq!((s.claimed, s.misses), (1, 0), "{s:?}");
    let r = sb
        .exec_stateful(StatefulExec::new("s", "echo hi", Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!((r.exit_code, &r.stdout[..]), (0, &b"hi\n"[..]));
    // The command ran on the execution the pool had started: the job has that one execution
    // and no other, it is still running, and its worker's heartbeat names it.
    let execs = run.list_executions(&entry.job, None, None).await.unwrap();
    let names: Vec<&str> = execs.executions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec![entry.execution.as_str()]);
    assert!(!execs.executions[0].is_done());
    let hb = sb
        .transport()
        .worker_heartbeat("test")
        .await
        .unwrap()
        .expect("a live worker");
    assert_eq!(hb.execution, entry.execution);

    // The pool refills with a new sandbox of its own.
    let s = pool.wait_ready(1, READY_WAIT).await;
    assert_eq!(s.ready, 1, "the pool did not refill: {s:?}");
    assert_eq!(s.executions_started, 2, "{s:?}");
    let refill = pool.ready_entries().remove(0);
    assert_ne!(refill.id, entry.id);

    // Destroying the claimed sandbox and shutting the pool down leaves nothing behind.
    sb.destroy().await.unwrap();
    backend.shutdown().await;
    let jobs = run.list_jobs(backend.parent(), None, None).await.unwrap();
    assert!(jobs.jobs.is_empty(), "jobs left: {:?}", jobs.jobs);
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
    let names: Vec<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    assert!(names.is_empty(), "objects left: {names:?}");
    assert_eq!(pool.stats().ready, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_takes_a_cold_start_and_a_warm_command_apart() {
    let (backend, _guard) = setup(1).await;
    let probe = CloudRunPhaseProbe::new(backend.clone());
    let report = probe.probe(1).await.expect("probe");
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let cold = report.cold_start.as_ref().expect("cold start breakdown");
    let names: Vec<&str> = cold.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "job create",
            "image import / execution scheduled",
            "resources",
            "container start",
            "first answer"
        ],
        "{cold:#?}"
    );
    // The execution phases come from the Admin API and the worker, not the client.
    assert_eq!(cold.phases[1].source, "client -> Admin API");
    assert_eq!(cold.phases[2].source, "Admin API");
    assert_eq!(cold.phases[3].source, "Admin API -> worker");
    let sum: f64 = cold.phases.iter().map(|p| p.seconds).sum();
    assert!((sum - cold.total_seconds).abs() < 1e-6, "{cold:#?}");
    assert!(cold.total_seconds > 0.0);

    let warm = report
        .warm_command
        .as_ref()
        .expect("warm command breakdown");
    let names: Vec<&str> = warm.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "client upload of request",
            "worker pickup",
            "run",
            "answer write",
            "client fetch"
        ],
        "{warm:#?}"
    );
    assert_eq!(warm.phases[2].source, "worker");
    assert_eq!(warm.phases[3].source, "worker -> Cloud Storage");
    let sum: f64 = warm.phases.iter().map(|p| p.seconds).sum();
    assert!((sum - warm.total_seconds).abs() < 1e-6, "{warm:#?}");

    let from: Vec<(&str, usize)> = report
        .creation
        .iter()
        .map(|c| (c.from.as_str(), c.samples_seconds.len()))
        .collect();
    assert_eq!(from, vec![("from zero", 1), ("from the warm pool", 1)]);
    let d = report.deployment.as_ref().expect("deployment recorded");
    assert_eq!(d.pool_size, 1);
    assert_eq!(d.poll_min_ms, backend.config().poll_min_ms);

    // Every report format carries it.
    let b = BackendReport::from_samples(
        BackendContext {
            name: "cloudrun".into(),
            backend: "cloudrun".into(),
            phases: Some(report.clone()),
            ..Default::default()
        },
        Vec::new(),
    );
    let json = serde_json::to_string(&b).unwrap();
    let back: BackendReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.phases.as_ref(), Some(&report));
    let md = sandbox_harness::report::markdown::phases_section(&[&b]);
    for want in [
        "worker pickup",
        "container start",
        "from the warm pool",
        "Admin API",
    ] {
        assert!(md.contains(want), "{want:?} missing from:\n{md}");
    }
    backend.shutdown().await;
}
