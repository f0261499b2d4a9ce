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
    decode, encode, ArchivedClientRequest, ClientErrorCode, ClientReply, ClientStatus, FinalityEvent, FrameRef, NodeId,
    Query, Response, Vertex, VertexId, VertexReply, VertexRequest, WireError,
};
use tracing::{debug, info, warn};

use super::mailbox::Mailbox;
use super::metrics::{KindLabel, Metrics, PeerLabel, ShardStatus};

/// Most incoming items handled per loop turn (bounds a turn's latency).
pub const TURN_INCOMING_MAX: usize = 1024;
/// Most outstanding query/fetch replies awaited; beyond it new requests are answered Overloaded.
pub const PENDING_REPLIES_MAX: usize = 16_384;
/// Most undecided own submissions; beyond it clients get `Overloaded`.
pub const CLIENT_INFLIGHT_MAX: usize = 50_000;
/// Longest sleep of an idle loop (how fast a stop request is seen).
const IDLE_WAIT_MAX: Duration = Duration::from_millis(50);

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
}

/// Replies of requests this shard made, pushed by the tasks awaiting them.
enum Reply {
    Response { peer: PeerId, sent: Instant, result: Result<Vec<u8>, pqdag_transport::TransportError> },
    Vertices { peer: PeerId, result: Result<Vec<u8>, pqdag_transport::TransportError> },
}

/// A message decoded and waiting for its signature check.
enum Unverified {
    Vertex { from: NodeId, vertex: Vertex },
    Query { from: NodeId, query: Query, reply: Responder },
    Response { from: NodeId, response: Response },
    Reply { from: NodeId, vertices: Vec<Vertex> },
}

struct OwnSubmission {
    client: ClientId,
    created: Instant,
}

struct Shard {
    setup: ShardSetup,
    transport: Rc<ShardTransport>,
    store: RocksStore,
    core: Core<MlDsaSigner>,
    mailbox: Mailbox<Reply>,
    verifier: BatchVerifier,
    node_ids: Vec<NodeId>,
    index_of: HashMap<NodeId, usize>,
    keys: HashMap<NodeId, PublicKey>,
    start: Instant,
    pending_responses: HashMap<(NodeId, u64), Responder>,
    pending_fetches: HashMap<(NodeId, u64), Responder>,
    client_submits: HashMap<u64, (Responder, ClientId, u64)>,
    own: HashMap<VertexId, OwnSubmission>,
    next_tag: u64,
    outstanding: usize,
    last_stats: Instant,
    last_flood: Instant,
    /// Last reachability reported to the core, per cluster index.
    peer_up: Vec<Option<bool>>,
}

