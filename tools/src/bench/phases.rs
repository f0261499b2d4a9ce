//! `--phases`: the report's per-phase table (loadgen's tally of each phase with the nodes' RSS
//! and finality rate over the phase's seconds) and the recovery check: after an overload, the
//! last phase must get every payload it offered finalized. Its first attempts may still be
//! refused as `Overloaded` while the backlog drains; loadgen sends those again elsewhere, and
//! the check counts payloads, not attempts.

use serde_json::{json, Value};

use super::sample::Tick;

/// One row per loadgen phase, and whether the cluster came back (`None` without `--phases`).
/// `honest`: which nodes to read (a `--byzantine` attacker's memory is its own flood).
pub fn section(lg: &Value, ticks: &[Tick], honest: impl Fn(usize) -> bool) -> Option<Value> {
    let phases = lg["phases"].as_array()?;
    if phases.len() < 2 {
        return None;
    }
    let rows: Vec<Value> = phases
        .iter()
        .map(|p| {
            let start = p["start_s"].as_f64().unwrap_or(0.0);
            let end = start + p["secs"].as_f64().unwrap_or(0.0);
            let within: Vec<&Tick> = ticks.iter().filter(|t| t.t >= start && t.t <= end).collect();
            let rss_max = within
                .iter()
                .flat_map(|t| t.nodes.iter().enumerate().filter(|(i, _)| honest(*i)).filter_map(|(_, n)| n.as_ref().map(|n| n.rss)))
                .fold(0.0, f64::max);
            // Vertices finalized per second at the busiest honest node, first to last tick.
            let vps = match (within.first(), within.last()) {
                (Some(a), Some(b)) if b.t > a.t => {
                    let best = (0..a.nodes.len()).filter(|i| honest(*i)).filter_map(|i| Some(b.nodes[i].as_ref()?.finalized - a.nodes[i].as_ref()?.finalized)).fold(0.0, f64::max);
                    Some((best / (b.t - a.t) * 10.0).round() / 10.0)
                }
                _ => None,
            };
            let mut row = p.clone();
            row["rss_max_mib_any_node"] = json!((rss_max / 1048576.0 * 10.0).round() / 10.0);
            row["vertices_finalized_per_second"] = json!(vps);
            row
        })
        .collect();
    let last = rows.last()?;
    let n = |k: &str| last[k].as_u64().unwrap_or(0);
    let recovered = n("offered") > 0 && n("finalized") == n("offered");
    Some(json!({ "phases": rows, "last_phase_recovered": recovered }))
}

/// The markdown table of [`section`].
pub fn markdown(p: &Value) -> String {
    let Some(rows) = p["phases"].as_array() else { return String::new() };
    let ms = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
    let mut s = String::from("\n| phase | offered /s for s | offered | finalized | refused `Overloaded` (attempts) | p50 / p95 / p99 ms | vertices final /s (node max) | max RSS MiB |\n|---|---|---|---|---|---|---|---|\n");
    for (i, r) in rows.iter().enumerate() {
        let f = &r["finality_ms"];
        s += &format!(
            "| {} | {} for {} (from t={} s) | {} | {} | {} | {} / {} / {} | {} | {} |\n",
            i + 1,
            r["rate"],
            r["secs"],
            r["start_s"],
            r["offered"],
            r["finalized"],
            r["refused_overloaded"],
            ms(&f["p50"]),
            ms(&f["p95"]),
            ms(&f["p99"]),
            r["vertices_finalized_per_second"],
            r["rss_max_mib_any_node"],
        );
    }
    let ok = p["last_phase_recovered"].as_bool() == Some(true);
    s += &format!(
        "\nRecovery: {}\n",
        if ok { "**the last phase finalized every payload it offered**" } else { "**NOT recovered**: the last phase left payloads refused for good or undecided" }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: f64, rss: f64, finalized: f64) -> Tick {
        let node = crate::bench::sample::NodePoint { cpu_ms: 0.0, rss, bytes_in: 0.0, bytes_out: 0.0, finalized, memory: Default::default() };
        Tick { t, nodes: vec![Some(node)], loadgen: None, machine: None, own_cpu_ms: 0.0, ready: vec![Some(true)], disk: vec![None] }
    }

    #[test]
    fn the_last_phase_must_finalize_all_it_offered() {
        let lg = json!({"phases": [
            {"rate": 100.0, "secs": 2.0, "start_s": 0.0, "offered": 200, "finalized": 150, "refused_overloaded": 70, "finality_ms": {"p50": 900.0}},
            {"rate": 10.0, "secs": 2.0, "start_s": 2.0, "offered": 20, "finalized": 20, "refused_overloaded": 0, "finality_ms": {"p50": 200.0}},
        ]});
        let ticks = [tick(0.0, 100.0 * 1048576.0, 0.0), tick(1.0, 300.0 * 1048576.0, 50.0), tick(2.0, 250.0 * 1048576.0, 90.0), tick(3.0, 120.0 * 1048576.0, 100.0), tick(4.0, 110.0 * 1048576.0, 110.0)];
        let s = section(&lg, &ticks, |_| true).expect("two phases");
        assert_eq!(s["last_phase_recovered"], true);
        assert_eq!(s["phases"][0]["rss_max_mib_any_node"], 300.0);
        assert_eq!(s["phases"][1]["vertices_finalized_per_second"], 10.0);
        assert!(markdown(&s).contains("finalized every payload"));
        let mut drained = lg.clone();
        drained["phases"][1]["refused_overloaded"] = json!(3);
        assert_eq!(section(&drained, &ticks, |_| true).expect("two phases")["last_phase_recovered"], true, "refused attempts that went through elsewhere");
        let mut bad = lg.clone();
        bad["phases"][1]["finalized"] = json!(19);
        assert_eq!(section(&bad, &ticks, |_| true).expect("two phases")["last_phase_recovered"], false);
        assert!(section(&json!({"phases": [lg["phases"][0].clone()]}), &ticks, |_| true).is_none(), "one phase: no section");
    }
}
