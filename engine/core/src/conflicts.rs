//! Conflict sets (4.5): membership, preference, locks, decisions, and the winners of forgotten
//! decided sets. Owns [`Conflicts`]; calls `finality` (reject losers), `votes` (bump the
//! preference epoch), `peers` (equivocation) and the outbox (preferences to other shards).

use std::sync::Arc;

use pqdag_wire::{ConflictKey, NodeId, Vertex, VertexId};

use crate::core::Core;
use crate::dag::Dag;
use crate::id_hash::{HashMap, HashSet};
use crate::types::{Action, ShardMsg, Signer, VertexStatus, shard_of_key};

/// Members of one conflict set per creator. An honest creator spends a key once; a second
/// member of the same creator is already the proof of its equivocation. Further ones are kept
/// aside (`ConflictSet::overflow`), so a set holds at most 2 members per node however many
/// vertices an equivocator signs, while no vertex is ever rejected for arriving late: a rule
/// that depended on arrival order would let an equivocator make one vertex final at one node
/// and rejected at another (issue 14, hole 2).
pub(crate) const CREATOR_MEMBERS_MAX: usize = 2;

/// One member of a conflict set, with its Snowball counters.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) id: VertexId,
    pub(crate) count: u32,
    pub(crate) confidence: f64,
    pub(crate) creator: NodeId,
    pub(crate) owner: u32,
    /// Rejected (e.g. descends from another set's loser): can never be preferred again.
    pub(crate) rejected: bool,
    /// This node voted Yes on the member or a descendant (`Core::expose`): a newcomer may no
    /// longer take the preference from it on a tie.
    pub(crate) exposed: bool,
    /// Its creator has another member in this set: the creator equivocated (see `better`).
    pub(crate) equivocal: bool,
    /// Peers that answered `LockedYes` on it in the last poll that asked about it directly and
    /// gave it a result (a Snowball success, a quorum, or a stall with locked peers), if any
    /// did (whole-network polls): an unlocked set follows a member with f + 1 only while every
    /// rival's count is 0 (`Core::set_success`).
    pub(crate) locked_peers: u32,
}

/// The vertices spending one conflict key.
#[derive(Debug, Default)]
pub(crate) struct ConflictSet {
    pub(crate) members: Vec<Member>,
    pub(crate) pref: usize,
    pub(crate) last_winner: usize,
    pub(crate) streak: u32,
    pub(crate) decided: Option<VertexId>,
    /// The cross-shard finality claim (2-phase) of a member owned by another shard.
    pub(crate) lock: Option<VertexId>,
    /// The quorum lock (`locks`, whole-network polls): this node saw a quorum of Yes for this
    /// member, prefers it, and leaves it only on the release threshold of peer Yes for another.
    pub(crate) quorum_lock: Option<VertexId>,
    /// The quorum lock is not in the store: taken while this shard's own vertex was the set's
    /// only member, it is written the moment a second vertex tries to join (before any later
    /// send), and a restart re-derives it by locking every restored lone member
    /// (`Core::lock_restored_singletons`). Saves one store write per key of every uncontested
    /// spend (`docs/consensus.md` 8c, "Lock records").
    pub(crate) lock_unpersisted: bool,
    /// The quorum lock's round (`lock_rounds`): a round in which a certificate for the member
    /// exists, or 0 (claims nothing); what a `LockedYes`'s age counts from.
    pub(crate) lock_round: u64,
    /// The lock moves only on a certificate of a later round than this (at least
    /// `lock_round`; `GATE_AT_RESTART` until the first event after a restart).
    pub(crate) lock_gate: u64,
    /// The round in which the announced preference last changed: no Yes on it in that round
    /// (`lock_rounds`). `None`: never changed.
    pub(crate) switched_round: Option<u64>,
    /// Vertices of creators that already have [`CREATOR_MEMBERS_MAX`] members here: never
    /// preferred (so never voted for or finalized here) until the network's votes promote one
    /// into the set (`set_success`); rejected when the set is decided for another.
    pub(crate) overflow: Vec<Member>,
    /// The preference last sent to the other owner shards (`Core::broadcast_preference`).
    pub(crate) announced: Option<VertexId>,
    /// Revocations sent (`Preference { ack: true }`) and not yet acknowledged. While any is
    /// out, another shard may still vote Yes on the member it revokes, so no shard of this
    /// node votes Yes on the preference: not this one, and not the preference's owner, which
    /// is told only when the last ack arrives (`held`).
    pub(crate) acks_due: u32,
    /// The owner shard of the preference has not been told it yet (`acks_due` > 0).
    pub(crate) held: bool,
}

