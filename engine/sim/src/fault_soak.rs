//! `sim-faults`: the random-fault soak. Every seed draws its own fault mix from one seeded
//! stream: cluster size, shards, a crash and restart of an honest node, message loss and
//! duplication, a partition that heals, conflicting pairs, and Byzantine nodes up to 20 % with a
//! strategy of their own, never more than f = (N-1)/3 faulty nodes at once (a crashed node
//! counts). Each run must be safe (the checker after every step) and live (every
//! honest submission decided within the liveness budget after the workload). Runs in parallel
//! over the machine's cores and prints ONE summary line (or one JSON object) with the first
//! failing seed and the exact `sim` command that replays it. Exits 1 if any run failed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use clap::Parser;
use pqdag_sim::{Partition, Report, SimConfig, Strategy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// mimalloc, as in the engine: a 1000-node run spent a fifth of its time in glibc's malloc
/// and free (`perf record` of `sim --nodes 1000 --shards 4`); with mimalloc it runs ~35 %
/// faster, with the same trace, for ~9 % more memory (`docs/simulator.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Many randomly faulted simulator runs, one summary.
#[derive(Parser, Debug)]
#[command(name = "sim-faults")]
struct Args {
    /// Seeds: FIRST..FIRST+SEEDS.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Workload seconds of each run (faults happen inside it).
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Submissions per second of each run.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Liveness budget of each run after the workload, virtual seconds.
    #[arg(long, default_value_t = 20.0)]
    liveness_budget: f64,
    /// Largest Byzantine fraction drawn (liveness is required up to it).
    #[arg(long, default_value_t = 0.2)]
    max_byzantine: f64,
    /// Shard counts drawn from, comma separated (S = 2 adds cross-shard sets and restarts).
    #[arg(long, default_value = "1,2")]
    shards: String,
    /// Most delay of a message between two shards of a node, us (`sim --mesh-delay-max-us`).
    #[arg(long, default_value_t = pqdag_sim::MESH_DELAY_MAX_US)]
    mesh_delay_max_us: u64,
    /// Worker threads (0: the machine's cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Threads of each run (`sim --threads`): above 1, every run is batched (docs/simulator.md,
    /// "Two threads"), to soak that schedule under the same fault mixes.
    #[arg(long, default_value_t = 1)]
    sim_threads: usize,
    /// Print each seed's `sim` replay command, one per line, and run nothing.
    #[arg(long)]
    commands: bool,
    /// Print one JSON object instead of the summary line.
    #[arg(long)]
    json: bool,
    /// `--shards` parsed.
    #[arg(skip)]
    shard_choices: Vec<u32>,
}

/// The fault mix of one seed.
#[derive(Clone, Debug)]
struct Mix {
    seed: u64,
    nodes: usize,
    shards: u32,
    loss: f64,
    duplicate: f64,
    conflict_ratio: f64,
    byzantine: f64,
    strategy: Strategy,
    /// (node, down at s, back at s)
    crash: Option<(usize, f64, f64)>,
    /// `sim --partition` spelling.
    partition: Option<String>,
    /// Transactions per vertex at most (batching and re-issue when > 1).
    max_batch: usize,
}

/// Strategies drawn for the Byzantine nodes: the first 14 of `sim --strategy`, fixed, so a
/// seed keeps naming the same run (a strategy added to the draw would remap every seed after
/// the draw; `alert-flood`, added 2026-12-05, runs in `sim-soak` and the red-team tests).
const STRATEGIES: [Strategy; 14] = {
    let a = Strategy::ALL;
    [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]]
};

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Mix {
    /// Draws the mix of `seed` (one stream, independent of the run's own streams).
    fn draw(seed: u64, a: &Args) -> Mix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_fa17_0000_0000);
        let nodes = [4usize, 5, 7, 10][rng.random_range(0..4)];
        let shards = if rng.random_bool(0.25) { 2 } else { 1 };
        // Drawn either way, so the other draws of a seed do not depend on --shards.
        let shards = if a.shard_choices.contains(&shards) { shards } else { a.shard_choices[0] };
        let loss = if rng.random_bool(0.6) { round2(rng.random_range(0.0..0.03)) } else { 0.0 };
        let duplicate = if rng.random_bool(0.4) { round2(rng.random_range(0.0..0.03)) } else { 0.0 };
        let conflict_ratio = if rng.random_bool(0.7) { round2(rng.random_range(0.0..0.3)) } else { 0.0 };
        let d = a.duration;
        // At most f = (N-1)/3 faulty nodes at once, crashed ones included: liveness (and the
        // quorum rules' safety argument) is promised only within that bound.
        let f = (nodes - 1) / 3;
        let crashes = f > 0 && rng.random_bool(0.6);
        // Byzantine nodes are the last ones (SimConfig::byzantine); at most max_byzantine of N.
        let byz_max = ((a.max_byzantine * nodes as f64 + 1e-9).floor() as usize).min(f - usize::from(crashes));
        let byz = if byz_max > 0 && rng.random_bool(0.5) { rng.random_range(1..=byz_max) } else { 0 };
        let byzantine = byz as f64 / nodes as f64;
        let strategy = STRATEGIES[rng.random_range(0..STRATEGIES.len())];
        let honest = nodes - byz;
        let crash = if crashes {
            let node = rng.random_range(0..honest);
            let at = round2(rng.random_range(0.1 * d..0.6 * d));
            let back = round2(at + rng.random_range(0.1 * d..0.35 * d));
            Some((node, at, back))
        } else {
            None
        };
        let partition = if rng.random_bool(0.35) {
            // Two groups over all nodes; heals inside the workload.
            let cut = rng.random_range(1..nodes);
            let at = round2(rng.random_range(0.1 * d..0.5 * d));
            let end = round2(at + rng.random_range(0.1 * d..0.35 * d));
            Some(format!("0-{}|{}-{}@{at}-{end}", cut - 1, cut, nodes - 1))
        } else {
            None
        };
        // Drawn last, so every earlier draw of a seed is what it was before batching existed.
        let max_batch = [1usize, 1, 8, 64][rng.random_range(0..4)];
        Mix { seed, nodes, shards, loss, duplicate, conflict_ratio, byzantine: (byzantine * 1e4).ceil() / 1e4, strategy, crash, partition, max_batch }
    }

    fn config(&self, a: &Args) -> Result<SimConfig, String> {
        let mut c = SimConfig::new(self.nodes, self.seed, a.duration);
        c.shards = self.shards;
        c.rate = a.rate;
        c.loss = self.loss;
        c.duplicate = self.duplicate;
        c.conflict_ratio = self.conflict_ratio;
        c.max_batch = self.max_batch;
        c.byzantine = self.byzantine;
        c.strategy = self.strategy;
        c.crash = self.crash.map(|(n, at, back)| (n, (at * 1e6) as u64, (back * 1e6) as u64));
        c.partition = match &self.partition {
            Some(p) => Some(Partition::parse(p, a.duration)?),
            None => None,
        };
        c.liveness_budget_s = a.liveness_budget;
        c.mesh_delay_max_us = a.mesh_delay_max_us;
        c.threads = a.sim_threads;
        c.quiet = true;
        Ok(c)
    }

    /// The `sim` command that replays this run exactly.
    fn command(&self, a: &Args) -> String {
        let mut s = format!(
            "sim --nodes {} --shards {} --seed {} --duration {} --rate {} --liveness-budget {} --loss {} --duplicate {} --conflict-ratio {}",
            self.nodes, self.shards, self.seed, a.duration, a.rate, a.liveness_budget, self.loss, self.duplicate, self.conflict_ratio
        );
        if self.max_batch > 1 {
            s += &format!(" --max-batch {}", self.max_batch);
        }
        if self.shards > 1 && a.mesh_delay_max_us != pqdag_sim::MESH_DELAY_MAX_US {
            s += &format!(" --mesh-delay-max-us {}", a.mesh_delay_max_us);
        }
        if self.byzantine > 0.0 {
            s += &format!(" --byzantine {} --strategy {}", self.byzantine, self.strategy.name());
        }
        if let Some((n, at, back)) = self.crash {
            s += &format!(" --crash {n}@{at}-{back}");
        }
        if let Some(p) = &self.partition {
            s += &format!(" --partition '{p}'");
        }
        if a.sim_threads > 1 {
            s += &format!(" --threads {}", a.sim_threads);
        }
        s + " --json"
    }
}

