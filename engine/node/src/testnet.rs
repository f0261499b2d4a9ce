//! `engine keygen` and `engine testnet`: key material and a ready-to-run local cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pqdag_crypto::{identity, Keypair};

use crate::config::{ClusterFile, ClusterNode, ConfigError, NodeConfig, ParamsFile, SyncMode};

/// Generates a key pair into `dir` (never overwriting one). Returns the node id, hex.
pub fn keygen(dir: &Path) -> Result<String, ConfigError> {
    let kp = Keypair::generate()?;
    identity::write_identity(dir, &kp)?;
    Ok(hex::encode(kp.public().node_id()))
}

/// Generates a client identity into `dir`: `client.key` (0600, never overwritten) and
/// `client.pub` (what a node lists in `client_keys`). Returns the client key id, hex.
pub fn keygen_client(dir: &Path) -> Result<String, ConfigError> {
    let kp = Keypair::generate()?;
    identity::write_client_identity(dir, &kp)?;
    Ok(hex::encode(kp.public().node_id()))
}

/// Folder of the testnet's client identity (`DIR/client/client.key`), relative to `DIR`.
pub const TESTNET_CLIENT_DIR: &str = "client";

/// Options of `engine testnet`.
#[derive(Debug, Clone)]
pub struct TestnetSpec {
    /// Node count.
    pub nodes: usize,
    /// Output folder.
    pub dir: PathBuf,
    /// Node i's shard s listens on `base_port + i * port_stride + s`.
    pub base_port: u16,
    /// Shards per node.
    pub shards: u16,
    /// Store sync policy of every node.
    pub sync: SyncMode,
}

/// Ports each node reserves: peers (one per shard), client, metrics.
pub const PORT_STRIDE: u16 = 20;

/// Writes `DIR/cluster.toml`, `DIR/node-<i>/{config.toml,node.key,node.pub,data/}` for a local
/// cluster on 127.0.0.1, and one client identity `DIR/client/{client.key,client.pub}` that
/// every node accepts (its `client_keys` names `../client/client.pub`). Returns the config paths.
pub fn write_testnet(spec: &TestnetSpec) -> Result<Vec<PathBuf>, ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { path, source }
    };
    if spec.nodes == 0 || spec.nodes > 1000 {
        return Err(ConfigError::Invalid { path: spec.dir.clone(), message: format!("--nodes {} (must be 1..=1000)", spec.nodes) });
    }
    if spec.shards == 0 || spec.shards + 2 > PORT_STRIDE {
        return Err(ConfigError::Invalid { path: spec.dir.clone(), message: format!("--shards {} (must be 1..={})", spec.shards, PORT_STRIDE - 2) });
    }
    let last = u32::from(spec.base_port) + spec.nodes as u32 * u32::from(PORT_STRIDE);
    if last > 65535 {
        return Err(ConfigError::Invalid { path: spec.dir.clone(), message: "ports would exceed 65535: lower --base-port or --nodes".into() });
    }
    std::fs::create_dir_all(&spec.dir).map_err(io(&spec.dir))?;
    keygen_client(&spec.dir.join(TESTNET_CLIENT_DIR))?;
    let mut nodes = Vec::with_capacity(spec.nodes);
    let mut configs = Vec::with_capacity(spec.nodes);
    for i in 0..spec.nodes {
        let name = format!("node-{i}");
        let node_dir = spec.dir.join(&name);
        let kp = Keypair::generate()?;
        identity::write_identity(&node_dir, &kp)?;
        std::fs::create_dir_all(node_dir.join("data")).map_err(io(&node_dir))?;
        let base_port = spec.base_port + i as u16 * PORT_STRIDE;
        nodes.push(ClusterNode {
            name: name.clone(),
            host: "127.0.0.1".into(),
            base_port,
            public_key: hex::encode(kp.public().as_bytes()),
        });
        let cfg = NodeConfig {
            name,
            cluster: PathBuf::from("../cluster.toml"),
            key_dir: PathBuf::from("."),
            data_dir: PathBuf::from("data"),
            listen_host: "127.0.0.1".into(),
            bind_base_port: None,
            client_addr: SocketAddr::from(([127, 0, 0, 1], base_port + PORT_STRIDE - 2)),
            client_keys: vec![format!("../{TESTNET_CLIENT_DIR}/{}", identity::CLIENT_PUBLIC_KEY_FILE)],
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], base_port + PORT_STRIDE - 1)),
            cores: Vec::new(),
            sync: spec.sync,
            log: "info".into(),
            log_json: false,
            spin_before_park_us: crate::config::DEFAULT_SPIN_BEFORE_PARK_US,
            turn_interval_min_us: crate::config::DEFAULT_TURN_INTERVAL_MIN_US,
            storage: Default::default(),
        };
        let path = node_dir.join("config.toml");
        cfg.save(&path)?;
        configs.push(path);
    }
    let cluster = ClusterFile { shards: spec.shards, params: ParamsFile::default(), nodes };
    cluster.save(&spec.dir.join("cluster.toml"))?;
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testnet_files_resolve_and_mismatches_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = TestnetSpec { nodes: 3, dir: dir.path().to_path_buf(), base_port: 40000, shards: 2, sync: SyncMode::WalNoSync };
        let configs = write_testnet(&spec).expect("testnet");
        assert_eq!(configs.len(), 3);
        for (i, path) in configs.iter().enumerate() {
            let cfg = NodeConfig::load(path).expect("load");
            let (cluster, index, kp) = cfg.resolve(path).expect("resolve");
            assert_eq!(index, i);
            assert_eq!(cluster.shards, 2);
            assert_eq!(cluster.public_keys().expect("keys")[i], *kp.public());
            // Every node accepts the testnet's one client key.
            let client = identity::load_keypair_file(&dir.path().join("client/client.key")).expect("client key");
            assert_eq!(cfg.client_public_keys().expect("client keys"), vec![client.public().clone()]);
            assert!(cfg.client_addr.ip().is_loopback());
        }
        // Node 0 pointed at node 1's key: refused with a clear message.
        let mut cfg = NodeConfig::load(&configs[0]).expect("load");
        cfg.key_dir = dir.path().join("node-1");
        let err = cfg.resolve(&configs[0]).expect_err("mismatch");
        assert!(err.to_string().contains("not the key"), "{err}");
        // A garbled cluster file is a parse error naming the file.
        std::fs::write(dir.path().join("cluster.toml"), "shards = \"two\"").expect("write");
        let err = NodeConfig::load(&configs[1]).expect("load").resolve(&configs[1]).expect_err("parse");
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        // Bad specs.
        assert!(write_testnet(&TestnetSpec { nodes: 0, ..spec.clone() }).is_err());
        assert!(write_testnet(&TestnetSpec { shards: 40, ..spec }).is_err());
    }
}
