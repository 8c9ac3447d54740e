//! `sandbox-harness gate --phase 1` as CI runs it: exit 0 on a healthy setup, non-zero naming
//! the failed gate when a threshold is made unreachable. The measurements are real (a short
//! Cloud Run bench on the embedded emulator, and a conformance subset on both backends); the
//! team's own acceptance table is given with `--suites` (here: the plan's rows that this short
//! run measures).

use std::path::Path;
use std::process::Command;

fn harness(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sandbox-harness"))
        .args(args)
        .output()
        .expect("the harness runs")
}

fn table(warm_exec_target_max: &str, warm_exec_acceptable: &str) -> String {
    format!(
        r#"
[[table]]
id = "cloudrun"
backend = "cloudrun"
title = "CloudRunJobsSandbox target / acceptable (short run)"
citation = "migration plan: CloudRunJobsSandbox performance targets"

[[table.row]]
metric = "warm_exec"
statistic = "p50"
plan = "0.5-2 s / < 3 s"
target = {{ range_seconds = [0.0, {warm_exec_target_max}] }}
acceptable = {{ lt_seconds = {warm_exec_acceptable} }}
source = "plan"

[[table.row]]
metric = "success_rate"
statistic = "rate"
plan = "> 99.5 % / > 99 %"
target = {{ gt_percent = 99.5 }}
acceptable = {{ gt_percent = 99.0 }}
source = "plan"
"#
    )
}

fn gate(dir: &Path, suites: &Path) -> std::process::Output {
    harness(&[
        "gate",
        "--phase",
        "1",
        "--report",
        dir.join("latest.json").to_str().unwrap(),
        "--conformance",
        dir.join("conformance.json").to_str().unwrap(),
        "--suites",
        suites.to_str().unwrap(),
        "--out",
        dir.join("gate").to_str().unwrap(),
    ])
}

#[test]
fn gate_phase_1_passes_when_healthy_and_fails_on_an_unreachable_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let bench = harness(&[
        "bench",
        "--backend",
        "cloudrun",
        "--iterations",
        "3",
        "--cold-starts",
        "1",
        "--concurrency",
        "0",
        "--no-large",
        "--out",
        out,
    ]);
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let conform = harness(&[
        "conform",
        "--backend",
        "all",
        "--filter",
        "stateful.e*",
        "--out",
        out,
    ]);
    assert!(
        conform.status.success(),
        "{}",
        String::from_utf8_lossy(&conform.stderr)
    );

    let healthy = dir.path().join("healthy");
    std::fs::create_dir_all(&healthy).unwrap();
    std::fs::write(healthy.join("acceptance.toml"), table("2.0", "3.0")).unwrap();
    let g = gate(dir.path(), &healthy);
    let text = String::from_utf8_lossy(&g.stdout);
    assert_eq!(g.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Phase 1 (Parity and acceptance): all gates pass."),
        "{text}"
    );

    let impossible = dir.path().join("impossible");
    std::fs::create_dir_all(&impossible).unwrap();
    std::fs::write(
        impossible.join("acceptance.toml"),
        table("0.000001", "0.000001"),
    )
    .unwrap();
    let g = gate(dir.path(), &impossible);
    let text = String::from_utf8_lossy(&g.stdout);
    assert_eq!(g.status.code(), Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("| FAIL")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains("cloudrun_acceptable") && failed[0].contains("Warm execution"),
        "{text}"
    );
}
