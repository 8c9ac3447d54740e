//! The core every in-sandbox agent shares: one process request ([`Request`]) run to completion
//! in its own process group with its deadline and capped output, answered as a [`Response`].
//! The Docker agent (`serve`) and the Cloud Run worker (`worker`) both call [`execute`].

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::output::CappedBuf;

/// One process for an agent to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Request id (also the file name); sortable by creation time.
    pub id: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Stdin bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_b64: Option<String>,
    /// Kill the process group after this many milliseconds (0 = no deadline).
    pub deadline_ms: u64,
}

/// What the worker answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request id.
    pub id: String,
    /// Exit status (128 + signal when killed).
    pub exit_code: i32,
    /// Stdout, base64 (capped with a marker).
    pub stdout_b64: String,
    /// Stderr, base64 (capped with a marker).
    pub stderr_b64: String,
    /// True when stdout or stderr was cut.
    pub truncated: bool,
    /// True when the deadline killed the process group.
    pub timed_out: bool,
    /// Why the process could not be run at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds the process ran.
    pub duration_ms: u64,
    /// When the Cloud Run worker took and ran the request, by its clock (the bench's
    /// per-phase breakdown of a warm command reads it; absent from other agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<WorkerTiming>,
    /// The Cloud Run worker's next inbox sequence number when it answered (a client that
    /// queued from a stale position catches up; absent from other agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox_next: Option<u64>,
}

/// Unix milliseconds, by the worker's clock, of the steps of one request the worker served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTiming {
    /// Its claim (the inbox object's deletion) was done.
    pub claimed_ms: u64,
    /// The process started (after the request object was read).
    pub run_started_ms: u64,
    /// The process ended; the answer's write starts.
    pub run_ended_ms: u64,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// True when a request id is safe as a file name.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Runs one request to completion (or to its deadline).
pub fn execute(req: &Request) -> Response {
    let started = Instant::now();
    let fail = |msg: String| Response {
        id: req.id.clone(),
        exit_code: 127,
        stdout_b64: String::new(),
        stderr_b64: String::new(),
        truncated: false,
        timed_out: false,
        error: Some(msg),
        duration_ms: started.elapsed().as_millis() as u64,
        timing: None,
        inbox_next: None,
    };
    let Some((prog, args)) = req.argv.split_first() else {
        return fail("empty argv".into());
    };
    let stdin = match req.stdin_b64.as_deref().map(|s| B64.decode(s)) {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => return fail(format!("stdin is not base64: {e}")),
        None => None,
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {prog:?}: {e}")),
    };
    let pid = child.id() as i32;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = CappedBuf::new();
            if let Some(mut p) = pipe {
                let mut chunk = [0u8; 64 * 1024];
                loop {
                    match p.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.push(&chunk[..n]),
                    }
                }
            }
            buf.finish()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let mut timed_out = false;
    let status = if req.deadline_ms == 0 {
        rx.recv().ok()
    } else {
        match rx.recv_timeout(Duration::from_millis(req.deadline_ms)) {
            Ok(s) => Some(s),
            Err(_) => {
                timed_out = true;
                // SAFETY: kill(2) with a negative pid signals the process group we created.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                rx.recv().ok()
            }
        }
    };
    // Children may still hold the pipes (as under `docker exec`, output ends when every writer
    // has closed it). Detached children (setsid) are left alone: killing the group right away
    // would race a child that has not yet left it. Past the deadline, the group is killed.
    let until = started + Duration::from_millis(req.deadline_ms);
    while !(out.is_finished() && err.is_finished()) {
        if req.deadline_ms != 0 && Instant::now() >= until {
            timed_out = true;
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (stdout, t1) = out.join().unwrap_or_default();
    let (stderr, t2) = err.join().unwrap_or_default();
    let exit_code = match status {
        Some(Ok(s)) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        _ => 128 + libc::SIGKILL,
    };
    Response {
        id: req.id.clone(),
        exit_code,
        stdout_b64: B64.encode(stdout),
        stderr_b64: B64.encode(stderr),
        truncated: t1 || t2,
        timed_out,
        error: None,
        duration_ms: started.elapsed().as_millis() as u64,
        timing: None,
        inbox_next: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, argv: &[&str]) -> Request {
        Request {
            id: id.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin_b64: None,
            deadline_ms: 5000,
        }
    }

    #[test]
    fn executes_with_stdin_and_separates_streams() {
        let mut r = req("a", &["sh", "-c", "cat; echo err >&2; exit 4"]);
        r.stdin_b64 = Some(B64.encode(b"in\0put"));
        let resp = execute(&r);
        assert_eq!(resp.exit_code, 4);
        assert_eq!(B64.decode(&resp.stdout_b64).unwrap(), b"in\0put");
        assert_eq!(B64.decode(&resp.stderr_b64).unwrap(), b"err\n");
        assert!(!resp.timed_out);
    }

    #[test]
    fn deadline_kills_the_group() {
        let mut r = req("b", &["sh", "-c", "sleep 30 & sleep 30; echo never"]);
        r.deadline_ms = 200;
        let t = Instant::now();
        let resp = execute(&r);
        assert!(resp.timed_out);
        assert_eq!(resp.exit_code, 128 + libc::SIGKILL);
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn detached_children_outlive_their_request() {
        for _ in 0..20 {
            let resp = execute(&req(
                "e",
                &[
                    "sh",
                    "-c",
                    "setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $!",
                ],
            ));
            let pid: i32 = String::from_utf8(B64.decode(resp.stdout_b64).unwrap())
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            assert!(
                alive,
                "the detached child {pid} was killed with its request"
            );
        }
    }

    #[test]
    fn missing_program_is_an_error_not_a_panic() {
        let resp = execute(&req("c", &["/nonexistent/prog"]));
        assert!(resp.error.is_some());
        assert!(execute(&req("d", &[])).error.is_some());
    }
}
