//! Retention, the policy side: when and how far this shard's store is pruned
//! (`[storage] retain_final_secs`, `retain_bytes`). Owns the pruning clock; the store does the
//! pruning on a thread of its own (`RocksStore::prune_in_background`), one bounded chunk at a
//! time, started and collected between turns by
//! [`Persist::prune_step`](super::persist::Persist::prune_step), which never waits for it.
//!
//! What may be pruned: decisions (finals and rejected, in decision-log order) older than the
//! window, or the oldest ones while the store is over its byte budget, but never the last
//! [`RETAIN_DECISIONS_MIN`] (a restart restores the latest finals in full: parents and frontier
//! tips). The core is not involved: it already holds an old final as a forgotten id (after
//! `FINAL_RECORD_US`, shorter than the least window), and the store keeps each pruned final's
//! id and conflict keys, which a restart hands back to the core as a forgotten final.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pqdag_storage::{Pruned, RocksStore, StorageError, Store};

/// The latest decisions a shard always keeps in full, whatever the policy.
pub const RETAIN_DECISIONS_MIN: u64 = 1024;
/// Most decisions pruned per chunk: one chunk is one write batch of ~2 deletes per decision
/// plus a read of each final's conflict keys (~0.1 s per 1 200 decisions on the loaded 2-core
/// VM); it runs beside the shard's loop, and bounds the batch.
pub const PRUNE_CHUNK_MAX: usize = 8192;
/// How often the policy is looked at when there was nothing to prune.
const PRUNE_IDLE: Duration = Duration::from_secs(1);
/// Least time between two byte-budget prunes: freed space only shows once RocksDB has
/// compacted, so pruning again at once would prune too much.
const BYTES_PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// The retention settings of one shard (from `[storage]` of `config.toml`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Prune decisions older than this many seconds (0: no window).
    pub retain_final_secs: u64,
    /// Prune the oldest decisions while the store's files exceed this many bytes (0: no budget).
    pub retain_bytes: u64,
}

impl RetentionPolicy {
    /// True when neither limit is set: nothing is ever pruned.
    pub fn is_off(&self) -> bool {
        self.retain_final_secs == 0 && self.retain_bytes == 0
    }
}

/// What the policy asks of the store now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// Prune decisions before this sequence number.
    pub(super) before_seq: u64,
    /// Whether the byte budget asked for it (restarts the budget's interval).
    pub(super) by_bytes: bool,
}

/// The pruning clock of one shard.
pub(super) struct Retention {
    policy: RetentionPolicy,
    next_at: Instant,
    last_bytes_prune: Option<Instant>,
    /// The plan of the prune running in the background.
    running: Option<Plan>,
}

impl Retention {
    /// The clock of `policy`; the first look is a second after start.
    pub(super) fn new(policy: RetentionPolicy) -> Self {
        Self { policy, next_at: Instant::now() + PRUNE_IDLE, last_bytes_prune: None, running: None }
    }

    /// Whether it is time to look at the policy (never when it is off).
    pub(super) fn due(&self) -> bool {
        !self.policy.is_off() && Instant::now() >= self.next_at
    }

    /// The policy and whether the byte budget may prune now, for [`plan`].
    pub(super) fn inputs(&self) -> (RetentionPolicy, bool) {
        let bytes_ok = self.last_bytes_prune.is_none_or(|t| t.elapsed() >= BYTES_PRUNE_INTERVAL);
        (self.policy, bytes_ok)
    }

    /// A prune of `plan` started in the background.
    pub(super) fn started(&mut self, plan: Plan) {
        if plan.by_bytes {
            self.last_bytes_prune = Some(Instant::now());
        }
        self.running = Some(plan);
    }

    /// The background prune finished: go on at once while its plan asks for more (a chunk is
    /// bounded), else look again in a second.
    pub(super) fn finished(&mut self, pruned: &Pruned) {
        let more = self.running.take().is_some_and(|p| p.before_seq > pruned.retained_from_seq);
        self.next_at = if more { Instant::now() } else { Instant::now() + PRUNE_IDLE };
    }

    /// Nothing to prune now: look again in a second.
    pub(super) fn idle(&mut self) {
        self.next_at = Instant::now() + PRUNE_IDLE;
    }
}

