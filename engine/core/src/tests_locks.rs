//! Unit tests of the quorum locks (`locks.rs`, docs/consensus.md 8c): a lock holds below the
//! release threshold and survives a restart, a lone member's lock is written when a rival joins
//! and re-derived at a restart. Shares `tests.rs`'s in-memory `Net`.

use std::sync::Arc;

use pqdag_wire::{ConflictKey, Vertex, VertexId, Vote};

use crate::tests::{fast_params, node, Net, TestSigner};
use crate::tests_adversary::byz_vertex;
use crate::*;


fn lock_actions<S: Signer>(core: &mut Core<S>) -> Vec<(ConflictKey, Option<VertexId>)> {
    let mut out = Vec::new();
    while let Some(a) = core.poll_action() {
        if let Action::Lock { key, member, .. } = a {
            out.push((key, member));
        }
    }
    out
}

fn vote_on<S: Signer>(core: &mut Core<S>, id: VertexId) -> Vote {
    core.vote_for(&id)
}

/// Moves `core` to its next lock round (`lock_rounds`): a preference changed in a round is voted
/// for from the next one, and a restored core votes from the round after its first event.
fn next_round<S: Signer>(core: &mut Core<S>) {
    let t = core.now.max(1) + core.params.lock_round_us;
    let _ = core.handle(t, Event::Timer);
    while core.poll_action().is_some() {}
}

/// Hands `vertices` to `core` (from node 1, 2, ...) and drains its actions.
fn deliver<S: Signer>(core: &mut Core<S>, vertices: &[&Arc<Vertex>]) {
    for (i, v) in vertices.iter().enumerate() {
        let _ = core.handle(1_000, Event::Vertex { from: node(i + 1), vertex: Arc::clone(v) });
    }
    while core.poll_action().is_some() {}
}

/// Node 0 of a 4-node cluster after a restart at `at`: `items` restored from the store, then
/// `locks` (key, member, round, gate), before any event.
fn restarted(at: u64, items: Vec<(Arc<Vertex>, VertexStatus)>, locks: Vec<(ConflictKey, VertexId, u64, u64)>) -> Core<TestSigner> {
    let nodes: Vec<NodeId> = (0..4).map(node).collect();
    let mut c = Core::new(Config { me: node(0), nodes, params: fast_params(), seed: 7, shard: 0, shard_count: 1 }, TestSigner(0)).expect("config");
    c.restore(at, items);
    c.restore_locks(locks);
    c
}

/// A 4-node `Net` and two vertices on genesis spending key `[key; 32]`, the lower id first
/// (the one the id tie-break prefers).
fn two_spends(key: u8) -> (Net, ConflictKey, Arc<Vertex>, Arc<Vertex>) {
    let net = Net::new(4, fast_params());
    let g = net.cores[0].genesis_id();
    let k = ConflictKey([key; 32]);
    let a = byz_vertex(1, vec![g], b"a", vec![k], 1);
    let b = byz_vertex(2, vec![g], b"b", vec![k], 1);
    let (low, high) = if a.id < b.id { (a, b) } else { (b, a) };
    (net, k, low, high)
}

