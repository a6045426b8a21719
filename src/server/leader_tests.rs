//! The raft driver as a leader: a one-voter cluster whose learner is played by the test, which
//! reads every message and snapshot the leader hands its transport and answers for the learner.
//! That shows what a leader sends a follower that lags behind a log compaction, and whether it
//! keeps sending heartbeats while a snapshot is prepared.

// The test is the member's network and runs on the real runtime; it waits with tokio directly.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::raft::eraftpb::{Message, MessageType};
use tokio::sync::{mpsc, watch};

use crate::io::{FsDisk, RuntimeClock, SplitMix64, Transport};
use crate::proto::etcdserverpb::{PutRequest, RangeRequest};
use crate::server::{InitialMember, Server, ServerConfig, ServerIo};

const MEMBER: u64 = 0xa;
const LEARNER_URL: &str = "http://127.0.0.1:40100";
const HEARTBEAT: Duration = Duration::from_millis(50);
/// The export test's heartbeat interval: short, so that an export of a few tens of megabytes
/// spans many of them.
const HEARTBEAT_SHORT: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(30);

/// What the leader handed its transport.
#[derive(Debug)]
enum Sent {
    Message(Message),
    /// A snapshot, with the size of its file.
    Snapshot(Message, u64),
}

/// Hands everything the member sends to the test.
struct Capture(mpsc::UnboundedSender<Sent>);

impl Transport for Capture {
    fn send(&self, msg: Message) {
        let _ = self.0.send(Sent::Message(msg));
    }

    fn send_snapshot(&self, msg: Message, path: std::path::PathBuf) {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&path);
        let _ = self.0.send(Sent::Snapshot(msg, bytes));
    }
}

struct Leader {
    server: Server,
    to_member: mpsc::Sender<Message>,
    sent: mpsc::UnboundedReceiver<Sent>,
    stop: watch::Sender<bool>,
    node: crate::server::NodeHandle,
}

fn config(
    dir: &std::path::Path,
    heartbeat: Duration,
    snapshot_count: u64,
    catch_up_entries: u64,
) -> ServerConfig {
    ServerConfig {
        name: "leader".into(),
        auto_compaction: None,
        wal_dir: None,
        data_dir: dir.join("data"),
        member_id: MEMBER,
        cluster_id: 0x1234,
        initial_cluster: vec![InitialMember {
            name: "leader".into(),
            id: MEMBER,
            peer_urls: vec!["http://127.0.0.1:40010".into()],
        }],
        client_urls: vec!["http://127.0.0.1:2379".into()],
        heartbeat_interval: heartbeat,
        election_timeout: 10 * heartbeat,
        snapshot_count,
        snapshot_catch_up_entries: catch_up_entries,
        max_request_bytes: crate::config::MAX_REQUEST_BYTES_DEFAULT,
        max_txn_ops: 128,
        quota_backend_bytes: 1 << 30,
        strict_reconfig_check: true,
        join_existing: false,
    }
}

/// Starts (or restarts) the one-voter cluster on `dir` and waits until it leads.
async fn start(dir: &std::path::Path, snapshot_count: u64, catch_up_entries: u64) -> Leader {
    start_with(dir, HEARTBEAT, snapshot_count, catch_up_entries).await
}

async fn start_with(
    dir: &std::path::Path,
    heartbeat: Duration,
    snapshot_count: u64,
    catch_up_entries: u64,
) -> Leader {
    let (tx, sent) = mpsc::unbounded_channel();
    let io = ServerIo {
        disk: Arc::new(FsDisk),
        clock: Arc::new(RuntimeClock::new()),
        transport: Arc::new(Capture(tx)),
        rng: Box::new(SplitMix64::new(5)),
    };
    let (stop, stop_rx) = watch::channel(false);
    let (server, to_member, node) = Server::start(
        config(dir, heartbeat, snapshot_count, catch_up_entries),
        io,
        stop_rx,
    )
    .unwrap();
    let mut status = server.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.is_leader))
        .await
        .expect("a one-voter cluster elects itself")
        .unwrap();
    Leader {
        server,
        to_member,
        sent,
        stop,
        node,
    }
}

impl Leader {
    async fn put(&self, key: &str, value_bytes: usize) {
        self.server
            .put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_bytes],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    async fn add_learner(&self) -> u64 {
        let (learner, _) = self
            .server
            .member_add(vec![LEARNER_URL.into()], true)
            .await
            .expect("a learner may join a one-voter cluster");
        learner.id
    }

