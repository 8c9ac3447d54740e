//! Helpers shared by the reliability tests (included with `#[path]`; as its own test target it
//! holds no tests).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox_harness::backends::cloudrun::{CloudRunBackend, CloudRunConfig};
use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::emulator::LocalCloud;
use sandbox_harness::emulator::server::EmulatorConfig;
use sandbox_harness::protocol::{Sandbox, StatefulExec};
use sandbox_harness::suites::faults::FaultConfig;

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
    let cfg = CloudRunConfig {
        worker_idle_secs: 60,
        ..CloudRunConfig::default()
    };
    cloud_backend_with(faults, cfg, cleanup).await
}

/// A Cloud Run backend configured by `cfg` on a fresh local cloud with `faults`.
pub async fn cloud_backend_with(
    faults: FaultConfig,
    cfg: CloudRunConfig,
    cleanup: &Cleanup,
) -> Arc<CloudRunBackend> {
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

/// Counts what a fault test did, so every figure it prints comes from a count in the same run:
/// faults injected, operations that still ended as documented, and state checks kept or lost.
#[derive(Debug, Default)]
pub struct Tally {
    /// Faults the test injected (or the emulator counted).
    pub injected: u64,
    /// Operations that ended as documented (success, or the documented error class).
    pub survived: u64,
    /// State checks made after faults.
    pub checks: u64,
    /// State checks that failed, by name.
    pub lost: Vec<String>,
}

impl Tally {
    /// One more fault injected.
    pub fn injected(&mut self, n: u64) {
        self.injected += n;
    }

    /// One more operation that ended as documented.
    pub fn survived(&mut self) {
        self.survived += 1;
    }

    /// A state check after faults: `kept` says whether the state was intact.
    pub fn state(&mut self, what: &str, kept: bool) {
        self.checks += 1;
        if !kept {
            self.lost.push(what.to_string());
        }
    }

    /// Prints the figures and fails when state was lost, no fault was injected, or no
    /// state was checked.
    pub fn finish(&self, label: &str) {
        println!(
            "{label}: faults injected {}, operations ended as documented {}, state checks {}, state lost {}",
            self.injected,
            self.survived,
            self.checks,
            self.lost.len()
        );
        assert!(self.injected > 0, "{label}: no fault was injected");
        assert!(self.checks > 0, "{label}: no state was checked");
        assert!(self.lost.is_empty(), "{label}: state lost: {:?}", self.lost);
    }
}
