//! Telemetry: publishes the shard's state to its `/status` slot and (shard 0, or per shard where
//! labelled) to Prometheus. Owns only the stats-tick clock; reads the core, the store and the
//! transport, and never changes consensus state (reachability reports and re-bans on the stats
//! tick belong to the guard, which the turn loop calls between these reads).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqdag_core::{Core, CoreStatus};
use pqdag_storage::RocksStore;
use pqdag_transport::ShardTransport;

use pqdag_transport::PeerId;

use super::super::metrics::{Metrics, PeerLabel, PeerView, ShardKindLabel, ShardLabel, ShardStatus};
use super::roster::Roster;
use super::signer::MlDsaSigner;

/// The shard's published state.
pub(super) struct Telemetry {
    status: Arc<ShardStatus>,
    metrics: Arc<Metrics>,
    shard: u16,
    roster: Rc<Roster>,
    transport: Rc<ShardTransport>,
    last_stats: Instant,
}

impl Telemetry {
    /// Publishes into `status` and `metrics`; the first stats tick is due a second after `start`.
    pub(super) fn new(status: Arc<ShardStatus>, metrics: Arc<Metrics>, shard: u16, roster: Rc<Roster>, transport: Rc<ShardTransport>, start: Instant) -> Self {
        Self { status, metrics, shard, roster, transport, last_stats: start }
    }

    /// Whether the shard's loop runs (`/health`).
    pub(super) fn set_running(&self, running: bool) {
        self.status.running.store(running, Ordering::Relaxed);
    }

    /// The core's counters and digest, every turn.
    pub(super) fn publish_status(&self, s: &CoreStatus, core: &Core<MlDsaSigner>) {
        let st = &self.status;
        st.finalized.store(s.finalized, Ordering::Relaxed);
        st.rejected.store(s.rejected, Ordering::Relaxed);
        st.processing.store(s.processing, Ordering::Relaxed);
        st.partition_suspected.store(s.partition_suspected, Ordering::Relaxed);
        if let Ok(mut d) = st.digest.lock() {
            *d = s.finalized_digest;
        }
        if self.shard == 0 {
            self.metrics.processing.set(s.processing as i64);
            self.metrics.partition_suspected.set(i64::from(s.partition_suspected));
            self.metrics.poll_window.set(core.poll_window() as i64);
        }
    }

    /// Readiness and the decision log's length, every turn.
    pub(super) fn publish_feed(&self, caught_up: bool, store: Option<&RocksStore>) {
        self.status.caught_up.store(caught_up, Ordering::Relaxed);
        if let Some(store) = store {
            use pqdag_storage::Store;
            self.status.decisions.store(store.next_decision_seq() - 1, Ordering::Relaxed);
        }
    }

    /// Whether a stats tick (once a second) is due; starts it when it is.
    pub(super) fn stats_due(&mut self) -> bool {
        if self.last_stats.elapsed() >= Duration::from_secs(1) {
            self.last_stats = Instant::now();
            return true;
        }
        false
    }

