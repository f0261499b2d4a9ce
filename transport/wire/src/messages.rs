//! The messages of the protocol (spec section 4.1, adapted: batched queries and responses, fetch
//! by id, frontier announcements and Byzantine alerts).

use rkyv::{Archive, Deserialize, Serialize};

use crate::limits::*;
use crate::tx::{tx_budget, tx_root, ArchivedTransaction, Transaction};
use crate::types::{ConflictKey, NodeId, TxId, VertexId};
use crate::WireError;

/// A DAG vertex: a batch of transactions, the parents it builds on, signed by its creator. Its id
/// is the BLAKE3 of [`Vertex::canonical_bytes`], which commit to the transactions through their
/// Merkle root; the creator signs the id.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Vertex {
    /// BLAKE3 of the canonical bytes; a receiver recomputes it and refuses a mismatch.
    pub id: VertexId,
    /// Parent ids, [`PARENTS_MIN`]..=[`PARENTS_MAX`] of them, distinct.
    pub parents: Vec<VertexId>,
    /// The transactions, at most [`TXS_MAX`] within [`VERTEX_TX_BYTES_MAX`]; no two share a
    /// conflict key (a vertex never spends a key twice).
    pub txs: Vec<Transaction>,
    /// Every transaction's conflict keys, in transaction order (checked on receipt, so it is
    /// covered by the id): the vertex joins the conflict set of each. Kept on the vertex because
    /// consensus works on it for every poll.
    pub conflict_keys: Vec<ConflictKey>,
    /// Creator's wall clock at creation, ms since the Unix epoch (tie-break only, never trusted
    /// for safety).
    pub timestamp_ms: u64,
    /// Node id of the creator.
    pub creator: NodeId,
    /// ML-DSA-87 signature of the creator over `id`, in domain `Vertex`.
    pub signature: Vec<u8>,
}

/// Version byte inside the canonical vertex bytes (independent of the frame version). 2: a
/// vertex carries a batch of transactions under a Merkle root.
pub const CANONICAL_VERTEX_VERSION: u8 = 2;

/// Writes the canonical bytes from borrowed parts, so the owned and the archived form hash alike.
///
/// Layout (all integers little-endian): `version u8 · n_parents u16 · parents (32 each) ·
/// n_txs u32 · tx_root (32) · timestamp_ms u64 · creator (32)`. The conflict keys are covered
/// through the transactions (and checked equal to theirs on receipt).
fn canonical_from_parts<'a>(parents: impl ExactSizeIterator<Item = &'a [u8; 32]>, n_txs: usize, tx_root: &[u8; 32], timestamp_ms: u64, creator: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 2 + 32 * parents.len() + 4 + 32 + 8 + 32);
    out.push(CANONICAL_VERTEX_VERSION);
    // Lengths are bounded by the limits long before u16/u32 overflow; saturate defensively.
    out.extend_from_slice(&u16::try_from(parents.len()).unwrap_or(u16::MAX).to_le_bytes());
    parents.for_each(|p| out.extend_from_slice(p));
    out.extend_from_slice(&u32::try_from(n_txs).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(tx_root);
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(creator);
    out
}

impl Vertex {
    /// Builds an unsigned vertex carrying one transaction (`payload`, `conflict_keys`), with its
    /// id computed. Sign [`Vertex::signed_bytes`] next.
    pub fn new_unsigned(parents: Vec<VertexId>, payload: Vec<u8>, conflict_keys: Vec<ConflictKey>, timestamp_ms: u64, creator: NodeId) -> Self {
        Self::with_txs(parents, vec![Transaction::new(payload, conflict_keys)], timestamp_ms, creator)
    }

