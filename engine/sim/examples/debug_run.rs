//! Debug aid: runs a small configuration and dumps the processing vertices of node 0.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shards: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut cfg = pqdag_sim::SimConfig::new(n, 1, 4.0);
    cfg.shards = shards;
    cfg.rate = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20.0);
    cfg.conflict_ratio = 0.3;
    cfg.liveness_budget_s = 5.0;
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let node: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {}", r.finalized, r.submitted);
}
