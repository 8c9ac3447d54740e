//! Two small project-level clients the preflight needs: Cloud Resource Manager
//! `projects.testIamPermissions` and Service Usage `services.get`. Base URLs are configurable
//! (the local emulator serves both on its own base URL); calls use the shared retry policy and
//! a [`TokenSource`] like the other GCP clients.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::gcp::auth::TokenSource;
use crate::gcp::retry::{RetryPolicy, retryable_status};

/// Google's Cloud Resource Manager endpoint.
pub const DEFAULT_RESOURCE_MANAGER_URL: &str = "https://cloudresourcemanager.googleapis.com";
/// Google's Service Usage endpoint.
pub const DEFAULT_SERVICE_USAGE_URL: &str = "https://serviceusage.googleapis.com";

/// A failed Resource Manager or Service Usage call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IamError {
    /// The API answered an error status.
    #[error("{op}: HTTP {status} {code}: {message}")]
    Api {
        /// The client operation.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// Google's status name (PERMISSION_DENIED...), empty when absent.
        code: String,
        /// Google's message (or the start of the raw body).
        message: String,
    },
    /// No HTTP answer.
    #[error("{op}: transport error: {detail}")]
    Transport {
        /// The client operation.
        op: &'static str,
        /// What failed.
        detail: String,
    },
    /// No token could be obtained.
    #[error("{op}: {detail}")]
    Auth {
        /// The client operation.
        op: &'static str,
        /// Why.
        detail: String,
    },
    /// The answer could not be read.
    #[error("{op}: unexpected response: {detail}")]
    Decode {
        /// The client operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The client was configured wrongly (bad base URL...).
    #[error("bad client configuration: {0}")]
    Config(String),
}

impl IamError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            IamError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when retrying may help (408, 429, 5xx, transport).
    pub fn is_retryable(&self) -> bool {
        match self {
            IamError::Api { status, .. } => retryable_status(*status),
            IamError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// The shared HTTP plumbing of both clients.
#[derive(Debug, Clone)]
struct Http {
    http: reqwest::Client,
    base: String,
    tokens: TokenSource,
    retry: RetryPolicy,
}

impl Http {
    fn new(base_url: &str, tokens: TokenSource) -> Result<Self, IamError> {
        let base = base_url.trim_end_matches('/').to_string();
        url::Url::parse(&base).map_err(|e| IamError::Config(format!("base URL {base}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| IamError::Config(e.to_string()))?;
        Ok(Http {
            http,
            base,
            tokens,
            retry: RetryPolicy::default(),
        })
    }

    async fn call(
        &self,
        op: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, IamError> {
        let url = format!("{}{}", self.base, path);
        self.retry
            .run(
                |_| async {
                    let mut req = self.http.request(method.clone(), &url);
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    let req = self
                        .tokens
                        .authorize(req)
                        .await
                        .map_err(|e| IamError::Auth {
                            op,
                            detail: e.to_string(),
                        })?;
                    let resp = req.send().await.map_err(|e| IamError::Transport {
                        op,
                        detail: e.to_string(),
                    })?;
                    let status = resp.status().as_u16();
                    let bytes = resp.bytes().await.map_err(|e| IamError::Transport {
                        op,
                        detail: e.to_string(),
                    })?;
                    if (200..300).contains(&status) {
                        return serde_json::from_slice(&bytes).map_err(|e| IamError::Decode {
                            op,
                            detail: e.to_string(),
                        });
                    }
                    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let message = v["error"]["message"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| {
                            String::from_utf8_lossy(&bytes).chars().take(500).collect()
                        });
                    Err(IamError::Api {
                        op,
                        status,
                        code: v["error"]["status"].as_str().unwrap_or("").to_string(),
                        message,
                    })
                },
                IamError::is_retryable,
            )
            .await
    }
}

/// Cloud Resource Manager v1 client (only `projects.testIamPermissions`).
#[derive(Debug, Clone)]
pub struct ResourceManagerClient {
    inner: Http,
}

impl ResourceManagerClient {
    /// A client for `base_url` (Google's endpoint or the emulator's base URL).
    pub fn new(base_url: &str, tokens: TokenSource) -> Result<Self, IamError> {
        Ok(ResourceManagerClient {
            inner: Http::new(base_url, tokens)?,
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.inner.retry = retry;
        self
    }

    /// The subset of `permissions` the caller holds on `project`.
    pub async fn test_iam_permissions(
        &self,
        project: &str,
        permissions: &[&str],
    ) -> Result<Vec<String>, IamError> {
        let path = format!("/v1/projects/{}:testIamPermissions", enc(project));
        let v = self
            .inner
            .call(
                "projects.testIamPermissions",
                reqwest::Method::POST,
                &path,
                Some(&json!({ "permissions": permissions })),
            )
            .await?;
        Ok(string_list(&v["permissions"]))
    }
}

/// A service's state as Service Usage reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServiceState {
    /// `projects/{p}/services/{s}`.
    #[serde(default)]
    pub name: String,
    /// ENABLED, DISABLED or STATE_UNSPECIFIED.
    #[serde(default)]
    pub state: String,
}

impl ServiceState {
    /// True when the service is enabled.
    pub fn is_enabled(&self) -> bool {
        self.state == "ENABLED"
    }
}

/// Service Usage v1 client (only `services.get`).
#[derive(Debug, Clone)]
pub struct ServiceUsageClient {
    inner: Http,
}

impl ServiceUsageClient {
    /// A client for `base_url` (Google's endpoint or the emulator's base URL).
    pub fn new(base_url: &str, tokens: TokenSource) -> Result<Self, IamError> {
        Ok(ServiceUsageClient {
            inner: Http::new(base_url, tokens)?,
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.inner.retry = retry;
        self
    }

    /// The state of `service` (e.g. "run.googleapis.com") in `project`.
    pub async fn get_service(
        &self,
        project: &str,
        service: &str,
    ) -> Result<ServiceState, IamError> {
        let path = format!("/v1/projects/{}/services/{}", enc(project), enc(service));
        let v = self
            .inner
            .call("services.get", reqwest::Method::GET, &path, None)
            .await?;
        serde_json::from_value(v).map_err(|e| IamError::Decode {
            op: "services.get",
            detail: e.to_string(),
        })
    }
}

/// Percent-encodes one path segment.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
