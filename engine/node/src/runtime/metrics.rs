//! Prometheus metrics, `/health`, `/ready` and `/status`, served from a plain thread (off the shards).
//!
//! Shards update atomics (prometheus-client counters and gauges are atomics, histograms are
//! per-shard rows of atomics merged on scrape (`sharded_histogram`): no locks on the hot path);
//! the per-peer families are refreshed from transport snapshots once per second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;

use super::sharded_histogram::ShardedHistogram as Histogram;
use prometheus_client::registry::Registry;

/// Label of per-peer series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's name in the cluster file.
    pub peer: String,
}

/// Label of per-kind series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What kind (message kind, misbehaviour...).
    pub kind: String,
}

/// Label of per-shard, per-kind series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardKindLabel {
    /// The shard.
    pub shard: String,
    /// What kind.
    pub kind: String,
}

/// Label of per-shard series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    /// The shard.
    pub shard: String,
}

/// Every metric the node exports. Shared by all shards (`Arc`), updated with atomics.
pub struct Metrics {
    registry: Registry,
    /// Payloads accepted from clients.
    pub submitted: Counter,
    /// Client transactions moved out of a rejected own vertex into a new one (`batch`'s
    /// re-issue): their clients get `Processing` naming the new vertex, not `Rejected`.
    pub reissued: Counter,
    /// Vertices finalized.
    pub finalized: Counter,
    /// Vertices rejected.
    pub rejected: Counter,
    /// Vertices currently processing.
    pub processing: Gauge,
    /// Poll rounds (queries) sent.
    pub polls: Counter,
    /// Responses received and verified.
    pub responses: Counter,
    /// Submit-or-arrival to finality, seconds.
    pub finality_latency: Histogram,
    /// Query round-trip time, seconds.
    pub query_rtt: Histogram,
    /// Signatures verified per batch.
    pub verify_batch: Histogram,
    /// Frames refused, by reason.
    pub invalid: Family<KindLabel, Counter>,
    /// Byzantine alerts raised, by misbehaviour.
    pub alerts: Family<KindLabel, Counter>,
    /// Frames dropped before the signature check because the shard already holds or has decided
    /// what they carry, by kind (vertex, reply_vertex, response, alert).
    pub duplicates_dropped: Family<KindLabel, Counter>,
    /// Cross-shard consensus messages this shard sent, by kind (`ShardMsg::KINDS`): how much of
    /// a multi-shard node's work is its shards telling each other.
    pub mesh_messages: Family<KindLabel, Counter>,
    /// Peer requests dropped over the peer's per-shard budget, by kind (query, fetch, sync).
    pub rate_limited: Family<KindLabel, Counter>,
    /// The bounded buffers a peer can fill, by shard and kind (pending_vertices, pending_bytes,
    /// pending_evicted, pending_evicted_quota, incoming_drops, send_queue_drops: frames a full
    /// send queue to a slow peer evicted, creator_dropped,
    /// creator_bypassed, creator_processing_max): issue 14, hole 5.
    pub bounded: Family<ShardKindLabel, Gauge>,
    /// UDP traffic by shard and kind (datagrams_in, datagrams_out, gso_sends: sends that
    /// carried several datagrams, gso_datagrams: the datagrams they carried, gro_receives:
    /// receives that returned several, gro_datagrams: the datagrams they returned), totals
    /// since start.
    pub udp: Family<ShardKindLabel, Gauge>,
    /// Gossiped alerts whose proof verified (then re-checked by the core).
    pub alerts_verified: Counter,
    /// RocksDB memory by shard and kind (memtables, table_readers, block_cache, lookup_cache).
    pub store_memory: Family<ShardKindLabel, Gauge>,
    /// Bytes of each shard's store files on disk (SST, blob, WAL, manifest), once a second.
    pub store_disk_bytes: Family<ShardLabel, Gauge>,
    /// Bytes of each column family's table and blob files by shard (`kind`: the family), once a
    /// second: which part of the store grows.
    pub store_cf_bytes: Family<ShardKindLabel, Gauge>,
    /// Free bytes on the filesystem of the shard's store (`[storage] min_free_bytes` refuses
    /// client submissions under its floor).
    pub disk_free_bytes: Family<ShardLabel, Gauge>,
    /// Decided vertices pruned by retention, by shard and kind (final, rejected).
    pub store_pruned: Family<ShardKindLabel, Counter>,
    /// Time a retention step held the store (the shard's loop waits for it between turns).
    pub store_prune: Histogram,
    /// Consensus-core records by shard and kind (vertices, conflict_sets, forgotten_ids,
    /// forgotten_keys; processing_bytes, final_bytes, rejected_bytes: the vertex bytes held by
    /// status): what the core's share of RSS is made of.
    pub core_records: Family<ShardKindLabel, Gauge>,
    /// Bytes received per peer.
    pub peer_bytes_in: Family<PeerLabel, Gauge>,
    /// Bytes sent per peer.
    pub peer_bytes_out: Family<PeerLabel, Gauge>,
    /// Byzantine score per peer (x1000).
    pub peer_score_milli: Family<PeerLabel, Gauge>,
    /// Peers with a verified connection (shard 0's view).
    pub peers_connected: Gauge,
    /// Peers disconnected and refused now for proven misbehaviour (shard 0's view).
    pub peers_banned: Gauge,
    /// Bans imposed for proven misbehaviour (all shards; a ban is bounded, then re-judged).
    pub peer_bans: Counter,
    /// 1 while more than half of recent polls time out.
    pub partition_suspected: Gauge,
    /// Polls the core allows in flight (shrinks when answers slow down: the machines are saturated).
    pub poll_window: Gauge,
    /// Store batches written.
    pub store_batches: Counter,
    /// Store batches that carried something the node must not forget (own vertices,
    /// decisions, locks): fsynced under `sync = "by-class"` and `"every-batch"`. The rest
    /// carried only received vertices (`runtime/shard/persist.rs`, `deferrable`).
    pub store_fsync_batches: Counter,
    /// Store write time, seconds.
    pub store_write: Histogram,
    /// Process CPU seconds (from /proc) and resident bytes, refreshed on scrape.
    pub cpu_seconds_milli: Gauge,
    /// Resident set size in bytes.
    pub rss_bytes: Gauge,
    /// What the two heaps hold, refreshed on scrape (kind: `mimalloc_committed`, Rust's heap,
    /// and `rust_in_use`, the bytes allocated in it (`counting_alloc`);
    /// `libc_in_use` and `libc_held`, the C heap's where RocksDB's C++ allocates, jemalloc's
    /// `stats.allocated` and `stats.resident` since 2026-12-06, glibc's before): RSS is
    /// their sum plus stacks, code and mapped files, so a slope in RSS is attributed here.
    pub heap_bytes: Family<KindLabel, Gauge>,
    /// RSS by kind of page, refreshed on scrape (`/proc/self/status`: `anon`, the heaps and
    /// stacks; `file`, the mapped binary, libraries and files; `shmem`): a slope in RSS that
    /// is not in `anon` is code and files paged in, not memory the node holds.
    pub resident_bytes: Family<KindLabel, Gauge>,
    /// TEST ONLY (`--byzantine MODE`): messages a Byzantine test node made and sent itself, by
    /// kind (0 on every honest node).
    pub byzantine_sent: Family<KindLabel, Counter>,
}

