//! `engine submit` and `engine tail`: the client API from a shell, on `pqdag-client`'s blocking
//! API, one JSON line per result on stdout (for scripts and the multi-process tests).

use std::io::Write;
use std::path::{Path, PathBuf};

use pqdag_client::{blocking, ClientOptions, ConflictKey, Cursor, Decision, DecisionEvent, NodeTarget};
use serde_json::json;

/// What `engine submit` sends.
#[derive(Debug, Clone)]
pub struct SubmitArgs {
    /// The cluster file.
    pub cluster: PathBuf,
    /// The payload.
    pub payload: Vec<u8>,
    /// Conflict keys (32 bytes each).
    pub conflict_keys: Vec<[u8; 32]>,
    /// The client key file (default: the testnet's `client/client.key`).
    pub key: Option<PathBuf>,
    /// The node tried first (by name).
    pub node: Option<String>,
    /// Wait for the decision.
    pub wait: bool,
}

/// What `engine tail` reads.
#[derive(Debug, Clone)]
pub struct TailArgs {
    /// The cluster file.
    pub cluster: PathBuf,
    /// The client key file (default: the testnet's `client/client.key`).
    pub key: Option<PathBuf>,
    /// The node whose feed is read (by name); default: the cursor's node, else the first.
    pub node: Option<String>,
    /// Resume after this cursor (hex).
    pub from: Option<String>,
    /// Stop after this many decisions (else follow until interrupted).
    pub count: Option<u64>,
}

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

fn node_index(nodes: &[NodeTarget], name: &str) -> CliResult<usize> {
    nodes.iter().position(|n| n.name == name).ok_or_else(|| format!("no node named {name:?} in the cluster file (nodes: {})", names(nodes)).into())
}

fn names(nodes: &[NodeTarget]) -> String {
    nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Connects proving `key` (a `client.key` file), or by default the testnet's
/// `client/client.key` beside the cluster file.
fn connect(cluster: &Path, key: Option<&Path>, preferred: usize) -> CliResult<blocking::Client> {
    let nodes = pqdag_client::cluster::load_cluster_file(cluster)?;
    let key_path = key.map_or_else(|| pqdag_client::identity::testnet_client_key(cluster), Path::to_path_buf);
    let key = pqdag_client::identity::load_client_key(&key_path)?;
    Ok(blocking::Client::connect(nodes, ClientOptions { preferred, key: Some(key), ..ClientOptions::default() })?)
}

/// Parses a 64-hex-digit conflict key.
pub fn parse_key(hex_key: &str) -> Result<[u8; 32], String> {
    let b = hex::decode(hex_key).map_err(|e| format!("conflict key {hex_key:?}: {e}"))?;
    b.try_into().map_err(|_| format!("conflict key {hex_key:?}: must be 32 bytes (64 hex digits)"))
}

fn decision_json(d: &Decision) -> serde_json::Value {
    match d {
        Decision::Final { shard, position } => json!({ "decision": "final", "shard": shard, "position": position }),
        Decision::Rejected => json!({ "decision": "rejected" }),
    }
}

/// `engine submit`: prints `{"id", "node"}` (and with `--wait` `"decision"`, `"shard"`,
/// `"position"`) on one line.
pub fn submit(args: &SubmitArgs) -> CliResult<String> {
    let nodes = pqdag_client::cluster::load_cluster_file(&args.cluster)?;
    let preferred = args.node.as_deref().map(|n| node_index(&nodes, n)).transpose()?.unwrap_or(0);
    let client = connect(&args.cluster, args.key.as_deref(), preferred)?;
    let keys = args.conflict_keys.iter().map(|k| ConflictKey(*k)).collect();
    let receipt = client.submit(args.payload.clone(), keys)?;
    let mut out = json!({ "tx": receipt.tx.to_hex(), "id": receipt.vertex.to_hex(), "node": client.as_async().current_node().name });
    if args.wait {
        let d = client.wait(receipt)?;
        if let (Some(o), serde_json::Value::Object(d)) = (out.as_object_mut(), decision_json(&d)) {
            o.extend(d);
        }
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")?;
    stdout.flush()?;
    Ok(format!("submitted transaction {} in vertex {}", receipt.tx.to_hex(), receipt.vertex.to_hex()))
}

/// One feed event as a JSON line.
pub fn event_json(ev: &DecisionEvent) -> serde_json::Value {
    let mut v = json!({
        "id": ev.id.to_hex(),
        "txs": ev.txs.iter().map(|t| json!({
            "tx": t.tx.to_hex(),
            "payload_hex": hex::encode(&t.payload),
            "conflict_keys": t.conflict_keys.iter().map(|k| hex::encode(k.0)).collect::<Vec<_>>(),
            "client": hex::encode(t.client),
        })).collect::<Vec<_>>(),
        "parents": ev.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "creator": hex::encode(ev.creator),
        "node": ev.node,
        "cursor": ev.cursor.to_hex(),
    });
    if let (Some(o), serde_json::Value::Object(d)) = (v.as_object_mut(), decision_json(&ev.decision)) {
        o.extend(d);
    }
    v
}

/// `engine tail`: prints one JSON line per decided vertex of one node's feed.
pub fn tail(args: &TailArgs) -> CliResult<String> {
    let nodes = pqdag_client::cluster::load_cluster_file(&args.cluster)?;
    let from = args.from.as_deref().map(|h| Cursor::from_hex(h).ok_or("--from: not a hex cursor")).transpose()?;
    let node = match (&args.node, &from) {
        (Some(n), _) => Some(node_index(&nodes, n)?),
        (None, Some(c)) => nodes.iter().position(|n| n.public_key.node_id()[..8] == *c.as_bytes().get(1..9).unwrap_or(&[])),
        (None, None) => None,
    };
    let client = connect(&args.cluster, args.key.as_deref(), node.unwrap_or(0))?;
    let mut sub = client.subscribe_node(node.unwrap_or(0), from)?;
    let mut n = 0u64;
    let mut stdout = std::io::stdout().lock();
    while args.count.is_none_or(|c| n < c) {
        let Some(ev) = sub.next() else { break };
        let ev = ev?;
        writeln!(stdout, "{}", event_json(&ev))?;
        stdout.flush()?;
        n += 1;
    }
    Ok(format!("{n} decisions"))
}
