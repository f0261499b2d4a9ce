//! The facade of the consensus core: the [`Core`] struct (one field per owning module), event
//! dispatch (`handle`), getters, and the outbox (`poll_action`). Every rule lives in the module
//! named after it (`dag`, `pending`, `sync`, `gossip`, `conflicts`, `votes`, `polls`, `credit`,
//! `snowball`, `finality`, `peers`, `cross_shard`, `retention`, `restore`, `timers`,
//! `invariants`); this file may call all of them, they call each other through `Core` methods
//! or, where a rule needs only its own state, through methods of that module's struct.

use std::collections::VecDeque;
use std::sync::Arc;

use pqdag_wire::limits::REPLY_VERTICES_MAX;
use pqdag_wire::{ConflictKey, NodeId, Vertex, VertexId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::batch::Batch;
use crate::conflicts::Conflicts;
use crate::cross_shard::CrossShard;
use crate::dag::Dag;
use crate::error::{ConsensusError, ConsensusResult};
use crate::finality::Finality;
use crate::flood::Flood;
use crate::lock_rounds::LockRounds;
use crate::params::Params;
use crate::peers::{PeerScore, Peers, Roster};
use crate::pending::Pending;
use crate::polls::Polls;
use crate::retention::Retention;
use crate::sync::Sync;
use crate::types::{Action, Config, Event, Signer, VertexStatus, SHARDS_MAX};
use crate::votes::Votes;

/// Actions buffered before the shell drains them (a full queue is a shell bug: asserted).
const ACTIONS_MAX: usize = 1 << 22;

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
    /// Of those, evicted because the peer that delivered them was over its quota.
    pub pending_evicted_quota: u64,
    /// Bytes of pending vertices (see `PENDING_BYTES_MAX`).
    pub pending_bytes: u64,
    /// Polls completed.
    pub polls_completed: u64,
    /// Polls that did not reach alpha responses.
    pub polls_short: u64,
    /// Peers currently excluded.
    pub excluded_peers: u64,
    /// Processing vertices that passed `max_rounds` rounds.
    pub stalled: u64,
    /// Vertices dropped because their creator held `CREATOR_PROCESSING_MAX` processing ones.
    pub creator_dropped: u64,
    /// Vertices admitted over that bound because this node needed them (see `flood`).
    pub creator_bypassed: u64,
    /// Processing vertices of the creator holding the most.
    pub creator_processing_max: u64,
    /// Stalled conflict sets moved to break a stalemate (`unblock.rs`, whole-network mode).
    pub stalemate_moves: u64,
    /// Decided vertices stripped before `strip_final_after_us` because the whole ones held
    /// more than `strip_final_bytes_max` (a decision rate above what the window was sized for).
    pub stripped_early: u64,
    /// Bytes of decided (final or rejected) vertices still held whole (payloads and
    /// signatures); the name is kept for the metric `bounded{kind="whole_final_bytes"}`.
    pub whole_final_bytes: u64,
    /// Forgotten ids and keys handed to the archive before `archive_after_us` because more
    /// than `archive_entries_max` were held.
    pub archived_early: u64,
    /// Keys of this shard remembered as absent from the archive (`forgotten::AbsentKeys`).
    pub archive_absent_keys: u64,
    /// Key lookups those answered without an archive read.
    pub archive_absent_hits: u64,
    /// Innocent transactions of rejected own vertices re-issued in a new vertex (`batch`).
    pub reissued_txs: u64,
    /// Innocent transactions given up after `REISSUE_MAX` re-issues (their clients hear
    /// `Rejected` though nothing else spent their keys): should stay 0.
    pub reissue_gave_up: u64,
}

/// One shard instance of the consensus core of one node. See the crate docs for the API shape.
pub struct Core<S: Signer> {
    pub(crate) params: Params,
    pub(crate) signer: S,
    pub(crate) me: NodeId,
    pub(crate) shard: u32,
    pub(crate) shard_count: u32,
    /// The only randomness of the core (seeded from `Config::seed` and the shard).
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: u64,
    /// The outbox, drained by `poll_action`.
    pub(crate) actions: VecDeque<Action>,
    pub(crate) dag: Dag,
    pub(crate) pending: Pending,
    pub(crate) sync: Sync,
    pub(crate) peers: Peers,
    pub(crate) conflicts: Conflicts,
    pub(crate) cross: CrossShard,
    pub(crate) votes: Votes,
    pub(crate) polls: Polls,
    pub(crate) finality: Finality,
    pub(crate) retention: Retention,
    pub(crate) flood: Flood,
    pub(crate) batch: Batch,
    pub(crate) rounds: LockRounds,
}

