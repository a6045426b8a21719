//! The raft driver seen from one member whose peers are played by the test: the test is the
//! leader, reads every raft message the member sends and writes the answers itself, so it can
//! deliver exactly the late, duplicated or foreign messages a real network might, at the moment
//! that matters.

// The test is the member's network and runs on the real runtime; it waits with tokio directly.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use ::raft::eraftpb::{Entry, Message, MessageType};
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use crate::io::{FsDisk, RuntimeClock, SplitMix64, Transport};
use crate::proto::cairnpb;
use crate::proto::etcdserverpb::PutRequest;
use crate::server::{InitialMember, Server, ServerConfig, ServerIo};

const MEMBER: u64 = 0xa;
const LEADER: u64 = 0xb;
const OTHER: u64 = 0xc;
const TERM: u64 = 2;
const WAIT: Duration = Duration::from_secs(10);
/// Long enough for the node to take a delivered message through a loop turn and act on it.
const SETTLE: Duration = Duration::from_millis(300);

/// Hands every message the member sends to the test.
struct Capture(mpsc::UnboundedSender<Message>);

impl Transport for Capture {
    fn send(&self, msg: Message) {
        let _ = self.0.send(msg);
    }
}

/// One incarnation of the member under test.
struct Incarnation {
    server: Server,
    to_member: mpsc::Sender<Message>,
    from_member: mpsc::UnboundedReceiver<Message>,
    stop: watch::Sender<bool>,
    node: crate::server::NodeHandle,
    heartbeats: tokio::task::JoinHandle<()>,
}

fn config(dir: &std::path::Path, quota_backend_bytes: u64) -> ServerConfig {
    let initial_cluster = [MEMBER, LEADER, OTHER]
        .iter()
        .map(|id| InitialMember {
            name: format!("m{id:x}"),
            id: *id,
            peer_urls: vec![format!("http://127.0.0.1:{}", 40000 + id)],
        })
        .collect();
    ServerConfig {
        name: format!("m{MEMBER:x}"),
        auto_compaction: None,
        wal_dir: None,
        data_dir: dir.join("data"),
        member_id: MEMBER,
        cluster_id: 0x1234,
        initial_cluster,
        client_urls: vec!["http://127.0.0.1:2379".into()],
        heartbeat_interval: Duration::from_millis(50),
        // The member must never campaign: the test keeps it a follower with heartbeats.
        election_timeout: Duration::from_secs(5),
        snapshot_count: 100_000,
        snapshot_catch_up_entries: crate::raft::SNAPSHOT_CATCH_UP_ENTRIES,
        max_request_bytes: crate::config::MAX_REQUEST_BYTES_DEFAULT,
        max_txn_ops: 128,
        quota_backend_bytes,
        strict_reconfig_check: true,
        join_existing: false,
    }
}

fn from_leader(kind: MessageType) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = LEADER;
    m.to = MEMBER;
    m.term = TERM;
    m
}

/// Starts the member on `dir` and makes it a follower of the test's leader; `commit` is the
/// highest index the test has appended to it so far (heartbeats never claim more).
async fn start(dir: &std::path::Path, commit: u64) -> Incarnation {
    start_with_quota(dir, commit, 1 << 30).await
}

