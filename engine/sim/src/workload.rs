//! The workload: what clients submit, to which node, when. Owns the workload PRNG stream (so a
//! change here does not shift network delays), the Poisson arrival process, conflicting pairs,
//! the submission counter and whether the workload phase is still on. Calls nothing; the facade
//! hands each submission to the shell of its node.

use pqdag_core::{ConflictKey, Event};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::SimConfig;

/// One vertex a client submits to node `node`.
pub(crate) struct Submission {
    /// The honest node it is submitted to.
    pub(crate) node: usize,
    /// Payload.
    pub(crate) payload: Vec<u8>,
    /// Conflict keys it spends.
    pub(crate) keys: Vec<ConflictKey>,
}

/// What one arrival submits.
pub(crate) enum Arrival {
    /// One plain vertex.
    One(Submission),
    /// Two vertices spending `.2` at two different nodes (a double spend, or twins: the same
    /// transaction through two nodes, as a client's retry after a lost reply).
    Pair(Submission, Submission, ConflictKey),
}

/// The client load of a run.
pub(crate) struct Workload {
    rng: ChaCha8Rng,
    rate: f64,
    conflict_ratio: f64,
    twin_ratio: f64,
    payload_bytes: usize,
    honest: usize,
    shards: u32,
    on: bool,
    submitted: u64,
}

impl Workload {
    /// The workload of `cfg`, submitting to the first `honest` nodes (the first
    /// `cfg.hot_nodes` of them when set: clients that all talk to a few nodes).
    pub(crate) fn new(cfg: &SimConfig, honest: usize) -> Self {
        let honest = if cfg.hot_nodes > 0 { cfg.hot_nodes.min(honest) } else { honest };
        Workload {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x776f_726b_6c6f_6164),
            rate: cfg.rate,
            conflict_ratio: cfg.conflict_ratio,
            twin_ratio: cfg.twin_ratio,
            payload_bytes: cfg.payload_bytes,
            honest,
            shards: cfg.shards,
            on: true,
            submitted: 0,
        }
    }

    /// Whether the workload phase is on.
    pub(crate) fn is_on(&self) -> bool {
        self.on
    }

    /// Ends the workload phase (the liveness phase follows).
    pub(crate) fn stop(&mut self) {
        self.on = false;
    }

    /// Vertices submitted so far.
    pub(crate) fn submitted(&self) -> u64 {
        self.submitted
    }

    /// Time to the next arrival (exponential gap), us, at least 1.
    pub(crate) fn next_gap_us(&mut self) -> u64 {
        let gap = (-(1.0 - self.rng.random::<f64>()).ln() / self.rate * 1e6) as u64;
        gap.max(1)
    }

    /// Draws what this arrival submits.
    pub(crate) fn arrival(&mut self) -> Arrival {
        let honest = self.honest;
        let a = self.rng.random_range(0..honest);
        let mut payload = vec![0u8; self.payload_bytes];
        self.rng.fill(&mut payload[..]);
        let conflict = self.conflict_ratio > 0.0 && honest >= 2 && self.rng.random_bool(self.conflict_ratio.min(1.0));
        // Drawn only when asked for, so runs without twins replay as before.
        let twin = !conflict && self.twin_ratio > 0.0 && honest >= 2 && self.rng.random_bool(self.twin_ratio.min(1.0));
        if !conflict && !twin {
            return Arrival::One(Submission { node: a, payload, keys: Vec::new() });
        }
        let mut b = self.rng.random_range(0..honest - 1);
        if b >= a {
            b += 1;
        }
        let mut k = [0u8; 32];
        self.rng.fill(&mut k);
        let key = ConflictKey(k);
        let first = Submission { node: a, payload: payload.clone(), keys: vec![key] };
        if !twin {
            payload[0] ^= 0xff;
        }
        Arrival::Pair(first, Submission { node: b, payload, keys: vec![key] }, key)
    }

    /// `sub` reaches its (up) node at `now`: counts it and picks its shard. Returns the shard
    /// and the core event.
    pub(crate) fn admit(&mut self, sub: Submission, now: u64) -> (u32, Event) {
        self.submitted += 1;
        let shard = self.rng.random_range(0..self.shards);
        let ev = Event::Submit { payload: sub.payload, conflict_keys: sub.keys, client_tag: self.submitted, timestamp_ms: now / 1000 };
        (shard, ev)
    }
}
