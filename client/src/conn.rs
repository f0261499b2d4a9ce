//! One verified QUIC connection to one node's client endpoint, and the protocol on it.
//!
//! Streams (same framing as `pqdag-transport`'s `frame` module: a type byte, then frames of
//! `u32 LE length · bytes`):
//! * client → node, uni, first: [`STREAM_IDENTITY`](crate::identity::STREAM_IDENTITY) with our
//!   ML-DSA-87 client-key proof (the node reads nothing else of ours until it verifies);
//! * node → client, uni, first: [`STREAM_IDENTITY`](crate::identity::STREAM_IDENTITY) with the
//!   node's ML-DSA-87 proof, sent once ours verified; nothing else is trusted until it verifies;
//! * client → node, bi: [`STREAM_SUBMIT`] and one `ClientRequest` frame, answered by one
//!   `ClientReply` frame (no type byte on the answer);
//! * node → client, uni: [`STREAM_EVENTS`] and `ClientReply::Events` frames (decisions of the
//!   vertices submitted on this connection).

use std::sync::Arc;
use std::time::Duration;

use pqdag_wire::{decode, encode, ArchivedClientReply, ClientReply, ClientRequest, FrameRef};

use crate::cluster::NodeTarget;
use crate::identity::{self, CLOSE_NOT_AUTHORIZED, CONTEXT_ACCEPTOR, CONTEXT_CLIENT, EXPORTER_BYTES, EXPORTER_LABEL, PROOF_BYTES, STREAM_IDENTITY};
use crate::registry::Registry;
use crate::{proto, ClientError};

/// Bidirectional stream of one request and its reply (`frame::STREAM_SUBMIT`).
pub(crate) const STREAM_SUBMIT: u8 = 0x13;
/// Unidirectional stream of pushed events (`frame::STREAM_EVENTS`).
pub(crate) const STREAM_EVENTS: u8 = 0x03;
/// Largest request or event frame (`frame::MAX_CLIENT_FRAME_BYTES`).
pub(crate) const MAX_CLIENT_FRAME_BYTES: usize = 256 << 10;
/// Largest reply frame the node may send (`frame::MAX_FRAME_BYTES`).
const MAX_REPLY_FRAME_BYTES: usize = 1 << 20;
/// QUIC application close code for a refused identity (`close_code::IDENTITY_MISMATCH`).
const CLOSE_IDENTITY_MISMATCH: u32 = 2;

/// A connection whose node proved its identity; reads pushed events until dropped.
#[derive(Debug)]
pub(crate) struct NodeConn {
    pub(crate) conn: quinn::Connection,
    events: tokio::task::JoinHandle<()>,
}

impl Drop for NodeConn {
    fn drop(&mut self) {
        self.events.abort();
        self.conn.close(quinn::VarInt::from_u32(0), b"client done");
    }
}

fn io(node: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Io(format!("{node}: {e}"))
}

impl NodeConn {
    /// Connects to `t`, proves `key`, and checks the node's identity proof; events go to
    /// `registry`.
    pub(crate) async fn connect(
        endpoint: &quinn::Endpoint,
        t: &NodeTarget,
        key: &pqdag_crypto::Keypair,
        timeout: Duration,
        registry: Arc<Registry>,
    ) -> Result<NodeConn, ClientError> {
        let connecting = endpoint.connect(t.addr, crate::tls::SERVER_NAME).map_err(|e| io(&t.name, e))?;
        let conn = tokio::time::timeout(timeout, async {
            let conn = connecting.await.map_err(|e| io(&t.name, format!("handshake: {e}")))?;
            // We prove first; the node answers only for a key it accepts.
            let mut xc = [0u8; EXPORTER_BYTES];
            conn.export_keying_material(&mut xc, EXPORTER_LABEL, CONTEXT_CLIENT)
                .map_err(|_| ClientError::Tls("TLS exporter unavailable".into()))?;
            let ours = identity::proof_stream(key, &xc)?;
            let mut send = conn.open_uni().await.map_err(|e| io(&t.name, format!("identity stream: {e}")))?;
            send.write_all(&ours).await.map_err(|e| io(&t.name, format!("identity stream: {e}")))?;
            let _ = send.finish();
            let proof = read_proof(&conn, &t.name).await?;
            let mut x = [0u8; EXPORTER_BYTES];
            conn.export_keying_material(&mut x, EXPORTER_LABEL, CONTEXT_ACCEPTOR)
                .map_err(|_| ClientError::Tls("TLS exporter unavailable".into()))?;
            if let Err(reason) = identity::check_proof(&t.public_key, &x, &proof) {
                conn.close(quinn::VarInt::from_u32(CLOSE_IDENTITY_MISMATCH), b"identity mismatch");
                return Err(ClientError::IdentityMismatch { node: t.name.clone(), reason });
            }
            Ok(conn)
        })
        .await
        .map_err(|_| ClientError::Timeout(timeout, format!("connecting to {} at {}", t.name, t.addr)))??;
        let events = tokio::spawn(read_events(conn.clone(), Arc::<str>::from(t.name.as_str()), registry));
        tracing::debug!(node = %t.name, addr = %t.addr, "connected, identity verified");
        Ok(NodeConn { conn, events })
    }

