//! The DAG: vertex records, the processing index in arrival order, recent tips, forgotten
//! finals and the traversal marks. Owns [`Dag`]; the intake path (`on_vertex`, `insert`) calls
//! `pending` (release children), `conflicts` (join sets), `gossip` (relay) and `cross_shard`
//! (watchers); `parent_state` reads `cross_shard`'s remote parents.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use pqdag_wire::{ConflictKey, NodeId, Vertex, VertexId};

use crate::core::Core;
use crate::forgotten::Forgotten;
use crate::gossip::gossip_targets;
use crate::id_hash::HashMap;
use crate::pending::PENDING_MAX;
use crate::types::{Action, Signer, VertexStatus, genesis, shard_of_vertex};

/// Vertices held in memory; beyond it submissions and receptions are refused.
pub const VERTICES_MAX: usize = 8_000_000;
/// Recently inserted vertices scanned for parent selection (FR-003).
pub(crate) const RECENT_MAX: usize = 64;
/// Recently finalized vertices kept as fallback parents and frontier tips.
pub(crate) const RECENT_FINAL_MAX: usize = 16;

/// A vertex's children held on this shard, in arrival order. Most vertices have one (two
/// parents per vertex, spread over the shards), so one is kept inline: a `Vec` allocated 128 B
/// for it, and at 1000 simulated nodes these lists were the largest heap item after the
/// records themselves.
pub(crate) type Children = smallvec::SmallVec<[VertexId; 1]>;

/// What the core knows about one vertex of its shard.
#[derive(Debug)]
pub(crate) struct Rec {
    pub(crate) v: Arc<Vertex>,
    pub(crate) status: VertexStatus,
    pub(crate) seq: u64,
    pub(crate) arrival_us: u64,
    pub(crate) confidence: f64,
    pub(crate) polled: bool,
    pub(crate) successes: u32,
    pub(crate) rounds: u32,
    pub(crate) children: Children,
    pub(crate) child_count: u32,
    pub(crate) strong_epoch: u64,
    pub(crate) strong: bool,
    /// It or a processing ancestor is a member of a contested set (an ancestor on another shard
    /// as its owner last told: `ShardMsg::Status`): an honest peer that prefers another member
    /// there votes No on it for as long as the set is undecided, so a No on it is not a flip
    /// (`polls`). Cached with `strong`, per preference epoch; unlike `strong` it can lag a
    /// conflict-free ancestor's finality until the next epoch, erring toward true, which only
    /// leaves an id out of the vote-contradiction check.
    pub(crate) contested: bool,
    /// A Yes on it is of the current lock round: no set of it or of a processing ancestor here
    /// changed its preference in this round (`lock_rounds`). Cached with `strong`.
    pub(crate) round_ok: bool,
    pub(crate) mark: u64,
    pub(crate) mask: u64,
    /// The part of `mask` that certifies (Yes of the poll's lock round), credited alike.
    pub(crate) cmask: u64,
    pub(crate) in_conflict: bool,
    pub(crate) claiming: u32,
    pub(crate) claim_granted: Vec<ConflictKey>,
    /// This node has answered (or counted in its own poll) a Yes on this vertex or on a
    /// descendant, so its preference in every set of it is public: a tie-break may no longer
    /// move those preferences (see `Core::expose`). Restored vertices count as exposed.
    pub(crate) exposed: bool,
    /// It or an ancestor that was undecided when it arrived spends a conflict key. An own
    /// vertex that spends keys never builds on such a vertex (`select_parents`): two honest
    /// vertices on different keys, each descending from the other's competitor, would leave
    /// both sets without a strongly preferred member for ever (found with batching: many keys
    /// per vertex made it common).
    pub(crate) keyed_ancestry: bool,
    /// Arrival time of the oldest vertex that was undecided in its local ancestry when it
    /// arrived (its own arrival if none): a snapshot, so it only errs toward old. An own vertex
    /// does not build on a processing vertex whose undecided ancestry is older than
    /// `PARENT_STALL_US` (`select_parents`): one stalled set would otherwise hold every later
    /// payload of the cluster back, as new vertices kept building on its descendants.
    pub(crate) undecided_since_us: u64,
    /// A poll that asked about this vertex directly got a quorum of `LockedYes` (this node's own
    /// vote included): a quorum of nodes is locked on it in its conflict sets, which a
    /// conflicting vertex in whole-network mode needs to be final (see `locks`). Sticky: an
    /// honest node never leaves such a lock while the vertex can still win.
    pub(crate) lock_quorum: bool,
    /// Peers (by index, whole-network polls) that answered `Final` on it: f + 1 of them prove
    /// it final at an honest node (`Core::adopt_final`).
    pub(crate) final_claims: u64,
}

