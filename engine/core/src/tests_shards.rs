//! Unit tests of the cross-shard set protocol on one core (S > 1): what a set's owner shard
//! tells the shards holding its members.

use pqdag_wire::{ConflictKey, VertexId};

use crate::tests::{fast_params, node, TestSigner};
use crate::*;

/// Shard 0 of `shards` in a 4-node network.
fn shard0(shards: u32) -> Core<TestSigner> {
    let cfg = Config {
        me: node(0),
        nodes: (0..4).map(node).collect(),
        params: fast_params(),
        seed: 1,
        shard: 0,
        shard_count: shards,
    };
    Core::new(cfg, TestSigner(0)).expect("core")
}

/// A key owned by shard 0.
fn key0(shards: u32) -> ConflictKey {
    (0u8..=255)
        .map(|b| ConflictKey([b; 32]))
        .find(|k| shard_of_key(k, shards) == 0)
        .expect("a key of shard 0")
}

fn join(
    core: &mut Core<TestSigner>,
    key: ConflictKey,
    member: VertexId,
    creator: usize,
    owner: u32,
) {
    core.handle(
        10,
        Event::FromShard(ShardMsg::Join {
            key,
            member,
            creator: node(creator),
            owner,
        }),
    )
    .expect("join");
}

/// The decisions `core` sent to shard `to` about `key`.
fn decisions_to(core: &mut Core<TestSigner>, to: u32, key: ConflictKey) -> Vec<VertexId> {
    let mut out = Vec::new();
    while let Some(a) = core.poll_action() {
        if let Action::ToShard {
            shard,
            msg:
                ShardMsg::Preference {
                    key: k,
                    preferred,
                    decided: true,
                    ..
                },
        } = a
        {
            if shard == to && k == key {
                out.push(preferred);
            }
        }
    }
    out
}

fn id(b: u8) -> VertexId {
    VertexId([b; 32])
}

/// An equivocator's third member on a key is set aside; when its owner is another shard, that
/// shard must still learn the decision (found by `sim-faults` seed 60: its owner was told
/// nothing, and the vertex stayed processing at one node, rejected everywhere else).
#[test]
fn a_set_aside_member_on_another_shard_learns_the_decision() {
    let mut core = shard0(3);
    let key = key0(3);
    join(&mut core, key, id(1), 3, 1);
    join(&mut core, key, id(2), 3, 1);
    join(&mut core, key, id(9), 2, 1);
    join(&mut core, key, id(3), 3, 2); // the creator's third: set aside, owned by shard 2
    let _ = decisions_to(&mut core, 2, key);
    core.handle(
        10,
        Event::FromShard(ShardMsg::Decide { key, winner: id(9) }),
    )
    .expect("decide");
    assert_eq!(
        decisions_to(&mut core, 2, key),
        vec![id(9)],
        "shard 2 holds a set-aside member: it must learn the winner"
    );
}

/// A set-aside member that arrives after the decision: its owner learns the winner at once.
#[test]
fn a_late_set_aside_member_on_another_shard_learns_the_decision() {
    let mut core = shard0(2);
    let key = key0(2);
    join(&mut core, key, id(1), 3, 1);
    join(&mut core, key, id(2), 3, 1);
    join(&mut core, key, id(9), 2, 1);
    core.handle(
        10,
        Event::FromShard(ShardMsg::Decide { key, winner: id(9) }),
    )
    .expect("decide");
    let _ = decisions_to(&mut core, 1, key);
    join(&mut core, key, id(3), 3, 1);
    assert_eq!(
        decisions_to(&mut core, 1, key),
        vec![id(9)],
        "the late member's shard must learn the winner"
    );
}

