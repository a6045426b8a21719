//! The etcd 3.4 server flags cairn takes but does not (yet) act on, each with its reason.
//!
//! A script, unit file or manifest written for etcd passes flags cairn has no use for. Each one
//! here is accepted with etcd's syntax and default, its value is checked as etcd checks it, and
//! when it is given with a value other than the one cairn behaves as, one warning line names it and
//! says why it changes nothing. A flag whose silent omission would betray the operator (TLS asked
//! for and plaintext served; a discovery bootstrap turned into a lone new cluster) is refused at
//! start instead. The flags cairn does act on are the typed fields of `Flags` in the parent module.

use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

/// How a catalogued flag's value is parsed.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Go's boolean: `--flag`, `--flag=true|false|1|0|t|f|...`; never `--flag false`.
    Bool,
    /// A free string (possibly a list).
    Str,
    /// An unsigned integer.
    Uint,
    /// A Go duration: `500ms`, `5s`, `2h45m`.
    Duration,
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

/// What cairn does with a catalogued flag.
#[derive(Debug, Clone, Copy)]
pub enum Effect {
    /// Accepted; a value that is not in `quiet` gets one warning line with `why`.
    Warn {
        quiet: &'static [&'static str],
        why: &'static str,
    },
    /// Accepted only with a value in `quiet`; any other stops the start with `why`.
    Refuse {
        quiet: &'static [&'static str],
        why: &'static str,
    },
}

pub struct Entry {
    pub name: &'static str,
    pub kind: Kind,
    /// etcd's default, as `etcd --help` prints it.
    pub default: &'static str,
    pub effect: Effect,
}

const NO_AUTH: &str =
    "authentication is not supported yet (the auth calls answer Unimplemented), so it never applies";
const NO_V2: &str = "cairn serves the v3 API only";
const NO_V2_PROXY: &str = "cairn has no v2 proxy mode";
const NO_DISCOVERY: &str =
    "discovery is not supported: list the members with --initial-cluster instead";
const NOT_TUNED: &str =
    "the client listener keeps its own HTTP/2 settings for now; this limit is not applied";

const fn warn(why: &'static str) -> Effect {
    Effect::Warn { quiet: &[], why }
}

const fn refuse(why: &'static str) -> Effect {
    Effect::Refuse { quiet: &[], why }
}

const fn entry(name: &'static str, kind: Kind, default: &'static str, effect: Effect) -> Entry {
    Entry {
        name,
        kind,
        default,
        effect,
    }
}

use Kind::{Bool, Choice, Str, Uint};

