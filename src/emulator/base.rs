//! The leaf every emulator module builds on: the error type both API halves answer with, the
//! shared clock, the auth mode and the request body and query helpers. It imports nothing
//! else from the emulator, so the server, auth, storage and Run modules can all use it
//! without importing one another.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Whether API calls need a bearer token issued by the emulator's token endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anything goes.
    #[default]
    Off,
    /// Every API call needs `Authorization: Bearer <token issued by /token or the metadata server>`.
    Required,
}

/// A shared, adjustable clock: real time plus an offset tests can advance.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

#[derive(Debug, Default)]
struct ClockInner {
    offset_ms: AtomicI64,
    epoch: AtomicU64,
}

impl Clock {
    /// A clock at real time.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current (possibly advanced) time.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.inner.offset_ms.load(Ordering::SeqCst))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        self.inner.offset_ms.fetch_add(ms, Ordering::SeqCst);
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts `advance` calls (lets periodic work notice a jump).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }
}

/// Which API's error body an [`ApiError`] is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// The Cloud Storage JSON API body, `errors[]` (with `reason`) included; also used by the
    /// token, IAM and Service Usage endpoints and the auth check of every API.
    #[default]
    Storage,
    /// The Cloud Run Admin API v2 body `{"error":{"code","message","status"}}`.
    Run,
}

/// An API error of either half, answered with Google's JSON error body in its [`Dialect`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {status}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Google status name ("NOT_FOUND", ...).
    pub status: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The `errors[].reason` value ("notFound", "conditionNotMet", ...); not sent in the
    /// Run dialect.
    pub reason: &'static str,
    /// Which body the error is answered with.
    pub dialect: Dialect,
}

impl ApiError {
    /// An error with an explicit code, status name and reason.
    pub fn new(
        code: u16,
        status: &'static str,
        reason: &'static str,
        msg: impl Into<String>,
    ) -> Self {
        ApiError {
            code,
            status,
            message: msg.into(),
            reason,
            dialect: Dialect::Storage,
        }
    }

    /// The same error, answered in `dialect`.
    pub fn in_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }
    /// 400 INVALID_ARGUMENT.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "INVALID_ARGUMENT", "invalid", msg)
    }
    /// 401 UNAUTHENTICATED.
    pub fn unauthenticated(msg: impl Into<String>) -> Self {
        Self::new(401, "UNAUTHENTICATED", "required", msg)
    }
    /// 403 PERMISSION_DENIED.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "PERMISSION_DENIED", "forbidden", msg)
    }
    /// 404 NOT_FOUND.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(404, "NOT_FOUND", "notFound", msg)
    }
    /// 409 ALREADY_EXISTS / conflict.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(409, "ALREADY_EXISTS", "conflict", msg)
    }
    /// 412 FAILED_PRECONDITION (`conditionNotMet`).
    pub fn precondition(msg: impl Into<String>) -> Self {
        Self::new(412, "FAILED_PRECONDITION", "conditionNotMet", msg)
    }
    /// 413 payload too large.
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(413, "OUT_OF_RANGE", "uploadTooLarge", msg)
    }
    /// 416 range not satisfiable.
    pub fn bad_range(msg: impl Into<String>) -> Self {
        Self::new(416, "OUT_OF_RANGE", "requestedRangeNotSatisfiable", msg)
    }
    /// 429 RESOURCE_EXHAUSTED.
    pub fn rate_limited(msg: impl Into<String>) -> Self {
        Self::new(429, "RESOURCE_EXHAUSTED", "rateLimitExceeded", msg)
    }
    /// 500 INTERNAL.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "INTERNAL", "backendError", msg)
    }
    /// 503 UNAVAILABLE.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(503, "UNAVAILABLE", "backendError", msg)
    }

    /// The JSON body: `{"error":{"code","message","status","errors":[...]}}` in the Storage
    /// dialect, `{"error":{"code","message","status"}}` in the Run dialect.
    pub fn body(&self) -> serde_json::Value {
        match self.dialect {
            Dialect::Storage => json!({"error": {
                "code": self.code,
                "message": self.message,
                "status": self.status,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }}),
            Dialect::Run => json!({"error": {
                "code": self.code,
                "message": self.message,
                "status": self.status,
            }}),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        tracing::warn!(error = %e, "emulator I/O error");
        ApiError::internal(format!("emulator I/O error: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(self.body())).into_response();
        if self.code == 401 {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
            );
        }
        resp
    }
}

/// Reads a whole body, failing with 413 past `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::too_large(format!(
                "the JSON request body is larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Parses JSON bytes (empty = `{}`), 400 with the parser's message when malformed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON payload received: {e}")))
}

/// The query's values for `key`, in order (repeated keys allowed).
pub fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}
