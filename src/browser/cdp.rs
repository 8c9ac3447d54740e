//! A minimal Chrome DevTools Protocol client: the HTTP endpoint's `/json/version`, and a
//! WebSocket connection that sends commands and reads their answers and events in order (no
//! background task; one caller at a time). Enough to open a page, navigate it and evaluate
//! script in it, as the conformance cases and the bench do.
//!
//! Protocol reference: the Chrome DevTools Protocol documentation (chromedevtools.github.io/
//! devtools-protocol), domains Target (createTarget, attachToTarget with `flatten`,
//! getTargets, closeTarget), Page (enable, navigate, loadEventFired) and Runtime (evaluate).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{ErrorKind, SandboxError};

/// Events kept while waiting for answers; older ones are dropped beyond this.
const MAX_BUFFERED_EVENTS: usize = 1024;

/// Why a DevTools exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    /// The endpoint could not be reached.
    #[error("cannot reach the DevTools endpoint {url}: {detail}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// An answer had an unexpected shape.
    #[error("unexpected answer to {what}: {detail}")]
    Malformed {
        /// The request.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The browser answered a command with an error.
    #[error("{method} failed: {message} (CDP error {code})")]
    Protocol {
        /// The command.
        method: String,
        /// CDP's error code.
        code: i64,
        /// CDP's message.
        message: String,
    },
    /// No answer in time.
    #[error("no answer to {what} within {after:?}")]
    Timeout {
        /// The request.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// The connection closed or broke.
    #[error("the DevTools connection closed: {0}")]
    Closed(String),
}

impl CdpError {
    /// The protocol error class this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CdpError::Connect { .. } | CdpError::Closed(_) => ErrorKind::Network,
            CdpError::Timeout { .. } => ErrorKind::Timeout,
            CdpError::Malformed { .. } | CdpError::Protocol { .. } => ErrorKind::Backend,
        }
    }

    /// As a protocol error of `sandbox` during `op`.
    pub fn into_sandbox_error(self, sandbox: &str, op: &str) -> SandboxError {
        SandboxError::new(self.kind(), sandbox, op, self.to_string()).with_source(self)
    }
}

/// What `/json/version` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    /// Product and version, e.g. `Chrome/156.0.8078.108`.
    #[serde(rename = "Browser")]
    pub browser: String,
    /// The protocol version, e.g. `1.3`.
    #[serde(rename = "Protocol-Version")]
    pub protocol_version: String,
    /// The browser-level WebSocket URL (built from the request's Host, so it is reachable
    /// where the request came from).
    #[serde(rename = "webSocketDebuggerUrl")]
    pub websocket_url: String,
}

/// Fetches `{cdp_url}/json/version`.
pub async fn version(
    client: &reqwest::Client,
    cdp_url: &str,
    timeout: Duration,
) -> Result<VersionInfo, CdpError> {
    let url = format!("{}/json/version", cdp_url.trim_end_matches('/'));
    let resp = client
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                CdpError::Timeout {
                    what: url.clone(),
                    after: timeout,
                }
            } else {
                CdpError::Connect {
                    url: url.clone(),
                    detail: e.to_string(),
                }
            }
        })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| CdpError::Connect {
        url: url.clone(),
        detail: e.to_string(),
    })?;
    if !status.is_success() {
        return Err(CdpError::Malformed {
            what: url,
            detail: format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
        });
    }
    serde_json::from_slice(&body).map_err(|e| CdpError::Malformed {
        what: url,
        detail: e.to_string(),
    })
}

/// A page target attached in flat mode: commands for it carry its session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The target id.
    pub target_id: String,
    /// The session id of the attachment.
    pub session_id: String,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One DevTools WebSocket connection.
pub struct CdpClient {
    ws: Ws,
    next_id: u64,
    events: VecDeque<Value>,
    timeout: Duration,
}

