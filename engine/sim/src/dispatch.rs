//! How inputs and outputs reach the module that owns them: a delivered message goes through
//! the node's shell to its shard core(s) (`Sim::deliver`), the core's actions are charged by
//! the cost model and carried out (`Sim::handle`, `Sim::act`): sends through the network
//! (the adversary rewrites a Byzantine node's answers), persists to the shell's storage,
//! decisions to the checker. Part of the [`Sim`] facade; owns no state of its own.

use std::collections::VecDeque;
use std::sync::Arc;

use pqdag_core::{Action, Admission, ConflictKey, Event, Misbehaviour, RequestKind, VertexId};
use pqdag_wire::VertexRequest;

use crate::adversary::{Env, NodeView};
use crate::network::{size_of, Msg};
use crate::shell::{shard_for_query, shard_for_query_id, shard_for_response, shard_for_vertex};
use crate::{verify, Ev, Sim};

impl Sim {
    /// Sends through the network: unreachable if the receiver is down or across a partition.
    pub(crate) fn send(&mut self, from: usize, to: usize, depart: u64, msg: Msg) {
        let reachable = self.shells[to].is_up() && !self.faults.partitioned(from, to, self.now);
        // As the engine's shell and transport (`shard/holds.rs`): a node holds the pushes of a
        // creator over its bound there, so a vertex it would drop unverified is never sent.
        if let Msg::Vertex(v) = &msg {
            if reachable && self.cfg.transport_holds_pushes && !self.shells[to].is_byzantine() && v.creator == self.shells[from].id() {
                let s = shard_for_vertex(&v.id, self.cfg.shards);
                if !self.shells[to].core(s).admits_creator(v) {
                    self.metrics.pushes_held += 1;
                    if !self.shells[from].is_byzantine() {
                        self.metrics.honest_pushes_held += 1;
                    }
                    return;
                }
            }
        }
        // As the engine's transport: a query stream needs stream credit, which a receiver that
        // metered the sender grants only at its query budget's rate; without it the query is
        // never sent (the sender's QUIC stack holds it until it times out).
        if let Msg::Query(q, _) = &msg {
            if reachable && self.cfg.shell_rate_limits && self.cfg.transport_meters_streams && !self.shells[to].is_byzantine() {
                let s = shard_for_query(q, self.cfg.shards);
                if let Admission::Dropped { strike } = self.shells[to].stream_credit(s, from, self.ranks[from], depart.max(self.now)) {
                    self.metrics.stream_metered += 1;
                    if !self.shells[from].is_byzantine() {
                        self.metrics.honest_stream_metered += 1;
                    }
                    // Wanting more than the credit is a query over budget: a strike (at most
                    // one per interval), delivered to `to`'s core as its own event.
                    if strike {
                        self.queue.schedule(self.now, Ev::Strike { to, from, shard: s });
                    }
                    return;
                }
            }
        }
        let queue = &mut self.queue;
        let guard = &mut self.guard;
        self.network.send(from, to, depart, msg, reachable, |at, msg| {
            guard.in_flight(from, to, size_of(&msg));
            queue.schedule(at, Ev::Deliver { to, from, msg })
        });
    }

