//! The HTTP/JSON gateway (`POST /v3/kv/range` and friends) against etcd 3.4.23's.
//!
//! Every test sends the same sequence of HTTP requests (with `curl`) to a fresh cairn and a fresh
//! etcd and asserts byte-identical answers: status code and body. The two derive the same cluster
//! and member ids and start at the same revision and term, so only what is really local
//! (database sizes, raft indexes, the client URL) is normalised, and only in the answers that
//! carry it.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Kind, Opts, Server};

/// Bound on one HTTP request, and on waiting for one line of a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer: HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: String,
}

/// POSTs `body` to `path` and returns the answer (`curl` is what users try first).
fn post(server: &Server, path: &str, body: &str) -> Answer {
    request(server, "POST", path, body)
}

fn request(server: &Server, method: &str, path: &str, body: &str) -> Answer {
    // The body goes through stdin: the oversized ones do not fit on a command line.
    let mut child = Command::new("curl")
        .args(["-s", "-X", method, "--max-time"])
        .arg(REQUEST_TIMEOUT.as_secs().to_string())
        .args(["-w", "\n%{http_code}", "--data-binary", "@-"])
        .arg(format!("{}{path}", server.url()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(body.as_bytes())
        .expect("write body to curl");
    drop(stdin);
    let out = child.wait_with_output().expect("wait for curl");
    let text = String::from_utf8(out.stdout).expect("UTF-8 answer");
    let (body, status) = text.rsplit_once('\n').expect("curl wrote the status");
    Answer {
        status: status.parse().expect("status code"),
        body: body.to_string(),
    }
}

/// Replaces the JSON string value of each `"field":"..."` in `body` with `"<field>"`.
fn normalize(body: &str, fields: &[&str]) -> String {
    let mut out = body.to_string();
    for field in fields {
        let pattern = format!("\"{field}\":");
        let mut from = 0;
        while let Some(at) = out[from..].find(&pattern) {
            let start = from + at + pattern.len();
            let rest = &out[start..];
            let end = if let Some(stripped) = rest.strip_prefix('"') {
                1 + stripped.find('"').expect("closing quote") + 1
            } else if let Some(stripped) = rest.strip_prefix('[') {
                1 + stripped.find(']').expect("closing bracket") + 1
            } else {
                rest.find([',', '}']).expect("end of value")
            };
            out.replace_range(start..start + end, &format!("\"<{field}>\""));
            from = start;
        }
    }
    out
}

/// Runs `steps` (path, body, fields to normalise) against a fresh cairn and a fresh etcd and
/// asserts identical answers, step by step.
fn same_answers(steps: &[(&str, &str, &[&str])]) {
    let cairn = Server::start(Kind::Cairn, Opts::default());
    let etcd = Server::start(Kind::Etcd, Opts::default());
    for (path, body, fields) in steps {
        let mut want = post(&etcd, path, body);
        let mut got = post(&cairn, path, body);
        want.body = normalize(&want.body, fields);
        got.body = normalize(&got.body, fields);
        assert_eq!(
            got, want,
            "POST {path} {body}: cairn (left) and etcd (right) differ"
        );
    }
}

const NONE: &[&str] = &[];

#[test]
fn kv_requests_answer_as_etcd_does() {
    same_answers(&[
        // put, under both prefixes etcd 3.4 serves
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, NONE),
        (
            "/v3beta/kv/put",
            r#"{"key":"Zm9vMQ==","value":"MQ=="}"#,
            NONE,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9vMg==","value":"Mg==","prev_kv":true}"#,
            NONE,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9vMg==","value":"Mw==","prevKv":true}"#,
            NONE,
        ),
        // range: one key, a prefix, limit, count_only, keys_only, sort, revisions
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v","range_end":"Zm9w"}"#, NONE),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":"2"}"#,
            NONE,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","limit":1}"#,
            NONE,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#,
            NONE,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","keys_only":true}"#,
            NONE,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sort_target":"MOD"}"#,
            NONE,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":2}"#,
            NONE,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"AA==","range_end":"AA==","revision":"2"}"#,
            NONE,
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":100}"#, NONE),
        // the request forms jsonpb accepts
        ("/v3/kv/range", r#"{"key":"Zm9v","unknown_field":1}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v","limit":null}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v"} trailing"#, NONE),
        ("/v3/kv/range", r#"{"key":"eA==","key":"Zm9v"}"#, NONE),
        // deleterange with prev_kv
        (
            "/v3/kv/deleterange",
            r#"{"key":"Zm9vMQ==","prev_kv":true}"#,
            NONE,
        ),
        ("/v3/kv/deleterange", r#"{"key":"bm9uZQ=="}"#, NONE),
        // txn: a compare that holds, one that fails, nested ops, a duplicate key
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmFy"}],
                "success":[{"request_put":{"key":"Zm9v","value":"YmF6","prev_kv":true}}],
                "failure":[{"request_range":{"key":"Zm9v"}}]}"#,
            NONE,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmFy"}],
                "success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}],
                "failure":[{"requestRange":{"key":"Zm9v"}},
                           {"request_delete_range":{"key":"eA=="}}]}"#,
            NONE,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","target":"MOD","mod_revision":"1","result":"GREATER"},
                           {"key":"Zm9v","target":"CREATE","create_revision":2}],
                "success":[{"request_txn":{}}]}"#,
            NONE,
        ),
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"eA=="}},{"request_put":{"key":"eA=="}}]}"#,
            NONE,
        ),
        // compaction, then the compacted and future revision errors
        ("/v3/kv/compaction", r#"{"revision":"3"}"#, NONE),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#, NONE),
        ("/v3/kv/compaction", r#"{"revision":"1000"}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#, NONE),
        // request errors: etcd's checks, and bodies that are not the message
        ("/v3/kv/range", "{}", NONE),
        ("/v3/kv/range", "", NONE),
        ("/v3/kv/put", r#"{"value":"YmFy"}"#, NONE),
        ("/v3/kv/put", r#"{"key":"Zm9v","lease":"12345"}"#, NONE),
        ("/v3/kv/range", "garbage", NONE),
        ("/v3/kv/range", "[]", NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v""#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v",}"#, NONE),
        ("/v3/kv/range", r#"{"key":123}"#, NONE),
        ("/v3/kv/range", r#"{"key":"foo"}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v_-"}"#, NONE),
        ("/v3/kv/range", r#"{"key":"not base64!"}"#, NONE),
        ("/v3/kv/range", r#"{"key":[102,111,111]}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v","limit":1.5}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v","limit":"abc"}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v","limit":true}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v","limit":"1e2"}"#, NONE),
        ("/v3/cluster/member/remove", r#"{"ID":-1}"#, NONE),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":"BOGUS"}"#,
            NONE,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","result":"BOGUS"}]}"#,
            NONE,
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v","count_only":"yes"}"#, NONE),
        // routes that do not exist
        ("/v3alpha/kv/range", r#"{"key":"Zm9v"}"#, NONE),
        ("/v3/kv/nothing", "{}", NONE),
        ("/v3/maintenance/hashkv", "{}", NONE),
    ]);
}

#[test]
fn oversized_and_wrong_method_requests_answer_as_etcd_does() {
    let cairn = Server::start(Kind::Cairn, Opts::default());
    let etcd = Server::start(Kind::Etcd, Opts::default());
    // Over --max-request-bytes (1.5 MiB) but under the gRPC limit: etcd's own check.
    let big = "eHh4".repeat(1536 * 1024 / 3 + 1);
    // Over the gRPC receive limit (2 MiB): grpc-go's check, with the encoded size.
    let huge = "eHh4".repeat(2048 * 1024 / 3 + 1);
    for value in [&big, &huge] {
        let body = format!(r#"{{"key":"Zm9v","value":"{value}"}}"#);
        let want = post(&etcd, "/v3/kv/put", &body);
        assert_eq!(post(&cairn, "/v3/kv/put", &body), want);
    }
    for method in ["GET", "PUT", "OPTIONS"] {
        let want = request(&etcd, method, "/v3/kv/range", "");
        assert_eq!(
            request(&cairn, method, "/v3/kv/range", ""),
            want,
            "{method}"
        );
    }
}

#[test]
fn lease_requests_answer_as_etcd_does() {
    // The remaining TTL depends on when the second ticks; everything else must match.
    let ttl: &[&str] = &["TTL"];
    same_answers(&[
        ("/v3/lease/grant", r#"{"TTL":60,"ID":7}"#, NONE),
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"7"}"#, NONE),
        ("/v3/lease/grant", r#"{"TTL":"9999999999","ID":"8"}"#, NONE),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","lease":"7"}"#,
            NONE,
        ),
        ("/v3/lease/timetolive", r#"{"ID":7,"keys":true}"#, ttl),
        ("/v3/kv/lease/timetolive", r#"{"ID":"7"}"#, ttl),
        ("/v3/lease/timetolive", r#"{"ID":8}"#, NONE),
        ("/v3/lease/leases", "{}", NONE),
        ("/v3/kv/lease/leases", "", NONE),
        ("/v3/lease/revoke", r#"{"ID":7}"#, NONE),
        ("/v3/kv/lease/revoke", r#"{"ID":7}"#, NONE),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#, NONE),
        ("/v3/lease/leases", "{}", NONE),
    ]);
}

#[test]
fn maintenance_and_cluster_requests_answer_as_etcd_does() {
    // Sizes and raft indexes are each server's own; the client URL is each one's port.
    let status: &[&str] = &["dbSize", "dbSizeInUse", "raftIndex", "raftAppliedIndex"];
    let member: &[&str] = &["clientURLs"];
    same_answers(&[
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, NONE),
        ("/v3/maintenance/status", "{}", status),
        ("/v3beta/maintenance/status", "", status),
        ("/v3/maintenance/alarm", "{}", NONE),
        ("/v3/maintenance/alarm", r#"{"action":"GET"}"#, NONE),
        ("/v3/maintenance/defragment", "{}", NONE),
        (
            "/v3/maintenance/transfer-leadership",
            r#"{"targetID":"10276657743932975437"}"#,
            NONE,
        ),
        (
            "/v3/maintenance/transfer-leadership",
            r#"{"targetID":5}"#,
            NONE,
        ),
        ("/v3/cluster/member/list", "{}", member),
        ("/v3/cluster/member/remove", r#"{"ID":5}"#, NONE),
        ("/v3/cluster/member/promote", r#"{"ID":"5"}"#, NONE),
        (
            "/v3/cluster/member/update",
            r#"{"ID":5,"peerURLs":["http://127.0.0.1:1"]}"#,
            NONE,
        ),
        ("/v3/cluster/member/add", r#"{"peerURLs":["bogus"]}"#, NONE),
    ]);
}

#[test]
fn auth_routes_answer_unimplemented() {
    let cairn = Server::start(Kind::Cairn, Opts::default());
    let unimplemented = Answer {
        status: 501,
        body: r#"{"error":"authentication is not implemented yet","message":"authentication is not implemented yet","code":12}"#.into(),
    };
    for path in [
        "/v3/auth/enable",
        "/v3/auth/user/list",
        "/v3beta/auth/role/get",
    ] {
        assert_eq!(post(&cairn, path, "{}"), unimplemented, "{path}");
    }
    // The body is still decoded first, as etcd decodes it.
    assert_eq!(post(&cairn, "/v3/auth/user/add", "[").status, 400);
}

/// A `curl -N` reading a streaming route; its answer lines arrive on a channel.
struct StreamClient {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl StreamClient {
    fn open(server: &Server, path: &str, body: &str) -> StreamClient {
        let mut child = Command::new("curl")
            .args(["-s", "-N", "-X", "POST", "--data-binary", body])
            .arg(format!("{}{path}", server.url()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn curl");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        StreamClient { child, lines }
    }

    fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(REQUEST_TIMEOUT)
            .unwrap_or_else(|_| panic!("no stream line ({what}) within {REQUEST_TIMEOUT:?}"))
    }

    /// Every line until the stream ends.
    fn rest(self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(REQUEST_TIMEOUT) {
            out.push(line);
        }
        out
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a watch, waits for it to be created, writes, and returns the lines the watch saw.
fn watch_lines(server: &Server) -> Vec<String> {
    post(server, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    let watch = StreamClient::open(
        server,
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v","range_end":"Zm9w","prev_kv":true}}"#,
    );
    let mut lines = vec![watch.next_line("created")];
    post(server, "/v3/kv/put", r#"{"key":"Zm9vMQ==","value":"MQ=="}"#);
    lines.push(watch.next_line("put event"));
    post(server, "/v3/kv/deleterange", r#"{"key":"Zm9v"}"#);
    lines.push(watch.next_line("delete event"));
    lines
}

#[test]
fn watch_stream_delivers_events_as_etcd_does() {
    let cairn = Server::start(Kind::Cairn, Opts::default());
    let etcd = Server::start(Kind::Etcd, Opts::default());
    let want = watch_lines(&etcd);
    assert!(
        want[1].contains(r#""events":[{"kv":{"key":"Zm9vMQ==""#),
        "{want:?}"
    );
    assert_eq!(watch_lines(&cairn), want);
}

#[test]
fn keepalive_stream_answers_as_etcd_does() {
    let cairn = Server::start(Kind::Cairn, Opts::default());
    let etcd = Server::start(Kind::Etcd, Opts::default());
    let lines = |server: &Server| {
        post(server, "/v3/lease/grant", r#"{"TTL":60,"ID":7}"#);
        // Two renewals of a lease, one of an unknown lease; the stream ends with the body.
        let client = StreamClient::open(
            server,
            "/v3/lease/keepalive",
            r#"{"ID":7} {"ID":"7"}
               {"ID":12345}"#,
        );
        client.rest()
    };
    let want = lines(&etcd);
    assert_eq!(want.len(), 3, "{want:?}");
    assert_eq!(lines(&cairn), want);
    // A first request that does not decode is an error answer, not a stream.
    let garbage = post(&etcd, "/v3/lease/keepalive", "garbage");
    assert_eq!(garbage.status, 500);
    assert_eq!(post(&cairn, "/v3/lease/keepalive", "garbage"), garbage);
}

#[test]
fn snapshot_streams_the_backend_then_its_digest_as_etcd_does() {
    // The backends differ (bolt, LMDB), so the shape is compared: lines of `{"result":{"blob":
    // ...}}`, the last one the 32-byte SHA-256 of the others.
    let shape = |server: &Server| {
        let client = StreamClient::open(server, "/v3/maintenance/snapshot", "{}");
        let lines = client.rest();
        assert!(lines.len() >= 2, "{}: {lines:?}", server.kind.label());
        for line in &lines {
            assert!(line.starts_with(r#"{"result":{"blob":""#), "{line}");
        }
        let digest = lines.last().expect("a digest line");
        // 32 bytes are 44 base64 characters.
        assert_eq!(
            digest.len(),
            r#"{"result":{"blob":""}}"#.len() + 44,
            "{digest}"
        );
    };
    shape(&Server::start(Kind::Etcd, Opts::default()));
    shape(&Server::start(Kind::Cairn, Opts::default()));
}
