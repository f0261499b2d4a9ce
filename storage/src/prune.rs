//! Retention: pruning decided vertices in decision-log order (both stores), the summary of the
//! pruned finals, and the RocksDB side of [`Store::prune`](crate::Store::prune).
//!
//! What a pruned vertex keeps: its status (so it is never stored, logged or decided again), its
//! conflict keys' winners (written when it was decided, in the `winners` column family), and the
//! count and set digest of all pruned finals (`RocksStore::pruned_summary`), which a restart
//! hands to the core in O(1) (counted, in the digest; the store answers for the ids and keys).
//! What goes: the vertex bytes (payload, signature, parents), the client record, the
//! decision-log entry and the finality-index entry (history sync then starts a walk at the first
//! retained position).
//!
//! Builds before 2026-12-05 also wrote `pruned[position] = id · conflict keys` for every pruned
//! final ([`PrunedFinal`]), ~110 B a decision kept for ever that nothing needs since the summary
//! and the winners exist: a store written by such a build keeps those records, read at most once
//! (its next prune computes the summary from them; `RocksStore::visit_legacy_pruned`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pqdag_crypto::hash::SetDigest;
use pqdag_wire::{ConflictKey, VertexId};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};

use crate::rocks::{CF_CLIENTS, CF_DECISIONS, CF_FINALIZED, CF_LOCKS, CF_MARKS, CF_META, CF_PRUNED, CF_VERTICES, META_PRUNED, META_PRUNED_DIGEST, META_RETAINED_FROM};
use crate::{RocksStore, Status, StorageError, Store};

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

