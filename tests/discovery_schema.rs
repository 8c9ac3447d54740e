//! Every emulator route against Google's own API descriptions.
//!
//! The discovery documents in `fixtures/discovery/` (storage v1, run v2, iam v1, serviceusage
//! v1, cloudresourcemanager v1, from the google-api-python-client wheel; see its README) are
//! the reference. The test:
//! 1. takes the list of routes from the emulator itself (`Emulator::routes()`, filled by the
//!    route tables every router is built from, so a new route cannot be missed) and checks
//!    that each Google route names methods of a discovery document whose HTTP method and path
//!    template match the route;
//! 2. drives every route through a recording proxy, with the harness's own clients
//!    (`gcp::storage`, `gcp::run`, `gcp::iam`) wherever they cover the call and raw HTTP for
//!    the rest, and fails unless every (route, method) pair was exercised;
//! 3. validates every JSON request body sent and every JSON response body returned against
//!    the method's request/response schema, error bodies against Google's error shape, and
//!    every query parameter sent against the method's parameters.
//!
//! Validation rules (discovery documents mark few fields required):
//! - an object may only hold keys listed in its `properties`, unless it has
//!   `additionalProperties`, whose schema then applies to the other values; unknown key =
//!   failure;
//! - `type` must match (`string`, `integer`, `number`, `boolean`, `array`, `object`; `any`
//!   takes anything); `string` with `format` `int64`/`uint64` must parse as such (Google
//!   encodes 64-bit integers as strings), `date-time`/`google-datetime` as RFC 3339,
//!   `google-duration` as seconds with an `s` suffix; `enum` values must be listed;
//! - required: a property with `"required": true`, or whose `annotations.required` lists the
//!   method, must be present in that method's request body (the documents put requirements
//!   on requests; Run v2's "Required." prose in descriptions is not machine-readable and is
//!   not applied);
//! - in the request body of a PATCH, `null` is accepted for any field: patch semantics, where
//!   null clears the field (https://cloud.google.com/storage/docs/json_api/v1/how-tos/performance#patch).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use regex::Regex;
use sandbox_harness::emulator::routes::{Api, RouteSpec};
use sandbox_harness::emulator::{EmulatorConfig, LocalCloud};
use sandbox_harness::gcp::auth::TokenSource;
use sandbox_harness::gcp::iam::{ResourceManagerClient, ServiceUsageClient};
use sandbox_harness::gcp::retry::RetryPolicy;
use sandbox_harness::gcp::run::{
    Container, ContainerOverride, Job, Overrides, ResourceRequirements, RunClient,
};
use sandbox_harness::gcp::storage::{
    BucketSpec, Lifecycle, LifecycleRule, ListOptions, StorageClient, WriteOptions,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------- discovery documents

const DOCS: &[&str] = &[
    "storage.v1",
    "run.v2",
    "iam.v1",
    "serviceusage.v1",
    "cloudresourcemanager.v1",
];

struct Doc {
    name: String,
    json: Value,
}

/// One method of a discovery document.
#[derive(Clone)]
struct DMethod {
    doc: usize,
    id: String,
    http_method: String,
    /// Anchored regexes of the concrete paths it is served on.
    paths: Vec<Regex>,
    /// Media upload paths take any method (resumable chunks, status queries, cancel).
    upload_paths: Vec<Regex>,
    /// Concrete sample paths of its templates (every variable replaced by a word).
    samples: Vec<String>,
    request: Option<String>,
    response: Option<String>,
    /// Query parameters it takes (its own and the document's common ones).
    params: BTreeSet<String>,
}

fn load_docs() -> Vec<Doc> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/discovery");
    DOCS.iter()
        .map(|n| {
            let p = dir.join(format!("{n}.json"));
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            Doc {
                name: n.to_string(),
                json: serde_json::from_str(&text).unwrap(),
            }
        })
        .collect()
}

