//! HTTP handlers of the emulated Cloud Storage JSON API.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::store::{
    Hashes, ListQuery, NewObject, ObjectMeta, Preconditions, SourcePreconditions, TempFile,
    UploadSession, compile_glob, encode_component, validate_object_name,
};
use crate::emulator::base::{ApiError, parse_json, query_values};
use crate::emulator::context::EmulatorContext;

/// Resumable chunks (except the last) must be multiples of this.
pub const CHUNK_GRANULARITY: u64 = 256 * 1024;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn q1(uri: &Uri, key: &str) -> Option<String> {
    query_values(uri.query(), key).into_iter().next()
}

/// The object resource as JSON. Known difference from Google: `fields=` (partial responses)
/// is ignored, the whole resource is returned.
fn object_response(
    status: StatusCode,
    m: &ObjectMeta,
    ctx: &EmulatorContext,
    bucket: &str,
) -> Response {
    let mut resp = (status, Json(m.resource(bucket, ctx.storage.base_url()))).into_response();
    if let Ok(v) = HeaderValue::from_str(&m.goog_hash()) {
        resp.headers_mut().insert("x-goog-hash", v);
    }
    resp
}

fn require_bucket(ctx: &EmulatorContext, bucket: &str) -> Result<(), ApiError> {
    if ctx.storage.has_bucket(bucket) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "The specified bucket does not exist: {bucket}"
        )))
    }
}

/// The value of a boolean query parameter (`true`/`false`; absent = false).
fn q_bool(uri: &Uri, key: &str) -> Result<bool, ApiError> {
    match q1(uri, key).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "Invalid value for {key}: {v} (expected true or false)"
        ))),
    }
}

// ---------------- buckets ----------------

/// GET /storage/v1/b
pub async fn list_buckets(
    State(ctx): State<EmulatorContext>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    ctx.inject("storage.buckets.list").await?;
    let project =
        q1(&uri, "project").ok_or_else(|| ApiError::bad_request("Required parameter: project"))?;
    let items: Vec<Value> = ctx
        .storage
        .list_buckets()
        .await?
        .into_iter()
        .filter(|b| b.project == project)
        .map(|b| b.resource(ctx.storage.base_url()))
        .collect();
    let mut v = json!({"kind": "storage#buckets"});
    if !items.is_empty() {
        v["items"] = json!(items);
    }
    Ok(Json(v))
}

/// POST /storage/v1/b?project=
pub async fn insert_bucket(
    State(ctx): State<EmulatorContext>,
    uri: Uri,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    ctx.inject("storage.buckets.insert").await?;
    let project =
        q1(&uri, "project").ok_or_else(|| ApiError::bad_request("Required parameter: project"))?;
    let v: serde_json::Map<String, Value> = ctx.json_body(body).await?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Required: name"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let labels: BTreeMap<String, String> = match v.get("labels") {
        Some(l) => serde_json::from_value(l.clone())
            .map_err(|e| ApiError::bad_request(format!("Invalid labels: {e}")))?,
        None => BTreeMap::new(),
    };
    let b = ctx
        .storage
        .insert_bucket(
            name,
            &project,
            s("location"),
            s("storageClass"),
            v.get("lifecycle").cloned().filter(|l| !l.is_null()),
            labels,
        )
        .await?;
    Ok(Json(b.resource(ctx.storage.base_url())))
}

/// GET /storage/v1/b/{bucket}
pub async fn get_bucket(
    State(ctx): State<EmulatorContext>,
    UrlPath(bucket): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    ctx.inject("storage.buckets.get").await?;
    Ok(Json(
        ctx.storage
            .get_bucket(&bucket)
            .await?
            .resource(ctx.storage.base_url()),
    ))
}

/// PATCH /storage/v1/b/{bucket}
pub async fn patch_bucket(
    State(ctx): State<EmulatorContext>,
    UrlPath(bucket): UrlPath<String>,
    uri: Uri,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    ctx.inject("storage.buckets.patch").await?;
    let pre = Preconditions::from_query(uri.query())?;
    let v: serde_json::Map<String, Value> = ctx.json_body(body).await?;
    let lifecycle = v
        .get("lifecycle")
        .map(|l| Some(l.clone()).filter(|l| !l.is_null()));
    let labels = match v.get("labels") {
        Some(l) => Some(
            serde_json::from_value(l.clone())
                .map_err(|e| ApiError::bad_request(format!("Invalid labels: {e}")))?,
        ),
        None => None,
    };
    let sc = v
        .get("storageClass")
        .and_then(Value::as_str)
        .map(str::to_string);
    let b = ctx
        .storage
        .patch_bucket(&bucket, lifecycle, labels, sc, pre)
        .await?;
    Ok(Json(b.resource(ctx.storage.base_url())))
}

/// GET /storage/v1/b/{bucket}/storageLayout (gcloud asks before removing folders; the
/// emulator's buckets are flat: no hierarchical namespace).
pub async fn get_storage_layout(
    State(ctx): State<EmulatorContext>,
    UrlPath(bucket): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    ctx.inject("storage.buckets.getStorageLayout").await?;
    let b = ctx.storage.get_bucket(&bucket).await?;
    Ok(Json(json!({
        "kind": "storage#storageLayout",
        "bucket": b.name,
        "location": b.location,
        "locationType": "region",
        "hierarchicalNamespace": {"enabled": false},
    })))
}

