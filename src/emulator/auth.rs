//! Emulated token endpoints and the bearer-token check.
//!
//! - `POST /token`: OAuth2 service-account JWT bearer grant
//!   (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`); any well-formed
//!   JWT (three base64url parts, header and claims JSON objects) is accepted; the signature is
//!   not checked.
//! - `GET /computeMetadata/v1/instance/service-accounts/default/token` with
//!   `Metadata-Flavor: Google`: the metadata server's token.
//!
//! Both issue opaque tokens valid for [`TOKEN_LIFETIME`] by the emulator clock. With
//! `AuthMode::Required`, [`require_auth`] answers 401 to API calls without such a token; the
//! server puts it in front of every API route, the Storage and the Cloud Run half alike, so it
//! is the emulator's one auth check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::base::{ApiError, AuthMode, Clock, read_limited};
use super::routes::{Api, RouteTable};

/// How long an issued token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The JWT bearer grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Issues tokens and checks `Authorization` headers.
#[derive(Clone, Debug)]
pub struct AuthChecker {
    mode: AuthMode,
    clock: Clock,
    tokens: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
}

impl AuthChecker {
    /// A checker in `mode`, expiring tokens by `clock`.
    pub fn new(mode: AuthMode, clock: Clock) -> Self {
        AuthChecker {
            mode,
            clock,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Issues a new opaque token; returns it and its lifetime.
    pub fn issue(&self) -> (String, Duration) {
        let token = format!("emu.{}", uuid::Uuid::new_v4().simple());
        let expiry = self.clock.now() + chrono::Duration::seconds(TOKEN_LIFETIME.as_secs() as i64);
        let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        map.retain(|_, exp| *exp > now);
        map.insert(token.clone(), expiry);
        (token, TOKEN_LIFETIME)
    }

    /// True when `token` was issued here and has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        let map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token).is_some_and(|exp| *exp > self.clock.now())
    }

    /// Checks the request headers per the mode; the error is the 401 to send.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthenticated(
                "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match token {
            Some(t) if self.is_valid(t) => Ok(()),
            _ => Err(ApiError::new(
                401,
                "UNAUTHENTICATED",
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )),
        }
    }
}

/// Middleware: rejects API calls without a valid token when auth is required.
pub async fn require_auth(State(auth): State<AuthChecker>, req: Request, next: Next) -> Response {
    match auth.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The token endpoints' routes.
pub fn routes(auth: AuthChecker) -> RouteTable {
    RouteTable::new()
        .route(
            Method::POST,
            "/token",
            Api::Other("OAuth 2.0 token endpoint (JWT bearer grant), no discovery document"),
            token_endpoint,
        )
        .route(
            Method::GET,
            "/computeMetadata/v1/instance/service-accounts/default/token",
            Api::Other("GCE metadata server token, no discovery document"),
            metadata_token,
        )
        .with_state(auth)
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// True when `s` is a JWT whose header and claims decode to JSON objects.
pub fn is_well_formed_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return false;
    }
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    parts[..2].iter().all(|p| {
        engine
            .decode(p.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.is_object())
    }) && engine.decode(parts[2].trim_end_matches('=')).is_ok()
}

async fn token_endpoint(State(auth): State<AuthChecker>, body: Body) -> Response {
    let bytes = match read_limited(body, 64 * 1024).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut grant = None;
    let mut assertion = None;
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        match k.as_ref() {
            "grant_type" => grant = Some(v.into_owned()),
            "assertion" => assertion = Some(v.into_owned()),
            _ => {}
        }
    }
    if grant.as_deref() != Some(JWT_BEARER_GRANT) {
        return oauth_error(
            "unsupported_grant_type",
            "Invalid grant_type: expected the JWT bearer grant",
        );
    }
    match assertion {
        Some(a) if is_well_formed_jwt(&a) => {}
        _ => {
            return oauth_error(
                "invalid_grant",
                "Invalid JWT: the assertion is not a well-formed JWT",
            );
        }
    }
    let (token, life) = auth.issue();
    Json(json!({"access_token": token, "expires_in": life.as_secs(), "token_type": "Bearer"}))
        .into_response()
}

async fn metadata_token(State(auth): State<AuthChecker>, headers: HeaderMap) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return ApiError::forbidden("Missing Metadata-Flavor:Google header.").into_response();
    }
    let (token, life) = auth.issue();
    let mut resp =
        Json(json!({"access_token": token, "expires_in": life.as_secs(), "token_type": "Bearer"}))
            .into_response();
    resp.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_is_checked() {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = e.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let c = e.encode(br#"{"iss":"a@b.iam.gserviceaccount.com"}"#);
        assert!(is_well_formed_jwt(&format!("{h}.{c}.c2ln")));
        assert!(!is_well_formed_jwt(&format!("{h}.{c}")));
        assert!(!is_well_formed_jwt("a.b.c"));
        assert!(!is_well_formed_jwt(&format!(
            "{h}.{}.c2ln",
            e.encode(b"[1]")
        )));
    }

    #[test]
    fn tokens_expire_by_the_clock() {
        let clock = Clock::new();
        let a = AuthChecker::new(AuthMode::Required, clock.clone());
        let (t, _) = a.issue();
        assert!(a.is_valid(&t));
        assert!(!a.is_valid("other"));
        clock.advance(TOKEN_LIFETIME + Duration::from_secs(1));
        assert!(!a.is_valid(&t));
    }
}