/// `{x}` -> one segment, `{+x}` -> the rest (reserved expansion).
fn template_regex(t: &str) -> Regex {
    let mut re = String::from("^");
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        re.push_str(&regex::escape(&rest[..i]));
        let j = rest[i..].find('}').unwrap() + i;
        let var = &rest[i + 1..j];
        re.push_str(if var.starts_with('+') || var.starts_with('*') {
            ".+"
        } else {
            "[^/]+"
        });
        rest = &rest[j + 1..];
    }
    re.push_str(&regex::escape(rest));
    re.push('$');
    Regex::new(&re).unwrap()
}

fn methods(docs: &[Doc]) -> Vec<DMethod> {
    fn walk(doc: usize, d: &Doc, res: &Value, out: &mut Vec<DMethod>) {
        let service = d.json["servicePath"].as_str().unwrap_or("");
        if let Some(ms) = res["methods"].as_object() {
            for m in ms.values() {
                let tpl = m["flatPath"].as_str().or(m["path"].as_str()).unwrap();
                let mut paths = vec![template_regex(&format!("/{service}{tpl}"))];
                let samples = vec![sample(&format!("/{service}{tpl}"))];
                if m["useMediaDownloadService"].as_bool() == Some(true) {
                    paths.push(template_regex(&format!("/download/{service}{tpl}")));
                }
                let upload_paths = m["mediaUpload"]["protocols"]
                    .as_object()
                    .map(|p| {
                        p.values()
                            .filter_map(|v| v["path"].as_str())
                            .map(template_regex)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut params: BTreeSet<String> = m["parameters"]
                    .as_object()
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                if let Some(common) = d.json["parameters"].as_object() {
                    params.extend(common.keys().cloned());
                }
                out.push(DMethod {
                    params,
                    doc,
                    id: m["id"].as_str().unwrap().to_string(),
                    http_method: m["httpMethod"].as_str().unwrap().to_string(),
                    paths,
                    upload_paths,
                    samples,
                    request: m["request"]["$ref"].as_str().map(str::to_string),
                    response: m["response"]["$ref"].as_str().map(str::to_string),
                });
            }
        }
        if let Some(rs) = res["resources"].as_object() {
            for r in rs.values() {
                walk(doc, d, r, out);
            }
        }
    }
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        walk(i, d, &d.json, &mut out);
    }
    out
}

// ---------------------------------------------------------------- the validator

struct Validator<'a> {
    doc: &'a Value,
    method: &'a str,
    request: bool,
    patch: bool,
    errors: Vec<String>,
}

impl Validator<'_> {
    fn fail(&mut self, at: &str, what: String) {
        self.errors.push(format!("{at}: {what}"));
    }

    fn check(&mut self, schema: &Value, v: &Value, at: &str) {
        if self.patch && v.is_null() {
            return;
        }
        if let Some(r) = schema["$ref"].as_str() {
            let s = &self.doc["schemas"][r];
            if s.is_null() {
                self.fail(at, format!("unknown schema {r}"));
                return;
            }
            return self.check(s, v, at);
        }
        let ty = schema["type"]
            .as_str()
            .unwrap_or(if schema["properties"].is_object() {
                "object"
            } else {
                "any"
            });
        if let Some(e) = schema["enum"].as_array()
            && !e.contains(v)
        {
            self.fail(at, format!("{v} is not one of the enum values"));
        }
        match ty {
            "any" => {}
            "string" => match v.as_str() {
                None => self.fail(at, format!("expected a string, got {v}")),
                Some(s) => match schema["format"].as_str() {
                    Some("int64") if s.parse::<i64>().is_err() => {
                        self.fail(at, format!("{s:?} is not an int64"))
                    }
                    Some("uint64") if s.parse::<u64>().is_err() => {
                        self.fail(at, format!("{s:?} is not a uint64"))
                    }
                    Some("date-time") | Some("google-datetime")
                        if chrono::DateTime::parse_from_rfc3339(s).is_err() =>
                    {
                        self.fail(at, format!("{s:?} is not an RFC 3339 time"))
                    }
                    Some("google-duration")
                        if s.strip_suffix('s')
                            .is_none_or(|n| n.parse::<f64>().is_err()) =>
                    {
                        self.fail(at, format!("{s:?} is not a duration"))
                    }
                    _ => {}
                },
            },
            "integer" => {
                let ok = match schema["format"].as_str() {
                    Some("int32") => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                    Some("uint32") => v.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
                    _ => v.is_i64() || v.is_u64(),
                };
                if !ok {
                    self.fail(at, format!("expected an integer, got {v}"));
                }
            }
            "number" => {
                if !v.is_number() {
                    self.fail(at, format!("expected a number, got {v}"));
                }
            }
            "boolean" => {
                if !v.is_boolean() {
                    self.fail(at, format!("expected a boolean, got {v}"));
                }
            }
            "array" => match v.as_array() {
                None => self.fail(at, format!("expected an array, got {v}")),
                Some(a) => {
                    for (i, x) in a.iter().enumerate() {
                        self.check(&schema["items"], x, &format!("{at}[{i}]"));
                    }
                }
            },
            "object" => match v.as_object() {
                None => self.fail(at, format!("expected an object, got {v}")),
                Some(o) => {
                    let props = schema["properties"].as_object();
                    let extra = &schema["additionalProperties"];
                    for (k, x) in o {
                        match props.and_then(|p| p.get(k)) {
                            Some(ps) => self.check(ps, x, &format!("{at}.{k}")),
                            None if extra.is_object() => self.check(extra, x, &format!("{at}.{k}")),
                            None => self.fail(at, format!("unknown field {k:?}")),
                        }
                    }
                    if let Some(p) = props {
                        for (k, ps) in p {
                            let required = ps["required"].as_bool() == Some(true)
                                || (self.request
                                    && ps["annotations"]["required"]
                                        .as_array()
                                        .is_some_and(|a| a.iter().any(|m| m == self.method)));
                            if required && !o.contains_key(k) {
                                self.fail(at, format!("missing required field {k:?}"));
                            }
                        }
                    }
                }
            },
            other => self.fail(at, format!("schema type {other} is not handled")),
        }
    }
}

