//! The client gateway: decodes client frames, admits or refuses submissions (admission control,
//! double-spend refusal), answers status queries (across the shard mesh when the vertex lives
//! on another shard) and tells clients how their vertices were decided. Owns every client-facing
//! record: submissions in flight, own vertices awaiting a decision, own conflict keys, vertices
//! built from shard 0's batches, status queries awaiting other shards. Reads the core (preference,
//! status), never changes it directly: submissions leave as `Event::Submit` for the step.
//! Feed requests go to the [`FeedServer`] (reads the store's decision log). While the shard is
//! catching up (see `SyncClient::caught_up`) submissions and status queries are answered
//! `NotReady`, so clients move to a node that is caught up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use pqdag_core::{ConsensusError, Core, Event, VertexStatus};
use pqdag_storage::RocksStore;
use pqdag_transport::{ClientId, Responder, ShardTransport};
use pqdag_wire::{decode, encode, ArchivedClientRequest, ClientErrorCode, ClientReply, ClientStatus, ConflictKey, FinalityEvent, FrameRef, NodeId, TxId, VertexId};

use super::super::mesh::{MeshMsg, ShardMesh};
use super::super::metrics::{KindLabel, Metrics};
use super::admission::Admission;
use super::disk::DiskFloor;
use super::feed::FeedServer;
use super::ingress::ClientFrame;
use super::quotas::{submission_bytes, ClientQuotas};
use super::signer::MlDsaSigner;
use super::Tags;

/// Most undecided own submissions (transactions, batched into vertices) whatever the decision
/// rate; under it the bound follows that rate (`admission.rs`). Beyond it clients get
/// `Overloaded`.
pub const CLIENT_INFLIGHT_MAX: usize = 131_072;
/// Admission control: above this many undecided vertices (processing + waiting for parents) on
/// this shard, new submissions are refused as `Overloaded`. Past the knee an Avalanche node that
/// keeps accepting work polls an ever larger frontier and finalizes nothing; refusing turns that
/// collapse into a plateau at capacity (measured: docs/benchmark.md).
pub const ADMIT_UNDECIDED_MAX: u64 = 6_000;
/// Conflict keys of own REJECTED vertices remembered (shard 0) so the node never signs a second
/// vertex spending one of them, even when the key's conflict set lives on another shard. Keys of
/// undecided own vertices are held apart (bounded by the in-flight submissions) and dropped at
/// the decision: a final key's winner is known to the core and the store from then on.
pub const OWN_KEYS_MAX: usize = 500_000;
/// Most cross-shard core messages handed to the core as one event (`Event::FromShards`).
pub(super) const FROM_SHARDS_MAX: usize = 1024;

/// Finality events per client, sent at the end of a turn step.
pub(super) type ClientEvents = HashMap<ClientId, Vec<FinalityEvent>>;

/// A client `Status` request waiting for other shards' answers (shard 0 only).
struct PendingStatus {
    reply: Responder,
    tag: u64,
    statuses: Vec<ClientStatus>,
    /// For each asked shard, the positions in `statuses` its answer fills.
    slots: HashMap<usize, Vec<usize>>,
}

/// A submission admitted here whose conflict keys other shards own, waiting for their
/// double-spend answers (`MeshMsg::KeyCheck`, shard 0 only).
struct PendingSubmit {
    payload: Vec<u8>,
    keys: Vec<ConflictKey>,
    /// Shards yet to answer.
    waiting: HashSet<usize>,
    /// A key some shard found spent.
    spent: Option<ConflictKey>,
}

/// A submission batched into an own vertex, awaiting that vertex's decision: whom to tell,
/// since when, and which transaction and vertex it is now (a re-issue moves it).
struct OwnSubmission {
    client: ClientId,
    created: Instant,
    /// The submitting client's key id (its quota is released on the decision).
    key: [u8; 32],
    tx: TxId,
    vertex: VertexId,
    /// What the transaction spends (in `Gateway::own_keys` until the decision).
    keys: Vec<ConflictKey>,
    /// Its weight against the byte quotas (`quotas::submission_bytes`), released with it.
    bytes: u64,
}

