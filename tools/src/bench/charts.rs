//! The five SVG plots of a `bench` run (`throughput.svg`, `latency_cdf.svg`, `rss.svg`,
//! `disk.svg`, `cpu.svg`), drawn from the samples of a [`ReportCtx`] with [`super::plot`].

use std::path::Path;

use super::plot::{cdf_chart, line_chart, Series};
use super::prom::bucket_delta;
use super::report::ReportCtx;

/// Writes the five SVG plots into `out`.
pub fn plots(out: &Path, c: &ReportCtx<'_>) -> Result<(), String> {
    // Throughput: client-side (loadgen), and each node's finalized counter per second.
    let mut thr = Vec::new();
    if let Some(ps) = c.lg["finalized_per_second"].as_array() {
        thr.push(Series::new("loadgen: finalized/s (client)", ps.iter().enumerate().map(|(i, v)| (i as f64 + 0.5, v.as_f64().unwrap_or(0.0))).collect()));
    }
    let per_node_rate = |i: usize| -> Vec<(f64, f64)> {
        c.ticks
            .windows(2)
            .filter_map(|w| {
                let (a, b) = (w[0].nodes[i].as_ref()?, w[1].nodes[i].as_ref()?);
                Some(((w[0].t + w[1].t) / 2.0, (b.finalized - a.finalized) / (w[1].t - w[0].t).max(0.001)))
            })
            .collect()
    };
    for i in 0..c.nodes.len().min(3) {
        thr.push(Series::new(format!("{}: finalized/s (node counter)", c.nodes[i].name), per_node_rate(i)));
    }
    let x_end = c.window_s.max(1.0);
    thr.push(Series::new(format!("offered load {}/s", c.args.rate), vec![(0.0, c.args.rate), (c.args.duration.min(x_end), c.args.rate)]));
    line_chart(&out.join("throughput.svg"), "Finalized vertices per second", "seconds since load start", "vertices/s", &thr)?;

    // Latency CDF: node-0 histogram over the run, plus loadgen's client quantiles.
    let mut cdf = Vec::new();
    let d = match (c.end.first().cloned().flatten(), c.baseline.first().cloned().flatten()) {
        (Some(e), Some(b)) => bucket_delta(&e.latency_buckets, &b.latency_buckets),
        _ => Vec::new(),
    };
    if let Some(total) = d.last().map(|x| x.1).filter(|t| *t > 0.0) {
        // From the last empty bucket on (the leading empty buckets only stretch the axis).
        let finite: Vec<(f64, f64)> = d.iter().filter(|(le, _)| le.is_finite()).map(|(le, n)| (le * 1000.0, n / total)).collect();
        let first = finite.iter().position(|p| p.1 > 0.0).unwrap_or(0).saturating_sub(1);
        let last = finite.iter().position(|p| p.1 >= 1.0).map(|i| i + 1).unwrap_or(finite.len());
        cdf.push(Series::new("node-0 histogram (creation/arrival to final)", finite[first..last].to_vec()));
    }
    // Client side: loadgen's whole histogram (every 1 %, and the tail), or its four quantiles
    // from a loadgen that does not write the distribution.
    let whole: Vec<(f64, f64)> = c.lg["finality_cdf_ms"].as_array().map(|a| a.iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?))).filter(|p| p.0 > 0.0).collect()).unwrap_or_default();
    if !whole.is_empty() {
        cdf.push(Series::new("loadgen, whole histogram (submit to final)", whole));
    } else {
        let f = &c.lg["finality_ms"];
        let qs: Vec<(f64, f64)> = [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)].iter().filter_map(|(k, q)| f[*k].as_f64().filter(|v| *v > 0.0).map(|v| (v, *q))).collect();
        if !qs.is_empty() {
            cdf.push(Series::new("loadgen p50/p95/p99/max (submit to final)", qs));
        }
    }
    cdf_chart(&out.join("latency_cdf.svg"), "Finality latency CDF", &cdf)?;

    // RSS and CPU per node over time.
    let rss: Vec<Series> = (0..c.nodes.len())
        .map(|i| Series::new(c.nodes[i].name.clone(), c.ticks.iter().filter_map(|t| Some((t.t, t.nodes[i].as_ref()?.rss / 1048576.0))).collect()))
        .collect();
    line_chart(&out.join("rss.svg"), "Resident memory per node", "seconds since load start", "RSS, MiB", &rss)?;
    let disk: Vec<Series> = (0..c.nodes.len())
        .map(|i| Series::new(c.nodes[i].name.clone(), c.ticks.iter().filter_map(|t| Some((t.t, t.disk.get(i).copied().flatten()? / 1048576.0))).collect()))
        .collect();
    line_chart(&out.join("disk.svg"), "Data directory size per node", "seconds since load start", "MiB on disk", &disk)?;
    let mut cpu: Vec<Series> = (0..c.nodes.len())
        .map(|i| {
            Series::new(
                c.nodes[i].name.clone(),
                c.ticks
                    .windows(2)
                    .filter_map(|w| {
                        let (a, b) = (w[0].nodes[i].as_ref()?, w[1].nodes[i].as_ref()?);
                        Some(((w[0].t + w[1].t) / 2.0, (b.cpu_ms - a.cpu_ms) / 10.0 / (w[1].t - w[0].t).max(0.001)))
                    })
                    .collect(),
            )
        })
        .collect();
    if cpu.len() < 12 {
        cpu.push(Series::new(
            "loadgen",
            c.ticks.windows(2).filter_map(|w| Some(((w[0].t + w[1].t) / 2.0, (w[1].loadgen?.0 - w[0].loadgen?.0) / 10.0 / (w[1].t - w[0].t).max(0.001)))).collect(),
        ));
    }
    line_chart(&out.join("cpu.svg"), "CPU per process (100% = one core)", "seconds since load start", "% of one core", &cpu)?;
    Ok(())
}
