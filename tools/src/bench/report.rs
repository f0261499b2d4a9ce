//! `report.json`: everything one `bench` run measured, folded into one JSON value (per-node
//! CPU, memory, traffic and exit; cluster totals against the ML-DSA floor; the NFR-001 verdict;
//! the agreement of the finalized-set digests; the timeline) and the list of problems that make
//! the run fail. Pure: it reads the samples in a [`ReportCtx`] and calls [`super::prom`] for the
//! latency histogram; [`super::markdown`] and [`super::charts`] render from the same data.

use serde_json::{json, Value};

use super::args::Args;
use super::procs::{Ending, MachineInfo, Stopped};
use super::prom::{bucket_delta, bucket_quantile, NodeMetrics};
use super::sample::{Node, Tick};

/// ML-DSA-87 sign cost, microseconds, and [`VERIFY_US`] the verify cost on the reference 2-core machine (criterion, `cargo bench -p
/// benches`), used to express CPU per vertex against the signature floor.
pub const SIGN_US: f64 = 147.0;
/// ML-DSA-87 verify cost on the reference machine, microseconds (see [`SIGN_US`]).
pub const VERIFY_US: f64 = 69.0;

/// Everything one run collected, borrowed from `bench`'s `run` for the report and the plots.
pub struct ReportCtx<'a> {
    /// The command line.
    pub args: &'a Args,
    /// ML-DSA-87 sign and verify measured on this machine at the start (None: failed).
    pub floor: Option<crate::bench::floor::MlDsaFloor>,
    /// The machine, read at start.
    pub machine: &'a MachineInfo,
    /// First port of the testnet.
    pub base_port: u16,
    /// Seconds from starting the nodes to all healthy.
    pub startup_s: f64,
    /// Seconds loadgen ran (load and drain).
    pub load_s: f64,
    /// Seconds of the measured window (to agreement or 10 s after loadgen).
    pub window_s: f64,
    /// The nodes.
    pub nodes: &'a [Node],
    /// Their process ids, in the order of `nodes`.
    pub pids: &'a [u32],
    /// Each node's `/metrics` before the load.
    pub baseline: &'a [Option<NodeMetrics>],
    /// Each node's `/metrics` at the end of the window.
    pub end: &'a [Option<NodeMetrics>],
    /// The once-per-second samples.
    pub ticks: &'a [Tick],
    /// loadgen's JSON summary.
    pub lg: &'a Value,
    /// Each node's `finalized_set_digest` from `/status`.
    pub digests: &'a [Option<String>],
    /// Each node's `/status` JSON.
    pub statuses: &'a [Option<Value>],
    /// Whether every digest was present and equal.
    pub agree: bool,
    /// `--crash`: seconds since the load started when the node was killed and restarted.
    pub crash_at: (Option<f64>, Option<f64>),
    /// The nodes' poll interval and batch linger, microseconds, as `cluster.toml` gives them
    /// (`pqdag_node::runtime::params_for`; `None` if it refused the file).
    pub cadence: Option<(u64, u64)>,
}

/// Growth of one counter of a node over the run, across restarts: a sample below the one before
/// it means the process started again from zero, so the new value is all growth.
fn counter_growth(samples: impl Iterator<Item = f64>) -> f64 {
    let mut total = 0.0;
    let mut prev: Option<f64> = None;
    for v in samples {
        match prev {
            Some(p) if v >= p => total += v - p,
            Some(_) => total += v,
            None => {}
        }
        prev = Some(v);
    }
    total
}

