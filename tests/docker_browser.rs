//! Browser sandboxes on Docker: the browser image is picked by a capability request (the
//! default stays the small image), the container keeps the sandbox's limits and publishes its
//! endpoints on loopback only, a re-attached handle finds the same browser, and a backend with
//! browsers switched off says `Unsupported`.

mod docker_common;

use std::sync::Arc;

use docker_common::Guard;
use sandbox_harness::backends::docker::{
    BrowserMode, CAPS, DockerBackend, DockerConfig, LABEL_BROWSER,
};
use sandbox_harness::browser::rfb;
use sandbox_harness::images::browser::BROWSER_IMAGE_REPO;
use sandbox_harness::protocol::{Capabilities, ErrorKind, Sandbox, SandboxBackend};

const BROWSER: Capabilities = Capabilities {
    browser: true,
    vnc: false,
    stdin: false,
    background: false,
    reattach: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sandbox_keeps_the_limits_and_reattaches() {
    let backend = docker_common::backend().await;
    let config = DockerConfig::default();
    let caps = SandboxBackend::capabilities(backend.as_ref());
    assert!(caps.browser && caps.vnc, "{caps:?}");

    let sb = backend.create_docker_with(BROWSER).await.expect("create");
    let g = Guard {
        sb,
        backend: backend.clone(),
    };
    assert!(g.capabilities().browser && g.capabilities().vnc);
    let b = g.get_browser().await.expect("browser comes up");
    assert!(
        b.version
            .as_deref()
            .unwrap_or_default()
            .starts_with("Chrome/"),
        "{b:?}"
    );

    let info = backend
        .docker()
        .inspect_container(&format!("sandbox-harness-{}", g.id()), None)
        .await
        .unwrap();
    let image = info.config.as_ref().and_then(|c| c.image.clone()).unwrap();
    assert!(image.starts_with(BROWSER_IMAGE_REPO), "{image}");
    let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap();
    assert_eq!(labels.get(LABEL_BROWSER).map(String::as_str), Some("1"));
    // The same limits and privileges as every sandbox.
    let hc = info.host_config.as_ref().unwrap();
    assert_eq!(hc.memory, Some(config.memory_bytes));
    assert_eq!(hc.pids_limit, Some(config.pids_limit));
    assert_eq!(hc.nano_cpus, Some(config.nano_cpus));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
    let mut added = hc.cap_add.clone().unwrap_or_default();
    added.sort();
    let mut want: Vec<String> = CAPS.iter().map(|c| c.to_string()).collect();
    want.sort();
    assert_eq!(added, want);
    assert!(
        hc.security_opt
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "no-new-privileges"))
    );
    // Published on the host's loopback only.
    for bindings in hc.port_bindings.as_ref().unwrap().values() {
        for pb in bindings.as_ref().unwrap() {
            assert_eq!(pb.host_ip.as_deref(), Some("127.0.0.1"), "{pb:?}");
        }
    }
    assert!(b.cdp_url.starts_with("http://127.0.0.1:"), "{b:?}");

    // The browser's processes count against the sandbox's pids limit: the container's cgroup
    // holds them (cgroup v1 or v2).
    let r = docker_common::sh(
        &g,
        "s",
        "cat /sys/fs/cgroup/pids/pids.current 2>/dev/null || cat /sys/fs/cgroup/pids.current",
    )
    .await;
    let pids: u64 = docker_common::out(&r).trim().parse().expect("pids.current");
    assert!(pids > 10, "the sandbox's cgroup holds only {pids} tasks");

    // A re-attached handle finds the same browser.
    let again = backend.get_docker(g.id()).await.expect("re-attach");
    assert!(again.capabilities().browser);
    let b2 = again.get_browser().await.unwrap();
    assert_eq!(b2, b);
    let hello = rfb::handshake(&again.vnc_url(), std::time::Duration::from_secs(30))
        .await
        .expect("VNC answers");
    assert!(hello.banner.starts_with("RFB 003.00"), "{hello:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_sandboxes_stay_small_and_browsers_can_be_switched_off() {
    // Without a request: the small default image, no browser.
    let g = docker_common::sandbox().await;
    assert!(!g.capabilities().browser && !g.capabilities().vnc);
    assert_eq!(
        g.get_browser().await.unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    let image = g
        .backend
        .docker()
        .inspect_container(&format!("sandbox-harness-{}", g.id()), None)
        .await
        .unwrap()
        .config
        .and_then(|c| c.image)
        .unwrap();
    assert_eq!(image, g.backend.image().await.unwrap());
    assert!(!image.starts_with(BROWSER_IMAGE_REPO), "{image}");
    drop(g);

    let off = Arc::new(
        DockerBackend::connect(DockerConfig {
            browser: BrowserMode::Off,
            ..DockerConfig::default()
        })
        .await
        .unwrap(),
    );
    let caps = SandboxBackend::capabilities(off.as_ref());
    assert!(!caps.browser && !caps.vnc);
    assert_eq!(
        off.create_with(BROWSER).await.err().map(|e| e.kind()),
        Some(ErrorKind::Unsupported)
    );
}
