//! `watch`: etcdctl's event stream, its interactive mode and its `-- <command>` hook.
//!
//! # Arguments
//!
//! etcdctl reads the watch arguments twice: cobra's positional arguments, and the raw process
//! arguments after the word `watch` (to find a `--` and the command after it). The two are
//! reconciled the way etcdctl's `parseWatchArgs` does, including its use of the
//! `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END` variables and its error texts. A third
//! positional argument is ignored, as in etcdctl: only exactly two make a range.
//!
//! # The stream
//!
//! [`Session`] is a small copy of clientv3's `watchGrpcStream`, because its behaviour is what the
//! user sees. All watches share one gRPC stream (opened with the `hasleader` metadata, as
//! `clientv3.WithRequireLeader` does). Creations go one at a time: the next create request is
//! sent when the server confirms the previous one. Fragmented responses are joined. A response
//! for an unknown watch ID gets a cancel request. When the stream breaks with `Unavailable` or
//! `Internal` it is reopened (with a short backoff) and every watch is created again from the
//! revision after the last event it delivered; any other error, or `etcdserver: no leader`, ends
//! every watch with that error. A watch also ends when the server cancels it: a compaction or a
//! cancel reason is delivered as a canceled response (etcdctl prints `watch was canceled (...)`
//! on stderr); a bare cancel ends it silently. When no watch is left the stream is closed, and
//! the non-interactive command ends with `Error: watch is canceled by the server`, status 5.
//!
//! # Output
//!
//! Each response is printed as etcdctl's `display.Watch` prints a `clientv3.WatchResponse`: in
//! json that struct's own field names (`Header`, `Events`, `CompactRevision`, `Canceled`,
//! `Created`, never left out), in protobuf a `WatchResponse` rebuilt from those fields (so no
//! watch ID or cancel reason), and `table` fails at the first response.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, Write};
use std::time::Duration;

use prost::Message;

use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::{
    watch_request, ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::Event;

use super::client::{self, CallError, Client};
use super::commands::{client_config, open_client};
use super::flags::{Def, Flags, Kind, HELP};
use super::json::{self, Obj};
use super::printer::{fields_header, fields_kv, header_json, kv_json, out, out_bytes, unsupported};
use super::printer::{Format, Printer};
use super::txn_parse::PanicSite;
use super::{
    clock, gofmt, ops, txn_parse, Console, Fail, EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
};

const fn local(name: &'static str, short: Option<char>, kind: Kind, default: &'static str) -> Def {
    Def {
        name,
        short,
        kind,
        default,
    }
}

/// The flags `watch` defines itself (what etcdctl's `NewWatchCommand().Flags()` holds).
const OWN_FLAGS: [Def; 4] = [
    local("interactive", Some('i'), Kind::Bool, "false"),
    local("prefix", None, Kind::Bool, "false"),
    local("prev-kv", None, Kind::Bool, "false"),
    local("rev", None, Kind::Int, "0"),
];

/// `watch`'s flags on the command line: its own and cobra's `--help`.
pub const FLAGS: &[Def] = &[HELP, OWN_FLAGS[0], OWN_FLAGS[1], OWN_FLAGS[2], OWN_FLAGS[3]];

/// Flags etcdctl adds to `watch`'s inherited set so that `ETCDCTL_WATCH_KEY` and
/// `ETCDCTL_WATCH_RANGE_END` count as recognised variables (they hold no value).
pub const ENV_ONLY: [Def; 2] = [
    local("watch-key", None, Kind::Discard, ""),
    local("watch-range-end", None, Kind::Discard, ""),
];

const ERR_BAD_ARGS_NUM: &str = "bad number of arguments";
const ERR_CONFLICT_ENV: &str = "bad number of arguments (found conflicting environment key)";
const ERR_SEPARATOR: &str = "bad number of arguments (found separator --, but no commands)";

/// clientv3's `maxBackoff` between attempts to reopen a watch stream.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// How many watches one interactive session may hold.
const WATCHES_MAX: usize = 1024;

/// gRPC metadata that makes the server refuse the stream when it has no leader
/// (`clientv3.WithRequireLeader`).
const REQUIRE_LEADER_KEY: &str = "hasleader";

/// The watch options of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Options {
    prefix: bool,
    rev: i64,
    prev_kv: bool,
}

impl Options {
    fn from_flags(flags: &Flags) -> Options {
        Options {
            prefix: flags.bool("prefix"),
            rev: flags.int("rev"),
            prev_kv: flags.bool("prev-kv"),
        }
    }
}

fn env_value<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The arguments as etcdctl's process and cobra saw them.
pub struct Raw<'a> {
    /// The process's arguments, without the program.
    pub process: &'a [String],
    /// How many arguments cobra handed the command.
    pub command: usize,
}

