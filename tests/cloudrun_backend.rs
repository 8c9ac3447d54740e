//! The Cloud Run Jobs backend end to end on the embedded emulator: jobs, worker executions,
//! bucket state, workspace transfers, re-attach and cleanup.

use std::sync::Arc;
use std::time::Duration;

use sandbox_harness::backends::cloudrun::{CloudRunBackend, CloudRunConfig};
use sandbox_harness::emulator::LocalCloud;
use sandbox_harness::protocol::{
    ErrorKind, ReadOptions, Sandbox, SandboxBackend, StatefulExec, UploadBody, WriteOptions,
};

struct Guard(Option<Arc<dyn Sandbox>>, Arc<LocalCloud>);

impl Drop for Guard {
    fn drop(&mut self) {
        let sb = self.0.take();
        let local = self.1.clone();
        // Destroy on a fresh runtime so cleanup happens even when the test panicked.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    if let Some(sb) = sb {
                        let _ = sb.destroy().await;
                    }
                    local.shutdown().await;
                })
        })
        .join();
    }
}

async fn setup() -> (Arc<CloudRunBackend>, Guard) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let local = Arc::new(LocalCloud::start().await.expect("emulator starts"));
    let cfg = CloudRunConfig {
        worker_idle_secs: 30,
        ..CloudRunConfig::default()
    };
    let backend = Arc::new(
        CloudRunBackend::with_local(cfg, local.clone())
            .await
            .expect("backend connects"),
    );
    (backend, Guard(None, local))
}

