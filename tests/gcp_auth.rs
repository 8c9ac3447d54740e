//! Google credentials through `google-cloud-auth`: Workload Identity Federation (an external
//! account whose subject token comes from a file, exchanged at an STS endpoint) with and
//! without service-account impersonation, against a local stand-in for STS and IAM
//! Credentials; the quota project travels as `x-goog-user-project`. Formats as Google
//! documents them: external account files
//! (https://google.aip.dev/auth/4117), the STS token exchange
//! (https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token),
//! generateAccessToken
//! (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken)
//! and the quota project header (https://cloud.google.com/docs/quotas/quota-project).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use sandbox_harness::gcp::auth::TokenSource;
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    sts_bodies: Vec<String>,
    impersonation_auth: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

async fn sts(State(s): State<Shared>, body: String) -> Json<Value> {
    s.lock().unwrap().sts_bodies.push(body);
    Json(json!({
        "access_token": "sts-token",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": 3600
    }))
}

async fn generate(State(s): State<Shared>, headers: HeaderMap) -> Json<Value> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    s.lock().unwrap().impersonation_auth.push(auth);
    Json(json!({"accessToken": "impersonated-token", "expireTime": "2099-01-01T00:00:00Z"}))
}

async fn server() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/token", post(sts))
        .route("/v1/projects/-/serviceAccounts/{call}", post(generate))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn external_account(base: &str, subject_file: &std::path::Path, impersonate: bool) -> Value {
    let mut v = json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/prov",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{base}/v1/token"),
        "credential_source": {"file": subject_file.to_str().unwrap()}
    });
    if impersonate {
        v["service_account_impersonation_url"] = json!(format!(
            "{base}/v1/projects/-/serviceAccounts/runner@proj.iam.gserviceaccount.com:generateAccessToken"
        ));
    }
    v
}

#[tokio::test]
async fn workload_identity_federation_file_exchanges_its_subject_token() {
    let (base, seen) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("subject.jwt");
    std::fs::write(&subject, "subject-token-from-ci").unwrap();
    let file = dir.path().join("wif.json");
    std::fs::write(&file, external_account(&base, &subject, false).to_string()).unwrap();
    let tokens = TokenSource::from_file(&file, Some("quota-proj")).expect("the WIF file parses");
    let h = tokens.headers().await.expect("the token is exchanged");
    assert_eq!(h["authorization"], "Bearer sts-token");
    assert_eq!(h["x-goog-user-project"], "quota-proj");
    let bodies = seen.lock().unwrap().sts_bodies.clone();
    assert_eq!(bodies.len(), 1);
    assert!(bodies[0].contains("subject-token-from-ci"), "{}", bodies[0]);
    assert!(bodies[0].contains("token-exchange"), "{}", bodies[0]);
}

#[tokio::test]
async fn workload_identity_federation_with_impersonation_uses_the_service_account_token() {
    let (base, seen) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("subject.jwt");
    std::fs::write(&subject, "subject-token-from-ci").unwrap();
    let tokens = TokenSource::from_json(external_account(&base, &subject, true), None)
        .expect("the WIF file with impersonation parses");
    assert_eq!(
        tokens.token().await.unwrap().as_deref(),
        Some("impersonated-token")
    );
    assert_eq!(
        seen.lock().unwrap().impersonation_auth,
        vec!["Bearer sts-token".to_string()],
        "generateAccessToken was called with the federated token"
    );
    // Without a quota project no quota header is sent.
    assert!(
        tokens
            .headers()
            .await
            .unwrap()
            .get("x-goog-user-project")
            .is_none()
    );
}

#[tokio::test]
async fn impersonation_and_bad_files_are_told_apart() {
    let imp = json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/runner@proj.iam.gserviceaccount.com:generateAccessToken",
        "source_credentials": {
            "type": "authorized_user",
            "client_id": "id.apps.googleusercontent.com",
            "client_secret": "secret",
            "refresh_token": "refresh"
        },
        "delegates": []
    });
    assert!(matches!(
        TokenSource::from_json(imp, Some("q")),
        Ok(TokenSource::Google(_))
    ));
    let err = TokenSource::from_json(json!({"type": "gdch_service_account"}), None)
        .expect_err("an unsupported type is refused");
    assert!(
        err.to_string().contains("unsupported credentials type"),
        "{err}"
    );
    let err = TokenSource::from_json(
        json!({"type": "external_account", "audience": "a", "subject_token_type": "t"}),
        None,
    )
    .expect_err("an external account without token_url or source is refused");
    assert!(err.to_string().contains("external_account"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("not.json");
    std::fs::write(&p, "not json").unwrap();
    assert!(
        TokenSource::from_file(&p, None)
            .unwrap_err()
            .to_string()
            .contains("is not JSON")
    );
}