/// Shard 0 takes every client submission (as in the node) and hands every other closed batch
/// to shard 1 to build: each shard builds, owns and signs its vertices (signing where batches
/// close made shard 0 sign every vertex of the node, issue 17), and builds them on its own
/// DAG, so a vertex's parents live on its shard and polls credit it through its children.
#[test]
fn each_shard_builds_signs_and_owns_a_share_of_the_batches() {
    let shards = 2;
    let mut s0 = shard0(shards);
    let cfg = Config { me: node(0), nodes: (0..4).map(node).collect(), params: fast_params(), seed: 1, shard: 1, shard_count: shards };
    let mut s1 = Core::new(cfg, TestSigner(0)).expect("core");
    let mut now = 1_000;
    let (mut built, mut handed) = ([0usize; 2], 0);
    let mut sent: Vec<(u32, std::sync::Arc<pqdag_wire::Vertex>)> = Vec::new();
    for tag in 0..32u64 {
        // Past the linger: an idle batch closes at once.
        now += 1_000_000;
        let ts = now / 1000;
        s0.handle(now, Event::Submit { payload: tag.to_le_bytes().to_vec(), conflict_keys: vec![], client_tag: tag, timestamp_ms: ts }).expect("submit");
        let mut builds = Vec::new();
        while let Some(a) = s0.poll_action() {
            match a {
                Action::ToShard { shard: 1, msg: m @ ShardMsg::Build { .. } } => builds.push(m),
                Action::ToShard { msg: ShardMsg::Adopt { .. }, .. } => panic!("a built vertex is owned by its builder"),
                Action::SendVertex { vertex, .. } => sent.push((0, vertex)),
                _ => {}
            }
        }
        for m in builds {
            handed += 1;
            s1.handle(now, Event::FromShard(m)).expect("build");
            while let Some(a) = s1.poll_action() {
                if let Action::SendVertex { vertex, .. } = a {
                    sent.push((1, vertex));
                }
            }
        }
    }
    assert_eq!(handed, 16, "every other batch is handed to shard 1");
    let mut seen = std::collections::HashSet::new();
    for (builder, v) in &sent {
        if !seen.insert(v.id) {
            continue;
        }
        built[*builder as usize] += 1;
        assert_eq!(shard_of_vertex(&v.id, shards), *builder, "the builder owns what it builds");
        assert_eq!(v.signature, TestSigner(0).sign(Domain::Vertex, v.signed_bytes()), "signed by its builder");
        let g = crate::genesis().id;
        assert!(v.parents.iter().all(|p| shard_of_vertex(p, shards) == *builder || *p == g), "parents from the builder's own DAG");
    }
    assert_eq!(built, [16, 16], "the batches are built half on each shard");
}

/// The fallback when no timestamp gives an id the builder owns: the vertex reaches its owner
/// unsigned (`ShardMsg::Adopt`), which signs it before it stores or sends it.
#[test]
fn a_vertex_adopted_unsigned_is_signed_by_its_owner() {
    let shards = 2;
    let cfg = Config { me: node(0), nodes: (0..4).map(node).collect(), params: fast_params(), seed: 1, shard: 1, shard_count: shards };
    let mut s1 = Core::new(cfg, TestSigner(0)).expect("core");
    let mut v = pqdag_wire::Vertex::new_unsigned(vec![crate::genesis().id], b"adopted".to_vec(), vec![], 7, node(0));
    assert!(v.grind_timestamp(256, |id| shard_of_vertex(id, shards) == 1), "one id in two is shard 1's");
    assert!(v.timestamp_ms >= 7 && v.compute_id() == v.id, "the id covers the moved timestamp");
    let id = v.id;
    let tags = crate::batch::OwnTags { tags: vec![5], generations: vec![0] };
    s1.handle(1_000, Event::FromShard(ShardMsg::Adopt { vertex: std::sync::Arc::new(v), tags })).expect("adopt");
    let held = s1.vertex(&id).expect("shard 1 holds the vertex it adopted");
    assert_eq!(held.signature, TestSigner(0).sign(Domain::Vertex, held.signed_bytes()), "signed by its owner");
}

/// Cross-shard messages handed over as one event (`Event::FromShards`, what the node does with
/// a turn's mesh messages) act exactly as the same messages one event each, in order.
#[test]
fn a_batch_of_shard_messages_acts_as_the_messages_one_by_one() {
    let key = key0(3);
    let msgs = || {
        vec![
            ShardMsg::Join { key, member: id(1), creator: node(3), owner: 1 },
            ShardMsg::Join { key, member: id(2), creator: node(3), owner: 1 },
            ShardMsg::Join { key, member: id(9), creator: node(2), owner: 1 },
            ShardMsg::Join { key, member: id(3), creator: node(3), owner: 2 },
            ShardMsg::Decide { key, winner: id(9) },
        ]
    };
    let drain = |core: &mut Core<TestSigner>| {
        let mut out = Vec::new();
        while let Some(a) = core.poll_action() {
            out.push(format!("{a:?}"));
        }
        out
    };
    let mut one_by_one = shard0(3);
    for m in msgs() {
        one_by_one.handle(10, Event::FromShard(m)).expect("message");
    }
    let mut batched = shard0(3);
    batched.handle(10, Event::FromShards(msgs())).expect("batch");
    let (a, b) = (drain(&mut one_by_one), drain(&mut batched));
    assert!(a.iter().any(|x| x.contains("decided: true")), "the decision was sent: {a:?}");
    assert_eq!(a, b);
}

