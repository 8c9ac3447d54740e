//! The session worker that runs inside a Cloud Run job execution, and the file protocol it
//! speaks with the harness through the sandbox's state directory (a Cloud Storage volume).
//!
//! Layout under the state directory:
//! - `inbox/<id>.json`: a [`Request`] written by the harness (through the Storage API);
//! - `claimed/<id>.json`: the worker moves a request here before running it, so a request is
//!   run at most once even if the worker dies and another one starts;
//! - `outbox/<id>.json`: the [`Response`], written whole (temp file + rename);
//! - `worker.json`: the [`Heartbeat`], rewritten every [`HEARTBEAT_EVERY`].
//!
//! Requests run concurrently, each in its own process group; a request past its deadline has
//! its whole group killed.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::output::CappedBuf;

/// How often the worker rewrites its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A heartbeat older than this means its worker is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// Inbox directory name.
pub const INBOX: &str = "inbox";
/// Claimed-requests directory name.
pub const CLAIMED: &str = "claimed";
/// Outbox directory name.
pub const OUTBOX: &str = "outbox";
/// Heartbeat file name.
pub const HEARTBEAT: &str = "worker.json";

/// One process for the worker to run.
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
}

/// The worker's liveness record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The Cloud Run execution running this worker.
    pub execution: String,
    /// "running" while it accepts requests, "stopping" once it has decided to exit.
    pub status: String,
    /// Unix milliseconds of this beat.
    pub beat_ms: u64,
    /// Unix milliseconds when the worker started.
    pub started_ms: u64,
    /// Requests served so far.
    pub served: u64,
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The state directory (inbox, claimed, outbox, heartbeat).
    pub state_dir: PathBuf,
    /// Exit after this long with no request.
    pub idle_timeout: Duration,
    /// How often the inbox is scanned.
    pub poll: Duration,
    /// Stop accepting requests after this long (keep it under the task timeout).
    pub max_lifetime: Duration,
    /// The execution name for the heartbeat.
    pub execution: String,
    /// Injected fault: crash on purpose at this point (the emulator arms it through
    /// `SANDBOX_EXECUTOR_CRASH`; see [`CrashPoint::from_env`]).
    pub crash: Option<CrashPoint>,
}

/// Where an armed worker crashes (fault injection by the emulator, never set on Google Cloud).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// When the first request shows up, before claiming it.
    BeforeClaim,
    /// After running the first request, before its answer is in place.
    BeforeAnswer,
}

/// Exit status of a worker that crashed on purpose.
pub const CRASH_EXIT: i32 = 70;

impl CrashPoint {
    /// Reads `SANDBOX_EXECUTOR_CRASH` (`before-claim` or `before-answer`).
    pub fn from_env() -> Option<CrashPoint> {
        match std::env::var("SANDBOX_EXECUTOR_CRASH").ok()?.as_str() {
            "before-claim" => Some(CrashPoint::BeforeClaim),
            "before-answer" => Some(CrashPoint::BeforeAnswer),
            _ => None,
        }
    }

    fn crash(self) -> ! {
        eprintln!("sandbox-executor: injected crash ({self:?})");
        std::process::exit(CRASH_EXIT)
    }
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

/// Writes `data` to `path` whole: a temp file beside it, then a rename. The parent is created
/// when missing: on a bucket volume a directory exists only while it holds objects.
pub fn write_whole(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let attempt = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    };
    // The storage side may drop an emptied directory between our mkdir and our write: retry.
    let mut tries = 0;
    loop {
        match attempt() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
            other => return other,
        }
    }
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
    }
}

/// The heartbeat of a worker that is running and beat within [`STALE_AFTER`].
pub fn live_worker(state_dir: &Path) -> Option<Heartbeat> {
    let hb: Heartbeat =
        serde_json::from_slice(&std::fs::read(state_dir.join(HEARTBEAT)).ok()?).ok()?;
    let age = Duration::from_millis(now_ms().saturating_sub(hb.beat_ms));
    (hb.status == "running" && age < STALE_AFTER).then_some(hb)
}

