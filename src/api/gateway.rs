//! # The HTTP/JSON gateway
//!
//! etcd 3.4 answers its v3 API in JSON on the client port, next to gRPC: `POST /v3/kv/put` with
//! the body `{"key":"Zm9v","value":"YmFy"}` is a `Put`. Some client libraries speak only this
//! dialect, so cairn serves the same routes, under the same two prefixes (`/v3/` and
//! `/v3beta/`; etcd 3.4 has no `/v3alpha/`), with the same JSON and the same errors.
//!
//! Each route decodes its body into the request message, calls the very service method the gRPC
//! path calls (so validation, errors and answers cannot drift apart), and encodes the answer.
//!
//! ## The JSON mapping (etcd's grpc-gateway with `OrigName`, without `EmitDefaults`)
//!
//! - Answers name fields as the `.proto` does (`create_revision`, but `ID`, `TTL`, `peerURLs`,
//!   because that is how etcd's proto spells those), leave out zero values, write 64-bit integers
//!   as strings, bytes as standard base64 and enums by name. The serde impls are generated from
//!   the protos by `build.rs` (pbjson).
//! - Requests take either the proto name or the lowerCamelCase JSON name, 64-bit integers as
//!   numbers or strings, enums by name or number; unknown fields are ignored, `null` means "not
//!   set", a repeated key keeps its last value, an empty body is the empty message, and only the
//!   first JSON value of the body is read.
//!
//! ## Errors
//!
//! A failed call answers `{"error":M,"message":M,"code":C}` with `C` the gRPC code and the HTTP
//! status grpc-gateway derives from it (InvalidArgument and OutOfRange 400, FailedPrecondition
//! 412, NotFound 404, ResourceExhausted 429, Unimplemented 501, Unavailable 503, ...). A body that
//! is not valid JSON for the message is InvalidArgument, with Go's `encoding/json` wording for the
//! common mistakes. On a stream, an error before the first answer is a plain error response
//! (code Unknown, as etcd's gateway does); an error after it is one more line,
//! `{"error":{"grpc_code":..,"http_code":..,"message":..,"http_status":..}}`.
//!
//! ## Streams
//!
//! `/v3/watch` and `/v3/lease/keepalive` read a stream of JSON request objects from the body
//! and write one line `{"result":{...}}` per answer, each sent as soon as it exists.
//! `/v3/maintenance/snapshot` streams the backend the same way.
//!
//! ## What is not served
//!
//! etcd 3.4's gateway has no `/v3/maintenance/hashkv` route (it answers 404), so neither does
//! cairn. cairn has no authentication yet: the `/v3/auth/...` routes etcd 3.4 serves exist, decode
//! their body, and answer gRPC Unimplemented, i.e. HTTP 501.

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, on, MethodFilter, MethodRouter};
use axum::Router;
use futures::{Stream, StreamExt};
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use super::cluster::ClusterService;
use super::kv::KvService;
use super::maintenance::MaintenanceService;
use crate::proto::etcdserverpb::cluster_server::Cluster as _;
use crate::proto::etcdserverpb::kv_server::Kv as _;
use crate::proto::etcdserverpb::lease_server::Lease as _;
use crate::proto::etcdserverpb::maintenance_server::Maintenance as _;
use crate::proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserListRequest,
    AuthUserRevokeRoleRequest, AuthenticateRequest, LeaseKeepAliveRequest, WatchRequest,
};
use crate::proto::gojson::syntax_error;
use crate::server::Server;
use crate::tls::dial::Dialer;

/// The path prefixes etcd 3.4 serves its gateway under.
pub const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// JSON bytes a request body may add to its protobuf encoding: base64 makes bytes a third
/// larger, and field names and quotes add a bounded amount per field (a txn has at most
/// `--max-txn-ops` operations per branch).
pub const JSON_OVERHEAD_BYTES: usize = 1024 * 1024;

/// Answers a stream route buffers for a slow client before it stops reading requests.
pub const STREAM_RESPONSES_MAX: usize = 64;

/// The size limits of one gateway request.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Largest protobuf encoding of a request message, as on the gRPC path.
    message_bytes_max: usize,
    /// Largest JSON body (unary) or JSON request object (stream).
    body_bytes_max: usize,
}

