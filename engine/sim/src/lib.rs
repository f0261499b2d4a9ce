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
//!
//! Module map (each owns its state; "where does X happen" is the file name):
//! - `network`: messages, wire sizes, latency, loss and duplication (where messages drop).
//! - `workload`: client submissions and conflicting pairs.
//! - `faults`: crash and partition plans.
//! - `adversary`: Byzantine strategies (what a Byzantine node sends).
//! - `checker`: safety invariants, convergence, partition recovery.
//! - `cost`: the host CPU cost model.
//! - `shell`: the node shell around each core (routing, storage, restart, history sync).
//! - `report`: the report, metrics and the determinism trace.
//! - `queue`: the virtual-time event queue.
//! - `mesh`: the delays of messages between the shards of one node.
//! - `node_step`: one node's part of an event (its shell and shard cores), with what it did to
//!   the rest of the run as effects.
//! - `dispatch`: applies those effects to the modules above (sends, events, checker, guard).
//! - `batch`: runs the events of many nodes within one network latency on several threads.
//! - `debug`: `Sim::run_debug`, a run that ends with a dump of where one node's vertices stand.
//!
//! This file keeps the configuration and the [`Sim`] facade, which owns the clock and the
//! event queue and routes each event to the module that owns it.

use pqdag_core::{IdHashMap as HashMap, IdHashSet as HashSet};

use pqdag_core::{ConflictKey, Event, NodeId, Params, ShardMsg, VertexId};

mod adversary;
mod attacks;
mod census;
mod checker;
mod cost;
mod decisions;
mod debug;
mod dispatch;
mod faults;
mod guard;
mod mesh;
mod mixed;
mod network;
mod node_step;
mod batch;
mod queue;
mod report;
mod shell;
mod verify;
mod workload;

pub use adversary::Strategy;
pub use cost::{COST_BATCH_US, COST_BATCH_WINDOW_US, COST_BYTE_NS, COST_CONN_US_PER_S, COST_SIGN_US, COST_VERIFY_US};
pub use faults::Partition;
pub use mesh::MESH_DELAY_MAX_US;
pub use network::{msg_bytes, MsgKind, SIG_BYTES};
pub use report::{KindTraffic, Percentiles, Report};
pub use shell::MacSigner;

use adversary::{Adversary, Env, NodeView};
use checker::Checker;
use cost::CpuModel;
use faults::Faults;
use guard::Guard;
use mesh::Mesh;
use network::{Msg, Network};
use queue::EventQueue;
use report::{Metrics, Totals, Trace};
use shell::{Archive, CoreSpec, Shell};
use workload::{Arrival, Submission, Workload};