    /// The next message of `kind` to `to`, or the next snapshot to `to` (everything else is
    /// dropped).
    async fn next_to(&mut self, to: u64, kind: MessageType) -> Sent {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.sent.recv().await.expect("member runs") {
                    Sent::Message(m) if m.to == to && m.get_msg_type() == kind => {
                        return Sent::Message(m)
                    }
                    s @ Sent::Snapshot(..) => return s,
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the leader sent no {kind:?} to {to:x} in time"))
    }

    /// The learner answers the leader's probe `probe`: it does not have that entry, its log
    /// ends at `last`.
    async fn reject(&self, learner: u64, probe: &Message, last: u64) {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        m.from = learner;
        m.to = MEMBER;
        m.term = probe.term;
        m.index = probe.index;
        m.reject = true;
        m.reject_hint = last;
        self.to_member.send(m).await.unwrap();
    }

    fn applied(&self) -> u64 {
        self.server.node_status().applied
    }

    async fn keys(&self) -> usize {
        self.server
            .range(RangeRequest {
                key: b"\0".to_vec(),
                range_end: b"\0".to_vec(),
                serializable: true,
                keys_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs
            .len()
    }

    async fn shut_down(self) {
        self.stop.send(true).unwrap();
        self.node.await.unwrap().unwrap();
        drop(self.server);
        // The store is closed once the server's background tasks let go of it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The leader's answer to a learner that lags `lag` entries behind its applied index: the first
/// append (after the probe) or snapshot it sends once the learner rejected its probe. Returns the
/// learner's claimed last index too.
async fn answer_to_a_lagging_learner(leader: &mut Leader, learner: u64, lag: u64) -> (u64, Sent) {
    // A heartbeat answer makes a paused leader probe again (raft-rs resumes the follower).
    let mut hb = Message::default();
    hb.set_msg_type(MessageType::MsgHeartbeatResponse);
    hb.from = learner;
    hb.to = MEMBER;
    hb.term = leader.server.node_status().term;
    leader.to_member.send(hb).await.unwrap();
    let probe = match leader.next_to(learner, MessageType::MsgAppend).await {
        Sent::Message(m) => m,
        s => panic!("a snapshot before the learner answered anything: {s:?}"),
    };
    let last = leader.applied() - lag;
    assert!(last < probe.index, "the learner is behind the probe");
    leader.reject(learner, &probe, last).await;
    loop {
        match leader.next_to(learner, MessageType::MsgAppend).await {
            // A second copy of the probe, sent before the rejection arrived.
            Sent::Message(m) if m.index == probe.index => continue,
            sent => return (last, sent),
        }
    }
}

/// Keys written before the learner is added; the log is compacted every `SNAPSHOT_COUNT`.
const KEYS: usize = 100;
const SNAPSHOT_COUNT: u64 = 10;
/// The catch-up window of the test: half the keys.
const CATCH_UP_ENTRIES: u64 = 50;
/// How far behind the learner says it is: inside the window even right after a compaction.
const LAG: u64 = 20;

/// etcd keeps `SnapshotCatchUpEntries` entries behind every log compaction, so that a follower
/// a little behind gets the entries it misses rather than a snapshot of the whole backend. The
/// log used to be compacted right up to the applied index: a follower one compaction behind
/// needed a snapshot. The window must survive a restart too: the WAL keeps it, with its snapshot
/// marker below the applied index, and the restarted member replays the entries it already
/// applied without applying them again.
#[tokio::test]
async fn a_follower_behind_by_less_than_the_catch_up_window_gets_entries_not_a_snapshot() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut leader = start(dir.path(), SNAPSHOT_COUNT, CATCH_UP_ENTRIES).await;
    for i in 0..KEYS {
        leader.put(&format!("k{i:03}"), 10).await;
    }
    let learner = leader.add_learner().await;
    match answer_to_a_lagging_learner(&mut leader, learner, LAG).await {
        (last, Sent::Message(m)) => assert_eq!(
            m.index, last,
            "the append resumes right after the learner's last entry"
        ),
        (_, Sent::Snapshot(m, _)) => panic!(
            "a learner {LAG} entries behind was sent a snapshot at {}",
            m.get_snapshot().get_metadata().index
        ),
    }
    let applied = leader.applied();
    leader.shut_down().await;

    let mut leader = start(dir.path(), SNAPSHOT_COUNT, CATCH_UP_ENTRIES).await;
    assert!(leader.applied() >= applied, "nothing applied is lost");
    assert_eq!(leader.keys().await, KEYS, "nothing is lost");
    let revision = leader.server.store().current_revision();
    assert_eq!(
        revision,
        1 + KEYS as i64,
        "one revision per put, none replayed"
    );
    match answer_to_a_lagging_learner(&mut leader, learner, LAG).await {
        (last, Sent::Message(m)) => assert_eq!(m.index, last),
        (_, Sent::Snapshot(..)) => panic!("the restarted leader lost its catch-up window"),
    }
    // A learner behind the window still gets a snapshot.
    let behind = CATCH_UP_ENTRIES + SNAPSHOT_COUNT + 5;
    match answer_to_a_lagging_learner(&mut leader, learner, behind).await {
        (_, Sent::Snapshot(m, bytes)) => {
            assert!(m.get_snapshot().get_metadata().index >= applied);
            assert!(bytes > 0, "the snapshot file holds the backend");
        }
        (_, Sent::Message(m)) => panic!("entries from {} were compacted away", m.index),
    }
    leader.shut_down().await;
}

/// Values written for the export test: enough that writing and syncing the snapshot file takes
/// several short heartbeat intervals even on a fast disk (about 130 ms here, in a debug build).
const BIG_VALUES: usize = 48;
const BIG_VALUE_BYTES: usize = 1024 * 1024;

/// A leader exports its backend to a snapshot file for a follower that fell behind the log. The
/// export used to run inside the raft loop: however long it took, the leader sent no heartbeat
/// (and applied, answered and read nothing), and with a large backend the followers' election
/// timeout passed and they elected another leader. Now the file is written on a blocking thread
/// and the loop keeps beating meanwhile.
#[tokio::test]
async fn the_leader_keeps_sending_heartbeats_while_it_exports_a_snapshot() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut leader = start_with(dir.path(), HEARTBEAT_SHORT, SNAPSHOT_COUNT, 0).await;
    for i in 0..BIG_VALUES {
        leader.put(&format!("big{i:03}"), BIG_VALUE_BYTES).await;
    }
    let learner = leader.add_learner().await;
    let probe = match leader.next_to(learner, MessageType::MsgAppend).await {
        Sent::Message(m) => m,
        s => panic!("a snapshot before the learner answered anything: {s:?}"),
    };
    // The learner has nothing: the log it needs is compacted, so it needs a snapshot.
    leader.reject(learner, &probe, 0).await;
    let asked = Instant::now();
    let mut heartbeats = 0;
    let bytes = loop {
        match leader.next_to(learner, MessageType::MsgHeartbeat).await {
            Sent::Message(_) => heartbeats += 1,
            Sent::Snapshot(_, bytes) => break bytes,
        }
    };
    let took = asked.elapsed();
    println!("exported {bytes} bytes in {took:?}, {heartbeats} heartbeats meanwhile");
    assert!(
        bytes >= (BIG_VALUES * BIG_VALUE_BYTES) as u64,
        "the file holds the values"
    );
    assert!(
        took >= 4 * HEARTBEAT_SHORT,
        "the export took {took:?}: too fast to tell whether the loop was blocked; grow the data"
    );
    // Every heartbeat interval of the export has its heartbeat, give or take the first and
    // last; an export inside the loop leaves at most the one already due when it started.
    let intervals = (took.as_millis() / HEARTBEAT_SHORT.as_millis()) as usize;
    assert!(
        heartbeats + 2 >= intervals && heartbeats >= 2,
        "{heartbeats} heartbeats in {took:?} of export: the loop was blocked"
    );
    leader.shut_down().await;
}

/// Issue 8, item 12: a leader that applies its own removal used to stop at once. Its followers
/// learn that the removal is committed only from the leader, so if the one message that said so
/// was lost, the remaining members never applied it: they kept the removed leader in their
/// configuration, could not form a quorum without it, and never elected again. The leaving
/// leader now keeps telling them the commit index, once a tick, until they know. Here the test
/// plays the other voter and loses the first message that carries the removal's commit.
#[tokio::test]
async fn a_removed_leader_keeps_telling_its_follower_until_the_removal_is_known() {
    use ::raft::eraftpb::{ConfChange, ConfChangeType, EntryType};
    use protobuf::Message as _;
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = tempfile::TempDir::new().unwrap();
    let leader = start(dir.path(), 1_000, 0).await;
    let Leader {
        server,
        to_member,
        mut sent,
        stop: _stop,
        node,
    } = leader;
    let (follower, _) = server
        .member_add(vec![LEARNER_URL.into()], true)
        .await
        .expect("a learner may join a one-voter cluster");
    let follower = follower.id;
    // The raft index of the entry that removes the leader, once the follower received it.
    let removal = Arc::new(AtomicU64::new(0));
    // The commit indices of the messages the follower received (the lost one excluded).
    let (delivered_tx, mut delivered) = mpsc::unbounded_channel::<u64>();
    let responder = {
        let removal = removal.clone();
        let to_member = to_member.clone();
        tokio::spawn(async move {
            let mut lost_one = false;
            while let Some(s) = sent.recv().await {
                let Sent::Message(m) = s else { continue };
                if m.to != follower {
                    continue;
                }
                for e in &m.entries {
                    if e.get_entry_type() == EntryType::EntryConfChange {
                        let cc = ConfChange::parse_from_bytes(&e.data).unwrap();
                        if cc.get_change_type() == ConfChangeType::RemoveNode
                            && cc.node_id == MEMBER
                        {
                            removal.store(e.index, Ordering::SeqCst);
                        }
                    }
                }
                let r = removal.load(Ordering::SeqCst);
                if r != 0 && m.commit >= r && !lost_one {
                    lost_one = true;
                    continue;
                }
                let _ = delivered_tx.send(m.commit);
                // The follower accepts everything: it has the leader's log.
                let mut reply = Message {
                    from: follower,
                    to: MEMBER,
                    term: m.term,
                    ..Default::default()
                };
                match m.get_msg_type() {
                    MessageType::MsgAppend => {
                        reply.set_msg_type(MessageType::MsgAppendResponse);
                        reply.index = m.index + m.entries.len() as u64;
                    }
                    MessageType::MsgHeartbeat => {
                        reply.set_msg_type(MessageType::MsgHeartbeatResponse);
                        reply.context = m.context.clone();
                    }
                    _ => continue,
                }
                if to_member.send(reply).await.is_err() {
                    break;
                }
            }
        })
    };
    // Promotion waits until the learner has caught up.
    tokio::time::timeout(WAIT, async {
        loop {
            match server.member_promote(follower).await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(HEARTBEAT).await,
            }
        }
    })
    .await
    .expect("the follower is promoted");
    server
        .member_remove(MEMBER)
        .await
        .expect("a two-voter cluster may remove its leader while the other voter is up");
    let r = removal.load(Ordering::SeqCst);
    assert!(r > 0, "the follower received the removal");
    // The first message saying the removal is committed was lost; another one must follow.
    tokio::time::timeout(10 * HEARTBEAT * 3, async {
        while let Some(commit) = delivered.recv().await {
            if commit >= r {
                return;
            }
        }
        panic!("the leader stopped without telling the follower the removal is committed");
    })
    .await
    .expect("the removed leader told its follower that the removal is committed");
    // Informed, the follower answers, and the leader leaves.
    let stopped = tokio::time::timeout(WAIT, node)
        .await
        .expect("the leader leaves");
    assert!(
        matches!(stopped, Ok(Err(crate::raft::NodeError::Removed))),
        "{stopped:?}"
    );
    responder.abort();
    drop(server);
}

/// A lease granted right after the member became leader runs from its grant: the member takes
/// the lease deadlines as it starts leading, not at the lease task's next look.
#[tokio::test]
async fn a_lease_granted_as_the_leader_starts_runs_from_its_grant() {
    use crate::proto::etcdserverpb::LeaseGrantRequest;
    let dir = tempfile::TempDir::new().unwrap();
    let leader = start(dir.path(), 1_000, 1_000).await;
    let lessor = leader.server.inner.lessor.clone();
    assert!(
        lessor.is_primary(),
        "leading, the member holds the deadlines"
    );
    let granted = leader
        .server
        .lease_grant(LeaseGrantRequest { ttl: 5, id: 0x55 })
        .await
        .unwrap();
    let now = leader.server.inner.clock.now();
    assert!(
        lessor.is_expired(granted.id, now + Duration::from_secs(5)),
        "the lease must expire five seconds after its grant, not later"
    );
    assert!(!lessor.is_expired(granted.id, now));
    let _ = leader.stop.send(true);
}
