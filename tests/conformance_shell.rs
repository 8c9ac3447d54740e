//! The `shell` REPL driven from an in-memory pipe against a Docker sandbox.

use std::sync::Arc;

use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::conformance::SandboxGuard;
use sandbox_harness::conformance::shell::run_repl;
use sandbox_harness::protocol::SandboxBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repl_runs_commands_and_meta_commands_from_a_pipe() {
    let backend: Arc<dyn SandboxBackend> = Arc::new(
        DockerBackend::connect(DockerConfig::default())
            .await
            .expect("docker"),
    );
    let guard = SandboxGuard::new(backend.create().await.expect("create"));
    let sb = guard.sandbox();
    sb.ensure_ready().await.unwrap();
    let local = tempfile::tempdir().unwrap();
    let up = local.path().join("up load.txt");
    std::fs::write(&up, b"from the host\n").unwrap();
    let down = local.path().join("down.txt");
    let input = format!(
        "mkdir -p /tmp/r && cd /tmp/r && export V='a b'\n\
         echo \"$V\"; pwd; echo oops >&2; exit 4\n\
         :write '/tmp/r/with space.txt' 'hello world'\n\
         :read \"/tmp/r/with space.txt\"\n\
         :upload '{}' /tmp/r/u.txt\n\
         :download /tmp/r/u.txt '{}'\n\
         :bg sleep 300\n\
         :ps\n\
         :exec echo interactive\n\
         :view\n\
         :read /tmp/r/missing\n\
         :frobnicate\n\
         :write 'unterminated\n\
         :help\n\
         :quit\n\
         echo never\n",
        up.display(),
        down.display()
    );
    let mut out = Vec::new();
    run_repl(
        sb.as_ref(),
        tokio::io::BufReader::new(input.as_bytes()),
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("exit: 4\n--- stdout ---\na b\n/tmp/r\n--- stderr ---\noops\n"),
        "{text}"
    );
    assert!(
        text.contains("wrote 12 bytes") && text.contains("hello world\n"),
        "{text}"
    );
    assert!(
        text.contains("uploaded 14 bytes") && text.contains("downloaded 14 bytes"),
        "{text}"
    );
    assert_eq!(std::fs::read(&down).unwrap(), b"from the host\n");
    assert!(text.contains("running\tshell\tsleep 300"), "{text}");
    assert!(text.contains("interactive"), "{text}");
    assert!(text.contains("error [not_found]"), "{text}");
    assert!(
        text.contains("unknown or malformed meta-command :frobnicate"),
        "{text}"
    );
    assert!(text.contains("error: unterminated ' quote"), "{text}");
    assert!(text.contains(":download REMOTE LOCAL"), "{text}");
    assert!(!text.contains("never"), "{text}");
    guard.destroy().await.unwrap();
}