/// Network profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Profile {
    /// One datacenter: ~0.2-0.5 ms one-way.
    Lan,
    /// Continents: 20-150 ms one-way per link.
    Wan,
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
    /// engine does after 30 s. The default quarter second makes every scenario run through
    /// forgotten parents and forgotten conflict sets, and keeps a core's record table at the
    /// size its processing vertices need: at 5 000/s a core holds ~725 records with it, and
    /// with 1 s ~1 600 (measured at 100 x 4), over the 896 at which a table of 2 048 slots doubles once removals
    /// have used its free slots (docs/simulator.md, "Memory at 1000 nodes"). The shell answers
    /// fetches of forgotten vertices from its archive, as the engine's does from its store.
    pub forget_final_after_us: u64,
    /// 0: every node shard has a core of its own (one node per host). C > 0: all nodes share C
    /// cores, like N processes on one machine (used to check the model against such a run).
    pub host_cores: usize,
    /// Threads that run the simulation. 1: one event at a time. N > 1: the events of different
    /// honest nodes within one network latency run as a batch on N threads (`batch.rs`); as
    /// deterministic, the same run for any N > 1, but not the run of 1. Needs `host_cores` 0.
    pub threads: usize,
    /// Payload bytes per submission (transaction).
    pub payload_bytes: usize,
    /// Most transactions per vertex (`Params::max_batch`; 1 = one payload per vertex). Above
    /// 1 the cores batch submissions and re-issue the innocent transactions of rejected own
    /// vertices, so conflicts exercise the re-issue path.
    pub max_batch: usize,
    /// Fraction of submissions sent to two nodes at once, identical (twins: a client's retry
    /// after a lost reply). 0: none (and no draw, so other runs replay as before).
    pub twin_ratio: f64,
    /// Vertices travel by relay (`Params::relay`, spec 4.4's structured gossip: ~3 copies
    /// per node) instead of once from their creator to every peer.
    pub relay: bool,
    /// Length of a lock round (`Params::lock_round_us`; 0: lock rounds off), when not the
    /// profile's.
    pub lock_round_us: Option<u64>,
    /// Sample and poll as the engine does by default (`Params::with_engine_defaults`: k 10,
    /// beta 20, its poll interval for the sample size, a one-poll batch linger, 8 polls in
    /// flight) instead of the scaled profile. Off by default: seeds and documented runs keep the
    /// profile's.
    pub engine_params: bool,
    /// The poll interval (`Params::poll_interval_us`), when not the profile's (the engine's
    /// `poll_interval_ms` setting).
    pub poll_interval_us: Option<u64>,
    /// Liveness budget after the workload (virtual seconds).
    pub liveness_budget_s: f64,
    /// Print what the cores and the simulator hold every this many virtual us (0: never;
    /// `census.rs`).
    pub census_every_us: u64,
    /// Most delay of a message between two shards of one node (us; uniform from 0, FIFO per
    /// channel, lost in a crash). 0: delivered at once, as before the mesh was modelled.
    pub mesh_delay_max_us: u64,
    /// Parameter override (else the profile default scaled to N).
    pub params: Option<Params>,
    /// The shell checks alerts' proofs (structure and the accused's signatures) before the core
    /// sees them, as the engine's does. `false` is a deliberately broken shell: only for the
    /// test that proves the checker catches honest nodes being convicted.
    pub shell_checks_evidence: bool,
    /// The shell drops, before their verify, alerts about a peer its cores convicted already,
    /// but for each reporter's first (as the engine's `shard/verify.rs` does). `false`: every
    /// alert is verified (the checker's measure of what `alert-flood` costs without it).
    pub shell_dedupes_alerts: bool,
    /// The shell charges each peer's queries, fetched ids and alerts to per-peer budgets
    /// before verifying them and drops what is over (`pqdag_core::ratelimit`, as the engine's
    /// `shard/limits.rs` does). `false`: no budgets (the measure of what `query-flood` costs
    /// without them).
    pub shell_rate_limits: bool,
    /// A peer that sent a query over budget is metered by the receiver's transport for
    /// `pqdag_core::ratelimit::STREAM_METER_HOLD_US`: its queries beyond the stream credit
    /// (`RateLimits::stream_credit`) are never sent, so they cost the receiver no bytes (the
    /// engine's transport does it with QUIC's `MAX_STREAMS`). `false`: they are sent and dropped
    /// on arrival, costing their bytes (the measure of what the meter saves).
    pub transport_meters_streams: bool,
    /// A node holds the pushes of a peer whose own vertices are over the creator bound there
    /// (the engine's transport stops its push streams unread, `shard/holds.rs`): a flooder's
    /// vertex the receiver would drop unverified is never sent, so it costs no bytes. `false`:
    /// sent and dropped on arrival, costing its bytes (the measure of what the hold saves).
    pub transport_holds_pushes: bool,
    /// Clients submit to the first this many honest nodes only (0: to every honest node): a
    /// cluster whose client load sits on a few nodes, so those creators are over their fair
    /// share (the per-creator bound's honest cost, `pqdag_core` `flood.rs`).
    pub hot_nodes: usize,
    /// Do not print the first safety violation to stderr as it happens (the soak reports its
    /// own summary).
    pub quiet: bool,
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
            threads: 1,
            forget_final_after_us: 250_000,
            payload_bytes: 64,
            max_batch: 1,
            twin_ratio: 0.0,
            relay: false,
            lock_round_us: None,
            engine_params: false,
            poll_interval_us: None,
            liveness_budget_s: 20.0,
            census_every_us: 0,
            mesh_delay_max_us: MESH_DELAY_MAX_US,
            params: None,
            shell_checks_evidence: true,
            shell_dedupes_alerts: true,
            shell_rate_limits: true,
            transport_meters_streams: true,
            transport_holds_pushes: true,
            hot_nodes: 0,
            quiet: false,
        }
    }
}

