//! Quorum locks (safety of whole-network polls, small clusters; docs/consensus.md item 8c).
//!
//! A node *locks* a conflict set on a member when one of its own polls counts a quorum q of Yes
//! for it (its own vote included). A locked node prefers and votes for that member and leaves
//! it only on a poll in which at least `t = N - q + f + 1` peers (its own vote left out) said
//! Yes to another member. A conflicting vertex is final only after a poll that asked about it
//! directly got q `LockedYes` (Yes from a node locked on it in each of its sets).
//!
//! Why this is safe at f < N/3, whatever the timing: if A is final somewhere, q nodes were
//! locked on A, at least q - f of them honest. The other honest nodes number at most N - q, so
//! with the f liars at most N - q + f < t peers can say Yes to a conflicting B while no honest
//! node locked on A has left it: the first to leave would need t. So none ever leaves, and B
//! can never gather the q `LockedYes` it needs (two quorums share an honest node, locked on A).
//! Exposure (item 2) alone was not enough: an honest node that had merely voted for A moved on
//! a Snowball count (a strict majority of a random two thirds of the peers), which a liar and
//! one stale honest node can manufacture at N = 5 (`sim-faults --max-byzantine 0.25` seed
//! 26752). Locking on a *seen* quorum rather than on a single vote keeps the partition case
//! live: two halves of 6 nodes that each voted for their own member never saw a quorum, so
//! neither is locked and Snowball counts reconcile them after the heal.
//!
//! A lock is written to the store before any vote that shows it leaves the node
//! (`Action::Lock`, persisted like a vertex), and restored at a restart
//! ([`Core::restore_locks`]): a node that forgot its lock could leave it for free.
//!
//! What it costs: a conflicting vertex waits for the locks to form (about one poll round after
//! its first quorum), and liveness can be lost where Byzantine votes made two honest nodes lock
//! on different members of one set (each then needs t, and the liar withholds): measured by
//! `sim-faults --max-byzantine 0.25`. Owns no state (a set's lock lives in `ConflictSet`).

use pqdag_wire::{ConflictKey, Vertex, VertexId};

use crate::core::Core;
use crate::id_hash::HashSet;
use crate::types::{Action, Signer, VertexStatus, shard_of_key, shard_of_vertex};

impl<S: Signer> Core<S> {
    /// Peer Yes for another member that a poll needs before a locked node leaves its lock:
    /// t = N - q + f + 1, one more than the honest nodes outside a quorum plus the liars.
    pub(crate) fn lock_release_threshold(&self) -> usize {
        self.peers.ids.len() + 1 - self.quorum() + self.faults_tolerated() + 1
    }

    /// Peers' `LockedYes` on a member, in one whole-network poll, that move an unlocked set's
    /// preference to it: f + 1, so at least one is honest, locked because it saw a quorum of
    /// Yes for the member. See `Core::set_success`.
    pub(crate) fn lock_follow_threshold(&self) -> usize {
        self.faults_tolerated() + 1
    }

    /// Whether this node is locked on `v` in every conflict set of `v` (a set decided for `v`
    /// counts): its Yes on `v` is then a `LockedYes`.
    pub(crate) fn locked_on(&self, v: &Vertex) -> bool {
        v.conflict_keys.iter().all(|k| {
            if shard_of_key(k, self.shard_count) == self.shard {
                self.conflicts.sets.get(k).is_some_and(|s| s.quorum_lock == Some(v.id) || s.decided == Some(v.id))
            } else {
                self.cross.remote_sets.get(k).is_some_and(|s| s.preferred == Some(v.id) && (s.locked || s.decided))
            }
        })
    }

    /// Makes the lock of `key` (or its release, `None`) durable before any later send, with
    /// the set's lock round and gate (`lock_rounds`): a node that forgot how old its lock is
    /// could leave it on an older certificate.
    pub(crate) fn persist_lock(&mut self, key: ConflictKey, member: Option<VertexId>) {
        let (round, gate) = match (member, self.conflicts.sets.get(&key)) {
            (Some(_), Some(s)) => (s.lock_round, s.lock_gate),
            _ => (0, 0),
        };
        self.push(Action::Lock { key, member, round, gate });
    }

