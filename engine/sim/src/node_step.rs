//! One node's part of an event: what its shell does with a delivered message, a timer, a
//! cross-shard message or a strike (checks, budgets, verification, the shard cores, the CPU
//! charge), touching only that node's own state. What the event does to the rest of the run
//! (sends, events to schedule, what the checker, guard, trace and metrics learn) is returned
//! as [`Effect`]s, which the [`crate::Sim`] applies in order (`dispatch.rs`). Applied at once,
//! that is exactly the sequential simulator; and since nodes share nothing here, the events of
//! different nodes within one network latency of each other can run on several threads
//! (`batch.rs`).
//!
//! Owns nothing: it borrows one node's shell, CPU and alert memory, and reads the run's
//! constants ([`Shared`]).

use std::collections::VecDeque;
use std::sync::Arc;

use pqdag_core::{Action, Admission, Event, IdHashMap as HashMap, IdHashSet as HashSet, Misbehaviour, NodeId, RequestKind, VertexId};
use pqdag_wire::{ConflictKey, Response, VertexRequest};

use crate::cost::{CostParams, NodeCpu};
use crate::network::{size_of, Msg};
use crate::shell::{shard_for_query, shard_for_query_id, shard_for_response, shard_for_vertex, Archive, MacSigner, Shell};
use crate::{checker, verify, Ev, SimConfig};

/// What an event of one node does to the rest of the run, in the order it happened.
pub(crate) enum Effect {
    /// The message from `from` of `bytes` left the network (the guard's bytes in flight).
    Landed { from: usize, bytes: usize },
    /// A message from `from` was delivered (traced).
    Delivered { from: usize },
    /// A timer fired (traced).
    TimerFired,
    /// A message to node `to`, leaving at `depart`.
    Send { to: usize, depart: u64, msg: Msg },
    /// A Byzantine node's answer to `to`: its strategy rewrites it (`Adversary::respond`).
    ByzRespond { to: usize, depart: u64, response: Box<Response> },
    /// An event of this node, at `at`.
    Schedule { at: u64, ev: Ev },
    /// A message to this node's shard `shard` from shard `from_shard`, over the mesh.
    Mesh { from_shard: u32, shard: u32, incarnation: u64, msg: Box<pqdag_core::ShardMsg> },
    /// This node created vertex `id` for client tag `tag`.
    Created { id: VertexId, tag: u64, byzantine: bool },
    /// A persisted vertex, for the shells' store.
    Archived(Arc<pqdag_wire::Vertex>),
    /// This honest node finalized `id` (conflict keys `keys`).
    Final { id: VertexId, keys: Vec<ConflictKey> },
    /// This honest node rejected `id`.
    Rejected(VertexId),
    /// This honest node excluded node `peer`; `all_byzantine`: it now excludes every Byzantine
    /// node on every shard.
    Excluded { peer: usize, reason: Misbehaviour, has_evidence: bool, all_byzantine: bool },
    /// This node's shell refused a frame of `from` as `kind`.
    Refused { from: usize, kind: Misbehaviour, was_excluded: bool },
    /// This node's shell dropped a request of `from` over its budget.
    RateLimited { from: usize },
    /// A safety violation found on this node's own state.
    Violation(String),
    /// This node suspects a partition.
    PartitionSeen,
}

/// What every node's step reads and nobody changes while steps run.
pub(crate) struct Shared<'a> {
    pub(crate) cfg: &'a SimConfig,
    pub(crate) ids: &'a [NodeId],
    pub(crate) node_index: &'a HashMap<NodeId, usize>,
    /// Per node: its position in the cores' sorted roster.
    pub(crate) ranks: &'a [usize],
    pub(crate) signers: &'a [MacSigner],
    pub(crate) byzantine: &'a [bool],
    pub(crate) archive: &'a Archive,
    pub(crate) cost: &'a CostParams,
    /// Whether cross-shard messages take the mesh (a delay) rather than arriving at once.
    pub(crate) mesh_delays: bool,
    /// Whether the run has a partition whose suspicion is still to be seen.
    pub(crate) watch_partition: bool,
}

