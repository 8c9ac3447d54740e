//! Health probes against a live service (the emulator's own /health, /ready, /live) and against
//! nothing: figures, verdicts from the plan's table, and failures reported as results.

use std::time::Duration;

use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::health::{self, HealthReport};
use sandbox_harness::suites::{HealthTable, Verdict};

#[tokio::test]
async fn live_service_meets_the_table_and_a_dead_one_fails() {
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let client = reqwest::Client::new();
    let samples = health::probe(&client, &emulator.base_url(), "", 5, Duration::from_secs(5)).await;
    let report = HealthReport::new(&emulator.base_url(), samples, &HealthTable::builtin());
    assert_eq!(report.endpoints.len(), 3);
    for e in &report.endpoints {
        assert_eq!((e.ok, e.attempts), (5, 5), "{e:?}");
        assert!(e.latency.is_some());
        assert_ne!(e.verdict, Verdict::Fails, "{e:?}");
        assert!(e.max_acceptable_ms.is_some());
    }
    assert!(report.passed());
    let md = report.to_markdown();
    assert!(md.contains("/ready") && md.contains("verdict"), "{md}");
    let back: HealthReport = serde_json::from_slice(&serde_json::to_vec(&report).unwrap()).unwrap();
    assert_eq!(back.endpoints, report.endpoints);
    emulator.shutdown().await;

    // Nothing listens there any more: every probe is a failed result, not a crash.
    let samples = health::probe(&client, &back.url, "", 2, Duration::from_secs(2)).await;
    let dead = HealthReport::new(&back.url, samples, &HealthTable::builtin());
    assert!(!dead.passed());
    assert!(
        dead.endpoints
            .iter()
            .all(|e| e.verdict == Verdict::Fails && e.first_problem.is_some())
    );
}
