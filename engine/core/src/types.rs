//! Inputs, outputs and configuration of the core.

use std::sync::Arc;

use pqdag_crypto::Domain;
use pqdag_wire::{ConflictKey, Evidence, Frontier, NodeId, Query, Response, TxId, Vertex, VertexId, VertexReply, VertexRequest};

use crate::params::Params;
use crate::peers::Misbehaviour;

/// Most shard instances per node (shard sets are u64 masks).
pub const SHARDS_MAX: u32 = 64;

/// Signs the core's own messages. The engine implements it with ML-DSA-87; the simulator with
/// a keyed BLAKE3 MAC plus a cost model. Passed in so the core never holds key material.
pub trait Signer {
    /// Signature over `msg` under `domain`.
    fn sign(&self, domain: Domain, msg: &[u8]) -> Vec<u8>;
}

/// Where a vertex stands. `Final` and `Rejected` are forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VertexStatus {
    /// Still being polled.
    Processing,
    /// Finalized (FR-005).
    Final,
    /// Lost a conflict set or descends from a loser (4.5).
    Rejected,
}

/// Static configuration of one core instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub me: NodeId,
    /// Every node of the network, this one included (order irrelevant; sorted inside).
    pub nodes: Vec<NodeId>,
    /// Protocol parameters.
    pub params: Params,
    /// Seed of the core's RNG (sampling, gossip targets, parent choice).
    pub seed: u64,
    /// This instance's shard.
    pub shard: u32,
    /// Shards per node (1 = the simple path).
    pub shard_count: u32,
}

/// One input to [`crate::Core::handle`]. Every peer message has ALREADY been verified by the
/// shell (id recomputed, ML-DSA signature checked, bounds checked).
#[derive(Debug, Clone)]
pub enum Event {
    /// A client submits a payload; the core builds, signs, stores and gossips a vertex.
    Submit {
        /// Application bytes.
        payload: Vec<u8>,
        /// What the payload spends.
        conflict_keys: Vec<ConflictKey>,
        /// Echoed in [`Action::Created`].
        client_tag: u64,
        /// Wall clock of the shell (tie-break only).
        timestamp_ms: u64,
    },
    /// A vertex from a peer (gossip).
    Vertex {
        /// Sender.
        from: NodeId,
        /// The verified vertex.
        vertex: Arc<Vertex>,
    },
    /// A poll from a peer.
    Query {
        /// Sender.
        from: NodeId,
        /// The verified query.
        query: Arc<Query>,
        /// [`Query::ids_digest`] of `query`, computed once by the shell while it checked the
        /// signature (the response binds to it): the ids are hashed once per query, not twice.
        ids_digest: [u8; 32],
    },
    /// An answer to one of our polls.
    Response {
        /// Sender.
        from: NodeId,
        /// The verified response.
        response: Response,
    },
    /// A peer asks for vertices.
    VertexRequest {
        /// Sender.
        from: NodeId,
        /// The request.
        request: VertexRequest,
    },
    /// Vertices we asked for.
    VertexReply {
        /// Sender.
        from: NodeId,
        /// The verified vertices.
        vertices: Vec<Arc<Vertex>>,
    },
    /// A peer's tips.
    Frontier {
        /// Sender.
        from: NodeId,
        /// The announcement.
        frontier: Frontier,
    },
    /// The timer armed at `poll_timeout` fired (spurious calls are harmless).
    Timer,
    /// The shell refused a message of `from` (bad signature, malformed): scoring input.
    InvalidMessage {
        /// Offender.
        from: NodeId,
        /// What was wrong.
        kind: Misbehaviour,
    },
    /// A verified Byzantine alert gossiped by a peer (its evidence is re-checked here).
    Alert {
        /// Reporter.
        from: NodeId,
        /// Accused.
        accused: NodeId,
        /// Proof.
        evidence: Evidence,
    },
    /// The shell's transport lost (or regained) its verified connection to `peer`. Unreachable
    /// peers are left out of samples only while the reachable ones and this node still form a
    /// strict majority of the cluster: a crashed node does not stall a 3-node cluster, but two
    /// sides of a partition can never both shrink their samples and finalize alone.
    PeerReachability {
        /// The peer.
        peer: NodeId,
        /// Whether it is reachable now.
        reachable: bool,
    },
    /// A message from another shard of this node (delivered in order).
    FromShard(ShardMsg),
    /// Messages from other shards of this node, in order, handled as one event (one timer pass
    /// after all of them): a busy shard receives hundreds of thousands of `Success`es a second,
    /// and a pass per message cost more than the messages.
    FromShards(Vec<ShardMsg>),
}