pub async fn watch(
    mut flags: Flags,
    args: Vec<String>,
    raw: Raw<'_>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let env_key = env_value(env, "ETCDCTL_WATCH_KEY").to_string();
    let env_range = env_value(env, "ETCDCTL_WATCH_RANGE_END").to_string();
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(Fail::Error(
            EXIT_BAD_ARGS,
            format!(
                "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
                gofmt::quote(env_range.as_bytes())
            ),
        ));
    }
    // What Go's `os.Args` holds: the program, then the arguments.
    let mut os_args = vec!["etcdctl".to_string()];
    os_args.extend_from_slice(raw.process);
    if flags.bool("interactive") {
        let set_len = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.len());
        let shape = Shape {
            os_args: os_args.len(),
            args: raw.command,
            positional: args.len(),
            env_key_bytes: set_len("ETCDCTL_WATCH_KEY"),
            env_range_bytes: set_len("ETCDCTL_WATCH_RANGE_END"),
        };
        return interactive(flags, inherited, env, io, &env_key, &env_range, shape).await;
    }
    let (watch_args, exec) = parse_args(&os_args, &args, &env_key, &env_range)
        .map_err(|e| Fail::Error(EXIT_BAD_ARGS, e.into()))?;
    for d in ENV_ONLY {
        flags.define(d);
    }
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let c = open_client(&cfg, io.err).await?;
    let create = create_request(&watch_args, Options::from_flags(&flags))
        .map_err(|e| Fail::Error(EXIT_BAD_ARGS, e.into()))?;
    let mut session = Session::new(c);
    session.add(create, exec).await;
    while let Some(d) = session.next().await {
        show(&cfg.printer, &d, io)?;
    }
    Err(Fail::Error(
        EXIT_INTERRUPTED,
        "watch is canceled by the server".into(),
    ))
}

/// etcdctl's `parseWatchArgs` for the command line: the key (and range end) to watch and the
/// command to run for each event.
fn parse_args(
    os_args: &[String],
    command_args: &[String],
    env_key: &str,
    env_range: &str,
) -> Result<(Vec<String>, Vec<String>), &'static str> {
    let mut raw: &[String] = os_args;
    if let Some(at) = raw.iter().position(|a| a == "watch") {
        raw = &raw[at + 1..];
    }
    let mut watch_args = command_args.to_vec();
    let separator = raw.iter().position(|a| a == "--");
    if let Some(at) = separator {
        if at == raw.len() - 1 {
            return Err(ERR_SEPARATOR);
        }
    }
    if separator.is_none() && raw.is_empty() && env_key.is_empty() {
        return Err(ERR_BAD_ARGS_NUM);
    }
    if let (Some(exec_at), false) = (separator, env_key.is_empty()) {
        // The positional arguments before `--` conflict with the environment's key.
        let mut r = raw.len() as isize - 1;
        for w in watch_args.iter().rev() {
            if r >= 0 && *w == raw[r as usize] {
                r -= 1;
                continue;
            }
            if r == exec_at as isize {
                return Err(ERR_CONFLICT_ENV);
            }
        }
    }
    if separator.is_none() && !watch_args.is_empty() && !env_key.is_empty() {
        return Err(ERR_CONFLICT_ENV);
    }
    let exec = separator.map_or_else(Vec::new, |at| raw[at + 1..].to_vec());
    if !env_key.is_empty() {
        let mut ranges = vec![env_key.to_string()];
        if !env_range.is_empty() {
            ranges.push(env_range.to_string());
        }
        ranges.append(&mut watch_args);
        watch_args = ranges;
    }
    if separator.is_none() {
        return Ok((watch_args, exec));
    }
    // cobra's positional arguments include the command after `--`: cut from its first word.
    let end = watch_args.iter().rposition(|a| *a == exec[0]).unwrap_or(0);
    watch_args.truncate(end);
    Ok((watch_args, exec))
}

/// How an interactive `watch` line fails.
#[derive(Debug, PartialEq, Eq)]
enum LineError {
    /// Fatal: etcdctl exits with status 128 and this text.
    Fatal(String),
    /// pflag saw `-h` or `--help` (its usage goes to cobra's buffer, unseen): fatal.
    Help,
}

/// etcdctl's `parseWatchArgs` for an interactive line (`args[0]` is `watch`): the arguments,
/// the command and the options the line sets (every line starts from the defaults).
fn parse_line(
    args: &[String],
    env_key: &str,
    env_range: &str,
) -> Result<(Vec<String>, Vec<String>, Options), LineError> {
    let line_args = &args[1..];
    let separator = line_args.iter().position(|a| a == "--");
    if let Some(at) = separator {
        if at == line_args.len() - 1 {
            return Err(LineError::Fatal(ERR_SEPARATOR.into()));
        }
    }
    let mut flags = Flags::new(&OWN_FLAGS);
    let positional = flags.parse(line_args).map_err(|e| {
        if e == "unknown flag: --help" || e.starts_with("unknown shorthand flag: 'h' in") {
            LineError::Help
        } else {
            LineError::Fatal(e)
        }
    })?;
    if separator.is_none() && env_key.is_empty() && positional.is_empty() {
        return Err(LineError::Fatal(ERR_BAD_ARGS_NUM.into()));
    }
    if separator.is_none() && !positional.is_empty() && !env_key.is_empty() {
        return Err(LineError::Fatal(ERR_CONFLICT_ENV.into()));
    }
    let exec = separator.map_or_else(Vec::new, |at| line_args[at + 1..].to_vec());
    let mut watch_args = positional;
    if !env_key.is_empty() {
        let mut ranges = vec![env_key.to_string()];
        if !env_range.is_empty() {
            ranges.push(env_range.to_string());
        }
        ranges.append(&mut watch_args);
        watch_args = ranges;
    }
    if separator.is_some() {
        let end = watch_args.iter().rposition(|a| *a == exec[0]).unwrap_or(0);
        watch_args.truncate(end);
    }
    Ok((watch_args, exec, Options::from_flags(&flags)))
}

