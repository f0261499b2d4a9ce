//! Persist, the group-commit writer: every persist of a turn in one atomic store batch, written
//! (with its fsync) on the executor's blocking thread before any of the turn's sends leave.
//! Owns the store (it moves to the blocking thread and back: one owner at a time, no lock);
//! lends it read-only to the sync server and telemetry. Sets the stop flag when durability is
//! lost: without it the node must not vote or announce.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pqdag_core::{Action, VertexStatus};
use pqdag_storage::{RocksStore, Status, Store, StoreBatch};
use pqdag_wire::VertexId;
use tracing::warn;

use super::super::metrics::Metrics;

/// Finality positions of the vertices finalized in one batch of actions.
pub(super) type Positions = HashMap<VertexId, u64>;

/// The shard's store and its group-commit writer.
pub(super) struct Persist {
    /// `None` only while a write runs on the blocking thread.
    store: Option<RocksStore>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

impl Persist {
    /// The writer of `store`; `stop` is set when a write fails.
    pub(super) fn new(store: RocksStore, metrics: Arc<Metrics>, stop: Arc<AtomicBool>) -> Self {
        Self { store: Some(store), metrics, stop }
    }

    /// The store, for reads (`None` only while a write runs).
    pub(super) fn store(&self) -> Option<&RocksStore> {
        self.store.as_ref()
    }

    /// Makes every `Action::Persist` of `actions` durable in one batch and returns the finality
    /// positions of the batch; `None` when the write failed (the stop flag is then set and
    /// nothing of the turn may be sent).
    /// `clients`: the submitting client of vertices created in this batch.
    pub(super) async fn commit(&mut self, actions: &[Action], clients: Vec<(VertexId, [u8; 32])>) -> Option<Positions> {
        let positions: Positions = actions
            .iter()
            .filter_map(|a| match a {
                Action::Finalized { id, position, .. } => Some((*id, *position)),
                _ => None,
            })
            .collect();
        let mut batch = StoreBatch::new();
        for a in actions {
            if let Action::Persist { vertex, status } = a {
                batch.put_vertex((**vertex).clone());
                match status {
                    VertexStatus::Processing => {}
                    VertexStatus::Final => match positions.get(&vertex.id) {
                        Some(p) => batch.set_status(vertex.id, Status::Final { position: *p }),
                        None => warn!(id = %vertex.id, "final persist without a position in the same turn"),
                    },
                    VertexStatus::Rejected => batch.set_status(vertex.id, Status::Rejected),
                }
            }
        }
        for (id, client) in clients {
            batch.set_client(id, client);
        }
        if !batch.is_empty() {
            let t = Instant::now();
            // The write (and its fsync) runs on the executor's blocking thread, so the shard's
            // QUIC I/O keeps flowing meanwhile; this turn's sends wait for it (persist first).
            let Some(mut store) = self.store.take() else {
                self.stop.store(true, Ordering::Relaxed);
                return None;
            };
            let (store, result) = glommio::executor()
                .spawn_blocking(move || {
                    let r = store.write(batch);
                    (store, r)
                })
                .await;
            self.store = Some(store);
            if let Err(e) = result {
                // Without durability the node must not vote or announce: stop the node.
                tracing::error!(error = %e, "store write failed; stopping the node");
                self.stop.store(true, Ordering::Relaxed);
                return None;
            }
            self.metrics.store_batches.inc();
            self.metrics.store_write.observe(t.elapsed().as_secs_f64());
        }
        Some(positions)
    }
}
