//! `conform` and `shell` on the Cloud Run backend run on the embedded emulator, which the
//! command closes on its way out (at the end, and on Ctrl-C): afterwards no container carries
//! that emulator's label (`sandbox-harness.emulator=<instance>`, the instance the emulator logs
//! when it starts). A warm pool of one keeps an execution running that only closing removes.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::process::{Child, Command, Output, Stdio};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use sandbox_harness::emulator::run::EMULATOR_LABEL;

/// Starts the harness with the emulator's start logged and a warm pool of one.
fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sandbox-harness"))
        .args(args)
        .args(["--log", "warn,sandbox_harness::emulator::local=info"])
        .env_remove("RUST_LOG")
        .env("CLOUDRUN_POOL_SIZE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the harness starts")
}

/// Runs the harness to its end with `input` on stdin.
fn harness(args: &[&str], input: &str) -> Output {
    let mut child = spawn(args);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().expect("the harness ends")
}

/// The instance id of the emulator the run logged it started.
fn emulator_instance(o: &Output) -> String {
    instance_in(&String::from_utf8_lossy(&o.stderr))
}

fn instance_in(err: &str) -> String {
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

/// Ctrl-C in the middle of a session: the shell destroys nothing by hand, the close does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_interrupted_by_ctrl_c_leaves_no_emulator_container() {
    let mut child = spawn(&["shell", "--backend", "cloudrun"]);
    // A first command runs in the session's container; stdin stays open after it, so the
    // REPL waits for the next line when Ctrl-C comes.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo session-up\n").unwrap();
    stdin.flush().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("session-up") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("the shell ended before it ran the command:\n{printed}");
        }
        printed.push_str(&line);
    }
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("emulator started") {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("no emulator start logged:\n{seen}");
        }
        seen.push_str(&line);
    }
    let instance = instance_in(&seen);
    assert!(
        !containers_of(&instance).await.is_empty(),
        "the session runs in a container of the emulator"
    );
    drop(out);
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    // A hang guard, not a measurement: a shell that never ends fails instead of blocking.
    let mut status = None;
    for _ in 0..1200 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the shell did not end after Ctrl-C");
    };
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert_eq!(containers_of(&instance).await, Vec::<String>::new());
}
