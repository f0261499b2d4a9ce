//! Lock rounds (whole-network polls; docs/consensus.md 8d): what lets a quorum lock move to a
//! member that was locked later, so two honest groups locked on different members of one set
//! meet again even when a liar withholds the votes the release threshold needs.
//!
//! Time is cut into rounds of `Params::lock_round_us` of wall-clock time (the shell passes the
//! clock's offset, so a round never repeats across a restart). The rules, Tendermint's without
//! a proposer:
//! - *One Yes per set per round.* A node that changed its preference in a set during a round
//!   says Yes to no member of it until the next (`ConflictSet::switched_round`, stamped when
//!   the new preference is announced; `RemoteSet::switched_round` on the member's shard). A
//!   node that restarted says Yes on no conflicting vertex in the round it came back in.
//! - *Certificate.* Responses carry the responder's round. A quorum of Yes with the poll's round
//!   (own vote included) is a certificate for that member and round: the node locks on it with
//!   that round (`ConflictSet::lock_round`), or raises its lock's round.
//! - *Move.* A node locked with gate g (its lock round, or more) leaves the lock for member B
//!   on a certificate for B of a round after g: one its own poll saw, or one that floor(N/3) + 1
//!   peers claim by answering `LockedYes` on B with a lock round after g (at least one claim is
//!   honest). A `Final` answer counts as a claim of its round.
//! - *Finality.* A conflicting vertex is final only on a quorum of *fresh* votes: a
//!   certifying `LockedYes` of the poll's round whose lock is of that round or the one before
//!   (age at most [`FRESH_AGE_MAX`]), or `Final`.
//!
//! Why it stays safe at f < N/3: if A is final on fresh votes of round R, its q voters said
//! Yes to A in round R and are locked on it with gate at least R - 1, q - f of them honest. A
//! certificate for B in round R would need an honest node of both quorums to say Yes to A and
//! to B in one round. A certificate in a later round needs an honest A-voter's Yes on B in
//! that round, so it must have left A before; the first to leave needed (by the release
//! threshold, `locks`) more peers than the others and the liars can give, or (here) a
//! certificate of a round after its gate, so of round R or later: a contradiction either way.
//! So none leaves, and B never gathers its fresh quorum. (A certificate for B of round R - 1
//! moves no voter: their gates are at least R - 1.)
//!
//! Why it is live where counts alone are not: at N = 4 a liar's votes could lock node 0 on A
//! and nodes 1 and 2 on B; each side needed the liar to move. Node 0 locked on a quorum in
//! which an honest node said Yes to A; that node said Yes to B only in a later round, so B's
//! lock is the younger, and the two `LockedYes` of nodes 1 and 2 move node 0. Owns
//! [`LockRounds`]; read by `votes` (`prefers_in_set`, ages), `polls` and `snowball`.

use pqdag_wire::Vertex;

use crate::core::Core;
use crate::types::{Signer, shard_of_key};

/// A lock gate that the first event after a restart replaces with that event's round: a lock
/// re-derived at a restart (`Core::lock_restored_singletons`) or stored without a round was
/// taken at most then, so it moves only on a later certificate.
pub(crate) const GATE_AT_RESTART: u64 = u64::MAX;

/// Age byte of a lock older than 254 rounds or of unknown round: it claims nothing.
pub(crate) const AGE_UNKNOWN: u8 = u8::MAX;

/// Oldest lock a certifying `LockedYes` may have to count toward finality (it is *fresh*):
/// one round. The voter's gate is then at least the round before the poll's, so leaving the
/// lock needs a certificate of the poll's round or later, which the fresh quorum's own Yes
/// exclude (module doc). Age 0 only was the first rule: a vertex with a key owned by another
/// shard learns its lock's raise two mesh hops after the certificate (`Success` to the owner,
/// its `Preference` back), and on a loaded node (or `sim --mesh-delay-max-us 100000`) those
/// hops and the poll took the whole round, every round: 4 nodes x 2 shards with a crash
/// stalled with every poll succeeding and the far key's lock one round old on every node.
/// Age 2 is unsafe: a certificate for a rival of the round between could move the voter.
pub(crate) const FRESH_AGE_MAX: u8 = 1;

