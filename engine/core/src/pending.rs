//! The pending buffer: vertices whose parents are not known yet, and the reverse index from a
//! missing parent to its waiting children. Owns [`Pending`] and its bounds ([`PENDING_MAX`]
//! entries, [`PENDING_BYTES_MAX`] bytes in all, [`PENDING_PEER_BYTES_MAX`] bytes per delivering
//! peer); `release_waiting` calls `dag`'s insert.
//!
//! Eviction is per peer (issue 14, hole 5): every entry is charged to the peer that delivered
//! it. A peer over its quota loses its own oldest entries; when the whole buffer is full, the
//! oldest entry of the peer holding the most bytes goes. So a peer flooding orphan vertices
//! evicts only its own, never the entries of peers holding less than it (this node's own
//! vertices are exempt from the per-peer quota and evicted last). Deterministic: id-hashed maps,
//! ties broken by the smaller node id.

use std::collections::VecDeque;
use std::sync::Arc;

use pqdag_wire::{NodeId, Vertex, VertexId};

use crate::core::Core;
use crate::id_hash::HashMap;
use crate::types::Signer;

/// Vertices waiting for parents; beyond it the heaviest peer's oldest entry is evicted.
pub const PENDING_MAX: usize = 16_384;
/// Bytes of pending vertices in all (16 384 largest vertices would be ~1.1 GB): beyond it the
/// heaviest peer's oldest entry is evicted.
pub const PENDING_BYTES_MAX: usize = 256 << 20;
/// Bytes of pending vertices one peer may have delivered (~6 500 typical 5 KB vertices, more
/// than a second of a 5000 vertices/s cluster's whole load); beyond it its own oldest go.
pub const PENDING_PEER_BYTES_MAX: usize = 32 << 20;

/// What a pending vertex is charged: its wire size, roughly (transactions, signature, ids, fixed).
pub(crate) fn vertex_bytes(v: &Vertex) -> usize {
    v.heap_bytes()
}

/// A vertex waiting for parents, with how it arrived.
pub(crate) struct PendingEntry {
    pub(crate) v: Arc<Vertex>,
    pub(crate) from: NodeId,
    pub(crate) gossip: bool,
    /// What it is charged ([`vertex_bytes`]).
    pub(crate) bytes: usize,
}

/// One delivering peer's share of the buffer.
#[derive(Default)]
pub(crate) struct PeerShare {
    /// Bytes of its live entries.
    pub(crate) bytes: usize,
    /// Its live entries.
    pub(crate) count: usize,
    /// Arrival order of its entries (may hold stale ids: released, or evicted and re-pended by
    /// another peer; compacted by `compact`).
    pub(crate) order: VecDeque<VertexId>,
}

/// Vertices waiting for their parents.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) entries: HashMap<VertexId, PendingEntry>,
    /// Per delivering peer: bytes, count, arrival order.
    pub(crate) shares: HashMap<NodeId, PeerShare>,
    /// Bytes of all entries.
    pub(crate) bytes: usize,
    /// Missing parent -> pending children naming it.
    pub(crate) waiting: HashMap<VertexId, Vec<VertexId>>,
    /// Pending vertices evicted because the buffer was full.
    pub(crate) evicted: u64,
    /// Of those, evicted because their peer was over its quota.
    pub(crate) evicted_quota: u64,
}

impl Pending {
    /// Buffers `v` (delivered by `from`) until its `missing` parents arrive, evicting first what
    /// the bounds require. `me` (this node) is exempt from the per-peer quota.
    pub(crate) fn pend(&mut self, v: Arc<Vertex>, from: NodeId, gossip: bool, missing: &[VertexId], me: NodeId) {
        let id = v.id;
        if self.entries.contains_key(&id) {
            return;
        }
        let bytes = vertex_bytes(&v);
        if from != me {
            while self.shares.get(&from).is_some_and(|s| s.count > 0 && s.bytes + bytes > PENDING_PEER_BYTES_MAX) {
                if !self.evict_oldest_of(from) {
                    break;
                }
                self.evicted_quota += 1;
            }
        }
        while !self.entries.is_empty() && (self.entries.len() >= PENDING_MAX || self.bytes + bytes > PENDING_BYTES_MAX) {
            let Some(heaviest) = self.heaviest(me) else { break };
            if !self.evict_oldest_of(heaviest) {
                break;
            }
        }
        for &p in missing {
            self.waiting.entry(p).or_default().push(id);
        }
        let share = self.shares.entry(from).or_default();
        share.bytes += bytes;
        share.count += 1;
        share.order.push_back(id);
        self.bytes += bytes;
        self.entries.insert(id, PendingEntry { v, from, gossip, bytes });
    }

