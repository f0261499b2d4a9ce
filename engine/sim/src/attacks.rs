//! Byzantine strategies that attack through messages of their own, not only by filtering what
//! their node's honest core sends: framing by replayed queries, conflict-set spam, `Unknown`
//! votes, vertex and query floods, backdated double spends, selective lying, forged alerts.
//! Each is a [`Behaviour`] of the coalition; the Byzantine nodes sign with their own keys, build
//! only public `pqdag-wire` messages, and learn only from what their nodes received.
//!
//! Owns each strategy's coalition state (frames in progress, observed conflict keys, own tips).
//! Calls nothing but the signer of the node it acts for.

use std::collections::VecDeque;
use pqdag_core::{IdHashMap as HashMap, IdHashSet as HashSet};
use std::sync::Arc;

use pqdag_core::{ConflictKey, Domain, NodeId, Signer, VertexId};
use pqdag_wire::{Evidence, Query, Response, Vertex, Vote};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::adversary::{flipped, Behaviour, Ctx, Outgoing, Tick};
use crate::network::Msg;
use crate::shell::MacSigner;

/// Members a set spammer signs on one conflict key per tick.
pub(crate) const SPAM_MEMBERS: usize = 72;
/// Tick period of the set spammer, us (a new key spammed twice a second per node).
pub(crate) const SPAM_TICK_US: u64 = 500_000;
/// Vertices a flooder sends per tick ([`FLOOD_TICK_US`]).
pub(crate) const FLOOD_VERTICES_PER_TICK: usize = 10;
/// Queries a flooder sends to every honest node per tick: 1 250 a second, about what the real
/// `engine run --byzantine query-flood` signs on this machine (~1 100 a second) and six times
/// the per-peer query budget (`pqdag_core::ratelimit::QUERY_BUDGET`, 200 a second).
pub(crate) const FLOOD_QUERIES_PER_TICK: usize = 25;
/// Tick period of the floods, us (50 ticks a second).
pub(crate) const FLOOD_TICK_US: u64 = 20_000;

/// A vertex created and signed by `me`.
pub(crate) fn signed_vertex(signer: &MacSigner, me: NodeId, parents: Vec<VertexId>, payload: Vec<u8>, keys: Vec<ConflictKey>, timestamp_ms: u64) -> Arc<Vertex> {
    let mut v = Vertex::new_unsigned(parents, payload, keys, timestamp_ms, me);
    v.signature = signer.sign(Domain::Vertex, v.signed_bytes());
    Arc::new(v)
}

/// A query of `me` about `ids`, signed. Its low byte is the shard it reaches at the victim (and
/// whose answer reaches `me`'s same shard).
pub(crate) fn signed_query(signer: &MacSigner, me: NodeId, query_id: u64, ids: Vec<VertexId>) -> Arc<Query> {
    let mut q = Query { query_id, requester: me, ids, signature: Vec::new() };
    q.signature = signer.sign(Domain::Query, &q.signed_bytes());
    Arc::new(q)
}

/// `msg` to every honest node.
fn to_honest(ctx: &Ctx<'_>, msg: &Msg) -> Vec<Outgoing> {
    (0..ctx.honest).map(|to| Outgoing { to, msg: msg.clone() }).collect()
}

/// Random bytes.
fn random_bytes(ctx: &mut Ctx<'_>, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    ctx.rng.fill(&mut b[..]);
    b
}

/// Honest-made conflict keys a strategy saw go by (in arrival order, each once).
#[derive(Default)]
struct KeyWatch {
    seen: HashSet<ConflictKey>,
    queue: VecDeque<ConflictKey>,
}

impl KeyWatch {
    /// Notes the conflict keys of `msg` if it is a vertex created by an honest node.
    fn observe(&mut self, ctx: &Ctx<'_>, msg: &Msg) {
        let vs: Vec<&Arc<Vertex>> = match msg {
            Msg::Vertex(v) => vec![v],
            Msg::Reply(vs) => vs.iter().collect(),
            _ => return,
        };
        for v in vs {
            if !ctx.ids[..ctx.honest].contains(&v.creator) {
                continue;
            }
            for k in &v.conflict_keys {
                if self.seen.insert(*k) {
                    self.queue.push_back(*k);
                }
            }
        }
    }