/// DELETE /storage/v1/b/{bucket}
pub async fn delete_bucket(
    State(ctx): State<EmulatorContext>,
    UrlPath(bucket): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    ctx.inject("storage.buckets.delete").await?;
    ctx.storage.delete_bucket(&bucket).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /storage/v1/b/{bucket}/iam: the emulator's bucket policy grants
/// `roles/storage.objectUser` to the members of [`EmulatorConfig::bucket_object_users`] and
/// nothing else (no other IAM is modelled).
///
/// [`EmulatorConfig::bucket_object_users`]: crate::emulator::EmulatorConfig::bucket_object_users
pub async fn bucket_iam_policy(
    State(ctx): State<EmulatorContext>,
    UrlPath(bucket): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    ctx.inject("storage.buckets.getIamPolicy").await?;
    if !ctx.storage.has_bucket(&bucket) {
        return Err(ApiError::not_found(format!(
            "The specified bucket does not exist: {bucket}"
        )));
    }
    let members: Vec<&String> = ctx.config.bucket_object_users.iter().collect();
    let bindings = if members.is_empty() {
        json!([])
    } else {
        json!([{"role": "roles/storage.objectUser", "members": members}])
    };
    Ok(Json(json!({
        "kind": "storage#policy",
        "resourceId": format!("projects/_/buckets/{bucket}"),
        "version": 1,
        "etag": "CAE=",
        "bindings": bindings,
    })))
}

/// GET /storage/v1/b/{bucket}/iam/testPermissions
pub async fn bucket_test_permissions(
    State(ctx): State<EmulatorContext>,
    UrlPath(bucket): UrlPath<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    ctx.inject("storage.buckets.testIamPermissions").await?;
    if !ctx.storage.has_bucket(&bucket) {
        return Err(ApiError::not_found(format!(
            "The specified bucket does not exist: {bucket}"
        )));
    }
    let asked = query_values(uri.query(), "permissions");
    if asked.is_empty() {
        return Err(ApiError::bad_request("Required parameter: permissions"));
    }
    let granted: Vec<String> = asked
        .into_iter()
        .filter(|p| !ctx.config.denied_permissions.contains(p))
        .collect();
    let mut body = json!({"kind": "storage#testIamPermissionsResponse"});
    if !granted.is_empty() {
        body["permissions"] = json!(granted);
    }
    Ok(Json(body))
}

// ---------------- objects ----------------

/// GET /storage/v1/b/{bucket}/o
pub async fn list_objects(
    State(ctx): State<EmulatorContext>,
    UrlPath(bucket): UrlPath<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    ctx.inject("storage.objects.list").await?;
    require_bucket(&ctx, &bucket)?;
    ctx.storage.maybe_sweep(&bucket).await;
    let prefix = q1(&uri, "prefix").unwrap_or_default();
    let delimiter = q1(&uri, "delimiter").filter(|d| !d.is_empty());
    let max: usize = match q1(&uri, "maxResults") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid value for maxResults: {m}")))?
            .min(1000),
        None => 1000,
    };
    // The page token is the last key of the previous page: 'P' + a rolled-up prefix or
    // 'N' + an object name.
    let after = match q1(&uri, "pageToken").filter(|t| !t.is_empty()) {
        Some(t) => {
            let raw = B64URL
                .decode(t.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::bad_request("Invalid pageToken"))?;
            match raw.split_at_checked(1) {
                Some(("P", k)) => Some((k.to_string(), true)),
                Some(("N", k)) => Some((k.to_string(), false)),
                _ => return Err(ApiError::bad_request("Invalid pageToken")),
            }
        }
        None => None,
    };
    let match_glob = match q1(&uri, "matchGlob").filter(|g| !g.is_empty()) {
        Some(g) => Some(compile_glob(&g)?),
        None => None,
    };
    let q = ListQuery {
        prefix,
        delimiter,
        include_trailing_delimiter: q_bool(&uri, "includeTrailingDelimiter")?,
        start_offset: q1(&uri, "startOffset").filter(|s| !s.is_empty()),
        end_offset: q1(&uri, "endOffset").filter(|s| !s.is_empty()),
        match_glob,
        after,
        max,
    };
    let page = ctx.storage.list_objects(&bucket, &q).await?;
    let base = ctx.storage.base_url();
    let mut v = json!({"kind": "storage#objects"});
    if !page.items.is_empty() {
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|m| m.resource(&bucket, base))
            .collect();
        v["items"] = json!(items);
    }
    if !page.prefixes.is_empty() {
        v["prefixes"] = json!(page.prefixes);
    }
    if let Some((key, is_prefix)) = page.next {
        let raw = format!("{}{key}", if is_prefix { 'P' } else { 'N' });
        v["nextPageToken"] = json!(B64URL.encode(raw.as_bytes()));
    }
    Ok(Json(v))
}

