//! Cross-shard facts and protocol (S > 1): statuses of parents owned by other shards, the
//! preferences of remote conflict sets, watchers of local vertices, and the `ShardMsg`
//! handlers (watch/status, join/success/preference, claim/release/decide). Owns
//! [`CrossShard`]; calls `votes`, `conflicts`, `snowball`, `finality`, `pending` and `sync`.

use std::collections::VecDeque;

use pqdag_wire::{ConflictKey, VertexId};

use crate::conflicts::Member;
use crate::core::Core;
use crate::id_hash::HashMap;
use crate::types::{Action, ShardMsg, Signer, VertexStatus, shard_of_key};

/// Vertices with cross-shard watchers.
pub const WATCHED_MAX: usize = 65_536;
/// Least time between two re-checks of every watched vertex's strong preference after
/// preference changes. Each re-check walks the processing ancestry of all watched vertices;
/// run on every change (one or two per decided key) it grew with load times backlog: a
/// restarted two-shard node with ~700 vertices processing spent a whole core on it and fell
/// further behind (debug build, 150 payloads/s). Coalesced, the other shard learns a flip at
/// most this much later, well under one query round trip.
pub(crate) const WATCH_SCAN_EVERY_US: u64 = 5_000;

/// What this shard knows of a parent owned by another shard.
#[derive(Debug, Default)]
pub(crate) struct RemoteParent {
    pub(crate) status: Option<VertexStatus>,
    pub(crate) strong: bool,
    /// It or a processing ancestor is in a contested set at its owner (`Rec::contested`).
    pub(crate) contested: bool,
    pub(crate) children: crate::dag::Children,
    pub(crate) watched: bool,
    /// Its owner was told this node voted Yes on a descendant (`ShardMsg::Exposed`).
    pub(crate) exposed: bool,
}

/// What this shard knows of a conflict set owned by another shard.
#[derive(Debug, Default)]
pub(crate) struct RemoteSet {
    pub(crate) preferred: Option<VertexId>,
    pub(crate) decided: bool,
    /// The owner is quorum-locked on `preferred` (`locks`).
    pub(crate) locked: bool,
    /// The owner's lock round, when locked (`lock_rounds`).
    pub(crate) lock_round: u64,
    /// The round in which `preferred` last changed here: no Yes on it in that round.
    pub(crate) switched_round: Option<u64>,
    pub(crate) mine: Vec<VertexId>,
}

/// A remote fact that became decided, queued to be forgotten (`Core::forget_remote_facts`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RemoteFact {
    Parent(VertexId),
    Set(ConflictKey),
}

/// Remote facts and local watchers.
#[derive(Default)]
pub(crate) struct CrossShard {
    pub(crate) remote_parents: HashMap<VertexId, RemoteParent>,
    pub(crate) remote_sets: HashMap<ConflictKey, RemoteSet>,
    /// Decided remote facts, oldest first, with the time they became decided.
    pub(crate) decided: VecDeque<(u64, RemoteFact)>,
    /// Local vertex -> (mask of subscribed shards, last strong preference and `contested` sent).
    pub(crate) watchers: HashMap<VertexId, (u64, bool, bool)>,
    /// A preference changed since the watched vertices were last re-checked.
    pub(crate) scan_due: bool,
    /// Earliest time of the next re-check ([`WATCH_SCAN_EVERY_US`] after the last).
    pub(crate) next_scan_at: u64,
}

impl<S: Signer> Core<S> {
    pub(crate) fn notify_watchers(&mut self, id: VertexId) {
        if self.shard_count == 1 {
            return;
        }
        let Some(&(mask, _, _)) = self.cross.watchers.get(&id) else { return };
        let status = match self.dag.vertices.get(&id) {
            Some(r) => r.status,
            None => return,
        };
        let strong = self.strongly_preferred(&id);
        let contested = status == VertexStatus::Processing && self.dag.vertices.get(&id).is_some_and(|r| r.contested);
        for s in 0..self.shard_count {
            if mask & (1u64 << s) != 0 {
                self.push(Action::ToShard { shard: s, msg: ShardMsg::Status { id, status, strong, contested } });
            }
        }
        if status == VertexStatus::Processing {
            if let Some(w) = self.cross.watchers.get_mut(&id) {
                w.1 = strong;
                w.2 = contested;
            }
        } else {
            self.cross.watchers.remove(&id);
        }
    }

    /// After a preference change, watchers of processing vertices learn strong-preference flips
    /// (called from `tick`, at most every [`WATCH_SCAN_EVERY_US`]).
    pub(crate) fn scan_watchers(&mut self, now: u64) {
        if !self.cross.scan_due || now < self.cross.next_scan_at {
            return;
        }
        self.cross.scan_due = false;
        self.cross.next_scan_at = now + WATCH_SCAN_EVERY_US;
        if self.shard_count == 1 || self.cross.watchers.is_empty() {
            return;
        }
        let ids: Vec<(VertexId, bool, bool)> = self.cross.watchers.iter().map(|(k, v)| (*k, v.1, v.2)).collect();
        for (id, last, last_contested) in ids {
            if self.dag.vertices.get(&id).is_some_and(|r| r.status == VertexStatus::Processing)
                && (self.strongly_preferred(&id) != last || self.dag.vertices.get(&id).is_some_and(|r| r.contested != last_contested))
            {
                self.notify_watchers(id);
            }
        }
    }

