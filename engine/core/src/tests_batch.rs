//! Batching and re-issue (`batch`): submissions share a vertex; a rejected own vertex's innocent
//! transactions are final in a new one, its guilty one is not, and nobody calls it equivocation.

use pqdag_wire::{ConflictKey, NodeId, Vertex, VertexId};

use crate::tests::{fast_params, Net};
use crate::*;

fn batch_params(max_batch: usize) -> Params {
    let mut p = fast_params();
    p.max_batch = max_batch;
    p.batch_linger_us = 50_000;
    p
}

fn key(b: u8) -> ConflictKey {
    ConflictKey([b; 32])
}

fn vertex_of(net: &Net, node: usize, tag: u64) -> Vec<VertexId> {
    net.created[node].iter().filter(|c| c.0 == tag).map(|c| c.1).collect()
}

#[test]
fn submissions_share_a_vertex_while_the_node_is_busy() {
    let mut net = Net::new(4, batch_params(64));
    // Idle: the first submission closes its batch at once.
    net.submit(0, vec![key(1)], 1);
    assert_eq!(net.created[0].len(), 1, "an idle node does not make a lone submission wait");
    // Busy (a vertex created within the linger): the next ones wait for each other.
    for t in 2..=11u64 {
        net.submit(0, vec![key(t as u8)], t);
    }
    assert_eq!(net.created[0].len(), 1, "held for the linger");
    assert_eq!(net.cores[0].batch_len(), 10);
    net.run(3_000_000);
    let second = vertex_of(&net, 0, 2);
    assert_eq!(second.len(), 1);
    for t in 2..=11u64 {
        assert_eq!(vertex_of(&net, 0, t), second, "tag {t} shares the batch");
    }
    let v = net.cores[0].vertex(&second[0]).expect("held").clone();
    assert_eq!(v.txs.len(), 10);
    assert_eq!(v.conflict_keys.len(), 10);
    // Every transaction id reported is the one in the vertex, in order.
    let ids: Vec<_> = net.created[0].iter().filter(|c| c.1 == second[0]).map(|c| c.2).collect();
    assert_eq!(ids, v.tx_ids());
    for i in 0..4 {
        assert_eq!(net.cores[i].vertex_status(&second[0]), Some(VertexStatus::Final), "node {i}");
    }
    // A key already in the open batch is refused at once, not batched twice.
    net.submit(0, vec![key(200)], 50);
    net.submit(0, vec![key(201)], 51);
    let r = net.cores[0].handle(net.now, Event::Submit { payload: vec![9], conflict_keys: vec![key(201)], client_tag: 52, timestamp_ms: 0 });
    assert!(matches!(r, Err(ConsensusError::Dag(_))), "{r:?}");
}

#[test]
fn a_full_batch_closes_at_once() {
    let mut net = Net::new(4, batch_params(3));
    net.submit(0, vec![], 1);
    for t in 2..=4u64 {
        net.submit(0, vec![], t);
    }
    // The third waiting submission filled the batch: no linger.
    assert_eq!(net.created[0].len(), 4);
    assert_eq!(net.cores[0].batch_len(), 0);
}

#[test]
fn innocent_transactions_of_a_rejected_vertex_are_reissued_and_final() {
    let mut net = Net::new(4, batch_params(3));
    // Node 1 spends key 7 first; it is final everywhere.
    net.submit(1, vec![key(7)], 100);
    net.run(2_000_000);
    let winner = vertex_of(&net, 1, 100)[0];
    for i in 0..4 {
        assert_eq!(net.cores[i].vertex_status(&winner), Some(VertexStatus::Final));
    }
    // Node 0 (busy after a first vertex) batches a late double spend of key 7 (tag 2) with two
    // innocent transactions (tag 3 spends key 8, tag 4 nothing).
    net.submit(0, vec![key(9)], 1);
    net.submit(0, vec![key(7)], 2);
    net.submit(0, vec![key(8)], 3);
    net.submit(0, vec![], 4);
    let doomed = vertex_of(&net, 0, 2);
    assert_eq!(doomed.len(), 1, "the batch closed at three: {:?}", net.created[0]);
    assert_eq!(vertex_of(&net, 0, 3)[0], doomed[0]);
    net.run(net.now + 3_000_000);
    // The doomed vertex lost key 7; tags 3 and 4 moved to a new vertex, which is final.
    assert!(net.rejected[0].contains(&doomed[0]));
    assert_eq!(net.reissued[0], vec![(doomed[0], vec![3, 4])]);
    let moved = vertex_of(&net, 0, 3);
    assert_eq!(moved.len(), 2, "created twice: {moved:?}");
    assert_ne!(moved[1], doomed[0]);
    assert_eq!(vertex_of(&net, 0, 4)[1], moved[1]);
    assert_eq!(vertex_of(&net, 0, 2).len(), 1, "the double spend is not re-issued");
    // The same transactions (same ids) in the new vertex.
    let tx3: Vec<_> = net.created[0].iter().filter(|c| c.0 == 3).map(|c| c.2).collect();
    assert_eq!(tx3[0], tx3[1]);
    for i in 0..4 {
        assert_eq!(net.cores[i].vertex_status(&moved[1]), Some(VertexStatus::Final), "node {i}");
        assert_eq!(net.cores[i].vertex_status(&doomed[0]), Some(VertexStatus::Rejected), "node {i}");
    }
    // Spending key 8 again with the same transaction is no equivocation: nobody accuses node 0.
    assert!(net.alerts.is_empty(), "{:?}", net.alerts);
    for i in 1..4 {
        assert!(!net.cores[i].is_excluded(&crate::tests::node(0)), "node {i} excludes node 0");
    }
}