/// The client gateway of one shard (the client endpoint is on shard 0).
pub(super) struct Gateway {
    shard: u16,
    shard_count: u16,
    transport: Rc<ShardTransport>,
    metrics: Arc<Metrics>,
    /// Submissions handed to the core and not yet created, by internal tag.
    client_submits: HashMap<u64, (Responder, ClientId, u64)>,
    /// Submissions in own vertices awaiting a decision, by internal tag (shard 0).
    own: HashMap<u64, OwnSubmission>,
    /// The internal tags each own vertex carries (shard 0).
    own_vertices: HashMap<VertexId, HashSet<u64>>,
    /// Conflict keys of own submissions not yet decided (shard 0).
    own_keys: HashSet<ConflictKey>,
    /// Conflict keys of own rejected submissions, oldest first for eviction (shard 0).
    rejected_keys: HashSet<ConflictKey>,
    rejected_keys_order: VecDeque<ConflictKey>,
    /// Own vertices this shard built from shard 0's batches (S > 1, `ShardMsg::Build`): their
    /// decisions go back to shard 0.
    adopted_own: HashSet<VertexId>,
    /// Conflict keys of submissions not yet created, by internal tag.
    submit_keys: HashMap<u64, Vec<ConflictKey>>,
    /// The keys of `submit_keys`, for the double-spend check of each submission.
    pending_keys: HashSet<ConflictKey>,
    pending_status: HashMap<u64, PendingStatus>,
    /// Submissions waiting for other shards' double-spend answers, by internal tag.
    pending_submits: HashMap<u64, PendingSubmit>,
    /// Undecided vertices (processing + pending) at the end of the last turn.
    undecided: u64,
    /// The submitting client's key id per submission not yet created, by internal tag.
    /// With the submission's weight against the byte quotas.
    submitters: HashMap<u64, ([u8; 32], u64)>,
    /// The decision feed.
    feed: FeedServer,
    /// Caught up with the peers (else submissions and status queries get `NotReady`).
    ready: bool,
    /// Per-client in-flight and rate quotas.
    quotas: ClientQuotas,
    /// Time origin of the quotas' clock.
    epoch: Instant,
    /// The data directory's free-space floor: under it submissions are refused.
    disk: DiskFloor,
    /// The in-flight bound by decision rate (shard 0: own submissions live there).
    admission: Admission,
}


impl Gateway {
    /// No client known yet.
    pub(super) fn new(node: NodeId, shard: u16, shard_count: u16, transport: Rc<ShardTransport>, metrics: Arc<Metrics>, disk: DiskFloor) -> Self {
        Self {
            shard,
            shard_count,
            transport,
            metrics,
            client_submits: HashMap::new(),
            own: HashMap::new(),
            own_vertices: HashMap::new(),
            own_keys: HashSet::new(),
            rejected_keys: HashSet::new(),
            rejected_keys_order: VecDeque::new(),
            adopted_own: HashSet::new(),
            submit_keys: HashMap::new(),
            pending_keys: HashSet::new(),
            pending_status: HashMap::new(),
            pending_submits: HashMap::new(),
            undecided: 0,
            submitters: HashMap::new(),
            feed: FeedServer::new(node, shard, shard_count),
            ready: false,
            quotas: ClientQuotas::default(),
            epoch: Instant::now(),
            disk,
            admission: Admission::new(Instant::now(), CLIENT_INFLIGHT_MAX),
        }
    }

    /// Reads the data directory's free space (the stats tick); the reading, for the metric.
    pub(super) fn refresh_disk(&mut self) -> Option<u64> {
        self.disk.refresh()
    }

    /// Whether this shard is caught up with its peers (set every turn).
    pub(super) fn set_ready(&mut self, ready: bool) {
        self.ready = ready;
    }

    /// The key id of the client behind submission `client_tag` (non-zero only), to persist with
    /// the vertex it became.
    pub(super) fn submitter(&self, client_tag: u64) -> Option<[u8; 32]> {
        // Before its first creation, or (a re-issue) from its record.
        self.submitters.get(&client_tag).map(|s| &s.0).or_else(|| self.own.get(&client_tag).map(|o| &o.key)).copied().filter(|k| *k != [0; 32])
    }

