//! Spec appendix B scenario 2 and 7.3 SS-003 on real processes: 4 nodes, one Byzantine of each
//! mode. The honest three finalize everything, and each detects and excludes the Byzantine one.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pqdag_wire::{ClientStatus, VertexId};

fn scenario(mode: &'static str, base_port: u16) {
    let _serial = cluster_lock();
    let mut c = Cluster::new(4, base_port);
    for i in 0..3 {
        c.start(i);
    }
    c.start_with(3, &["--byzantine", mode]);
    for i in 0..4 {
        c.wait_healthy(i, Duration::from_secs(60));
    }
    let t0 = Instant::now();
    let equivocation = mode == "equivocate";
    let ids: Vec<VertexId> = c.with_clients(&[0, 1, 2, 3], move |conns| {
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
                    assert!(decided, "{mode}: honest payloads still undecided after 120 s: {undecided}");
                    let same = |a: &ClientStatus, b: &ClientStatus| matches!((a, b), (ClientStatus::Final { .. }, ClientStatus::Final { .. }) | (ClientStatus::Rejected, ClientStatus::Rejected));
                    for v in &views[1..] {
                        assert!(v.iter().zip(&views[0]).all(|(a, b)| same(a, b)), "{mode}: honest nodes decided differently");
                    }
                    if equivocation {
                        assert!(finals * 10 >= ids.len() * 7, "{mode}: only {finals} of {} honest payloads final", ids.len());
                    } else {
                        assert_eq!(finals, ids.len(), "{mode}: an honest payload was rejected");
                    }
                    return ids;
                }
                glommio::timer::Timer::new(Duration::from_millis(250)).await;
            }
        })
    });
    let took = t0.elapsed();
    // Detection needs evidence to accumulate (a withholder is only visible once several polls
    // time out, 1 s each): keep a trickle of load going until every honest node has excluded the
    // Byzantine one, for at most 60 s.
    let detect_start = Instant::now();
    let mut detected;
    let mut round = 0u64;
    loop {
        detected = 0;
        for i in 0..3 {
            let m = c.http(i, "/metrics").expect("metrics").1;
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
    eprintln!("{mode}: detected by all honest nodes after {:?} of trickle load", detect_start.elapsed());
    eprintln!("{mode}: {} honest payloads decided identically on all honest nodes in {took:?}; detected by {detected}/3 honest nodes", ids.len());
    assert_eq!(detected, 3, "{mode}: the Byzantine node was excluded by only {detected} of 3 honest nodes");
    for i in 0..3 {
        assert!(c.stop(i), "honest node {i} did not exit cleanly");
    }
}

#[test]
fn flip_votes_is_outvoted_detected_and_excluded() {
    scenario("flip-votes", 26000);
}

#[test]
fn equivocation_is_proven_and_excluded() {
    scenario("equivocate", 26200);
}

#[test]
fn invalid_signatures_are_refused_and_excluded() {
    scenario("invalid-signatures", 26400);
}

#[test]
fn malformed_frames_are_refused_and_excluded() {
    scenario("malformed", 26600);
}

#[test]
fn withheld_responses_are_detected_and_excluded() {
    scenario("withhold", 26800);
}

#[test]
fn flood_of_junk_vertices_is_refused_and_excluded() {
    scenario("flood", 27000);
}
