//! Batching and re-issue (issue 17). Client submissions wait in the open batch until it closes
//! (at `Params::max_batch` transactions, at the `Params::batch_bytes` budget, or after
//! `Params::batch_linger_us`, a linger that is zero when this node created no vertex within
//! it: an idle node does not delay a lone submission), then become one signed vertex: one
//! signature and one poll pay for every payload in it. When an own vertex is rejected (it lost
//! a conflict, or descends from a vertex that did), its innocent transactions (no key spent by
//! another vertex) go back into the batch and into a new vertex, so one double spend never takes
//! honest payloads down with it (AvalancheGo's DAG engine did the same). Owns the open batch and
//! the submissions of own undecided vertices.

use pqdag_crypto::Domain;
use pqdag_wire::{ConflictKey, Transaction, Vertex, VertexId};

use crate::core::Core;
use crate::error::{ConsensusError, ConsensusResult};
use crate::id_hash::{HashMap, HashSet};
use crate::types::{Action, ShardMsg, Signer, VertexStatus, shard_of_key, shard_of_vertex};

/// How often one transaction is re-issued at most (after that its client hears `Rejected`): only
/// a misjudged key (another shard's, judged by its last preference message) could loop.
pub const REISSUE_MAX: u8 = 8;
/// Own undecided vertices whose submissions are remembered for a re-issue; beyond it the oldest
/// are forgotten (their transactions are then reported as their vertex is decided).
pub const OWN_VERTICES_MAX: usize = 65_536;

/// Timestamps (1 ms apart) tried for an id the building shard owns: with S shards one in S
/// fits, so 256 tries miss at 8 shards with probability (7/8)^256, about 1e-15.
pub(crate) const GRIND_TRIES: u32 = 256;

/// The submissions of one own vertex, one per transaction, in vertex order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnTags {
    /// Client tag of each transaction.
    pub tags: Vec<u64>,
    /// How often each transaction was re-issued already.
    pub generations: Vec<u8>,
}

/// The open batch.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    txs: Vec<Transaction>,
    own: OwnTags,
    keys: HashSet<ConflictKey>,
    bytes: usize,
    opened_us: u64,
    timestamp_ms: u64,
    /// When this node last closed a batch (the linger applies only within this long of it).
    last_closed_us: Option<u64>,
    /// Batches closed here so far: the next one is built by shard `(shard + closed) %
    /// shard_count` (the first by this shard: a shard that takes few submissions builds its
    /// own, and one that takes them all hands them round).
    closed: u64,
    /// Re-issued transactions waiting to re-enter the batch (`tick` feeds them through the
    /// same budget checks as submissions, once a rejection has finished propagating).
    requeue: Vec<(Transaction, u64, u8)>,
    /// Own vertices adopted by this shard and undecided, with their submissions.
    pub(crate) own_vertices: HashMap<VertexId, OwnTags>,
    own_order: std::collections::VecDeque<VertexId>,
    /// Innocent transactions moved from a rejected own vertex into the batch again.
    pub(crate) reissued: u64,
    /// Innocent transactions NOT moved because they were re-issued [`REISSUE_MAX`] times
    /// already: their clients hear `Rejected` though no other transaction spent their keys.
    pub(crate) gave_up: u64,
}

impl Batch {
    /// Transactions waiting.
    pub(crate) fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether `key` is spent by a waiting transaction.
    pub(crate) fn spends(&self, key: &ConflictKey) -> bool {
        self.keys.contains(key)
    }

    /// Whether `key` is spent by a waiting transaction or one about to be re-issued (a new
    /// submission must not take a key a re-issue needs: the re-issue, already announced to the
    /// shell, could then not be carried).
    pub(crate) fn claims(&self, key: &ConflictKey) -> bool {
        self.spends(key) || self.requeue.iter().any(|(t, ..)| t.conflict_keys.contains(key))
    }

    fn remember(&mut self, id: VertexId, tags: OwnTags) {
        if self.own_vertices.insert(id, tags).is_none() {
            self.own_order.push_back(id);
        }
        while self.own_order.len() > OWN_VERTICES_MAX {
            if let Some(old) = self.own_order.pop_front() {
                self.own_vertices.remove(&old);
            }
        }
    }

