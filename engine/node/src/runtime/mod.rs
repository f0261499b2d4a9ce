//! The node runtime: one pinned glommio executor per shard, the metrics thread, and signal
//! handling. See docs/architecture.md.

pub mod byzantine;
mod heap;
mod mailbox;
pub mod mesh;
pub mod metrics;
pub mod shard;
pub mod sharded_histogram;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use pqdag_core::Params;
use pqdag_storage::SyncPolicy;
use tracing::{error, info};

use crate::config::{ConfigError, NodeConfig, SyncMode};
use crate::export::shard_dir;
use metrics::{Metrics, NodeStatus, ShardStatus};
use shard::{run_shard, ShardSetup};

/// Why the node could not start or stopped abnormally. Printed as one line; exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Config, cluster file or key problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An address could not be resolved or bound.
    #[error("{0}")]
    Address(String),
    /// A shard failed.
    #[error("shard {shard}: {message}")]
    Shard {
        /// Which.
        shard: u16,
        /// Why.
        message: String,
    },
    /// The host cannot run the node (see `engine run --check-config`).
    #[error("host: {0}")]
    Host(String),
    /// Parameters are invalid for this cluster.
    #[error("consensus parameters: {0}")]
    Params(String),
}

/// How long a final vertex keeps its payload and signature in memory (then only the store has
/// them): bounds RSS to ~0.3 KB per old final vertex instead of ~5 KB.
pub const FINAL_IN_MEMORY_US: u64 = 10_000_000;

/// Most bytes of whole final vertices a node keeps in memory (split evenly over its shards);
/// past it the oldest are stripped before `FINAL_IN_MEMORY_US`. 10 s is ~17 MB at the
/// README's 1 200 payloads/s, but ~115 MB at 2 300 one-payload vertices/s, which put a node
/// over the 500 MB target under overload (`docs/benchmark.md`, "Whole finals by bytes").
pub const FINAL_IN_MEMORY_BYTES: usize = 48 << 20;

/// How long a final vertex keeps its record in the consensus core; then only its id stays (and
/// of its decided conflict set, the winner): ~1 KB -> ~0.1 KB per old final vertex. With
/// batching a vertex spends up to thousands of keys, each a conflict set until then: at 10 000
/// payloads/s, 30 s held 300 000 sets (~200 MB). 12 s held 120 000 (RSS flat near 410 MiB)
/// but the partition test (`tests/partition.rs`) then failed in 2 of 11 local runs and 2 of 3
/// CI runs (0 of 8 at 30 s): kept at 30 s until that interaction is understood.
pub const FINAL_RECORD_US: u64 = 30_000_000;

/// How long a forgotten final's id (and its decided keys' winners) stays in the core's memory
/// before only the store answers for it (`shard/archive.rs`): memory stays flat whatever the
/// history length, at one bloom-filtered point read per lookup of an older id.
pub const ARCHIVE_AFTER_US: u64 = 30_000_000;

/// Most forgotten ids and decided keys a node keeps in memory (split evenly over its shards);
/// past it the oldest go to the store early (once 2 s old). 30 s of decided keys at the 1 200
/// payloads/s of the README is ~36 000 (not bound), but ~330 000 at 11 000 payloads/s, ~50 MB
/// of a node (`docs/benchmark.md`, "Forgotten keys by count").
pub const FORGOTTEN_IN_MEMORY_MAX: usize = 98_304;

/// Memory each shard's executor sets aside for io_uring buffers (glommio's `io_memory`,
/// default 10 MiB). The node does no file I/O through glommio (RocksDB does its own); only
/// UDP sends and one-byte peeks take buffers from it, at most `SENDS_IN_FLIGHT_MAX` (32)
/// datagrams at a time, and past it glommio takes buffers from the heap. The 10 MiB were
/// allocated whole at start, counted as committed Rust heap, and touched a block at a time as
/// glommio's buddy allocator split them: 9 MiB less of the ceiling RSS creeps up to
/// (`docs/benchmark.md`, runs U and V).
pub const IO_MEMORY_BYTES: usize = 1 << 20;

