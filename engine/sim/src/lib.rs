//! Deterministic simulator of pqdag (TigerBeetle VOPR style): N nodes of S shard cores each run
//! the REAL `pqdag-core` in one process on a virtual clock. Everything derives from one seed,
//! with one PRNG stream per concern (network, workload, faults), so changing the workload does
//! not shift network delays. A safety checker runs after every step; a liveness phase follows
//! the run (workload stopped, faults healed) with a time budget. A failing run prints its seed.
//!
//! Signatures are a keyed BLAKE3 MAC (not ML-DSA-87) plus a CPU cost model calibrated from real
//! processes (`calibrate`, `docs/simulator.md`): every sign and verify delays the node's
//! (shard's) CPU queue by `sign_us` / `verify_us`, every byte sent or received by `byte_ns` (QUIC,
//! AEAD, syscalls), every store batch by `batch_us` (the shell's event-loop turn: RocksDB write,
//! fsync, wake-ups; a node groups the persists of `batch_window_us` into one batch, as the real
//! shell's group commit does), and every open connection costs `conn_us_per_s` (keep-alives).
//! Byte counts use ML-DSA-87 sizes ([`msg_bytes`]). With `host_cores` > 0 all nodes share that
//! many cores, as N processes on one machine do.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use pqdag_core::{Action, Config, ConflictKey, Core, Domain, Event, Misbehaviour, NodeId, Params, Signer, VertexId, VertexStatus};
use pqdag_wire::{Evidence, Frontier, Query, Response, Vertex, VertexRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bytes of an ML-DSA-87 signature (what the byte model charges).
pub const SIG_BYTES: usize = 4627;

// The calibrated CPU cost model (defaults of [`SimConfig`]), for one 2-vCPU AMD EPYC VM core.
// Sign / verify: the criterion benches (`cargo bench -p benches --bench crypto`). The rest: the
// least-squares fit of per-node CPU over real `bench` runs at 3, 10, 20 and 100 processes, after
// subtracting the signatures (`target/release/calibrate DIR...`, docs/simulator.md
// "Calibration").
/// CPU of one ML-DSA-87 signature, us.
pub const COST_SIGN_US: u64 = 122;
/// CPU of one ML-DSA-87 verification, us.
pub const COST_VERIFY_US: u64 = 62;
/// CPU per network byte sent or received, ns.
pub const COST_BYTE_NS: f64 = 8.6;
/// CPU per store batch (event-loop turn that persists), us.
pub const COST_BATCH_US: u64 = 434;
/// Group-commit window: the real shell's mean store write time (fsync) on the VM, us.
pub const COST_BATCH_WINDOW_US: u64 = 800;
/// CPU per open connection per second, us.
pub const COST_CONN_US_PER_S: u64 = 25;

/// Network profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Profile {
    /// One datacenter: ~0.2-0.5 ms one-way.
    Lan,
    /// Continents: 20-150 ms one-way per link.
    Wan,
}

/// What Byzantine nodes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Strategy {
    /// Answer every query with inverted votes (validly signed).
    FlipVotes,
    /// Issue pairs of conflicting vertices to the two halves of the peers.
    Equivocate,
    /// Never answer queries.
    Withhold,
    /// Answer with bad signatures.
    InvalidSignatures,
    /// Answer with undecodable frames.
    Malformed,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "flip-votes" => Strategy::FlipVotes,
            "equivocate" => Strategy::Equivocate,
            "withhold" => Strategy::Withhold,
            "invalid-signatures" => Strategy::InvalidSignatures,
            "malformed" => Strategy::Malformed,
            _ => return Err(format!("unknown strategy {s}")),
        })
    }
}

/// A partition: groups of node indices that cannot talk to each other in [start, end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Group of every node (nodes not listed are group 0).
    pub groups: Vec<Vec<usize>>,
    /// Start, virtual microseconds.
    pub start_us: u64,
    /// Heal time.
    pub end_us: u64,
}

impl Partition {
    /// Parses `0-2|3-5@START-END` (seconds; ranges or comma lists). Without `@`, the partition
    /// spans the second quarter to the half of the run.
    pub fn parse(spec: &str, duration_s: f64) -> Result<Self, String> {
        let (groups_s, window) = match spec.split_once('@') {
            Some((g, w)) => (g, Some(w)),
            None => (spec, None),
        };
        let mut groups = Vec::new();
        for g in groups_s.split('|') {
            let mut nodes = Vec::new();
            for part in g.split(',') {
                let part = part.trim();
                if let Some((a, b)) = part.split_once('-') {
                    let a: usize = a.parse().map_err(|e| format!("{part}: {e}"))?;
                    let b: usize = b.parse().map_err(|e| format!("{part}: {e}"))?;
                    nodes.extend(a..=b);
                } else if !part.is_empty() {
                    nodes.push(part.parse().map_err(|e| format!("{part}: {e}"))?);
                }
            }
            groups.push(nodes);
        }
        let (s, e) = match window {
            Some(w) => {
                let (a, b) = w.split_once('-').ok_or("window is START-END")?;
                (a.parse::<f64>().map_err(|e| e.to_string())?, b.parse::<f64>().map_err(|e| e.to_string())?)
            }
            None => (duration_s / 4.0, duration_s / 2.0),
        };
        Ok(Partition { groups, start_us: (s * 1e6) as u64, end_us: (e * 1e6) as u64 })
    }

    fn group_of(&self, node: usize) -> usize {
        self.groups.iter().position(|g| g.contains(&node)).map(|g| g + 1).unwrap_or(0)
    }
}

