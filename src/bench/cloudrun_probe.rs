//! The Cloud Run phase probe for the bench: one cold start and one warm command taken apart,
//! and sandbox creation timed from zero and from the warm pool.
//!
//! Cold start phases run between these timestamps: the client's `create` call; the job
//! ready (client); the execution's `createTime` (Admin API); its `ResourcesAvailable`
//! condition's transition (Admin API); the worker process up (`started_ms` in its heartbeat,
//! the worker's clock); the first answer in the client's hands. A warm command: the inbox
//! insert sent and returned (client); the worker's run start and end (worker); the answer
//! object's `timeCreated` (Cloud Storage); the answer in the client's hands. Where a
//! timestamp is missing, the phase is merged into the next and a note says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::phases::{CreationFigure, Mark, PhaseProbe, PhaseReport, PhaseTimeline};
use crate::backends::cloudrun::{CloudRunBackend, CloudRunSandbox};
use crate::protocol::{Result, Sandbox, SandboxError, StatefulExec};

/// What sandbox creation times, in both directions (the bench's cold-start row times the same).
const CREATION: &str = "create + ensure_ready + exec_stateful `true`";
/// How long the probe waits for the pool to have a ready entry before a claim (not timed).
const POOL_WAIT: Duration = Duration::from_secs(180);
/// Deadline of one probe command.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// The probe over a Cloud Run backend.
pub struct CloudRunPhaseProbe {
    backend: Arc<CloudRunBackend>,
}

impl CloudRunPhaseProbe {
    /// A probe of `backend`.
    pub fn new(backend: Arc<CloudRunBackend>) -> Self {
        CloudRunPhaseProbe { backend }
    }

    /// One cold start from zero, taken apart; returns the sandbox for the warm command.
    async fn cold_start(&self) -> Result<(PhaseTimeline, f64, Arc<CloudRunSandbox>)> {
        let t0 = Utc::now();
        let clock = Instant::now();
        let sb = self.backend.create_from_zero().await?;
        let job_ready = Utc::now();
        let first = async {
            sb.ensure_ready().await?;
            run_true(sb.as_ref()).await
        }
        .await;
        let answered = Utc::now();
        let seconds = clock.elapsed().as_secs_f64();
        if let Err(e) = first {
            let _ = sb.destroy().await;
            return Err(e);
        }
        let mut notes = Vec::new();
        let mut ends: Vec<(&str, Mark)> = vec![("job create", Mark::new(job_ready, "client"))];
        let start = sb.transport().last_execution_start();
        let execution = match &start {
            Some(s) => self
                .backend
                .run_client()
                .get_execution(&s.execution)
                .await
                .ok(),
            None => None,
        };
        let condition_time = |kind: &str| {
            execution.as_ref().and_then(|x| {
                x.conditions
                    .iter()
                    .find(|c| c.type_ == kind && c.state == "CONDITION_SUCCEEDED")
                    .and_then(|c| rfc3339(c.last_transition_time.as_deref()))
            })
        };
        match (
            execution
                .as_ref()
                .and_then(|x| rfc3339(x.create_time.as_deref())),
            &start,
        ) {
            (Some(t), _) => ends.push((
                "image import / execution scheduled",
                Mark::new(t, "Admin API"),
            )),
            (None, Some(s)) => {
                notes.push("the execution's createTime was not available: the run call's answer (client) stands in".into());
                ends.push((
                    "image import / execution scheduled",
                    Mark::new(s.run_returned, "client"),
                ));
            }
            (None, None) => notes.push(
                "this client started no execution (another worker served): no execution phases"
                    .into(),
            ),
        }
        match condition_time("ResourcesAvailable") {
            Some(t) => ends.push(("resources", Mark::new(t, "Admin API"))),
            None => notes.push(
                "no ResourcesAvailable transition: resources are counted in the next phase".into(),
            ),
        }
        let worker_up = sb
            .transport()
            .worker_heartbeat("probe")
            .await
            .ok()
            .flatten()
            .and_then(|hb| DateTime::from_timestamp_millis(hb.started_ms as i64));
        match worker_up {
            Some(t) => ends.push(("container start", Mark::new(t, "worker"))),
            None => notes
                .push("no worker heartbeat: container start is counted in the first answer".into()),
        }
        ends.push(("first answer", Mark::new(answered, "client")));
        let mut t = PhaseTimeline::from_marks(
            "Cold start (create from zero + first command)",
            Mark::new(t0, "client"),
            ends,
        );
        notes
            .push("the scheduling phase also holds the client's job check and the run call".into());
        t.notes = notes;
        Ok((t, seconds, sb))
    }

