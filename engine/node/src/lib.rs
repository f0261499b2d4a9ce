//! The pqdag node: configuration, key and testnet tooling, and (being built) the thread-per-core
//! runtime that joins the consensus core, the QUIC transport and RocksDB storage.

pub mod check;
pub mod client_cli;
pub mod cluster_config;
pub mod config;
pub mod counting_alloc;
pub mod export;
pub mod host_tuning;
pub mod runtime;
pub mod testnet;

pub use config::{ClusterFile, ClusterNode, ConfigError, NodeConfig};
