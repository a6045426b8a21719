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
//! header blocks on the way in. The work is done by [`Rewriter`], which takes bytes and hands
//! bytes back (no I/O, so the fuzzer drives it directly). It follows the frames (RFC 7540 §4),
//! decodes every header block (HEADERS plus CONTINUATION frames) with an HPACK decoder that keeps
//! the client's dynamic table (RFC 7541), and replaces a `:authority` that is not a valid
//! authority by its `host:port` part. A connection that does not open with the HTTP/2 preface
//! (HTTP/1: `/health`, `/metrics`) is passed through untouched.
//!
//! # Passing blocks through, and the one switch
//!
//! HPACK's dynamic table is connection state shared by the client's encoder and the server's
//! decoder: a block may insert entries that later blocks refer to by index. So a block cannot be
//! rewritten on its own while the blocks around it pass unchanged: the rewritten block would not
//! make the insertions the client made, and the server would resolve later indexes against a
//! different table. (Making the same insertions is impossible too: in HPACK every insertion also
//! emits its field, so inserting the client's malformed `:authority` would hand it to the server.)
//!
//! The rewriter therefore runs in one of two states, and moves from the first to the second once:
//!
//! - **Passing.** Every block is forwarded byte for byte. The server's decoder sees exactly what
//!   the client's encoder wrote, so the two tables stay equal, and ours (which decodes every
//!   block) equals both. This lasts while no block has carried a malformed `:authority` (found
//!   after decoding, so also when it came by index).
//! - **Rewriting**, from the first block with a malformed `:authority` on. That block and every
//!   later one is re-encoded as literal fields with literal names ("without indexing", §6.2.2),
//!   which neither read nor change the server's table: the server's table stays frozen as the
//!   passing state left it and is never referred to again, and our decoder keeps following the
//!   client's table to decode what the client sends. The client's table size updates are
//!   dropped, as they concern a table the server no longer uses (the server never changes its
//!   own SETTINGS_HEADER_TABLE_SIZE, so its decoder never waits for one).
//!
//! A block is held until its END_HEADERS, because whether it passes depends on its decoding.
//! Every other frame passes through as it arrives, without being buffered whole. `etcdctl`
//! connections that need the fix switch at their first request; every other client's
//! connection stays in the passing state for its whole life.
//!
//! # Limits: one connection cannot take the member's memory
//!
//! Everything the rewriter holds is bounded, and the sum is [`CONNECTION_BYTES_MAX`]:
//!
//! - the dynamic table: at most [`HEADER_TABLE_BYTES_MAX`] (4096, HTTP/2's default
//!   SETTINGS_HEADER_TABLE_SIZE, which the server never raises). A client size update above it is
//!   a COMPRESSION_ERROR (RFC 7541 §4.2, §6.3);
//! - a header block as it came, frames included: at most [`HEADER_BLOCK_BYTES_MAX`];
//! - a decoded header list, counted as HTTP/2 does (name + value + 32 per field, RFC 7540
//!   §6.5.2): at most [`HEADER_LIST_BYTES_MAX`], gRPC-Go's default server limit (16 MiB), which
//!   etcd 3.4 keeps. Indexing makes decoding expand: one byte can name a 4 KiB table entry, so
//!   this limit, not the block's size, is what bounds the decoded and re-encoded bytes;
//! - input: one socket read plus the header frame being collected; output: what one read
//!   produced (the socket is not read again before the server took it all).
//!
//! Any violation, any HPACK error, and any HTTP/2 framing error around header blocks closes the
//! connection (the read fails; the server drops it). etcd would answer some of these with a
//! stream error (gRPC-Go resets a stream whose header list is too large) or a GOAWAY; closing is
//! what a proxy that can no longer keep both HPACK tables right can do, and it costs a
//! misbehaving client its connection only. The HPACK crate panics on a malformed size update
//! integer: size updates are validated before the crate sees a block (see `validate_block`), and
//! the decoding runs under `catch_unwind` as a second line.

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
/// The HPACK dynamic table's size limit: HTTP/2's default SETTINGS_HEADER_TABLE_SIZE (RFC 7540
/// §6.5.2), which the server behind the rewriter never changes. A larger size update from the
/// client is a COMPRESSION_ERROR.
pub const HEADER_TABLE_BYTES_MAX: usize = 4096;
/// A header block as it came (HEADERS and CONTINUATION frames, frame headers included) longer
/// than this closes the connection. The server refuses header lists above 16 KiB anyway (hyper's
/// default SETTINGS_MAX_HEADER_LIST_SIZE, which it announces), so no client that follows the
/// server's settings gets near it.
pub const HEADER_BLOCK_BYTES_MAX: usize = 1 << 20;
/// A decoded header list larger than this, counted as RFC 7540 §6.5.2 counts (name + value + 32
/// per field), closes the connection: gRPC-Go's default server limit,
/// `defaultServerMaxHeaderListSize = uint32(16 << 20)` (grpc-go 1.33,
/// internal/transport/defaults.go), which etcd 3.4.23 does not override.
pub const HEADER_LIST_BYTES_MAX: usize = 16 << 20;
/// Bytes read from the socket at a time, and the most [`Rewriter::feed`] takes at once.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Fields in a dynamic table of [`HEADER_TABLE_BYTES_MAX`]: each entry counts 32 bytes at least.
const TABLE_ENTRIES_MAX: usize = HEADER_TABLE_BYTES_MAX / 32;
/// The most memory one connection's rewriter holds at any time, by allocation, counting Vec
/// growth (a buffer's capacity can be up to twice what it holds):
/// - input: a header frame being collected plus one read, twice over;
/// - the block being collected, as it came and as a fragment, twice over each;
/// - the re-encoded block (at most the decoded list: a literal field's encoding is shorter than
///   the 32 bytes RFC 7540 counts for it), twice over, and its framed copy in the output;
/// - strings the HPACK crate decodes (Huffman at most 8/5 of the fragment) while decoding;
/// - the dynamic table, its entries' bookkeeping included.
///
/// The fuzz target `authority_rewriter` checks it with a counting allocator.
pub const CONNECTION_BYTES_MAX: usize = 2 * (HEADER_BLOCK_BYTES_MAX + READ_CHUNK_BYTES)
    + 4 * HEADER_BLOCK_BYTES_MAX
    + 3 * HEADER_LIST_BYTES_MAX
    + 2 * HEADER_BLOCK_BYTES_MAX
    + HEADER_TABLE_BYTES_MAX
    + TABLE_ENTRIES_MAX * 128
    + 2 * READ_CHUNK_BYTES;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why the rewriter closed a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("HPACK dynamic table size update to {0} bytes, above the {max}", max = HEADER_TABLE_BYTES_MAX)]
    TableSizeUpdate(usize),
    #[error("HPACK dynamic table size update after the start of a header block")]
    LateTableSizeUpdate,
    #[error("header block of more than {} bytes", HEADER_BLOCK_BYTES_MAX)]
    HeaderBlockTooLarge,
    #[error("header list of more than {} bytes", HEADER_LIST_BYTES_MAX)]
    HeaderListTooLarge,
    #[error("HPACK: {0}")]
    Hpack(String),
    #[error("HTTP/2 framing: {0}")]
    Framing(&'static str),
}

