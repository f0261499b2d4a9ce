//! Where a cluster's client endpoints are, from its files.

use std::net::SocketAddr;
use std::path::Path;

use pqdag_crypto::PublicKey;
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
