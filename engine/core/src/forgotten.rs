//! Forgotten decisions: finals whose records the core dropped (`retention.rs`) and the winners
//! of conflict sets shrunk with them, held in memory for a bounded window and then answered by a
//! [`DecisionArchive`] the shell provides (its store). Owns [`Forgotten`]; every other module
//! asks it "what was decided about this id?" and "which vertex won this decided key?".
//!
//! Why: a node that runs for months cannot hold one entry per vertex it ever finalized (issue
//! 15 measured ~270 B per vertex, 18 MiB per minute at 1 200 vertices/s). The store has every
//! decision already (written before the decision left the node), so after
//! `Params::archive_after_us` the core drops its copy and a miss becomes a store lookup (a
//! bloom-filtered point read in the engine). Lookups are synchronous and read-only, like
//! raft-rs's `Storage`: the core stays deterministic as long as the archive answers from what the
//! shell persisted, which the durability contract guarantees (a decision is durable before the
//! core forgets it, ~30 s later).

use std::collections::VecDeque;

use pqdag_wire::{ConflictKey, VertexId};

use crate::id_hash::{HashMap, HashSet};
use crate::types::VertexStatus;

/// How long after it was forgotten an entry may go to the archive before
/// `Params::archive_after_us` when the window holds more than `Params::archive_entries_max`.
/// The archive's contract (below) needs the decision in the store: the engine writes it in the
/// turn that made it and steps the core again only once that write is durable, so any entry
/// forgotten in an earlier turn qualifies; 2 s is hundreds of turns. A key whose winning vertex
/// lives on another shard is no exception: that shard writes the winner with the vertex's final
/// status and sends its `ShardMsg::Decide` only once that write is durable (persist before
/// send), so the key is decided here, and forgotten, after its winner is in a store.
pub(crate) const ARCHIVE_EARLY_MIN_AGE_US: u64 = 2_000_000;

/// Where decisions the core no longer holds are looked up (the shell's store).
///
/// Contract: after [`DecisionArchive::evicted_final`] for `id`, [`DecisionArchive::status`] of
/// `id` is `Final` forever; after [`DecisionArchive::evicted_key`] for `(key, winner)`,
/// [`DecisionArchive::key_winner`] of `key` is `Some(winner)` forever. The engine's store
/// satisfies it because the decision was written (and synced) when it was made; the eviction
/// calls are then only checks.
pub trait DecisionArchive {
    /// The decision on `id` (`Final` or `Rejected`) if it was decided; `None` otherwise (also
    /// for a vertex still processing). The engine's store knows rejected ids the core no longer
    /// holds after a restart (rejects whose pruned parents left them orphaned).
    fn status(&self, id: &VertexId) -> Option<VertexStatus>;
    /// The final vertex that won the decided conflict set of `key`, if the set was decided.
    fn key_winner(&self, key: &ConflictKey) -> Option<VertexId>;
    /// [`DecisionArchive::key_winner`] of each of `keys`, in order: a store answers many keys
    /// in one batched read (`Forgotten::prefetch_keys`). `None`: it could not answer (a store
    /// error), and nothing may be concluded from it.
    fn key_winners(&self, keys: &[ConflictKey]) -> Option<Vec<Option<VertexId>>> {
        Some(keys.iter().map(|k| self.key_winner(k)).collect())
    }
    /// The core drops final `id` from memory: from now on only the archive answers for it.
    fn evicted_final(&mut self, id: VertexId);
    /// The core drops rejected `id` from memory: from now on only the archive answers for it
    /// (`status` says `Rejected`; the engine's store wrote it in the turn that rejected it).
    fn evicted_rejected(&mut self, id: VertexId);
    /// The core drops decided `key` (won by `winner`) from memory.
    fn evicted_key(&mut self, key: ConflictKey, winner: VertexId);
    /// Entries the archive itself holds in memory (0 for a store-backed archive).
    fn held_in_memory(&self) -> usize {
        0
    }
    /// Whether a key it does not hold now stays absent until the core hands the key over
    /// (`evicted_key`): what lets the core remember a miss (`AbsentKeys`). False while part of
    /// the archive is not readable yet (the engine: another shard's store not open).
    fn misses_are_stable(&self) -> bool {
        true
    }
}

