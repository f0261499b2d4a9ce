//! Debug aid for `sim-faults` failures: runs one mix and dumps node N's stuck vertices.
//! `cargo run --release -p pqdag-sim --example debug_mix -- NODE NODES SHARDS SEED LOSS DUP CONFLICT [PARTITION|-] [CRASH|-]`
//! (PARTITION as `sim --partition`, CRASH as `N@AT-BACK` in seconds; env BYZ and STRATEGY add
//! Byzantine nodes).
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let get = |i: usize| a.get(i).cloned().unwrap_or_default();
    let node: usize = get(1).parse().unwrap_or(0);
    let mut cfg = pqdag_sim::SimConfig::new(get(2).parse().unwrap_or(4), get(4).parse().unwrap_or(1), 4.0);
    cfg.shards = get(3).parse().unwrap_or(1);
    cfg.loss = get(5).parse().unwrap_or(0.0);
    cfg.duplicate = get(6).parse().unwrap_or(0.0);
    cfg.conflict_ratio = get(7).parse().unwrap_or(0.0);
    cfg.rate = 100.0;
    cfg.liveness_budget_s = 20.0;
    if a.len() > 8 && get(8) != "-" {
        cfg.partition = Some(pqdag_sim::Partition::parse(&get(8), 4.0).expect("partition"));
    }
    if a.len() > 9 && get(9) != "-" {
        let s = get(9);
        let (n, w) = s.split_once('@').expect("N@AT-BACK");
        let (at, back) = w.split_once('-').expect("AT-BACK");
        let sec = |x: &str| (x.parse::<f64>().expect("seconds") * 1e6) as u64;
        cfg.crash = Some((n.parse().expect("node"), sec(at), sec(back)));
    }
    // Optional Byzantine nodes: env BYZ=FRACTION and STRATEGY=NAME (as `sim --strategy`).
    if let Ok(f) = std::env::var("BYZ") {
        cfg.byzantine = f.parse().expect("fraction");
        let name = std::env::var("STRATEGY").unwrap_or_else(|_| "flip-votes".into());
        cfg.strategy = name.parse().expect("strategy");
    }
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {} liveness {}", r.finalized, r.submitted, r.liveness_ok);
}
