//! Stateful shell, interactive shell and background processes against the real Docker engine.

mod docker_common;

use std::time::Duration;

use docker_common::{out, sandbox, sh};
use sandbox_harness::protocol::{
    ErrorKind, ExecOutcome, ProcessSelector, Sandbox, SandboxBackend, StatefulExec,
};

#[tokio::test]
async fn cwd_and_env_persist_across_commands() {
    let sb = sandbox().await;
    let r = sh(&sb, "main", "pwd").await;
    assert_eq!(out(&r), "/workspace\n");
    assert_eq!(r.cwd, "/workspace");

    let r = sh(&sb, "main", "mkdir -p 'd 1/x' && cd 'd 1/x' && echo in").await;
    assert_eq!(out(&r), "in\n");
    assert_eq!(r.cwd, "/workspace/d 1/x");
    assert_eq!(out(&sh(&sb, "main", "pwd").await), "/workspace/d 1/x\n");

    sh(
        &sb,
        "main",
        "export A='x y'; export Q=\"it's \\\"q\\\" \\$HOME\"",
    )
    .await;
    sh(
        &sb,
        "main",
        "export NL='line1\nline2'; export D='$notexpanded'",
    )
    .await;
    assert_eq!(out(&sh(&sb, "main", "echo \"$A\"").await), "x y\n");
    assert_eq!(
        out(&sh(&sb, "main", "printf '%s' \"$Q\"").await),
        "it's \"q\" $HOME"
    );
    assert_eq!(
        out(&sh(&sb, "main", "printf '%s' \"$NL\"").await),
        "line1\nline2"
    );
    assert_eq!(
        out(&sh(&sb, "main", "printf '%s' \"$D\"").await),
        "$notexpanded"
    );
    sh(&sb, "main", "unset A").await;
    assert_eq!(
        out(&sh(&sb, "main", "echo \"${A-unset}\"").await),
        "unset\n"
    );

    // A command that fails half-way keeps what happened before the failure.
    let r = sh(
        &sb,
        "main",
        "cd /tmp && export H=half && false && export NEVER=1",
    )
    .await;
    assert_eq!(r.exit_code, 1);
    assert_eq!(r.cwd, "/tmp");
    assert_eq!(
        out(&sh(&sb, "main", "echo \"$H-${NEVER-none}\"").await),
        "half-none\n"
    );

    // exit keeps state and reports the status.
    let r = sh(&sb, "main", "export E=1; cd /; exit 3").await;
    assert_eq!(r.exit_code, 3);
    assert_eq!(r.cwd, "/");
    assert_eq!(out(&sh(&sb, "main", "echo $E").await), "1\n");

    // Sessions are independent.
    let other = sh(&sb, "other", "pwd; echo \"${H-none}\"").await;
    assert_eq!(out(&other), "/workspace\nnone\n");
}