impl Limits {
    fn new(server: &Server) -> Limits {
        let message_bytes_max =
            server.config().max_request_bytes + crate::server::GRPC_OVERHEAD_BYTES;
        Limits {
            message_bytes_max,
            body_bytes_max: message_bytes_max * 2 + JSON_OVERHEAD_BYTES,
        }
    }

    /// The gRPC server's check on the decoded message, with grpc-go's wording.
    fn check<M: Message>(&self, msg: &M) -> Result<(), Status> {
        let len = msg.encoded_len();
        if len > self.message_bytes_max {
            return Err(Status::resource_exhausted(format!(
                "grpc: received message larger than max ({len} vs. {})",
                self.message_bytes_max
            )));
        }
        Ok(())
    }

    fn body_too_large(&self) -> Status {
        Status::resource_exhausted(format!(
            "grpc: received message larger than max (JSON body over {} bytes vs. {})",
            self.body_bytes_max, self.message_bytes_max
        ))
    }
}

/// The gateway routes, to be merged into the client port's router.
pub fn routes(server: Server, maintenance: Arc<MaintenanceService>, dialer: Dialer) -> Router {
    let limits = Limits::new(&server);
    let kv = Arc::new(KvService::new(server.clone()));
    let lease = Arc::new(super::lease::LeaseService::new(
        server.clone(),
        dialer.clone(),
    ));
    let cluster = Arc::new(ClusterService::new(server.clone(), dialer.clone()));
    let mut router = Router::new();

    // One unary route: decode the body, call `$svc.$method`, encode the answer.
    macro_rules! unary {
        ($svc:ident, $method:ident, $($path:literal),+) => {
            for path in [$($path),+] {
                let svc = $svc.clone();
                let handler = move |body: Body| {
                    let svc = svc.clone();
                    async move {
                        unary(limits, body, move |req| async move {
                            svc.$method(tonic::Request::new(req)).await
                        })
                        .await
                    }
                };
                for prefix in PREFIXES {
                    router = router.route(&format!("{prefix}{path}"), post(handler.clone()));
                }
            }
        };
    }
    unary!(kv, range, "/kv/range");
    unary!(kv, put, "/kv/put");
    unary!(kv, delete_range, "/kv/deleterange");
    unary!(kv, txn, "/kv/txn");
    unary!(kv, compact, "/kv/compaction");
    unary!(lease, lease_grant, "/lease/grant");
    unary!(lease, lease_revoke, "/lease/revoke", "/kv/lease/revoke");
    unary!(
        lease,
        lease_time_to_live,
        "/lease/timetolive",
        "/kv/lease/timetolive"
    );
    unary!(lease, lease_leases, "/lease/leases", "/kv/lease/leases");
    unary!(maintenance, status, "/maintenance/status");
    unary!(maintenance, alarm, "/maintenance/alarm");
    unary!(maintenance, hash, "/maintenance/hash");
    unary!(maintenance, defragment, "/maintenance/defragment");
    unary!(maintenance, move_leader, "/maintenance/transfer-leadership");
    unary!(cluster, member_list, "/cluster/member/list");
    unary!(cluster, member_add, "/cluster/member/add");
    unary!(cluster, member_remove, "/cluster/member/remove");
    unary!(cluster, member_update, "/cluster/member/update");
    unary!(cluster, member_promote, "/cluster/member/promote");

    // Authentication is not implemented: the routes decode their request like etcd's and
    // answer Unimplemented (HTTP 501).
    macro_rules! auth {
        ($($req:ty => $path:literal),+ $(,)?) => {
            $(
                let handler = move |body: Body| async move {
                    unary(limits, body, |_req: $req| async {
                        Err::<tonic::Response<()>, _>(Status::unimplemented(
                            "authentication is not implemented yet",
                        ))
                    })
                    .await
                };
                for prefix in PREFIXES {
                    router = router.route(&format!("{prefix}{}", $path), post(handler));
                }
            )+
        };
    }
    auth!(
        AuthEnableRequest => "/auth/enable",
        AuthDisableRequest => "/auth/disable",
        AuthenticateRequest => "/auth/authenticate",
        AuthUserAddRequest => "/auth/user/add",
        AuthUserGetRequest => "/auth/user/get",
        AuthUserListRequest => "/auth/user/list",
        AuthUserDeleteRequest => "/auth/user/delete",
        AuthUserChangePasswordRequest => "/auth/user/changepw",
        AuthUserGrantRoleRequest => "/auth/user/grant",
        AuthUserRevokeRoleRequest => "/auth/user/revoke",
        AuthRoleAddRequest => "/auth/role/add",
        AuthRoleGetRequest => "/auth/role/get",
        AuthRoleListRequest => "/auth/role/list",
        AuthRoleDeleteRequest => "/auth/role/delete",
        AuthRoleGrantPermissionRequest => "/auth/role/grant",
        AuthRoleRevokePermissionRequest => "/auth/role/revoke",
    );

    {
        let server = server.clone();
        let handler = move |body: Body| watch(server.clone(), limits, body);
        for prefix in PREFIXES {
            router = router.route(&format!("{prefix}/watch"), post(handler.clone()));
        }
    }
    {
        let server = server.clone();
        let handler = move |body: Body| keep_alive(server.clone(), dialer.clone(), limits, body);
        for prefix in PREFIXES {
            router = router.route(&format!("{prefix}/lease/keepalive"), post(handler.clone()));
        }
    }
    {
        let maintenance = maintenance.clone();
        let handler = move |body: Body| {
            let maintenance = maintenance.clone();
            async move {
                let req = match read_unary(limits, body).await {
                    Ok(req) => req,
                    Err(status) => return error_response(&status),
                };
                match maintenance.snapshot(tonic::Request::new(req)).await {
                    Ok(stream) => stream_response(stream.into_inner()),
                    Err(status) => error_response(&status),
                }
            }
        };
        for prefix in PREFIXES {
            router = router.route(
                &format!("{prefix}/maintenance/snapshot"),
                post(handler.clone()),
            );
        }
    }

    // Anything else under a gateway prefix is grpc-gateway's 404; `/v3alpha/` is not a gateway
    // prefix in etcd 3.4, so it gets Go's plain "page not found".
    for prefix in PREFIXES {
        router = router.route(
            &format!("{prefix}/{{*rest}}"),
            any(|method: Method| async move {
                if method == Method::OPTIONS {
                    StatusCode::OK.into_response()
                } else {
                    plain(StatusCode::NOT_FOUND, "Not Found\n")
                }
            }),
        );
    }
    router = router.route(
        "/v3alpha/{*rest}",
        any(|| async { plain(StatusCode::NOT_FOUND, "404 page not found\n") }),
    );
    router.layer(axum::middleware::map_response(cors))
}

