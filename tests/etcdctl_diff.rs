//! Differential tests: the same `etcdctl` commands against a fresh reference etcd and a fresh cairn,
//! comparing stdout, stderr and exit code of every command exactly.
//!
//! The scripts live in `tests/scripts/*.txt`, one etcdctl invocation per line (without
//! `--endpoints`, which the harness adds). The format:
//!
//! ```text
//! # a comment (blank lines are ignored too)
//! %flags --max-txn-ops 3         server flags for both servers; only before the first command
//! put foo bar                    arguments are split like a POSIX shell: 'single', "double", \x
//! put foo "hello world"
//! txn -w json <<EOF              the lines up to a line `EOF` are the command's stdin, verbatim,
//! value("foo") = "bar"           each followed by a newline (etcdctl's txn wants a blank line
//!                                after each of its three sections)
//! put a 1
//!
//!
//! EOF
//! !get --sort-by=BAD a           a leading `!` marks a deliberate etcdctl usage error
//! ~watch --rev 1 a               a leading `~` runs a command that does not exit by itself (watch)
//!                                for STREAM_WINDOW, then kills it and compares what it printed
//! ```
//!
//! Both servers advertise the same peer URL with the same cluster token, so their member and cluster
//! ids agree and `-w json` headers compare byte for byte. Before comparing, the harness replaces
//! the only parts of etcdctl's output that differ between two runs of etcd itself: the endpoint
//! address (the two servers listen on different ports) and, in the JSON log lines etcdctl's retry
//! interceptor writes to stderr, the timestamp and the random client id.
//!
//! Set `CAIRN_DIFF_SELF=1` to run every script etcd against etcd (a check of the harness and of
//! the scripts' determinism), and `CAIRN_DIFF_VERBOSE=1` to print every command's output.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Kind, Opts, Output, Server};

/// How many mismatches one failure report shows in full (later ones are often consequences).
const MISMATCHES_SHOWN_MAX: usize = 25;
/// How long a `~` command (a watch) runs before it is killed. Both servers deliver historical
/// events in milliseconds over loopback; the window only has to outlast etcdctl's startup.
const STREAM_WINDOW: Duration = Duration::from_secs(2);

/// One etcdctl invocation of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// 1-based line number of the command in the script.
    line: usize,
    /// The command line as written (without any `!` marker or here-doc marker).
    text: String,
    args: Vec<String>,
    stdin: Option<String>,
    /// The line is a deliberate etcdctl usage error: skip the script-bug guard.
    usage_error: bool,
    /// The command streams until killed: run it for this long, then kill it.
    window: Option<Duration>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Script {
    /// Extra server flags for both servers.
    flags: Vec<String>,
    steps: Vec<Step>,
}

/// Splits a command line like a POSIX shell does (quotes and backslashes; no expansions).
fn shell_split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn parse_script(text: &str) -> Result<Script, String> {
    let mut script = Script::default();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(flags) = trimmed.strip_prefix("%flags") {
            if !script.steps.is_empty() {
                return Err(format!(
                    "line {line_no}: %flags must come before the first command"
                ));
            }
            script
                .flags
                .extend(shell_split(flags).map_err(|e| format!("line {line_no}: {e}"))?);
            continue;
        }
        if trimmed.starts_with('%') {
            return Err(format!("line {line_no}: unknown directive {trimmed:?}"));
        }
        let (usage_error, command) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, trimmed),
        };
        let (window, command) = match command.strip_prefix('~') {
            Some(rest) => (Some(STREAM_WINDOW), rest.trim_start()),
            None => (None, command),
        };
        let (command, stdin) = match command.strip_suffix("<<EOF") {
            Some(command) => {
                let mut input = String::new();
                let mut closed = false;
                for (_, body) in lines.by_ref() {
                    if body == "EOF" {
                        closed = true;
                        break;
                    }
                    input.push_str(body);
                    input.push('\n');
                }
                if !closed {
                    return Err(format!(
                        "line {line_no}: here-doc without a closing EOF line"
                    ));
                }
                (command.trim_end(), Some(input))
            }
            None => (command, None),
        };
        let args = shell_split(command).map_err(|e| format!("line {line_no}: {e}"))?;
        if args.is_empty() {
            return Err(format!("line {line_no}: empty command"));
        }
        if args.iter().any(|a| a.starts_with("--endpoints")) {
            return Err(format!(
                "line {line_no}: the harness adds --endpoints itself"
            ));
        }
        script.steps.push(Step {
            line: line_no,
            text: command.to_string(),
            args,
            stdin,
            usage_error,
            window,
        });
    }
    if script.steps.is_empty() {
        return Err("script has no commands".into());
    }
    Ok(script)
}

