//! Asking again and asking more (3.4, issue 14 hole 3): a silent peer is re-asked once with
//! the same signed query, and in Avalanche mode a peer that answered mostly `Unknown`, or stayed
//! silent, gets a random stand-in. Owns no state (the polls live in `polls`); called by `polls`
//! (`on_response`) and `timers`.

use pqdag_wire::NodeId;
use rand::Rng;

use crate::core::Core;
use crate::types::{Action, Signer};

impl<S: Signer> Core<S> {
    /// Re-asks, once, the sampled peers that have not answered a poll still short of alpha
    /// answers after a quarter of the query timeout, with the same signed query (no new
    /// signature; an honest peer answers a repeat as it would the first). A lost query or
    /// answer then delays a round instead of failing it: where the sample is the whole network
    /// and a faulty peer is silent, the round needs every other answer, and one lost message
    /// in a row of beta rounds reset the streak (`sim-faults` seed 759: N = 5, 3 % loss, an
    /// invalid-signature node: 79 of 448 final in 24 s). QUIC retransmits lost packets, but a
    /// stream reset, a reconnect or a full queue loses a message just the same.
    pub(crate) fn reask_silent(&mut self, now: u64) {
        let after = self.params.query_timeout_us / 4;
        let due: Vec<u64> = self.polls.open.iter().filter(|(_, p)| !p.reasked && p.alpha_at.is_none() && now >= p.sent_us.saturating_add(after)).map(|(&qid, _)| qid).collect();
        for qid in due {
            let Some(p) = self.polls.open.get_mut(&qid) else { continue };
            p.reasked = true;
            let to: Vec<NodeId> = p.sample.iter().enumerate().filter(|&(pos, _)| p.responded & (1u64 << pos) == 0).map(|(_, &i)| self.peers.ids[i]).collect();
            debug_assert!(!to.is_empty(), "a poll short of alpha answers has a silent peer");
            // A withholder stays silent however often it is asked: in Avalanche mode each
            // silent peer also gets a random stand-in, as an `Unknown` answer does, but only
            // when at least half the sample answered: a silent minority. A silent majority is
            // overload (or this node cut off), where more queries only lengthen the queues
            // (`Polls::adapt_window`): under `vertex-flood` at 25 % of 30 nodes, stand-ins
            // for slow honest peers added load and honest peers timed out.
            let silent = if p.half_at.is_some() { to.len() } else { 0 };
            let query = p.query.clone();
            self.push(Action::SendQuery { to, query });
            for _ in 0..silent {
                self.replace_uninformative(qid);
            }
        }
    }

    /// Asks one more peer, chosen at random among the eligible peers outside the sample, with
    /// the same signed query, because a sampled peer answered `Unknown` on most ids, or was
    /// still silent when its query was re-asked (issue 14, hole 3). An `Unknown` says nothing
    /// about the vertex: the answerer lags, or withholds its vote on purpose; silence says
    /// nothing either. Counted as a non-Yes (as before), 20 % `vote-unknown` nodes of 30 left
    /// rounds short of alpha = 15 of 20 so often that finality p95 was 1.4 s. With a
    /// replacement, every id still gets about k informative answers; a success then needs
    /// alpha Yes AND the fraction alpha/k of the informative answers (`credit`), so a sample
    /// grown past k is never an easier round than k (without replacements the two rules are
    /// the same). An attacker gains nothing it does not have already: answering `Unknown`
    /// hands its slot in the sample to a random peer, never to a peer of its choice, and a
    /// lie (`No`) was always open to it. What it costs the honest nodes is bounded: at most
    /// k/2 extra queries per poll (one signature each at the asked peer, whose query rate
    /// limit applies). Whole-network polls have nobody to add and keep their BFT quorum.
    pub(crate) fn replace_uninformative(&mut self, qid: u64) {
        // Overload first: while the poll window is shrunk (answers came slowly), more queries
        // would only lengthen the queues (`Polls::adapt_window`). Under `vertex-flood` at 25 %
        // of 30 nodes, stand-ins for lagging honest peers added load until honest peers timed
        // out and were excluded.
        if self.polls.window < self.params.polls_in_flight_max {
            return;
        }
        let Some(poll) = self.polls.open.get_mut(&qid) else { return };
        if poll.own || poll.sample.len() >= (poll.base_k + poll.base_k / 2).min(64) {
            return;
        }
        let outside: Vec<usize> = self.peers.eligible.iter().copied().filter(|i| !poll.sample.contains(i)).collect();
        if outside.is_empty() {
            return;
        }
        let pick = outside[self.rng.random_range(0..outside.len())];
        poll.sample.push(pick);
        let query = poll.query.clone();
        debug_assert!(poll.sample.len() <= 64);
        self.push(Action::SendQuery { to: vec![self.peers.ids[pick]], query });
    }
}
