//! The suite can fail: deliberately broken sandboxes (forgetting env changes, truncating file
//! reads) must produce failures that name the case, the step, the expected and actual values.

use std::sync::Arc;
use std::time::Duration;

use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::conformance::broken::{Tamper, TamperedBackend};
use sandbox_harness::conformance::{self, Outcome, Registry, RunOptions};
use sandbox_harness::protocol::SandboxBackend;

async fn run_tampered(mode: Tamper, filter: &str) -> conformance::RunReport {
    let docker: Arc<dyn SandboxBackend> = Arc::new(
        DockerBackend::connect(DockerConfig::default())
            .await
            .expect("docker engine"),
    );
    let mut reg = Registry::new();
    reg.register_instance(Arc::new(TamperedBackend::new(docker, mode)));
    let opts = RunOptions {
        filter: Some(filter.into()),
        case_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    conformance::run_suite(&reg.select("all").unwrap(), &opts)
        .await
        .expect("cases load")
}

fn record<'a>(r: &'a conformance::RunReport, id: &str) -> &'a conformance::CaseRecord {
    r.records
        .iter()
        .find(|x| x.id == id)
        .unwrap_or_else(|| panic!("no record for {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_env_changes_fails_with_a_clear_message() {
    let report = run_tampered(Tamper::ForgetEnv, "stateful.export_with_space").await;
    let r = record(&report, "stateful.export_with_space");
    assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
    let step = r.failed_step.as_deref().unwrap();
    assert!(step.starts_with("suites/scenarios/stateful.scn:"), "{step}");
    assert!(step.ends_with("run s"), "{step}");
    let msg = r.error.as_deref().unwrap();
    assert!(msg.contains("stdout differs"), "{msg}");
    assert!(msg.contains("expected: \"x y\\n<x><y>\""), "{msg}");
    assert!(msg.contains("actual: \"\\n<>\""), "{msg}");
    assert_eq!(report.exit_code(false), 1);
    let md = conformance::to_markdown(&report);
    assert!(md.contains("NOT AT PARITY") && md.contains("stateful.export_with_space"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_file_reads_fails_with_a_clear_message() {
    let report = run_tampered(Tamper::TruncateReads, "files.write_read").await;
    let r = record(&report, "files.write_read");
    assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
    assert!(
        r.failed_step.as_deref().unwrap().contains("files.scn:")
            && r.failed_step.as_deref().unwrap().contains(": read "),
        "{r:?}"
    );
    let msg = r.error.as_deref().unwrap();
    assert!(msg.contains("content differs"), "{msg}");
    assert!(msg.contains("expected: \"hello\\nworld\\n\""), "{msg}");
    assert!(msg.contains("actual: \"hello\\n\""), "{msg}");
    assert!(msg.contains("- world\\n"), "readable diff: {msg}");
    // The untampered parts of the same backend still pass.
    let ok = run_tampered(Tamper::TruncateReads, "stateful.echo").await;
    assert_eq!(record(&ok, "stateful.echo").outcome, Outcome::Passed);
}

/// The suite's strength: every planted bug (one or more per protocol method) must be caught by
/// the core cases it names, on Docker and on Cloud Run (the embedded emulator); the test fails
/// listing every bug that survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planted_bug_is_caught_on_both_backends() {
    use sandbox_harness::backends::cloudrun::{CloudRunBackend, CloudRunConfig};
    let methods: std::collections::BTreeSet<&str> =
        Tamper::ALL.iter().map(|t| t.method()).collect();
    assert!(
        Tamper::ALL.len() >= 28,
        "{} planted bugs",
        Tamper::ALL.len()
    );
    let docker: Arc<dyn SandboxBackend> = Arc::new(
        DockerBackend::connect(DockerConfig::default())
            .await
            .expect("docker engine"),
    );
    let cloudrun = CloudRunBackend::connect(CloudRunConfig::default())
        .await
        .expect("Cloud Run on the embedded emulator");
    let local = cloudrun.local_cloud().cloned();
    let cloudrun: Arc<dyn SandboxBackend> = Arc::new(cloudrun);
    let mut survivors = Vec::new();
    let mut caught = 0;
    for (name, backend) in [("docker", &docker), ("cloudrun", &cloudrun)] {
        for mode in Tamper::ALL {
            let mut reg = Registry::new();
            reg.register_instance(Arc::new(TamperedBackend::new(backend.clone(), mode)));
            let opts = RunOptions {
                filter: Some(mode.caught_by().into()),
                case_timeout: Duration::from_secs(120),
                ..Default::default()
            };
            let report = conformance::run_suite(&reg.select("all").unwrap(), &opts)
                .await
                .expect("cases load");
            let failed: Vec<&str> = report
                .records
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::TimedOut))
                .map(|r| r.id.as_str())
                .collect();
            if report.records.is_empty() || failed.is_empty() {
                survivors.push(format!(
                    "{mode:?} ({}) survived {} on {name}",
                    mode.method(),
                    mode.caught_by()
                ));
            } else {
                caught += 1;
            }
        }
    }
    if let Some(l) = local {
        l.shutdown().await;
    }
    println!(
        "{} planted bugs in {} methods; {caught} of {} (bug, backend) pairs caught",
        Tamper::ALL.len(),
        methods.len(),
        Tamper::ALL.len() * 2
    );
    assert!(
        survivors.is_empty(),
        "planted bugs not caught:\n{}",
        survivors.join("\n")
    );
}
