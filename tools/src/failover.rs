//! `loadgen`'s bookkeeping of payloads across attempts (sans-IO: time is passed in).
//!
//! A payload (one `tag`) may be submitted up to `max_attempts` times, each time at a node: a
//! refusal other than a double spend (`NotReady`, `Overloaded`, `Internal`), a transport error,
//! no acknowledgement within `ack_timeout`, or an acknowledged vertex whose node died and that no
//! live node knows (`Unknown` for `ack_timeout`) sends the same payload and conflict keys again.
//! Payloads are counted once, by tag: the first final decision of any of its vertices makes it
//! final; every later decision of another attempt is a `duplicates_decided`. A payload is lost
//! when no vertex of it was decided (nor was it refused as a double spend) by the end.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use pqdag_core::IdHashMap as HashMap;
use pqdag_wire::{ConflictKey, VertexId};

/// Why a node refused a submission (its error reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A conflict key is spent by a vertex the node knows: definitive for a first attempt.
    Conflict,
    /// Overloaded: try another node after a short backoff.
    Overloaded,
    /// Not ready (starting, catching up), internal error, or anything else: try another node.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptState {
    /// Sent, no reply yet.
    InFlight,
    /// Acknowledged as this vertex, undecided.
    Acked(VertexId),
    /// Acknowledged, but its node went away and no live node knew the vertex: given up on
    /// (a late decision still counts).
    Abandoned(VertexId),
    /// Its vertex was decided.
    Decided,
    /// A definitive refusal that created nothing (`NotReady`, `Overloaded`...).
    Refused,
    /// A transport error or no reply at all: it may or may not have created a vertex.
    Failed,
    /// A retry refused as a conflict, most likely with an earlier attempt's vertex.
    OwnConflict,
}

#[derive(Debug, Clone)]
struct Attempt {
    node: usize,
    gen: u64,
    sent: Instant,
    state: AttemptState,
    /// No acknowledgement within `ack_timeout` (it may still come).
    timed_out: bool,
    /// Since when the live nodes answer `Unknown` for its vertex.
    unknown_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Final,
    Rejected,
    DoubleSpendRefused,
}

#[derive(Debug)]
struct Payload {
    payload: Vec<u8>,
    keys: Vec<ConflictKey>,
    /// A deliberate double spend of the load (`--conflict-ratio`).
    double_spend: bool,
    preferred: usize,
    first_sent: Option<Instant>,
    attempts: Vec<Attempt>,
    queued: bool,
    outcome: Outcome,
    /// Counted in `active` (see [`Payload::is_active`]).
    active: bool,
    /// The last attempt ended with a refusal reply (else a transport error or timeout).
    last_refused: bool,
}

impl Payload {
    /// Something may still happen without outside help: a submission queued or in flight, or an
    /// acknowledged vertex not yet decided.
    fn is_active(&self) -> bool {
        self.outcome == Outcome::Pending
            && (self.queued || self.attempts.iter().any(|a| matches!(a.state, AttemptState::InFlight | AttemptState::Acked(_))))
    }

    /// An attempt that makes a retry pointless for now: in flight within its ack timeout, or
    /// acknowledged and not given up on.
    fn has_live_attempt(&self) -> bool {
        self.attempts.iter().any(|a| match a.state {
            AttemptState::InFlight => !a.timed_out,
            AttemptState::Acked(_) => true,
            _ => false,
        })
    }

    /// An attempt may have created a vertex we have no id for.
    fn maybe_unseen_vertex(&self) -> bool {
        self.attempts.iter().any(|a| matches!(a.state, AttemptState::Failed | AttemptState::OwnConflict))
    }
}

/// Counters of a run (the loadgen summary).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Payloads the load meant to submit.
    pub submitted: u64,
    /// Payloads acknowledged by at least one node.
    pub acknowledged: u64,
    /// Payloads with a final vertex.
    pub finalized: u64,
    /// Payloads whose vertices were all rejected.
    pub rejected: u64,
    /// Deliberate double spends a node refused to sign at their first attempt.
    pub double_spends_refused: u64,
    /// Re-submissions sent (attempts beyond the first).
    pub retries: u64,
    /// Finalized payloads whose final vertex came from a node other than the first one tried.
    pub failed_over: u64,
    /// Decisions of a payload's vertex after the payload was already decided.
    pub duplicates_decided: u64,
    /// Acknowledged vertices given up on (node gone, unknown to the live nodes).
    pub abandoned: u64,
    /// Retries refused as a conflict with (most likely) an earlier attempt's vertex.
    pub own_conflicts: u64,
    /// Payloads decided by reading a node's decision feed at the end.
    pub resolved_from_feed: u64,
    /// Never acknowledged, every retry refused as a conflict, and a key of theirs is spent by
    /// another payload of the load that is final (the deliberate double spend of it, submitted
    /// to another node, won the key while its first node was down): they can never be final,
    /// one spend of the key is, and no data was lost (set by [`Tracker::finish`]).
    pub outspent: u64,
}

