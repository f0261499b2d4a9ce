//! The two files an operator edits: `cluster.toml` (shared by every node: who is in the cluster
//! and the consensus parameters; public keys only) and `config.toml` (one per node: where its key,
//! data and ports are).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pqdag_crypto::{identity, PublicKey};
use serde::{Deserialize, Serialize};

/// Why a config could not be used. Each is reported as one line and a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or a missing/mistyped field.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The content parsed but is not usable.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A key file is missing, corrupt or does not match the cluster file.
    #[error(transparent)]
    Key(#[from] pqdag_crypto::CryptoError),
}

/// Whether a `client_keys` entry is a hex public key rather than a path.
fn is_hex_key(s: &str) -> bool {
    s.len() == 2 * pqdag_crypto::PUBLIC_KEY_BYTES && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn invalid(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.to_path_buf(), message: message.into() }
}

/// Consensus parameters shared by the cluster (spec 3.2); validated by the core on start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsFile {
    /// Sample size k (reduced to N-1 on small clusters).
    pub sample_size: usize,
    /// Alpha: yes votes out of k for a successful poll; must exceed k/2.
    pub alpha_threshold: usize,
    /// Beta: consecutive successful polls to finalize.
    pub beta_threshold: usize,
    /// Confidence needed to finalize (FR-005).
    pub finalization_threshold: f64,
    /// Query timeout in milliseconds (FR-002: 1000).
    pub query_timeout_ms: u64,
    /// Most transactions (client submissions) per vertex; 1 = one payload per vertex.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a busy node lets a batch wait for more submissions, in microseconds (an idle
    /// node closes a batch at once). Absent: one poll interval (`runtime::params_for`), which
    /// adds at most one poll's wait to a finality of `beta_threshold` polls and makes several
    /// times fewer vertices, signatures and polled ids under load (docs/benchmark.md, "Batch
    /// linger").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_linger_us: Option<u64>,
    /// Length of a lock round in milliseconds (small clusters: an honest node's Yes certifies one
    /// member of a conflict set per round, and a quorum lock moves to a younger certificate;
    /// docs/consensus.md 8d). The same on every node; well above a poll's round trip and the
    /// nodes' clock skew. 0 turns lock rounds off (4-node clusters with a Byzantine member can
    /// then stall on split locks).
    #[serde(default = "default_lock_round_ms")]
    pub lock_round_ms: u64,
    /// How often a node starts a poll, in milliseconds (at least 10: peers budget 200 queries
    /// a second from each node). Finality takes `beta_threshold` successful polls, so this sets
    /// its floor. Absent: derived from the sample size (`runtime::default_poll_interval_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
}

fn default_lock_round_ms() -> u64 {
    300
}

fn default_max_batch() -> usize {
    1024
}

impl Default for ParamsFile {
    fn default() -> Self {
        Self {
            sample_size: pqdag_core::ENGINE_SAMPLE_SIZE,
            alpha_threshold: pqdag_core::ENGINE_ALPHA,
            beta_threshold: pqdag_core::ENGINE_BETA as usize,
            finalization_threshold: 0.95,
            query_timeout_ms: 1000,
            max_batch: default_max_batch(),
            batch_linger_us: None,
            lock_round_ms: default_lock_round_ms(),
            poll_interval_ms: None,
        }
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    /// Human name (e.g. `node-0`), used in logs.
    pub name: String,
    /// Host or IP the node's peers reach it at.
    pub host: String,
    /// Shard s listens on UDP `base_port + s`.
    pub base_port: u16,
    /// ML-DSA-87 public key, hex.
    pub public_key: String,
}

/// `cluster.toml`: the same file on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Shards per node (every node runs the same count: shard s talks to shard s).
    pub shards: u16,
    /// Consensus parameters.
    pub params: ParamsFile,
    /// The members, in a fixed order (their index is their peer index).
    pub nodes: Vec<ClusterNode>,
}

