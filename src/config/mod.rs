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

use clap::{CommandFactory, FromArgMatches};
use sha1::{Digest, Sha1};

use crate::server::{InitialMember, ServerConfig};
pub use crate::tls::TlsInfo;

mod catalogue;
mod sources;

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

#[derive(Debug, clap::Parser)]
#[command(name = "cairn", version = concat!(env!("CARGO_PKG_VERSION"), " (etcd API 3.4)"),
    about = "cairn: an etcd v3-compatible, Raft-replicated key-value store")]
struct Flags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Path to the data directory (default: ${name}.cairn).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Path to the dedicated WAL directory (default: <data-dir>/member/wal).
    #[arg(long, default_value = "")]
    wal_dir: String,
    /// List of URLs to listen on for client traffic.
    #[arg(long, default_value = "http://localhost:2379")]
    listen_client_urls: String,
    /// List of this member's client URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2379")]
    advertise_client_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380")]
    listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (name=peer-url,...).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, default_value = "new")]
    initial_cluster_state: String,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// Number of entries for a slow follower to catch up after compacting the raft storage
    /// entries.
    #[arg(
        long = "experimental-snapshot-catchup-entries",
        default_value_t = crate::raft::SNAPSHOT_CATCH_UP_ENTRIES
    )]
    snapshot_catch_up_entries: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = MAX_REQUEST_BYTES_DEFAULT)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
    #[arg(long, default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    strict_reconfig_check: bool,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(long, default_value = "periodic", value_parser = ["periodic", "revision"])]
    auto_compaction_mode: String,
    /// Auto compaction retention for mvcc key value store. 0 means disable auto compaction.
    /// Periodic mode takes a duration (a bare number is hours); revision mode a count.
    #[arg(long, default_value = "0")]
    auto_compaction_retention: String,
    /// Check this member's data against its peers' before serving clients.
    #[arg(
        long,
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = go_bool
    )]
    experimental_initial_corrupt_check: bool,
    /// List of URLs to listen on for the metrics and health endpoints (http only).
    #[arg(long, default_value = "")]
    listen_metrics_urls: String,
    /// Path to the client server TLS cert file.
    #[arg(long, default_value = "")]
    cert_file: String,
    /// Path to the client server TLS key file.
    #[arg(long, default_value = "")]
    key_file: String,
    /// Enable client cert authentication.
    #[arg(
        long,
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = go_bool
    )]
    client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, default_value = "")]
    client_crl_file: String,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, default_value = "")]
    trusted_ca_file: String,
    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, default_value = "")]
    client_cert_allowed_hostname: String,
    /// Client TLS using generated certificates.
    #[arg(
        long,
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = go_bool
    )]
    auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, default_value = "")]
    peer_cert_file: String,
    /// Path to the peer server TLS key file.
    #[arg(long, default_value = "")]
    peer_key_file: String,
    /// Enable peer client cert authentication.
    #[arg(
        long,
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = go_bool
    )]
    peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, default_value = "")]
    peer_trusted_ca_file: String,
    /// Allowed CN for inter peer authentication.
    #[arg(long, default_value = "")]
    peer_cert_allowed_cn: String,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, default_value = "")]
    peer_cert_allowed_hostname: String,
    /// Peer TLS using generated certificates.
    #[arg(
        long,
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = go_bool
    )]
    peer_auto_tls: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, default_value = "")]
    peer_crl_file: String,
    /// Comma-separated list of supported TLS cipher suites between client/server and peers
    /// (empty will be auto-populated by Go).
    #[arg(long, default_value = "")]
    cipher_suites: String,
    /// Log level: debug, info, warn, error, panic, or fatal.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Enable debug-level logging (the same as --log-level=debug).
    #[arg(
        long,
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = go_bool
    )]
    debug: bool,
    /// Logger: 'capnslog' or 'zap' (cairn writes the same lines either way).
    #[arg(long, default_value = "capnslog")]
    logger: String,
    /// Where to write logs: 'default' (stderr), 'stderr', 'stdout', or file paths, comma-separated.
    #[arg(long, default_value = "default")]
    log_outputs: String,
    /// Deprecated spelling of --log-outputs.
    #[arg(long, hide = true)]
    log_output: Option<String>,
    /// Path to the server configuration file (etcd's YAML format); other flags and environment
    /// variables are then ignored.
    #[arg(long)]
    config_file: Option<PathBuf>,
}