/// An event on the virtual clock.
#[derive(Debug)]
pub(crate) enum Ev {
    /// A message arrives.
    Deliver { to: usize, from: usize, msg: Msg },
    /// A shard core's timer.
    Timer { node: usize, shard: u32 },
    /// A workload arrival.
    Submit,
    /// A Byzantine node's own tick (its strategy acts).
    Adversary { node: usize },
    /// A planned crash.
    Crash { node: usize },
    /// A planned restart.
    Restart { node: usize },
    /// A restarted node's shell asks a peer for finalized vertices it lacks (the engine's
    /// history sync by finality position); `left` more rounds follow, one a second.
    HistorySync { node: usize, left: u32 },
    /// A message between two shards of node `node` arrives (dropped if the node restarted
    /// since it was sent: `incarnation` is its restart count then).
    Mesh { node: usize, incarnation: u64, shard: u32, msg: Box<ShardMsg> },
    /// Node `to`'s transport saw metered peer `from` want more stream credit than it grants:
    /// a `Flooding` strike in shard `shard` (as a query over budget).
    Strike { to: usize, from: usize, shard: u32 },
}

impl Ev {
    /// The node whose shell alone runs this event (`node_step`), if it is one node's: a
    /// delivery, a timer, a mesh message or a strike. The rest touch the whole run.
    fn node(&self) -> Option<usize> {
        match self {
            Ev::Deliver { to, .. } | Ev::Strike { to, .. } => Some(*to),
            Ev::Timer { node, .. } | Ev::Mesh { node, .. } => Some(*node),
            Ev::Submit | Ev::Adversary { .. } | Ev::Crash { .. } | Ev::Restart { .. } | Ev::HistorySync { .. } => None,
        }
    }
}

/// A running simulation.
pub struct Sim {
    cfg: SimConfig,
    params: Params,
    /// The numbering the cores' decision archives share (the simulated stores).
    decisions: decisions::DecisionIndex,
    now: u64,
    queue: EventQueue<Ev>,
    shells: Vec<Shell>,
    ids: Vec<NodeId>,
    node_index: HashMap<NodeId, usize>,
    /// Per node index: its position in the sorted roster the cores hold
    /// (`Core::is_excluded_at`, no id lookup per admitted request).
    ranks: Vec<usize>,
    archive: Archive,
    /// Per node: how far its history sync has walked the network's finality log.
    sync_cursor: Vec<usize>,
    /// Per node: the peer its history sync asked last (round robin).
    sync_rr: Vec<usize>,
    network: Network,
    workload: Workload,
    faults: Faults,
    adversary: Adversary,
    checker: Checker,
    guard: Guard,
    cost: CpuModel,
    metrics: Metrics,
    trace: Trace,
    mesh: Mesh,
    /// Conflicting pairs whose vertices were built on another shard than the one submitted
    /// to, and are not created yet: (key, (node, client tag, id) of each).
    pairs_waiting: Vec<(ConflictKey, [(usize, u64, Option<VertexId>); 2])>,
    /// Per node: the accused of the one alert it verified about a peer it had convicted
    /// already (`SimConfig::shell_dedupes_alerts`).
    seen_alerts: Vec<HashSet<NodeId>>,
    /// Per node: its key (the shells' verify reads every sender's).
    signers: Vec<MacSigner>,
    /// Per node: whether it is Byzantine.
    byzantine: Vec<bool>,
    /// Per node: the time of the last event it ran (with batches, nodes run a little ahead of
    /// each other; each one's own time only moves forward).
    node_clock: Vec<u64>,
    /// A spare effect buffer for the sequential path.
    fx_spare: Vec<node_step::Effect>,
    /// With `threads` > 1: the pool that runs batches of events (`batch.rs`).
    batcher: Option<batch::Batcher>,
}

