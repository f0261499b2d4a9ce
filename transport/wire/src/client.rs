//! The client API's messages (separate ALPN from the peer protocol): submit payloads, ask a
//! vertex's status, stream finality events. Same framing and validation as peer frames, with
//! their own kind bytes (0x40..), so a client frame can never be mistaken for a peer frame.

use rkyv::{Archive, Deserialize, Serialize};

use crate::limits::{CONFLICT_KEYS_MAX, PARENTS_MAX, PAYLOAD_BYTES_MAX, TXS_MAX};
use crate::types::{ConflictKey, NodeId, TxId, VertexId};

/// Most ids a client may list in one status request.
pub const CLIENT_STATUS_IDS_MAX: usize = 1024;
/// Most events in one event batch.
pub const CLIENT_EVENTS_MAX: usize = 4096;

/// Most entries in one feed batch.
pub const FEED_ENTRIES_MAX: usize = 256;
/// Most payload bytes (summed) a node puts in one feed batch; a single larger entry still goes
/// alone. Keeps a batch well inside `FRAME_BYTES_MAX` with its cursors.
pub const FEED_PAYLOAD_BYTES_MAX: usize = 512 * 1024;
/// Longest feed cursor (a per-shard position vector; opaque to clients).
pub const FEED_CURSOR_BYTES_MAX: usize = 1024;

/// A request from a client.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum ClientRequest {
    /// Propose a payload. Answered with [`ClientReply::Submitted`] carrying the new vertex id.
    Submit {
        /// Client's correlation tag, echoed.
        tag: u64,
        /// The payload, at most `PAYLOAD_BYTES_MAX`.
        payload: Vec<u8>,
        /// What it spends; at most `CONFLICT_KEYS_MAX`.
        conflict_keys: Vec<ConflictKey>,
    },
    /// Ask the status of vertices.
    Status {
        /// Client's correlation tag.
        tag: u64,
        /// At most [`CLIENT_STATUS_IDS_MAX`].
        ids: Vec<VertexId>,
    },
    /// Start streaming finality events of vertices created on this node.
    Subscribe,
    /// Read the node's decision feed after `from`. Answered with [`ClientReply::FeedBatch`]
    /// (possibly empty: the caller asks again later; pull-based, so a slow reader costs the
    /// node nothing).
    Feed {
        /// Client's correlation tag, echoed.
        tag: u64,
        /// A cursor this node gave earlier, or empty for the start of its feed.
        from: Vec<u8>,
        /// Most entries wanted (the node caps it at [`FEED_ENTRIES_MAX`]).
        max: u32,
    },
}

/// One transaction of a decided vertex, as the feed reports it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct FeedTx {
    /// Its id (stable across a re-issue into another vertex).
    pub tx: TxId,
    /// Its payload.
    pub payload: Vec<u8>,
    /// What it spends.
    pub conflict_keys: Vec<ConflictKey>,
    /// Key id of the client that submitted it, when this node recorded one; zero otherwise.
    pub client: [u8; 32],
}

/// One decided vertex in a node's decision feed, with its transactions: all final with it, or
/// all rejected with it (a rejected vertex's innocent transactions are re-issued by their
/// creator in a new vertex, which the feed reports when it is decided).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct FeedEntry {
    /// The vertex.
    pub id: VertexId,
    /// `Final { shard, position }` or `Rejected`.
    pub decision: ClientStatus,
    /// Its transactions, in vertex order.
    pub txs: Vec<FeedTx>,
    /// Its parents.
    pub parents: Vec<VertexId>,
    /// The node that created it.
    pub creator: NodeId,
    /// The feed cursor just after this entry (resume from it to get the next one).
    pub cursor: Vec<u8>,
}

/// A vertex's status as the client sees it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum ClientStatus {
    /// Not known to the node.
    Unknown,
    /// In the DAG, being decided.
    Processing,
    /// Final at this position of its shard's order.
    Final {
        /// Shard.
        shard: u16,
        /// Position in the shard's finality order.
        position: u64,
    },
    /// Rejected (lost a conflict or descends from a loser).
    Rejected,
}

/// One event about a submitted transaction: decided (`Final` or `Rejected`), or moved to a new
/// vertex (`Processing`: its vertex was rejected for another transaction's double spend and the
/// node re-issued it; `id` is the new vertex).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct FinalityEvent {
    /// The transaction.
    pub tx: TxId,
    /// The vertex carrying it now.
    pub id: VertexId,
    /// `Final`, `Rejected`, or `Processing` for a re-issue.
    pub status: ClientStatus,
    /// Microseconds from creation on this node to the decision.
    pub latency_us: u64,
}

