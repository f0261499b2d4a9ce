//! Debug aid: `sim-faults` seed 218 (vertex flood + partition, N = 10) dumping node N.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let node: usize = a.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let mut cfg = pqdag_sim::SimConfig::new(10, 218, 4.0);
    cfg.rate = 100.0;
    cfg.byzantine = 0.2;
    cfg.strategy = pqdag_sim::Strategy::VertexFlood;
    cfg.conflict_ratio = 0.01;
    cfg.duplicate = 0.02;
    cfg.liveness_budget_s = 20.0;
    cfg.partition = Some(pqdag_sim::Partition::parse("0-0|1-9@0.9-1.92", 4.0).expect("partition"));
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {} liveness {}", r.finalized, r.submitted, r.liveness_ok);
}
