//! The gRPC side of cairnctl: connecting to endpoints, calling with etcd clientv3's retry policy,
//! and turning failures into the texts etcdctl prints.
//!
//! etcdctl 3.4 talks through clientv3, whose behaviour users see in three places:
//!
//! * **Waiting.** Connections are not dialled up front; a call waits for a connection until the
//!   command's deadline (`--command-timeout`), so an unreachable endpoint shows up as
//!   `context deadline exceeded` after the timeout, not as a dial error. `txn` has no deadline
//!   at all and waits for ever.
//! * **Retrying.** A unary call is retried up to 100 times when it is safe: read-only calls
//!   (Range, read-only Txn, Status, MemberList, Alarm) on `Unavailable`, writes never (only on
//!   client-side "no connection" errors, which cannot happen here). Between attempts it sleeps
//!   25 ms once per quorum of endpoints.
//! * **Logging.** Every failed attempt is logged on stderr by clientv3's zap logger as one JSON
//!   line (`"msg":"retrying of unary invoker failed"`), before etcdctl's own `Error:` line.
//!
//! The final error text follows clientv3's `toErr`: a message etcd's `rpctypes` knows prints bare
//! (`etcdserver: key is not provided`), a deadline prints `context deadline exceeded`, and
//! anything else prints as grpc-go's `rpc error: code = <Code> desc = <message>`.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;
use tonic::transport::{Channel, Endpoint};

use crate::tls;
use crate::tls::client::{client_config, ClientFiles};
use crate::tls::TlsError;
use tonic::{Code, Status};

use super::{clock, gofmt};

/// clientv3's `defaultUnaryMaxRetries`.
const UNARY_ATTEMPTS_MAX: u32 = 100;

/// clientv3's `defaultBackoffWaitBetween`.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// clientv3's `defaultMaxCallSendMsgSize`: a bigger request fails in the client.
pub const SEND_MESSAGE_BYTES_MAX: usize = 2 * 1024 * 1024;

/// clientv3's `MaxCallRecvMsgSize` default (`math.MaxInt32`).
const RECV_MESSAGE_BYTES_MAX: usize = i32::MAX as usize;

/// grpc-go's reconnect backoff: first wait, growth factor and cap.
const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(120);

/// Error messages that clientv3 maps to a bare `EtcdError` (etcd's `rpctypes.errStringToError`).
const ETCD_ERRORS: &[&str] = &[
    "etcdserver: key is not provided",
    "etcdserver: key not found",
    "etcdserver: value is provided",
    "etcdserver: lease is provided",
    "etcdserver: too many operations in txn request",
    "etcdserver: duplicate key given in txn request",
    "etcdserver: mvcc: required revision has been compacted",
    "etcdserver: mvcc: required revision is a future revision",
    "etcdserver: mvcc: database space exceeded",
    "etcdserver: requested lease not found",
    "etcdserver: lease already exists",
    "etcdserver: too large lease TTL",
    "etcdserver: member ID already exist",
    "etcdserver: Peer URLs already exists",
    "etcdserver: re-configuration failed due to not enough started members",
    "etcdserver: given member URLs are invalid",
    "etcdserver: member not found",
    "etcdserver: can only promote a learner member",
    "etcdserver: can only promote a learner member which is in sync with leader",
    "etcdserver: too many learner members in cluster",
    "etcdserver: request is too large",
    "etcdserver: too many requests",
    "etcdserver: root user does not exist",
    "etcdserver: root user does not have root role",
    "etcdserver: user name already exists",
    "etcdserver: user name is empty",
    "etcdserver: user name not found",
    "etcdserver: role name already exists",
    "etcdserver: role name not found",
    "etcdserver: role name is empty",
    "etcdserver: authentication failed, invalid user ID or password",
    "etcdserver: permission denied",
    "etcdserver: role is not granted to the user",
    "etcdserver: permission is not granted to the role",
    "etcdserver: authentication is not enabled",
    "etcdserver: invalid auth token",
    "etcdserver: invalid auth management",
    "etcdserver: revision of auth store is old",
    "etcdserver: no leader",
    "etcdserver: not leader",
    "etcdserver: leader changed",
    "etcdserver: not capable",
    "etcdserver: server stopped",
    "etcdserver: request timed out",
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: request timed out, possibly due to connection lost",
    "etcdserver: request timed out, leader transfer took too long",
    "etcdserver: request timed out, waiting for the applied index took too long",
    "etcdserver: unhealthy cluster",
    "etcdserver: corrupt cluster",
    "etcdserver: rpc not supported for learner",
    "etcdserver: bad leader transferee",
];

