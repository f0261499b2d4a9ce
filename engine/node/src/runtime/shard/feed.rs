//! The decision feed: serves a client's `Feed` request from the decision logs in the stores
//! (every decision this node's cores made, final or rejected, in the order each shard logged
//! it). Pull-based: one request, one bounded batch read from RocksDB, nothing buffered per
//! subscriber, so a slow reader costs the node no memory.
//!
//! The client endpoint is on shard 0. With several shards (share-nothing), shard 0 asks every
//! other shard for its part over the shard mesh ([`MeshMsg::FeedQuery`]), each shard reads its
//! own store, and shard 0 concatenates the parts in shard order. The cursor is a per-shard
//! position vector, opaque to clients:
//!
//! `version u8 (1) · node id prefix (8) · shards u16 BE · per shard: log id u64 BE · last seq u64 BE`
//!
//! A cursor names the node (feeds of different nodes list decisions in different orders, so a
//! cursor of one node means nothing to another) and each shard's log identity (a wiped data dir
//! starts a new log: an old cursor is refused rather than silently skipping or repeating).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pqdag_storage::{RocksStore, Status, Store};
use pqdag_transport::Responder;
use pqdag_wire::{encode, ClientErrorCode, ClientReply, ClientStatus, FeedEntry, FeedTx, NodeId, FEED_ENTRIES_MAX, FEED_PAYLOAD_BYTES_MAX};

use super::super::mesh::{MeshMsg, ShardMesh};
use super::Tags;

const CURSOR_VERSION: u8 = 1;
/// Most feed requests shard 0 keeps waiting for other shards' parts.
pub(super) const FEED_PENDING_MAX: usize = 256;
/// A pending request whose parts did not all come back in this time is dropped (the client
/// times out and asks again).
const FEED_PENDING_TIMEOUT: Duration = Duration::from_secs(10);

/// One shard's position in a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Part {
    /// The shard's decision-log identity; 0 in a fresh cursor (any log).
    log_id: u64,
    /// The last decision sequence the client has (0: none).
    seq: u64,
}

/// A decoded feed cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    node: [u8; 8],
    parts: Vec<Part>,
}

impl Cursor {
    /// The start of the feed of `node` with `shards` shards.
    fn start(node: [u8; 8], shards: u16) -> Self {
        Cursor { node, parts: vec![Part { log_id: 0, seq: 0 }; usize::from(shards)] }
    }

    /// Parses `bytes` (empty: the start) for this node; refuses another node's cursor.
    fn decode(bytes: &[u8], node: [u8; 8], shards: u16) -> Result<Self, String> {
        if bytes.is_empty() {
            return Ok(Self::start(node, shards));
        }
        let n = usize::from(shards);
        if bytes.len() != 11 + 16 * n || bytes[0] != CURSOR_VERSION {
            return Err(format!("not a feed cursor of this node ({} bytes; this node has {shards} shards)", bytes.len()));
        }
        if bytes[1..9] != node {
            return Err("the cursor belongs to another node's feed (each node orders decisions its own way)".into());
        }
        if u16::from_be_bytes([bytes[9], bytes[10]]) != shards {
            return Err("the cursor was made for another shard count".into());
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_be_bytes(b)
        };
        let parts = (0..n).map(|i| Part { log_id: u64_at(11 + 16 * i), seq: u64_at(19 + 16 * i) }).collect();
        Ok(Cursor { node, parts })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11 + 16 * self.parts.len());
        out.push(CURSOR_VERSION);
        out.extend_from_slice(&self.node);
        out.extend_from_slice(&(self.parts.len() as u16).to_be_bytes());
        for p in &self.parts {
            out.extend_from_slice(&p.log_id.to_be_bytes());
            out.extend_from_slice(&p.seq.to_be_bytes());
        }
        out
    }
}

/// One shard's part of a batch: its log id and `(seq, entry)` (entry cursors still empty).
type PartRead = (u64, Vec<(u64, FeedEntry)>);
/// Why a shard's part could not be read: the client error code and the reason.
type PartError = (ClientErrorCode, String);

fn malformed(message: impl Into<String>) -> PartError {
    (ClientErrorCode::Malformed, message.into())
}

