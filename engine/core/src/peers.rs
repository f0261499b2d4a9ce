//! Per-peer Byzantine scoring (spec 3.7.2/3.7.3) with decay, and uniform sampling.

/// Score above which a peer is excluded from sampling and its responses ignored (3.7.2).
pub const EXCLUDE_SCORE: f64 = 0.5;
/// Half-life of scores: honest peers' occasional incidents fade (one +0.2 incident every 15 s
/// or rarer never excludes), persistent offenders stay out (with the 0.25 re-entry hysteresis).
pub const SCORE_HALF_LIFE_US: u64 = 20_000_000;
/// Queries in a peer's timeout window; more than half timing out is "excessive".
pub const PEER_TIMEOUT_WINDOW: u32 = 8;

/// A kind of misbehaviour and its weight (3.7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Misbehaviour {
    /// Bad signature: +0.5.
    InvalidSignature,
    /// Two different signed responses to one query, or votes against the alpha-majority: +0.3.
    ConflictingVotes,
    /// Most recent queries timed out: +0.2.
    ExcessiveTimeouts,
    /// Undecodable or out-of-bounds message: +0.4.
    Malformed,
    /// Two signed vertices of one creator sharing a conflict key: +1.0 (proof).
    Equivocation,
}

impl Misbehaviour {
    /// Weight added to the score.
    pub fn weight(self) -> f64 {
        match self {
            Misbehaviour::InvalidSignature => 0.5,
            Misbehaviour::ConflictingVotes => 0.3,
            Misbehaviour::ExcessiveTimeouts => 0.2,
            Misbehaviour::Malformed => 0.4,
            Misbehaviour::Equivocation => 1.0,
        }
    }
}

/// What the core knows about one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerScore {
    /// Current score (decayed lazily).
    pub score: f64,
    /// Time of the last decay.
    pub(crate) updated_us: u64,
    /// Proof of misbehaviour seen: excluded for good.
    pub convicted: bool,
    /// Queries in the current timeout window.
    pub(crate) window_queries: u32,
    /// Timeouts in the current window.
    pub(crate) window_timeouts: u32,
    /// Incidents so far.
    pub incidents: u32,
    /// Currently excluded from sampling.
    pub excluded: bool,
}

impl PeerScore {
    /// Decays the score to `now`.
    pub(crate) fn decay(&mut self, now: u64) {
        if now > self.updated_us {
            let dt = (now - self.updated_us) as f64 / SCORE_HALF_LIFE_US as f64;
            self.score *= 0.5f64.powf(dt);
            self.updated_us = now;
        }
    }
}
