//! Cluster membership as applied state.
//!
//! Who belongs to the cluster is decided by raft conf changes; what clients see of each member
//! (name, peer URLs, client URLs, learner flag) travels with them: a conf change carries the member
//! as JSON in its context, and a member announces its name and client URLs with a
//! `MemberAttributes` request once it has a leader (etcd's "publish"). Both are applied like any
//! entry and stored in the backend under [`MEMBERS_META`] in the same transaction as the consistent
//! index, so every member answers `MemberList` identically and a restart loses nothing.

use crate::mvcc::{MvccError, Store, WriteTxn};

/// Backend meta blob with the member list (JSON array, sorted by id).
pub const MEMBERS_META: &str = "cluster_members";
/// Backend meta blob with the ids of removed members (JSON array), so that a removed member that
/// keeps talking is told to stop.
pub const REMOVED_META: &str = "cluster_removed";
/// Members a cluster may have (voters and learners); etcd recommends at most 7 voters.
pub const MEMBERS_MAX: usize = 64;

/// One member as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl Member {
    /// Whether the member has started: it published its name (etcd's `IsStarted`).
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": format!("{:x}", self.id),
            "name": self.name,
            "peer_urls": self.peer_urls,
            "client_urls": self.client_urls,
            "is_learner": self.is_learner,
        })
    }

    /// Parses a member from a conf change context or the stored list; `None` if malformed.
    pub fn from_json(v: &serde_json::Value) -> Option<Member> {
        let strings = |field: &str| -> Vec<String> {
            v[field]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Member {
            id: u64::from_str_radix(v["id"].as_str()?, 16).ok()?,
            name: v["name"].as_str().unwrap_or_default().to_string(),
            peer_urls: strings("peer_urls"),
            client_urls: strings("client_urls"),
            is_learner: v["is_learner"].as_bool().unwrap_or(false),
        })
    }
}

/// The applied member list, sorted by id.
pub fn load(store: &Store) -> Result<Vec<Member>, MvccError> {
    let Some(bytes) = store.meta_get(MEMBERS_META)? else {
        return Ok(Vec::new());
    };
    decode(&bytes)
}

fn decode(bytes: &[u8]) -> Result<Vec<Member>, MvccError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| MvccError::Corrupt(format!("member list: {e}")))?;
    let list = v
        .as_array()
        .ok_or_else(|| MvccError::Corrupt("member list is not an array".into()))?;
    let members: Option<Vec<Member>> = list.iter().map(Member::from_json).collect();
    members.ok_or_else(|| MvccError::Corrupt("malformed member in the member list".into()))
}

/// Ids of members removed from the cluster.
pub fn load_removed(store: &Store) -> Result<Vec<u64>, MvccError> {
    let Some(bytes) = store.meta_get(REMOVED_META)? else {
        return Ok(Vec::new());
    };
    serde_json::from_slice(&bytes).map_err(|e| MvccError::Corrupt(format!("removed members: {e}")))
}

/// The removed-member set for the peer service's check, which runs on every incoming batch.
///
/// Reading it means an LMDB read and a JSON parse; both are skipped while the store's applied
/// index has not moved (the set changes only by applying an entry or installing a snapshot, and
/// both move the index), and the parse is skipped while the stored bytes are the same. The index
/// is read before the bytes: the store makes a commit visible in LMDB before it publishes the
/// commit's index, so the bytes read are never older than the index recorded with them.
#[derive(Debug, Default)]
pub struct RemovedCache {
    cached: std::sync::Mutex<RemovedCached>,
}

#[derive(Debug, Default)]
struct RemovedCached {
    /// The applied index the set was read at; `None` before the first read.
    index: Option<u64>,
    bytes: Vec<u8>,
    removed: std::collections::BTreeSet<u64>,
    parses: u64,
}

