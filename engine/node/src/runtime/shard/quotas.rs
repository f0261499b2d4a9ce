//! Per-client quotas at the gateway: how many undecided submissions one client key may hold at
//! this node, how many bytes they may weigh, and how fast it may submit; and the bytes all
//! clients' undecided submissions may weigh together. Without them any accepted client can take
//! every admission slot (`CLIENT_INFLIGHT_MAX`) and starve the other applications of the node,
//! and counts alone let payloads of the largest size (64 KiB) hold 4 096 x 64 KiB = 256 MiB per
//! client key. Keyed by the client key proven at connect (so bounded by the configured
//! `client_keys`), owned by the gateway (no lock), time passed in (deterministic, testable).

use std::collections::HashMap;

use pqdag_core::ratelimit::TokenBucket;
use pqdag_core::Budget;

/// Undecided submissions one client key may have at this node (half the node's admission
/// slots, so two clients at least always get in).
pub(super) const CLIENT_INFLIGHT_PER_KEY_MAX: u32 = 4_096;
/// Submissions per second one client key may make at this node, with a burst of twice that:
/// 4x the design card's 5 000 vertices/s for a whole cluster.
pub(super) const CLIENT_SUBMIT_BUDGET: Budget = Budget { per_second: 20_000, burst: 40_000 };

/// Bytes of undecided submissions (see [`submission_bytes`]) all clients together may hold at
/// this node: their payloads live in this node's batch and undecided own vertices until the
/// decision. 64 MiB is ~13 s of the 10 000 payloads/s of 512 B three nodes of the 2-core VM
/// decide, so only payloads near the 64 KiB maximum, in bulk, ever meet it.
pub(super) const CLIENT_INFLIGHT_BYTES_MAX: u64 = 64 << 20;
/// Bytes of undecided submissions one client key may hold at this node (half the node's, so
/// two clients at least always get in).
pub(super) const CLIENT_INFLIGHT_BYTES_PER_KEY_MAX: u64 = CLIENT_INFLIGHT_BYTES_MAX / 2;

/// What one submission weighs against the byte quotas: its payload, its conflict keys, and a
/// transaction's fixed share of the records that carry it.
pub(super) fn submission_bytes(payload: usize, keys: usize) -> u64 {
    (payload + 32 * keys + 64) as u64
}

/// Why a submission was refused by its client's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuotaRefusal {
    /// The client already has this many undecided submissions here.
    InFlight(u32),
    /// The client's undecided submissions here already weigh this many bytes.
    Bytes(u64),
    /// All clients' undecided submissions here already weigh this many bytes.
    NodeBytes(u64),
    /// The client submits faster than [`CLIENT_SUBMIT_BUDGET`].
    Rate,
}

impl std::fmt::Display for QuotaRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaRefusal::InFlight(n) => write!(f, "client quota: {n} submissions of this client undecided at this node (at most {CLIENT_INFLIGHT_PER_KEY_MAX}); retry when some are decided"),
            QuotaRefusal::Bytes(b) => write!(f, "client quota: {b} bytes of this client's submissions undecided at this node (at most {CLIENT_INFLIGHT_BYTES_PER_KEY_MAX}); retry when some are decided"),
            QuotaRefusal::NodeBytes(b) => write!(f, "{b} bytes of submissions undecided at this node (at most {CLIENT_INFLIGHT_BYTES_MAX}); retry later"),
            QuotaRefusal::Rate => write!(f, "client quota: more than {} submissions/s from this client at this node; retry later", CLIENT_SUBMIT_BUDGET.per_second),
        }
    }
}

/// The quotas of every client key of one gateway.
#[derive(Debug, Default)]
pub(super) struct ClientQuotas {
    /// Undecided submissions and their bytes, per client key.
    inflight: HashMap<[u8; 32], (u32, u64)>,
    rate: HashMap<[u8; 32], TokenBucket>,
    /// Bytes of every client's undecided submissions.
    bytes: u64,
}

impl ClientQuotas {
    /// Admits one submission of `key` weighing `bytes` (see [`submission_bytes`]) at `now_us`
    /// (counted in flight until [`Self::release`] with the same weight), or says which quota
    /// it is over. A refusal costs nothing. A client with nothing in flight is never refused
    /// for its own bytes (one payload of the largest size always fits its quota).
    pub(super) fn admit(&mut self, key: [u8; 32], bytes: u64, now_us: u64) -> Result<(), QuotaRefusal> {
        let (n, held) = self.inflight.get(&key).copied().unwrap_or((0, 0));
        if n >= CLIENT_INFLIGHT_PER_KEY_MAX {
            return Err(QuotaRefusal::InFlight(n));
        }
        if n > 0 && held + bytes > CLIENT_INFLIGHT_BYTES_PER_KEY_MAX {
            return Err(QuotaRefusal::Bytes(held));
        }
        if self.bytes > 0 && self.bytes + bytes > CLIENT_INFLIGHT_BYTES_MAX {
            return Err(QuotaRefusal::NodeBytes(self.bytes));
        }
        if !self.rate.entry(key).or_default().take(CLIENT_SUBMIT_BUDGET, now_us, 1) {
            return Err(QuotaRefusal::Rate);
        }
        let e = self.inflight.entry(key).or_default();
        e.0 += 1;
        e.1 += bytes;
        self.bytes += bytes;
        Ok(())
    }