enum Mode {
    /// Reading the first bytes: HTTP/2 preface or not.
    Preface,
    /// HTTP/2: following frames.
    Frames,
    /// Not HTTP/2: bytes pass unchanged.
    PassThrough,
    /// Refused: nothing more is read or handed on.
    Closed(Refused),
}

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as they came, passed on unchanged while the connection is passing.
    raw: Vec<u8>,
}

/// The rewriting, without I/O: bytes from the client go in with [`Rewriter::feed`], bytes for
/// the server come out of [`Rewriter::output`]. See the module docs.
pub struct Rewriter {
    mode: Mode,
    /// Read from the socket, not yet processed.
    input: Vec<u8>,
    /// Processed, not yet handed to the reader.
    output: Vec<u8>,
    output_at: usize,
    block: Option<Block>,
    /// Payload bytes of a frame that is not part of a header block, still to pass through.
    passing_bytes: usize,
    /// Set at the first block with a malformed `:authority`: from then on every block is
    /// re-encoded without the dynamic table.
    rewriting: bool,
    decoder: fluke_hpack::Decoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter::new()
    }
}

impl Rewriter {
    pub fn new() -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_BYTES_MAX);
        Rewriter {
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            output_at: 0,
            block: None,
            passing_bytes: 0,
            rewriting: false,
            decoder,
        }
    }

    /// Takes bytes the client sent (at most [`READ_CHUNK_BYTES`]; call it again only once
    /// [`Rewriter::output`] is empty, so the output stays bounded). An error means the
    /// connection must be closed; every later call returns it again.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        debug_assert!(
            bytes.len() <= READ_CHUNK_BYTES,
            "feed takes one read at a time"
        );
        if let Mode::Closed(why) = &self.mode {
            return Err(why.clone());
        }
        self.input.extend_from_slice(bytes);
        if let Err(why) = self.process() {
            self.close(why.clone());
            return Err(why);
        }
        debug_assert!(self.held_bytes() <= CONNECTION_BYTES_MAX);
        Ok(())
    }

    /// The client closed its side: an unfinished frame or header block is dropped (the server
    /// sees the connection end at a frame boundary).
    pub fn finish(&mut self) {
        if matches!(self.mode, Mode::PassThrough) {
            let rest = std::mem::take(&mut self.input);
            self.output.extend_from_slice(&rest);
        } else {
            self.input = Vec::new();
            self.block = None;
        }
    }

    /// Processed bytes not yet taken by [`Rewriter::consume`].
    pub fn output(&self) -> &[u8] {
        &self.output[self.output_at..]
    }

    /// Marks `n` bytes of [`Rewriter::output`] as handed on.
    pub fn consume(&mut self, n: usize) {
        self.output_at += n;
        assert!(self.output_at <= self.output.len());
        if self.output_at == self.output.len() {
            self.output.clear();
            self.output_at = 0;
            // A large re-encoded block does not keep its buffer for the connection's life.
            if self.output.capacity() > 4 * READ_CHUNK_BYTES {
                self.output = Vec::new();
            }
        }
    }

    /// Whether every later byte passes unchanged (not HTTP/2), so the reader may read directly.
    pub fn passes_through(&self) -> bool {
        matches!(self.mode, Mode::PassThrough) && self.input.is_empty()
    }

    /// Whether the connection was refused.
    pub fn refused(&self) -> Option<&Refused> {
        match &self.mode {
            Mode::Closed(why) => Some(why),
            _ => None,
        }
    }

    /// Whether the connection switched to re-encoding its blocks (see the module docs).
    pub fn rewriting(&self) -> bool {
        self.rewriting
    }

    /// Bytes held in buffers (capacity), the dynamic table excluded.
    pub fn held_bytes(&self) -> usize {
        self.input.capacity()
            + self.output.capacity()
            + self
                .block
                .as_ref()
                .map_or(0, |b| b.raw.capacity() + b.fragment.capacity())
    }

    fn close(&mut self, why: Refused) {
        tracing::debug!(reason = %why, "closing a client connection");
        self.mode = Mode::Closed(why);
        self.input = Vec::new();
        self.output = Vec::new();
        self.output_at = 0;
        self.block = None;
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> Result<(), Refused> {
        loop {
            match self.mode {
                Mode::Closed(_) => return Ok(()),
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::PassThrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Frames;
                }
                Mode::PassThrough => {
                    self.output.append(&mut self.input);
                    return Ok(());
                }
                Mode::Frames => {
                    if self.passing_bytes > 0 {
                        let n = self.passing_bytes.min(self.input.len());
                        self.output.extend(self.input.drain(..n));
                        self.passing_bytes -= n;
                        if self.passing_bytes > 0 {
                            return Ok(());
                        }
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER_BYTES {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]])
                        as usize;
                    let kind = self.input[3];
                    match kind {
                        TYPE_HEADERS | TYPE_CONTINUATION => {
                            let held = self.block.as_ref().map_or(0, |b| b.raw.len());
                            if held + FRAME_HEADER_BYTES + len > HEADER_BLOCK_BYTES_MAX {
                                return Err(Refused::HeaderBlockTooLarge);
                            }
                            if self.input.len() < FRAME_HEADER_BYTES + len {
                                return Ok(());
                            }
                            let frame: Vec<u8> =
                                self.input.drain(..FRAME_HEADER_BYTES + len).collect();
                            self.header_frame(frame)?;
                        }
                        // RFC 7540 §8.2: a client cannot push; the server would close too.
                        TYPE_PUSH_PROMISE => {
                            return Err(Refused::Framing("PUSH_PROMISE from a client"))
                        }
                        _ => {
                            if self.block.is_some() {
                                // RFC 7540 §6.2: only CONTINUATIONs may follow an open block.
                                return Err(Refused::Framing("a frame inside a header block"));
                            }
                            self.output.extend(self.input.drain(..FRAME_HEADER_BYTES));
                            self.passing_bytes = len;
                        }
                    }
                }
            }
        }
    }

    fn header_frame(&mut self, frame: Vec<u8>) -> Result<(), Refused> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_BYTES..];
        let mut block = if kind == TYPE_HEADERS {
            if self.block.is_some() {
                return Err(Refused::Framing("HEADERS inside a header block"));
            }
            let (priority, fragment) = headers_fragment(flags, payload)
                .ok_or(Refused::Framing("HEADERS padding longer than the frame"))?;
            Block {
                stream_id,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                fragment: fragment.to_vec(),
                raw: frame,
            }
        } else {
            let mut block = self
                .block
                .take()
                .ok_or(Refused::Framing("CONTINUATION without a header block"))?;
            if block.stream_id != stream_id {
                return Err(Refused::Framing("CONTINUATION on another stream"));
            }
            block.fragment.extend_from_slice(payload);
            block.raw.extend_from_slice(&frame);
            block
        };
        if flags & FLAG_END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(());
        }
        let fragment = std::mem::take(&mut block.fragment);
        self.end_block(&block, &fragment)
    }

    /// Decodes a complete block, then passes it on as it came or re-encoded.
    fn end_block(&mut self, block: &Block, fragment: &[u8]) -> Result<(), Refused> {
        validate_block(fragment)?;
        let mut list_bytes = 0usize;
        let mut too_large = false;
        let mut malformed = false;
        // Encoded as it is decoded, in case a malformed `:authority` shows up (it may be the
        // last field): bounded by the list limit.
        let mut encoded = Vec::new();
        let decoder = &mut self.decoder;
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder.decode_with_cb(fragment, |name, value| {
                if too_large {
                    return;
                }
                list_bytes += name.len() + value.len() + 32;
                if list_bytes > HEADER_LIST_BYTES_MAX {
                    too_large = true;
                    encoded = Vec::new();
                    return;
                }
                if name.as_ref() == b":authority" && !is_authority(&value) {
                    malformed = true;
                    // Nothing usable: an HTTP/2 request may omit its authority.
                    if let Some(fixed) = authority_of(&value) {
                        encode_literal(&mut encoded, &name, fixed);
                    }
                } else {
                    encode_literal(&mut encoded, &name, &value);
                }
            })
        }));
        match decoded {
            Err(_) => return Err(Refused::Hpack("the decoder panicked".into())),
            Ok(Err(e)) => return Err(Refused::Hpack(format!("{e:?}"))),
            Ok(Ok(())) => {}
        }
        if too_large {
            return Err(Refused::HeaderListTooLarge);
        }
        if malformed {
            self.rewriting = true;
        }
        if self.rewriting {
            self.write_block(block, &encoded);
        } else {
            self.output.extend_from_slice(&block.raw);
        }
        Ok(())
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
        let frames = encoded.len() / FRAME_PAYLOAD_OUT_MAX + 1;
        self.output
            .reserve(encoded.len() + prio_len + frames * FRAME_HEADER_BYTES);
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

