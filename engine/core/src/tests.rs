//! Unit tests of the core rules, on a tiny in-memory network (quinn's `Pair` style): every
//! action is delivered after 100 us, time jumps to the next timeout, bounded steps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pqdag_wire::{ConflictKey, NodeId, Vertex, VertexId, Vote};

use crate::*;

pub(crate) struct TestSigner(pub(crate) u8);

impl Signer for TestSigner {
    fn sign(&self, _domain: Domain, msg: &[u8]) -> Vec<u8> {
        let mut h = blake3::Hasher::new();
        h.update(&[self.0]);
        h.update(msg);
        h.finalize().as_bytes().to_vec()
    }
}

pub(crate) fn node(i: usize) -> NodeId {
    NodeId([i as u8 + 1; 32])
}

pub(crate) struct Net {
    pub(crate) cores: Vec<Core<TestSigner>>,
    pub(crate) now: u64,
    pub(crate) queue: BTreeMap<(u64, u64), (usize, Event)>,
    pub(crate) seq: u64,
    pub(crate) finalized: Vec<Vec<VertexId>>,
    pub(crate) rejected: Vec<Vec<VertexId>>,
    pub(crate) persisted: Vec<Vec<(Arc<Vertex>, VertexStatus)>>,
    pub(crate) alerts: Vec<(usize, NodeId)>,
    /// Nodes whose responses are dropped (withholding).
    pub(crate) mute: Vec<bool>,
    /// Nodes that answer every id `Unknown`.
    pub(crate) unknown_voters: Vec<usize>,
    /// Nodes that flip every Yes/No they answer.
    pub(crate) flip_voters: Vec<usize>,
    /// Every `drop_every`-th response sent is lost (0: none), and the count so far.
    pub(crate) drop_every: u64,
    pub(crate) responses_sent: u64,
    /// Per node: (client tag, vertex, transaction) of every `Created`.
    pub(crate) created: Vec<Vec<(u64, VertexId, pqdag_wire::TxId)>>,
    /// Per node: every `Reissued` (rejected vertex, tags that moved).
    pub(crate) reissued: Vec<Vec<(VertexId, Vec<u64>)>>,
    /// Per node: every `TxFinal` (tag, final twin vertex, transaction).
    pub(crate) tx_final: Vec<Vec<(u64, VertexId, pqdag_wire::TxId)>>,
    /// Vertex messages sent (`SendVertex` copies, not fetch replies).
    pub(crate) vertex_copies: u64,
    /// Every `SendVertex` copy to this node is lost.
    pub(crate) lose_vertices_to: Option<usize>,
}

impl Net {
    pub(crate) fn new(n: usize, params: Params) -> Net {
        let nodes: Vec<NodeId> = (0..n).map(node).collect();
        let cores = (0..n)
            .map(|i| Core::new(Config { me: node(i), nodes: nodes.clone(), params: params.clone(), seed: i as u64, shard: 0, shard_count: 1 }, TestSigner(i as u8)).expect("valid config"))
            .collect();
        Net { cores, now: 0, queue: BTreeMap::new(), seq: 0, finalized: vec![vec![]; n], rejected: vec![vec![]; n], persisted: vec![vec![]; n], alerts: vec![], mute: vec![false; n], unknown_voters: vec![], flip_voters: vec![], drop_every: 0, responses_sent: 0, created: vec![vec![]; n], reissued: vec![vec![]; n], tx_final: vec![vec![]; n], vertex_copies: 0, lose_vertices_to: None }
    }

    fn idx(&self, id: &NodeId) -> usize {
        (id.0[0] - 1) as usize
    }

    pub(crate) fn push(&mut self, to: usize, ev: Event) {
        self.seq += 1;
        self.queue.insert((self.now + 100, self.seq), (to, ev));
    }

