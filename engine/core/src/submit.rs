//! Own vertices: adoption by the owning shard and parent selection (FR-003); submissions are
//! batched first (`batch`). Owns no state; calls `dag` (insert), `pending`, `sync` and
//! `conflicts` (the double-spend checks), and draws parents from the core's RNG.

use std::sync::Arc;

use pqdag_wire::{ConflictKey, Vertex, VertexId};
use rand::Rng;

use crate::core::Core;
use crate::dag::RECENT_MAX;
use crate::id_hash::{HashMap, HashSet};
use crate::types::{shard_of_vertex, Signer, VertexStatus};

/// Parent recency window of FR-003.
const PARENT_RECENT_US: u64 = 10_000_000;
/// A processing vertex whose undecided ancestry has waited longer than this is not taken as a
/// parent (`Rec::undecided_since_us`): a healthy cluster decides in well under a second, so
/// such an ancestry is stalled (a conflict set with split locks, `docs/consensus.md` 8c) or
/// far behind, and a new vertex on it would wait with it. Built on decided vertices instead,
/// later payloads finalize around the stall (N = 4 with a `selective` liar, 12 s runs: 327
/// honest vertices left undecided on average in a stalled run without the rule, 150 with 5 s,
/// 79 with 2 s). Parent choice is the creator's own, so the rule cannot touch safety.
pub(crate) const PARENT_STALL_US: u64 = 2_000_000;

impl<S: Signer> Core<S> {
    /// Takes in an own vertex built on this shard or another (its owner adopts it).
    pub(crate) fn adopt(&mut self, now: u64, v: Arc<Vertex>, own: crate::batch::OwnTags) {
        let id = v.id;
        if self.contains(&id) {
            return;
        }
        // `insert` queues Persist before the creator's SendVertex (persist-before-send); when
        // parents on other shards are not confirmed yet, both happen on release.
        // Its submissions first: inserting may reject it at once (a late spend of a decided
        // key), and the re-issue of its innocent transactions needs them.
        self.created(&v, own);
        if self.parents_known(&v) {
            self.insert(now, v, Some(self.me), true, false);
        } else {
            let missing = self.missing_parents(&v);
            self.pend(v, self.me, true);
            self.request_missing(now, self.me, &missing);
        }
    }

    /// FR-003: recent (10 s), strongly preferred, high confidence (>0.8) first, prefer
    /// not-yet-final tips (no children: keeps the DAG narrow and every new vertex a transitive
    /// vote for many), never rejected; fall back to recent finals, then genesis.
    pub(crate) fn select_parents(&mut self, now: u64, keys: &[ConflictKey]) -> Vec<VertexId> {
        let want = self.params.parents;
        let mut cands: Vec<(u8, u64, VertexId)> = Vec::with_capacity(RECENT_MAX);
        let recent: Vec<VertexId> = self.dag.recent.iter().rev().copied().collect();
        // Once per submission, not per candidate (it is a median over every node's count).
        let bound = self.parent_share();
        let strict = self.keyed_parents_only(now);
        let mut may_spend: HashMap<VertexId, bool> = HashMap::default();
        for id in recent {
            let Some(r) = self.dag.vertices.get(&id) else { continue };
            if r.status == VertexStatus::Rejected || now.saturating_sub(r.arrival_us) > PARENT_RECENT_US {
                continue;
            }
            let (processing, tip, conf, seq) = (r.status == VertexStatus::Processing, r.child_count == 0, r.confidence, r.seq);
            if processing && (now.saturating_sub(r.undecided_since_us) > PARENT_STALL_US || !self.strongly_preferred(&id)) {
                continue;
            }
            // Not on a creator filling its share of the undecided DAG (`flood`): its vertices
            // may be dropped elsewhere, and ours would wait for their fetch.
            if processing && !self.parent_creator_ok(&self.dag.vertices[&id].v.creator, bound) {
                continue;
            }
            // A vertex spending keys builds only on vertices whose undecided ancestry spends
            // none, while conflicts are about (see `Rec::keyed_ancestry`).
            if processing && strict && !keys.is_empty() && self.dag.vertices[&id].keyed_ancestry {
                continue;
            }
            // Never build on a vertex that spends (or descends from one that spends) a key this
            // submission spends: the new vertex could never win (see `spends_ancestor_key`).
            if processing && !keys.is_empty() && (r_keys_overlap(&self.dag.vertices[&id].v.conflict_keys, keys) || self.conflicts.spends_ancestor_key(&self.dag, keys, &[id])) {
                continue;
            }
            // With shards, the undecided ancestry crosses to other shards, whose vertices'
            // keys this shard cannot see: build only where the whole undecided ancestry is
            // local and spends none of the keys.
            if processing && !keys.is_empty() && self.shard_count > 1 && self.ancestry_may_spend(keys, id, &mut may_spend) {
                continue;
            }
            let score = u8::from(tip) * 4 + u8::from(processing) * 2 + u8::from(conf > 0.8);
            cands.push((score, seq, id));
        }
        cands.sort_unstable_by_key(|c| std::cmp::Reverse((c.0, c.1)));
        let mut out: Vec<VertexId> = Vec::with_capacity(want);
        // Random pick among the best few: balanced parent distribution (FR-003).
        let top = cands.len().min(want * 2);
        let mut pool: Vec<VertexId> = cands[..top].iter().map(|c| c.2).collect();
        while out.len() < want && !pool.is_empty() {
            let i = self.rng.random_range(0..pool.len());
            out.push(pool.swap_remove(i));
        }
        for id in cands.iter().skip(top).map(|c| c.2).chain(self.dag.recent_final.iter().rev().copied()) {
            if out.len() >= want {
                break;
            }
            if !out.contains(&id) {
                out.push(id);
            }
        }
        if out.is_empty() {
            out.push(self.dag.genesis.id);
        }
        out
    }
}