    /// The next key to attack, or a fresh one that a colluding client submits to an honest
    /// node now (recorded in `tick`).
    fn next(&mut self, ctx: &mut Ctx<'_>, tick: &mut Tick) -> ConflictKey {
        if let Some(k) = self.queue.pop_front() {
            return k;
        }
        let mut k = [0u8; 32];
        ctx.rng.fill(&mut k);
        let key = ConflictKey(k);
        self.seen.insert(key);
        let node = ctx.rng.random_range(0..ctx.honest.max(1));
        tick.submits.push((node, vec![key]));
        key
    }
}

/// Where one framing attempt stands.
#[derive(PartialEq, Eq)]
enum Stage {
    /// The query went out; waiting for the victim's `Unknown`.
    Asked { at: u64 },
    /// The `Unknown` is in and the vertex was sent; the same query goes again next tick.
    Fed,
    /// Asked again; waiting for a different answer.
    Replayed { at: u64 },
}

/// One framing attempt of `attacker` against `victim`.
struct Frame {
    attacker: usize,
    victim: usize,
    vertex: Arc<Vertex>,
    query: Arc<Query>,
    first: Option<Response>,
    stage: Stage,
}

/// Framing by replay (see [`crate::Strategy::ReplayQueries`]): two signed answers of one honest
/// node to one query id, honestly different because the node learnt the vertex in between, are
/// gossiped as proof of conflicting responses.
#[derive(Default)]
pub(crate) struct ReplayQueries {
    frames: Vec<Frame>,
    next_victim: usize,
    seq: u64,
}

impl Behaviour for ReplayQueries {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(50_000 + node as u64)
    }

    fn tick_period_us(&self) -> u64 {
        100_000
    }

    fn received(&mut self, ctx: Ctx<'_>, from: usize, msg: &Msg) -> Vec<Outgoing> {
        let Msg::Response(r) = msg else { return Vec::new() };
        let me = ctx.me.index;
        let Some(i) = self.frames.iter().position(|f| f.attacker == me && f.victim == from && f.query.query_id == r.query_id) else { return Vec::new() };
        let f = &mut self.frames[i];
        match (&f.first, &f.stage) {
            (None, Stage::Asked { .. }) => {
                if r.votes.iter().all(|&b| b == Vote::Unknown as u8) {
                    f.first = Some((**r).clone());
                    f.stage = Stage::Fed;
                    return vec![Outgoing { to: from, msg: Msg::Vertex(f.vertex.clone()) }];
                }
                Vec::new()
            }
            (Some(a), Stage::Replayed { .. }) if a.votes != r.votes => {
                let accused = ctx.ids[from];
                let ev = Arc::new(Evidence::ConflictingResponses { a: a.clone(), b: (**r).clone() });
                self.frames.swap_remove(i);
                (0..ctx.nodes).filter(|&t| t != from && t != me).map(|to| Outgoing { to, msg: Msg::Alert(accused, ev.clone()) }).collect()
            }
            _ => Vec::new(),
        }
    }

    fn tick(&mut self, mut ctx: Ctx<'_>) -> Tick {
        let me = ctx.me.index;
        let now = ctx.now;
        let mut tick = Tick::default();
        // Give up on attempts that got no usable answer within a second.
        self.frames.retain(|f| f.attacker != me || !matches!(f.stage, Stage::Asked { at } | Stage::Replayed { at } if now > at + 1_000_000));
        for f in self.frames.iter_mut().filter(|f| f.attacker == me) {
            if f.stage == Stage::Fed {
                f.stage = Stage::Replayed { at: now };
                tick.sends.push(Outgoing { to: f.victim, msg: Msg::query(f.query.clone()) });
            }
        }
        if self.frames.iter().any(|f| f.attacker == me) || ctx.honest == 0 {
            return tick;
        }
        let victim = self.next_victim % ctx.honest;
        self.next_victim += 1;
        self.seq += 1;
        let payload = random_bytes(&mut ctx, 16);
        let vertex = signed_vertex(ctx.me.signer, ctx.me.id, vec![ctx.me.core.genesis_id()], payload, Vec::new(), now / 1000);
        let query = signed_query(ctx.me.signer, ctx.me.id, (1 << 62) | (self.seq << 8), vec![vertex.id]);
        tick.sends.push(Outgoing { to: victim, msg: Msg::query(query.clone()) });
        self.frames.push(Frame { attacker: me, victim, vertex, query, first: None, stage: Stage::Asked { at: now } });
        tick
    }
}