    fn drain(&mut self, i: usize) {
        while let Some(a) = self.cores[i].poll_action() {
            let me = node(i);
            match a {
                Action::SendVertex { to, vertex } => {
                    for p in to {
                        let t = self.idx(&p);
                        self.vertex_copies += 1;
                        if self.lose_vertices_to != Some(t) {
                            self.push(t, Event::Vertex { from: me, vertex: vertex.clone() });
                        }
                    }
                }
                Action::SendQuery { to, query } => {
                    for p in to {
                        let t = self.idx(&p);
                        self.push(t, Event::query(me, query.clone()));
                    }
                }
                Action::SendResponse { to, mut response } => {
                    if self.unknown_voters.contains(&i) {
                        response.votes.iter_mut().for_each(|b| *b = Vote::Unknown as u8);
                    }
                    if self.flip_voters.contains(&i) {
                        for b in response.votes.iter_mut() {
                            *b = match Vote::from_u8(*b) {
                                Some(Vote::Yes | Vote::LockedYes | Vote::Final) => Vote::No as u8,
                                Some(Vote::No) => Vote::Final as u8,
                                _ => *b,
                            };
                        }
                    }
                    self.responses_sent += 1;
                    let lost = self.drop_every > 0 && self.responses_sent % self.drop_every == 0;
                    if !self.mute[i] && !lost {
                        let t = self.idx(&to);
                        self.push(t, Event::Response { from: me, response });
                    }
                }
                Action::RequestVertices { to, request } => {
                    let t = self.idx(&to);
                    self.push(t, Event::VertexRequest { from: me, request });
                }
                Action::SendVertices { to, reply } => {
                    let t = self.idx(&to);
                    self.push(t, Event::VertexReply { from: me, vertices: reply.vertices.into_iter().map(Arc::new).collect() });
                }
                Action::SendFrontier { to, frontier } => {
                    for p in to {
                        let t = self.idx(&p);
                        self.push(t, Event::Frontier { from: me, frontier: frontier.clone() });
                    }
                }
                Action::Persist { vertex, status } => self.persisted[i].push((vertex, status)),
                Action::Finalized { id, .. } => {
                    // FR-005: finality needs every parent final first.
                    let v = self.cores[i].vertex(&id).expect("finalized vertex is held").clone();
                    for p in &v.parents {
                        assert_eq!(self.cores[i].vertex_status(p), Some(VertexStatus::Final), "parent final before child");
                    }
                    self.finalized[i].push(id);
                }
                Action::Rejected { id } => {
                    assert!(!self.finalized[i].contains(&id), "final is forever");
                    self.rejected[i].push(id);
                }
                Action::Alert { peer, .. } => self.alerts.push((i, peer)),
                Action::Created { client_tag, id, tx } => self.created[i].push((client_tag, id, tx)),
                Action::Reissued { id, client_tags } => {
                    assert!(!self.rejected[i].contains(&id), "a re-issue comes before the rejection");
                    self.reissued[i].push((id, client_tags));
                }
                Action::TxFinal { client_tag, id, tx } => self.tx_final[i].push((client_tag, id, tx)),
                Action::ToShard { .. } | Action::Lock { .. } => {}
            }
        }
    }

    pub(crate) fn handle(&mut self, i: usize, ev: Event) {
        let _ = self.cores[i].handle(self.now, ev);
        self.drain(i);
    }

    pub(crate) fn submit(&mut self, i: usize, keys: Vec<ConflictKey>, tag: u64) {
        let ts = self.now / 1000;
        self.handle(i, Event::Submit { payload: tag.to_le_bytes().to_vec(), conflict_keys: keys, client_tag: tag, timestamp_ms: ts });
    }

    /// Runs until `until` (virtual us), bounded.
    pub(crate) fn run(&mut self, until: u64) {
        for _ in 0..2_000_000 {
            let next_msg = self.queue.keys().next().map(|k| k.0);
            let next_timer = self.cores.iter().filter_map(|c| c.poll_timeout()).min();
            let t = match (next_msg, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(u64::MAX),
            };
            if t > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(t);
            if next_msg == Some(t) {
                let k = *self.queue.keys().next().expect("non-empty");
                let (to, ev) = self.queue.remove(&k).expect("present");
                // As the engine's shell does: an answer no poll awaits is dropped unverified.
                if let Event::Response { from, response } = &ev {
                    if !self.cores[to].awaits_response(from, response.query_id) {
                        continue;
                    }
                }
                self.handle(to, ev);
            } else {
                for i in 0..self.cores.len() {
                    if self.cores[i].poll_timeout().is_some_and(|x| x <= self.now) {
                        self.handle(i, Event::Timer);
                    }
                }
            }
        }
        panic!("network did not go idle within the step bound");
    }
}

pub(crate) fn fast_params() -> Params {
    let mut p = Params::lan_default();
    p.poll_min_age_us = 1_000;
    p
}

#[test]
fn params_validation_spec_3_2() {
    let mut p = Params::lan_default();
    assert!(p.validate(100).is_ok());
    p.alpha = 10; // k = 20: alpha must be > k/2
    assert!(matches!(p.validate(100), Err(ConsensusError::InvalidParams(_))));
    let mut p = Params::lan_default();
    p.beta = 0;
    assert!(p.validate(100).is_err());
    let p = Params::lan_default();
    assert!(p.validate(5).is_err(), "k = 20 > peers = 4");
    let mut p = Params::lan_default();
    p.finalization_threshold = 1.5;
    assert!(p.validate(100).is_err());
    let p = Params::for_network_size(1000);
    assert_eq!(p.sample_size, 30);
    assert!(2 * p.alpha > p.sample_size);
    assert!(Params::for_network_size(4).validate(4).is_ok());
}

#[test]
fn small_network_rule_k_min_n_minus_1_spec_3_2() {
    let net = Net::new(3, Params::lan_default());
    assert_eq!(net.cores[0].params().sample_size, 2);
    assert!(2 * net.cores[0].params().alpha > 2);
    assert!(net.cores[0].params().validate(3).is_ok());
}

