//! Crash and lifecycle tests of the `cairn` process: SIGKILL under a concurrent write load must
//! lose no acknowledged write, SIGTERM must shut down cleanly, and startup must refuse a taken port
//! and a data dir that belongs to another member.
//!
//! The durability check is the client's view of the contract: a put whose response arrived was
//! committed, so after any crash and restart it must be there with the value and the revision the
//! response reported. A put that was in flight when the process died may or may not be there, but
//! if it is, it must be exactly what was written.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kind, Opts, Server};
use etcd_client::{Client, ConnectOptions, GetOptions};

/// Concurrent writers, each with its own connection.
const WRITERS: usize = 8;
/// Kill/restart cycles in the SIGKILL test.
const CYCLES: usize = 3;
/// How long the load runs before the SIGKILL, per cycle (three cycles: about 3 s of load).
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(1000);
/// Bound on one RPC; a put in flight at the kill fails well within it.
const RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the writers noticing the kill and returning.
const WRITERS_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// A cycle whose load acknowledged fewer writes than this did not test anything.
const ACKED_PER_CYCLE_MIN: usize = 20;

async fn connect(url: &str) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(RPC_TIMEOUT);
    Client::connect([url], Some(options))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// One put a writer sent: its key and value, and the revision of its response if one came back.
#[derive(Clone, Debug)]
struct Put {
    key: String,
    value: String,
    acked_revision: Option<i64>,
}

/// Writes unique keys `crash/c<cycle>/w<writer>/<seq>`, and after each one overwrites the
/// writer's counter key `crash/counter/w<writer>`, until `stop` is set or a put fails (the server
/// died). Returns every put it sent, in order.
async fn writer(url: String, cycle: usize, w: usize, stop: Arc<AtomicBool>) -> Vec<Put> {
    let mut client = connect(&url).await;
    let mut puts = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for key in [
            format!("crash/c{cycle}/w{w}/{seq:06}"),
            format!("crash/counter/w{w}"),
        ] {
            let value = format!("c{cycle}-w{w}-{seq}");
            let result = client.put(key.as_str(), value.as_str(), None).await;
            let acked_revision = result
                .ok()
                .map(|r| r.header().expect("put response header").revision());
            let failed = acked_revision.is_none();
            puts.push(Put {
                key,
                value,
                acked_revision,
            });
            if failed {
                return puts;
            }
        }
        seq += 1;
    }
    puts
}

/// (value, create_revision, mod_revision, version) of every key under `crash/`.
async fn read_all(client: &mut Client) -> (i64, BTreeMap<String, (String, i64, i64, i64)>) {
    let r = client
        .get("crash/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("read back every key after restart");
    let revision = r.header().expect("range header").revision();
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                ),
            )
        })
        .collect();
    (revision, kvs)
}

/// Checks the store against every put sent so far (all cycles).
fn check_durability(
    cycle: usize,
    puts: &[Put],
    revision: i64,
    store: &BTreeMap<String, (String, i64, i64, i64)>,
) {
    let acked: Vec<&Put> = puts.iter().filter(|p| p.acked_revision.is_some()).collect();

    // Every acknowledged put made its own revision.
    let mut revisions = HashSet::new();
    for p in &acked {
        let rev = p.acked_revision.unwrap();
        assert!(
            revisions.insert(rev),
            "cycle {cycle}: two acknowledged puts got revision {rev}"
        );
    }
    let acked_revision_max = revisions.iter().copied().max().unwrap_or(0);
    assert!(
        revision >= acked_revision_max,
        "cycle {cycle}: after restart the store is at revision {revision}, \
         but a put was acknowledged at revision {acked_revision_max}"
    );

    // What was sent to each key, in order; the values are unique per put.
    let mut sent: HashMap<&str, Vec<&Put>> = HashMap::new();
    for p in puts {
        sent.entry(p.key.as_str()).or_default().push(p);
    }

    for p in &acked {
        let rev = p.acked_revision.unwrap();
        let Some((value, create, modr, version)) = store.get(&p.key) else {
            panic!(
                "cycle {cycle}: acknowledged put {}={} (revision {rev}) is missing after the restart",
                p.key, p.value
            );
        };
        if p.key.starts_with("crash/counter/") {
            // Overwritten by later puts: the acknowledged one or a later one (acked or in flight)
            // must be what is there.
            assert!(
                *modr >= rev,
                "cycle {cycle}: {} has mod_revision {modr}, older than the acknowledged put at {rev}",
                p.key
            );
            let later: Vec<&str> = sent[p.key.as_str()]
                .iter()
                .skip_while(|q| q.value != p.value)
                .map(|q| q.value.as_str())
                .collect();
            assert!(
                later.contains(&value.as_str()),
                "cycle {cycle}: {} is {value:?}, which is neither the acknowledged {:?} nor a later put",
                p.key,
                p.value
            );
        } else {
            assert_eq!(
                (value.as_str(), *create, *modr, *version),
                (p.value.as_str(), rev, rev, 1),
                "cycle {cycle}: acknowledged put {} (value, create, mod, version) differs after the restart",
                p.key
            );
        }
    }

    // Nothing is there that nobody wrote; an unacknowledged put that landed is intact.
    for (key, (value, _, modr, _)) in store {
        let Some(attempts) = sent.get(key.as_str()) else {
            panic!("cycle {cycle}: {key}={value} is in the store but was never written");
        };
        assert!(
            attempts.iter().any(|p| &p.value == value),
            "cycle {cycle}: {key} holds {value:?}, which was never written to it"
        );
        assert!(
            *modr <= revision,
            "cycle {cycle}: {key} has mod_revision {modr} above the store revision {revision}"
        );
    }
}

