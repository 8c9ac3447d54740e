//! The session worker that runs inside a Cloud Run job execution, and the object protocol it
//! speaks with the harness through the state bucket's Cloud Storage JSON API (not through the
//! FUSE volume: a volume's stat cache and staged writes would delay every command).
//!
//! Objects under the sandbox's prefix (`sessions/<id>/`):
//! - `inbox/<id>.json`: a [`Request`], created by the harness (only if absent);
//! - `claims/<id>`: the one claim on a request, created only if absent, either by the worker
//!   that runs it (body `run by <execution>`) or by the harness withdrawing it (body
//!   `withdrawn by <client>`): whoever creates it decides the request's fate, so a request runs
//!   at most once and the harness always knows whether it ran;
//! - `outbox/<id>.json`: the [`Response`], written by the worker;
//! - `worker.json`: the [`Heartbeat`] (custom metadata, empty body), rewritten every
//!   heartbeat interval (5 s by default: Cloud Storage allows about one write a second to one
//!   object name); its freshness is judged by the server's clock (`updated` against `Date`).
//!
//! The worker deletes a request's inbox object once it has claimed it; the harness deletes the
//! answer and the claim once it has read the answer. The worker lists the inbox on a
//! [`PollSchedule`]: at its shortest interval right after activity (a request claimed or an
//! answer written: the next command usually follows within a round trip), doubling while idle.
//!
//! Requests run concurrently, each in its own process group; a request past its deadline has
//! its whole group killed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exec::{Request, Response, WorkerTiming, execute, now_ms, valid_request_id};
use crate::gcs::{Bucket, StoreError};

/// Inbox folder name (under the sandbox prefix).
pub const INBOX: &str = "inbox/";
/// Claims folder name.
pub const CLAIMS: &str = "claims/";
/// Outbox folder name.
pub const OUTBOX: &str = "outbox/";
/// Heartbeat object name.
pub const HEARTBEAT: &str = "worker.json";

/// Default heartbeat interval.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A heartbeat older than this many intervals (plus a second: `Date` has second resolution)
/// means its worker is gone.
pub const STALE_INTERVALS: u32 = 3;

/// The inbox object of request `id`.
pub fn inbox_object(prefix: &str, id: &str) -> String {
    format!("{prefix}{INBOX}{id}.json")
}

/// The claim object of request `id`.
pub fn claim_object(prefix: &str, id: &str) -> String {
    format!("{prefix}{CLAIMS}{id}")
}

/// The outbox object of request `id`.
pub fn outbox_object(prefix: &str, id: &str) -> String {
    format!("{prefix}{OUTBOX}{id}.json")
}

/// The claim body of a worker running requests for `execution`.
pub fn run_claim(execution: &str) -> Vec<u8> {
    format!("run by {execution}").into_bytes()
}

/// The claim body of a harness client `client` withdrawing a request.
pub fn withdraw_claim(client: &str) -> Vec<u8> {
    format!("withdrawn by {client}").into_bytes()
}

/// The Cloud Storage JSON API method each inbox poll of the worker makes (one per poll; see
/// `scan`). The cost model prices polls by this method's operation class, so whoever changes
/// how the worker polls changes this too.
pub const POLL_METHOD: &str = "objects.list";

/// When polling starts over and how far it backs off: the interval starts at `min` after
/// activity and doubles after each empty poll up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSchedule {
    /// Interval right after activity.
    pub min: Duration,
    /// Longest interval while idle.
    pub max: Duration,
}

impl PollSchedule {
    /// The interval after an empty poll at `current`.
    pub fn next(&self, current: Duration) -> Duration {
        (current * 2).clamp(self.min, self.max.max(self.min))
    }

    /// How many polls fall in an idle gap of `gap` after activity (the cost model uses this,
    /// so the polls it prices are the ones this schedule makes).
    pub fn polls_in(&self, gap: Duration) -> f64 {
        let (mut t, mut step, mut n) =
            (Duration::ZERO, self.min.max(Duration::from_millis(1)), 0.0);
        while t + step <= gap {
            t += step;
            n += 1.0;
            if step >= self.max {
                // The rest of the gap at the longest interval.
                return n + (gap - t).as_secs_f64() / self.max.as_secs_f64();
            }
            step = self.next(step);
        }
        n
    }
}

