//! Where the GCP clients get their credentials: none (emulator), a fixed token, or Google's
//! own `google-cloud-auth` crate: Application Default Credentials (service-account keys, user
//! credentials from `gcloud auth application-default login`, external accounts / Workload
//! Identity Federation, service-account impersonation, the metadata server), or one
//! credentials file named in the configuration. Google's credentials also carry the quota
//! project (`x-goog-user-project`) when one is configured.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Once};

use google_cloud_auth::credentials::{
    self, CacheableResource, Credentials, external_account, impersonated, service_account,
    user_account,
};

/// The scope every client asks for.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Failure to obtain credentials or a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot obtain Google credentials: {0}")]
pub struct AuthError(pub String);

/// A source of request credentials.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// No `Authorization` header (emulator with auth off).
    #[default]
    Anonymous,
    /// Always this bearer token (emulator-issued tokens, tests).
    Static(String),
    /// Google's credentials (`google-cloud-auth`): every header they produce is sent.
    Google(Arc<Credentials>),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Anonymous => f.write_str("Anonymous"),
            TokenSource::Static(_) => f.write_str("Static(<redacted>)"),
            TokenSource::Google(_) => f.write_str("Google"),
        }
    }
}

/// `google-cloud-auth` is built without its own crypto provider (it would pull in aws-lc);
/// it signs with the process's default rustls provider, which is ring here.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl TokenSource {
    /// Google's Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the
    /// gcloud ADC file, else the metadata server), with `quota_project` sent as
    /// `x-goog-user-project` (`GOOGLE_CLOUD_QUOTA_PROJECT` overrides it, as in Google's
    /// libraries).
    pub async fn google(quota_project: Option<&str>) -> Result<TokenSource, AuthError> {
        install_crypto_provider();
        let mut b = credentials::Builder::default().with_scopes([CLOUD_PLATFORM_SCOPE]);
        if let Some(q) = quota_project {
            b = b.with_quota_project_id(q);
        }
        b.build()
            .map(|c| TokenSource::Google(Arc::new(c)))
            .map_err(|e| AuthError(e.to_string()))
    }

    /// The credentials of one JSON credentials file, by its `type`: `service_account` (a
    /// key), `authorized_user` (user ADC), `external_account` (Workload Identity Federation)
    /// or `impersonated_service_account`. Call it inside a Tokio runtime (the credentials
    /// refresh their token in the background).
    pub fn from_file(path: &Path, quota_project: Option<&str>) -> Result<TokenSource, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError(format!("reading {}: {e}", path.display())))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| AuthError(format!("{} is not JSON: {e}", path.display())))?;
        Self::from_json(json, quota_project)
            .map_err(|e| AuthError(format!("{}: {}", path.display(), e.0)))
    }

    /// [`TokenSource::from_file`] of JSON already read.
    pub fn from_json(
        json: serde_json::Value,
        quota_project: Option<&str>,
    ) -> Result<TokenSource, AuthError> {
        install_crypto_provider();
        let kind = json
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_string();
        let q = quota_project.map(str::to_string);
        let built = match kind.as_str() {
            "service_account" => {
                let b = service_account::Builder::new(json);
                match q {
                    Some(q) => b.with_quota_project_id(q),
                    None => b,
                }
                .build()
            }
            "authorized_user" => {
                let b = user_account::Builder::new(json);
                match q {
                    Some(q) => b.with_quota_project_id(q),
                    None => b,
                }
                .build()
            }
            "external_account" => {
                let b = external_account::Builder::new(json);
                match q {
                    Some(q) => b.with_quota_project_id(q),
                    None => b,
                }
                .build()
            }
            "impersonated_service_account" => {
                let b = impersonated::Builder::new(json);
                match q {
                    Some(q) => b.with_quota_project_id(q),
                    None => b,
                }
                .build()
            }
            other => {
                return Err(AuthError(format!(
                    "unsupported credentials type {other:?} (expected service_account, \
                     authorized_user, external_account or impersonated_service_account)"
                )));
            }
        };
        built
            .map(|c| TokenSource::Google(Arc::new(c)))
            .map_err(|e| AuthError(format!("{kind} credentials: {e}")))
    }

    /// The headers to send (`authorization`, and `x-goog-user-project` with a quota
    /// project); empty when anonymous.
    pub async fn headers(&self) -> Result<reqwest::header::HeaderMap, AuthError> {
        let mut out = reqwest::header::HeaderMap::new();
        match self {
            TokenSource::Anonymous => {}
            TokenSource::Static(t) => {
                let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).map_err(
                    |e| AuthError(format!("the static token is not a header value: {e}")),
                )?;
                out.insert(reqwest::header::AUTHORIZATION, v);
            }
            TokenSource::Google(c) => match c.headers(http::Extensions::new()).await {
                Ok(CacheableResource::New { data, .. }) => {
                    for (k, v) in data.iter() {
                        if let (Ok(k), Ok(v)) = (
                            reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()),
                            reqwest::header::HeaderValue::from_bytes(v.as_bytes()),
                        ) {
                            out.insert(k, v);
                        }
                    }
                }
                Ok(CacheableResource::NotModified) => {
                    return Err(AuthError(
                        "the credentials answered NotModified to a request without a tag".into(),
                    ));
                }
                Err(e) => return Err(AuthError(e.to_string())),
            },
        }
        Ok(out)
    }

    /// The bearer token to send, `None` for anonymous.
    pub async fn token(&self) -> Result<Option<String>, AuthError> {
        let h = self.headers().await?;
        Ok(h.get(reqwest::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_string()))
    }

    /// Adds the credentials' headers to a request.
    pub async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, AuthError> {
        Ok(req.headers(self.headers().await?))
    }
}
