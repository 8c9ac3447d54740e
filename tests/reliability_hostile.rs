//! Hostile input: awkward paths (property tests), shell metacharacters, huge outputs, invalid
//! regexes and globs on both backends, and malformed requests to the emulator's HTTP API.

#[path = "reliability_common.rs"]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use sandbox_harness::emulator::{AuthMode, EmulatorConfig, LocalCloud};
use sandbox_harness::gcp::storage::ListOptions;
use sandbox_harness::protocol::{
    ErrorKind, ReadOptions, Sandbox, SandboxBackend, StatefulExec, WriteOptions,
};
use sandbox_harness::suites::faults::FaultConfig;

use common::{Cleanup, cloud_backend, cmd, docker_backend, out};

/// Path pieces an agent (or an attacker) may send.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("-rf".to_string()),
        Just("--".to_string()),
        Just("ü日本 ✓".to_string()),
        Just("sp ace".to_string()),
        Just("$(touch pwned)".to_string()),
        Just("`id`;|&*?".to_string()),
        Just("a\0b".to_string()),
        Just("\n".to_string()),
        Just("x".repeat(300)),
        "[a-z]{1,8}".prop_map(|s| s),
    ]
}

fn hostile_path() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(""), Just("/"), Just("/workspace/"), Just("/tmp/")],
        proptest::collection::vec(piece(), 1..5),
    )
        .prop_map(|(lead, parts)| format!("{lead}{}", parts.join("/")))
}

/// What the protocol promises for a write to a generated path.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A valid path: it must round-trip.
    RoundTrip,
    /// Malformed for this backend: `InvalidInput`, with a message.
    Invalid,
    /// Lands in the image's own system tree (`/etc`, `/proc`...): any documented class or a
    /// round trip; not counted towards the floor.
    System,
}

/// The rules the oracle applies, per backend.
#[derive(Debug, Clone, Copy)]
struct PathRules {
    /// Longest file name component, bytes (Linux NAME_MAX is 255).
    name_max: usize,
    /// Whether names in /workspace may hold CR or LF (Cloud Storage object names may not:
    /// https://cloud.google.com/storage/docs/objects#naming).
    workspace_allows_crlf: bool,
}

/// Decides, without asking the sandbox, what writing `payload` to `p` must do. `dirs` holds
/// the directories known to exist (the image's top level, and parents of earlier writes).
fn oracle(p: &str, rules: PathRules, dirs: &BTreeSet<String>, system: &BTreeSet<String>) -> Expect {
    let Ok(r) = sandbox_harness::paths::resolve("/workspace", p) else {
        return Expect::Invalid;
    };
    let top = r.split('/').nth(1).unwrap_or("");
    if r != "/" && system.contains(top) {
        return Expect::System;
    }
    if dirs.contains(&r) {
        return Expect::Invalid;
    }
    let names: Vec<&str> = r.split('/').filter(|c| !c.is_empty()).collect();
    if names.iter().any(|n| n.len() > rules.name_max) {
        return Expect::Invalid;
    }
    if top == "workspace" && !rules.workspace_allows_crlf && r.contains(['\r', '\n']) {
        return Expect::Invalid;
    }
    Expect::RoundTrip
}

/// What [`fuzz_paths`] saw.
#[derive(Debug, Default)]
struct PathStats {
    tried: usize,
    round_trips: usize,
    invalid: usize,
    system: usize,
}

