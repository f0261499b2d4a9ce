//! Per-peer request budgets of one shard (issue 14, hole 5): what a peer's queries (a signature
//! each), vertex fetches (a lookup and maybe a store read per id) and history-sync requests (a
//! store range scan) may cost this shard, checked before any of that work and before the
//! query's signature is verified. Owns the buckets ([`pqdag_core::RateLimits`], deterministic,
//! the shard clock passed in); calls the core only to read whether a peer is excluded (an
//! excluded peer has a quarter of the budget) and, through the guard, to charge a strike
//! ([`Misbehaviour::Flooding`], at most one a second). A request over budget is dropped: its
//! responder is dropped, so the asker's stream is reset (the protocol has no cheaper refusal),
//! and `pqdag_rate_limited_total{kind}` counts it.
//!
//! A query over budget also meters its sender in the transport
//! ([`ShardTransport::meter_streams`], `pqdag_core::ratelimit::STREAM_METER_HOLD_US`): QUIC then
//! grants it new streams at its query budget's rate only, so its extra queries are never sent
//! and cost no bytes. A metered peer that spends every credit it gets (the transport reports it
//! starved) asks for more than its budget, and is charged as a query over budget.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use pqdag_core::ratelimit::{stream_credit, STREAM_METER_HOLD_US};
use pqdag_core::{Admission, Core, Misbehaviour, RateLimits, RequestKind};
use pqdag_transport::{PeerId, ShardTransport};
use pqdag_wire::NodeId;

use super::super::metrics::{KindLabel, Metrics};
use super::guard::Guard;
use super::roster::Roster;
use super::signer::MlDsaSigner;

/// The shard's per-peer budgets.
pub(super) struct Limits {
    buckets: RateLimits,
    metrics: Arc<Metrics>,
    transport: Rc<ShardTransport>,
}

impl Limits {
    /// Full budgets for every member.
    pub(super) fn new(members: usize, metrics: Arc<Metrics>, transport: Rc<ShardTransport>) -> Self {
        Self { buckets: RateLimits::new(members), metrics, transport }
    }

    /// Charges the metered peers the transport found starved (every stream credit spent) as
    /// queries over budget: the meter is renewed and a strike given (at most one per interval).
    pub(super) fn charge_starved(&mut self, core: &mut Core<MlDsaSigner>, roster: &Roster, guard: &mut Guard, now: u64) {
        for PeerId(i) in self.transport.take_starved_peers() {
            let Some(&from) = roster.node_ids.get(i) else { continue };
            if let Admission::Dropped { strike } = self.buckets.over_credit(i, now) {
                self.metrics.rate_limited.get_or_create(&KindLabel { kind: "stream_credit".to_owned() }).inc();
                self.meter(i, core.is_excluded(&from));
                if strike {
                    guard.invalid(core, Some(from), "flooding", Misbehaviour::Flooding);
                }
            }
        }
    }

    /// Meters (or renews the meter of) peer `i`'s streams at its query budget's rate.
    fn meter(&self, i: usize, excluded: bool) {
        let c = stream_credit(excluded);
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        self.transport.meter_streams(PeerId(i), clamp(c.per_second), clamp(c.burst), Duration::from_micros(STREAM_METER_HOLD_US));
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
                if kind == RequestKind::Query {
                    self.meter(i, core.is_excluded(&from));
                }
                if strike {
                    guard.invalid(core, Some(from), "flooding", Misbehaviour::Flooding);
                }
                false
            }
        }
    }
}
