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
    /// Store sync policy of the nodes (engine testnet --sync).
    #[arg(long, default_value = "every-batch", value_parser = ["every-batch", "wal-no-sync"])]
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
}
