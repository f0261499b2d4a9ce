//! Debug aid: N=1000, 20 % flip-votes, 10 % conflicts; prints stuck nodes and node ARG's vertices.
fn main() {
    let node: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut cfg = pqdag_sim::SimConfig::new(1000, 2, 3.0);
    cfg.rate = 500.0;
    cfg.byzantine = 0.2;
    cfg.strategy = pqdag_sim::Strategy::FlipVotes;
    cfg.conflict_ratio = 0.1;
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {}", r.finalized, r.submitted);
}
