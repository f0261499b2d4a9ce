//! History sync, the asking side (catch-up after a long outage or a lost disk): walks each
//! connected peer's finality log of this shard from where it left it, and fetches by id what the
//! core does not have. Frontier announcements only reach vertices near the tips; this reaches
//! all of history. Owns the per-peer cursors and requests in flight (one per peer); reads the core,
//! sends through [`Outbound`], and hands refusals back to the caller (for the guard).
//!
//! A fetch is answered with what fits one reply (`REPLY_VERTICES_MAX` vertices and half a
//! frame of bytes: ~95 of 128 asked at ~5.5 KB each), and a peer may go down with a fetch in
//! flight. So the ids a walk found missing stay in a bounded re-fetch list until the core holds
//! them: every [`REFETCH_EVERY`] those still missing are asked again, of the next peer in turn,
//! [`REFETCH_TRIES_MAX`] times at most (a log may name ids nobody can serve). A finality log
//! names what its peer finalized, so they are needed whatever their creator's bound
//! (`Core::wanted_by`). Before, the unanswered rest of each reply was never asked again,
//! and a vertex no later vertex names (a leaf: frequent where double spends keep keyed vertices
//! off each other's parents) stayed missing for good: after `kill -9` of one of 3 nodes at
//! 1 200/s with 5 % double spends, the restarted node lacked 8-87 finalized vertices and its
//! finalized-set digest never matched again. The walk pauses while the list is full.
//!
//! It also decides when the shard is **caught up** (`/ready`, and the client API stops
//! answering `NotReady`): a majority of the cluster (`n / 2` peers besides this node, among
//! those connected now) has each been walked to the end of its finality log (a reply shorter
//! than a full batch), and every id that last stretch named is in the core (fetched, or known
//! already). A majority, not every peer: one silent or Byzantine peer must not keep a node
//! unready. A one-node cluster is caught up at once. Once caught up the shard
//! stays so until it restarts: later lag is a load question (`/status`, metrics), not readiness.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqdag_core::Core;
use pqdag_transport::{PeerId, TransportError};
use pqdag_wire::{decode, encode, FrameRef, NodeId, VertexId, VertexRequest};

use super::super::metrics::{KindLabel, Metrics};
use super::guard::Guard;
use super::ingress::wire_reason;
use super::outbound::Outbound;
use super::roster::Roster;
use super::signer::MlDsaSigner;
use super::Tags;

/// Pause between history-sync requests once caught up with a peer.
const SYNC_IDLE: Duration = Duration::from_secs(2);
/// Ids asked per history-sync request.
const SYNC_BATCH: u32 = 1024;
/// How often ids a walk found missing are checked and asked again.
const REFETCH_EVERY: Duration = Duration::from_secs(1);
/// Most ids awaiting a re-check; the walk takes no new stretch while this many wait.
pub(super) const REFETCH_IDS_MAX: usize = 8 * SYNC_BATCH as usize;
/// Most ids asked again per re-check (of one peer, in replies' worth of requests).
const REFETCH_PER_ROUND: usize = 8 * pqdag_wire::limits::REPLY_VERTICES_MAX;
/// Re-fetches of one id before it is given up: a log may name ids nobody can serve (a
/// Byzantine peer's made-up ones), which must not fill the list and pause the walk for good.
const REFETCH_TRIES_MAX: u8 = 6;

/// The history-sync walk.
pub(super) struct SyncClient {
    /// Next finality position to ask each peer for.
    cursor: Vec<u64>,
    /// Per peer: a request of the walk is in flight (each peer's walk goes on its own).
    in_flight: Vec<bool>,
    /// Per peer: when its next request may go.
    next_at: Vec<Instant>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// Per peer: the walk reached the end of its log, and the ids of that last stretch this
    /// core still lacked then (caught up with it once all are in the core).
    walked: Vec<Option<Vec<VertexId>>>,
    /// Latched once caught up.
    caught_up: bool,
    /// Ids a walk found missing and fetched, until the core holds them (see the module doc),
    /// with how often each was asked again.
    refetch: HashMap<VertexId, u8>,
    /// When `refetch` is checked next.
    refetch_at: Instant,
    /// The peer asked last for a re-fetch (round robin, apart from the walk's).
    refetch_rr: usize,
}

