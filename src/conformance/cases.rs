//! The built-in cases written in Rust (streams, concurrency, timing, lifecycle, browser
//! members) and the embedded built-in scenario files.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::protocol::{
    ErrorKind, ExecOutcome, ReadOptions, Sandbox, StatefulExec, UploadBody, WriteOptions,
};

use super::case::Case;
use super::steps::{SandboxGuard, T, case, ensure, expect_kind, run_stateful, sb};
use super::terms::{Capability, CaseCtx, CaseFailure, CaseLevel, CaseResult};
use super::text::{describe_mismatch, escape_bytes};

/// The built-in scenario files, embedded so the binary needs no source tree.
pub const BUILTIN_SCENARIOS: &[(&str, &str)] = &[
    (
        "background.scn",
        include_str!("../../suites/scenarios/background.scn"),
    ),
    ("exec.scn", include_str!("../../suites/scenarios/exec.scn")),
    (
        "workspace.scn",
        include_str!("../../suites/scenarios/workspace.scn"),
    ),
    (
        "files.scn",
        include_str!("../../suites/scenarios/files.scn"),
    ),
    (
        "interactive.scn",
        include_str!("../../suites/scenarios/interactive.scn"),
    ),
    (
        "stateful.scn",
        include_str!("../../suites/scenarios/stateful.scn"),
    ),
];

/// Every built-in Rust case.
pub fn rust_cases() -> Vec<Case> {
    use Capability as C;
    use CaseLevel::{Core, Extended};
    vec![
        case("lifecycle.identity", Core, &[], false, |c| {
            Box::pin(identity(c))
        }),
        case(
            "lifecycle.create_use_destroy_twice",
            Core,
            &[],
            false,
            |c| Box::pin(create_use_destroy(c)),
        ),
        case("lifecycle.ensure_ready_repeatable", Core, &[], false, |c| {
            Box::pin(ensure_ready_twice(c))
        }),
        case(
            "lifecycle.reattach_by_id",
            Core,
            &[C::Reattach],
            false,
            |c| Box::pin(reattach(c)),
        ),
        case("lifecycle.get_unknown_id", Core, &[], false, |c| {
            Box::pin(get_unknown(c))
        }),
        case(
            "lifecycle.browser_members_consistent",
            Core,
            &[],
            false,
            |c| Box::pin(browser_members(c)),
        ),
        case(
            "stateful.concurrent_sessions_isolated",
            Core,
            &[],
            false,
            |c| Box::pin(concurrent_sessions(c)),
        ),
        case(
            "stateful.timeout_kills_session_survives",
            Core,
            &[],
            false,
            |c| Box::pin(timeout_survives(c)),
        ),
        case("stateful.large_stdout_exact", Core, &[], false, |c| {
            Box::pin(large_stdout(c))
        }),
        case("exec.concurrent_sessions", Core, &[], false, |c| {
            Box::pin(exec_concurrent(c))
        }),
        case("files.concurrent_writes", Core, &[], false, |c| {
            Box::pin(concurrent_writes(c))
        }),
        case("files.all_byte_values", Core, &[], false, |c| {
            Box::pin(all_bytes(c))
        }),
        case("transfer.roundtrip_10mb", Core, &[], false, |c| {
            Box::pin(roundtrip_10mb(c))
        }),
        case("transfer.roundtrip_500mb", Extended, &[], true, |c| {
            Box::pin(roundtrip_500mb(c))
        }),
        case("transfer.unknown_length", Core, &[], false, |c| {
            Box::pin(unknown_length(c))
        }),
        case("transfer.empty_file", Core, &[], false, |c| {
            Box::pin(empty_file(c))
        }),
        case("transfer.download_missing", Core, &[], false, |c| {
            Box::pin(download_missing(c))
        }),
        case(
            "transfer.upload_replaces_atomically",
            Core,
            &[],
            false,
            |c| Box::pin(upload_replaces(c)),
        ),
        case(
            "transfer.download_directory_rejected",
            Extended,
            &[],
            false,
            |c| Box::pin(download_dir(c)),
        ),
    ]
    .into_iter()
    .chain(super::browser::cases())
    .collect()
}