/// The worker's liveness record, carried as the heartbeat object's custom metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The Cloud Run execution running this worker (`CLOUD_RUN_EXECUTION`, a short name).
    pub execution: String,
    /// "running" while it accepts requests, "stopping" once it has decided to exit, "stopped".
    pub status: String,
    /// Unix milliseconds when the worker started (the worker's clock).
    pub started_ms: u64,
    /// Requests served so far.
    pub served: u64,
    /// How old the record is by the server's clock, when known.
    pub age: Option<Duration>,
}

impl Heartbeat {
    /// The custom metadata that carries it.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("execution".to_string(), self.execution.clone()),
            ("status".to_string(), self.status.clone()),
            ("started_ms".to_string(), self.started_ms.to_string()),
            ("served".to_string(), self.served.to_string()),
        ])
    }

    /// Reads it back from custom metadata, with the record's age when both server times are
    /// known (`updated_ms` of the object, `server_now_ms` of the answer).
    pub fn from_metadata(
        m: &BTreeMap<String, String>,
        updated_ms: Option<i64>,
        server_now_ms: Option<i64>,
    ) -> Option<Heartbeat> {
        let age = match (updated_ms, server_now_ms) {
            (Some(u), Some(n)) => Some(Duration::from_millis(n.saturating_sub(u).max(0) as u64)),
            _ => None,
        };
        Some(Heartbeat {
            execution: m.get("execution")?.clone(),
            status: m.get("status")?.clone(),
            started_ms: m
                .get("started_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            served: m.get("served").and_then(|v| v.parse().ok()).unwrap_or(0),
            age,
        })
    }

    /// True when it says "running" and is fresh for a worker beating every `every`.
    pub fn is_live(&self, every: Duration) -> bool {
        let stale = every * STALE_INTERVALS + Duration::from_secs(1);
        self.status == "running" && self.age.is_some_and(|a| a < stale)
    }
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

/// A directory the worker copies to durable storage: files written under `local` (the
/// container's own file system, where commands write without waiting on the bucket) are
/// copied to `durable` (a Cloud Storage volume) at most once per `every` per file, and once
/// more when the worker stops. Each copy is one write of the whole file, which a Cloud
/// Storage FUSE volume uploads on close, so a reader of `durable` sees an old or a new
/// version, never a torn one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The directory commands write to.
    pub local: PathBuf,
    /// Its durable copy.
    pub durable: PathBuf,
    /// Shortest time between two copies (Cloud Storage allows about one write a second to
    /// one object name).
    pub every: Duration,
}

impl Mirror {
    /// Parses `LOCAL=DURABLE` (the `--mirror` flag).
    pub fn parse(v: &str, every: Duration) -> Option<Mirror> {
        let (l, d) = v.split_once('=')?;
        (!l.is_empty() && !d.is_empty()).then(|| Mirror {
            local: PathBuf::from(l),
            durable: PathBuf::from(d),
            every,
        })
    }

    /// Copies every file changed since its last copy; `copied` remembers (modified, length).
    /// Returns how many files were copied.
    pub fn sync(&self, copied: &mut HashMap<PathBuf, (std::time::SystemTime, u64)>) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.local) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            // Half-written files of the commands' own temp-then-rename are not state yet.
            let name = e.file_name();
            if !meta.is_file() || name.to_string_lossy().contains(".tmp.") {
                continue;
            }
            let stamp = (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len());
            if copied.get(&e.path()) == Some(&stamp) {
                continue;
            }
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            if std::fs::create_dir_all(&self.durable).is_err() {
                return n;
            }
            match std::fs::write(self.durable.join(&name), &bytes) {
                Ok(()) => {
                    copied.insert(e.path(), stamp);
                    n += 1;
                }
                Err(err) => eprintln!(
                    "sandbox-executor: mirroring {} failed: {err}",
                    e.path().display()
                ),
            }
        }
        n
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The sandbox's object prefix (`sessions/<id>/`).
    pub prefix: String,
    /// Exit after this long with no request.
    pub idle_timeout: Duration,
    /// How the inbox is polled.
    pub poll: PollSchedule,
    /// How often the heartbeat is rewritten.
    pub heartbeat_every: Duration,
    /// Stop accepting requests after this long (keep it under the task timeout).
    pub max_lifetime: Duration,
    /// The execution name for the heartbeat and claims.
    pub execution: String,
    /// Injected fault: crash on purpose at this point (see [`CrashPoint::from_env`]).
    pub crash: Option<CrashPoint>,
    /// What the worker copies to durable storage while it runs.
    pub mirror: Option<Mirror>,
}

