//! Quorum locks (safety of whole-network polls, small clusters; docs/consensus.md item 8c).
//!
//! A node *locks* a conflict set on a member when one of its own polls counts a quorum q of Yes
//! for it (its own vote included). A locked node prefers and votes for that member and leaves
//! it only on a poll in which at least `t = N - q + f + 1` peers (its own vote left out) said
//! Yes to another member. A conflicting vertex is final only after a poll that asked about it
//! directly got q `LockedYes` (Yes from a node locked on it in each of its sets).
//!
//! Why this is safe at f < N/3, whatever the timing: if A is final somewhere, q nodes were
//! locked on A, at least q - f of them honest. The other honest nodes number at most N - q, so
//! with the f liars at most N - q + f < t peers can say Yes to a conflicting B while no honest
//! node locked on A has left it: the first to leave would need t. So none ever leaves, and B
//! can never gather the q `LockedYes` it needs (two quorums share an honest node, locked on A).
//! Exposure (item 2) alone was not enough: an honest node that had merely voted for A moved on
//! a Snowball count (a strict majority of a random two thirds of the peers), which a liar and
//! one stale honest node can manufacture at N = 5 (`sim-faults --max-byzantine 0.25` seed
//! 26752). Locking on a *seen* quorum rather than on a single vote keeps the partition case
//! live: two halves of 6 nodes that each voted for their own member never saw a quorum, so
//! neither is locked and Snowball counts reconcile them after the heal.
//!
//! A lock is written to the store before any vote that shows it leaves the node
//! (`Action::Lock`, persisted like a vertex), and restored at a restart
//! ([`Core::restore_locks`]): a node that forgot its lock could leave it for free.
//!
//! What it costs: a conflicting vertex waits for the locks to form (about one poll round after
//! its first quorum), and liveness can be lost where Byzantine votes made two honest nodes lock
//! on different members of one set (each then needs t, and the liar withholds): measured by
//! `sim-faults --max-byzantine 0.25`. Owns no state (a set's lock lives in `ConflictSet`).

use pqdag_wire::{ConflictKey, Vertex, VertexId};

use crate::core::Core;
use crate::types::{Action, Signer, shard_of_key};

impl<S: Signer> Core<S> {
    /// Peer Yes for another member that a poll needs before a locked node leaves its lock:
    /// t = N - q + f + 1, one more than the honest nodes outside a quorum plus the liars.
    pub(crate) fn lock_release_threshold(&self) -> usize {
        let n = self.peers.ids.len() + 1;
        let f = (n - 1) / 3;
        n - self.quorum() + f + 1
    }

    /// Whether this node is locked on `v` in every conflict set of `v` (a set decided for `v`
    /// counts): its Yes on `v` is then a `LockedYes`.
    pub(crate) fn locked_on(&self, v: &Vertex) -> bool {
        v.conflict_keys.iter().all(|k| {
            if shard_of_key(k, self.shard_count) == self.shard {
                self.conflicts.sets.get(k).is_some_and(|s| s.quorum_lock == Some(v.id) || s.decided == Some(v.id))
            } else {
                self.cross.remote_sets.get(k).is_some_and(|s| s.preferred == Some(v.id) && (s.locked || s.decided))
            }
        })
    }

    /// Makes the lock of `key` (or its release, `None`) durable before any later send.
    pub(crate) fn persist_lock(&mut self, key: ConflictKey, member: Option<VertexId>) {
        self.push(Action::Lock { key, member });
    }

    /// After [`Core::restore`]: the locks this shard held when it stopped (`Action::Lock`, as
    /// stored). A lock whose set is gone (decided and forgotten) or whose member is no longer a
    /// live member is dropped; otherwise the set prefers its locked member again, so the node
    /// votes as it did before the crash.
    pub fn restore_locks(&mut self, locks: impl IntoIterator<Item = (ConflictKey, VertexId)>) {
        let mut keys = Vec::new();
        for (key, member) in locks {
            if shard_of_key(&key, self.shard_count) == self.shard {
                self.conflicts.restored_locks.insert(key, member);
                keys.push(key);
            }
        }
        keys.sort_unstable();
        for key in keys {
            self.apply_restored_lock(key);
        }
        self.bump_epoch();
    }

    /// Applies the restored lock of `key` once its member is in the set (promoted if it was set
    /// aside); dropped when the set is decided or forgotten, or the member is rejected.
    pub(crate) fn apply_restored_lock(&mut self, key: ConflictKey) {
        let Some(&member) = self.conflicts.restored_locks.get(&key) else { return };
        if self.dag.forgotten.key_winner(&key).is_some() && !self.conflicts.sets.contains_key(&key) {
            self.conflicts.restored_locks.remove(&key);
            return;
        }
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        let i = match set.index(&member) {
            Some(i) => i,
            None => match set.promote(&member) {
                Some(i) => i,
                None => return,
            },
        };
        self.conflicts.restored_locks.remove(&key);
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        if set.decided.is_some() || set.members[i].rejected {
            return;
        }
        set.quorum_lock = Some(member);
        set.pref = i;
        let owners = set.owners();
        self.broadcast_preference(key, member, false, &owners);
        self.bump_epoch();
    }
}
