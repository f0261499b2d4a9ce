//! The RocksDB store: one database per shard, ten column families.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `vertices` | vertex id (32) | the vertex as a wire frame (validated again on read) |
//! | `status` | vertex id (32) | tag u8 · position u64 BE |
//! | `finalized` | position u64 BE | vertex id (32): the shard's finality order |
//! | `meta` | utf-8 key | bytes |
//! | `decisions` | decision seq u64 BE | vertex id (32) · status (9): the shard's decision log |
//! | `clients` | vertex id (32) | each transaction's submitting client key id (32 each, in vertex order; zero: none) |
//! | `pruned` | position u64 BE | id (32) · conflict keys (32 each): a pruned final, written only by builds before 2026-12-05 ([`crate::PrunedFinal`]) |
//! | `marks` | unix second u64 BE | the first decision seq logged in that second (retention windows) |
//! | `winners` | conflict key (32) | the final vertex id (32) that won the key's conflict set |
//! | `locks` | conflict key (32) | the member id (32) the core is quorum-locked on (undecided sets), then the lock's round and gate (u64 BE each; absent from records written before lock rounds) |

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use pqdag_wire::{ConflictKey, VertexId};

use crate::record::{check_transition, decode_lock, decode_vertex, encode_lock, encode_vertex};
use crate::{Decided, Pruned, Status, StorageError, Store, StoreBatch, StoredLock, StoredVertex};

pub(crate) const CF_VERTICES: &str = "vertices";
pub(crate) const CF_STATUS: &str = "status";
pub(crate) const CF_FINALIZED: &str = "finalized";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_DECISIONS: &str = "decisions";
pub(crate) const CF_CLIENTS: &str = "clients";
pub(crate) const CF_PRUNED: &str = "pruned";
pub(crate) const CF_MARKS: &str = "marks";
pub(crate) const CF_WINNERS: &str = "winners";
pub(crate) const CF_LOCKS: &str = "locks";
/// Every column family, in the order a raw `DB::open_cf` must list them.
pub const COLUMN_FAMILIES: [&str; 10] = [CF_VERTICES, CF_STATUS, CF_FINALIZED, CF_META, CF_DECISIONS, CF_CLIENTS, CF_PRUNED, CF_MARKS, CF_WINNERS, CF_LOCKS];
const CFS: [&str; 10] = COLUMN_FAMILIES;
/// Meta key of the decision-log identity.
const META_LOG_ID: &str = "decision_log_id";
/// Meta key of the first retained decision seq (u64 BE; absent: 1).
pub(crate) const META_RETAINED_FROM: &str = "retained_from_seq";
/// Meta key set once every final's conflict keys have their winner (`backfill_winners`).
const META_WINNERS: &str = "winners_v1";
/// Meta key of the pruned counters (finals, rejected).
pub(crate) const META_PRUNED: &str = "pruned_counts";
/// Meta key of the digest of the pruned finals (see [`RocksStore::pruned_summary`]).
pub(crate) const META_PRUNED_DIGEST: &str = "pruned_finals_digest";

/// When writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// fsync the WAL on every batch except those marked deferrable
    /// ([`StoreBatch::mark_deferrable`]: only what peers can send again), whose writes become
    /// durable with the next fsynced batch: RocksDB syncs the whole WAL up to a synced write.
    /// Everything a node must not forget across a power cut (its own vertices, decisions,
    /// quorum locks) is fsynced before the write returns.
    #[default]
    ByClass,
    /// fsync the WAL on every batch: a batch acknowledged is a batch that survives power loss.
    EveryBatch,
    /// WAL written but not synced per batch: survives a process crash (`kill -9`), not power
    /// loss. For benchmarks and disposable test clusters.
    WalNoSync,
}

