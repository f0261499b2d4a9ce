//! Census: how many entries (and how many slots) each of a core's growing collections holds.
//! What a long run's memory is made of, without a heap profiler: the simulator sums it over its
//! cores (`sim --census-every-ms`), which is how a structure that grows with the history shows itself.

use crate::core::Core;
use crate::retention::Shrink;
use crate::types::Signer;

/// One collection of a core: its name, entries and allocated slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CensusLine {
    /// Where it lives (`module.field`).
    pub name: &'static str,
    /// Entries held.
    pub len: usize,
    /// Slots allocated (a hash map's capacity, a deque's).
    pub capacity: usize,
}

fn line<C: Shrink>(name: &'static str, c: &C) -> CensusLine {
    let (len, capacity) = c.fill();
    CensusLine { name, len, capacity }
}

/// A collection whose slots are its entries (a tree, or a count kept elsewhere).
fn counted(name: &'static str, len: usize) -> CensusLine {
    CensusLine { name, len, capacity: len }
}

impl<S: Signer> Core<S> {
    /// Every collection that grows with the load or the history, with its size now.
    pub fn census(&self) -> Vec<CensusLine> {
        let (forgotten_ids, forgotten_keys, archived) = self.dag.forgotten.counts();
        vec![
            line("dag.vertices", &self.dag.vertices),
            counted("dag.processing", self.dag.processing.len()),
            counted("forgotten.ids", forgotten_ids),
            counted("forgotten.keys", forgotten_keys),
            counted("archive.in_memory", archived),
            line("pending.entries", &self.pending.entries),
            line("pending.waiting", &self.pending.waiting),
            line("conflicts.sets", &self.conflicts.sets),
            line("cross.remote_parents", &self.cross.remote_parents),
            line("cross.remote_sets", &self.cross.remote_sets),
            line("cross.watchers", &self.cross.watchers),
            line("cross.decided", &self.cross.decided),
            line("retention.forget_queue", &self.retention.forget_queue),
            line("retention.strip_queue", &self.retention.strip_queue),
            line("sync.requested", &self.sync.requested),
            counted("polls.open", self.polls.open.len()),
            counted("polls.closed", self.polls.closed.len()),
            counted("polls.gathers", self.polls.gathers.len()),
            line("flood.processing", &self.flood.processing),
            line("actions", &self.actions),
        ]
    }
}
