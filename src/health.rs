//! Health probes: /health, /ready and /live of a service, their latency distribution and the
//! shape of their bodies, as the migration plan's health endpoint table defines them.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The three probed endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/health`: status healthy.
    Health,
    /// `/ready`: status ready or degraded, with a per-dependency checks map.
    Ready,
    /// `/live`: status alive.
    Live,
}

impl Endpoint {
    /// All endpoints in table order.
    pub const ALL: [Endpoint; 3] = [Endpoint::Health, Endpoint::Ready, Endpoint::Live];

    /// The path segment.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Health => "/health",
            Endpoint::Ready => "/ready",
            Endpoint::Live => "/live",
        }
    }
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// An answer with the right status code and body shape.
    Ok {
        /// HTTP status.
        status: u16,
        /// The body's `status` field.
        body_status: String,
    },
    /// An answer with a wrong status code or body.
    BadAnswer {
        /// HTTP status.
        status: u16,
        /// What is wrong.
        why: String,
    },
    /// No answer: connection refused, reset, DNS, TLS.
    ConnectionFailed {
        /// The transport error.
        why: String,
    },
    /// No answer within the probe timeout.
    TimedOut,
}

/// One probe: endpoint, latency and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSample {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// Wall time of the request, ms.
    pub latency_ms: f64,
    /// What came back.
    pub outcome: ProbeOutcome,
}

/// Checks a body against the shape the plan defines for `endpoint`; returns the body status.
pub fn check_body(endpoint: Endpoint, status: u16, body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let body_status = v
        .get("status")
        .and_then(|s| s.as_str())
        .ok_or("body has no string field \"status\"")?
        .to_string();
    let ok_code = |allowed: &[u16]| {
        if allowed.contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    };
    match endpoint {
        Endpoint::Health => {
            ok_code(&[200])?;
            if body_status != "healthy" {
                return Err(format!("status is {body_status:?}, expected \"healthy\""));
            }
        }
        Endpoint::Live => {
            ok_code(&[200])?;
            if body_status != "alive" {
                return Err(format!("status is {body_status:?}, expected \"alive\""));
            }
        }
        Endpoint::Ready => {
            // The plan: /ready answers 200 with "ready", or with "degraded" in degraded mode;
            // a 503 is not the plan's answer.
            ok_code(&[200])?;
            if body_status != "ready" && body_status != "degraded" {
                return Err(format!(
                    "status is {body_status:?}, expected \"ready\" or \"degraded\""
                ));
            }
            let checks = v
                .get("checks")
                .and_then(|c| c.as_object())
                .ok_or("body has no object field \"checks\"")?;
            for (name, check) in checks {
                let state = check
                    .as_str()
                    .or_else(|| check.get("status").and_then(|s| s.as_str()))
                    .ok_or_else(|| format!("check {name:?} has no status"))?;
                if !["healthy", "degraded", "unhealthy", "skipped", "unknown"].contains(&state) {
                    return Err(format!("check {name:?} has unknown status {state:?}"));
                }
            }
        }
    }
    Ok(body_status)
}

/// Probes each endpoint `iterations` times, one after another.
pub async fn probe(
    client: &reqwest::Client,
    base_url: &str,
    prefix: &str,
    iterations: usize,
    timeout: Duration,
) -> Vec<ProbeSample> {
    let base = base_url.trim_end_matches('/');
    let prefix = prefix.trim_end_matches('/');
    let mut samples = Vec::with_capacity(iterations * 3);
    for _ in 0..iterations {
        for endpoint in Endpoint::ALL {
            let url = format!("{base}{prefix}{}", endpoint.path());
            let start = Instant::now();
            let outcome = match tokio::time::timeout(timeout, async {
                let resp = client.get(&url).send().await?;
                let status = resp.status().as_u16();
                let body = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, body))
            })
            .await
            {
                Err(_) => ProbeOutcome::TimedOut,
                Ok(Err(e)) if e.is_timeout() => ProbeOutcome::TimedOut,
                Ok(Err(e)) => ProbeOutcome::ConnectionFailed {
                    why: error_chain(&e),
                },
                Ok(Ok((status, body))) => match check_body(endpoint, status, &body) {
                    Ok(body_status) => ProbeOutcome::Ok {
                        status,
                        body_status,
                    },
                    Err(why) => ProbeOutcome::BadAnswer { status, why },
                },
            };
            samples.push(ProbeSample {
                endpoint,
                latency_ms: start.elapsed().as_secs_f64() * 1000.0,
                outcome,
            });
        }
    }
    samples
}

/// One endpoint's figures against the plan's health table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// "/health", "/ready" or "/live".
    pub path: String,
    /// Probes that got a well-formed answer.
    pub ok: usize,
    /// Probes sent.
    pub attempts: usize,
    /// Latency of the well-formed answers.
    pub latency: Option<crate::bench::stats::Summary>,
    /// The plan's target / typical / max acceptable, ms.
    pub target_lt_ms: Option<f64>,
    /// Typical, ms.
    pub typical_ms: Option<f64>,
    /// Max acceptable, ms.
    pub max_acceptable_ms: Option<f64>,
    /// Verdict: p50 against the target, p99 against max acceptable (fails when any probe got no
    /// well-formed answer).
    pub verdict: crate::suites::Verdict,
    /// The first problem seen, if any.
    pub first_problem: Option<String>,
}

