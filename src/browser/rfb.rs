//! The start of the RFB (VNC) handshake, RFC 6143 section 7.1 (7.1.1 ProtocolVersion, 7.1.2
//! Security): the server's banner, the client's choice, and the security types offered.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why the handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum RfbError {
    /// The URL is not `vnc://host:port`.
    #[error("{0:?} is not a vnc://host:port address")]
    Address(String),
    /// No TCP connection.
    #[error("cannot connect to {addr}: {detail}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        detail: String,
    },
    /// The server sent something that is not an RFB 3.x banner.
    #[error("not an RFB banner: {0:?}")]
    Banner(String),
    /// The server refused the connection (zero security types, with its reason).
    #[error("the VNC server refused the connection: {0}")]
    Refused(String),
    /// The connection broke mid-handshake.
    #[error("the handshake broke off: {0}")]
    Io(#[from] std::io::Error),
    /// No complete answer in time.
    #[error("no complete handshake within {0:?}")]
    Timeout(Duration),
}

/// What the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RfbHello {
    /// The banner as sent, without its newline (`RFB 003.008`).
    pub banner: String,
    /// The minor version of protocol 3 (3, 7 or 8; others are treated as 3, as the RFC says).
    pub minor: u8,
    /// The security types offered (1 = None, 2 = VNC authentication...).
    pub security_types: Vec<u8>,
}

/// The `host:port` of a `vnc://host:port` URL.
pub fn address(vnc_url: &str) -> Result<String, RfbError> {
    let rest = vnc_url
        .strip_prefix("vnc://")
        .ok_or_else(|| RfbError::Address(vnc_url.to_string()))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(hostport.to_string()),
        _ => Err(RfbError::Address(vnc_url.to_string())),
    }
}

/// Checks a 12-byte `ProtocolVersion` message (`RFB 003.00x\n`) and returns its minor version.
pub fn parse_banner(b: &[u8]) -> Result<u8, RfbError> {
    let bad = || RfbError::Banner(String::from_utf8_lossy(b).into_owned());
    if b.len() != 12 || !b.starts_with(b"RFB 003.") || b[11] != b'\n' {
        return Err(bad());
    }
    let minor = std::str::from_utf8(&b[8..11])
        .ok()
        .filter(|m| m.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|m| m.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok(match minor {
        7 => 7,
        m if m >= 8 => 8,
        _ => 3,
    })
}

/// Connects, checks the banner, answers with the version both speak and reads the security
/// types; then hangs up.
pub async fn handshake(vnc_url: &str, timeout: Duration) -> Result<RfbHello, RfbError> {
    let addr = address(vnc_url)?;
    tokio::time::timeout(timeout, exchange(&addr))
        .await
        .map_err(|_| RfbError::Timeout(timeout))?
}

async fn exchange(addr: &str) -> Result<RfbHello, RfbError> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| RfbError::Connect {
            addr: addr.to_string(),
            detail: e.to_string(),
        })?;
    let mut banner = [0u8; 12];
    s.read_exact(&mut banner).await?;
    let minor = parse_banner(&banner)?;
    s.write_all(format!("RFB 003.00{minor}\n").as_bytes())
        .await?;
    let security_types = if minor == 3 {
        // 3.3: the server decides, as one u32 (0 = failed, with a reason).
        let t = s.read_u32().await?;
        if t == 0 {
            return Err(RfbError::Refused(read_reason(&mut s).await?));
        }
        vec![u8::try_from(t).unwrap_or(u8::MAX)]
    } else {
        let n = s.read_u8().await?;
        if n == 0 {
            return Err(RfbError::Refused(read_reason(&mut s).await?));
        }
        let mut types = vec![0u8; usize::from(n)];
        s.read_exact(&mut types).await?;
        types
    };
    Ok(RfbHello {
        banner: String::from_utf8_lossy(&banner[..11]).into_owned(),
        minor,
        security_types,
    })
}

async fn read_reason(s: &mut tokio::net::TcpStream) -> Result<String, RfbError> {
    let len = s.read_u32().await?.min(4096);
    let mut reason = vec![0u8; len as usize];
    s.read_exact(&mut reason).await?;
    Ok(String::from_utf8_lossy(&reason).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners() {
        assert_eq!(parse_banner(b"RFB 003.008\n").unwrap(), 8);
        assert_eq!(parse_banner(b"RFB 003.007\n").unwrap(), 7);
        assert_eq!(parse_banner(b"RFB 003.003\n").unwrap(), 3);
        assert_eq!(parse_banner(b"RFB 003.005\n").unwrap(), 3);
        for bad in [
            &b"RFB 004.000\n"[..],
            b"RFB 003.008 ",
            b"SSH-2.0-x\r\n",
            b"RFB 003.0x8\n",
            b"RFB 003.008",
        ] {
            assert!(parse_banner(bad).is_err(), "{bad:?}");
        }
        assert_eq!(address("vnc://127.0.0.1:5900").unwrap(), "127.0.0.1:5900");
        assert!(address("http://127.0.0.1:5900").is_err());
        assert!(address("vnc://127.0.0.1").is_err());
    }

    /// A server that sends `banner`, then (after the client's version) `rest`.
    async fn server(banner: &'static [u8], rest: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let _ = c.write_all(banner).await;
            let mut v = [0u8; 12];
            // A client that rejected the banner hangs up instead of answering.
            if c.read_exact(&mut v).await.is_ok() && v.starts_with(b"RFB 003.00") {
                let _ = c.write_all(rest).await;
            }
        });
        format!("vnc://{addr}")
    }

    #[tokio::test]
    async fn handshakes_with_a_server() {
        let url = server(b"RFB 003.008\n", b"\x02\x01\x02").await;
        let h = handshake(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(h.banner, "RFB 003.008");
        assert_eq!(h.security_types, vec![1, 2]);
        let url = server(b"RFB 003.003\n", b"\x00\x00\x00\x01").await;
        assert_eq!(
            handshake(&url, Duration::from_secs(5))
                .await
                .unwrap()
                .security_types,
            vec![1]
        );
        let url = server(b"RFB 003.008\n", b"\x00\x00\x00\x00\x04busy").await;
        let e = handshake(&url, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(&e, RfbError::Refused(r) if r == "busy"), "{e}");
        let url = server(b"HTTP/1.1 400\n", b"").await;
        assert!(matches!(
            handshake(&url, Duration::from_secs(5)).await,
            Err(RfbError::Banner(_))
        ));
    }
}
