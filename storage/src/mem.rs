//! The in-memory twin of [`RocksStore`](crate::RocksStore), with the same semantics.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pqdag_wire::{ConflictKey, VertexId};

use crate::record::check_transition;
use crate::{Decided, Pruned, Status, StorageError, Store, StoreBatch, StoredLock, StoredVertex};

/// An in-memory [`Store`]: tests and the simulator.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    vertices: HashMap<VertexId, StoredVertex>,
    finalized: BTreeMap<u64, VertexId>,
    meta: HashMap<String, Vec<u8>>,
    decisions: Vec<Decided>,
    clients: HashMap<VertexId, Vec<[u8; 32]>>,
    log_id: u64,
    /// Winners of decided conflict keys.
    winners: HashMap<ConflictKey, VertexId>,
    /// Quorum locks of the core's conflict sets.
    locks: BTreeMap<ConflictKey, StoredLock>,
    /// Statuses of pruned vertices (their bytes are gone).
    pruned_status: HashMap<VertexId, Status>,
    /// Retention marks: unix second -> first decision seq logged in it.
    marks: BTreeMap<u64, u64>,
    /// First decision seq not pruned (0 before the first use: read as 1).
    retained_from: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self { log_id: crate::new_log_id(), ..Self::default() }
    }
}

impl Store for MemStore {
    fn write(&mut self, batch: StoreBatch) -> Result<(), StorageError> {
        // Validate the whole batch first so it applies all or nothing.
        for (id, status) in &batch.statuses {
            let old = self.status(id)?;
            let known = old.is_some() || batch.vertices.iter().any(|v| v.id == *id);
            if !known {
                return Err(StorageError::UnknownVertex(id.to_hex()));
            }
            check_transition(id, old, *status)?;
        }
        let first_new = self.decisions.len() as u64 + 1;
        for v in batch.vertices {
            // A pruned vertex is never stored again.
            if !self.pruned_status.contains_key(&v.id) {
                self.vertices.entry(v.id).or_insert(StoredVertex { vertex: Arc::unwrap_or_clone(v), status: Status::Processing });
            }
        }
        for (id, status) in batch.statuses {
            if self.pruned_status.contains_key(&id) {
                continue; // decided and pruned: the same decision again (checked above)
            }
            if let Some(s) = self.vertices.get_mut(&id) {
                if !s.status.is_decided() && status.is_decided() {
                    let seq = self.decisions.len() as u64 + 1;
                    self.decisions.push(Decided { seq, id, status });
                }
                s.status = status;
            }
            if let Status::Final { position } = status {
                self.finalized.insert(position, id);
            }
        }
        self.meta.extend(batch.meta);
        self.clients.extend(batch.clients);
        for (k, id) in batch.winners {
            self.winners.entry(k).or_insert(id);
        }
        for (k, member) in batch.locks {
            match member {
                Some(id) => self.locks.insert(k, id),
                None => self.locks.remove(&k),
            };
        }
        let last_mark = self.marks.keys().next_back().copied().unwrap_or(0);
        if let Some(t) = batch.time_secs.filter(|t| *t > last_mark && self.decisions.len() as u64 + 1 > first_new) {
            self.marks.insert(t, first_new);
        }
        Ok(())
    }

    fn get(&self, id: &VertexId) -> Result<Option<StoredVertex>, StorageError> {
        Ok(self.vertices.get(id).cloned())
    }

    fn load_all(&self) -> Result<Vec<StoredVertex>, StorageError> {
        Ok(self.vertices.values().cloned().collect())
    }

    fn visit_all(&self, f: &mut dyn FnMut(StoredVertex)) -> Result<(), StorageError> {
        for sv in self.vertices.values() {
            f(sv.clone());
        }
        Ok(())
    }

    fn finalized_range(&self, from_position: u64, limit: usize) -> Result<Vec<(u64, VertexId)>, StorageError> {
        Ok(self.finalized.range(from_position..).take(limit).map(|(p, id)| (*p, *id)).collect())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(key).cloned())
    }

    fn decisions(&self, from_seq: u64, limit: usize) -> Result<Vec<Decided>, StorageError> {
        let start = (from_seq.max(self.retained_from_seq()) - 1) as usize;
        Ok(self.decisions.iter().skip(start).take(limit).copied().collect())
    }

    fn next_decision_seq(&self) -> u64 {
        self.decisions.len() as u64 + 1
    }

    fn decision_log_id(&self) -> u64 {
        self.log_id
    }

    fn clients_of(&self, id: &VertexId) -> Result<Option<Vec<[u8; 32]>>, StorageError> {
        Ok(self.clients.get(id).cloned())
    }

    fn key_winner(&self, key: &ConflictKey) -> Result<Option<VertexId>, StorageError> {
        Ok(self.winners.get(key).copied())
    }

    fn locks(&self) -> Result<Vec<(ConflictKey, StoredLock)>, StorageError> {
        Ok(self.locks.iter().map(|(k, m)| (*k, *m)).collect())
    }

    fn status(&self, id: &VertexId) -> Result<Option<Status>, StorageError> {
        Ok(self.vertices.get(id).map(|s| s.status).or_else(|| self.pruned_status.get(id).copied()))
    }

    fn retained_from_seq(&self) -> u64 {
        self.retained_from.max(1)
    }

    fn decided_before(&self, unix_secs: u64) -> Result<u64, StorageError> {
        let seq = self.marks.range(..=unix_secs).next_back().map(|(_, s)| *s).unwrap_or(1);
        Ok(seq.max(self.retained_from_seq()))
    }

    fn prune(&mut self, before_seq: u64, max: usize) -> Result<Pruned, StorageError> {
        let first = self.retained_from_seq();
        let cut = before_seq.min(self.next_decision_seq()).min(first.saturating_add(max as u64));
        let (mut finals, mut rejected) = (0, 0);
        for seq in first..cut {
            let d = self.decisions[(seq - 1) as usize];
            let sv = self.vertices.remove(&d.id).ok_or_else(|| StorageError::Corrupt { cf: "vertices", reason: format!("decided {} to prune has no bytes", d.id) })?;
            if let Status::Final { position } = d.status {
                self.finalized.remove(&position);
                // A decided key's stale quorum lock goes with its winner (as `prune.rs`).
                for k in &sv.vertex.conflict_keys {
                    self.locks.remove(k);
                }
                finals += 1;
            } else {
                rejected += 1;
            }
            self.clients.remove(&d.id);
            self.pruned_status.insert(d.id, d.status);
        }
        self.retained_from = cut.max(first);
        Ok(Pruned { finals, rejected, retained_from_seq: self.retained_from })
    }
}
