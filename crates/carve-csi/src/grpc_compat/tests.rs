//! The rewriter against hand-made frames, against arbitrary byte streams
//! (proptest), and a real tonic server behind it.

use super::rewriter::*;
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
fn http1_passes_through_and_an_undecodable_block_ends_the_connection() {
    let mut rw = Rewriter::default();
    let mut out = vec![];
    rw.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out);
    assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n", "h2 refuses it itself");
    let mut rw = Rewriter::default();
    let mut out = vec![];
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff]));
    wire.extend(frame(0x0, 0, 1, b"after"));
    rw.feed(&wire, &mut out);
    assert!(rw.closed_because().unwrap().contains("undecodable"));
    assert_eq!(&out[..PREFACE.len()], PREFACE);
    assert_eq!(poisoned(&out), Some(0), "the poison, and nothing after it");
}

/// After the preface: `Some(n)` if the stream ends in the poison frame
/// preceded by `n` other frames.
fn poisoned(out: &[u8]) -> Option<usize> {
    let f = frames(&out[PREFACE.len()..]);
    let (last, before) = f.split_last()?;
    (last.0 == SETTINGS && last.3.len() == 1).then_some(before.len())
}

// Regression tests for issue 14 findings 1-3: each failed on a019df7 (a
// panic in put_slice; 68,195,368 bytes handed to h2 for a 1 MiB block; the
// CONTINUATIONs buffered without bound).

#[tokio::test]
async fn a_client_closing_mid_frame_does_not_panic() {
    use tokio::io::AsyncReadExt;
    let mut wire = PREFACE.to_vec();
    let mut f = frame(0x0, 0, 1, &[0u8; 16_000]);
    f.truncate(9 + 15_000);
    wire.extend(f);
    let mut conn = AuthorityFix::new(&wire[..], None);
    let mut buf = vec![0u8; 8192];
    let mut total = 0;
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(
        total,
        PREFACE.len(),
        "the incomplete frame is dropped at the end"
    );
}

fn hpack_int(block: &mut Vec<u8>, first: u8, prefix_bits: u8, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    block.push(first | max as u8);
    let mut v = value - max;
    while v >= 128 {
        block.push((v % 128) as u8 | 128);
        v /= 128;
    }
    block.push(v as u8);
}

/// Splits `block` into a HEADERS and CONTINUATIONs of `size` bytes.
fn framed_block(block: &[u8], size: usize) -> Vec<u8> {
    let mut wire = vec![];
    let n = block.len().div_ceil(size).max(1);
    for (i, c) in block.chunks(size).enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == n { END_HEADERS } else { 0 };
        wire.extend(frame(kind, flags, 1, c));
    }
    wire
}

#[test]
fn a_table_size_above_the_advertised_one_ends_the_connection() {
    // A 2 MiB table size update, a 1 MiB literal indexed into it, then 64
    // references to it: 64 MiB once decoded.
    let mut block = vec![];
    hpack_int(&mut block, 0x20, 5, 2 * 1024 * 1024);
    block.extend([0x40, 0x01, b'x']);
    hpack_int(&mut block, 0x00, 7, 1024 * 1024);
    block.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    block.extend([0xbe; 64]);
    let mut wire = PREFACE.to_vec();
    wire.extend(framed_block(&block, MAX_FRAME));
    let mut rw = Rewriter::default();
    let mut out = vec![];
    for c in wire.chunks(16 * 1024) {
        rw.feed(c, &mut out);
        assert!(rw.buffered() <= MAX_BUFFERED);
    }
    assert!(out.len() < 1024, "{} bytes handed to h2", out.len());
    assert_eq!(poisoned(&out), Some(0));
}

#[test]
fn references_that_decode_past_the_header_list_limit_end_the_connection() {
    // Within the table limit: a 4,000-byte entry referenced 100 times is a
    // 400 kB header list from a 4 kB block.
    let mut block = vec![0x40, 0x01, b'x'];
    hpack_int(&mut block, 0x00, 7, 4_000);
    block.extend(std::iter::repeat_n(b'a', 4_000));
    block.extend([0xbe; 100]);
    let mut wire = PREFACE.to_vec();
    wire.extend(framed_block(&block, MAX_FRAME));
    let mut rw = Rewriter::default();
    let mut out = vec![];
    rw.feed(&wire, &mut out);
    assert!(rw.closed_because().unwrap().contains("header list"));
    assert_eq!(poisoned(&out), Some(0));
}

