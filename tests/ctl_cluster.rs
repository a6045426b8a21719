//! cairnctl against etcdctl on a real three-member etcd 3.4.23 cluster: `member`, `lease`,
//! `endpoint hashkv`, `move-leader` and `watch`, comparing stdout, stderr and exit status.
//!
//! Both tools run the same arguments against the same servers, one after the other (or, for
//! `watch`, side by side while a third process writes). Only what legitimately differs between two
//! runs of etcdctl itself is normalised: the timestamp and random client id in clientv3's retry
//! log lines, and the ids the cluster hands out per request (a new member's ID, a new lease ID).
//! Commands that change the cluster get their own fresh subject per tool (each adds its own
//! learner on its own peer URL, revokes its own lease), so both see the same situation.
//!
//! Every command talks to one endpoint unless the test is about several: etcdctl's balancer picks
//! among several endpoints at random, which would make response headers differ.

// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb as pb;
use prost::Message;

/// How long one etcdctl or cairnctl invocation may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cluster may take to elect a leader and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long both watchers run side by side.
const WATCH_WINDOW: Duration = Duration::from_secs(3);
/// Members in the test cluster.
const MEMBERS: usize = 3;
/// etcd refuses membership changes ("etcdserver: unhealthy cluster") until its peers have been
/// connected for five seconds (`HealthInterval`); how long to wait for that.
const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(30);

fn etcd_bin() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CAIRN_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    assert!(
        path.is_file(),
        "reference etcd not found at {}: install it with `apt-get install -y etcd-server`",
        path.display()
    );
    path
}

fn etcdctl_bin() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CAIRN_ETCDCTL").unwrap_or_else(|_| "/usr/bin/etcdctl".into()));
    assert!(
        path.is_file(),
        "etcdctl not found at {}: install it with `apt-get install -y etcd-client`",
        path.display()
    );
    path
}

fn cairnctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairnctl"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// What a finished command printed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Out {
    stdout: Vec<u8>,
    stderr: String,
    code: Option<i32>,
}

/// Collects a child's output, killing it after `limit`.
fn finish(mut child: Child, limit: Duration) -> Out {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        stdout: out_reader.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned(),
        code,
    }
}

fn spawn(program: &PathBuf, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .env_remove("ETCDCTL_API")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()))
}

