//! Sans-IO Avalanche DAG consensus core of pqdag (spec sections 2-3, 4.4, 4.5, 5.3).
//!
//! The shape follows quinn-proto and raft-rs: the shell calls [`Core::handle`] with the current
//! monotonic time (microseconds) and one [`Event`], then drains [`Core::poll_action`] and arms a
//! timer at [`Core::poll_timeout`]. The core never reads a clock, spawns a thread or does I/O;
//! its randomness is a `ChaCha8Rng` seeded from [`Config::seed`], so a simulator replays it.
//!
//! Method classes: getters (`status`, `vertex`, `peer_score`, ...), `handle` (inputs),
//! mutators (`restore`), and `poll_*` (outputs). Poll order: after every `handle`, drain
//! `poll_action` until `None`, then read `poll_timeout`.
//!
//! Durability contract: a [`Action::Persist`] must be durable before any LATER send action of
//! the same drained batch is released (raft's persist-before-send). Own vertices are persisted
//! before they are gossiped. See docs/consensus.md for the design.

mod batch;
mod census;
mod conflicts;
mod core;
mod credit;
mod cross_shard;
mod dag;
mod diagnose;
mod error;
mod finality;
mod flood;
mod forgotten;
mod gossip;
mod id_hash;
#[cfg(debug_assertions)]
mod invariants;
mod lock_rounds;
mod locks;
mod node_polls;
mod params;
mod peers;
mod pending;
mod poll_votes;
mod polls;
pub mod ratelimit;
mod restore;
mod retention;
mod snowball;
mod stand_ins;
mod submit;
mod sync;
mod timers;
mod types;
mod unblock;
mod votes;

pub use crate::core::{Core, CoreStatus};
pub use census::CensusLine;
pub use batch::{OwnTags, OWN_VERTICES_MAX, REISSUE_MAX};
pub use cross_shard::WATCHED_MAX;
pub use dag::VERTICES_MAX;
pub use flood::{CREATOR_PROCESSING_MAX, CREATOR_PROCESSING_VERTEX_BYTES};
pub use gossip::{alert_targets, ALERT_FANOUT};
pub use id_hash::{HashMap as IdHashMap, HashSet as IdHashSet, IdHasher};
pub use forgotten::{DecisionArchive, MemArchive};
pub use pending::{PENDING_BYTES_MAX, PENDING_MAX, PENDING_PEER_BYTES_MAX};
pub use node_polls::{PollPart, GATHERS_MAX, GATHERS_PER_PEER_MAX, GATHER_WAIT_DIVISOR, TOGETHER_BACKOFF_US};
pub use polls::POLL_CLOSED_MAX;
pub use ratelimit::{Admission, Budget, RateLimits, RequestKind};
pub use retention::{shrink_sparse, Shrink};
pub use sync::REQUESTED_MAX;
pub use error::{ConsensusError, ConsensusResult};
pub use params::{alpha_for, engine_poll_interval_us, sample_for, Params, ENGINE_ALPHA, ENGINE_BETA, ENGINE_POLL_INTERVAL_US, ENGINE_SAMPLE_SIZE, SAMPLE_SIZE_MAX};
pub use peers::{Misbehaviour, PeerScore, Roster, EXCLUDE_SCORE, PEER_TIMEOUT_WINDOW, SCORE_HALF_LIFE_US, TIMEOUT_WINDOW};
pub use types::{genesis, shard_of_key, shard_of_vertex, Action, Config, Event, ShardMsg, Signer, VertexStatus, SHARDS_MAX};

pub use pqdag_crypto::Domain;
pub use pqdag_wire::{ConflictKey, NodeId, Transaction, TxId, VertexId};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_adversary;
#[cfg(test)]
mod tests_batch;
#[cfg(test)]
mod tests_flood;
#[cfg(test)]
mod tests_locks;
#[cfg(test)]
mod tests_node_polls;
#[cfg(test)]
mod tests_retention;
#[cfg(test)]
mod tests_shards;
