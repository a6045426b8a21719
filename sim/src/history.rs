//! The history of a run: what clients asked and what they were told. Plain data, so that the
//! checkers (and their unit tests) do not depend on the simulator.

/// A key's value as seen by a client: the value and its mod revision.
pub type Seen = Option<(String, i64)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
        linearizable: bool,
    },
    Delete {
        key: String,
    },
    /// Txn: if the key's value is `expect` (None: the key is absent) then put `value`, else get.
    Cas {
        key: String,
        expect: Option<String>,
        value: String,
    },
}

impl OpKind {
    pub fn key(&self) -> &str {
        match self {
            OpKind::Put { key, .. }
            | OpKind::Get { key, .. }
            | OpKind::Delete { key }
            | OpKind::Cas { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Put { rev: i64 },
    Get { rev: i64, kv: Seen },
    Delete { rev: i64, deleted: i64 },
    Cas { rev: i64, succeeded: bool, kv: Seen },
}

impl OpResult {
    pub fn rev(&self) -> i64 {
        match self {
            OpResult::Put { rev }
            | OpResult::Get { rev, .. }
            | OpResult::Delete { rev, .. }
            | OpResult::Cas { rev, .. } => *rev,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (becomes `Unknown` when the run ends).
    Pending,
    Ok(OpResult),
    /// Definitely had no effect (the call never reached a server, or it was a read).
    Failed(String),
    /// A write that may or may not have taken effect.
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub id: usize,
    pub client: usize,
    pub node: String,
    pub kind: OpKind,
    pub invoke_ns: u64,
    /// `u64::MAX` while pending or unknown.
    pub complete_ns: u64,
    pub outcome: Outcome,
}

/// One watch event as a watcher (or the reference watch) received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The event's revision (the key's mod revision; for a delete, the deletion's revision).
    pub rev: i64,
    pub key: String,
    /// A put; false: a delete.
    pub put: bool,
    pub value: String,
    pub create_rev: i64,
    pub version: i64,
}

/// How one watch stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Still open when the run stopped watching (the watcher caught up or gave up).
    Open,
    /// The stream broke or went silent; the watcher resumed elsewhere.
    Broken(String),
    /// The server cancelled the watch because its next revision was compacted.
    Compacted(i64),
    /// The server cancelled the watch for another reason.
    Canceled(String),
}

/// One watch stream of a watcher: from the revision it asked for until it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSegment {
    pub node: String,
    /// The first revision the stream covers (for a watch "from now", the created header + 1).
    pub start_rev: i64,
    pub events: Vec<WatchEvent>,
    /// The highest revision a progress response promised complete (0: none).
    pub progress_rev: i64,
    pub end: SegmentEnd,
}

impl WatchSegment {
    /// The highest revision this stream is known to have delivered completely (a stream that
    /// starts at a future revision covers everything below its start: nothing is due there).
    pub fn covered_to(&self) -> i64 {
        self.delivered_to().max(self.start_rev - 1)
    }

    /// The highest revision this stream delivered an event or a progress response for.
    pub fn delivered_to(&self) -> i64 {
        let last = self.events.last().map_or(0, |e| e.rev);
        last.max(self.progress_rev)
    }
}

/// Everything one watcher saw: its key range and its streams in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchLog {
    pub watcher: usize,
    /// The watched range in etcd's conventions: `range_end` empty is the single key, `"\0"`
    /// every key from `key` on, anything else `[key, range_end)`.
    pub key: String,
    pub range_end: String,
    pub segments: Vec<WatchSegment>,
}

impl WatchLog {
    pub fn watches(&self, key: &str) -> bool {
        if self.range_end.is_empty() {
            key == self.key
        } else if self.range_end == "\0" {
            key >= self.key.as_str()
        } else {
            key >= self.key.as_str() && key < self.range_end.as_str()
        }
    }
}

/// A lease operation of the lease workload. Leased keys are written once each (`L<client>-<n>-<j>`)
/// and live under their own prefix, which the KV linearizability checker never sees: they vanish
/// by revocation and expiry, which that model does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOpKind {
    Grant {
        ttl: i64,
    },
    Put {
        lease: i64,
        key: String,
        value: String,
    },
    KeepAlive {
        lease: i64,
    },
    Revoke {
        lease: i64,
    },
    /// A linearizable read of one leased key.
    Get {
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseResult {
    Granted { lease: i64, ttl: i64 },
    Put { rev: i64 },
    KeptAlive { ttl: i64 },
    Revoked { rev: i64 },
    Get { value: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    Ok(LeaseResult),
    Failed(String),
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOp {
    pub id: usize,
    pub client: usize,
    pub node: String,
    pub kind: LeaseOpKind,
    pub invoke_ns: u64,
    /// `u64::MAX` unless acknowledged.
    pub complete_ns: u64,
    pub outcome: LeaseOutcome,
}

/// A membership change the harness asked for, and what it was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberOp {
    /// "add-learner", "promote", "remove".
    pub what: String,
    pub member: u64,
    pub node: String,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    /// "ok", or the error.
    pub result: String,
    /// The member list the answer carried: (id, learner).
    pub members: Vec<(u64, bool)>,
}
