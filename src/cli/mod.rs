//! The subcommands, one file each, and the rules they share: exit codes, durations, Ctrl-C.
//!
//! Exit codes: 0 success, 1 a failed check or a run that could not be carried out, 2 a usage
//! error (clap's own, a bad flag value such as an unknown backend).

use std::future::Future;
use std::process::ExitCode;

use sandbox_harness::pipeline::PipelineError;

pub mod bench;
pub mod conform;
pub mod duration;
pub mod emulator;
pub mod gate;
pub mod gc;
pub mod health;
pub mod image;
pub mod measure;
pub mod metrics;
pub mod preflight;
pub mod report;
pub mod run;
pub mod shell;

/// Exit code of a usage error (clap uses the same).
const USAGE: u8 = 2;

/// Prints `msg` and exits 2: the command line is at fault.
pub fn usage_error(msg: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sandbox-harness: {msg}");
    ExitCode::from(USAGE)
}

/// Prints `msg` and exits 1: the run failed.
pub fn failure(msg: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sandbox-harness: {msg}");
    ExitCode::FAILURE
}

/// 0 when `ok`, else 1.
pub fn passed(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The exit code of a pipeline run: its own, 2 for a usage error, 1 for any other error.
pub fn fail_on(r: Result<ExitCode, PipelineError>) -> ExitCode {
    r.unwrap_or_else(|e| {
        if e.is_usage() {
            usage_error(&e)
        } else {
            failure(&e)
        }
    })
}

/// Runs `work` until it ends or the process gets Ctrl-C (then `None`), so that the caller
/// still closes what it opened.
pub async fn until_ctrl_c<F: Future>(work: F) -> Option<F::Output> {
    tokio::select! {
        out = work => Some(out),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("sandbox-harness: interrupted; closing the backends");
            None
        }
    }
}

/// The error of a run stopped by Ctrl-C.
pub fn interrupted() -> PipelineError {
    PipelineError::Io(std::io::Error::new(
        std::io::ErrorKind::Interrupted,
        "interrupted by Ctrl-C",
    ))
}

/// Runs the conformance suite on the backends `--backend` names (opened for conformance) and
/// closes them on every path, Ctrl-C included.
pub async fn conform_and_close(
    m: &measure::MeasureArgs,
    strict: bool,
) -> Result<sandbox_harness::conformance::RunReport, PipelineError> {
    let backends = measure::open_for_conformance(m).await?;
    let settings = m.conform_settings(strict);
    let report = until_ctrl_c(sandbox_harness::pipeline::conform(&backends, &settings)).await;
    backends.close().await;
    report.ok_or_else(interrupted)?
}