/// The archive used when the shell provides none: everything stays in memory (unbounded, as a
/// node without a store must; the simulator and unit tests use it).
#[derive(Default)]
pub struct MemArchive {
    finals: HashSet<VertexId>,
    rejected: HashSet<VertexId>,
    keys: HashMap<ConflictKey, VertexId>,
}

impl DecisionArchive for MemArchive {
    fn status(&self, id: &VertexId) -> Option<VertexStatus> {
        if self.finals.contains(id) {
            Some(VertexStatus::Final)
        } else {
            self.rejected.contains(id).then_some(VertexStatus::Rejected)
        }
    }
    fn key_winner(&self, key: &ConflictKey) -> Option<VertexId> {
        self.keys.get(key).copied()
    }
    fn evicted_final(&mut self, id: VertexId) {
        self.finals.insert(id);
    }
    fn evicted_rejected(&mut self, id: VertexId) {
        debug_assert!(!self.finals.contains(&id), "a final vertex archived as rejected");
        self.rejected.insert(id);
    }
    fn evicted_key(&mut self, key: ConflictKey, winner: VertexId) {
        let old = self.keys.insert(key, winner);
        debug_assert!(old.is_none_or(|w| w == winner), "a decided key changed its winner");
    }
    fn held_in_memory(&self) -> usize {
        self.finals.len() + self.rejected.len() + self.keys.len()
    }
}

/// Forgotten finals, rejects and decided keys: a time-ordered window in memory, the archive
/// beyond it.
pub(crate) struct Forgotten {
    ids: HashSet<VertexId>,
    /// Forgotten rejected vertices (issue 15: their records were kept for ever before).
    rejected: HashSet<VertexId>,
    keys: HashMap<ConflictKey, VertexId>,
    /// Insertion order with the time of insertion (an id or a key), oldest first.
    order: VecDeque<(u64, Entry)>,
    archive: Box<dyn DecisionArchive + Send>,
    /// Entries handed to the archive before the window passed (`evict`'s count bound).
    pub(crate) archived_early: u64,
    /// Keys of this shard the archive was just found not to hold (see [`AbsentKeys`]).
    absent: std::cell::RefCell<AbsentKeys>,
    /// `(shard, shard_count)` of the owning core, once an external archive is set: only keys
    /// of this shard are remembered absent.
    owner: Option<(u32, u32)>,
}

/// Keys of this shard remembered as absent from the archive, at most [`ABSENT_KEYS_MAX`].
pub(crate) const ABSENT_KEYS_MAX: usize = 16_384;

/// Keys of this shard that the archive was found not to hold, oldest first.
///
/// Why: a client's submission asks for each of its keys three times within milliseconds (the
/// gateway's refusal of a spent key, `submit`'s own-key check, the set's `join_local` when the
/// vertex is built), and for a store-backed archive each is a RocksDB point read that misses: 8 %
/// of a node's CPU at 10 000 payloads/s of 512 B on 3 nodes, most of it bloom-filter probes
/// of every L0 file. The second and third are answered here.
///
/// Why it cannot go stale: a key of this shard is decided only by its conflict set here, and
/// from the set's creation the set answers for it, then `Forgotten::keys` (every caller asks
/// the set first, and `key_winner` asks `keys` first), until [`Forgotten::evict`] hands it to
/// the archive and removes it from here in the same step (the restore removes it too). The
/// store may hold the winner earlier (written in the deciding turn, with S > 1 by the shard of
/// the winning vertex), but no lookup reaches the archive for it then. Keys of other shards are
/// never remembered: their sets live elsewhere, and this shard learns of their decisions late.
#[derive(Default)]
struct AbsentKeys {
    keys: HashSet<ConflictKey>,
    order: VecDeque<ConflictKey>,
    /// Lookups answered here (no archive read).
    hits: u64,
}

impl AbsentKeys {
    fn remember(&mut self, key: ConflictKey) {
        if self.keys.insert(key) {
            self.order.push_back(key);
        }
        while self.order.len() > ABSENT_KEYS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        debug_assert!(self.keys.len() <= self.order.len(), "every remembered key is in the order");
    }

