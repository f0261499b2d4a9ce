//! Per-peer request budgets (issue 14, hole 5): deterministic token buckets, time passed in
//! (microseconds, the core's clock), integer arithmetic only, so the simulator can replay them.
//! Owns [`RateLimits`] (one bucket per peer per [`RequestKind`]) and the budgets; calls nothing.
//!
//! What a peer's request costs this node: a query costs a signature (~120 us) and a strong-
//! preference walk per id; a fetch costs a map lookup and possibly a store read per id; a
//! history-sync request a store range scan. Each is charged to the asking peer's bucket; a
//! request over budget is dropped (its stream is reset) and the peer gets a strike (at most one
//! per [`STRIKE_INTERVAL_US`]), which the shell reports to the core as
//! [`crate::Misbehaviour::Flooding`]. An excluded peer gets a budget four times smaller, never
//! none: an honest node can be excluded for being slow, and still has to catch up.
//!
//! The budgets are about twice what an honest peer can ask for (see `docs/architecture.md`,
//! "Bounds on what a peer can make a node hold or spend"):
//! * queries: an honest node launches at most one poll per `poll_interval_us` (>= 10 ms in the
//!   engine: 100 polls/s) with each peer in the sample at most once, and keeps at most
//!   `polls_in_flight_max` (8) open, so it asks one peer at most 100 queries/s per shard,
//!   whatever the vertex rate (ids are batched into the poll: at 5000 vertices/s cluster-wide
//!   a poll carries ~50-100 ids), and at most 8 at once (its open polls). Budget 200/s, burst 64
//!   (400 until 2026-12-05: at 100 nodes, 20 flooders' bursts alone were 8 000 answered
//!   queries, ~1.8 s of every honest core, before the first drop and strike). A query over
//!   budget also meters the sender's streams ([`STREAM_METER_HOLD_US`]).
//! * fetches, charged per id asked: a node fetching a peer's history asks up to 1024 ids per
//!   history-sync reply, at most 20 replies/s per peer (the sync budget), and verifies at most
//!   ~16 000 vertices/s per core anyway. Budget 32 768 ids/s, burst 65 536 (64 full requests).
//! * history sync: an honest node walks one peer at a time, one request in flight, 1024 ids
//!   each, 2 s apart once caught up. Budget 20/s, burst 40 (40 000 ids/s of history walked).
//! * alerts: verifying one costs up to three ML-DSA verifies (the reporter's signature and the
//!   two signed messages of its proof), and a reporter can sign new ones as fast as it signs.
//!   An honest node sends one alert per peer it excludes, when it excludes it, per shard: a
//!   burst when many liars are excluded at once (up to a third of the members), rare otherwise.
//!   Budget 8/s, burst 128 (at most ~24 verifies a second from one peer once its burst is
//!   spent; a larger cluster excluding more than 128 peers in one moment would charge an
//!   honest reporter a strike, a score, never a proof).

/// What a peer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A poll query: answering costs a signature.
    Query,
    /// A vertex fetch, charged per id asked.
    Fetch,
    /// A history-sync request (a store range scan).
    Sync,
    /// A gossiped alert (up to three signature verifies).
    Alert,
}

impl RequestKind {
    /// Every kind, in bucket order.
    pub const ALL: [RequestKind; 4] = [RequestKind::Query, RequestKind::Fetch, RequestKind::Sync, RequestKind::Alert];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Query => "query",
            RequestKind::Fetch => "fetch",
            RequestKind::Sync => "sync",
            RequestKind::Alert => "alert",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The budget of a peer in good standing.
    pub fn budget(self) -> Budget {
        match self {
            RequestKind::Query => QUERY_BUDGET,
            RequestKind::Fetch => FETCH_BUDGET,
            RequestKind::Sync => SYNC_BUDGET,
            RequestKind::Alert => ALERT_BUDGET,
        }
    }

    /// The budget of an excluded peer: a quarter (rounded up), never zero.
    pub fn excluded_budget(self) -> Budget {
        let b = self.budget();
        Budget { per_second: b.per_second.div_ceil(EXCLUDED_DIVISOR), burst: b.burst.div_ceil(EXCLUDED_DIVISOR) }
    }
}

/// A refill rate and a bucket size, in request units (a fetch: ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Units added per second.
    pub per_second: u64,
    /// Most units held (what a peer may spend at once after being quiet).
    pub burst: u64,
}