impl RemovedCache {
    /// Whether `id` was removed from the cluster, as of the store's applied state.
    pub fn contains(&self, store: &Store, id: u64) -> Result<bool, MvccError> {
        let index = store.consistent_index();
        let mut c = self.cached.lock().expect("removed cache lock poisoned");
        if c.index != Some(index) {
            let bytes = store.meta_get(REMOVED_META)?.unwrap_or_default();
            if c.index.is_none() || bytes != c.bytes {
                c.removed = if bytes.is_empty() {
                    Default::default()
                } else {
                    let ids: Vec<u64> = serde_json::from_slice(&bytes)
                        .map_err(|e| MvccError::Corrupt(format!("removed members: {e}")))?;
                    ids.into_iter().collect()
                };
                c.bytes = bytes;
                c.parses += 1;
            }
            c.index = Some(index);
        }
        Ok(c.removed.contains(&id))
    }

    /// How many times the stored set was parsed (for tests).
    pub fn parses(&self) -> u64 {
        self.cached
            .lock()
            .expect("removed cache lock poisoned")
            .parses
    }
}

/// Records more removed members within the apply transaction of the removal.
pub fn save_removed(w: &mut WriteTxn<'_>, removed: &[u64]) -> Result<(), MvccError> {
    let json = serde_json::to_string(removed).expect("a list of ids encodes");
    w.meta_put(REMOVED_META, json.as_bytes())
}

/// Writes the member list within the apply transaction of the entry that changed it.
pub fn save(w: &mut WriteTxn<'_>, members: &[Member]) -> Result<(), MvccError> {
    debug_assert!(
        members.windows(2).all(|p| p[0].id < p[1].id),
        "members are sorted by id"
    );
    let json = serde_json::Value::Array(members.iter().map(Member::to_json).collect()).to_string();
    w.meta_put(MEMBERS_META, json.as_bytes())
}

/// What a conf change does to the member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    AddVoter,
    AddLearner,
    Remove,
}

/// Applies one conf change to `members`. `context` is the member's JSON (empty for removals).
pub fn apply_change(members: &mut Vec<Member>, change: Change, node_id: u64, context: &[u8]) {
    let described = serde_json::from_slice::<serde_json::Value>(context)
        .ok()
        .and_then(|v| Member::from_json(&v));
    match change {
        Change::Remove => members.retain(|m| m.id != node_id),
        Change::AddVoter | Change::AddLearner => {
            let learner = change == Change::AddLearner;
            match members.iter_mut().find(|m| m.id == node_id) {
                // Promotion of a learner, or a replayed add: keep what is known, update the role.
                Some(m) => {
                    if !crate::bugs::active(crate::bugs::Bug::PromoteKeepsLearner) {
                        m.is_learner = learner;
                    }
                    if let Some(d) = described {
                        if !d.peer_urls.is_empty() {
                            m.peer_urls = d.peer_urls;
                        }
                    }
                }
                None => {
                    let mut m = described.unwrap_or(Member {
                        id: node_id,
                        ..Default::default()
                    });
                    m.id = node_id;
                    m.is_learner = learner;
                    members.push(m);
                    members.sort_by_key(|m| m.id);
                }
            }
        }
    }
}

/// Records a member's announced name and client URLs; unknown members are ignored (it may have
/// been removed while its announcement was in flight).
pub fn apply_attributes(
    members: &mut [Member],
    id: u64,
    name: &str,
    client_urls: &[String],
) -> bool {
    match members.iter_mut().find(|m| m.id == id) {
        Some(m) => {
            m.name = name.to_string();
            m.client_urls = client_urls.to_vec();
            true
        }
        None => false,
    }
}

