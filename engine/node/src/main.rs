//! The `engine` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pqdag_node::config::SyncMode;
use pqdag_node::export::{export, ExportFormat};
use pqdag_crypto::identity;
use pqdag_node::testnet::{keygen, keygen_client, write_testnet, TestnetSpec};

#[cfg(not(feature = "alloc-trace"))]
#[global_allocator]
static GLOBAL: pqdag_node::counting_alloc::CountingMiMalloc = pqdag_node::counting_alloc::CountingMiMalloc;

#[cfg(feature = "alloc-trace")]
mod alloc_trace;
#[cfg(feature = "alloc-trace")]
#[global_allocator]
static GLOBAL: alloc_trace::TracingAlloc = alloc_trace::TracingAlloc;

/// pqdag: a post-quantum Avalanche DAG consensus engine.
#[derive(Parser)]
#[command(name = "engine", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an ML-DSA-87 identity (node.key, mode 0600, and node.pub) in DIR; with
    /// --client a client identity (client.key and client.pub, for a node's client_keys).
    Keygen {
        /// Output folder (created; an existing key is never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Write a client identity instead of a node identity.
        #[arg(long)]
        client: bool,
    },
    /// Write a local cluster: DIR/cluster.toml and DIR/node-<i>/ (config, keys, data dir).
    Testnet {
        /// Number of nodes.
        #[arg(long)]
        nodes: usize,
        /// Output folder.
        #[arg(long)]
        dir: PathBuf,
        /// First UDP port; node i uses base + 20*i + shard, client and metrics ports follow.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// Shards (pinned cores) per node.
        #[arg(long, default_value_t = 1)]
        shards: u16,
        /// Store sync policy of the nodes: `by-class` fsyncs what the node must not forget
        /// (own vertices, decisions, locks), `every-batch` every write, `wal-no-sync` none.
        #[arg(long, value_enum, default_value_t = SyncArg::ByClass)]
        sync: SyncArg,
    },
    /// Run a node until SIGINT/SIGTERM, then flush and exit 0.
    Run {
        /// The node's config.toml.
        #[arg(long)]
        config: PathBuf,
        /// Check config, cluster file, key, parameters, free ports and host tuning; do not start.
        #[arg(long)]
        check_config: bool,
        /// With --check-config: also resolve and probe every peer's UDP port.
        #[arg(long, requires = "check_config")]
        check_peers: bool,
        /// TEST ONLY: misbehave deliberately (detection and mitigation tests).
        #[arg(long, hide = true, value_enum)]
        byzantine: Option<pqdag_node::runtime::byzantine::ByzantineMode>,
    },
    /// Write a cluster spread over hosts: DIR/cluster.toml and DIR/<name>/ per host (keys generated
    /// per node; copy each folder to its host). Re-run with an edited hosts file to add/remove nodes.
    ClusterConfig {
        /// One `host`, `host:port` or `name=host:port` per line, or TOML `hosts = [...]`.
        #[arg(long)]
        hosts: PathBuf,
        /// Output folder.
        #[arg(long)]
        dir: PathBuf,
        /// Peer UDP port of hosts listed without one; client API = +18, metrics = +19.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// Bind address of every node [default: the host if it is an IP, else 0.0.0.0].
        #[arg(long)]
        listen_host: Option<String>,
        /// Bind address of each new node's client API [default: 127.0.0.1, or the host itself if it is a loopback address].
        #[arg(long)]
        client_host: Option<std::net::IpAddr>,
        /// data_dir written into each config.toml (relative = beside it).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Store sync policy of the nodes: `by-class` fsyncs what the node must not forget
        /// (own vertices, decisions, locks), `every-batch` every write, `wal-no-sync` none.
        #[arg(long, value_enum, default_value_t = SyncArg::ByClass)]
        sync: SyncArg,
        /// Shards per node of a new cluster [default: 1]; an existing cluster keeps its count.
        #[arg(long)]
        shards: Option<u16>,
    },
    /// Submit one payload through the client API; prints one JSON line: `id`, `node` and, with
    /// --wait, `decision` (`final` or `rejected`), `shard`, `position`.
    Submit {
        /// The cluster.toml.
        #[arg(long)]
        cluster: PathBuf,
        /// Client key file (`engine keygen --client`) [default: the testnet's client/client.key
        /// beside the cluster file].
        #[arg(long)]
        key: Option<PathBuf>,
        /// The payload, hex.
        #[arg(long, conflicts_with = "payload_file", required_unless_present = "payload_file")]
        payload_hex: Option<String>,
        /// The payload, from a file.
        #[arg(long)]
        payload_file: Option<PathBuf>,
        /// A conflict key the payload spends (64 hex digits); repeatable.
        #[arg(long)]
        conflict_key: Vec<String>,
        /// The node to submit to first (by name; others on failure).
        #[arg(long)]
        node: Option<String>,
        /// Wait for the decision.
        #[arg(long)]
        wait: bool,
    },
    /// Print one node's decision feed, one JSON line per decided vertex (`id`, `decision`,
    /// `payload_hex`, `cursor`, ...); follows until interrupted unless --count is given.
    Tail {
        /// The cluster.toml.
        #[arg(long)]
        cluster: PathBuf,
        /// Client key file [default: the testnet's client/client.key beside the cluster file].
        #[arg(long)]
        key: Option<PathBuf>,
        /// The node whose feed to read (by name) [default: the cursor's node, else the first].
        #[arg(long)]
        node: Option<String>,
        /// Resume just after this cursor (hex, from an earlier line's `cursor`).
        #[arg(long)]
        from: Option<String>,
        /// Stop after this many decisions.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Export the finalized history of a stopped node (jsonl for audit, dot for a picture).
    Export {
        /// The node's config.toml.
        #[arg(long)]
        config: PathBuf,
        /// Output file ("-" for stdout).
        #[arg(long)]
        out: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SyncArg {
    ByClass,
    EveryBatch,
    WalNoSync,
}

fn init_logging(config: Option<&std::path::Path>) {
    let cfg = config.and_then(|c| pqdag_node::NodeConfig::load(c).ok());
    let default = cfg.as_ref().map(|c| c.log.clone()).unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cfg.is_some_and(|c| c.log_json) {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(config: &std::path::Path, byzantine: Option<pqdag_node::runtime::byzantine::ByzantineMode>) -> Result<String, Box<dyn std::error::Error>> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    pqdag_node::runtime::run_node(config, stop, byzantine)?;
    Ok("node stopped cleanly".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(match &cli.command {
        Command::Run { config, check_config: false, .. } => Some(config.as_path()),
        _ => None,
    });
    let result: Result<String, Box<dyn std::error::Error>> = match cli.command {
        Command::Run { config, check_config: true, check_peers, .. } => pqdag_node::check::run_check(&config, check_peers).map_err(Into::into),
        Command::Run { config, byzantine, .. } => run(&config, byzantine),
        Command::ClusterConfig { hosts, dir, base_port, listen_host, client_host, data_dir, sync, shards } => {
            let sync = match sync {
                SyncArg::ByClass => SyncMode::ByClass,
                SyncArg::EveryBatch => SyncMode::EveryBatch,
                SyncArg::WalNoSync => SyncMode::WalNoSync,
            };
            let spec = pqdag_node::cluster_config::ClusterConfigSpec { hosts_file: hosts, dir, base_port, listen_host, client_host, data_dir, sync, shards };
            pqdag_node::cluster_config::run_cluster_config(&spec).map_err(Into::into)
        }
        Command::Keygen { out, client: false } => keygen(&out).map(|id| format!("node id {id}; keys in {}", out.display())).map_err(Into::into),
        Command::Keygen { out, client: true } => keygen_client(&out)
            .map(|id| format!("client key id {id}; {} (secret) and {} (list it in a node's client_keys) in {}", identity::CLIENT_SECRET_KEY_FILE, identity::CLIENT_PUBLIC_KEY_FILE, out.display()))
            .map_err(Into::into),
        Command::Testnet { nodes, dir, base_port, shards, sync } => {
            let sync = match sync {
                SyncArg::ByClass => SyncMode::ByClass,
                SyncArg::EveryBatch => SyncMode::EveryBatch,
                SyncArg::WalNoSync => SyncMode::WalNoSync,
            };
            write_testnet(&TestnetSpec { nodes, dir: dir.clone(), base_port, shards, sync })
                .map(|c| format!("wrote {} nodes to {}", c.len(), dir.display()))
                .map_err(Into::into)
        }
        Command::Submit { cluster, key, payload_hex, payload_file, conflict_key, node, wait } => (|| -> Result<String, Box<dyn std::error::Error>> {
            let payload = match (payload_hex, payload_file) {
                (Some(h), _) => hex::decode(h.trim())?,
                (None, Some(f)) => std::fs::read(f)?,
                (None, None) => return Err("--payload-hex or --payload-file is required".into()),
            };
            let conflict_keys = conflict_key.iter().map(|k| pqdag_node::client_cli::parse_key(k)).collect::<Result<Vec<_>, _>>()?;
            pqdag_node::client_cli::submit(&pqdag_node::client_cli::SubmitArgs { cluster, payload, conflict_keys, key, node, wait })
        })(),
        Command::Tail { cluster, key, node, from, count } => pqdag_node::client_cli::tail(&pqdag_node::client_cli::TailArgs { cluster, key, node, from, count }),
        Command::Export { config, out, format } => {
            let run = || -> Result<String, Box<dyn std::error::Error>> {
                let n = if out.as_os_str() == "-" {
                    export(&config, format, &mut std::io::stdout().lock())?
                } else {
                    let mut f = std::io::BufWriter::new(std::fs::File::create(&out)?);
                    export(&config, format, &mut f)?
                };
                Ok(n.to_string())
            };
            run()
        }
    };
    match result {
        Ok(msg) => {
            eprintln!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
