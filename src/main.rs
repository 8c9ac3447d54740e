//! The `sandbox-harness` command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sandbox_harness::gcp::observe::CallRecorder;
use sandbox_harness::suites::profile;
use sandbox_harness::{
    bench, conformance, gate, health, metrics, output, pipeline, preflight, report, suites,
};

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

/// Options shared by the runs that measure (`run`, `bench`, `gate`).
#[derive(Debug, clap::Args)]
struct MeasureArgs {
    /// Backends: docker, cloudrun, all, or a comma-separated list.
    #[arg(long, default_value = "all")]
    backend: String,
    /// Recorded iterations per measurement.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Rounds of the mixed workload (7 cheap operations each) the success and error rates stand on.
    #[arg(long, default_value_t = bench::DEFAULT_MIXED_ROUNDS)]
    mixed_rounds: usize,
    /// Lanes the mixed workload runs in at once (sessions on one sandbox, as parallel tool calls).
    #[arg(long, default_value_t = bench::DEFAULT_MIXED_LANES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    mixed_lanes: usize,
    /// Sessions at once in the concurrency measurement (0 skips it).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Recorded cold starts.
    #[arg(long, default_value_t = 5)]
    cold_starts: usize,
    /// Recorded browser starts on backends that offer a browser (0 skips the browser rows).
    #[arg(long, default_value_t = 3)]
    browser_starts: usize,
    /// Leave out the 500 MB transfers.
    #[arg(long)]
    no_large: bool,
    /// Execution events: the JSON-lines file the bench writes (`run` and `gate` default to
    /// OUT/events.jsonl); with `gate --report`, the existing log the monitoring gate judges.
    #[arg(long, value_name = "PATH.jsonl")]
    events: Option<std::path::PathBuf>,
    /// Acceptance tables, phases and prices from this folder (default: the built-in suites/).
    #[arg(long, value_name = "DIR")]
    suites: Option<std::path::PathBuf>,
    /// Where reports go.
    #[arg(long, default_value = "reports")]
    out: std::path::PathBuf,
    /// The Cloud Run twin's latency profile for the measurements: a built-in name (`none`,
    /// `gcp-published`) or a profile file [default: gcp-published; conformance: none].
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<String>,
    /// Write the per-operation latency distributions the Cloud Run client observed to FILE
    /// (the profile format: `emulator --profile FILE` replays them).
    #[arg(long, value_name = "FILE.toml")]
    record_profile: Option<std::path::PathBuf>,
    /// Cloud Run warm pool: keep N worker executions started for `create` to claim (billed
    /// while they wait; default: CLOUDRUN_POOL_SIZE or the config file, else 0).
    #[arg(long, value_name = "N")]
    pool_size: Option<usize>,
}

impl MeasureArgs {
    /// How the backends are opened for the measurements.
    fn open_options(&self, recorder: Option<&CallRecorder>) -> pipeline::OpenOptions {
        pipeline::OpenOptions {
            profile: self.profile.clone(),
            default_profile: Some(profile::BENCH_DEFAULT.into()),
            recorder: recorder.cloned(),
            pool_size: self.pool_size,
        }
    }

    /// How the backends are opened for conformance (same `--profile`, default `none`).
    fn conform_options(&self) -> pipeline::OpenOptions {
        pipeline::OpenOptions {
            profile: self.profile.clone(),
            default_profile: Some(profile::CONFORMANCE_DEFAULT.into()),
            recorder: None,
            pool_size: self.pool_size,
        }
    }

    /// The event log of a measuring run: `--events`, or OUT/events.jsonl.
    fn events_or_default(&self) -> std::path::PathBuf {
        self.events
            .clone()
            .unwrap_or_else(|| self.out.join("events.jsonl"))
    }

