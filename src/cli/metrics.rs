//! `sandbox-harness metrics`: monitoring figures from an event log.

use std::path::PathBuf;
use std::process::ExitCode;

use sandbox_harness::{metrics, suites};

/// Flags of `metrics`.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// The events file written by `bench --events`.
    events: PathBuf,
    /// The events come from the emulator (labels the cost projection).
    #[arg(long)]
    emulator: bool,
    /// Thresholds and prices from this folder.
    #[arg(long, value_name = "DIR")]
    suites: Option<PathBuf>,
}

/// Prints the figures; exits 1 when one alerts.
pub fn run(args: &MetricsArgs) -> ExitCode {
    let suites = match suites::Suites::load(args.suites.as_deref()) {
        Ok(s) => s,
        Err(e) => return super::failure(&e),
    };
    let opts = metrics::MetricsOptions {
        monitoring: suites.monitoring,
        prices: suites.prices,
        cost_profile: suites.cost_profile,
        from_emulator: args.emulator,
        ..metrics::MetricsOptions::default()
    };
    match metrics::from_events(&args.events, &opts) {
        Ok(m) => {
            println!("{}", m.render());
            super::passed(!m.backends.iter().any(|b| b.alerting()))
        }
        Err(e) => super::failure(&e),
    }
}
