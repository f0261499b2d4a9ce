//! Census: how many entries (and how many slots) each of a core's growing collections holds.
//! What a long run's memory is made of, without a heap profiler: the simulator sums it over its
//! cores (`sim --census`), which is how a structure that grows with the history shows itself.

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

impl<S: Signer> Core<S> {
    /// Every collection that grows with the load or the history, with its size now.
    pub fn census(&self) -> Vec<CensusLine> {
        let (forgotten_ids, forgotten_keys, archived) = self.dag.forgotten.counts();
        vec![
            line("dag.vertices", &self.dag.vertices),
            CensusLine { name: "dag.processing", len: self.dag.processing.len(), capacity: self.dag.processing.len() },
            CensusLine { name: "forgotten.ids", len: forgotten_ids, capacity: forgotten_ids },
            CensusLine { name: "forgotten.keys", len: forgotten_keys, capacity: forgotten_keys },
            CensusLine { name: "archive.in_memory", len: archived, capacity: archived },
            line("pending.entries", &self.pending.entries),
            line("pending.waiting", &self.pending.waiting),
            line("conflicts.sets", &self.conflicts.sets),
            line("cross.remote_parents", &self.cross.remote_parents),
            line("cross.remote_sets", &self.cross.remote_sets),
            line("cross.watchers", &self.cross.watchers),
            CensusLine { name: "cross.decided", len: self.cross.decided.len(), capacity: self.cross.decided.capacity() },
            line("retention.forget_queue", &self.retention.forget_queue),
            line("retention.strip_queue", &self.retention.strip_queue),
            line("sync.requested", &self.sync.requested),
            CensusLine { name: "polls.open", len: self.polls.open.len(), capacity: self.polls.open.len() },
            CensusLine { name: "polls.closed", len: self.polls.closed.len(), capacity: self.polls.closed.len() },
            CensusLine { name: "polls.gathers", len: self.polls.gathers.len(), capacity: self.polls.gathers.len() },
            line("flood.processing", &self.flood.processing),
            CensusLine { name: "actions", len: self.actions.len(), capacity: self.actions.capacity() },
        ]
    }
}
