//! The `bench` command line: what the operator chooses (cluster size, load, sync policy, output
//! folder, ports, timeouts). Plain data; `bench` (`src/bin/bench.rs`) parses it and every other
//! module here only reads it.

use std::path::PathBuf;

use clap::Parser;

/// The options of one `bench` run (`bench --help`).
#[derive(Parser, Debug, Clone)]
#[command(name = "bench", about = "Run a local pqdag cluster under loadgen and report throughput, latency, CPU, memory and agreement", long_about = None)]
pub struct Args {
    /// Nodes in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Open-loop submissions per second (loadgen --rate).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of load (loadgen --duration).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Output folder [default: bench-out/<UTC timestamp>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// First port of the testnet (node i: UDP base+20i, client +18, metrics +19)
    /// [default: the first free range from 27000 up].
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Payload bytes per submission (loadgen --payload-bytes).
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Fraction of double-spending submissions (loadgen --conflict-ratio).
    #[arg(long, default_value_t = 0.0)]
    pub conflict_ratio: f64,
    /// Shards (pinned cores, each with its own store and signer) per node (engine testnet
    /// --shards). On a machine with fewer cores than nodes x shards the shards share cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub shards: u16,
    /// Store sync policy of the nodes (engine testnet --sync).
    #[arg(long, default_value = "by-class", value_parser = ["by-class", "every-batch", "wal-no-sync"])]
    pub sync: String,
    /// Seconds loadgen waits for outstanding decisions after the load (loadgen --drain).
    #[arg(long, default_value_t = 15.0)]
    pub drain: f64,
    /// Client identity loadgen proves (loadgen --key); its public key is added to every node's
    /// `client_keys` [default: the testnet's `client/client.key`].
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Seconds to wait for every node's /health = 200 [default: 60, or 1.5 per node above 40:
    /// 100 processes on a 2-core machine need ~N^2/2 post-quantum handshakes to mesh].
    #[arg(long)]
    pub health_timeout: Option<f64>,
    /// Crash one node under load: `NODE@KILL-RESTART`, seconds since the load started (`2@6-9`:
    /// SIGKILL node-2 at t=6 s, restart it on the same data dir at t=9 s). The report gains
    /// `crash`: finality per second on the survivors, and when the node was ready again.
    #[arg(long, value_parser = parse_crash)]
    pub crash: Option<CrashPlan>,
    /// Run one node as a real Byzantine attacker: `NODE:MODE` (`2:vertex-flood`: node-2 runs
    /// `engine run --byzantine vertex-flood`; modes as `engine run --help` lists them). loadgen
    /// then submits to the honest nodes only, agreement is checked among them, and the report
    /// gains `byzantine` (compare throughput and RSS with the same run without it).
    #[arg(long, value_parser = parse_byzantine)]
    pub byzantine: Option<ByzPlan>,
    /// CPU priority (`nice`, 0-19) of the `--byzantine` node. An attacker on its own host burns
    /// its own CPU; on one shared machine its signing loop would take the honest nodes' cores
    /// and the run would measure the machine, not the defence. 19 (the default) lets it use
    /// only what the honest nodes leave idle; 0 shares the cores as an equal.
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub byzantine_nice: i32,
    /// Store retention of every node, seconds (`[storage] retain_final_secs`; 0: keep
    /// everything, the default). The report's per-node `disk_bytes_*` then show the bound.
    #[arg(long, default_value_t = 0)]
    pub retain_final_secs: u64,
    /// Most transactions (payloads) per vertex (`max_batch` in `cluster.toml`; 1: one payload
    /// per vertex, the design card's benchmark). `--rate` counts payloads per second.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_batch: u64,
    /// Keep each node's data directory (its RocksDB store, ~0.4-0.7 GB after a minute of load)
    /// after a run whose checks passed. Without it they are removed then (the report, logs,
    /// metrics and cluster files stay); a run that failed a check keeps them for diagnosis
    #[arg(long)]
    pub keep_data: bool,
    /// How long a busy node lets a batch wait for more payloads, microseconds
    /// (`batch_linger_us` in `cluster.toml`) [default: one poll interval]
    #[arg(long)]
    pub batch_linger_us: Option<u64>,
    /// Length of a lock round, ms (`lock_round_ms` in `cluster.toml`, docs/consensus.md 8d;
    /// 0: lock rounds off) [default: the cluster file's, 300]
    #[arg(long)]
    pub lock_round_ms: Option<u64>,
    /// How often each node starts a poll, ms (`poll_interval_ms` in `cluster.toml`; at least
    /// 10) [default: derived from the sample size]
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: Option<u64>,
    /// Run once per offered rate, `R1,R2,...` (a fresh cluster each, in `OUT/rate-R`; `--rate` is
    /// ignored), then write `OUT/sweep.json`, `sweep.md` and `sweep.svg`: finalized throughput
    /// against client-observed p50 and p99, and the highest rate that held `--sweep-p99-ms`.
    #[arg(long)]
    pub sweep: Option<String>,
    /// A load schedule instead of `--rate` and `--duration`: `RATE:SECONDS,...` back to back
    /// (loadgen --phases). `4000:20,8000:20,4000:20` overloads the cluster at twice a rate it
    /// sustains, then drops back: the report gains a table per phase (offered, finalized,
    /// refused as overloaded, latency, RSS) and the run fails unless the last phase finalized
    /// every payload it offered
    #[arg(long, conflicts_with = "sweep")]
    pub phases: Option<String>,
    /// The p99 bound of `--sweep`'s "highest rate sustained", ms.
    #[arg(long, default_value_t = 400.0)]
    pub sweep_p99_ms: f64,
}

