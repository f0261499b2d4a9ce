//! Durable storage of the DAG, one store per shard (share-nothing: a shard's core owns its store
//! outright, no cross-core locking).
//!
//! What is stored, and the contract the engine relies on:
//! * every vertex the node accepts is written (with status `Processing`) before the node votes for
//!   it or relays it;
//! * a vertex's final status (`Final { position }` or `Rejected`) is written before the finality
//!   event leaves the node;
//! * every decision (a status going from undecided to `Final` or `Rejected`) is appended, in the
//!   same batch, to the shard's **decision log** at the next decision sequence number (1, 2, ...):
//!   once per vertex, never rewritten, surviving restarts. It backs the clients' decision feed;
//!   each store also has a random [`Store::decision_log_id`] so a cursor into a log that was
//!   wiped (an emptied data dir) is recognised;
//! * writes are applied in [`StoreBatch`]es (one per shard tick), atomically, with the WAL on, and
//!   synced to disk under [`SyncPolicy::EveryBatch`], and under [`SyncPolicy::ByClass`] (the
//!   default) unless the caller marked the batch deferrable ([`StoreBatch::mark_deferrable`]);
//! * the winner of every decided conflict key ([`StoreBatch::set_winner`]) is kept forever (64
//!   bytes per key), so the core can forget decided sets and still refuse a late spend;
//! * **retention** ([`Store::prune`]): decided vertices can be pruned in decision-log order. A
//!   pruned vertex loses its bytes, its client record and its decision-log entry; its status
//!   stays (so it is never stored or decided again), its keys' winners stay, and the count and
//!   set digest of all pruned finals (`RocksStore::pruned_summary`) let a restart count them
//!   final and in the digest. Batches carrying a time ([`StoreBatch::set_time`]) leave one mark
//!   per second in the log, which turns a retention window into a decision sequence
//!   ([`Store::decided_before`]).
//!
//! [`RocksStore`] is the production store; [`MemStore`] the in-memory twin used by tests and the
//! simulator. Both pass the same conformance suite (`tests/conformance.rs`).

mod error;
mod mem;
mod prune;
mod record;
mod rocks;

pub use error::StorageError;
pub use mem::MemStore;
pub use record::{Status, StoredVertex};
pub use prune::{BackgroundPrune, Pruned, PrunedFinal, COMPACT_AFTER_PRUNED_MIN};
pub use rocks::{RocksStore, StoreMemory, StoreReader, SyncPolicy, COLUMN_FAMILIES};

use std::sync::Arc;

use pqdag_wire::{ConflictKey, Vertex, VertexId};

/// A quorum lock as stored: the member, and the lock's round and gate (the core's lock
/// rounds: a node that forgot how old its lock is could leave it on an older certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLock {
    /// The member the set is locked on.
    pub member: VertexId,
    /// A round in which a certificate for the member exists (0: claims nothing).
    pub round: u64,
    /// The lock moves only on a certificate of a later round; `u64::MAX` (a record written
    /// before lock rounds): the round the node restarts in.
    pub gate: u64,
}

/// One atomic group of writes.
#[derive(Debug, Default, Clone)]
pub struct StoreBatch {
    /// Shared with the caller (the core's record): the bytes are encoded, never copied first.
    pub(crate) vertices: Vec<Arc<Vertex>>,
    pub(crate) statuses: Vec<(VertexId, Status)>,
    pub(crate) meta: Vec<(String, Vec<u8>)>,
    pub(crate) clients: Vec<(VertexId, Vec<[u8; 32]>)>,
    /// Winners of decided conflict keys.
    pub(crate) winners: Vec<(ConflictKey, VertexId)>,
    /// Quorum locks of the core's conflict sets (`None`: released).
    pub(crate) locks: Vec<(ConflictKey, Option<StoredLock>)>,
    /// Wall-clock time of the batch, unix seconds (retention marks), when set.
    pub(crate) time_secs: Option<u64>,
    /// Carries only what peers can send again: not fsynced under `SyncPolicy::ByClass`.
    pub(crate) deferrable: bool,
}

/// One entry of a shard's decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// Its decision sequence number in this store (1-based, dense, never reused).
    pub seq: u64,
    /// The vertex.
    pub id: VertexId,
    /// `Final { position }` or `Rejected`.
    pub status: Status,
}