/// A POST route that answers OPTIONS (CORS preflight) with 200 and other methods with 405.
fn post<H, T>(handler: H) -> MethodRouter
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    on(MethodFilter::POST, handler)
        .options(|| async { StatusCode::OK })
        .fallback(|| async { plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n") })
}

/// etcd answers every request on its client port with these CORS headers.
async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    // grpc-gateway's 405 names no allowed methods.
    headers.remove(header::ALLOW);
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Decodes the body, calls `call`, and encodes its answer or error.
async fn unary<Req, Resp, F, Fut>(limits: Limits, body: Body, call: F) -> Response
where
    Req: DeserializeOwned + Message + Default,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let req = match read_unary(limits, body).await {
        Ok(req) => req,
        Err(status) => return error_response(&status),
    };
    match call(req).await {
        Ok(resp) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::HeaderName::from_static("grpc-metadata-content-type"),
                    "application/grpc",
                ),
            ],
            to_json(resp.get_ref()),
        )
            .into_response(),
        Err(status) => error_response(&status),
    }
}

/// Reads a whole unary body and decodes its first JSON value as `Req`.
async fn read_unary<Req>(limits: Limits, body: Body) -> Result<Req, Status>
where
    Req: DeserializeOwned + Message + Default,
{
    let bytes = axum::body::to_bytes(body, limits.body_bytes_max)
        .await
        .map_err(|_| limits.body_too_large())?;
    let mut values = serde_json::Deserializer::from_slice(&bytes).into_iter::<serde_json::Value>();
    let req = match values.next() {
        None => Req::default(),
        Some(Ok(value)) => decode(value)?,
        Some(Err(e)) => return Err(Status::invalid_argument(syntax_error(&bytes, &e))),
    };
    limits.check(&req)?;
    Ok(req)
}

