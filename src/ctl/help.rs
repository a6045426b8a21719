//! Help, usage and panic texts, kept verbatim as etcdctl 3.4.23 prints them.
//!
//! etcdctl prints a command's help for `--help`, and the same text on stdout when a flag of that
//! command fails to parse, so the texts are part of the output contract. They are stored as files
//! in `texts/` (captured from `etcdctl <command> --help`) rather than generated: etcdctl
//! aligns its option columns with a tab writer, and a copy is the only way to match it exactly.
//! The root help lists every etcdctl command, including the ones cairnctl does not implement.

pub const ROOT: &str = include_str!("texts/root.txt");
pub const GET: &str = include_str!("texts/get.txt");
pub const PUT: &str = include_str!("texts/put.txt");
pub const DEL: &str = include_str!("texts/del.txt");
pub const TXN: &str = include_str!("texts/txn.txt");
pub const COMPACTION: &str = include_str!("texts/compaction.txt");
pub const ENDPOINT: &str = include_str!("texts/endpoint.txt");
pub const ENDPOINT_HEALTH: &str = include_str!("texts/endpoint_health.txt");
pub const ENDPOINT_STATUS: &str = include_str!("texts/endpoint_status.txt");
pub const VERSION: &str = include_str!("texts/version.txt");

/// cobra's default usage text for the `get`/`put`/`del` commands that etcdctl builds to parse a
/// `txn` request line; printed on stderr when such a line has a bad flag.
pub const TXN_GET_USAGE: &str = include_str!("texts/txn_get.txt");
pub const TXN_PUT_USAGE: &str = include_str!("texts/txn_put.txt");
pub const TXN_DEL_USAGE: &str = include_str!("texts/txn_del.txt");

/// What etcdctl 3.4.23 writes to stderr when it panics on `txn` input (exit status 2): Go's
/// panic message and goroutine trace, captured from the real binary. The addresses in the trace
/// differ from run to run in etcdctl too.
pub const PANIC_BAD_VALUE: &str = include_str!("texts/panic_bad_value.txt");
pub const PANIC_UNKNOWN_RESULT_OP: &str = include_str!("texts/panic_unknown_result_op.txt");
pub const PANIC_LEASE_UNKNOWN_RESULT_OP: &str =
    include_str!("texts/panic_lease_unknown_result_op.txt");
/// The panic of `Argify` on a single-quoted word; `%MESSAGE%` and `%LEN%` (the line's length in
/// bytes, in hex) are filled in.
pub const PANIC_ARGIFY: &str = include_str!("texts/panic_argify.txt");
