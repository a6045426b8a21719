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
//! `get`, `put`, `del`, `txn` (with `-i`), `compaction`, `endpoint status`, `endpoint health`
//! (both with `--cluster`), `version` and `help`, with the global flags `--endpoints`,
//! `--dial-timeout`, `--command-timeout`, `--hex`, `-w simple|json|fields|table|protobuf`,
//! `--user`/`--password` and `--debug`, each also read from its `ETCDCTL_*` variable. The
//! keepalive flags and `--insecure-skip-tls-verify` are accepted and ignored; TLS files and DNS
//! discovery are refused with an error. `get` also takes `--count-only` (as in etcdctl 3.5) and
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
//! * `commands`: the commands themselves, step by step in etcdctl's order;
//! * `help` and `texts/`: help texts and panic traces, verbatim.
//!
//! The process exits with etcdctl's codes: 1 for errors, 2 for a bad connection (and for the
//! panics etcdctl 3.4.23 has on some `txn` input, which are reproduced), 3 for invalid input, 4
//! for an unsupported feature, and 128 for bad arguments.

use std::io::{BufRead, Write};

mod client;
mod clock;
mod commands;
mod flags;
mod gofmt;
mod help;
mod json;
mod ops;
mod printer;
mod table;
mod txn_parse;

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

/// A command cairnctl runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Root,
    Get,
    Put,
    Del,
    Txn,
    Compaction,
    Endpoint,
    EndpointHealth,
    EndpointStatus,
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
            Command::Endpoint | Command::EndpointHealth | Command::EndpointStatus => {
                vec![HELP, CLUSTER]
            }
            _ => vec![HELP],
        };
        defs.extend_from_slice(GLOBAL);
        defs
    }

    /// The flags inherited from parents, which `ETCDCTL_*` variables may set.
    fn inherited(self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = GLOBAL.iter().map(|d| d.name).collect();
        if matches!(self, Command::EndpointHealth | Command::EndpointStatus) {
            names.push(CLUSTER.name);
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
            Command::Endpoint => help::ENDPOINT,
            Command::EndpointHealth => help::ENDPOINT_HEALTH,
            Command::EndpointStatus => help::ENDPOINT_STATUS,
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
            let ep_flags = Flags::new(&Command::Endpoint.local_flags());
            let words = strip_flags(&rest, &ep_flags);
            let sub = words
                .first()
                .and_then(|w| find_next(w, ENDPOINT_COMMANDS).map(|n| (w, n)));
            return Ok(match sub {
                Some((w, "health")) => (Command::EndpointHealth, without_first(&rest, w)),
                Some((w, "status")) => (Command::EndpointStatus, without_first(&rest, w)),
                Some((_, other)) => (Command::Missing(other), rest),
                None => (Command::Endpoint, rest),
            });
        }
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
        Command::Root | Command::Endpoint => {
            let _ = io.out.write_all(command.help_text().as_bytes());
            Ok(())
        }
        Command::Help => help_command(&positional, io),
        Command::Get => commands::get(flags, positional, &inherited, env, io).await,
        Command::Put => commands::put(flags, positional, &inherited, env, io).await,
        Command::Del => commands::del(flags, positional, &inherited, env, io).await,
        Command::Txn => commands::txn(flags, positional, &inherited, env, io).await,
        Command::Compaction => commands::compaction(flags, positional, &inherited, env, io).await,
        Command::EndpointStatus => commands::endpoint_status(flags, &inherited, env, io).await,
        Command::EndpointHealth => commands::endpoint_health(flags, &inherited, env, io).await,
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
        ];
        for (argv, want_err, want_code) in cases {
            let (out, err, code) = run_offline(argv, "");
            assert_eq!(
                (out.as_str(), err.as_str(), code),
                ("", *want_err, *want_code),
                "{argv:?}"
            );
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run_offline(&[], "").0, help::ROOT);
        assert_eq!(run_offline(&["txn", "--help"], "").0, help::TXN);
        assert_eq!(run_offline(&["help", "get"], "").0, help::GET);
        assert_eq!(run_offline(&["endpoint"], "").0, help::ENDPOINT);
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