/// Replaces what legitimately differs between two runs of the same command against two servers:
/// the endpoint address, and the timestamp and random client id in etcdctl's JSON log lines.
fn normalize(out: &Output, endpoint: &str) -> Output {
    let stdout = out.stdout.replace(endpoint, "<endpoint>");
    let stderr = out
        .stderr
        .replace(endpoint, "<endpoint>")
        .split_inclusive('\n')
        .map(normalize_log_line)
        .collect();
    Output {
        stdout,
        stderr,
        code: out.code,
    }
}

/// Normalizes one line of etcdctl's stderr if it is a JSON log record (zap), else returns it as is.
fn normalize_log_line(line: &str) -> String {
    let body = line.trim_end_matches('\n');
    if !body.starts_with("{\"level\"") {
        return line.to_string();
    }
    let Ok(serde_json::Value::Object(mut record)) = serde_json::from_str(body) else {
        return line.to_string();
    };
    if record.contains_key("ts") {
        record.insert("ts".into(), "<ts>".into());
    }
    if let Some(serde_json::Value::String(target)) = record.get("target") {
        // endpoint://client-<uuid>/<endpoint>: the uuid is random per etcdctl run.
        let target = match target.strip_prefix("endpoint://client-") {
            Some(rest) => match rest.find('/') {
                Some(slash) => format!("endpoint://client-<id>{}", &rest[slash..]),
                None => target.clone(),
            },
            None => target.clone(),
        };
        record.insert("target".into(), target.into());
    }
    let mut normalized = serde_json::Value::Object(record).to_string();
    if line.ends_with('\n') {
        normalized.push('\n');
    }
    normalized
}

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("scripts")
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn show(out: &Output) -> String {
    format!(
        "    exit code: {:?}\n    stdout:\n{}    stderr:\n{}",
        out.code,
        indent(&out.stdout),
        indent(&out.stderr)
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      | {l}\n")).collect()
}

/// Runs one step against `server` and normalizes its output.
fn run_step(server: &Server, step: &Step) -> Output {
    let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
    let out = match step.window {
        None => server.etcdctl(&args, step.stdin.as_deref()),
        Some(window) => {
            let cmd = common::etcdctl_command(&server.endpoint(), &args);
            common::run_for(cmd, step.stdin.as_deref(), window).0
        }
    };
    normalize(&out, &server.endpoint())
}

/// Fails on signs that a script line is wrong rather than the server (etcdctl rejected it
/// against etcd), and prints etcd's output in verbose mode.
fn check_step(name: &str, step: &Step, expected: &Output, verbose: bool) {
    if !step.usage_error {
        for sign in [
            "unknown flag",
            "unknown shorthand flag",
            "unknown command",
            "Error: EOF",
        ] {
            assert!(
                !expected.stderr.contains(sign),
                "{name}.txt:{}: script bug, etcdctl rejected `{}` against etcd \
                 (prefix the line with `!` if that is deliberate):\n{}",
                step.line,
                step.text,
                show(expected)
            );
        }
    }
    if verbose {
        eprintln!(
            "{name}.txt:{}: {}\n{}",
            step.line,
            step.text,
            show(expected)
        );
    }
}

fn describe_mismatch(
    name: &str,
    step: &Step,
    expected: &Output,
    other_kind: Kind,
    actual: &Output,
) -> String {
    let mut what = Vec::new();
    if expected.code != actual.code {
        what.push("exit code");
    }
    if expected.stdout != actual.stdout {
        what.push("stdout");
    }
    if expected.stderr != actual.stderr {
        what.push("stderr");
    }
    format!(
        "\n{name}.txt:{}: `etcdctl {}`{} differs in {}\n  etcd:\n{}  {}:\n{}",
        step.line,
        step.text,
        if step.stdin.is_some() {
            " (with stdin)"
        } else {
            ""
        },
        what.join(", "),
        show(expected),
        other_kind.label(),
        show(actual),
    )
}

/// Runs one script against a fresh etcd and a fresh cairn (or a second etcd with
/// `CAIRN_DIFF_SELF=1`) and fails with a report of every differing command.
fn run_script(name: &str) {
    let path = scripts_dir().join(format!("{name}.txt"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let script = parse_script(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let verbose = env_flag("CAIRN_DIFF_VERBOSE");
    let other_kind = if env_flag("CAIRN_DIFF_SELF") {
        Kind::Etcd
    } else {
        Kind::Cairn
    };
    let opts = Opts {
        extra_args: script.flags.clone(),
        ..Opts::default()
    };
    // Start both before waiting on either: the two startups overlap.
    let mut etcd = Server::spawn(Kind::Etcd, opts.clone());
    let mut other = Server::spawn(other_kind, opts);
    etcd.wait_ready();
    other.wait_ready();

    let mut report = String::new();
    let mut mismatches = 0usize;
    let mut next = 0;
    while next < script.steps.len() {
        // A run of consecutive `~` steps only reads (watches of history), so they run at once;
        // any other step runs alone. Both servers always run a step at the same time.
        let streaming = script.steps[next].window.is_some();
        let batch_len = if streaming {
            script.steps[next..]
                .iter()
                .take_while(|s| s.window.is_some())
                .count()
        } else {
            1
        };
        let batch = &script.steps[next..next + batch_len];
        next += batch_len;
        let results: Vec<(Output, Output)> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|step| {
                    let (etcd, other) = (&etcd, &other);
                    (
                        scope.spawn(move || run_step(etcd, step)),
                        scope.spawn(move || run_step(other, step)),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(e, o)| {
                    (
                        e.join().expect("etcd side panicked"),
                        o.join().expect("other side panicked"),
                    )
                })
                .collect()
        });
        for (step, (expected, actual)) in batch.iter().zip(results) {
            check_step(name, step, &expected, verbose);
            if expected != actual {
                mismatches += 1;
                if mismatches <= MISMATCHES_SHOWN_MAX {
                    report.push_str(&describe_mismatch(
                        name, step, &expected, other_kind, &actual,
                    ));
                }
            }
        }
    }
    if mismatches > 0 {
        panic!(
            "{name}.txt: {mismatches} of {} commands differ between etcd and {} \
             (later mismatches may follow from earlier ones):{report}{}",
            script.steps.len(),
            other_kind.label(),
            if mismatches > MISMATCHES_SHOWN_MAX {
                format!("\n... {} more not shown", mismatches - MISMATCHES_SHOWN_MAX)
            } else {
                String::new()
            }
        );
    }
}

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_script(stringify!($name));
            }
        )*
        /// Every script that has a test above.
        const SCRIPTS: &[&str] = &[$(stringify!($name)),*];
    };
}