/// The validated configuration of one server process.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub listen_client: Vec<Listen>,
    pub listen_peer: Vec<Listen>,
    /// `--listen-metrics-urls`: extra listeners for `/metrics`, `/health` and `/version` only.
    pub listen_metrics: Vec<Listen>,
    /// `--cert-file`, `--key-file`, ...: the client port's TLS (used by `https://` client and
    /// metrics URLs).
    pub client_tls: TlsInfo,
    /// `--auto-tls`: with no certificate given, make a self-signed one.
    pub client_auto_tls: bool,
    /// `--peer-cert-file`, ...: the peer port's TLS, served and dialled.
    pub peer_tls: TlsInfo,
    /// `--peer-auto-tls`.
    pub peer_auto_tls: bool,
    /// `--experimental-initial-corrupt-check`: compare hashes with the peers before serving.
    pub initial_corrupt_check: bool,
    pub initial_cluster_state: String,
    pub log_level: String,
    /// Where log lines go: `stderr`, `stdout` or file paths.
    pub log_outputs: Vec<String>,
    /// Lines to log once logging is up: flags that have no effect, unknown variables.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not an error: --help or --version; print `message` and exit with `code`.
    #[error("{message}")]
    Exit { code: u8, message: String },
    /// A flag etcd's parser would refuse (unknown flag, malformed value): exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    /// The exit code etcd uses for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Exit { code, .. } => *code,
            ConfigError::Usage(_) => 2,
            ConfigError::Invalid(_) => 1,
        }
    }
}

impl Config {
    /// Parses the process arguments (program name first), with the process environment.
    pub fn from_args(args: &[String]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::from_args_and_env(args, &env)
    }

    /// Parses `args` (program name first) with `env` standing for the environment.
    pub fn from_args_and_env(
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let cmd = command();
        let names: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| l != "help" && l != "version")
            .collect();
        let gathered = sources::gather(args, env, &names)?;
        let matches = match cmd.try_get_matches_from(&gathered.args) {
            Ok(m) => m,
            Err(e) => return Err(usage_error(&e)),
        };
        let flags = Flags::from_arg_matches(&matches).map_err(|e| usage_error(&e))?;
        let mut warnings = gathered.warnings;
        warnings.extend(catalogue::judge(&matches).map_err(ConfigError::Invalid)?);
        let mut cfg = flags.validate()?;
        warnings.append(&mut cfg.warnings);
        cfg.warnings = warnings;
        Ok(cfg)
    }
}

/// The parser: cairn's own flags and the catalogued etcd flags it accepts.
fn command() -> clap::Command {
    // Go's flag package lets a flag be given again, the last value winning.
    catalogue::augment(Flags::command()).args_override_self(true)
}

/// A parse error in the words of Go's flag package, which etcd uses (exit code 2).
fn usage_error(e: &clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    // "--snapshot-count <SNAPSHOT_COUNT>" or "--pre-vote[=<PRE_VOTE>]": the flag's name.
    let arg = text(ContextKind::InvalidArg);
    if let Some(word) = arg.as_deref().filter(|a| !a.starts_with('-')) {
        // A stray word, not a flag at all.
        return ConfigError::Invalid(format!(
            "error verifying flags, '{word}' is not a valid flag. See 'cairn --help'."
        ));
    }
    let flag = arg.map(|a| {
        a.trim_start_matches('-')
            .split([' ', '[', '='])
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let message = match (e.kind(), flag) {
        (ErrorKind::DisplayHelp | ErrorKind::DisplayVersion, _) => {
            return ConfigError::Exit {
                code: 0,
                message: e.render().to_string(),
            }
        }
        (ErrorKind::UnknownArgument, Some(flag)) => {
            format!("flag provided but not defined: -{flag}")
        }
        (ErrorKind::ValueValidation | ErrorKind::InvalidValue, Some(flag)) => {
            let value = text(ContextKind::InvalidValue).unwrap_or_default();
            let is_bool = command()
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.as_str()))
                .is_some_and(|a| a.get_num_args() == Some(clap::builder::ValueRange::new(0..=1)));
            if is_bool {
                format!("invalid boolean value {value:?} for -{flag}: parse error")
            } else {
                // Go says "parse error" for a number or duration; a word list says what it takes.
                let why = std::error::Error::source(e)
                    .map(|s| s.to_string())
                    .filter(|s| s.starts_with("valid values"))
                    .unwrap_or_else(|| "parse error".into());
                format!("invalid value {value:?} for flag -{flag}: {why}")
            }
        }
        _ => {
            let rendered = e.render().to_string();
            rendered
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string()
        }
    };
    ConfigError::Usage(message)
}

