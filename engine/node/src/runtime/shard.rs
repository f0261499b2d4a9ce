//! One shard: a pinned glommio executor owning a consensus core, a QUIC endpoint and a RocksDB
//! store outright. The loop: drain the network and the reply mailbox, decode (rkyv, validated),
//! verify every signature of the turn as one batch, feed the core, drain its actions, make the
//! turn's persists durable in one write batch, then release the sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqdag_core::{Action, Config as CoreConfig, Core, Event, Misbehaviour, Params, Signer, VertexStatus};
use pqdag_crypto::{BatchItem, BatchVerifier, Domain, Keypair, PublicKey};
use pqdag_storage::{RocksStore, Status, Store, StoreBatch, SyncPolicy};
use pqdag_transport::{ClientId, Incoming, PeerConfig, PeerId, Responder, ShardTransport, TransportConfig};
use pqdag_wire::{
    decode, encode, ConflictKey, ArchivedClientRequest, ClientErrorCode, ClientReply, ClientStatus, FinalityEvent, FrameRef, NodeId,
    Query, Response, Vertex, VertexId, VertexReply, VertexRequest, WireError,
};
use tracing::{debug, info, warn};

use super::mailbox::Mailbox;
use super::mesh::{MeshMsg, MeshSetup, ShardMesh};
use super::metrics::{KindLabel, Metrics, PeerLabel, ShardStatus};

/// Most incoming items handled per loop turn (bounds a turn's latency).
pub const TURN_INCOMING_MAX: usize = 1024;
/// On restart, this many of the latest finals are restored in full (parents for new vertices,
/// frontier tips); older finals come back as forgotten ids.
const RESTORE_FULL_FINALS: usize = 16;
/// Most outstanding query/fetch replies awaited; beyond it new requests are answered Overloaded.
pub const PENDING_REPLIES_MAX: usize = 16_384;
/// Most undecided own submissions; beyond it clients get `Overloaded`.
pub const CLIENT_INFLIGHT_MAX: usize = 8_192;
/// Admission control: above this many undecided vertices (processing + waiting for parents) on
/// this shard, new submissions are refused as `Overloaded`. Past the knee an Avalanche node that
/// keeps accepting work polls an ever larger frontier and finalizes nothing; refusing turns that
/// collapse into a plateau at capacity (measured: docs/benchmark.md).
pub const ADMIT_UNDECIDED_MAX: u64 = 6_000;
/// Conflict keys of own vertices remembered (shard 0) so the node never signs a second vertex
/// spending one of them, even when the key's conflict set lives on another shard.
pub const OWN_KEYS_MAX: usize = 500_000;
/// Pause between history-sync requests once caught up with a peer.
const SYNC_IDLE: Duration = Duration::from_secs(2);
/// Ids asked per history-sync request.
const SYNC_BATCH: u32 = 1024;
/// Longest sleep of an idle loop (how fast a stop request is seen).
const IDLE_WAIT_MAX: Duration = Duration::from_millis(50);
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

/// ML-DSA-87 signer the core uses for own vertices, queries and responses.
pub struct MlDsaSigner(pub Arc<Keypair>);

impl Signer for MlDsaSigner {
    fn sign(&self, domain: Domain, msg: &[u8]) -> Vec<u8> {
        match self.0.sign(domain, msg) {
            Ok(s) => s.into_bytes(),
            // liboqs only fails on an internal error; an empty signature is refused by every
            // receiver, which is the safe outcome.
            Err(e) => {
                warn!(error = %e, "ML-DSA-87 signing failed");
                Vec::new()
            }
        }
    }
}

/// Everything a shard needs, built by the node before the executors start.
pub struct ShardSetup {
    /// Shard index.
    pub shard: u16,
    /// Shards per node.
    pub shard_count: u16,
    /// This node's index in the cluster list.
    pub me: usize,
    /// Cluster members' names, public keys and this shard's peer address, in cluster order.
    pub members: Vec<(String, PublicKey, SocketAddr)>,
    /// Own key pair.
    pub keypair: Arc<Keypair>,
    /// Protocol parameters.
    pub params: Params,
    /// Where this shard binds its UDP socket.
    pub bind: SocketAddr,
    /// Client endpoint (shard 0 only).
    pub client_bind: Option<SocketAddr>,
    /// RocksDB folder of this shard.
    pub store_dir: std::path::PathBuf,
    /// Store sync policy.
    pub sync: SyncPolicy,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// This shard's status slot.
    pub status: Arc<ShardStatus>,
    /// Set to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// Seed of the core's RNG.
    pub seed: u64,
    /// Test-only misbehaviour (hidden `--byzantine` flag).
    pub byzantine: Option<super::byzantine::ByzantineMode>,
    /// The node's shard mesh (None with one shard).
    pub mesh: Option<MeshSetup>,
    /// Decided statuses of other shards' vertices that this shard's stored vertices name as
    /// parents (S > 1 restarts).
    pub remote_facts: Vec<(VertexId, VertexStatus)>,
    /// Least time between the starts of two turns, us (0: no pacing).
    pub turn_interval_min_us: u64,
}

