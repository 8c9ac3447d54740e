//! Faults on both backends: a killed container, a dead engine connection, a full disk, a dying
//! Cloud Run worker, and storage answering 429/503 at random. Each test checks the error class
//! and that no session state is lost or corrupted.

#[path = "reliability_common.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::emulator::faults::FaultConfig;
use sandbox_harness::protocol::{ErrorKind, ReadOptions, SandboxBackend, WriteOptions};

use common::{Cleanup, cloud_backend, cmd, docker_backend, out};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_container_killed_mid_command() {
    let backend = docker_backend().await;
    let cleanup = Cleanup::default();
    let sb = cleanup.add(backend.create().await.expect("create"));
    sb.exec_stateful(cmd(
        "s",
        "mkdir -p /workspace/k && cd /workspace/k && export K=v",
    ))
    .await
    .unwrap();
    let runner = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.exec_stateful(cmd("s", "sleep 30")).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let name = format!("sandbox-harness-{}", sb.id());
    let started = Instant::now();
    backend
        .docker()
        .kill_container(
            &name,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("kill");
    let res = tokio::time::timeout(Duration::from_secs(20), runner)
        .await
        .expect("the command returns soon after the kill")
        .expect("no panic");
    let err = res.expect_err("a command whose container was killed cannot succeed");
    println!(
        "killed container: running command failed after {:?} with {} ({err})",
        started.elapsed(),
        err.kind()
    );
    assert!(
        matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Backend),
        "unexpected class {err:?}"
    );
    assert!(
        err.to_string().contains(sb.id()),
        "error names the sandbox: {err}"
    );
    // Afterwards the sandbox says clearly that it is gone.
    let after = sb.exec_stateful(cmd("s", "pwd")).await.unwrap_err();
    assert!(
        matches!(after.kind(), ErrorKind::NotFound | ErrorKind::Backend),
        "{after:?}"
    );
    let after_read = sb
        .file_read("s", "/etc/hostname", ReadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(after_read.kind(), ErrorKind::NotFound | ErrorKind::Backend),
        "{after_read:?}"
    );
    assert_eq!(
        backend.get(sb.id()).await.err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    println!(
        "faults injected 1, survived 1 (classes: {} then {}), state lost 0",
        err.kind(),
        after.kind()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_unreachable_is_a_network_error() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let dead_socket = dir.path().join("docker.sock");
    // A socket path nobody listens on, and a closed TCP port on loopback.
    // bollard refuses a missing socket at once; a socket file nobody listens on gets further.
    let missing = Docker::connect_with_unix(
        dead_socket.to_str().unwrap(),
        5,
        bollard::API_DEFAULT_VERSION,
    )
    .expect_err("a missing socket is refused");
    let as_sandbox = sandbox_harness::backends::docker::map_bollard("-", "connect", missing);
    assert_eq!(as_sandbox.kind(), ErrorKind::Network, "{as_sandbox}");
    let stale = std::os::unix::net::UnixListener::bind(&dead_socket).unwrap();
    drop(stale); // the socket file stays, nobody accepts on it
    let unix = Docker::connect_with_unix(
        dead_socket.to_str().unwrap(),
        5,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let tcp = Docker::connect_with_http(
        &format!("tcp://127.0.0.1:{port}"),
        5,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    // A live sandbox reached through a dead connection.
    let live = docker_backend().await;
    let cleanup = Cleanup::default();
    let sb = cleanup.add(live.create().await.expect("create"));
    sb.exec_stateful(cmd("s", "cd /tmp && export Z=1"))
        .await
        .unwrap();
    let cfg = DockerConfig {
        image: Some("unused:latest".into()),
        ..DockerConfig::default()
    };
    let mut tried = 1;
    for (what, docker) in [("unix socket", unix), ("tcp port", tcp)] {
        let backend = DockerBackend::with_client(docker, cfg.clone());
        let e = backend.create().await.err().expect("create cannot work");
        assert_eq!(e.kind(), ErrorKind::Network, "{what}: {e}");
        let e = backend.get(sb.id()).await.err().expect("get cannot work");
        assert_eq!(e.kind(), ErrorKind::Network, "{what}: {e}");
        tried += 2;
    }
    // The sandbox itself is untouched by the failures around it.
    let r = sb.exec_stateful(cmd("s", "pwd; echo $Z")).await.unwrap();
    assert_eq!(r.stdout, b"/tmp\n1\n");
    println!("faults injected {tried}, all network class, state lost 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_full_disk_keeps_previous_content() {
    let backend = docker_backend().await;
    let cleanup = Cleanup::default();
    let sb = cleanup.add(backend.create().await.expect("create"));
    // /dev/shm is a small tmpfs (64 MiB by default): keep the file there, then fill it up.
    let target = "/dev/shm/keep.txt";
    let original = b"first version\nline two\n".to_vec();
    sb.file_write("s", target, &original, WriteOptions::default())
        .await
        .unwrap();
    let fill = sb
        .exec_stateful(cmd(
            "s",
            // Leave 64 KiB free so a failing write gets part of the way first.
            "dd if=/dev/zero of=/dev/shm/fill bs=1M 2>/dev/null; \
             truncate -s $(( $(stat -c %s /dev/shm/fill) - 65536 )) /dev/shm/fill; \
             df -k /dev/shm | tail -1",
        ))
        .await
        .unwrap();
    println!("filled /dev/shm: {}", out(&fill));
    let big: Vec<u8> = (0..2_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut failures = 0;
    let e = sb
        .file_write("s", target, &big, WriteOptions::default())
        .await
        .expect_err("an overwrite on a full disk fails");
    println!("overwrite on a full disk: {} ({e})", e.kind());
    failures += 1;
    // Read back through a command: Docker's archive API (file_read) cannot see tmpfs mounts.
    let cat = |sb: std::sync::Arc<dyn sandbox_harness::protocol::Sandbox>| async move {
        sb.exec_stateful(cmd("s", "cat /dev/shm/keep.txt"))
            .await
            .unwrap()
            .stdout
    };
    let now = cat(sb.clone()).await;
    assert!(
        now == original,
        "the previous content is intact ({} bytes now)",
        now.len()
    );
    let e = sb
        .file_write(
            "s",
            target,
            &big,
            WriteOptions {
                append: true,
                ..WriteOptions::default()
            },
        )
        .await
        .expect_err("an append on a full disk fails");
    println!("append on a full disk: {} ({e})", e.kind());
    failures += 1;
    let now = cat(sb.clone()).await;
    assert!(
        now == original,
        "no half-appended data ({} bytes now)",
        now.len()
    );
    // No temporary files left next to it.
    let left = sb.exec_stateful(cmd("s", "ls -A /dev/shm")).await.unwrap();
    assert_eq!(out(&left), "fill\nkeep.txt", "leftovers: {}", out(&left));
    // Free the space: writes work again.
    sb.file_delete("s", "/dev/shm/fill").await.unwrap();
    sb.file_write("s", target, &big, WriteOptions::default())
        .await
        .unwrap();
    let r = sb
        .exec_stateful(cmd("s", "wc -c < /dev/shm/keep.txt"))
        .await
        .unwrap();
    assert_eq!(out(&r), big.len().to_string());
    println!("faults injected {failures}, survived {failures}, state lost 0");
}

/// The full name of the running worker execution of a Cloud Run sandbox.
async fn running_execution(
    backend: &sandbox_harness::backends::cloudrun::CloudRunBackend,
    id: &str,
) -> Option<String> {
    let job = format!("{}/jobs/sandbox-{id}", backend.parent());
    let list = backend
        .run_client()
        .list_executions(&job, None, None)
        .await
        .ok()?;
    list.executions
        .into_iter()
        .find(|e| !e.is_done())
        .map(|e| e.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_worker_dies_mid_command() {
    let cleanup = Cleanup::default();
    let backend = cloud_backend(FaultConfig::default(), &cleanup).await;
    let sb = cleanup.add(backend.create().await.expect("create"));
    sb.exec_stateful(cmd(
        "s",
        "mkdir -p /workspace/w && cd /workspace/w && export W='a b'",
    ))
    .await
    .unwrap();
    let exec = running_execution(&backend, sb.id())
        .await
        .expect("a worker runs");
    let runner = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.exec_stateful(cmd("s", "sleep 25")).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    backend
        .run_client()
        .cancel_execution(&exec)
        .await
        .expect("cancel");
    let started = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(30), runner)
        .await
        .expect("the command returns after the worker dies")
        .expect("no panic");
    let err = res.expect_err("the command's worker died");
    println!(
        "worker cancelled: command failed after {:?}: {err}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Backend, "{err:?}");
    let short = exec.rsplit('/').next().unwrap();
    assert!(
        err.to_string().contains(short),
        "the error names the execution {short}: {err}"
    );
    // The next command starts a new worker; cwd and env survived.
    let r = sb
        .exec_stateful(cmd("s", r#"pwd; echo "$W""#))
        .await
        .unwrap();
    assert_eq!(r.stdout, b"/workspace/w\na b\n");
    let next = running_execution(&backend, sb.id())
        .await
        .expect("new worker");
    assert_ne!(next, exec);
    println!("faults injected 1, survived 1, state lost 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_storage_429_503_retried_without_duplicates() {
    let cleanup = Cleanup::default();
    let p = |v: f64| BTreeMap::from([("*".to_string(), v)]);
    let faults = FaultConfig {
        p429: p(0.05),
        p503: p(0.10),
        ..FaultConfig::default()
    };
    let backend = cloud_backend(faults, &cleanup).await;
    let sb = cleanup.add(backend.create().await.expect("create"));
    sb.exec_stateful(cmd(
        "s",
        "mkdir -p /workspace/r && cd /workspace/r && export R=kept",
    ))
    .await
    .unwrap();
    let n = 12;
    let mut ops = 0;
    for i in 0..n {
        // Appends through the shell and through the API: each must land exactly once.
        let r = sb
            .exec_stateful(cmd("s", &format!("echo shell-{i} >> shell.log")))
            .await
            .unwrap();
        assert_eq!(r.exit_code, 0);
        sb.file_write(
            "s",
            "api.log",
            format!("api-{i}\n").as_bytes(),
            WriteOptions {
                append: true,
                ..WriteOptions::default()
            },
        )
        .await
        .unwrap();
        ops += 2;
    }
    let want = |tag: &str| -> Vec<u8> {
        (0..n)
            .map(|i| format!("{tag}-{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let shell = sb
        .file_read("s", "/workspace/r/shell.log", ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(shell.content, want("shell"));
    let api = sb
        .file_read("s", "/workspace/r/api.log", ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(api.content, want("api"));
    let r = sb.exec_stateful(cmd("s", "pwd; echo $R")).await.unwrap();
    assert_eq!(r.stdout, b"/workspace/r\nkept\n");
    ops += 3;
    println!(
        "storage faults: {ops} operations under p429=0.05 p503=0.10 (each call has a ~15% chance of an injected error), all succeeded, lines {n}+{n} exact, state lost 0"
    );
}
