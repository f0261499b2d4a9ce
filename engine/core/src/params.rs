//! Protocol parameters (spec 3.2) with validation and profiles.

use crate::error::{ConsensusError, ConsensusResult};

/// Largest sample size: responder sets are u64 bit masks.
pub const SAMPLE_SIZE_MAX: usize = 64;

/// Avalanche parameters. Times are microseconds (the core's clock unit).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// k: peers sampled per poll (spec 3.2: 10/30/40 by network size).
    pub sample_size: usize,
    /// alpha: Yes votes for a successful round; must be > k/2.
    pub alpha: usize,
    /// beta: consecutive successful rounds needed for finality (FR-005).
    pub beta: u32,
    /// Confidence needed for finality (FR-005: 0.95).
    pub finalization_threshold: f64,
    /// Rounds after which a still-processing vertex is counted as stalled.
    pub max_rounds: u32,
    /// Query timeout (FR-002: 1 s).
    pub query_timeout_us: u64,
    /// Parents per new vertex (FR-003: 2).
    pub parents: usize,
    /// Time between poll launches (rounds are pipelined, so this sets the round rate).
    pub poll_interval_us: u64,
    /// Most polls outstanding at once.
    pub polls_in_flight_max: usize,
    /// A vertex is polled only once it is this old locally, so gossip reached most responders.
    pub poll_min_age_us: u64,
    /// Whether vertices travel by relay (4.4's structured gossip: the creator sends to
    /// `gossip_neighbours` ring successors and `gossip_random` random peers, and each node
    /// that first hears a vertex passes it on the same way, ~3 copies per node). Off (the
    /// default): the creator sends its vertex once to every peer, the dissemination minimum,
    /// and nobody relays; a node whose copy was lost or withheld fetches the vertex from a
    /// peer that mentions it (a query, a child's parents, a frontier), as a partition heal
    /// already does (docs/consensus.md, "Gossip").
    pub relay: bool,
    /// Ring successors that always receive a new vertex (4.4 tier 1), with `relay`.
    pub gossip_neighbours: usize,
    /// Random peers that also receive it (4.4 tier 2), with `relay`.
    pub gossip_random: usize,
    /// Period of `Frontier` announcements (5.3 reconciliation).
    pub frontier_interval_us: u64,
    /// Peers each announcement goes to.
    pub frontier_fanout: usize,
    /// Drop the payload and signature of vertices final for this long, keeping only what
    /// consensus needs (id, parents, keys, status): ~5 KB -> ~0.3 KB per final vertex. 0 = keep
    /// everything (the simulator). The engine enables it and serves old vertices from its store.
    /// Rejected vertices are stripped on the same schedule and count toward the same bytes.
    pub strip_final_after_us: u64,
    /// Also strip the oldest whole finals, however young, while those not yet stripped hold
    /// more than this many bytes (`Vertex::heap_bytes`). The time window alone lets memory
    /// grow with the finality rate: at 2 300 one-payload vertices/s (3 nodes offered 5 000/s)
    /// 10 s held ~115 MB per node. 0 = no byte bound. Needs `strip_final_after_us` > 0.
    pub strip_final_bytes_max: usize,
    /// Forget the record of vertices final for this long: only the id stays (in a compact set,
    /// ~40 B instead of ~1 KB with its conflict set), and a decided conflict set keeps only its
    /// winner. Lookups treat a forgotten id as final; the store keeps everything. 0 = never.
    pub forget_final_after_us: u64,
    /// Hand forgotten ids and decided keys to the shell's [`crate::DecisionArchive`] (its
    /// store) this long after they were forgotten, keeping memory bounded whatever the history
    /// length (`Core::set_archive`). 0 = keep them in memory forever.
    pub archive_after_us: u64,
    /// Most forgotten ids and keys held in memory (see `archive_after_us`): past it the oldest
    /// go to the archive early, once forgotten for 2 s. The window holds a rate times
    /// `archive_after_us`: at 10 000 payloads/s, 30 s is 300 000 keys, ~50 MB of a node; the
    /// bound makes it independent of the rate. 0 = no bound.
    pub archive_entries_max: usize,
    /// Most transactions per own vertex (1: one payload per vertex, the design card's
    /// benchmark; see `batch`).
    pub max_batch: usize,
    /// Byte budget of one vertex's transactions (`tx_budget` summed), at most
    /// `VERTEX_TX_BYTES_MAX`.
    pub batch_bytes: usize,
    /// How long a batch waits for more submissions while this node is busy (it created a vertex
    /// within this long); an idle node closes at once.
    pub batch_linger_us: u64,
    /// Length of a lock round, microseconds (whole-network polls; docs/consensus.md 8d). An
    /// honest node says Yes to at most one member of a conflict set per round, so a quorum of
    /// one round's Yes is a certificate, and a lock moves to a member locked in a later round.
    /// Rounds are slots of wall-clock time (the shell passes the clock's offset); a node that
    /// switched its preference in a round abstains on that set until the next. 0: off.
    pub lock_round_us: u64,
}