/// The compact record of a pruned final that builds before 2026-12-05 kept (see the module doc).
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
    /// `id (32) · keys (32 each)` (the value under the position's big-endian bytes).
    pub fn encode_value(&self) -> Vec<u8> {
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

/// A stored set digest (see [`RocksStore::pruned_summary`]).
fn decode_digest(stored: &[u8]) -> Result<[u8; 32], StorageError> {
    stored.try_into().map_err(|_| StorageError::Corrupt { cf: "meta", reason: "pruned digest length".into() })
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

/// The outcome of a background prune and how long it took (compaction included).
pub type BackgroundPrune = Result<(Pruned, Duration), StorageError>;

/// What a store shares with its background pruning and compaction threads.
#[derive(Clone, Default)]
pub(crate) struct PruneShared {
    /// The first decision seq not pruned.
    pub(crate) retained_from: Arc<AtomicU64>,
    /// Set while a background prune runs.
    busy: Arc<AtomicBool>,
    /// Set while a background compaction runs.
    compacting: Arc<AtomicBool>,
    /// Decisions pruned since the last compaction started.
    since_compaction: Arc<AtomicU64>,
    /// The outcome of the last background prune, until taken, with how long it took.
    done: Arc<Mutex<Option<BackgroundPrune>>>,
    /// The store's one prune thread, started on first use (see [`PruneWorker`]).
    worker: Arc<Mutex<Option<PruneWorker>>>,
}

/// A background prune: runs on the store's prune thread.
type PruneJob = Box<dyn FnOnce() + Send>;

/// One long-lived thread per store runs its background prunes, one job at a time; it ends when
/// the store is dropped (the sender with it). A thread per chunk, as before, ended with its
/// allocator heap abandoned while blocks it had allocated (block-cache entries it loaded) were
/// still alive: ~120 threads in 4 minutes at 1200/s with a 120 s window (mimalloc's exit stats),
/// a candidate for the slow RSS growth of a long run.
pub(crate) struct PruneWorker {
    jobs: std::sync::mpsc::Sender<PruneJob>,
}

impl PruneWorker {
    fn start() -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<PruneJob>();
        std::thread::Builder::new().name("pqdag-prune".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
        Ok(Self { jobs })
    }
}

impl PruneShared {
    pub(crate) fn new(retained_from: u64) -> Self {
        let s = Self::default();
        s.retained_from.store(retained_from, Ordering::Release);
        s
    }
}

fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, StorageError> {
    db.cf_handle(name).ok_or_else(|| StorageError::Corrupt { cf: name, reason: "column family missing".into() })
}

/// Prunes decisions `first..cut` of `db` in one write batch (see [`Store::prune`](crate::Store::prune)):
/// point deletes of vertex bytes and client records (random keys), range deletes of the
/// decision log and the finality index (ordered keys; iterators skip a range tombstone at
/// once). Returns (finals, rejected). The batch is not fsynced: a prune lost in a crash is
/// simply done again (the vertices are still there), and the next synced write syncs it anyway.
fn prune_db(db: &DB, first: u64, cut: u64) -> Result<(u64, u64), StorageError> {
    let corrupt = |cf: &'static str, r: String| StorageError::Corrupt { cf, reason: r };
    let (cv, cfz, cd, cc, cp, cm, ck) =
        (cf(db, CF_VERTICES)?, cf(db, CF_FINALIZED)?, cf(db, CF_DECISIONS)?, cf(db, CF_CLIENTS)?, cf(db, CF_PRUNED)?, cf(db, CF_META)?, cf(db, CF_MARKS)?);
    let cl = cf(db, CF_LOCKS)?;
    let mut wb = WriteBatch::default();
    let (mut finals, mut rejected) = (0u64, 0u64);
    // The core's `finalized_set_digest` of the finals pruned here.
    let mut digest = SetDigest::default();
    let mut positions: Vec<u64> = Vec::new();
    let start = first.to_be_bytes();
    for item in db.iterator_cf(cd, IteratorMode::From(&start, rocksdb::Direction::Forward)) {
        let (k, v) = item?;
        let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt("decisions", "seq length".into()))?);
        if seq >= cut {
            break;
        }
        if v.len() != 41 {
            return Err(corrupt("decisions", "entry length".into()));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&v[..32]);
        let id = VertexId(id);
        if let Status::Final { position } = Status::decode(&v[32..])? {
            let bytes = db.get_pinned_cf(cv, id.0)?.ok_or_else(|| corrupt("vertices", format!("final {id} to prune has no bytes")))?;
            // The quorum lock an uncontested key kept after its decision (the core does not
            // write that release: the key's winner makes a restart drop it) goes with it.
            for k in conflict_keys_of(&bytes)? {
                wb.delete_cf(cl, k.0);
            }
            digest.add(&id.0);
            positions.push(position);
            finals += 1;
        } else {
            rejected += 1;
        }
        wb.delete_cf(cv, id.0);
        wb.delete_cf(cc, id.0);
    }
    wb.delete_range_cf(cd, first.to_be_bytes(), cut.to_be_bytes());
    // The finality index: one range tombstone when the pruned positions are a dense run
    // (finals are logged in position order, so they are); else point deletes.
    let (lo, hi) = (positions.iter().min().copied(), positions.iter().max().copied());
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi - lo + 1 == positions.len() as u64 => wb.delete_range_cf(cfz, lo.to_be_bytes(), (hi + 1).to_be_bytes()),
        _ => positions.iter().for_each(|p| wb.delete_cf(cfz, p.to_be_bytes())),
    }
    // Marks naming only pruned decisions are useless now (keep the latest such mark).
    let mut stale: Vec<Box<[u8]>> = Vec::new();
    for item in db.iterator_cf(ck, IteratorMode::Start) {
        let (k, v) = item?;
        let seq: [u8; 8] = v.as_ref().try_into().map_err(|_| corrupt("marks", "seq length".into()))?;
        if u64::from_be_bytes(seq) > cut {
            break;
        }
        stale.push(k);
    }
    stale.pop();
    for k in &stale {
        wb.delete_cf(ck, k);
    }
    let (pf, pr) = match db.get_cf(cm, META_PRUNED.as_bytes())? {
        Some(b) => decode_counts(&b)?,
        None => (0, 0),
    };
    wb.put_cf(cm, META_PRUNED.as_bytes(), encode_counts(pf + finals, pr + rejected));
    // The digest of every pruned final, kept with the count in the same batch (a store pruned
    // before the digest existed gets it from its legacy `pruned` records once, here).
    match db.get_cf(cm, META_PRUNED_DIGEST.as_bytes())? {
        Some(b) => digest.merge(&decode_digest(&b)?),
        None if pf > 0 => {
            for item in db.iterator_cf(cp, IteratorMode::Start) {
                let (k, v) = item?;
                digest.add(&PrunedFinal::decode(&k, &v)?.id.0);
            }
        }
        None => {}
    }
    wb.put_cf(cm, META_PRUNED_DIGEST.as_bytes(), digest.as_bytes());
    wb.put_cf(cm, META_RETAINED_FROM.as_bytes(), cut.to_be_bytes());
    let mut wo = WriteOptions::default();
    wo.set_sync(false);
    db.write_opt(wb, &wo)?;
    Ok((finals, rejected))
}