impl Metrics {
    /// Builds and registers everything.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pqdag");
        let latency = || Histogram::new(exponential_buckets(0.001, 1.6, 20));
        let m = Metrics {
            submitted: Counter::default(),
            reissued: Counter::default(),
            finalized: Counter::default(),
            rejected: Counter::default(),
            processing: Gauge::default(),
            polls: Counter::default(),
            responses: Counter::default(),
            finality_latency: latency(),
            query_rtt: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            verify_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            invalid: Family::default(),
            alerts: Family::default(),
            duplicates_dropped: Family::default(),
            mesh_messages: Family::default(),
            rate_limited: Family::default(),
            bounded: Family::default(),
            udp: Family::default(),
            alerts_verified: Counter::default(),
            store_memory: Family::default(),
            store_disk_bytes: Family::default(),
            store_cf_bytes: Family::default(),
            disk_free_bytes: Family::default(),
            store_pruned: Family::default(),
            store_prune: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            core_records: Family::default(),
            peer_bytes_in: Family::default(),
            peer_bytes_out: Family::default(),
            peer_score_milli: Family::default(),
            peers_connected: Gauge::default(),
            peers_banned: Gauge::default(),
            peer_bans: Counter::default(),
            partition_suspected: Gauge::default(),
            poll_window: Gauge::default(),
            store_batches: Counter::default(),
            store_fsync_batches: Counter::default(),
            store_write: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            cpu_seconds_milli: Gauge::default(),
            rss_bytes: Gauge::default(),
            heap_bytes: Family::default(),
            resident_bytes: Family::default(),
            byzantine_sent: Family::default(),
            registry: Registry::default(),
        };
        registry.register("submitted", "Payloads accepted from clients", m.submitted.clone());
        registry.register("client_reissued", "Client transactions re-issued from a rejected own vertex into a new one", m.reissued.clone());
        registry.register("finalized", "Vertices finalized", m.finalized.clone());
        registry.register("rejected", "Vertices rejected", m.rejected.clone());
        registry.register("processing", "Vertices being decided", m.processing.clone());
        registry.register("polls", "Consensus poll rounds (queries) sent", m.polls.clone());
        registry.register("responses", "Verified poll responses received", m.responses.clone());
        registry.register("finality_latency_seconds", "Creation or arrival to finality", m.finality_latency.clone());
        registry.register("query_rtt_seconds", "Query round-trip time", m.query_rtt.clone());
        registry.register("verify_batch_size", "Signatures verified per batch", m.verify_batch.clone());
        registry.register("invalid_frames", "Frames refused, by reason", m.invalid.clone());
        registry.register("byzantine_alerts", "Peers excluded as Byzantine, by misbehaviour", m.alerts.clone());
        registry.register("mesh_messages", "Cross-shard consensus messages sent, by kind", m.mesh_messages.clone());
        registry.register("duplicates_dropped", "Frames dropped before verify: already held or decided, by kind", m.duplicates_dropped.clone());
        registry.register("bounded", "Bounded buffers by shard and kind: held, bytes, evictions, drops", m.bounded.clone());
        registry.register("udp", "UDP datagrams by shard and kind since start: in, out, GSO sends and the datagrams they carried", m.udp.clone());
        registry.register("rate_limited", "Peer requests dropped over the per-peer budget, by kind", m.rate_limited.clone());
        registry.register("alerts_verified", "Gossiped Byzantine alerts whose proof verified", m.alerts_verified.clone());
        registry.register("store_memory_bytes", "RocksDB memory by shard and kind", m.store_memory.clone());
        registry.register("store_disk_bytes", "Bytes of the shard's store files on disk", m.store_disk_bytes.clone());
        registry.register("store_cf_bytes", "Bytes of the shard's table and blob files by column family (kind)", m.store_cf_bytes.clone());
        registry.register("disk_free_bytes", "Free bytes on the filesystem of the shard's store (client submissions refused under [storage] min_free_bytes)", m.disk_free_bytes.clone());
        registry.register("store_pruned", "Decided vertices pruned by retention, by shard and kind", m.store_pruned.clone());
        registry.register("store_prune_seconds", "Time a retention step held the store (between turns)", m.store_prune.clone());
        registry.register("core_records", "Consensus-core records by shard and kind (counts; *_bytes: vertex bytes held by status)", m.core_records.clone());
        registry.register("peer_bytes_in", "Bytes received from a peer", m.peer_bytes_in.clone());
        registry.register("peer_bytes_out", "Bytes sent to a peer", m.peer_bytes_out.clone());
        registry.register("peer_score_milli", "Byzantine score of a peer, x1000 (exclusion at 500)", m.peer_score_milli.clone());
        registry.register("peers_connected", "Peers with a verified connection", m.peers_connected.clone());
        registry.register("peers_banned", "Peers disconnected for proven misbehaviour (cool-off running)", m.peers_banned.clone());
        registry.register("peer_bans", "Peers disconnected for proven misbehaviour", m.peer_bans.clone());
        registry.register("partition_suspected", "1 while most polls time out", m.partition_suspected.clone());
        registry.register("poll_window", "Polls allowed in flight (congestion window)", m.poll_window.clone());
        registry.register("store_batches", "Store batches written", m.store_batches.clone());
        registry.register("store_fsync_batches", "Store batches that must survive a power cut (own vertices, decisions, locks): fsynced unless sync = wal-no-sync", m.store_fsync_batches.clone());
        registry.register("store_write_seconds", "Store batch write time", m.store_write.clone());
        registry.register("process_cpu_seconds_milli", "Process CPU time, ms", m.cpu_seconds_milli.clone());
        registry.register("process_resident_bytes", "Resident set size", m.rss_bytes.clone());
        registry.register("heap_bytes", "Heap bytes by allocator and kind (mimalloc_committed, rust_in_use, libc_in_use, libc_held)", m.heap_bytes.clone());
        registry.register("resident_bytes", "Resident set size by kind of page (anon, file, shmem)", m.resident_bytes.clone());
        registry.register("byzantine_sent", "TEST ONLY: messages a --byzantine node made and sent itself, by kind", m.byzantine_sent.clone());
        Metrics { registry, ..m }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        refresh_process_stats(self);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn refresh_process_stats(m: &Metrics) {
    // /proc/self/stat fields 14 and 15: utime and stime in clock ticks (100 Hz on Linux).
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        if let Some(rest) = stat.rsplit(')').next() {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 13 {
                let ticks: i64 = f[11].parse::<i64>().unwrap_or(0) + f[12].parse::<i64>().unwrap_or(0);
                m.cpu_seconds_milli.set(ticks * 10);
            }
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(rss_pages) = statm.split_whitespace().nth(1).and_then(|s| s.parse::<i64>().ok()) {
            m.rss_bytes.set(rss_pages * 4096);
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for (field, kind) in [("RssAnon:", "anon"), ("RssFile:", "file"), ("RssShmem:", "shmem")] {
            let kib = status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok());
            if let Some(kib) = kib {
                m.resident_bytes.get_or_create(&KindLabel { kind: kind.into() }).set(kib * 1024);
            }
        }
    }
    let (mut commit, mut zero) = (0usize, [0usize; 7]);
    let [a, b, c, d, e, f, g] = &mut zero;
    // SAFETY: mi_process_info writes each out-parameter once; all point to live locals.
    unsafe { libmimalloc_sys::mi_process_info(a, b, c, d, e, &mut commit, f, g) };
    let set = |kind: &str, v: usize| m.heap_bytes.get_or_create(&KindLabel { kind: kind.into() }).set(v as i64);
    set("mimalloc_committed", commit);
    if let Some(in_use) = crate::counting_alloc::rust_heap_in_use() {
        set("rust_in_use", in_use);
    }
    if let Some((in_use, held)) = super::heap::c_heap_bytes() {
        set("libc_in_use", in_use);
        set("libc_held", held);
    }
}

/// What `/status` and `/health` report, per shard; shards write, the HTTP thread reads.
#[derive(Default)]
pub struct ShardStatus {
    /// Finalized vertices (genesis excluded).
    pub finalized: AtomicU64,
    /// Rejected vertices.
    pub rejected: AtomicU64,
    /// Processing vertices.
    pub processing: AtomicU64,
    /// Verified peer connections.
    pub peers_connected: AtomicU64,
    /// Peers banned (disconnected for proven misbehaviour) now.
    pub peers_banned: AtomicU64,
    /// More than half of recent polls timed out.
    pub partition_suspected: AtomicBool,
    /// Storage restored and the loop running.
    pub running: AtomicBool,
    /// XOR digest of finalized ids (order-independent), refreshed each loop turn.
    pub digest: Mutex<[u8; 32]>,
    /// Caught up with the peers (history walked, every id it named in the core).
    pub caught_up: AtomicBool,
    /// Entries in the shard's decision log (its feed position).
    pub decisions: AtomicU64,
    /// This shard's judgement of every other member, replaced on the stats tick (once a second,
    /// `try_lock`: the shard never waits for the HTTP thread, it skips a tick instead).
    pub peers: Mutex<Vec<PeerView>>,
}

/// One member as a shard judges it (`/status` `peers`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerView {
    /// Node id, hex.
    pub node_id: String,
    /// Name in the cluster file.
    pub name: String,
    /// A verified connection is up.
    pub connected: bool,
    /// Excluded from sampling (its votes ignored), for a score above the threshold or a proof.
    pub excluded: bool,
    /// Convicted on proof (excluded for good).
    pub convicted: bool,
    /// Disconnected and refused now (transport ban, bounded cool-off).
    pub banned: bool,
    /// Byzantine score (exclusion above 0.5).
    pub score: f64,
}