impl ConflictSet {
    /// Whether `a` beats `b` for the preference.
    pub(crate) fn better(a: &Member, b: &Member) -> bool {
        if a.rejected != b.rejected {
            return b.rejected;
        }
        // Snowball count first, then confidence, then the lower id: one deterministic order,
        // so all nodes start from the same preference and a conflict resolves in few rounds
        // even with a quarter of the voters flipping. Not the creator's timestamp: a double
        // spender could backdate its vertex to win every tie (issue 14, hole 4). An id can be
        // ground too, but that only picks which of two conflicting vertices wins, never
        // whether nodes agree; first-seen (no tie-break) was measured to split the honest
        // nodes' preferences so that 7 flip-voters of 30 stalled every conflicting seed.
        // On equal counts a member of an equivocating creator ranks below one of a creator that
        // spent the key once: an equivocator that spams many members, a different subset to
        // each node, otherwise made every honest node prefer a different one of them by the id
        // tie-break, and with the whole network as the sample no member ever got a majority
        // (`sim-soak --strategies set-spam`: 14 of 40 runs at N = 7 stalled for good).
        (a.count, !a.equivocal, ordf(a.confidence), std::cmp::Reverse(a.id)) > (b.count, !b.equivocal, ordf(b.confidence), std::cmp::Reverse(b.id))
    }
    /// The preferred member.
    pub(crate) fn preferred(&self) -> VertexId {
        self.members[self.pref].id
    }
    /// The set's only member, when it is a live vertex of `shard` and nothing is set aside: the
    /// case whose lock stays out of the store (`lock_unpersisted`) and is re-derived at a
    /// restart (`Core::lock_restored_singletons`).
    pub(crate) fn lone_live_member(&self, shard: u32) -> Option<VertexId> {
        match self.members.as_slice() {
            [m] if self.overflow.is_empty() && m.owner == shard && !m.rejected => Some(m.id),
            _ => None,
        }
    }

    /// The owner shard of member `id`, set-aside members included.
    pub(crate) fn owner_of(&self, id: &VertexId) -> Option<u32> {
        self.members.iter().chain(self.overflow.iter()).find(|m| m.id == *id).map(|m| m.owner)
    }

    /// Position of member `id`.
    pub(crate) fn index(&self, id: &VertexId) -> Option<usize> {
        self.members.iter().position(|m| m.id == *id)
    }
    /// After a member of `creator` was rejected: its set-aside vertices (lowest ids first, the
    /// same on every node) take the freed places, up to [`CREATOR_MEMBERS_MAX`] live members.
    /// Rejected members count no more (a newcomer arriving now would be a member), and a vertex
    /// left aside could never be preferred, so never voted for, so never promoted: an honest
    /// creator whose two vertices spending a key were both rejected had its third, re-issuing
    /// their innocent transactions, stay processing on every node for good (4 nodes x 2 shards
    /// at 1 500 payloads/s with double spends and a crash, one payload of 45 000). Returns
    /// whether any came in.
    pub(crate) fn readmit_set_aside(&mut self, creator: NodeId) -> bool {
        let mut any = false;
        while self.members.iter().filter(|m| m.creator == creator && !m.rejected).count() < CREATOR_MEMBERS_MAX {
            let Some(o) = (0..self.overflow.len()).filter(|&o| self.overflow[o].creator == creator && !self.overflow[o].rejected).min_by_key(|&o| self.overflow[o].id) else { break };
            let m = self.overflow.swap_remove(o);
            self.members.push(m);
            any = true;
        }
        any
    }