#[real_tokio::test(crate = "real_tokio", flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_under_load() {
    sigkill_under_load(Kind::Cairn).await;
}

/// The same check against the reference etcd: proof that the checker accepts a correct server.
#[real_tokio::test(crate = "real_tokio", flavor = "multi_thread", worker_threads = 4)]
async fn etcd_passes_the_sigkill_check() {
    sigkill_under_load(Kind::Etcd).await;
}

#[real_tokio::test(crate = "real_tokio")]
async fn sigterm_exits_zero_and_restart_sees_everything() {
    sigterm_then_restart(Kind::Cairn).await;
}

/// The same check against the reference etcd.
#[real_tokio::test(crate = "real_tokio")]
async fn etcd_passes_the_sigterm_check() {
    sigterm_then_restart(Kind::Etcd).await;
}

async fn sigkill_under_load(kind: Kind) {
    let mut server = Server::start(kind, Opts::default());
    let url = server.url();
    let mut puts: Vec<Put> = Vec::new();
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| real_tokio::spawn(writer(url.clone(), cycle, w, stop.clone())))
            .collect();
        real_tokio::time::sleep(LOAD_BEFORE_KILL).await;

        // Kill mid-load: the writers are still sending.
        server.sigkill();
        stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + WRITERS_STOP_TIMEOUT;
        let mut acked_this_cycle = 0usize;
        for handle in writers {
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = real_tokio::time::timeout(left, handle)
                .await
                .expect("writers did not stop after the kill")
                .expect("writer task panicked");
            acked_this_cycle += sent.iter().filter(|p| p.acked_revision.is_some()).count();
            puts.extend(sent);
        }
        eprintln!(
            "{} cycle {cycle}: {acked_this_cycle} puts acknowledged before the kill",
            server.kind.label()
        );
        assert!(
            acked_this_cycle >= ACKED_PER_CYCLE_MIN,
            "cycle {cycle}: only {acked_this_cycle} puts were acknowledged in {LOAD_BEFORE_KILL:?}; \
             the load did not run\n--- log ---\n{}",
            server.log_tail()
        );

        server.restart();
        let mut client = connect(&url).await;
        let (revision, store) = read_all(&mut client).await;
        check_durability(cycle, &puts, revision, &store);

        // The restarted server keeps accepting writes, at revisions after everything before.
        let r = client
            .put(format!("crash/after/{cycle}"), "ok", None)
            .await
            .expect("put after restart");
        let after = r.header().unwrap().revision();
        assert_eq!(
            after,
            revision + 1,
            "cycle {cycle}: the first put after restart"
        );
        puts.push(Put {
            key: format!("crash/after/{cycle}"),
            value: "ok".into(),
            acked_revision: Some(after),
        });
    }
}