/// GET /storage/v1/b/{bucket}/o/{object} (metadata, or content with `alt=media`)
pub async fn get_object(
    State(ctx): State<EmulatorContext>,
    UrlPath((bucket, name)): UrlPath<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    ctx.inject("storage.objects.get").await?;
    require_bucket(&ctx, &bucket)?;
    ctx.storage.maybe_sweep(&bucket).await;
    match q1(&uri, "alt").as_deref() {
        None | Some("json") => {
            let m = ctx.storage.get_object(&bucket, &name).await?;
            check_read_preconditions(&uri, &m)?;
            Ok(object_response(StatusCode::OK, &m, &ctx, &bucket))
        }
        Some("media") => {
            let (m, file) = ctx.storage.open_object(&bucket, &name).await?;
            check_read_preconditions(&uri, &m)?;
            let resp = media_response(&ctx, m, file, &headers).await?;
            Ok(maybe_break(&ctx, resp))
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid value for alt: {other} (json or media)"
        ))),
    }
}

/// GET /download/storage/v1/b/{bucket}/o/{object}
pub async fn download_object(
    State(ctx): State<EmulatorContext>,
    UrlPath((bucket, name)): UrlPath<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    ctx.inject("storage.objects.get").await?;
    require_bucket(&ctx, &bucket)?;
    ctx.storage.maybe_sweep(&bucket).await;
    let (m, file) = ctx.storage.open_object(&bucket, &name).await?;
    check_read_preconditions(&uri, &m)?;
    let resp = media_response(&ctx, m, file, &headers).await?;
    Ok(maybe_break(&ctx, resp))
}

/// The request's `Content-Length` (0 when absent or malformed).
fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Applies the broken-download fault ([`FaultConfig::broken_downloads`]) to a media answer.
///
/// [`FaultConfig::broken_downloads`]: crate::suites::faults::FaultConfig::broken_downloads
fn maybe_break(ctx: &EmulatorContext, mut resp: Response) -> Response {
    let len = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if len >= 2 && ctx.injector.break_download() {
        // Half the bytes, then an error: the server drops the connection mid-body.
        use futures::StreamExt as _;
        let body = std::mem::replace(resp.body_mut(), Body::empty());
        let half = (len / 2) as usize;
        let cut = futures::stream::unfold(
            (body.into_data_stream(), 0usize),
            move |(mut s, sent)| async move {
                if sent >= half {
                    return Some((
                        Err(std::io::Error::other("injected fault: connection broken")),
                        (s, usize::MAX),
                    ))
                    .filter(|_| sent != usize::MAX);
                }
                match s.next().await {
                    Some(Ok(mut b)) => {
                        b.truncate(half - sent);
                        let n = b.len();
                        Some((Ok(b), (s, sent + n)))
                    }
                    Some(Err(e)) => Some((Err(std::io::Error::other(e)), (s, usize::MAX))),
                    None => None,
                }
            },
        );
        *resp.body_mut() = Body::from_stream(cut);
    }
    resp
}

fn check_read_preconditions(uri: &Uri, m: &ObjectMeta) -> Result<(), ApiError> {
    Preconditions::from_query(uri.query())?.check(Some((m.generation, m.metageneration)))
}

/// Parses a `Range` header against `size`: `None` = whole object.
pub fn parse_range(h: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(h) = h else { return Ok(None) };
    let h = h.trim();
    let Some(spec) = h.strip_prefix("bytes=") else {
        return Ok(None); // other units are ignored, as HTTP allows
    };
    let bad = || {
        ApiError::bad_range(format!(
            "The requested range cannot be satisfied: {h} of an object of {size} bytes"
        ))
    };
    if spec.contains(',') {
        return Err(ApiError::bad_range(
            "Multiple byte ranges are not supported",
        ));
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| bad())?;
        if n == 0 || size == 0 {
            return Err(bad());
        }
        return Ok(Some((size - n.min(size), size - 1)));
    }
    let start: u64 = a.parse().map_err(|_| bad())?;
    let end: u64 = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().map_err(|_| bad())?
    };
    if start > end || start >= size {
        return Err(bad());
    }
    Ok(Some((start, end.min(size - 1))))
}

