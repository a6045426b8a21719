//! Accepting what Go's etcd clients send as the HTTP/2 `:authority` of some calls.
//!
//! etcd 3.4's `clientv3` (and so `etcdctl`) dials the Maintenance calls that name one endpoint —
//! `endpoint status`, `endpoint hashkv`, `defrag`, `snapshot save`, `--cluster` variants — with
//! the endpoint exactly as the user wrote it, and gRPC-Go puts that string into `:authority`. With
//! `--endpoints http://host:2379`, or with the member client URLs `--cluster` reads, that is a URL,
//! not an authority. etcd's server never looks at `:authority`; the HTTP/2 library under tonic
//! rejects such a request as malformed (`RST_STREAM PROTOCOL_ERROR`), so those commands failed.
//!
//! [`FixAuthority`] sits between the TCP socket and the HTTP/2 server and rewrites the client's
//! header blocks on the way in. It follows the frames (RFC 7540 §4), decodes every header block
//! (HEADERS plus CONTINUATION frames) with an HPACK decoder that keeps the client's dynamic table
//! (RFC 7541), replaces a `:authority` that is not a valid authority by its `host:port` part, and
//! encodes the block again with literal fields that never touch the dynamic table, so that the
//! server's decoder and the client's encoder cannot disagree. Every other frame passes unchanged.
//! A connection that does not open with the HTTP/2 preface (HTTP/1: `/health`, `/metrics`) is
//! passed through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
/// Frames written towards the server are at most this long: the smallest SETTINGS_MAX_FRAME_SIZE
/// an HTTP/2 peer may announce, so any server accepts them.
const FRAME_PAYLOAD_OUT_MAX: usize = 16_384;
/// A header block (HEADERS plus CONTINUATIONs) larger than this is passed on as it came (the
/// server refuses it by its own header-list limit).
pub const HEADER_BLOCK_BYTES_MAX: usize = 1 << 20;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

enum Mode {
    /// Reading the first bytes: HTTP/2 preface or not.
    Preface,
    /// HTTP/2: following frames.
    Frames,
    /// Not HTTP/2: bytes pass unchanged.
    PassThrough,
}

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as they came, passed on unchanged if the block cannot be decoded.
    raw: Vec<u8>,
}

/// A socket whose HTTP/2 request headers get a valid `:authority`. See the module docs.
pub struct FixAuthority<S> {
    inner: S,
    mode: Mode,
    /// Read from the socket, not yet processed.
    input: Vec<u8>,
    /// Processed, not yet handed to the reader.
    output: Vec<u8>,
    output_at: usize,
    block: Option<Block>,
    decoder: fluke_hpack::Decoder<'static>,
    eof: bool,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        FixAuthority {
            inner,
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            output_at: 0,
            block: None,
            decoder: fluke_hpack::Decoder::new(),
            eof: false,
        }
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::PassThrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.output.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Frames;
                }
                Mode::PassThrough => {
                    self.output.append(&mut self.input);
                    return;
                }
                Mode::Frames => {
                    if self.input.len() < FRAME_HEADER_BYTES {
                        return;
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]])
                        as usize;
                    if self.input.len() < FRAME_HEADER_BYTES + len {
                        return;
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER_BYTES + len).collect();
                    self.frame(frame);
                }
            }
        }
    }

    fn frame(&mut self, frame: Vec<u8>) {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_BYTES..];
        match kind {
            TYPE_HEADERS if self.block.is_none() => {
                let Some((priority, fragment)) = headers_fragment(flags, payload) else {
                    // Malformed padding: the server reports it.
                    self.output.extend_from_slice(&frame);
                    return;
                };
                let block = Block {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    raw: frame.clone(),
                };
                self.continue_block(block, flags);
            }
            TYPE_CONTINUATION
                if self
                    .block
                    .as_ref()
                    .is_some_and(|b| b.stream_id == stream_id) =>
            {
                let mut block = self.block.take().expect("checked above");
                block.fragment.extend_from_slice(payload);
                block.raw.extend_from_slice(&frame);
                self.continue_block(block, flags);
            }
            _ => {
                // Any other frame, or one that breaks the HEADERS/CONTINUATION sequence (a
                // protocol error the server reports): pass what we hold, then the frame.
                if let Some(block) = self.block.take() {
                    self.output.extend_from_slice(&block.raw);
                }
                self.output.extend_from_slice(&frame);
            }
        }
    }

    fn continue_block(&mut self, block: Block, flags: u8) {
        if flags & FLAG_END_HEADERS == 0 {
            if block.fragment.len() > HEADER_BLOCK_BYTES_MAX {
                self.output.extend_from_slice(&block.raw);
            } else {
                self.block = Some(block);
            }
            return;
        }
        let mut headers = Vec::new();
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            headers.push((name.into_owned(), value.into_owned()))
        });
        if decoded.is_err() {
            // The server's own decoder will find the same damage and close the connection.
            self.output.extend_from_slice(&block.raw);
            return;
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        for (name, value) in &headers {
            if name.as_slice() == b":authority" && !is_authority(value) {
                match authority_of(value) {
                    Some(fixed) => encode_literal(&mut encoded, name, fixed),
                    // Nothing usable: an HTTP/2 request may omit its authority.
                    None => continue,
                }
            } else {
                encode_literal(&mut encoded, name, value);
            }
        }
        self.write_block(&block, &encoded);
    }

    /// Frames a re-encoded header block as HEADERS plus CONTINUATIONs.
    fn write_block(&mut self, block: &Block, encoded: &[u8]) {
        let prio_len = if block.priority.is_some() { 5 } else { 0 };
        let first = encoded.len().min(FRAME_PAYLOAD_OUT_MAX - prio_len);
        let mut flags = 0;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if first == encoded.len() {
            flags |= FLAG_END_HEADERS;
        }
        push_frame_header(
            &mut self.output,
            prio_len + first,
            TYPE_HEADERS,
            flags,
            block.stream_id,
        );
        if let Some(p) = &block.priority {
            self.output.extend_from_slice(p);
        }
        self.output.extend_from_slice(&encoded[..first]);
        let mut at = first;
        while at < encoded.len() {
            let n = (encoded.len() - at).min(FRAME_PAYLOAD_OUT_MAX);
            let last = at + n == encoded.len();
            push_frame_header(
                &mut self.output,
                n,
                TYPE_CONTINUATION,
                if last { FLAG_END_HEADERS } else { 0 },
                block.stream_id,
            );
            self.output.extend_from_slice(&encoded[at..at + n]);
            at += n;
        }
    }
}

