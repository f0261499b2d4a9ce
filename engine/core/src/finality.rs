//! Finality (FR-005) and rejection: the acceptance test, the dense final positions, the
//! finalized digest and the decided counters. Owns [`Finality`]; calls `dag`, `conflicts`
//! (decide, member rejected), `cross_shard` (claims, watchers) and `retention` (queues).

use pqdag_crypto::hash::SetDigest;
use pqdag_wire::{ConflictKey, VertexId};

use crate::core::Core;
use crate::dag::RECENT_FINAL_MAX;
use crate::types::{Action, ShardMsg, Signer, VertexStatus, shard_of_key};

/// Decision counters and positions.
#[derive(Default)]
pub(crate) struct Finality {
    /// Position of the last finalized vertex (dense: equals `finalized`).
    pub(crate) final_position: u64,
    pub(crate) finalized: u64,
    pub(crate) rejected: u64,
    /// Order-independent digest of the finalized set (genesis excluded).
    pub(crate) digest: SetDigest,
    /// Processing vertices that passed `max_rounds` rounds.
    pub(crate) stalled: u64,
}

impl<S: Signer> Core<S> {
    pub(crate) fn try_finalize(&mut self, now: u64, id: VertexId) {
        let Some(r) = self.dag.vertices.get(&id) else { return };
        if r.status != VertexStatus::Processing || r.successes < self.params.beta || r.claiming > 0 {
            return;
        }
        if self.whole_network() {
            // A conflicting vertex needs a quorum locked on it (`locks`, docs/consensus.md 8c).
            // No confidence gate here: 8c's argument does not use it (and a conflict-free
            // vertex is final only after its ancestors, so it is as safe as they are), while a
            // minority voting No for good (a node locked on the loser, or a liar's true No)
            // held confidence under the threshold for ever (`sim-faults` seeds 4362, 24198).
            if !r.lock_quorum && !r.v.conflict_keys.is_empty() {
                return;
            }
        } else if r.confidence < self.params.finalization_threshold {
            return;
        }
        let v = &r.v;
        if !v.parents.iter().all(|p| self.parent_state(p) == Some(VertexStatus::Final)) {
            return;
        }
        if !self.preferred_everywhere(v) {
            return;
        }
        let remote: Vec<ConflictKey> = v.conflict_keys.iter().filter(|k| shard_of_key(k, self.shard_count) != self.shard).copied().collect();
        if remote.is_empty() {
            self.finalize(now, id, false);
            return;
        }
        // Cross-shard sets: lock each (2-phase), finalize when all granted.
        if let Some(r) = self.dag.vertices.get_mut(&id) {
            r.claiming = remote.len() as u32;
            r.claim_granted.clear();
        }
        for key in remote {
            let owner = shard_of_key(&key, self.shard_count);
            self.push(Action::ToShard { shard: owner, msg: ShardMsg::Claim { key, member: id, owner: self.shard } });
        }
    }

    pub(crate) fn finalize(&mut self, now: u64, id: VertexId, quiet: bool) {
        let Some(r) = self.dag.vertices.get_mut(&id) else { return };
        debug_assert_eq!(r.status, VertexStatus::Processing, "final/rejected are forever");
        if r.status != VertexStatus::Processing {
            return;
        }
        r.status = VertexStatus::Final;
        r.confidence = 1.0;
        r.children = crate::dag::Children::new();
        let (seq, arrival, v) = (r.seq, r.arrival_us, r.v.clone());
        self.dag.processing.remove(&seq);
        let member = self.flood_member(&v.creator);
        self.flood.left(&v.creator, member, v.heap_bytes() as u64);
        self.finality.final_position += 1;
        self.finality.finalized += 1;
        self.finality.digest.add(&id.0);
        if self.dag.recent_final.len() >= RECENT_FINAL_MAX {
            self.dag.recent_final.pop_front();
        }
        self.dag.recent_final.push_back(id);
        if self.params.strip_final_after_us > 0 {
            self.retention.queue_strip(now, &v);
        }
        if self.params.forget_final_after_us > 0 {
            self.retention.forget_queue.push_back((now, id));
        }
        if !quiet {
            self.push(Action::Persist { vertex: v.clone(), status: VertexStatus::Final });
            self.push(Action::Finalized { id, position: self.finality.final_position, latency_us: now.saturating_sub(arrival) });
            self.batch.decided(&id);
        }
        self.notify_watchers(id);
        // 4.5: a finalized member decides its sets; losers and their descendants are rejected.
        for key in &v.conflict_keys {
            if shard_of_key(key, self.shard_count) == self.shard {
                self.decide(*key, id, quiet);
            }
        }
    }

    /// Rejects `id` and every descendant (iterative, bounded by the DAG size).
    pub(crate) fn reject(&mut self, id: VertexId, quiet: bool) {
        let mut work = vec![id];
        while let Some(x) = work.pop() {
            assert!(!self.dag.forgotten.contains(&x), "rejecting a final (forgotten) vertex {x:?}");
            let Some(r) = self.dag.vertices.get_mut(&x) else { continue };
            // Final is forever: a loser or a loser's descendant is never final (4.5, FR-005).
            assert!(r.status != VertexStatus::Final, "rejecting a final vertex {x:?}");
            if r.status != VertexStatus::Processing {
                continue;
            }
            r.status = VertexStatus::Rejected;
            let (seq, v, children) = (r.seq, r.v.clone(), r.children.clone());
            if self.params.forget_final_after_us > 0 {
                self.retention.forget_rejected_queue.push_back((self.now, x));
            }
            if self.params.strip_final_after_us > 0 {
                self.retention.queue_strip(self.now, &v);
            }
            self.dag.processing.remove(&seq);
            let member = self.flood_member(&v.creator);
            self.flood.left(&v.creator, member, v.heap_bytes() as u64);
            self.finality.rejected += 1;
            // A rejected child no longer covers its parents: recompute their earliest child.
            for p in &v.parents {
                let Some(pr) = self.dag.vertices.get(p) else { continue };
                if pr.status != VertexStatus::Processing {
                    continue;
                }
                let pseq = pr.seq;
                let min = pr.children.iter().filter_map(|c| self.dag.vertices.get(c)).filter(|c| c.status != VertexStatus::Rejected).map(|c| c.seq).min().unwrap_or(u64::MAX);
                if let Some(e) = self.dag.processing.get_mut(&pseq) {
                    e.min_child_seq = min;
                }
            }
            if !quiet {
                if v.creator == self.me {
                    self.reissue_innocent(x, &v);
                }
                self.push(Action::Persist { vertex: v.clone(), status: VertexStatus::Rejected });
                self.push(Action::Rejected { id: x });
            }
            self.notify_watchers(x);
            for key in &v.conflict_keys {
                if shard_of_key(key, self.shard_count) == self.shard {
                    self.member_rejected(*key, x);
                } else {
                    let owner = shard_of_key(key, self.shard_count);
                    self.push(Action::ToShard { shard: owner, msg: ShardMsg::MemberRejected { key: *key, member: x } });
                }
            }
            work.extend(children);
        }
    }
}