impl Event {
    /// A verified query from `from`, its id digest computed here: for callers that did not hash
    /// the ids while checking the signature (tests, tools). Shells pass the digest they hashed.
    pub fn query(from: NodeId, query: Arc<Query>) -> Event {
        let ids_digest = query.ids_digest();
        Event::Query { from, query, ids_digest }
    }
}

/// One output of [`crate::Core::poll_action`].
#[derive(Debug, Clone)]
pub enum Action {
    /// Send a vertex to these peers.
    SendVertex {
        /// Recipients.
        to: Vec<NodeId>,
        /// The vertex.
        vertex: Arc<Vertex>,
    },
    /// Send one signed poll to every sampled peer.
    SendQuery {
        /// The sample.
        to: Vec<NodeId>,
        /// The signed query.
        query: Arc<Query>,
    },
    /// Answer a poll.
    SendResponse {
        /// The querier.
        to: NodeId,
        /// The signed response.
        response: Response,
    },
    /// Ask a peer for vertices we miss.
    RequestVertices {
        /// The peer believed to have them.
        to: NodeId,
        /// The request.
        request: VertexRequest,
    },
    /// Answer a vertex request.
    SendVertices {
        /// The requester.
        to: NodeId,
        /// The vertices we have.
        reply: VertexReply,
    },
    /// Announce our tips.
    SendFrontier {
        /// Recipients.
        to: Vec<NodeId>,
        /// The announcement.
        frontier: Frontier,
    },
    /// Make this vertex and status durable BEFORE releasing any later send of this batch.
    Persist {
        /// The vertex (shared, never copied).
        vertex: Arc<Vertex>,
        /// Its status now.
        status: VertexStatus,
    },
    /// A vertex is final: `position` is its index in this shard's finality order.
    Finalized {
        /// The vertex.
        id: VertexId,
        /// 1-based position in this shard's finality order (genesis is 0).
        position: u64,
        /// Time from local arrival (creation for own vertices) to finality.
        latency_us: u64,
    },
    /// A vertex is rejected forever.
    Rejected {
        /// The vertex.
        id: VertexId,
    },
    /// Make the quorum lock of the set of `key` durable (`None`: released) BEFORE releasing
    /// any later send of this batch, like a `Persist`; hand the stored locks back to
    /// [`crate::Core::restore_locks`] at a restart. A node that forgot a lock could leave it
    /// without the evidence the safety argument needs (docs/consensus.md item 8c).
    Lock {
        /// Conflict key.
        key: ConflictKey,
        /// The member locked on, or `None` when released (decided sets release theirs).
        member: Option<VertexId>,
        /// The lock's round: a round in which a certificate for the member exists (or 0),
        /// what this node claims to peers (`locks`, lock rounds).
        round: u64,
        /// The lock's gate: the node leaves the lock on a certificate of a later round only.
        gate: u64,
    },
    /// A peer crossed the exclusion score: gossip an alert (with proof when there is one).
    Alert {
        /// The accused.
        peer: NodeId,
        /// What tipped the score.
        reason: Misbehaviour,
        /// Transferable proof, when the misbehaviour has one.
        evidence: Option<Box<Evidence>>,
        /// Score after the incident.
        score: f64,
    },
    /// Deliver to another shard of this node (in order).
    ToShard {
        /// Target shard.
        shard: u32,
        /// The message.
        msg: ShardMsg,
    },
    /// A submission became transaction `tx` of vertex `id` (sent once per transaction when its
    /// batch closes, and again when a re-issue moves it to a new vertex).
    Created {
        /// Tag of the submission.
        client_tag: u64,
        /// The vertex.
        id: VertexId,
        /// The transaction.
        tx: TxId,
    },
    /// Submission `client_tag` is final although its own vertex is rejected: the same
    /// transaction is in final vertex `id` (submitted through another node too). Comes before
    /// the rejection.
    TxFinal {
        /// Tag of the submission.
        client_tag: u64,
        /// The final vertex carrying the same transaction.
        id: VertexId,
        /// The transaction.
        tx: TxId,
    },
    /// Own vertex `id` is being rejected, and these submissions of it are innocent (none of
    /// their keys is spent by another vertex): they go into a new vertex (a later `Created` per
    /// tag) instead of being reported rejected. Comes before the `Rejected { id }`.
    Reissued {
        /// The rejected vertex.
        id: VertexId,
        /// The submissions that move.
        client_tags: Vec<u64>,
    },
}

