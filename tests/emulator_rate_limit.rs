//! Cloud Storage's per-object mutation rate limit in the emulator.
//!
//! Google documents about one write per second to one object name
//! (https://cloud.google.com/storage/quotas, "Objects": "Maximum rate of writes to the same
//! object name: one write per second"; https://cloud.google.com/storage/docs/request-rate,
//! "Request rate and access distribution guidelines": sustained updates of one object faster
//! than that get 429 Too Many Requests, short bursts are tolerated). The emulator keeps a token
//! bucket per object name (`EmulatorConfig::object_mutation_limit`, on by default: 1 per
//! second, burst 5); uploads, patches and deletes of one name draw on it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sandbox_harness::emulator::storage::MutationLimit;
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::retry::RetryPolicy;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};
use serde_json::{Value, json};

async fn start(limit: Option<MutationLimit>) -> (Emulator, StorageClient) {
    let emu = Emulator::start(EmulatorConfig {
        check_docker: false,
        object_mutation_limit: limit,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    c.insert_bucket(
        "p",
        &BucketSpec {
            name: "rlim".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (emu, c)
}

async fn media(http: &reqwest::Client, base: &str, name: &str) -> reqwest::Response {
    http.post(format!(
        "{base}/upload/storage/v1/b/rlim/o?uploadType=media&name={name}"
    ))
    .body("x")
    .send()
    .await
    .unwrap()
}

#[test]
fn the_default_is_on_at_googles_documented_rate() {
    let d = EmulatorConfig::default()
        .object_mutation_limit
        .expect("on by default");
    assert_eq!(d.per_second, 1.0);
    assert!(d.burst >= 1);
}

#[tokio::test]
async fn a_burst_passes_then_mutations_of_that_name_get_429() {
    // A slow refill (one token per 100 s) makes the burst boundary exact whatever the machine.
    let (emu, c) = start(Some(MutationLimit {
        per_second: 0.01,
        burst: 3,
    }))
    .await;
    let http = reqwest::Client::new();
    let base = emu.base_url();
    for i in 0..3 {
        assert_eq!(media(&http, &base, "hot").await.status(), 200, "write {i}");
    }
    let r = media(&http, &base, "hot").await;
    assert_eq!(r.status(), 429);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], 429);
    assert_eq!(b["error"]["errors"][0]["reason"], "rateLimitExceeded");
    // Patch and delete of the same name are mutations too; reads are not.
    let r = http
        .patch(format!("{base}/storage/v1/b/rlim/o/hot"))
        .json(&json!({"metadata": {"k": "v"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = http
        .delete(format!("{base}/storage/v1/b/rlim/o/hot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = http
        .get(format!("{base}/storage/v1/b/rlim/o/hot?alt=media"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Another name has its own budget.
    assert_eq!(media(&http, &base, "cold").await.status(), 200);
    assert_eq!(emu.storage().throttled(), 3);
    // A failed precondition is not a mutation and costs nothing.
    let r = http
        .post(format!(
            "{base}/upload/storage/v1/b/rlim/o?uploadType=media&name=cold&ifGenerationMatch=0"
        ))
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    drop(c);
}

#[tokio::test]
async fn sustained_writes_faster_than_the_rate_are_throttled_to_it() {
    let limit = MutationLimit {
        per_second: 1.0,
        burst: 5,
    };
    let (emu, _c) = start(Some(limit)).await;
    let http = reqwest::Client::new();
    let base = emu.base_url();
    let start = Instant::now();
    let (mut ok, mut refused) = (0u32, 0u32);
    // 10 attempts per second for 3 s.
    for _ in 0..30 {
        match media(&http, &base, "loop").await.status().as_u16() {
            200 => ok += 1,
            429 => refused += 1,
            s => panic!("unexpected status {s}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Never more than the burst plus what the rate refilled meanwhile.
    let most = f64::from(limit.burst) + elapsed * limit.per_second;
    assert!(
        f64::from(ok) <= most.floor(),
        "{ok} writes in {elapsed:.1}s"
    );
    assert!(ok >= limit.burst, "the burst passes: {ok}");
    assert!(refused > 0, "30 writes in {elapsed:.1}s and none refused");
    assert_eq!(u64::from(refused), emu.storage().throttled());
}

#[tokio::test]
async fn our_client_waits_out_the_limit_as_googles_clients_do() {
    let (emu, c) = start(Some(MutationLimit {
        per_second: 1.0,
        burst: 2,
    }))
    .await;
    // The default policy (the client's own): a tight loop rewriting one object: every write lands, the excess after the burst waits
    // in the client's backoff instead of failing.
    let mut last = 0;
    for i in 0..5 {
        let o = c
            .insert_object(
                "rlim",
                "state.json",
                Bytes::from(format!("{{\"n\":{i}}}")),
                &WriteOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
        assert!(o.generation > last);
        last = o.generation;
    }
    assert!(
        emu.storage().throttled() > 0,
        "the loop outran the limit at least once"
    );
    let body = c
        .download("rlim", "state.json", None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(&body[..], b"{\"n\":4}");
    // Without retries the same loop surfaces a 429.
    let plain = c.clone().with_retry(RetryPolicy::none());
    let mut seen = None;
    for i in 0..5 {
        if let Err(e) = plain
            .insert_object(
                "rlim",
                "other",
                Bytes::from(vec![i]),
                &WriteOptions::default(),
            )
            .await
        {
            seen = e.status();
            break;
        }
    }
    assert_eq!(seen, Some(429));
}

#[tokio::test]
async fn off_means_off() {
    let (emu, _c) = start(None).await;
    let http = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(media(&http, &emu.base_url(), "free").await.status(), 200);
    }
    assert_eq!(emu.storage().throttled(), 0);
}
