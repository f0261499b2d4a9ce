//! The report of a run ([`Report`], the `--json` object), the measurements it is built from
//! ([`Metrics`]: finality latencies, events, partition suspicion) and the determinism trace
//! ([`Trace`], whose BLAKE3 is `trace_hash`). Owns those; reads the other modules' results when
//! the run ends ([`build`]), and prints the debugging dump of `Sim::run_debug`.

use std::collections::BTreeMap;

use pqdag_core::VertexId;

use crate::shell::Shell;

/// Finality percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
    /// Max.
    pub max: f64,
}

/// One kind of message's share of the traffic, per submitted vertex.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KindTraffic {
    /// Messages of this kind per submitted vertex.
    pub messages_per_vertex: f64,
    /// Modelled bytes of this kind per submitted vertex.
    pub bytes_per_vertex: f64,
}

/// The result of a run (the `--json` object).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Shards per node.
    pub shards: u32,
    /// Seed.
    pub seed: u64,
    /// Workload seconds.
    pub duration_s: f64,
    /// Vertices submitted by the workload.
    pub submitted: u64,
    /// Vertices finalized by every honest node (min over honest nodes).
    pub finalized: u64,
    /// finalized / duration.
    pub throughput_vps: f64,
    /// Submission-to-finality latency over (vertex, honest node) pairs.
    pub finality_ms: Percentiles,
    /// Finality of the vertices created after every honest node excluded every Byzantine one
    /// (issue 14: p95 < 1 s at 20 % once detection has happened); `None` when that never
    /// happened or nothing was created after it.
    pub finality_after_detection_ms: Option<Percentiles>,
    /// When every honest node had excluded every Byzantine node, ms of virtual time.
    pub detected_ms: Option<f64>,
    /// Safety violations seen by the checker (must be 0).
    pub safety_violations: u64,
    /// First violation, if any.
    pub first_violation: Option<String>,
    /// At the end, the most processing vertices of HONEST creators on any honest node (up): 0 in
    /// a run that is not live means no honest vertex was stuck; what is left is Byzantine
    /// creators' vertices (an equivocator's rogue set, for which Avalanche promises no decision)
    /// or finalized sets that still differ.
    pub undecided_honest_max: u64,
    /// At the end, the most cross-shard facts (remote parents + remote sets) one shard of an
    /// honest node holds: with S > 1, bounded by a window of decisions, not by history.
    pub remote_facts_max: u64,
    /// At the end, the most conflict sets one shard of an honest node holds.
    pub sets_held_max: u64,
    /// Every honest node converged (same finalized digest, nothing processing) in budget.
    pub liveness_ok: bool,
    /// Virtual ms from the end of the workload to convergence.
    pub converge_ms: f64,
    /// Virtual ms from partition heal until everything created before it was decided everywhere.
    pub recovery_ms: Option<f64>,
    /// Network messages per submitted vertex.
    pub messages_per_vertex: f64,
    /// Network bytes (ML-DSA-87 sizes) per submitted vertex.
    pub bytes_per_vertex: f64,
    /// Messages and bytes per submitted vertex by kind of message (vertex copies, queries,
    /// responses, fetches, ...): where `bytes_per_vertex` goes.
    pub traffic_by_kind: BTreeMap<String, KindTraffic>,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
    /// Byzantine nodes.
    pub byzantine_nodes: usize,
    /// Byzantine nodes excluded by every honest node at the end.
    pub byzantine_excluded_by_all: usize,
    /// Honest nodes excluded by some honest node at the end (false positives).
    pub honest_excluded: usize,
    /// Honest nodes convicted (excluded for good, on "proof") by some honest core, ever. Each
    /// one is also a safety violation.
    pub honest_convicted: usize,
    /// Honest nodes some honest shell would ban (the engine guard's rule), ever. Each one is
    /// also a safety violation.
    pub honest_banned: usize,
    /// Longest exclusion without proof of an honest node by an honest node, virtual ms.
    pub honest_excluded_max_ms: f64,
    /// Most bytes an honest node held on behalf of one peer (its vertices in memory plus its
    /// messages in flight to the node), at any scan.
    pub max_bytes_held_for_one_peer: u64,
    /// Requests (queries, fetches, alerts) honest nodes' shells dropped over their sender's
    /// per-peer budget (the engine's `pqdag_rate_limited_total`).
    pub rate_limited: u64,
    /// Of those, requests sent by honest nodes: 0 unless a budget is too tight for honest
    /// traffic.
    pub honest_rate_limited: u64,
    /// Queries never sent to an honest node because its transport metered their sender (a
    /// query flooder's, over its stream credit: `SimConfig::transport_meters_streams`).
    pub stream_metered: u64,
    /// Of those, queries of honest nodes: 0 unless the meter bites honest traffic.
    pub honest_stream_metered: u64,
    /// Own vertices pushed to an honest node that held their creator's pushes (over the creator
    /// bound there: `SimConfig::transport_holds_pushes`), never sent.
    pub pushes_held: u64,
    /// Of those, honest creators' (not a failure: they were dropped on arrival before, and are
    /// fetched when a peer's query names them).
    pub honest_pushes_held: u64,
    /// Some honest node suspected a partition at some point.
    pub partition_suspected_seen: bool,
    /// Conflict sets (pairs) submitted / decided with exactly one final member everywhere.
    pub conflict_sets: u64,
    /// Conflict sets with exactly one winner, the same on every honest node.
    pub conflict_sets_resolved: u64,
    /// Innocent transactions of rejected own vertices re-issued, summed over the honest nodes
    /// (`--max-batch` above 1; a crashed node's count restarts with it).
    pub reissued_txs: u64,
    /// Innocent transactions given up after `REISSUE_MAX` re-issues on honest nodes (their
    /// clients would hear `Rejected` though nothing else spent their keys).
    pub reissue_gave_up: u64,
    /// BLAKE3 of the full event trace (determinism check).
    pub trace_hash: String,
    /// Events processed.
    pub events: u64,
    /// Mean CPU utilisation of the busiest node's shard (cost model).
    pub cpu_util_max: f64,
    /// Modelled CPU per finalized vertex per node, us (compare: `bench`'s CPU us/vertex per node).
    pub cpu_us_per_vertex_per_node: f64,
}

