//! `engine export`: the finalized history of a (stopped) node, for audit.
//!
//! `jsonl`: one finalized vertex per line, in finality order per shard, with everything needed to
//! re-verify it independently: the canonical bytes the id hashes, the id, the exact signed bytes,
//! the ML-DSA-87 context string, the creator's public key and the signature (hex), and `client`:
//! the key id of the client that submitted the payload (hex), when this node recorded one (the
//! node it was submitted to; `null` elsewhere, or before client identities).
//! `dot`: the stored DAG as Graphviz (final green, rejected red, processing grey).
//!
//! Retention (`[storage]` of `config.toml`) prunes old decided vertices for good: an export only
//! holds what is still retained (each shard's finality order from its first retained position),
//! and [`ExportSummary`] says how many were pruned before it. Archive with an export (of a
//! stopped node, or of a node without retention) before turning retention on.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use pqdag_crypto::Domain;
use pqdag_storage::{RocksStore, Status, Store, SyncPolicy};
use pqdag_wire::NodeId;

use crate::config::{ClusterFile, ConfigError, NodeConfig};

/// Output format of `engine export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per finalized vertex.
    Jsonl,
    /// Graphviz DAG.
    Dot,
}

/// Errors of `engine export`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Config or cluster file problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or read (a running node holds its lock: stop it first).
    #[error("store {path}: {source}")]
    Store {
        /// Shard store path.
        path: String,
        /// Cause.
        #[source]
        source: pqdag_storage::StorageError,
    },
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// What an export wrote, and what retention had pruned before it (not in the export).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Vertices written.
    pub written: usize,
    /// Finals pruned by retention before the export (all shards).
    pub pruned_finals: u64,
    /// Rejected vertices pruned by retention before the export (all shards).
    pub pruned_rejected: u64,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exported {} vertices", self.written)?;
        if self.pruned_finals + self.pruned_rejected > 0 {
            write!(f, "; {} older finals and {} rejected were pruned by retention and are not in it", self.pruned_finals, self.pruned_rejected)?;
        }
        Ok(())
    }
}

/// Folder of shard `s`'s RocksDB inside a node's data dir.
pub fn shard_dir(data_dir: &Path, shard: u16) -> std::path::PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

/// Writes the export of the node configured at `config` to `out`.
pub fn export(config: &Path, format: ExportFormat, out: &mut dyn Write) -> Result<ExportSummary, ExportError> {
    let cfg = NodeConfig::load(config)?;
    let cluster = ClusterFile::load(&cfg.cluster)?;
    let keys: HashMap<NodeId, String> = cluster
        .public_keys()?
        .iter()
        .zip(&cluster.nodes)
        .map(|(pk, n)| (NodeId(pk.node_id()), n.public_key.clone()))
        .collect();
    let mut written = 0;
    let mut summary = ExportSummary::default();
    if format == ExportFormat::Dot {
        writeln!(out, "digraph pqdag {{\n  rankdir=BT;\n  node [shape=box, style=filled, fontname=monospace];")?;
    }
    for shard in 0..cluster.shards {
        let path = shard_dir(&cfg.data_dir, shard);
        if !path.exists() {
            continue;
        }
        let err = |source| ExportError::Store { path: path.display().to_string(), source };
        let store = RocksStore::open(&path, SyncPolicy::WalNoSync).map_err(err)?;
        let (pf, pr) = store.pruned_counts().map_err(err)?;
        summary.pruned_finals += pf;
        summary.pruned_rejected += pr;
        match format {
            ExportFormat::Jsonl => {
                let mut from = 0;
                loop {
                    let page = store.finalized_range(from, 1024).map_err(err)?;
                    let Some(&(last, _)) = page.last() else { break };
                    for (position, id) in page {
                        let Some(sv) = store.get(&id).map_err(err)? else { continue };
                        let v = &sv.vertex;
                        let clients = store.clients_of(&id).map_err(err)?.unwrap_or_default();
                        let mut txs = Vec::with_capacity(v.txs.len());
                        for (i, t) in v.txs.iter().enumerate() {
                            let tx = t.id();
                            let client = clients.get(i).filter(|c| **c != [0; 32]).map(hex::encode);
                            txs.push(serde_json::json!({
                                "tx": tx.to_hex(),
                                "payload": hex::encode(&t.payload),
                                "conflict_keys": t.conflict_keys.iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
                                "client": client,
                            }));
                        }
                        let line = serde_json::json!({
                            "shard": shard,
                            "position": position,
                            "id": v.id.to_hex(),
                            "parents": v.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                            "txs": txs,
                            "tx_root": hex::encode(v.tx_root()),
                            "timestamp_ms": v.timestamp_ms,
                            "creator": v.creator.to_hex(),
                            "creator_public_key": keys.get(&v.creator).cloned().unwrap_or_default(),
                            "canonical_bytes": hex::encode(v.canonical_bytes()),
                            "signed_bytes": hex::encode(v.signed_bytes()),
                            "signature_context": String::from_utf8_lossy(Domain::Vertex.context()),
                            "signature": hex::encode(&v.signature),
                        });
                        writeln!(out, "{line}")?;
                        written += 1;
                    }
                    from = last + 1;
                }
            }
            ExportFormat::Dot => {
                for sv in store.load_all().map_err(err)? {
                    let color = match sv.status {
                        Status::Final { .. } => "palegreen",
                        Status::Rejected => "lightcoral",
                        Status::Processing => "lightgrey",
                    };
                    let id = sv.vertex.id.to_hex();
                    writeln!(out, "  \"{id}\" [label=\"{}\", fillcolor={color}];", &id[..12])?;
                    for p in &sv.vertex.parents {
                        writeln!(out, "  \"{id}\" -> \"{}\";", p.to_hex())?;
                    }
                    written += 1;
                }
            }
        }
    }
    if format == ExportFormat::Dot {
        writeln!(out, "}}")?;
    }
    summary.written = written;
    Ok(summary)
}
