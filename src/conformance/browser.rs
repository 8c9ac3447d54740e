//! The browser cases (area `browser`, extended level): the DevTools endpoint `get_browser`
//! returns answers, a page created over CDP navigates and evaluates, the browser survives a
//! stateful command, runs unprivileged and is gone after `destroy`, and the VNC address answers
//! the RFB handshake. A backend that declares no browser passes them by answering
//! `Unsupported`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::cdp::{self, CdpClient, CdpError};
use crate::browser::rfb;
use crate::protocol::{BrowserInfo, Capabilities, ErrorKind, Sandbox, SandboxError};

use super::case::Case;
use super::steps::{SandboxGuard, T, case, ensure, expect_kind, run_stateful, sb};
use super::terms::{Capability, CaseCtx, CaseFailure, CaseLevel, CaseResult};

/// Every browser case.
pub(super) fn cases() -> Vec<Case> {
    use Capability::{Browser, Vnc};
    use CaseLevel::Extended;
    vec![
        case("browser.get_browser", Extended, &[Browser], false, |c| {
            Box::pin(get_browser(c))
        }),
        case(
            "browser.page_navigate_evaluate",
            Extended,
            &[Browser],
            false,
            |c| Box::pin(navigate_evaluate(c)),
        ),
        case(
            "browser.survives_stateful_command",
            Extended,
            &[Browser],
            false,
            |c| Box::pin(survives_stateful(c)),
        ),
        case(
            "browser.runs_unprivileged",
            Extended,
            &[Browser],
            false,
            |c| Box::pin(unprivileged(c)),
        ),
        case(
            "browser.gone_after_destroy",
            Extended,
            &[Browser],
            false,
            |c| Box::pin(gone_after_destroy(c)),
        ),
        case("browser.vnc_url", Extended, &[Vnc], false, |c| {
            Box::pin(vnc_url(c))
        }),
    ]
}

fn cdp_step<V>(step: &str, sandbox: &str, r: Result<V, CdpError>) -> Result<V, CaseFailure> {
    r.map_err(|e| CaseFailure::sandbox(step, e.into_sandbox_error(sandbox, step)))
}

/// `get_browser`, with the fields every later step needs present.
async fn browser_of(s: &dyn Sandbox) -> Result<(BrowserInfo, String), CaseFailure> {
    let b = sb("get_browser", s.get_browser().await)?;
    let ws = b.websocket_url.clone().unwrap_or_default();
    ensure(
        "get_browser",
        !b.cdp_url.is_empty() && !ws.is_empty(),
        || format!("get_browser returned no DevTools address: {b:?}"),
    )?;
    Ok((b, ws))
}

/// The `host:port` of an `http://` or `ws://` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default()
}

async fn get_browser(ctx: CaseCtx) -> CaseResult {
    let s = ctx.sandbox.as_ref();
    let (b, ws) = browser_of(s).await?;
    ensure("supports_browser", s.supports_browser(), || {
        "get_browser answered, yet supports_browser() is false".into()
    })?;
    ensure("cdp_url", s.cdp_url() == b.cdp_url, || {
        format!(
            "cdp_url() = {:?} differs from get_browser().cdp_url = {:?}",
            s.cdp_url(),
            b.cdp_url
        )
    })?;
    let version = b.version.clone().unwrap_or_default();
    ensure("get_browser.version", !version.is_empty(), || {
        "get_browser returned no browser version".into()
    })?;
    // The endpoint itself, asked from here: it answers, with the same browser.
    let client = reqwest::Client::new();
    let v = cdp_step(
        "GET /json/version",
        s.id(),
        cdp::version(&client, &b.cdp_url, T).await,
    )?;
    ensure("GET /json/version", v.browser == version, || {
        format!(
            "/json/version says {:?}, get_browser said {version:?}",
            v.browser
        )
    })?;
    ensure("GET /json/version", v.websocket_url == ws, || {
        format!(
            "/json/version's WebSocket URL {:?} differs from get_browser's {ws:?}",
            v.websocket_url
        )
    })?;
    ensure(
        "websocket_url",
        authority(&ws) == authority(&b.cdp_url),
        || {
            format!(
                "the WebSocket URL {ws:?} is not on the endpoint's address {:?}",
                b.cdp_url
            )
        },
    )
}

/// The page the navigation case loads, and what evaluating [`EXPRESSION`] in it gives.
const PAGE: &str = "<title>sandbox-harness</title><p id=n>21</p>";
const EXPRESSION: &str =
    "document.title + ':' + 2 * Number(document.getElementById('n').textContent)";
const EXPECTED: &str = "sandbox-harness:42";

async fn navigate_evaluate(ctx: CaseCtx) -> CaseResult {
    let s = ctx.sandbox.as_ref();
    let (_, ws) = browser_of(s).await?;
    let mut c = cdp_step("connect", s.id(), CdpClient::connect(&ws, T).await)?;
    let page = cdp_step("Target.createTarget", s.id(), c.open_page().await)?;
    let url = cdp::data_url(PAGE);
    cdp_step("Page.navigate", s.id(), c.navigate(&page, &url).await)?;
    let got = cdp_step(
        "Runtime.evaluate",
        s.id(),
        c.evaluate(&page, EXPRESSION).await,
    )?;
    ensure("Runtime.evaluate", got == json!(EXPECTED), || {
        format!("{EXPRESSION} gave {got}, expected {EXPECTED:?}")
    })?;
    let proto = cdp_step(
        "Runtime.evaluate",
        s.id(),
        c.evaluate(&page, "location.protocol").await,
    )?;
    ensure("Runtime.evaluate", proto == json!("data:"), || {
        format!("the page is at {proto}, not on the data: URL")
    })?;
    cdp_step("Target.closeTarget", s.id(), c.close_page(&page).await)?;
    c.close().await;
    Ok(())
}

