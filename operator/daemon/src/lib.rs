//! What switchyard's two binaries (operator and agent) share around their
//! main loop: the `/metrics`, `/healthz`, `/readyz` HTTP endpoint, logging
//! setup, the shutdown signal and giving freed heap back to the kernel. The
//! binaries supply the content through [`Health`] (and may answer paths of
//! their own on the same port, [`Health::handle`]); this crate only serves it.

mod logging;
mod memory;

pub use logging::{LogFormat, init_logging};
pub use memory::release_freed_memory;

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
pub use hyper::Response;
pub use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// A response body: whole, or streamed (chunked) until it ends or the
/// client goes.
pub type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// A whole body.
pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed_unsync()
}

/// What the endpoint reports.
pub trait Health: Send + Sync + 'static {
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    /// `None` when ready, else why not.
    fn not_ready(&self) -> Option<&'static str>;
    /// The response to a GET of a path other than the three above
    /// (`query`: the URI's query string); `None`: 404.
    fn handle(&self, path: &str, query: Option<&str>) -> Option<Response<Body>> {
        let _ = (path, query);
        None
    }
}

/// Binds `addr` (failing with the address in the error) and serves the
/// endpoint until the returned task is aborted.
pub async fn serve(addr: SocketAddr, health: Arc<dyn Health>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let health = health.clone();
                async move {
                    let uri = req.uri();
                    Ok::<_, std::convert::Infallible>(route(
                        uri.path(),
                        uri.query(),
                        health.as_ref(),
                    ))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(path: &str, query: Option<&str>, health: &dyn Health) -> Response<Body> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, health.metrics()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => match health.not_ready() {
            None => (StatusCode::OK, "ready\n".to_string()),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => match health.handle(path, query) {
            Some(resp) => return resp,
            None => (StatusCode::NOT_FOUND, "not found\n".to_string()),
        },
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    // Prometheus 3 refuses a scrape without a Content-Type.
    let kind = match path {
        "/metrics" => EXPOSITION,
        _ => "text/plain; charset=utf-8",
    };
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(kind),
    );
    resp
}

/// A whole HTML page. Its scripts and styles are inline and it loads
/// nothing from elsewhere; the policy keeps it so, and keeps other sites
/// from framing it.
pub fn html_page(page: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(page));
    let headers = resp.headers_mut();
    let set = |h: &mut hyper::HeaderMap, k, v| {
        h.insert(k, hyper::header::HeaderValue::from_static(v));
    };
    set(
        headers,
        hyper::header::CONTENT_TYPE,
        "text/html; charset=utf-8",
    );
    set(
        headers,
        hyper::header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    );
    set(headers, hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    resp
}

/// The Prometheus text exposition format's media type.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process exit code for a binary's result: failure with the error
/// logged and printed on stderr (prefixed with `program`).
pub fn exit_code<E: std::fmt::Display>(
    program: &str,
    result: Result<(), E>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{program}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fake(AtomicBool);
    impl Health for Fake {
        fn metrics(&self) -> String {
            "x_total 1\n".into()
        }
        fn not_ready(&self) -> Option<&'static str> {
            (!self.0.load(Ordering::Relaxed)).then_some("warming up")
        }
        fn handle(&self, path: &str, query: Option<&str>) -> Option<Response<Body>> {
            (path == "/v1/echo").then(|| Response::new(full(format!("q={query:?}"))))
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn a_page_is_html_that_loads_nothing_from_elsewhere() {
        let r = html_page("<p>hi</p>");
        let h = r.headers();
        assert_eq!(h[hyper::header::CONTENT_TYPE], "text/html; charset=utf-8");
        let policy = h[hyper::header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.starts_with("default-src 'self';"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(h[hyper::header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let fake = Arc::new(Fake(AtomicBool::new(false)));
        let task = tokio::spawn(serve(port, fake.clone()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while tokio::net::TcpStream::connect(port).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "endpoint did not listen on {port} within 5s"
            );
            tokio::task::yield_now().await;
        }
        let metrics = get(port, "/metrics").await;
        assert!(metrics.ends_with("x_total 1\n"), "{metrics}");
        let kind = format!("content-type: {EXPOSITION}\r\n");
        assert!(metrics.to_lowercase().contains(&kind), "{metrics}");
        assert!(get(port, "/healthz").await.starts_with("HTTP/1.1 200"));
        let r = get(port, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.ends_with("not ready: warming up\n"),
            "{r}"
        );
        fake.0.store(true, Ordering::Relaxed);
        assert!(get(port, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(port, "/nope").await.starts_with("HTTP/1.1 404"));
        let r = get(port, "/v1/echo?a=1").await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("q=Some(\"a=1\")"),
            "{r}"
        );
        task.abort();
    }
}