/// Cross-shard facts (docs/consensus.md, "Sharding").
#[derive(Debug, Clone)]
pub enum ShardMsg {
    /// Subscriber holds a child of `id`; the owner reports its status now and on changes, and
    /// fetches it from `hint` if unknown.
    Watch {
        /// Watched vertex.
        id: VertexId,
        /// Subscribing shard.
        subscriber: u32,
        /// Peer that should have it.
        hint: NodeId,
    },
    /// Status of a watched vertex.
    Status {
        /// The vertex.
        id: VertexId,
        /// Its status.
        status: VertexStatus,
        /// Whether it is strongly preferred at its owner.
        strong: bool,
        /// Whether it or a processing ancestor is a member of a contested set at its owner
        /// (`Rec::contested`: honest peers may vote No on it for as long as that set is open).
        contested: bool,
    },
    /// A vertex created on one shard and owned by the receiver: sign it (it comes unsigned),
    /// store, persist and gossip it.
    Adopt {
        /// The vertex.
        vertex: Arc<Vertex>,
        /// The submissions it carries (one per transaction) and their re-issue generation.
        tags: crate::batch::OwnTags,
    },
    /// A closed batch for the receiver to build into a vertex it owns (`Core::build`): the
    /// shard that takes submissions spreads building, signing and owning over every shard.
    Build {
        /// The transactions, in order.
        txs: Vec<pqdag_wire::Transaction>,
        /// The submissions they carry (one per transaction) and their re-issue generation.
        tags: crate::batch::OwnTags,
        /// The batch's timestamp (the first submission's wall clock).
        timestamp_ms: u64,
    },
    /// `member` (owned by shard `owner`) joins the set of `key` (owned by the receiver).
    Join {
        /// Conflict key.
        key: ConflictKey,
        /// New member.
        member: VertexId,
        /// Member's creator (a set holds at most two members per creator).
        creator: NodeId,
        /// Member's owner shard.
        owner: u32,
    },
    /// The sender voted Yes on a descendant of `id` (owned by the receiver): expose `id` and
    /// its ancestors (`Core::expose`).
    Exposed {
        /// The vertex.
        id: VertexId,
    },
    /// The member's owner voted Yes on `member` or a descendant: its set owner (the receiver)
    /// may no longer move the preference away from it on a tie.
    MemberExposed {
        /// Conflict key.
        key: ConflictKey,
        /// The exposed member.
        member: VertexId,
    },
    /// `member` had a Snowball success or a quorum in a poll: an input for the set of `key`
    /// (`Core::set_success`).
    Success {
        /// Conflict key.
        key: ConflictKey,
        /// Member.
        member: VertexId,
        /// Member's confidence (tie-break).
        confidence: f64,
        /// A Snowball success (counts).
        snowball: bool,
        /// Peer Yes in the poll (the lock release threshold).
        peer_yes: u32,
        /// A quorum of Yes (the set locks on it).
        quorum: bool,
        /// Peers locked on the member (an unlocked set follows it at f + 1).
        peer_locked: u32,
        /// The poll's lock round (what a quorum locks).
        quorum_round: u64,
        /// A round in which f + 1 peers claimed a lock on the member (`lock_rounds`).
        claim_round: Option<u64>,
    },
    /// The preference (or decision) of the set of `key`.
    Preference {
        /// Conflict key.
        key: ConflictKey,
        /// Preferred member.
        preferred: VertexId,
        /// True once the set is decided (then every other member is rejected).
        decided: bool,
        /// The set is quorum-locked on `preferred` (a Yes on it is a `LockedYes`).
        locked: bool,
        /// The lock's round, when locked (a `LockedYes`'s age counts from it).
        lock_round: u64,
        /// The receiver may have been voting Yes on a member that is no longer preferred:
        /// answer [`ShardMsg::PreferenceAck`] once applied (`Core::broadcast_preference`).
        ack: bool,
    },
    /// The sender applied a `Preference { ack: true }` of the set of `key` (owned by the
    /// receiver): it no longer votes Yes on the member it revoked.
    PreferenceAck {
        /// Conflict key.
        key: ConflictKey,
    },
    /// `member` met its thresholds: lock the set of `key` for it.
    Claim {
        /// Conflict key.
        key: ConflictKey,
        /// Claimant.
        member: VertexId,
        /// Claimant's owner shard.
        owner: u32,
    },
    /// Answer to a claim.
    ClaimReply {
        /// Conflict key.
        key: ConflictKey,
        /// Claimant.
        member: VertexId,
        /// Lock taken.
        granted: bool,
    },
    /// Drop a lock taken for `member` (another set refused).
    Release {
        /// Conflict key.
        key: ConflictKey,
        /// Claimant.
        member: VertexId,
    },
    /// `member` was rejected by its owner (it left the race for the set of `key`).
    MemberRejected {
        /// Conflict key.
        key: ConflictKey,
        /// Rejected member.
        member: VertexId,
    },
    /// `winner` is final: decide the set of `key`.
    Decide {
        /// Conflict key.
        key: ConflictKey,
        /// Winner.
        winner: VertexId,
    },
    /// The sender's aged frontier (`node_polls`): what the node's next polls ask about for it.
    /// Sent to shard 0, which runs every poll of the node, when the list changes.
    PollIds {
        /// The offering shard.
        shard: u32,
        /// Its ids (replaces its previous list).
        ids: Vec<VertexId>,
    },
    /// A node poll closed: the votes on the receiver's ids, for its credit, Snowball and
    /// finality rules (`node_polls`).
    PollClosed(Box<crate::node_polls::PollPart>),
    /// A peer's query asks about ids the receiver owns: its votes, please (`node_polls`).
    VoteRequest {
        /// Gather number at the shard answering the query.
        gather: u64,
        /// The shard answering the query.
        reply: u32,
        /// The asking peer (unknown ids are fetched from it).
        requester: NodeId,
        /// The receiver's ids, in query order.
        ids: Vec<VertexId>,
    },
    /// The votes asked for by a `VoteRequest`, in its order.
    Votes {
        /// Gather number.
        gather: u64,
        /// The voting shard.
        shard: u32,
        /// Vote bytes.
        votes: Vec<u8>,
        /// Lock ages of the votes (empty without lock rounds).
        ages: Vec<u8>,
        /// The voter's lock round when it voted.
        round: u64,
    },
    /// A poll part showed `peer` contradicting the settled vote on most ids: an incident for
    /// shard 0, which samples the node's polls.
    PollContradicted {
        /// The peer.
        peer: NodeId,
    },
}

