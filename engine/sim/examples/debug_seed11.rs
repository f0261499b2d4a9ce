//! Debug aid: the fault-soak seed 11 (N=7, node 0 crashed 1.63-2.62 s, 1 % loss, 20 % conflicts,
//! one vertex-flooder), dumping node statuses and node N's stuck vertices:
//! `cargo run --release -p pqdag-sim --example debug_seed11 -- N`.
fn main() {
    let node: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut cfg = pqdag_sim::SimConfig::new(7, 11, 4.0);
    cfg.rate = 100.0;
    cfg.conflict_ratio = 0.2;
    cfg.loss = 0.01;
    cfg.byzantine = 0.1429;
    cfg.strategy = "vertex-flood".parse().expect("strategy");
    cfg.crash = Some((0, 1_630_000, 2_620_000));
    cfg.liveness_budget_s = 20.0;
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {} liveness {}", r.finalized, r.submitted, r.liveness_ok);
}
