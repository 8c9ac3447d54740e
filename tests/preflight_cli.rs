//! The `emulator` and `preflight` subcommands as child processes of the real binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient};
use sandbox_harness::preflight::{PreflightReport, Status, ids};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-harness");

/// Settings that would point the binary away from the embedded emulator.
const ENV_TO_CLEAR: [&str; 7] = [
    "CLOUDRUN_CONFIG",
    "CLOUDRUN_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "CLOUD_RUN_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "SANDBOX_BUCKET",
    "CLOUDRUN_TOKEN",
];

fn command() -> Command {
    let mut c = Command::new(BIN);
    for k in ENV_TO_CLEAR {
        c.env_remove(k);
    }
    c
}

/// Kills and reaps the child unless it was stopped cleanly.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_subcommand_serves_and_stops_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let child = command()
        .args(["emulator", "--port", "0", "--state-dir"])
        .arg(state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the emulator");
    let mut guard = ChildGuard(Some(child));
    let stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut storage_host = None;
    let mut run_host = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while storage_host.is_none() || run_host.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the emulator printed its env lines");
        if let Some(v) = line.strip_prefix("STORAGE_EMULATOR_HOST=") {
            storage_host = Some(v.to_string());
        }
        if let Some(v) = line.strip_prefix("CLOUD_RUN_EMULATOR_HOST=") {
            run_host = Some(v.to_string());
        }
    }
    let base = storage_host.unwrap();
    assert_eq!(run_host.as_deref(), Some(base.as_str()));
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(!base.ends_with(":0"), "{base}");

    let health: serde_json::Value = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");

    let storage = StorageClient::new(&base, TokenSource::Anonymous).unwrap();
    storage
        .insert_bucket(
            "p",
            &BucketSpec {
                name: "cli-bucket".into(),
                ..BucketSpec::default()
            },
        )
        .await
        .expect("bucket created through the child emulator");
    assert_eq!(
        storage.get_bucket("cli-bucket").await.unwrap().name,
        "cli-bucket"
    );
    assert!(
        state.path().join("storage").is_dir(),
        "state lives in --state-dir"
    );

    // SIGTERM: a clean shutdown with exit code 0.
    let pid = guard.0.as_ref().unwrap().id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(st.success());
    let status = wait_with_timeout(guard.0.as_mut().unwrap(), Duration::from_secs(30))
        .expect("the emulator stopped after SIGTERM");
    guard.0 = None;
    assert!(status.success(), "{status:?}");
}

fn run_preflight(args: &[&str], json: &Path) -> (i32, String, PreflightReport) {
    let out = command()
        .arg("preflight")
        .args(args)
        .arg("--out")
        .arg(json.parent().expect("the report's folder"))
        .stdin(Stdio::null())
        .output()
        .expect("run preflight");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: PreflightReport =
        serde_json::from_slice(&std::fs::read(json).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); stdout {text}; stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }))
        .expect("JSON report parses");
    (out.status.code().unwrap_or(-1), text, report)
}

#[test]
fn preflight_subcommand_marks_exit_codes_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out").join("preflight.json");
    let (code, text, report) = run_preflight(
        &[
            "--skip-job",
            "--disable-service",
            "run.googleapis.com",
            "--deny-permission",
            "run.jobs.create",
        ],
        &json,
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("✗ api.run"), "{text}");
    assert!(text.contains("✗ iam.project"), "{text}");
    assert!(text.contains("run.jobs.create"), "{text}");
    assert!(text.contains("✗ bucket.lifecycle"), "{text}");
    assert!(text.contains("– run.test_job"), "{text}");
    assert!(text.contains("preflight FAILED"), "{text}");
    assert!(report.emulated);
    assert!(!report.passed);
    assert_eq!(report.check(ids::API_RUN).unwrap().status, Status::Fail);

    let (code, text, report) = run_preflight(&["--skip-job", "--fix"], &json);
    assert_eq!(code, 0, "{text}");
    assert!(report.passed, "{text}");
    let lc = report.check(ids::BUCKET_LIFECYCLE).unwrap();
    assert_eq!(lc.status, Status::Pass);
    assert!(lc.fixed.is_some());
    assert!(text.contains("✓ bucket.lifecycle"), "{text}");
    assert!(text.contains("preflight PASSED"), "{text}");

    // Flags for the embedded emulator are refused against configured endpoints.
    let out = command()
        .args(["preflight", "--project", "some-project", "--no-bucket"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only to the embedded emulator"));
}

/// `preflight --fix` against a fresh project on a standalone emulator (its endpoints in
/// CLOUD_RUN_EMULATOR_HOST and STORAGE_EMULATOR_HOST): the bucket is created in us-central1,
/// STANDARD, with the 7-day sessions/ rule, the run passes, and the report says emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_fix_on_a_fresh_emulator_project_creates_the_bucket() {
    let local = sandbox_harness::emulator::LocalCloud::start()
        .await
        .expect("emulator starts");
    let base = local.base_url();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("preflight.json");
    let out = command()
        .env("CLOUD_RUN_EMULATOR_HOST", &base)
        .env("STORAGE_EMULATOR_HOST", &base)
        .args([
            "preflight",
            "--fix",
            "--skip-job",
            "--bucket",
            "fresh-state-bucket",
            "--out",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run preflight");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: PreflightReport = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report.passed && report.emulated, "{text}");
    let exists = report.check(ids::BUCKET_EXISTS).unwrap();
    assert_eq!(exists.status, Status::Pass);
    assert!(exists.reason.contains("created"), "{}", exists.reason);
    let storage = StorageClient::new(&base, TokenSource::Anonymous).unwrap();
    let b = storage.get_bucket("fresh-state-bucket").await.unwrap();
    assert_eq!(b.location.as_deref(), Some("US-CENTRAL1"));
    assert_eq!(b.storage_class.as_deref(), Some("STANDARD"));
    let rules = b.lifecycle.expect("lifecycle").rule;
    assert_eq!(
        rules,
        vec![sandbox_harness::gcp::storage::LifecycleRule::delete_after_days(7, &["sessions/"])]
    );
    local.shutdown().await;
}