/// What a rejected batch leaves behind goes at its decision: the set of an innocent key that
/// its re-issue won (every other member already rejected) leaves at once, its winner kept as a
/// forgotten key, and the rejected vertex is stripped of its payloads on the finals' schedule
/// (`retention`). Under 5 % double spends in batches of ~180 these two held ~50 MB of a node
/// (`docs/benchmark.md`, "What a rejected batch leaves behind"). A late spend of the key
/// still loses on every node, the re-issue is still no equivocation, and every node agrees.
/// Fails if such a set waits for its winner's record to be forgotten, or if a rejected vertex
/// stays whole.
#[test]
fn a_rejected_batch_leaves_no_set_and_no_payload_behind() {
    let mut p = batch_params(3);
    p.strip_final_after_us = 200_000;
    p.forget_final_after_us = 60_000_000;
    let mut net = Net::new(4, p);
    net.submit(1, vec![key(7)], 100);
    net.run(2_000_000);
    net.submit(0, vec![key(9)], 1);
    net.submit(0, vec![key(7)], 2);
    net.submit(0, vec![key(8)], 3);
    net.submit(0, vec![], 4);
    let doomed = vertex_of(&net, 0, 2)[0];
    net.run(net.now + 3_000_000);
    let moved = vertex_of(&net, 0, 3)[1];
    for i in 0..4 {
        let c = &net.cores[i];
        assert_eq!(c.vertex_status(&moved), Some(VertexStatus::Final), "node {i}");
        assert_eq!(c.vertex_status(&doomed), Some(VertexStatus::Rejected), "node {i}");
        assert!(!c.conflicts.sets.contains_key(&key(8)), "node {i}: the re-issue's set left at its decision");
        assert_eq!(c.dag.forgotten.key_winner(&key(8)), Some(moved), "node {i}: its winner is remembered");
        let v = c.vertex(&doomed).expect("the rejected record is still held (forgotten after 60 s)");
        assert!(v.signature.is_empty() && v.txs.is_empty(), "node {i}: the rejected vertex was stripped");
        assert_eq!(v.conflict_keys, vec![key(7), key(8)], "node {i}: its keys stay");
    }
    // A late spend of key 8 by node 3, with another transaction: rejected on every node.
    let tip = net.finalized[3].last().copied().expect("a final tip");
    let mut late = Vertex::new_unsigned(vec![tip], b"late".to_vec(), vec![key(8)], net.now / 1000, crate::tests::node(3));
    late.signature = crate::tests::TestSigner(3).sign(Domain::Vertex, late.signed_bytes());
    let late = std::sync::Arc::new(late);
    for i in 0..4 {
        net.push(i, Event::Vertex { from: crate::tests::node(3), vertex: late.clone() });
    }
    net.run(net.now + 2_000_000);
    for i in 0..4 {
        assert_eq!(net.cores[i].vertex_status(&late.id), Some(VertexStatus::Rejected), "node {i}: the late spend lost");
        assert!(!net.cores[i].is_excluded(&crate::tests::node(0)), "node {i} excludes node 0");
    }
    assert!(net.alerts.iter().all(|(_, accused)| *accused != crate::tests::node(0)), "{:?}", net.alerts);
    let digests: Vec<_> = net.cores.iter().map(|c| c.status().finalized_digest).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "every node finalized the same");
}

#[test]
fn a_batch_never_outgrows_the_vertex_byte_budget() {
    let mut p = batch_params(4096);
    p.batch_linger_us = 10_000_000;
    let mut net = Net::new(4, p);
    net.submit(0, vec![], 1);
    for t in 2..3000u64 {
        let r = net.cores[0].handle(net.now, Event::Submit { payload: vec![t as u8; 512], conflict_keys: vec![ConflictKey([(t % 251) as u8, (t / 251) as u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30])], client_tag: t, timestamp_ms: 0 });
        assert!(r.is_ok(), "{t}: {r:?}");
    }
    while let Some(a) = net.cores[0].poll_action() {
        if let Action::Persist { vertex, .. } = a {
            assert!(vertex.check_shape().is_ok(), "{} txs: {:?}", vertex.txs.len(), vertex.check_shape());
        }
    }
}

