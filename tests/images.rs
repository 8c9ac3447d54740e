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