/// grpc-go's name for a status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A failed call: the gRPC status as grpc-go would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub code: Code,
    pub message: String,
    /// The caller's deadline had passed when the call failed.
    pub deadline_passed: bool,
}

impl CallError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        CallError {
            code,
            message: message.into(),
            deadline_passed: false,
        }
    }

    fn deadline() -> Self {
        CallError {
            deadline_passed: true,
            ..CallError::new(Code::DeadlineExceeded, "context deadline exceeded")
        }
    }

    pub fn from_status(s: &Status) -> Self {
        CallError::new(s.code(), s.message())
    }

    /// grpc-go's `status.Error().Error()`.
    pub fn grpc_text(&self) -> String {
        format!(
            "rpc error: code = {} desc = {}",
            code_name(self.code),
            self.message
        )
    }

    /// What etcdctl prints after `Error: ` (clientv3's `toErr`).
    pub fn etcdctl_text(&self) -> String {
        if ETCD_ERRORS.contains(&self.message.as_str()) {
            return self.message.clone();
        }
        if self.deadline_passed && matches!(self.code, Code::DeadlineExceeded | Code::Cancelled) {
            return "context deadline exceeded".to_string();
        }
        self.grpc_text()
    }

    fn is_context_error(&self) -> bool {
        matches!(self.code, Code::DeadlineExceeded | Code::Cancelled)
    }

    /// The error is etcd's "permission denied" (which `endpoint health` counts as healthy).
    pub fn is_permission_denied(&self) -> bool {
        self.message == "etcdserver: permission denied"
    }
}

/// How the client names its gRPC target in log lines, which also decides grpc-go's wording for a
/// connection that never came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetStyle {
    /// clientv3's balancer over all endpoints: `endpoint://client-<uuid>/<first endpoint>`.
    Balancer,
    /// A direct dial of one endpoint (`Status` does this): `passthrough:///<endpoint>`.
    Passthrough,
}

/// Whether a call may be retried after `Unavailable` (clientv3's retry policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    Repeatable,
    NonRepeatable,
}

/// A connection to a list of endpoints, made on first use.
pub struct Client {
    endpoints: Vec<String>,
    target: String,
    style: TargetStyle,
    channel: Option<Channel>,
    last_dial_error: Option<String>,
    /// The auth token sent with every request, once `--user` has authenticated.
    token: Option<String>,
    security: Security,
}

/// How cairnctl secures its connections, as etcdctl and clientv3 decide it per endpoint: an
/// `http://` endpoint is always plaintext; an `https://` one is TLS with the flags'
/// configuration, or with the system's CAs when no TLS flag was given; an endpoint with no
/// scheme is TLS exactly when a TLS flag (`--cacert`, `--cert`, `--key`,
/// `--insecure-transport=false`) was given.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Security {
    /// Plaintext unless an endpoint says `https://`.
    pub fn plain() -> Security {
        Security::default()
    }

    /// TLS with the configuration `files` gives.
    pub fn tls(files: &ClientFiles) -> Result<Security, TlsError> {
        Ok(Security {
            tls: Some(client_config(files)?),
        })
    }

    /// The TLS configuration to dial `scheme` with (None: plaintext).
    fn for_scheme(
        &self,
        scheme: Option<&str>,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        match scheme {
            Some("https") | Some("unixs") => match &self.tls {
                Some(c) => Ok(Some(c.clone())),
                None => client_config(&ClientFiles::default())
                    .map(Some)
                    .map_err(|e| e.to_string()),
            },
            Some(_) => Ok(None),
            None => Ok(self.tls.clone()),
        }
    }
}

/// One attempt of a call: the channel to use, the time left before the deadline, and the
/// metadata every request carries.
pub struct Attempt {
    pub channel: Channel,
    left: Option<Duration>,
    token: Option<String>,
}

impl Attempt {
    /// A request for `msg` with clientv3's metadata (API version, auth token) and the time left
    /// as its gRPC timeout.
    pub fn request<M>(&self, msg: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(msg);
        if let Some(left) = self.left {
            r.set_timeout(left);
        }
        r.metadata_mut().insert(
            "client-api-version",
            tonic::metadata::MetadataValue::from_static("3.4"),
        );
        if let Some(token) = &self.token {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(token.as_str()) {
                r.metadata_mut().insert("token", v);
            }
        }
        r
    }
}

