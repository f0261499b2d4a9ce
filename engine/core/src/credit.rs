//! Transitive credit (3.4): once per closed poll, the Yes-masks of the polled ids flow to every
//! processing ancestor, children before parents; confidence (FR-004), rounds and success
//! streaks are updated in the same walk. Owns no state; edits `dag` records only.

use std::collections::BinaryHeap;

use pqdag_wire::VertexId;

use crate::dag::Dag;
use crate::types::VertexStatus;

/// What one credit walk produced, for the callers that act on it.
#[derive(Default)]
pub(crate) struct Credited {
    /// Conflicting vertices with a successful round and their confidence, ancestors first.
    pub(crate) successes: Vec<(VertexId, f64)>,
    /// Vertices with `beta` consecutive successes, ancestors first: finality candidates.
    pub(crate) candidates: Vec<VertexId>,
    /// Vertices that reached `max_rounds` in this walk.
    pub(crate) stalled: u64,
}

/// One poll's answers, as the credit walk needs them.
pub(crate) struct Round<'a> {
    /// The polled ids.
    pub(crate) ids: &'a [VertexId],
    /// Per id, the bit mask of responders that voted Yes.
    pub(crate) yes: &'a [u64],
    /// Responses received.
    pub(crate) got: usize,
    /// Yes votes a success needs.
    pub(crate) alpha: usize,
    /// Consecutive successes that make a finality candidate.
    pub(crate) beta: u32,
    /// Rounds after which a processing vertex counts as stalled.
    pub(crate) max_rounds: u32,
}

/// Transitive credit, once per poll: children before parents by arrival sequence.
pub(crate) fn credit(dag: &mut Dag, round: &Round<'_>) -> Credited {
    let mark = dag.next_mark();
    let mut heap: BinaryHeap<(u64, VertexId)> = BinaryHeap::new();
    for (i, id) in round.ids.iter().enumerate() {
        if let Some(r) = dag.vertices.get_mut(id) {
            if r.status != VertexStatus::Processing {
                continue;
            }
            if r.mark != mark {
                r.mark = mark;
                r.mask = 0;
                heap.push((r.seq, *id));
            }
            r.mask |= round.yes[i];
        }
    }
    // Confidence (FR-004), streaks and snowball inputs, fused into the walk: a vertex is
    // popped after all its children (higher sequence), so its mask is complete.
    let got = round.got;
    let mut out = Credited::default();
    while let Some((_, id)) = heap.pop() {
        // The Arc clone releases the record's borrow: the parents are records of the same map.
        let (v, mask) = match dag.vertices.get_mut(&id) {
            Some(r) => {
                let yes = r.mask.count_ones() as usize;
                // Spec 3.5: ratio = positive / responses received (a lost or withheld answer
                // does not drag confidence; alpha on absolute Yes counts keeps safety).
                let ratio = if got == 0 { 0.0 } else { yes as f64 / got as f64 };
                r.confidence = if r.polled { 0.9 * r.confidence + 0.1 * ratio } else { ratio };
                r.polled = true;
                r.rounds += 1;
                if r.rounds == round.max_rounds {
                    out.stalled += 1;
                }
                if yes >= round.alpha {
                    r.successes += 1;
                    if !r.v.conflict_keys.is_empty() {
                        out.successes.push((id, r.confidence));
                    }
                    if r.successes >= round.beta {
                        out.candidates.push(id);
                    }
                } else {
                    r.successes = 0;
                }
                (r.v.clone(), r.mask)
            }
            None => continue,
        };
        for p in &v.parents {
            if let Some(pr) = dag.vertices.get_mut(p) {
                if pr.status != VertexStatus::Processing {
                    continue;
                }
                if pr.mark != mark {
                    pr.mark = mark;
                    pr.mask = 0;
                    heap.push((pr.seq, *p));
                }
                pr.mask |= mask;
            }
        }
    }
    out.candidates.reverse();
    out.successes.reverse();
    out
}
