//! What `bench` samples once per second while the load runs: one scrape of each node's
//! `/metrics` ([`NodePoint`]), one [`Tick`] of the whole cluster, and the progress line printed
//! every 10 s. May call [`super::http`] and [`super::prom`]; keeps no state of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::http;
use super::prom::NodeMetrics;

/// One scrape of one node.
#[derive(Debug, Clone)]
pub struct NodePoint {
    /// Process CPU time, ms.
    pub cpu_ms: f64,
    /// Resident set size, bytes.
    pub rss: f64,
    /// Bytes received on the network so far.
    pub bytes_in: f64,
    /// Bytes sent on the network so far.
    pub bytes_out: f64,
    /// Vertices finalized so far.
    pub finalized: f64,
    /// RSS by part ([`NodeMetrics::memory`]).
    pub memory: std::collections::BTreeMap<String, f64>,
}

/// One tick of the sampler.
#[derive(Debug, Clone)]
pub struct Tick {
    /// Seconds since loadgen was started.
    pub t: f64,
    /// Each node's scrape, `None` when it did not answer.
    pub nodes: Vec<Option<NodePoint>>,
    /// loadgen's CPU ms and RSS bytes (`/proc`).
    pub loadgen: Option<(f64, f64)>,
    /// The machine's busy and total CPU ms (`/proc/stat`).
    pub machine: Option<(f64, f64)>,
    /// `bench`'s own CPU ms.
    pub own_cpu_ms: f64,
    /// Each node's `/ready`: `Some(true)` on 200, `Some(false)` on another answer, `None` when
    /// it does not answer.
    pub ready: Vec<Option<bool>>,
    /// Each node's data directory size in bytes (RocksDB files, every shard), `None` when it
    /// cannot be read.
    pub disk: Vec<Option<f64>>,
}

/// One node of the local testnet, as `bench` starts and watches it.
pub struct Node {
    /// Its name in `cluster.toml` (`node-0`...).
    pub name: String,
    /// Its `config.toml`.
    pub config: PathBuf,
    /// Its metrics server (`/metrics`, `/health`, `/status`).
    pub metrics: SocketAddr,
    /// Its data directory (measured for disk bytes).
    pub data_dir: PathBuf,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

/// One `/metrics` scrape of a node (800 ms timeout); `None` when it does not answer 200.
pub fn scrape(addr: SocketAddr) -> Option<NodeMetrics> {
    match http::get(addr, "/metrics", Duration::from_millis(800)) {
        Ok((200, body)) => Some(NodeMetrics::from_text(&body)),
        _ => None,
    }
}

/// A node's `/ready` (500 ms timeout): `Some(true)` when 200, `None` when it does not answer.
pub fn ready(addr: SocketAddr) -> Option<bool> {
    http::get(addr, "/ready", Duration::from_millis(500)).ok().map(|(code, _)| code == 200)
}

/// Bytes of the regular files under `dir` (depth-bounded: a store is two levels deep), `None`
/// when `dir` cannot be read. Files that vanish mid-walk (compaction) are skipped.
pub fn dir_bytes(dir: &std::path::Path) -> Option<f64> {
    fn walk(dir: &std::path::Path, depth: u32, total: &mut u64) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)?.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() && depth < 6 {
                let _ = walk(&e.path(), depth + 1, total);
            } else if md.is_file() {
                *total += md.len();
            }
        }
        Ok(())
    }
    let mut total = 0u64;
    walk(dir, 0, &mut total).ok()?;
    Some(total as f64)
}

/// The figures of a scrape the timeline keeps.
pub fn point(m: &NodeMetrics) -> NodePoint {
    NodePoint { cpu_ms: m.cpu_ms, rss: m.rss_bytes, bytes_in: m.bytes_in, bytes_out: m.bytes_out, finalized: m.finalized, memory: m.memory.clone() }
}

/// Prints one progress line (finality rate of node-0, CPU of all nodes, max RSS) to stderr.
pub fn progress(tick: &Tick, prev: Option<&Tick>, nodes: &[Node]) {
    let Some(prev) = prev else { return };
    let dt = (tick.t - prev.t).max(0.001);
    let rate = match (tick.nodes.first().cloned().flatten(), prev.nodes.first().cloned().flatten()) {
        (Some(a), Some(b)) => (a.finalized - b.finalized) / dt,
        _ => f64::NAN,
    };
    let cpu: f64 = tick.nodes.iter().zip(&prev.nodes).filter_map(|(a, b)| Some((a.as_ref()?.cpu_ms - b.as_ref()?.cpu_ms) / dt / 10.0)).sum();
    if tick.nodes.iter().all(|n| n.is_none()) {
        eprintln!("bench: t={:>4.0}s  no node answers /metrics", tick.t);
        return;
    }
    let rss = tick.nodes.iter().flatten().map(|p| p.rss).fold(0.0, f64::max) / 1048576.0;
    eprintln!("bench: t={:>4.0}s  node-0 finalizes {rate:>6.0}/s  {} nodes use {cpu:>4.0}% of a core  max RSS {rss:.0} MiB", tick.t, nodes.len());
}
