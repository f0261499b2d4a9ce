//! Byzantine behaviours for testing detection and mitigation on real processes (spec 3.7, FR-006,
//! issue 14). Enabled only by the hidden `engine run --byzantine MODE` flag, never by default; a
//! node running one logs a warning at start and every minute. The names match the simulator's
//! strategies (`engine/sim/src/adversary.rs`, `attacks.rs`).
//!
//! Two kinds of mode: filters of the node's honest output (`flip-votes`, `equivocate`,
//! `invalid-signatures`, `malformed`, `withhold`, `vote-unknown`, `selective`, and the junk
//! `flood`), and real attacks that read what the node receives and send well-formed messages the
//! node signs itself (`replay-queries`, `set-spam`, `vertex-flood`, `query-flood`, `backdate`):
//! those run in [`crate::runtime`]'s shard `tamper` stage. This module builds the messages.

use pqdag_crypto::{Domain, Keypair};
use pqdag_wire::{encode, Alert, ConflictKey, Evidence, NodeId, Query, Response, Transaction, Vertex, VertexId, Vote};

/// How a Byzantine test node misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ByzantineMode {
    /// Answer every poll with every Yes/No flipped (validly signed).
    FlipVotes,
    /// For every own vertex, sign a conflicting twin (same conflict keys) and send the original
    /// to one half of the peers and the twin to the other half.
    Equivocate,
    /// Corrupt the signature of every response and own vertex.
    InvalidSignatures,
    /// Send undecodable frames instead of responses and own vertices.
    Malformed,
    /// Never answer polls.
    Withhold,
    /// Flood peers with junk vertices (garbage signatures, unknown parents) every turn.
    Flood,
    /// Framing by replay: poll an honest node about a fresh own vertex it lacks (signed
    /// `Unknown`), gossip it the vertex, poll again with the SAME query id (a signed different
    /// answer), then send the two signed answers as `ConflictingResponses` evidence against it
    /// to every other node.
    ReplayQueries,
    /// Conflict-set spam: for an honest vertex's conflict key it received, sign
    /// [`SPAM_MEMBERS`] own vertices on that key and send them to every peer, each in a
    /// different order, racing the honest vertex.
    SetSpam,
    /// Answer every polled id `Unknown` (validly signed).
    VoteUnknown,
    /// Valid signed own vertices (on genesis and on its own tips) to every peer, as fast as it
    /// can sign (see [`FLOOD_SIGN_SLICE`]).
    VertexFlood,
    /// [`Self::VertexFlood`] with vertices of the largest size: 8 transactions filling the
    /// 512 KiB transaction budget (the simulator's `fat-flood`). What an honest node holds of
    /// them is bounded by bytes (`pqdag_core::CREATOR_PROCESSING_VERTEX_BYTES`).
    FatFlood,
    /// Validly signed queries (known and made-up ids) to every peer, as fast as it can sign:
    /// each costs the receiver a verification and a signature to answer.
    QueryFlood,
    /// Double-spend every honest conflict key it receives at once, with a vertex stamped at the
    /// epoch (timestamp 0: would win a timestamp tie-break).
    Backdate,
    /// Honest to the first half of its peers (cluster order); to the others flipped votes or
    /// silence (a coin per poll).
    Selective,
}

impl ByzantineMode {
    /// Whether the mode sends messages of its own, made and signed by the attacker (an attacker
    /// task and/or reactions to what the node receives), beyond filtering honest output.
    pub fn attacks(self) -> bool {
        matches!(self, Self::ReplayQueries | Self::SetSpam | Self::VertexFlood | Self::FatFlood | Self::QueryFlood | Self::Backdate)
    }
}

