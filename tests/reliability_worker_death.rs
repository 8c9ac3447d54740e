//! A Cloud Run command whose worker dies always returns: whatever kills the worker (cancel,
//! kill, execution timeout, a crash) and whatever the moment (before the request is claimed,
//! while it runs, while the answer is written), the command fails with a Backend error naming
//! the execution within a bound, the next command starts a new worker, and session state
//! survives.

#[path = "reliability_common.rs"]
mod common;

use std::time::{Duration, Instant};

use sandbox_harness::backends::cloudrun::{CloudRunBackend, CloudRunConfig};
use sandbox_harness::emulator::faults::kind;
use sandbox_harness::emulator::run::EXECUTION_LABEL;
use sandbox_harness::protocol::{ErrorKind, SandboxBackend, StatefulExec};
use sandbox_harness::suites::faults::{FaultConfig, WorkerCrash};

use common::{Cleanup, cmd};

/// The full name of the running worker execution of a Cloud Run sandbox.
async fn running_execution(backend: &CloudRunBackend, id: &str) -> Option<String> {
    let job = format!("{}/jobs/sandbox-{id}", backend.parent());
    let list = backend
        .run_client()
        .list_executions(&job, None, None)
        .await
        .ok()?;
    list.executions
        .into_iter()
        .find(|e| !e.is_done())
        .map(|e| e.name)
}

/// Cancels `exec` and waits until Cloud Run reports it finished.
async fn cancel_and_wait(backend: &CloudRunBackend, exec: &str) {
    backend
        .run_client()
        .cancel_execution(exec)
        .await
        .expect("cancel");
    wait_done(backend, exec, Duration::from_secs(60)).await;
}

/// Waits until Cloud Run reports `exec` finished; fails the test after `limit`.
async fn wait_done(backend: &CloudRunBackend, exec: &str, limit: Duration) {
    let t = Instant::now();
    while !backend
        .run_client()
        .get_execution(exec)
        .await
        .expect("get execution")
        .is_done()
    {
        assert!(t.elapsed() < limit, "{exec} never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills the one task container of execution `exec` (SIGKILL from the engine).
async fn kill_task_container(backend: &CloudRunBackend, exec: &str) {
    let docker = backend.local_cloud().expect("embedded emulator").docker();
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{EXECUTION_LABEL}={exec}")],
    )]);
    let list = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list task containers");
    assert_eq!(list.len(), 1, "one task container for {exec}");
    docker
        .kill_container(
            list[0].id.as_deref().expect("container id"),
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("kill the task container");
}

/// How a worker is made to die while a command waits on it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Death {
    /// The execution is cancelled through the Admin API while the command runs.
    CancelledWhileRunning,
    /// The task container is killed (SIGKILL from the engine) while the command runs.
    KilledWhileRunning,
    /// The task reaches its execution timeout while the command runs.
    TimeoutWhileRunning,
    /// The command stages a write on the workspace volume beyond the job's memory limit and
    /// the instance is killed for it: Cloud Storage FUSE stages written files in the
    /// instance's memory until close, and Cloud Run stops an instance past its limit
    /// (https://cloud.google.com/run/docs/configuring/jobs/cloud-storage-volume-mounts,
    /// "Memory requirements"; https://cloud.google.com/run/docs/configuring/jobs/memory-limits).
    OutOfMemoryWhileRunning,
    /// The worker crashes when the request shows up, before claiming it.
    CrashBeforeClaim,
    /// The worker runs the request, then crashes before its answer is in place.
    CrashWhileAnswering,
}