/// An HPACK integer with a `prefix_bits`-bit prefix (RFC 7541 §5.1), read as the HPACK crate
/// reads it (at most 5 octets); `None` if it is cut short or too long. Returns the value and the
/// octets used.
fn decode_int(buf: &[u8], prefix_bits: u32) -> Option<(usize, usize)> {
    let max = (1usize << prefix_bits) - 1;
    let mut value = (*buf.first()? as usize) & max;
    if value < max {
        return Some((value, 1));
    }
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        value += ((b & 0x7f) as usize) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Walks a block's field representations (RFC 7541 §6) without decoding strings, before the
/// HPACK crate sees it: a dynamic table size update must come first in the block (§4.2), must
/// not exceed [`HEADER_TABLE_BYTES_MAX`] (§6.3), and its integer must be whole (the crate
/// panics on a cut one). Indexes and Huffman strings are left to the decoder, which returns
/// errors for them.
fn validate_block(fragment: &[u8]) -> Result<(), Refused> {
    let bad = |what: &str| Refused::Hpack(what.to_string());
    let mut at = 0;
    let mut fields = false;
    while at < fragment.len() {
        let rest = &fragment[at..];
        let first = rest[0];
        let (name_index, used) = if first & 0x80 != 0 {
            let (_, used) = decode_int(rest, 7).ok_or_else(|| bad("bad index"))?;
            at += used;
            fields = true;
            continue;
        } else if first & 0x40 != 0 {
            decode_int(rest, 6).ok_or_else(|| bad("bad name index"))?
        } else if first & 0x20 != 0 {
            if fields {
                return Err(Refused::LateTableSizeUpdate);
            }
            let (size, used) = decode_int(rest, 5).ok_or_else(|| bad("bad table size update"))?;
            if size > HEADER_TABLE_BYTES_MAX {
                return Err(Refused::TableSizeUpdate(size));
            }
            at += used;
            continue;
        } else {
            decode_int(rest, 4).ok_or_else(|| bad("bad name index"))?
        };
        fields = true;
        at += used;
        let strings = if name_index == 0 { 2 } else { 1 };
        for _ in 0..strings {
            let (len, used) =
                decode_int(&fragment[at..], 7).ok_or_else(|| bad("bad string length"))?;
            at = at
                .checked_add(used + len)
                .filter(|&end| end <= fragment.len())
                .ok_or_else(|| bad("string longer than the block"))?;
        }
    }
    Ok(())
}

/// A socket whose HTTP/2 request headers get a valid `:authority`. See the module docs.
pub struct FixAuthority<S> {
    inner: S,
    rewriter: Rewriter,
    eof: bool,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        FixAuthority {
            inner,
            rewriter: Rewriter::new(),
            eof: false,
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
            let out = this.rewriter.output();
            if !out.is_empty() {
                let n = out.len().min(buf.remaining());
                buf.put_slice(&out[..n]);
                this.rewriter.consume(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(why) = this.rewriter.refused() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    why.to_string(),
                )));
            }
            if this.rewriter.passes_through() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                        this.rewriter.finish();
                    } else {
                        // A refusal shows on the next turn of the loop.
                        let _ = this.rewriter.feed(rb.filled());
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

/// The client port's listener: plain or TLS connections (see [`crate::tls::accept`]), each
/// behind [`FixAuthority`].
pub struct Listener(pub crate::tls::accept::Acceptor);

impl axum::serve::Listener for Listener {
    type Io = FixAuthority<crate::tls::accept::Conn>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((conn, addr)) => return (FixAuthority::new(conn), addr),
                Err(_) => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `input` through the rewriter in chunks of `chunk` bytes, taking the output after
    /// each; returns what the server reads, or why the connection was closed.
    fn run(input: &[u8], chunk: usize) -> Result<Vec<u8>, Refused> {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk.min(READ_CHUNK_BYTES)) {
            r.feed(c)?;
            assert!(r.held_bytes() <= CONNECTION_BYTES_MAX);
            out.extend_from_slice(r.output());
            let n = r.output().len();
            r.consume(n);
        }
        r.finish();
        out.extend_from_slice(r.output());
        Ok(out)
    }

    /// Runs `input` through [`FixAuthority`] over an in-memory socket, as the server reads it.
    async fn rewrite(input: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let data = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            for c in data.chunks(chunk) {
                if client.write_all(c).await.is_err() {
                    return;
                }
            }
        });
        let mut fixed = FixAuthority::new(server);
        let mut out = Vec::new();
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 7];
        loop {
            let n =
                tokio::time::timeout(std::time::Duration::from_millis(200), fixed.read(&mut buf))
                    .await;
            match n {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return Err(e),
            }
        }
        writer.await.unwrap();
        Ok(out)
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        push_frame_header(&mut f, payload.len(), kind, flags, stream);
        f.extend_from_slice(payload);
        f
    }

    /// Splits the server's view into frames and decodes every header block with one decoder
    /// for the connection, as the server does.
    type Frames = Vec<(u8, u8, Vec<u8>)>;
    type HeaderBlocks = Vec<Vec<(Vec<u8>, Vec<u8>)>>;

    fn server_view(bytes: &[u8]) -> (Frames, HeaderBlocks) {
        assert!(bytes.starts_with(PREFACE));
        let mut at = PREFACE.len();
        let mut frames = Vec::new();
        let mut blocks = Vec::new();
        let mut decoder = fluke_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_BYTES_MAX);
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

    fn encode(e: &mut fluke_hpack::Encoder<'_>, h: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        e.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    /// One HEADERS frame with END_HEADERS on `stream` after the preface.
    fn one_block(fragment: &[u8]) -> Vec<u8> {
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, fragment));
        input
    }

    #[tokio::test]
    async fn a_url_authority_becomes_host_and_port_and_the_rest_passes_unchanged() {
        // A client encoder with Huffman coding and a dynamic table: the second request refers
        // to entries the first one inserted.
        let mut encoder = fluke_hpack::Encoder::new();
        let first = request_headers("http://127.0.0.1:2379");
        let block1 = encode(&mut encoder, &first);
        let block2 = encode(&mut encoder, &first);
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
            let out = rewrite(&input, chunk).await.unwrap();
            assert_eq!(out, run(&input, chunk).unwrap());
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
    async fn http1_and_valid_authorities_pass_through_byte_for_byte() {
        let get = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n";
        assert_eq!(rewrite(get, 3).await.unwrap(), get);

        // Huffman strings and dynamic table references pass unchanged: the server's table
        // follows the client's as if the rewriter were not there.
        let mut encoder = fluke_hpack::Encoder::new();
        let headers = request_headers("127.0.0.1:2379");
        let mut input = PREFACE.to_vec();
        for stream in [1, 3, 5] {
            let block = encode(&mut encoder, &headers);
            input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
            input.extend(frame(0x0, FLAG_END_STREAM, stream, b"\0\0\0\0\0"));
        }
        for chunk in [1, 64, 4096] {
            assert_eq!(run(&input, chunk).unwrap(), input, "chunk {chunk}");
        }
        let (_, blocks) = server_view(&input);
        assert_eq!(blocks, [headers.clone(), headers.clone(), headers]);
    }

    #[test]
    fn blocks_pass_until_a_malformed_authority_then_all_are_rewritten() {
        // Block 1 (valid) inserts entries; block 2 (a URL authority) switches the connection;
        // block 3 (valid) refers to entries blocks 1 and 2 inserted. The server, which saw
        // block 1 as it came and the others re-encoded, must decode all three right.
        let mut encoder = fluke_hpack::Encoder::new();
        let valid = request_headers("127.0.0.1:2379");
        let url = request_headers("http://127.0.0.1:2379");
        let b1 = encode(&mut encoder, &valid);
        let b2 = encode(&mut encoder, &url);
        let b3 = encode(&mut encoder, &valid);
        let mut input = PREFACE.to_vec();
        let f1 = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &b1);
        input.extend(&f1);
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &b2));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &b3));
        let out = run(&input, 100).unwrap();
        assert!(
            out[PREFACE.len()..].starts_with(&f1),
            "block 1 passed as it came"
        );
        let (_, blocks) = server_view(&out);
        assert_eq!(blocks, [valid.clone(), valid.clone(), valid]);
    }

    #[tokio::test]
    async fn a_large_block_is_split_into_continuations() {
        let mut headers = request_headers("http://h:1");
        headers.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
        let mut encoder = fluke_hpack::Encoder::new();
        let block = encode(&mut encoder, &headers);
        let mut input = PREFACE.to_vec();
        let (a, b) = block.split_at(10_000);
        input.extend(frame(TYPE_HEADERS, 0, 1, a));
        input.extend(frame(TYPE_CONTINUATION, 0, 1, &b[..20_000]));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &b[20_000..]));
        let (frames, blocks) = server_view(&rewrite(&input, 1000).await.unwrap());
        assert!(frames.len() >= 3);
        assert!(frames
            .iter()
            .all(|(_, _, p)| p.len() <= FRAME_PAYLOAD_OUT_MAX));
        headers[3].1 = b"h:1".to_vec();
        assert_eq!(blocks, [headers]);
    }

    /// Issue 8, item 5: a size update above the server's 4096 would let the client's table,
    /// and ours, grow to what the client likes.
    #[test]
    fn a_table_size_update_above_4096_closes_the_connection() {
        // Size update to 4097 (0x3f, then 4097 - 31 = 4066 as 0xe2 0x1f), then an indexed field.
        let input = one_block(&[0x3f, 0xe2, 0x1f, 0x82]);
        assert_eq!(run(&input, 7), Err(Refused::TableSizeUpdate(4097)));
        // At the limit, and down to 0, it is fine; late in the block it is not.
        assert!(run(&one_block(&[0x3f, 0xe1, 0x1f, 0x82]), 7).is_ok());
        assert!(run(&one_block(&[0x20, 0x82]), 7).is_ok());
        assert_eq!(
            run(&one_block(&[0x82, 0x20, 0x82]), 7),
            Err(Refused::LateTableSizeUpdate)
        );
    }

    /// Issue 8, item 5: the HPACK crate panicked on a size update whose integer is cut short or
    /// too long; the connection closes instead.
    #[test]
    fn a_malformed_size_update_closes_the_connection_without_a_panic() {
        for fragment in [
            &[0x3f][..],
            &[0x3f, 0xff],
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ] {
            let got = run(&one_block(fragment), 3);
            assert!(
                matches!(got, Err(Refused::Hpack(_))),
                "{fragment:02x?}: {got:?}"
            );
        }
        let mut r = Rewriter::new();
        assert!(r.feed(&one_block(&[0x3f])).is_err());
        assert!(
            r.feed(b"more").is_err(),
            "a refused connection stays refused"
        );
        assert!(r.output().is_empty());
    }

    /// Issue 8, item 5: one byte can name a 4 KiB table entry, so a small block can decode to
    /// gigabytes. The decoded list is capped at gRPC-Go's 16 MiB.
    #[test]
    fn a_header_list_beyond_the_limit_closes_the_connection_with_bounded_memory() {
        // Insert a 4000-byte value (literal with incremental indexing, new name), then refer to
        // it 4200 times (index 62: the first dynamic entry): 4200 x 4033 bytes > 16 MiB, from
        // a block of about 8 KiB.
        let mut fragment = vec![0x40, 0x01, b'x'];
        encode_int(&mut fragment, 0, 7, 4000);
        fragment.extend(std::iter::repeat_n(b'v', 4000));
        fragment.extend(std::iter::repeat_n(0x80 | 62, 4200));
        let mut r = Rewriter::new();
        let input = one_block(&fragment);
        let mut got = Ok(());
        for c in input.chunks(READ_CHUNK_BYTES) {
            got = r.feed(c);
            if got.is_err() {
                break;
            }
        }
        assert_eq!(got, Err(Refused::HeaderListTooLarge));
        assert!(r.output().is_empty());
        assert!(r.held_bytes() <= READ_CHUNK_BYTES, "{}", r.held_bytes());
        // Just under the limit, it passes (unchanged: the authority is not malformed).
        let mut fragment = vec![0x40, 0x01, b'x'];
        encode_int(&mut fragment, 0, 7, 4000);
        fragment.extend(std::iter::repeat_n(b'v', 4000));
        fragment.extend(std::iter::repeat_n(0x80 | 62, 4000));
        let input = one_block(&fragment);
        assert_eq!(run(&input, READ_CHUNK_BYTES).unwrap(), input);
    }

    /// Issue 8, item 5: a header block was collected whole however long it grew (HEADERS then
    /// endless CONTINUATIONs, empty ones too).
    #[test]
    fn a_huge_header_block_closes_the_connection() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, 0, 1, &[0x82]));
        let piece = vec![0x82; 16_000];
        while input.len() < HEADER_BLOCK_BYTES_MAX + 100_000 {
            input.extend(frame(TYPE_CONTINUATION, 0, 1, &piece));
        }
        assert_eq!(run(&input, 4096), Err(Refused::HeaderBlockTooLarge));

        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, 0, 1, &[0x82]));
        for _ in 0..(HEADER_BLOCK_BYTES_MAX / FRAME_HEADER_BYTES + 1) {
            input.extend(frame(TYPE_CONTINUATION, 0, 1, &[]));
        }
        assert_eq!(run(&input, 4096), Err(Refused::HeaderBlockTooLarge));

        // One frame announcing more than the limit is refused from its header alone.
        let mut r = Rewriter::new();
        let mut input = PREFACE.to_vec();
        push_frame_header(&mut input, 0xff_ffff, TYPE_HEADERS, 0, 1);
        assert_eq!(r.feed(&input), Err(Refused::HeaderBlockTooLarge));
    }

    #[tokio::test]
    async fn a_refused_connection_fails_the_read() {
        let err = rewrite(&one_block(&[0x3f]), 5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn other_frames_pass_as_they_come_and_framing_errors_close() {
        // A DATA frame is handed on before its payload has all arrived.
        let mut r = Rewriter::new();
        let mut input = PREFACE.to_vec();
        push_frame_header(&mut input, 100_000, 0x0, 0, 1);
        input.extend([7u8; 1000]);
        r.feed(&input).unwrap();
        assert_eq!(r.output(), &input[..]);
        assert!(r.held_bytes() <= 4 * READ_CHUNK_BYTES);

        let mut bad = one_block(&[0x82]);
        bad.truncate(PREFACE.len());
        bad.extend(frame(TYPE_HEADERS, 0, 1, &[0x82]));
        bad.extend(frame(0x0, 0, 1, b"x"));
        assert!(matches!(run(&bad, 50), Err(Refused::Framing(_))));
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
        assert!(matches!(run(&bad, 50), Err(Refused::Framing(_))));
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            1,
            &[9, 0x82],
        ));
        assert!(matches!(run(&bad, 50), Err(Refused::Framing(_))));
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