async fn media_response(
    ctx: &EmulatorContext,
    m: ObjectMeta,
    mut file: tokio::fs::File,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        m.size,
    )?;
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, m.size),
    };
    // The latency profile's transfer rate (the twin delays the first byte by the whole
    // transfer's time rather than pacing the stream).
    ctx.transfer(len).await;
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    use tokio::io::AsyncReadExt;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let ct = HeaderValue::from_str(&m.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("x-goog-generation", HeaderValue::from(m.generation));
    h.insert("x-goog-metageneration", HeaderValue::from(m.metageneration));
    h.insert("x-goog-stored-content-length", HeaderValue::from(m.size));
    if let Ok(v) = HeaderValue::from_str(&m.goog_hash()) {
        h.insert("x-goog-hash", v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) =
            HeaderValue::from_str(&format!("bytes {}-{}/{}", start, start + len - 1, m.size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

/// PATCH /storage/v1/b/{bucket}/o/{object}
pub async fn patch_object(
    State(ctx): State<EmulatorContext>,
    UrlPath((bucket, name)): UrlPath<(String, String)>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    ctx.inject("storage.objects.patch").await?;
    let pre = Preconditions::from_query(uri.query())?;
    let patch: serde_json::Map<String, Value> = ctx.json_body(body).await?;
    let m = ctx
        .storage
        .patch_object(&bucket, &name, &patch, false, pre)
        .await?;
    Ok(object_response(StatusCode::OK, &m, &ctx, &bucket))
}

/// PUT /storage/v1/b/{bucket}/o/{object} (objects.update: replaces the writable metadata)
pub async fn update_object(
    State(ctx): State<EmulatorContext>,
    UrlPath((bucket, name)): UrlPath<(String, String)>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    ctx.inject("storage.objects.update").await?;
    let pre = Preconditions::from_query(uri.query())?;
    let patch: serde_json::Map<String, Value> = ctx.json_body(body).await?;
    let m = ctx
        .storage
        .patch_object(&bucket, &name, &patch, true, pre)
        .await?;
    Ok(object_response(StatusCode::OK, &m, &ctx, &bucket))
}

/// DELETE /storage/v1/b/{bucket}/o/{object}
pub async fn delete_object(
    State(ctx): State<EmulatorContext>,
    UrlPath((bucket, name)): UrlPath<(String, String)>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    ctx.inject("storage.objects.delete").await?;
    let pre = Preconditions::from_query(uri.query())?;
    ctx.storage.delete_object(&bucket, &name, pre).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Percent-decodes one raw path piece (no `+` rule: paths are not form data).
fn decode_piece(raw: &str) -> Result<String, ApiError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("Invalid percent-encoding in {raw:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request(format!("{raw:?} is not UTF-8 once decoded")))
}

/// What a POST under `/storage/v1/b/{bucket}/o/` asks for, read from the raw path (an object
/// name may hold `/`, sent as `%2F`).
#[derive(Debug, PartialEq, Eq)]
enum ObjectPost {
    /// `{object}/compose`.
    Compose(String),
    /// `{src}/moveTo/o/{dst}`.
    Move { src: String, dst: String },
    /// `{src}/copyTo/b/{bucket}/o/{dst}` (`rewrite` = `rewriteTo`).
    Copy {
        src: String,
        dst_bucket: String,
        dst: String,
        rewrite: bool,
    },
}

fn parse_object_post(path: &str) -> Result<ObjectPost, ApiError> {
    let unknown = || ApiError::not_found(format!("No such API path: {path}"));
    let rest = path.strip_prefix("/storage/v1/b/").ok_or_else(unknown)?;
    let (_, rest) = rest.split_once("/o/").ok_or_else(unknown)?;
    if let Some(obj) = rest.strip_suffix("/compose") {
        return Ok(ObjectPost::Compose(decode_piece(obj)?));
    }
    if let Some((src, dst)) = rest.split_once("/moveTo/o/") {
        return Ok(ObjectPost::Move {
            src: decode_piece(src)?,
            dst: decode_piece(dst)?,
        });
    }
    for (verb, rewrite) in [("/copyTo/b/", false), ("/rewriteTo/b/", true)] {
        if let Some((src, dst)) = rest.split_once(verb) {
            let (b, o) = dst.split_once("/o/").ok_or_else(unknown)?;
            return Ok(ObjectPost::Copy {
                src: decode_piece(src)?,
                dst_bucket: decode_piece(b)?,
                dst: decode_piece(o)?,
                rewrite,
            });
        }
    }
    Err(unknown())
}

/// A JSON int64 given as a string (Google's encoding) or a number.
fn int64(v: &Value, what: &str) -> Result<Option<i64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("Invalid value for {what}: {s}"))),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid value for {what}: {n}"))),
        other => Err(ApiError::bad_request(format!(
            "Invalid value for {what}: {other}"
        ))),
    }
}

/// POST /storage/v1/b/{bucket}/o/{object}/compose, .../{src}/copyTo/b/{b}/o/{dst},
/// .../{src}/rewriteTo/b/{b}/o/{dst} and .../{src}/moveTo/o/{dst}.
pub async fn post_object(
    State(ctx): State<EmulatorContext>,
    UrlPath((bucket, _)): UrlPath<(String, String)>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let what = parse_object_post(uri.path())?;
    let pre = Preconditions::from_query(uri.query())?;
    let base = ctx.storage.base_url().to_string();
    match what {
        ObjectPost::Compose(dst) => {
            ctx.inject("storage.objects.compose").await?;
            let req: serde_json::Map<String, Value> = ctx.json_body(body).await?;
            let sources = match req.get("sourceObjects") {
                Some(Value::Array(a)) => a,
                _ => return Err(ApiError::bad_request("Required: sourceObjects")),
            };
            let mut srcs = Vec::with_capacity(sources.len());
            for s in sources {
                let name = s
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::bad_request("Required: sourceObjects[].name"))?;
                let spre = SourcePreconditions {
                    generation: int64(
                        s.get("generation").unwrap_or(&Value::Null),
                        "sourceObjects[].generation",
                    )?,
                    if_generation_match: int64(
                        s.pointer("/objectPreconditions/ifGenerationMatch")
                            .unwrap_or(&Value::Null),
                        "sourceObjects[].objectPreconditions.ifGenerationMatch",
                    )?,
                    ..Default::default()
                };
                srcs.push((name.to_string(), spre));
            }
            let new: NewObject = match req.get("destination") {
                Some(d) => serde_json::from_value(d.clone())
                    .map_err(|e| ApiError::bad_request(format!("Invalid destination: {e}")))?,
                None => NewObject::default(),
            };
            let m = ctx
                .storage
                .compose_object(&bucket, &dst, &srcs, &new, pre)
                .await?;
            Ok(object_response(StatusCode::OK, &m, &ctx, &bucket))
        }
        ObjectPost::Move { src, dst } => {
            ctx.inject("storage.objects.move").await?;
            let spre = SourcePreconditions::from_query(uri.query())?;
            let m = ctx
                .storage
                .move_object(&bucket, &src, &dst, spre, pre)
                .await?;
            Ok(object_response(StatusCode::OK, &m, &ctx, &bucket))
        }
        ObjectPost::Copy {
            src,
            dst_bucket,
            dst,
            rewrite,
        } => {
            ctx.inject(if rewrite {
                "storage.objects.rewrite"
            } else {
                "storage.objects.copy"
            })
            .await?;
            let over: serde_json::Map<String, Value> = ctx.json_body(body).await?;
            let spre = SourcePreconditions::from_query(uri.query())?;
            let m = ctx
                .storage
                .copy_object((&bucket, &src), (&dst_bucket, &dst), &over, spre, pre)
                .await?;
            if !rewrite {
                return Ok(object_response(StatusCode::OK, &m, &ctx, &dst_bucket));
            }
            // The emulator always finishes a rewrite in one call (no rewriteToken).
            let v = json!({
                "kind": "storage#rewriteResponse",
                "totalBytesRewritten": m.size.to_string(),
                "objectSize": m.size.to_string(),
                "done": true,
                "resource": m.resource(&dst_bucket, &base),
            });
            Ok((StatusCode::OK, Json(v)).into_response())
        }
    }
}