/// A received vertex's missing parents are marked needed only when this shard owns them: a
/// parent owned by the other shard arrives there (this shard learns its status), so a mark
/// here would never be met (`needed_ids` grew by ~120 a second on two shards at 2 000/s).
#[test]
fn only_this_shards_missing_parents_are_marked_needed() {
    use crate::tests_adversary::byz_vertex;
    let mut core = shard0(2);
    let on = |shard: u32, tag: &str| {
        (0u32..)
            .map(|i| byz_vertex(1, vec![core_genesis()], format!("{tag}{i}").as_bytes(), vec![], 1))
            .find(|v| shard_of_vertex(&v.id, 2) == shard)
            .expect("a vertex of that shard")
    };
    let (remote, local) = (on(1, "r"), on(0, "l"));
    let child = (0u32..)
        .map(|i| byz_vertex(1, vec![remote.id, local.id], format!("c{i}").as_bytes(), vec![], 2))
        .find(|v| shard_of_vertex(&v.id, 2) == 0)
        .expect("a child on shard 0");
    core.handle(20, Event::Vertex { from: node(1), vertex: child }).expect("vertex");
    assert_eq!(core.fetch_state_counts().1, 1, "only the local parent is needed here");
}

fn core_genesis() -> VertexId {
    shard0(2).genesis_id()
}

/// The stop-time diagnosis names each processing vertex with its streak and its sets' state
/// (the node logs it when it stops with vertices undecided).
#[test]
fn the_diagnosis_names_a_processing_vertex_and_its_set() {
    let mut core = shard0(1);
    let key = ConflictKey([7; 32]);
    core.handle(10, Event::Submit { payload: b"p".to_vec(), conflict_keys: vec![key], client_tag: 1, timestamp_ms: 1 }).expect("submit");
    core.handle(1_000_000, Event::Timer).expect("timer: the batch closes");
    let lines = core.diagnose_processing(8);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("successes 0") && lines[0].contains("key 07070707: members ["), "{}", lines[0]);
    // What a stall of a keyed vertex in a whole-network poll turns on (docs/benchmark.md, the
    // 4 x 2 crash at 10 ms polls): its fresh quorum, and each set's lock round and acks.
    assert!(lines[0].contains("lock_quorum false") && lines[0].contains("acks_due 0"), "{}", lines[0]);
}

/// The preferences `core` sent about `key`: (shard, preferred, locked, ack).
fn preferences_sent(core: &mut Core<TestSigner>, key: ConflictKey) -> Vec<(u32, VertexId, bool, bool)> {
    let mut out = Vec::new();
    while let Some(a) = core.poll_action() {
        if let Action::ToShard { shard, msg: ShardMsg::Preference { key: k, preferred, decided: false, locked, ack, .. } } = a {
            if k == key {
                out.push((shard, preferred, locked, ack));
            }
        }
    }
    out
}

/// A set whose preference moves from a member of shard 1 to a member of shard 2: shard 1 is
/// told first and must acknowledge before shard 2 learns that its member is preferred. Told
/// both at once (as before), shard 1 kept voting Yes on its member for a mesh hop while shard
/// 2 already voted Yes on the other: one node voting for two members of one set, which the
/// quorum locks' safety argument excludes (`sim-faults --shards 2` with a modelled mesh delay:
/// 140 of 200 seeds broke the simulator's one-preference-per-set check).
#[test]
fn a_preference_moves_to_another_shards_member_only_after_the_old_one_is_revoked() {
    let mut core = shard0(3);
    let key = key0(3);
    join(&mut core, key, id(1), 2, 1);
    join(&mut core, key, id(2), 3, 2);
    assert!(
        preferences_sent(&mut core, key).iter().all(|&(_, p, _, ack)| p == id(1) && !ack),
        "the lower id is preferred first, nothing to revoke"
    );
    // A quorum for id(2): the set locks on it and prefers it.
    let success = ShardMsg::Success { key, member: id(2), confidence: 1.0, snowball: true, peer_yes: 3, quorum: true, peer_locked: 0, quorum_round: 0, claim_round: None };
    core.handle(20, Event::FromShard(success)).expect("success");
    assert_eq!(preferences_sent(&mut core, key), vec![(1, id(2), true, true)], "only the old member's shard is told, and must acknowledge");
    core.handle(30, Event::FromShard(ShardMsg::PreferenceAck { key })).expect("ack");
    assert_eq!(preferences_sent(&mut core, key), vec![(2, id(2), true, false)], "the new member's shard learns it once revoked");
}

