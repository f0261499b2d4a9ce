//! The pqdag wire format: every message nodes exchange, as rkyv 0.8 archives validated with
//! bytecheck before any field is read.
//!
//! A frame is `[version: u8][kind: u8][rkyv archive of the message]`. The archive uses rkyv's
//! `unaligned` layout, so a frame can be validated and read in place at any offset of a receive
//! buffer (zero-copy) without first copying it to an aligned buffer.
//!
//! Decoding is two steps, both on untrusted bytes and both returning [`WireError`], never
//! panicking: [`decode`] checks header, size and rkyv structure (bytecheck), then checks every
//! protocol bound ([`limits`]) on the archived view. Only then does the caller read fields, verify
//! signatures ([`Vertex::signed_bytes`], [`Response::signed_bytes`]) and, if it keeps the message,
//! deserialize it into the owned type.
//!
//! Which bytes are signed and hashed is defined here by hand ([`Vertex::canonical_bytes`]), not by
//! the rkyv layout, so anyone can re-verify an exported history with an independent ML-DSA-87 and
//! BLAKE3 implementation.

mod client;
mod error;
mod frame;
pub mod limits;
mod messages;
mod tx;
mod types;

pub use client::{
    ArchivedClientErrorCode, ArchivedClientReply, ArchivedClientRequest, ArchivedClientStatus, ArchivedFeedEntry, ArchivedFinalityEvent,
    ClientErrorCode, ClientReply, ClientRequest, ClientStatus, FeedEntry, FeedTx, ArchivedFeedTx, FinalityEvent, CLIENT_EVENTS_MAX, CLIENT_STATUS_IDS_MAX,
    FEED_CURSOR_BYTES_MAX, FEED_ENTRIES_MAX, FEED_PAYLOAD_BYTES_MAX,
};
pub use error::WireError;
pub use frame::{decode, encode, FrameRef, Kind, WireMessage, HEADER_BYTES, WIRE_VERSION};
pub use messages::{
    ArchivedAlert, ArchivedEvidence, ArchivedFrontier, ArchivedQuery, ArchivedResponse,
    ArchivedVertex, ArchivedVertexReply, ArchivedVertexRequest, Alert, Evidence, Frontier, Query, CANONICAL_VERTEX_VERSION,
    Response, Vertex, VertexReply, VertexRequest, Vote, SyncRequest, SyncReply, ArchivedSyncRequest, ArchivedSyncReply,
};
pub use tx::{largest_batch, spends_apart, tx_budget, tx_proof, tx_root, verify_tx_proof, ArchivedTransaction, Transaction};
pub use types::{ArchivedConflictKey, ArchivedNodeId, ArchivedTxId, ArchivedVertexId, ConflictKey, NodeId, TxId, VertexId};