/// The run's constants as a [`Shared`], borrowed field by field from a `Sim` (a macro, so that
/// these borrows stay apart from the node state borrowed mutably beside them).
macro_rules! shared_of {
    ($sim:expr) => {
        $crate::node_step::Shared {
            cfg: &$sim.cfg,
            ids: &$sim.ids,
            node_index: &$sim.node_index,
            ranks: &$sim.ranks,
            signers: &$sim.signers,
            byzantine: &$sim.byzantine,
            archive: &$sim.archive,
            cost: &$sim.cost.params,
            mesh_delays: $sim.mesh.delays(),
            watch_partition: $sim.faults.has_partition() && !$sim.metrics.partition_seen,
        }
    };
}
pub(crate) use shared_of;

/// One node, borrowed for one event.
pub(crate) struct NodeCtx<'a> {
    pub(crate) node: usize,
    pub(crate) now: u64,
    pub(crate) shell: &'a mut Shell,
    pub(crate) cpu: &'a mut NodeCpu,
    /// The shared host cores (empty unless `host_cores` > 0, which runs sequentially).
    pub(crate) host_free: &'a mut [u64],
    /// Accused peers this node's shell verified one alert about after convicting them.
    pub(crate) seen_alerts: &'a mut HashSet<NodeId>,
    pub(crate) w: &'a Shared<'a>,
    pub(crate) fx: Vec<Effect>,
}

