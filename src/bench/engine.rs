//! The measurement loop of `bench::run`.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::Digest;

use super::data;
use super::events::{Event, EventKind};
use super::{
    BackendContext, BackendReport, BenchOptions, BenchReport, ErrorClass, LARGE_TRANSFER_BYTES,
    Measurement, OptionsRecord, RawBaseline, SCHEMA_VERSION, SMALL_TRANSFER_BYTES, Sample,
};
use crate::bench::environment::Environment;
use crate::browser::cdp::{self, CdpClient, CdpError};
use crate::protocol::{
    Capabilities, ProcessSelector, ReadOptions, Sandbox, SandboxBackend, SandboxError,
    StatefulExec, WriteOptions,
};

/// Directory (a constant, never data) the state-consistency commands move between.
const STATE_DIR: &str = "/workspace/.sandbox-harness-bench/state";
/// Deadline of teardown operations (they run even after cancellation).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Operations per mixed-workload round.
const MIXED_OPS: usize = 7;

/// A failed operation: its class, why, and the exit status when a command ran.
struct OpErr {
    class: ErrorClass,
    detail: String,
    exit_code: Option<i32>,
}

impl From<SandboxError> for OpErr {
    fn from(e: SandboxError) -> Self {
        OpErr {
            class: e.kind().into(),
            detail: e.to_string(),
            exit_code: None,
        }
    }
}

impl From<CdpError> for OpErr {
    fn from(e: CdpError) -> Self {
        OpErr {
            class: e.kind().into(),
            detail: e.to_string(),
            exit_code: None,
        }
    }
}

fn wrong(detail: impl Into<String>, exit_code: Option<i32>) -> OpErr {
    OpErr {
        class: ErrorClass::WrongResult,
        detail: detail.into(),
        exit_code,
    }
}

type OpResult<T> = Result<(T, Option<i32>), OpErr>;

struct Ctx<'a> {
    label: String,
    backend: String,
    opts: &'a BenchOptions,
    samples: Mutex<Vec<Sample>>,
    pb: &'a ProgressBar,
    /// Resident memory while the 500 MB transfers ran.
    large_rss: Mutex<Option<super::RssWindow>>,
    /// How long each part of the run took, in order.
    parts: Mutex<Vec<super::PartTiming>>,
}

