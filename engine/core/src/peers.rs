//! Per-peer Byzantine scoring (spec 3.7.2/3.7.3) with decay, and uniform sampling.

use std::collections::VecDeque;
use std::sync::Arc;

use pqdag_wire::{Evidence, NodeId, VertexId};

use crate::conflicts::ordf;
use crate::core::Core;
use crate::error::{ConsensusError, ConsensusResult};
use crate::id_hash::HashMap;
use crate::types::{Action, Signer};

/// Score above which a peer is excluded from sampling and its responses ignored (3.7.2).
pub const EXCLUDE_SCORE: f64 = 0.5;
/// Half-life of scores: honest peers' occasional incidents fade (one +0.2 incident every 15 s
/// or rarer never excludes), persistent offenders stay out (with the 0.25 re-entry hysteresis).
pub const SCORE_HALF_LIFE_US: u64 = 20_000_000;
/// Highest score incidents can build (proofs convict separately). Without a ceiling, an honest
/// peer that lagged through a partition piled up ~24 points of `Unknown` votes after the heal and
/// stayed excluded for over two minutes, while each side's exclusions kept a 3:3 double spend
/// split (`partition.rs` flake). With it, a peer's last incident is at most
/// `2 x SCORE_HALF_LIFE_US` (40 s) from its return to sampling: from 1.0 down to the 0.25 re-entry.
pub(crate) const SCORE_CAP: f64 = 2.0 * EXCLUDE_SCORE;
/// Queries in a peer's timeout window; more than half timing out is "excessive".
pub const PEER_TIMEOUT_WINDOW: u32 = 8;

/// A kind of misbehaviour and its weight (3.7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Misbehaviour {
    /// Bad signature: +0.5.
    InvalidSignature,
    /// Votes against the alpha-majority on decided vertices, or `Unknown` on vertices every
    /// honest node has had long enough to learn: +0.3 (a score, never a proof).
    ConflictingVotes,
    /// Most recent queries timed out: +0.2.
    ExcessiveTimeouts,
    /// Undecodable or out-of-bounds message: +0.4.
    Malformed,
    /// Two signed vertices of one creator sharing a conflict key: +1.0 (proof).
    Equivocation,
    /// Requests over the per-peer budget (`ratelimit`), at most one strike a second: +0.2
    /// (a score, never a proof: three seconds of flooding exclude, occasional bursts fade).
    Flooding,
}

impl Misbehaviour {
    /// Weight added to the score.
    pub fn weight(self) -> f64 {
        match self {
            Misbehaviour::InvalidSignature => 0.5,
            Misbehaviour::ConflictingVotes => 0.3,
            Misbehaviour::ExcessiveTimeouts => 0.2,
            Misbehaviour::Malformed => 0.4,
            Misbehaviour::Equivocation => 1.0,
            Misbehaviour::Flooding => 0.2,
        }
    }
}

/// What the core knows about one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerScore {
    /// Current score (decayed lazily).
    pub score: f64,
    /// Time of the last decay.
    pub(crate) updated_us: u64,
    /// Proof of misbehaviour seen: excluded for good.
    pub convicted: bool,
    /// Queries in the current timeout window.
    pub(crate) window_queries: u32,
    /// Timeouts in the current window.
    pub(crate) window_timeouts: u32,
    /// Incidents so far.
    pub incidents: u32,
    /// Currently excluded from sampling.
    pub excluded: bool,
}

impl PeerScore {
    /// Decays the score to `now`.
    pub(crate) fn decay(&mut self, now: u64) {
        if now > self.updated_us {
            self.score *= half_life_factor(now - self.updated_us);
            self.updated_us = now;
        }
    }
}

/// `0.5^(dt / SCORE_HALF_LIFE_US)` with IEEE basic operations only (no libm `powf`, whose
/// last bits differ between platforms): whole half-lives are exact halvings, the fraction a
/// degree-8 Taylor series of `e^(-x ln 2)` (error < 2e-8 on [0, 1)). A replay of the same
/// events therefore gives the same scores, exclusions and samples on every machine.
fn half_life_factor(dt_us: u64) -> f64 {
    let halvings = dt_us / SCORE_HALF_LIFE_US;
    if halvings >= 1100 {
        return 0.0; // below the smallest subnormal
    }
    let frac = (dt_us % SCORE_HALF_LIFE_US) as f64 / SCORE_HALF_LIFE_US as f64;
    let y = -frac * std::f64::consts::LN_2;
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    for i in 1..=8u32 {
        term = term * y / f64::from(i);
        sum += term;
    }
    let mut f = sum;
    for _ in 0..halvings {
        f *= 0.5;
    }
    f
}

