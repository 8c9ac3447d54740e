//! The session worker that runs inside a Cloud Run job execution, and the object protocol it
//! speaks with the harness through the state bucket's Cloud Storage JSON API (not through the
//! FUSE volume: a volume's stat cache and staged writes would delay every command).
//!
//! Objects under the sandbox's prefix (`sessions/<id>/`):
//! - `inbox/<seq>.json`: a [`Request`] at sequence number `seq` (20 digits), created by the
//!   harness only if absent. The sandbox's requests share one sequence: a client queues at the
//!   next number it knows of, and at the one after when that name is taken, so the worker finds
//!   the next request by fetching one expected name ([`POLL_METHOD`]: body and generation in
//!   one call) instead of listing the inbox;
//! - the claim on a request is the deletion of its inbox object at the generation that was
//!   read: the worker deleting it runs it, the harness deleting it (at the generation its
//!   insert returned) withdraws it, and the loser gets 404 or 412. So a request runs at most
//!   once, and the harness always knows whether it ran;
//! - `outbox/<id>.json`: the [`Response`] to the request whose id is `<id>`, written by the
//!   worker, with the worker's position in the sequence (`Response::inbox_next`: a client
//!   that queued from a stale position catches up);
//! - `worker.json`: the [`Heartbeat`] (custom metadata, empty body), rewritten every
//!   heartbeat interval (5 s by default: Cloud Storage allows about one write a second to one
//!   object name); its freshness is judged by the server's clock (`updated` against `Date`).
//!   It carries the worker's position too, for a new client and for the next worker.
//!
//! The worker fetches the next name on a [`PollSchedule`]: at its shortest interval for a
//! while after activity (a request taken or an answer written: the next command usually
//! follows within a few round trips), then doubling while idle. Every [`SWEEP_EVERY`] it also
//! lists the whole inbox ([`SWEEP_METHOD`]) and takes what it finds off the sequence: requests
//! a client queued from a stale position, or queued past a gap (a number whose insert never
//! landed, or a request withdrawn while no worker ran). A gap below requests taken by a
//! sweep is probed past at once and skipped at the next sweep (or at once at boot). The harness
//! deletes answers once read, in the background.
//!
//! Requests run concurrently, each in its own process group; a request past its deadline has
//! its whole group killed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exec::{Request, Response, WorkerTiming, execute, now_ms, valid_request_id};
use crate::gcs::{Bucket, StoreError};

/// Inbox folder name (under the sandbox prefix).
pub const INBOX: &str = "inbox/";
/// Outbox folder name.
pub const OUTBOX: &str = "outbox/";
/// Heartbeat object name.
pub const HEARTBEAT: &str = "worker.json";

/// Default heartbeat interval.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A heartbeat older than this many intervals (plus a second: `Date` has second resolution)
/// means its worker is gone.
pub const STALE_INTERVALS: u32 = 3;

/// Digits of a sequence number in an inbox object name (the largest `u64` has 20).
const SEQ_DIGITS: usize = 20;

/// The inbox object of the request at sequence number `seq`.
pub fn inbox_object(prefix: &str, seq: u64) -> String {
    format!("{prefix}{INBOX}{seq:020}.json")
}

