//! Admission by queueing delay: how many own submissions the gateway keeps undecided at once.
//!
//! Little's law: a submission waits about (submissions in flight) / (decisions a second). The
//! fixed bound (`CLIENT_INFLIGHT_MAX`, 131 072) let a node acknowledge, for all its clients
//! together, up to half a minute of work at the ~3 700 payloads/s one node of 4 decides on this
//! 2-core machine under overload (one client alone is held to 4 096 by its quota,
//! `quotas.rs`). Here the bound follows what the shard decides: the decisions of the last
//! seconds times [`QUEUE_TARGET_S`], never under [`INFLIGHT_FLOOR`] (a burst from idle, and
//! start-up before any decision, still gets in). What it refuses, it refuses at once as
//! `Overloaded`, before a vertex or a byte of the store is spent on it. Below capacity the
//! bound is never reached: a shard deciding 3 000 payloads a second at 0.3 s finality holds
//! ~900 in flight against a bound of 4 096 or more.

use std::time::{Duration, Instant};

/// Seconds of decisions the in-flight bound holds: a submission admitted at the bound waits
/// about this long on top of consensus' own latency.
pub(super) const QUEUE_TARGET_S: f64 = 1.0;
/// The bound never goes under this many submissions.
pub(super) const INFLIGHT_FLOOR: usize = 4_096;
/// How often the decision rate is re-measured.
const WINDOW: Duration = Duration::from_secs(1);

/// The decision rate of own submissions and the in-flight bound it gives.
pub(super) struct Admission {
    window_start: Instant,
    in_window: u64,
    /// Decisions a second, smoothed over windows (half the weight on the last).
    rate: f64,
    /// The fixed ceiling (`CLIENT_INFLIGHT_MAX`).
    ceiling: usize,
}

impl Admission {
    /// Nothing decided yet: the bound is the floor (capped by `ceiling`).
    pub(super) fn new(now: Instant, ceiling: usize) -> Self {
        Self { window_start: now, in_window: 0, rate: 0.0, ceiling }
    }

    /// `n` own submissions were decided (final or rejected) at `now`.
    pub(super) fn decided(&mut self, n: u64, now: Instant) {
        self.in_window += n;
        self.roll(now);
    }

    /// Closes the measuring window once it is a second old.
    fn roll(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.window_start);
        if age < WINDOW {
            return;
        }
        let last = self.in_window as f64 / age.as_secs_f64();
        self.rate = if self.rate == 0.0 { last } else { 0.5 * self.rate + 0.5 * last };
        self.in_window = 0;
        self.window_start = now;
    }

    /// Most own submissions to hold undecided at `now`.
    pub(super) fn bound(&mut self, now: Instant) -> usize {
        self.roll(now);
        let by_rate = (self.rate * QUEUE_TARGET_S) as usize;
        by_rate.max(INFLIGHT_FLOOR).min(self.ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_follows_the_decision_rate_above_a_floor() {
        let t0 = Instant::now();
        let mut a = Admission::new(t0, 131_072);
        assert_eq!(a.bound(t0), INFLIGHT_FLOOR, "before any decision: the floor");
        // 10 000 decisions a second for three seconds.
        for s in 1..=3u64 {
            a.decided(10_000, t0 + Duration::from_secs(s));
        }
        let b = a.bound(t0 + Duration::from_secs(3));
        assert!((9_000..=10_000).contains(&b), "about a second of decisions: {b}");
        // The load stops: the rate decays and the bound returns to the floor.
        for s in 4..=20u64 {
            a.decided(0, t0 + Duration::from_secs(s));
        }
        assert_eq!(a.bound(t0 + Duration::from_secs(20)), INFLIGHT_FLOOR);
        // Never above the fixed ceiling.
        let mut small = Admission::new(t0, 1_000);
        small.decided(1_000_000, t0 + Duration::from_secs(1));
        assert_eq!(small.bound(t0 + Duration::from_secs(1)), 1_000);
    }
}
