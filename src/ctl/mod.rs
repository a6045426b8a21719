//! `cairnctl`: the command-line client, a byte-for-byte stand-in for `ETCDCTL_API=3 etcdctl` 3.4.
//!
//! cairn promises that tools built for etcd work against it, and the first tool anyone reaches
//! for is etcdctl. cairnctl therefore copies etcdctl's interface exactly rather than designing its
//! own: command names, flags (and their `ETCDCTL_*` environment variables), output formats, error
//! texts and exit codes. Given the same server responses it prints what etcdctl 3.4.23 prints, so
//! scripts, tests and muscle memory carry over, and the pair makes a differential test: run a
//! command with both against one server and diff stdout, stderr and the exit status.
//!
//! It talks the etcd v3 gRPC protocol through our own generated clients, so it works against
//! real etcd as well as cairn; pointing it at real etcd is how its output was checked.
//!
//! # What it covers
//!
//! `get`, `put`, `del`, `txn` (with `-i`), `compaction`, `alarm list|disarm`, `defrag` (with
//! `--cluster`), `endpoint status|health|hashkv` (with `--cluster`), `member list|add|remove|update|promote`, `move-leader`,
//! `lease grant|revoke|timetolive|list|keep-alive`, `watch` (with `-i` and `-- <command>`),
//! `version` and `help`, with the global flags `--endpoints`,
//! `--dial-timeout`, `--command-timeout`, `--hex`, `-w simple|json|fields|table|protobuf`,
//! `--user`/`--password`, `--debug` and the TLS flags (`--cacert`, `--cert`, `--key`,
//! `--insecure-transport`, `--insecure-skip-tls-verify`, with clientv3's choice of TLS per
//! endpoint, [`client::Security`]), each also read from its `ETCDCTL_*` variable. The keepalive
//! flags are accepted and ignored; DNS discovery is refused with an error. `get` also takes `--count-only` (as in etcdctl 3.5) and
//! `--min-mod-rev`, `--max-mod-rev`, `--min-create-rev`, `--max-create-rev`, which etcdctl 3.4
//! lacks; nothing else is added. The other etcdctl commands answer that cairnctl does not
//! implement them yet.
//!
//! # How it is built
//!
//! etcdctl is cobra + pflag + clientv3 + Go's fmt, and each leaves fingerprints in the output, so
//! each has a small emulation here:
//!
//! * this module: cobra's command lookup (including prefix matching such as `etcdctl ge foo`
//!   and "Did you mean this?" suggestions), help, and how errors end the process;
//! * `flags`: pflag parsing and the environment;
//! * `client`: clientv3's connection waiting, retries and zap warning lines;
//! * `printer`, `json`, `table`: the five output formats;
//! * `gofmt`: Go's `%q`, durations, integer parsing errors and humanized sizes;
//! * `txn_parse` and `ops`: the transaction language and the get/put/del requests;
//! * `commands`: the commands themselves, step by step in etcdctl's order; `member` (with
//!   `move-leader`), `lease`, `alarm` and `watch` hold their families' commands and printers, and
//!   `go_url` the peer-URL check clientv3 makes before a membership change;
//! * `help` and `texts/`: help texts and panic traces, verbatim.
//!
//! The process exits with etcdctl's codes: 1 for errors, 2 for a bad connection (and for the
//! panics etcdctl 3.4.23 has on some `txn` input and when it prints `member promote` in any
//! format but simple, which are reproduced), 3 for invalid input, 4 for an unsupported feature, 5
//! when a watch ends, and 128 for bad arguments.

use std::io::{BufRead, Write};

mod alarm;
mod client;
mod clock;
mod commands;
mod flags;
mod go_url;
use crate::gofmt;
mod help;
mod json;
mod lease;
mod member;
mod ops;
mod printer;
mod snapshot;
mod table;
mod txn_parse;
mod watch;

use flags::{Def, Flags, Kind, CLUSTER, GLOBAL, HELP};
use txn_parse::PanicSite;

pub const EXIT_SUCCESS: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_BAD_CONNECTION: i32 = 2;
pub const EXIT_INVALID_INPUT: i32 = 3;
pub const EXIT_BAD_FEATURE: i32 = 4;
pub const EXIT_BAD_ARGS: i32 = 128;

/// Go's exit status after a panic.
const EXIT_PANIC: i32 = 2;

/// The name etcdctl gives itself in usage and error texts; kept for byte-for-byte output.
const PROGRAM: &str = "etcdctl";

