//! The emulator's HTTP server: health endpoints, IAM/Service Usage stubs and the assembly of
//! every router behind one listener on 127.0.0.1. The configuration and the context handed to
//! each API half live in `context`, the error type and the clock in `base` (re-exported here).
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
//! routes need no auth code of their own. Handlers call `ctx.inject("storage.objects.get").await?`
//! (or, without a context, `FaultInjector::inject` with their [`Dialect`]) to get the configured
//! latency and 429/503 faults, and answer errors with [`ApiError`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::Method;
use chrono::Utc;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::auth::{self, AuthChecker};
pub use super::base::{ApiError, AuthMode, Clock, Dialect};
pub use super::context::{EmulatorConfig, EmulatorContext};
use super::faults::FaultInjector;
use super::routes::{Api, RouteSpec, RouteTable};
use super::storage::{self, StorageState};

/// Errors starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Filesystem or socket failure.
    #[error("emulator I/O error: {0}")]
    Io(#[from] std::io::Error),
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
        .merge(auth::routes(ctx.auth.clone()));
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
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(log_call));
    (router, specs)
}

/// Logs every request at debug level (`emulator --log sandbox_harness::emulator=debug`): method,
/// path and query, status and time taken, injected latency included.
async fn log_call(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let t = std::time::Instant::now();
    let res = next.run(req).await;
    tracing::debug!(
        %method,
        %uri,
        status = res.status().as_u16(),
        ms = t.elapsed().as_millis() as u64,
        "emulator call"
    );
    res
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
