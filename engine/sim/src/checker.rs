//! The checker: safety invariants checked on every decision, liveness (convergence) checked
//! during the liveness phase, and partition recovery measured after the heal.
//!
//! Owns what honest nodes decided (per vertex: how many finalized / rejected it), the winner of
//! every conflict key, the conflict sets the workload submitted, when each vertex was created,
//! the violations, and the pre-heal recovery tracking. Calls nothing; the facade tells it each
//! decision and hands it the shells to inspect.

use pqdag_core::{IdHashMap as HashMap, IdHashSet as HashSet};

use pqdag_core::{ConflictKey, VertexId};

use crate::shell::Shell;

/// Safety and liveness checking of a run.
pub(crate) struct Checker {
    seed: u64,
    quiet: bool,
    honest: usize,
    created_at: HashMap<VertexId, u64>,
    /// Vertices a Byzantine node created (its strategy's own, or its core's): decided and
    /// checked like any other, but not an honest client's latency.
    byzantine_created: HashSet<VertexId>,
    key_winner: HashMap<ConflictKey, VertexId>,
    /// Per vertex: honest nodes that finalized it, that rejected it.
    decided: HashMap<VertexId, (u32, u32)>,
    /// Ids in the order some honest node first finalized them.
    final_log: Vec<VertexId>,
    conflict_sets: Vec<(ConflictKey, VertexId, VertexId)>,
    violations: u64,
    first_violation: Option<String>,
    heal_at: Option<u64>,
    pre_heal_open: Option<HashSet<VertexId>>,
    recovery_ms: Option<f64>,
}

impl Checker {
    /// A checker for `honest` honest nodes; `heal_at`: when a partition heals, if any;
    /// `quiet`: do not print the first violation.
    pub(crate) fn new(seed: u64, honest: usize, heal_at: Option<u64>, quiet: bool) -> Self {
        Checker {
            seed,
            quiet,
            honest,
            created_at: HashMap::default(),
            byzantine_created: HashSet::default(),
            key_winner: HashMap::default(),
            decided: HashMap::default(),
            final_log: Vec::new(),
            conflict_sets: Vec::new(),
            violations: 0,
            first_violation: None,
            heal_at,
            pre_heal_open: None,
            recovery_ms: None,
        }
    }

