//! The emulator's route tables: every route is registered together with what it implements
//! (the Google API method ids of its discovery document, or why it is no Google API), so the
//! list of routes can be enumerated (the discovery-schema test walks it) and a route cannot be
//! added without saying what it is.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

/// What a route implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Methods of a Google API discovery document: (document, e.g. "storage.v1"; method ids,
    /// e.g. "storage.objects.get"). One route may serve several methods (e.g. Cloud Run's
    /// `jobs/{job}:run` and `:cancel`-style custom verbs share a path pattern in axum).
    Google(&'static str, &'static [&'static str]),
    /// Not a Google API with a discovery document (health probes, OAuth token endpoints);
    /// the reason says what it is.
    Other(&'static str),
}

/// One registered route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// axum path pattern (`{name}` a segment, `{*name}` the rest).
    pub path: &'static str,
    /// What it implements.
    pub api: Api,
}

/// A router under construction that records every route it is given.
pub struct RouteTable<S = ()> {
    router: Router<S>,
    specs: Vec<RouteSpec>,
}

impl<S: Clone + Send + Sync + 'static> Default for RouteTable<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> RouteTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        RouteTable {
            router: Router::new(),
            specs: Vec::new(),
        }
    }

    /// Registers `handler` for `method` on `path`, implementing `api`.
    pub fn route<H, T>(mut self, method: Method, path: &'static str, api: Api, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("unsupported method {method} for {path}"));
        self.router = self.router.route(path, on(filter, handler));
        self.specs.push(RouteSpec {
            method: method_name(&method),
            path,
            api,
        });
        self
    }

    /// Gives the table its state: a router of state `()` with the same routes.
    pub fn with_state(self, state: S) -> RouteTable<()> {
        RouteTable {
            router: self.router.with_state(state),
            specs: self.specs,
        }
    }
}

impl RouteTable<()> {
    /// Adds every route of `other`.
    pub fn merge(mut self, other: RouteTable<()>) -> Self {
        self.router = self.router.merge(other.router);
        self.specs.extend(other.specs);
        self
    }

    /// The routes registered so far.
    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    /// The router and its routes.
    pub fn into_parts(self) -> (Router, Vec<RouteSpec>) {
        (self.router, self.specs)
    }

    /// The router alone.
    pub fn into_router(self) -> Router {
        self.router
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
