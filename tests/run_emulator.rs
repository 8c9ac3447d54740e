//! The Cloud Run half of the emulator, driven through `gcp::run::RunClient` over real HTTP, with
//! executions as real containers of the default sandbox image.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use futures::FutureExt;
use sandbox_harness::emulator::gcsfuse::GcsFuse;
use sandbox_harness::emulator::run::{EXECUTION_LABEL, RunConfig, RunState, routes};
use sandbox_harness::emulator::{AuthMode, Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::retry::RetryPolicy;
use sandbox_harness::gcp::run::{
    Container, ContainerOverride, EmptyDirVolumeSource, EnvVar, Execution, GcsVolumeSource, Job,
    Operation, Overrides, ResourceRequirements, RunClient, Volume, VolumeMount,
};
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};
use sandbox_harness::suites::faults::FaultConfig;

const BUCKET: &str = "bkt";

/// One emulator (Cloud Run half + storage half, Cloud Storage volumes through the twin's
/// Cloud Storage FUSE) on 127.0.0.1:0 with bucket `bkt`; shuts down on drop.
struct Env {
    client: RunClient,
    /// A token the emulator issued, when it requires one.
    token: Option<String>,
    storage: StorageClient,
    state: Arc<RunState>,
    base: String,
    _emu: Emulator,
    parent: String,
    image: String,
    docker: Docker,
}

impl Drop for Env {
    fn drop(&mut self) {
        let state = self.state.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(state.shutdown());
        });
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 30,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        multiplier: 2.0,
        deadline: Duration::from_secs(30),
    }
}

async fn env_with(faults: FaultConfig, auth: bool) -> Env {
    let docker = Docker::connect_with_defaults().expect("docker client");
    let image = sandbox_harness::images::ensure_sandbox_image(&docker)
        .await
        .expect("sandbox image");
    let id = format!("test-{}", uuid::Uuid::new_v4());
    let mut cfg = RunConfig::new(docker.clone(), &id);
    cfg.faults = Arc::new(sandbox_harness::emulator::faults::FaultInjector::new(
        faults,
    ));
    let state = RunState::new(cfg).expect("state");
    let for_router = state.clone();
    let emu = Emulator::start_with(
        EmulatorConfig {
            check_docker: false,
            auth: if auth {
                AuthMode::Required
            } else {
                AuthMode::Off
            },
            ..Default::default()
        },
        move |_| routes(for_router),
    )
    .await
    .expect("emulator");
    let base = emu.base_url();
    // With auth required, the helpers (storage, volumes) use a token the emulator issued; the
    // Run client stays anonymous so a test can show the 401.
    let token = auth.then(|| emu.context().auth.issue().0);
    let source = match &token {
        Some(t) => TokenSource::Static(t.clone()),
        None => TokenSource::Anonymous,
    };
    let for_mounts = source.clone();
    let mounter = GcsFuse::new(
        &base,
        emu.clock(),
        Arc::new(move || for_mounts.clone()),
        &id[..13],
    )
    .expect("gcs volume mounter");
    state.set_gcs_volumes(Arc::new(mounter)).unwrap();
    let storage = StorageClient::new(&base, source)
        .unwrap()
        .with_retry(fast_retry());
    storage
        .insert_bucket(
            "test-proj",
            &BucketSpec {
                name: BUCKET.into(),
                ..Default::default()
            },
        )
        .await
        .expect("bucket");
    let client = RunClient::new(&base).unwrap().with_retry(fast_retry());
    Env {
        client,
        token,
        storage,
        state,
        base,
        _emu: emu,
        parent: "projects/test-proj/locations/us-central1".into(),
        image,
        docker,
    }
}

async fn env() -> Env {
    env_with(FaultConfig::default(), false).await
}

impl Env {
    /// The object `rel` as text (panics when missing).
    async fn get(&self, rel: &str) -> String {
        let d = self
            .storage
            .download(BUCKET, rel, None)
            .await
            .unwrap_or_else(|e| panic!("reading {rel}: {e}"));
        String::from_utf8(d.collect().await.unwrap().to_vec()).unwrap()
    }

