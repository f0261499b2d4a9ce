//! The red team: every Byzantine strategy at a third of a 7-node cluster must leave safety
//! intact (no conflicting decisions, no honest node convicted or banned by an honest one), and
//! the checker must catch the harm it claims to (a deliberately broken shell IS caught). A
//! failure names the seed and strategy: rerun `sim --nodes 7 --seed S --byzantine 0.33
//! --strategy NAME --conflict-ratio 0.1 --duration 2` to reproduce it.
//!
//! `replay_queries_is_safe`, `set_spam_thirty_nodes_is_safe`, `mixed_is_safe` and
//! `vote_unknown_quarter_is_live` failed against the core before issue 14's fixes (framing by
//! replay, arrival-order fork at the set cap, `Unknown` voters stalling finality).

use pqdag_sim::{run, Partition, Report, SimConfig, Strategy};

fn third(strategy: Strategy, seed: u64) -> SimConfig {
    let mut c = SimConfig::new(7, seed, 2.0);
    c.byzantine = 0.33;
    c.strategy = strategy;
    c.conflict_ratio = 0.1;
    c.liveness_budget_s = 10.0;
    c
}

fn safe(strategy: Strategy) -> Report {
    let r = run(third(strategy, 1)).expect("config");
    assert_eq!(r.byzantine_nodes, 2);
    assert_eq!(r.honest_convicted, 0, "{}: honest convicted", strategy.name());
    assert_eq!(r.honest_banned, 0, "{}: honest banned", strategy.name());
    assert_eq!(r.safety_violations, 0, "{} seed {}: {:?}", strategy.name(), r.seed, r.first_violation);
    r
}

#[test]
fn flip_votes_is_safe() {
    safe(Strategy::FlipVotes);
}

#[test]
fn equivocate_is_safe() {
    safe(Strategy::Equivocate);
}

#[test]
fn withhold_is_safe() {
    safe(Strategy::Withhold);
}

#[test]
fn invalid_signatures_is_safe() {
    safe(Strategy::InvalidSignatures);
}

#[test]
fn malformed_is_safe() {
    safe(Strategy::Malformed);
}

#[test]
fn replay_queries_is_safe() {
    safe(Strategy::ReplayQueries);
}

#[test]
fn set_spam_is_safe() {
    safe(Strategy::SetSpam);
}

/// Set spam against 30 nodes (6 Byzantine: a fifth).
#[test]
fn set_spam_thirty_nodes_is_safe() {
    let mut c = third(Strategy::SetSpam, 1);
    c.nodes = 30;
    c.byzantine = 0.2;
    c.duration_s = 3.0;
    let r = run(c).expect("config");
    assert_eq!(r.safety_violations, 0, "seed {}: {:?}", r.seed, r.first_violation);
}

#[test]
fn vote_unknown_is_safe() {
    safe(Strategy::VoteUnknown);
}

#[test]
fn vertex_flood_is_safe() {
    let r = safe(Strategy::VertexFlood);
    // What the flood makes honest nodes hold for one peer is measured (and exceeds a plain run).
    let plain = run(SimConfig::new(7, 1, 2.0)).expect("config");
    assert!(r.max_bytes_held_for_one_peer > plain.max_bytes_held_for_one_peer, "{} vs {}", r.max_bytes_held_for_one_peer, plain.max_bytes_held_for_one_peer);
}

/// Fat vertices (512 KiB each, 500 a second from one member of 7): what an honest node holds
/// for that member is bounded by bytes (the creator bound's byte side, 8 MiB, plus the
/// pending buffer's 32 MiB per peer and what is on the wire), every honest payload is final
/// within a second and nothing conflicts. Without the byte side the same run held 239 MB for
/// the flooder and honest p95 was 10.7 s; with a byte side of 32 MiB, 69 MB and 1.37 s
/// (`docs/simulator.md`, "Fat vertices"); this fails at 48 MiB or at a p95 of 1 s.
#[test]
fn fat_flood_is_held_by_bytes() {
    let mut c = SimConfig::new(7, 1, 3.0);
    c.byzantine = 0.15;
    c.strategy = Strategy::FatFlood;
    c.rate = 200.0;
    let r = run(c).expect("config");
    assert_eq!(r.byzantine_nodes, 1);
    assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
    assert!(r.liveness_ok, "honest payloads decided");
    assert!(r.max_bytes_held_for_one_peer <= 48 << 20, "{} bytes held for the flooder", r.max_bytes_held_for_one_peer);
    assert!(r.finality_ms.p95 < 1000.0, "honest p95 {} ms", r.finality_ms.p95);
    assert_eq!(r.honest_convicted, 0);
}