#[test]
fn an_endless_continuation_is_not_buffered() {
    for payload in [&[0x82u8; 16_000][..], &[]] {
        let mut rw = Rewriter::default();
        let mut out = vec![];
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(HEADERS, 0, 1, &[0x82]));
        rw.feed(&wire, &mut out);
        for _ in 0..200 {
            rw.feed(&frame(CONTINUATION, 0, 1, payload), &mut out);
            assert!(rw.buffered() <= MAX_BUFFERED);
        }
        assert!(rw.closed_because().is_some());
        assert_eq!(poisoned(&out), Some(0));
    }
}

#[test]
fn a_frame_above_the_frame_size_ends_the_connection_at_its_header() {
    let mut rw = Rewriter::default();
    let mut out = vec![];
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    wire.extend(&frame(0x0, 0, 1, &vec![0; MAX_FRAME + 1])[..FRAME_HEADER]);
    rw.feed(&wire, &mut out);
    assert!(rw.closed_because().unwrap().contains("16385"));
    assert_eq!(
        poisoned(&out),
        Some(1),
        "the SETTINGS went on before the poison"
    );
    rw.feed(&[0; 4096], &mut out);
    assert_eq!(rw.buffered(), 0, "nothing is kept after the close");
}

mod byte_streams {
    //! Arbitrary input must never panic and never grow the rewriter past its
    //! bound; valid requests must reach h2 with the same headers, but for an
    //! invalid `:authority`.
    use super::*;
    use proptest::prelude::*;

