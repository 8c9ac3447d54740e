//! Cloud Storage JSON API client over reqwest (rustls), the same code against the emulator,
//! fake-gcs-server and storage.googleapis.com.
//!
//! The endpoint follows `STORAGE_EMULATOR_HOST` as Google's libraries do (`host:port` means
//! `http://host:port`; a URL is used as is; then no auth by default), else
//! `https://storage.googleapis.com`. Every call retries 429, 5xx and transport errors with
//! [`RetryPolicy`]; writes should carry generation preconditions so a retried write is safe.
//! Large uploads are resumable, sent in chunks (default 8 MiB) held one at a time in memory,
//! each chunk retried and resumed from the range the server reports.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use md5::Digest;
use reqwest::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::auth::{AuthError, TokenSource};
use super::retry::{RetryPolicy, retryable_status};
use crate::protocol::{ByteStream, ErrorKind, SandboxError};

/// Google's public endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Resumable chunks must be multiples of this (except the last).
pub const CHUNK_GRANULARITY: usize = 256 * 1024;
/// Default resumable chunk size.
pub const DEFAULT_CHUNK_SIZE: usize = 8 * 1024 * 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A failed Cloud Storage call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The API answered an error status.
    #[error("{op}: Cloud Storage answered {status}: {message}")]
    Api {
        /// The client operation.
        op: String,
        /// HTTP status.
        status: u16,
        /// `errors[0].reason` (or the status name), when given.
        reason: String,
        /// Google's error message.
        message: String,
    },
    /// A generation/metageneration precondition did not hold (412).
    #[error("{op}: precondition failed: {message}")]
    PreconditionFailed {
        /// The client operation.
        op: String,
        /// Google's error message.
        message: String,
    },
    /// Connection, TLS or body-transfer failure.
    #[error("{op}: transport error: {detail}")]
    Transport {
        /// The client operation.
        op: String,
        /// What failed.
        detail: String,
        /// True when it was a timeout.
        timeout: bool,
    },
    /// No token could be obtained.
    #[error("{op}: {source}")]
    Auth {
        /// The client operation.
        op: String,
        /// Why.
        source: AuthError,
    },
    /// The server answered something this client cannot read.
    #[error("{op}: unexpected response: {detail}")]
    Protocol {
        /// The client operation.
        op: String,
        /// What was wrong.
        detail: String,
    },
    /// Hashes did not match what was sent or received.
    #[error("{op}: data corruption: {detail}")]
    Corrupt {
        /// The client operation.
        op: String,
        /// Which hash differed.
        detail: String,
    },
    /// The caller's input was unusable (bad chunk size, failing upload stream...).
    #[error("{op}: invalid input: {detail}")]
    InvalidInput {
        /// The client operation.
        op: String,
        /// What was wrong.
        detail: String,
    },
}

impl StorageError {
    /// The HTTP status, when the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            StorageError::Api { status, .. } => Some(*status),
            StorageError::PreconditionFailed { .. } => Some(412),
            _ => None,
        }
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when retrying may help (429, 5xx, 408, transport).
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Api { status, .. } => retryable_status(*status),
            StorageError::Transport { .. } => true,
            _ => false,
        }
    }

    /// The protocol error class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::Api { status, .. } => match *status {
                404 | 410 => ErrorKind::NotFound,
                401 | 403 => ErrorKind::Permission,
                400 | 416 => ErrorKind::InvalidInput,
                408 => ErrorKind::Timeout,
                s if retryable_status(s) => ErrorKind::Network,
                _ => ErrorKind::Backend,
            },
            StorageError::PreconditionFailed { .. } => ErrorKind::Backend,
            StorageError::Transport { timeout: true, .. } => ErrorKind::Timeout,
            StorageError::Transport { .. } => ErrorKind::Network,
            StorageError::Auth { .. } => ErrorKind::Permission,
            StorageError::Protocol { .. } | StorageError::Corrupt { .. } => ErrorKind::Backend,
            StorageError::InvalidInput { .. } => ErrorKind::InvalidInput,
        }
    }

    /// The protocol error for sandbox `sandbox`, operation `op`.
    pub fn into_sandbox_error(self, sandbox: &str, op: &str) -> SandboxError {
        SandboxError::new(self.kind(), sandbox, op, self.to_string()).with_source(self)
    }

    fn transport(op: &str, e: &reqwest::Error) -> Self {
        StorageError::Transport {
            op: op.to_string(),
            detail: error_chain(e),
            timeout: e.is_timeout(),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn de_i64_str<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom("not an i64")),
        Value::Null => Ok(0),
        v => Err(serde::de::Error::custom(format!(
            "expected a number, got {v}"
        ))),
    }
}

fn de_u64_str<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = de_i64_str(d)?;
    u64::try_from(v).map_err(serde::de::Error::custom)
}

/// An object resource.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// Object name.
    pub name: String,
    /// Bucket name.
    pub bucket: String,
    /// Generation.
    #[serde(deserialize_with = "de_i64_str", default)]
    pub generation: i64,
    /// Metageneration.
    #[serde(deserialize_with = "de_i64_str", default)]
    pub metageneration: i64,
    /// Size in bytes.
    #[serde(deserialize_with = "de_u64_str", default)]
    pub size: u64,
    /// Content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// MD5, base64.
    #[serde(default)]
    pub md5_hash: Option<String>,
    /// CRC32C, base64 (big-endian).
    #[serde(default)]
    pub crc32c: Option<String>,
    /// Creation time.
    #[serde(default)]
    pub time_created: Option<DateTime<Utc>>,
    /// Last update.
    #[serde(default)]
    pub updated: Option<DateTime<Utc>>,
    /// Custom metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A lifecycle configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct Lifecycle {
    /// Rules.
    #[serde(default)]
    pub rule: Vec<LifecycleRule>,
}

/// One lifecycle rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LifecycleRule {
    /// What to do.
    pub action: LifecycleAction,
    /// When.
    pub condition: LifecycleCondition,
}

