//! The emulator's flat object store, over real HTTP: any valid Cloud Storage object name
//! (https://cloud.google.com/storage/docs/objects#naming, "Object naming requirements"),
//! `a` beside `a/b` and folder placeholders ending in `/`; listing with delimiter,
//! includeTrailingDelimiter, startOffset/endOffset and matchGlob; every object and its bytes
//! found again after a restart on the same state dir; no half-written object after a crash.

mod storage_common;

use std::path::Path;

use bytes::Bytes;
use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::storage::{BucketSpec, ListOptions, StorageClient, WriteOptions};
use serde_json::{Value, json};

fn cfg() -> EmulatorConfig {
    EmulatorConfig {
        check_docker: false,
        ..Default::default()
    }
}

async fn start(cfg: EmulatorConfig) -> (Emulator, StorageClient) {
    let emu = Emulator::start(cfg).await.unwrap();
    let c = StorageClient::new(&emu.base_url(), TokenSource::Anonymous).unwrap();
    (emu, c)
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

async fn put(c: &StorageClient, b: &str, name: &str, data: &[u8]) {
    c.insert_object(
        b,
        name,
        Bytes::copy_from_slice(data),
        &WriteOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name:?}: {e}"));
}

async fn get(c: &StorageClient, b: &str, name: &str) -> Vec<u8> {
    c.download(b, name, None)
        .await
        .unwrap_or_else(|e| panic!("{name:?}: {e}"))
        .collect()
        .await
        .unwrap()
        .to_vec()
}

/// Names a file tree cannot hold side by side are all separate objects.
const NAMES: &[&str] = &[
    "a",
    "a/",
    "a/b",
    "a/b/",
    "a/b/c",
    "a//b",
    "/leading",
    "./dot",
    "x/../y",
    "sp ace/\u{fc}n\u{ef}c\u{f6}de",
    "nul\0byte",
];

#[tokio::test]
async fn any_valid_name_is_an_object_and_a_beside_a_slash_b_coexist() {
    let (_emu, c) = start(cfg()).await;
    bucket(&c, "flat").await;
    let long = "L".repeat(1024);
    let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    names.push(long);
    for (i, n) in names.iter().enumerate() {
        put(&c, "flat", n, format!("body {i}").as_bytes()).await;
    }
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            get(&c, "flat", n).await,
            format!("body {i}").as_bytes(),
            "{n:?}"
        );
        assert_eq!(c.get_object("flat", n).await.unwrap().name, *n);
    }
    let (all, _) = c.list_all("flat", &ListOptions::default()).await.unwrap();
    let mut want = names.clone();
    want.sort();
    assert_eq!(
        all.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        want,
        "listing is in byte order and holds every name"
    );
    // Deleting `a/b` leaves `a`, `a/` and `a/b/c` alone.
    c.delete_object("flat", "a/b", &WriteOptions::default())
        .await
        .unwrap();
    assert!(
        c.get_object("flat", "a/b")
            .await
            .unwrap_err()
            .is_not_found()
    );
    for n in ["a", "a/", "a/b/", "a/b/c"] {
        c.get_object("flat", n).await.unwrap();
    }
}