// ---------------- uploads ----------------

/// Streams `body` into `file`, dropping the first `skip` bytes, hashing what is written;
/// fails past `max` written bytes. Returns (bytes in body, bytes written).
async fn spool(
    body: Body,
    file: tokio::fs::File,
    hashes: &mut Hashes,
    mut skip: u64,
    max: Option<u64>,
) -> Result<(u64, u64), ApiError> {
    let mut w = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = body.into_data_stream();
    let (mut seen, mut written) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        seen += chunk.len() as u64;
        let mut data = &chunk[..];
        if skip > 0 {
            let k = skip.min(data.len() as u64) as usize;
            data = &data[k..];
            skip -= k as u64;
        }
        if let Some(m) = max
            && written + data.len() as u64 > m
        {
            return Err(ApiError::bad_request(format!(
                "the request body holds more bytes than its Content-Range declares ({m})"
            )));
        }
        hashes.update(data);
        w.write_all(data).await?;
        written += data.len() as u64;
    }
    w.flush().await?;
    w.into_inner().sync_data().await.ok();
    Ok((seen, written))
}

/// POST /upload/storage/v1/b/{bucket}/o
pub async fn upload_post(
    State(ctx): State<EmulatorContext>,
    UrlPath(bucket): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ctx.inject("storage.objects.insert").await?;
    ctx.transfer(content_length(&headers)).await;
    require_bucket(&ctx, &bucket)?;
    let pre = Preconditions::from_query(uri.query())?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match q1(&uri, "uploadType").as_deref() {
        Some("media") => {
            let name = q1(&uri, "name")
                .ok_or_else(|| ApiError::bad_request("Required parameter: name"))?;
            validate_object_name(&name)?;
            let guard = TempFile(Some(ctx.storage.temp_path()));
            let file = tokio::fs::File::create(guard.path()).await?;
            let mut h = Hashes::default();
            let (_, size) = spool(body, file, &mut h, 0, None).await?;
            let new = NewObject {
                content_type: ctype,
                ..Default::default()
            };
            let m = ctx
                .storage
                .commit_object(&bucket, &name, guard.path(), size, h.finish(), &new, pre)
                .await?;
            guard.disarm();
            Ok(object_response(StatusCode::OK, &m, &ctx, &bucket))
        }
        Some("multipart") => {
            let r = multipart_upload(&ctx, &bucket, &uri, ctype.as_deref(), body, pre).await?;
            if ctx.injector.lose_insert_response() {
                return Err(ApiError::unavailable(
                    "injected fault: the object was written and this answer dropped".to_string(),
                ));
            }
            Ok(r)
        }
        Some("resumable") => {
            let mut new: NewObject = ctx.json_body(body).await?;
            if let Some(n) = q1(&uri, "name") {
                new.name = Some(n);
            }
            let name = new
                .name
                .clone()
                .ok_or_else(|| ApiError::bad_request("Required: name"))?;
            validate_object_name(&name)?;
            if new.content_type.is_none() {
                new.content_type = headers
                    .get("x-upload-content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
            let total = headers
                .get("x-upload-content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let id = uuid::Uuid::new_v4().simple().to_string();
            let path = ctx.storage.upload_path(&id);
            tokio::fs::File::create(&path).await?;
            let sess = UploadSession {
                bucket: bucket.clone(),
                name: name.clone(),
                new,
                pre,
                path,
                received: 0,
                total,
                hashes: Hashes::default(),
                done: None,
            };
            ctx.storage
                .uploads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(sess)));
            let loc = format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=resumable&name={}&upload_id={}",
                ctx.storage.base_url(),
                bucket,
                encode_component(&name),
                id
            );
            let mut resp = StatusCode::OK.into_response();
            resp.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&loc).map_err(|e| ApiError::internal(e.to_string()))?,
            );
            Ok(resp)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid uploadType: {other}"
        ))),
        None => Err(ApiError::bad_request("Required parameter: uploadType")),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The boundary parameter of a multipart/related content type.