/// The live heartbeat of another worker of this sandbox, if one is running.
pub fn live_worker(bucket: &dyn Bucket, cfg: &WorkerConfig) -> Option<Heartbeat> {
    let info = bucket.stat(&format!("{}{HEARTBEAT}", cfg.prefix)).ok()?;
    Heartbeat::from_metadata(&info.metadata, info.updated_ms, info.server_now_ms)
        .filter(|hb| hb.is_live(cfg.heartbeat_every))
}

/// What a claim attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// Ours: run it.
    Ours,
    /// Somebody else's (another worker, or the harness withdrew it).
    Taken,
}

/// Claims request `id` for `execution`; a create retried after its first attempt landed meets
/// its own claim and is told apart by the claim's body.
fn claim(bucket: &dyn Bucket, cfg: &WorkerConfig, id: &str) -> Result<Claim, StoreError> {
    let name = claim_object(&cfg.prefix, id);
    let body = run_claim(&cfg.execution);
    match bucket.create(&name, &body, &BTreeMap::new(), true) {
        Ok(_) => Ok(Claim::Ours),
        Err(StoreError::Precondition) => match bucket.read(&name) {
            Ok(b) if b == body => Ok(Claim::Ours),
            Ok(_) => Ok(Claim::Taken),
            // Claimed and already cleaned up by the harness: it was served.
            Err(StoreError::NotFound) => Ok(Claim::Taken),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// An answer for a request that could not be run at all.
fn refusal(id: &str, why: String) -> Response {
    Response {
        id: id.to_string(),
        exit_code: 127,
        stdout_b64: String::new(),
        stderr_b64: String::new(),
        truncated: false,
        timed_out: false,
        error: Some(why),
        duration_ms: 0,
        timing: None,
    }
}

struct Shared {
    served: AtomicU64,
    in_flight: AtomicUsize,
    answered: AtomicBool,
    last_activity: Mutex<Instant>,
}

impl Shared {
    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle(&self) -> Duration {
        self.last_activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// Runs one claimed request and writes its answer.
fn serve_one(
    bucket: Arc<dyn Bucket>,
    cfg: WorkerConfig,
    id: String,
    shared: Arc<Shared>,
    claimed_ms: u64,
) {
    let inbox = inbox_object(&cfg.prefix, &id);
    let resp = match bucket.read(&inbox) {
        Ok(b) => match serde_json::from_slice::<Request>(&b) {
            Ok(req) if req.id == id => {
                let _ = bucket.delete(&inbox);
                let run_started_ms = now_ms();
                let mut resp = execute(&req);
                resp.timing = Some(WorkerTiming {
                    claimed_ms,
                    run_started_ms,
                    run_ended_ms: now_ms(),
                });
                resp
            }
            Ok(req) => refusal(
                &id,
                format!("request id {} does not match its object {id}", req.id),
            ),
            Err(e) => refusal(&id, format!("unreadable request: {e}")),
        },
        Err(e) => refusal(&id, format!("the request object could not be read: {e}")),
    };
    if cfg.crash == Some(CrashPoint::BeforeAnswer) {
        CrashPoint::BeforeAnswer.crash();
    }
    let body = serde_json::to_vec(&resp).unwrap_or_default();
    match bucket.create(
        &outbox_object(&cfg.prefix, &id),
        &body,
        &BTreeMap::new(),
        true,
    ) {
        // Precondition: a retried write whose first attempt landed (only this worker answers).
        Ok(_) | Err(StoreError::Precondition) => {}
        Err(e) => eprintln!("sandbox-executor: cannot write the answer to {id}: {e}"),
    }
    shared.served.fetch_add(1, Ordering::SeqCst);
    shared.touch();
    shared.answered.store(true, Ordering::SeqCst);
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
}

/// Lists the inbox and starts every new request it can claim; returns how many it started.
fn scan(
    bucket: &Arc<dyn Bucket>,
    cfg: &WorkerConfig,
    seen: &mut HashSet<String>,
    shared: &Arc<Shared>,
) -> Result<usize, StoreError> {
    let inbox = format!("{}{INBOX}", cfg.prefix);
    let mut ids: Vec<String> = bucket
        .list(&inbox)?
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix(&inbox)?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .filter(|id| valid_request_id(id) && !seen.contains(id))
        .collect();
    ids.sort();
    if !ids.is_empty() && cfg.crash == Some(CrashPoint::BeforeClaim) {
        CrashPoint::BeforeClaim.crash();
    }
    let mut picked = 0;
    for id in ids {
        match claim(bucket.as_ref(), cfg, &id) {
            Ok(Claim::Ours) => {
                let claimed_ms = now_ms();
                seen.insert(id.clone());
                picked += 1;
                shared.in_flight.fetch_add(1, Ordering::SeqCst);
                shared.touch();
                let (bucket, cfg, shared) = (bucket.clone(), cfg.clone(), shared.clone());
                std::thread::spawn(move || serve_one(bucket, cfg, id, shared, claimed_ms));
            }
            Ok(Claim::Taken) => {
                // Withdrawn, or a stray copy a retried insert left: not ours to run.
                seen.insert(id.clone());
                let _ = bucket.delete(&inbox_object(&cfg.prefix, &id));
            }
            Err(e) => eprintln!("sandbox-executor: claiming {id} failed: {e}; trying again"),
        }
    }
    Ok(picked)
}

/// Scans that may fail in a row (each already retried for up to a minute) before the worker
/// gives up.
const MAX_FAILED_SCANS: u32 = 5;

/// Runs the worker loop until idle or out of lifetime; returns the number of requests served.
pub fn run_worker(cfg: &WorkerConfig, bucket: Arc<dyn Bucket>) -> std::io::Result<u64> {
    // One worker per sandbox: processes started by one worker are invisible to another, so a
    // second execution leaves while the first is alive.
    if let Some(other) = live_worker(bucket.as_ref(), cfg)
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
    let shared = Arc::new(Shared {
        served: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        answered: AtomicBool::new(false),
        last_activity: Mutex::new(Instant::now()),
    });
    let beat = {
        let (bucket, cfg, shared) = (bucket.clone(), cfg.clone(), shared.clone());
        move |status: &str| {
            let hb = Heartbeat {
                execution: cfg.execution.clone(),
                status: status.into(),
                started_ms,
                served: shared.served.load(Ordering::SeqCst),
                age: None,
            };
            if let Err(e) = bucket.create(
                &format!("{}{HEARTBEAT}", cfg.prefix),
                b"",
                &hb.to_metadata(),
                false,
            ) {
                eprintln!("sandbox-executor: heartbeat not written: {e}");
            }
        }
    };
    // The heartbeat beats on its own thread, so a slow scan never makes the worker look dead.
    let stop = Arc::new(AtomicBool::new(false));
    let mut beater = Some({
        let (stop, beat, every) = (stop.clone(), beat.clone(), cfg.heartbeat_every);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                beat("running");
                let until = Instant::now() + every;
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    });
    // The mirror copies on its own thread too: a command's answer never waits on it.
    let mirrorer = cfg.mirror.clone().map(|m| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut copied = HashMap::new();
            while !stop.load(Ordering::SeqCst) {
                m.sync(&mut copied);
                let until = Instant::now() + m.every;
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            copied
        })
    });
    let mut seen: HashSet<String> = HashSet::new();
    let mut interval = cfg.poll.min;
    let mut failed = 0;
    let result = loop {
        let picked = match scan(&bucket, cfg, &mut seen, &shared) {
            Ok(n) => {
                failed = 0;
                n
            }
            Err(e) => {
                failed += 1;
                eprintln!("sandbox-executor: listing the inbox failed ({failed} in a row): {e}");
                if failed >= MAX_FAILED_SCANS {
                    break Err(std::io::Error::other(format!(
                        "the inbox cannot be listed: {e}"
                    )));
                }
                0
            }
        };
        let answered = shared.answered.swap(false, Ordering::SeqCst);
        interval = if picked > 0 || answered {
            cfg.poll.min
        } else {
            cfg.poll.next(interval)
        };
        let busy = shared.in_flight.load(Ordering::SeqCst) > 0;
        if !busy
            && picked == 0
            && (shared.idle() >= cfg.idle_timeout || started.elapsed() >= cfg.max_lifetime)
        {
            // Announce the stop, then take what arrived meanwhile before leaving.
            stop.store(true, Ordering::SeqCst);
            if let Some(b) = beater.take() {
                let _ = b.join();
            }
            beat("stopping");
            match scan(&bucket, cfg, &mut seen, &shared) {
                Ok(0) | Err(_) => break Ok(()),
                Ok(_) => {}
            }
        }
        std::thread::sleep(interval);
    };
    stop.store(true, Ordering::SeqCst);
    while shared.in_flight.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // A last copy of what changed since the mirror's last round.
    if let (Some(m), Some(t)) = (&cfg.mirror, mirrorer)
        && let Ok(mut copied) = t.join()
    {
        m.sync(&mut copied);
    }
    beat("stopped");
    result.map(|()| shared.served.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcs::mem::MemBucket;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    const P: &str = "sessions/t/";

    fn cfg(exec: &str) -> WorkerConfig {
        WorkerConfig {
            prefix: P.into(),
            idle_timeout: Duration::from_millis(400),
            poll: PollSchedule {
                min: Duration::from_millis(5),
                max: Duration::from_millis(40),
            },
            heartbeat_every: Duration::from_millis(200),
            max_lifetime: Duration::from_secs(30),
            execution: exec.into(),
            crash: None,
            mirror: None,
        }
    }

    fn ask(b: &dyn Bucket, id: &str, script: &str) {
        let r = Request {
            id: id.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            stdin_b64: None,
            deadline_ms: 5000,
        };
        b.create(
            &inbox_object(P, id),
            &serde_json::to_vec(&r).unwrap(),
            &BTreeMap::new(),
            true,
        )
        .unwrap();
    }

    fn answer(b: &dyn Bucket, id: &str) -> Response {
        let t = Instant::now();
        loop {
            if let Ok(body) = b.read(&outbox_object(P, id)) {
                return serde_json::from_slice(&body).unwrap();
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no answer to {id}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn serves_each_request_once_and_stops_when_idle() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        ask(b.as_ref(), "0001-x", "echo hi");
        b.create(&inbox_object(P, "bad name!"), b"{}", &BTreeMap::new(), true)
            .unwrap();
        let served = run_worker(&cfg("exec-1"), b.clone()).unwrap();
        assert_eq!(served, 1);
        let resp = answer(b.as_ref(), "0001-x");
        assert_eq!(B64.decode(&resp.stdout_b64).unwrap(), b"hi\n");
        let t = resp
            .timing
            .expect("the worker reports when it took and ran the request");
        assert!(t.claimed_ms <= t.run_started_ms && t.run_started_ms <= t.run_ended_ms);
        assert!(b.read(&inbox_object(P, "0001-x")).is_err(), "inbox emptied");
        assert_eq!(
            b.read(&claim_object(P, "0001-x")).unwrap(),
            run_claim("exec-1")
        );
        let info = b.stat(&format!("{P}{HEARTBEAT}")).unwrap();
        let hb =
            Heartbeat::from_metadata(&info.metadata, info.updated_ms, info.server_now_ms).unwrap();
        assert_eq!(hb.status, "stopped");
        assert_eq!(hb.served, 1);
        assert!(!hb.is_live(Duration::from_secs(5)));
    }

    #[test]
    fn a_withdrawn_request_never_runs() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        ask(b.as_ref(), "0001-w", "echo ran > /dev/null; echo ran");
        // The harness withdrew it before any worker came.
        b.create(
            &claim_object(P, "0001-w"),
            &withdraw_claim("client-1"),
            &BTreeMap::new(),
            true,
        )
        .unwrap();
        ask(b.as_ref(), "0002-ok", "echo ok");
        assert_eq!(run_worker(&cfg("exec-2"), b.clone()).unwrap(), 1);
        assert!(b.read(&outbox_object(P, "0001-w")).is_err(), "it ran");
        assert_eq!(
            B64.decode(answer(b.as_ref(), "0002-ok").stdout_b64)
                .unwrap(),
            b"ok\n"
        );
        assert!(
            b.read(&inbox_object(P, "0001-w")).is_err(),
            "stray request removed"
        );
    }

    #[test]
    fn a_retried_claim_that_meets_its_own_claim_still_runs() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        ask(b.as_ref(), "0001-r", "echo mine");
        // As if an earlier attempt of this worker's claim had landed before a timeout.
        b.create(
            &claim_object(P, "0001-r"),
            &run_claim("exec-3"),
            &BTreeMap::new(),
            true,
        )
        .unwrap();
        assert_eq!(run_worker(&cfg("exec-3"), b.clone()).unwrap(), 1);
        assert_eq!(
            B64.decode(answer(b.as_ref(), "0001-r").stdout_b64).unwrap(),
            b"mine\n"
        );
    }

    #[test]
    fn second_worker_leaves_while_the_first_is_alive() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        let first = Heartbeat {
            execution: "exec-first".into(),
            status: "running".into(),
            started_ms: now_ms(),
            served: 0,
            age: None,
        };
        b.create(&format!("{P}{HEARTBEAT}"), b"", &first.to_metadata(), false)
            .unwrap();
        let t = Instant::now();
        assert_eq!(run_worker(&cfg("exec-second"), b.clone()).unwrap(), 0);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the second worker did not leave"
        );
        // A stopped heartbeat is no obstacle.
        let stopped = Heartbeat {
            status: "stopped".into(),
            ..first
        };
        b.create(
            &format!("{P}{HEARTBEAT}"),
            b"",
            &stopped.to_metadata(),
            false,
        )
        .unwrap();
        assert!(live_worker(b.as_ref(), &cfg("exec-x")).is_none());
    }

    #[test]
    fn concurrent_requests_run_side_by_side() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        let c = WorkerConfig {
            idle_timeout: Duration::from_millis(1500),
            ..cfg("exec-4")
        };
        let worker = {
            let b = b.clone();
            std::thread::spawn(move || run_worker(&c, b).unwrap())
        };
        ask(b.as_ref(), "0001-slow", "sleep 1; echo slow");
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        ask(b.as_ref(), "0002-fast", "echo fast");
        assert_eq!(
            B64.decode(answer(b.as_ref(), "0002-fast").stdout_b64)
                .unwrap(),
            b"fast\n"
        );
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "the fast one waited for the slow one"
        );
        assert_eq!(
            B64.decode(answer(b.as_ref(), "0001-slow").stdout_b64)
                .unwrap(),
            b"slow\n"
        );
        assert_eq!(worker.join().unwrap(), 2);
    }

    #[test]
    fn the_mirror_copies_changed_files_and_skips_temp_files() {
        let dir = std::env::temp_dir().join(format!("sbx-mirror-{}", now_ms()));
        let m = Mirror::parse(
            &format!("{}={}", dir.join("l").display(), dir.join("d").display()),
            Duration::from_millis(10),
        )
        .unwrap();
        std::fs::create_dir_all(&m.local).unwrap();
        std::fs::write(m.local.join("s.state"), b"one").unwrap();
        std::fs::write(m.local.join("s.state.tmp.42"), b"half").unwrap();
        let mut copied = HashMap::new();
        assert_eq!(m.sync(&mut copied), 1);
        assert_eq!(std::fs::read(m.durable.join("s.state")).unwrap(), b"one");
        assert!(!m.durable.join("s.state.tmp.42").exists());
        assert_eq!(m.sync(&mut copied), 0, "nothing changed");
        std::fs::write(m.local.join("s.state"), b"second").unwrap();
        assert_eq!(m.sync(&mut copied), 1);
        assert_eq!(std::fs::read(m.durable.join("s.state")).unwrap(), b"second");
        assert!(Mirror::parse("nope", Duration::ZERO).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_schedule_backs_off_and_counts_its_polls() {
        let s = PollSchedule {
            min: Duration::from_millis(25),
            max: Duration::from_millis(1000),
        };
        assert_eq!(s.next(Duration::from_millis(25)), Duration::from_millis(50));
        assert_eq!(
            s.next(Duration::from_millis(800)),
            Duration::from_millis(1000)
        );
        // 25+50+100+200+400+800 = 1575 ms for six polls, then one a second.
        assert_eq!(s.polls_in(Duration::from_millis(1575)), 6.0);
        assert_eq!(s.polls_in(Duration::from_millis(1000)), 5.0);
        let long = s.polls_in(Duration::from_secs(61));
        assert!((long - (6.0 + 1.0 + (61.0 - 2.575))).abs() < 1e-9, "{long}");
    }

    #[test]
    fn heartbeats_age_by_the_server_clock() {
        let hb = Heartbeat {
            execution: "e".into(),
            status: "running".into(),
            started_ms: 1,
            served: 2,
            age: None,
        };
        let m = hb.to_metadata();
        let fresh = Heartbeat::from_metadata(&m, Some(10_000), Some(12_000)).unwrap();
        assert_eq!(fresh.age, Some(Duration::from_secs(2)));
        assert!(fresh.is_live(Duration::from_secs(5)));
        let old = Heartbeat::from_metadata(&m, Some(10_000), Some(40_000)).unwrap();
        assert!(!old.is_live(Duration::from_secs(5)));
        let unknown = Heartbeat::from_metadata(&m, None, Some(40_000)).unwrap();
        assert!(
            !unknown.is_live(Duration::from_secs(5)),
            "no server time, no trust"
        );
    }
}
