//! Where the GCP clients get their bearer tokens: none (emulator), a fixed token, or Google's
//! credential chain (service-account key in GOOGLE_APPLICATION_CREDENTIALS, ADC, the metadata
//! server, gcloud) through `gcp_auth`.

use std::fmt;
use std::sync::Arc;

/// The scope every client asks for.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Failure to obtain a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot obtain a Google access token: {0}")]
pub struct AuthError(pub String);

/// A source of bearer tokens.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// No `Authorization` header (emulator with auth off).
    #[default]
    Anonymous,
    /// Always this token (emulator-issued tokens, tests).
    Static(String),
    /// Google's credential chain, cloud-platform scope.
    Google(Arc<dyn gcp_auth::TokenProvider>),
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

impl TokenSource {
    /// Google's default credential chain (`gcp_auth::provider()`).
    pub async fn google() -> Result<TokenSource, AuthError> {
        gcp_auth::provider()
            .await
            .map(TokenSource::Google)
            .map_err(|e| AuthError(e.to_string()))
    }

    /// The bearer token to send, `None` for anonymous.
    pub async fn token(&self) -> Result<Option<String>, AuthError> {
        match self {
            TokenSource::Anonymous => Ok(None),
            TokenSource::Static(t) => Ok(Some(t.clone())),
            TokenSource::Google(p) => p
                .token(&[CLOUD_PLATFORM_SCOPE])
                .await
                .map(|t| Some(t.as_str().to_string()))
                .map_err(|e| AuthError(e.to_string())),
        }
    }

    /// Adds the `Authorization` header to a request when there is a token.
    pub async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, AuthError> {
        Ok(match self.token().await? {
            Some(t) => req.bearer_auth(t),
            None => req,
        })
    }
}