    fn bench_settings(&self) -> pipeline::BenchSettings {
        pipeline::BenchSettings {
            options: bench::BenchOptions {
                iterations: self.iterations.max(1),
                mixed_rounds: self.mixed_rounds,
                mixed_lanes: self.mixed_lanes,
                cold_start_iterations: self.cold_starts,
                concurrency: self.concurrency,
                browser_starts: self.browser_starts,
                include_large: !self.no_large,
                ..bench::BenchOptions::default()
            },
            events: self.events.clone(),
            ctrl_c: true,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: conformance and bench on every backend, reports, phase-1 verdicts.
    Run {
        #[command(flatten)]
        measure: MeasureArgs,
        /// Leave out the conformance suite.
        #[arg(long)]
        no_conformance: bool,
        /// Phase whose gates are evaluated and reported.
        #[arg(long, default_value_t = 1)]
        phase: u32,
    },
    /// Benchmark the backends against the acceptance tables and write JSON, Markdown and HTML.
    Bench {
        #[command(flatten)]
        measure: MeasureArgs,
    },
    /// Run what a migration phase needs and exit non-zero naming each failed gate.
    Gate {
        /// The phase (see suites/phases.toml).
        #[arg(long)]
        phase: u32,
        /// Judge an existing bench report instead of measuring.
        #[arg(long, value_name = "REPORT.json")]
        report: Option<std::path::PathBuf>,
        /// With --report: the conformance report (reports/conformance.json) to judge parity by.
        #[arg(long, value_name = "CONFORMANCE.json", requires = "report")]
        conformance: Option<std::path::PathBuf>,
        /// The service whose /health, /ready and /live phase 0 probes (default: the embedded
        /// emulator, when Cloud Run runs on it).
        #[arg(long, value_name = "URL")]
        health_url: Option<String>,
        #[command(flatten)]
        measure: MeasureArgs,
    },
    /// Compare two bench reports and show regressions.
    Report {
        /// The older and the newer report.
        #[arg(long, num_args = 2, value_names = ["OLD.json", "NEW.json"], required = true)]
        compare: Vec<std::path::PathBuf>,
        /// A latency may grow by this many percent before it is a regression.
        #[arg(long, default_value_t = 20.0)]
        tolerance_percent: f64,
    },
    /// Monitoring figures from an event log, against the monitoring thresholds.
    Metrics {
        /// The events file written by `bench --events`.
        events: std::path::PathBuf,
        /// The events come from the emulator (labels the cost projection).
        #[arg(long)]
        emulator: bool,
        /// Thresholds and prices from this folder.
        #[arg(long, value_name = "DIR")]
        suites: Option<std::path::PathBuf>,
    },
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
        /// The Cloud Run twin's latency profile (a built-in name or a file) [default: none].
        #[arg(long, value_name = "NAME|FILE")]
        profile: Option<String>,
    },
    /// An interactive session on a backend: each line runs statefully; `:help` lists meta-commands.
    Shell {
        /// docker or cloudrun.
        #[arg(long, default_value = "docker")]
        backend: String,
        /// Ask for a sandbox with a browser (prints its DevTools and VNC addresses).
        #[arg(long)]
        browser: bool,
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
        /// Where health.json and health.md go.
        #[arg(long, default_value = "reports")]
        out: std::path::PathBuf,
        /// The health table from this folder (default: the built-in suites/).
        #[arg(long, value_name = "DIR")]
        suites: Option<std::path::PathBuf>,
    },
    /// Build a sandbox image offline now (otherwise it is built on first use) and say how long
    /// it took and how large it is. `browser` bootstraps Debian with Chromium (needs root).
    Image {
        /// Which image.
        #[arg(value_enum)]
        which: ImageKind,
        /// Build the browser image's Debian base again even when it exists (newer packages).
        #[arg(long)]
        rebuild: bool,
    },
    /// The Phase 0 preflight checklist (bucket, lifecycle, IAM, Run API, a test job); exit 1 on failure.
    Preflight(preflight::cli::PreflightArgs),
    /// Run the local Cloud Run + Cloud Storage emulator on 127.0.0.1 until Ctrl-C.
    Emulator(preflight::cli::EmulatorArgs),
    /// Remove containers, Cloud Run jobs and session objects a crashed run left behind.
    Gc {
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only remove what is at least this old (e.g. 30m, 2h, 90s), sparing a run in progress.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Option<std::time::Duration>,
    },
}

/// The images `image` builds.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ImageKind {
    /// The default sandbox image (busybox userland plus the executor).
    Default,
    /// The browser sandbox image (Debian, Chromium, Xvfb, x11vnc, plus the executor).
    Browser,
}

