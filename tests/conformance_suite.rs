//! The whole conformance suite against every available backend (heavy cases left out), plus the
//! reports it writes. On Docker this includes the browser cases (the browser image is built
//! first if this machine does not have it yet).

use std::time::Duration;

use rstest::rstest;
use sandbox_harness::conformance::{
    self, ConsoleReporter, Outcome, Reporter, RunOptions, default_registry,
};

#[rstest]
#[case("docker")]
#[case("cloudrun")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_passes_on(#[case] backend: &str) {
    let entries = default_registry().select(backend).expect("registered");
    let opts = RunOptions {
        skip_heavy: true,
        filter: std::env::var("CONFORMANCE_FILTER").ok(),
        case_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let mut reporters: Vec<Box<dyn Reporter>> =
        vec![Box::new(ConsoleReporter::new(std::io::stderr()))];
    let report = conformance::run_with_reporters(&entries, &opts, &mut reporters)
        .await
        .expect("cases load");
    eprintln!("{}", conformance::render_terminal(&report));
    let dir = tempfile::tempdir().unwrap();
    let files = conformance::write_reports(&report, dir.path()).unwrap();
    assert!(files.iter().all(|f| f.exists()));
    let t = report.totals();
    assert_eq!(
        t.skipped, 0,
        "backend {backend} unavailable: {:?}",
        report.skipped_backends
    );
    assert_eq!(
        t.failed + t.timed_out,
        0,
        "failures:\n{}",
        conformance::report::render_failures(&report)
    );
    assert!(t.passed > 0);
    assert!(
        report.cleanup_errors.is_empty(),
        "{:?}",
        report.cleanup_errors
    );
    // Documented platform differences: none on the baseline; on Cloud Run exactly the ones the
    // workspace cases declare (Cloud Storage FUSE's rules), each with its rule and source.
    let mut diffs: Vec<&str> = report
        .records
        .iter()
        .filter(|r| r.outcome == Outcome::Divergent)
        .inspect(|r| assert!(r.divergence.is_some(), "{r:?}"))
        .map(|r| r.id.as_str())
        .collect();
    diffs.sort();
    match backend {
        "docker" => assert!(diffs.is_empty(), "{diffs:?}"),
        _ if opts.filter.is_none() => assert_eq!(
            diffs,
            [
                "files.workspace_chmod_kept",
                "files.workspace_fifo",
                "files.workspace_hard_link"
            ]
        ),
        _ => {}
    }
    // The browser cases: Docker runs them in a browser sandbox and they pass; Cloud Run
    // answers `unsupported`, which the migration plan documents as a limitation.
    let browser: Vec<_> = report
        .records
        .iter()
        .filter(|r| r.id.starts_with("browser."))
        .collect();
    if opts.filter.is_none() {
        assert!(browser.len() >= 6, "{browser:?}");
    }
    for r in browser {
        match backend {
            "docker" => assert_eq!(r.outcome, Outcome::Passed, "{r:?}"),
            _ => {
                assert_eq!(r.outcome, Outcome::Unsupported, "{r:?}");
                assert!(r.limitation.is_some(), "{r:?}");
            }
        }
    }
}