    /// Moves set-aside vertex `id` into the set in place of its creator's weakest member that is
    /// neither the preference nor locked; returns its position. `None`: not set aside, or no
    /// such member.
    pub(crate) fn promote(&mut self, id: &VertexId) -> Option<usize> {
        let o = self.overflow.iter().position(|m| m.id == *id)?;
        let creator = self.overflow[o].creator;
        let pref = self.pref;
        let j = (0..self.members.len()).filter(|&j| j != pref && self.members[j].creator == creator && self.quorum_lock != Some(self.members[j].id)).min_by_key(|&j| (self.members[j].count, j))?;
        let mut promoted = self.overflow.swap_remove(o);
        promoted.equivocal = true;
        let demoted = std::mem::replace(&mut self.members[j], promoted);
        self.overflow.push(demoted);
        if self.last_winner == j {
            self.streak = 0;
        }
        Some(j)
    }
    /// The shard of every member, set-aside members included (preference broadcasts go to
    /// them; repeats are fine, `broadcast_preference` sends once per shard). Each must learn
    /// the decision, or a set-aside member owned by another shard stays processing there for
    /// ever while every other node rejected it (`sim-faults` seed 60: 35 spam vertices stuck at
    /// one node).
    pub(crate) fn owners(&self) -> Vec<u32> {
        self.members.iter().chain(self.overflow.iter()).map(|m| m.owner).collect()
    }
}

/// Orders a value of [0, 1] as an integer (ties at 1e-9 resolution).
pub(crate) fn ordf(x: f64) -> u64 {
    (x.clamp(0.0, 1.0) * 1e9) as u64
}

/// The conflict sets of the keys this shard owns.
#[derive(Default)]
pub(crate) struct Conflicts {
    pub(crate) sets: HashMap<ConflictKey, ConflictSet>,
    /// Undecided sets with two members or more (0: every processing vertex is preferred).
    pub(crate) contested: u64,
    /// Next check for preferences nobody can vote for (`Core::unblock_preferences`).
    pub(crate) next_unblock_at: u64,
    /// Moves made to break stalled sets (`Core::break_stalemate`), for the metric.
    pub(crate) stalemate_moves: u64,
    /// When a set of this shard last became contested (see `Core::keyed_parents_only`).
    pub(crate) last_contest_us: Option<u64>,
    /// Decided sets with a member owned by another shard, oldest first, with the decision time
    /// (`Core::forget_cross_sets`; the others shrink when their winner is forgotten).
    pub(crate) cross_decided: std::collections::VecDeque<(u64, ConflictKey)>,
    /// Quorum locks restored at a restart whose member has not joined its set yet (a vertex
    /// still pending on another shard's parent): no other member of the set is preferred
    /// meanwhile, and the lock applies when the member joins (`Core::apply_restored_lock`).
    pub(crate) restored_locks: HashMap<ConflictKey, VertexId>,
    /// The round and gate of each restored lock (`lock_rounds`).
    pub(crate) restored_lock_rounds: HashMap<ConflictKey, (u64, u64)>,
    /// Vertices of this shard restored as pending (a parent on another shard): when one joins a
    /// set as its only member it is locked (`Core::lock_restored_singleton`). At most what the
    /// restart restored; emptied once none is pending any more.
    pub(crate) restored_pending: HashSet<VertexId>,
}