impl CdpClient {
    /// Connects to a WebSocket URL (`/json/version`'s `webSocketDebuggerUrl`); `timeout`
    /// bounds the connection and every later command.
    pub async fn connect(ws_url: &str, timeout: Duration) -> Result<CdpClient, CdpError> {
        let connect = tokio_tungstenite::connect_async_with_config(ws_url, None, true);
        let (ws, _) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| CdpError::Timeout {
                what: format!("connecting to {ws_url}"),
                after: timeout,
            })?
            .map_err(|e| CdpError::Connect {
                url: ws_url.to_string(),
                detail: e.to_string(),
            })?;
        Ok(CdpClient {
            ws,
            next_id: 1,
            events: VecDeque::new(),
            timeout,
        })
    }

    /// Sends a command (to a page session, or to the browser when `session` is `None`) and
    /// returns its `result`; events read meanwhile are kept for [`CdpClient::wait_event`].
    pub async fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, CdpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .map_err(|e| CdpError::Closed(e.to_string()))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let m = self.next_message(deadline, method).await?;
            if m.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = m.get("error") {
                    return Err(CdpError::Protocol {
                        method: method.to_string(),
                        code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                        message: err
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
                return Ok(m.get("result").cloned().unwrap_or(Value::Null));
            }
            if m.get("method").is_some() {
                self.keep_event(m);
            }
        }
    }

    /// Waits for the next event `method` of `session` (buffered or new) and returns its params.
    pub async fn wait_event(
        &mut self,
        method: &str,
        session: Option<&str>,
    ) -> Result<Value, CdpError> {
        let matches = |m: &Value| {
            m.get("method").and_then(Value::as_str) == Some(method)
                && m.get("sessionId").and_then(Value::as_str) == session
        };
        if let Some(i) = self.events.iter().position(matches) {
            let m = self.events.remove(i).unwrap_or_default();
            return Ok(m.get("params").cloned().unwrap_or(Value::Null));
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let m = self.next_message(deadline, method).await?;
            if matches(&m) {
                return Ok(m.get("params").cloned().unwrap_or(Value::Null));
            }
            if m.get("method").is_some() {
                self.keep_event(m);
            }
        }
    }

    fn keep_event(&mut self, m: Value) {
        if self.events.len() >= MAX_BUFFERED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(m);
    }

    /// Forgets the buffered events of `session`.
    fn discard_events(&mut self, session: Option<&str>) {
        self.events
            .retain(|m| m.get("sessionId").and_then(Value::as_str) != session);
    }

    async fn next_message(&mut self, deadline: Instant, what: &str) -> Result<Value, CdpError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .map_err(|_| CdpError::Timeout {
                    what: what.to_string(),
                    after: self.timeout,
                })?;
            let text = match msg {
                None => return Err(CdpError::Closed("end of stream".into())),
                Some(Err(e)) => return Err(CdpError::Closed(e.to_string())),
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                Some(Ok(Message::Close(f))) => {
                    return Err(CdpError::Closed(
                        f.map(|f| f.reason.to_string()).unwrap_or_default(),
                    ));
                }
                Some(Ok(_)) => continue,
            };
            return serde_json::from_str(&text).map_err(|e| CdpError::Malformed {
                what: what.to_string(),
                detail: format!("{e}: {}", text.chars().take(200).collect::<String>()),
            });
        }
    }

    /// Opens a blank page and attaches to it (flat mode), with page events on.
    pub async fn open_page(&mut self) -> Result<Page, CdpError> {
        let r = self
            .call("Target.createTarget", json!({"url": "about:blank"}), None)
            .await?;
        let target_id = str_field(&r, "targetId", "Target.createTarget")?;
        let r = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
                None,
            )
            .await?;
        let session_id = str_field(&r, "sessionId", "Target.attachToTarget")?;
        self.call("Page.enable", json!({}), Some(&session_id))
            .await?;
        Ok(Page {
            target_id,
            session_id,
        })
    }

    /// Navigates `page` to `url` and waits for its load event.
    pub async fn navigate(&mut self, page: &Page, url: &str) -> Result<(), CdpError> {
        // A load event still buffered from an earlier navigation must not count as this one's.
        self.discard_events(Some(&page.session_id));
        let r = self
            .call("Page.navigate", json!({"url": url}), Some(&page.session_id))
            .await?;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            return Err(CdpError::Protocol {
                method: "Page.navigate".into(),
                code: 0,
                message: e.to_string(),
            });
        }
        self.wait_event("Page.loadEventFired", Some(&page.session_id))
            .await?;
        Ok(())
    }

    /// Evaluates `expression` in `page` and returns its value (by value, promises awaited);
    /// a thrown exception is a `Protocol` error.
    pub async fn evaluate(&mut self, page: &Page, expression: &str) -> Result<Value, CdpError> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
                Some(&page.session_id),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(CdpError::Protocol {
                method: "Runtime.evaluate".into(),
                code: 0,
                message: format!("the expression threw: {ex}"),
            });
        }
        Ok(r.get("result")
            .and_then(|v| v.get("value"))
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// The ids of every target the browser has.
    pub async fn target_ids(&mut self) -> Result<Vec<String>, CdpError> {
        let r = self.call("Target.getTargets", json!({}), None).await?;
        let infos = r
            .get("targetInfos")
            .and_then(Value::as_array)
            .ok_or_else(|| CdpError::Malformed {
                what: "Target.getTargets".into(),
                detail: format!("no targetInfos in {r}"),
            })?;
        Ok(infos
            .iter()
            .filter_map(|t| t.get("targetId").and_then(Value::as_str))
            .map(str::to_string)
            .collect())
    }

    /// Closes `page`.
    pub async fn close_page(&mut self, page: &Page) -> Result<(), CdpError> {
        self.call(
            "Target.closeTarget",
            json!({"targetId": page.target_id}),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn str_field(v: &Value, field: &str, what: &str) -> Result<String, CdpError> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CdpError::Malformed {
            what: what.to_string(),
            detail: format!("no {field} in {v}"),
        })
}

/// A `data:` URL of an HTML document (percent-encoded, so `#`, `%` and spaces survive).
pub fn data_url(html: &str) -> String {
    let mut out = String::from("data:text/html;charset=utf-8,");
    for b in html.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_are_encoded() {
        assert_eq!(
            data_url("<p id=x>a #1 %</p>"),
            "data:text/html;charset=utf-8,%3Cp%20id%3Dx%3Ea%20%231%20%25%3C%2Fp%3E"
        );
    }

    /// A fake DevTools server: answers each command with `answer(method)`, and before the
    /// answer to `Page.navigate` sends a load event for the session.
    async fn fake_devtools() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                let m: Value = serde_json::from_str(&t).unwrap_or_default();
                let id = m["id"].clone();
                let session = m["sessionId"].clone();
                let reply = match m["method"].as_str().unwrap_or_default() {
                    "Target.createTarget" => json!({"id": id, "result": {"targetId": "T1"}}),
                    "Target.attachToTarget" => json!({"id": id, "result": {"sessionId": "S1"}}),
                    "Page.navigate" => {
                        let ev = json!({"method": "Page.loadEventFired", "sessionId": session, "params": {"timestamp": 1.0}});
                        let _ = ws.send(Message::text(ev.to_string())).await;
                        json!({"id": id, "result": {"frameId": "F", "loaderId": "L"}})
                    }
                    "Runtime.evaluate" if m["params"]["expression"] == "boom" => {
                        json!({"id": id, "result": {"result": {"type": "object"}, "exceptionDetails": {"text": "Uncaught"}}})
                    }
                    "Runtime.evaluate" => {
                        json!({"id": id, "result": {"result": {"type": "number", "value": 42}}})
                    }
                    "Nope.nope" => {
                        json!({"id": id, "error": {"code": -32601, "message": "'Nope.nope' wasn't found"}})
                    }
                    _ => json!({"id": id, "result": {}}),
                };
                if ws.send(Message::text(reply.to_string())).await.is_err() {
                    return;
                }
            }
        });
        format!("ws://{addr}/devtools/browser/x")
    }

    #[tokio::test]
    async fn drives_a_page_and_maps_errors() {
        let url = fake_devtools().await;
        let mut c = CdpClient::connect(&url, Duration::from_secs(5))
            .await
            .unwrap();
        let page = c.open_page().await.unwrap();
        assert_eq!(
            page,
            Page {
                target_id: "T1".into(),
                session_id: "S1".into()
            }
        );
        c.navigate(&page, &data_url("<p>x</p>")).await.unwrap();
        assert_eq!(c.evaluate(&page, "6*7").await.unwrap(), json!(42));
        let e = c.evaluate(&page, "boom").await.unwrap_err();
        assert!(e.to_string().contains("threw"), "{e}");
        let e = c.call("Nope.nope", json!({}), None).await.unwrap_err();
        assert!(matches!(e, CdpError::Protocol { code: -32601, .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::Backend);
        c.close().await;
        let e = CdpClient::connect("ws://127.0.0.1:1/x", Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Network);
    }
}
