//! Server flags: etcd's names and defaults, each also read from a `CAIRN_*` environment variable.
//!
//! Flags are etcd's (`--name`, `--data-dir`, `--listen-client-urls`, ...) so that scripts written for
//! etcd start cairn by changing the program name only. Like Go's flag package, a single dash works
//! too (`-name n1`). Member and cluster ids are derived exactly as etcd derives them (SHA-1 of the
//! peer URLs and cluster token; SHA-1 of the sorted member ids), so a default single member has
//! etcd's well-known ids and response headers match etcd's byte for byte.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sha1::{Digest, Sha1};

use crate::server::{InitialMember, ServerConfig};

/// etcd's default --max-request-bytes: 1.5 MiB.
pub const MAX_REQUEST_BYTES_DEFAULT: usize = 1536 * 1024;
/// The most a proposal's raft `Entry` adds around the request it carries: the request's bytes
/// are the entry's `data`, and the entry's protobuf encoding adds its type, term and index
/// (varints of at most 10 bytes each, with their tags), the data's tag and length, an empty
/// context and `sync_log`: under 40 bytes; 64 leaves room.
pub const ENTRY_ENVELOPE_BYTES_MAX: usize = 64;
/// The largest --max-request-bytes. The limit applies to the whole `cairnpb::Request` (its id,
/// origin and operation: `Server::propose` checks its encoded length), and that request wrapped
/// in its raft entry must fit in one WAL record, or appending the entry would stop the node on
/// every member. etcd has no such bound (it warns above 10 MiB).
pub const MAX_REQUEST_BYTES_MAX: usize = crate::wal::RECORD_BYTES_MAX - ENTRY_ENVELOPE_BYTES_MAX;
/// etcd's default backend quota when --quota-backend-bytes is 0: 2 GiB.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's upper bound for the backend quota: 8 GiB.
pub const QUOTA_BACKEND_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(name = "cairn", version = concat!(env!("CARGO_PKG_VERSION"), " (etcd API 3.4)"),
    about = "cairn: an etcd v3-compatible, Raft-replicated key-value store")]
struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "CAIRN_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: ${name}.cairn).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(
        long,
        env = "CAIRN_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    listen_client_urls: String,
    /// List of this member's client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "CAIRN_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    advertise_client_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "CAIRN_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "CAIRN_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (name=peer-url,...).
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        env = "CAIRN_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "CAIRN_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "CAIRN_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "CAIRN_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,
    /// Number of entries for a slow follower to catch up after compacting the raft storage
    /// entries.
    #[arg(
        long = "experimental-snapshot-catchup-entries",
        env = "CAIRN_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = crate::raft::SNAPSHOT_CATCH_UP_ENTRIES
    )]
    snapshot_catch_up_entries: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "CAIRN_MAX_REQUEST_BYTES", default_value_t = MAX_REQUEST_BYTES_DEFAULT)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "CAIRN_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
    #[arg(long, env = "CAIRN_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(
        long,
        env = "CAIRN_STRICT_RECONFIG_CHECK",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    strict_reconfig_check: bool,
    /// Log level: debug, info, warn, error, panic, or fatal.
    #[arg(long, env = "CAIRN_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

/// The validated configuration of one server process.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub listen_client: Vec<SocketAddr>,
    pub listen_peer: Vec<SocketAddr>,
    pub initial_cluster_state: String,
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not an error: --help or --version; print `message` and exit with `code`.
    #[error("{message}")]
    Exit { code: u8, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses the process arguments (program name first).
    pub fn from_args(args: &[String]) -> Result<Config, ConfigError> {
        let args = go_style_flags(args);
        let flags = match Flags::try_parse_from(&args) {
            Ok(f) => f,
            Err(e) => {
                use clap::error::ErrorKind;
                return match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Err(ConfigError::Exit {
                        code: 0,
                        message: e.render().to_string(),
                    }),
                    _ => {
                        let text = e.render().to_string();
                        let line = text
                            .lines()
                            .next()
                            .unwrap_or("invalid arguments")
                            .trim_start_matches("error: ");
                        Err(ConfigError::Invalid(line.to_string()))
                    }
                };
            }
        };
        flags.validate()
    }
}

