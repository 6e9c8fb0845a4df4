//! The client-to-server half of the `:authority` rewrite, as a pure state
//! machine over bytes: fed what the client sent, it yields what h2 reads.
//!
//! It stands in front of h2 on every connection (kubelet's included), so it
//! holds itself to h2's own limits and never to more: one frame of at most
//! [`MAX_FRAME`] bytes, one header block of at most [`MAX_HEADER_LIST`] bytes
//! in at most [`MAX_BLOCK_FRAMES`] frames, an HPACK table of at most
//! [`HEADER_TABLE`] bytes. Whatever breaks a limit or cannot be decoded ends
//! the connection: the rewriter hands h2 a malformed SETTINGS frame, which h2
//! answers with GOAWAY(PROTOCOL_ERROR) before it closes, and drops the rest.

/// The HTTP/2 client connection preface.
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(super) const FRAME_HEADER: usize = 9;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const CONTINUATION: u8 = 0x9;
pub(super) const END_STREAM: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
pub(super) const PADDED: u8 = 0x8;
pub(super) const PRIORITY: u8 = 0x20;

/// SETTINGS_MAX_FRAME_SIZE of carve's server: h2's default, which is also
/// the smallest a peer may advertise, so re-encoded blocks split at it fit
/// every peer. carve never raises it.
pub const MAX_FRAME: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table a client may use.
/// h2's server keeps the protocol default and so does the rewriter's decoder;
/// a size update above it is a COMPRESSION_ERROR in h2 too.
pub const HEADER_TABLE: usize = 4_096;
/// SETTINGS_MAX_HEADER_LIST_SIZE carve's server advertises (set on tonic's
/// builder from this constant): the decoded size of one header block, counted
/// as RFC 9113 does (name + value + 32 per field). A CSI request carries a
/// few hundred bytes of headers.
pub const MAX_HEADER_LIST: usize = 32 * 1024;
/// HEADERS plus CONTINUATIONs in one block. A block within
/// [`MAX_HEADER_LIST`] needs at most three full frames; the bound stops a
/// flood of empty CONTINUATIONs.
pub const MAX_BLOCK_FRAMES: usize = 16;
/// The most the rewriter holds between two reads: one incomplete frame and
/// one incomplete header block.
pub const MAX_BUFFERED: usize = FRAME_HEADER + MAX_FRAME + MAX_HEADER_LIST;
/// What replaces an invalid authority (what Go's gRPC and kubelet send on
/// Unix sockets).
const AUTHORITY: &[u8] = b"localhost";
/// A SETTINGS frame whose length is not a multiple of 6: h2 answers it with
/// GOAWAY(PROTOCOL_ERROR) and closes the connection.
const POISON: [u8; FRAME_HEADER + 1] = [0, 0, 1, SETTINGS, 0, 0, 0, 0, 0, 0];

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    frames: usize,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum State {
    /// This many bytes of the preface are still to come.
    Preface(usize),
    Frames,
    /// Not HTTP/2 with prior knowledge: h2 judges the bytes as they came.
    Passthrough,
    /// A limit was broken (why): h2 has the poison frame; nothing more
    /// reaches it.
    Closed(String),
}

pub struct Rewriter {
    state: State,
    decoder: loona_hpack::Decoder<'static>,
    block: Option<Block>,
    input: Vec<u8>,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE);
        Rewriter {
            state: State::Preface(PREFACE.len()),
            decoder,
            block: None,
            input: Vec::new(),
            rewritten: 0,
        }
    }
}