/// The fastest poll cadence of the engine (`pqdag_core::ENGINE_POLL_INTERVAL_US`).
pub const POLL_INTERVAL_US: u64 = pqdag_core::ENGINE_POLL_INTERVAL_US;

/// The poll cadence for a sample of `k` peers when the cluster file names none (the rule and
/// its reasons: `pqdag_core::engine_poll_interval_us`, shared with `sim --engine-params`).
pub fn default_poll_interval_us(k: usize) -> u64 {
    pqdag_core::engine_poll_interval_us(k)
}

/// Protocol parameters from the cluster file, on top of the LAN profile, for `n` nodes.
pub fn params_for(cluster: &crate::config::ClusterFile) -> Result<Params, NodeError> {
    let n = cluster.nodes.len();
    let p = &cluster.params;
    let mut params = Params::lan_default();
    (params.sample_size, params.alpha) = pqdag_core::sample_for(n, p.sample_size, p.alpha_threshold);
    let k = params.sample_size;
    params.beta = u32::try_from(p.beta_threshold).map_err(|_| NodeError::Params("beta too large".into()))?;
    params.finalization_threshold = p.finalization_threshold;
    params.query_timeout_us = p.query_timeout_ms.saturating_mul(1000);
    // The node serves old vertices from RocksDB, so memory keeps only what consensus needs.
    params.strip_final_after_us = FINAL_IN_MEMORY_US;
    params.strip_final_bytes_max = FINAL_IN_MEMORY_BYTES / usize::from(cluster.shards.max(1));
    params.forget_final_after_us = FINAL_RECORD_US;
    params.archive_after_us = ARCHIVE_AFTER_US;
    params.archive_entries_max = FORGOTTEN_IN_MEMORY_MAX / usize::from(cluster.shards.max(1));
    params.max_batch = p.max_batch;
    params.lock_round_us = p.lock_round_ms.saturating_mul(1000);
    params.poll_interval_us = match p.poll_interval_ms {
        Some(ms) if ms.saturating_mul(1000) < POLL_INTERVAL_US => {
            // Peers budget 200 queries a second from each node (`pqdag_core::ratelimit`).
            return Err(NodeError::Params(format!("poll_interval_ms = {ms} is under {} ms: peers would drop the queries as a flood", POLL_INTERVAL_US / 1000)));
        }
        Some(ms) => ms.saturating_mul(1000),
        None => default_poll_interval_us(k),
    };
    // A busy node's batch waits one poll interval unless the cluster file says otherwise: a
    // vertex then waits at most one more poll on top of its beta (half of one on average), for
    // several times fewer vertices under load (docs/benchmark.md, "Batch linger").
    params.batch_linger_us = p.batch_linger_us.unwrap_or(params.poll_interval_us);
    params.polls_in_flight_max = params.polls_in_flight_max.max(8);
    params.validate(n).map_err(|e| NodeError::Params(e.to_string()))?;
    Ok(params)
}

fn sync_policy(m: SyncMode) -> SyncPolicy {
    match m {
        SyncMode::ByClass => SyncPolicy::ByClass,
        SyncMode::EveryBatch => SyncPolicy::EveryBatch,
        SyncMode::WalNoSync => SyncPolicy::WalNoSync,
    }
}