/// Reads shard `shard`'s decision log after `after_seq`: at most `max_entries` entries and
/// about `max_bytes` of payload (at least one entry when there is one).
fn read_part(store: Option<&RocksStore>, shard: u16, log_id: u64, after_seq: u64, max_entries: usize, max_bytes: usize) -> Result<PartRead, PartError> {
    let store = store.ok_or_else(|| malformed("store busy"))?;
    let own = store.decision_log_id();
    if log_id != 0 && log_id != own {
        return Err(malformed(format!("the cursor points into an earlier decision log of shard {shard} (its data dir was reset): start again from the beginning")));
    }
    // Retention: a cursor that has not read everything before the retained window would skip
    // pruned decisions unseen; refused as `Pruned`. A fresh cursor (no log id, nothing read)
    // starts at the oldest decision still held. A prune may run beside this read (on its own
    // thread), so the checks come after the reads.
    let fresh = log_id == 0 && after_seq == 0;
    let pruned = |retained: u64| {
        (
            ClientErrorCode::Pruned,
            format!("decisions 1..{} of shard {shard} were pruned by retention (the cursor is at {after_seq}): resume with an empty cursor from the oldest decision held, or read an archive made with `engine export`", retained.saturating_sub(1)),
        )
    };
    let decided = store.decisions((after_seq + 1).max(store.retained_from_seq()), max_entries).map_err(|e| malformed(e.to_string()))?;
    let retained = store.retained_from_seq();
    let first = decided.first().map(|d| d.seq).unwrap_or(retained.max(after_seq + 1));
    if !fresh && first > after_seq + 1 {
        return Err(pruned(retained));
    }
    let mut out = Vec::with_capacity(decided.len());
    let mut bytes = 0usize;
    for d in decided {
        let sv = match store.get(&d.id).map_err(|e| malformed(e.to_string()))? {
            Some(sv) => sv,
            // Pruned since the log was read: end the batch here (the next read answers `Pruned`
            // when nothing of it could be served).
            None if store.retained_from_seq() > d.seq => {
                if out.is_empty() && !fresh {
                    return Err(pruned(store.retained_from_seq()));
                }
                break;
            }
            None => return Err(malformed(format!("decision log names unknown vertex {}", d.id))),
        };
        let size = sv.vertex.payload_bytes();
        if !out.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        let decision = match d.status {
            Status::Final { position } => ClientStatus::Final { shard, position },
            _ => ClientStatus::Rejected,
        };
        let v = sv.vertex;
        let clients = store.clients_of(&v.id).map_err(|e| malformed(e.to_string()))?.unwrap_or_default();
        let txs = v
            .txs
            .into_iter()
            .enumerate()
            .map(|(i, t)| FeedTx { tx: t.id(), client: clients.get(i).copied().unwrap_or([0; 32]), payload: t.payload, conflict_keys: t.conflict_keys })
            .collect();
        out.push((d.seq, FeedEntry { id: v.id, decision, txs, parents: v.parents, creator: v.creator, cursor: Vec::new() }));
    }
    Ok((own, out))
}

/// A feed request waiting for other shards' parts (shard 0 only).
struct Pending {
    reply: Responder,
    tag: u64,
    cursor: Cursor,
    parts: Vec<Option<Result<PartRead, PartError>>>,
    since: Instant,
}

/// The feed server of one shard: shard 0 answers clients, the others answer shard 0.
pub(super) struct FeedServer {
    node: [u8; 8],
    shard: u16,
    shard_count: u16,
    pending: HashMap<u64, Pending>,
}

impl FeedServer {
    /// Gives back the capacity a burst of feed requests left (see `Gateway::shrink_sparse`).
    pub(super) fn shrink_sparse(&mut self) {
        pqdag_core::shrink_sparse(&mut self.pending);
    }