impl Conflicts {
    /// True if a processing member of a local set of one of `keys` is an ancestor of `parents`
    /// (walk pruned by arrival sequence: an ancestor is always older).
    pub(crate) fn spends_ancestor_key(&self, dag: &Dag, keys: &[ConflictKey], parents: &[VertexId]) -> bool {
        for k in keys {
            let Some(set) = self.sets.get(k) else { continue };
            for m in &set.members {
                let Some(mr) = dag.vertices.get(&m.id) else { continue };
                if mr.status != VertexStatus::Processing {
                    continue;
                }
                let target_seq = mr.seq;
                let mut stack: Vec<VertexId> = parents.to_vec();
                // Only membership is asked of `seen` (never iterated): the hasher cannot change
                // the walk.
                let mut seen: HashSet<VertexId> = HashSet::default();
                let mut steps = 0usize;
                while let Some(x) = stack.pop() {
                    steps += 1;
                    if steps > dag.processing.len() * 8 + 64 {
                        break;
                    }
                    if x == m.id {
                        return true;
                    }
                    if !seen.insert(x) {
                        continue;
                    }
                    let Some(r) = dag.vertices.get(&x) else { continue };
                    if r.status != VertexStatus::Processing || r.seq < target_seq {
                        continue;
                    }
                    stack.extend(r.v.parents.iter().copied());
                }
            }
        }
        false
    }
}

impl<S: Signer> Core<S> {
    /// `v` joins the set of `key`. A vertex inserted already rejected (a rejected parent, or
    /// spending its own ancestor's key) joins as a rejected member: it must never become the
    /// preference, or the set would prefer a vertex that cannot win and its live members would
    /// never be voted for (found by `sim --crash 3@2-4 --loss 0.01 --conflict-ratio 0.2`: the
    /// lower-id tie-break made a rejected member the preference on every node but one).
    pub(crate) fn join_set(&mut self, now: u64, v: &Arc<Vertex>, key: ConflictKey) {
        let _ = now;
        let rejected = self.dag.vertices.get(&v.id).is_some_and(|r| r.status == VertexStatus::Rejected);
        let owner = shard_of_key(&key, self.shard_count);
        if owner != self.shard {
            let rs = self.cross.remote_sets.entry(key).or_default();
            rs.mine.push(v.id);
            if rs.decided && rs.preferred != Some(v.id) {
                self.reject(v.id, false);
            }
            self.push(Action::ToShard { shard: owner, msg: ShardMsg::Join { key, member: v.id, creator: v.creator, owner: self.shard } });
            if rejected {
                // In order after the Join (the mesh keeps per-pair order): the owner marks it.
                self.push(Action::ToShard { shard: owner, msg: ShardMsg::MemberRejected { key, member: v.id } });
            }
            if self.dag.vertices.get(&v.id).is_some_and(|r| r.exposed) {
                self.push(Action::ToShard { shard: owner, msg: ShardMsg::MemberExposed { key, member: v.id } });
            }
            return;
        }
        let exposed = self.dag.vertices.get(&v.id).is_some_and(|r| r.exposed);
        let member = Member { id: v.id, count: 0, confidence: 0.0, creator: v.creator, owner: self.shard, rejected, exposed, equivocal: false, locked_peers: 0 };
        self.join_local(key, member);
    }

    pub(crate) fn join_local(&mut self, key: ConflictKey, member: Member) {
        let id = member.id;
        self.join_local_inner(key, member);
        if !self.conflicts.restored_locks.is_empty() {
            self.apply_restored_lock(key);
        }
        if !self.conflicts.restored_pending.is_empty() {
            self.lock_restored_singleton(key, id);
        }
    }