impl LifecycleRule {
    /// Delete objects at least `age_days` old whose names start with one of `prefixes` (all when empty).
    pub fn delete_after_days(age_days: u32, prefixes: &[&str]) -> Self {
        LifecycleRule {
            action: LifecycleAction {
                kind: "Delete".into(),
                storage_class: None,
                other: BTreeMap::new(),
            },
            condition: LifecycleCondition {
                age: Some(age_days),
                matches_prefix: prefixes.iter().map(|p| p.to_string()).collect(),
                matches_suffix: Vec::new(),
                other: BTreeMap::new(),
            },
        }
    }
}

/// A lifecycle action.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleAction {
    /// "Delete", "SetStorageClass", ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Target class for SetStorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Fields this client does not model, kept so a read-modify-write loses nothing.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// A lifecycle condition (the subset the harness uses).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleCondition {
    /// Age in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<u32>,
    /// Name prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches_prefix: Vec<String>,
    /// Name suffixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches_suffix: Vec<String>,
    /// Conditions this client does not model (createdBefore, isLive...), kept so a
    /// read-modify-write loses nothing.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// A bucket resource.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Name.
    pub name: String,
    /// Location.
    #[serde(default)]
    pub location: Option<String>,
    /// Storage class.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Lifecycle configuration.
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    /// Metageneration.
    #[serde(deserialize_with = "de_i64_str", default)]
    pub metageneration: i64,
}

/// What to create a bucket with.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    /// Name.
    pub name: String,
    /// Location (e.g. "US-CENTRAL1").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Storage class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Lifecycle configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// Preconditions and metadata of a write or delete.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Content type of the new object.
    pub content_type: Option<String>,
    /// Custom metadata.
    pub metadata: BTreeMap<String, String>,
    /// Only if the live generation is this (0 = the object must not exist).
    pub if_generation_match: Option<i64>,
    /// Only if the live generation is not this.
    pub if_generation_not_match: Option<i64>,
    /// Only if the live metageneration is this.
    pub if_metageneration_match: Option<i64>,
}

impl WriteOptions {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(g) = self.if_generation_match {
            q.push(("ifGenerationMatch", g.to_string()));
        }
        if let Some(g) = self.if_generation_not_match {
            q.push(("ifGenerationNotMatch", g.to_string()));
        }
        if let Some(g) = self.if_metageneration_match {
            q.push(("ifMetagenerationMatch", g.to_string()));
        }
        q
    }

    fn resource(&self, name: &str) -> Value {
        let mut v = json!({"name": name});
        if let Some(c) = &self.content_type {
            v["contentType"] = json!(c);
        }
        if !self.metadata.is_empty() {
            v["metadata"] = json!(self.metadata);
        }
        v
    }
}

/// Listing parameters.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Roll names up to the first delimiter after the prefix into `prefixes`.
    pub delimiter: Option<String>,
    /// Page size.
    pub max_results: Option<u32>,
    /// Continue from a previous page.
    pub page_token: Option<String>,
    /// With a delimiter, also list objects whose names end in the delimiter (folder
    /// placeholders such as `dir/`) as items beside their prefix.
    pub include_trailing_delimiter: bool,
    /// Only names at or after this one (lexicographically).
    pub start_offset: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectPage {
    /// Objects.
    #[serde(default)]
    pub items: Vec<Object>,
    /// Rolled-up prefixes (with a delimiter).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Token of the next page.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// A streamed object body.
pub type StorageStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// A download in progress.
pub struct Download {
    /// The object's generation (from `x-goog-generation`), when given.
    pub generation: Option<i64>,
    /// Bytes in this response body, when given.
    pub content_length: Option<u64>,
    /// The body.
    pub stream: StorageStream,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("generation", &self.generation)
            .field("content_length", &self.content_length)
            .finish()
    }
}

impl Download {
    /// The body as a protocol byte stream for sandbox `sandbox`, operation `op`.
    pub fn into_byte_stream(self, sandbox: &str, op: &str) -> ByteStream {
        let (sandbox, op) = (sandbox.to_string(), op.to_string());
        Box::pin(
            self.stream
                .map(move |r| r.map_err(|e| e.into_sandbox_error(&sandbox, &op))),
        )
    }

    /// Collects the body (small objects only).
    pub async fn collect(mut self) -> Result<Bytes, StorageError> {
        let mut out = BytesMut::new();
        while let Some(c) = self.stream.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out.freeze())
    }
}

/// The endpoint from `STORAGE_EMULATOR_HOST`, if set.
pub fn emulator_endpoint_from_env() -> Option<String> {
    normalize_emulator_host(&std::env::var("STORAGE_EMULATOR_HOST").ok()?)
}

/// `host:port` -> `http://host:port`; a URL stays; empty -> `None`.
pub fn normalize_emulator_host(v: &str) -> Option<String> {
    let v = v.trim().trim_end_matches('/');
    if v.is_empty() {
        return None;
    }
    Some(if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    })
}

/// Percent-encodes an object name as one path segment.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// How often one download resumes after its stream broke.
pub const MAX_DOWNLOAD_RESUMES: u32 = 5;