/// etcd's strict reconfiguration rule for adding (`promoting` false) or promoting a voter: the
/// started voters after the change must be a quorum of all voters after it. The new voter counts
/// as started when it is a learner being promoted (it runs already). Adding a second voter to a
/// one-member cluster is allowed, as in etcd (the way a cluster restored from one member grows).
pub fn ready_for_another_voter(members: &[Member], promoting: bool) -> bool {
    let voters = members.iter().filter(|m| !m.is_learner);
    let all = 1 + voters.clone().count();
    let started = usize::from(promoting) + voters.filter(|m| m.is_started()).count();
    if !promoting && all == 2 && started == 1 {
        return true;
    }
    started > all / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(id: u64, name: &str, url: &str) -> Vec<u8> {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![url.into()],
            ..Default::default()
        }
        .to_json()
        .to_string()
        .into_bytes()
    }

    /// Issue 8, item 11: the peer check parsed the stored JSON on every incoming batch.
    #[test]
    fn the_removed_set_is_parsed_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 16 << 20).unwrap();
        let cache = RemovedCache::default();
        assert!(!cache.contains(&store, 7).unwrap());
        for _ in 0..100 {
            assert!(!cache.contains(&store, 7).unwrap());
        }
        assert_eq!(cache.parses(), 1);
        // An entry that changes something else: read again, not parsed again.
        let mut w = store.write(1).unwrap();
        w.meta_put("other", b"x").unwrap();
        w.end().unwrap();
        assert!(!cache.contains(&store, 7).unwrap());
        assert_eq!(cache.parses(), 1);
        // A removal is seen at once.
        let mut w = store.write(2).unwrap();
        save_removed(&mut w, &[3, 7]).unwrap();
        w.end().unwrap();
        assert!(cache.contains(&store, 7).unwrap());
        assert!(cache.contains(&store, 3).unwrap());
        assert!(!cache.contains(&store, 4).unwrap());
        assert_eq!(cache.parses(), 2);
        assert_eq!(load_removed(&store).unwrap(), vec![3, 7]);
    }

    #[test]
    fn adds_keep_the_list_sorted_and_removes_drop_the_member() {
        let mut m = Vec::new();
        apply_change(&mut m, Change::AddVoter, 9, &ctx(9, "b", "http://b:2380"));
        apply_change(&mut m, Change::AddVoter, 3, &ctx(3, "a", "http://a:2380"));
        assert_eq!(m.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3, 9]);
        assert_eq!(m[0].name, "a");
        apply_change(&mut m, Change::Remove, 3, b"");
        assert_eq!(m.iter().map(|m| m.id).collect::<Vec<_>>(), vec![9]);
    }

    #[test]
    fn a_learner_is_promoted_in_place_and_attributes_fill_client_urls() {
        let mut m = Vec::new();
        apply_change(&mut m, Change::AddLearner, 5, &ctx(5, "", "http://c:2380"));
        assert!(m[0].is_learner);
        apply_change(&mut m, Change::AddVoter, 5, b"");
        assert!(!m[0].is_learner);
        assert_eq!(m[0].peer_urls, vec!["http://c:2380".to_string()]);
        assert!(apply_attributes(&mut m, 5, "c", &["http://c:2379".into()]));
        assert_eq!(m[0].client_urls, vec!["http://c:2379".to_string()]);
        assert!(!apply_attributes(&mut m, 6, "x", &[]));
    }

    #[test]
    fn the_stored_list_round_trips() {
        let m = vec![Member {
            id: 0xabc,
            name: "n".into(),
            peer_urls: vec!["p".into()],
            client_urls: vec!["c".into()],
            is_learner: true,
        }];
        let json = serde_json::Value::Array(m.iter().map(Member::to_json).collect()).to_string();
        assert_eq!(decode(json.as_bytes()).unwrap(), m);
    }

    #[test]
    fn a_voter_is_added_or_promoted_only_while_started_voters_stay_a_quorum() {
        let m = |id: u64, name: &str, is_learner: bool| Member {
            id,
            name: name.into(),
            is_learner,
            ..Default::default()
        };
        let one = [m(1, "a", false)];
        assert!(
            ready_for_another_voter(&one, false),
            "etcd grows a one-member cluster"
        );
        let two_one_started = [m(1, "a", false), m(2, "", false)];
        assert!(!ready_for_another_voter(&two_one_started, false));
        let three = [m(1, "a", false), m(2, "b", false), m(3, "c", false)];
        assert!(ready_for_another_voter(&three, false));
        let three_one_unstarted = [m(1, "a", false), m(2, "b", false), m(3, "", false)];
        assert!(!ready_for_another_voter(&three_one_unstarted, false));
        // A learner never counts as a voter; a promoted learner counts as started.
        let with_learner = [m(1, "a", false), m(2, "", false), m(4, "l", true)];
        assert!(!ready_for_another_voter(&with_learner, false));
        assert!(ready_for_another_voter(
            &[m(1, "a", false), m(4, "l", true)],
            true
        ));
        assert!(!ready_for_another_voter(
            &[
                m(1, "a", false),
                m(2, "", false),
                m(3, "", false),
                m(4, "l", true)
            ],
            true
        ));
    }
}