    fn join_local_inner(&mut self, key: ConflictKey, member: Member) {
        // Only a set no longer held asks the archive (the engine's store knows a winner as soon
        // as it is final, while the set still decides here).
        let forgotten = match self.conflicts.sets.get_mut(&key) {
            Some(set) => {
                // A newcomer: a lock kept out of the store while the set had one member is
                // written now, in this turn's batch with the newcomer (persist before send).
                let new = set.index(&member.id).is_none() && !set.overflow.iter().any(|m| m.id == member.id);
                if new && set.lock_unpersisted {
                    set.lock_unpersisted = false;
                    let lock = set.quorum_lock;
                    debug_assert!(lock.is_some(), "an unpersisted lock is a lock");
                    self.persist_lock(key, lock);
                }
                None
            }
            None => self.dag.forgotten.key_winner(&key),
        };
        if let Some(winner) = forgotten {
            // The set was decided long ago and forgotten: a late spend of its key loses.
            if member.id != winner {
                if member.owner == self.shard {
                    self.reject(member.id, false);
                } else {
                    self.broadcast_preference(key, winner, true, &[member.owner]);
                }
            }
            return;
        }
        // Exposure pins a preference only where safety rests on quorum intersection (see below).
        let pin = self.whole_network();
        let set = self.conflicts.sets.entry(key).or_default();
        if set.index(&member.id).is_some() {
            return;
        }
        // Rejected members count no more: they can never be preferred again, and an honest
        // creator re-issues a rejected vertex's innocent transactions in a new one (`batch`).
        if set.members.iter().filter(|m| m.creator == member.creator && !m.rejected).count() >= CREATOR_MEMBERS_MAX {
            // An equivocator's third vertex on one key: aside, not a member (see
            // `CREATOR_MEMBERS_MAX`). Its creator is convicted already.
            if set.overflow.iter().any(|m| m.id == member.id) {
                return;
            }
            if set.decided.is_none() {
                if let Some(j) = Self::swap_in_lower(set, &member, pin) {
                    // Which of an equivocator's vertices a node tracks is its lowest ids, not
                    // the first to arrive: the attacker orders arrivals, so first-come members
                    // gave every honest node a different pair of a 72-vertex spam, each node
                    // voted for its own, and no member ever reached a quorum (`sim-faults`
                    // seeds 279, 3484: set-spam at N = 7 and 10).
                    let demoted = std::mem::replace(&mut set.members[j], Member { equivocal: true, ..member.clone() });
                    set.overflow.push(demoted);
                    debug_assert!(set.members.iter().filter(|m| m.creator == member.creator && !m.rejected).count() <= CREATOR_MEMBERS_MAX, "a swap keeps the per-creator cap");
                    if set.last_winner == j {
                        set.streak = 0;
                    }
                    let before = set.pref;
                    let inc = &set.members[set.pref];
                    if set.quorum_lock.is_none() && (j == set.pref || inc.rejected || !inc.exposed || !pin) {
                        set.pref = (0..set.members.len()).fold(set.pref, |b, i| if ConflictSet::better(&set.members[i], &set.members[b]) { i } else { b });
                    }
                    let (pref, changed, owners) = (set.preferred(), set.pref != before || j == before, set.owners());
                    if member.owner == self.shard {
                        if let Some(r) = self.dag.vertices.get_mut(&member.id) {
                            r.in_conflict = true;
                        }
                    }
                    if changed {
                        self.bump_epoch();
                        self.broadcast_preference(key, pref, false, &owners);
                    }
                    return;
                }
            }
            let decided = set.decided;
            set.overflow.push(member.clone());
            if member.owner == self.shard {
                if let Some(r) = self.dag.vertices.get_mut(&member.id) {
                    r.in_conflict = true;
                }
                if decided.is_some_and(|w| w != member.id) {
                    self.reject(member.id, false);
                }
            } else if let Some(w) = decided {
                // Its owner learns the decision now: no later one will come.
                self.broadcast_preference(key, w, true, &[member.owner]);
            }
            return;
        }
        let equivocator = set.members.iter().find(|m| m.creator == member.creator && m.owner == self.shard && member.owner == self.shard).map(|m| m.id);
        let decided = set.decided;
        let twice = set.members.iter().any(|m| m.creator == member.creator);
        set.members.push(member.clone());
        if twice {
            for m in set.members.iter_mut().filter(|m| m.creator == member.creator) {
                m.equivocal = true;
            }
        }
        let idx = set.members.len() - 1;
        let newly_contested = set.members.len() == 2 && decided.is_none();
        let mut changed = false;
        if set.members.len() == 1 {
            set.pref = 0;
            set.last_winner = 0;
        } else if decided.is_none() {
            // While the incumbent is private (or rejected) the preference follows the order of
            // `better` (the newcomer, or another member when the incumbent's creator just
            // turned out to equivocate). Once exposed it moves only on Snowball counts: peers
            // counted this node's Yes toward the incumbent's quorum, and an honest node that
            // switched without Snowball evidence could sit in the intersection of two quorums
            // for conflicting vertices (found by `sim-faults` seed 278: a node finalized A with
            // four peers' Yes; B, with a lower id, then reached those four, took their
            // preference by the tie-break, and was finalized by them). In Avalanche mode (a
            // random sample of k < N-1 peers) the pin is not applied: there, an equivocator that
            // gives each half of the network a different member first left every honest node
            // pinned to its half's member, no member reached alpha = 0.75k, and the vertices
            // built on them never finalized (`sim-soak`, N = 30, equivocate); the id tie-break
            // makes the honest nodes agree as soon as both members reached them.
            let inc = &set.members[set.pref];
            let best = if set.quorum_lock.is_some() {
                // Locked: only the release threshold moves it (`set_success`).
                set.pref
            } else if inc.rejected || !inc.exposed || !pin {
                (0..set.members.len()).fold(set.pref, |b, j| if ConflictSet::better(&set.members[j], &set.members[b]) { j } else { b })
            } else if set.members[idx].count > inc.count {
                idx
            } else {
                set.pref
            };
            if best != set.pref {
                set.pref = best;
                changed = true;
            }
        }
        let pref = set.preferred();
        let multi = set.members.len() > 1;
        let owners = set.owners();
        let member_ids: Vec<VertexId> = set.members.iter().filter(|m| m.owner == self.shard).map(|m| m.id).collect();
        if multi {
            for id in member_ids {
                if let Some(r) = self.dag.vertices.get_mut(&id) {
                    r.in_conflict = true;
                }
            }
        }
        if newly_contested {
            self.conflicts.contested += 1;
            self.conflicts.last_contest_us = Some(self.now);
        }
        // A newly contested set also changes `Rec::contested` of its members' descendants,
        // cached with the strong preference.
        if changed || newly_contested {
            self.bump_epoch();
        }
        if let Some(w) = decided {
            if w != member.id && member.owner == self.shard {
                self.reject(member.id, false);
            }
        }
        // Tell remote members' owners the (possibly new) preference.
        self.broadcast_preference(key, pref, decided.is_some(), &owners);
        if let Some(a) = equivocator {
            self.equivocation(a, member.id);
        }
    }

