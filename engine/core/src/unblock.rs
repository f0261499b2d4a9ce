//! Unblocking preferences (liveness). A conflict set can prefer a member that nobody can ever
//! vote for: an undecided ancestor of it is not preferred in its own set, or it is not preferred
//! in another set it spends. If the other set's preference is blocked the same way, no member
//! of either is ever strongly preferred, nobody votes Yes, no Snowball count moves, and both
//! stay undecided for ever (`sim-faults` seed 23036, no Byzantine node: A and C spend keys K1
//! and K2, B on K1 was built on C and D on K2 on A during a partition, and the id tie-break
//! picked B and D, the one inconsistent pair). Such a set moves to a member that could be voted
//! for, when this node never voted for the blocked one (so no peer counted it: the same
//! condition under which a tie-break may move a preference, see `join_local`). Owns no state
//! (its timer lives in `Conflicts`); reads `dag`, `votes` and `cross_shard`, moves
//! `conflicts` preferences.

use std::collections::BTreeMap;

use pqdag_wire::{ConflictKey, VertexId};
use rand::Rng;

use crate::conflicts::ordf;
use crate::core::Core;
use crate::types::{shard_of_key, shard_of_vertex, Signer, VertexStatus};

/// Sets examined per check, taken from the oldest blocked vertices.
const UNBLOCK_KEYS_MAX: usize = 64;

/// Query timeouts without a Snowball success for any member after which a contested set in
/// whole-network mode counts as stalled ([`Core::break_stalemate`]): its lowest-id live member
/// is preferred, on every node alike.
const STALL_TIMEOUTS: u64 = 4;

/// Query timeouts after which a stalled set that moving to its lowest id did not free picks a
/// live member at random at each check instead.
const STALL_RANDOM_TIMEOUTS: u64 = 8;

impl<S: Signer> Core<S> {
    /// Every half query timeout while a set is contested: sets whose preferred member is older
    /// than two query timeouts, was never voted for here, and cannot be voted for, move to the
    /// best member (in the order of `ConflictSet::better`) that could be. Sets are taken in key order
    /// and each move bumps the preference epoch before the next set is looked at, so nodes
    /// holding the same sets and preferences make the same moves.
    pub(crate) fn unblock_preferences(&mut self, now: u64) {
        if self.conflicts.contested == 0 || now < self.conflicts.next_unblock_at {
            return;
        }
        self.conflicts.next_unblock_at = now + (self.params.query_timeout_us / 2).max(1);
        let cutoff = now.saturating_sub(2 * self.params.query_timeout_us);
        // Each key with the arrival of the oldest vertex spending it that has had no success.
        let mut keys: BTreeMap<ConflictKey, u64> = BTreeMap::new();
        for e in self.dag.processing.values() {
            if e.arrival_us > cutoff || keys.len() >= UNBLOCK_KEYS_MAX {
                break;
            }
            let Some(r) = self.dag.vertices.get(&e.id) else { continue };
            if r.in_conflict && r.successes == 0 {
                for k in r.v.conflict_keys.iter().filter(|k| shard_of_key(k, self.shard_count) == self.shard) {
                    keys.entry(*k).or_insert(r.arrival_us);
                }
            }
        }
        let pin = self.whole_network();
        let stall = now.saturating_sub(STALL_TIMEOUTS * self.params.query_timeout_us);
        let random = now.saturating_sub(STALL_RANDOM_TIMEOUTS * self.params.query_timeout_us);
        for (key, since) in keys {
            // A stalled set is the stalemate rule's alone (two rules moving it would flap).
            if !(pin && since <= stall && self.break_stalemate(key, since <= random)) {
                self.unblock_set(key, pin, cutoff);
            }
        }
    }