impl Sim {
    /// Builds the cluster (every node's cores with the same parameters).
    pub fn new(cfg: SimConfig) -> Result<Self, String> {
        let n = cfg.nodes;
        if n < 2 {
            return Err("need at least 2 nodes".into());
        }
        if cfg.threads == 0 || (cfg.threads > 1 && cfg.host_cores > 0) {
            return Err("--threads must be 1, or more than 1 with --host-cores 0 (shared host cores are charged in event order)".into());
        }
        let base = match cfg.profile {
            Profile::Lan => Params::lan_default(),
            Profile::Wan => Params::wan_default(),
        };
        let mut params = cfg.params.clone().unwrap_or_else(|| base.scaled_to(n));
        params.forget_final_after_us = cfg.forget_final_after_us;
        // Forgotten decisions go to the archive as soon again (the engine: 30 s after 30 s), so
        // every scenario runs through archived parents and decided keys.
        params.archive_after_us = cfg.forget_final_after_us;
        params.max_batch = cfg.max_batch;
        params.relay = cfg.relay;
        if cfg.engine_params {
            params = params.with_engine_defaults(n);
        }
        if let Some(us) = cfg.lock_round_us {
            params.lock_round_us = us;
        }
        if let Some(us) = cfg.poll_interval_us {
            params.poll_interval_us = us;
        }
        let signers: Vec<MacSigner> = (0..n).map(|i| MacSigner::for_node(cfg.seed, i)).collect();
        let ids: Vec<NodeId> = signers.iter().map(MacSigner::node_id).collect();
        let n_byz = ((n as f64) * cfg.byzantine).floor() as usize;
        let faults = Faults::new(cfg.partition.clone(), cfg.crash);
        let decisions = decisions::DecisionIndex::default();
        let spec = CoreSpec { ids: &ids, params: &params, seed: cfg.seed, shard_count: cfg.shards, decisions: decisions.clone() };
        let mut shells = Vec::with_capacity(n);
        for (i, signer) in signers.iter().enumerate() {
            shells.push(Shell::new(i, signer.clone(), &spec, i >= n - n_byz, faults.keeps_storage(i))?);
        }
        let byzantine = (0..n).map(|i| i >= n - n_byz).collect();
        let node_index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        let ranks = ids.iter().map(|id| sorted.binary_search(id).unwrap_or(0)).collect();
        let network = Network::new(cfg.seed, cfg.profile, cfg.loss, cfg.duplicate);
        let metrics = Metrics::new()?;
        let honest = n - n_byz;
        let mut sim = Sim {
            decisions,
            params,
            now: 0,
            queue: EventQueue::new(),
            shells,
            ids,
            node_index,
            ranks,
            archive: Archive::new(cfg.forget_final_after_us > 0),
            network,
            workload: Workload::new(&cfg, honest),
            checker: Checker::new(cfg.seed, honest, faults.heal_at(), cfg.quiet),
            guard: Guard::new(honest, cfg.nodes),
            faults,
            adversary: Adversary::new(cfg.seed, cfg.strategy),
            cost: CpuModel::new(&cfg),
            metrics,
            trace: Trace::new(),
            mesh: Mesh::new(cfg.seed, if cfg.shards > 1 { cfg.mesh_delay_max_us } else { 0 }),
            pairs_waiting: Vec::new(),
            seen_alerts: vec![HashSet::default(); n],
            signers,
            byzantine,
            node_clock: vec![0; n],
            fx_spare: Vec::new(),
            batcher: if cfg.threads > 1 { Some(batch::Batcher::new(cfg.threads, n)?) } else { None },
            sync_cursor: vec![0; n],
            sync_rr: (0..n).collect(),
            cfg,
        };
        // History sync on every honest node for the whole run (the engine's shards run it all
        // the time), first round after HISTORY_SYNC_US.
        let rounds = ((sim.cfg.duration_s + sim.cfg.liveness_budget_s) * 1e6 / HISTORY_SYNC_US as f64).ceil() as u32;
        for i in 0..honest {
            sim.queue.schedule(HISTORY_SYNC_US, Ev::HistorySync { node: i, left: rounds });
        }
        for i in 0..n {
            for s in 0..sim.cfg.shards {
                sim.queue.schedule(0, Ev::Timer { node: i, shard: s });
                sim.shells[i].arm_timer(s, 0);
            }
        }
        if sim.cfg.rate > 0.0 {
            sim.queue.schedule(0, Ev::Submit);
        }
        for i in honest..n {
            if let Some(at) = sim.adversary.first_tick_us(i) {
                sim.queue.schedule(at, Ev::Adversary { node: i });
            }
        }
        if let Some(c) = sim.faults.crash() {
            sim.queue.schedule(c.at_us, Ev::Crash { node: c.node });
            sim.queue.schedule(c.back_us, Ev::Restart { node: c.node });
        }
        Ok(sim)
    }

    /// Runs workload then liveness phase; returns the report.
    pub fn run(mut self) -> Report {
        let wall = std::time::Instant::now();
        let end_us = (self.cfg.duration_s * 1e6) as u64;
        let budget_us = end_us + (self.cfg.liveness_budget_s * 1e6) as u64;
        let mut converged_at = None;
        let mut next_check = end_us;
        let mut next_census = self.cfg.census_every_us;
        while let Some((at, ev)) = self.next_event() {
            if at > budget_us {
                break;
            }
            self.now = at;
            if next_census > 0 && at >= next_census {
                next_census = at + self.cfg.census_every_us;
                self.print_census();
            }
            if self.workload.is_on() && at >= end_us {
                self.workload.stop();
            }
            let Some(ev) = ev else { continue };
            if let Err(ev) = self.run_batch(at, ev, budget_us) {
                self.metrics.events += 1;
                self.step(ev);
            }
            if !self.workload.is_on() && at >= next_check {
                next_check = at + 50_000;
                if Checker::converged(&self.shells, &mut self.metrics.partition_seen) {
                    converged_at = Some(at);
                    break;
                }
            }
        }
        let wall_seconds = wall.elapsed().as_secs_f64();
        self.report(end_us, converged_at, wall_seconds)
    }