async fn identity(ctx: CaseCtx) -> CaseResult {
    let s = &ctx.sandbox;
    ensure("id", !s.id().is_empty(), || {
        "the sandbox id is empty".into()
    })?;
    ensure(
        "backend_name",
        s.backend_name() == ctx.backend.name(),
        || {
            format!(
                "backend_name differs\n  expected: {}\n    actual: {}",
                ctx.backend.name(),
                s.backend_name()
            )
        },
    )?;
    // A sandbox offers what the backend declares; the browser and VNC, which a backend may
    // give only to sandboxes that ask for them, at least as far as this one asked.
    let (have, declared) = (s.capabilities(), ctx.backend.capabilities());
    let baseline = |c: crate::protocol::Capabilities| crate::protocol::Capabilities {
        browser: false,
        vnc: false,
        ..c
    };
    ensure(
        "capabilities",
        declared.contains(&have)
            && have.contains(&ctx.wants)
            && baseline(have) == baseline(declared),
        || {
            format!(
                "sandbox capabilities {have:?} do not fit the backend's {declared:?} and the request {:?}",
                ctx.wants
            )
        },
    )
}

async fn create_use_destroy(ctx: CaseCtx) -> CaseResult {
    let guard = SandboxGuard::new(sb("create", ctx.backend.create().await)?);
    let s = guard.sandbox();
    sb("ensure_ready", s.ensure_ready().await)?;
    ensure("distinct id", s.id() != ctx.sandbox.id(), || {
        "a new sandbox has the id of an existing one".into()
    })?;
    let r = run_stateful(&ctx, s.as_ref(), "s", "echo alive").await?;
    ensure("echo", r.stdout == b"alive\n", || {
        describe_mismatch(b"alive\n", &r.stdout)
    })?;
    sb("destroy", s.destroy().await)?;
    sb("destroy (second time)", s.destroy().await)?;
    let after = s
        .exec_stateful(StatefulExec::new(ctx.session("s"), "echo zombie", T))
        .await;
    ensure("exec after destroy", after.is_err(), || {
        format!("a destroyed sandbox still runs commands: {after:?}")
    })?;
    sb("destroy (guard)", guard.destroy().await)
}

async fn ensure_ready_twice(ctx: CaseCtx) -> CaseResult {
    sb("ensure_ready", ctx.sandbox.ensure_ready().await)?;
    sb("ensure_ready (again)", ctx.sandbox.ensure_ready().await)?;
    run_stateful(&ctx, ctx.sandbox.as_ref(), "s", "true")
        .await
        .map(|_| ())
}

async fn reattach(ctx: CaseCtx) -> CaseResult {
    let guard = SandboxGuard::new(sb("create", ctx.backend.create().await)?);
    let s = guard.sandbox();
    sb("ensure_ready", s.ensure_ready().await)?;
    sb(
        "file_write",
        s.file_write(
            &ctx.session("s"),
            "/workspace/reattach.txt",
            b"kept\n",
            WriteOptions::default(),
        )
        .await,
    )?;
    run_stateful(
        &ctx,
        s.as_ref(),
        "s",
        "mkdir -p /tmp/re && cd /tmp/re && export KEPT=yes",
    )
    .await?;
    let again = sb("get(id)", ctx.backend.get(s.id()).await)?;
    ensure("get(id)", again.id() == s.id(), || {
        format!(
            "re-attached id differs\n  expected: {}\n    actual: {}",
            s.id(),
            again.id()
        )
    })?;
    let c = sb(
        "file_read via re-attached handle",
        again
            .file_read(
                &ctx.session("s"),
                "/workspace/reattach.txt",
                ReadOptions::default(),
            )
            .await,
    )?;
    ensure(
        "file_read via re-attached handle",
        c.content == b"kept\n",
        || describe_mismatch(b"kept\n", &c.content),
    )?;
    let r = run_stateful(&ctx, again.as_ref(), "s", "echo \"$PWD $KEPT\"").await?;
    ensure(
        "session state via re-attached handle",
        r.stdout == b"/tmp/re yes\n",
        || describe_mismatch(b"/tmp/re yes\n", &r.stdout),
    )?;
    sb("destroy", guard.destroy().await)
}

async fn get_unknown(ctx: CaseCtx) -> CaseResult {
    expect_kind(
        "get(unknown id)",
        ctx.backend
            .get("sandbox-harness-no-such-sandbox-0000")
            .await
            .map(|s| s.id().to_string()),
        ErrorKind::NotFound,
    )
}