/// Least-squares slope of `(t seconds, bytes)` points, in MiB per minute; `None` under 2 points.
pub fn slope_mib_per_min(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (mt, my) = points.iter().fold((0.0, 0.0), |(a, b), (t, y)| (a + t / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (t, y)| (a + (t - mt) * (y - my), b + (t - mt) * (t - mt)));
    if den <= 0.0 {
        return None;
    }
    Some(num / den * 60.0 / 1048576.0)
}

/// Each part of a node's memory (`NodeMetrics::memory`) in the slope window: MiB at its end
/// and slope in MiB per minute, so the RSS slope is attributed to what grows.
fn memory_parts<'a>(points: impl Iterator<Item = (f64, &'a super::sample::NodePoint)> + Clone, kinds: impl Iterator<Item = &'a String>) -> serde_json::Value {
    let parts: serde_json::Map<String, serde_json::Value> = kinds
        .map(|k| {
            let series: Vec<(f64, f64)> = points.clone().filter_map(|(t, p)| Some((t, *p.memory.get(k)?))).collect();
            let end = series.last().map(|p| r1(p.1 / 1048576.0));
            let slope = slope_mib_per_min(&series).map(|x| (x * 1000.0).round() / 1000.0);
            (k.clone(), json!({"end_mib": end, "slope_mib_per_min": slope}))
        })
        .collect();
    serde_json::Value::Object(parts)
}

/// The window of the RSS slope: minute 5 to the end of the load for runs of 10 minutes or more
/// (a node's caches fill in the first minutes), else the last three quarters of the load.
pub fn slope_window(duration_s: f64) -> (f64, f64) {
    if duration_s >= 600.0 { (300.0, duration_s) } else { (duration_s / 4.0, duration_s) }
}