async fn sigterm_then_restart(kind: Kind) {
    let mut server = Server::start(kind, Opts::default());
    let mut client = connect(&server.url()).await;
    let mut last = 0;
    for i in 0..50 {
        let r = client
            .put(format!("term/{i:03}"), format!("v{i}"), None)
            .await
            .unwrap();
        last = r.header().unwrap().revision();
    }
    client.delete("term/000", None).await.unwrap();

    // The client stays connected through the shutdown, and since this test's runtime thread is
    // blocked waiting for the exit, its HTTP/2 connection cannot answer the server's GOAWAY: a
    // stuck or partitioned client. Shutdown must not wait for it forever (etcd exits within about
    // two seconds with such a client attached).
    let status = server.sigterm();
    assert!(
        clean_stop(kind, status),
        "{} should exit 0 on SIGTERM, got {status}\n--- log ---\n{}",
        kind.label(),
        server.log_tail()
    );

    drop(client);
    // Snapshot files a crash could leave (an export for a follower, a partial receive) are
    // removed at start.
    let stale = if kind == Kind::Cairn {
        let snap = server.data_dir().join("member/snap");
        std::fs::create_dir_all(&snap).unwrap();
        let files = [
            snap.join("out-2-17.snap"),
            snap.join("0000000000000040.tmp"),
        ];
        for f in &files {
            std::fs::write(f, b"left by a crash").unwrap();
        }
        files.to_vec()
    } else {
        Vec::new()
    };
    server.restart();
    for f in &stale {
        assert!(!f.exists(), "{} survived the restart", f.display());
    }
    let mut client = connect(&server.url()).await;
    let r = client
        .get("term/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(r.header().unwrap().revision(), last + 1);
    assert_eq!(r.kvs().len(), 49);
    for (n, kv) in r.kvs().iter().enumerate() {
        let i = n + 1;
        assert_eq!(kv.key(), format!("term/{i:03}").as_bytes());
        assert_eq!(kv.value(), format!("v{i}").as_bytes());
        assert_eq!(kv.mod_revision(), 2 + i as i64);
    }
    // History survives too, not only the latest state.
    let r = client
        .get("term/000", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(r.kvs().len(), 1);
    assert_eq!(r.kvs()[0].value(), b"v0");
    let r = client.put("term/new", "x", None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), last + 2);

    // A second clean stop works as well.
    let status = server.sigterm();
    assert!(clean_stop(kind, status), "second SIGTERM: {status}");
}

/// cairn exits 0 after a SIGTERM shutdown; etcd, once it has shut down, re-raises the signal.
fn clean_stop(kind: Kind, status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    match kind {
        Kind::Cairn => status.code() == Some(0),
        Kind::Etcd => status.code() == Some(0) || status.signal() == Some(libc::SIGTERM),
    }
}

#[test]
fn second_server_on_a_taken_client_port_exits_1_with_one_line() {
    let mut first = Server::start(Kind::Cairn, Opts::default());
    let dir = tempfile::tempdir().unwrap();
    let args = common::server_args(
        &Opts::default(),
        &dir.path().join("data"),
        first.client_port,
        common::free_port(),
    );
    let out = common::run_cairn_to_exit(&args, dir.path(), Duration::from_secs(15));
    assert_eq!(
        out.code,
        Some(1),
        "a second cairn on port {} should exit 1: {out:?}",
        first.client_port
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected a one-line error on stderr, got {out:?}"
    );
    assert!(
        lines[0].contains(&first.client_port.to_string()),
        "the error should name the taken address: {:?}",
        lines[0]
    );
    // The first server is unharmed.
    assert!(first.try_wait().is_none(), "the first server exited");
    let get = first.etcdctl(&["get", "x"], None);
    assert!(get.success(), "first server stopped answering: {get:?}");
}

#[test]
fn data_dir_of_another_member_name_is_refused() {
    let mut server = Server::start(Kind::Cairn, Opts::default());
    let put = server.etcdctl(&["put", "k", "v"], None);
    assert!(put.success(), "{put:?}");
    let status = server.sigterm();
    assert_eq!(status.code(), Some(0), "SIGTERM: {status}");

    // Same data dir and peer URL, different name.
    let other = Opts {
        name: "other".into(),
        ..Opts::default()
    };
    let args = common::server_args(
        &other,
        &server.data_dir(),
        server.client_port,
        server.peer_port,
    );
    let out = common::run_cairn_to_exit(&args, &server.data_dir(), Duration::from_secs(15));
    assert_eq!(
        out.code,
        Some(1),
        "cairn --name other on default's data dir should exit 1: {out:?}"
    );
    assert!(
        !out.stderr.trim().is_empty(),
        "the refusal should say why on stderr: {out:?}"
    );

    // The refused start left the data intact for its owner.
    server.restart();
    let get = server.etcdctl(&["get", "k", "--print-value-only"], None);
    assert_eq!(get.stdout, "v\n", "{get:?}");
}
