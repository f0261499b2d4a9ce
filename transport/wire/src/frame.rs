//! Frames: header, encoding, and validated decoding.

use rkyv::rancor;

use crate::limits::*;
use crate::client::*;
use crate::messages::{bound, *};
use crate::WireError;

/// The wire version this build speaks. A peer with another version is refused per frame.
/// 3: vote bytes `LockedYes` (3) and `Final` (4), quorum locks. 4: a response's lock round and
/// lock ages.
pub const WIRE_VERSION: u8 = 4;

/// Length of the frame header (version byte, kind byte).
pub const HEADER_BYTES: usize = 2;

/// The kind byte that follows the version byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// [`Vertex`]
    Vertex = 0x01,
    /// [`Query`]
    Query = 0x02,
    /// [`Response`]
    Response = 0x03,
    /// [`VertexRequest`]
    VertexRequest = 0x04,
    /// [`VertexReply`]
    VertexReply = 0x05,
    /// [`Frontier`]
    Frontier = 0x06,
    /// [`Alert`]
    Alert = 0x07,
    /// [`SyncRequest`]
    SyncRequest = 0x08,
    /// [`SyncReply`]
    SyncReply = 0x09,
    /// [`ClientRequest`](crate::ClientRequest) (client ALPN only)
    ClientRequest = 0x40,
    /// [`ClientReply`](crate::ClientReply) (client ALPN only)
    ClientReply = 0x41,
}

impl Kind {
    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Result<Kind, WireError> {
        Ok(match b {
            0x01 => Kind::Vertex,
            0x02 => Kind::Query,
            0x03 => Kind::Response,
            0x04 => Kind::VertexRequest,
            0x05 => Kind::VertexReply,
            0x06 => Kind::Frontier,
            0x07 => Kind::Alert,
            0x08 => Kind::SyncRequest,
            0x09 => Kind::SyncReply,
            0x40 => Kind::ClientRequest,
            0x41 => Kind::ClientReply,
            other => return Err(WireError::UnknownKind(other)),
        })
    }

    /// Name for errors and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Vertex => "vertex",
            Kind::Query => "query",
            Kind::Response => "response",
            Kind::VertexRequest => "vertex_request",
            Kind::VertexReply => "vertex_reply",
            Kind::Frontier => "frontier",
            Kind::Alert => "alert",
            Kind::SyncRequest => "sync_request",
            Kind::SyncReply => "sync_reply",
            Kind::ClientRequest => "client_request",
            Kind::ClientReply => "client_reply",
        }
    }
}

/// A message type that can travel in a frame.
pub trait WireMessage:
    rkyv::Archive + for<'a> rkyv::Serialize<rkyv::api::high::HighSerializer<rkyv::util::AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>>
{
    /// Its kind byte.
    const KIND: Kind;
    /// Checks the protocol bounds on the owned value before it is sent.
    fn check(&self) -> Result<(), WireError>;
}

macro_rules! wire_message {
    ($t:ty, $kind:expr, |$s:ident| $check:expr) => {
        impl WireMessage for $t {
            const KIND: Kind = $kind;
            fn check(&self) -> Result<(), WireError> {
                let $s = self;
                $check
            }
        }
    };
}