    /// The member of `newcomer`'s creator that `newcomer` replaces, if any: the highest id of
    /// that creator's members above `newcomer`'s, among those no vote has touched (no Snowball
    /// count, and not exposed where exposure pins the preference). So every node that has seen
    /// the same vertices of an equivocator tracks the same ones, whatever their arrival order.
    fn swap_in_lower(set: &ConflictSet, newcomer: &Member, pin: bool) -> Option<usize> {
        (0..set.members.len())
            .filter(|&j| {
                let m = &set.members[j];
                m.creator == newcomer.creator && !m.rejected && m.count == 0 && !(pin && m.exposed) && m.id > newcomer.id && set.lock != Some(m.id) && set.quorum_lock != Some(m.id)
            })
            .max_by_key(|&j| set.members[j].id)
    }

    /// Tells the other owner shards of the set of `key` its preference (or decision). A node
    /// must never vote Yes on two members of one set at once: the quorum locks' safety argument
    /// (`locks`) rests on it. Its shards vote from their own view of the set (a remote set's
    /// `preferred`), which lags the owner's by a mesh hop, so a move away from a member owned
    /// by another shard is made in two steps: that shard is told first and acknowledges
    /// (`ShardMsg::PreferenceAck`), and only then may the new preference be voted for, here
    /// (`preferred_everywhere`) or by its owner, told then. Seen on 4 nodes of 2 shards with
    /// a crash and 5 % conflicts: honest nodes quorum-locked on both members of a set (2:2),
    /// and the set could never be decided.
    pub(crate) fn broadcast_preference(&mut self, key: ConflictKey, preferred: VertexId, decided: bool, owners: &[u32]) {
        let me = self.shard;
        let Some(set) = self.conflicts.sets.get_mut(&key) else {
            // A decided set already forgotten (its winner archived): a late member's owner
            // learns the decision.
            let mut sent = 0u64;
            for &o in owners {
                if o != me && sent & (1 << o) == 0 {
                    sent |= 1 << o;
                    self.push(Action::ToShard { shard: o, msg: ShardMsg::Preference { key, preferred, decided, locked: false, lock_round: 0, ack: false } });
                }
            }
            return;
        };
        let round = self.rounds.current;
        let locked = set.quorum_lock == Some(preferred);
        let lock_round = set.lock_round;
        // A restored lock whose member has not joined yet: the other shards must not vote for
        // any other member meanwhile (`Conflicts::restored_locks`).
        let preferred = self.conflicts.restored_locks.get(&key).copied().filter(|_| !decided).unwrap_or(preferred);
        // Lock rounds: a changed preference is not voted for in the round it changed in (no
        // stamp for the first one: nothing was voted before it).
        if !decided && set.announced.is_some_and(|a| a != preferred) {
            set.switched_round = Some(round);
        }
        let pref_owner = set.owner_of(&preferred);
        // The shard that may be voting Yes on the member last announced, if that is no longer
        // the preference (a shard owning both moves from one to the other atomically).
        let revoke = set.announced.filter(|a| *a != preferred && !decided).and_then(|a| set.owner_of(&a)).filter(|&o| o != me && Some(o) != pref_owner);
        let mut msgs = Vec::new();
        let mut sent = 0u64;
        for o in owners.iter().copied().chain(revoke) {
            if o == me || sent & (1 << o) != 0 {
                continue;
            }
            sent |= 1 << o;
            let ack = revoke == Some(o);
            if !decided && Some(o) == pref_owner && (set.acks_due > 0 || revoke.is_some()) {
                set.held = true;
                continue;
            }
            if Some(o) == pref_owner {
                set.held = false;
            }
            set.acks_due += u32::from(ack);
            msgs.push((o, ShardMsg::Preference { key, preferred, decided, locked, lock_round, ack }));
        }
        if decided {
            set.held = false;
        }
        set.announced = Some(preferred);
        debug_assert!(!set.held || set.acks_due > 0, "a held preference waits for acks");
        for (shard, msg) in msgs {
            self.push(Action::ToShard { shard, msg });
        }
    }

