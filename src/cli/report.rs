//! `sandbox-harness report`: regressions between two bench reports.

use std::path::PathBuf;
use std::process::ExitCode;

use sandbox_harness::report;

/// Flags of `report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The older and the newer report.
    #[arg(long, num_args = 2, value_names = ["OLD.json", "NEW.json"], required = true)]
    compare: Vec<PathBuf>,
    /// A latency may grow by this many percent before it is a regression.
    #[arg(long, default_value_t = 20.0)]
    tolerance_percent: f64,
}

/// Prints the comparison; exits 1 on a regression.
pub fn run(args: &ReportArgs) -> ExitCode {
    let (old, new) = match (
        report::load(&args.compare[0]),
        report::load(&args.compare[1]),
    ) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return super::failure(&e),
    };
    let cmp = report::compare(
        &old,
        &new,
        report::CompareOptions {
            tolerance_percent: args.tolerance_percent,
            ..report::CompareOptions::default()
        },
    );
    println!("{}", cmp.render());
    super::passed(!cmp.has_regressions())
}
