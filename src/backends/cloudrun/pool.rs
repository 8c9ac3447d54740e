//! The warm pool: sandboxes whose worker execution is already started and idle, for `create`
//! to claim instead of paying a job creation and an execution start.
//!
//! Each entry is a whole sandbox (a job labelled `sandbox-harness`, `sandbox-harness-sandbox`
//! and `sandbox-harness-pool`, so `gc` finds leftovers, and one running execution). An entry
//! is ready once its worker's heartbeat names its execution. A claim hands the oldest ready
//! entry out and wakes the refill; an entry whose worker stopped (its idle timeout) gets a new
//! execution. Every pooled execution is billed while it waits: the cost model prices the pool
//! from the same `pool_size`, idle timeout and resources (`crate::cost`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::transport::{read_heartbeat, sandbox_prefix};
use super::{CloudRunConfig, CloudRunLifecycle, JOB_PREFIX, create_job, job_spec, new_sandbox_id};
use crate::emulator::LocalCloud;
use crate::gcp::run::RunClient;
use crate::gcp::storage::StorageClient;
use crate::generic::Lifecycle;

/// How often the pool looks at its entries when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);
/// How often a ready entry's execution is asked whether it still runs.
const RECHECK_READY: Duration = Duration::from_secs(2);
/// An entry whose worker has not come up in this long is removed and replaced.
const START_LIMIT: Duration = Duration::from_secs(180);
/// Longest wait after failures to create entries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the pool needs to create and run sandboxes.
#[derive(Clone)]
pub struct PoolSetup {
    /// Entries to keep.
    pub size: usize,
    /// Admin API client.
    pub run: RunClient,
    /// Storage client.
    pub storage: StorageClient,
    /// The backend's configuration (job spec, bucket, heartbeat).
    pub cfg: CloudRunConfig,
    /// Executor image.
    pub image: String,
    /// `projects/<p>/locations/<region>`.
    pub parent: String,
    /// The embedded emulator, kept alive with the pool.
    pub local: Option<Arc<LocalCloud>>,
}

/// A pre-started sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolEntry {
    /// Sandbox id.
    pub id: String,
    /// Job full name.
    pub job: String,
    /// The running execution's full name.
    pub execution: String,
}

/// The pool's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Entries it keeps.
    pub size: usize,
    /// Entries whose worker is up, waiting for a claim.
    pub ready: usize,
    /// Entries whose execution is starting.
    pub starting: usize,
    /// Executions the pool started (first starts and restarts after an idle timeout).
    pub executions_started: u64,
    /// Claims served with a ready entry.
    pub claimed: u64,
    /// Claims that found no ready entry (the sandbox was created from zero).
    pub misses: u64,
    /// Entries that could not be created or started.
    pub failures: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

struct Starting {
    entry: PoolEntry,
    since: Instant,
}

struct Ready {
    entry: PoolEntry,
    checked: Instant,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Ready>,
    starting: Vec<Starting>,
    /// Entries being created right now.
    creating: usize,
    stats: PoolStats,
}

struct Inner {
    setup: PoolSetup,
    state: Mutex<State>,
    wake: Notify,
    cancel: CancellationToken,
}