#[test]
fn a_reissue_never_outgrows_the_vertex_byte_budget() {
    let mut p = batch_params(4096);
    p.batch_linger_us = 10_000_000;
    let mut net = Net::new(4, p);
    net.submit(1, vec![key(7)], 1);
    net.run(2_000_000);
    net.submit(0, vec![], 2);
    let submit = |net: &mut Net, t: u64, keys: Vec<ConflictKey>| {
        let r = net.cores[0].handle(net.now, Event::Submit { payload: vec![t as u8; 512], conflict_keys: keys, client_tag: t, timestamp_ms: 0 });
        assert!(r.is_ok(), "{t}: {r:?}");
    };
    // A full batch whose first transaction is a late double spend of key 7: rejected on
    // creation, its 884 innocent transactions re-issued while 800 more wait in the batch.
    submit(&mut net, 3, vec![key(7)]);
    for t in 4..1700u64 {
        submit(&mut net, t, vec![]);
    }
    // Past the (long) linger of the last batch.
    net.run(net.now + 15_000_000);
    let doomed = vertex_of(&net, 0, 3)[0];
    let in_doomed = net.created[0].iter().filter(|c| c.1 == doomed).count();
    assert!(in_doomed > 900, "the doomed batch was full: {in_doomed}");
    let reissued: usize = net.reissued[0].iter().map(|r| r.1.len()).sum();
    assert_eq!(reissued, in_doomed - 1, "every innocent transaction of the doomed vertex");
    for (v, status) in &net.persisted[0] {
        assert!(v.check_shape().is_ok(), "{} txs: {:?}", v.txs.len(), v.check_shape());
        if v.creator == crate::tests::node(0) && v.txs.len() > 1 {
            assert!(*status == VertexStatus::Processing || *status == VertexStatus::Final || v.conflict_keys.contains(&key(7)), "{status:?}");
        }
    }
    // Every submission but the double spend ends up final exactly once.
    let final_tags: std::collections::HashSet<u64> =
        net.created[0].iter().filter(|c| net.cores[0].vertex_status(&c.1) == Some(VertexStatus::Final)).map(|c| c.0).collect();
    assert_eq!(final_tags.len(), 1699 - 2, "all but the double spend");
    assert!(!final_tags.contains(&3));
}

#[test]
fn a_transaction_final_through_another_node_is_reported_final() {
    let mut net = Net::new(4, batch_params(3));
    // The same transaction (payload and key) submitted through node 1 and, later, node 0 (a
    // client's retry): node 1's vertex is final first.
    let payload = 77u64.to_le_bytes().to_vec();
    net.handle(1, Event::Submit { payload: payload.clone(), conflict_keys: vec![key(5)], client_tag: 10, timestamp_ms: 0 });
    net.run(2_000_000);
    let twin = vertex_of(&net, 1, 10)[0];
    net.submit(0, vec![key(9)], 1);
    net.handle(0, Event::Submit { payload, conflict_keys: vec![key(5)], client_tag: 2, timestamp_ms: 0 });
    net.submit(0, vec![], 3);
    net.submit(0, vec![], 4);
    let doomed = vertex_of(&net, 0, 2)[0];
    net.run(net.now + 3_000_000);
    assert!(net.rejected[0].contains(&doomed));
    let tx = net.created[0].iter().find(|c| c.0 == 2).expect("created").2;
    assert_eq!(net.tx_final[0], vec![(2, twin, tx)], "the retry is final in its twin");
    assert_eq!(net.reissued[0], vec![(doomed, vec![3, 4])]);
    assert!(net.alerts.is_empty(), "{:?}", net.alerts);
}

/// A creator's vertex set aside on a key (its third while two were live) takes a freed place
/// once its members there are rejected, lowest id first (the same on every node): left aside
/// it could never be preferred, voted for, or promoted, and an honest node's re-issue of two
/// rejected double spends' innocent payloads stayed processing for good (4 x 2 bench).
#[test]
fn a_set_aside_spend_takes_the_place_of_its_creators_rejected_members() {
    use crate::conflicts::{ConflictSet, Member};
    let (c, d) = (NodeId([7; 32]), NodeId([8; 32]));
    let m = |b: u8, creator: NodeId| Member { id: VertexId([b; 32]), count: 0, confidence: 0.0, creator, owner: 0, rejected: false, exposed: false, equivocal: false, locked_peers: 0 };
    let ids = |v: &[Member]| v.iter().map(|m| m.id.0[0]).collect::<Vec<u8>>();
    let mut set = ConflictSet::default();
    set.members = vec![m(1, c), m(2, c)];
    set.overflow = vec![m(9, c), m(5, d), m(4, c), m(3, c)];
    assert!(!set.readmit_set_aside(c), "two live members of c: none comes in");
    set.members[0].rejected = true;
    assert!(set.readmit_set_aside(c));
    assert_eq!(ids(&set.members), [1, 2, 3], "the lowest id takes the one freed place");
    set.members[1].rejected = true;
    set.members[2].rejected = true;
    assert!(set.readmit_set_aside(c));
    assert_eq!(ids(&set.members), [1, 2, 3, 4, 9]);
    assert_eq!(ids(&set.overflow), [5], "another creator's vertex stays aside");
    assert!(!set.readmit_set_aside(c), "none left");
}