#[test]
fn query_flood_is_safe() {
    safe(Strategy::QueryFlood);
}

#[test]
fn backdate_is_safe() {
    safe(Strategy::Backdate);
}

#[test]
fn selective_is_safe() {
    safe(Strategy::Selective);
}

#[test]
fn mixed_is_safe() {
    safe(Strategy::Mixed);
}

/// The shell checks an alert's proof: forged evidence convicts nobody, and the
/// forger is the one excluded.
#[test]
fn forged_alerts_convict_nobody() {
    let r = safe(Strategy::ForgeAlerts);
    assert_eq!(r.byzantine_excluded_by_all, 2, "the forgers are excluded");
}

/// The checker can fail: with the shell's proof check deliberately broken, forged alerts
/// convict honest nodes, and the checker counts them as safety violations.
#[test]
fn checker_catches_honest_nodes_convicted() {
    let mut c = third(Strategy::ForgeAlerts, 1);
    c.shell_checks_evidence = false;
    let r = run(c).expect("config");
    assert!(r.honest_convicted > 0, "forged proofs accepted: honest nodes convicted");
    assert!(r.honest_banned > 0, "and banned by the guard's rule");
    assert!(r.safety_violations >= (r.honest_convicted + r.honest_banned) as u64, "each is a safety violation");
    assert!(r.first_violation.as_deref().is_some_and(|v| v.contains("honest node")), "{:?}", r.first_violation);
}

/// The checker measures exclusions without proof: a crashed honest node times out, is
/// excluded from sampling (never convicted nor banned: timeouts are no proof), and the longest
/// exclusion is reported.
#[test]
fn checker_measures_honest_exclusions() {
    let mut c = SimConfig::new(7, 3, 3.0);
    c.crash = Some((2, 300_000, 2_500_000));
    let r = run(c).expect("config");
    assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
    assert!(r.honest_excluded_max_ms > 0.0, "the crashed node's exclusion is measured");
    assert_eq!((r.honest_convicted, r.honest_banned), (0, 0), "timeouts are no proof");
}

/// Liveness at a quarter: one Byzantine node of seven does not stop finality.
#[test]
fn vote_unknown_quarter_is_live() {
    let mut c = third(Strategy::VoteUnknown, 1);
    c.byzantine = 0.25;
    let r = run(c).expect("config");
    assert!(r.liveness_ok && r.finalized > 0, "finalized {}", r.finalized);
}

/// Issue 14 hole 3 at the spec's 20 %: 6 of 30 nodes answer every id `Unknown`. Counted as
/// non-Yes, they made about one round in twelve short of alpha = 15 of k = 20 and never got
/// detected (lagging honest nodes answer `Unknown` too): finality p95 was 1.44 s in this run. A sampled
/// `Unknown` answer is now replaced by another random peer (`pqdag_core` `replace_uninformative`):
/// p95 about the rounds' own 0.3 s. Virtual time, so exact for the seed.
#[test]
fn vote_unknown_fifth_of_thirty_keeps_finality_under_a_second() {
    let mut c = SimConfig::new(30, 1, 3.0);
    c.byzantine = 0.2;
    c.strategy = Strategy::VoteUnknown;
    let r = run(c).expect("config");
    assert_eq!(r.byzantine_nodes, 6);
    assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
    assert!(r.liveness_ok && r.finalized > 0, "finalized {}", r.finalized);
    assert!(r.finality_ms.p95 < 1_000.0, "finality p95 {} ms with 6 of 30 Unknown voters", r.finality_ms.p95);
}