/// Writes and reads back hostile paths against the oracle: every valid path round-trips,
/// every malformed one is refused as `InvalidInput`, and at least a fifth are valid.
async fn fuzz_paths(sb: Arc<dyn Sandbox>, cases: u32, rules: PathRules) -> PathStats {
    // A fixed seed by default, so the floor below cannot fail by chance; set
    // RELIABILITY_PROPTEST_SEED to explore other paths.
    let seed: u64 = std::env::var("RELIABILITY_PROPTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    println!("hostile paths: {cases} cases, seed {seed} (RELIABILITY_PROPTEST_SEED)");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        PtConfig {
            cases,
            failure_persistence: None,
            ..PtConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let mut paths = Vec::new();
    for _ in 0..cases {
        paths.push(hostile_path().new_tree(&mut runner).unwrap().current());
    }
    // The image's own top-level entries (besides the two working roots) are off limits.
    let top = sb.exec_stateful(cmd("h", "ls -A /")).await.unwrap();
    let system: BTreeSet<String> = out(&top)
        .lines()
        .filter(|l| *l != "workspace" && *l != "tmp")
        .map(str::to_string)
        .collect();
    let mut dirs: BTreeSet<String> = ["/", "/workspace", "/tmp"].map(String::from).into();
    let mut stats = PathStats::default();
    for p in &paths {
        let expect = oracle(p, rules, &dirs, &system);
        stats.tried += 1;
        let res = sb
            .file_write("h", p, b"payload", WriteOptions::default())
            .await;
        match (expect, res) {
            (Expect::RoundTrip | Expect::System, Ok(())) => {
                let c = sb
                    .file_read("h", p, ReadOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("{p:?} written but not readable: {e}"));
                assert_eq!(c.content, b"payload", "{p:?}");
                sb.file_delete("h", p).await.unwrap();
                let r = sandbox_harness::paths::resolve("/workspace", p).unwrap();
                let mut d = sandbox_harness::paths::parent(&r).to_string();
                while d != "/" {
                    dirs.insert(d.clone());
                    d = sandbox_harness::paths::parent(&d).to_string();
                }
                if expect == Expect::RoundTrip {
                    stats.round_trips += 1;
                } else {
                    stats.system += 1;
                }
            }
            (Expect::RoundTrip, Err(e)) => panic!("valid path {p:?} was refused: {e}"),
            (Expect::Invalid, Ok(())) => panic!("malformed path {p:?} was accepted"),
            (Expect::Invalid, Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{p:?}: {e}");
                assert!(!e.to_string().is_empty());
                stats.invalid += 1;
            }
            (Expect::System, Err(e)) => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::InvalidInput | ErrorKind::Permission | ErrorKind::NotFound
                    ),
                    "{p:?}: unexpected class {e:?}"
                );
                stats.system += 1;
            }
        }
    }
    // The floor: a run that refused everything would prove nothing.
    assert!(
        stats.round_trips * 5 >= stats.tried,
        "only {} of {} generated paths were valid round trips: {stats:?}",
        stats.round_trips,
        stats.tried
    );
    // `$(touch pwned)` ran nowhere.
    let r = sb
        .exec_stateful(cmd(
            "h",
            "ls /workspace/pwned /pwned /tmp/pwned pwned 2>/dev/null | wc -l",
        ))
        .await
        .unwrap();
    assert_eq!(out(&r), "0", "a path was run as a command");
    stats
}

/// Metacharacters, huge output, invalid regex/glob, bad env names; returns inputs tried.
async fn literal_and_limits(sb: Arc<dyn Sandbox>) -> usize {
    let mut tried = 0;
    let r = sb
        .exec_stateful(cmd(
            "m",
            r#"echo 'a;b|c&&d$(id)`e`' "$((1+2))" \* ; echo done"#,
        ))
        .await
        .unwrap();
    assert_eq!(r.stdout, b"a;b|c&&d$(id)`e` 3 *\ndone\n");
    tried += 1;
    let weird = "/workspace/$(touch p2);`id`|x&y.txt";
    sb.file_write("m", weird, b"lit", WriteOptions::default())
        .await
        .unwrap();
    assert!(sb.file_exists("m", weird).await.unwrap());
    assert!(!sb.file_exists("m", "/workspace/p2").await.unwrap());
    let m = sb.file_search("m", weird, "l.t").await.unwrap();
    assert_eq!(m.len(), 1);
    tried += 1;
    // Invalid regex and glob: InvalidInput with a message.
    for re in ["(", "[z-a]", "a{99999999}"] {
        let e = sb.file_search("m", weird, re).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{re}: {e}");
        assert!(e.to_string().contains("regex"), "{e}");
        tried += 1;
    }
    for g in ["**[", "{a,b", "a[b"] {
        let e = sb.file_find("m", "/workspace", g).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{g}: {e}");
        assert!(e.to_string().contains("glob"), "{e}");
        tried += 1;
    }
    // Invalid env names: a shell error, the session keeps its state.
    sb.exec_stateful(cmd("m", "cd /tmp && export GOOD=1"))
        .await
        .unwrap();
    for bad in ["1BAD=x", "A-B=x", "=x", "A.B=x"] {
        let r = sb
            .exec_stateful(cmd("m", &format!("export {bad}")))
            .await
            .unwrap();
        assert_ne!(r.exit_code, 0, "export {bad} should fail");
        tried += 1;
    }
    let r = sb.exec_stateful(cmd("m", "pwd; echo $GOOD")).await.unwrap();
    assert_eq!(r.stdout, b"/tmp\n1\n");
    // Huge output: cut at the cap with an explicit marker, harness memory bounded.
    // One measurement at a time: RSS is per process and the tests run in parallel.
    let _one = MEASURE.lock().await;
    let before = rss_kib();
    let r = sb
        .exec_stateful(StatefulExec::new(
            "m",
            format!("yes 0123456789abcdef | head -c {HUGE}"),
            Duration::from_secs(120),
        ))
        .await
        .unwrap();
    let after = rss_kib();
    assert!(r.output_truncated);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("output truncated"), "explicit marker");
    assert!(
        r.stdout.len() <= sandbox_harness::transport::MAX_OUTPUT + 1024,
        "{} bytes kept",
        r.stdout.len()
    );
    println!(
        "huge output: {} MB produced, {} bytes kept, harness RSS {} -> {} KiB",
        HUGE / 1_000_000,
        r.stdout.len(),
        before,
        after
    );
    // Bounded by the cap, not by what was produced: well under the produced size.
    assert!(
        after.saturating_sub(before) < (HUGE as u64 / 1024) / 2,
        "harness memory grew by {} KiB",
        after.saturating_sub(before)
    );
    tried += 1;
    tried
}