/// The member's shard acknowledges a revocation after applying it, to the set's owner.
#[test]
fn a_revocation_is_acknowledged_to_the_sets_owner() {
    let cfg = Config { me: node(0), nodes: (0..4).map(node).collect(), params: fast_params(), seed: 1, shard: 1, shard_count: 3 };
    let mut s1 = Core::new(cfg, TestSigner(0)).expect("core");
    let key = key0(3);
    s1.handle(10, Event::FromShard(ShardMsg::Preference { key, preferred: id(2), decided: false, locked: true, lock_round: 0, ack: true })).expect("preference");
    let mut acks = Vec::new();
    while let Some(a) = s1.poll_action() {
        if let Action::ToShard { shard, msg: ShardMsg::PreferenceAck { key: k } } = a {
            acks.push((shard, k));
        }
    }
    assert_eq!(acks, vec![(0, key)]);
    assert!(!s1.prefers_in_set(&key, &id(1)) && s1.prefers_in_set(&key, &id(2)));
}

/// A quorum result that reaches the set's shard after the set moved to another member (it
/// counted this node's own Yes as cast on the member's shard a mesh hop earlier) does not lock
/// the set back on the old member: this node may have voted for the new preference since, and
/// would sit in two quorums. Peers alone at the release threshold still lock it.
#[test]
fn a_stale_quorum_does_not_lock_a_set_back_on_a_member_it_left() {
    let mut core = shard0(3);
    let key = key0(3);
    join(&mut core, key, id(1), 2, 1);
    join(&mut core, key, id(2), 3, 2);
    let success = |member: u8, snowball: bool, peer_yes: u32, quorum: bool| ShardMsg::Success { key, member: id(member), confidence: 1.0, snowball, peer_yes, quorum, peer_locked: 0, quorum_round: 0, claim_round: None };
    // Two Snowball successes of id(2) (never a quorum): the set moves to it (the coin of a
    // whole-network set may hold the first move back).
    for _ in 0..16 {
        core.handle(20, Event::FromShard(success(2, true, 2, false))).expect("success");
    }
    assert_eq!(core.preference(&key), Some(id(2)));
    // A quorum of id(1) with two peers' Yes (q = 3 with this node's own, t = 3 peers).
    core.handle(30, Event::FromShard(success(1, false, 2, true))).expect("stale quorum");
    assert_eq!(core.preference(&key), Some(id(2)), "locked back on the member it left");
    // Three peers' Yes: the release threshold, enough on its own.
    core.handle(40, Event::FromShard(success(1, false, 3, true))).expect("quorum of peers");
    assert_eq!(core.preference(&key), Some(id(1)));
    assert!(core.debug_key(&key).contains(&format!("qlock Some({:?})", id(1))), "{}", core.debug_key(&key));
}

/// A node's shards built from one `Roster` share its membership tables, sample the same peers
/// as cores built with `Core::new`, and a roster of another node (or of a node not in the
/// membership) is refused.
#[test]
fn shards_share_one_roster_and_another_nodes_roster_is_refused() {
    let nodes: Vec<_> = (0..4).map(node).collect();
    let roster = Roster::new(&nodes, node(0)).expect("a member's roster");
    let cfg = |shard| Config { me: node(0), nodes: Vec::new(), params: fast_params(), seed: 1, shard, shard_count: 2 };
    let a = Core::with_roster(cfg(0), TestSigner(0), &roster).expect("shard 0");
    let b = Core::with_roster(cfg(1), TestSigner(0), &roster).expect("shard 1");
    assert!(std::sync::Arc::ptr_eq(&a.peers.index, &b.peers.index), "one index for the node");
    assert!(std::sync::Arc::ptr_eq(&a.peers.ids, &b.peers.ids), "one peer list for the node");
    let own = shard0(2);
    assert_eq!(&a.peers.ids[..], &own.peers.ids[..], "the same peers, in the same order, as `Core::new`");
    assert_eq!(a.peers.me_pos, own.peers.me_pos);
    assert_eq!(a.params().sample_size, own.params().sample_size, "k scaled to the same membership");
    let other = Roster::new(&nodes, node(1)).expect("node 1's roster");
    assert!(Core::with_roster(cfg(0), TestSigner(0), &other).is_err(), "node 1's roster for node 0");
    assert!(Roster::new(&nodes, node(9)).is_err(), "a node outside the membership");
}