/// Every etcd 3.4.23 server flag cairn does not act on, in `etcd --help`'s order.
pub const ENTRIES: &[Entry] = &[
    entry(
        "initial-election-tick-advance",
        Bool,
        "true",
        warn("a starting member always waits one randomized election timeout before campaigning"),
    ),
    entry(
        "max-snapshots",
        Uint,
        "5",
        warn("cairn removes the snapshot files it no longer needs itself"),
    ),
    entry(
        "max-wals",
        Uint,
        "5",
        warn("cairn removes the WAL segments a snapshot covers itself"),
    ),
    entry(
        "backend-batch-interval",
        Kind::Duration,
        "0s",
        warn("the backend commits its batch once a heartbeat tick, or at 10,000 writes"),
    ),
    entry(
        "backend-batch-limit",
        Uint,
        "0",
        warn("the backend commits its batch once a heartbeat tick, or at 10,000 writes"),
    ),
    entry("max-concurrent-streams", Uint, "4294967295", warn(NOT_TUNED)),
    entry("grpc-keepalive-min-time", Kind::Duration, "5s", warn(NOT_TUNED)),
    entry("grpc-keepalive-interval", Kind::Duration, "2h", warn(NOT_TUNED)),
    entry("grpc-keepalive-timeout", Kind::Duration, "20s", warn(NOT_TUNED)),
    entry("discovery", Str, "", refuse(NO_DISCOVERY)),
    entry(
        "discovery-fallback",
        Choice(&["proxy", "exit"]),
        "proxy",
        warn("it only matters with --discovery, which cairn does not support"),
    ),
    entry(
        "discovery-proxy",
        Str,
        "",
        warn("it only matters with --discovery, which cairn does not support"),
    ),
    entry("discovery-srv", Str, "", refuse(NO_DISCOVERY)),
    entry(
        "discovery-srv-name",
        Str,
        "",
        warn("it only matters with --discovery-srv, which cairn does not support"),
    ),
    entry(
        "pre-vote",
        Bool,
        "false",
        Effect::Warn {
            quiet: &["true"],
            why: "cairn always runs the pre-vote phase, so a member cut off from the others cannot depose the leader when it returns",
        },
    ),
    entry("enable-v2", Bool, "false", warn(NO_V2)),
    entry(
        "enable-grpc-gateway",
        Bool,
        "true",
        warn("the JSON gateway is always served on the client URLs"),
    ),
    entry(
        "experimental-peer-skip-client-san-verification",
        Bool,
        "false",
        warn("cairn does not check a peer's client certificate SANs against its address"),
    ),
    entry(
        "cors",
        Str,
        "*",
        warn("cairn's HTTP endpoints send no CORS headers"),
    ),
    entry(
        "host-whitelist",
        Str,
        "*",
        warn("cairn's HTTP endpoints answer every Host"),
    ),
    entry("auth-token", Str, "simple", warn(NO_AUTH)),
    entry("bcrypt-cost", Uint, "10", warn(NO_AUTH)),
    entry("auth-token-ttl", Uint, "300", warn(NO_AUTH)),
    entry(
        "enable-pprof",
        Bool,
        "false",
        warn("cairn has no pprof endpoints"),
    ),
    entry(
        "metrics",
        Choice(&["basic", "extensive"]),
        "basic",
        warn("cairn's /metrics reports the same series either way"),
    ),
    entry(
        "log-package-levels",
        Str,
        "",
        warn("set levels per module with RUST_LOG instead"),
    ),
    entry(
        "proxy",
        Choice(&["off", "readonly", "on"]),
        "off",
        Effect::Refuse {
            quiet: &["off"],
            why: NO_V2_PROXY,
        },
    ),
    entry("proxy-failure-wait", Uint, "5000", warn(NO_V2_PROXY)),
    entry("proxy-refresh-interval", Uint, "30000", warn(NO_V2_PROXY)),
    entry("proxy-dial-timeout", Uint, "1000", warn(NO_V2_PROXY)),
    entry("proxy-write-timeout", Uint, "5000", warn(NO_V2_PROXY)),
    entry("proxy-read-timeout", Uint, "0", warn(NO_V2_PROXY)),
    entry(
        "experimental-corrupt-check-time",
        Kind::Duration,
        "0s",
        warn("the periodic hash comparison with the other members is not implemented yet"),
    ),
    entry("experimental-enable-v2v3", Str, "", warn(NO_V2)),
    entry(
        "experimental-backend-bbolt-freelist-type",
        Choice(&["array", "map"]),
        "array",
        warn("cairn's backend is LMDB, not bbolt"),
    ),
    entry(
        "experimental-enable-lease-checkpoint",
        Bool,
        "false",
        warn("lease deadlines are not checkpointed: a new leader renews every lease in full, as etcd does without checkpoints"),
    ),
    entry(
        "experimental-enable-lease-checkpoint-persist",
        Bool,
        "false",
        warn("lease deadlines are not checkpointed: a new leader renews every lease in full, as etcd does without checkpoints"),
    ),
    entry(
        "experimental-compaction-batch-limit",
        Uint,
        "1000",
        warn("a compaction deletes up to 10,000 revisions a heartbeat tick"),
    ),
    entry(
        "experimental-watch-progress-notify-interval",
        Kind::Duration,
        "10m",
        warn("watch progress notifications are sent on request only"),
    ),
    entry(
        "experimental-warning-apply-duration",
        Kind::Duration,
        "100ms",
        warn("cairn reports apply times in /metrics, not as warnings"),
    ),
    entry(
        "unsafe-no-fsync",
        Bool,
        "false",
        warn("cairn always syncs its WAL and backend"),
    ),
    entry(
        "force-new-cluster",
        Bool,
        "false",
        refuse("forcing a new cluster is not supported yet: restore a snapshot with `cairnctl snapshot restore` into a new cluster instead"),
    ),
];