    /// Stats tick: the store's memory and the core's record counts.
    pub(super) fn publish_records(&self, store: Option<&RocksStore>, core: &Core<MlDsaSigner>) {
        let shard = self.shard.to_string();
        let label = |kind: &str| ShardKindLabel { shard: shard.clone(), kind: kind.into() };
        if let Some(store) = store {
            let mem = store.memory();
            for (kind, v) in [("memtables", mem.memtables), ("table_readers", mem.table_readers), ("block_cache", mem.block_cache), ("lookup_cache", mem.lookup_cache)] {
                self.metrics.store_memory.get_or_create(&label(kind)).set(v as i64);
            }
            self.metrics.store_disk_bytes.get_or_create(&ShardLabel { shard: shard.clone() }).set(store.disk_bytes() as i64);
            for (cf, v) in store.cf_disk_bytes() {
                self.metrics.store_cf_bytes.get_or_create(&label(cf)).set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
        let s = core.status();
        let ts = self.transport.stats();
        let drops = ts.incoming_drops;
        for (kind, v) in [("datagrams_in", ts.datagrams_in), ("datagrams_out", ts.datagrams_out), ("gso_sends", ts.gso_sends), ("gso_datagrams", ts.gso_datagrams), ("gro_receives", ts.gro_receives), ("gro_datagrams", ts.gro_datagrams)] {
            self.metrics.udp.get_or_create(&label(kind)).set(v as i64);
        }
        let (requested, wanted) = core.fetch_state_counts();
        for (kind, v) in [
            ("pending_vertices", s.pending),
            ("pending_bytes", s.pending_bytes),
            ("pending_evicted", s.pending_evicted),
            ("pending_evicted_quota", s.pending_evicted_quota),
            ("incoming_drops", drops),
            ("send_queue_drops", ts.queue_drops),
            ("send_queue_frames", self.transport.queued_frames() as u64),
            ("metered_peers", self.transport.metered_count() as u64),
            ("held_peers", self.transport.held_count() as u64),
            ("push_streams_stopped", ts.push_streams_stopped),
            ("creator_dropped", s.creator_dropped),
            ("creator_bypassed", s.creator_bypassed),
            ("stalemate_moves", s.stalemate_moves),
            ("stripped_early", s.stripped_early),
            ("whole_final_bytes", s.whole_final_bytes),
            ("archived_early", s.archived_early),
            ("archive_absent_keys", s.archive_absent_keys),
            ("archive_absent_hits", s.archive_absent_hits),
            ("reissue_gave_up", s.reissue_gave_up),
            ("creator_processing_max", s.creator_processing_max),
            ("fetches_in_flight", requested as u64),
            ("needed_ids", wanted as u64),
        ] {
            self.metrics.bounded.get_or_create(&label(kind)).set(v as i64);
        }
        let (vertices, sets, forgotten, keys) = core.record_counts();
        let (remote_parents, remote_sets) = core.remote_fact_counts();
        let (processing_bytes, final_bytes, rejected_bytes) = core.record_bytes();
        for (kind, v) in [
            ("vertices", vertices),
            ("conflict_sets", sets),
            ("forgotten_ids", forgotten),
            ("forgotten_keys", keys),
            ("remote_parents", remote_parents),
            ("remote_sets", remote_sets),
            ("processing_bytes", processing_bytes as usize),
            ("final_bytes", final_bytes as usize),
            ("rejected_bytes", rejected_bytes as usize),
        ] {
            self.metrics.core_records.get_or_create(&label(kind)).set(v as i64);
        }
    }

    /// Stats tick: what a stage holds (the client gateway's maps, the history sync's re-fetch
    /// list: they must follow in-flight work, not history: `bounded{kind="gateway_*"}`,
    /// `bounded{kind="sync_refetch_ids"}`).
    pub(super) fn publish_held(&self, held: &[(&str, u64)]) {
        let shard = self.shard.to_string();
        for (kind, v) in held {
            self.metrics.bounded.get_or_create(&ShardKindLabel { shard: shard.clone(), kind: (*kind).into() }).set(*v as i64);
        }
    }

    /// Stats tick: the data directory's free bytes (`pqdag_disk_free_bytes`; absent until read).
    pub(super) fn publish_disk_free(&self, free: Option<u64>) {
        if let Some(free) = free {
            self.metrics.disk_free_bytes.get_or_create(&ShardLabel { shard: self.shard.to_string() }).set(i64::try_from(free).unwrap_or(i64::MAX));
        }
    }

    /// Stats tick: how many peers are connected.
    pub(super) fn publish_connected(&self, connected: usize) {
        self.status.peers_connected.store(connected as u64, Ordering::Relaxed);
    }

    /// Stats tick: bans, every member's judgement (`/status` `peers`), and (shard 0) per-peer
    /// traffic and scores.
    pub(super) fn publish_peers(&self, connected: usize, core: &Core<MlDsaSigner>) {
        let banned = self.transport.banned_count();
        self.status.peers_banned.store(banned as u64, Ordering::Relaxed);
        let scores = core.peer_scores();
        let views: Vec<PeerView> = (0..self.roster.len())
            .filter(|&i| i != self.roster.me)
            .map(|i| {
                let node = self.roster.node_ids[i];
                let score = scores.iter().find(|(n, _)| *n == node).map(|(_, s)| s.clone()).unwrap_or_default();
                PeerView {
                    node_id: node.to_hex(),
                    name: self.roster.name(i).unwrap_or_default().to_owned(),
                    connected: self.transport.is_connected(PeerId(i)),
                    excluded: score.excluded,
                    convicted: score.convicted,
                    banned: self.transport.is_banned(PeerId(i)),
                    score: score.score,
                }
            })
            .collect();
        // Never wait for the HTTP thread: a busy slot keeps last second's list.
        if let Ok(mut slot) = self.status.peers.try_lock() {
            *slot = views;
        }
        if self.shard == 0 {
            self.metrics.peers_connected.set(connected as i64);
            self.metrics.peers_banned.set(banned as i64);
            let stats = self.transport.stats();
            for (i, p) in stats.peers.iter().enumerate() {
                let Some(name) = self.roster.name(i) else { continue };
                let label = PeerLabel { peer: name.to_owned() };
                self.metrics.peer_bytes_in.get_or_create(&label).set(p.bytes_in as i64);
                self.metrics.peer_bytes_out.get_or_create(&label).set(p.bytes_out as i64);
            }
            for (node, score) in core.peer_scores() {
                if let Some(i) = self.roster.index_of(&node) {
                    let label = PeerLabel { peer: self.roster.name(i).unwrap_or_default().to_owned() };
                    self.metrics.peer_score_milli.get_or_create(&label).set((score.score * 1000.0) as i64);
                }
            }
        }
    }
}
