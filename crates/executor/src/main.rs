//! `sandbox-executor worker`: the session worker inside a Cloud Run job execution;
//! `sandbox-executor serve`: the agent the Docker backend talks to over an exec's stdio.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sandbox_executor::gcs::Gcs;
use sandbox_executor::serve::serve;
use sandbox_executor::worker::{
    CrashPoint, HEARTBEAT_EVERY, Mirror, PollSchedule, SWEEP_EVERY, WorkerConfig, run_worker,
};

/// How often the mirror copies changed files (Cloud Storage allows about one write a second
/// to one object name).
const MIRROR_EVERY: Duration = Duration::from_secs(2);

const USAGE: &str = "usage: sandbox-executor worker --bucket NAME --prefix sessions/ID/ [--idle-timeout-ms N] [--poll-min-ms N] [--poll-max-ms N] [--poll-hold-ms N] [--heartbeat-ms N] [--max-lifetime-ms N] [--mirror LOCAL=DURABLE]
       sandbox-executor serve
The worker reaches Cloud Storage at https://storage.googleapis.com (or STORAGE_EMULATOR_HOST)
with a token from the metadata server (GCE_METADATA_HOST, else 169.254.169.254).";

fn parse(args: &[String]) -> Result<(WorkerConfig, String), String> {
    let mut cfg = WorkerConfig {
        prefix: String::new(),
        idle_timeout: Duration::from_secs(60),
        poll: PollSchedule {
            min: Duration::from_millis(25),
            max: Duration::from_millis(1000),
            hold: Duration::from_millis(2000),
        },
        sweep_every: SWEEP_EVERY,
        heartbeat_every: HEARTBEAT_EVERY,
        max_lifetime: Duration::from_secs(540),
        execution: std::env::var("CLOUD_RUN_EXECUTION").unwrap_or_else(|_| "local".into()),
        crash: CrashPoint::from_env(),
        mirror: None,
    };
    let mut bucket = String::new();
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("worker") => {}
        _ => return Err(USAGE.into()),
    }
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let ms = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|v| *v > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    format!("{flag} takes a positive number of milliseconds, got {value:?}")
                })
        };
        match flag.as_str() {
            "--bucket" => bucket = value.clone(),
            "--prefix" => cfg.prefix = value.clone(),
            "--idle-timeout-ms" => cfg.idle_timeout = ms()?,
            "--poll-min-ms" => cfg.poll.min = ms()?,
            "--poll-max-ms" => cfg.poll.max = ms()?,
            "--poll-hold-ms" => cfg.poll.hold = ms()?,
            "--heartbeat-ms" => cfg.heartbeat_every = ms()?,
            "--max-lifetime-ms" => cfg.max_lifetime = ms()?,
            "--mirror" => {
                cfg.mirror = Some(Mirror::parse(value, MIRROR_EVERY).ok_or_else(|| {
                    format!("--mirror takes LOCAL_DIR=DURABLE_DIR, got {value:?}")
                })?)
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if bucket.is_empty() || cfg.prefix.is_empty() {
        return Err(format!("--bucket and --prefix are required\n{USAGE}"));
    }
    if !cfg.prefix.ends_with('/') {
        cfg.prefix.push('/');
    }
    if cfg.poll.max < cfg.poll.min {
        return Err(format!("--poll-max-ms is below --poll-min-ms\n{USAGE}"));
    }
    Ok((cfg, bucket))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        if args.len() > 1 {
            eprintln!("sandbox-executor: serve takes no flags\n{USAGE}");
            return ExitCode::from(2);
        }
        let stdin = std::io::stdin().lock();
        return match serve(stdin, std::io::stdout()) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sandbox-executor: serve failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (cfg, bucket) = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandbox-executor: {e}");
            return ExitCode::from(2);
        }
    };
    match run_worker(&cfg, Arc::new(Gcs::from_env(&bucket))) {
        Ok(served) => {
            eprintln!("sandbox-executor: worker stopped after {served} requests");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sandbox-executor: worker failed: {e}");
            ExitCode::FAILURE
        }
    }
}