/// Decodes one JSON value as a request message, as etcd's gateway (golang/protobuf's jsonpb)
/// does: `null` means unset, and the value must be an object.
fn decode<Req: DeserializeOwned + Default>(mut value: serde_json::Value) -> Result<Req, Status> {
    use serde_json::Value;
    let kind = match &value {
        Value::Null => return Ok(Req::default()),
        Value::Object(_) => None,
        Value::Array(_) => Some("array"),
        Value::String(_) => Some("string"),
        Value::Number(_) => Some("number"),
        Value::Bool(_) => Some("bool"),
    };
    if let Some(kind) = kind {
        return Err(Status::invalid_argument(format!(
            "json: cannot unmarshal {kind} into Go value of type map[string]json.RawMessage"
        )));
    }
    drop_nulls(&mut value);
    serde_json::from_value(value).map_err(|e| Status::invalid_argument(go_type_error(&e)))
}

/// Removes every object member whose value is `null`: for jsonpb a null field is an unset one.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Go's wording for a value of the wrong JSON type, for the common cases; serde's otherwise.
fn go_type_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let Some(rest) = text.strip_prefix("invalid type: ") else {
        return text;
    };
    let json_kind = if rest.starts_with("integer") || rest.starts_with("floating point") {
        "number"
    } else if rest.starts_with("string") {
        "string"
    } else if rest.starts_with("boolean") {
        "bool"
    } else if rest.starts_with("sequence") {
        "array"
    } else if rest.starts_with("map") {
        "object"
    } else {
        return text;
    };
    // Integers and bytes have their own messages (src/proto/gojson.rs); jsonpb reads a message
    // as a map of raw values and a repeated field as a list of them before looking inside.
    let go_type = if rest.contains("expected a boolean") {
        "bool"
    } else if rest.contains("expected a string") {
        "string"
    } else if rest.contains("expected a sequence") {
        "[]json.RawMessage"
    } else if rest.contains("expected struct ") {
        "map[string]json.RawMessage"
    } else {
        return text;
    };
    format!("json: cannot unmarshal {json_kind} into Go value of type {go_type}")
}

/// Encodes an answer as etcd's gateway does; Go's encoder also escapes `<`, `>` and `&`, which
/// appear in JSON only inside strings, so replacing them byte for byte is safe.
fn to_json<T: Serialize>(msg: &T) -> Vec<u8> {
    let json = serde_json::to_vec(msg).expect("generated serde impls encode every message");
    if !json.iter().any(|b| matches!(b, b'<' | b'>' | b'&')) {
        return json;
    }
    let mut out = Vec::with_capacity(json.len() + 16);
    for b in json {
        match b {
            b'<' => out.extend_from_slice(br"\u003c"),
            b'>' => out.extend_from_slice(br"\u003e"),
            b'&' => out.extend_from_slice(br"\u0026"),
            b => out.push(b),
        }
    }
    out
}

/// The HTTP status grpc-gateway answers for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_string(s: &str) -> String {
    String::from_utf8(to_json(&s)).expect("JSON is UTF-8")
}

/// `{"error":M,"message":M,"code":C}` with grpc-gateway's HTTP status for the code.
fn error_response(status: &Status) -> Response {
    let message = json_string(status.message());
    let body = format!(
        r#"{{"error":{message},"message":{message},"code":{}}}"#,
        status.code() as i32
    );
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// One line of a streamed answer: `{"result":...}` or, for an error, grpc-gateway's stream
/// error object.
fn stream_line<T: Serialize>(item: Result<T, Status>) -> Bytes {
    let mut line = match item {
        Ok(msg) => {
            let mut line = br#"{"result":"#.to_vec();
            line.extend_from_slice(&to_json(&msg));
            line.push(b'}');
            line
        }
        Err(status) => {
            let http = http_status(status.code());
            format!(
                r#"{{"error":{{"grpc_code":{},"http_code":{},"message":{},"http_status":{}}}}}"#,
                status.code() as i32,
                http.as_u16(),
                json_string(status.message()),
                json_string(http.canonical_reason().unwrap_or("")),
            )
            .into_bytes()
        }
    };
    line.push(b'\n');
    Bytes::from(line)
}

/// A 200 answer whose body is one line per item of `stream`, each written when it arrives.
fn stream_response<T, S>(stream: S) -> Response
where
    T: Serialize,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    // An error ends the stream after its line, as it ends the gRPC stream.
    let lines = stream
        .scan(false, |failed, item| {
            let out = if *failed {
                None
            } else {
                *failed = item.is_err();
                Some(Ok::<_, std::convert::Infallible>(stream_line(item)))
            };
            futures::future::ready(out)
        })
        .boxed();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static("grpc-metadata-content-type"),
                "application/grpc",
            ),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The request objects of a streaming body, decoded one at a time as their bytes arrive.