#[tokio::test]
async fn listing_honours_delimiter_trailing_delimiter_offsets_and_glob() {
    let (emu, c) = start(cfg()).await;
    bucket(&c, "lst").await;
    for n in [
        "d/",
        "d/f1",
        "d/f2.txt",
        "d/sub/",
        "d/sub/g",
        "d/sub/h.txt",
        "d/t/x",
        "e",
    ] {
        put(&c, "lst", n, b"x").await;
    }
    let (items, prefixes) = c
        .list_all(
            "lst",
            &ListOptions {
                prefix: Some("d/".into()),
                delimiter: Some("/".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let names = |v: &[sandbox_harness::gcp::storage::Object]| {
        v.iter().map(|o| o.name.clone()).collect::<Vec<_>>()
    };
    // The placeholder `d/` matches the prefix exactly and has no delimiter after it: an item.
    assert_eq!(names(&items), ["d/", "d/f1", "d/f2.txt"]);
    assert_eq!(prefixes, ["d/sub/", "d/t/"]);
    let http = reqwest::Client::new();
    let base = emu.base_url();
    let list = |q: &'static str| {
        let http = http.clone();
        let url = format!("{base}/storage/v1/b/lst/o?{q}");
        async move {
            let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            let items: Vec<String> = v["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| o["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            let prefixes: Vec<String> = v["prefixes"]
                .as_array()
                .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (items, prefixes)
        }
    };
    // includeTrailingDelimiter: objects ending in the delimiter right after the prefix part are
    // listed as items as well as prefixes (objects.list reference, includeTrailingDelimiter).
    let (i, p) = list("prefix=d/&delimiter=/&includeTrailingDelimiter=true").await;
    assert_eq!(i, ["d/", "d/f1", "d/f2.txt", "d/sub/"]);
    assert_eq!(p, ["d/sub/", "d/t/"]);
    // startOffset (inclusive) and endOffset (exclusive).
    let (i, _) = list("startOffset=d/f2.txt&endOffset=d/t/x").await;
    assert_eq!(i, ["d/f2.txt", "d/sub/", "d/sub/g", "d/sub/h.txt"]);
    // matchGlob: `*` stays within one part, `**` crosses `/`
    // (https://cloud.google.com/storage/docs/json_api/v1/objects/list#list-objects-and-prefixes-using-glob).
    let (i, _) = list("matchGlob=d/*.txt").await;
    assert_eq!(i, ["d/f2.txt"]);
    let (i, _) = list("matchGlob=d/**.txt").await;
    assert_eq!(i, ["d/f2.txt", "d/sub/h.txt"]);
    // Pages with a delimiter never repeat a prefix.
    let (items, prefixes) = c
        .list_all(
            "lst",
            &ListOptions {
                prefix: Some("d/".into()),
                delimiter: Some("/".into()),
                max_results: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(names(&items), ["d/", "d/f1", "d/f2.txt"]);
    assert_eq!(prefixes, ["d/sub/", "d/t/"]);
    let r = http
        .get(format!("{base}/storage/v1/b/lst/o?matchGlob=%5B"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn every_object_survives_a_restart_on_the_same_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let with_dir = || EmulatorConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    };
    let big = storage_common::pattern(3 * 1024 * 1024 + 17, 5);
    let before = {
        let (emu, c) = start(with_dir()).await;
        bucket(&c, "keep").await;
        for (i, n) in NAMES.iter().enumerate() {
            put(&c, "keep", n, format!("v{i}").as_bytes()).await;
        }
        let small = c.clone().with_simple_upload_limit(1024);
        let chunks: Vec<Result<Bytes, std::io::Error>> = big
            .chunks(300_000)
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        small
            .upload_object(
                "keep",
                "big/blob",
                futures::stream::iter(chunks),
                None,
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        let r = reqwest::Client::new()
            .patch(format!("{}/storage/v1/b/keep/o/a%2F", emu.base_url()))
            .json(&json!({"metadata": {"kind": "folder"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        c.delete_object("keep", "x/../y", &WriteOptions::default())
            .await
            .unwrap();
        let (all, _) = c.list_all("keep", &ListOptions::default()).await.unwrap();
        emu.shutdown().await;
        all
    };
    let (_emu, c) = start(with_dir()).await;
    let (after, _) = c.list_all("keep", &ListOptions::default()).await.unwrap();
    assert_eq!(
        after, before,
        "names, generations, hashes and metadata survive"
    );
    assert!(
        after.iter().all(|o| o.name != "x/../y"),
        "a delete survives"
    );
    assert_eq!(
        after.iter().find(|o| o.name == "a/").unwrap().metadata["kind"],
        "folder"
    );
    for (i, n) in NAMES.iter().enumerate().filter(|(_, n)| **n != "x/../y") {
        assert_eq!(
            get(&c, "keep", n).await,
            format!("v{i}").as_bytes(),
            "{n:?}"
        );
    }
    assert!(
        get(&c, "keep", "big/blob").await == big,
        "3 MB object bytes equal"
    );
    // The store holds one content file per live object, nothing else.
    let blobs = files_under(&dir.path().join("storage/buckets/keep/blobs"));
    assert_eq!(blobs.len(), after.len());
}

#[tokio::test]
async fn a_crash_mid_upload_leaves_no_half_written_object() {
    let dir = tempfile::tempdir().unwrap();
    let with_dir = || EmulatorConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    };
    let (emu, c) = start(with_dir()).await;
    bucket(&c, "crash").await;
    put(&c, "crash", "obj", b"old content").await;
    // A resumable upload that replaces `obj` gets one chunk in, then the emulator goes away.
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{}/upload/storage/v1/b/crash/o?uploadType=resumable&name=obj",
            emu.base_url()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let k = 256 * 1024;
    let r = http
        .put(&loc)
        .header("content-range", format!("bytes 0-{}/*", k - 1))
        .body(vec![7u8; k])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    drop(emu);
    // What a crash between the steps of a commit leaves behind: content renamed into place
    // whose index entry was never written, and an index entry's temp file.
    let root = dir.path().join("storage");
    std::fs::write(root.join("buckets/crash/blobs/orphan"), b"half").unwrap();
    std::fs::write(root.join(".tmp/entry"), b"{\"name\":").unwrap();
    let (_emu, c2) = start(with_dir()).await;
    assert_eq!(get(&c2, "crash", "obj").await, b"old content");
    let (all, _) = c2.list_all("crash", &ListOptions::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(!root.join("buckets/crash/blobs/orphan").exists());
    assert!(files_under(&root.join(".tmp")).is_empty());
    assert!(files_under(&root.join(".uploads")).is_empty());
    drop(c);
}