impl Client {
    pub fn new(endpoints: Vec<String>, style: TargetStyle, security: &Security) -> Self {
        let first = endpoints.first().cloned().unwrap_or_default();
        let target = match style {
            // clientv3 names the balancer's target by the endpoint's host, without its scheme.
            TargetStyle::Balancer => {
                let host = first.split_once("://").map_or(first.as_str(), |(_, h)| h);
                format!("endpoint://client-{}/{host}", clock::uuid_v4())
            }
            TargetStyle::Passthrough => format!("passthrough:///{first}"),
        };
        Client {
            endpoints,
            target,
            style,
            channel: None,
            last_dial_error: None,
            token: None,
            security: security.clone(),
        }
    }

    pub fn token(&self) -> Option<String> {
        self.token.clone()
    }

    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// A connected channel for a stream, dialling (with grpc-go's backoff) until one endpoint
    /// answers or the deadline passes; without a deadline it waits for ever, as clientv3's
    /// streams do (they wait for a ready connection).
    pub async fn connect(&mut self, deadline: Option<Instant>) -> Result<Channel, CallError> {
        self.channel(deadline).await
    }

    /// Drops the connection after a stream failed on it, so the next call redials.
    pub fn forget_connection(&mut self) {
        self.channel = None;
    }

    /// A request for a stream: clientv3's metadata and no timeout.
    pub fn stream_request<M>(&self, msg: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            "client-api-version",
            tonic::metadata::MetadataValue::from_static("3.4"),
        );
        if let Some(token) = &self.token {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(token.as_str()) {
                r.metadata_mut().insert("token", v);
            }
        }
        r
    }

    /// A unary call with clientv3's retries and logging. `request_bytes` is the encoded size of
    /// the request (checked against the client's send limit); `call` makes one attempt.
    pub async fn unary<T, F, Fut>(
        &mut self,
        log: &mut dyn Write,
        deadline: Option<Instant>,
        retry: Retry,
        request_bytes: usize,
        mut call: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let quorum = (self.endpoints.len() / 2 + 1) as u32;
        let mut last = CallError::deadline();
        for attempt in 0..UNARY_ATTEMPTS_MAX {
            if attempt > 0 && attempt % quorum == 0 {
                if let Some(d) = deadline {
                    if clock::now() + RETRY_BACKOFF >= d {
                        clock::sleep(d.saturating_duration_since(clock::now())).await;
                        return Err(CallError::deadline());
                    }
                }
                clock::sleep(RETRY_BACKOFF).await;
            }
            let result = self.attempt(deadline, request_bytes, &mut call).await;
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            zap_warn(log, &self.target, attempt, &err.grpc_text());
            if err.is_context_error() {
                if err.deadline_passed || deadline.is_some_and(|d| clock::now() >= d) {
                    return Err(CallError {
                        deadline_passed: true,
                        ..err
                    });
                }
                last = err;
                continue;
            }
            let safe = match retry {
                Retry::Repeatable => err.code == Code::Unavailable,
                Retry::NonRepeatable => {
                    err.code == Code::Unavailable
                        && (err.message == "there is no address available"
                            || err.message == "there is no connection available")
                }
            };
            if !safe {
                return Err(err);
            }
            last = err;
        }
        Err(last)
    }

    async fn attempt<T, F, Fut>(
        &mut self,
        deadline: Option<Instant>,
        request_bytes: usize,
        call: &mut F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let channel = self.channel(deadline).await?;
        if request_bytes > SEND_MESSAGE_BYTES_MAX {
            return Err(CallError::new(
                Code::ResourceExhausted,
                format!("trying to send message larger than max ({request_bytes} vs. {SEND_MESSAGE_BYTES_MAX})"),
            ));
        }
        let token = self.token.clone();
        match deadline {
            None => call(Attempt {
                channel,
                left: None,
                token,
            })
            .await
            .map_err(|s| self.call_failed(&s)),
            Some(d) => {
                let left = d.saturating_duration_since(clock::now());
                if left.is_zero() {
                    return Err(CallError::deadline());
                }
                let attempt = Attempt {
                    channel,
                    left: Some(left),
                    token,
                };
                match tokio::time::timeout(left, call(attempt)).await {
                    Ok(r) => r.map_err(|s| self.call_failed(&s)),
                    Err(_) => Err(CallError::deadline()),
                }
            }
        }
    }

    /// Maps a failed attempt; a broken connection is dropped so the next attempt redials.
    fn call_failed(&mut self, s: &Status) -> CallError {
        if s.code() == Code::Unavailable
            || s.code() == Code::Unknown && s.message().contains("transport")
        {
            self.channel = None;
        }
        let mut e = CallError::from_status(s);
        if e.code == Code::DeadlineExceeded && e.message.is_empty() {
            e.message = "context deadline exceeded".into();
        }
        e
    }

    /// A connected channel, dialling the endpoints in turn (with grpc-go's reconnect backoff)
    /// until one answers or the deadline passes.
    async fn channel(&mut self, deadline: Option<Instant>) -> Result<Channel, CallError> {
        if let Some(c) = &self.channel {
            return Ok(c.clone());
        }
        let mut backoff = RECONNECT_BACKOFF_FIRST;
        loop {
            for ep in self.endpoints.clone() {
                let left = match deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(clock::now());
                        if left.is_zero() {
                            return Err(self.never_connected());
                        }
                        Some(left)
                    }
                    None => None,
                };
                match dial(&ep, left, &self.security).await {
                    Ok(ch) => {
                        self.channel = Some(ch.clone());
                        return Ok(ch);
                    }
                    Err(DialError::Timeout) => return Err(self.never_connected()),
                    Err(DialError::Failed(text)) => self.last_dial_error = Some(text),
                }
            }
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(clock::now());
                    if left <= backoff {
                        clock::sleep(left).await;
                        return Err(self.never_connected());
                    }
                    backoff
                }
                None => backoff,
            };
            clock::sleep(wait).await;
            backoff = backoff.mul_f64(1.6).min(RECONNECT_BACKOFF_MAX);
        }
    }

    /// grpc-go's error for a call whose deadline passed while no connection was ready.
    fn never_connected(&self) -> CallError {
        let message = match (&self.last_dial_error, self.style) {
            (None, _) => "context deadline exceeded".to_string(),
            (Some(_), TargetStyle::Balancer) => {
                "latest balancer error: all SubConns are in TransientFailure".to_string()
            }
            (Some(e), TargetStyle::Passthrough) => format!(
                "latest balancer error: connection error: desc = \"transport: Error while dialing {e}\""
            ),
        };
        CallError {
            deadline_passed: true,
            ..CallError::new(Code::DeadlineExceeded, message)
        }
    }
}