/// A health probe run: where, the endpoints' figures and verdicts, and the raw samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Base URL plus prefix.
    pub url: String,
    /// When it ran.
    pub measured_at: chrono::DateTime<chrono::Utc>,
    /// Per endpoint.
    pub endpoints: Vec<EndpointReport>,
    /// Every probe.
    pub samples: Vec<ProbeSample>,
}

impl HealthReport {
    /// Judges `samples` against `table`.
    pub fn new(url: &str, samples: Vec<ProbeSample>, table: &crate::suites::HealthTable) -> Self {
        use crate::suites::Verdict;
        let endpoints = Endpoint::ALL
            .iter()
            .map(|e| {
                let mine: Vec<&ProbeSample> = samples.iter().filter(|s| s.endpoint == *e).collect();
                let good: Vec<u64> = mine
                    .iter()
                    .filter(|s| matches!(s.outcome, ProbeOutcome::Ok { .. }))
                    .map(|s| (s.latency_ms * 1000.0).round() as u64)
                    .collect();
                let latency = crate::bench::stats::Summary::from_micros(good.iter().copied());
                let row = table.endpoints.iter().find(|r| r.path == e.path());
                let first_problem = mine
                    .iter()
                    .find(|s| !matches!(s.outcome, ProbeOutcome::Ok { .. }))
                    .map(|s| format!("{:?}", s.outcome));
                let verdict = match row {
                    _ if good.len() < mine.len() => Verdict::Fails,
                    Some(r) => crate::acceptance::health_verdict(
                        r,
                        latency.as_ref().map(|l| l.p50_seconds * 1000.0),
                        latency.as_ref().map(|l| l.p99_seconds * 1000.0),
                    ),
                    None => Verdict::NoThreshold,
                };
                EndpointReport {
                    path: e.path().to_string(),
                    ok: good.len(),
                    attempts: mine.len(),
                    latency,
                    target_lt_ms: row.map(|r| r.target_lt_ms),
                    typical_ms: row.map(|r| r.typical_ms),
                    max_acceptable_ms: row.map(|r| r.max_acceptable_ms),
                    verdict,
                    first_problem,
                }
            })
            .collect();
        HealthReport {
            url: url.to_string(),
            measured_at: chrono::Utc::now(),
            endpoints,
            samples,
        }
    }

    /// True when every endpoint answered well and within its max acceptable latency.
    pub fn passed(&self) -> bool {
        self.endpoints
            .iter()
            .all(|e| e.verdict != crate::suites::Verdict::Fails)
    }

    /// The endpoint table in `style`.
    pub fn render(&self, style: crate::output::TableStyle) -> String {
        let ms = |v: Option<f64>| {
            v.map(|v| format!("{v:.1} ms"))
                .unwrap_or_else(|| "-".into())
        };
        let rows: Vec<Vec<String>> = self
            .endpoints
            .iter()
            .map(|e| {
                let l = e.latency.as_ref();
                vec![
                    e.path.clone(),
                    format!("{}/{}", e.ok, e.attempts),
                    ms(l.map(|l| l.p50_seconds * 1000.0)),
                    ms(l.map(|l| l.p99_seconds * 1000.0)),
                    format!(
                        "< {} / ~{} / {}",
                        ms(e.target_lt_ms),
                        ms(e.typical_ms),
                        ms(e.max_acceptable_ms)
                    ),
                    e.verdict.as_str().to_string(),
                    e.first_problem.clone().unwrap_or_default(),
                ]
            })
            .collect();
        crate::output::render(
            &[
                "Endpoint",
                "ok",
                "p50",
                "p99",
                "target / typical / max",
                "verdict",
                "first problem",
            ],
            &rows,
            style,
        )
    }

    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        format!(
            "# Health endpoints\n\nProbed `{}` at {}.\n\n{}\n",
            self.url,
            self.measured_at.to_rfc3339(),
            self.render(crate::output::TableStyle::Markdown)
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shapes() {
        assert_eq!(
            check_body(Endpoint::Health, 200, br#"{"status":"healthy"}"#).unwrap(),
            "healthy"
        );
        assert!(check_body(Endpoint::Health, 200, br#"{"status":"ok"}"#).is_err());
        assert!(check_body(Endpoint::Health, 500, br#"{"status":"healthy"}"#).is_err());
        assert!(check_body(Endpoint::Live, 200, b"not json").is_err());
        // The plan: /ready returns 200 in degraded mode too; a 503 is not its answer.
        let degraded =
            br#"{"status":"degraded","checks":{"docker":"unhealthy","db":{"status":"skipped"}}}"#;
        assert_eq!(
            check_body(Endpoint::Ready, 200, degraded).unwrap(),
            "degraded"
        );
        assert_eq!(
            check_body(Endpoint::Ready, 503, degraded),
            Err("HTTP 503".to_string())
        );
        assert!(check_body(Endpoint::Ready, 200, br#"{"status":"ready"}"#).is_err());
        assert!(
            check_body(
                Endpoint::Ready,
                200,
                br#"{"status":"ready","checks":{"x":"bad"}}"#
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn refused_connection_is_a_result() {
        // Bind then drop a listener so the port is (very likely) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = reqwest::Client::new();
        let samples = probe(
            &client,
            &format!("http://127.0.0.1:{port}"),
            "",
            1,
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(samples.len(), 3);
        assert!(
            samples
                .iter()
                .all(|s| matches!(s.outcome, ProbeOutcome::ConnectionFailed { .. }))
        );
    }
}