/// etcdctl's `getWatchChan`: the create request for the arguments and options.
fn create_request(args: &[String], opts: Options) -> Result<WatchCreateRequest, &'static str> {
    if args.is_empty() {
        return Err(ERR_BAD_ARGS_NUM);
    }
    let mut req = WatchCreateRequest {
        key: args[0].as_bytes().to_vec(),
        start_revision: opts.rev,
        prev_kv: opts.prev_kv,
        ..Default::default()
    };
    if args.len() == 2 {
        if opts.prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive");
        }
        req.range_end = args[1].as_bytes().to_vec();
    }
    if opts.prefix {
        // clientv3's `WithPrefix`: an empty prefix watches every key.
        if req.key.is_empty() {
            req.key = vec![0];
            req.range_end = vec![0];
        } else {
            req.range_end = ops::prefix_end(&req.key);
        }
    }
    Ok(req)
}

/// The lines typed in interactive mode: read on a thread of their own when they come from the
/// process's standard input (so the watches keep printing while it waits), else read as they are
/// needed.
enum Lines {
    Thread(tokio::sync::mpsc::Receiver<Option<String>>),
    Inline,
}

impl Lines {
    fn start(io: &Console<'_>) -> Lines {
        if !io.real {
            return Lines::Inline;
        }
        use std::os::fd::AsFd;
        let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
            return Lines::Inline;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(client::STREAM_QUEUE_MAX);
        std::thread::spawn(move || {
            let mut input = std::io::BufReader::new(std::fs::File::from(fd));
            loop {
                let line = read_line(&mut input);
                let end = line.is_none();
                if tx.blocking_send(line).is_err() || end {
                    return;
                }
            }
        });
        Lines::Thread(rx)
    }
}

/// Go's `bufio.Reader.ReadString('\n')`: a line with its newline, or `None` at the end of the
/// input (a last line without a newline is lost, as in etcdctl).
fn read_line(input: &mut dyn BufRead) -> Option<String> {
    let mut buf = Vec::new();
    match input.read_until(b'\n', &mut buf) {
        Ok(_) if buf.ends_with(b"\n") => Some(String::from_utf8_lossy(&buf).into_owned()),
        _ => None,
    }
}

/// How many arguments etcdctl's frames held, for the trace of a panic in interactive mode.
#[derive(Clone, Copy, Debug)]
struct Shape {
    os_args: usize,
    args: usize,
    positional: usize,
    env_key_bytes: Option<usize>,
    env_range_bytes: Option<usize>,
}

/// etcdctl's `watchInteractiveFunc`: `watch ...` and `progress` lines, while the watches print.
async fn interactive(
    mut flags: Flags,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
    env_key: &str,
    env_range: &str,
    shape: Shape,
) -> Result<(), Fail> {
    for d in ENV_ONLY {
        flags.define(d);
    }
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let c = open_client(&cfg, io.err).await?;
    let mut session = Session::new(c);
    let mut lines = Lines::start(io);
    loop {
        let line = match &mut lines {
            Lines::Inline => read_line(io.input),
            Lines::Thread(rx) => {
                let delivered = tokio::select! {
                    line = rx.recv() => Err(line.flatten()),
                    d = session.next(), if session.active() => Ok(d),
                };
                match delivered {
                    Ok(Some(d)) => {
                        show(&cfg.printer, &d, io)?;
                        continue;
                    }
                    Ok(None) => continue,
                    Err(line) => line,
                }
            }
        };
        let Some(line) = line else {
            return Err(Fail::Error(
                EXIT_INVALID_INPUT,
                "Error reading watch request line: EOF".into(),
            ));
        };
        let l = line.strip_suffix('\n').unwrap_or(&line);
        let args = txn_parse::argify(l).map_err(|f| match f {
            Fail::Panic(PanicSite::ArgifySlice {
                message,
                line_bytes,
            }) => Fail::Panic(PanicSite::WatchArgifySlice {
                message,
                line_bytes,
                os_args: shape.os_args,
                args: shape.args,
                positional: shape.positional,
                env_key_bytes: shape.env_key_bytes,
                env_range_bytes: shape.env_range_bytes,
            }),
            other => other,
        })?;
        let Some(first) = args.first() else {
            let _ = writeln!(
                io.err,
                "Invalid command: {l} (watch and progress supported)"
            );
            continue;
        };
        match first.as_str() {
            "watch" => {
                if args.len() < 2 && env_key.is_empty() {
                    let _ = writeln!(
                        io.err,
                        "Invalid command {l} (command type or key is not provided)"
                    );
                    continue;
                }
                let (watch_args, exec, opts) = match parse_line(&args, env_key, env_range) {
                    Ok(parsed) => parsed,
                    Err(LineError::Fatal(e)) => return Err(Fail::Error(EXIT_BAD_ARGS, e)),
                    Err(LineError::Help) => {
                        return Err(Fail::Error(EXIT_BAD_ARGS, "pflag: help requested".into()));
                    }
                };
                match create_request(&watch_args, opts) {
                    Ok(create) => {
                        if session.watches() >= WATCHES_MAX {
                            let _ = writeln!(io.err, "Invalid command {l} (too many watches)");
                            continue;
                        }
                        session.add(create, exec).await;
                    }
                    Err(e) => {
                        let _ = writeln!(io.err, "Invalid command {l} ({e})");
                    }
                }
            }
            "progress" => session.progress().await,
            _ => {
                let _ = writeln!(io.err, "Invalid command {l} (only support watch)");
            }
        }
        let _ = io.err.flush();
    }
}

