//! Shared helpers of the Docker integration tests: a sandbox guard that destroys the container
//! on drop (even when the test panics).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sandbox_harness::backends::docker::{DockerBackend, DockerConfig, DockerSandbox};
use sandbox_harness::protocol::{Sandbox, ShellResult, StatefulExec};

/// A sandbox destroyed when the guard drops.
pub struct Guard {
    pub sb: Arc<DockerSandbox>,
    pub backend: Arc<DockerBackend>,
}

impl std::ops::Deref for Guard {
    type Target = DockerSandbox;
    fn deref(&self) -> &DockerSandbox {
        &self.sb
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let sb = self.sb.clone();
        // A separate thread with its own runtime: works from inside a runtime and on panic.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Err(e) = sb.destroy().await {
                    eprintln!("cleanup of sandbox {} failed: {e}", sb.id());
                }
            });
        })
        .join();
    }
}

/// A backend with the default configuration.
pub async fn backend() -> Arc<DockerBackend> {
    Arc::new(
        DockerBackend::connect(DockerConfig::default())
            .await
            .expect("docker engine reachable"),
    )
}

/// A new sandbox in a guard.
pub async fn sandbox() -> Guard {
    let backend = backend().await;
    let sb = backend.create_docker().await.expect("create sandbox");
    let g = Guard { sb, backend };
    g.sb.ensure_ready().await.expect("ready");
    g
}

/// Runs a stateful command in session `s` with a 30 s timeout.
pub async fn sh(sb: &DockerSandbox, s: &str, cmd: &str) -> ShellResult {
    sb.exec_stateful(StatefulExec::new(s, cmd, Duration::from_secs(30)))
        .await
        .unwrap_or_else(|e| panic!("{cmd:?} failed: {e}"))
}

/// Stdout as text.
pub fn out(r: &ShellResult) -> String {
    String::from_utf8_lossy(&r.stdout).into_owned()
}
