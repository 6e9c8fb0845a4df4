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
//! through unchanged; the server's frames are never touched. Anything it cannot
//! parse is passed through as it came, so h2 judges it as it would have.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE
/// cannot be set lower); re-encoded blocks are split at it.
const MAX_FRAME: usize = 16_384;
/// What replaces an invalid authority.
const AUTHORITY: &[u8] = b"localhost";

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, to pass on if the block cannot be rewritten.
    raw: Vec<u8>,
}

/// The client-to-server half of the rewrite: fed raw bytes, it yields bytes
/// for h2.
pub struct Rewriter {
    preface_left: usize,
    passthrough: bool,
    decoder: loona_hpack::Decoder<'static>,
    block: Option<Block>,
    input: Vec<u8>,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            preface_left: PREFACE.len(),
            passthrough: false,
            decoder: loona_hpack::Decoder::new(),
            block: None,
            input: Vec::new(),
            rewritten: 0,
        }
    }
}

fn u24(b: &[u8]) -> usize {
    (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize
}

fn push_int(out: &mut Vec<u8>, mut value: usize, prefix_bits: u8, flags: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 128);
        value /= 128;
    }
    out.push(value as u8);
}

/// HPACK "literal header field without indexing, new name", raw strings: the
/// encoding that leaves the peer's dynamic table untouched.
fn push_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    push_int(out, name.len(), 7, 0);
    out.extend_from_slice(name);
    push_int(out, value.len(), 7, 0);
    out.extend_from_slice(value);
}

fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

