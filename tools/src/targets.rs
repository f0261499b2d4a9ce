//! Where a cluster's client endpoints are, from its files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pqdag_crypto::{identity, Keypair, PublicKey};
use pqdag_node::{ClusterFile, NodeConfig};

/// A node's client endpoint and the key it proves itself with.
#[derive(Debug, Clone)]
pub struct ClientTarget {
    /// Node name.
    pub name: String,
    /// Client API address.
    pub addr: SocketAddr,
    /// The node's ML-DSA-87 key (the client verifies the server's exporter signature with it).
    pub public_key: PublicKey,
}

/// Reads `cluster.toml` and, for each node, `<cluster dir>/<name>/config.toml` (the testnet
/// layout) for its client address; `overrides` (`name=addr`) replace or supply addresses.
pub fn client_targets(cluster_path: &Path, overrides: &[String]) -> Result<Vec<ClientTarget>, String> {
    let cluster = ClusterFile::load(cluster_path).map_err(|e| e.to_string())?;
    let keys = cluster.public_keys().map_err(|e| e.to_string())?;
    let dir = cluster_path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, pk) in cluster.nodes.iter().zip(keys) {
        let over = overrides.iter().find_map(|o| o.strip_prefix(&format!("{}=", n.name)));
        let addr = match over {
            Some(a) => a.parse().map_err(|e| format!("--client {}={a}: {e}", n.name))?,
            None => {
                let cfg_path = dir.join(&n.name).join("config.toml");
                match NodeConfig::load(&cfg_path) {
                    Ok(c) => c.client_addr,
                    Err(_) => continue, // not a local node and no override: not a target
                }
            }
        };
        out.push(ClientTarget { name: n.name.clone(), addr, public_key: pk });
    }
    if out.is_empty() {
        return Err("no client endpoints: give --client NAME=ADDR for remote nodes".into());
    }
    Ok(out)
}

/// Where the client key is by default: the testnet's `<cluster dir>/client/client.key`.
pub fn default_client_key(cluster_path: &Path) -> PathBuf {
    cluster_path.parent().unwrap_or(Path::new(".")).join("client").join(identity::CLIENT_SECRET_KEY_FILE)
}

/// Loads the client identity to connect with: `key` if given, else [`default_client_key`].
/// Every node must list its public key in `client_keys`, or it refuses the connection.
pub fn client_key(cluster_path: &Path, key: Option<&Path>) -> Result<Arc<Keypair>, String> {
    let path = key.map_or_else(|| default_client_key(cluster_path), Path::to_path_buf);
    identity::load_keypair_file(&path).map(Arc::new).map_err(|e| format!("client key: {e} (give --key PATH, e.g. a client.key from `engine keygen --client`)"))
}