/// A boundary in double quotes (RFC 2045) or in single quotes (what apitools, and so gcloud,
/// sends: `boundary='===============123=='`, while its body uses the unquoted value) is unquoted.
fn boundary_of(ctype: &str) -> Option<String> {
    let (mime, params) = ctype.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q)?.strip_suffix(*q))
            .unwrap_or(v);
        Some(unquoted.to_string()).filter(|b| !b.is_empty())
    })
}

/// The value of header `name` in a MIME part's header block.
fn part_header(headers: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(headers).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

async fn multipart_upload(
    ctx: &EmulatorContext,
    bucket: &str,
    uri: &Uri,
    ctype: Option<&str>,
    body: Body,
    pre: Preconditions,
) -> Result<Response, ApiError> {
    let boundary = ctype.and_then(boundary_of).ok_or_else(|| {
        ApiError::bad_request(
            "multipart upload needs Content-Type: multipart/related; boundary=...",
        )
    })?;
    // Spool the whole body (bounded memory), then cut the media part out of the file.
    let raw = TempFile(Some(ctx.storage.temp_path()));
    let file = tokio::fs::File::create(raw.path()).await?;
    let mut ignore = Hashes::default();
    spool(body, file, &mut ignore, 0, None).await?;
    let head_limit = ctx.config.max_json_body + 16 * 1024;
    let raw_path = raw.path().to_path_buf();
    let out = TempFile(Some(ctx.storage.temp_path()));
    let out_path = out.path().to_path_buf();
    let parsed = tokio::task::spawn_blocking(move || {
        cut_multipart(&raw_path, &out_path, &boundary, head_limit)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    drop(raw);
    let (meta_json, media_ctype, size, hashes) = parsed;
    let mut new: NewObject = parse_json(&meta_json)?;
    if let Some(n) = q1(uri, "name") {
        new.name = Some(n);
    }
    if new.content_type.is_none() {
        new.content_type = media_ctype;
    }
    let name = new
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("Required: name"))?;
    let m = ctx
        .storage
        .commit_object(bucket, &name, out.path(), size, hashes, &new, pre)
        .await?;
    out.disarm();
    Ok(object_response(StatusCode::OK, &m, ctx, bucket))
}

type Multipart = (Vec<u8>, Option<String>, u64, (String, String));

/// Where a MIME part's header block ends in `buf`: (end of the headers, start of the body).
/// Accepts an empty header block (the body starts right after the delimiter line).
fn header_block_end(buf: &[u8], nl: &[u8]) -> Option<(usize, usize)> {
    if buf.starts_with(nl) {
        return Some((0, nl.len()));
    }
    let blank: Vec<u8> = [nl, nl].concat();
    find(buf, &blank).map(|i| (i, i + blank.len()))
}

/// Splits a spooled multipart/related body: (metadata JSON, media content type, media size,
/// hashes). Parts may be separated by CRLF (RFC 2046, what most clients send) or by bare LF
/// (what Python's email generator, and so apitools and gcloud, write); the line ending of the
/// opening delimiter line decides which. The media part is copied to `out`.
fn cut_multipart(
    raw: &Path,
    out: &Path,
    boundary: &str,
    head_limit: usize,
) -> Result<Multipart, ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("Malformed multipart body: {m}"));
    let mut f = std::fs::File::open(raw)?;
    let total = f.metadata()?.len();
    let mut head = vec![0u8; head_limit.min(total as usize)];
    f.read_exact(&mut head)?;
    let too_large = || ApiError::too_large("the multipart metadata part is too large");
    let truncated = total as usize > head.len();
    let delim = format!("--{boundary}");
    // The opening delimiter starts a line (a preamble before it is allowed).
    let mut first = None;
    let mut from = 0;
    while let Some(i) = find(&head[from..], delim.as_bytes()) {
        let at = from + i;
        if at == 0 || head[at - 1] == b'\n' {
            first = Some(at);
            break;
        }
        from = at + 1;
    }
    let first = first.ok_or_else(|| bad("no opening boundary"))?;
    let mut pos = first + delim.len();
    let eol =
        find(&head[pos..], b"\n").ok_or_else(|| bad("the opening boundary line has no end"))?;
    let nl: &[u8] = if eol > 0 && head[pos + eol - 1] == b'\r' {
        b"\r\n"
    } else {
        b"\n"
    };
    pos += eol + 1;
    let (_, body) = header_block_end(&head[pos..], nl).ok_or_else(|| {
        if truncated {
            too_large()
        } else {
            bad("metadata part has no header end")
        }
    })?;
    pos += body;
    let next_delim = [nl, delim.as_bytes()].concat();
    let meta_end = find(&head[pos..], &next_delim).ok_or_else(|| {
        if truncated {
            too_large()
        } else {
            bad("no boundary after the metadata part")
        }
    })?;
    let meta = head[pos..pos + meta_end].to_vec();
    pos += meta_end + next_delim.len();
    let eol =
        find(&head[pos..], b"\n").ok_or_else(|| bad("the second boundary line has no end"))?;
    pos += eol + 1;
    let (hdr_len, body) =
        header_block_end(&head[pos..], nl).ok_or_else(|| bad("media part has no header end"))?;
    let media_headers = &head[pos..pos + hdr_len];
    let media_ctype = part_header(media_headers, "content-type");
    if let Some(enc) = part_header(media_headers, "content-transfer-encoding")
        && !["binary", "8bit", "7bit"].contains(&enc.to_ascii_lowercase().as_str())
    {
        return Err(ApiError::bad_request(format!(
            "Content-Transfer-Encoding {enc} of the media part is not supported by the emulator (binary, 8bit and 7bit are)"
        )));
    }
    let media_start = (pos + body) as u64;
    // The closing delimiter is near the end (transport padding and a final line end may follow).
    let close = [nl, delim.as_bytes(), b"--"].concat();
    let tail_len = (close.len() as u64 + 64).min(total);
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(total - tail_len))?;
    f.read_exact(&mut tail)?;
    let close_at =
        rfind(&tail, &close).ok_or_else(|| bad("no closing boundary"))? as u64 + (total - tail_len);
    if close_at < media_start {
        return Err(bad("the closing boundary comes before the media"));
    }
    let size = close_at - media_start;
    f.seek(SeekFrom::Start(media_start))?;
    let mut w = std::fs::File::create(out)?;
    let mut h = Hashes::default();
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..k])?;
        h.update(&buf[..k]);
        std::io::Write::write_all(&mut w, &buf[..k])?;
        left -= k as u64;
    }
    w.sync_data()?;
    Ok((meta, media_ctype, size, h.finish()))
}

