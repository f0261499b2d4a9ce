//! The guard: what this shard decides about its peers outside consensus. Owns the reachability
//! last reported to the core, the incidents seen per peer at the last stats tick, and the
//! policy that turns proven misbehaviour into a bounded transport ban and a gossiped alert.
//! May call the core only with `InvalidMessage` and `PeerReachability` events, the transport's
//! ban and broadcast, and the invalid/alert/ban metrics.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use pqdag_core::{Core, Event, Misbehaviour};
use pqdag_crypto::{Domain, Keypair};
use pqdag_transport::{PeerId, ShardTransport};
use pqdag_wire::{encode, NodeId};
use tracing::{debug, warn};

use super::super::metrics::{KindLabel, Metrics};
use super::roster::Roster;
use super::signer::MlDsaSigner;
use super::Clock;

/// How long a peer excluded for proven misbehaviour stays disconnected. Bounded so a peer banned
/// by mistake (or repaired by its operator) comes back on its own; after it the peer reconnects
/// and the core re-judges it by its score (a convicted equivocator stays out of the sample, and
/// new proven misbehaviour while excluded bans it again).
pub const BAN_COOL_OFF: Duration = Duration::from_secs(60);

/// Whether an exclusion rests on proof, and so also disconnects the peer (docs/architecture.md,
/// "Byzantine mitigation"): transferable signed evidence (equivocation, two contradictory signed
/// responses), or a bad signature / malformed frame on the peer's own authenticated connection,
/// which an honest node never sends. Timeouts and votes against the majority are not proof: an
/// honest node that is slow, partitioned or merely behind looks alike, so those only exclude it
/// from sampling, and its queries are still answered so it can catch up.
pub fn proven_misbehaviour(reason: Misbehaviour, has_evidence: bool) -> bool {
    has_evidence || matches!(reason, Misbehaviour::Equivocation | Misbehaviour::InvalidSignature | Misbehaviour::Malformed)
}

/// The shard's judgement of its peers.
pub(super) struct Guard {
    transport: Rc<ShardTransport>,
    metrics: Arc<Metrics>,
    roster: Rc<Roster>,
    keypair: Arc<Keypair>,
    clock: Clock,
    /// Last reachability reported to the core, per cluster index.
    peer_up: Vec<Option<bool>>,
    /// Incidents the core had counted per peer at the last stats tick (re-banning convicted
    /// peers that misbehave again after their cool-off).
    incidents_seen: HashMap<NodeId, u32>,
}

impl Guard {
    /// Nothing reported or seen yet.
    pub(super) fn new(transport: Rc<ShardTransport>, metrics: Arc<Metrics>, roster: Rc<Roster>, keypair: Arc<Keypair>, clock: Clock) -> Self {
        let peer_up = vec![None; roster.len()];
        Self { transport, metrics, roster, keypair, clock, peer_up, incidents_seen: HashMap::new() }
    }

    /// Last reachability reported to the core for member `i` (`None`: not reported yet).
    pub(super) fn peer_up(&self, i: usize) -> Option<bool> {
        self.peer_up[i]
    }

    /// A refused frame: counted under `why`, and, when it came from a peer, charged to it.
    pub(super) fn invalid(&mut self, core: &mut Core<MlDsaSigner>, from: Option<NodeId>, why: &str, kind: Misbehaviour) {
        self.metrics.invalid.get_or_create(&KindLabel { kind: why.to_owned() }).inc();
        if let Some(from) = from {
            debug!(peer = %from, why, "refused frame");
            let was_excluded = core.is_excluded(&from);
            let _ = core.handle(self.clock.now(), Event::InvalidMessage { from, kind });
            // Re-judged after a cool-off: a peer the core still excludes that sends proven junk
            // again is disconnected again (its first exclusion bans it through `Action::Alert`).
            if was_excluded && proven_misbehaviour(kind, false) {
                self.ban(from, Some(kind), "proven misbehaviour while excluded");
            }
        }
    }