/// Peer-query outcomes in the partition detector window (5.3).
pub const TIMEOUT_WINDOW: usize = 64;
/// Period of exclusion recomputation (decay makes exclusions expire).
pub(crate) const EXCLUSION_REFRESH_US: u64 = 1_000_000;

/// The membership as one node sees it: every node sorted (the gossip ring), this node's place
/// in it, its peers (every node but itself, sorted: a peer's index is its position there) and
/// the index from a peer's id to its position. Fixed for a core's life and the same for every
/// shard of a node, so the shards share one copy (`Core::with_roster`): at 1000 nodes a copy
/// is ~150 KB, and one per simulated core was ~0.6 GB of a 1000-node, 4-shard simulation.
#[derive(Clone, Debug)]
pub struct Roster {
    me: NodeId,
    nodes: Arc<[NodeId]>,
    me_pos: usize,
    ids: Arc<[NodeId]>,
    index: Arc<HashMap<NodeId, usize>>,
}

impl Roster {
    /// The roster of `me` among `nodes` (any order; duplicates count once). An error if `me`
    /// is not one of them.
    pub fn new(nodes: &[NodeId], me: NodeId) -> ConsensusResult<Self> {
        let mut nodes = nodes.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let Ok(me_pos) = nodes.binary_search(&me) else {
            return Err(ConsensusError::InvalidParams("`me` is not in `nodes`".into()));
        };
        let ids: Vec<NodeId> = nodes.iter().copied().filter(|p| *p != me).collect();
        let index: HashMap<NodeId, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Ok(Roster { me, nodes: nodes.into(), me_pos, ids: ids.into(), index: Arc::new(index) })
    }

    /// The node this roster belongs to.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Nodes of the network, this one included.
    pub fn members(&self) -> usize {
        self.nodes.len()
    }
}

/// The membership as this node sees it (shared: [`Roster`]), peer scores and exclusions,
/// reachability, and the partition detector's window of query outcomes.
pub(crate) struct Peers {
    /// Every node, sorted (the gossip ring).
    pub(crate) nodes: Arc<[NodeId]>,
    /// This node's position in `nodes`.
    pub(crate) me_pos: usize,
    /// Every node but this one, sorted: a peer's index is its position here.
    pub(crate) ids: Arc<[NodeId]>,
    pub(crate) index: Arc<HashMap<NodeId, usize>>,
    pub(crate) scores: Vec<PeerScore>,
    /// Peers that may be sampled now.
    pub(crate) eligible: Vec<usize>,
    /// Per peer: the shell reported its connection down (see `Event::PeerReachability`).
    pub(crate) unreachable: Vec<bool>,
    /// The last pair of one creator's vertices judged for equivocation (`equivocation`).
    pub(crate) last_pair: Option<(VertexId, VertexId)>,
    pub(crate) refresh_at: u64,
    pub(crate) outcomes: VecDeque<bool>,
    pub(crate) outcomes_timeouts: usize,
}

impl Peers {
    /// Every peer of `roster` eligible, none scored.
    pub(crate) fn new(roster: &Roster) -> Self {
        let n = roster.ids.len();
        Peers {
            me_pos: roster.me_pos,
            nodes: roster.nodes.clone(),
            ids: roster.ids.clone(),
            index: roster.index.clone(),
            scores: vec![PeerScore::default(); n],
            eligible: (0..n).collect(),
            unreachable: vec![false; n],
            last_pair: None,
            refresh_at: 0,
            outcomes: VecDeque::new(),
            outcomes_timeouts: 0,
        }
    }

    /// Most recent peer-queries timed out (the peer-level signal of 5.3).
    pub(crate) fn most_queries_timed_out(&self) -> bool {
        self.outcomes.len() >= 16 && self.outcomes_timeouts * 2 > self.outcomes.len()
    }

    /// Records one query outcome in the partition detector window.
    pub(crate) fn record_outcome(&mut self, timed_out: bool) {
        if self.outcomes.len() >= TIMEOUT_WINDOW && self.outcomes.pop_front() == Some(true) {
            self.outcomes_timeouts -= 1;
        }
        self.outcomes.push_back(timed_out);
        if timed_out {
            self.outcomes_timeouts += 1;
        }
    }

