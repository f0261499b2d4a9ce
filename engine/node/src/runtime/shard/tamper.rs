//! Byzantine test modes as a decorator on the effects' outbox (hidden `--byzantine` flag): the
//! honest effects produce their messages, and `Tamper` decides what actually leaves (a tampered
//! own vertex split across two halves of the peers, a tampered or withheld response) and adds
//! its own junk traffic. Owns the mode and the flood pacing; the transformations themselves are
//! [`crate::runtime::byzantine`]'s. Never present on an honest node.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqdag_crypto::Keypair;
use pqdag_transport::PeerId;

use super::super::byzantine::{self, ByzantineMode};
use super::effects::{Outgoing, Wire};
use super::roster::Roster;
use super::Tags;

/// The Byzantine decorator of one shard's outbox.
pub(super) struct Tamper {
    mode: ByzantineMode,
    keypair: Arc<Keypair>,
    roster: Rc<Roster>,
    last_flood: Instant,
}

impl Tamper {
    /// Misbehaves as `mode`, signing with `keypair`; the first flood is due 10 ms after `start`.
    pub(super) fn new(mode: ByzantineMode, keypair: Arc<Keypair>, roster: Rc<Roster>, start: Instant) -> Self {
        Self { mode, keypair, roster, last_flood: start }
    }

    /// `Flood`: junk vertices to every peer, at most every 10 ms.
    pub(super) fn before_turn(&mut self, wire: &Wire, tags: &mut Tags) {
        if self.mode == ByzantineMode::Flood && self.last_flood.elapsed() >= Duration::from_millis(10) {
            self.last_flood = Instant::now();
            let junk = byzantine::flood(self.roster.me_id(), tags.bump());
            let peers: Vec<PeerId> = self.roster.others();
            for j in &junk {
                wire.broadcast(&peers, j);
            }
        }
    }

    /// Sends `out` as the mode would: tampered, split, withheld, or (when the mode leaves it
    /// alone) unchanged through `wire`.
    pub(super) fn send(&mut self, wire: &Wire, out: Outgoing) {
        match out {
            Outgoing::Vertex { to, vertex } => {
                if vertex.creator == self.roster.me_id() {
                    if let Some((first, second)) = byzantine::tamper_own_vertex(self.mode, &self.keypair, &vertex) {
                        // Split every peer in two halves so each half sees a different story.
                        let peers: Vec<PeerId> = self.roster.others();
                        let (a, b) = peers.split_at(peers.len() / 2);
                        wire.broadcast(a, &first);
                        wire.broadcast(b, &second);
                        return;
                    }
                }
                wire.send(Outgoing::Vertex { to, vertex });
            }
            Outgoing::Response { reply, response } => {
                // Withholding drops the responder: the asker's stream is reset.
                if let Some(bytes) = byzantine::tamper_response(self.mode, &self.keypair, response) {
                    let _ = reply.send(bytes);
                }
            }
        }
    }
}
