//! `sim-soak`: runs the simulator over many seeds, Byzantine strategies, Byzantine fractions and
//! cluster sizes, in parallel over the machine's cores, and prints ONE summary line (or one
//! JSON object): runs, safety violations, honest nodes convicted / banned, liveness failures
//! where liveness is expected (Byzantine fraction <= 0.25), and the first failing run with the
//! exact `sim` command that replays it. Exits 1 if any run failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use clap::Parser;
use pqdag_sim::{Report, SimConfig, Strategy};

/// mimalloc, as in the engine: a 1000-node run spent a fifth of its time in glibc's malloc
/// and free (`perf record` of `sim --nodes 1000 --shards 4`); with mimalloc it runs ~35 %
/// faster, with the same trace, for ~9 % more memory (`docs/simulator.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Many simulator runs, one summary.
#[derive(Parser, Debug)]
#[command(name = "sim-soak")]
struct Args {
    /// Seeds per (strategy, fraction, size): 1..=SEEDS.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Cluster sizes, comma separated.
    #[arg(long, default_value = "7,30")]
    sizes: String,
    /// Byzantine fractions, comma separated.
    #[arg(long, default_value = "0.2,0.25,0.33")]
    fractions: String,
    /// Strategies, comma separated (default: every one).
    #[arg(long)]
    strategies: Option<String>,
    /// Also this many seeds at 100 nodes (fraction 0.33, a few strategies).
    #[arg(long, default_value_t = 1)]
    big_seeds: u64,
    /// Strategies of the 100-node runs.
    #[arg(long, default_value = "flip-votes,replay-queries,vote-unknown,mixed")]
    big_strategies: String,
    /// Workload seconds of each run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Submissions per second of each run.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Conflicting-pair fraction of each run.
    #[arg(long, default_value_t = 0.1)]
    conflict_ratio: f64,
    /// Liveness budget of each run, virtual seconds.
    #[arg(long, default_value_t = 20.0)]
    liveness_budget: f64,
    /// Worker threads (0: the machine's cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print one JSON object instead of the summary line.
    #[arg(long)]
    json: bool,
}

/// One run of the soak.
#[derive(Clone)]
struct Run {
    nodes: usize,
    seed: u64,
    byzantine: f64,
    strategy: Strategy,
}

/// Liveness is required at or below this Byzantine fraction; above it only safety.
const LIVENESS_FRACTION: f64 = 0.25;
/// At or below this fraction finality must be fast once the attackers are detected (issue 14:
/// p95 < 1 s at 20 %).
const CONVERGE_FRACTION: f64 = 0.2;
/// The p95 bound at [`CONVERGE_FRACTION`], ms.
const SETTLED_P95_MAX_MS: f64 = 1_000.0;
/// Strategies whose slowness is a documented open limitation (`docs/operations.md`, Known
/// limitations: a member's fat vertices are finalized like anyone's, so honest p95 can pass
/// 1 s at 20 %). Their runs still fail the soak on a safety or liveness failure; their p95 is
/// measured and printed apart ("known slow"), not counted as a failure.
const KNOWN_SLOW: [Strategy; 1] = [Strategy::FatFlood];

impl Run {
    fn config(&self, a: &Args) -> SimConfig {
        let mut c = SimConfig::new(self.nodes, self.seed, a.duration);
        c.byzantine = self.byzantine;
        c.strategy = self.strategy;
        c.rate = a.rate;
        c.conflict_ratio = a.conflict_ratio;
        c.liveness_budget_s = a.liveness_budget;
        c.quiet = true;
        c
    }

    /// The `sim` command that replays this run exactly.
    fn command(&self, a: &Args) -> String {
        format!(
            "sim --nodes {} --seed {} --duration {} --rate {} --conflict-ratio {} --liveness-budget {} --byzantine {} --strategy {} --json",
            self.nodes,
            self.seed,
            a.duration,
            a.rate,
            a.conflict_ratio,
            a.liveness_budget,
            self.byzantine,
            self.strategy.name()
        )
    }

    fn liveness_expected(&self) -> bool {
        self.byzantine <= LIVENESS_FRACTION + 1e-9
    }

    fn speed_expected(&self) -> bool {
        self.byzantine <= CONVERGE_FRACTION + 1e-9
    }
}

