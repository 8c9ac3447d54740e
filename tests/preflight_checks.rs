//! The Phase 0 preflight against the in-process emulator: every item fails in turn with a clear
//! mark and reason, everything in place passes, `--fix` repairs the lifecycle rule, and the
//! report feeds the acceptance gate.

use std::collections::BTreeSet;
use std::time::Duration;

use sandbox_harness::backends::cloudrun::CloudRunConfig;
use sandbox_harness::emulator::{EmulatorConfig, LocalCloud};
use sandbox_harness::gate::{GateInputs, gate};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::retry::RetryPolicy;
use sandbox_harness::gcp::storage::{BucketSpec, Lifecycle, LifecycleRule, StorageClient};
use sandbox_harness::preflight::{
    self, PreflightClients, PreflightOptions, PreflightReport, Status, ids,
};

const BUCKET: &str = "preflight-bucket";

/// Shuts the emulator down (executions cancelled, containers removed) even when a test fails.
struct Cloud(LocalCloud);

impl Drop for Cloud {
    fn drop(&mut self) {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.0.shutdown());
        });
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        multiplier: 2.0,
        deadline: Duration::from_secs(10),
    }
}

fn config() -> CloudRunConfig {
    CloudRunConfig {
        bucket: BUCKET.into(),
        ..CloudRunConfig::default()
    }
}

fn sessions_rule() -> Lifecycle {
    Lifecycle {
        rule: vec![LifecycleRule::delete_after_days(7, &["sessions/"])],
    }
}

/// Starts an emulator with `emu`, creates `bucket` when given, and builds the clients.
async fn setup(
    emu: EmulatorConfig,
    bucket: Option<BucketSpec>,
    cfg: &CloudRunConfig,
) -> (Cloud, PreflightClients, StorageClient) {
    let cloud = Cloud(LocalCloud::start_with(emu).await.expect("emulator starts"));
    let storage = StorageClient::new(&cloud.0.base_url(), TokenSource::Anonymous).unwrap();
    if let Some(spec) = bucket {
        storage
            .insert_bucket("local-project", &spec)
            .await
            .expect("bucket created");
    }
    let clients = PreflightClients::for_local(cfg, &cloud.0)
        .await
        .expect("clients")
        .with_retry(fast_retry());
    (cloud, clients, storage)
}

fn plain_bucket() -> BucketSpec {
    BucketSpec {
        name: BUCKET.into(),
        ..BucketSpec::default()
    }
}

fn no_job() -> PreflightOptions {
    PreflightOptions {
        run_test_job: false,
        ..PreflightOptions::default()
    }
}

fn item<'a>(r: &'a PreflightReport, id: &str) -> &'a preflight::CheckResult {
    r.check(id)
        .unwrap_or_else(|| panic!("no item {id} in\n{}", r.render()))
}

fn assert_status(r: &PreflightReport, id: &str, status: Status) {
    let c = item(r, id);
    assert_eq!(c.status, status, "{id}: {}\n{}", c.reason, r.render());
}

