//! Retention: stripping payloads of old finals and forgetting their records (memory bound of a
//! long-running node), and giving back the capacity a burst left in the big maps. Owns
//! [`Retention`]; edits `dag` records and shrinks decided `conflicts`.

use std::collections::VecDeque;
use std::sync::Arc;

use pqdag_wire::{Vertex, VertexId};

use crate::core::Core;
use crate::dag::Dag;
use crate::types::{Signer, VertexStatus, shard_of_key};

/// Final vertices in finality order with their finality time.
#[derive(Default)]
pub(crate) struct Retention {
    /// For stripping (see `Params::strip_final_after_us`): decision time, id, and the
    /// vertex's `heap_bytes` when queued; final and rejected vertices alike.
    pub(crate) strip_queue: VecDeque<(u64, VertexId, u32)>,
    /// Sum of the queued vertices' bytes: the whole decided vertices held (see
    /// `Params::strip_final_bytes_max`).
    pub(crate) whole_bytes: usize,
    /// Decided vertices stripped before their time because of the byte bound.
    pub(crate) stripped_early: u64,
    /// For forgetting (see `Params::forget_final_after_us`).
    pub(crate) forget_queue: VecDeque<(u64, VertexId)>,
    /// Rejected vertices in rejection order with the time: forgotten on the finals' schedule.
    pub(crate) forget_rejected_queue: VecDeque<(u64, VertexId)>,
    /// When [`Core::shrink_sparse_maps`] runs next.
    pub(crate) next_shrink_at: u64,
}

/// How often the big maps' spare capacity is looked at, us.
pub(crate) const SHRINK_EVERY_US: u64 = 10_000_000;

/// A collection whose capacity can be given back (see [`shrink_sparse`]).
pub trait Shrink {
    /// Capacity per entry, in quarters, that a steady size keeps after a shrink: 5/4 for a
    /// queue; 9/4 for a hash table (see [`shrink_sparse`]).
    const KEEP_QUARTERS: usize = 5;
    /// (length, capacity).
    fn fill(&self) -> (usize, usize);
    /// Capacity down to at least `min`.
    fn shrink(&mut self, min: usize);
    /// The slots of a hash table (a power of two), for [`shrink_sparse`]'s settling; `None`
    /// where the table does not say (`std`'s maps) or for a queue.
    fn buckets(&self) -> Option<usize> {
        None
    }
    /// Capacity up to at least `min` entries.
    fn grow(&mut self, _min: usize) {}
}

/// Slots of a `hashbrown` table from its allocation: `buckets` entries of `entry` bytes and one
/// control byte each, plus a group of trailing control bytes and alignment (less than one
/// more slot's worth), so the quotient lies in `[buckets, 2 buckets)`.
fn buckets_of(allocation: usize, entry: usize) -> usize {
    match allocation / (entry + 1) {
        0 => 0,
        q => 1 << q.ilog2(),
    }
}

/// [`Shrink`] for a `hashbrown` table of `$entry`s, whose allocation gives its slot count.
macro_rules! shrink_hashbrown {
    ($table:ty, $entry:ty, $($generics:tt)*) => {
        impl<$($generics)*> Shrink for $table {
            const KEEP_QUARTERS: usize = 9;
            fn fill(&self) -> (usize, usize) {
                (self.len(), self.capacity())
            }
            fn shrink(&mut self, min: usize) {
                self.shrink_to(min);
            }
            fn buckets(&self) -> Option<usize> {
                Some(buckets_of(self.allocation_size(), std::mem::size_of::<$entry>()))
            }
            fn grow(&mut self, min: usize) {
                self.reserve(min.saturating_sub(self.len()));
            }
        }
    };
}
shrink_hashbrown!(hashbrown::HashMap<K, V, H>, (K, V), K: Eq + std::hash::Hash, V, H: std::hash::BuildHasher);
shrink_hashbrown!(hashbrown::HashSet<K, H>, K, K: Eq + std::hash::Hash, H: std::hash::BuildHasher);

impl<K: Eq + std::hash::Hash, V, H: std::hash::BuildHasher> Shrink for std::collections::HashMap<K, V, H> {
    const KEEP_QUARTERS: usize = 9;
    fn fill(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }
    fn shrink(&mut self, min: usize) {
        self.shrink_to(min);
    }
}

impl<K: Eq + std::hash::Hash, H: std::hash::BuildHasher> Shrink for std::collections::HashSet<K, H> {
    const KEEP_QUARTERS: usize = 9;
    fn fill(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }
    fn shrink(&mut self, min: usize) {
        self.shrink_to(min);
    }
}