/// Bytes of output the huge-output case produces.
const HUGE: usize = 200_000_000;

static MEASURE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn cases() -> u32 {
    std::env::var("RELIABILITY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hostile_input() {
    let backend = docker_backend().await;
    let cleanup = Cleanup::default();
    let sb = cleanup.add(backend.create().await.unwrap());
    let rules = PathRules {
        name_max: 255,
        workspace_allows_crlf: true,
    };
    let st = fuzz_paths(sb.clone(), cases(), rules).await;
    let more = literal_and_limits(sb).await;
    println!(
        "docker hostile inputs: {} paths ({} round trips, {} invalid_input as the oracle said, {} in system dirs) + {more} others",
        st.tried, st.round_trips, st.invalid, st.system
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudrun_hostile_input_stays_in_its_prefix() {
    let cleanup = Cleanup::default();
    let backend = cloud_backend(FaultConfig::default(), &cleanup).await;
    let sb = cleanup.add(backend.create().await.unwrap());
    let rules = PathRules {
        name_max: 255,
        // Cloud Storage object names may not hold CR or LF
        // (https://cloud.google.com/storage/docs/objects#naming): /workspace is a bucket volume.
        workspace_allows_crlf: false,
    };
    let st = fuzz_paths(sb.clone(), cases(), rules).await;
    let more = literal_and_limits(sb.clone()).await;
    // Every object in the bucket belongs to this sandbox.
    let (objects, _) = backend
        .storage()
        .list_all(&backend.config().bucket, &ListOptions::default())
        .await
        .unwrap();
    let prefix = format!("sessions/{}/", sb.id());
    let escaped: Vec<_> = objects
        .iter()
        .filter(|o| !o.name.starts_with(&prefix))
        .map(|o| o.name.clone())
        .collect();
    assert!(escaped.is_empty(), "objects outside {prefix}: {escaped:?}");
    println!(
        "cloudrun hostile inputs: {} paths ({} round trips, {} invalid_input as the oracle said, {} in system dirs) + {more} others, {} objects all under {prefix}",
        st.tried,
        st.round_trips,
        st.invalid,
        st.system,
        objects.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_http_rejects_malformed_requests() {
    common::init_tracing();
    let local = Arc::new(LocalCloud::start().await.unwrap());
    let guard = Cleanup::default();
    guard.set_local(local.clone());
    let base = local.base_url();
    // No connection reuse: the server closes a connection whose oversized body it refused.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let tried = AtomicUsize::new(0);
    let check = |r: reqwest::Response, want: &[u16], what: &str| {
        tried.fetch_add(1, Ordering::Relaxed);
        let s = r.status().as_u16();
        assert!(want.contains(&s), "{what}: got {s}, want {want:?}");
    };
    // Malformed JSON to both APIs.
    let r = http
        .post(format!("{base}/v2/projects/p/locations/l/jobs?jobId=j1"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    check(r, &[400], "malformed job JSON");
    let r = http
        .post(format!("{base}/storage/v1/b?project=p"))
        .header("content-type", "application/json")
        .body("[1,2")
        .send()
        .await
        .unwrap();
    check(r, &[400], "malformed bucket JSON");
    let r = http
        .post(format!("{base}/v2/projects/p/locations/l/jobs?jobId=j2"))
        .header("content-type", "application/json")
        .body(r#"{"template": 5}"#)
        .send()
        .await
        .unwrap();
    check(r, &[400], "wrong JSON shape");
    // Oversized JSON body.
    let big = format!(r#"{{"labels":{{"a":"{}"}}}}"#, "x".repeat(3 * 1024 * 1024));
    match http
        .post(format!("{base}/v2/projects/p/locations/l/jobs?jobId=j3"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
    {
        Ok(r) => check(r, &[413], "oversized job body"),
        Err(e) => {
            assert!(e.is_request(), "{e}");
            tried.fetch_add(1, Ordering::Relaxed);
        }
    }
    // The server may answer 413 and close before the client finished sending: the client then
    // sees the connection end instead of the status. Either way nothing was accepted.
    match http
        .post(format!("{base}/storage/v1/b?project=p"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
    {
        Ok(r) => check(r, &[413], "oversized bucket body"),
        Err(e) => {
            assert!(e.is_request(), "{e}");
            tried.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Bad ranges on a real object.
    let r = http
        .post(format!("{base}/storage/v1/b?project=p"))
        .json(&serde_json::json!({"name": "hostile-b"}))
        .send()
        .await
        .unwrap();
    check(r, &[200], "bucket create");
    let r = http
        .post(format!(
            "{base}/upload/storage/v1/b/hostile-b/o?uploadType=media&name=o.txt"
        ))
        .body("0123456789")
        .send()
        .await
        .unwrap();
    check(r, &[200], "object upload");
    let obj = format!("{base}/storage/v1/b/hostile-b/o/o.txt?alt=media");
    for (range, want) in [
        ("bytes=100-200", &[416u16][..]),
        ("bytes=5-2", &[416, 200][..]),
        ("bytes=abc", &[416, 400, 200][..]),
        ("bytes=-0", &[416, 200][..]),
        ("chunks=1-2", &[416, 400, 200][..]),
    ] {
        let r = http.get(&obj).header("range", range).send().await.unwrap();
        check(r, want, range);
    }
    // Odd object names and ids.
    let r = http
        .get(format!(
            "{base}/storage/v1/b/hostile-b/o/..%2F..%2Fetc%2Fpasswd?alt=media"
        ))
        .send()
        .await
        .unwrap();
    check(r, &[400, 404], "traversal object name");
    let r = http
        .get(format!("{base}/v2/projects/p/locations/l/jobs/..%2F..%2Fx"))
        .send()
        .await
        .unwrap();
    check(r, &[400, 404], "traversal job name");
    // Still serving.
    let r = http.get(&obj).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "0123456789");

    // With auth required: missing, malformed and unknown tokens are 401.
    let strict = Arc::new(
        LocalCloud::start_with(EmulatorConfig {
            auth: AuthMode::Required,
            ..EmulatorConfig::default()
        })
        .await
        .unwrap(),
    );
    let sbase = strict.base_url();
    for auth in [
        None,
        Some("Bearer"),
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer \u{7f}"),
    ] {
        let mut req = http.get(format!("{sbase}/storage/v1/b/hostile-b/o"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        match req.send().await {
            Ok(r) => check(r, &[401], &format!("token {auth:?}")),
            // reqwest refuses some header values itself.
            Err(_) => {
                tried.fetch_add(1, Ordering::Relaxed);
            }
        }
        let r = http
            .get(format!("{sbase}/v2/projects/p/locations/l/jobs"))
            .header("authorization", auth.unwrap_or("Bearer x"))
            .send()
            .await;
        if let Ok(r) = r {
            check(r, &[401], "run API bad token");
        }
    }
    strict.shutdown().await;
    println!(
        "emulator hostile requests: {} tried, all answered with the right status, crashes 0",
        tried.load(Ordering::Relaxed)
    );
}
