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

/// Finals of one run, in each node's finality order: (stripped, whole) per node, the whole
/// finals' bytes and the early-strip count.
fn strip_run(bytes_max: usize) -> (Net, Vec<(usize, usize)>) {
    let mut p = fast_params();
    // An hour: only the byte bound strips in this test.
    p.strip_final_after_us = 3_600_000_000;
    p.strip_final_bytes_max = bytes_max;
    let mut net = Net::new(4, p);
    for t in 0..40u64 {
        net.submit((t % 4) as usize, vec![ConflictKey([t as u8 + 1; 32])], t + 1);
        net.run(net.now + 50_000);
    }
    net.run(net.now + 1_000_000);
    let split = (0..4)
        .map(|i| {
            let whole = |id| net.cores[i].vertex(id).is_some_and(|v| !v.signature.is_empty());
            let finals = &net.finalized[i];
            let stripped = finals.iter().take_while(|id| !whole(id)).count();
            assert!(finals[stripped..].iter().all(whole), "node {i}: stripped oldest first, in finality order");
            (stripped, finals.len() - stripped)
        })
        .collect();
    (net, split)
}

/// The byte bound strips the oldest whole finals before their time: a node that finalizes
/// faster than the time window was sized for holds at most `strip_final_bytes_max` bytes of
/// whole finals (`docs/architecture.md`, "Memory of a long-running node"); the newest stay
/// whole, the stripped ones stay final, every node agrees. Without the bound nothing is
/// stripped, so the test fails if the bound is ignored, strips the newest first, or loses one.
#[test]
fn the_byte_bound_strips_the_oldest_finals_first() {
    let (free, split) = strip_run(0);
    for (i, &(stripped, whole)) in split.iter().enumerate() {
        assert_eq!(stripped, 0, "node {i}: no bound, nothing stripped within the hour");
        assert!(whole >= 40, "node {i}: every submission final");
        assert_eq!(free.cores[i].status().stripped_early, 0);
    }
    let one = free.cores[0].status().whole_final_bytes as usize / split[0].1;
    let bound = 6 * one;
    let (net, split) = strip_run(bound);
    for (i, &(stripped, whole)) in split.iter().enumerate() {
        let s = net.cores[i].status();
        assert!(s.whole_final_bytes as usize <= bound, "node {i}: {} whole bytes over the bound {bound}", s.whole_final_bytes);
        assert!(whole >= 3 && stripped >= 30, "node {i}: {stripped} stripped, {whole} whole");
        assert_eq!(s.stripped_early, stripped as u64, "node {i}: every strip was early");
        assert_eq!(stripped + whole, split[0].0 + split[0].1, "node {i}: as many finals as node 0");
    }
    let digests: Vec<_> = net.cores.iter().map(|c| c.status().finalized_digest).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "every node finalized the same");
    assert_eq!(digests[0], free.cores[0].status().finalized_digest, "the bound changes no decision");
}
