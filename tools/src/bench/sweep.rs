//! `bench --sweep R1,R2,...`: one full bench run per offered rate (a fresh cluster each, in
//! `OUT/rate-R`), then `OUT/sweep.json`, `OUT/sweep.md` and `OUT/sweep.svg`: finalized
//! throughput against client-observed p50 and p99 latency, as Narwhal's `fab plot` draws it, and
//! the highest rate whose run held p99 at or under `--sweep-p99-ms`.

use std::path::Path;

use serde_json::{json, Value};

use super::plot::{line_chart, Series};

/// Parses `R1,R2,...` (positive rates, ascending order not required).
pub fn parse_rates(s: &str) -> Result<Vec<f64>, String> {
    let rates: Vec<f64> = s.split(',').filter(|x| !x.trim().is_empty()).map(|x| x.trim().parse::<f64>().map_err(|_| format!("--sweep {s:?}: {x:?} is not a rate"))).collect::<Result<_, _>>()?;
    if rates.is_empty() || rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return Err(format!("--sweep {s:?}: expected positive rates, e.g. 500,1000,2000"));
    }
    Ok(rates)
}

/// One rate's outcome, read back from its `report.json`.
pub fn point(rate: f64, report: &Value, ok: bool) -> Value {
    let lg = &report["loadgen"];
    json!({
        "rate": rate,
        "throughput_pps": lg["throughput_pps"],
        "throughput_vps": report["cluster"]["throughput_vps"],
        "p50_ms": lg["finality_ms"]["p50"],
        "p95_ms": lg["finality_ms"]["p95"],
        "p99_ms": lg["finality_ms"]["p99"],
        "submitted": lg["submitted"],
        "finalized": lg["finalized"],
        "lost": lg["lost"],
        "cpu_us_per_vertex": report["cluster"]["cpu_us_per_finalized_vertex_all_nodes"],
        "rss_max_mib": report["cluster"]["rss_max_mib_any_node"],
        "checks_passed": ok,
    })
}

/// The highest offered rate whose run lost nothing and held p99 at or under `p99_ms`.
pub fn best(points: &[Value], p99_ms: f64) -> Option<&Value> {
    points
        .iter()
        .filter(|p| p["lost"].as_u64() == Some(0) && p["p99_ms"].as_f64().is_some_and(|x| x <= p99_ms))
        .max_by(|a, b| a["rate"].as_f64().unwrap_or(0.0).total_cmp(&b["rate"].as_f64().unwrap_or(0.0)))
}

/// Writes `sweep.json`, `sweep.md` and `sweep.svg` into `out`; returns the markdown.
pub fn write(out: &Path, nodes: usize, points: &[Value], p99_ms: f64) -> Result<String, String> {
    let best = best(points, p99_ms);
    let summary = json!({"nodes": nodes, "p99_bound_ms": p99_ms, "points": points, "best": best});
    std::fs::write(out.join("sweep.json"), serde_json::to_string_pretty(&summary).unwrap_or_default()).map_err(|e| format!("sweep.json: {e}"))?;
    let mut md = format!("# pqdag bench sweep: {nodes} nodes\n\n| offered payloads/s | finalized payloads/s (vertices/s) | p50 ms | p95 ms | p99 ms | lost | CPU us/vertex | max RSS MiB | checks |\n|---|---|---|---|---|---|---|---|---|\n");
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
    for p in points {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f(&p["rate"]),
            format!("{} ({})", f(&p["throughput_pps"]), f(&p["throughput_vps"])),
            f(&p["p50_ms"]),
            f(&p["p95_ms"]),
            f(&p["p99_ms"]),
            f(&p["lost"]),
            f(&p["cpu_us_per_vertex"]),
            f(&p["rss_max_mib"]),
            if p["checks_passed"] == true { "passed" } else { "FAILED" }
        );
    }
    md += &match best {
        Some(b) => format!("\nHighest offered rate with p99 <= {p99_ms:.0} ms and nothing lost: **{} /s** (finalized {} /s).\n", f(&b["rate"]), f(&b["throughput_pps"])),
        None => format!("\nNo rate held p99 <= {p99_ms:.0} ms with nothing lost.\n"),
    };
    md += "\nPlot: `sweep.svg` (finalized payloads/s against client-observed latency). Each rate's full report: `rate-R/report.md`.\n";
    std::fs::write(out.join("sweep.md"), &md).map_err(|e| format!("sweep.md: {e}"))?;
    let mut sorted: Vec<&Value> = points.iter().collect();
    sorted.sort_by(|a, b| a["throughput_pps"].as_f64().unwrap_or(0.0).total_cmp(&b["throughput_pps"].as_f64().unwrap_or(0.0)));
    let series = |key: &str| -> Vec<(f64, f64)> { sorted.iter().filter_map(|p| Some((p["throughput_pps"].as_f64()?, p[key].as_f64()?))).collect() };
    line_chart(&out.join("sweep.svg"), &format!("Throughput against latency, {nodes} nodes"), "finalized payloads/s", "client-observed finality, ms", &[Series::new("p50", series("p50_ms")), Series::new("p99", series("p99_ms"))])?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_rates("500, 1000,2000"), Ok(vec![500.0, 1000.0, 2000.0]));
        for bad in ["", "x", "500,-1", "0", "1,,nan"] {
            assert!(parse_rates(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_best_rate_holds_p99_and_loses_nothing() {
        let pts = vec![
            json!({"rate": 500.0, "p99_ms": 300.0, "lost": 0}),
            json!({"rate": 1000.0, "p99_ms": 390.0, "lost": 0}),
            json!({"rate": 2000.0, "p99_ms": 350.0, "lost": 3}),
            json!({"rate": 4000.0, "p99_ms": 2000.0, "lost": 0}),
        ];
        assert_eq!(best(&pts, 400.0).and_then(|p| p["rate"].as_f64()), Some(1000.0));
        assert!(best(&pts, 100.0).is_none());
    }
}