/// Go's `strconv.ParseBool`, which boolean flags use; Go's flag package says "parse error".
pub fn go_bool(s: &str) -> Result<bool, String> {
    crate::gofmt::parse_bool(s).map_err(|_| "parse error".into())
}

/// Go's `time.ParseDuration`, as duration flags take it (`300ms`, `1.5h`, `2h45m`, `0`). No
/// flag takes a negative duration.
pub fn go_duration(s: &str) -> Result<Duration, String> {
    match crate::gofmt::parse_duration(s) {
        Ok(nanos) if (0..=i128::from(u64::MAX)).contains(&nanos) => {
            Ok(Duration::from_nanos(nanos as u64))
        }
        _ => Err("parse error".into()),
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
        if self.logger != "capnslog" && self.logger != "zap" {
            return Err(bad(format!("unknown logger option {:?}", self.logger)));
        }
        let log_outputs: Vec<String> = self
            .log_output
            .as_deref()
            .unwrap_or(&self.log_outputs)
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| if o == "default" { "stderr" } else { o }.to_string())
            .collect();
        if log_outputs.is_empty() {
            return Err(bad("--log-outputs must name at least one output".into()));
        }
        let auto_compaction = crate::server::compactor::Retention::parse(
            &self.auto_compaction_mode,
            &self.auto_compaction_retention,
        )
        .map_err(bad)?;
        let mut warnings = Vec::new();
        let cipher_suites: Vec<String> = self
            .cipher_suites
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        for name in
            crate::tls::check_cipher_suites(&cipher_suites).map_err(|e| bad(e.to_string()))?
        {
            warnings.push(format!(
                "--cipher-suites: {name} is not offered (cairn's TLS has no CBC, RC4, 3DES or RSA key exchange suites)"
            ));
        }
        let path = |s: &str| Some(PathBuf::from(s)).filter(|_| !s.is_empty());
        let client_tls = TlsInfo {
            cert_file: path(&self.cert_file),
            key_file: path(&self.key_file),
            trusted_ca_file: path(&self.trusted_ca_file),
            client_cert_auth: self.client_cert_auth,
            crl_file: path(&self.client_crl_file),
            cipher_suites: cipher_suites.clone(),
            self_signed: false,
            allowed_cn: None,
            allowed_hostname: Some(self.client_cert_allowed_hostname.clone())
                .filter(|h| !h.is_empty()),
        };
        let peer_tls = TlsInfo {
            cert_file: path(&self.peer_cert_file),
            key_file: path(&self.peer_key_file),
            trusted_ca_file: path(&self.peer_trusted_ca_file),
            client_cert_auth: self.peer_client_cert_auth,
            crl_file: path(&self.peer_crl_file),
            cipher_suites,
            self_signed: false,
            allowed_cn: Some(self.peer_cert_allowed_cn.clone()).filter(|c| !c.is_empty()),
            allowed_hostname: Some(self.peer_cert_allowed_hostname.clone())
                .filter(|h| !h.is_empty()),
        };
        for (auto, tls, side) in [
            (self.auto_tls, &client_tls, "client"),
            (self.peer_auto_tls, &peer_tls, "peer"),
        ] {
            if auto && !tls.is_empty() {
                warnings.push(format!("ignoring {side} auto TLS since certs given"));
            }
        }
        let client_has_tls = !client_tls.is_empty() || self.auto_tls;
        let peer_has_tls = !peer_tls.is_empty() || self.peer_auto_tls;
        let listen_client = parse_listen_urls("--listen-client-urls", &self.listen_client_urls)?;
        let listen_peer = parse_listen_urls("--listen-peer-urls", &self.listen_peer_urls)?;
        let listen_metrics = if self.listen_metrics_urls.trim().is_empty() {
            Vec::new()
        } else {
            parse_listen_urls("--listen-metrics-urls", &self.listen_metrics_urls)?
        };
        for (list, tls, has, side, auth_flag) in [
            (
                &listen_client,
                &client_tls,
                client_has_tls,
                "client",
                "--client-cert-auth",
            ),
            (
                &listen_peer,
                &peer_tls,
                peer_has_tls,
                "peer",
                "--peer-client-cert-auth",
            ),
        ] {
            for l in list.iter() {
                if l.plain && !tls.is_empty() {
                    warnings.push(format!(
                        "scheme is HTTP while key and cert files are present; ignoring key and cert files ({side}-url http://{})",
                        l.host
                    ));
                }
                if l.plain && tls.client_cert_auth {
                    warnings.push(format!(
                        "scheme is HTTP while {auth_flag} is enabled; ignoring client cert auth for this URL ({side}-url http://{})",
                        l.host
                    ));
                }
                if l.tls && !has && side == "client" {
                    return Err(bad(format!(
                        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://{} with HTTPS scheme",
                        l.host
                    )));
                }
            }
        }
        for (list, has) in [
            (&listen_peer, peer_has_tls),
            (&listen_metrics, client_has_tls),
        ] {
            if let Some(l) = list.iter().find(|l| l.tls && !has) {
                return Err(bad(format!(
                    "cannot listen on TLS for {}: KeyFile and CertFile are not presented",
                    l.addr
                )));
            }
        }
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
                wal_dir: Some(PathBuf::from(&self.wal_dir)).filter(|_| !self.wal_dir.is_empty()),
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
                auto_compaction,
                join_existing: self.initial_cluster_state == "existing",
            },
            listen_client,
            listen_peer,
            listen_metrics,
            client_tls,
            client_auto_tls: self.auto_tls,
            peer_tls,
            peer_auto_tls: self.peer_auto_tls,
            initial_corrupt_check: self.experimental_initial_corrupt_check,
            initial_cluster_state: self.initial_cluster_state,
            log_level: if self.debug {
                "debug".to_string()
            } else {
                self.log_level
            },
            log_outputs,
            warnings,
        })
    }
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

