//! The simulated stores' decision logs, held compactly: what a core's `DecisionArchive` answers
//! once the core has forgotten a decision (`pqdag_core::forgotten`). A node's store keeps every
//! decision on disk; the simulator keeps them in memory for every core of every node, and the
//! core's default `MemArchive` (a hash set of 32-byte ids per core, ~40 B per entry) grows with
//! the history times the cores: at 1000 nodes x 4 shards, 10 s of 5 000 vertices/s is 12 500
//! decided vertices on each of 4 000 cores, ~2 GB. Here each id the run archives is numbered
//! once, in an index every core of the run shares, and a core keeps one bit per number for
//! "final" and one for "rejected". The answers are exactly `MemArchive`'s (same `trace_hash`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pqdag_core::{DecisionArchive, IdHashMap, VertexStatus};
use pqdag_wire::{ConflictKey, VertexId};

/// Locks the index is split over (by an id's first byte): with `--threads`, cores on different
/// threads archive at the same time, and one lock for all of them was fought over.
const INDEX_SHARDS: usize = 64;

/// Numbers for the ids the run's cores archived, shared by all of them (`DecisionArchive` must
/// be `Send`; the batches of `--threads` archive from several threads at once). Which number
/// an id gets may depend on the threads' timing; no answer does.
#[derive(Clone)]
pub(crate) struct DecisionIndex(Arc<Index>);

struct Index {
    shards: Vec<Mutex<IdHashMap<VertexId, u32>>>,
    next: AtomicU32,
}

impl Default for DecisionIndex {
    fn default() -> Self {
        DecisionIndex(Arc::new(Index { shards: (0..INDEX_SHARDS).map(|_| Mutex::default()).collect(), next: AtomicU32::new(0) }))
    }
}

impl DecisionIndex {
    fn map(&self, id: &VertexId) -> MutexGuard<'_, IdHashMap<VertexId, u32>> {
        // A panic elsewhere while holding it cannot leave the map half-written.
        self.0.shards[usize::from(id.0[0]) % INDEX_SHARDS].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number of `id`, given it now if it has none.
    fn number(&self, id: VertexId) -> usize {
        let mut map = self.map(&id);
        *map.entry(id).or_insert_with(|| {
            let n = self.0.next.fetch_add(1, Ordering::Relaxed);
            assert!(n < u32::MAX, "fewer than 2^32 decided vertices in one run");
            n
        }) as usize
    }

    /// The number of `id`, if some core archived it.
    fn find(&self, id: &VertexId) -> Option<usize> {
        self.map(id).get(id).map(|&n| n as usize)
    }

    /// Ids numbered so far (the index's own size).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.next.load(Ordering::Relaxed) as usize
    }
}

/// A bit per numbered id.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    /// Sets bit `i`; whether it was clear.
    fn set(&mut self, i: usize) -> bool {
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        let (w, b) = (&mut self.0[i / 64], 1u64 << (i % 64));
        let was_clear = *w & b == 0;
        *w |= b;
        was_clear
    }
}

/// One core's archive: its finals and rejects as bits of the shared numbering, and its decided
/// keys (one per conflict set, far fewer than vertices).
pub(crate) struct CompactArchive {
    index: DecisionIndex,
    finals: Bits,
    rejected: Bits,
    keys: IdHashMap<ConflictKey, VertexId>,
    held: usize,
}

impl CompactArchive {
    /// An empty archive numbering its ids in `index`.
    pub(crate) fn new(index: DecisionIndex) -> Self {
        CompactArchive { index, finals: Bits::default(), rejected: Bits::default(), keys: IdHashMap::default(), held: 0 }
    }
}

impl DecisionArchive for CompactArchive {
    fn status(&self, id: &VertexId) -> Option<VertexStatus> {
        let n = self.index.find(id)?;
        if self.finals.get(n) {
            Some(VertexStatus::Final)
        } else {
            self.rejected.get(n).then_some(VertexStatus::Rejected)
        }
    }

    fn key_winner(&self, key: &ConflictKey) -> Option<VertexId> {
        self.keys.get(key).copied()
    }

    fn evicted_final(&mut self, id: VertexId) {
        let n = self.index.number(id);
        self.held += usize::from(self.finals.set(n));
    }

    fn evicted_rejected(&mut self, id: VertexId) {
        let n = self.index.number(id);
        debug_assert!(!self.finals.get(n), "a final vertex archived as rejected");
        self.held += usize::from(self.rejected.set(n));
    }

    fn evicted_key(&mut self, key: ConflictKey, winner: VertexId) {
        let old = self.keys.insert(key, winner);
        debug_assert!(old.is_none_or(|w| w == winner), "a decided key changed its winner");
        self.held += usize::from(old.is_none());
    }

    fn held_in_memory(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use pqdag_core::{DecisionArchive, MemArchive, VertexStatus};
    use pqdag_wire::{ConflictKey, VertexId};

    use super::{CompactArchive, DecisionIndex};

    /// Two cores sharing one index answer exactly as a `MemArchive` each: an id one core
    /// archived is unknown to the other, and numbers given by one are reused by the other.
    #[test]
    fn answers_as_the_in_memory_archive_does() {
        let index = DecisionIndex::default();
        let (mut a, mut b) = (CompactArchive::new(index.clone()), CompactArchive::new(index.clone()));
        let (mut ma, mut mb) = (MemArchive::default(), MemArchive::default());
        let id = |i: u8| VertexId([i; 32]);
        for i in 0..200u8 {
            match i % 3 {
                0 => {
                    a.evicted_final(id(i));
                    ma.evicted_final(id(i));
                }
                1 => {
                    a.evicted_rejected(id(i));
                    ma.evicted_rejected(id(i));
                }
                _ => {}
            }
            if i % 2 == 0 {
                b.evicted_final(id(i));
                mb.evicted_final(id(i));
            }
        }
        a.evicted_key(ConflictKey([7; 32]), id(3));
        ma.evicted_key(ConflictKey([7; 32]), id(3));
        for i in 0..=255u8 {
            assert_eq!(a.status(&id(i)), ma.status(&id(i)), "core a, id {i}");
            assert_eq!(b.status(&id(i)), mb.status(&id(i)), "core b, id {i}");
        }
        assert_eq!(a.status(&id(1)), Some(VertexStatus::Rejected));
        assert_eq!(b.status(&id(1)), None, "another core's reject is not this core's");
        assert_eq!(a.key_winner(&ConflictKey([7; 32])), Some(id(3)));
        assert_eq!(b.key_winner(&ConflictKey([7; 32])), None);
        assert_eq!(a.held_in_memory(), ma.held_in_memory());
        assert_eq!(b.held_in_memory(), mb.held_in_memory());
        let union = (0..200u8).filter(|i| i % 3 != 2 || i % 2 == 0).count();
        assert_eq!(index.len(), union, "each id numbered once, whichever core archived it");
    }
}