/// Node-wide view for the HTTP thread.
pub struct NodeStatus {
    /// Node id, hex.
    pub node_id: String,
    /// Node name.
    pub name: String,
    /// Cluster size.
    pub nodes: usize,
    /// Per shard.
    pub shards: Vec<Arc<ShardStatus>>,
    /// When the node started (`uptime_s`).
    pub started: std::time::Instant,
}

impl NodeStatus {
    /// `/status` JSON.
    pub fn json(&self) -> serde_json::Value {
        let sum = |f: fn(&ShardStatus) -> u64| self.shards.iter().map(|s| f(s)).sum::<u64>();
        let mut digest = [0u8; 32];
        for s in &self.shards {
            let d = s.digest.lock().map(|g| *g).unwrap_or([0; 32]);
            digest.iter_mut().zip(d).for_each(|(a, b)| *a ^= b);
        }
        serde_json::json!({
            "node_id": self.node_id,
            "name": self.name,
            "finalized": sum(|s| s.finalized.load(Ordering::Relaxed)),
            "rejected": sum(|s| s.rejected.load(Ordering::Relaxed)),
            "processing": sum(|s| s.processing.load(Ordering::Relaxed)),
            "peers_connected": self.shards.first().map(|s| s.peers_connected.load(Ordering::Relaxed)).unwrap_or(0),
            "peers_banned": self.shards.first().map(|s| s.peers_banned.load(Ordering::Relaxed)).unwrap_or(0),
            "partition_suspected": self.shards.iter().any(|s| s.partition_suspected.load(Ordering::Relaxed)),
            "finalized_set_digest": pqdag_wire::VertexId(digest).to_hex(),
            "healthy": self.healthy().is_ok(),
            "ready": self.ready().is_ok(),
            "catching_up": !self.shards.iter().all(|s| s.caught_up.load(Ordering::Relaxed)),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "peers": self.peers_json(),
            "shards": self.shards.iter().enumerate().map(|(i, s)| serde_json::json!({
                "shard": i,
                "finalized": s.finalized.load(Ordering::Relaxed),
                "rejected": s.rejected.load(Ordering::Relaxed),
                "processing": s.processing.load(Ordering::Relaxed),
                "decisions": s.decisions.load(Ordering::Relaxed),
                "caught_up": s.caught_up.load(Ordering::Relaxed),
            })).collect::<Vec<_>>(),
        })
    }

