//! Help, usage and panic texts, kept verbatim as etcdctl 3.4.23 prints them.
//!
//! etcdctl prints a command's help for `--help`, and the same text on stdout when a flag of that
//! command fails to parse, so the texts are part of the output contract. They are stored as files
//! in `texts/` (captured from `etcdctl <command> --help`) rather than generated: etcdctl
//! aligns its option columns with a tab writer, and a copy is the only way to match it exactly.
//! The root help lists every etcdctl command, including the ones cairnctl does not implement.

pub const ROOT: &str = include_str!("texts/root.txt");
pub const SNAPSHOT: &str = include_str!("texts/snapshot.txt");
pub const SNAPSHOT_SAVE: &str = include_str!("texts/snapshot_save.txt");
pub const SNAPSHOT_RESTORE: &str = include_str!("texts/snapshot_restore.txt");
pub const SNAPSHOT_STATUS: &str = include_str!("texts/snapshot_status.txt");
pub const GET: &str = include_str!("texts/get.txt");
pub const PUT: &str = include_str!("texts/put.txt");
pub const DEL: &str = include_str!("texts/del.txt");
pub const TXN: &str = include_str!("texts/txn.txt");
pub const COMPACTION: &str = include_str!("texts/compaction.txt");
pub const ALARM: &str = include_str!("texts/alarm.txt");
pub const ALARM_LIST: &str = include_str!("texts/alarm_list.txt");
pub const ALARM_DISARM: &str = include_str!("texts/alarm_disarm.txt");
pub const DEFRAG: &str = include_str!("texts/defrag.txt");
pub const ENDPOINT: &str = include_str!("texts/endpoint.txt");
pub const ENDPOINT_HEALTH: &str = include_str!("texts/endpoint_health.txt");
pub const ENDPOINT_STATUS: &str = include_str!("texts/endpoint_status.txt");
pub const ENDPOINT_HASHKV: &str = include_str!("texts/endpoint_hashkv.txt");
pub const MOVE_LEADER: &str = include_str!("texts/move_leader.txt");
pub const WATCH: &str = include_str!("texts/watch.txt");
pub const LEASE: &str = include_str!("texts/lease.txt");
pub const LEASE_GRANT: &str = include_str!("texts/lease_grant.txt");
pub const LEASE_REVOKE: &str = include_str!("texts/lease_revoke.txt");
pub const LEASE_TIMETOLIVE: &str = include_str!("texts/lease_timetolive.txt");
pub const LEASE_LIST: &str = include_str!("texts/lease_list.txt");
pub const LEASE_KEEP_ALIVE: &str = include_str!("texts/lease_keep_alive.txt");
pub const MEMBER: &str = include_str!("texts/member.txt");
pub const MEMBER_ADD: &str = include_str!("texts/member_add.txt");
pub const MEMBER_REMOVE: &str = include_str!("texts/member_remove.txt");
pub const MEMBER_UPDATE: &str = include_str!("texts/member_update.txt");
pub const MEMBER_LIST: &str = include_str!("texts/member_list.txt");
pub const MEMBER_PROMOTE: &str = include_str!("texts/member_promote.txt");
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
/// The nil-interface panic of `member promote` in a format other than simple; `%ARGC%` is the
/// number of arguments cobra handed the command, in hex.
pub const PANIC_MEMBER_PROMOTE: &str = include_str!("texts/panic_member_promote.txt");
/// The nil-header panic of the fields printer on `alarm list` and `alarm disarm` (etcd answers
/// Alarm without a header); `%ARGC%` is the number of arguments cobra handed the command.
pub const PANIC_ALARM_LIST: &str = include_str!("texts/panic_alarm_list.txt");
pub const PANIC_ALARM_DISARM: &str = include_str!("texts/panic_alarm_disarm.txt");
/// `Argify`'s panic on an interactive `watch` line; see `PanicSite::WatchArgifySlice` for the
/// placeholders.
pub const PANIC_WATCH_ARGIFY: &str = include_str!("texts/panic_watch_argify.txt");