/// One listening address and what it serves: `http://` and `https://` URLs naming the same
/// address share one listener, as in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// `host:port` as the first URL for this address wrote it (a self-signed certificate's
    /// names come from it).
    pub host: String,
    pub plain: bool,
    pub tls: bool,
}

fn parse_listen_urls(flag: &str, list: &str) -> Result<Vec<Listen>, ConfigError> {
    let mut out: Vec<Listen> = Vec::new();
    for raw in parse_urls(flag, list)? {
        let (host, port) = split_url(&raw).map_err(ConfigError::Invalid)?;
        let shown = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
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
        let tls = raw.starts_with("https://");
        match out.iter_mut().find(|l| l.addr == addr) {
            Some(l) => {
                l.tls |= tls;
                l.plain |= !tls;
            }
            None => out.push(Listen {
                addr,
                host: shown,
                plain: !tls,
                tls,
            }),
        }
    }
    Ok(out)
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

/// Sets up tracing at the level of --log-level (overridable with RUST_LOG), writing to every
/// output of --log-outputs, then logs the configuration's warnings. Colours only when the one
/// output is a terminal.
pub fn init_tracing(cfg: &Config) -> Result<(), String> {
    use std::io::IsTerminal;
    let level = match cfg.log_level.as_str() {
        "panic" | "fatal" => "error",
        l => l,
    };
    let mut outputs = Vec::new();
    for o in &cfg.log_outputs {
        outputs.push(match o.as_str() {
            "stderr" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            path => LogOutput::File(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        format!(
                            "cannot open log output {path}: {}",
                            crate::gofmt::os_error_reason(&e)
                        )
                    })?,
            )),
        });
    }
    let ansi = match outputs.as_slice() {
        [LogOutput::Stderr] => std::io::stderr().is_terminal(),
        [LogOutput::Stdout] => std::io::stdout().is_terminal(),
        _ => false,
    };
    let outputs = std::sync::Arc::new(outputs);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},raft=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(move || LogTee(outputs.clone()))
        .try_init();
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(())
}

