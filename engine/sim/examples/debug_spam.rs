//! Debug aid: `sim --nodes 7 --seed 4 --strategy set-spam --byzantine 0.2` dumping node N.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let node: usize = a.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let seed: u64 = a.get(2).and_then(|x| x.parse().ok()).unwrap_or(4);
    let mut cfg = pqdag_sim::SimConfig::new(7, seed, 3.0);
    cfg.rate = 100.0;
    cfg.byzantine = 0.2;
    cfg.strategy = pqdag_sim::Strategy::SetSpam;
    cfg.conflict_ratio = 0.1;
    cfg.liveness_budget_s = 20.0;
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {} liveness {}", r.finalized, r.submitted, r.liveness_ok);
}
