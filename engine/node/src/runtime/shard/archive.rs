//! The core's [`DecisionArchive`] on the shard's RocksDB store: where the core looks up finals
//! and decided conflict keys it has forgotten for longer than `ARCHIVE_AFTER_US` (memory bounded
//! whatever the history length, issue 15). Point reads through a [`StoreReader`] beside the
//! writer: the `status` and `winners` column families carry bloom filters, so the common miss
//! (a new vertex's id) costs no disk read.
//!
//! Why it is safe: a decision is written, with its fsync, in the turn that makes it (`persist`),
//! and a key's winner with it; the core forgets a final 30 s later and archives it 30 s after
//! that, so every id or key the core hands over is already in the store. Debug builds check it
//! on every eviction. A failed read stops the node like a failed write: without the answer the
//! node could take an old double spend for a new one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pqdag_core::{DecisionArchive, VertexStatus};
use pqdag_storage::{Status, StoreReader};
use pqdag_wire::{ConflictKey, VertexId};

/// Store-backed archive of one shard's forgotten decisions.
pub(super) struct StoreArchive {
    reader: StoreReader,
    /// The node's stop flag: set when a read fails.
    stop: Arc<AtomicBool>,
}

impl StoreArchive {
    /// An archive reading `reader`, stopping the node through `stop` on a read error.
    pub(super) fn new(reader: StoreReader, stop: Arc<AtomicBool>) -> Self {
        Self { reader, stop }
    }

    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        tracing::error!(error = %e, what, "store read failed; stopping the node");
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl DecisionArchive for StoreArchive {
    fn status(&self, id: &VertexId) -> Option<VertexStatus> {
        match self.reader.status(id) {
            Ok(Some(Status::Final { .. })) => Some(VertexStatus::Final),
            Ok(Some(Status::Rejected)) => Some(VertexStatus::Rejected),
            Ok(Some(Status::Processing) | None) => None,
            Err(e) => {
                self.failed("status", &e);
                None
            }
        }
    }

    fn key_winner(&self, key: &ConflictKey) -> Option<VertexId> {
        match self.reader.key_winner(key) {
            Ok(w) => w,
            Err(e) => {
                self.failed("winner", &e);
                None
            }
        }
    }

    fn evicted_final(&mut self, id: VertexId) {
        debug_assert!(matches!(self.reader.status(&id), Ok(Some(Status::Final { .. }))), "the core archived {id} before the store had it final");
    }

    fn evicted_key(&mut self, key: ConflictKey, winner: VertexId) {
        debug_assert_eq!(self.reader.key_winner(&key).ok().flatten(), Some(winner), "the core archived a decided key before the store had its winner");
    }
}