/// Garbage answerers at a fifth of 10 nodes, excluded within 44 ms: a poll whose ids split the
/// honest votes no longer waits for their slots until its 1 s deadline (they never answer
/// validly). Counted as still to answer, the first 0.4 s of vertices took ~1 s: p95 once
/// detected 1 105 ms for both strategies on this seed (`sim-soak --sizes 4,10 --seeds 3
/// --first-seed 700`); 310 ms since. Virtual time, so exact for the seed.
#[test]
fn excluded_garbage_answerers_hold_no_poll_open() {
    for strategy in [Strategy::InvalidSignatures, Strategy::Malformed] {
        let mut c = SimConfig::new(10, 702, 3.0);
        c.byzantine = 0.2;
        c.strategy = strategy;
        c.rate = 100.0;
        c.conflict_ratio = 0.1;
        c.liveness_budget_s = 20.0;
        let r = run(c).expect("config");
        assert_eq!(r.byzantine_nodes, 2);
        assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
        assert!(r.liveness_ok, "{}", strategy.name());
        let p95 = r.finality_after_detection_ms.as_ref().map_or(r.finality_ms.p95, |p| p.p95);
        assert!(p95 < 1_000.0, "{}: p95 once detected {p95} ms", strategy.name());
    }
}

/// Equivocators at a fifth of 100 nodes: every honest node that convicted one sent its proof
/// to every peer, so each honest node got ~80 proofs per equivocator in the first second, and
/// its shell verified each reporter's first (three ML-DSA verifies each): ~0.9 s of every
/// honest core, polls unanswered meanwhile, and every honest vertex of the first 0.7 s final
/// only at ~1.5 s (p95 1.34 s on this seed). One proof verified per accused: p95 0.83 s (the
/// proofs' bytes and signatures were left, ~0.45 s of each core). Each proof pushed to
/// `ALERT_FANOUT` peers: p95 0.32 s. Virtual time, so exact for the seed.
#[test]
fn equivocators_fifth_of_a_hundred_keep_honest_finality_under_a_second() {
    let mut c = SimConfig::new(100, 1, 2.0);
    c.byzantine = 0.2;
    c.strategy = Strategy::Equivocate;
    let r = run(c).expect("config");
    assert_eq!(r.byzantine_nodes, 20);
    assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
    assert_eq!((r.honest_convicted, r.honest_banned), (0, 0));
    assert!(r.liveness_ok, "finalized {} of {}", r.finalized, r.submitted);
    assert!(r.finality_ms.p95 < 600.0, "honest finality p95 {} ms under 20 of 100 equivocators", r.finality_ms.p95);
    assert_eq!(r.byzantine_excluded_by_all, 20, "the proofs reached every honest node");
}

/// A query over budget meters its sender's streams in the receiver's transport
/// (`pqdag_core::ratelimit::STREAM_METER_HOLD_US`): its extra queries are never sent, where the
/// budget alone dropped them on arrival after paying their bytes. Six flooders of 30 nodes,
/// seed 1, 3 s: busiest honest core 61 % with the meter, 86 % without; p95 339 ms against
/// 499 ms. At 100 nodes (`sim --nodes 100 --byzantine 0.2 --strategy query-flood`, 3 s) it took
/// p95 once detected from 3.08 s to 0.89 s. A metered flooder that wants more than its credit
/// is still struck, so it is excluded as fast as before (0.61 s). Virtual time: exact.
#[test]
fn a_query_flooders_extra_queries_are_never_sent() {
    let run_with = |meter: bool| {
        let mut c = SimConfig::new(30, 1, 3.0);
        c.byzantine = 0.2;
        c.strategy = Strategy::QueryFlood;
        c.conflict_ratio = 0.1;
        c.transport_meters_streams = meter;
        let r = run(c).expect("config");
        assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
        assert_eq!((r.honest_convicted, r.honest_banned), (0, 0));
        assert!(r.liveness_ok, "finalized {} of {}", r.finalized, r.submitted);
        assert_eq!((r.honest_rate_limited, r.honest_stream_metered), (0, 0), "honest queries dropped or metered");
        assert_eq!(r.byzantine_excluded_by_all, 6, "every flooder excluded by every honest node");
        r
    };
    let (with, without) = (run_with(true), run_with(false));
    assert!(with.stream_metered > 100_000, "{} flood queries kept from being sent", with.stream_metered);
    assert!(with.rate_limited * 100 < without.rate_limited, "dropped on arrival: {} metered, {} not", with.rate_limited, without.rate_limited);
    assert!(with.cpu_util_max + 0.15 < without.cpu_util_max, "busiest core {} metered, {} not", with.cpu_util_max, without.cpu_util_max);
    assert!(with.detected_ms.is_some_and(|d| d < 1_000.0), "metered flooders still struck and excluded: {:?} ms", with.detected_ms);
    assert!(with.finality_ms.p95 < without.finality_ms.p95, "p95 {} ms metered, {} not", with.finality_ms.p95, without.finality_ms.p95);
}