/// How a command ends early.
#[derive(Debug)]
pub(crate) enum Fail {
    /// etcdctl's `ExitWithError`: `Error: <message>` on stderr, then exit with the code.
    Error(i32, String),
    /// Everything is already printed; exit with the code.
    Exit(i32),
    /// etcdctl 3.4.23 panics here.
    Panic(PanicSite),
}

/// The process's standard streams, injectable for tests.
pub struct Console<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub input: &'a mut dyn BufRead,
    /// The streams are the process's own, so a terminal's echo may be switched off (with
    /// `stty`, as etcdctl does) while a password is typed.
    pub real: bool,
}

/// Runs cairnctl with the process's arguments (without the program name), environment and
/// standard streams; returns the exit status.
pub async fn run(args: Vec<String>) -> i32 {
    // etcdctl reads ETCDCTL_API and unsets it before looking at the rest of the environment.
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| k != "ETCDCTL_API")
        .collect();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let stdin = std::io::stdin();
    let (mut out, mut err, mut input) = (stdout.lock(), stderr.lock(), stdin.lock());
    let code = {
        let mut io = Console {
            out: &mut out,
            err: &mut err,
            input: &mut input,
            real: true,
        };
        run_with(&args, &env, &mut io).await
    };
    let _ = out.flush();
    let _ = err.flush();
    code
}

/// Runs cairnctl with explicit arguments, environment and streams; returns the exit status.
pub async fn run_with(args: &[String], env: &[(String, String)], io: &mut Console<'_>) -> i32 {
    match dispatch(args, env, io).await {
        Ok(()) => EXIT_SUCCESS,
        Err(Fail::Error(code, message)) => {
            let _ = writeln!(io.err, "Error: {message}");
            code
        }
        Err(Fail::Exit(code)) => code,
        Err(Fail::Panic(site)) => {
            let text = match site {
                PanicSite::LeaseBadValue => help::PANIC_BAD_VALUE.to_string(),
                PanicSite::UnknownResultOp => help::PANIC_UNKNOWN_RESULT_OP.to_string(),
                PanicSite::LeaseUnknownResultOp => help::PANIC_LEASE_UNKNOWN_RESULT_OP.to_string(),
                PanicSite::ArgifySlice {
                    message,
                    line_bytes,
                } => help::PANIC_ARGIFY
                    .replace("%MESSAGE%", &message)
                    .replace("%LEN%", &format!("{line_bytes:#x}")),
                PanicSite::MemberPromotePrinter { args } => {
                    help::PANIC_MEMBER_PROMOTE.replace("%ARGC%", &format!("{args:#x}"))
                }
                PanicSite::AlarmFieldsPrinter { disarm, args } => if disarm {
                    help::PANIC_ALARM_DISARM
                } else {
                    help::PANIC_ALARM_LIST
                }
                .replace("%ARGC%", &format!("{args:#x}")),
                PanicSite::WatchArgifySlice {
                    message,
                    line_bytes,
                    os_args,
                    args,
                    positional,
                    env_key_bytes,
                    env_range_bytes,
                } => {
                    // A Go string argument shows as {pointer, length}; the pointers are
                    // arbitrary (they differ from run to run in etcdctl too).
                    let string = |pointer: &str, len: Option<usize>| match len {
                        None => "{0x0, 0x0}".to_string(),
                        Some(len) => format!("{{{pointer}, {len:#x}}}"),
                    };
                    help::PANIC_WATCH_ARGIFY
                        .replace("%MESSAGE%", &message)
                        .replace("%LEN%", &format!("{line_bytes:#x}"))
                        .replace("%OSARGS%", &format!("{os_args:#x}"))
                        .replace("%POS%", &format!("{positional:#x}"))
                        .replace("%ARGC%", &format!("{args:#x}"))
                        .replace("%ENVKEY%", &string("0xc00003e0b6", env_key_bytes))
                        .replace("%ENVRANGE%", &string("0xc00003e0d4", env_range_bytes))
                }
            };
            let _ = io.err.write_all(text.as_bytes());
            EXIT_PANIC
        }
    }
}

/// The root's commands in the order etcdctl adds them (cobra searches them in this order for
/// prefix matches and suggestions); cobra appends `help` and `completion`.
const ROOT_COMMANDS: &[&str] = &[
    "get",
    "put",
    "del",
    "txn",
    "compaction",
    "alarm",
    "defrag",
    "endpoint",
    "move-leader",
    "watch",
    "version",
    "lease",
    "member",
    "snapshot",
    "make-mirror",
    "migrate",
    "lock",
    "elect",
    "auth",
    "user",
    "role",
    "check",
    "help",
    "completion",
];