#[tokio::test]
async fn exit_codes_and_stream_separation() {
    let sb = sandbox().await;
    let r = sh(&sb, "s", "echo out; echo err >&2; exit 7").await;
    assert_eq!(r.exit_code, 7);
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    assert!(!r.output_truncated);
    let r = sh(&sb, "s", "printf 'a\\0b\\377'").await;
    assert_eq!(r.stdout, b"a\0b\xff");
    let r = sh(&sb, "s", "nosuchcommand").await;
    assert_eq!(r.exit_code, 127);
    let r = sh(&sb, "s", "head -c 20000000 /dev/zero").await;
    assert!(r.output_truncated);
    assert!(r.stdout.len() <= sandbox_harness::transport::MAX_OUTPUT + 200);
    assert!(String::from_utf8_lossy(&r.stdout[r.stdout.len() - 150..]).contains("truncated"));
    assert_eq!(out(&sh(&sb, "s", "echo after").await), "after\n");

    let e = sb
        .exec_stateful(StatefulExec::new(
            "bad/name",
            "true",
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn timeout_kills_and_session_survives() {
    let sb = sandbox().await;
    sh(&sb, "t", "cd /tmp; export KEEP=yes").await;
    let e = sb
        .exec_stateful(StatefulExec::new(
            "t",
            "cd /; export KEEP=no; touch /tmp/started; sleep 30; touch /tmp/finished",
            Duration::from_secs(1),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let r = sh(
        &sb,
        "t",
        "pwd; echo $KEEP; ls /tmp/started; ps | grep -c 'sleep 30' || true",
    )
    .await;
    let text = out(&r);
    assert!(text.starts_with("/tmp\nyes\n/tmp/started\n"), "{text}");
    // Only the grep itself may match: the sleep was killed.
    assert!(!text.contains("\n2\n"), "{text}");
    sb.file_exists("t", "/tmp/finished").await.unwrap();
    assert!(!sb.file_exists("t", "/tmp/finished").await.unwrap());
}

#[tokio::test]
async fn background_start_list_logs_kill() {
    let sb = sandbox().await;
    sh(&sb, "bg", "cd /tmp && export GREETING=hello").await;
    let r = sh(&sb, "bg", "echo $GREETING from $(pwd); sleep 300 &").await;
    let pid1 = r.background_pid.expect("background pid");
    let r = sb
        .exec_stateful(StatefulExec {
            background: true,
            ..StatefulExec::new("bg2", "sleep 301", Duration::from_secs(5))
        })
        .await
        .unwrap();
    let pid2 = r.background_pid.unwrap();
    let r = sh(&sb, "bg", "echo done-quick &").await;
    let pid3 = r.background_pid.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let all = sb.list_background_processes(None).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    let p1 = all.iter().find(|p| p.pid == pid1).unwrap();
    assert!(p1.running);
    assert_eq!(p1.session, "bg");
    assert!(p1.command.contains("sleep 300"));
    assert!(!all.iter().find(|p| p.pid == pid3).unwrap().running);
    let only = sb.list_background_processes(Some("bg2")).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].pid, pid2);

    let log = sb.get_background_logs(pid1).await.unwrap();
    assert_eq!(log, b"hello from /tmp\n");
    assert_eq!(sb.get_background_logs(pid3).await.unwrap(), b"done-quick\n");
    assert_eq!(
        sb.get_background_logs(999_999).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let killed = sb
        .kill_background_process(ProcessSelector::Pattern("sleep 301".into()))
        .await
        .unwrap();
    assert_eq!(killed, vec![pid2]);
    let killed = sb
        .kill_background_process(ProcessSelector::Session("bg".into()))
        .await
        .unwrap();
    assert_eq!(killed, vec![pid1]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        sb.list_background_processes(None)
            .await
            .unwrap()
            .iter()
            .all(|p| !p.running)
    );
    let r = sh(&sb, "bg", "sleep 302 &").await;
    let pid4 = r.background_pid.unwrap();
    let killed = sb
        .kill_background_process(ProcessSelector::Pid(pid4))
        .await
        .unwrap();
    assert_eq!(killed, vec![pid4]);
    assert_eq!(
        sb.kill_background_process(ProcessSelector::Pid(999_999))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let ps = out(&sh(&sb, "bg", "ps -o args | grep -c '^sleep 30[0-9]' || true").await);
    assert_eq!(ps.trim(), "0");
}

#[tokio::test]
async fn interactive_exec_stdin_wait_and_kill() {
    let sb = sandbox().await;
    match sb.exec("i", "", "echo hi; exit 4").await.unwrap() {
        ExecOutcome::Completed { exit_code, output } => {
            assert_eq!(exit_code, 4);
            assert_eq!(output, b"hi\n");
        }
        other => panic!("{other:?}"),
    }
    sh(&sb, "i", "mkdir -p /tmp/w; export V=val").await;
    match sb.exec("i", "/tmp/w", "echo $V $(pwd)").await.unwrap() {
        ExecOutcome::Completed { output, .. } => assert_eq!(output, b"val /tmp/w\n"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sb.exec("i", "/nonexistent", "true")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    let pid = match sb
        .exec("i", "", "read line; echo got:$line; read l2; echo two:$l2")
        .await
        .unwrap()
    {
        ExecOutcome::Running { pid } => pid,
        other => panic!("{other:?}"),
    };
    assert!(pid > 1);
    let v = sb.view_shell("i").await.unwrap();
    assert!(v.running);
    assert!(v.command.starts_with("read line"));
    // A second command while one runs is refused.
    assert_eq!(
        sb.exec("i", "", "true").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    sb.write_to_process("i", b"hello world", true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sb.view_shell("i").await.unwrap().output,
        b"got:hello world\n"
    );
    assert_eq!(
        sb.wait_for_process("i", Duration::from_millis(300))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    sb.write_to_process("i", b"x", false).await.unwrap();
    sb.write_to_process("i", b"y\n", false).await.unwrap();
    assert_eq!(
        sb.wait_for_process("i", Duration::from_secs(5))
            .await
            .unwrap(),
        0
    );
    let v = sb.view_shell("i").await.unwrap();
    assert_eq!(v.output, b"got:hello world\ntwo:xy\n");
    assert_eq!((v.running, v.exit_code), (false, Some(0)));
    assert_eq!(
        sb.write_to_process("i", b"late", true)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );

    assert!(matches!(
        sb.exec("i", "", "sleep 100").await.unwrap(),
        ExecOutcome::Running { .. }
    ));
    sb.kill_process("i").await.unwrap();
    assert_eq!(
        sb.wait_for_process("i", Duration::from_secs(5))
            .await
            .unwrap(),
        137
    );
    assert!(!sb.view_shell("i").await.unwrap().running);
    assert_eq!(
        sb.view_shell("never").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        sb.write_to_process("never", b"x", true)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn reattach_keeps_sessions_and_destroy_is_idempotent() {
    let g = sandbox().await;
    sh(
        &g,
        "keep",
        "mkdir -p /tmp/re && cd /tmp/re && export R='a b$c'",
    )
    .await;
    let pid = sh(&g, "keep", "sleep 200 &").await.background_pid.unwrap();
    let again = g.backend.get(g.id()).await.unwrap();
    let r = again
        .exec_stateful(StatefulExec::new(
            "keep",
            "pwd; printf '%s' \"$R\"",
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    assert_eq!(r.stdout, b"/tmp/re\na b$c");
    let bg = again.list_background_processes(Some("keep")).await.unwrap();
    assert_eq!(bg.len(), 1);
    assert_eq!(bg[0].pid, pid);
    assert!(bg[0].running);
    // file paths resolve against the re-attached session's cwd
    again
        .file_write("keep", "rel.txt", b"x", Default::default())
        .await
        .unwrap();
    assert!(g.file_exists("main", "/tmp/re/rel.txt").await.unwrap());

    assert!(!g.supports_browser());
    assert_eq!(
        g.get_browser().await.unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(g.cdp_url(), "");

    g.destroy().await.unwrap();
    g.destroy().await.unwrap();
    assert_eq!(
        g.backend.get(g.id()).await.err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        g.backend
            .get("no-such-sandbox")
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
}