    /// Records a safety violation (the first is printed with the seed).
    pub(crate) fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.first_violation.is_none() {
            if !self.quiet {
                eprintln!("SAFETY VIOLATION (seed {}): {what}", self.seed);
            }
            self.first_violation = Some(what);
        }
    }

    /// Vertex `id` was created at `now`, by a Byzantine node if `byzantine`.
    pub(crate) fn created(&mut self, id: VertexId, now: u64, byzantine: bool) {
        self.created_at.insert(id, now);
        if byzantine {
            self.byzantine_created.insert(id);
        }
    }

    /// When vertex `id` was created by an honest node (what `finality_ms` measures: a
    /// flooder's own vertices finalizing slowly is the defence working, not an honest
    /// client waiting).
    pub(crate) fn honest_created_at(&self, id: &VertexId) -> Option<u64> {
        if self.byzantine_created.contains(id) {
            return None;
        }
        self.created_at.get(id).copied()
    }

    /// The workload submitted `a` and `b` spending the same key: exactly one may win.
    pub(crate) fn conflict_set(&mut self, key: ConflictKey, a: VertexId, b: VertexId) {
        self.conflict_sets.push((key, a, b));
    }

    /// Ids that some honest node finalized, in the order they were first finalized (the
    /// network's finality log, which the shells' history sync walks with a cursor per node).
    pub(crate) fn final_log(&self) -> &[VertexId] {
        &self.final_log
    }

    /// Honest node `node` finalized `id` (with conflict keys `keys`) at `now`.
    pub(crate) fn on_final(&mut self, node: usize, id: VertexId, keys: Vec<ConflictKey>, now: u64) {
        let e = self.decided.entry(id).or_insert((0, 0));
        e.0 += 1;
        if e.0 == 1 {
            self.final_log.push(id);
        }
        if e.1 > 0 {
            self.violation(format!("vertex {id} final at node {node} but rejected at another honest node"));
        }
        for k in keys {
            match self.key_winner.get(&k) {
                Some(w) if *w != id => self.violation(format!("conflict key {}: node {node} finalized {id}, another honest node finalized {w}", hex(&k.0))),
                Some(_) => {}
                None => {
                    self.key_winner.insert(k, id);
                }
            }
        }
        self.close_pre_heal(id, now);
    }

    /// Ids final at some honest node but not at all of them (debugging aid), with the count.
    pub(crate) fn partly_final(&self) -> Vec<(VertexId, u32)> {
        let honest = self.honest as u32;
        let mut v: Vec<(VertexId, u32)> = self.decided.iter().filter(|(_, d)| d.0 > 0 && d.0 < honest).map(|(id, d)| (*id, d.0)).collect();
        v.sort();
        v
    }

    /// Honest node `node` rejected `id` at `now`.
    pub(crate) fn on_reject(&mut self, node: usize, id: VertexId, now: u64) {
        let e = self.decided.entry(id).or_insert((0, 0));
        e.1 += 1;
        if e.0 > 0 {
            self.violation(format!("vertex {id} rejected at node {node} but final at another honest node"));
        }
        self.close_pre_heal(id, now);
    }

    fn close_pre_heal(&mut self, id: VertexId, now: u64) {
        let Some(heal) = self.heal_at else { return };
        if now < heal {
            return;
        }
        if self.pre_heal_open.is_none() {
            // Snapshot at the first decision after the heal: vertices created before the heal.
            let open: HashSet<VertexId> = self
                .created_at
                .iter()
                .filter(|(_, &t)| t < heal)
                .filter(|(v, _)| self.decided.get(*v).is_none_or(|d| (d.0 + d.1) < self.honest as u32))
                .map(|(v, _)| *v)
                .collect();
            self.pre_heal_open = Some(open);
        }
        let honest = self.honest as u32;
        let done = self.decided.get(&id).is_some_and(|d| d.0 + d.1 >= honest);
        if let Some(open) = self.pre_heal_open.as_mut() {
            if done {
                open.remove(&id);
            }
            if open.is_empty() && self.recovery_ms.is_none() {
                self.recovery_ms = Some((now - heal) as f64 / 1000.0);
            }
        }
    }

    /// Liveness: every honest node is up, processes nothing, and has the same finalized digest.
    /// Sets `partition_seen` if a node it looks at suspects a partition.
    pub(crate) fn converged(shells: &[Shell], partition_seen: &mut bool) -> bool {
        let mut digest = None;
        for n in shells {
            if n.is_byzantine() {
                continue;
            }
            if !n.is_up() {
                return false;
            }
            let mut d = [0u8; 32];
            for c in n.cores() {
                let st = c.status();
                if st.partition_suspected {
                    *partition_seen = true;
                }
                if st.processing > 0 {
                    return false;
                }
                for (x, y) in d.iter_mut().zip(st.finalized_digest.iter()) {
                    *x ^= y;
                }
            }
            match digest {
                None => digest = Some(d),
                Some(x) if x != d => return false,
                _ => {}
            }
        }
        true
    }

    /// End-state agreement after convergence: identical finalized digests on every honest node.
    pub(crate) fn check_end_state(&mut self, shells: &[Shell]) {
        let mut first: Option<Vec<u8>> = None;
        for (i, n) in shells.iter().enumerate().filter(|(_, n)| !n.is_byzantine()) {
            let d: Vec<u8> = n.cores().iter().flat_map(|c| c.status().finalized_digest).collect();
            match &first {
                None => first = Some(d),
                Some(f) if *f != d => self.violation(format!("node {i} finalized set differs after convergence")),
                _ => {}
            }
        }
    }

    /// Conflict sets submitted.
    pub(crate) fn conflict_sets(&self) -> u64 {
        self.conflict_sets.len() as u64
    }

    /// Conflict sets with one winner everywhere, or both members rejected everywhere (both
    /// descend from losers).
    pub(crate) fn conflict_sets_resolved(&self) -> u64 {
        let h = self.honest as u32;
        let count = |v: &VertexId| self.decided.get(v).copied().unwrap_or((0, 0));
        let mut resolved = 0;
        for (_, a, b) in &self.conflict_sets {
            let (fa, ra) = count(a);
            let (fb, rb) = count(b);
            if (fa == h && fb == 0) || (fb == h && fa == 0) || (ra == h && rb == h) {
                resolved += 1;
            }
        }
        resolved
    }

    /// Safety violations seen.
    pub(crate) fn violations(&self) -> u64 {
        self.violations
    }

    /// The first violation, if any.
    pub(crate) fn first_violation(&self) -> Option<String> {
        self.first_violation.clone()
    }

    /// Virtual ms from the heal until everything created before it was decided everywhere.
    pub(crate) fn recovery_ms(&self) -> Option<f64> {
        self.recovery_ms
    }
}

fn hex(b: &[u8; 32]) -> String {
    b[..6].iter().map(|x| format!("{x:02x}")).collect()
}

/// Honest node `node` (`shell`, S > 1) must not take two members of one undecided set for the
/// preference at once across its shards: each would then get its Yes, and the quorum locks'
/// safety argument assumes a node never votes for two members at once
/// (`Core::broadcast_preference`). Checked after every event the node handles; returns the
/// violations for [`Checker::violation`] (none for a Byzantine or crashed node).
pub(crate) fn preference_violations(node: usize, shell: &Shell, shards: u32) -> Vec<String> {
    let mut found = Vec::new();
    if shell.is_byzantine() || !shell.is_up() {
        return found;
    }
    for s in 0..shards {
        for (key, members) in shell.core(s).undecided_sets() {
            let yes: Vec<VertexId> = members
                .iter()
                .filter(|(id, owner)| *owner < shards && shell.core(*owner).vertex_status(id) == Some(pqdag_core::VertexStatus::Processing) && shell.core(*owner).prefers_in_set(&key, id))
                .map(|(id, _)| *id)
                .collect();
            if yes.len() > 1 {
                found.push(format!("node {node} takes {} members of the set of key {:02x}{:02x}{:02x}{:02x} for its preference at once: {yes:?}", yes.len(), key.0[0], key.0[1], key.0[2], key.0[3]));
            }
        }
    }
    found
}
