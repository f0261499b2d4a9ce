//! The consensus state machine: DAG, pending buffer, conflict sets (Snowball), batched
//! pipelined polls with transitive credit, finality, scoring, gossip, frontier, sharding.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use pqdag_crypto::hash::SetDigest;
use pqdag_crypto::Domain;
use pqdag_wire::limits::{FRONTIER_IDS_MAX, QUERY_IDS_MAX, REPLY_VERTICES_MAX, REQUEST_IDS_MAX};
use pqdag_wire::{ConflictKey, Evidence, Frontier, NodeId, Query, Response, Vertex, VertexId, VertexReply, VertexRequest, Vote};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{ConsensusError, ConsensusResult};
use crate::params::Params;
use crate::peers::{Misbehaviour, PeerScore, EXCLUDE_SCORE, PEER_TIMEOUT_WINDOW};
use crate::types::{genesis, shard_of_key, shard_of_vertex, Action, Config, Event, ShardMsg, Signer, VertexStatus, SHARDS_MAX};

/// Vertices waiting for parents; beyond it the oldest is evicted and counted.
pub const PENDING_MAX: usize = 16_384;
/// In-flight fetches remembered (so one missing id is not requested by every event).
pub const REQUESTED_MAX: usize = 65_536;
/// Closed polls kept until their timeout to tell late answers from timeouts.
pub const POLL_CLOSED_MAX: usize = 256;
/// Vertices with cross-shard watchers.
pub const WATCHED_MAX: usize = 65_536;
/// Vertices held in memory; beyond it submissions and receptions are refused.
pub const VERTICES_MAX: usize = 8_000_000;
/// Members of one conflict set considered (more are refused: spam).
const SET_MEMBERS_MAX: usize = 64;
/// Recently inserted vertices scanned for parent selection (FR-003).
const RECENT_MAX: usize = 64;
/// Recently finalized vertices kept as fallback parents and frontier tips.
const RECENT_FINAL_MAX: usize = 16;
/// Peer-query outcomes in the partition detector window (5.3).
pub const TIMEOUT_WINDOW: usize = 64;
/// Actions buffered before the shell drains them (a full queue is a shell bug: asserted).
const ACTIONS_MAX: usize = 1 << 22;
/// Parent recency window of FR-003.
const PARENT_RECENT_US: u64 = 10_000_000;
/// Retry delay of a vertex fetch.
const FETCH_RETRY_US: u64 = 500_000;
/// Period of exclusion recomputation (decay makes exclusions expire).
const EXCLUSION_REFRESH_US: u64 = 1_000_000;

/// Hasher for 32-byte BLAKE3-derived keys: the bytes are already uniform, so fold them.
/// Deterministic (no per-process random state), which keeps simulations replayable.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
struct Rec {
    v: Arc<Vertex>,
    status: VertexStatus,
    seq: u64,
    arrival_us: u64,
    confidence: f64,
    polled: bool,
    successes: u32,
    rounds: u32,
    children: Vec<VertexId>,
    child_count: u32,
    strong_epoch: u64,
    strong: bool,
    mark: u64,
    mask: u64,
    in_conflict: bool,
    claiming: u32,
    claim_granted: Vec<ConflictKey>,
}

#[derive(Debug, Clone)]
struct Member {
    id: VertexId,
    count: u32,
    confidence: f64,
    timestamp_ms: u64,
    creator: NodeId,
    owner: u32,
    /// Rejected (e.g. descends from another set's loser): can never be preferred again.
    rejected: bool,
}

#[derive(Debug, Default)]
struct ConflictSet {
    members: Vec<Member>,
    pref: usize,
    last_winner: usize,
    streak: u32,
    decided: Option<VertexId>,
    lock: Option<VertexId>,
}

impl ConflictSet {
    fn better(a: &Member, b: &Member) -> bool {
        if a.rejected != b.rejected {
            return b.rejected;
        }
        // Snowball count first, then spec 4.5.2: confidence, earlier timestamp, lower id.
        (a.count, ordf(a.confidence), std::cmp::Reverse(a.timestamp_ms), std::cmp::Reverse(a.id))
            > (b.count, ordf(b.confidence), std::cmp::Reverse(b.timestamp_ms), std::cmp::Reverse(b.id))
    }
    fn preferred(&self) -> VertexId {
        self.members[self.pref].id
    }
    fn index(&self, id: &VertexId) -> Option<usize> {
        self.members.iter().position(|m| m.id == *id)
    }
}

fn ordf(x: f64) -> u64 {
    (x.clamp(0.0, 1.0) * 1e9) as u64
}

#[derive(Debug, Default)]
struct RemoteParent {
    status: Option<VertexStatus>,
    strong: bool,
    children: Vec<VertexId>,
    watched: bool,
}

#[derive(Debug, Default)]
struct RemoteSet {
    preferred: Option<VertexId>,
    decided: bool,
    mine: Vec<VertexId>,
}

struct PendingEntry {
    v: Arc<Vertex>,
    from: NodeId,
    gossip: bool,
}

struct Poll {
    sent_us: u64,
    deadline_us: u64,
    sample: Vec<usize>,
    ids: Vec<VertexId>,
    digest: [u8; 32],
    yes: Vec<u64>,
    no: Vec<u64>,
    responded: u64,
    responses: Vec<Option<Response>>,
    alpha: usize,
    alpha_at: Option<u64>,
    /// When half the sample had answered: the round-trip signal of the poll window.
    half_at: Option<u64>,
}

/// A processing vertex in arrival order, with what the poll scheduler needs without lookups.
#[derive(Debug, Clone, Copy)]
struct ProcEntry {
    id: VertexId,
    arrival_us: u64,
    /// Sequence of the earliest non-rejected local child (u64::MAX: none): an aged vertex is
    /// a frontier tip iff this child is not aged.
    min_child_seq: u64,
}

struct Closed {
    deadline_us: u64,
    sample: Vec<usize>,
    missing: u64,
}

/// Counters and digests the engine exposes on `/status` (NFR-005).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreStatus {
    /// Vertices finalized (genesis excluded).
    pub finalized: u64,
    /// Vertices rejected.
    pub rejected: u64,
    /// Vertices still processing.
    pub processing: u64,
    /// Vertices waiting for parents.
    pub pending: u64,
    /// Order-independent digest of the finalized set (genesis excluded).
    pub finalized_digest: [u8; 32],
    /// More than half of recent queries timed out (5.3).
    pub partition_suspected: bool,
    /// Pending vertices evicted because the buffer was full.
    pub pending_evicted: u64,
    /// Polls completed.
    pub polls_completed: u64,
    /// Polls that did not reach alpha responses.
    pub polls_short: u64,
    /// Peers currently excluded.
    pub excluded_peers: u64,
    /// Processing vertices that passed `max_rounds` rounds.
    pub stalled: u64,
}

/// One shard instance of the consensus core of one node. See the crate docs for the API shape.
pub struct Core<S: Signer> {
    params: Params,
    signer: S,
    me: NodeId,
    nodes: Vec<NodeId>,
    me_pos: usize,
    peers: Vec<NodeId>,
    peer_idx: HashMap<NodeId, usize>,
    scores: Vec<PeerScore>,
    eligible: Vec<usize>,
    /// Per peer: the shell reported its connection down (see `Event::PeerReachability`).
    unreachable: Vec<bool>,
    exclusion_refresh_at: u64,
    shard: u32,
    shard_count: u32,
    rng: ChaCha8Rng,
    genesis: Arc<Vertex>,
    vertices: HashMap<VertexId, Rec>,
    processing: BTreeMap<u64, ProcEntry>,
    seq: u64,
    sets: HashMap<ConflictKey, ConflictSet>,
    remote_parents: HashMap<VertexId, RemoteParent>,
    remote_sets: HashMap<ConflictKey, RemoteSet>,
    watchers: HashMap<VertexId, (u64, bool)>,
    pending: HashMap<VertexId, PendingEntry>,
    pending_order: VecDeque<VertexId>,
    waiting: HashMap<VertexId, Vec<VertexId>>,
    requested: HashMap<VertexId, u64>,
    polls: BTreeMap<u64, Poll>,
    closed: BTreeMap<u64, Closed>,
    next_query_seq: u64,
    next_request_id: u64,
    next_poll_at: u64,
    next_frontier_at: u64,
    next_fetch_retry_at: u64,
    poll_no: u64,
    epoch: u64,
    contested: u64,
    recent: VecDeque<VertexId>,
    recent_final: VecDeque<VertexId>,
    /// Final vertices in finality order with their finality time, for stripping (see
    /// `Params::strip_final_after_us`).
    strip_queue: VecDeque<(u64, VertexId)>,
    /// Final vertices in finality order with their finality time, for forgetting (see
    /// `Params::forget_final_after_us`).
    forget_queue: VecDeque<(u64, VertexId)>,
    /// Ids of forgotten final vertices (their records are gone; they count as final).
    forgotten: HashSet<VertexId>,
    /// Winners of forgotten decided conflict sets: a late spend of such a key loses.
    decided_keys: HashMap<ConflictKey, VertexId>,
    outcomes: VecDeque<bool>,
    outcomes_timeouts: usize,
    /// Last polls: true = closed short of alpha answers (timed out).
    poll_outcomes: u8,
    /// Polls allowed in flight now (1..=polls_in_flight_max): delay-based AIMD, see `adapt_window`.
    poll_window: usize,
    actions: VecDeque<Action>,
    final_position: u64,
    finalized: u64,
    rejected: u64,
    digest: SetDigest,
    pending_evicted: u64,
    polls_completed: u64,
    polls_short: u64,
    stalled: u64,
    now: u64,
}

