//! One poll per node (several shards): each round costs one signed query per sampled peer and
//! one signed response back, whatever the number of shards (issue 17, "poll bytes": with a poll
//! per shard, 8 shards signed 8 queries and 8 responses per peer per round, and the signatures
//! were most of the bytes on the wire).
//!
//! The asking side: the shards take turns running the node's polls (each every S poll
//! intervals, staggered). Every shard offers the others its aged frontier when it changes
//! (`ShardMsg::PollIds`); the running shard asks about its own and the offered ids in one
//! query, counts the answers as for any poll (`polls`), and at the close hands each shard the
//! votes on its ids (`ShardMsg::PollClosed`), where that shard's credit, Snowball, lock and
//! finality rules run as before (`Core::close_part`). The answering side: the shard the query
//! reaches votes on its own ids, asks each other shard for its votes (`ShardMsg::VoteRequest`
//! / `ShardMsg::Votes`), and signs one response once every shard answered, or after a bound
//! with `Unknown` for the silent ones.
//!
//! A peer gains nothing here it had not: a query costs the shard it reaches what it cost
//! before (the per-peer query budget applies first), a gather is held at most
//! the gather wait, at most `GATHERS_PER_PEER_MAX` per peer and `GATHERS_MAX` in all, and
//! a vote is computed by the shard that owns the id, as before. With one shard nothing
//! changes. Owns [`PollPart`] and [`Gather`]; calls `polls` (`close_part`, `aged_frontier`)
//! and `votes` (`votes_on`, `respond`).

use pqdag_wire::limits::QUERY_IDS_MAX;
use pqdag_wire::{NodeId, Query, VertexId, Vote};

use crate::core::Core;
use crate::peers::Misbehaviour;
use crate::types::{shard_of_vertex, Action, ShardMsg, Signer};

/// Most queries a shard holds while the other shards vote, each answered within
/// the gather wait (5 bytes per id: at most ~20 KB each). Past it the oldest is answered with
/// what it has.
pub const GATHERS_MAX: usize = 1024;

/// Most of one peer's queries held at once (an honest peer has at most `polls_in_flight_max`
/// polls open, each asked at most twice; its query budget applies before): past it, that
/// peer's oldest is answered with what it has.
pub const GATHERS_PER_PEER_MAX: u32 = 32;

/// Longest a query waits for the other shards' votes, as a fraction of the query timeout
/// (1 / `GATHER_WAIT_DIVISOR`); then the missing ones are sent as `Unknown`, in time for the
/// asker's deadline. A shard's turn is a millisecond or two when idle, but a saturated node's
/// mesh round trip is a turn or two of hundreds of milliseconds: with a fixed 100 ms, 3 nodes x
/// 2 shards at 1 500 payloads/s answered most queries half `Unknown`, no round succeeded and the
/// cluster finalized 63 % of the load (p95 20.7 s; 100 % at p95 3.2 s with a poll per shard).
pub const GATHER_WAIT_DIVISOR: u64 = 2;

/// How long a shard polls on its own after one of its node polls was slow (half its sample
/// answered after a quarter of the query timeout): each slow node poll can fail a round of
/// every id it carried (a streak reset), so the node tries again only this much later.
pub const TOGETHER_BACKOFF_US: u64 = 5_000_000;

/// The votes of one closed node poll on one shard's ids: the per-id half of `Poll`.
#[derive(Debug, Clone)]
pub struct PollPart {
    /// The shard that ran the poll (its sample, its peer scores).
    pub(crate) runner: u32,
    pub(crate) ids: Vec<VertexId>,
    pub(crate) yes: Vec<u64>,
    pub(crate) no: Vec<u64>,
    pub(crate) locked: Vec<u64>,
    pub(crate) finals: Vec<u64>,
    /// Fresh `LockedYes` and `Final` per id, the poll's lock round, the Yes that certify per
    /// id, and peers' claimed lock rounds by id position (`lock_rounds`).
    pub(crate) fresh: Vec<u64>,
    pub(crate) round: u64,
    pub(crate) cert: Vec<u64>,
    pub(crate) claims: Vec<(u32, u64)>,
    /// Peer indices (the same on every shard of a node: the sorted roster without this node).
    pub(crate) sample: Vec<usize>,
    pub(crate) responded: u64,
    pub(crate) alpha: usize,
    pub(crate) own: bool,
    pub(crate) base_k: usize,
    /// Whether this node's own vote is already in the bit after the sample.
    pub(crate) own_counted: bool,
}

