//! Serving peers' catch-up: vertex fetches (from the core's memory while a vertex is recent,
//! else from the store: old finals are stripped in memory) and history-sync walks of this
//! shard's finality index. Owns no state; reads the core and the store, never changes either,
//! and never goes through the core (everything in memory was persisted in an earlier turn).

use pqdag_core::Core;
use pqdag_storage::{RocksStore, Store};
use pqdag_transport::Responder;
use pqdag_wire::{encode, Vertex, VertexId, VertexReply};

use super::signer::MlDsaSigner;

/// Answers a fetch, always (possibly with nothing).
pub(super) fn serve_fetch(core: &Core<MlDsaSigner>, store: Option<&RocksStore>, request_id: u64, ids: &[VertexId], reply: Responder) {
    let vertices = lookup_vertices(core, store, ids);
    send_trimmed(reply, VertexReply { request_id, vertices });
}

/// Answers a history-sync request from this shard's finality index in the store. Positions
/// retention pruned are not in the index: the reply starts at the first retained one, and its
/// `next_position` tells the asker how far it skipped.
pub(super) fn serve_sync(store: Option<&RocksStore>, request_id: u64, from_position: u64, max: u32, reply: Responder) {
    let max = (max as usize).min(pqdag_wire::limits::SYNC_IDS_MAX);
    let range = match store {
        Some(store) => store.finalized_range(from_position.max(1), max).unwrap_or_default(),
        None => Vec::new(),
    };
    let next_position = range.last().map(|(p, _)| p + 1).unwrap_or(from_position.max(1));
    let ids = range.into_iter().map(|(_, id)| id).collect();
    if let Ok(b) = encode(&pqdag_wire::SyncReply { request_id, next_position, ids }) {
        let _ = reply.send(b);
    }
}

/// Full, signed vertices for `ids` (at most a reply's worth, by count and by bytes: a batch
/// vertex may be half a frame), from memory or the store.
fn lookup_vertices(core: &Core<MlDsaSigner>, store: Option<&RocksStore>, ids: &[VertexId]) -> Vec<Vertex> {
    let mut out: Vec<Vertex> = Vec::new();
    let mut bytes = 0usize;
    for id in ids {
        if out.len() >= pqdag_wire::limits::REPLY_VERTICES_MAX || bytes >= pqdag_wire::limits::FRAME_BYTES_MAX / 2 {
            break;
        }
        if let Some(last) = out.last() {
            bytes += last.heap_bytes();
        }
        match core.vertex(id) {
            Some(v) if !v.signature.is_empty() => out.push((**v).clone()),
            Some(v) if v.parents.is_empty() => {} // genesis: every node has it
            _ => {
                if let Some(Ok(Some(sv))) = store.map(|s| s.get(id)) {
                    out.push(sv.vertex);
                }
            }
        }
    }
    out
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