    /// Every other member: shard 0's list, each flag set when any shard sets it (each shard
    /// judges its own traffic), the score the highest of the shards'.
    fn peers_json(&self) -> Vec<serde_json::Value> {
        let lists: Vec<Vec<PeerView>> = self.shards.iter().map(|s| s.peers.lock().map(|g| g.clone()).unwrap_or_default()).collect();
        let Some(first) = lists.first() else { return Vec::new() };
        first
            .iter()
            .map(|p| {
                let same = || lists.iter().filter_map(|l| l.iter().find(|q| q.node_id == p.node_id));
                serde_json::json!({
                    "node_id": p.node_id,
                    "name": p.name,
                    "connected": p.connected,
                    "excluded": same().any(|q| q.excluded),
                    "convicted": same().any(|q| q.convicted),
                    "banned": same().any(|q| q.banned),
                    "score": same().map(|q| q.score).fold(0.0, f64::max),
                })
            })
            .collect()
    }

    /// Healthy (`/health`, liveness) = every shard's loop running: the node is alive and
    /// serves its endpoints. The reason when not.
    pub fn healthy(&self) -> Result<(), String> {
        for (i, s) in self.shards.iter().enumerate() {
            if !s.running.load(Ordering::Relaxed) {
                return Err(format!("shard {i} starting"));
            }
        }
        Ok(())
    }

