//! After-the-fact answers for payloads whose node went away or whose decision never came: a
//! status poll at a live node, and at the end a read of a live node's decision feed.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use pqdag_transport::{ClientConnection, TransportError};
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
/// whose bytes (run nonce, tag) it lists. Bounded by `budget`. A node whose feed request fails
/// (after an overload its connection may be up and still not answer in time) is left for the
/// next connected one, from the start: one silent node must not leave every payload it could
/// settle counted lost. Returns whether some node's feed was read to its end.
pub(super) async fn resolve_from_feed(st: Shared, nonce: u64, budget: Duration, timeout: Duration) -> bool {
    let deadline = Instant::now() + budget;
    let node_ids: Vec<[u8; 32]> = st.borrow().nodes.iter().map(|n| n.target.public_key.node_id()).collect();
    let candidates: Vec<(usize, Rc<ClientConnection>)> = {
        let s = st.borrow();
        s.nodes.iter().enumerate().filter_map(|(i, n)| n.conn.clone().map(|c| (i, c))).collect()
    };
    for (node, c) in candidates {
        if Instant::now() >= deadline {
            break;
        }
        // What a failed read saw still counts (as before this loop existed); a later node's
        // whole feed corrects a rejection that a re-issue overturned.
        let (seen, failed) = read_feed(&c, nonce, &node_ids, deadline, timeout).await;
        let now = Instant::now();
        {
            let mut s = st.borrow_mut();
            for (tag, (tx, final_, creator)) in seen {
                s.tracker.feed_decision(tag, tx, final_, creator, now);
            }
        }
        match failed {
            None => return true,
            Some(why) => eprintln!("loadgen: reading node {node}'s decision feed failed ({why}); trying the next node"),
        }
    }
    false
}

/// What one node's feed says of this run's payloads, by tag.
type Seen = HashMap<u64, (VertexId, bool, Option<usize>)>;

/// Each payload of this run (by tag) that `c`'s decision feed lists: its transaction id, whether
/// final, and the vertex's creator. A transaction rejected with one vertex may be final in a
/// later one (re-issue): the whole feed is read, and a final decision wins. With what was read
/// so far, why the read stopped before the feed's end (a failed request, the deadline).
async fn read_feed(c: &ClientConnection, nonce: u64, node_ids: &[[u8; 32]], deadline: Instant, timeout: Duration) -> (Seen, Option<String>) {
    let mut seen: Seen = HashMap::new();
    let mut from = Vec::new();
    loop {
        if Instant::now() >= deadline {
            return (seen, Some("out of time before the feed's end".into()));
        }
        let b = match encode(&ClientRequest::Feed { tag: 0, from: from.clone(), max: pqdag_wire::FEED_ENTRIES_MAX as u32 }) {
            Ok(b) => b,
            Err(e) => return (seen, Some(e.to_string())),
        };
        let reply = match c.submit(b, timeout).await {
            Ok(r) => r,
            Err(e) => return (seen, Some(e.to_string())),
        };
        let entries_next = match decode(&reply) {
            Ok(FrameRef::ClientReply(ArchivedClientReply::FeedBatch { entries, next_cursor, .. })) => {
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
                (entries.len(), next_cursor.as_slice().to_vec())
            }
            Ok(FrameRef::ClientReply(ArchivedClientReply::Error { message, .. })) => return (seen, Some(format!("refused: {message}"))),
            Ok(other) => return (seen, Some(format!("unexpected {} frame", other.kind().name()))),
            Err(e) => return (seen, Some(e.to_string())),
        };
        if entries_next.0 == 0 {
            return (seen, None);
        }
        from = entries_next.1;
    }
}
