//! `sim`: runs the deterministic simulator and prints a report (JSON with `--json`).

use clap::Parser;
use pqdag_sim::{Partition, Profile, SimConfig, Strategy};

/// mimalloc, as in the engine: a 1000-node run spent a fifth of its time in glibc's malloc
/// and free (`perf record` of `sim --nodes 1000 --shards 4`); with mimalloc it runs ~35 %
/// faster, with the same trace, for ~9 % more memory (`docs/simulator.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Deterministic pqdag consensus simulator. A failing run prints its seed: rerun with the same
/// flags to reproduce it exactly.
#[derive(Parser, Debug)]
#[command(name = "sim")]
struct Args {
    /// Nodes.
    #[arg(long)]
    nodes: usize,
    /// Master seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Workload duration, virtual seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Shard cores per node.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Fraction of Byzantine nodes.
    #[arg(long, default_value_t = 0.0)]
    byzantine: f64,
    /// flip-votes | equivocate | withhold | invalid-signatures | malformed | replay-queries |
    /// set-spam | vote-unknown | vertex-flood | query-flood | backdate | selective | mixed |
    /// forge-alerts | alert-flood | fat-flood
    #[arg(long, default_value = "flip-votes")]
    strategy: Strategy,
    /// Partition `0-2|3-5@START-END` (seconds).
    #[arg(long)]
    partition: Option<String>,
    /// Vertices per second (whole network).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// lan | wan
    #[arg(long, default_value = "lan")]
    profile: String,
    /// Fraction of submissions that are conflicting pairs.
    #[arg(long, default_value_t = 0.0)]
    conflict_ratio: f64,
    /// Message loss probability.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Message duplication probability.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Crash `NODE@AT-RESTART` (seconds).
    #[arg(long)]
    crash: Option<String>,
    /// Liveness budget after the workload (virtual seconds).
    #[arg(long, default_value_t = 20.0)]
    liveness_budget: f64,
    /// CPU per ML-DSA-87 signature, us (default: calibrated, see docs/simulator.md).
    #[arg(long, default_value_t = pqdag_sim::COST_SIGN_US)]
    sign_us: u64,
    /// CPU per verification, us.
    #[arg(long, default_value_t = pqdag_sim::COST_VERIFY_US)]
    verify_us: u64,
    /// CPU per network byte sent or received, ns.
    #[arg(long, default_value_t = pqdag_sim::COST_BYTE_NS)]
    byte_ns: f64,
    /// CPU per store batch (a persisting event-loop turn), us.
    #[arg(long, default_value_t = pqdag_sim::COST_BATCH_US)]
    batch_us: u64,
    /// Group-commit window of a node's store batches, us.
    #[arg(long, default_value_t = pqdag_sim::COST_BATCH_WINDOW_US)]
    batch_window_us: u64,
    /// CPU per open connection per second, us.
    #[arg(long, default_value_t = pqdag_sim::COST_CONN_US_PER_S)]
    conn_us_per_s: u64,
    /// All nodes share this many cores (N processes on one machine); 0 = a host per node.
    #[arg(long, default_value_t = 0)]
    host_cores: usize,
    /// Threads that run the simulation: 1 = one event at a time; N > 1 = batches of events of
    /// different nodes within one network latency on N threads (the same run for every N > 1,
    /// a different one from 1; needs --host-cores 0).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Payload bytes per submission.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Most submissions (transactions) per vertex; 1 = one payload per vertex.
    #[arg(long, default_value_t = 1)]
    max_batch: usize,
    /// Fraction of submissions sent identical to two nodes (twins: client retries).
    #[arg(long, default_value_t = 0.0)]
    twin_ratio: f64,
    /// Vertices travel by relay (spec 4.4's structured gossip: ring successors and random
    /// peers at every hop) instead of once from their creator to every peer.
    #[arg(long)]
    relay: bool,
    /// Length of a lock round, ms (`Params::lock_round_us`: an honest node's Yes certifies one
    /// member per conflict set per round; 0 turns lock rounds off; default: the profile's, 300
    /// ms on a LAN).
    #[arg(long)]
    lock_round_ms: Option<f64>,
    /// Sample and poll as `engine run` does with a default cluster file (k 10, beta 20, 10 ms
    /// polls up to 4 nodes, 20 ms at 5, 30 ms from 6, a batch linger of one poll, 8 polls in
    /// flight) instead of the scaled LAN profile (k 20 from 11 nodes, beta 15, 20 ms, a 5 ms
    /// linger, 4 in flight): to compare a model run with a `bench` run. `--poll-interval-ms` and
    /// `--lock-round-ms` still apply on top.
    #[arg(long)]
    engine_params: bool,
    /// Poll interval, ms (`Params::poll_interval_us`, the engine's `poll_interval_ms`; default:
    /// the profile's, 20 ms on a LAN).
    #[arg(long)]
    poll_interval_ms: Option<f64>,
    /// Cores forget final vertices' records after this many virtual ms (0 = never).
    #[arg(long, default_value_t = 250)]
    forget_final_after_ms: u64,
    /// Most delay of a message between two shards of a node, us (0 = at once).
    #[arg(long, default_value_t = pqdag_sim::MESH_DELAY_MAX_US)]
    mesh_delay_max_us: u64,
    /// Measurement: the shells apply no per-peer request budgets (what a query or alert flood
    /// costs the honest nodes without them; the engine always applies them).
    #[arg(long)]
    no_rate_limits: bool,
    /// Measurement: the receivers' transports do not meter a query flooder's streams (its
    /// queries over budget are sent and dropped on arrival, costing their bytes; the engine
    /// always meters).
    #[arg(long)]
    no_stream_meter: bool,
    /// Measurement: the receivers do not hold a vertex flooder's pushes (its vertices over the
    /// creator bound are sent and dropped on arrival, costing their bytes; the engine holds them).
    #[arg(long)]
    no_push_hold: bool,
    /// Clients submit to the first N honest nodes only (0: every honest node).
    #[arg(long, default_value_t = 0)]
    hot_nodes: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Debugging: run the whole budget, then dump node N's statuses and stuck vertices (and
    /// where they stand on every node; env WATCH=PREFIX adds vertices by id prefix).
    #[arg(long)]
    debug_node: Option<usize>,
    /// Print what the cores and the simulator hold (entries/slots per collection, summed over
    /// the cores) to stderr every this many virtual ms (0: never).
    #[arg(long, default_value_t = 0)]
    census_every_ms: u64,
}