impl PollPart {
    /// Ids asked about (metrics and tests).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it asks about nothing.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn empty_like(&self, runner: u32) -> Self {
        PollPart { runner, ids: Vec::new(), yes: Vec::new(), no: Vec::new(), locked: Vec::new(), finals: Vec::new(), fresh: Vec::new(), round: self.round, cert: Vec::new(), claims: Vec::new(), sample: self.sample.clone(), responded: self.responded, alpha: self.alpha, own: self.own, base_k: self.base_k, own_counted: self.own_counted }
    }
}

/// A peer's query waiting for the other shards' votes.
#[derive(Debug)]
pub(crate) struct Gather {
    to: NodeId,
    query_id: u64,
    ids_digest: [u8; 32],
    votes: Vec<u8>,
    /// Lock ages of `votes` (empty without lock rounds).
    ages: Vec<u8>,
    /// The lock round the votes were cast in: another shard's votes of another round abstain
    /// from it (one response speaks for one round; `on_votes`).
    round: u64,
    /// Per shard, the positions of its ids in the query.
    positions: Vec<Vec<u32>>,
    /// Bit s: shard s has not answered.
    waiting: u64,
    deadline_us: u64,
}

impl<S: Signer> Core<S> {
    /// Whether the node polls as one (several shards).
    pub(crate) fn joint_polls(&self) -> bool {
        self.shard_count > 1
    }

    /// Whether this shard's polls ask for the whole node now: while its polls are answered
    /// promptly (the poll window is fully open, `Polls::adapt_window`) and no node poll of it
    /// was slow in the last `TOGETHER_BACKOFF_US`. A node poll's answer
    /// waits for a mesh round trip at the answering node, and a saturated node's mesh takes
    /// hundreds of milliseconds: always polling together, 3 nodes x 2 shards at 1 500
    /// payloads/s (twice what this VM sustains) timed out round after round and stalled with
    /// 12 000 payloads undecided, where a poll per shard finalized all of them (p95 3.2 s);
    /// in the simulator, mesh delays of up to 300 ms took p95 from 0.3 s to 8.9 s and 500 ms
    /// stalled it. Slow, each shard polls its own ids on its own again, as with one shard.
    pub(crate) fn polls_together(&self) -> bool {
        self.polls.window >= self.params.polls_in_flight_max && self.now >= self.polls.together_after
    }

    /// The ids of a node poll run by this shard: its own aged frontier, then each other
    /// shard's offer, at most `QUERY_IDS_MAX` in all.
    pub(crate) fn node_poll_ids(&self) -> Vec<VertexId> {
        let mut ids = self.polls.frontier.clone();
        for part in &self.polls.parts {
            let room = QUERY_IDS_MAX.saturating_sub(ids.len());
            ids.extend(part.iter().take(room).copied());
        }
        ids
    }

    /// Once per poll interval: this shard's aged frontier, offered to every other shard when it
    /// changed since the last offer and the shard polls together (`polls_together`); polling
    /// on its own, it withdraws its offer (an empty one).
    pub(crate) fn offer_poll_ids(&mut self, now: u64, together: bool) {
        if now < self.polls.next_offer_at || (self.dag.processing.is_empty() && self.polls.frontier.is_empty() && self.polls.offered.is_empty()) {
            return;
        }
        self.polls.next_offer_at = now + self.params.poll_interval_us;
        // The rotating window of `cap_polled_tips` turns with each offer, as with each poll.
        self.polls.next_query_seq += 1;
        self.polls.frontier = if self.dag.processing.is_empty() { Vec::new() } else { self.aged_frontier(now) };
        let offer = if together { self.polls.frontier.clone() } else { Vec::new() };
        if offer == self.polls.offered {
            return;
        }
        self.polls.offered = offer;
        for s in 0..self.shard_count {
            if s != self.shard {
                self.push(Action::ToShard { shard: s, msg: ShardMsg::PollIds { shard: self.shard, ids: self.polls.offered.clone() } });
            }
        }
    }