/// Junk vertices sent per peer per turn in `Flood` mode.
pub const FLOOD_PER_TURN: usize = 16;
/// Members a set spammer signs on one conflict key (the simulator's `SPAM_MEMBERS`).
pub const SPAM_MEMBERS: usize = 72;
/// At most one key spammed per this period (the simulator's `SPAM_TICK_US`).
pub const SPAM_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);
/// The vertex and query floods sign back to back for this long, then yield the shard's executor
/// for [`FLOOD_YIELD`] (its own turn loop and the sends): "as fast as it can sign" on one core.
pub const FLOOD_SIGN_SLICE: std::time::Duration = std::time::Duration::from_millis(10);
/// See [`FLOOD_SIGN_SLICE`].
pub const FLOOD_YIELD: std::time::Duration = std::time::Duration::from_millis(2);
/// Ids per flooded query (half recently received, half made up).
pub const FLOOD_QUERY_IDS: usize = 8;
/// Most flooded queries awaiting an answer at once.
pub const FLOOD_QUERIES_INFLIGHT_MAX: usize = 2048;

/// A vertex created and signed by `me` (the simulator's `signed_vertex`).
pub fn signed_vertex(keypair: &Keypair, me: NodeId, parents: Vec<VertexId>, payload: Vec<u8>, keys: Vec<ConflictKey>, timestamp_ms: u64) -> Option<Vertex> {
    let mut v = Vertex::new_unsigned(parents, payload, keys, timestamp_ms, me);
    v.signature = keypair.sign(Domain::Vertex, v.signed_bytes()).ok()?.into_bytes();
    Some(v)
}

/// A vertex of the largest size, signed (`pqdag_wire::largest_batch`, stamped with `stamp`).
pub fn signed_fat_vertex(keypair: &Keypair, me: NodeId, parents: Vec<VertexId>, stamp: &[u8], timestamp_ms: u64) -> Option<Vertex> {
    let mut v = Vertex::with_txs(parents, pqdag_wire::largest_batch(stamp), timestamp_ms, me);
    v.signature = keypair.sign(Domain::Vertex, v.signed_bytes()).ok()?.into_bytes();
    Some(v)
}

/// A query of `me` about `ids`, signed. Its low byte is 0 (the answer comes back to the
/// requester's shard 0, as the simulator's `signed_query`).
pub fn signed_query(keypair: &Keypair, me: NodeId, query_id: u64, ids: Vec<VertexId>) -> Option<Query> {
    let mut q = Query { query_id: query_id & !0xff, requester: me, ids, signature: Vec::new() };
    q.signature = keypair.sign(Domain::Query, &q.signed_bytes()).ok()?.into_bytes();
    Some(q)
}

/// An alert of `me` against `accused` carrying `evidence`, signed by `me`.
pub fn signed_alert(keypair: &Keypair, me: NodeId, accused: NodeId, evidence: Evidence) -> Option<Alert> {
    let mut a = Alert { reporter: me, accused, evidence, signature: Vec::new() };
    a.signature = keypair.sign(Domain::Alert, &a.signed_bytes()).ok()?.into_bytes();
    Some(a)
}

/// `response` with every Yes/No vote inverted, re-signed. A No becomes a `Final`, the
/// strongest lie there is (it claims a lock and a decision).
pub fn flipped(keypair: &Keypair, mut response: Response) -> Option<Response> {
    for v in response.votes.iter_mut() {
        *v = match Vote::from_u8(*v) {
            Some(Vote::Yes | Vote::LockedYes | Vote::Final) => Vote::No as u8,
            Some(Vote::No) => Vote::Final as u8,
            _ => *v,
        };
    }
    response.signature = keypair.sign(Domain::Response, &response.signed_bytes()).ok()?.into_bytes();
    Some(response)
}

/// `response` with every vote `Unknown`, re-signed (the simulator's `all_unknown`).
pub fn all_unknown(keypair: &Keypair, mut response: Response) -> Option<Response> {
    response.votes.iter_mut().for_each(|b| *b = Vote::Unknown as u8);
    response.signature = keypair.sign(Domain::Response, &response.signed_bytes()).ok()?.into_bytes();
    Some(response)
}

/// Who an answer goes to, for `Selective`: `favoured` when the asker is in the first half of
/// the node's peers (cluster order), and a coin for the others (`true`: lie, `false`: silence).
#[derive(Debug, Clone, Copy)]
pub struct Recipient {
    /// Gets honest answers.
    pub favoured: bool,
    /// Lie rather than stay silent (when not favoured).
    pub coin: bool,
}

