//! After-the-fact answers for payloads whose node went away or whose decision never came: a
//! status poll at a live node, and at the end a read of a live node's decision feed.

use std::time::{Duration, Instant};

use pqdag_transport::TransportError;
use pqdag_wire::{decode, encode, ArchivedClientReply, ArchivedClientStatus, ClientRequest, FrameRef, VertexId};

use super::Shared;

/// Asks a live node the status of vertices acknowledged on connections that went away.
pub(super) async fn poll_status(st: Shared, ids: Vec<(VertexId, usize, u64)>, timeout: Duration) {
    let live = st.borrow_mut().live();
    let Some((_, c)) = live else {
        st.borrow_mut().polling = false;
        return;
    };
    let vertices: Vec<VertexId> = {
        let s = st.borrow();
        ids.iter().map(|x| s.vertex_of.get(&x.0).copied().unwrap_or(x.0)).collect()
    };
    let req = ClientRequest::Status { tag: 0, ids: vertices };
    let r = match encode(&req) {
        Ok(b) => c.submit(b, timeout).await,
        Err(_) => Err(TransportError::Timeout(timeout)),
    };
    let now = Instant::now();
    let mut s = st.borrow_mut();
    s.polling = false;
    let Ok(reply) = r else { return };
    let Ok(FrameRef::ClientReply(ArchivedClientReply::Statuses { statuses, .. })) = decode(&reply) else { return };
    for ((id, n, gen), status) in ids.iter().zip(statuses.iter()) {
        match status {
            ArchivedClientStatus::Final { .. } => s.decided(*id, true, now),
            ArchivedClientStatus::Rejected => s.decided(*id, false, now),
            ArchivedClientStatus::Processing => s.tracker.processing(*id),
            ArchivedClientStatus::Unknown => {
                let since = s.nodes[*n].stale_since.get(gen).copied().unwrap_or(now);
                s.tracker.unknown(*id, since, now);
            }
        }
    }
}

/// Reads a live node's decision feed from its start and settles the payloads still undecided
/// whose bytes (run nonce, tag) it lists. Bounded by `budget`.
pub(super) async fn resolve_from_feed(st: Shared, nonce: u64, budget: Duration, timeout: Duration) {
    let deadline = Instant::now() + budget;
    let live = st.borrow_mut().live();
    let Some((_, c)) = live else { return };
    let node_ids: Vec<[u8; 32]> = st.borrow().nodes.iter().map(|n| n.target.public_key.node_id()).collect();
    // A transaction rejected with one vertex may be final in a later one (re-issue): read the
    // whole feed first, a final decision wins.
    let mut seen: std::collections::HashMap<u64, (VertexId, bool, Option<usize>)> = std::collections::HashMap::new();
    let mut from = Vec::new();
    while Instant::now() < deadline {
        let Ok(b) = encode(&ClientRequest::Feed { tag: 0, from: from.clone(), max: pqdag_wire::FEED_ENTRIES_MAX as u32 }) else { break };
        let Ok(reply) = c.submit(b, timeout).await else { break };
        let Ok(FrameRef::ClientReply(ArchivedClientReply::FeedBatch { entries, next_cursor, .. })) = decode(&reply) else { break };
        if entries.is_empty() {
            break;
        }
        for e in entries.iter() {
            let final_ = matches!(e.decision, ArchivedClientStatus::Final { .. });
            let creator = node_ids.iter().position(|n| *n == e.creator.0);
            for t in e.txs.iter().filter(|t| t.payload.len() >= 16 && t.payload[..8] == nonce.to_le_bytes()) {
                let tag = u64::from_le_bytes(t.payload[8..16].try_into().unwrap_or_default());
                let entry = seen.entry(tag).or_insert((VertexId(t.tx.0), final_, creator));
                if final_ {
                    *entry = (VertexId(t.tx.0), true, creator);
                }
            }
        }
        from = next_cursor.as_slice().to_vec();
    }
    let now = Instant::now();
    let mut s = st.borrow_mut();
    for (tag, (tx, final_, creator)) in seen {
        s.tracker.feed_decision(tag, tx, final_, creator, now);
    }
}