/// Conflict-set spam (see [`crate::Strategy::SetSpam`]). The coalition spams one key per
/// [`SPAM_TICK_US`], its nodes taking turns (whichever ticks first).
#[derive(Default)]
pub(crate) struct SetSpam {
    keys: KeyWatch,
    next_at: u64,
}

impl Behaviour for SetSpam {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(50_000 + node as u64)
    }

    fn tick_period_us(&self) -> u64 {
        SPAM_TICK_US
    }

    fn received(&mut self, ctx: Ctx<'_>, _from: usize, msg: &Msg) -> Vec<Outgoing> {
        self.keys.observe(&ctx, msg);
        Vec::new()
    }

    fn tick(&mut self, mut ctx: Ctx<'_>) -> Tick {
        let mut tick = Tick::default();
        if ctx.honest == 0 || ctx.now < self.next_at {
            return tick;
        }
        self.next_at = ctx.now + SPAM_TICK_US;
        let key = self.keys.next(&mut ctx, &mut tick);
        let g = ctx.me.core.genesis_id();
        let now_ms = ctx.now / 1000;
        let mut members: Vec<Arc<Vertex>> = Vec::with_capacity(SPAM_MEMBERS);
        for i in 0..SPAM_MEMBERS {
            let payload = random_bytes(&mut ctx, 16);
            // Timestamps spread around now: some members win the tie-break, some lose it.
            let ts = (now_ms + i as u64 % 7).saturating_sub(3);
            members.push(signed_vertex(ctx.me.signer, ctx.me.id, vec![g], payload, vec![key], ts));
        }
        tick.created = members.iter().map(|v| v.id).collect();
        for to in 0..ctx.honest {
            members.shuffle(ctx.rng);
            tick.sends.extend(members.iter().map(|v| Outgoing { to, msg: Msg::Vertex(v.clone()) }));
        }
        tick
    }
}

/// Answers every id `Unknown`, validly signed.
pub(crate) struct VoteUnknown;

/// `response` with every vote `Unknown`, re-signed by `signer`.
pub(crate) fn all_unknown(signer: &MacSigner, mut response: Response) -> Response {
    response.votes.iter_mut().for_each(|b| *b = Vote::Unknown as u8);
    response.signature = signer.sign(Domain::Response, &response.signed_bytes());
    response
}

impl Behaviour for VoteUnknown {
    fn respond(&mut self, ctx: Ctx<'_>, to: usize, response: Response) -> Vec<Outgoing> {
        vec![Outgoing { to, msg: Msg::Response(Box::new(all_unknown(ctx.me.signer, response))) }]
    }
}

/// Vertex flood (see [`crate::Strategy::VertexFlood`]); with `fat`, the fat flood (see
/// [`crate::Strategy::FatFlood`]): vertices of 8 transactions filling the vertex's 512 KiB
/// transaction budget.
#[derive(Default)]
pub(crate) struct VertexFlood {
    tips: HashMap<usize, VertexId>,
    fat: bool,
}

impl VertexFlood {
    /// The fat flood.
    pub(crate) fn fat() -> Self {
        Self { fat: true, ..Self::default() }
    }
}

/// A vertex of the largest size signed by `me` (`pqdag_wire::largest_batch`, stamped with
/// `stamp`).
fn signed_fat_vertex(signer: &MacSigner, me: NodeId, parents: Vec<VertexId>, stamp: &[u8], timestamp_ms: u64) -> Arc<Vertex> {
    let mut v = Vertex::with_txs(parents, pqdag_wire::largest_batch(stamp), timestamp_ms, me);
    v.signature = signer.sign(Domain::Vertex, v.signed_bytes());
    Arc::new(v)
}

