//! The emulator's HTTP server: configuration, the shared context handed to each API half, the
//! Google-style error body, the test clock, health endpoints, IAM/Service Usage stubs and the
//! assembly of every router behind one listener on 127.0.0.1.
//!
//! # Adding routes (the Cloud Run half)
//!
//! ```ignore
//! let emu = Emulator::start_with(cfg, |ctx| emulator::run::routes(state.clone())).await?;
//! ```
//!
//! The closure receives the [`EmulatorContext`] (state dir, faults, auth, clock, storage) and
//! returns a [`RouteTable`] (already given its own state), which records what each route
//! implements so [`Emulator::routes`] can list them all. That table is
//! merged with the storage routes; the auth middleware then wraps all of them, so the extra
//! routes need no auth code of their own. Handlers call `ctx.inject("run.jobs.create").await?`
//! to get the configured latency and 429/503 faults, and answer errors with [`ApiError`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::auth::{self, AuthChecker};
use super::faults::FaultInjector;
use super::routes::{Api, RouteSpec, RouteTable};
use super::storage::{self, StorageState};
use crate::suites::faults::FaultConfig;

/// Whether API calls need a bearer token issued by the emulator's token endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anything goes.
    #[default]
    Off,
    /// Every API call needs `Authorization: Bearer <token issued by /token or the metadata server>`.
    Required,
}

/// How the emulator is started.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where buckets, objects and upload sessions live; a temp dir (removed on drop) when `None`.
    pub state_dir: Option<PathBuf>,
    /// TCP port on 127.0.0.1; 0 picks an ephemeral one.
    pub port: u16,
    /// Token requirement for API calls.
    pub auth: AuthMode,
    /// Latency and error injection.
    pub faults: FaultConfig,
    /// IAM permissions that testIamPermissions (bucket and project) reports as not granted.
    pub denied_permissions: BTreeSet<String>,
    /// Members (e.g. "serviceAccount:runner@p.iam.gserviceaccount.com") the bucket IAM
    /// policy grants `roles/storage.objectUser`.
    pub bucket_object_users: BTreeSet<String>,
    /// Service names (e.g. "run.googleapis.com") Service Usage reports as DISABLED.
    pub disabled_services: BTreeSet<String>,
    /// Largest accepted JSON request body (and multipart metadata part), bytes; larger is 413.
    pub max_json_body: usize,
    /// Lifecycle rules are swept at most this often per bucket (and whenever the clock is advanced).
    pub lifecycle_sweep_interval: Duration,
    /// Whether `/ready` pings the Docker engine (off: reported as "skipped").
    pub check_docker: bool,
    /// Per-object mutation rate limit (Cloud Storage's one write per second per object name);
    /// `None` turns it off.
    pub object_mutation_limit: Option<storage::MutationLimit>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            state_dir: None,
            port: 0,
            auth: AuthMode::Off,
            faults: FaultConfig::default(),
            denied_permissions: BTreeSet::new(),
            bucket_object_users: BTreeSet::new(),
            disabled_services: BTreeSet::new(),
            max_json_body: 1024 * 1024,
            lifecycle_sweep_interval: Duration::from_secs(60),
            check_docker: true,
            object_mutation_limit: Some(storage::MutationLimit::default()),
        }
    }
}

/// Errors starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Filesystem or socket failure.
    #[error("emulator I/O error: {0}")]
    Io(#[from] std::io::Error),
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

/// An API error answered with Google's JSON error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {status}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Google status name ("NOT_FOUND", ...).
    pub status: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The `errors[].reason` value ("notFound", "conditionNotMet", ...).
    pub reason: &'static str,
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
        }
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

    /// The JSON body `{"error":{"code","message","status","errors":[...]}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
        }})
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

/// What each API half gets: state dir, faults, auth, clock, storage, config.
#[derive(Clone)]
pub struct EmulatorContext {
    state_dir: PathBuf,
    /// The configuration the emulator was started with.
    pub config: Arc<EmulatorConfig>,
    /// Token issuing and checking.
    pub auth: AuthChecker,
    /// The shared clock (lifecycle rules, token expiry; the Run half may use it too).
    pub clock: Clock,
    /// The Cloud Storage state.
    pub storage: Arc<StorageState>,
    /// The fault layer both API halves and the runner share (dice and counts).
    pub injector: Arc<FaultInjector>,
}