/// Queries per peer per shard: 2x the most an honest node can ask (100/s).
pub const QUERY_BUDGET: Budget = Budget { per_second: 200, burst: 64 };
/// Fetched ids per peer per shard.
pub const FETCH_BUDGET: Budget = Budget { per_second: 32_768, burst: 65_536 };
/// History-sync requests per peer per shard.
pub const SYNC_BUDGET: Budget = Budget { per_second: 20, burst: 40 };
/// Alerts per peer per shard: an honest node sends one per peer it excludes.
pub const ALERT_BUDGET: Budget = Budget { per_second: 8, burst: 128 };
/// An excluded peer's budgets are this many times smaller.
/// A quarter, not less: an excluded honest node (slow, or behind) walks history at 5 syncs/s of
/// 1024 ids per peer, 10 000 ids/s with two peers, still above a 5000 vertices/s cluster.
pub const EXCLUDED_DIVISOR: u64 = 4;
/// At most one strike per peer per this interval (a flood is one offence per interval, not one
/// per dropped request). A quarter of a second: a peer over budget for 0.5 s has three strikes
/// (0.6 > `EXCLUDE_SCORE`) and is excluded at the next exclusion refresh. With one second a
/// query flooder at 6x the budget kept every honest core of a 30-node cluster ~93 % busy for
/// 2.4 s before it was excluded (`docs/simulator.md`, `query-flood`). No honest request has been
/// dropped by a budget in any simulated run (`honest_rate_limited` 0 over 10 000 `sim-faults`
/// seeds and every `sim-soak` strategy), so honest peers are never struck either way.
pub const STRIKE_INTERVAL_US: u64 = 250_000;

/// How long a peer stays metered ([`RateLimits::is_metered`]) after its last query over
/// budget. While metered, the transport grants it new bidirectional streams (queries, fetches,
/// history sync) only at [`stream_credit`]'s rate, so its queries over budget are never sent:
/// a budget alone drops them unread, but each still cost its ~5 KB of bytes, and 20 flooders of
/// 100 nodes at 1 250 queries/s each cost every honest core ~1 s of CPU a second on bytes alone
/// (`docs/simulator.md`, `query-flood`). Long, so a flooder's next unmetered burst (at most the
/// transport's `BI_STREAMS_MAX` streams, then dropped and metered again) is rare; an honest
/// peer is never metered (it asks at most half its budget; the simulator's
/// `honest_stream_metered` is 0 in every run).
pub const STREAM_METER_HOLD_US: u64 = 30_000_000;

/// The bidirectional-stream credit of a metered peer: its query budget's rate (what the shard
/// would serve anyway, so credit never starves a request the budget admits), and a burst of a
/// tenth of a second of it (at least 4): the most new streams it may hold unused.
pub fn stream_credit(excluded: bool) -> Budget {
    let q = if excluded { RequestKind::Query.excluded_budget() } else { RequestKind::Query.budget() };
    Budget { per_second: q.per_second, burst: (q.per_second / 10).max(4) }
}

/// Micro-units per unit: the bucket level is kept in millionths so refills are exact integers.
const SCALE: u64 = 1_000_000;

/// One token bucket. Starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Level in micro-units; [`UNUSED`] until first used (then full). A sentinel rather than an
    /// `Option` (16 B a bucket instead of 24; a 1000-node simulation holds 20 million of them):
    /// a level is at most its cap, and a cap that saturates to `u64::MAX` reads the same full.
    level: u64,
    at_us: u64,
}

/// [`TokenBucket::level`] of a bucket never used: full.
const UNUSED: u64 = u64::MAX;
/// [`RateLimits::last_strike`] of a peer never struck.
const NEVER: u64 = u64::MAX;

impl Default for TokenBucket {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenBucket {
    /// A full bucket (filled on first use).
    pub const fn new() -> Self {
        TokenBucket { level: UNUSED, at_us: 0 }
    }

    /// An empty bucket at `now` (it refills from then on).
    pub const fn empty(now: u64) -> Self {
        TokenBucket { level: 0, at_us: now }
    }

    /// Takes `cost` units at `now` if the bucket holds them under `budget`; a bucket above the
    /// budget's burst (the peer's budget shrank) is clamped to it first.
    pub fn take(&mut self, budget: Budget, now: u64, cost: u64) -> bool {
        let cap = budget.burst.saturating_mul(SCALE);
        let level = if self.level == UNUSED { cap } else { self.level.saturating_add(now.saturating_sub(self.at_us).saturating_mul(budget.per_second)).min(cap) };
        self.at_us = self.at_us.max(now);
        let want = cost.saturating_mul(SCALE);
        if level >= want {
            self.level = level - want;
            true
        } else {
            self.level = level;
            false
        }
    }
}

/// What [`RateLimits::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within budget: serve it.
    Allowed,
    /// Over budget: drop it. `strike`: also charge the peer (first drop in a strike interval).
    Dropped {
        /// Report [`crate::Misbehaviour::Flooding`] to the core.
        strike: bool,
    },
}

