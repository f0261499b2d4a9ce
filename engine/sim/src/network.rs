//! The simulated network: what a message is ([`Msg`]), what it weighs on the wire (ML-DSA-87
//! sizes), how long it takes (per-profile latency) and whether it arrives at all.
//!
//! Owns the network PRNG stream, the WAN link base latencies and the message/byte counters.
//! **Where the simulator drops a message:** [`Network::send`] drops it when the sender's caller
//! says the receiver is unreachable (crashed, or across a partition: `crate::faults` decides)
//! and on random loss (`loss`); it also duplicates (`duplicate`). A message in flight to a node
//! that crashes meanwhile is dropped at delivery (`Sim::step`). Calls nothing but its own RNG; the
//! caller schedules the deliveries it hands back.

use std::sync::Arc;

use pqdag_core::{Action, Misbehaviour, NodeId};
use pqdag_wire::{Evidence, Frontier, Query, Response, Vertex, VertexRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Profile;

/// Bytes of an ML-DSA-87 signature (what the byte model charges).
pub const SIG_BYTES: usize = 4627;

/// WAN link latencies are drawn for a `NODE_STRIDE` x `NODE_STRIDE` table (node indices wrap).
const NODE_STRIDE: usize = 64;

/// A message between two simulated nodes (what the real transport would carry as a frame).
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// A vertex (gossip).
    Vertex(Arc<Vertex>),
    /// A poll, with the digest of its ids (hashed once per query, not once per recipient and
    /// again in its core: [`Msg::query`]).
    Query(Arc<Query>, [u8; 32]),
    /// A poll's answer.
    /// (Boxed: the other kinds are at most 40 bytes, and every event moves a message.)
    Response(Box<Response>),
    /// A fetch of missing vertices.
    Request(VertexRequest),
    /// Fetched vertices (a core's reply, a store answer or a history sync batch).
    Reply(Vec<Arc<Vertex>>),
    /// A frontier (anti-entropy).
    Frontier(Arc<Frontier>),
    /// Evidence against `.0`, broadcast.
    Alert(NodeId, Arc<Evidence>),
    /// A frame the receiver's shell refuses (malformed / bad signature).
    Garbage(Misbehaviour, u64),
}