    /// Disconnects `peer` for [`BAN_COOL_OFF`] (transport ban), counts it and logs it, unless it
    /// is banned already. `reason`: the misbehaviour that proved it, when one incident did.
    fn ban(&mut self, peer: NodeId, reason: Option<Misbehaviour>, why: &str) {
        let Some(p) = self.roster.peer_of(&peer) else { return };
        if self.transport.is_banned(p) {
            return;
        }
        if let Ok(true) = self.transport.ban_peer(p, BAN_COOL_OFF) {
            self.metrics.peer_bans.inc();
            let name = self.roster.name(p.0).unwrap_or_default();
            warn!(peer = %name, node_id = %peer, ?reason, cool_off_s = BAN_COOL_OFF.as_secs(), why, "disconnecting Byzantine peer: proven misbehaviour");
        }
    }

    /// The core excluded `peer` (`Action::Alert`): log and count it, gossip the proof, and ban
    /// the peer when the exclusion rests on proof.
    pub(super) fn excluded(&mut self, peer: NodeId, reason: Misbehaviour, evidence: Option<Box<pqdag_wire::Evidence>>, score: f64) {
        let name = self.roster.index_of(&peer).and_then(|i| self.roster.name(i)).map(str::to_owned).unwrap_or_default();
        let evidence_id = evidence.as_ref().map(|e| pqdag_wire::VertexId(e.digest()).to_hex());
        warn!(peer = %name, node_id = %peer, ?reason, score, evidence = evidence_id.as_deref().unwrap_or("none"), "Byzantine peer excluded");
        self.metrics.alerts.get_or_create(&KindLabel { kind: format!("{reason:?}") }).inc();
        let proven = proven_misbehaviour(reason, evidence.is_some());
        // Gossip the proof (spec 3.7.3 strategy 4) so honest peers check it themselves.
        if let Some(evidence) = evidence {
            self.gossip_alert(peer, *evidence);
        }
        // Mitigation 3.7.3: proven misbehaviour also disconnects (bounded cool-off).
        if proven {
            self.ban(peer, Some(reason), "excluded");
        }
    }

    fn gossip_alert(&mut self, accused: NodeId, evidence: pqdag_wire::Evidence) {
        let me = self.roster.me_id();
        let mut alert = pqdag_wire::Alert { reporter: me, accused, evidence, signature: Vec::new() };
        match self.keypair.sign(Domain::Alert, &alert.signed_bytes()) {
            Ok(sig) => alert.signature = sig.into_bytes(),
            Err(_) => return,
        }
        let Ok(bytes) = encode(&alert) else { return };
        // Every convicting node pushes: up to `ALERT_FANOUT` peers each, an epidemic, not N^2.
        let peers: Vec<PeerId> = pqdag_core::alert_targets(&me, &accused, &self.roster.node_ids).into_iter().map(PeerId).collect();
        self.transport.broadcast_vertex(&peers, &bytes);
    }

    /// Tells the core of every peer whose connection came up or went down since the last
    /// report; returns how many peers are connected.
    pub(super) fn report_reachability(&mut self, core: &mut Core<MlDsaSigner>) -> usize {
        let mut connected = 0;
        for i in (0..self.roster.len()).filter(|i| *i != self.roster.me) {
            let up = self.transport.is_connected(PeerId(i));
            connected += usize::from(up);
            if self.peer_up[i] != Some(up) {
                self.peer_up[i] = Some(up);
                let now = self.clock.now();
                let _ = core.handle(now, Event::PeerReachability { peer: self.roster.node_ids[i], reachable: up });
            }
        }
        connected
    }

    /// A convicted peer is never polled, so any new incident of it is another proof
    /// (equivocation, bad frames) once its cool-off is over: ban it again.
    pub(super) fn reban_repeat_offenders(&mut self, core: &Core<MlDsaSigner>) {
        for (node, score) in core.peer_scores() {
            let seen = self.incidents_seen.insert(node, score.incidents).unwrap_or(score.incidents);
            if score.convicted && score.excluded && score.incidents > seen {
                self.ban(node, None, "convicted peer misbehaved again");
            }
        }
    }
}
