//! The metrics endpoint: HTTP/1.1 on a TCP address, `GET /metrics` and the
//! LV inventory `GET /volumes` (for carve-agent), nothing else.
//! Scrapers are few (one Prometheus, maybe a second), so connections are
//! bounded and a client that sends its request slowly is cut off: whoever
//! can reach the port cannot make carve hold memory or tasks for it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrape connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What OpenMetrics scrapers are told they get.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the metrics address; a failure here stops carve at start-up rather
/// than leaving it running without the metrics it was asked for.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--metrics-address {addr:?} is not HOST:PORT ({e})"),
        )
    })?;
    TcpListener::bind(addr).await
}

/// Serves `registry` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, endpoints: Arc<super::Endpoints>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics endpoint: too many connections; closing this one");
            continue;
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, endpoints.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "metrics endpoint: connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response from valid parts")
}

async fn answer(
    req: Request<Incoming>,
    endpoints: Arc<super::Endpoints>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    let path = req.uri().path();
    if path != "/metrics" && path != "/volumes" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            text,
            "only /metrics and /volumes are served\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET is served\n".into(),
        ));
    }
    if path == "/volumes" {
        return Ok(reply(
            StatusCode::OK,
            "application/json",
            endpoints.inventory(),
        ));
    }
    Ok(match super::render(&endpoints.registry) {
        Ok(body) => reply(StatusCode::OK, CONTENT_TYPE, body),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, text, format!("{e}\n")),
    })
}
