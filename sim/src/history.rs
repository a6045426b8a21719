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
