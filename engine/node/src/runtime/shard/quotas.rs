//! Per-client quotas at the gateway: how many undecided submissions one client key may hold at
//! this node, and how fast it may submit. Without them any accepted client can take every
//! admission slot (`CLIENT_INFLIGHT_MAX`) and starve the other applications of the node. Keyed
//! by the client key proven at connect (so bounded by the configured `client_keys`), owned by
//! the gateway (no lock), time passed in (deterministic, testable).

use std::collections::HashMap;

use pqdag_core::ratelimit::TokenBucket;
use pqdag_core::Budget;

/// Undecided submissions one client key may have at this node (half the node's admission
/// slots, so two clients at least always get in).
pub(super) const CLIENT_INFLIGHT_PER_KEY_MAX: u32 = 4_096;
/// Submissions per second one client key may make at this node, with a burst of twice that:
/// 4x the design card's 5 000 vertices/s for a whole cluster.
pub(super) const CLIENT_SUBMIT_BUDGET: Budget = Budget { per_second: 20_000, burst: 40_000 };

/// Why a submission was refused by its client's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuotaRefusal {
    /// The client already has this many undecided submissions here.
    InFlight(u32),
    /// The client submits faster than [`CLIENT_SUBMIT_BUDGET`].
    Rate,
}

impl std::fmt::Display for QuotaRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaRefusal::InFlight(n) => write!(f, "client quota: {n} submissions of this client undecided at this node (at most {CLIENT_INFLIGHT_PER_KEY_MAX}); retry when some are decided"),
            QuotaRefusal::Rate => write!(f, "client quota: more than {} submissions/s from this client at this node; retry later", CLIENT_SUBMIT_BUDGET.per_second),
        }
    }
}

/// The quotas of every client key of one gateway.
#[derive(Debug, Default)]
pub(super) struct ClientQuotas {
    inflight: HashMap<[u8; 32], u32>,
    rate: HashMap<[u8; 32], TokenBucket>,
}

impl ClientQuotas {
    /// Admits one submission of `key` at `now_us` (counted in flight until [`Self::release`]),
    /// or says which quota it is over. A refusal costs nothing.
    pub(super) fn admit(&mut self, key: [u8; 32], now_us: u64) -> Result<(), QuotaRefusal> {
        let n = self.inflight.get(&key).copied().unwrap_or(0);
        if n >= CLIENT_INFLIGHT_PER_KEY_MAX {
            return Err(QuotaRefusal::InFlight(n));
        }
        if !self.rate.entry(key).or_default().take(CLIENT_SUBMIT_BUDGET, now_us, 1) {
            return Err(QuotaRefusal::Rate);
        }
        *self.inflight.entry(key).or_default() += 1;
        Ok(())
    }

    /// One admitted submission of `key` was decided, or refused after admission.
    pub(super) fn release(&mut self, key: [u8; 32]) {
        if let Some(n) = self.inflight.get_mut(&key) {
            debug_assert!(*n > 0, "released more than admitted");
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inflight.remove(&key);
            }
        }
    }

    /// Undecided submissions of `key` here.
    #[cfg(test)]
    fn inflight(&self, key: &[u8; 32]) -> u32 {
        self.inflight.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_cannot_take_every_slot_and_others_are_unaffected() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut q = ClientQuotas::default();
        // Spread over time so the rate quota does not bite first.
        let mut t = 0u64;
        for _ in 0..CLIENT_INFLIGHT_PER_KEY_MAX {
            assert_eq!(q.admit(a, t), Ok(()));
            t += 100;
        }
        assert_eq!(q.admit(a, t), Err(QuotaRefusal::InFlight(CLIENT_INFLIGHT_PER_KEY_MAX)));
        assert_eq!(q.admit(b, t), Ok(()), "another client still gets in");
        q.release(a);
        assert_eq!(q.admit(a, t), Ok(()), "a decision frees a slot");
        assert_eq!(q.inflight(&a), CLIENT_INFLIGHT_PER_KEY_MAX);
        for _ in 0..CLIENT_INFLIGHT_PER_KEY_MAX {
            q.release(a);
        }
        assert_eq!(q.inflight(&a), 0);
    }

    #[test]
    fn the_rate_quota_bounds_a_burst_and_refills() {
        let a = [3u8; 32];
        let mut q = ClientQuotas::default();
        let mut admitted = 0u64;
        // A burst at one instant: the bucket's burst, then refusals; decisions keep the in-flight
        // count low so only the rate quota applies.
        for _ in 0..CLIENT_SUBMIT_BUDGET.burst + 100 {
            match q.admit(a, 1_000) {
                Ok(()) => {
                    admitted += 1;
                    q.release(a);
                }
                Err(e) => assert_eq!(e, QuotaRefusal::Rate),
            }
        }
        assert_eq!(admitted, CLIENT_SUBMIT_BUDGET.burst);
        // 10 ms later: per_second / 100 more.
        let mut more = 0u64;
        while q.admit(a, 11_000).is_ok() {
            q.release(a);
            more += 1;
        }
        assert_eq!(more, CLIENT_SUBMIT_BUDGET.per_second / 100);
    }
}