    async fn exists(&self, rel: &str) -> bool {
        match self.storage.get_object(BUCKET, rel).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => panic!("stat {rel}: {e}"),
        }
    }

    async fn put(&self, rel: &str, data: &str) {
        self.storage
            .insert_object(
                BUCKET,
                rel,
                data.to_string().into(),
                &WriteOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("writing {rel}: {e}"));
    }

    /// A job running `sh -c script` with a Cloud Storage volume at /data (only-dir `sub`).
    fn job(&self, script: &str) -> Job {
        let mut job = Job::default();
        job.labels.insert("purpose".into(), "test".into());
        job.template.template.max_retries = Some(0);
        job.template.template.timeout = Some("60s".into());
        job.template.template.volumes = vec![Volume {
            name: "state".into(),
            gcs: Some(GcsVolumeSource {
                bucket: BUCKET.into(),
                read_only: false,
                mount_options: vec!["only-dir=sub".into()],
            }),
            empty_dir: None,
        }];
        job.template.template.containers = vec![Container {
            name: Some("main".into()),
            image: self.image.clone(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            resources: Some(ResourceRequirements {
                limits: BTreeMap::from([
                    ("cpu".into(), "1".into()),
                    ("memory".into(), "256Mi".into()),
                ]),
            }),
            volume_mounts: vec![VolumeMount {
                name: "state".into(),
                mount_path: "/data".into(),
            }],
            ..Default::default()
        }];
        job
    }

    async fn create(&self, id: &str, job: &Job) -> String {
        let op = self
            .client
            .create_job(&self.parent, id, job)
            .await
            .expect("create job");
        assert!(op.done);
        let created = op.job().expect("job in operation");
        assert_eq!(created.name, format!("{}/jobs/{id}", self.parent));
        created.name
    }

    async fn wait_done(&self, op: &Operation) -> Execution {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = self
                .client
                .wait_operation(&op.name, Duration::from_secs(30))
                .await
                .expect("wait operation");
            if got.done {
                return got.execution().expect("execution in response");
            }
            assert!(Instant::now() < deadline, "execution did not finish");
        }
    }

    async fn containers_of(&self, execution: &str) -> usize {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{EXECUTION_LABEL}={execution}")],
        )]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker.list_containers(Some(opts)).await.unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_create_get_list_delete_and_errors() {
    let env = env().await;
    let job = env.job("true");
    let a = env.create("job-a", &job).await;
    let b = env.create("job-b", &job).await;

    let got = env.client.get_job(&a).await.unwrap();
    assert_eq!(got.generation, Some(1));
    assert_eq!(got.labels.get("purpose").map(String::as_str), Some("test"));
    assert_eq!(got.execution_count, Some(0));
    assert_eq!(got.template.template.containers[0].image, env.image);
    assert_eq!(got.terminal_condition.unwrap().state, "CONDITION_SUCCEEDED");

    // int64 as string and RFC 3339 on the wire.
    let raw: serde_json::Value = reqwest::get(format!("{}/v2/{a}", env.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["generation"], "1");
    assert!(chrono::DateTime::parse_from_rfc3339(raw["createTime"].as_str().unwrap()).is_ok());

    let dup = env
        .client
        .create_job(&env.parent, "job-a", &job)
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(409));
    assert!(dup.to_string().contains("ALREADY_EXISTS"), "{dup}");

    let p1 = env
        .client
        .list_jobs(&env.parent, Some(1), None)
        .await
        .unwrap();
    assert_eq!(p1.jobs.len(), 1);
    assert_eq!(p1.jobs[0].name, a);
    let token = p1.next_page_token.expect("second page");
    let p2 = env
        .client
        .list_jobs(&env.parent, Some(1), Some(&token))
        .await
        .unwrap();
    assert_eq!(p2.jobs.len(), 1);
    assert_eq!(p2.jobs[0].name, b);
    assert!(p2.next_page_token.is_none());
    let other = env
        .client
        .list_jobs("projects/other/locations/us-central1", None, None)
        .await
        .unwrap();
    assert!(other.jobs.is_empty());

    let missing = format!("{}/jobs/nope", env.parent);
    let e = env.client.get_job(&missing).await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.kind(), sandbox_harness::protocol::ErrorKind::NotFound);
    assert!(
        env.client
            .run_job(&missing, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        env.client
            .get_operation(&format!("{}/operations/nope", env.parent))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        env.client
            .get_execution(&format!("{a}/executions/nope"))
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Bad input: a bad id, a template without containers, malformed JSON.
    let e = env
        .client
        .create_job(&env.parent, "Bad_Id", &job)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    let e = env
        .client
        .create_job(&env.parent, "empty", &Job::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    let resp = reqwest::Client::new()
        .post(format!("{}/v2/{}/jobs?jobId=x", env.base, env.parent))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["code"], 400);

    let op = env.client.delete_job(&a).await.unwrap();
    assert!(op.done);
    assert_eq!(op.job().unwrap().name, a);
    assert!(env.client.get_job(&a).await.unwrap_err().is_not_found());
    assert!(env.client.delete_job(&a).await.unwrap_err().is_not_found());
}

const ENV_SCRIPT: &str = r#"set -e
out=/data/out-$CLOUD_RUN_TASK_INDEX
printf '%s\n' "$CLOUD_RUN_JOB" "$CLOUD_RUN_EXECUTION" "$CLOUD_RUN_TASK_INDEX" "$CLOUD_RUN_TASK_ATTEMPT" "$CLOUD_RUN_TASK_COUNT" "$A" "$B" "$*" > "$out.tmp"
cat /data/pre.txt > /data/copy-$CLOUD_RUN_TASK_INDEX
mv "$out.tmp" "$out"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_overrides_sees_env_and_volume() {
    let env = env().await;
    env.put("sub/pre.txt", "from the bucket\n").await;
    let mut job = env.job(ENV_SCRIPT);
    job.template.template.containers[0].args = vec!["x".into(), "job-arg".into()];
    job.template.template.containers[0].env = vec![EnvVar::new("A", "1")];
    let name = env.create("envjob", &job).await;

    let overrides = Overrides {
        container_overrides: vec![ContainerOverride {
            name: "main".into(),
            args: vec!["x".into(), "over-1".into(), "over-2".into()],
            env: vec![EnvVar::new("A", "2"), EnvVar::new("B", "3")],
            clear_args: false,
        }],
        task_count: Some(2),
        timeout: Some("45s".into()),
    };
    let op = env.client.run_job(&name, Some(overrides)).await.unwrap();
    assert!(!op.done);
    let meta = op.execution().expect("execution metadata");
    assert_eq!(meta.task_count, Some(2));
    assert_eq!(
        meta.template.as_ref().unwrap().timeout.as_deref(),
        Some("45s")
    );
    let got = env.client.get_operation(&op.name).await.unwrap();
    assert_eq!(got.name, op.name);

    let x = env.wait_done(&op).await;
    assert!(x.succeeded(), "{x:?}");
    assert_eq!(x.succeeded_count, 2);
    assert_eq!(x.failed_count, 0);
    assert_eq!(x.running_count, 0);
    assert!(x.start_time.is_some() && x.completion_time.is_some());
    assert!(!x.reconciling);
    let exec_id = x.name.rsplit('/').next().unwrap().to_string();
    assert_eq!(x.job, "envjob");

    for i in 0..2 {
        let out = env.get(&format!("sub/out-{i}")).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![
                "envjob",
                exec_id.as_str(),
                &i.to_string(),
                "0",
                "2",
                "2",
                "3",
                "over-1 over-2"
            ]
        );
        assert_eq!(env.get(&format!("sub/copy-{i}")).await, "from the bucket\n");
    }

    let tasks = env.client.list_tasks(&x.name, None, None).await.unwrap();
    assert_eq!(tasks.tasks.len(), 2);
    for (i, t) in tasks.tasks.iter().enumerate() {
        assert_eq!(t.index, i as i32);
        assert_eq!(t.last_attempt_result.as_ref().unwrap().exit_code, Some(0));
        assert_eq!(
            t.completed_condition().unwrap().state,
            "CONDITION_SUCCEEDED"
        );
        let one = env.client.get_task(&t.name).await.unwrap();
        assert_eq!(one.name, t.name);
        assert_eq!(one.execution, exec_id);
    }
    assert!(
        env.client
            .get_task(&format!("{}/tasks/none", x.name))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(env.containers_of(&x.name).await, 0, "containers removed");

    // clearArgs: no args at all.
    let clear = Overrides {
        container_overrides: vec![ContainerOverride {
            clear_args: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    env.storage
        .delete_object(BUCKET, "sub/out-0", &WriteOptions::default())
        .await
        .unwrap();
    let op = env.client.run_job(&name, Some(clear)).await.unwrap();
    let x2 = env.wait_done(&op).await;
    assert!(x2.succeeded(), "{x2:?}");
    let out = env.get("sub/out-0").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[4], "1", "job task count");
    assert_eq!(lines[5], "1", "job env A");
    assert_eq!(lines.get(7).copied().unwrap_or(""), "", "args cleared");

    let job_now = env.client.get_job(&name).await.unwrap();
    assert_eq!(job_now.execution_count, Some(2));
    let latest = job_now.latest_created_execution.unwrap();
    assert_eq!(latest.name, x2.name);
    assert_eq!(
        latest.completion_status.as_deref(),
        Some("EXECUTION_SUCCEEDED")
    );
    let list = env.client.list_executions(&name, None, None).await.unwrap();
    assert_eq!(list.executions.len(), 2);

    let del = env.client.delete_execution(&x.name).await.unwrap();
    assert!(del.done);
    assert!(
        env.client
            .get_execution(&x.name)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_task_is_retried_then_fails_with_exit_code() {
    let env = env().await;
    let mut job =
        env.job(r#"echo "$CLOUD_RUN_TASK_ATTEMPT" >> /data/attempts; echo boom-output; exit 3"#);
    job.template.template.max_retries = Some(2);
    let name = env.create("failjob", &job).await;
    let op = env.client.run_job(&name, None).await.unwrap();
    let x = env.wait_done(&op).await;
    assert!(!x.succeeded());
    assert_eq!(x.failed_count, 1);
    assert_eq!(x.retried_count, 2);
    let c = x.completed_condition().unwrap();
    assert_eq!(c.state, "CONDITION_FAILED");
    assert_eq!(c.execution_reason.as_deref(), Some("NON_ZERO_EXIT_CODE"));
    assert_eq!(env.get("sub/attempts").await, "0\n1\n2\n");
    let tasks = env
        .client
        .list_tasks(&x.name, None, None)
        .await
        .unwrap()
        .tasks;
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(t.retried, 2);
    let r = t.last_attempt_result.as_ref().unwrap();
    assert_eq!(r.exit_code, Some(3));
    let msg = &r.status.as_ref().unwrap().message;
    assert!(msg.contains("exit code 3"), "{msg}");
    assert!(
        msg.contains("boom-output"),
        "logs kept in the message: {msg}"
    );
    assert_eq!(t.completed_condition().unwrap().state, "CONDITION_FAILED");
    assert_eq!(env.containers_of(&x.name).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_task_and_wait_returns_early_when_asked() {
    let env = env().await;
    let name = env.create("slowjob", &env.job("sleep 60")).await;
    let op = env
        .client
        .run_job(
            &name,
            Some(Overrides {
                timeout: Some("2s".into()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    // A short wait on a running operation returns it not done.
    let early = env
        .client
        .wait_operation(&op.name, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(!early.done);
    let x = env.wait_done(&op).await;
    assert_eq!(x.failed_count, 1);
    let t = &env
        .client
        .list_tasks(&x.name, None, None)
        .await
        .unwrap()
        .tasks[0];
    let st = t
        .last_attempt_result
        .as_ref()
        .unwrap()
        .status
        .as_ref()
        .unwrap();
    assert_eq!(st.code, 4);
    assert!(st.message.contains("timed out after 2s"), "{}", st.message);
    assert!(
        st.message
            .starts_with("The configured timeout was reached."),
        "{}",
        st.message
    );
    let c = x.completed_condition().unwrap();
    let exec_id = x.name.rsplit('/').next().unwrap();
    assert!(
        c.message.as_deref().unwrap_or("").starts_with(&format!(
            "Task {exec_id}-task0 failed with message: The configured timeout"
        )),
        "{c:?}"
    );
    assert_eq!(env.containers_of(&x.name).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_running_containers() {
    let env = env().await;
    let name = env
        .create("canceljob", &env.job("touch /data/started; sleep 60"))
        .await;
    let op = env.client.run_job(&name, None).await.unwrap();
    let exec = op.execution().unwrap().name;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let x = env.client.get_execution(&exec).await.unwrap();
        if x.running_count == 1 && env.exists("sub/started").await {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {x:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.containers_of(&exec).await, 1);
    let cop = env.client.cancel_execution(&exec).await.unwrap();
    let x = env.wait_done(&cop).await;
    assert_eq!(x.cancelled_count, 1);
    assert_eq!(
        x.completed_condition().unwrap().execution_reason.as_deref(),
        Some("CANCELLED")
    );
    assert!(env.wait_done(&op).await.completion_time.is_some());
    assert_eq!(env.containers_of(&exec).await, 0);
    let again = env.client.cancel_execution(&exec).await.unwrap_err();
    assert_eq!(again.status(), Some(400));
    assert!(again.to_string().contains("FAILED_PRECONDITION"), "{again}");
    let job = env.client.get_job(&name).await.unwrap();
    assert_eq!(
        job.latest_created_execution
            .unwrap()
            .completion_status
            .as_deref(),
        Some("EXECUTION_CANCELLED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_cancels_and_removes_its_executions() {
    let env = env().await;
    let name = env
        .create("deljob", &env.job("touch /data/up; sleep 60"))
        .await;
    let op = env.client.run_job(&name, None).await.unwrap();
    let exec = op.execution().unwrap().name;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.exists("sub/up").await {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.client.delete_job(&name).await.unwrap();
    assert!(
        env.client
            .get_execution(&exec)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let gone = env.client.get_operation(&op.name).await.unwrap();
    assert!(gone.done);
    assert_eq!(gone.error.unwrap().code, 5);
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.containers_of(&exec).await > 0 {
        assert!(Instant::now() < deadline, "container not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_dir_memory_is_a_sized_tmpfs_and_parallelism_bounds_tasks() {
    let env = env().await;
    let script = r#"set -e
grep " /scratch " /proc/mounts > /data/mount-$CLOUD_RUN_TASK_INDEX
df -k /scratch | tail -n 1 >> /data/mount-$CLOUD_RUN_TASK_INDEX
if ! mkdir /data/lock 2>/dev/null; then echo overlap >> /data/overlap; fi
sleep 0.3
rmdir /data/lock
"#;
    let mut job = env.job(script);
    job.template.task_count = Some(3);
    job.template.parallelism = Some(1);
    job.template.template.volumes.push(Volume {
        name: "scratch".into(),
        gcs: None,
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("MEMORY".into()),
            size_limit: Some("16Mi".into()),
        }),
    });
    job.template.template.containers[0]
        .volume_mounts
        .push(VolumeMount {
            name: "scratch".into(),
            mount_path: "/scratch".into(),
        });
    let name = env.create("tmpjob", &job).await;
    let op = env.client.run_job(&name, None).await.unwrap();
    let x = env.wait_done(&op).await;
    assert!(x.succeeded(), "{x:?}");
    assert_eq!(x.succeeded_count, 3);
    assert_eq!(x.parallelism, Some(1));
    for i in 0..3 {
        let m = env.get(&format!("sub/mount-{i}")).await;
        assert!(m.starts_with("tmpfs /scratch tmpfs"), "{m}");
        assert!(m.contains("16384"), "16Mi tmpfs: {m}");
    }
    assert!(!env.exists("sub/overlap").await, "tasks overlapped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_429_and_503_are_retried_by_the_client() {
    let mut faults = FaultConfig::default();
    faults.p429.insert("run.jobs.get".into(), 0.5);
    faults.p503.insert("run.jobs.list".into(), 0.5);
    faults.p429.insert("run.operations.get".into(), 1.0);
    let env = env_with(faults, false).await;
    let name = env.create("faultjob", &env.job("true")).await;
    for _ in 0..10 {
        assert_eq!(env.client.get_job(&name).await.unwrap().name, name);
        assert_eq!(
            env.client
                .list_jobs(&env.parent, None, None)
                .await
                .unwrap()
                .jobs
                .len(),
            1
        );
    }
    // Without retries the injected status shows; with them a 100% fault still fails.
    let once = RunClient::new(&env.base)
        .unwrap()
        .with_retry(RetryPolicy::none());
    let mut saw = 0;
    for _ in 0..20 {
        if let Err(e) = once.get_job(&name).await {
            assert_eq!(e.status(), Some(429));
            assert!(e.to_string().contains("RESOURCE_EXHAUSTED"), "{e}");
            saw += 1;
        }
    }
    assert!(saw > 0, "no fault was injected in 20 calls at p=0.5");
    let e = env
        .client
        .get_operation(&format!("{}/operations/x", env.parent))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(429));
    assert!(e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_execution_start_failure_fails_the_execution() {
    let faults = FaultConfig {
        p_execution_start_failure: 1.0,
        ..Default::default()
    };
    let env = env_with(faults, false).await;
    let name = env.create("startfail", &env.job("touch /data/ran")).await;
    let op = env.client.run_job(&name, None).await.unwrap();
    let x = env.wait_done(&op).await;
    assert!(!x.succeeded());
    assert_eq!(x.failed_count, 1);
    let started = x.conditions.iter().find(|c| c.type_ == "Started").unwrap();
    assert_eq!(started.state, "CONDITION_FAILED");
    assert!(
        started
            .message
            .as_deref()
            .unwrap_or("")
            .contains("injected")
    );
    assert!(!env.exists("sub/ran").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_hook_rejects_requests_without_the_token() {
    let env = env_with(FaultConfig::default(), true).await;
    let e = env
        .client
        .list_jobs(&env.parent, None, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(e.kind(), sandbox_harness::protocol::ErrorKind::Permission);
    let token = env.token.clone().expect("an issued token");
    let authed = env.client.clone().with_token_provider(Arc::new(move || {
        let token = token.clone();
        async move { Ok::<_, String>(token) }.boxed()
    }));
    assert!(
        authed
            .list_jobs(&env.parent, None, None)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_fails_the_attempt_with_a_message() {
    let env = env().await;
    let mut job = env.job("true");
    job.template.template.volumes[0]
        .gcs
        .as_mut()
        .unwrap()
        .bucket = "no-such-bucket".into();
    let name = env.create("nobucket", &job).await;
    let op = env.client.run_job(&name, None).await.unwrap();
    let x = env.wait_done(&op).await;
    assert_eq!(x.failed_count, 1);
    let t = &env
        .client
        .list_tasks(&x.name, None, None)
        .await
        .unwrap()
        .tasks[0];
    let msg = &t
        .last_attempt_result
        .as_ref()
        .unwrap()
        .status
        .as_ref()
        .unwrap()
        .message;
    assert!(msg.contains("no-such-bucket"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_use_host_network_limits_and_read_only_volumes() {
    let env = env().await;
    env.put("sub/pre.txt", "ro\n").await;
    // Reaches the emulator on 127.0.0.1 (host networking), records its memory limit, and
    // tries to write into a read-only Cloud Storage volume.
    let script = r#"
wget -q -O /out/jobs.json "$EMU/v2/$PARENT/jobs" || echo wget-failed > /out/jobs.json
cat /sys/fs/cgroup/memory.max 2>/dev/null > /out/mem || cat /sys/fs/cgroup/memory/memory.limit_in_bytes > /out/mem
if echo x > /data/new.txt 2>/dev/null; then echo writable > /out/ro; else echo read-only > /out/ro; fi
cat /data/pre.txt >> /out/ro
"#;
    let mut job = env.job(script);
    job.template.template.volumes[0]
        .gcs
        .as_mut()
        .unwrap()
        .read_only = true;
    job.template.template.volumes.push(Volume {
        name: "out".into(),
        gcs: Some(GcsVolumeSource {
            bucket: BUCKET.into(),
            read_only: false,
            mount_options: vec!["only-dir=out".into()],
        }),
        empty_dir: None,
    });
    let c = &mut job.template.template.containers[0];
    c.volume_mounts.push(VolumeMount {
        name: "out".into(),
        mount_path: "/out".into(),
    });
    c.env = vec![
        EnvVar::new("EMU", env.base.clone()),
        EnvVar::new("PARENT", env.parent.clone()),
    ];
    let name = env.create("netjob", &job).await;
    let op = env.client.run_job(&name, None).await.unwrap();
    let x = env.wait_done(&op).await;
    assert!(x.succeeded(), "{x:?}");
    let jobs: serde_json::Value =
        serde_json::from_str(&env.get("out/jobs.json").await).expect("JSON from the emulator");
    assert_eq!(jobs["jobs"][0]["name"], name.as_str());
    assert_eq!(env.get("out/mem").await.trim(), (256u64 << 20).to_string());
    assert_eq!(env.get("out/ro").await, "read-only\nro\n");
    assert!(!env.exists("sub/new.txt").await);
}