/// How far to prune `store` now (one seek in the marks; the folder's file sizes only with a
/// byte budget).
/// `None` when nothing is due.
pub(super) fn plan(store: &RocksStore, policy: RetentionPolicy, bytes_ok: bool) -> Result<Option<Plan>, StorageError> {
    let first = store.retained_from_seq();
    let keep_from = store.next_decision_seq().saturating_sub(RETAIN_DECISIONS_MIN).max(first);
    let mut before = first;
    if policy.retain_final_secs > 0 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        before = before.max(store.decided_before(now.saturating_sub(policy.retain_final_secs))?);
    }
    let mut by_bytes = false;
    if policy.retain_bytes > 0 && bytes_ok {
        let disk = store.disk_bytes();
        if disk > policy.retain_bytes {
            // Prune the share of the retained decisions the excess is of the store (the
            // compact records of pruned finals stay, so this overestimates a little).
            let retained = store.next_decision_seq().saturating_sub(first);
            let share = (u128::from(retained) * u128::from(disk - policy.retain_bytes) / u128::from(disk.max(1))) as u64;
            let cut = first + share.max(1);
            if cut > before {
                before = cut;
                by_bytes = true;
            }
        }
    }
    let before = before.min(keep_from);
    Ok((before > first).then_some(Plan { before_seq: before, by_bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_never_due() {
        let r = Retention::new(RetentionPolicy::default());
        assert!(!r.due());
        assert!(RetentionPolicy::default().is_off());
        assert!(!RetentionPolicy { retain_final_secs: 60, retain_bytes: 0 }.is_off());
    }

    #[test]
    fn the_last_decisions_are_kept_whatever_the_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = RocksStore::open(dir.path(), pqdag_storage::SyncPolicy::WalNoSync).expect("open");
        let policy = RetentionPolicy { retain_final_secs: 30, retain_bytes: 64 << 20 };
        assert_eq!(plan(&store, policy, true).expect("plan"), None, "an empty store has nothing to prune");
        // 1500 decisions, all an hour old.
        let old = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() - 3600;
        for n in 0..1500u64 {
            let mut v = pqdag_wire::Vertex::new_unsigned(vec![pqdag_wire::VertexId([0; 32])], n.to_be_bytes().to_vec(), vec![], n, pqdag_wire::NodeId([1; 32]));
            v.signature = vec![1; pqdag_wire::limits::SIGNATURE_BYTES];
            let mut b = pqdag_storage::StoreBatch::new();
            b.set_time(old + n / 100);
            b.set_status(v.id, pqdag_storage::Status::Final { position: n + 1 });
            b.put_vertex(v);
            store.write(b).expect("write");
        }
        let p = plan(&store, policy, true).expect("plan").expect("due");
        assert_eq!(p.before_seq, 1501 - RETAIN_DECISIONS_MIN, "the window would prune all, the floor keeps 1024");
        let pruned = store.prune(p.before_seq, PRUNE_CHUNK_MAX).expect("prune");
        assert_eq!(pruned.finals, 1500 - RETAIN_DECISIONS_MIN);
        assert_eq!(plan(&store, policy, true).expect("plan"), None);
    }

    #[test]
    fn a_byte_budget_prunes_the_share_over_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = RocksStore::open(dir.path(), pqdag_storage::SyncPolicy::WalNoSync).expect("open");
        // ~100 MB of 5 KB vertices, decided now (no window would prune them).
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        for chunk in 0..150u64 {
            let mut b = pqdag_storage::StoreBatch::new();
            b.set_time(now);
            for n in chunk * 100..(chunk + 1) * 100 {
                let mut v = pqdag_wire::Vertex::new_unsigned(vec![pqdag_wire::VertexId([0; 32])], n.to_be_bytes().repeat(32), vec![], n, pqdag_wire::NodeId([1; 32]));
                v.signature = vec![(n % 256) as u8; pqdag_wire::limits::SIGNATURE_BYTES];
                b.set_status(v.id, pqdag_storage::Status::Final { position: n + 1 });
                b.put_vertex(v);
            }
            store.write(b).expect("write");
        }
        let disk = store.disk_bytes();
        assert!(disk > 64 << 20, "{disk} bytes");
        let window = RetentionPolicy { retain_final_secs: 3600, retain_bytes: 0 };
        assert_eq!(plan(&store, window, true).expect("plan"), None, "all decided within the window");
        let budget = RetentionPolicy { retain_final_secs: 0, retain_bytes: 64 << 20 };
        assert_eq!(plan(&store, budget, false).expect("plan"), None, "not twice within BYTES_PRUNE_INTERVAL");
        let before = store.disk_bytes();
        let p = plan(&store, budget, true).expect("plan").expect("over budget");
        let after = store.disk_bytes();
        assert!(p.by_bytes);
        // RocksDB may flush or compact in the background between two readings of the disk
        // bytes: the plan's share must match a reading taken just before or just after it.
        let share = |d: u64| (15_000u128 * u128::from(d.saturating_sub(64 << 20)) / u128::from(d.max(1))) as u64;
        // A 0.5 % margin (75 of 15 000) for a file that came or went during the plan's own read.
        let (lo, hi) = (share(before.min(after)).saturating_sub(75), share(before.max(after)) + 75);
        assert!((1 + lo..=1 + hi).contains(&p.before_seq), "the share of the decisions the excess is of the store: {} not in {}..={}", p.before_seq, 1 + lo, 1 + hi);
    }
}
