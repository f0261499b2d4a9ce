//! Snowball counters (3.4, 4.5.2): a successful round of a conflicting vertex counts for it in
//! each of its sets, locally or on the owning shard, and may move the set's preference. Owns
//! no state (the counters live in `conflicts`' members); calls `conflicts` and `votes`.

use pqdag_wire::ConflictKey;
use rand::Rng;

use crate::conflicts::ConflictSet;
use crate::credit::Tally;
use crate::core::Core;
use crate::types::{Action, ShardMsg, Signer, shard_of_key};

impl<S: Signer> Core<S> {
    /// A conflicting vertex's poll result (a Snowball success, a quorum, or both) counts in each
    /// of its sets, here or on the set's owning shard.
    pub(crate) fn snowball_success(&mut self, t: Tally) {
        // The vertex, not a copy of its keys: a batched vertex spends one key per transaction,
        // and every successful round of every processing vertex passes here.
        let v = match self.dag.vertices.get(&t.id) {
            Some(r) => r.v.clone(),
            None => return,
        };
        for &key in &v.conflict_keys {
            if shard_of_key(&key, self.shard_count) == self.shard {
                self.set_success(key, t);
            } else {
                let owner = shard_of_key(&key, self.shard_count);
                let msg = ShardMsg::Success { key, member: t.id, confidence: t.confidence, snowball: t.snowball, peer_yes: t.peer_yes, quorum: t.quorum, peer_locked: t.peer_locked, quorum_round: t.quorum_round, claim_round: t.claim_round };
                self.push(Action::ToShard { shard: owner, msg });
            }
        }
    }

