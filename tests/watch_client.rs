//! The Watch API through the Rust `etcd-client` crate (tonic, real HTTP/2) against a real `cairn`
//! process: prefix watches fed by another client's puts and deletes, prev_kv, history replay from
//! an old revision followed by live events, compacted start revisions, filters, watch ids,
//! cancellation, progress requests and fragments.
//!
//! Every test body runs twice: against cairn (the test) and against the reference etcd (the check
//! that the expectations written here are etcd 3.4.23's behaviour, not our guess at it). The
//! `_etcd` variants need /usr/bin/etcd and fail with a clear message without it.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Kind, Opts, Server};
use etcd_client::{
    Client, CompactionOptions, DeleteOptions, EventType, PutOptions, ResponseHeader,
    WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};

/// The ids etcd derives for member `default` advertising http://localhost:2380 in cluster
/// `etcd-cluster`, which cairn must derive the same way.
const CLUSTER_ID: u64 = 0xcdf8_1819_4e3a_8c32;
const MEMBER_ID: u64 = 0x8e9e_05c5_2164_694d;
/// A fresh single member campaigns once (term 1 -> 2) and leads from then on.
const RAFT_TERM: u64 = 2;
/// Bound on any single RPC or awaited watch response in these tests.
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

/// Starts a fresh server of `kind` and connects two clients: one to watch, one to write.
async fn start(kind: Kind, extra_args: &[&str]) -> (Server, Client, Client) {
    let server = Server::start(
        kind,
        Opts {
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            ..Opts::default()
        },
    );
    let watcher = connect(&server).await;
    let writer = connect(&server).await;
    (server, watcher, writer)
}

fn assert_header(header: Option<&ResponseHeader>, revision: i64) {
    let h = header.expect("response has a header");
    assert_eq!(h.cluster_id(), CLUSTER_ID, "cluster_id");
    assert_eq!(h.member_id(), MEMBER_ID, "member_id");
    assert_eq!(h.raft_term(), RAFT_TERM, "raft_term");
    assert_eq!(h.revision(), revision, "header revision");
}

/// The next response on the stream, failing the test if none comes within [`RPC_TIMEOUT`].
async fn next(stream: &mut WatchStream) -> WatchResponse {
    real_tokio::time::timeout(RPC_TIMEOUT, stream.message())
        .await
        .expect("a watch response in time")
        .expect("watch stream healthy")
        .expect("watch stream open")
}

/// The next `count` responses, by watch id: etcd sends one revision's responses to different
/// watchers in no particular order.
async fn next_by_id(stream: &mut WatchStream, count: usize) -> BTreeMap<i64, WatchResponse> {
    let mut by_id = BTreeMap::new();
    for _ in 0..count {
        let r = next(stream).await;
        let id = r.watch_id();
        assert!(
            by_id.insert(id, r).is_none(),
            "two responses for watcher {id}"
        );
    }
    by_id
}

/// Asserts that a response is the `created` answer for `id` at `revision`.
fn assert_created(r: &WatchResponse, id: i64, revision: i64) {
    assert!(r.created(), "expected created: {r:?}");
    assert!(!r.canceled(), "expected not canceled: {r:?}");
    assert_eq!(r.watch_id(), id, "watch id");
    assert!(r.events().is_empty());
    assert_header(r.header(), revision);
}

/// (type, key, value, create_revision, mod_revision, version) of an event's kv.
type Ev = (&'static str, String, String, i64, i64, i64);

fn ev(kind: &'static str, key: &str, value: &str, create: i64, modr: i64, version: i64) -> Ev {
    (kind, key.into(), value.into(), create, modr, version)
}

fn events(r: &WatchResponse) -> Vec<Ev> {
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("event has kv");
            (
                match e.event_type() {
                    EventType::Put => "PUT",
                    EventType::Delete => "DELETE",
                },
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect()
}

/// (key, value, mod_revision) of each event's prev_kv, `None` where there is none.
fn prevs(r: &WatchResponse) -> Vec<Option<(String, String, i64)>> {
    r.events()
        .iter()
        .map(|e| {
            e.prev_kv().map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.mod_revision(),
                )
            })
        })
        .collect()
}

fn prev(key: &str, value: &str, modr: i64) -> Option<(String, String, i64)> {
    Some((key.into(), value.into(), modr))
}