impl Params {
    /// LAN profile: 20 ms rounds, beta 15; p95 finality well under 1 s (NFR-001).
    ///
    /// Confidence starts at the first round's ratio (see docs/consensus.md), so with honest
    /// responders c >= 0.95 from round 1 and finality needs beta rounds: ~15 x 20 ms + gossip.
    pub fn lan_default() -> Self {
        Params {
            sample_size: 20,
            alpha: 15,
            beta: 15,
            finalization_threshold: 0.95,
            max_rounds: 1000,
            query_timeout_us: 1_000_000,
            parents: 2,
            poll_interval_us: 20_000,
            polls_in_flight_max: 4,
            poll_min_age_us: 5_000,
            relay: false,
            gossip_neighbours: 2,
            gossip_random: 5,
            frontier_interval_us: 250_000,
            frontier_fanout: 2,
            strip_final_after_us: 0,
            strip_final_bytes_max: 0,
            forget_final_after_us: 0,
            archive_after_us: 0,
            archive_entries_max: 0,
            max_batch: 1,
            batch_bytes: pqdag_wire::limits::VERTEX_TX_BYTES_MAX,
            batch_linger_us: 5_000,
            lock_round_us: 300_000,
        }
    }

    /// WAN profile: RTTs of 50-200 ms, so more polls in flight and an older poll age.
    pub fn wan_default() -> Self {
        Params {
            poll_interval_us: 25_000,
            polls_in_flight_max: 12,
            poll_min_age_us: 150_000,
            frontier_interval_us: 500_000,
            lock_round_us: 2_000_000,
            ..Self::lan_default()
        }
    }

    /// Spec 3.2 tuning by network size, with the small-network rule k = min(k, N-1) and
    /// alpha = max(floor(k/2)+1, round(0.75 k)).
    pub fn for_network_size(n: usize) -> Self {
        Self::lan_default().scaled_to(n)
    }

    /// Applies the size rules to any profile.
    pub fn scaled_to(mut self, n: usize) -> Self {
        let k_target = if n <= 10 { 10 } else if n <= 100 { 20 } else { 30 };
        let k = k_target.min(n.saturating_sub(1)).max(1);
        self.sample_size = k;
        self.alpha = alpha_for(k);
        self
    }

    /// Checks the rules of spec 3.2 against a network of `n` nodes.
    pub fn validate(&self, n: usize) -> ConsensusResult<()> {
        let bad = |s: String| Err(ConsensusError::InvalidParams(s));
        if self.sample_size == 0 || self.sample_size > SAMPLE_SIZE_MAX {
            return bad(format!("k = {} not in 1..={SAMPLE_SIZE_MAX}", self.sample_size));
        }
        if n >= 2 && self.sample_size > n - 1 {
            return bad(format!("k = {} > peers = {}", self.sample_size, n - 1));
        }
        if 2 * self.alpha <= self.sample_size || self.alpha > self.sample_size {
            return bad(format!("alpha = {} must be in (k/2, k] with k = {}", self.alpha, self.sample_size));
        }
        if self.beta == 0 {
            return bad("beta must be >= 1".into());
        }
        if !(self.finalization_threshold > 0.0 && self.finalization_threshold <= 1.0) {
            return bad(format!("finalization threshold {} not in (0, 1]", self.finalization_threshold));
        }
        if self.query_timeout_us == 0 || self.poll_interval_us == 0 {
            return bad("timeouts and intervals must be > 0".into());
        }
        if self.parents == 0 || self.parents > pqdag_wire::limits::PARENTS_MAX {
            return bad(format!("parents = {} not in 1..={}", self.parents, pqdag_wire::limits::PARENTS_MAX));
        }
        if self.max_batch == 0 || self.max_batch > pqdag_wire::limits::TXS_MAX {
            return bad(format!("max_batch = {} not in 1..={}", self.max_batch, pqdag_wire::limits::TXS_MAX));
        }
        if self.batch_bytes == 0 || self.batch_bytes > pqdag_wire::limits::VERTEX_TX_BYTES_MAX {
            return bad(format!("batch_bytes = {} not in 1..={}", self.batch_bytes, pqdag_wire::limits::VERTEX_TX_BYTES_MAX));
        }
        if self.polls_in_flight_max == 0 || self.max_rounds == 0 {
            return bad("polls_in_flight_max and max_rounds must be >= 1".into());
        }
        if self.lock_round_us > 0 && self.lock_round_us < 4 * self.poll_interval_us {
            // A certificate needs a poll answered within one round, then a fresh quorum in the
            // same round: rounds of a few poll intervals would rarely certify anything.
            return bad(format!("lock round {} ms is shorter than 4 poll intervals ({} ms); use 0 (off) or more", self.lock_round_us / 1000, 4 * self.poll_interval_us / 1000));
        }
        Ok(())
    }
}