    pub(crate) fn on_shard_msg(&mut self, now: u64, msg: ShardMsg) {
        match msg {
            ShardMsg::Watch { id, subscriber, hint } => {
                if subscriber >= self.shard_count || (self.cross.watchers.len() >= WATCHED_MAX && !self.cross.watchers.contains_key(&id)) {
                    return;
                }
                if !self.dag.vertices.contains_key(&id) {
                    if let Some(status) = self.dag.forgotten.status(&id) {
                        self.push(Action::ToShard { shard: subscriber, msg: ShardMsg::Status { id, status, strong: status == VertexStatus::Final, contested: false } });
                        return;
                    }
                }
                self.cross.watchers.entry(id).or_insert((0, false, false)).0 |= 1u64 << subscriber;
                if self.dag.vertices.contains_key(&id) {
                    self.notify_watchers(id);
                } else {
                    self.request_missing(now, hint, &[id]);
                }
            }
            ShardMsg::Status { id, status, strong, contested } => {
                let e = self.cross.remote_parents.entry(id).or_default();
                let first = e.status.is_none();
                let prev = (e.status, e.strong);
                e.status = Some(status);
                e.strong = strong;
                e.contested = contested;
                // Only a rejection walks the children: no copy of the list on every status.
                let children = if status == VertexStatus::Rejected { e.children.clone() } else { crate::dag::Children::new() };
                if status != VertexStatus::Processing && prev.0 != Some(status) {
                    self.cross.decided.push_back((now, RemoteFact::Parent(id)));
                }
                // The strong-preference test reads a remote parent only as "final, or processing
                // and strongly preferred" (`strongly_preferred`): a change that keeps that answer
                // (processing and strong -> final) leaves every cached strong preference valid,
                // and so does a first status: a vertex enters the DAG only once its parents'
                // statuses are known (`insert`), and an entry is forgotten only when none of its
                // children here is processing (`forget_remote_facts`), so no processing vertex
                // has this parent yet. Bumping on those re-walked every watched vertex on every
                // cross-shard parent (25 % of a 1000-node, 4-shard simulation).
                let good = |s: Option<VertexStatus>, strong: bool| s == Some(VertexStatus::Final) || (s == Some(VertexStatus::Processing) && strong);
                if prev.0.is_some() && good(prev.0, prev.1) != good(Some(status), strong) {
                    self.bump_epoch();
                }
                if status == VertexStatus::Rejected {
                    for c in children {
                        self.reject(c, false);
                    }
                }
                if first {
                    self.release_waiting(now, id);
                }
            }
            ShardMsg::Build { txs, tags, timestamp_ms } => self.build(now, txs, tags, timestamp_ms),
            ShardMsg::Adopt { vertex, tags } => {
                let vertex = self.sign_adopted(vertex);
                self.adopt(now, vertex, tags)
            }
            ShardMsg::Join { key, member, creator, owner } => {
                let m = Member { id: member, count: 0, confidence: 0.0, creator, owner, rejected: false, exposed: false, equivocal: false, locked_peers: 0 };
                self.join_local(key, m);
            }
            ShardMsg::Success { key, member, confidence, snowball, peer_yes, quorum, peer_locked, quorum_round, claim_round } => {
                self.set_success(key, crate::credit::Tally { id: member, confidence, snowball, peer_yes, quorum, peer_locked, quorum_round, claim_round });
            }
            ShardMsg::Preference { key, preferred, decided, locked, lock_round, ack } => {
                if ack {
                    // FIFO per channel: the ack follows whatever this shard sent before it.
                    let owner = shard_of_key(&key, self.shard_count);
                    self.push(Action::ToShard { shard: owner, msg: ShardMsg::PreferenceAck { key } });
                }
                let round = self.rounds.current;
                let rs = self.cross.remote_sets.entry(key).or_default();
                let changed = rs.preferred != Some(preferred) || rs.locked != locked;
                let newly_decided = decided && !rs.decided;
                // Lock rounds: this shard's Yes on the new preference waits for the next round
                // (the owner announced the change after revoking the old member's shard).
                if !decided && rs.preferred.is_some_and(|p| p != preferred) {
                    rs.switched_round = Some(round);
                }
                rs.preferred = Some(preferred);
                rs.locked = locked;
                rs.lock_round = lock_round;
                rs.decided |= decided;
                let mine = rs.mine.clone();
                if newly_decided {
                    self.cross.decided.push_back((now, RemoteFact::Set(key)));
                }
                if changed {
                    self.bump_epoch();
                }
                if decided {
                    for m in mine {
                        if m != preferred {
                            self.reject(m, false);
                        }
                    }
                }
            }
            ShardMsg::Claim { key, member, owner } => {
                let granted = match self.conflicts.sets.get_mut(&key) {
                    Some(set) if set.decided.is_none() && set.preferred() == member && set.lock.is_none_or(|l| l == member) => {
                        set.lock = Some(member);
                        true
                    }
                    _ => false,
                };
                if granted {
                    self.bump_epoch();
                }
                self.push(Action::ToShard { shard: owner, msg: ShardMsg::ClaimReply { key, member, granted } });
            }
            ShardMsg::ClaimReply { key, member, granted } => {
                let Some(r) = self.dag.vertices.get_mut(&member) else { return };
                if r.claiming == 0 {
                    return;
                }
                r.claiming -= 1;
                if granted {
                    r.claim_granted.push(key);
                } else {
                    r.successes = 0; // try again after new rounds
                }
                if r.claiming == 0 {
                    let total = r.v.conflict_keys.iter().filter(|k| shard_of_key(k, self.shard_count) != self.shard).count();
                    let granted_keys = std::mem::take(&mut r.claim_granted);
                    let all = granted_keys.len() == total && r.status == VertexStatus::Processing;
                    let parents_ok = all && r.v.clone().parents.iter().all(|p| self.parent_state(p) == Some(VertexStatus::Final));
                    if parents_ok {
                        self.finalize(now, member, false);
                        for key in granted_keys {
                            let owner = shard_of_key(&key, self.shard_count);
                            self.push(Action::ToShard { shard: owner, msg: ShardMsg::Decide { key, winner: member } });
                        }
                    } else {
                        for key in granted_keys {
                            let owner = shard_of_key(&key, self.shard_count);
                            self.push(Action::ToShard { shard: owner, msg: ShardMsg::Release { key, member } });
                        }
                    }
                }
            }
            ShardMsg::Release { key, member } => {
                if let Some(set) = self.conflicts.sets.get_mut(&key) {
                    if set.lock == Some(member) {
                        set.lock = None;
                        self.bump_epoch();
                    }
                }
            }
            ShardMsg::PreferenceAck { key } => self.preference_acked(key),
            ShardMsg::Decide { key, winner } => self.decide(key, winner, false),
            ShardMsg::MemberRejected { key, member } => self.member_rejected(key, member),
            ShardMsg::Exposed { id } => self.expose(id),
            ShardMsg::MemberExposed { key, member } => self.member_exposed(key, member),
            ShardMsg::PollIds { shard, ids } => self.on_poll_ids(shard, ids),
            ShardMsg::PollClosed(part) => self.close_part(now, *part),
            ShardMsg::VoteRequest { gather, reply, requester, ids } => self.on_vote_request(now, gather, reply, requester, ids),
            ShardMsg::Votes { gather, shard, votes, ages, round } => self.on_votes(gather, shard, votes, ages, round),
            ShardMsg::PollContradicted { peer } => {
                if let Some(&pi) = self.peers.index.get(&peer) {
                    self.incident(now, pi, crate::peers::Misbehaviour::ConflictingVotes, None);
                }
            }
        }
    }