impl StoreBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the batch as carrying only what peers can send again (vertices received from
    /// them, still undecided): under `SyncPolicy::ByClass` it is written to the WAL without an
    /// fsync, and becomes durable with the next fsynced batch. Losing it to a power cut costs
    /// re-fetching those vertices, nothing the node told anyone depends on it: a decision, a
    /// quorum lock or an own vertex (which may name it as a parent) is never deferrable, and
    /// its fsync covers every earlier write. The caller decides: the store cannot tell an own
    /// vertex from a received one.
    pub fn mark_deferrable(&mut self) {
        self.deferrable = true;
    }

    /// Whether [`StoreBatch::mark_deferrable`] was called.
    pub fn is_deferrable(&self) -> bool {
        self.deferrable
    }

    /// Adds a vertex (status `Processing` unless a status for it is also in the batch).
    /// Takes a shared vertex as it is (a batched vertex is tens of KB) or an owned one.
    pub fn put_vertex(&mut self, vertex: impl Into<Arc<Vertex>>) {
        self.vertices.push(vertex.into());
    }

    /// Sets a vertex's status. `Final` also appends it to the finality index at its position.
    pub fn set_status(&mut self, id: VertexId, status: Status) {
        self.statuses.push((id, status));
    }

    /// Sets a small metadata value (e.g. the node id the store belongs to).
    pub fn put_meta(&mut self, key: &str, value: Vec<u8>) {
        self.meta.push((key.to_owned(), value));
    }

    /// Records the key ids of the clients that submitted vertex `id`'s transactions, one per
    /// transaction in vertex order (zero: not recorded) (audit, decision feed). One record per
    /// vertex, so retention prunes it with the vertex.
    pub fn set_clients(&mut self, id: VertexId, clients: Vec<[u8; 32]>) {
        self.clients.push((id, clients));
    }

    /// Records that final vertex `id` won the conflict set of `key` (the core looks it up once
    /// it has forgotten the set: a late spend of `key` loses). Written once per key; a winner
    /// never changes.
    pub fn set_winner(&mut self, key: ConflictKey, id: VertexId) {
        self.winners.push((key, id));
    }

    /// Records the core's quorum lock on the conflict set of `key` (`None`: released, the
    /// record is deleted). The core needs its locks back after a restart ([`Store::locks`]):
    /// a node that forgot one could vote against it for free.
    pub fn set_lock(&mut self, key: ConflictKey, lock: Option<StoredLock>) {
        self.locks.push((key, lock));
    }

    /// Stamps the batch with the wall-clock time (unix seconds): the first batch of each second
    /// that logs a decision leaves a retention mark (see [`Store::decided_before`]).
    pub fn set_time(&mut self, unix_secs: u64) {
        self.time_secs = Some(unix_secs);
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty() && self.statuses.is_empty() && self.meta.is_empty() && self.clients.is_empty() && self.winners.is_empty() && self.locks.is_empty()
    }

    /// Number of records in the batch.
    pub fn len(&self) -> usize {
        self.vertices.len() + self.statuses.len() + self.meta.len() + self.clients.len() + self.winners.len() + self.locks.len()
    }
}

/// What a shard needs from durable storage.
pub trait Store {
    /// Applies a batch atomically (all or nothing).
    fn write(&mut self, batch: StoreBatch) -> Result<(), StorageError>;
    /// One vertex and its status.
    fn get(&self, id: &VertexId) -> Result<Option<StoredVertex>, StorageError>;
    /// Every stored vertex with its status, in no particular order (recovery on restart).
    fn load_all(&self) -> Result<Vec<StoredVertex>, StorageError>;
    /// Calls `f` for every stored vertex, one at a time (a restart's streaming pass over a long
    /// history: nothing is collected).
    fn visit_all(&self, f: &mut dyn FnMut(StoredVertex)) -> Result<(), StorageError>;
    /// Finalized ids in finality order from `from_position` (inclusive), at most `limit`.
    fn finalized_range(&self, from_position: u64, limit: usize) -> Result<Vec<(u64, VertexId)>, StorageError>;
    /// A metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Decision-log entries from sequence `from_seq` (inclusive), in log order, at most `limit`.
    fn decisions(&self, from_seq: u64, limit: usize) -> Result<Vec<Decided>, StorageError>;
    /// The sequence number the next decision will get (1 for an empty log).
    fn next_decision_seq(&self) -> u64;
    /// This store's decision-log identity: random, fixed when the store was created.
    fn decision_log_id(&self) -> u64;
    /// The key ids of the clients that submitted vertex `id`'s transactions (in vertex order;
    /// zero where none was recorded), when this node recorded any.
    fn clients_of(&self, id: &VertexId) -> Result<Option<Vec<[u8; 32]>>, StorageError>;
    /// The final winner of decided conflict key `key` ([`StoreBatch::set_winner`]); kept
    /// through retention.
    fn key_winner(&self, key: &ConflictKey) -> Result<Option<VertexId>, StorageError>;
    /// The quorum locks held ([`StoreBatch::set_lock`], later writes win), in key order.
    fn locks(&self) -> Result<Vec<(ConflictKey, StoredLock)>, StorageError>;
    /// A vertex's status, also for a pruned vertex (whose bytes are gone).
    fn status(&self, id: &VertexId) -> Result<Option<Status>, StorageError>;
    /// The first decision sequence still held (1 when nothing was pruned): decisions before it
    /// were pruned.
    fn retained_from_seq(&self) -> u64;
    /// The decision sequence before which every decision was logged before unix second
    /// `unix_secs` (from the per-second marks; [`Store::retained_from_seq`] when none is that
    /// old): what a retention window of `now - unix_secs` may prune.
    fn decided_before(&self, unix_secs: u64) -> Result<u64, StorageError>;
    /// Prunes decided vertices from the oldest retained decision up to `before_seq`
    /// (exclusive), at most `max` decisions per call (bounded work), in one atomic batch.
    fn prune(&mut self, before_seq: u64, max: usize) -> Result<Pruned, StorageError>;
}

/// A fresh decision-log identity (not cryptographic: it only tells two incarnations apart).
pub(crate) fn new_log_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish().max(1)
}