/// What to send in place of an honest response to `to`, or `None` to withhold it.
pub fn tamper_response(mode: ByzantineMode, keypair: &Keypair, to: Recipient, mut response: Response) -> Option<Vec<u8>> {
    match mode {
        ByzantineMode::FlipVotes => encode(&flipped(keypair, response)?).ok(),
        ByzantineMode::VoteUnknown => encode(&all_unknown(keypair, response)?).ok(),
        ByzantineMode::Selective => {
            if to.favoured {
                encode(&response).ok()
            } else if to.coin {
                encode(&flipped(keypair, response)?).ok()
            } else {
                None
            }
        }
        ByzantineMode::InvalidSignatures => {
            if let Some(b) = response.signature.get_mut(7) {
                *b ^= 0x5a;
            }
            encode(&response).ok()
        }
        ByzantineMode::Malformed => Some(garbage(response.query_id)),
        ByzantineMode::Withhold => None,
        ByzantineMode::Equivocate
        | ByzantineMode::Flood
        | ByzantineMode::ReplayQueries
        | ByzantineMode::SetSpam
        | ByzantineMode::VertexFlood
        | ByzantineMode::FatFlood
        | ByzantineMode::QueryFlood
        | ByzantineMode::Backdate => encode(&response).ok(),
    }
}

/// The frames to send for an own vertex: `(frame for the first half, frame for the second half)`.
pub fn tamper_own_vertex(mode: ByzantineMode, keypair: &Keypair, vertex: &Vertex) -> Option<(Vec<u8>, Vec<u8>)> {
    match mode {
        ByzantineMode::Equivocate => {
            // The same keys spent by different transactions (a re-issue of the same ones would
            // not be an equivocation).
            let mut txs: Vec<Transaction> = vertex
                .txs
                .iter()
                .map(|t| {
                    let mut payload = t.payload.clone();
                    payload.extend_from_slice(b" (equivocating twin)");
                    Transaction::new(payload, t.conflict_keys.clone())
                })
                .collect();
            if vertex.conflict_keys.is_empty() {
                txs = vec![Transaction::new(b"equivocating twin".to_vec(), vec![ConflictKey(vertex.id.0)])];
            }
            let mut twin = Vertex::with_txs(vertex.parents.clone(), txs, vertex.timestamp_ms, vertex.creator);
            twin.signature = keypair.sign(Domain::Vertex, twin.signed_bytes()).ok()?.into_bytes();
            Some((encode(vertex).ok()?, encode(&twin).ok()?))
        }
        ByzantineMode::InvalidSignatures => {
            let mut v = vertex.clone();
            if let Some(b) = v.signature.get_mut(11) {
                *b ^= 0xa5;
            }
            let f = encode(&v).ok()?;
            Some((f.clone(), f))
        }
        ByzantineMode::Malformed => {
            let g = garbage(vertex.timestamp_ms);
            Some((g.clone(), g))
        }
        _ => None,
    }
}

/// Junk vertices: well-formed frames with unknown parents and garbage signatures (cheap to make,
/// a full ML-DSA verify to refuse: the classic signature-flood).
pub fn flood(me: NodeId, seq: u64) -> Vec<Vec<u8>> {
    (0..FLOOD_PER_TURN as u64)
        .filter_map(|i| {
            let n = seq.wrapping_mul(1_000_003).wrapping_add(i);
            let mut parent = [0u8; 32];
            parent[..8].copy_from_slice(&n.to_le_bytes());
            let mut v = Vertex::new_unsigned(vec![VertexId(parent)], n.to_le_bytes().to_vec(), vec![], n, me);
            v.signature = vec![(n % 251) as u8; pqdag_wire::limits::SIGNATURE_BYTES];
            encode(&v).ok()
        })
        .collect()
}

/// A frame with a valid header and a body that fails validation.
fn garbage(seed: u64) -> Vec<u8> {
    let mut g = vec![pqdag_wire::WIRE_VERSION, pqdag_wire::Kind::Response as u8];
    g.extend((0..64u64).map(|i| (seed.wrapping_add(i).wrapping_mul(0x9e37_79b9) >> 7) as u8));
    g
}
