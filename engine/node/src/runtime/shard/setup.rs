//! What a shard is given and how it fails: [`ShardSetup`], built by the node before the
//! executors start, and [`ShardError`], reported by the node. Owns no runtime state.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pqdag_core::{Params, VertexStatus};
use pqdag_crypto::{Keypair, PublicKey};
use pqdag_storage::SyncPolicy;
use pqdag_wire::VertexId;

use super::super::mesh::MeshSetup;
use super::super::metrics::{Metrics, ShardStatus};

/// Stops the node for a reason that must not look like a clean stop (a failed store read or
/// write): the shard then returns [`ShardError::Fatal`] and `engine run` exits 1, so a
/// supervisor restarts it and an operator sees why (a full disk stopped a bench's three nodes
/// with exit code 0, indistinguishable from SIGTERM).
#[derive(Clone)]
pub(crate) struct Fatal {
    stop: Arc<AtomicBool>,
    reason: Arc<std::sync::OnceLock<String>>,
}

impl Fatal {
    /// Sets `stop` when it fails.
    pub(crate) fn new(stop: Arc<AtomicBool>) -> Self {
        Self { stop, reason: Arc::new(std::sync::OnceLock::new()) }
    }

    /// Stops the node; the first reason is kept.
    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "stopping the node");
        let _ = self.reason.set(reason);
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Why the node was stopped, if it was by [`Self::fail`].
    pub(crate) fn reason(&self) -> Option<&String> {
        self.reason.get()
    }
}

/// One slot per shard of the node, filled with its store's reader when it opens.
pub type WinnerStores = std::sync::Arc<[std::sync::OnceLock<pqdag_storage::StoreReader>]>;

/// Everything a shard needs, built by the node before the executors start.
pub struct ShardSetup {
    /// Shard index.
    pub shard: u16,
    /// Shards per node.
    pub shard_count: u16,
    /// This node's index in the cluster list.
    pub me: usize,
    /// Cluster members' names, public keys and this shard's peer address, in cluster order.
    pub members: Vec<(String, PublicKey, SocketAddr)>,
    /// Own key pair.
    pub keypair: Arc<Keypair>,
    /// Protocol parameters.
    pub params: Params,
    /// Where this shard binds its UDP socket.
    pub bind: SocketAddr,
    /// Client endpoint (shard 0 only).
    pub client_bind: Option<SocketAddr>,
    /// Client keys the client endpoint accepts (`client_keys` of the node config).
    pub client_keys: Vec<PublicKey>,
    /// RocksDB folder of this shard.
    pub store_dir: std::path::PathBuf,
    /// Store sync policy.
    pub sync: SyncPolicy,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// This shard's status slot.
    pub status: Arc<ShardStatus>,
    /// Set to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// Seed of the core's RNG.
    pub seed: u64,
    /// Test-only misbehaviour (hidden `--byzantine` flag).
    pub byzantine: Option<super::super::byzantine::ByzantineMode>,
    /// The node's shard mesh (None with one shard).
    pub mesh: Option<MeshSetup>,
    /// Decided statuses of other shards' vertices that this shard's stored vertices name as
    /// parents (S > 1 restarts).
    pub remote_facts: Vec<(VertexId, VertexStatus)>,
    /// Least time between the starts of two turns, us (0: no pacing).
    pub turn_interval_min_us: u64,
    /// Every shard's store reader, set by each shard once its store is open: a conflict key's
    /// winner is written with the winning vertex, in the store of the shard that OWNS THE VERTEX,
    /// which is not the key's shard when they differ; the key's shard looks there too
    /// (`archive.rs`).
    pub winner_stores: WinnerStores,
    /// Store retention (`[storage]` of `config.toml`; off: keep everything).
    pub retention: super::retention::RetentionPolicy,
    /// Free bytes under which client submissions are refused (`[storage] min_free_bytes`; 0: none).
    pub min_free_bytes: u64,
}

/// Errors that stop a shard (reported by the node, which exits non-zero).
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The store could not be opened or written: the node must not go on without durability.
    #[error("storage: {0}")]
    Storage(#[from] pqdag_storage::StorageError),
    /// The endpoint could not start (port in use, TLS setup).
    #[error("transport: {0}")]
    Transport(#[from] pqdag_transport::TransportError),
    /// The core refused its configuration.
    #[error("consensus: {0}")]
    Consensus(#[from] pqdag_core::ConsensusError),
    /// The shard mesh could not be set up.
    #[error("mesh: {0}")]
    Mesh(String),
    /// A store read or write failed while running: the node stopped (see [`Fatal`]).
    #[error("stopped: {0}")]
    Fatal(String),
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::{Fatal, ShardError};

    /// A failed store operation stops the node and is reported as an error (exit 1), the first
    /// reason kept; a clean stop has no reason.
    #[test]
    fn a_fatal_stop_is_an_error_with_its_first_reason() {
        let stop = Arc::new(AtomicBool::new(false));
        let fatal = Fatal::new(stop.clone());
        assert!(fatal.reason().is_none());
        fatal.clone().fail("store write failed: No space left on device".into());
        fatal.fail("store read (status) failed".into());
        assert!(stop.load(Ordering::Relaxed), "the node stops");
        let e = ShardError::Fatal(fatal.reason().expect("a reason").clone());
        assert_eq!(e.to_string(), "stopped: store write failed: No space left on device");
    }
}
