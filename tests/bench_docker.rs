//! A short bench against the real Docker engine: the three reports are written, the Markdown
//! holds both acceptance tables, every figure has a verdict (the browser rows included), and no
//! container is left behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use bollard::query_parameters::ListContainersOptions;
use sandbox_harness::acceptance;
use sandbox_harness::backends::docker::{DockerBackend, DockerConfig};
use sandbox_harness::bench::raw_docker::DockerRawExec;
use sandbox_harness::bench::{self, BenchOptions, EventWriter, Measurement, RawBaseline};
use sandbox_harness::metrics::{self, MetricsOptions};
use sandbox_harness::protocol::SandboxBackend;
use sandbox_harness::report::{self, MarkdownOptions};
use sandbox_harness::suites::Tables;

/// The label this test run puts on its containers (other tests run in parallel on the engine).
const RUN_LABEL: &str = "sandbox-harness.test-run";

/// Containers of this test run, by id.
async fn harness_containers(docker: &bollard::Docker, run: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{RUN_LABEL}={run}")],
    )]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Removes, on drop, every container of this test run (so a failing test leaves nothing
/// behind either).
struct LeakGuard {
    docker: bollard::Docker,
    run: String,
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let run = std::mem::take(&mut self.run);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                for id in harness_containers(&docker, &run).await {
                    let opts = bollard::query_parameters::RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    };
                    let _ = docker.remove_container(&id, Some(opts)).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn short_docker_bench_writes_three_reports() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let config = DockerConfig {
        extra_labels: BTreeMap::from([(RUN_LABEL.to_string(), run.clone())]),
        ..DockerConfig::default()
    };
    let backend = Arc::new(DockerBackend::connect(config).await.expect("docker engine"));
    let docker = backend.docker().clone();
    // Build the image before the run so cold starts do not include it.
    backend.image().await.expect("sandbox image");
    let _guard = LeakGuard {
        docker: docker.clone(),
        run: run.clone(),
    };

    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(EventWriter::create(&dir.path().join("events.jsonl")).unwrap());
    let mut raw: BTreeMap<String, Arc<dyn RawBaseline>> = BTreeMap::new();
    raw.insert(
        "docker".into(),
        Arc::new(DockerRawExec::new(docker.clone())),
    );
    let opts = BenchOptions {
        iterations: 3,
        warmup: 1,
        cold_start_iterations: 2,
        concurrency: 2,
        include_large: false,
        progress: false,
        events: Some(events.clone()),
        raw_baselines: raw,
        ..Default::default()
    };
    let backends: Vec<(String, Arc<dyn SandboxBackend>)> = vec![("docker".into(), backend.clone())];
    let mut r = bench::run(backends, opts).await;
    acceptance::judge(&mut r, &Tables::builtin());
    events.finish().unwrap();

    let leaked = harness_containers(&docker, &run).await;
    assert!(leaked.is_empty(), "containers left behind: {leaked:?}");

    let b = r.backend("docker").unwrap();
    let failures: Vec<_> = b
        .samples
        .iter()
        .filter(|s| !s.ok)
        .map(|s| (&s.op, &s.detail))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!r.partial, "{:?} {:?}", r.partial_reason, b.setup_errors);
    assert_eq!(b.state.checks, 3);
    assert_eq!(b.state.losses, 0);
    for m in [
        Measurement::ColdStart,
        Measurement::WarmExec,
        Measurement::Upload10Mb,
        Measurement::Download10Mb,
        Measurement::BackgroundStart,
        Measurement::BrowserStart,
        Measurement::BrowserNavigate,
    ] {
        assert!(b.measurements[&m].latency.is_some(), "{m:?}");
    }
    assert_eq!(b.measurements[&Measurement::BrowserStart].attempted, 3);
    assert_eq!(b.measurements[&Measurement::BrowserNavigate].attempted, 3);
    let raw = b.raw_baseline.as_ref().unwrap();
    assert!(raw.latency.is_some() && raw.overhead_p50_seconds.is_some());
    assert!(r.environment.docker_engine_version.is_some());

    let m =
        metrics::from_events(&dir.path().join("events.jsonl"), &MetricsOptions::default()).unwrap();
    let md = m.backend("docker").unwrap();
    assert_eq!(md.operations, b.rates.operations);
    assert_eq!(
        md.exec_latency.as_ref().unwrap().p50_seconds,
        b.exec_latency.as_ref().unwrap().p50_seconds
    );

    let w =
        report::write_all(&r, &dir.path().join("reports"), &MarkdownOptions::default()).unwrap();
    for p in [&w.json, &w.latest_json, &w.markdown, &w.html] {
        assert!(p.is_file(), "{} missing", p.display());
    }
    let text = std::fs::read_to_string(&w.markdown).unwrap();
    assert!(text.contains("### DockerSandbox baseline"), "{text}");
    assert!(text.contains("### CloudRunJobsSandbox target / acceptable"));
    // Tables are padded for reading: look at cells, not spacing.
    assert!(
        text.lines().any(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            cells.len() > 2 && cells[0] == "Warm execution" && cells[1] == "0.1-0.5 s"
        }),
        "{text}"
    );
    assert!(text.contains("## Harness overhead"));
    // The browser rows sit beside the other Docker rows, without a plan threshold.
    for label in ["Browser start", "Browser navigation round trip"] {
        assert!(
            text.lines().any(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                cells.len() > 3 && cells[0].starts_with(label) && cells[3] == "no threshold"
            }),
            "{label}: {text}"
        );
    }
    println!("{text}");
}