/// A quorum locks a set on its member even against the tie-break; a locked node ignores
/// Snowball results for another member below the release threshold (t = N - q + f + 1 = 3 of
/// 3 peers at N = 4), leaves the lock on t, and a restarted node gets its lock back from the
/// store instead of voting by the tie-break (which would let it leave a lock for free).
#[test]
fn a_quorum_lock_holds_below_the_release_threshold_and_survives_a_restart() {
    // `low` wins the id tie-break; the lock goes to `high`.
    let (mut net, k, low, high) = two_spends(42);
    let core = &mut net.cores[0];
    assert_eq!(core.lock_release_threshold(), 3);
    deliver(core, &[&low, &high]);
    assert_eq!(vote_on(core, low.id), Vote::Yes, "the tie-break prefers the lower id");
    let tally = |id: VertexId, peer_yes: u32, quorum: bool| crate::credit::Tally { id, confidence: 1.0, snowball: true, peer_yes, quorum, peer_locked: 0, quorum_round: 0, claim_round: None };
    core.set_success(k, tally(high.id, 3, true));
    assert_eq!(lock_actions(core), vec![(k, Some(high.id))], "the lock is made durable");
    assert_eq!(vote_on(core, high.id), Vote::LockedYes);
    assert!(!core.dag.vertices[&high.id].round_ok, "a new preference certifies nothing in the round it changed in");
    next_round(core);
    assert_eq!(vote_on(core, high.id), Vote::LockedYes);
    assert!(core.dag.vertices[&high.id].round_ok, "from the next round it does");
    assert_eq!(vote_on(core, low.id), Vote::No);
    // Two peers for `low` (a liar and a stale node, say): below t, ignored, counters included.
    for _ in 0..5 {
        core.set_success(k, tally(low.id, 2, false));
    }
    assert!(lock_actions(core).is_empty());
    assert_eq!(vote_on(core, high.id), Vote::LockedYes, "a locked node does not move on a Snowball majority");

    // Restart from the store: vertices (as persisted) and the lock.
    let fresh = |locks: bool| {
        let stored = if locks { vec![(k, high.id, 0, 0)] } else { Vec::new() };
        let mut c = restarted(2_000, vec![(low.clone(), VertexStatus::Processing), (high.clone(), VertexStatus::Processing)], stored);
        let _ = c.handle(2_000, Event::Timer);
        let _ = c.vote_for(&high.id);
        assert!(!c.dag.vertices[&high.id].round_ok, "no Yes of a restarted node certifies anything in the round it came back in");
        next_round(&mut c);
        c
    };
    let mut forgetful = fresh(false);
    assert_eq!(vote_on(&mut forgetful, low.id), Vote::Yes, "without its lock the node would vote by the tie-break");
    let mut restored = fresh(true);
    assert_eq!(vote_on(&mut restored, high.id), Vote::LockedYes);
    assert_eq!(vote_on(&mut restored, low.id), Vote::No);
    // t peers for `low`: the lock goes, and the release is made durable.
    restored.set_success(k, tally(low.id, 3, false));
    assert_eq!(lock_actions(&mut restored), vec![(k, None)]);
    next_round(&mut restored);
    assert_eq!(vote_on(&mut restored, low.id), Vote::Yes, "released, and the Snowball count moved the preference");
    assert_eq!(vote_on(&mut restored, high.id), Vote::No);
}

/// Lock-follow (`Core::set_success`, docs/consensus.md 8c): an unlocked set moves its
/// preference to a member f + 1 peers are locked on (2 at N = 4), with no Snowball success and
/// no quorum, but not on f such peers, not while a rival has peers locked on it (a split, where
/// liars can make either side look larger), and never out of this node's own lock.
#[test]
fn an_unlocked_set_follows_a_lock_it_can_see_unless_the_locks_are_split() {
    let (mut net, k, low, high) = two_spends(44);
    let follow = |id: VertexId, peer_locked: u32| crate::credit::Tally { id, confidence: 0.0, snowball: false, peer_yes: peer_locked, quorum: false, peer_locked, quorum_round: 0, claim_round: None };
    let core = &mut net.cores[0];
    assert_eq!(core.lock_follow_threshold(), 2);
    deliver(core, &[&low, &high]);
    assert_eq!(vote_on(core, low.id), Vote::Yes, "the tie-break prefers the lower id");
    core.set_success(k, follow(high.id, 1));
    assert_eq!(vote_on(core, low.id), Vote::Yes, "f locked peers may all be liars: not followed");
    core.set_success(k, follow(high.id, 2));
    next_round(core);
    assert_eq!(vote_on(core, high.id), Vote::Yes, "f + 1 locked peers: followed");
    assert_eq!(vote_on(core, low.id), Vote::No);
    assert!(lock_actions(core).is_empty(), "following is not locking");
    // A split: peers are seen locked on `high` too, so f + 1 on `low` moves nothing.
    core.set_success(k, follow(low.id, 2));
    assert_eq!(vote_on(core, high.id), Vote::Yes, "with peers locked on both members Snowball alone decides");

    // This node's own lock is left only on the release threshold, never by following.
    let (mut net, ..) = two_spends(44);
    let core = &mut net.cores[0];
    deliver(core, &[&low, &high]);
    core.set_success(k, crate::credit::Tally { id: low.id, confidence: 1.0, snowball: true, peer_yes: 3, quorum: true, peer_locked: 0, quorum_round: 0, claim_round: None });
    assert_eq!(lock_actions(core), vec![(k, Some(low.id))]);
    core.set_success(k, follow(high.id, 2));
    assert_eq!(vote_on(core, low.id), Vote::LockedYes, "a locked node does not follow");
}