async fn browser_members(ctx: CaseCtx) -> CaseResult {
    let s = &ctx.sandbox;
    let caps = s.capabilities();
    ensure(
        "supports_browser",
        s.supports_browser() == caps.browser,
        || {
            format!(
                "supports_browser() = {} but capabilities().browser = {}",
                s.supports_browser(),
                caps.browser
            )
        },
    )?;
    if !caps.browser {
        ensure("cdp_url", s.cdp_url().is_empty(), || {
            format!("no browser, yet cdp_url() = {:?}", s.cdp_url())
        })?;
        expect_kind("get_browser", s.get_browser().await, ErrorKind::Unsupported)?;
    }
    if !caps.vnc {
        ensure("vnc_url", s.vnc_url().is_empty(), || {
            format!("no VNC, yet vnc_url() = {:?}", s.vnc_url())
        })?;
    }
    Ok(())
}

async fn concurrent_sessions(ctx: CaseCtx) -> CaseResult {
    let base = ctx.case_dir.clone();
    let futs = (0..4).map(|i| {
        let ctx = ctx.clone();
        let base = base.clone();
        async move {
            let s = format!("p{i}");
            let sbx = ctx.sandbox.clone();
            run_stateful(
                &ctx,
                sbx.as_ref(),
                &s,
                &format!("mkdir -p '{base}/d{i}' && cd '{base}/d{i}' && export WHO='session {i}'"),
            )
            .await?;
            for _ in 0..3 {
                let r = run_stateful(&ctx, sbx.as_ref(), &s, "echo \"$WHO\" && pwd").await?;
                let want = format!("session {i}\n{base}/d{i}\n");
                ensure(&format!("session {s}"), r.stdout == want.as_bytes(), || {
                    describe_mismatch(want.as_bytes(), &r.stdout)
                })?;
            }
            Ok::<_, CaseFailure>(())
        }
    });
    for r in futures::future::join_all(futs).await {
        r?;
    }
    Ok(())
}

async fn timeout_survives(ctx: CaseCtx) -> CaseResult {
    let s = ctx.sandbox.as_ref();
    run_stateful(
        &ctx,
        s,
        "s",
        &format!("mkdir -p {0} && cd {0} && export KEEP=1", ctx.case_dir),
    )
    .await?;
    let started = std::time::Instant::now();
    let r = s
        .exec_stateful(StatefulExec::new(
            ctx.session("s"),
            "echo before; sleep 30; echo after",
            Duration::from_secs(2),
        ))
        .await;
    expect_kind(
        "exec_stateful with a 2 s timeout on `sleep 30`",
        r,
        ErrorKind::Timeout,
    )?;
    ensure(
        "timeout",
        started.elapsed() < Duration::from_secs(25),
        || {
            format!(
                "the timeout returned after {:?}, not near 2 s",
                started.elapsed()
            )
        },
    )?;
    let r = run_stateful(&ctx, s, "s", "echo \"$KEEP\" && pwd").await?;
    let want = format!("1\n{}\n", ctx.case_dir);
    ensure(
        "the session after a timeout",
        r.stdout == want.as_bytes(),
        || describe_mismatch(want.as_bytes(), &r.stdout),
    )
}

async fn large_stdout(ctx: CaseCtx) -> CaseResult {
    let r = run_stateful(
        &ctx,
        ctx.sandbox.as_ref(),
        "s",
        "i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done",
    )
    .await?;
    let want: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    ensure(
        "20000 lines of stdout",
        r.stdout == want.as_bytes() && !r.output_truncated,
        || describe_mismatch(want.as_bytes(), &r.stdout),
    )
}

async fn exec_concurrent(ctx: CaseCtx) -> CaseResult {
    let futs = (0..3).map(|i| {
        let ctx = ctx.clone();
        async move {
            let s = ctx.session(&format!("x{i}"));
            let out = sb(
                "exec",
                ctx.sandbox
                    .exec(&s, "/tmp", &format!("echo exec-{i}; pwd"))
                    .await,
            )?;
            let output = match out {
                ExecOutcome::Completed { exit_code, output } => {
                    ensure("exec exit code", exit_code == 0, || {
                        format!("exit code {exit_code}")
                    })?;
                    output
                }
                ExecOutcome::Running { .. } => {
                    sb(
                        "wait_for_process",
                        ctx.sandbox.wait_for_process(&s, T).await,
                    )?;
                    sb("view_shell", ctx.sandbox.view_shell(&s).await)?.output
                }
            };
            let want = format!("exec-{i}\n/tmp\n");
            ensure(
                &format!("exec in session x{i}"),
                output == want.as_bytes(),
                || describe_mismatch(want.as_bytes(), &output),
            )
        }
    });
    for r in futures::future::join_all(futs).await {
        r?;
    }
    Ok(())
}