    /// Whether the connection is still usable.
    pub(crate) fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

async fn read_proof(conn: &quinn::Connection, node: &str) -> Result<Vec<u8>, ClientError> {
    let mut recv = conn.accept_uni().await.map_err(|e| match e {
        quinn::ConnectionError::ApplicationClosed(ac) if u64::from(ac.error_code) == u64::from(CLOSE_NOT_AUTHORIZED) => ClientError::NotAuthorized {
            node: node.into(),
            message: "the node does not accept this client key (add its client.pub to the node's client_keys)".into(),
        },
        e => io(node, format!("waiting for the identity proof: {e}")),
    })?;
    let mut hdr = [0u8; 5];
    recv.read_exact(&mut hdr).await.map_err(|e| io(node, format!("identity stream: {e}")))?;
    let len = u32::from_le_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    if hdr[0] != STREAM_IDENTITY || len != PROOF_BYTES {
        return Err(ClientError::IdentityMismatch {
            node: node.into(),
            reason: format!("first stream is not an identity proof (type {:#04x}, {len} bytes)", hdr[0]),
        });
    }
    let mut proof = vec![0u8; len];
    recv.read_exact(&mut proof).await.map_err(|e| io(node, format!("identity stream: {e}")))?;
    Ok(proof)
}

/// Accepts the node's event streams until the connection ends.
async fn read_events(conn: quinn::Connection, node: Arc<str>, registry: Arc<Registry>) {
    while let Ok(recv) = conn.accept_uni().await {
        let (node, registry) = (node.clone(), registry.clone());
        tokio::spawn(async move {
            if let Err(e) = read_event_stream(recv, &node, &registry).await {
                tracing::warn!(%node, "event stream: {e}");
            }
        });
    }
}

async fn read_event_stream(mut recv: quinn::RecvStream, node: &Arc<str>, registry: &Registry) -> Result<(), String> {
    let mut ty = [0u8; 1];
    recv.read_exact(&mut ty).await.map_err(|e| e.to_string())?;
    if ty[0] != STREAM_EVENTS {
        return Err(format!("unexpected stream type {:#04x}", ty[0]));
    }
    loop {
        let mut len = [0u8; 4];
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_CLIENT_FRAME_BYTES {
            return Err(format!("event frame of {len} bytes"));
        }
        let mut frame = vec![0u8; len];
        recv.read_exact(&mut frame).await.map_err(|e| e.to_string())?;
        match decode(&frame) {
            Ok(FrameRef::ClientReply(ArchivedClientReply::Events { events })) => {
                for ev in events.iter() {
                    registry.record_event(node, proto::event(ev));
                }
            }
            Ok(other) => return Err(format!("unexpected {} frame on the event stream", other.kind().name())),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Sends one request and reads its reply, within `timeout`.
pub(crate) async fn request(
    conn: &quinn::Connection,
    node: &str,
    req: &ClientRequest,
    timeout: Duration,
) -> Result<ClientReply, ClientError> {
    let frame = encode(req).map_err(|e| ClientError::Malformed(e.to_string()))?;
    if frame.len() > MAX_CLIENT_FRAME_BYTES {
        return Err(ClientError::Malformed(format!("request of {} bytes (at most {MAX_CLIENT_FRAME_BYTES})", frame.len())));
    }
    let mut data = Vec::with_capacity(frame.len() + 5);
    data.push(STREAM_SUBMIT);
    data.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    data.extend_from_slice(&frame);
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| io(node, e))?;
        send.write_all(&data).await.map_err(|e| io(node, e))?;
        let _ = send.finish();
        let reply = recv.read_to_end(MAX_REPLY_FRAME_BYTES + 4).await.map_err(|e| io(node, e))?;
        if reply.len() < 4 || u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize != reply.len() - 4 {
            return Err(ClientError::Malformed(format!("{node}: reply is not one frame ({} bytes)", reply.len())));
        }
        proto::reply(&reply[4..]).map_err(|e| ClientError::Malformed(format!("{node}: {e}")))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout, format!("request to {node}")))?
}