/// `patch`: the body of a PATCH request (null clears a field).
fn validate(
    doc: &Doc,
    method: &str,
    schema: &str,
    v: &Value,
    request: bool,
    patch: bool,
) -> Vec<String> {
    let mut val = Validator {
        doc: &doc.json,
        method,
        request,
        patch,
        errors: Vec::new(),
    };
    val.check(&json!({"$ref": schema}), v, schema);
    val.errors
}

/// Google's JSON error body.
fn error_shape_errors(v: &Value) -> Vec<String> {
    let mut e = Vec::new();
    let err = &v["error"];
    if !err["code"].is_u64() {
        e.push(format!("error.code is not a number: {v}"));
    }
    if !err["message"].is_string() {
        e.push(format!("error.message is not a string: {v}"));
    }
    if !err["status"].is_string() {
        e.push(format!("error.status is not a string: {v}"));
    }
    if let Some(o) = v.as_object()
        && o.keys().any(|k| k != "error")
    {
        e.push(format!("unexpected top-level keys: {v}"));
    }
    e
}

#[test]
fn the_validator_catches_unknown_fields_wrong_types_and_missing_required_fields() {
    let docs = load_docs();
    let storage = &docs[0];
    let ok = json!({"name": "b", "location": "US", "metageneration": "1"});
    assert!(
        validate(
            storage,
            "storage.buckets.insert",
            "Bucket",
            &ok,
            true,
            false
        )
        .is_empty()
    );
    let unknown = json!({"name": "b", "colour": "red"});
    assert!(
        validate(
            storage,
            "storage.buckets.insert",
            "Bucket",
            &unknown,
            true,
            false
        )
        .iter()
        .any(|e| e.contains("unknown field \"colour\""))
    );
    let wrong = json!({"name": "b", "metageneration": 1});
    assert!(
        validate(
            storage,
            "storage.buckets.insert",
            "Bucket",
            &wrong,
            true,
            false
        )
        .iter()
        .any(|e| e.contains("expected a string"))
    );
    let not64 = json!({"name": "b", "metageneration": "one"});
    assert!(
        !validate(
            storage,
            "storage.buckets.insert",
            "Bucket",
            &not64,
            true,
            false
        )
        .is_empty()
    );
    let missing = json!({"location": "US"});
    assert!(
        validate(
            storage,
            "storage.buckets.insert",
            "Bucket",
            &missing,
            true,
            false
        )
        .iter()
        .any(|e| e.contains("missing required field \"name\"")),
        "Bucket.name is annotated required for storage.buckets.insert"
    );
    let clear = json!({"lifecycle": null});
    assert!(
        validate(
            storage,
            "storage.buckets.patch",
            "Bucket",
            &clear,
            true,
            true
        )
        .is_empty()
    );
    assert!(
        !validate(
            storage,
            "storage.buckets.insert",
            "Bucket",
            &clear,
            true,
            false
        )
        .is_empty()
    );
    assert!(!error_shape_errors(&json!({"error": {"code": "400"}})).is_empty());
}