    /// One admitted submission of `key` weighing `bytes` was decided, or refused after
    /// admission.
    pub(super) fn release(&mut self, key: [u8; 32], bytes: u64) {
        if let Some((n, held)) = self.inflight.get_mut(&key) {
            debug_assert!(*n > 0 && *held >= bytes, "released more than admitted");
            *n = n.saturating_sub(1);
            *held = held.saturating_sub(bytes);
            debug_assert!(self.bytes >= bytes, "the total covers every key's bytes");
            self.bytes = self.bytes.saturating_sub(bytes);
            if *n == 0 {
                debug_assert_eq!(*held, 0, "no submission in flight weighs nothing");
                self.inflight.remove(&key);
            }
        }
    }

    /// Bytes of every client's undecided submissions (the `bounded` metric family).
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Undecided submissions of `key` here.
    #[cfg(test)]
    fn inflight(&self, key: &[u8; 32]) -> u32 {
        self.inflight.get(key).map_or(0, |e| e.0)
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
            assert_eq!(q.admit(a, 100, t), Ok(()));
            t += 100;
        }
        assert_eq!(q.admit(a, 100, t), Err(QuotaRefusal::InFlight(CLIENT_INFLIGHT_PER_KEY_MAX)));
        assert_eq!(q.admit(b, 100, t), Ok(()), "another client still gets in");
        q.release(a, 100);
        assert_eq!(q.admit(a, 100, t), Ok(()), "a decision frees a slot");
        assert_eq!(q.inflight(&a), CLIENT_INFLIGHT_PER_KEY_MAX);
        for _ in 0..CLIENT_INFLIGHT_PER_KEY_MAX {
            q.release(a, 100);
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
            match q.admit(a, 100, 1_000) {
                Ok(()) => {
                    admitted += 1;
                    q.release(a, 100);
                }
                Err(e) => assert_eq!(e, QuotaRefusal::Rate),
            }
        }
        assert_eq!(admitted, CLIENT_SUBMIT_BUDGET.burst);
        // 10 ms later: per_second / 100 more.
        let mut more = 0u64;
        while q.admit(a, 100, 11_000).is_ok() {
            q.release(a, 100);
            more += 1;
        }
        assert_eq!(more, CLIENT_SUBMIT_BUDGET.per_second / 100);
    }

    /// Payloads of the largest size: one client meets its byte quota long before its count
    /// quota, another client still gets in, the node's total bounds all clients together, a
    /// decision frees its bytes, and the total counts bytes, not slots.
    #[test]
    fn bytes_bound_large_payloads_per_client_and_per_node() {
        let big = submission_bytes(pqdag_wire::limits::PAYLOAD_BYTES_MAX, 1);
        let mut q = ClientQuotas::default();
        let mut t = 0u64;
        let admit_until_refused = |q: &mut ClientQuotas, k: [u8; 32], t: &mut u64| {
            let mut n = 0u64;
            loop {
                *t += 100;
                match q.admit(k, big, *t) {
                    Ok(()) => n += 1,
                    Err(e) => return (n, e),
                }
            }
        };
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let (n, e) = admit_until_refused(&mut q, a, &mut t);
        assert_eq!(n, CLIENT_INFLIGHT_BYTES_PER_KEY_MAX / big, "a's bytes, not its count, stop it");
        assert!(matches!(e, QuotaRefusal::Bytes(_)), "{e}");
        assert!(n < u64::from(CLIENT_INFLIGHT_PER_KEY_MAX));
        let (m, e) = admit_until_refused(&mut q, b, &mut t);
        assert!(m > 0, "another client still gets in");
        assert!(matches!(e, QuotaRefusal::Bytes(_) | QuotaRefusal::NodeBytes(_)), "{e}");
        assert!(q.bytes() <= CLIENT_INFLIGHT_BYTES_MAX, "the node's total holds: {}", q.bytes());
        assert!(matches!(q.admit(c, big, t + 100), Err(QuotaRefusal::NodeBytes(_))), "a third client meets the node's total");
        // The total counts bytes, not slots: a small submission still fits under it.
        let small = submission_bytes(16, 1);
        assert_eq!(q.admit(c, small, t + 200), Ok(()));
        q.release(c, small);
        q.release(a, big);
        assert_eq!(q.admit(c, big, t + 300), Ok(()), "a decision frees its bytes for anyone");
        for _ in 0..n - 1 {
            q.release(a, big);
        }
        assert_eq!(q.inflight(&a), 0);
        for _ in 0..m {
            q.release(b, big);
        }
        q.release(c, big);
        assert_eq!(q.bytes(), 0, "every byte released");
    }
}