/// A node holds the pushes of a creator over its bound there (`shard/holds.rs`: the transport
/// stops its push streams unread): the flood's vertices it would drop unverified are never
/// sent. Six flooders of 30 nodes, seed 1, 3 s: p95 508 ms against 590 ms without the hold;
/// 100 nodes (`sim --nodes 100 --byzantine 0.2 --strategy vertex-flood --duration 3`): 1.13 s
/// against 2.31 s. Honest creators are never held here, and an honest cluster at 3 000/s holds
/// nobody. Virtual time: exact.
#[test]
fn a_vertex_flooders_pushes_over_its_bound_are_never_sent() {
    let run_with = |hold: bool| {
        let mut c = SimConfig::new(30, 1, 3.0);
        c.byzantine = 0.2;
        c.strategy = Strategy::VertexFlood;
        c.conflict_ratio = 0.1;
        c.transport_holds_pushes = hold;
        let r = run(c).expect("config");
        assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
        assert_eq!((r.honest_convicted, r.honest_banned), (0, 0));
        assert!(r.liveness_ok, "finalized {} of {}", r.finalized, r.submitted);
        assert_eq!(r.honest_pushes_held, 0, "an honest creator's pushes were held");
        r
    };
    let (with, without) = (run_with(true), run_with(false));
    assert!(with.pushes_held > 100_000, "{} flood pushes held", with.pushes_held);
    assert_eq!(without.pushes_held, 0);
    assert!(with.finality_ms.p95 < without.finality_ms.p95, "p95 {} ms held, {} not", with.finality_ms.p95, without.finality_ms.p95);
    assert!(with.max_bytes_held_for_one_peer <= without.max_bytes_held_for_one_peer, "bytes held for one peer {} held, {} not", with.max_bytes_held_for_one_peer, without.max_bytes_held_for_one_peer);
    // Honest load alone holds nobody.
    let mut c = SimConfig::new(10, 1, 3.0);
    c.rate = 3_000.0;
    let r = run(c).expect("config");
    assert!(r.liveness_ok && r.pushes_held == 0, "honest load: {} pushes held", r.pushes_held);
}

/// Creators over their fair share split one budget of processing vertices (`pqdag_core`
/// `flood`): six flooders of 30 nodes held 256 processing vertices each at every honest node,
/// finalized ~1 600 of them a second, and the signatures and bytes of that pushed honest p95 to
/// 1.08 s with up to 408 KB held for one flooder; with 85 each, p95 0.60 s and 254 KB. Virtual
/// time, so exact for the seed. The bytes bound has ~7 % of headroom over seeds 1-5 (239-301 KB
/// since own vertices skip stalled ancestries, `PARENT_STALL_US`; 258-299 KB before): this seed
/// went from 273 to 301 KB with that rule, p95 unchanged.
#[test]
fn vertex_flood_fifth_of_thirty_keeps_honest_finality_under_a_second() {
    let mut c = SimConfig::new(30, 1, 3.0);
    c.byzantine = 0.2;
    c.strategy = Strategy::VertexFlood;
    c.conflict_ratio = 0.1;
    let r = run(c).expect("config");
    assert_eq!(r.byzantine_nodes, 6);
    assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
    assert!(r.liveness_ok, "finalized {} of {}", r.finalized, r.submitted);
    assert!(r.finality_ms.p95 < 1_000.0, "honest finality p95 {} ms under 6 of 30 flooders", r.finality_ms.p95);
    assert!(r.max_bytes_held_for_one_peer < 320_000, "{} bytes held for one flooder", r.max_bytes_held_for_one_peer);
}