/// The sequence number of inbox object `name` under `prefix`, if it is one.
pub fn inbox_seq(prefix: &str, name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(prefix)?
        .strip_prefix(INBOX)?
        .strip_suffix(".json")?;
    (digits.len() == SEQ_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The outbox object of request `id`.
pub fn outbox_object(prefix: &str, id: &str) -> String {
    format!("{prefix}{OUTBOX}{id}.json")
}

/// The Cloud Storage JSON API method each inbox poll of the worker makes (one per poll while
/// the next name is absent: `objects.get` with `alt=media`). The cost model prices polls by
/// this method's operation class, so whoever changes how the worker polls changes this too.
pub const POLL_METHOD: &str = "objects.get";

/// The method of the worker's inbox sweep (one per [`SWEEP_EVERY`]; priced by the cost model
/// by its class like [`POLL_METHOD`]).
pub const SWEEP_METHOD: &str = "objects.list";

/// How often the worker lists the whole inbox for requests off the sequence.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// When polling starts over and how far it backs off: the interval stays at `min` for `hold`
/// after activity, then doubles after each empty poll up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSchedule {
    /// Interval right after activity.
    pub min: Duration,
    /// Longest interval while idle.
    pub max: Duration,
    /// How long after activity polling stays at `min`.
    pub hold: Duration,
}

impl PollSchedule {
    /// The interval after an empty poll at `current`, made `since` after the last activity.
    pub fn next(&self, current: Duration, since: Duration) -> Duration {
        if since < self.hold {
            return self.min;
        }
        (current * 2).clamp(self.min, self.max.max(self.min))
    }

    /// How many polls fall in an idle gap of `gap` after activity (the cost model uses this,
    /// so the polls it prices are the ones this schedule makes; each poll's own duration is
    /// not counted, so this is an upper bound).
    pub fn polls_in(&self, gap: Duration) -> f64 {
        let max = self.max.max(self.min);
        let (mut t, mut step, mut n) =
            (Duration::ZERO, self.min.max(Duration::from_millis(1)), 0.0);
        while t + step <= gap {
            t += step;
            n += 1.0;
            if step >= max && t >= self.hold {
                // The rest of the gap at the longest interval.
                return n + (gap - t).as_secs_f64() / max.as_secs_f64();
            }
            step = self.next(step, t);
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
    /// The inbox sequence number the worker fetches next.
    pub next: u64,
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
            ("next".to_string(), self.next.to_string()),
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
        let number = |k: &str| m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(Heartbeat {
            execution: m.get("execution")?.clone(),
            status: m.get("status")?.clone(),
            started_ms: number("started_ms"),
            served: number("served"),
            next: number("next"),
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
    /// How the next inbox name is polled.
    pub poll: PollSchedule,
    /// How often the whole inbox is listed (see [`SWEEP_EVERY`]).
    pub sweep_every: Duration,
    /// How often the heartbeat is rewritten.
    pub heartbeat_every: Duration,
    /// Stop accepting requests after this long (keep it under the task timeout).
    pub max_lifetime: Duration,
    /// The execution name for the heartbeat.
    pub execution: String,
    /// Injected fault: crash on purpose at this point (see [`CrashPoint::from_env`]).
    pub crash: Option<CrashPoint>,
    /// What the worker copies to durable storage while it runs.
    pub mirror: Option<Mirror>,
}

/// The heartbeat last written for this sandbox, live or not.
fn last_heartbeat(bucket: &dyn Bucket, cfg: &WorkerConfig) -> Option<Heartbeat> {
    let info = bucket.stat(&format!("{}{HEARTBEAT}", cfg.prefix)).ok()?;
    Heartbeat::from_metadata(&info.metadata, info.updated_ms, info.server_now_ms)
}

/// The live heartbeat of another worker of this sandbox, if one is running.
pub fn live_worker(bucket: &dyn Bucket, cfg: &WorkerConfig) -> Option<Heartbeat> {
    last_heartbeat(bucket, cfg).filter(|hb| hb.is_live(cfg.heartbeat_every))
}

/// An answer for a request that was not run.
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
        inbox_next: None,
    }
}

struct Shared {
    served: AtomicU64,
    in_flight: AtomicUsize,
    answered: AtomicBool,
    /// The inbox sequence number the worker fetches next (for answers and the heartbeat).
    next: AtomicU64,
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

/// Writes the answer to a request (only if absent: a retried write whose first attempt landed
/// meets itself, and only one worker answers a request).
fn write_answer(bucket: &dyn Bucket, cfg: &WorkerConfig, resp: &Response) {
    let body = serde_json::to_vec(resp).unwrap_or_default();
    match bucket.create(
        &outbox_object(&cfg.prefix, &resp.id),
        &body,
        &BTreeMap::new(),
        true,
    ) {
        Ok(_) | Err(StoreError::Precondition) => {}
        Err(e) => eprintln!(
            "sandbox-executor: cannot write the answer to {}: {e}",
            resp.id
        ),
    }
}

/// Runs one claimed request and writes its answer.
fn serve_one(
    bucket: Arc<dyn Bucket>,
    cfg: WorkerConfig,
    req: Request,
    shared: Arc<Shared>,
    claimed_ms: u64,
) {
    let run_started_ms = now_ms();
    let mut resp = execute(&req);
    resp.timing = Some(WorkerTiming {
        claimed_ms,
        run_started_ms,
        run_ended_ms: now_ms(),
    });
    resp.inbox_next = Some(shared.next.load(Ordering::SeqCst));
    if cfg.crash == Some(CrashPoint::BeforeAnswer) {
        CrashPoint::BeforeAnswer.crash();
    }
    write_answer(bucket.as_ref(), &cfg, &resp);
    shared.served.fetch_add(1, Ordering::SeqCst);
    shared.touch();
    shared.answered.store(true, Ordering::SeqCst);
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
}

/// Claims the request read from inbox object `name` at `generation` by deleting the object at
/// that generation, and starts it on its own thread. False when it was not ours to run:
/// withdrawn by the harness or taken by another worker (404, 412), or unreadable.
fn take(
    bucket: &Arc<dyn Bucket>,
    cfg: &WorkerConfig,
    shared: &Arc<Shared>,
    name: &str,
    body: &[u8],
    generation: i64,
) -> Result<bool, StoreError> {
    if cfg.crash == Some(CrashPoint::BeforeClaim) {
        CrashPoint::BeforeClaim.crash();
    }
    let req = serde_json::from_slice::<Request>(body)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            if valid_request_id(&r.id) {
                Ok(r)
            } else {
                Err(format!("invalid request id {:?}", r.id))
            }
        });
    match bucket.delete_generation(name, generation) {
        Ok(()) => {}
        Err(StoreError::NotFound | StoreError::Precondition) => return Ok(false),
        Err(StoreError::Unsure) => {
            // A retried delete found the object gone: this worker's first attempt or the
            // harness may have removed it. Not run here; say so, so the harness does not wait.
            if let Ok(req) = &req {
                let why = format!(
                    "not run: whether this worker's claim on {name} landed is unknown (a retried delete found it gone)"
                );
                write_answer(bucket.as_ref(), cfg, &refusal(&req.id, why));
            }
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    let claimed_ms = now_ms();
    let req = match req {
        Ok(r) => r,
        Err(why) => {
            // Without a valid id there is nowhere to answer: drop it.
            eprintln!("sandbox-executor: dropped the unreadable request {name}: {why}");
            return Ok(false);
        }
    };
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    shared.touch();
    let (bucket, cfg, shared) = (bucket.clone(), cfg.clone(), shared.clone());
    std::thread::spawn(move || serve_one(bucket, cfg, req, shared, claimed_ms));
    Ok(true)
}

/// Where the worker is in the inbox sequence.
#[derive(Debug, Default)]
struct Cursor {
    /// The next sequence number to fetch.
    next: u64,
    /// Numbers above `next` already taken by a sweep (`next` is a gap below them).
    taken: BTreeSet<u64>,
    /// `next` at the last sweep, when it was a gap then.
    gap_at: Option<u64>,
}

impl Cursor {
    /// Moves past `next` and past the numbers taken above it.
    fn advance(&mut self) {
        self.next += 1;
        while self.taken.remove(&self.next) {
            self.next += 1;
        }
    }

    /// Gives up on the gap at `next`: continues after the highest number taken.
    fn skip_gap(&mut self) {
        if let Some(last) = self.taken.pop_last() {
            self.next = self.next.max(last + 1);
        }
        self.taken.clear();
        self.gap_at = None;
    }
}

/// Most fetches of one name in flight at once (see [`fetch_within`]).
const MAX_OVERLAPPING_FETCHES: usize = 8;

/// Longest hot wait for the next request in one round of the worker loop (the loop then
/// looks at its sweep, idle and lifetime clocks).
const HOT_WINDOW: Duration = Duration::from_millis(500);

/// Fetches `name`; while it is absent, fetches it again every `every` for `window`, each fetch
/// sent without waiting for the one before (a fetch takes a round trip: overlapping them sees
/// an object within `every` of its landing instead of within a round trip). At most
/// [`MAX_OVERLAPPING_FETCHES`] in flight; [`StoreError::NotFound`] when none found it.
fn fetch_within(
    bucket: &Arc<dyn Bucket>,
    name: &str,
    every: Duration,
    window: Duration,
) -> Result<(Vec<u8>, i64), StoreError> {
    if window.is_zero() {
        return bucket.fetch(name);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let until = Instant::now() + window;
    let (mut in_flight, mut next_send) = (0, Instant::now());
    loop {
        let now = Instant::now();
        let open = now < until;
        if open && now >= next_send && in_flight < MAX_OVERLAPPING_FETCHES {
            let (bucket, name, tx) = (bucket.clone(), name.to_string(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send(bucket.fetch(&name));
            });
            in_flight += 1;
            next_send = now + every;
        }
        if in_flight == 0 && !open {
            return Err(StoreError::NotFound);
        }
        // Until the next send, or the window's end when no more may go; after the window,
        // for the answers still out (each fetch ends within its retry deadline).
        let wait = if !open {
            Duration::from_secs(600)
        } else if in_flight < MAX_OVERLAPPING_FETCHES {
            next_send.saturating_duration_since(Instant::now())
        } else {
            until.saturating_duration_since(Instant::now())
        };
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(Err(StoreError::NotFound)) => in_flight -= 1,
            Ok(found_or_failed) => return found_or_failed,
            Err(_) => {}
        }
    }
}

/// Takes the requests at the cursor in sequence until the next name is absent (and, past a
/// gap, the ones after the highest number taken), waiting up to `window` for the first one
/// (see [`fetch_within`]); returns how many it started.
fn take_in_sequence(
    bucket: &Arc<dyn Bucket>,
    cfg: &WorkerConfig,
    cursor: &mut Cursor,
    shared: &Arc<Shared>,
    window: Duration,
) -> Result<usize, StoreError> {
    let mut started = 0;
    loop {
        // Past a gap the request after the highest one taken may come first.
        let (seq, past_gap) = match cursor.taken.last() {
            Some(&last) => match bucket.fetch(&inbox_object(&cfg.prefix, cursor.next)) {
                Ok(found) => (cursor.next, Some(found)),
                Err(StoreError::NotFound) => (last + 1, None),
                Err(e) => return Err(e),
            },
            None => (cursor.next, None),
        };
        let name = inbox_object(&cfg.prefix, seq);
        let wait = if started == 0 && cursor.taken.is_empty() {
            window
        } else {
            Duration::ZERO
        };
        let (body, generation) = match past_gap {
            Some(found) => found,
            None => match fetch_within(bucket, &name, cfg.poll.min, wait) {
                Ok(found) => found,
                Err(StoreError::NotFound) => return Ok(started),
                Err(e) => return Err(e),
            },
        };
        if take(bucket, cfg, shared, &name, &body, generation)? {
            started += 1;
        }
        if seq == cursor.next {
            cursor.advance();
        } else {
            cursor.taken.insert(seq);
        }
        shared.next.store(cursor.next, Ordering::SeqCst);
    }
}

/// Lists the whole inbox and takes every request in it, in or off the sequence; at `boot` a
/// gap below the requests found is skipped at once, later when two sweeps in a row saw it.
/// Returns how many it started.
fn sweep(
    bucket: &Arc<dyn Bucket>,
    cfg: &WorkerConfig,
    cursor: &mut Cursor,
    shared: &Arc<Shared>,
    boot: bool,
) -> Result<usize, StoreError> {
    let names = bucket.list(&format!("{}{INBOX}", cfg.prefix))?;
    let mut started = 0;
    for seq in names.iter().filter_map(|n| inbox_seq(&cfg.prefix, n)) {
        let name = inbox_object(&cfg.prefix, seq);
        let (body, generation) = match bucket.fetch(&name) {
            Ok(found) => found,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        if take(bucket, cfg, shared, &name, &body, generation)? {
            started += 1;
        }
        if seq == cursor.next {
            cursor.advance();
        } else if seq > cursor.next {
            cursor.taken.insert(seq);
        }
    }
    if !cursor.taken.is_empty() && (boot || cursor.gap_at == Some(cursor.next)) {
        cursor.skip_gap();
    } else {
        cursor.gap_at = (!cursor.taken.is_empty()).then_some(cursor.next);
    }
    shared.next.store(cursor.next, Ordering::SeqCst);
    Ok(started)
}

/// Polls (and sweeps, when due) that may fail in a row (each already retried for up to a
/// minute) before the worker gives up.
const MAX_FAILED_SCANS: u32 = 5;

/// Runs the worker loop until idle or out of lifetime; returns the number of requests served.
pub fn run_worker(cfg: &WorkerConfig, bucket: Arc<dyn Bucket>) -> std::io::Result<u64> {
    // One worker per sandbox: processes started by one worker are invisible to another, so a
    // second execution leaves while the first is alive.
    let previous = last_heartbeat(bucket.as_ref(), cfg);
    if let Some(other) = &previous
        && other.is_live(cfg.heartbeat_every)
        && other.execution != cfg.execution
    {
        eprintln!(
            "sandbox-executor: worker of {} is alive; this one ({}) leaves",
            other.execution, cfg.execution
        );
        return Ok(0);
    }
    // Go on where the last worker of this sandbox stopped.
    let mut cursor = Cursor {
        next: previous.map_or(0, |hb| hb.next),
        ..Cursor::default()
    };
    let started = Instant::now();
    let started_ms = now_ms();
    let shared = Arc::new(Shared {
        served: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        answered: AtomicBool::new(false),
        next: AtomicU64::new(cursor.next),
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
                next: shared.next.load(Ordering::SeqCst),
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
    // The heartbeat beats on its own thread, so a slow poll never makes the worker look dead.
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
    let mut last_sweep: Option<Instant> = None;
    let mut interval = cfg.poll.min;
    let mut failed = 0;
    // One poll: a sweep when due (the first one at boot), then the requests in sequence,
    // waiting for the next one up to `window`.
    let mut scan =
        |cursor: &mut Cursor, force_sweep: bool, window: Duration| -> Result<usize, StoreError> {
            let mut n = 0;
            if force_sweep || last_sweep.is_none_or(|t| t.elapsed() >= cfg.sweep_every) {
                n += sweep(&bucket, cfg, cursor, &shared, last_sweep.is_none())?;
                last_sweep = Some(Instant::now());
            }
            Ok(n + take_in_sequence(&bucket, cfg, cursor, &shared, window)?)
        };
    let result = loop {
        // Within the hold after activity the fetches overlap; after it they back off.
        let hot = cfg.poll.hold.saturating_sub(shared.idle()).min(HOT_WINDOW);
        let picked = match scan(&mut cursor, false, hot) {
            Ok(n) => {
                failed = 0;
                n
            }
            Err(e) => {
                failed += 1;
                eprintln!("sandbox-executor: polling the inbox failed ({failed} in a row): {e}");
                if failed >= MAX_FAILED_SCANS {
                    break Err(std::io::Error::other(format!(
                        "the inbox cannot be read: {e}"
                    )));
                }
                0
            }
        };
        let answered = shared.answered.swap(false, Ordering::SeqCst);
        interval = if picked > 0 || answered {
            cfg.poll.min
        } else {
            cfg.poll.next(interval, shared.idle())
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
            match scan(&mut cursor, true, Duration::ZERO) {
                Ok(0) | Err(_) => break Ok(()),
                Ok(_) => {}
            }
        }
        if hot.is_zero() {
            std::thread::sleep(interval);
        }
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
                hold: Duration::from_millis(20),
            },
            sweep_every: Duration::from_millis(50),
            heartbeat_every: Duration::from_millis(200),
            max_lifetime: Duration::from_secs(30),
            execution: exec.into(),
            crash: None,
            mirror: None,
        }
    }

    /// Queues request `id` at sequence number `seq`; returns the object's generation.
    fn ask(b: &dyn Bucket, seq: u64, id: &str, script: &str) -> i64 {
        let r = Request {
            id: id.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            stdin_b64: None,
            deadline_ms: 5000,
        };
        b.create(
            &inbox_object(P, seq),
            &serde_json::to_vec(&r).unwrap(),
            &BTreeMap::new(),
            true,
        )
        .unwrap()
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

    /// A worker on its own thread that waits 1.5 s for requests before it stops.
    fn running_worker(b: &Arc<dyn Bucket>, exec: &str) -> std::thread::JoinHandle<u64> {
        let c = WorkerConfig {
            idle_timeout: Duration::from_millis(1500),
            ..cfg(exec)
        };
        let b = b.clone();
        std::thread::spawn(move || run_worker(&c, b).unwrap())
    }

    fn stdout(r: &Response) -> Vec<u8> {
        B64.decode(&r.stdout_b64).unwrap()
    }

    fn heartbeat(b: &dyn Bucket) -> Heartbeat {
        let info = b.stat(&format!("{P}{HEARTBEAT}")).unwrap();
        Heartbeat::from_metadata(&info.metadata, info.updated_ms, info.server_now_ms).unwrap()
    }

    fn stopped_at(next: u64) -> Heartbeat {
        Heartbeat {
            execution: "exec-before".into(),
            status: "stopped".into(),
            started_ms: 1,
            served: 0,
            next,
            age: None,
        }
    }

    #[test]
    fn inbox_names_carry_their_sequence_number() {
        let name = inbox_object(P, 42);
        assert_eq!(name, "sessions/t/inbox/00000000000000000042.json");
        assert_eq!(inbox_seq(P, &name), Some(42));
        assert_eq!(inbox_seq(P, &inbox_object(P, u64::MAX)), Some(u64::MAX));
        assert_eq!(inbox_seq(P, "sessions/t/inbox/42.json"), None);
        assert_eq!(
            inbox_seq(P, "sessions/t/inbox/0000000000000000004x.json"),
            None
        );
        assert_eq!(
            inbox_seq(P, "sessions/t/inbox/99999999999999999999.json"),
            None
        );
        assert_eq!(inbox_seq("sessions/u/", &name), None);
    }

    #[test]
    fn serves_each_request_once_and_stops_when_idle() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        ask(b.as_ref(), 0, "0001-x", "echo hi");
        // Not a request: taken off the sequence and dropped, the sequence goes on.
        b.create(&inbox_object(P, 1), b"{}", &BTreeMap::new(), true)
            .unwrap();
        ask(b.as_ref(), 2, "0002-y", "echo two");
        let served = run_worker(&cfg("exec-1"), b.clone()).unwrap();
        assert_eq!(served, 2);
        let resp = answer(b.as_ref(), "0001-x");
        assert_eq!(stdout(&resp), b"hi\n");
        let t = resp
            .timing
            .expect("the worker reports when it took and ran the request");
        assert!(t.claimed_ms <= t.run_started_ms && t.run_started_ms <= t.run_ended_ms);
        assert_eq!(stdout(&answer(b.as_ref(), "0002-y")), b"two\n");
        assert!(
            b.list(&format!("{P}{INBOX}")).unwrap().is_empty(),
            "taking a request deletes it"
        );
        let hb = heartbeat(b.as_ref());
        assert_eq!(hb.status, "stopped");
        assert_eq!(hb.served, 2);
        assert_eq!(hb.next, 3);
        assert!(!hb.is_live(Duration::from_secs(5)));
    }

    #[test]
    fn the_claim_is_the_conditional_delete() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        // The harness withdrew request 0 (deleted it at the generation its insert returned)
        // before any worker came: it never runs, and the worker skips the gap at boot.
        let generation = ask(b.as_ref(), 0, "0001-w", "echo ran");
        b.delete_generation(&inbox_object(P, 0), generation)
            .unwrap();
        let generation = ask(b.as_ref(), 1, "0002-ok", "echo ok");
        assert_eq!(run_worker(&cfg("exec-2"), b.clone()).unwrap(), 1);
        assert!(b.read(&outbox_object(P, "0001-w")).is_err(), "it ran");
        assert_eq!(stdout(&answer(b.as_ref(), "0002-ok")), b"ok\n");
        // A withdrawal after the worker took the request loses: the harness learns it ran.
        assert_eq!(
            b.delete_generation(&inbox_object(P, 1), generation),
            Err(StoreError::NotFound)
        );
        assert_eq!(heartbeat(b.as_ref()).next, 2);
    }

    #[test]
    fn a_new_worker_goes_on_where_the_last_one_stopped() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        b.create(
            &format!("{P}{HEARTBEAT}"),
            b"",
            &stopped_at(7).to_metadata(),
            false,
        )
        .unwrap();
        ask(b.as_ref(), 7, "0007-a", "echo seven");
        // Queued by a client from a stale position, below the sequence: found by a sweep.
        ask(b.as_ref(), 3, "0003-s", "echo stale");
        assert_eq!(run_worker(&cfg("exec-3"), b.clone()).unwrap(), 2);
        assert_eq!(stdout(&answer(b.as_ref(), "0007-a")), b"seven\n");
        let stale = answer(b.as_ref(), "0003-s");
        assert_eq!(stdout(&stale), b"stale\n");
        assert_eq!(
            stale.inbox_next,
            Some(8),
            "the answer tells the client where the sequence is"
        );
        assert_eq!(heartbeat(b.as_ref()).next, 8);
    }

    #[test]
    fn a_gap_in_the_sequence_is_passed_while_running() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        let worker = running_worker(&b, "exec-4");
        ask(b.as_ref(), 0, "0000-a", "echo a");
        assert_eq!(stdout(&answer(b.as_ref(), "0000-a")), b"a\n");
        // Number 1 never lands (its insert failed); 2 and 3 do.
        ask(b.as_ref(), 2, "0002-b", "echo b");
        assert_eq!(stdout(&answer(b.as_ref(), "0002-b")), b"b\n");
        ask(b.as_ref(), 3, "0003-c", "echo c");
        assert_eq!(stdout(&answer(b.as_ref(), "0003-c")), b"c\n");
        assert_eq!(worker.join().unwrap(), 3);
        assert_eq!(heartbeat(b.as_ref()).next, 4, "the gap was skipped");
    }

    #[test]
    fn an_unsure_claim_is_answered_as_not_run() {
        // Conditional deletes land but answer as a retried delete that found the object gone.
        let mem = MemBucket::default();
        mem.unsure_deletes
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let b: Arc<dyn Bucket> = Arc::new(mem);
        ask(b.as_ref(), 0, "0001-u", "echo ran");
        assert_eq!(run_worker(&cfg("exec-5"), b.clone()).unwrap(), 0);
        let resp = answer(b.as_ref(), "0001-u");
        assert!(stdout(&resp).is_empty());
        assert!(resp.error.unwrap().contains("not run"));
    }

    #[test]
    fn overlapping_fetches_find_an_object_that_lands_within_the_window() {
        let b: Arc<dyn Bucket> = Arc::new(MemBucket::default());
        let name = inbox_object(P, 0);
        let every = Duration::from_millis(5);
        assert_eq!(
            fetch_within(&b, &name, every, Duration::from_millis(30)),
            Err(StoreError::NotFound)
        );
        let lands = {
            let b = b.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                ask(b.as_ref(), 0, "0000-late", "true")
            })
        };
        let (body, generation) = fetch_within(&b, &name, every, Duration::from_secs(10)).unwrap();
        assert_eq!(generation, lands.join().unwrap());
        assert_eq!(
            serde_json::from_slice::<Request>(&body).unwrap().id,
            "0000-late"
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
            next: 0,
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
        let worker = running_worker(&b, "exec-4");
        ask(b.as_ref(), 0, "0001-slow", "sleep 1; echo slow");
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        ask(b.as_ref(), 1, "0002-fast", "echo fast");
        assert_eq!(stdout(&answer(b.as_ref(), "0002-fast")), b"fast\n");
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "the fast one waited for the slow one"
        );
        assert_eq!(stdout(&answer(b.as_ref(), "0001-slow")), b"slow\n");
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
            hold: Duration::ZERO,
        };
        let t = Duration::from_millis(1);
        assert_eq!(
            s.next(Duration::from_millis(25), t),
            Duration::from_millis(50)
        );
        assert_eq!(
            s.next(Duration::from_millis(800), t),
            Duration::from_millis(1000)
        );
        // 25+50+100+200+400+800 = 1575 ms for six polls, then one a second.
        assert_eq!(s.polls_in(Duration::from_millis(1575)), 6.0);
        assert_eq!(s.polls_in(Duration::from_millis(1000)), 5.0);
        let long = s.polls_in(Duration::from_secs(61));
        assert!((long - (6.0 + 1.0 + (61.0 - 2.575))).abs() < 1e-9, "{long}");
        // Held at the shortest interval for 100 ms after activity, then backing off.
        let held = PollSchedule {
            hold: Duration::from_millis(100),
            ..s
        };
        assert_eq!(
            held.next(Duration::from_millis(25), Duration::from_millis(99)),
            Duration::from_millis(25)
        );
        assert_eq!(
            held.next(Duration::from_millis(25), Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        // Four polls by 100 ms, then 50, 100, 200, ... as without the hold.
        assert_eq!(held.polls_in(Duration::from_millis(100)), 4.0);
        assert_eq!(held.polls_in(Duration::from_millis(150)), 5.0);
        assert_eq!(held.polls_in(Duration::from_millis(250)), 6.0);
        let long = held.polls_in(Duration::from_secs(61));
        // 100 + 50+100+200+400+800 = 1650 ms for nine polls, then one a second.
        assert!((long - (9.0 + 1.0 + (61.0 - 2.65))).abs() < 1e-9, "{long}");
    }

    #[test]
    fn heartbeats_age_by_the_server_clock() {
        let hb = Heartbeat {
            execution: "e".into(),
            status: "running".into(),
            started_ms: 1,
            served: 2,
            next: 9,
            age: None,
        };
        let m = hb.to_metadata();
        let fresh = Heartbeat::from_metadata(&m, Some(10_000), Some(12_000)).unwrap();
        assert_eq!(fresh.age, Some(Duration::from_secs(2)));
        assert_eq!(fresh.next, 9);
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