impl Ctx<'_> {
    /// Records that the part `name`, begun at `started`, is over.
    fn part_done(&self, name: &str, started: Instant) {
        if let Ok(mut p) = self.parts.lock() {
            p.push(super::PartTiming {
                part: name.to_string(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.is_cancelled()
    }

    fn emit(&self, ev: Event) {
        if let Some(w) = &self.opts.events {
            w.emit(&ev);
        }
    }

    fn lifecycle(&self, kind: EventKind, sandbox: &str) {
        let mut ev = Event::new(kind, &self.backend);
        ev.session_id = Some(sandbox.to_string());
        self.emit(ev);
    }

    /// Times one operation. Returns `None` when the run was cancelled before or during it
    /// (then nothing is recorded). Unrecorded operations (warm-ups) leave no sample and no event.
    #[allow(clippy::too_many_arguments)]
    async fn timed<T, F>(
        &self,
        measurement: Measurement,
        op: &str,
        command: &str,
        session: Option<&str>,
        record: bool,
        deadline: Duration,
        cancellable: bool,
        fut: F,
    ) -> Option<Result<T, OpErr>>
    where
        F: Future<Output = OpResult<T>>,
    {
        if cancellable && self.cancelled() {
            return None;
        }
        let execution_id = uuid::Uuid::new_v4().to_string();
        let started_at = Utc::now();
        let event = |kind| {
            let mut ev = Event::new(kind, &self.backend);
            ev.execution_id = Some(execution_id.clone());
            ev.session_id = session.map(str::to_string);
            ev.command = Some(command.to_string());
            ev.op = Some(op.to_string());
            ev.measurement = Some(measurement.as_str().to_string());
            ev
        };
        if record {
            let mut ev = event(EventKind::JobExecutionStarted);
            ev.timestamp = started_at;
            self.emit(ev);
        }
        let t0 = Instant::now();
        let res = if cancellable {
            tokio::select! {
                biased;
                _ = self.opts.cancel.cancelled() => return None,
                r = tokio::time::timeout(deadline, fut) => r,
            }
        } else {
            tokio::time::timeout(deadline, fut).await
        };
        let elapsed = t0.elapsed();
        let res = res.unwrap_or_else(|_| {
            Err(OpErr {
                class: ErrorClass::Timeout,
                detail: format!("harness deadline of {deadline:?} exceeded"),
                exit_code: None,
            })
        });
        if record {
            let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            let (ok, class, exit_code, detail) = match &res {
                Ok((_, code)) => (true, None, *code, None),
                Err(e) => (false, Some(e.class), e.exit_code, Some(e.detail.clone())),
            };
            if let Some(d) = &detail {
                tracing::debug!(backend = %self.label, op, error = %d, "bench operation failed");
            }
            let mut ev = event(EventKind::JobExecutionCompleted);
            ev.duration_seconds = Some(duration_us as f64 / 1e6);
            ev.exit_code = exit_code;
            ev.error_class = class.map(|c| c.as_str().to_string());
            self.emit(ev);
            if let Ok(mut s) = self.samples.lock() {
                s.push(Sample {
                    measurement,
                    op: op.to_string(),
                    started_at,
                    duration_us,
                    ok,
                    error_class: class,
                    exit_code,
                    detail,
                });
            }
            if measurement != Measurement::Setup {
                self.pb.inc(1);
            }
        }
        Some(res.map(|(v, _)| v))
    }

    /// Creates a sandbox (and, for cold starts, waits for it and runs a first command). The
    /// created sandbox is returned even when a later step failed, so it can be destroyed.
    async fn create(
        &self,
        backend: &Arc<dyn SandboxBackend>,
        measurement: Measurement,
        record: bool,
    ) -> (Option<Arc<dyn Sandbox>>, bool) {
        self.create_with(
            backend,
            Capabilities::default(),
            measurement,
            record,
            self.opts.op_timeout,
        )
        .await
    }

    /// [`Ctx::create`] with a capability request and a deadline of its own.
    async fn create_with(
        &self,
        backend: &Arc<dyn SandboxBackend>,
        wants: Capabilities,
        measurement: Measurement,
        record: bool,
        deadline: Duration,
    ) -> (Option<Arc<dyn Sandbox>>, bool) {
        let slot: Mutex<Option<Arc<dyn Sandbox>>> = Mutex::new(None);
        let first_exec = measurement == Measurement::ColdStart;
        let command = if first_exec {
            "create + ensure_ready + exec_stateful `true`"
        } else if wants.browser {
            "create_with browser + ensure_ready"
        } else {
            "create + ensure_ready"
        };
        let res = self
            .timed(
                measurement,
                "create",
                command,
                None,
                record,
                deadline,
                true,
                async {
                    let sb = backend.create_with(wants).await?;
                    if let Ok(mut g) = slot.lock() {
                        *g = Some(sb.clone());
                    }
                    sb.ensure_ready().await?;
                    if first_exec {
                        let r = sb
                            .exec_stateful(StatefulExec::new("bench-cold", "true", deadline))
                            .await?;
                        if r.exit_code != 0 {
                            return Err(wrong(
                                format!("`true` exited {}", r.exit_code),
                                Some(r.exit_code),
                            ));
                        }
                        return Ok(((), Some(0)));
                    }
                    Ok(((), None))
                },
            )
            .await;
        let sb = slot.lock().ok().and_then(|mut g| g.take());
        if let (Some(sb), true) = (&sb, record) {
            self.lifecycle(EventKind::SandboxCreated, sb.id());
        }
        (sb, matches!(res, Some(Ok(()))))
    }

    async fn destroy(&self, sb: &Arc<dyn Sandbox>, record: bool) {
        let id = sb.id().to_string();
        let r = self
            .timed(
                Measurement::Setup,
                "destroy",
                "destroy",
                Some(&id),
                record,
                CLEANUP_TIMEOUT,
                false,
                async { Ok((sb.destroy().await?, None)) },
            )
            .await;
        if let Some(Err(e)) = r {
            tracing::warn!(backend = %self.label, sandbox = %id, error = %e.detail, "destroy failed");
        }
        if record {
            self.lifecycle(EventKind::SandboxDestroyed, &id);
        }
    }
}

fn expect(cond: bool, detail: impl FnOnce() -> String, exit: Option<i32>) -> Result<(), OpErr> {
    if cond {
        Ok(())
    } else {
        Err(wrong(detail(), exit))
    }
}

/// Runs `echo ok` in `session` and checks the exit code and the output.
async fn echo_ok(
    sb: &dyn Sandbox,
    session: &str,
    to: Duration,
) -> Result<((), Option<i32>), OpErr> {
    let r = sb
        .exec_stateful(StatefulExec::new(session, "echo ok", to))
        .await?;
    let code = Some(r.exit_code);
    expect(
        r.exit_code == 0 && r.stdout == b"ok\n",
        || {
            format!(
                "exit {} stdout {:?}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout)
            )
        },
        code,
    )?;
    Ok(((), code))
}

fn progress_bar(opts: &BenchOptions, total: u64) -> ProgressBar {
    if !opts.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ops  ETA {eta}  {msg}",
    ) {
        pb.set_style(style);
    }
    pb
}

fn planned_ops(opts: &BenchOptions, raw: bool, browser: bool) -> u64 {
    let n = opts.iterations as u64;
    let mut t = opts.cold_start_iterations as u64
        + n * (1 + 2 + 1 + 1)
        + opts.mixed_rounds as u64 * MIXED_OPS as u64;
    if raw {
        t += n;
    }
    if browser && opts.browser_starts > 0 {
        t += opts.browser_starts as u64 + n;
    }
    if opts.include_large {
        t += 2 * opts.large_transfer_iterations as u64;
        if raw {
            t += 2 * opts.large_transfer_iterations as u64;
        }
    }
    t + opts.concurrency as u64 * n
}

/// Runs the benchmark against each backend in turn and returns every figure and raw sample
/// (unjudged: `acceptance::judge` adds the verdicts). Cancelling `opts.cancel` stops at the next operation boundary (an operation in flight
/// is abandoned and not recorded), tears down what was created, and returns a partial report.
pub async fn run(
    backends: Vec<(String, Arc<dyn SandboxBackend>)>,
    opts: BenchOptions,
) -> BenchReport {
    let started_at = Utc::now();
    let origins: Vec<(String, super::BackendOrigin)> = backends
        .iter()
        .map(|(label, b)| (label.clone(), origin_of(&opts, label, b.as_ref())))
        .collect();
    let environment = Environment::collect(&origins).await;
    let total: u64 = backends
        .iter()
        .map(|(l, b)| {
            planned_ops(
                &opts,
                opts.raw_baselines.contains_key(l),
                b.capabilities().browser,
            )
        })
        .sum();
    let pb = progress_bar(&opts, total);
    if let Some(w) = &opts.events {
        w.emit(&Event::new(EventKind::BenchStarted, "*"));
    }
    let mut reports = Vec::new();
    for (label, backend) in &backends {
        pb.set_message(label.clone());
        reports.push(run_backend(label, backend, &opts, &pb).await);
    }
    pb.finish_and_clear();
    let cancelled = opts.cancel.is_cancelled();
    if let Some(w) = &opts.events {
        let mut ev = Event::new(EventKind::BenchFinished, "*");
        if cancelled {
            ev.error_class = Some("cancelled".into());
        }
        w.emit(&ev);
    }
    let incomplete: Vec<&str> = reports
        .iter()
        .filter(|r| r.partial)
        .map(|r| r.name.as_str())
        .collect();
    let partial_reason = if cancelled {
        Some("cancelled before the run completed".to_string())
    } else if !incomplete.is_empty() {
        Some(format!(
            "measurements incomplete for: {}",
            incomplete.join(", ")
        ))
    } else {
        None
    };
    BenchReport {
        schema_version: SCHEMA_VERSION,
        started_at,
        finished_at: Utc::now(),
        partial: partial_reason.is_some(),
        partial_reason,
        environment,
        options: OptionsRecord::from(&opts),
        backends: reports,
    }
}

fn origin_of(
    opts: &BenchOptions,
    label: &str,
    backend: &dyn SandboxBackend,
) -> super::BackendOrigin {
    match opts.origins.get(label) {
        Some(o) => o.clone(),
        None => backend.origin(),
    }
}

async fn run_backend(
    label: &str,
    backend: &Arc<dyn SandboxBackend>,
    opts: &BenchOptions,
    pb: &ProgressBar,
) -> BackendReport {
    let opts = &*opts.for_backend(label);
    let ctx = Ctx {
        label: label.to_string(),
        backend: backend.name().to_string(),
        opts,
        samples: Mutex::new(Vec::new()),
        pb,
        large_rss: Mutex::new(None),
        parts: Mutex::new(Vec::new()),
    };
    let raw = opts.raw_baselines.get(label).cloned();
    let mut setup_errors = Vec::new();
    let mut concurrency = None;

    let t = Instant::now();
    cold_start(&ctx, backend).await;
    ctx.part_done("cold starts", t);
    if !ctx.cancelled() {
        let t = Instant::now();
        let (sb, ok) = ctx.create(backend, Measurement::Setup, true).await;
        ctx.part_done("create the warm sandbox", t);
        if let Some(sb) = &sb
            && ok
        {
            main_phases(&ctx, sb, raw.as_deref(), &mut setup_errors).await;
        } else {
            setup_errors.push(
                "could not create the sandbox for the warm measurements (see the setup samples)"
                    .into(),
            );
        }
        if let Some(sb) = sb {
            let t = Instant::now();
            ctx.destroy(&sb, true).await;
            ctx.part_done("destroy the warm sandbox", t);
        }
    }
    if opts.concurrency > 0 && !ctx.cancelled() {
        let t = Instant::now();
        concurrency = concurrent(&ctx, backend, &mut setup_errors).await;
        ctx.part_done("concurrency", t);
    }
    if opts.browser_starts > 0 && backend.capabilities().browser && !ctx.cancelled() {
        let t = Instant::now();
        browser(&ctx, backend, &mut setup_errors).await;
        ctx.part_done("browser", t);
    }
    let phases = match opts.phase_probes.get(label) {
        Some(probe) if !ctx.cancelled() => {
            let t = Instant::now();
            let r = run_probe(probe.as_ref(), opts).await;
            ctx.part_done("phase probe", t);
            Some(r)
        }
        _ => None,
    };
    let partial = ctx.cancelled() || !setup_errors.is_empty();
    let large_transfer_rss = ctx.large_rss.lock().ok().and_then(|g| *g);
    let parts = ctx.parts.lock().map(|p| p.clone()).unwrap_or_default();
    let samples = ctx.samples.into_inner().unwrap_or_default();
    let report_ctx = BackendContext {
        name: label.to_string(),
        backend: backend.name().to_string(),
        origin: origin_of(opts, label, backend.as_ref()),
        partial,
        concurrency,
        raw_baseline: raw.as_ref().map(|r| r.description()),
        raw_transfer: raw
            .as_ref()
            .filter(|_| opts.include_large)
            .and_then(|r| r.transfer_description()),
        large_transfer_rss,
        phases,
        setup_errors,
        parts,
    };
    let mut report = BackendReport::from_samples(report_ctx, samples);
    if !opts.keep_samples {
        report.samples.clear();
    }
    report
}

/// Runs a backend's phase probe (not a measurement: it leaves no samples; a failure is kept
/// in the probe's report).
async fn run_probe(
    probe: &dyn super::phases::PhaseProbe,
    opts: &BenchOptions,
) -> super::phases::PhaseReport {
    let creations = opts.cold_start_iterations.max(1);
    let deadline = opts.op_timeout * (2 * creations as u32 + 2);
    let res = tokio::select! {
        _ = opts.cancel.cancelled() => Err("cancelled".to_string()),
        r = tokio::time::timeout(deadline, probe.probe(creations)) => match r {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("the phase probe did not finish within {deadline:?}")),
        },
    };
    res.unwrap_or_else(|e| super::phases::PhaseReport {
        errors: vec![e],
        ..Default::default()
    })
}

async fn cold_start(ctx: &Ctx<'_>, backend: &Arc<dyn SandboxBackend>) {
    let opts = ctx.opts;
    let warmup = opts.cold_start_warmup.unwrap_or(opts.warmup);
    for i in 0..(warmup + opts.cold_start_iterations) {
        if ctx.cancelled() {
            return;
        }
        let record = i >= warmup;
        let (sb, _) = ctx.create(backend, Measurement::ColdStart, record).await;
        if let Some(sb) = sb {
            ctx.destroy(&sb, record).await;
        }
    }
}

async fn main_phases(
    ctx: &Ctx<'_>,
    sb: &Arc<dyn Sandbox>,
    raw: Option<&dyn RawBaseline>,
    setup_errors: &mut Vec<String>,
) {
    let opts = ctx.opts;
    let id = sb.id().to_string();
    let sid = Some(id.as_str());
    let to = opts.op_timeout;
    let n = opts.iterations;
    let w = opts.warmup;

    // Warm stateful exec.
    let t = Instant::now();
    if !warm_exec(ctx, sb, sid).await {
        return;
    }

    ctx.part_done("warm exec", t);
    // The raw baseline next to it.
    let t = Instant::now();
    if let Some(raw) = raw
        && !raw_baseline_runs(ctx, sb, raw).await
    {
        return;
    }

    if !scratch_directory(ctx, sb, setup_errors).await {
        return;
    }

    ctx.part_done("raw baseline", t);
    let t = Instant::now();
    let small = format!("{}/transfer-10mib.bin", opts.workdir);
    if !transfers(
        ctx,
        sb,
        Measurement::Upload10Mb,
        Measurement::Download10Mb,
        SMALL_TRANSFER_BYTES,
        w,
        n,
        to,
        &small,
    )
    .await
    {
        return;
    }
    ctx.part_done("10 MB transfers", t);
    let t = Instant::now();
    if opts.include_large && !large_transfers(ctx, sb, raw).await {
        return;
    }

    if opts.include_large {
        ctx.part_done("500 MB transfers", t);
    }
    // Background process start.
    let t = Instant::now();
    if !background_starts(ctx, sb, sid).await {
        return;
    }

    ctx.part_done("background starts", t);
    let t = Instant::now();
    let lanes = super::effective_lanes(opts.mixed_lanes, opts.mixed_rounds);
    if !mixed(ctx, sb, lanes, w, opts.mixed_rounds).await {
        return;
    }
    ctx.part_done(&format!("mixed workload ({lanes} lanes)"), t);
    let t = Instant::now();
    state_consistency(ctx, sb, n, setup_errors).await;
    ctx.part_done("state consistency", t);
}

/// Runs the warm stateful exec iterations; false when the bench must stop.
async fn warm_exec(ctx: &Ctx<'_>, sb: &Arc<dyn Sandbox>, sid: Option<&str>) -> bool {
    let (to, w) = (ctx.opts.op_timeout, ctx.opts.warmup);
    for i in 0..(w + ctx.opts.iterations) {
        let r = ctx
            .timed(
                Measurement::WarmExec,
                "exec_stateful",
                "echo ok",
                sid,
                i >= w,
                to,
                true,
                echo_ok(sb.as_ref(), "bench-warm", to),
            )
            .await;
        if r.is_none() {
            return false;
        }
    }
    true
}

/// Runs the raw baseline iterations next to the warm exec; false when the bench must stop.
async fn raw_baseline_runs(ctx: &Ctx<'_>, sb: &Arc<dyn Sandbox>, raw: &dyn RawBaseline) -> bool {
    let opts = ctx.opts;
    let id = sb.id().to_string();
    let sid = Some(id.as_str());
    let w = opts.warmup;
    let desc = raw.description();
    for i in 0..(w + opts.iterations) {
        let r = ctx
            .timed(
                Measurement::RawBaseline,
                "raw_baseline",
                &desc,
                sid,
                i >= w,
                opts.op_timeout,
                true,
                async {
                    raw.run_once(sb.as_ref()).await?;
                    Ok(((), None))
                },
            )
            .await;
        if r.is_none() {
            return false;
        }
    }
    true
}

/// Creates the scratch directory; false (with a set-up error when it failed) when the bench
/// must stop.
async fn scratch_directory(
    ctx: &Ctx<'_>,
    sb: &Arc<dyn Sandbox>,
    setup_errors: &mut Vec<String>,
) -> bool {
    let id = sb.id().to_string();
    let sid = Some(id.as_str());
    // Scratch directory: file_write creates parents, so no path ever enters a shell string.
    let keep = format!("{}/.keep", ctx.opts.workdir);
    let r = ctx
        .timed(
            Measurement::Setup,
            "file_write",
            "create the scratch directory",
            sid,
            true,
            ctx.opts.op_timeout,
            true,
            async {
                sb.file_write("bench-files", &keep, b"", WriteOptions::default())
                    .await?;
                Ok(((), None))
            },
        )
        .await;
    match r {
        None => false,
        Some(Err(e)) => {
            setup_errors.push(format!("cannot create the scratch directory: {}", e.detail));
            false
        }
        Some(Ok(())) => true,
    }
}

/// Runs the 500 MB transfers (and their raw comparison) while sampling resident memory;
/// false when the bench must stop.
async fn large_transfers(
    ctx: &Ctx<'_>,
    sb: &Arc<dyn Sandbox>,
    raw: Option<&dyn RawBaseline>,
) -> bool {
    let opts = ctx.opts;
    let large = format!("{}/transfer-500mib.bin", opts.workdir);
    let lt = opts.large_op_timeout;
    let iters = opts.large_transfer_iterations;
    let rss = super::RssSampler::start();
    let done = transfers(
        ctx,
        sb,
        Measurement::Upload500Mb,
        Measurement::Download500Mb,
        LARGE_TRANSFER_BYTES,
        0,
        iters,
        lt,
        &large,
    )
    .await;
    let window = rss.window();
    drop(rss);
    if let Ok(mut slot) = ctx.large_rss.lock() {
        *slot = window;
    }
    if !done {
        return false;
    }
    if let Some(raw) = raw
        && raw.transfer_description().is_some()
        && !raw_transfers(ctx, sb, raw, iters, lt, &large).await
    {
        return false;
    }
    true
}

/// Starts background processes (killing each again); false when the bench must stop.
async fn background_starts(ctx: &Ctx<'_>, sb: &Arc<dyn Sandbox>, sid: Option<&str>) -> bool {
    let (to, w) = (ctx.opts.op_timeout, ctx.opts.warmup);
    for i in 0..(w + ctx.opts.iterations) {
        let record = i >= w;
        let r = ctx
            .timed(
                Measurement::BackgroundStart,
                "exec_stateful",
                "sleep 300 (background)",
                sid,
                record,
                to,
                true,
                async {
                    let mut req = StatefulExec::new("bench-bg", "sleep 300", to);
                    req.background = true;
                    let r = sb.exec_stateful(req).await?;
                    match r.background_pid {
                        Some(pid) => Ok((pid, Some(r.exit_code))),
                        None => Err(wrong("no background pid returned", Some(r.exit_code))),
                    }
                },
            )
            .await;
        match r {
            None => return false,
            Some(Ok(pid)) => {
                ctx.timed(
                    Measurement::Setup,
                    "kill_background_process",
                    "kill the background process",
                    sid,
                    record,
                    CLEANUP_TIMEOUT,
                    false,
                    async {
                        sb.kill_background_process(ProcessSelector::Pid(pid))
                            .await?;
                        Ok(((), None))
                    },
                )
                .await;
            }
            Some(Err(_)) => {}
        }
    }
    true
}

#[allow(clippy::too_many_arguments)]
async fn transfers(
    ctx: &Ctx<'_>,
    sb: &Arc<dyn Sandbox>,
    up: Measurement,
    down: Measurement,
    len: u64,
    warmup: usize,
    iters: usize,
    deadline: Duration,
    path: &str,
) -> bool {
    let id = sb.id().to_string();
    let sid = Some(id.as_str());
    let desc_up = format!("file_upload {len} bytes");
    let desc_down = format!("file_download {len} bytes");
    for i in 0..(warmup + iters) {
        let record = i >= warmup;
        let (body, hasher) = data::hashed_upload_body(i as u64 + 1, len);
        let r = ctx
            .timed(
                up,
                "file_upload",
                &desc_up,
                sid,
                record,
                deadline,
                true,
                async {
                    let n = sb.file_upload("bench-files", path, body).await?;
                    expect(
                        n == len,
                        || format!("upload reported {n} bytes, sent {len}"),
                        None,
                    )?;
                    Ok(((), None))
                },
            )
            .await;
        match r {
            None => return false,
            // The download of a failed upload is not attempted (and not counted).
            Some(Err(_)) => continue,
            Some(Ok(())) => {}
        }
        let expected: [u8; 32] = match hasher.lock() {
            Ok(h) => h.clone().finalize().into(),
            Err(_) => continue,
        };
        let r = ctx
            .timed(
                down,
                "file_download",
                &desc_down,
                sid,
                record,
                deadline,
                true,
                async {
                    let stream = sb.file_download("bench-files", path).await?;
                    let (n, sha) = data::drain_and_hash(stream).await?;
                    expect(
                        n == len,
                        || format!("downloaded {n} bytes, expected {len}"),
                        None,
                    )?;
                    expect(
                        sha == expected,
                        || "sha256 of the download differs from the upload".into(),
                        None,
                    )?;
                    Ok(((), None))
                },
            )
            .await;
        if r.is_none() {
            return false;
        }
    }
    delete_transfer_file(ctx, sb, path, "delete the transfer file").await
}

/// Removes a transfer file (a set-up operation); false when the run was cancelled.
async fn delete_transfer_file(
    ctx: &Ctx<'_>,
    sb: &Arc<dyn Sandbox>,
    path: &str,
    what: &str,
) -> bool {
    let id = sb.id().to_string();
    ctx.timed(
        Measurement::Setup,
        "file_delete",
        what,
        Some(id.as_str()),
        true,
        CLEANUP_TIMEOUT,
        false,
        async {
            sb.file_delete("bench-files", path).await?;
            Ok(((), None))
        },
    )
    .await;
    !ctx.cancelled()
}

/// The 500 MB transfers once more through the backend's bare path, for the ratio against it.
async fn raw_transfers(
    ctx: &Ctx<'_>,
    sb: &Arc<dyn Sandbox>,
    raw: &dyn RawBaseline,
    iters: usize,
    deadline: Duration,
    path: &str,
) -> bool {
    let id = sb.id().to_string();
    let sid = Some(id.as_str());
    let len = LARGE_TRANSFER_BYTES;
    let desc = raw.transfer_description().unwrap_or_default();
    for i in 0..iters {
        let body = data::upload_body(1000 + i as u64, len);
        let r = ctx
            .timed(
                Measurement::RawUpload500Mb,
                "raw_upload",
                &desc,
                sid,
                true,
                deadline,
                true,
                async {
                    raw.upload_once(sb.as_ref(), path, body, len).await?;
                    Ok(((), None))
                },
            )
            .await;
        match r {
            None => return false,
            Some(Err(_)) => continue,
            Some(Ok(())) => {}
        }
        let r = ctx
            .timed(
                Measurement::RawDownload500Mb,
                "raw_download",
                &desc,
                sid,
                true,
                deadline,
                true,
                async {
                    let n = raw.download_once(sb.as_ref(), path).await?;
                    // The bare path carries archive framing: at least the file's bytes cross.
                    expect(
                        n >= len,
                        || format!("the bare download moved {n} bytes, the file has {len}"),
                        None,
                    )?;
                    Ok(((), None))
                },
            )
            .await;
        if r.is_none() {
            return false;
        }
    }
    delete_transfer_file(ctx, sb, path, "delete the bare-transfer file").await
}

/// Runs `n` recorded rounds of the mixed workload in `lanes` lanes at once, as an agent
/// issuing parallel tool calls would: each lane has its own session and its own file on the
/// same sandbox, does `w` warm-up rounds, then its share of the `n` rounds (together exactly
/// `n`). Returns false when the run was cancelled.
async fn mixed(ctx: &Ctx<'_>, sb: &Arc<dyn Sandbox>, lanes: usize, w: usize, n: usize) -> bool {
    let runs = (0..lanes).map(|lane| {
        let rounds = n / lanes + usize::from(lane < n % lanes);
        mixed_lane(ctx, sb, lane, w, rounds)
    });
    join_all(runs).await.into_iter().all(|done| done)
}

/// What one lane of the mixed workload works on: its own session and its own file.
struct MixedLane {
    session: String,
    name: String,
    file: String,
}

/// One lane of the mixed workload: `w` unrecorded rounds, then `n` recorded ones.
async fn mixed_lane(ctx: &Ctx<'_>, sb: &Arc<dyn Sandbox>, lane: usize, w: usize, n: usize) -> bool {
    let name = format!("mixed-{lane}.txt");
    let l = MixedLane {
        session: format!("bench-mixed-{lane}"),
        file: format!("{}/{name}", ctx.opts.workdir),
        name,
    };
    for i in 0..(w + n) {
        if !mixed_round(ctx, sb, &l, i >= w).await {
            return false;
        }
    }
    true
}

/// One round of the mixed workload in one lane: its seven operations, recorded when `rec`.
/// Returns false when the run was cancelled.
async fn mixed_round(ctx: &Ctx<'_>, sb: &Arc<dyn Sandbox>, l: &MixedLane, rec: bool) -> bool {
    let opts = ctx.opts;
    let id = sb.id().to_string();
    let sid = Some(id.as_str());
    let to = opts.op_timeout;
    let (s, name, file) = (l.session.as_str(), l.name.as_str(), l.file.as_str());
    let content: &[u8] = b"line-a\nline-b\n";
    let m = Measurement::Mixed;
    let results = [
        ctx.timed(
            m,
            "exec_stateful",
            "echo mixed",
            sid,
            rec,
            to,
            true,
            async {
                let r = sb
                    .exec_stateful(StatefulExec::new(s, "echo mixed", to))
                    .await?;
                let c = Some(r.exit_code);
                expect(
                    r.exit_code == 0 && r.stdout == b"mixed\n",
                    || {
                        format!(
                            "exit {} stdout {:?}",
                            r.exit_code,
                            String::from_utf8_lossy(&r.stdout)
                        )
                    },
                    c,
                )?;
                Ok(((), c))
            },
        )
        .await,
        ctx.timed(
            m,
            "file_write",
            &format!("file_write {name}"),
            sid,
            rec,
            to,
            true,
            async {
                sb.file_write(s, file, content, WriteOptions::default())
                    .await?;
                Ok(((), None))
            },
        )
        .await,
        ctx.timed(
            m,
            "file_read",
            &format!("file_read {name}"),
            sid,
            rec,
            to,
            true,
            async {
                let r = sb.file_read(s, file, ReadOptions::default()).await?;
                expect(
                    r.content == content && !r.truncated,
                    || format!("read {:?}", String::from_utf8_lossy(&r.content)),
                    None,
                )?;
                Ok(((), None))
            },
        )
        .await,
        ctx.timed(
            m,
            "file_exists",
            &format!("file_exists {name}"),
            sid,
            rec,
            to,
            true,
            async {
                let e = sb.file_exists(s, file).await?;
                expect(
                    e,
                    || "file_exists returned false for a written file".into(),
                    None,
                )?;
                Ok(((), None))
            },
        )
        .await,
        ctx.timed(
            m,
            "file_list",
            "file_list scratch directory",
            sid,
            rec,
            to,
            true,
            async {
                let l = sb.file_list(s, &opts.workdir).await?;
                expect(
                    l.iter().any(|e| e.name == name),
                    || format!("{name} missing from file_list"),
                    None,
                )?;
                Ok(((), None))
            },
        )
        .await,
        ctx.timed(
            m,
            "file_search",
            "file_search line-b",
            sid,
            rec,
            to,
            true,
            async {
                let r = sb.file_search(s, file, "line-b").await?;
                expect(
                    r.len() == 1 && r[0].line == 1,
                    || format!("{} matches", r.len()),
                    None,
                )?;
                Ok(((), None))
            },
        )
        .await,
        ctx.timed(m, "exec_stateful", "exit 3", sid, rec, to, true, async {
            // A failing command is a successful operation when its status comes back right.
            let r = sb.exec_stateful(StatefulExec::new(s, "exit 3", to)).await?;
            let c = Some(r.exit_code);
            expect(
                r.exit_code == 3,
                || format!("exit {} instead of 3", r.exit_code),
                c,
            )?;
            Ok(((), c))
        })
        .await,
    ];
    debug_assert_eq!(results.len(), MIXED_OPS);
    !results.iter().any(Option::is_none)
}

async fn state_consistency(
    ctx: &Ctx<'_>,
    sb: &Arc<dyn Sandbox>,
    n: usize,
    setup_errors: &mut Vec<String>,
) {
    let to = ctx.opts.op_timeout;
    let id = sb.id().to_string();
    let sid = Some(id.as_str());
    let s = "bench-state";
    let first = format!("mkdir -p {STATE_DIR}/d0 && cd {STATE_DIR}/d0 && export BENCH_STATE=0");
    let r = ctx
        .timed(
            Measurement::Setup,
            "exec_stateful",
            &first,
            sid,
            true,
            to,
            true,
            async {
                let r = sb
                    .exec_stateful(StatefulExec::new(s, first.clone(), to))
                    .await?;
                let c = Some(r.exit_code);
                expect(r.exit_code == 0, || format!("exit {}", r.exit_code), c)?;
                Ok(((), c))
            },
        )
        .await;
    match r {
        None => return,
        Some(Err(e)) => {
            setup_errors.push(format!(
                "cannot start the state-consistency session: {}",
                e.detail
            ));
            return;
        }
        Some(Ok(())) => {}
    }
    let mut expected = format!("{STATE_DIR}/d0|0\n");
    for i in 1..=n {
        let dir = format!("{STATE_DIR}/d{i}");
        let cmd = format!(
            "printf '%s|%s\\n' \"$PWD\" \"${{BENCH_STATE-unset}}\"; mkdir -p {dir} && cd {dir} && export BENCH_STATE={i}"
        );
        let want = expected.clone();
        let r = ctx
            .timed(
                Measurement::StateConsistency,
                "exec_stateful",
                &cmd,
                sid,
                true,
                to,
                true,
                async {
                    let r = sb
                        .exec_stateful(StatefulExec::new(s, cmd.clone(), to))
                        .await?;
                    let c = Some(r.exit_code);
                    expect(
                        r.stdout == want.as_bytes() && r.cwd == dir && r.exit_code == 0,
                        || {
                            format!(
                                "state lost: expected {want:?}, got {:?} (exit {}, cwd {})",
                                String::from_utf8_lossy(&r.stdout),
                                r.exit_code,
                                r.cwd
                            )
                        },
                        c,
                    )?;
                    Ok(((), c))
                },
            )
            .await;
        let kind = match &r {
            None => return,
            Some(Ok(())) => Some(EventKind::StateChecked),
            // An errored check could not show the state was kept: a loss too.
            Some(Err(_)) => Some(EventKind::StateLoss),
        };
        if let Some(kind) = kind {
            let mut ev = Event::new(kind, &ctx.backend);
            ev.session_id = Some(id.clone());
            ev.command = Some(cmd.clone());
            if let Some(Err(e)) = &r {
                ev.error_class = Some(e.class.as_str().into());
            }
            ctx.emit(ev);
        }
        expected = format!("{dir}|{i}\n");
    }
}

async fn concurrent(
    ctx: &Ctx<'_>,
    backend: &Arc<dyn SandboxBackend>,
    setup_errors: &mut Vec<String>,
) -> Option<(usize, f64)> {
    let opts = ctx.opts;
    let c = opts.concurrency;
    let created = join_all((0..c).map(|_| ctx.create(backend, Measurement::Setup, true))).await;
    let ready: Vec<Arc<dyn Sandbox>> = created
        .iter()
        .filter(|(_, ok)| *ok)
        .filter_map(|(sb, _)| sb.clone())
        .collect();
    let mut result = None;
    if ready.len() < c {
        setup_errors.push(format!(
            "concurrency: only {} of {c} sandboxes could be created",
            ready.len()
        ));
    } else if !ctx.cancelled() {
        let to = opts.op_timeout;
        let session_loop = |sb: Arc<dyn Sandbox>, count: usize, record: bool| async move {
            let id = sb.id().to_string();
            for _ in 0..count {
                let r = ctx
                    .timed(
                        Measurement::Concurrent,
                        "exec_stateful",
                        "echo ok",
                        Some(&id),
                        record,
                        to,
                        true,
                        echo_ok(sb.as_ref(), "bench-conc", to),
                    )
                    .await;
                if r.is_none() {
                    return;
                }
            }
        };
        join_all(
            ready
                .iter()
                .map(|sb| session_loop(sb.clone(), opts.warmup, false)),
        )
        .await;
        let t0 = Instant::now();
        join_all(
            ready
                .iter()
                .map(|sb| session_loop(sb.clone(), opts.iterations, true)),
        )
        .await;
        result = Some((c, t0.elapsed().as_secs_f64()));
    }
    join_all(
        created
            .iter()
            .filter_map(|(sb, _)| sb.as_ref())
            .map(|sb| ctx.destroy(sb, true)),
    )
    .await;
    result
}

/// Browser sandboxes: their start (created to the DevTools endpoint answering), then page
/// navigations over CDP in the last one.
async fn browser(ctx: &Ctx<'_>, backend: &Arc<dyn SandboxBackend>, setup_errors: &mut Vec<String>) {
    let opts = ctx.opts;
    let wants = Capabilities {
        browser: true,
        ..Capabilities::default()
    };
    // At least one unrecorded start first: on a machine without the browser image it builds
    // the image (minutes), which is not the browser's start; it gets the long deadline.
    let warm = opts.warmup.max(1);
    let total = warm + opts.browser_starts;
    let mut kept: Option<(Arc<dyn Sandbox>, String)> = None;
    for i in 0..total {
        if ctx.cancelled() {
            break;
        }
        let record = i >= warm;
        let deadline = if i == 0 {
            opts.large_op_timeout
        } else {
            opts.op_timeout
        };
        let (sb, ok) = ctx
            .create_with(backend, wants, Measurement::Setup, record, deadline)
            .await;
        let Some(sb) = sb else { continue };
        let id = sb.id().to_string();
        let started = if ok {
            ctx.timed(
                Measurement::BrowserStart,
                "get_browser",
                "sandbox created -> /json/version answers",
                Some(&id),
                record,
                opts.op_timeout,
                true,
                async {
                    let b = sb.get_browser().await?;
                    let ws = b.websocket_url.clone().unwrap_or_default();
                    expect(
                        b.version.as_deref().is_some_and(|v| !v.is_empty()) && !ws.is_empty(),
                        || format!("get_browser returned no version or WebSocket URL: {b:?}"),
                        None,
                    )?;
                    Ok((ws, None))
                },
            )
            .await
        } else {
            None
        };
        match started {
            Some(Ok(ws)) if i + 1 == total => kept = Some((sb, ws)),
            _ => ctx.destroy(&sb, record).await,
        }
    }
    let Some((sb, ws)) = kept else {
        if !ctx.cancelled() {
            setup_errors.push(
                "browser: no browser sandbox for the navigation measurements (see the setup and browser_start samples)"
                    .into(),
            );
        }
        return;
    };
    navigations(ctx, &sb, &ws, setup_errors).await;
    ctx.destroy(&sb, true).await;
}

async fn navigations(
    ctx: &Ctx<'_>,
    sb: &Arc<dyn Sandbox>,
    ws: &str,
    setup_errors: &mut Vec<String>,
) {
    let opts = ctx.opts;
    let id = sb.id().to_string();
    let to = opts.op_timeout;
    let opened = ctx
        .timed(
            Measurement::Setup,
            "cdp_open_page",
            "CDP connect + Target.createTarget",
            Some(&id),
            true,
            to,
            true,
            async {
                let mut c = CdpClient::connect(ws, to).await?;
                let page = c.open_page().await?;
                Ok(((c, page), None))
            },
        )
        .await;
    let (mut c, page) = match opened {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            setup_errors.push(format!("browser: could not open a page: {}", e.detail));
            return;
        }
        None => return,
    };
    for i in 0..(opts.warmup + opts.iterations) {
        let title = format!("sandbox-harness-nav-{i}");
        let url = cdp::data_url(&format!("<title>{title}</title><p>{i}</p>"));
        let r = ctx
            .timed(
                Measurement::BrowserNavigate,
                "navigate",
                "Page.navigate data: URL + load event + Runtime.evaluate document.title",
                Some(&id),
                i >= opts.warmup,
                to,
                true,
                async {
                    c.navigate(&page, &url).await?;
                    let got = c.evaluate(&page, "document.title").await?;
                    expect(
                        got == serde_json::json!(title),
                        || format!("document.title is {got}, expected {title:?}"),
                        None,
                    )?;
                    Ok(((), None))
                },
            )
            .await;
        if r.is_none() {
            break;
        }
    }
    let _ = c.close_page(&page).await;
    c.close().await;
}
