//! The `sandbox-harness` command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sandbox_harness::{conformance, health};

fn registry() -> conformance::Registry {
    conformance::default_registry()
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("sandbox-harness: {msg}");
    ExitCode::from(2)
}

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
    /// Run the conformance suite and print the parity matrix (reports into --out).
    Conform {
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
        scenarios: Vec<std::path::PathBuf>,
        /// Leave out heavy cases (the 500 MB transfer).
        #[arg(long)]
        skip_heavy: bool,
        /// Stop each case after this many seconds.
        #[arg(long, default_value_t = 300)]
        case_timeout_secs: u64,
        /// Where the JSON and Markdown reports go.
        #[arg(long, default_value = "reports")]
        out: std::path::PathBuf,
    },
    /// An interactive session on a backend: each line runs statefully; `:help` lists meta-commands.
    Shell {
        /// docker or cloudrun.
        #[arg(long, default_value = "docker")]
        backend: String,
    },
    /// Probe /health, /ready and /live of a service and report their latency and shape.
    Health {
        /// Base URL of the service, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// Path prefix before the endpoints, e.g. /api/v1.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Probes per endpoint.
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// Per-probe timeout in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Remove containers, Cloud Run jobs and session objects a crashed run left behind.
    Gc {
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match cli.command {
        Command::Conform {
            backend,
            strict,
            filter,
            scenarios,
            skip_heavy,
            case_timeout_secs,
            out,
        } => {
            let registry = registry();
            let entries = match registry.select(&backend) {
                Ok(e) => e,
                Err(e) => return usage_error(&e),
            };
            let opts = conformance::RunOptions {
                strict,
                filter,
                scenario_dirs: scenarios,
                case_timeout: Duration::from_secs(case_timeout_secs),
                skip_heavy,
                ..conformance::RunOptions::default()
            };
            let mut reporters: Vec<Box<dyn conformance::Reporter>> = vec![Box::new(
                conformance::ConsoleReporter::new(std::io::stderr()),
            )];
            let report =
                match conformance::run_with_reporters(&entries, &opts, &mut reporters).await {
                    Ok(r) => r,
                    Err(e) => return usage_error(&e.to_string()),
                };
            println!("{}", conformance::render_terminal(&report));
            match conformance::write_reports(&report, &out) {
                Ok(paths) => {
                    for p in paths {
                        eprintln!("wrote {}", p.display());
                    }
                }
                Err(e) => {
                    eprintln!(
                        "sandbox-harness: cannot write reports into {}: {e}",
                        out.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::from(report.exit_code(strict) as u8)
        }
        Command::Shell { backend } => {
            let registry = registry();
            let entry = match registry.select(&backend) {
                Ok(mut e) if e.len() == 1 => e.remove(0),
                Ok(_) => return usage_error("shell takes exactly one backend"),
                Err(e) => return usage_error(&e),
            };
            let backend = match (entry.factory)().await {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("sandbox-harness: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let sandbox = match backend.create().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("sandbox-harness: {e}");
                    return ExitCode::FAILURE;
                }
            };
            eprintln!(
                "sandbox {} on {}; :help lists meta-commands, :quit ends",
                sandbox.id(),
                backend.name()
            );
            let guard = conformance::SandboxGuard::new(sandbox.clone());
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let result =
                conformance::shell::run_repl(sandbox.as_ref(), stdin, tokio::io::stdout()).await;
            let destroyed = guard.destroy().await;
            if let Err(e) = destroyed {
                eprintln!("sandbox-harness: destroying the sandbox failed: {e}");
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sandbox-harness: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Health {
            url,
            prefix,
            iterations,
            timeout_ms,
        } => {
            let client = reqwest::Client::new();
            let samples = health::probe(
                &client,
                &url,
                &prefix,
                iterations.max(1),
                Duration::from_millis(timeout_ms),
            )
            .await;
            let mut failed = false;
            for endpoint in health::Endpoint::ALL {
                let mine: Vec<_> = samples.iter().filter(|s| s.endpoint == endpoint).collect();
                let ok = mine
                    .iter()
                    .filter(|s| matches!(s.outcome, health::ProbeOutcome::Ok { .. }))
                    .count();
                let mut lat: Vec<f64> = mine.iter().map(|s| s.latency_ms).collect();
                lat.sort_by(f64::total_cmp);
                let p50 = lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN);
                let worst = mine
                    .iter()
                    .find(|s| !matches!(s.outcome, health::ProbeOutcome::Ok { .. }));
                println!(
                    "{:<8} ok {ok}/{} p50 {p50:.1} ms{}",
                    endpoint.path(),
                    mine.len(),
                    worst
                        .map(|s| format!("  first problem: {:?}", s.outcome))
                        .unwrap_or_default()
                );
                failed |= ok < mine.len();
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Gc { dry_run } => {
            let opts = sandbox_harness::gc::GcOptions {
                dry_run,
                ..Default::default()
            };
            let (items, errors) = sandbox_harness::gc::run(&opts).await;
            print!("{}", sandbox_harness::gc::render(&items, dry_run));
            for e in &errors {
                eprintln!("sandbox-harness: gc: {e}");
            }
            let failed = items
                .iter()
                .any(|i| matches!(i.action, sandbox_harness::gc::GcAction::Failed(_)));
            if failed || !errors.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