/// Sets up session state, kills the worker at the moment `death` names while a command waits,
/// and checks: the command returns a Backend error naming the dead execution within a bound,
/// the next command starts a new worker, and the session's cwd and env survived.
async fn worker_death(death: Death) {
    let cleanup = Cleanup::default();
    let crash = match death {
        Death::CrashBeforeClaim => Some(WorkerCrash::BeforeClaim),
        Death::CrashWhileAnswering => Some(WorkerCrash::BeforeAnswer),
        _ => None,
    };
    let faults = FaultConfig {
        worker_crash: crash,
        worker_crash_count: 1,
        // The first worker sets the session up; the second one is armed.
        worker_crash_skip: 1,
        ..FaultConfig::default()
    };
    let cfg = if death == Death::TimeoutWhileRunning {
        CloudRunConfig {
            task_timeout_secs: 20,
            worker_idle_secs: 10,
            ..CloudRunConfig::default()
        }
    } else {
        CloudRunConfig {
            worker_idle_secs: 60,
            ..CloudRunConfig::default()
        }
    };
    let backend = common::cloud_backend_with(faults, cfg, &cleanup).await;
    let sb = cleanup.add(backend.create().await.expect("create"));
    sb.exec_stateful(cmd(
        "s",
        "mkdir -p /workspace/w && cd /workspace/w && export W='a b'",
    ))
    .await
    .unwrap();
    let first = running_execution(&backend, sb.id())
        .await
        .expect("a worker runs");
    if crash.is_some() {
        // Retire the unarmed worker so the next command boots the armed one.
        cancel_and_wait(&backend, &first).await;
    }
    let command = match death {
        Death::CrashWhileAnswering => "echo ran >> /workspace/w/side-effect",
        // Twice the job's 512Mi, written in one open file so it is staged until close.
        Death::OutOfMemoryWhileRunning => {
            "touch /tmp/sleeping; head -c 1073741824 /dev/zero > /workspace/w/big; sleep 60"
        }
        _ => "touch /tmp/sleeping; sleep 60",
    };
    let runner = {
        let sb = sb.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = sb
                .exec_stateful(StatefulExec::new("s", command, Duration::from_secs(90)))
                .await;
            (r, t.elapsed())
        })
    };
    let victim = match death {
        Death::CancelledWhileRunning | Death::KilledWhileRunning => {
            // Wait until the worker has claimed the request and runs it.
            let t = Instant::now();
            loop {
                let r = sb
                    .exec_stateful(cmd(
                        "probe",
                        "test -e /tmp/sleeping && echo running || echo waiting",
                    ))
                    .await;
                if let Ok(o) = &r
                    && o.stdout == b"running\n"
                {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "sleep never started: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let exec = running_execution(&backend, sb.id()).await.expect("worker");
            assert_eq!(exec, first);
            if death == Death::CancelledWhileRunning {
                backend
                    .run_client()
                    .cancel_execution(&exec)
                    .await
                    .expect("cancel");
            } else {
                kill_task_container(&backend, &exec).await;
            }
            exec
        }
        Death::TimeoutWhileRunning => first.clone(),
        Death::OutOfMemoryWhileRunning => {
            // How long staging 512 MiB takes depends on the machine's load; the bound below
            // starts once Cloud Run has ended the execution.
            wait_done(&backend, &first, Duration::from_secs(300)).await;
            first.clone()
        }
        Death::CrashBeforeClaim | Death::CrashWhileAnswering => {
            // The armed worker may be gone already: look for any execution but the first.
            let job = format!("{}/jobs/sandbox-{}", backend.parent(), sb.id());
            let t = Instant::now();
            loop {
                let list = backend
                    .run_client()
                    .list_executions(&job, None, None)
                    .await
                    .expect("list executions");
                if let Some(e) = list.executions.into_iter().find(|e| e.name != first) {
                    break e.name;
                }
                assert!(t.elapsed() < Duration::from_secs(30), "no second worker");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Time allowed for the error: the fault itself (the timeout fires 20 s after the worker
    // started) plus detection, which asks Cloud Run about the execution about once a second.
    let bound = match death {
        Death::TimeoutWhileRunning => Duration::from_secs(60),
        _ => Duration::from_secs(20),
    };
    let (res, took) = tokio::time::timeout(bound, runner)
        .await
        .unwrap_or_else(|_| panic!("{death:?}: the command did not return within {bound:?}"))
        .expect("no panic");
    let err = res.expect_err("the command's worker died");
    println!("{death:?}: the command failed after {took:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::Backend, "{death:?}: {err:?}");
    let short = victim.rsplit('/').next().unwrap();
    assert!(
        err.to_string().contains(short),
        "{death:?}: the error names the execution {short}: {err}"
    );
    let claimed = death != Death::CrashBeforeClaim;
    assert_eq!(
        err.to_string().contains("it did not run"),
        !claimed,
        "{death:?}: the error says whether the request ran: {err}"
    );
    // The next command starts a new worker; cwd and env survived.
    let r = sb
        .exec_stateful(cmd(
            "s",
            r#"pwd; echo "$W"; cat side-effect 2>/dev/null; true"#,
        ))
        .await
        .unwrap();
    let mut want = vec!["/workspace/w", "a b"];
    if death == Death::CrashWhileAnswering {
        // The request ran before its worker crashed: its side effect is there.
        want.push("ran");
    }
    let got = String::from_utf8_lossy(&r.stdout).into_owned();
    let kept = got.lines().zip(&want).filter(|(g, w)| g == *w).count();
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        want,
        "{death:?}: state after the death"
    );
    let next = running_execution(&backend, sb.id())
        .await
        .expect("new worker");
    assert_ne!(next, victim);
    let counts = backend.local_cloud().expect("embedded").fault_counts();
    assert_eq!(
        counts.total(kind::WORKER_CRASH),
        u64::from(crash.is_some()),
        "{counts:?}"
    );
    println!(
        "{death:?}: command failed as {} in {took:?} (armed crashes counted by the emulator: {}); state checks kept {kept} of {}",
        err.kind(),
        counts.total(kind::WORKER_CRASH),
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_worker_cancelled_while_running() {
    worker_death(Death::CancelledWhileRunning).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_worker_killed_while_running() {
    worker_death(Death::KilledWhileRunning).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_worker_timeout_while_running() {
    worker_death(Death::TimeoutWhileRunning).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_worker_out_of_memory_while_running() {
    worker_death(Death::OutOfMemoryWhileRunning).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_worker_crashes_before_claiming() {
    worker_death(Death::CrashBeforeClaim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_worker_crashes_while_answering() {
    worker_death(Death::CrashWhileAnswering).await;
}