/// Every knob of a run. All randomness derives from `seed`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes.
    pub nodes: usize,
    /// Master seed.
    pub seed: u64,
    /// Workload duration (virtual seconds); the liveness phase follows.
    pub duration_s: f64,
    /// Shard cores per node.
    pub shards: u32,
    /// Fraction of Byzantine nodes (the last ones).
    pub byzantine: f64,
    /// Their strategy.
    pub strategy: Strategy,
    /// Optional partition.
    pub partition: Option<Partition>,
    /// Submissions per second (whole network).
    pub rate: f64,
    /// Network profile.
    pub profile: Profile,
    /// Fraction of submissions that are a conflicting pair (two nodes spend one key).
    pub conflict_ratio: f64,
    /// Message loss probability.
    pub loss: f64,
    /// Message duplication probability.
    pub duplicate: f64,
    /// Crash node `.0` at `.1` us and restart it at `.2` us (state restored from its storage).
    pub crash: Option<(usize, u64, u64)>,
    /// CPU cost of a signature (us).
    pub sign_us: u64,
    /// CPU cost of a verification (us).
    pub verify_us: u64,
    /// CPU cost of one network byte sent or received (ns): QUIC, AEAD, syscalls, framing.
    pub byte_ns: f64,
    /// CPU cost of one store batch (us): the turn that persists (RocksDB write, fsync, wake-up).
    pub batch_us: u64,
    /// Persists within this long of a node's last batch join it (the real shell's write time).
    pub batch_window_us: u64,
    /// CPU cost of one open peer connection per second (us): keep-alives, timers.
    pub conn_us_per_s: u64,
    /// Cores forget the records of vertices final for this long (virtual us; 0 = never), as the
    /// engine does after 30 s; the default 1 s makes every scenario run through forgotten
    /// parents and forgotten conflict sets. The shell answers fetches of forgotten vertices
    /// from its archive, as the engine's does from its store.
    pub forget_final_after_us: u64,
    /// 0: every node shard has a core of its own (one node per host). C > 0: all nodes share C
    /// cores, like N processes on one machine (used to check the model against such a run).
    pub host_cores: usize,
    /// Payload bytes per vertex.
    pub payload_bytes: usize,
    /// Liveness budget after the workload (virtual seconds).
    pub liveness_budget_s: f64,
    /// Parameter override (else the profile default scaled to N).
    pub params: Option<Params>,
}

impl SimConfig {
    /// Defaults: LAN, 100 vps, no faults.
    pub fn new(nodes: usize, seed: u64, duration_s: f64) -> Self {
        SimConfig {
            nodes,
            seed,
            duration_s,
            shards: 1,
            byzantine: 0.0,
            strategy: Strategy::FlipVotes,
            partition: None,
            rate: 100.0,
            profile: Profile::Lan,
            conflict_ratio: 0.0,
            loss: 0.0,
            duplicate: 0.0,
            crash: None,
            sign_us: COST_SIGN_US,
            verify_us: COST_VERIFY_US,
            byte_ns: COST_BYTE_NS,
            batch_us: COST_BATCH_US,
            batch_window_us: COST_BATCH_WINDOW_US,
            conn_us_per_s: COST_CONN_US_PER_S,
            host_cores: 0,
            forget_final_after_us: 1_000_000,
            payload_bytes: 64,
            liveness_budget_s: 20.0,
            params: None,
        }
    }
}

/// Finality percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
    /// Max.
    pub max: f64,
}

/// The result of a run (the `--json` object).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Shards per node.
    pub shards: u32,
    /// Seed.
    pub seed: u64,
    /// Workload seconds.
    pub duration_s: f64,
    /// Vertices submitted by the workload.
    pub submitted: u64,
    /// Vertices finalized by every honest node (min over honest nodes).
    pub finalized: u64,
    /// finalized / duration.
    pub throughput_vps: f64,
    /// Submission-to-finality latency over (vertex, honest node) pairs.
    pub finality_ms: Percentiles,
    /// Safety violations seen by the checker (must be 0).
    pub safety_violations: u64,
    /// First violation, if any.
    pub first_violation: Option<String>,
    /// Every honest node converged (same finalized digest, nothing processing) in budget.
    pub liveness_ok: bool,
    /// Virtual ms from the end of the workload to convergence.
    pub converge_ms: f64,
    /// Virtual ms from partition heal until everything created before it was decided everywhere.
    pub recovery_ms: Option<f64>,
    /// Network messages per submitted vertex.
    pub messages_per_vertex: f64,
    /// Network bytes (ML-DSA-87 sizes) per submitted vertex.
    pub bytes_per_vertex: f64,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
    /// Byzantine nodes.
    pub byzantine_nodes: usize,
    /// Byzantine nodes excluded by every honest node at the end.
    pub byzantine_excluded_by_all: usize,
    /// Honest nodes excluded by some honest node at the end (false positives).
    pub honest_excluded: usize,
    /// Some honest node suspected a partition at some point.
    pub partition_suspected_seen: bool,
    /// Conflict sets (pairs) submitted / decided with exactly one final member everywhere.
    pub conflict_sets: u64,
    /// Conflict sets with exactly one winner, the same on every honest node.
    pub conflict_sets_resolved: u64,
    /// BLAKE3 of the full event trace (determinism check).
    pub trace_hash: String,
    /// Events processed.
    pub events: u64,
    /// Mean CPU utilisation of the busiest node's shard (cost model).
    pub cpu_util_max: f64,
    /// Modelled CPU per finalized vertex per node, us (compare: `bench`'s CPU us/vertex per node).
    pub cpu_us_per_vertex_per_node: f64,
}

/// The keyed-MAC signer of the simulator (stands in for ML-DSA-87).
#[derive(Clone)]
pub struct MacSigner {
    key: [u8; 32],
}

impl MacSigner {
    /// Key of node `i` of a run.
    pub fn for_node(seed: u64, i: usize) -> Self {
        let mut h = blake3::Hasher::new_derive_key("pqdag sim node key");
        h.update(&seed.to_le_bytes());
        h.update(&(i as u64).to_le_bytes());
        MacSigner { key: *h.finalize().as_bytes() }
    }
    fn mac(&self, domain: Domain, msg: &[u8]) -> Vec<u8> {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(domain.context());
        h.update(msg);
        h.finalize().as_bytes().to_vec()
    }
}

impl Signer for MacSigner {
    fn sign(&self, domain: Domain, msg: &[u8]) -> Vec<u8> {
        self.mac(domain, msg)
    }
}

#[derive(Debug, Clone)]
enum Msg {
    Vertex(Arc<Vertex>),
    Query(Arc<Query>),
    Response(Response),
    Request(VertexRequest),
    Reply(Vec<Arc<Vertex>>),
    Frontier(Arc<Frontier>),
    Alert(NodeId, Arc<Evidence>),
    /// A frame the receiver's shell refuses (malformed / bad signature).
    Garbage(Misbehaviour, u64),
}

/// Modelled wire size of a message (ML-DSA-87 signatures, 200 B vertex overhead).
pub fn msg_bytes(m: &MsgKind) -> usize {
    match *m {
        MsgKind::Vertex { payload } => payload + SIG_BYTES + 200,
        MsgKind::Query { ids } => 32 * ids + 4700,
        MsgKind::Response { ids } => ids + 4700,
        MsgKind::Other { bytes } => bytes,
    }
}