/// A reply or pushed event batch.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum ClientReply {
    /// The payload became transaction `tx`, batched into vertex `id`.
    Submitted {
        /// The request's tag.
        tag: u64,
        /// The transaction id.
        tx: TxId,
        /// The vertex carrying it (a re-issue moves it: see [`FinalityEvent`]).
        id: VertexId,
    },
    /// Statuses in request order.
    Statuses {
        /// The request's tag.
        tag: u64,
        /// One per requested id.
        statuses: Vec<ClientStatus>,
    },
    /// Pushed decisions.
    Events {
        /// At most [`CLIENT_EVENTS_MAX`].
        events: Vec<FinalityEvent>,
    },
    /// The answer to [`ClientRequest::Feed`]: entries in feed order.
    FeedBatch {
        /// The request's tag.
        tag: u64,
        /// At most [`FEED_ENTRIES_MAX`].
        entries: Vec<FeedEntry>,
        /// Where the next request should start (the last entry's cursor, or `from`).
        next_cursor: Vec<u8>,
    },
    /// The request was refused.
    Error {
        /// The request's tag (0 if unknown).
        tag: u64,
        /// Machine-readable code.
        code: ClientErrorCode,
        /// Human-readable reason.
        message: String,
    },
}

/// Why a client request was refused.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum ClientErrorCode {
    /// Undecodable or out-of-bounds request.
    Malformed,
    /// The node is overloaded (too many undecided vertices): retry later.
    Overloaded,
    /// The node is not ready (starting, catching up).
    NotReady,
    /// An internal failure (storage...).
    Internal,
    /// The payload spends a conflict key a known vertex already spends (a double spend the
    /// node will not sign).
    Conflict,
    /// The feed cursor points before the node's retained history: retention pruned those
    /// decisions (archive with `engine export` before they go). Start again with an empty
    /// cursor (the oldest decision still held).
    Pruned,
}

pub(crate) fn check_request(r: &ArchivedClientRequest) -> Result<(), crate::WireError> {
    use crate::messages::bound;
    match r {
        ArchivedClientRequest::Submit { payload, conflict_keys, .. } => {
            bound("payload bytes", payload.len(), PAYLOAD_BYTES_MAX)?;
            bound("conflict keys", conflict_keys.len(), CONFLICT_KEYS_MAX)
        }
        ArchivedClientRequest::Status { ids, .. } => bound("status ids", ids.len(), CLIENT_STATUS_IDS_MAX),
        ArchivedClientRequest::Subscribe => Ok(()),
        ArchivedClientRequest::Feed { from, .. } => bound("feed cursor bytes", from.len(), FEED_CURSOR_BYTES_MAX),
    }
}

pub(crate) fn check_reply(r: &ArchivedClientReply) -> Result<(), crate::WireError> {
    use crate::messages::bound;
    match r {
        ArchivedClientReply::Statuses { statuses, .. } => bound("statuses", statuses.len(), CLIENT_STATUS_IDS_MAX),
        ArchivedClientReply::Events { events } => bound("events", events.len(), CLIENT_EVENTS_MAX),
        ArchivedClientReply::Error { message, .. } => bound("error message", message.len(), 4096),
        ArchivedClientReply::Submitted { .. } => Ok(()),
        ArchivedClientReply::FeedBatch { entries, next_cursor, .. } => {
            bound("feed entries", entries.len(), FEED_ENTRIES_MAX)?;
            bound("feed cursor bytes", next_cursor.len(), FEED_CURSOR_BYTES_MAX)?;
            for e in entries.iter() {
                bound("feed transactions", e.txs.len(), TXS_MAX)?;
                for t in e.txs.iter() {
                    bound("payload bytes", t.payload.len(), PAYLOAD_BYTES_MAX)?;
                    bound("conflict keys", t.conflict_keys.len(), CONFLICT_KEYS_MAX)?;
                }
                bound("parents", e.parents.len(), PARENTS_MAX)?;
                bound("feed cursor bytes", e.cursor.len(), FEED_CURSOR_BYTES_MAX)?;
                if !matches!(e.decision, ArchivedClientStatus::Final { .. } | ArchivedClientStatus::Rejected) {
                    return Err(crate::WireError::Invalid { kind: "client_reply", reason: "feed entry without a decision".into() });
                }
            }
            Ok(())
        }
    }
}