impl Rec {
    /// A fresh record of `v`, arrived at `arrival_us` with sequence `seq`.
    fn new(v: Arc<Vertex>, status: VertexStatus, seq: u64, arrival_us: u64) -> Self {
        Rec {
            v,
            status,
            seq,
            arrival_us,
            confidence: 0.0,
            polled: false,
            successes: 0,
            rounds: 0,
            children: Children::new(),
            child_count: 0,
            strong_epoch: 0,
            strong: false,
            round_ok: true,
            cmask: 0,
            contested: false,
            mark: 0,
            mask: 0,
            in_conflict: false,
            claiming: 0,
            claim_granted: Vec::new(),
            exposed: false,
            keyed_ancestry: false,
            undecided_since_us: arrival_us,
            lock_quorum: false,
            final_claims: 0,
        }
    }
}

/// A processing vertex in arrival order, with what the poll scheduler needs without lookups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcEntry {
    pub(crate) id: VertexId,
    pub(crate) arrival_us: u64,
    /// Sequence of the earliest non-rejected local child (u64::MAX: none): an aged vertex is
    /// a frontier tip iff this child is not aged.
    pub(crate) min_child_seq: u64,
}

/// The vertex store of one shard and its indexes.
pub(crate) struct Dag {
    pub(crate) genesis: Arc<Vertex>,
    pub(crate) vertices: HashMap<VertexId, Rec>,
    pub(crate) processing: BTreeMap<u64, ProcEntry>,
    pub(crate) seq: u64,
    pub(crate) recent: VecDeque<VertexId>,
    pub(crate) recent_final: VecDeque<VertexId>,
    /// Forgotten final vertices (their records are gone; they count as final) and the winners
    /// of their decided conflict sets: a bounded window, then the shell's archive.
    pub(crate) forgotten: Forgotten,
    /// Last traversal mark handed out (frontier and credit walks mark records with it).
    pub(crate) mark_no: u64,
}

impl Dag {
    /// A DAG holding only the final genesis.
    pub(crate) fn new() -> Self {
        let g = genesis();
        let mut vertices = HashMap::default();
        let mut rec = Rec::new(g.clone(), VertexStatus::Final, 0, 0);
        rec.confidence = 1.0;
        rec.polled = true;
        rec.strong = true;
        vertices.insert(g.id, rec);
        let mut recent_final = VecDeque::new();
        recent_final.push_back(g.id);
        Dag {
            genesis: g,
            vertices,
            processing: BTreeMap::new(),
            seq: 1,
            recent: VecDeque::new(),
            recent_final,
            forgotten: Forgotten::default(),
            mark_no: 0,
        }
    }

    /// Status of a held or forgotten vertex.
    pub(crate) fn status(&self, id: &VertexId) -> Option<VertexStatus> {
        self.vertices.get(id).map(|r| r.status).or_else(|| self.forgotten.status(id))
    }

    /// A new traversal mark (never reused).
    pub(crate) fn next_mark(&mut self) -> u64 {
        self.mark_no += 1;
        self.mark_no
    }
}

impl<S: Signer> Core<S> {
    pub(crate) fn on_vertex(&mut self, now: u64, from: NodeId, v: Arc<Vertex>, gossip: bool) {
        self.sync.requested.remove(&v.id);
        if self.contains(&v.id) || v.parents.is_empty() {
            return;
        }
        if shard_of_vertex(&v.id, self.shard_count) != self.shard {
            return; // mis-routed by the shell; not ours
        }
        if self.dag.vertices.len() >= VERTICES_MAX {
            return;
        }
        let Some(newly_needed) = self.admit_creator(now, &v) else {
            return; // its creator is over its bound (`flood`): like a lost message
        };
        if !newly_needed.is_empty() {
            // Asked before, but dropped on arrival as unneeded: ask the sender of `v` now.
            for id in &newly_needed {
                self.sync.requested.remove(id);
            }
            self.request_missing(now, from, &newly_needed);
        }
        if self.parents_known(&v) {
            self.insert(now, v, Some(from), gossip, false);
        } else {
            let missing = self.missing_parents(&v);
            self.pend(v, from, gossip);
            self.request_missing(now, from, &missing);
        }
    }

    pub(crate) fn parent_state(&self, p: &VertexId) -> Option<VertexStatus> {
        if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.dag.genesis.id {
            self.dag.status(p)
        } else {
            self.cross.remote_parents.get(p).and_then(|r| r.status)
        }
    }

    pub(crate) fn parents_known(&self, v: &Vertex) -> bool {
        v.parents.iter().all(|p| self.parent_state(p).is_some())
    }

    pub(crate) fn missing_parents(&self, v: &Vertex) -> Vec<VertexId> {
        v.parents.iter().filter(|p| self.parent_state(p).is_none()).copied().collect()
    }