    /// An owner shard acknowledged a revocation of the set of `key`: once none is out,
    /// the preference may be voted for here, and its owner is told it if it was held.
    pub(crate) fn preference_acked(&mut self, key: ConflictKey) {
        let me = self.shard;
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        set.acks_due = set.acks_due.saturating_sub(1);
        if set.acks_due > 0 {
            return;
        }
        let held = std::mem::take(&mut set.held);
        if held && set.decided.is_none() {
            if let Some(preferred) = set.announced {
                let locked = set.quorum_lock == Some(preferred);
                let lock_round = set.lock_round;
                if let Some(o) = set.owner_of(&preferred).filter(|&o| o != me) {
                    self.push(Action::ToShard { shard: o, msg: ShardMsg::Preference { key, preferred, decided: false, locked, lock_round, ack: false } });
                }
            }
        }
        self.bump_epoch();
    }

    pub(crate) fn decide(&mut self, key: ConflictKey, winner: VertexId, quiet: bool) {
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        debug_assert!(set.decided.is_none_or(|w| w == winner), "a conflict set is decided once");
        if set.decided.is_some() {
            return;
        }
        if set.members.len() >= 2 {
            self.conflicts.contested = self.conflicts.contested.saturating_sub(1);
        }
        set.decided = Some(winner);
        set.lock = None;
        self.conflicts.restored_locks.remove(&key);
        self.conflicts.restored_lock_rounds.remove(&key);
        let had_lock = set.quorum_lock.take().is_some();
        let lock_in_store = had_lock && !std::mem::take(&mut set.lock_unpersisted);
        if let Some(i) = set.index(&winner) {
            set.pref = i;
        }
        let losers: Vec<(VertexId, u32)> = set.members.iter().chain(set.overflow.iter()).filter(|m| m.id != winner).map(|m| (m.id, m.owner)).collect();
        let owners = set.owners();
        if owners.iter().any(|&o| o != self.shard) {
            self.conflicts.cross_decided.push_back((self.now, key));
        }
        let local = owners.iter().all(|&o| o == self.shard);
        let uncontested = losers.is_empty() && local;
        // Every loser was rejected before the decision (the usual case: a re-issued innocent
        // transaction wins the set its rejected first vertex left): nothing is left to decide
        // or reject, so the set goes now, as an uncontested one does, instead of staying
        // until its winner's record is forgotten (`forget_old_finals`). Under 5 % double
        // spends in batches of ~180 these were most of a node's ~60 000 sets.
        let settled = !uncontested && local && losers.iter().all(|(l, _)| self.dag.status(l) == Some(VertexStatus::Rejected));
        // The release of an uncontested set's lock is not written: the winner is this shard's,
        // final in this very batch with its key's winner record, and a restart drops a stored
        // lock whose key has a winner (`apply_restored_lock`); retention deletes the record with
        // the vertex. A contested set's release is written (its winner may be another
        // shard's, durable in another store).
        if lock_in_store && !quiet && !uncontested {
            self.persist_lock(key, None);
        }
        self.broadcast_preference(key, winner, true, &owners);
        for (l, owner) in losers {
            if owner == self.shard {
                self.reject(l, quiet);
            }
        }
        if uncontested || settled {
            // Nothing else ever spent the key here: the set has done its job, and its winner is
            // all a later spend needs (`join_local` asks `forgotten`). Kept until the winner's
            // record was forgotten (30 s in the engine), every key of every batched vertex held
            // a set of ~250 B plus its member list: 150 000 sets at 5 000 payloads/s, a table
            // whose lookups missed the cache in every poll round and whose growth re-hashed
            // tens of MB (15 % of a shard's CPU at 5 000 payloads/s on 4 nodes).
            self.conflicts.sets.remove(&key);
            self.dag.forgotten.insert_key(key, winner, self.now);
        }
    }