impl Behaviour for VertexFlood {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(50_000 + node as u64)
    }

    fn tick_period_us(&self) -> u64 {
        FLOOD_TICK_US
    }

    fn tick(&mut self, mut ctx: Ctx<'_>) -> Tick {
        let mut tick = Tick::default();
        let g = ctx.me.core.genesis_id();
        let me = ctx.me.index;
        // 500 a second either way: fat ones are ~262 MB/s, faster than the honest nodes decide
        // them, so they pile up to the creator bound.
        for i in 0..FLOOD_VERTICES_PER_TICK {
            // Alternately on genesis and on its own last vertex (a chain of its own tips).
            let parent = if i % 2 == 0 { g } else { self.tips.get(&me).copied().unwrap_or(g) };
            let payload = random_bytes(&mut ctx, 64);
            let v = if self.fat {
                signed_fat_vertex(ctx.me.signer, ctx.me.id, vec![parent], &payload, ctx.now / 1000)
            } else {
                signed_vertex(ctx.me.signer, ctx.me.id, vec![parent], payload, Vec::new(), ctx.now / 1000)
            };
            self.tips.insert(me, v.id);
            tick.created.push(v.id);
            tick.sends.extend(to_honest(&ctx, &Msg::Vertex(v)));
        }
        tick
    }
}

/// Query flood (see [`crate::Strategy::QueryFlood`]).
#[derive(Default)]
pub(crate) struct QueryFlood {
    recent: VecDeque<VertexId>,
}

impl Behaviour for QueryFlood {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(50_000 + node as u64)
    }

    fn tick_period_us(&self) -> u64 {
        FLOOD_TICK_US
    }

    fn received(&mut self, _ctx: Ctx<'_>, _from: usize, msg: &Msg) -> Vec<Outgoing> {
        if let Msg::Vertex(v) = msg {
            self.recent.push_back(v.id);
            if self.recent.len() > 256 {
                self.recent.pop_front();
            }
        }
        Vec::new()
    }

    fn tick(&mut self, ctx: Ctx<'_>) -> Tick {
        let mut tick = Tick::default();
        for to in 0..ctx.honest {
            for _ in 0..FLOOD_QUERIES_PER_TICK {
                // Known ids (a vote each) and made-up ones (each sends the victim fetching).
                let mut ids: Vec<VertexId> = Vec::with_capacity(8);
                for _ in 0..8 {
                    if !self.recent.is_empty() && ctx.rng.random_bool(0.5) {
                        ids.push(self.recent[ctx.rng.random_range(0..self.recent.len())]);
                    } else {
                        let mut id = [0u8; 32];
                        ctx.rng.fill(&mut id);
                        ids.push(VertexId(id));
                    }
                }
                // Every shard of the victim: each has its own budget (shard s of a node talks to
                // shard s of its peers, and the low byte of a query id is the asking shard).
                let r = ctx.rng.random::<u64>() | (1 << 63);
                let qid = (r & !0xff) | ((r >> 8) % u64::from(ctx.me.core.shard_count()));
                tick.sends.push(Outgoing { to, msg: Msg::query(signed_query(ctx.me.signer, ctx.me.id, qid, ids)) });
            }
        }
        tick
    }
}

/// Backdated double spends (see [`crate::Strategy::Backdate`]): every honest conflict key it
/// sees is spent again at once by a vertex stamped at the epoch (the earlier timestamp wins the
/// preference tie-break); with no honest key in sight a colluding client makes one.
#[derive(Default)]
pub(crate) struct Backdate {
    keys: KeyWatch,
}

impl Backdate {
    fn spend(ctx: &mut Ctx<'_>, key: ConflictKey) -> (VertexId, Vec<Outgoing>) {
        let payload = random_bytes(ctx, 16);
        let v = signed_vertex(ctx.me.signer, ctx.me.id, vec![ctx.me.core.genesis_id()], payload, vec![key], 0);
        (v.id, to_honest(ctx, &Msg::Vertex(v)))
    }
}

impl Behaviour for Backdate {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(50_000 + node as u64)
    }

    fn received(&mut self, mut ctx: Ctx<'_>, _from: usize, msg: &Msg) -> Vec<Outgoing> {
        self.keys.observe(&ctx, msg);
        let mut out = Vec::new();
        while let Some(k) = self.keys.queue.pop_front() {
            out.extend(Self::spend(&mut ctx, k).1);
        }
        out
    }

    fn tick(&mut self, mut ctx: Ctx<'_>) -> Tick {
        let mut tick = Tick::default();
        if ctx.honest == 0 {
            return tick;
        }
        // Nothing seen since the last tick: a colluding client submits, the coalition races it.
        let key = self.keys.next(&mut ctx, &mut tick);
        let (id, sends) = Self::spend(&mut ctx, key);
        tick.created.push(id);
        tick.sends = sends;
        tick
    }
}

