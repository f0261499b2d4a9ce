//! The cluster as this shard sees it: node ids in cluster order, which one is us, and the
//! operator-facing names. Owns nothing that changes after start; every stage may read it.

use std::collections::HashMap;

use pqdag_transport::PeerId;
use pqdag_wire::NodeId;

/// Cluster members by index (the transport's `PeerId` is the same index).
pub(super) struct Roster {
    /// This node's index.
    pub(super) me: usize,
    /// Node ids in cluster order.
    pub(super) node_ids: Vec<NodeId>,
    index_of: HashMap<NodeId, usize>,
    names: Vec<String>,
}

impl Roster {
    /// A roster of `node_ids` named `names` (same order), `me` being this node's index.
    pub(super) fn new(me: usize, node_ids: Vec<NodeId>, names: Vec<String>) -> Self {
        let index_of = node_ids.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        Self { me, node_ids, index_of, names }
    }

    /// This node's id.
    pub(super) fn me_id(&self) -> NodeId {
        self.node_ids[self.me]
    }

    /// Number of cluster members (this node included).
    pub(super) fn len(&self) -> usize {
        self.node_ids.len()
    }

    /// Cluster index of `node`, if it is a member (this node included).
    pub(super) fn index_of(&self, node: &NodeId) -> Option<usize> {
        self.index_of.get(node).copied()
    }

    /// The transport peer of `node`, if it is a member other than this node.
    pub(super) fn peer_of(&self, node: &NodeId) -> Option<PeerId> {
        self.index_of(node).filter(|i| *i != self.me).map(PeerId)
    }

    /// Every member but this node, in cluster order.
    pub(super) fn others(&self) -> Vec<PeerId> {
        (0..self.node_ids.len()).filter(|i| *i != self.me).map(PeerId).collect()
    }

    /// Operator-facing name of member `i`.
    pub(super) fn name(&self, i: usize) -> Option<&str> {
        self.names.get(i).map(String::as_str)
    }
}
