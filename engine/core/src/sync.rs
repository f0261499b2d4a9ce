//! Fetching missing vertices and frontier sync (4.4): in-flight requests, request ids, the
//! frontier and fetch-retry timers. Owns [`Sync`]; calls `pending` (what is already buffered),
//! `cross_shard` (watch remote parents) and `peers` (random peer choice).

use pqdag_wire::{Frontier, NodeId, VertexId, VertexReply, VertexRequest};
use pqdag_wire::limits::{FRONTIER_IDS_MAX, REPLY_VERTICES_MAX, REQUEST_IDS_MAX};
use rand::Rng;

use crate::core::Core;
use crate::id_hash::HashMap;
use crate::types::{Action, ShardMsg, Signer, shard_of_vertex};

/// In-flight fetches remembered (so one missing id is not requested by every event).
pub const REQUESTED_MAX: usize = 65_536;
/// Retry delay of a vertex fetch.
pub(crate) const FETCH_RETRY_US: u64 = 500_000;

/// Fetch and frontier-sync state.
#[derive(Default)]
pub(crate) struct Sync {
    /// Requested id -> time after which it may be requested again.
    pub(crate) requested: HashMap<VertexId, u64>,
    pub(crate) next_request_id: u64,
    pub(crate) next_frontier_at: u64,
    pub(crate) next_fetch_retry_at: u64,
    /// Next sweep of expired `requested` entries.
    pub(crate) next_requested_sweep_at: u64,
}

impl Sync {
    /// Nothing requested yet; the first request id is 1.
    pub(crate) fn new() -> Self {
        Sync { next_request_id: 1, ..Sync::default() }
    }
}

impl<S: Signer> Core<S> {
    /// Asks `from` for missing local ids; watches missing remote-shard parents.
    pub(crate) fn request_missing(&mut self, now: u64, from: NodeId, missing: &[VertexId]) {
        let mut ids = Vec::new();
        for p in missing {
            if self.pending.entries.contains_key(p) {
                continue;
            }
            if shard_of_vertex(p, self.shard_count) != self.shard {
                let e = self.cross.remote_parents.entry(*p).or_default();
                if !e.watched {
                    e.watched = true;
                    let owner = shard_of_vertex(p, self.shard_count);
                    self.push(Action::ToShard { shard: owner, msg: ShardMsg::Watch { id: *p, subscriber: self.shard, hint: from } });
                }
                continue;
            }
            if self.sync.requested.get(p).is_some_and(|&t| t > now) {
                continue;
            }
            if self.sync.requested.len() >= REQUESTED_MAX {
                self.sync.requested.retain(|_, t| *t > now);
                if self.sync.requested.len() >= REQUESTED_MAX {
                    break;
                }
            }
            self.sync.requested.insert(*p, now + FETCH_RETRY_US);
            ids.push(*p);
            if ids.len() >= REQUEST_IDS_MAX {
                break;
            }
        }
        if !ids.is_empty() && from != self.me {
            let request_id = self.sync.next_request_id;
            self.sync.next_request_id += 1;
            self.push(Action::RequestVertices { to: from, request: VertexRequest { request_id, ids } });
        }
    }

    pub(crate) fn on_vertex_request(&mut self, from: NodeId, req: VertexRequest) {
        let mut out = Vec::new();
        for id in req.ids.iter().take(REQUEST_IDS_MAX) {
            if let Some(v) = self.vertex(id) {
                if v.id != self.dag.genesis.id && !v.signature.is_empty() {
                    out.push((**v).clone());
                }
            }
            if out.len() >= REPLY_VERTICES_MAX {
                break;
            }
        }
        if !out.is_empty() {
            self.push(Action::SendVertices { to: from, reply: VertexReply { request_id: req.request_id, vertices: out } });
        }
    }

    pub(crate) fn on_frontier(&mut self, from: NodeId, f: &Frontier) {
        let missing: Vec<VertexId> = f
            .tips
            .iter()
            .take(FRONTIER_IDS_MAX)
            .filter(|id| shard_of_vertex(id, self.shard_count) == self.shard && !self.contains(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            let now = self.now;
            self.request_missing(now, from, &missing);
        }
    }

    /// Re-requests parents that pending vertices still miss (a lost request or reply would
    /// otherwise leave them pending forever: later children only name pending ids). Asks a
    /// random peer, bounded per round.
    pub(crate) fn retry_fetches(&mut self, now: u64) {
        self.sync.next_fetch_retry_at = now + FETCH_RETRY_US;
        if self.peers.ids.is_empty() {
            return;
        }
        let mut missing: Vec<VertexId> = self
            .pending
            .waiting
            .keys()
            .filter(|id| !self.pending.entries.contains_key(*id) && !self.dag.vertices.contains_key(*id) && self.dag.forgotten.status_in_memory(id).is_none() && shard_of_vertex(id, self.shard_count) == self.shard)
            .filter(|id| self.sync.requested.get(*id).is_none_or(|&t| t <= now))
            .take(REQUEST_IDS_MAX)
            .copied()
            .collect();
        missing.sort_unstable(); // HashMap order must not leak into the output (determinism)
        if missing.is_empty() {
            return;
        }
        let peer = self.peers.ids[self.rng.random_range(0..self.peers.ids.len())];
        self.request_missing(now, peer, &missing);
    }

    pub(crate) fn send_frontier(&mut self, now: u64) {
        self.sync.next_frontier_at = now + self.params.frontier_interval_us;
        if self.peers.ids.is_empty() {
            return;
        }
        let mut tips: Vec<VertexId> = self.dag.processing.values().rev().filter(|e| e.min_child_seq == u64::MAX).take(FRONTIER_IDS_MAX / 2).map(|e| e.id).collect();
        tips.extend(self.dag.recent_final.iter().rev().filter(|id| **id != self.dag.genesis.id).take(4));
        if tips.is_empty() {
            return;
        }
        let n = self.params.frontier_fanout.min(self.peers.ids.len());
        let mut to = Vec::with_capacity(n);
        for _ in 0..n * 3 {
            if to.len() >= n {
                break;
            }
            let p = self.peers.ids[self.rng.random_range(0..self.peers.ids.len())];
            if !to.contains(&p) {
                to.push(p);
            }
        }
        self.push(Action::SendFrontier { to, frontier: Frontier { sender: self.me, finalized_count: self.finality.finalized, tips } });
    }

    /// Once a second, drops what the fetch paths hold past its time: expired `requested`
    /// entries and needs older than `flood::WANTED_TTL_US`. An id requested and never received
    /// (dropped by the shell before the core saw it, or never sent) otherwise stayed until the
    /// map reached `REQUESTED_MAX`, a slow climb of a long-running node's RSS.
    pub(crate) fn sweep_fetch_state(&mut self, now: u64) {
        if now < self.sync.next_requested_sweep_at {
            return;
        }
        self.sync.next_requested_sweep_at = now + 1_000_000;
        self.sync.requested.retain(|_, t| *t > now);
        self.flood.expire_wanted(now);
    }

    /// (fetches in flight, ids held as needed): what the fetch paths hold (metrics).
    pub fn fetch_state_counts(&self) -> (usize, usize) {
        (self.sync.requested.len(), self.flood.wanted_len())
    }
}
