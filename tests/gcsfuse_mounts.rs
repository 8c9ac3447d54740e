//! Mount lifecycle of the twin's Cloud Storage FUSE: a mount left behind by a killed process
//! is detached by the next mounter instead of wedging later runs, and an emulator that cannot
//! mount refuses `gcs` volumes with a message instead of falling back to another mode.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_harness::emulator::gcsfuse::{Budget, GcsFuse, MountOptions, sweep_stale};
use sandbox_harness::emulator::run::{RunConfig, RunState, routes};
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::run::{Container, GcsVolumeSource, Job, RunClient, Volume, VolumeMount};
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient};

const HELPER_ENV: &str = "GCSFUSE_STALE_HELPER_DIR";

fn mounted(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// Kills the helper on drop, so a failing test leaves no process behind.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run by the test below in a child process: mounts a bucket and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of a_mount_left_by_a_killed_process_is_detached_later"]
async fn helper_holds_a_mount_until_killed() {
    let Ok(dir) = std::env::var(HELPER_ENV) else {
        return;
    };
    let emu = Emulator::start(EmulatorConfig {
        check_docker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    c.insert_bucket(
        "p",
        &BucketSpec {
            name: "stale-bucket".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let fuse = GcsFuse::new(
        &emu.base_url(),
        emu.clock(),
        Arc::new(|| TokenSource::Anonymous),
        "stalehelper",
    )
    .unwrap();
    let opts = MountOptions::parse(&[]).unwrap();
    let m = tokio::task::block_in_place(|| {
        fuse.mount("stale-bucket", &opts, false, Budget::new(1 << 20))
    })
    .unwrap();
    std::fs::write(
        Path::new(&dir).join("path"),
        m.path().to_string_lossy().as_bytes(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// A process killed with its mount up leaves a dead mount ("Transport endpoint is not
/// connected"); the next GcsFuse (or sweep) detaches it lazily and removes its directory.
#[test]
fn a_mount_left_by_a_killed_process_is_detached_later() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_holds_a_mount_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("helper process");
    let mut helper = Helper(child);
    let marker = dir.path().join("path");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the helper never mounted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let path = PathBuf::from(std::fs::read_to_string(&marker).unwrap());
    assert!(mounted(&path), "{} is not mounted", path.display());
    helper.0.kill().unwrap();
    helper.0.wait().unwrap();
    let err = std::fs::metadata(&path).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOTCONN),
        "a dead mount: {err}"
    );
    assert!(sweep_stale() >= 1);
    assert!(!mounted(&path), "the stale mount is still there");
    assert!(!path.exists(), "its directory is gone");
}

/// No silent fallback: a Cloud Run half with nothing to mount Cloud Storage volumes with
/// refuses jobs that have them, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_mounter_gcs_volumes_are_refused_with_a_reason() {
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    let state = RunState::new(RunConfig::new(docker, "nomounter")).unwrap();
    let for_router = state.clone();
    let emu = Emulator::start_with(
        EmulatorConfig {
            check_docker: false,
            ..Default::default()
        },
        move |_| routes(for_router),
    )
    .await
    .unwrap();
    let run = RunClient::new(&emu.base_url()).unwrap();
    let mut job = Job::default();
    job.template.template.volumes = vec![Volume {
        name: "v".into(),
        gcs: Some(GcsVolumeSource {
            bucket: "b".into(),
            read_only: false,
            mount_options: vec![],
        }),
        empty_dir: None,
    }];
    job.template.template.containers = vec![Container {
        image: "busybox".into(),
        volume_mounts: vec![VolumeMount {
            name: "v".into(),
            mount_path: "/data".into(),
        }],
        ..Default::default()
    }];
    let err = run
        .create_job("projects/p/locations/us-central1", "refused", &job)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.to_string().contains("cannot") || err.to_string().contains("no Cloud Storage endpoint"),
        "{err}"
    );
    state.shutdown().await;
}
