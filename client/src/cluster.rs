//! Which nodes to talk to: a list of (name, client address, ML-DSA-87 public key), given by hand
//! or read from the `cluster.toml` that `engine testnet` and `engine cluster-config` write.
//!
//! The cluster file is parsed here with serde (the node crate pulls in RocksDB and glommio).
//! A node's client address is taken, like `loadgen` does, from `<name>/config.toml` beside the
//! cluster file when it exists (its `client_addr`; an unspecified IP such as `0.0.0.0` is
//! replaced by the node's `host`), else it is `host:(base_port + 18)`, the port both generators
//! assign.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use pqdag_crypto::PublicKey;
use serde::Deserialize;

use crate::ClientError;

/// Client port = peer base port + this (`PORT_STRIDE - 2` in `engine testnet`/`cluster-config`).
pub const CLIENT_PORT_OFFSET: u16 = 18;

/// One node the client may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    /// Its name in the cluster file (used in errors and events).
    pub name: String,
    /// Its client endpoint (UDP).
    pub addr: SocketAddr,
    /// The ML-DSA-87 key it must prove it holds.
    pub public_key: PublicKey,
}

impl NodeTarget {
    /// A target from its parts; `public_key_hex` is the hex of the raw key, as in `cluster.toml`.
    pub fn new(name: impl Into<String>, addr: SocketAddr, public_key_hex: &str) -> Result<Self, ClientError> {
        let name = name.into();
        let public_key = parse_key(&name, public_key_hex)?;
        Ok(Self { name, addr, public_key })
    }
}

fn parse_key(name: &str, hex_key: &str) -> Result<PublicKey, ClientError> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| ClientError::Config(format!("node {name}: public key: {e}")))?;
    PublicKey::from_bytes(&bytes).map_err(|e| ClientError::Config(format!("node {name}: public key: {e}")))
}

#[derive(Deserialize)]
struct ClusterToml {
    nodes: Vec<NodeToml>,
}

#[derive(Deserialize)]
struct NodeToml {
    name: String,
    host: String,
    base_port: u16,
    public_key: String,
}

#[derive(Deserialize)]
struct NodeConfigToml {
    client_addr: SocketAddr,
}

/// Reads the nodes of a cluster file (see the module doc for how addresses are found).
pub fn load_cluster_file(path: &Path) -> Result<Vec<NodeTarget>, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
    parse_cluster(&text, path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))
}

/// Parses cluster-file text; `dir` is where node folders (with their `config.toml`) may be.
pub fn parse_cluster(text: &str, dir: &Path) -> Result<Vec<NodeTarget>, String> {
    let c: ClusterToml = toml::from_str(text).map_err(|e| e.to_string())?;
    if c.nodes.is_empty() {
        return Err("no nodes".into());
    }
    let mut out = Vec::with_capacity(c.nodes.len());
    for n in c.nodes {
        let public_key = parse_key(&n.name, &n.public_key).map_err(|e| e.to_string())?;
        let local = std::fs::read_to_string(dir.join(&n.name).join("config.toml"))
            .ok()
            .and_then(|t| toml::from_str::<NodeConfigToml>(&t).ok())
            .map(|c| c.client_addr);
        let addr = match local {
            Some(a) if !a.ip().is_unspecified() => a,
            Some(a) => resolve(&n.host, a.port())?,
            None => resolve(&n.host, n.base_port.checked_add(CLIENT_PORT_OFFSET).ok_or("base_port too high")?)?,
        };
        out.push(NodeTarget { name: n.name, addr, public_key });
    }
    Ok(out)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("host {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("host {host}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_file_addresses() {
        let kp = pqdag_crypto::Keypair::generate().expect("keygen");
        let key = hex::encode(kp.public().as_bytes());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a")).expect("mkdir");
        std::fs::write(dir.path().join("a/config.toml"), "name = \"a\"\nclient_addr = \"0.0.0.0:7118\"\n").expect("write");
        let text = format!(
            "shards = 1\n[params]\nk = 1\n[[nodes]]\nname = \"a\"\nhost = \"10.0.0.1\"\nbase_port = 7100\npublic_key = \"{key}\"\n\
             [[nodes]]\nname = \"b\"\nhost = \"10.0.0.2\"\nbase_port = 7000\npublic_key = \"{key}\"\n"
        );
        let t = parse_cluster(&text, dir.path()).expect("parse");
        assert_eq!(t[0].addr, "10.0.0.1:7118".parse::<SocketAddr>().expect("addr"));
        assert_eq!(t[1].addr, "10.0.0.2:7018".parse::<SocketAddr>().expect("addr"));
        assert_eq!(t[1].public_key, *kp.public());
        assert!(parse_cluster("nodes = []", dir.path()).is_err());
        assert!(parse_cluster(&text.replace(&key, "abcd"), dir.path()).is_err());
    }
}