/// RocksDB-backed [`Store`] for one shard.
pub struct RocksStore {
    pub(crate) db: std::sync::Arc<DB>,
    pub(crate) sync: SyncPolicy,
    path: PathBuf,
    cache: rocksdb::Cache,
    /// The status and winners column families' own cache (their filter and index partitions
    /// and data blocks), so data blocks of the big column families never evict them.
    lookup_cache: rocksdb::Cache,
    /// Sequence number of the next decision-log entry (read back from the log at open).
    next_decision: u64,
    log_id: u64,
    /// The second of the latest retention mark (0: none).
    last_mark_secs: u64,
    /// The retained decision seq and the state shared with background prunes.
    pub(crate) prune: crate::prune::PruneShared,
    /// Statuses this store wrote lately ([`RecentStatuses`]).
    recent: RecentStatuses,
}

/// The statuses of the vertices this store wrote most recently, so that [`Store::write`] does
/// not read back what it has just written: a vertex is written as `Processing` and turns final
/// a few hundred ms later, and each of those checks was a point read (5 % of a shard's CPU at
/// 5 000 payloads/s). Exact: a status record changes only through `write`, which updates this
/// after the batch is durable, and a prune keeps status records (it drops vertex bytes, client
/// records and finality-index entries). A miss falls back to the store.
struct RecentStatuses {
    map: std::collections::HashMap<VertexId, Status>,
    order: std::collections::VecDeque<VertexId>,
}

/// Entries [`RecentStatuses`] holds: 30 s at 1 000 vertices/s (~7.5 MiB, sized at open: a map
/// of 128 Ki slots and its order queue).
const RECENT_STATUSES_MAX: usize = 32_768;

impl RecentStatuses {
    /// Sized once for good. The map churns (one insert and one remove per status written),
    /// and a hash table over half full doubles once its removals' tombstones have used up its
    /// free slots: 32 768 entries fill 64 Ki slots past half, so a store grown on demand
    /// doubled its map minutes into a run (issue 15's RSS slope, `pqdag_core::shrink_sparse`).
    /// At 9/4 of the bound it rehashes in place instead.
    fn new() -> Self {
        RecentStatuses {
            map: std::collections::HashMap::with_capacity(RECENT_STATUSES_MAX * 9 / 4),
            order: std::collections::VecDeque::with_capacity(RECENT_STATUSES_MAX + 1),
        }
    }
    fn get(&self, id: &VertexId) -> Option<Status> {
        self.map.get(id).copied()
    }
    fn put(&mut self, id: VertexId, status: Status) {
        if self.map.insert(id, status).is_none() {
            self.order.push_back(id);
            if self.order.len() > RECENT_STATUSES_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
        debug_assert_eq!(self.map.len(), self.order.len(), "one order entry per cached status");
    }
}

/// What a store holds in memory, bytes (for the `pqdag_store_memory_bytes` metric: RSS that grows
/// while these stay flat is the core's or the allocator's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// Active and immutable memtables of every column family.
    pub memtables: u64,
    /// Table readers outside the block cache (index and filter blocks not cached).
    pub table_readers: u64,
    /// The shared block cache.
    pub block_cache: u64,
    /// The status and winners lookups' cache (filter and index partitions, data blocks).
    pub lookup_cache: u64,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore").field("path", &self.path).field("sync", &self.sync).finish()
    }
}

fn corrupt(cf: &'static str, reason: &str) -> StorageError {
    StorageError::Corrupt { cf, reason: reason.to_owned() }
}

fn to_id(cf: &'static str, b: &[u8]) -> Result<VertexId, StorageError> {
    let arr: [u8; 32] = b.try_into().map_err(|_| corrupt(cf, "id length"))?;
    Ok(VertexId(arr))
}

