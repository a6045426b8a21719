//! The KV API through the Rust `etcd-client` crate (tonic, real HTTP/2) against a real `cairn`
//! process: put, range, delete, txn and compaction round trips, asserting revisions, versions,
//! create/mod revisions, prev_kv, and error codes and messages.
//!
//! Every test body runs twice: against cairn (the test) and against the reference etcd (the check
//! that the expectations written here are etcd's behaviour, not our guess at it). The `_etcd`
//! variants need /usr/bin/etcd and fail with a clear message without it.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Kind, Opts, Server};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions,
    ResponseHeader, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};

/// The ids etcd derives for member `default` advertising http://localhost:2380 in cluster
/// `etcd-cluster` (the well-known ids of a default etcd), which cairn must derive the same way.
const CLUSTER_ID: u64 = 0xcdf8_1819_4e3a_8c32;
const MEMBER_ID: u64 = 0x8e9e_05c5_2164_694d;
/// A fresh single member campaigns once (term 1 -> 2) and leads from then on.
const RAFT_TERM: u64 = 2;
/// Bound on any single RPC in these tests.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(server: &Server) -> Client {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(RPC_TIMEOUT);
    Client::connect([server.url()], Some(options))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect to {} at {}: {e}",
                server.kind.label(),
                server.url()
            )
        })
}

/// Starts a fresh server of `kind` (same flags as the differential tests) and connects to it.
async fn start(kind: Kind, extra_args: &[&str]) -> (Server, Client) {
    let server = Server::start(
        kind,
        Opts {
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            ..Opts::default()
        },
    );
    let client = connect(&server).await;
    (server, client)
}

fn assert_header(header: Option<&ResponseHeader>, revision: i64) {
    let h = header.expect("response has a header");
    assert_eq!(h.cluster_id(), CLUSTER_ID, "cluster_id");
    assert_eq!(h.member_id(), MEMBER_ID, "member_id");
    assert_eq!(h.raft_term(), RAFT_TERM, "raft_term");
    assert_eq!(h.revision(), revision, "header revision");
}

/// (key, value, create_revision, mod_revision, version) of a kv, for compact assertions.
fn kv(k: &KeyValue) -> (String, String, i64, i64, i64) {
    (
        String::from_utf8_lossy(k.key()).into_owned(),
        String::from_utf8_lossy(k.value()).into_owned(),
        k.create_revision(),
        k.mod_revision(),
        k.version(),
    )
}

fn kvs(list: &[KeyValue]) -> Vec<(String, String, i64, i64, i64)> {
    list.iter().map(kv).collect()
}

fn keys(list: &[KeyValue]) -> Vec<String> {
    list.iter()
        .map(|k| String::from_utf8_lossy(k.key()).into_owned())
        .collect()
}

fn t(
    key: &str,
    value: &str,
    create: i64,
    modr: i64,
    version: i64,
) -> (String, String, i64, i64, i64) {
    (key.into(), value.into(), create, modr, version)
}

/// The gRPC code (as its name, e.g. "OutOfRange") and message of a failed call.
fn grpc_error<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>) -> (String, String) {
    match result {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            (format!("{:?}", status.code()), status.message().to_string())
        }
        other => panic!("expected a gRPC status error, got {other:?}"),
    }
}

fn pair(code: &str, message: &str) -> (String, String) {
    (code.to_string(), message.to_string())
}

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";