impl<T> Shrink for VecDeque<T> {
    fn fill(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }
    fn shrink(&mut self, min: usize) {
        self.shrink_to(min);
    }
}

/// Gives back a burst's capacity: when `c` holds over twice the capacity a steady size keeps
/// ([`Shrink::KEEP_QUARTERS`] of its length, and over 1024 slots), its capacity goes down to
/// that. A hash map doubles when it grows, so a backlog of a few seconds that pushes a steady
/// map past a doubling or two would otherwise leave it that size for good, and each deeper
/// backlog stepped the heap up again (run M in `docs/benchmark.md`: +13, +12 and +6 MiB at 180,
/// 420 and 660 s, at three finality dips).
///
/// A hash table keeps over twice its length. Its maps churn (a record is inserted on arrival
/// and removed when forgotten), and each removal leaves a tombstone; when tombstones and
/// entries have used the free slots, `hashbrown` rehashes in place only if the table is at
/// most half full, and otherwise doubles it. Shrunk to 5/4 of its length (the rule until
/// 2026-12-06), a churning table was over half full, so it doubled again within seconds,
/// and was shrunk again at the next look: one block freed and one twice its size allocated
/// every [`SHRINK_EVERY_US`] (node-0's record table was found at 64 Ki buckets for ~15 000
/// records). At 9/4 it rehashes in place for good.
///
/// The same look settles a table that will double anyway, now rather than minutes later. A
/// churning table over half full (of its slots' 7/8 `hashbrown` fills) doubles once its
/// tombstones have used up its free slots, which under steady churn takes minutes: a 20-minute
/// bench at 1200/s saw the forgotten keys double at 174 s, the record table at 317 s and the
/// forgotten ids at 361 s, each at the same second on every node, each a step of the heap that
/// stays (issue 15 measures the RSS slope from minute 5). Grown to 9/4 of its length, it is at
/// most half full and rehashes in place from then on; tables under 512 entries are left to
/// `hashbrown`.
pub fn shrink_sparse<C: Shrink>(c: &mut C) {
    let (len, cap) = c.fill();
    let keep = (len * C::KEEP_QUARTERS / 4).max(1024);
    if cap > 2 * keep {
        c.shrink(keep);
    } else if let Some(buckets) = c.buckets() {
        if len >= SETTLE_MIN && len * 16 > buckets * 7 {
            c.grow(keep);
            debug_assert!(c.buckets().is_none_or(|b| len * 16 <= b * 7), "a settled table is at most half full");
        }
    }
}

/// Smallest table [`shrink_sparse`] settles.
const SETTLE_MIN: usize = 512;

impl Retention {
    /// Queues a vertex that was just decided (final or rejected) for [`Self::strip_old_finals`].
    pub(crate) fn queue_strip(&mut self, now: u64, v: &Vertex) {
        let bytes = u32::try_from(v.heap_bytes()).unwrap_or(u32::MAX);
        self.strip_queue.push_back((now, v.id, bytes));
        self.whole_bytes += bytes as usize;
    }

    /// Drops payload and signature of vertices decided (final or rejected) for longer than
    /// `strip_final_after_us`, and of the oldest ones, however young, while the queued ones
    /// hold over `bytes_max` bytes (0 = no byte bound). The store keeps them whole and serves
    /// them to peers. Rejected vertices are queued too: under 5 % double spends in batches of
    /// ~180 payloads, 15-19 % of vertices are rejected, and they stayed whole for their 30 s
    /// record (23-33 MB of a node at 4 x 90 000/s offered, beside the finals' 48 MB). Their
    /// payloads serve nothing after the rejection: the innocent transactions were re-issued in
    /// that turn (`reissue_innocent`), and a stripped vertex is judged for equivocation by
    /// nobody (`spends_apart` sees no transaction), as a stripped final is.
    pub(crate) fn strip_old_finals(&mut self, dag: &mut Dag, after: u64, bytes_max: usize, now: u64) {
        while let Some(&(at, id, bytes)) = self.strip_queue.front() {
            let aged = after > 0 && at.saturating_add(after) <= now;
            let over = bytes_max > 0 && self.whole_bytes > bytes_max;
            if !aged && !over {
                break;
            }
            if !aged {
                self.stripped_early += 1;
            }
            self.strip_queue.pop_front();
            debug_assert!(self.whole_bytes >= bytes as usize, "the queue's bytes are summed");
            self.whole_bytes = self.whole_bytes.saturating_sub(bytes as usize);
            if let Some(r) = dag.vertices.get_mut(&id) {
                debug_assert_ne!(r.status, VertexStatus::Processing, "only decided vertices are stripped");
                if r.status != VertexStatus::Processing && !r.v.signature.is_empty() {
                    let v = &r.v;
                    r.v = Arc::new(Vertex {
                        id: v.id,
                        parents: v.parents.clone(),
                        txs: Vec::new(),
                        conflict_keys: v.conflict_keys.clone(),
                        timestamp_ms: v.timestamp_ms,
                        creator: v.creator,
                        signature: Vec::new(),
                    });
                }
            }
        }
        debug_assert!(!self.strip_queue.is_empty() || self.whole_bytes == 0, "an empty queue holds no bytes");
    }
}