const ENDPOINT_COMMANDS: &[&str] = &["health", "status", "hashkv"];
const MEMBER_COMMANDS: &[&str] = &["add", "remove", "update", "list", "promote"];
const LEASE_COMMANDS: &[&str] = &["grant", "revoke", "timetolive", "list", "keep-alive"];
const SNAPSHOT_COMMANDS: &[&str] = &["save", "restore", "status"];
const ALARM_COMMANDS: &[&str] = &["disarm", "list"];

/// etcdctl exits with this when a watch ends (`ExitInterrupted`).
pub const EXIT_INTERRUPTED: i32 = 5;

/// A command cairnctl runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Root,
    Get,
    Put,
    Del,
    Txn,
    Compaction,
    Alarm,
    AlarmList,
    AlarmDisarm,
    Defrag,
    Endpoint,
    EndpointHealth,
    EndpointStatus,
    EndpointHashKv,
    MoveLeader,
    Watch,
    Lease,
    LeaseGrant,
    LeaseRevoke,
    LeaseTimeToLive,
    LeaseList,
    LeaseKeepAlive,
    Member,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberList,
    MemberPromote,
    Snapshot,
    SnapshotSave,
    SnapshotRestore,
    SnapshotStatus,
    Version,
    Help,
    /// An etcdctl command cairnctl does not implement.
    Missing(&'static str),
}

impl Command {
    fn local_flags(self) -> Vec<Def> {
        let local = |name, kind| Def {
            name,
            short: None,
            kind,
            default: "false",
        };
        let mut defs = match self {
            Command::Get => ops::GET_FLAGS.to_vec(),
            Command::Put => ops::PUT_FLAGS.to_vec(),
            Command::Del => ops::DEL_FLAGS.to_vec(),
            Command::Txn => {
                vec![
                    HELP,
                    Def {
                        name: "interactive",
                        short: Some('i'),
                        kind: Kind::Bool,
                        default: "false",
                    },
                ]
            }
            Command::Compaction => vec![HELP, local("physical", Kind::Bool)],
            Command::Defrag => vec![
                CLUSTER,
                Def {
                    name: "data-dir",
                    short: None,
                    kind: Kind::Str,
                    default: "",
                },
                HELP,
            ],
            Command::Endpoint | Command::EndpointHealth | Command::EndpointStatus => {
                vec![HELP, CLUSTER]
            }
            Command::EndpointHashKv => vec![
                HELP,
                CLUSTER,
                Def {
                    name: "rev",
                    short: None,
                    kind: Kind::Int,
                    default: "0",
                },
            ],
            Command::Watch => watch::FLAGS.to_vec(),
            Command::LeaseTimeToLive => vec![HELP, local("keys", Kind::Bool)],
            Command::LeaseKeepAlive => vec![HELP, local("once", Kind::Bool)],
            Command::MemberAdd => vec![HELP, local("learner", Kind::Bool), member::PEER_URLS],
            Command::MemberUpdate => vec![HELP, member::PEER_URLS],
            Command::SnapshotRestore => snapshot::RESTORE_FLAGS.to_vec(),
            _ => vec![HELP],
        };
        defs.extend_from_slice(GLOBAL);
        defs
    }

    /// The flags inherited from parents, which `ETCDCTL_*` variables may set.
    fn inherited(self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = GLOBAL.iter().map(|d| d.name).collect();
        if matches!(
            self,
            Command::EndpointHealth | Command::EndpointStatus | Command::EndpointHashKv
        ) {
            names.push(CLUSTER.name);
        }
        if self == Command::Watch {
            names.extend(watch::ENV_ONLY.iter().map(|d| d.name));
        }
        names.sort_unstable();
        names
    }

