//! Google's Python clients as referees of the emulator: `google-cloud-storage` and
//! `google-cloud-run` (REST transport), pinned in `scripts/setup.sh`, each run a check script
//! from `tests/clients/` against an in-process local cloud (both API halves on one port).

mod clients_common;

use std::path::Path;
use std::process::Command;

use clients_common::{require_python_module, require_tool, run, text};
use sandbox_harness::emulator::{EmulatorConfig, LocalCloud};

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
        .display()
        .to_string()
}

/// Runs a check script with `env`; asserts it succeeded and printed its summary line.
async fn check(name: &str, env: &[(&str, &str)]) {
    let mut c = Command::new(require_tool("python3"));
    c.arg(script(name))
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("GCE_METADATA_HOST", "127.0.0.1:9")
        .env("GCE_METADATA_IP", "127.0.0.1:9")
        .env("NO_GCE_CHECK", "True");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = run(c).await;
    assert!(o.status.success(), "{name}: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains(" ok ("), "{name}: {}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_python_clients_pass_their_checks() {
    require_python_module("google.cloud.storage", "google-cloud-storage");
    require_python_module("google.cloud.run_v2", "google-cloud-run");
    let cloud = LocalCloud::start_with(EmulatorConfig {
        check_docker: false,
        ..Default::default()
    })
    .await
    .expect("the local cloud starts (needs the Docker engine)");
    let base = cloud.base_url();
    let image = sandbox_harness::images::ensure_sandbox_image(cloud.docker())
        .await
        .expect("sandbox image");
    check("storage_check.py", &[("STORAGE_EMULATOR_HOST", &base)]).await;
    check(
        "run_check.py",
        &[("RUN_ENDPOINT", &base), ("SANDBOX_IMAGE", &image)],
    )
    .await;
    cloud.shutdown().await;
}
