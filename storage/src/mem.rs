//! The in-memory twin of [`RocksStore`](crate::RocksStore), with the same semantics.

use std::collections::{BTreeMap, HashMap};

use pqdag_wire::VertexId;

use crate::record::check_transition;
use crate::{Decided, Status, StorageError, Store, StoreBatch, StoredVertex};

/// An in-memory [`Store`]: tests and the simulator.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    vertices: HashMap<VertexId, StoredVertex>,
    finalized: BTreeMap<u64, VertexId>,
    meta: HashMap<String, Vec<u8>>,
    decisions: Vec<Decided>,
    clients: HashMap<VertexId, [u8; 32]>,
    log_id: u64,
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
            let known = self.vertices.contains_key(id) || batch.vertices.iter().any(|v| v.id == *id);
            if !known {
                return Err(StorageError::UnknownVertex(id.to_hex()));
            }
            check_transition(id, self.vertices.get(id).map(|s| s.status), *status)?;
        }
        for v in batch.vertices {
            self.vertices.entry(v.id).or_insert(StoredVertex { vertex: v, status: Status::Processing });
        }
        for (id, status) in batch.statuses {
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
        let start = (from_seq.max(1) - 1) as usize;
        Ok(self.decisions.iter().skip(start).take(limit).copied().collect())
    }

    fn next_decision_seq(&self) -> u64 {
        self.decisions.len() as u64 + 1
    }

    fn decision_log_id(&self) -> u64 {
        self.log_id
    }

    fn client_of(&self, id: &VertexId) -> Result<Option<[u8; 32]>, StorageError> {
        Ok(self.clients.get(id).copied())
    }
}
