//! Multi-member clusters of `cairn` or `etcd` on loopback, and the observations the cluster tests
//! make of them through Debian's `etcdctl`: endpoint status (leader, raft indexes), member list,
//! HashKV, reads and writes on a chosen member, and plain HTTP GETs of `/health` and `/metrics`.
//!
//! Members are named `n1`, `n2`, ... and listen on fresh loopback ports; they are started with
//! exactly the flags of etcd's own multi-member example, so the same [`Cluster`] runs either
//! program. Every observation is bounded in time: a member that does not answer is an `Err` (or,
//! in the `wait_*` helpers, a test failure that names what was awaited and shows what was seen).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{etcdctl, free_port, ClusterSpec, Kind, Opts, Output, Server};

/// etcdctl's own bounds for one observation: a stopped member must not stall a poll loop.
pub const CTL_BOUNDS: [&str; 2] = ["--dial-timeout=2s", "--command-timeout=3s"];
/// How long a cluster may take to agree on a leader (after start, a kill, a resume).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the `wait_*` helpers poll.
pub const POLL_EVERY: Duration = Duration::from_millis(50);
/// The cluster token of every test cluster (the seed's).
pub const TOKEN: &str = "tkn";

/// What `etcdctl endpoint status -w json` reports for one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The member id of the leader this member knows of; 0 for none.
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    /// The store's current revision (the response header's).
    pub revision: i64,
    pub is_learner: bool,
}

impl Status {
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }
}

/// One member as `etcdctl member list -w json` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    /// Empty until the member has started and published its name.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What `etcdctl endpoint hashkv -w json` reports for one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashKv {
    pub member_id: u64,
    pub hash: u64,
    pub compact_revision: i64,
    /// The member's current revision (the response header's), not the hashed one.
    pub revision: i64,
}

/// A cluster of `cairn` or `etcd` members, each a [`Server`] (killed on drop).
pub struct Cluster {
    pub kind: Kind,
    /// Member `i` is named `n{i+1}`; a member that was removed keeps its slot.
    pub members: Vec<Server>,
    /// The member id of each slot, as the cluster reported it (member list or member add).
    pub ids: Vec<u64>,
    /// Server flags every member gets (`--snapshot-count 100`, ...).
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// Spawns `size` members of a new cluster and waits until every one answers a linearizable
    /// `get` (which needs an elected leader), then learns the member ids.
    pub fn start(kind: Kind, size: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::spawn(kind, size, extra_args);
        for m in &mut cluster.members {
            m.wait_ready();
        }
        cluster.learn_ids();
        cluster
    }