    /// After [`Core::restore`]: the locks this shard held when it stopped (`Action::Lock`, as
    /// stored). A lock whose set is gone (decided and forgotten) or whose member is no longer a
    /// live member is dropped; otherwise the set prefers its locked member again, so the node
    /// votes as it did before the crash. Each lock comes with its round and gate as stored
    /// (`lock_rounds`; a record written before lock rounds: round 0, `GATE_AT_RESTART`).
    pub fn restore_locks(&mut self, locks: impl IntoIterator<Item = (ConflictKey, VertexId, u64, u64)>) {
        let mut keys = Vec::new();
        for (key, member, round, gate) in locks {
            if shard_of_key(&key, self.shard_count) == self.shard {
                self.conflicts.restored_locks.insert(key, member);
                self.conflicts.restored_lock_rounds.insert(key, (round, gate.max(round)));
                keys.push(key);
            }
        }
        keys.sort_unstable();
        for key in keys {
            self.apply_restored_lock(key);
        }
        self.bump_epoch();
    }

    /// At the end of [`Core::restore`] (whole-network polls): locks every undecided set whose
    /// only member is a live vertex of this shard, as if its lock had been stored. Such a lock
    /// may have been held without a record (`ConflictSet::lock_unpersisted`: written only once
    /// a second vertex joins), and a node that forgot a lock could leave it for free; locking
    /// a lone member that never saw a quorum only makes the node stricter (it prefers the one
    /// member anyway, and a lock restricts moving, never what is final). Vertices restored as
    /// pending (a parent on another shard) get the same when they join
    /// ([`Core::lock_restored_singleton`]).
    pub(crate) fn lock_restored_singletons(&mut self) {
        if !self.whole_network() {
            return;
        }
        let me = self.shard;
        let mut keys: Vec<ConflictKey> = self
            .conflicts
            .sets
            .iter()
            .filter(|(_, s)| s.decided.is_none() && s.quorum_lock.is_none() && s.lone_live_member(me).is_some())
            .map(|(k, _)| *k)
            .collect();
        // Sorted: the hasher's order must not reach the actions.
        keys.sort_unstable();
        for key in keys {
            self.lock_singleton(key);
        }
    }

    /// A vertex restored as pending joined the set of `key`: locked as
    /// [`Core::lock_restored_singletons`] would have.
    pub(crate) fn lock_restored_singleton(&mut self, key: ConflictKey, member: VertexId) {
        if !self.conflicts.restored_pending.contains(&member) || !self.whole_network() {
            return;
        }
        let Some(s) = self.conflicts.sets.get(&key) else { return };
        if s.decided.is_none() && s.quorum_lock.is_none() && s.lone_live_member(self.shard) == Some(member) {
            self.lock_singleton(key);
        }
    }

    fn lock_singleton(&mut self, key: ConflictKey) {
        let gate = self.rounds.restart.unwrap_or(crate::lock_rounds::GATE_AT_RESTART);
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        let member = set.members[0].id;
        set.quorum_lock = Some(member);
        // Taken at most now, of unknown round: claims nothing, moves on a later certificate.
        set.lock_round = 0;
        set.lock_gate = gate;
        set.lock_unpersisted = true;
        set.pref = 0;
        let owners = set.owners();
        self.broadcast_preference(key, member, false, &owners);
        self.bump_epoch();
    }

    /// Applies the restored lock of `key` once its member is in the set (promoted if it was set
    /// aside); dropped when the set is decided or forgotten, or the member is rejected.
    pub(crate) fn apply_restored_lock(&mut self, key: ConflictKey) {
        let Some(&member) = self.conflicts.restored_locks.get(&key) else { return };
        if self.dag.forgotten.key_winner(&key).is_some() && !self.conflicts.sets.contains_key(&key) {
            self.conflicts.restored_locks.remove(&key);
            self.conflicts.restored_lock_rounds.remove(&key);
            return;
        }
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        let i = match set.index(&member) {
            Some(i) => i,
            None => match set.promote(&member) {
                Some(i) => i,
                None => return,
            },
        };
        self.conflicts.restored_locks.remove(&key);
        let (round, gate) = self.conflicts.restored_lock_rounds.remove(&key).unwrap_or((0, crate::lock_rounds::GATE_AT_RESTART));
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        if set.decided.is_some() || set.members[i].rejected {
            return;
        }
        set.quorum_lock = Some(member);
        set.lock_round = round;
        // A gate stored before the restart is kept; the first event's round replaces an unknown
        // one (`advance_round`), or does so now if that event came already.
        set.lock_gate = if gate == crate::lock_rounds::GATE_AT_RESTART { self.rounds.restart.map_or(gate, |r| r.max(round)) } else { gate };
        set.lock_unpersisted = false;
        set.pref = i;
        let owners = set.owners();
        // Written again: a lock this node took on another member while this one was still
        // pending may have overwritten the stored record meanwhile.
        self.persist_lock(key, Some(member));
        self.broadcast_preference(key, member, false, &owners);
        self.bump_epoch();
    }

