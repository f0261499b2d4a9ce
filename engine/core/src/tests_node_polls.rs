//! Unit tests of the node poll (`node_polls`): with several shards, the running shard asks one signed
//! query per peer for the ids of every shard, and answers one signed response per query.

use std::sync::Arc;

use pqdag_wire::{Query, Response, Vertex, VertexId, Vote};

use crate::tests::{fast_params, node, TestSigner};
use crate::tests_adversary::byz_vertex;
use crate::*;

/// Shard `shard` of 2 of node `me` in a 4-node network (whole-network polls: k = 3).
fn shard_of(me: usize, shard: u32) -> Core<TestSigner> {
    let cfg = Config { me: node(me), nodes: (0..4).map(node).collect(), params: fast_params(), seed: 1, shard, shard_count: 2 };
    Core::new(cfg, TestSigner(me as u8)).expect("core")
}

/// A vertex of node 1 on genesis owned by shard `shard` of 2.
fn vertex_on(shard: u32, tag: &str) -> Arc<Vertex> {
    let genesis = shard_of(0, 0).genesis_id();
    (0u32..)
        .map(|i| byz_vertex(1, vec![genesis], format!("{tag}{i}").as_bytes(), vec![], 1))
        .find(|v| shard_of_vertex(&v.id, 2) == shard)
        .expect("a vertex of that shard")
}

fn drain<S: Signer>(core: &mut Core<S>) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

fn to_shard(actions: &[Action]) -> Vec<(u32, ShardMsg)> {
    actions.iter().filter_map(|a| if let Action::ToShard { shard, msg } = a { Some((*shard, msg.clone())) } else { None }).collect()
}

fn queries(actions: &[Action]) -> Vec<(Vec<NodeId>, Arc<Query>)> {
    actions.iter().filter_map(|a| if let Action::SendQuery { to, query } = a { Some((to.clone(), query.clone())) } else { None }).collect()
}

fn response(from: usize, q: &Query, vote: Vote) -> Response {
    Response { query_id: q.query_id, responder: node(from), ids_digest: q.ids_digest(), votes: vec![vote as u8; q.ids.len()], round: 0, lock_ages: Vec::new(), signature: Vec::new() }
}

/// The shards take turns running the node's polls, each asking about every shard's ids: shard 1
/// offers its ids to shard 0, whose query (one per peer) asks about both; at the close, shard 1
/// gets the votes on its ids, and with Yes from every peer its vertex gains the round (its
/// credit rules run there, as before).
#[test]
fn a_node_poll_asks_for_every_shard_and_hands_each_its_votes() {
    let (mut s0, mut s1) = (shard_of(0, 0), shard_of(0, 1));
    let (a, b) = (vertex_on(0, "a"), vertex_on(1, "b"));
    s0.handle(10, Event::Vertex { from: node(1), vertex: a.clone() }).expect("vertex");
    s1.handle(10, Event::Vertex { from: node(1), vertex: b.clone() }).expect("vertex");
    drain(&mut s0);
    let t = 10 + fast_params().poll_interval_us.max(fast_params().poll_min_age_us) + 1;
    s1.handle(t, Event::Timer).expect("timer");
    let out1 = drain(&mut s1);
    let own = queries(&out1);
    assert!(own.iter().all(|(_, q)| q.query_id & 0xff == 1 && q.ids == vec![b.id]), "shard 1's turn, before any offer: {own:?}");
    let offers = to_shard(&out1);
    assert!(matches!(offers.as_slice(), [(0, ShardMsg::PollIds { shard: 1, ids })] if ids == &vec![b.id]), "{offers:?}");
    s0.handle(t, Event::FromShards(offers.into_iter().map(|(_, m)| m).collect())).expect("offer");
    let out0 = drain(&mut s0);
    assert!(queries(&out0).len() <= 1);
    let t = t + fast_params().poll_interval_us;
    let out0 = if queries(&out0).is_empty() { s0.handle(t, Event::Timer).expect("timer"); drain(&mut s0) } else { out0 };
    let qs = queries(&out0);
    assert_eq!(qs.len(), 1, "one query for the node");
    let (to, q) = &qs[0];
    assert_eq!(to.len(), 3, "every peer");
    assert_eq!(q.query_id & 0xff, 0, "asked by shard 0");
    assert_eq!(q.ids, vec![a.id, b.id], "shard 0's ids, then shard 1's");
    for p in 1..4 {
        s0.handle(t + 100, Event::Response { from: node(p), response: response(p, q, Vote::Yes) }).expect("response");
    }
    s0.handle(t + 5_000, Event::Timer).expect("timer");
    let parts: Vec<PollPart> = to_shard(&drain(&mut s0)).into_iter().filter_map(|(s, m)| if let ShardMsg::PollClosed(p) = m { assert_eq!(s, 1); Some(*p) } else { None }).collect();
    assert_eq!(parts.len(), 1, "shard 1's part");
    assert_eq!(parts[0].len(), 1);
    let before = s1.confidence(&b.id);
    s1.handle(t + 5_100, Event::FromShard(ShardMsg::PollClosed(Box::new(parts[0].clone())))).expect("part");
    let rounds = s1.debug_processing(4);
    assert!(rounds.iter().any(|l| l.starts_with(&format!("{} succ 1", b.id))), "shard 1 credited its vertex: {rounds:?} (confidence before {before:?})");
}