#[test]
fn happy_path_three_nodes_appendix_b1() {
    let mut net = Net::new(3, fast_params());
    net.submit(0, vec![], 1);
    net.run(2_000_000);
    for i in 0..3 {
        assert_eq!(net.finalized[i].len(), 1, "node {i} finalized V1");
    }
    let digests: Vec<_> = net.cores.iter().map(|c| c.status().finalized_digest).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
}

/// Gossip without relay: the creator's one copy per peer is all that is sent, and a node
/// whose copy was lost still finalizes the vertex (it fetches it from a peer whose query
/// names it). With `relay` (spec 4.4) the same run sends more copies than peers.
#[test]
fn a_vertex_goes_once_to_every_peer_and_a_lost_copy_is_fetched() {
    const N: usize = 12; // above gossip_neighbours + gossip_random + 1, where the modes differ
    for relay in [false, true] {
        let mut p = fast_params();
        p.relay = relay;
        let mut net = Net::new(N, p);
        net.lose_vertices_to = Some(5);
        net.submit(0, vec![], 1);
        net.run(3_000_000);
        for i in 0..N {
            assert_eq!(net.finalized[i].len(), 1, "relay {relay}: node {i} finalized the vertex");
        }
        if relay {
            assert!(net.vertex_copies > (N - 1) as u64, "relay: {} copies", net.vertex_copies);
        } else {
            assert_eq!(net.vertex_copies, (N - 1) as u64, "one copy per peer, from the creator only");
        }
    }
}

#[test]
fn finality_needs_ancestors_final_fr_005() {
    // Checked on every Finalized action by the harness: a chain of vertices finalizes in order.
    let mut net = Net::new(4, fast_params());
    for t in 0..30 {
        net.submit((t % 4) as usize, vec![], t);
        net.run(net.now + 3_000);
    }
    net.run(net.now + 2_000_000);
    for i in 0..4 {
        assert_eq!(net.finalized[i].len(), 30);
        assert_eq!(net.cores[i].status().processing, 0);
    }
}

#[test]
fn losers_and_descendants_rejected_spec_4_5() {
    let mut net = Net::new(4, fast_params());
    let key = ConflictKey([9; 32]);
    net.submit(0, vec![key], 1);
    net.submit(1, vec![key], 2);
    net.run(net.now + 300);
    // A child of node 1's vertex, made by node 2 by hand (parents = node 1's vertex).
    let v1 = net.persisted[1].iter().find(|(v, _)| v.creator == node(1)).map(|(v, _)| v.id).expect("node 1 vertex");
    let mut child = Vertex::new_unsigned(vec![v1], b"child".to_vec(), vec![], 1, node(2));
    child.signature = TestSigner(2).sign(Domain::Vertex, child.signed_bytes());
    let child = Arc::new(child);
    for i in 0..4 {
        net.push(i, Event::Vertex { from: node(2), vertex: child.clone() });
    }
    net.run(net.now + 3_000_000);
    let v0 = net.persisted[0].iter().find(|(v, _)| v.creator == node(0) && v.conflict_keys == vec![key]).map(|(v, _)| v.id).expect("node 0 vertex");
    for i in 0..4 {
        let f0 = net.finalized[i].contains(&v0);
        let f1 = net.finalized[i].contains(&v1);
        assert!(f0 ^ f1, "exactly one member of the conflict set is final on node {i}");
        if f0 {
            assert!(net.rejected[i].contains(&v1));
            assert!(net.rejected[i].contains(&child.id), "descendant of a loser is rejected");
        } else {
            assert!(net.rejected[i].contains(&v0));
            assert!(net.finalized[i].contains(&child.id));
        }
    }
    let winners: Vec<bool> = (0..4).map(|i| net.finalized[i].contains(&v0)).collect();
    assert!(winners.windows(2).all(|w| w[0] == w[1]), "the same member wins everywhere");
}

#[test]
fn final_is_forever_and_restore_restores_it() {
    let mut net = Net::new(3, fast_params());
    for t in 0..10 {
        net.submit((t % 3) as usize, vec![], t);
        net.run(net.now + 5_000);
    }
    net.run(net.now + 2_000_000);
    let before = net.cores[1].status();
    assert_eq!(before.finalized, 10);
    // Restart node 1 from what it persisted (latest status per vertex, first-persist order).
    let mut order: Vec<Arc<Vertex>> = Vec::new();
    let mut status: HashMap<VertexId, VertexStatus> = HashMap::new();
    for (v, s) in &net.persisted[1] {
        if status.insert(v.id, *s).is_none() {
            order.push(v.clone());
        }
    }
    let nodes: Vec<NodeId> = (0..3).map(node).collect();
    let mut fresh = Core::new(Config { me: node(1), nodes, params: fast_params(), seed: 99, shard: 0, shard_count: 1 }, TestSigner(1)).expect("config");
    fresh.restore(net.now, order.iter().map(|v| (v.clone(), status[&v.id])));
    let after = fresh.status();
    assert_eq!(after.finalized, before.finalized);
    assert_eq!(after.finalized_digest, before.finalized_digest);
    for id in &net.finalized[1] {
        assert_eq!(fresh.vertex_status(id), Some(VertexStatus::Final));
    }
    // More traffic never changes a final vertex.
    net.submit(0, vec![], 100);
    net.run(net.now + 2_000_000);
    for id in net.finalized[1].clone() {
        assert_eq!(net.cores[1].vertex_status(&id), Some(VertexStatus::Final));
    }
}