    /// Whole-network polls: records who answered `Final` on each polled id (`sample`: peer index
    /// per answer bit) and decides the ids that floor(N/3) + 1 distinct peers claimed final.
    pub(crate) fn count_final_claims(&mut self, now: u64, ids: &[VertexId], finals: &[u64], sample: &[usize]) {
        // f + 1 with f = floor(N/3), not (N-1)/3: at least one honest claim even where the
        // liars are a full third (N = 6 with 2 flip-voters claimed `Final` on the losers and
        // made honest nodes decide them: `fr006_thirty_three_percent_safety_200_seeds`).
        let need = self.claim_threshold() as u32;
        let mut adopt = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if finals[i] == 0 {
                continue;
            }
            let Some(r) = self.dag.vertices.get_mut(id) else { continue };
            if r.status != VertexStatus::Processing {
                continue;
            }
            for (pos, &pi) in sample.iter().enumerate() {
                if finals[i] & (1u64 << pos) != 0 && pi < 64 {
                    r.final_claims |= 1u64 << pi;
                }
            }
            if r.final_claims.count_ones() >= need {
                adopt.push(*id);
            }
        }
        for id in adopt {
            self.adopt_final(now, id);
        }
    }

    /// Decides `id` final, with its undecided ancestors first, because f + 1 distinct peers
    /// answered `Final` on it: at least one is honest, so it is final at an honest node, and
    /// (the safety argument of item 8c) nothing that conflicts with it or its ancestors is
    /// final anywhere or ever will be. This is how a node that locked on a competitor (Byzantine
    /// votes can split the honest locks) or missed the quorum rounds catches up: it cannot
    /// gather the release threshold when a liar withholds, but the honest nodes' claims it gets
    /// (`sim-faults --max-byzantine 0.25` seed 24198: N = 4, one `selective` liar, node 0
    /// locked on the loser for good). Not applied when an undecided ancestor or a conflict key
    /// is another shard's (the 2-phase claim of `try_finalize` is the way there).
    pub(crate) fn adopt_final(&mut self, now: u64, id: VertexId) {
        let mut stack = vec![id];
        let mut seen: HashSet<VertexId> = HashSet::default();
        let mut undecided: Vec<(u64, VertexId)> = Vec::new();
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            match self.dag.vertices.get(&x) {
                Some(r) if r.status == VertexStatus::Processing => {
                    if r.claiming > 0 || r.v.conflict_keys.iter().any(|k| shard_of_key(k, self.shard_count) != self.shard) {
                        return;
                    }
                    undecided.push((r.seq, x));
                    for p in &r.v.parents {
                        if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.dag.genesis.id {
                            stack.push(*p);
                        } else if !self.cross.remote_parents.get(p).is_some_and(|rp| rp.status == Some(VertexStatus::Final)) {
                            return;
                        }
                    }
                }
                Some(r) if r.status == VertexStatus::Final => {}
                // Rejected here while f + 1 peers claim it final: more than f liars, or a bug.
                // Never overturned (final and rejected are forever).
                Some(_) => return,
                None => {
                    if !self.dag.forgotten.contains(&x) {
                        return;
                    }
                }
            }
        }
        undecided.sort_unstable();
        for (_, x) in undecided {
            if self.dag.vertices.get(&x).is_some_and(|r| r.status == VertexStatus::Processing) {
                self.finalize(now, x, false);
            }
        }
    }
}