/// The end of a run: the counters and how the lost payloads split.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Final {
    /// Counters.
    pub c: Counters,
    /// Never acknowledged by any node, never decided (`refused` + `submit_errors`).
    pub lost_unacknowledged: u64,
    /// Acknowledged but not decided within the drain window.
    pub lost_undecided: u64,
    /// Of the unacknowledged: the last attempt was refused (overload, not ready, own conflict).
    pub refused: u64,
    /// Of the unacknowledged: the last attempt got no reply (connection error, timeout).
    pub submit_errors: u64,
}

impl Final {
    /// `submitted - finalized - rejected - double_spends_refused - outspent`.
    pub fn lost(&self) -> u64 {
        self.lost_unacknowledged + self.lost_undecided
    }
}

/// A (re)submission to send now.
#[derive(Debug, Clone)]
pub struct Send {
    /// Payload tag.
    pub tag: u64,
    /// Node to try first (then round robin over the live ones).
    pub preferred: usize,
    /// Nodes already tried for this payload.
    pub tried: Vec<usize>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Conflict keys.
    pub keys: Vec<ConflictKey>,
}

/// The ack timeout of an attempt passed with no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckTimeout {
    /// Node it was sent to.
    pub node: usize,
    /// Connection generation it was sent on.
    pub gen: u64,
    /// When it was sent.
    pub sent: Instant,
}

/// A decision the tracker counted as a final payload (for the latency histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finalized {
    /// From the payload's first submission to the decision.
    pub latency: Duration,
}

/// Payload bookkeeping across attempts.
#[derive(Debug)]
pub struct Tracker {
    max_attempts: u32,
    ack_timeout: Duration,
    payloads: HashMap<u64, Payload>,
    /// Acknowledged, undecided vertex -> (tag, attempt).
    by_id: HashMap<VertexId, (u64, usize)>,
    /// Decisions pushed before their acknowledgement arrived.
    early: HashMap<VertexId, (bool, Instant)>,
    /// Sends due when queued (new payloads, retries without backoff), in queueing order; their
    /// due times never decrease (`enqueue` keeps them so).
    queue: VecDeque<(Instant, u64)>,
    /// Sends queued with a backoff, earliest due first (with the queueing order among equal
    /// times). A linear scan of one queue for the first due entry cost loadgen a fifth of its
    /// CPU under overload (tens of thousands of backed-off retries ahead of the new payloads).
    later: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    /// Queueing order of `later`.
    later_seq: u64,
    timeouts: VecDeque<(Instant, u64, usize)>,
    active: u64,
    /// Counters.
    pub c: Counters,
}

