//! What the real-client tests share: finding a tool (or failing with a message naming
//! `scripts/setup.sh`) and running it as a subprocess without blocking the runtime.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of `tool` on PATH; panics naming `scripts/setup.sh` when it is absent, so a
/// missing tool fails the test instead of passing it silently.
pub fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{tool}` is not installed: run scripts/setup.sh (it installs what these tests need)")
        })
}

/// Panics naming `scripts/setup.sh` when the Python module is not importable.
pub fn require_python_module(module: &str, package: &str) {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the Python package {package} (module {module}) is not installed: run scripts/setup.sh"
    );
}

/// Runs `cmd` on a blocking thread and returns its output.
pub async fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
}

/// Output as text, for messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