impl ClusterFile {
    /// Reads and checks a cluster file: at least one node, unique names/keys/endpoints, valid keys.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        let c: ClusterFile = toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        c.validate(path)?;
        Ok(c)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(invalid(path, "no nodes"));
        }
        if self.shards == 0 || self.shards > 256 {
            return Err(invalid(path, format!("shards = {} (must be 1..=256)", self.shards)));
        }
        let mut seen = std::collections::HashSet::new();
        for n in &self.nodes {
            identity::public_key_from_hex(&n.public_key).map_err(|e| invalid(path, format!("node {}: {e}", n.name)))?;
            if !seen.insert(n.public_key.clone()) || !seen.insert(n.name.clone()) || !seen.insert(format!("{}:{}", n.host, n.base_port)) {
                return Err(invalid(path, format!("node {}: duplicate name, key or endpoint", n.name)));
            }
            if u32::from(n.base_port) + u32::from(self.shards) > 65536 {
                return Err(invalid(path, format!("node {}: base_port + shards exceeds 65535", n.name)));
            }
        }
        Ok(())
    }

    /// The parsed public keys, in node order.
    pub fn public_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        self.nodes.iter().map(|n| Ok(identity::public_key_from_hex(&n.public_key)?)).collect()
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string_pretty(self).map_err(|e| invalid(path, e.to_string()))?;
        std::fs::write(path, text).map_err(|source| ConfigError::Io { path: path.into(), source })
    }
}

/// How the node syncs its store (see `pqdag_storage::SyncPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// fsync every batch that carries what the node must not forget across a power cut (own
    /// vertices, decisions, quorum locks); a batch of only received, undecided vertices rides
    /// the next fsync (default; `pqdag_storage::SyncPolicy::ByClass`).
    #[default]
    ByClass,
    /// fsync every batch.
    EveryBatch,
    /// WAL without fsync (survives process crashes only).
    WalNoSync,
}

/// `config.toml`: one per node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name in the cluster file.
    pub name: String,
    /// Path of `cluster.toml` (relative paths are relative to this config file).
    pub cluster: PathBuf,
    /// Folder holding `node.key` and `node.pub`.
    pub key_dir: PathBuf,
    /// Folder for RocksDB (one sub-folder per shard).
    pub data_dir: PathBuf,
    /// Address the node binds its peer UDP sockets to (port = base_port + shard).
    pub listen_host: String,
    /// Bind shard s to `bind_base_port + s` instead of the cluster file's `base_port + s`: for
    /// NAT/port-forwarding, or a fault proxy in front of the node. Default: the advertised port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_base_port: Option<u16>,
    /// Client API (submit payloads, stream finality): localhost by default.
    pub client_addr: SocketAddr,
    /// The clients the client API accepts, by ML-DSA-87 public key. Each entry is one of: a key
    /// in hex (as in `cluster.toml`), a `.pub` file (`engine keygen --client` writes
    /// `client.pub`), or a folder whose `*.pub` files are all read (drop a file in, restart).
    /// Relative paths are relative to this file. Empty (the default): no client can connect;
    /// a client whose key is not listed is closed at connect as not authorized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_keys: Vec<String>,
    /// Prometheus `/metrics`, `/health`, `/status`.
    pub metrics_addr: SocketAddr,
    /// Pin shard s to `cores[s]`; empty = cores 0..shards.
    #[serde(default)]
    pub cores: Vec<usize>,
    /// Store sync policy.
    #[serde(default)]
    pub sync: SyncMode,
    /// Log filter (`RUST_LOG` syntax), overridden by the `RUST_LOG` variable.
    #[serde(default = "default_log")]
    pub log: String,
    /// JSON log lines instead of text.
    #[serde(default)]
    pub log_json: bool,
    /// How long a shard's executor busy-polls for work before it sleeps, in microseconds.
    /// Spinning trims wake-up latency on a core the node owns; where nodes share cores (a
    /// local testnet, a VM) a spin can take CPU another process needed.
    #[serde(default = "default_spin_before_park_us")]
    pub spin_before_park_us: u64,
    /// Least time between the starts of two event-loop turns of a shard, in microseconds. Each
    /// turn ends with one store batch (one fsync) and its sends, so pacing turns makes each
    /// batch, wake-up and fsync serve more messages: on the 2-vCPU VM, 3000 cut CPU per
    /// vertex 11 % at 1200/s (3 nodes) for +25 ms of median finality, but where many nodes
    /// share few cores every paced turn waits for the scheduler again (100 processes on 2
    /// cores: median finality 38 s instead of 17 s). Hence off by default (docs/benchmark.md).
    #[serde(default = "default_turn_interval_min_us")]
    pub turn_interval_min_us: u64,
    /// Store retention (`[storage]`): off by default (the store keeps every vertex).
    #[serde(default, skip_serializing_if = "StorageConfig::is_default")]
    pub storage: StorageConfig,
}

