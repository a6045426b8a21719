//! The commands: `get`, `put`, `del`, `txn`, `compaction`, `endpoint status|health|hashkv`,
//! `version`. (`member` and `move-leader`, `lease` and `watch` have modules of their own.)
//!
//! Each follows its etcdctl counterpart step by step, because the order of the steps is visible:
//! arguments are validated first (so a usage error never waits on the network), then the client
//! configuration is read (environment variables, credentials, output format), then the client
//! authenticates if `--user` was given, then the request is sent, and only then are
//! format-specific restrictions such as `--print-value-only` checked.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use prost::Message;
use tonic::transport::Channel;

use crate::proto::etcdserverpb::auth_client::AuthClient;
use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::{
    request_op, AuthenticateRequest, CompactionRequest, DefragmentRequest, DeleteRangeRequest,
    HashKvRequest, MemberListRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    StatusRequest, TxnRequest,
};

use super::client::{self, CallError, Client, Retry, Security, TargetStyle};
use super::flags::{env_name, EnvNotice, Flags};
use super::printer::{EpHashKv, EpHealth, EpStatus, Format, Printer};
use super::{
    clock, gofmt, ops, txn_parse, Console, Fail, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION,
    EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT,
};
use crate::tls::client::ClientFiles;

/// What every networked command needs, read the way etcdctl's `clientConfigFromCmd` reads it.
#[derive(Clone)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub command_timeout: Duration,
    pub dial_timeout: Duration,
    pub printer: Printer,
    /// `--user` (and `--password`): user name and password.
    pub auth: Option<(String, String)>,
    /// TLS or plaintext, from `--cacert`, `--cert`, `--key` and the `--insecure-*` flags.
    pub security: Security,
}

impl Config {
    pub fn deadline(&self) -> Instant {
        clock::now() + self.command_timeout
    }
}

