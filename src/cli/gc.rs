//! `sandbox-harness gc`: removes what a crashed run left behind.

use std::process::ExitCode;
use std::time::Duration;

use sandbox_harness::gc;

/// Flags of `gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// List what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only remove what is at least this old (e.g. 30m, 2h), sparing a run in progress.
    #[arg(long, value_name = super::duration::VALUE_NAME, value_parser = super::duration::parse)]
    older_than: Option<Duration>,
}

/// Removes (or lists) the leftovers; exits 1 when one could not be removed.
pub async fn run(args: &GcArgs) -> ExitCode {
    let opts = gc::GcOptions {
        dry_run: args.dry_run,
        older_than: args.older_than,
        ..Default::default()
    };
    let (items, errors) = gc::gc_all(&opts).await;
    print!("{}", gc::render(&items, args.dry_run));
    for e in &errors {
        eprintln!("sandbox-harness: gc: {e}");
    }
    let failed = items
        .iter()
        .any(|i| matches!(i.action, gc::GcAction::Failed(_)));
    super::passed(!failed && errors.is_empty())
}