/// [`start`] with a backend quota of `quota_backend_bytes`.
async fn start_with_quota(
    dir: &std::path::Path,
    commit: u64,
    quota_backend_bytes: u64,
) -> Incarnation {
    let (tx, from_member) = mpsc::unbounded_channel();
    let io = ServerIo {
        disk: Arc::new(FsDisk),
        clock: Arc::new(RuntimeClock::new()),
        transport: Arc::new(Capture(tx)),
        rng: Box::new(SplitMix64::new(3)),
    };
    let (stop, stop_rx) = watch::channel(false);
    let (server, to_member, node) =
        Server::start(config(dir, quota_backend_bytes), io, stop_rx).unwrap();
    let beat = to_member.clone();
    let heartbeats = tokio::spawn(async move {
        loop {
            let mut hb = from_leader(MessageType::MsgHeartbeat);
            hb.commit = commit;
            if beat.send(hb).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut status = server.watch_status();
    tokio::time::timeout(
        WAIT,
        status.wait_for(|s| s.leader == LEADER && s.applied >= 3),
    )
    .await
    .expect("the member follows the test's leader in time")
    .unwrap();
    Incarnation {
        server,
        to_member,
        from_member,
        stop,
        node,
        heartbeats,
    }
}

impl Incarnation {
    /// The next message the member sends of `kind` (others are dropped).
    async fn next(&mut self, kind: MessageType) -> Message {
        tokio::time::timeout(WAIT, async {
            loop {
                let m = self.from_member.recv().await.expect("member runs");
                if m.get_msg_type() == kind {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the member sent no {kind:?} in time"))
    }

    async fn deliver(&self, m: Message) {
        self.to_member.send(m).await.unwrap();
    }

    /// The leader's answer to a ReadIndex request with `context`: the read may go ahead once the
    /// member applied `index`.
    async fn answer_read(&self, context: &[u8], index: u64) {
        let mut m = from_leader(MessageType::MsgReadIndexResp);
        m.index = index;
        m.entries = vec![Entry {
            data: context.to_vec().into(),
            ..Default::default()
        }]
        .into();
        self.deliver(m).await;
    }

    /// Appends `requests` after `prev` (term 1 for the bootstrap entries, else the test's term)
    /// and commits them.
    async fn append(&self, prev: u64, requests: &[cairnpb::Request]) {
        let mut m = from_leader(MessageType::MsgAppend);
        m.index = prev;
        m.log_term = if prev <= 3 { 1 } else { TERM };
        m.entries = requests
            .iter()
            .enumerate()
            .map(|(i, r)| Entry {
                term: TERM,
                index: prev + 1 + i as u64,
                data: r.encode_to_vec().into(),
                ..Default::default()
            })
            .collect::<Vec<_>>()
            .into();
        m.commit = prev + requests.len() as u64;
        self.deliver(m).await;
    }

    async fn shut_down(self) {
        self.heartbeats.abort();
        self.stop.send(true).unwrap();
        self.node.await.unwrap().unwrap();
        drop(self.server);
        // The store is closed once the server's background tasks let go of it.
        tokio::time::sleep(SETTLE).await;
    }
}

fn spawn_read(
    server: &Server,
) -> tokio::task::JoinHandle<Result<(), crate::server::error::RequestError>> {
    let server = server.clone();
    tokio::spawn(async move { server.read_index().await })
}

/// ReadIndex (Ongaro's thesis §6.4) ties an answer to the request that asked for it. A member
/// that asked for a read index, restarted, and asked again must not take the leader's late
/// answer to the first request as the answer to the second: that index may be older than writes
/// acknowledged in between, and the read would be stale.
#[tokio::test]
async fn read_index_answer_to_a_previous_incarnation_does_not_release_a_read() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut first = start(dir.path(), 3).await;
    let _unanswered = spawn_read(&first.server);
    let old = first.next(MessageType::MsgReadIndex).await;
    let old_context = old.entries[0].data.to_vec();
    first.shut_down().await;

    let mut second = start(dir.path(), 3).await;
    let read = spawn_read(&second.server);
    let new = second.next(MessageType::MsgReadIndex).await;
    let new_context = new.entries[0].data.to_vec();

    second.answer_read(&old_context, 3).await;
    tokio::time::sleep(SETTLE).await;
    assert!(
        !read.is_finished(),
        "an answer to the previous incarnation's request released this one's read"
    );
    second.answer_read(&new_context, 3).await;
    tokio::time::timeout(WAIT, read)
        .await
        .expect("its own answer releases the read")
        .unwrap()
        .unwrap();
    second.shut_down().await;
}

/// A member answers its clients when their requests apply. Requests from other members (or from
/// this member's previous start) can carry the same counter; applying one of them must not
/// answer this member's client with another request's result.
#[tokio::test]
async fn an_applied_request_answers_only_the_waiter_of_its_own_proposer() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut member = start(dir.path(), 3).await;
    let server = member.server.clone();
    let put = tokio::spawn(async move {
        server
            .put(PutRequest {
                key: b"mine".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
    });
    let own = loop {
        let m = member.next(MessageType::MsgPropose).await;
        let r = cairnpb::Request::decode(m.entries[0].data.as_ref()).unwrap();
        if matches!(r.op, Some(cairnpb::request::Op::Put(_))) {
            break r;
        }
    };
    assert_eq!(own.origin, MEMBER);
    let mut foreign = own.clone();
    foreign.origin = OTHER;
    foreign.op = Some(cairnpb::request::Op::Put(PutRequest {
        key: b"theirs".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    }));
    member.append(3, &[foreign]).await;
    tokio::time::sleep(SETTLE).await;
    assert!(
        !put.is_finished(),
        "another member's request with the same counter answered this member's client"
    );
    member.append(4, &[own]).await;
    let answer = tokio::time::timeout(WAIT, put)
        .await
        .expect("its own request answers the client")
        .unwrap();
    // Revision 1 is the empty store, 2 the foreign put, 3 this one.
    assert_eq!(answer.header.unwrap().revision, 3);
    member.shut_down().await;
}

/// A lease expiry is the judgement of one term's leader. An expiry proposed in term 1 that a
/// later leader appended (it was parked or forwarded) must not revoke the lease: that leader
/// renewed every deadline on promotion and may be serving the lease's keep-alives.
#[tokio::test]
async fn a_lease_expiry_applies_only_in_the_term_that_judged_it() {
    use crate::proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, RangeRequest};
    let dir = tempfile::TempDir::new().unwrap();
    let member = start(dir.path(), 3).await;
    let request = |id: u64, op: cairnpb::request::Op, expiry_term: u64| cairnpb::Request {
        id,
        op: Some(op),
        origin: LEADER,
        boot: 1,
        expiry_term,
        ..Default::default()
    };
    let lease = 0x77;
    let revoke = || cairnpb::request::Op::LeaseRevoke(LeaseRevokeRequest { id: lease });
    member
        .append(
            3,
            &[
                request(
                    1,
                    cairnpb::request::Op::LeaseGrant(LeaseGrantRequest { ttl: 5, id: lease }),
                    0,
                ),
                request(
                    2,
                    cairnpb::request::Op::Put(PutRequest {
                        key: b"lock".to_vec(),
                        value: b"held".to_vec(),
                        lease,
                        ..Default::default()
                    }),
                    0,
                ),
                // Judged in term 1, appended in term 2.
                request(3, revoke(), TERM - 1),
            ],
        )
        .await;
    let keys = |server: Server| async move {
        let mut status = server.watch_status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.applied >= 6))
            .await
            .unwrap()
            .unwrap();
        server
            .range(RangeRequest {
                key: b"lock".to_vec(),
                serializable: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs
            .len()
    };
    assert_eq!(
        keys(member.server.clone()).await,
        1,
        "an expiry from another term revoked the lease"
    );
    member.append(6, &[request(4, revoke(), TERM)]).await;
    let mut status = member.server.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.applied >= 7))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        keys(member.server.clone()).await,
        0,
        "its own term's expiry"
    );
    member.shut_down().await;
}

/// The pending proposals `/metrics` reports (waiters of requests and of membership changes).
fn proposals_pending(server: &Server) -> u64 {
    let text = server.render_metrics();
    let line = text
        .lines()
        .find(|l| l.starts_with("etcd_server_proposals_pending "))
        .expect("the metric is rendered");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A membership change whose client went away (its call was cancelled before the change
/// applied) must not keep its waiter: abandoned conf-change waiters used to pile up until
/// WAITERS_MAX of them refused every later membership change with "too many requests".
#[tokio::test]
async fn an_abandoned_membership_change_forgets_its_waiter() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut member = start(dir.path(), 3).await;
    // The member publishes its name first; commit that, so nothing else waits.
    let publish = loop {
        let m = member.next(MessageType::MsgPropose).await;
        let r = cairnpb::Request::decode(m.entries[0].data.as_ref()).unwrap();
        if matches!(r.op, Some(cairnpb::request::Op::MemberAttributes(_))) {
            break r;
        }
    };
    member.append(3, &[publish]).await;
    tokio::time::timeout(WAIT, async {
        while proposals_pending(&member.server) != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the publish applied");

    let server = member.server.clone();
    let add = tokio::spawn(async move {
        server
            .member_add(vec!["http://127.0.0.1:49999".into()], true)
            .await
    });
    // The follower forwards the change to the test's leader, which never commits it.
    loop {
        let m = member.next(MessageType::MsgPropose).await;
        if m.entries[0].get_entry_type() == ::raft::eraftpb::EntryType::EntryConfChange {
            break;
        }
    }
    tokio::time::sleep(SETTLE).await;
    assert_eq!(proposals_pending(&member.server), 1, "the change waits");
    add.abort();
    let _ = add.await;
    // A few ticks (50 ms each) later the waiter is gone.
    tokio::time::timeout(WAIT, async {
        while proposals_pending(&member.server) != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the abandoned change's waiter was forgotten");
    member.shut_down().await;
}

/// Issue 8: a member whose backend reaches the quota must stop writes on every member without
/// ever failing an apply. A member that applies a write proposed elsewhere (so its own check
/// before proposing never ran) and finds itself at the quota raises the NOSPACE alarm through
/// raft; once the alarm entry applies, every later put is refused at apply — an answer, not a
/// stop — while deletes go on; the alarm survives a restart, and disarming it lets writes in.
#[tokio::test]
async fn a_member_at_its_quota_raises_the_nospace_alarm_through_raft_and_writes_stop_at_apply() {
    use crate::proto::etcdserverpb::{
        alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmType, DeleteRangeRequest,
        RangeRequest,
    };
    use crate::server::error::RequestError;
    const QUOTA_BYTES: u64 = 256 * 1024;
    let dir = tempfile::TempDir::new().unwrap();
    let mut member = start_with_quota(dir.path(), 3, QUOTA_BYTES).await;
    let from_leader = |id: u64, op: cairnpb::request::Op| cairnpb::Request {
        id,
        op: Some(op),
        origin: LEADER,
        boot: 1,
        ..Default::default()
    };
    let put = |key: &str, value_bytes: usize| {
        cairnpb::request::Op::Put(PutRequest {
            key: key.into(),
            value: vec![b'x'; value_bytes],
            ..Default::default()
        })
    };
    let applied = |server: Server, index: u64| async move {
        let mut status = server.watch_status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.applied >= index))
            .await
            .expect("applied in time")
            .unwrap();
    };
    let keys = |server: Server| async move {
        let r = server
            .range(RangeRequest {
                key: b"\0".to_vec(),
                range_end: b"\0".to_vec(),
                keys_only: true,
                serializable: true,
                ..Default::default()
            })
            .await
            .unwrap();
        r.kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect::<Vec<_>>()
    };

    // Over the quota in one put the leader appended: it applies, and the member asks for the
    // alarm with a proposal of its own.
    member
        .append(3, &[from_leader(1, put("big", QUOTA_BYTES as usize))])
        .await;
    let alarm = loop {
        let m = member.next(MessageType::MsgPropose).await;
        let r = cairnpb::Request::decode(m.entries[0].data.as_ref()).unwrap();
        if let Some(cairnpb::request::Op::Alarm(a)) = &r.op {
            break (r.clone(), *a);
        }
    };
    assert_eq!(
        alarm.1,
        AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: MEMBER,
            alarm: AlarmType::Nospace as i32,
        }
    );
    assert_eq!(alarm.0.origin, MEMBER);
    assert_eq!(keys(member.server.clone()).await, ["big"]);
    let used = member.server.store().db_size_in_use_bytes();
    assert!(used >= QUOTA_BYTES, "{used} bytes in use");

    // The alarm entry applies; the put after it is refused at apply, the delete applies.
    member
        .append(
            4,
            &[
                alarm.0,
                from_leader(2, put("small", 1)),
                from_leader(
                    3,
                    cairnpb::request::Op::DeleteRange(DeleteRangeRequest {
                        key: b"big".to_vec(),
                        ..Default::default()
                    }),
                ),
            ],
        )
        .await;
    applied(member.server.clone(), 7).await;
    let nospace = AlarmMember {
        member_id: MEMBER,
        alarm: AlarmType::Nospace as i32,
    };
    assert_eq!(member.server.alarms(), [nospace]);
    assert_eq!(
        member.server.status().errors,
        [format!("memberID:{MEMBER} alarm:NOSPACE ")]
    );
    assert!(keys(member.server.clone()).await.is_empty());
    // A client's put is refused before it is proposed: the deleted value's revision still
    // holds its pages until a compaction.
    assert_eq!(
        member
            .server
            .put(PutRequest {
                key: b"client".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await,
        Err(RequestError::NoSpace)
    );
    member.shut_down().await;

    // The alarm is in the backend: a restart keeps refusing, until it is disarmed.
    let member = start_with_quota(dir.path(), 7, QUOTA_BYTES).await;
    assert_eq!(member.server.alarms(), [nospace]);
    let disarm = AlarmRequest {
        action: AlarmAction::Deactivate as i32,
        member_id: MEMBER,
        alarm: AlarmType::Nospace as i32,
    };
    member
        .append(
            7,
            &[
                from_leader(4, put("refused", 1)),
                from_leader(5, cairnpb::request::Op::Alarm(disarm)),
                from_leader(6, put("accepted", 1)),
            ],
        )
        .await;
    applied(member.server.clone(), 10).await;
    assert!(member.server.alarms().is_empty());
    assert!(member.server.status().errors.is_empty());
    assert_eq!(keys(member.server.clone()).await, ["accepted"]);
    member.shut_down().await;
}