async fn put_get_round_trip(kind: Kind) {
    let (_server, mut c) = start(kind, &[]).await;

    // A fresh store is at revision 1 with no keys.
    let r = c.get("foo", None).await.unwrap();
    assert_header(r.header(), 1);
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 0);
    assert!(!r.more());

    let r = c.put("foo", "bar", None).await.unwrap();
    assert_header(r.header(), 2);
    assert!(r.prev_key().is_none());

    let r = c.get("foo", None).await.unwrap();
    assert_header(r.header(), 2);
    assert_eq!(kvs(r.kvs()), [t("foo", "bar", 2, 2, 1)]);
    assert_eq!(r.count(), 1);
    assert_eq!(r.kvs()[0].lease(), 0);

    // Overwrite with prev_kv: the previous version comes back; create_revision stays.
    let r = c
        .put("foo", "baz", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_header(r.header(), 3);
    assert_eq!(r.prev_key().map(kv), Some(t("foo", "bar", 2, 2, 1)));
    let r = c.get("foo", None).await.unwrap();
    assert_eq!(kvs(r.kvs()), [t("foo", "baz", 2, 3, 2)]);

    // prev_kv of a new key is absent.
    let r = c
        .put("other", "1", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_header(r.header(), 4);
    assert!(r.prev_key().is_none());

    // ignore_value keeps the value and still makes a new revision and version.
    let r = c
        .put("foo", "", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap();
    assert_header(r.header(), 5);
    let r = c.get("foo", None).await.unwrap();
    assert_eq!(kvs(r.kvs()), [t("foo", "baz", 2, 5, 3)]);

    // Old revisions stay readable until compacted.
    let r = c
        .get("foo", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_header(r.header(), 5);
    assert_eq!(kvs(r.kvs()), [t("foo", "bar", 2, 2, 1)]);
    let r = c
        .get("other", Some(GetOptions::new().with_revision(3)))
        .await
        .unwrap();
    assert!(r.kvs().is_empty());

    // Binary keys and values survive the round trip untouched.
    let key = vec![0u8, 255, 1, b'\n', 0];
    let value = vec![255u8, 0, 0, 7];
    c.put(key.clone(), value.clone(), None).await.unwrap();
    let r = c.get(key.clone(), None).await.unwrap();
    assert_eq!(r.kvs().len(), 1);
    assert_eq!(r.kvs()[0].key(), &key[..]);
    assert_eq!(r.kvs()[0].value(), &value[..]);

    // A large value (1 MiB, under the 1.5 MiB request limit) round trips.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = c.put("big", big.clone(), None).await.unwrap();
    assert_header(r.header(), 7);
    let r = c.get("big", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), &big[..]);
}

async fn range_options(kind: Kind) {
    let (_server, mut c) = start(kind, &[]).await;
    // rev 2..=11: a=3 b=1 c=2 d=5 e=4 b=6 a=7 aa=8 ab=9 z=last
    for (k, v) in [
        ("a", "3"),
        ("b", "1"),
        ("c", "2"),
        ("d", "5"),
        ("e", "4"),
        ("b", "6"),
        ("a", "7"),
        ("aa", "8"),
        ("ab", "9"),
        ("z", "last"),
    ] {
        c.put(k, v, None).await.unwrap();
    }
    let all = || GetOptions::new().with_all_keys();

    let r = c.get("", Some(all())).await.unwrap();
    assert_header(r.header(), 11);
    assert_eq!(keys(r.kvs()), ["a", "aa", "ab", "b", "c", "d", "e", "z"]);
    assert_eq!(r.count(), 8);
    assert_eq!(
        kvs(r.kvs())[..4],
        [
            t("a", "7", 2, 8, 2),
            t("aa", "8", 9, 9, 1),
            t("ab", "9", 10, 10, 1),
            t("b", "6", 3, 7, 2)
        ]
    );

    // Ranges, prefixes and from-key.
    let r = c
        .get("a", Some(GetOptions::new().with_range("c")))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["a", "aa", "ab", "b"]);
    let r = c
        .get("a", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["a", "aa", "ab"]);
    let r = c
        .get("d", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["d", "e", "z"]);
    let r = c
        .get("z", Some(GetOptions::new().with_range("a")))
        .await
        .unwrap();
    assert!(r.kvs().is_empty());

    // Limit: `more` and `count` describe the whole range.
    let r = c.get("", Some(all().with_limit(3))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["a", "aa", "ab"]);
    assert!(r.more());
    assert_eq!(r.count(), 8);
    let r = c.get("", Some(all().with_limit(8))).await.unwrap();
    assert!(!r.more());
    assert_eq!(r.kvs().len(), 8);

    // Sorts.
    let sorted = |target, order| all().with_sort(target, order);
    let r = c
        .get("", Some(sorted(SortTarget::Key, SortOrder::Descend)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["z", "e", "d", "c", "b", "ab", "aa", "a"]);
    let r = c
        .get("", Some(sorted(SortTarget::Value, SortOrder::Ascend)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["c", "e", "d", "b", "a", "aa", "ab", "z"]);
    let r = c
        .get("", Some(sorted(SortTarget::Mod, SortOrder::Descend)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["z", "ab", "aa", "a", "b", "e", "d", "c"]);
    let r = c
        .get("", Some(sorted(SortTarget::Create, SortOrder::Ascend)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["a", "b", "c", "d", "e", "aa", "ab", "z"]);
    // Equal versions keep key order (the sort is stable).
    let r = c
        .get("", Some(sorted(SortTarget::Version, SortOrder::Descend)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["a", "b", "aa", "ab", "c", "d", "e", "z"]);
    // A sort with a limit sorts the whole range first, then cuts.
    let r = c
        .get(
            "",
            Some(sorted(SortTarget::Value, SortOrder::Descend).with_limit(2)),
        )
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["z", "ab"]);
    assert!(r.more());
    assert_eq!(r.count(), 8);

    // keys_only and count_only.
    let r = c.get("", Some(all().with_keys_only())).await.unwrap();
    assert_eq!(r.kvs().len(), 8);
    assert!(r.kvs().iter().all(|k| k.value().is_empty()));
    assert_eq!(kv(&r.kvs()[0]), t("a", "", 2, 8, 2));
    let r = c.get("", Some(all().with_count_only())).await.unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 8);
    assert_header(r.header(), 11);

    // Revision filters (etcdctl 3.4 has no flags for these).
    let r = c
        .get("", Some(all().with_min_mod_revision(8)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["a", "aa", "ab", "z"]);
    let r = c
        .get("", Some(all().with_max_mod_revision(5)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["c", "d"]);
    let r = c
        .get("", Some(all().with_min_create_revision(9)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["aa", "ab", "z"]);
    let r = c
        .get("", Some(all().with_max_create_revision(3)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["a", "b"]);
    let r = c
        .get(
            "",
            Some(all().with_min_mod_revision(4).with_max_mod_revision(7)),
        )
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["b", "c", "d", "e"]);

    // A range at an old revision sees the old versions.
    let r = c.get("", Some(all().with_revision(6))).await.unwrap();
    assert_header(r.header(), 11);
    assert_eq!(
        kvs(r.kvs()),
        [
            t("a", "3", 2, 2, 1),
            t("b", "1", 3, 3, 1),
            t("c", "2", 4, 4, 1),
            t("d", "5", 5, 5, 1),
            t("e", "4", 6, 6, 1)
        ]
    );

    // Serializable reads see the same data.
    let r = c
        .get("a", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_header(r.header(), 11);
    assert_eq!(kvs(r.kvs()), [t("a", "7", 2, 8, 2)]);
}

async fn delete_round_trip(kind: Kind) {
    let (_server, mut c) = start(kind, &[]).await;
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
        c.put(k, v, None).await.unwrap();
    }
    // rev 6
    let r = c.delete("a", None).await.unwrap();
    assert_header(r.header(), 7);
    assert_eq!(r.deleted(), 1);
    assert!(r.prev_kvs().is_empty());

    // Deleting a missing key does not make a revision.
    let r = c.delete("a", None).await.unwrap();
    assert_header(r.header(), 7);
    assert_eq!(r.deleted(), 0);

    // A range delete is one revision, with every prev_kv.
    let r = c
        .delete(
            "b",
            Some(DeleteOptions::new().with_range("d").with_prev_key()),
        )
        .await
        .unwrap();
    assert_header(r.header(), 8);
    assert_eq!(r.deleted(), 2);
    assert_eq!(
        kvs(r.prev_kvs()),
        [t("b", "2", 3, 3, 1), t("c", "3", 4, 4, 1)]
    );

    let r = c
        .delete("", Some(DeleteOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_header(r.header(), 9);
    assert_eq!(r.deleted(), 2);

    // A re-created key starts a new generation: new create_revision, version 1.
    c.put("b", "again", None).await.unwrap();
    let r = c.get("b", None).await.unwrap();
    assert_eq!(kvs(r.kvs()), [t("b", "again", 10, 10, 1)]);

    // The deleted generation is still visible at its revisions.
    let r = c
        .get("b", Some(GetOptions::new().with_revision(7)))
        .await
        .unwrap();
    assert_eq!(kvs(r.kvs()), [t("b", "2", 3, 3, 1)]);
    let r = c
        .get("b", Some(GetOptions::new().with_revision(8)))
        .await
        .unwrap();
    assert!(r.kvs().is_empty());
}

/// The raft index once the server's own start-up entries (etcd sets the cluster version a moment
/// after it serves) have settled: unchanged over 300 ms.
async fn settled_raft_index(c: &mut Client) -> u64 {
    let mut last = c.status().await.unwrap().raft_index();
    loop {
        real_tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = c.status().await.unwrap().raft_index();
        if now == last {
            return now;
        }
        last = now;
    }
}

async fn txn_round_trip(kind: Kind) {
    let (_server, mut c) = start(kind, &[]).await;
    c.put("k1", "v1", None).await.unwrap(); // rev 2
    c.put("k2", "v2", None).await.unwrap(); // rev 3
    c.put("k2", "v2b", None).await.unwrap(); // rev 4

    // Success branch: every compare holds.
    let txn = Txn::new()
        .when([
            Compare::value("k1", CompareOp::Equal, "v1"),
            Compare::version("k2", CompareOp::Equal, 2),
            Compare::create_revision("k2", CompareOp::Less, 4),
            Compare::mod_revision("k2", CompareOp::Greater, 3),
            Compare::value("k1", CompareOp::NotEqual, "x"),
        ])
        .and_then([
            TxnOp::put("k3", "v3", Some(PutOptions::new().with_prev_key())),
            TxnOp::get("k", Some(GetOptions::new().with_prefix())),
            TxnOp::delete("k1", Some(DeleteOptions::new().with_prev_key())),
        ])
        .or_else([TxnOp::put("never", "1", None)]);
    let r = c.txn(txn).await.unwrap();
    assert_header(r.header(), 5);
    assert!(r.succeeded());
    let ops = r.op_responses();
    assert_eq!(ops.len(), 3);
    match &ops[0] {
        TxnOpResponse::Put(p) => {
            assert_eq!(p.header().unwrap().revision(), 5);
            assert!(p.prev_key().is_none());
        }
        other => panic!("expected a put response, got {other:?}"),
    }
    match &ops[1] {
        // Reads inside a txn see the txn's own earlier writes.
        TxnOpResponse::Get(g) => {
            assert_eq!(g.header().unwrap().revision(), 5);
            assert_eq!(
                kvs(g.kvs()),
                [
                    t("k1", "v1", 2, 2, 1),
                    t("k2", "v2b", 3, 4, 2),
                    t("k3", "v3", 5, 5, 1)
                ]
            );
        }
        other => panic!("expected a range response, got {other:?}"),
    }
    match &ops[2] {
        TxnOpResponse::Delete(d) => {
            assert_eq!(d.deleted(), 1);
            assert_eq!(kvs(d.prev_kvs()), [t("k1", "v1", 2, 2, 1)]);
        }
        other => panic!("expected a delete response, got {other:?}"),
    }
    // A txn is one revision, however many writes it holds.
    let r = c.get("k3", None).await.unwrap();
    assert_eq!(kvs(r.kvs()), [t("k3", "v3", 5, 5, 1)]);
    assert!(c.get("k1", None).await.unwrap().kvs().is_empty());

    // Failure branch: one compare fails.
    let txn = Txn::new()
        .when([
            Compare::value("k2", CompareOp::Equal, "v2b"),
            Compare::version("k2", CompareOp::Greater, 5),
        ])
        .and_then([TxnOp::put("never", "1", None)])
        .or_else([
            TxnOp::put("k2", "v2c", Some(PutOptions::new().with_prev_key())),
            TxnOp::get("k2", Some(GetOptions::new().with_revision(3))),
        ]);
    let r = c.txn(txn).await.unwrap();
    assert_header(r.header(), 6);
    assert!(!r.succeeded());
    let ops = r.op_responses();
    match &ops[0] {
        TxnOpResponse::Put(p) => {
            assert_eq!(p.prev_key().map(kv), Some(t("k2", "v2b", 3, 4, 2)))
        }
        other => panic!("expected a put response, got {other:?}"),
    }
    match &ops[1] {
        TxnOpResponse::Get(g) => assert_eq!(kvs(g.kvs()), [t("k2", "v2", 3, 3, 1)]),
        other => panic!("expected a range response, got {other:?}"),
    }
    assert!(c.get("never", None).await.unwrap().kvs().is_empty());

    // A read-only txn makes no revision; compares on a missing key see version/create/mod 0.
    let txn = Txn::new()
        .when([
            Compare::version("missing", CompareOp::Equal, 0),
            Compare::create_revision("missing", CompareOp::Equal, 0),
            Compare::mod_revision("missing", CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::get("k2", None)]);
    let raft_index = settled_raft_index(&mut c).await;
    let r = c.txn(txn).await.unwrap();
    assert!(r.succeeded());
    assert_header(r.header(), 6);
    match &r.op_responses()[0] {
        TxnOpResponse::Get(g) => {
            assert_eq!(g.header().unwrap().revision(), 6);
            assert_eq!(kvs(g.kvs()), [t("k2", "v2c", 3, 6, 3)]);
        }
        other => panic!("expected a range response, got {other:?}"),
    }
    // It is served like a range, without a log entry. A nested txn, even one that only reads,
    // goes through the log (etcd's isTxnReadonly looks at the top level only).
    assert_eq!(c.status().await.unwrap().raft_index(), raft_index);
    let nested = Txn::new().and_then([TxnOp::txn(
        Txn::new().and_then([TxnOp::get("k", Some(GetOptions::new().with_prefix()))]),
    )]);
    let r = c.txn(nested).await.unwrap();
    assert!(r.succeeded());
    assert_header(r.header(), 6);
    assert_eq!(c.status().await.unwrap().raft_index(), raft_index + 1);

    // A value compare on a missing key is false.
    let txn = Txn::new()
        .when([Compare::value("missing", CompareOp::NotEqual, "x")])
        .and_then([TxnOp::put("never", "1", None)]);
    let r = c.txn(txn).await.unwrap();
    assert!(!r.succeeded());
    assert_header(r.header(), 6);

    // Range compares: every key in [k2, k4) must hold.
    let txn = Txn::new()
        .when([Compare::version("k2", CompareOp::Greater, 0).with_range("k4")])
        .and_then([TxnOp::put("ranged", "yes", None)]);
    let r = c.txn(txn).await.unwrap();
    assert!(r.succeeded());
    assert_header(r.header(), 7);
}

async fn compaction_round_trip(kind: Kind) {
    let (_server, mut c) = start(kind, &[]).await;
    for v in ["1", "2", "3"] {
        c.put("a", v, None).await.unwrap(); // revs 2, 3, 4
    }
    c.put("b", "1", None).await.unwrap(); // rev 5

    let r = c.compact(3, None).await.unwrap();
    assert_header(r.header(), 5);

    // Below the compacted revision: OutOfRange, etcd's exact text.
    let e = grpc_error(c.get("a", Some(GetOptions::new().with_revision(2))).await);
    assert_eq!(e, pair("OutOfRange", COMPACTED));
    // At the compacted revision: still readable.
    let r = c
        .get("a", Some(GetOptions::new().with_revision(3)))
        .await
        .unwrap();
    assert_eq!(kvs(r.kvs()), [t("a", "2", 2, 3, 2)]);
    // Past the current revision.
    let e = grpc_error(c.get("a", Some(GetOptions::new().with_revision(6))).await);
    assert_eq!(e, pair("OutOfRange", FUTURE_REV));
    // Compacting again at or below the compacted revision, or in the future.
    assert_eq!(
        grpc_error(c.compact(3, None).await),
        pair("OutOfRange", COMPACTED)
    );
    assert_eq!(
        grpc_error(c.compact(2, None).await),
        pair("OutOfRange", COMPACTED)
    );
    assert_eq!(
        grpc_error(c.compact(6, None).await),
        pair("OutOfRange", FUTURE_REV)
    );
    // A txn with a read below the compacted revision fails as a whole.
    let txn = Txn::new().and_then([
        TxnOp::put("c", "1", None),
        TxnOp::get("a", Some(GetOptions::new().with_revision(2))),
    ]);
    assert_eq!(grpc_error(c.txn(txn).await), pair("OutOfRange", COMPACTED));
    assert!(c.get("c", None).await.unwrap().kvs().is_empty());

    // Compaction does not make a revision; the current state is intact.
    let r = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_header(r.header(), 5);
    assert_eq!(kvs(r.kvs()), [t("a", "3", 2, 4, 3), t("b", "1", 5, 5, 1)]);

    // Physical compaction up to the current revision.
    let r = c
        .compact(5, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_header(r.header(), 5);
    let e = grpc_error(c.get("a", Some(GetOptions::new().with_revision(4))).await);
    assert_eq!(e, pair("OutOfRange", COMPACTED));
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_revision(5)))
        .await
        .unwrap();
    assert_eq!(kvs(r.kvs()), [t("a", "3", 2, 4, 3), t("b", "1", 5, 5, 1)]);
    // Writes continue from the same revision counter.
    let r = c.put("a", "4", None).await.unwrap();
    assert_header(r.header(), 6);
    let r = c.get("a", None).await.unwrap();
    assert_eq!(kvs(r.kvs()), [t("a", "4", 2, 6, 4)]);
}

async fn error_codes(kind: Kind) {
    let (_server, mut c) = start(kind, &["--max-txn-ops", "4"]).await;
    let no_key = pair("InvalidArgument", "etcdserver: key is not provided");
    assert_eq!(grpc_error(c.put("", "x", None).await), no_key);
    assert_eq!(grpc_error(c.get("", None).await), no_key);
    assert_eq!(grpc_error(c.delete("", None).await), no_key);

    assert_eq!(
        grpc_error(
            c.put("missing", "", Some(PutOptions::new().with_ignore_value()))
                .await
        ),
        pair("InvalidArgument", "etcdserver: key not found")
    );
    assert_eq!(
        grpc_error(
            c.put("missing", "v", Some(PutOptions::new().with_ignore_lease()))
                .await
        ),
        pair("InvalidArgument", "etcdserver: key not found")
    );
    assert_eq!(
        grpc_error(
            c.put("k", "v", Some(PutOptions::new().with_lease(1234)))
                .await
        ),
        pair("NotFound", "etcdserver: requested lease not found")
    );

    let dup = pair(
        "InvalidArgument",
        "etcdserver: duplicate key given in txn request",
    );
    let txn = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    assert_eq!(grpc_error(c.txn(txn).await), dup);
    let txn = Txn::new().and_then([
        TxnOp::put("d", "1", None),
        TxnOp::delete("a", Some(DeleteOptions::new().with_range("z"))),
    ]);
    assert_eq!(grpc_error(c.txn(txn).await), dup);
    // The same key in the two branches is fine: only one branch runs.
    let txn = Txn::new()
        .and_then([TxnOp::put("d", "1", None)])
        .or_else([TxnOp::put("d", "2", None)]);
    assert!(c.txn(txn).await.unwrap().succeeded());

    let too_many = pair(
        "InvalidArgument",
        "etcdserver: too many operations in txn request",
    );
    let ops: Vec<TxnOp> = (0..5)
        .map(|i| TxnOp::put(format!("t{i}"), "v", None))
        .collect();
    assert_eq!(grpc_error(c.txn(Txn::new().and_then(ops)).await), too_many);
    let compares: Vec<Compare> = (0..5)
        .map(|i| Compare::version(format!("t{i}"), CompareOp::Equal, 0))
        .collect();
    assert_eq!(grpc_error(c.txn(Txn::new().when(compares)).await), too_many);
    let ops: Vec<TxnOp> = (0..4)
        .map(|i| TxnOp::put(format!("t{i}"), "v", None))
        .collect();
    assert!(c.txn(Txn::new().and_then(ops)).await.unwrap().succeeded());

    // The default --max-request-bytes is 1.5 MiB.
    let huge = vec![b'x'; 1536 * 1024 + 1];
    assert_eq!(
        grpc_error(c.put("huge", huge, None).await),
        pair("InvalidArgument", "etcdserver: request is too large")
    );

    // None of the failures made a revision: 1 (fresh) + 1 (txn d) + 1 (txn t0..t3).
    let r = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_header(r.header(), 3);
    assert_eq!(keys(r.kvs()), ["d", "t0", "t1", "t2", "t3"]);
}

macro_rules! against_both {
    ($($body:ident),* $(,)?) => {
        mod cairn {
            $(
                #[real_tokio::test(crate = "real_tokio")]
                async fn $body() {
                    super::$body(super::Kind::Cairn).await;
                }
            )*
        }
        /// The same bodies against the reference etcd: proof that the expectations are etcd's.
        mod etcd {
            $(
                #[real_tokio::test(crate = "real_tokio")]
                async fn $body() {
                    super::$body(super::Kind::Etcd).await;
                }
            )*
        }
    };
}

against_both!(
    put_get_round_trip,
    range_options,
    delete_round_trip,
    txn_round_trip,
    compaction_round_trip,
    error_codes,
);
