//! `sandbox-harness conform`: the conformance suite and its parity matrix.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sandbox_harness::backends::{self, OpenOptions};
use sandbox_harness::conformance;
use sandbox_harness::suites::profile;

/// Flags of `conform`.
#[derive(Debug, clap::Args)]
pub struct ConformArgs {
    /// Backends: docker, cloudrun, all, or a comma-separated list.
    #[arg(long, default_value = "all")]
    backend: String,
    /// Any skip (backend not configured, engine unreachable) is a failure.
    #[arg(long)]
    strict: bool,
    /// Only cases whose id contains PATTERN (or matches it as a glob, e.g. `files.*`).
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
    /// Also run the `*.scn` scenario files of this folder (repeatable).
    #[arg(long, value_name = "DIR")]
    scenarios: Vec<PathBuf>,
    /// Leave out the heavy cases (the 500 MB transfer).
    #[arg(long)]
    skip_heavy: bool,
    /// Stop each case after this long.
    #[arg(long, value_name = super::duration::VALUE_NAME, default_value = "5m",
          value_parser = super::duration::parse)]
    case_timeout: Duration,
    /// Where the JSON and Markdown reports go.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    out: PathBuf,
    /// The Cloud Run twin's latency profile (a built-in name or a file) [default: none].
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<String>,
}

/// Runs the suite, prints the matrix, writes the reports; exits 1 on a failed case (or a
/// skip with `--strict`), 2 on a bad `--backend`.
pub async fn run(args: ConformArgs) -> ExitCode {
    let opts = OpenOptions {
        profile: args.profile.clone(),
        default_profile: Some(profile::CONFORMANCE_DEFAULT.into()),
        ..OpenOptions::default()
    };
    let backends = match backends::open(&args.backend, &opts).await {
        Ok(b) => b,
        Err(e) => return super::usage_error(&e),
    };
    let code = super::until_ctrl_c(conform(&args, &backends)).await;
    backends.close().await;
    code.unwrap_or(ExitCode::FAILURE)
}

async fn conform(args: &ConformArgs, backends: &backends::Backends) -> ExitCode {
    let entries = conformance::Registry::from_backends(backends)
        .select("all")
        .unwrap_or_default();
    let opts = conformance::RunOptions {
        strict: args.strict,
        filter: args.filter.clone(),
        scenario_dirs: args.scenarios.clone(),
        case_timeout: args.case_timeout,
        skip_heavy: args.skip_heavy,
        ..conformance::RunOptions::default()
    };
    let mut reporters: Vec<Box<dyn conformance::Reporter>> = vec![Box::new(
        conformance::ConsoleReporter::new(std::io::stderr()),
    )];
    let report = match conformance::run_with_reporters(&entries, &opts, &mut reporters).await {
        Ok(r) => r,
        Err(e) => return super::failure(&e),
    };
    println!("{}", conformance::render_terminal(&report));
    match conformance::write_reports(&report, &args.out) {
        Ok(paths) => {
            for p in paths {
                eprintln!("wrote {}", p.display());
            }
        }
        Err(e) => {
            let msg = format!("cannot write reports into {}: {e}", args.out.display());
            return super::failure(&msg);
        }
    }
    ExitCode::from(report.exit_code(args.strict) as u8)
}