/// The round clock and the restart guard.
#[derive(Debug, Default)]
pub(crate) struct LockRounds {
    /// Added to the core's clock before dividing by the round length: the shell's wall-clock
    /// offset (unix microseconds at its clock's zero); 0 in the simulator.
    pub(crate) offset_us: u64,
    /// The round of the latest event.
    pub(crate) current: u64,
    /// The round the node came back in after a restore: no Yes on a conflicting vertex until a
    /// later round (what it voted before the stop is gone).
    pub(crate) restart: Option<u64>,
    /// A restore happened and no event has set `restart` yet.
    pub(crate) restart_pending: bool,
}

impl<S: Signer> Core<S> {
    /// Sets the offset of the round clock: unix microseconds when the core's clock read 0. The
    /// engine passes it so rounds follow the wall clock and never repeat across a restart;
    /// the simulator leaves 0 (its virtual time is common to every node).
    pub fn set_round_clock(&mut self, offset_us: u64) {
        self.rounds.offset_us = offset_us;
    }

    /// The current lock round (0 without lock rounds).
    pub fn lock_round(&self) -> u64 {
        self.rounds.current
    }

    /// Peers whose claimed locks on a member move a lock to it: floor(N/3) + 1, not f + 1 with
    /// f = (N-1)/3, so at least one claim is honest even where the liars are a full third (2
    /// of 6, 1 of 3: the simulator's safety tests at a third found f + 1 claims made up by the
    /// liars alone moving honest locks). The threshold of `Final` claims too.
    pub(crate) fn claim_threshold(&self) -> usize {
        (self.peers.ids.len() + 1) / 3 + 1
    }

    /// Whether lock rounds apply: whole-network polls with a round length.
    pub(crate) fn rounds_on(&self) -> bool {
        self.params.lock_round_us > 0 && self.whole_network()
    }

    /// At every event: the round of `now`. A new round reopens the sets that switched in the
    /// last one (the cached strong preferences are stale).
    pub(crate) fn advance_round(&mut self, now: u64) {
        if !self.rounds_on() {
            return;
        }
        let r = now.saturating_add(self.rounds.offset_us) / self.params.lock_round_us;
        if self.rounds.restart_pending {
            self.rounds.restart_pending = false;
            self.rounds.restart = Some(r);
            for set in self.conflicts.sets.values_mut() {
                if set.lock_gate == GATE_AT_RESTART {
                    set.lock_gate = r;
                }
            }
        }
        if r > self.rounds.current {
            self.rounds.current = r;
            self.bump_epoch();
        }
    }

    /// Whether a Yes on a set's preference may be given now: not in the round the node came
    /// back in, and not in a round in which the preference changed (`switched`).
    pub(crate) fn round_open(&self, switched: Option<u64>) -> bool {
        if self.rounds.restart_pending || self.rounds.restart.is_some_and(|r| self.rounds.current <= r) {
            return false;
        }
        switched.is_none_or(|s| s < self.rounds.current)
    }

    /// The age byte of a `LockedYes` on `v`: rounds since the oldest lock among its undecided
    /// sets (here, or as its owner shard announced it).
    pub(crate) fn lock_age(&self, v: &Vertex) -> u8 {
        let mut oldest = u64::MAX;
        for k in &v.conflict_keys {
            let r = if shard_of_key(k, self.shard_count) == self.shard {
                match self.conflicts.sets.get(k) {
                    Some(s) if s.decided.is_none() => s.lock_round,
                    _ => continue,
                }
            } else {
                match self.cross.remote_sets.get(k) {
                    Some(s) if !s.decided => s.lock_round,
                    _ => continue,
                }
            };
            oldest = oldest.min(r);
        }
        if oldest == u64::MAX {
            return 0;
        }
        u8::try_from(self.rounds.current.saturating_sub(oldest)).unwrap_or(AGE_UNKNOWN)
    }
}

/// Of peers' claimed lock rounds on one member, the round `need` of them reach (`need` =
/// floor(N/3) + 1, `Core::claim_threshold`): at least one of those claims is honest, so a certificate of that round or a later one
/// exists. `None` with fewer claims.
pub(crate) fn claimed_round(claims: &mut [u64], need: usize) -> Option<u64> {
    if need == 0 || claims.len() < need {
        return None;
    }
    claims.sort_unstable_by(|a, b| b.cmp(a));
    Some(claims[need - 1])
}