async fn survives_stateful(ctx: CaseCtx) -> CaseResult {
    let s = ctx.sandbox.as_ref();
    let (b, ws) = browser_of(s).await?;
    let mut c = cdp_step("connect", s.id(), CdpClient::connect(&ws, T).await)?;
    let page = cdp_step("Target.createTarget", s.id(), c.open_page().await)?;
    cdp_step(
        "Page.navigate",
        s.id(),
        c.navigate(&page, &cdp::data_url(PAGE)).await,
    )?;
    c.close().await;
    // A stateful command that changes the session and starts and ends processes.
    let dir = format!("{}/state", ctx.case_dir);
    run_stateful(
        &ctx,
        s,
        "s",
        &format!("mkdir -p '{dir}' && cd '{dir}' && export BROWSER_CASE=1 && sleep 1 && echo done"),
    )
    .await?;
    let v = cdp_step(
        "GET /json/version",
        s.id(),
        cdp::version(&reqwest::Client::new(), &b.cdp_url, T).await,
    )?;
    ensure("GET /json/version", v.websocket_url == ws, || {
        format!(
            "the browser changed across the command: {ws:?} before, {:?} after",
            v.websocket_url
        )
    })?;
    let mut c = cdp_step("connect", s.id(), CdpClient::connect(&ws, T).await)?;
    let targets = cdp_step("Target.getTargets", s.id(), c.target_ids().await)?;
    ensure(
        "Target.getTargets",
        targets.contains(&page.target_id),
        || {
            format!(
                "the page {} opened before the command is gone: {targets:?}",
                page.target_id
            )
        },
    )?;
    cdp_step("Target.closeTarget", s.id(), c.close_page(&page).await)?;
    c.close().await;
    Ok(())
}

/// Prints `comm uid` of every process whose name starts with `chrom` (Chromium, Chrome).
const BROWSER_PROCESSES: &str = r#"for __d in /proc/[0-9]*; do
  __c=$(cat "$__d/comm" 2>/dev/null) || continue
  case $__c in
    chrom*)
      __u=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "$__d/status" 2>/dev/null) || continue
      [ -n "$__u" ] && printf '%s %s\n' "$__c" "$__u"
      ;;
  esac
done
"#;

async fn unprivileged(ctx: CaseCtx) -> CaseResult {
    let s = ctx.sandbox.as_ref();
    // The browser is up first, so its processes exist.
    browser_of(s).await?;
    let r = run_stateful(&ctx, s, "ps", BROWSER_PROCESSES).await?;
    let text = String::from_utf8_lossy(&r.stdout).into_owned();
    let procs: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once(' ')).collect();
    ensure("browser processes", !procs.is_empty(), || {
        "no process named chrom* in the sandbox, yet the browser answers".into()
    })?;
    let root: Vec<&(&str, &str)> = procs.iter().filter(|(_, uid)| *uid == "0").collect();
    ensure("browser processes", root.is_empty(), || {
        format!("browser processes run as root (uid 0): {root:?}")
    })
}

async fn gone_after_destroy(ctx: CaseCtx) -> CaseResult {
    let wants = Capabilities {
        browser: true,
        ..Capabilities::default()
    };
    let guard = SandboxGuard::new(sb(
        "create_with browser",
        ctx.backend.create_with(wants).await,
    )?);
    let s = guard.sandbox();
    let id = s.id().to_string();
    let (b, _) = browser_of(s.as_ref()).await?;
    let client = reqwest::Client::new();
    cdp_step(
        "GET /json/version",
        &id,
        cdp::version(&client, &b.cdp_url, T).await,
    )?;
    drop(s);
    sb("destroy", guard.destroy().await)?;
    // Removal is synchronous, so the endpoint should fail at once; a few seconds of grace for
    // a connection already accepted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cdp::version(&client, &b.cdp_url, Duration::from_secs(2)).await {
            Err(_) => break,
            Ok(v) if Instant::now() >= deadline => {
                return Err(CaseFailure::at(
                    "GET /json/version after destroy",
                    format!(
                        "the browser {} still answers on {} after destroy",
                        v.browser, b.cdp_url
                    ),
                ));
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    expect_kind(
        "get after destroy",
        ctx.backend.get(&id).await.map(|s| s.id().to_string()),
        ErrorKind::NotFound,
    )
}

async fn vnc_url(ctx: CaseCtx) -> CaseResult {
    let s = ctx.sandbox.as_ref();
    // Without VNC there is no method that can say `Unsupported` except get_browser.
    let b = sb("get_browser", s.get_browser().await)?;
    let url = b.vnc_url.clone().unwrap_or_default();
    ensure("get_browser.vnc_url", !url.is_empty(), || {
        "VNC declared but get_browser().vnc_url is empty".into()
    })?;
    ensure("vnc_url", s.vnc_url() == url, || {
        format!(
            "vnc_url() = {:?} differs from get_browser().vnc_url = {url:?}",
            s.vnc_url()
        )
    })?;
    let hello = rfb::handshake(&url, T).await.map_err(|e| {
        CaseFailure::sandbox(
            "RFB handshake",
            SandboxError::new(ErrorKind::Network, s.id(), "vnc", e.to_string()),
        )
    })?;
    ensure("RFB handshake", !hello.security_types.is_empty(), || {
        format!("{} offered no security type", hello.banner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(authority("http://127.0.0.1:5/"), "127.0.0.1:5");
        assert_eq!(
            authority("ws://127.0.0.1:5/devtools/browser/x"),
            "127.0.0.1:5"
        );
    }
}
