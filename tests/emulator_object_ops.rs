//! The object operations Cloud Storage FUSE and Google's clients use, over real HTTP:
//! objects.get with alt=json/alt=media, Range and generation; patch of custom metadata (a null
//! value removes a key), update; compose, copy, rewrite and move with source and destination
//! preconditions; deletes with generation and metageneration conditions.
//! Semantics as the JSON API reference describes them
//! (https://cloud.google.com/storage/docs/json_api/v1/objects).

use bytes::Bytes;
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, StorageClient, WriteOptions};
use serde_json::{Value, json};

struct Env {
    _emu: Emulator,
    c: StorageClient,
    http: reqwest::Client,
    base: String,
}

async fn env() -> Env {
    let emu = Emulator::start(EmulatorConfig {
        check_docker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    for b in ["ops", "ops-other"] {
        c.insert_bucket(
            "p",
            &BucketSpec {
                name: b.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let base = format!("{}/storage/v1/b", emu.base_url());
    Env {
        _emu: emu,
        c,
        http: reqwest::Client::new(),
        base,
    }
}

impl Env {
    async fn put(&self, name: &str, data: &[u8]) -> i64 {
        self.c
            .insert_object(
                "ops",
                name,
                Bytes::copy_from_slice(data),
                &WriteOptions::default(),
            )
            .await
            .unwrap()
            .generation
    }

    async fn body(&self, bucket: &str, name: &str) -> Vec<u8> {
        self.c
            .download(bucket, name, None)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .to_vec()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn get_reads_metadata_or_media_with_ranges_and_generations() {
    let e = env().await;
    let g = e.put("dir/f", b"0123456789").await;
    let url = format!("{}/ops/o/dir%2Ff", e.base);
    let v: Value = e
        .http
        .get(format!("{url}?alt=json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["size"], "10");
    let r = e
        .http
        .get(format!("{url}?alt=media&generation={g}"))
        .header("range", "bytes=3-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["x-goog-generation"], g.to_string().as_str());
    assert_eq!(&r.bytes().await.unwrap()[..], b"345");
    // Another generation: the emulator keeps only the live one.
    let r = e
        .http
        .get(format!("{url}?alt=media&generation={}", g - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = e.http.get(format!("{url}?alt=xml")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn patch_merges_custom_metadata_and_null_removes_a_key() {
    let e = env().await;
    e.put("m", b"x").await;
    let url = format!("{}/ops/o/m", e.base);
    let patch = |body: Value, q: &'static str| {
        let r = e.http.patch(format!("{url}{q}")).json(&body).send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = patch(json!({"metadata": {"a": "1", "b": "2"}}), "").await;
    assert_eq!(s, 200);
    assert_eq!(v["metadata"], json!({"a": "1", "b": "2"}));
    assert_eq!(v["metageneration"], "2");
    let (_, v) = patch(json!({"metadata": {"a": null, "c": "3"}}), "").await;
    assert_eq!(v["metadata"], json!({"b": "2", "c": "3"}));
    // A stale metageneration precondition fails and changes nothing.
    let (s, _) = patch(json!({"metadata": {"z": "9"}}), "?ifMetagenerationMatch=2").await;
    assert_eq!(s, 412);
    let (s, v) = patch(json!({"contentType": 7}), "").await;
    assert_eq!((s, v["error"]["code"].as_u64()), (400, Some(400)));
    // update (PUT) replaces the writable metadata.
    let r = e
        .http
        .put(&url)
        .json(&json!({"contentType": "text/plain", "acl": []}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["contentType"], "text/plain");
    assert!(v.get("metadata").is_none(), "{v}");
    assert_eq!(v["metageneration"], "4");
}

#[tokio::test]
async fn compose_concatenates_with_crc32c_and_source_preconditions() {
    let e = env().await;
    let g1 = e.put("p1", b"hello ").await;
    e.put("p2", b"world").await;
    let (s, _) = e
        .post(
            "ops/o/whole/compose",
            json!({"sourceObjects": [
                {"name": "p1", "objectPreconditions": {"ifGenerationMatch": (g1 + 1).to_string()}},
                {"name": "p2"}]}),
        )
        .await;
    assert_eq!(s, 412);
    let (s, v) = e
        .post(
            "ops/o/whole/compose?ifGenerationMatch=0",
            json!({"sourceObjects": [
                {"name": "p1", "generation": g1.to_string()}, {"name": "p2"}],
             "destination": {"contentType": "text/plain", "metadata": {"k": "v"}}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["size"], "11");
    assert_eq!(v["componentCount"], 2);
    assert_eq!(v["crc32c"], "yZRlqg==", "crc32c of 'hello world'");
    assert!(v.get("md5Hash").is_none(), "composite objects have no MD5");
    assert_eq!(e.body("ops", "whole").await, b"hello world");
    // A composite of a composite counts its components.
    let (_, v) = e
        .post(
            "ops/o/twice/compose",
            json!({"sourceObjects": [{"name": "whole"}, {"name": "p1"}]}),
        )
        .await;
    assert_eq!(v["componentCount"], 3);
    let many: Vec<Value> = (0..33).map(|_| json!({"name": "p1"})).collect();
    let (s, _) = e
        .post("ops/o/big/compose", json!({"sourceObjects": many}))
        .await;
    assert_eq!(s, 400, "at most 32 sources");
}

#[tokio::test]
async fn copy_rewrite_and_move_with_preconditions() {
    let e = env().await;
    let g = e.put("src", b"payload").await;
    // copyTo another bucket, overriding the content type.
    let (s, v) = e
        .post(
            "ops/o/src/copyTo/b/ops-other/o/dst%2Fcopy?ifGenerationMatch=0",
            json!({"contentType": "application/x-copied"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["bucket"], "ops-other");
    assert_eq!(v["contentType"], "application/x-copied");
    assert_eq!(e.body("ops-other", "dst/copy").await, b"payload");
    // The destination exists now: ifGenerationMatch=0 fails.
    let (s, _) = e
        .post(
            "ops/o/src/copyTo/b/ops-other/o/dst%2Fcopy?ifGenerationMatch=0",
            json!({}),
        )
        .await;
    assert_eq!(s, 412);
    // rewriteTo finishes in one call.
    let (s, v) = e
        .post(
            &format!("ops/o/src/rewriteTo/b/ops/o/rw?ifSourceGenerationMatch={g}"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["done"], true);
    assert_eq!(v["totalBytesRewritten"], "7");
    assert_eq!(v["resource"]["name"], "rw");
    let (s, _) = e
        .post(
            &format!("ops/o/src/rewriteTo/b/ops/o/rw2?sourceGeneration={}", g + 1),
            json!({}),
        )
        .await;
    assert_eq!(s, 404, "no such source generation");
    // moveTo: the source is gone and the destination holds its bytes, atomically.
    let (s, _) = e
        .post(
            "ops/o/rw/moveTo/o/moved?ifSourceMetagenerationMatch=2",
            json!({}),
        )
        .await;
    assert_eq!(s, 412);
    let (s, v) = e
        .post("ops/o/rw/moveTo/o/moved?ifGenerationMatch=0", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "moved");
    assert!(
        e.c.get_object("ops", "rw")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(e.body("ops", "moved").await, b"payload");
    // The source of a copy is unchanged by it.
    assert_eq!(e.body("ops", "src").await, b"payload");
}

#[tokio::test]
async fn deletes_honour_generation_and_metageneration() {
    let e = env().await;
    let g = e.put("d", b"x").await;
    let url = format!("{}/ops/o/d", e.base);
    let del = |q: String| {
        let r = e.http.delete(format!("{url}{q}")).send();
        async move { r.await.unwrap().status().as_u16() }
    };
    assert_eq!(del(format!("?generation={}", g + 1)).await, 404);
    assert_eq!(del("?ifMetagenerationMatch=2".into()).await, 412);
    assert_eq!(del(format!("?ifGenerationNotMatch={g}")).await, 412);
    assert_eq!(
        del(format!("?generation={g}&ifMetagenerationMatch=1")).await,
        204
    );
    assert_eq!(del(String::new()).await, 404);
}
