//! Serving every conforming gRPC client on a Unix socket, grpc-core ones
//! included.
//!
//! grpc-core (Python grpcio, C++, Ruby; 1.57 and later) sends the socket path,
//! %-encoded, as the HTTP/2 `:authority` of a `unix:` target (for example
//! `run%2Fcarve%2Fcsi.sock`). The h2 crate under tonic refuses a request whose
//! authority is not a valid URI authority (`%` is not allowed there) and
//! resets the stream with PROTOCOL_ERROR before the request reaches tonic, so
//! no tower layer can help. h2 offers no option to relax this.
//!
//! This module sits between the socket and h2: it reads the client's HTTP/2
//! frames, decodes each header block (HPACK, keeping the client's dynamic
//! table), replaces an `:authority` that is not a valid authority with
//! `localhost` (what Go's gRPC and kubelet send on Unix sockets), and re-encodes
//! the block for h2 without using the dynamic table. Every other frame passes
//! through unchanged; the server's frames are never touched. A stream that is
//! not HTTP/2 passes through as it came, so h2 refuses it as it would have.
//!
//! Because it reads every connection before h2 does, it enforces h2's limits
//! itself ([`rewriter`]): bounded memory per connection, no panic on any byte
//! stream, and a connection that breaks a limit is ended with a GOAWAY. The
//! number of connections is bounded too ([`MAX_CONNECTIONS`]).

mod rewriter;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use rewriter::{Rewriter, HEADER_TABLE, MAX_BUFFERED, MAX_FRAME, MAX_HEADER_LIST};

/// Client connections served at once. kubelet, the sidecars and a probe hold
/// a handful; a connection past the bound is closed at once (and logged), so
/// a client that opens thousands cannot make carve hold memory for each.
pub const MAX_CONNECTIONS: usize = 128;
/// Concurrent streams (RPCs) per connection, advertised as
/// SETTINGS_MAX_CONCURRENT_STREAMS: external-provisioner runs up to 100
/// workers over one connection; clients queue past the bound.
pub const MAX_STREAMS: u32 = 128;

/// The tonic server every carve endpoint uses, with the limits the rewriter
/// also enforces advertised to clients, and a span and counters per RPC
/// ([`crate::metrics::rpc::RpcLayer`]).
pub fn server_builder() -> tonic::transport::Server<
    tower::layer::util::Stack<crate::metrics::rpc::RpcLayer, tower::layer::util::Identity>,
> {
    tonic::transport::Server::builder()
        .max_frame_size(MAX_FRAME as u32)
        .http2_max_header_list_size(MAX_HEADER_LIST as u32)
        .max_concurrent_streams(MAX_STREAMS)
        .layer(crate::metrics::rpc::RpcLayer)
}

/// The router of [`server_builder`]'s server.
pub type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<crate::metrics::rpc::RpcLayer, tower::layer::util::Identity>,
>;

/// Hands out one permit per live connection.
#[derive(Clone)]
pub struct ConnectionLimit(Arc<Semaphore>);

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        ConnectionLimit(Arc::new(Semaphore::new(max)))
    }

    /// Wraps an accepted connection, or `None` (the connection is dropped,
    /// that is closed) when [`MAX_CONNECTIONS`] are already open.
    pub fn admit<S>(&self, conn: S) -> Option<AuthorityFix<S>> {
        match self.0.clone().try_acquire_owned() {
            Ok(permit) => Some(AuthorityFix::new(conn, Some(permit))),
            Err(_) => {
                tracing::warn!("refusing a client connection: too many open connections");
                None
            }
        }
    }
}

/// A client connection whose incoming HTTP/2 header blocks pass through a
/// [`Rewriter`]; writes go straight to the socket.
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    ready: Vec<u8>,
    offset: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S, permit: Option<OwnedSemaphorePermit>) -> Self {
        AuthorityFix {
            inner,
            rewriter: Rewriter::default(),
            ready: Vec::new(),
            offset: 0,
            _permit: permit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            if me.offset < me.ready.len() {
                let n = (me.ready.len() - me.offset).min(buf.remaining());
                buf.put_slice(&me.ready[me.offset..me.offset + n]);
                me.offset += n;
                if me.offset == me.ready.len() {
                    me.ready.clear();
                    me.offset = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if me.rewriter.closed_because().is_some() {
                // h2 has read the poison frame; it sees the end of the stream.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // End of stream: an incomplete frame left over is of no use
                // to h2, which sees the end of the stream either way.
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => me.rewriter.feed(rb.filled(), &mut me.ready),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