impl<S: Signer> Core<S> {
    /// Every [`SHRINK_EVERY_US`]: gives back the spare capacity of the maps and queues that grow
    /// with the load (records, conflict sets, the forgotten window, the pending buffer, the
    /// cross-shard facts, the retention queues). A hash map never shrinks on remove, so each
    /// backlog spike ratcheted a node's memory up for good: a 20-minute run at 1200/s stepped
    /// the Rust heap up by 26, 11 and 15 MiB on all three nodes at the same moments (the same
    /// DAG crossing the same capacity doublings) and never came down (`docs/benchmark.md`,
    /// "Memory by part"). Capacity is not observable by the protocol: only iteration order of
    /// a rehashed map moves, deterministically.
    pub(crate) fn shrink_sparse_maps(&mut self, now: u64) {
        if now < self.retention.next_shrink_at {
            return;
        }
        self.retention.next_shrink_at = now.saturating_add(SHRINK_EVERY_US);
        // Restored pending vertices that joined (or left) by now need no restart lock any more.
        let pending = &self.pending.entries;
        self.conflicts.restored_pending.retain(|id| pending.contains_key(id));
        shrink_sparse(&mut self.conflicts.restored_pending);
        shrink_sparse(&mut self.dag.vertices);
        shrink_sparse(&mut self.dag.recent);
        shrink_sparse(&mut self.dag.recent_final);
        shrink_sparse(&mut self.conflicts.sets);
        shrink_sparse(&mut self.conflicts.cross_decided);
        shrink_sparse(&mut self.pending.entries);
        shrink_sparse(&mut self.pending.waiting);
        shrink_sparse(&mut self.cross.remote_parents);
        shrink_sparse(&mut self.cross.remote_sets);
        shrink_sparse(&mut self.cross.watchers);
        shrink_sparse(&mut self.cross.decided);
        shrink_sparse(&mut self.retention.strip_queue);
        shrink_sparse(&mut self.retention.forget_queue);
        shrink_sparse(&mut self.retention.forget_rejected_queue);
        self.dag.forgotten.shrink_sparse();
    }

    /// Forgets the records of vertices final for longer than `forget_final_after_us`: the id
    /// moves to `forgotten` (still final to every lookup), and each of its conflict sets, once
    /// decided with no member still processing, shrinks to its winner (`Forgotten::insert_key`).
    /// Recently final vertices that parent selection may still name are kept a while longer.
    pub(crate) fn forget_old_finals(&mut self, now: u64) {
        let after = self.params.forget_final_after_us;
        let mut requeue = Vec::new();
        while let Some(&(at, id)) = self.retention.forget_queue.front() {
            if after == 0 || at.saturating_add(after) > now {
                break;
            }
            self.retention.forget_queue.pop_front();
            if self.dag.recent_final.contains(&id) || self.cross.watchers.contains_key(&id) {
                requeue.push((now, id));
                continue;
            }
            let Some(r) = self.dag.vertices.get(&id) else { continue };
            debug_assert_eq!(r.status, VertexStatus::Final, "only final vertices are forgotten");
            if r.status != VertexStatus::Final {
                continue;
            }
            let Some(rec) = self.dag.vertices.remove(&id) else { continue };
            self.dag.forgotten.insert(id, now);
            for &k in &rec.v.conflict_keys {
                if shard_of_key(&k, self.shard_count) != self.shard {
                    continue;
                }
                let Some(set) = self.conflicts.sets.get(&k) else { continue };
                let Some(winner) = set.decided else { continue };
                // Only sets whose members are all local and none still processing shrink.
                let settled = set.members.iter().all(|m| m.owner == self.shard && self.dag.vertices.get(&m.id).is_none_or(|r| r.status != VertexStatus::Processing));
                if settled {
                    debug_assert_eq!(self.vertex_status(&winner), Some(VertexStatus::Final), "a decided set's winner is final");
                    self.conflicts.sets.remove(&k);
                    self.dag.forgotten.insert_key(k, winner, now);
                }
            }
        }
        self.retention.forget_queue.extend(requeue);
    }

