//! Unit tests of the core against a valid-vertex flood (issue 14, hole 5): the per-creator
//! admission bound, the needs that bypass it, and what a poll asks about a flooder's tips.
//! Shares `tests.rs`'s in-memory `Net` and `tests_adversary.rs`'s helpers.

use std::sync::Arc;

use pqdag_wire::{Query, Vertex, VertexId};

use crate::tests::{fast_params, node, Net};
use crate::tests_adversary::{byz_vertex, drain, lone_core};
use crate::*;

// ------------------------------------------------------------------ vertex flood (issue 14, hole 5)

/// A chain of `n` valid flood vertices of `creator`, alternately on genesis and on its previous
/// one (the engine's `vertex-flood` attacker).
pub(crate) fn flood_chain(creator: usize, genesis: VertexId, n: u64) -> Vec<Arc<Vertex>> {
    let mut tip = genesis;
    (0..n)
        .map(|i| {
            let parent = if i % 2 == 0 { genesis } else { tip };
            let v = byz_vertex(creator, vec![parent], &i.to_le_bytes(), vec![], i);
            tip = v.id;
            v
        })
        .collect()
}

/// Hole 5 (valid-vertex flood): node 3 signs 12 000 valid vertices in 1.2 s and sends each to
/// every honest node while the 3 honest nodes submit. Each honest node holds at most
/// `CREATOR_PROCESSING_MAX` (plus what it needed) processing flood vertices, drops and strikes
/// the rest, and every honest vertex finalizes everywhere within 2 s of its submission. Before
/// the per-creator bound every flood vertex was admitted (12 000 processing at once).
#[test]
fn valid_vertex_flood_is_bounded_per_creator_and_honest_vertices_finalize() {
    let mut net = Net::new(4, fast_params());
    let g = net.cores[0].genesis_id();
    let flood = flood_chain(3, g, 12_000);
    for (i, v) in flood.iter().enumerate() {
        for to in 0..3 {
            net.seq += 1;
            net.queue.insert((100 + i as u64 * 100, net.seq), (to, Event::Vertex { from: node(3), vertex: v.clone() }));
        }
    }
    let mut max_processing = [0u64; 3];
    let mut submitted = 0u64;
    while net.now < 1_400_000 {
        if net.now >= 50_000 && net.now < 1_200_000 {
            net.submit((submitted % 3) as usize, vec![], 1_000 + submitted);
            submitted += 1;
        }
        net.run(net.now + 10_000);
        for (m, core) in max_processing.iter_mut().zip(&net.cores) {
            *m = (*m).max(core.status().processing);
        }
    }
    net.run(net.now + 2_000_000);
    let bound = u64::from(CREATOR_PROCESSING_MAX) * 2 + 200;
    for i in 0..3 {
        let s = net.cores[i].status();
        let honest_final = net.finalized[i].iter().filter(|id| net.cores[i].vertex(id).is_some_and(|v| v.creator != node(3))).count() as u64;
        assert_eq!(honest_final, submitted, "node {i}: every honest vertex final");
        assert!(max_processing[i] <= bound, "node {i}: {} processing at most (bound {bound})", max_processing[i]);
        assert!(s.creator_dropped > 0, "node {i}: the flood was cut");
        let score = net.cores[i].peer_scores().into_iter().find(|(p, _)| *p == node(3)).expect("peer").1;
        assert!(score.incidents > 0, "node {i}: the flooder got a Flooding strike");
        for j in 0..3 {
            assert!(net.cores[i].peer_scores().into_iter().find(|(p, _)| *p == node(j)).is_none_or(|(_, s)| s.incidents == 0), "node {i}: honest node {j} never struck");
        }
    }
    assert!(submitted >= 100);
}