/// A lock on a lone member stays out of the store (one write saved per key of every
/// uncontested spend) until a second vertex joins the set, which writes it in the same step;
/// a restart locks every restored lone member, so a lock held without a record is never left
/// for free, while a set of two restored members without a stored lock is not locked.
#[test]
fn a_lone_members_lock_is_written_when_a_rival_joins_and_rederived_at_a_restart() {
    let (mut net, k, a, b) = two_spends(43);
    let tally = |id: VertexId, peer_yes: u32, quorum: bool| crate::credit::Tally { id, confidence: 1.0, snowball: true, peer_yes, quorum, peer_locked: 0, quorum_round: 0, claim_round: None };
    let core = &mut net.cores[0];
    let _ = core.handle(1_000, Event::Vertex { from: node(1), vertex: a.clone() });
    while core.poll_action().is_some() {}
    core.set_success(k, tally(a.id, 3, true));
    assert!(lock_actions(core).is_empty(), "a lone member's lock is not written");
    assert_eq!(vote_on(core, a.id), Vote::LockedYes, "yet the node is locked");
    let _ = core.handle(2_000, Event::Vertex { from: node(2), vertex: b.clone() });
    assert_eq!(lock_actions(core), vec![(k, Some(a.id))], "written with the rival's arrival, before any later send");
    let _ = core.handle(3_000, Event::Vertex { from: node(3), vertex: b.clone() });
    assert!(lock_actions(core).is_empty(), "once");
    assert_eq!(vote_on(core, a.id), Vote::LockedYes);
    assert_eq!(vote_on(core, b.id), Vote::No);

    let restart = |items: Vec<(Arc<Vertex>, VertexStatus)>| {
        let mut c = restarted(5_000, items, Vec::new());
        let _ = c.handle(5_000, Event::Timer);
        next_round(&mut c);
        c
    };
    // Crashed while `a` was alone (its lock unwritten): locked again at the restart.
    let mut lone = restart(vec![(a.clone(), VertexStatus::Processing)]);
    assert!(lock_actions(&mut lone).is_empty());
    assert_eq!(vote_on(&mut lone, a.id), Vote::LockedYes, "a restored lone member is locked");
    // The rival arrives after the restart: the re-derived lock is written then, and holds.
    let t = lone.now + 1_000;
    let _ = lone.handle(t, Event::Vertex { from: node(2), vertex: b.clone() });
    assert_eq!(lock_actions(&mut lone), vec![(k, Some(a.id))]);
    lone.set_success(k, tally(b.id, 2, false));
    assert_eq!(vote_on(&mut lone, a.id), Vote::LockedYes, "below the release threshold the lock holds");
    // Two members and no stored lock: the node had not locked (a lock on a set of two is
    // always written), so it votes by the tie-break.
    let mut two = restart(vec![(a.clone(), VertexStatus::Processing), (b.clone(), VertexStatus::Processing)]);
    let (low, high) = if a.id < b.id { (a.id, b.id) } else { (b.id, a.id) };
    assert_eq!(vote_on(&mut two, low), Vote::Yes);
    assert_eq!(vote_on(&mut two, high), Vote::No);
}

/// Three nodes each sign a vertex spending two keys, in a cycle (X: k1 k2, Y: k2 k3, Z: k3 k1),
/// and each votes for its own before the others' arrive. Every node then strongly prefers a
/// different vertex, each conflicting with the other two; with the whole network as the sample
/// a success needs both peers' Yes, so no count moves and the exposure pin keeps every
/// preference (seen as 460 payloads undecided for good in `bench --nodes 3 --rate 10000
/// --payload-bytes 512 --conflict-ratio 0.05`). The stalemate rule (`unblock.rs`) moves each
/// stalled set to its lowest id on every node: one vertex wins, the other two lose, alike.
#[test]
fn three_nodes_each_voting_for_a_different_spend_of_a_key_cycle_do_not_stall() {
    let mut net = Net::new(3, fast_params());
    let k = |b: u8| ConflictKey([b; 32]);
    net.submit(0, vec![k(1), k(2)], 1);
    net.submit(1, vec![k(2), k(3)], 2);
    net.submit(2, vec![k(3), k(1)], 3);
    let ids: Vec<VertexId> = (0..3).map(|i| net.created[i][0].1).collect();
    // The copies are held back until every node's polls have closed (by timeout) counting its
    // own Yes: each vertex is then exposed at its creator, and pinned there.
    let held: Vec<_> = std::mem::take(&mut net.queue).into_iter().collect();
    let until = net.now + 1_500_000;
    while net.now < until {
        // Drop everything in flight: each node only polls (peers answer nothing in time).
        net.queue.clear();
        let t = net.cores.iter().filter_map(|c| c.poll_timeout()).min().unwrap_or(until).max(net.now + 1);
        net.now = t.min(until);
        for i in 0..3 {
            if net.cores[i].poll_timeout().is_some_and(|x| x <= net.now) {
                net.handle(i, Event::Timer);
            }
        }
    }
    net.queue.clear();
    for (i, id) in ids.iter().enumerate() {
        assert!(net.cores[i].dag.vertices.get(id).is_some_and(|r| r.exposed), "node {i} voted for its own spend");
    }
    for ((_, seq), ev) in held {
        net.queue.insert((net.now + 100, seq), ev);
    }
    net.run(net.now + 30_000_000);
    let decided = |i: usize, id: &VertexId| net.finalized[i].contains(id) || net.rejected[i].contains(id);
    for i in 0..3 {
        assert!(ids.iter().all(|id| decided(i, id)), "node {i} left a spend undecided: finals {:?}", net.finalized[i]);
    }
    let finals: Vec<Vec<&VertexId>> = (0..3).map(|i| ids.iter().filter(|id| net.finalized[i].contains(id)).collect()).collect();
    assert!(finals.iter().all(|f| *f == finals[0]), "nodes decided differently: {finals:?}");
    assert_eq!(finals[0].len(), 1, "each pair of the three conflicts: exactly one wins");
    assert!(net.cores.iter().any(|c| c.status().stalemate_moves > 0), "the stalemate rule moved a set");
}

