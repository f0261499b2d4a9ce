//! How what one node did reaches the modules that own the rest of the run: a node's event runs
//! in `node_step` (its shell and shard cores), and its [`Effect`]s are applied here in order
//! (`Sim::apply`): sends through the network (the adversary rewrites a Byzantine node's
//! answers), events to the queue, decisions to the checker, refusals and exclusions to the
//! guard. Part of the [`Sim`] facade; owns no state of its own.

use pqdag_core::{Admission, ConflictKey, Event, VertexId};

use crate::adversary::{Env, NodeView};
use crate::network::{size_of, Msg};
use crate::node_step::{shared_of, Effect, NodeCtx};
use crate::shell::{shard_for_query, shard_for_vertex};
use crate::{Ev, Sim};

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
                // (`node_clock`: with batches, `to` may have run an event a little later already.)
                let at = depart.max(self.now).max(self.node_clock[to]);
                if let Admission::Dropped { strike } = self.shells[to].stream_credit(s, from, self.ranks[from], at) {
                    self.metrics.stream_metered += 1;
                    if !self.shells[from].is_byzantine() {
                        self.metrics.honest_stream_metered += 1;
                    }
                    // Wanting more than the credit is a query over budget: a strike (at most
                    // one per interval), delivered to `to`'s core as its own event.
                    if strike {
                        self.queue.schedule(self.now.max(self.node_clock[to]), Ev::Strike { to, from, shard: s });
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

    /// Runs `f` on node `node` (its shell, CPU and alert memory) and applies what it did to
    /// the rest of the run at once: the sequential simulator.
    pub(crate) fn with_node<R>(&mut self, node: usize, f: impl FnOnce(&mut NodeCtx<'_>) -> R) -> R {
        debug_assert!(self.now >= self.node_clock[node], "node {node}'s time runs forward");
        self.node_clock[node] = self.now;
        let shared = shared_of!(self);
        let mut ctx = NodeCtx {
            node,
            now: self.now,
            shell: &mut self.shells[node],
            cpu: &mut self.cost.nodes[node],
            host_free: &mut self.cost.host_free,
            seen_alerts: &mut self.seen_alerts[node],
            w: &shared,
            fx: std::mem::take(&mut self.fx_spare),
        };
        let r = f(&mut ctx);
        let mut fx = ctx.fx;
        self.apply(node, fx.drain(..));
        self.fx_spare = fx;
        r
    }

    /// Runs one event through shard `shard` of node `node` (see [`NodeCtx::handle`]).
    pub(crate) fn handle(&mut self, node: usize, shard: u32, ev: Event, cost_us: u64) -> Option<VertexId> {
        self.with_node(node, |n| n.handle(shard, ev, cost_us))
    }

    /// Applies what an event of node `node` did to the rest of the run, in order, at `self.now`.
    pub(crate) fn apply(&mut self, node: usize, fx: impl Iterator<Item = Effect>) {
        for e in fx {
            match e {
                Effect::Landed { from, bytes } => self.guard.landed(from, node, bytes),
                Effect::Delivered { from } => self.trace.delivered(self.now, node, from),
                Effect::TimerFired => self.trace.timer(self.now, node),
                Effect::Send { to, depart, msg } => self.send(node, to, depart, msg),
                Effect::ByzRespond { to, depart, response } => {
                    let sh = &self.shells[node];
                    let view = NodeView { index: node, id: sh.id(), signer: sh.signer(), core: sh.core(0) };
                    let env = Env { now: self.now, honest: self.guard_honest(), ids: &self.ids };
                    for o in self.adversary.respond(env, view, to, *response) {
                        self.send(node, o.to, depart, o.msg);
                    }
                }
                Effect::Schedule { at, ev } => self.queue.schedule(at, ev),
                Effect::Mesh { from_shard, shard, incarnation, msg } => {
                    let at = self.mesh.arrival(self.now, node, from_shard, shard).expect("a mesh with delays gives an arrival");
                    self.queue.schedule(at, Ev::Mesh { node, incarnation, shard, msg });
                }
                Effect::Created { id, tag, byzantine } => {
                    self.checker.created(id, self.now, byzantine);
                    self.pair_created(node, tag, id);
                }
                Effect::Archived(v) => self.archive.record(&v),
                Effect::Final { id, keys } => self.on_final(node, id, keys),
                Effect::Rejected(id) => self.checker.on_reject(node, id, self.now),
                Effect::Excluded { peer, reason, has_evidence, all_byzantine } => {
                    self.guard.excluded(node, peer, reason, has_evidence, &mut self.checker);
                    if self.metrics.detected_at.is_none() && all_byzantine && self.others_exclude_every_byzantine(node) {
                        self.metrics.detected_at = Some(self.now);
                    }
                }
                Effect::Refused { from, kind, was_excluded } => self.guard.refused(node, from, kind, was_excluded, &mut self.checker),
                Effect::RateLimited { from } => {
                    self.metrics.rate_limited += 1;
                    if !self.byzantine[from] {
                        self.metrics.honest_rate_limited += 1;
                    }
                }
                Effect::Violation(v) => self.checker.violation(v),
                Effect::PartitionSeen => self.metrics.partition_seen = true,
            }
        }
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

    /// Whether every honest node but `node` excludes every Byzantine node now (with `node`'s
    /// own answer, the detection of issue 14's "p95 once detection has happened"; checked on
    /// alerts only).
    fn others_exclude_every_byzantine(&self, node: usize) -> bool {
        let (byz, honest): (Vec<&crate::Shell>, Vec<&crate::Shell>) = self.shells.iter().partition(|s| s.is_byzantine());
        honest.iter().filter(|h| !std::ptr::eq(**h, &self.shells[node])).all(|h| byz.iter().all(|b| h.cores().iter().all(|c| c.is_excluded(&b.id()))))
    }

    /// An honest node finalized `id` (conflict keys `keys`): traced, timed, checked.
    fn on_final(&mut self, node: usize, id: VertexId, keys: Vec<ConflictKey>) {
        self.trace.finalized(&id);
        if let Some(t) = self.checker.honest_created_at(&id) {
            self.metrics.record_latency(self.now.saturating_sub(t).max(1), t);
        }
        self.checker.on_final(node, id, keys, self.now);
    }
}
