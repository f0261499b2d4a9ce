//! Lock rounds across shards (docs/consensus.md 8d): a conflicting vertex with a key owned by
//! another shard of its node learns each raise of that key's lock two mesh hops after the
//! certificate. A failure message names the seed (rerun with `sim --seed S ...`).

use pqdag_sim::{run, SimConfig};

/// 4 nodes x 2 shards, 5 % double spends in batches of 8, mesh hops of up to 100 ms (a loaded
/// node's). With finality on locks of the poll's own round only, the far key's lock was one
/// round old at every node whenever asked, every poll succeeded and no vertex with such a key
/// was ever final: 0 of these 6 seeds were live (the same stall stopped 2-3 of 7 real 4 x 2
/// benches at 10 ms polls). A lock one round old is fresh now (`FRESH_AGE_MAX`).
#[test]
fn a_far_shard_s_late_lock_raise_does_not_stall_finality() {
    for seed in 1..=6 {
        let mut c = SimConfig::new(4, seed, 5.0);
        c.shards = 2;
        c.rate = 300.0;
        c.conflict_ratio = 0.05;
        c.max_batch = 8;
        c.mesh_delay_max_us = 100_000;
        c.liveness_budget_s = 10.0;
        let r = run(c).expect("config");
        assert_eq!(r.safety_violations, 0, "seed {seed}: {:?}", r.first_violation);
        assert!(r.liveness_ok, "seed {seed}: {} of {} final, {} of {} sets decided", r.finalized, r.submitted, r.conflict_sets_resolved, r.conflict_sets);
        assert_eq!(r.conflict_sets_resolved, r.conflict_sets, "seed {seed}");
    }
}