type BodyStream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Where a download stands, to resume it with a Range request.
struct ResumeState {
    client: StorageClient,
    url: String,
    query: Vec<(&'static str, String)>,
    start: u64,
    end: Option<u64>,
    received: u64,
    resumes_left: u32,
}

impl ResumeState {
    /// The rest of the content, from the first byte not yet received.
    async fn reopen(&self, op: &str) -> Result<BodyStream, StorageError> {
        let from = self.start + self.received;
        let range = match self.end {
            Some(b) => format!("bytes={from}-{b}"),
            None => format!("bytes={from}-"),
        };
        let r = self
            .client
            .send(
                op,
                || {
                    self.client
                        .http
                        .get(&self.url)
                        .query(&self.query)
                        .header(reqwest::header::RANGE, &range)
                },
                |s| s.is_success(),
            )
            .await?;
        if r.status() != StatusCode::PARTIAL_CONTENT {
            return Err(StorageError::Protocol {
                op: op.into(),
                detail: format!("resuming with {range}, got {}", r.status()),
            });
        }
        Ok(Box::pin(r.bytes_stream()))
    }
}

/// Cloud Storage JSON API client.
#[derive(Clone)]
pub struct StorageClient {
    http: reqwest::Client,
    base: String,
    tokens: TokenSource,
    retry: RetryPolicy,
    chunk_size: usize,
    simple_limit: usize,
    request_timeout: Duration,
    recorder: Option<super::observe::CallRecorder>,
}

impl fmt::Debug for StorageClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageClient")
            .field("base", &self.base)
            .field("tokens", &self.tokens)
            .finish()
    }
}

enum ChunkOutcome {
    Done(Object),
    Persisted(u64),
}

