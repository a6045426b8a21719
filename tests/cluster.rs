//! Multi-member clusters of real `cairn` processes on loopback, observed through Debian's
//! `etcdctl` and the `etcd-client` crate: leader election, replication and linearizable reads on
//! every member (also all at once, without stalls), failover after `kill -9` of the leader under a
//! write load, catch-up of a member that missed a log compaction, membership changes (learner,
//! promote, remove) with etcd's guards against unsafe ones, a minority that must not commit, a
//! stale leader that must not serve a linearizable read, leadership transfer, and `/health` and
//! `/metrics` over HTTP.
//!
//! A paused process (SIGSTOP) stands in for a partition: it keeps its sockets, so peers and clients
//! connect and then hear nothing, exactly as across a network that drops packets. Where it is
//! cheap, the same check also runs against a real etcd 3.4.23 cluster (`etcd_*` tests): that proves
//! the expectations are etcd's, not ours. Times measured here (failover, catch-up) are printed;
//! run with `--nocapture` to see them.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::cluster::{http_get, table_leaders, Cluster, Normalizer, CTL_BOUNDS, LEADER_TIMEOUT};
use common::{etcdctl, free_port, Kind, Output};
use etcd_client::{Client, ConnectOptions, GetOptions};

/// Bound on one HTTP request to `/health` or `/metrics` (a `/health` waits up to a second for its
/// linearizable read).
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a member catching up with the leader (after a restart, after joining).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// 1. Start, one leader, membership as listed, replication with linearizable reads everywhere.
// ---------------------------------------------------------------------------------------------

#[test]
fn three_member_cluster_elects_one_leader_and_replicates() {
    start_elect_replicate(3);
}

#[test]
fn five_member_cluster_elects_one_leader_and_replicates() {
    start_elect_replicate(5);
}

fn start_elect_replicate(size: usize) {
    let cluster = Cluster::start(Kind::Cairn, size, &[]);
    let all = cluster.all();
    let leader = cluster.wait_leader(&all, LEADER_TIMEOUT);

    // etcdctl across every endpoint: exactly one row says IS LEADER.
    let out = etcdctl(
        &cluster.endpoints(&all),
        &[
            CTL_BOUNDS[0],
            CTL_BOUNDS[1],
            "-w",
            "table",
            "endpoint",
            "status",
        ],
        None,
    );
    assert!(out.success(), "endpoint status: {out:?}");
    let (leaders, rows) = table_leaders(&out.stdout);
    assert_eq!(
        (leaders, rows),
        (1, size),
        "expected one leader row among {size}:\n{}",
        out.stdout
    );

    // Every member belongs to the same cluster and knows the same leader.
    let statuses: Vec<_> = cluster
        .statuses(&all)
        .into_iter()
        .map(|s| s.expect("status"))
        .collect();
    let cluster_id = statuses[0].cluster_id;
    for (i, st) in statuses.iter().enumerate() {
        assert_eq!(
            st.cluster_id, cluster_id,
            "cluster ids differ: {statuses:?}"
        );
        assert_eq!(st.member_id, cluster.ids[i], "{statuses:?}");
        assert_eq!(st.leader, cluster.ids[leader], "{statuses:?}");
        assert!(!st.is_learner, "{statuses:?}");
    }

    // member list, asked of every member, shows every member with its name and URLs.
    for i in &all {
        let list = cluster.member_list(*i).expect("member list");
        assert_eq!(
            list.len(),
            size,
            "member list through n{}: {list:#?}",
            i + 1
        );
        for (j, m) in cluster.members.iter().enumerate() {
            let entry = list
                .iter()
                .find(|x| x.id == cluster.ids[j])
                .unwrap_or_else(|| panic!("{} missing from {list:#?}", m.name()));
            assert_eq!(entry.name, m.name(), "{list:#?}");
            assert_eq!(
                entry.peer_urls,
                vec![format!("http://127.0.0.1:{}", m.peer_port)]
            );
            assert_eq!(entry.client_urls, vec![m.url()]);
            assert!(!entry.is_learner);
        }
    }

    // A put through any member is visible at once to a linearizable get on every other member:
    // no waiting, no retry.
    for i in &all {
        let key = format!("replicated/from-n{}", i + 1);
        let value = format!("v{}", i + 1);
        cluster.put(*i, &key, &value);
        for j in cluster.others(&[*i]) {
            assert_eq!(
                cluster.get(j, &key, false),
                Ok(Some(value.clone())),
                "a linearizable get on n{} right after the put through n{}",
                j + 1,
                i + 1
            );
        }
    }
    cluster.assert_hashkv_equal(&all, CATCH_UP_TIMEOUT);

    // Replaying the bootstrap membership never showed the transport a partial member list (it
    // used to drop and re-dial links at every start).
    for m in &cluster.members {
        assert!(
            !m.log().contains("closing the link"),
            "{} dropped a peer link at start:\n{}",
            m.name(),
            m.log_tail()
        );
    }
}

/// Rounds of the concurrent-read test: in each, every member serves one linearizable get at the
/// same moment.
const CONCURRENT_READ_ROUNDS: usize = 20;
/// Stalled reads after which the test stops early: each costs a second.
const STALLED_READS_ENOUGH: usize = 5;
/// A linearizable read on a healthy cluster takes one heartbeat round; one that took this long
/// (half the election timeout) was stalled.
const READ_STALL_MAX: Duration = Duration::from_millis(500);

#[real_tokio::test(crate = "real_tokio", flavor = "multi_thread", worker_threads = 3)]
async fn concurrent_linearizable_reads_on_every_member_do_not_stall() {
    concurrent_reads(Kind::Cairn).await;
}

/// The same check against etcd 3.4.23.
#[real_tokio::test(crate = "real_tokio", flavor = "multi_thread", worker_threads = 3)]
async fn etcd_passes_the_concurrent_read_check() {
    concurrent_reads(Kind::Etcd).await;
}