/// The determinism trace: every delivery, timer, finality, crash and restart, in order.
pub(crate) struct Trace(blake3::Hasher);

impl Trace {
    /// An empty trace.
    pub(crate) fn new() -> Self {
        Trace(blake3::Hasher::new())
    }
    /// A message from `from` is delivered to `to` at `now`.
    pub(crate) fn delivered(&mut self, now: u64, to: usize, from: usize) {
        self.0.update(&[1]);
        self.0.update(&now.to_le_bytes());
        self.0.update(&(to as u32).to_le_bytes());
        self.0.update(&(from as u32).to_le_bytes());
    }
    /// A timer of `node` fires at `now`.
    pub(crate) fn timer(&mut self, now: u64, node: usize) {
        self.0.update(&[2]);
        self.0.update(&now.to_le_bytes());
        self.0.update(&(node as u32).to_le_bytes());
    }
    /// An honest node finalized `id`.
    pub(crate) fn finalized(&mut self, id: &VertexId) {
        self.0.update(&[3]);
        self.0.update(&id.0);
    }
    /// A node crashed.
    pub(crate) fn crashed(&mut self) {
        self.0.update(&[4]);
    }
    /// A node restarted.
    pub(crate) fn restarted(&mut self) {
        self.0.update(&[5]);
    }
    /// The trace hash, hex.
    pub(crate) fn hash_hex(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// Measurements taken during the run.
pub(crate) struct Metrics {
    latencies: hdrhistogram::Histogram<u64>,
    /// Latencies of vertices created once every honest node excluded every Byzantine one.
    after_detection: hdrhistogram::Histogram<u64>,
    /// When every honest node had excluded every Byzantine node (first time), us.
    pub(crate) detected_at: Option<u64>,
    /// Events processed.
    pub(crate) events: u64,
    /// Some honest node suspected a partition at some point.
    pub(crate) partition_seen: bool,
    /// Requests (queries, fetches, alerts) honest shells dropped over their sender's budget.
    pub(crate) rate_limited: u64,
    /// Of those, requests an honest node sent: budgets that bite honest traffic.
    pub(crate) honest_rate_limited: u64,
    /// Queries honest nodes' transports kept from being sent (metered senders).
    pub(crate) stream_metered: u64,
    /// Of those, queries an honest node sent.
    pub(crate) honest_stream_metered: u64,
    /// Pushes of own vertices never sent: the receiver held their creator.
    pub(crate) pushes_held: u64,
    /// Of those, honest creators'.
    pub(crate) honest_pushes_held: u64,
}

impl Metrics {
    /// Empty measurements.
    pub(crate) fn new() -> Result<Self, String> {
        let latencies = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
        let after_detection = latencies.clone();
        Ok(Metrics { latencies, after_detection, detected_at: None, events: 0, partition_seen: false, rate_limited: 0, honest_rate_limited: 0, stream_metered: 0, honest_stream_metered: 0, pushes_held: 0, honest_pushes_held: 0 })
    }
    /// One submission-to-finality latency, us, of a vertex created at `created_us`.
    pub(crate) fn record_latency(&mut self, us: u64, created_us: u64) {
        let _ = self.latencies.record(us);
        if self.detected_at.is_some_and(|d| created_us >= d) {
            let _ = self.after_detection.record(us);
        }
    }
}

/// Totals of the other modules at the end of a run, for [`build`].
pub(crate) struct Totals {
    /// Virtual time at the end, us.
    pub(crate) now: u64,
    /// End of the workload, us.
    pub(crate) end_us: u64,
    /// When the run converged, if it did.
    pub(crate) converged_at: Option<u64>,
    /// Wall-clock seconds.
    pub(crate) wall_seconds: f64,
    /// Vertices submitted.
    pub(crate) submitted: u64,
    /// Messages sent.
    pub(crate) messages: u64,
    /// Bytes sent.
    pub(crate) bytes: u64,
    /// Messages and bytes sent per kind.
    pub(crate) by_kind: [(u64, u64); crate::network::KINDS.len()],
    /// Safety violations.
    pub(crate) violations: u64,
    /// First violation.
    pub(crate) first_violation: Option<String>,
    /// Partition recovery, ms.
    pub(crate) recovery_ms: Option<f64>,
    /// Conflict sets submitted.
    pub(crate) conflict_sets: u64,
    /// Conflict sets resolved.
    pub(crate) conflict_sets_resolved: u64,
    /// Busiest shard's CPU time, us.
    pub(crate) busy_max: u64,
    /// All shards' CPU time, us.
    pub(crate) busy_total: u64,
    /// Honest nodes convicted by honest ones.
    pub(crate) honest_convicted: usize,
    /// Honest nodes banned by honest ones.
    pub(crate) honest_banned: usize,
    /// Longest exclusion of an honest node, ms.
    pub(crate) honest_excluded_max_ms: f64,
    /// Most bytes held for one peer.
    pub(crate) max_bytes_held_for_one_peer: u64,
}

/// Builds the report of a run.
pub(crate) fn build(cfg: &crate::SimConfig, shells: &[Shell], metrics: &Metrics, trace: &Trace, t: Totals) -> Report {
    let honest: Vec<usize> = (0..cfg.nodes).filter(|&i| !shells[i].is_byzantine()).collect();
    let finalized = honest.iter().map(|&i| shells[i].cores().iter().map(|c| c.status().finalized).sum::<u64>()).min().unwrap_or(0);
    let byz: Vec<usize> = (0..cfg.nodes).filter(|&i| shells[i].is_byzantine()).collect();
    let byzantine_excluded_by_all = byz.iter().filter(|&&b| honest.iter().all(|&h| shells[h].cores().iter().all(|c| c.is_excluded(&shells[b].id())))).count();
    let honest_excluded = honest.iter().filter(|&&x| honest.iter().any(|&h| h != x && shells[h].cores().iter().any(|c| c.is_excluded(&shells[x].id())))).count();
    let q = |p: f64| metrics.latencies.value_at_quantile(p) as f64 / 1000.0;
    let vertices = t.submitted.max(1) as f64;
    Report {
        nodes: cfg.nodes,
        shards: cfg.shards,
        seed: cfg.seed,
        duration_s: cfg.duration_s,
        submitted: t.submitted,
        finalized,
        throughput_vps: finalized as f64 / cfg.duration_s,
        finality_ms: Percentiles { p50: q(0.5), p95: q(0.95), p99: q(0.99), max: metrics.latencies.max() as f64 / 1000.0 },
        finality_after_detection_ms: (!metrics.after_detection.is_empty()).then(|| {
            let h = &metrics.after_detection;
            let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
            Percentiles { p50: q(0.5), p95: q(0.95), p99: q(0.99), max: h.max() as f64 / 1000.0 }
        }),
        detected_ms: metrics.detected_at.map(|d| d as f64 / 1000.0),
        safety_violations: t.violations,
        first_violation: t.first_violation,
        liveness_ok: t.converged_at.is_some(),
        remote_facts_max: honest.iter().flat_map(|&i| shells[i].cores().iter().map(|c| { let (p, s) = c.remote_fact_counts(); (p + s) as u64 })).max().unwrap_or(0),
        sets_held_max: honest.iter().flat_map(|&i| shells[i].cores().iter().map(|c| c.record_counts().1 as u64)).max().unwrap_or(0),
        undecided_honest_max: {
            let honest_ids: Vec<_> = honest.iter().map(|&i| shells[i].id()).collect();
            honest.iter().filter(|&&i| shells[i].is_up()).map(|&i| shells[i].cores().iter().map(|c| c.processing_creators().filter(|p| honest_ids.contains(p)).count() as u64).sum::<u64>()).max().unwrap_or(0)
        },
        converge_ms: t.converged_at.map(|c| c.saturating_sub(t.end_us) as f64 / 1000.0).unwrap_or(-1.0),
        recovery_ms: t.recovery_ms,
        messages_per_vertex: t.messages as f64 / vertices,
        bytes_per_vertex: t.bytes as f64 / vertices,
        traffic_by_kind: crate::network::KINDS
            .iter()
            .zip(t.by_kind)
            .filter(|(_, (m, _))| *m > 0)
            .map(|(k, (m, b))| (k.to_string(), KindTraffic { messages_per_vertex: m as f64 / vertices, bytes_per_vertex: b as f64 / vertices }))
            .collect(),
        wall_seconds: t.wall_seconds,
        byzantine_nodes: byz.len(),
        byzantine_excluded_by_all,
        honest_excluded,
        honest_convicted: t.honest_convicted,
        honest_banned: t.honest_banned,
        honest_excluded_max_ms: t.honest_excluded_max_ms,
        max_bytes_held_for_one_peer: t.max_bytes_held_for_one_peer,
        rate_limited: metrics.rate_limited,
        honest_rate_limited: metrics.honest_rate_limited,
        stream_metered: metrics.stream_metered,
        honest_stream_metered: metrics.honest_stream_metered,
        pushes_held: metrics.pushes_held,
        honest_pushes_held: metrics.honest_pushes_held,
        partition_suspected_seen: metrics.partition_seen,
        conflict_sets: t.conflict_sets,
        conflict_sets_resolved: t.conflict_sets_resolved,
        reissued_txs: honest.iter().flat_map(|&i| shells[i].cores().iter().map(|c| c.status().reissued_txs)).sum(),
        reissue_gave_up: honest.iter().flat_map(|&i| shells[i].cores().iter().map(|c| c.status().reissue_gave_up)).sum(),
        trace_hash: trace.hash_hex(),
        events: metrics.events,
        cpu_util_max: t.busy_max as f64 / (t.now.max(1) as f64),
        cpu_us_per_vertex_per_node: t.busy_total as f64 / cfg.nodes as f64 / finalized.max(1) as f64,
    }
}

/// Prints the state of every node and the processing vertices of node `node` (debugging aid).
pub(crate) fn debug_dump(shells: &mut [Shell], node: usize, shards: u32) {
    for (i, n) in shells.iter().enumerate() {
        for s in 0..shards {
            let st = n.core(s).status();
            if shells.len() > 50 && st.processing == 0 && st.pending == 0 {
                continue;
            }
            let role = if n.is_byzantine() { " (byzantine)" } else if !n.is_up() { " (down)" } else { "" };
            eprintln!(
                "node {i}{role} shard {s}: finalized {} rejected {} processing {} pending {} polls {} short {} excluded {} evicted {} digest {:02x}{:02x}{:02x}{:02x}",
                st.finalized, st.rejected, st.processing, st.pending, st.polls_completed, st.polls_short, st.excluded_peers, st.pending_evicted,
                st.finalized_digest[0], st.finalized_digest[1], st.finalized_digest[2], st.finalized_digest[3]
            );
        }
    }
    for s in 0..shards {
        let core = shells[node].core_mut(s);
        for (p, sc) in core.peer_scores() {
            eprintln!("node {node} shard {s}: peer {p} score {:.2} incidents {} excluded {} convicted {}", sc.score, sc.incidents, sc.excluded, sc.convicted);
        }
        eprintln!("{:?}", core.status());
        for l in core.debug_processing(6) {
            eprintln!("node {node} shard {s}: {l}");
        }
    }
}
