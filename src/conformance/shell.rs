//! `sandbox-harness shell`: a line-oriented REPL on a sandbox. Each input line is a stateful
//! command; lines starting with `:` are meta-commands (see `:help`). Works from a pipe.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{
    ExecOutcome, ProcessSelector, ReadOptions, Sandbox, SandboxError, StatefulExec, UploadBody,
    WriteOptions,
};

use super::text::{escape_bytes, split_args};

/// The session the REPL uses.
pub const SESSION: &str = "shell";

/// The meta-command help text.
pub const HELP: &str = "\
commands: any other line runs as a stateful shell command (cwd and env persist)
  :read PATH [START END]    print lines START..END (0-based, end exclusive)
  :write PATH TEXT          write TEXT (plus a newline) to PATH
  :upload LOCAL REMOTE      stream a local file into the sandbox
  :download REMOTE LOCAL    stream a sandbox file to a local file
  :bg CMD                   start CMD in the background
  :ps                       list background processes
  :logs PID                 print a background process's output
  :kill PID                 kill a background process
  :exec CMD                 start CMD as the interactive command
  :view                     show the interactive command's output
  :wait SECS                wait for the interactive command
  :stdin TEXT               send TEXT and Enter to the interactive command
  :help                     this text
  :quit                     leave
";

/// Why the REPL stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// Reading input or writing output failed.
    #[error("shell i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the REPL until `:quit` or end of input; sandbox errors are printed, not fatal.
pub async fn run_repl<R, W>(
    sandbox: &dyn Sandbox,
    reader: R,
    mut writer: W,
) -> Result<(), ReplError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut lines = reader.lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let out = if let Some(meta) = line.strip_prefix(':') {
            match split_args(meta) {
                Err(e) => format!("error: {e}\n").into_bytes(),
                Ok(args) if args.first().map(String::as_str) == Some("quit") => break,
                Ok(args) => meta_command(sandbox, &args).await,
            }
        } else {
            stateful(sandbox, line).await
        };
        writer.write_all(&out).await?;
        writer.flush().await?;
    }
    Ok(())
}

fn err_text(e: &SandboxError) -> Vec<u8> {
    format!("error [{}]: {e}\n", e.kind()).into_bytes()
}

async fn stateful(sandbox: &dyn Sandbox, command: &str) -> Vec<u8> {
    match sandbox
        .exec_stateful(StatefulExec::new(
            SESSION,
            command,
            Duration::from_secs(300),
        ))
        .await
    {
        Err(e) => err_text(&e),
        Ok(r) => {
            let mut out = format!("exit: {}\n", r.exit_code).into_bytes();
            if let Some(pid) = r.background_pid {
                out.extend_from_slice(format!("background pid: {pid}\n").as_bytes());
            }
            section(&mut out, "stdout", &r.stdout);
            section(&mut out, "stderr", &r.stderr);
            if r.output_truncated {
                out.extend_from_slice(b"(output truncated)\n");
            }
            out
        }
    }
}

fn section(out: &mut Vec<u8>, name: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    out.extend_from_slice(format!("--- {name} ---\n").as_bytes());
    out.extend_from_slice(bytes);
    if !bytes.ends_with(b"\n") {
        out.push(b'\n');
    }
}

fn usage(msg: &str) -> Vec<u8> {
    format!("usage: {msg}\n").into_bytes()
}

async fn meta_command(sb: &dyn Sandbox, args: &[String]) -> Vec<u8> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result: Result<Vec<u8>, SandboxError> = async {
        Ok(match a.as_slice() {
            ["help"] => HELP.as_bytes().to_vec(),
            ["read", path] => read_file(sb, path, None).await?,
            ["read", path, start, end] => match (start.parse(), end.parse()) {
                (Ok(s), Ok(e)) => read_file(sb, path, Some((s, e))).await?,
                _ => usage(":read PATH [START END] (numbers)"),
            },
            ["write", path, text] => {
                let opts = WriteOptions {
                    trailing_newline: true,
                    ..Default::default()
                };
                sb.file_write(SESSION, path, text.as_bytes(), opts).await?;
                format!("wrote {} bytes\n", text.len() + 1).into_bytes()
            }
            ["upload", local, remote] => upload(sb, local, remote).await?,
            ["download", remote, local] => download(sb, remote, local).await?,
            ["bg", cmd @ ..] if !cmd.is_empty() => {
                let mut req = StatefulExec::new(SESSION, cmd.join(" "), Duration::from_secs(60));
                req.background = true;
                let r = sb.exec_stateful(req).await?;
                match r.background_pid {
                    Some(pid) => format!("started pid {pid}\n").into_bytes(),
                    None => b"started (no pid reported)\n".to_vec(),
                }
            }
            ["ps"] => background_table(sb).await?,
            ["logs", pid] => match pid.parse() {
                Ok(pid) => {
                    let mut out = sb.get_background_logs(pid).await?;
                    if !out.is_empty() && !out.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                    out
                }
                Err(_) => usage(":logs PID"),
            },
            ["kill", pid] => match pid.parse() {
                Ok(pid) => {
                    let killed = sb
                        .kill_background_process(ProcessSelector::Pid(pid))
                        .await?;
                    format!("killed {killed:?}\n").into_bytes()
                }
                Err(_) => usage(":kill PID"),
            },
            ["exec", cmd @ ..] if !cmd.is_empty() => {
                match sb.exec(SESSION, "", &cmd.join(" ")).await? {
                    ExecOutcome::Completed { exit_code, output } => {
                        let mut out = format!("exit: {exit_code}\n").into_bytes();
                        section(&mut out, "output", &output);
                        out
                    }
                    ExecOutcome::Running { pid } => {
                        format!("running (pid {pid}); use :view, :stdin, :wait\n").into_bytes()
                    }
                }
            }
            ["view"] => view(sb).await?,
            ["wait", secs] => match secs.parse::<f64>() {
                Ok(s) if s >= 0.0 && s.is_finite() => {
                    let code = sb
                        .wait_for_process(SESSION, Duration::from_secs_f64(s))
                        .await?;
                    format!("exit: {code}\n").into_bytes()
                }
                _ => usage(":wait SECS"),
            },
            ["stdin", text @ ..] => {
                sb.write_to_process(SESSION, text.join(" ").as_bytes(), true)
                    .await?;
                b"sent\n".to_vec()
            }
            [cmd, ..] => {
                format!("unknown or malformed meta-command :{cmd}; try :help\n").into_bytes()
            }
            [] => usage(":COMMAND [ARGS]; try :help"),
        })
    }
    .await;
    result.unwrap_or_else(|e| err_text(&e))
}