/// Shape of a message for the byte model.
#[derive(Debug, Clone, Copy)]
pub enum MsgKind {
    /// Vertex with this payload size.
    Vertex {
        /// Payload bytes.
        payload: usize,
    },
    /// Query with this many ids.
    Query {
        /// Ids.
        ids: usize,
    },
    /// Response with this many votes.
    Response {
        /// Votes.
        ids: usize,
    },
    /// Anything else.
    Other {
        /// Bytes.
        bytes: usize,
    },
}

/// Bytes an action puts on the network (all recipients), for the byte cost of the sender.
fn action_bytes(a: &Action, nodes: usize) -> usize {
    match a {
        Action::SendVertex { to, vertex } => to.len() * msg_bytes(&MsgKind::Vertex { payload: vertex.payload.len() }),
        Action::SendQuery { to, query } => to.len() * msg_bytes(&MsgKind::Query { ids: query.ids.len() }),
        Action::SendResponse { response, .. } => msg_bytes(&MsgKind::Response { ids: response.votes.len() }),
        Action::RequestVertices { request, .. } => 32 * request.ids.len() + 64,
        Action::SendVertices { reply, .. } => reply.vertices.iter().map(|v| v.payload.len() + SIG_BYTES + 200).sum::<usize>() + 16,
        Action::SendFrontier { to, frontier } => to.len() * (32 * frontier.tips.len() + 80),
        Action::Alert { evidence: Some(_), .. } => nodes.saturating_sub(1) * (3 * SIG_BYTES + 600),
        _ => 0,
    }
}

fn size_of(m: &Msg) -> usize {
    match m {
        Msg::Vertex(v) => msg_bytes(&MsgKind::Vertex { payload: v.payload.len() }),
        Msg::Query(q) => msg_bytes(&MsgKind::Query { ids: q.ids.len() }),
        Msg::Response(r) => msg_bytes(&MsgKind::Response { ids: r.votes.len() }),
        Msg::Request(r) => 32 * r.ids.len() + 64,
        Msg::Reply(vs) => vs.iter().map(|v| v.payload.len() + SIG_BYTES + 200).sum::<usize>() + 16,
        Msg::Frontier(f) => 32 * f.tips.len() + 80,
        Msg::Alert(..) => 2 * (SIG_BYTES + 300) + SIG_BYTES,
        Msg::Garbage(..) => 4700,
    }
}

#[derive(Debug)]
enum Ev {
    Deliver { to: usize, from: usize, msg: Msg },
    Timer { node: usize, shard: u32 },
    Submit,
    Equivocate { node: usize },
    Crash { node: usize },
    Restart { node: usize },
    /// A restarted node's shell asks a peer for finalized vertices it lacks (the engine's
    /// history sync by finality position); `left` more rounds follow, one a second.
    HistorySync { node: usize, left: u32 },
}

/// What one shard persisted: vertices in first-persist order and their latest status.
type ShardStore = (Vec<Arc<Vertex>>, HashMap<VertexId, VertexStatus>);

struct Node {
    id: NodeId,
    signer: MacSigner,
    shards: Vec<Core<MacSigner>>,
    cpu_free: Vec<u64>,
    cpu_busy: Vec<u64>,
    /// When this node's connection upkeep was last charged (virtual us).
    upkeep_at: u64,
    /// Until when this node's current store batch (group commit) takes more persists.
    batch_open_until: u64,
    timer_at: Vec<u64>,
    byz: bool,
    up: bool,
    restarts: u64,
    /// Storage: per shard, vertices in first-persist order and their latest status.
    storage: Vec<ShardStore>,
    keep_storage: bool,
    finalized_before_crash: u64,
}

/// A running simulation.
pub struct Sim {
    cfg: SimConfig,
    params: Params,
    nodes: Vec<Node>,
    node_index: HashMap<NodeId, usize>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slab: Vec<Option<Ev>>,
    free: Vec<usize>,
    seq: u64,
    now: u64,
    net_rng: ChaCha8Rng,
    work_rng: ChaCha8Rng,
    fault_rng: ChaCha8Rng,
    trace: blake3::Hasher,
    // checker state
    created_at: HashMap<VertexId, u64>,
    key_winner: HashMap<ConflictKey, VertexId>,
    decided: HashMap<VertexId, (u32, u32)>,
    conflict_keys: Vec<(ConflictKey, VertexId, VertexId)>,
    violations: u64,
    first_violation: Option<String>,
    latencies: hdrhistogram::Histogram<u64>,
    messages: u64,
    bytes: u64,
    submitted: u64,
    events: u64,
    honest: usize,
    heal_at: Option<u64>,
    pre_heal_open: Option<HashSet<VertexId>>,
    recovery_ms: Option<f64>,
    partition_seen: bool,
    workload_on: bool,
    link_base_us: Vec<u32>,
    /// With `host_cores` > 0: when each shared host core is next free (virtual us).
    host_free: Vec<u64>,
    /// Every vertex ever persisted (one copy per id): the shells' store, serving fetches of
    /// vertices a core has forgotten.
    archive: HashMap<VertexId, Arc<Vertex>>,
}

const NODE_STRIDE: usize = 64;