/// The least retention window: the core holds a final's full record for 30 s
/// (`FINAL_RECORD_US`), so nothing is pruned from the store that the core may still hold in full
/// and serve, and a node restarted within the window finds its peers' recent history.
pub const RETAIN_FINAL_SECS_MIN: u64 = 30;

/// `[storage]` of `config.toml`: how much decided history the store keeps
/// (docs/operations.md, "Retention"). Both limits may be set; whichever prunes more wins.
/// Archive with `engine export` before turning either on: pruned vertices are gone for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Keep decided vertices (payload, signature, feed entry) this many seconds after their
    /// decision, then prune them down to a compact record. 0 (the default): keep forever.
    /// At least [`RETAIN_FINAL_SECS_MIN`] when set.
    #[serde(default)]
    pub retain_final_secs: u64,
    /// Prune the oldest decided vertices while the store's files exceed this many bytes per
    /// shard (approximate: space comes back as RocksDB compacts). 0 (the default): no budget.
    #[serde(default)]
    pub retain_bytes: u64,
    /// Refuse client submissions (`Overloaded`, "disk nearly full") while the data directory's
    /// filesystem has fewer free bytes than this, so that the node's own clients cannot fill
    /// the disk: a store write that fails stops the node (exit 1), and RocksDB needs room to
    /// compact. Peers' vertices are still stored and consensus goes on. 0: no floor.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
}

/// Default [`StorageConfig::min_free_bytes`]: 256 MiB, about two minutes of a node's writes at
/// 1 200 vertices/s without retention (~7 MiB/s with the WAL), room to stop the load or prune.
pub const MIN_FREE_BYTES_DEFAULT: u64 = 256 << 20;

fn default_min_free_bytes() -> u64 {
    MIN_FREE_BYTES_DEFAULT
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { retain_final_secs: 0, retain_bytes: 0, min_free_bytes: MIN_FREE_BYTES_DEFAULT }
    }
}

impl StorageConfig {
    /// True when no setting differs from its default.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the limits (a window shorter than [`RETAIN_FINAL_SECS_MIN`] is refused).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.retain_final_secs != 0 && self.retain_final_secs < RETAIN_FINAL_SECS_MIN {
            return Err(invalid(path, format!("[storage] retain_final_secs = {} (0 = keep forever, else at least {RETAIN_FINAL_SECS_MIN})", self.retain_final_secs)));
        }
        if self.retain_bytes != 0 && self.retain_bytes < 64 << 20 {
            return Err(invalid(path, format!("[storage] retain_bytes = {} (0 = no budget, else at least 64 MiB: RocksDB's memtables alone flush 64 MiB)", self.retain_bytes)));
        }
        Ok(())
    }
}

/// Default turn pacing (us), see [`NodeConfig::turn_interval_min_us`].
pub const DEFAULT_TURN_INTERVAL_MIN_US: u64 = 0;

fn default_turn_interval_min_us() -> u64 {
    DEFAULT_TURN_INTERVAL_MIN_US
}

/// Default executor spin before parking (us). On the 2-vCPU VM, 0 and 200 measured the same CPU
/// per vertex (docs/benchmark.md).
pub const DEFAULT_SPIN_BEFORE_PARK_US: u64 = 200;

fn default_spin_before_park_us() -> u64 {
    DEFAULT_SPIN_BEFORE_PARK_US
}

fn default_log() -> String {
    "info".into()
}