    /// One warm command on `sb`, taken apart.
    async fn warm_command(&self, sb: &CloudRunSandbox) -> Result<PhaseTimeline> {
        let transport = sb.transport();
        transport.set_answer_tracing(true);
        let res = run_true(sb).await;
        transport.set_answer_tracing(false);
        res?;
        let trace = transport.last_request_trace().ok_or_else(|| {
            SandboxError::backend(sb.id(), "probe", "the transport kept no request trace")
        })?;
        let mut notes = Vec::new();
        let mut ends: Vec<(&str, Mark)> = vec![(
            "client upload of request",
            Mark::new(trace.queued, "client"),
        )];
        let ms = |v: u64| DateTime::from_timestamp_millis(v as i64);
        match trace.worker {
            Some(w) => {
                if let Some(t) = ms(w.run_started_ms) {
                    ends.push(("worker pickup", Mark::new(t, "worker")));
                }
                if let Some(t) = ms(w.run_ended_ms) {
                    ends.push(("run", Mark::new(t, "worker")));
                }
            }
            None => notes.push(
                "the worker reported no timing: pickup and run are counted in the answer write"
                    .into(),
            ),
        }
        match trace.answer_created {
            Some(t) => ends.push(("answer write", Mark::new(t, "Cloud Storage"))),
            None => notes.push(
                "the answer's creation time was not available: the answer write is counted in the client fetch".into(),
            ),
        }
        ends.push(("client fetch", Mark::new(trace.answered, "client")));
        let mut t = PhaseTimeline::from_marks(
            "Warm command (exec_stateful `true`)",
            Mark::new(trace.sent, "client"),
            ends,
        );
        notes.push(
            "pickup and client fetch include the wait for the next poll; the probe reads the answer's metadata after the answer is in hand, so the figure is not slowed by it".into(),
        );
        t.notes = notes;
        Ok(t)
    }

    /// Times one creation through `create` (a pool claim when one is ready).
    async fn timed_create(&self, from_pool: bool) -> Result<f64> {
        let t = Instant::now();
        let sb = if from_pool {
            self.backend.create_cloudrun().await?
        } else {
            self.backend.create_from_zero().await?
        };
        let r = async {
            sb.ensure_ready().await?;
            run_true(sb.as_ref()).await
        }
        .await;
        let secs = t.elapsed().as_secs_f64();
        let _ = sb.destroy().await;
        r.map(|()| secs)
    }
}

fn rfc3339(s: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

async fn run_true(sb: &dyn Sandbox) -> Result<()> {
    let r = sb
        .exec_stateful(StatefulExec::new("bench-probe", "true", COMMAND_DEADLINE))
        .await?;
    if r.exit_code != 0 {
        return Err(SandboxError::backend(
            sb.id(),
            "probe",
            format!("`true` exited {}", r.exit_code),
        ));
    }
    Ok(())
}

#[async_trait]
impl PhaseProbe for CloudRunPhaseProbe {
    async fn probe(&self, creations: usize) -> Result<PhaseReport> {
        let mut report = PhaseReport {
            deployment: crate::backends::cloudrun::deployment::Deployment::from_config(
                self.backend.config(),
            )
            .ok(),
            ..PhaseReport::default()
        };
        let mut from_zero = Vec::new();
        match self.cold_start().await {
            Ok((timeline, secs, sb)) => {
                report.cold_start = Some(timeline);
                from_zero.push(secs);
                match self.warm_command(&sb).await {
                    Ok(t) => report.warm_command = Some(t),
                    Err(e) => report.errors.push(format!("warm command: {e}")),
                }
                if let Err(e) = sb.destroy().await {
                    report.errors.push(format!("destroy: {e}"));
                }
            }
            Err(e) => report.errors.push(format!("cold start: {e}")),
        }
        for _ in 1..creations {
            match self.timed_create(false).await {
                Ok(s) => from_zero.push(s),
                Err(e) => report.errors.push(format!("creation from zero: {e}")),
            }
        }
        report
            .creation
            .push(CreationFigure::new("from zero", CREATION, from_zero));
        let mut from_pool = Vec::new();
        let pool_figure = match self.backend.pool() {
            None => {
                let mut f = CreationFigure::new("from the warm pool", CREATION, Vec::new());
                f.missing = Some("no warm pool (pool_size = 0; set --pool-size N)".into());
                f
            }
            Some(pool) => {
                for _ in 0..creations {
                    // Waiting for the refill is set-up, not part of the figure.
                    let before = pool.wait_ready(1, POOL_WAIT).await;
                    if before.ready == 0 {
                        report.errors.push(format!(
                            "the warm pool had no ready entry after {POOL_WAIT:?} (last error: {})",
                            before.last_error.as_deref().unwrap_or("none")
                        ));
                        break;
                    }
                    match self.timed_create(true).await {
                        Ok(s) if pool.stats().claimed > before.claimed => from_pool.push(s),
                        Ok(_) => report
                            .errors
                            .push("a creation meant for the pool was served from zero".into()),
                        Err(e) => report.errors.push(format!("creation from the pool: {e}")),
                    }
                }
                let mut f = CreationFigure::new("from the warm pool", CREATION, from_pool);
                if f.samples_seconds.is_empty() {
                    f.missing = Some("no creation was served by the pool".into());
                }
                f
            }
        };
        report.creation.push(pool_figure);
        Ok(report)
    }
}