/// A parsed `Content-Range` of a resumable PUT.
#[derive(Debug, PartialEq, Eq)]
enum ContentRange {
    /// `bytes */total` or `bytes */*`.
    Status(Option<u64>),
    /// `bytes a-b/total` or `bytes a-b/*`.
    Data(u64, u64, Option<u64>),
}

fn parse_content_range(v: &str) -> Result<ContentRange, ApiError> {
    let bad = || ApiError::bad_request(format!("Invalid Content-Range: {v}"));
    let s = v.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = s.split_once('/').ok_or_else(bad)?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().map_err(|_| bad())?),
    };
    if range.trim() == "*" {
        return Ok(ContentRange::Status(total));
    }
    let (a, b) = range.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a > b || total.is_some_and(|t| b >= t) {
        return Err(bad());
    }
    Ok(ContentRange::Data(a, b, total))
}

fn incomplete(received: u64) -> Response {
    let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
    if received > 0
        && let Ok(v) = HeaderValue::from_str(&format!("bytes=0-{}", received - 1))
    {
        r.headers_mut().insert(header::RANGE, v);
    }
    r
}

fn session(
    ctx: &EmulatorContext,
    uri: &Uri,
) -> Result<(String, Arc<tokio::sync::Mutex<UploadSession>>), ApiError> {
    let id = q1(uri, "upload_id")
        .ok_or_else(|| ApiError::bad_request("Required parameter: upload_id"))?;
    let s = ctx
        .storage
        .uploads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No such upload session: {id}")))?;
    Ok((id, s))
}

async fn finalize(ctx: &EmulatorContext, s: &mut UploadSession) -> Result<Response, ApiError> {
    let hashes = s.hashes.clone().finish();
    let m = ctx
        .storage
        .commit_object(
            &s.bucket, &s.name, &s.path, s.received, hashes, &s.new, s.pre,
        )
        .await?;
    s.done = Some(m.clone());
    Ok(object_response(StatusCode::OK, &m, ctx, &s.bucket))
}

