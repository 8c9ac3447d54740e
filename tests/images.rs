//! The default sandbox image builds offline and runs a POSIX shell; the browser image command
//! works.

use bollard::Docker;

#[tokio::test]
async fn default_image_builds_and_is_cached() {
    let docker = Docker::connect_with_defaults().expect("docker client");
    let spec = sandbox_harness::images::sandbox_image_spec().expect("busybox present");
    let tag = spec.ensure(&docker).await.expect("image builds");
    let again = spec.ensure(&docker).await.expect("second ensure");
    assert_eq!(tag, again);
    let inspect = docker.inspect_image(&tag).await.expect("image exists");
    let cfg = inspect.config.expect("config");
    assert_eq!(cfg.working_dir.as_deref(), Some("/workspace"));
}

#[tokio::test]
async fn executor_image_runs_the_static_worker() {
    let docker = Docker::connect_with_defaults().expect("docker client");
    let tag = sandbox_harness::images::ensure_executor_image(&docker)
        .await
        .expect("executor image builds");
    // Run the worker with a bad flag: it must start (static binary works) and explain itself.
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            &tag,
            "sandbox-executor",
            "worker",
            "--bogus",
            "1",
        ])
        .output()
        .expect("docker run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag --bogus"));
}

/// `sandbox-harness image browser`, the documented command: the browser image exists
/// afterwards (built now, or cached), it says so with its size, and its configuration runs the
/// start script as the main process.
#[tokio::test]
async fn image_browser_command_builds_or_finds_the_browser_image() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-harness"))
        .args(["image", "browser"])
        .output()
        .expect("run sandbox-harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tag = stdout
        .split_whitespace()
        .find(|w| w.starts_with(sandbox_harness::images::browser::BROWSER_IMAGE_REPO))
        .expect("the tag is printed")
        .to_string();
    assert!(stdout.contains("image size"), "{stdout}");
    let docker = Docker::connect_with_defaults().expect("docker client");
    let cfg = docker
        .inspect_image(&tag)
        .await
        .expect("image exists")
        .config
        .expect("config");
    assert_eq!(
        cfg.cmd,
        Some(vec![
            sandbox_harness::images::browser::START_PATH.to_string()
        ])
    );
    assert_eq!(cfg.working_dir.as_deref(), Some("/workspace"));
}
