//! Real HTTP against the in-process emulator: endpoints, errors, auth, faults, lifecycle, the
//! flat object store (any valid name, durability across restarts, atomic commits), compose,
//! copy and rewrite, and the per-object mutation rate limit.

mod storage_common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use sandbox_harness::emulator::{AuthMode, Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::retry::RetryPolicy;
use sandbox_harness::gcp::storage::{
    BucketSpec, Lifecycle, LifecycleRule, ListOptions, StorageClient, WriteOptions,
};
use sandbox_harness::suites::faults::FaultConfig;
use serde_json::{Value, json};

fn cfg() -> EmulatorConfig {
    EmulatorConfig {
        check_docker: false,
        ..Default::default()
    }
}

async fn setup(cfg: EmulatorConfig) -> (Emulator, StorageClient, reqwest::Client) {
    let emu = Emulator::start(cfg).await.unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    (emu, c, reqwest::Client::new())
}

async fn bucket(c: &StorageClient, name: &str) {
    c.insert_bucket(
        "p",
        &BucketSpec {
            name: name.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

async fn error_body(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_ready_live() {
    let (emu, _, http) = setup(cfg()).await;
    let base = emu.base_url();
    let h: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "healthy");
    let r: Value = http
        .get(format!("{base}/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["checks"]["storage"], "healthy");
    let l: Value = http
        .get(format!("{base}/live"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l["status"], "alive");
    // check_docker off: reported as skipped, still ready.
    assert_eq!(r["checks"]["docker"], "skipped");
}

#[tokio::test]
async fn google_error_bodies_for_bad_requests() {
    let (emu, c, http) = setup(EmulatorConfig {
        max_json_body: 4096,
        ..cfg()
    })
    .await;
    let base = emu.base_url();
    bucket(&c, "errs").await;
    // Malformed JSON.
    let r = http
        .post(format!("{base}/storage/v1/b?project=p"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, b) = error_body(r).await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], 400);
    assert_eq!(b["error"]["status"], "INVALID_ARGUMENT");
    assert!(b["error"]["errors"][0]["reason"].is_string());
    // Oversized JSON.
    let big = json!({"name": "x".repeat(10_000)}).to_string();
    let r = http
        .post(format!("{base}/storage/v1/b?project=p"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(r).await.0, 413);
    // Unknown path and missing object.
    let (s, b) = error_body(http.get(format!("{base}/nope")).send().await.unwrap()).await;
    assert_eq!((s, b["error"]["status"].as_str()), (404, Some("NOT_FOUND")));
    let (s, _) = error_body(
        http.get(format!("{base}/storage/v1/b/errs/o/missing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    // Bad ranges.
    c.insert_object(
        "errs",
        "ten",
        Bytes::from_static(b"0123456789"),
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    for range in ["bytes=10-", "bytes=5-2", "bytes=x-y", "bytes=0-1,3-4"] {
        let r = http
            .get(format!("{base}/storage/v1/b/errs/o/ten?alt=media"))
            .header("range", range)
            .send()
            .await
            .unwrap();
        let (s, b) = error_body(r).await;
        assert_eq!(s, 416, "{range}");
        assert_eq!(b["error"]["code"], 416);
    }
    let r = http
        .get(format!("{base}/download/storage/v1/b/errs/o/ten?alt=media"))
        .header("range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 2-4/10");
    assert!(
        r.headers()["x-goog-hash"]
            .to_str()
            .unwrap()
            .contains("crc32c=")
    );
    assert_eq!(&r.bytes().await.unwrap()[..], b"234");
    // Names Cloud Storage refuses (https://cloud.google.com/storage/docs/objects#naming):
    // empty, over 1024 bytes, CR or LF, "." and "..". The client cannot send an empty name.
    let too_long = "x".repeat(1025);
    for bad in [".", "..", "a\nb", "a\rb", too_long.as_str()] {
        let err = c
            .insert_object(
                "errs",
                bad,
                Bytes::from_static(b"x"),
                &WriteOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{bad:?}: {err}");
    }
    // Non-empty bucket delete.
    assert_eq!(
        c.delete_bucket("errs").await.unwrap_err().status(),
        Some(409)
    );
    // Invalid bucket names.
    let err = c
        .insert_bucket(
            "p",
            &BucketSpec {
                name: "Bad_Name!".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}

#[tokio::test]
async fn media_and_multipart_uploads_and_metadata_patch() {
    let (emu, c, http) = setup(cfg()).await;
    let base = emu.base_url();
    bucket(&c, "upl").await;
    let r = http
        .post(format!(
            "{base}/upload/storage/v1/b/upl/o?uploadType=media&name=m%2Fone.txt"
        ))
        .header("content-type", "text/x-test")
        .body("media body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["x-goog-hash"]
            .to_str()
            .unwrap()
            .starts_with("crc32c=")
    );
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["kind"], "storage#object");
    assert_eq!(o["name"], "m/one.txt");
    assert_eq!(o["bucket"], "upl");
    assert_eq!(o["size"], "10");
    assert_eq!(o["contentType"], "text/x-test");
    assert!(o["generation"].as_str().unwrap().parse::<i64>().unwrap() > 0);
    assert_eq!(o["metageneration"], "1");
    chrono::DateTime::parse_from_rfc3339(o["timeCreated"].as_str().unwrap()).unwrap();
    assert!(
        o["selfLink"]
            .as_str()
            .unwrap()
            .ends_with("/storage/v1/b/upl/o/m%2Fone.txt")
    );
    // Multipart by hand.
    let body = "--XYZ\r\nContent-Type: application/json\r\n\r\n{\"name\":\"mp.bin\",\"metadata\":{\"k\":\"v\"}}\r\n--XYZ\r\nContent-Type: image/png\r\n\r\n\x00\x01--XYZ-ish\r\n--XYZ--\r\n";
    let r = http
        .post(format!(
            "{base}/upload/storage/v1/b/upl/o?uploadType=multipart"
        ))
        .header("content-type", "multipart/related; boundary=XYZ")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["size"], "11");
    assert_eq!(o["contentType"], "image/png");
    assert_eq!(o["metadata"]["k"], "v");
    let got = c
        .download("upl", "mp.bin", None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(&got[..], b"\x00\x01--XYZ-ish");
    // Patch metadata bumps metageneration; ifMetagenerationMatch guards it.
    let r = http
        .patch(format!(
            "{base}/storage/v1/b/upl/o/mp.bin?ifMetagenerationMatch=1"
        ))
        .json(&json!({"contentType": "text/plain", "metadata": {"x": "y"}}))
        .send()
        .await
        .unwrap();
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["metageneration"], "2");
    assert_eq!(o["metadata"]["x"], "y");
    let r = http
        .patch(format!(
            "{base}/storage/v1/b/upl/o/mp.bin?ifMetagenerationMatch=1"
        ))
        .json(&json!({"contentType": "a/b"}))
        .send()
        .await
        .unwrap();
    let (s, b) = error_body(r).await;
    assert_eq!(s, 412);
    assert_eq!(b["error"]["errors"][0]["reason"], "conditionNotMet");
    // Read precondition.
    let r = http
        .get(format!(
            "{base}/storage/v1/b/upl/o/mp.bin?ifGenerationNotMatch={}",
            o["generation"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    // Bucket list.
    let v: Value = http
        .get(format!("{base}/storage/v1/b?project=p"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["items"][0]["name"], "upl");
}

#[tokio::test]
async fn resumable_protocol_by_hand() {
    let (emu, c, http) = setup(cfg()).await;
    let base = emu.base_url();
    bucket(&c, "res").await;
    let r = http
        .post(format!(
            "{base}/upload/storage/v1/b/res/o?uploadType=resumable&name=r.bin&ifGenerationMatch=0"
        ))
        .header("x-upload-content-type", "application/x-r")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let k = 256 * 1024;
    let data = storage_common::pattern(2 * k + 10, 3);
    // Nothing yet: 308 without Range.
    let r = http
        .put(&loc)
        .header("content-range", "bytes */*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert!(r.headers().get("range").is_none());
    // A chunk that is not a multiple of 256 KiB and not the last: 400.
    let r = http
        .put(&loc)
        .header("content-range", format!("bytes 0-{}/*", k))
        .body(data[..=k].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .put(&loc)
        .header("content-range", format!("bytes 0-{}/*", k - 1))
        .body(data[..k].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["range"], format!("bytes=0-{}", k - 1));
    // Overlapping resend of the next chunk from 0 is accepted (already-persisted bytes skipped).
    let r = http
        .put(&loc)
        .header("content-range", format!("bytes 0-{}/*", 2 * k - 1))
        .body(data[..2 * k].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["range"], format!("bytes=0-{}", 2 * k - 1));
    let r = http
        .put(&loc)
        .header("content-range", format!("bytes */{}", data.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    let r = http
        .put(&loc)
        .header(
            "content-range",
            format!("bytes {}-{}/{}", 2 * k, data.len() - 1, data.len()),
        )
        .body(data[2 * k..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["size"], data.len().to_string());
    assert_eq!(o["contentType"], "application/x-r");
    // Status query after completion answers the object.
    let r = http
        .put(&loc)
        .header("content-range", "bytes */*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = c
        .download("res", "r.bin", None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(got[..] == data[..]);
    // A second resumable upload with ifGenerationMatch=0 fails at finalization.
    let r = http
        .post(format!(
            "{base}/upload/storage/v1/b/res/o?uploadType=resumable&name=r.bin&ifGenerationMatch=0"
        ))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = http
        .put(&loc)
        .header("content-range", "bytes 0-2/3")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    // Cancel.
    assert_eq!(http.delete(&loc).send().await.unwrap().status(), 499);
    assert_eq!(
        http.put(&loc)
            .header("content-range", "bytes */*")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn preconditions_are_atomic_under_concurrency() {
    let (_emu, c, _) = setup(cfg()).await;
    bucket(&c, "race").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.insert_object(
                "race",
                "once",
                Bytes::from(format!("writer {i}")),
                &WriteOptions {
                    if_generation_match: Some(0),
                    ..Default::default()
                },
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.status(), Some(412), "{e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one create-if-absent wins");
}

#[tokio::test]
async fn lifecycle_rules_expire_objects_by_the_clock() {
    let (emu, c, _) = setup(cfg()).await;
    bucket(&c, "life").await;
    let lc = Lifecycle {
        rule: vec![LifecycleRule::delete_after_days(2, &["tmp/"])],
    };
    c.patch_bucket_lifecycle("life", Some(&lc)).await.unwrap();
    for n in ["tmp/a", "tmp/b", "keep/a"] {
        c.insert_object(
            "life",
            n,
            Bytes::from_static(b"x"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }
    let names = |v: Vec<sandbox_harness::gcp::storage::Object>| {
        v.into_iter().map(|o| o.name).collect::<Vec<_>>()
    };
    emu.clock().advance(Duration::from_secs(86_400));
    let (v, _) = c.list_all("life", &ListOptions::default()).await.unwrap();
    assert_eq!(names(v), ["keep/a", "tmp/a", "tmp/b"]);
    emu.clock().advance(Duration::from_secs(86_400 + 60));
    let (v, _) = c.list_all("life", &ListOptions::default()).await.unwrap();
    assert_eq!(names(v), ["keep/a"]);
    assert!(
        c.get_object("life", "tmp/a")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Removing the lifecycle stops expiry.
    c.patch_bucket_lifecycle("life", None).await.unwrap();
    assert!(c.get_bucket("life").await.unwrap().lifecycle.is_none());
    emu.clock().advance(Duration::from_secs(30 * 86_400));
    let (v, _) = c.list_all("life", &ListOptions::default()).await.unwrap();
    assert_eq!(names(v), ["keep/a"]);
}

#[tokio::test]
async fn auth_required_answers_401_and_accepts_issued_tokens() {
    let (emu, c, http) = setup(EmulatorConfig {
        auth: AuthMode::Required,
        ..cfg()
    })
    .await;
    let base = emu.base_url();
    let err = c.get_bucket("x").await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let (s, b) = error_body(
        http.get(format!("{base}/storage/v1/b?project=p"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(b["error"]["status"], "UNAUTHENTICATED");
    let r = http
        .get(format!("{base}/storage/v1/b?project=p"))
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Health stays open.
    assert_eq!(
        http.get(format!("{base}/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // JWT bearer grant.
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = format!(
        "{}.{}.{}",
        e.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        e.encode(br#"{"iss":"sa@p.iam.gserviceaccount.com","scope":"https://www.googleapis.com/auth/cloud-platform"}"#),
        e.encode(b"sig")
    );
    let bad = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "not-a-jwt"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let t: Value = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(t["expires_in"].as_u64().unwrap() > 0);
    let tok1 = t["access_token"].as_str().unwrap().to_string();
    let c1 = StorageClient::new(&base, TokenSource::Static(tok1)).unwrap();
    bucket(&c1, "authed").await;
    // Metadata server token: needs the header.
    let url = format!("{base}/computeMetadata/v1/instance/service-accounts/default/token");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 403);
    let t: Value = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c2 = StorageClient::new(
        &base,
        TokenSource::Static(t["access_token"].as_str().unwrap().into()),
    )
    .unwrap();
    c2.insert_object(
        "authed",
        "o",
        Bytes::from_static(b"x"),
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(c2.get_object("authed", "o").await.unwrap().size, 1);
    // Tokens expire by the clock.
    emu.clock().advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        c2.get_object("authed", "o").await.unwrap_err().status(),
        Some(401)
    );
}

#[tokio::test]
async fn injected_faults_are_retried_by_the_client() {
    let mut faults = FaultConfig::default();
    faults.p503.insert("*".into(), 0.3);
    faults.p429.insert("storage.objects.insert".into(), 0.2);
    let (_emu, c, _) = setup(EmulatorConfig { faults, ..cfg() }).await;
    let c = c
        .with_retry(RetryPolicy {
            max_attempts: 40,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            multiplier: 2.0,
            deadline: Duration::from_secs(60),
        })
        .with_chunk_size(256 * 1024)
        .unwrap()
        .with_simple_upload_limit(1024);
    bucket(&c, "flaky").await;
    let data = storage_common::pattern(6 * 256 * 1024 + 77, 11);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(65_536)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let o = c
        .upload_object(
            "flaky",
            "big",
            futures::stream::iter(chunks),
            None,
            &WriteOptions::default(),
        )
        .await
        .expect("resumable upload survives injected faults");
    assert_eq!(o.size, data.len() as u64);
    for i in 0..10 {
        c.insert_object(
            "flaky",
            &format!("s{i}"),
            Bytes::from(vec![i as u8; 100]),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }
    let (v, _) = c
        .list_all(
            "flaky",
            &ListOptions {
                max_results: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(v.len(), 11);
    let got = c
        .download("flaky", "big", None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(got[..] == data[..]);
    // Without retries the faults surface as Network-class errors.
    let plain = c.clone().with_retry(RetryPolicy::none());
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        if let Err(e) = plain.get_object("flaky", "s1").await {
            assert_eq!(e.kind(), sandbox_harness::protocol::ErrorKind::Network);
            seen.insert(e.status());
        }
    }
    assert!(seen.contains(&Some(503)), "{seen:?}");
}

#[tokio::test]
async fn iam_and_service_usage_are_configurable() {
    let (emu, c, http) = setup(EmulatorConfig {
        denied_permissions: BTreeSet::from([
            "storage.objects.delete".to_string(),
            "run.jobs.create".to_string(),
        ]),
        disabled_services: BTreeSet::from(["run.googleapis.com".to_string()]),
        ..cfg()
    })
    .await;
    let base = emu.base_url();
    bucket(&c, "iam").await;
    let p = c
        .test_iam_permissions("iam", &["storage.objects.get", "storage.objects.delete"])
        .await
        .unwrap();
    assert_eq!(p, ["storage.objects.get"]);
    let v: Value = http
        .post(format!("{base}/v1/projects/my-proj:testIamPermissions"))
        .json(&json!({"permissions": ["run.jobs.create", "run.jobs.get"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["permissions"], json!(["run.jobs.get"]));
    let v: Value = http
        .get(format!(
            "{base}/v1/projects/my-proj/services/run.googleapis.com"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "DISABLED");
    let v: Value = http
        .get(format!(
            "{base}/v1/projects/my-proj/services/storage.googleapis.com"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "ENABLED");
    assert_eq!(
        v["name"],
        "projects/my-proj/services/storage.googleapis.com"
    );
}

#[tokio::test]
async fn extra_routes_plug_in_behind_auth() {
    use sandbox_harness::emulator::routes::{Api, RouteTable};
    let emu = Emulator::start_with(
        EmulatorConfig {
            auth: AuthMode::Required,
            ..cfg()
        },
        |ctx| {
            let ctx = ctx.clone();
            RouteTable::new().route(
                axum::http::Method::GET,
                "/v2/ping",
                Api::Other("a test route"),
                move || {
                    let ctx = ctx.clone();
                    async move {
                        ctx.inject("run.ping").await?;
                        Ok::<_, sandbox_harness::emulator::ApiError>(
                            ctx.state_dir().display().to_string(),
                        )
                    }
                },
            )
        },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v2/ping", emu.base_url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let (t, _) = emu.context().auth.issue();
    let r = http.get(&url).bearer_auth(t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        emu.routes()
            .iter()
            .any(|r| r.path == "/v2/ping" && r.api == Api::Other("a test route")),
        "the extra route is listed"
    );
    assert_eq!(
        r.text().await.unwrap(),
        emu.state_dir().display().to_string()
    );
    let dir = emu.state_dir().to_path_buf();
    emu.shutdown().await;
    assert!(!dir.exists(), "the temp state dir is removed");
}