fn nanos_to_duration(nanos: i128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// etcdctl's `clientConfigFromCmd` + `mustClient`: applies `ETCDCTL_*` variables to the inherited
/// flags (warning about unknown ones), reads credentials, picks the printer and checks the
/// endpoint list and the TLS files.
pub fn client_config(
    flags: &mut Flags,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<Config, Fail> {
    for notice in flags.apply_env(inherited, env) {
        let (secs, nanos) = clock::unix_now();
        let ts = gofmt::capnslog_time(secs, nanos, clock::local_offset(secs));
        match notice {
            EnvNotice::Unrecognized(kv) => {
                let _ = writeln!(
                    io.err,
                    "{ts} W | pkg/flags: unrecognized environment variable {kv}"
                );
            }
            EnvNotice::Shadowed(key) => {
                let _ = writeln!(
                    io.err,
                    "{ts} C | pkg/flags: conflicting environment variable \"{key}\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
                );
                return Err(Fail::Exit(EXIT_ERROR));
            }
        }
    }
    if flags.bool("debug") {
        // etcdctl lists its global flags as environment variables (and then turns on gRPC's
        // debug logging, which has no counterpart here).
        for name in inherited {
            if flags.has(name) {
                let _ = writeln!(io.err, "{}={}", env_name(name), flags.display(name));
            }
        }
    }
    if !flags.str("discovery-srv").is_empty() {
        return Err(Fail::Error(
            EXIT_ERROR,
            "cairnctl does not support DNS discovery (--discovery-srv) yet".into(),
        ));
    }
    for name in ["cert", "key", "cacert"] {
        if flags.changed(name) && flags.str(name).is_empty() {
            return Err(Fail::Error(
                EXIT_BAD_ARGS,
                format!("empty string is passed to --{name} option"),
            ));
        }
    }
    let auth = auth_config(flags, io)?;
    let format = Format::parse(&flags.str("write-out"))
        .ok_or_else(|| Fail::Error(EXIT_BAD_FEATURE, "unsupported output format".into()))?;
    // etcdctl's secureCfgFromCmd and newClientCfg: any TLS file, or --insecure-transport=false,
    // makes a TLS configuration; --insecure-skip-tls-verify applies only to it.
    let path = |name: &str| {
        Some(flags.str(name))
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    let files = ClientFiles {
        ca: path("cacert"),
        cert: path("cert"),
        key: path("key"),
        skip_verify: flags.bool("insecure-skip-tls-verify"),
    };
    let any_file = files.ca.is_some() || files.cert.is_some() || files.key.is_some();
    let security = if any_file || !flags.bool("insecure-transport") {
        Security::tls(&files).map_err(|e| Fail::Error(EXIT_BAD_ARGS, e.to_string()))?
    } else {
        Security::plain()
    };
    let endpoints = flags.slice("endpoints");
    if endpoints.is_empty() {
        return Err(Fail::Error(
            EXIT_BAD_CONNECTION,
            "etcdclient: no available endpoints".into(),
        ));
    }
    Ok(Config {
        endpoints,
        command_timeout: nanos_to_duration(flags.duration("command-timeout")),
        dial_timeout: nanos_to_duration(flags.duration("dial-timeout")),
        printer: Printer {
            format,
            hex: flags.bool("hex"),
            value_only: false,
        },
        auth,
        security,
    })
}

/// etcdctl's `authCfgFromCmd`: `--user name:password`, `--user name --password p`, or
/// `--user name` and a password prompt.
fn auth_config(flags: &Flags, io: &mut Console<'_>) -> Result<Option<(String, String)>, Fail> {
    let user = flags.str("user");
    let password = flags.str("password");
    if user.is_empty() {
        return Ok(None);
    }
    if !password.is_empty() {
        return Ok(Some((user, password)));
    }
    if let Some((name, pass)) = user.split_once(':') {
        return Ok(Some((name.to_string(), pass.to_string())));
    }
    Ok(Some((user, ask_password(io)?)))
}

/// speakeasy's `Ask("Password: ")`: the prompt on stdout, terminal echo off (with `stty`, as
/// speakeasy does) while a line is read from stdin, then a newline.
fn ask_password(io: &mut Console<'_>) -> Result<String, Fail> {
    let _ = write!(io.out, "Password: ");
    let _ = io.out.flush();
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty").arg(arg).status();
    };
    if io.real {
        stty("-echo");
    }
    let mut line = Vec::new();
    let read = io.input.read_until(b'\n', &mut line);
    if io.real {
        stty("echo");
    }
    match read {
        Ok(_) => {
            let _ = writeln!(io.out);
            if line.ends_with(b"\n") {
                line.pop();
            }
            if line.ends_with(b"\r") {
                line.pop();
            }
            Ok(String::from_utf8_lossy(&line).into_owned())
        }
        Err(e) => Err(Fail::Error(EXIT_ERROR, e.to_string())),
    }
}

/// clientv3's `getToken`: authenticates within the dial timeout. A server without auth is not
/// an error (the client then sends no token).
pub(super) async fn authenticate(
    c: &mut Client,
    log: &mut dyn Write,
    cfg: &Config,
) -> Result<(), CallError> {
    let Some((name, password)) = cfg.auth.clone() else {
        return Ok(());
    };
    let req = AuthenticateRequest { name, password };
    let deadline = (!cfg.dial_timeout.is_zero()).then(|| clock::now() + cfg.dial_timeout);
    let size = req.encoded_len();
    let result = c
        .unary(log, deadline, Retry::NonRepeatable, size, |a| {
            let req = req.clone();
            async move {
                let mut auth = AuthClient::new(a.channel.clone())
                    .max_decoding_message_size(client::recv_limit());
                auth.authenticate(a.request(req))
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await;
    match result {
        Ok(resp) => {
            c.set_token(Some(resp.token));
            Ok(())
        }
        Err(e) if e.message == "etcdserver: authentication is not enabled" => Ok(()),
        Err(e) => Err(e),
    }
}

/// etcdctl's `mustClientFromCmd`: a client over all endpoints, authenticated; a failure to
/// authenticate is a bad connection (exit 2).
pub(super) async fn open_client(cfg: &Config, log: &mut dyn Write) -> Result<Client, Fail> {
    let mut c = Client::new(cfg.endpoints.clone(), TargetStyle::Balancer, &cfg.security);
    authenticate(&mut c, log, cfg)
        .await
        .map_err(|e| Fail::Error(EXIT_BAD_CONNECTION, e.etcdctl_text()))?;
    Ok(c)
}

/// One unary call with clientv3's retries: `rpc` makes the call on a channel with a request
/// that already carries the metadata and the time left.
pub(super) async fn call<Req, Resp, F, Fut>(
    c: &mut Client,
    log: &mut dyn Write,
    deadline: Option<Instant>,
    retry: Retry,
    req: &Req,
    rpc: F,
) -> Result<Resp, CallError>
where
    Req: Message + Clone,
    F: Fn(Channel, tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let size = req.encoded_len();
    c.unary(log, deadline, retry, size, |a| {
        let fut = rpc(a.channel.clone(), a.request(req.clone()));
        async move { fut.await.map(tonic::Response::into_inner) }
    })
    .await
}

pub(super) fn failed(e: CallError) -> Fail {
    Fail::Error(EXIT_ERROR, e.etcdctl_text())
}

async fn range(
    c: &mut Client,
    log: &mut dyn Write,
    deadline: Option<Instant>,
    req: RangeRequest,
) -> Result<RangeResponse, CallError> {
    let size = req.encoded_len();
    c.unary(log, deadline, Retry::Repeatable, size, |a| {
        let req = req.clone();
        async move {
            let mut kv =
                KvClient::new(a.channel.clone()).max_decoding_message_size(client::recv_limit());
            kv.range(a.request(req))
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
}

pub async fn get(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let req = ops::range_request(&flags, &args)?;
    let mut cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let resp = range(&mut c, io.err, Some(cfg.deadline()), req)
        .await
        .map_err(failed)?;
    if flags.bool("count-only") && cfg.printer.format != Format::Fields {
        return Err(Fail::Error(
            EXIT_BAD_ARGS,
            "--count-only is only for `--write-out=fields`".into(),
        ));
    }
    if flags.bool("print-value-only") {
        if cfg.printer.format != Format::Simple {
            return Err(Fail::Error(
                EXIT_BAD_ARGS,
                "print-value-only is only for `--write-out=simple`".into(),
            ));
        }
        cfg.printer.value_only = true;
    }
    cfg.printer.get(io.out, &resp)
}

pub async fn put(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let input = &mut *io.input;
    let req = ops::put_request(&flags, &args, &mut || {
        let mut buf = Vec::new();
        input.read_to_end(&mut buf).ok().map(|_| buf)
    })?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let size = req.encoded_len();
    let resp = c
        .unary(
            io.err,
            Some(cfg.deadline()),
            Retry::NonRepeatable,
            size,
            |a| {
                let req: PutRequest = req.clone();
                async move {
                    let mut kv = KvClient::new(a.channel.clone())
                        .max_decoding_message_size(client::recv_limit());
                    kv.put(a.request(req))
                        .await
                        .map(tonic::Response::into_inner)
                }
            },
        )
        .await
        .map_err(failed)?;
    cfg.printer.put(io.out, &resp)
}

pub async fn del(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let req = ops::delete_request(&flags, &args)?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let size = req.encoded_len();
    let resp = c
        .unary(
            io.err,
            Some(cfg.deadline()),
            Retry::NonRepeatable,
            size,
            |a| {
                let req: DeleteRangeRequest = req.clone();
                async move {
                    let mut kv = KvClient::new(a.channel.clone())
                        .max_decoding_message_size(client::recv_limit());
                    kv.delete_range(a.request(req))
                        .await
                        .map(tonic::Response::into_inner)
                }
            },
        )
        .await
        .map_err(failed)?;
    cfg.printer.del(io.out, &resp)
}

/// One line of `txn` input, as Go's `bufio.Reader.ReadString('\n')` returns it: input that ends
/// without a newline is an `EOF` error even when the line has text.
fn read_line(input: &mut dyn BufRead) -> Result<String, Fail> {
    let mut buf = Vec::new();
    match input.read_until(b'\n', &mut buf) {
        Ok(_) if buf.ends_with(b"\n") => Ok(String::from_utf8_lossy(&buf).into_owned()),
        Ok(_) => Err(Fail::Error(EXIT_INVALID_INPUT, "EOF".into())),
        Err(e) => Err(Fail::Error(EXIT_INVALID_INPUT, e.to_string())),
    }
}

fn prompt(io: &mut Console<'_>, interactive: bool, text: &str) {
    if interactive {
        let _ = writeln!(io.out, "{text}");
        let _ = io.out.flush();
    }
}

fn read_ops(io: &mut Console<'_>) -> Result<Vec<RequestOp>, Fail> {
    let mut ops = Vec::new();
    loop {
        let line = read_line(io.input)?;
        let line = gofmt::trim_space(&line);
        if line.is_empty() {
            return Ok(ops);
        }
        ops.push(txn_parse::parse_request(line, io.err)?);
    }
}

/// A transaction is safe to retry when nothing in it writes.
fn read_only(ops: &[RequestOp]) -> bool {
    ops.iter().all(|op| match &op.request {
        Some(request_op::Request::RequestRange(_)) | None => true,
        Some(request_op::Request::RequestTxn(t)) => read_only(&t.success) && read_only(&t.failure),
        Some(_) => false,
    })
}

pub async fn txn(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    if !args.is_empty() {
        return Err(Fail::Error(
            EXIT_BAD_ARGS,
            "txn command does not accept argument".into(),
        ));
    }
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let interactive = flags.bool("interactive");
    let mut req = TxnRequest::default();
    prompt(io, interactive, "compares:");
    loop {
        let line = read_line(io.input)?;
        let line = gofmt::trim_space(&line);
        if line.is_empty() {
            break;
        }
        req.compare.push(txn_parse::parse_compare(line)?);
    }
    prompt(io, interactive, "success requests (get, put, del):");
    req.success = read_ops(io)?;
    prompt(io, interactive, "failure requests (get, put, del):");
    req.failure = read_ops(io)?;

    let retry = if read_only(&req.success) && read_only(&req.failure) {
        Retry::Repeatable
    } else {
        Retry::NonRepeatable
    };
    let size = req.encoded_len();
    // etcdctl commits with context.Background(): no --command-timeout for txn.
    let resp = c
        .unary(io.err, None, retry, size, |a| {
            let req = req.clone();
            async move {
                let mut kv = KvClient::new(a.channel.clone())
                    .max_decoding_message_size(client::recv_limit());
                kv.txn(a.request(req))
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
        .map_err(failed)?;
    cfg.printer.txn(io.out, &resp)
}

pub async fn compaction(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    if args.len() != 1 {
        return Err(Fail::Error(
            EXIT_BAD_ARGS,
            "compaction command needs 1 argument".into(),
        ));
    }
    let revision = gofmt::parse_int(&args[0], 10).map_err(|e| Fail::Error(EXIT_ERROR, e))?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let req = CompactionRequest {
        revision,
        physical: flags.bool("physical"),
    };
    let mut c = open_client(&cfg, io.err).await?;
    let size = req.encoded_len();
    c.unary(
        io.err,
        Some(cfg.deadline()),
        Retry::NonRepeatable,
        size,
        |a| async move {
            let mut kv =
                KvClient::new(a.channel.clone()).max_decoding_message_size(client::recv_limit());
            kv.compact(a.request(req))
                .await
                .map(tonic::Response::into_inner)
        },
    )
    .await
    .map_err(failed)?;
    let _ = writeln!(io.out, "compacted revision {revision}");
    Ok(())
}

/// etcdctl's `defrag`: Defragment on each target endpoint through a direct dial, reporting each
/// one; any failure makes the exit status 1. (cairn answers at once: LMDB reuses the pages a
/// compaction frees without a rewrite.) `--data-dir` defragments a stopped etcd's bolt file in
/// etcdctl; cairn's backend is not bolt, so cairnctl refuses it.
pub async fn defrag(
    mut flags: Flags,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let data_dir = flags.str("data-dir").to_string();
    if !data_dir.is_empty() {
        let _ = writeln!(
            io.err,
            "Failed to defragment etcd data[{data_dir}] (cairnctl cannot defragment a data directory offline: cairn's LMDB backend reuses freed pages by itself)"
        );
        return Err(Fail::Exit(EXIT_ERROR));
    }
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut main = open_client(&cfg, io.err).await?;
    let endpoints = target_endpoints(&flags, &cfg, io).await?;
    let mut failures = 0;
    for ep in endpoints {
        let mut c = Client::new(vec![ep.clone()], TargetStyle::Passthrough, &cfg.security);
        let result = match authenticate(&mut main, io.err, &cfg).await {
            Err(e) => Err(e),
            Ok(()) => {
                c.set_token(main.token());
                call(
                    &mut c,
                    io.err,
                    Some(cfg.deadline()),
                    Retry::Repeatable,
                    &DefragmentRequest {},
                    |ch, r| async move {
                        MaintenanceClient::new(ch)
                            .max_decoding_message_size(client::recv_limit())
                            .defragment(r)
                            .await
                    },
                )
                .await
            }
        };
        match result {
            Ok(_) => {
                let _ = writeln!(io.out, "Finished defragmenting etcd member[{ep}]");
            }
            Err(e) => {
                let text = e.etcdctl_text();
                let _ = writeln!(io.err, "Failed to defragment etcd member[{ep}] ({text})");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        return Err(Fail::Exit(EXIT_ERROR));
    }
    Ok(())
}

pub fn version(io: &mut Console<'_>) -> Result<(), Fail> {
    let _ = write!(io.out, "etcdctl version: 3.4.23\nAPI version: 3.4\n");
    Ok(())
}

/// etcdctl's `endpointsFromCluster`: the `--endpoints` list, or with `--cluster` every client URL
/// in the member list (read without authenticating).
pub(super) async fn target_endpoints(
    flags: &Flags,
    cfg: &Config,
    io: &mut Console<'_>,
) -> Result<Vec<String>, Fail> {
    if !flags.bool("cluster") {
        return Ok(cfg.endpoints.clone());
    }
    // Without credentials: etcdctl does not authenticate for the member list.
    let mut c = Client::new(cfg.endpoints.clone(), TargetStyle::Balancer, &cfg.security);
    let req = MemberListRequest::default();
    let resp = c
        .unary(
            io.err,
            Some(cfg.deadline()),
            Retry::Repeatable,
            req.encoded_len(),
            |a| async move {
                let mut cl = ClusterClient::new(a.channel.clone())
                    .max_decoding_message_size(client::recv_limit());
                cl.member_list(a.request(req))
                    .await
                    .map(tonic::Response::into_inner)
            },
        )
        .await
        .map_err(|e| {
            Fail::Error(
                EXIT_ERROR,
                format!(
                    "failed to fetch endpoints from etcd cluster member list: {}",
                    e.etcdctl_text()
                ),
            )
        })?;
    Ok(resp
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

pub async fn endpoint_status(
    mut flags: Flags,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut main = open_client(&cfg, io.err).await?;
    let endpoints = target_endpoints(&flags, &cfg, io).await?;
    let mut list = Vec::new();
    let mut any_failed = false;
    for ep in endpoints {
        // clientv3's Status dials the one endpoint directly, and the dial fetches a fresh token
        // through the main client.
        let mut c = Client::new(vec![ep.clone()], TargetStyle::Passthrough, &cfg.security);
        let result = match authenticate(&mut main, io.err, &cfg).await {
            Err(e) => Err(e),
            Ok(()) => {
                c.set_token(main.token());
                c.unary(
                    io.err,
                    Some(cfg.deadline()),
                    Retry::Repeatable,
                    0,
                    |a| async move {
                        let mut m = MaintenanceClient::new(a.channel.clone())
                            .max_decoding_message_size(client::recv_limit());
                        m.status(a.request(StatusRequest {}))
                            .await
                            .map(tonic::Response::into_inner)
                    },
                )
                .await
            }
        };
        match result {
            Ok(status) => list.push(EpStatus {
                endpoint: ep,
                status,
            }),
            Err(e) => {
                any_failed = true;
                let _ = writeln!(
                    io.err,
                    "Failed to get the status of endpoint {ep} ({})",
                    e.etcdctl_text()
                );
            }
        }
    }
    cfg.printer.endpoint_status(io.out, &list)?;
    if any_failed {
        return Err(Fail::Exit(EXIT_ERROR));
    }
    Ok(())
}

/// etcdctl's `endpoint hashkv`: each endpoint's hash of its key-value history up to `--rev`,
/// read through a direct dial of that endpoint. A failure is reported, the rest are printed, and
/// the last failure ends the command.
pub async fn endpoint_hashkv(
    mut flags: Flags,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut main = open_client(&cfg, io.err).await?;
    let endpoints = target_endpoints(&flags, &cfg, io).await?;
    let req = HashKvRequest {
        revision: flags.int("rev"),
    };
    let mut list = Vec::new();
    let mut last_error = None;
    for ep in endpoints {
        let mut c = Client::new(vec![ep.clone()], TargetStyle::Passthrough, &cfg.security);
        let result = match authenticate(&mut main, io.err, &cfg).await {
            Err(e) => Err(e),
            Ok(()) => {
                c.set_token(main.token());
                call(
                    &mut c,
                    io.err,
                    Some(cfg.deadline()),
                    Retry::Repeatable,
                    &req,
                    |ch, r| async move {
                        MaintenanceClient::new(ch)
                            .max_decoding_message_size(client::recv_limit())
                            .hash_kv(r)
                            .await
                    },
                )
                .await
            }
        };
        match result {
            Ok(hash) => list.push(EpHashKv { endpoint: ep, hash }),
            Err(e) => {
                let text = e.etcdctl_text();
                let _ = writeln!(io.err, "Failed to get the hash of endpoint {ep} ({text})");
                last_error = Some(text);
            }
        }
    }
    cfg.printer.endpoint_hashkv(io.out, &list)?;
    match last_error {
        Some(text) => Err(Fail::Error(EXIT_ERROR, text)),
        None => Ok(()),
    }
}

/// One endpoint's health check: a linearizable get of the key "health". (etcdctl 3.5 also
/// reads the alarm list; 3.4 does not.)
async fn check_health(ep: String, cfg: &Config) -> (EpHealth, Vec<u8>) {
    let mut log = Vec::new();
    let mut c = Client::new(vec![ep.clone()], TargetStyle::Balancer, &cfg.security);
    if let Err(e) = authenticate(&mut c, &mut log, cfg).await {
        let h = EpHealth {
            endpoint: ep,
            health: false,
            took: String::new(),
            error: e.etcdctl_text(),
        };
        return (h, log);
    }
    let start = clock::now();
    let req = RangeRequest {
        key: b"health".to_vec(),
        ..Default::default()
    };
    let result = range(&mut c, &mut log, Some(start + cfg.command_timeout), req).await;
    let took = gofmt::duration_string(clock::now().duration_since(start).as_nanos() as i128);
    let mut h = EpHealth {
        endpoint: ep,
        health: false,
        took,
        error: String::new(),
    };
    match result {
        Ok(_) => h.health = true,
        Err(e) if e.is_permission_denied() => h.health = true,
        Err(e) => h.error = e.etcdctl_text(),
    }
    (h, log)
}

pub async fn endpoint_health(
    mut flags: Flags,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let endpoints = target_endpoints(&flags, &cfg, io).await?;
    let mut checks: FuturesUnordered<_> = endpoints
        .into_iter()
        .map(|ep| check_health(ep, &cfg))
        .collect();
    let mut list = Vec::new();
    while let Some((h, log)) = checks.next().await {
        let _ = io.err.write_all(&log);
        list.push(h);
    }
    cfg.printer.endpoint_health(io.out, io.err, &list)?;
    if list.iter().any(|h| !h.error.is_empty()) {
        return Err(Fail::Error(EXIT_ERROR, "unhealthy cluster".into()));
    }
    Ok(())
}