impl NodeCtx<'_> {
    /// One event of this node: a delivery, a timer, a mesh message or a strike (not a
    /// Byzantine node's delivery, whose strategy sees it first: `Sim::step`).
    pub(crate) fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { from, msg, .. } => {
                self.fx.push(Effect::Landed { from, bytes: size_of(&msg) });
                if !self.shell.is_up() {
                    return;
                }
                self.fx.push(Effect::Delivered { from });
                self.deliver(from, msg);
            }
            Ev::Timer { shard, .. } => {
                if !self.shell.take_timer(shard, self.now) {
                    return;
                }
                self.fx.push(Effect::TimerFired);
                self.handle(shard, Event::Timer, 0);
            }
            Ev::Strike { from, shard, .. } => {
                if self.shell.is_up() {
                    self.refuse(from, shard, Misbehaviour::Flooding, 0);
                }
            }
            Ev::Mesh { incarnation, shard, msg, .. } => {
                if self.shell.is_up() && self.shell.incarnation() == incarnation {
                    self.handle(shard, Event::FromShard(*msg), 0);
                }
            }
            Ev::Submit | Ev::Adversary { .. } | Ev::Crash { .. } | Ev::Restart { .. } | Ev::HistorySync { .. } => {
                debug_assert!(false, "not one node's event");
            }
        }
    }

    fn charge(&mut self, shard: usize, input_us: u64, out: &[Action]) -> u64 {
        self.cpu.charge(self.w.cost, self.host_free, shard, self.now, input_us, out)
    }

    fn send(&mut self, to: usize, depart: u64, msg: Msg) {
        self.fx.push(Effect::Send { to, depart, msg });
    }

    /// A message reaches this node's shell: it routes it to the shard core(s) it concerns.
    pub(crate) fn deliver(&mut self, from: usize, msg: Msg) {
        let from_id = self.w.ids[from];
        let shards = self.w.cfg.shards;
        // Receiving costs its bytes (charged with the input's verification).
        let v_us = self.w.cost.receive_us(size_of(&msg));
        let duplicate = matches!(&msg, Msg::Vertex(v) if self.shell.holds(shard_for_vertex(&v.id, shards), &v.id));
        // As the node's shell does (`shard/verify.rs`): a vertex whose creator holds its bound of
        // processing vertices and that the core does not need is dropped before its verify,
        // costing only its bytes (charging the verify let a flood starve the node's polls).
        if let Msg::Vertex(v) = &msg {
            let s = shard_for_vertex(&v.id, shards);
            if !duplicate && self.shell.is_up() && !self.shell.core(s).admits_creator(v) {
                self.charge(s as usize, v_us - self.w.cost.verify_us(), &[]);
                return;
            }
        }
        // As the engine's shell (`shard/mod.rs::route`): a query or an alert is charged to its
        // sender's budget before anything else is done with it; over budget it is dropped,
        // costing this node only its bytes, and the sender gets a strike.
        let charge = match &msg {
            Msg::Query(q, _) => Some((shard_for_query(q, shards), RequestKind::Query)),
            Msg::Alert(..) => Some((0, RequestKind::Alert)),
            _ => None,
        };
        if let Some((s, kind)) = charge {
            if !self.admit(from, s, kind, 1, v_us) {
                return;
            }
        }
        // As the engine's shell (`shard/verify.rs`): a proof against a peer every core of this
        // node convicted already changes nothing; one is still verified per accused (the gossip
        // is seen to work), the rest are dropped before their verify, costing only their bytes.
        // Once per reporter instead verified ~80 proofs per equivocator at every honest node of
        // 100 (each node that convicts broadcasts its own): with 20 equivocators, ~0.9 s of
        // every honest core in the first second, and no poll answered in time meanwhile.
        if let Msg::Alert(accused, _) = &msg {
            let convicted = (0..shards).all(|s| self.shell.core(s).is_convicted(accused));
            if self.w.cfg.shell_dedupes_alerts && convicted && self.shell.is_up() && !self.seen_alerts.insert(*accused) {
                self.charge(0, v_us.saturating_sub(self.w.cost.verify_us()), &[]);
                return;
            }
        }
        if !duplicate {
            let w = self.w;
            let keys = |id: &NodeId| w.node_index.get(id).map(|&i| &w.signers[i]);
            if let Err(kind) = verify::check(&msg, &from_id, keys, w.cfg.shell_checks_evidence) {
                let s = match &msg {
                    Msg::Vertex(v) => shard_for_vertex(&v.id, shards),
                    Msg::Query(q, _) => shard_for_query(q, shards),
                    Msg::Response(r) => shard_for_response(r, shards),
                    _ => 0,
                };
                self.refuse(from, s, kind, v_us);
                return;
            }
        }
        match msg {
            Msg::Vertex(v) => {
                let s = shard_for_vertex(&v.id, shards);
                // The shell skips verifying duplicates (cheap id lookup first).
                if duplicate {
                    return;
                }
                self.handle(s, Event::Vertex { from: from_id, vertex: v }, v_us);
            }
            Msg::Query(q, ids_digest) => {
                let s = shard_for_query(&q, shards);
                self.handle(s, Event::Query { from: from_id, query: q, ids_digest }, v_us);
            }
            Msg::Response(r) => {
                let s = shard_for_response(&r, shards);
                // As the engine's shell does: an answer no poll awaits is dropped unverified.
                if !self.shell.core(s).awaits_response(&from_id, r.query_id) {
                    return;
                }
                self.handle(s, Event::Response { from: from_id, response: *r }, v_us);
            }
            Msg::Request(req) => {
                for s in 0..shards {
                    let ids: Vec<VertexId> = req.ids.iter().filter(|id| shard_for_vertex(id, shards) == s).copied().collect();
                    if !ids.is_empty() {
                        if !self.admit(from, s, RequestKind::Fetch, ids.len() as u64, 0) {
                            continue;
                        }
                        // Forgotten by the core but final here: the shell answers from its store.
                        let stored = self.w.archive.forgotten_by(self.shell.core(s), &ids);
                        self.handle(s, Event::VertexRequest { from: from_id, request: VertexRequest { request_id: req.request_id, ids } }, 0);
                        if !stored.is_empty() && self.shell.is_up() {
                            let at = self.now.max(self.cpu.free_at(s as usize));
                            self.send(from, at, Msg::Reply(stored));
                        }
                    }
                }
            }
            Msg::Reply(vs) => {
                for v in vs {
                    let s = shard_for_vertex(&v.id, shards);
                    if self.shell.holds(s, &v.id) {
                        continue;
                    }
                    // Each vertex of a reply costs its own verify and bytes: charging the whole
                    // reply's bytes per vertex made a 250-vertex reply cost 2.7 s of CPU instead
                    // of 27 ms (`sim-faults` seed 11: a restarted node's queries left seconds late).
                    let cost = self.w.cost.receive_us(size_of(&Msg::Vertex(v.clone())));
                    self.handle(s, Event::VertexReply { from: from_id, vertices: vec![v] }, cost);
                }
            }
            Msg::Frontier(f) => {
                for s in 0..shards {
                    self.handle(s, Event::Frontier { from: from_id, frontier: (*f).clone() }, 0);
                }
            }
            Msg::Alert(accused, ev) => {
                for s in 0..shards {
                    self.handle(s, Event::Alert { from: from_id, accused, evidence: (*ev).clone() }, 2 * v_us);
                }
            }
            Msg::Garbage(kind, qid) => {
                let s = shard_for_query_id(qid, shards);
                self.refuse(from, s, kind, if kind == Misbehaviour::InvalidSignature { v_us } else { 1 });
            }
        }
    }

    /// This node's shell charges a request of `from` (`cost` units of `kind`, shard `s`) to
    /// `from`'s budget (`SimConfig::shell_rate_limits`). Over budget: counted, the bytes
    /// (`v_us` less the verify it skips) charged to the shard, and a strike for the sender
    /// (the budget's own rule: at most one a second). `false`: drop the request.
    fn admit(&mut self, from: usize, s: u32, kind: RequestKind, cost: u64, v_us: u64) -> bool {
        if !self.w.cfg.shell_rate_limits || !self.shell.is_up() {
            return true;
        }
        let Admission::Dropped { strike } = self.shell.admit(s, from, self.w.ranks[from], kind, cost, self.now) else { return true };
        if !self.shell.is_byzantine() {
            self.fx.push(Effect::RateLimited { from });
        }
        self.charge(s as usize, v_us.saturating_sub(self.w.cost.verify_us()), &[]);
        if strike {
            self.refuse(from, s, Misbehaviour::Flooding, 0);
        }
        false
    }

    /// This node's shell refused a frame of `from` as `kind`: charged to `from` in shard `s`
    /// (as the engine's guard does: a proven-bad frame of an excluded peer bans it again).
    fn refuse(&mut self, from: usize, s: u32, kind: Misbehaviour, cost_us: u64) {
        let from_id = self.w.ids[from];
        let was_excluded = self.shell.core(s).is_excluded(&from_id);
        self.handle(s, Event::InvalidMessage { from: from_id, kind }, cost_us);
        if !self.shell.is_byzantine() {
            self.fx.push(Effect::Refused { from, kind, was_excluded });
        }
    }

    /// Runs one event through a shard core, then drains its actions (and in-process shard
    /// messages, in order). `cost_us` is the shell's verification cost of the input. Returns
    /// the vertex it created, if any.
    pub(crate) fn handle(&mut self, shard: u32, ev: Event, cost_us: u64) -> Option<VertexId> {
        let mut created = None;
        let mut inbox: VecDeque<(u32, Event, u64)> = VecDeque::new();
        inbox.push_back((shard, ev, cost_us));
        let mut guard = 0usize;
        while let Some((s, ev, cost)) = inbox.pop_front() {
            guard += 1;
            assert!(guard < 1_000_000, "shard message storm");
            let out = self.shell.run(s, self.now, ev);
            let done = self.charge(s as usize, cost, &out);
            for a in out {
                match a {
                    Action::ToShard { shard, msg } if self.w.mesh_delays => {
                        let incarnation = self.shell.incarnation();
                        self.fx.push(Effect::Mesh { from_shard: s, shard, incarnation, msg: Box::new(msg) });
                    }
                    Action::ToShard { shard, msg } => inbox.push_back((shard, Event::FromShard(msg), 0)),
                    Action::Created { id, client_tag, .. } => {
                        created = Some(id);
                        self.fx.push(Effect::Created { id, tag: client_tag, byzantine: self.shell.is_byzantine() });
                    }
                    other => self.act(s as usize, done, other),
                }
            }
            if self.w.cfg.shards > 1 {
                self.fx.extend(checker::preference_violations(self.node, self.shell, self.w.cfg.shards).into_iter().map(Effect::Violation));
            }
            if self.w.watch_partition && self.shell.core(s).partition_suspected() {
                self.fx.push(Effect::PartitionSeen);
            }
            if let Some(t) = self.shell.rearm_timer(s, self.now) {
                self.fx.push(Effect::Schedule { at: t, ev: Ev::Timer { node: self.node, shard: s } });
            }
        }
        created
    }

    /// Carries out one action of shard `shard`, whose job is done at `done`.
    fn act(&mut self, shard: usize, done: u64, a: Action) {
        let byz = self.shell.is_byzantine();
        let index = self.w.node_index;
        match a {
            Action::SendVertex { to, vertex } => {
                for p in to {
                    self.send(index[&p], done, Msg::Vertex(vertex.clone()));
                }
            }
            Action::SendQuery { to, query } => {
                let msg = Msg::query(query);
                for p in to {
                    self.send(index[&p], done, msg.clone());
                }
            }
            Action::SendResponse { to, response } => {
                let t = index[&to];
                if byz {
                    self.fx.push(Effect::ByzRespond { to: t, depart: done, response: Box::new(response) });
                } else {
                    self.send(t, done, Msg::Response(Box::new(response)));
                }
            }
            Action::RequestVertices { to, request } => self.send(index[&to], done, Msg::Request(request)),
            Action::SendVertices { to, reply } => {
                let vs = reply.vertices.into_iter().map(Arc::new).collect();
                self.send(index[&to], done, Msg::Reply(vs));
            }
            Action::SendFrontier { to, frontier } => {
                let f = Arc::new(frontier);
                for p in to {
                    self.send(index[&p], done, Msg::Frontier(f.clone()));
                }
            }
            Action::Persist { vertex, status } => {
                self.fx.push(Effect::Archived(vertex.clone()));
                self.shell.persist(shard, vertex, status);
            }
            Action::Lock { key, member, round, gate } => self.shell.persist_lock(shard, key, member.map(|m| (m, round, gate))),
            Action::Finalized { id, .. } => {
                if !byz {
                    let keys = self.shell.vertex_keys(&id, self.w.cfg.shards);
                    self.fx.push(Effect::Final { id, keys });
                }
            }
            Action::Rejected { id } => {
                if !byz {
                    self.fx.push(Effect::Rejected(id));
                }
            }
            Action::Alert { peer, evidence, reason, .. } => {
                if !byz {
                    let p = index[&peer];
                    let all_byzantine = self.w.byzantine[p] && self.excludes_every_byzantine();
                    self.fx.push(Effect::Excluded { peer: p, reason, has_evidence: evidence.is_some(), all_byzantine });
                }
                if let Some(ev) = evidence {
                    // As the engine's guard: up to `ALERT_FANOUT` peers, the accused left out.
                    let ev = Arc::new(*ev);
                    for t in pqdag_core::alert_targets(&self.w.ids[self.node], &peer, self.w.ids) {
                        self.send(t, done, Msg::Alert(peer, ev.clone()));
                    }
                }
            }
            Action::ToShard { .. } | Action::Created { .. } | Action::Reissued { .. } | Action::TxFinal { .. } => {}
        }
    }

    /// Whether every shard core of this node excludes every Byzantine node now.
    fn excludes_every_byzantine(&self) -> bool {
        let byz = self.w.byzantine.iter().enumerate().filter(|(_, &b)| b).map(|(i, _)| self.w.ids[i]);
        byz.into_iter().all(|b| self.shell.cores().iter().all(|c| c.is_excluded(&b)))
    }
}
