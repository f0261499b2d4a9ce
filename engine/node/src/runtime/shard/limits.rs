//! Per-peer request budgets of one shard (issue 14, hole 5): what a peer's queries (a signature
//! each), vertex fetches (a lookup and maybe a store read per id) and history-sync requests (a
//! store range scan) may cost this shard, checked before any of that work and before the
//! query's signature is verified. Owns the buckets ([`pqdag_core::RateLimits`], deterministic,
//! the shard clock passed in); calls the core only to read whether a peer is excluded (an
//! excluded peer has a quarter of the budget) and, through the guard, to charge a strike
//! ([`Misbehaviour::Flooding`], at most one a second). A request over budget is dropped: its
//! responder is dropped, so the asker's stream is reset (the protocol has no cheaper refusal),
//! and `pqdag_rate_limited_total{kind}` counts it.

use std::sync::Arc;

use pqdag_core::{Admission, Core, Misbehaviour, RateLimits, RequestKind};
use pqdag_wire::NodeId;

use super::super::metrics::{KindLabel, Metrics};
use super::guard::Guard;
use super::roster::Roster;
use super::signer::MlDsaSigner;

/// The shard's per-peer budgets.
pub(super) struct Limits {
    buckets: RateLimits,
    metrics: Arc<Metrics>,
}

impl Limits {
    /// Full budgets for every member.
    pub(super) fn new(members: usize, metrics: Arc<Metrics>) -> Self {
        Self { buckets: RateLimits::new(members), metrics }
    }

    /// Whether `from`'s request of `kind`, costing `cost` units (a fetch: its ids), may be
    /// served at `now`. When not, it is counted, and the first refusal of a second is charged to
    /// the peer through the guard.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(&mut self, core: &mut Core<MlDsaSigner>, roster: &Roster, guard: &mut Guard, from: NodeId, kind: RequestKind, cost: u64, now: u64) -> bool {
        let Some(i) = roster.index_of(&from) else { return false };
        match self.buckets.admit(i, kind, cost, core.is_excluded(&from), now) {
            Admission::Allowed => true,
            Admission::Dropped { strike } => {
                self.metrics.rate_limited.get_or_create(&KindLabel { kind: kind.name().to_owned() }).inc();
                if strike {
                    guard.invalid(core, Some(from), "flooding", Misbehaviour::Flooding);
                }
                false
            }
        }
    }
}