impl Msg {
    /// A poll message: its ids' digest computed here, once for all its recipients (a pure
    /// function of the ids every recipient would compute the same; 20 % of a 1000-node run
    /// was hashing query ids).
    pub(crate) fn query(q: Arc<Query>) -> Msg {
        let digest = q.ids_digest();
        Msg::Query(q, digest)
    }
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
pub(crate) fn action_bytes(a: &Action, nodes: usize) -> usize {
    match a {
        Action::SendVertex { to, vertex } => to.len() * msg_bytes(&MsgKind::Vertex { payload: vertex.payload_bytes() }),
        Action::SendQuery { to, query } => to.len() * msg_bytes(&MsgKind::Query { ids: query.ids.len() }),
        Action::SendResponse { response, .. } => msg_bytes(&MsgKind::Response { ids: response.votes.len() }),
        Action::RequestVertices { request, .. } => 32 * request.ids.len() + 64,
        Action::SendVertices { reply, .. } => reply.vertices.iter().map(|v| v.payload_bytes() + SIG_BYTES + 200).sum::<usize>() + 16,
        Action::SendFrontier { to, frontier } => to.len() * (32 * frontier.tips.len() + 80),
        Action::Alert { evidence: Some(_), .. } => nodes.saturating_sub(2).min(pqdag_core::ALERT_FANOUT) * (3 * SIG_BYTES + 600),
        _ => 0,
    }
}

/// Modelled wire size of one message to one recipient.
pub(crate) fn size_of(m: &Msg) -> usize {
    match m {
        Msg::Vertex(v) => msg_bytes(&MsgKind::Vertex { payload: v.payload_bytes() }),
        Msg::Query(q, _) => msg_bytes(&MsgKind::Query { ids: q.ids.len() }),
        Msg::Response(r) => msg_bytes(&MsgKind::Response { ids: r.votes.len() }),
        Msg::Request(r) => 32 * r.ids.len() + 64,
        Msg::Reply(vs) => vs.iter().map(|v| v.payload_bytes() + SIG_BYTES + 200).sum::<usize>() + 16,
        Msg::Frontier(f) => 32 * f.tips.len() + 80,
        Msg::Alert(..) => 2 * (SIG_BYTES + 300) + SIG_BYTES,
        Msg::Garbage(..) => 4700,
    }
}

/// Links between nodes: latency, loss, duplication, and the traffic counters.
pub(crate) struct Network {
    profile: Profile,
    loss: f64,
    duplicate: f64,
    rng: ChaCha8Rng,
    link_base_us: Vec<u32>,
    messages: u64,
    bytes: u64,
    /// Per kind of message ([`KINDS`]): messages and bytes sent.
    by_kind: [(u64, u64); KINDS.len()],
}

/// The kinds of message the traffic breakdown counts, in [`Msg`]'s order.
pub(crate) const KINDS: [&str; 8] = ["vertex", "query", "response", "request", "reply", "frontier", "alert", "garbage"];

/// Index of `m`'s kind in [`KINDS`].
fn kind_of(m: &Msg) -> usize {
    match m {
        Msg::Vertex(_) => 0,
        Msg::Query(..) => 1,
        Msg::Response(_) => 2,
        Msg::Request(_) => 3,
        Msg::Reply(_) => 4,
        Msg::Frontier(_) => 5,
        Msg::Alert(..) => 6,
        Msg::Garbage(..) => 7,
    }
}

impl Network {
    /// The network of a run: its own PRNG stream from `seed`; WAN link bases are drawn here.
    pub(crate) fn new(seed: u64, profile: Profile, loss: f64, duplicate: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b00);
        let link_base_us = match profile {
            Profile::Lan => vec![0; 1],
            Profile::Wan => (0..NODE_STRIDE * NODE_STRIDE).map(|_| rng.random_range(20_000..150_000)).collect(),
        };
        Network { profile, loss, duplicate, rng, link_base_us, messages: 0, bytes: 0, by_kind: [(0, 0); KINDS.len()] }
    }

    /// Messages sent (including dropped ones).
    pub(crate) fn messages(&self) -> u64 {
        self.messages
    }

    /// Modelled bytes sent (including dropped ones).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages and bytes sent per kind of message (index as [`KINDS`]), dropped ones included.
    pub(crate) fn by_kind(&self) -> [(u64, u64); KINDS.len()] {
        self.by_kind
    }

    /// The least one-way latency of any message, us: what one node does reaches no other
    /// node sooner (the lookahead of `crate::batch`).
    pub(crate) fn min_latency_us(&self) -> u64 {
        match self.profile {
            Profile::Lan => 150,
            Profile::Wan => 20_000,
        }
    }

    /// One-way latency of a message from `a` to `b`, us.
    fn latency(&mut self, a: usize, b: usize) -> u64 {
        match self.profile {
            Profile::Lan => 150 + self.rng.random_range(0..300),
            Profile::Wan => {
                let base = u64::from(self.link_base_us[(a % NODE_STRIDE) * NODE_STRIDE + (b % NODE_STRIDE)].max(self.link_base_us[(b % NODE_STRIDE) * NODE_STRIDE + (a % NODE_STRIDE)]));
                base + self.rng.random_range(0..base / 10 + 1)
            }
        }
    }

    /// Sends `msg` from `from` to `to`, leaving at `depart`: counts it, then drops it if
    /// `reachable` is false or it is lost; else calls `deliver(arrival, msg)` once, or twice when
    /// duplicated (the duplicate first).
    pub(crate) fn send(&mut self, from: usize, to: usize, depart: u64, msg: Msg, reachable: bool, mut deliver: impl FnMut(u64, Msg)) {
        let size = size_of(&msg) as u64;
        self.messages += 1;
        self.bytes += size;
        let k = &mut self.by_kind[kind_of(&msg)];
        k.0 += 1;
        k.1 += size;
        if !reachable {
            return;
        }
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            return;
        }
        let lat = self.latency(from, to);
        if self.duplicate > 0.0 && self.rng.random_bool(self.duplicate) {
            let lat2 = self.latency(from, to);
            deliver(depart + lat2, msg.clone());
        }
        deliver(depart + lat, msg);
    }
}