impl ShardMsg {
    /// Every kind's name, indexed by [`ShardMsg::kind_index`] (metrics labels).
    pub const KINDS: [&'static str; 20] = ["watch", "status", "adopt", "join", "exposed", "member_exposed", "success", "preference", "claim", "claim_reply", "release", "member_rejected", "decide", "preference_ack", "build", "poll_ids", "poll_closed", "vote_request", "votes", "poll_contradicted"];

    /// The message's kind, an index into [`ShardMsg::KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            ShardMsg::Watch { .. } => 0,
            ShardMsg::Status { .. } => 1,
            ShardMsg::Adopt { .. } => 2,
            ShardMsg::Join { .. } => 3,
            ShardMsg::Exposed { .. } => 4,
            ShardMsg::MemberExposed { .. } => 5,
            ShardMsg::Success { .. } => 6,
            ShardMsg::Preference { .. } => 7,
            ShardMsg::Claim { .. } => 8,
            ShardMsg::ClaimReply { .. } => 9,
            ShardMsg::Release { .. } => 10,
            ShardMsg::MemberRejected { .. } => 11,
            ShardMsg::Decide { .. } => 12,
            ShardMsg::PreferenceAck { .. } => 13,
            ShardMsg::Build { .. } => 14,
            ShardMsg::PollIds { .. } => 15,
            ShardMsg::PollClosed(_) => 16,
            ShardMsg::VoteRequest { .. } => 17,
            ShardMsg::Votes { .. } => 18,
            ShardMsg::PollContradicted { .. } => 19,
        }
    }
}

/// Shard owning a vertex.
pub fn shard_of_vertex(id: &VertexId, shard_count: u32) -> u32 {
    (id.prefix_u64() % u64::from(shard_count.max(1))) as u32
}

/// Shard owning a conflict set.
pub fn shard_of_key(key: &ConflictKey, shard_count: u32) -> u32 {
    (key.prefix_u64() % u64::from(shard_count.max(1))) as u32
}

/// The fixed, well-known genesis vertex every node starts with (final at position 0). It has
/// no parents and no signature; it is never sent on the wire.
pub fn genesis() -> Arc<Vertex> {
    let mut v = Vertex {
        id: VertexId::default(),
        parents: Vec::new(),
        txs: vec![pqdag_wire::Transaction::new(b"pqdag genesis".to_vec(), Vec::new())],
        conflict_keys: Vec::new(),
        timestamp_ms: 0,
        creator: NodeId::default(),
        signature: Vec::new(),
    };
    v.id = v.compute_id();
    Arc::new(v)
}