struct Outcome {
    mix: Mix,
    report: Result<Report, String>,
}

impl Outcome {
    fn safety_failed(&self) -> bool {
        self.report.as_ref().map_or(true, |r| r.safety_violations > 0 || r.honest_convicted > 0 || r.honest_banned > 0)
    }
    fn liveness_failed(&self) -> bool {
        self.report.as_ref().map_or(true, |r| !r.liveness_ok)
    }
    fn failed(&self) -> bool {
        self.safety_failed() || self.liveness_failed()
    }
    fn why(&self) -> String {
        match &self.report {
            Err(e) => e.clone(),
            Ok(r) if r.safety_violations > 0 => r.first_violation.clone().unwrap_or_default(),
            Ok(r) if r.honest_convicted > 0 || r.honest_banned > 0 => format!("honest convicted {} banned {}", r.honest_convicted, r.honest_banned),
            Ok(r) => format!("no convergence within the liveness budget ({} of {} final)", r.finalized, r.submitted),
        }
    }
}

fn main() {
    pqdag_sim::keep_freed_pages();
    let a = Args::parse();
    if !(0.0..=0.25).contains(&a.max_byzantine) {
        eprintln!("sim-faults: --max-byzantine must be in [0, 0.25] (liveness is only promised up to a quarter)");
        std::process::exit(2);
    }
    let mut a = a;
    a.shard_choices = match a.shards.split(',').map(|x| x.trim().parse::<u32>()).collect::<Result<Vec<u32>, _>>() {
        Ok(v) if !v.is_empty() && v.iter().all(|&s| (1..=8).contains(&s)) => v,
        _ => {
            eprintln!("sim-faults: --shards wants a list of shard counts in 1..=8, e.g. 1,2");
            std::process::exit(2);
        }
    };
    let a = a;
    let mixes: Vec<Mix> = (a.first_seed..a.first_seed + a.seeds).map(|s| Mix::draw(s, &a)).collect();
    if a.commands {
        for m in &mixes {
            println!("{}", m.command(&a));
        }
        return;
    }
    let threads = if a.threads > 0 { a.threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
    let wall = std::time::Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..mixes.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(mixes.len()).max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(mix) = mixes.get(i).cloned() else { break };
                // A panic (a core assertion) is a failed run with its seed, not a dead soak.
                let report = mix.config(&a).and_then(|c| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pqdag_sim::run(c))).unwrap_or_else(|p| {
                        let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                        Err(format!("panic: {msg}"))
                    })
                });
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(Outcome { mix, report });
                }
            });
        }
    });
    let outcomes: Vec<Outcome> = results.into_inner().unwrap_or_default().into_iter().flatten().collect();
    let ok = |o: &Outcome, f: fn(&Report) -> u64| o.report.as_ref().map_or(0, f);
    let safety: u64 = outcomes.iter().map(|o| ok(o, |r| r.safety_violations)).sum();
    let convicted: u64 = outcomes.iter().map(|o| ok(o, |r| r.honest_convicted as u64)).sum();
    let banned: u64 = outcomes.iter().map(|o| ok(o, |r| r.honest_banned as u64)).sum();
    // Honest requests the shells' per-peer budgets dropped: reported, not a failure (a budget
    // that bites honest traffic slows it; the budgets are set at twice what an honest node asks).
    let honest_limited: u64 = outcomes.iter().map(|o| ok(o, |r| r.honest_rate_limited + r.honest_stream_metered)).sum();
    let liveness = outcomes.iter().filter(|o| o.liveness_failed()).count();
    // Of those, runs that left no honest creator's vertex processing anywhere: what is left is
    // a Byzantine creator's undecided vertices (an equivocator's rogue set, for which Avalanche
    // promises no decision) or honest nodes whose finalized sets still differ.
    let rogue_only = outcomes.iter().filter(|o| o.liveness_failed() && o.report.as_ref().is_ok_and(|r| r.undecided_honest_max == 0)).count();
    let failed = outcomes.iter().filter(|o| o.failed()).count();
    let count = |f: fn(&Mix) -> bool| outcomes.iter().filter(|o| f(&o.mix)).count();
    let (crashes, partitions, byz, lossy) = (count(|m| m.crash.is_some()), count(|m| m.partition.is_some()), count(|m| m.byzantine > 0.0), count(|m| m.loss > 0.0));
    let first = outcomes.iter().find(|o| o.failed());
    let seeds = format!("{}-{}", a.first_seed, a.first_seed + a.seeds.max(1) - 1);
    let p95_max = outcomes.iter().filter_map(|o| o.report.as_ref().ok()).map(|r| r.finality_ms.p95).fold(0.0, f64::max);
    if a.json {
        let failing: Vec<serde_json::Value> = outcomes
            .iter()
            .filter(|o| o.failed())
            .map(|o| serde_json::json!({"seed": o.mix.seed, "safety": o.safety_failed(), "liveness": o.liveness_failed(), "undecided_honest_max": o.report.as_ref().ok().map(|r| r.undecided_honest_max), "why": o.why(), "command": o.mix.command(&a)}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "runs": outcomes.len(), "seeds": seeds, "failed_runs": failed, "safety_violations": safety,
                "honest_convicted": convicted, "honest_banned": banned, "liveness_failures": liveness,
                "honest_rate_limited": honest_limited,
                "liveness_failures_no_honest_vertex_processing": rogue_only,
                "runs_with_crash": crashes, "runs_with_partition": partitions, "runs_with_byzantine": byz, "runs_with_loss": lossy,
                "finality_p95_ms_max": p95_max, "first_failure": first.map(|o| o.mix.command(&a)), "failing": failing,
                "wall_seconds": wall.elapsed().as_secs_f64(),
            })
        );
    } else {
        let first_s = first.map_or("none".to_string(), |o| format!("seed {}: `{}` ({})", o.mix.seed, o.mix.command(&a), o.why()));
        println!(
            "faults: {} runs (seeds {seeds}; {crashes} with a crash, {partitions} a partition, {byz} Byzantine <= {}, {lossy} lossy) failed {failed}: safety_violations {safety}, honest_convicted {convicted}, honest_banned {banned}, liveness_failures {liveness} ({rogue_only} with no honest creator's vertex left processing), honest_rate_limited {honest_limited}; worst p95 {p95_max:.0} ms; first failure: {first_s}; {:.0} s",
            outcomes.len(),
            a.max_byzantine,
            wall.elapsed().as_secs_f64()
        );
    }
    if first.is_some() {
        std::process::exit(1);
    }
}