    /// Observes partition suspicion (the harness polls it during partitions).
    pub fn partition_suspected_any(&self) -> bool {
        self.shells.iter().any(|n| n.cores().iter().any(|c| c.partition_suspected()))
    }

    fn report(mut self, end_us: u64, converged_at: Option<u64>, wall_seconds: f64) -> Report {
        if converged_at.is_some() {
            self.checker.check_end_state(&self.shells);
        }
        self.guard.scan(self.now, &self.shells, &self.node_index, &mut self.checker);
        let totals = Totals {
            now: self.now,
            end_us,
            converged_at,
            wall_seconds,
            submitted: self.workload.submitted(),
            messages: self.network.messages(),
            bytes: self.network.bytes(),
            by_kind: self.network.by_kind(),
            violations: self.checker.violations(),
            first_violation: self.checker.first_violation(),
            recovery_ms: self.checker.recovery_ms(),
            conflict_sets: self.checker.conflict_sets(),
            conflict_sets_resolved: self.checker.conflict_sets_resolved(),
            busy_max: self.cost.busy_max(),
            busy_total: self.cost.busy_total(),
            honest_convicted: self.guard.honest_convicted(),
            honest_banned: self.guard.honest_banned(),
            honest_excluded_max_ms: self.guard.honest_excluded_max_ms(self.now),
            max_bytes_held_for_one_peer: self.guard.max_bytes_held_for_one_peer(),
        };
        report::build(&self.cfg, &self.shells, &self.metrics, &self.trace, totals)
    }

    fn step(&mut self, ev: Ev) {
        if self.guard.due(self.now) {
            self.guard.scan(self.now, &self.shells, &self.node_index, &mut self.checker);
        }
        match ev {
            Ev::Deliver { to, from, msg } if self.byzantine[to] => {
                self.guard.landed(from, to, network::size_of(&msg));
                if !self.shells[to].is_up() {
                    return;
                }
                self.trace.delivered(self.now, to, from);
                // A Byzantine node's strategy sees every message it receives first.
                let sh = &self.shells[to];
                let view = NodeView { index: to, id: sh.id(), signer: sh.signer(), core: sh.core(0) };
                let env = Env { now: self.now, honest: self.guard_honest(), ids: &self.ids };
                let out = self.adversary.received(env, view, from, &msg);
                for o in out {
                    self.send(to, o.to, self.now, o.msg);
                }
                self.with_node(to, |n| n.deliver(from, msg));
            }
            ev @ (Ev::Deliver { .. } | Ev::Timer { .. } | Ev::Strike { .. } | Ev::Mesh { .. }) => {
                let node = ev.node().expect("one node's event");
                self.with_node(node, |n| n.step(ev));
            }
            Ev::Submit => self.submit(),
            Ev::Adversary { node } => self.adversary_tick(node),
            Ev::Crash { node } => {
                self.trace.crashed();
                self.shells[node].crash();
            }
            Ev::Restart { node } => self.restart(node),
            Ev::HistorySync { node, left } => self.history_sync(node, left),
        }
    }

    fn submit(&mut self) {
        if !self.workload.is_on() {
            return;
        }
        let gap = self.workload.next_gap_us();
        self.queue.schedule(self.now + gap, Ev::Submit);
        match self.workload.arrival() {
            Arrival::One(sub) => {
                self.submit_to(sub);
            }
            Arrival::Pair(a, b, key) => {
                let (na, nb) = (a.node, b.node);
                let (ta, ida) = (self.workload.submitted() + 1, self.submit_to(a));
                let (tb, idb) = (self.workload.submitted() + 1, self.submit_to(b));
                match (ida, idb) {
                    (Some(x), Some(y)) => self.checker.conflict_set(key, x, y),
                    // Built on another shard: known once its `Created` crosses the mesh.
                    _ if self.shells[na].is_up() && self.shells[nb].is_up() => self.pairs_waiting.push((key, [(na, ta, ida), (nb, tb, idb)])),
                    _ => {}
                }
            }
        }
    }

