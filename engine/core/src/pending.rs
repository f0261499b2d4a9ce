//! The pending buffer: vertices whose parents are not known yet, in arrival order, and the
//! reverse index from a missing parent to its waiting children. Owns [`Pending`] and its bound
//! [`PENDING_MAX`]; `release_waiting` calls `dag`'s insert.

use std::collections::VecDeque;
use std::sync::Arc;

use pqdag_wire::{NodeId, Vertex, VertexId};

use crate::core::Core;
use crate::id_hash::HashMap;
use crate::types::Signer;

/// Vertices waiting for parents; beyond it the oldest is evicted and counted.
pub const PENDING_MAX: usize = 16_384;

/// A vertex waiting for parents, with how it arrived.
pub(crate) struct PendingEntry {
    pub(crate) v: Arc<Vertex>,
    pub(crate) from: NodeId,
    pub(crate) gossip: bool,
}

/// Vertices waiting for their parents.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) entries: HashMap<VertexId, PendingEntry>,
    /// Arrival order of `entries` (may hold stale ids; compacted by `compact`).
    pub(crate) order: VecDeque<VertexId>,
    /// Missing parent -> pending children naming it.
    pub(crate) waiting: HashMap<VertexId, Vec<VertexId>>,
    /// Pending vertices evicted because the buffer was full.
    pub(crate) evicted: u64,
}

impl Pending {
    /// Buffers `v` until its `missing` parents arrive, evicting the oldest entries when full.
    pub(crate) fn pend(&mut self, v: Arc<Vertex>, from: NodeId, gossip: bool, missing: &[VertexId]) {
        let id = v.id;
        if self.entries.contains_key(&id) {
            return;
        }
        while self.entries.len() >= PENDING_MAX {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(e) = self.entries.remove(&old) {
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
        }
        for &p in missing {
            self.waiting.entry(p).or_default().push(id);
        }
        self.order.push_back(id);
        self.entries.insert(id, PendingEntry { v, from, gossip });
    }

    /// Drops stale ids from `order` once it grew past twice the bound.
    pub(crate) fn compact(&mut self) {
        if self.order.len() > 2 * PENDING_MAX {
            let entries = &self.entries;
            self.order.retain(|id| entries.contains_key(id));
        }
    }
}

impl<S: Signer> Core<S> {
    /// Buffers `v` until its missing parents arrive.
    pub(crate) fn pend(&mut self, v: Arc<Vertex>, from: NodeId, gossip: bool) {
        let missing = self.missing_parents(&v);
        self.pending.pend(v, from, gossip, &missing);
    }

    pub(crate) fn release_waiting(&mut self, now: u64, id: VertexId) {
        if let Some(children) = self.pending.waiting.remove(&id) {
            for c in children {
                let ready = self.pending.entries.get(&c).is_some_and(|e| self.parents_known(&e.v));
                if ready {
                    if let Some(e) = self.pending.entries.remove(&c) {
                        self.insert(now, e.v, Some(e.from), e.gossip, false);
                    }
                }
            }
        }
    }
}