    /// Shard `from`'s offer replaces its previous one.
    pub(crate) fn on_poll_ids(&mut self, from: u32, ids: Vec<VertexId>) {
        if from == self.shard || from >= self.shard_count {
            return;
        }
        let n = self.shard_count as usize;
        if self.polls.parts.len() < n {
            self.polls.parts.resize(n, Vec::new());
        }
        self.polls.parts[from as usize] = ids;
    }

    /// Closing a node poll this shard ran: its own ids' votes close here, the others' go to
    /// their shards.
    pub(crate) fn split_poll(&mut self, now: u64, poll: PollPart) {
        let n = self.shard_count as usize;
        let mut parts: Vec<Option<PollPart>> = (0..n).map(|_| None).collect();
        // Where each id went: (shard, position there), for the claims.
        let mut moved: Vec<(usize, u32)> = Vec::with_capacity(poll.ids.len());
        for (i, id) in poll.ids.iter().enumerate() {
            let s = shard_of_vertex(id, self.shard_count) as usize;
            let p = parts[s].get_or_insert_with(|| poll.empty_like(self.shard));
            moved.push((s, p.ids.len() as u32));
            p.ids.push(*id);
            p.yes.push(poll.yes[i]);
            p.no.push(poll.no[i]);
            p.locked.push(poll.locked[i]);
            p.finals.push(poll.finals[i]);
            p.fresh.push(poll.fresh[i]);
            p.cert.push(poll.cert[i]);
        }
        for &(i, r) in &poll.claims {
            if let Some(&(s, j)) = moved.get(i as usize) {
                if let Some(p) = parts[s].as_mut() {
                    p.claims.push((j, r));
                }
            }
        }
        let mut mine = None;
        for (s, p) in parts.into_iter().enumerate() {
            let Some(p) = p else { continue };
            if s as u32 == self.shard {
                mine = Some(p);
            } else {
                self.push(Action::ToShard { shard: s as u32, msg: ShardMsg::PollClosed(Box::new(p)) });
            }
        }
        if let Some(p) = mine {
            self.close_part(now, p);
        }
    }

    /// A poll part showed peer `pi` contradicting settled votes: the incident is the shard's
    /// that ran the poll (it sampled the peer, and samples again).
    pub(crate) fn contradicted(&mut self, now: u64, pi: usize, runner: u32) {
        if runner != self.shard {
            let peer = self.peers.ids[pi];
            self.push(Action::ToShard { shard: runner, msg: ShardMsg::PollContradicted { peer } });
        } else {
            self.incident(now, pi, Misbehaviour::ConflictingVotes, None);
        }
    }

