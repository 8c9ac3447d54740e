//! What the measuring subcommands (`run`, `bench`, `gate`) share: their flags, opening the
//! backends for the bench, and printing what the bench wrote.

use std::path::PathBuf;

use sandbox_harness::backends::{self, OpenOptions};
use sandbox_harness::gcp::observe::CallRecorder;
use sandbox_harness::pipeline::{self, PipelineError};
use sandbox_harness::suites::{self, profile};
use sandbox_harness::{bench, conformance, report};

/// Options shared by the runs that measure (`run`, `bench`, `gate`).
#[derive(Debug, clap::Args)]
pub struct MeasureArgs {
    /// Backends: docker, cloudrun, all, or a comma-separated list.
    #[arg(long, default_value = "all")]
    pub backend: String,
    /// Recorded iterations per measurement.
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Rounds of the mixed workload (7 cheap operations each) the success and error rates stand on.
    #[arg(long, default_value_t = bench::DEFAULT_MIXED_ROUNDS)]
    pub mixed_rounds: usize,
    /// Lanes the mixed workload runs in at once (sessions on one sandbox, as parallel tool calls).
    #[arg(long, default_value_t = bench::DEFAULT_MIXED_LANES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub mixed_lanes: usize,
    /// Sessions at once in the concurrency measurement (0 skips it).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Recorded cold starts.
    #[arg(long, default_value_t = 5)]
    pub cold_starts: usize,
    /// Recorded browser starts on backends that offer a browser (0 skips the browser rows).
    #[arg(long, default_value_t = 3)]
    pub browser_starts: usize,
    /// Leave out the heavy transfers (500 MB) from the bench and the conformance run.
    #[arg(long)]
    pub skip_heavy: bool,
    /// Execution events: the JSON-lines file the bench writes (`run` and `gate` default to
    /// OUT/events.jsonl); with `gate --report`, the existing log the monitoring gate judges.
    #[arg(long, value_name = "PATH.jsonl")]
    pub events: Option<PathBuf>,
    /// Acceptance tables, phases and prices from this folder (default: the built-in suites/).
    #[arg(long, value_name = "DIR")]
    pub suites: Option<PathBuf>,
    /// Where reports go.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    pub out: PathBuf,
    /// The Cloud Run twin's latency profile for the measurements: a built-in name (`none`,
    /// `gcp-published`) or a profile file [default: gcp-published; conformance: none].
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    /// Write the per-operation latency distributions the Cloud Run client observed to FILE
    /// (the profile format: `emulator --profile FILE` replays them).
    #[arg(long, value_name = "FILE.toml")]
    pub record_profile: Option<PathBuf>,
    /// Cloud Run warm pool: keep N worker executions started for `create` to claim (billed
    /// while they wait; default: CLOUDRUN_POOL_SIZE or the config file, else 0).
    #[arg(long, value_name = "N")]
    pub pool_size: Option<usize>,
}

impl MeasureArgs {
    /// How the backends are opened for the measurements.
    fn open_options(&self, recorder: Option<&CallRecorder>) -> OpenOptions {
        OpenOptions {
            profile: self.profile.clone(),
            default_profile: Some(profile::BENCH_DEFAULT.into()),
            recorder: recorder.cloned(),
            pool_size: self.pool_size,
        }
    }

    /// How the backends are opened for conformance (same `--profile`, default `none`).
    pub fn conform_options(&self) -> OpenOptions {
        OpenOptions {
            profile: self.profile.clone(),
            default_profile: Some(profile::CONFORMANCE_DEFAULT.into()),
            recorder: None,
            pool_size: self.pool_size,
        }
    }

    /// The conformance settings of a measuring run (`strict` for the gates).
    pub fn conform_settings(&self, strict: bool) -> pipeline::ConformSettings {
        pipeline::ConformSettings {
            options: conformance::RunOptions {
                strict,
                skip_heavy: self.skip_heavy,
                ..conformance::RunOptions::default()
            },
            out_dir: self.out.clone(),
        }
    }

    /// The event log of a measuring run: `--events`, or OUT/events.jsonl.
    pub fn events_or_default(&self) -> PathBuf {
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
                include_large: !self.skip_heavy,
                ..bench::BenchOptions::default()
            },
            events: self.events.clone(),
            ctrl_c: true,
        }
    }
}

/// Opens every backend of `--backend` for conformance (a failure to open one is an error).
pub async fn open_for_conformance(m: &MeasureArgs) -> Result<backends::Backends, PipelineError> {
    Ok(backends::open(&m.backend, &m.conform_options())
        .await?
        .require_all()
        .await?)
}

/// Opens the backends for the measurements (the twin under `gcp-published` unless told),
/// runs the bench, closes them, and writes the recorded profile when asked.
pub async fn measure_opened(
    suites: &suites::Suites,
    m: &MeasureArgs,
    events: Option<PathBuf>,
) -> Result<bench::BenchReport, PipelineError> {
    let recorder = m.record_profile.as_ref().map(|_| CallRecorder::new());
    let backends = backends::open(&m.backend, &m.open_options(recorder.as_ref()))
        .await?
        .require_all()
        .await?;
    let mut settings = m.bench_settings();
    if events.is_some() {
        settings.events = events;
    }
    let report = pipeline::bench(backends.opened(), suites, settings).await;
    backends.close().await;
    let report = report?;
    if let (Some(path), Some(rec)) = (&m.record_profile, &recorder) {
        let origin = backends
            .opened()
            .iter()
            .find(|b| b.name == "cloudrun")
            .map_or("no Cloud Run backend".to_string(), |b| b.origin.statement());
        let written = pipeline::write_recorded_profile(path, rec, &origin)?;
        eprintln!("wrote {} ({written} operations)", path.display());
    }
    Ok(report)
}

/// Prints the bench report as Markdown and the files written.
pub fn print_bench(
    report: &bench::BenchReport,
    suites: &suites::Suites,
    phase: u32,
    gate: &sandbox_harness::gate::GateResult,
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