// ---------------------------------------------------------------- the recording proxy

#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    path: String,
    query: String,
    req_type: String,
    req_body: Bytes,
    status: u16,
    resp_type: String,
    resp_body: Bytes,
}

#[derive(Clone)]
struct Proxy {
    target: String,
    public: Arc<Mutex<String>>,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<Exchange>>>,
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap();
    let pq = parts
        .uri
        .path_and_query()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default();
    let mut r = p
        .http
        .request(parts.method.clone(), format!("{}{pq}", p.target))
        .body(body.clone());
    for (k, v) in &parts.headers {
        if k != "host" {
            r = r.header(k, v);
        }
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let rb = resp.bytes().await.unwrap();
    let ctype = |h: &axum::http::HeaderMap| {
        h.get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    p.log.lock().unwrap().push(Exchange {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        req_type: ctype(&parts.headers),
        req_body: body,
        status: status.as_u16(),
        resp_type: ctype(&headers),
        resp_body: rb.clone(),
    });
    let mut out = Response::builder().status(status);
    let public = p.public.lock().unwrap().clone();
    for (k, v) in &headers {
        if k == "content-length" || k == "transfer-encoding" {
            continue;
        }
        if k == "location" {
            let l = v.to_str().unwrap().replace(&p.target, &public);
            out = out.header(k, l);
        } else {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(rb)).unwrap()
}

async fn start_proxy(target: &str) -> (String, Arc<Mutex<Vec<Exchange>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let p = Proxy {
        target: target.to_string(),
        public: Arc::new(Mutex::new(public.clone())),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        log: log.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(p);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (public, log)
}

// ---------------------------------------------------------------- driving every route

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(1),
        multiplier: 2.0,
        deadline: Duration::from_secs(60),
    }
}

async fn drive_storage(base: &str) {
    let c = StorageClient::new(base, TokenSource::Anonymous)
        .unwrap()
        .with_retry(fast_retry());
    let http = reqwest::Client::new();
    let bucket = "schema-bucket";
    c.insert_bucket(
        "schema-project",
        &BucketSpec {
            name: bucket.into(),
            location: Some("US-CENTRAL1".into()),
            storage_class: Some("STANDARD".into()),
            lifecycle: Some(Lifecycle {
                rule: vec![LifecycleRule::delete_after_days(7, &["sessions/"])],
            }),
        },
    )
    .await
    .unwrap();
    c.get_bucket(bucket).await.unwrap();
    c.patch_bucket_lifecycle(bucket, None).await.unwrap();
    c.test_iam_permissions(bucket, &["storage.objects.get"])
        .await
        .unwrap();
    c.get_bucket_iam_policy(bucket).await.unwrap();
    let ok = |r: &reqwest::Response, what: &str| {
        assert!(r.status().is_success(), "{what}: {}", r.status());
    };
    let r = http
        .get(format!("{base}/storage/v1/b?project=schema-project"))
        .send()
        .await
        .unwrap();
    ok(&r, "buckets.list");
    let r = http
        .get(format!("{base}/storage/v1/b/{bucket}/storageLayout"))
        .send()
        .await
        .unwrap();
    ok(&r, "storageLayout");
    // Objects through our client: multipart, resumable (known and unknown length), get,
    // download, list, delete, with preconditions and custom metadata.
    let opts = WriteOptions {
        content_type: Some("text/plain".into()),
        metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
        if_generation_match: Some(0),
        ..Default::default()
    };
    let o = c
        .insert_object(bucket, "dir/a.txt", Bytes::from_static(b"hello"), &opts)
        .await
        .unwrap();
    let small = c.clone().with_simple_upload_limit(16);
    let data = vec![5u8; 300 * 1024];
    small
        .upload_object(
            bucket,
            "dir/big.bin",
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(data.clone()))]),
            Some(data.len() as u64),
            &opts,
        )
        .await
        .unwrap();
    small
        .upload_object(
            bucket,
            "dir/",
            futures::stream::iter(Vec::<Result<Bytes, std::io::Error>>::new()),
            None,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    c.get_object(bucket, "dir/a.txt").await.unwrap();
    c.download(bucket, "dir/a.txt", Some((1, Some(3))))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    c.list_all(
        bucket,
        &ListOptions {
            prefix: Some("dir/".into()),
            delimiter: Some("/".into()),
            max_results: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The rest by hand: media upload, both upload paths, cancel, download path, patch,
    // update, compose, copy, rewrite, list parameters.
    let r = http
        .post(format!(
            "{base}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=m.txt"
        ))
        .body("media")
        .send()
        .await
        .unwrap();
    ok(&r, "media upload");
    let r = http
        .post(format!(
            "{base}/resumable/upload/storage/v1/b/{bucket}/o?uploadType=resumable"
        ))
        .json(&json!({"name": "r.txt", "contentType": "text/plain"}))
        .send()
        .await
        .unwrap();
    ok(&r, "resumable start");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = http
        .put(&loc)
        .header("content-range", "bytes 0-3/4")
        .body("abcd")
        .send()
        .await
        .unwrap();
    ok(&r, "resumable put");
    for path in ["upload", "resumable/upload"] {
        let r = http
            .post(format!(
                "{base}/{path}/storage/v1/b/{bucket}/o?uploadType=resumable&name=gone"
            ))
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(http.delete(&loc).send().await.unwrap().status(), 499);
    }
    let r = http
        .get(format!(
            "{base}/download/storage/v1/b/{bucket}/o/m.txt?alt=media"
        ))
        .send()
        .await
        .unwrap();
    ok(&r, "download path");
    let r = http
        .get(format!("{base}/storage/v1/b/{bucket}/o/m.txt?alt=json"))
        .send()
        .await
        .unwrap();
    ok(&r, "alt=json");
    let r = http
        .patch(format!(
            "{base}/storage/v1/b/{bucket}/o/dir%2Fa.txt?ifMetagenerationMatch=1"
        ))
        .json(&json!({"metadata": {"k": null, "x": "y"}, "cacheControl": "no-cache"}))
        .send()
        .await
        .unwrap();
    ok(&r, "patch");
    let r = http
        .put(format!("{base}/storage/v1/b/{bucket}/o/m.txt"))
        .json(&json!({"contentType": "text/x-updated", "acl": []}))
        .send()
        .await
        .unwrap();
    ok(&r, "update");
    let r = http
        .post(format!("{base}/storage/v1/b/{bucket}/o/composed/compose"))
        .json(&json!({
            "kind": "storage#composeRequest",
            "sourceObjects": [
                {"name": "m.txt", "objectPreconditions": {"ifGenerationMatch": "0"}},
                {"name": "r.txt"}
            ],
            "destination": {"contentType": "text/plain"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412, "a failed source precondition");
    let r = http
        .post(format!("{base}/storage/v1/b/{bucket}/o/composed/compose"))
        .json(&json!({
            "sourceObjects": [{"name": "m.txt"}, {"name": "r.txt"}],
            "destination": {"contentType": "text/plain", "metadata": {"c": "1"}}
        }))
        .send()
        .await
        .unwrap();
    ok(&r, "compose");
    let r = http
        .post(format!(
            "{base}/storage/v1/b/{bucket}/o/composed/copyTo/b/{bucket}/o/copied?ifGenerationMatch=0&ifSourceGenerationMatch={}",
            "0"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = http
        .post(format!(
            "{base}/storage/v1/b/{bucket}/o/composed/copyTo/b/{bucket}/o/copied?ifGenerationMatch=0"
        ))
        .json(&json!({"contentType": "application/x-copy"}))
        .send()
        .await
        .unwrap();
    ok(&r, "copy");
    let r = http
        .post(format!(
            "{base}/storage/v1/b/{bucket}/o/copied/rewriteTo/b/{bucket}/o/dir%2Frewritten"
        ))
        .send()
        .await
        .unwrap();
    ok(&r, "rewrite");
    let r = http
        .post(format!(
            "{base}/storage/v1/b/{bucket}/o/dir%2Frewritten/moveTo/o/dir%2Fmoved?ifGenerationMatch=0"
        ))
        .send()
        .await
        .unwrap();
    ok(&r, "move");
    for q in [
        "delimiter=/&includeTrailingDelimiter=true&prefix=dir/",
        "startOffset=c&endOffset=n&maxResults=2",
        "matchGlob=**.txt",
    ] {
        let r = http
            .get(format!("{base}/storage/v1/b/{bucket}/o?{q}"))
            .send()
            .await
            .unwrap();
        ok(&r, q);
    }
    // Errors come back in Google's error shape.
    let r = http
        .get(format!("{base}/storage/v1/b/{bucket}/o/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    c.delete_object(
        bucket,
        "dir/a.txt",
        &WriteOptions {
            if_generation_match: Some(o.generation + 1),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    let (all, _) = c.list_all(bucket, &ListOptions::default()).await.unwrap();
    for o in all {
        c.delete_object(bucket, &o.name, &WriteOptions::default())
            .await
            .unwrap();
    }
    c.delete_bucket(bucket).await.unwrap();
}

async fn drive_run(base: &str, image: &str) {
    let c = RunClient::new(base).unwrap().with_retry(fast_retry());
    let parent = "projects/schema-project/locations/us-central1";
    let mut job = Job::default();
    job.labels.insert("purpose".into(), "schema".into());
    job.template.task_count = Some(1);
    job.template.template.max_retries = Some(0);
    job.template.template.timeout = Some("60s".into());
    job.template.template.containers = vec![Container {
        name: Some("main".into()),
        image: image.to_string(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["sleep \"${PAUSE:-0}\"".into()],
        resources: Some(ResourceRequirements {
            limits: BTreeMap::from([
                ("cpu".into(), "1".into()),
                ("memory".into(), "256Mi".into()),
            ]),
        }),
        ..Default::default()
    }];
    let op = c.create_job(parent, "schema-job", &job).await.unwrap();
    let name = op.job().unwrap().name;
    c.get_job(&name).await.unwrap();
    c.list_jobs(parent, Some(10), None).await.unwrap();
    let op = c.run_job(&name, None).await.unwrap();
    c.get_operation(&op.name).await.unwrap();
    let mut done = c
        .wait_operation(&op.name, Duration::from_secs(30))
        .await
        .unwrap();
    for _ in 0..10 {
        if done.done {
            break;
        }
        done = c
            .wait_operation(&op.name, Duration::from_secs(30))
            .await
            .unwrap();
    }
    assert!(done.done, "the execution ends");
    let exec = done.execution().unwrap();
    c.get_execution(&exec.name).await.unwrap();
    c.list_executions(&name, Some(10), None).await.unwrap();
    let tasks = c.list_tasks(&exec.name, Some(10), None).await.unwrap();
    c.get_task(&tasks.tasks[0].name).await.unwrap();
    // A long execution, cancelled, then deleted.
    let overrides = Overrides {
        container_overrides: vec![ContainerOverride {
            env: vec![sandbox_harness::gcp::run::EnvVar::new("PAUSE", "60")],
            ..Default::default()
        }],
        task_count: Some(1),
        timeout: Some("120s".into()),
    };
    let op = c.run_job(&name, Some(overrides)).await.unwrap();
    let long = op.execution().unwrap();
    c.cancel_execution(&long.name).await.unwrap();
    c.delete_execution(&long.name).await.unwrap();
    let err = c
        .get_job(&format!("{parent}/jobs/missing"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    c.delete_job(&name).await.unwrap();
}

async fn drive_project_apis(base: &str) {
    let rm = ResourceManagerClient::new(base, TokenSource::Anonymous)
        .unwrap()
        .with_retry(fast_retry());
    rm.test_iam_permissions(
        "schema-project",
        &["run.jobs.create", "storage.buckets.get"],
    )
    .await
    .unwrap();
    let su = ServiceUsageClient::new(base, TokenSource::Anonymous)
        .unwrap()
        .with_retry(fast_retry());
    su.get_service("schema-project", "run.googleapis.com")
        .await
        .unwrap();
}

async fn drive_other(base: &str) {
    let http = reqwest::Client::new();
    for p in ["/health", "/ready", "/live", "/emulator/v1/faults"] {
        assert!(
            http.get(format!("{base}{p}"))
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = format!(
        "{}.{}.{}",
        e.encode(br#"{"alg":"RS256"}"#),
        e.encode(br#"{"iss":"sa@p.iam.gserviceaccount.com"}"#),
        e.encode(b"sig")
    );
    let r = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = http
        .get(format!(
            "{base}/computeMetadata/v1/instance/service-accounts/default/token"
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

// ---------------------------------------------------------------- the test

/// axum pattern -> anchored regex (`{x}` one segment, `{*x}` the rest).
fn route_regex(p: &str) -> Regex {
    template_regex(p)
}

/// A concrete sample path for an axum pattern (every variable replaced by a word).
fn sample(p: &str) -> String {
    let re = Regex::new(r"\{[*+]?[A-Za-z0-9_]+\}").unwrap();
    re.replace_all(p, "x1").into_owned()
}

/// The JSON part of a multipart/related body (our client's multipart uploads).
fn multipart_json(ctype: &str, body: &[u8]) -> Option<Value> {
    if !ctype.starts_with("multipart/related") {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let start = text.find("\r\n\r\n")? + 4;
    let end = text[start..].find("\r\n--")? + start;
    serde_json::from_str(&text[start..end]).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_every_json_body_matches_googles_discovery_documents() {
    let docs = load_docs();
    let all_methods = methods(&docs);
    let by_id: BTreeMap<&str, &DMethod> = all_methods.iter().map(|m| (m.id.as_str(), m)).collect();

    let cloud = LocalCloud::start_with(EmulatorConfig {
        check_docker: false,
        object_mutation_limit: None,
        ..Default::default()
    })
    .await
    .expect("the local cloud starts (needs the Docker engine)");
    let routes: Vec<RouteSpec> = cloud.emulator().routes().to_vec();
    assert!(routes.len() >= 30, "{} routes", routes.len());

    // 1. Each Google route names discovery methods served on the same method and path.
    let mut problems = Vec::new();
    for r in &routes {
        let Api::Google(doc, ids) = r.api else {
            continue;
        };
        for id in ids {
            let Some(m) = by_id.get(id) else {
                problems.push(format!(
                    "{} {}: no method {id} in any document",
                    r.method, r.path
                ));
                continue;
            };
            if docs[m.doc].name != doc {
                problems.push(format!(
                    "{id} is in {}, the route says {doc}",
                    docs[m.doc].name
                ));
            }
            let s = sample(r.path);
            let upload = m.upload_paths.iter().any(|p| p.is_match(&s));
            let plain = m.http_method == r.method && m.paths.iter().any(|p| p.is_match(&s));
            // Custom verbs (`:run`, `:cancel`, `:wait`) sit in the last segment.
            let verb = m.http_method == r.method
                && m.paths
                    .iter()
                    .any(|p| p.is_match(&format!("{s}:{}", id.rsplit('.').next().unwrap())));
            // A wildcard route (`{*object}`) holds the method's own template.
            let route_re = route_regex(r.path);
            let holds = m.http_method == r.method && m.samples.iter().any(|p| route_re.is_match(p));
            if !(upload || plain || verb || holds) {
                problems.push(format!(
                    "{} {} does not match {id} ({} {:?})",
                    r.method,
                    r.path,
                    m.http_method,
                    m.paths.iter().map(Regex::as_str).collect::<Vec<_>>()
                ));
            }
        }
    }

    // 2. Drive every route through the recording proxy.
    let (proxy, log) = start_proxy(&cloud.base_url()).await;
    let docker = cloud.docker().clone();
    let image = sandbox_harness::images::ensure_sandbox_image(&docker)
        .await
        .expect("sandbox image");
    drive_storage(&proxy).await;
    drive_run(&proxy, &image).await;
    drive_project_apis(&proxy).await;
    drive_other(&proxy).await;
    cloud.shutdown().await;

    // 3. Validate every exchange and record what was exercised.
    let compiled: Vec<(Regex, &RouteSpec)> =
        routes.iter().map(|r| (route_regex(r.path), r)).collect();
    let mut exercised: BTreeSet<(String, String, String)> = BTreeSet::new();
    let exchanges = log.lock().unwrap().clone();
    let mut bodies_checked = 0;
    for x in &exchanges {
        let hits: Vec<&RouteSpec> = compiled
            .iter()
            .filter(|(re, r)| r.method == x.method && re.is_match(&x.path))
            .map(|(_, r)| *r)
            .collect();
        let [route] = hits[..] else {
            problems.push(format!(
                "{} {}: {} routes match",
                x.method,
                x.path,
                hits.len()
            ));
            continue;
        };
        let Api::Google(_, ids) = route.api else {
            exercised.insert((route.method.into(), route.path.into(), String::new()));
            continue;
        };
        let found: Vec<&&DMethod> = ids
            .iter()
            .filter_map(|id| by_id.get(id))
            .filter(|m| {
                m.upload_paths.iter().any(|p| p.is_match(&x.path))
                    || (m.http_method == x.method && m.paths.iter().any(|p| p.is_match(&x.path)))
            })
            .collect();
        let [m] = found[..] else {
            problems.push(format!(
                "{} {}: {} discovery methods of {ids:?} match",
                x.method,
                x.path,
                found.len()
            ));
            continue;
        };
        exercised.insert((route.method.into(), route.path.into(), m.id.clone()));
        let doc = &docs[m.doc];
        // Query parameters must be the method's (a resumable session URI adds `upload_id`).
        for (k, _) in url::form_urlencoded::parse(x.query.as_bytes()) {
            let session = k == "upload_id" && !m.upload_paths.is_empty();
            if !m.params.contains(k.as_ref()) && !session {
                problems.push(format!(
                    "{} {}: query parameter {k:?} is not a parameter of {}",
                    x.method, x.path, m.id
                ));
            }
        }
        // Request body.
        let req_json = if x.req_type.starts_with("application/json") && !x.req_body.is_empty() {
            serde_json::from_slice::<Value>(&x.req_body).ok()
        } else {
            multipart_json(&x.req_type, &x.req_body)
        };
        if let (Some(v), Some(schema)) = (&req_json, &m.request) {
            bodies_checked += 1;
            for e in validate(doc, &m.id, schema, v, true, x.method == "PATCH") {
                problems.push(format!("request {} {}: {e}", x.method, x.path));
            }
        }
        // Response body.
        if !x.resp_type.starts_with("application/json") || x.resp_body.is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&x.resp_body) else {
            problems.push(format!("{} {}: response is not JSON", x.method, x.path));
            continue;
        };
        bodies_checked += 1;
        if x.status >= 400 {
            for e in error_shape_errors(&v) {
                problems.push(format!("error {} {} {}: {e}", x.status, x.method, x.path));
            }
            continue;
        }
        // objects.rewrite answers a RewriteResponse, compose and copy an Object.
        if let Some(schema) = &m.response {
            for e in validate(doc, &m.id, schema, &v, false, false) {
                problems.push(format!("response {} {}?{}: {e}", x.method, x.path, x.query));
            }
        }
    }
    let mut missing = Vec::new();
    for r in &routes {
        match r.api {
            Api::Google(_, ids) => {
                for id in ids {
                    if !exercised.contains(&(r.method.into(), r.path.into(), id.to_string())) {
                        missing.push(format!("{} {} ({id})", r.method, r.path));
                    }
                }
            }
            Api::Other(_) => {
                if !exercised.contains(&(r.method.into(), r.path.into(), String::new())) {
                    missing.push(format!("{} {}", r.method, r.path));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes not exercised:\n{}",
        missing.join("\n")
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!(
        "{} routes, {} exchanges, {bodies_checked} JSON bodies validated",
        routes.len(),
        exchanges.len()
    );
}