enum DialError {
    Timeout,
    /// Go's `net` error text, e.g. `dial tcp 127.0.0.1:2379: connect: connection refused`.
    Failed(String),
}

/// The URI tonic dials for an etcdctl endpoint (`host:port`, `http://host:port`).
pub fn endpoint_uri(ep: &str) -> String {
    let bare = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("unix://"))
        .or_else(|| ep.strip_prefix("unixs://"))
        .unwrap_or(ep);
    if bare.starts_with("https://") {
        bare.to_string()
    } else {
        format!("http://{bare}")
    }
}

async fn dial(ep: &str, left: Option<Duration>, security: &Security) -> Result<Channel, DialError> {
    let scheme = ["http", "https", "unix", "unixs"]
        .into_iter()
        .find(|s| ep.starts_with(&format!("{s}://")));
    let address = match scheme {
        Some(s) => ep[s.len() + 3..].to_string(),
        None => ep.to_string(),
    };
    let tls = security
        .for_scheme(scheme)
        .map_err(|e| DialError::Failed(format!("dial tcp {address}: {e}")))?;
    let connect = async {
        match tls {
            None => Endpoint::from_shared(endpoint_uri(ep))
                .map_err(|e| DialError::Failed(format!("dial tcp {address}: {e}")))?
                .connect()
                .await
                .map_err(|e| dial_error(&address, &e)),
            Some(config) => tls::dial::Dialer::with_config(config)
                .connect(&format!("https://{address}"))
                .await
                .map_err(|e| dial_error(&address, &e)),
        }
    };
    match left {
        Some(left) => match tokio::time::timeout(left, connect).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Timeout),
        },
        None => connect.await,
    }
}