scripts!(
    basic,
    revisions,
    range,
    delete,
    txn,
    compaction,
    errors,
    limits,
    output_formats,
    cluster,
    watch,
);

#[test]
fn every_script_has_a_test() {
    let mut files: Vec<String> = std::fs::read_dir(scripts_dir())
        .expect("read tests/scripts")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|n| n.strip_suffix(".txt").map(str::to_string))
        .collect();
    files.sort();
    let mut listed: Vec<String> = SCRIPTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "tests/scripts/*.txt and the scripts! list in tests/etcdctl_diff.rs must agree"
    );
    for name in SCRIPTS {
        let path = scripts_dir().join(format!("{name}.txt"));
        let text = std::fs::read_to_string(&path).expect("read script");
        if let Err(e) = parse_script(&text) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn shell_split_handles_quotes_and_escapes() {
    let split = |s: &str| shell_split(s).unwrap();
    assert_eq!(split("put foo bar"), ["put", "foo", "bar"]);
    assert_eq!(split("  get   --prefix  fo "), ["get", "--prefix", "fo"]);
    assert_eq!(split(r#"get --from-key """#), ["get", "--from-key", ""]);
    assert_eq!(split("put '' x"), ["put", "", "x"]);
    assert_eq!(split(r#"put k "a \"b\" c""#), ["put", "k", r#"a "b" c"#]);
    assert_eq!(split(r"put k a\ b"), ["put", "k", "a b"]);
    assert_eq!(split(r#"put k "a\nb""#), ["put", "k", r"a\nb"]);
    assert_eq!(split("put k='x y'"), ["put", "k=x y"]);
    assert!(shell_split("put 'k").is_err());
    assert!(shell_split("put \"k").is_err());
    assert!(shell_split("put k\\").is_err());
}

#[test]
fn parse_script_reads_flags_heredocs_and_markers() {
    let text = "# c\n%flags --max-txn-ops 3\n\nput a 1\ntxn -w json <<EOF\nvalue(\"a\") = \"1\"\n\nput b 2\n\n\nEOF\n!get --bad\n~watch a\n";
    let script = parse_script(text).unwrap();
    assert_eq!(script.flags, ["--max-txn-ops", "3"]);
    assert_eq!(script.steps.len(), 4);
    assert_eq!(script.steps[0].args, ["put", "a", "1"]);
    assert_eq!(script.steps[0].line, 4);
    assert_eq!(script.steps[1].args, ["txn", "-w", "json"]);
    assert_eq!(
        script.steps[1].stdin.as_deref(),
        Some("value(\"a\") = \"1\"\n\nput b 2\n\n\n")
    );
    assert!(script.steps[2].usage_error);
    assert_eq!(script.steps[2].args, ["get", "--bad"]);
    assert_eq!(script.steps[2].window, None);
    assert_eq!(script.steps[3].args, ["watch", "a"]);
    assert_eq!(script.steps[3].window, Some(STREAM_WINDOW));
    assert!(parse_script("put a 1\n%flags --x\n").is_err());
    assert!(parse_script("txn <<EOF\nput a 1\n").is_err());
    assert!(parse_script("--endpoints x get a\n").is_err());
    assert!(parse_script("# nothing\n").is_err());
}

#[test]
fn normalize_hides_only_run_specific_fields() {
    let line = r#"{"level":"warn","ts":"2026-11-26T12:07:02.413Z","caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"endpoint://client-72d5d2ba-483a-4af2-980a-c99a847babb7/127.0.0.1:23791","attempt":0,"error":"rpc error: code = InvalidArgument desc = etcdserver: key is not provided"}"#;
    let out = Output {
        stdout: "127.0.0.1:23791 is healthy\n".into(),
        stderr: format!("{line}\nError: etcdserver: key is not provided\n"),
        code: Some(1),
    };
    let n = normalize(&out, "127.0.0.1:23791");
    assert_eq!(n.stdout, "<endpoint> is healthy\n");
    assert!(n.stderr.contains(r#""ts":"<ts>""#), "{}", n.stderr);
    assert!(
        n.stderr
            .contains(r#""target":"endpoint://client-<id>/<endpoint>""#),
        "{}",
        n.stderr
    );
    assert!(n.stderr.contains("desc = etcdserver: key is not provided"));
    assert!(n
        .stderr
        .ends_with("\nError: etcdserver: key is not provided\n"));
    // The error text itself is never normalized away.
    let other = Output {
        stderr: out.stderr.replace("key is not provided", "key not found"),
        ..out.clone()
    };
    assert_ne!(n, normalize(&other, "127.0.0.1:23791"));
}
