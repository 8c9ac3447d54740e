//! `sandbox-harness health`: probes /health, /ready and /live of a service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sandbox_harness::{health, report, suites};

/// Flags of `health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Base URL of the service, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Path prefix before the endpoints, e.g. /api/v1.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Probes per endpoint.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Per-probe timeout.
    #[arg(long, value_name = super::duration::VALUE_NAME, default_value = "2s",
          value_parser = super::duration::parse)]
    timeout: Duration,
    /// Where health.json and health.md go.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    out: PathBuf,
    /// The health table from this folder (default: the built-in suites/).
    #[arg(long, value_name = "DIR")]
    suites: Option<PathBuf>,
}

/// Probes, prints the table, writes the reports; exits 1 when an endpoint misses its row.
pub async fn run(args: &HealthArgs) -> ExitCode {
    let suites = match suites::Suites::load(args.suites.as_deref()) {
        Ok(s) => s,
        Err(e) => return super::failure(&e),
    };
    let client = reqwest::Client::new();
    let samples = health::probe(
        &client,
        &args.url,
        &args.prefix,
        args.iterations.max(1),
        args.timeout,
    )
    .await;
    let full = format!(
        "{}{}",
        args.url.trim_end_matches('/'),
        args.prefix.trim_end_matches('/')
    );
    let report = health::HealthReport::new(&full, samples, &suites.health);
    println!(
        "{}",
        report.render(sandbox_harness::output::TableStyle::Terminal)
    );
    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    for (name, bytes) in [
        ("health.json", json),
        ("health.md", report.to_markdown().into_bytes()),
    ] {
        let path = args.out.join(name);
        match report::write_atomic(&path, &bytes) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => return super::failure(&e),
        }
    }
    super::passed(report.passed())
}
