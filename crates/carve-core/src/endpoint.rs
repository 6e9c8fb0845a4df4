//! A small read-only HTTP/1.1 endpoint on a TCP address: `GET` (or `HEAD`)
//! of the paths a [`Handler`] knows, nothing else. carve serves its metrics
//! and LV inventory on it, carve-agent its metrics.
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
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An answer: content type and body, or an error text (500).
pub type Answer = Result<(&'static str, String), String>;

/// Answers the paths it serves; `None` for any other path (404).
pub trait Handler: Send + Sync + 'static {
    fn get(&self, path: &str) -> Option<Answer>;
    /// The paths, for the 404 text.
    fn paths(&self) -> &'static str;
}

/// Binds the address; a failure here stops the program at start-up rather
/// than leaving it running without the endpoint it was asked for.
pub async fn bind(flag: &str, addr: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{flag} {addr:?} is not HOST:PORT ({e})"),
        )
    })?;
    TcpListener::bind(addr).await
}

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Arc<dyn Handler>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                tracing::warn!(error = %e, "http endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "http endpoint: too many connections; closing this one");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, handler.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http endpoint: connection ended with an error");
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
    handler: Arc<dyn Handler>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET is served\n".into(),
        ));
    }
    let Some(answer) = handler.get(req.uri().path()) else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            text,
            format!("only {} served\n", handler.paths()),
        ));
    };
    Ok(match answer {
        Ok((content_type, body)) => reply(StatusCode::OK, content_type, body),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, text, format!("{e}\n")),
    })
}