    fn forget(&mut self, key: &ConflictKey) {
        // The order keeps the key until it falls off: remembering it again re-inserts it.
        self.keys.remove(key);
        if self.order.len() > 2 * self.keys.len() + 1024 {
            let keys = &self.keys;
            self.order.retain(|k| keys.contains(k));
        }
    }
}

#[derive(Clone, Copy)]
enum Entry {
    Id(VertexId),
    Rejected(VertexId),
    Key(ConflictKey),
}

impl Default for Forgotten {
    fn default() -> Self {
        Forgotten {
            ids: HashSet::default(),
            rejected: HashSet::default(),
            keys: HashMap::default(),
            order: VecDeque::new(),
            archive: Box::new(MemArchive::default()),
            archived_early: 0,
            absent: std::cell::RefCell::new(AbsentKeys::default()),
            owner: None,
        }
    }
}

impl Forgotten {
    /// Gives back the window's spare capacity (see `Core::shrink_sparse_maps`).
    pub(crate) fn shrink_sparse(&mut self) {
        crate::retention::shrink_sparse(&mut self.ids);
        crate::retention::shrink_sparse(&mut self.rejected);
        crate::retention::shrink_sparse(&mut self.keys);
        crate::retention::shrink_sparse(&mut self.order);
    }

    /// Replaces the archive (before anything was forgotten: the old one's entries are not moved).
    pub(crate) fn set_archive(&mut self, archive: Box<dyn DecisionArchive + Send>, shard: u32, shard_count: u32) {
        debug_assert!(self.order.is_empty() && self.archive.held_in_memory() == 0, "the archive is set before anything is forgotten");
        self.archive = archive;
        self.owner = Some((shard, shard_count));
        *self.absent.get_mut() = AbsentKeys::default();
    }

    /// (keys remembered absent from the archive, lookups they answered).
    pub(crate) fn absent_counts(&self) -> (usize, u64) {
        let a = self.absent.borrow();
        (a.keys.len(), a.hits)
    }

    /// Whether `id` is a forgotten final (in the window or in the archive).
    pub(crate) fn contains(&self, id: &VertexId) -> bool {
        self.status(id) == Some(VertexStatus::Final)
    }

    /// The decision on forgotten `id` (window, then archive).
    pub(crate) fn status(&self, id: &VertexId) -> Option<VertexStatus> {
        if self.ids.contains(id) {
            Some(VertexStatus::Final)
        } else if self.rejected.contains(id) {
            Some(VertexStatus::Rejected)
        } else {
            self.archive.status(id)
        }
    }

    /// The winner of forgotten decided `key`.
    pub(crate) fn key_winner(&self, key: &ConflictKey) -> Option<VertexId> {
        if let Some(w) = self.keys.get(key) {
            return Some(*w);
        }
        let mine = self.remembers(key);
        if mine {
            let mut absent = self.absent.borrow_mut();
            if absent.keys.contains(key) {
                absent.hits += 1;
                return None;
            }
        }
        let w = self.archive.key_winner(key);
        if mine && w.is_none() && self.archive.misses_are_stable() {
            self.absent.borrow_mut().remember(*key);
        }
        w
    }

    /// Whether a miss of `key` may be remembered ([`AbsentKeys`]): an external archive is set
    /// and the key is this shard's.
    fn remembers(&self, key: &ConflictKey) -> bool {
        self.owner.is_some_and(|(shard, count)| crate::types::shard_of_key(key, count) == shard)
    }

