//! The Cloud Storage FUSE rules of the twin, each shown inside a real task container started
//! through the emulator's Cloud Run API, with its source (page and section).
//!
//! Sources: Cloud Run's "Configure Cloud Storage volume mounts for jobs" page (called "the
//! Cloud Run jobs page" below) and GoogleCloudPlatform/gcsfuse `docs/semantics.md`.
//!
//! A task script prints `key=value` lines and exits 7 on purpose: its output comes back in the
//! failed attempt's message (the emulator keeps the log tail there), independent of the mount
//! under test. Containers use host networking, so scripts reach the Storage API with wget.
//!
//! Set GCSFUSE_RULES_STORAGE to a Storage endpoint (for example fake-gcs-server) to run the
//! same rules against it instead of the emulator's own storage half.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_harness::emulator::gcsfuse::GcsFuse;
use sandbox_harness::emulator::run::{RunConfig, RunState, routes};
use sandbox_harness::emulator::{Clock, Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::retry::RetryPolicy;
use sandbox_harness::gcp::run::{
    Container, EnvVar, Execution, GcsVolumeSource, Job, ResourceRequirements, RunClient, Volume,
    VolumeMount,
};
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};
use sandbox_harness::suites::faults::FaultConfig;

const BUCKET: &str = "fuse-rules";
/// Exit status the scripts end with so their output is kept in the attempt's message.
const REPORT_EXIT: i32 = 7;

/// One emulator (Cloud Run half + storage) with the twin's Cloud Storage FUSE.
struct Twin {
    run: RunClient,
    storage: StorageClient,
    storage_url: String,
    state: Arc<RunState>,
    clock: Clock,
    image: String,
    parent: String,
    _emu: Emulator,
}

impl Drop for Twin {
    fn drop(&mut self) {
        let state = self.state.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(state.shutdown());
        });
    }
}

