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
}
