//! Byzantine behaviours for testing detection and mitigation on real processes (spec 3.7, FR-006).
//! Enabled only by the hidden `engine run --byzantine MODE` flag, never by default; a node
//! running one logs a warning at start and every minute. The names match the simulator's.

use pqdag_crypto::{Domain, Keypair};
use pqdag_wire::{encode, ConflictKey, NodeId, Response, Vertex, VertexId, Vote};

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
}

/// Junk vertices sent per peer per turn in `Flood` mode.
pub const FLOOD_PER_TURN: usize = 16;

/// What to send in place of an honest response, or `None` to withhold it.
pub fn tamper_response(mode: ByzantineMode, keypair: &Keypair, mut response: Response) -> Option<Vec<u8>> {
    match mode {
        ByzantineMode::FlipVotes => {
            for v in response.votes.iter_mut() {
                *v = match Vote::from_u8(*v) {
                    Some(Vote::Yes) => Vote::No as u8,
                    Some(Vote::No) => Vote::Yes as u8,
                    _ => *v,
                };
            }
            response.signature = keypair.sign(Domain::Response, &response.signed_bytes()).ok()?.into_bytes();
            encode(&response).ok()
        }
        ByzantineMode::InvalidSignatures => {
            if let Some(b) = response.signature.get_mut(7) {
                *b ^= 0x5a;
            }
            encode(&response).ok()
        }
        ByzantineMode::Malformed => Some(garbage(response.query_id)),
        ByzantineMode::Withhold => None,
        ByzantineMode::Equivocate | ByzantineMode::Flood => encode(&response).ok(),
    }
}

/// The frames to send for an own vertex: `(frame for the first half, frame for the second half)`.
pub fn tamper_own_vertex(mode: ByzantineMode, keypair: &Keypair, vertex: &Vertex) -> Option<(Vec<u8>, Vec<u8>)> {
    match mode {
        ByzantineMode::Equivocate => {
            let mut payload = vertex.payload.clone();
            payload.extend_from_slice(b" (equivocating twin)");
            let mut twin = Vertex::new_unsigned(vertex.parents.clone(), payload, vertex.conflict_keys.clone(), vertex.timestamp_ms, vertex.creator);
            if twin.conflict_keys.is_empty() {
                twin = Vertex::new_unsigned(twin.parents.clone(), twin.payload.clone(), vec![ConflictKey(vertex.id.0)], twin.timestamp_ms, twin.creator);
            }
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
