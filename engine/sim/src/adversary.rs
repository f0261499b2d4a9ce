//! The adversary: what Byzantine nodes send. The Byzantine nodes (the last ones) still run the
//! real core; a strategy ([`Behaviour`]) sees everything its node received and decides what goes
//! out instead of (or besides) what the honest core would send: any well-formed (or malformed)
//! message, to anyone, on receipt or on its own ticks. The Byzantine nodes collude: one
//! [`Adversary`] drives them all (one strategy object = the coalition's shared state), with one
//! PRNG stream (the "faults" stream of the seed). The attacks beyond the five filters live in
//! `attacks` (framing, floods, set spam, backdating, selective lying) and `mixed`.
//!
//! Owns the coalition's strategy and PRNG. Calls nothing but the node's signer and core (read
//! only, through [`NodeView`]); the facade sends what it decides.

use std::sync::Arc;

use pqdag_core::{ConflictKey, Core, Domain, Misbehaviour, NodeId, Signer, VertexId};
use pqdag_wire::{Response, Vertex, Vote};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::network::Msg;
use crate::shell::MacSigner;use crate::{attacks, mixed};

/// What Byzantine nodes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Strategy {
    /// Answer every query with inverted votes (validly signed).
    FlipVotes,
    /// Issue pairs of conflicting vertices to the two halves of the peers.
    Equivocate,
    /// Never answer queries.
    Withhold,
    /// Answer with bad signatures.
    InvalidSignatures,
    /// Answer with undecodable frames.
    Malformed,
    /// Framing by replay: poll an honest node about a vertex it lacks (signed `Unknown`), give
    /// it the vertex, poll again with the same query id (signed `Yes`), gossip the two answers
    /// as `ConflictingResponses` evidence against it.
    ReplayQueries,
    /// Many signed members (64+) on one conflict key, in a different order to every honest node,
    /// racing an honest vertex on that key.
    SetSpam,
    /// Answer every id `Unknown` (validly signed).
    VoteUnknown,
    /// Valid signed vertices at a high rate (on genesis and on its own tips).
    VertexFlood,
    /// Signed queries at a high rate to every honest node (each would cost them a verify and a
    /// signature; the shell's per-peer budget drops what is over it first).
    QueryFlood,
    /// Double-spend honest vertices' keys with a backdated timestamp (the tie-break).
    Backdate,
    /// Honest to one half of the honest nodes, lying (flipped votes) or silent to the other.
    Selective,
    /// Colluding nodes pick a strategy of the above per poll and per tick (seeded).
    Mixed,
    /// Gossips `ConflictingResponses` evidence with forged signatures against honest nodes: the
    /// shell's evidence check must stop it (the checker's self-test breaks that check).
    ForgeAlerts,
    /// Gossips valid equivocation proofs against itself, fresh ones as fast as it can sign
    /// (each honest node's first convicts it; the rest would cost three verifies each): the
    /// shell must drop proofs against a peer it convicted already (one verified per accused).
    AlertFlood,
    /// Valid signed vertices of the largest size (8 transactions filling 512 KiB) at 500 a
    /// second: the byte side of the creator bound (`CREATOR_PROCESSING_VERTEX_BYTES`) must hold
    /// what a node keeps of them (`max_bytes_held_for_one_peer`), where the count bound alone
    /// let 256 x 512 KiB = 128 MiB in.
    FatFlood,
}

impl Strategy {
    /// Every strategy, in `--strategy` spelling order.
    pub const ALL: [Strategy; 16] = [
        Strategy::FlipVotes,
        Strategy::Equivocate,
        Strategy::Withhold,
        Strategy::InvalidSignatures,
        Strategy::Malformed,
        Strategy::ReplayQueries,
        Strategy::SetSpam,
        Strategy::VoteUnknown,
        Strategy::VertexFlood,
        Strategy::QueryFlood,
        Strategy::Backdate,
        Strategy::Selective,
        Strategy::Mixed,
        Strategy::ForgeAlerts,
        Strategy::AlertFlood,
        Strategy::FatFlood,
    ];

    /// The `--strategy` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::FlipVotes => "flip-votes",
            Strategy::Equivocate => "equivocate",
            Strategy::Withhold => "withhold",
            Strategy::InvalidSignatures => "invalid-signatures",
            Strategy::Malformed => "malformed",
            Strategy::ReplayQueries => "replay-queries",
            Strategy::SetSpam => "set-spam",
            Strategy::VoteUnknown => "vote-unknown",
            Strategy::VertexFlood => "vertex-flood",
            Strategy::QueryFlood => "query-flood",
            Strategy::Backdate => "backdate",
            Strategy::Selective => "selective",
            Strategy::Mixed => "mixed",
            Strategy::ForgeAlerts => "forge-alerts",
            Strategy::AlertFlood => "alert-flood",
            Strategy::FatFlood => "fat-flood",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Strategy::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| format!("unknown strategy {s}"))
    }
}