/// Liveness of the bound: a dropped flood vertex that an honest vertex names as parent, or that
/// an honest peer queries, is still admitted; the flooder's own children and queries never
/// unlock its dropped vertices.
#[test]
fn needed_flood_vertices_bypass_the_creator_bound() {
    let mut core = lone_core(0, 4);
    let g = core.genesis_id();
    let flood = flood_chain(3, g, u64::from(CREATOR_PROCESSING_MAX) + 5);
    for v in &flood {
        core.handle(1, Event::Vertex { from: node(3), vertex: v.clone() }).expect("ok");
    }
    drain(&mut core);
    let m = CREATOR_PROCESSING_MAX as usize;
    assert_eq!(core.status().processing, CREATOR_PROCESSING_MAX as u64);
    assert_eq!(core.status().creator_dropped, 5);
    let (a, b, c, d) = (&flood[m], &flood[m + 1], &flood[m + 2], &flood[m + 3]);
    assert!(!core.contains(&a.id) && !core.contains(&d.id));
    // The flooder's own child of a dropped vertex is dropped too; so is a query by the flooder.
    let own_child = byz_vertex(3, vec![b.id], b"own", vec![], 9);
    core.handle(2, Event::Vertex { from: node(3), vertex: own_child.clone() }).expect("ok");
    let q = Query { query_id: 1, requester: node(3), ids: vec![c.id], signature: vec![] };
    core.handle(2, Event::query(node(3), q.into())).expect("ok");
    drain(&mut core);
    core.handle(3, Event::Vertex { from: node(3), vertex: c.clone() }).expect("ok");
    assert!(!core.contains(&own_child.id) && !core.contains(&c.id), "the flooder cannot unlock itself");
    // An honest vertex naming `b` (whose parent `a` was dropped too): both fetched and admitted.
    let h = byz_vertex(1, vec![b.id], b"honest", vec![], 9);
    core.handle(4, Event::Vertex { from: node(1), vertex: h.clone() }).expect("ok");
    core.handle(5, Event::VertexReply { from: node(1), vertices: vec![b.clone()] }).expect("ok");
    core.handle(6, Event::VertexReply { from: node(1), vertices: vec![a.clone()] }).expect("ok");
    assert_eq!(core.vertex_status(&h.id), Some(VertexStatus::Processing), "the honest child is in the DAG");
    assert_eq!(core.vertex_status(&a.id), Some(VertexStatus::Processing));
    // An honest peer's query makes a dropped vertex needed.
    let q = Query { query_id: 2, requester: node(2), ids: vec![d.id], signature: vec![] };
    core.handle(7, Event::query(node(2), q.into())).expect("ok");
    core.handle(8, Event::VertexReply { from: node(2), vertices: vec![d.clone()] }).expect("ok");
    // `d` waits for its dropped parent `c`, which it makes needed in turn.
    core.handle(8, Event::VertexReply { from: node(2), vertices: vec![c.clone()] }).expect("ok");
    assert_eq!(core.vertex_status(&d.id), Some(VertexStatus::Processing));
    assert_eq!(core.vertex_status(&c.id), Some(VertexStatus::Processing));
    assert_eq!(core.status().creator_bypassed, 4);
    // History sync: an id named by the flooder's own finality log stays dropped, one named by
    // an honest peer's log is admitted (`wanted_by`).
    let e = &flood[m + 4];
    assert!(!core.admits_creator(e));
    core.wanted_by(&[e.id], node(3));
    assert!(!core.admits_creator(e));
    core.wanted_by(&[e.id], node(2));
    assert!(core.admits_creator(e));
    core.handle(8, Event::VertexReply { from: node(2), vertices: vec![e.clone()] }).expect("ok");
    assert_eq!(core.vertex_status(&e.id), Some(VertexStatus::Processing));
    assert_eq!(core.status().creator_bypassed, 5);
    // Own vertices never build on the flooder's processing tips.
    let id = {
        core.handle(9, Event::Submit { payload: b"mine".to_vec(), conflict_keys: vec![], client_tag: 1, timestamp_ms: 0 }).expect("ok");
        let mut id = None;
        while let Some(a) = core.poll_action() {
            if let Action::Created { id: x, .. } = a {
                id = Some(x);
            }
        }
        id.expect("created")
    };
    let mine = core.vertex(&id).expect("held").clone();
    assert!(mine.parents.iter().all(|p| core.vertex(p).is_none_or(|v| v.creator != node(3))), "no flood parent");
}


/// Node 3 (the flooder) fills its creator bound at `core` with a chain on genesis `g`.
fn fill_bound(core: &mut Core<crate::tests::TestSigner>, g: VertexId, now: u64) {
    for v in &flood_chain(3, g, u64::from(CREATOR_PROCESSING_MAX)) {
        core.handle(now, Event::Vertex { from: node(3), vertex: v.clone() }).expect("ok");
    }
    drain(core);
}

