//! The values the client API hands out: decisions, statuses, feed events and cursors.

pub use pqdag_wire::{ConflictKey, VertexId};

/// How a submitted vertex was decided.
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

/// Where a decision feed stands, so a subscriber can resume after a disconnect.
///
/// Opaque bytes the application may store and hand back to [`crate::Client::subscribe`]. Today's
/// nodes have no resumable feed, so no event carries one yet (see `docs/clients.md`, "Feed and
/// cursors").
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
}

/// One decision a node pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionEvent {
    /// The vertex.
    pub id: VertexId,
    /// How it was decided.
    pub decision: Decision,
    /// Microseconds from its creation on the node to the decision.
    pub latency_us: u64,
    /// The node that pushed it.
    pub node: String,
    /// Where the feed stands after this event: always `None` today (no resumable feed yet).
    pub cursor: Option<Cursor>,
}
