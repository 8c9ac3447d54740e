//! Helpers shared by the reliability tests (included with `#[path]`; as its own test target it
//! holds no tests).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox_harness::backends::cloudrun::{CloudRunBackend, CloudRunConfig};
use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::emulator::LocalCloud;
use sandbox_harness::emulator::faults::FaultConfig;
use sandbox_harness::emulator::server::EmulatorConfig;
use sandbox_harness::protocol::{Sandbox, StatefulExec};

/// Destroys every registered sandbox, then shuts the local cloud down, even after a panic.
#[derive(Default, Clone)]
pub struct Cleanup {
    sandboxes: Arc<Mutex<Vec<Arc<dyn Sandbox>>>>,
    local: Arc<Mutex<Option<Arc<LocalCloud>>>>,
}

impl Cleanup {
    /// Registers a sandbox to destroy.
    pub fn add(&self, sb: Arc<dyn Sandbox>) -> Arc<dyn Sandbox> {
        self.sandboxes.lock().unwrap().push(sb.clone());
        sb
    }

    /// Registers the local cloud to shut down last.
    pub fn set_local(&self, local: Arc<LocalCloud>) {
        *self.local.lock().unwrap() = Some(local);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if Arc::strong_count(&self.sandboxes) > 1 {
            return;
        }
        let sbs: Vec<_> = std::mem::take(&mut *self.sandboxes.lock().unwrap());
        let local = self.local.lock().unwrap().take();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    for sb in sbs {
                        let _ = sb.destroy().await;
                    }
                    if let Some(l) = local {
                        l.shutdown().await;
                    }
                })
        })
        .join();
    }
}

/// Log to the test writer when RUST_LOG says so.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A Docker backend with the default configuration.
pub async fn docker_backend() -> Arc<DockerBackend> {
    init_tracing();
    Arc::new(
        DockerBackend::connect(DockerConfig::default())
            .await
            .expect("docker engine reachable"),
    )
}

/// A Cloud Run backend on a fresh local cloud with `faults`.
pub async fn cloud_backend(faults: FaultConfig, cleanup: &Cleanup) -> Arc<CloudRunBackend> {
    init_tracing();
    let local = Arc::new(
        LocalCloud::start_with(EmulatorConfig {
            faults,
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator starts"),
    );
    cleanup.set_local(local.clone());
    let cfg = CloudRunConfig {
        worker_idle_secs: 60,
        ..CloudRunConfig::default()
    };
    Arc::new(
        CloudRunBackend::with_local(cfg, local)
            .await
            .expect("backend connects"),
    )
}

/// A stateful command with a 30 s timeout.
pub fn cmd(session: &str, command: &str) -> StatefulExec {
    StatefulExec::new(session, command, Duration::from_secs(30))
}

/// Stdout as a trimmed string.
pub fn out(r: &sandbox_harness::protocol::ShellResult) -> String {
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}