    /// Ready (`/ready`) = healthy, connected to a majority of the cluster, no partition
    /// suspected, and every shard caught up with its peers: safe to create vertices. The reason
    /// when not.
    pub fn ready(&self) -> Result<(), String> {
        self.healthy()?;
        for (i, s) in self.shards.iter().enumerate() {
            if s.partition_suspected.load(Ordering::Relaxed) {
                return Err(format!("shard {i}: partition suspected (most polls time out)"));
            }
            let connected = s.peers_connected.load(Ordering::Relaxed) as usize;
            let quorum = self.nodes / 2; // peers needed, besides ourselves, for a majority
            if connected < quorum {
                return Err(format!("shard {i}: {connected} peers connected, need {quorum}"));
            }
            if !s.caught_up.load(Ordering::Relaxed) {
                return Err(format!("shard {i} catching up with its peers"));
            }
        }
        Ok(())
    }
}

/// Serves `/metrics`, `/health`, `/status` on `addr` from a dedicated thread until `stop`.
pub fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>, status: Arc<NodeStatus>, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(addr).map_err(|e| std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("metrics address {addr}: {e}")))?;
    std::thread::Builder::new().name("pqdag-http".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(Some(req)) = server.recv_timeout(std::time::Duration::from_millis(200)) else { continue };
            let (code, body, ctype) = match req.url() {
                "/metrics" => (200, metrics.encode(), "text/plain; version=0.0.4"),
                "/status" => (200, status.json().to_string(), "application/json"),
                "/health" => match status.healthy() {
                    Ok(()) => (200, "ok\n".to_string(), "text/plain"),
                    Err(why) => (503, format!("{why}\n"), "text/plain"),
                },
                "/ready" => match status.ready() {
                    Ok(()) => (200, "ready\n".to_string(), "text/plain"),
                    Err(why) => (503, format!("{why}\n"), "text/plain"),
                },
                _ => (404, "not found\n".to_string(), "text/plain"),
            };
            let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
            if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()) {
                resp.add_header(h);
            }
            let _ = req.respond(resp);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape reports RSS, split by kind of page, beside the heaps: what `bench` attributes
    /// an RSS slope with (`memory_parts`).
    #[test]
    fn a_scrape_splits_resident_memory_by_kind() {
        let text = Metrics::new().encode();
        let value = |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse::<f64>().ok());
        let rss = value("pqdag_process_resident_bytes ").expect("RSS");
        let anon = value("pqdag_resident_bytes{kind=\"anon\"} ").expect("anonymous pages");
        let file = value("pqdag_resident_bytes{kind=\"file\"} ").expect("file pages");
        assert!(anon > 0.0 && file > 0.0, "{anon} {file}");
        // Read a moment apart, so only roughly equal.
        assert!((anon + file - rss).abs() < rss / 2.0, "anon {anon} + file {file} against RSS {rss}");
    }
}