    /// Whole-network mode: a contested set none of whose members has had a Snowball success
    /// for [`STALL_TIMEOUTS`] query timeouts, and on which this node holds no lock, moves to its
    /// lowest-id live member (non-equivocal first), even off a member this node voted for.
    /// Overlapping sets of multi-key vertices can leave every node strongly preferring a
    /// different vertex, each conflicting with the others' (`bench --nodes 3 --rate 10000
    /// --payload-bytes 512 --conflict-ratio 0.05`: node-0 voted only for C, node-1 only for D,
    /// node-2 only for A and B, where C spends keys of A, B and D, and D of A): with the whole
    /// network as the sample a success needs every peer's Yes, so no count ever moved, the
    /// exposure pin kept each preference, and 460 acknowledged payloads stayed undecided for
    /// good. The lowest id is the same choice on every node, so the stalled vertex with the
    /// lowest id becomes strongly preferred everywhere. If that does not free the set (its
    /// lowest member waits on an ancestor that lost elsewhere), after [`STALL_RANDOM_TIMEOUTS`]
    /// each check picks a live member at random (the core's seeded RNG), which reaches every
    /// assignment. Safe for the reason every whole-network move is: a vertex is final only
    /// on a quorum of `LockedYes`, and a locked set is never moved here (`docs/consensus.md` 8c).
    /// Returns whether the set is stalled (moved or already on the chosen member).
    fn break_stalemate(&mut self, key: ConflictKey, random: bool) -> bool {
        let (target, owners) = {
            let Some(set) = self.conflicts.sets.get(&key) else { return false };
            if set.decided.is_some() || set.lock.is_some() || set.quorum_lock.is_some() {
                return false;
            }
            let live: Vec<usize> = (0..set.members.len()).filter(|&j| !set.members[j].rejected).collect();
            if live.len() < 2 || live.iter().any(|&j| set.members[j].count > 0) {
                return false;
            }
            let j = if random {
                live[self.rng.random_range(0..live.len())]
            } else {
                let Some(&j) = live.iter().min_by_key(|&&j| (set.members[j].equivocal, set.members[j].id)) else { return false };
                j
            };
            if j == set.pref {
                return true;
            }
            (j, set.owners())
        };
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return false };
        set.pref = target;
        let id = set.members[target].id;
        debug_assert!(!set.members[target].rejected, "a stalemate moves to a live member");
        self.conflicts.stalemate_moves += 1;
        self.bump_epoch();
        self.broadcast_preference(key, id, false, &owners);
        true
    }

    fn unblock_set(&mut self, key: ConflictKey, pin: bool, cutoff: u64) {
        let (blocked, candidates) = {
            let Some(set) = self.conflicts.sets.get(&key) else { return };
            if set.decided.is_some() || set.lock.is_some() || set.quorum_lock.is_some() || set.members.len() < 2 {
                return;
            }
            let p = &set.members[set.pref];
            // Moved only where a tie-break could move it: no Snowball count, and no Yes of
            // this node (in whole-network mode, where a Yes pins the preference).
            if p.owner != self.shard || p.rejected || p.count > 0 || (pin && p.exposed) {
                return;
            }
            let mut order: Vec<usize> = (0..set.members.len()).filter(|&j| j != set.pref && !set.members[j].rejected && set.members[j].owner == self.shard).collect();
            // Best first, in the order of `ConflictSet::better` (live members only here).
            order.sort_by_key(|&j| {
                let m = &set.members[j];
                std::cmp::Reverse((m.count, !m.equivocal, ordf(m.confidence), std::cmp::Reverse(m.id)))
            });
            (p.id, order.into_iter().map(|j| set.members[j].id).collect::<Vec<VertexId>>())
        };
        match self.dag.vertices.get(&blocked) {
            Some(r) if r.status == VertexStatus::Processing && r.arrival_us <= cutoff => {}
            _ => return,
        }
        if self.strongly_preferred(&blocked) {
            return;
        }
        for q in candidates {
            if self.votable_if_preferred(&q, &key) {
                let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
                let Some(j) = set.index(&q) else { return };
                debug_assert!(j != set.pref && !set.members[j].rejected, "unblocking moves to another live member");
                set.pref = j;
                let owners = set.owners();
                self.bump_epoch();
                self.broadcast_preference(key, q, false, &owners);
                return;
            }
        }
    }

    /// Whether processing member `q` of the set of `key` would be strongly preferred if that
    /// set preferred it: it is preferred in each of its other sets and every undecided parent
    /// is strongly preferred (the test of `strongly_preferred`, with `key` assumed).
    fn votable_if_preferred(&mut self, q: &VertexId, key: &ConflictKey) -> bool {
        let v = match self.dag.vertices.get(q) {
            Some(r) if r.status == VertexStatus::Processing => r.v.clone(),
            _ => return false,
        };
        let others = v.conflict_keys.iter().filter(|k| *k != key).all(|k| {
            if shard_of_key(k, self.shard_count) == self.shard {
                self.conflicts.sets.get(k).is_some_and(|s| s.preferred() == *q && s.lock.is_none_or(|l| l == *q))
            } else {
                self.cross.remote_sets.get(k).is_some_and(|s| s.preferred == Some(*q))
            }
        });
        if !others {
            return false;
        }
        for p in &v.parents {
            let good = if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.dag.genesis.id {
                match self.dag.vertices.get(p).map(|r| r.status) {
                    Some(VertexStatus::Final) => true,
                    Some(VertexStatus::Rejected) => false,
                    Some(VertexStatus::Processing) => self.strongly_preferred(p),
                    None => self.dag.forgotten.contains(p),
                }
            } else {
                self.cross.remote_parents.get(p).is_some_and(|rp| rp.status == Some(VertexStatus::Final) || (rp.status == Some(VertexStatus::Processing) && rp.strong))
            };
            if !good {
                return false;
            }
        }
        true
    }
}