impl StorageClient {
    /// A client for `base_url` (e.g. `https://storage.googleapis.com` or an emulator URL).
    pub fn new(base_url: &str, tokens: TokenSource) -> Result<Self, StorageError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| StorageError::transport("client", &e))?;
        Ok(StorageClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            tokens,
            retry: RetryPolicy::default(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            simple_limit: DEFAULT_CHUNK_SIZE,
            request_timeout: Duration::from_secs(120),
            recorder: None,
        })
    }

    /// `STORAGE_EMULATOR_HOST` (anonymous) if set, else Google's endpoint with Google credentials.
    pub async fn from_env() -> Result<Self, StorageError> {
        match emulator_endpoint_from_env() {
            Some(url) => Self::new(&url, TokenSource::Anonymous),
            None => {
                let t = TokenSource::google(None)
                    .await
                    .map_err(|source| StorageError::Auth {
                        op: "from_env".into(),
                        source,
                    })?;
                Self::new(DEFAULT_ENDPOINT, t)
            }
        }
    }

    /// Records how long each call takes (`bench --record-profile`).
    pub fn with_recorder(mut self, recorder: super::observe::CallRecorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the resumable chunk size (a positive multiple of 256 KiB).
    pub fn with_chunk_size(mut self, bytes: usize) -> Result<Self, StorageError> {
        if bytes == 0 || !bytes.is_multiple_of(CHUNK_GRANULARITY) {
            return Err(StorageError::InvalidInput {
                op: "with_chunk_size".into(),
                detail: format!("{bytes} is not a positive multiple of {CHUNK_GRANULARITY}"),
            });
        }
        self.chunk_size = bytes;
        Ok(self)
    }

    /// Uploads of known length up to this size go in one multipart request.
    pub fn with_simple_upload_limit(mut self, bytes: usize) -> Self {
        self.simple_limit = bytes;
        self
    }

    /// Per-request timeout of non-streaming calls and of each chunk.
    pub fn with_request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// The endpoint.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn error_from(op: &str, resp: reqwest::Response) -> StorageError {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(500).collect());
        let reason = v["error"]["errors"][0]["reason"]
            .as_str()
            .or_else(|| v["error"]["status"].as_str())
            .unwrap_or("")
            .to_string();
        if status == 412 {
            return StorageError::PreconditionFailed {
                op: op.into(),
                message,
            };
        }
        StorageError::Api {
            op: op.into(),
            status,
            reason,
            message,
        }
    }

    /// Sends one request built by `build` (called per attempt) with auth and retries;
    /// `ok` decides which statuses are success.
    async fn send(
        &self,
        op: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
        ok: impl Fn(StatusCode) -> bool,
    ) -> Result<reqwest::Response, StorageError> {
        self.send_with(self.retry, op, build, ok).await
    }

    /// [`send`](Self::send) under `policy`.
    async fn send_with(
        &self,
        policy: RetryPolicy,
        op: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
        ok: impl Fn(StatusCode) -> bool,
    ) -> Result<reqwest::Response, StorageError> {
        policy
            .run(
                |_attempt| async {
                    let req = self.tokens.authorize(build()).await.map_err(|source| {
                        StorageError::Auth {
                            op: op.into(),
                            source,
                        }
                    })?;
                    let sent = std::time::Instant::now();
                    let resp = req
                        .send()
                        .await
                        .map_err(|e| StorageError::transport(op, &e))?;
                    if let Some(r) = &self.recorder {
                        r.record(&super::observe::storage_method(op), sent.elapsed());
                    }
                    if ok(resp.status()) {
                        Ok(resp)
                    } else {
                        Err(Self::error_from(op, resp).await)
                    }
                },
                StorageError::is_retryable,
            )
            .await
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        op: &str,
        resp: reqwest::Response,
    ) -> Result<T, StorageError> {
        let text = resp
            .text()
            .await
            .map_err(|e| StorageError::transport(op, &e))?;
        serde_json::from_str(&text).map_err(|e| StorageError::Protocol {
            op: op.into(),
            detail: format!("{e}: {}", text.chars().take(300).collect::<String>()),
        })
    }

    // ---------------- buckets ----------------

    /// Reads a bucket.
    pub async fn get_bucket(&self, bucket: &str) -> Result<Bucket, StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}", enc(bucket)));
        let r = self
            .send(
                "buckets.get",
                || self.http.get(&url).timeout(self.request_timeout),
                |s| s.is_success(),
            )
            .await?;
        Self::json("buckets.get", r).await
    }

    /// Creates a bucket in `project`.
    pub async fn insert_bucket(
        &self,
        project: &str,
        spec: &BucketSpec,
    ) -> Result<Bucket, StorageError> {
        let url = self.url("/storage/v1/b");
        let r = self
            .send(
                "buckets.insert",
                || {
                    self.http
                        .post(&url)
                        .query(&[("project", project)])
                        .json(spec)
                        .timeout(self.request_timeout)
                },
                |s| s.is_success(),
            )
            .await?;
        Self::json("buckets.insert", r).await
    }

    /// Sets (or with `None` removes) the bucket's lifecycle configuration.
    pub async fn patch_bucket_lifecycle(
        &self,
        bucket: &str,
        lifecycle: Option<&Lifecycle>,
    ) -> Result<Bucket, StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}", enc(bucket)));
        let body = json!({"lifecycle": lifecycle});
        let r = self
            .send(
                "buckets.patch",
                || {
                    self.http
                        .patch(&url)
                        .json(&body)
                        .timeout(self.request_timeout)
                },
                |s| s.is_success(),
            )
            .await?;
        Self::json("buckets.patch", r).await
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}", enc(bucket)));
        self.send(
            "buckets.delete",
            || self.http.delete(&url).timeout(self.request_timeout),
            |s| s.is_success(),
        )
        .await?;
        Ok(())
    }

    /// The subset of `permissions` the caller holds on the bucket.
    pub async fn test_iam_permissions(
        &self,
        bucket: &str,
        permissions: &[&str],
    ) -> Result<Vec<String>, StorageError> {
        let url = self.url(&format!(
            "/storage/v1/b/{}/iam/testPermissions",
            enc(bucket)
        ));
        let q: Vec<(&str, &str)> = permissions.iter().map(|p| ("permissions", *p)).collect();
        let r = self
            .send(
                "buckets.testIamPermissions",
                || self.http.get(&url).query(&q).timeout(self.request_timeout),
                |s| s.is_success(),
            )
            .await?;
        let v: Value = Self::json("buckets.testIamPermissions", r).await?;
        Ok(v["permissions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The bucket's IAM policy bindings: role -> members.
    pub async fn get_bucket_iam_policy(
        &self,
        bucket: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}/iam", enc(bucket)));
        let r = self
            .send(
                "buckets.getIamPolicy",
                || self.http.get(&url).timeout(self.request_timeout),
                |s| s.is_success(),
            )
            .await?;
        let v: Value = Self::json("buckets.getIamPolicy", r).await?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for b in v["bindings"].as_array().into_iter().flatten() {
            let members = b["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_string));
            if let Some(role) = b["role"].as_str() {
                out.entry(role.to_string()).or_default().extend(members);
            }
        }
        Ok(out)
    }

    // ---------------- objects ----------------

    /// An object's metadata.
    pub async fn get_object(&self, bucket: &str, name: &str) -> Result<Object, StorageError> {
        Ok(self.get_object_at(bucket, name).await?.0)
    }

    /// An object's metadata and the server's clock when it answered (its HTTP `Date`), so an
    /// age can be judged by server time alone (`updated` against `Date`).
    pub async fn get_object_at(
        &self,
        bucket: &str,
        name: &str,
    ) -> Result<(Object, Option<DateTime<Utc>>), StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}/o/{}", enc(bucket), enc(name)));
        let r = self
            .send(
                "objects.get",
                || self.http.get(&url).timeout(self.request_timeout),
                |s| s.is_success(),
            )
            .await?;
        let date = r
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.with_timezone(&Utc));
        Ok((Self::json("objects.get", r).await?, date))
    }

    /// One page of objects.
    pub async fn list_objects(
        &self,
        bucket: &str,
        opts: &ListOptions,
    ) -> Result<ObjectPage, StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}/o", enc(bucket)));
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(p) = &opts.prefix {
            q.push(("prefix", p.clone()));
        }
        if let Some(d) = &opts.delimiter {
            q.push(("delimiter", d.clone()));
        }
        if let Some(m) = opts.max_results {
            q.push(("maxResults", m.to_string()));
        }
        if let Some(t) = &opts.page_token {
            q.push(("pageToken", t.clone()));
        }
        if opts.include_trailing_delimiter {
            q.push(("includeTrailingDelimiter", "true".into()));
        }
        if let Some(o) = &opts.start_offset {
            q.push(("startOffset", o.clone()));
        }
        let r = self
            .send(
                "objects.list",
                || self.http.get(&url).query(&q).timeout(self.request_timeout),
                |s| s.is_success(),
            )
            .await?;
        Self::json("objects.list", r).await
    }

    /// Every page of a listing: (objects, prefixes).
    pub async fn list_all(
        &self,
        bucket: &str,
        opts: &ListOptions,
    ) -> Result<(Vec<Object>, Vec<String>), StorageError> {
        let mut opts = opts.clone();
        let (mut items, mut prefixes) = (Vec::new(), Vec::new());
        loop {
            let page = self.list_objects(bucket, &opts).await?;
            items.extend(page.items);
            prefixes.extend(page.prefixes);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => opts.page_token = Some(t),
                None => break,
            }
        }
        Ok((items, prefixes))
    }

    /// Deletes an object (with generation preconditions from `opts`).
    pub async fn delete_object(
        &self,
        bucket: &str,
        name: &str,
        opts: &WriteOptions,
    ) -> Result<(), StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}/o/{}", enc(bucket), enc(name)));
        let q = opts.query();
        self.send(
            "objects.delete",
            || {
                self.http
                    .delete(&url)
                    .query(&q)
                    .timeout(self.request_timeout)
            },
            |s| s.is_success(),
        )
        .await?;
        Ok(())
    }

    /// Replaces custom metadata keys of an object (objects.patch); `opts` carries the
    /// metageneration precondition.
    pub async fn patch_object_metadata(
        &self,
        bucket: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
        opts: &WriteOptions,
    ) -> Result<Object, StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}/o/{}", enc(bucket), enc(name)));
        let q = opts.query();
        let body = json!({ "metadata": metadata });
        let r = self
            .send(
                "objects.patch",
                || {
                    self.http
                        .patch(&url)
                        .query(&q)
                        .json(&body)
                        .timeout(self.request_timeout)
                },
                |s| s.is_success(),
            )
            .await?;
        Self::json("objects.patch", r).await
    }

    /// Renames `src` to `dst` within `bucket` in one step (objects.move), only while `src`
    /// is generation `source_generation` when given; `opts` carries destination preconditions.
    pub async fn move_object(
        &self,
        bucket: &str,
        src: &str,
        source_generation: Option<i64>,
        dst: &str,
        opts: &WriteOptions,
    ) -> Result<Object, StorageError> {
        let op = "objects.move";
        let url = self.url(&format!(
            "/storage/v1/b/{}/o/{}/moveTo/o/{}",
            enc(bucket),
            enc(src),
            enc(dst)
        ));
        let mut q = opts.query();
        if let Some(g) = source_generation {
            q.push(("ifSourceGenerationMatch", g.to_string()));
        }
        let r = self
            .send(
                op,
                || self.http.post(&url).query(&q).timeout(self.request_timeout),
                |s| s.is_success(),
            )
            .await?;
        Self::json(op, r).await
    }

    /// Copies generation `source_generation` (the live one when `None`) of `src` to `dst`
    /// within `bucket` with objects.rewrite, following rewrite tokens until done; `opts`
    /// carries the destination preconditions.
    pub async fn rewrite_object(
        &self,
        bucket: &str,
        src: &str,
        source_generation: Option<i64>,
        dst: &str,
        opts: &WriteOptions,
    ) -> Result<Object, StorageError> {
        let op = "objects.rewrite";
        let url = self.url(&format!(
            "/storage/v1/b/{}/o/{}/rewriteTo/b/{}/o/{}",
            enc(bucket),
            enc(src),
            enc(bucket),
            enc(dst)
        ));
        let mut token: Option<String> = None;
        loop {
            let mut q = opts.query();
            if let Some(g) = source_generation {
                q.push(("sourceGeneration", g.to_string()));
            }
            if let Some(t) = &token {
                q.push(("rewriteToken", t.clone()));
            }
            let r = self
                .send(
                    op,
                    || {
                        self.http
                            .post(&url)
                            .query(&q)
                            .json(&json!({}))
                            .timeout(self.request_timeout)
                    },
                    |s| s.is_success(),
                )
                .await?;
            let v: Value = Self::json(op, r).await?;
            if v["done"].as_bool() == Some(true) {
                return serde_json::from_value(v["resource"].clone()).map_err(|e| {
                    StorageError::Protocol {
                        op: op.into(),
                        detail: format!("unreadable rewrite resource: {e}"),
                    }
                });
            }
            match v["rewriteToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => {
                    return Err(StorageError::Protocol {
                        op: op.into(),
                        detail: "a rewrite answer that is neither done nor carries a rewriteToken"
                            .into(),
                    });
                }
            }
        }
    }

    /// Streams an object's content, or the inclusive byte range `range`. A full download is
    /// checked against the `x-goog-hash` crc32c at its end.
    pub async fn download(
        &self,
        bucket: &str,
        name: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Download, StorageError> {
        self.download_generation(bucket, name, range, None).await
    }

    /// [`download`](Self::download) of generation `generation` (404 when that generation
    /// no longer exists), or of the live one when `None`.
    pub async fn download_generation(
        &self,
        bucket: &str,
        name: &str,
        range: Option<(u64, Option<u64>)>,
        generation: Option<i64>,
    ) -> Result<Download, StorageError> {
        let generation_asked = generation;
        let op = "objects.download";
        let url = self.url(&format!("/storage/v1/b/{}/o/{}", enc(bucket), enc(name)));
        let range_h = range.map(|(a, b)| match b {
            Some(b) => format!("bytes={a}-{b}"),
            None => format!("bytes={a}-"),
        });
        let mut q = vec![("alt", "media".to_string())];
        if let Some(g) = generation {
            q.push(("generation", g.to_string()));
        }
        let r = self
            .send(
                op,
                || {
                    let mut r = self.http.get(&url).query(&q);
                    if let Some(h) = &range_h {
                        r = r.header(reqwest::header::RANGE, h);
                    }
                    r
                },
                |s| s.is_success(),
            )
            .await?;
        if range.is_some() && r.status() != StatusCode::PARTIAL_CONTENT {
            return Err(StorageError::Protocol {
                op: op.into(),
                detail: format!("asked for a range, got {}", r.status()),
            });
        }
        let generation = r
            .headers()
            .get("x-goog-generation")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let expect_crc = if range.is_none() && r.headers().get("content-encoding").is_none() {
            r.headers()
                .get_all("x-goog-hash")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .find_map(|p| p.trim().strip_prefix("crc32c=").map(str::to_string))
        } else {
            None
        };
        let content_length = r.content_length();
        let body: BodyStream = Box::pin(r.bytes_stream());
        // A stream broken in transit is resumed with a Range request for the rest, pinned to
        // the generation first read (Google's clients do the same: "Resumable downloads",
        // https://cloud.google.com/storage/docs/resumable-downloads), at most
        // MAX_DOWNLOAD_RESUMES times.
        let resume = ResumeState {
            client: self.clone(),
            url,
            query: {
                let mut q = vec![("alt", "media".to_string())];
                if let Some(g) = generation.or(generation_asked) {
                    q.push(("generation", g.to_string()));
                }
                q
            },
            start: range.map_or(0, |(a, _)| a),
            end: range.and_then(|(_, b)| b),
            received: 0,
            resumes_left: if generation.or(generation_asked).is_some() {
                MAX_DOWNLOAD_RESUMES
            } else {
                0
            },
        };
        let stream = futures::stream::unfold(
            (body, 0u32, expect_crc, false, resume),
            move |(mut body, crc, expect, finished, mut resume)| async move {
                if finished {
                    return None;
                }
                let next = loop {
                    match body.next().await {
                        Some(Err(e)) if resume.resumes_left > 0 => {
                            tracing::debug!(error = %e, received = resume.received, "download broken; resuming with a Range request");
                            resume.resumes_left -= 1;
                            match resume.reopen(op).await {
                                Ok(b) => body = b,
                                Err(e) => break Some(Err(e)),
                            }
                        }
                        Some(Err(e)) => break Some(Err(StorageError::transport(op, &e))),
                        Some(Ok(b)) => break Some(Ok(b)),
                        None => break None,
                    }
                };
                match next {
                    Some(Ok(b)) => {
                        let crc = crc32c::crc32c_append(crc, &b);
                        resume.received += b.len() as u64;
                        Some((Ok(b), (body, crc, expect, false, resume)))
                    }
                    Some(Err(e)) => Some((Err(e), (body, crc, expect, true, resume))),
                    None => match &expect {
                        Some(want) if *want != B64.encode(crc.to_be_bytes()) => Some((
                            Err(StorageError::Corrupt {
                                op: op.into(),
                                detail: format!(
                                    "crc32c {} != x-goog-hash {want}",
                                    B64.encode(crc.to_be_bytes())
                                ),
                            }),
                            (body, crc, expect, true, resume),
                        )),
                        _ => None,
                    },
                }
            },
        );
        Ok(Download {
            generation,
            content_length,
            stream: Box::pin(stream),
        })
    }

    /// Uploads bytes already in memory (one multipart request; resumable past the simple limit).
    pub async fn insert_object(
        &self,
        bucket: &str,
        name: &str,
        data: Bytes,
        opts: &WriteOptions,
    ) -> Result<Object, StorageError> {
        self.insert_object_once_or_more(bucket, name, data, opts)
            .await
            .0
    }

    /// [`Self::insert_object`], also telling whether the write may have been sent more than
    /// once (a retry, or a resumable upload whose attempts are not counted here): a 412 on a
    /// write sent once is somebody else's object, never this write's own.
    pub async fn insert_object_once_or_more(
        &self,
        bucket: &str,
        name: &str,
        data: Bytes,
        opts: &WriteOptions,
    ) -> (Result<Object, StorageError>, bool) {
        if data.len() > self.simple_limit {
            let len = data.len() as u64;
            let s = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(data) });
            return (
                self.upload_object(bucket, name, s, Some(len), opts).await,
                true,
            );
        }
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let r = self.multipart(bucket, name, data, opts, &attempts).await;
        (r, attempts.load(std::sync::atomic::Ordering::SeqCst) > 1)
    }

    async fn multipart(
        &self,
        bucket: &str,
        name: &str,
        data: Bytes,
        opts: &WriteOptions,
        attempts: &std::sync::atomic::AtomicU32,
    ) -> Result<Object, StorageError> {
        let op = "objects.insert";
        let boundary = format!("sandbox_harness_{}", uuid::Uuid::new_v4().simple());
        let ctype = opts
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let mut body = BytesMut::with_capacity(data.len() + 512);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(opts.resource(name).to_string().as_bytes());
        body.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: {ctype}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = body.freeze();
        let url = self.url(&format!("/upload/storage/v1/b/{}/o", enc(bucket)));
        let mut sent = LocalHashes::default();
        sent.update(&data);
        let (crc, size) = (B64.encode(sent.crc.to_be_bytes()), data.len() as u64);
        // Google's rule for objects.insert: retry only under a generation precondition
        // ("conditionally idempotent", https://cloud.google.com/storage/docs/retry-strategy).
        // A write without one gets it for its retries: after a retryable failure the object
        // is read; if it holds these bytes the first attempt landed and counts, else the retry
        // goes out with `ifGenerationMatch` of what is there (0: absent). A 412 on a retry is
        // judged the same way: it may be the earlier attempt's own write.
        let precondition = std::sync::Mutex::new(opts.if_generation_match);
        let lock = || precondition.lock().unwrap_or_else(|p| p.into_inner());
        let unconditional = opts.if_generation_match.is_none();
        let landed = |o: &Object| {
            o.crc32c.as_deref() == Some(crc.as_str())
                && o.size == size
                && opts
                    .metadata
                    .iter()
                    .all(|(k, v)| o.metadata.get(k) == Some(v))
        };
        let obj = self
            .retry
            .run(
                |attempt| {
                    let (url, body, boundary) = (&url, &body, &boundary);
                    let (lock, landed) = (&lock, &landed);
                    attempts.store(attempt, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        if attempt > 1 {
                            // A failed read here is retryable or not as itself; a 404 only
                            // says the earlier attempt did not land.
                            match self.get_object_once(bucket, name).await {
                                Ok(o) if landed(&o) => return Ok(o),
                                Ok(o) if unconditional => *lock() = Some(o.generation),
                                Ok(_) => {}
                                Err(e) if e.is_not_found() => {
                                    if unconditional {
                                        *lock() = Some(0);
                                    }
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        let mut q = WriteOptions {
                            if_generation_match: *lock(),
                            ..opts.clone()
                        }
                        .query();
                        q.push(("uploadType", "multipart".into()));
                        let r = self
                            .send_with(
                                RetryPolicy::none(),
                                op,
                                || {
                                    self.http
                                        .post(url)
                                        .query(&q)
                                        .header(
                                            reqwest::header::CONTENT_TYPE,
                                            format!("multipart/related; boundary={boundary}"),
                                        )
                                        .body(body.clone())
                                        .timeout(self.request_timeout)
                                },
                                |s| s.is_success(),
                            )
                            .await;
                        match r {
                            Ok(r) => Self::json::<Object>(op, r).await,
                            Err(e) if attempt > 1 && e.status() == Some(412) => {
                                match self.get_object_once(bucket, name).await {
                                    Ok(o) if landed(&o) => Ok(o),
                                    _ => Err(e),
                                }
                            }
                            Err(e) => Err(e),
                        }
                    }
                },
                StorageError::is_retryable,
            )
            .await?;
        sent.verify(op, &obj)?;
        Ok(obj)
    }

    /// One `objects.get` of metadata, not retried (the caller's retry loop decides).
    async fn get_object_once(&self, bucket: &str, name: &str) -> Result<Object, StorageError> {
        let url = self.url(&format!("/storage/v1/b/{}/o/{}", enc(bucket), enc(name)));
        let r = self
            .send_with(
                RetryPolicy::none(),
                "objects.get",
                || self.http.get(&url).timeout(self.request_timeout),
                |s| s.is_success(),
            )
            .await?;
        Self::json("objects.get", r).await
    }

    /// Uploads a stream: one request when `len` is known and small, else a resumable upload in
    /// chunks (memory bounded by the chunk size).
    pub async fn upload_object<S, E>(
        &self,
        bucket: &str,
        name: &str,
        stream: S,
        len: Option<u64>,
        opts: &WriteOptions,
    ) -> Result<Object, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: fmt::Display,
    {
        let op = "objects.insert";
        let mut stream = Box::pin(stream);
        if let Some(n) = len.filter(|n| *n <= self.simple_limit as u64) {
            let mut buf = BytesMut::with_capacity(n as usize);
            while let Some(c) = stream.next().await {
                let c = c.map_err(|e| StorageError::InvalidInput {
                    op: op.into(),
                    detail: format!("reading the upload body: {e}"),
                })?;
                buf.extend_from_slice(&c);
                if buf.len() as u64 > n {
                    break;
                }
            }
            if buf.len() as u64 != n {
                return Err(StorageError::InvalidInput {
                    op: op.into(),
                    detail: format!(
                        "the upload body has {} bytes, {n} were announced",
                        buf.len()
                    ),
                });
            }
            return self
                .multipart(
                    bucket,
                    name,
                    buf.freeze(),
                    opts,
                    &std::sync::atomic::AtomicU32::new(0),
                )
                .await;
        }
        let session = self.start_resumable(bucket, name, len, opts).await?;
        let chunk = self.chunk_size;
        let mut carry = BytesMut::new();
        let mut offset = 0u64;
        let mut eof = false;
        let mut hashes = LocalHashes::default();
        loop {
            let mut buf = BytesMut::with_capacity(chunk + CHUNK_GRANULARITY);
            buf.extend_from_slice(&carry.split());
            while buf.len() <= chunk && !eof {
                match stream.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => {
                        let _ = self.cancel_resumable(&session).await;
                        return Err(StorageError::InvalidInput {
                            op: op.into(),
                            detail: format!("reading the upload body: {e}"),
                        });
                    }
                    None => eof = true,
                }
            }
            if buf.len() > chunk {
                carry = buf.split_off(chunk);
            }
            let data = buf.freeze();
            hashes.update(&data);
            let last = eof && carry.is_empty();
            let total = last.then_some(offset + data.len() as u64);
            if let (Some(t), Some(n)) = (total, len)
                && t != n
            {
                let _ = self.cancel_resumable(&session).await;
                return Err(StorageError::InvalidInput {
                    op: op.into(),
                    detail: format!("the upload body has {t} bytes, {n} were announced"),
                });
            }
            match self
                .put_chunk(&session, offset, data.clone(), total)
                .await?
            {
                ChunkOutcome::Done(obj) => {
                    if !last {
                        return Err(StorageError::Protocol {
                            op: op.into(),
                            detail: "the server finished the upload before the last chunk".into(),
                        });
                    }
                    hashes.verify(op, &obj)?;
                    return Ok(obj);
                }
                ChunkOutcome::Persisted(n) => {
                    if last {
                        return Err(StorageError::Protocol {
                            op: op.into(),
                            detail: format!(
                                "the last chunk was sent but the server reports only {n} bytes"
                            ),
                        });
                    }
                    offset += data.len() as u64;
                }
            }
        }
    }

    async fn start_resumable(
        &self,
        bucket: &str,
        name: &str,
        len: Option<u64>,
        opts: &WriteOptions,
    ) -> Result<String, StorageError> {
        let op = "objects.insert";
        let url = self.url(&format!("/upload/storage/v1/b/{}/o", enc(bucket)));
        let mut q = opts.query();
        q.push(("uploadType", "resumable".into()));
        q.push(("name", name.to_string()));
        let meta = opts.resource(name);
        let r = self
            .send(
                op,
                || {
                    let mut r = self
                        .http
                        .post(&url)
                        .query(&q)
                        .json(&meta)
                        .timeout(self.request_timeout);
                    if let Some(c) = &opts.content_type {
                        r = r.header("x-upload-content-type", c);
                    }
                    if let Some(n) = len {
                        r = r.header("x-upload-content-length", n.to_string());
                    }
                    r
                },
                |s| s.is_success(),
            )
            .await?;
        r.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| StorageError::Protocol {
                op: op.into(),
                detail: "the resumable upload answer has no Location".into(),
            })
    }

    async fn cancel_resumable(&self, session: &str) -> Result<(), StorageError> {
        let req = self
            .tokens
            .authorize(self.http.delete(session).timeout(self.request_timeout))
            .await
            .map_err(|source| StorageError::Auth {
                op: "objects.insert".into(),
                source,
            })?;
        req.send()
            .await
            .map_err(|e| StorageError::transport("objects.insert", &e))?;
        Ok(())
    }

    /// Reads a resumable answer: the object when complete, else the persisted byte count.
    async fn chunk_answer(op: &str, resp: reqwest::Response) -> Result<ChunkOutcome, StorageError> {
        match resp.status().as_u16() {
            200 | 201 => Ok(ChunkOutcome::Done(Self::json(op, resp).await?)),
            308 => {
                let n = match resp
                    .headers()
                    .get(reqwest::header::RANGE)
                    .and_then(|v| v.to_str().ok())
                {
                    None => 0,
                    Some(r) => r
                        .trim()
                        .strip_prefix("bytes=0-")
                        .and_then(|e| e.parse::<u64>().ok())
                        .map(|e| e + 1)
                        .ok_or_else(|| StorageError::Protocol {
                            op: op.into(),
                            detail: format!("unreadable Range in a 308: {r}"),
                        })?,
                };
                Ok(ChunkOutcome::Persisted(n))
            }
            _ => Err(Self::error_from(op, resp).await),
        }
    }

    /// Sends `data` (which starts at byte `start`) to the session, resuming from what the
    /// server persisted; retried per chunk.
    async fn put_chunk(
        &self,
        session: &str,
        start: u64,
        data: Bytes,
        total: Option<u64>,
    ) -> Result<ChunkOutcome, StorageError> {
        let op = "objects.insert";
        let end = start + data.len() as u64;
        let total_s = total.map_or("*".to_string(), |t| t.to_string());
        let persisted = AtomicU64::new(start);
        self.retry
            .run(
                |attempt| {
                    let persisted = &persisted;
                    let data = data.clone();
                    let total_s = total_s.clone();
                    async move {
                        if attempt > 1 {
                            // Ask what the server has after a failure.
                            let req = self
                                .tokens
                                .authorize(
                                    self.http
                                        .put(session)
                                        .header(reqwest::header::CONTENT_RANGE, format!("bytes */{total_s}"))
                                        .header(reqwest::header::CONTENT_LENGTH, "0")
                                        .timeout(self.request_timeout),
                                )
                                .await
                                .map_err(|source| StorageError::Auth { op: op.into(), source })?;
                            let resp = req.send().await.map_err(|e| StorageError::transport(op, &e))?;
                            match Self::chunk_answer(op, resp).await? {
                                ChunkOutcome::Done(o) => return Ok(ChunkOutcome::Done(o)),
                                ChunkOutcome::Persisted(n) => persisted.store(n, Ordering::SeqCst),
                            }
                        }
                        loop {
                            let p = persisted.load(Ordering::SeqCst);
                            if p < start || p > end {
                                return Err(StorageError::Protocol {
                                    op: op.into(),
                                    detail: format!("the server reports {p} bytes persisted, outside this chunk {start}..{end}"),
                                });
                            }
                            if p == end && total.is_none() {
                                return Ok(ChunkOutcome::Persisted(p));
                            }
                            let slice = data.slice((p - start) as usize..);
                            let range = if slice.is_empty() {
                                format!("bytes */{total_s}")
                            } else {
                                format!("bytes {p}-{}/{total_s}", end - 1)
                            };
                            let req = self
                                .tokens
                                .authorize(
                                    self.http
                                        .put(session)
                                        .header(reqwest::header::CONTENT_RANGE, range)
                                        .body(slice)
                                        .timeout(self.request_timeout),
                                )
                                .await
                                .map_err(|source| StorageError::Auth { op: op.into(), source })?;
                            let resp = req.send().await.map_err(|e| StorageError::transport(op, &e))?;
                            match Self::chunk_answer(op, resp).await? {
                                ChunkOutcome::Done(o) => return Ok(ChunkOutcome::Done(o)),
                                ChunkOutcome::Persisted(n) if n == end => return Ok(ChunkOutcome::Persisted(n)),
                                ChunkOutcome::Persisted(n) if n > p => persisted.store(n, Ordering::SeqCst),
                                ChunkOutcome::Persisted(n) => {
                                    return Err(StorageError::Api {
                                        op: op.into(),
                                        status: 503,
                                        reason: "noProgress".into(),
                                        message: format!("the server persisted nothing of the chunk (still {n} bytes)"),
                                    });
                                }
                            }
                        }
                    }
                },
                StorageError::is_retryable,
            )
            .await
    }
}

