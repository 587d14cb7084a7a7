//! Requests made from inside a lab namespace (a pod's or a node's): a
//! minimal HTTP/1.0 GET and a UDP exchange, on a thread that joined the
//! namespace, so the traffic really originates there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys::in_netns;

/// Timeout for connecting, sending and receiving.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// Parses a raw HTTP/1.x response (pure).
pub fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(HttpResponse {
        status,
        body: body.to_string(),
    })
}

fn request_error(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Request {
        what,
        detail: e.to_string(),
    }
}

/// HTTP GET `path` on `target` from inside `netns`.
pub async fn http_get(netns: PathBuf, target: SocketAddr, path: String) -> Result<HttpResponse> {
    http_get_within(netns, target, path, REQUEST_TIMEOUT).await
}

/// HTTP GET `path` on `target` from inside `netns`, connecting, sending and
/// receiving each within `timeout`.
pub async fn http_get_within(
    netns: PathBuf,
    target: SocketAddr,
    path: String,
    timeout: Duration,
) -> Result<HttpResponse> {
    let what = format!("GET http://{target}{path}");
    tokio::task::spawn_blocking(move || {
        in_netns(&netns, move || -> Result<HttpResponse> {
            let mut s = TcpStream::connect_timeout(&target, timeout)
                .map_err(request_error(what.clone()))?;
            s.set_read_timeout(Some(timeout))
                .map_err(request_error(what.clone()))?;
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: {target}\r\nConnection: close\r\n\r\n"
            )
            .map_err(request_error(what.clone()))?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)
                .map_err(request_error(what.clone()))?;
            parse_response(&raw).ok_or_else(|| Error::Request {
                what,
                detail: "malformed HTTP response".into(),
            })
        })?
    })
    .await
    .map_err(|e| Error::Config(format!("request task: {e}")))?
}

/// Sends `payload` to `target` over UDP from inside `netns`; returns the reply.
pub async fn udp_exchange(netns: PathBuf, target: SocketAddr, payload: String) -> Result<String> {
    let what = format!("UDP {target}");
    tokio::task::spawn_blocking(move || {
        in_netns(&netns, move || -> Result<String> {
            let s = UdpSocket::bind("0.0.0.0:0").map_err(request_error(what.clone()))?;
            s.set_read_timeout(Some(REQUEST_TIMEOUT))
                .map_err(request_error(what.clone()))?;
            s.connect(target).map_err(request_error(what.clone()))?;
            s.send(payload.as_bytes())
                .map_err(request_error(what.clone()))?;
            let mut buf = [0u8; 2048];
            let n = s.recv(&mut buf).map_err(request_error(what.clone()))?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })?
    })
    .await
    .map_err(|e| Error::Config(format!("request task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npod1").unwrap();
        assert_eq!(
            r,
            HttpResponse {
                status: 200,
                body: "pod1".into()
            }
        );
        assert!(parse_response(b"garbage").is_none());
    }
}