    /// This node voted Yes on `id` (a member of the local set of `key`) or on a descendant.
    pub(crate) fn member_exposed(&mut self, key: ConflictKey, id: VertexId) {
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        if let Some(m) = set.members.iter_mut().chain(set.overflow.iter_mut()).find(|m| m.id == id) {
            m.exposed = true;
        }
    }

    /// A rejected member leaves the race: if it was the preference, the best live member takes
    /// over (otherwise the set would prefer a vertex that can never win, and stall).
    pub(crate) fn member_rejected(&mut self, key: ConflictKey, id: VertexId) {
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        let Some(i) = set.index(&id) else { return };
        set.members[i].rejected = true;
        // A locked member that is rejected can never be final anywhere (it descends from the
        // loser of a decided set): the lock protects nothing and would block the set.
        let released = set.decided.is_none() && set.quorum_lock == Some(id);
        if released {
            set.quorum_lock = None;
            if !std::mem::take(&mut set.lock_unpersisted) {
                self.persist_lock(key, None);
            }
        }
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        if set.decided.is_some() {
            return;
        }
        let creator = set.members[i].creator;
        set.readmit_set_aside(creator);
        // A live preference stays (it may be the quorum lock); a rejected one moves, to a
        // readmitted vertex too.
        if set.pref != i && !set.members[set.pref].rejected {
            return;
        }
        let mut best = set.pref;
        for j in 0..set.members.len() {
            if ConflictSet::better(&set.members[j], &set.members[best]) {
                best = j;
            }
        }
        if best != set.pref {
            set.pref = best;
            let pref = set.preferred();
            let owners = set.owners();
            self.broadcast_preference(key, pref, false, &owners);
            self.bump_epoch();
        }
    }
}