impl<S: Signer> Core<S> {
    /// Builds a core after validating the parameters (spec 3.2) against the network size.
    pub fn new(cfg: Config, signer: S) -> ConsensusResult<Self> {
        let roster = Roster::new(&cfg.nodes, cfg.me)?;
        Self::with_roster(cfg, signer, &roster)
    }

    /// As [`Self::new`], with the membership given as a roster the node's other shards share
    /// (`cfg.nodes` is not read): one copy per node instead of one per shard.
    pub fn with_roster(cfg: Config, signer: S, roster: &Roster) -> ConsensusResult<Self> {
        if roster.me() != cfg.me {
            return Err(ConsensusError::InvalidParams("the roster is another node's".into()));
        }
        if cfg.shard_count == 0 || cfg.shard_count > SHARDS_MAX || cfg.shard >= cfg.shard_count {
            return Err(ConsensusError::InvalidParams(format!("shard {} of {}", cfg.shard, cfg.shard_count)));
        }
        let mut params = cfg.params.clone();
        // Small-network rule of spec 3.2: k = min(k, N-1), alpha rescaled if k shrank.
        let n = roster.members();
        if n >= 2 && params.sample_size > n - 1 {
            params.sample_size = n - 1;
            params.alpha = crate::params::alpha_for(params.sample_size);
        }
        params.validate(n)?;
        let poll_window = params.polls_in_flight_max;
        // Shards take turns running the node's polls (`node_polls`): staggered from the start.
        let first_poll_at = u64::from(cfg.shard) * params.poll_interval_us;
        Ok(Core {
            params,
            signer,
            me: cfg.me,
            shard: cfg.shard,
            shard_count: cfg.shard_count,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ (u64::from(cfg.shard) << 56)),
            now: 0,
            actions: VecDeque::new(),
            dag: Dag::new(),
            pending: Pending::default(),
            sync: Sync::new(),
            peers: Peers::new(roster),
            conflicts: Conflicts::default(),
            cross: CrossShard::default(),
            votes: Votes { epoch: 1 },
            polls: Polls::new(poll_window, first_poll_at),
            finality: Finality::default(),
            retention: Retention::default(),
            flood: Flood::default(),
            batch: Batch::default(),
            rounds: LockRounds::default(),
        })
    }

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

    /// Shards per node (vertex `id` belongs to shard `shard_of_vertex(id, shard_count)`).
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The genesis vertex id.
    pub fn genesis_id(&self) -> VertexId {
        self.dag.genesis.id
    }

    /// Counters for `/status`.
    pub fn status(&self) -> CoreStatus {
        let (absent_keys, absent_hits) = self.dag.forgotten.absent_counts();
        CoreStatus {
            finalized: self.finality.finalized,
            rejected: self.finality.rejected,
            processing: self.dag.processing.len() as u64,
            pending: self.pending.entries.len() as u64,
            finalized_digest: *self.finality.digest.as_bytes(),
            partition_suspected: self.partition_suspected(),
            pending_evicted: self.pending.evicted,
            pending_evicted_quota: self.pending.evicted_quota,
            pending_bytes: self.pending.bytes as u64,
            polls_completed: self.polls.completed,
            polls_short: self.polls.short,
            excluded_peers: self.peers.scores.iter().filter(|s| s.excluded).count() as u64,
            stalled: self.finality.stalled,
            creator_dropped: self.flood.dropped,
            creator_bypassed: self.flood.bypassed,
            creator_processing_max: self.flood.processing.values().copied().max().unwrap_or(0) as u64,
            stalemate_moves: self.conflicts.stalemate_moves,
            stripped_early: self.retention.stripped_early,
            whole_final_bytes: self.retention.whole_bytes as u64,
            archived_early: self.dag.forgotten.archived_early,
            archive_absent_keys: absent_keys as u64,
            archive_absent_hits: absent_hits,
            reissued_txs: self.batch.reissued,
            reissue_gave_up: self.batch.gave_up,
        }
    }

    /// More than half of the recent peer-queries timed out (spec 5.3 step 1).
    pub fn partition_suspected(&self) -> bool {
        // Either most recent peer-queries or most of the last 8 polls timed out.
        self.peers.most_queries_timed_out() || self.polls.outcomes.count_ones() > 4
    }

    /// The vertex with this id, if held (answers `VertexRequest`s).
    pub fn vertex(&self, id: &VertexId) -> Option<&Arc<Vertex>> {
        self.dag.vertices.get(id).map(|r| &r.v).or_else(|| self.pending.entries.get(id).map(|p| &p.v))
    }

    /// Every vertex this core holds in memory, in the DAG or the pending buffer (what the
    /// simulator's guard charges to their creators).
    pub fn held_vertices(&self) -> impl Iterator<Item = &Arc<Vertex>> + '_ {
        self.dag.vertices.values().map(|r| &r.v).chain(self.pending.entries.values().map(|p| &p.v))
    }

    /// Status of a vertex held in the DAG (not pending).
    pub fn vertex_status(&self, id: &VertexId) -> Option<VertexStatus> {
        self.dag.status(id)
    }

    /// Confidence of a vertex (FR-004), 1.0 once final.
    pub fn confidence(&self, id: &VertexId) -> Option<f64> {
        self.dag.vertices.get(id).map(|r| r.confidence).or_else(|| self.dag.forgotten.status(id).map(|s| if s == VertexStatus::Final { 1.0 } else { 0.0 }))
    }

    /// Whether the conflict key `key` of this shard is decided (held or archived). A restart
    /// deletes the stored quorum locks of decided keys (their releases are not written).
    pub fn key_decided(&self, key: &pqdag_wire::ConflictKey) -> bool {
        match self.conflicts.sets.get(key) {
            Some(s) => s.decided.is_some(),
            None => self.dag.forgotten.key_winner(key).is_some(),
        }
    }
    /// True if the DAG or the pending buffer holds `id` (the shell skips verifying duplicates).
    pub fn contains(&self, id: &VertexId) -> bool {
        self.dag.vertices.contains_key(id) || self.pending.entries.contains_key(id) || self.dag.forgotten.status(id).is_some()
    }

    /// Records held, for the memory metrics: (vertex records, conflict sets, forgotten ids,
    /// forgotten decided keys); the forgotten ones count the in-memory window plus whatever
    /// the archive holds in memory (nothing for the engine's store-backed archive).
    pub fn record_counts(&self) -> (usize, usize, usize, usize) {
        let (ids, keys, archived) = self.dag.forgotten.counts();
        (self.dag.vertices.len(), self.conflicts.sets.len(), ids + archived, keys)
    }

    /// Vertex bytes (`Vertex::heap_bytes`) the records hold, by status: (processing, final,
    /// rejected). For the memory metrics (`pqdag_core_records{kind="*_bytes"}`): what a node
    /// holds under double spends is mostly these. One pass over the records (once a second).
    pub fn record_bytes(&self) -> (u64, u64, u64) {
        let (mut processing, mut fin, mut rejected) = (0u64, 0u64, 0u64);
        for r in self.dag.vertices.values() {
            let b = r.v.heap_bytes() as u64;
            match r.status {
                VertexStatus::Processing => processing += b,
                VertexStatus::Final => fin += b,
                VertexStatus::Rejected => rejected += b,
            }
        }
        (processing, fin, rejected)
    }

    /// Score of every peer (3.7.2).
    pub fn peer_scores(&self) -> Vec<(NodeId, PeerScore)> {
        self.peers.ids.iter().copied().zip(self.peers.scores.iter().cloned()).collect()
    }

    /// Whether `peer` was convicted on proof (an alert against it changes nothing more).
    pub fn is_convicted(&self, peer: &NodeId) -> bool {
        self.peers.index.get(peer).is_some_and(|&i| self.peers.scores[i].convicted)
    }

    /// Whether a response of `from` to `query_id` would still change anything: the poll is open,
    /// `from` is in its sample and has not answered yet, or the poll closed and `from`'s answer
    /// would still turn its timeout into a late answer; never for an excluded peer in Avalanche
    /// mode (its responses are ignored there). Whole-network polls ask and count excluded peers
    /// too (`Core::poll`): dropping their answers here made every poll time out on them, so a
    /// node excluded for the timeouts of a crash stayed excluded for good after its restart,
    /// and its votes were lost (4 nodes of 2 shards, `bench --crash 3@8-11`: node-0 held
    /// node-3 excluded at score 1.0 for 46 s, and a set stayed split-locked 1:2 for good). The
    /// shell drops the rest before verifying their signature.
    pub fn awaits_response(&self, from: &NodeId, query_id: u64) -> bool {
        let Some(&pi) = self.peers.index.get(from) else { return false };
        if self.peers.scores[pi].excluded && !self.whole_network() {
            return false;
        }
        if let Some(poll) = self.polls.open.get(&query_id) {
            return poll.sample.iter().position(|&s| s == pi).is_some_and(|pos| poll.responded & (1u64 << pos) == 0);
        }
        self.polls.closed.get(&query_id).is_some_and(|c| c.sample.iter().position(|&s| s == pi).is_some_and(|pos| c.missing & (1u64 << pos) != 0))
    }

    /// Whether `peer` is excluded from sampling now.
    pub fn is_excluded(&self, peer: &NodeId) -> bool {
        self.peers.index.get(peer).is_some_and(|&i| self.peers.scores[i].excluded)
    }

    /// [`Self::is_excluded`] for the node at `roster_pos` in the sorted, deduplicated roster
    /// (`Config::nodes`), without the id lookup: the simulator asks this for every request it
    /// admits, and at 1000 nodes each id lookup was a cache miss (5 % of its time).
    pub fn is_excluded_at(&self, roster_pos: usize) -> bool {
        let excluded = self.peer_at(roster_pos).is_some_and(|i| self.peers.scores[i].excluded);
        debug_assert_eq!(Some(excluded), self.peers.nodes.get(roster_pos).map(|p| self.is_excluded(p)));
        excluded
    }

    /// The peer index (into `peers.ids` and `peers.scores`) of the node at `roster_pos` in the
    /// sorted roster; `None` for this node itself or past the end.
    fn peer_at(&self, roster_pos: usize) -> Option<usize> {
        let i = match roster_pos.cmp(&self.peers.me_pos) {
            std::cmp::Ordering::Less => roster_pos,
            std::cmp::Ordering::Equal => return None,
            std::cmp::Ordering::Greater => roster_pos - 1,
        };
        debug_assert!(i >= self.peers.ids.len() || self.peers.nodes.get(roster_pos) == Some(&self.peers.ids[i]));
        (i < self.peers.ids.len()).then_some(i)
    }

    /// Every processing vertex (debugging aid).
    pub fn processing_ids(&self) -> impl Iterator<Item = VertexId> + '_ {
        self.dag.processing.values().map(|e| e.id)
    }

    /// Every vertex held in memory (debugging aid).
    pub fn known_ids(&self) -> impl Iterator<Item = VertexId> + '_ {
        self.dag.vertices.keys().copied()
    }

    /// The creator of every processing vertex (the simulator tells a stuck honest vertex from a
    /// Byzantine creator's undecided ones: Avalanche promises liveness to the former only).
    pub fn processing_creators(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dag.processing.values().filter_map(|e| self.dag.vertices.get(&e.id)).map(|r| r.v.creator)
    }

    /// One line per processing vertex (oldest first, at most `max`): for debugging stuck runs.
    pub fn debug_processing(&mut self, max: usize) -> Vec<String> {
        let ids: Vec<VertexId> = self.dag.processing.values().take(max).map(|e| e.id).collect();
        let mut out = Vec::new();
        for id in ids {
            let strong = self.strongly_preferred(&id);
            let r = &self.dag.vertices[&id];
            let parents: Vec<String> = r.v.parents.iter().map(|p| format!("{p}:{:?}", self.parent_state(p))).collect();
            let keys: Vec<String> = r.v.conflict_keys.iter().map(|k| {
                let cur = self.rounds.current;
                let local = self.conflicts.sets.get(k).map(|s| (s.preferred(), s.decided, s.lock, s.quorum_lock.map(|l| (l, cur.saturating_sub(s.lock_round), cur.saturating_sub(s.lock_gate))), s.members.iter().map(|m| format!("{}:{:?} by {} n{} x{}", m.id, self.vertex_status(&m.id), hex8(&m.creator.0), m.count, u8::from(m.exposed))).collect::<Vec<_>>(), s.overflow.len()));
                let remote = self.cross.remote_sets.get(k).map(|s| (s.preferred, s.decided, s.locked, cur.saturating_sub(s.lock_round)));
                format!("{}: local {local:?} remote {remote:?}", hex8(&k.0))
            }).collect();
            out.push(format!("{id} succ {} conf {:.2} rounds {} strong {strong} claiming {} lock_quorum {} round_ok {} parents {parents:?} keys {keys:?}", r.successes, r.confidence, r.rounds, r.claiming, r.lock_quorum, r.round_ok));
        }
        out
    }

    /// The local conflict set of `key`, or what the archive knows of it (debugging aid).
    pub fn debug_key(&self, key: &ConflictKey) -> String {
        match self.conflicts.sets.get(key) {
            Some(s) => format!(
                "set pref {} decided {:?} lock {:?} qlock {:?} acks_due {} held {} overflow {} members {:?}",
                s.preferred(), s.decided, s.lock, s.quorum_lock, s.acks_due, s.held, s.overflow.len(),
                s.members.iter().map(|m| format!("{}:{:?} by {} n{} x{} r{}", m.id, self.vertex_status(&m.id), hex8(&m.creator.0), m.count, u8::from(m.exposed), u8::from(m.rejected))).collect::<Vec<_>>()
            ),
            None => format!("no set; archived winner {:?}", self.dag.forgotten.key_winner(key)),
        }
    }

    /// The conflict keys of the oldest processing vertices (debugging aid).
    pub fn processing_keys(&self, max: usize) -> Vec<ConflictKey> {
        let mut keys: Vec<ConflictKey> = self.dag.processing.values().take(max).filter_map(|e| self.dag.vertices.get(&e.id)).flat_map(|r| r.v.conflict_keys.iter().copied()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Current preference of the local conflict set of `key`.
    pub fn preference(&self, key: &ConflictKey) -> Option<VertexId> {
        self.conflicts.sets.get(key).map(|s| s.preferred()).or_else(|| self.dag.forgotten.key_winner(key))
    }

    /// Next output, in order. Drain after every `handle`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Feeds one event at time `now` (monotonic microseconds; never goes back).
    pub fn handle(&mut self, now: u64, event: Event) -> ConsensusResult<()> {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = self.now.max(now);
        let now = self.now;
        self.advance_round(now);
        let r = match event {
            Event::Submit { payload, conflict_keys, client_tag, timestamp_ms } => {
                self.submit(now, payload, conflict_keys, client_tag, timestamp_ms)
            }
            Event::Vertex { from, vertex } => {
                self.on_vertex(now, from, vertex, true);
                Ok(())
            }
            Event::Query { from, query, ids_digest } => {
                debug_assert_eq!(ids_digest, query.ids_digest(), "the shell hands the digest of the ids it verified");
                self.on_query(now, from, &query, ids_digest);
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
                if let Some(&i) = self.peers.index.get(&peer) {
                    if self.peers.unreachable[i] == reachable {
                        self.peers.unreachable[i] = !reachable;
                        self.peers.refresh_exclusions(now);
                    }
                }
                Ok(())
            }
            Event::InvalidMessage { from, kind } => {
                if let Some(&i) = self.peers.index.get(&from) {
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
            Event::FromShards(msgs) => {
                for msg in msgs {
                    self.on_shard_msg(now, msg);
                }
                Ok(())
            }
        };
        self.tick(now);
        debug_assert!(self.actions.len() < ACTIONS_MAX, "shell does not drain actions");
        #[cfg(debug_assertions)]
        self.check_invariants();
        r
    }

    pub(crate) fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }
}

/// First four bytes of an id or key in hex, for messages.
pub(crate) fn hex8(b: &[u8; 32]) -> String {
    b[..4].iter().map(|x| format!("{x:02x}")).collect()
}