/// For each shard, the decided statuses of other shards' vertices its stored vertices name as
/// parents (read once from every shard's store before the shards start; see
/// `Core::restore_remote_facts`).
fn cross_shard_facts(data_dir: &Path, shards: u16, sync: SyncPolicy) -> Result<Vec<Vec<(pqdag_wire::VertexId, pqdag_core::VertexStatus)>>, NodeError> {
    use pqdag_storage::{Status, Store};
    use std::collections::{HashMap, HashSet};
    let mut decided: HashMap<pqdag_wire::VertexId, pqdag_core::VertexStatus> = HashMap::new();
    let mut wanted: Vec<HashSet<pqdag_wire::VertexId>> = vec![HashSet::new(); usize::from(shards)];
    for s in 0..shards {
        let dir = shard_dir(data_dir, s);
        if !dir.exists() {
            continue;
        }
        let store = pqdag_storage::RocksStore::open(&dir, sync).map_err(|e| NodeError::Shard { shard: s, message: format!("storage: {e}") })?;
        for sv in store.load_all().map_err(|e| NodeError::Shard { shard: s, message: format!("storage: {e}") })? {
            match sv.status {
                Status::Final { .. } => {
                    decided.insert(sv.vertex.id, pqdag_core::VertexStatus::Final);
                }
                Status::Rejected => {
                    decided.insert(sv.vertex.id, pqdag_core::VertexStatus::Rejected);
                }
                Status::Processing => {}
            }
            for p in &sv.vertex.parents {
                if pqdag_core::shard_of_vertex(p, u32::from(shards)) != u32::from(s) {
                    wanted[usize::from(s)].insert(*p);
                }
            }
        }
    }
    // Parents pruned by retention are not visited above, but their owner store keeps their
    // status: look those up (a second open of the owner shard's store, only when needed).
    let missing: HashSet<pqdag_wire::VertexId> = wanted.iter().flatten().filter(|id| !decided.contains_key(id)).copied().collect();
    for s in 0..shards {
        let dir = shard_dir(data_dir, s);
        let mine: Vec<_> = missing.iter().filter(|id| pqdag_core::shard_of_vertex(id, u32::from(shards)) == u32::from(s)).collect();
        if mine.is_empty() || !dir.exists() {
            continue;
        }
        let err = |e: pqdag_storage::StorageError| NodeError::Shard { shard: s, message: format!("storage: {e}") };
        let store = pqdag_storage::RocksStore::open(&dir, sync).map_err(err)?;
        for id in mine {
            match store.status(id).map_err(err)? {
                Some(Status::Final { .. }) => decided.insert(*id, pqdag_core::VertexStatus::Final),
                Some(Status::Rejected) => decided.insert(*id, pqdag_core::VertexStatus::Rejected),
                _ => None,
            };
        }
    }
    Ok(wanted.into_iter().map(|w| w.into_iter().filter_map(|id| decided.get(&id).map(|st| (id, *st))).collect()).collect())
}

/// A fresh seed per start for the core's sampling RNG (not a key: only needs to differ).
fn seed_from_os() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, NodeError> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| NodeError::Address(format!("{host}:{port}: {e}")))?
        .next()
        .ok_or_else(|| NodeError::Address(format!("{host}:{port}: no address")))
}

/// Refuses to start on a UDP port another process holds. glommio binds with SO_REUSEPORT, so a
/// second process binding the same port does not fail: the kernel splits the datagrams between
/// them (the operations walkthrough's four loopback nodes all had their client API on
/// 127.0.0.1:7018, and a client reached whichever node the kernel picked). A plain bind fails
/// while any other socket holds the port, so it is tried and released first.
fn udp_port_free(what: &str, addr: SocketAddr) -> Result<(), NodeError> {
    std::net::UdpSocket::bind(addr).map(drop).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse { " (another process holds it: is this node already running, or does another node on this host use the same address?)" } else { "" };
        NodeError::Address(format!("{what} udp {addr}: {e}{hint}"))
    })
}

