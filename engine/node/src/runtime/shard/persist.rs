//! Persist, the group-commit writer: every persist of a turn in one atomic store batch, written
//! (with its fsync) on the executor's blocking thread before any of the turn's sends leave.
//! Owns the store (it moves to the blocking thread and back: one owner at a time, no lock);
//! lends it read-only to the sync server and telemetry. Sets the stop flag when durability is
//! lost: without it the node must not vote or announce.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pqdag_core::{Action, VertexStatus};
use pqdag_storage::{RocksStore, Status, StorageError, Store, StoreBatch};
use pqdag_wire::{NodeId, VertexId};
use tracing::warn;

use super::super::metrics::{Metrics, ShardKindLabel};
use super::retention::{self, Retention, PRUNE_CHUNK_MAX};
use super::Fatal;

/// Finality positions of the vertices finalized in one batch of actions.
pub(super) type Positions = HashMap<VertexId, u64>;

/// A store write on the blocking thread: it hands the store back with the result.
type StoreWrite = Pin<Box<dyn Future<Output = (RocksStore, Result<(), StorageError>)>>>;

/// A turn's store write in flight: its finality positions and the write (`None`: nothing to
/// write), with the time it started.
pub(super) struct Writing {
    positions: Positions,
    write: Option<(StoreWrite, Instant)>,
}

/// Whether a turn's persists carry only what peers can send again (durability classes,
/// `docs/architecture.md`): vertices received from peers, still undecided. Such a batch is
/// written without an fsync (`StoreBatch::mark_deferrable`, under `sync = "by-class"`). Never
/// deferrable: an own vertex (it leaves the node after this write, and the node must not sign
/// a different one in its place after a power cut), a decision (clients and `Final` votes are
/// told of it), a quorum lock or its release (a node that forgot its lock could leave it for
/// free), a submitting client's record. Safe because RocksDB's WAL is one ordered log: the
/// next fsynced batch makes every earlier deferred write durable too, so whatever an own
/// vertex, a lock or a decision depends on is on disk before any of them leaves the node; a
/// deferred vertex lost to a power cut is fetched again like any vertex the node never got.
pub(super) fn deferrable(actions: &[Action], me: NodeId, clients: &[(VertexId, Vec<[u8; 32]>)]) -> bool {
    clients.is_empty()
        && actions.iter().all(|a| match a {
            Action::Persist { vertex, status } => *status == VertexStatus::Processing && vertex.creator != me,
            Action::Lock { .. } => false,
            _ => true,
        })
}

/// The shard's store and its group-commit writer.
pub(super) struct Persist {
    /// `None` only while a write runs on the blocking thread.
    store: Option<RocksStore>,
    /// This node: its own vertices are never deferrable.
    me: NodeId,
    metrics: Arc<Metrics>,
    fatal: Fatal,
}

impl Persist {
    /// The writer of `store` for node `me`; `fatal` stops the node when a write fails.
    pub(super) fn new(store: RocksStore, me: NodeId, metrics: Arc<Metrics>, fatal: Fatal) -> Self {
        Self { store: Some(store), me, metrics, fatal }
    }

    /// The store, for reads (`None` only while a write runs).
    pub(super) fn store(&self) -> Option<&RocksStore> {
        self.store.as_ref()
    }

