//! Invariants (TigerBeetle style), checked after every event in debug builds. Owns no state;
//! reads every module's.

use crate::core::Core;
use crate::pending::{PENDING_BYTES_MAX, PENDING_MAX, PENDING_PEER_BYTES_MAX};
use crate::polls::POLL_CLOSED_MAX;
use crate::sync::REQUESTED_MAX;
use crate::types::{Signer, VertexStatus};

impl<S: Signer> Core<S> {
    /// TigerBeetle-style invariants, checked after every event in debug builds.
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.finality.finalized, self.finality.final_position, "positions are dense");
        assert!(self.pending.entries.len() <= PENDING_MAX);
        assert!(self.pending.bytes <= PENDING_BYTES_MAX);
        assert!(self.pending.shares.iter().all(|(p, s)| *p == self.me || s.bytes <= PENDING_PEER_BYTES_MAX));
        assert!(self.polls.open.len() <= self.params.polls_in_flight_max);
        assert!((1..=self.params.polls_in_flight_max).contains(&self.polls.window));
        assert!(self.polls.closed.len() <= POLL_CLOSED_MAX);
        assert!(self.sync.requested.len() <= REQUESTED_MAX);
        let per_creator: usize = self.flood.processing.values().map(|&c| c as usize).sum();
        assert_eq!(per_creator, self.dag.processing.len(), "per-creator counts (`flood`) match the processing index");
        assert_eq!(self.flood.histogram.values().sum::<u32>(), self.flood.busy_members, "the median's histogram counts its members");
        // Sampled check (the full DAG scan would make debug runs quadratic).
        if self.dag.seq % 64 == 0 {
            for e in self.dag.processing.values().take(256) {
                let r = &self.dag.vertices[&e.id];
                assert_eq!(r.status, VertexStatus::Processing);
            }
        }
        for s in self.conflicts.sets.values().take(if self.dag.seq % 16 == 0 { 64 } else { 0 }) {
            if let Some(w) = s.decided {
                if let Some(r) = self.dag.vertices.get(&w) {
                    assert_ne!(r.status, VertexStatus::Rejected, "a set's winner is never rejected");
                }
                for m in &s.members {
                    if m.id != w {
                        if let Some(r) = self.dag.vertices.get(&m.id) {
                            assert_ne!(r.status, VertexStatus::Final, "two members of one set final");
                        }
                    }
                }
            }
        }
    }
}