impl Rewriter {
    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Takes bytes read from the client; appends what h2 should read to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.passthrough {
            out.extend_from_slice(data);
            return;
        }
        self.input.extend_from_slice(data);
        if self.preface_left > 0 {
            let done = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(self.input.len());
            if self.input[..n] != PREFACE[done..done + n] {
                // Not HTTP/2 with prior knowledge: not ours to interpret.
                self.passthrough = true;
                out.append(&mut self.input);
                return;
            }
            out.extend(self.input.drain(..n));
            self.preface_left -= n;
            if self.preface_left > 0 {
                return;
            }
        }
        let mut at = 0;
        while self.input.len() - at >= FRAME_HEADER {
            let len = u24(&self.input[at..]);
            let end = at + FRAME_HEADER + len;
            if self.input.len() < end {
                break;
            }
            let frame = self.input[at..end].to_vec();
            at = end;
            self.frame(&frame, out);
            if self.passthrough {
                break;
            }
        }
        let rest = self.input.split_off(at);
        if self.passthrough {
            out.extend_from_slice(&rest);
            self.input.clear();
        } else {
            self.input = rest;
        }
    }

    fn give_up(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        out.extend_from_slice(frame);
        self.passthrough = true;
    }

    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let mut body = payload;
                let mut pad = 0usize;
                if flags & PADDED != 0 {
                    let Some((&p, rest)) = body.split_first() else {
                        return self.give_up(frame, out);
                    };
                    pad = p as usize;
                    body = rest;
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    if body.len() < 5 {
                        return self.give_up(frame, out);
                    }
                    priority = Some(body[..5].try_into().expect("5 bytes"));
                    body = &body[5..];
                }
                if pad > body.len() {
                    return self.give_up(frame, out);
                }
                self.block = Some(Block {
                    stream,
                    flags,
                    priority,
                    fragment: body[..body.len() - pad].to_vec(),
                    raw: frame.to_vec(),
                });
            }
            (CONTINUATION, Some(b)) if b.stream == stream => {
                b.fragment.extend_from_slice(payload);
                b.raw.extend_from_slice(frame);
                b.flags |= flags & END_HEADERS;
            }
            // A header block must be followed by its own CONTINUATIONs.
            (_, Some(_)) => return self.give_up(frame, out),
            (_, None) => {
                out.extend_from_slice(frame);
                return;
            }
        }
        if self
            .block
            .as_ref()
            .is_some_and(|b| b.flags & END_HEADERS != 0)
        {
            let b = self.block.take().expect("block");
            self.finish(b, out);
        }
    }

    fn finish(&mut self, b: Block, out: &mut Vec<u8>) {
        let headers = match self.decoder.decode(&b.fragment) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 header block not decodable; passing the connection through");
                out.extend_from_slice(&b.raw);
                self.passthrough = true;
                return;
            }
        };
        let mut block = Vec::with_capacity(b.fragment.len() + 16);
        for (name, value) in &headers {
            if name.as_slice() == b":authority" && !valid_authority(value) {
                tracing::debug!(authority = %String::from_utf8_lossy(value), "replacing an invalid :authority with localhost");
                self.rewritten += 1;
                push_literal(&mut block, name, AUTHORITY);
            } else {
                push_literal(&mut block, name, value);
            }
        }
        let mut first = Vec::with_capacity(5 + block.len());
        if let Some(p) = b.priority {
            first.extend_from_slice(&p);
        }
        let head_room = MAX_FRAME - first.len();
        let mut chunks = vec![];
        let (head, mut rest) = block.split_at(block.len().min(head_room));
        first.extend_from_slice(head);
        chunks.push(first);
        while !rest.is_empty() {
            let (c, r) = rest.split_at(rest.len().min(MAX_FRAME));
            chunks.push(c.to_vec());
            rest = r;
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.iter().enumerate() {
            let (kind, mut flags) = if i == 0 {
                (HEADERS, b.flags & (END_STREAM | PRIORITY))
            } else {
                (CONTINUATION, 0)
            };
            if i == last {
                flags |= END_HEADERS;
            }
            let len = chunk.len();
            out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
            out.extend_from_slice(&b.stream.to_be_bytes());
            out.extend_from_slice(chunk);
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
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rewriter: Rewriter::default(),
            ready: Vec::new(),
            offset: 0,
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
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // End of stream: a partial frame left over goes on as it is.
                    buf.put_slice(&me.rewriter.input.split_off(0));
                    return Poll::Ready(Ok(()));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Parses frames out of a byte stream (after the preface).
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut v = vec![];
        while b.len() >= 9 {
            let len = u24(b);
            let s = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            v.push((b[3], b[4], s, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        v
    }

    fn request(enc: &mut loona_hpack::Encoder<'_>, authority: &[u8]) -> Vec<u8> {
        enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/csi.v1.Identity/Probe"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ])
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut d = loona_hpack::Decoder::new();
        let mut blocks = vec![];
        let mut cur = vec![];
        for (kind, flags, _, payload) in frames(&bytes[PREFACE.len()..]) {
            match kind {
                HEADERS => {
                    let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                    cur.extend_from_slice(&payload[skip..]);
                }
                CONTINUATION => cur.extend_from_slice(&payload),
                _ => continue,
            }
            if flags & END_HEADERS != 0 {
                blocks.push(d.decode(&cur).unwrap());
                cur.clear();
            }
        }
        blocks
    }

    #[test]
    fn an_invalid_authority_becomes_localhost_and_the_rest_is_kept() {
        // Two requests from one client: the second refers to the first's
        // dynamic-table entries, as grpc-core's encoder does.
        let mut enc = loona_hpack::Encoder::new();
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        wire.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &request(&mut enc, b"run%2Fcarve%2Fcsi.sock"),
        ));
        wire.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
        wire.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &request(&mut enc, b"run%2Fcarve%2Fcsi.sock"),
        ));
        // Fed in awkward pieces, as a socket may deliver them.
        let mut rw = Rewriter::default();
        let mut out = vec![];
        for piece in wire.chunks(7) {
            rw.feed(piece, &mut out);
        }
        assert_eq!(rw.rewritten(), 2);
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            let get = |n: &[u8]| b.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            assert_eq!(get(b":authority").unwrap(), b"localhost");
            assert_eq!(get(b":path").unwrap(), b"/csi.v1.Identity/Probe");
            assert_eq!(b[0].0, b":method", "pseudo-headers keep their order");
        }
        let kinds: Vec<(u8, u8, u32)> = frames(&out[PREFACE.len()..])
            .iter()
            .map(|f| (f.0, f.1, f.2))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0x4, 0, 0),
                (HEADERS, END_HEADERS, 1),
                (0x0, END_STREAM, 1),
                (HEADERS, END_HEADERS | END_STREAM, 3)
            ]
        );
    }

    #[test]
    fn valid_authorities_padding_priority_and_continuations_survive() {
        let mut enc = loona_hpack::Encoder::new();
        let block = request(&mut enc, b"localhost");
        let (a, b) = block.split_at(block.len() / 2);
        let mut headers = vec![3u8]; // pad length
        headers.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        headers.extend_from_slice(a);
        headers.extend_from_slice(&[0, 0, 0]);
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(HEADERS, PADDED | PRIORITY, 1, &headers));
        wire.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        let mut rw = Rewriter::default();
        let mut out = vec![];
        rw.feed(&wire, &mut out);
        assert_eq!(rw.rewritten(), 0);
        let f = frames(&out[PREFACE.len()..]);
        assert_eq!((f[0].0, f[0].1), (HEADERS, PRIORITY | END_HEADERS));
        assert_eq!(&f[0].3[..5], &[0, 0, 0, 0, 16]);
        let got = decode_all(&out);
        assert_eq!(got[0][3], (b":authority".to_vec(), b"localhost".to_vec()));
    }

    #[test]
    fn what_it_cannot_parse_passes_through_untouched() {
        let mut rw = Rewriter::default();
        let mut out = vec![];
        rw.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
        let mut rw = Rewriter::default();
        let mut out = vec![];
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff]));
        rw.feed(&wire, &mut out);
        assert_eq!(out, wire, "an undecodable block goes on as it came");
    }
}