/// The priority fields and header block fragment of a HEADERS frame's payload, without padding.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        priority = Some(p.get(..5)?.try_into().ok()?);
        p = &p[5..];
    }
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

fn push_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// An HPACK integer with an `prefix_bits`-bit prefix whose other bits are `first` (RFC 7541 §5.1).
fn encode_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut n: usize) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// "Literal header field without indexing — new name", both strings raw (RFC 7541 §6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    for s in [name, value] {
        encode_int(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}

fn is_authority(v: &[u8]) -> bool {
    axum::http::uri::Authority::try_from(v).is_ok()
}

/// The `host:port` of a URL given as authority (`http://host:port/...`), if that is valid.
fn authority_of(v: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(v).ok()?;
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    is_authority(host.as_bytes()).then_some(host.as_bytes())
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.output_at < this.output.len() {
                let n = (this.output.len() - this.output_at).min(buf.remaining());
                buf.put_slice(&this.output[this.output_at..this.output_at + n]);
                this.output_at += n;
                if this.output_at == this.output.len() {
                    this.output.clear();
                    this.output_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::PassThrough) && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // The peer closed mid-frame: hand over what is left; the server sees it cut.
                this.output.append(&mut this.input);
                if let Some(block) = this.block.take() {
                    this.output.extend_from_slice(&block.raw);
                }
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(rb.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The client port's listener: TCP with Nagle off, each connection behind [`FixAuthority`].
pub struct Listener(pub tokio::net::TcpListener);

impl axum::serve::Listener for Listener {
    type Io = FixAuthority<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    // Small request/response pairs must not wait on Nagle's algorithm and
                    // delayed ACKs.
                    let _ = tcp.set_nodelay(true);
                    return (FixAuthority::new(tcp), addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    #[allow(clippy::disallowed_methods)] // the API layer, not node code
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `input` through the rewriter in chunks of `chunk` bytes; returns what the server reads.
    async fn rewrite(input: &[u8], chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let data = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            for c in data.chunks(chunk) {
                client.write_all(c).await.unwrap();
            }
        });
        let mut fixed = FixAuthority::new(server);
        let mut out = Vec::new();
        writer.await.unwrap();
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 7];
        loop {
            let n =
                tokio::time::timeout(std::time::Duration::from_millis(200), fixed.read(&mut buf))
                    .await;
            match n {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("{e}"),
            }
        }
        out
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        push_frame_header(&mut f, payload.len(), kind, flags, stream);
        f.extend_from_slice(payload);
        f
    }

    /// Splits the server's view into frames and decodes every header block with a fresh decoder,
    /// as the server does.
    type Frames = Vec<(u8, u8, Vec<u8>)>;
    type HeaderBlocks = Vec<Vec<(Vec<u8>, Vec<u8>)>>;

    fn server_view(bytes: &[u8]) -> (Frames, HeaderBlocks) {
        assert!(bytes.starts_with(PREFACE));
        let mut at = PREFACE.len();
        let mut frames = Vec::new();
        let mut blocks = Vec::new();
        let mut decoder = fluke_hpack::Decoder::new();
        let mut block = Vec::new();
        while at < bytes.len() {
            let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
            let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
            let payload = bytes[at + 9..at + 9 + len].to_vec();
            at += 9 + len;
            if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
                let frag = if kind == TYPE_HEADERS {
                    headers_fragment(flags, &payload).unwrap().1.to_vec()
                } else {
                    payload.clone()
                };
                block.extend_from_slice(&frag);
                if flags & FLAG_END_HEADERS != 0 {
                    blocks.push(decoder.decode(&block).unwrap());
                    block.clear();
                }
            }
            frames.push((kind, flags, payload));
        }
        (frames, blocks)
    }

    fn request_headers(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    #[tokio::test]
    async fn a_url_authority_becomes_host_and_port_and_the_rest_passes_unchanged() {
        // A client encoder with Huffman coding and a dynamic table: the second request refers
        // to entries the first one inserted.
        let mut encoder = fluke_hpack::Encoder::new();
        let first = request_headers("http://127.0.0.1:2379");
        let enc = |e: &mut fluke_hpack::Encoder<'_>, h: &[(Vec<u8>, Vec<u8>)]| {
            e.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
        };
        let block1 = enc(&mut encoder, &first);
        let block2 = enc(&mut encoder, &first);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                             // Stream 1: HEADERS split over a CONTINUATION, padded, then DATA.
        let (a, b) = block1.split_at(block1.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(TYPE_HEADERS, FLAG_PADDED, 1, &padded));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        // Stream 3: one HEADERS frame with END_STREAM.
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &block2,
        ));

        for chunk in [1, 5, 4096] {
            let out = rewrite(&input, chunk).await;
            let (frames, blocks) = server_view(&out);
            let kinds: Vec<(u8, u8)> = frames.iter().map(|(k, f, _)| (*k, *f)).collect();
            assert_eq!(
                kinds,
                [
                    (0x4, 0),
                    (TYPE_HEADERS, FLAG_END_HEADERS),
                    (0x0, FLAG_END_STREAM),
                    (TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM),
                ],
                "chunk {chunk}"
            );
            assert_eq!(frames[2].2, b"\0\0\0\0\0");
            let want = request_headers("127.0.0.1:2379");
            assert_eq!(blocks, [want.clone(), want], "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn http1_and_valid_authorities_pass_through() {
        let get = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n";
        assert_eq!(rewrite(get, 3).await, get);

        let mut encoder = fluke_hpack::Encoder::new();
        let headers = request_headers("127.0.0.1:2379");
        let block = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        let (_, blocks) = server_view(&rewrite(&input, 64).await);
        assert_eq!(blocks, [headers]);
    }

    #[tokio::test]
    async fn a_large_block_is_split_into_continuations() {
        let mut headers = request_headers("http://h:1");
        headers.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
        let mut encoder = fluke_hpack::Encoder::new();
        let block = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut input = PREFACE.to_vec();
        let (a, b) = block.split_at(10_000);
        input.extend(frame(TYPE_HEADERS, 0, 1, a));
        input.extend(frame(TYPE_CONTINUATION, 0, 1, &b[..20_000]));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &b[20_000..]));
        let (frames, blocks) = server_view(&rewrite(&input, 1000).await);
        assert!(frames.len() >= 3);
        assert!(frames
            .iter()
            .all(|(_, _, p)| p.len() <= FRAME_PAYLOAD_OUT_MAX));
        headers[3].1 = b"h:1".to_vec();
        assert_eq!(blocks, [headers]);
    }

    #[test]
    fn authorities() {
        assert_eq!(
            authority_of(b"http://127.0.0.1:2379"),
            Some(&b"127.0.0.1:2379"[..])
        );
        assert_eq!(authority_of(b"https://h:1/x?y"), Some(&b"h:1"[..]));
        assert_eq!(authority_of(b"unix://"), None);
        assert!(is_authority(b"127.0.0.1:2379"));
        assert!(!is_authority(b"http://127.0.0.1:2379"));
    }
}