pub(super) fn u24(b: &[u8]) -> usize {
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

/// Frames `block` as HEADERS (+ CONTINUATIONs) of at most [`MAX_FRAME`].
fn push_block(out: &mut Vec<u8>, stream: u32, flags: u8, priority: Option<[u8; 5]>, block: &[u8]) {
    let mut first = Vec::with_capacity(5 + block.len().min(MAX_FRAME));
    if let Some(p) = priority {
        first.extend_from_slice(&p);
    }
    let (head, mut rest) = block.split_at(block.len().min(MAX_FRAME - first.len()));
    first.extend_from_slice(head);
    let mut chunks = vec![first.as_slice()];
    while !rest.is_empty() {
        let (c, r) = rest.split_at(rest.len().min(MAX_FRAME));
        chunks.push(c);
        rest = r;
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let (kind, mut f) = if i == 0 {
            (HEADERS, flags & (END_STREAM | PRIORITY))
        } else {
            (CONTINUATION, 0)
        };
        if i == last {
            f |= END_HEADERS;
        }
        let len = chunk.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, f]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

impl Rewriter {
    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Why the connection was ended, once it was.
    pub fn closed_because(&self) -> Option<&str> {
        match &self.state {
            State::Closed(why) => Some(why),
            _ => None,
        }
    }

    /// Bytes held between calls to [`Rewriter::feed`]; never above
    /// [`MAX_BUFFERED`].
    pub fn buffered(&self) -> usize {
        self.input.len() + self.block.as_ref().map_or(0, |b| b.fragment.len())
    }

    /// Takes bytes read from the client; appends what h2 should read to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        match self.state {
            State::Closed(_) => return,
            State::Passthrough => return out.extend_from_slice(data),
            State::Preface(left) => {
                let done = PREFACE.len() - left;
                let n = left.min(data.len());
                if data[..n] != PREFACE[done..done + n] {
                    self.state = State::Passthrough;
                    return out.extend_from_slice(data);
                }
                out.extend_from_slice(&data[..n]);
                self.state = if n == left {
                    State::Frames
                } else {
                    State::Preface(left - n)
                };
                return self.feed(&data[n..], out);
            }
            State::Frames => {}
        }
        self.input.extend_from_slice(data);
        let mut at = 0;
        while self.state == State::Frames && self.input.len() - at >= FRAME_HEADER {
            let len = u24(&self.input[at..]);
            if len > MAX_FRAME {
                self.close(
                    format!("a frame of {len} bytes (the limit is {MAX_FRAME})"),
                    out,
                );
                break;
            }
            let end = at + FRAME_HEADER + len;
            if self.input.len() < end {
                break;
            }
            let frame = std::mem::take(&mut self.input);
            self.frame(&frame[at..end], out);
            self.input = frame;
            at = end;
        }
        if self.state == State::Frames {
            self.input.drain(..at);
        } else {
            self.input = Vec::new();
        }
    }

    fn close(&mut self, why: String, out: &mut Vec<u8>) {
        tracing::warn!(reason = %why, "closing a client connection: HTTP/2 limit broken");
        out.extend_from_slice(&POISON);
        self.state = State::Closed(why);
        self.block = None;
    }

    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => match headers_payload(flags, payload) {
                Some((priority, fragment)) => {
                    self.block = Some(Block {
                        stream,
                        flags,
                        priority,
                        fragment: fragment.to_vec(),
                        frames: 1,
                    })
                }
                None => return self.close("a malformed HEADERS frame".into(), out),
            },
            (CONTINUATION, Some(b)) if b.stream == stream => {
                b.fragment.extend_from_slice(payload);
                b.frames += 1;
                b.flags |= flags & END_HEADERS;
            }
            (_, Some(_)) => {
                return self.close("a header block interrupted by another frame".into(), out)
            }
            (_, None) => return out.extend_from_slice(frame),
        }
        let b = self
            .block
            .as_ref()
            .expect("a block was just started or extended");
        if b.fragment.len() > MAX_HEADER_LIST || b.frames > MAX_BLOCK_FRAMES {
            let (bytes, frames) = (b.fragment.len(), b.frames);
            return self.close(
                format!("a header block of {bytes}+ bytes in {frames}+ frames (limits {MAX_HEADER_LIST} bytes, {MAX_BLOCK_FRAMES} frames)"),
                out,
            );
        }
        if b.flags & END_HEADERS != 0 {
            let b = self.block.take().expect("block");
            self.finish(b, out);
        }
    }

    fn finish(&mut self, b: Block, out: &mut Vec<u8>) {
        let mut block = Vec::with_capacity(b.fragment.len() + 16);
        let mut size = 0usize;
        let mut rewritten = 0;
        // The callback cannot stop the decoder, so past the limit it only
        // counts: the decoder's work is bounded by the fragment's size, and
        // references into its table are borrowed, not copied.
        let decoded = self.decoder.decode_with_cb(&b.fragment, |name, value| {
            size = size.saturating_add(name.len() + value.len() + 32);
            if size > MAX_HEADER_LIST {
                return;
            }
            if name.as_ref() == b":authority" && !valid_authority(&value) {
                tracing::debug!(authority = %String::from_utf8_lossy(&value), "replacing an invalid :authority with localhost");
                rewritten += 1;
                push_literal(&mut block, &name, AUTHORITY);
            } else {
                push_literal(&mut block, &name, &value);
            }
        });
        if let Err(e) = decoded {
            return self.close(format!("an undecodable header block ({e:?})"), out);
        }
        if size > MAX_HEADER_LIST {
            return self.close(
                format!("a header list of {size} bytes (the limit is {MAX_HEADER_LIST})"),
                out,
            );
        }
        self.rewritten += rewritten;
        push_block(out, b.stream, b.flags, b.priority, &block);
    }
}

/// A HEADERS payload without its padding: (priority, header block fragment).
fn headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&p, rest) = body.split_first()?;
        pad = p as usize;
        body = rest;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let (p, rest) = body.split_first_chunk::<5>()?;
        priority = Some(*p);
        body = rest;
    }
    let keep = body.len().checked_sub(pad)?;
    Some((priority, &body[..keep]))
}