/// A Byzantine node as a strategy sees it.
#[derive(Clone, Copy)]
pub(crate) struct NodeView<'a> {
    /// Its index.
    pub(crate) index: usize,
    /// Its id.
    pub(crate) id: NodeId,
    /// Its key (a Byzantine node signs what it likes).
    pub(crate) signer: &'a MacSigner,
    /// Its shard-0 core (read only).
    pub(crate) core: &'a Core<MacSigner>,
}

/// A message a strategy sends to node `to`.
pub(crate) struct Outgoing {
    /// Recipient index.
    pub(crate) to: usize,
    /// The message.
    pub(crate) msg: Msg,
}

/// What a strategy does on one of its own ticks.
#[derive(Default)]
pub(crate) struct Tick {
    /// Vertices it created (the checker times them).
    pub(crate) created: Vec<VertexId>,
    /// What it sends, in order.
    pub(crate) sends: Vec<Outgoing>,
    /// Client submissions it has made to honest nodes: (node, conflict keys). A colluding
    /// client submits an honest vertex on a key the coalition then attacks.
    pub(crate) submits: Vec<(usize, Vec<ConflictKey>)>,
}

/// Everything a strategy may use when it decides.
pub(crate) struct Ctx<'a> {
    /// Virtual time, us.
    pub(crate) now: u64,
    /// Nodes in the run.
    pub(crate) nodes: usize,
    /// Honest nodes (indices `0..honest`; the Byzantine ones follow).
    pub(crate) honest: usize,
    /// Every node's id, by index.
    pub(crate) ids: &'a [NodeId],
    /// The node it acts for.
    pub(crate) me: NodeView<'a>,
    /// The coalition's PRNG stream.
    pub(crate) rng: &'a mut ChaCha8Rng,
}

/// A Byzantine strategy: sees what its node received, decides what it sends.
pub(crate) trait Behaviour {
    /// Its node received `msg` from `from` (the core gets it too): what it sends in reaction,
    /// now. Default: nothing.
    fn received(&mut self, _ctx: Ctx<'_>, _from: usize, _msg: &Msg) -> Vec<Outgoing> {
        Vec::new()
    }
    /// Its node's core answers a query with `response` to `to`: what goes out instead.
    /// Default: the honest response.
    fn respond(&mut self, _ctx: Ctx<'_>, to: usize, response: Response) -> Vec<Outgoing> {
        vec![Outgoing { to, msg: Msg::Response(Box::new(response)) }]
    }
    /// When node `node` first ticks (virtual us); `None`: never.
    fn first_tick_us(&self, _node: usize) -> Option<u64> {
        None
    }
    /// Period of its ticks while the workload runs, us.
    fn tick_period_us(&self) -> u64 {
        200_000
    }
    /// One of its node's own ticks: what it creates and sends on its own initiative.
    fn tick(&mut self, _ctx: Ctx<'_>) -> Tick {
        Tick::default()
    }
}

/// Inverts every vote and signs the result validly.
pub(crate) struct FlipVotes;

/// `response` with every Yes/No vote inverted, re-signed by `signer`. A No becomes a
/// `Final`, the strongest lie there is (it claims a lock and a decision).
pub(crate) fn flipped(signer: &MacSigner, mut response: Response) -> Response {
    for b in response.votes.iter_mut() {
        *b = match Vote::from_u8(*b) {
            Some(Vote::No) => Vote::Final as u8,
            Some(Vote::Yes | Vote::LockedYes | Vote::Final) => Vote::No as u8,
            _ => *b,
        };
    }
    response.signature = signer.sign(Domain::Response, &response.signed_bytes());
    response
}

impl Behaviour for FlipVotes {
    fn respond(&mut self, ctx: Ctx<'_>, to: usize, response: Response) -> Vec<Outgoing> {
        vec![Outgoing { to, msg: Msg::Response(Box::new(flipped(ctx.me.signer, response))) }]
    }
}

/// Never answers.
pub(crate) struct Withhold;

impl Behaviour for Withhold {
    fn respond(&mut self, _ctx: Ctx<'_>, _to: usize, _response: Response) -> Vec<Outgoing> {
        Vec::new()
    }
}

/// Answers with a frame the receiver's shell refuses as `.0`.
struct Garbage(Misbehaviour);

impl Behaviour for Garbage {
    fn respond(&mut self, _ctx: Ctx<'_>, to: usize, response: Response) -> Vec<Outgoing> {
        vec![Outgoing { to, msg: Msg::Garbage(self.0, response.query_id) }]
    }
}

/// Answers honestly, but every tick issues two conflicting vertices, one to each half.
pub(crate) struct Equivocate;