fn main() {
    pqdag_sim::keep_freed_pages();
    let a = Args::parse();
    let mut cfg = SimConfig::new(a.nodes, a.seed, a.duration);
    cfg.shards = a.shards;
    cfg.census_every_us = a.census_every_ms * 1000;
    cfg.byzantine = a.byzantine;
    cfg.strategy = a.strategy;
    cfg.rate = a.rate;
    cfg.conflict_ratio = a.conflict_ratio;
    cfg.loss = a.loss;
    cfg.duplicate = a.duplicate;
    cfg.liveness_budget_s = a.liveness_budget;
    cfg.sign_us = a.sign_us;
    cfg.verify_us = a.verify_us;
    cfg.byte_ns = a.byte_ns;
    cfg.batch_us = a.batch_us;
    cfg.batch_window_us = a.batch_window_us;
    cfg.conn_us_per_s = a.conn_us_per_s;
    cfg.host_cores = a.host_cores;
    cfg.threads = a.threads;
    cfg.payload_bytes = a.payload_bytes;
    cfg.max_batch = a.max_batch;
    cfg.twin_ratio = a.twin_ratio;
    cfg.relay = a.relay;
    cfg.lock_round_us = a.lock_round_ms.map(|ms| (ms * 1000.0) as u64);
    cfg.poll_interval_us = a.poll_interval_ms.map(|ms| (ms * 1000.0) as u64);
    cfg.engine_params = a.engine_params;
    cfg.shell_rate_limits = !a.no_rate_limits;
    cfg.transport_meters_streams = !a.no_stream_meter;
    cfg.transport_holds_pushes = !a.no_push_hold;
    cfg.hot_nodes = a.hot_nodes;
    cfg.mesh_delay_max_us = a.mesh_delay_max_us;
    cfg.forget_final_after_us = a.forget_final_after_ms * 1000;
    cfg.profile = match a.profile.as_str() {
        "wan" => Profile::Wan,
        _ => Profile::Lan,
    };
    if let Some(p) = &a.partition {
        match Partition::parse(p, a.duration) {
            Ok(p) => cfg.partition = Some(p),
            Err(e) => {
                eprintln!("bad --partition: {e}");
                std::process::exit(2);
            }
        }
    }
    if let Some(c) = &a.crash {
        let parsed = c.split_once('@').and_then(|(n, w)| {
            let (x, y) = w.split_once('-')?;
            Some((n.parse().ok()?, (x.parse::<f64>().ok()? * 1e6) as u64, (y.parse::<f64>().ok()? * 1e6) as u64))
        });
        match parsed {
            Some(c) => cfg.crash = Some(c),
            None => {
                eprintln!("bad --crash, want NODE@AT-RESTART");
                std::process::exit(2);
            }
        }
    }
    let seed = cfg.seed;
    let r = match pqdag_sim::Sim::new(cfg).map(|sim| match a.debug_node {
        Some(n) => sim.run_debug(n),
        None => sim.run(),
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sim: {e}");
            std::process::exit(2);
        }
    };
    if a.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        println!("{r:#?}");
    }
    // A debug run plays the whole budget and does not judge liveness; safety still counts.
    if r.safety_violations > 0 || (!r.liveness_ok && a.debug_node.is_none()) {
        eprintln!("FAILED: seed {seed} (safety_violations {}, liveness_ok {})", r.safety_violations, r.liveness_ok);
        std::process::exit(1);
    }
}