impl Tracker {
    /// At most `max_attempts` submissions per payload; an attempt not acknowledged within
    /// `ack_timeout` is retried.
    pub fn new(max_attempts: u32, ack_timeout: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ack_timeout,
            payloads: HashMap::default(),
            by_id: HashMap::default(),
            early: HashMap::default(),
            queue: VecDeque::new(),
            later: BinaryHeap::new(),
            later_seq: 0,
            timeouts: VecDeque::new(),
            active: 0,
            c: Counters::default(),
        }
    }

    /// Payloads not decided for which something is still under way (closed loop, drain).
    pub fn active(&self) -> u64 {
        self.active
    }

    /// A new payload, first tried at `preferred`.
    pub fn add(&mut self, tag: u64, payload: Vec<u8>, keys: Vec<ConflictKey>, double_spend: bool, preferred: usize, now: Instant) {
        self.c.submitted += 1;
        self.payloads.insert(
            tag,
            Payload {
                payload,
                keys,
                double_spend,
                preferred,
                first_sent: None,
                attempts: Vec::new(),
                queued: true,
                outcome: Outcome::Pending,
                active: false,
                last_refused: false,
            },
        );
        self.enqueue(tag, now, Duration::ZERO);
        self.refresh(tag);
    }

    /// The next submission due at `now`, if any: the earliest due of either queue.
    pub fn next_send(&mut self, now: Instant) -> Option<Send> {
        loop {
            let queued = self.queue.front().map(|&(due, _)| due).filter(|due| *due <= now);
            let backed_off = self.later.peek().map(|Reverse((due, _, _))| *due).filter(|due| *due <= now);
            let tag = match (queued, backed_off) {
                (None, None) => return None,
                (Some(q), Some(l)) if l < q => self.later.pop().map(|Reverse((_, _, tag))| tag),
                (Some(_), _) => self.queue.pop_front().map(|(_, tag)| tag),
                (None, Some(_)) => self.later.pop().map(|Reverse((_, _, tag))| tag),
            }?;
            if let Some(s) = self.send_of(tag) {
                return Some(s);
            }
        }
    }

    /// Queues a send of `tag` after `delay`.
    fn enqueue(&mut self, tag: u64, now: Instant, delay: Duration) {
        if delay.is_zero() {
            // Callers pass the time they read, and a reply task may read a later one before the
            // loop's earlier reading is used: keep the queue ordered (a send due at most a few
            // microseconds later than asked).
            let due = self.queue.back().map_or(now, |(last, _)| now.max(*last));
            self.queue.push_back((due, tag));
        } else {
            self.later_seq += 1;
            self.later.push(Reverse((now + delay, self.later_seq, tag)));
        }
    }

    fn send_of(&self, tag: u64) -> Option<Send> {
        let p = self.payloads.get(&tag)?;
        if !p.queued || p.outcome != Outcome::Pending {
            return None;
        }
        Some(Send { tag, preferred: p.preferred, tried: p.attempts.iter().map(|a| a.node).collect(), payload: p.payload.clone(), keys: p.keys.clone() })
    }

    /// No node could take `tag` now: try again after `delay` (no attempt is used).
    pub fn defer(&mut self, tag: u64, now: Instant, delay: Duration) {
        self.enqueue(tag, now, delay);
    }

    /// `tag` was sent to `node` on connection generation `gen`; returns the attempt index.
    pub fn sent(&mut self, tag: u64, node: usize, gen: u64, now: Instant) -> usize {
        let Some(p) = self.payloads.get_mut(&tag) else { return 0 };
        p.queued = false;
        p.first_sent.get_or_insert(now);
        if !p.attempts.is_empty() {
            self.c.retries += 1;
        }
        p.attempts.push(Attempt { node, gen, sent: now, state: AttemptState::InFlight, timed_out: false, unknown_since: None });
        let i = p.attempts.len() - 1;
        self.timeouts.push_back((now + self.ack_timeout, tag, i));
        self.refresh(tag);
        i
    }

    /// Attempt `i` of `tag` became vertex `id`.
    pub fn acked(&mut self, tag: u64, i: usize, id: VertexId) {
        let Some(p) = self.payloads.get_mut(&tag) else { return };
        if !p.attempts.iter().any(|a| matches!(a.state, AttemptState::Acked(_) | AttemptState::Abandoned(_) | AttemptState::Decided)) {
            self.c.acknowledged += 1;
        }
        let Some(a) = p.attempts.get_mut(i) else { return };
        a.state = AttemptState::Acked(id);
        self.by_id.insert(id, (tag, i));
        self.refresh(tag);
        if let Some((final_, at)) = self.early.remove(&id) {
            self.decided(id, final_, at);
        }
    }

    /// Attempt `i` of `tag` was refused by its node.
    pub fn refused(&mut self, tag: u64, i: usize, why: Refusal, now: Instant) {
        let Some(p) = self.payloads.get_mut(&tag) else { return };
        let earlier_may_exist = p.attempts[..i.min(p.attempts.len())].iter().any(|a| !matches!(a.state, AttemptState::Refused));
        let Some(a) = p.attempts.get_mut(i) else { return };
        if why == Refusal::Conflict {
            if earlier_may_exist {
                // A retry refused as a double spend: the node knows a vertex spending the same
                // key, most likely this payload's own earlier attempt. Its decision tells.
                a.state = AttemptState::OwnConflict;
                self.c.own_conflicts += 1;
                p.last_refused = true;
                self.refresh(tag);
                return;
            }
            a.state = AttemptState::Refused;
            if p.outcome == Outcome::Pending {
                p.outcome = Outcome::DoubleSpendRefused;
                self.c.double_spends_refused += 1;
                p.payload = Vec::new();
            }
            self.refresh(tag);
            return;
        }
        a.state = AttemptState::Refused;
        p.last_refused = true;
        let delay = if why == Refusal::Overloaded { Duration::from_millis(200) } else { Duration::from_millis(50) };
        self.retry(tag, now, delay);
    }

    /// Attempt `i` of `tag` got no reply (transport error, or its long timeout passed).
    pub fn failed(&mut self, tag: u64, i: usize, now: Instant) {
        let Some(p) = self.payloads.get_mut(&tag) else { return };
        let Some(a) = p.attempts.get_mut(i) else { return };
        if a.state != AttemptState::InFlight {
            return;
        }
        a.state = AttemptState::Failed;
        p.last_refused = false;
        self.retry(tag, now, Duration::ZERO);
    }

    /// Attempts whose ack timeout passed at `now` still in flight (each retried if nothing else
    /// of its payload is under way). The caller may suspect their nodes.
    pub fn ack_timeouts(&mut self, now: Instant) -> Vec<AckTimeout> {
        let mut out = Vec::new();
        while let Some(&(due, tag, i)) = self.timeouts.front() {
            if due > now {
                break;
            }
            self.timeouts.pop_front();
            let Some(a) = self.payloads.get_mut(&tag).and_then(|p| p.attempts.get_mut(i)) else { continue };
            if a.state != AttemptState::InFlight {
                continue;
            }
            a.timed_out = true;
            out.push(AckTimeout { node: a.node, gen: a.gen, sent: a.sent });
            self.retry(tag, now, Duration::ZERO);
        }
        out
    }

    /// Queues another attempt of `tag` if it is undecided, nothing of it is under way and the
    /// attempts allow; else leaves it be.
    fn retry(&mut self, tag: u64, now: Instant, delay: Duration) {
        if let Some(p) = self.payloads.get_mut(&tag) {
            if p.outcome == Outcome::Pending && !p.queued && !p.has_live_attempt() && (p.attempts.len() as u32) < self.max_attempts {
                p.queued = true;
                self.enqueue(tag, now, delay);
            }
        }
        self.refresh(tag);
    }

    /// A decision of vertex `id` (pushed, polled, or read from a feed) at `at`. Returns the
    /// payload's latency when it made the payload final.
    pub fn decided(&mut self, id: VertexId, final_: bool, at: Instant) -> Option<Finalized> {
        let Some((tag, i)) = self.by_id.remove(&id) else {
            self.early.insert(id, (final_, at));
            return None;
        };
        let p = self.payloads.get_mut(&tag)?;
        let node = p.attempts[i].node;
        p.attempts[i].state = AttemptState::Decided;
        let first_node = p.attempts.first().map(|a| a.node);
        let out = match (p.outcome, final_) {
            (Outcome::Pending, true) => self.finalize(tag, Some(node), first_node, at),
            (Outcome::Rejected, true) => {
                // Another attempt's vertex was rejected first (it lost to this one).
                self.c.rejected -= 1;
                self.c.duplicates_decided += 1;
                self.finalize(tag, Some(node), first_node, at)
            }
            (Outcome::Pending, false) => {
                if !p.is_active() && !p.maybe_unseen_vertex() {
                    p.outcome = Outcome::Rejected;
                    p.payload = Vec::new();
                    self.c.rejected += 1;
                }
                None
            }
            _ => {
                self.c.duplicates_decided += 1;
                None
            }
        };
        self.refresh(tag);
        out
    }

    fn finalize(&mut self, tag: u64, node: Option<usize>, first_node: Option<usize>, at: Instant) -> Option<Finalized> {
        let p = self.payloads.get_mut(&tag)?;
        p.outcome = Outcome::Final;
        p.payload = Vec::new();
        self.c.finalized += 1;
        if node.is_some() && node != first_node {
            self.c.failed_over += 1;
        }
        let t0 = p.first_sent.unwrap_or(at);
        Some(Finalized { latency: at.saturating_duration_since(t0) })
    }

    /// Acknowledged, undecided vertices (also those given up on) sent on a connection for which
    /// `stale(node, gen)` is true: their decision is not pushed to us any more; poll it.
    /// Each with the node and connection generation it was acknowledged on.
    pub fn stale_ids(&self, stale: impl Fn(usize, u64) -> bool, max: usize) -> Vec<(VertexId, usize, u64)> {
        self.by_id
            .iter()
            .filter_map(|(id, (tag, i))| {
                let a = self.payloads.get(tag)?.attempts.get(*i)?;
                stale(a.node, a.gen).then_some((*id, a.node, a.gen))
            })
            .take(max)
            .collect()
    }

    /// Every acknowledged, undecided vertex (polled at the end of the drain).
    pub fn open_ids(&self) -> Vec<VertexId> {
        self.by_id.keys().copied().collect()
    }

    /// A live node answered `Unknown` for `id`, whose connection went stale at `stale_since`:
    /// after `ack_timeout` of that, the vertex is given up on and the payload retried.
    pub fn unknown(&mut self, id: VertexId, stale_since: Instant, now: Instant) {
        let Some(&(tag, i)) = self.by_id.get(&id) else { return };
        let Some(a) = self.payloads.get_mut(&tag).and_then(|p| p.attempts.get_mut(i)) else { return };
        let since = *a.unknown_since.get_or_insert(now);
        if a.state == AttemptState::Acked(id) && now.saturating_duration_since(since.max(stale_since)) >= self.ack_timeout {
            a.state = AttemptState::Abandoned(id);
            self.c.abandoned += 1;
            self.retry(tag, now, Duration::ZERO);
        }
    }

    /// A live node knows `id` but has not decided it.
    pub fn processing(&mut self, id: VertexId) {
        if let Some(&(tag, i)) = self.by_id.get(&id) {
            if let Some(a) = self.payloads.get_mut(&tag).and_then(|p| p.attempts.get_mut(i)) {
                a.unknown_since = None;
            }
        }
    }

    /// Whether any payload is undecided (the feed may tell).
    pub fn undecided(&self) -> usize {
        self.payloads.values().filter(|p| p.outcome == Outcome::Pending).count()
    }

    /// A decision read from a node's feed for payload `tag` (by its payload bytes), vertex
    /// `id` created by `creator` (a node index, when known).
    pub fn feed_decision(&mut self, tag: u64, id: VertexId, final_: bool, creator: Option<usize>, at: Instant) {
        if self.by_id.contains_key(&id) {
            self.decided(id, final_, at);
            return;
        }
        let Some(p) = self.payloads.get_mut(&tag) else { return };
        if p.outcome != Outcome::Pending && p.outcome != Outcome::Rejected {
            return;
        }
        if final_ {
            if p.outcome == Outcome::Rejected {
                self.c.rejected -= 1;
            }
            let first_node = p.attempts.first().map(|a| a.node);
            // Latency is not known for these (no push): not recorded.
            p.outcome = Outcome::Final;
            p.payload = Vec::new();
            self.c.finalized += 1;
            self.c.resolved_from_feed += 1;
            if creator.is_some() && creator != first_node {
                self.c.failed_over += 1;
            }
        } else if p.outcome == Outcome::Pending && !p.attempts.iter().any(|a| matches!(a.state, AttemptState::InFlight | AttemptState::Acked(_))) {
            p.outcome = Outcome::Rejected;
            p.payload = Vec::new();
            self.c.rejected += 1;
            self.c.resolved_from_feed += 1;
        }
        self.refresh(tag);
    }

    /// The tally at the end: every payload not decided is lost, unless another payload of the
    /// load won its key (`Counters::outspent`).
    pub fn finish(&self) -> Final {
        let mut f = Final { c: self.c.clone(), ..Final::default() };
        let won: std::collections::HashSet<ConflictKey> = self.payloads.values().filter(|p| p.outcome == Outcome::Final).flat_map(|p| p.keys.iter().copied()).collect();
        for p in self.payloads.values() {
            if p.outcome != Outcome::Pending {
                continue;
            }
            if p.attempts.iter().any(|a| a.state == AttemptState::Decided) {
                // A vertex of it was rejected (a pending payload has no final one) and nothing
                // else of it was decided.
                f.c.rejected += 1;
                continue;
            }
            let acked = p.attempts.iter().any(|a| matches!(a.state, AttemptState::Acked(_) | AttemptState::Abandoned(_)));
            if acked {
                f.lost_undecided += 1;
            } else if p.double_spend && p.attempts.iter().any(|a| a.state == AttemptState::OwnConflict) && !p.maybe_unseen_vertex_other_than_conflict() {
                // A deliberate double spend refused at a retry: what it was meant to be.
                f.c.double_spends_refused += 1;
            } else if p.last_refused && p.attempts.iter().any(|a| a.state == AttemptState::OwnConflict) && p.keys.iter().any(|k| won.contains(k)) {
                // Its key is final for another payload: whatever vertex an unseen attempt may
                // have made loses, and the refusals said so.
                f.c.outspent += 1;
            } else {
                f.lost_unacknowledged += 1;
                if p.last_refused {
                    f.refused += 1;
                } else {
                    f.submit_errors += 1;
                }
            }
        }
        f
    }

    fn refresh(&mut self, tag: u64) {
        let Some(p) = self.payloads.get_mut(&tag) else { return };
        let now_active = p.is_active();
        if now_active != p.active {
            p.active = now_active;
            if now_active {
                self.active += 1;
            } else {
                self.active -= 1;
            }
        }
    }
}

impl Payload {
    fn maybe_unseen_vertex_other_than_conflict(&self) -> bool {
        self.attempts.iter().any(|a| matches!(a.state, AttemptState::Failed))
    }
}

#[cfg(test)]
mod tests;