/// All memtables of one store (one shard) together, bytes: past it RocksDB flushes the
/// largest.
pub(crate) const MEMTABLE_BUDGET_BYTES: usize = 64 << 20;
/// Most bytes of WAL files before the oldest is freed by flushing the CFs it holds data of.
pub(crate) const WAL_BYTES_MAX: u64 = 256 << 20;
/// Block cache shared by a store's column families (data, index and filter blocks), bytes.
pub(crate) const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// Cache of the status and winners column families (the point lookups of every new vertex and
/// key): their partitioned filters and indexes and their data blocks, bytes. Bounds what the
/// lookups of a long history hold in memory; 16 MiB holds the filters of ~13 M ids or keys.
pub(crate) const LOOKUP_CACHE_BYTES: usize = 16 << 20;
/// Size of one filter or index partition of the status and winners column families, bytes: a
/// lookup whose partition was evicted reads this much (from the page cache, usually).
pub(crate) const LOOKUP_PARTITION_BYTES: usize = 4 << 10;

/// Per column family tuning. Every write first looks up the vertex's status (a miss for a new
/// vertex), so the point-lookup CFs carry bloom filters: without them each miss reads an index
/// and data block from every L0 file, a cost that grows with the database. Vertex bytes (~5 KB,
/// written once, never updated) live in blob files so compaction moves 40-byte pointers
/// instead of payloads (and, with no blob GC, never rewrites them).
fn cf_options(name: &str, cache: &rocksdb::Cache, lookup_cache: &rocksdb::Cache) -> Options {
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut o = Options::default();
    o.set_block_based_table_factory(&table);
    o.set_memtable_whole_key_filtering(true);
    o.set_memtable_prefix_bloom_ratio(0.05);
    match name {
        CF_VERTICES => {
            o.set_write_buffer_size(32 << 20);
            o.set_max_write_buffer_number(3);
            o.set_enable_blob_files(true);
            o.set_min_blob_size(1024);
            o.set_blob_file_size(128 << 20);
            // No blob GC: vertex bytes are written once and never updated or deleted, so GC
            // reclaims nothing, yet it rewrote the oldest quarter of the blob files in every
            // compaction (0.5-0.75 GB per compaction after 4 minutes at 1200/s), saturating
            // the disk until fsyncs stalled the shard (docs/benchmark.md, "Memory over minutes").
            o.set_enable_blob_gc(false);
            o.set_level_compaction_dynamic_level_bytes(true);
        }
        CF_STATUS | CF_WINNERS => {
            // Point lookups of ids and keys that are mostly absent (a new vertex, a new key:
            // the core's archive and the write path ask for every one), over the whole history
            // (the decisions are kept for ever): their bloom filters grow ~10 bits per id or
            // key. Held whole in the table readers they grew without bound (+0.15 MiB/min at
            // 1 200/s, 6 GB a month); cached whole in the shared cache they were evicted by
            // data blocks and each miss re-read a filter block of a whole file (a 20-minute
            // run spent a third of a shard's CPU there). So the filters and indexes are
            // partitioned (4 KiB pieces under a small top level that stays pinned) and live in
            // a cache of their own: memory is bounded by LOOKUP_CACHE_BYTES whatever the
            // history, and a lookup whose partition was evicted reads 4 KiB, not a file's
            // filter.
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_block_cache(lookup_cache);
            table.set_bloom_filter(10.0, false);
            table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
            table.set_partition_filters(true);
            table.set_metadata_block_size(LOOKUP_PARTITION_BYTES);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_top_level_index_and_filter(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            table.set_format_version(5);
            o.set_block_based_table_factory(&table);
            o.set_write_buffer_size(16 << 20);
            o.set_max_write_buffer_number(3);
            o.set_level_compaction_dynamic_level_bytes(true);
            // Bounded compaction jobs while these grow with the history. Their keys are random
            // (ids, conflict keys), so every L0 file spans the whole key space and an L0
            // compaction merges the whole base level. With the defaults (base 256 MiB, 64 MiB
            // files) the base level is the last one until the family passes 256 MiB, so every
            // L0 compaction rewrote the whole family: 21 -> 99 MiB jobs over 20 minutes at 1 200
            // payloads/s (the `winners` family, ~64 B per key), each a dip of finality. A 32 MiB
            // base and 4 MiB files bound an L0 job by the base level and a deeper job by one
            // file's key range in the next level, whatever the history.
            o.set_max_bytes_for_level_base(32 << 20);
            o.set_target_file_size_base(4 << 20);
        }
        CF_FINALIZED | CF_DECISIONS | CF_CLIENTS | CF_PRUNED => {
            o.set_write_buffer_size(16 << 20);
            o.set_max_write_buffer_number(3);
            o.set_level_compaction_dynamic_level_bytes(true);
        }
        _ => {}
    }
    o
}

impl RocksStore {
    /// Opens (creating if missing) the store at `path`.
    pub fn open(path: &Path, sync: SyncPolicy) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Bounded memory: one block cache for every column family, and one budget for all
        // memtables (each CF's own write buffer fills slowly: without the shared budget the
        // small-record CFs held up to 48 MB each for minutes, and a node's RSS kept climbing
        // past 400 MB in a 3-minute run at 1200 vertices/s).
        opts.set_write_buffer_size(16 << 20);
        opts.set_max_write_buffer_number(3);
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        // Bound the WAL: past it RocksDB flushes the column families holding the oldest WAL
        // file. Unset, the bound is 4x every CF's write buffers (over 2 GB here), and a WAL
        // file holds vertex bytes (~5 KB each) until every CF written with them has flushed.
        opts.set_max_total_wal_size(WAL_BYTES_MAX);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES)?;
        let lookup_cache = rocksdb::Cache::new_lru_cache(LOOKUP_CACHE_BYTES)?;
        let cfs = CFS.iter().map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n, &cache, &lookup_cache)));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let mut store = Self {
            db: std::sync::Arc::new(db),
            sync,
            path: path.to_path_buf(),
            cache,
            lookup_cache,
            next_decision: 1,
            log_id: 0,
            last_mark_secs: 0,
            recent: RecentStatuses::new(),
            prune: Default::default(),
        };
        let retained_from = match store.get_meta(META_RETAINED_FROM)? {
            Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| corrupt(CF_META, "retained seq length"))?),
            None => 1,
        };
        store.prune = crate::prune::PruneShared::new(retained_from);
        store.next_decision = (store.last_decision_seq()? + 1).max(retained_from);
        if let Some(item) = store.db.iterator_cf(store.cf(CF_MARKS)?, IteratorMode::End).next() {
            let (k, _) = item?;
            store.last_mark_secs = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt(CF_MARKS, "second length"))?);
        }
        store.log_id = match store.get_meta(META_LOG_ID)? {
            Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| corrupt(CF_META, "decision log id length"))?),
            None => {
                let id = crate::new_log_id();
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                store.db.put_cf_opt(store.cf(CF_META)?, META_LOG_ID.as_bytes(), id.to_be_bytes(), &wo)?;
                id
            }
        };
        Ok(store)
    }

    /// The last decision-log sequence number written (0 for an empty log).
    fn last_decision_seq(&self) -> Result<u64, StorageError> {
        match self.db.iterator_cf(self.cf(CF_DECISIONS)?, IteratorMode::End).next() {
            Some(item) => {
                let (k, _) = item?;
                let seq: [u8; 8] = k.as_ref().try_into().map_err(|_| corrupt(CF_DECISIONS, "seq length"))?;
                Ok(u64::from_be_bytes(seq))
            }
            None => Ok(0),
        }
    }

    /// Memory held by RocksDB for this store (properties summed over column families).
    pub fn memory(&self) -> StoreMemory {
        let mut m = StoreMemory { block_cache: self.cache.get_usage() as u64, lookup_cache: self.lookup_cache.get_usage() as u64, ..StoreMemory::default() };
        for name in CFS {
            let Some(cf) = self.db.cf_handle(name) else { continue };
            m.memtables += self.db.property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables").ok().flatten().unwrap_or(0);
            m.table_readers += self.db.property_int_value_cf(cf, "rocksdb.estimate-table-readers-mem").ok().flatten().unwrap_or(0);
        }
        m
    }

    /// Bytes on disk of each column family's table and blob files (RocksDB's
    /// `rocksdb.total-sst-files-size` and `rocksdb.total-blob-file-size`), by family name: which
    /// part of the store grows (with retention on, `status` and `winners` grow with the history
    /// and the rest follows the window). WAL and manifest belong to no family; data still in
    /// memtables is not on disk yet. What `pqdag_store_cf_bytes` shows.
    pub fn cf_disk_bytes(&self) -> Vec<(&'static str, u64)> {
        CFS.iter()
            .filter_map(|name| {
                let cf = self.db.cf_handle(name)?;
                let prop = |p: &str| self.db.property_int_value_cf(cf, p).ok().flatten().unwrap_or(0);
                Some((*name, prop("rocksdb.total-sst-files-size") + prop("rocksdb.total-blob-file-size")))
            })
            .collect()
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the store's files on disk (SST, blob, WAL, manifest, logs): what the
    /// `pqdag_store_disk_bytes` metric shows. Reads the folder (one `stat` per file).
    pub fn disk_bytes(&self) -> u64 {
        let Ok(rd) = std::fs::read_dir(&self.path) else { return 0 };
        rd.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db.cf_handle(name).ok_or_else(|| corrupt(name, "column family missing"))
    }

    /// The status of `id`: from what this store wrote lately, else read from the store.
    fn known_status(&self, id: &VertexId) -> Result<Option<Status>, StorageError> {
        match self.recent.get(id) {
            Some(s) => Ok(Some(s)),
            None => self.status_of(id),
        }
    }

    fn status_of(&self, id: &VertexId) -> Result<Option<Status>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_STATUS)?, id.0)? {
            Some(b) => Ok(Some(Status::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// Writes the winner of every conflict key of every stored (or pruned) final, once per store
    /// (meta `winners_v1`): stores written before the `winners` column family existed have
    /// none. Streams: at most `WINNERS_BATCH` winners are held before they are written, however
    /// long the history. Returns how many were written (0 when done before).
    pub fn backfill_winners(&self) -> Result<usize, StorageError> {
        const WINNERS_BATCH: usize = 16_384;
        if self.get_meta(META_WINNERS)?.is_some() {
            return Ok(0);
        }
        let cw = self.cf(CF_WINNERS)?;
        let (mut wb, mut n, mut err) = (WriteBatch::default(), 0usize, None);
        let mut add = |k: &ConflictKey, id: &VertexId| {
            wb.put_cf(cw, k.0, id.0);
            n += 1;
            if wb.len() >= WINNERS_BATCH && err.is_none() {
                err = self.db.write(std::mem::take(&mut wb)).err();
            }
        };
        self.visit_legacy_pruned(&mut |p| p.conflict_keys.iter().for_each(|k| add(k, &p.id)))?;
        self.visit_all(&mut |sv| {
            if matches!(sv.status, Status::Final { .. }) {
                sv.vertex.conflict_keys.iter().for_each(|k| add(k, &sv.vertex.id));
            }
        })?;
        if let Some(e) = err {
            return Err(e.into());
        }
        wb.put_cf(self.cf(CF_META)?, META_WINNERS.as_bytes(), [1u8]);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo)?;
        Ok(n)
    }

    /// A read-only handle on this store's decisions, usable beside the writer (the core's
    /// [`DecisionArchive`](../pqdag_core) in the engine: lookups of forgotten finals and decided
    /// keys; bloom-filtered point reads, a miss costs no disk read).
    pub fn reader(&self) -> StoreReader {
        StoreReader { db: self.db.clone() }
    }

    /// Writes a consistent copy of the store to `dir` (hard links where possible): online backup.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        rocksdb::checkpoint::Checkpoint::new(&*self.db)?.create_checkpoint(dir)?;
        Ok(())
    }
}