    /// Forgets the records of vertices rejected for longer than `forget_final_after_us`, as
    /// [`Self::forget_old_finals`] does for finals: the id moves to `forgotten` (still
    /// `Rejected` to every lookup: a late child is rejected on arrival, a vote on it is No, a
    /// repeat is known), the record and its vertex (payloads included) leave memory. Before,
    /// every rejected vertex stayed for good, a leak under double spends (issue 15). A set that
    /// still names the member keeps its `rejected` flag; a vertex another shard watches stays
    /// until the watch ends.
    pub(crate) fn forget_old_rejects(&mut self, now: u64) {
        let after = self.params.forget_final_after_us;
        let mut requeue = Vec::new();
        while let Some(&(at, id)) = self.retention.forget_rejected_queue.front() {
            if after == 0 || at.saturating_add(after) > now {
                break;
            }
            self.retention.forget_rejected_queue.pop_front();
            if self.cross.watchers.contains_key(&id) {
                requeue.push((now, id));
                continue;
            }
            if self.dag.vertices.get(&id).is_none_or(|r| r.status != VertexStatus::Rejected) {
                debug_assert!(self.dag.vertices.get(&id).is_none(), "a queued reject changed its status");
                continue;
            }
            self.dag.vertices.remove(&id);
            self.dag.forgotten.insert_rejected(id, now);
        }
        self.retention.forget_rejected_queue.extend(requeue);
    }