/// Every member serves linearizable reads at the same time, round after round. Each read needs
/// its own ReadIndex confirmation from the leader; none may wait for a retry.
async fn concurrent_reads(kind: Kind) {
    let cluster = real_tokio::task::block_in_place(|| Cluster::start(kind, 3, &[]));
    let all = cluster.all();
    real_tokio::task::block_in_place(|| cluster.wait_leader(&all, LEADER_TIMEOUT));
    let mut clients = Vec::new();
    for m in &cluster.members {
        clients.push(connect(&m.url(), Duration::from_secs(5)).await.unwrap());
    }
    clients[0].put("r", "1", None).await.unwrap();
    let mut slow = Vec::new();
    let mut max = Duration::ZERO;
    for round in 0..CONCURRENT_READ_ROUNDS {
        let reads: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                real_tokio::spawn(async move {
                    let start = Instant::now();
                    let r = c.get("r", None).await;
                    (i, start.elapsed(), r.map(|r| r.kvs().len()))
                })
            })
            .collect();
        for read in reads {
            let (i, took, r) = read.await.unwrap();
            assert_eq!(
                r.as_ref().ok(),
                Some(&1),
                "round {round}: get on n{}: {r:?}",
                i + 1
            );
            max = max.max(took);
            if took > READ_STALL_MAX {
                slow.push(format!(
                    "round {round}: n{} took {} ms",
                    i + 1,
                    took.as_millis()
                ));
            }
        }
        if slow.len() >= STALLED_READS_ENOUGH {
            break;
        }
    }
    println!(
        "{}: concurrent linearizable reads on 3 members, slowest {} ms",
        kind.label(),
        max.as_millis()
    );
    assert!(
        slow.is_empty(),
        "{}: linearizable reads took longer than {READ_STALL_MAX:?} (the test stops after \
         {STALLED_READS_ENOUGH}): {slow:#?}",
        kind.label()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Failover: kill -9 the leader under a write load.
// ---------------------------------------------------------------------------------------------

/// Writers in the failover test; writer `w` talks to member `w % 3` only.
const FAILOVER_WRITERS: usize = 6;
/// How long the load runs before the leader is killed.
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(1500);
/// How long the load goes on after writes succeed again.
const LOAD_AFTER_FAILOVER: Duration = Duration::from_millis(1000);
/// Bound on one put of the load. Short, so that a writer whose put went to the dead leader (and
/// can never be answered) tries again soon: the failover time is then the cluster's, not the
/// client's timeout.
const FAILOVER_RPC_TIMEOUT: Duration = Duration::from_millis(500);
/// A new leader must be elected within a few election timeouts (1 s by default).
const FAILOVER_ELECTION_MAX: Duration = Duration::from_secs(5);
/// Writes must succeed again within this long of the kill.
const FAILOVER_WRITES_MAX: Duration = Duration::from_secs(8);
/// Acknowledged puts before the kill below which the load did not test anything.
const ACKED_BEFORE_KILL_MIN: usize = 50;

/// One put of the load: what was written, through which member, when, and whether it was acked.
#[derive(Clone, Debug)]
struct Attempt {
    key: String,
    value: String,
    member: usize,
    start: Instant,
    acked: bool,
}

/// The moment of the kill, and the first acknowledgement of a put sent after it.
#[derive(Default)]
struct FailoverClock {
    kill: OnceLock<Instant>,
    first_ack_after_kill: Mutex<Option<Instant>>,
}

async fn connect(url: &str, rpc_timeout: Duration) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(rpc_timeout);
    Client::connect([url], Some(options)).await
}

/// Puts unique keys `failover/w<w>/<seq>` through one member until `stop`, through failures.
async fn load_writer(
    url: String,
    member: usize,
    w: usize,
    stop: Arc<AtomicBool>,
    clock: Arc<FailoverClock>,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut client: Option<Client> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            match connect(&url, FAILOVER_RPC_TIMEOUT).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    real_tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let key = format!("failover/w{w}/{seq:06}");
        let value = format!("w{w}-{seq}");
        seq += 1;
        let start = Instant::now();
        let result = client
            .as_mut()
            .expect("connected")
            .put(key.as_str(), value.as_str(), None)
            .await;
        let acked = result.is_ok();
        if acked {
            if let Some(&kill) = clock.kill.get() {
                if start >= kill {
                    let mut first = clock.first_ack_after_kill.lock().unwrap();
                    first.get_or_insert_with(Instant::now);
                }
            }
        } else {
            real_tokio::time::sleep(Duration::from_millis(20)).await;
        }
        attempts.push(Attempt {
            key,
            value,
            member,
            start,
            acked,
        });
    }
    attempts
}

