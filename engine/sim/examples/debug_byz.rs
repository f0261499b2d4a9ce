//! Debug aid: a Byzantine run (N=30, 25 % withhold) dumping node 0's stuck vertices.
fn main() {
    let mut cfg = pqdag_sim::SimConfig::new(30, 4, 5.0);
    cfg.rate = 200.0;
    cfg.byzantine = 0.25;
    cfg.strategy = pqdag_sim::Strategy::Withhold;
    cfg.conflict_ratio = 0.2;
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(0);
    eprintln!("finalized {} submitted {}", r.finalized, r.submitted);
}
