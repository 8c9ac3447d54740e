//! Clients of a sandbox browser's endpoints, written here (no browser on the host is used): the
//! Chrome DevTools Protocol ([`cdp`]: its HTTP endpoint and a minimal WebSocket client) and the
//! VNC server's RFB handshake ([`rfb`]). The Docker backend uses them to tell when a browser is
//! up; the conformance cases and the bench drive the browser with them.

pub mod cdp;
pub mod rfb;