/// A 4-node core holding the flooder's (node 3) vertex `p` in pending, waiting for its parent
/// `r` on genesis `g`, with the flooder under its bound: (core, g, r, p).
fn buffered_chain() -> (Core<crate::tests::TestSigner>, VertexId, Arc<Vertex>, Arc<Vertex>) {
    let mut core = lone_core(0, 4);
    let g = core.genesis_id();
    let r = byz_vertex(3, vec![g], b"root", vec![], 1);
    let p = byz_vertex(3, vec![r.id], b"child", vec![], 2);
    core.handle(1, Event::Vertex { from: node(3), vertex: p.clone() }).expect("ok");
    (core, g, r, p)
}

/// Each vertex is processing in `core`'s DAG.
fn assert_in_dag(core: &Core<crate::tests::TestSigner>, vs: [(&Arc<Vertex>, &str); 3]) {
    for (v, what) in vs {
        assert_eq!(core.vertex_status(&v.id), Some(VertexStatus::Processing), "the {what} is in the DAG");
    }
}

/// A flooder's vertex `p` buffered (pending) for its parent `r` before the flooder reached its
/// bound, then an honest vertex built on `p`: `r` is needed now, asked for at once from the
/// honest sender, and admitted over the bound. Before, `r` stayed needed by its own creator
/// only, every fetched copy was dropped again, and the honest vertex waited in pending
/// (`vertex-flood`, 30 nodes, seed 3: 2.2 s at 3 of 24 honest nodes).
#[test]
fn a_need_passes_down_a_buffered_flood_chain() {
    let (mut core, g, r, p) = buffered_chain();
    assert!(core.contains(&p.id), "admitted under the bound, buffered for its parent");
    fill_bound(&mut core, g, 2);
    core.handle(3, Event::VertexReply { from: node(3), vertices: vec![r.clone()] }).expect("ok");
    assert!(!core.contains(&r.id), "needed by its own creator only: dropped over the bound");
    let h = byz_vertex(1, vec![p.id], b"honest", vec![], 3);
    core.handle(4, Event::Vertex { from: node(1), vertex: h.clone() }).expect("ok");
    let mut asked = false;
    while let Some(a) = core.poll_action() {
        if let Action::RequestVertices { to, request } = a {
            asked |= to == node(1) && request.ids.contains(&r.id);
        }
    }
    assert!(asked, "the root is asked for again at once, from the honest sender");
    core.handle(5, Event::VertexReply { from: node(1), vertices: vec![r.clone()] }).expect("ok");
    assert_in_dag(&core, [(&r, "root"), (&p, "buffered child"), (&h, "honest vertex")]);
}

/// The same chain, but the honest vertex arrives while the flooder is still under its bound
/// (nothing is asked again then), and the flooder fills its bound before the root arrives:
/// the root is admitted over the bound all the same. Walking only chains already at the bound
/// left the root needed by its own creator (`sim-faults` seed 3950, N = 5: p95 1.4 s -> 4.5 s).
#[test]
fn a_need_passed_down_under_the_bound_still_admits_the_root_over_it() {
    let (mut core, g, r, p) = buffered_chain();
    let h = byz_vertex(1, vec![p.id], b"honest", vec![], 3);
    core.handle(2, Event::Vertex { from: node(1), vertex: h.clone() }).expect("ok");
    fill_bound(&mut core, g, 3);
    assert!(!core.admits_creator(&flood_chain(3, g, u64::from(CREATOR_PROCESSING_MAX) + 1)[CREATOR_PROCESSING_MAX as usize]), "the flooder is at its bound");
    core.handle(4, Event::VertexReply { from: node(1), vertices: vec![r.clone()] }).expect("ok");
    assert_in_dag(&core, [(&r, "root"), (&p, "buffered child"), (&h, "honest vertex")]);
}

