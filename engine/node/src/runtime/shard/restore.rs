//! Restart: rebuilds the consensus core from this shard's store in one sequential pass.
//! Owns the restore policy (which finals come back in full, the replay order); calls only the
//! core's `restore_*` entry points and the store's read side.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pqdag_core::{Core, VertexStatus};
use pqdag_storage::{RocksStore, Status, Store, StoreBatch};
use pqdag_wire::{Vertex, VertexId};
use tracing::info;

use super::signer::MlDsaSigner;

/// On restart, this many of the latest finals are restored in full (parents for new vertices,
/// frontier tips); older finals come back as forgotten ids.
const RESTORE_FULL_FINALS: usize = 16;

/// Restores `core` from `store` (after the remote facts); what restoring queued stays queued.
pub(super) fn restore(core: &mut Core<MlDsaSigner>, store: &mut RocksStore, shard: u16) -> Result<(), pqdag_storage::StorageError> {
    // One sequential pass over the store (point reads in finality order were 1.5x slower):
    // finals before the last RESTORE_FULL_FINALS come back as forgotten ids (one vertex in
    // memory at a time); the tail and every non-final vertex are kept and restored in full.
    // Finals pruned by retention first: ids and conflict keys only (the store keeps nothing
    // else of them); they count as final, in the digest, and their keys stay decided.
    // From the store's summary (count and digest, O(1)) when it has one: the core's archive is
    // the store, which answers for their ids and keys. A store pruned before the summary
    // existed is visited record by record once more (its next prune writes the summary).
    let mut pruned = 0usize;
    match store.pruned_summary()? {
        Some((count, digest)) => {
            core.restore_pruned_finals(count, &digest);
            pruned = count as usize;
        }
        None => store.visit_legacy_pruned(&mut |p| {
            core.restore_forgotten_final(p.id, &p.conflict_keys);
            pruned += 1;
        })?,
    }
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
    let dropped = drop_orphaned_rejects(core, &mut full, shard);
    let restored = restore_order(full);
    let n = restored.len() + compact + pruned;
    core.restore(0, restored);
    // The quorum locks held before the stop (the core must not vote against them).
    let locks = store.locks()?;
    let locked = locks.len();
    let keys: Vec<pqdag_wire::ConflictKey> = locks.iter().map(|(k, _)| *k).collect();
    core.restore_locks(locks.into_iter().map(|(k, l)| (k, l.member, l.round, l.gate)));
    // Locks of keys decided since (an uncontested decision does not write its release; see
    // `pqdag_core` conflicts `decide`): deleted now, so the column family holds live locks only.
    let mut stale = StoreBatch::new();
    for k in keys.into_iter().filter(|k| core.key_decided(k)) {
        stale.set_lock(k, None);
    }
    let stale_locks = stale.len();
    if stale_locks > 0 {
        store.write(stale)?;
    }
    // What restoring left queued stays for the first turn, as the simulator's restart leaves it:
    // above all the cross-shard messages (a restored vertex joining its conflict sets on other
    // shards, watching its parents there, restored locks' preferences). Drained here, they were
    // lost, and with S > 1 a restarted node never finalized a restored vertex with a key or a
    // parent on another shard, nor anything after it: `bench --nodes 3 --shards 2 --rate 200
    // --max-batch 1 --crash 2@6-9` ended with ~2 000 vertices processing on node-2 for good.
    let s = core.status();
    info!(shard, restored = n, pruned, locked, stale_locks, orphaned_rejects = dropped, finalized = s.finalized, rejected = s.rejected, processing = s.processing, "shard restored from storage");
    Ok(())
}

/// Drops retained rejected vertices whose local parent is neither retained nor a (pruned or
/// forgotten) final: a rejected parent that retention pruned. Restored, such a vertex would wait
/// in the core's pending buffer for a parent no peer may still hold; it is decided for good
/// already (the store keeps its status) and its conflict keys' winners are restored. Repeats
/// until nothing more goes (a dropped vertex may orphan its rejected children). Returns how
/// many were dropped.
fn drop_orphaned_rejects(core: &Core<MlDsaSigner>, full: &mut Vec<pqdag_storage::StoredVertex>, shard: u16) -> usize {
    let shard_count = core.shard_count();
    let mut dropped = 0;
    loop {
        let held: HashSet<VertexId> = full.iter().map(|sv| sv.vertex.id).collect();
        let before = full.len();
        full.retain(|sv| {
            sv.status != Status::Rejected
                || sv.vertex.parents.iter().all(|p| {
                    held.contains(p) || core.contains(p) || *p == core.genesis_id() || pqdag_core::shard_of_vertex(p, shard_count) != u32::from(shard)
                })
        });
        if full.len() == before {
            return dropped;
        }
        dropped += before - full.len();
    }
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