wire_message!(Vertex, Kind::Vertex, |v| v.check_bounds());
wire_message!(Query, Kind::Query, |q| bound("query ids", q.ids.len(), QUERY_IDS_MAX));
wire_message!(Response, Kind::Response, |r| {
    bound("response votes", r.votes.len(), QUERY_IDS_MAX)?;
    lock_ages_fit(r.lock_ages.len(), r.votes.len())
});
wire_message!(VertexRequest, Kind::VertexRequest, |r| bound("request ids", r.ids.len(), REQUEST_IDS_MAX));
wire_message!(VertexReply, Kind::VertexReply, |r| {
    bound("reply vertices", r.vertices.len(), REPLY_VERTICES_MAX)?;
    r.vertices.iter().try_for_each(Vertex::check_bounds)
});
wire_message!(Frontier, Kind::Frontier, |f| bound("frontier tips", f.tips.len(), FRONTIER_IDS_MAX));
wire_message!(Alert, Kind::Alert, |_a| Ok(()));
wire_message!(SyncRequest, Kind::SyncRequest, |r| bound("sync max", r.max as usize, SYNC_IDS_MAX));
wire_message!(SyncReply, Kind::SyncReply, |r| bound("sync ids", r.ids.len(), SYNC_IDS_MAX));
wire_message!(ClientRequest, Kind::ClientRequest, |r| match r {
    ClientRequest::Submit { payload, conflict_keys, .. } => {
        bound("payload bytes", payload.len(), PAYLOAD_BYTES_MAX)?;
        bound("conflict keys", conflict_keys.len(), CONFLICT_KEYS_MAX)
    }
    ClientRequest::Status { ids, .. } => bound("status ids", ids.len(), crate::client::CLIENT_STATUS_IDS_MAX),
    ClientRequest::Subscribe => Ok(()),
    ClientRequest::Feed { from, .. } => bound("feed cursor bytes", from.len(), crate::client::FEED_CURSOR_BYTES_MAX),
});
wire_message!(ClientReply, Kind::ClientReply, |r| match r {
    ClientReply::Events { events } => bound("events", events.len(), crate::client::CLIENT_EVENTS_MAX),
    ClientReply::Statuses { statuses, .. } => bound("statuses", statuses.len(), crate::client::CLIENT_STATUS_IDS_MAX),
    ClientReply::FeedBatch { entries, .. } => bound("feed entries", entries.len(), crate::client::FEED_ENTRIES_MAX),
    _ => Ok(()),
});