    fn header_name() -> impl Strategy<Value = Vec<u8>> {
        proptest::string::string_regex("[a-z][a-z0-9-]{0,20}")
            .unwrap()
            .prop_map(String::into_bytes)
    }

    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300)
    }

    fn authority() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"localhost".to_vec()),
            Just(b"run%2Fcarve%2Fcsi.sock".to_vec()),
            Just(b"%2Ftmp%2Fsanity%2Fcsi.sock".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    /// One request: pseudo-headers, then extra headers.
    fn request_headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        (
            authority(),
            proptest::collection::vec((header_name(), header_value()), 0..8),
        )
            .prop_map(|(auth, extra)| {
                let mut h = vec![
                    (b":method".to_vec(), b"POST".to_vec()),
                    (b":scheme".to_vec(), b"http".to_vec()),
                    (b":path".to_vec(), b"/csi.v1.Node/NodeStageVolume".to_vec()),
                    (b":authority".to_vec(), auth),
                    (b"content-type".to_vec(), b"application/grpc".to_vec()),
                ];
                h.extend(extra);
                h
            })
    }

    fn expected(h: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        h.iter()
            .map(|(n, v)| {
                if n == b":authority" && http::uri::Authority::try_from(&v[..]).is_err() {
                    (n.clone(), b"localhost".to_vec())
                } else {
                    (n.clone(), v.clone())
                }
            })
            .collect()
    }

    /// Captured and hand-made client byte streams (fuzz/corpus/http2): fed
    /// whole and in small pieces, none panics or grows the rewriter past
    /// its bound.
    #[test]
    fn corpus() {
        for (name, bytes) in carve_core::fuzz::corpus("http2") {
            for chunk in [1, 7, 4096, bytes.len().max(1)] {
                let mut rw = Rewriter::default();
                let mut out = vec![];
                for c in bytes.chunks(chunk) {
                    rw.feed(c, &mut out);
                    assert!(rw.buffered() <= MAX_BUFFERED, "{name}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(carve_core::fuzz::config(256))]

        #[test]
        fn valid_requests_arrive_with_their_headers(
            requests in proptest::collection::vec(request_headers(), 1..6),
            frame_size in 1usize..MAX_FRAME,
            chunk in 1usize..20_000,
        ) {
            // The client's encoder uses its dynamic table across requests,
            // as grpc-core's and Go's do.
            let mut enc = loona_hpack::Encoder::new();
            let mut wire = PREFACE.to_vec();
            wire.extend(frame(SETTINGS, 0, 0, &[]));
            for (i, h) in requests.iter().enumerate() {
                let block = enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
                let stream = 1 + 2 * i as u32;
                // h2 itself takes a block in at most five CONTINUATIONs.
                let frame_size = frame_size.max(block.len().div_ceil(6));
                let mut f = framed_block(&block, frame_size);
                f[5..9].copy_from_slice(&stream.to_be_bytes());
                // Later frames of the block carry the stream too.
                let mut at = 0;
                while at < f.len() {
                    f[at + 5..at + 9].copy_from_slice(&stream.to_be_bytes());
                    at += FRAME_HEADER + u24(&f[at..]);
                }
                wire.extend(f);
                wire.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
            }
            let mut rw = Rewriter::default();
            let mut out = vec![];
            for c in wire.chunks(chunk) {
                rw.feed(c, &mut out);
                prop_assert!(rw.buffered() <= MAX_BUFFERED);
            }
            prop_assert!(rw.closed_because().is_none(), "{:?}", rw.closed_because());
            let got = decode_all(&out);
            let want: Vec<_> = requests.iter().map(|h| expected(h)).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_frames_never_panic_or_grow(
            frames_in in proptest::collection::vec(
                (0u8..12, any::<u8>(), 0u32..4, proptest::collection::vec(any::<u8>(), 0..2_000)),
                0..40,
            ),
            chunk in 1usize..5_000,
        ) {
            let mut wire = PREFACE.to_vec();
            for (kind, flags, stream, payload) in &frames_in {
                wire.extend(frame(*kind, *flags, *stream, payload));
            }
            let mut rw = Rewriter::default();
            let mut out = vec![];
            for c in wire.chunks(chunk) {
                rw.feed(c, &mut out);
                prop_assert!(rw.buffered() <= MAX_BUFFERED);
            }
            // What h2 gets is never more than the client sent plus the
            // re-encoding's overhead (bounded per block).
            prop_assert!(out.len() <= wire.len() + frames_in.len() * (MAX_HEADER_LIST + 64) + 16);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_grow(
            bytes in proptest::collection::vec(any::<u8>(), 0..50_000),
            chunk in 1usize..20_000,
            with_preface: bool,
        ) {
            let mut wire = if with_preface { PREFACE.to_vec() } else { vec![] };
            wire.extend(bytes);
            let mut rw = Rewriter::default();
            let mut out = vec![];
            for c in wire.chunks(chunk) {
                rw.feed(c, &mut out);
                prop_assert!(rw.buffered() <= MAX_BUFFERED);
            }
        }
    }
}

mod served {
    //! A real tonic server behind the rewriter, as carve serves.
    use super::*;
    use crate::csi::identity_server::IdentityServer;
    use crate::resizer_endpoint::ResizerEndpoint;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    const GOAWAY: u8 = 0x7;

    async fn server() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        tokio::task::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("csi.sock");
        let listener = crate::server::bind(&sock).unwrap();
        let task = tokio::spawn(async move {
            let e = ResizerEndpoint {
                driver_name: "carve.dev".into(),
            };
            server_builder()
                .add_service(IdentityServer::new(e))
                .serve_with_incoming(crate::server::incoming(listener))
                .await
                .unwrap();
        });
        (dir, sock, task)
    }

    /// Sends `wire`, then reads until the server closes; the frames it sent.
    async fn exchange(sock: &std::path::Path, wire: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut c = UnixStream::connect(sock).await.unwrap();
        // The server may close before it has read everything.
        let _ = c.write_all(wire).await;
        let _ = c.shutdown().await;
        let mut got = vec![];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut got));
        let _ = read.await.expect("the server closes the connection");
        frames(&got)
    }

    fn goaway_code(frames: &[(u8, u8, u32, Vec<u8>)]) -> Option<u32> {
        let f = frames.iter().find(|f| f.0 == GOAWAY)?;
        Some(u32::from_be_bytes(f.3[4..8].try_into().unwrap()))
    }

    async fn probe(sock: &std::path::Path) -> Result<(), tonic::Status> {
        let ch = crate::client::connect(sock).await.unwrap();
        let mut c = crate::csi::identity_client::IdentityClient::new(ch);
        c.probe(crate::csi::ProbeRequest {}).await.map(|_| ())
    }

    #[tokio::test]
    async fn a_connection_that_breaks_a_limit_gets_goaway_and_others_are_served() {
        let (_dir, sock, task) = server().await;
        let start = || {
            let mut w = PREFACE.to_vec();
            w.extend(frame(SETTINGS, 0, 0, &[]));
            w
        };
        let mut big = start();
        big.extend(&frame(0x0, 0, 1, &vec![0; MAX_FRAME + 1])[..FRAME_HEADER + 100]);
        let mut flood = start();
        flood.extend(frame(HEADERS, 0, 1, &[0x82]));
        for _ in 0..100 {
            flood.extend(frame(CONTINUATION, 0, 1, &[0x82; 1000]));
        }
        let mut crash = start();
        let mut f = frame(0x0, 0, 1, &[0u8; 16_000]);
        f.truncate(FRAME_HEADER + 15_000);
        crash.extend(f);
        for (what, wire, goaway) in [
            ("oversized frame", big, true),
            ("CONTINUATION flood", flood, true),
            ("closed mid-frame", crash, false),
        ] {
            let frames = exchange(&sock, &wire).await;
            if goaway {
                assert_eq!(
                    goaway_code(&frames),
                    Some(1),
                    "{what}: GOAWAY(PROTOCOL_ERROR), got {frames:?}"
                );
            }
            probe(&sock)
                .await
                .unwrap_or_else(|e| panic!("after {what}: {e}"));
        }
        assert!(!task.is_finished(), "the server is still running");
        task.abort();
    }

    #[tokio::test]
    async fn connections_past_the_bound_are_closed_and_room_comes_back() {
        let (_dir, sock, task) = server().await;
        let mut held = vec![];
        for _ in 0..MAX_CONNECTIONS {
            held.push(UnixStream::connect(&sock).await.unwrap());
        }
        // The server accepts in order; give it the time to take them all.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut extra = UnixStream::connect(&sock).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), extra.read(&mut buf))
            .await
            .expect("the extra connection is closed at once");
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "closed without an answer: {n:?}"
        );
        held.pop();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        probe(&sock).await.unwrap();
        task.abort();
    }
}

mod corpus {
    //! Requests as real clients send them reach h2 with the same headers but
    //! for `:authority`.
    use super::*;
    use tokio::io::AsyncReadExt;

    fn same_but_authority(wire: &[u8]) {
        for chunk in [1, 7, 100, 16 * 1024] {
            let mut rw = Rewriter::default();
            let mut out = vec![];
            for c in wire.chunks(chunk) {
                rw.feed(c, &mut out);
            }
            assert!(rw.closed_because().is_none());
            let sent = decode_all(wire);
            let got = decode_all(&out);
            assert!(!sent.is_empty());
            assert_eq!(sent.len(), got.len());
            for (s, g) in sent.iter().zip(&got) {
                assert_eq!(s.len(), g.len());
                for ((sn, sv), (gn, gv)) in s.iter().zip(g) {
                    assert_eq!(sn, gn);
                    if sn == b":authority" {
                        assert!(http::uri::Authority::try_from(&gv[..]).is_ok());
                    } else {
                        assert_eq!(sv, gv);
                    }
                }
            }
        }
    }

    /// Captured from Python grpcio 1.85.1 (hack/setup.sh's version) on a Unix
    /// socket: its preface, SETTINGS and a request with a %-encoded authority.
    #[test]
    fn grpcio_requests() {
        let wire = include_bytes!("corpus/grpcio-1.85.1.bin");
        same_but_authority(wire);
        let mut rw = Rewriter::default();
        rw.feed(wire, &mut vec![]);
        assert!(rw.rewritten() >= 1);
    }

    /// Captured live from tonic's client, the one carve's tests and tools use.
    #[tokio::test]
    async fn tonic_requests() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("capture.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let capture = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut c, _) = listener.accept().await.unwrap();
            c.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            c.write_all(&[0, 0, 0, SETTINGS, 1, 0, 0, 0, 0])
                .await
                .unwrap();
            let mut got = vec![];
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_millis(500), c.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let ch = crate::client::connect(&sock).await.unwrap();
        let mut id = crate::csi::identity_client::IdentityClient::new(ch.clone());
        let mut node = crate::csi::node_client::NodeClient::new(ch);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(300), async {
            tokio::join!(
                id.probe(crate::csi::ProbeRequest {}),
                node.node_get_capabilities(crate::csi::NodeGetCapabilitiesRequest {})
            )
        })
        .await;
        let wire = capture.await.unwrap();
        same_but_authority(&wire);
    }
}