struct JsonRequests {
    data: futures::stream::BoxStream<'static, Result<Bytes, axum::Error>>,
    buffer: Vec<u8>,
    ended: bool,
    limits: Limits,
}

impl JsonRequests {
    fn new(body: Body, limits: Limits) -> JsonRequests {
        JsonRequests {
            data: body.into_data_stream().boxed(),
            buffer: Vec::new(),
            ended: false,
            limits,
        }
    }

    /// The next request, `None` at the end of the body.
    async fn next<Req: DeserializeOwned + Message + Default>(
        &mut self,
    ) -> Option<Result<Req, Status>> {
        loop {
            let start = self
                .buffer
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buffer.len());
            self.buffer.drain(..start);
            if !self.buffer.is_empty() {
                let mut values = serde_json::Deserializer::from_slice(&self.buffer)
                    .into_iter::<serde_json::Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        self.buffer.drain(..used);
                        return Some(decode(value).and_then(|req: Req| {
                            self.limits.check(&req)?;
                            Ok(req)
                        }));
                    }
                    Some(Err(e)) if e.is_eof() && !self.ended => {}
                    Some(Err(e)) => {
                        return Some(Err(Status::invalid_argument(syntax_error(
                            &self.buffer,
                            &e,
                        ))))
                    }
                    None => {}
                }
            } else if self.ended {
                return None;
            }
            if self.ended {
                return Some(Err(Status::invalid_argument("unexpected EOF")));
            }
            if self.buffer.len() > self.limits.body_bytes_max {
                return Some(Err(self.limits.body_too_large()));
            }
            match self.data.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }
}

/// Reads the first request of a stream before answering: like etcd's gateway, a first request
/// that does not decode is an error response (code Unknown), not a stream.
async fn first_request<Req: DeserializeOwned + Message + Default>(
    requests: &mut JsonRequests,
) -> Result<Option<Req>, Response> {
    match requests.next::<Req>().await {
        None => Ok(None),
        Some(Ok(req)) => Ok(Some(req)),
        Some(Err(status)) => Err(error_response(&Status::unknown(
            status.message().to_string(),
        ))),
    }
}

/// `/v3/watch`: the body's WatchRequests feed one watch stream, as a gRPC Watch call does.
async fn watch(server: Server, limits: Limits, body: Body) -> Response {
    let mut requests = JsonRequests::new(body, limits);
    let first = match first_request::<WatchRequest>(&mut requests).await {
        Ok(first) => first,
        Err(response) => return response,
    };
    // Later requests that do not decode end the request side only, as in etcd's gateway.
    let rest = futures::stream::unfold(requests, |mut requests| async move {
        match requests.next::<WatchRequest>().await {
            Some(Ok(req)) => Some((req, requests)),
            _ => None,
        }
    });
    let all = futures::stream::iter(first)
        .chain(rest)
        .map(Ok::<_, Status>)
        .chain(futures::stream::pending())
        .boxed();
    let responses = crate::server::watches::open(&server, all);
    let stream = futures::stream::unfold(responses, |mut responses| async move {
        responses.recv().await.map(|r| (Ok(r), responses))
    });
    stream_response(stream)
}

/// `/v3/lease/keepalive`: one renewal per request object, answered in order, as the gRPC
/// LeaseKeepAlive stream does.
async fn keep_alive(server: Server, dialer: Dialer, limits: Limits, body: Body) -> Response {
    let mut requests = JsonRequests::new(body, limits);
    let first = match first_request::<LeaseKeepAliveRequest>(&mut requests).await {
        Ok(first) => first,
        Err(response) => return response,
    };
    let (tx, rx) = mpsc::channel(STREAM_RESPONSES_MAX);
    tokio::spawn(async move {
        let mut forward = None;
        let mut next = first;
        while let Some(req) = next {
            let answer = super::lease::keep_alive(&server, &dialer, &mut forward, req.id).await;
            let failed = answer.is_err();
            if tx.send(answer).await.is_err() || failed {
                return;
            }
            next = match requests.next::<LeaseKeepAliveRequest>().await {
                Some(Ok(req)) => Some(req),
                _ => None,
            };
        }
    });
    stream_response(tokio_stream::wrappers::ReceiverStream::new(rx))
}