    /// Shrinks decided sets with a member on another shard to their winner
    /// `forget_final_after_us` after the decision, once none of this shard's members is still
    /// processing (`forget_old_finals` shrinks only all-local sets, so before, every cross-shard
    /// set of an S > 1 node stayed in memory for ever). Every member's shard was told the
    /// decision when it was made (`decide`); a later member asks again and hears the winner
    /// from `forgotten` (`join_local`).
    pub(crate) fn forget_cross_sets(&mut self, now: u64) {
        let after = self.params.forget_final_after_us;
        if after == 0 {
            return;
        }
        let mut requeue = Vec::new();
        while let Some(&(at, key)) = self.conflicts.cross_decided.front() {
            if at.saturating_add(after) > now {
                break;
            }
            self.conflicts.cross_decided.pop_front();
            let Some(set) = self.conflicts.sets.get(&key) else { continue };
            let Some(winner) = set.decided else { continue };
            let busy = set.members.iter().chain(set.overflow.iter()).any(|m| m.owner == self.shard && self.dag.vertices.get(&m.id).is_some_and(|r| r.status == VertexStatus::Processing));
            if busy {
                requeue.push((now, key));
                continue;
            }
            self.conflicts.sets.remove(&key);
            self.dag.forgotten.insert_key(key, winner, now);
        }
        self.conflicts.cross_decided.extend(requeue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id_hash::{HashMap, HashSet};

    #[test]
    fn a_burst_s_capacity_goes_back_and_a_steady_size_keeps_its_own() {
        let mut m: HashMap<u64, [u8; 64]> = HashMap::default();
        for i in 0..100_000u64 {
            m.insert(i, [0; 64]);
        }
        let burst = m.capacity();
        m.retain(|k, _| *k < 1_000);
        assert_eq!(m.capacity(), burst, "a hash map keeps its capacity on remove");
        shrink_sparse(&mut m);
        assert!(m.capacity() < burst / 16, "capacity {} after the burst of {burst}", m.capacity());
        assert_eq!(m.len(), 1_000);
        assert!((0..1_000u64).all(|k| m.contains_key(&k)), "shrinking keeps every entry");
        let steady = m.capacity();
        shrink_sparse(&mut m);
        assert_eq!(m.capacity(), steady, "a map at most 2x sparse is left alone");
        let mut q: VecDeque<u64> = (0..50_000).collect();
        q.drain(..49_990);
        shrink_sparse(&mut q);
        assert!(q.capacity() < 1_100 && q.iter().copied().eq(49_990..50_000));
    }

    #[test]
    fn the_slot_count_is_read_from_the_allocation() {
        for n in [0usize, 1, 3, 7, 8, 100, 1_000, 14_336, 14_337, 100_000] {
            let m: HashMap<[u8; 32], [u8; 32]> = HashMap::with_capacity_and_hasher(n, Default::default());
            let s: HashSet<[u8; 32]> = HashSet::with_capacity_and_hasher(n, Default::default());
            for (b, cap) in [(m.buckets().unwrap_or(0), m.capacity()), (s.buckets().unwrap_or(0), s.capacity())] {
                // `hashbrown` fills 7/8 of a table's slots (all but one below 8 slots).
                let full = if b < 8 { b.saturating_sub(1) } else { b / 8 * 7 };
                assert!(b == 0 || b.is_power_of_two(), "{b} slots for {n}");
                assert_eq!(cap, full, "{n} entries: {b} slots");
            }
        }
    }

    #[test]
    fn a_churning_table_settles_and_is_never_reallocated_again() {
        // Node-0's record table (`docs/benchmark.md`, the heap profile): ~15 000 records, one
        // inserted on arrival and one forgotten per step, looked at every 10 s.
        const LEN: u64 = 15_000;
        // Spread like vertex ids (hashes): sequential keys fill a table so evenly that its
        // removals leave almost no tombstones.
        let id = |i: u64| {
            let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut m: HashMap<u64, u64> = HashMap::default();
        m.extend((0..LEN).map(|i| (id(i), i)));
        let mut next = LEN;
        // A reallocation: the table grown or rehashed (`capacity()` is entries plus free
        // slots, so each tombstone takes one off it, and a rehash puts them back), or shrunk.
        let mut churn = |m: &mut HashMap<u64, u64>, rounds: u64| {
            let mut reallocations = 0;
            for _ in 0..rounds {
                for _ in 0..LEN {
                    let cap = m.capacity();
                    m.insert(id(next), next);
                    m.remove(&id(next - LEN));
                    next += 1;
                    reallocations += usize::from(m.capacity() > cap + 1);
                }
                let cap = m.capacity();
                shrink_sparse(m);
                reallocations += usize::from(m.capacity() != cap);
            }
            reallocations
        };
        // Over half full (15 000 of 32 768 slots), it is grown once at the first look, to
        // where it rehashes in place, instead of when its tombstones would have doubled it.
        assert!(m.capacity() <= 2 * m.len(), "starts over half full: {}", m.capacity());
        let cap = m.capacity();
        shrink_sparse(&mut m);
        assert!(m.capacity() > cap, "settled at the first look");
        let settled = m.capacity();
        assert!(settled > 2 * m.len(), "left at {settled}");
        // The 5/4 rule reallocated it twice every few rounds: shrunk, then grown again.
        assert_eq!(churn(&mut m, 30), 0, "capacity moved from {settled} to {}", m.capacity());
        assert_eq!(m.len(), LEN as usize);
    }

    #[test]
    fn a_backlog_past_a_doubling_gives_its_capacity_back_once_drained() {
        // A steady churning window of 36 000 records (run M's core), a backlog that takes it
        // past a doubling, then the backlog drains.
        let mut m: HashMap<u64, u64> = HashMap::default();
        m.extend((0..36_000u64).map(|i| (i, i)));
        for i in 36_000..756_000u64 {
            m.insert(i, i);
            m.remove(&(i - 36_000));
        }
        // Over half full, it is settled at the first look and left alone at the next.
        shrink_sparse(&mut m);
        let before = m.capacity();
        assert!(before >= 2 * m.len(), "settled: {before} for {}", m.len());
        shrink_sparse(&mut m);
        assert_eq!(m.capacity(), before, "a settled map is not rehashed");
        m.extend((756_000..848_000u64).map(|i| (i, i)));
        let mut grown = m.capacity();
        assert!(grown >= 2 * before - 2, "the backlog doubled the table ({before} -> {grown})");
        shrink_sparse(&mut m);
        assert!(m.capacity() >= grown && m.capacity() >= 2 * m.len(), "a backlog's table is settled too");
        grown = m.capacity();
        m.retain(|k, _| *k >= 812_000);
        assert_eq!(m.len(), 36_000);
        shrink_sparse(&mut m);
        assert!(m.capacity() <= grown / 2, "the backlog's capacity went back: {} (was {before}, grown {grown})", m.capacity());
        assert!(m.capacity() >= 2 * m.len() + m.len() / 4, "headroom for rehashing in place is kept: {}", m.capacity());
        let after = m.capacity();
        shrink_sparse(&mut m);
        assert_eq!(m.capacity(), after, "and then it is left alone");
    }
}
