//! The mixed coalition (see [`crate::Strategy::Mixed`]): every answer and every tick, the
//! colluding nodes draw (from the coalition's seeded stream) which strategy acts: honest, flipped,
//! `Unknown`, silent or selective answers; replay framing, set spam, floods, backdating or
//! equivocation on ticks. The stateful strategies see every received message, so a framing or a
//! spam started on one tick is finished on a later one.
//!
//! Owns one instance of each strategy it mixes; calls only their [`Behaviour`] methods.

use pqdag_wire::Response;
use rand::Rng;

use crate::adversary::{Behaviour, Ctx, Equivocate, FlipVotes, Outgoing, Tick, Withhold};
use crate::attacks::{Backdate, QueryFlood, ReplayQueries, Selective, SetSpam, VertexFlood, VoteUnknown};
use crate::network::Msg;

/// The coalition switching strategies per poll and per tick.
#[derive(Default)]
pub(crate) struct Mixed {
    replay: ReplayQueries,
    spam: SetSpam,
    vflood: VertexFlood,
    qflood: QueryFlood,
    backdate: Backdate,
}

impl Behaviour for Mixed {
    fn first_tick_us(&self, node: usize) -> Option<u64> {
        Some(50_000 + node as u64)
    }

    fn tick_period_us(&self) -> u64 {
        50_000
    }

    fn received(&mut self, ctx: Ctx<'_>, from: usize, msg: &Msg) -> Vec<Outgoing> {
        let Ctx { now, nodes, honest, ids, me, rng } = ctx;
        let mut out = self.replay.received(Ctx { now, nodes, honest, ids, me, rng }, from, msg);
        out.extend(self.spam.received(Ctx { now, nodes, honest, ids, me, rng }, from, msg));
        out.extend(self.qflood.received(Ctx { now, nodes, honest, ids, me, rng }, from, msg));
        // Backdating reacts to what it sees only on a coin flip: the rest of the keys are left
        // to the spammer or to nobody.
        if rng.random_bool(0.5) {
            out.extend(self.backdate.received(Ctx { now, nodes, honest, ids, me, rng }, from, msg));
        }
        out
    }

    fn respond(&mut self, ctx: Ctx<'_>, to: usize, response: Response) -> Vec<Outgoing> {
        match ctx.rng.random_range(0..5u8) {
            0 => vec![Outgoing { to, msg: Msg::Response(Box::new(response)) }],
            1 => FlipVotes.respond(ctx, to, response),
            2 => VoteUnknown.respond(ctx, to, response),
            3 => Withhold.respond(ctx, to, response),
            _ => Selective.respond(ctx, to, response),
        }
    }

    fn tick(&mut self, ctx: Ctx<'_>) -> Tick {
        // The framing needs its follow-up tick whatever is drawn: it runs every tick.
        let Ctx { now, nodes, honest, ids, me, rng } = ctx;
        let mut t = self.replay.tick(Ctx { now, nodes, honest, ids, me, rng });
        let ctx = Ctx { now, nodes, honest, ids, me, rng };
        let other = match ctx.rng.random_range(0..6u8) {
            0 => self.spam.tick(ctx),
            1 => self.vflood.tick(ctx),
            2 => self.qflood.tick(ctx),
            3 => self.backdate.tick(ctx),
            4 => Equivocate.tick(ctx),
            _ => Tick::default(),
        };
        t.created.extend(other.created);
        t.sends.extend(other.sends);
        t.submits.extend(other.submits);
        t
    }
}
