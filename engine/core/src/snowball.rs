//! Snowball counters (3.4, 4.5.2): a successful round of a conflicting vertex counts for it in
//! each of its sets, locally or on the owning shard, and may move the set's preference. Owns
//! no state (the counters live in `conflicts`' members); calls `conflicts` and `votes`.

use pqdag_wire::{ConflictKey, VertexId};

use crate::conflicts::ConflictSet;
use crate::core::Core;
use crate::types::{Action, ShardMsg, Signer, shard_of_key};

impl<S: Signer> Core<S> {
    pub(crate) fn snowball_success(&mut self, id: VertexId, conf: f64) {
        let keys = match self.dag.vertices.get(&id) {
            Some(r) => r.v.conflict_keys.clone(),
            None => return,
        };
        for key in keys {
            if shard_of_key(&key, self.shard_count) == self.shard {
                self.set_success(key, id, conf);
            } else {
                let owner = shard_of_key(&key, self.shard_count);
                self.push(Action::ToShard { shard: owner, msg: ShardMsg::Success { key, member: id, confidence: conf } });
            }
        }
    }

    pub(crate) fn set_success(&mut self, key: ConflictKey, id: VertexId, conf: f64) {
        let Some(set) = self.conflicts.sets.get_mut(&key) else { return };
        if set.decided.is_some() {
            return;
        }
        let i = match set.index(&id) {
            Some(i) => i,
            None => {
                // An over-cap vertex the network votes for: promote it in place of its
                // creator's weakest member that is not the preference, so this node can follow
                // the network instead of stalling on a vertex it may never prefer.
                let Some(o) = set.overflow.iter().position(|m| m.id == id) else { return };
                let creator = set.overflow[o].creator;
                let pref = set.pref;
                let Some(j) = (0..set.members.len()).filter(|&j| j != pref && set.members[j].creator == creator).min_by_key(|&j| (set.members[j].count, j)) else { return };
                let mut promoted = set.overflow.swap_remove(o);
                promoted.equivocal = true;
                let demoted = std::mem::replace(&mut set.members[j], promoted);
                set.overflow.push(demoted);
                if set.last_winner == j {
                    set.streak = 0;
                }
                j
            }
        };
        set.members[i].count += 1;
        set.members[i].confidence = conf;
        if set.last_winner == i {
            set.streak += 1;
        } else {
            set.last_winner = i;
            set.streak = 1;
        }
        if i != set.pref && ConflictSet::better(&set.members[i], &set.members[set.pref]) {
            set.pref = i;
            let owners = set.owners();
            self.broadcast_preference(key, id, false, &owners);
            self.bump_epoch();
        }
    }
}
