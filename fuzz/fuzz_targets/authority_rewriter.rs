//! The client port's `:authority` rewriter (`cairn::api::authority::Rewriter`) over arbitrary
//! bytes from the socket.
//!
//! The first input byte picks the read size (1 to 8 KiB) and whether the HTTP/2 preface is put in
//! front of the rest (so most inputs exercise frames and HPACK rather than the HTTP/1 path); the
//! rest is what the client sends, fed one read at a time, the output taken after each read as the
//! server would take it.
//!
//! Properties: nothing panics; memory held by the rewriter, measured by a counting allocator at
//! its peak inside every `feed`, stays within `CONNECTION_BYTES_MAX`; while the connection has
//! not switched to rewriting, what the server reads is exactly what the client sent; and what
//! the server reads always decodes: every complete header block, with one HPACK decoder for the
//! connection and the 4096-byte table the server announces, decodes without error and carries no
//! malformed `:authority`.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn::api::authority::{
    Rewriter, CONNECTION_BYTES_MAX, HEADER_TABLE_BYTES_MAX, READ_CHUNK_BYTES,
};
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Counts live bytes allocated through Rust's allocator, and their peak since the last reset.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as alloc-then-free: during a realloc both blocks may exist.
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            let live = LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(PREFACE.len() + rest.len());
    if mode & 1 == 0 {
        input.extend_from_slice(PREFACE);
    }
    input.extend_from_slice(rest);
    let chunk = (1 + (mode as usize >> 1) * 64).min(READ_CHUNK_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(input.len());

    let base = LIVE_BYTES.load(Ordering::Relaxed);
    let mut r = Rewriter::new();
    let mut out_at_switch = None;
    for c in input.chunks(chunk) {
        // Between feeds only `out` grows (outside the measured window); during a feed it is
        // untouched, so the peak above base and `out` is the rewriter's own.
        let harness = out.capacity();
        PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
        let fed = r.feed(c);
        let peak = PEAK_BYTES
            .load(Ordering::Relaxed)
            .saturating_sub(base + harness);
        assert!(peak <= CONNECTION_BYTES_MAX, "held {peak} bytes");
        if out_at_switch.is_none() && r.rewriting() {
            out_at_switch = Some(out.len());
        }
        out.extend_from_slice(r.output());
        let n = r.output().len();
        r.consume(n);
        if fed.is_err() {
            assert!(r.refused().is_some());
            break;
        }
    }
    if r.refused().is_none() {
        r.finish();
        out.extend_from_slice(r.output());
    }
    if out_at_switch.is_none() && r.rewriting() {
        out_at_switch = Some(out.len());
    }
    // Until the switch, the server reads the client's bytes unchanged.
    let unchanged = out_at_switch.unwrap_or(out.len());
    assert_eq!(&out[..unchanged], &input[..unchanged]);
    drop(r);
    if out.starts_with(PREFACE) {
        check_server_view(&out[PREFACE.len()..]);
    }
});

/// Decodes every complete header block of what the server reads, as the server would.
fn check_server_view(mut bytes: &[u8]) {
    let mut decoder = fluke_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(HEADER_TABLE_BYTES_MAX);
    let mut block: Vec<u8> = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let (kind, flags) = (bytes[3], bytes[4]);
        if bytes.len() < 9 + len {
            // A frame that passes as it comes may be cut by the end of the input.
            assert!(kind != 0x1 && kind != 0x9, "a header frame was cut");
            return;
        }
        let payload = &bytes[9..9 + len];
        bytes = &bytes[9 + len..];
        if kind != 0x1 && kind != 0x9 {
            assert!(
                block.is_empty(),
                "a frame inside a header block reached the server"
            );
            continue;
        }
        let mut p = payload;
        if kind == 0x1 {
            if flags & 0x8 != 0 {
                let pad = p[0] as usize;
                p = &p[1..p.len() - pad];
            }
            if flags & 0x20 != 0 {
                p = &p[5..];
            }
        }
        block.extend_from_slice(p);
        if flags & 0x4 != 0 {
            decoder
                .decode_with_cb(&block, |name, value| {
                    if name.as_ref() == b":authority" {
                        assert!(
                            http::uri::Authority::try_from(value.as_ref()).is_ok(),
                            "a malformed :authority reached the server: {value:?}"
                        );
                    }
                })
                .expect("the server could not decode a block");
            block.clear();
        }
    }
}