async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    let r = c.put(key, value, None).await.unwrap();
    r.header().unwrap().revision()
}

/// A prefix watch with prev_kv and a single-key watch without it, on one stream, fed by another
/// client's puts and deletes: one response per revision, header at that revision.
async fn prefix_watch_sees_puts_and_deletes(kind: Kind) {
    let (_server, mut watcher, mut writer) = start(kind, &[]).await;
    let mut stream = watcher
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 0, 1);
    stream.watch("w/a", None).await.unwrap();
    assert_created(&next(&mut stream).await, 1, 1);

    assert_eq!(put(&mut writer, "w/a", "1").await, 2);
    let rs = next_by_id(&mut stream, 2).await;
    for r in rs.values() {
        assert_header(r.header(), 2);
        assert_eq!(events(r), [ev("PUT", "w/a", "1", 2, 2, 1)]);
        assert_eq!(prevs(r), [None], "a create has no prev_kv");
    }

    // Outside both watchers: nothing arrives for it.
    assert_eq!(put(&mut writer, "x", "0").await, 3);
    assert_eq!(put(&mut writer, "w/b", "2").await, 4);
    let r = next(&mut stream).await;
    assert_eq!(
        (r.watch_id(), events(&r)),
        (0, vec![ev("PUT", "w/b", "2", 4, 4, 1)])
    );
    assert_header(r.header(), 4);

    assert_eq!(put(&mut writer, "w/a", "3").await, 5);
    let rs = next_by_id(&mut stream, 2).await;
    assert_eq!(events(&rs[&0]), [ev("PUT", "w/a", "3", 2, 5, 2)]);
    assert_eq!(prevs(&rs[&0]), [prev("w/a", "1", 2)]);
    assert_eq!(events(&rs[&1]), [ev("PUT", "w/a", "3", 2, 5, 2)]);
    assert_eq!(prevs(&rs[&1]), [None], "prev_kv only when asked for");

    // One delete of two keys is one revision: one response with both events.
    let d = writer
        .delete("w/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(d.deleted(), 2);
    let rs = next_by_id(&mut stream, 2).await;
    assert_header(rs[&0].header(), 6);
    assert_eq!(
        events(&rs[&0]),
        [
            ev("DELETE", "w/a", "", 0, 6, 0),
            ev("DELETE", "w/b", "", 0, 6, 0)
        ]
    );
    assert_eq!(prevs(&rs[&0]), [prev("w/a", "3", 5), prev("w/b", "2", 4)]);
    assert_header(rs[&1].header(), 6);
    assert_eq!(events(&rs[&1]), [ev("DELETE", "w/a", "", 0, 6, 0)]);
}

/// A watch from an old revision first replays history (in one response whose header carries the
/// current revision, as etcd sends it), then follows live writes without gap or repeat.
async fn history_replay_from_old_revision(kind: Kind) {
    let (_server, mut watcher, mut writer) = start(kind, &[]).await;
    put(&mut writer, "h/a", "1").await; // 2
    put(&mut writer, "h/b", "1").await; // 3
    put(&mut writer, "h/a", "2").await; // 4
    writer.delete("h/b", None).await.unwrap(); // 5
    put(&mut writer, "other", "1").await; // 6

    let mut stream = watcher
        .watch(
            "h/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(3)
                    .with_prev_key(),
            ),
        )
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 0, 6);
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), 0);
    assert_header(r.header(), 6);
    assert_eq!(
        events(&r),
        [
            ev("PUT", "h/b", "1", 3, 3, 1),
            ev("PUT", "h/a", "2", 2, 4, 2),
            ev("DELETE", "h/b", "", 0, 5, 0),
        ]
    );
    assert_eq!(prevs(&r), [None, prev("h/a", "1", 2), prev("h/b", "1", 3)]);

    assert_eq!(put(&mut writer, "h/c", "1").await, 7);
    let r = next(&mut stream).await;
    assert_header(r.header(), 7);
    assert_eq!(events(&r), [ev("PUT", "h/c", "1", 7, 7, 1)]);

    // A watch from a future revision waits for it.
    stream
        .watch(
            "h/",
            Some(WatchOptions::new().with_prefix().with_start_revision(9)),
        )
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 1, 7);
    assert_eq!(put(&mut writer, "h/d", "1").await, 8);
    let r = next(&mut stream).await;
    assert_eq!((r.watch_id(), r.events().len()), (0, 1));
    assert_eq!(put(&mut writer, "h/e", "1").await, 9);
    let rs = next_by_id(&mut stream, 2).await;
    for r in rs.values() {
        assert_eq!(events(r), [ev("PUT", "h/e", "1", 9, 9, 1)]);
    }
}

