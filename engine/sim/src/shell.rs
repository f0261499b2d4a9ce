//! The simulated node shell around the real cores: what the engine's shell does between the
//! network and `pqdag-core`. Owns each node's identity and signer ([`MacSigner`]), its shard
//! cores, their timers, its up/down state, its storage (what a crashed node restarts from), its
//! per-peer request budgets (the engine's `shard/limits.rs`) and the shared store archive
//! ([`Archive`], serving fetches of vertices a core forgot). Decides
//! which shard an input goes to, skips duplicate vertices, answers fetches from the store,
//! restores a restarted node and picks the history a restarted node is sent.
//!
//! Calls only `pqdag-core`; the facade (`Sim`) hands inputs in and routes the actions
//! that come out.

use pqdag_core::{IdHashMap as HashMap, IdHashSet as HashSet};
use std::sync::Arc;

use pqdag_core::{Action, Admission, Config, ConflictKey, Core, Domain, Event, NodeId, Params, RateLimits, RequestKind, Roster, Signer, VertexId, VertexStatus};
use pqdag_wire::{Query, Response, Vertex};

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
    /// The node id this key belongs to.
    pub(crate) fn node_id(&self) -> NodeId {
        NodeId(pqdag_crypto::hash::node_id(&self.key))
    }
    /// Whether `sig` is this key's signature of `msg` under `domain` (the shell's verify).
    pub(crate) fn verifies(&self, domain: Domain, msg: &[u8], sig: &[u8]) -> bool {
        self.mac(domain, msg) == sig
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

/// Shard of a vertex id.
pub(crate) fn shard_for_vertex(id: &VertexId, shards: u32) -> u32 {
    pqdag_core::shard_of_vertex(id, shards)
}

/// Shard a query goes to: the asking shard's peer (in the engine shard s only talks to shard s
/// of a peer, and a query id's low byte is the asking shard). An honest node's shards take
/// turns running its polls (`pqdag_core::node_polls`).
pub(crate) fn shard_for_query(q: &Query, shards: u32) -> u32 {
    shard_for_query_id(q.query_id, shards)
}

/// Shard a response (or a refused frame answering query `query_id`) goes to.
pub(crate) fn shard_for_query_id(query_id: u64, shards: u32) -> u32 {
    (query_id & 0xff) as u32 % shards
}

/// Shard a response goes to.
pub(crate) fn shard_for_response(r: &Response, shards: u32) -> u32 {
    shard_for_query_id(r.query_id, shards)
}

/// What one shard persisted: vertices in first-persist order and their latest status.
type ShardStore = (Vec<Arc<Vertex>>, HashMap<VertexId, VertexStatus>);

/// Every vertex ever persisted (one copy per id): the shells' store, serving fetches of
/// vertices a core has forgotten.
pub(crate) struct Archive {
    enabled: bool,
    vertices: HashMap<VertexId, Arc<Vertex>>,
}

impl Archive {
    /// An empty archive; it keeps vertices only if `enabled` (cores forget finals).
    pub(crate) fn new(enabled: bool) -> Self {
        Archive { enabled, vertices: HashMap::default() }
    }

    /// Vertices kept.
    pub(crate) fn len(&self) -> usize {
        self.vertices.len()
    }

    /// Keeps the first persisted copy of `vertex`.
    pub(crate) fn record(&mut self, vertex: &Arc<Vertex>) {
        if self.enabled {
            self.vertices.entry(vertex.id).or_insert_with(|| vertex.clone());
        }
    }

    /// The stored vertex `id`.
    pub(crate) fn get(&self, id: &VertexId) -> Option<Arc<Vertex>> {
        self.vertices.get(id).cloned()
    }

    /// The vertices of `ids` that `core` has forgotten but knows the status of: the shell
    /// answers them from its store.
    pub(crate) fn forgotten_by(&self, core: &Core<MacSigner>, ids: &[VertexId]) -> Vec<Arc<Vertex>> {
        ids.iter().filter(|id| core.vertex(id).is_none() && core.vertex_status(id).is_some()).filter_map(|id| self.get(id)).collect()
    }
}

/// Everything a core needs to be built for node `node` (fresh or restarted).
pub(crate) struct CoreSpec<'a> {
    /// Every node id, by index.
    pub(crate) ids: &'a [NodeId],
    /// Consensus parameters.
    pub(crate) params: &'a Params,
    /// Master seed.
    pub(crate) seed: u64,
    /// Shard cores per node.
    pub(crate) shard_count: u32,
    /// The numbering every core's decision archive shares (`decisions.rs`).
    pub(crate) decisions: crate::decisions::DecisionIndex,
}