enum LogOutput {
    Stderr,
    Stdout,
    File(std::sync::Mutex<std::fs::File>),
}

/// Writes each log line to every output.
struct LogTee(std::sync::Arc<Vec<LogOutput>>);

impl std::io::Write for LogTee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for o in self.0.iter() {
            match o {
                LogOutput::Stderr => std::io::stderr().write_all(buf)?,
                LogOutput::Stdout => std::io::stdout().write_all(buf)?,
                LogOutput::File(f) => f.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf)?,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for o in self.0.iter() {
            match o {
                LogOutput::Stderr => std::io::stderr().flush()?,
                LogOutput::Stdout => std::io::stdout().flush()?,
                LogOutput::File(f) => f.lock().unwrap_or_else(|p| p.into_inner()).flush()?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Parses with an empty environment, so the tests do not depend on the caller's.
    fn parse(a: &[String]) -> Result<Config, ConfigError> {
        Config::from_args_and_env(a, &[])
    }

    fn parse_env(a: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_args_and_env(&args(a), &env)
    }

    fn message(r: Result<Config, ConfigError>) -> (u8, String) {
        match r {
            Ok(cfg) => panic!("expected an error, got {cfg:?}"),
            Err(e) => (e.exit_code(), e.to_string()),
        }
    }

    /// Every flag `etcd --help` prints for 3.4.23, with the hidden ones its parser also takes.
    const ETCD_3_4_FLAGS: &[&str] = &[
        "name",
        "data-dir",
        "wal-dir",
        "snapshot-count",
        "heartbeat-interval",
        "election-timeout",
        "initial-election-tick-advance",
        "listen-peer-urls",
        "listen-client-urls",
        "max-snapshots",
        "max-wals",
        "quota-backend-bytes",
        "backend-batch-interval",
        "backend-batch-limit",
        "max-txn-ops",
        "max-request-bytes",
        "max-concurrent-streams",
        "grpc-keepalive-min-time",
        "grpc-keepalive-interval",
        "grpc-keepalive-timeout",
        "initial-advertise-peer-urls",
        "initial-cluster",
        "initial-cluster-state",
        "initial-cluster-token",
        "advertise-client-urls",
        "discovery",
        "discovery-fallback",
        "discovery-proxy",
        "discovery-srv",
        "discovery-srv-name",
        "strict-reconfig-check",
        "pre-vote",
        "auto-compaction-retention",
        "auto-compaction-mode",
        "enable-v2",
        "cert-file",
        "key-file",
        "client-cert-auth",
        "client-crl-file",
        "client-cert-allowed-hostname",
        "trusted-ca-file",
        "auto-tls",
        "peer-cert-file",
        "peer-key-file",
        "peer-client-cert-auth",
        "peer-trusted-ca-file",
        "peer-cert-allowed-cn",
        "peer-cert-allowed-hostname",
        "peer-auto-tls",
        "peer-crl-file",
        "cipher-suites",
        "cors",
        "host-whitelist",
        "auth-token",
        "bcrypt-cost",
        "auth-token-ttl",
        "enable-pprof",
        "metrics",
        "listen-metrics-urls",
        "logger",
        "log-outputs",
        "log-level",
        "proxy",
        "proxy-failure-wait",
        "proxy-refresh-interval",
        "proxy-dial-timeout",
        "proxy-write-timeout",
        "proxy-read-timeout",
        "experimental-initial-corrupt-check",
        "experimental-corrupt-check-time",
        "experimental-enable-v2v3",
        "experimental-backend-bbolt-freelist-type",
        "experimental-enable-lease-checkpoint",
        "experimental-compaction-batch-limit",
        "experimental-peer-skip-client-san-verification",
        "experimental-watch-progress-notify-interval",
        "experimental-warning-apply-duration",
        "force-new-cluster",
        "debug",
        "log-package-levels",
        "config-file",
        "enable-grpc-gateway",
        "experimental-enable-lease-checkpoint-persist",
        "log-output",
        "unsafe-no-fsync",
        "experimental-snapshot-catchup-entries",
    ];

    #[test]
    fn every_etcd_flag_is_known_and_its_default_parses_without_a_warning() {
        let known: Vec<String> = command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        let missing: Vec<&&str> = ETCD_3_4_FLAGS
            .iter()
            .filter(|f| !known.iter().any(|k| k == *f))
            .collect();
        assert!(
            missing.is_empty(),
            "flags etcd takes that cairn refuses: {missing:?}"
        );
        for e in catalogue::ENTRIES {
            if matches!(e.effect, catalogue::Effect::Warn { quiet, .. } if !quiet.contains(&e.default) && !quiet.is_empty())
            {
                // etcd's default is what cairn cannot do (pre-vote off): said when asked for.
                continue;
            }
            let flag = format!("--{}={}", e.name, e.default);
            let cfg = parse(&args(&[&flag])).unwrap_or_else(|err| panic!("{flag}: {err}"));
            assert!(cfg.warnings.is_empty(), "{flag}: {:?}", cfg.warnings);
        }
    }

    #[test]
    fn a_flag_with_no_effect_gets_one_warning_line_naming_it() {
        let cfg = parse(&args(&[
            "--experimental-enable-lease-checkpoint",
            "--max-wals=9",
            "--pre-vote=true",
            "--enable-v2=false",
        ]))
        .unwrap();
        assert_eq!(cfg.warnings.len(), 2, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].starts_with("--max-wals=9 has no effect in cairn: "));
        assert!(cfg.warnings[1]
            .starts_with("--experimental-enable-lease-checkpoint=true has no effect in cairn: "));
        // pre-vote off is the one cairn cannot honour.
        let cfg = parse(&args(&["--pre-vote=false"])).unwrap();
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    }

    #[test]
    fn flags_that_must_not_be_ignored_stop_the_start_and_tls_flags_are_taken() {
        for bad in [
            vec!["--discovery", "https://discovery.etcd.io/x"],
            vec!["--proxy", "on"],
            vec!["--force-new-cluster"],
        ] {
            let (code, m) = message(parse(&args(&bad)));
            assert_eq!(code, 1, "{bad:?}");
            assert!(m.starts_with(bad[0]), "{bad:?}: {m}");
        }
        // The defaults, given explicitly, are fine.
        parse(&args(&[
            "--client-cert-auth=false",
            "--proxy=off",
            "--force-new-cluster=false",
        ]))
        .unwrap();
        // TLS itself is taken: https URLs with their certificates (whether the files exist and
        // match is checked at start, tests/tls.rs).
        let cfg = parse(&args(&[
            "--listen-client-urls=https://127.0.0.1:2379",
            "--advertise-client-urls=https://127.0.0.1:2379",
            "--cert-file=/c.pem",
            "--key-file=/k.pem",
            "--peer-auto-tls",
        ]))
        .unwrap();
        assert!(cfg.listen_client.iter().all(|l| l.tls && !l.plain));
        assert_eq!(
            cfg.client_tls.cert_file.as_deref(),
            Some(Path::new("/c.pem"))
        );
        assert!(cfg.peer_auto_tls);
        let cfg = parse(&args(&[
            "--peer-cert-allowed-cn=member",
            "--client-cert-allowed-hostname=client.example",
        ]))
        .unwrap();
        assert_eq!(cfg.peer_tls.allowed_cn.as_deref(), Some("member"));
        assert_eq!(cfg.peer_tls.allowed_hostname, None);
        assert_eq!(
            cfg.client_tls.allowed_hostname.as_deref(),
            Some("client.example")
        );
    }

    #[test]
    fn malformed_values_get_gos_words_and_exit_code_2() {
        for (bad, want) in [
            (
                vec!["--pre-vote=x"],
                "invalid boolean value \"x\" for -pre-vote: parse error",
            ),
            (
                vec!["--snapshot-count=abc"],
                "invalid value \"abc\" for flag -snapshot-count: parse error",
            ),
            (
                vec!["--grpc-keepalive-interval=5x"],
                "invalid value \"5x\" for flag -grpc-keepalive-interval: parse error",
            ),
            (
                vec!["--max-wals=-1"],
                "invalid value \"-1\" for flag -max-wals: parse error",
            ),
            (vec!["--bogus"], "flag provided but not defined: -bogus"),
            (vec!["-bogus"], "flag provided but not defined: -bogus"),
        ] {
            assert_eq!(
                message(parse(&args(&bad))),
                (2, want.to_string()),
                "{bad:?}"
            );
        }
        assert_eq!(
            message(parse(&args(&["stray"]))),
            (
                1,
                "error verifying flags, 'stray' is not a valid flag. See 'cairn --help'.".into()
            )
        );
    }

    #[test]
    fn etcd_and_cairn_environment_variables_set_flags_and_conflicts_are_refused() {
        let cfg = parse_env(
            &[],
            &[
                ("ETCD_NAME", "e1"),
                ("ETCD_SNAPSHOT_COUNT", "7"),
                ("ETCD_DEBUG", "true"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.server.name, "e1");
        assert_eq!(cfg.server.snapshot_count, 7);
        assert_eq!(cfg.log_level, "debug");
        // CAIRN_ wins over ETCD_ for the same flag.
        let cfg = parse_env(&[], &[("ETCD_NAME", "e1"), ("CAIRN_NAME", "c1")]).unwrap();
        assert_eq!(cfg.server.name, "c1");
        // A flag on the command line and in the environment is etcd's fatal conflict.
        let (code, m) = message(parse_env(&["--name", "x"], &[("ETCD_NAME", "e1")]));
        assert_eq!(code, 1);
        assert!(
            m.starts_with("conflicting environment variable \"ETCD_NAME\" is shadowed"),
            "{m}"
        );
        // An empty variable is unset; an unknown one is a warning; a bad value is refused.
        let cfg = parse_env(
            &["--name", "x"],
            &[("ETCD_NAME", ""), ("ETCD_NO_SUCH", "1")],
        )
        .unwrap();
        assert_eq!(
            cfg.warnings,
            vec!["unrecognized environment variable ETCD_NO_SUCH=1"]
        );
        let (code, m) = message(parse_env(&[], &[("ETCD_SNAPSHOT_COUNT", "many")]));
        assert_eq!(
            (code, m.as_str()),
            (
                2,
                "invalid value \"many\" for flag -snapshot-count: parse error"
            )
        );
    }

    #[test]
    fn a_config_file_in_etcds_yaml_replaces_flags_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.conf.yml");
        std::fs::write(
            &path,
            "# etcd's sample layout\n\
             name: 'infra1'\n\
             data-dir: /var/lib/infra1\n\
             wal-dir:\n\
             snapshot-count: 10000\n\
             heartbeat-interval: 100\n\
             election-timeout: 1000\n\
             listen-client-urls: http://127.0.0.1:23790\n\
             advertise-client-urls: http://127.0.0.1:23790\n\
             initial-cluster-state: 'new'\n\
             strict-reconfig-check: false\n\
             grpc-keepalive-timeout: 20000000000\n\
             log-outputs: [stdout]\n\
             client-transport-security:\n\
             \x20 cert-file:\n\
             \x20 client-cert-auth: false\n\
             peer-transport-security:\n\
             \x20 auto-tls: false\n\
             some-future-key: 1\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let cfg = parse_env(
            &["--config-file", file, "--name", "ignored"],
            &[("ETCD_SNAPSHOT_COUNT", "5")],
        )
        .unwrap();
        assert_eq!(cfg.server.name, "infra1");
        assert_eq!(cfg.server.data_dir, PathBuf::from("/var/lib/infra1"));
        assert_eq!(cfg.server.snapshot_count, 10_000);
        assert!(!cfg.server.strict_reconfig_check);
        let addrs: Vec<SocketAddr> = cfg.listen_client.iter().map(|l| l.addr).collect();
        assert_eq!(
            addrs,
            vec!["127.0.0.1:23790".parse::<SocketAddr>().unwrap()]
        );
        assert!(cfg.listen_client.iter().all(|l| l.plain && !l.tls));
        assert_eq!(cfg.log_outputs, vec!["stdout"]);
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].ends_with("ignored unknown key some-future-key"));
        // From the environment too; TLS settings in the file land where the flags' do.
        std::fs::write(
            &path,
            "client-transport-security:\n  cert-file: /c.pem\n  key-file: /k.pem\n",
        )
        .unwrap();
        let cfg = parse_env(&[], &[("ETCD_CONFIG_FILE", file)]).unwrap();
        assert_eq!(
            cfg.client_tls.key_file.as_deref(),
            Some(Path::new("/k.pem"))
        );
        std::fs::write(&path, "peer-transport-security:\n  allowed-cn: member\n").unwrap();
        let cfg = parse_env(&[], &[("ETCD_CONFIG_FILE", file)]).unwrap();
        assert_eq!(cfg.peer_tls.allowed_cn.as_deref(), Some("member"));
    }

