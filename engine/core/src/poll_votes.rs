//! What a closing poll counts besides the answers: this node's own vote, and (lock rounds,
//! docs/consensus.md 8d) the round the answers were cast in, which decides which Yes certify
//! and which `LockedYes` are fresh. Owns [`Masks`]; called by `polls` (`close_poll`,
//! `close_part`); reads `votes` and `lock_rounds`.

use pqdag_wire::{VertexId, Vote};

use crate::core::Core;
use crate::polls::Poll;
use crate::types::{Signer, VertexStatus};

/// A poll's per-id answer masks that this node's own vote goes into (`add_own_votes`).
pub(crate) struct Masks<'a> {
    pub(crate) yes: &'a mut [u64],
    pub(crate) no: &'a mut [u64],
    pub(crate) locked: &'a mut [u64],
    pub(crate) fresh: &'a mut [u64],
    pub(crate) cert: &'a mut [u64],
}

impl<S: Signer> Core<S> {
    /// Lock rounds, at a poll's close: its round is the one most answers were cast in (this
    /// node's own vote counted, cast now), ties to the later; only the Yes and fresh locks of
    /// that round stay in `cert` and `fresh` (`Final` stays whatever its round). A poll whose
    /// answers came back after a round's end still certifies, in the next round, when the
    /// answers agree on it.
    pub(crate) fn settle_poll_round(&mut self, poll: &mut Poll) {
        if !self.rounds_on() {
            return;
        }
        let own = poll.own.then_some(self.rounds.current);
        // Whole-network polls never grow their sample (no stand-ins), so every answer has a label.
        let label = |p: usize| poll.labels.get(p).copied().unwrap_or(u64::MAX);
        let answered = (0..poll.sample.len()).filter(|&p| poll.responded & (1u64 << p) != 0).map(label);
        let mut counts: Vec<(u64, usize)> = Vec::new();
        for l in answered.chain(own) {
            match counts.iter_mut().find(|(r, _)| *r == l) {
                Some((_, c)) => *c += 1,
                None => counts.push((l, 1)),
            }
        }
        let Some(&(round, _)) = counts.iter().max_by_key(|(r, c)| (*c, *r)) else { return };
        poll.round = round;
        let mut mask = 0u64;
        for p in 0..poll.sample.len() {
            if poll.responded & (1u64 << p) != 0 && label(p) == round {
                mask |= 1u64 << p;
            }
        }
        for i in 0..poll.ids.len() {
            poll.cert[i] &= mask;
            poll.fresh[i] &= mask | poll.finals[i];
        }
    }

    /// This node's own vote on each of `ids`, as of now, in bit `bit` (the spare bit after the
    /// sample) of the poll's masks. A Yes certifies (and a `LockedYes` is fresh) only in lock
    /// round `round`, the poll's, and when the node does not abstain from it (`lock_rounds`).
    pub(crate) fn add_own_votes(&mut self, ids: &[VertexId], m: Masks<'_>, bit: u64, round: u64) {
        let rounds = self.rounds_on();
        let same = !rounds || self.rounds.current == round;
        for (i, id) in ids.iter().enumerate() {
            let vote = self.vote_for(id);
            let rec = self.dag.vertices.get(id).filter(|r| r.status == VertexStatus::Processing);
            let certifies = same && vote.is_yes() && (vote == Vote::Final || !rounds || rec.is_none_or(|r| r.round_ok));
            match vote {
                Vote::Yes => m.yes[i] |= bit,
                Vote::LockedYes | Vote::Final => {
                    m.yes[i] |= bit;
                    m.locked[i] |= bit;
                    let young = vote == Vote::Final || !rounds || rec.is_some_and(|r| self.lock_age(&r.v) <= crate::lock_rounds::FRESH_AGE_MAX);
                    if certifies && young {
                        m.fresh[i] |= bit;
                    }
                }
                Vote::No => m.no[i] |= bit,
                Vote::Unknown => {}
            }
            if certifies {
                m.cert[i] |= bit;
            }
        }
    }
}
