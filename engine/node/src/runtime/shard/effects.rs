//! Effects, the last stage of a turn: turns the core's actions (after [`super::persist`] made
//! them durable) into sends, requests, client notifications and guard decisions, in the core's
//! order. Owns the outbox: honest messages go to the [`Wire`] as they are, and when a Byzantine
//! test mode is set a [`Tamper`] decorator transforms them first. Calls the transport, the
//! other stages it is lent for the turn ([`Stages`]), and the poll/finality metrics.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use pqdag_core::{Action, ShardMsg};
use prometheus_client::metrics::counter::Counter;
use pqdag_transport::{PeerId, Responder, ShardTransport};
use pqdag_wire::{encode, ClientStatus, NodeId, Response, Vertex};
use tracing::warn;

use super::super::mesh::{MeshMsg, ShardMesh};
use super::super::metrics::{KindLabel, Metrics};
use super::gateway::{ClientEvents, Gateway};
use super::guard::Guard;
use super::ingress::Unverified;
use super::outbound::Outbound;
use super::persist::Positions;
use super::roster::Roster;
use super::step::Responders;
use super::tamper::Tamper;
use super::Tags;

/// A message a Byzantine mode may transform before it leaves.
pub(super) enum Outgoing {
    /// An own or relayed vertex for the nodes `to`.
    Vertex { to: Vec<NodeId>, vertex: Arc<Vertex> },
    /// The response to peer `to`'s query, and where it goes.
    Response { to: NodeId, reply: Responder, response: Response },
}

/// The honest sink: puts messages on the wire as they are.
pub(super) struct Wire {
    transport: Rc<ShardTransport>,
    roster: Rc<Roster>,
}

impl Wire {
    /// Sends `out` unchanged.
    pub(super) fn send(&self, out: Outgoing) {
        match out {
            Outgoing::Vertex { to, vertex } => {
                if let Ok(bytes) = encode(&*vertex) {
                    let peers: Vec<PeerId> = to.iter().filter_map(|n| self.roster.peer_of(n)).collect();
                    self.transport.broadcast_vertex(&peers, &bytes);
                }
            }
            Outgoing::Response { reply, response, .. } => {
                if let Ok(bytes) = encode(&response) {
                    let _ = reply.send(bytes);
                }
            }
        }
    }

    /// Sends one frame to `peers` on the vertex stream.
    pub(super) fn broadcast(&self, peers: &[PeerId], bytes: &[u8]) {
        self.transport.broadcast_vertex(peers, bytes);
    }
}

/// The other stages the effects of one turn reach, lent for the turn.
pub(super) struct Stages<'a> {
    /// Client bookkeeping (creations, decisions).
    pub(super) gateway: &'a mut Gateway,
    /// Exclusions to log, gossip and ban.
    pub(super) guard: &'a mut Guard,
    /// Responders of the queries the core answers.
    pub(super) responders: &'a mut Responders,
    /// Queries and fetches to send.
    pub(super) outbound: &'a mut Outbound,
    /// The shard mesh (S > 1).
    pub(super) mesh: Option<&'a ShardMesh>,
}

/// The effects stage.
pub(super) struct Effects {
    wire: Wire,
    /// Set only in a Byzantine test mode.
    tamper: Option<Tamper>,
    roster: Rc<Roster>,
    metrics: Arc<Metrics>,
    shard: u16,
    query_timeout: Duration,
    /// `mesh_messages{kind}`, one counter per `ShardMsg::KINDS` entry (no label lookup per
    /// message: a busy two-shard node sends hundreds of thousands a second).
    mesh_sent: Vec<Counter>,
}

impl Effects {
    /// The effects of one shard; `tamper` decorates its outbox in a Byzantine test mode.
    pub(super) fn new(transport: Rc<ShardTransport>, roster: Rc<Roster>, metrics: Arc<Metrics>, shard: u16, query_timeout_us: u64, tamper: Option<Tamper>) -> Self {
        let wire = Wire { transport, roster: roster.clone() };
        let mesh_sent = ShardMsg::KINDS.iter().map(|k| metrics.mesh_messages.get_or_create(&KindLabel { kind: (*k).into() }).clone()).collect();
        Self { wire, tamper, roster, metrics, shard, query_timeout: Duration::from_micros(query_timeout_us), mesh_sent }
    }