impl CoreSpec<'_> {
    /// Builds the cores of node `node` after `restarts` restarts.
    fn build(&self, node: usize, roster: &Roster, signer: &MacSigner, restarts: u64, shard: u32) -> Result<Core<MacSigner>, String> {
        Core::with_roster(
            Config {
                me: self.ids[node],
                nodes: Vec::new(),
                params: self.params.clone(),
                seed: self.seed ^ (node as u64).wrapping_mul(0x9E37_79B9) ^ (restarts << 40),
                shard,
                shard_count: self.shard_count,
            },
            signer.clone(),
            roster,
        )
        .map(|mut core| {
            core.set_archive(Box::new(crate::decisions::CompactArchive::new(self.decisions.clone())));
            core
        })
        .map_err(|e| e.to_string())
    }
}

/// One simulated node: its cores and what its shell keeps around them.
pub(crate) struct Shell {
    index: usize,
    id: NodeId,
    signer: MacSigner,
    /// The membership its cores share, fresh or restarted.
    roster: Roster,
    cores: Vec<Core<MacSigner>>,
    /// Per shard: when its armed timer fires (`u64::MAX`: none).
    timer_at: Vec<u64>,
    byz: bool,
    up: bool,
    restarts: u64,
    /// Storage: per shard, vertices in first-persist order and their latest status.
    storage: Vec<ShardStore>,
    /// Storage: per shard, the quorum locks held (`Action::Lock`), restored at a restart.
    locks: Vec<std::collections::BTreeMap<ConflictKey, (VertexId, u64, u64)>>,
    keep_storage: bool,
    finalized_before_crash: u64,
    /// Per shard: every peer's request budgets, as the engine's shell keeps them
    /// (`runtime/shard/limits.rs`: queries, fetched ids, alerts; checked before the verify).
    /// A restart starts them full, as a new process does.
    limits: Vec<RateLimits>,
}

impl Shell {
    /// Node `index` with fresh cores; `keep_storage` if it will need to restart.
    pub(crate) fn new(index: usize, signer: MacSigner, spec: &CoreSpec<'_>, byz: bool, keep_storage: bool) -> Result<Self, String> {
        let roster = Roster::new(spec.ids, spec.ids[index]).map_err(|e| e.to_string())?;
        let cores = (0..spec.shard_count).map(|s| spec.build(index, &roster, &signer, 0, s)).collect::<Result<Vec<_>, _>>()?;
        let shards = spec.shard_count as usize;
        Ok(Shell {
            index,
            id: spec.ids[index],
            signer,
            roster,
            cores,
            timer_at: vec![u64::MAX; shards],
            byz,
            up: true,
            restarts: 0,
            storage: (0..shards).map(|_| (Vec::new(), HashMap::default())).collect(),
            locks: vec![std::collections::BTreeMap::new(); shards],
            keep_storage,
            finalized_before_crash: 0,
            limits: vec![RateLimits::new(spec.ids.len()); shards],
        })
    }

    /// The node's id.
    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    /// The node's signer.
    pub(crate) fn signer(&self) -> &MacSigner {
        &self.signer
    }

    /// Whether the node is Byzantine (the adversary controls what it sends).
    pub(crate) fn is_byzantine(&self) -> bool {
        self.byz
    }

    /// Whether the node is running (not crashed).
    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// Charges `cost` units of `kind` to peer `from` (a node index) in shard `shard`'s budgets
    /// at `now`, as the engine's shell does before it verifies a request (an excluded peer gets
    /// a quarter of the budget).
    /// `from_rank` is `from`'s position in the cores' sorted roster.
    pub(crate) fn admit(&mut self, shard: u32, from: usize, from_rank: usize, kind: RequestKind, cost: u64, now: u64) -> Admission {
        let excluded = self.cores[shard as usize].is_excluded_at(from_rank);
        self.limits[shard as usize].admit(from, kind, cost, excluded, now)
    }

    /// Whether `from` may open one more query stream to shard `shard` at `now` (its stream
    /// credit, when this node meters it: `RateLimits::stream_credit`).
    pub(crate) fn stream_credit(&mut self, shard: u32, from: usize, from_rank: usize, now: u64) -> Admission {
        let excluded = self.cores[shard as usize].is_excluded_at(from_rank);
        self.limits[shard as usize].stream_credit(from, excluded, now)
    }