/// The answering side: a query spanning both shards waits at shard 0 for shard 1's votes and
/// is answered once, signed once, with every vote in query order; a shard that never answers
/// costs `Unknown` votes after half a query timeout, not a lost answer.
#[test]
fn a_query_spanning_shards_is_answered_once_with_every_shards_votes() {
    let (mut s0, mut s1) = (shard_of(2, 0), shard_of(2, 1));
    let (a, b) = (vertex_on(0, "a"), vertex_on(1, "b"));
    s0.handle(10, Event::Vertex { from: node(1), vertex: a.clone() }).expect("vertex");
    s1.handle(10, Event::Vertex { from: node(1), vertex: b.clone() }).expect("vertex");
    drain(&mut s0);
    drain(&mut s1);
    let unknown = VertexId([9; 32]);
    let mut q = Query { query_id: 7 << 8, requester: node(0), ids: vec![b.id, a.id, unknown], signature: Vec::new() };
    q.signature = TestSigner(0).sign(Domain::Query, &q.signed_bytes());
    let digest = q.ids_digest();
    s0.handle(20, Event::Query { from: node(0), query: Arc::new(q.clone()), ids_digest: digest }).expect("query");
    let out0 = drain(&mut s0);
    assert!(!out0.iter().any(|a| matches!(a, Action::SendResponse { .. })), "no answer before shard 1 voted");
    let asks = to_shard(&out0);
    let (gather, ids) = match asks.iter().find_map(|(s, m)| if let (1, ShardMsg::VoteRequest { gather, reply: 0, requester, ids }) = (s, m) { assert_eq!(*requester, node(0)); Some((*gather, ids.clone())) } else { None }) {
        Some(x) => x,
        None => panic!("shard 1 asked: {asks:?}"),
    };
    s1.handle(21, Event::FromShard(ShardMsg::VoteRequest { gather, reply: 0, requester: node(0), ids })).expect("request");
    let votes = to_shard(&drain(&mut s1));
    assert!(matches!(votes.as_slice(), [(0, ShardMsg::Votes { .. })]), "{votes:?}");
    s0.handle(22, Event::FromShards(votes.into_iter().map(|(_, m)| m).collect())).expect("votes");
    let answers: Vec<Response> = drain(&mut s0).into_iter().filter_map(|a| if let Action::SendResponse { response, .. } = a { Some(response) } else { None }).collect();
    assert_eq!(answers.len(), 1);
    let r = &answers[0];
    assert_eq!((r.query_id, r.ids_digest), (q.query_id, digest));
    assert_eq!(r.signature, TestSigner(2).sign(Domain::Response, &r.signed_bytes()), "signed by the node");
    let v: Vec<Vote> = r.votes.iter().map(|&b| Vote::from_u8(b).expect("vote")).collect();
    assert!(v[0].is_yes() && v[1].is_yes(), "both shards' vertices: {v:?}");
    assert_eq!(v[2], Vote::Unknown);

    // Shard 1 silent: the answer leaves at the bound, its votes `Unknown`.
    let wait = fast_params().query_timeout_us / GATHER_WAIT_DIVISOR;
    let mut q2 = q.clone();
    q2.query_id = 8 << 8;
    s0.handle(30, Event::Query { from: node(0), query: Arc::new(q2), ids_digest: digest }).expect("query");
    drain(&mut s0);
    assert!(s0.poll_timeout().is_some_and(|t| t <= 30 + wait), "the bound is a timer");
    s0.handle(30 + wait - 1, Event::Timer).expect("timer");
    assert!(!drain(&mut s0).iter().any(|a| matches!(a, Action::SendResponse { .. })), "held until the bound");
    s0.handle(30 + wait, Event::Timer).expect("timer");
    let late: Vec<Response> = drain(&mut s0).into_iter().filter_map(|a| if let Action::SendResponse { response, .. } = a { Some(response) } else { None }).collect();
    assert_eq!(late.len(), 1);
    assert_eq!(Vote::from_u8(late[0].votes[0]), Some(Vote::Unknown), "shard 1's id");
    assert!(Vote::from_u8(late[0].votes[1]).is_some_and(|v| v.is_yes()), "shard 0's own");
}

/// A peer that keeps asking while the other shard is slow holds at most
/// `GATHERS_PER_PEER_MAX` queries at shard 0: each one past it answers that peer's oldest at
/// once (with what it has), and another peer's queries still wait their turn.
#[test]
fn a_peer_holds_at_most_its_share_of_waiting_queries() {
    let mut s0 = shard_of(2, 0);
    let (a, b) = (vertex_on(0, "a"), vertex_on(1, "b"));
    s0.handle(10, Event::Vertex { from: node(1), vertex: a.clone() }).expect("vertex");
    drain(&mut s0);
    let ask = |s0: &mut Core<TestSigner>, from: usize, n: u64| {
        let mut q = Query { query_id: n << 8, requester: node(from), ids: vec![a.id, b.id], signature: Vec::new() };
        q.signature = TestSigner(from as u8).sign(Domain::Query, &q.signed_bytes());
        let digest = q.ids_digest();
        s0.handle(20, Event::Query { from: node(from), query: Arc::new(q), ids_digest: digest }).expect("query");
        drain(s0).into_iter().filter_map(|a| if let Action::SendResponse { to, response } = a { Some((to, response.query_id >> 8)) } else { None }).collect::<Vec<_>>()
    };
    let cap = u64::from(GATHERS_PER_PEER_MAX);
    for n in 0..cap {
        assert!(ask(&mut s0, 0, n).is_empty(), "query {n} waits for shard 1");
    }
    assert!(ask(&mut s0, 1, 1000).is_empty(), "another peer's query waits too");
    assert_eq!(ask(&mut s0, 0, cap), vec![(node(0), 0)], "the flooder's oldest is answered");
    assert_eq!(ask(&mut s0, 0, cap + 1), vec![(node(0), 1)]);
}