/// grpc-go's words for a failed dial: Go's `net` error for TCP, and the handshake's own
/// (`transport: authentication handshake failed: x509: …`) for TLS.
fn dial_error(address: &str, e: &(dyn std::error::Error + 'static)) -> DialError {
    let handshake = |tls: &rustls::Error| {
        DialError::Failed(format!(
            "transport: authentication handshake failed: {}",
            tls::go_text(tls)
        ))
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return handshake(tls);
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return handshake(tls);
            }
            let what = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
                _ => io.to_string(),
            };
            return DialError::Failed(format!("dial tcp {address}: {what}"));
        }
        source = s.source();
    }
    DialError::Failed(format!("dial tcp {address}: {e}"))
}

/// How many requests a stream's sending half holds before the sender waits.
pub const STREAM_QUEUE_MAX: usize = 64;

/// The sending half of a bidirectional stream: a queue, and the stream tonic sends from it.
/// Requests queued before the call starts go out with it, which matters because etcd (grpc-go)
/// sends a stream's response headers only with its first message, so a call whose first request
/// waited for the headers would never start.
pub fn outbound<M: Send + 'static>(
    initial: Vec<M>,
) -> (
    tokio::sync::mpsc::Sender<M>,
    impl futures::Stream<Item = M> + Send + 'static,
) {
    assert!(
        initial.len() <= STREAM_QUEUE_MAX,
        "the first requests fit the queue"
    );
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE_MAX);
    for m in initial {
        let queued = tx.try_send(m);
        debug_assert!(queued.is_ok(), "the queue has room for the first requests");
    }
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    (tx, stream)
}

/// Whether clientv3 gives up on a stream after this error (`isHaltErr`): anything but
/// `Unavailable` and `Internal` is final.
pub fn is_halt(code: Code) -> bool {
    code != Code::Unavailable && code != Code::Internal
}

/// The receive limit to set on every generated client.
pub fn recv_limit() -> usize {
    RECV_MESSAGE_BYTES_MAX
}

/// clientv3's zap warning for a failed attempt, one JSON line on stderr.
pub fn zap_warn(log: &mut dyn Write, target: &str, attempt: u32, error: &str) {
    let (secs, nanos) = clock::unix_now();
    let ts = gofmt::zap_time(secs, nanos, clock::local_offset(secs));
    let _ = writeln!(
        log,
        "{{\"level\":\"warn\",\"ts\":\"{ts}\",\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":{},\"attempt\":{attempt},\"error\":{}}}",
        zap_string(target),
        zap_string(error)
    );
}

/// zap's JSON string escaping (unlike encoding/json, it leaves `<`, `>` and `&` alone).
fn zap_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_follow_clientv3() {
        let e = CallError::new(Code::InvalidArgument, "etcdserver: key is not provided");
        assert_eq!(e.etcdctl_text(), "etcdserver: key is not provided");
        assert_eq!(
            e.grpc_text(),
            "rpc error: code = InvalidArgument desc = etcdserver: key is not provided"
        );
        let e = CallError::new(
            Code::ResourceExhausted,
            "trying to send message larger than max (2200010 vs. 2097152)",
        );
        assert_eq!(
            e.etcdctl_text(),
            "rpc error: code = ResourceExhausted desc = trying to send message larger than max (2200010 vs. 2097152)"
        );
        assert_eq!(
            CallError::deadline().etcdctl_text(),
            "context deadline exceeded"
        );
        assert_eq!(code_name(Code::Cancelled), "Canceled");
    }

    #[test]
    fn zap_line_has_clientv3s_shape() {
        let mut out = Vec::new();
        zap_warn(
            &mut out,
            "passthrough:///127.0.0.1:23999",
            0,
            "rpc error: code = DeadlineExceeded desc = latest balancer error: connection error: desc = \"transport: Error while dialing dial tcp 127.0.0.1:23999: connect: connection refused\"",
        );
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("{\"level\":\"warn\",\"ts\":\""), "{line}");
        assert!(line.ends_with(
            "\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":\"passthrough:///127.0.0.1:23999\",\"attempt\":0,\"error\":\"rpc error: code = DeadlineExceeded desc = latest balancer error: connection error: desc = \\\"transport: Error while dialing dial tcp 127.0.0.1:23999: connect: connection refused\\\"\"}\n"
        ), "{line}");
    }

    #[test]
    fn endpoints_become_http_uris() {
        assert_eq!(endpoint_uri("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_uri("http://10.0.0.1:2379"), "http://10.0.0.1:2379");
    }
}
