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


use pqdag_core::{DecisionArchive, VertexStatus};
use pqdag_storage::{Status, StoreReader};
use pqdag_wire::{ConflictKey, VertexId};

/// Store-backed archive of one shard's forgotten decisions.
pub(super) struct StoreArchive {
    reader: StoreReader,
    /// Every shard's reader (see `ShardSetup::winner_stores`): a key's winner sits in the store
    /// of the shard owning the winning VERTEX. Reading only this shard's store, a node with
    /// S > 1 forgot every cross-shard key 60 s after deciding it (and at every restart), so a
    /// late double spend of such a key could start a fresh conflict set and win
    /// (`sim-faults` seed 549 stalled on the restart side of it).
    all: super::WinnerStores,
    /// This shard's slot in `all` (its own store, read first).
    shard: usize,
    /// Stops the node when a read fails.
    fatal: super::Fatal,
}

impl StoreArchive {
    /// An archive reading `reader`, stopping the node through `fatal` on a read error.
    pub(super) fn new(reader: StoreReader, all: super::WinnerStores, shard: usize, fatal: super::Fatal) -> Self {
        Self { reader, all, shard, fatal }
    }

    /// The key's winner in this shard's store, else in the other shards'.
    fn winner_anywhere(&self, key: &ConflictKey) -> Result<Option<VertexId>, pqdag_storage::StorageError> {
        if let Some(w) = self.reader.key_winner(key)? {
            return Ok(Some(w));
        }
        for r in self.all.iter().enumerate().filter(|(i, _)| *i != self.shard).filter_map(|(_, s)| s.get()) {
            if let Some(w) = r.key_winner(key)? {
                return Ok(Some(w));
            }
        }
        Ok(None)
    }

    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.fatal.fail(format!("store read ({what}) failed: {e}"));
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

    fn misses_are_stable(&self) -> bool {
        // A shard that restored without waiting for every store (`STORES_OPEN_WAIT_MAX`) must
        // not remember a miss that an unopened store may answer later.
        self.all.iter().all(|s| s.get().is_some())
    }

    fn key_winner(&self, key: &ConflictKey) -> Option<VertexId> {
        match self.winner_anywhere(key) {
            Ok(w) => w,
            Err(e) => {
                self.failed("winner", &e);
                None
            }
        }
    }

    fn key_winners(&self, keys: &[ConflictKey]) -> Option<Vec<Option<VertexId>>> {
        let mut out = match self.reader.key_winners(keys) {
            Ok(w) => w,
            Err(e) => {
                self.failed("winners", &e);
                return None;
            }
        };
        // As `winner_anywhere`: a key missing here may have been written by another shard.
        for r in self.all.iter().enumerate().filter(|(i, _)| *i != self.shard).filter_map(|(_, s)| s.get()) {
            let missing: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
            if missing.is_empty() {
                break;
            }
            let ask: Vec<ConflictKey> = missing.iter().map(|&i| keys[i]).collect();
            match r.key_winners(&ask) {
                Ok(found) => {
                    for (i, w) in missing.into_iter().zip(found) {
                        out[i] = w;
                    }
                }
                Err(e) => {
                    self.failed("winners", &e);
                    return None;
                }
            }
        }
        Some(out)
    }

    fn evicted_final(&mut self, id: VertexId) {
        debug_assert!(matches!(self.reader.status(&id), Ok(Some(Status::Final { .. }))), "the core archived {id} before the store had it final");
    }

    fn evicted_rejected(&mut self, id: VertexId) {
        debug_assert!(matches!(self.reader.status(&id), Ok(Some(Status::Rejected))), "the core archived {id} before the store had it rejected");
    }

    fn evicted_key(&mut self, key: ConflictKey, winner: VertexId) {
        debug_assert_eq!(self.winner_anywhere(&key).ok().flatten(), Some(winner), "the core archived a decided key before a store had its winner");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};

    use pqdag_storage::{RocksStore, Store, StoreBatch, SyncPolicy};

    use super::*;

    /// A key's winner is stored with the winning vertex, on the vertex's shard: the key's own
    /// shard must find it there (before: only its own store was read, so every cross-shard key
    /// was forgotten once archived, and at every restart).
    #[test]
    fn a_key_shard_finds_the_winner_in_the_vertex_shard_store() {
        let dirs = [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
        let mut stores: Vec<RocksStore> = dirs.iter().map(|d| RocksStore::open(d.path(), SyncPolicy::WalNoSync).expect("open")).collect();
        let (key, winner) = (ConflictKey([7; 32]), VertexId([9; 32]));
        let mut b = StoreBatch::new();
        b.set_winner(key, winner);
        stores[0].write(b).expect("write");
        let all: super::super::WinnerStores = (0..2).map(|_| OnceLock::new()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let alone = StoreArchive::new(stores[1].reader(), (0..2).map(|_| OnceLock::new()).collect(), 1, super::super::Fatal::new(stop.clone()));
        assert_eq!(alone.key_winner(&key), None, "its own store does not have it");
        for (slot, s) in all.iter().zip(&stores) {
            let _ = slot.set(s.reader());
        }
        let archive = StoreArchive::new(stores[1].reader(), all, 1, super::super::Fatal::new(stop.clone()));
        assert_eq!(archive.key_winner(&key), Some(winner));
        assert_eq!(archive.key_winner(&ConflictKey([8; 32])), None);
        assert!(!stop.load(Ordering::Relaxed));
        // The batched read gives the point reads' answers, in order, from either store.
        let mut b = StoreBatch::new();
        let own = (ConflictKey([3; 32]), VertexId([4; 32]));
        b.set_winner(own.0, own.1);
        stores[1].write(b).expect("write");
        let keys = [ConflictKey([8; 32]), key, own.0, ConflictKey([5; 32]), key];
        let batched = archive.key_winners(&keys).expect("answered");
        assert_eq!(batched, vec![None, Some(winner), Some(own.1), None, Some(winner)]);
        assert_eq!(batched, keys.iter().map(|k| archive.key_winner(k)).collect::<Vec<_>>(), "as the point reads");
        assert_eq!(alone.key_winners(&keys).expect("answered"), vec![None, None, Some(own.1), None, None], "only its own store");
        assert!(!stop.load(Ordering::Relaxed));
    }
}
