//! The Docker backend's in-sandbox agent: one per connection, gone when the connection is,
//! replaced when killed from inside, and skipped for images that lack it.

mod docker_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use docker_common::{Guard, out, sandbox, sh};
use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::protocol::{ErrorKind, Sandbox, StatefulExec};

/// Counts the agent processes in the sandbox (read from /proc, so no `ps` is needed).
const COUNT_AGENTS: &str = r#"n=0
for f in /proc/[0-9]*/cmdline; do
  c=$(tr '\0' ' ' < "$f" 2>/dev/null) || continue
  case "$c" in "/usr/local/bin/sandbox-executor serve "*) n=$((n+1));; esac
done
echo $n"#;

async fn agents(sb: &dyn Sandbox) -> usize {
    let r = sb
        .exec_stateful(StatefulExec::new(
            "count",
            COUNT_AGENTS,
            Duration::from_secs(30),
        ))
        .await
        .expect("count agents");
    String::from_utf8_lossy(&r.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad count {:?}", r.stdout))
}

#[tokio::test]
async fn reattached_handles_share_one_agent_each_and_close_it() {
    let g = sandbox().await;
    assert_eq!(agents(&*g.sb).await, 1);
    for _ in 0..3 {
        let again = g.backend.get_docker(g.sb.id()).await.expect("reattach");
        // Two agents while both handles are open, then back to one once the handle is gone.
        assert_eq!(agents(&*again).await, 2);
        drop(again);
        let t = Instant::now();
        loop {
            let n = agents(&*g.sb).await;
            if n == 1 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "a dropped handle left its agent running ({n} agents)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn an_agent_killed_from_inside_is_reported_and_replaced() {
    let g = sandbox().await;
    sh(&g, "s", "cd /tmp && export KEEP=kept").await;
    let killed = g
        .exec_stateful(StatefulExec::new(
            "k",
            "kill -9 $(for f in /proc/[0-9]*/cmdline; do case \"$(tr '\\0' ' ' < \"$f\")\" in \"/usr/local/bin/sandbox-executor serve \"*) echo \"${f%/cmdline}\" | cut -d/ -f3;; esac; done); sleep 5",
            Duration::from_secs(30),
        ))
        .await;
    let err = killed.expect_err("the command's agent died under it");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("agent"), "{err}");
    // The next command starts a new agent; session state lives in the sandbox, not the agent.
    let r = sh(&g, "s", "echo \"$PWD $KEEP\"").await;
    assert_eq!(out(&r), "/tmp kept\n");
    assert_eq!(agents(&*g.sb).await, 1);
}

#[tokio::test]
async fn an_image_without_the_agent_runs_one_exec_per_command() {
    let g = sandbox().await;
    // Make the agent unrunnable, then attach a fresh handle: it must fall back, not fail.
    sh(&g, "s", "rm /usr/local/bin/sandbox-executor").await;
    let plain = g.backend.get_docker(g.sb.id()).await.expect("reattach");
    let r = plain
        .exec_stateful(StatefulExec::new(
            "s",
            "echo \"$PWD\"; exit 3",
            Duration::from_secs(30),
        ))
        .await
        .expect("exec without an agent");
    assert_eq!(r.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "/workspace\n");
}

#[tokio::test]
async fn the_agent_can_be_turned_off() {
    let backend = Arc::new(
        DockerBackend::connect(DockerConfig {
            agent: false,
            ..DockerConfig::default()
        })
        .await
        .expect("docker engine reachable"),
    );
    let sb = backend.create_docker().await.expect("create sandbox");
    let g = Guard { sb, backend };
    g.sb.ensure_ready().await.expect("ready");
    let r = sh(&g, "s", "printf 'a\\0b'; echo err >&2").await;
    assert_eq!(r.stdout, b"a\0b");
    assert_eq!(r.stderr, b"err\n");
    assert_eq!(agents(&*g.sb).await, 0);
}