    fn help_text(self) -> &'static str {
        match self {
            Command::Get => help::GET,
            Command::Put => help::PUT,
            Command::Del => help::DEL,
            Command::Txn => help::TXN,
            Command::Compaction => help::COMPACTION,
            Command::Alarm => help::ALARM,
            Command::AlarmList => help::ALARM_LIST,
            Command::AlarmDisarm => help::ALARM_DISARM,
            Command::Defrag => help::DEFRAG,
            Command::Endpoint => help::ENDPOINT,
            Command::EndpointHealth => help::ENDPOINT_HEALTH,
            Command::EndpointStatus => help::ENDPOINT_STATUS,
            Command::EndpointHashKv => help::ENDPOINT_HASHKV,
            Command::MoveLeader => help::MOVE_LEADER,
            Command::Watch => help::WATCH,
            Command::Lease => help::LEASE,
            Command::LeaseGrant => help::LEASE_GRANT,
            Command::LeaseRevoke => help::LEASE_REVOKE,
            Command::LeaseTimeToLive => help::LEASE_TIMETOLIVE,
            Command::LeaseList => help::LEASE_LIST,
            Command::LeaseKeepAlive => help::LEASE_KEEP_ALIVE,
            Command::Member => help::MEMBER,
            Command::MemberAdd => help::MEMBER_ADD,
            Command::MemberRemove => help::MEMBER_REMOVE,
            Command::MemberUpdate => help::MEMBER_UPDATE,
            Command::MemberList => help::MEMBER_LIST,
            Command::MemberPromote => help::MEMBER_PROMOTE,
            Command::Snapshot => help::SNAPSHOT,
            Command::SnapshotSave => help::SNAPSHOT_SAVE,
            Command::SnapshotRestore => help::SNAPSHOT_RESTORE,
            Command::SnapshotStatus => help::SNAPSHOT_STATUS,
            Command::Version => help::VERSION,
            Command::Root | Command::Help | Command::Missing(_) => help::ROOT,
        }
    }
}

/// cobra's `findNext` with prefix matching: an exact name, or a prefix of exactly one name.
fn find_next(word: &str, names: &[&'static str]) -> Option<&'static str> {
    if let Some(n) = names.iter().find(|n| **n == word) {
        return Some(n);
    }
    let matches: Vec<&&str> = names.iter().filter(|n| n.starts_with(word)).collect();
    (matches.len() == 1).then(|| *matches[0])
}

/// cobra's `stripFlags`: the words of `args` that are not flags or flag values.
fn strip_flags(args: &[String], flags: &Flags) -> Vec<String> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        i += 1;
        let remaining = args.len() - i;
        if s == "--" {
            break;
        }
        let long_with_value = s.starts_with("--") && !s.contains('=') && !flags.is_bool(&s[2..]);
        let short_with_value = s.starts_with('-')
            && !s.contains('=')
            && s.chars().count() == 2
            && !s.chars().nth(1).is_some_and(|c| flags.is_bool_short(c));
        if long_with_value || short_with_value {
            if remaining <= 1 {
                break;
            }
            i += 1;
            continue;
        }
        if !s.is_empty() && !s.starts_with('-') {
            words.push(s.clone());
        }
    }
    words
}

fn without_first(args: &[String], word: &str) -> Vec<String> {
    let mut rest = args.to_vec();
    if let Some(at) = rest.iter().position(|a| a == word) {
        rest.remove(at);
    }
    rest
}

/// Levenshtein distance, case-insensitive (cobra's `ld(s, t, true)`).
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// cobra's unknown-command error, with its "Did you mean this?" list.
fn unknown_command(word: &str) -> String {
    let suggestions: Vec<&str> = ROOT_COMMANDS
        .iter()
        .copied()
        .filter(|c| *c != "help")
        .filter(|c| levenshtein(word, c) <= 2 || c.to_lowercase().starts_with(&word.to_lowercase()))
        .collect();
    let mut msg = format!(
        "unknown command {} for {}",
        gofmt::quote(word.as_bytes()),
        gofmt::quote(PROGRAM.as_bytes())
    );
    if !suggestions.is_empty() {
        msg.push_str("\n\nDid you mean this?\n");
        for s in suggestions {
            msg.push_str(&format!("\t{s}\n"));
        }
    }
    msg
}