    /// One poll result for member `t.id` of the set of `key`: Snowball counters, the preference,
    /// and (whole-network polls) the quorum lock (`locks`). A set locked on another member
    /// ignores the result unless `t.peer_yes` reaches the release threshold.
    pub(crate) fn set_success(&mut self, key: ConflictKey, t: Tally) {
        let locks = self.whole_network();
        let rounds = locks && self.rounds_on();
        let release_at = if locks { self.lock_release_threshold() } else { 0 };
        let follow_at = if locks { self.lock_follow_threshold() } else { usize::MAX };
        // Drawn for every result (whether used or not), so the draws do not depend on the set;
        // never with one shard (there the coin showed no gain, and one-shard runs replay as
        // before it).
        let coin = locks && (self.shard_count == 1 || self.rng.random_bool(0.5));
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        if set.decided.is_some() {
            return;
        }
        let id = t.id;
        // Lock rounds: floor(N/3) + 1 peers claim a lock on this member of a round after the lock's
        // gate, so a certificate of a later round exists: the lock moves to it (`lock_rounds`).
        let claimed = rounds && set.quorum_lock.is_some_and(|l| l != id) && t.claim_round.is_some_and(|c| c > set.lock_gate);
        if let Some(l) = set.quorum_lock.filter(|l| *l != id) {
            if (t.peer_yes as usize) < release_at && !claimed && set.index(&l).is_some_and(|j| !set.members[j].rejected) {
                // Not enough to leave a lock: ignored, counters included (a count earned here
                // would move the preference the moment the lock is released).
                return;
            }
        }
        let i = match set.index(&id) {
            Some(i) => i,
            // An over-cap vertex the network votes for: promoted in place of its creator's
            // weakest member that is not the preference, so this node can follow the network
            // instead of stalling on a vertex it may never prefer.
            None if !(t.snowball || t.quorum) => return,
            None => match set.promote(&id) {
                Some(i) => i,
                None => return,
            },
        };
        if set.members[i].rejected {
            return;
        }
        let before = (set.pref, set.quorum_lock, set.lock_round, set.lock_gate);
        // The quorum counted this node's own vote as cast when the poll closed, on the member's
        // shard. Where that is another shard, this set may have moved off the member since (a
        // mesh hop later), and this node's shards may have voted for the new preference
        // meanwhile: locking back on the member would put its Yes on both, as two quorums'
        // common node. So a quorum locks only a member still preferred here, or one that peers
        // alone gave the release threshold. With one shard this changes nothing: a quorum
        // without this node's own Yes is q >= t peers.
        let lockable = set.pref == i || (t.peer_yes as usize) >= release_at;
        if set.quorum_lock.is_some_and(|l| l != id) {
            debug_assert!(locks, "locks exist in whole-network mode only");
            // t peers said Yes to another member, or a later certificate exists: this node
            // leaves its lock (see `locks`, `lock_rounds`).
            set.quorum_lock = None;
            set.lock_round = 0;
            set.lock_gate = 0;
        }
        if t.snowball {
            set.members[i].count += 1;
            set.members[i].confidence = t.confidence;
            if set.last_winner == i {
                set.streak += 1;
            } else {
                set.last_winner = i;
                set.streak = 1;
            }
            // Whole-network polls with several shards: a move off a member this node voted for
            // (exposed) happens on half the successes that would make it, at random. Every
            // node samples every peer there, so two unlocked nodes with opposite preferences
            // each saw the other's vote plus one locked node's as a majority for the other
            // member, and both switched, in every round: 557 switches each, never in step,
            // while the two locked nodes waited for them (`sim --nodes 4 --shards 2
            // --conflict-ratio 0.05 --max-batch 256 --mesh-delay-max-us 5000 --seed 1`).
            // Avalanche's random samples break such
            // symmetry by themselves; a coin does here. The preference only steers liveness
            // (safety rests on the quorum locks, `locks`). With one shard the same sweep showed
            // no such run (0 of 100 either way), and at 25 % `selective` liars the coin's
            // failures (4 of 10 000 seeds) did not differ from chance (1 without it).
            let pinned = locks && set.members[set.pref].exposed && !set.members[set.pref].rejected;
            if i != set.pref && set.quorum_lock.is_none() && ConflictSet::better(&set.members[i], &set.members[set.pref]) && (!pinned || coin) {
                set.pref = i;
            }
        }
        // Lock-follow (`docs/consensus.md` 8c): an unlocked set whose stalled member f + 1 peers
        // are locked on, with no peer seen locked on any rival, prefers that member. At least
        // one of those peers is honest and saw a quorum of Yes for it, so it is the one member
        // that can still gather a locked quorum. At N = 5 with a `selective` liar, two honest
        // nodes locked on one member and two unlocked ones preferring the other stayed so for
        // good (`sim-faults` seed 9315): in each unlocked node's preference sample the liar and
        // the other unlocked node outvoted the locked ones as often as not. Safe because safety
        // rests on the locks alone (an unlocked node's preference may move anywhere), and f
        // liars cannot make f + 1. Where both members have peers locked on them (a split), the
        // liars can make either side look larger, and Snowball alone moves the preference: a
        // rule that followed the side with more locked peers sent N = 7's one unlocked honest
        // node to the side that two honest nodes and the liar were locked on, where no quorum
        // could form without the liar (`sim-faults` seed 9091; live by Snowball).
        if locks && t.peer_locked > 0 {
            set.members[i].locked_peers = t.peer_locked;
        }
        if locks && t.peer_locked as usize >= follow_at && set.quorum_lock.is_none() && i != set.pref {
            if set.members.iter().enumerate().all(|(j, m)| j == i || m.locked_peers == 0) {
                set.pref = i;
            }
        }
        if locks && t.quorum && lockable {
            // A quorum of Yes seen: lock on it (and prefer it: with this node's own vote on
            // another member, the quorum was all peers, at least the release threshold). With
            // lock rounds the quorum is a certificate of the poll's round: the lock takes that
            // round, or keeps a later one.
            if set.quorum_lock == Some(id) {
                set.lock_round = set.lock_round.max(t.quorum_round);
                set.lock_gate = set.lock_gate.max(t.quorum_round);
            } else {
                set.quorum_lock = Some(id);
                set.lock_round = t.quorum_round;
                set.lock_gate = t.quorum_round;
            }
            set.pref = i;
        } else if claimed && set.quorum_lock.is_none() {
            // Moved by claims: locked on the member at the claimed round (an honest claimer's
            // lock is of that round or later).
            let c = t.claim_round.unwrap_or(0);
            set.quorum_lock = Some(id);
            set.lock_round = c;
            set.lock_gate = c;
            set.pref = i;
        }
        debug_assert!(set.quorum_lock.is_none_or(|l| set.members[set.pref].id == l), "a locked set prefers its lock");
        debug_assert!(set.quorum_lock.is_none() || set.lock_gate >= set.lock_round, "a lock's gate is at least its round");
        let changed = (set.pref, set.quorum_lock) != (before.0, before.1);
        let raised = (set.lock_round, set.lock_gate) != (before.2, before.3) && set.quorum_lock.is_some();
        if changed || raised {
            // Only on a change: most results leave the set as it was (no allocation then).
            let (pref, lock, owners) = (set.preferred(), set.quorum_lock, set.owners());
            if lock != before.1 || raised {
                // A lock on this shard's own vertex as the set's only member stays out of the
                // store until a second vertex joins (`ConflictSet::lock_unpersisted`).
                let lone = set.lone_live_member(self.shard).is_some() && !self.conflicts.restored_locks.contains_key(&key);
                let was_unpersisted = std::mem::take(&mut set.lock_unpersisted);
                if lock.is_some() && lone {
                    set.lock_unpersisted = true;
                } else if lock.is_some() || !was_unpersisted {
                    self.persist_lock(key, lock);
                }
            }
            self.broadcast_preference(key, pref, false, &owners);
            if changed {
                self.bump_epoch();
            }
        }
    }
}
