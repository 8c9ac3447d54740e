//! The `sandbox-harness` command line: parses the flags and hands each subcommand to its file
//! under `cli/`.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Conformance and benchmark harness for AI-agent code-execution sandboxes.
#[derive(Debug, Parser)]
#[command(name = "sandbox-harness", version, about)]
struct Cli {
    /// Log filter (tracing env-filter syntax); RUST_LOG also works.
    #[arg(
        long,
        global = true,
        env = "SANDBOX_HARNESS_LOG",
        default_value = "warn"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: conformance and bench on every backend, reports, phase-1 verdicts.
    Run(cli::run::RunArgs),
    /// Benchmark the backends against the acceptance tables and write JSON, Markdown and HTML.
    Bench(cli::bench::BenchArgs),
    /// Run what a migration phase needs and exit non-zero naming each failed gate.
    Gate(cli::gate::GateArgs),
    /// Compare two bench reports and show regressions.
    Report(cli::report::ReportArgs),
    /// Monitoring figures from an event log, against the monitoring thresholds.
    Metrics(cli::metrics::MetricsArgs),
    /// Run the conformance suite and print the parity matrix (reports into --out).
    Conform(cli::conform::ConformArgs),
    /// An interactive session on a backend: each line runs statefully; `:help` lists meta-commands.
    Shell(cli::shell::ShellArgs),
    /// Probe /health, /ready and /live of a service and report their latency and shape.
    Health(cli::health::HealthArgs),
    /// Build a sandbox image offline now (otherwise it is built on first use) and say how long
    /// it took and how large it is. `browser` bootstraps Debian with Chromium (needs root).
    Image(cli::image::ImageArgs),
    /// The Phase 0 preflight checklist (bucket, lifecycle, IAM, Run API, a test job); exit 1 on failure.
    Preflight(cli::preflight::PreflightArgs),
    /// Run the local Cloud Run + Cloud Storage emulator on 127.0.0.1 until Ctrl-C.
    Emulator(cli::emulator::EmulatorArgs),
    /// Remove containers, Cloud Run jobs and session objects a crashed run left behind.
    Gc(cli::gc::GcArgs),
}

fn init_logging(filter: &str) {
    // The FUSE library warns about every request the twin's volumes leave to its defaults
    // (extended attributes, a second unmount): not the user's business unless asked.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("{filter},fuser=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return cli::failure(&format!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(dispatch(cli.command));
    // Not waiting for blocking reads: after Ctrl-C the shell's stdin read never ends.
    runtime.shutdown_background();
    code
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Run(args) => cli::run::run(args).await,
        Command::Bench(args) => cli::bench::run(args).await,
        Command::Gate(args) => cli::gate::run(args).await,
        Command::Report(args) => cli::report::run(&args),
        Command::Metrics(args) => cli::metrics::run(&args),
        Command::Conform(args) => cli::conform::run(args).await,
        Command::Shell(args) => cli::shell::run(&args).await,
        Command::Health(args) => cli::health::run(&args).await,
        Command::Image(args) => cli::image::run(&args).await,
        Command::Preflight(args) => cli::preflight::run(&args).await,
        Command::Emulator(args) => cli::emulator::run(&args).await,
        Command::Gc(args) => cli::gc::run(&args).await,
    }
}