fn run(session: &str, cmd: &str) -> StatefulExec {
    StatefulExec::new(session, cmd, Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_state_files_and_cleanup() {
    let (backend, mut guard) = setup().await;
    assert!(backend.is_emulated());
    let sb = backend.create().await.expect("create");
    guard.0 = Some(sb.clone());
    let id = sb.id().to_string();

    let r = sb
        .exec_stateful(run("s", "echo hello; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(
        (r.exit_code, &r.stdout[..], &r.stderr[..]),
        (3, &b"hello\n"[..], &b"err\n"[..])
    );

    let r = sb
        .exec_stateful(run("s", "mkdir -p d && cd d && export A='x y'"))
        .await
        .unwrap();
    assert_eq!(r.cwd, "/workspace/d");
    let r = sb
        .exec_stateful(run("s", r#"echo "$A"; pwd"#))
        .await
        .unwrap();
    assert_eq!(r.stdout, b"x y\n/workspace/d\n");

    // A file written by a command is an object; an object written through the API is a file.
    sb.exec_stateful(run("s", "printf 'a\\0b' > f.bin"))
        .await
        .unwrap();
    let c = sb
        .file_read("s", "/workspace/d/f.bin", ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(c.content, b"a\0b");
    sb.file_write("s", "g.txt", b"one\ntwo\n", WriteOptions::default())
        .await
        .unwrap();
    let r = sb.exec_stateful(run("s", "cat g.txt")).await.unwrap();
    assert_eq!(r.stdout, b"one\ntwo\n");

    // Workspace transfers go straight to the bucket, and outside it through the worker.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let n = sb
        .file_upload(
            "s",
            "/workspace/big.bin",
            UploadBody::from_bytes(data.clone()),
        )
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    let r = sb
        .exec_stateful(run("s", "wc -c < /workspace/big.bin"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        data.len().to_string()
    );
    let down = sandbox_harness::backends::docker::collect_stream(
        sb.file_download("s", "/tmp/../workspace/big.bin")
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(down, data);
    sb.file_upload("s", "/tmp/x.txt", UploadBody::from_bytes(&b"outside"[..]))
        .await
        .unwrap();
    let down = sandbox_harness::backends::docker::collect_stream(
        sb.file_download("s", "/tmp/x.txt").await.unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(down, b"outside");
    let err = match sb.file_download("s", "/workspace/nope").await {
        Err(e) => e,
        Ok(_) => panic!("download of a missing file succeeded"),
    };
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Re-attach by id keeps the session.
    let again = backend.get(&id).await.expect("re-attach");
    let r = again.exec_stateful(run("s", "pwd; echo $A")).await.unwrap();
    assert_eq!(r.stdout, b"/workspace/d\nx y\n");

    // Browser members are unsupported on Cloud Run Jobs.
    assert!(!sb.supports_browser());
    assert_eq!(sb.cdp_url(), "");
    assert_eq!(
        sb.get_browser().await.unwrap_err().kind(),
        ErrorKind::Unsupported
    );

    // Destroy removes the job and every object of the sandbox; twice is fine.
    sb.destroy().await.unwrap();
    sb.destroy().await.unwrap();
    assert_eq!(
        backend.get(&id).await.err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    let (objects, _) = backend
        .storage()
        .list_all(
            &backend.config().bucket,
            &sandbox_harness::gcp::storage::ListOptions {
                prefix: Some(format!("sessions/{id}/")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        objects.is_empty(),
        "objects left: {:?}",
        objects.iter().map(|o| &o.name).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_background_logs_outlive_the_worker_and_live_ones_die_with_it() {
    let (backend, mut guard) = setup().await;
    let sb = backend.create().await.expect("create");
    guard.0 = Some(sb.clone());
    let done = sb
        .exec_stateful(run("b", "echo finished-output; echo err >&2 &"))
        .await
        .unwrap()
        .background_pid
        .expect("a pid");
    let live = sb
        .exec_stateful(run("b", "echo still-running; sleep 300 &"))
        .await
        .unwrap()
        .background_pid
        .expect("a pid");
    // Wait for the first job to finish (its record then reaches the state volume).
    let t = std::time::Instant::now();
    loop {
        let l = sb.list_background_processes(Some("b")).await.unwrap();
        if l.iter().any(|p| p.pid == done && !p.running) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{l:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The worker goes away; a new one serves the next call.
    let job = format!("{}/jobs/sandbox-{}", backend.parent(), sb.id());
    let execs = backend
        .run_client()
        .list_executions(&job, None, None)
        .await
        .unwrap();
    for e in execs.executions.iter().filter(|e| !e.is_done()) {
        backend
            .run_client()
            .cancel_execution(&e.name)
            .await
            .unwrap();
        while !backend
            .run_client()
            .get_execution(&e.name)
            .await
            .unwrap()
            .is_done()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let l = sb.list_background_processes(Some("b")).await.unwrap();
    let finished = l
        .iter()
        .find(|p| p.pid == done)
        .expect("the finished job is listed");
    assert!(!finished.running);
    assert_eq!(
        sb.get_background_logs(done).await.unwrap(),
        b"finished-output\nerr\n"
    );
    // The job that was running died with its worker: it is not reported as running.
    assert!(
        l.iter().all(|p| !(p.pid == live && p.running)),
        "a process of a dead worker is reported running: {l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_outlives_its_worker_for_a_client_that_reattaches() {
    let (backend, mut guard) = setup().await;
    let sb = backend.create().await.expect("create");
    guard.0 = Some(sb.clone());
    sb.exec_stateful(run(
        "keep",
        "mkdir -p /workspace/k && cd /workspace/k && export KEPT='x y'",
    ))
    .await
    .unwrap();
    // Several quick commands on one session: each writes the session's state locally, and the
    // worker mirrors it to the bucket at most every 2 s (one object, one write a second).
    for i in 0..6 {
        let r = sb
            .exec_stateful(run("keep", &format!("export N={i}")))
            .await
            .unwrap();
        assert_eq!(r.exit_code, 0);
    }
    let job = format!("{}/jobs/sandbox-{}", backend.parent(), sb.id());
    // Let the mirror take its round, then stop the worker cleanly by cancelling it only after
    // the mirrored object shows the last state.
    let state_object = format!("sessions/{}/harness/sessions/keep.state", sb.id());
    let t = std::time::Instant::now();
    loop {
        if let Ok(d) = backend
            .storage()
            .download(&backend.config().bucket, &state_object, None)
            .await
        {
            let body = d.collect().await.unwrap();
            if String::from_utf8_lossy(&body).contains("N=5")
                || String::from_utf8_lossy(&body).contains("'5'")
            {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "state never mirrored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for e in backend
        .run_client()
        .list_executions(&job, None, None)
        .await
        .unwrap()
        .executions
        .iter()
        .filter(|e| !e.is_done())
    {
        backend
            .run_client()
            .cancel_execution(&e.name)
            .await
            .unwrap();
    }
    // A new client (as another harness process would) finds the session where it was.
    let again = backend.get(sb.id()).await.expect("re-attach");
    let r = again
        .exec_stateful(run("keep", r#"pwd; echo "$KEPT $N""#))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "/workspace/k\nx y 5\n");
}

/// Google's job operations reconcile for a while: `operations.get` answers `done: false` and
/// `operations.wait` may return before the operation is done
/// (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.operations/wait).
/// Creation and destruction poll until done; a create whose answer is lost (503 after the job
/// was written) is retried by the client, meets its own job (409) and counts as created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_operations_are_polled_until_done_and_a_lost_create_answer_is_not_a_failure() {
    use sandbox_harness::emulator::run::JobOperations;
    let (backend, mut guard) = setup().await;
    let run_state = guard.1.run_state().clone();
    run_state.set_job_operations(JobOperations {
        pending_reads: 3,
        lost_create_responses: 1,
        ..JobOperations::default()
    });
    let sb = backend
        .create()
        .await
        .expect("create despite a lost answer");
    guard.0 = Some(sb.clone());
    let counts = run_state.job_operation_counts();
    assert_eq!(counts.lost_responses, 1, "{counts:?}");
    // The lost create's operation was never seen; the job was read back instead.
    let r = sb.exec_stateful(run("s", "echo up")).await.unwrap();
    assert_eq!(r.stdout, b"up\n");
    run_state.set_job_operations(JobOperations {
        pending_reads: 3,
        ..JobOperations::default()
    });
    let before = run_state.job_operation_counts().pending_answers;
    sb.destroy()
        .await
        .expect("destroy polls the deletion until done");
    guard.0 = None;
    let counts = run_state.job_operation_counts();
    assert_eq!(
        counts.pending_answers - before,
        3,
        "the deletion was answered 3 times not done (its first answer included), then done: \
         {counts:?}"
    );
    assert!(backend.get(sb.id()).await.is_err(), "the job is gone");
}

/// A job operation that ends with an `error`
/// (https://cloud.google.com/run/docs/reference/rest/Shared.Types/Operation) fails the create
/// with the operation's message and class, after polling past its not-done answers; the job
/// it left behind (failed Ready condition) is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_operation_fails_the_create() {
    use sandbox_harness::emulator::run::JobOperations;
    use sandbox_harness::gcp::run::Status;
    let (backend, _guard) = setup().await;
    let run_state = _guard.1.run_state().clone();
    run_state.set_job_operations(JobOperations {
        pending_reads: 2,
        failing: 1,
        error: Status {
            code: 7,
            message: "Permission 'iam.serviceaccounts.actAs' denied on service account".into(),
        },
        ..JobOperations::default()
    });
    let err = match backend.create().await {
        Ok(sb) => {
            let _ = sb.destroy().await;
            panic!("a failed job operation must fail the create");
        }
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Permission, "{err}");
    assert!(err.to_string().contains("actAs"), "{err}");
    let counts = run_state.job_operation_counts();
    // Two not-done answers for the create (its first answer included), two for the deletion
    // of the job it left behind.
    assert_eq!(
        (counts.failed, counts.pending_answers),
        (1, 4),
        "{counts:?}"
    );
    let jobs = backend
        .run_client()
        .list_jobs(backend.parent(), None, None)
        .await
        .unwrap();
    assert!(jobs.jobs.is_empty(), "the failed job was removed: {jobs:?}");
}

/// A job whose Ready terminal condition failed is not used, even when its operation (as the
/// client saw it) carried no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_failed_terminal_condition_is_refused() {
    use sandbox_harness::gcp::run::RunError;
    let (backend, _guard) = setup().await;
    let run = backend.run_client();
    // A job the emulator marks failed (through a failing operation), read by wait_job_ready.
    _guard
        .1
        .run_state()
        .set_job_operations(sandbox_harness::emulator::run::JobOperations {
            failing: 1,
            error: sandbox_harness::gcp::run::Status {
                code: 9,
                message: "image not found".into(),
            },
            ..Default::default()
        });
    let spec = backend.job_spec("tc0000000000000000aa");
    let name = format!("{}/jobs/sandbox-tc0000000000000000aa", backend.parent());
    let op = run
        .create_job(backend.parent(), "sandbox-tc0000000000000000aa", &spec)
        .await
        .expect("create answered");
    assert!(op.done && op.error.is_some(), "{op:?}");
    let err = run
        .wait_job_ready(&name, std::time::Instant::now() + Duration::from_secs(5))
        .await
        .expect_err("a failed Ready condition is an error");
    assert!(
        matches!(&err, RunError::NotReady { message, .. } if message.contains("image not found")),
        "{err}"
    );
    let _ = run.delete_job(&name).await;
}

/// The origin of the figures follows the endpoints: the embedded twin is SIMULATED with its
/// profile, the same emulator reached through loopback endpoints is a standalone emulator
/// even with a project set, and a mix of emulator and Google endpoints is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_follows_the_endpoints_and_mixed_endpoints_are_refused() {
    let (backend, guard) = setup().await;
    let twin = backend.origin();
    assert!(
        twin.statement()
            .starts_with("SIMULATED: Cloud Run twin, profile none"),
        "{}",
        twin.statement()
    );
    let base = guard.1.base_url();
    let standalone = CloudRunBackend::connect(CloudRunConfig {
        project: Some("looks-real".into()),
        run_endpoint: Some(base.clone()),
        storage_endpoint: Some(base.clone()),
        executor_image: Some("sandbox-harness/executor:any".into()),
        ..CloudRunConfig::default()
    })
    .await
    .expect("connects to the standalone emulator");
    let o = standalone.origin();
    assert!(o.is_emulated() && !o.is_real_gcp(), "{o:?}");
    assert!(o.statement().contains("EMULATOR"), "{}", o.statement());
    assert!(o.statement().contains(&base), "{}", o.statement());
    let err = match CloudRunBackend::connect(CloudRunConfig {
        project: Some("p".into()),
        storage_endpoint: Some(base.clone()),
        executor_image: Some("sandbox-harness/executor:any".into()),
        ..CloudRunConfig::default()
    })
    .await
    {
        Ok(_) => panic!("a mix of emulator and Google endpoints must be refused"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string().contains("mixes emulator endpoints"),
        "{err}"
    );
}