/// Adds every catalogued flag to `cmd`.
pub fn augment(mut cmd: Command) -> Command {
    for e in ENTRIES {
        let mut arg = Arg::new(e.name)
            .long(e.name)
            .action(ArgAction::Set)
            .default_value(e.default)
            .help_heading(match e.effect {
                Effect::Warn { .. } => "Accepted for etcd compatibility, without effect",
                Effect::Refuse { .. } => "Refused unless left at etcd's default",
            })
            .help(match e.effect {
                Effect::Warn { why, .. } | Effect::Refuse { why, .. } => why,
            });
        arg = match e.kind {
            Kind::Bool => arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_parser(|s: &str| super::go_bool(s).map(|b| b.to_string())),
            Kind::Str => arg,
            Kind::Uint => arg.value_parser(|s: &str| {
                s.parse::<u64>()
                    .map(|v| v.to_string())
                    .map_err(|_| "parse error".to_string())
            }),
            Kind::Duration => arg.value_parser(|s: &str| {
                super::go_duration(s).map(|d: Duration| format!("{}ns", d.as_nanos()))
            }),
            Kind::Choice(words) => arg.value_parser(move |s: &str| {
                if words.contains(&s) {
                    Ok(s.to_string())
                } else {
                    Err(format!("valid values are {}", words.join(", ")))
                }
            }),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// The warning lines for catalogued flags given with a value cairn does not act on, or the
/// refusal of one that must not be ignored.
pub fn judge(m: &ArgMatches) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    for e in ENTRIES {
        if m.value_source(e.name) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let value = m.get_one::<String>(e.name).cloned().unwrap_or_default();
        let default = normalize(e.kind, e.default);
        let (quiet, why, refused) = match e.effect {
            Effect::Warn { quiet, why } => (quiet, why, false),
            Effect::Refuse { quiet, why } => (quiet, why, true),
        };
        let is_quiet = if quiet.is_empty() {
            value == default
        } else {
            quiet.iter().any(|q| normalize(e.kind, q) == value)
        };
        if is_quiet {
            continue;
        }
        let shown = m
            .get_raw(e.name)
            .and_then(|mut r| r.next())
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or(value);
        if refused {
            return Err(format!("--{}={shown}: {why}", e.name));
        }
        warnings.push(format!(
            "--{}={shown} has no effect in cairn: {why}",
            e.name
        ));
    }
    Ok(warnings)
}

/// A value as the parser stores it, so that `0s` and `0` or `t` and `true` compare equal.
fn normalize(kind: Kind, raw: &str) -> String {
    match kind {
        Kind::Bool => super::go_bool(raw)
            .map(|b| b.to_string())
            .unwrap_or_else(|_| raw.to_string()),
        Kind::Duration => super::go_duration(raw)
            .map(|d| format!("{}ns", d.as_nanos()))
            .unwrap_or_else(|_| raw.to_string()),
        Kind::Uint => raw
            .parse::<u64>()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| raw.to_string()),
        _ => raw.to_string(),
    }
}

/// Whether `name` is a catalogued flag of kind [`Kind::Duration`] (etcd's YAML config holds
/// those as integer nanoseconds).
pub fn is_duration(name: &str) -> bool {
    ENTRIES
        .iter()
        .any(|e| e.name == name && matches!(e.kind, Kind::Duration))
}
