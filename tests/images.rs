//! The default sandbox image builds offline and runs a POSIX shell.

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