async fn concurrent_writes(ctx: CaseCtx) -> CaseResult {
    let futs = (0..6).map(|i| {
        let ctx = ctx.clone();
        async move {
            let path = format!("{}/f{i}.txt", ctx.case_dir);
            let content = format!("file {i}\n").repeat(100 + i);
            sb(
                "file_write",
                ctx.sandbox
                    .file_write(
                        &ctx.session("s"),
                        &path,
                        content.as_bytes(),
                        WriteOptions::default(),
                    )
                    .await,
            )?;
            let back = sb(
                "file_read",
                ctx.sandbox
                    .file_read(&ctx.session("s"), &path, ReadOptions::default())
                    .await,
            )?;
            ensure(
                &format!("file_read {path}"),
                back.content == content.as_bytes(),
                || describe_mismatch(content.as_bytes(), &back.content),
            )
        }
    });
    for r in futures::future::join_all(futs).await {
        r?;
    }
    Ok(())
}

async fn all_bytes(ctx: CaseCtx) -> CaseResult {
    let content: Vec<u8> = (0..4).flat_map(|_| 0u8..=255).collect();
    let path = format!("{}/bytes.bin", ctx.case_dir);
    let s = ctx.session("s");
    sb(
        "file_write",
        ctx.sandbox
            .file_write(&s, &path, &content, WriteOptions::default())
            .await,
    )?;
    let back = sb(
        "file_read",
        ctx.sandbox
            .file_read(&s, &path, ReadOptions::default())
            .await,
    )?;
    ensure(
        "file_read of every byte value",
        back.content == content,
        || describe_mismatch(&content, &back.content),
    )?;
    let down = download_all(ctx.sandbox.as_ref(), &s, &path, 1 << 20).await?;
    ensure("file_download of every byte value", down == content, || {
        describe_mismatch(&content, &down)
    })
}

async fn download_all(
    sbx: &dyn Sandbox,
    session: &str,
    path: &str,
    limit: usize,
) -> Result<Vec<u8>, CaseFailure> {
    let mut stream = sb("file_download", sbx.file_download(session, path).await)?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&sb("file_download stream", chunk)?);
        ensure("file_download", out.len() <= limit, || {
            format!("download exceeds {limit} bytes")
        })?;
    }
    Ok(out)
}

/// A deterministic pseudo-random stream of `len` bytes in 1 MiB chunks, and its SHA-256.
fn pattern_stream(len: u64) -> (UploadBody, [u8; 32]) {
    let mut h = Sha256::new();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(1 << 20) as usize;
        h.update(chunk(done, n));
        done += n as u64;
    }
    let digest: [u8; 32] = h.finalize().into();
    let stream = futures::stream::unfold(0u64, move |done| async move {
        if done >= len {
            return None;
        }
        let n = (len - done).min(1 << 20) as usize;
        Some((Ok(Bytes::from(chunk(done, n))), done + n as u64))
    });
    (
        UploadBody {
            stream: Box::pin(stream),
            len: Some(len),
        },
        digest,
    )
}

fn chunk(offset: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| {
            let x = (offset + i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (x >> 56) as u8
        })
        .collect()
}

async fn roundtrip(ctx: &CaseCtx, len: u64, known_len: bool) -> CaseResult {
    let (mut body, digest) = pattern_stream(len);
    if !known_len {
        body.len = None;
    }
    let s = ctx.session("s");
    let path = format!("{}/blob with space.bin", ctx.case_dir);
    let n = sb(
        "file_upload",
        ctx.sandbox.file_upload(&s, &path, body).await,
    )?;
    ensure("file_upload", n == len, || {
        format!("bytes written differ\n  expected: {len}\n    actual: {n}")
    })?;
    let mut stream = sb("file_download", ctx.sandbox.file_download(&s, &path).await)?;
    let mut h = Sha256::new();
    let mut got = 0u64;
    while let Some(c) = stream.next().await {
        let c = sb("file_download stream", c)?;
        got += c.len() as u64;
        h.update(&c);
    }
    let back: [u8; 32] = h.finalize().into();
    ensure("file_download", got == len, || {
        format!("downloaded length differs\n  expected: {len}\n    actual: {got}")
    })?;
    ensure("file_download sha256", back == digest, || {
        format!(
            "sha256 differs\n  expected: {}\n    actual: {}",
            hex::encode(digest),
            hex::encode(back)
        )
    })?;
    let r = run_stateful(
        ctx,
        ctx.sandbox.as_ref(),
        "s",
        &format!("sha256sum '{path}'"),
    )
    .await?;
    let inside = String::from_utf8_lossy(&r.stdout);
    ensure(
        "sha256sum inside the sandbox",
        inside.starts_with(&hex::encode(digest)),
        || {
            format!(
                "sha256 inside the sandbox differs\n  expected: {}\n    actual: {inside}",
                hex::encode(digest)
            )
        },
    )?;
    sb("file_delete", ctx.sandbox.file_delete(&s, &path).await)
}