    /// Forgets decided remote facts `forget_final_after_us` after their decision (the memory
    /// bound of S > 1: before, every remote parent and remote set stayed for ever, one entry per
    /// cross-shard parent and key). A remote parent goes once none of its children here is
    /// processing, a remote set once none of this shard's members is. A later child or member
    /// asks the owner again (`Watch`, `Join`), which answers from its records or its archive.
    pub(crate) fn forget_remote_facts(&mut self, now: u64) {
        let after = self.params.forget_final_after_us;
        if after == 0 {
            return;
        }
        let mut requeue = Vec::new();
        while let Some(&(at, fact)) = self.cross.decided.front() {
            if at.saturating_add(after) > now {
                break;
            }
            self.cross.decided.pop_front();
            let dag = &self.dag;
            let processing = |id: &VertexId| dag.vertices.get(id).is_some_and(|r| r.status == VertexStatus::Processing);
            match fact {
                RemoteFact::Parent(id) => {
                    let Some(e) = self.cross.remote_parents.get(&id) else { continue };
                    debug_assert!(e.status.is_some_and(|s| s != VertexStatus::Processing), "only decided remote parents are queued");
                    if e.children.iter().any(processing) {
                        requeue.push((now, fact));
                    } else {
                        self.cross.remote_parents.remove(&id);
                    }
                }
                RemoteFact::Set(key) => {
                    let Some(s) = self.cross.remote_sets.get(&key) else { continue };
                    debug_assert!(s.decided, "only decided remote sets are queued");
                    if s.mine.iter().any(processing) {
                        requeue.push((now, fact));
                    } else {
                        self.cross.remote_sets.remove(&key);
                    }
                }
            }
        }
        self.cross.decided.extend(requeue);
    }

    /// (remote parents, remote sets) held: the cross-shard facts (metrics; S > 1 only).
    pub fn remote_fact_counts(&self) -> (usize, usize) {
        (self.cross.remote_parents.len(), self.cross.remote_sets.len())
    }
}
