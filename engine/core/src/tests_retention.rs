//! Unit tests of retention (`retention.rs`): rejected vertices leave memory on the finals'
//! schedule and still count as rejected to every rule. Shares `tests.rs`'s in-memory `Net`.

use std::sync::Arc;

use pqdag_wire::{ConflictKey, Vertex};

use crate::tests::{fast_params, node, Net, TestSigner};
use crate::*;

/// A double spend's loser leaves every node's records `forget_final_after_us` after its
/// rejection (before: kept for ever, payloads included, a leak under double spends, issue 15),
/// and stays `Rejected` to every rule: it is still known (a second copy is neither re-inserted
/// nor persisted again), a child naming it that arrives afterwards is rejected on arrival on
/// every node, and the winner stays final with every node agreeing. Fails if rejected records
/// are kept, or if a forgotten reject is taken for unknown or final.
#[test]
fn rejected_records_are_forgotten_and_still_count_as_rejected() {
    let mut p = fast_params();
    p.forget_final_after_us = 500_000;
    let mut net = Net::new(4, p);
    let key = ConflictKey([5; 32]);
    net.submit(0, vec![key], 1);
    net.submit(1, vec![key], 2);
    net.run(net.now + 1_000_000);
    let spend = |net: &Net, i: usize| net.persisted[i].iter().find(|(v, _)| v.creator == node(i) && v.conflict_keys == vec![key]).map(|(v, _)| v.clone()).expect("spend");
    let (v0, v1) = (spend(&net, 0), spend(&net, 1));
    let (winner, loser) = if net.finalized[0].contains(&v0.id) { (v0, v1) } else { (v1, v0) };
    // Keep the cluster ticking past the forget window.
    for t in 0..20 {
        net.submit((t % 4) as usize, vec![], 100 + t);
        net.run(net.now + 100_000);
    }
    for i in 0..4 {
        assert!(net.rejected[i].contains(&loser.id), "node {i}: the loser is rejected");
        assert!(net.finalized[i].contains(&winner.id), "node {i}: the winner is final");
        assert!(net.cores[i].vertex(&loser.id).is_none(), "node {i} forgot the loser's record");
        assert_eq!(net.cores[i].vertex_status(&loser.id), Some(VertexStatus::Rejected), "node {i}");
        assert!(net.cores[i].contains(&loser.id), "node {i}: a forgotten reject is still known");
    }
    // A second copy of the loser changes nothing.
    let persisted = net.persisted[2].len();
    net.push(2, Event::Vertex { from: node(3), vertex: loser.clone() });
    net.run(net.now + 200_000);
    assert!(net.persisted[2][persisted..].iter().all(|(v, _)| v.id != loser.id), "the forgotten loser was not inserted again");
    assert!(net.cores[2].vertex(&loser.id).is_none());
    // A child of the forgotten loser, made by node 3 now: rejected on arrival everywhere.
    let mut child = Vertex::new_unsigned(vec![loser.id], b"late child".to_vec(), vec![], net.now / 1000, node(3));
    child.signature = TestSigner(3).sign(Domain::Vertex, child.signed_bytes());
    let child = Arc::new(child);
    for i in 0..4 {
        net.push(i, Event::Vertex { from: node(3), vertex: child.clone() });
    }
    net.run(net.now + 1_000_000);
    for i in 0..4 {
        assert!(net.rejected[i].contains(&child.id), "node {i}: a child of a forgotten reject is rejected");
        assert!(!net.finalized[i].contains(&child.id));
        assert_eq!(net.cores[i].status().processing, 0, "node {i}");
    }
    let digests: Vec<_> = net.cores.iter().map(|c| c.status().finalized_digest).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "every node finalized the same");
}
