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
        let Some(i) = set.index(&id) else { return };
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