    /// Builds an unsigned vertex carrying `txs`, with its conflict keys and id computed.
    pub fn with_txs(parents: Vec<VertexId>, txs: Vec<Transaction>, timestamp_ms: u64, creator: NodeId) -> Self {
        let conflict_keys = txs.iter().flat_map(|t| t.conflict_keys.iter().copied()).collect();
        let mut v = Vertex { id: VertexId::default(), parents, txs, conflict_keys, timestamp_ms, creator, signature: Vec::new() };
        v.id = v.compute_id();
        v
    }

    /// The transactions' ids, in order.
    pub fn tx_ids(&self) -> Vec<TxId> {
        self.txs.iter().map(Transaction::id).collect()
    }

    /// The Merkle root of the transactions (what the id commits to).
    pub fn tx_root(&self) -> [u8; 32] {
        tx_root(&self.tx_ids())
    }

    /// The bytes the id hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_from_parts(self.parents.iter().map(|p| &p.0), self.txs.len(), &self.tx_root(), self.timestamp_ms, &self.creator.0)
    }

    /// BLAKE3 id of the canonical bytes.
    pub fn compute_id(&self) -> VertexId {
        VertexId(pqdag_crypto::hash::vertex_id(&self.canonical_bytes()))
    }

    /// Moves the timestamp forward, 1 ms at a time and at most `tries - 1` ms, until `accept`
    /// takes the id; returns whether it did (otherwise the vertex is unchanged). A node with
    /// several shards builds each vertex so that the shard building it, whose DAG its parents
    /// come from, also owns it: parents and children then stay in one shard's DAG, and a poll
    /// credits a vertex through its children instead of asking about it. The timestamp is a
    /// tie-break only, never trusted; the Merkle root is computed once. Call before signing.
    pub fn grind_timestamp(&mut self, tries: u32, accept: impl Fn(&VertexId) -> bool) -> bool {
        debug_assert!(self.signature.is_empty(), "the signature covers the id: grind before signing");
        if accept(&self.id) {
            return true;
        }
        let root = self.tx_root();
        for i in 1..u64::from(tries) {
            let ts = self.timestamp_ms.saturating_add(i);
            let id = VertexId(pqdag_crypto::hash::vertex_id(&canonical_from_parts(self.parents.iter().map(|p| &p.0), self.txs.len(), &root, ts, &self.creator.0)));
            if accept(&id) {
                self.timestamp_ms = ts;
                self.id = id;
                return true;
            }
        }
        false
    }

    /// What the creator signs (domain `Vertex`): the 32-byte id.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.id.0
    }

    /// Checks every bound of an owned vertex (what [`decode`](crate::decode) checks on receipt);
    /// `encode` refuses a vertex that breaks one, so honest nodes never send one.
    pub fn check_bounds(&self) -> Result<(), WireError> {
        check_vertex_counts(self.parents.len(), self.txs.len(), self.conflict_keys.len(), self.signature.len(), true)?;
        self.check_shape()
    }

    /// Every bound but the signature's length (a simulator signs with shorter MACs).
    pub fn check_shape(&self) -> Result<(), WireError> {
        check_vertex_counts(self.parents.len(), self.txs.len(), self.conflict_keys.len(), 0, true)?;
        let mut budget = 0usize;
        for t in &self.txs {
            t.check_bounds()?;
            budget += t.budget_bytes();
        }
        bound("vertex transaction bytes", budget, VERTEX_TX_BYTES_MAX)?;
        check_distinct("parents", self.parents.iter().map(|p| &p.0))?;
        check_keys(self.txs.iter().map(|t| t.conflict_keys.iter().map(|k| &k.0)), self.conflict_keys.iter().map(|k| &k.0))?;
        check_distinct("conflict_keys", self.conflict_keys.iter().map(|k| &k.0))
    }

    /// Approximate bytes held in memory (for budgets).
    pub fn heap_bytes(&self) -> usize {
        32 * self.parents.len() + self.txs.iter().map(Transaction::budget_bytes).sum::<usize>() + 32 * self.txs.len() + self.signature.len() + 128
    }

    /// Payload bytes of all its transactions.
    pub fn payload_bytes(&self) -> usize {
        self.txs.iter().map(|t| t.payload.len()).sum()
    }
}

