//! Retention: pruning decided vertices in decision-log order (both stores), the compact record a
//! pruned final leaves, and the RocksDB side of [`Store::prune`](crate::Store::prune).
//!
//! What a pruned vertex keeps: its status (so it is never stored, logged or decided again), and,
//! for a final, `pruned[position] = id · conflict keys` (~72 B for one key instead of ~5.5 KB),
//! which a restart hands to the core as a forgotten final (counted, in the digest, its keys
//! decided). What goes: the vertex bytes (payload, signature, parents), the client record, the
//! decision-log entry and the finality-index entry (history sync then starts a walk at the first
//! retained position).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pqdag_wire::{ConflictKey, VertexId};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use crate::rocks::{CF_CLIENTS, CF_DECISIONS, CF_FINALIZED, CF_MARKS, CF_META, CF_PRUNED, CF_VERTICES, META_PRUNED, META_RETAINED_FROM};
use crate::{RocksStore, Status, StorageError, Store, SyncPolicy};

/// Least decisions pruned between two background compactions (see `RocksStore::maybe_compact`).
pub const COMPACT_AFTER_PRUNED_MIN: u64 = 4096;

/// What one [`Store::prune`](crate::Store::prune) call removed, and where the log now starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Finals pruned by this call.
    pub finals: u64,
    /// Rejected vertices pruned by this call.
    pub rejected: u64,
    /// The first decision sequence still held after this call.
    pub retained_from_seq: u64,
}

/// The compact record of a pruned final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedFinal {
    /// Its position in the shard's finality order.
    pub position: u64,
    /// The vertex id.
    pub id: VertexId,
    /// The conflict keys it spent (decided in its favour).
    pub conflict_keys: Vec<ConflictKey>,
}

impl PrunedFinal {
    /// `id (32) · keys (32 each)`.
    pub(crate) fn encode_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + 32 * self.conflict_keys.len());
        v.extend_from_slice(&self.id.0);
        for k in &self.conflict_keys {
            v.extend_from_slice(&k.0);
        }
        v
    }

    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Self, StorageError> {
        let corrupt = |r: &str| StorageError::Corrupt { cf: "pruned", reason: r.to_owned() };
        let pos: [u8; 8] = key.try_into().map_err(|_| corrupt("position length"))?;
        if value.len() < 32 || value.len() % 32 != 0 {
            return Err(corrupt("record length"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&value[..32]);
        let conflict_keys = value[32..]
            .chunks_exact(32)
            .map(|c| {
                let mut k = [0u8; 32];
                k.copy_from_slice(c);
                ConflictKey(k)
            })
            .collect();
        Ok(PrunedFinal { position: u64::from_be_bytes(pos), id: VertexId(id), conflict_keys })
    }
}

/// The meta value of the pruned counters: finals u64 BE · rejected u64 BE.
pub(crate) fn encode_counts(finals: u64, rejected: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&finals.to_be_bytes());
    b[8..].copy_from_slice(&rejected.to_be_bytes());
    b
}

pub(crate) fn decode_counts(b: &[u8]) -> Result<(u64, u64), StorageError> {
    if b.len() != 16 {
        return Err(StorageError::Corrupt { cf: "meta", reason: "pruned counts length".into() });
    }
    let mut f = [0u8; 8];
    let mut r = [0u8; 8];
    f.copy_from_slice(&b[..8]);
    r.copy_from_slice(&b[8..]);
    Ok((u64::from_be_bytes(f), u64::from_be_bytes(r)))
}

