//! Raft messages between members.

use raft::eraftpb::Message;

/// Sends raft messages to peers. Sending never blocks the node: an implementation queues each
/// message on a bounded per-peer queue and drops it when the queue is full (raft retransmits).
/// Inbound messages reach the node through the channel handed to the node at start.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msg: Message);

    /// Sends a raft MsgSnapshot together with the snapshot file at `path`. When the transfer ends
    /// the transport reports the outcome to the local node as a `MsgSnapStatus` message. A
    /// transport without snapshot support reports failure at once (raft retries later).
    fn send_snapshot(&self, msg: Message, path: std::path::PathBuf) {
        let _ = path;
        tracing::warn!(to = msg.to, "this transport cannot send snapshots: dropped");
    }

    /// The applied membership changed: `peers` lists every member (id and peer URLs), this one
    /// included. A transport with links per peer opens and closes them to match.
    fn set_peers(&self, peers: &[(u64, Vec<String>)]) {
        let _ = peers;
    }
}

/// The transport of a single-member cluster: there is nobody to talk to, so any message is a bug
/// in the caller and is dropped with a warning.
#[derive(Debug, Default, Clone)]
pub struct LocalTransport;

impl Transport for LocalTransport {
    fn send(&self, msg: Message) {
        tracing::warn!(to = msg.to, msg_type = ?msg.get_msg_type(), "no peer transport: message dropped");
    }
}
