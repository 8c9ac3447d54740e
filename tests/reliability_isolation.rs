//! Isolation: Docker sandboxes run unprivileged with limits, the emulator listens on loopback
//! only, and one Cloud Run sandbox cannot reach another's objects through its own calls.
//!
//! Not built: a read-only root filesystem. Docker's archive API (which `file_read` and
//! `file_download` use) cannot see files on tmpfs mounts, so a tmpfs /tmp would break reads
//! there; the default stays a writable root.

#[path = "reliability_common.rs"]
mod common;

use sandbox_harness::emulator::faults::FaultConfig;
use sandbox_harness::protocol::{ErrorKind, ReadOptions, SandboxBackend, WriteOptions};

use common::{Cleanup, cloud_backend, cmd, docker_backend, out};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sandbox_is_unprivileged_and_limited() {
    let backend = docker_backend().await;
    let cleanup = Cleanup::default();
    let sb = cleanup.add(backend.create().await.unwrap());
    let info = backend
        .docker()
        .inspect_container(&format!("sandbox-harness-{}", sb.id()), None)
        .await
        .unwrap();
    let hc = info.host_config.unwrap();
    assert_eq!(hc.privileged, Some(false));
    assert!(hc.cap_drop.unwrap_or_default().iter().any(|c| c == "ALL"));
    let added = hc.cap_add.unwrap_or_default();
    for dangerous in [
        "SYS_ADMIN",
        "NET_ADMIN",
        "SYS_PTRACE",
        "SYS_MODULE",
        "NET_RAW",
    ] {
        assert!(
            !added.iter().any(|c| c.ends_with(dangerous)),
            "{dangerous} added"
        );
    }
    assert!(hc.pids_limit.unwrap_or(0) > 0, "pids limit");
    assert!(hc.memory.unwrap_or(0) > 0, "memory limit");
    assert!(hc.nano_cpus.unwrap_or(0) > 0, "cpu limit");
    assert!(
        hc.security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
    );
    // From inside: no way to mount or to raise capabilities.
    let r = sb
        .exec_stateful(cmd("i", "mount -t tmpfs none /mnt 2>&1; echo rc=$?"))
        .await
        .unwrap();
    assert!(!out(&r).ends_with("rc=0"), "mount worked: {}", out(&r));
    let r = sb
        .exec_stateful(cmd("i", "grep CapEff /proc/self/status"))
        .await
        .unwrap();
    println!("docker isolation: {} ; mount refused", out(&r));
    println!("isolation checks: 7 host-config properties + 1 in-container, violations 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_listens_on_loopback_only() {
    common::init_tracing();
    let local = sandbox_harness::emulator::LocalCloud::start()
        .await
        .unwrap();
    let base = local.base_url();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    // The kernel's socket table: the listening socket of that port is bound to 127.0.0.1.
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let tcp6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let want = format!(":{port:04X}");
    let listening: Vec<&str> = tcp
        .lines()
        .chain(tcp6.lines())
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
        })
        .collect();
    assert!(!listening.is_empty(), "no listener on {port}");
    for l in &listening {
        let local_addr = l.split_whitespace().nth(1).unwrap();
        assert_eq!(
            local_addr,
            format!("0100007F{want}"),
            "listener not on loopback: {l}"
        );
    }
    local.shutdown().await;
    println!(
        "emulator listener: 127.0.0.1:{port} only ({} socket)",
        listening.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_sandboxes_cannot_reach_each_other() {
    let cleanup = Cleanup::default();
    let backend = cloud_backend(FaultConfig::default(), &cleanup).await;
    let a = cleanup.add(backend.create().await.unwrap());
    let b = cleanup.add(backend.create().await.unwrap());
    a.file_write(
        "s",
        "/workspace/secret.txt",
        b"A's secret",
        WriteOptions::default(),
    )
    .await
    .unwrap();
    a.exec_stateful(cmd("s", "echo more > /workspace/from-shell.txt"))
        .await
        .unwrap();
    let mut tried = 0;
    // B's API calls with A's names, plain and through traversal.
    for p in [
        "/workspace/secret.txt".to_string(),
        format!("/workspace/../sessions/{}/workspace/secret.txt", a.id()),
        format!("../../sessions/{}/workspace/secret.txt", a.id()),
        format!("/sandbox-state/../sessions/{}/workspace/secret.txt", a.id()),
    ] {
        let e = b
            .file_read("s", &p, ReadOptions::default())
            .await
            .expect_err("B cannot read A's file");
        assert!(
            matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput),
            "{p}: {e}"
        );
        tried += 1;
    }
    // B's commands see only B's volumes.
    let r = b
        .exec_stateful(cmd(
            "s",
            "cat /workspace/secret.txt /sandbox-state/../sessions/*/workspace/secret.txt 2>/dev/null; \
             grep -rl \"A's secret\" /workspace /sandbox-state /tmp /mnt 2>/dev/null | head -3; true",
        ))
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&r.stdout).contains("secret"),
        "B saw A's data: {}",
        out(&r)
    );
    tried += 1;
    let listed = b.file_list("s", "/workspace").await.unwrap();
    assert!(listed.iter().all(|e| e.name != "secret.txt"));
    tried += 1;
    // And A still has it.
    let c = a
        .file_read("s", "/workspace/secret.txt", ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(c.content, b"A's secret");
    println!("cloudrun isolation: {tried} cross-sandbox attempts, reached 0");
}