impl RocksStore {
    /// [`Store::prune`] on RocksDB: one write batch of point deletes (vertex bytes and client
    /// records, random keys) and range deletes (decision log and finality index, ordered keys;
    /// iterators skip a range tombstone at once). No compaction on the caller's thread: see
    /// `maybe_compact`. Vertex bytes live in blob files, which RocksDB drops once every blob in them
    /// is garbage (background compaction counts it; no blob GC needed).
    pub(crate) fn prune_rocks(&mut self, before_seq: u64, max: usize) -> Result<Pruned, StorageError> {
        let first = self.retained_from;
        let cut = before_seq.min(self.next_decision_seq()).min(first.saturating_add(max as u64));
        if cut <= first {
            return Ok(Pruned { finals: 0, rejected: 0, retained_from_seq: first });
        }
        let entries = self.decisions(first, (cut - first) as usize)?;
        let (cv, cfz, cd, cc, cp, cm, ck) =
            (self.cf(CF_VERTICES)?, self.cf(CF_FINALIZED)?, self.cf(CF_DECISIONS)?, self.cf(CF_CLIENTS)?, self.cf(CF_PRUNED)?, self.cf(CF_META)?, self.cf(CF_MARKS)?);
        let mut wb = WriteBatch::default();
        let (mut finals, mut rejected) = (0u64, 0u64);
        let mut positions: Vec<u64> = Vec::new();
        for d in &entries {
            if d.seq >= cut {
                break;
            }
            if let Status::Final { position } = d.status {
                let keys = match self.get(&d.id)? {
                    Some(sv) => sv.vertex.conflict_keys,
                    None => return Err(StorageError::Corrupt { cf: "vertices", reason: format!("final {} to prune has no bytes", d.id) }),
                };
                let rec = PrunedFinal { position, id: d.id, conflict_keys: keys };
                wb.put_cf(cp, position.to_be_bytes(), rec.encode_value());
                positions.push(position);
                finals += 1;
            } else {
                rejected += 1;
            }
            wb.delete_cf(cv, d.id.0);
            wb.delete_cf(cc, d.id.0);
        }
        wb.delete_range_cf(cd, first.to_be_bytes(), cut.to_be_bytes());
        // The finality index: one range tombstone when the pruned positions are a dense run
        // (finals are logged in position order, so they are), which iterators skip at once
        // (history sync and restore scan from the start); else point deletes.
        let (lo, hi) = (positions.iter().min().copied(), positions.iter().max().copied());
        match (lo, hi) {
            (Some(lo), Some(hi)) if hi - lo + 1 == positions.len() as u64 => wb.delete_range_cf(cfz, lo.to_be_bytes(), (hi + 1).to_be_bytes()),
            _ => positions.iter().for_each(|p| wb.delete_cf(cfz, p.to_be_bytes())),
        }
        // Marks naming only pruned decisions are useless now (keep the latest such mark).
        let mut stale: Vec<Box<[u8]>> = Vec::new();
        for item in self.db.iterator_cf(ck, IteratorMode::Start) {
            let (k, v) = item?;
            let seq: [u8; 8] = v.as_ref().try_into().map_err(|_| StorageError::Corrupt { cf: "marks", reason: "seq length".into() })?;
            if u64::from_be_bytes(seq) > cut {
                break;
            }
            stale.push(k);
        }
        stale.pop();
        for k in &stale {
            wb.delete_cf(ck, k);
        }
        let (pf, pr) = self.pruned_counts()?;
        wb.put_cf(cm, META_PRUNED.as_bytes(), encode_counts(pf + finals, pr + rejected));
        wb.put_cf(cm, META_RETAINED_FROM.as_bytes(), cut.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync == SyncPolicy::EveryBatch);
        self.db.write_opt(wb, &wo)?;
        self.retained_from = cut;
        self.pruned_since_compaction += finals + rejected;
        self.maybe_compact();
        Ok(Pruned { finals, rejected, retained_from_seq: cut })
    }

    /// Starts a compaction of the column families pruned by point deletes (vertex keys are
    /// random, so their tombstones are spread over every file) on its own thread, once the
    /// decisions pruned since the last one reach those retained (at least
    /// [`COMPACT_AFTER_PRUNED_MIN`]): the compaction rewrites ~100 B of keys and blob pointers
    /// per retained vertex, so this costs ~100 B of I/O per pruned vertex (a quarter, tried
    /// first, cost a fifth of the throughput at 1200/s on the 2-core VM), and it is what lets
    /// RocksDB drop a blob file (vertex bytes) whose every blob is deleted, also on an idle node
    /// where no write would trigger a compaction. Never two at once; never on the shard's
    /// threads (a manual compaction blocks its caller for its whole length).
    fn maybe_compact(&mut self) {
        let retained = self.next_decision_seq().saturating_sub(self.retained_from);
        if self.pruned_since_compaction < COMPACT_AFTER_PRUNED_MIN.max(retained) {
            return;
        }
        if self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.pruned_since_compaction = 0;
        let (db, flag) = (Arc::clone(&self.db), Arc::clone(&self.compacting));
        let spawned = std::thread::Builder::new().name("pqdag-compact".into()).spawn(move || {
            // Flush every column family first: the WAL files holding the pruned vertices' bytes
            // go only once no memtable needs them.
            for name in crate::rocks::COLUMN_FAMILIES {
                if let Some(cf) = db.cf_handle(name) {
                    let _ = db.flush_cf(cf);
                }
            }
            for name in [CF_VERTICES, CF_CLIENTS, CF_FINALIZED, CF_DECISIONS, CF_MARKS, CF_PRUNED] {
                if let Some(cf) = db.cf_handle(name) {
                    db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
                }
            }
            flag.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.compacting.store(false, Ordering::Release);
        }
    }

    /// Whether a background compaction started by a prune is still running.
    pub fn compaction_running(&self) -> bool {
        self.compacting.load(Ordering::Acquire)
    }

    /// (finals, rejected) pruned so far.
    pub fn pruned_counts(&self) -> Result<(u64, u64), StorageError> {
        match self.get_meta(META_PRUNED)? {
            Some(b) => decode_counts(&b),
            None => Ok((0, 0)),
        }
    }
}