/// What one run found.
struct Outcome {
    run: Run,
    report: Result<Report, String>,
}

impl Outcome {
    fn safety_failed(&self) -> bool {
        self.report.as_ref().map_or(true, |r| r.safety_violations > 0)
    }
    fn liveness_failed(&self) -> bool {
        self.run.liveness_expected() && self.report.as_ref().map_or(true, |r| !r.liveness_ok)
    }
    /// p95 finality once every Byzantine node was excluded by every honest one, or of the whole
    /// run for attacks never detected (an undetectable attacker must not slow finality either).
    fn settled_p95(&self) -> Option<f64> {
        let r = self.report.as_ref().ok()?;
        Some(r.finality_after_detection_ms.as_ref().map_or(r.finality_ms.p95, |p| p.p95))
    }
    fn slow(&self) -> bool {
        self.run.speed_expected() && self.settled_p95().is_some_and(|p| p >= SETTLED_P95_MAX_MS)
    }
    fn failed(&self) -> bool {
        self.safety_failed() || self.liveness_failed() || (self.slow() && !KNOWN_SLOW.contains(&self.run.strategy))
    }
    fn why(&self) -> String {
        match &self.report {
            Err(e) => e.clone(),
            Ok(r) if r.safety_violations > 0 => r.first_violation.clone().unwrap_or_default(),
            Ok(r) if r.liveness_ok => format!("p95 finality {:.0} ms once detected (bound {SETTLED_P95_MAX_MS:.0} ms at <= {CONVERGE_FRACTION})", self.settled_p95().unwrap_or(r.finality_ms.p95)),
            Ok(_) => "no convergence within the liveness budget".into(),
        }
    }
}

fn list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>, String> {
    s.split(',').filter(|x| !x.is_empty()).map(|x| x.trim().parse::<T>().map_err(|_| format!("bad list item {x}"))).collect()
}

fn plan(a: &Args) -> Result<Vec<Run>, String> {
    let strategies: Vec<Strategy> = match &a.strategies {
        Some(s) => list(s)?,
        None => Strategy::ALL.to_vec(),
    };
    let sizes: Vec<usize> = list(&a.sizes)?;
    let fractions: Vec<f64> = list(&a.fractions)?;
    let mut runs = Vec::new();
    for &nodes in &sizes {
        for &byzantine in &fractions {
            for &strategy in &strategies {
                for seed in a.first_seed..a.first_seed + a.seeds {
                    runs.push(Run { nodes, seed, byzantine, strategy });
                }
            }
        }
    }
    let big: Vec<Strategy> = list(&a.big_strategies)?;
    for &strategy in &big {
        for seed in a.first_seed..a.first_seed + a.big_seeds {
            runs.push(Run { nodes: 100, seed, byzantine: 0.33, strategy });
        }
    }
    Ok(runs)
}

