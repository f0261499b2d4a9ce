//! Votes (3.4.3): the strong-preference test, its per-epoch cache (`Rec::strong_epoch`), and
//! answering queries. Owns [`Votes`] (the preference epoch); reads `dag`, `conflicts` and
//! `cross_shard`; `on_query` calls `sync` for unknown ids.

use pqdag_crypto::Domain;
use pqdag_wire::{ConflictKey, NodeId, Query, Response, Vertex, VertexId, Vote};
use pqdag_wire::limits::QUERY_IDS_MAX;

use crate::core::Core;
use crate::lock_rounds::AGE_UNKNOWN;
use crate::types::{Action, ShardMsg, Signer, VertexStatus, shard_of_key, shard_of_vertex};

/// The preference epoch: strong preferences cached in an older epoch are stale.
pub(crate) struct Votes {
    pub(crate) epoch: u64,
}

impl<S: Signer> Core<S> {
    /// Strongly preferred (3.4.3 adapted): not rejected, preferred in all its sets, and every
    /// non-final parent strongly preferred. Memoised per preference epoch, iterative.
    pub(crate) fn strongly_preferred(&mut self, id: &VertexId) -> bool {
        let epoch = self.votes.epoch;
        // Decided or cached for this epoch (most calls): one lookup, no walk.
        match self.dag.vertices.get(id) {
            None => return false,
            Some(r) => match r.status {
                VertexStatus::Final => return true,
                VertexStatus::Rejected => return false,
                VertexStatus::Processing if r.strong_epoch == epoch => return r.strong,
                VertexStatus::Processing => {}
            },
        }
        let mut stack: Vec<(VertexId, bool)> = vec![(*id, false)];
        let mut steps = 0usize;
        while let Some((x, expanded)) = stack.pop() {
            steps += 1;
            debug_assert!(steps <= 4 * (self.dag.vertices.len() + 8) * 9, "strong-preference walk over bound");
            let Some(r) = self.dag.vertices.get(&x) else { continue };
            match r.status {
                VertexStatus::Final | VertexStatus::Rejected => continue,
                VertexStatus::Processing => {}
            }
            if r.strong_epoch == epoch {
                continue;
            }
            if !expanded {
                stack.push((x, true));
                for p in &r.v.parents {
                    if let Some(pr) = self.dag.vertices.get(p) {
                        if pr.status == VertexStatus::Processing && pr.strong_epoch != epoch {
                            stack.push((*p, false));
                        }
                    }
                }
                continue;
            }
            let mut ok = self.preferred_everywhere(&r.v);
            // Lock rounds: whether a Yes on it may count toward a certificate of this round.
            let mut round_ok = !self.rounds_on() || self.round_open_everywhere(&r.v);
            if ok {
                for p in &r.v.parents {
                    let good = if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.dag.genesis.id {
                        match self.dag.vertices.get(p) {
                            Some(pr) => match pr.status {
                                VertexStatus::Final => true,
                                VertexStatus::Rejected => false,
                                VertexStatus::Processing => pr.strong,
                            },
                            None => self.dag.forgotten.contains(p),
                        }
                    } else {
                        self.cross.remote_parents.get(p).is_some_and(|rp| rp.status == Some(VertexStatus::Final) || (rp.status == Some(VertexStatus::Processing) && rp.strong))
                    };
                    if !good {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && round_ok {
                round_ok = r.v.parents.iter().all(|p| self.dag.vertices.get(p).is_none_or(|pr| pr.status != VertexStatus::Processing || pr.round_ok));
            }
            let contested = r.in_conflict
                || r.v.parents.iter().any(|p| {
                    if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.dag.genesis.id {
                        self.dag.vertices.get(p).is_some_and(|pr| pr.status == VertexStatus::Processing && pr.contested)
                    } else {
                        self.cross.remote_parents.get(p).is_some_and(|rp| rp.status == Some(VertexStatus::Processing) && rp.contested)
                    }
                });
            if let Some(r) = self.dag.vertices.get_mut(&x) {
                r.strong = ok;
                r.round_ok = round_ok;
                r.contested = contested;
                r.strong_epoch = epoch;
            }
        }
        self.dag.vertices.get(id).is_some_and(|r| match r.status {
            VertexStatus::Final => true,
            VertexStatus::Rejected => false,
            VertexStatus::Processing => r.strong,
        })
    }

    pub(crate) fn preferred_everywhere(&self, v: &Vertex) -> bool {
        v.conflict_keys.iter().all(|k| self.prefers_in_set(k, &v.id))
    }

    /// Lock rounds: whether this node's Yes on `v`, preferred in each of its sets, is of the
    /// current round in each (`lock_rounds`): the preference was announced, did not change in
    /// this round, and the node did not restart in it. Otherwise the Yes still counts for
    /// Snowball and confidence at the asker, but toward no certificate (an honest node says
    /// Yes to one member per set per round; abstaining with a No instead looked like a flip
    /// to the vote-contradiction detector of peers that never saw the rival).
    pub(crate) fn round_open_everywhere(&self, v: &Vertex) -> bool {
        v.conflict_keys.iter().all(|k| {
            if shard_of_key(k, self.shard_count) == self.shard {
                self.conflicts.sets.get(k).is_some_and(|s| s.decided.is_some() || (s.announced == Some(v.id) && self.round_open(s.switched_round)))
            } else {
                self.cross.remote_sets.get(k).is_some_and(|s| s.decided || self.round_open(s.switched_round))
            }
        })
    }

    /// Whether this shard, as it stands, takes `id` for the preference of the set of `key`
    /// (here, or as last told by the set's owner shard): one condition of a Yes on `id`. At
    /// most one member of a set passes it across the shards of a node (the simulator checks
    /// this after every step: `Core::undecided_sets`).
    pub fn prefers_in_set(&self, key: &ConflictKey, id: &VertexId) -> bool {
        if shard_of_key(key, self.shard_count) == self.shard {
            // `acks_due`: another shard may still vote Yes on the member revoked last
            // (`Core::broadcast_preference`).
            self.conflicts.sets.get(key).is_some_and(|s| s.preferred() == *id && s.lock.is_none_or(|l| l == *id) && (s.acks_due == 0 || s.decided.is_some()))
                && (self.conflicts.restored_locks.is_empty() || self.conflicts.restored_locks.get(key).is_none_or(|m| m == id))
        } else {
            self.cross.remote_sets.get(key).is_some_and(|s| s.preferred == Some(*id))
        }
    }

    /// The undecided sets this shard owns, each with its live members and their owner shards
    /// (the simulator's one-Yes-per-set check).
    pub fn undecided_sets(&self) -> Vec<(ConflictKey, Vec<(VertexId, u32)>)> {
        let mut out: Vec<(ConflictKey, Vec<(VertexId, u32)>)> = self
            .conflicts
            .sets
            .iter()
            .filter(|(_, s)| s.decided.is_none() && s.members.len() > 1)
            .map(|(k, s)| (*k, s.members.iter().filter(|m| !m.rejected).map(|m| (m.id, m.owner)).collect()))
            .collect();
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }

    /// `vote_for`'s fast path, Avalanche mode: a processing vertex whose strong preference is
    /// cached for `epoch` and that is already exposed (or not strong) needs one lookup and no
    /// change. Most polled ids are this case, and each lookup is a cache miss at scale.
    fn fast_vote(&self, id: &VertexId, epoch: u64) -> Option<Vote> {
        let r = self.dag.vertices.get(id)?;
        (r.status == VertexStatus::Processing && r.strong_epoch == epoch && (r.exposed || !r.strong)).then_some(if r.strong { Vote::Yes } else { Vote::No })
    }

    /// This node's vote on `id`, as sent in a response or counted in its own poll. A Yes on a
    /// processing vertex exposes it and its ancestors (see [`Self::expose`]).
    pub(crate) fn vote_for(&mut self, id: &VertexId) -> Vote {
        if !self.whole_network() {
            if let Some(v) = self.fast_vote(id, self.votes.epoch) {
                return v;
            }
        }
        let mut vote = self.compute_vote(id);
        if vote == Vote::Yes && self.whole_network() {
            // A Yes from a node locked on the vertex in each of its sets is a `LockedYes`, what
            // a conflicting vertex's finality needs; on a vertex final here (held or archived:
            // `compute_vote` says Yes on no other) it is a `Final` (`locks`).
            vote = match self.dag.vertices.get(id) {
                Some(r) if r.status == VertexStatus::Processing => {
                    if !r.v.conflict_keys.is_empty() && self.locked_on(&r.v) {
                        Vote::LockedYes
                    } else {
                        Vote::Yes
                    }
                }
                _ => Vote::Final,
            };
        }
        if vote.is_yes() && self.dag.vertices.get(id).is_some_and(|r| !r.exposed && r.status == VertexStatus::Processing) {
            self.expose(*id);
        }
        vote
    }

    /// Marks `id` and its processing ancestors exposed: this node said Yes on them, so peers
    /// counted it toward their quorums, and their preference in every conflict set may move
    /// only on Snowball evidence from now on, never on a tie-break when a newcomer joins (see
    /// `Member::exposed`). Each vertex is exposed once, so the walks cost O(1) per vertex
    /// amortised. Parents owned by other shards and sets owned by other shards are told with
    /// `ShardMsg::Exposed` and `ShardMsg::MemberExposed`.
    pub(crate) fn expose(&mut self, id: VertexId) {
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            let Some(r) = self.dag.vertices.get_mut(&x) else { continue };
            if r.exposed || r.status != VertexStatus::Processing {
                continue;
            }
            r.exposed = true;
            let v = r.v.clone();
            for key in &v.conflict_keys {
                let owner = shard_of_key(key, self.shard_count);
                if owner == self.shard {
                    self.member_exposed(*key, x);
                } else {
                    self.push(Action::ToShard { shard: owner, msg: ShardMsg::MemberExposed { key: *key, member: x } });
                }
            }
            for p in &v.parents {
                if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.dag.genesis.id {
                    stack.push(*p);
                } else if let Some(rp) = self.cross.remote_parents.get_mut(p) {
                    if !rp.exposed && rp.status == Some(VertexStatus::Processing) {
                        rp.exposed = true;
                        let owner = shard_of_vertex(p, self.shard_count);
                        self.push(Action::ToShard { shard: owner, msg: ShardMsg::Exposed { id: *p } });
                    }
                }
            }
        }
    }

    fn compute_vote(&mut self, id: &VertexId) -> Vote {
        let epoch = self.votes.epoch;
        match self.dag.vertices.get(id).map(|r| (r.status, r.strong_epoch == epoch, r.strong)) {
            // Cached for this preference epoch: one lookup.
            Some((VertexStatus::Processing, true, strong)) => if strong { Vote::Yes } else { Vote::No },
            // Window, then archive (the engine: a bloom-filtered store read, a miss for the
            // common unknown id): a node a minute behind still gets `Yes` on old finals.
            None => match self.dag.forgotten.status(id) {
                Some(VertexStatus::Final) => Vote::Yes,
                Some(VertexStatus::Rejected) => Vote::No,
                _ => Vote::Unknown,
            },
            Some((VertexStatus::Final, _, _)) => Vote::Yes,
            Some((VertexStatus::Rejected, _, _)) => Vote::No,
            Some((VertexStatus::Processing, _, _)) => {
                if self.strongly_preferred(id) {
                    Vote::Yes
                } else {
                    Vote::No
                }
            }
        }
    }

    pub(crate) fn on_query(&mut self, now: u64, from: NodeId, q: &Query, ids_digest: [u8; 32]) {
        if !self.peers.index.contains_key(&from) {
            return;
        }
        // Queries of excluded peers are still answered: an excluded honest peer (say, one that
        // restarted after a crash) must be able to catch up; only its votes are ignored.
        if q.ids.len() > QUERY_IDS_MAX {
            return;
        }
        if self.shard_count > 1 && q.ids.iter().any(|id| shard_of_vertex(id, self.shard_count) != self.shard) {
            // A node poll: the other shards vote on their ids (`node_polls`).
            self.gather_votes(now, from, q, ids_digest);
            return;
        }
        let (votes, ages) = self.votes_on(now, from, &q.ids);
        self.respond(from, q.query_id, ids_digest, votes, ages);
    }

    /// This shard's votes on `ids`, asked by `from`, and their lock ages (empty without lock
    /// rounds); unknown ids of this shard are fetched from it.
    pub(crate) fn votes_on(&mut self, now: u64, from: NodeId, ids: &[VertexId]) -> (Vec<u8>, Vec<u8>) {
        // First pass: `vote_for`'s fast path for every id, one lookup each and none depending
        // on another's result, so the CPU overlaps their cache misses (at 1000 nodes each
        // lookup is one). The second pass is `vote_for` for the rest, in order; an id whose
        // fast vote was taken keeps it only while the preference epoch it was read in holds
        // (a `vote_for` may move it), so the votes are exactly those of `vote_for` in order.
        let epoch = self.votes.epoch;
        let fast: Vec<Option<Vote>> = if self.whole_network() { vec![None; ids.len()] } else { ids.iter().map(|id| self.fast_vote(id, epoch)).collect() };
        let mut votes = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for (id, fast) in ids.iter().zip(fast) {
            let vote = match fast {
                Some(v) if self.votes.epoch == epoch => v,
                _ => self.vote_for(id),
            };
            if vote == Vote::Unknown && !self.pending.entries.contains_key(id) && shard_of_vertex(id, self.shard_count) == self.shard {
                self.flood.want(*id, Some(from), now); // needed unless `from` is its creator (`flood`)
                unknown.push(*id);
            }
            votes.push(vote as u8);
        }
        if !unknown.is_empty() {
            self.request_missing(now, from, &unknown);
        }
        let ages = if self.rounds_on() { self.lock_ages(ids, &votes) } else { Vec::new() };
        (votes, ages)
    }

    /// The age byte of each vote (`lock_rounds`): rounds since the lock of a `LockedYes`, 0
    /// for the others.
    fn lock_ages(&self, ids: &[VertexId], votes: &[u8]) -> Vec<u8> {
        ids.iter()
            .zip(votes)
            .map(|(id, &b)| match (Vote::from_u8(b), self.dag.vertices.get(id)) {
                // A Yes that certifies nothing this round (`round_open_everywhere`).
                (Some(Vote::Yes | Vote::LockedYes), Some(r)) if r.status == VertexStatus::Processing && !r.round_ok => AGE_UNKNOWN,
                (Some(Vote::LockedYes), Some(r)) => self.lock_age(&r.v),
                _ => 0,
            })
            .collect()
    }

    /// Signs and sends the answer to query `query_id` of `to`, with this node's current lock
    /// round.
    pub(crate) fn respond(&mut self, to: NodeId, query_id: u64, ids_digest: [u8; 32], votes: Vec<u8>, lock_ages: Vec<u8>) {
        self.respond_in(to, query_id, ids_digest, votes, lock_ages, self.rounds.current);
    }

    /// [`Self::respond`] for votes cast in lock round `round` (a gathered answer).
    pub(crate) fn respond_in(&mut self, to: NodeId, query_id: u64, ids_digest: [u8; 32], votes: Vec<u8>, lock_ages: Vec<u8>, round: u64) {
        let mut response = Response { query_id, responder: self.me, ids_digest, votes, round, lock_ages, signature: Vec::new() };
        response.signature = self.signer.sign(Domain::Response, &response.signed_bytes());
        self.push(Action::SendResponse { to, response });
    }

    /// Invalidates every cached strong preference (a preference, lock or remote fact changed).
    pub(crate) fn bump_epoch(&mut self) {
        self.votes.epoch += 1;
        self.cross.scan_due |= self.shard_count > 1;
    }
}