/// MD5 + CRC32C of what the client sent, checked against the server's object.
#[derive(Default)]
struct LocalHashes {
    md5: md5::Md5,
    crc: u32,
}

impl LocalHashes {
    fn update(&mut self, d: &[u8]) {
        self.md5.update(d);
        self.crc = crc32c::crc32c_append(self.crc, d);
    }

    fn verify(self, op: &str, obj: &Object) -> Result<(), StorageError> {
        let crc = B64.encode(self.crc.to_be_bytes());
        let md5 = B64.encode(self.md5.finalize());
        if let Some(c) = &obj.crc32c
            && *c != crc
        {
            return Err(StorageError::Corrupt {
                op: op.into(),
                detail: format!("sent crc32c {crc}, the server stored {c}"),
            });
        }
        if let Some(m) = obj.md5_hash.as_ref().filter(|m| !m.is_empty())
            && *m != md5
        {
            return Err(StorageError::Corrupt {
                op: op.into(),
                detail: format!("sent md5 {md5}, the server stored {m}"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_segment() {
        assert_eq!(enc("a/b c+d"), "a%2Fb%20c%2Bd");
    }

    #[test]
    fn errors_map_to_protocol_classes() {
        let api = |status| StorageError::Api {
            op: "x".into(),
            status,
            reason: String::new(),
            message: String::new(),
        };
        assert_eq!(api(404).kind(), ErrorKind::NotFound);
        assert_eq!(api(403).kind(), ErrorKind::Permission);
        assert_eq!(api(401).kind(), ErrorKind::Permission);
        assert_eq!(api(503).kind(), ErrorKind::Network);
        assert_eq!(api(429).kind(), ErrorKind::Network);
        assert!(api(503).is_retryable() && !api(404).is_retryable());
        let pre = StorageError::PreconditionFailed {
            op: "x".into(),
            message: String::new(),
        };
        assert_eq!(pre.status(), Some(412));
        assert!(!pre.is_retryable());
    }

    #[test]
    fn emulator_host_forms() {
        assert_eq!(
            normalize_emulator_host("127.0.0.1:9023").as_deref(),
            Some("http://127.0.0.1:9023")
        );
        assert_eq!(
            normalize_emulator_host("http://localhost:1/").as_deref(),
            Some("http://localhost:1")
        );
        assert_eq!(normalize_emulator_host(" "), None);
    }
}