impl NodeConfig {
    /// Reads a node config; relative paths inside are resolved against the file's folder, made
    /// absolute (without touching the file system), so a config loaded and saved back (`bench`
    /// sets retention and client keys that way) names the same files from any working
    /// directory. Resolved against a relative folder, `bench --retain-final-secs` wrote
    /// `bench-out/T/cluster/node-0/../cluster.toml` into a file whose own folder is that
    /// `node-0`, and the node then looked for `.../node-0/bench-out/T/cluster/node-0/../cluster.toml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        let mut c: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        c.storage.validate(path)?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let absolute = std::path::absolute(parent).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        let base = absolute.as_path();
        for p in [&mut c.cluster, &mut c.key_dir, &mut c.data_dir] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for k in &mut c.client_keys {
            if !is_hex_key(k) && Path::new(k.as_str()).is_relative() {
                *k = base.join(k.as_str()).to_string_lossy().into_owned();
            }
        }
        Ok(c)
    }

    /// The accepted client keys (see [`NodeConfig::client_keys`]), in entry order, duplicates
    /// dropped. A missing, unreadable or corrupt entry is an error naming it.
    pub fn client_public_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        let mut keys: Vec<PublicKey> = Vec::new();
        let mut add = |k: PublicKey| {
            if !keys.contains(&k) {
                keys.push(k);
            }
        };
        for entry in &self.client_keys {
            if is_hex_key(entry) {
                add(identity::public_key_from_hex(entry)?);
                continue;
            }
            let path = Path::new(entry.as_str());
            if path.is_dir() {
                let rd = std::fs::read_dir(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
                let mut files: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                    .collect();
                files.sort();
                for f in files {
                    add(identity::load_public_key(&f)?);
                }
            } else {
                add(identity::load_public_key(path)?);
            }
        }
        Ok(keys)
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string_pretty(self).map_err(|e| invalid(path, e.to_string()))?;
        std::fs::write(path, text).map_err(|source| ConfigError::Io { path: path.into(), source })
    }

    /// Loads the cluster file and this node's key, and checks they agree: the node is listed, and
    /// the key on disk is the one the cluster file names. Returns (cluster, own index, key pair).
    pub fn resolve(&self, config_path: &Path) -> Result<(ClusterFile, usize, pqdag_crypto::Keypair), ConfigError> {
        let cluster = ClusterFile::load(&self.cluster)?;
        let index = cluster
            .nodes
            .iter()
            .position(|n| n.name == self.name)
            .ok_or_else(|| invalid(config_path, format!("node {:?} is not in {}", self.name, self.cluster.display())))?;
        let keypair = identity::load_keypair(&self.key_dir)?;
        if hex::encode(keypair.public().as_bytes()) != cluster.nodes[index].public_key {
            return Err(invalid(config_path, format!("the key in {} is not the key the cluster file lists for {}", self.key_dir.display(), self.name)));
        }
        Ok((cluster, index, keypair))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config named by a relative path, loaded and saved back, loads again to the same files
    /// (the paths inside are resolved to absolute ones): the `bench --retain-final-secs` start-up
    /// failure ("node-0/bench-out/.../node-0/../cluster.toml: No such file or directory").
    #[test]
    fn a_config_loaded_by_a_relative_path_saves_back_unchanged_in_meaning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("cluster").join("node-0");
        std::fs::create_dir_all(&node).expect("mkdir");
        let text = "name = \"node-0\"\ncluster = \"../cluster.toml\"\nkey_dir = \"key\"\ndata_dir = \"data\"\nlisten_host = \"127.0.0.1\"\nclient_addr = \"127.0.0.1:7100\"\nmetrics_addr = \"127.0.0.1:7200\"\nclient_keys = [\"client.pub\"]\n";
        std::fs::write(node.join("config.toml"), text).expect("write");
        // The same file by a path relative to the working directory (cargo runs tests in the
        // package folder): up to the root, then down to the temporary folder.
        let cwd = std::env::current_dir().expect("cwd");
        let up: PathBuf = cwd.components().skip(1).map(|_| "..").collect();
        let rel = up.join(node.strip_prefix("/").expect("absolute temp dir")).join("config.toml");
        assert!(rel.is_relative());
        let first = NodeConfig::load(&rel).expect("load");
        assert!(first.cluster.is_absolute() && first.data_dir.is_absolute() && first.key_dir.is_absolute());
        first.save(&rel).expect("save");
        let again = NodeConfig::load(&rel).expect("load again");
        assert_eq!(again, first, "saved back, the config names the same files");
        std::fs::write(dir.path().join("cluster").join("cluster.toml"), "").expect("write");
        assert_eq!(std::fs::canonicalize(&again.cluster).ok(), std::fs::canonicalize(dir.path().join("cluster").join("cluster.toml")).ok());
    }
}