impl<S: Signer> Core<S> {
    /// Builds a core after validating the parameters (spec 3.2) against the network size.
    pub fn new(cfg: Config, signer: S) -> ConsensusResult<Self> {
        let mut nodes = cfg.nodes.clone();
        nodes.sort_unstable();
        nodes.dedup();
        if !nodes.contains(&cfg.me) {
            return Err(ConsensusError::InvalidParams("`me` is not in `nodes`".into()));
        }
        if cfg.shard_count == 0 || cfg.shard_count > SHARDS_MAX || cfg.shard >= cfg.shard_count {
            return Err(ConsensusError::InvalidParams(format!("shard {} of {}", cfg.shard, cfg.shard_count)));
        }
        let mut params = cfg.params.clone();
        // Small-network rule of spec 3.2: k = min(k, N-1), alpha rescaled if k shrank.
        let n = nodes.len();
        if n >= 2 && params.sample_size > n - 1 {
            params.sample_size = n - 1;
            params.alpha = crate::params::alpha_for(params.sample_size);
        }
        params.validate(n)?;
        let peers: Vec<NodeId> = nodes.iter().copied().filter(|p| *p != cfg.me).collect();
        let peer_idx: HashMap<NodeId, usize> = peers.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let g = genesis();
        let mut vertices = HashMap::default();
        vertices.insert(
            g.id,
            Rec {
                v: g.clone(),
                status: VertexStatus::Final,
                seq: 0,
                arrival_us: 0,
                confidence: 1.0,
                polled: true,
                successes: 0,
                rounds: 0,
                children: Vec::new(),
                child_count: 0,
                strong_epoch: 0,
                strong: true,
                mark: 0,
                mask: 0,
                in_conflict: false,
                claiming: 0,
                claim_granted: Vec::new(),
            },
        );
        let eligible = (0..peers.len()).collect();
        let scores = vec![PeerScore::default(); peers.len()];
        let unreachable = vec![false; peers.len()];
        let mut recent_final = VecDeque::new();
        recent_final.push_back(g.id);
        let poll_window = params.polls_in_flight_max;
        Ok(Core {
            params,
            signer,
            me: cfg.me,
            me_pos: nodes.iter().position(|x| *x == cfg.me).unwrap_or(0),
            nodes,
            peers,
            peer_idx,
            scores,
            unreachable,
            eligible,
            exclusion_refresh_at: 0,
            shard: cfg.shard,
            shard_count: cfg.shard_count,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ (u64::from(cfg.shard) << 56)),
            genesis: g,
            vertices,
            processing: BTreeMap::new(),
            seq: 1,
            sets: HashMap::default(),
            remote_parents: HashMap::default(),
            remote_sets: HashMap::default(),
            watchers: HashMap::default(),
            pending: HashMap::default(),
            pending_order: VecDeque::new(),
            waiting: HashMap::default(),
            requested: HashMap::default(),
            polls: BTreeMap::new(),
            closed: BTreeMap::new(),
            next_query_seq: 1,
            next_request_id: 1,
            next_poll_at: 0,
            next_frontier_at: 0,
            next_fetch_retry_at: 0,
            poll_no: 0,
            epoch: 1,
            contested: 0,
            recent: VecDeque::new(),
            recent_final,
            strip_queue: VecDeque::new(),
            forget_queue: VecDeque::new(),
            forgotten: HashSet::default(),
            decided_keys: HashMap::default(),
            outcomes: VecDeque::new(),
            outcomes_timeouts: 0,
            poll_outcomes: 0,
            poll_window,
            actions: VecDeque::new(),
            final_position: 0,
            finalized: 0,
            rejected: 0,
            digest: SetDigest::default(),
            pending_evicted: 0,
            polls_completed: 0,
            polls_short: 0,
            stalled: 0,
            now: 0,
        })
    }

    // ------------------------------------------------------------------ getters

    /// Effective parameters (after the small-network rule).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// This shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The genesis vertex id.
    pub fn genesis_id(&self) -> VertexId {
        self.genesis.id
    }

    /// Counters for `/status`.
    pub fn status(&self) -> CoreStatus {
        CoreStatus {
            finalized: self.finalized,
            rejected: self.rejected,
            processing: self.processing.len() as u64,
            pending: self.pending.len() as u64,
            finalized_digest: *self.digest.as_bytes(),
            partition_suspected: self.partition_suspected(),
            pending_evicted: self.pending_evicted,
            polls_completed: self.polls_completed,
            polls_short: self.polls_short,
            excluded_peers: self.scores.iter().filter(|s| s.excluded).count() as u64,
            stalled: self.stalled,
        }
    }

    /// More than half of the recent peer-queries timed out (spec 5.3 step 1).
    pub fn partition_suspected(&self) -> bool {
        // Either most recent peer-queries or most of the last 8 polls timed out.
        (self.outcomes.len() >= 16 && self.outcomes_timeouts * 2 > self.outcomes.len()) || self.poll_outcomes.count_ones() > 4
    }

    /// The vertex with this id, if held (answers `VertexRequest`s).
    pub fn vertex(&self, id: &VertexId) -> Option<&Arc<Vertex>> {
        self.vertices.get(id).map(|r| &r.v).or_else(|| self.pending.get(id).map(|p| &p.v))
    }

    /// Status of a vertex held in the DAG (not pending).
    pub fn vertex_status(&self, id: &VertexId) -> Option<VertexStatus> {
        self.vertices.get(id).map(|r| r.status).or_else(|| self.forgotten.contains(id).then_some(VertexStatus::Final))
    }

    /// Confidence of a vertex (FR-004), 1.0 once final.
    pub fn confidence(&self, id: &VertexId) -> Option<f64> {
        self.vertices.get(id).map(|r| r.confidence).or_else(|| self.forgotten.contains(id).then_some(1.0))
    }

    /// True if the DAG or the pending buffer holds `id` (the shell skips verifying duplicates).
    pub fn contains(&self, id: &VertexId) -> bool {
        self.vertices.contains_key(id) || self.pending.contains_key(id) || self.forgotten.contains(id)
    }

    /// Records held, for the memory metrics: (vertex records, conflict sets, forgotten ids,
    /// forgotten decided keys).
    pub fn record_counts(&self) -> (usize, usize, usize, usize) {
        (self.vertices.len(), self.sets.len(), self.forgotten.len(), self.decided_keys.len())
    }

    /// Score of every peer (3.7.2).
    pub fn peer_scores(&self) -> Vec<(NodeId, PeerScore)> {
        self.peers.iter().copied().zip(self.scores.iter().cloned()).collect()
    }

    /// Whether `peer` is excluded from sampling now.
    pub fn is_excluded(&self, peer: &NodeId) -> bool {
        self.peer_idx.get(peer).is_some_and(|&i| self.scores[i].excluded)
    }

    /// One line per processing vertex (oldest first, at most `max`): for debugging stuck runs.
    pub fn debug_processing(&mut self, max: usize) -> Vec<String> {
        let ids: Vec<VertexId> = self.processing.values().take(max).map(|e| e.id).collect();
        let mut out = Vec::new();
        for id in ids {
            let strong = self.strongly_preferred(&id);
            let r = &self.vertices[&id];
            let parents: Vec<String> = r.v.parents.iter().map(|p| format!("{p}:{:?}", self.parent_state(p))).collect();
            let keys: Vec<String> = r.v.conflict_keys.iter().map(|k| {
                let local = self.sets.get(k).map(|s| (s.preferred(), s.decided, s.lock, s.members.len()));
                let remote = self.remote_sets.get(k).map(|s| (s.preferred, s.decided));
                format!("{}: local {local:?} remote {remote:?}", hex8(&k.0))
            }).collect();
            out.push(format!("{id} succ {} conf {:.2} rounds {} strong {strong} claiming {} parents {parents:?} keys {keys:?}", r.successes, r.confidence, r.rounds, r.claiming));
        }
        out
    }

    /// Current preference of the local conflict set of `key`.
    pub fn preference(&self, key: &ConflictKey) -> Option<VertexId> {
        self.sets.get(key).map(|s| s.preferred()).or_else(|| self.decided_keys.get(key).copied())
    }

    // ------------------------------------------------------------------ poll_*

    /// Next output, in order. Drain after every `handle`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the shell must call `handle(t, Event::Timer)` next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.next_frontier_at;
        if !self.waiting.is_empty() {
            t = t.min(self.next_fetch_retry_at.max(self.now + 1));
        }
        if !self.processing.is_empty() {
            let poll_at = if self.polls.len() < self.poll_window {
                // The next aged vertex may only become pollable later.
                let first_age = self.processing.values().next().map(|e| e.arrival_us + self.params.poll_min_age_us).unwrap_or(0);
                self.next_poll_at.max(first_age)
            } else {
                u64::MAX
            };
            t = t.min(poll_at);
        }
        for p in self.polls.values() {
            t = t.min(p.deadline_us);
            if let Some(a) = p.alpha_at {
                t = t.min(a + (a - p.sent_us).max(1_000));
            }
        }
        // Deadlines grow with the query id (constant timeout), so the first closed poll is due first.
        if let Some(c) = self.closed.values().next().map(|c| c.deadline_us) {
            t = t.min(c);
        }
        Some(t.max(self.now))
    }

    // ------------------------------------------------------------------ handle

    /// Feeds one event at time `now` (monotonic microseconds; never goes back).
    pub fn handle(&mut self, now: u64, event: Event) -> ConsensusResult<()> {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = self.now.max(now);
        let now = self.now;
        let r = match event {
            Event::Submit { payload, conflict_keys, client_tag, timestamp_ms } => {
                self.submit(now, payload, conflict_keys, client_tag, timestamp_ms).map(|_| ())
            }
            Event::Vertex { from, vertex } => {
                self.on_vertex(now, from, vertex, true);
                Ok(())
            }
            Event::Query { from, query } => {
                self.on_query(now, from, &query);
                Ok(())
            }
            Event::Response { from, response } => {
                self.on_response(now, from, response);
                Ok(())
            }
            Event::VertexRequest { from, request } => {
                self.on_vertex_request(from, request);
                Ok(())
            }
            Event::VertexReply { from, vertices } => {
                for v in vertices.into_iter().take(REPLY_VERTICES_MAX) {
                    self.on_vertex(now, from, v, false);
                }
                Ok(())
            }
            Event::Frontier { from, frontier } => {
                self.on_frontier(from, &frontier);
                Ok(())
            }
            Event::Timer => Ok(()),
            Event::PeerReachability { peer, reachable } => {
                if let Some(&i) = self.peer_idx.get(&peer) {
                    if self.unreachable[i] == reachable {
                        self.unreachable[i] = !reachable;
                        self.refresh_exclusions(now);
                    }
                }
                Ok(())
            }
            Event::InvalidMessage { from, kind } => {
                if let Some(&i) = self.peer_idx.get(&from) {
                    self.incident(now, i, kind, None);
                }
                Ok(())
            }
            Event::Alert { from: _, accused, evidence } => {
                self.on_alert(now, accused, evidence);
                Ok(())
            }
            Event::FromShard(msg) => {
                self.on_shard_msg(now, msg);
                Ok(())
            }
        };
        self.tick(now);
        debug_assert!(self.actions.len() < ACTIONS_MAX, "shell does not drain actions");
        #[cfg(debug_assertions)]
        self.check_invariants();
        r
    }

    /// Before [`Core::restore`] on a node of S > 1 shards: the decided statuses of vertices owned
    /// by other shards (read from their stores) that this shard's stored vertices name as
    /// parents, so those are not left pending for a cross-shard answer. Final and rejected are
    /// forever, so a stored decision is as good as a fresh `ShardMsg::Status`.
    pub fn restore_remote_facts(&mut self, facts: impl IntoIterator<Item = (VertexId, VertexStatus)>) {
        for (id, st) in facts {
            if st == VertexStatus::Processing || shard_of_vertex(&id, self.shard_count) == self.shard {
                continue;
            }
            let e = self.remote_parents.entry(id).or_default();
            debug_assert!(e.status.is_none_or(|old| old == st), "a decided remote status changed");
            e.status = Some(st);
            e.strong = st == VertexStatus::Final;
        }
    }

    /// Restores one final vertex without its record, as if long forgotten (restart of a node
    /// with a long history: holding every stored vertex in full would need ~6 KB each). Call it
    /// for the older finals, in any order, all of them before [`Core::restore`] gets the rest
    /// (the last few finals and every non-final vertex): each takes a position (the store keeps
    /// the real ones; the core keeps the count dense), counts in `finalized` and the digest, and
    /// decides its locally owned conflict keys.
    pub fn restore_forgotten_final(&mut self, id: VertexId, conflict_keys: &[ConflictKey]) {
        if id == self.genesis.id || self.contains(&id) || shard_of_vertex(&id, self.shard_count) != self.shard {
            return;
        }
        debug_assert!(self.processing.is_empty(), "forgotten finals are restored before anything else");
        self.forgotten.insert(id);
        self.final_position += 1;
        self.finalized += 1;
        self.digest.add(&id.0);
        for k in conflict_keys {
            if shard_of_key(k, self.shard_count) == self.shard {
                self.decided_keys.insert(*k, id);
            }
        }
    }

    /// Restores state from storage after a restart: `(vertex, status)` pairs in storage
    /// (arrival) order, parents before children. Final vertices get positions in the given
    /// order; nothing is re-persisted or re-gossiped; processing vertices re-enter polling.
    pub fn restore(&mut self, now: u64, items: impl IntoIterator<Item = (Arc<Vertex>, VertexStatus)>) {
        self.now = self.now.max(now);
        let mut finals = Vec::new();
        let mut rejects = Vec::new();
        for (v, st) in items {
            if v.id == self.genesis.id || self.vertices.contains_key(&v.id) {
                continue;
            }
            if shard_of_vertex(&v.id, self.shard_count) != self.shard {
                continue;
            }
            if !self.parents_known(&v) {
                // Storage order is arrival order, so this only happens for a vertex whose parent
                // was never stored (a bug upstream); keep it pending instead of dropping it.
                self.pend(v, self.me, false);
                continue;
            }
            let id = v.id;
            self.insert(now, v, None, false, true);
            match st {
                VertexStatus::Final => finals.push(id),
                VertexStatus::Rejected => rejects.push(id),
                VertexStatus::Processing => {}
            }
        }
        for id in finals {
            if self.vertices.get(&id).is_some_and(|r| r.status == VertexStatus::Processing) {
                self.finalize(now, id, true);
            }
        }
        for id in rejects {
            self.reject(id, true);
        }
        self.actions.retain(|a| !matches!(a, Action::Persist { .. } | Action::Finalized { .. } | Action::Rejected { .. } | Action::SendVertex { .. }));
        self.bump_epoch();
    }

    // ------------------------------------------------------------------ submit

    fn submit(&mut self, now: u64, payload: Vec<u8>, keys: Vec<ConflictKey>, client_tag: u64, ts: u64) -> ConsensusResult<VertexId> {
        if self.vertices.len() >= VERTICES_MAX {
            return Err(ConsensusError::Capacity("VERTICES_MAX"));
        }
        if payload.len() > pqdag_wire::limits::PAYLOAD_BYTES_MAX || keys.len() > pqdag_wire::limits::CONFLICT_KEYS_MAX {
            return Err(ConsensusError::Dag("payload or conflict keys over the wire limits".into()));
        }
        let mut keys = keys;
        keys.sort_unstable();
        keys.dedup();
        // An honest node never double-spends itself: that would be equivocation (3.7.2).
        for k in &keys {
            if let Some(set) = self.sets.get(k) {
                if set.members.iter().any(|m| m.creator == self.me && self.vertices.get(&m.id).is_none_or(|r| r.status != VertexStatus::Rejected)) {
                    return Err(ConsensusError::Dag(format!("own vertex already claims key {}", hex8(&k.0))));
                }
            }
        }
        let parents = self.select_parents(now, &keys);
        let mut v = Vertex::new_unsigned(parents, payload, keys, ts, self.me);
        v.signature = self.signer.sign(Domain::Vertex, v.signed_bytes());
        let v = Arc::new(v);
        let id = v.id;
        let owner = shard_of_vertex(&id, self.shard_count);
        if owner != self.shard {
            self.push(Action::ToShard { shard: owner, msg: ShardMsg::Adopt { vertex: v, client_tag } });
            return Ok(id);
        }
        self.adopt(now, v, client_tag);
        Ok(id)
    }

    fn adopt(&mut self, now: u64, v: Arc<Vertex>, client_tag: u64) {
        let id = v.id;
        if self.contains(&id) {
            return;
        }
        // `insert` queues Persist before the creator's SendVertex (persist-before-send); when
        // parents on other shards are not confirmed yet, both happen on release.
        if self.parents_known(&v) {
            self.insert(now, v, Some(self.me), true, false);
        } else {
            let missing = self.missing_parents(&v);
            self.pend(v, self.me, true);
            self.request_missing(now, self.me, &missing);
        }
        self.push(Action::Created { client_tag, id });
    }

    /// FR-003: recent (10 s), strongly preferred, high confidence (>0.8) first, prefer
    /// not-yet-final tips (no children: keeps the DAG narrow and every new vertex a transitive
    /// vote for many), never rejected; fall back to recent finals, then genesis.
    fn select_parents(&mut self, now: u64, keys: &[ConflictKey]) -> Vec<VertexId> {
        let want = self.params.parents;
        let mut cands: Vec<(u8, u64, VertexId)> = Vec::with_capacity(RECENT_MAX);
        let recent: Vec<VertexId> = self.recent.iter().rev().copied().collect();
        for id in recent {
            let Some(r) = self.vertices.get(&id) else { continue };
            if r.status == VertexStatus::Rejected || now.saturating_sub(r.arrival_us) > PARENT_RECENT_US {
                continue;
            }
            let (processing, tip, conf, seq) = (r.status == VertexStatus::Processing, r.child_count == 0, r.confidence, r.seq);
            if processing && !self.strongly_preferred(&id) {
                continue;
            }
            // Never build on a vertex that spends (or descends from one that spends) a key this
            // submission spends: the new vertex could never win (see `spends_ancestor_key`).
            if processing && !keys.is_empty() && (r_keys_overlap(&self.vertices[&id].v.conflict_keys, keys) || self.spends_ancestor_key(keys, &[id])) {
                continue;
            }
            let score = u8::from(tip) * 4 + u8::from(processing) * 2 + u8::from(conf > 0.8);
            cands.push((score, seq, id));
        }
        cands.sort_unstable_by_key(|c| std::cmp::Reverse((c.0, c.1)));
        let mut out: Vec<VertexId> = Vec::with_capacity(want);
        // Random pick among the best few: balanced parent distribution (FR-003).
        let top = cands.len().min(want * 2);
        let mut pool: Vec<VertexId> = cands[..top].iter().map(|c| c.2).collect();
        while out.len() < want && !pool.is_empty() {
            let i = self.rng.random_range(0..pool.len());
            out.push(pool.swap_remove(i));
        }
        for id in cands.iter().skip(top).map(|c| c.2).chain(self.recent_final.iter().rev().copied()) {
            if out.len() >= want {
                break;
            }
            if !out.contains(&id) {
                out.push(id);
            }
        }
        if out.is_empty() {
            out.push(self.genesis.id);
        }
        out
    }

    // ------------------------------------------------------------------ DAG intake

    fn on_vertex(&mut self, now: u64, from: NodeId, v: Arc<Vertex>, gossip: bool) {
        self.requested.remove(&v.id);
        if self.contains(&v.id) || v.parents.is_empty() {
            return;
        }
        if shard_of_vertex(&v.id, self.shard_count) != self.shard {
            return; // mis-routed by the shell; not ours
        }
        if self.vertices.len() >= VERTICES_MAX {
            return;
        }
        if self.parents_known(&v) {
            self.insert(now, v, Some(from), gossip, false);
        } else {
            let missing = self.missing_parents(&v);
            self.pend(v, from, gossip);
            self.request_missing(now, from, &missing);
        }
    }

    fn parent_state(&self, p: &VertexId) -> Option<VertexStatus> {
        if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.genesis.id {
            self.vertices.get(p).map(|r| r.status).or_else(|| self.forgotten.contains(p).then_some(VertexStatus::Final))
        } else {
            self.remote_parents.get(p).and_then(|r| r.status)
        }
    }

    fn parents_known(&self, v: &Vertex) -> bool {
        v.parents.iter().all(|p| self.parent_state(p).is_some())
    }

    fn missing_parents(&self, v: &Vertex) -> Vec<VertexId> {
        v.parents.iter().filter(|p| self.parent_state(p).is_none()).copied().collect()
    }

    fn pend(&mut self, v: Arc<Vertex>, from: NodeId, gossip: bool) {
        let id = v.id;
        if self.pending.contains_key(&id) {
            return;
        }
        while self.pending.len() >= PENDING_MAX {
            let Some(old) = self.pending_order.pop_front() else { break };
            if let Some(e) = self.pending.remove(&old) {
                self.pending_evicted += 1;
                for p in &e.v.parents {
                    if let Some(list) = self.waiting.get_mut(p) {
                        list.retain(|c| *c != old);
                        if list.is_empty() {
                            self.waiting.remove(p);
                        }
                    }
                }
            }
        }
        for p in self.missing_parents(&v) {
            self.waiting.entry(p).or_default().push(id);
        }
        self.pending_order.push_back(id);
        self.pending.insert(id, PendingEntry { v, from, gossip });
    }

    /// Asks `from` for missing local ids; watches missing remote-shard parents.
    fn request_missing(&mut self, now: u64, from: NodeId, missing: &[VertexId]) {
        let mut ids = Vec::new();
        for p in missing {
            if self.pending.contains_key(p) {
                continue;
            }
            if shard_of_vertex(p, self.shard_count) != self.shard {
                let e = self.remote_parents.entry(*p).or_default();
                if !e.watched {
                    e.watched = true;
                    let owner = shard_of_vertex(p, self.shard_count);
                    self.push(Action::ToShard { shard: owner, msg: ShardMsg::Watch { id: *p, subscriber: self.shard, hint: from } });
                }
                continue;
            }
            if self.requested.get(p).is_some_and(|&t| t > now) {
                continue;
            }
            if self.requested.len() >= REQUESTED_MAX {
                self.requested.retain(|_, t| *t > now);
                if self.requested.len() >= REQUESTED_MAX {
                    break;
                }
            }
            self.requested.insert(*p, now + FETCH_RETRY_US);
            ids.push(*p);
            if ids.len() >= REQUEST_IDS_MAX {
                break;
            }
        }
        if !ids.is_empty() && from != self.me {
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            self.push(Action::RequestVertices { to: from, request: VertexRequest { request_id, ids } });
        }
    }

    /// Adds a vertex whose parents are all known; releases pending children. `quiet` is the
    /// restore path (no persist, no gossip).
    fn insert(&mut self, now: u64, v: Arc<Vertex>, from: Option<NodeId>, relay: bool, quiet: bool) {
        let mut work = vec![(v, from, relay)];
        let mut budget = PENDING_MAX + 1;
        while let Some((v, from, relay)) = work.pop() {
            budget -= 1;
            assert!(budget > 0 || work.is_empty(), "insert worklist over bound");
            let id = v.id;
            debug_assert!(!self.vertices.contains_key(&id));
            debug_assert!(self.parents_known(&v));
            let mut status = VertexStatus::Processing;
            if v.parents.iter().any(|p| self.parent_state(p) == Some(VertexStatus::Rejected)) {
                status = VertexStatus::Rejected;
            }
            // A vertex spending a key one of its own ancestors spends can never be strongly
            // preferred (it and that ancestor would both need to be the set's preference): it is
            // invalid, and every honest node sees the same ancestry, so all reject it.
            if status == VertexStatus::Processing && self.spends_ancestor_key(&v.conflict_keys, &v.parents) {
                status = VertexStatus::Rejected;
            }
            let seq = self.seq;
            self.seq += 1;
            for p in &v.parents {
                if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.genesis.id {
                    if let Some(r) = self.vertices.get_mut(p) {
                        r.child_count += 1;
                        // Children are needed only while the parent can still be rejected or
                        // polled; a final vertex keeps just the count (memory).
                        if r.status != VertexStatus::Final {
                            r.children.push(id);
                        }
                        if r.status == VertexStatus::Processing && status == VertexStatus::Processing {
                            if let Some(e) = self.processing.get_mut(&r.seq) {
                                e.min_child_seq = e.min_child_seq.min(seq);
                            }
                        }
                    }
                } else if let Some(r) = self.remote_parents.get_mut(p) {
                    r.children.push(id);
                }
            }
            self.vertices.insert(
                id,
                Rec {
                    v: v.clone(),
                    status,
                    seq,
                    arrival_us: now,
                    confidence: 0.0,
                    polled: false,
                    successes: 0,
                    rounds: 0,
                    children: Vec::new(),
                    child_count: 0,
                    strong_epoch: 0,
                    strong: false,
                    mark: 0,
                    mask: 0,
                    in_conflict: false,
                    claiming: 0,
                    claim_granted: Vec::new(),
                },
            );
            if status == VertexStatus::Processing {
                self.processing.insert(seq, ProcEntry { id, arrival_us: now, min_child_seq: u64::MAX });
            } else {
                self.rejected += 1;
            }
            if !quiet {
                self.push(Action::Persist { vertex: v.clone(), status });
                if status == VertexStatus::Rejected {
                    self.push(Action::Rejected { id });
                }
            }
            // Conflict sets (4.5): join every set this vertex claims.
            for k in v.conflict_keys.clone() {
                self.join_set(now, &v, k);
            }
            if self.recent.len() >= RECENT_MAX {
                self.recent.pop_front();
            }
            self.recent.push_back(id);
            if relay && !quiet {
                let own = from == Some(self.me);
                let to = if own { self.gossip_targets(None, true) } else { self.gossip_targets(from, false) };
                if !to.is_empty() {
                    self.push(Action::SendVertex { to, vertex: v.clone() });
                }
            }
            self.notify_watchers(id);
            if let Some(children) = self.waiting.remove(&id) {
                for c in children {
                    let ready = self.pending.get(&c).is_some_and(|e| self.parents_known(&e.v));
                    if ready {
                        if let Some(e) = self.pending.remove(&c) {
                            work.push((e.v, Some(e.from), e.gossip));
                        }
                    }
                }
            }
        }
    }

    /// True if a processing member of a local set of one of `keys` is an ancestor of `parents`
    /// (walk pruned by arrival sequence: an ancestor is always older).
    fn spends_ancestor_key(&self, keys: &[ConflictKey], parents: &[VertexId]) -> bool {
        for k in keys {
            let Some(set) = self.sets.get(k) else { continue };
            for m in &set.members {
                let Some(mr) = self.vertices.get(&m.id) else { continue };
                if mr.status != VertexStatus::Processing {
                    continue;
                }
                let target_seq = mr.seq;
                let mut stack: Vec<VertexId> = parents.to_vec();
                let mut seen: std::collections::HashSet<VertexId> = std::collections::HashSet::new();
                let mut steps = 0usize;
                while let Some(x) = stack.pop() {
                    steps += 1;
                    if steps > self.processing.len() * 8 + 64 {
                        break;
                    }
                    if x == m.id {
                        return true;
                    }
                    if !seen.insert(x) {
                        continue;
                    }
                    let Some(r) = self.vertices.get(&x) else { continue };
                    if r.status != VertexStatus::Processing || r.seq < target_seq {
                        continue;
                    }
                    stack.extend(r.v.parents.iter().copied());
                }
            }
        }
        false
    }

    fn join_set(&mut self, now: u64, v: &Arc<Vertex>, key: ConflictKey) {
        let _ = now;
        let owner = shard_of_key(&key, self.shard_count);
        if owner != self.shard {
            let rs = self.remote_sets.entry(key).or_default();
            rs.mine.push(v.id);
            if rs.decided && rs.preferred != Some(v.id) {
                self.reject(v.id, false);
            }
            self.push(Action::ToShard { shard: owner, msg: ShardMsg::Join { key, member: v.id, timestamp_ms: v.timestamp_ms, owner: self.shard } });
            return;
        }
        let member = Member { id: v.id, count: 0, confidence: 0.0, timestamp_ms: v.timestamp_ms, creator: v.creator, owner: self.shard, rejected: false };
        self.join_local(key, member);
    }

    fn join_local(&mut self, key: ConflictKey, member: Member) {
        if let Some(&winner) = self.decided_keys.get(&key) {
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
        let set = self.sets.entry(key).or_default();
        if set.index(&member.id).is_some() {
            return;
        }
        if set.members.len() >= SET_MEMBERS_MAX {
            // Spam: a set this large is already contested; the newcomer cannot win it.
            let id = member.id;
            if member.owner == self.shard {
                self.reject(id, false);
            }
            return;
        }
        let equivocator = set.members.iter().find(|m| m.creator == member.creator && m.owner == self.shard && member.owner == self.shard).map(|m| m.id);
        let decided = set.decided;
        set.members.push(member.clone());
        let idx = set.members.len() - 1;
        let newly_contested = set.members.len() == 2 && decided.is_none();
        let mut changed = false;
        if set.members.len() == 1 {
            set.pref = 0;
            set.last_winner = 0;
        } else if decided.is_none() && ConflictSet::better(&set.members[idx], &set.members[set.pref]) {
            set.pref = idx;
            changed = true;
        }
        let pref = set.preferred();
        let multi = set.members.len() > 1;
        let owners: Vec<u32> = set.members.iter().map(|m| m.owner).collect();
        let member_ids: Vec<VertexId> = set.members.iter().filter(|m| m.owner == self.shard).map(|m| m.id).collect();
        if multi {
            for id in member_ids {
                if let Some(r) = self.vertices.get_mut(&id) {
                    r.in_conflict = true;
                }
            }
        }
        if newly_contested {
            self.contested += 1;
        }
        if changed {
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

    fn broadcast_preference(&mut self, key: ConflictKey, preferred: VertexId, decided: bool, owners: &[u32]) {
        let mut sent = 0u64;
        for &o in owners {
            if o != self.shard && sent & (1 << o) == 0 {
                sent |= 1 << o;
                self.push(Action::ToShard { shard: o, msg: ShardMsg::Preference { key, preferred, decided } });
            }
        }
    }

    fn equivocation(&mut self, a: VertexId, b: VertexId) {
        let (Some(ra), Some(rb)) = (self.vertices.get(&a), self.vertices.get(&b)) else { return };
        let creator = ra.v.creator;
        if creator == self.me {
            return;
        }
        // A stripped (old final) vertex no longer carries its signature: the equivocation is
        // still scored, but without a transferable proof.
        let proof = !ra.v.signature.is_empty() && !rb.v.signature.is_empty();
        let ev = proof.then(|| Evidence::Equivocation { a: (*ra.v).clone(), b: (*rb.v).clone() });
        if let Some(&i) = self.peer_idx.get(&creator) {
            let now = self.now;
            self.incident(now, i, Misbehaviour::Equivocation, ev);
        }
    }

    // ------------------------------------------------------------------ votes

    /// Strongly preferred (3.4.3 adapted): not rejected, preferred in all its sets, and every
    /// non-final parent strongly preferred. Memoised per preference epoch, iterative.
    fn strongly_preferred(&mut self, id: &VertexId) -> bool {
        let epoch = self.epoch;
        let mut stack: Vec<(VertexId, bool)> = vec![(*id, false)];
        let mut steps = 0usize;
        while let Some((x, expanded)) = stack.pop() {
            steps += 1;
            debug_assert!(steps <= 4 * (self.vertices.len() + 8) * 9, "strong-preference walk over bound");
            let Some(r) = self.vertices.get(&x) else { continue };
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
                    if let Some(pr) = self.vertices.get(p) {
                        if pr.status == VertexStatus::Processing && pr.strong_epoch != epoch {
                            stack.push((*p, false));
                        }
                    }
                }
                continue;
            }
            let mut ok = self.preferred_everywhere(&r.v);
            if ok {
                for p in &r.v.parents {
                    let good = if shard_of_vertex(p, self.shard_count) == self.shard || *p == self.genesis.id {
                        match self.vertices.get(p) {
                            Some(pr) => match pr.status {
                                VertexStatus::Final => true,
                                VertexStatus::Rejected => false,
                                VertexStatus::Processing => pr.strong,
                            },
                            None => self.forgotten.contains(p),
                        }
                    } else {
                        self.remote_parents.get(p).is_some_and(|rp| rp.status == Some(VertexStatus::Final) || (rp.status == Some(VertexStatus::Processing) && rp.strong))
                    };
                    if !good {
                        ok = false;
                        break;
                    }
                }
            }
            if let Some(r) = self.vertices.get_mut(&x) {
                r.strong = ok;
                r.strong_epoch = epoch;
            }
        }
        self.vertices.get(id).is_some_and(|r| match r.status {
            VertexStatus::Final => true,
            VertexStatus::Rejected => false,
            VertexStatus::Processing => r.strong,
        })
    }

    fn preferred_everywhere(&self, v: &Vertex) -> bool {
        v.conflict_keys.iter().all(|k| {
            if shard_of_key(k, self.shard_count) == self.shard {
                self.sets.get(k).is_some_and(|s| s.preferred() == v.id && s.lock.is_none_or(|l| l == v.id))
            } else {
                self.remote_sets.get(k).is_some_and(|s| s.preferred == Some(v.id))
            }
        })
    }

    fn vote_for(&mut self, id: &VertexId) -> Vote {
        let epoch = self.epoch;
        match self.vertices.get(id).map(|r| (r.status, r.strong_epoch == epoch, r.strong)) {
            // Cached for this preference epoch: one lookup.
            Some((VertexStatus::Processing, true, strong)) => if strong { Vote::Yes } else { Vote::No },
            None if self.forgotten.contains(id) => Vote::Yes,
            None => Vote::Unknown,
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

    fn on_query(&mut self, now: u64, from: NodeId, q: &Query) {
        if !self.peer_idx.contains_key(&from) {
            return;
        }
        // Queries of excluded peers are still answered: an excluded honest peer (say, one that
        // restarted after a crash) must be able to catch up; only its votes are ignored.
        if q.ids.len() > QUERY_IDS_MAX {
            return;
        }
        let mut votes = Vec::with_capacity(q.ids.len());
        let mut unknown = Vec::new();
        for id in &q.ids {
            let vote = self.vote_for(id);
            if vote == Vote::Unknown && !self.pending.contains_key(id) && shard_of_vertex(id, self.shard_count) == self.shard {
                unknown.push(*id);
            }
            votes.push(vote as u8);
        }
        if !unknown.is_empty() {
            self.request_missing(now, from, &unknown);
        }
        let mut response = Response { query_id: q.query_id, responder: self.me, ids_digest: q.ids_digest(), votes, signature: Vec::new() };
        response.signature = self.signer.sign(Domain::Response, &response.signed_bytes());
        self.push(Action::SendResponse { to: from, response });
    }

    // ------------------------------------------------------------------ polls

    fn eligible_alpha(&self, k: usize) -> usize {
        if k >= self.params.sample_size {
            self.params.alpha
        } else {
            let scaled = (self.params.alpha * k).div_ceil(self.params.sample_size);
            scaled.max(k / 2 + 1).min(k)
        }
    }

    /// Aged frontier: processing vertices older than `poll_min_age` with no aged processing
    /// child. Returns (ids, any aged processing vertex).
    fn aged_frontier(&mut self, now: u64) -> Vec<VertexId> {
        let cutoff = now.saturating_sub(self.params.poll_min_age_us);
        let mut last_aged = 0u64;
        let mut cands: Vec<(u64, VertexId)> = Vec::new();
        for (&seq, e) in &self.processing {
            if e.arrival_us > cutoff {
                break;
            }
            last_aged = seq;
            cands.push((e.min_child_seq, e.id));
        }
        let mut tips: Vec<VertexId> = if self.contested == 0 && self.shard_count == 1 {
            // Fast path: without contested sets every processing vertex is strongly preferred.
            cands.into_iter().filter(|(c, _)| *c > last_aged).map(|(_, id)| id).collect()
        } else {
            // The strongly-preferred frontier: a vertex is covered only by an aged, strongly
            // preferred child. Otherwise ancestors whose every child descends from a losing
            // conflict member would never be credited (and never finalize).
            self.poll_no += 1;
            let mark = self.poll_no;
            let mut out = Vec::new();
            for (_, id) in cands.into_iter().rev() {
                let covered = self.vertices.get(&id).is_some_and(|r| r.mark == mark);
                if !covered {
                    out.push(id);
                }
                if self.strongly_preferred(&id) {
                    let v = match self.vertices.get(&id) {
                        Some(r) => r.v.clone(),
                        None => continue,
                    };
                    for p in &v.parents {
                        if let Some(pr) = self.vertices.get_mut(p) {
                            pr.mark = mark;
                        }
                    }
                }
            }
            out.reverse();
            out
        };
        if tips.len() > QUERY_IDS_MAX {
            tips.drain(..tips.len() - QUERY_IDS_MAX);
        }
        tips
    }

    fn launch_poll(&mut self, now: u64) {
        if self.polls.len() >= self.poll_window || now < self.next_poll_at || self.processing.is_empty() {
            return;
        }
        if now >= self.exclusion_refresh_at {
            self.refresh_exclusions(now);
        }
        self.next_poll_at = now + self.params.poll_interval_us;
        let k = self.params.sample_size.min(self.eligible.len());
        if k == 0 {
            return;
        }
        let ids = self.aged_frontier(now);
        if ids.is_empty() {
            return;
        }
        // Uniform sample without replacement (partial Fisher-Yates).
        let mut pool = self.eligible.clone();
        for i in 0..k {
            let j = self.rng.random_range(i..pool.len());
            pool.swap(i, j);
        }
        pool.truncate(k);
        let query_id = (self.next_query_seq << 8) | u64::from(self.shard);
        self.next_query_seq += 1;
        let mut query = Query { query_id, requester: self.me, ids, signature: Vec::new() };
        query.signature = self.signer.sign(Domain::Query, &query.signed_bytes());
        let digest = query.ids_digest();
        let n = query.ids.len();
        let alpha = self.eligible_alpha(k);
        let to = pool.iter().map(|&i| self.peers[i]).collect();
        let ids = query.ids.clone();
        self.polls.insert(
            query_id,
            Poll {
                sent_us: now,
                deadline_us: now + self.params.query_timeout_us,
                sample: pool,
                ids,
                digest,
                yes: vec![0; n],
                no: vec![0; n],
                responded: 0,
                responses: vec![None; k],
                alpha,
                alpha_at: None,
                half_at: None,
            },
        );
        self.push(Action::SendQuery { to, query: Arc::new(query) });
    }

    fn on_response(&mut self, now: u64, from: NodeId, resp: Response) {
        let Some(&pi) = self.peer_idx.get(&from) else { return };
        if self.scores[pi].excluded {
            return; // 3.7.3: responses of excluded peers are ignored
        }
        let qid = resp.query_id;
        let Some(poll) = self.polls.get_mut(&qid) else {
            if let Some(c) = self.closed.get_mut(&qid) {
                if let Some(pos) = c.sample.iter().position(|&s| s == pi) {
                    c.missing &= !(1u64 << pos);
                }
            }
            return;
        };
        let Some(pos) = poll.sample.iter().position(|&s| s == pi) else { return };
        let bit = 1u64 << pos;
        if resp.ids_digest != poll.digest || resp.votes.len() != poll.ids.len() || resp.votes.iter().any(|&b| Vote::from_u8(b).is_none()) {
            self.incident(now, pi, Misbehaviour::Malformed, None);
            return;
        }
        if poll.responded & bit != 0 {
            let differs = poll.responses[pos].as_ref().is_some_and(|r| r.votes != resp.votes);
            if differs {
                let a = poll.responses[pos].clone();
                if let Some(a) = a {
                    self.incident(now, pi, Misbehaviour::ConflictingVotes, Some(Evidence::ConflictingResponses { a, b: resp }));
                }
            }
            return;
        }
        poll.responded |= bit;
        for (i, &b) in resp.votes.iter().enumerate() {
            match Vote::from_u8(b) {
                Some(Vote::Yes) => poll.yes[i] |= bit,
                Some(Vote::No) => poll.no[i] |= bit,
                _ => {}
            }
        }
        poll.responses[pos] = Some(resp);
        let got = poll.responded.count_ones() as usize;
        if got >= poll.alpha && poll.alpha_at.is_none() {
            poll.alpha_at = Some(now);
        }
        if 2 * got >= poll.sample.len() && poll.half_at.is_none() {
            poll.half_at = Some(now);
        }
        if got == poll.sample.len() {
            self.close_poll(now, qid);
        }
    }

    fn close_poll(&mut self, now: u64, qid: u64) {
        let Some(poll) = self.polls.remove(&qid) else { return };
        self.polls_completed += 1;
        self.adapt_window(&poll);
        let k = poll.sample.len();
        let got = poll.responded.count_ones() as usize;
        let short = got < poll.alpha;
        if short {
            self.polls_short += 1;
        }
        self.poll_outcomes = (self.poll_outcomes << 1) | u8::from(short);
        // Late answers are not timeouts: remember who is missing until the deadline.
        let missing = !poll.responded & if k >= 64 { u64::MAX } else { (1u64 << k) - 1 };
        if self.closed.len() >= POLL_CLOSED_MAX {
            if let Some((&old, _)) = self.closed.iter().next() {
                self.expire_closed(old);
            }
        }
        self.closed.insert(qid, Closed { deadline_us: poll.deadline_us, sample: poll.sample.clone(), missing });

        // Transitive credit, once per poll: children before parents by arrival sequence.
        self.poll_no += 1;
        let mark = self.poll_no;
        let mut heap: BinaryHeap<(u64, VertexId)> = BinaryHeap::new();
        for (i, id) in poll.ids.iter().enumerate() {
            if let Some(r) = self.vertices.get_mut(id) {
                if r.status != VertexStatus::Processing {
                    continue;
                }
                if r.mark != mark {
                    r.mark = mark;
                    r.mask = 0;
                    heap.push((r.seq, *id));
                }
                r.mask |= poll.yes[i];
            }
        }
        // Confidence (FR-004), streaks and snowball inputs, fused into the walk: a vertex is
        // popped after all its children (higher sequence), so its mask is complete.
        let beta = self.params.beta;
        let max_rounds = self.params.max_rounds;
        let mut successes: Vec<(VertexId, f64)> = Vec::new();
        let mut candidates: Vec<VertexId> = Vec::new();
        while let Some((_, id)) = heap.pop() {
            let (v, mask) = match self.vertices.get_mut(&id) {
                Some(r) => {
                    let yes = r.mask.count_ones() as usize;
                    // Spec 3.5: ratio = positive / responses received (a lost or withheld answer
                    // does not drag confidence; alpha on absolute Yes counts keeps safety).
                    let ratio = if got == 0 { 0.0 } else { yes as f64 / got as f64 };
                    r.confidence = if r.polled { 0.9 * r.confidence + 0.1 * ratio } else { ratio };
                    r.polled = true;
                    r.rounds += 1;
                    if r.rounds == max_rounds {
                        self.stalled += 1;
                    }
                    if yes >= poll.alpha {
                        r.successes += 1;
                        if !r.v.conflict_keys.is_empty() {
                            successes.push((id, r.confidence));
                        }
                        if r.successes >= beta {
                            candidates.push(id);
                        }
                    } else {
                        r.successes = 0;
                    }
                    (r.v.clone(), r.mask)
                }
                None => continue,
            };
            for p in &v.parents {
                if let Some(pr) = self.vertices.get_mut(p) {
                    if pr.status != VertexStatus::Processing {
                        continue;
                    }
                    if pr.mark != mark {
                        pr.mark = mark;
                        pr.mask = 0;
                        heap.push((pr.seq, *p));
                    }
                    pr.mask |= mask;
                }
            }
        }
        candidates.reverse();
        successes.reverse();
        for (id, conf) in successes {
            self.snowball_success(id, conf);
        }
        // Finality (FR-005), ancestors first.
        for id in candidates {
            self.try_finalize(now, id);
        }
        // Vote-contradiction detection: a responder voting No where alpha said Yes on
        // conflict-free vertices, on most such ids, is flipping votes.
        let mut decided_ids = Vec::new();
        for (i, id) in poll.ids.iter().enumerate() {
            // Conflict-free ids, or ids final here by now (the network decided them): an honest
            // responder votes No on those only transiently.
            if poll.yes[i].count_ones() as usize >= poll.alpha && self.vertices.get(id).is_some_and(|r| !r.in_conflict || r.status == VertexStatus::Final) {
                decided_ids.push(i);
            }
        }
        if !decided_ids.is_empty() {
            for (pos, &pi) in poll.sample.iter().enumerate() {
                let bit = 1u64 << pos;
                if poll.responded & bit == 0 {
                    continue;
                }
                let against = decided_ids.iter().filter(|&&i| poll.no[i] & bit != 0).count();
                if against * 2 > decided_ids.len() {
                    self.incident(now, pi, Misbehaviour::ConflictingVotes, None);
                }
            }
        }
    }

    /// Poll congestion control. A round costs every responder a verify and a signature whatever
    /// it carries, so N nodes with W polls in flight each queue N x W x k of them. When the
    /// machines cannot keep up, answers slow down, and more rounds in flight only lengthen the
    /// queues until queries time out and no round succeeds. So the window halves when half the
    /// sample took longer than a quarter of the query timeout to answer, and grows by one per
    /// prompt poll (TCP's AIMD, on delay as in Vegas). Missing answers are not a signal:
    /// withholders and partitions leave fast answers from the rest, and must not slow polling.
    fn adapt_window(&mut self, poll: &Poll) {
        let Some(half) = poll.half_at else { return };
        let slow = half.saturating_sub(poll.sent_us) > self.params.query_timeout_us / 4;
        self.poll_window = if slow { (self.poll_window / 2).max(1) } else { (self.poll_window + 1).min(self.params.polls_in_flight_max) };
        debug_assert!((1..=self.params.polls_in_flight_max).contains(&self.poll_window));
    }

    /// Polls allowed in flight now (the congestion window; `polls_in_flight_max` at most).
    pub fn poll_window(&self) -> usize {
        self.poll_window
    }

    fn expire_closed(&mut self, qid: u64) {
        let Some(c) = self.closed.remove(&qid) else { return };
        let now = self.now;
        // Only the peer-level signal (most peers silent) gates timeout penalties: polls also
        // come up short when a minority withholds answers, and withholders must be excluded.
        let suspected = self.outcomes.len() >= 16 && self.outcomes_timeouts * 2 > self.outcomes.len();
        for (pos, &pi) in c.sample.iter().enumerate() {
            let timed_out = c.missing & (1u64 << pos) != 0;
            if self.outcomes.len() >= TIMEOUT_WINDOW && self.outcomes.pop_front() == Some(true) {
                self.outcomes_timeouts -= 1;
            }
            self.outcomes.push_back(timed_out);
            if timed_out {
                self.outcomes_timeouts += 1;
            }
            let s = &mut self.scores[pi];
            s.window_queries += 1;
            s.window_timeouts += u32::from(timed_out);
            if s.window_queries >= PEER_TIMEOUT_WINDOW {
                let excessive = s.window_timeouts * 2 > s.window_queries;
                s.window_queries = 0;
                s.window_timeouts = 0;
                // A partition times out honest peers too: do not punish them for it.
                if excessive && !suspected {
                    self.incident(now, pi, Misbehaviour::ExcessiveTimeouts, None);
                }
            }
        }
    }

    fn snowball_success(&mut self, id: VertexId, conf: f64) {
        let keys = match self.vertices.get(&id) {
            Some(r) => r.v.conflict_keys.clone(),
            None => return,
        };
        for key in keys {
            if shard_of_key(&key, self.shard_count) == self.shard {
                self.set_success(key, id, conf);
            } else {
                let owner = shard_of_key(&key, self.shard_count);
                self.push(Action::ToShard { shard: owner, msg: ShardMsg::Success { key, member: id, confidence: conf } });
            }
        }
    }

    fn set_success(&mut self, key: ConflictKey, id: VertexId, conf: f64) {
        let Some(set) = self.sets.get_mut(&key) else { return };
        if set.decided.is_some() {
            return;
        }
        let Some(i) = set.index(&id) else { return };
        set.members[i].count += 1;
        set.members[i].confidence = conf;
        if set.last_winner == i {
            set.streak += 1;
        } else {
            set.last_winner = i;
            set.streak = 1;
        }
        if i != set.pref && ConflictSet::better(&set.members[i], &set.members[set.pref]) {
            set.pref = i;
            let owners: Vec<u32> = set.members.iter().map(|m| m.owner).collect();
            self.broadcast_preference(key, id, false, &owners);
            self.bump_epoch();
        }
    }

    fn try_finalize(&mut self, now: u64, id: VertexId) {
        let Some(r) = self.vertices.get(&id) else { return };
        if r.status != VertexStatus::Processing || r.successes < self.params.beta || r.confidence < self.params.finalization_threshold || r.claiming > 0 {
            return;
        }
        let v = r.v.clone();
        if !v.parents.iter().all(|p| self.parent_state(p) == Some(VertexStatus::Final)) {
            return;
        }
        if !self.preferred_everywhere(&v) {
            return;
        }
        let remote: Vec<ConflictKey> = v.conflict_keys.iter().filter(|k| shard_of_key(k, self.shard_count) != self.shard).copied().collect();
        if remote.is_empty() {
            self.finalize(now, id, false);
            return;
        }
        // Cross-shard sets: lock each (2-phase), finalize when all granted.
        if let Some(r) = self.vertices.get_mut(&id) {
            r.claiming = remote.len() as u32;
            r.claim_granted.clear();
        }
        for key in remote {
            let owner = shard_of_key(&key, self.shard_count);
            self.push(Action::ToShard { shard: owner, msg: ShardMsg::Claim { key, member: id, owner: self.shard } });
        }
    }

    fn finalize(&mut self, now: u64, id: VertexId, quiet: bool) {
        let Some(r) = self.vertices.get_mut(&id) else { return };
        debug_assert_eq!(r.status, VertexStatus::Processing, "final/rejected are forever");
        if r.status != VertexStatus::Processing {
            return;
        }
        r.status = VertexStatus::Final;
        r.confidence = 1.0;
        r.children = Vec::new();
        let (seq, arrival, v) = (r.seq, r.arrival_us, r.v.clone());
        self.processing.remove(&seq);
        self.final_position += 1;
        self.finalized += 1;
        self.digest.add(&id.0);
        if self.recent_final.len() >= RECENT_FINAL_MAX {
            self.recent_final.pop_front();
        }
        self.recent_final.push_back(id);
        if self.params.strip_final_after_us > 0 {
            self.strip_queue.push_back((now, id));
        }
        if self.params.forget_final_after_us > 0 {
            self.forget_queue.push_back((now, id));
        }
        if !quiet {
            self.push(Action::Persist { vertex: v.clone(), status: VertexStatus::Final });
            self.push(Action::Finalized { id, position: self.final_position, latency_us: now.saturating_sub(arrival) });
        }
        self.notify_watchers(id);
        // 4.5: a finalized member decides its sets; losers and their descendants are rejected.
        for key in &v.conflict_keys {
            if shard_of_key(key, self.shard_count) == self.shard {
                self.decide(*key, id, quiet);
            }
        }
    }

    fn decide(&mut self, key: ConflictKey, winner: VertexId, quiet: bool) {
        let Some(set) = self.sets.get_mut(&key) else { return };
        debug_assert!(set.decided.is_none_or(|w| w == winner), "a conflict set is decided once");
        if set.decided.is_some() {
            return;
        }
        if set.members.len() >= 2 {
            self.contested = self.contested.saturating_sub(1);
        }
        set.decided = Some(winner);
        set.lock = None;
        if let Some(i) = set.index(&winner) {
            set.pref = i;
        }
        let losers: Vec<(VertexId, u32)> = set.members.iter().filter(|m| m.id != winner).map(|m| (m.id, m.owner)).collect();
        let owners: Vec<u32> = set.members.iter().map(|m| m.owner).collect();
        self.broadcast_preference(key, winner, true, &owners);
        for (l, owner) in losers {
            if owner == self.shard {
                self.reject(l, quiet);
            }
        }
    }

    /// Rejects `id` and every descendant (iterative, bounded by the DAG size).
    fn reject(&mut self, id: VertexId, quiet: bool) {
        let mut work = vec![id];
        while let Some(x) = work.pop() {
            assert!(!self.forgotten.contains(&x), "rejecting a final (forgotten) vertex {x:?}");
            let Some(r) = self.vertices.get_mut(&x) else { continue };
            // Final is forever: a loser or a loser's descendant is never final (4.5, FR-005).
            assert!(r.status != VertexStatus::Final, "rejecting a final vertex {x:?}");
            if r.status != VertexStatus::Processing {
                continue;
            }
            r.status = VertexStatus::Rejected;
            let (seq, v, children) = (r.seq, r.v.clone(), r.children.clone());
            self.processing.remove(&seq);
            self.rejected += 1;
            // A rejected child no longer covers its parents: recompute their earliest child.
            for p in &v.parents {
                let Some(pr) = self.vertices.get(p) else { continue };
                if pr.status != VertexStatus::Processing {
                    continue;
                }
                let pseq = pr.seq;
                let min = pr.children.iter().filter_map(|c| self.vertices.get(c)).filter(|c| c.status != VertexStatus::Rejected).map(|c| c.seq).min().unwrap_or(u64::MAX);
                if let Some(e) = self.processing.get_mut(&pseq) {
                    e.min_child_seq = min;
                }
            }
            if !quiet {
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

    /// A rejected member leaves the race: if it was the preference, the best live member takes
    /// over (otherwise the set would prefer a vertex that can never win, and stall).
    fn member_rejected(&mut self, key: ConflictKey, id: VertexId) {
        let Some(set) = self.sets.get_mut(&key) else { return };
        let Some(i) = set.index(&id) else { return };
        set.members[i].rejected = true;
        if set.decided.is_some() || set.pref != i {
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
            let owners: Vec<u32> = set.members.iter().map(|m| m.owner).collect();
            self.broadcast_preference(key, pref, false, &owners);
            self.bump_epoch();
        }
    }

    // ------------------------------------------------------------------ fetch / frontier

    fn on_vertex_request(&mut self, from: NodeId, req: VertexRequest) {
        let mut out = Vec::new();
        for id in req.ids.iter().take(REQUEST_IDS_MAX) {
            if let Some(v) = self.vertex(id) {
                if v.id != self.genesis.id && !v.signature.is_empty() {
                    out.push((**v).clone());
                }
            }
            if out.len() >= REPLY_VERTICES_MAX {
                break;
            }
        }
        if !out.is_empty() {
            self.push(Action::SendVertices { to: from, reply: VertexReply { request_id: req.request_id, vertices: out } });
        }
    }

    fn on_frontier(&mut self, from: NodeId, f: &Frontier) {
        let missing: Vec<VertexId> = f
            .tips
            .iter()
            .take(FRONTIER_IDS_MAX)
            .filter(|id| shard_of_vertex(id, self.shard_count) == self.shard && !self.contains(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            let now = self.now;
            self.request_missing(now, from, &missing);
        }
    }

    /// Re-requests parents that pending vertices still miss (a lost request or reply would
    /// otherwise leave them pending forever: later children only name pending ids). Asks a
    /// random peer, bounded per round.
    fn retry_fetches(&mut self, now: u64) {
        self.next_fetch_retry_at = now + FETCH_RETRY_US;
        if self.peers.is_empty() {
            return;
        }
        let mut missing: Vec<VertexId> = self
            .waiting
            .keys()
            .filter(|id| !self.pending.contains_key(*id) && !self.vertices.contains_key(*id) && !self.forgotten.contains(*id) && shard_of_vertex(id, self.shard_count) == self.shard)
            .filter(|id| self.requested.get(*id).is_none_or(|&t| t <= now))
            .take(REQUEST_IDS_MAX)
            .copied()
            .collect();
        missing.sort_unstable(); // HashMap order must not leak into the output (determinism)
        if missing.is_empty() {
            return;
        }
        let peer = self.peers[self.rng.random_range(0..self.peers.len())];
        self.request_missing(now, peer, &missing);
    }

    fn send_frontier(&mut self, now: u64) {
        self.next_frontier_at = now + self.params.frontier_interval_us;
        if self.peers.is_empty() {
            return;
        }
        let mut tips: Vec<VertexId> = self.processing.values().rev().filter(|e| e.min_child_seq == u64::MAX).take(FRONTIER_IDS_MAX / 2).map(|e| e.id).collect();
        tips.extend(self.recent_final.iter().rev().filter(|id| **id != self.genesis.id).take(4));
        if tips.is_empty() {
            return;
        }
        let n = self.params.frontier_fanout.min(self.peers.len());
        let mut to = Vec::with_capacity(n);
        for _ in 0..n * 3 {
            if to.len() >= n {
                break;
            }
            let p = self.peers[self.rng.random_range(0..self.peers.len())];
            if !to.contains(&p) {
                to.push(p);
            }
        }
        self.push(Action::SendFrontier { to, frontier: Frontier { sender: self.me, finalized_count: self.finalized, tips } });
    }

    /// 4.4: ring successors plus a random sample; everyone when N is small (the creator only).
    fn gossip_targets(&mut self, from: Option<NodeId>, own: bool) -> Vec<NodeId> {
        let n = self.nodes.len();
        let fan = self.params.gossip_neighbours + self.params.gossip_random;
        if n <= fan + 1 {
            return if own { self.peers.clone() } else { Vec::new() };
        }
        let me_pos = self.me_pos;
        let mut to = Vec::with_capacity(fan);
        for i in 1..=self.params.gossip_neighbours {
            to.push(self.nodes[(me_pos + i) % n]);
        }
        // Relays add one random peer to the ring: ~3 copies per node, O(log N) hops.
        let fan = if own { fan } else { self.params.gossip_neighbours + self.params.gossip_random.min(1) };
        let mut tries = 0;
        while to.len() < fan && tries < fan * 4 {
            tries += 1;
            let p = self.peers[self.rng.random_range(0..self.peers.len())];
            if !to.contains(&p) {
                to.push(p);
            }
        }
        if let Some(f) = from {
            to.retain(|p| *p != f);
        }
        to
    }

    // ------------------------------------------------------------------ scoring

    fn incident(&mut self, now: u64, pi: usize, kind: Misbehaviour, evidence: Option<Evidence>) {
        let s = &mut self.scores[pi];
        s.decay(now);
        s.score += kind.weight();
        s.incidents += 1;
        if evidence.is_some() {
            s.convicted = true;
        }
        let was = s.excluded;
        self.refresh_exclusions(now);
        let s = &self.scores[pi];
        if s.excluded && !was {
            let score = s.score;
            self.push(Action::Alert { peer: self.peers[pi], reason: kind, evidence: evidence.map(Box::new), score });
        }
    }

    /// Recomputes exclusions: convicted peers always; scored peers above 0.5, at most
    /// (N-1)/3 of them in total (highest scores first).
    fn refresh_exclusions(&mut self, now: u64) {
        self.exclusion_refresh_at = now + EXCLUSION_REFRESH_US;
        let cap = self.peers.len() / 3;
        let mut scored: Vec<(u64, usize)> = Vec::new();
        for (i, s) in self.scores.iter_mut().enumerate() {
            s.decay(now);
            // Hysteresis: an excluded peer returns only once its score fell below half the
            // threshold, so a persistent offender is out most of the time while one incident of
            // an honest peer (at most 0.5) never excludes it.
            let threshold = if s.excluded { EXCLUDE_SCORE / 2.0 } else { EXCLUDE_SCORE };
            s.excluded = s.convicted;
            if !s.convicted && s.score > threshold {
                scored.push((ordf(s.score / 8.0), i));
            }
        }
        let convicted = self.scores.iter().filter(|s| s.convicted).count();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        for &(_, i) in scored.iter().take(cap.saturating_sub(convicted)) {
            self.scores[i].excluded = true;
        }
        // Unreachable peers leave the sample only while this node and the reachable peers are a
        // strict majority of the cluster (never on both sides of a partition).
        let reachable = self.unreachable.iter().filter(|u| !**u).count();
        let majority = 2 * (reachable + 1) > self.peers.len() + 1;
        let skip_unreachable = majority && reachable > 0;
        self.eligible = (0..self.peers.len())
            .filter(|&i| !self.scores[i].excluded && !(skip_unreachable && self.unreachable[i]))
            .collect();
    }

    fn on_alert(&mut self, now: u64, accused: NodeId, evidence: Evidence) {
        // Receivers check the proof instead of trusting the reporter (signatures were checked
        // by the shell).
        let valid = match &evidence {
            Evidence::Equivocation { a, b } => a.creator == accused && b.creator == accused && a.id != b.id && a.conflict_keys.iter().any(|k| b.conflict_keys.contains(k)),
            Evidence::ConflictingResponses { a, b } => a.responder == accused && b.responder == accused && a.query_id == b.query_id && a.ids_digest == b.ids_digest && a.votes != b.votes,
        };
        if !valid || accused == self.me {
            return;
        }
        if let Some(&i) = self.peer_idx.get(&accused) {
            if !self.scores[i].convicted {
                let kind = if matches!(evidence, Evidence::Equivocation { .. }) { Misbehaviour::Equivocation } else { Misbehaviour::ConflictingVotes };
                self.incident(now, i, kind, Some(evidence));
            }
        }
    }

    // ------------------------------------------------------------------ shards

    fn notify_watchers(&mut self, id: VertexId) {
        if self.shard_count == 1 {
            return;
        }
        let Some(&(mask, _)) = self.watchers.get(&id) else { return };
        let status = match self.vertices.get(&id) {
            Some(r) => r.status,
            None => return,
        };
        let strong = self.strongly_preferred(&id);
        for s in 0..self.shard_count {
            if mask & (1u64 << s) != 0 {
                self.push(Action::ToShard { shard: s, msg: ShardMsg::Status { id, status, strong } });
            }
        }
        if status == VertexStatus::Processing {
            if let Some(w) = self.watchers.get_mut(&id) {
                w.1 = strong;
            }
        } else {
            self.watchers.remove(&id);
        }
    }

    /// Invalidates every cached strong preference (a preference, lock or remote fact changed).
    fn bump_epoch(&mut self) {
        self.epoch += 1;
        self.epoch_changed();
    }

    /// After a preference change, watchers of processing vertices learn strong-preference flips.
    fn epoch_changed(&mut self) {
        if self.shard_count == 1 || self.watchers.is_empty() {
            return;
        }
        let ids: Vec<(VertexId, bool)> = self.watchers.iter().map(|(k, v)| (*k, v.1)).collect();
        for (id, last) in ids {
            if self.vertices.get(&id).is_some_and(|r| r.status == VertexStatus::Processing) && self.strongly_preferred(&id) != last {
                self.notify_watchers(id);
            }
        }
    }

    fn on_shard_msg(&mut self, now: u64, msg: ShardMsg) {
        match msg {
            ShardMsg::Watch { id, subscriber, hint } => {
                if subscriber >= self.shard_count || (self.watchers.len() >= WATCHED_MAX && !self.watchers.contains_key(&id)) {
                    return;
                }
                if self.forgotten.contains(&id) {
                    self.push(Action::ToShard { shard: subscriber, msg: ShardMsg::Status { id, status: VertexStatus::Final, strong: true } });
                    return;
                }
                self.watchers.entry(id).or_insert((0, false)).0 |= 1u64 << subscriber;
                if self.vertices.contains_key(&id) {
                    self.notify_watchers(id);
                } else {
                    self.request_missing(now, hint, &[id]);
                }
            }
            ShardMsg::Status { id, status, strong } => {
                let e = self.remote_parents.entry(id).or_default();
                let first = e.status.is_none();
                let prev = (e.status, e.strong);
                e.status = Some(status);
                e.strong = strong;
                let children = e.children.clone();
                if prev != (Some(status), strong) {
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
            ShardMsg::Adopt { vertex, client_tag } => self.adopt(now, vertex, client_tag),
            ShardMsg::Join { key, member, timestamp_ms, owner } => {
                let m = Member { id: member, count: 0, confidence: 0.0, timestamp_ms, creator: NodeId::default(), owner, rejected: false };
                self.join_local(key, m);
            }
            ShardMsg::Success { key, member, confidence } => self.set_success(key, member, confidence),
            ShardMsg::Preference { key, preferred, decided } => {
                let rs = self.remote_sets.entry(key).or_default();
                let changed = rs.preferred != Some(preferred);
                rs.preferred = Some(preferred);
                rs.decided |= decided;
                let mine = rs.mine.clone();
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
                let granted = match self.sets.get_mut(&key) {
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
                let Some(r) = self.vertices.get_mut(&member) else { return };
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
                if let Some(set) = self.sets.get_mut(&key) {
                    if set.lock == Some(member) {
                        set.lock = None;
                        self.bump_epoch();
                    }
                }
            }
            ShardMsg::Decide { key, winner } => self.decide(key, winner, false),
            ShardMsg::MemberRejected { key, member } => self.member_rejected(key, member),
        }
    }

    fn release_waiting(&mut self, now: u64, id: VertexId) {
        if let Some(children) = self.waiting.remove(&id) {
            for c in children {
                let ready = self.pending.get(&c).is_some_and(|e| self.parents_known(&e.v));
                if ready {
                    if let Some(e) = self.pending.remove(&c) {
                        self.insert(now, e.v, Some(e.from), e.gossip, false);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ timers

    /// Drops payload and signature of vertices final for longer than `strip_final_after_us`.
    fn strip_old_finals(&mut self, now: u64) {
        let after = self.params.strip_final_after_us;
        while let Some(&(at, id)) = self.strip_queue.front() {
            if after == 0 || at.saturating_add(after) > now {
                break;
            }
            self.strip_queue.pop_front();
            if let Some(r) = self.vertices.get_mut(&id) {
                debug_assert_eq!(r.status, VertexStatus::Final, "only final vertices are stripped");
                if r.status == VertexStatus::Final && !r.v.signature.is_empty() {
                    let v = &r.v;
                    r.v = Arc::new(Vertex {
                        id: v.id,
                        parents: v.parents.clone(),
                        payload: Vec::new(),
                        conflict_keys: v.conflict_keys.clone(),
                        timestamp_ms: v.timestamp_ms,
                        creator: v.creator,
                        signature: Vec::new(),
                    });
                }
            }
        }
    }

    /// Forgets the records of vertices final for longer than `forget_final_after_us`: the id
    /// moves to `forgotten` (still final to every lookup), and each of its conflict sets, once
    /// decided with no member still processing, shrinks to its winner in `decided_keys`.
    /// Recently final vertices that parent selection may still name are kept a while longer.
    fn forget_old_finals(&mut self, now: u64) {
        let after = self.params.forget_final_after_us;
        let mut requeue = Vec::new();
        while let Some(&(at, id)) = self.forget_queue.front() {
            if after == 0 || at.saturating_add(after) > now {
                break;
            }
            self.forget_queue.pop_front();
            if self.recent_final.contains(&id) || self.watchers.contains_key(&id) {
                requeue.push((now, id));
                continue;
            }
            let Some(r) = self.vertices.get(&id) else { continue };
            debug_assert_eq!(r.status, VertexStatus::Final, "only final vertices are forgotten");
            if r.status != VertexStatus::Final {
                continue;
            }
            let keys = r.v.conflict_keys.clone();
            self.vertices.remove(&id);
            self.forgotten.insert(id);
            for k in keys {
                if shard_of_key(&k, self.shard_count) != self.shard {
                    continue;
                }
                let Some(set) = self.sets.get(&k) else { continue };
                let Some(winner) = set.decided else { continue };
                // Only sets whose members are all local and none still processing shrink.
                let settled = set.members.iter().all(|m| m.owner == self.shard && self.vertices.get(&m.id).is_none_or(|r| r.status != VertexStatus::Processing));
                if settled {
                    debug_assert_eq!(self.vertex_status(&winner), Some(VertexStatus::Final), "a decided set's winner is final");
                    self.sets.remove(&k);
                    self.decided_keys.insert(k, winner);
                }
            }
        }
        self.forget_queue.extend(requeue);
    }

    fn tick(&mut self, now: u64) {
        self.strip_old_finals(now);
        self.forget_old_finals(now);
        // Close polls that timed out or had alpha answers plus a grace period as long again.
        let due: Vec<u64> = self
            .polls
            .iter()
            .filter(|(_, p)| now >= p.deadline_us || p.alpha_at.is_some_and(|a| now >= a + (a - p.sent_us).max(1_000)))
            .map(|(q, _)| *q)
            .collect();
        for q in due {
            self.close_poll(now, q);
        }
        let expired: Vec<u64> = self.closed.iter().take_while(|(_, c)| now >= c.deadline_us).map(|(q, _)| *q).collect();
        for q in expired {
            self.expire_closed(q);
        }
        if now >= self.next_frontier_at {
            self.send_frontier(now);
        }
        if !self.waiting.is_empty() && now >= self.next_fetch_retry_at {
            self.retry_fetches(now);
        }
        self.launch_poll(now);
        if self.pending_order.len() > 2 * PENDING_MAX {
            let pending = &self.pending;
            self.pending_order.retain(|id| pending.contains_key(id));
        }
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    /// TigerBeetle-style invariants, checked after every event in debug builds.
    #[cfg(debug_assertions)]
    fn check_invariants(&self) {
        assert_eq!(self.finalized, self.final_position, "positions are dense");
        assert!(self.pending.len() <= PENDING_MAX);
        assert!(self.polls.len() <= self.params.polls_in_flight_max);
        assert!((1..=self.params.polls_in_flight_max).contains(&self.poll_window));
        assert!(self.closed.len() <= POLL_CLOSED_MAX);
        assert!(self.requested.len() <= REQUESTED_MAX);
        // Sampled check (the full DAG scan would make debug runs quadratic).
        if self.seq % 64 == 0 {
            for e in self.processing.values().take(256) {
                let r = &self.vertices[&e.id];
                assert_eq!(r.status, VertexStatus::Processing);
            }
        }
        for s in self.sets.values().take(if self.seq % 16 == 0 { 64 } else { 0 }) {
            if let Some(w) = s.decided {
                if let Some(r) = self.vertices.get(&w) {
                    assert_ne!(r.status, VertexStatus::Rejected, "a set's winner is never rejected");
                }
                for m in &s.members {
                    if m.id != w {
                        if let Some(r) = self.vertices.get(&m.id) {
                            assert_ne!(r.status, VertexStatus::Final, "two members of one set final");
                        }
                    }
                }
            }
        }
    }
}

fn r_keys_overlap(a: &[ConflictKey], b: &[ConflictKey]) -> bool {
    a.iter().any(|k| b.contains(k))
}

fn hex8(b: &[u8; 32]) -> String {
    b[..4].iter().map(|x| format!("{x:02x}")).collect()
}