/// Encodes a message as a frame. Refuses (never sends) a message that breaks a bound.
pub fn encode<T: WireMessage>(msg: &T) -> Result<Vec<u8>, WireError> {
    msg.check()?;
    let body = rkyv::to_bytes::<rancor::Error>(msg).map_err(|e| WireError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.push(WIRE_VERSION);
    out.push(T::KIND as u8);
    out.extend_from_slice(&body);
    bound("frame bytes", out.len(), FRAME_BYTES_MAX).map_err(|_| WireError::TooLarge { got: out.len(), max: FRAME_BYTES_MAX })?;
    Ok(out)
}

/// A validated frame, borrowing the receive buffer (zero-copy).
#[derive(Debug)]
pub enum FrameRef<'a> {
    /// A vertex (id and signature not yet checked: see [`ArchivedVertex::id_matches`]).
    Vertex(&'a ArchivedVertex),
    /// A batched query.
    Query(&'a ArchivedQuery),
    /// A batched response.
    Response(&'a ArchivedResponse),
    /// A fetch request.
    VertexRequest(&'a ArchivedVertexRequest),
    /// A fetch reply.
    VertexReply(&'a ArchivedVertexReply),
    /// A frontier announcement.
    Frontier(&'a ArchivedFrontier),
    /// A Byzantine alert.
    Alert(&'a ArchivedAlert),
    /// A history sync request.
    SyncRequest(&'a ArchivedSyncRequest),
    /// A history sync reply.
    SyncReply(&'a ArchivedSyncReply),
    /// A client request.
    ClientRequest(&'a ArchivedClientRequest),
    /// A client reply.
    ClientReply(&'a ArchivedClientReply),
}

impl FrameRef<'_> {
    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            FrameRef::Vertex(_) => Kind::Vertex,
            FrameRef::Query(_) => Kind::Query,
            FrameRef::Response(_) => Kind::Response,
            FrameRef::VertexRequest(_) => Kind::VertexRequest,
            FrameRef::VertexReply(_) => Kind::VertexReply,
            FrameRef::Frontier(_) => Kind::Frontier,
            FrameRef::Alert(_) => Kind::Alert,
            FrameRef::SyncRequest(_) => Kind::SyncRequest,
            FrameRef::SyncReply(_) => Kind::SyncReply,
            FrameRef::ClientRequest(_) => Kind::ClientRequest,
            FrameRef::ClientReply(_) => Kind::ClientReply,
        }
    }
}

fn access<'a, T>(kind: Kind, body: &'a [u8]) -> Result<&'a T, WireError>
where
    T: rkyv::Portable + for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, rancor::Error>>,
{
    rkyv::access::<T, rancor::Error>(body).map_err(|e| WireError::Invalid { kind: kind.name(), reason: e.to_string() })
}

/// Validates a received frame: header, size, rkyv structure (bytecheck), then protocol bounds.
/// Never panics, whatever the bytes.
pub fn decode(frame: &[u8]) -> Result<FrameRef<'_>, WireError> {
    if frame.len() > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge { got: frame.len(), max: FRAME_BYTES_MAX });
    }
    if frame.len() < HEADER_BYTES {
        return Err(WireError::Truncated(frame.len()));
    }
    if frame[0] != WIRE_VERSION {
        return Err(WireError::Version(frame[0]));
    }
    let kind = Kind::from_u8(frame[1])?;
    let body = &frame[HEADER_BYTES..];
    Ok(match kind {
        Kind::Vertex => {
            let v: &ArchivedVertex = access(kind, body)?;
            v.check_bounds()?;
            FrameRef::Vertex(v)
        }
        Kind::Query => {
            let q: &ArchivedQuery = access(kind, body)?;
            bound("query ids", q.ids.len(), QUERY_IDS_MAX)?;
            check_sig("query signature", q.signature.len())?;
            FrameRef::Query(q)
        }
        Kind::Response => {
            let r: &ArchivedResponse = access(kind, body)?;
            bound("response votes", r.votes.len(), QUERY_IDS_MAX)?;
            lock_ages_fit(r.lock_ages.len(), r.votes.len())?;
            check_sig("response signature", r.signature.len())?;
            if let Some(b) = r.votes.iter().find(|b| Vote::from_u8(**b).is_none()) {
                return Err(WireError::BadField { what: "vote", reason: format!("byte {b} is not a vote") });
            }
            FrameRef::Response(r)
        }
        Kind::VertexRequest => {
            let r: &ArchivedVertexRequest = access(kind, body)?;
            bound("request ids", r.ids.len(), REQUEST_IDS_MAX)?;
            FrameRef::VertexRequest(r)
        }
        Kind::VertexReply => {
            let r: &ArchivedVertexReply = access(kind, body)?;
            bound("reply vertices", r.vertices.len(), REPLY_VERTICES_MAX)?;
            r.vertices.iter().try_for_each(ArchivedVertex::check_bounds)?;
            FrameRef::VertexReply(r)
        }
        Kind::Frontier => {
            let f: &ArchivedFrontier = access(kind, body)?;
            bound("frontier tips", f.tips.len(), FRONTIER_IDS_MAX)?;
            FrameRef::Frontier(f)
        }
        Kind::Alert => {
            let a: &ArchivedAlert = access(kind, body)?;
            check_sig("alert signature", a.signature.len())?;
            match &a.evidence {
                ArchivedEvidence::ConflictingResponses { a, b } => {
                    for r in [a, b] {
                        bound("evidence votes", r.votes.len(), QUERY_IDS_MAX)?;
                        lock_ages_fit(r.lock_ages.len(), r.votes.len())?;
                        check_sig("evidence signature", r.signature.len())?;
                    }
                }
                ArchivedEvidence::Equivocation { a, b } => {
                    a.check_bounds()?;
                    b.check_bounds()?;
                }
            }
            FrameRef::Alert(a)
        }
        Kind::SyncRequest => {
            let r: &ArchivedSyncRequest = access(kind, body)?;
            bound("sync max", r.max.to_native() as usize, SYNC_IDS_MAX)?;
            FrameRef::SyncRequest(r)
        }
        Kind::SyncReply => {
            let r: &ArchivedSyncReply = access(kind, body)?;
            bound("sync ids", r.ids.len(), SYNC_IDS_MAX)?;
            FrameRef::SyncReply(r)
        }
        Kind::ClientRequest => {
            let r: &ArchivedClientRequest = access(kind, body)?;
            crate::client::check_request(r)?;
            FrameRef::ClientRequest(r)
        }
        Kind::ClientReply => {
            let r: &ArchivedClientReply = access(kind, body)?;
            crate::client::check_reply(r)?;
            FrameRef::ClientReply(r)
        }
    })
}

/// A response's lock ages: none, or one per vote.
fn lock_ages_fit(ages: usize, votes: usize) -> Result<(), WireError> {
    if ages == 0 || ages == votes {
        Ok(())
    } else {
        Err(WireError::BadField { what: "lock ages", reason: format!("{ages} ages for {votes} votes") })
    }
}

fn check_sig(what: &'static str, len: usize) -> Result<(), WireError> {
    if len == SIGNATURE_BYTES {
        Ok(())
    } else {
        Err(WireError::BadField { what, reason: format!("{len} bytes, ML-DSA-87 is {SIGNATURE_BYTES}") })
    }
}
