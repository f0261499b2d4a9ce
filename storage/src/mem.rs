//! The in-memory twin of [`RocksStore`](crate::RocksStore), with the same semantics.

use std::collections::{BTreeMap, HashMap};

use pqdag_wire::VertexId;

use crate::record::check_transition;
use crate::{Status, StorageError, Store, StoreBatch, StoredVertex};

/// An in-memory [`Store`]: tests and the simulator.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    vertices: HashMap<VertexId, StoredVertex>,
    finalized: BTreeMap<u64, VertexId>,
    meta: HashMap<String, Vec<u8>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
                s.status = status;
            }
            if let Status::Final { position } = status {
                self.finalized.insert(position, id);
            }
        }
        self.meta.extend(batch.meta);
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
}