async fn build_image(which: ImageKind, rebuild: bool) -> ExitCode {
    let docker = match sandbox_harness::backends::docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sandbox-harness: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let secs =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    match which {
        ImageKind::Default => match sandbox_harness::images::ensure_sandbox_image(&docker).await {
            Ok(tag) => {
                println!("{tag} ready in {:.1} s", started.elapsed().as_secs_f64());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sandbox-harness: {e}");
                ExitCode::FAILURE
            }
        },
        ImageKind::Browser => {
            match sandbox_harness::images::browser::ensure_browser_image_report(&docker, rebuild)
                .await
            {
                Ok(r) => {
                    println!("{} ready in {:.1} s", r.tag, r.total.as_secs_f64());
                    if r.built_base {
                        println!(
                            "  built the base {} (mmdebstrap into the engine) in {}",
                            r.base_tag,
                            secs(r.bootstrap)
                        );
                    } else {
                        println!("  base {} was already built", r.base_tag);
                    }
                    if let Some(size) = r.size_bytes {
                        println!("  image size {:.0} MB", size as f64 / 1e6);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sandbox-harness: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// An age such as `90s`, `30m`, `2h` or `1d` (a bare number is seconds).
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age like 90s, 30m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} (use s, m, h or d)")),
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn init_logging(filter: &str) {
    // The FUSE library warns about every request the twin's volumes leave to its defaults
    // (extended attributes, a second unmount): not the user's business unless asked.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("{filter},fuser=error"));
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
        Command::Run {
            measure,
            no_conformance,
            phase,
        } => fail_on(main_job(measure, no_conformance, phase).await),
        Command::Bench { measure } => fail_on(bench_only(measure).await),
        Command::Gate {
            phase,
            report: existing,
            conformance: saved_conformance,
            health_url,
            measure,
        } => fail_on(gate(phase, existing, saved_conformance, health_url, measure).await),
        Command::Report {
            compare,
            tolerance_percent,
        } => {
            let load = |p: &std::path::Path| report::load(p);
            let (old, new) = match (load(&compare[0]), load(&compare[1])) {
                (Ok(o), Ok(n)) => (o, n),
                (Err(e), _) | (_, Err(e)) => return usage_error(&e.to_string()),
            };
            let cmp = report::compare(
                &old,
                &new,
                report::CompareOptions {
                    tolerance_percent,
                    ..report::CompareOptions::default()
                },
            );
            println!("{}", cmp.render());
            if cmp.has_regressions() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Metrics {
            events,
            emulator,
            suites,
        } => {
            let suites = match suites::Suites::load(suites.as_deref()) {
                Ok(s) => s,
                Err(e) => return usage_error(&e.to_string()),
            };
            let opts = metrics::MetricsOptions {
                monitoring: suites.monitoring,
                prices: suites.prices,
                cost_profile: suites.cost_profile,
                from_emulator: emulator,
                ..metrics::MetricsOptions::default()
            };
            match metrics::from_events(&events, &opts) {
                Ok(m) => {
                    println!("{}", m.render());
                    if m.backends.iter().any(|b| b.alerting()) {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => usage_error(&e.to_string()),
            }
        }
        Command::Image { which, rebuild } => build_image(which, rebuild).await,
        Command::Preflight(args) => preflight::cli::run_preflight(&args).await,
        Command::Emulator(args) => preflight::cli::run_emulator(&args).await,
        Command::Conform {
            backend,
            strict,
            filter,
            scenarios,
            skip_heavy,
            case_timeout_secs,
            out,
            profile,
        } => {
            let registry = conformance::default_registry_with(profile);
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
        Command::Shell { backend, browser } => {
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
            let wants = sandbox_harness::protocol::Capabilities {
                browser,
                ..Default::default()
            };
            let sandbox = match backend.create_with(wants).await {
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
            if browser {
                match sandbox.get_browser().await {
                    Ok(b) => eprintln!(
                        "browser {}: DevTools {} ({}), VNC {}",
                        b.version.as_deref().unwrap_or("?"),
                        b.cdp_url,
                        b.websocket_url.as_deref().unwrap_or("-"),
                        b.vnc_url.as_deref().unwrap_or("-")
                    ),
                    Err(e) => eprintln!("sandbox-harness: the browser did not come up: {e}"),
                }
            }
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
            out,
            suites,
        } => {
            let suites = match suites::Suites::load(suites.as_deref()) {
                Ok(s) => s,
                Err(e) => return usage_error(&e.to_string()),
            };
            let client = reqwest::Client::new();
            let samples = health::probe(
                &client,
                &url,
                &prefix,
                iterations.max(1),
                Duration::from_millis(timeout_ms),
            )
            .await;
            let full = format!(
                "{}{}",
                url.trim_end_matches('/'),
                prefix.trim_end_matches('/')
            );
            let report = health::HealthReport::new(&full, samples, &suites.health);
            println!("{}", report.render(output::TableStyle::Terminal));
            let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
            for (name, bytes) in [
                ("health.json", json),
                ("health.md", report.to_markdown().into_bytes()),
            ] {
                let path = out.join(name);
                match report::write_atomic(&path, &bytes) {
                    Ok(()) => eprintln!("wrote {}", path.display()),
                    Err(e) => {
                        eprintln!("sandbox-harness: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Gc {
            dry_run,
            older_than,
        } => {
            let opts = sandbox_harness::gc::GcOptions {
                dry_run,
                older_than,
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

fn fail_on(r: Result<ExitCode, pipeline::PipelineError>) -> ExitCode {
    r.unwrap_or_else(|e| {
        eprintln!("sandbox-harness: {e}");
        ExitCode::from(2)
    })
}

/// Opens the backends for the measurements (the twin under `gcp-published` unless told),
/// runs the bench, closes them, and writes the recorded profile when asked.
async fn measure_opened(
    suites: &suites::Suites,
    m: &MeasureArgs,
    events: Option<std::path::PathBuf>,
) -> Result<bench::BenchReport, pipeline::PipelineError> {
    let recorder = m.record_profile.as_ref().map(|_| CallRecorder::new());
    let backends =
        pipeline::open_backends_with(&m.backend, &m.open_options(recorder.as_ref())).await?;
    let mut settings = m.bench_settings();
    if events.is_some() {
        settings.events = events;
    }
    let report = pipeline::bench(&backends, suites, settings).await;
    pipeline::close(&backends).await;
    let report = report?;
    if let (Some(path), Some(rec)) = (&m.record_profile, &recorder) {
        let origin = backends
            .iter()
            .find(|b| b.name == "cloudrun")
            .map_or("no Cloud Run backend".to_string(), |b| b.origin.statement());
        let written = pipeline::write_recorded_profile(path, rec, &origin)?;
        eprintln!("wrote {} ({written} operations)", path.display());
    }
    Ok(report)
}

async fn main_job(
    m: MeasureArgs,
    no_conformance: bool,
    phase: u32,
) -> Result<ExitCode, pipeline::PipelineError> {
    let suites = suites::Suites::load(m.suites.as_deref())?;
    let started = std::time::Instant::now();
    let conf = if no_conformance {
        None
    } else {
        // Conformance checks behaviour on a twin of its own (profile `none` unless told).
        let backends = pipeline::open_backends_with(&m.backend, &m.conform_options()).await?;
        let settings = pipeline::ConformSettings {
            options: conformance::RunOptions {
                skip_heavy: m.no_large,
                ..conformance::RunOptions::default()
            },
            out_dir: m.out.clone(),
        };
        let r = pipeline::conform(&backends, &settings).await?;
        pipeline::close(&backends).await;
        println!("{}", conformance::render_terminal(&r));
        Some(r)
    };
    let conformance_secs = started.elapsed().as_secs_f64();
    let events = m.events_or_default();
    let report = measure_opened(&suites, &m, Some(events.clone())).await?;
    let bench_secs = started.elapsed().as_secs_f64() - conformance_secs;
    let evidence = pipeline::GateEvidence {
        conformance: conf.as_ref().map(pipeline::conformance_summary),
        metrics: Some(pipeline::metrics_of(&events, &suites, Some(&report))?),
        ..pipeline::GateEvidence::default()
    };
    let gate = pipeline::evaluate_gate(phase, &suites, Some(&report), &evidence)?;
    let written =
        pipeline::write_bench_reports(&report, &suites, phase, Some(gate.clone()), &m.out)?;
    print_bench(&report, &suites, phase, &gate, &written);
    // Where the time went (each backend's parts: the report's "Time per part").
    eprintln!(
        "sandbox-harness: main job {:.0} s: conformance {conformance_secs:.0} s, bench {bench_secs:.0} s ({}), reports and gates {:.0} s",
        started.elapsed().as_secs_f64(),
        report
            .backends
            .iter()
            .map(|b| format!(
                "{} {:.0} s",
                b.name,
                b.parts.iter().map(|p| p.seconds).sum::<f64>()
            ))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64() - conformance_secs - bench_secs
    );
    let conf_failed = conf.as_ref().is_some_and(|c| c.exit_code(false) != 0);
    let verdict = pipeline::job_verdict(&gate, conf_failed, &report);
    for f in &verdict.failures {
        eprintln!("sandbox-harness: FAIL {f}");
    }
    Ok(ExitCode::from(verdict.exit_code))
}

async fn bench_only(m: MeasureArgs) -> Result<ExitCode, pipeline::PipelineError> {
    let suites = suites::Suites::load(m.suites.as_deref())?;
    let report = measure_opened(&suites, &m, None).await?;
    let gate = pipeline::evaluate_gate(
        1,
        &suites,
        Some(&report),
        &pipeline::GateEvidence::default(),
    )?;
    let written = pipeline::write_bench_reports(&report, &suites, 1, None, &m.out)?;
    print_bench(&report, &suites, 1, &gate, &written);
    Ok(if report.partial {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn gate(
    phase: u32,
    existing: Option<std::path::PathBuf>,
    saved_conformance: Option<std::path::PathBuf>,
    health_url: Option<String>,
    m: MeasureArgs,
) -> Result<ExitCode, pipeline::PipelineError> {
    let suites = suites::Suites::load(m.suites.as_deref())?;
    let mut evidence = pipeline::GateEvidence::default();
    if let Some(p) = &saved_conformance {
        evidence.conformance = Some(pipeline::conformance_summary(&pipeline::load_conformance(
            p,
        )?));
    }
    let mut events = m.events.clone();
    let bench_report = match existing {
        Some(path) => report::load(&path)?,
        None => {
            let backends = pipeline::open_backends_with(&m.backend, &m.conform_options()).await?;
            if phase == 0 {
                evidence.preflight = pipeline::preflight(&backends).await;
                let url = health_url.clone().or_else(|| {
                    backends
                        .iter()
                        .find_map(|b| b.local.as_ref().map(|l| l.base_url()))
                });
                if let Some(url) = url {
                    eprintln!("health: probing {url} (/health, /ready, /live)");
                    evidence.health = Some(pipeline::health(&url, 20, &suites).await);
                }
            }
            if phase >= 1 {
                let settings = pipeline::ConformSettings {
                    options: conformance::RunOptions {
                        strict: true,
                        skip_heavy: m.no_large,
                        ..conformance::RunOptions::default()
                    },
                    out_dir: m.out.clone(),
                };
                let conf = pipeline::conform(&backends, &settings).await?;
                evidence.conformance = Some(pipeline::conformance_summary(&conf));
            }
            pipeline::close(&backends).await;
            let log = m.events_or_default();
            events = Some(log.clone());
            measure_opened(&suites, &m, Some(log)).await?
        }
    };
    if let Some(log) = &events {
        evidence.metrics = Some(pipeline::metrics_of(log, &suites, Some(&bench_report))?);
    }
    let result = pipeline::evaluate_gate(phase, &suites, Some(&bench_report), &evidence)?;
    let written =
        pipeline::write_bench_reports(&bench_report, &suites, phase, Some(result.clone()), &m.out)?;
    print_bench(&bench_report, &suites, phase, &result, &written);
    Ok(ExitCode::from(result.exit_code().clamp(0, 255) as u8))
}

fn print_bench(
    report: &bench::BenchReport,
    suites: &suites::Suites,
    phase: u32,
    gate: &gate::GateResult,
    written: &report::WrittenReports,
) {
    let md = report::MarkdownOptions {
        phase,
        tables: suites.tables.clone(),
        gate: Some(gate.clone()),
        cost: pipeline::cost_of(report, suites),
    };
    println!("{}", report::markdown::render(report, &md));
    for p in [
        &written.json,
        &written.latest_json,
        &written.markdown,
        &written.html,
    ] {
        eprintln!("wrote {}", p.display());
    }
}

#[cfg(test)]
mod tests {
    use super::parse_age;
    use std::time::Duration;

    #[test]
    fn ages_parse_with_units_and_bad_ones_are_refused() {
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_age("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "m", "5w", "-3s", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