/// A volume: name, mount path, mount options.
struct Vol<'a>(&'a str, &'a str, &'a [&'a str]);

async fn twin_with(faults: FaultConfig) -> Twin {
    let docker = bollard::Docker::connect_with_defaults().expect("docker client");
    let image = sandbox_harness::images::ensure_sandbox_image(&docker)
        .await
        .expect("sandbox image");
    let instance = format!("rules{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut cfg = RunConfig::new(docker, &instance);
    cfg.faults = Arc::new(sandbox_harness::emulator::faults::FaultInjector::default());
    let state = RunState::new(cfg).expect("run state");
    let for_router = state.clone();
    let emu = Emulator::start_with(
        EmulatorConfig {
            faults,
            check_docker: false,
            ..Default::default()
        },
        move |_| routes(for_router),
    )
    .await
    .expect("emulator");
    let storage_url = std::env::var("GCSFUSE_RULES_STORAGE").unwrap_or_else(|_| emu.base_url());
    let mounter = GcsFuse::new(
        &storage_url,
        emu.clock(),
        Arc::new(|| TokenSource::Anonymous),
        &instance,
    )
    .expect("mounter");
    state.set_gcs_volumes(Arc::new(mounter)).unwrap();
    let fast = RetryPolicy {
        max_attempts: 30,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        multiplier: 2.0,
        deadline: Duration::from_secs(30),
    };
    let storage = StorageClient::new(&storage_url, TokenSource::Anonymous)
        .unwrap()
        .with_retry(fast);
    let _ = storage
        .insert_bucket(
            "rules-project",
            &BucketSpec {
                name: BUCKET.into(),
                ..Default::default()
            },
        )
        .await;
    Twin {
        run: RunClient::new(&emu.base_url()).unwrap().with_retry(fast),
        storage,
        storage_url,
        state,
        clock: emu.clock(),
        image,
        parent: "projects/rules-project/locations/us-central1".into(),
        _emu: emu,
    }
}

async fn twin() -> Twin {
    twin_with(FaultConfig::default()).await
}

impl Twin {
    fn job(&self, script: &str, vols: &[Vol<'_>], memory: &str) -> Job {
        let mut job = Job::default();
        job.template.template.max_retries = Some(0);
        job.template.template.timeout = Some("120s".into());
        job.template.template.volumes = vols
            .iter()
            .map(|Vol(name, _, opts)| Volume {
                name: (*name).into(),
                gcs: Some(GcsVolumeSource {
                    bucket: BUCKET.into(),
                    read_only: false,
                    mount_options: opts.iter().map(|s| s.to_string()).collect(),
                }),
                empty_dir: None,
            })
            .collect();
        job.template.template.containers = vec![Container {
            name: Some("main".into()),
            image: self.image.clone(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![
                EnvVar::new("STORAGE", &self.storage_url),
                EnvVar::new("BUCKET", BUCKET),
            ],
            resources: Some(ResourceRequirements {
                limits: BTreeMap::from([
                    ("cpu".into(), "1".into()),
                    ("memory".into(), memory.into()),
                ]),
            }),
            volume_mounts: vols
                .iter()
                .map(|Vol(name, path, _)| VolumeMount {
                    name: (*name).into(),
                    mount_path: (*path).into(),
                })
                .collect(),
            ..Default::default()
        }];
        job
    }

    /// Creates and runs a job; returns the operation's execution name.
    async fn start(&self, id: &str, job: &Job) -> String {
        let op = self
            .run
            .create_job(&self.parent, id, job)
            .await
            .expect("create job");
        let name = op.job().expect("job").name;
        let op = self.run.run_job(&name, None).await.expect("run job");
        op.name
    }

    async fn wait(&self, op: &str) -> Execution {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let got = self
                .run
                .wait_operation(op, Duration::from_secs(30))
                .await
                .expect("wait");
            if got.done {
                return got.execution().expect("execution");
            }
            assert!(Instant::now() < deadline, "execution did not finish");
        }
    }

    /// Runs `script` with `vols` and returns (exit code, message, key=value report).
    async fn run_script(
        &self,
        id: &str,
        script: &str,
        vols: &[Vol<'_>],
        memory: &str,
    ) -> (Option<i32>, String, BTreeMap<String, String>) {
        let op = self.start(id, &self.job(script, vols, memory)).await;
        let x = self.wait(&op).await;
        self.outcome(&x).await
    }

    async fn outcome(&self, x: &Execution) -> (Option<i32>, String, BTreeMap<String, String>) {
        let tasks = self
            .run
            .list_tasks(&x.name, None, None)
            .await
            .unwrap()
            .tasks;
        let r = tasks[0]
            .last_attempt_result
            .clone()
            .expect("attempt result");
        let msg = r.status.map(|s| s.message).unwrap_or_default();
        let report = msg
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.to_string()))
            .collect();
        (r.exit_code, msg, report)
    }

    async fn object(&self, name: &str) -> Option<Vec<u8>> {
        match self.storage.download(BUCKET, name, None).await {
            Ok(d) => Some(d.collect().await.unwrap().to_vec()),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("reading {name}: {e}"),
        }
    }

    async fn put(&self, name: &str, data: &str) {
        self.put_meta(name, data, BTreeMap::new()).await;
    }

    async fn put_meta(&self, name: &str, data: &str, metadata: BTreeMap<String, String>) {
        self.storage
            .insert_object(
                BUCKET,
                name,
                data.to_string().into(),
                &WriteOptions {
                    metadata,
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }

    /// Waits for object `name` written by the task of operation `op`.
    async fn wait_object(&self, name: &str, op: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.object(name).await.is_none() {
            let o = self.run.get_operation(op).await.unwrap();
            if o.done {
                let (_, msg, _) = self.outcome(&o.execution().unwrap()).await;
                panic!("the task ended before writing {name}: {msg}");
            }
            assert!(Instant::now() < deadline, "{name} never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn get<'a>(r: &'a BTreeMap<String, String>, k: &str, msg: &str) -> &'a str {
    r.get(k)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {k} in the report: {msg}"))
}

/// Polls the Storage API from inside the container until object `$1` exists.
const WAIT_FOR: &str = r#"wait_for() { i=0; until wget -q -O /dev/null "$STORAGE/storage/v1/b/$BUCKET/o/$1" 2>/dev/null; do i=$((i+1)); [ $i -gt 600 ] && { echo "timeout=$1"; exit 9; }; sleep 0.1; done; }"#;

/// docs/semantics.md: MkNode answers ENOTSUP for named pipes and sockets, other nodes become
/// regular file objects (the kernel then reports EIO); hard links are not implemented
/// ("Missing features"; the kernel reports a FUSE ENOSYS on link as EPERM); "Permissions and
/// ownership": modes 0644/0755 by default, chmod and chown silently ignored, owner the
/// mounting user; so `chmod +x` does not make a script runnable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_hard_links_modes_and_chmod() {
    let t = twin().await;
    let script = r#"
cd /data
echo x > f
echo "fifo_err=$(mkfifo p 2>&1)"
echo "fifo_exists=$([ -e p ] && echo yes || echo no)"
echo "link_err=$(ln f h 2>&1)"
echo "mknod_err=$(mknod dev c 1 3 2>&1)"
chmod 700 f; echo "chmod_rc=$?"
echo "mode=$(stat -c %a f)"
chown 1234:4321 f; echo "chown_rc=$?"
echo "owner=$(stat -c %u:%g f)"
echo "dirmode=$(stat -c %a .)"
printf '#!/bin/sh\necho ran\n' > s.sh; chmod +x s.sh
echo "exec_out=$(./s.sh 2>&1)"
echo "exec_rc=$(./s.sh >/dev/null 2>&1; echo $?)"
exit 7
"#;
    let (code, msg, r) = t
        .run_script(
            "specials",
            script,
            &[Vol("v", "/data", &["only-dir=t1"])],
            "256Mi",
        )
        .await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert!(
        get(&r, "fifo_err", &msg).contains("Operation not supported"),
        "{msg}"
    );
    assert_eq!(get(&r, "fifo_exists", &msg), "no");
    assert!(
        get(&r, "link_err", &msg).contains("Operation not permitted"),
        "{msg}"
    );
    assert!(
        get(&r, "mknod_err", &msg).contains("Input/output error"),
        "{msg}"
    );
    assert_eq!(
        t.object("t1/dev").await.as_deref(),
        Some(&b""[..]),
        "mknod leaves a file object"
    );
    assert_eq!(get(&r, "chmod_rc", &msg), "0");
    assert_eq!(get(&r, "mode", &msg), "644");
    assert_eq!(get(&r, "chown_rc", &msg), "0");
    assert_eq!(get(&r, "owner", &msg), "0:0");
    assert_eq!(get(&r, "dirmode", &msg), "755");
    assert!(
        get(&r, "exec_out", &msg).contains("Permission denied"),
        "{msg}"
    );
    assert_eq!(get(&r, "exec_rc", &msg), "126");
    assert_eq!(t.object("t1/f").await.as_deref(), Some(&b"x\n"[..]));
}

/// docs/semantics.md "Permissions and ownership": --uid, --gid, --file-mode and --dir-mode
/// override the defaults; Cloud Run passes mount options to gcsfuse (Cloud Run jobs page,
/// "Volume mount options").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_and_owner_come_from_mount_options() {
    let t = twin().await;
    let script = r#"
mkdir /data/d; echo y > /data/d/f
echo "file=$(stat -c %a:%u:%g /data/d/f)"
echo "dir=$(stat -c %a:%u:%g /data/d)"
exit 7
"#;
    let opts = [
        "only-dir=t2",
        "file-mode=600",
        "dir-mode=700",
        "uid=1234",
        "gid=4321",
    ];
    let (code, msg, r) = t
        .run_script("modes", script, &[Vol("v", "/data", &opts)], "256Mi")
        .await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert_eq!(get(&r, "file", &msg), "600:1234:4321");
    assert_eq!(get(&r, "dir", &msg), "700:1234:4321");
    // docs/semantics.md "Files and Directories": mkdir creates the `d/` placeholder object.
    assert_eq!(t.object("t2/d/").await.as_deref(), Some(&b""[..]));
}

/// docs/semantics.md "Staged Writes": a file is uploaded when it is closed or fsynced, so
/// other readers see it only then; Cloud Run jobs page, "Limitations": when several writers
/// replace a file, the last write wins. Two mounts of one bucket stand for two instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_visible_at_close_and_the_last_close_wins() {
    let t = twin().await;
    let script = format!(
        r#"
obj() {{ wget -q -O - "$STORAGE/storage/v1/b/$BUCKET/o/$1?alt=media" 2>/dev/null || echo missing; }}
# tee alone holds the file open (each close of a forked copy of the descriptor would flush).
(echo staged; sleep 2) | tee /a/w.txt >/dev/null &
sleep 1
echo "before_close=$(obj t3%2Fw.txt)"
wait
echo "after_close=$(obj t3%2Fw.txt)"
# Truncating an existing file by opening it with O_TRUNC changes nothing in the bucket before
# the close either.
echo one > /a/t.txt
(echo two; sleep 2) | tee /a/t.txt >/dev/null &
sleep 1
echo "during_trunc=$(obj t3%2Ft.txt)"
wait
echo "after_trunc=$(obj t3%2Ft.txt)"
# Two writers through two mounts; each holds its file until its FIFO on /tmp closes, so the
# only flushes are the final closes (a shell's temporary `>&N` redirect would flush too).
mkfifo /tmp/pa /tmp/pb
tee /a/lc.txt < /tmp/pa > /dev/null & A=$!
tee /b/lc.txt < /tmp/pb > /dev/null & B=$!
exec 6>/tmp/pa 7>/tmp/pb
echo from-a >&6; echo from-b >&7
exec 7>&-; wait $B
echo "after_b=$(obj t3%2Flc.txt)"
exec 6>&-; wait $A
echo "last=$(obj t3%2Flc.txt)"
exit {REPORT_EXIT}
"#
    );
    let vols = [
        Vol("a", "/a", &["only-dir=t3"]),
        Vol("b", "/b", &["only-dir=t3"]),
    ];
    let (code, msg, r) = t.run_script("writes", &script, &vols, "256Mi").await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert_eq!(get(&r, "before_close", &msg), "missing");
    assert_eq!(get(&r, "after_close", &msg), "staged");
    assert_eq!(get(&r, "during_trunc", &msg), "one", "{msg}");
    assert_eq!(get(&r, "after_trunc", &msg), "two", "{msg}");
    assert_eq!(get(&r, "after_b", &msg), "from-b", "{msg}");
    assert_eq!(get(&r, "last", &msg), "from-a", "{msg}");
    assert_eq!(
        t.object("t3/lc.txt").await.as_deref(),
        Some(&b"from-a\n"[..])
    );
    // The task has ended: its mounts are gone.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mine = format!(
        "{}{}:",
        sandbox_harness::emulator::gcsfuse::FSNAME_PREFIX,
        std::process::id()
    );
    assert!(
        !mounts.contains(&mine),
        "a mount outlived its task:\n{mounts}"
    );
}

/// Cloud Run jobs page, "Memory requirements": Cloud Run uses a stat cache with a 60 s TTL by
/// default; docs/semantics.md "Stat caching": negative entries live 5 s by default, and
/// metadata-cache-ttl-secs=0 turns the caches off. An object changed through the API is seen
/// stale inside the task until the TTL passes (the emulator's clock is advanced, not waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_cache_is_stale_until_the_ttl_and_negative_entries_until_theirs() {
    let t = twin().await;
    t.put("t4/s.txt", "one").await;
    let script = format!(
        r#"
{WAIT_FOR}
echo "size1=$(stat -c %s /data/s.txt)"
echo "missing1=$(cat /data/n.txt 2>&1)"
echo > /data/ready1
wait_for t4%2Fgo1
echo "size2=$(stat -c %s /data/s.txt)"
echo "read2=$(cat /data/s.txt 2>&1)"
echo "fresh2=$(stat -c %s /fresh/s.txt)"
echo "missing2=$(cat /data/n.txt 2>&1)"
echo > /data/ready2
wait_for t4%2Fgo2
echo "size3=$(stat -c %s /data/s.txt)"
echo "read3=$(cat /data/s.txt 2>&1)"
echo "missing3=$(cat /data/n.txt 2>&1)"
exit {REPORT_EXIT}
"#
    );
    let vols = [
        Vol("v", "/data", &["only-dir=t4"]),
        Vol("f", "/fresh", &["only-dir=t4", "metadata-cache-ttl-secs=0"]),
    ];
    let op = t.start("caches", &t.job(&script, &vols, "256Mi")).await;
    t.wait_object("t4/ready1", &op).await;
    t.put("t4/s.txt", "three-two-one").await;
    t.put("t4/n.txt", "now here").await;
    t.put("t4/go1", "").await;
    t.wait_object("t4/ready2", &op).await;
    // Past the negative TTL (5 s) and the stat TTL (60 s).
    t.clock.advance(Duration::from_secs(61));
    t.put("t4/go2", "").await;
    let x = t.wait(&op).await;
    let (code, msg, r) = t.outcome(&x).await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert_eq!(get(&r, "size1", &msg), "3");
    assert!(get(&r, "missing1", &msg).contains("No such file"), "{msg}");
    assert_eq!(get(&r, "size2", &msg), "3", "stale within the TTL: {msg}");
    assert!(
        get(&r, "read2", &msg).contains("Stale file handle"),
        "{msg}"
    );
    assert_eq!(get(&r, "fresh2", &msg), "13", "no cache with ttl 0: {msg}");
    assert!(
        get(&r, "missing2", &msg).contains("No such file"),
        "negative entry: {msg}"
    );
    assert_eq!(get(&r, "size3", &msg), "13", "fresh after the TTL: {msg}");
    assert_eq!(get(&r, "read3", &msg), "three-two-one");
    assert_eq!(get(&r, "missing3", &msg), "now here");
}

/// Cloud Run jobs page, "Disable implicit directories": Cloud Run enables implicit directories
/// by default, implicit-dirs=false turns them off; docs/semantics.md "Files and Directories":
/// without them a directory exists only through its `dir/` placeholder object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_directories_on_by_default_and_off_by_option() {
    let t = twin().await;
    t.put("t5/imp/a.txt", "implied").await;
    let script = format!(
        r#"
echo "on_ls=$(ls /on | tr '\n' ' ')"
echo "on_read=$(cat /on/imp/a.txt 2>&1)"
echo "off_ls=$(ls /off | tr '\n' ' ')"
echo "off_read=$(cat /off/imp/a.txt 2>&1)"
mkdir /off/imp; echo "mkdir_rc=$?"
echo "off_read2=$(cat /off/imp/a.txt 2>&1)"
exit {REPORT_EXIT}
"#
    );
    let vols = [
        Vol("on", "/on", &["only-dir=t5"]),
        Vol("off", "/off", &["only-dir=t5", "implicit-dirs=false"]),
    ];
    let (code, msg, r) = t.run_script("implicit", &script, &vols, "256Mi").await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert_eq!(get(&r, "on_ls", &msg).trim(), "imp");
    assert_eq!(get(&r, "on_read", &msg), "implied");
    assert_eq!(get(&r, "off_ls", &msg).trim(), "");
    assert!(get(&r, "off_read", &msg).contains("No such file"), "{msg}");
    assert_eq!(get(&r, "mkdir_rc", &msg), "0");
    assert_eq!(get(&r, "off_read2", &msg), "implied");
    assert_eq!(t.object("t5/imp/").await.as_deref(), Some(&b""[..]));
}

/// docs/semantics.md "Missing features": renaming a directory in a flat bucket is refused
/// unless it has no more descendants than --rename-dir-limit (gcsfuse answers EMFILE);
/// "Unlinking directories": rmdir of a non-empty directory is ENOTEMPTY; a file rename is one
/// objects.move (gcsfuse's enable-atomic-rename-object, on by default in cfg/params.yaml).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_renames_need_rename_dir_limit() {
    let t = twin().await;
    let script = format!(
        r#"
mkdir /data/d; echo f > /data/d/f
echo "mv_err=$(mv /data/d /data/e 2>&1)"
echo "rmdir_err=$(rmdir /data/d 2>&1)"
mkdir /data/empty; mv /data/empty /data/empty2; echo "mv_empty_rc=$?"
mkdir /lim/d; echo g > /lim/d/g
mv /lim/d /lim/e; echo "mv_lim_rc=$?"
echo file > /data/x; mv /data/x /data/y; echo "mv_file_rc=$?"
echo "moved=$(cat /lim/e/g)"
exit {REPORT_EXIT}
"#
    );
    let vols = [
        Vol("v", "/data", &["only-dir=t6"]),
        Vol("l", "/lim", &["only-dir=t6l", "rename-dir-limit=5"]),
    ];
    let (code, msg, r) = t.run_script("renames", &script, &vols, "256Mi").await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert!(
        get(&r, "mv_err", &msg).contains("Too many open files"),
        "{msg}"
    );
    assert!(get(&r, "rmdir_err", &msg).contains("not empty"), "{msg}");
    assert_eq!(get(&r, "mv_empty_rc", &msg), "0");
    assert_eq!(get(&r, "mv_lim_rc", &msg), "0");
    assert_eq!(get(&r, "moved", &msg), "g");
    // gcsfuse renameFile with its default enable-atomic-rename-object: one objects.move.
    assert_eq!(get(&r, "mv_file_rc", &msg), "0");
    assert_eq!(t.object("t6/y").await.as_deref(), Some(&b"file\n"[..]));
    assert!(t.object("t6/x").await.is_none());
    assert!(
        t.object("t6/d/f").await.is_some(),
        "refused rename moved nothing"
    );
    assert!(t.object("t6l/e/g").await.is_some() && t.object("t6l/d/g").await.is_none());
    assert!(t.object("t6l/e/").await.is_some() && t.object("t6l/d/").await.is_none());
}

