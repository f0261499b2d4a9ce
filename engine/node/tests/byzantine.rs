//! Spec appendix B scenario 2 and 7.3 SS-003 on real processes: 4 nodes, one Byzantine of each
//! mode. The honest three finalize everything, and each detects and excludes the Byzantine one.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pqdag_wire::{ClientStatus, VertexId};

/// What one run of scenario 2 measured. `scenario` asserts on it; `detection_rates` counts it.
#[derive(Debug, Default, Clone)]
struct Outcome {
    /// Honest payloads of the first batch.
    honest: usize,
    /// Of those, final on honest node 0.
    finals: usize,
    /// Every honest payload decided on all honest nodes within 120 s.
    decided: bool,
    /// All honest nodes decided every honest payload identically.
    agreed: bool,
    /// Honest nodes that raised an alert against the Byzantine one (and, for equivocation,
    /// verified a gossiped proof).
    detected: usize,
    /// Time from the end of the first batch until all three had excluded it.
    detect_secs: f64,
    /// Second batch (submitted after exclusion): submitted, final, client-observed latencies.
    after_submitted: usize,
    after_final: usize,
    after_p50_ms: f64,
    after_p95_ms: f64,
    /// Honest nodes whose transport banned (disconnected) the Byzantine one.
    banned: usize,
}

/// Payloads of the batch submitted after exclusion, and their pace.
const AFTER_PAYLOADS: u64 = 150;
const AFTER_RATE_PER_S: u64 = 75;

fn scenario(mode: &'static str, base_port: u16) {
    let _serial = cluster_lock();
    let o = run_scenario(mode, base_port);
    let equivocation = mode == "equivocate";
    assert!(o.decided, "{mode}: honest payloads still undecided after 120 s");
    assert!(o.agreed, "{mode}: honest nodes decided differently");
    if equivocation {
        assert!(o.finals * 10 >= o.honest * 7, "{mode}: only {} of {} honest payloads final", o.finals, o.honest);
    } else {
        assert_eq!(o.finals, o.honest, "{mode}: an honest payload was rejected");
    }
    assert_eq!(o.detected, 3, "{mode}: the Byzantine node was excluded by only {} of 3 honest nodes", o.detected);
    assert_eq!(o.after_final, o.after_submitted, "{mode}: payloads submitted after exclusion did not all finalize");
    assert!(o.after_submitted as u64 >= AFTER_PAYLOADS * 9 / 10, "{mode}: only {} of {AFTER_PAYLOADS} submitted after exclusion", o.after_submitted);
    if proven(mode) {
        assert_eq!(o.banned, 3, "{mode}: proven misbehaviour, but only {} of 3 honest nodes disconnected the Byzantine one", o.banned);
    } else {
        assert_eq!(o.banned, 0, "{mode}: unproven misbehaviour must not disconnect (an honest slow node looks alike)");
    }
}

/// Modes whose misbehaviour is proven by signed evidence or by authenticated bad frames: these
/// (and only these) get the Byzantine node disconnected.
fn proven(mode: &str) -> bool {
    matches!(mode, "equivocate" | "invalid-signatures" | "malformed" | "flood")
}

