//! The errors a client request can end in, with etcd's exact messages and gRPC codes.
//!
//! etcd's clients match on the message text (clientv3's `rpctypes` turns known messages back into
//! typed errors, and etcdctl prints them verbatim), so the `Display` of every variant that mirrors
//! an etcd error is etcd 3.4's string, byte for byte.
//!
//! Each error also says whether it is *deterministic* (toydb's distinction): an error every
//! replica computes identically from the same log (a bad request, a compacted revision) is an
//! answer and goes back to the client; an error that depends on one node's local situation
//! (storage failure, full disk, lost leadership) must not be treated as an answer by the apply
//! loop, because then replicas would diverge: the node stops instead.

use crate::mvcc::MvccError;

/// The outcome of a request that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A key (of a request, or of a txn compare) is empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value`/`ignore_lease` of a key that does not exist, or an empty
    /// operation inside a txn.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put with `ignore_value` also carries a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` also carries a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn has more compares, or more ops in one branch, than the server allows.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn branch writes one key twice, or puts a key it also deletes.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The requested revision is below the compaction floor.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// A put names a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The request exceeds the maximum request size.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// The NOSPACE alarm is active (or this write would take the backend past its quota): the
    /// cluster refuses writes that add data until an operator frees space and disarms the alarm.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A put would attach more keys to one lease than [`crate::lease::KEYS_PER_LEASE_MAX`]
    /// (cairn's own limit, so that revoking a lease is bounded work; etcd has none).
    #[error("etcdserver: too many keys attached to the lease")]
    LeaseKeysExceeded,
    /// The member knows no leader.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The leader changed while the request was in flight.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// A lease expiry proposed by the leader of one term reached the log in another: the leader
    /// that proposed it no longer tracked the lease's deadline by then, so it is not applied.
    /// Every replica sees the same entry and term, so this is decided alike everywhere.
    #[error("etcdserver: leader changed")]
    ExpiryFromAnotherTerm,
    /// The request was not committed or applied in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A grant named a lease id that is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant asked for more than etcd's largest TTL.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// Only the leader can do this (renew a lease).
    #[error("etcdserver: not leader")]
    NotLeader,
    /// A learner was asked for something only voters serve.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    /// A membership change would leave too few running voters for a quorum.
    #[error("etcdserver: unhealthy cluster")]
    UnhealthyCluster,
    /// Adding or promoting a voter would leave fewer started voters than a quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// A peer URL that is not `http(s)://host:port`.
    #[error("etcdserver: given member URLs are invalid")]
    InvalidPeerUrl,
    /// MemberAdd with peer URLs another member uses.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// MemberAdd of an id that is taken.
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// No member with that id.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// MemberPromote of a voter.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// MemberPromote of a learner that lags the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// MoveLeader to a member that cannot lead.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// MoveLeader did not complete in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// A bounded queue (proposals in flight, read batches) is full.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// A raft entry at or below the store's consistent index was handed to `apply` again (WAL
    /// replay after a restart): it was applied before and is skipped. Never sent to a client:
    /// no waiter can exist for such an entry.
    #[error(
        "cairn: raft entry {raft_index} already applied (consistent index {consistent_index})"
    )]
    AlreadyApplied {
        /// The entry's index.
        raft_index: u64,
        /// The store's consistent index.
        consistent_index: u64,
    },
    /// A local failure (storage, corruption, a request the apply path cannot handle).
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl RequestError {
    /// The gRPC status code etcd uses for this error.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            RequestError::EmptyKey
            | RequestError::KeyNotFound
            | RequestError::ValueProvided
            | RequestError::LeaseProvided
            | RequestError::TooManyOps
            | RequestError::DuplicateKey
            | RequestError::RequestTooLarge => Code::InvalidArgument,
            RequestError::Compacted | RequestError::FutureRev => Code::OutOfRange,
            RequestError::LeaseNotFound => Code::NotFound,
            RequestError::LeaseExists => Code::FailedPrecondition,
            RequestError::LeaseTtlTooLarge => Code::OutOfRange,
            RequestError::NotLeader => Code::Unavailable,
            RequestError::InvalidPeerUrl => Code::InvalidArgument,
            RequestError::NotSupportedForLearner | RequestError::UnhealthyCluster => {
                Code::Unavailable
            }
            RequestError::PeerUrlExists
            | RequestError::MemberExists
            | RequestError::NotEnoughStartedMembers
            | RequestError::MemberNotLearner
            | RequestError::LearnerNotReady
            | RequestError::BadLeaderTransferee => Code::FailedPrecondition,
            RequestError::MemberNotFound => Code::NotFound,
            RequestError::LeaderTransferTimeout => Code::Unavailable,
            RequestError::NoSpace
            | RequestError::LeaseKeysExceeded
            | RequestError::TooManyRequests => Code::ResourceExhausted,
            RequestError::NoLeader
            | RequestError::LeaderChanged
            | RequestError::ExpiryFromAnotherTerm
            | RequestError::Timeout
            | RequestError::Stopped => Code::Unavailable,
            RequestError::AlreadyApplied { .. } | RequestError::Internal(_) => Code::Internal,
        }
    }

    /// Whether every replica computes this error identically from the same log and request.
    /// A deterministic error is the request's answer (the apply loop records the entry as applied
    /// and replies); a non-deterministic one from `apply` means this node cannot apply the entry
    /// and must stop rather than diverge.
    pub fn is_deterministic(&self) -> bool {
        match self {
            RequestError::EmptyKey
            | RequestError::KeyNotFound
            | RequestError::ValueProvided
            | RequestError::LeaseProvided
            | RequestError::TooManyOps
            | RequestError::DuplicateKey
            | RequestError::Compacted
            | RequestError::FutureRev
            | RequestError::LeaseNotFound
            | RequestError::LeaseExists
            | RequestError::LeaseTtlTooLarge
            | RequestError::RequestTooLarge
            | RequestError::ExpiryFromAnotherTerm
            // Both are decided at apply from replicated state: the alarm list and the lease table.
            | RequestError::NoSpace
            | RequestError::LeaseKeysExceeded
            | RequestError::AlreadyApplied { .. } => true,
            RequestError::NoLeader
            | RequestError::LeaderChanged
            | RequestError::Timeout
            | RequestError::Stopped
            | RequestError::TooManyRequests
            | RequestError::NotLeader
            | RequestError::InvalidPeerUrl
            | RequestError::NotSupportedForLearner
            | RequestError::UnhealthyCluster
            | RequestError::NotEnoughStartedMembers
            | RequestError::PeerUrlExists
            | RequestError::MemberExists
            | RequestError::MemberNotFound
            | RequestError::MemberNotLearner
            | RequestError::LearnerNotReady
            | RequestError::BadLeaderTransferee
            | RequestError::LeaderTransferTimeout
            | RequestError::Internal(_) => false,
        }
    }
}