/// The engine's fastest poll cadence (the LAN profile's 20 ms halved): peers' query budgets
/// (`ratelimit`) assume at most 100 polls a second from each node.
pub const ENGINE_POLL_INTERVAL_US: u64 = 10_000;

/// The engine's `beta_threshold` when the cluster file names none.
pub const ENGINE_BETA: u32 = 20;

/// The engine's `sample_size` when the cluster file names none (at most N - 1 is used).
pub const ENGINE_SAMPLE_SIZE: usize = 10;

/// The engine's `alpha_threshold` when the cluster file names none (for a smaller sample,
/// [`alpha_for`] of it).
pub const ENGINE_ALPHA: usize = 8;

/// The engine's poll cadence for a sample of `k` peers when the cluster file names none: 10 ms up
/// to k = 3 (3 and 4 nodes), 20 ms at k = 4 (5 nodes), 30 ms from k = 5 (6 nodes and more).
///
/// A round costs one sign plus k remote verify+sign and k local verifies (~0.7 ms of CPU per
/// node at k = 3), whatever it carries: the interval grows with k to keep that work per second
/// roughly constant, up to 30 ms, so that beta (20) rounds take at most 0.6 s, under the 1 s
/// finality target (until 2026-12-07 it went on to 50 ms: 11 nodes and more never finalized
/// under 1 s). 4 nodes had 20 ms (finality never under 0.4 s) until their 10 ms stalls were
/// fixed: the lock rounds' stall of a 4 x 2-shard crash under double spends, then a restarted
/// node's jammed mesh (2 of the first 24 runs; 0 of the 30 runs since the shard loop yields;
/// docs/benchmark.md, "Poll cadence"; docs/operations.md, "Known limitations").
pub fn engine_poll_interval_us(k: usize) -> u64 {
    ENGINE_POLL_INTERVAL_US
        * match k {
            0..=3 => 1,
            4 => 2,
            _ => 3,
        }
}

impl Params {
    /// The sample and cadence `engine run` derives for `n` nodes from a cluster file that names
    /// none: k = [`ENGINE_SAMPLE_SIZE`] (at most N - 1) with alpha [`ENGINE_ALPHA`] (or
    /// [`alpha_for`] a smaller k), beta [`ENGINE_BETA`], the poll interval of
    /// [`engine_poll_interval_us`] for that k, a batch linger of one poll interval, at least 8
    /// polls in flight. The simulator's scaled LAN profile differs (k = 20 from 11 nodes, beta
    /// 15, 20 ms polls, a 5 ms linger, 4 in flight; its seeds and documented runs keep it);
    /// `sim --engine-params` uses this instead, so that a model run and a `bench` run of the
    /// same cluster sample and poll alike.
    pub fn with_engine_defaults(mut self, n: usize) -> Self {
        (self.sample_size, self.alpha) = sample_for(n, ENGINE_SAMPLE_SIZE, ENGINE_ALPHA);
        self.beta = ENGINE_BETA;
        self.poll_interval_us = engine_poll_interval_us(self.sample_size);
        self.batch_linger_us = self.poll_interval_us;
        self.polls_in_flight_max = self.polls_in_flight_max.max(8);
        self
    }
}

/// The sample `(k, alpha)` the engine uses for `n` nodes from a cluster file's `sample_size` and
/// `alpha_threshold`: k is at most N - 1 peers, and a sample cut down to fit gets
/// [`alpha_for`] of its size instead of the file's alpha.
pub fn sample_for(n: usize, sample_size: usize, alpha_threshold: usize) -> (usize, usize) {
    let k = sample_size.min(n.saturating_sub(1)).max(1);
    (k, if k < sample_size { alpha_for(k) } else { alpha_threshold })
}

/// alpha for a sample of k: a strict majority, about 75 % (spec: "typically 80 %"; 75 % lets
/// 3 of 4 nodes outvote one Byzantine node, appendix B scenario 2).
pub fn alpha_for(k: usize) -> usize {
    (k / 2 + 1).max((3 * k + 2) / 4).min(k.max(1))
}