/// Spec appendix B scenario 2 on 4 real processes, node 3 Byzantine in `mode`. Panics only on
/// harness failures (a node that does not start); consensus outcomes are returned.
fn run_scenario(mode: &'static str, base_port: u16) -> Outcome {
    let mut c = Cluster::new(4, base_port);
    for i in 0..3 {
        c.start(i);
    }
    // `none`: the baseline, node 3 honest (same load, same machine, nothing to exclude).
    let byzantine = mode != "none";
    if byzantine {
        c.start_with(3, &["--byzantine", mode]);
    } else {
        c.start(3);
    }
    for i in 0..3 {
        c.wait_healthy(i, Duration::from_secs(60));
    }
    // Not `wait_healthy`: a flooder is disconnected by the honest nodes at once, so it may never
    // see the peers /health asks for.
    c.wait_running(3, Duration::from_secs(60));
    let mut o = Outcome::default();
    let t0 = Instant::now();
    let equivocation = mode == "equivocate";
    let (ids, decided, agreed, finals) = c.with_clients(&[0, 1, 2, 3], move |conns| {
        Box::pin(async move {
            let mut ids = Vec::new();
            for n in 0..120u64 {
                // Every fourth payload goes through the Byzantine node (own vertices matter for
                // equivocation and invalid signatures); only honest nodes' payloads must finalize.
                let node = (n % 4) as usize;
                let r = submit(&conns[node], n, format!("p{n}").into_bytes(), key(n)).await;
                if node != 3 {
                    ids.push(r.expect("honest submit"));
                }
            }
            // Every honest payload must be decided, identically on the honest nodes. Under
            // equivocation an honest vertex that picked a losing twin as a parent is rejected
            // with it (spec 4.5: losers and their descendants), so there "decided" is the bar
            // plus a floor on how many finalize; otherwise every honest payload must finalize.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let mut views = Vec::new();
                for conn in &conns[..3] {
                    views.push(statuses(conn, &ids).await);
                }
                let decided = views.iter().all(|v| v.iter().all(|s| matches!(s, ClientStatus::Final { .. } | ClientStatus::Rejected)));
                if decided || Instant::now() > deadline {
                    let finals = views[0].iter().filter(|s| matches!(s, ClientStatus::Final { .. })).count();
                    let undecided = views.iter().map(|v| v.iter().filter(|s| **s == ClientStatus::Processing || **s == ClientStatus::Unknown).count()).max().unwrap_or(0);
                    eprintln!("{mode}: {finals}/{} honest payloads final, {undecided} undecided", ids.len());
                    let same = |a: &ClientStatus, b: &ClientStatus| matches!((a, b), (ClientStatus::Final { .. }, ClientStatus::Final { .. }) | (ClientStatus::Rejected, ClientStatus::Rejected));
                    let agreed = views[1..].iter().all(|v| v.iter().zip(&views[0]).all(|(a, b)| same(a, b)));
                    return (ids, decided, agreed, finals);
                }
                glommio::timer::Timer::new(Duration::from_millis(250)).await;
            }
        })
    });
    o.honest = ids.len();
    o.decided = decided;
    o.agreed = agreed;
    o.finals = finals;
    let took = t0.elapsed();
    // Detection needs evidence to accumulate (a withholder is only visible once several polls
    // time out, 1 s each): keep a trickle of load going until every honest node has excluded the
    // Byzantine one, for at most 60 s.
    let detect_start = Instant::now();
    let mut detected = 0;
    let mut round = 0u64;
    loop {
        if !byzantine {
            break; // the all-honest baseline has nothing to detect
        }
        detected = 0;
        for i in 0..3 {
            let m = c.http(i, "/metrics").map(|r| r.1).unwrap_or_default();
            let alerts = metric_sum(&m, "pqdag_byzantine_alerts_total");
            let gossiped = metric_sum(&m, "pqdag_alerts_verified_total");
            let score = m
                .lines()
                .find(|l| l.starts_with("pqdag_peer_score_milli{peer=\"node-3\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0);
            if alerts >= 1.0 && (!equivocation || gossiped >= 1.0) {
                detected += 1;
            }
            if detected == 3 || detect_start.elapsed() > Duration::from_secs(60) {
                eprintln!("{mode}: node-{i} alerts {alerts} score(node-3) {score} verified gossiped proofs {gossiped}");
            }
        }
        if detected == 3 || detect_start.elapsed() > Duration::from_secs(60) {
            break;
        }
        round += 1;
        let base = 10_000 + round * 10;
        c.with_clients(&[0, 1, 2], move |conns| {
            Box::pin(async move {
                for n in base..base + 6 {
                    let _ = submit(&conns[(n % 3) as usize], n, b"trickle".to_vec(), key(n)).await;
                }
            })
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    o.detected = detected;
    o.detect_secs = detect_start.elapsed().as_secs_f64();
    eprintln!("{mode}: detected by all honest nodes after {:?} of trickle load", detect_start.elapsed());
    eprintln!("{mode}: {} honest payloads decided identically on all honest nodes in {took:?}; detected by {detected}/3 honest nodes", ids.len());
    if detected == 3 || !byzantine {
        // A harness failure here (a client that cannot connect on a loaded machine) must not
        // lose the detection result of this run: it shows as 0 submitted.
        let (submitted, lat) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| after_exclusion(&c))).unwrap_or_else(|_| {
            eprintln!("{mode}: after-exclusion batch failed (harness)");
            (0, Vec::new())
        });
        o.after_submitted = submitted;
        o.after_final = lat.len();
        o.after_p50_ms = percentile(&lat, 0.50);
        o.after_p95_ms = percentile(&lat, 0.95);
        eprintln!(
            "{mode}: after exclusion p50 {:.0} ms p95 {:.0} ms ({} of {submitted} final, {AFTER_PAYLOADS} offered at {AFTER_RATE_PER_S}/s)",
            o.after_p50_ms,
            o.after_p95_ms,
            lat.len()
        );
    }
    for i in 0..3 {
        let m = c.http(i, "/metrics").map(|r| r.1).unwrap_or_default();
        let banned = metric_sum(&m, "pqdag_peers_banned");
        let bans = metric_sum(&m, "pqdag_peer_bans_total");
        let connected = metric_sum(&m, "pqdag_peers_connected");
        eprintln!("{mode}: node-{i} peers_banned {banned} peer_bans_total {bans} peers_connected {connected}");
        if banned >= 1.0 && bans >= 1.0 && connected == 2.0 {
            o.banned += 1;
        }
    }
    for i in 0..3 {
        assert!(c.stop(i), "honest node {i} did not exit cleanly");
    }
    o
}

/// Submits `AFTER_PAYLOADS` payloads through the honest nodes at `AFTER_RATE_PER_S` and measures
/// each one's submit-to-final latency as its client sees it: while submitting, a poller asks the
/// node each payload was submitted to for the statuses of the undecided ones every 20 ms (so a
/// figure carries up to ~20 ms plus one status round trip of polling delay). Returns how many
/// were accepted and the sorted latencies (ms) of those that finalized within 60 s.
fn after_exclusion(c: &Cluster) -> (usize, Vec<f64>) {
    c.with_clients(&[0, 1, 2], move |conns| {
        Box::pin(async move {
            use std::cell::{Cell, RefCell};
            use std::rc::Rc;
            let conns = Rc::new(conns);
            // (node, id, submitted at), appended by the submit tasks; indices never move.
            let sent: Rc<RefCell<Vec<(usize, VertexId, Instant)>>> = Rc::new(RefCell::new(Vec::new()));
            let done = Rc::new(Cell::new(false));
            let submitter = {
                let (conns, sent, done) = (conns.clone(), sent.clone(), done.clone());
                glommio::spawn_local(async move {
                    let start = Instant::now();
                    let period = Duration::from_micros(1_000_000 / AFTER_RATE_PER_S);
                    let mut tasks = Vec::new();
                    for n in 0..AFTER_PAYLOADS {
                        let due = start + period * n as u32;
                        if let Some(w) = due.checked_duration_since(Instant::now()) {
                            glommio::timer::Timer::new(w).await;
                        }
                        let (conns, sent) = (conns.clone(), sent.clone());
                        tasks.push(glommio::spawn_local(async move {
                            let node = (n % 3) as usize;
                            let tag = 50_000 + n;
                            let t = Instant::now();
                            if let Ok(id) = submit(&conns[node], tag, format!("after-{n}").into_bytes(), key(tag)).await {
                                sent.borrow_mut().push((node, id, t));
                            }
                        }));
                    }
                    for t in tasks {
                        t.await;
                    }
                    done.set(true);
                })
            };
            let mut latency: Vec<Option<f64>> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let finished = done.get();
                let snapshot = sent.borrow().clone();
                latency.resize(snapshot.len(), None);
                for node in 0..3 {
                    let idx: Vec<usize> = (0..snapshot.len()).filter(|&k| snapshot[k].0 == node && latency[k].is_none()).collect();
                    if idx.is_empty() {
                        continue;
                    }
                    let ids: Vec<VertexId> = idx.iter().map(|&k| snapshot[k].1).collect();
                    let st = statuses(&conns[node], &ids).await;
                    let now = Instant::now();
                    for (k, s) in idx.iter().zip(st) {
                        if matches!(s, ClientStatus::Final { .. }) {
                            latency[*k] = Some(now.duration_since(snapshot[*k].2).as_secs_f64() * 1e3);
                        }
                    }
                }
                if (finished && latency.iter().all(Option::is_some)) || Instant::now() > deadline {
                    break;
                }
                glommio::timer::Timer::new(Duration::from_millis(20)).await;
            }
            submitter.await;
            let submitted = sent.borrow().len();
            let mut lat: Vec<f64> = latency.into_iter().flatten().collect();
            lat.sort_by(f64::total_cmp);
            (submitted, lat)
        })
    })
}

/// Nearest-rank percentile of sorted values (NaN when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The Byzantine modes, and `none` (all honest: the latency baseline, never in the default set).
const MODES: [&str; 7] = ["flip-votes", "equivocate", "invalid-signatures", "malformed", "withhold", "flood", "none"];

/// Detection-rate harness (docs/benchmark.md, "Byzantine detection rates on real processes"):
/// repeats scenario 2 `PQDAG_BYZ_RUNS` times (default 10) for each mode of `PQDAG_BYZ_MODES`
/// (comma-separated, default all six), never stopping at a failed run, and prints one `BYZRUN`
/// line per run and a `BYZRATE` table. Run it through `tests/ops/byzantine-rates.sh`.
#[test]
#[ignore = "long: R x 6 runs of ~30 s; run through tests/ops/byzantine-rates.sh"]
fn detection_rates() {
    let _serial = cluster_lock();
    let runs: usize = std::env::var("PQDAG_BYZ_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let modes: Vec<String> = std::env::var("PQDAG_BYZ_MODES")
        .map(|v| v.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect())
        .unwrap_or_else(|_| MODES[..6].iter().map(|m| m.to_string()).collect());
    let mut table = Vec::new();
    for mode in &modes {
        let Some(mi) = MODES.iter().position(|m| m == mode) else { panic!("unknown mode {mode}; one of {MODES:?}") };
        let mode: &'static str = MODES[mi];
        // `none` (all four honest) is the baseline for the after-exclusion latency.
        let mut results = Vec::new();
        for r in 0..runs {
            // A fresh port range per run: nothing of the previous cluster can linger on it.
            let base = 41_000 + (mi as u16) * 1_000 + (r as u16 % 5) * 100;
            let res = std::panic::catch_unwind(|| run_scenario(mode, base));
            match &res {
                Ok(o) => eprintln!(
                    "BYZRUN mode={mode} run={r} decided={} agreed={} honest_final={}/{} detected={}/3 detect_s={:.1} after_final={}/{} after_p50_ms={:.0} after_p95_ms={:.0} banned={}/3",
                    o.decided, o.agreed, o.finals, o.honest, o.detected, o.detect_secs, o.after_final, o.after_submitted, o.after_p50_ms, o.after_p95_ms, o.banned
                ),
                Err(_) => eprintln!("BYZRUN mode={mode} run={r} harness_failure"),
            }
            results.push(res.ok());
        }
        table.push((mode, results));
    }
    eprintln!("BYZRATE | mode | runs | detected+excluded by all 3 | rate | honest all final (or decided, equivocate) | after-exclusion p95 median (ms) | banned by all 3 |");
    eprintln!("BYZRATE |---|---|---|---|---|---|---|");
    for (mode, results) in table {
        let ok: Vec<&Outcome> = results.iter().flatten().collect();
        let detected = ok.iter().filter(|o| o.detected == 3).count();
        let live = ok.iter().filter(|o| o.decided && o.agreed && (o.finals == o.honest || (mode == "equivocate" && o.finals * 10 >= o.honest * 7))).count();
        let mut p95: Vec<f64> = ok.iter().filter(|o| o.after_final > 0).map(|o| o.after_p95_ms).collect();
        p95.sort_by(f64::total_cmp);
        let median = if p95.is_empty() { f64::NAN } else { p95[p95.len() / 2] };
        let banned = ok.iter().filter(|o| o.banned == 3).count();
        let n = results.len();
        eprintln!(
            "BYZRATE | {mode} | {n} | {detected} | {:.0}% | {live}/{n} | {median:.0} | {banned}/{n} |",
            100.0 * detected as f64 / n.max(1) as f64
        );
    }
}

#[test]
fn flip_votes_is_outvoted_detected_and_excluded() {
    scenario("flip-votes", 11000);
}

#[test]
fn equivocation_is_proven_and_excluded() {
    scenario("equivocate", 11150);
}

#[test]
fn invalid_signatures_are_refused_and_excluded() {
    scenario("invalid-signatures", 11300);
}

#[test]
fn malformed_frames_are_refused_and_excluded() {
    scenario("malformed", 11450);
}

#[test]
fn withheld_responses_are_detected_and_excluded() {
    scenario("withhold", 11600);
}

#[test]
fn flood_of_junk_vertices_is_refused_and_excluded() {
    scenario("flood", 11750);
}

/// Beyond the liveness bound, on real processes: `PQDAG_BYZ_NODES` nodes (default 6) of which the
/// last `PQDAG_BYZ_FLIPPERS` (default 2) flip every vote. With 6 and 2, f = N/3 breaks N >= 3f+1;
/// and with k = N-1, alpha = 0.75k a sample holds alpha honest answers only while
/// f <= k - alpha (1 for N = 5..8), so no honest payload can gather alpha Yes votes. Measures
/// safety (honest nodes never decide a payload differently; asserted) and liveness (how many
/// honest payloads finalize within 60 s; printed only). docs/benchmark.md records the figures.
#[test]
#[ignore = "measurement beyond the liveness bound (docs/benchmark.md)"]
fn flip_voters_at_a_third() {
    let n: usize = std::env::var("PQDAG_BYZ_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let f: usize = std::env::var("PQDAG_BYZ_FLIPPERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let (_, _, agreed) = flip_voters(n, f, 12_500);
    assert!(agreed, "N={n} flip-voters={f}: honest nodes decided a payload differently (safety)");
}

/// 7 real nodes, 2 of them flipping every vote (f = 2 of 3f+1 = 7): the sample is the whole
/// network, so a poll counts the BFT quorum q = 5 with the node's own vote, and the 5 honest
/// nodes finalize every honest payload on their own (the old alpha of 5 peers of 6 needed a
/// flip-voter's Yes, and nothing was final). Safety and liveness asserted.
#[test]
fn seven_nodes_with_two_flip_voters_stay_live() {
    let (finals, total, agreed) = flip_voters(7, 2, 12_000);
    assert!(agreed, "honest nodes decided a payload differently (safety)");
    assert!(total > 0, "no payload was accepted");
    assert!(finals.iter().all(|&x| x == total), "every honest payload final on every honest node: {finals:?} of {total}");
}

/// Runs `n` real nodes, the last `f` flipping every vote; submits 120 payloads at the honest
/// ones and waits up to 60 s for them to be decided. Returns (finals per honest node, payloads
/// accepted, no payload decided differently).
fn flip_voters(n: usize, f: usize, base_port: u16) -> (Vec<usize>, usize, bool) {
    let _serial = cluster_lock();
    let honest = n - f;
    let mut c = Cluster::new(n, base_port);
    for i in 0..honest {
        c.start(i);
    }
    for i in honest..n {
        c.start_with(i, &["--byzantine", "flip-votes"]);
    }
    for i in 0..n {
        c.wait_running(i, Duration::from_secs(60));
    }
    // Honest nodes refuse submissions (`NotReady`) until they have caught up with their peers.
    for i in 0..honest {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let nodes: Vec<usize> = (0..honest).collect();
    let t0 = Instant::now();
    let (finals, undecided, agreed, total) = c.with_clients(&nodes, move |conns| {
        Box::pin(async move {
            let mut ids = Vec::new();
            for k in 0..120u64 {
                if let Ok(id) = submit(&conns[k as usize % conns.len()], k, format!("third-{k}").into_bytes(), key(k)).await {
                    ids.push(id);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let mut views = Vec::new();
                for conn in &conns {
                    views.push(statuses(conn, &ids).await);
                }
                let decided = views.iter().all(|v| v.iter().all(|s| matches!(s, ClientStatus::Final { .. } | ClientStatus::Rejected)));
                if decided || Instant::now() > deadline {
                    let conflict = |a: &ClientStatus, b: &ClientStatus| {
                        matches!((a, b), (ClientStatus::Final { .. }, ClientStatus::Rejected) | (ClientStatus::Rejected, ClientStatus::Final { .. }))
                    };
                    let agreed = views.iter().all(|v| v.iter().zip(&views[0]).all(|(a, b)| !conflict(a, b)));
                    let finals: Vec<usize> = views.iter().map(|v| v.iter().filter(|s| matches!(s, ClientStatus::Final { .. })).count()).collect();
                    let undecided = views.iter().map(|v| v.iter().filter(|s| matches!(s, ClientStatus::Processing | ClientStatus::Unknown)).count()).max().unwrap_or(0);
                    return (finals, undecided, agreed, ids.len());
                }
                glommio::timer::Timer::new(Duration::from_millis(500)).await;
            }
        })
    });
    let took = t0.elapsed();
    let mut alerts = Vec::new();
    let mut processing = Vec::new();
    for i in 0..honest {
        let m = c.http(i, "/metrics").map(|r| r.1).unwrap_or_default();
        alerts.push(metric_sum(&m, "pqdag_byzantine_alerts_total"));
        processing.push(c.status(i)["processing"].as_u64().unwrap_or(0));
    }
    eprintln!(
        "N={n} flip-voters={f}: honest payloads final per honest node {finals:?} of {total} after {took:?}; max undecided {undecided}; \
         no conflicting decisions: {agreed}; alerts per honest node {alerts:?}; processing {processing:?}"
    );
    for i in 0..n {
        c.kill9(i);
    }
    (finals, total, agreed)
}