impl Flags {
    fn validate(self) -> Result<Config, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(m);
        if self.heartbeat_interval == 0 {
            return Err(bad("--heartbeat-interval must be > 0".into()));
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(bad(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        if self.election_timeout > 50_000 {
            return Err(bad(format!(
                "--election-timeout[{}ms] is too long, and should be set less than 50000ms",
                self.election_timeout
            )));
        }
        if self.max_request_bytes == 0 {
            return Err(bad("--max-request-bytes must be > 0".into()));
        }
        if self.max_request_bytes > MAX_REQUEST_BYTES_MAX {
            return Err(bad(format!(
                "--max-request-bytes {} exceeds maximum {MAX_REQUEST_BYTES_MAX} (a request in its raft entry must fit in one WAL record of {} bytes)",
                self.max_request_bytes,
                crate::wal::RECORD_BYTES_MAX
            )));
        }
        if self.max_txn_ops == 0 {
            return Err(bad("--max-txn-ops must be > 0".into()));
        }
        if self.quota_backend_bytes > QUOTA_BACKEND_BYTES_MAX {
            return Err(bad(format!(
                "--quota-backend-bytes {} exceeds maximum {}",
                self.quota_backend_bytes, QUOTA_BACKEND_BYTES_MAX
            )));
        }
        if self.initial_cluster_state != "new" && self.initial_cluster_state != "existing" {
            return Err(bad(format!(
                "invalid value \"{}\" for flag -initial-cluster-state: invalid value \"{}\"",
                self.initial_cluster_state, self.initial_cluster_state
            )));
        }
        match self.log_level.as_str() {
            "debug" | "info" | "warn" | "error" | "panic" | "fatal" => {}
            other => return Err(bad(format!("unknown log level {other:?}"))),
        }
        let listen_client = parse_listen_urls("--listen-client-urls", &self.listen_client_urls)?;
        let listen_peer = parse_listen_urls("--listen-peer-urls", &self.listen_peer_urls)?;
        let client_urls = parse_urls("--advertise-client-urls", &self.advertise_client_urls)?;
        let my_peer_urls = parse_urls(
            "--initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        let initial_cluster = self.initial_cluster.clone().unwrap_or_else(|| {
            format!(
                "{}={}",
                self.name,
                my_peer_urls.join(&format!(",{}=", self.name))
            )
        });
        let members = parse_initial_cluster(&initial_cluster, &self.initial_cluster_token)?;
        let me = members
            .iter()
            .find(|m| m.name == self.name)
            .ok_or_else(|| {
                bad(format!(
                    "couldn't find local name {:?} in the initial cluster configuration",
                    self.name
                ))
            })?;
        let mut mine = my_peer_urls.clone();
        mine.sort();
        let mut listed = me.peer_urls.clone();
        listed.sort();
        if mine != listed {
            return Err(bad(format!(
                "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} (member {} has mismatched peer URLs)",
                me.name,
                me.peer_urls.join(","),
                my_peer_urls.join(","),
                me.name
            )));
        }
        let member_id = me.id;
        let cluster_id = cluster_id(&members);
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)));
        let quota = if self.quota_backend_bytes == 0 {
            QUOTA_BACKEND_BYTES_DEFAULT
        } else {
            self.quota_backend_bytes
        };
        Ok(Config {
            server: ServerConfig {
                name: self.name,
                data_dir,
                member_id,
                cluster_id,
                initial_cluster: members,
                client_urls,
                heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
                election_timeout: Duration::from_millis(self.election_timeout),
                snapshot_count: self.snapshot_count,
                snapshot_catch_up_entries: self.snapshot_catch_up_entries,
                max_request_bytes: self.max_request_bytes,
                max_txn_ops: self.max_txn_ops,
                quota_backend_bytes: quota,
                strict_reconfig_check: self.strict_reconfig_check,
                join_existing: self.initial_cluster_state == "existing",
            },
            listen_client,
            listen_peer,
            initial_cluster_state: self.initial_cluster_state,
            log_level: self.log_level,
        })
    }
}