/// Every key under `prefix` with its value, read through `url` (linearizable unless
/// `serializable`).
async fn read_prefix(url: &str, prefix: &str, serializable: bool) -> BTreeMap<String, String> {
    let mut client = connect(url, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let mut options = GetOptions::new().with_prefix();
    if serializable {
        options = options.with_serializable();
    }
    let r = client
        .get(prefix, Some(options))
        .await
        .unwrap_or_else(|e| panic!("read {prefix} from {url}: {e}"));
    r.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect()
}

/// Every acknowledged put is in `store` with its value; everything in `store` was written.
fn check_no_acked_write_lost(who: &str, attempts: &[Attempt], store: &BTreeMap<String, String>) {
    let sent: BTreeMap<&str, &Attempt> = attempts.iter().map(|a| (a.key.as_str(), a)).collect();
    let mut lost = Vec::new();
    for a in attempts.iter().filter(|a| a.acked) {
        match store.get(&a.key) {
            Some(v) if *v == a.value => {}
            other => lost.push(format!("{}={} (found {other:?})", a.key, a.value)),
        }
    }
    assert!(
        lost.is_empty(),
        "{who}: {} acknowledged puts are lost or wrong, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    for (key, value) in store {
        let a = sent
            .get(key.as_str())
            .unwrap_or_else(|| panic!("{who}: {key}={value} is stored but was never written"));
        assert_eq!(
            value, &a.value,
            "{who}: {key} holds a value never written to it"
        );
    }
}

#[real_tokio::test(crate = "real_tokio", flavor = "multi_thread", worker_threads = 4)]
async fn failover_after_kill_9_of_the_leader_under_write_load() {
    use real_tokio::task::block_in_place;

    let mut cluster = block_in_place(|| Cluster::start(Kind::Cairn, 3, &[]));
    let all = cluster.all();
    let old = block_in_place(|| cluster.wait_leader(&all, LEADER_TIMEOUT));
    let survivors = cluster.others(&[old]);

    let stop = Arc::new(AtomicBool::new(false));
    let clock = Arc::new(FailoverClock::default());
    let writers: Vec<_> = (0..FAILOVER_WRITERS)
        .map(|w| {
            let member = w % 3;
            real_tokio::spawn(load_writer(
                cluster.members[member].url(),
                member,
                w,
                stop.clone(),
                clock.clone(),
            ))
        })
        .collect();
    real_tokio::time::sleep(LOAD_BEFORE_KILL).await;

    // kill -9 the leader mid-load.
    let kill = Instant::now();
    clock.kill.set(kill).unwrap();
    cluster.members[old].sigkill();

    // The survivors elect a new leader ...
    let (new, elected_after) = loop {
        if let Ok(l) = block_in_place(|| cluster.agreed_leader(&survivors)) {
            break (l, kill.elapsed());
        }
        assert!(
            kill.elapsed() < FAILOVER_ELECTION_MAX,
            "no new leader among the survivors within {FAILOVER_ELECTION_MAX:?} of the kill: {:?}\n{}",
            block_in_place(|| cluster.agreed_leader(&survivors)),
            cluster.logs()
        );
        real_tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // ... and writes succeed again.
    let writes_after = loop {
        if let Some(t) = *clock.first_ack_after_kill.lock().unwrap() {
            break t.duration_since(kill);
        }
        assert!(
            kill.elapsed() < FAILOVER_WRITES_MAX,
            "no put sent after the kill was acknowledged within {FAILOVER_WRITES_MAX:?}\n{}",
            cluster.logs()
        );
        real_tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "failover: new leader {} elected {} ms after kill -9 of {}",
        cluster.members[new].name(),
        elected_after.as_millis(),
        cluster.members[old].name()
    );
    println!("failover took {} ms", writes_after.as_millis());

    real_tokio::time::sleep(LOAD_AFTER_FAILOVER).await;
    stop.store(true, Ordering::Relaxed);
    let mut attempts = Vec::new();
    for w in writers {
        let sent = real_tokio::time::timeout(Duration::from_secs(15), w)
            .await
            .expect("writers did not stop")
            .expect("writer panicked");
        attempts.extend(sent);
    }
    let acked_before = attempts
        .iter()
        .filter(|a| a.acked && a.start < kill)
        .count();
    let acked_after = attempts
        .iter()
        .filter(|a| a.acked && a.start >= kill)
        .count();
    let acked_via_survivors_after = attempts
        .iter()
        .filter(|a| a.acked && a.start >= kill && survivors.contains(&a.member))
        .count();
    println!(
        "failover load: {} puts sent, {acked_before} acknowledged before the kill, {acked_after} after",
        attempts.len()
    );
    assert!(
        acked_before >= ACKED_BEFORE_KILL_MIN,
        "only {acked_before} puts acknowledged before the kill: the load did not run"
    );
    assert!(acked_via_survivors_after > 0);

    // No acknowledged write is lost: read everything back from each survivor.
    for &s in &survivors {
        let store = read_prefix(&cluster.members[s].url(), "failover/", false).await;
        check_no_acked_write_lost(cluster.members[s].name(), &attempts, &store);
    }

    // The old leader restarts on its data dir, catches up, and ends with the same history.
    block_in_place(|| cluster.members[old].restart());
    block_in_place(|| cluster.assert_hashkv_equal(&all, CATCH_UP_TIMEOUT));
    let store = read_prefix(&cluster.members[old].url(), "failover/", true).await;
    check_no_acked_write_lost(
        &format!("restarted {}", cluster.members[old].name()),
        &attempts,
        &store,
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Snapshot catch-up.
// ---------------------------------------------------------------------------------------------

/// `--snapshot-count` of the catch-up test: the log is compacted every 100 applied entries.
const SNAPSHOT_COUNT: &str = "100";
/// Keys written while a member is down: five compactions' worth.
const KEYS_WHILE_DOWN: usize = 500;

#[test]
fn member_down_during_log_compaction_catches_up_by_snapshot() {
    // A catch-up window of 10 entries, far fewer than the member misses: it needs a snapshot.
    let mut cluster = Cluster::start(
        Kind::Cairn,
        3,
        &[
            "--snapshot-count",
            SNAPSHOT_COUNT,
            "--experimental-snapshot-catchup-entries",
            "10",
        ],
    );
    let all = cluster.all();
    let leader = cluster.wait_leader(&all, LEADER_TIMEOUT);
    let down = cluster.others(&[leader])[0];
    cluster.put(down, "snap/before", "x");
    cluster.wait_value(down, "snap/before", "x", true, CATCH_UP_TIMEOUT);

    let status = cluster.members[down].sigterm();
    assert_eq!(status.code(), Some(0), "SIGTERM: {status}");

    // 500 puts while it is down, through both running members, four at a time.
    let urls: Vec<String> = cluster
        .others(&[down])
        .iter()
        .map(|&i| cluster.members[i].url())
        .collect();
    let runtime = real_tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let url = urls[t % urls.len()].clone();
                real_tokio::spawn(async move {
                    let mut client = connect(&url, Duration::from_secs(10)).await.unwrap();
                    for i in (t..KEYS_WHILE_DOWN).step_by(4) {
                        client
                            .put(format!("snap/{i:04}"), format!("v{i}"), None)
                            .await
                            .unwrap_or_else(|e| panic!("put snap/{i:04}: {e}"));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer");
        }
    });
    cluster.put(leader, "snap/last", "done");
    let target = cluster.status(leader).expect("leader status");

    // Restart it: it must reach the leader's applied index and serve the last key locally.
    let restart = Instant::now();
    cluster.members[down].spawn_again();
    let caught_up = loop {
        if let Some(status) = cluster.members[down].try_wait() {
            panic!(
                "the restarted member exited ({status})\n--- log ---\n{}",
                cluster.members[down].log_tail()
            );
        }
        let last = cluster.status(down);
        if matches!(&last, Ok(st) if st.applied_index >= target.applied_index)
            && cluster.get(down, "snap/last", true) == Ok(Some("done".into()))
        {
            break restart.elapsed();
        }
        assert!(
            restart.elapsed() < CATCH_UP_TIMEOUT,
            "the restarted member did not catch up within {CATCH_UP_TIMEOUT:?}: leader applied \
             index {}, its last status {last:?}, snap/last: {:?}\n{}",
            target.applied_index,
            cluster.get(down, "snap/last", true),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "catch-up took {} ms ({KEYS_WHILE_DOWN} puts missed, --snapshot-count {SNAPSHOT_COUNT}, \
         leader applied index {})",
        caught_up.as_millis(),
        target.applied_index
    );
    assert!(
        cluster.members[down]
            .log()
            .contains("installed a snapshot from the leader"),
        "the restarted member missed more than the catch-up window: it needs a snapshot\n{}",
        cluster.members[down].log_tail()
    );

    // It holds every key, and the same history as the others.
    let out = cluster.ctl(
        down,
        &["get", "--consistency=s", "--prefix", "--keys-only", "snap/"],
    );
    assert!(out.success(), "{out:?}");
    let keys: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
    let mut expected: Vec<String> = (0..KEYS_WHILE_DOWN)
        .map(|i| format!("snap/{i:04}"))
        .collect();
    expected.extend(["snap/before".to_string(), "snap/last".to_string()]);
    expected.sort();
    assert_eq!(keys, expected, "the keys on the restarted member");
    cluster.assert_hashkv_equal(&all, CATCH_UP_TIMEOUT);

    // And it keeps replicating after the snapshot.
    cluster.put(leader, "snap/after", "y");
    cluster.wait_value(down, "snap/after", "y", true, CATCH_UP_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// 4. Membership: learner, promote, remove.
// ---------------------------------------------------------------------------------------------

#[test]
fn learner_joins_is_promoted_and_members_are_removed() {
    let mut cluster = Cluster::start(Kind::Cairn, 3, &[]);
    let founders = cluster.all();
    let leader = cluster.wait_leader(&founders, LEADER_TIMEOUT);
    for i in 0..20 {
        cluster.put(i % 3, &format!("m/{i:02}"), &format!("v{i}"));
    }

    // A learner joins through `member add --learner` and `--initial-cluster-state existing`.
    let learner = cluster.add_member(leader, true);
    cluster.members[learner].wait_ready_serializable();
    cluster.wait_value(learner, "m/19", "v19", true, CATCH_UP_TIMEOUT);
    let st = cluster.status(learner).expect("learner status");
    assert!(st.is_learner, "the new member's status: {st:?}");
    let list = wait_member_list(&cluster, 0, |l| {
        l.len() == 4
            && l.iter()
                .any(|m| m.id == cluster.ids[learner] && m.is_learner && m.name == "n4")
    });
    assert_eq!(list.iter().filter(|m| m.is_learner).count(), 1, "{list:#?}");

    // Promote it (a learner still catching up gets etcd's "in sync" error; retry briefly).
    let id = format!("{:x}", cluster.ids[learner]);
    let start = Instant::now();
    let out = loop {
        let out = cluster.ctl(0, &["member", "promote", &id]);
        if out.success() || !out.stderr.contains("in sync with leader") {
            break out;
        }
        assert!(start.elapsed() < CATCH_UP_TIMEOUT, "promote: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.success(), "member promote n4: {out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "Member {:16x} promoted in cluster ",
            cluster.ids[learner]
        )),
        "{out:?}"
    );
    let list = wait_member_list(&cluster, 1, |l| l.iter().all(|m| !m.is_learner));
    assert_eq!(list.len(), 4, "{list:#?}");
    let mut names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["n1", "n2", "n3", "n4"]);
    let st = cluster.status(learner).expect("status");
    assert!(!st.is_learner, "after promotion: {st:?}");
    // The promoted member now serves linearizable reads.
    cluster.put(0, "m/promoted", "yes");
    assert_eq!(
        cluster.get(learner, "m/promoted", false),
        Ok(Some("yes".into()))
    );

    // Remove a founding follower; the remaining three keep committing.
    let all = cluster.all();
    let leader = cluster.wait_leader(&all, LEADER_TIMEOUT);
    let victim = cluster.others(&[leader, learner])[0];
    let victim_id = format!("{:x}", cluster.ids[victim]);
    let out = cluster.ctl(leader, &["member", "remove", &victim_id]);
    assert!(out.success(), "member remove: {out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "Member {:16x} removed from cluster ",
            cluster.ids[victim]
        )),
        "{out:?}"
    );
    let rest = cluster.others(&[victim]);
    let list = wait_member_list(&cluster, rest[0], |l| l.len() == 3);
    assert!(
        list.iter().all(|m| m.id != cluster.ids[victim]),
        "{list:#?}"
    );
    let exited = cluster.members[victim].wait_exit(Duration::from_secs(5));
    println!("the removed member exited by itself: {exited:?}");
    cluster.members[victim].sigkill();
    cluster.wait_leader(&rest, LEADER_TIMEOUT);
    cluster.put(rest[0], "m/after-remove", "ok");
    for &i in &rest {
        assert_eq!(
            cluster.get(i, "m/after-remove", false),
            Ok(Some("ok".into())),
            "n{}",
            i + 1
        );
    }

    // etcd's errors: an unknown member, and promoting a voter.
    let out = cluster.ctl(rest[0], &["member", "remove", "1234abcd"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "Error: etcdserver: member not found"),
        "{out:?}"
    );
    let out = cluster.ctl(rest[0], &["member", "promote", &id]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "Error: etcdserver: can only promote a learner member"),
        "{out:?}"
    );
    // Removing the victim again: it is gone.
    let out = cluster.ctl(rest[0], &["member", "remove", &victim_id]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "Error: etcdserver: member not found"),
        "{out:?}"
    );

    // Removing the leader: the other two elect a new one and go on committing.
    let leader = cluster.wait_leader(&rest, LEADER_TIMEOUT);
    let asker = rest.iter().copied().find(|&i| i != leader).unwrap();
    let leader_id = format!("{:x}", cluster.ids[leader]);
    let out = cluster.ctl(asker, &["member", "remove", &leader_id]);
    assert!(out.success(), "removing the leader: {out:?}");
    let two = cluster.others(&[victim, leader]);
    let new = cluster.wait_leader(&two, LEADER_TIMEOUT);
    assert_ne!(new, leader);
    cluster.put(asker, "m/after-leader-remove", "ok");
    for &i in &two {
        assert_eq!(
            cluster.get(i, "m/after-leader-remove", false),
            Ok(Some("ok".into()))
        );
    }
    let list = cluster.member_list(asker).expect("member list");
    assert_eq!(list.len(), 2, "{list:#?}");
    cluster.assert_hashkv_equal(&two, CATCH_UP_TIMEOUT);
}

/// etcd answers "can only promote a learner member which is in sync with leader" to a promotion
/// of a learner that lags the leader, whichever member the request reaches (a follower forwards
/// it to the leader, which checks the learner's progress). A learner that was added but never
/// started lags by the whole log; promoting it would make a voter of a member that is not there.
#[test]
fn promoting_a_learner_that_is_not_in_sync_fails_through_every_member() {
    let cluster = Cluster::start(Kind::Cairn, 3, &[]);
    let all = cluster.all();
    let leader = cluster.wait_leader(&all, LEADER_TIMEOUT);
    cluster.put(leader, "k", "v");
    let peer = free_port();
    let out = cluster.ctl(
        leader,
        &[
            "member",
            "add",
            "n4",
            &format!("--peer-urls=http://127.0.0.1:{peer}"),
            "--learner",
        ],
    );
    assert!(out.success(), "{out:?}");
    let id = out.stdout.split_whitespace().nth(1).unwrap().to_string();
    let mut leader_first = vec![leader];
    leader_first.extend(cluster.others(&[leader]));
    let mut wrong = Vec::new();
    for i in leader_first {
        let out = cluster.ctl(i, &["member", "promote", &id]);
        let role = if i == leader { "leader" } else { "follower" };
        if out.code != Some(1) || !out.stderr.lines().any(|l| {
            l == "Error: etcdserver: can only promote a learner member which is in sync with leader"
        }) {
            wrong.push(format!(
                "through {} ({role}): {out:?}",
                cluster.members[i].name()
            ));
        }
    }
    let list = cluster.member_list(leader).expect("member list");
    assert!(
        wrong.is_empty(),
        "promoting the never-started learner n4 did not fail with etcd's error:\n{}\nmember list \
         now: {list:#?}",
        wrong.join("\n")
    );
    // The learner stays a learner; the three voters keep committing.
    assert!(list.iter().any(|m| m.is_learner), "{list:#?}");
    cluster.put(0, "k", "w");
}

/// etcd's strict reconfiguration check: with one follower down, removing the other (running)
/// follower would leave one running member of two, a cluster without quorum, so etcd refuses
/// ("etcdserver: unhealthy cluster"). Removing the member that is down is allowed.
#[test]
fn removing_a_member_that_would_break_the_running_quorum_is_refused() {
    let mut cluster = Cluster::start(Kind::Cairn, 3, &[]);
    let all = cluster.all();
    let leader = cluster.wait_leader(&all, LEADER_TIMEOUT);
    let followers = cluster.others(&[leader]);
    let (down, running) = (followers[0], followers[1]);
    cluster.members[down].sigkill();
    std::thread::sleep(Duration::from_secs(1));

    let running_id = format!("{:x}", cluster.ids[running]);
    let out = cluster.ctl(leader, &["member", "remove", &running_id]);
    let after = cluster
        .member_list(leader)
        .map(|l| l.iter().map(|m| m.name.clone()).collect::<Vec<_>>());
    let commits = cluster
        .ctl(leader, &["--command-timeout=3s", "put", "after", "x"])
        .success();
    assert!(
        out.code == Some(1)
            && out
                .stderr
                .lines()
                .any(|l| l == "Error: etcdserver: unhealthy cluster"),
        "removing running {} while {} is down must be refused as etcd does; got {out:?}; members \
         now {after:?}; the cluster still commits: {commits}",
        cluster.members[running].name(),
        cluster.members[down].name()
    );
    assert!(
        commits,
        "the refused removal must leave the cluster working"
    );

    // The member that is down may be removed: the two running members are the new quorum.
    let down_id = format!("{:x}", cluster.ids[down]);
    let out = cluster.ctl(leader, &["member", "remove", &down_id]);
    assert!(out.success(), "removing the member that is down: {out:?}");
    cluster.put(running, "after-remove", "y");
    assert_eq!(
        cluster.get(leader, "after-remove", false),
        Ok(Some("y".into()))
    );
}

fn wait_member_list(
    cluster: &Cluster,
    via: usize,
    done: impl Fn(&[common::cluster::MemberInfo]) -> bool,
) -> Vec<common::cluster::MemberInfo> {
    let start = Instant::now();
    loop {
        let list = cluster.member_list(via);
        if let Ok(l) = &list {
            if done(l) {
                return l.clone();
            }
        }
        assert!(
            start.elapsed() < CATCH_UP_TIMEOUT,
            "member list through n{} never reached the expected state: {list:#?}",
            via + 1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A minority cannot commit; a stale leader cannot serve a linearizable read.
// ---------------------------------------------------------------------------------------------

#[test]
fn minority_cannot_commit_and_the_cluster_heals() {
    minority_cannot_commit(Kind::Cairn);
}

/// The same check against etcd 3.4.23: proof that the expectations are etcd's.
#[test]
fn etcd_passes_the_minority_check() {
    minority_cannot_commit(Kind::Etcd);
}

fn minority_cannot_commit(kind: Kind) {
    let cluster = Cluster::start(kind, 3, &[]);
    let all = cluster.all();
    let lone = cluster.wait_leader(&all, LEADER_TIMEOUT);
    let paused = cluster.others(&[lone]);
    cluster.put(lone, "minority/before", "x");
    for &i in &paused {
        cluster.members[i].sigstop();
    }

    // The leader, alone, cannot commit: the put fails within etcdctl's --command-timeout.
    let start = Instant::now();
    let out = cluster.members[lone].etcdctl(
        &[
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "put",
            "minority/k",
            "v",
        ],
        None,
    );
    let took = start.elapsed();
    assert_eq!(
        out.code,
        Some(1),
        "{}: a put on a leader without quorum must fail: {out:?}",
        kind.label()
    );
    assert!(out.stderr.contains("Error:"), "{out:?}");
    assert!(took < Duration::from_secs(8), "the put took {took:?}");
    println!(
        "{}: put on the minority failed after {} ms: {}",
        kind.label(),
        took.as_millis(),
        out.stderr.lines().last().unwrap_or("")
    );
    // Nothing was applied: a serializable read of the lone member's own store does not see it.
    assert_eq!(cluster.get(lone, "minority/k", true), Ok(None));

    // Within an election timeout or two it notices it lost its quorum and steps down (check
    // quorum); /health turns false; a second put fails too.
    let start = Instant::now();
    loop {
        let st = cluster.status(lone).expect("status of the lone member");
        if st.leader == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}: the lone member still believes in leader {:x}: {st:?}",
            kind.label(),
            st.leader
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = http_get(cluster.members[lone].client_port, "/health", HTTP_TIMEOUT);
    assert!(
        matches!(&health, Ok((503, body)) if body.trim() == r#"{"health":"false"}"#),
        "{}: /health of the lone member: {health:?}",
        kind.label()
    );
    let out = cluster.members[lone].etcdctl(
        &[
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "put",
            "minority/k2",
            "v",
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(cluster.get(lone, "minority/k", true), Ok(None));
    assert_eq!(cluster.get(lone, "minority/k2", true), Ok(None));

    // Heal: the cluster elects a leader and commits again.
    for &i in &paused {
        cluster.members[i].sigcont();
    }
    cluster.wait_leader(&all, LEADER_TIMEOUT);
    cluster.put(paused[0], "minority/healed", "yes");
    for &i in &all {
        assert_eq!(
            cluster.get(i, "minority/healed", false),
            Ok(Some("yes".into())),
            "n{}",
            i + 1
        );
    }
    // A put that timed out is indeterminate, not failed: the lone leader had appended it to its
    // log, and if it wins the next election it commits it (etcd 3.4 does exactly this). What
    // must hold is that every member agrees, and that it holds only what was written.
    for key in ["minority/k", "minority/k2"] {
        let seen: Vec<_> = all.iter().map(|&i| cluster.get(i, key, false)).collect();
        assert!(
            seen.iter().all(|s| *s == seen[0])
                && matches!(&seen[0], Ok(None) | Ok(Some(_)))
                && seen[0].as_ref().unwrap().as_deref().unwrap_or("v") == "v",
            "{}: members disagree on {key} after the heal: {seen:?}",
            kind.label()
        );
        println!(
            "{}: after the heal, the timed-out put of {key} is {}",
            kind.label(),
            if seen[0] == Ok(None) {
                "absent"
            } else {
                "present (committed by the next term)"
            }
        );
    }
    cluster.assert_hashkv_equal(&all, CATCH_UP_TIMEOUT);
}

#[test]
fn stale_leader_cannot_serve_a_linearizable_read() {
    stale_leader_read(Kind::Cairn, 2);
}

/// The same check against etcd 3.4.23.
#[test]
fn etcd_passes_the_stale_leader_check() {
    stale_leader_read(Kind::Etcd, 1);
}

/// Pauses the leader, lets the others elect a new one and commit a new value of `k`, then resumes
/// the old leader and reads `k` from it, linearizably, three ways at once: an etcdctl get and an
/// etcd-client get sent while it was still paused (queued in its socket, served the instant it
/// wakes), and an etcdctl get sent right after. Each must return the new value or fail.
fn stale_leader_read(kind: Kind, rounds: usize) {
    let cluster = Cluster::start(kind, 3, &[]);
    let all = cluster.all();
    let runtime = real_tokio::runtime::Runtime::new().unwrap();
    cluster.put(0, "k", "v0");
    for round in 1..=rounds {
        let old = cluster.wait_leader(&all, LEADER_TIMEOUT);
        let others = cluster.others(&[old]);
        let mut client = runtime
            .block_on(connect(&cluster.members[old].url(), Duration::from_secs(5)))
            .expect("connect to the leader");
        runtime
            .block_on(client.get("k", None))
            .expect("warm-up get");

        cluster.members[old].sigstop();
        let paused_at = Instant::now();
        let new = cluster.wait_leader(&others, LEADER_TIMEOUT);
        let value = format!("v{round}");
        let previous = format!("v{}", round - 1);
        // Through the follower survivor: it forwards to the new leader.
        let follower = others.iter().copied().find(|&i| i != new).unwrap();
        cluster.put(follower, "k", &value);
        assert_eq!(cluster.get(new, "k", false), Ok(Some(value.clone())));
        println!(
            "{} round {round}: {} paused, {} leader after {} ms, k={value} committed",
            kind.label(),
            cluster.members[old].name(),
            cluster.members[new].name(),
            paused_at.elapsed().as_millis()
        );

        let endpoint = cluster.members[old].endpoint();
        let queued_ctl = std::thread::spawn(move || {
            etcdctl(
                &endpoint,
                &["--dial-timeout=5s", "--command-timeout=5s", "get", "k"],
                None,
            )
        });
        let queued_rpc = runtime.spawn(async move { client.get("k", None).await });
        std::thread::sleep(Duration::from_millis(300));
        cluster.members[old].sigcont();
        let immediate = cluster.members[old].etcdctl(
            &["--dial-timeout=5s", "--command-timeout=5s", "get", "k"],
            None,
        );
        let queued_ctl = queued_ctl.join().expect("etcdctl thread");
        let queued_rpc = runtime
            .block_on(queued_rpc)
            .expect("rpc task")
            .map(|r| {
                r.kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            })
            .map_err(|e| e.to_string());

        let ctl_value = |out: &Output| -> Result<Option<String>, String> {
            if out.success() {
                Ok(out.stdout.lines().nth(1).map(String::from))
            } else {
                Err(out.stderr.lines().last().unwrap_or("").to_string())
            }
        };
        let reads = [
            ("etcdctl get queued while paused", ctl_value(&queued_ctl)),
            ("etcd-client get queued while paused", queued_rpc),
            ("etcdctl get right after resume", ctl_value(&immediate)),
        ];
        for (what, read) in &reads {
            println!(
                "{} round {round}: {what} on the old leader: {read:?}",
                kind.label()
            );
            match read {
                Err(_) => {}
                Ok(Some(v)) if *v == value => {}
                Ok(got) => panic!(
                    "{} round {round}: stale read! {what} on the old leader {} returned {got:?} \
                     after {value:?} was committed (previous value {previous:?})\n{}",
                    kind.label(),
                    cluster.members[old].name(),
                    cluster.logs()
                ),
            }
        }
        // The old leader rejoins as a follower and reads the new value.
        cluster.wait_leader(&all, LEADER_TIMEOUT);
        cluster.wait_value(old, "k", &value, false, CATCH_UP_TIMEOUT);
    }
    cluster.assert_hashkv_equal(&all, CATCH_UP_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// 6. move-leader.
// ---------------------------------------------------------------------------------------------

#[test]
fn move_leader_transfers_leadership_to_the_chosen_follower() {
    let cluster = Cluster::start(Kind::Cairn, 3, &[]);
    let all = cluster.all();
    for _ in 0..2 {
        let leader = cluster.wait_leader(&all, LEADER_TIMEOUT);
        let target = cluster.others(&[leader])[1];
        let (from, to) = (
            format!("{:x}", cluster.ids[leader]),
            format!("{:x}", cluster.ids[target]),
        );
        let out = etcdctl(
            &cluster.endpoints(&all),
            &[CTL_BOUNDS[0], CTL_BOUNDS[1], "move-leader", &to],
            None,
        );
        assert!(out.success(), "move-leader {to}: {out:?}");
        assert_eq!(
            out.stdout,
            format!("Leadership transferred from {from} to {to}\n")
        );
        let now = cluster.wait_leader(&all, LEADER_TIMEOUT);
        assert_eq!(
            now,
            target,
            "after move-leader to {} the leader is {}",
            cluster.members[target].name(),
            cluster.members[now].name()
        );
        cluster.put(leader, "moved", &to);
        assert_eq!(cluster.get(target, "moved", false), Ok(Some(to.clone())));
    }
    // To a member that does not exist: etcd's error.
    let out = etcdctl(
        &cluster.endpoints(&all),
        &[CTL_BOUNDS[0], CTL_BOUNDS[1], "move-leader", "1234abcd"],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "Error: etcdserver: bad leader transferee"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. /health and /metrics.
// ---------------------------------------------------------------------------------------------

#[test]
fn health_and_metrics_over_http() {
    let cluster = Cluster::start(Kind::Cairn, 3, &[]);
    let all = cluster.all();
    cluster.wait_leader(&all, LEADER_TIMEOUT);
    cluster.put(0, "h", "1");
    for m in &cluster.members {
        let health = http_get(m.client_port, "/health", HTTP_TIMEOUT);
        assert_eq!(
            health,
            Ok((200, r#"{"health":"true"}"#.to_string())),
            "{}",
            m.name()
        );
        let (code, metrics) =
            http_get(m.client_port, "/metrics", HTTP_TIMEOUT).expect("GET /metrics");
        assert_eq!(code, 200);
        for name in [
            "etcd_server_has_leader 1",
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            "etcd_server_proposals_committed_total",
        ] {
            assert!(
                metrics.lines().any(|l| l.starts_with(name)),
                "{}: no {name} in /metrics:\n{metrics}",
                m.name()
            );
        }
    }

    // The lone survivor of a three-member cluster is not healthy.
    let lone = 0;
    for &i in &cluster.others(&[lone]) {
        cluster.members[i].sigstop();
    }
    let start = Instant::now();
    let mut last;
    loop {
        last = http_get(cluster.members[lone].client_port, "/health", HTTP_TIMEOUT);
        if matches!(&last, Ok((503, body)) if body.trim() == r#"{"health":"false"}"#) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "/health of the lone survivor is still {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "/health of the lone survivor turned false after {} ms",
        start.elapsed().as_millis()
    );
    // Within an election timeout or two it also knows it has no leader (a follower once its
    // election timer fires, a leader once check-quorum makes it step down).
    let start = Instant::now();
    loop {
        let (_, metrics) = http_get(cluster.members[lone].client_port, "/metrics", HTTP_TIMEOUT)
            .expect("GET /metrics");
        if metrics.lines().any(|l| l == "etcd_server_has_leader 0") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the lone survivor still reports {}",
            metrics
                .lines()
                .find(|l| l.starts_with("etcd_server_has_leader"))
                .unwrap_or("(no etcd_server_has_leader)")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Healed, every member is healthy again.
    for &i in &cluster.others(&[lone]) {
        cluster.members[i].sigcont();
    }
    cluster.wait_leader(&all, LEADER_TIMEOUT);
    for m in &cluster.members {
        let start = Instant::now();
        loop {
            let health = http_get(m.client_port, "/health", HTTP_TIMEOUT);
            if health == Ok((200, r#"{"health":"true"}"#.to_string())) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} after the heal: {health:?}",
                m.name()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-check against etcd 3.4.23: the member commands' output and errors.
// ---------------------------------------------------------------------------------------------

/// Runs the same member and move-leader commands against a three-member etcd and a three-member
/// cairn cluster and compares their output with ids and ports replaced by member names.
#[test]
fn member_commands_match_etcd() {
    let (etcd, cairn) = on_both(member_script);
    let mut diffs = Vec::new();
    for ((what, e), (_, c)) in etcd.iter().zip(&cairn) {
        if e != c {
            diffs.push(format!("{what}:\n  etcd:  {e:?}\n  cairn: {c:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} outputs differ from etcd's:\n{}",
        diffs.len(),
        etcd.len(),
        diffs.join("\n")
    );
}

/// Runs `script` against an etcd cluster and a cairn cluster at once: (etcd's, cairn's).
fn on_both<T: Send>(script: fn(Kind) -> T) -> (T, T) {
    std::thread::scope(|s| {
        let etcd = s.spawn(|| script(Kind::Etcd));
        let cairn = s.spawn(|| script(Kind::Cairn));
        (
            etcd.join().expect("etcd script"),
            cairn.join().expect("cairn script"),
        )
    })
}

/// What a command printed, reduced to what must match: the exit code, stdout, and etcdctl's
/// `Error:` lines (its JSON log lines carry timestamps and random client ids).
fn outcome(out: &Output, n: &Normalizer) -> String {
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("Error:"))
        .collect();
    n.apply(&format!(
        "exit {:?}\n{}{}",
        out.code,
        out.stdout,
        errors.join("\n")
    ))
}

/// Lines sorted: member list orders by member id, and ids differ between the two clusters.
fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    lines.join("\n")
}

/// etcd's strict reconfiguration check refuses `member add` ("unhealthy cluster") until the member
/// that receives it has been connected to every voting peer for five seconds (its
/// `HealthInterval`); the script retries that long, so both servers end up asked the same thing.
const RECONFIG_RETRY_FOR: Duration = Duration::from_secs(15);

fn member_script(kind: Kind) -> Vec<(String, String)> {
    let mut cluster = Cluster::start(kind, 3, &[]);
    let all = cluster.all();
    let leader = cluster.wait_leader(&all, LEADER_TIMEOUT);
    let cluster_id = cluster.status(0).expect("status").cluster_id;
    let mut n = Normalizer::new(&cluster, cluster_id);
    let mut seen = Vec::new();
    let mut record = |what: &str, text: String| seen.push((what.to_string(), text));

    record(
        "member list",
        sorted_lines(&outcome(&cluster.ctl(0, &["member", "list"]), &n)),
    );
    let json = cluster.ctl(0, &["-w", "json", "member", "list"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("member list JSON");
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.extend(
        v["members"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| format!("members[].{k}")),
    );
    keys.extend(
        v["header"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| format!("header.{k}")),
    );
    keys.sort();
    record("member list -w json: fields", keys.join(","));
    let table = cluster.ctl(0, &["-w", "table", "member", "list"]);
    record(
        "member list -w table: header",
        table.stdout.lines().nth(1).unwrap_or("").replace(' ', ""),
    );
    let status = cluster.ctl(0, &["-w", "table", "endpoint", "status"]);
    record(
        "endpoint status -w table: header",
        status.stdout.lines().nth(1).unwrap_or("").replace(' ', ""),
    );

    record(
        "member remove <unknown>",
        outcome(&cluster.ctl(0, &["member", "remove", "1234abcd"]), &n),
    );
    let leader_hex = format!("{:x}", cluster.ids[leader]);
    record(
        "member promote <voter>",
        outcome(&cluster.ctl(0, &["member", "promote", &leader_hex]), &n),
    );

    // A learner that is added but never started.
    let peer = free_port();
    n.add(peer.to_string(), "<n4-peer>");
    let peer_flag = format!("--peer-urls=http://127.0.0.1:{peer}");
    let asked = Instant::now();
    let add = loop {
        let add = cluster.ctl(0, &["member", "add", "n4", &peer_flag, "--learner"]);
        if !add.stderr.contains("unhealthy cluster") || asked.elapsed() > RECONFIG_RETRY_FOR {
            break add;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "{}: member add accepted {} ms after it was first asked",
        kind.label(),
        asked.elapsed().as_millis()
    );
    let n4 = add
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or("none")
        .to_string();
    if let Ok(id) = u64::from_str_radix(&n4, 16) {
        n.add(n4.clone(), "<n4-id>");
        n.add(id.to_string(), "<n4-id>");
    }
    // ETCD_INITIAL_CLUSTER lists members in member-id order: sort its entries.
    let add_text = outcome(&add, &n)
        .lines()
        .map(|l| match l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
            Some(list) => {
                let mut parts: Vec<&str> = list.trim_end_matches('"').split(',').collect();
                parts.sort();
                format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    record("member add --learner", add_text);
    record(
        "member list with an unstarted learner",
        sorted_lines(&outcome(&cluster.ctl(0, &["member", "list"]), &n)),
    );
    // etcd forwards a promote to the leader, which checks the learner's progress: asked through
    // any member, promoting a learner that never started fails.
    let follower = cluster.others(&[leader])[0];
    record(
        "member promote <unstarted learner> through the leader",
        outcome(&cluster.ctl(leader, &["member", "promote", &n4]), &n),
    );
    record(
        "member promote <unstarted learner> through a follower",
        outcome(&cluster.ctl(follower, &["member", "promote", &n4]), &n),
    );
    let new_peer = free_port();
    n.add(new_peer.to_string(), "<n4-new-peer>");
    record(
        "member update <learner>",
        outcome(
            &cluster.ctl(
                0,
                &[
                    "member",
                    "update",
                    &n4,
                    &format!("--peer-urls=http://127.0.0.1:{new_peer}"),
                ],
            ),
            &n,
        ),
    );
    record(
        "member remove <learner>",
        outcome(&cluster.ctl(0, &["member", "remove", &n4]), &n),
    );
    record(
        "member list after remove",
        sorted_lines(&outcome(&cluster.ctl(0, &["member", "list"]), &n)),
    );

    // A member that is removed while it runs shuts itself down (etcd: "the member has been
    // permanently removed from the cluster", exit within about a second).
    let slot = cluster.add_member(leader, true);
    cluster.members[slot].wait_ready_serializable();
    // A learner serves serializable reads only (etcd: "rpc not supported for learner").
    record(
        "linearizable get on a learner",
        outcome(&cluster.ctl(slot, &["get", "greeting"]), &n),
    );
    let removed = format!("{:x}", cluster.ids[slot]);
    n.add(removed.clone(), "<n4-id>");
    n.add(cluster.members[slot].peer_port.to_string(), "<n4-peer>");
    record(
        "member remove <running learner>",
        outcome(&cluster.ctl(leader, &["member", "remove", &removed]), &n),
    );
    let exited = cluster.members[slot].wait_exit(Duration::from_secs(5));
    record(
        "the removed member exits by itself within 5 s, with this status",
        format!("{:?}", exited.map(|status| status.code())),
    );

    // move-leader: to an unknown member, then to a follower (ids named by role).
    let all_endpoints = cluster.endpoints(&all);
    let move_leader = |target: &str| {
        etcdctl(
            &all_endpoints,
            &[CTL_BOUNDS[0], CTL_BOUNDS[1], "move-leader", target],
            None,
        )
    };
    record(
        "move-leader <unknown>",
        outcome(&move_leader("1234abcd"), &n),
    );
    let target = cluster.others(&[leader])[0];
    let target_hex = format!("{:x}", cluster.ids[target]);
    let mut by_role = Normalizer::new(&cluster, cluster_id);
    by_role.add(leader_hex.clone(), "<leader>");
    by_role.add(target_hex.clone(), "<target>");
    record(
        "move-leader <follower>",
        outcome(&move_leader(&target_hex), &by_role),
    );
    let now = cluster.wait_leader(&all, LEADER_TIMEOUT);
    record(
        "leader after move-leader",
        if now == target { "target" } else { "other" }.into(),
    );
    record(
        "move-leader <itself>",
        outcome(&move_leader(&target_hex), &by_role),
    );

    let health = http_get(cluster.members[0].client_port, "/health", HTTP_TIMEOUT);
    record("GET /health", format!("{health:?}"));

    // With one follower down, removing the other running follower would leave one member of two
    // running: no quorum. etcd refuses (strict reconfiguration check).
    let leader = now;
    let followers = cluster.others(&[leader]);
    cluster.members[followers[0]].sigkill();
    std::thread::sleep(Duration::from_secs(1));
    let victim = format!("{:x}", cluster.ids[followers[1]]);
    record(
        "member remove <running follower> while the other follower is down",
        outcome(&cluster.ctl(leader, &["member", "remove", &victim]), &n),
    );
    seen
}

// ---------------------------------------------------------------------------------------------
// Leases held through a follower.
// ---------------------------------------------------------------------------------------------

#[test]
fn leases_are_kept_alive_and_read_through_a_follower() {
    lease_through_follower(Kind::Cairn);
}

#[test]
fn etcd_passes_the_follower_lease_check() {
    lease_through_follower(Kind::Etcd);
}

/// A client whose endpoint is a follower grants a short lease, attaches a key, keeps the lease
/// alive on that follower for longer than its TTL, and asks the follower for its time to live:
/// the follower forwards keep-alives and time-to-live to the leader, which alone tracks deadlines.
fn lease_through_follower(kind: Kind) {
    const TTL_SECS: u64 = 3;
    let cluster = Cluster::start(kind, 3, &[]);
    let all = cluster.all();
    let leader = cluster.wait_leader(&all, LEADER_TIMEOUT);
    let follower = cluster.others(&[leader])[0];
    let ep = cluster.members[follower].endpoint();

    let grant = etcdctl(&ep, &["lease", "grant", &TTL_SECS.to_string()], None);
    assert!(grant.success(), "{grant:?}");
    let id = grant.stdout.split_whitespace().nth(1).unwrap().to_string();
    let put = etcdctl(&ep, &["put", "held", "v", "--lease", &id], None);
    assert!(put.success(), "{put:?}");

    let mut keeper = common::etcdctl_command(&ep, &["lease", "keep-alive", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn etcdctl lease keep-alive");
    std::thread::sleep(Duration::from_secs(2 * TTL_SECS + 1));
    let ttl = etcdctl(&ep, &["lease", "timetolive", &id, "--keys"], None);
    let held = cluster.get(follower, "held", false);
    let _ = keeper.kill();
    let out = keeper.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let renewals = stdout
        .lines()
        .filter(|l| l.contains(&format!("keepalived with TTL({TTL_SECS})")))
        .count();
    assert!(
        renewals >= 2,
        "{}: keep-alive through a follower:\n{stdout}\n{}",
        kind.label(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        held,
        Ok(Some("v".into())),
        "{}: the key outlived its TTL",
        kind.label()
    );
    // The HTTP/JSON gateway's keep-alive on the follower renews on the leader too.
    let decimal = i64::from_str_radix(&id, 16).unwrap().to_string();
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-X", "POST"])
        .arg(format!(
            "{}/v3/lease/keepalive",
            cluster.members[follower].url()
        ))
        .arg("-d")
        .arg(format!("{{\"ID\":\"{decimal}\"}}"))
        .output()
        .expect("run curl");
    let answer = String::from_utf8_lossy(&curl.stdout);
    assert!(
        answer.contains(&format!("\"TTL\":\"{TTL_SECS}\"")),
        "{}: gateway keep-alive through a follower: {answer}{}",
        kind.label(),
        String::from_utf8_lossy(&curl.stderr)
    );
    assert!(ttl.success(), "{ttl:?}");
    assert!(
        ttl.stdout
            .contains(&format!("granted with TTL({TTL_SECS}s)"))
            && ttl.stdout.contains("attached keys([held])")
            && !ttl.stdout.contains("remaining(-1s)")
            && !ttl.stdout.contains("already expired"),
        "{}: {}",
        kind.label(),
        ttl.stdout
    );
}

/// etcd's strict reconfiguration check covers adds too: a new voter counts towards the quorum
/// before it runs, so with a follower down, adding a member (voter or learner) is refused
/// ("unhealthy cluster"), and a voter is never added while the started voters would fall short
/// of a quorum ("not enough started members"). Both servers are asked the same things.
#[test]
fn adding_a_member_that_would_break_the_quorum_is_refused_as_etcd_does() {
    let (etcd, cairn) = on_both(add_quorum_script);
    for ((what, e), (_, c)) in etcd.iter().zip(&cairn) {
        assert_eq!(e, c, "{what}: cairn answers differently from etcd");
    }
    // The script would mean nothing if both servers accepted everything.
    let refusals = cairn.iter().filter(|(_, o)| o.contains("Error:")).count();
    assert_eq!(refusals, 3, "{cairn:#?}");
}

fn add_quorum_script(kind: Kind) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let peer = |p: u16| format!("--peer-urls=http://127.0.0.1:{p}");

    let mut three = Cluster::start(kind, 3, &[]);
    let leader = three.wait_leader(&three.all(), LEADER_TIMEOUT);
    let n = Normalizer::new(&three, three.status(0).expect("status").cluster_id);
    // etcd accepts an add only once the member has been connected to every peer for 5 s.
    std::thread::sleep(Duration::from_secs(6));
    let down = three.others(&[leader])[0];
    three.members[down].sigkill();
    // Longer than cairn's election timeout and etcd's peer-probe interval.
    std::thread::sleep(Duration::from_secs(3));
    let voter = three.ctl(leader, &["member", "add", "n5", &peer(free_port())]);
    seen.push((
        "voter add, a follower down".to_string(),
        outcome(&voter, &n),
    ));
    let learner = three.ctl(
        leader,
        &["member", "add", "n6", &peer(free_port()), "--learner"],
    );
    seen.push((
        "learner add, a follower down".to_string(),
        outcome(&learner, &n),
    ));
    let count = three.member_list(leader).map(|l| l.len());
    seen.push(("members after".to_string(), format!("{count:?}")));
    drop(three);

    let one = Cluster::start(kind, 1, &[]);
    one.wait_leader(&[0], LEADER_TIMEOUT);
    let n = Normalizer::new(&one, one.status(0).expect("status").cluster_id);
    let second = one.ctl(0, &["member", "add", "n2", &peer(free_port())]);
    seen.push((
        "second voter of a one-member cluster".to_string(),
        format!("exit {:?}", second.code),
    ));
    let third = one.ctl(0, &["member", "add", "n3", &peer(free_port())]);
    seen.push((
        "third voter while the second never started".to_string(),
        outcome(&third, &n),
    ));
    seen
}