    /// The peer holding the most bytes (ties: the smaller node id); `me` only when it is the
    /// only one holding anything.
    fn heaviest(&self, me: NodeId) -> Option<NodeId> {
        let pick = |exclude_me: bool| {
            self.shares
                .iter()
                .filter(|(p, s)| s.count > 0 && !(exclude_me && **p == me))
                .max_by(|(pa, a), (pb, b)| a.bytes.cmp(&b.bytes).then(pb.cmp(pa)))
                .map(|(p, _)| *p)
        };
        pick(true).or_else(|| pick(false))
    }

    /// Evicts `peer`'s oldest live entry (and its waiting links); false if it has none.
    fn evict_oldest_of(&mut self, peer: NodeId) -> bool {
        loop {
            let Some(old) = self.shares.get_mut(&peer).and_then(|s| s.order.pop_front()) else { return false };
            if self.entries.get(&old).is_none_or(|e| e.from != peer) {
                continue; // stale: released, or now charged to another peer
            }
            if let Some(e) = self.take(&old) {
                self.evicted += 1;
                for p in &e.v.parents {
                    if let Some(list) = self.waiting.get_mut(p) {
                        list.retain(|c| *c != old);
                        if list.is_empty() {
                            self.waiting.remove(p);
                        }
                    }
                }
            }
            return true;
        }
    }

    /// Removes the entry of `id` (released or evicted) and uncharges its peer. Its id stays in
    /// the peer's order until `compact`; its waiting links are the caller's.
    pub(crate) fn take(&mut self, id: &VertexId) -> Option<PendingEntry> {
        let e = self.entries.remove(id)?;
        self.bytes -= e.bytes;
        if let Some(s) = self.shares.get_mut(&e.from) {
            s.bytes -= e.bytes;
            s.count -= 1;
            if s.count == 0 {
                self.shares.remove(&e.from); // every id left in its order is stale
            }
        }
        Some(e)
    }

    /// Bytes charged to `peer` now.
    #[cfg(test)]
    pub(crate) fn bytes_of(&self, peer: &NodeId) -> usize {
        self.shares.get(peer).map_or(0, |s| s.bytes)
    }

    /// Drops stale ids from a peer's order once it grew past twice its live entries (plus slack).
    pub(crate) fn compact(&mut self) {
        let entries = &self.entries;
        for (peer, s) in self.shares.iter_mut() {
            if s.order.len() > 2 * s.count + 64 {
                s.order.retain(|id| entries.get(id).is_some_and(|e| e.from == *peer));
            }
        }
    }
}

impl<S: Signer> Core<S> {
    /// Buffers `v` until its missing parents arrive.
    pub(crate) fn pend(&mut self, v: Arc<Vertex>, from: NodeId, gossip: bool) {
        let missing = self.missing_parents(&v);
        let me = self.me;
        self.pending.pend(v, from, gossip, &missing, me);
    }

    pub(crate) fn release_waiting(&mut self, now: u64, id: VertexId) {
        if let Some(children) = self.pending.waiting.remove(&id) {
            for c in children {
                let ready = self.pending.entries.get(&c).is_some_and(|e| self.parents_known(&e.v));
                if ready {
                    if let Some(e) = self.pending.take(&c) {
                        self.insert(now, e.v, Some(e.from), e.gossip, false);
                    }
                } else {
                    self.rewait(now, c);
                }
            }
        }
    }

    /// A pending vertex still not ready when a parent arrived waits on (and asks for) every
    /// parent it lacks now: one may have been known when it was pended and forgotten since (a
    /// decided remote parent, `forget_remote_facts`), and nothing else would ask for it
    /// (`scenarios.rs::a_restarted_key_shard_knows_the_cross_shard_winners` stalled with 80
    /// vertices pending on such parents).
    pub(crate) fn rewait(&mut self, now: u64, c: VertexId) {
        let Some(e) = self.pending.entries.get(&c) else { return };
        let from = e.from;
        let missing = self.missing_parents(&e.v);
        debug_assert!(!missing.is_empty(), "a vertex not ready lacks a parent");
        for p in &missing {
            let w = self.pending.waiting.entry(*p).or_default();
            if !w.contains(&c) {
                w.push(c);
            }
        }
        self.request_missing(now, from, &missing);
    }
}