#[test]
fn scoring_excludes_and_alerts_spec_3_7() {
    let mut net = Net::new(7, fast_params());
    let bad = node(6);
    net.handle(0, Event::InvalidMessage { from: bad, kind: Misbehaviour::InvalidSignature });
    assert!(!net.cores[0].is_excluded(&bad), "0.5 is not above the threshold");
    net.handle(0, Event::InvalidMessage { from: bad, kind: Misbehaviour::Malformed });
    assert!(net.cores[0].is_excluded(&bad));
    assert!(net.alerts.contains(&(0, bad)));
    // Decay: 60 s later the peer is back (no proof was involved).
    net.now += 60_000_000;
    net.handle(0, Event::Timer);
    net.submit(0, vec![], 1);
    net.run(net.now + 10_000);
    assert!(!net.cores[0].is_excluded(&bad));
    // One timeout incident of an honest peer does not exclude it.
    net.handle(0, Event::InvalidMessage { from: node(5), kind: Misbehaviour::ExcessiveTimeouts });
    assert!(!net.cores[0].is_excluded(&node(5)));
}

/// An honest peer excluded without proof (here: two malformed frames; in the engine, the
/// timeouts of its crash) keeps answering the whole-network polls, which ask it and count its
/// answers, and returns to sampling once its score fades. The engine's shell dropped those
/// answers as unawaited (`Core::awaits_response`), so every poll timed out on the peer, the
/// timeouts kept its score at the cap, and it stayed excluded for good.
#[test]
fn an_excluded_honest_peer_keeps_answering_whole_network_polls_and_returns() {
    let mut net = Net::new(4, fast_params());
    let peer = node(3);
    net.handle(0, Event::InvalidMessage { from: peer, kind: Misbehaviour::Malformed });
    net.handle(0, Event::InvalidMessage { from: peer, kind: Misbehaviour::Malformed });
    assert!(net.cores[0].is_excluded(&peer));
    for tag in 0..12u64 {
        net.now += 5_000_000;
        net.submit(0, vec![], tag);
        net.run(net.now + 300_000);
    }
    net.run(net.now + 2_000_000);
    assert_eq!(net.finalized[0].len(), 12);
    let score = net.cores[0].peer_scores().into_iter().find(|(n, _)| *n == peer).map(|(_, s)| s.score).expect("a peer");
    assert!(!net.cores[0].is_excluded(&peer), "60 s later the peer is still excluded, score {score}");
}

#[test]
fn a_peer_excluded_without_proof_returns_within_two_half_lives() {
    use crate::peers::{SCORE_CAP, SCORE_HALF_LIFE_US};
    let mut net = Net::new(7, fast_params());
    let lagging = node(4);
    // A long burst of incidents (an honest peer answering `Unknown` while it catches up after a
    // partition heals): the score saturates instead of growing with the burst's length.
    for _ in 0..200 {
        net.handle(0, Event::InvalidMessage { from: lagging, kind: Misbehaviour::ConflictingVotes });
    }
    assert!(net.cores[0].is_excluded(&lagging));
    assert!(net.cores[0].peer_scores().iter().all(|(_, s)| s.score <= SCORE_CAP));
    // Exclusions are recomputed when polls are sampled: keep a vertex in flight.
    net.now += 2 * SCORE_HALF_LIFE_US - 1_000_000;
    net.submit(0, vec![], 1);
    net.run(net.now + 10_000);
    assert!(net.cores[0].is_excluded(&lagging), "still above the 0.25 re-entry just before");
    net.now += 2_000_000;
    net.submit(0, vec![], 2);
    net.run(net.now + 10_000);
    assert!(!net.cores[0].is_excluded(&lagging), "back within two half-lives of its last incident");
    // Proof still convicts for good.
    assert!(!net.cores[0].is_convicted(&lagging));
}

#[test]
fn score_exclusions_are_capped_at_a_third() {
    let mut net = Net::new(7, fast_params());
    for p in 1..7 {
        for _ in 0..3 {
            net.handle(0, Event::InvalidMessage { from: node(p), kind: Misbehaviour::Malformed });
        }
    }
    let excluded = (1..7).filter(|&p| net.cores[0].is_excluded(&node(p))).count();
    assert_eq!(excluded, 2, "at most (N-1)/3 peers excluded without proof");
}