/// Honest to the first half of the honest nodes; to the others flipped votes or silence.
pub(crate) struct Selective;

impl Behaviour for Selective {
    fn respond(&mut self, ctx: Ctx<'_>, to: usize, response: Response) -> Vec<Outgoing> {
        if to < ctx.honest / 2 || to >= ctx.honest {
            return vec![Outgoing { to, msg: Msg::Response(Box::new(response)) }];
        }
        if ctx.rng.random_bool(0.5) {
            vec![Outgoing { to, msg: Msg::Response(Box::new(flipped(ctx.me.signer, response))) }]
        } else {
            Vec::new()
        }
    }
}

/// Forged alerts (see [`crate::Strategy::ForgeAlerts`]): "conflicting responses" of an honest
/// node, signed with the attacker's key instead of the victim's.
pub(crate) struct ForgeAlerts;

impl Behaviour for ForgeAlerts {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(50_000 + node as u64)
    }

    fn tick_period_us(&self) -> u64 {
        500_000
    }

    fn tick(&mut self, ctx: Ctx<'_>) -> Tick {
        let mut tick = Tick::default();
        if ctx.honest == 0 {
            return tick;
        }
        let victim = ctx.rng.random_range(0..ctx.honest);
        let accused = ctx.ids[victim];
        let mk = |vote: Vote| {
            let mut r = Response { query_id: 1 << 8, responder: accused, ids_digest: [7u8; 32], votes: vec![vote as u8], round: 0, lock_ages: Vec::new(), signature: Vec::new() };
            r.signature = ctx.me.signer.sign(Domain::Response, &r.signed_bytes());
            r
        };
        let ev = Arc::new(Evidence::ConflictingResponses { a: mk(Vote::Yes), b: mk(Vote::No) });
        // And a forged equivocation: two vertices "by" the victim spending one key, signed with
        // the attacker's key (the only kind of evidence the core still accepts as proof).
        let g = ctx.me.core.genesis_id();
        let key = ConflictKey([0xEE; 32]);
        let fake = |tag: u8| {
            let mut v = Vertex::new_unsigned(vec![g], vec![tag], vec![key], 1, accused);
            v.signature = ctx.me.signer.sign(Domain::Vertex, v.signed_bytes());
            v
        };
        let eq = Arc::new(Evidence::Equivocation { a: fake(1), b: fake(2) });
        tick.sends = (0..ctx.honest)
            .filter(|&t| t != victim)
            .flat_map(|to| [Outgoing { to, msg: Msg::Alert(accused, ev.clone()) }, Outgoing { to, msg: Msg::Alert(accused, eq.clone()) }])
            .collect();
        tick
    }
}

/// Alert flood (see [`crate::Strategy::AlertFlood`]): every 2 ms, two fresh vertices of its own
/// spending one key (a valid equivocation proof against itself, signed with its own key) to
/// every honest node: 500 alerts a second from each member playing it.
#[derive(Default)]
pub(crate) struct AlertFlood {
    n: u64,
}

impl Behaviour for AlertFlood {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(20_000 + node as u64)
    }

    fn tick_period_us(&self) -> u64 {
        2_000
    }

    fn tick(&mut self, ctx: Ctx<'_>) -> Tick {
        let mut tick = Tick::default();
        self.n += 1;
        let g = ctx.me.core.genesis_id();
        let key = ConflictKey([0xAF; 32]);
        let own = |tag: u64| {
            let mut v = Vertex::new_unsigned(vec![g], tag.to_le_bytes().to_vec(), vec![key], 1, ctx.me.id);
            v.signature = ctx.me.signer.sign(Domain::Vertex, v.signed_bytes());
            v
        };
        let ev = Arc::new(Evidence::Equivocation { a: own(2 * self.n), b: own(2 * self.n + 1) });
        tick.sends = (0..ctx.honest).map(|to| Outgoing { to, msg: Msg::Alert(ctx.me.id, ev.clone()) }).collect();
        tick
    }
}
