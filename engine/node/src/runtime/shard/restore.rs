//! Restart: rebuilds the consensus core from this shard's store in one sequential pass.
//! Owns the restore policy (which finals come back in full, the replay order); calls only the
//! core's `restore_*` entry points and the store's read side.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pqdag_core::{Core, VertexStatus};
use pqdag_storage::{RocksStore, Status, Store};
use pqdag_wire::{Vertex, VertexId};
use tracing::info;

use super::signer::MlDsaSigner;

/// On restart, this many of the latest finals are restored in full (parents for new vertices,
/// frontier tips); older finals come back as forgotten ids.
const RESTORE_FULL_FINALS: usize = 16;

/// Restores `core` from `store` (after the remote facts) and drops the actions restoring made.
pub(super) fn restore(core: &mut Core<MlDsaSigner>, store: &RocksStore, shard: u16) -> Result<(), pqdag_storage::StorageError> {
    // One sequential pass over the store (point reads in finality order were 1.5x slower):
    // finals before the last RESTORE_FULL_FINALS come back as forgotten ids (one vertex in
    // memory at a time); the tail and every non-final vertex are kept and restored in full.
    let finals = store.finalized_range(0, usize::MAX)?;
    let compact = finals.len().saturating_sub(RESTORE_FULL_FINALS);
    let tail: HashSet<VertexId> = finals[compact..].iter().map(|(_, id)| *id).collect();
    drop(finals);
    let mut full = Vec::new();
    store.visit_all(&mut |sv| {
        if matches!(sv.status, Status::Final { .. }) && !tail.contains(&sv.vertex.id) {
            core.restore_forgotten_final(sv.vertex.id, &sv.vertex.conflict_keys);
        } else {
            full.push(sv);
        }
    })?;
    let restored = restore_order(full);
    let n = restored.len() + compact;
    core.restore(0, restored);
    while core.poll_action().is_some() {}
    let s = core.status();
    info!(shard, restored = n, finalized = s.finalized, rejected = s.rejected, processing = s.processing, "shard restored from storage");
    Ok(())
}

/// Orders stored vertices for [`Core::restore`]: finals in their finality order first (the set
/// of finals is closed under ancestors), then the rest parents-before-children.
fn restore_order(items: Vec<pqdag_storage::StoredVertex>) -> Vec<(Arc<Vertex>, VertexStatus)> {
    let mut finals: Vec<(u64, Arc<Vertex>)> = Vec::new();
    let mut rest: HashMap<VertexId, (Arc<Vertex>, VertexStatus)> = HashMap::new();
    for sv in items {
        match sv.status {
            Status::Final { position } => finals.push((position, Arc::new(sv.vertex))),
            Status::Rejected => {
                rest.insert(sv.vertex.id, (Arc::new(sv.vertex), VertexStatus::Rejected));
            }
            Status::Processing => {
                rest.insert(sv.vertex.id, (Arc::new(sv.vertex), VertexStatus::Processing));
            }
        }
    }
    finals.sort_by_key(|(p, _)| *p);
    let mut out: Vec<(Arc<Vertex>, VertexStatus)> = finals.into_iter().map(|(_, v)| (v, VertexStatus::Final)).collect();
    // Depth-first: emit a vertex after its parents that are in `rest` (iterative, no recursion).
    let mut done: HashSet<VertexId> = HashSet::new();
    let ids: Vec<VertexId> = rest.keys().copied().collect();
    for root in ids {
        let mut stack = vec![(root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if done.contains(&id) {
                continue;
            }
            let Some((v, _)) = rest.get(&id) else { continue };
            if expanded {
                done.insert(id);
                out.push(rest[&id].clone());
            } else {
                stack.push((id, true));
                for p in &v.parents {
                    if rest.contains_key(p) && !done.contains(p) {
                        stack.push((*p, false));
                    }
                }
            }
        }
    }
    out
}