#[test]
fn withholding_peer_is_excluded_and_liveness_holds_spec_3_7() {
    let mut net = Net::new(4, fast_params());
    net.mute[3] = true;
    for t in 0..20 {
        net.submit((t % 3) as usize, vec![], t);
        net.run(net.now + 20_000);
    }
    net.run(net.now + 5_000_000);
    for i in 0..3 {
        assert_eq!(net.finalized[i].len(), 20, "honest node {i} finalized everything");
        assert!(net.cores[i].is_excluded(&node(3)), "withholder excluded by {i}");
    }
}

#[test]
fn pending_buffer_fetches_missing_parents() {
    let mut net = Net::new(3, fast_params());
    // Node 0 builds a chain, then node 2 learns only the tip: it must fetch the parents.
    let mut parent = net.cores[0].genesis_id();
    let mut tip = None;
    for i in 0..5u8 {
        let mut v = Vertex::new_unsigned(vec![parent], vec![i], vec![], 1, node(0));
        v.signature = TestSigner(0).sign(Domain::Vertex, v.signed_bytes());
        let v = Arc::new(v);
        parent = v.id;
        net.handle(0, Event::Vertex { from: node(0), vertex: v.clone() });
        tip = Some(v);
    }
    let tip = tip.expect("chain");
    net.handle(2, Event::Vertex { from: node(0), vertex: tip.clone() });
    assert_eq!(net.cores[2].status().pending, 1);
    net.run(net.now + 3_000_000);
    assert_eq!(net.cores[2].vertex_status(&tip.id), Some(VertexStatus::Final));
    assert_eq!(net.cores[2].status().pending, 0);
}

#[test]
fn equivocation_is_proven_and_convicts() {
    let mut net = Net::new(4, fast_params());
    let key = ConflictKey([3; 32]);
    let g = net.cores[0].genesis_id();
    for tag in 0..2u8 {
        let mut v = Vertex::new_unsigned(vec![g], vec![tag], vec![key], 1, node(3));
        v.signature = TestSigner(3).sign(Domain::Vertex, v.signed_bytes());
        net.handle(0, Event::Vertex { from: node(3), vertex: Arc::new(v) });
    }
    assert!(net.cores[0].is_excluded(&node(3)));
    assert!(net.cores[0].peer_scores().iter().any(|(p, s)| *p == node(3) && s.convicted));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
        /// Random submission schedules with random conflicts: at most one member per set is
        /// ever final anywhere, and all nodes agree (spec 4.5; invariants asserted inside).
        #[test]
        fn random_schedules_agree(seed in 0u64..1000, n in 3usize..6, subs in proptest::collection::vec((0usize..6, 0u8..4, 0u64..20_000), 1..25)) {
            let mut net = Net::new(n, fast_params());
            let _ = seed;
            let mut keys_used: HashMap<u8, Vec<usize>> = HashMap::new();
            for (tag, (who, key, gap)) in subs.into_iter().enumerate() {
                let who = who % n;
                let keys = if key == 0 { vec![] } else {
                    // One vertex per (key, node): honest nodes never double-spend themselves.
                    let e = keys_used.entry(key).or_default();
                    if e.contains(&who) { vec![] } else { e.push(who); vec![ConflictKey([key; 32])] }
                };
                net.submit(who, keys, tag as u64);
                net.run(net.now + gap);
            }
            net.run(net.now + 5_000_000);
            let d0 = net.cores[0].status().finalized_digest;
            for i in 0..n {
                prop_assert_eq!(net.cores[i].status().processing, 0);
                prop_assert_eq!(net.cores[i].status().finalized_digest, d0);
            }
        }
    }
}

/// Regression (proptest): two conflicting submissions 100 us apart on a 3-node network must
/// resolve (spec 4.5).
#[test]
fn close_conflicting_submissions_resolve() {
    let mut net = Net::new(3, fast_params());
    net.submit(2, vec![ConflictKey([1; 32])], 0);
    net.run(net.now + 100);
    net.submit(0, vec![ConflictKey([1; 32])], 1);
    net.run(net.now + 655);
    net.run(net.now + 5_000_000);
    for i in 0..3 {
        for l in net.cores[i].debug_processing(4) {
            eprintln!("node {i}: {l}");
        }
    }
    for i in 0..3 {
        assert_eq!(net.cores[i].status().processing, 0, "node {i}");
    }
}

/// Forgetting old finals (`Params::forget_final_after_us`, what bounds a long-running node's
/// memory): a forgotten vertex still counts as final to every rule. A new vertex naming it as
/// parent is accepted and finalizes; a late spend of its conflict key loses everywhere; and
/// nothing final changes.
#[test]
fn forgotten_finals_still_count_as_final() {
    forgotten_scenario(0, 0, None);
}