fn preflight_gate_passes(r: &PreflightReport) -> bool {
    let inputs = GateInputs {
        preflight: Some(r.summary()),
        ..GateInputs::default()
    };
    let res = gate(0, &inputs).expect("phase 0 exists");
    res.gates
        .iter()
        .find(|g| g.id == "preflight")
        .expect("phase 0 has a preflight gate")
        .passed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_in_place_passes_and_opens_the_gate() {
    let mut cfg = config();
    cfg.bucket_location = Some("us-central1".into());
    cfg.bucket_storage_class = Some("STANDARD".into());
    let spec = BucketSpec {
        name: BUCKET.into(),
        location: Some("US-CENTRAL1".into()),
        storage_class: Some("STANDARD".into()),
        lifecycle: Some(sessions_rule()),
    };
    let (_cloud, clients, _) = setup(EmulatorConfig::default(), Some(spec), &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &PreflightOptions::default()).await;
    let text = r.render();
    assert!(r.passed, "{text}");
    assert_eq!(r.checks.len(), 8);
    for c in &r.checks {
        assert_eq!(c.status, Status::Pass, "{}: {}\n{text}", c.id, c.reason);
        assert!(text.contains(&format!("✓ {}", c.id)), "{text}");
    }
    assert!(item(&r, ids::TEST_JOB).reason.contains("deleted"));
    assert_eq!(r.exit_code(), 0);
    let s = r.summary();
    assert!(s.failures.is_empty());
    assert_eq!(s.checks, 8);
    assert!(preflight_gate_passes(&r));
    // The test job is gone.
    let parent = format!("projects/{}/locations/{}", clients.project, cfg.region);
    let jobs = clients.run.list_jobs(&parent, None, None).await.unwrap();
    assert!(jobs.jobs.is_empty(), "{:?}", jobs.jobs);
    // The JSON report round-trips (timings are floats: compared apart, to the microsecond).
    let json = serde_json::to_string(&r).unwrap();
    let mut back: PreflightReport = serde_json::from_str(&json).unwrap();
    let mut orig = r.clone();
    for (b, o) in back.checks.iter_mut().zip(orig.checks.iter_mut()) {
        assert!((b.elapsed_ms - o.elapsed_ms).abs() < 1e-3);
        b.elapsed_ms = 0.0;
        o.elapsed_ms = 0.0;
    }
    assert_eq!(back, orig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_fails_and_skips_what_depends_on_it() {
    let cfg = config();
    let (_cloud, clients, _) = setup(EmulatorConfig::default(), None, &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &no_job()).await;
    assert!(!r.passed);
    assert_eq!(r.exit_code(), 1);
    assert_status(&r, ids::BUCKET_EXISTS, Status::Fail);
    assert!(
        item(&r, ids::BUCKET_EXISTS)
            .reason
            .contains(&format!("bucket {BUCKET} does not exist"))
    );
    for id in [
        ids::BUCKET_LOCATION,
        ids::BUCKET_STORAGE_CLASS,
        ids::BUCKET_LIFECYCLE,
        ids::IAM_BUCKET,
    ] {
        assert_status(&r, id, Status::Skip);
    }
    assert_status(&r, ids::IAM_PROJECT, Status::Pass);
    assert_status(&r, ids::API_RUN, Status::Pass);
    assert_status(&r, ids::TEST_JOB, Status::Skip);
    let text = r.render();
    assert!(
        text.contains("✗ bucket.exists") && text.contains("does not exist"),
        "{text}"
    );
    assert!(text.contains("– bucket.lifecycle"), "{text}");
    let s = r.summary();
    assert_eq!(s.failures.len(), 1);
    assert!(s.failures[0].starts_with("bucket.exists: "), "{s:?}");
    assert!(!preflight_gate_passes(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_location_and_storage_class_fail_with_both_values() {
    let mut cfg = config();
    cfg.bucket_location = Some("EUROPE-WEST1".into());
    cfg.bucket_storage_class = Some("STANDARD".into());
    let spec = BucketSpec {
        name: BUCKET.into(),
        location: Some("US-CENTRAL1".into()),
        storage_class: Some("NEARLINE".into()),
        lifecycle: Some(sessions_rule()),
    };
    let (_cloud, clients, _) = setup(EmulatorConfig::default(), Some(spec), &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &no_job()).await;
    assert_status(&r, ids::BUCKET_LOCATION, Status::Fail);
    let why = &item(&r, ids::BUCKET_LOCATION).reason;
    assert!(
        why.contains("US-CENTRAL1") && why.contains("EUROPE-WEST1"),
        "{why}"
    );
    assert_status(&r, ids::BUCKET_STORAGE_CLASS, Status::Fail);
    let why = &item(&r, ids::BUCKET_STORAGE_CLASS).reason;
    assert!(
        why.contains("NEARLINE") && why.contains("STANDARD"),
        "{why}"
    );
    assert_status(&r, ids::BUCKET_LIFECYCLE, Status::Pass);
    assert!(!r.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_lifecycle_rule_fails_and_fix_sets_it_keeping_other_rules() {
    let cfg = config();
    let spec = BucketSpec {
        lifecycle: Some(Lifecycle {
            rule: vec![LifecycleRule::delete_after_days(1, &["scratch/"])],
        }),
        ..plain_bucket()
    };
    let (_cloud, clients, storage) = setup(EmulatorConfig::default(), Some(spec), &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &no_job()).await;
    assert_status(&r, ids::BUCKET_LIFECYCLE, Status::Fail);
    let c = item(&r, ids::BUCKET_LIFECYCLE);
    assert!(
        c.reason.contains("no lifecycle rule deletes sessions/"),
        "{}",
        c.reason
    );
    assert!(c.fixed.is_none());
    assert!(!r.passed);

    let fixed = preflight::run_checklist(
        &cfg,
        &clients,
        &PreflightOptions {
            fix: true,
            ..no_job()
        },
    )
    .await;
    assert_status(&fixed, ids::BUCKET_LIFECYCLE, Status::Pass);
    assert!(item(&fixed, ids::BUCKET_LIFECYCLE).fixed.is_some());
    assert!(fixed.passed, "{}", fixed.render());
    assert!(fixed.render().contains("fixed: "));

    let b = storage.get_bucket(BUCKET).await.unwrap();
    let rules = b.lifecycle.expect("lifecycle set").rule;
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules.contains(&LifecycleRule::delete_after_days(1, &["scratch/"])));
    assert!(rules.contains(&LifecycleRule::delete_after_days(7, &["sessions/"])));

    let again = preflight::run_checklist(&cfg, &clients, &no_job()).await;
    assert_status(&again, ids::BUCKET_LIFECYCLE, Status::Pass);
    assert!(item(&again, ids::BUCKET_LIFECYCLE).fixed.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_permissions_are_named() {
    let cfg = config();
    let emu = EmulatorConfig {
        denied_permissions: BTreeSet::from([
            "storage.objects.delete".to_string(),
            "run.executions.cancel".to_string(),
        ]),
        ..EmulatorConfig::default()
    };
    let spec = BucketSpec {
        lifecycle: Some(sessions_rule()),
        ..plain_bucket()
    };
    let (_cloud, clients, _) = setup(emu, Some(spec), &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &no_job()).await;
    assert_status(&r, ids::IAM_BUCKET, Status::Fail);
    assert_eq!(
        item(&r, ids::IAM_BUCKET).reason,
        "missing on the bucket: storage.objects.delete"
    );
    assert_status(&r, ids::IAM_PROJECT, Status::Fail);
    assert_eq!(
        item(&r, ids::IAM_PROJECT).reason,
        "missing on the project: run.executions.cancel"
    );
    assert_status(&r, ids::BUCKET_EXISTS, Status::Pass);
    assert_status(&r, ids::API_RUN, Status::Pass);
    assert_eq!(r.summary().failures.len(), 2);
    assert!(r.render().contains("✗ iam.project"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_run_api_fails() {
    let cfg = config();
    let emu = EmulatorConfig {
        disabled_services: BTreeSet::from(["run.googleapis.com".to_string()]),
        ..EmulatorConfig::default()
    };
    let spec = BucketSpec {
        lifecycle: Some(sessions_rule()),
        ..plain_bucket()
    };
    let (_cloud, clients, _) = setup(emu, Some(spec), &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &no_job()).await;
    assert_status(&r, ids::API_RUN, Status::Fail);
    let why = &item(&r, ids::API_RUN).reason;
    assert!(why.contains("run.googleapis.com is DISABLED"), "{why}");
    assert_eq!(r.summary().failures.len(), 1, "{}", r.render());
    assert!(!preflight_gate_passes(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonexistent_executor_image_fails_the_test_job_and_leaves_no_job() {
    let mut cfg = config();
    let image = "sandbox-harness/executor:no-such-tag-preflight";
    cfg.executor_image = Some(image.into());
    let spec = BucketSpec {
        lifecycle: Some(sessions_rule()),
        ..plain_bucket()
    };
    let (_cloud, clients, _) = setup(EmulatorConfig::default(), Some(spec), &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &PreflightOptions::default()).await;
    assert_status(&r, ids::TEST_JOB, Status::Fail);
    let why = &item(&r, ids::TEST_JOB).reason;
    assert!(why.contains(image), "{why}");
    assert!(why.contains("could not be created"), "{why}");
    assert!(why.contains("job deleted"), "{why}");
    assert_eq!(r.summary().failures.len(), 1, "{}", r.render());
    let parent = format!("projects/{}/locations/{}", clients.project, cfg.region);
    assert!(
        clients
            .run
            .list_jobs(&parent, None, None)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_test_command_reports_its_exit_code() {
    let cfg = config();
    let spec = BucketSpec {
        lifecycle: Some(sessions_rule()),
        ..plain_bucket()
    };
    let (_cloud, clients, _) = setup(EmulatorConfig::default(), Some(spec), &cfg).await;
    let opts = PreflightOptions {
        test_command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo preflight-boom >&2; exit 3".into(),
        ]),
        ..PreflightOptions::default()
    };
    let r = preflight::run_checklist(&cfg, &clients, &opts).await;
    assert_status(&r, ids::TEST_JOB, Status::Fail);
    let why = &item(&r, ids::TEST_JOB).reason;
    assert!(why.contains("exit code 3"), "{why}");
    assert!(why.contains("preflight-boom"), "{why}");
    assert!(r.render().contains("✗ run.test_job"));
    assert_eq!(r.exit_code(), 1);
}

/// `preflight --fix` on a fresh project: the bucket is created as the plan sets it up
/// (us-central1, STANDARD, the 7-day lifecycle rule on sessions/), and the whole checklist then
/// passes, the test job included: the real sandbox job spec, whose command writes and reads a
/// file through both Cloud Storage volumes. Bucket resource fields as the JSON API documents
/// them (https://cloud.google.com/storage/docs/json_api/v1/buckets/insert).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_creates_the_bucket_on_a_fresh_project_and_then_passes() {
    let cfg = config();
    let (_cloud, clients, storage) = setup(EmulatorConfig::default(), None, &cfg).await;
    let fix = PreflightOptions {
        fix: true,
        ..PreflightOptions::default()
    };
    let r = preflight::run_checklist(&cfg, &clients, &fix).await;
    assert_status(&r, ids::BUCKET_EXISTS, Status::Pass);
    assert!(
        item(&r, ids::BUCKET_EXISTS).reason.contains("created"),
        "{}",
        r.render()
    );
    let b = storage.get_bucket(BUCKET).await.expect("the bucket exists");
    assert_eq!(b.location.as_deref(), Some("US-CENTRAL1"));
    assert_eq!(b.storage_class.as_deref(), Some("STANDARD"));
    assert_eq!(
        b.lifecycle.expect("lifecycle set").rule,
        vec![LifecycleRule::delete_after_days(7, &["sessions/"])]
    );
    assert!(r.passed, "{}", r.render());
    let job = &item(&r, ids::TEST_JOB).reason;
    assert!(
        job.contains("succeeded") && job.contains("deleted"),
        "{job}"
    );
    // The test job left nothing under sessions/.
    let (left, _) = storage
        .list_all(
            BUCKET,
            &sandbox_harness::gcp::storage::ListOptions {
                prefix: Some("sessions/".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    // And a second run, without --fix, passes as is.
    let mut strict = cfg.clone();
    strict.bucket_location = Some("us-central1".into());
    strict.bucket_storage_class = Some("STANDARD".into());
    let again = preflight::run_checklist(&strict, &clients, &no_job()).await;
    assert!(again.passed, "{}", again.render());
}

/// The test job writes through the mounts: a command that reads a file the mount does not
/// have fails it, so a test job that passes proved the volumes work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_job_runs_the_sandbox_spec_with_its_volumes() {
    let cfg = config();
    let spec = BucketSpec {
        lifecycle: Some(sessions_rule()),
        ..plain_bucket()
    };
    let (_cloud, clients, _) = setup(EmulatorConfig::default(), Some(spec), &cfg).await;
    let opts = PreflightOptions {
        test_command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "mountpoint -q /workspace || grep -q ' /workspace ' /proc/mounts".into(),
        ]),
        ..PreflightOptions::default()
    };
    let r = preflight::run_checklist(&cfg, &clients, &opts).await;
    assert_status(&r, ids::TEST_JOB, Status::Pass);
}

/// The runtime service account needs object access on the bucket: the bucket's IAM policy
/// must grant it an object role (https://cloud.google.com/storage/docs/access-control/iam-roles);
/// the check names the account and what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_service_account_needs_object_access_on_the_bucket() {
    let mut cfg = config();
    let sa = "runner@local-project.iam.gserviceaccount.com";
    cfg.service_account = Some(sa.into());
    let spec = BucketSpec {
        lifecycle: Some(sessions_rule()),
        ..plain_bucket()
    };
    let (_cloud, clients, _) = setup(EmulatorConfig::default(), Some(spec.clone()), &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &no_job()).await;
    assert_status(&r, ids::IAM_BUCKET, Status::Fail);
    let why = &item(&r, ids::IAM_BUCKET).reason;
    assert!(
        why.contains(sa) && why.contains("roles/storage.objectUser"),
        "{why}"
    );

    let emu = EmulatorConfig {
        bucket_object_users: BTreeSet::from([format!("serviceAccount:{sa}")]),
        ..EmulatorConfig::default()
    };
    let (_cloud2, clients, _) = setup(emu, Some(spec), &cfg).await;
    let r = preflight::run_checklist(&cfg, &clients, &no_job()).await;
    assert_status(&r, ids::IAM_BUCKET, Status::Pass);
    assert!(
        item(&r, ids::IAM_BUCKET)
            .reason
            .contains("has roles/storage.objectUser"),
        "{}",
        r.render()
    );
}