/// docs/semantics.md "Name conflicts": with objects `foo` and `foo/`, the mount shows a
/// directory `foo` and a file `foo\n`; "Symlink inodes": a symlink is an object holding the
/// target, marked goog-reserved-file-is-symlink=true, with gcsfuse_symlink_target kept for
/// older readers, which are read too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_names_and_symlinks() {
    let t = twin().await;
    t.put("t7/c", "the file").await;
    t.put("t7/c/", "").await;
    t.put("t7/c/in.txt", "inside").await;
    t.put_meta(
        "t7/old-link",
        "",
        BTreeMap::from([("gcsfuse_symlink_target".into(), "c/in.txt".into())]),
    )
    .await;
    let script = format!(
        r#"
nl=$(printf '\nx'); nl=${{nl%x}}
echo "in=$(cat /data/c/in.txt)"
echo "conflict=$(cat "/data/c$nl" 2>&1)"
n=0; for f in /data/*; do case "$f" in *"$nl") n=$((n+1));; esac; done; echo "listed=$n"
ln -s c/in.txt /data/new-link; echo "symlink_rc=$?"
echo "new=$(readlink /data/new-link)"
echo "old=$(readlink /data/old-link)"
echo "through=$(cat /data/old-link)"
exit {REPORT_EXIT}
"#
    );
    let (code, msg, r) = t
        .run_script(
            "conflicts",
            &script,
            &[Vol("v", "/data", &["only-dir=t7"])],
            "256Mi",
        )
        .await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert_eq!(get(&r, "in", &msg), "inside");
    assert_eq!(get(&r, "conflict", &msg), "the file");
    assert_eq!(get(&r, "listed", &msg), "1");
    assert_eq!(get(&r, "symlink_rc", &msg), "0");
    assert_eq!(get(&r, "new", &msg), "c/in.txt");
    assert_eq!(get(&r, "old", &msg), "c/in.txt");
    assert_eq!(get(&r, "through", &msg), "inside");
    assert_eq!(
        t.object("t7/new-link").await.as_deref(),
        Some(&b"c/in.txt"[..])
    );
    let o = t.storage.get_object(BUCKET, "t7/new-link").await.unwrap();
    assert_eq!(
        o.metadata
            .get("goog-reserved-file-is-symlink")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        o.metadata.get("gcsfuse_symlink_target").map(String::as_str),
        Some("c/in.txt")
    );
}

/// Cloud Run jobs page, "Memory requirements": the entire file is staged in the container's
/// memory before it is written to Cloud Storage, so a write larger than the limit fails the
/// task as Cloud Run reports an instance out of memory ("Memory limit of N MiB exceeded with
/// M MiB used. Consider increasing the memory limit, see .../memory-limits").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_beyond_the_memory_limit_fails_the_task_as_out_of_memory() {
    let t = twin().await;
    let script = "dd if=/dev/zero of=/data/big bs=1M count=80 2>&1; echo dd-finished; exit 0";
    let (code, msg, _) = t
        .run_script(
            "oom",
            script,
            &[Vol("v", "/data", &["only-dir=t8"])],
            "64Mi",
        )
        .await;
    assert_eq!(code, Some(137), "{msg}");
    assert!(
        msg.starts_with(
            "Memory limit of 64 MiB exceeded with 65 MiB used. Consider increasing the memory limit"
        ),
        "{msg}"
    );
    // busybox dd moves its output fd with dup2, whose close flushes the still empty file (as
    // it would on Cloud Run); none of the staged bytes reach the bucket.
    let left = t.object("t8/big").await.map_or(0, |b| b.len());
    assert_eq!(left, 0, "nothing half-written: {msg}");
}

/// Mount options Cloud Run passes to gcsfuse must be gcsfuse flags; names that configure the
/// gcsfuse process itself, unknown names, and mount paths under /dev, /proc or /sys (Cloud
/// Run jobs page, "Disallowed paths") are refused when the job is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_mount_options_and_paths_are_refused_at_creation() {
    let t = twin().await;
    for (id, opts, path, want) in [
        (
            "bad-flag",
            &["no-such-flag"][..],
            "/data",
            "not a Cloud Storage FUSE flag",
        ),
        (
            "key-file",
            &["key-file=/k.json"][..],
            "/data",
            "not accepted",
        ),
        (
            "dashes",
            &["--implicit-dirs"][..],
            "/data",
            "leading dashes",
        ),
        ("proc", &[][..], "/proc/data", "not allowed"),
    ] {
        let job = t.job("true", &[Vol("v", path, opts)], "256Mi");
        let err = t.run.create_job(&t.parent, id, &job).await.unwrap_err();
        assert_eq!(err.status(), Some(400), "{id}: {err}");
        assert!(err.to_string().contains(want), "{id}: {err}");
    }
}

/// docs/semantics.md "Error Handling" and docs/client_and_retries.md: Cloud Storage FUSE
/// retries 429 and 5xx with exponential backoff (1 s initial, x2, 30 s max, no attempt limit
/// unless --max-retry-attempts). Cloud Storage answers 429 to sustained writes of one object
/// name faster than about once a second ("Quotas & limits", object mutation rate); those
/// writes land after retries, as do writes when half the uploads are answered 429, and with
/// every upload answered 429 and max-retry-attempts=2 the close fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_uploads_are_retried_as_cloud_storage_fuse_retries() {
    // The emulator's own per-object mutation limit (about one write per second per object
    // name, short bursts pass): eight quick rewrites of one file all land, the last one last.
    let t = twin().await;
    let script = format!(
        r#"
for i in 1 2 3 4 5 6 7 8; do echo "w$i" > /tmp/w; cp /tmp/w /data/same || echo "failed=$i"; done
echo "done=1"
exit {REPORT_EXIT}
"#
    );
    let (code, msg, r) = t
        .run_script(
            "hot-object",
            &script,
            &[Vol("v", "/data", &["only-dir=t9h"])],
            "256Mi",
        )
        .await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert!(!r.contains_key("failed"), "{msg}");
    assert_eq!(t.object("t9h/same").await.as_deref(), Some(&b"w8\n"[..]));
    drop(t);
    let t = twin_with(FaultConfig {
        p429: BTreeMap::from([("storage.objects.insert".into(), 0.5)]),
        ..Default::default()
    })
    .await;
    let script = format!(
        r#"
for i in 1 2 3; do echo "v$i" > /tmp/v$i; cp /tmp/v$i /data/r$i; echo "rc$i=$?"; done
exit {REPORT_EXIT}
"#
    );
    let (code, msg, r) = t
        .run_script(
            "retries",
            &script,
            &[Vol("v", "/data", &["only-dir=t9"])],
            "256Mi",
        )
        .await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    for i in 1..=3 {
        assert_eq!(get(&r, &format!("rc{i}"), &msg), "0");
        assert_eq!(
            t.object(&format!("t9/r{i}")).await,
            Some(format!("v{i}\n").into_bytes())
        );
    }
    drop(t);
    let t = twin_with(FaultConfig {
        p429: BTreeMap::from([("storage.objects.insert".into(), 1.0)]),
        ..Default::default()
    })
    .await;
    // cp reports a failed close (a shell redirect would not).
    let script =
        format!("echo v > /tmp/v; echo \"err=$(cp /tmp/v /data/r 2>&1)\"; exit {REPORT_EXIT}");
    let (code, msg, r) = t
        .run_script(
            "no-retries-left",
            &script,
            &[Vol("v", "/data", &["only-dir=t9b", "max-retry-attempts=2"])],
            "256Mi",
        )
        .await;
    assert_eq!(code, Some(REPORT_EXIT), "{msg}");
    assert!(get(&r, "err", &msg).contains("Input/output error"), "{msg}");
    assert!(t.object("t9b/r").await.is_none(), "{msg}");
}