/// The conflict keys of a stored vertex frame, read from the validated archive without
/// rebuilding the vertex or re-hashing its id (it was checked when stored).
fn conflict_keys_of(bytes: &[u8]) -> Result<Vec<ConflictKey>, StorageError> {
    match pqdag_wire::decode(bytes) {
        Ok(pqdag_wire::FrameRef::Vertex(a)) => Ok(a.conflict_keys.iter().map(|k| ConflictKey(k.0)).collect()),
        Ok(_) => Err(StorageError::Corrupt { cf: "vertices", reason: "not a vertex".into() }),
        Err(e) => Err(StorageError::Corrupt { cf: "vertices", reason: e.to_string() }),
    }
}

/// Flushes every column family (the WAL files holding pruned vertices' bytes go only once no
/// memtable needs them) and compacts the ones a prune deletes from (see
/// `RocksStore::maybe_compact`). Not `pruned`: a prune only appends to it (one record per
/// pruned final, at increasing positions), so compacting it reclaims nothing, and a full-range
/// compaction of a column family that grows with the whole history rewrote all of it at every
/// compaction (its cost grew with the node's age).
fn compact_db(db: &DB) {
    for name in crate::rocks::COLUMN_FAMILIES {
        if let Some(cf) = db.cf_handle(name) {
            let _ = db.flush_cf(cf);
        }
    }
    for name in [CF_VERTICES, CF_CLIENTS, CF_FINALIZED, CF_DECISIONS, CF_MARKS] {
        if let Some(cf) = db.cf_handle(name) {
            db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
    }
}

/// Whether the decisions pruned since the last compaction (`since`) call for one: as many as
/// are retained, at least [`COMPACT_AFTER_PRUNED_MIN`]. A compaction rewrites ~100 B of keys
/// and blob pointers per retained vertex, so this costs ~100 B of I/O per pruned vertex (a
/// quarter, tried first, cost a fifth of the throughput at 1200/s on the 2-core VM), and it is
/// what lets RocksDB drop a blob file (vertex bytes) whose every blob is deleted, also on an
/// idle node where no write would trigger a compaction.
fn compaction_due(since: u64, retained: u64) -> bool {
    since >= COMPACT_AFTER_PRUNED_MIN.max(retained)
}

impl RocksStore {
    /// The decisions a prune up to `before_seq` of at most `max` would cover: `first..cut`.
    fn prune_range(&self, before_seq: u64, max: usize) -> (u64, u64) {
        let first = self.retained_from_seq();
        (first, before_seq.min(self.next_decision_seq()).min(first.saturating_add(max as u64)).max(first))
    }

    /// [`Store::prune`] on RocksDB, on the caller's thread (tests, tools); the node prunes with
    /// [`RocksStore::prune_in_background`]. A no-op while a background prune runs.
    pub(crate) fn prune_rocks(&mut self, before_seq: u64, max: usize) -> Result<Pruned, StorageError> {
        let (first, cut) = self.prune_range(before_seq, max);
        if cut <= first || self.prune.busy.swap(true, Ordering::AcqRel) {
            return Ok(Pruned { finals: 0, rejected: 0, retained_from_seq: first });
        }
        let r = prune_db(&self.db, first, cut);
        if r.is_ok() {
            self.prune.retained_from.store(cut, Ordering::Release);
        }
        self.prune.busy.store(false, Ordering::Release);
        let (finals, rejected) = r?;
        self.prune.since_compaction.fetch_add(finals + rejected, Ordering::AcqRel);
        self.maybe_compact();
        Ok(Pruned { finals, rejected, retained_from_seq: cut })
    }

    /// Starts pruning decisions up to `before_seq` (at most `max`) on the store's prune thread, so
    /// the shard's loop never waits for it (the store stays usable meanwhile: a prune touches
    /// only decided records older than any write, and readers of the decision log re-check the
    /// retained sequence). Runs the due compaction after it on the same thread. Returns false
    /// when there is nothing to prune or a prune still runs; the outcome is then taken with
    /// [`RocksStore::take_background_prune`].
    pub fn prune_in_background(&self, before_seq: u64, max: usize) -> bool {
        let (first, cut) = self.prune_range(before_seq, max);
        if cut <= first || self.prune.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let (db, shared) = (Arc::clone(&self.db), self.prune.clone());
        let retained = self.next_decision_seq().saturating_sub(cut);
        let job: PruneJob = Box::new(move || {
            let t = Instant::now();
            let r = prune_db(&db, first, cut).map(|(finals, rejected)| {
                shared.retained_from.store(cut, Ordering::Release);
                let since = shared.since_compaction.fetch_add(finals + rejected, Ordering::AcqRel) + finals + rejected;
                if compaction_due(since, retained) && !shared.compacting.swap(true, Ordering::AcqRel) {
                    shared.since_compaction.store(0, Ordering::Release);
                    compact_db(&db);
                    shared.compacting.store(false, Ordering::Release);
                }
                (Pruned { finals, rejected, retained_from_seq: cut }, t.elapsed())
            });
            if let Ok(mut slot) = shared.done.lock() {
                *slot = Some(r);
            }
            shared.busy.store(false, Ordering::Release);
        });
        let sent = match self.prune.worker.lock() {
            Ok(mut w) => {
                if w.is_none() {
                    *w = PruneWorker::start().ok();
                }
                w.as_ref().is_some_and(|w| w.jobs.send(job).is_ok())
            }
            Err(_) => false,
        };
        if !sent {
            self.prune.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// The outcome of the last background prune (and how long it took, compaction included),
    /// once it has finished; never waits.
    pub fn take_background_prune(&self) -> Option<BackgroundPrune> {
        self.prune.done.try_lock().ok()?.take()
    }

    /// Whether a background prune runs.
    pub fn prune_running(&self) -> bool {
        self.prune.busy.load(Ordering::Acquire)
    }

    /// Starts a flush and compaction on a thread of its own when [`compaction_due`] (after a
    /// prune on the caller's thread). Never two at once.
    fn maybe_compact(&mut self) {
        let retained = self.next_decision_seq().saturating_sub(self.retained_from_seq());
        if !compaction_due(self.prune.since_compaction.load(Ordering::Acquire), retained) {
            return;
        }
        if self.prune.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.prune.since_compaction.store(0, Ordering::Release);
        let (db, flag) = (Arc::clone(&self.db), Arc::clone(&self.prune.compacting));
        let spawned = std::thread::Builder::new().name("pqdag-compact".into()).spawn(move || {
            compact_db(&db);
            flag.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.prune.compacting.store(false, Ordering::Release);
        }
    }

    /// Whether a background compaction started by a prune is still running.
    pub fn compaction_running(&self) -> bool {
        self.prune.compacting.load(Ordering::Acquire)
    }

    /// (finals, rejected) pruned so far.
    pub fn pruned_counts(&self) -> Result<(u64, u64), StorageError> {
        match self.get_meta(META_PRUNED)? {
            Some(b) => decode_counts(&b),
            None => Ok((0, 0)),
        }
    }

    /// The finals pruned so far as (how many, the XOR of their ids' BLAKE3 hashes), kept by
    /// every prune in the batch that prunes: what a restart needs of them with a store-backed
    /// archive (they count as final and in the digest), read in O(1) instead of visiting every
    /// `pruned` record, whose number grows with the node's whole history. `None` for a store
    /// pruned before the digest existed and not pruned since (visit the records instead).
    pub fn pruned_summary(&self) -> Result<Option<(u64, [u8; 32])>, StorageError> {
        let (finals, _) = self.pruned_counts()?;
        match self.get_meta(META_PRUNED_DIGEST)? {
            Some(b) => Ok(Some((finals, decode_digest(&b)?))),
            None if finals == 0 => Ok(Some((0, [0u8; 32]))),
            None => Ok(None),
        }
    }

    /// Calls `f` for every `pruned` record a build before 2026-12-05 wrote, in position order
    /// (none in a store pruned only by later builds): a restart of a store without a summary
    /// restores them as forgotten finals, and the one-time `winners` backfill reads their keys.
    pub fn visit_legacy_pruned(&self, f: &mut dyn FnMut(PrunedFinal)) -> Result<(), StorageError> {
        for item in self.db.iterator_cf(cf(&self.db, CF_PRUNED)?, IteratorMode::Start) {
            let (k, v) = item?;
            f(PrunedFinal::decode(&k, &v)?);
        }
        Ok(())
    }
}