/// cobra's `Find` one level down: the subcommand of `parent` named by the first word of `rest`
/// (by prefix too), or the parent itself, which prints its help, when no word names one.
fn find_sub(
    rest: &[String],
    parent: Command,
    names: &[&'static str],
    command: impl Fn(&str) -> Command,
) -> (Command, Vec<String>) {
    let parent_flags = Flags::new(&parent.local_flags());
    let words = strip_flags(rest, &parent_flags);
    match words
        .first()
        .and_then(|w| find_next(w, names).map(|n| (w, n)))
    {
        Some((word, name)) => (command(name), without_first(rest, word)),
        None => (parent, rest.to_vec()),
    }
}

/// cobra's `Find`: the command named by `args` and the arguments left for it.
fn find(args: &[String]) -> Result<(Command, Vec<String>), String> {
    let root_flags = Flags::new(&Command::Root.local_flags());
    let words = strip_flags(args, &root_flags);
    let Some(first) = words.first() else {
        return Ok((Command::Root, args.to_vec()));
    };
    let Some(name) = find_next(first, ROOT_COMMANDS) else {
        return Err(unknown_command(first));
    };
    let rest = without_first(args, first);
    let command = match name {
        "get" => Command::Get,
        "put" => Command::Put,
        "del" => Command::Del,
        "txn" => Command::Txn,
        "compaction" => Command::Compaction,
        "version" => Command::Version,
        "help" => Command::Help,
        "endpoint" => {
            return Ok(find_sub(
                &rest,
                Command::Endpoint,
                ENDPOINT_COMMANDS,
                |name| match name {
                    "health" => Command::EndpointHealth,
                    "status" => Command::EndpointStatus,
                    _ => Command::EndpointHashKv,
                },
            ));
        }
        "member" => {
            return Ok(find_sub(
                &rest,
                Command::Member,
                MEMBER_COMMANDS,
                |name| match name {
                    "add" => Command::MemberAdd,
                    "remove" => Command::MemberRemove,
                    "update" => Command::MemberUpdate,
                    "list" => Command::MemberList,
                    _ => Command::MemberPromote,
                },
            ));
        }
        "lease" => {
            return Ok(find_sub(
                &rest,
                Command::Lease,
                LEASE_COMMANDS,
                |name| match name {
                    "grant" => Command::LeaseGrant,
                    "revoke" => Command::LeaseRevoke,
                    "timetolive" => Command::LeaseTimeToLive,
                    "list" => Command::LeaseList,
                    _ => Command::LeaseKeepAlive,
                },
            ));
        }
        "snapshot" => {
            return Ok(find_sub(
                &rest,
                Command::Snapshot,
                SNAPSHOT_COMMANDS,
                |name| match name {
                    "save" => Command::SnapshotSave,
                    "restore" => Command::SnapshotRestore,
                    _ => Command::SnapshotStatus,
                },
            ));
        }
        "alarm" => {
            return Ok(find_sub(
                &rest,
                Command::Alarm,
                ALARM_COMMANDS,
                |name| match name {
                    "list" => Command::AlarmList,
                    _ => Command::AlarmDisarm,
                },
            ));
        }
        "defrag" => Command::Defrag,
        "move-leader" => Command::MoveLeader,
        "watch" => Command::Watch,
        other => Command::Missing(other),
    };
    Ok((command, rest))
}

async fn dispatch(
    args: &[String],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let (command, rest) = match find(args) {
        Ok(found) => found,
        Err(message) => {
            let _ = writeln!(io.err, "Error: {message}");
            let _ = writeln!(io.err, "Run '{PROGRAM} --help' for usage.");
            return Err(Fail::Error(EXIT_ERROR, message));
        }
    };
    if let Command::Missing(name) = command {
        return Err(Fail::Error(
            EXIT_ERROR,
            format!(
                "cairnctl does not implement {} yet",
                gofmt::quote(name.as_bytes())
            ),
        ));
    }
    let mut flags = Flags::new(&command.local_flags());
    let positional = match flags.parse(&rest) {
        Ok(p) => p,
        Err(message) => {
            // cobra prints the error, then the usage (etcdctl's usage function writes the help
            // to stdout and hands cobra an empty string, which it prints with a newline), and
            // etcdctl's main prints the error again.
            let _ = writeln!(io.err, "Error: {message}");
            let _ = io.out.write_all(command.help_text().as_bytes());
            let _ = writeln!(io.err);
            return Err(Fail::Error(EXIT_ERROR, message));
        }
    };
    if flags.bool(HELP.name) {
        let _ = io.out.write_all(command.help_text().as_bytes());
        return Ok(());
    }
    let inherited = command.inherited();
    match command {
        Command::Root
        | Command::Alarm
        | Command::Endpoint
        | Command::Member
        | Command::Lease
        | Command::Snapshot => {
            let _ = io.out.write_all(command.help_text().as_bytes());
            Ok(())
        }
        Command::Help => help_command(&positional, io),
        Command::Get => commands::get(flags, positional, &inherited, env, io).await,
        Command::Put => commands::put(flags, positional, &inherited, env, io).await,
        Command::Del => commands::del(flags, positional, &inherited, env, io).await,
        Command::Txn => commands::txn(flags, positional, &inherited, env, io).await,
        Command::Compaction => commands::compaction(flags, positional, &inherited, env, io).await,
        Command::Defrag => commands::defrag(flags, &inherited, env, io).await,
        Command::AlarmList => alarm::list(flags, positional, rest.len(), &inherited, env, io).await,
        Command::AlarmDisarm => {
            alarm::disarm(flags, positional, rest.len(), &inherited, env, io).await
        }
        Command::EndpointStatus => commands::endpoint_status(flags, &inherited, env, io).await,
        Command::EndpointHealth => commands::endpoint_health(flags, &inherited, env, io).await,
        Command::EndpointHashKv => commands::endpoint_hashkv(flags, &inherited, env, io).await,
        Command::MoveLeader => member::move_leader(flags, positional, &inherited, env, io).await,
        Command::MemberList => member::list(flags, &inherited, env, io).await,
        Command::MemberAdd => member::add(flags, positional, &inherited, env, io).await,
        Command::MemberRemove => member::remove(flags, positional, &inherited, env, io).await,
        Command::MemberUpdate => member::update(flags, positional, &inherited, env, io).await,
        Command::MemberPromote => {
            member::promote(flags, positional, rest.len(), &inherited, env, io).await
        }
        Command::LeaseGrant => lease::grant(flags, positional, &inherited, env, io).await,
        Command::LeaseRevoke => lease::revoke(flags, positional, &inherited, env, io).await,
        Command::LeaseTimeToLive => {
            lease::time_to_live(flags, positional, &inherited, env, io).await
        }
        Command::LeaseList => lease::list(flags, &inherited, env, io).await,
        Command::LeaseKeepAlive => lease::keep_alive(flags, positional, &inherited, env, io).await,
        Command::Watch => {
            let raw = watch::Raw {
                process: args,
                command: rest.len(),
            };
            watch::watch(flags, positional, raw, &inherited, env, io).await
        }
        Command::SnapshotSave => snapshot::save(flags, positional, &inherited, env, io).await,
        Command::SnapshotRestore => snapshot::restore(flags, positional, io),
        Command::SnapshotStatus => snapshot::status(flags, positional, io),
        Command::Version => commands::version(io),
        Command::Missing(_) => Ok(()),
    }
}

/// cobra's `help [command]`.
fn help_command(topic: &[String], io: &mut Console<'_>) -> Result<(), Fail> {
    match find(topic) {
        Ok((command, _)) => {
            let _ = io.out.write_all(command.help_text().as_bytes());
        }
        Err(_) => {
            let words: Vec<String> = topic.iter().map(|t| format!("`{t}`")).collect();
            let _ = writeln!(io.err, "Unknown help topic [{}]", words.join(" "));
            // cobra prints the root's usage before the root has its --help flag.
            let usage: String = help::ROOT
                .lines()
                .filter(|l| !l.starts_with("  -h, --help"))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = io.out.write_all(usage.as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    /// Runs cairnctl on a current-thread runtime with no server; returns (stdout, stderr, code).
    fn run_offline(argv: &[&str], stdin: &str) -> (String, String, i32) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
        let code = {
            let mut io = Console {
                out: &mut out,
                err: &mut err,
                input: &mut input,
                real: false,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(run_with(&args(argv), &[], &mut io))
        };
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            code,
        )
    }

    #[test]
    fn commands_are_found_by_prefix_like_cobra() {
        assert_eq!(
            find(&args(&["ge", "foo"])).unwrap(),
            (Command::Get, args(&["foo"]))
        );
        assert_eq!(
            find(&args(&["-w", "json", "pu", "a", "b"])).unwrap().0,
            Command::Put
        );
        assert_eq!(find(&args(&["--hex", "get", "a"])).unwrap().0, Command::Get);
        assert_eq!(
            find(&args(&["endpoint", "sta"])).unwrap().0,
            Command::EndpointStatus
        );
        assert_eq!(
            find(&args(&["endpoint", "bogus"])).unwrap().0,
            Command::Endpoint
        );
        assert_eq!(find(&args(&[])).unwrap().0, Command::Root);
    }

    #[test]
    fn subcommands_are_found_by_prefix_like_cobra() {
        let cases: &[(&[&str], Command)] = &[
            (&["mem", "li"], Command::MemberList),
            (&["member", "--hex", "add", "x"], Command::MemberAdd),
            (&["member", "pro", "1"], Command::MemberPromote),
            (&["member", "bogus"], Command::Member),
            (&["lease", "keep", "1"], Command::LeaseKeepAlive),
            (&["lease", "t", "1"], Command::LeaseTimeToLive),
            (&["lease"], Command::Lease),
            (&["endpoint", "hash"], Command::EndpointHashKv),
            (&["watch", "-i"], Command::Watch),
            (&["move", "1"], Command::MoveLeader),
            (&["alarm", "li"], Command::AlarmList),
            (&["al", "dis"], Command::AlarmDisarm),
            (&["alarm", "bogus"], Command::Alarm),
            (&["def", "--cluster"], Command::Defrag),
        ];
        for (argv, want) in cases {
            assert_eq!(find(&args(argv)).unwrap().0, *want, "{argv:?}");
        }
        assert_eq!(
            find(&args(&["member", "rem", "-w", "json", "1"]))
                .unwrap()
                .1,
            args(&["-w", "json", "1"])
        );
    }

    #[test]
    fn unknown_commands_suggest_like_cobra() {
        // etcdctl 3.4.23: `etcdctl gt foo` and `etcdctl Get foo`.
        assert_eq!(
            find(&args(&["gt", "foo"])).unwrap_err(),
            "unknown command \"gt\" for \"etcdctl\"\n\nDid you mean this?\n\tget\n\tput\n"
        );
        assert_eq!(
            find(&args(&["Get", "foo"])).unwrap_err(),
            "unknown command \"Get\" for \"etcdctl\"\n\nDid you mean this?\n\tget\n\tput\n\tdel\n"
        );
        assert_eq!(
            find(&args(&["bogus"])).unwrap_err(),
            "unknown command \"bogus\" for \"etcdctl\""
        );
    }

    #[test]
    fn unknown_command_output_matches_etcdctl() {
        let (out, err, code) = run_offline(&["bogus"], "");
        assert_eq!(out, "");
        assert_eq!(
            err,
            "Error: unknown command \"bogus\" for \"etcdctl\"\nRun 'etcdctl --help' for usage.\nError: unknown command \"bogus\" for \"etcdctl\"\n"
        );
        assert_eq!(code, 1);
    }

    #[test]
    fn flag_errors_print_usage_on_stdout() {
        let (out, err, code) = run_offline(&["get", "--bogus"], "");
        assert_eq!(out, help::GET);
        assert_eq!(
            err,
            "Error: unknown flag: --bogus\n\nError: unknown flag: --bogus\n"
        );
        assert_eq!(code, 1);
    }

    #[test]
    fn argument_errors_exit_before_any_network() {
        let cases: &[(&[&str], &str, i32)] = &[
            (&["put"], "Error: put command needs 1 argument and input from stdin or 2 arguments\n", 128),
            (&["get"], "Error: get command needs one argument as key and an optional argument as range_end\n", 128),
            (&["del", "a", "b", "c"], "Error: del command needs one argument as key and an optional argument as range_end\n", 128),
            (&["compaction"], "Error: compaction command needs 1 argument\n", 128),
            (&["compaction", "abc"], "Error: strconv.ParseInt: parsing \"abc\": invalid syntax\n", 1),
            (&["txn", "x"], "Error: txn command does not accept argument\n", 128),
            (&["get", "a", "--sort-by", "foo"], "Error: bad sort target foo\n", 4),
            (&["-w", "foo", "get", "a"], "Error: unsupported output format\n", 4),
            (&["--endpoints=", "get", "a"], "Error: etcdclient: no available endpoints\n", 2),
            // The commands below, captured from etcdctl 3.4.23 the same way.
            (&["member", "add"], "Error: member name not provided\n", 128),
            (&["member", "add", "a", "b", "http://x:1"], "Error: too many arguments, did you mean --peer-urls=http://x:1\n", 128),
            (&["member", "add", "a"], "Error: member peer urls not provided\n", 128),
            (&["member", "remove"], "Error: member ID is not provided\n", 128),
            (&["member", "update", "zz"], "Error: bad member ID arg (strconv.ParseUint: parsing \"zz\": invalid syntax), expecting ID in Hex\n", 128),
            (&["member", "update", "1"], "Error: member peer urls not provided\n", 128),
            (&["member", "promote", "-5"], "Error: unknown shorthand flag: '5' in -5\n\nError: unknown shorthand flag: '5' in -5\n", 1),
            (&["move-leader"], "Error: move-leader command needs 1 argument\n", 128),
            (&["move-leader", "zz"], "Error: strconv.ParseUint: parsing \"zz\": invalid syntax\n", 128),
            (&["lease", "grant"], "Error: lease grant command needs TTL argument\n", 128),
            (&["lease", "grant", "x"], "Error: bad TTL (strconv.ParseInt: parsing \"x\": invalid syntax)\n", 128),
            (&["lease", "revoke", "zz"], "Error: bad lease ID arg (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex\n", 128),
            (&["lease", "timetolive"], "Error: lease timetolive command needs lease ID as argument\n", 128),
            (&["lease", "keep-alive", "1", "2"], "Error: lease keep-alive command needs lease ID as argument\n", 128),
            (&["watch"], "Error: bad number of arguments\n", 128),
            (&["alarm", "list", "x"], "Error: alarm list command accepts no arguments\n", 128),
            (&["alarm", "disarm", "x"], "Error: alarm disarm command accepts no arguments\n", 128),
            (&["watch", "a", "--"], "Error: bad number of arguments (found separator --, but no commands)\n", 128),
            (&["endpoint", "hashkv", "--rev=x"], "Error: invalid argument \"x\" for \"--rev\" flag: strconv.ParseInt: parsing \"x\": invalid syntax\n\nError: invalid argument \"x\" for \"--rev\" flag: strconv.ParseInt: parsing \"x\": invalid syntax\n", 1),
        ];
        for (argv, want_err, want_code) in cases {
            let (out, err, code) = run_offline(argv, "");
            // A flag error prints the command's help on stdout; the rest print nothing there.
            if *want_code != 1 {
                assert_eq!(out, "", "{argv:?}");
            }
            assert_eq!((err.as_str(), code), (*want_err, *want_code), "{argv:?}");
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run_offline(&[], "").0, help::ROOT);
        assert_eq!(run_offline(&["txn", "--help"], "").0, help::TXN);
        assert_eq!(run_offline(&["help", "get"], "").0, help::GET);
        assert_eq!(run_offline(&["endpoint"], "").0, help::ENDPOINT);
        assert_eq!(run_offline(&["member", "bogus"], "").0, help::MEMBER);
        assert_eq!(run_offline(&["lease", "--help"], "").0, help::LEASE);
        assert_eq!(
            run_offline(&["help", "member", "add"], "").0,
            help::MEMBER_ADD
        );
        assert_eq!(
            run_offline(&["lease", "keep-alive", "-h"], "").0,
            help::LEASE_KEEP_ALIVE
        );
        assert_eq!(
            run_offline(&["endpoint", "hashkv", "-h"], "").0,
            help::ENDPOINT_HASHKV
        );
        assert_eq!(run_offline(&["watch", "--help"], "").0, help::WATCH);
        assert_eq!(run_offline(&["alarm"], "").0, help::ALARM);
        assert_eq!(
            run_offline(&["alarm", "list", "-h"], "").0,
            help::ALARM_LIST
        );
        assert_eq!(
            run_offline(&["help", "alarm", "disarm"], "").0,
            help::ALARM_DISARM
        );
        assert_eq!(run_offline(&["defrag", "--help"], "").0, help::DEFRAG);
        assert_eq!(
            run_offline(&["move-leader", "--help"], "").0,
            help::MOVE_LEADER
        );
        assert_eq!(
            run_offline(&["version"], "").0,
            "etcdctl version: 3.4.23\nAPI version: 3.4\n"
        );
        let (out, err, code) = run_offline(&["help", "bogus"], "");
        assert!(!out.contains("help for etcdctl"));
        assert_eq!((err.as_str(), code), ("Unknown help topic [`bogus`]\n", 0));
    }

    #[test]
    fn txn_input_errors_match_etcdctl() {
        // No server is needed: these fail while reading the input.
        let (_, err, code) = run_offline(&["txn"], "");
        assert_eq!((err.as_str(), code), ("Error: EOF\n", 3));
        let (out, err, code) = run_offline(&["txn", "-i"], "value(\"t1\") = \"b\"\nput t1 c\n");
        assert_eq!(out, "compares:\n");
        assert_eq!(
            (err.as_str(), code),
            ("Error: malformed comparison: put t1 c\n", 3)
        );
        let (out, err, code) = run_offline(&["txn", "-i"], "\n\nput t2 x\n");
        assert_eq!(
            out,
            "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
        );
        assert_eq!((err.as_str(), code), ("Error: EOF\n", 3));
        let (_, err, code) = run_offline(&["txn"], "lease(\"k\") = \"1\"\n\n\n");
        assert!(
            err.starts_with("panic: bad value\n\ngoroutine 1 [running]:\n"),
            "{err}"
        );
        assert_eq!(code, 2);
    }
}