/// Runs the worker loop until idle or out of lifetime; returns the number of requests served.
pub fn run_worker(cfg: &WorkerConfig) -> std::io::Result<u64> {
    for d in [INBOX, CLAIMED, OUTBOX] {
        std::fs::create_dir_all(cfg.state_dir.join(d))?;
    }
    // One worker per sandbox: processes started by one worker are invisible to another, so a
    // second execution leaves while the first is alive.
    if let Some(other) = live_worker(&cfg.state_dir)
        && other.execution != cfg.execution
    {
        eprintln!(
            "sandbox-executor: worker of {} is alive; this one ({}) leaves",
            other.execution, cfg.execution
        );
        return Ok(0);
    }
    let started = Instant::now();
    let started_ms = now_ms();
    let served = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let last_activity = Arc::new(Mutex::new(Instant::now()));
    let mut seen: HashSet<String> = HashSet::new();
    let mut last_beat = Instant::now() - HEARTBEAT_EVERY;
    let beat = |status: &str, served: u64| {
        let hb = Heartbeat {
            execution: cfg.execution.clone(),
            status: status.into(),
            beat_ms: now_ms(),
            started_ms,
            served,
        };
        let _ = write_whole(
            &cfg.state_dir.join(HEARTBEAT),
            &serde_json::to_vec(&hb).unwrap_or_default(),
        );
    };
    loop {
        let picked = scan_inbox(cfg, &mut seen, &served, &in_flight, &last_activity)?;
        if last_beat.elapsed() >= HEARTBEAT_EVERY {
            beat("running", served.load(Ordering::SeqCst));
            last_beat = Instant::now();
        }
        let idle = last_activity
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let busy = in_flight.load(Ordering::SeqCst) > 0;
        if !busy
            && picked == 0
            && (idle >= cfg.idle_timeout || started.elapsed() >= cfg.max_lifetime)
        {
            // Announce the stop, then take what arrived meanwhile before leaving.
            beat("stopping", served.load(Ordering::SeqCst));
            let late = scan_inbox(cfg, &mut seen, &served, &in_flight, &last_activity)?;
            if late == 0 {
                break;
            }
        }
        std::thread::sleep(cfg.poll);
    }
    while in_flight.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(cfg.poll);
    }
    beat("stopped", served.load(Ordering::SeqCst));
    Ok(served.load(Ordering::SeqCst))
}