/// Go's flag package accepts `-name value`; clap wants `--name`. Rewrites single-dash long flags.
fn go_style_flags(args: &[String]) -> Vec<String> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 {
                format!("-{a}")
            } else {
                a.clone()
            }
        })
        .collect()
}

/// Checks a comma-separated URL list: scheme http or https, a host, and a port.
fn parse_urls(flag: &str, list: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        split_url(raw).map_err(|why| {
            ConfigError::Invalid(format!("invalid value {raw:?} for flag {flag}: {why}"))
        })?;
        out.push(raw.to_string());
    }
    if out.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{flag} must list at least one URL"
        )));
    }
    Ok(out)
}

fn parse_listen_urls(flag: &str, list: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut addrs = Vec::new();
    for raw in parse_urls(flag, list)? {
        let (host, port) = split_url(&raw).map_err(ConfigError::Invalid)?;
        let host = if host == "localhost" {
            "127.0.0.1".to_string()
        } else {
            host
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "invalid value {raw:?} for flag {flag}: cannot resolve {host:?}"
                ))
            })?;
        addrs.push(addr);
    }
    Ok(addrs)
}

/// Splits `scheme://host:port[/]` into host and port.
pub fn split_url(raw: &str) -> Result<(String, u16), String> {
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
        .ok_or_else(|| "URL scheme must be http or https".to_string())?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err("URL must not contain a path".into());
    }
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        let end = stripped.find(']').ok_or("unterminated IPv6 address")?;
        (
            stripped[..end].to_string(),
            stripped[end + 1..].strip_prefix(':').unwrap_or(""),
        )
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (rest.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err("URL must have a host".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("URL address does not have the form \"host:port\": {raw}"))?;
    Ok((host, port))
}

fn parse_initial_cluster(spec: &str, token: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!(
                "invalid value {spec:?} for flag --initial-cluster: {part:?} is not name=url"
            ))
        })?;
        split_url(url).map_err(|why| {
            ConfigError::Invalid(format!(
                "invalid value {spec:?} for flag --initial-cluster: {why}"
            ))
        })?;
        match by_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => by_name.push((name.to_string(), vec![url.to_string()])),
        }
    }
    let mut members: Vec<InitialMember> = by_name
        .into_iter()
        .map(|(name, peer_urls)| InitialMember {
            id: member_id(&peer_urls, token),
            name,
            peer_urls,
        })
        .collect();
    members.sort_by_key(|m| m.id);
    for w in members.windows(2) {
        if w[0].id == w[1].id {
            return Err(ConfigError::Invalid(format!(
                "member id collision between {} and {}",
                w[0].name, w[1].name
            )));
        }
    }
    Ok(members)
}

/// etcd's member id: the first 8 bytes (big-endian) of SHA-1 over the sorted peer URLs joined
/// without separator, followed by the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha1 is 20 bytes"))
}

/// etcd's cluster id: the first 8 bytes of SHA-1 over the sorted member ids, 8 bytes each.
pub fn cluster_id(members: &[InitialMember]) -> u64 {
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha1 is 20 bytes"))
}