/// Runs one shard until `setup.stop` is set. Call inside the shard's glommio executor.
pub async fn run_shard(setup: ShardSetup) -> Result<(), ShardError> {
    let mut shard = Shard::open(setup)?;
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
        let restored = restore_order(store.load_all()?);
        let n = restored.len();
        core.restore(0, restored);
        while core.poll_action().is_some() {}
        let s = core.status();
        info!(shard = setup.shard, restored = n, finalized = s.finalized, rejected = s.rejected, processing = s.processing, "shard restored from storage");
        Ok(Shard {
            transport,
            store,
            core,
            mailbox: Mailbox::new(),
            verifier: BatchVerifier::new(),
            node_ids,
            index_of,
            keys,
            start,
            pending_responses: HashMap::new(),
            pending_fetches: HashMap::new(),
            client_submits: HashMap::new(),
            own: HashMap::new(),
            next_tag: 1,
            outstanding: 0,
            last_stats: start,
            last_flood: start,
            peer_up: vec![None; setup.members.len()],
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
        while !self.setup.stop.load(Ordering::Relaxed) {
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
            let now = self.now();
            let due = self.core.poll_timeout().is_some_and(|t| t <= now);
            if incoming.is_empty() && replies.is_empty() && !due {
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
                            self.mailbox.ready().await;
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
            self.turn(incoming, replies);
        }
        info!(shard = self.setup.shard, "shard stopping: closing connections");
        self.transport.shutdown();
        self.setup.status.running.store(false, Ordering::Relaxed);
    }

    /// Keeps a verified connection to every peer: dials the ones that are down once a second
    /// (the transport adds backoff and jitter), so `/health` reflects reachability before the
    /// first poll needs it.
    fn spawn_dialer(&self) {
        let transport = self.transport.clone();
        let peers: Vec<PeerId> = (0..self.node_ids.len()).filter(|i| *i != self.setup.me).map(PeerId).collect();
        let stop = self.setup.stop.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                for p in &peers {
                    if !transport.is_connected(*p) {
                        let t = transport.clone();
                        let p = *p;
                        glommio::spawn_local(async move {
                            let _ = t.connect(p, Duration::from_secs(2)).await;
                        })
                        .detach();
                    }
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
            let _ = self.core.handle(self.now(), Event::InvalidMessage { from, kind });
        }
    }

    fn turn(&mut self, incoming: Vec<Incoming>, replies: Vec<Reply>) {
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
        let mut now = self.now();
        for e in events {
            if let Err(err) = self.core.handle(now, e) {
                debug!(error = %err, "core refused an event");
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
            self.execute(actions);
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
                    Ok(FrameRef::Alert(_)) => {
                        // Alert gossip is verified and acted on in a later version; counted.
                        self.setup.metrics.invalid.get_or_create(&KindLabel { kind: "alert_ignored".into() }).inc();
                    }
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
                    Ok(FrameRef::VertexRequest(r)) => match rkyv::deserialize::<VertexRequest, rkyv::rancor::Error>(r) {
                        Ok(request) if self.pending_fetches.len() < PENDING_REPLIES_MAX => {
                            self.pending_fetches.insert((from, request.request_id), reply);
                            events.push(Event::VertexRequest { from, request });
                        }
                        _ => self.invalid(None, "vertex_request_dropped", Misbehaviour::Malformed),
                    },
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
                let spent = conflict_keys.iter().map(pqdag_wire::ConflictKey::from).find(|k| self.core.preference(k).is_some());
                if self.own.len() + self.client_submits.len() >= CLIENT_INFLIGHT_MAX {
                    Some(error(tag, ClientErrorCode::Overloaded, format!("{CLIENT_INFLIGHT_MAX} submissions undecided; retry later")))
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
                let statuses = ids
                    .iter()
                    .map(|id| {
                        let id: VertexId = id.into();
                        match self.core.vertex_status(&id) {
                            None => ClientStatus::Unknown,
                            Some(VertexStatus::Processing) => ClientStatus::Processing,
                            Some(VertexStatus::Rejected) => ClientStatus::Rejected,
                            Some(VertexStatus::Final) => ClientStatus::Final { shard: self.setup.shard, position: 0 },
                        }
                    })
                    .collect();
                Some(ClientReply::Statuses { tag: tag.to_native(), statuses })
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
        let owned_msgs: Vec<Vec<u8>> = items
            .iter()
            .map(|u| match u {
                Unverified::Query { query, .. } => query.signed_bytes(),
                Unverified::Response { response, .. } => response.signed_bytes(),
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
                Unverified::Query { from, query, .. } => wanted.push((*from, Domain::Query, &owned_msgs[i], &query.signature)),
                Unverified::Response { from, response } => wanted.push((*from, Domain::Response, &owned_msgs[i], &response.signature)),
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

    fn execute(&mut self, actions: Vec<Action>) {
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
            if let Err(e) = self.store.write(batch) {
                // Without durability the node must not vote or announce: stop the node.
                tracing::error!(error = %e, "store write failed; stopping the node");
                self.setup.stop.store(true, Ordering::Relaxed);
                return;
            }
            self.setup.metrics.store_batches.inc();
            self.setup.metrics.store_write.observe(t.elapsed().as_secs_f64());
        }
        // 2. Everything else, in order.
        let mut client_events: HashMap<ClientId, Vec<FinalityEvent>> = HashMap::new();
        for a in actions {
            match a {
                Action::Persist { .. } => {}
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
                Action::SendVertices { to, reply } => self.send_vertices(to, reply),
                Action::SendFrontier { to, frontier } => {
                    if let Ok(bytes) = encode(&frontier) {
                        let peers: Vec<PeerId> = to.iter().filter_map(|n| self.peer_of(n)).collect();
                        self.transport.broadcast_vertex(&peers, &bytes);
                    }
                }
                Action::Finalized { id, latency_us, .. } => {
                    self.setup.metrics.finalized.inc();
                    self.setup.metrics.finality_latency.observe(latency_us as f64 / 1e6);
                    if let Some(own) = self.own.remove(&id) {
                        let latency_us = own.created.elapsed().as_micros() as u64;
                        let status = ClientStatus::Final { shard: self.setup.shard, position: positions.get(&id).copied().unwrap_or(0) };
                        client_events.entry(own.client).or_default().push(FinalityEvent { id, status, latency_us });
                    }
                }
                Action::Rejected { id } => {
                    self.setup.metrics.rejected.inc();
                    if let Some(own) = self.own.remove(&id) {
                        let latency_us = own.created.elapsed().as_micros() as u64;
                        client_events.entry(own.client).or_default().push(FinalityEvent { id, status: ClientStatus::Rejected, latency_us });
                    }
                }
                Action::Alert { peer, reason, evidence, score } => {
                    let name = self.index_of.get(&peer).map(|i| self.setup.members[*i].0.clone()).unwrap_or_default();
                    warn!(peer = %name, node_id = %peer, ?reason, score, proof = evidence.is_some(), "Byzantine peer excluded");
                    self.setup.metrics.alerts.get_or_create(&KindLabel { kind: format!("{reason:?}") }).inc();
                }
                Action::ToShard { shard, .. } => {
                    // The runtime runs one shard per node in this version (see docs/architecture.md).
                    warn!(shard, "cross-shard message with a single-shard runtime");
                }
                Action::Created { client_tag, id } => {
                    if let Some((reply, client, tag)) = self.client_submits.remove(&client_tag) {
                        self.own.insert(id, OwnSubmission { client, created: Instant::now() });
                        if let Ok(b) = encode(&ClientReply::Submitted { tag, id }) {
                            let _ = reply.send(b);
                        }
                    }
                }
            }
        }
        for (client, events) in client_events {
            for chunk in events.chunks(pqdag_wire::CLIENT_EVENTS_MAX) {
                if let Ok(b) = encode(&ClientReply::Events { events: chunk.to_vec() }) {
                    let _ = self.transport.send_client_event(client, b);
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

    fn send_vertices(&mut self, to: NodeId, reply: VertexReply) {
        let Some(responder) = self.pending_fetches.remove(&(to, reply.request_id)) else { return };
        // Trim to the frame limit: a reply that does not fit is cut, the asker re-requests.
        let mut reply = reply;
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

    fn publish_status(&mut self) {
        let s = self.core.status();
        let st = &self.setup.status;
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
        }
        if self.last_stats.elapsed() >= Duration::from_secs(1) {
            self.last_stats = Instant::now();
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
            if self.setup.shard == 0 {
                self.setup.metrics.peers_connected.set(connected as i64);
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