impl Behaviour for Equivocate {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(50_000 + node as u64)
    }

    fn tick(&mut self, ctx: Ctx<'_>) -> Tick {
        let mut k = [0u8; 32];
        ctx.rng.fill(&mut k);
        let key = ConflictKey(k);
        let g = ctx.me.core.genesis_id();
        let me = ctx.me.id;
        let now = ctx.now;
        let mk = |tag: u8, signer: &MacSigner| {
            let mut v = Vertex::new_unsigned(vec![g], vec![tag; 16], vec![key], now / 1000, me);
            v.signature = signer.sign(Domain::Vertex, v.signed_bytes());
            Arc::new(v)
        };
        let a = mk(1, ctx.me.signer);
        let b = mk(2, ctx.me.signer);
        let n = ctx.nodes;
        let node = ctx.me.index;
        let sends = (0..n).filter(|&to| to != node).map(|to| Outgoing { to, msg: Msg::Vertex(if to < n / 2 { a.clone() } else { b.clone() }) }).collect();
        Tick { created: vec![a.id, b.id], sends, submits: Vec::new() }
    }
}

/// The Byzantine coalition of a run.
pub(crate) struct Adversary {
    rng: ChaCha8Rng,
    behaviour: Box<dyn Behaviour>,
}

impl Adversary {
    /// The coalition playing `strategy`, its PRNG stream from `seed`.
    pub(crate) fn new(seed: u64, strategy: Strategy) -> Self {
        let behaviour: Box<dyn Behaviour> = match strategy {
            Strategy::FlipVotes => Box::new(FlipVotes),
            Strategy::Equivocate => Box::new(Equivocate),
            Strategy::Withhold => Box::new(Withhold),
            Strategy::InvalidSignatures => Box::new(Garbage(Misbehaviour::InvalidSignature)),
            Strategy::Malformed => Box::new(Garbage(Misbehaviour::Malformed)),
            Strategy::ReplayQueries => Box::new(attacks::ReplayQueries::default()),
            Strategy::SetSpam => Box::new(attacks::SetSpam::default()),
            Strategy::VoteUnknown => Box::new(attacks::VoteUnknown),
            Strategy::VertexFlood => Box::new(attacks::VertexFlood::default()),
            Strategy::QueryFlood => Box::new(attacks::QueryFlood::default()),
            Strategy::Backdate => Box::new(attacks::Backdate::default()),
            Strategy::Selective => Box::new(attacks::Selective),
            Strategy::Mixed => Box::new(mixed::Mixed::default()),
            Strategy::ForgeAlerts => Box::new(attacks::ForgeAlerts),
            Strategy::AlertFlood => Box::new(attacks::AlertFlood::default()),
            Strategy::FatFlood => Box::new(attacks::VertexFlood::fat()),
        };
        Adversary { rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6661_756c_7473_0000), behaviour }
    }

    /// Byzantine node `me` received `msg` from `from`: what it sends in reaction.
    pub(crate) fn received(&mut self, env: Env<'_>, me: NodeView<'_>, from: usize, msg: &Msg) -> Vec<Outgoing> {
        let ctx = Ctx { now: env.now, nodes: env.ids.len(), honest: env.honest, ids: env.ids, me, rng: &mut self.rng };
        self.behaviour.received(ctx, from, msg)
    }

    /// Byzantine node `me`'s core answers `to` with `response`: what it sends instead.
    pub(crate) fn respond(&mut self, env: Env<'_>, me: NodeView<'_>, to: usize, response: Response) -> Vec<Outgoing> {
        let ctx = Ctx { now: env.now, nodes: env.ids.len(), honest: env.honest, ids: env.ids, me, rng: &mut self.rng };
        self.behaviour.respond(ctx, to, response)
    }

    /// When Byzantine node `node` first ticks, if ever.
    pub(crate) fn first_tick_us(&self, node: usize) -> Option<u64> {
        self.behaviour.first_tick_us(node)
    }

    /// Period of the ticks, us.
    pub(crate) fn tick_period_us(&self) -> u64 {
        self.behaviour.tick_period_us()
    }

    /// A tick of Byzantine node `me`.
    pub(crate) fn tick(&mut self, env: Env<'_>, me: NodeView<'_>) -> Tick {
        let ctx = Ctx { now: env.now, nodes: env.ids.len(), honest: env.honest, ids: env.ids, me, rng: &mut self.rng };
        self.behaviour.tick(ctx)
    }
}

/// The run as the coalition sees it when it acts: the time and the membership.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    /// Virtual time, us.
    pub(crate) now: u64,
    /// Honest nodes (indices `0..honest`).
    pub(crate) honest: usize,
    /// Every node's id, by index.
    pub(crate) ids: &'a [NodeId],
}