    /// Spawns `size` members of a new cluster without waiting for them.
    pub fn spawn(kind: Kind, size: usize, extra_args: &[&str]) -> Cluster {
        assert!(size >= 1);
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let spec = ClusterSpec {
            initial_cluster,
            token: TOKEN.into(),
            state: "new".into(),
        };
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, peer))| {
                let opts = Opts {
                    name: format!("n{}", i + 1),
                    extra_args: extra_args.clone(),
                    ..Opts::default()
                };
                Server::spawn_member(kind, opts, client, peer, spec.clone())
            })
            .collect();
        Cluster {
            kind,
            members,
            ids: Vec::new(),
            extra_args,
        }
    }

    /// Fills [`Cluster::ids`] from a member list, matching members by peer URL.
    pub fn learn_ids(&mut self) {
        let list = (0..self.members.len())
            .find_map(|i| self.member_list(i).ok())
            .expect("no member answers member list");
        self.ids = self
            .members
            .iter()
            .map(|m| {
                let peer = format!("http://127.0.0.1:{}", m.peer_port);
                list.iter()
                    .find(|x| x.peer_urls.contains(&peer))
                    .unwrap_or_else(|| panic!("{peer} is not in the member list {list:#?}"))
                    .id
            })
            .collect();
    }

    /// The slots of every member.
    pub fn all(&self) -> Vec<usize> {
        (0..self.members.len()).collect()
    }

    /// The slots of every member but `skip`.
    pub fn others(&self, skip: &[usize]) -> Vec<usize> {
        self.all()
            .into_iter()
            .filter(|i| !skip.contains(i))
            .collect()
    }

    /// The slot of the member with id `id`.
    pub fn slot_of(&self, id: u64) -> Option<usize> {
        self.ids.iter().position(|&x| x == id)
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,...` for the given slots.
    pub fn endpoints(&self, slots: &[usize]) -> String {
        slots
            .iter()
            .map(|&i| self.members[i].endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `etcdctl --endpoints <member i> <CTL_BOUNDS> <args>`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        let mut all: Vec<&str> = CTL_BOUNDS.to_vec();
        all.extend_from_slice(args);
        etcdctl(&self.members[i].endpoint(), &all, None)
    }

    /// Puts through member `i`; fails the test if the put fails.
    pub fn put(&self, i: usize, key: &str, value: &str) {
        let out = self.ctl(i, &["put", key, value]);
        assert!(
            out.success() && out.stdout == "OK\n",
            "put {key}={value} through {} failed: {out:?}",
            self.members[i].name()
        );
    }

    /// Gets `key` from member `i`, linearizable or serializable: `Ok(None)` when it is absent.
    pub fn get(&self, i: usize, key: &str, serializable: bool) -> Result<Option<String>, String> {
        let consistency = if serializable {
            "--consistency=s"
        } else {
            "--consistency=l"
        };
        let out = self.ctl(i, &["get", consistency, key]);
        if !out.success() {
            return Err(format!(
                "get {key} on {}: exit {:?}: {}",
                self.members[i].name(),
                out.code,
                out.stderr.trim()
            ));
        }
        let mut lines = out.stdout.lines();
        match (lines.next(), lines.next()) {
            (None, _) => Ok(None),
            (Some(k), Some(v)) if k == key => Ok(Some(v.to_string())),
            _ => Err(format!("unexpected get output: {:?}", out.stdout)),
        }
    }

    /// Polls until member `i` returns `value` for `key` (serializable or linearizable), failing the
    /// test after `timeout` with the last answer.
    pub fn wait_value(
        &self,
        i: usize,
        key: &str,
        value: &str,
        serializable: bool,
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        let mut last = Err(String::from("never asked"));
        while start.elapsed() < timeout {
            last = self.get(i, key, serializable);
            if last.as_ref().ok() == Some(&Some(value.to_string())) {
                return start.elapsed();
            }
            std::thread::sleep(POLL_EVERY);
        }
        panic!(
            "{} did not return {key}={value} (serializable: {serializable}) within {timeout:?}; \
             last answer: {last:?}",
            self.members[i].name()
        );
    }

    /// `etcdctl endpoint status -w json` of member `i`.
    pub fn status(&self, i: usize) -> Result<Status, String> {
        let out = self.ctl(i, &["-w", "json", "endpoint", "status"]);
        if !out.success() {
            return Err(format!(
                "endpoint status of {}: exit {:?}: {}",
                self.members[i].name(),
                out.code,
                out.stderr.trim()
            ));
        }
        parse_status(&out.stdout)
    }

    /// The status of each of `slots`, asked concurrently.
    pub fn statuses(&self, slots: &[usize]) -> Vec<Result<Status, String>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = slots
                .iter()
                .map(|&i| s.spawn(move || self.status(i)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("status thread"))
                .collect()
        })
    }

    /// The slot of the leader if every member of `slots` answers, all name the same leader, and
    /// exactly one of them is it.
    pub fn agreed_leader(&self, slots: &[usize]) -> Result<usize, String> {
        let statuses = self.statuses(slots);
        let mut leader = None;
        let mut leaders_self = Vec::new();
        for (&i, st) in slots.iter().zip(&statuses) {
            let st = st.as_ref().map_err(|e| e.clone())?;
            if st.leader == 0 {
                return Err(format!("{} knows no leader", self.members[i].name()));
            }
            match leader {
                None => leader = Some(st.leader),
                Some(l) if l != st.leader => {
                    return Err(format!("members disagree on the leader: {statuses:?}"))
                }
                _ => {}
            }
            if st.is_leader() {
                leaders_self.push(i);
            }
        }
        match leaders_self.as_slice() {
            [one] => Ok(*one),
            _ => Err(format!(
                "{} members say they are the leader: {statuses:?}",
                leaders_self.len()
            )),
        }
    }

    /// Polls until the members of `slots` agree on a leader among them; fails the test after
    /// `timeout` with what the members last said.
    pub fn wait_leader(&self, slots: &[usize], timeout: Duration) -> usize {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            match self.agreed_leader(slots) {
                Ok(l) => return l,
                Err(e) => last = e,
            }
            std::thread::sleep(POLL_EVERY);
        }
        panic!(
            "members {:?} did not agree on a leader within {timeout:?}: {last}",
            slots
                .iter()
                .map(|&i| self.members[i].name())
                .collect::<Vec<_>>()
        );
    }

    /// Polls until member `i`'s applied index reaches `index`; returns how long that took.
    pub fn wait_applied(&self, i: usize, index: u64, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut last = Err(String::from("never asked"));
        while start.elapsed() < timeout {
            last = self.status(i);
            if matches!(&last, Ok(st) if st.applied_index >= index) {
                return start.elapsed();
            }
            std::thread::sleep(POLL_EVERY);
        }
        panic!(
            "{} did not apply up to index {index} within {timeout:?}; last status: {last:?}",
            self.members[i].name()
        );
    }

    /// `etcdctl member list -w json` through member `i`.
    pub fn member_list(&self, i: usize) -> Result<Vec<MemberInfo>, String> {
        let out = self.ctl(i, &["-w", "json", "member", "list"]);
        if !out.success() {
            return Err(format!(
                "member list through {}: exit {:?}: {}",
                self.members[i].name(),
                out.code,
                out.stderr.trim()
            ));
        }
        parse_member_list(&out.stdout)
    }

    /// `etcdctl endpoint hashkv --rev <rev> -w json` of member `i`.
    pub fn hashkv(&self, i: usize, rev: i64) -> Result<HashKv, String> {
        let rev = format!("--rev={rev}");
        let out = self.ctl(i, &["-w", "json", "endpoint", "hashkv", &rev]);
        if !out.success() {
            return Err(format!(
                "endpoint hashkv of {}: exit {:?}: {}",
                self.members[i].name(),
                out.code,
                out.stderr.trim()
            ));
        }
        parse_hashkv(&out.stdout)
    }

    /// Waits until every member of `slots` has applied what the leader among them has applied,
    /// then checks that their HashKV at the leader's revision is equal. Returns the hash.
    pub fn assert_hashkv_equal(&self, slots: &[usize], timeout: Duration) -> u64 {
        let leader = self.wait_leader(slots, timeout);
        let st = self
            .status(leader)
            .unwrap_or_else(|e| panic!("status of the leader: {e}"));
        for &i in slots {
            self.wait_applied(i, st.applied_index, timeout);
        }
        let hashes: Vec<(String, Result<HashKv, String>)> = slots
            .iter()
            .map(|&i| {
                (
                    self.members[i].name().to_string(),
                    self.hashkv(i, st.revision),
                )
            })
            .collect();
        let first = hashes[0]
            .1
            .as_ref()
            .unwrap_or_else(|e| panic!("hashkv: {e}"))
            .hash;
        assert!(
            hashes
                .iter()
                .all(|(_, h)| h.as_ref().map(|h| h.hash).ok() == Some(first)),
            "HashKV at revision {} differs between members (applied index {}): {hashes:#?}",
            st.revision,
            st.applied_index
        );
        first
    }

    /// Adds a member with `etcdctl member add n<k> --peer-urls ... [--learner]` through member
    /// `via`, then spawns it with `--initial-cluster-state existing` and the `--initial-cluster`
    /// that etcdctl printed. Returns its slot; it is not waited for.
    pub fn add_member(&mut self, via: usize, learner: bool) -> usize {
        let slot = self.members.len();
        let name = format!("n{}", slot + 1);
        let (client, peer) = (free_port(), free_port());
        let peer_url = format!("http://127.0.0.1:{peer}");
        let peer_flag = format!("--peer-urls={peer_url}");
        let mut args = vec!["member", "add", name.as_str(), peer_flag.as_str()];
        if learner {
            args.push("--learner");
        }
        let out = self.ctl(via, &args);
        assert!(out.success(), "member add {name}: {out:?}");
        let id = out
            .stdout
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("Member "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("no member id in member add's output: {out:?}"));
        let env = |var: &str| -> String {
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{var}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no {var} in member add's output: {out:?}"))
                .to_string()
        };
        assert_eq!(env("ETCD_NAME"), name, "{out:?}");
        assert_eq!(env("ETCD_INITIAL_ADVERTISE_PEER_URLS"), peer_url, "{out:?}");
        assert_eq!(env("ETCD_INITIAL_CLUSTER_STATE"), "existing", "{out:?}");
        let spec = ClusterSpec {
            initial_cluster: env("ETCD_INITIAL_CLUSTER"),
            token: TOKEN.into(),
            state: "existing".into(),
        };
        let opts = Opts {
            name,
            extra_args: self.extra_args.clone(),
            ..Opts::default()
        };
        self.members
            .push(Server::spawn_member(self.kind, opts, client, peer, spec));
        self.ids.push(id);
        slot
    }

    /// The last few KiB of every member's current log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} log tail ---\n{}", m.name(), m.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text.trim()).map_err(|e| format!("not JSON ({e}): {text:?}"))
}

fn u64_of(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn i64_of(v: &serde_json::Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Parses etcdctl 3.4's `-w json endpoint status` (an array with one entry per endpoint; the
/// first is taken). Fields that are zero or false are left out by etcdctl's JSON.
pub fn parse_status(text: &str) -> Result<Status, String> {
    let v = json(text)?;
    let st = &v[0]["Status"];
    if st.is_null() {
        return Err(format!("no Status in {text:?}"));
    }
    Ok(Status {
        cluster_id: u64_of(&st["header"]["cluster_id"]),
        member_id: u64_of(&st["header"]["member_id"]),
        leader: u64_of(&st["leader"]),
        raft_term: u64_of(&st["raftTerm"]),
        raft_index: u64_of(&st["raftIndex"]),
        applied_index: u64_of(&st["raftAppliedIndex"]),
        revision: i64_of(&st["header"]["revision"]),
        is_learner: st["isLearner"].as_bool().unwrap_or(false),
    })
}

/// Parses etcdctl 3.4's `-w json member list`.
pub fn parse_member_list(text: &str) -> Result<Vec<MemberInfo>, String> {
    let v = json(text)?;
    let members = v["members"]
        .as_array()
        .ok_or_else(|| format!("no members in {text:?}"))?;
    let strings = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(members
        .iter()
        .map(|m| MemberInfo {
            id: u64_of(&m["ID"]),
            name: m["name"].as_str().unwrap_or("").to_string(),
            peer_urls: strings(&m["peerURLs"]),
            client_urls: strings(&m["clientURLs"]),
            is_learner: m["isLearner"].as_bool().unwrap_or(false),
        })
        .collect())
}

/// Parses etcdctl 3.4's `-w json endpoint hashkv` (first endpoint).
pub fn parse_hashkv(text: &str) -> Result<HashKv, String> {
    let v = json(text)?;
    let h = &v[0]["HashKV"];
    if h.is_null() {
        return Err(format!("no HashKV in {text:?}"));
    }
    Ok(HashKv {
        member_id: u64_of(&h["header"]["member_id"]),
        hash: u64_of(&h["hash"]),
        compact_revision: i64_of(&h["compact_revision"]),
        revision: i64_of(&h["header"]["revision"]),
    })
}

/// Counts the rows of `etcdctl endpoint status -w table` whose IS LEADER column is `true`, and
/// returns them with the number of endpoint rows.
pub fn table_leaders(table: &str) -> (usize, usize) {
    let mut header: Option<Vec<String>> = None;
    let (mut rows, mut leaders) = (0, 0);
    for line in table.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        match &header {
            None => header = Some(cells),
            Some(h) => {
                let col = h
                    .iter()
                    .position(|c| c == "IS LEADER")
                    .expect("an IS LEADER column");
                rows += 1;
                if cells.get(col).map(String::as_str) == Some("true") {
                    leaders += 1;
                }
            }
        }
    }
    (leaders, rows)
}

/// A plain HTTP/1.1 GET of `path` on `127.0.0.1:port`: the status code and the body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)
        .map_err(|e| format!("reading the response: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| format!("bad chunk in {body:?}"))?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or("short chunk")?);
        body = rest.get(size + 2..).ok_or("short chunk")?;
    }
}

/// Replaces what differs between two clusters (member ids, the cluster id, ports) with
/// placeholders named after the members, so outputs of an etcd and a cairn cluster compare.
pub struct Normalizer {
    replacements: BTreeMap<String, String>,
}

impl Normalizer {
    /// Learns the names of `cluster`'s ids and ports; `extra` adds more (e.g. a learner's port).
    pub fn new(cluster: &Cluster, cluster_id: u64) -> Normalizer {
        let mut replacements = BTreeMap::new();
        for (i, m) in cluster.members.iter().enumerate() {
            let name = m.name();
            if let Some(&id) = cluster.ids.get(i) {
                replacements.insert(format!("{id:x}"), format!("<{name}-id>"));
                replacements.insert(id.to_string(), format!("<{name}-id>"));
            }
            replacements.insert(m.client_port.to_string(), format!("<{name}-client>"));
            replacements.insert(m.peer_port.to_string(), format!("<{name}-peer>"));
        }
        replacements.insert(format!("{cluster_id:x}"), "<cluster-id>".into());
        replacements.insert(cluster_id.to_string(), "<cluster-id>".into());
        Normalizer { replacements }
    }

    pub fn add(&mut self, from: impl Into<String>, to: impl Into<String>) {
        self.replacements.insert(from.into(), to.into());
    }

    /// Replaces longer strings first, so an id is never half-replaced by a port.
    pub fn apply(&self, text: &str) -> String {
        let mut pairs: Vec<(&String, &String)> = self.replacements.iter().collect();
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let mut out = text.to_string();
        for (from, to) in pairs {
            out = out.replace(from.as_str(), to);
        }
        // etcdctl prints some ids with Go's %16x, space-padded: an id with a leading zero digit
        // leaves one more space before its placeholder.
        while out.contains("  <") {
            out = out.replace("  <", " <");
        }
        out
    }
}
