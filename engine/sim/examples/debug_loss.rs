//! Debug aid: a lossy run (N=10, 5 % loss) dumping node statuses and node 0's stuck vertices.
fn main() {
    let node: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut cfg = pqdag_sim::SimConfig::new(10, 9, 5.0);
    cfg.rate = 300.0;
    cfg.loss = 0.05;
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {}", r.finalized, r.submitted);
}