/// Errors that stop a shard (reported by the node, which exits non-zero).
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The store could not be opened or written: the node must not go on without durability.
    #[error("storage: {0}")]
    Storage(#[from] pqdag_storage::StorageError),
    /// The endpoint could not start (port in use, TLS setup).
    #[error("transport: {0}")]
    Transport(#[from] pqdag_transport::TransportError),
    /// The core refused its configuration.
    #[error("consensus: {0}")]
    Consensus(#[from] pqdag_core::ConsensusError),
    /// The shard mesh could not be set up.
    #[error("mesh: {0}")]
    Mesh(String),
}

/// A client `Status` request waiting for other shards' answers (shard 0 only).
struct PendingStatus {
    reply: Responder,
    tag: u64,
    statuses: Vec<ClientStatus>,
    /// For each asked shard, the positions in `statuses` its answer fills.
    slots: HashMap<usize, Vec<usize>>,
}

/// Replies of requests this shard made, pushed by the tasks awaiting them.
enum Reply {
    Sync { peer: PeerId, result: Result<Vec<u8>, pqdag_transport::TransportError> },
    Response { peer: PeerId, sent: Instant, result: Result<Vec<u8>, pqdag_transport::TransportError> },
    Vertices { peer: PeerId, result: Result<Vec<u8>, pqdag_transport::TransportError> },
}

/// A message decoded and waiting for its signature check.
enum Unverified {
    Vertex { from: NodeId, vertex: Vertex },
    Query { from: NodeId, query: Query, reply: Responder },
    Response { from: NodeId, response: Response },
    Reply { from: NodeId, vertices: Vec<Vertex> },
    /// A gossiped Byzantine alert: the reporter's signature and every signature of its proof.
    Alert { from: NodeId, alert: pqdag_wire::Alert },
}

struct OwnSubmission {
    client: ClientId,
    created: Instant,
}

struct Shard {
    setup: ShardSetup,
    transport: Rc<ShardTransport>,
    /// `None` only while a write runs on the blocking thread.
    store: Option<RocksStore>,
    core: Core<MlDsaSigner>,
    mailbox: Mailbox<Reply>,
    verifier: BatchVerifier,
    node_ids: Vec<NodeId>,
    index_of: HashMap<NodeId, usize>,
    keys: HashMap<NodeId, PublicKey>,
    start: Instant,
    pending_responses: HashMap<(NodeId, u64), Responder>,
    client_submits: HashMap<u64, (Responder, ClientId, u64)>,
    own: HashMap<VertexId, OwnSubmission>,
    next_tag: u64,
    outstanding: usize,
    last_stats: Instant,
    last_flood: Instant,
    /// This shard's end of the node's shard mesh (S > 1).
    mesh: Option<ShardMesh>,
    /// Messages from other shards.
    cross: Mailbox<MeshMsg>,
    pending_status: HashMap<u64, PendingStatus>,
    /// Own (non-rejected) vertices' conflict keys, oldest first for eviction (shard 0).
    own_keys: HashMap<ConflictKey, VertexId>,
    own_keys_order: std::collections::VecDeque<ConflictKey>,
    /// Own vertices this shard adopted from shard 0 (S > 1): their decisions go back to shard 0.
    adopted_own: std::collections::HashSet<VertexId>,
    /// Conflict keys of submissions not yet created, by internal tag.
    submit_keys: HashMap<u64, Vec<ConflictKey>>,
    /// History sync: next finality position to ask each peer for, a request in flight, and
    /// when to ask next (see `maybe_sync`).
    sync_cursor: Vec<u64>,
    sync_in_flight: bool,
    sync_next_at: Instant,
    sync_rr: usize,
    /// Undecided vertices (processing + pending) at the end of the last turn.
    undecided: u64,
    /// Last reachability reported to the core, per cluster index.
    peer_up: Vec<Option<bool>>,
    /// Incidents the core had counted per peer at the last stats tick (re-banning convicted
    /// peers that misbehave again after their cool-off).
    incidents_seen: HashMap<NodeId, u32>,
}

/// Runs one shard until `setup.stop` is set. Call inside the shard's glommio executor.
pub async fn run_shard(setup: ShardSetup) -> Result<(), ShardError> {
    let mut shard = Shard::open(setup)?;
    if let Some(m) = shard.setup.mesh.take() {
        shard.mesh = Some(ShardMesh::join(m, shard.setup.shard, shard.cross.clone()).await.map_err(ShardError::Mesh)?);
    }
    shard.run().await;
    Ok(())
}

impl Shard {
    fn open(setup: ShardSetup) -> Result<Self, ShardError> {
        let node_ids: Vec<NodeId> = setup.members.iter().map(|(_, pk, _)| NodeId(pk.node_id())).collect();
        let keys = node_ids.iter().copied().zip(setup.members.iter().map(|(_, pk, _)| pk.clone())).collect();
        let index_of = node_ids.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let peers = setup.members.iter().map(|(_, pk, addr)| PeerConfig { public_key: pk.clone(), addr: *addr }).collect();
        let mut tcfg = TransportConfig::new(setup.keypair.clone(), peers, setup.shard, setup.bind);
        tcfg.client_bind = setup.client_bind;
        let transport = Rc::new(ShardTransport::new(tcfg)?);

        let store = RocksStore::open(&setup.store_dir, setup.sync)?;
        let core_cfg = CoreConfig {
            me: node_ids[setup.me],
            nodes: node_ids.clone(),
            params: setup.params.clone(),
            seed: setup.seed,
            shard: u32::from(setup.shard),
            shard_count: u32::from(setup.shard_count),
        };
        let mut core = Core::new(core_cfg, MlDsaSigner(setup.keypair.clone()))?;
        let start = Instant::now();
        core.restore_remote_facts(setup.remote_facts.iter().copied());
        // One sequential pass over the store (point reads in finality order were 1.5x slower):
        // finals before the last RESTORE_FULL_FINALS come back as forgotten ids (one vertex in
        // memory at a time); the tail and every non-final vertex are kept and restored in full.
        let finals = store.finalized_range(0, usize::MAX)?;
        let compact = finals.len().saturating_sub(RESTORE_FULL_FINALS);
        let tail: std::collections::HashSet<VertexId> = finals[compact..].iter().map(|(_, id)| *id).collect();
        drop(finals);
        let mut full = Vec::new();
        store.visit_all(&mut |sv| {
            if matches!(sv.status, Status::Final { .. }) && !tail.contains(&sv.vertex.id) {
                core.restore_forgotten_final(sv.vertex.id, &sv.vertex.conflict_keys);
            } else {
                full.push(sv);
            }
        })?;
        let restored = restore_order(full);
        let n = restored.len() + compact;
        core.restore(0, restored);
        while core.poll_action().is_some() {}
        let s = core.status();
        info!(shard = setup.shard, restored = n, finalized = s.finalized, rejected = s.rejected, processing = s.processing, "shard restored from storage");
        Ok(Shard {
            transport,
            store: Some(store),
            core,
            mailbox: Mailbox::new(),
            verifier: BatchVerifier::new(),
            node_ids,
            index_of,
            keys,
            start,
            pending_responses: HashMap::new(),
            client_submits: HashMap::new(),
            own: HashMap::new(),
            next_tag: 1,
            outstanding: 0,
            last_stats: start,
            last_flood: start,
            peer_up: vec![None; setup.members.len()],
            incidents_seen: HashMap::new(),
            mesh: None,
            own_keys: HashMap::new(),
            own_keys_order: std::collections::VecDeque::new(),
            submit_keys: HashMap::new(),
            undecided: 0,
            sync_cursor: vec![1; setup.members.len()],
            sync_in_flight: false,
            sync_next_at: start,
            sync_rr: 0,
            adopted_own: std::collections::HashSet::new(),
            cross: Mailbox::new(),
            pending_status: HashMap::new(),
            setup,
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn peer_of(&self, node: &NodeId) -> Option<PeerId> {
        self.index_of.get(node).copied().filter(|i| *i != self.setup.me).map(PeerId)
    }

    async fn run(&mut self) {
        self.setup.status.running.store(true, Ordering::Relaxed);
        self.publish_status();
        self.spawn_dialer();
        // Turn pacing: a turn starts at most every `turn_interval_min_us`, so one store batch
        // (fsync) and one wake-up serve more messages; see `NodeConfig::turn_interval_min_us`.
        let turn_min = Duration::from_micros(self.setup.turn_interval_min_us);
        let mut last_turn = Instant::now();
        while !self.setup.stop.load(Ordering::Relaxed) {
            let since = last_turn.elapsed();
            if since < turn_min {
                glommio::timer::Timer::new(turn_min - since).await;
            }
            self.maybe_sync();
            let mut incoming = Vec::new();
            while incoming.len() < TURN_INCOMING_MAX {
                match self.transport.try_recv() {
                    Some(i) => incoming.push(i),
                    None => break,
                }
            }
            let mut replies = Vec::new();
            while let Some(r) = self.mailbox.pop() {
                replies.push(r);
            }
            let mut cross = Vec::new();
            while let Some(m) = self.cross.pop() {
                cross.push(m);
            }
            let now = self.now();
            let due = self.core.poll_timeout().is_some_and(|t| t <= now);
            if incoming.is_empty() && replies.is_empty() && cross.is_empty() && !due {
                let wait = self
                    .core
                    .poll_timeout()
                    .map(|t| Duration::from_micros(t.saturating_sub(now)))
                    .unwrap_or(IDLE_WAIT_MAX)
                    .min(IDLE_WAIT_MAX);
                let transport = self.transport.clone();
                let woke = futures_lite::future::or(
                    async { Some(transport.recv().await) },
                    futures_lite::future::or(
                        async {
                            futures_lite::future::or(self.mailbox.ready(), self.cross.ready()).await;
                            None
                        },
                        async {
                            glommio::timer::Timer::new(wait).await;
                            None
                        },
                    ),
                )
                .await;
                if let Some(i) = woke {
                    incoming.push(i);
                } else {
                    continue;
                }
            }
            last_turn = Instant::now();
            self.turn(incoming, replies, cross).await;
        }
        info!(shard = self.setup.shard, "shard stopping: closing connections");
        self.transport.shutdown();
        if let Some(m) = &self.mesh {
            m.close();
        }
        self.setup.status.running.store(false, Ordering::Relaxed);
    }

    /// Keeps a verified connection to every peer: dials the ones that are down once a second
    /// (the transport adds backoff and jitter), so `/health` reflects reachability before the
    /// first poll needs it.
    ///
    /// Of each pair, the lower-indexed node dials; the other dials too only once the peer has
    /// been down for `DIAL_FALLBACK`. Both sides dialing at once costs two post-quantum
    /// handshakes and a tie-break per pair, and at 100 nodes starting together that storm
    /// (~10 000 handshakes) starved every process past its handshake timeouts. Handshakes in
    /// flight are capped for the same reason.
    fn spawn_dialer(&self) {
        const DIAL_FALLBACK: Duration = Duration::from_secs(3);
        const DIALS_IN_FLIGHT_MAX: usize = 8;
        let transport = self.transport.clone();
        let me = self.setup.me;
        let peers: Vec<PeerId> = (0..self.node_ids.len()).filter(|i| *i != me).map(PeerId).collect();
        let stop = self.setup.stop.clone();
        glommio::spawn_local(async move {
            let in_flight = std::rc::Rc::new(std::cell::Cell::new(0usize));
            let mut down_since: Vec<Option<Instant>> = vec![None; peers.iter().map(|p| p.0 + 1).max().unwrap_or(0)];
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                for p in &peers {
                    if transport.is_connected(*p) {
                        down_since[p.0] = None;
                        continue;
                    }
                    let since = *down_since[p.0].get_or_insert(now);
                    if p.0 < me && now.duration_since(since) < DIAL_FALLBACK {
                        continue; // the peer dials us
                    }
                    if in_flight.get() >= DIALS_IN_FLIGHT_MAX {
                        break;
                    }
                    in_flight.set(in_flight.get() + 1);
                    let (t, p, n) = (transport.clone(), *p, in_flight.clone());
                    glommio::spawn_local(async move {
                        let _ = t.connect(p, Duration::from_secs(2)).await;
                        n.set(n.get() - 1);
                    })
                    .detach();
                }
                glommio::timer::Timer::new(Duration::from_secs(1)).await;
            }
        })
        .detach();
    }

    fn invalid(&mut self, from: Option<NodeId>, why: &str, kind: Misbehaviour) {
        self.setup.metrics.invalid.get_or_create(&KindLabel { kind: why.to_owned() }).inc();
        if let Some(from) = from {
            debug!(peer = %from, why, "refused frame");
            let was_excluded = self.core.is_excluded(&from);
            let _ = self.core.handle(self.now(), Event::InvalidMessage { from, kind });
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
        let Some(p) = self.peer_of(&peer) else { return };
        if self.transport.is_banned(p) {
            return;
        }
        if let Ok(true) = self.transport.ban_peer(p, BAN_COOL_OFF) {
            self.setup.metrics.peer_bans.inc();
            let name = &self.setup.members[p.0].0;
            warn!(peer = %name, node_id = %peer, ?reason, cool_off_s = BAN_COOL_OFF.as_secs(), why, "disconnecting Byzantine peer: proven misbehaviour");
        }
    }

    async fn turn(&mut self, incoming: Vec<Incoming>, replies: Vec<Reply>, cross: Vec<MeshMsg>) {
        if self.setup.byzantine == Some(super::byzantine::ByzantineMode::Flood) && self.last_flood.elapsed() >= Duration::from_millis(10) {
            self.last_flood = Instant::now();
            self.next_tag += 1;
            let junk = super::byzantine::flood(self.node_ids[self.setup.me], self.next_tag);
            let peers: Vec<PeerId> = (0..self.node_ids.len()).filter(|i| *i != self.setup.me).map(PeerId).collect();
            for j in &junk {
                self.transport.broadcast_vertex(&peers, j);
            }
        }
        let mut unverified = Vec::new();
        let mut events = Vec::new();
        for inc in incoming {
            self.decode_incoming(inc, &mut unverified, &mut events);
        }
        for r in replies {
            self.decode_reply(r, &mut unverified);
        }
        self.verify(unverified, &mut events);
        let mut decided: HashMap<ClientId, Vec<FinalityEvent>> = HashMap::new();
        for m in cross {
            self.on_mesh(m, &mut events, &mut decided);
        }
        self.send_client_events(decided);
        let mut now = self.now();
        for e in events {
            let submit_tag = match &e {
                Event::Submit { client_tag, .. } => Some(*client_tag),
                _ => None,
            };
            let query_key = match &e {
                Event::Query { from, query } => Some((*from, query.query_id)),
                _ => None,
            };
            if let Err(err) = self.core.handle(now, e) {
                debug!(error = %err, "core refused an event");
                // A refused query is never answered: drop its responder (the asker's stream is
                // reset) instead of letting it occupy the bounded map.
                if let Some(k) = query_key {
                    self.pending_responses.remove(&k);
                }
                // A refused submission is answered, never left hanging.
                if let Some(t) = submit_tag {
                    self.submit_keys.remove(&t);
                }
                if let Some((reply, _, tag)) = submit_tag.and_then(|t| self.client_submits.remove(&t)) {
                    let code = match err {
                        pqdag_core::ConsensusError::Dag(_) => ClientErrorCode::Conflict,
                        pqdag_core::ConsensusError::Capacity(_) => ClientErrorCode::Overloaded,
                        _ => ClientErrorCode::Internal,
                    };
                    if let Ok(b) = encode(&ClientReply::Error { tag, code, message: err.to_string() }) {
                        let _ = reply.send(b);
                    }
                }
            }
        }
        now = self.now();
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.core.handle(now, Event::Timer);
        }
        let mut actions = Vec::new();
        while let Some(a) = self.core.poll_action() {
            actions.push(a);
        }
        if !actions.is_empty() {
            self.execute(actions).await;
        }
        self.publish_status();
    }

    fn decode_incoming(&mut self, inc: Incoming, out: &mut Vec<Unverified>, events: &mut Vec<Event>) {
        match inc {
            Incoming::Vertex { peer, bytes } => {
                let from = self.node_ids[peer.0];
                match decode(&bytes) {
                    Ok(FrameRef::Vertex(a)) => {
                        if a.id_matches() {
                            out.push(Unverified::Vertex { from, vertex: a.to_owned() });
                        } else {
                            self.invalid(Some(from), "vertex_id_mismatch", Misbehaviour::Malformed);
                        }
                    }
                    Ok(FrameRef::Frontier(f)) => match rkyv::deserialize::<pqdag_wire::Frontier, rkyv::rancor::Error>(f) {
                        Ok(frontier) if frontier.sender == from => events.push(Event::Frontier { from, frontier }),
                        _ => self.invalid(Some(from), "frontier", Misbehaviour::Malformed),
                    },
                    Ok(FrameRef::Alert(a)) => match rkyv::deserialize::<pqdag_wire::Alert, rkyv::rancor::Error>(a) {
                        Ok(alert) if alert.reporter == from && evidence_well_formed(&alert) => out.push(Unverified::Alert { from, alert }),
                        _ => self.invalid(Some(from), "alert", Misbehaviour::Malformed),
                    },
                    Ok(other) => self.invalid(Some(from), other.kind().name(), Misbehaviour::Malformed),
                    Err(e) => self.invalid(Some(from), wire_reason(&e), Misbehaviour::Malformed),
                }
            }
            Incoming::Query { peer, bytes, reply } => {
                let from = self.node_ids[peer.0];
                match decode(&bytes) {
                    Ok(FrameRef::Query(q)) if q.requester.0 == from.0 => {
                        out.push(Unverified::Query { from, query: q.to_owned(), reply });
                    }
                    Ok(_) => self.invalid(Some(from), "query_mismatch", Misbehaviour::Malformed),
                    Err(e) => self.invalid(Some(from), wire_reason(&e), Misbehaviour::Malformed),
                }
            }
            Incoming::VertexRequest { peer, bytes, reply } => {
                let from = self.node_ids[peer.0];
                match decode(&bytes) {
                    Ok(FrameRef::VertexRequest(r)) => {
                        // Answered here, always (possibly with nothing): from the core's memory
                        // while a vertex is recent, else from the store (old finals are stripped
                        // in memory). Everything in memory was persisted in an earlier turn.
                        let ids: Vec<VertexId> = r.ids.iter().take(pqdag_wire::limits::REQUEST_IDS_MAX).map(Into::into).collect();
                        let vertices = self.lookup_vertices(&ids);
                        send_trimmed(reply, VertexReply { request_id: r.request_id.to_native(), vertices });
                    }
                    Ok(FrameRef::SyncRequest(r)) => self.serve_sync(r.request_id.to_native(), r.from_position.to_native(), r.max.to_native(), reply),
                    Ok(_) => self.invalid(Some(from), "request_kind", Misbehaviour::Malformed),
                    Err(e) => self.invalid(Some(from), wire_reason(&e), Misbehaviour::Malformed),
                }
            }
            Incoming::ClientSubmit { client, bytes, reply } => self.client_request(client, &bytes, reply, events),
            Incoming::Event { .. } => {}
        }
    }

    fn client_request(&mut self, client: ClientId, bytes: &[u8], reply: Responder, events: &mut Vec<Event>) {
        let error = |tag: u64, code: ClientErrorCode, message: String| ClientReply::Error { tag, code, message };
        let answer = match decode(bytes) {
            Ok(FrameRef::ClientRequest(ArchivedClientRequest::Submit { tag, payload, conflict_keys })) => {
                let tag = tag.to_native();
                let keys: Vec<ConflictKey> = conflict_keys.iter().map(ConflictKey::from).collect();
                let spent = keys
                    .iter()
                    .find(|k| self.own_keys.contains_key(*k) || self.submit_keys.values().any(|ks| ks.contains(*k)) || self.core.preference(k).is_some())
                    .copied();
                let undecided = self.undecided;
                if self.own.len() + self.client_submits.len() >= CLIENT_INFLIGHT_MAX || undecided >= ADMIT_UNDECIDED_MAX {
                    self.setup.metrics.invalid.get_or_create(&KindLabel { kind: "client_overloaded".into() }).inc();
                    Some(error(tag, ClientErrorCode::Overloaded, format!("{undecided} vertices undecided, {} own submissions in flight; retry later", self.own.len())))
                } else if let Some(k) = spent {
                    // An honest node never signs a vertex conflicting with one it already knows:
                    // that would make it an equivocator. The double spend is refused here; one
                    // submitted concurrently elsewhere is decided by consensus (4.5).
                    self.setup.metrics.invalid.get_or_create(&KindLabel { kind: "client_double_spend".into() }).inc();
                    Some(error(tag, ClientErrorCode::Conflict, format!("conflict key {k} is already spent by a known vertex")))
                } else {
                    let internal = self.next_tag;
                    self.next_tag += 1;
                    self.client_submits.insert(internal, (reply, client, tag));
                    self.submit_keys.insert(internal, keys);
                    self.setup.metrics.submitted.inc();
                    events.push(Event::Submit {
                        payload: payload.as_slice().to_vec(),
                        conflict_keys: conflict_keys.iter().map(Into::into).collect(),
                        client_tag: internal,
                        timestamp_ms: wall_ms(),
                    });
                    return;
                }
            }
            Ok(FrameRef::ClientRequest(ArchivedClientRequest::Status { tag, ids })) => {
                let ids: Vec<VertexId> = ids.iter().map(Into::into).collect();
                let count = u32::from(self.setup.shard_count);
                let mut statuses = Vec::with_capacity(ids.len());
                let mut remote: HashMap<usize, (Vec<usize>, Vec<VertexId>)> = HashMap::new();
                for (i, id) in ids.iter().enumerate() {
                    let owner = pqdag_core::shard_of_vertex(id, count) as usize;
                    if owner == usize::from(self.setup.shard) || self.mesh.is_none() {
                        statuses.push(self.local_status(id));
                    } else {
                        statuses.push(ClientStatus::Unknown);
                        let e = remote.entry(owner).or_default();
                        e.0.push(i);
                        e.1.push(*id);
                    }
                }
                if remote.is_empty() {
                    Some(ClientReply::Statuses { tag: tag.to_native(), statuses })
                } else {
                    self.next_tag += 1;
                    let req = self.next_tag;
                    let mut slots = HashMap::new();
                    for (shard, (positions, shard_ids)) in remote {
                        slots.insert(shard, positions);
                        if let Some(m) = &self.mesh {
                            m.send(shard, MeshMsg::StatusQuery { req, ids: shard_ids });
                        }
                    }
                    self.pending_status.insert(req, PendingStatus { reply, tag: tag.to_native(), statuses, slots });
                    return;
                }
            }
            Ok(FrameRef::ClientRequest(ArchivedClientRequest::Subscribe)) => Some(ClientReply::Events { events: vec![] }),
            Ok(other) => Some(error(0, ClientErrorCode::Malformed, format!("unexpected {} frame", other.kind().name()))),
            Err(e) => {
                self.setup.metrics.invalid.get_or_create(&KindLabel { kind: "client_malformed".into() }).inc();
                Some(error(0, ClientErrorCode::Malformed, e.to_string()))
            }
        };
        if let Some(a) = answer {
            if let Ok(b) = encode(&a) {
                let _ = reply.send(b);
            }
        }
    }

    fn decode_reply(&mut self, r: Reply, out: &mut Vec<Unverified>) {
        self.outstanding = self.outstanding.saturating_sub(1);
        match r {
            Reply::Response { peer, sent, result } => {
                let from = self.node_ids[peer.0];
                let Ok(bytes) = result else { return }; // the core times the poll out itself
                self.setup.metrics.query_rtt.observe(sent.elapsed().as_secs_f64());
                match decode(&bytes) {
                    Ok(FrameRef::Response(r)) if r.responder.0 == from.0 => out.push(Unverified::Response { from, response: r.to_owned() }),
                    Ok(_) => self.invalid(Some(from), "response_mismatch", Misbehaviour::Malformed),
                    Err(e) => self.invalid(Some(from), wire_reason(&e), Misbehaviour::Malformed),
                }
            }
            Reply::Sync { peer, result } => self.on_sync_reply(peer, result),
            Reply::Vertices { peer, result } => {
                let from = self.node_ids[peer.0];
                let Ok(bytes) = result else { return };
                match decode(&bytes) {
                    Ok(FrameRef::VertexReply(r)) => {
                        let mut vertices = Vec::with_capacity(r.vertices.len());
                        for v in r.vertices.iter() {
                            if !v.id_matches() {
                                self.invalid(Some(from), "vertex_id_mismatch", Misbehaviour::Malformed);
                                return;
                            }
                            vertices.push(v.to_owned());
                        }
                        out.push(Unverified::Reply { from, vertices });
                    }
                    Ok(_) => self.invalid(Some(from), "reply_kind", Misbehaviour::Malformed),
                    Err(e) => self.invalid(Some(from), wire_reason(&e), Misbehaviour::Malformed),
                }
            }
        }
    }

    /// Verifies every signature of the turn in one batch, then turns the survivors into events.
    fn verify(&mut self, items: Vec<Unverified>, events: &mut Vec<Event>) {
        if items.is_empty() {
            return;
        }
        // Signed bytes that are not borrowed from the message itself.
        let owned_msgs: Vec<Vec<Vec<u8>>> = items
            .iter()
            .map(|u| match u {
                Unverified::Query { query, .. } => vec![query.signed_bytes()],
                Unverified::Response { response, .. } => vec![response.signed_bytes()],
                Unverified::Alert { alert, .. } => {
                    let mut v = vec![alert.signed_bytes()];
                    if let pqdag_wire::Evidence::ConflictingResponses { a, b } = &alert.evidence {
                        v.push(a.signed_bytes());
                        v.push(b.signed_bytes());
                    }
                    v
                }
                _ => Vec::new(),
            })
            .collect();
        // (signer, domain, signed bytes, signature) per signature, borrowed from the items.
        let mut wanted: Vec<(NodeId, Domain, &[u8], &[u8])> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(items.len());
        for (i, u) in items.iter().enumerate() {
            let start = wanted.len();
            match u {
                Unverified::Vertex { vertex, .. } => wanted.push((vertex.creator, Domain::Vertex, vertex.signed_bytes(), &vertex.signature)),
                Unverified::Query { from, query, .. } => wanted.push((*from, Domain::Query, &owned_msgs[i][0], &query.signature)),
                Unverified::Response { from, response } => wanted.push((*from, Domain::Response, &owned_msgs[i][0], &response.signature)),
                Unverified::Alert { from, alert } => {
                    wanted.push((*from, Domain::Alert, &owned_msgs[i][0], &alert.signature));
                    match &alert.evidence {
                        pqdag_wire::Evidence::ConflictingResponses { a, b } => {
                            wanted.push((alert.accused, Domain::Response, &owned_msgs[i][1], &a.signature));
                            wanted.push((alert.accused, Domain::Response, &owned_msgs[i][2], &b.signature));
                        }
                        pqdag_wire::Evidence::Equivocation { a, b } => {
                            wanted.push((alert.accused, Domain::Vertex, a.signed_bytes(), &a.signature));
                            wanted.push((alert.accused, Domain::Vertex, b.signed_bytes(), &b.signature));
                        }
                    }
                }
                Unverified::Reply { vertices, .. } => {
                    for v in vertices {
                        wanted.push((v.creator, Domain::Vertex, v.signed_bytes(), &v.signature));
                    }
                }
            }
            spans.push((start, wanted.len()));
        }
        let keys = &self.keys;
        let known: Vec<bool> = wanted.iter().map(|(signer, ..)| keys.contains_key(signer)).collect();
        let batch: Vec<BatchItem<'_>> = wanted
            .iter()
            .filter_map(|(signer, domain, message, signature)| {
                keys.get(signer).map(|public_key| BatchItem { public_key, domain: *domain, message, signature })
            })
            .collect();
        self.setup.metrics.verify_batch.observe(batch.len() as f64);
        let verified = self.verifier.verify(&batch);
        drop(batch);
        // Re-expand to one slot per wanted signature (unknown signers fail).
        let mut it = verified.into_iter();
        let ok: Vec<bool> = known.iter().map(|k| *k && it.next().unwrap_or(false)).collect();
        drop(wanted);
        for (i, u) in items.into_iter().enumerate() {
            let (a, b) = spans[i];
            let all_ok = ok[a..b].iter().all(|x| *x);
            match u {
                Unverified::Vertex { from, vertex } if all_ok => events.push(Event::Vertex { from, vertex: Arc::new(vertex) }),
                Unverified::Query { from, query, reply } if all_ok => {
                    if self.pending_responses.len() < PENDING_REPLIES_MAX {
                        self.pending_responses.insert((from, query.query_id), reply);
                        events.push(Event::Query { from, query: Arc::new(query) });
                    }
                }
                Unverified::Response { from, response } if all_ok => {
                    self.setup.metrics.responses.inc();
                    events.push(Event::Response { from, response });
                }
                Unverified::Reply { from, vertices } if all_ok => {
                    events.push(Event::VertexReply { from, vertices: vertices.into_iter().map(Arc::new).collect() })
                }
                Unverified::Alert { from, alert } if all_ok => {
                    self.setup.metrics.alerts_verified.inc();
                    events.push(Event::Alert { from, accused: alert.accused, evidence: alert.evidence });
                }
                Unverified::Alert { from, .. } => {
                    // A proof that does not verify is a false accusation: charge the reporter.
                    self.invalid(Some(from), "false_alert", Misbehaviour::InvalidSignature);
                }
                Unverified::Vertex { from, .. } | Unverified::Reply { from, .. } => {
                    // A relayed vertex may be signed by a third party: charge the relay only for
                    // a bad signature, which an honest relay never forwards (it verifies first).
                    self.invalid(Some(from), "invalid_signature", Misbehaviour::InvalidSignature);
                }
                Unverified::Query { from, .. } | Unverified::Response { from, .. } => {
                    self.invalid(Some(from), "invalid_signature", Misbehaviour::InvalidSignature);
                }
            }
        }
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        // 1. Durability first: every persist of the turn in one atomic batch, before any send.
        let positions: HashMap<VertexId, u64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Finalized { id, position, .. } => Some((*id, *position)),
                _ => None,
            })
            .collect();
        let mut batch = StoreBatch::new();
        for a in &actions {
            if let Action::Persist { vertex, status } = a {
                batch.put_vertex((**vertex).clone());
                match status {
                    VertexStatus::Processing => {}
                    VertexStatus::Final => match positions.get(&vertex.id) {
                        Some(p) => batch.set_status(vertex.id, Status::Final { position: *p }),
                        None => warn!(id = %vertex.id, "final persist without a position in the same turn"),
                    },
                    VertexStatus::Rejected => batch.set_status(vertex.id, Status::Rejected),
                }
            }
        }
        if !batch.is_empty() {
            let t = Instant::now();
            // The write (and its fsync) runs on the executor's blocking thread, so the shard's
            // QUIC I/O keeps flowing meanwhile; this turn's sends wait for it (persist first).
            // The store moves there and back: one owner at a time, no lock.
            let Some(mut store) = self.store.take() else {
                self.setup.stop.store(true, Ordering::Relaxed);
                return;
            };
            let (store, result) = glommio::executor()
                .spawn_blocking(move || {
                    let r = store.write(batch);
                    (store, r)
                })
                .await;
            self.store = Some(store);
            if let Err(e) = result {
                // Without durability the node must not vote or announce: stop the node.
                tracing::error!(error = %e, "store write failed; stopping the node");
                self.setup.stop.store(true, Ordering::Relaxed);
                return;
            }
            self.setup.metrics.store_batches.inc();
            self.setup.metrics.store_write.observe(t.elapsed().as_secs_f64());
        }
        // 2. Creations first: the core may decide a vertex in the same batch that creates it
        //    (a double spend of an already decided key), and its decision must find its client.
        for a in &actions {
            if let Action::Created { client_tag, id } = a {
                self.created(*client_tag, *id);
            }
        }
        // 3. Everything else, in order.
        let mut client_events: HashMap<ClientId, Vec<FinalityEvent>> = HashMap::new();
        for a in actions {
            match a {
                Action::Persist { .. } | Action::Created { .. } => {}
                Action::SendVertex { to, vertex } if self.byzantine_vertex(&to, &vertex) => {}
                Action::SendVertex { to, vertex } => {
                    if let Ok(bytes) = encode(&*vertex) {
                        let peers: Vec<PeerId> = to.iter().filter_map(|n| self.peer_of(n)).collect();
                        self.transport.broadcast_vertex(&peers, &bytes);
                    }
                }
                Action::SendQuery { to, query } => {
                    let Ok(bytes) = encode(&*query) else { continue };
                    let timeout = Duration::from_micros(self.setup.params.query_timeout_us);
                    for n in &to {
                        let Some(peer) = self.peer_of(n) else { continue };
                        if self.outstanding >= PENDING_REPLIES_MAX {
                            break;
                        }
                        self.outstanding += 1;
                        let (t, mb, b) = (self.transport.clone(), self.mailbox.clone(), bytes.clone());
                        glommio::spawn_local(async move {
                            let sent = Instant::now();
                            let result = t.send_query(peer, b, timeout).await;
                            mb.push(Reply::Response { peer, sent, result });
                        })
                        .detach();
                    }
                    self.setup.metrics.polls.inc();
                }
                Action::SendResponse { to, response } => {
                    let Some(reply) = self.pending_responses.remove(&(to, response.query_id)) else { continue };
                    let bytes = match self.setup.byzantine {
                        Some(mode) => super::byzantine::tamper_response(mode, &self.setup.keypair, response),
                        None => encode(&response).ok(),
                    };
                    // Withholding drops the responder: the asker's stream is reset.
                    if let Some(bytes) = bytes {
                        let _ = reply.send(bytes);
                    }
                }
                Action::RequestVertices { to, request } => {
                    let (Some(peer), Ok(bytes)) = (self.peer_of(&to), encode(&request)) else { continue };
                    if self.outstanding >= PENDING_REPLIES_MAX {
                        continue;
                    }
                    self.outstanding += 1;
                    let timeout = Duration::from_micros(self.setup.params.query_timeout_us);
                    let (t, mb) = (self.transport.clone(), self.mailbox.clone());
                    glommio::spawn_local(async move {
                        let result = t.request_vertices(peer, bytes, timeout).await;
                        mb.push(Reply::Vertices { peer, result });
                    })
                    .detach();
                }
                // Fetches are answered by the shell (memory or store), never through the core.
                Action::SendVertices { .. } => {}
                Action::SendFrontier { to, frontier } => {
                    if let Ok(bytes) = encode(&frontier) {
                        let peers: Vec<PeerId> = to.iter().filter_map(|n| self.peer_of(n)).collect();
                        self.transport.broadcast_vertex(&peers, &bytes);
                    }
                }
                Action::Finalized { id, latency_us, .. } => {
                    self.setup.metrics.finalized.inc();
                    self.setup.metrics.finality_latency.observe(latency_us as f64 / 1e6);
                    let status = ClientStatus::Final { shard: self.setup.shard, position: positions.get(&id).copied().unwrap_or(0) };
                    if let Some(own) = self.own.remove(&id) {
                        let latency_us = own.created.elapsed().as_micros() as u64;
                        client_events.entry(own.client).or_default().push(FinalityEvent { id, status, latency_us });
                    } else {
                        self.tell_client_shard(id, status);
                    }
                }
                Action::Rejected { id } => {
                    self.setup.metrics.rejected.inc();
                    if let Some(own) = self.own.remove(&id) {
                        let latency_us = own.created.elapsed().as_micros() as u64;
                        client_events.entry(own.client).or_default().push(FinalityEvent { id, status: ClientStatus::Rejected, latency_us });
                    } else {
                        self.tell_client_shard(id, ClientStatus::Rejected);
                    }
                }
                Action::Alert { peer, reason, evidence, score } => {
                    let name = self.index_of.get(&peer).map(|i| self.setup.members[*i].0.clone()).unwrap_or_default();
                    let evidence_id = evidence.as_ref().map(|e| pqdag_wire::VertexId(e.digest()).to_hex());
                    warn!(peer = %name, node_id = %peer, ?reason, score, evidence = evidence_id.as_deref().unwrap_or("none"), "Byzantine peer excluded");
                    self.setup.metrics.alerts.get_or_create(&KindLabel { kind: format!("{reason:?}") }).inc();
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
                Action::ToShard { shard, msg } => match &self.mesh {
                    Some(m) => {
                        if !m.send(shard as usize, MeshMsg::Core(msg)) {
                            warn!(shard, "shard mesh queue full: cross-shard message dropped");
                        }
                    }
                    None => warn!(shard, "cross-shard message without a shard mesh"),
                },
            }
        }
        self.send_client_events(client_events);
    }

    /// History sync (catch-up after a long outage or a lost disk): walk each connected peer's
    /// finality log of this shard from where we left it, and fetch by id what we do not have.
    /// Frontier announcements only reach vertices near the tips; this reaches all of history.
    fn maybe_sync(&mut self) {
        if self.sync_in_flight || Instant::now() < self.sync_next_at {
            return;
        }
        let n = self.node_ids.len();
        let Some(peer) = (1..=n)
            .map(|k| (self.sync_rr + k) % n)
            .find(|i| *i != self.setup.me && self.peer_up[*i] == Some(true))
        else {
            self.sync_next_at = Instant::now() + SYNC_IDLE;
            return;
        };
        self.sync_rr = peer;
        self.next_tag += 1;
        let req = pqdag_wire::SyncRequest { request_id: self.next_tag, from_position: self.sync_cursor[peer], max: SYNC_BATCH };
        let Ok(bytes) = encode(&req) else { return };
        self.sync_in_flight = true;
        let (t, mb, p) = (self.transport.clone(), self.mailbox.clone(), PeerId(peer));
        let timeout = Duration::from_micros(self.setup.params.query_timeout_us.max(1_000_000) * 2);
        self.outstanding += 1;
        glommio::spawn_local(async move {
            let result = t.request_vertices(p, bytes, timeout).await;
            mb.push(Reply::Sync { peer: p, result });
        })
        .detach();
    }

    fn on_sync_reply(&mut self, peer: PeerId, result: Result<Vec<u8>, pqdag_transport::TransportError>) {
        self.sync_in_flight = false;
        self.sync_next_at = Instant::now() + SYNC_IDLE;
        let Ok(bytes) = result else { return };
        let from = self.node_ids[peer.0];
        let reply = match decode(&bytes) {
            Ok(FrameRef::SyncReply(r)) => r,
            Ok(_) => return self.invalid(Some(from), "sync_reply_kind", Misbehaviour::Malformed),
            Err(e) => return self.invalid(Some(from), wire_reason(&e), Misbehaviour::Malformed),
        };
        let next = reply.next_position.to_native();
        if next < self.sync_cursor[peer.0] {
            return; // stale or rewound reply: ignore
        }
        self.sync_cursor[peer.0] = next;
        if reply.ids.len() as u32 >= SYNC_BATCH {
            self.sync_next_at = Instant::now(); // more to walk: go on at once
        }
        let missing: Vec<VertexId> = reply.ids.iter().map(VertexId::from).filter(|id| !self.core.contains(id)).collect();
        if !missing.is_empty() {
            self.setup.metrics.invalid.get_or_create(&KindLabel { kind: "sync_missing_fetched".into() }).inc_by(missing.len() as u64);
        }
        let timeout = Duration::from_micros(self.setup.params.query_timeout_us.max(1_000_000) * 2);
        for chunk in missing.chunks(pqdag_wire::limits::REPLY_VERTICES_MAX) {
            self.next_tag += 1;
            let Ok(bytes) = encode(&VertexRequest { request_id: self.next_tag, ids: chunk.to_vec() }) else { continue };
            self.outstanding += 1;
            let (t, mb) = (self.transport.clone(), self.mailbox.clone());
            glommio::spawn_local(async move {
                let result = t.request_vertices(peer, bytes, timeout).await;
                mb.push(Reply::Vertices { peer, result });
            })
            .detach();
        }
    }

    /// Answers a history-sync request from this shard's finality index in the store.
    fn serve_sync(&mut self, request_id: u64, from_position: u64, max: u32, reply: Responder) {
        let max = (max as usize).min(pqdag_wire::limits::SYNC_IDS_MAX);
        let range = match &self.store {
            Some(store) => store.finalized_range(from_position.max(1), max).unwrap_or_default(),
            None => Vec::new(),
        };
        let next_position = range.last().map(|(p, _)| p + 1).unwrap_or(from_position.max(1));
        let ids = range.into_iter().map(|(_, id)| id).collect();
        if let Ok(b) = encode(&pqdag_wire::SyncReply { request_id, next_position, ids }) {
            let _ = reply.send(b);
        }
    }

    fn gossip_alert(&mut self, accused: NodeId, evidence: pqdag_wire::Evidence) {
        let me = self.node_ids[self.setup.me];
        let mut alert = pqdag_wire::Alert { reporter: me, accused, evidence, signature: Vec::new() };
        match self.setup.keypair.sign(Domain::Alert, &alert.signed_bytes()) {
            Ok(sig) => alert.signature = sig.into_bytes(),
            Err(_) => return,
        }
        let Ok(bytes) = encode(&alert) else { return };
        let peers: Vec<PeerId> = (0..self.node_ids.len()).filter(|i| *i != self.setup.me && self.node_ids[*i] != accused).map(PeerId).collect();
        self.transport.broadcast_vertex(&peers, &bytes);
    }

    fn send_client_events(&self, client_events: HashMap<ClientId, Vec<FinalityEvent>>) {
        for (client, events) in client_events {
            for chunk in events.chunks(pqdag_wire::CLIENT_EVENTS_MAX) {
                if let Ok(b) = encode(&ClientReply::Events { events: chunk.to_vec() }) {
                    let _ = self.transport.send_client_event(client, b);
                }
            }
        }
    }

    /// A submission became vertex `id` (on this shard, or adopted by this shard).
    fn created(&mut self, client_tag: u64, id: VertexId) {
        if self.setup.shard != 0 {
            self.adopted_own.insert(id);
            if let Some(m) = &self.mesh {
                m.send(0, MeshMsg::Created { client_tag, id });
            }
            return;
        }
        self.remember_own_keys(client_tag, id);
        if let Some((reply, client, tag)) = self.client_submits.remove(&client_tag) {
            self.own.insert(id, OwnSubmission { client, created: Instant::now() });
            if let Ok(b) = encode(&ClientReply::Submitted { tag, id }) {
                let _ = reply.send(b);
            }
        }
    }

    fn remember_own_keys(&mut self, client_tag: u64, id: VertexId) {
        for k in self.submit_keys.remove(&client_tag).unwrap_or_default() {
            if self.own_keys.insert(k, id).is_none() {
                self.own_keys_order.push_back(k);
            }
        }
        while self.own_keys_order.len() > OWN_KEYS_MAX {
            if let Some(k) = self.own_keys_order.pop_front() {
                self.own_keys.remove(&k);
            }
        }
    }

    /// An own vertex decided on a shard other than 0: shard 0 holds the client connection.
    fn tell_client_shard(&mut self, id: VertexId, status: ClientStatus) {
        if !self.adopted_own.remove(&id) {
            return;
        }
        if let Some(mesh) = &self.mesh {
            mesh.send(0, MeshMsg::Decided { id, status });
        }
    }

    fn local_status(&self, id: &VertexId) -> ClientStatus {
        match self.core.vertex_status(id) {
            None => ClientStatus::Unknown,
            Some(VertexStatus::Processing) => ClientStatus::Processing,
            Some(VertexStatus::Rejected) => ClientStatus::Rejected,
            Some(VertexStatus::Final) => ClientStatus::Final { shard: self.setup.shard, position: 0 },
        }
    }

    fn on_mesh(&mut self, m: MeshMsg, events: &mut Vec<Event>, decided: &mut HashMap<ClientId, Vec<FinalityEvent>>) {
        match m {
            MeshMsg::Core(msg) => events.push(Event::FromShard(msg)),
            MeshMsg::Created { client_tag, id } => self.created(client_tag, id),
            MeshMsg::Decided { id, status } => {
                if let Some(own) = self.own.remove(&id) {
                    let latency_us = own.created.elapsed().as_micros() as u64;
                    decided.entry(own.client).or_default().push(FinalityEvent { id, status, latency_us });
                }
            }
            MeshMsg::StatusQuery { req, ids } => {
                let statuses = ids.iter().map(|id| self.local_status(id)).collect();
                if let Some(mesh) = &self.mesh {
                    mesh.send(0, MeshMsg::StatusReply { req, shard: usize::from(self.setup.shard), statuses });
                }
            }
            MeshMsg::StatusReply { req, shard, statuses } => {
                let Some(p) = self.pending_status.get_mut(&req) else { return };
                if let Some(slots) = p.slots.remove(&shard) {
                    for (slot, st) in slots.into_iter().zip(statuses) {
                        p.statuses[slot] = st;
                    }
                }
                if p.slots.is_empty() {
                    if let Some(p) = self.pending_status.remove(&req) {
                        if let Ok(b) = encode(&ClientReply::Statuses { tag: p.tag, statuses: p.statuses }) {
                            let _ = p.reply.send(b);
                        }
                    }
                }
            }
        }
    }

    /// Byzantine test modes: sends a tampered own vertex instead of the honest one. Returns
    /// whether it handled the action.
    fn byzantine_vertex(&mut self, to: &[NodeId], vertex: &Vertex) -> bool {
        let Some(mode) = self.setup.byzantine else { return false };
        if vertex.creator != self.node_ids[self.setup.me] {
            return false;
        }
        let Some((first, second)) = super::byzantine::tamper_own_vertex(mode, &self.setup.keypair, vertex) else { return false };
        let _ = to;
        // Split every peer in two halves so each half sees a different story.
        let peers: Vec<PeerId> = (0..self.node_ids.len()).filter(|i| *i != self.setup.me).map(PeerId).collect();
        let (a, b) = peers.split_at(peers.len() / 2);
        self.transport.broadcast_vertex(a, &first);
        self.transport.broadcast_vertex(b, &second);
        true
    }

    /// Full, signed vertices for `ids` (at most a reply's worth), from memory or the store.
    fn lookup_vertices(&self, ids: &[VertexId]) -> Vec<Vertex> {
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= pqdag_wire::limits::REPLY_VERTICES_MAX {
                break;
            }
            match self.core.vertex(id) {
                Some(v) if !v.signature.is_empty() => out.push((**v).clone()),
                Some(v) if v.parents.is_empty() => {} // genesis: every node has it
                _ => {
                    if let Some(Ok(Some(sv))) = self.store.as_ref().map(|s| s.get(id)) {
                        out.push(sv.vertex);
                    }
                }
            }
        }
        out
    }

    fn publish_status(&mut self) {
        let s = self.core.status();
        self.undecided = s.processing + s.pending;
        let st = self.setup.status.clone(); // owned: the stats tick below may ban a peer (&mut self)
        st.finalized.store(s.finalized, Ordering::Relaxed);
        st.rejected.store(s.rejected, Ordering::Relaxed);
        st.processing.store(s.processing, Ordering::Relaxed);
        st.partition_suspected.store(s.partition_suspected, Ordering::Relaxed);
        if let Ok(mut d) = st.digest.lock() {
            *d = s.finalized_digest;
        }
        if self.setup.shard == 0 {
            self.setup.metrics.processing.set(s.processing as i64);
            self.setup.metrics.partition_suspected.set(i64::from(s.partition_suspected));
            self.setup.metrics.poll_window.set(self.core.poll_window() as i64);
        }
        if self.last_stats.elapsed() >= Duration::from_secs(1) {
            self.last_stats = Instant::now();
            let shard = self.setup.shard.to_string();
            let label = |kind: &str| super::metrics::ShardKindLabel { shard: shard.clone(), kind: kind.into() };
            if let Some(store) = &self.store {
                let mem = store.memory();
                for (kind, v) in [("memtables", mem.memtables), ("table_readers", mem.table_readers), ("block_cache", mem.block_cache)] {
                    self.setup.metrics.store_memory.get_or_create(&label(kind)).set(v as i64);
                }
            }
            let (vertices, sets, forgotten, keys) = self.core.record_counts();
            for (kind, v) in [("vertices", vertices), ("conflict_sets", sets), ("forgotten_ids", forgotten), ("forgotten_keys", keys)] {
                self.setup.metrics.core_records.get_or_create(&label(kind)).set(v as i64);
            }
            let mut connected = 0;
            for i in (0..self.node_ids.len()).filter(|i| *i != self.setup.me) {
                let up = self.transport.is_connected(PeerId(i));
                connected += usize::from(up);
                if self.peer_up[i] != Some(up) {
                    self.peer_up[i] = Some(up);
                    let now = self.now();
                    let _ = self.core.handle(now, Event::PeerReachability { peer: self.node_ids[i], reachable: up });
                }
            }
            st.peers_connected.store(connected as u64, Ordering::Relaxed);
            // A convicted peer is never polled, so any new incident of it is another proof
            // (equivocation, bad frames) once its cool-off is over: ban it again.
            for (node, score) in self.core.peer_scores() {
                let seen = self.incidents_seen.insert(node, score.incidents).unwrap_or(score.incidents);
                if score.convicted && score.excluded && score.incidents > seen {
                    self.ban(node, None, "convicted peer misbehaved again");
                }
            }
            let banned = self.transport.banned_count();
            st.peers_banned.store(banned as u64, Ordering::Relaxed);
            if self.setup.shard == 0 {
                self.setup.metrics.peers_connected.set(connected as i64);
                self.setup.metrics.peers_banned.set(banned as i64);
                let stats = self.transport.stats();
                for (i, p) in stats.peers.iter().enumerate() {
                    let Some((name, _, _)) = self.setup.members.get(i) else { continue };
                    let label = PeerLabel { peer: name.clone() };
                    self.setup.metrics.peer_bytes_in.get_or_create(&label).set(p.bytes_in as i64);
                    self.setup.metrics.peer_bytes_out.get_or_create(&label).set(p.bytes_out as i64);
                }
                for (node, score) in self.core.peer_scores() {
                    if let Some(i) = self.index_of.get(&node) {
                        let label = PeerLabel { peer: self.setup.members[*i].0.clone() };
                        self.setup.metrics.peer_score_milli.get_or_create(&label).set((score.score * 1000.0) as i64);
                    }
                }
            }
        }
    }
}

/// Structural checks of an alert's proof before any signature is verified: the evidence must
/// incriminate the accused (its creator / responder) and actually conflict.
fn evidence_well_formed(alert: &pqdag_wire::Alert) -> bool {
    match &alert.evidence {
        pqdag_wire::Evidence::Equivocation { a, b } => {
            a.creator == alert.accused
                && b.creator == alert.accused
                && a.id != b.id
                && a.compute_id() == a.id
                && b.compute_id() == b.id
                && a.conflict_keys.iter().any(|k| b.conflict_keys.contains(k))
        }
        pqdag_wire::Evidence::ConflictingResponses { a, b } => {
            a.responder == alert.accused && b.responder == alert.accused && a.query_id == b.query_id && a.ids_digest == b.ids_digest && a.votes != b.votes
        }
    }
}

/// Sends a vertex reply, halving it until it fits a frame (the asker re-requests the rest).
fn send_trimmed(responder: Responder, mut reply: VertexReply) {
    loop {
        match encode(&reply) {
            Ok(b) => {
                let _ = responder.send(b);
                return;
            }
            Err(_) if !reply.vertices.is_empty() => {
                let keep = reply.vertices.len() / 2;
                reply.vertices.truncate(keep);
            }
            Err(_) => return,
        }
    }
}

fn wire_reason(e: &WireError) -> &'static str {
    match e {
        WireError::Truncated(_) => "truncated",
        WireError::TooLarge { .. } => "too_large",
        WireError::Version(_) => "version",
        WireError::UnknownKind(_) => "unknown_kind",
        WireError::Invalid { .. } => "invalid_archive",
        WireError::Bound { .. } => "bound",
        WireError::BadField { .. } => "bad_field",
        WireError::Encode(_) => "encode",
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Orders stored vertices for [`Core::restore`]: finals in their finality order first (the set
/// of finals is closed under ancestors), then the rest parents-before-children.
fn restore_order(items: Vec<pqdag_storage::StoredVertex>) -> Vec<(Arc<Vertex>, VertexStatus)> {
    let mut finals: Vec<(u64, Arc<Vertex>)> = Vec::new();
    let mut rest: HashMap<VertexId, (Arc<Vertex>, VertexStatus)> = HashMap::new();
    for sv in items {
        match sv.status {
            Status::Final { position } => finals.push((position, Arc::new(sv.vertex))),
            Status::Rejected => {
                rest.insert(sv.vertex.id, (Arc::new(sv.vertex), VertexStatus::Rejected));
            }
            Status::Processing => {
                rest.insert(sv.vertex.id, (Arc::new(sv.vertex), VertexStatus::Processing));
            }
        }
    }
    finals.sort_by_key(|(p, _)| *p);
    let mut out: Vec<(Arc<Vertex>, VertexStatus)> = finals.into_iter().map(|(_, v)| (v, VertexStatus::Final)).collect();
    // Depth-first: emit a vertex after its parents that are in `rest` (iterative, no recursion).
    let mut done: std::collections::HashSet<VertexId> = std::collections::HashSet::new();
    let ids: Vec<VertexId> = rest.keys().copied().collect();
    for root in ids {
        let mut stack = vec![(root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if done.contains(&id) {
                continue;
            }
            let Some((v, _)) = rest.get(&id) else { continue };
            if expanded {
                done.insert(id);
                out.push(rest[&id].clone());
            } else {
                stack.push((id, true));
                for p in &v.parents {
                    if rest.contains_key(p) && !done.contains(p) {
                        stack.push((*p, false));
                    }
                }
            }
        }
    }
    out
}