/// The warm pool of one backend.
pub struct WarmPool {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WarmPool {
    /// Starts filling a pool of `setup.size` entries in the background.
    pub fn start(setup: PoolSetup) -> Arc<WarmPool> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                stats: PoolStats {
                    size: setup.size,
                    ..PoolStats::default()
                },
                ..State::default()
            }),
            setup,
            wake: Notify::new(),
            cancel: CancellationToken::new(),
        });
        let task = tokio::spawn(maintain(inner.clone()));
        Arc::new(WarmPool {
            inner,
            task: Mutex::new(Some(task)),
        })
    }

    /// Takes the oldest ready entry (and starts its replacement), or counts a miss.
    pub fn claim(&self) -> Option<PoolEntry> {
        let got = {
            let mut st = self.inner.lock();
            match st.ready.pop_front() {
                Some(r) => {
                    st.stats.claimed += 1;
                    Some(r.entry)
                }
                None => {
                    st.stats.misses += 1;
                    None
                }
            }
        };
        self.inner.wake.notify_one();
        got
    }

    /// The counters now.
    pub fn stats(&self) -> PoolStats {
        let st = self.inner.lock();
        PoolStats {
            ready: st.ready.len(),
            starting: st.starting.len() + st.creating,
            ..st.stats.clone()
        }
    }

    /// The ready entries, oldest first.
    pub fn ready_entries(&self) -> Vec<PoolEntry> {
        self.inner
            .lock()
            .ready
            .iter()
            .map(|r| r.entry.clone())
            .collect()
    }

    /// Waits until `n` entries are ready, or `limit` passes; returns the counters then.
    pub async fn wait_ready(&self, n: usize, limit: Duration) -> PoolStats {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.stats();
            if s.ready >= n || Instant::now() >= deadline || self.inner.cancel.is_cancelled() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops refilling and removes every unclaimed entry (executions cancelled, job and
    /// objects deleted).
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        let entries: Vec<PoolEntry> = {
            let mut st = self.inner.lock();
            let mut all: Vec<PoolEntry> = st.ready.drain(..).map(|r| r.entry).collect();
            all.extend(st.starting.drain(..).map(|s| s.entry));
            all
        };
        for e in entries {
            self.inner.remove(&e).await;
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        // Without a shutdown the entries stay behind for `gc` (they are labelled).
        self.inner.cancel.cancel();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, what: String) {
        tracing::warn!(error = %what, "warm pool");
        let mut st = self.lock();
        st.stats.failures += 1;
        st.stats.last_error = Some(what);
    }

    /// Creates a new entry's job and starts its execution.
    async fn create_entry(&self) -> Result<PoolEntry, String> {
        let s = &self.setup;
        let id = new_sandbox_id();
        let job = format!("{}/jobs/{JOB_PREFIX}{id}", s.parent);
        create_job(
            &s.run,
            &s.parent,
            &id,
            &job_spec(&s.cfg, &s.image, &id, true),
        )
        .await
        .map_err(|e| e.to_string())?;
        let entry = PoolEntry {
            id,
            job,
            execution: String::new(),
        };
        match self.start_execution(&entry.job).await {
            Ok(execution) => Ok(PoolEntry { execution, ..entry }),
            Err(e) => {
                self.remove(&entry).await;
                Err(e)
            }
        }
    }

    async fn start_execution(&self, job: &str) -> Result<String, String> {
        let op = self
            .setup
            .run
            .run_job(job, None)
            .await
            .map_err(|e| e.to_string())?;
        let name = op
            .execution()
            .map(|e| e.name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("running {job} named no execution"))?;
        self.lock().stats.executions_started += 1;
        Ok(name)
    }

    /// True once the entry's worker beats for its execution.
    async fn worker_up(&self, e: &PoolEntry) -> bool {
        let s = &self.setup;
        match read_heartbeat(&s.storage, &s.cfg.bucket, &sandbox_prefix(&e.id), &e.job).await {
            Ok(Some((hb, _))) => hb.execution == e.execution && hb.is_live(s.cfg.heartbeat_every()),
            _ => false,
        }
    }

    /// Whether the entry's execution has ended (`None`: could not tell).
    async fn ended(&self, e: &PoolEntry) -> Option<bool> {
        match self.setup.run.get_execution(&e.execution).await {
            Ok(x) => Some(x.is_done()),
            Err(err) if err.is_not_found() => Some(true),
            Err(_) => None,
        }
    }

    /// Removes an entry's sandbox as `destroy` does.
    async fn remove(&self, e: &PoolEntry) {
        let s = &self.setup;
        let lifecycle = CloudRunLifecycle {
            id: e.id.clone(),
            job: e.job.clone(),
            bucket: s.cfg.bucket.clone(),
            storage: s.storage.clone(),
            run: s.run.clone(),
            _local: s.local.clone(),
        };
        if let Err(err) = lifecycle.destroy().await {
            tracing::warn!(sandbox = %e.id, error = %err, "removing a warm-pool entry failed; gc removes it later");
        }
    }
}

/// The pool's background loop: fills, promotes started entries, restarts stopped ones.
async fn maintain(inner: Arc<Inner>) {
    let mut backoff = Duration::ZERO;
    let mut retry_at: Option<Instant> = None;
    while !inner.cancel.is_cancelled() {
        // Fill: one entry at a time, so a failing project is not flooded.
        let missing = {
            let st = inner.lock();
            inner
                .setup
                .size
                .saturating_sub(st.ready.len() + st.starting.len() + st.creating)
        };
        if missing > 0 && retry_at.is_none_or(|t| Instant::now() >= t) {
            inner.lock().creating += 1;
            let made = tokio::select! {
                r = inner.create_entry() => Some(r),
                _ = inner.cancel.cancelled() => None,
            };
            inner.lock().creating -= 1;
            match made {
                Some(Ok(entry)) => {
                    inner.lock().starting.push(Starting {
                        entry,
                        since: Instant::now(),
                    });
                    backoff = Duration::ZERO;
                    retry_at = None;
                }
                Some(Err(e)) => {
                    inner.fail(format!("creating an entry: {e}"));
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    retry_at = Some(Instant::now() + backoff);
                }
                None => {}
            }
            continue;
        }
        // Promote entries whose worker came up; replace those that never did.
        let starting: Vec<PoolEntry> = inner
            .lock()
            .starting
            .iter()
            .map(|s| s.entry.clone())
            .collect();
        for e in starting {
            if inner.worker_up(&e).await {
                let mut st = inner.lock();
                st.starting.retain(|s| s.entry != e);
                st.ready.push_back(Ready {
                    entry: e,
                    checked: Instant::now(),
                });
                continue;
            }
            let since = inner
                .lock()
                .starting
                .iter()
                .find(|s| s.entry == e)
                .map(|s| s.since);
            let too_long = since.is_some_and(|t| t.elapsed() > START_LIMIT);
            if too_long || inner.ended(&e).await == Some(true) {
                inner.lock().starting.retain(|s| s.entry != e);
                inner.fail(format!(
                    "the execution {} {} before its worker came up",
                    e.execution,
                    if too_long { "took too long" } else { "ended" }
                ));
                inner.remove(&e).await;
            }
        }
        // Restart ready entries whose worker stopped (idle timeout).
        let due: Vec<PoolEntry> = inner
            .lock()
            .ready
            .iter()
            .filter(|r| r.checked.elapsed() >= RECHECK_READY)
            .map(|r| r.entry.clone())
            .collect();
        for e in due {
            let ended = inner.ended(&e).await;
            let restart = {
                let mut st = inner.lock();
                match st.ready.iter().position(|r| r.entry == e) {
                    // Claimed meanwhile.
                    None => false,
                    Some(pos) if ended != Some(true) => {
                        st.ready[pos].checked = Instant::now();
                        false
                    }
                    Some(pos) => {
                        st.ready.remove(pos);
                        true
                    }
                }
            };
            if !restart {
                continue;
            }
            match inner.start_execution(&e.job).await {
                Ok(execution) => inner.lock().starting.push(Starting {
                    entry: PoolEntry { execution, ..e },
                    since: Instant::now(),
                }),
                Err(err) => {
                    inner.fail(format!("restarting {}: {err}", e.job));
                    inner.remove(&e).await;
                }
            }
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = inner.cancel.cancelled() => {}
        }
    }
}
