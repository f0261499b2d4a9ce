//! The values the client API hands out: decisions, statuses, feed events and cursors.

pub use pqdag_wire::{ConflictKey, TxId, VertexId};

/// What a node made of a submission: transaction `tx`, batched into vertex `vertex` (a re-issue
/// may later move it to another vertex; [`crate::Client::wait`] follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The transaction id (BLAKE3 of its payload and keys): stable across re-issues.
    pub tx: TxId,
    /// The vertex that carries it first.
    pub vertex: VertexId,
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tx {} in vertex {}", self.tx, self.vertex)
    }
}

/// How a submitted transaction (and the vertex carrying it) was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Final: it is at `position` of shard `shard`'s finality order on the node that reported it.
    Final {
        /// The shard (of the reporting node) that ordered it.
        shard: u16,
        /// Its 1-based position in that shard's order; **0 when unknown**: the decision was
        /// learned by polling `Status`, which today's nodes answer without a position (the
        /// pushed event, which carries it, was lost with its connection).
        position: u64,
    },
    /// Rejected: it lost a conflict, or descends from a loser. It will never be final.
    Rejected,
}

impl Decision {
    /// Whether it is final.
    pub fn is_final(&self) -> bool {
        matches!(self, Decision::Final { .. })
    }
}

/// A vertex's status as one node sees it (answer of [`crate::Client::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The node does not know it (yet).
    Unknown,
    /// In the node's DAG, being decided.
    Processing,
    /// Decided.
    Decided(Decision),
}

/// Where a node's decision feed stands, so a subscriber can resume after a disconnect or a
/// restart of the node: every decision after it, none twice, none skipped.
///
/// Opaque bytes the application may store and hand back to [`crate::Client::subscribe`]
/// (hex-printable: [`Cursor::to_hex`]). A cursor belongs to the node that gave it: each node
/// lists decisions in its own order (see `docs/clients.md`, "Feed and cursors").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(Vec<u8>);

impl Cursor {
    /// A cursor from bytes an earlier event gave.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Cursor(bytes)
    }
    /// Its bytes, to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Lower-case hex of its bytes.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// Parses [`Cursor::to_hex`]'s output.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() % 2 != 0 {
            return None;
        }
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>().map(Cursor)
    }
    /// The first 8 bytes of the id of the node whose feed it points into (`None` if malformed).
    pub(crate) fn node_prefix(&self) -> Option<[u8; 8]> {
        self.0.get(1..9)?.try_into().ok()
    }
}

/// One transaction of a decided vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedTx {
    /// Its id (stable across re-issues: a transaction rejected with one vertex may be final
    /// in a later one; the same id may then appear twice in the feed, once rejected).
    pub tx: TxId,
    /// Its payload.
    pub payload: Vec<u8>,
    /// What it spends.
    pub conflict_keys: Vec<ConflictKey>,
    /// Key id of the client that submitted it, when the node recorded one (zero otherwise).
    pub client: [u8; 32],
}

/// One decided vertex from a node's decision feed, with its transactions (all decided with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionEvent {
    /// The vertex.
    pub id: VertexId,
    /// How it was decided (`Final` carries the node's shard and finality position).
    pub decision: Decision,
    /// Its transactions, in vertex order.
    pub txs: Vec<DecidedTx>,
    /// Its parents.
    pub parents: Vec<VertexId>,
    /// Node id of its creator.
    pub creator: [u8; 32],
    /// The node whose feed listed it.
    pub node: String,
    /// Where the feed stands just after this event: resume from it.
    pub cursor: Cursor,
}