    fn submit_to(&mut self, sub: Submission) -> Option<VertexId> {
        let node = sub.node;
        if !self.shells[node].is_up() {
            return None;
        }
        let (shard, ev) = self.workload.admit(sub, self.now);
        self.handle(node, shard, ev, 0)
    }

    /// A Byzantine node's own tick: reschedules while the workload runs, then lets its strategy act.
    fn adversary_tick(&mut self, node: usize) {
        if !self.workload.is_on() {
            return;
        }
        self.queue.schedule(self.now + self.adversary.tick_period_us(), Ev::Adversary { node });
        if !self.shells[node].is_up() {
            return;
        }
        let sh = &self.shells[node];
        let view = NodeView { index: node, id: sh.id(), signer: sh.signer(), core: sh.core(0) };
        let env = Env { now: self.now, honest: self.guard_honest(), ids: &self.ids };
        let tick = self.adversary.tick(env, view);
        for (i, (to, keys)) in tick.submits.into_iter().enumerate() {
            // A colluding client's submission to an honest node (the node itself is honest).
            if self.shells[to].is_up() && !self.shells[to].is_byzantine() {
                let mut payload = self.now.to_le_bytes().to_vec();
                payload.extend_from_slice(&(node as u64 * 1024 + i as u64).to_le_bytes());
                let ev = Event::Submit { payload, conflict_keys: keys, client_tag: 1 << 63, timestamp_ms: self.now / 1000 };
                self.handle(to, 0, ev, 0);
            }
        }
        for id in tick.created {
            self.checker.created(id, self.now, true);
        }
        let depart = self.now;
        for o in tick.sends {
            self.send(node, o.to, depart, o.msg);
        }
    }

    /// Honest nodes (the first ones).
    pub(crate) fn guard_honest(&self) -> usize {
        self.shells.iter().filter(|s| !s.is_byzantine()).count()
    }

    fn restart(&mut self, node: usize) {
        self.trace.restarted();
        let spec = CoreSpec { ids: &self.ids, params: &self.params, seed: self.cfg.seed, shard_count: self.cfg.shards, decisions: self.decisions.clone() };
        match self.shells[node].restart(self.now, &spec) {
            Err(e) => {
                self.checker.violation(format!("restart failed: {e}"));
                return;
            }
            Ok(Some(v)) => self.checker.violation(v),
            Ok(None) => {}
        }
        for s in 0..self.cfg.shards {
            self.shells[node].arm_timer(s, self.now);
            self.queue.schedule(self.now, Ev::Timer { node, shard: s });
        }
        self.queue.schedule(self.now + 1_000_000, Ev::HistorySync { node, left: 20 });
    }

    /// One round of the shell's history sync for node `node` (`shell::history_for`): every
    /// honest node runs it every [`HISTORY_SYNC_US`] while up, as the engine's shards do.
    fn history_sync(&mut self, node: usize, left: u32) {
        if left > 0 {
            self.queue.schedule(self.now + HISTORY_SYNC_US, Ev::HistorySync { node, left: left - 1 });
        }
        if !self.shells[node].is_up() {
            return;
        }
        let mut cursor = self.sync_cursor[node];
        let found = shell::history_for(&self.shells, node, self.checker.final_log(), &mut cursor, &mut self.sync_rr[node], &self.archive, self.cfg.shards);
        self.sync_cursor[node] = cursor;
        let Some((peer, vs)) = found else { return };
        if !vs.is_empty() {
            self.send(peer, node, self.now, Msg::Reply(vs));
        }
    }
}

/// Period of every node's history sync once caught up (the engine's `SYNC_IDLE`).
const HISTORY_SYNC_US: u64 = 2_000_000;

/// mimalloc's `purge_delay` option (`mi_option_e` in the header vendored by `libmimalloc-sys`
/// 0.1.49; the engine's `runtime/heap.rs` names the same number).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// For the simulator binaries (their global allocator is mimalloc): never give freed pages back
/// to the system. A run's cores free and reallocate their records all the time, and with the
/// default delay (1 s) the pages went back and were faulted in again: `sim --nodes 300
/// --shards 4 --rate 5000 --duration 1` took 55-57 s with it, 46-48 s without (+8 % RSS). An
/// operator's `MIMALLOC_PURGE_DELAY` (read by mimalloc itself) wins.
pub fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer option; 15 is `purge_delay` in the vendored
        // mimalloc, and -1 (never purge) is a valid value for it.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// Runs one configuration.
pub fn run(cfg: SimConfig) -> Result<Report, String> {
    Ok(Sim::new(cfg)?.run())
}
