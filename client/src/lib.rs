//! `pqdag-client`: the client library of a pqdag cluster, for ordinary Rust programs.
//!
//! * Async on Tokio ([`Client`]) or blocking ([`blocking::Client`], which owns a runtime).
//! * QUIC (`quinn` 0.11) with TLS 1.3 restricted to the hybrid post-quantum group
//!   X25519MLKEM768 ([`tls`]), ALPN `pqdag-client/2`, like the node's client endpoint.
//! * The client proves its ML-DSA-87 client key first ([`ClientOptions::key`]); a node that
//!   does not list it refuses with [`ClientError::NotAuthorized`]. Then every node proves its
//!   own ML-DSA-87 identity over the TLS exporter before anything else is read ([`identity`]);
//!   a node without the expected key is [`ClientError::IdentityMismatch`].
//! * Speaks the client protocol of `pqdag-wire` (`ClientRequest`/`ClientReply`).
//! * Nodes come from a list ([`NodeTarget`]) or a `cluster.toml` ([`cluster`]); a request that
//!   fails on one node (connection error, timeout, not ready, overloaded) moves on to the
//!   next, round robin from the preferred one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pqdag_client::ClientError> {
//! use pqdag_client::{Client, ClientOptions, ConflictKey};
//! let client = Client::from_cluster_file("testnet/cluster.toml".as_ref(), ClientOptions::default()).await?;
//! let (id, decision) = client.submit_and_wait(b"hello".to_vec(), vec![ConflictKey([7; 32])]).await?;
//! println!("{id}: {decision:?}");
//! # Ok(()) }
//! ```
//!
//! See `docs/clients.md` for the errors and what the nodes support today.

pub mod blocking;
mod client;
pub mod cluster;
mod conn;
mod error;
mod feed;
pub mod identity;
mod proto;
mod registry;
pub mod tls;
mod types;

pub use client::{Client, ClientOptions};
pub use cluster::NodeTarget;
pub use error::ClientError;
pub use feed::Subscription;
pub use pqdag_crypto::{Keypair, PublicKey};
pub use types::{ConflictKey, Cursor, DecidedTx, Decision, DecisionEvent, Receipt, Status, TxId, VertexId};
