//! Ingress, the first stage of a turn: decodes every frame (rkyv, validated) and checks that it
//! is who it claims (a vertex's id, a query's requester, a response's responder, an alert's
//! reporter and the shape of its proof). Owns no state; calls nothing but the wire decoder.
//! What it cannot place it hands on unjudged: client frames to the gateway, fetch and sync
//! requests to the sync server, sync replies to the sync client, refusals to the guard.

use pqdag_core::Event;
use pqdag_transport::{ClientId, ClientKeyId, Incoming, PeerId, Responder, TransportError};
use pqdag_wire::{decode, FrameRef, NodeId, Query, Response, Vertex, VertexId, WireError};

use super::outbound::Reply;

/// A message decoded and waiting for its signature check.
pub(super) enum Unverified {
    /// A gossiped or relayed vertex.
    Vertex { from: NodeId, vertex: Vertex },
    /// A poll query, with where its response goes. `ids_digest` is filled by `Verify::dedupe`
    /// (after the query budget, never before); the signature check and the core's response use
    /// the same digest.
    Query { from: NodeId, query: Query, ids_digest: Option<[u8; 32]>, reply: Responder },
    /// A response to one of our polls.
    Response { from: NodeId, response: Response },
    /// The vertices a fetch of ours brought back.
    Reply { from: NodeId, vertices: Vec<Vertex> },
    /// A gossiped Byzantine alert: the reporter's signature and every signature of its proof.
    Alert { from: NodeId, alert: pqdag_wire::Alert },
}

/// A frame from a client connection, still undecoded.
pub(super) struct ClientFrame {
    /// The submitting connection.
    pub(super) client: ClientId,
    /// The client key it proved at connect (what the feed and quotas will record).
    pub(super) key: ClientKeyId,
    /// The request frame.
    pub(super) bytes: Vec<u8>,
    /// Where the answer goes.
    pub(super) reply: Responder,
}

