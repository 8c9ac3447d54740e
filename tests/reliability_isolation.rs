//! Isolation: Docker sandboxes run unprivileged with limits, the emulator listens on loopback
//! only, and one Cloud Run sandbox cannot reach another's objects through its own calls.
//!
//! Not built: a read-only root filesystem. Docker's archive API (which `file_read` and
//! `file_download` use) cannot see files on tmpfs mounts, so a tmpfs /tmp would break reads
//! there; the default stays a writable root.

#[path = "reliability_common.rs"]
mod common;

use sandbox_harness::protocol::{ErrorKind, ReadOptions, SandboxBackend, WriteOptions};
use sandbox_harness::suites::faults::FaultConfig;

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
    let mut checks = 0;
    let mut check = |what: &str, ok: bool| {
        assert!(ok, "isolation property violated: {what}");
        checks += 1;
    };
    check("not privileged", hc.privileged == Some(false));
    check(
        "every capability dropped first",
        hc.cap_drop.unwrap_or_default().iter().any(|c| c == "ALL"),
    );
    let added = hc.cap_add.unwrap_or_default();
    for dangerous in [
        "SYS_ADMIN",
        "NET_ADMIN",
        "SYS_PTRACE",
        "SYS_MODULE",
        "NET_RAW",
    ] {
        check(
            &format!("{dangerous} not added"),
            !added.iter().any(|c| c.ends_with(dangerous)),
        );
    }
    check("pids limit", hc.pids_limit.unwrap_or(0) > 0);
    check("memory limit", hc.memory.unwrap_or(0) > 0);
    check("cpu limit", hc.nano_cpus.unwrap_or(0) > 0);
    check(
        "no-new-privileges",
        hc.security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges")),
    );
    // From inside: no way to mount or to raise capabilities.
    let r = sb
        .exec_stateful(cmd("i", "mount -t tmpfs none /mnt 2>&1; echo rc=$?"))
        .await
        .unwrap();
    check("mount refused inside", !out(&r).ends_with("rc=0"));
    // The capability sets inside are exactly the ones the backend grants (CAPS), no more.
    let want = cap_mask(sandbox_harness::backends::docker::CAPS);
    let r = sb
        .exec_stateful(cmd("i", "grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status"))
        .await
        .unwrap();
    let sets: Vec<(String, u64)> = out(&r)
        .lines()
        .map(|l| {
            let (name, hex) = l.split_once(':').expect("Cap line");
            let v = u64::from_str_radix(hex.trim(), 16).expect("hex capability mask");
            (name.to_string(), v)
        })
        .collect();
    assert_eq!(sets.len(), 3, "CapEff, CapPrm, CapBnd: {}", out(&r));
    for (name, v) in &sets {
        assert_eq!(
            *v,
            want,
            "{name} is {v:#x}, the backend grants {:?} = {want:#x}",
            sandbox_harness::backends::docker::CAPS
        );
        checks += 1;
    }
    println!(
        "docker isolation: {checks} properties checked, capability sets {want:#x} as granted, violations 0"
    );
}

/// The capability bit mask of `names`, numbered as in linux/include/uapi/linux/capability.h.
fn cap_mask(names: &[&str]) -> u64 {
    const NUMBERS: &[(&str, u32)] = &[
        ("CHOWN", 0),
        ("DAC_OVERRIDE", 1),
        ("DAC_READ_SEARCH", 2),
        ("FOWNER", 3),
        ("FSETID", 4),
        ("KILL", 5),
        ("SETGID", 6),
        ("SETUID", 7),
        ("SETPCAP", 8),
        ("LINUX_IMMUTABLE", 9),
        ("NET_BIND_SERVICE", 10),
        ("NET_BROADCAST", 11),
        ("NET_ADMIN", 12),
        ("NET_RAW", 13),
        ("IPC_LOCK", 14),
        ("IPC_OWNER", 15),
        ("SYS_MODULE", 16),
        ("SYS_RAWIO", 17),
        ("SYS_CHROOT", 18),
        ("SYS_PTRACE", 19),
        ("SYS_PACCT", 20),
        ("SYS_ADMIN", 21),
        ("SYS_BOOT", 22),
        ("SYS_NICE", 23),
        ("SYS_RESOURCE", 24),
        ("SYS_TIME", 25),
        ("SYS_TTY_CONFIG", 26),
        ("MKNOD", 27),
        ("LEASE", 28),
        ("AUDIT_WRITE", 29),
        ("AUDIT_CONTROL", 30),
        ("SETFCAP", 31),
    ];
    names.iter().fold(0, |m, n| {
        let n = n.trim_start_matches("CAP_");
        let bit = NUMBERS
            .iter()
            .find(|(name, _)| *name == n)
            .unwrap_or_else(|| panic!("unknown capability {n}"))
            .1;
        m | (1 << bit)
    })
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