/// Lock rounds (`lock_rounds`, docs/consensus.md 8d): a lock moves to a member on claims of a
/// younger lock by floor(N/3) + 1 peers (2 at N = 4), not on claims no younger than its gate,
/// not on fewer claimers; the lock taken by the move is of the claimed round; a quorum of one
/// round raises the round of a lock on the same member; the gate of a lock re-derived at a
/// restart is the restart's round.
#[test]
fn a_lock_moves_to_a_younger_certificate_claimed_by_enough_peers() {
    let (mut net, k, low, high) = two_spends(45);
    let core = &mut net.cores[0];
    assert_eq!(core.claim_threshold(), 2);
    deliver(core, &[&low, &high]);
    let round = core.lock_round();
    let tally = |id: VertexId, quorum: bool, quorum_round: u64, claim_round: Option<u64>| crate::credit::Tally { id, confidence: 1.0, snowball: false, peer_yes: 1, quorum, peer_locked: 2, quorum_round, claim_round };
    // Locked on `low` in this round (a quorum of the round: a certificate).
    core.set_success(k, tally(low.id, true, round, None));
    assert_eq!(lock_actions(core), vec![(k, Some(low.id))]);
    let set = &core.conflicts.sets[&k];
    assert_eq!((set.lock_round, set.lock_gate), (round, round));
    // Claims of a lock on `high` no younger than the gate: ignored.
    core.set_success(k, tally(high.id, false, round, Some(round)));
    assert!(lock_actions(core).is_empty());
    assert_eq!(core.conflicts.sets[&k].quorum_lock, Some(low.id), "a claim of the lock's own round moves nothing");
    // Claims of a younger lock (`claim_round` is what floor(N/3) + 1 claimers reach): moved,
    // and locked at the claimed round.
    core.set_success(k, tally(high.id, false, round, Some(round + 3)));
    assert_eq!(lock_actions(core), vec![(k, Some(high.id))], "the moved lock is made durable");
    let set = &core.conflicts.sets[&k];
    assert_eq!((set.quorum_lock, set.lock_round, set.lock_gate), (Some(high.id), round + 3, round + 3));
    next_round(core);
    next_round(core);
    next_round(core);
    next_round(core);
    assert_eq!(vote_on(core, high.id), Vote::LockedYes);
    // A quorum for `high` of a later round raises the lock's round (and is written).
    let now_round = core.lock_round();
    assert!(now_round > round + 3);
    core.set_success(k, tally(high.id, true, now_round, None));
    assert_eq!(lock_actions(core), vec![(k, Some(high.id))]);
    assert_eq!(core.conflicts.sets[&k].lock_round, now_round);
    // Too few claimers make no claim round at all (`claimed_round`).
    let mut one = vec![now_round + 5];
    assert_eq!(crate::lock_rounds::claimed_round(&mut one, 2), None);
    let mut three = vec![now_round + 1, now_round + 9, now_round + 4];
    assert_eq!(crate::lock_rounds::claimed_round(&mut three, 2), Some(now_round + 4), "the second largest: one of any two claimers is honest");

    // A lock re-derived at a restart claims nothing and has the restart's round as its gate.
    let mut c = restarted(10_000, vec![(low.clone(), VertexStatus::Processing)], Vec::new());
    let t = 3 * c.params.lock_round_us + 10_000;
    let _ = c.handle(t, Event::Timer);
    let set = &c.conflicts.sets[&k];
    assert_eq!((set.quorum_lock, set.lock_round, set.lock_gate), (Some(low.id), 0, c.lock_round()));
    assert_eq!(c.lock_round(), 3);
}
