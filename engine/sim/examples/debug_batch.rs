//! Debug aid for batching: `cargo run --release -p pqdag-sim --example debug_batch -- NODE NODES SEED RATE CONFLICT MAX_BATCH`
//! runs a 6 s mix and dumps node NODE's stuck vertices.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let get = |i: usize| a.get(i).cloned().unwrap_or_default();
    let node: usize = get(1).parse().unwrap_or(0);
    let mut cfg = pqdag_sim::SimConfig::new(get(2).parse().unwrap_or(7), get(3).parse().unwrap_or(1), 6.0);
    cfg.rate = get(4).parse().unwrap_or(400.0);
    cfg.conflict_ratio = get(5).parse().unwrap_or(0.2);
    cfg.max_batch = get(6).parse().unwrap_or(64);
    let sim = pqdag_sim::Sim::new(cfg).expect("config");
    let r = sim.run_debug(node);
    eprintln!("finalized {} submitted {} liveness {}", r.finalized, r.submitted, r.liveness_ok);
}