/// Where one decoded item goes next.
pub(super) enum Decoded {
    /// To the batch verify.
    Unverified(Unverified),
    /// Straight to the core (no signature to check).
    Event(Event),
    /// A vertex fetch of `from` to answer from memory or the store.
    Fetch { from: NodeId, request_id: u64, ids: Vec<VertexId>, reply: Responder },
    /// A history-sync request of `from` to answer from the finality index.
    SyncRequest { from: NodeId, request_id: u64, from_position: u64, max: u32, reply: Responder },
    /// A client frame, for the gateway (clients are not peers: it decodes them itself).
    Client(ClientFrame),
    /// The answer to one of our history-sync requests.
    SyncReply { peer: PeerId, result: Result<Vec<u8>, TransportError> },
    /// A malformed or misattributed frame from `from`.
    Invalid { from: NodeId, why: &'static str },
}

impl Decoded {
    /// Whether routing it reads the store (fetches and history syncs are served from it, the
    /// gateway answers status queries from it): such items wait while the store is lent to a
    /// write in flight (`Shard::turn`).
    pub(super) fn reads_store(&self) -> bool {
        matches!(self, Decoded::Fetch { .. } | Decoded::SyncRequest { .. } | Decoded::Client(_))
    }
}

/// Decodes one item from the network; `None` when there is nothing to do.
pub(super) fn decode_incoming(node_ids: &[NodeId], inc: Incoming) -> Option<Decoded> {
    let invalid = |from: NodeId, why: &'static str| Some(Decoded::Invalid { from, why });
    match inc {
        Incoming::Vertex { peer, bytes } => {
            let from = node_ids[peer.0];
            match decode(&bytes) {
                Ok(FrameRef::Vertex(a)) => {
                    if a.id_matches() {
                        Some(Decoded::Unverified(Unverified::Vertex { from, vertex: a.to_owned() }))
                    } else {
                        invalid(from, "vertex_id_mismatch")
                    }
                }
                Ok(FrameRef::Frontier(f)) => match rkyv::deserialize::<pqdag_wire::Frontier, rkyv::rancor::Error>(f) {
                    Ok(frontier) if frontier.sender == from => Some(Decoded::Event(Event::Frontier { from, frontier })),
                    _ => invalid(from, "frontier"),
                },
                Ok(FrameRef::Alert(a)) => match rkyv::deserialize::<pqdag_wire::Alert, rkyv::rancor::Error>(a) {
                    Ok(alert) if alert.reporter == from && evidence_well_formed(&alert) => Some(Decoded::Unverified(Unverified::Alert { from, alert })),
                    _ => invalid(from, "alert"),
                },
                Ok(other) => invalid(from, other.kind().name()),
                Err(e) => invalid(from, wire_reason(&e)),
            }
        }
        Incoming::Query { peer, bytes, reply } => {
            let from = node_ids[peer.0];
            match decode(&bytes) {
                Ok(FrameRef::Query(q)) if q.requester.0 == from.0 => Some(Decoded::Unverified(Unverified::Query { from, query: q.to_owned(), ids_digest: None, reply })),
                Ok(_) => invalid(from, "query_mismatch"),
                Err(e) => invalid(from, wire_reason(&e)),
            }
        }
        Incoming::VertexRequest { peer, bytes, reply } => {
            let from = node_ids[peer.0];
            match decode(&bytes) {
                Ok(FrameRef::VertexRequest(r)) => {
                    let ids: Vec<VertexId> = r.ids.iter().take(pqdag_wire::limits::REQUEST_IDS_MAX).map(Into::into).collect();
                    Some(Decoded::Fetch { from, request_id: r.request_id.to_native(), ids, reply })
                }
                Ok(FrameRef::SyncRequest(r)) => Some(Decoded::SyncRequest {
                    from,
                    request_id: r.request_id.to_native(),
                    from_position: r.from_position.to_native(),
                    max: r.max.to_native(),
                    reply,
                }),
                Ok(_) => invalid(from, "request_kind"),
                Err(e) => invalid(from, wire_reason(&e)),
            }
        }
        Incoming::ClientSubmit { client, key, bytes, reply } => Some(Decoded::Client(ClientFrame { client, key, bytes, reply })),
        Incoming::Event { .. } => None,
    }
}

/// Decodes the reply to one of our requests; `None` when there is nothing to do (a failed
/// request: the core times polls and fetches out itself).
pub(super) fn decode_reply(node_ids: &[NodeId], r: Reply) -> Option<Decoded> {
    match r {
        Reply::Response { peer, result, .. } => {
            let from = node_ids[peer.0];
            let Ok(bytes) = result else { return None };
            match decode(&bytes) {
                Ok(FrameRef::Response(r)) if r.responder.0 == from.0 => Some(Decoded::Unverified(Unverified::Response { from, response: r.to_owned() })),
                Ok(_) => Some(Decoded::Invalid { from, why: "response_mismatch" }),
                Err(e) => Some(Decoded::Invalid { from, why: wire_reason(&e) }),
            }
        }
        Reply::Sync { peer, result } => Some(Decoded::SyncReply { peer, result }),
        Reply::Vertices { peer, result } => {
            let from = node_ids[peer.0];
            let Ok(bytes) = result else { return None };
            match decode(&bytes) {
                Ok(FrameRef::VertexReply(r)) => {
                    let mut vertices = Vec::with_capacity(r.vertices.len());
                    for v in r.vertices.iter() {
                        if !v.id_matches() {
                            return Some(Decoded::Invalid { from, why: "vertex_id_mismatch" });
                        }
                        vertices.push(v.to_owned());
                    }
                    Some(Decoded::Unverified(Unverified::Reply { from, vertices }))
                }
                Ok(_) => Some(Decoded::Invalid { from, why: "reply_kind" }),
                Err(e) => Some(Decoded::Invalid { from, why: wire_reason(&e) }),
            }
        }
    }
}

/// Structural checks of an alert's proof before any signature is verified: the evidence must be
/// an equivocation that incriminates the accused and actually conflicts (some key spent by two
/// different transactions: a re-issue of the same transaction is not one).
fn evidence_well_formed(alert: &pqdag_wire::Alert) -> bool {
    match &alert.evidence {
        pqdag_wire::Evidence::Equivocation { a, b } => {
            a.creator == alert.accused
                && b.creator == alert.accused
                && a.id != b.id
                && a.compute_id() == a.id
                && b.compute_id() == b.id
                && pqdag_wire::spends_apart(a, b)
        }
        // Not proof of anything (an honest vote changes over time and an asker may repeat a
        // query id: see `pqdag_core` `on_alert`), and honest nodes never send it: refused before
        // its three signatures are verified, and counted against the reporter.
        pqdag_wire::Evidence::ConflictingResponses { .. } => false,
    }
}

/// The metric label of a frame that failed to decode.
pub(super) fn wire_reason(e: &WireError) -> &'static str {
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