/// Snowball's preference threshold is a majority of the sample, below alpha: with both at
/// alpha = 15 of 20, this run (`mixed` at a quarter of 30 nodes, the liars excluded) left the
/// honest nodes split 14:9 between two members of one conflict set, neither able to show 15
/// Yes, undecided for good (`docs/consensus.md` item 4).
#[test]
fn mixed_quarter_of_thirty_never_strands_a_split_set() {
    let mut c = SimConfig::new(30, 15, 3.0);
    c.byzantine = 0.25;
    c.strategy = Strategy::Mixed;
    c.conflict_ratio = 0.1;
    let r = run(c).expect("config");
    assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
    assert!(r.liveness_ok, "finalized {} of {}, undecided {}", r.finalized, r.submitted, r.undecided_honest_max);
}

/// A set-spammer's rejected vertices leave memory like finals (`pqdag_core`
/// `Core::forget_old_rejects`): before, every rejected vertex stayed in every honest core for
/// good, payload and signature included, so what one spammer made an honest node hold grew
/// without bound (46 KB per second here: 461 KB at 10 s, 1.84 MB at 40 s); now it stays at
/// ~69 KB however long the run. Virtual time, so exact for the seed.
#[test]
fn a_set_spammers_rejected_vertices_leave_memory() {
    let mut c = SimConfig::new(7, 1, 10.0);
    c.byzantine = 0.2;
    c.strategy = Strategy::SetSpam;
    c.conflict_ratio = 0.1;
    let r = run(c).expect("config");
    assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
    assert!(r.liveness_ok, "finalized {} of {}", r.finalized, r.submitted);
    assert!(r.max_bytes_held_for_one_peer < 150_000, "{} bytes held for one set-spammer", r.max_bytes_held_for_one_peer);
}

/// Alert flood: two members gossiping fresh, valid equivocation proofs against themselves to
/// every honest node, 500 a second each. Each honest node's first proof convicts the sender;
/// two defences then keep the rest from costing verifies, each enough alone: the shell drops
/// them before their verify (one verified per accused, as the engine's `shard/verify.rs`), and the
/// per-peer alert budget (8 a second) drops what is over it. The measure that catches the harm
/// is the honest nodes' CPU: with both turned off every proof costs its verifies. Virtual
/// time, so exact for the seed.
#[test]
fn an_alert_flood_costs_its_senders_not_the_honest_nodes() {
    let run_with = |dedupe: bool, budgets: bool| {
        let mut c = third(Strategy::AlertFlood, 1);
        c.shell_dedupes_alerts = dedupe;
        c.shell_rate_limits = budgets;
        let r = run(c).expect("config");
        assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
        assert_eq!(r.honest_convicted, 0);
        assert!(r.liveness_ok, "finalized {} of {}", r.finalized, r.submitted);
        r
    };
    let neither = run_with(false, false);
    // Seed 1: busiest honest core 30 % of the run with either defence or both, 52 % without.
    for (dedupe, budgets) in [(true, true), (true, false), (false, true)] {
        let r = run_with(dedupe, budgets);
        assert_eq!(r.byzantine_excluded_by_all, 2, "each flooder convicted by its own proof");
        assert!(r.cpu_util_max + 0.15 < neither.cpu_util_max, "busiest core {} with dedupe {dedupe} budgets {budgets}, {} with neither", r.cpu_util_max, neither.cpu_util_max);
        assert!(r.finality_ms.p95 < 1_000.0, "honest p95 {} ms", r.finality_ms.p95);
    }
}