impl Store for RocksStore {
    fn write(&mut self, mut batch: StoreBatch) -> Result<(), StorageError> {
        let mut wb = WriteBatch::default();
        let (cv, cs, cfz, cm) = (self.cf(CF_VERTICES)?, self.cf(CF_STATUS)?, self.cf(CF_FINALIZED)?, self.cf(CF_META)?);
        let (cd, cc) = (self.cf(CF_DECISIONS)?, self.cf(CF_CLIENTS)?);
        let mut next_decision = self.next_decision;
        // Vertices logged in this batch (a batch may carry a status twice).
        let mut logged: Vec<VertexId> = Vec::new();
        let mut in_batch: Vec<VertexId> = Vec::with_capacity(batch.vertices.len());
        // Statuses this batch writes, cached once it is durable.
        let mut written: Vec<(VertexId, Status)> = Vec::with_capacity(batch.vertices.len() + batch.statuses.len());
        for v in &batch.vertices {
            in_batch.push(v.id);
            // A vertex's bytes never change (its id is their hash): a known vertex is not
            // written again (a final status update would otherwise rewrite ~5 KB), and its
            // decided status is never reset.
            if self.known_status(&v.id)?.is_some() {
                continue;
            }
            wb.put_cf(cv, v.id.0, encode_vertex(v)?);
            if !batch.statuses.iter().any(|(id, _)| *id == v.id) {
                wb.put_cf(cs, v.id.0, Status::Processing.encode());
                written.push((v.id, Status::Processing));
            }
        }
        for (id, status) in &batch.statuses {
            let old = self.known_status(id)?;
            if old.is_none() && !in_batch.contains(id) {
                return Err(StorageError::UnknownVertex(id.to_hex()));
            }
            check_transition(id, old, *status)?;
            if old.is_some_and(Status::is_decided) {
                // The same decision again: already written with its index entry (which a
                // prune may have removed since: never bring it back).
                continue;
            }
            wb.put_cf(cs, id.0, status.encode());
            written.push((*id, *status));
            // A decision enters the log once: when the vertex goes from undecided to decided.
            if status.is_decided() && !old.is_some_and(Status::is_decided) && !logged.contains(id) {
                logged.push(*id);
                let mut value = [0u8; 41];
                value[..32].copy_from_slice(&id.0);
                value[32..].copy_from_slice(&status.encode());
                wb.put_cf(cd, next_decision.to_be_bytes(), value);
                next_decision += 1;
            }
            if let Status::Final { position } = status {
                wb.put_cf(cfz, position.to_be_bytes(), id.0);
            }
        }
        for (k, v) in &batch.meta {
            wb.put_cf(cm, k.as_bytes(), v);
        }
        for (id, client) in &batch.clients {
            wb.put_cf(cc, id.0, client.concat());
        }
        if !batch.winners.is_empty() {
            let cw = self.cf(CF_WINNERS)?;
            // In key order: the memtable's skip list reuses its last insert position for a key
            // just after it, so sorted random keys take fewer comparisons (`benches/store.rs`:
            // ~155 -> ~135 us for 64 winners). A stable sort keeps the last write of a key last.
            batch.winners.sort_by_key(|w| w.0);
            for (k, id) in &batch.winners {
                wb.put_cf(cw, k.0, id.0);
            }
        }
        if !batch.locks.is_empty() {
            let cl = self.cf(CF_LOCKS)?;
            for (k, member) in &batch.locks {
                match member {
                    Some(l) => wb.put_cf(cl, k.0, encode_lock(l)),
                    None => wb.delete_cf(cl, k.0),
                }
            }
        }
        let mut mark = None;
        if let Some(t) = batch.time_secs.filter(|t| *t > self.last_mark_secs && next_decision > self.next_decision) {
            wb.put_cf(self.cf(CF_MARKS)?, t.to_be_bytes(), self.next_decision.to_be_bytes());
            mark = Some(t);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(match self.sync {
            SyncPolicy::EveryBatch => true,
            SyncPolicy::ByClass => !batch.deferrable,
            SyncPolicy::WalNoSync => false,
        });
        self.db.write_opt(wb, &wo)?;
        self.next_decision = next_decision;
        for (id, status) in written {
            self.recent.put(id, status);
        }
        if let Some(t) = mark {
            self.last_mark_secs = t;
        }
        Ok(())
    }

    fn get(&self, id: &VertexId) -> Result<Option<StoredVertex>, StorageError> {
        let Some(bytes) = self.db.get_pinned_cf(self.cf(CF_VERTICES)?, id.0)? else { return Ok(None) };
        let vertex = decode_vertex(&bytes)?;
        let status = self.status_of(id)?.ok_or_else(|| corrupt(CF_STATUS, "vertex without status"))?;
        Ok(Some(StoredVertex { vertex, status }))
    }

    fn visit_all(&self, f: &mut dyn FnMut(StoredVertex)) -> Result<(), StorageError> {
        for item in self.db.iterator_cf(self.cf(CF_VERTICES)?, IteratorMode::Start) {
            let (k, v) = item?;
            let id = to_id(CF_VERTICES, &k)?;
            let vertex = decode_vertex(&v)?;
            if vertex.id != id {
                return Err(corrupt(CF_VERTICES, "key does not match vertex id"));
            }
            let status = self.status_of(&id)?.ok_or_else(|| corrupt(CF_STATUS, "vertex without status"))?;
            f(StoredVertex { vertex, status });
        }
        Ok(())
    }

    fn load_all(&self) -> Result<Vec<StoredVertex>, StorageError> {
        let mut out = Vec::new();
        self.visit_all(&mut |sv| out.push(sv))?;
        Ok(out)
    }

    fn finalized_range(&self, from_position: u64, limit: usize) -> Result<Vec<(u64, VertexId)>, StorageError> {
        let start = from_position.to_be_bytes();
        let mode = IteratorMode::From(&start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_FINALIZED)?, mode).take(limit) {
            let (k, v) = item?;
            let pos: [u8; 8] = k.as_ref().try_into().map_err(|_| corrupt(CF_FINALIZED, "position length"))?;
            out.push((u64::from_be_bytes(pos), to_id(CF_FINALIZED, &v)?));
        }
        Ok(out)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(CF_META)?, key.as_bytes())?)
    }

    fn decisions(&self, from_seq: u64, limit: usize) -> Result<Vec<Decided>, StorageError> {
        let start = from_seq.max(1).to_be_bytes();
        let mode = IteratorMode::From(&start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_DECISIONS)?, mode).take(limit) {
            let (k, v) = item?;
            let seq: [u8; 8] = k.as_ref().try_into().map_err(|_| corrupt(CF_DECISIONS, "seq length"))?;
            if v.len() != 41 {
                return Err(corrupt(CF_DECISIONS, "entry length"));
            }
            let status = Status::decode(&v[32..])?;
            if !status.is_decided() {
                return Err(corrupt(CF_DECISIONS, "undecided entry"));
            }
            out.push(Decided { seq: u64::from_be_bytes(seq), id: to_id(CF_DECISIONS, &v[..32])?, status });
        }
        Ok(out)
    }

    fn next_decision_seq(&self) -> u64 {
        self.next_decision
    }

    fn decision_log_id(&self) -> u64 {
        self.log_id
    }

    fn clients_of(&self, id: &VertexId) -> Result<Option<Vec<[u8; 32]>>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_CLIENTS)?, id.0)? {
            Some(b) if !b.is_empty() && b.len() % 32 == 0 => Ok(Some(b.chunks_exact(32).map(|c| c.try_into().unwrap_or([0; 32])).collect())),
            Some(_) => Err(corrupt(CF_CLIENTS, "client length")),
            None => Ok(None),
        }
    }

    fn status(&self, id: &VertexId) -> Result<Option<Status>, StorageError> {
        self.status_of(id)
    }

    fn key_winner(&self, key: &ConflictKey) -> Result<Option<VertexId>, StorageError> {
        self.reader().key_winner(key)
    }

    fn locks(&self) -> Result<Vec<(ConflictKey, StoredLock)>, StorageError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LOCKS)?, IteratorMode::Start) {
            let (k, v) = item?;
            let key: [u8; 32] = k.as_ref().try_into().map_err(|_| corrupt(CF_LOCKS, "key length"))?;
            out.push((ConflictKey(key), decode_lock(&v)?));
        }
        Ok(out)
    }

    fn retained_from_seq(&self) -> u64 {
        self.prune.retained_from.load(std::sync::atomic::Ordering::Acquire)
    }

    fn decided_before(&self, unix_secs: u64) -> Result<u64, StorageError> {
        let start = unix_secs.to_be_bytes();
        let mode = IteratorMode::From(&start, rocksdb::Direction::Reverse);
        let seq = match self.db.iterator_cf(self.cf(CF_MARKS)?, mode).next() {
            Some(item) => {
                let (_, v) = item?;
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt(CF_MARKS, "seq length"))?)
            }
            None => self.retained_from_seq(),
        };
        Ok(seq.max(self.retained_from_seq()))
    }

    fn prune(&mut self, before_seq: u64, max: usize) -> Result<Pruned, StorageError> {
        self.prune_rocks(before_seq, max)
    }
}

