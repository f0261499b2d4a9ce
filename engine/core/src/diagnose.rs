//! Why a vertex is still processing, in words: the oldest processing vertices with their
//! streak, parents that are not final, and the state of each of their conflict sets (local or
//! as another shard reported it). For operators and for chasing a stall on real processes (the
//! node logs it when it stops with vertices processing). Reads the core; changes nothing.

use crate::core::{hex8, Core};
use crate::types::{shard_of_key, Signer, VertexStatus};

impl<S: Signer> Core<S> {
    /// One line per processing vertex, oldest first, at most `limit` of them.
    pub fn diagnose_processing(&self, limit: usize) -> Vec<String> {
        let short = |id: &pqdag_wire::VertexId| hex8(&id.0);
        let mut out = Vec::new();
        for e in self.dag.processing.values().take(limit) {
            let Some(r) = self.dag.vertices.get(&e.id) else { continue };
            let mut line = format!(
                "{} creator {} age {} ms: successes {} rounds {} confidence {:.2} strong {} claiming {} lock_quorum {} round_ok {}",
                short(&r.v.id),
                hex8(&r.v.creator.0),
                self.now.saturating_sub(r.arrival_us) / 1000,
                r.successes,
                r.rounds,
                r.confidence,
                r.strong,
                r.claiming,
                r.lock_quorum,
                r.round_ok
            );
            let parents: Vec<String> = r
                .v
                .parents
                .iter()
                .filter_map(|p| match self.parent_state(p) {
                    Some(VertexStatus::Final) => None,
                    s => Some(format!("{} {:?}", short(p), s)),
                })
                .collect();
            if !parents.is_empty() {
                line += &format!("; parents not final: {}", parents.join(", "));
            }
            for key in &r.v.conflict_keys {
                let owner = shard_of_key(key, self.shard_count);
                if owner == self.shard {
                    match self.conflicts.sets.get(key) {
                        Some(s) => {
                            let members: Vec<String> = s.members.iter().map(|m| format!("{}{}x{}", short(&m.id), if m.rejected { "(rej)" } else { "" }, m.count)).collect();
                            line += &format!(
                                "; key {}: members [{}] pref {} lock {:?} quorum_lock {:?} (round -{} gate -{}) acks_due {}{} decided {:?}",
                                hex8(&key.0),
                                members.join(" "),
                                s.members.get(s.pref).map(|m| short(&m.id)).unwrap_or_default(),
                                s.lock.map(|l| short(&l)),
                                s.quorum_lock.map(|l| short(&l)),
                                self.rounds.current.saturating_sub(s.lock_round),
                                self.rounds.current.saturating_sub(s.lock_gate),
                                s.acks_due,
                                if s.held { " held" } else { "" },
                                s.decided.map(|d| short(&d))
                            );
                        }
                        None => line += &format!("; key {}: no set", hex8(&key.0)),
                    }
                } else {
                    match self.cross.remote_sets.get(key) {
                        Some(rs) => {
                            line += &format!(
                            "; key {} (shard {owner}): preferred {:?} locked {} (round -{}) decided {}",
                            hex8(&key.0),
                            rs.preferred.map(|p| short(&p)),
                            rs.locked,
                            self.rounds.current.saturating_sub(rs.lock_round),
                            rs.decided
                        )
                        }
                        None => line += &format!("; key {} (shard {owner}): nothing heard", hex8(&key.0)),
                    }
                }
            }
            out.push(line);
        }
        out
    }
}