    /// The vertex was decided: its submissions are no longer needed here.
    pub(crate) fn decided(&mut self, id: &VertexId) -> Option<OwnTags> {
        let t = self.own_vertices.remove(id);
        if t.is_some() && self.own_order.len() > 2 * self.own_vertices.len() + 64 {
            let own = &self.own_vertices;
            self.own_order.retain(|v| own.contains_key(v));
        }
        t
    }
}

impl<S: Signer> Core<S> {
    /// A client submission joins the open batch (refused at once when it cannot be carried).
    pub(crate) fn submit(&mut self, now: u64, payload: Vec<u8>, keys: Vec<ConflictKey>, client_tag: u64, ts: u64) -> ConsensusResult<()> {
        if self.dag.vertices.len() >= crate::dag::VERTICES_MAX {
            return Err(ConsensusError::Capacity("VERTICES_MAX"));
        }
        let mut keys = keys;
        keys.sort_unstable();
        keys.dedup();
        let tx = Transaction::new(payload, keys);
        if tx.check_bounds().is_err() {
            return Err(ConsensusError::Dag("payload or conflict keys over the wire limits".into()));
        }
        self.check_own_keys(&tx.conflict_keys)?;
        if let Some(k) = tx.conflict_keys.iter().find(|k| self.batch.claims(k)) {
            return Err(ConsensusError::Dag(format!("key {} is spent by a submission in the same batch", crate::core::hex8(&k.0))));
        }
        self.enqueue(now, tx, client_tag, 0, ts);
        Ok(())
    }

    /// An honest node never double-spends itself: that would be equivocation (3.7.2).
    fn check_own_keys(&self, keys: &[ConflictKey]) -> ConsensusResult<()> {
        for k in keys {
            let own = match self.conflicts.sets.get(k) {
                Some(set) => set.members.iter().any(|m| m.creator == self.me && !m.rejected && self.dag.status(&m.id) != Some(VertexStatus::Rejected)),
                // An uncontested set leaves once decided (`decide`); its final winner's record
                // is still held for a while.
                None => self.dag.forgotten.key_winner(k).is_some_and(|w| self.dag.vertices.get(&w).is_some_and(|r| r.v.creator == self.me)),
            };
            if own {
                return Err(ConsensusError::Dag(format!("own vertex already claims key {}", crate::core::hex8(&k.0))));
            }
        }
        Ok(())
    }

    fn enqueue(&mut self, now: u64, tx: Transaction, tag: u64, generation: u8, ts: u64) {
        let cost = tx.budget_bytes();
        if !self.batch.txs.is_empty() && self.batch.bytes + cost > self.params.batch_bytes {
            self.close_batch(now);
        }
        if self.batch.txs.is_empty() {
            self.batch.opened_us = now;
            self.batch.timestamp_ms = ts;
        }
        self.batch.keys.extend(tx.conflict_keys.iter().copied());
        self.batch.bytes += cost;
        self.batch.txs.push(tx);
        self.batch.own.tags.push(tag);
        self.batch.own.generations.push(generation);
        if self.batch_due(now) {
            self.close_batch(now);
        }
    }

    /// When the open batch closes: full, or lingered long enough (no linger when idle).
    pub(crate) fn batch_close_at(&self) -> Option<u64> {
        if !self.batch.requeue.is_empty() {
            return Some(self.now);
        }
        if self.batch.txs.is_empty() {
            return None;
        }
        let busy = self.batch.last_closed_us.is_some_and(|t| self.now < t + self.params.batch_linger_us);
        if self.batch.txs.len() >= self.params.max_batch || self.batch.bytes >= self.params.batch_bytes || !busy {
            return Some(self.batch.opened_us);
        }
        Some(self.batch.opened_us + self.params.batch_linger_us)
    }

    pub(crate) fn batch_due(&self, now: u64) -> bool {
        self.batch_close_at().is_some_and(|t| now >= t)
    }

