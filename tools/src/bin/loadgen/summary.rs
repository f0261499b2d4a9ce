//! loadgen's summary: the counts, the client-side finality distribution and the per-phase
//! tally, printed and written as one JSON object (`--json`, read by `bench`).

use std::collections::HashMap;

use pqdag_tools::targets::ClientTarget;

use super::{Args, State};

/// Prints the summary and writes it to `--json` when given.
pub(super) fn write(args: &Args, targets: &[ClientTarget], s: &State) -> Result<(), String> {
    let f = s.tracker.finish();
    let c = &f.c;
    let lost = f.lost();
    let load_s = s.schedule.duration();
    let h = s.latency_us.as_ref();
    let q = |p: f64| h.map(|h| h.value_at_quantile(p) as f64 / 1000.0).unwrap_or(0.0);
    let summary = serde_json::json!({
        "submitted": c.submitted,
        "acknowledged": c.acknowledged,
        "finalized": c.finalized,
        "rejected": c.rejected,
        "lost": lost,
        "lost_unacknowledged": f.lost_unacknowledged,
        "lost_undecided": f.lost_undecided,
        "refused": f.refused,
        "double_spends_refused": c.double_spends_refused,
        "submit_errors": f.submit_errors,
        "retries": c.retries,
        "failed_over": c.failed_over,
        "duplicates_decided": c.duplicates_decided,
        "abandoned": c.abandoned,
        "own_conflicts": c.own_conflicts,
        "outspent": c.outspent,
        "resolved_from_feed": c.resolved_from_feed,
        "attempts_max": args.attempts,
        "ack_timeout_s": args.ack_timeout,
        "node_downs": s.nodes.iter().map(|n| (n.target.name.clone(), n.downs)).collect::<HashMap<_, _>>(),
        "reconnects": s.nodes.iter().map(|n| n.reconnects).sum::<u64>(),
        "throughput_pps": c.finalized as f64 / load_s,
        "load_seconds": load_s,
        "finality_ms": { "p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "max": h.map(|h| h.max() as f64 / 1000.0).unwrap_or(0.0) },
        // The whole client-side distribution, for `bench`'s latency CDF: [ms, fraction] at every
        // 1 % and the tail's 99.5 / 99.9 / 99.99 %.
        "finality_cdf_ms": h.filter(|h| !h.is_empty()).map(|h| {
            let mut qs: Vec<f64> = (1..=100).map(|i| f64::from(i) / 100.0).collect();
            qs.extend([0.995, 0.999, 0.9999]);
            qs.sort_by(f64::total_cmp);
            qs.iter().map(|&p| [h.value_at_quantile(p) as f64 / 1000.0, p]).collect::<Vec<_>>()
        }),
        "duration_s": load_s,
        "finalized_per_second": s.per_second,
        "nodes": targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "rate": s.schedule.mean_rate(),
        "phases": s.phases.to_json(),
        "conflict_ratio": args.conflict_ratio,
        "payload_bytes": args.payload_bytes,
    });
    println!("submitted   {}  ({} acknowledged)", c.submitted, c.acknowledged);
    println!("finalized   {}  ({:.0} vertices/s over {:.0} s)", c.finalized, c.finalized as f64 / load_s, load_s);
    println!("rejected    {}  (+ {} double spends refused at submit, {} outspent by their double spend)", c.rejected, c.double_spends_refused, c.outspent);
    println!(
        "lost        {}  (never acknowledged {}: {} refused, {} no reply; acknowledged but undecided {})",
        lost, f.lost_unacknowledged, f.refused, f.submit_errors, f.lost_undecided
    );
    println!(
        "failover    {} retries, {} payloads final through another node than the first, {} late decisions of superseded attempts, {} node downs",
        c.retries,
        c.failed_over,
        c.duplicates_decided,
        s.nodes.iter().map(|n| n.downs).sum::<u64>()
    );
    println!("finality    p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms", q(0.5), q(0.95), q(0.99), h.map(|h| h.max() as f64 / 1000.0).unwrap_or(0.0));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary).unwrap_or_default()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