impl EmulatorContext {
    /// The emulator's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The fault configuration.
    pub fn faults(&self) -> &FaultConfig {
        self.injector.config()
    }

    /// Applies the configured latency, then the 429/503 dice, for `endpoint`
    /// (e.g. "storage.objects.insert", "run.jobs.run"); `Err` is the answer to send.
    pub async fn inject(&self, endpoint: &str) -> Result<(), ApiError> {
        match self.injector.call(endpoint).await {
            Some(429) => Err(ApiError::rate_limited(format!(
                "injected fault: rate limit exceeded on {endpoint}"
            ))),
            Some(_) => Err(ApiError::unavailable(format!(
                "injected fault: service unavailable on {endpoint}"
            ))),
            None => Ok(()),
        }
    }

    /// Waits as long as moving `bytes` through the Storage API takes at the latency profile's
    /// transfer rate (nothing without a profile rate).
    pub async fn transfer(&self, bytes: u64) {
        let d = self.injector.transfer_delay(bytes);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// Reads a JSON request body with the configured size limit (empty body = `{}`):
    /// 413 when too large, 400 when malformed.
    pub async fn json_body<T: DeserializeOwned>(&self, body: Body) -> Result<T, ApiError> {
        let bytes = read_limited(body, self.config.max_json_body).await?;
        parse_json(&bytes)
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

/// A running emulator; stops (and removes its temp state dir) on drop.
pub struct Emulator {
    addr: SocketAddr,
    ctx: EmulatorContext,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    routes: Vec<RouteSpec>,
    _tempdir: Option<tempfile::TempDir>,
}

impl Emulator {
    /// Starts the storage emulator (and common endpoints) alone.
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        Self::start_with(cfg, |_| RouteTable::new()).await
    }

    /// Starts the emulator with extra routes built from the context (see the module docs).
    pub async fn start_with(
        cfg: EmulatorConfig,
        extra: impl FnOnce(&EmulatorContext) -> RouteTable,
    ) -> Result<Emulator, EmulatorError> {
        let injector = Arc::new(FaultInjector::new(cfg.faults.clone()));
        Self::start_shared(cfg, injector, extra).await
    }

    /// Like [`Emulator::start_with`], with a fault layer the caller shares with other parts
    /// (the local cloud gives the same one to the execution runner); `cfg.faults` is ignored.
    pub async fn start_shared(
        cfg: EmulatorConfig,
        injector: Arc<FaultInjector>,
        extra: impl FnOnce(&EmulatorContext) -> RouteTable,
    ) -> Result<Emulator, EmulatorError> {
        let (state_dir, tempdir) = match &cfg.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("sandbox-emulator-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port)).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let clock = Clock::new();
        let config = Arc::new(cfg);
        let storage = Arc::new(StorageState::open(
            state_dir.join("storage"),
            clock.clone(),
            base_url,
            config.lifecycle_sweep_interval,
            config.object_mutation_limit,
        )?);
        let ctx = EmulatorContext {
            state_dir,
            auth: AuthChecker::new(config.auth, clock.clone()),
            config,
            clock,
            storage,
            injector,
        };
        let (app, routes) = build_router(&ctx, extra(&ctx));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "emulator server stopped with an error");
            }
        });
        tracing::info!(%addr, "emulator listening");
        Ok(Emulator {
            addr,
            ctx,
            shutdown_tx: Some(tx),
            task: Some(task),
            routes,
            _tempdir: tempdir,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Cloud Storage state.
    pub fn storage(&self) -> Arc<StorageState> {
        self.ctx.storage.clone()
    }

    /// Every route the emulator serves, with what it implements.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// The shared context.
    pub fn context(&self) -> &EmulatorContext {
        &self.ctx
    }

    /// The shared clock.
    pub fn clock(&self) -> Clock {
        self.ctx.clock.clone()
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.ctx.state_dir()
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The routes besides the storage and Run halves: Resource Manager's project
/// testIamPermissions, Service Usage's services.get, health probes and token endpoints.
fn common_routes(ctx: &EmulatorContext) -> (RouteTable, RouteTable) {
    let api = RouteTable::new()
        .route(
            Method::POST,
            "/v1/projects/{call}",
            Api::Google(
                "cloudresourcemanager.v1",
                &["cloudresourcemanager.projects.testIamPermissions"],
            ),
            project_test_permissions,
        )
        .route(
            Method::GET,
            "/v1/projects/{project}/services/{service}",
            Api::Google("serviceusage.v1", &["serviceusage.services.get"]),
            service_state,
        )
        .with_state(ctx.clone());
    let probes = "the emulator's own health probe, no Google API";
    let public = RouteTable::new()
        .route(Method::GET, "/health", Api::Other(probes), health)
        .route(Method::GET, "/ready", Api::Other(probes), ready)
        .route(Method::GET, "/live", Api::Other(probes), live)
        .route(
            Method::GET,
            "/emulator/v1/faults",
            Api::Other("the emulator's own count of injected faults, no Google API"),
            fault_counts,
        )
        .with_state(ctx.clone())
        .merge(auth::routes(ctx.clone()));
    (api, public)
}

fn build_router(ctx: &EmulatorContext, extra: RouteTable) -> (Router, Vec<RouteSpec>) {
    let (common, public) = common_routes(ctx);
    let (api, mut specs) = storage::routes(ctx.clone())
        .merge(common)
        .merge(extra)
        .into_parts();
    let api = api.layer(axum::middleware::from_fn_with_state(
        ctx.auth.clone(),
        auth::require_auth,
    ));
    let (public, public_specs) = public.into_parts();
    specs.extend(public_specs);
    let router = public
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    (router, specs)
}

/// GET /emulator/v1/faults: the seed and what was injected so far, per kind and API (the
/// emulator's own endpoint; Google has no such thing).
async fn fault_counts(State(ctx): State<EmulatorContext>) -> Json<super::faults::FaultCounts> {
    Json(ctx.injector.counts())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("No such API path: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        405,
        "UNIMPLEMENTED",
        "methodNotAllowed",
        format!("Method {method} is not allowed on {}", uri.path()),
    )
}

async fn health() -> Json<serde_json::Value> {
    Json(
        json!({"status": "healthy", "service": "sandbox-harness-emulator", "time": Utc::now().to_rfc3339()}),
    )
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

async fn ready(State(ctx): State<EmulatorContext>) -> Json<serde_json::Value> {
    let docker = if !ctx.config.check_docker {
        "skipped"
    } else {
        match bollard::Docker::connect_with_defaults() {
            Ok(d) => match tokio::time::timeout(Duration::from_secs(3), d.ping()).await {
                Ok(Ok(_)) => "healthy",
                _ => "unhealthy",
            },
            Err(_) => "unhealthy",
        }
    };
    let storage = if ctx.storage.root().is_dir() {
        "healthy"
    } else {
        "unhealthy"
    };
    let ok = docker != "unhealthy" && storage == "healthy";
    Json(json!({
        "status": if ok { "ready" } else { "degraded" },
        "checks": {"docker": docker, "storage": storage},
    }))
}

/// The query's values for `key`, in order (repeated keys allowed).
pub fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

#[derive(serde::Deserialize)]
struct PermissionsRequest {
    #[serde(default)]
    permissions: Vec<String>,
}

async fn project_test_permissions(
    State(ctx): State<EmulatorContext>,
    UrlPath(call): UrlPath<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some((project, "testIamPermissions")) = call.rsplit_once(':') else {
        return Err(ApiError::not_found(format!(
            "No such API path: /v1/projects/{call}"
        )));
    };
    if project.is_empty() {
        return Err(ApiError::bad_request("missing project id"));
    }
    ctx.inject("cloudresourcemanager.projects.testIamPermissions")
        .await?;
    let req: PermissionsRequest = ctx.json_body(body).await?;
    let granted: Vec<String> = req
        .permissions
        .into_iter()
        .filter(|p| !ctx.config.denied_permissions.contains(p))
        .collect();
    Ok(Json(if granted.is_empty() {
        json!({})
    } else {
        json!({"permissions": granted})
    }))
}

async fn service_state(
    State(ctx): State<EmulatorContext>,
    UrlPath((project, service)): UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    ctx.inject("serviceusage.services.get").await?;
    let state = if ctx.config.disabled_services.contains(&service) {
        "DISABLED"
    } else {
        "ENABLED"
    };
    Ok(Json(json!({
        "name": format!("projects/{project}/services/{service}"),
        "parent": format!("projects/{project}"),
        "state": state,
    })))
}