/// One `--byzantine` plan: which node attacks, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ByzPlan {
    /// Index of the node (`node-<i>`).
    pub node: usize,
    /// `engine run --byzantine` mode.
    pub mode: String,
}

/// Parses `NODE:MODE`, e.g. `2:vertex-flood`.
pub fn parse_byzantine(s: &str) -> Result<ByzPlan, String> {
    let bad = || format!("--byzantine {s:?}: expected NODE:MODE, e.g. 2:vertex-flood");
    let (node, mode) = s.split_once(':').ok_or_else(bad)?;
    let node: usize = node.trim().parse().map_err(|_| bad())?;
    let mode = mode.trim();
    if mode.is_empty() || !mode.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return Err(bad());
    }
    Ok(ByzPlan { node, mode: mode.to_string() })
}

/// One `--crash` plan: which node, when it is killed and when it is started again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrashPlan {
    /// Index of the node (`node-<i>`).
    pub node: usize,
    /// Seconds since the load started when it gets SIGKILL.
    pub kill_s: f64,
    /// Seconds since the load started when it is started again.
    pub restart_s: f64,
}

/// Parses `NODE@KILL-RESTART`, e.g. `2@6-9`.
pub fn parse_crash(s: &str) -> Result<CrashPlan, String> {
    let bad = || format!("--crash {s:?}: expected NODE@KILL-RESTART in seconds, e.g. 2@6-9");
    let (node, times) = s.split_once('@').ok_or_else(bad)?;
    let (kill, restart) = times.split_once('-').ok_or_else(bad)?;
    let node: usize = node.trim().parse().map_err(|_| bad())?;
    let kill_s: f64 = kill.trim().parse().map_err(|_| bad())?;
    let restart_s: f64 = restart.trim().parse().map_err(|_| bad())?;
    if !(kill_s >= 0.0 && restart_s > kill_s && restart_s.is_finite()) {
        return Err(format!("--crash {s:?}: need 0 <= KILL < RESTART"));
    }
    Ok(CrashPlan { node, kill_s, restart_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_plans_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_crash("2@6-9"), Ok(CrashPlan { node: 2, kill_s: 6.0, restart_s: 9.0 }));
        assert_eq!(parse_crash("0@1.5-2.5").map(|c| c.kill_s), Ok(1.5));
        for bad in ["2@9-6", "2@6", "x@1-2", "2-6@9", "", "1@-1-2", "1@3-3"] {
            assert!(parse_crash(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn byzantine_plans_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_byzantine("2:vertex-flood"), Ok(ByzPlan { node: 2, mode: "vertex-flood".into() }));
        for bad in ["2", ":flood", "x:flood", "2:", "2:Flood", "2:a b"] {
            assert!(parse_byzantine(bad).is_err(), "{bad} accepted");
        }
    }
}