/// Runs the node described by `config_path` until `stop` is set (SIGINT/SIGTERM in the binary).
pub fn run_node(config_path: &Path, stop: Arc<AtomicBool>, byzantine: Option<byzantine::ByzantineMode>) -> Result<(), NodeError> {
    heap::tune_c_heap();
    heap::tune_rust_heap();
    let cfg = NodeConfig::load(config_path)?;
    let (cluster, me, keypair) = cfg.resolve(config_path)?;
    let params = params_for(&cluster)?;
    for w in crate::host_tuning::check_host() {
        if w.fatal {
            // glommio cannot run (io_uring disabled, memlock below 512 KiB): say why up front
            // instead of failing inside an executor.
            return Err(NodeError::Host(w.to_string()));
        }
        tracing::warn!("host tuning: {w}");
    }
    let keypair = Arc::new(keypair);
    if let Some(mode) = byzantine {
        tracing::warn!(?mode, "BYZANTINE TEST MODE: this node deliberately misbehaves; never run it in production");
    }
    let public_keys = cluster.public_keys()?;
    let client_keys = cfg.client_public_keys()?;
    if client_keys.is_empty() {
        tracing::warn!(client = %cfg.client_addr, "client_keys is empty: the client API refuses every client");
    }
    let metrics = Arc::new(Metrics::new());
    let shards: Vec<Arc<ShardStatus>> = (0..cluster.shards).map(|_| Arc::new(ShardStatus::default())).collect();
    let status = Arc::new(NodeStatus {
        node_id: hex::encode(keypair.public().node_id()),
        name: cfg.name.clone(),
        nodes: cluster.nodes.len(),
        shards: shards.clone(),
        started: std::time::Instant::now(),
    });
    let http_stop = Arc::new(AtomicBool::new(false));
    let http = metrics::serve(cfg.metrics_addr, metrics.clone(), status.clone(), http_stop.clone())
        .map_err(|e| NodeError::Address(e.to_string()))?;
    info!(name = %cfg.name, node_id = %status.node_id, nodes = cluster.nodes.len(), shards = cluster.shards, k = params.sample_size, alpha = params.alpha, beta = params.beta, metrics = %cfg.metrics_addr, client = %cfg.client_addr, "starting node");

    // Every UDP port this node will bind, before any shard binds it (glommio's SO_REUSEPORT
    // would let it share a port another process holds).
    let peer_bind = |s: u16| resolve(&cfg.listen_host, cfg.bind_base_port.unwrap_or(cluster.nodes[me].base_port) + s);
    udp_port_free("client API", cfg.client_addr)?;
    for s in 0..cluster.shards {
        udp_port_free("peer port", peer_bind(s)?)?;
    }

    let mesh = (cluster.shards > 1).then(|| mesh::MeshSetup::new(usize::from(cluster.shards)));
    let mut remote_facts = if cluster.shards > 1 { cross_shard_facts(&cfg.data_dir, cluster.shards, sync_policy(cfg.sync))? } else { Vec::new() };
    let winner_stores: shard::WinnerStores = (0..cluster.shards).map(|_| std::sync::OnceLock::new()).collect();
    let mut handles = Vec::new();
    for s in 0..cluster.shards {
        let mut members = Vec::with_capacity(cluster.nodes.len());
        for (n, pk) in cluster.nodes.iter().zip(&public_keys) {
            members.push((n.name.clone(), pk.clone(), resolve(&n.host, n.base_port + s)?));
        }
        let setup = ShardSetup {
            shard: s,
            shard_count: cluster.shards,
            me,
            members,
            keypair: keypair.clone(),
            params: params.clone(),
            bind: peer_bind(s)?,
            client_bind: (s == 0).then_some(cfg.client_addr),
            client_keys: if s == 0 { client_keys.clone() } else { Vec::new() },
            store_dir: shard_dir(&cfg.data_dir, s),
            sync: sync_policy(cfg.sync),
            metrics: metrics.clone(),
            status: shards[usize::from(s)].clone(),
            stop: stop.clone(),
            seed: seed_from_os(),
            byzantine,
            mesh: mesh.clone(),
            remote_facts: std::mem::take(remote_facts.get_mut(usize::from(s)).unwrap_or(&mut Vec::new())),
            turn_interval_min_us: cfg.turn_interval_min_us,
            winner_stores: winner_stores.clone(),
            retention: shard::RetentionPolicy { retain_final_secs: cfg.storage.retain_final_secs, retain_bytes: cfg.storage.retain_bytes },
            min_free_bytes: cfg.storage.min_free_bytes,
        };
        let placement = match cfg.cores.get(usize::from(s)) {
            Some(core) => Placement::Fixed(*core),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("pqdag-shard-{s}"))
            .io_memory(IO_MEMORY_BYTES)
            .spin_before_park(Duration::from_micros(cfg.spin_before_park_us))
            .spawn(move || async move { run_shard(setup).await.map_err(|e| e.to_string()) })
            .map_err(|e| NodeError::Shard { shard: s, message: format!("executor: {e}") })?;
        handles.push((s, handle));
    }
    let mut result = Ok(());
    for (s, h) in handles {
        let r = match h.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(NodeError::Shard { shard: s, message }),
            Err(e) => Err(NodeError::Shard { shard: s, message: format!("executor failed: {e}") }),
        };
        if let Err(e) = r {
            error!(error = %e, "shard stopped with an error");
            stop.store(true, Ordering::Relaxed);
            result = Err(e);
        }
    }
    http_stop.store(true, Ordering::Relaxed);
    let _ = http.join();
    info!("node stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterFile, ClusterNode, ParamsFile};

    fn cluster(n: usize, poll_interval_ms: Option<u64>) -> ClusterFile {
        let nodes = (0..n).map(|i| ClusterNode { name: format!("node-{i}"), host: "127.0.0.1".into(), base_port: 27_000 + 20 * i as u16, public_key: String::new() }).collect();
        ClusterFile { shards: 1, params: ParamsFile { poll_interval_ms, ..ParamsFile::default() }, nodes }
    }

    /// Beta rounds fit the 1 s finality target at every size, and a cadence peers would take
    /// for a flood is refused with a clear error instead of getting the node struck.
    #[test]
    fn the_poll_cadence_keeps_beta_rounds_under_a_second_and_above_the_peers_budget() {
        for (n, want_ms) in [(2, 10), (3, 10), (4, 10), (5, 20), (6, 30), (8, 30), (11, 30), (100, 30)] {
            let p = params_for(&cluster(n, None)).expect("default params");
            assert_eq!(p.poll_interval_us, want_ms * 1000, "{n} nodes (k = {})", p.sample_size);
            assert!(u64::from(p.beta) * p.poll_interval_us <= 600_000, "{n} nodes: beta rounds take {} ms", u64::from(p.beta) * p.poll_interval_us / 1000);
        }
        assert_eq!(params_for(&cluster(4, Some(50))).expect("explicit cadence").poll_interval_us, 50_000);
        let err = params_for(&cluster(4, Some(5))).expect_err("5 ms is a flood to peers").to_string();
        assert!(err.contains("poll_interval_ms = 5"), "{err}");
    }

    /// A busy node's batch lingers one poll interval unless the cluster file sets its own, and a
    /// file that sets one (every file written before the default moved) keeps it.
    #[test]
    fn the_batch_linger_follows_the_poll_cadence_unless_set() {
        for (n, poll_ms) in [(3, None), (4, None), (12, None), (4, Some(10))] {
            let p = params_for(&cluster(n, poll_ms)).expect("default params");
            assert_eq!(p.batch_linger_us, p.poll_interval_us, "{n} nodes, poll {poll_ms:?}");
        }
        let mut c = cluster(4, None);
        c.params.batch_linger_us = Some(5_000);
        assert_eq!(params_for(&c).expect("explicit linger").batch_linger_us, 5_000);
        let old: ParamsFile = toml::from_str("sample_size = 10\nalpha_threshold = 8\nbeta_threshold = 20\nfinalization_threshold = 0.95\nquery_timeout_ms = 1000\nbatch_linger_us = 5000\n").expect("an older file");
        assert_eq!(old.batch_linger_us, Some(5_000));
        let written = toml::to_string(&ParamsFile::default()).expect("serialize");
        assert!(!written.contains("batch_linger_us"), "the default is not written out, so it follows the cadence: {written}");
    }

    /// `sim --engine-params` samples and polls as a node of a default cluster file does (the
    /// model's comparisons with `bench` rest on it): k, alpha, beta, poll interval, linger and
    /// polls in flight. Fails if either side changes one alone.
    #[test]
    fn the_simulators_engine_params_are_the_engines() {
        for n in [2, 3, 4, 5, 7, 11, 30, 100] {
            let node = params_for(&cluster(n, None)).expect("default params");
            let sim = Params::lan_default().scaled_to(n).with_engine_defaults(n);
            assert_eq!((sim.sample_size, sim.alpha), (node.sample_size, node.alpha), "{n} nodes: k and alpha");
            assert_eq!(
                (sim.beta, sim.poll_interval_us, sim.batch_linger_us, sim.polls_in_flight_max),
                (node.beta, node.poll_interval_us, node.batch_linger_us, node.polls_in_flight_max),
                "{n} nodes"
            );
        }
    }
}