/// Read-only point lookups of decisions, shared with the store's writer (RocksDB reads are
/// thread-safe and see every write applied before them).
#[derive(Clone)]
pub struct StoreReader {
    db: std::sync::Arc<DB>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreReader")
    }
}

impl StoreReader {
    /// A vertex's status, also for a pruned vertex.
    pub fn status(&self, id: &VertexId) -> Result<Option<Status>, StorageError> {
        let cf = self.db.cf_handle(CF_STATUS).ok_or_else(|| corrupt(CF_STATUS, "column family missing"))?;
        match self.db.get_pinned_cf(cf, id.0)? {
            Some(b) => Ok(Some(Status::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The winner of decided conflict key `key`.
    pub fn key_winner(&self, key: &ConflictKey) -> Result<Option<VertexId>, StorageError> {
        let cf = self.db.cf_handle(CF_WINNERS).ok_or_else(|| corrupt(CF_WINNERS, "column family missing"))?;
        match self.db.get_pinned_cf(cf, key.0)? {
            Some(b) => Ok(Some(to_id(CF_WINNERS, &b)?)),
            None => Ok(None),
        }
    }

    /// The winners of `keys`, in order: one batched read (RocksDB's `MultiGet`, which probes
    /// the filters and blocks of all keys together) instead of a point read per key. A
    /// received batch vertex asks for every key it spends, ~50-200, nearly all misses.
    pub fn key_winners(&self, keys: &[ConflictKey]) -> Result<Vec<Option<VertexId>>, StorageError> {
        let cf = self.db.cf_handle(CF_WINNERS).ok_or_else(|| corrupt(CF_WINNERS, "column family missing"))?;
        let mut out = Vec::with_capacity(keys.len());
        for r in self.db.batched_multi_get_cf(cf, keys.iter().map(|k| k.0), false) {
            out.push(match r? {
                Some(b) => Some(to_id(CF_WINNERS, &b)?),
                None => None,
            });
        }
        // Callers index the answers by the keys' positions.
        if out.len() != keys.len() {
            return Err(corrupt(CF_WINNERS, "a batched read answered a different number of keys"));
        }
        Ok(out)
    }
}