    /// Closes the open batch and hands it to the shard whose turn it is to build (this one or
    /// another, round robin): in the node one shard takes every client submission, and the
    /// builder signs and owns the vertex, so building in turn spreads that work over the shards.
    pub(crate) fn close_batch(&mut self, now: u64) {
        if self.batch.txs.is_empty() {
            return;
        }
        let txs = std::mem::take(&mut self.batch.txs);
        let own = std::mem::take(&mut self.batch.own);
        self.batch.keys.clear();
        self.batch.bytes = 0;
        self.batch.last_closed_us = Some(now);
        let builder = ((u64::from(self.shard) + self.batch.closed) % u64::from(self.shard_count.max(1))) as u32;
        self.batch.closed += 1;
        if builder == self.shard {
            self.build(now, txs, own, self.batch.timestamp_ms);
        } else {
            self.push(Action::ToShard { shard: builder, msg: ShardMsg::Build { txs, tags: own, timestamp_ms: self.batch.timestamp_ms } });
        }
    }

    /// Builds a closed batch into a vertex on this shard's DAG (`select_parents`) that this
    /// shard owns: the timestamp moves forward by a few ms until the id falls on this shard
    /// (`Vertex::grind_timestamp`, ~S tries of a BLAKE3 over ~200 bytes). Parents and children
    /// then stay in one shard's DAG, so a poll credits a vertex through its children as with
    /// one shard, instead of asking about nearly every processing vertex directly (at 4 shards
    /// a vertex's children were on its own shard one time in four). In the rare case no
    /// timestamp within `GRIND_TRIES` ms fits, the vertex goes to its owner unsigned
    /// (`sign_adopted`); the id does not cover the signature, so the owner is known first.
    pub(crate) fn build(&mut self, now: u64, txs: Vec<Transaction>, own: OwnTags, timestamp_ms: u64) {
        let keys: Vec<ConflictKey> = txs.iter().flat_map(|t| t.conflict_keys.iter().copied()).collect();
        let parents = self.select_parents(now, &keys);
        let mut v = Vertex::with_txs(parents, txs, timestamp_ms, self.me);
        debug_assert!(v.check_bounds().is_ok(), "a closed batch breaks a wire bound");
        let (shard, count) = (self.shard, self.shard_count);
        v.grind_timestamp(GRIND_TRIES, |id| shard_of_vertex(id, count) == shard);
        let owner = shard_of_vertex(&v.id, self.shard_count);
        if owner != self.shard {
            self.push(Action::ToShard { shard: owner, msg: ShardMsg::Adopt { vertex: std::sync::Arc::new(v), tags: own } });
        } else {
            v.signature = self.signer.sign(Domain::Vertex, v.signed_bytes());
            self.adopt(now, std::sync::Arc::new(v), own);
        }
    }

    /// An own vertex another shard of this node built, before this shard adopts it: signed here
    /// if it came unsigned (see `close_batch`). Shard messages never leave the node, so an
    /// unsigned vertex in one is always this node's own.
    pub(crate) fn sign_adopted(&self, v: std::sync::Arc<Vertex>) -> std::sync::Arc<Vertex> {
        if !v.signature.is_empty() {
            return v;
        }
        debug_assert_eq!(v.creator, self.me, "only own vertices travel unsigned between shards");
        debug_assert_eq!(shard_of_vertex(&v.id, self.shard_count), self.shard, "adopted by its owner");
        let mut v = std::sync::Arc::unwrap_or_clone(v);
        v.signature = self.signer.sign(Domain::Vertex, v.signed_bytes());
        std::sync::Arc::new(v)
    }

    /// Remembers an own vertex's submissions and tells the shell which transaction each became.
    pub(crate) fn created(&mut self, v: &Vertex, own: OwnTags) {
        debug_assert!(own.tags.is_empty() || own.tags.len() == v.txs.len(), "one tag per transaction");
        for (tag, tx) in own.tags.iter().zip(v.txs.iter()) {
            self.push(Action::Created { client_tag: *tag, id: v.id, tx: tx.id() });
        }
        if !own.tags.is_empty() {
            self.batch.remember(v.id, own);
        }
    }