async fn roundtrip_10mb(ctx: CaseCtx) -> CaseResult {
    roundtrip(&ctx, 10 * 1024 * 1024, true).await
}

async fn roundtrip_500mb(ctx: CaseCtx) -> CaseResult {
    roundtrip(&ctx, 500 * 1024 * 1024, true).await
}

async fn unknown_length(ctx: CaseCtx) -> CaseResult {
    roundtrip(&ctx, 3 * 1024 * 1024 + 17, false).await
}

async fn empty_file(ctx: CaseCtx) -> CaseResult {
    let s = ctx.session("s");
    let path = format!("{}/empty", ctx.case_dir);
    let n = sb(
        "file_upload",
        ctx.sandbox
            .file_upload(&s, &path, UploadBody::from_bytes(Bytes::new()))
            .await,
    )?;
    ensure("file_upload", n == 0, || {
        format!("{n} bytes written for an empty body")
    })?;
    ensure(
        "file_exists",
        sb("file_exists", ctx.sandbox.file_exists(&s, &path).await)?,
        || "the empty upload does not exist".into(),
    )?;
    let d = download_all(ctx.sandbox.as_ref(), &s, &path, 1).await?;
    ensure("file_download", d.is_empty(), || {
        format!("an empty file downloads as \"{}\"", escape_bytes(&d))
    })
}

async fn download_missing(ctx: CaseCtx) -> CaseResult {
    let r = ctx
        .sandbox
        .file_download(&ctx.session("s"), &format!("{}/missing", ctx.case_dir))
        .await;
    match r {
        Err(e) => expect_kind::<()>(
            "file_download of a missing file",
            Err(e),
            ErrorKind::NotFound,
        ),
        Ok(mut stream) => match stream.next().await {
            Some(Err(e)) => expect_kind::<()>(
                "file_download of a missing file (first chunk)",
                Err(e),
                ErrorKind::NotFound,
            ),
            _ => Err(CaseFailure::at(
                "file_download of a missing file",
                "expected an error of class not_found, got a stream of data",
            )),
        },
    }
}

async fn upload_replaces(ctx: CaseCtx) -> CaseResult {
    let s = ctx.session("s");
    let path = format!("{}/replace.txt", ctx.case_dir);
    sb(
        "file_write",
        ctx.sandbox
            .file_write(
                &s,
                &path,
                &b"old content that is longer\n".repeat(50),
                WriteOptions::default(),
            )
            .await,
    )?;
    sb(
        "file_upload",
        ctx.sandbox
            .file_upload(&s, &path, UploadBody::from_bytes(&b"new\n"[..]))
            .await,
    )?;
    let d = download_all(ctx.sandbox.as_ref(), &s, &path, 1 << 20).await?;
    ensure(
        "file_download after replacing upload",
        d == b"new\n",
        || describe_mismatch(b"new\n", &d),
    )
}

async fn download_dir(ctx: CaseCtx) -> CaseResult {
    let s = ctx.session("s");
    sb(
        "file_write",
        ctx.sandbox
            .file_write(
                &s,
                &format!("{}/d/x", ctx.case_dir),
                b"x",
                WriteOptions::default(),
            )
            .await,
    )?;
    let path = format!("{}/d", ctx.case_dir);
    match ctx.sandbox.file_download(&s, &path).await {
        Err(e) => ensure(
            "file_download of a directory",
            e.kind() == ErrorKind::InvalidInput,
            || {
                format!(
                    "error class differs\n  expected: invalid_input\n    actual: {} ({e})",
                    e.kind()
                )
            },
        ),
        Ok(mut st) => match st.next().await {
            Some(Err(e)) if e.kind() == ErrorKind::InvalidInput => Ok(()),
            other => Err(CaseFailure::at(
                "file_download of a directory",
                format!(
                    "expected an error of class invalid_input, got {:?}",
                    other.map(|r| r.map(|b| b.len()))
                ),
            )),
        },
    }
}
