//! `conform` and `shell` on the Cloud Run backend run on the embedded emulator, which the
//! command closes on its way out: afterwards no container carries that emulator's label
//! (`sandbox-harness.emulator=<instance>`, the instance the emulator logs when it starts).

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use sandbox_harness::emulator::run::EMULATOR_LABEL;

/// Runs the harness with the emulator's start logged, `input` on stdin.
fn harness(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-harness"))
        .args(args)
        .args(["--log", "warn,sandbox_harness::emulator::local=info"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the harness starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().expect("the harness ends")
}

/// The instance id of the emulator the run logged it started.
fn emulator_instance(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("emulator started"))
        .unwrap_or_else(|| panic!("no emulator start logged:\n{err}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("instance="))
        .unwrap_or_else(|| panic!("no instance in {line}"))
        .to_string()
}

async fn containers_of(instance: &str) -> Vec<String> {
    let docker = Docker::connect_with_defaults().expect("docker client");
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{EMULATOR_LABEL}={instance}")],
    )]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conform_and_shell_leave_no_emulator_container() {
    let dir = tempfile::tempdir().unwrap();
    let conform = harness(
        &[
            "conform",
            "--backend",
            "cloudrun",
            "--filter",
            "lifecycle.identity",
            "--out",
            dir.path().to_str().unwrap(),
        ],
        "",
    );
    assert!(
        conform.status.success(),
        "{}",
        String::from_utf8_lossy(&conform.stderr)
    );
    let instance = emulator_instance(&conform);
    assert_eq!(
        containers_of(&instance).await,
        Vec::<String>::new(),
        "conform"
    );

    let shell = harness(
        &["shell", "--backend", "cloudrun"],
        "echo from-the-shell\n:quit\n",
    );
    let out = String::from_utf8_lossy(&shell.stdout);
    assert!(
        shell.status.success() && out.contains("from-the-shell"),
        "{out}\n{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    let instance = emulator_instance(&shell);
    assert_eq!(
        containers_of(&instance).await,
        Vec::<String>::new(),
        "shell"
    );
}