/// A poll (Avalanche mode: 30 nodes, k = 20) asks about at most a creator's share
/// (`parent_share`, 16 here) of its childless processing vertices, half the oldest and half a
/// window that moves on each poll, so within a few polls every one is asked about; another
/// creator's few tips ride in every poll, and so does a flooder's tip built on another
/// creator's undecided vertex (it carries that vertex's credit). Before, every query carried
/// every flood tip (~500 at 20 flooders of 100 nodes, ~16 KB of ids).
#[test]
fn a_poll_asks_about_a_share_of_a_flooders_tips_and_all_of_them_in_turn() {
    let mut core = lone_core(0, 30);
    let g = core.genesis_id();
    let flood: Vec<Arc<Vertex>> = (0..40u64).map(|i| byz_vertex(3, vec![g], &i.to_le_bytes(), vec![], i)).collect();
    let honest: Vec<Arc<Vertex>> = (0..3u64).map(|i| byz_vertex(1, vec![g], &(100 + i).to_le_bytes(), vec![], i)).collect();
    let carrier = byz_vertex(3, vec![honest[0].id], b"on honest", vec![], 50);
    for v in flood.iter().chain(&honest).chain(std::iter::once(&carrier)) {
        let from = v.creator;
        core.handle(1, Event::Vertex { from, vertex: v.clone() }).expect("ok");
    }
    drain(&mut core);
    let mut seen = std::collections::BTreeSet::new();
    let mut polls = 0;
    let mut now = 1_000_000;
    while polls < 8 {
        now += 1_000_000; // past every poll's timeout: a new one each turn
        core.handle(now, Event::Timer).expect("ok");
        while let Some(a) = core.poll_action() {
            if let Action::SendQuery { query, .. } = a {
                polls += 1;
                let of_flooder = query.ids.iter().filter(|id| flood.iter().any(|v| v.id == **id)).count();
                assert!(of_flooder <= 16, "poll {polls}: {of_flooder} flood tips asked about");
                assert!(honest[1..].iter().all(|v| query.ids.contains(&v.id)), "poll {polls}: the honest tips ride in every poll");
                assert!(query.ids.contains(&carrier.id), "poll {polls}: the tip carrying an honest vertex rides in every poll");
                seen.extend(query.ids.iter().copied());
            }
        }
    }
    assert!(flood.iter().all(|v| seen.contains(&v.id)), "every flood tip asked about within {polls} polls");
}

/// A chain of `n` flood vertices of `creator` of the largest size: 8 transactions filling the
/// vertex's 512 KiB transaction budget (the `fat-flood` simulator strategy).
fn fat_chain(creator: usize, genesis: VertexId, n: u64) -> Vec<Arc<Vertex>> {
    let mut tip = genesis;
    (0..n)
        .map(|i| {
            let parent = if i % 2 == 0 { genesis } else { tip };
            let mut v = Vertex::with_txs(vec![parent], pqdag_wire::largest_batch(&i.to_le_bytes()), i, node(creator));
            v.signature = crate::tests::TestSigner(creator as u8).sign(Domain::Vertex, v.signed_bytes());
            tip = v.id;
            Arc::new(v)
        })
        .collect()
}