impl SyncClient {
    /// Every cursor at position 1; the first request may go at `start`.
    pub(super) fn new(members: usize, start: Instant, query_timeout_us: u64, metrics: Arc<Metrics>) -> Self {
        let timeout = Duration::from_micros(query_timeout_us.max(1_000_000) * 2);
        Self {
            cursor: vec![1; members],
            in_flight: vec![false; members],
            next_at: vec![start; members],
            timeout,
            metrics,
            walked: vec![None; members],
            caught_up: members <= 1,
            refetch: HashMap::new(),
            refetch_at: start,
            refetch_rr: 0,
        }
    }

    /// Ids awaiting a re-check (a gauge).
    pub(super) fn refetch_len(&self) -> usize {
        self.refetch.len()
    }

    /// Whether this shard has caught up with its peers (see the module doc); latches.
    pub(super) fn caught_up(&mut self, core: &Core<MlDsaSigner>, roster: &Roster, guard: &Guard) -> bool {
        if self.caught_up {
            return true;
        }
        let up = (0..roster.len()).filter(|i| *i != roster.me && guard.peer_up(*i) == Some(true));
        let walked = up
            .filter(|p| match &mut self.walked[*p] {
                Some(missing) => {
                    missing.retain(|id| !core.contains(id));
                    missing.is_empty()
                }
                None => false,
            })
            .count();
        if walked >= (roster.len() / 2).max(1) {
            self.caught_up = true;
            tracing::info!(peers = walked, "caught up with the peers: ready");
        }
        self.caught_up
    }

    /// Asks each connected peer whose walk is due for its next stretch of finals (one request
    /// in flight per peer). Each peer's walk goes on its own: with one walk for all, every
    /// short reply (the end of one peer's log) paused the others for [`SYNC_IDLE`], and a node
    /// restarted under load (4 nodes at 800/s) was still not ready 11 s later, each peer's
    /// log having grown past a full stretch during every pause.
    pub(super) fn maybe_sync(&mut self, core: &mut Core<MlDsaSigner>, roster: &Roster, guard: &Guard, tags: &mut Tags, outbound: &mut Outbound) {
        self.maybe_refetch(core, roster, guard, tags, outbound);
        if self.refetch.len() >= REFETCH_IDS_MAX {
            return;
        }
        let now = Instant::now();
        for peer in 0..roster.len() {
            if peer == roster.me || self.in_flight[peer] || now < self.next_at[peer] || guard.peer_up(peer) != Some(true) {
                continue;
            }
            let req = pqdag_wire::SyncRequest { request_id: tags.bump(), from_position: self.cursor[peer], max: SYNC_BATCH };
            let Ok(bytes) = encode(&req) else { continue };
            self.in_flight[peer] = true;
            outbound.sync(PeerId(peer), bytes, self.timeout);
        }
    }