impl ArchivedVertex {
    /// Canonical bytes computed straight from the archive (zero-copy path).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let ids: Vec<TxId> = self.txs.iter().map(ArchivedTransaction::id).collect();
        canonical_from_parts(self.parents.iter().map(|p| &p.0), ids.len(), &tx_root(&ids), self.timestamp_ms.to_native(), &self.creator.0)
    }

    /// BLAKE3 id of the canonical bytes; compare with `self.id` before trusting it.
    pub fn compute_id(&self) -> VertexId {
        VertexId(pqdag_crypto::hash::vertex_id(&self.canonical_bytes()))
    }

    /// True iff the carried id is the hash of the content.
    pub fn id_matches(&self) -> bool {
        self.compute_id().0 == self.id.0
    }

    /// The bytes the creator signed (its id).
    pub fn signed_bytes(&self) -> &[u8; 32] {
        &self.id.0
    }

    /// Deserializes into the owned form (after validation and signature checks).
    pub fn to_owned(&self) -> Vertex {
        Vertex {
            id: VertexId(self.id.0),
            parents: self.parents.iter().map(|p| VertexId(p.0)).collect(),
            txs: self.txs.iter().map(ArchivedTransaction::to_owned).collect(),
            conflict_keys: self.conflict_keys.iter().map(|k| ConflictKey(k.0)).collect(),
            timestamp_ms: self.timestamp_ms.to_native(),
            creator: NodeId(self.creator.0),
            signature: self.signature.as_slice().to_vec(),
        }
    }

    pub(crate) fn check_bounds(&self) -> Result<(), WireError> {
        check_vertex_counts(self.parents.len(), self.txs.len(), self.conflict_keys.len(), self.signature.len(), false)?;
        let mut budget = 0usize;
        for t in self.txs.iter() {
            bound("payload bytes", t.payload.len(), PAYLOAD_BYTES_MAX)?;
            bound("conflict keys", t.conflict_keys.len(), CONFLICT_KEYS_MAX)?;
            budget += tx_budget(t.payload.len(), t.conflict_keys.len());
        }
        bound("vertex transaction bytes", budget, VERTEX_TX_BYTES_MAX)?;
        check_distinct("parents", self.parents.iter().map(|p| &p.0))?;
        check_keys(self.txs.iter().map(|t| t.conflict_keys.iter().map(|k| &k.0)), self.conflict_keys.iter().map(|k| &k.0))?;
        check_distinct("conflict_keys", self.conflict_keys.iter().map(|k| &k.0))
    }
}

fn check_vertex_counts(parents: usize, txs: usize, keys: usize, sig: usize, allow_unsigned: bool) -> Result<(), WireError> {
    bound("parents", parents, PARENTS_MAX)?;
    if parents < PARENTS_MIN {
        return Err(WireError::BadField { what: "parents", reason: "a vertex needs at least one parent".into() });
    }
    bound("transactions", txs, TXS_MAX)?;
    bound("vertex conflict keys", keys, VERTEX_KEYS_MAX)?;
    if sig != SIGNATURE_BYTES && !(allow_unsigned && sig == 0) {
        return Err(WireError::BadField { what: "signature", reason: format!("{sig} bytes, ML-DSA-87 is {SIGNATURE_BYTES}") });
    }
    Ok(())
}

/// The vertex's key list is exactly its transactions' keys in order, and no key appears twice
/// (within a transaction or across two: a vertex that spends a key twice could never be accepted).
fn check_keys<'a, T: Iterator<Item = &'a [u8; 32]>>(txs: impl Iterator<Item = T>, vertex: impl Iterator<Item = &'a [u8; 32]>) -> Result<(), WireError> {
    let mut vertex = vertex;
    for key in txs.flatten() {
        if vertex.next() != Some(key) {
            return Err(WireError::BadField { what: "conflict_keys", reason: "not the transactions' keys in order".into() });
        }
    }
    if vertex.next().is_some() {
        return Err(WireError::BadField { what: "conflict_keys", reason: "more keys than the transactions declare".into() });
    }
    Ok(())
}

