//! The one retry policy of the GCP clients: exponential backoff with jitter on 429, 5xx and
//! transport errors, bounded by attempts and by a per-operation deadline.
//!
//! This is the shape Google's clients use for Cloud Storage ("Retry strategy",
//! <https://cloud.google.com/storage/docs/retry-strategy>: truncated exponential backoff with
//! jitter on 408, 429 and 5xx: wait 2^n seconds plus a random part, up to a maximum; Google's
//! libraries start at 1 s, double, cap one wait at 60 s and stop at a deadline). Ours starts
//! at 50 ms (the emulator answers in microseconds) and caps a wait at 5 s; each wait is at
//! least half its exponential step ("equal jitter"), so the waits of one operation add up to a
//! known floor, and the default allows enough attempts (10: at least 8 s of waiting) that a
//! sustained 429 from Cloud Storage's per-object mutation limit (one write per second per
//! object name) is waited out as Google's clients wait it out, not turned into an error.

use std::future::Future;
use std::time::{Duration, Instant};

/// How retries are spaced and bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt (grows by `multiplier` each time).
    pub initial_backoff: Duration,
    /// Cap on one backoff.
    pub max_backoff: Duration,
    /// Growth of the backoff per failure (2.0 doubles it).
    pub multiplier: f64,
    /// No attempt starts after this much time since the first.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The exponential step before the next attempt after `failures` failures (1-based):
    /// `initial_backoff` grown by `multiplier` per failure, capped at `max_backoff`.
    fn step(&self, failures: u32) -> Duration {
        let growth = self
            .multiplier
            .max(1.0)
            .powi(i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX));
        let exp = (self.initial_backoff.as_secs_f64() * growth).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(if exp.is_finite() { exp } else { 0.0 }).min(self.max_backoff)
    }

    /// The backoff after `failures` failures (1-based): half the exponential step plus a
    /// random share of the other half.
    pub fn backoff(&self, failures: u32) -> Duration {
        let step = self.step(failures);
        let jitter: f64 = rand::random();
        step / 2 + (step / 2).mul_f64(jitter)
    }

    /// The least total time this policy waits before giving up on an error that keeps being
    /// retryable (the deadline may end it sooner).
    pub fn min_total_wait(&self) -> Duration {
        (1..self.max_attempts).map(|n| self.step(n) / 2).sum()
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or the budget is spent.
    /// `retryable` decides per error; the last error is returned.
    pub async fn run<T, E, F, Fut>(&self, mut op: F, retryable: impl Fn(&E) -> bool) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let wait = self.backoff(attempt);
                    if attempt >= self.max_attempts
                        || !retryable(&e)
                        || start.elapsed() + wait >= self.deadline
                    {
                        return Err(e);
                    }
                    tracing::debug!(attempt, ?wait, "retrying after a retryable error");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// True for HTTP statuses worth retrying: 408, 429 and 5xx.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn retries_retryable_errors_until_success() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let out: Result<u32, u16> = policy
            .run(
                |_| async {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if n < 2 { Err(503) } else { Ok(n) }
                },
                |s| retryable_status(*s),
            )
            .await;
        assert_eq!(out, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn does_not_retry_client_errors_and_respects_attempts() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let out: Result<(), u16> = policy
            .run(
                |_| async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(404)
                },
                |s| retryable_status(*s),
            )
            .await;
        assert_eq!(out, Err(404));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        let out: Result<(), u16> = policy
            .run(
                |_| async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(429)
                },
                |s| retryable_status(*s),
            )
            .await;
        assert_eq!(out, Err(429));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn backoff_is_capped_and_at_least_half_its_step() {
        let p = RetryPolicy::default();
        for n in 1..40 {
            let b = p.backoff(n);
            assert!(b <= p.max_backoff);
            assert!(b >= p.step(n) / 2, "{n}: {b:?}");
        }
    }

    /// Cloud Storage allows about one write per second to one object name
    /// (https://cloud.google.com/storage/quotas, "Objects": maximum rate of writes to the same
    /// object name) and answers 429 above it; the default policy waits at least that long
    /// before giving up, several times over.
    #[test]
    fn default_policy_outwaits_the_per_object_write_limit() {
        let p = RetryPolicy::default();
        assert!(p.min_total_wait() >= Duration::from_secs(5), "{p:?}");
        assert!(p.min_total_wait() < p.deadline);
        assert!(retryable_status(429));
    }
}