/// One response as clientv3 hands it to etcdctl.
#[derive(Clone, Debug, Default, PartialEq)]
struct Delivery {
    header: ResponseHeader,
    /// `None` for the responses clientv3 makes up when a stream fails (json `null`).
    events: Option<Vec<Event>>,
    compact_revision: i64,
    canceled: bool,
    created: bool,
    /// `WatchResponse.Err()`, as text.
    err: Option<String>,
    /// The command to run for each event.
    exec: Vec<String>,
}

impl Delivery {
    fn events(&self) -> &[Event] {
        self.events.as_deref().unwrap_or(&[])
    }

    /// clientv3's `IsProgressNotify`.
    fn is_progress_notify(&self) -> bool {
        self.events().is_empty()
            && !self.canceled
            && !self.created
            && self.compact_revision == 0
            && self.header.revision != 0
    }
}

/// What a watch in the session knows.
#[derive(Clone, Debug)]
struct Watch {
    /// The create request; its start revision follows the events, for a resume.
    create: WatchCreateRequest,
    exec: Vec<String>,
}

/// The open stream: its sending queue and its responses.
struct Stream {
    tx: tokio::sync::mpsc::Sender<WatchRequest>,
    inbound: tonic::Streaming<WatchResponse>,
}

/// clientv3's `watchGrpcStream` (see the module documentation).
struct Session {
    client: Client,
    stream: Option<Stream>,
    /// Watches the server confirmed, by watch ID.
    active: HashMap<i64, Watch>,
    /// Watches waiting for creation; the head's request has been sent.
    resuming: VecDeque<Watch>,
    /// Watch IDs a cancel request has been sent for.
    canceling: HashSet<i64>,
    /// A fragmented response being joined.
    partial: Option<WatchResponse>,
    /// Why the stream failed for good, once it has.
    close_err: Option<String>,
    pending: VecDeque<Delivery>,
    /// A progress request asked for before the stream was open, sent when it opens.
    progress_wanted: bool,
    backoff: Duration,
}

fn request(union: watch_request::RequestUnion) -> WatchRequest {
    WatchRequest {
        request_union: Some(union),
    }
}

fn create(req: &WatchCreateRequest) -> WatchRequest {
    request(watch_request::RequestUnion::CreateRequest(req.clone()))
}

fn progress_request() -> WatchRequest {
    request(watch_request::RequestUnion::ProgressRequest(
        WatchProgressRequest {},
    ))
}

fn cancel(watch_id: i64) -> WatchRequest {
    request(watch_request::RequestUnion::CancelRequest(
        WatchCancelRequest { watch_id },
    ))
}

/// clientv3's `WatchResponse.Err()` for a response from the server.
fn response_error(r: &WatchResponse) -> Option<String> {
    if r.compact_revision != 0 {
        return Some("etcdserver: mvcc: required revision has been compacted".into());
    }
    if r.canceled {
        if r.cancel_reason.is_empty() {
            return Some("etcdserver: mvcc: required revision is a future revision".into());
        }
        let status = tonic::Status::failed_precondition(r.cancel_reason.clone());
        return Some(CallError::from_status(&status).etcdctl_text());
    }
    None
}

impl Session {
    fn new(client: Client) -> Session {
        Session {
            client,
            stream: None,
            active: HashMap::new(),
            resuming: VecDeque::new(),
            canceling: HashSet::new(),
            partial: None,
            close_err: None,
            pending: VecDeque::new(),
            progress_wanted: false,
            backoff: Duration::from_millis(1),
        }
    }

    fn watches(&self) -> usize {
        self.active.len() + self.resuming.len()
    }

    /// Whether [`Session::next`] has anything to wait for.
    fn active(&self) -> bool {
        !self.pending.is_empty() || self.watches() > 0
    }

    async fn send(&mut self, req: WatchRequest) {
        if let Some(s) = &self.stream {
            // A failed send shows up as a failed receive.
            let _ = s.tx.send(req).await;
        }
    }

    /// Queues a watch; its create request goes out when no other creation is in flight.
    async fn add(&mut self, create_req: WatchCreateRequest, exec: Vec<String>) {
        let req = create(&create_req);
        self.resuming.push_back(Watch {
            create: create_req,
            exec,
        });
        if self.resuming.len() == 1 {
            self.send(req).await;
        }
    }

    /// `progress`: a progress notification for every watch. With no stream open yet it goes out
    /// when the stream opens (with no watch at all it would reach nobody).
    async fn progress(&mut self) {
        if self.stream.is_none() {
            self.progress_wanted = self.watches() > 0;
            return;
        }
        self.send(progress_request()).await;
    }