/// Sets up tracing to stderr at the level of --log-level (overridable with RUST_LOG).
pub fn init_tracing(level: &str) {
    let level = match level {
        "panic" | "fatal" => "error",
        l => l,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},raft=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("cairn")
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn default_member_has_etcds_well_known_ids() {
        let cfg = Config::from_args(&args(&[])).unwrap();
        assert_eq!(format!("{:x}", cfg.server.member_id), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cfg.server.cluster_id), "cdf818194e3a8c32");
        assert_eq!(cfg.server.data_dir, PathBuf::from("default.cairn"));
        assert_eq!(
            cfg.listen_client,
            vec!["127.0.0.1:2379".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(cfg.server.max_request_bytes, 1_572_864);
        assert_eq!(cfg.server.max_txn_ops, 128);
    }

    #[test]
    fn a_named_member_without_initial_cluster_bootstraps_alone_as_etcd_does() {
        let cfg = Config::from_args(&args(&["--name", "x"])).unwrap();
        assert_eq!(cfg.server.initial_cluster.len(), 1);
        assert_eq!(cfg.server.initial_cluster[0].name, "x");
        assert_eq!(cfg.server.data_dir, PathBuf::from("x.cairn"));
    }

    #[test]
    fn strict_reconfig_check_is_a_go_style_boolean_that_defaults_on() {
        let parse = |a: &[&str]| {
            Config::from_args(&args(a))
                .unwrap()
                .server
                .strict_reconfig_check
        };
        assert!(parse(&[]));
        assert!(parse(&["--strict-reconfig-check"]));
        assert!(parse(&["--strict-reconfig-check=true"]));
        assert!(!parse(&["--strict-reconfig-check=false"]));
        assert!(!parse(&["-strict-reconfig-check=false"]));
    }

    #[test]
    fn single_dash_flags_work_like_go() {
        let cfg = Config::from_args(&args(&["-name", "n1", "-data-dir", "/tmp/x"])).unwrap();
        assert_eq!(cfg.server.name, "n1");
        assert_eq!(cfg.server.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn bad_urls_and_flags_are_one_line_errors() {
        for bad in [
            vec!["--listen-client-urls", "localhost:2379"],
            vec!["--listen-client-urls", "http://127.0.0.1"],
            vec!["--initial-cluster-state", "maybe"],
            vec!["--no-such-flag"],
            vec!["--election-timeout", "100"],
            vec![
                "--name",
                "x",
                "--initial-cluster",
                "y=http://localhost:2380",
            ],
        ] {
            match Config::from_args(&args(&bad)) {
                Err(ConfigError::Invalid(m)) => assert!(!m.contains('\n'), "{bad:?}: {m}"),
                other => panic!("{bad:?}: expected an error, got {other:?}"),
            }
        }
    }

    /// Issue 8, item 11: a request larger than a WAL record stopped the node at append.
    #[test]
    fn max_request_bytes_above_the_wal_record_limit_is_refused_at_start() {
        let max = MAX_REQUEST_BYTES_MAX.to_string();
        let cfg = Config::from_args(&args(&["--max-request-bytes", &max])).unwrap();
        assert_eq!(cfg.server.max_request_bytes, MAX_REQUEST_BYTES_MAX);
        let over = (MAX_REQUEST_BYTES_MAX + 1).to_string();
        match Config::from_args(&args(&["--max-request-bytes", &over])) {
            Err(ConfigError::Invalid(m)) => {
                assert!(
                    m.contains("--max-request-bytes") && m.contains("WAL record"),
                    "{m}"
                )
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// The bound's premise: the largest request the flag allows, in the largest raft entry
    /// around it, is a payload the WAL accepts.
    #[test]
    fn the_largest_allowed_request_fits_in_a_wal_record_as_a_raft_entry() {
        use protobuf::Message as _;
        let entry = raft::eraftpb::Entry {
            entry_type: raft::eraftpb::EntryType::EntryConfChangeV2,
            term: u64::MAX,
            index: u64::MAX,
            data: vec![0xff; MAX_REQUEST_BYTES_MAX].into(),
            sync_log: true,
            ..Default::default()
        };
        let payload = entry.write_to_bytes().unwrap();
        assert!(
            payload.len() <= crate::wal::RECORD_BYTES_MAX,
            "{} bytes",
            payload.len()
        );
        assert!(payload.len() - MAX_REQUEST_BYTES_MAX <= ENTRY_ENVELOPE_BYTES_MAX);
    }

    #[test]
    fn three_member_cluster_ids_are_distinct_and_stable() {
        let spec = "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:12380,n3=http://127.0.0.1:22380";
        let a = parse_initial_cluster(spec, "tkn").unwrap();
        let b = parse_initial_cluster(spec, "tkn").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert_ne!(
            cluster_id(&a),
            cluster_id(&parse_initial_cluster(spec, "other").unwrap())
        );
    }
}