/// Fat vertices meet the byte side of the creator bound: a member sending vertices of the
/// largest size gets at most its count bound times `CREATOR_PROCESSING_VERTEX_BYTES` held
/// here (8 MiB: 15 of them), not 256 x 512 KiB = 128 MiB; the rest are dropped like any flood,
/// the shell is told to stop reading its pushes, and a needed one still gets in. Small
/// vertices of the same creator are held to the count alone (the flood test above). Fails if
/// bytes are not counted, or not released when its vertices leave.
#[test]
fn fat_vertices_are_bounded_by_bytes_per_creator() {
    let mut core = lone_core(0, 4);
    let g = core.genesis_id();
    let fat = fat_chain(3, g, 100);
    let each = fat[0].heap_bytes() as u64;
    let fit = (u64::from(CREATOR_PROCESSING_MAX) * CREATOR_PROCESSING_VERTEX_BYTES / each) as usize;
    assert!((14..18).contains(&fit), "{fit} of {each} bytes fit");
    for v in &fat[..fit] {
        assert!(core.admits_creator(v));
        core.handle(1, Event::Vertex { from: node(3), vertex: v.clone() }).expect("ok");
    }
    drain(&mut core);
    assert_eq!(core.status().processing, fit as u64);
    assert!(core.creator_over_bound(&node(3)), "the shell holds its pushes from here");
    assert!(!core.admits_creator(&fat[fit]), "the shell skips the verify");
    for v in &fat[fit..] {
        core.handle(2, Event::Vertex { from: node(3), vertex: v.clone() }).expect("ok");
    }
    drain(&mut core);
    assert_eq!(core.status().processing, fit as u64, "nothing past the bytes admitted");
    assert_eq!(core.status().creator_dropped, (100 - fit) as u64);
    let held: u64 = core.held_vertices().filter(|v| v.creator == node(3)).map(|v| v.heap_bytes() as u64).sum();
    assert!(held <= u64::from(CREATOR_PROCESSING_MAX) * CREATOR_PROCESSING_VERTEX_BYTES, "{held} bytes held");
    // A needed one (an honest peer queried it) still gets in.
    let d = &fat[fit];
    let q = Query { query_id: 1, requester: node(2), ids: vec![d.id], signature: vec![] };
    core.handle(3, Event::query(node(2), q.into())).expect("ok");
    core.handle(4, Event::VertexReply { from: node(2), vertices: vec![d.clone()] }).expect("ok");
    assert_eq!(core.vertex_status(&d.id), Some(VertexStatus::Processing));
    assert_eq!(core.status().creator_bypassed, 1);
}

/// The byte count follows vertices out: a 4-node net where one member creates fat vertices
/// now and then decides them all, and every node's per-creator bytes return to zero with its
/// count (the `debug_assert`s in `Flood::left` check each step).
#[test]
fn creator_bytes_are_released_when_vertices_are_decided() {
    let mut net = Net::new(4, fast_params());
    let g = net.cores[0].genesis_id();
    let fat = fat_chain(3, g, 6);
    for v in &fat {
        for i in 0..3 {
            net.push(i, Event::Vertex { from: node(3), vertex: v.clone() });
        }
        net.run(net.now + 200_000);
    }
    for t in 0..8u64 {
        net.submit((t % 4) as usize, vec![], 1 + t);
        net.run(net.now + 200_000);
    }
    net.run(net.now + 2_000_000);
    for i in 0..4 {
        for v in &fat {
            assert_eq!(net.cores[i].vertex_status(&v.id), Some(VertexStatus::Final), "node {i}");
        }
        assert_eq!(net.cores[i].status().processing, 0, "node {i}");
        assert_eq!(net.cores[i].flood.bytes(&node(3)), 0, "node {i}: bytes released");
        assert!(!net.cores[i].creator_over_bound(&node(3)));
    }
}

/// Several members flooding fat vertices share one pool (`Core::creator_bound` counts members
/// heavy by bytes as well as by count): three of ten hold at most
/// `HEAVY_CREATORS_PROCESSING_MAX` units of bytes together (16 MiB, plus a vertex each), not
/// three times the 8 MiB each would keep alone (24 MiB). Fails if heavy members are counted by
/// count only (fat vertices are few).
#[test]
fn fat_flooders_share_one_byte_pool() {
    let mut core = lone_core(0, 10);
    let g = core.genesis_id();
    let chains: Vec<Vec<Arc<Vertex>>> = (7..10).map(|c| fat_chain(c, g, 40)).collect();
    for i in 0..40 {
        for (c, chain) in chains.iter().enumerate() {
            core.handle(1 + i as u64, Event::Vertex { from: node(7 + c), vertex: chain[i].clone() }).expect("ok");
        }
    }
    drain(&mut core);
    let held = |c: usize| core.held_vertices().filter(|v| v.creator == node(c)).map(|v| v.heap_bytes() as u64).sum::<u64>();
    let each: Vec<u64> = (7..10).map(held).collect();
    let total: u64 = each.iter().sum();
    let one = chains[0][0].heap_bytes() as u64;
    let pool = u64::from(crate::flood::HEAVY_CREATORS_PROCESSING_MAX) * CREATOR_PROCESSING_VERTEX_BYTES;
    assert!(total <= pool + 3 * one, "{each:?} bytes held, {total} in all, pool {pool}");
    assert!(each.iter().all(|b| *b >= 4 * one), "each still gets a share: {each:?}");
}
