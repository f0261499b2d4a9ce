//! `sim --debug-node N`: a run that ends by printing where node N's stuck vertices and conflict
//! keys stand at every node (a debugging aid, not a check). Owns nothing.

use pqdag_core::VertexId;

use crate::{report, shell, Report, Sim};

impl Sim {
    /// Runs, then prints the processing vertices of node `node` (debugging aid).
    pub fn run_debug(mut self, node: usize) -> Report {
        let end_us = (self.cfg.duration_s * 1e6) as u64;
        let budget_us = end_us + (self.cfg.liveness_budget_s * 1e6) as u64;
        while let Some((at, ev)) = self.next_event() {
            if at > budget_us {
                break;
            }
            self.now = at;
            if self.workload.is_on() && at >= end_us {
                self.workload.stop();
            }
            if let Some(ev) = ev {
                if let Err(ev) = self.run_batch(at, ev, budget_us) {
                    self.step(ev);
                }
            }
        }
        report::debug_dump(&mut self.shells, node, self.cfg.shards);
        // Where the stuck vertices of `node` stand everywhere, and any id named by env WATCH.
        let mut watch: Vec<VertexId> = (0..self.cfg.shards).flat_map(|s| self.shells[node].core(s).processing_ids().take(4).collect::<Vec<_>>()).collect();
        if let Ok(w) = std::env::var("WATCH") {
            for sh in &self.shells {
                for c in sh.cores() {
                    watch.extend(c.known_ids().filter(|id| id.to_string().starts_with(&w)));
                }
            }
            watch.sort();
            watch.dedup();
        }
        for id in watch {
            let per: Vec<String> = self.shells.iter().enumerate().map(|(i, n)| format!("{i}:{:?}", (0..self.cfg.shards).map(|s| n.core(s).vertex_status(&id)).collect::<Vec<_>>())).collect();
            eprintln!("status of {id}: {}", per.join(" "));
        }
        let keys: Vec<_> = (0..self.cfg.shards).flat_map(|s| self.shells[node].core(s).processing_keys(4)).collect();
        for k in keys {
            let s = pqdag_core::shard_of_key(&k, self.cfg.shards);
            for (i, n) in self.shells.iter().enumerate() {
                eprintln!("key {:02x}{:02x}{:02x}{:02x} at node {i} shard {s}: {}", k.0[0], k.0[1], k.0[2], k.0[3], n.core(s).debug_key(&k));
            }
        }
        for (id, finals) in self.checker.partly_final().into_iter().take(8) {
            let s = shell::shard_for_vertex(&id, self.cfg.shards);
            let per: Vec<String> = self.shells.iter().enumerate().map(|(i, n)| format!("{i}:{:?}", n.core(s).vertex_status(&id))).collect();
            eprintln!("final at {finals} honest nodes only: {id} {}", per.join(" "));
        }
        self.report(end_us, None, 0.0)
    }
}