impl From<MvccError> for RequestError {
    fn from(e: MvccError) -> RequestError {
        match e {
            MvccError::Compacted => RequestError::Compacted,
            MvccError::FutureRevision => RequestError::FutureRev,
            // A full LMDB map depends on this node's map size and file, not on the log: the node
            // must stop (the map is sized so that client writes cannot get here, see
            // `crate::server::quota`).
            e @ MvccError::NoSpace => RequestError::Internal(e.to_string()),
            MvccError::IndexRegression {
                raft_index,
                consistent_index,
            } => RequestError::AlreadyApplied {
                raft_index,
                consistent_index,
            },
            e @ (MvccError::Storage(_) | MvccError::Corrupt(_)) => {
                RequestError::Internal(e.to_string())
            }
        }
    }
}

impl From<RequestError> for tonic::Status {
    fn from(e: RequestError) -> tonic::Status {
        tonic::Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_are_etcds() {
        use tonic::Code;
        let cases = [
            (
                RequestError::EmptyKey,
                "etcdserver: key is not provided",
                Code::InvalidArgument,
            ),
            (
                RequestError::KeyNotFound,
                "etcdserver: key not found",
                Code::InvalidArgument,
            ),
            (
                RequestError::ValueProvided,
                "etcdserver: value is provided",
                Code::InvalidArgument,
            ),
            (
                RequestError::LeaseProvided,
                "etcdserver: lease is provided",
                Code::InvalidArgument,
            ),
            (
                RequestError::TooManyOps,
                "etcdserver: too many operations in txn request",
                Code::InvalidArgument,
            ),
            (
                RequestError::DuplicateKey,
                "etcdserver: duplicate key given in txn request",
                Code::InvalidArgument,
            ),
            (
                RequestError::Compacted,
                "etcdserver: mvcc: required revision has been compacted",
                Code::OutOfRange,
            ),
            (
                RequestError::FutureRev,
                "etcdserver: mvcc: required revision is a future revision",
                Code::OutOfRange,
            ),
            (
                RequestError::LeaseNotFound,
                "etcdserver: requested lease not found",
                Code::NotFound,
            ),
            (
                RequestError::RequestTooLarge,
                "etcdserver: request is too large",
                Code::InvalidArgument,
            ),
            (
                RequestError::NoSpace,
                "etcdserver: mvcc: database space exceeded",
                Code::ResourceExhausted,
            ),
            (
                RequestError::LeaseKeysExceeded,
                "etcdserver: too many keys attached to the lease",
                Code::ResourceExhausted,
            ),
            (
                RequestError::NoLeader,
                "etcdserver: no leader",
                Code::Unavailable,
            ),
            (
                RequestError::LeaderChanged,
                "etcdserver: leader changed",
                Code::Unavailable,
            ),
            (
                RequestError::Timeout,
                "etcdserver: request timed out",
                Code::Unavailable,
            ),
            (
                RequestError::Stopped,
                "etcdserver: server stopped",
                Code::Unavailable,
            ),
        ];
        for (err, msg, code) in cases {
            assert_eq!(err.to_string(), msg);
            assert_eq!(err.code(), code);
            let status = tonic::Status::from(err);
            assert_eq!((status.code(), status.message()), (code, msg));
        }
    }

    #[test]
    fn determinism_separates_answers_from_local_failures() {
        assert!(RequestError::Compacted.is_deterministic());
        assert!(RequestError::KeyNotFound.is_deterministic());
        assert!(RequestError::LeaseNotFound.is_deterministic());
        assert!(!RequestError::Internal("disk".into()).is_deterministic());
        assert!(RequestError::NoSpace.is_deterministic());
        assert!(RequestError::LeaseKeysExceeded.is_deterministic());
        assert!(!RequestError::from(MvccError::NoSpace).is_deterministic());
        assert!(!RequestError::NoLeader.is_deterministic());
    }

    #[test]
    fn mvcc_errors_map_to_request_errors() {
        assert_eq!(
            RequestError::from(MvccError::Compacted),
            RequestError::Compacted
        );
        assert_eq!(
            RequestError::from(MvccError::FutureRevision),
            RequestError::FutureRev
        );
        // A full LMDB map is this member's failure, not the client's NOSPACE answer.
        assert!(matches!(
            RequestError::from(MvccError::NoSpace),
            RequestError::Internal(_)
        ));
        assert!(matches!(
            RequestError::from(MvccError::Storage("x".into())),
            RequestError::Internal(_)
        ));
    }
}