/// A query flood (two members of ten, 1 250 signed queries a second each to every honest
/// node, six times the per-peer query budget) is paid for by its senders: the shells charge
/// each peer's queries to its budget before the verify and the signed answer, drop what is
/// over (costing the node only the bytes) and strike the sender, at most every 250 ms, until it is
/// excluded; honest peers' queries are never dropped. The checker's measure of the harm is the
/// honest nodes' CPU: without the budgets (a shell that verifies and answers every query)
/// the busiest honest core works most of the run and the flooders are never excluded.
/// Virtual time, so exact for the seed.
#[test]
fn a_query_flood_costs_its_senders_not_the_honest_nodes() {
    let run_with = |budgets: bool| {
        let mut c = SimConfig::new(10, 1, 3.0);
        c.byzantine = 0.2;
        c.strategy = Strategy::QueryFlood;
        c.conflict_ratio = 0.1;
        c.liveness_budget_s = 10.0;
        c.shell_rate_limits = budgets;
        let r = run(c).expect("config");
        assert_eq!(r.safety_violations, 0, "{:?}", r.first_violation);
        assert_eq!((r.honest_convicted, r.honest_banned), (0, 0));
        assert!(r.liveness_ok, "finalized {} of {}", r.finalized, r.submitted);
        assert_eq!(r.honest_rate_limited, 0, "a budget dropped honest queries");
        r
    };
    let (with, without) = (run_with(true), run_with(false));
    // Seed 1: 49 360 queries dropped, both flooders excluded by every honest node at 0.93 s,
    // busiest honest core 42 % of the run; without the budgets 85 % and nobody excluded. Since
    // the transport meters a flooder's streams, most of its queries are never sent at all.
    assert!(with.rate_limited + with.stream_metered > 10_000, "{} queries dropped, {} never sent", with.rate_limited, with.stream_metered);
    assert_eq!(with.honest_stream_metered, 0, "an honest node's queries were metered");
    assert_eq!(with.byzantine_excluded_by_all, 2, "the budget's strikes exclude both flooders");
    // Three strikes 250 ms apart, then the next exclusion refresh (2.4 s with a strike a second).
    assert!(with.detected_ms.is_some_and(|d| d < 1_500.0), "flooders detected at {:?} ms", with.detected_ms);
    assert_eq!(without.byzantine_excluded_by_all, 0);
    assert!(with.cpu_util_max + 0.25 < without.cpu_util_max, "busiest core {} with the budgets, {} without", with.cpu_util_max, without.cpu_util_max);
    assert!(with.finality_ms.p95 < 1_000.0, "honest p95 {} ms", with.finality_ms.p95);
}

/// `sim-faults --max-byzantine 0.25` seeds 41769 and 41439 (N = 4, one `selective` liar, 20 to
/// 30 % double spends): the liar answers one honest node truthfully and flips its answers to the
/// other two, so each side sees a quorum for its own member and locks (1:2). Node 0 needs all 3
/// peers' Yes to leave its lock, and the other member's quorum needs node 0 or the liar: with
/// counts alone the set stays undecided for good (these runs with `lock_round_us = 0`). With
/// lock rounds the two locks on the younger certificate move node 0 (docs/consensus.md 8d).
#[test]
fn a_liar_splitting_four_nodes_locks_is_outlived_by_lock_rounds() {
    let mk = |seed: u64, conflicts: f64, partition: Option<&str>, lock_round_us: Option<u64>| {
        let mut c = SimConfig::new(4, seed, 4.0);
        c.rate = 100.0;
        c.liveness_budget_s = 20.0;
        c.loss = if partition.is_some() { 0.03 } else { 0.01 };
        c.conflict_ratio = conflicts;
        c.byzantine = 0.25;
        c.strategy = Strategy::Selective;
        c.partition = partition.map(|p| Partition::parse(p, 4.0).expect("partition"));
        c.lock_round_us = lock_round_us;
        c
    };
    for (seed, conflicts, partition) in [(41_769, 0.2, None), (41_439, 0.3, Some("0-2|3-3@1.34-1.8"))] {
        let off = run(mk(seed, conflicts, partition, Some(0))).expect("config");
        assert_eq!(off.safety_violations, 0, "seed {seed}: {:?}", off.first_violation);
        assert!(!off.liveness_ok, "seed {seed}: the split stalls without lock rounds (else this test shows nothing)");
        let r = run(mk(seed, conflicts, partition, None)).expect("config");
        assert_eq!(r.safety_violations, 0, "seed {seed}: {:?}", r.first_violation);
        assert_eq!((r.honest_convicted, r.honest_banned), (0, 0), "seed {seed}");
        assert!(r.liveness_ok, "seed {seed}: not live with lock rounds");
        assert_eq!(r.conflict_sets_resolved, r.conflict_sets, "seed {seed}");
    }
}