fn check_distinct<'a>(what: &'static str, ids: impl Iterator<Item = &'a [u8; 32]>) -> Result<(), WireError> {
    let mut seen: Vec<&[u8; 32]> = ids.collect();
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(WireError::BadField { what, reason: "duplicate entries".into() });
    }
    Ok(())
}

pub(crate) fn bound(what: &'static str, got: usize, max: usize) -> Result<(), WireError> {
    if got > max {
        Err(WireError::Bound { what, got, max })
    } else {
        Ok(())
    }
}

/// One batched poll: "what do you think of each of these vertices?" Signed by the requester.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Query {
    /// Unique per requester; the response echoes it.
    pub query_id: u64,
    /// The requester's node id.
    pub requester: NodeId,
    /// The ids polled, at most [`QUERY_IDS_MAX`].
    pub ids: Vec<VertexId>,
    /// ML-DSA-87 over [`Query::signed_bytes`], domain `Query`.
    pub signature: Vec<u8>,
}

impl Query {
    /// `query_id u64 LE · requester (32) · id-list digest (32)`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        query_signed_bytes(self.query_id, &self.requester.0, &self.ids_digest())
    }

    /// [`Query::signed_bytes`] with the id-list digest already computed (`digest` must be
    /// [`Query::ids_digest`]): a shell that hashes the ids once for the signature check hands
    /// the same digest to the core, which binds its response to it.
    pub fn signed_bytes_with_digest(&self, digest: &[u8; 32]) -> Vec<u8> {
        query_signed_bytes(self.query_id, &self.requester.0, digest)
    }

    /// BLAKE3 digest of the ordered ids; a response binds to it.
    pub fn ids_digest(&self) -> [u8; 32] {
        pqdag_crypto::hash::id_list_digest(self.ids.iter().map(|i| &i.0))
    }
}

impl ArchivedQuery {
    /// Same as [`Query::signed_bytes`], from the archive.
    pub fn signed_bytes(&self) -> Vec<u8> {
        query_signed_bytes(self.query_id.to_native(), &self.requester.0, &self.ids_digest())
    }

    /// Same as [`Query::ids_digest`], from the archive.
    pub fn ids_digest(&self) -> [u8; 32] {
        pqdag_crypto::hash::id_list_digest(self.ids.iter().map(|i| &i.0))
    }

    /// Owned copy.
    pub fn to_owned(&self) -> Query {
        Query {
            query_id: self.query_id.to_native(),
            requester: NodeId(self.requester.0),
            ids: self.ids.iter().map(|i| VertexId(i.0)).collect(),
            signature: self.signature.as_slice().to_vec(),
        }
    }
}

fn query_signed_bytes(query_id: u64, requester: &[u8; 32], digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&query_id.to_le_bytes());
    out.extend_from_slice(requester);
    out.extend_from_slice(digest);
    out
}

/// A vote on one polled vertex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Vote {
    /// Not strongly preferred (or invalid).
    No = 0,
    /// Valid and strongly preferred.
    Yes = 1,
    /// The responder does not have the vertex (yet); counts as no, and hints it should be sent.
    Unknown = 2,
    /// Strongly preferred, and the responder is *locked* on it in each of its conflict sets:
    /// it saw a quorum of Yes for it, recorded that durably, and moves away only on much
    /// stronger evidence (small clusters, whole-network polls; see the core's `locks`
    /// module). Counts as Yes everywhere; a conflicting vertex is final only on a quorum of
    /// these.
    LockedYes = 3,
    /// The vertex is final at the responder (small clusters). Counts as `LockedYes`; f + 1 of
    /// these from distinct peers prove it final at an honest node, so a node that missed the
    /// quorum (its own lock on a competitor, say) may decide it too.
    Final = 4,
}