    /// The next response for the user, or `None` when every watch has ended.
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Some(d);
            }
            if self.watches() == 0 {
                self.stream = None;
                return None;
            }
            let Some(stream) = &mut self.stream else {
                self.open().await;
                continue;
            };
            match stream.inbound.message().await {
                Ok(Some(resp)) => self.receive(resp).await,
                Ok(None) => self.fail("EOF".into()),
                Err(status) => {
                    let e = CallError::from_status(&status);
                    self.stream = None;
                    self.client.forget_connection();
                    if client::is_halt(e.code) || e.message == "etcdserver: no leader" {
                        self.fail(e.etcdctl_text());
                    } else {
                        self.back_off(e.code).await;
                    }
                }
            }
        }
    }

    async fn back_off(&mut self, code: tonic::Code) {
        if code == tonic::Code::Unavailable {
            self.backoff = (self.backoff + self.backoff / 4).min(REOPEN_BACKOFF_MAX);
            clock::sleep(self.backoff).await;
        }
    }

    /// Opens a stream and queues the head of the creations on it; every confirmed watch goes back
    /// to the creation queue first, to be created again from where it stopped.
    async fn open(&mut self) {
        let mut confirmed: Vec<(i64, Watch)> = self.active.drain().collect();
        confirmed.sort_by_key(|(id, _)| *id);
        self.resuming.extend(confirmed.into_iter().map(|(_, w)| w));
        self.canceling.clear();
        self.partial = None;
        loop {
            let Some(head) = self.resuming.front() else {
                return;
            };
            let mut first = vec![create(&head.create)];
            if self.progress_wanted {
                first.push(progress_request());
            }
            let channel = match self.client.connect(None).await {
                Ok(ch) => ch,
                Err(e) => return self.fail(e.etcdctl_text()),
            };
            let (tx, outbound) = client::outbound(first);
            let mut req = self.client.stream_request(outbound);
            req.metadata_mut().insert(
                REQUIRE_LEADER_KEY,
                tonic::metadata::MetadataValue::from_static("true"),
            );
            let mut watch =
                WatchClient::new(channel).max_decoding_message_size(client::recv_limit());
            match watch.watch(req).await {
                Ok(resp) => {
                    self.progress_wanted = false;
                    self.stream = Some(Stream {
                        tx,
                        inbound: resp.into_inner(),
                    });
                    return;
                }
                Err(status) => {
                    self.client.forget_connection();
                    let e = CallError::from_status(&status);
                    if client::is_halt(e.code) {
                        return self.fail(e.etcdctl_text());
                    }
                    self.back_off(e.code).await;
                }
            }
        }
    }

    /// The stream failed for good: every watch ends with the error.
    fn fail(&mut self, text: String) {
        self.stream = None;
        self.close_err = Some(text.clone());
        let mut ended: Vec<Watch> = self.resuming.drain(..).collect();
        let mut confirmed: Vec<(i64, Watch)> = self.active.drain().collect();
        confirmed.sort_by_key(|(id, _)| *id);
        ended.extend(confirmed.into_iter().map(|(_, w)| w));
        for w in ended {
            self.pending.push_back(Self::closed(&text, w.exec));
        }
    }

    /// The response clientv3 makes up for a watch its stream failed under.
    fn closed(text: &str, exec: Vec<String>) -> Delivery {
        Delivery {
            canceled: true,
            err: Some(text.to_string()),
            exec,
            ..Default::default()
        }
    }

    /// A watch ended without an error of its own: silently, unless the stream had failed.
    fn end(&mut self, w: Watch) {
        if let Some(text) = self.close_err.clone() {
            self.pending.push_back(Self::closed(&text, w.exec));
        }
    }

    async fn receive(&mut self, resp: WatchResponse) {
        match &mut self.partial {
            Some(cur) if !resp.created && !resp.canceled => {
                if cur.watch_id == resp.watch_id {
                    cur.events.extend(resp.events.iter().cloned());
                    cur.fragment = resp.fragment;
                }
            }
            _ => self.partial = Some(resp.clone()),
        }
        if resp.created {
            self.partial = None;
            let reason = resp.cancel_reason.as_str();
            if reason == "etcdserver: invalid auth token"
                || reason == "etcdserver: revision of auth store is old"
            {
                // clientv3 retries these on a new stream.
                self.stream = None;
                return;
            }
            if let Some(mut w) = self.resuming.pop_front() {
                if resp.watch_id == -1 || (resp.canceled && !reason.is_empty()) {
                    self.close_err = Some(reason.to_string());
                    self.end(w);
                } else {
                    if w.create.start_revision == 0 {
                        // A watch from "now" resumes from the revision it was created at.
                        w.create.start_revision = resp.header.map_or(0, |h| h.revision);
                    }
                    self.active.insert(resp.watch_id, w);
                }
            }
            if let Some(next) = self.resuming.front() {
                let req = create(&next.create);
                self.send(req).await;
            }
            return;
        }
        if resp.canceled && resp.compact_revision == 0 {
            self.partial = None;
            self.canceling.remove(&resp.watch_id);
            if let Some(w) = self.active.remove(&resp.watch_id) {
                self.end(w);
            }
            return;
        }
        let Some(cur) = self.partial.take() else {
            return;
        };
        if cur.fragment {
            self.partial = Some(cur);
            return;
        }
        let header = cur.header.unwrap_or_default();
        let base = Delivery {
            header,
            events: Some(cur.events.clone()),
            compact_revision: cur.compact_revision,
            canceled: cur.canceled,
            created: cur.created,
            err: response_error(&cur),
            exec: Vec::new(),
        };
        let targets: Vec<i64> = if base.is_progress_notify() && cur.watch_id == -1 {
            let mut ids: Vec<i64> = self.active.keys().copied().collect();
            ids.sort_unstable();
            ids
        } else if self.active.contains_key(&cur.watch_id) {
            vec![cur.watch_id]
        } else {
            if self.canceling.insert(cur.watch_id) {
                self.send(cancel(cur.watch_id)).await;
            }
            return;
        };
        for id in targets {
            let Some(w) = self.active.get_mut(&id) else {
                continue;
            };
            let mut next_rev = header.revision;
            if let Some(last) = cur.events.last() {
                next_rev = last.kv.as_ref().map_or(0, |kv| kv.mod_revision) + 1;
            }
            w.create.start_revision = next_rev;
            let mut d = base.clone();
            d.exec = w.exec.clone();
            let ends = d.err.is_some();
            self.pending.push_back(d);
            if ends {
                if let Some(w) = self.active.remove(&id) {
                    self.canceling.insert(id);
                    self.send(cancel(id)).await;
                    self.end(w);
                }
            }
        }
    }
}

