//! `sandbox-executor worker`: the session worker inside a Cloud Run job execution;
//! `sandbox-executor serve`: the agent the Docker backend talks to over an exec's stdio.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sandbox_executor::serve::serve;
use sandbox_executor::worker::{CrashPoint, WorkerConfig, run_worker};

const USAGE: &str = "usage: sandbox-executor worker --state-dir DIR [--idle-timeout-ms N] [--poll-ms N] [--max-lifetime-ms N]\n       sandbox-executor serve";

fn parse(args: &[String]) -> Result<WorkerConfig, String> {
    let mut cfg = WorkerConfig {
        state_dir: PathBuf::new(),
        idle_timeout: Duration::from_secs(60),
        poll: Duration::from_millis(10),
        max_lifetime: Duration::from_secs(540),
        execution: std::env::var("CLOUD_RUN_EXECUTION").unwrap_or_else(|_| "local".into()),
        crash: CrashPoint::from_env(),
    };
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
                .map(Duration::from_millis)
                .map_err(|_| format!("{flag} takes milliseconds, got {value:?}"))
        };
        match flag.as_str() {
            "--state-dir" => cfg.state_dir = PathBuf::from(value),
            "--idle-timeout-ms" => cfg.idle_timeout = ms()?,
            "--poll-ms" => cfg.poll = ms()?,
            "--max-lifetime-ms" => cfg.max_lifetime = ms()?,
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if cfg.state_dir.as_os_str().is_empty() {
        return Err(format!("--state-dir is required\n{USAGE}"));
    }
    Ok(cfg)
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
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandbox-executor: {e}");
            return ExitCode::from(2);
        }
    };
    match run_worker(&cfg) {
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
