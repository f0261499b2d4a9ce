//! Gossip targets: the creator to every peer, or (with `Params::relay`, spec 4.4) ring
//! successors plus random peers at every hop; and the peers an exclusion's proof is pushed to
//! ([`alert_targets`]). Owns no state; reads `peers` and draws from the core's RNG.

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
        return if own { peers.ids.to_vec() } else { Vec::new() };
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

/// Peers each node that convicts (or excludes with a proof) pushes the proof to, when it has
/// more peers than this. Every convicting node pushes, so the proof spreads as an epidemic:
/// with ~80 honest pushers of 100 nodes each honest node gets ~8 copies, and misses all with
/// probability ~e^-8, besides detecting the equivocation itself. Sending it to every peer made
/// N^2 alerts per equivocator: 20 equivocators of 100 nodes put ~23 MB of proofs on every honest
/// node in the first second (~0.45 s of its CPU in bytes, signatures and one verify per
/// accused), and honest finality waited behind them (`docs/simulator.md`).
pub const ALERT_FANOUT: usize = 10;

/// The indices into `peers` (this node and the accused left out) that this node pushes its
/// proof against `accused` to: all of them up to [`ALERT_FANOUT`], else the [`ALERT_FANOUT`]
/// whose BLAKE3 of (this node, accused, peer) is smallest. A pure function of the ids, so the
/// engine and the simulator pick alike and no OS randomness is drawn, yet every pusher reaches
/// a different subset; an accused cannot choose who hears about it.
pub fn alert_targets(me: &NodeId, accused: &NodeId, peers: &[NodeId]) -> Vec<usize> {
    let mut cands: Vec<(u64, usize)> = peers
        .iter()
        .enumerate()
        .filter(|(_, p)| *p != me && *p != accused)
        .map(|(i, p)| {
            let mut h = blake3::Hasher::new_derive_key("pqdag 2026-12 alert fanout v1");
            h.update(&me.0);
            h.update(&accused.0);
            h.update(&p.0);
            let d = h.finalize();
            let mut b = [0u8; 8];
            b.copy_from_slice(&d.as_bytes()[..8]);
            (u64::from_le_bytes(b), i)
        })
        .collect();
    if cands.len() > ALERT_FANOUT {
        cands.select_nth_unstable(ALERT_FANOUT - 1);
        cands.truncate(ALERT_FANOUT);
        cands.sort_unstable();
    }
    cands.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<NodeId> {
        (0..n).map(|i| NodeId([i; 32])).collect()
    }

    /// Up to the fan-out every peer but the accused hears; beyond it, `ALERT_FANOUT` of them,
    /// the same ones every time for one (reporter, accused), other ones for another reporter.
    #[test]
    fn alert_targets_are_everyone_when_small_and_a_fixed_fanout_beyond() {
        let small = ids(8);
        assert_eq!(alert_targets(&small[0], &small[3], &small), vec![1, 2, 4, 5, 6, 7]);
        let big = ids(100);
        let a = alert_targets(&big[0], &big[99], &big);
        assert_eq!(a.len(), ALERT_FANOUT);
        assert!(a.iter().all(|&i| i != 0 && i != 99), "{a:?}");
        let mut dedup = a.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), ALERT_FANOUT, "distinct peers");
        assert_eq!(a, alert_targets(&big[0], &big[99], &big), "a pure function of the ids");
        assert_ne!(a, alert_targets(&big[1], &big[99], &big), "another reporter, another subset");
        // Over many reporters every peer is reached.
        let mut reached = vec![false; 100];
        for r in 0..80 {
            for i in alert_targets(&big[r], &big[99], &big) {
                reached[i] = true;
            }
        }
        assert!(reached[..99].iter().all(|r| *r), "every honest peer hears from 80 reporters");
    }
}