    /// Restarts so far: a shard message sent before a crash is lost with the process.
    pub(crate) fn incarnation(&self) -> u64 {
        self.restarts
    }

    /// Shard core `shard`.
    pub(crate) fn core(&self, shard: u32) -> &Core<MacSigner> {
        &self.cores[shard as usize]
    }

    /// Shard core `shard`, mutably (debugging only: `Sim::run_debug`).
    pub(crate) fn core_mut(&mut self, shard: u32) -> &mut Core<MacSigner> {
        &mut self.cores[shard as usize]
    }

    /// Every shard core.
    pub(crate) fn cores(&self) -> &[Core<MacSigner>] {
        &self.cores
    }

    /// Whether shard `shard` already holds vertex `id` (the shell skips verifying duplicates).
    pub(crate) fn holds(&self, shard: u32, id: &VertexId) -> bool {
        self.cores[shard as usize].contains(id)
    }

    /// Conflict keys of vertex `id` as its core knows them (none if forgotten).
    pub(crate) fn vertex_keys(&self, id: &VertexId, shards: u32) -> Vec<ConflictKey> {
        let s = shard_for_vertex(id, shards) as usize;
        self.cores[s].vertex(id).map(|v| v.conflict_keys.clone()).unwrap_or_default()
    }

    /// Runs `ev` through core `shard` and drains its actions, in order.
    pub(crate) fn run(&mut self, shard: u32, now: u64, ev: Event) -> Vec<Action> {
        let core = &mut self.cores[shard as usize];
        let r = core.handle(now, ev);
        if let Err(e) = r {
            let _ = e; // own conflicting submission refused: fine
        }
        let mut out = Vec::new();
        while let Some(a) = core.poll_action() {
            out.push(a);
        }
        out
    }

    /// Arms shard `shard`'s timer at `at` (the caller schedules the event).
    pub(crate) fn arm_timer(&mut self, shard: u32, at: u64) {
        self.timer_at[shard as usize] = at;
    }

    /// A timer event of shard `shard` arrived at `now`: true if it is the armed one (then
    /// disarmed) and the node is up.
    pub(crate) fn take_timer(&mut self, shard: u32, now: u64) -> bool {
        if !self.up || self.timer_at[shard as usize] != now {
            return false;
        }
        self.timer_at[shard as usize] = u64::MAX;
        true
    }

    /// After a job of shard `shard`: if its core wants a timer earlier than the armed one, arms
    /// it and returns when (the caller schedules the event).
    pub(crate) fn rearm_timer(&mut self, shard: u32, now: u64) -> Option<u64> {
        let t = self.cores[shard as usize].poll_timeout()?.max(now + 1);
        if t < self.timer_at[shard as usize] {
            self.timer_at[shard as usize] = t;
            return Some(t);
        }
        None
    }

    /// A core persisted `vertex` with `status`: kept if this node may restart.
    pub(crate) fn persist(&mut self, shard: usize, vertex: Arc<Vertex>, status: VertexStatus) {
        if self.keep_storage {
            let (order, map) = &mut self.storage[shard];
            if map.insert(vertex.id, status).is_none() {
                order.push(vertex);
            }
        }
    }

    /// A core made the lock of `key` durable (`None`: released): kept if this node may restart.
    pub(crate) fn persist_lock(&mut self, shard: usize, key: ConflictKey, member: Option<(VertexId, u64, u64)>) {
        if self.keep_storage {
            match member {
                Some(m) => self.locks[shard].insert(key, m),
                None => self.locks[shard].remove(&key),
            };
        }
    }

    /// The node crashes: it stops, remembering how many vertices it had finalized.
    pub(crate) fn crash(&mut self) {
        self.up = false;
        self.finalized_before_crash = self.cores.iter().map(|c| c.status().finalized).sum();
    }