    /// Adds a vertex whose parents are all known; releases pending children. `quiet` is the
    /// restore path (no persist, no gossip).
    pub(crate) fn insert(&mut self, now: u64, v: Arc<Vertex>, from: Option<NodeId>, relay: bool, quiet: bool) {
        let mut work = vec![(v, from, relay)];
        let mut budget = PENDING_MAX + 1;
        while let Some((v, from, relay)) = work.pop() {
            budget -= 1;
            assert!(budget > 0 || work.is_empty(), "insert worklist over bound");
            let id = v.id;
            debug_assert!(!self.dag.vertices.contains_key(&id));
            debug_assert!(self.parents_known(&v));
            let mut status = VertexStatus::Processing;
            if v.parents.iter().any(|p| self.parent_state(p) == Some(VertexStatus::Rejected)) {
                status = VertexStatus::Rejected;
            }
            // A vertex spending a key one of its own ancestors spends can never be strongly
            // preferred (it and that ancestor would both need to be the set's preference): it is
            // invalid, and every honest node sees the same ancestry, so all reject it.
            if status == VertexStatus::Processing && self.conflicts.spends_ancestor_key(&self.dag, &v.conflict_keys, &v.parents) {
                status = VertexStatus::Rejected;
            }
            let keyed_ancestry = !v.conflict_keys.is_empty()
                || v.parents.iter().any(|p| match self.dag.vertices.get(p) {
                    Some(r) => r.status == VertexStatus::Processing && r.keyed_ancestry,
                    None => self.parent_state(p) != Some(VertexStatus::Final),
                });
            let undecided_since_us = v
                .parents
                .iter()
                .filter_map(|p| self.dag.vertices.get(p).filter(|r| r.status == VertexStatus::Processing).map(|r| r.undecided_since_us))
                .fold(now, u64::min);
            let seq = self.dag.seq;
            self.dag.seq += 1;
            for p in &v.parents {
                if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.dag.genesis.id {
                    if let Some(r) = self.dag.vertices.get_mut(p) {
                        r.child_count += 1;
                        // Children are needed only while the parent can still be rejected or
                        // polled; a final vertex keeps just the count (memory).
                        if r.status != VertexStatus::Final {
                            r.children.push(id);
                        }
                        if r.status == VertexStatus::Processing && status == VertexStatus::Processing {
                            if let Some(e) = self.dag.processing.get_mut(&r.seq) {
                                e.min_child_seq = e.min_child_seq.min(seq);
                            }
                        }
                    }
                } else if let Some(r) = self.cross.remote_parents.get_mut(p) {
                    r.children.push(id);
                }
            }
            self.dag.vertices.insert(
                id,
                Rec {
                    v: v.clone(),
                    status,
                    seq,
                    arrival_us: now,
                    confidence: 0.0,
                    polled: false,
                    successes: 0,
                    rounds: 0,
                    children: Children::new(),
                    child_count: 0,
                    strong_epoch: 0,
                    strong: false,
                    round_ok: true,
                    cmask: 0,
                    contested: false,
                    mark: 0,
                    mask: 0,
                    in_conflict: false,
                    claiming: 0,
                    claim_granted: Vec::new(),
                    // A restarted node may have voted on it before the crash.
                    exposed: quiet,
                    keyed_ancestry,
                    undecided_since_us,
                    lock_quorum: false,
                    final_claims: 0,
                },
            );
            if status == VertexStatus::Processing {
                self.dag.processing.insert(seq, ProcEntry { id, arrival_us: now, min_child_seq: u64::MAX });
                let member = self.flood_member(&v.creator);
                self.flood.entered(v.creator, member, v.heap_bytes() as u64);
            } else {
                self.finality.rejected += 1;
                if self.params.forget_final_after_us > 0 {
                    self.retention.forget_rejected_queue.push_back((now, id));
                }
                if self.params.strip_final_after_us > 0 {
                    self.retention.queue_strip(now, &v);
                }
            }
            if !quiet {
                self.push(Action::Persist { vertex: v.clone(), status });
                if status == VertexStatus::Rejected {
                    self.push(Action::Rejected { id });
                }
            }
            // Conflict sets (4.5): join every set this vertex claims. Keys without a set here
            // are looked up in the archive first, all in one read (`prefetch_keys`).
            if v.conflict_keys.len() > 1 {
                let sets = &self.conflicts.sets;
                self.dag.forgotten.prefetch_keys(v.conflict_keys.iter().filter(|k| !sets.contains_key(*k)));
            }
            for &k in &v.conflict_keys {
                self.join_set(now, &v, k);
            }
            if self.dag.recent.len() >= RECENT_MAX {
                self.dag.recent.pop_front();
            }
            self.dag.recent.push_back(id);
            if relay && !quiet {
                let own = from == Some(self.me);
                let to = if own { gossip_targets(&self.peers, &self.params, &mut self.rng, None, true) } else { gossip_targets(&self.peers, &self.params, &mut self.rng, from, false) };
                if !to.is_empty() {
                    self.push(Action::SendVertex { to, vertex: v.clone() });
                }
            }
            self.notify_watchers(id);
            if let Some(children) = self.pending.waiting.remove(&id) {
                for c in children {
                    let ready = self.pending.entries.get(&c).is_some_and(|e| self.parents_known(&e.v));
                    if ready {
                        if let Some(e) = self.pending.take(&c) {
                            work.push((e.v, Some(e.from), e.gossip));
                        }
                    } else {
                        self.rewait(now, c);
                    }
                }
            }
        }
    }
}