/// The same with forgotten decisions handed to a store-like archive after 0.2 s
/// (`Params::archive_after_us`, what keeps memory flat over months): nothing is left in memory,
/// the answers come from the archive, and every rule still holds.
#[test]
fn archived_finals_still_count_as_final() {
    let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    forgotten_scenario(200_000, 0, Some(lookups.clone()));
    assert!(lookups.load(std::sync::atomic::Ordering::Relaxed) > 0, "the archive was consulted");
}

/// The same with a window that never passes (600 s) but a bound of one entry in memory
/// (`Params::archive_entries_max`): the oldest go to the archive once 2 s old, and every rule
/// still holds on the archive's answers. Fails if the bound is ignored (the scenario's entries
/// stay in memory) or if an entry goes before the decision could be durable.
#[test]
fn forgotten_entries_over_the_bound_go_to_the_archive_early() {
    let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    forgotten_scenario(600_000_000, 1, Some(lookups.clone()));
    assert!(lookups.load(std::sync::atomic::Ordering::Relaxed) > 0, "the archive was consulted");
    // None goes before its minimum age, whatever the bound.
    let mut f = crate::forgotten::Forgotten::default();
    for i in 0..10u8 {
        f.insert_key(ConflictKey([i; 32]), VertexId([i; 32]), 1_000_000);
    }
    f.evict(600_000_000, 1, 1_000_000 + crate::forgotten::ARCHIVE_EARLY_MIN_AGE_US - 1);
    assert_eq!((f.counts().1, f.archived_early), (10, 0), "too young to go early");
    f.evict(600_000_000, 1, 1_000_000 + crate::forgotten::ARCHIVE_EARLY_MIN_AGE_US);
    assert_eq!((f.counts().1, f.archived_early), (1, 9), "down to the bound, oldest first");
    assert_eq!(f.key_winner(&ConflictKey([0; 32])), Some(VertexId([0; 32])), "the archive answers for an early one");
}

/// A key of this shard found absent from the archive is not read again (a submission asks for
/// each key three times within milliseconds), until the window hands the key to the archive:
/// then the archive answers again. Keys of other shards are always read (their owner's store
/// gains winners at any time). Fails if a lookup is not saved, or if an archived key still
/// reads as absent (a late double spend of it would then be accepted).
#[test]
fn keys_found_absent_are_not_read_again_until_archived() {
    let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reads = || lookups.load(std::sync::atomic::Ordering::Relaxed);
    let mut f = crate::forgotten::Forgotten::default();
    f.set_archive(Box::new(CountingArchive::new(&lookups)), 0, 2);
    let mine = (0..=255u8).map(|b| ConflictKey([b; 32])).find(|k| crate::types::shard_of_key(k, 2) == 0).unwrap();
    let theirs = (0..=255u8).map(|b| ConflictKey([b; 32])).find(|k| crate::types::shard_of_key(k, 2) == 1).unwrap();
    assert_eq!(f.key_winner(&mine), None);
    assert_eq!(f.key_winner(&mine), None);
    assert_eq!(f.key_winner(&mine), None);
    assert_eq!(reads(), 1, "one archive read for three lookups of an absent key of this shard");
    assert_eq!(f.absent_counts(), (1, 2));
    assert_eq!(f.key_winner(&theirs), None);
    assert_eq!(f.key_winner(&theirs), None);
    assert_eq!(reads(), 3, "another shard's key is read every time");
    // Decided: the window answers, then the archive.
    let w = VertexId([9; 32]);
    f.insert_key(mine, w, 1_000);
    assert_eq!(f.key_winner(&mine), Some(w));
    f.evict(1, 0, 10_000);
    assert_eq!(f.counts().1, 0, "handed to the archive");
    assert_eq!(f.key_winner(&mine), Some(w), "an archived key no longer reads as absent");
    assert_eq!(f.absent_counts().0, 0);
    // Bounded: the oldest fall off.
    for i in 0..(crate::forgotten::ABSENT_KEYS_MAX as u64 + 100) {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        for salt in 0..=255u8 {
            k[31] = salt;
            if crate::types::shard_of_key(&ConflictKey(k), 2) == 0 {
                break;
            }
        }
        f.key_winner(&ConflictKey(k));
    }
    assert!(f.absent_counts().0 <= crate::forgotten::ABSENT_KEYS_MAX);
    // An archive not wholly readable yet (the engine: another shard's store not open): no miss
    // is remembered.
    let mut f = crate::forgotten::Forgotten::default();
    let before = reads();
    f.set_archive(Box::new(CountingArchive { unsettled: true, ..CountingArchive::new(&lookups) }), 0, 2);
    assert_eq!((f.key_winner(&mine), f.key_winner(&mine)), (None, None));
    assert_eq!(reads() - before, 2, "a miss of an unsettled archive is read again");
    let three: Vec<ConflictKey> = (0..=255u8).map(|b| ConflictKey([b; 32])).filter(|k| crate::types::shard_of_key(k, 2) == 0).take(3).collect();
    f.prefetch_keys(three.iter());
    assert_eq!(reads() - before, 2, "nor is a batch read for it");
}