/// A watch whose start revision was compacted is created, then cancelled with the compaction
/// revision (header at revision 0, no reason: clients derive the error from compact_revision).
/// A watch starting at the compaction revision itself still works.
async fn compacted_start_revision(kind: Kind) {
    let (_server, mut watcher, mut writer) = start(kind, &[]).await;
    for v in ["1", "2", "3", "4"] {
        put(&mut writer, "c", v).await; // 2..=5
    }
    writer
        .compact(4, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();

    let mut stream = watcher
        .watch("c", Some(WatchOptions::new().with_start_revision(2)))
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 0, 5);
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), 0);
    assert!(r.canceled() && !r.created(), "{r:?}");
    assert_eq!(r.compact_revision(), 4);
    assert_eq!(r.cancel_reason(), "");
    assert!(r.events().is_empty());
    assert_header(r.header(), 0);

    // The cancelled watcher keeps its id until the client cancels it.
    stream
        .watch("c", Some(WatchOptions::new().with_start_revision(4)))
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 1, 5);
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), 1);
    assert_header(r.header(), 5);
    assert_eq!(
        events(&r),
        [ev("PUT", "c", "3", 2, 4, 3), ev("PUT", "c", "4", 2, 5, 4)]
    );
    stream.cancel(0).await.unwrap();
    let r = next(&mut stream).await;
    assert!(r.canceled() && r.watch_id() == 0 && r.compact_revision() == 0);
    assert_header(r.header(), 5);
}

/// Client-chosen and automatic ids, refused creates, cancel of known and unknown ids, and
/// progress requests.
async fn ids_cancel_and_progress(kind: Kind) {
    let (_server, mut watcher, mut writer) = start(kind, &[]).await;
    put(&mut writer, "a", "1").await; // 2
    let mut stream = watcher
        .watch("a", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 7, 2);

    // A taken id, and an empty range: created and cancelled at once, with id -1 and a reason.
    stream
        .watch("b", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    let r = next(&mut stream).await;
    assert!(r.created() && r.canceled(), "{r:?}");
    assert_eq!(r.watch_id(), -1);
    assert_eq!(
        r.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    assert_header(r.header(), 2);
    stream
        .watch("b", Some(WatchOptions::new().with_range("a")))
        .await
        .unwrap();
    let r = next(&mut stream).await;
    assert!(r.created() && r.canceled(), "{r:?}");
    assert_eq!(r.watch_id(), -1);
    assert_eq!(r.cancel_reason(), "mvcc: watcher range is empty");

    // Automatic ids count from 0, skipping ids in use.
    stream.watch("b", None).await.unwrap();
    assert_created(&next(&mut stream).await, 0, 2);
    stream
        .watch("c", Some(WatchOptions::new().with_watch_id(1)))
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 1, 2);
    stream.watch("d", None).await.unwrap();
    assert_created(&next(&mut stream).await, 2, 2);

    // Progress: a header at the current revision, watch id -1, no events.
    put(&mut writer, "zzz", "1").await; // 3, watched by nobody
    stream.request_progress().await.unwrap();
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), -1);
    assert!(!r.created() && !r.canceled() && r.events().is_empty());
    assert_header(r.header(), 3);

    // Cancelling an unknown id gets no answer: the next response is the progress after it.
    stream.cancel(99).await.unwrap();
    stream.request_progress().await.unwrap();
    assert_eq!(next(&mut stream).await.watch_id(), -1);

    stream.cancel(7).await.unwrap();
    let r = next(&mut stream).await;
    assert!(r.canceled() && !r.created(), "{r:?}");
    assert_eq!(r.watch_id(), 7);
    assert_header(r.header(), 3);
    // The cancelled watcher sees nothing more; the others still do.
    put(&mut writer, "a", "2").await; // 4
    put(&mut writer, "b", "1").await; // 5
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), 0);
    assert_eq!(events(&r), [ev("PUT", "b", "1", 5, 5, 1)]);
}