fn scan_inbox(
    cfg: &WorkerConfig,
    seen: &mut HashSet<String>,
    served: &Arc<AtomicU64>,
    in_flight: &Arc<AtomicUsize>,
    last_activity: &Arc<Mutex<Instant>>,
) -> std::io::Result<usize> {
    // On a bucket volume the inbox disappears while empty: that is an empty inbox.
    let entries = match std::fs::read_dir(cfg.state_dir.join(INBOX)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|id| valid_request_id(id) && !seen.contains(id))
        .collect();
    names.sort();
    if !names.is_empty() && cfg.crash == Some(CrashPoint::BeforeClaim) {
        CrashPoint::BeforeClaim.crash();
    }
    let crash_before_answer = cfg.crash == Some(CrashPoint::BeforeAnswer);
    let mut picked = 0;
    for id in names {
        let from = cfg.state_dir.join(INBOX).join(format!("{id}.json"));
        let to = cfg.state_dir.join(CLAIMED).join(format!("{id}.json"));
        // Claim first: a request is run at most once, even across workers.
        if std::fs::rename(&from, &to).is_err() {
            let _ = std::fs::create_dir_all(cfg.state_dir.join(CLAIMED));
            if std::fs::rename(&from, &to).is_err() {
                continue;
            }
        }
        seen.insert(id.clone());
        picked += 1;
        let outbox = cfg.state_dir.join(OUTBOX).join(format!("{id}.json"));
        let (served, in_flight, last_activity) =
            (served.clone(), in_flight.clone(), last_activity.clone());
        in_flight.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let resp = match std::fs::read(&to)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Request>(&b).map_err(|e| e.to_string()))
            {
                Ok(req) if req.id == id => execute(&req),
                Ok(req) => Response {
                    id: id.clone(),
                    exit_code: 127,
                    stdout_b64: String::new(),
                    stderr_b64: String::new(),
                    truncated: false,
                    timed_out: false,
                    error: Some(format!(
                        "request id {} does not match its file {id}",
                        req.id
                    )),
                    duration_ms: 0,
                },
                Err(e) => Response {
                    id: id.clone(),
                    exit_code: 127,
                    stdout_b64: String::new(),
                    stderr_b64: String::new(),
                    truncated: false,
                    timed_out: false,
                    error: Some(format!("unreadable request: {e}")),
                    duration_ms: 0,
                },
            };
            if crash_before_answer {
                // Half of write_whole: the answer's bytes land beside the outbox, never in it.
                let _ = std::fs::write(
                    outbox.with_extension("tmp-crash"),
                    serde_json::to_vec(&resp).unwrap_or_default(),
                );
                CrashPoint::BeforeAnswer.crash();
            }
            if let Err(e) = write_whole(&outbox, &serde_json::to_vec(&resp).unwrap_or_default()) {
                eprintln!("sandbox-executor: cannot write the answer to {id}: {e}");
            }
            let _ = std::fs::remove_file(&to);
            served.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut t) = last_activity.lock() {
                *t = Instant::now();
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
    if picked > 0
        && let Ok(mut t) = last_activity.lock()
    {
        *t = Instant::now();
    }
    Ok(picked)
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

    #[test]
    fn second_worker_leaves_while_the_first_is_alive() {
        let dir = std::env::temp_dir().join(format!("sbx-worker-two-{}", now_ms()));
        std::fs::create_dir_all(&dir).unwrap();
        let hb = Heartbeat {
            execution: "exec-first".into(),
            status: "running".into(),
            beat_ms: now_ms(),
            started_ms: now_ms(),
            served: 0,
        };
        write_whole(&dir.join(HEARTBEAT), &serde_json::to_vec(&hb).unwrap()).unwrap();
        let cfg = WorkerConfig {
            state_dir: dir.clone(),
            idle_timeout: Duration::from_secs(30),
            poll: Duration::from_millis(5),
            max_lifetime: Duration::from_secs(30),
            execution: "exec-second".into(),
            crash: None,
        };
        let t = Instant::now();
        assert_eq!(run_worker(&cfg).unwrap(), 0);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the second worker did not leave"
        );
        // A stale or stopped heartbeat is no obstacle.
        let stale = Heartbeat {
            status: "stopped".into(),
            ..hb
        };
        write_whole(&dir.join(HEARTBEAT), &serde_json::to_vec(&stale).unwrap()).unwrap();
        assert!(live_worker(&dir).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn worker_survives_its_directories_vanishing() {
        let dir = std::env::temp_dir().join(format!("sbx-worker-vanish-{}", now_ms()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = WorkerConfig {
            state_dir: dir.clone(),
            idle_timeout: Duration::from_millis(1500),
            poll: Duration::from_millis(5),
            max_lifetime: Duration::from_secs(30),
            execution: "exec-2".into(),
            crash: None,
        };
        let worker = std::thread::spawn(move || run_worker(&cfg).unwrap());
        let ask = |id: &str| {
            let r = req(id, &["sh", "-c", "echo ok"]);
            write_whole(
                &dir.join(INBOX).join(format!("{id}.json")),
                &serde_json::to_vec(&r).unwrap(),
            )
            .unwrap();
            let out = dir.join(OUTBOX).join(format!("{id}.json"));
            let t = Instant::now();
            while !out.exists() {
                assert!(t.elapsed() < Duration::from_secs(10), "no answer to {id}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        ask("0001-a");
        // A bucket volume drops directories that no longer hold objects.
        for d in [INBOX, OUTBOX, CLAIMED] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
        ask("0002-b");
        assert_eq!(worker.join().unwrap(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn worker_serves_inbox_once_and_stops_when_idle() {
        let dir = std::env::temp_dir().join(format!("sbx-worker-{}", now_ms()));
        std::fs::create_dir_all(dir.join(INBOX)).unwrap();
        let r = req("0001-x", &["sh", "-c", "echo hi"]);
        std::fs::write(
            dir.join(INBOX).join("0001-x.json"),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join(INBOX).join("bad name!.json"), b"{}").unwrap();
        let cfg = WorkerConfig {
            state_dir: dir.clone(),
            idle_timeout: Duration::from_millis(300),
            poll: Duration::from_millis(10),
            max_lifetime: Duration::from_secs(30),
            execution: "exec-1".into(),
            crash: None,
        };
        let served = run_worker(&cfg).unwrap();
        assert_eq!(served, 1);
        let resp: Response =
            serde_json::from_slice(&std::fs::read(dir.join(OUTBOX).join("0001-x.json")).unwrap())
                .unwrap();
        assert_eq!(B64.decode(resp.stdout_b64).unwrap(), b"hi\n");
        assert!(!dir.join(CLAIMED).join("0001-x.json").exists());
        let hb: Heartbeat =
            serde_json::from_slice(&std::fs::read(dir.join(HEARTBEAT)).unwrap()).unwrap();
        assert_eq!(hb.status, "stopped");
        assert_eq!(hb.served, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
