//! The Prometheus endpoint: `GET /metrics` on a TCP address given with
//! `--metrics-listen` (or `KEPLER_METRICS_LISTEN`), off by default.
//!
//! The daemon is root and this is a network port, so the endpoint is
//! read-only and narrow: it binds loopback addresses only unless
//! `--metrics-listen-public` is given; it serves at most
//! [`MAX_CONNECTIONS`] connections at once (others wait in the kernel's
//! backlog), one request per connection, headers within [`MAX_HEAD`] bytes
//! read within [`HEAD_TIMEOUT`], and each connection ends after
//! [`CONNECTION_TIMEOUT`] whatever the client does. A scrape reads what the
//! configs already know (states and the last sampling tick's usage): it
//! never samples, and its cost grows with the number of services only.
//! Environment values and commands are never exposed.

mod render;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::daemon::Daemon;

/// Scrapes served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Bytes of request head (request line and headers) read at most.
pub const MAX_HEAD: usize = 8192;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The environment variable that sets `--metrics-listen`.
pub const LISTEN_ENV: &str = "KEPLER_METRICS_LISTEN";

/// Why `address` may not be bound, if it may not: a non-loopback address
/// needs `public`.
pub fn check_address(address: SocketAddr, public: bool) -> Result<(), String> {
    let loopback = match address.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    if loopback || public {
        return Ok(());
    }
    Err(format!(
        "--metrics-listen {address} is not a loopback address: the metrics endpoint would be \
         reachable from other machines. Use 127.0.0.1 or [::1], or add --metrics-listen-public \
         if that is what you want"
    ))
}

/// Serves `listener` until the daemon closes its connections.
pub async fn serve(listener: TcpListener, daemon: Arc<Daemon>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut closing = daemon.closing_connections();
    loop {
        // A connection is accepted only when a slot is free.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            _ = crate::daemon::raised(&mut closing) => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::daemon::raised(&mut closing) => return,
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let daemon = daemon.clone();
                async move { Ok::<_, Infallible>(answer(request, &daemon).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

async fn answer(request: Request<Incoming>, daemon: &Daemon) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // Prometheus asks for OpenMetrics; other clients (curl, promtool) get
    // the classic text format.
    let openmetrics = request.headers().get_all(ACCEPT).iter().any(|accept| {
        accept
            .as_bytes()
            .windows(19)
            .any(|w| w == b"application/openmet")
    });
    match render::scrape(daemon).await {
        Ok(text) => {
            let (text, content_type) = if openmetrics {
                (text, OPENMETRICS)
            } else {
                (render::classic(&text), CLASSIC)
            };
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_bound_without_public() {
        let ok = |text: &str, public| check_address(text.parse().unwrap(), public).is_ok();
        assert!(ok("127.0.0.1:9464", false));
        assert!(ok("127.8.0.1:9464", false));
        assert!(ok("[::1]:9464", false));
        assert!(ok("[::ffff:127.0.0.1]:9464", false));
        assert!(!ok("0.0.0.0:9464", false));
        assert!(!ok("[::]:9464", false));
        assert!(!ok("192.0.2.7:9464", false));
        assert!(ok("0.0.0.0:9464", true));
    }
}
