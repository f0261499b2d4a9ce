//! Gossip targets (4.4): ring successors plus random peers. Owns no state; reads `peers` and
//! draws from the core's RNG.

use pqdag_wire::NodeId;
use rand::Rng;

use crate::core::Core;
use crate::types::Signer;

impl<S: Signer> Core<S> {
    /// 4.4: ring successors plus a random sample; everyone when N is small (the creator only).
    pub(crate) fn gossip_targets(&mut self, from: Option<NodeId>, own: bool) -> Vec<NodeId> {
        let n = self.peers.nodes.len();
        let fan = self.params.gossip_neighbours + self.params.gossip_random;
        if n <= fan + 1 {
            return if own { self.peers.ids.clone() } else { Vec::new() };
        }
        let me_pos = self.peers.me_pos;
        let mut to = Vec::with_capacity(fan);
        for i in 1..=self.params.gossip_neighbours {
            to.push(self.peers.nodes[(me_pos + i) % n]);
        }
        // Relays add one random peer to the ring: ~3 copies per node, O(log N) hops.
        let fan = if own { fan } else { self.params.gossip_neighbours + self.params.gossip_random.min(1) };
        let mut tries = 0;
        while to.len() < fan && tries < fan * 4 {
            tries += 1;
            let p = self.peers.ids[self.rng.random_range(0..self.peers.ids.len())];
            if !to.contains(&p) {
                to.push(p);
            }
        }
        if let Some(f) = from {
            to.retain(|p| *p != f);
        }
        to
    }
}