fn main() {
    pqdag_sim::keep_freed_pages();
    let a = Args::parse();
    let runs = match plan(&a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sim-soak: {e}");
            std::process::exit(2);
        }
    };
    let threads = if a.threads > 0 { a.threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
    let wall = std::time::Instant::now();
    // Biggest runs first, so the slow ones do not finish alone at the end.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(runs[i].nodes));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..runs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(runs.len()).max(1) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                let run = runs[i].clone();
                let report = pqdag_sim::run(run.config(&a));
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(Outcome { run, report });
                }
            });
        }
    });
    let outcomes: Vec<Outcome> = results.into_inner().unwrap_or_default().into_iter().flatten().collect();
    let ok = |o: &Outcome, f: fn(&Report) -> u64| o.report.as_ref().map_or(0, f);
    let safety: u64 = outcomes.iter().map(|o| ok(o, |r| r.safety_violations)).sum();
    let safety_runs = outcomes.iter().filter(|o| o.safety_failed()).count();
    let convicted: u64 = outcomes.iter().map(|o| ok(o, |r| r.honest_convicted as u64)).sum();
    let banned: u64 = outcomes.iter().map(|o| ok(o, |r| r.honest_banned as u64)).sum();
    let liveness = outcomes.iter().filter(|o| o.liveness_failed()).count();
    let held = outcomes.iter().map(|o| ok(o, |r| r.max_bytes_held_for_one_peer)).max().unwrap_or(0);
    let excluded_ms = outcomes.iter().filter_map(|o| o.report.as_ref().ok()).map(|r| r.honest_excluded_max_ms).fold(0.0, f64::max);
    // Honest requests a per-peer budget dropped (reported: a budget too tight for honest traffic).
    let honest_limited: u64 = outcomes.iter().map(|o| ok(o, |r| r.honest_rate_limited + r.honest_stream_metered)).sum();
    let first = outcomes.iter().find(|o| o.failed());
    let slow = outcomes.iter().filter(|o| o.slow()).count();
    let settled_max = outcomes.iter().filter(|o| o.run.speed_expected()).filter_map(Outcome::settled_p95).fold(0.0, f64::max);
    let mut by_strategy: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new();
    for o in &outcomes {
        let e = by_strategy.entry(o.run.strategy.name()).or_default();
        e.0 += 1;
        e.1 += u64::from(o.safety_failed());
        e.2 += u64::from(o.liveness_failed());
        e.3 += u64::from(o.slow());
    }
    let seeds = format!("{}-{}", a.first_seed, a.first_seed + a.seeds.max(1) - 1);
    if a.json {
        let failing: Vec<serde_json::Value> = outcomes
            .iter()
            .filter(|o| o.failed())
            .map(|o| serde_json::json!({"strategy": o.run.strategy.name(), "nodes": o.run.nodes, "byzantine": o.run.byzantine, "seed": o.run.seed, "safety": o.safety_failed(), "liveness": o.liveness_failed(), "slow": o.slow(), "why": o.why(), "command": o.run.command(&a)}))
            .collect();
        let per: serde_json::Map<String, serde_json::Value> =
            by_strategy.iter().map(|(k, v)| (k.to_string(), serde_json::json!({"runs": v.0, "safety_failed": v.1, "liveness_failed": v.2, "slow": v.3}))).collect();
        let j = serde_json::json!({
            "runs": outcomes.len(), "seeds": seeds, "safety_violations": safety, "safety_failed_runs": safety_runs,
            "honest_convicted": convicted, "honest_banned": banned, "liveness_failures": liveness,
            "slow_once_detected": slow, "settled_p95_max_ms": settled_max, "known_slow": KNOWN_SLOW.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "max_bytes_held_for_one_peer": held, "honest_excluded_max_ms": excluded_ms, "honest_rate_limited": honest_limited,
            "first_failure": first.map(|o| o.run.command(&a)), "by_strategy": per, "failing": failing,
            "wall_seconds": wall.elapsed().as_secs_f64(),
        });
        println!("{j}");
    } else {
        let known = |k: &str| KNOWN_SLOW.iter().any(|s| s.name() == k);
        let broken: Vec<String> = by_strategy.iter().filter(|(k, v)| v.1 + v.2 + if known(k) { 0 } else { v.3 } > 0).map(|(k, v)| format!("{k}:{}s/{}l/{}p", v.1, v.2, v.3)).collect();
        let known_slow: Vec<String> = by_strategy.iter().filter(|(k, v)| known(k) && v.3 > 0).map(|(k, v)| format!("{k}:{}p of {}", v.3, v.0)).collect();
        let first_s = first.map_or("none".to_string(), |o| format!("`{}` ({})", o.run.command(&a), o.why()));
        println!(
            "soak: {} runs (seeds {seeds}) safety_violations {safety} in {safety_runs} runs, honest_convicted {convicted}, honest_banned {banned}, liveness_failures {liveness} (byzantine <= {LIVENESS_FRACTION}), p95_once_detected max {settled_max:.0} ms, over {SETTLED_P95_MAX_MS:.0} ms {slow} (byzantine <= {CONVERGE_FRACTION}), max_bytes_held_for_one_peer {held}, honest_excluded_max_ms {excluded_ms:.0}, honest_rate_limited {honest_limited}, failing strategies [{}], known slow (not failing) [{}], first failure: {first_s}, {:.0} s",
            outcomes.len(),
            broken.join(" "),
            known_slow.join(" "),
            wall.elapsed().as_secs_f64()
        );
    }
    if first.is_some() {
        std::process::exit(1);
    }
}