    /// A message reaches node `to`'s shell: it routes it to the shard core(s) it concerns.
    pub(crate) fn deliver(&mut self, to: usize, from: usize, msg: Msg) {
        if self.shells[to].is_byzantine() {
            let sh = &self.shells[to];
            let view = NodeView { index: to, id: sh.id(), signer: sh.signer(), core: sh.core(0) };
            let env = Env { now: self.now, honest: self.guard_honest(), ids: &self.ids };
            let out = self.adversary.received(env, view, from, &msg);
            for o in out {
                self.send(to, o.to, self.now, o.msg);
            }
        }
        let from_id = self.shells[from].id();
        let shards = self.cfg.shards;
        // Receiving costs its bytes (charged with the input's verification).
        let v_us = self.cost.receive_us(size_of(&msg));
        let duplicate = matches!(&msg, Msg::Vertex(v) if self.shells[to].holds(shard_for_vertex(&v.id, shards), &v.id));
        // As the node's shell does (`shard/verify.rs`): a vertex whose creator holds its bound of
        // processing vertices and that the core does not need is dropped before its verify,
        // costing only its bytes (charging the verify let a flood starve the node's polls).
        if let Msg::Vertex(v) = &msg {
            if !duplicate && self.shells[to].is_up() && !self.shells[to].core(shard_for_vertex(&v.id, shards)).admits_creator(v) {
                self.cost.charge(to, shard_for_vertex(&v.id, shards) as usize, self.now, v_us - self.cost.verify_us(), &[]);
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
            if !self.admit(to, from, s, kind, 1, v_us) {
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
            let convicted = (0..shards).all(|s| self.shells[to].core(s).is_convicted(accused));
            if self.cfg.shell_dedupes_alerts && convicted && self.shells[to].is_up() && !self.alerts_after_conviction.insert((to, *accused)) {
                self.cost.charge(to, 0, self.now, v_us.saturating_sub(self.cost.verify_us()), &[]);
                return;
            }
        }
        if !duplicate {
            let keys = |id: &pqdag_core::NodeId| self.node_index.get(id).map(|&i| self.shells[i].signer());
            if let Err(kind) = verify::check(&msg, &from_id, keys, self.cfg.shell_checks_evidence) {
                let s = match &msg {
                    Msg::Vertex(v) => shard_for_vertex(&v.id, shards),
                    Msg::Query(q, _) => shard_for_query(q, shards),
                    Msg::Response(r) => shard_for_response(r, shards),
                    _ => 0,
                };
                self.refuse(to, from, s, kind, v_us);
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
                self.handle(to, s, Event::Vertex { from: from_id, vertex: v }, v_us);
            }
            Msg::Query(q, ids_digest) => {
                let s = shard_for_query(&q, shards);
                self.handle(to, s, Event::Query { from: from_id, query: q, ids_digest }, v_us);
            }
            Msg::Response(r) => {
                let s = shard_for_response(&r, shards);
                // As the engine's shell does: an answer no poll awaits is dropped unverified.
                if !self.shells[to].core(s).awaits_response(&from_id, r.query_id) {
                    return;
                }
                self.handle(to, s, Event::Response { from: from_id, response: r }, v_us);
            }
            Msg::Request(req) => {
                for s in 0..shards {
                    let ids: Vec<VertexId> = req.ids.iter().filter(|id| shard_for_vertex(id, shards) == s).copied().collect();
                    if !ids.is_empty() {
                        if !self.admit(to, from, s, RequestKind::Fetch, ids.len() as u64, 0) {
                            continue;
                        }
                        // Forgotten by the core but final here: the shell answers from its store.
                        let stored = self.archive.forgotten_by(self.shells[to].core(s), &ids);
                        self.handle(to, s, Event::VertexRequest { from: from_id, request: VertexRequest { request_id: req.request_id, ids } }, 0);
                        if !stored.is_empty() && self.shells[to].is_up() {
                            let at = self.now.max(self.cost.free_at(to, s as usize));
                            self.send(to, from, at, Msg::Reply(stored));
                        }
                    }
                }
            }
            Msg::Reply(vs) => {
                for v in vs {
                    let s = shard_for_vertex(&v.id, shards);
                    if self.shells[to].holds(s, &v.id) {
                        continue;
                    }
                    // Each vertex of a reply costs its own verify and bytes: charging the whole
                    // reply's bytes per vertex made a 250-vertex reply cost 2.7 s of CPU instead
                    // of 27 ms (`sim-faults` seed 11: a restarted node's queries left seconds late).
                    let cost = self.cost.receive_us(size_of(&Msg::Vertex(v.clone())));
                    self.handle(to, s, Event::VertexReply { from: from_id, vertices: vec![v] }, cost);
                }
            }
            Msg::Frontier(f) => {
                for s in 0..shards {
                    self.handle(to, s, Event::Frontier { from: from_id, frontier: (*f).clone() }, 0);
                }
            }
            Msg::Alert(accused, ev) => {
                for s in 0..shards {
                    self.handle(to, s, Event::Alert { from: from_id, accused, evidence: (*ev).clone() }, 2 * v_us);
                }
            }
            Msg::Garbage(kind, qid) => {
                let s = shard_for_query_id(qid, shards);
                self.refuse(to, from, s, kind, if kind == Misbehaviour::InvalidSignature { v_us } else { 1 });
            }
        }
    }

    /// Node `to`'s shell charges a request of `from` (`cost` units of `kind`, shard `s`) to
    /// `from`'s budget (`SimConfig::shell_rate_limits`). Over budget: counted, the bytes
    /// (`v_us` less the verify it skips) charged to the shard, and a strike for the sender
    /// (the budget's own rule: at most one a second). `false`: drop the request.
    fn admit(&mut self, to: usize, from: usize, s: u32, kind: RequestKind, cost: u64, v_us: u64) -> bool {
        if !self.cfg.shell_rate_limits || !self.shells[to].is_up() {
            return true;
        }
        let Admission::Dropped { strike } = self.shells[to].admit(s, from, self.ranks[from], kind, cost, self.now) else { return true };
        if !self.shells[to].is_byzantine() {
            self.metrics.rate_limited += 1;
            if !self.shells[from].is_byzantine() {
                self.metrics.honest_rate_limited += 1;
            }
        }
        self.cost.charge(to, s as usize, self.now, v_us.saturating_sub(self.cost.verify_us()), &[]);
        if strike {
            self.refuse(to, from, s, Misbehaviour::Flooding, 0);
        }
        false
    }

    /// Node `to` charges `from` a `Flooding` strike in shard `s` (its metered stream credit ran out).
    pub(crate) fn strike(&mut self, to: usize, from: usize, s: u32) {
        self.refuse(to, from, s, Misbehaviour::Flooding, 0);
    }

    /// Node `to`'s shell refused a frame of `from` as `kind`: charged to `from` in shard `s`
    /// (as the engine's guard does: a proven-bad frame of an excluded peer bans it again).
    fn refuse(&mut self, to: usize, from: usize, s: u32, kind: Misbehaviour, cost_us: u64) {
        let from_id = self.shells[from].id();
        let was_excluded = self.shells[to].core(s).is_excluded(&from_id);
        self.handle(to, s, Event::InvalidMessage { from: from_id, kind }, cost_us);
        if !self.shells[to].is_byzantine() {
            self.guard.refused(to, from, kind, was_excluded, &mut self.checker);
        }
    }

    /// Runs one event through a shard core, then drains its actions (and in-process shard
    /// messages, in order). `cost_us` is the shell's verification cost of the input.
    pub(crate) fn handle(&mut self, node: usize, shard: u32, ev: Event, cost_us: u64) -> Option<VertexId> {
        let mut created = None;
        let mut inbox: VecDeque<(u32, Event, u64)> = VecDeque::new();
        inbox.push_back((shard, ev, cost_us));
        let mut guard = 0usize;
        while let Some((s, ev, cost)) = inbox.pop_front() {
            guard += 1;
            assert!(guard < 1_000_000, "shard message storm");
            let out = self.shells[node].run(s, self.now, ev);
            let done = self.cost.charge(node, s as usize, self.now, cost, &out);
            for a in out {
                match a {
                    Action::ToShard { shard, msg } => match self.mesh.arrival(self.now, node, s, shard) {
                        Some(at) => {
                            let incarnation = self.shells[node].incarnation();
                            self.queue.schedule(at, Ev::Mesh { node, incarnation, shard, msg });
                        }
                        None => inbox.push_back((shard, Event::FromShard(msg), 0)),
                    },
                    Action::Created { id, client_tag, .. } => {
                        created = Some(id);
                        let byzantine = self.shells[node].is_byzantine();
                        self.checker.created(id, self.now, byzantine);
                        self.pair_created(node, client_tag, id);
                    }
                    other => self.act(node, s as usize, done, other),
                }
            }
            if self.cfg.shards > 1 {
                self.checker.one_preference_per_set(node, &self.shells[node], self.cfg.shards);
            }
            if self.faults.has_partition() && !self.metrics.partition_seen && self.shells[node].core(s).partition_suspected() {
                self.metrics.partition_seen = true;
            }
            if let Some(t) = self.shells[node].rearm_timer(s, self.now) {
                self.queue.schedule(t, Ev::Timer { node, shard: s });
            }
        }
        created
    }

    /// A conflicting pair's vertex built after a mesh hop: the pair is checked once both are.
    fn pair_created(&mut self, node: usize, tag: u64, id: VertexId) {
        if self.pairs_waiting.is_empty() {
            return;
        }
        let waits = |e: &(usize, u64, Option<VertexId>)| e.0 == node && e.1 == tag && e.2.is_none();
        let Some((i, j)) = self.pairs_waiting.iter().enumerate().find_map(|(i, (_, p))| p.iter().position(waits).map(|j| (i, j))) else { return };
        self.pairs_waiting[i].1[j].2 = Some(id);
        if let (key, [(_, _, Some(a)), (_, _, Some(b))]) = self.pairs_waiting[i] {
            self.pairs_waiting.swap_remove(i);
            self.checker.conflict_set(key, a, b);
        }
    }

    /// Carries out one action of node `node`'s shard `shard`, whose job is done at `done`.
    fn act(&mut self, node: usize, shard: usize, done: u64, a: Action) {
        let byz = self.shells[node].is_byzantine();
        match a {
            Action::SendVertex { to, vertex } => {
                for p in to {
                    let t = self.node_index[&p];
                    self.send(node, t, done, Msg::Vertex(vertex.clone()));
                }
            }
            Action::SendQuery { to, query } => {
                let msg = Msg::query(query);
                for p in to {
                    let t = self.node_index[&p];
                    self.send(node, t, done, msg.clone());
                }
            }
            Action::SendResponse { to, response } => {
                let t = self.node_index[&to];
                if byz {
                    let sh = &self.shells[node];
                    let view = NodeView { index: node, id: sh.id(), signer: sh.signer(), core: sh.core(0) };
                    let env = Env { now: self.now, honest: self.guard_honest(), ids: &self.ids };
                    for o in self.adversary.respond(env, view, t, response) {
                        self.send(node, o.to, done, o.msg);
                    }
                    return;
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
                self.archive.record(&vertex);
                self.shells[node].persist(shard, vertex, status);
            }
            Action::Lock { key, member } => self.shells[node].persist_lock(shard, key, member),
            Action::Finalized { id, .. } => {
                if !byz {
                    self.on_final(node, id);
                }
            }
            Action::Rejected { id } => {
                if !byz {
                    self.checker.on_reject(node, id, self.now);
                }
            }
            Action::Alert { peer, evidence, reason, .. } => {
                if !byz {
                    let p = self.node_index[&peer];
                    self.guard.excluded(node, p, reason, evidence.is_some(), &mut self.checker);
                    if self.metrics.detected_at.is_none() && self.shells[p].is_byzantine() && self.all_byzantine_excluded() {
                        self.metrics.detected_at = Some(self.now);
                    }
                }
                if let Some(ev) = evidence {
                    // As the engine's guard: up to `ALERT_FANOUT` peers, the accused left out.
                    let ev = Arc::new(*ev);
                    for t in pqdag_core::alert_targets(&self.ids[node], &peer, &self.ids) {
                        self.send(node, t, done, Msg::Alert(peer, ev.clone()));
                    }
                }
            }
            Action::ToShard { .. } | Action::Created { .. } | Action::Reissued { .. } | Action::TxFinal { .. } => {}
        }
    }

    /// Whether every honest node excludes every Byzantine node now (the detection of issue 14's
    /// "p95 once detection has happened"; checked on alerts only).
    fn all_byzantine_excluded(&self) -> bool {
        let (byz, honest): (Vec<&crate::Shell>, Vec<&crate::Shell>) = self.shells.iter().partition(|s| s.is_byzantine());
        !byz.is_empty() && honest.iter().all(|h| byz.iter().all(|b| h.cores().iter().all(|c| c.is_excluded(&b.id()))))
    }

    /// An honest node finalized `id`: traced, timed, checked.
    fn on_final(&mut self, node: usize, id: VertexId) {
        self.trace.finalized(&id);
        if let Some(t) = self.checker.honest_created_at(&id) {
            self.metrics.record_latency(self.now.saturating_sub(t).max(1), t);
        }
        let keys: Vec<ConflictKey> = self.shells[node].vertex_keys(&id, self.cfg.shards);
        self.checker.on_final(node, id, keys, self.now);
    }
}