/// PUT /upload/storage/v1/b/{bucket}/o?upload_id= (resumable chunks and status queries)
pub async fn upload_put(
    State(ctx): State<EmulatorContext>,
    UrlPath(_bucket): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ctx.inject("storage.objects.insert").await?;
    ctx.transfer(content_length(&headers)).await;
    let (_, sess) = session(&ctx, &uri)?;
    let mut s = sess.lock().await;
    let cr = match headers.get(header::CONTENT_RANGE) {
        Some(v) => parse_content_range(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Invalid Content-Range"))?,
        )?,
        None => {
            // The whole object in one request.
            let len = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            match len {
                Some(0) => ContentRange::Status(Some(0)),
                Some(n) => ContentRange::Data(0, n - 1, Some(n)),
                None => {
                    return Err(ApiError::bad_request(
                        "a resumable PUT needs Content-Range or Content-Length",
                    ));
                }
            }
        }
    };
    if let Some(m) = &s.done {
        return Ok(object_response(StatusCode::OK, m, &ctx, &s.bucket));
    }
    match cr {
        ContentRange::Status(total) => {
            if let Some(t) = total.or(s.total) {
                if s.received == t {
                    s.total = Some(t);
                    return finalize(&ctx, &mut s).await;
                }
                if s.received > t {
                    return Err(ApiError::bad_request(format!(
                        "declared total {t} is below the {} bytes already received",
                        s.received
                    )));
                }
            }
            Ok(incomplete(s.received))
        }
        ContentRange::Data(a, b, total) => {
            if let (Some(t), Some(old)) = (total, s.total)
                && t != old
            {
                return Err(ApiError::bad_request(format!(
                    "total length changed from {old} to {t}"
                )));
            }
            let total = total.or(s.total);
            let len = b - a + 1;
            let last = total.is_some_and(|t| b + 1 == t);
            if !last && len % CHUNK_GRANULARITY != 0 {
                return Err(ApiError::bad_request(format!(
                    "Invalid chunk size {len}: chunks other than the last must be a multiple of {CHUNK_GRANULARITY} bytes"
                )));
            }
            if a > s.received {
                return Err(ApiError::bad_request(format!(
                    "chunk starts at {a} but only {} bytes were persisted",
                    s.received
                )));
            }
            let skip = s.received - a;
            let snapshot = (s.hashes.clone(), s.received);
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&s.path)
                .await?;
            let max_new = (b + 1).saturating_sub(s.received);
            let mut h = s.hashes.clone();
            let res = spool(body, file, &mut h, skip, Some(max_new)).await;
            let rollback = |reason: ApiError| async {
                if let Ok(f) = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(&s.path)
                    .await
                {
                    let _ = f.set_len(snapshot.1).await;
                }
                reason
            };
            match res {
                Ok((seen, written)) if seen == len && written == max_new => {
                    s.hashes = h;
                    s.received = b + 1;
                    s.total = total;
                }
                Ok((seen, _)) => {
                    return Err(rollback(ApiError::bad_request(format!(
                        "the body holds {seen} bytes but Content-Range declares {len}"
                    )))
                    .await);
                }
                Err(e) => return Err(rollback(e).await),
            }
            if last {
                return finalize(&ctx, &mut s).await;
            }
            Ok(incomplete(s.received))
        }
    }
}

/// DELETE /upload/storage/v1/b/{bucket}/o?upload_id= (cancels a resumable upload: 499)
pub async fn upload_delete(
    State(ctx): State<EmulatorContext>,
    UrlPath(_bucket): UrlPath<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (id, sess) = session(&ctx, &uri)?;
    ctx.storage
        .uploads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    let s = sess.lock().await;
    if s.done.is_none() {
        let _ = tokio::fs::remove_file(&s.path).await;
    }
    Ok(StatusCode::from_u16(499)
        .unwrap_or(StatusCode::BAD_REQUEST)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10).unwrap(), None);
        assert_eq!(parse_range(Some("bytes=0-4"), 10).unwrap(), Some((0, 4)));
        assert_eq!(parse_range(Some("bytes=5-"), 10).unwrap(), Some((5, 9)));
        assert_eq!(parse_range(Some("bytes=-3"), 10).unwrap(), Some((7, 9)));
        assert_eq!(parse_range(Some("bytes=8-100"), 10).unwrap(), Some((8, 9)));
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-0",
            "bytes=0-1,3-4",
        ] {
            assert_eq!(parse_range(Some(bad), 10).unwrap_err().code, 416, "{bad}");
        }
        assert_eq!(parse_range(Some("items=0-1"), 10).unwrap(), None);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes */*").unwrap(),
            ContentRange::Status(None)
        );
        assert_eq!(
            parse_content_range("bytes */7").unwrap(),
            ContentRange::Status(Some(7))
        );
        assert_eq!(
            parse_content_range("bytes 0-9/*").unwrap(),
            ContentRange::Data(0, 9, None)
        );
        assert_eq!(
            parse_content_range("bytes 0-9/10").unwrap(),
            ContentRange::Data(0, 9, Some(10))
        );
        assert!(parse_content_range("bytes 0-10/10").is_err());
        assert!(parse_content_range("bytes 9-0/*").is_err());
    }

    #[test]
    fn object_posts_are_read_from_the_raw_path() {
        assert_eq!(
            parse_object_post("/storage/v1/b/bk/o/a%2Fb/compose").unwrap(),
            ObjectPost::Compose("a/b".into())
        );
        assert_eq!(
            parse_object_post("/storage/v1/b/bk/o/x%2F/rewriteTo/b/b2/o/y%20z").unwrap(),
            ObjectPost::Copy {
                src: "x/".into(),
                dst_bucket: "b2".into(),
                dst: "y z".into(),
                rewrite: true
            }
        );
        assert!(matches!(
            parse_object_post("/storage/v1/b/bk/o/s/copyTo/b/b2/o/d").unwrap(),
            ObjectPost::Copy { rewrite: false, .. }
        ));
        assert_eq!(
            parse_object_post("/storage/v1/b/bk/o/plain")
                .unwrap_err()
                .code,
            404
        );
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary_of("multipart/related; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary_of("multipart/related; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(
            boundary_of("multipart/related; boundary='===============74=='").as_deref(),
            Some("===============74==")
        );
        assert_eq!(boundary_of("text/plain"), None);
    }
}