/// A received vertex's keys are read from the archive in one batch before it joins its sets
/// (`Forgotten::prefetch_keys`): the absent ones are then answered from memory, a key the
/// archive holds still reads as won, another shard's key is not asked, and an archive that
/// cannot answer, or is not wholly readable yet, makes nothing remembered. Fails if a key of
/// the batch is read again, or if a batch answer is taken for more than `key_winner`'s.
#[test]
fn a_vertexs_keys_are_read_from_the_archive_in_one_batch() {
    let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reads = || lookups.load(std::sync::atomic::Ordering::Relaxed);
    let keys_of = |shard: u32, n: usize| (0..=255u8).map(|b| ConflictKey([b; 32])).filter(|k| crate::types::shard_of_key(k, 2) == shard).take(n).collect::<Vec<_>>();
    let (mine, theirs) = (keys_of(0, 5), keys_of(1, 1));
    let won = mine[4];
    let w = VertexId([9; 32]);
    let mut f = crate::forgotten::Forgotten::default();
    f.set_archive(Box::new(CountingArchive::new(&lookups)), 0, 2);
    f.insert_key(won, w, 1_000);
    f.evict(1, 0, 10_000);
    assert_eq!(f.counts().1, 0, "the won key is in the archive only");
    f.prefetch_keys(mine.iter().chain(theirs.iter()));
    assert_eq!(reads(), 5, "one batch of this shard's five keys (the counting archive counts each)");
    for k in &mine[..4] {
        assert_eq!(f.key_winner(k), None);
    }
    assert_eq!(reads(), 5, "the absent ones are answered from memory");
    assert_eq!(f.key_winner(&won), Some(w), "a key the archive holds still reads as won");
    assert_eq!(f.key_winner(&theirs[0]), None);
    assert_eq!(reads(), 7, "the won key and the other shard's key are read by the lookup");
    f.prefetch_keys(mine.iter());
    assert_eq!(reads(), 7, "nothing left to ask: only the won key, alone, is not batched");
    // An archive that cannot answer: nothing remembered.
    let mut f = crate::forgotten::Forgotten::default();
    f.set_archive(Box::new(CountingArchive { batch_fails: true, ..CountingArchive::new(&lookups) }), 0, 2);
    f.prefetch_keys(mine.iter());
    assert_eq!(f.absent_counts().0, 0, "a failed batch proves no absence");
}

/// A store-like archive: answers what was evicted to it, reports nothing held in memory (as
/// the engine's RocksDB archive), counts its lookups.
struct CountingArchive {
    inner: crate::MemArchive,
    lookups: Arc<std::sync::atomic::AtomicUsize>,
    /// Not wholly readable yet (the engine: another shard's store not open).
    unsettled: bool,
    /// Cannot answer a batched read (a store error).
    batch_fails: bool,
}

impl CountingArchive {
    fn new(lookups: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        CountingArchive { inner: crate::MemArchive::default(), lookups: lookups.clone(), unsettled: false, batch_fails: false }
    }
}

impl crate::DecisionArchive for CountingArchive {
    fn status(&self, id: &VertexId) -> Option<VertexStatus> {
        self.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.status(id)
    }
    fn key_winner(&self, key: &ConflictKey) -> Option<VertexId> {
        self.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.key_winner(key)
    }
    fn evicted_final(&mut self, id: VertexId) {
        self.inner.evicted_final(id);
    }
    fn evicted_rejected(&mut self, id: VertexId) {
        self.inner.evicted_rejected(id);
    }
    fn key_winners(&self, keys: &[ConflictKey]) -> Option<Vec<Option<VertexId>>> {
        if self.batch_fails {
            return None;
        }
        Some(keys.iter().map(|k| self.key_winner(k)).collect())
    }
    fn evicted_key(&mut self, key: ConflictKey, winner: VertexId) {
        self.inner.evicted_key(key, winner);
    }
    fn misses_are_stable(&self) -> bool {
        !self.unsettled
    }
}

