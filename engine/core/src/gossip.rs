//! Gossip targets: the creator to every peer, or (with `Params::relay`, spec 4.4) ring
//! successors plus random peers at every hop. Owns no state; reads `peers` and draws from the
//! core's RNG.

use pqdag_wire::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::params::Params;
use crate::peers::Peers;

/// Who receives a vertex this node just inserted (`own`: it created it). Without
/// `params.relay`: every peer for an own vertex, nobody otherwise. With it (4.4): ring
/// successors plus a random sample; everyone when N is small (the creator only).
pub(crate) fn gossip_targets(peers: &Peers, params: &Params, rng: &mut ChaCha8Rng, from: Option<NodeId>, own: bool) -> Vec<NodeId> {
    let n = peers.nodes.len();
    let fan = params.gossip_neighbours + params.gossip_random;
    if !params.relay || n <= fan + 1 {
        return if own { peers.ids.clone() } else { Vec::new() };
    }
    let me_pos = peers.me_pos;
    let mut to = Vec::with_capacity(fan);
    for i in 1..=params.gossip_neighbours {
        to.push(peers.nodes[(me_pos + i) % n]);
    }
    // Relays add one random peer to the ring: ~3 copies per node, O(log N) hops.
    let fan = if own { fan } else { params.gossip_neighbours + params.gossip_random.min(1) };
    let mut tries = 0;
    while to.len() < fan && tries < fan * 4 {
        tries += 1;
        let p = peers.ids[rng.random_range(0..peers.ids.len())];
        if !to.contains(&p) {
            to.push(p);
        }
    }
    if let Some(f) = from {
        to.retain(|p| *p != f);
    }
    to
}