    /// Before a turn's input is read: a Byzantine mode's own traffic (flooding).
    pub(super) fn before_turn(&mut self, tags: &mut Tags) {
        if let Some(t) = &mut self.tamper {
            t.before_turn(&self.wire, tags);
        }
    }

    /// A verified item of the turn, before the core sees it: a Byzantine mode learns from what
    /// its node receives (and may react at once).
    pub(super) fn observe(&mut self, item: &Unverified) {
        if let Some(t) = &mut self.tamper {
            t.observe(&self.wire, item);
        }
    }

    fn send(&mut self, out: Outgoing) {
        match &mut self.tamper {
            Some(t) => t.send(&self.wire, out),
            None => self.wire.send(out),
        }
    }

    /// Carries out the turn's `actions`, already durable (`positions`: their finality positions).
    pub(super) fn apply(&mut self, actions: Vec<Action>, positions: &Positions, stages: Stages<'_>) {
        let Stages { gateway, guard, responders, outbound, mesh } = stages;
        // Creations first: the core may decide a vertex in the same batch that creates it
        // (a double spend of an already decided key), and its decision must find its client.
        // A re-issue's creation moves its submission off the rejected vertex before the
        // rejection is reported.
        let mut client_events = ClientEvents::new();
        for a in &actions {
            if let Action::Created { client_tag, id, tx } = a {
                gateway.created(mesh, *client_tag, *id, *tx, &mut client_events);
            }
        }
        // Everything else, in order.
        for a in actions {
            match a {
                Action::Persist { .. } | Action::Lock { .. } | Action::Created { .. } => {}
                Action::Reissued { id, client_tags } => gateway.reissued(mesh, id, client_tags),
                Action::TxFinal { client_tag, id, tx } => gateway.tx_final(mesh, client_tag, id, tx, &mut client_events),
                Action::SendVertex { to, vertex } => self.send(Outgoing::Vertex { to, vertex }),
                Action::SendQuery { to, query } => {
                    let Ok(bytes) = encode(&*query) else { continue };
                    for n in &to {
                        let Some(peer) = self.roster.peer_of(n) else { continue };
                        if outbound.is_full() {
                            break;
                        }
                        outbound.query(peer, bytes.clone(), self.query_timeout);
                    }
                    self.metrics.polls.inc();
                }
                Action::SendResponse { to, response } => {
                    let Some(reply) = responders.take(to, response.query_id) else { continue };
                    self.send(Outgoing::Response { to, reply, response });
                }
                Action::RequestVertices { to, request } => {
                    let (Some(peer), Ok(bytes)) = (self.roster.peer_of(&to), encode(&request)) else { continue };
                    if outbound.is_full() {
                        continue;
                    }
                    outbound.fetch(peer, bytes, self.query_timeout);
                }
                // Fetches are answered by the shell (memory or store), never through the core.
                Action::SendVertices { .. } => {}
                Action::SendFrontier { to, frontier } => {
                    if let Ok(bytes) = encode(&frontier) {
                        let peers: Vec<PeerId> = to.iter().filter_map(|n| self.roster.peer_of(n)).collect();
                        self.wire.broadcast(&peers, &bytes);
                    }
                }
                Action::Finalized { id, latency_us, .. } => {
                    self.metrics.finalized.inc();
                    self.metrics.finality_latency.observe(latency_us as f64 / 1e6);
                    let status = ClientStatus::Final { shard: self.shard, position: positions.get(&id).copied().unwrap_or(0) };
                    gateway.decided(mesh, id, status, &mut client_events);
                }
                Action::Rejected { id } => {
                    self.metrics.rejected.inc();
                    gateway.decided(mesh, id, ClientStatus::Rejected, &mut client_events);
                }
                Action::Alert { peer, reason, evidence, score } => guard.excluded(peer, reason, evidence, score),
                Action::ToShard { shard, msg } => match mesh {
                    Some(m) => {
                        self.mesh_sent[msg.kind_index()].inc();
                        let sent = m.send(shard as usize, MeshMsg::Core(msg));
                        debug_assert!(sent, "shard {shard} is in the mesh");
                    }
                    None => warn!(shard, "cross-shard message without a shard mesh"),
                },
            }
        }
        gateway.send_client_events(client_events);
    }
}