fn forgotten_scenario(archive_after_us: u64, entries_max: usize, archive: Option<Arc<std::sync::atomic::AtomicUsize>>) {
    let mut p = fast_params();
    p.forget_final_after_us = 500_000;
    p.archive_after_us = archive_after_us;
    p.archive_entries_max = entries_max;
    let mut net = Net::new(4, p);
    if let Some(lookups) = &archive {
        for c in &mut net.cores {
            c.set_archive(Box::new(CountingArchive::new(&lookups)));
        }
    }
    let key = ConflictKey([7; 32]);
    net.submit(0, vec![key], 1);
    net.run(net.now + 1_000_000);
    let va = net.finalized[0][0];
    // Push va out of the recently-final window (fallback parents are kept a while longer).
    for t in 0..20 {
        net.submit((t % 4) as usize, vec![], 100 + t);
        net.run(net.now + 5_000);
    }
    net.run(net.now + 3_000_000);
    for i in 0..4 {
        assert!(net.finalized[i].contains(&va));
        assert!(net.cores[i].vertex(&va).is_none(), "node {i} forgot va's record");
        assert_eq!(net.cores[i].vertex_status(&va), Some(VertexStatus::Final));
        assert!(net.cores[i].contains(&va), "a forgotten id is still known (no refetch, no re-insert)");
        let (_, _, ids, keys) = net.cores[i].record_counts();
        if archive.is_some() {
            assert!(ids + keys <= entries_max, "node {i}: {ids} ids, {keys} keys still in memory");
        } else {
            assert!(ids >= 1 && keys >= 1, "node {i}: {ids} ids, {keys} keys forgotten");
        }
        assert_eq!(net.cores[i].preference(&key), Some(va));
    }
    // A vertex whose parent is the forgotten va: accepted, final everywhere.
    let mut child = Vertex::new_unsigned(vec![va], b"late child".to_vec(), vec![], net.now / 1000, node(3));
    child.signature = TestSigner(3).sign(Domain::Vertex, child.signed_bytes());
    let child = Arc::new(child);
    for i in 0..4 {
        net.push(i, Event::Vertex { from: node(3), vertex: child.clone() });
    }
    // A late double spend of va's key, by another node.
    net.submit(2, vec![key], 999);
    net.run(net.now + 3_000_000);
    let vb = net.persisted[2].iter().rev().find(|(v, _)| v.conflict_keys == vec![key] && v.id != va).map(|(v, _)| v.id).expect("node 2 created the late spend");
    for i in 0..4 {
        assert!(net.finalized[i].contains(&child.id), "node {i}: child of a forgotten final finalizes");
        assert!(net.rejected[i].contains(&vb), "node {i}: late spend of a forgotten key is rejected");
        assert!(!net.finalized[i].contains(&vb));
        assert_eq!(net.cores[i].status().processing, 0);
    }
    let digests: Vec<_> = net.cores.iter().map(|c| c.status().finalized_digest).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
}

/// An uncontested conflict set leaves the core's set map when it is decided, while its winner's
/// record is still held (`Core::decide`); the key's winner answers for it: the own client's
/// second spend is refused at submit as before, another node's late spend is rejected
/// everywhere, and the winner stays final. Fails if the set is kept until the record goes.
#[test]
fn an_uncontested_set_leaves_at_its_decision_and_late_spends_still_lose() {
    let mut p = fast_params();
    p.forget_final_after_us = 0; // records are never forgotten here
    let mut net = Net::new(4, p);
    let key = ConflictKey([9; 32]);
    net.submit(0, vec![key], 1);
    net.run(net.now + 1_000_000);
    let va = *net.finalized[0].first().expect("the spend is final");
    for i in 0..4 {
        assert!(net.finalized[i].contains(&va), "node {i}");
        assert!(net.cores[i].vertex(&va).is_some(), "node {i} still holds va's record");
        let (_, sets, _, keys) = net.cores[i].record_counts();
        assert_eq!(sets, 0, "node {i}: the decided uncontested set left ({})", net.cores[i].debug_key(&key));
        assert!(keys >= 1, "node {i}: its winner is a forgotten key");
        assert_eq!(net.cores[i].preference(&key), Some(va));
    }
    // The same client spends the key again through node 0: refused, no vertex.
    let before = net.persisted[0].len();
    let ts = net.now / 1000;
    let refused = net.cores[0].handle(net.now, Event::Submit { payload: b"again".to_vec(), conflict_keys: vec![key], client_tag: 2, timestamp_ms: ts });
    assert!(refused.is_err(), "an own second spend of a decided key is refused");
    net.drain(0);
    net.run(net.now + 100_000);
    assert!(net.persisted[0][before..].iter().all(|(v, _)| v.conflict_keys != vec![key]), "no own double spend was built");
    // Another node's late spend loses everywhere.
    net.submit(2, vec![key], 3);
    net.run(net.now + 2_000_000);
    let vb = net.persisted[2].iter().rev().find(|(v, _)| v.conflict_keys == vec![key] && v.id != va).map(|(v, _)| v.id).expect("node 2 created the late spend");
    for i in 0..4 {
        assert!(net.rejected[i].contains(&vb), "node {i}: the late spend is rejected");
        assert!(!net.finalized[i].contains(&vb));
        assert_eq!(net.cores[i].vertex_status(&va), Some(VertexStatus::Final));
        assert_eq!(net.cores[i].status().processing, 0);
    }
}
