//! Which peers' pushes this shard holds (issue 14, `vertex-flood`): a peer that pushes its own
//! vertices while it holds its bound of processing vertices here (`Core::creator_over_bound`)
//! would have them dropped unverified, each after paying its bytes, decode and BLAKE3 id; its
//! pushes are held in the transport instead ([`ShardTransport::hold_pushes`]: its push streams
//! stopped unread, no new push credit), and released as soon as it is under the bound again.
//! A held honest creator loses nothing it would not have lost: its vertices over the bound
//! were dropped before, and reach this node by fetch when a peer's query names them, as then.
//! Owns the held set; reads the core; calls the transport.

use std::rc::Rc;

use pqdag_core::Core;
use pqdag_transport::ShardTransport;
use pqdag_wire::{NodeId, Vertex};

use super::roster::Roster;
use super::signer::MlDsaSigner;

/// The peers whose pushes this shard holds.
pub(super) struct Holds {
    held: Vec<NodeId>,
    transport: Rc<ShardTransport>,
}

impl Holds {
    /// Nobody held.
    pub(super) fn new(transport: Rc<ShardTransport>) -> Self {
        Self { held: Vec::new(), transport }
    }

    /// `from` pushed `vertex`: holds `from`'s pushes if it is the creator and the core drops it
    /// over the bound (call before the core sees this turn's events, as the dedupe does).
    pub(super) fn on_push(&mut self, core: &Core<MlDsaSigner>, roster: &Roster, from: &NodeId, vertex: &Vertex) {
        if vertex.creator != *from || self.held.contains(from) || core.admits_creator(vertex) {
            return;
        }
        let Some(peer) = roster.peer_of(from) else { return };
        self.held.push(*from);
        self.transport.hold_pushes(peer);
    }

    /// Releases every held peer no longer over its bound (once per turn).
    pub(super) fn release_due(&mut self, core: &Core<MlDsaSigner>, roster: &Roster) {
        let transport = &self.transport;
        self.held.retain(|c| {
            if core.creator_over_bound(c) {
                return true;
            }
            if let Some(peer) = roster.peer_of(c) {
                transport.release_pushes(peer);
            }
            false
        });
    }
}