impl<S: Signer> Core<S> {
    /// Whether `start`'s undecided ancestry may spend one of `keys`: a processing local vertex
    /// on the way spends one, or the walk meets an undecided vertex of another shard (its
    /// keys and parents are not held here), or the walk is over its bound. A new vertex built
    /// on such an ancestry could spend the key its own ancestor spends: it could never win,
    /// and, preferred by its set's id tie-break, it kept that ancestor from ever being
    /// strongly preferred, so neither was decided (`sim-faults` seed 4257, N = 5, S = 2: the
    /// ancestor sat in shard 0, the parent between them in shard 1, and `spends_ancestor_key`,
    /// which walks only this shard's DAG, did not see it). `memo` carries answers across the
    /// candidates of one parent selection.
    fn ancestry_may_spend(&self, keys: &[ConflictKey], start: VertexId, memo: &mut HashMap<VertexId, bool>) -> bool {
        if let Some(&m) = memo.get(&start) {
            return m;
        }
        let budget = self.dag.processing.len() * 8 + 64;
        let mut stack = vec![start];
        let mut seen: HashSet<VertexId> = HashSet::default();
        let mut answer = false;
        while let Some(x) = stack.pop() {
            if seen.len() > budget {
                answer = true;
                break;
            }
            if !seen.insert(x) {
                continue;
            }
            if let Some(&m) = memo.get(&x) {
                if m {
                    answer = true;
                    break;
                }
                continue;
            }
            match self.dag.vertices.get(&x) {
                Some(r) if r.status == VertexStatus::Processing => {
                    if r_keys_overlap(&r.v.conflict_keys, keys) {
                        answer = true;
                        break;
                    }
                    stack.extend(r.v.parents.iter().copied());
                }
                Some(_) => {}
                None => {
                    let local = shard_of_vertex(&x, self.shard_count) == self.shard || x == self.dag.genesis.id;
                    let settled = matches!(self.parent_state(&x), Some(VertexStatus::Final) | Some(VertexStatus::Rejected));
                    if !local && !settled {
                        answer = true;
                        break;
                    }
                }
            }
        }
        if answer {
            memo.insert(start, true);
        } else {
            // Every vertex the walk passed has a clean ancestry too.
            memo.extend(seen.into_iter().map(|x| (x, false)));
        }
        answer
    }

    /// Whether own vertices that spend keys must avoid undecided key-spending ancestry now: while
    /// a set of this shard is contested, and for `PARENT_RECENT_US` after one was (parents are
    /// drawn from that window). Without conflicts the DAG keeps its shape (new vertices on the
    /// undecided tips): building only on finals made most finals leaves, which a node catching
    /// up after a restart learns only through history sync (`cluster.rs` kill -9 test: 3 of
    /// 600 missing in 1 run of 3).
    fn keyed_parents_only(&self, now: u64) -> bool {
        self.conflicts.contested > 0 || self.conflicts.last_contest_us.is_some_and(|t| now < t + PARENT_RECENT_US)
    }
}

/// Whether two key lists share a key.
fn r_keys_overlap(a: &[ConflictKey], b: &[ConflictKey]) -> bool {
    a.iter().any(|k| b.contains(k))
}