impl Sim {
    /// Builds the cluster (every node's cores with the same parameters).
    pub fn new(cfg: SimConfig) -> Result<Self, String> {
        let n = cfg.nodes;
        if n < 2 {
            return Err("need at least 2 nodes".into());
        }
        let base = match cfg.profile {
            Profile::Lan => Params::lan_default(),
            Profile::Wan => Params::wan_default(),
        };
        let mut params = cfg.params.clone().unwrap_or_else(|| base.scaled_to(n));
        params.forget_final_after_us = cfg.forget_final_after_us;
        let signers: Vec<MacSigner> = (0..n).map(|i| MacSigner::for_node(cfg.seed, i)).collect();
        let ids: Vec<NodeId> = (0..n).map(|i| NodeId(pqdag_crypto::hash::node_id(&signers[i].key))).collect();
        let n_byz = ((n as f64) * cfg.byzantine).floor() as usize;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let shards = (0..cfg.shards)
                .map(|s| {
                    Core::new(
                        Config { me: ids[i], nodes: ids.clone(), params: params.clone(), seed: cfg.seed ^ (i as u64).wrapping_mul(0x9E37_79B9), shard: s, shard_count: cfg.shards },
                        signers[i].clone(),
                    )
                    .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let keep = cfg.crash.is_some_and(|c| c.0 == i);
            nodes.push(Node {
                id: ids[i],
                signer: signers[i].clone(),
                shards,
                cpu_free: vec![0; cfg.shards as usize],
                cpu_busy: vec![0; cfg.shards as usize],
                upkeep_at: 0,
                batch_open_until: 0,
                timer_at: vec![u64::MAX; cfg.shards as usize],
                byz: i >= n - n_byz,
                up: true,
                restarts: 0,
                storage: (0..cfg.shards).map(|_| (Vec::new(), HashMap::new())).collect(),
                keep_storage: keep,
                finalized_before_crash: 0,
            });
        }
        let node_index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut net_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6e65_7477_6f72_6b00);
        let link_base_us = match cfg.profile {
            Profile::Lan => vec![0; 1],
            Profile::Wan => (0..NODE_STRIDE * NODE_STRIDE).map(|_| net_rng.random_range(20_000..150_000)).collect(),
        };
        let latencies = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
        let mut sim = Sim {
            params,
            nodes,
            node_index,
            queue: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
            now: 0,
            net_rng,
            work_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x776f_726b_6c6f_6164),
            fault_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6661_756c_7473_0000),
            trace: blake3::Hasher::new(),
            created_at: HashMap::new(),
            key_winner: HashMap::new(),
            decided: HashMap::new(),
            conflict_keys: Vec::new(),
            violations: 0,
            first_violation: None,
            latencies,
            messages: 0,
            bytes: 0,
            submitted: 0,
            events: 0,
            honest: n - n_byz,
            heal_at: None,
            pre_heal_open: None,
            recovery_ms: None,
            partition_seen: false,
            workload_on: true,
            link_base_us,
            host_free: vec![0; cfg.host_cores],
            archive: HashMap::new(),
            cfg,
        };
        for i in 0..n {
            for s in 0..sim.cfg.shards {
                sim.schedule(0, Ev::Timer { node: i, shard: s });
                sim.nodes[i].timer_at[s as usize] = 0;
            }
        }
        if sim.cfg.rate > 0.0 {
            sim.schedule(0, Ev::Submit);
        }
        if sim.cfg.strategy == Strategy::Equivocate {
            for i in sim.honest..n {
                sim.schedule(50_000 + i as u64, Ev::Equivocate { node: i });
            }
        }
        if let Some((node, at, back)) = sim.cfg.crash {
            sim.schedule(at, Ev::Crash { node });
            sim.schedule(back, Ev::Restart { node });
        }
        if let Some(p) = &sim.cfg.partition {
            sim.heal_at = Some(p.end_us);
        }
        Ok(sim)
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s] = Some(ev);
                s
            }
            None => {
                self.slab.push(Some(ev));
                self.slab.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.first_violation.is_none() {
            eprintln!("SAFETY VIOLATION (seed {}): {what}", self.cfg.seed);
            self.first_violation = Some(what);
        }
    }

    /// Runs workload then liveness phase; returns the report.
    pub fn run(mut self) -> Report {
        let wall = std::time::Instant::now();
        let end_us = (self.cfg.duration_s * 1e6) as u64;
        let budget_us = end_us + (self.cfg.liveness_budget_s * 1e6) as u64;
        let mut converged_at = None;
        let mut next_check = end_us;
        while let Some(Reverse((at, _, slot))) = self.queue.pop() {
            if at > budget_us {
                break;
            }
            self.now = at;
            if self.workload_on && at >= end_us {
                self.workload_on = false;
            }
            let ev = self.slab[slot].take();
            self.free.push(slot);
            let Some(ev) = ev else { continue };
            self.events += 1;
            self.step(ev);
            if !self.workload_on && at >= next_check {
                next_check = at + 50_000;
                if self.converged() {
                    converged_at = Some(at);
                    break;
                }
            }
        }
        let wall_seconds = wall.elapsed().as_secs_f64();
        self.report(end_us, converged_at, wall_seconds)
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        match &self.cfg.partition {
            Some(p) if self.now >= p.start_us && self.now < p.end_us => p.group_of(a) != p.group_of(b),
            _ => false,
        }
    }

    fn latency(&mut self, a: usize, b: usize) -> u64 {
        match self.cfg.profile {
            Profile::Lan => 150 + self.net_rng.random_range(0..300),
            Profile::Wan => {
                let base = u64::from(self.link_base_us[(a % NODE_STRIDE) * NODE_STRIDE + (b % NODE_STRIDE)].max(self.link_base_us[(b % NODE_STRIDE) * NODE_STRIDE + (a % NODE_STRIDE)]));
                base + self.net_rng.random_range(0..base / 10 + 1)
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, depart: u64, msg: Msg) {
        self.messages += 1;
        self.bytes += size_of(&msg) as u64;
        if !self.nodes[to].up || self.partitioned(from, to) {
            return;
        }
        if self.cfg.loss > 0.0 && self.net_rng.random_bool(self.cfg.loss) {
            return;
        }
        let lat = self.latency(from, to);
        if self.cfg.duplicate > 0.0 && self.net_rng.random_bool(self.cfg.duplicate) {
            let lat2 = self.latency(from, to);
            self.schedule(depart + lat2, Ev::Deliver { to, from, msg: msg.clone() });
        }
        self.schedule(depart + lat, Ev::Deliver { to, from, msg });
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, msg } => {
                if !self.nodes[to].up {
                    return;
                }
                self.trace.update(&[1]);
                self.trace.update(&self.now.to_le_bytes());
                self.trace.update(&(to as u32).to_le_bytes());
                self.trace.update(&(from as u32).to_le_bytes());
                self.deliver(to, from, msg);
            }
            Ev::Timer { node, shard } => {
                if !self.nodes[node].up || self.nodes[node].timer_at[shard as usize] != self.now {
                    return;
                }
                self.nodes[node].timer_at[shard as usize] = u64::MAX;
                self.trace.update(&[2]);
                self.trace.update(&self.now.to_le_bytes());
                self.trace.update(&(node as u32).to_le_bytes());
                self.handle(node, shard, Event::Timer, 0);
            }
            Ev::Submit => self.submit(),
            Ev::Equivocate { node } => self.equivocate(node),
            Ev::Crash { node } => {
                self.trace.update(&[4]);
                let n = &mut self.nodes[node];
                n.up = false;
                n.finalized_before_crash = n.shards.iter().map(|c| c.status().finalized).sum();
            }
            Ev::Restart { node } => self.restart(node),
            Ev::HistorySync { node, left } => self.history_sync(node, left),
        }
    }

    fn submit(&mut self) {
        if !self.workload_on {
            return;
        }
        let gap = (-(1.0 - self.work_rng.random::<f64>()).ln() / self.cfg.rate * 1e6) as u64;
        self.schedule(self.now + gap.max(1), Ev::Submit);
        let honest = self.honest;
        let a = self.work_rng.random_range(0..honest);
        let mut payload = vec![0u8; self.cfg.payload_bytes];
        self.work_rng.fill(&mut payload[..]);
        let conflict = self.cfg.conflict_ratio > 0.0 && honest >= 2 && self.work_rng.random_bool(self.cfg.conflict_ratio.min(1.0));
        if conflict {
            let mut b = self.work_rng.random_range(0..honest - 1);
            if b >= a {
                b += 1;
            }
            let mut k = [0u8; 32];
            self.work_rng.fill(&mut k);
            let key = ConflictKey(k);
            let ida = self.submit_to(a, payload.clone(), vec![key]);
            payload[0] ^= 0xff;
            let idb = self.submit_to(b, payload, vec![key]);
            if let (Some(x), Some(y)) = (ida, idb) {
                self.conflict_keys.push((key, x, y));
            }
        } else {
            self.submit_to(a, payload, Vec::new());
        }
    }

    fn submit_to(&mut self, node: usize, payload: Vec<u8>, keys: Vec<ConflictKey>) -> Option<VertexId> {
        if !self.nodes[node].up {
            return None;
        }
        self.submitted += 1;
        let shard = self.work_rng.random_range(0..self.cfg.shards);
        let tag = self.submitted;
        let ts = self.now / 1000;
        self.handle(node, shard, Event::Submit { payload, conflict_keys: keys, client_tag: tag, timestamp_ms: ts }, 0)
    }

    /// Byzantine equivocation: two conflicting vertices from one creator to two halves.
    fn equivocate(&mut self, node: usize) {
        if self.workload_on {
            self.schedule(self.now + 200_000, Ev::Equivocate { node });
        } else {
            return;
        }
        if !self.nodes[node].up {
            return;
        }
        let mut k = [0u8; 32];
        self.fault_rng.fill(&mut k);
        let key = ConflictKey(k);
        let g = self.nodes[node].shards[0].genesis_id();
        let me = self.nodes[node].id;
        let mk = |tag: u8, signer: &MacSigner| {
            let mut v = Vertex::new_unsigned(vec![g], vec![tag; 16], vec![key], self.now / 1000, me);
            v.signature = signer.sign(Domain::Vertex, v.signed_bytes());
            Arc::new(v)
        };
        let a = mk(1, &self.nodes[node].signer);
        let b = mk(2, &self.nodes[node].signer);
        self.created_at.insert(a.id, self.now);
        self.created_at.insert(b.id, self.now);
        let n = self.cfg.nodes;
        let depart = self.now;
        for to in 0..n {
            if to == node {
                continue;
            }
            let v = if to < n / 2 { a.clone() } else { b.clone() };
            self.send(node, to, depart, Msg::Vertex(v));
        }
    }

    fn restart(&mut self, node: usize) {
        self.trace.update(&[5]);
        let n = self.cfg.nodes;
        let ids: Vec<NodeId> = self.nodes.iter().map(|x| x.id).collect();
        let restarts = self.nodes[node].restarts + 1;
        let mut shards = Vec::new();
        for s in 0..self.cfg.shards {
            let mut core = match Core::new(
                Config {
                    me: ids[node],
                    nodes: ids.clone(),
                    params: self.params.clone(),
                    seed: self.cfg.seed ^ (node as u64).wrapping_mul(0x9E37_79B9) ^ (restarts << 40),
                    shard: s,
                    shard_count: self.cfg.shards,
                },
                self.nodes[node].signer.clone(),
            ) {
                Ok(c) => c,
                Err(e) => {
                    self.violation(format!("restart failed: {e}"));
                    return;
                }
            };
            let (order, status) = &self.nodes[node].storage[s as usize];
            // As the engine does: older finals come back as forgotten ids, the last few finals
            // and every non-final vertex in full.
            let finals: Vec<&Arc<Vertex>> = order.iter().filter(|v| status[&v.id] == VertexStatus::Final).collect();
            let compact = finals.len().saturating_sub(32);
            for v in &finals[..compact] {
                core.restore_forgotten_final(v.id, &v.conflict_keys);
            }
            let skip: HashSet<VertexId> = finals[..compact].iter().map(|v| v.id).collect();
            let items: Vec<(Arc<Vertex>, VertexStatus)> = order.iter().filter(|v| !skip.contains(&v.id)).map(|v| (v.clone(), status[&v.id])).collect();
            core.restore(self.now, items);
            shards.push(core);
        }
        let _ = n;
        let nd = &mut self.nodes[node];
        nd.shards = shards;
        nd.up = true;
        nd.restarts = restarts;
        let restored: u64 = nd.shards.iter().map(|c| c.status().finalized).sum();
        let before = nd.finalized_before_crash;
        if restored != before {
            self.violation(format!("node {node} restarted with {restored} finalized, had {before}: a finalized vertex disappeared"));
        }
        for s in 0..self.cfg.shards {
            self.nodes[node].timer_at[s as usize] = self.now;
            self.schedule(self.now, Ev::Timer { node, shard: s });
        }
        self.schedule(self.now + 1_000_000, Ev::HistorySync { node, left: 20 });
    }

    /// The engine shell's history sync (`maybe_sync`): the first up honest peer sends the
    /// restarted node, from its store, finalized vertices the node does not hold (what gossip
    /// and frontiers never lead to: finalized leaves from while it was down). At most 256 a
    /// round, in id order (deterministic).
    fn history_sync(&mut self, node: usize, left: u32) {
        if left > 0 {
            self.schedule(self.now + 1_000_000, Ev::HistorySync { node, left: left - 1 });
        }
        if !self.nodes[node].up {
            return;
        }
        let Some(peer) = (0..self.cfg.nodes).find(|&j| j != node && self.nodes[j].up && !self.nodes[j].byz) else { return };
        let mut missing: Vec<VertexId> = self
            .decided
            .iter()
            .filter(|(_, d)| d.0 > 0)
            .map(|(id, _)| *id)
            .filter(|id| {
                let s = self.shard_for_vertex(id) as usize;
                !self.nodes[node].shards[s].contains(id) && self.nodes[peer].shards[s].vertex_status(id) == Some(VertexStatus::Final)
            })
            .collect();
        missing.sort_unstable();
        missing.truncate(256);
        let vs: Vec<Arc<Vertex>> = missing.iter().filter_map(|id| self.archive.get(id).cloned()).collect();
        if !vs.is_empty() {
            self.send(peer, node, self.now, Msg::Reply(vs));
        }
    }

    fn shard_for_vertex(&self, id: &VertexId) -> u32 {
        pqdag_core::shard_of_vertex(id, self.cfg.shards)
    }

    fn deliver(&mut self, to: usize, from: usize, msg: Msg) {
        let from_id = self.nodes[from].id;
        // Receiving costs its bytes (charged with the input's verification).
        let v_us = self.cfg.verify_us + (size_of(&msg) as f64 * self.cfg.byte_ns / 1000.0) as u64;
        match msg {
            Msg::Vertex(v) => {
                let s = self.shard_for_vertex(&v.id);
                // The shell skips verifying duplicates (cheap id lookup first).
                if self.nodes[to].shards[s as usize].contains(&v.id) {
                    return;
                }
                self.handle(to, s, Event::Vertex { from: from_id, vertex: v }, v_us);
            }
            Msg::Query(q) => {
                let s = q.ids.first().map(|id| self.shard_for_vertex(id)).unwrap_or(0);
                self.handle(to, s, Event::Query { from: from_id, query: q }, v_us);
            }
            Msg::Response(r) => {
                let s = (r.query_id & 0xff) as u32 % self.cfg.shards;
                self.handle(to, s, Event::Response { from: from_id, response: r }, v_us);
            }
            Msg::Request(req) => {
                for s in 0..self.cfg.shards {
                    let ids: Vec<VertexId> = req.ids.iter().filter(|id| self.shard_for_vertex(id) == s).copied().collect();
                    if !ids.is_empty() {
                        // Forgotten by the core but final here: the shell answers from its store.
                        let core = &self.nodes[to].shards[s as usize];
                        let stored: Vec<Arc<Vertex>> = ids.iter().filter(|id| core.vertex(id).is_none() && core.vertex_status(id).is_some()).filter_map(|id| self.archive.get(id).cloned()).collect();
                        self.handle(to, s, Event::VertexRequest { from: from_id, request: VertexRequest { request_id: req.request_id, ids } }, 0);
                        if !stored.is_empty() && self.nodes[to].up {
                            let at = self.now.max(self.nodes[to].cpu_free[s as usize]);
                            self.send(to, from, at, Msg::Reply(stored));
                        }
                    }
                }
            }
            Msg::Reply(vs) => {
                for v in vs {
                    let s = self.shard_for_vertex(&v.id);
                    if self.nodes[to].shards[s as usize].contains(&v.id) {
                        continue;
                    }
                    self.handle(to, s, Event::VertexReply { from: from_id, vertices: vec![v] }, v_us);
                }
            }
            Msg::Frontier(f) => {
                for s in 0..self.cfg.shards {
                    self.handle(to, s, Event::Frontier { from: from_id, frontier: (*f).clone() }, 0);
                }
            }
            Msg::Alert(accused, ev) => {
                for s in 0..self.cfg.shards {
                    self.handle(to, s, Event::Alert { from: from_id, accused, evidence: (*ev).clone() }, 2 * v_us);
                }
            }
            Msg::Garbage(kind, qid) => {
                let s = (qid & 0xff) as u32 % self.cfg.shards;
                self.handle(to, s, Event::InvalidMessage { from: from_id, kind }, if kind == Misbehaviour::InvalidSignature { v_us } else { 1 });
            }
        }
    }

    /// Runs one event through a shard core, then drains its actions (and in-process shard
    /// messages, in order). `cost_us` is the shell's verification cost of the input.
    fn handle(&mut self, node: usize, shard: u32, ev: Event, cost_us: u64) -> Option<VertexId> {
        let mut created = None;
        let mut inbox: VecDeque<(u32, Event, u64)> = VecDeque::new();
        inbox.push_back((shard, ev, cost_us));
        let mut guard = 0usize;
        while let Some((s, ev, cost)) = inbox.pop_front() {
            guard += 1;
            assert!(guard < 1_000_000, "shard message storm");
            let si = s as usize;
            let mut start = self.now.max(self.nodes[node].cpu_free[si]);
            let mut cpu = cost + 2;
            // Connection upkeep accrues with time; the next job of the node pays it.
            let nd = &mut self.nodes[node];
            if self.cfg.conn_us_per_s > 0 && self.now > nd.upkeep_at {
                let conns = (self.cfg.nodes - 1) as u64;
                cpu += (self.now - nd.upkeep_at) * conns * self.cfg.conn_us_per_s / 1_000_000;
                nd.upkeep_at = self.now;
            }
            let r = self.nodes[node].shards[si].handle(self.now, ev);
            if let Err(e) = r {
                let _ = e; // own conflicting submission refused: fine
            }
            let mut out = Vec::new();
            while let Some(a) = self.nodes[node].shards[si].poll_action() {
                out.push(a);
            }
            let mut bytes = 0usize;
            let mut persists = false;
            for a in &out {
                cpu += match a {
                    Action::SendQuery { .. } | Action::SendResponse { .. } | Action::Created { .. } => self.cfg.sign_us,
                    Action::Alert { .. } => self.cfg.sign_us,
                    _ => 0,
                };
                persists |= matches!(a, Action::Persist { .. });
                bytes += action_bytes(a, self.cfg.nodes);
            }
            cpu += (bytes as f64 * self.cfg.byte_ns / 1000.0) as u64;
            if persists && start >= self.nodes[node].batch_open_until {
                // A new store batch; persists of the next window join it (group commit).
                cpu += self.cfg.batch_us;
                self.nodes[node].batch_open_until = start + self.cfg.batch_window_us;
            }
            if !self.host_free.is_empty() {
                // One machine: the job also needs one of its shared cores (earliest free).
                let (h, free) = self.host_free.iter().copied().enumerate().min_by_key(|&(_, f)| f).unwrap_or((0, 0));
                start = start.max(free);
                self.host_free[h] = start + cpu;
            }
            let done = start + cpu;
            self.nodes[node].cpu_free[si] = done;
            self.nodes[node].cpu_busy[si] += cpu;
            for a in out {
                match a {
                    Action::ToShard { shard, msg } => inbox.push_back((shard, Event::FromShard(msg), 0)),
                    Action::Created { id, .. } => {
                        created = Some(id);
                        self.created_at.insert(id, self.now);
                    }
                    other => self.act(node, si, done, other),
                }
            }
            if self.cfg.partition.is_some() && !self.partition_seen && self.nodes[node].shards[si].partition_suspected() {
                self.partition_seen = true;
            }
            let t = self.nodes[node].shards[si].poll_timeout();
            if let Some(t) = t {
                let t = t.max(self.now + 1);
                if t < self.nodes[node].timer_at[si] {
                    self.nodes[node].timer_at[si] = t;
                    self.schedule(t, Ev::Timer { node, shard: s });
                }
            }
        }
        created
    }

    fn act(&mut self, node: usize, shard: usize, done: u64, a: Action) {
        let byz = self.nodes[node].byz;
        match a {
            Action::SendVertex { to, vertex } => {
                for p in to {
                    let t = self.node_index[&p];
                    self.send(node, t, done, Msg::Vertex(vertex.clone()));
                }
            }
            Action::SendQuery { to, query } => {
                for p in to {
                    let t = self.node_index[&p];
                    self.send(node, t, done, Msg::Query(query.clone()));
                }
            }
            Action::SendResponse { to, mut response } => {
                let t = self.node_index[&to];
                if byz {
                    match self.cfg.strategy {
                        Strategy::FlipVotes => {
                            for b in response.votes.iter_mut() {
                                *b = match *b {
                                    0 => 1,
                                    1 => 0,
                                    x => x,
                                };
                            }
                            response.signature = self.nodes[node].signer.sign(Domain::Response, &response.signed_bytes());
                        }
                        Strategy::Withhold => return,
                        Strategy::InvalidSignatures => {
                            self.send(node, t, done, Msg::Garbage(Misbehaviour::InvalidSignature, response.query_id));
                            return;
                        }
                        Strategy::Malformed => {
                            self.send(node, t, done, Msg::Garbage(Misbehaviour::Malformed, response.query_id));
                            return;
                        }
                        Strategy::Equivocate => {}
                    }
                }
                self.send(node, t, done, Msg::Response(response));
            }
            Action::RequestVertices { to, request } => {
                let t = self.node_index[&to];
                self.send(node, t, done, Msg::Request(request));
            }
            Action::SendVertices { to, reply } => {
                let t = self.node_index[&to];
                let vs = reply.vertices.into_iter().map(Arc::new).collect();
                self.send(node, t, done, Msg::Reply(vs));
            }
            Action::SendFrontier { to, frontier } => {
                let f = Arc::new(frontier);
                for p in to {
                    let t = self.node_index[&p];
                    self.send(node, t, done, Msg::Frontier(f.clone()));
                }
            }
            Action::Persist { vertex, status } => {
                if self.cfg.forget_final_after_us > 0 {
                    self.archive.entry(vertex.id).or_insert_with(|| vertex.clone());
                }
                if self.nodes[node].keep_storage {
                    let (order, map) = &mut self.nodes[node].storage[shard];
                    if map.insert(vertex.id, status).is_none() {
                        order.push(vertex);
                    }
                }
            }
            Action::Finalized { id, .. } => {
                if !byz {
                    self.on_final(node, id);
                }
            }
            Action::Rejected { id } => {
                if !byz {
                    self.on_reject(node, id);
                }
            }
            Action::Alert { peer, evidence, .. } => {
                if let Some(ev) = evidence {
                    let ev = Arc::new(*ev);
                    for t in 0..self.cfg.nodes {
                        if t != node {
                            self.send(node, t, done, Msg::Alert(peer, ev.clone()));
                        }
                    }
                }
            }
            Action::ToShard { .. } | Action::Created { .. } => {}
        }
    }

    fn vertex_keys(&self, node: usize, id: &VertexId) -> Vec<ConflictKey> {
        let s = self.shard_for_vertex(id) as usize;
        self.nodes[node].shards[s].vertex(id).map(|v| v.conflict_keys.clone()).unwrap_or_default()
    }

    fn on_final(&mut self, node: usize, id: VertexId) {
        self.trace.update(&[3]);
        self.trace.update(&id.0);
        if let Some(&t) = self.created_at.get(&id) {
            let _ = self.latencies.record(self.now.saturating_sub(t).max(1));
        }
        let e = self.decided.entry(id).or_insert((0, 0));
        e.0 += 1;
        if e.1 > 0 {
            self.violation(format!("vertex {id} final at node {node} but rejected at another honest node"));
        }
        for k in self.vertex_keys(node, &id) {
            match self.key_winner.get(&k) {
                Some(w) if *w != id => self.violation(format!("conflict key {}: node {node} finalized {id}, another honest node finalized {w}", hex(&k.0))),
                Some(_) => {}
                None => {
                    self.key_winner.insert(k, id);
                }
            }
        }
        self.close_pre_heal(id);
    }

    fn on_reject(&mut self, node: usize, id: VertexId) {
        let _ = node;
        let e = self.decided.entry(id).or_insert((0, 0));
        e.1 += 1;
        if e.0 > 0 {
            self.violation(format!("vertex {id} rejected at node {node} but final at another honest node"));
        }
        self.close_pre_heal(id);
    }

    fn close_pre_heal(&mut self, id: VertexId) {
        let Some(heal) = self.heal_at else { return };
        if self.now < heal {
            return;
        }
        if self.pre_heal_open.is_none() {
            // Snapshot at the first decision after the heal: vertices created before the heal.
            let open: HashSet<VertexId> = self
                .created_at
                .iter()
                .filter(|(_, &t)| t < heal)
                .filter(|(v, _)| self.decided.get(*v).is_none_or(|d| (d.0 + d.1) < self.honest as u32))
                .map(|(v, _)| *v)
                .collect();
            self.pre_heal_open = Some(open);
        }
        let honest = self.honest as u32;
        let done = self.decided.get(&id).is_some_and(|d| d.0 + d.1 >= honest);
        if let Some(open) = self.pre_heal_open.as_mut() {
            if done {
                open.remove(&id);
            }
            if open.is_empty() && self.recovery_ms.is_none() {
                self.recovery_ms = Some((self.now - heal) as f64 / 1000.0);
            }
        }
    }

    fn converged(&mut self) -> bool {
        let mut digest = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.byz {
                continue;
            }
            if !n.up {
                return false;
            }
            let mut d = [0u8; 32];
            for c in &n.shards {
                let st = c.status();
                if st.partition_suspected {
                    self.partition_seen = true;
                }
                if st.processing > 0 {
                    return false;
                }
                for (x, y) in d.iter_mut().zip(st.finalized_digest.iter()) {
                    *x ^= y;
                }
            }
            match digest {
                None => digest = Some(d),
                Some(x) if x != d => {
                    let _ = i;
                    return false;
                }
                _ => {}
            }
        }
        true
    }

    fn report(mut self, end_us: u64, converged_at: Option<u64>, wall_seconds: f64) -> Report {
        let honest: Vec<usize> = (0..self.cfg.nodes).filter(|&i| !self.nodes[i].byz).collect();
        let finalized = honest.iter().map(|&i| self.nodes[i].shards.iter().map(|c| c.status().finalized).sum::<u64>()).min().unwrap_or(0);
        // End-state agreement: identical finalized digests on every honest node.
        if converged_at.is_some() {
            let mut first: Option<Vec<u8>> = None;
            for &i in &honest {
                let d: Vec<u8> = self.nodes[i].shards.iter().flat_map(|c| c.status().finalized_digest).collect();
                match &first {
                    None => first = Some(d),
                    Some(f) if *f != d => {
                        let msg = format!("node {i} finalized set differs after convergence");
                        self.violation(msg);
                    }
                    _ => {}
                }
            }
        }
        let mut resolved = 0;
        for (k, a, b) in &self.conflict_keys {
            let fa = self.decided.get(a).map(|d| d.0).unwrap_or(0);
            let fb = self.decided.get(b).map(|d| d.0).unwrap_or(0);
            let h = self.honest as u32;
            let ra = self.decided.get(a).map(|d| d.1).unwrap_or(0);
            let rb = self.decided.get(b).map(|d| d.1).unwrap_or(0);
            // One winner everywhere, or both rejected everywhere (both descend from losers).
            if (fa == h && fb == 0) || (fb == h && fa == 0) || (ra == h && rb == h) {
                resolved += 1;
            } else if fa > 0 && fb > 0 {
                let _ = k;
            }
        }
        let byz: Vec<usize> = (0..self.cfg.nodes).filter(|&i| self.nodes[i].byz).collect();
        let byzantine_excluded_by_all = byz.iter().filter(|&&b| honest.iter().all(|&h| self.nodes[h].shards.iter().all(|c| c.is_excluded(&self.nodes[b].id)))).count();
        let honest_excluded = honest.iter().filter(|&&x| honest.iter().any(|&h| h != x && self.nodes[h].shards.iter().any(|c| c.is_excluded(&self.nodes[x].id)))).count();
        let q = |p: f64| self.latencies.value_at_quantile(p) as f64 / 1000.0;
        let busy = self.nodes.iter().flat_map(|n| n.cpu_busy.iter().copied()).max().unwrap_or(0);
        let vertices = self.submitted.max(1) as f64;
        Report {
            nodes: self.cfg.nodes,
            shards: self.cfg.shards,
            seed: self.cfg.seed,
            duration_s: self.cfg.duration_s,
            submitted: self.submitted,
            finalized,
            throughput_vps: finalized as f64 / self.cfg.duration_s,
            finality_ms: Percentiles { p50: q(0.5), p95: q(0.95), p99: q(0.99), max: self.latencies.max() as f64 / 1000.0 },
            safety_violations: self.violations,
            first_violation: self.first_violation.clone(),
            liveness_ok: converged_at.is_some(),
            converge_ms: converged_at.map(|t| t.saturating_sub(end_us) as f64 / 1000.0).unwrap_or(-1.0),
            recovery_ms: self.recovery_ms,
            messages_per_vertex: self.messages as f64 / vertices,
            bytes_per_vertex: self.bytes as f64 / vertices,
            wall_seconds,
            byzantine_nodes: byz.len(),
            byzantine_excluded_by_all,
            honest_excluded,
            partition_suspected_seen: self.partition_seen,
            conflict_sets: self.conflict_keys.len() as u64,
            conflict_sets_resolved: resolved,
            trace_hash: self.trace.finalize().to_hex().to_string(),
            events: self.events,
            cpu_util_max: busy as f64 / (self.now.max(1) as f64),
            cpu_us_per_vertex_per_node: self.nodes.iter().flat_map(|n| n.cpu_busy.iter().copied()).sum::<u64>() as f64 / self.cfg.nodes as f64 / finalized.max(1) as f64,
        }
    }

    /// Runs, then prints the processing vertices of node `node` (debugging aid).
    pub fn run_debug(mut self, node: usize) -> Report {
        let end_us = (self.cfg.duration_s * 1e6) as u64;
        let budget_us = end_us + (self.cfg.liveness_budget_s * 1e6) as u64;
        while let Some(Reverse((at, _, slot))) = self.queue.pop() {
            if at > budget_us {
                break;
            }
            self.now = at;
            if self.workload_on && at >= end_us {
                self.workload_on = false;
            }
            if let Some(ev) = self.slab[slot].take() {
                self.free.push(slot);
                self.step(ev);
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let st = n.shards[0].status();
            if self.cfg.nodes > 50 && st.processing == 0 && st.pending == 0 {
                continue;
            }
            eprintln!("node {i}: finalized {} processing {} pending {} polls {} short {} excluded {} evicted {}", st.finalized, st.processing, st.pending, st.polls_completed, st.polls_short, st.excluded_peers, st.pending_evicted);
        }
        for s in 0..self.cfg.shards as usize {
            for (p, sc) in self.nodes[node].shards[s].peer_scores() {
                eprintln!("node {node} shard {s}: peer {p} score {:.2} incidents {} excluded {} convicted {}", sc.score, sc.incidents, sc.excluded, sc.convicted);
            }
            eprintln!("{:?}", self.nodes[node].shards[s].status());
            for l in self.nodes[node].shards[s].debug_processing(6) {
                eprintln!("node {node} shard {s}: {l}");
            }
        }
        self.report(end_us, None, 0.0)
    }

    /// Observes partition suspicion (the harness polls it during partitions).
    pub fn partition_suspected_any(&self) -> bool {
        self.nodes.iter().any(|n| n.shards.iter().any(|c| c.partition_suspected()))
    }
}

fn hex(b: &[u8; 32]) -> String {
    b[..6].iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs one configuration.
pub fn run(cfg: SimConfig) -> Result<Report, String> {
    Ok(Sim::new(cfg)?.run())
}