    /// The node restarts at `now` with new cores restored from its storage. `Err`: a core could
    /// not be built (nothing changed). `Ok(Some(_))`: restarted, but a safety violation (a
    /// finalized vertex disappeared).
    pub(crate) fn restart(&mut self, now: u64, spec: &CoreSpec<'_>) -> Result<Option<String>, String> {
        let restarts = self.restarts + 1;
        let mut cores = Vec::new();
        for s in 0..spec.shard_count {
            let mut core = spec.build(self.index, &self.roster, &self.signer, restarts, s)?;
            if spec.shard_count > 1 {
                // As the engine does for S > 1: every other shard's stored decisions first, so a
                // vertex naming another shard's parent is not left pending for an answer.
                let facts = self.storage.iter().enumerate().filter(|(o, _)| *o != s as usize).flat_map(|(_, (order, status))| order.iter().map(move |v| (v.id, status[&v.id])));
                core.restore_remote_facts(facts);
                // The engine's archive reads every shard's store for a key's winner (it is stored
                // with the winning vertex, on the vertex's shard): the same here.
                for (_, (order, status)) in self.storage.iter().enumerate().filter(|(o, _)| *o != s as usize) {
                    for v in order.iter().filter(|v| status[&v.id] == VertexStatus::Final) {
                        for k in &v.conflict_keys {
                            core.restore_key_winner(*k, v.id);
                        }
                    }
                }
            }
            let (order, status) = &self.storage[s as usize];
            // As the engine does: older finals come back as forgotten ids, the last few finals
            // and every non-final vertex in full.
            let finals: Vec<&Arc<Vertex>> = order.iter().filter(|v| status[&v.id] == VertexStatus::Final).collect();
            let compact = finals.len().saturating_sub(32);
            for v in &finals[..compact] {
                core.restore_forgotten_final(v.id, &v.conflict_keys);
            }
            let skip: HashSet<VertexId> = finals[..compact].iter().map(|v| v.id).collect();
            let items: Vec<(Arc<Vertex>, VertexStatus)> = order.iter().filter(|v| !skip.contains(&v.id)).map(|v| (v.clone(), status[&v.id])).collect();
            core.restore(now, items);
            core.restore_locks(self.locks[s as usize].iter().map(|(k, (m, round, gate))| (*k, *m, *round, *gate)));
            cores.push(core);
        }
        self.cores = cores;
        self.up = true;
        self.restarts = restarts;
        self.limits = vec![RateLimits::new(spec.ids.len()); spec.shard_count as usize];
        let restored: u64 = self.cores.iter().map(|c| c.status().finalized).sum();
        let before = self.finalized_before_crash;
        if restored != before {
            return Ok(Some(format!("node {} restarted with {restored} finalized, had {before}: a finalized vertex disappeared", self.index)));
        }
        Ok(None)
    }
}

/// The engine shell's history sync (`shard/sync_client.rs`, which every node runs for as long
/// as it is up, every 2 s once caught up) for node `node`: walks the network's finality log from
/// the node's cursor and picks, from the next up honest peer in turn (`rr`, round robin as the
/// engine's), the finalized vertices the node does not hold and the peer holds as final (what
/// gossip and frontiers never lead to: finalized leaves from while it was down, partitioned away,
/// or its messages were lost). At most 256. The cursor moves past every id the node holds; the
/// rest is asked again next round. (Asking always the first honest peer left nodes 0 and 1 of a
/// healed 0-1 | 2-9 partition asking each other for ever about a final neither had: seed 533.)
pub(crate) fn history_for(shells: &[Shell], node: usize, log: &[VertexId], cursor: &mut usize, rr: &mut usize, archive: &Archive, shards: u32) -> Option<(usize, Vec<Arc<Vertex>>)> {
    let n = shells.len();
    let peer = (1..=n).map(|k| (*rr + k) % n).find(|&j| j != node && shells[j].up && !shells[j].byz)?;
    *rr = peer;
    let held = |id: &VertexId| shells[node].cores[shard_for_vertex(id, shards) as usize].contains(id);
    while *cursor < log.len() && held(&log[*cursor]) {
        *cursor += 1;
    }
    let missing: Vec<VertexId> = log[(*cursor).min(log.len())..]
        .iter()
        .filter(|id| !held(id) && shells[peer].cores[shard_for_vertex(id, shards) as usize].vertex_status(id) == Some(VertexStatus::Final))
        .take(256)
        .copied()
        .collect();
    // From the peer's store: the archive when cores forget finals, else the peer's core.
    let vs: Vec<Arc<Vertex>> = missing.iter().filter_map(|id| archive.get(id).or_else(|| shells[peer].cores[shard_for_vertex(id, shards) as usize].vertex(id).cloned())).collect();
    Some((peer, vs))
}