fn run(program: &PathBuf, args: &[String]) -> Out {
    finish(spawn(program, args), COMMAND_TIMEOUT)
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// A three-member etcd cluster on fresh loopback ports and data directories, killed on drop.
struct Cluster {
    children: Vec<Child>,
    started: Instant,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..MEMBERS).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut children = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data = dir.path().join(format!("m{i}"));
            let child = Command::new(etcd_bin())
                .args([
                    "--name",
                    &format!("m{i}"),
                    "--data-dir",
                    &data.to_string_lossy(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-token",
                    "ctl-cluster",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn etcd");
            children.push(child);
        }
        let clients = ports
            .iter()
            .map(|(c, _)| format!("127.0.0.1:{c}"))
            .collect();
        let cluster = Cluster {
            children,
            started: Instant::now(),
            clients,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            let out = run(
                &etcdctl_bin(),
                &words(&format!(
                    "--endpoints={} endpoint health --command-timeout=2s",
                    cluster.clients.join(",")
                )),
            );
            if out.code == Some(0) {
                break;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "the etcd cluster did not become healthy: {}",
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    /// `--endpoints=` for member `i`.
    fn one(&self, i: usize) -> String {
        format!("--endpoints={}", self.clients[i])
    }

    fn all(&self) -> String {
        format!("--endpoints={}", self.clients.join(","))
    }

    fn etcdctl(&self, args: &str) -> Out {
        run(&etcdctl_bin(), &words(args))
    }

    /// The member IDs (hex) and whether each leads, from `endpoint status`.
    fn status(&self) -> Vec<(String, bool)> {
        let out = self.etcdctl(&format!("{} endpoint status", self.all()));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(", ").collect();
                (f[1].to_string(), f[4] == "true")
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What may differ between two runs of etcdctl itself: clientv3's log timestamps and client ids.
fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let mut l = line.to_string();
        if let Some(at) = l.find("\"ts\":\"") {
            if let Some(end) = l[at + 6..].find('"') {
                l.replace_range(at + 6..at + 6 + end, "TS");
            }
        }
        if let Some(at) = l.find("client-") {
            let end = (at + 7 + 36).min(l.len());
            l.replace_range(at + 7..end, "UUID");
        }
        out.push_str(&l);
    }
    out
}

/// Mismatches found so far, reported together at the end.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    compared: usize,
}

impl Report {
    /// Compares two outputs after replacing `subst` pairs (etcdctl's text, cairnctl's text).
    fn check(&mut self, what: &str, e: &Out, c: &Out, subst: &[(String, String)]) {
        self.compared += 1;
        let mut eo = normalise(&String::from_utf8_lossy(&e.stdout));
        let mut co = normalise(&String::from_utf8_lossy(&c.stdout));
        let mut ee = normalise(&e.stderr);
        let mut ce = normalise(&c.stderr);
        for (i, (a, b)) in subst.iter().enumerate() {
            let mark = format!("<SUBST{i}>");
            // Go's `%16x` pads a member id with spaces when it has fewer than 16 hex digits (one
            // random id in sixteen does): the padded form goes with the id.
            let (pa, pb) = (format!("{a:>16}"), format!("{b:>16}"));
            eo = eo.replace(pa.as_str(), &mark).replace(a.as_str(), &mark);
            ee = ee.replace(pa.as_str(), &mark).replace(a.as_str(), &mark);
            co = co.replace(pb.as_str(), &mark).replace(b.as_str(), &mark);
            ce = ce.replace(pb.as_str(), &mark).replace(b.as_str(), &mark);
        }
        if subst.is_empty() && e.stdout != c.stdout && eo == co {
            // Same text after normalising stderr-like parts, but different bytes.
            eo = format!("{:?}", e.stdout);
            co = format!("{:?}", c.stdout);
        }
        if eo != co || ee != ce || e.code != c.code {
            self.failures.push(format!(
                "{what}\n  etcdctl  (exit {:?}):\n{eo}{ee}\n  cairnctl (exit {:?}):\n{co}{ce}",
                e.code, c.code
            ));
        }
    }

    /// Runs `args` with both tools and compares.
    fn same(&mut self, args: &str) -> (Out, Out) {
        let e = run(&etcdctl_bin(), &words(args));
        let c = run(&cairnctl_bin(), &words(args));
        self.check(args, &e, &c, &[]);
        (e, c)
    }
}

/// Member lists in a canonical order: the server sorts members by ID, and the new members' IDs
/// are random, so where a new member appears differs from run to run.
fn sort_members(o: &Out) -> Out {
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let sorted: Vec<String> = text
        .lines()
        .map(|line| {
            if let Some(list) = line.strip_prefix("ETCD_INITIAL_CLUSTER=") {
                let mut items: Vec<&str> = list.trim_matches('"').split(',').collect();
                items.sort_unstable();
                return format!("ETCD_INITIAL_CLUSTER=\"{}\"", items.join(","));
            }
            if let Some(at) = line.find("\"members\":[") {
                let (head, tail) = line.split_at(at + "\"members\":[".len());
                let end = tail.rfind(']').unwrap_or(tail.len());
                let mut items: Vec<&str> = tail[..end].split("},{").collect();
                for item in &mut items {
                    *item = item.trim_matches(|c| c == '{' || c == '}');
                }
                items.sort_unstable();
                return format!("{head}{{{}}}{}", items.join("},{"), &tail[end..]);
            }
            line.to_string()
        })
        .collect();
    let mut stdout = sorted.join("\n");
    if text.ends_with('\n') {
        stdout.push('\n');
    }
    Out {
        stdout: stdout.into_bytes(),
        ..o.clone()
    }
}

/// A `member add|update|remove -w protobuf` answer decoded, with the new member's id put to 0,
/// its peer port to `PORT`, and the member list in id order; `None` if it does not decode.
fn decode_members(
    what: &str,
    bytes: &[u8],
    new_id: u64,
    port: &str,
) -> Option<(
    Option<pb::ResponseHeader>,
    Option<pb::Member>,
    Vec<pb::Member>,
)> {
    let (header, member, members) = match what {
        "add" => {
            let r = pb::MemberAddResponse::decode(bytes).ok()?;
            (r.header, r.member, r.members)
        }
        "update" => {
            let r = pb::MemberUpdateResponse::decode(bytes).ok()?;
            (r.header, None, r.members)
        }
        _ => {
            let r = pb::MemberRemoveResponse::decode(bytes).ok()?;
            (r.header, None, r.members)
        }
    };
    let fix = |mut m: pb::Member| {
        if m.id == new_id {
            m.id = 0;
        }
        for u in &mut m.peer_ur_ls {
            *u = u.replace(port, "PORT");
        }
        m
    };
    let mut members: Vec<pb::Member> = members.into_iter().map(fix).collect();
    members.sort_by_key(|m| m.id);
    Some((header, member.map(fix), members))
}

fn decimal(hex: &str) -> String {
    u64::from_str_radix(hex, 16).expect("hex id").to_string()
}

/// The ID of the only unstarted member, from `member list`.
fn unstarted(cluster: &Cluster) -> Option<String> {
    let out = cluster.etcdctl(&format!("{} member list", cluster.one(0)));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("unstarted"))
        .and_then(|l| l.split(", ").next())
        .map(str::to_string)
}

#[test]
fn cluster_commands_match_etcdctl() {
    let cluster = Cluster::start();
    let mut report = Report::default();
    let one = cluster.one(0);
    let all = cluster.all();
    let formats = ["simple", "json", "fields", "table", "protobuf"];

    // Reads: member list, hashkv of every endpoint.
    for w in formats {
        report.same(&format!("{one} member list -w {w}"));
        report.same(&format!("{all} endpoint hashkv -w {w}"));
        report.same(&format!("{one} endpoint hashkv --cluster -w {w}"));
    }
    report.same(&format!("{one} put k1 v1"));
    report.same(&format!("{one} endpoint hashkv --rev 1"));
    report.same(&format!("{one} endpoint hashkv --rev 1000"));

    // Argument and server errors.
    for args in [
        "member add",
        "member add a b http://x:1",
        "member add a --peer-urls=127.0.0.1:1",
        "member add a --peer-urls=http://a:x",
        "member remove zz",
        "member remove 1234",
        "member update 1234 --peer-urls=http://127.0.0.1:1",
        "member promote 1234",
        "move-leader 1234",
        "move-leader zz",
        "lease revoke 1234",
        "lease timetolive 1234 -w json",
        "lease keep-alive --once 1234",
        "lease keep-alive 1234",
        "watch",
        "watch a b --prefix",
    ] {
        report.same(&format!("{one} {args}"));
    }

    // Membership changes: each tool adds, updates and removes a learner of its own.
    let mut peer = 40000 + (std::process::id() % 10000) as u16;
    loop {
        peer += 1;
        let probe = cluster.etcdctl(&format!(
            "{one} member add probe --learner --peer-urls=http://127.0.0.1:{peer}"
        ));
        if probe.code == Some(0) {
            let id = unstarted(&cluster).expect("the probe learner");
            cluster.etcdctl(&format!("{one} member remove {id}"));
            break;
        }
        assert!(
            probe.stderr.contains("unhealthy cluster")
                && cluster.started.elapsed() < RECONFIGURE_TIMEOUT,
            "the cluster does not accept a learner: {}",
            probe.stderr
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for w in formats {
        let mut outs = Vec::new();
        let mut ids = Vec::new();
        for tool in [etcdctl_bin(), cairnctl_bin()] {
            peer += 1;
            let add = run(
                &tool,
                &words(&format!(
                    "{one} member add lrn --learner --peer-urls=http://127.0.0.1:{peer} -w {w}"
                )),
            );
            let Some(id) = unstarted(&cluster) else {
                panic!("member add -w {w} added no member: {add:?}");
            };
            let update = run(
                &tool,
                &words(&format!(
                    "{one} member update {id} --peer-urls=http://127.0.0.2:{peer} -w {w}"
                )),
            );
            let remove = run(&tool, &words(&format!("{one} member remove {id} -w {w}")));
            outs.push((add, update, remove, peer));
            ids.push(id);
        }
        let (e, c) = (&outs[0], &outs[1]);
        let subst = [
            (ids[0].clone(), ids[1].clone()),
            (decimal(&ids[0]), decimal(&ids[1])),
            (e.3.to_string(), c.3.to_string()),
        ];
        if w == "protobuf" {
            // Binary ids cannot be replaced as text, so both answers are decoded, the new
            // member's id and peer port put to one value, and the decoded messages compared.
            let new_ids = [
                u64::from_str_radix(&ids[0], 16).expect("hex id"),
                u64::from_str_radix(&ids[1], 16).expect("hex id"),
            ];
            let ports = [e.3.to_string(), c.3.to_string()];
            for (a, b, what) in [
                (&e.0, &c.0, "add"),
                (&e.1, &c.1, "update"),
                (&e.2, &c.2, "remove"),
            ] {
                report.compared += 1;
                let da = decode_members(what, &a.stdout, new_ids[0], &ports[0]);
                let db = decode_members(what, &b.stdout, new_ids[1], &ports[1]);
                if a.code != b.code || a.stderr != b.stderr || da.is_none() || da != db {
                    report.failures.push(format!(
                        "member {what} -w protobuf: {a:?} vs {b:?}\n  decoded: {da:?}\n       vs: {db:?}"
                    ));
                }
            }
            continue;
        }
        // The IDs are replaced before sorting, so both lists sort the same way.
        let canonical = |o: &Out, own: usize| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            for (i, pair) in subst.iter().enumerate() {
                let id = if own == 0 { &pair.0 } else { &pair.1 };
                let padded = format!("{id:>16}");
                text = text
                    .replace(padded.as_str(), &format!("<SUBST{i}>"))
                    .replace(id.as_str(), &format!("<SUBST{i}>"));
            }
            sort_members(&Out {
                stdout: text.into_bytes(),
                ..o.clone()
            })
        };
        for (what, a, b) in [
            ("add", &e.0, &c.0),
            ("update", &e.1, &c.1),
            ("remove", &e.2, &c.2),
        ] {
            report.check(
                &format!("member {what} -w {w}"),
                &canonical(a, 0),
                &canonical(b, 1),
                &subst,
            );
        }
    }

    // Leases: each tool grants, inspects and revokes its own.
    for w in formats {
        let mut outs = Vec::new();
        let mut ids = Vec::new();
        for tool in [etcdctl_bin(), cairnctl_bin()] {
            let granted = cluster.etcdctl(&format!("{one} lease grant 1000"));
            let id = String::from_utf8_lossy(&granted.stdout)
                .split_whitespace()
                .nth(1)
                .expect("lease id")
                .to_string();
            let ttl = run(
                &tool,
                &words(&format!("{one} lease timetolive {id} -w {w}")),
            );
            let once = run(
                &tool,
                &words(&format!("{one} lease keep-alive --once {id} -w {w}")),
            );
            let revoke = run(&tool, &words(&format!("{one} lease revoke {id} -w {w}")));
            outs.push((ttl, once, revoke));
            ids.push(id);
        }
        let subst = [
            (ids[0].clone(), ids[1].clone()),
            (
                i64::from_str_radix(&ids[0], 16).unwrap().to_string(),
                i64::from_str_radix(&ids[1], 16).unwrap().to_string(),
            ),
        ];
        let (e, c) = (&outs[0], &outs[1]);
        report.check(
            &format!("lease keep-alive --once -w {w}"),
            &e.1,
            &c.1,
            &subst,
        );
        report.check(&format!("lease revoke -w {w}"), &e.2, &c.2, &subst);
        // The remaining TTL may tick between the two runs; compare everything else.
        let strip = |o: &Out| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            for ttl in ["999", "1000"] {
                text = text
                    .replace(&format!("remaining({ttl}s)"), "remaining(N)")
                    .replace(&format!("\"ttl\":{ttl},"), "\"ttl\":N,")
                    .replace(
                        &format!("\"TTL\" : {ttl}\n\"GrantedTTL"),
                        "\"TTL\" : N\n\"GrantedTTL",
                    );
            }
            Out {
                stdout: if w == "protobuf" {
                    o.stdout.clone()
                } else {
                    text.into_bytes()
                },
                ..o.clone()
            }
        };
        report.check(
            &format!("lease timetolive -w {w}"),
            &strip(&e.0),
            &strip(&c.0),
            &subst,
        );
    }
    for w in formats {
        report.same(&format!("{one} lease list -w {w}"));
    }

    // Leadership: etcdctl hands it to a follower, cairnctl hands it back.
    let before = cluster.status();
    let leader = before.iter().find(|(_, l)| *l).expect("a leader").0.clone();
    let follower = before
        .iter()
        .find(|(_, l)| !*l)
        .expect("a follower")
        .0
        .clone();
    let e = run(
        &etcdctl_bin(),
        &words(&format!("{all} move-leader {follower}")),
    );
    let c = run(
        &cairnctl_bin(),
        &words(&format!("{all} move-leader {leader}")),
    );
    report.check(
        "move-leader",
        &e,
        &c,
        &[(
            format!("from {leader} to {follower}"),
            format!("from {follower} to {leader}"),
        )],
    );
    report.same(&format!("{all} move-leader {leader}"));

    // Watch: both watchers side by side while the events happen.
    for args in [
        format!("{one} watch wk --prev-kv"),
        format!("{one} watch wk --prefix -w json"),
        format!("{one} watch wk -w fields"),
        format!("{one} watch wk --rev 1 -w protobuf"),
        format!("{one} watch wk -- printenv ETCD_WATCH_KEY ETCD_WATCH_EVENT_TYPE"),
    ] {
        let e = spawn(&etcdctl_bin(), &words(&args));
        let c = spawn(&cairnctl_bin(), &words(&args));
        std::thread::sleep(Duration::from_millis(1500));
        for cmd in ["put wk v1", "put wk2 v2", "del wk"] {
            cluster.etcdctl(&format!("{one} {cmd}"));
        }
        let (e, c) = (finish(e, WATCH_WINDOW), finish(c, WATCH_WINDOW));
        report.check(&args, &e, &c, &[]);
    }
    cluster.etcdctl(&format!("{one} compaction 3"));
    report.same(&format!("{one} watch wk --rev 2 -w json"));

    assert!(
        report.failures.is_empty(),
        "{} of {} comparisons differ:\n\n{}",
        report.failures.len(),
        report.compared,
        report.failures.join("\n\n")
    );
}