    /// Own vertex `id` is being rejected: its innocent transactions go back into the batch
    /// (`Action::Reissued` first, so the shell does not report them rejected).
    pub(crate) fn reissue_innocent(&mut self, id: VertexId, v: &Vertex) {
        let Some(own) = self.batch.decided(&id) else { return };
        let mut moved = Vec::new();
        for (i, tx) in v.txs.iter().enumerate() {
            let (Some(&tag), Some(&generation)) = (own.tags.get(i), own.generations.get(i)) else { continue };
            if !tx.conflict_keys.iter().all(|k| self.key_free_for(k, &id)) {
                if let Some(w) = self.final_twin(tx, &id) {
                    self.push(Action::TxFinal { client_tag: tag, id: w, tx: tx.id() });
                }
                continue;
            }
            if generation >= REISSUE_MAX {
                self.batch.gave_up += 1;
                continue;
            }
            if tx.conflict_keys.iter().any(|k| self.batch.spends(k)) {
                continue;
            }
            moved.push((tx.clone(), tag, generation + 1));
        }
        if moved.is_empty() {
            return;
        }
        self.batch.reissued += moved.len() as u64;
        self.push(Action::Reissued { id, client_tags: moved.iter().map(|m| m.1).collect() });
        if self.batch.requeue.is_empty() {
            self.batch.timestamp_ms = v.timestamp_ms;
        }
        self.batch.requeue.extend(moved);
    }

    /// Feeds re-issued transactions into the batch (closing it whenever it fills).
    pub(crate) fn requeue_reissued(&mut self, now: u64) {
        if self.batch.requeue.is_empty() {
            return;
        }
        let ts = self.batch.timestamp_ms;
        for (tx, tag, generation) in std::mem::take(&mut self.batch.requeue) {
            // Cannot happen (`submit` leaves re-issued keys alone, own vertices never share a
            // key); a vertex spending a key twice would be invalid, so never batch it.
            if tx.conflict_keys.iter().any(|k| self.batch.spends(k)) {
                debug_assert!(false, "a re-issued key is already in the batch");
                continue;
            }
            self.enqueue(now, tx, tag, generation, ts);
        }
        // A re-issue does not wait for the linger: its transactions waited a whole decision.
        self.close_batch(now);
    }

    /// The decided vertex that carries transaction `tx` itself (a twin: the same transaction
    /// submitted through two nodes, e.g. a client's retry), when every key of `tx` was decided
    /// for it. Then `tx` is final although `loser` is not.
    fn final_twin(&self, tx: &Transaction, loser: &VertexId) -> Option<VertexId> {
        let mut winner = None;
        for k in &tx.conflict_keys {
            if shard_of_key(k, self.shard_count) != self.shard {
                return None;
            }
            let w = self.conflicts.sets.get(k).and_then(|s| s.decided).or_else(|| self.dag.forgotten.key_winner(k))?;
            if w == *loser || winner.is_some_and(|x| x != w) {
                return None;
            }
            winner = Some(w);
        }
        let w = winner?;
        // Same content is the same transaction: compared without hashing.
        self.dag.vertices.get(&w).filter(|r| r.status == VertexStatus::Final && r.v.txs.iter().any(|t| t == tx)).map(|_| w)
    }

    /// Whether no vertex but `loser` spends `key` as far as this shard knows: no other member of
    /// its set that is not rejected, no other decided winner. A key owned by another shard is
    /// judged by that shard's last preference message (the re-issue cap bounds a wrong guess).
    fn key_free_for(&self, key: &ConflictKey, loser: &VertexId) -> bool {
        if shard_of_key(key, self.shard_count) == self.shard {
            if let Some(set) = self.conflicts.sets.get(key) {
                return set.decided.is_none_or(|w| w == *loser)
                    && set.members.iter().all(|m| m.id == *loser || m.rejected || self.dag.status(&m.id) == Some(VertexStatus::Rejected));
            }
            return self.dag.forgotten.key_winner(key).is_none_or(|w| w == *loser);
        }
        match self.cross.remote_sets.get(key) {
            Some(s) => !s.decided || s.preferred == Some(*loser),
            None => self.dag.forgotten.key_winner(key).is_none_or(|w| w == *loser),
        }
    }

    /// Transactions waiting in the open batch.
    pub fn batch_len(&self) -> usize {
        self.batch.len()
    }
}