    /// The feed of node `node`'s shard `shard` of `shard_count`.
    pub(super) fn new(node: NodeId, shard: u16, shard_count: u16) -> Self {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&node.0[..8]);
        Self { node: prefix, shard, shard_count, pending: HashMap::new() }
    }

    /// A client's `Feed { tag, from, max }` (shard 0): answered at once with one shard, else
    /// once every shard's part is in.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request(&mut self, store: Option<&RocksStore>, mesh: Option<&ShardMesh>, tags: &mut Tags, tag: u64, from: &[u8], max: u32, reply: Responder) {
        let cursor = match Cursor::decode(from, self.node, self.shard_count) {
            Ok(c) => c,
            Err(why) => return send(reply, ClientReply::Error { tag, code: ClientErrorCode::Malformed, message: why }),
        };
        let shards = usize::from(self.shard_count);
        let max_entries = (max as usize).clamp(1, FEED_ENTRIES_MAX);
        let per_shard = (max_entries / shards).max(1);
        let per_bytes = FEED_PAYLOAD_BYTES_MAX / shards;
        let own = cursor.parts[usize::from(self.shard)];
        let mine = read_part(store, self.shard, own.log_id, own.seq, per_shard, per_bytes);
        let Some(mesh) = mesh.filter(|_| shards > 1) else {
            return send(reply, assemble(tag, cursor, vec![mine]));
        };
        let now = Instant::now();
        self.pending.retain(|_, p| now.duration_since(p.since) < FEED_PENDING_TIMEOUT);
        if self.pending.len() >= FEED_PENDING_MAX {
            return send(reply, ClientReply::Error { tag, code: ClientErrorCode::Overloaded, message: "too many feed requests in flight".into() });
        }
        let req = tags.bump();
        let mut parts: Vec<Option<Result<PartRead, PartError>>> = (0..shards).map(|_| None).collect();
        parts[usize::from(self.shard)] = Some(mine);
        for (s, p) in cursor.parts.iter().enumerate() {
            if s == usize::from(self.shard) {
                continue;
            }
            let q = MeshMsg::FeedQuery { req, log_id: p.log_id, after_seq: p.seq, max_entries: per_shard as u32, max_bytes: per_bytes as u32 };
            if mesh.congested() || !mesh.send(s, q) {
                parts[s] = Some(Err(malformed(format!("shard {s} is busy"))));
            }
        }
        self.pending.insert(req, Pending { reply, tag, cursor, parts, since: now });
        self.finish(req);
    }

    /// Another shard's `FeedQuery`: read this shard's log, answer shard 0.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_query(&self, store: Option<&RocksStore>, mesh: Option<&ShardMesh>, req: u64, log_id: u64, after_seq: u64, max_entries: u32, max_bytes: u32) {
        let max_entries = (max_entries as usize).clamp(1, FEED_ENTRIES_MAX);
        let max_bytes = (max_bytes as usize).min(FEED_PAYLOAD_BYTES_MAX);
        let result = read_part(store, self.shard, log_id, after_seq, max_entries, max_bytes);
        if let Some(m) = mesh {
            m.send(0, MeshMsg::FeedReply { req, shard: usize::from(self.shard), result });
        }
    }

    /// A shard's part came back.
    pub(super) fn on_reply(&mut self, req: u64, shard: usize, result: Result<PartRead, PartError>) {
        let Some(p) = self.pending.get_mut(&req) else { return };
        if let Some(slot) = p.parts.get_mut(shard) {
            *slot = Some(result);
        }
        self.finish(req);
    }

    /// Answers `req` once all its parts are in.
    fn finish(&mut self, req: u64) {
        if !self.pending.get(&req).is_some_and(|p| p.parts.iter().all(Option::is_some)) {
            return;
        }
        let Some(p) = self.pending.remove(&req) else { return };
        let parts = p.parts.into_iter().flatten().collect();
        send(p.reply, assemble(p.tag, p.cursor, parts));
    }
}

/// Concatenates the parts in shard order, giving each entry the cursor just after it.
fn assemble(tag: u64, mut cursor: Cursor, parts: Vec<Result<PartRead, PartError>>) -> ClientReply {
    let mut entries = Vec::new();
    for (s, part) in parts.into_iter().enumerate() {
        let (log_id, read) = match part {
            Ok(r) => r,
            Err((code, message)) => return ClientReply::Error { tag, code, message },
        };
        cursor.parts[s].log_id = log_id;
        for (seq, mut e) in read {
            cursor.parts[s].seq = seq;
            e.cursor = cursor.encode();
            entries.push(e);
        }
    }
    ClientReply::FeedBatch { tag, entries, next_cursor: cursor.encode() }
}

/// Sends a reply, halving a feed batch until it fits a frame (the client asks for the rest).
fn send(reply: Responder, mut answer: ClientReply) {
    loop {
        match encode(&answer) {
            Ok(b) => {
                let _ = reply.send(b);
                return;
            }
            Err(_) => match &mut answer {
                ClientReply::FeedBatch { entries, next_cursor, .. } if entries.len() > 1 => {
                    entries.truncate(entries.len() / 2);
                    if let Some(last) = entries.last() {
                        *next_cursor = last.cursor.clone();
                    }
                }
                _ => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_other_nodes() {
        let mut c = Cursor::start([1; 8], 3);
        c.parts[1] = Part { log_id: 42, seq: 7 };
        let b = c.encode();
        assert_eq!(b.len(), 11 + 48);
        assert_eq!(Cursor::decode(&b, [1; 8], 3), Ok(c.clone()));
        assert!(Cursor::decode(&b, [2; 8], 3).is_err(), "another node's cursor");
        assert!(Cursor::decode(&b, [1; 8], 2).is_err(), "another shard count");
        assert!(Cursor::decode(&b[..20], [1; 8], 3).is_err(), "truncated");
        assert_eq!(Cursor::decode(&[], [1; 8], 3), Ok(Cursor::start([1; 8], 3)));
    }
}
