//! Debug aid: crash + conflicts (N=10, node 3 down 2-4 s, 20 % conflicting pairs), dumping node
//! statuses and node N's stuck vertices: `cargo run --release -p pqdag-sim --example debug_crash -- N SEED [LOSS]`.
fn main() {
    let node: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut cfg = pqdag_sim::SimConfig::new(10, seed, 6.0);
    cfg.rate = 200.0;
    cfg.conflict_ratio = 0.2;
    cfg.crash = Some((3, 2_000_000, 4_000_000));
    cfg.loss = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {} liveness {}", r.finalized, r.submitted, r.liveness_ok);
}