    #[test]
    fn auto_compaction_takes_etcds_mode_and_retention() {
        use crate::server::compactor::Retention;
        let get = |a: &[&str]| parse(&args(a)).unwrap().server.auto_compaction;
        assert_eq!(get(&[]), None);
        assert_eq!(
            get(&["--auto-compaction-retention=1"]),
            Some(Retention::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            get(&[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=1000"
            ]),
            Some(Retention::Revision(1000))
        );
        let (code, m) = message(parse(&args(&["--auto-compaction-retention=soon"])));
        assert_eq!(code, 1);
        assert!(m.contains("error parsing CompactionRetention"), "{m}");
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(go_duration("300ms").unwrap(), ms(300));
        assert_eq!(go_duration("1.5h").unwrap(), ms(5_400_000));
        assert_eq!(go_duration("2h45m").unwrap(), ms(9_900_000));
        assert_eq!(go_duration("20000000000ns").unwrap(), ms(20_000));
        for bad in ["", "5", "5x", "ms", "-1s", "1s2"] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("cairn")
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn default_member_has_etcds_well_known_ids() {
        let cfg = parse(&args(&[])).unwrap();
        assert_eq!(format!("{:x}", cfg.server.member_id), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cfg.server.cluster_id), "cdf818194e3a8c32");
        assert_eq!(cfg.server.data_dir, PathBuf::from("default.cairn"));
        let addrs: Vec<SocketAddr> = cfg.listen_client.iter().map(|l| l.addr).collect();
        assert_eq!(addrs, vec!["127.0.0.1:2379".parse::<SocketAddr>().unwrap()]);
        assert!(cfg.listen_client.iter().all(|l| l.plain && !l.tls));
        assert_eq!(cfg.server.max_request_bytes, 1_572_864);
        assert_eq!(cfg.server.max_txn_ops, 128);
    }

    #[test]
    fn a_named_member_without_initial_cluster_bootstraps_alone_as_etcd_does() {
        let cfg = parse(&args(&["--name", "x"])).unwrap();
        assert_eq!(cfg.server.initial_cluster.len(), 1);
        assert_eq!(cfg.server.initial_cluster[0].name, "x");
        assert_eq!(cfg.server.data_dir, PathBuf::from("x.cairn"));
    }

    #[test]
    fn strict_reconfig_check_is_a_go_style_boolean_that_defaults_on() {
        let parse = |a: &[&str]| parse(&args(a)).unwrap().server.strict_reconfig_check;
        assert!(parse(&[]));
        assert!(parse(&["--strict-reconfig-check"]));
        assert!(parse(&["--strict-reconfig-check=true"]));
        assert!(!parse(&["--strict-reconfig-check=false"]));
        assert!(!parse(&["-strict-reconfig-check=false"]));
    }

    #[test]
    fn single_dash_flags_work_like_go() {
        let cfg = parse(&args(&["-name", "n1", "-data-dir", "/tmp/x"])).unwrap();
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
            match parse(&args(&bad)) {
                Err(ConfigError::Invalid(m) | ConfigError::Usage(m)) => {
                    assert!(!m.contains('\n'), "{bad:?}: {m}")
                }
                other => panic!("{bad:?}: expected an error, got {other:?}"),
            }
        }
    }

    /// Issue 8, item 11: a request larger than a WAL record stopped the node at append.
    #[test]
    fn max_request_bytes_above_the_wal_record_limit_is_refused_at_start() {
        let max = MAX_REQUEST_BYTES_MAX.to_string();
        let cfg = parse(&args(&["--max-request-bytes", &max])).unwrap();
        assert_eq!(cfg.server.max_request_bytes, MAX_REQUEST_BYTES_MAX);
        let over = (MAX_REQUEST_BYTES_MAX + 1).to_string();
        match parse(&args(&["--max-request-bytes", &over])) {
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
