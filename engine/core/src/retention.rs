//! Retention: stripping payloads of old finals and forgetting their records (memory bound of a
//! long-running node). Owns [`Retention`]; edits `dag` records and shrinks decided `conflicts`.

use std::collections::VecDeque;
use std::sync::Arc;

use pqdag_wire::{Vertex, VertexId};

use crate::core::Core;
use crate::dag::Dag;
use crate::types::{Signer, VertexStatus, shard_of_key};

/// Final vertices in finality order with their finality time.
#[derive(Default)]
pub(crate) struct Retention {
    /// For stripping (see `Params::strip_final_after_us`).
    pub(crate) strip_queue: VecDeque<(u64, VertexId)>,
    /// For forgetting (see `Params::forget_final_after_us`).
    pub(crate) forget_queue: VecDeque<(u64, VertexId)>,
}

impl Retention {
    /// Drops payload and signature of vertices final for longer than `strip_final_after_us`.
    pub(crate) fn strip_old_finals(&mut self, dag: &mut Dag, after: u64, now: u64) {
        while let Some(&(at, id)) = self.strip_queue.front() {
            if after == 0 || at.saturating_add(after) > now {
                break;
            }
            self.strip_queue.pop_front();
            if let Some(r) = dag.vertices.get_mut(&id) {
                debug_assert_eq!(r.status, VertexStatus::Final, "only final vertices are stripped");
                if r.status == VertexStatus::Final && !r.v.signature.is_empty() {
                    let v = &r.v;
                    r.v = Arc::new(Vertex {
                        id: v.id,
                        parents: v.parents.clone(),
                        txs: Vec::new(),
                        conflict_keys: v.conflict_keys.clone(),
                        timestamp_ms: v.timestamp_ms,
                        creator: v.creator,
                        signature: Vec::new(),
                    });
                }
            }
        }
    }
}

impl<S: Signer> Core<S> {
    /// Forgets the records of vertices final for longer than `forget_final_after_us`: the id
    /// moves to `forgotten` (still final to every lookup), and each of its conflict sets, once
    /// decided with no member still processing, shrinks to its winner (`Forgotten::insert_key`).
    /// Recently final vertices that parent selection may still name are kept a while longer.
    pub(crate) fn forget_old_finals(&mut self, now: u64) {
        let after = self.params.forget_final_after_us;
        let mut requeue = Vec::new();
        while let Some(&(at, id)) = self.retention.forget_queue.front() {
            if after == 0 || at.saturating_add(after) > now {
                break;
            }
            self.retention.forget_queue.pop_front();
            if self.dag.recent_final.contains(&id) || self.cross.watchers.contains_key(&id) {
                requeue.push((now, id));
                continue;
            }
            let Some(r) = self.dag.vertices.get(&id) else { continue };
            debug_assert_eq!(r.status, VertexStatus::Final, "only final vertices are forgotten");
            if r.status != VertexStatus::Final {
                continue;
            }
            let Some(rec) = self.dag.vertices.remove(&id) else { continue };
            self.dag.forgotten.insert(id, now);
            for &k in &rec.v.conflict_keys {
                if shard_of_key(&k, self.shard_count) != self.shard {
                    continue;
                }
                let Some(set) = self.conflicts.sets.get(&k) else { continue };
                let Some(winner) = set.decided else { continue };
                // Only sets whose members are all local and none still processing shrink.
                let settled = set.members.iter().all(|m| m.owner == self.shard && self.dag.vertices.get(&m.id).is_none_or(|r| r.status != VertexStatus::Processing));
                if settled {
                    debug_assert_eq!(self.vertex_status(&winner), Some(VertexStatus::Final), "a decided set's winner is final");
                    self.conflicts.sets.remove(&k);
                    self.dag.forgotten.insert_key(k, winner, now);
                }
            }
        }
        self.retention.forget_queue.extend(requeue);
    }

    /// Shrinks decided sets with a member on another shard to their winner
    /// `forget_final_after_us` after the decision, once none of this shard's members is still
    /// processing (`forget_old_finals` shrinks only all-local sets, so before, every cross-shard
    /// set of an S > 1 node stayed in memory for ever). Every member's shard was told the
    /// decision when it was made (`decide`); a later member asks again and hears the winner
    /// from `forgotten` (`join_local`).
    pub(crate) fn forget_cross_sets(&mut self, now: u64) {
        let after = self.params.forget_final_after_us;
        if after == 0 {
            return;
        }
        let mut requeue = Vec::new();
        while let Some(&(at, key)) = self.conflicts.cross_decided.front() {
            if at.saturating_add(after) > now {
                break;
            }
            self.conflicts.cross_decided.pop_front();
            let Some(set) = self.conflicts.sets.get(&key) else { continue };
            let Some(winner) = set.decided else { continue };
            let busy = set.members.iter().chain(set.overflow.iter()).any(|m| m.owner == self.shard && self.dag.vertices.get(&m.id).is_some_and(|r| r.status == VertexStatus::Processing));
            if busy {
                requeue.push((now, key));
                continue;
            }
            self.conflicts.sets.remove(&key);
            self.dag.forgotten.insert_key(key, winner, now);
        }
        self.conflicts.cross_decided.extend(requeue);
    }
}