    /// A peer's query spans shards. Votes on this shard's ids now, asks the others, and
    /// answers when all have voted (`on_votes`) or at the gather wait (`expire_gathers`).
    pub(crate) fn gather_votes(&mut self, now: u64, from: NodeId, q: &Query, ids_digest: [u8; 32]) {
        if self.polls.gathers_by_peer.get(&from).is_some_and(|&c| c >= GATHERS_PER_PEER_MAX) {
            if let Some((&oldest, _)) = self.polls.gathers.iter().find(|(_, g)| g.to == from) {
                self.finish_gather(oldest);
            }
        }
        if self.polls.gathers.len() >= GATHERS_MAX {
            if let Some((&oldest, _)) = self.polls.gathers.iter().next() {
                self.finish_gather(oldest);
            }
        }
        let n = self.shard_count as usize;
        let mut positions: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, id) in q.ids.iter().enumerate() {
            positions[shard_of_vertex(id, self.shard_count) as usize].push(i as u32);
        }
        let gather = self.polls.next_gather;
        self.polls.next_gather += 1;
        let mut waiting = 0u64;
        for (s, pos) in positions.iter().enumerate() {
            if s as u32 == self.shard || pos.is_empty() {
                continue;
            }
            waiting |= 1u64 << s;
            let ids = pos.iter().map(|&i| q.ids[i as usize]).collect();
            self.push(Action::ToShard { shard: s as u32, msg: ShardMsg::VoteRequest { gather, reply: self.shard, requester: from, ids } });
        }
        let mut votes = vec![Vote::Unknown as u8; q.ids.len()];
        let rounds = self.rounds_on();
        let mut ages = if rounds { vec![0u8; q.ids.len()] } else { Vec::new() };
        let own: Vec<VertexId> = positions[self.shard as usize].iter().map(|&i| q.ids[i as usize]).collect();
        let (own_votes, own_ages) = self.votes_on(now, from, &own);
        for (j, (&i, v)) in positions[self.shard as usize].iter().zip(own_votes).enumerate() {
            votes[i as usize] = v;
            if rounds {
                ages[i as usize] = own_ages.get(j).copied().unwrap_or(0);
            }
        }
        debug_assert!(waiting != 0, "a query spanning shards waits for another shard");
        *self.polls.gathers_by_peer.entry(from).or_insert(0) += 1;
        let round = self.rounds.current;
        self.polls.gathers.insert(gather, Gather { to: from, query_id: q.query_id, ids_digest, votes, ages, round, positions, waiting, deadline_us: now + self.params.query_timeout_us / GATHER_WAIT_DIVISOR });
        debug_assert!(self.polls.gathers.len() <= GATHERS_MAX);
    }

    /// Another shard: votes on its ids of a peer's query gathered at shard `reply`.
    pub(crate) fn on_vote_request(&mut self, now: u64, gather: u64, reply: u32, requester: NodeId, ids: Vec<VertexId>) {
        if ids.len() > QUERY_IDS_MAX || reply >= self.shard_count {
            return;
        }
        let (votes, ages) = self.votes_on(now, requester, &ids);
        let round = self.rounds.current;
        self.push(Action::ToShard { shard: reply, msg: ShardMsg::Votes { gather, shard: self.shard, votes, ages, round } });
    }

    /// Shard `from`'s votes for gather `gather`, cast in lock round `round`.
    pub(crate) fn on_votes(&mut self, gather: u64, from: u32, votes: Vec<u8>, ages: Vec<u8>, round: u64) {
        let Some(g) = self.polls.gathers.get_mut(&gather) else { return };
        let Some(pos) = g.positions.get(from as usize) else { return };
        if g.waiting & (1u64 << from) == 0 || pos.len() != votes.len() {
            return;
        }
        // Votes of another lock round than the response's own abstain from it (lock age
        // `AGE_UNKNOWN`: counted for Snowball and confidence, certifying nothing): one response
        // speaks for one round. Sent as `Unknown` instead, they made a loaded node, whose mesh
        // hops cross a round's end often, look like one withholding its votes.
        let same = round == g.round;
        for (j, (&i, v)) in pos.iter().zip(votes).enumerate() {
            g.votes[i as usize] = v;
            if let Some(a) = g.ages.get_mut(i as usize) {
                *a = if same { ages.get(j).copied().unwrap_or(0) } else if Vote::from_u8(v).is_some_and(Vote::is_yes) { crate::lock_rounds::AGE_UNKNOWN } else { 0 };
            }
        }
        g.waiting &= !(1u64 << from);
        if g.waiting == 0 {
            self.finish_gather(gather);
        }
    }

    /// Signs and sends a gathered answer (missing votes stay `Unknown`).
    fn finish_gather(&mut self, gather: u64) {
        let Some(g) = self.polls.gathers.remove(&gather) else { return };
        if let Some(c) = self.polls.gathers_by_peer.get_mut(&g.to) {
            *c -= 1;
            if *c == 0 {
                self.polls.gathers_by_peer.remove(&g.to);
            }
        }
        self.respond_in(g.to, g.query_id, g.ids_digest, g.votes, g.ages, g.round);
    }

    /// Answers the gathers whose shards did not all vote in time.
    pub(crate) fn expire_gathers(&mut self, now: u64) {
        let due: Vec<u64> = self.polls.gathers.iter().take_while(|(_, g)| now >= g.deadline_us).map(|(&k, _)| k).collect();
        for k in due {
            self.finish_gather(k);
        }
    }

    /// When the first gather is due (deadlines grow with the gather number).
    pub(crate) fn next_gather_deadline(&self) -> Option<u64> {
        self.polls.gathers.values().next().map(|g| g.deadline_us)
    }
}
