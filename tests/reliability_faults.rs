//! Faults on both backends: a killed container, a dead engine connection, a full disk, and
//! storage answering 429/503 at random (a dying Cloud Run worker has its own file,
//! `reliability_worker_death.rs`). Each test checks the error class, that the faults were in
//! fact injected, and counts the state checks it makes after them.

#[path = "reliability_common.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::emulator::faults::kind;
use sandbox_harness::protocol::{ErrorKind, ReadOptions, SandboxBackend, WriteOptions};
use sandbox_harness::suites::faults::FaultConfig;

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
    let classes = [err.kind(), after.kind(), after_read.kind()];
    println!(
        "killed container: faults injected 1; {} operations after it answered with a documented class ({classes:?}); the sandbox is gone, so no state is kept to check",
        classes.len() + 1
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
    let mut tried = 1u64;
    for (what, docker) in [("unix socket", unix), ("tcp port", tcp)] {
        let backend = DockerBackend::with_client(docker, cfg.clone());
        let e = backend.create().await.err().expect("create cannot work");
        assert_eq!(e.kind(), ErrorKind::Network, "{what}: {e}");
        let e = backend.get(sb.id()).await.err().expect("get cannot work");
        assert_eq!(e.kind(), ErrorKind::Network, "{what}: {e}");
        tried += 2;
    }
    // The sandbox itself is untouched by the failures around it.
    let mut tally = common::Tally::default();
    tally.injected(tried);
    tally.survived += tried;
    let r = sb.exec_stateful(cmd("s", "pwd; echo $Z")).await.unwrap();
    tally.state("cwd", out(&r).lines().next() == Some("/tmp"));
    tally.state("env", out(&r).lines().nth(1) == Some("1"));
    tally.finish("engine unreachable (every failure of the network class)");
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
    let mut tally = common::Tally::default();
    let e = sb
        .file_write("s", target, &big, WriteOptions::default())
        .await
        .expect_err("an overwrite on a full disk fails");
    println!("overwrite on a full disk: {} ({e})", e.kind());
    tally.injected(1);
    tally.survived();
    // Read back through a command: Docker's archive API (file_read) cannot see tmpfs mounts.
    let cat = |sb: std::sync::Arc<dyn sandbox_harness::protocol::Sandbox>| async move {
        sb.exec_stateful(cmd("s", "cat /dev/shm/keep.txt"))
            .await
            .unwrap()
            .stdout
    };
    let now = cat(sb.clone()).await;
    tally.state("content after a failed overwrite", now == original);
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
    tally.injected(1);
    tally.survived();
    let now = cat(sb.clone()).await;
    tally.state("content after a failed append", now == original);
    // No temporary files left next to it.
    let left = sb.exec_stateful(cmd("s", "ls -A /dev/shm")).await.unwrap();
    tally.state(
        "no leftovers beside the file",
        out(&left) == "fill\nkeep.txt",
    );
    // Free the space: writes work again.
    sb.file_delete("s", "/dev/shm/fill").await.unwrap();
    sb.file_write("s", target, &big, WriteOptions::default())
        .await
        .unwrap();
    let r = sb
        .exec_stateful(cmd("s", "wc -c < /dev/shm/keep.txt"))
        .await
        .unwrap();
    tally.state(
        "a write after freeing space lands",
        out(&r) == big.len().to_string(),
    );
    tally.finish("full disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_storage_429_503_retried_without_duplicates() {
    let cleanup = Cleanup::default();
    let p = |v: f64| BTreeMap::from([("*".to_string(), v)]);
    let faults = FaultConfig {
        seed: Some(0x5eed_0429),
        p429: p(0.05),
        p503: p(0.10),
        ..FaultConfig::default()
    };
    let backend = cloud_backend(faults, &cleanup).await;
    let local = backend.local_cloud().expect("embedded emulator").clone();
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
    let mut tally = common::Tally::default();
    tally.survived += ops;
    let shell = sb
        .file_read("s", "/workspace/r/shell.log", ReadOptions::default())
        .await
        .unwrap();
    tally.state(
        "shell appends, each exactly once",
        shell.content == want("shell"),
    );
    let api = sb
        .file_read("s", "/workspace/r/api.log", ReadOptions::default())
        .await
        .unwrap();
    tally.state("API appends, each exactly once", api.content == want("api"));
    let r = sb.exec_stateful(cmd("s", "pwd; echo $R")).await.unwrap();
    tally.state("cwd", out(&r).lines().next() == Some("/workspace/r"));
    tally.state("env", out(&r).lines().nth(1) == Some("kept"));
    tally.survived += 3;
    let counts = local.fault_counts();
    let storage_faults =
        counts.on(kind::HTTP_429, "storage.") + counts.on(kind::HTTP_503, "storage.");
    tally.injected(counts.total(kind::HTTP_429) + counts.total(kind::HTTP_503));
    // Each of the hundreds of calls these operations make has a ~15% chance of an error; at
    // least 10 of them must have hit Storage calls, or this test proved nothing.
    assert!(
        storage_faults >= 10,
        "only {storage_faults} faults reached Storage calls (seed {}): {counts:?}",
        counts.seed
    );
    println!(
        "storage faults under p429=0.05 p503=0.10, seed {}: 429 x{} and 503 x{} injected ({storage_faults} on Storage calls)",
        counts.seed,
        counts.total(kind::HTTP_429),
        counts.total(kind::HTTP_503)
    );
    tally.finish("storage 429/503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_latency_reaches_both_apis_within_its_band() {
    const MS: u64 = 120;
    let cleanup = Cleanup::default();
    let faults = FaultConfig {
        seed: Some(11),
        call_latency: sandbox_harness::suites::faults::Latency {
            min_ms: MS,
            max_ms: MS,
        },
        ..FaultConfig::default()
    };
    let backend = cloud_backend(faults, &cleanup).await;
    let local = backend.local_cloud().expect("embedded emulator").clone();
    let before = local.fault_counts();
    let calls = 8u64;
    let mut storage = Vec::new();
    let mut run = Vec::new();
    for _ in 0..calls {
        let t = Instant::now();
        backend
            .storage()
            .get_bucket(&backend.config().bucket)
            .await
            .expect("buckets.get");
        storage.push(t.elapsed());
        let t = Instant::now();
        backend
            .run_client()
            .list_jobs(backend.parent(), None, None)
            .await
            .expect("jobs.list");
        run.push(t.elapsed());
    }
    let after = local.fault_counts();
    let injected = after.total(kind::CALL_LATENCY) - before.total(kind::CALL_LATENCY);
    assert_eq!(injected, 2 * calls, "one delay per call: {after:?}");
    let total_ms = after
        .latency_ms
        .get(kind::CALL_LATENCY)
        .copied()
        .unwrap_or(0)
        - before
            .latency_ms
            .get(kind::CALL_LATENCY)
            .copied()
            .unwrap_or(0);
    assert_eq!(total_ms, 2 * calls * MS, "every delay is the fixed {MS} ms");
    // Each call pays the delay; loopback and the emulator add little on top. The upper edge is
    // wide because other tests share the machine: it only says the delay is not doubled.
    let band = Duration::from_millis(MS)..Duration::from_millis(2 * MS + 400);
    for (api, times) in [("storage", &storage), ("run", &run)] {
        for t in times.iter() {
            assert!(band.contains(t), "{api} call took {t:?}, outside {band:?}");
        }
        let mut sorted = times.clone();
        sorted.sort();
        println!(
            "injected latency {MS} ms on {api}: {} calls, min {:?}, median {:?}, max {:?} (emulator counted {injected} delays, {total_ms} ms)",
            times.len(),
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_counts_match_what_clients_saw() {
    use sandbox_harness::emulator::{Emulator, EmulatorConfig};
    use sandbox_harness::gcp::auth::TokenSource;
    use sandbox_harness::gcp::retry::RetryPolicy;
    use sandbox_harness::gcp::storage::{BucketSpec, StorageClient};
    common::init_tracing();
    let faults = FaultConfig {
        seed: Some(42),
        p503: BTreeMap::from([("storage.buckets.get".to_string(), 0.3)]),
        ..FaultConfig::default()
    };
    let emu = Emulator::start(EmulatorConfig {
        faults,
        check_docker: false,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let client = StorageClient::new(&emu.base_url(), TokenSource::Anonymous)
        .unwrap()
        .with_retry(RetryPolicy::none());
    client
        .insert_bucket(
            "p",
            &BucketSpec {
                name: "counted".into(),
                ..BucketSpec::default()
            },
        )
        .await
        .expect("buckets.insert is not faulted");
    let calls = 60;
    let mut failed = 0u64;
    for _ in 0..calls {
        match client.get_bucket("counted").await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.status(), Some(503), "{e}");
                assert_eq!(e.kind(), ErrorKind::Network, "{e}");
                failed += 1;
            }
        }
    }
    let counts: sandbox_harness::emulator::faults::FaultCounts =
        reqwest::get(format!("{}/emulator/v1/faults", emu.base_url()))
            .await
            .expect("faults endpoint")
            .json()
            .await
            .expect("fault counts JSON");
    assert_eq!(
        counts,
        emu.context().injector.counts(),
        "HTTP and in-process agree"
    );
    assert_eq!(counts.seed, 42);
    assert_eq!(counts.on(kind::HTTP_503, "storage.buckets.get"), failed);
    assert_eq!(
        counts.total(kind::HTTP_503),
        failed,
        "nothing else was faulted"
    );
    assert!(
        failed > 0 && failed < calls,
        "p=0.3 over {calls} calls gave {failed}"
    );
    println!("fault counts: {calls} calls, {failed} answered 503, the emulator counted {failed}");
    emu.shutdown().await;
}