    /// Asks the archive about every key of `keys` that the next [`Self::key_winner`] would ask
    /// it about, in one batched read, and remembers the absent ones (most of them: a received
    /// vertex's keys are new here), so those lookups are answered from memory. Called before a
    /// vertex joins its sets: a batch vertex's ~50-200 point reads, each probing the bloom
    /// filter of every L0 file, were ~5 % of a node's CPU at 10 000 payloads/s (one batched
    /// read costs less per key). Answers nothing itself: a key found with a winner is read
    /// again by the lookup, so the answers are those of `key_winner` alone.
    pub(crate) fn prefetch_keys<'a>(&self, keys: impl Iterator<Item = &'a ConflictKey>) {
        if !self.archive.misses_are_stable() {
            return;
        }
        let ask: Vec<ConflictKey> = {
            let absent = self.absent.borrow();
            keys.filter(|k| self.remembers(k) && !self.keys.contains_key(*k) && !absent.keys.contains(*k)).copied().collect()
        };
        if ask.len() < 2 {
            return;
        }
        let Some(winners) = self.archive.key_winners(&ask) else { return };
        debug_assert_eq!(winners.len(), ask.len(), "one answer per key");
        let mut absent = self.absent.borrow_mut();
        for (k, w) in ask.iter().zip(winners) {
            if w.is_none() {
                absent.remember(*k);
            }
        }
    }

    /// The decision on forgotten `id` if it is still in the in-memory window (no archive read):
    /// for loops that run every tick (an id they ask about was never held, so never archived).
    pub(crate) fn status_in_memory(&self, id: &VertexId) -> Option<VertexStatus> {
        if self.ids.contains(id) {
            Some(VertexStatus::Final)
        } else {
            self.rejected.contains(id).then_some(VertexStatus::Rejected)
        }
    }

    /// Forgets final `id` at time `now` (held in memory until the window passes).
    pub(crate) fn insert(&mut self, id: VertexId, now: u64) {
        if self.ids.insert(id) {
            self.order.push_back((now, Entry::Id(id)));
        }
    }

    /// Forgets rejected `id` at time `now` (held in memory until the window passes).
    pub(crate) fn insert_rejected(&mut self, id: VertexId, now: u64) {
        debug_assert!(!self.ids.contains(&id), "a final vertex forgotten as rejected");
        if self.rejected.insert(id) {
            self.order.push_back((now, Entry::Rejected(id)));
        }
    }

    /// Forgets decided `key` won by `winner` at time `now`.
    pub(crate) fn insert_key(&mut self, key: ConflictKey, winner: VertexId, now: u64) {
        let old = self.keys.insert(key, winner);
        debug_assert!(old.is_none_or(|w| w == winner), "a decided key changed its winner");
        if old.is_none() {
            self.order.push_back((now, Entry::Key(key)));
        }
    }

    /// A final restored from storage at a restart: straight to the archive (the store has it).
    pub(crate) fn restore(&mut self, id: VertexId) {
        self.archive.evicted_final(id);
    }

    /// A decided key restored from storage at a restart.
    pub(crate) fn restore_key(&mut self, key: ConflictKey, winner: VertexId) {
        self.absent.get_mut().forget(&key);
        self.archive.evicted_key(key, winner);
    }

    /// Hands entries older than `window` (microseconds; 0 = never) to the archive, and, while
    /// more than `max` are held (0 = no bound), the oldest of those forgotten at least
    /// [`ARCHIVE_EARLY_MIN_AGE_US`] ago (counted in `archived_early`).
    pub(crate) fn evict(&mut self, window: u64, max: usize, now: u64) {
        if window == 0 {
            return;
        }
        while let Some(&(at, e)) = self.order.front() {
            if at.saturating_add(window) > now {
                let over = max > 0 && self.order.len() > max && at.saturating_add(ARCHIVE_EARLY_MIN_AGE_US) <= now;
                if !over {
                    break;
                }
                self.archived_early += 1;
            }
            self.order.pop_front();
            match e {
                Entry::Id(id) => {
                    if self.ids.remove(&id) {
                        self.archive.evicted_final(id);
                    }
                }
                Entry::Rejected(id) => {
                    if self.rejected.remove(&id) {
                        self.archive.evicted_rejected(id);
                    }
                }
                Entry::Key(k) => {
                    if let Some(w) = self.keys.remove(&k) {
                        self.absent.get_mut().forget(&k);
                        self.archive.evicted_key(k, w);
                    }
                }
            }
        }
    }

    /// (forgotten ids, final and rejected; forgotten keys) held in memory, plus what the
    /// archive holds in memory.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (self.ids.len() + self.rejected.len(), self.keys.len(), self.archive.held_in_memory())
    }
}