    /// Starts making every `Action::Persist` of `actions` durable in one batch: the write (and
    /// its fsync) is handed to the executor's blocking thread now, and [`Persist::finish`] waits
    /// for it. Between the two the shard decodes and verifies its next turn (the store is lent
    /// out meanwhile: `store()` is `None`). `None` when there is no store (an earlier write
    /// failed; the stop flag is set).
    /// `clients`: the submitting client of vertices created in this batch.
    pub(super) async fn begin(&mut self, actions: &[Action], clients: Vec<(VertexId, Vec<[u8; 32]>)>) -> Option<Writing> {
        let positions: Positions = actions
            .iter()
            .filter_map(|a| match a {
                Action::Finalized { id, position, .. } => Some((*id, *position)),
                _ => None,
            })
            .collect();
        let mut batch = StoreBatch::new();
        if deferrable(actions, self.me, &clients) {
            batch.mark_deferrable();
        }
        for a in actions {
            if let Action::Lock { key, member, round, gate } = a {
                batch.set_lock(*key, member.map(|member| pqdag_storage::StoredLock { member, round: *round, gate: *gate }));
            }
            if let Action::Persist { vertex, status } = a {
                batch.put_vertex(vertex.clone());
                match status {
                    VertexStatus::Processing => {}
                    VertexStatus::Final => match positions.get(&vertex.id) {
                        Some(p) => {
                            batch.set_status(vertex.id, Status::Final { position: *p });
                            // A final vertex won every conflict set it is in: the store answers
                            // for the set once the core has archived it (`archive.rs`).
                            for k in &vertex.conflict_keys {
                                batch.set_winner(*k, vertex.id);
                            }
                        }
                        None => warn!(id = %vertex.id, "final persist without a position in the same turn"),
                    },
                    VertexStatus::Rejected => batch.set_status(vertex.id, Status::Rejected),
                }
            }
        }
        for (id, client) in clients {
            batch.set_clients(id, client);
        }
        // The wall clock, for the store's per-second retention marks.
        batch.set_time(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
        if batch.is_empty() {
            return Some(Writing { positions, write: None });
        }
        let t = Instant::now();
        if !batch.is_deferrable() {
            self.metrics.store_fsync_batches.inc();
        }
        // The write (and its fsync) runs on the executor's blocking thread, so the shard's QUIC
        // I/O and its next turn's decoding and verifying go on meanwhile; this turn's sends wait
        // for it (persist first, `finish`).
        let Some(mut store) = self.store.take() else {
            self.fatal.fail("the store is gone (an earlier write failed)".into());
            return None;
        };
        let mut write: StoreWrite = Box::pin(glommio::executor().spawn_blocking(move || {
            let r = store.write(batch);
            (store, r)
        }));
        // glommio hands the closure to its blocking thread only when the future is first polled.
        if let Some(done) = futures_lite::future::poll_once(write.as_mut()).await {
            write = Box::pin(std::future::ready(done));
        }
        Some(Writing { positions, write: Some((write, t)) })
    }

    /// Waits for the write [`Persist::begin`] started and returns the finality positions of its
    /// batch; `None` when the write failed (the stop flag is then set and nothing of the turn
    /// may be sent).
    pub(super) async fn finish(&mut self, writing: Writing) -> Option<Positions> {
        let Writing { positions, write } = writing;
        let Some((write, t)) = write else { return Some(positions) };
        let (store, result) = write.await;
        debug_assert!(self.store.is_none(), "one write at a time: the store was lent out");
        self.store = Some(store);
        if let Err(e) = result {
            // Without durability the node must not vote or announce: stop the node.
            self.fatal.fail(format!("store write failed: {e}"));
            return None;
        }
        self.metrics.store_batches.inc();
        self.metrics.store_write.observe(t.elapsed().as_secs_f64());
        Some(positions)
    }

    /// One retention step (see [`retention`]), never waiting: takes the outcome of the
    /// background prune that finished (metrics; a failed prune stops the node like a failed
    /// write: the store is in doubt), and, when one is due and none runs, plans the next chunk
    /// and starts it on its own thread (`RocksStore::prune_in_background`).
    pub(super) fn prune_step(&mut self, retention: &mut Retention, shard: u16) {
        let Some(store) = self.store.as_ref() else { return };
        if let Some(outcome) = store.take_background_prune() {
            match outcome {
                Ok((done, took)) => {
                    let label = |kind: &str| ShardKindLabel { shard: shard.to_string(), kind: kind.into() };
                    self.metrics.store_pruned.get_or_create(&label("final")).inc_by(done.finals);
                    self.metrics.store_pruned.get_or_create(&label("rejected")).inc_by(done.rejected);
                    self.metrics.store_prune.observe(took.as_secs_f64());
                    tracing::debug!(shard, finals = done.finals, rejected = done.rejected, retained_from_seq = done.retained_from_seq, ms = took.as_millis() as u64, "pruned");
                    retention.finished(&done);
                }
                Err(e) => {
                    self.fatal.fail(format!("store prune failed: {e}"));
                    return;
                }
            }
        }
        if store.prune_running() || !retention.due() {
            return;
        }
        let (policy, bytes_ok) = retention.inputs();
        match retention::plan(store, policy, bytes_ok) {
            Ok(Some(plan)) if store.prune_in_background(plan.before_seq, PRUNE_CHUNK_MAX) => retention.started(plan),
            Ok(_) => retention.idle(),
            Err(e) => {
                self.fatal.fail(format!("store prune planning failed: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pqdag_wire::{ConflictKey, Vertex};

    fn vertex(creator: u8, n: u8) -> Arc<Vertex> {
        Arc::new(Vertex::new_unsigned(vec![VertexId([0; 32])], vec![n; 8], vec![ConflictKey([n; 32])], u64::from(n), NodeId([creator; 32])))
    }

    fn persist(v: &Arc<Vertex>, status: VertexStatus) -> Action {
        Action::Persist { vertex: v.clone(), status }
    }

    /// Only a turn of received, undecided vertices skips the fsync; an own vertex, a decision,
    /// a lock or a client record anywhere in the turn makes the whole batch fsynced.
    #[test]
    fn only_received_undecided_vertices_are_deferrable() {
        let me = NodeId([1; 32]);
        let (own, theirs, other) = (vertex(1, 1), vertex(2, 2), vertex(3, 3));
        let received = persist(&theirs, VertexStatus::Processing);
        let gossip = Action::SendVertex { to: vec![NodeId([2; 32])], vertex: theirs.clone() };
        assert!(deferrable(&[received.clone(), persist(&other, VertexStatus::Processing), gossip], me, &[]));
        assert!(deferrable(&[], me, &[]), "nothing to write");
        for must in [
            persist(&own, VertexStatus::Processing),
            persist(&theirs, VertexStatus::Final),
            persist(&theirs, VertexStatus::Rejected),
            Action::Lock { key: ConflictKey([2; 32]), member: Some(theirs.id), round: 1, gate: 1 },
            Action::Lock { key: ConflictKey([2; 32]), member: None, round: 0, gate: 0 },
        ] {
            assert!(!deferrable(&[received.clone(), must.clone()], me, &[]), "{must:?} must be fsynced");
        }
        assert!(!deferrable(&[received], me, &[(own.id, vec![[7; 32]])]), "a client record is fsynced");
    }
}
