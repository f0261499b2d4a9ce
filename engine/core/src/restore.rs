//! Restart: rebuilding the core from storage (remote facts, forgotten finals, then the stored
//! vertices in arrival order) without re-persisting or re-gossiping. Owns no state; calls
//! `dag`, `pending`, `finality` and `votes`.

use std::sync::Arc;

use pqdag_wire::{ConflictKey, Vertex, VertexId};

use crate::core::Core;
use crate::types::{Action, Signer, VertexStatus, shard_of_key, shard_of_vertex};

impl<S: Signer> Core<S> {
    /// Before [`Core::restore`] on a node of S > 1 shards: the decided statuses of vertices owned
    /// by other shards (read from their stores) that this shard's stored vertices name as
    /// parents, so those are not left pending for a cross-shard answer. Final and rejected are
    /// forever, so a stored decision is as good as a fresh `ShardMsg::Status`.
    pub fn restore_remote_facts(&mut self, facts: impl IntoIterator<Item = (VertexId, VertexStatus)>) {
        for (id, st) in facts {
            if st == VertexStatus::Processing || shard_of_vertex(&id, self.shard_count) == self.shard {
                continue;
            }
            let e = self.cross.remote_parents.entry(id).or_default();
            debug_assert!(e.status.is_none_or(|old| old == st), "a decided remote status changed");
            if e.status.is_none() {
                self.cross.decided.push_back((self.now, crate::cross_shard::RemoteFact::Parent(id)));
            }
            e.status = Some(st);
            e.strong = st == VertexStatus::Final;
        }
    }

    /// Sets where forgotten decisions are looked up once `Params::archive_after_us` has passed
    /// (the engine: its store). Call it before anything is restored or handled; without it
    /// they stay in memory ([`crate::MemArchive`]).
    pub fn set_archive(&mut self, archive: Box<dyn crate::DecisionArchive + Send>) {
        self.dag.forgotten.set_archive(archive, self.shard, self.shard_count);
    }

    /// Restores one final vertex without its record, as if long forgotten (restart of a node
    /// with a long history: holding every stored vertex in full would need ~6 KB each). Call it
    /// for the older finals, in any order, all of them before [`Core::restore`] gets the rest
    /// (the last few finals and every non-final vertex): each takes a position (the store keeps
    /// the real ones; the core keeps the count dense), counts in `finalized` and the digest, and
    /// decides its locally owned conflict keys. Each id once.
    pub fn restore_forgotten_final(&mut self, id: VertexId, conflict_keys: &[ConflictKey]) {
        // Not `contains`: that asks the archive, which (the engine's store) knows every stored
        // final already. The store lists each id once.
        if id == self.dag.genesis.id || self.dag.vertices.contains_key(&id) || shard_of_vertex(&id, self.shard_count) != self.shard {
            return;
        }
        debug_assert!(self.dag.processing.is_empty(), "forgotten finals are restored before anything else");
        self.dag.forgotten.restore(id);
        self.finality.final_position += 1;
        self.finality.finalized += 1;
        self.finality.digest.add(&id.0);
        for k in conflict_keys {
            if shard_of_key(k, self.shard_count) == self.shard {
                self.dag.forgotten.restore_key(*k, id);
            }
        }
    }

    /// After [`Core::restore`]'s caller started: every final that retention pruned from the
    /// store, at once, as the store summarises them (`RocksStore::pruned_summary`): `count`
    /// finals whose ids' BLAKE3 hashes XOR to `digest`. They count as final and in the
    /// finalized-set digest, exactly as [`Core::restore_forgotten_final`] of each would; their
    /// ids and keys are answered by the store-backed archive, which is why only a core with
    /// one (the engine's) may take this shortcut. A restart no longer visits every pruned
    /// record, whose number grows with the node's whole history.
    pub fn restore_pruned_finals(&mut self, count: u64, digest: &[u8; 32]) {
        debug_assert!(self.dag.processing.is_empty(), "pruned finals are restored before anything else");
        self.finality.final_position += count;
        self.finality.finalized += count;
        self.finality.digest.merge(digest);
    }

    /// Restores the winner of a conflict key this shard owns whose winning vertex belongs to
    /// another shard (read from that shard's store at a restart, S > 1): a key's winner is stored
    /// with the winning vertex, so this shard's own finals do not name it. Without it a restarted
    /// key shard held the set of a recent cross-shard final undecided for ever (`sim-faults` seed
    /// 549) and forgot older ones, letting a late double spend start a fresh set. A
    /// store-backed archive that reads every shard's store (the engine's) needs no call.
    pub fn restore_key_winner(&mut self, key: ConflictKey, winner: VertexId) {
        if shard_of_key(&key, self.shard_count) != self.shard || self.conflicts.sets.contains_key(&key) {
            return;
        }
        self.dag.forgotten.restore_key(key, winner);
    }

    /// Restores state from storage after a restart: `(vertex, status)` pairs in storage
    /// (arrival) order, parents before children. Final vertices get positions in the given
    /// order; nothing is re-persisted or re-gossiped; processing vertices re-enter polling.
    pub fn restore(&mut self, now: u64, items: impl IntoIterator<Item = (Arc<Vertex>, VertexStatus)>) {
        self.now = self.now.max(now);
        // No Yes on a conflicting vertex in the round the node comes back in (`lock_rounds`).
        self.rounds.restart_pending = true;
        let mut finals = Vec::new();
        let mut rejects = Vec::new();
        for (v, st) in items {
            if v.id == self.dag.genesis.id || self.dag.vertices.contains_key(&v.id) {
                continue;
            }
            if shard_of_vertex(&v.id, self.shard_count) != self.shard {
                continue;
            }
            if !self.parents_known(&v) {
                // A parent owned by another shard that was still processing when the node
                // stopped (no stored decision to restore): watch it, so its owner reports its
                // status once restored there. Without the watch the child waited forever (found
                // by `sim-faults`: every S = 2 crash stalled). A local parent missing here was
                // never stored (a bug upstream); the vertex stays pending instead of dropped.
                let missing = self.missing_parents(&v);
                self.conflicts.restored_pending.insert(v.id);
                self.pend(v, self.me, false);
                self.request_missing(now, self.me, &missing);
                continue;
            }
            let id = v.id;
            self.insert(now, v, None, false, true);
            match st {
                VertexStatus::Final => finals.push(id),
                VertexStatus::Rejected => rejects.push(id),
                VertexStatus::Processing => {}
            }
        }
        for id in finals {
            if self.dag.vertices.get(&id).is_some_and(|r| r.status == VertexStatus::Processing) {
                self.finalize(now, id, true);
            }
        }
        for id in rejects {
            self.reject(id, true);
        }
        // Locks a lone member may have held without a record (`locks.rs`).
        self.lock_restored_singletons();
        self.actions.retain(|a| !matches!(a, Action::Persist { .. } | Action::Finalized { .. } | Action::Rejected { .. } | Action::SendVertex { .. }));
        self.bump_epoch();
    }
}