/// NOPUT and NODELETE filters drop events server-side; a revision whose events are all dropped
/// sends nothing.
async fn filters(kind: Kind) {
    let (_server, mut watcher, mut writer) = start(kind, &[]).await;
    let mut stream = watcher
        .watch(
            "f",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 0, 1);
    stream
        .watch(
            "f",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([WatchFilterType::NoDelete]),
            ),
        )
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 1, 1);
    put(&mut writer, "f1", "1").await; // 2
    writer.delete("f1", None).await.unwrap(); // 3
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), 1);
    assert_eq!(events(&r), [ev("PUT", "f1", "1", 2, 2, 1)]);
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), 0);
    assert_eq!(events(&r), [ev("DELETE", "f1", "", 0, 3, 0)]);
    assert_header(r.header(), 3);
}

/// With `fragment`, a revision whose response would reach the request size limit
/// (`--max-request-bytes` plus 512 KiB of gRPC overhead) arrives in several responses; without
/// it, in one.
async fn large_revision_fragments(kind: Kind) {
    const KEYS: usize = 700;
    let (_server, mut watcher, writer) = start(kind, &["--max-request-bytes", "1200"]).await;
    let value = "v".repeat(1000);
    let puts: Vec<_> = (0..KEYS)
        .map(|i| {
            let mut c = writer.clone();
            let value = value.clone();
            real_tokio::spawn(async move {
                c.put(format!("big/{i:04}"), value, Some(PutOptions::new()))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for p in puts {
        p.await.unwrap();
    }
    let mut stream = watcher
        .watch(
            "big/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_fragment(),
            ),
        )
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created());
    stream
        .watch(
            "big/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert!(next(&mut stream).await.created());
    let mut writer = writer;
    let d = writer
        .delete("big/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let rev = d.header().unwrap().revision();
    // About 700 KiB of prev_kvs: above 1200 + 512 KiB. Watcher 0 gets fragments, watcher 1
    // one response (in either order).
    let (mut fragmented, mut fragments, mut whole) = (0usize, 0usize, Vec::new());
    while fragmented < KEYS || whole.is_empty() {
        let r = next(&mut stream).await;
        assert_header(r.header(), rev);
        assert!(r.events().iter().all(|e| e.prev_kv().is_some()));
        match r.watch_id() {
            0 => {
                fragmented += r.events().len();
                fragments += 1;
            }
            1 => whole.push(r.events().len()),
            other => panic!("response for unknown watcher {other}"),
        }
    }
    assert_eq!(fragmented, KEYS);
    assert!(fragments > 1, "a large revision is fragmented");
    assert_eq!(whole, [KEYS], "without fragment, one response");
}

/// A client that reads nothing while thousands of revisions are written still receives every
/// one of them, in order, exactly once, once it reads (cairn's stream overruns its event feed on
/// the way and resynchronises from history).
async fn slow_reader_gets_every_revision(kind: Kind) {
    const PUTS: usize = 4000;
    const CONCURRENCY: usize = 100;
    let (_server, mut watcher, writer) = start(kind, &[]).await;
    let mut stream = watcher
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_created(&next(&mut stream).await, 0, 1);
    let value = "v".repeat(2000);
    for chunk in 0..PUTS / CONCURRENCY {
        let puts: Vec<_> = (0..CONCURRENCY)
            .map(|i| {
                let mut c = writer.clone();
                let key = format!("s/{:05}", chunk * CONCURRENCY + i);
                let value = value.clone();
                real_tokio::spawn(async move { c.put(key, value, None).await.unwrap() })
            })
            .collect();
        for p in puts {
            p.await.unwrap();
        }
    }
    let last = PUTS as i64 + 1;
    let mut expected = 2;
    while expected <= last {
        let r = next(&mut stream).await;
        assert!(!r.canceled(), "{r:?}");
        for e in r.events() {
            assert_eq!(
                e.kv().unwrap().mod_revision(),
                expected,
                "no gap, no repeat"
            );
            expected += 1;
        }
    }
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
    prefix_watch_sees_puts_and_deletes,
    history_replay_from_old_revision,
    compacted_start_revision,
    ids_cancel_and_progress,
    filters,
    large_revision_fragments,
    slow_reader_gets_every_revision,
);