    /// The core's load at the end of a turn (admission control reads it).
    pub(super) fn set_undecided(&mut self, undecided: u64) {
        self.undecided = undecided;
    }

    /// Handles one client frame: a submission becomes an `Event::Submit` in `events` (answered
    /// once created or refused); everything else is answered here or across the mesh.
    pub(super) fn request(
        &mut self,
        core: &Core<MlDsaSigner>,
        store: Option<&RocksStore>,
        mesh: Option<&ShardMesh>,
        tags: &mut Tags,
        frame: ClientFrame,
        events: &mut Vec<Event>,
    ) {
        let ClientFrame { client, key, bytes, reply } = frame;
        // The proven client key travels with each request; the feed and the export record it.
        tracing::trace!(client = client.0, key = %key, bytes = bytes.len(), "client request");
        let error = |tag: u64, code: ClientErrorCode, message: String| ClientReply::Error { tag, code, message };
        let answer = match decode(&bytes) {
            Ok(FrameRef::ClientRequest(ArchivedClientRequest::Feed { tag, from, max })) => {
                self.feed.request(store, mesh, tags, tag.to_native(), from.as_slice(), max.to_native(), reply);
                return;
            }
            Ok(FrameRef::ClientRequest(ArchivedClientRequest::Submit { tag, .. } | ArchivedClientRequest::Status { tag, .. })) if !self.ready => {
                Some(error(tag.to_native(), ClientErrorCode::NotReady, "catching up with the peers (see /ready)".into()))
            }
            Ok(FrameRef::ClientRequest(ArchivedClientRequest::Submit { tag, payload, conflict_keys })) => {
                let tag = tag.to_native();
                let keys: Vec<ConflictKey> = conflict_keys.iter().map(ConflictKey::from).collect();
                // A key another shard owns is that shard's to check (its conflict sets and
                // decided keys): asked over the mesh below. Checked here only, a two-shard node
                // signed double spends one shard would have refused, about 20 times as many
                // contested sets at 5 % double spends (`docs/operations.md`).
                let count = u32::from(self.shard_count);
                let remote = |k: &ConflictKey| mesh.is_some() && pqdag_core::shard_of_key(k, count) != u32::from(self.shard);
                // Asked only of a submission the cheap checks below let through: for a key no
                // conflict set holds, `preference` reads the store's winners (a point read that
                // misses for a fresh key). Asked first, every `Overloaded` refusal of a retry
                // storm paid that read (3.6 % of node-0's CPU at 4 x 20 000/s offered).
                let spent = || {
                    keys.iter()
                        .find(|k| self.own_keys.contains(*k) || self.rejected_keys.contains(*k) || self.pending_keys.contains(*k) || (!remote(k) && core.preference(k).is_some()))
                        .copied()
                };
                let owners: HashSet<usize> = keys.iter().filter(|k| remote(k)).map(|k| pqdag_core::shard_of_key(k, count) as usize).collect();
                let undecided = self.undecided;
                let in_flight = self.own.len() + self.client_submits.len();
                let bound = self.admission.bound(Instant::now());
                let weight = submission_bytes(payload.len(), keys.len());
                if in_flight >= bound || undecided >= ADMIT_UNDECIDED_MAX {
                    self.metrics.invalid.get_or_create(&KindLabel { kind: "client_overloaded".into() }).inc();
                    Some(error(tag, ClientErrorCode::Overloaded, format!("{undecided} vertices undecided, {in_flight} submissions in flight (at most {bound}: about a second of decisions); retry later")))
                } else if let Some(why) = self.disk.refusal() {
                    self.metrics.invalid.get_or_create(&KindLabel { kind: "client_disk_low".into() }).inc();
                    Some(error(tag, ClientErrorCode::Overloaded, why))
                } else if let Some(k) = spent() {
                    // An honest node never signs a vertex conflicting with one it already knows:
                    // that would make it an equivocator. The double spend is refused here; one
                    // submitted concurrently elsewhere is decided by consensus (4.5).
                    self.metrics.invalid.get_or_create(&KindLabel { kind: "client_double_spend".into() }).inc();
                    Some(error(tag, ClientErrorCode::Conflict, format!("conflict key {k} is already spent by a known vertex")))
                } else if !owners.is_empty() && mesh.is_some_and(|m| m.congested()) {
                    Some(error(tag, ClientErrorCode::Overloaded, "shards busy: cross-shard queue full, retry".into()))
                } else if let Err(q) = self.quotas.admit(key.0, weight, self.epoch.elapsed().as_micros() as u64) {
                    self.metrics.invalid.get_or_create(&KindLabel { kind: "client_quota".into() }).inc();
                    Some(error(tag, ClientErrorCode::Overloaded, q.to_string()))
                } else {
                    let internal = tags.take();
                    self.client_submits.insert(internal, (reply, client, tag));
                    self.pending_keys.extend(keys.iter().copied());
                    self.submit_keys.insert(internal, keys.clone());
                    self.submitters.insert(internal, (key.0, weight));
                    let payload = payload.as_slice().to_vec();
                    if owners.is_empty() {
                        self.metrics.submitted.inc();
                        events.push(Event::Submit { payload, conflict_keys: keys, client_tag: internal, timestamp_ms: wall_ms() });
                    } else if let Some(m) = mesh {
                        for &o in &owners {
                            let theirs = keys.iter().filter(|k| pqdag_core::shard_of_key(k, count) as usize == o).copied().collect();
                            m.send(o, MeshMsg::KeyCheck { req: internal, keys: theirs });
                        }
                        self.pending_submits.insert(internal, PendingSubmit { payload, keys, waiting: owners, spent: None });
                    }
                    return;
                }
            }
            Ok(FrameRef::ClientRequest(ArchivedClientRequest::Status { tag, ids })) => {
                let ids: Vec<VertexId> = ids.iter().map(Into::into).collect();
                let count = u32::from(self.shard_count);
                let mut statuses = Vec::with_capacity(ids.len());
                let mut remote: HashMap<usize, (Vec<usize>, Vec<VertexId>)> = HashMap::new();
                for (i, id) in ids.iter().enumerate() {
                    let owner = pqdag_core::shard_of_vertex(id, count) as usize;
                    if owner == usize::from(self.shard) || mesh.is_none() {
                        statuses.push(local_status(core, self.shard, id));
                    } else {
                        statuses.push(ClientStatus::Unknown);
                        let e = remote.entry(owner).or_default();
                        e.0.push(i);
                        e.1.push(*id);
                    }
                }
                if remote.is_empty() {
                    Some(ClientReply::Statuses { tag: tag.to_native(), statuses })
                } else if mesh.is_some_and(|m| m.congested()) {
                    Some(error(tag.to_native(), ClientErrorCode::Overloaded, "shards busy: cross-shard queue full, retry".into()))
                } else {
                    let req = tags.bump();
                    let mut slots = HashMap::new();
                    for (shard, (positions, shard_ids)) in remote {
                        slots.insert(shard, positions);
                        if let Some(m) = mesh {
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
                self.metrics.invalid.get_or_create(&KindLabel { kind: "client_malformed".into() }).inc();
                Some(error(0, ClientErrorCode::Malformed, e.to_string()))
            }
        };
        if let Some(a) = answer {
            if let Ok(b) = encode(&a) {
                let _ = reply.send(b);
            }
        }
    }

    /// Shard `shard`'s double-spend answer for submission `req`: once every owner answered, the
    /// submission goes to the core, or is refused `Conflict` like a local double spend.
    fn key_checked(&mut self, req: u64, shard: usize, spent: Option<ConflictKey>, events: &mut Vec<Event>) {
        let Some(p) = self.pending_submits.get_mut(&req) else { return };
        p.waiting.remove(&shard);
        p.spent = p.spent.or(spent);
        if !p.waiting.is_empty() {
            return;
        }
        let Some(p) = self.pending_submits.remove(&req) else { return };
        match p.spent {
            Some(k) => {
                self.metrics.invalid.get_or_create(&KindLabel { kind: "client_double_spend".into() }).inc();
                self.refused(req, &ConsensusError::Dag(format!("conflict key {k} is already spent by a known vertex")));
            }
            None => {
                self.metrics.submitted.inc();
                debug_assert!(self.client_submits.contains_key(&req), "a checked submission is still in flight");
                events.push(Event::Submit { payload: p.payload, conflict_keys: p.keys, client_tag: req, timestamp_ms: wall_ms() });
            }
        }
    }

    /// The core refused submission `client_tag`: it is answered, never left hanging.
    pub(super) fn refused(&mut self, client_tag: u64, err: &ConsensusError) {
        for k in self.submit_keys.remove(&client_tag).unwrap_or_default() {
            self.pending_keys.remove(&k);
        }
        if let Some((k, bytes)) = self.submitters.remove(&client_tag) {
            self.quotas.release(k, bytes);
        }
        if let Some((reply, _, tag)) = self.client_submits.remove(&client_tag) {
            let code = match err {
                ConsensusError::Dag(_) => ClientErrorCode::Conflict,
                ConsensusError::Capacity(_) => ClientErrorCode::Overloaded,
                _ => ClientErrorCode::Internal,
            };
            if let Ok(b) = encode(&ClientReply::Error { tag, code, message: err.to_string() }) {
                let _ = reply.send(b);
            }
        }
    }

    /// A submission became transaction `tx` of vertex `id` (on this shard, or adopted by this
    /// shard): its client gets `Submitted`; a submission already answered was re-issued into
    /// `id` and its client gets a `Processing` event naming the new vertex.
    pub(super) fn created(&mut self, mesh: Option<&ShardMesh>, client_tag: u64, id: VertexId, tx: TxId, client_events: &mut ClientEvents) {
        let key = self.submitters.remove(&client_tag);
        if self.shard != 0 {
            self.adopted_own.insert(id);
            if let Some(m) = mesh {
                m.send(0, MeshMsg::Created { client_tag, id, tx });
            }
            return;
        }
        if let Some(own) = self.own.get_mut(&client_tag) {
            // A re-issue: the submission leaves its rejected vertex for `id`.
            let old = std::mem::replace(&mut own.vertex, id);
            let client = own.client;
            detach(&mut self.own_vertices, &old, client_tag);
            self.own_vertices.entry(id).or_default().insert(client_tag);
            self.metrics.reissued.inc();
            client_events.entry(client).or_default().push(FinalityEvent { tx, id, status: ClientStatus::Processing, latency_us: 0 });
            return;
        }
        let keys = self.submit_keys.remove(&client_tag).unwrap_or_default();
        for k in &keys {
            self.pending_keys.remove(k);
        }
        if let Some((reply, client, tag)) = self.client_submits.remove(&client_tag) {
            self.own_keys.extend(keys.iter().copied());
            let (key, bytes) = key.unwrap_or(([0; 32], 0));
            self.own.insert(client_tag, OwnSubmission { client, created: Instant::now(), key, tx, vertex: id, keys, bytes });
            self.own_vertices.entry(id).or_default().insert(client_tag);
            if let Ok(b) = encode(&ClientReply::Submitted { tag, tx, id }) {
                let _ = reply.send(b);
            }
        }
    }

    /// Submission `client_tag` is final in vertex `id` (the same transaction in another node's
    /// vertex), though its own vertex is being rejected: its client hears `Final` (position
    /// unknown: 0).
    pub(super) fn tx_final(&mut self, mesh: Option<&ShardMesh>, client_tag: u64, id: VertexId, tx: TxId, client_events: &mut ClientEvents) {
        if self.shard != 0 {
            if let Some(m) = mesh {
                m.send(0, MeshMsg::TxFinal { client_tag, id, tx });
            }
            return;
        }
        let Some(own) = self.own.remove(&client_tag) else { return };
        self.admission.decided(1, Instant::now());
        detach(&mut self.own_vertices, &own.vertex, client_tag);
        self.quotas.release(own.key, own.bytes);
        self.forget_own_keys(&own.keys, false);
        let latency_us = own.created.elapsed().as_micros() as u64;
        client_events.entry(own.client).or_default().push(FinalityEvent { tx, id, status: ClientStatus::Final { shard: self.shard, position: 0 }, latency_us });
    }

    /// Own vertex `id` is being rejected and `client_tags` of it move to a new vertex: they are
    /// not reported rejected with it.
    pub(super) fn reissued(&mut self, mesh: Option<&ShardMesh>, id: VertexId, client_tags: Vec<u64>) {
        if self.shard != 0 {
            if self.adopted_own.contains(&id) {
                if let Some(m) = mesh {
                    m.send(0, MeshMsg::Reissued { id, client_tags });
                }
            }
            return;
        }
        for t in client_tags {
            detach(&mut self.own_vertices, &id, t);
        }
    }

    /// Entry counts of the maps that grow with load (the `bounded` metric family).
    pub(super) fn held(&mut self) -> [(&'static str, u64); 6] {
        [
            ("gateway_own_submissions", self.own.len() as u64),
            ("gateway_inflight_bound", self.admission.bound(Instant::now()) as u64),
            ("gateway_own_keys", self.own_keys.len() as u64),
            ("gateway_rejected_keys", self.rejected_keys.len() as u64),
            ("gateway_pending_submissions", self.client_submits.len() as u64),
            ("gateway_inflight_bytes", self.quotas.bytes()),
        ]
    }

    /// Gives back the capacity a backlog left in the maps that grow with in-flight submissions
    /// (`pqdag_core::shrink_sparse`; the core does the same for its own maps): a hash map keeps
    /// its capacity on remove, so every finality dip deeper than the last raised RSS for good.
    pub(super) fn shrink_sparse(&mut self) {
        use pqdag_core::shrink_sparse as shrink;
        shrink(&mut self.client_submits);
        shrink(&mut self.own);
        shrink(&mut self.own_vertices);
        shrink(&mut self.own_keys);
        shrink(&mut self.adopted_own);
        shrink(&mut self.submit_keys);
        shrink(&mut self.pending_keys);
        shrink(&mut self.pending_status);
        shrink(&mut self.pending_submits);
        shrink(&mut self.submitters);
        self.feed.shrink_sparse();
    }

    /// A decided own submission's keys leave `own_keys`. A final one's keys are known as spent
    /// to the core and the store from now on; a rejected one's are kept (bounded, oldest out),
    /// since its conflict set may live on another shard and a second vertex of this node on the
    /// same key would be equivocation. (Held for every own vertex, they grew RSS by ~3-4 MiB a
    /// minute at 1 200 payloads/s until a 500 000-key cap.)
    fn forget_own_keys(&mut self, keys: &[ConflictKey], rejected: bool) {
        for k in keys {
            self.own_keys.remove(k);
            if rejected && self.rejected_keys.insert(*k) {
                self.rejected_keys_order.push_back(*k);
            }
        }
        while self.rejected_keys_order.len() > OWN_KEYS_MAX {
            if let Some(k) = self.rejected_keys_order.pop_front() {
                self.rejected_keys.remove(&k);
            }
        }
    }

    /// Vertex `id` was decided here: the clients of its transactions hear of it (here, or
    /// through shard 0).
    pub(super) fn decided(&mut self, mesh: Option<&ShardMesh>, id: VertexId, status: ClientStatus, client_events: &mut ClientEvents) {
        if self.own_vertices.contains_key(&id) {
            self.tell_clients(id, status, client_events);
        } else {
            self.tell_client_shard(mesh, id, status);
        }
    }

    /// Every submission still carried by own vertex `id` is decided with it.
    fn tell_clients(&mut self, id: VertexId, status: ClientStatus, client_events: &mut ClientEvents) {
        let mut told = 0;
        for t in self.own_vertices.remove(&id).unwrap_or_default() {
            let Some(own) = self.own.remove(&t) else { continue };
            told += 1;
            self.quotas.release(own.key, own.bytes);
            self.forget_own_keys(&own.keys, status == ClientStatus::Rejected);
            let latency_us = own.created.elapsed().as_micros() as u64;
            client_events.entry(own.client).or_default().push(FinalityEvent { tx: own.tx, id, status, latency_us });
        }
        self.admission.decided(told, Instant::now());
    }

    /// An own vertex decided on a shard other than 0: shard 0 holds the client connection.
    fn tell_client_shard(&mut self, mesh: Option<&ShardMesh>, id: VertexId, status: ClientStatus) {
        if !self.adopted_own.remove(&id) {
            return;
        }
        if let Some(mesh) = mesh {
            mesh.send(0, MeshMsg::Decided { id, status });
        }
    }

    /// A message from another shard of this node: core traffic goes to `events` (consecutive
    /// ones in one event of at most [`FROM_SHARDS_MAX`]), the rest is
    /// client bookkeeping.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_mesh(&mut self, core: &Core<MlDsaSigner>, store: Option<&RocksStore>, mesh: Option<&ShardMesh>, m: MeshMsg, events: &mut Vec<Event>, decided: &mut ClientEvents) {
        match m {
            MeshMsg::FeedQuery { req, log_id, after_seq, max_entries, max_bytes } => self.feed.on_query(store, mesh, req, log_id, after_seq, max_entries, max_bytes),
            MeshMsg::FeedReply { req, shard, result } => self.feed.on_reply(req, shard, result),
            // Consecutive core messages become one event (`Event::FromShards`), in order.
            MeshMsg::Core(msg) => match events.last_mut() {
                Some(Event::FromShards(batch)) if batch.len() < FROM_SHARDS_MAX => batch.push(msg),
                _ => events.push(Event::FromShards(vec![msg])),
            },
            MeshMsg::Created { client_tag, id, tx } => self.created(mesh, client_tag, id, tx, decided),
            MeshMsg::Reissued { id, client_tags } => self.reissued(mesh, id, client_tags),
            MeshMsg::TxFinal { client_tag, id, tx } => self.tx_final(mesh, client_tag, id, tx, decided),
            MeshMsg::Decided { id, status } => self.tell_clients(id, status, decided),
            MeshMsg::KeyCheck { req, keys } => {
                let spent = keys.iter().find(|k| core.preference(k).is_some()).copied();
                if let Some(mesh) = mesh {
                    mesh.send(0, MeshMsg::KeyCheckReply { req, shard: usize::from(self.shard), spent });
                }
            }
            MeshMsg::KeyCheckReply { req, shard, spent } => self.key_checked(req, shard, spent, events),
            MeshMsg::StatusQuery { req, ids } => {
                let statuses = ids.iter().map(|id| local_status(core, self.shard, id)).collect();
                if let Some(mesh) = mesh {
                    mesh.send(0, MeshMsg::StatusReply { req, shard: usize::from(self.shard), statuses });
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

    /// Sends each client its finality events, a frame's worth at a time.
    pub(super) fn send_client_events(&self, client_events: ClientEvents) {
        for (client, events) in client_events {
            for chunk in events.chunks(pqdag_wire::CLIENT_EVENTS_MAX) {
                if let Ok(b) = encode(&ClientReply::Events { events: chunk.to_vec() }) {
                    let _ = self.transport.send_client_event(client, b);
                }
            }
        }
    }
}

/// Takes submission `tag` off vertex `id`'s set (constant time: a re-issue of a full batch
/// moves thousands of submissions).
fn detach(own_vertices: &mut HashMap<VertexId, HashSet<u64>>, id: &VertexId, tag: u64) {
    if let Some(tags) = own_vertices.get_mut(id) {
        tags.remove(&tag);
        if tags.is_empty() {
            own_vertices.remove(id);
        }
    }
}

/// How this shard's core knows vertex `id`, as a client sees it.
fn local_status(core: &Core<MlDsaSigner>, shard: u16, id: &VertexId) -> ClientStatus {
    match core.vertex_status(id) {
        None => ClientStatus::Unknown,
        Some(VertexStatus::Processing) => ClientStatus::Processing,
        Some(VertexStatus::Rejected) => ClientStatus::Rejected,
        Some(VertexStatus::Final) => ClientStatus::Final { shard, position: 0 },
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