/// The buckets of every peer of one shard.
#[derive(Debug, Clone)]
pub struct RateLimits {
    buckets: Vec<[TokenBucket; RequestKind::ALL.len()]>,
    /// When each peer was last given a strike ([`NEVER`]: never).
    last_strike: Vec<u64>,
    /// Until when each peer is metered (see [`STREAM_METER_HOLD_US`]; 0: never was).
    metered_until: Vec<u64>,
    /// Each peer's stream credit while metered (the simulator's model of the transport's).
    credit: Vec<TokenBucket>,
}

impl RateLimits {
    /// Full buckets for `peers` peers (indexed as the caller indexes its members).
    pub fn new(peers: usize) -> Self {
        RateLimits {
            buckets: vec![[TokenBucket::new(); RequestKind::ALL.len()]; peers],
            last_strike: vec![NEVER; peers],
            metered_until: vec![0; peers],
            credit: vec![TokenBucket::new(); peers],
        }
    }

    /// Whether `peer`'s new bidirectional streams are metered at `now`: it sent a query over
    /// budget within the last [`STREAM_METER_HOLD_US`].
    pub fn is_metered(&self, peer: usize, now: u64) -> bool {
        self.metered_until.get(peer).is_some_and(|&t| now < t)
    }

    /// Whether `peer` may open one more bidirectional stream at `now` (taking a credit): always
    /// when not metered, else within [`stream_credit`]. What the engine's transport enforces
    /// with QUIC stream credit (`MAX_STREAMS`), so a refused stream is never sent; the
    /// simulator's network asks this before it carries a query.
    ///
    /// Refused, the peer asked for more than the credit grants: that is what a query over
    /// budget is, so it is treated as one ([`Self::over_credit`]).
    pub fn stream_credit(&mut self, peer: usize, excluded: bool, now: u64) -> Admission {
        if !self.is_metered(peer, now) {
            return Admission::Allowed;
        }
        let Some(b) = self.credit.get_mut(peer) else { return Admission::Dropped { strike: false } };
        if b.take(stream_credit(excluded), now, 1) {
            return Admission::Allowed;
        }
        self.over_credit(peer, now)
    }

    /// A metered peer used up its stream credit and wants more (the engine's transport saw it
    /// hold no unused credit when the next was due): it asks for more than its query budget,
    /// which an honest peer never does (at most half of it), so it is charged as a query over
    /// budget: the meter renewed and a strike per [`STRIKE_INTERVAL_US`]. Without it a metered
    /// flooder, held to exactly its budget, was never struck again and never excluded: 20 of
    /// 100 nodes kept every honest core ~90 % busy answering their budgets (`docs/simulator.md`).
    pub fn over_credit(&mut self, peer: usize, now: u64) -> Admission {
        if peer >= self.buckets.len() {
            return Admission::Dropped { strike: false };
        }
        self.dropped(peer, RequestKind::Query, now)
    }

    /// Charges `cost` units of `kind` to `peer` at `now` (its excluded budget when `excluded`).
    /// An unknown peer index is refused without a strike.
    pub fn admit(&mut self, peer: usize, kind: RequestKind, cost: u64, excluded: bool, now: u64) -> Admission {
        let Some(b) = self.buckets.get_mut(peer) else { return Admission::Dropped { strike: false } };
        let budget = if excluded { kind.excluded_budget() } else { kind.budget() };
        if b[kind.index()].take(budget, now, cost) {
            return Admission::Allowed;
        }
        self.dropped(peer, kind, now)
    }

    /// A request of `peer` (a known index) was over budget at `now`: meters a query's sender,
    /// and strikes at most once per interval.
    fn dropped(&mut self, peer: usize, kind: RequestKind, now: u64) -> Admission {
        if kind == RequestKind::Query {
            let until = &mut self.metered_until[peer];
            if *until <= now {
                // Metering starts with no credit held: the flood already spent it.
                self.credit[peer] = TokenBucket::empty(now);
            }
            *until = now + STREAM_METER_HOLD_US;
        }
        let last = &mut self.last_strike[peer];
        let strike = *last == NEVER || now >= *last + STRIKE_INTERVAL_US;
        if strike {
            *last = now;
        }
        Admission::Dropped { strike }
    }
}