impl Vote {
    /// A Yes, locked or not.
    pub fn is_yes(self) -> bool {
        matches!(self, Vote::Yes | Vote::LockedYes | Vote::Final)
    }

    /// Parses a vote byte.
    pub fn from_u8(b: u8) -> Option<Vote> {
        match b {
            0 => Some(Vote::No),
            1 => Some(Vote::Yes),
            2 => Some(Vote::Unknown),
            3 => Some(Vote::LockedYes),
            4 => Some(Vote::Final),
            _ => None,
        }
    }
}

/// One signed answer to a whole [`Query`]: a vote byte per polled id, in query order.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Response {
    /// Echo of the query's id.
    pub query_id: u64,
    /// The responder's node id.
    pub responder: NodeId,
    /// Digest of the query's ordered ids: the signature commits to what was asked.
    pub ids_digest: [u8; 32],
    /// One [`Vote`] byte per polled id.
    pub votes: Vec<u8>,
    /// The responder's lock round when it voted (small clusters; 0 elsewhere): an honest node
    /// says Yes to at most one member of a conflict set per round, so a quorum of Yes with one
    /// round is a certificate for its member (the core's `locks` module).
    pub round: u64,
    /// Empty, or one byte per vote: for a `LockedYes`, how many rounds before `round` the
    /// responder's lock on the vertex was taken (0: this round; 255: that long or longer, or
    /// unknown). Other votes carry 0.
    pub lock_ages: Vec<u8>,
    /// ML-DSA-87 over [`Response::signed_bytes`], domain `Response`.
    pub signature: Vec<u8>,
}

impl Response {
    /// `query_id u64 LE · responder (32) · ids_digest (32) · n u32 LE · votes · round u64 LE ·
    /// m u32 LE · lock_ages`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        response_signed_bytes(self.query_id, &self.responder.0, &self.ids_digest, &self.votes, self.round, &self.lock_ages)
    }

    /// How many rounds before [`Response::round`] the responder locked on polled id `i` (0 when
    /// no ages were sent).
    pub fn lock_age(&self, i: usize) -> u8 {
        self.lock_ages.get(i).copied().unwrap_or(0)
    }

    /// The votes, parsed (bytes were validated on decode).
    pub fn vote(&self, i: usize) -> Vote {
        self.votes.get(i).copied().and_then(Vote::from_u8).unwrap_or(Vote::Unknown)
    }
}

impl ArchivedResponse {
    /// Same as [`Response::signed_bytes`], from the archive.
    pub fn signed_bytes(&self) -> Vec<u8> {
        response_signed_bytes(self.query_id.to_native(), &self.responder.0, &self.ids_digest, self.votes.as_slice(), self.round.to_native(), self.lock_ages.as_slice())
    }

    /// Owned copy.
    pub fn to_owned(&self) -> Response {
        Response {
            query_id: self.query_id.to_native(),
            responder: NodeId(self.responder.0),
            ids_digest: self.ids_digest,
            votes: self.votes.as_slice().to_vec(),
            round: self.round.to_native(),
            lock_ages: self.lock_ages.as_slice().to_vec(),
            signature: self.signature.as_slice().to_vec(),
        }
    }
}