    /// Every [`REFETCH_EVERY`]: forgets the re-fetch ids the core holds now and asks the next
    /// connected peer for (up to [`REFETCH_PER_ROUND`] of) the rest.
    fn maybe_refetch(&mut self, core: &mut Core<MlDsaSigner>, roster: &Roster, guard: &Guard, tags: &mut Tags, outbound: &mut Outbound) {
        let now = Instant::now();
        if self.refetch.is_empty() || now < self.refetch_at {
            return;
        }
        self.refetch_at = now + REFETCH_EVERY;
        self.refetch.retain(|id, _| !core.contains(id));
        if self.refetch.is_empty() {
            self.refetch.shrink_to(0);
            return;
        }
        let n = roster.len();
        let Some(peer) = (1..=n).map(|k| (self.refetch_rr + k) % n).find(|i| *i != roster.me && guard.peer_up(*i) == Some(true)) else { return };
        self.refetch_rr = peer;
        let mut ids: Vec<VertexId> = self.refetch.keys().copied().collect();
        ids.sort_unstable();
        ids.truncate(REFETCH_PER_ROUND);
        for id in &ids {
            if let Some(tries) = self.refetch.get_mut(id) {
                *tries += 1;
                if *tries >= REFETCH_TRIES_MAX {
                    self.refetch.remove(id);
                }
            }
        }
        core.wanted_by(&ids, roster.node_ids[peer]);
        self.metrics.invalid.get_or_create(&KindLabel { kind: "sync_refetched".into() }).inc_by(ids.len() as u64);
        for chunk in ids.chunks(pqdag_wire::limits::REPLY_VERTICES_MAX) {
            let Ok(bytes) = encode(&VertexRequest { request_id: tags.bump(), ids: chunk.to_vec() }) else { continue };
            outbound.fetch(PeerId(peer), bytes, self.timeout);
        }
    }

    /// Moves `peer`'s cursor and fetches the ids the core lacks. Returns the peer to charge
    /// and why, when the reply is malformed.
    pub(super) fn on_reply(
        &mut self,
        core: &mut Core<MlDsaSigner>,
        roster: &Roster,
        tags: &mut Tags,
        outbound: &mut Outbound,
        peer: PeerId,
        result: Result<Vec<u8>, TransportError>,
    ) -> Option<(NodeId, &'static str)> {
        if peer.0 >= self.in_flight.len() {
            return None;
        }
        self.in_flight[peer.0] = false;
        self.next_at[peer.0] = Instant::now() + SYNC_IDLE;
        let Ok(bytes) = result else { return None };
        let from = roster.node_ids[peer.0];
        let reply = match decode(&bytes) {
            Ok(FrameRef::SyncReply(r)) => r,
            Ok(_) => return Some((from, "sync_reply_kind")),
            Err(e) => return Some((from, wire_reason(&e))),
        };
        let next = reply.next_position.to_native();
        if next < self.cursor[peer.0] {
            return None; // stale or rewound reply: ignore
        }
        // Positions are dense: a reply that moves the cursor further than the ids it names
        // skipped finals the peer's retention pruned. They cannot be fetched from it any more
        // (docs/operations.md, "Retention"); counted, and the walk goes on from there.
        let skipped = next.saturating_sub(self.cursor[peer.0]).saturating_sub(reply.ids.len() as u64);
        if skipped > 0 {
            self.metrics.invalid.get_or_create(&KindLabel { kind: "sync_pruned_skipped".into() }).inc_by(skipped);
        }
        self.cursor[peer.0] = next;
        if reply.ids.len() as u32 >= SYNC_BATCH {
            self.next_at[peer.0] = Instant::now(); // more to walk: go on at once
        }
        let missing: Vec<VertexId> = reply.ids.iter().map(VertexId::from).filter(|id| !core.contains(id)).collect();
        if (reply.ids.len() as u32) < SYNC_BATCH {
            self.walked[peer.0] = Some(missing.clone());
        }
        // Needed whatever their creator's bound, unless `from` is their creator (`flood.rs`).
        core.wanted_by(&missing, from);
        if !missing.is_empty() {
            self.metrics.invalid.get_or_create(&KindLabel { kind: "sync_missing_fetched".into() }).inc_by(missing.len() as u64);
        }
        for chunk in missing.chunks(pqdag_wire::limits::REPLY_VERTICES_MAX) {
            let Ok(bytes) = encode(&VertexRequest { request_id: tags.bump(), ids: chunk.to_vec() }) else { continue };
            outbound.fetch(peer, bytes, self.timeout);
        }
        // Checked again in a while: a reply holds what fits, a peer may go down meanwhile.
        if self.refetch.is_empty() {
            self.refetch_at = Instant::now() + REFETCH_EVERY;
        }
        for id in missing {
            if self.refetch.len() >= REFETCH_IDS_MAX {
                break;
            }
            self.refetch.entry(id).or_insert(0);
        }
        None
    }
}