    /// Recomputes exclusions: at most f = (N-1)/3 peers in total, convicted ones included
    /// (convicted first, then the highest scores above 0.5). More proofs than the fault bound
    /// means the proofs, not the network, are wrong: no rule may leave a node sampling fewer
    /// than N-1-f peers.
    pub(crate) fn refresh_exclusions(&mut self, now: u64) {
        self.refresh_at = now + EXCLUSION_REFRESH_US;
        let cap = self.ids.len() / 3;
        let mut ranked: Vec<(bool, u64, usize)> = Vec::new();
        for (i, s) in self.scores.iter_mut().enumerate() {
            s.decay(now);
            // Hysteresis: an excluded peer returns only once its score fell below half the
            // threshold, so a persistent offender is out most of the time while one incident of
            // an honest peer (at most 0.5) never excludes it.
            let threshold = if s.excluded { EXCLUDE_SCORE / 2.0 } else { EXCLUDE_SCORE };
            s.excluded = false;
            if s.convicted || s.score > threshold {
                ranked.push((s.convicted, ordf(s.score / 8.0), i));
            }
        }
        // Convicted first, then by score; ties by index (deterministic).
        ranked.sort_unstable_by(|a, b| (b.0, b.1, std::cmp::Reverse(b.2)).cmp(&(a.0, a.1, std::cmp::Reverse(a.2))));
        for &(_, _, i) in ranked.iter().take(cap) {
            self.scores[i].excluded = true;
        }
        debug_assert!(self.scores.iter().filter(|s| s.excluded).count() <= cap, "exclusions capped at f");
        // Unreachable peers leave the sample only while this node and the reachable peers are a
        // strict majority of the cluster (never on both sides of a partition).
        let reachable = self.unreachable.iter().filter(|u| !**u).count();
        let majority = 2 * (reachable + 1) > self.ids.len() + 1;
        let skip_unreachable = majority && reachable > 0;
        self.eligible = (0..self.ids.len()).filter(|&i| !self.scores[i].excluded && !(skip_unreachable && self.unreachable[i])).collect();
    }
}

impl<S: Signer> Core<S> {
    pub(crate) fn incident(&mut self, now: u64, pi: usize, kind: Misbehaviour, evidence: Option<Evidence>) {
        let s = &mut self.peers.scores[pi];
        s.decay(now);
        s.score = (s.score + kind.weight()).min(SCORE_CAP);
        s.incidents += 1;
        if evidence.is_some() {
            s.convicted = true;
        }
        let was = s.excluded;
        self.peers.refresh_exclusions(now);
        let s = &self.peers.scores[pi];
        if s.excluded && !was {
            let score = s.score;
            self.push(Action::Alert { peer: self.peers.ids[pi], reason: kind, evidence: evidence.map(Box::new), score });
        }
    }

    pub(crate) fn on_alert(&mut self, now: u64, accused: NodeId, evidence: Evidence) {
        // Receivers check the proof instead of trusting the reporter (signatures were checked
        // by the shell). Only an equivocation is proof: two signed vertices of one creator
        // spending one key can never both come from an honest node. Two different signed
        // answers to one query id are not: an honest vote legitimately changes as vertices
        // arrive, and an asker can repeat its query id at will, so such a pair proves nothing
        // against the responder (issue 14, framing by replay). It is ignored, as is a proof
        // against this node.
        let valid = match &evidence {
            Evidence::Equivocation { a, b } => a.creator == accused && b.creator == accused && a.id != b.id && pqdag_wire::spends_apart(a, b),
            Evidence::ConflictingResponses { .. } => false,
        };
        if !valid || accused == self.me {
            return;
        }
        if let Some(&i) = self.peers.index.get(&accused) {
            if !self.peers.scores[i].convicted {
                self.incident(now, i, Misbehaviour::Equivocation, Some(evidence));
            }
        }
    }

    pub(crate) fn equivocation(&mut self, a: VertexId, b: VertexId) {
        let (Some(ra), Some(rb)) = (self.dag.vertices.get(&a), self.dag.vertices.get(&b)) else { return };
        let creator = ra.v.creator;
        if creator == self.me {
            return;
        }
        // Joining a vertex's keys checks the same pair once per shared key: judge it once.
        if self.peers.last_pair == Some((a, b)) {
            return;
        }
        self.peers.last_pair = Some((a, b));
        // A re-issue spends its keys again with the same transactions: not an equivocation.
        if !pqdag_wire::spends_apart(&ra.v, &rb.v) {
            return;
        }
        // A stripped (decided) vertex carries no transactions, so `spends_apart` never finds it
        // apart from another: a re-issue cannot be told from an equivocation without them, and
        // wrongly accusing an honest re-issuer is worse than missing an old equivocation (its
        // vertices still cannot both win). The signature check below is what is left of that.
        let proof = !ra.v.signature.is_empty() && !rb.v.signature.is_empty();
        let ev = proof.then(|| Evidence::Equivocation { a: (*ra.v).clone(), b: (*rb.v).clone() });
        if let Some(&i) = self.peers.index.get(&creator) {
            let now = self.now;
            self.incident(now, i, Misbehaviour::Equivocation, ev);
        }
    }
}