/// The `crash` section: finality on the survivors per second after the kill, and when the
/// crashed node answered `/ready` again.
fn crash_section(c: &ReportCtx<'_>) -> Option<Value> {
    let cp = c.args.crash?;
    let (kill, restart) = c.crash_at;
    let kill = kill?;
    let survivors: Vec<usize> = (0..c.nodes.len()).filter(|&i| i != cp.node).collect();
    // Per tick window: the most any survivor finalized (the cluster finalizes if one does).
    let mut windows = Vec::new();
    for w in c.ticks.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.t < kill || a.t >= c.args.duration {
            continue;
        }
        let best = survivors.iter().filter_map(|&i| Some(b.nodes[i].as_ref()?.finalized - a.nodes[i].as_ref()?.finalized)).fold(0.0, f64::max);
        windows.push((r1(a.t), best));
    }
    let settle = kill + 2.0;
    let empty_after: Vec<f64> = windows.iter().filter(|(t, n)| *t >= settle && *n <= 0.0).map(|(t, _)| *t).collect();
    let mut longest = 0.0f64;
    let mut run = 0.0f64;
    for (_, n) in &windows {
        run = if *n <= 0.0 { run + 1.0 } else { 0.0 };
        longest = longest.max(run);
    }
    let ready_after = restart.and_then(|r| c.ticks.iter().find(|t| t.t >= r && t.ready.get(cp.node).copied().flatten() == Some(true)).map(|t| r1(t.t - r)));
    Some(json!({
        "node": c.nodes[cp.node].name,
        "kill_at_s": r1(kill),
        "restart_at_s": restart.map(r1),
        "ready_after_restart_s": ready_after,
        "finalized_per_second_on_survivors": windows.iter().map(|(t, n)| json!([t, n])).collect::<Vec<_>>(),
        "empty_windows_from_kill_plus_2s": empty_after,
        "longest_stall_s": longest,
        "every_window_finalizes_from_kill_plus_2s": empty_after.is_empty(),
        "ready_within_10s_of_restart": ready_after.is_some_and(|s| s <= 10.0),
    }))
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Builds `report.json` and the list of problems (a node that did not stop cleanly, digests that
/// differ); the run fails when the list is not empty.
pub fn build_report(c: &ReportCtx<'_>, stops: &[Stopped]) -> (Value, Vec<String>) {
    let mut problems: Vec<String> = Vec::new();
    let n = c.nodes.len();
    let lg_final = c.lg["finalized"].as_f64().unwrap_or(0.0);
    let mut node_rows = Vec::new();
    let mut total_cpu_ms = 0.0;
    let mut max_rss: f64 = 0.0;
    for (i, node) in c.nodes.iter().enumerate() {
        let b = c.baseline[i].clone().unwrap_or_default();
        let e = c.end[i].clone().or_else(|| c.ticks.iter().rev().find_map(|t| t.nodes[i].clone()).map(|p| NodeMetrics {
            cpu_ms: p.cpu_ms,
            rss_bytes: p.rss,
            bytes_in: p.bytes_in,
            bytes_out: p.bytes_out,
            finalized: p.finalized,
            ..NodeMetrics::default()
        }));
        let e = e.unwrap_or_default();
        // Counters summed over the samples, so a node restarted mid-run (--crash) counts both lives.
        let grow = |f: fn(&NodeMetrics) -> f64, g: fn(&super::sample::NodePoint) -> f64| {
            counter_growth(std::iter::once(f(&b)).chain(c.ticks.iter().filter_map(|t| t.nodes[i].as_ref().map(g))).chain(std::iter::once(f(&e))))
        };
        let cpu_ms = grow(|m| m.cpu_ms, |p| p.cpu_ms);
        let fin = grow(|m| m.finalized, |p| p.finalized);
        let rss_max = c.ticks.iter().filter_map(|t| t.nodes[i].as_ref().map(|p| p.rss)).fold(e.rss_bytes, f64::max);
        let bytes_out = grow(|m| m.bytes_out, |p| p.bytes_out);
        let bytes_in = grow(|m| m.bytes_in, |p| p.bytes_in);
        let (s_from, s_to) = slope_window(c.args.duration);
        let rss_points: Vec<(f64, f64)> = c.ticks.iter().filter(|t| t.t >= s_from && t.t <= s_to).filter_map(|t| Some((t.t, t.nodes[i].as_ref()?.rss))).collect();
        let disk_points: Vec<(f64, f64)> = c.ticks.iter().filter_map(|t| Some((t.t, t.disk.get(i).copied().flatten()?))).collect();
        let disk_max = disk_points.iter().map(|p| p.1).fold(0.0, f64::max);
        let disk_end = disk_points.last().map(|p| p.1);
        total_cpu_ms += cpu_ms;
        max_rss = max_rss.max(rss_max);
        let stop = stops.iter().find(|s| s.name == node.name);
        let exit = stop.map(|s| s.ending.to_string()).unwrap_or_else(|| "unknown".into());
        if let Some(s) = stop {
            match &s.ending {
                Ending::Clean => {}
                Ending::Killed => problems.push(format!("{} did not exit within 15 s of SIGTERM and was SIGKILLed", node.name)),
                other => problems.push(format!("{}: {other}", node.name)),
            }
        }
        let per = |x: f64| if fin > 0.0 { Some(r1(x / fin)) } else { None };
        node_rows.push(json!({
            "name": node.name,
            "pid": c.pids.get(i),
            "finalized": fin,
            "rejected": (e.rejected - b.rejected).max(0.0),
            "rss_max_bytes": rss_max,
            "rss_max_mib": r1(rss_max / 1048576.0),
            "rss_slope_mib_per_min": slope_mib_per_min(&rss_points).map(|x| (x * 1000.0).round() / 1000.0),
            "rss_slope_window_s": [r1(s_from), r1(s_to)],
            "memory_parts": memory_parts(c.ticks.iter().filter(|t| t.t >= s_from && t.t <= s_to).filter_map(|t| Some((t.t, t.nodes[i].as_ref()?))), e.memory.keys()),
            "disk_bytes_max": disk_max,
            "disk_bytes_end": disk_end,
            "disk_bytes_per_finalized_vertex": disk_end.and_then(|d| per(d)),
            "cpu_seconds": cpu_ms / 1000.0,
            "cpu_pct_of_one_core": r1(cpu_ms / 10.0 / c.window_s),
            "cpu_us_per_finalized_vertex": per(cpu_ms * 1000.0),
            "bytes_out": bytes_out,
            "bytes_in": bytes_in,
            "bytes_out_per_vertex": per(bytes_out),
            "bytes_in_per_vertex": per(bytes_in),
            "store_batches": (e.store_batches - b.store_batches).max(0.0),
            "store_fsync_batches": (e.store_fsync_batches - b.store_fsync_batches).max(0.0),
            "polls_per_vertex": if fin > 0.0 { Some(((e.polls - b.polls).max(0.0) / fin * 1000.0).round() / 1000.0) } else { None },
            "status_finalized": c.statuses[i].as_ref().and_then(|s| s["finalized"].as_u64()),
            "finalized_set_digest": c.digests[i],
            "exit": exit,
            "shutdown_seconds": stop.map(|s| r1(s.seconds)),
            "log": node.log,
        }));
    }
    if !c.agree {
        problems.push("the nodes' finalized-set digests differ (see agreement)".into());
    }
    // Loadgen and machine CPU over the window.
    let first = c.ticks.first();
    let last = c.ticks.last();
    let span_ms = |f: fn(&Tick) -> Option<f64>| match (first.and_then(f), last.and_then(f)) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    let lg_cpu_ms = c.ticks.iter().rev().find_map(|t| t.loadgen.map(|l| l.0));
    let machine_busy_ms = span_ms(|t| t.machine.map(|m| m.0));
    let machine_total_ms = span_ms(|t| t.machine.map(|m| m.1));
    let tick_span_ms = match (first, last) {
        (Some(a), Some(b)) => (b.t - a.t) * 1000.0,
        _ => 0.0,
    };
    let nodes_cpu_in_ticks: f64 = (0..n)
        .filter_map(|i| {
            let a = c.ticks.iter().find_map(|t| t.nodes[i].as_ref().map(|p| p.cpu_ms))?;
            let b = c.ticks.iter().rev().find_map(|t| t.nodes[i].as_ref().map(|p| p.cpu_ms))?;
            Some(b - a)
        })
        .sum();
    let own_ms = match (first, last) {
        (Some(a), Some(b)) => b.own_cpu_ms - a.own_cpu_ms,
        _ => 0.0,
    };
    let lg_in_ticks = match (first.and_then(|t| t.loadgen), c.ticks.iter().rev().find_map(|t| t.loadgen)) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    let others_pct = machine_busy_ms.map(|busy| r1((busy - nodes_cpu_in_ticks - lg_in_ticks - own_ms).max(0.0) / tick_span_ms.max(1.0) * 100.0));
    let crash = crash_section(c);
    if let (Some(cp), Some(cs)) = (c.args.crash, &crash) {
        if cs["ready_after_restart_s"].is_null() {
            problems.push(format!("--crash: node-{} was not ready again by the end of the run", cp.node));
        }
    } else if c.args.crash.is_some() {
        problems.push("--crash: the node was never killed (the load ended first)".into());
    }
    let byz = |i: usize| c.args.byzantine.as_ref().is_some_and(|b| b.node == i);
    let phases = super::phases::section(c.lg, c.ticks, |i| !byz(i));
    if phases.as_ref().is_some_and(|p| p["last_phase_recovered"] != json!(true)) {
        problems.push("--phases: the last phase did not finalize every payload it offered (refused for good or undecided): the cluster did not recover".into());
    }
    let (sign_us, verify_us, measured) = match c.floor {
        Some(f) => (r1(f.sign_us), r1(f.verify_us), true),
        None => (SIGN_US, VERIFY_US, false),
    };
    let floor = r1(sign_us + (n.saturating_sub(1)) as f64 * verify_us);
    // The engine's own verify, with the key's expansion done once (measured only).
    let verify_prepared_us = c.floor.map(|f| r1(f.verify_prepared_us));
    let sign_prepared_us = c.floor.map(|f| r1(f.sign_prepared_us));
    let floor_prepared = c.floor.map(|f| r1(f.per_vertex_prepared_us(n)));
    // Vertices (what is signed and polled) from the nodes; payloads (what clients submitted)
    // from loadgen. With batching a vertex carries many payloads.
    let vertices_final = node_rows.iter().filter_map(|r| r["finalized"].as_f64()).fold(0.0, f64::max);
    let cluster_cpu_per_vertex = if vertices_final > 0.0 { Some(r1(total_cpu_ms * 1000.0 / vertices_final)) } else { None };
    let cluster_cpu_per_payload = if lg_final > 0.0 { Some(r1(total_cpu_ms * 1000.0 / lg_final)) } else { None };
    // Over the seconds of offered load, as loadgen's payloads/s (before 2026-12-07 over the
    // measured window, load and drain, which read lower).
    let load_seconds = c.lg["load_seconds"].as_f64().filter(|s| *s > 0.0).unwrap_or(c.window_s);
    let throughput_vps = r1(vertices_final / load_seconds.max(1e-9));
    let node0_delta = match (c.end.first().cloned().flatten(), c.baseline.first().cloned().flatten()) {
        (Some(e), Some(b)) => bucket_delta(&e.latency_buckets, &b.latency_buckets),
        (Some(e), None) => e.latency_buckets,
        _ => Vec::new(),
    };
    let q = |p: f64| bucket_quantile(&node0_delta, p).map(|s| if s.is_finite() { json!(s * 1000.0) } else { json!("+Inf") });
    let nfr = {
        let p95 = c.lg["finality_ms"]["p95"].as_f64().unwrap_or(f64::NAN);
        // Application throughput: payloads (= vertices with `--max-batch 1`, the design card's
        // benchmark).
        let tput = c.lg["throughput_pps"].as_f64().unwrap_or(0.0);
        let target = if n >= 100 { 5000.0 } else { 1000.0 };
        let util = total_cpu_ms / (c.window_s * 1000.0 * c.machine.nproc as f64) * 100.0;
        json!({
            "finality_p95_below_1s": p95 < 1000.0 && lg_final > 0.0,
            "throughput_target_vps": target,
            "throughput_met": tput > target,
            "memory_below_500mb_per_node": max_rss < 500.0 * 1048576.0,
            "cpu_utilization_pct_of_machine": r1(util),
            "cpu_below_50pct": util < 50.0,
        })
    };
    let report = json!({
        "bench": {
            "nodes": n, "shards": c.args.shards, "rate": c.args.rate, "duration_s": c.args.duration, "drain_s": c.args.drain,
            "payload_bytes": c.args.payload_bytes, "conflict_ratio": c.args.conflict_ratio, "sync": c.args.sync, "retain_final_secs": c.args.retain_final_secs,
            "base_port": c.base_port, "startup_to_healthy_s": r1(c.startup_s), "load_s": r1(c.load_s), "window_s": r1(c.window_s),
            "version": env!("CARGO_PKG_VERSION"),
        },
        "machine": c.machine,
        "loadgen": c.lg,
        "nodes": node_rows,
        "cluster": {
            "node_cpu_seconds_total": total_cpu_ms / 1000.0,
            "cpu_us_per_finalized_vertex_all_nodes": cluster_cpu_per_vertex,
            "cpu_us_per_finalized_payload_all_nodes": cluster_cpu_per_payload,
            "throughput_pps": c.lg["throughput_pps"],
            "throughput_vps": throughput_vps,
            "payloads_per_vertex": if vertices_final > 0.0 { json!(r1(lg_final / vertices_final)) } else { Value::Null },
            "max_batch": c.args.max_batch,
            "poll_interval_us": c.cadence.map(|x| x.0),
            "batch_linger_us": c.cadence.map(|x| x.1),
            "mldsa_floor_us_per_vertex": floor,
            "mldsa_sign_us": sign_us,
            "mldsa_verify_us": verify_us,
            "mldsa_floor_measured": measured,
            "cpu_per_vertex_over_floor": cluster_cpu_per_vertex.map(|c| r1(c / floor.max(1.0))),
            "mldsa_sign_prepared_us": sign_prepared_us,
            "mldsa_verify_prepared_us": verify_prepared_us,
            "mldsa_floor_prepared_us_per_vertex": floor_prepared,
            "cpu_per_vertex_over_prepared_floor": cluster_cpu_per_vertex.zip(floor_prepared).map(|(c, f)| r1(c / f.max(1.0))),
            "mldsa_floor_note": format!("1 ML-DSA-87 sign ({sign_us} us) + {} verifies ({verify_us} us) per vertex on this cluster size, {}; per-poll query/response signatures come on top; sign and verify are liboqs's public API, which expands the key at every call: the engine's prepared keys sign in mldsa_sign_prepared_us and verify in mldsa_verify_prepared_us, and mldsa_floor_prepared_us_per_vertex is the same sum with them", n.saturating_sub(1), if measured { "measured on this machine at the start of the run (median of 200)" } else { "reference constants (the measurement failed)" }),
            "rss_max_mib_any_node": r1(max_rss / 1048576.0),
            // The honest nodes' (a `--byzantine` attacker's own growth is its queued flood, in its row).
            "rss_slope_mib_per_min_max": node_rows
                .iter()
                .filter(|r| c.args.byzantine.as_ref().is_none_or(|b| r["name"].as_str() != Some(format!("node-{}", b.node).as_str())))
                .filter_map(|r| r["rss_slope_mib_per_min"].as_f64())
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))),
            "disk_bytes_max_any_node": node_rows.iter().filter_map(|r| r["disk_bytes_max"].as_f64()).fold(0.0, f64::max),
            "loadgen_cpu_seconds": lg_cpu_ms.map(|m| m / 1000.0),
            "machine_busy_pct_of_all_cores": machine_busy_ms.zip(machine_total_ms).map(|(b, t)| r1(b / t.max(1.0) * 100.0)),
            "other_processes_pct_of_one_core": others_pct,
            "node0_finality_ms_bucket_upper_bound": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)},
        },
        "nfr_001": nfr,
        "agreement": {
            "agree": c.agree,
            "digests": c.nodes.iter().zip(c.digests).map(|(n, d)| (n.name.clone(), json!(d))).collect::<serde_json::Map<_, _>>(),
        },
        "crash": crash,
        "phases": phases,
        "byzantine": c.args.byzantine.as_ref().map(|b| json!({"node": format!("node-{}", b.node), "mode": b.mode, "nice": c.args.byzantine_nice, "note": "loadgen submitted to the honest nodes only; agreement is among them, with the attacker frozen (SIGSTOP) while they settle"})),
        "problems": problems,
        "timeline": c.ticks.iter().map(|t| json!({
            "t": r1(t.t),
            "nodes": t.nodes.iter().map(|p| p.as_ref().map(|p| json!({"cpu_ms": p.cpu_ms, "rss": p.rss, "bytes_in": p.bytes_in, "bytes_out": p.bytes_out, "finalized": p.finalized, "memory": p.memory}))).collect::<Vec<_>>(),
            "ready": t.ready,
            "disk_bytes": t.disk,
            "loadgen_cpu_ms": t.loadgen.map(|l| l.0),
            "machine_busy_ms": t.machine.map(|m| m.0),
        })).collect::<Vec<_>>(),
        "node0_finality_latency_buckets": node0_delta.iter().map(|(le, c)| json!([if le.is_finite() { json!(le) } else { json!("+Inf") }, c])).collect::<Vec<_>>(),
    });
    (report, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_across_a_restart() {
        // 10 -> 30, restart from 0 -> 5 -> 12: 20 + 5 + 7.
        assert_eq!(counter_growth([10.0, 20.0, 30.0, 5.0, 12.0].into_iter()), 32.0);
        assert_eq!(counter_growth([7.0].into_iter()), 0.0);
    }

    #[test]
    fn slope_is_mib_per_minute() {
        let pts: Vec<(f64, f64)> = (0..60).map(|s| (s as f64, 100.0 * 1048576.0 + s as f64 * 1048576.0 / 60.0)).collect();
        let s = slope_mib_per_min(&pts).expect("slope");
        assert!((s - 1.0).abs() < 1e-9, "{s}");
        assert_eq!(slope_mib_per_min(&pts[..1]), None);
        assert_eq!(slope_window(1200.0), (300.0, 1200.0));
        assert_eq!(slope_window(60.0), (15.0, 60.0));
    }
}