/// etcdctl's `printWatchCh` for one response: the cancel notice, the progress line, the
/// response in the chosen format, then the command for each event.
fn show(p: &Printer, d: &Delivery, io: &mut Console<'_>) -> Result<(), Fail> {
    if d.canceled {
        let _ = writeln!(
            io.err,
            "watch was canceled ({})",
            d.err.as_deref().unwrap_or("<nil>")
        );
        let _ = io.err.flush();
    }
    if d.is_progress_notify() {
        let _ = writeln!(io.out, "progress notify: {}", d.header.revision);
    }
    print_watch(p, io.out, d)?;
    let _ = io.out.flush();
    if !d.exec.is_empty() {
        for ev in d.events() {
            run_command(&d.exec, &d.header, ev, io)?;
        }
    }
    Ok(())
}

/// The name Go's protobuf gives an event type.
fn event_type(t: i32) -> String {
    match t {
        0 => "PUT".into(),
        1 => "DELETE".into(),
        other => other.to_string(),
    }
}

fn print_watch(p: &Printer, w: &mut dyn Write, d: &Delivery) -> Result<(), Fail> {
    match p.format {
        Format::Simple => {
            let mut s = Vec::new();
            for e in d.events() {
                s.extend(event_type(e.r#type).into_bytes());
                s.push(b'\n');
                if let Some(prev) = &e.prev_kv {
                    s.extend(p.kv_lines(prev));
                }
                s.extend(p.kv_lines(&e.kv.clone().unwrap_or_default()));
            }
            out_bytes(w, &s);
        }
        Format::Json => out(w, &format!("{}\n", watch_json(d))),
        Format::Fields => {
            let mut s = fields_header(&Some(d.header));
            for e in d.events() {
                s.push_str(&format!("\"Type\" : {}\n", event_type(e.r#type)));
                if let Some(prev) = &e.prev_kv {
                    s.push_str(&fields_kv("Prev", prev));
                }
                s.push_str(&fields_kv("", &e.kv.clone().unwrap_or_default()));
            }
            out(w, &s);
        }
        Format::Protobuf => {
            let r = WatchResponse {
                header: Some(d.header),
                events: d.events().to_vec(),
                compact_revision: d.compact_revision,
                canceled: d.canceled,
                created: d.created,
                ..Default::default()
            };
            let _ = w.write_all(&r.encode_to_vec());
        }
        Format::Table => return Err(unsupported(p.format)),
    }
    Ok(())
}

/// Go's json of a `clientv3.WatchResponse`.
fn watch_json(d: &Delivery) -> String {
    let events = match &d.events {
        None => "null".to_string(),
        Some(events) => {
            let items: Vec<String> = events
                .iter()
                .map(|e| {
                    Obj::new()
                        .int("type", i64::from(e.r#type))
                        .opt("kv", e.kv.as_ref().map(kv_json))
                        .opt("prev_kv", e.prev_kv.as_ref().map(kv_json))
                        .finish()
                })
                .collect();
            json::array(&items)
        }
    };
    Obj::new()
        .raw(
            "Header",
            &header_json(&Some(d.header)).unwrap_or_else(|| "{}".into()),
        )
        .raw("Events", &events)
        .raw("CompactRevision", &d.compact_revision.to_string())
        .raw("Canceled", &d.canceled.to_string())
        .raw("Created", &d.created.to_string())
        .finish()
}

/// Go's `%q` of a `[]string`: `["echo" "hi"]`.
fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| gofmt::quote(s.as_bytes())).collect();
    format!("[{}]", quoted.join(" "))
}

/// Runs the `-- <command>` for one event, with the event in its environment. A failure ends
/// etcdctl with status 1 and no `Error:` line.
fn run_command(
    exec: &[String],
    header: &ResponseHeader,
    ev: &Event,
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let kv = ev.kv.clone().unwrap_or_default();
    let mut cmd = std::process::Command::new(&exec[0]);
    cmd.args(&exec[1..])
        .env("ETCD_WATCH_REVISION", header.revision.to_string())
        .env(
            "ETCD_WATCH_EVENT_TYPE",
            gofmt::quote(event_type(ev.r#type).as_bytes()),
        )
        .env("ETCD_WATCH_KEY", gofmt::quote(&kv.key))
        .env("ETCD_WATCH_VALUE", gofmt::quote(&kv.value));
    let _ = io.out.flush();
    let _ = io.err.flush();
    let result = if io.real {
        cmd.status().map(|s| (s, Vec::new(), Vec::new()))
    } else {
        cmd.output().map(|o| (o.status, o.stdout, o.stderr))
    };
    let failure = match result {
        Ok((status, stdout, stderr)) => {
            let _ = io.out.write_all(&stdout);
            let _ = io.err.write_all(&stderr);
            exit_failure(status)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !exec[0].contains('/') => {
            Some(format!(
                "exec: {}: executable file not found in $PATH",
                gofmt::quote(exec[0].as_bytes())
            ))
        }
        Err(e) => {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            };
            Some(format!("fork/exec {}: {reason}", exec[0]))
        }
    };
    if let Some(text) = failure {
        let _ = writeln!(io.err, "command {} error ({text})", quote_list(exec));
        return Err(Fail::Exit(EXIT_ERROR));
    }
    Ok(())
}

/// Go's `exec.ExitError` text for a command that did not succeed.
fn exit_failure(status: std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return None;
    }
    if let Some(code) = status.code() {
        return Some(format!("exit status {code}"));
    }
    let signal = status.signal().unwrap_or(0);
    let name = match signal {
        1 => "hangup".to_string(),
        2 => "interrupt".to_string(),
        9 => "killed".to_string(),
        13 => "broken pipe".to_string(),
        15 => "terminated".to_string(),
        n => format!("signal {n}"),
    };
    Some(format!("signal: {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    fn os(v: &[&str]) -> Vec<String> {
        let mut a = s(&["etcdctl"]);
        a.extend(s(v));
        a
    }

    #[test]
    fn command_line_arguments_like_etcdctl() {
        // (raw arguments, cobra's positional arguments) -> result; texts from etcdctl 3.4.23.
        assert_eq!(
            parse_args(&os(&["watch", "foo"]), &s(&["foo"]), "", ""),
            Ok((s(&["foo"]), vec![]))
        );
        assert_eq!(
            parse_args(
                &os(&["watch", "foo", "--rev", "1", "bar", "--", "echo", "hi"]),
                &s(&["foo", "bar", "echo", "hi"]),
                "",
                ""
            ),
            Ok((s(&["foo", "bar"]), s(&["echo", "hi"])))
        );
        assert_eq!(
            parse_args(&os(&["watch"]), &[], "", ""),
            Err(ERR_BAD_ARGS_NUM)
        );
        assert_eq!(
            parse_args(&os(&["watch", "a", "--"]), &s(&["a"]), "", ""),
            Err(ERR_SEPARATOR)
        );
        assert_eq!(
            parse_args(&os(&["watch", "foo"]), &s(&["foo"]), "foo", ""),
            Err(ERR_CONFLICT_ENV)
        );
        assert_eq!(
            parse_args(
                &os(&["watch", "--", "echo", "1"]),
                &s(&["echo", "1"]),
                "foo",
                "bar"
            ),
            Ok((s(&["foo", "bar"]), s(&["echo", "1"])))
        );
        assert_eq!(
            parse_args(
                &os(&["watch", "foo", "--", "echo", "1"]),
                &s(&["foo", "echo", "1"]),
                "foo",
                ""
            ),
            Err(ERR_CONFLICT_ENV)
        );
        // `watch --prefix` passes here and fails later, in getWatchChan.
        assert_eq!(
            parse_args(&os(&["watch", "--prefix"]), &[], "", ""),
            Ok((vec![], vec![]))
        );
    }

    #[test]
    fn interactive_lines_like_etcdctl() {
        let (args, exec, opts) =
            parse_line(&s(&["watch", "foo", "--prefix", "--", "echo", "x"]), "", "").unwrap();
        assert_eq!((args, exec), (s(&["foo"]), s(&["echo", "x"])));
        assert!(opts.prefix);
        assert_eq!(
            parse_line(&s(&["watch", "--rev", "2"]), "", ""),
            Err(LineError::Fatal(ERR_BAD_ARGS_NUM.into()))
        );
        assert_eq!(
            parse_line(&s(&["watch", "foo", "--bogus"]), "", ""),
            Err(LineError::Fatal("unknown flag: --bogus".into()))
        );
        assert_eq!(
            parse_line(&s(&["watch", "foo", "--help"]), "", ""),
            Err(LineError::Help)
        );
    }

    #[test]
    fn create_requests() {
        let r = create_request(
            &s(&["foo"]),
            Options {
                prefix: true,
                rev: 3,
                prev_kv: true,
            },
        )
        .unwrap();
        assert_eq!((r.key, r.range_end), (b"foo".to_vec(), b"fop".to_vec()));
        assert_eq!((r.start_revision, r.prev_kv), (3, true));
        let all = create_request(
            &s(&[""]),
            Options {
                prefix: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((all.key, all.range_end), (vec![0], vec![0]));
        assert_eq!(
            create_request(
                &s(&["a", "b"]),
                Options {
                    prefix: true,
                    ..Default::default()
                }
            ),
            Err("`range_end` and `--prefix` are mutually exclusive")
        );
        // A third argument is ignored, as in etcdctl.
        let three = create_request(&s(&["a", "b", "c"]), Options::default()).unwrap();
        assert!(three.range_end.is_empty());
    }

    fn header(revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 1543700104741564242,
            member_id: 10608898954038455804,
            revision,
            raft_term: 2,
        }
    }

    fn put(key: &str, value: &str, create: i64, modr: i64, version: i64) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                create_revision: create,
                mod_revision: modr,
                version,
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    fn printed(format: Format, d: &Delivery) -> String {
        let mut w = Vec::new();
        let p = Printer {
            format,
            hex: false,
            value_only: false,
        };
        print_watch(&p, &mut w, d).unwrap();
        String::from_utf8(w).unwrap()
    }

    // Captured from `etcdctl watch wk --prev-kv` (and -w json, -w fields) while another
    // etcdctl put and deleted the key.

    #[test]
    fn events_print_like_etcdctl() {
        let mut second = put("wk", "v2", 8, 9, 2);
        second.prev_kv = put("wk", "v1", 8, 8, 1).kv;
        let d = Delivery {
            header: header(9),
            events: Some(vec![second]),
            ..Default::default()
        };
        assert_eq!(printed(Format::Simple, &d), "PUT\nwk\nv1\nwk\nv2\n");
        let del = Delivery {
            header: header(10),
            events: Some(vec![Event {
                r#type: 1,
                kv: Some(KeyValue {
                    key: b"wk".to_vec(),
                    mod_revision: 10,
                    ..Default::default()
                }),
                prev_kv: None,
            }]),
            ..Default::default()
        };
        assert_eq!(printed(Format::Simple, &del), "DELETE\nwk\n\n");
        assert_eq!(
            printed(Format::Json, &del),
            "{\"Header\":{\"cluster_id\":1543700104741564242,\"member_id\":10608898954038455804,\"revision\":10,\"raft_term\":2},\"Events\":[{\"type\":1,\"kv\":{\"key\":\"d2s=\",\"mod_revision\":10}}],\"CompactRevision\":0,\"Canceled\":false,\"Created\":false}\n"
        );
        let first = Delivery {
            header: header(12),
            events: Some(vec![put("wk", "v1", 12, 12, 1)]),
            ..Default::default()
        };
        assert_eq!(
            printed(Format::Fields, &first),
            "\"ClusterID\" : 1543700104741564242\n\"MemberID\" : 10608898954038455804\n\"Revision\" : 12\n\"RaftTerm\" : 2\n\"Type\" : PUT\n\"Key\" : \"wk\"\n\"CreateRevision\" : 12\n\"ModRevision\" : 12\n\"Version\" : 1\n\"Value\" : \"v1\"\n\"Lease\" : 0\n"
        );
    }

    #[test]
    fn compaction_cancel_prints_like_etcdctl() {
        // `etcdctl watch wk --rev 2` after `etcdctl compaction 10`.
        let resp = WatchResponse {
            header: Some(header(0)),
            watch_id: 0,
            canceled: true,
            compact_revision: 10,
            ..Default::default()
        };
        let d = Delivery {
            header: header(0),
            events: Some(vec![]),
            compact_revision: 10,
            canceled: true,
            err: response_error(&resp),
            ..Default::default()
        };
        assert_eq!(
            d.err.as_deref(),
            Some("etcdserver: mvcc: required revision has been compacted")
        );
        assert_eq!(
            printed(Format::Json, &d),
            "{\"Header\":{\"cluster_id\":1543700104741564242,\"member_id\":10608898954038455804,\"raft_term\":2},\"Events\":[],\"CompactRevision\":10,\"Canceled\":true,\"Created\":false}\n"
        );
        let mut w = Vec::new();
        let pb = Printer {
            format: Format::Protobuf,
            hex: false,
            value_only: false,
        };
        print_watch(&pb, &mut w, &d).unwrap();
        // `... -w protobuf | od -c`: header, canceled, compact_revision.
        assert_eq!(
            w,
            vec![
                0o12, 0o27, 0o10, 0o322, 0o336, 0o352, 0o366, 0o217, 0o342, 0o224, 0o266, 0o25,
                0o20, 0o374, 0o333, 0o346, 0o353, 0o276, 0o254, 0o230, 0o235, 0o223, 0o1, 0o40,
                0o2, 0o40, 0o1, 0o50, 0o12
            ]
        );
        assert_eq!(printed(Format::Simple, &d), "");
        let closed = Session::closed("etcdserver: no leader", vec![]);
        assert_eq!(
            printed(Format::Json, &closed),
            "{\"Header\":{},\"Events\":null,\"CompactRevision\":0,\"Canceled\":true,\"Created\":false}\n"
        );
    }

    #[test]
    fn command_errors_quote_like_go() {
        assert_eq!(quote_list(&s(&["echo", "a b"])), "[\"echo\" \"a b\"]");
    }
}