/// `:read PATH [START END]`: the file (or the line range), with a note when truncated.
async fn read_file(
    sb: &dyn Sandbox,
    path: &str,
    range: Option<(usize, usize)>,
) -> Result<Vec<u8>, SandboxError> {
    let mut opts = ReadOptions::default();
    if let Some((start, end)) = range {
        opts.start_line = Some(start);
        opts.end_line = Some(end);
    }
    let c = sb.file_read(SESSION, path, opts).await?;
    let mut out = c.content;
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    if c.truncated {
        out.extend_from_slice(b"(truncated)\n");
    }
    Ok(out)
}

/// `:upload LOCAL REMOTE`: streams a local file into the sandbox.
async fn upload(sb: &dyn Sandbox, local: &str, remote: &str) -> Result<Vec<u8>, SandboxError> {
    let f = match tokio::fs::File::open(local).await {
        Ok(f) => f,
        Err(e) => return Ok(format!("error: cannot open {local}: {e}\n").into_bytes()),
    };
    let len = f.metadata().await.ok().map(|m| m.len());
    let stream = tokio_util::io::ReaderStream::new(f).map(|r| {
        r.map_err(|e| {
            SandboxError::backend("-", "file_upload", format!("reading the local file: {e}"))
        })
    });
    let n = sb
        .file_upload(
            SESSION,
            remote,
            UploadBody {
                stream: Box::pin(stream),
                len,
            },
        )
        .await?;
    Ok(format!("uploaded {n} bytes\n").into_bytes())
}

/// `:download REMOTE LOCAL`: streams a sandbox file to `LOCAL.part`, then renames it.
async fn download(sb: &dyn Sandbox, remote: &str, local: &str) -> Result<Vec<u8>, SandboxError> {
    let mut stream = sb.file_download(SESSION, remote).await?;
    let tmp = format!("{local}.part");
    let mut f = match tokio::fs::File::create(&tmp).await {
        Ok(f) => f,
        Err(e) => return Ok(format!("error: cannot create {tmp}: {e}\n").into_bytes()),
    };
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        n += chunk.len() as u64;
        if let Err(e) = f.write_all(&chunk).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Ok(format!("error: writing {tmp}: {e}\n").into_bytes());
        }
    }
    let done = async {
        f.flush().await?;
        f.sync_all().await?;
        tokio::fs::rename(&tmp, local).await
    }
    .await;
    Ok(match done {
        Ok(()) => format!("downloaded {n} bytes\n").into_bytes(),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            format!("error: finishing {local}: {e}\n").into_bytes()
        }
    })
}

/// `:ps`: the background processes, one per line.
async fn background_table(sb: &dyn Sandbox) -> Result<Vec<u8>, SandboxError> {
    let procs = sb.list_background_processes(None).await?;
    let mut out = String::new();
    for p in procs {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            p.pid,
            if p.running { "running" } else { "exited" },
            p.session,
            escape_bytes(p.command.as_bytes())
        ));
    }
    if out.is_empty() {
        out.push_str("no background processes\n");
    }
    Ok(out.into_bytes())
}

/// `:view`: the interactive command, its state and output.
async fn view(sb: &dyn Sandbox) -> Result<Vec<u8>, SandboxError> {
    let v = sb.view_shell(SESSION).await?;
    let mut out = format!(
        "command: {}\nstate: {}\n",
        v.command,
        match (v.running, v.exit_code) {
            (true, _) => "running".to_string(),
            (false, Some(c)) => format!("exited {c}"),
            (false, None) => "not running".to_string(),
        }
    )
    .into_bytes();
    section(&mut out, "output", &v.output);
    Ok(out)
}
