//! Step, the third stage: verified messages become core events, the core handles them in order
//! (then its timer, when due), and its actions are drained for persist and effects. Owns the
//! responders of queries the core has yet to answer (bounded), and answers what the core
//! refuses: a refused query's responder is dropped, a refused submission goes back to the
//! gateway. The only stage that feeds the core the turn's traffic.

use std::collections::HashMap;
use std::sync::Arc;

use pqdag_core::{Action, Core, Event};
use pqdag_transport::Responder;
use pqdag_wire::NodeId;
use tracing::debug;

use super::super::metrics::Metrics;
use super::gateway::Gateway;
use super::ingress::Unverified;
use super::outbound::PENDING_REPLIES_MAX;
use super::signer::MlDsaSigner;
use super::Clock;

/// Responders of verified queries, until the core answers (or refuses) them.
pub(super) struct Responders {
    by_query: HashMap<(NodeId, u64), Responder>,
}

impl Responders {
    /// Queries verified and handed to the core, not answered yet.
    pub(super) fn len(&self) -> usize {
        self.by_query.len()
    }

    /// The responder of `from`'s query `query_id`, if it is still waiting.
    pub(super) fn take(&mut self, from: NodeId, query_id: u64) -> Option<Responder> {
        self.by_query.remove(&(from, query_id))
    }
}

/// The step stage.
pub(super) struct Step {
    responders: Responders,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl Step {
    /// No query waiting yet.
    pub(super) fn new(metrics: Arc<Metrics>, clock: Clock) -> Self {
        Self { responders: Responders { by_query: HashMap::new() }, metrics, clock }
    }

    /// The responders the effects answer.
    pub(super) fn responders(&mut self) -> &mut Responders {
        &mut self.responders
    }

    /// A verified item becomes a core event in `events` (a query only while fewer than
    /// [`PENDING_REPLIES_MAX`] wait for an answer; beyond, its responder is dropped).
    pub(super) fn admit(&mut self, item: Unverified, events: &mut Vec<Event>) {
        match item {
            Unverified::Vertex { from, vertex } => events.push(Event::Vertex { from, vertex: Arc::new(vertex) }),
            Unverified::Query { from, query, ids_digest, reply } => {
                if self.responders.by_query.len() < PENDING_REPLIES_MAX {
                    self.responders.by_query.insert((from, query.query_id), reply);
                    let ids_digest = ids_digest.unwrap_or_else(|| query.ids_digest());
                    events.push(Event::Query { from, query: Arc::new(query), ids_digest });
                }
            }
            Unverified::Response { from, response } => {
                self.metrics.responses.inc();
                events.push(Event::Response { from, response });
            }
            Unverified::Reply { from, vertices } => events.push(Event::VertexReply { from, vertices: vertices.into_iter().map(Arc::new).collect() }),
            Unverified::Alert { from, alert } => {
                self.metrics.alerts_verified.inc();
                events.push(Event::Alert { from, accused: alert.accused, evidence: alert.evidence });
            }
        }
    }

    /// Feeds `events` to the core in order, then its timer when due; returns its actions.
    pub(super) fn feed(&mut self, core: &mut Core<MlDsaSigner>, events: Vec<Event>, gateway: &mut Gateway) -> Vec<Action> {
        let mut now = self.clock.now();
        for e in events {
            let submit_tag = match &e {
                Event::Submit { client_tag, .. } => Some(*client_tag),
                _ => None,
            };
            let query_key = match &e {
                Event::Query { from, query, .. } => Some((*from, query.query_id)),
                _ => None,
            };
            if let Err(err) = core.handle(now, e) {
                debug!(error = %err, "core refused an event");
                // A refused query is never answered: drop its responder (the asker's stream is
                // reset) instead of letting it occupy the bounded map.
                if let Some(k) = query_key {
                    self.responders.by_query.remove(&k);
                }
                // A refused submission is answered, never left hanging.
                if let Some(t) = submit_tag {
                    gateway.refused(t, &err);
                }
            }
        }
        now = self.clock.now();
        if core.poll_timeout().is_some_and(|t| t <= now) {
            let _ = core.handle(now, Event::Timer);
        }
        let mut actions = Vec::new();
        while let Some(a) = core.poll_action() {
            actions.push(a);
        }
        actions
    }
}