fn response_signed_bytes(query_id: u64, responder: &[u8; 32], digest: &[u8; 32], votes: &[u8], round: u64, lock_ages: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(88 + votes.len() + lock_ages.len());
    out.extend_from_slice(&query_id.to_le_bytes());
    out.extend_from_slice(responder);
    out.extend_from_slice(digest);
    out.extend_from_slice(&u32::try_from(votes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(votes);
    out.extend_from_slice(&round.to_le_bytes());
    out.extend_from_slice(&u32::try_from(lock_ages.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(lock_ages);
    out
}

/// "Send me these vertices": used for missing parents, unknown polled ids and catch-up.
/// Unsigned: it asks for data, and every vertex in the reply carries its creator's signature.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct VertexRequest {
    /// Echoed in the reply.
    pub request_id: u64,
    /// At most [`REQUEST_IDS_MAX`].
    pub ids: Vec<VertexId>,
}

/// The vertices of a [`VertexRequest`] the responder has (possibly fewer than asked).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct VertexReply {
    /// The request's id.
    pub request_id: u64,
    /// At most [`REPLY_VERTICES_MAX`], each individually signed.
    pub vertices: Vec<Vertex>,
}

/// "Which vertices did you finalize, in your finality order, from this position on?" Lets a node
/// that lost its disk (or was down long) walk a peer's whole finalized history, then fetch the
/// vertices it lacks by id. Unsigned: the answer is only ids, checked by fetching signed vertices.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct SyncRequest {
    /// Echoed in the reply.
    pub request_id: u64,
    /// First finality position wanted (positions start at 1; genesis is 0).
    pub from_position: u64,
    /// Most ids wanted, at most [`SYNC_IDS_MAX`].
    pub max: u32,
}

/// Finalized ids of the responder's shard from `from_position`, in finality order.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct SyncReply {
    /// The request's id.
    pub request_id: u64,
    /// Where the next request should start (past the last id here).
    pub next_position: u64,
    /// At most [`SYNC_IDS_MAX`] ids.
    pub ids: Vec<VertexId>,
}

/// A periodic "these are my DAG tips" announcement: a peer that does not know a tip fetches it,
/// which is how partitions reconcile and restarted nodes catch up.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Frontier {
    /// Sender's node id.
    pub sender: NodeId,
    /// Count of vertices the sender has finalized (progress hint).
    pub finalized_count: u64,
    /// Current tips, at most [`FRONTIER_IDS_MAX`].
    pub tips: Vec<VertexId>,
}

/// Proof that a node misbehaved, checkable by anyone with the accused's public key.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum Evidence {
    /// Two signed responses to the same query with different votes.
    ConflictingResponses {
        /// First response.
        a: Response,
        /// Second response.
        b: Response,
    },
    /// Two signed vertices by one creator that share a conflict key (a double spend).
    Equivocation {
        /// First vertex.
        a: Vertex,
        /// Second vertex.
        b: Vertex,
    },
}

/// A gossiped Byzantine alert: carries the proof, so receivers check it instead of trusting the
/// reporter.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Alert {
    /// Who reports.
    pub reporter: NodeId,
    /// Who is accused.
    pub accused: NodeId,
    /// The proof.
    pub evidence: Evidence,
    /// Reporter's ML-DSA-87 over the evidence digest, domain `Alert`.
    pub signature: Vec<u8>,
}

impl Evidence {
    /// A digest of the proof: every signed byte and signature it carries, in order.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("pqdag 2026-11 evidence digest v1");
        match self {
            Evidence::ConflictingResponses { a, b } => {
                h.update(b"conflicting-responses");
                for r in [a, b] {
                    let sb = r.signed_bytes();
                    h.update(&(sb.len() as u64).to_le_bytes());
                    h.update(&sb);
                    h.update(&r.signature);
                }
            }
            Evidence::Equivocation { a, b } => {
                h.update(b"equivocation");
                for v in [a, b] {
                    let cb = v.canonical_bytes();
                    h.update(&(cb.len() as u64).to_le_bytes());
                    h.update(&cb);
                    h.update(&v.signature);
                }
            }
        }
        *h.finalize().as_bytes()
    }
}

impl Alert {
    /// What the reporter signs (domain `Alert`): `reporter (32) · accused (32) · evidence digest (32)`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(&self.reporter.0);
        out.extend_from_slice(&self.accused.0);
        out.extend_from_slice(&self.evidence.digest());
        out
    }
}
