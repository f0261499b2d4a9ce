//! `calibrate`: fits the simulator's CPU cost model to real `bench` runs.
//!
//! Each report folder (`bench --out DIR`) gives, per node, its CPU seconds over the measured
//! window, and from its last `/metrics` scrape: signatures made (polls + responses + own
//! vertices), signatures verified, network bytes, store batches. The signatures are charged at
//! the crypto benches' cost (`--sign-us`, `--verify-us`); the rest of the CPU is fitted, by
//! least squares over the runs' mean node (each run weighted by its own size, so a 3-node and a
//! 100-node run count alike), to three terms:
//!
//! - `byte_ns`: per network byte sent or received (QUIC, AEAD, syscalls, framing);
//! - `batch_us`: per store batch, i.e. per persisting event-loop turn (RocksDB, fsync, wake-up);
//! - `conn_us_per_s`: per open peer connection per second (keep-alives, timers).
//!
//! It prints the fit, each run's measured and modelled CPU, and the `sim` flags to use.
//!
//!     target/release/calibrate /tmp/b3-1200 /tmp/b3-300 /tmp/b10 /tmp/b20 /tmp/b100

use std::path::{Path, PathBuf};

use clap::Parser;
use pqdag_tools::bench::prom::parse;
use serde_json::Value;

/// Fits the simulator's CPU cost model to real bench runs (docs/simulator.md "Calibration").
#[derive(Parser, Debug)]
#[command(name = "calibrate")]
struct Args {
    /// `bench --out` folders (report.json + metrics/node-*.prom); at least three runs of
    /// different shapes (node counts, rates).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// CPU per ML-DSA-87 signature, us (`cargo bench -p benches --bench crypto`).
    #[arg(long, default_value_t = 122.0)]
    sign_us: f64,
    /// CPU per ML-DSA-87 verification, us.
    #[arg(long, default_value_t = 62.0)]
    verify_us: f64,
}

/// The mean node of one run.
#[derive(Debug, Clone)]
struct Run {
    name: String,
    nodes: usize,
    window_s: f64,
    cpu_us: f64,
    finalized: f64,
    signs: f64,
    verifies: f64,
    bytes: f64,
    batches: f64,
}

impl Run {
    fn crypto_us(&self, a: &Args) -> f64 {
        a.sign_us * self.signs + a.verify_us * self.verifies
    }
    /// Regressors: bytes, store batches, connection-seconds.
    fn x(&self) -> [f64; 3] {
        [
            self.bytes,
            self.batches,
            (self.nodes.saturating_sub(1)) as f64 * self.window_s,
        ]
    }
}

fn load(dir: &Path) -> Result<Run, String> {
    let text = std::fs::read_to_string(dir.join("report.json"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let r: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}/report.json: {e}", dir.display()))?;
    let nodes = r["nodes"]
        .as_array()
        .ok_or_else(|| format!("{}: report.json has no nodes", dir.display()))?;
    let n = nodes.len();
    if n == 0 {
        return Err(format!("{}: no nodes", dir.display()));
    }
    let window_s = r["bench"]["window_s"]
        .as_f64()
        .ok_or_else(|| format!("{}: no bench.window_s", dir.display()))?;
    let (
        mut cpu,
        mut fin,
        mut bytes,
        mut polls,
        mut responses,
        mut verifies,
        mut submitted,
        mut batches,
    ) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, node) in nodes.iter().enumerate() {
        cpu += node["cpu_seconds"].as_f64().unwrap_or(0.0) * 1e6;
        fin += node["finalized"].as_f64().unwrap_or(0.0);
        bytes +=
            node["bytes_in"].as_f64().unwrap_or(0.0) + node["bytes_out"].as_f64().unwrap_or(0.0);
        let prom_path = dir.join("metrics").join(format!("node-{i}.prom"));
        let prom = std::fs::read_to_string(&prom_path)
            .map_err(|e| format!("{}: {e}", prom_path.display()))?;
        for s in parse(&prom) {
            match s.name.as_str() {
                "pqdag_polls_total" => polls += s.value,
                "pqdag_responses_total" => responses += s.value,
                "pqdag_verify_batch_size_sum" => verifies += s.value,
                "pqdag_submitted_total" => submitted += s.value,
                "pqdag_store_batches_total" => batches += s.value,
                _ => {}
            }
        }
    }
    let k = n as f64;
    // Signatures made: one per poll, one per answered query (the cluster's responses received,
    // spread evenly), one per own vertex.
    Ok(Run {
        name: dir.display().to_string(),
        nodes: n,
        window_s,
        cpu_us: cpu / k,
        finalized: fin / k,
        signs: (polls + responses + submitted) / k,
        verifies: verifies / k,
        bytes: bytes / k,
        batches: batches / k,
    })
}

/// Least squares for 3 unknowns via the normal equations (Gaussian elimination, pivoting).
fn solve3(rows: &[([f64; 3], f64)]) -> Option<[f64; 3]> {
    let mut m = [[0.0f64; 4]; 3];
    for (x, y) in rows {
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += x[i] * x[j];
            }
            m[i][3] += x[i] * y;
        }
    }
    for col in 0..3 {
        let p = (col..3).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        m.swap(col, p);
        if m[col][col].abs() < 1e-12 {
            return None;
        }
        for r in col + 1..3 {
            let f = m[r][col] / m[col][col];
            for c in col..4 {
                m[r][c] -= f * m[col][c];
            }
        }
    }
    let mut out = [0.0; 3];
    for i in (0..3).rev() {
        let s: f64 = (i + 1..3).map(|j| m[i][j] * out[j]).sum();
        out[i] = (m[i][3] - s) / m[i][i];
    }
    Some(out)
}

fn main() {
    let a = Args::parse();
    let mut runs = Vec::new();
    for d in &a.runs {
        match load(d) {
            Ok(r) if r.finalized > 0.0 => runs.push(r),
            Ok(_) => eprintln!("calibrate: {} finalized nothing; skipped", d.display()),
            Err(e) => {
                eprintln!("calibrate: {e}");
                std::process::exit(2);
            }
        }
    }
    if runs.len() < 3 {
        eprintln!(
            "calibrate: need at least 3 usable runs, have {}",
            runs.len()
        );
        std::process::exit(2);
    }
    // Relative weighting: divide each run's equation by its own non-crypto CPU.
    let rows: Vec<([f64; 3], f64)> = runs
        .iter()
        .filter_map(|r| {
            let y = r.cpu_us - r.crypto_us(&a);
            (y > 0.0).then(|| (r.x().map(|v| v / y), 1.0))
        })
        .collect();
    let Some([byte_us, batch_us, conn_us]) = solve3(&rows) else {
        eprintln!("calibrate: the runs do not separate the terms (too alike); add runs of other node counts or rates");
        std::process::exit(2);
    };
    println!("sign_us {:.0} and verify_us {:.0} (given); fitted: byte_ns {:.2}, batch_us {:.0}, conn_us_per_s {:.1}", a.sign_us, a.verify_us, byte_us * 1000.0, batch_us, conn_us);
    println!();
    println!("| run | nodes | CPU us/vertex/node measured | model | error | of which crypto | bytes/vertex/node | batches/vertex |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let x = r.x();
        let model = r.crypto_us(&a) + byte_us * x[0] + batch_us * x[1] + conn_us * x[2];
        println!(
            "| {} | {} | {:.0} | {:.0} | {:+.1}% | {:.0} | {:.0} | {:.2} |",
            r.name,
            r.nodes,
            r.cpu_us / r.finalized,
            model / r.finalized,
            100.0 * (model - r.cpu_us) / r.cpu_us,
            r.crypto_us(&a) / r.finalized,
            r.bytes / r.finalized,
            r.batches / r.finalized
        );
    }
    println!();
    println!("sim flags: --sign-us {:.0} --verify-us {:.0} --byte-ns {:.2} --batch-us {:.0} --conn-us-per-s {:.0}", a.sign_us, a.verify_us, byte_us * 1000.0, batch_us, conn_us);
}

#[cfg(test)]
mod tests {
    use super::solve3;

    #[test]
    fn recovers_known_coefficients() {
        let truth = [0.01, 400.0, 25.0];
        let xs = [
            [7e8, 45_000.0, 120.0],
            [1.7e8, 11_000.0, 60.0],
            [2e8, 1_200.0, 284.0],
            [6.7e7, 480.0, 418.0],
            [2.5e7, 166.0, 2990.0],
        ];
        let rows: Vec<([f64; 3], f64)> = xs
            .iter()
            .map(|x| (*x, x.iter().zip(truth).map(|(a, b)| a * b).sum()))
            .collect();
        let got = solve3(&rows).expect("solvable");
        for (g, t) in got.iter().zip(truth) {
            assert!((g - t).abs() / t < 1e-6, "{got:?} vs {truth:?}");
        }
    }

    #[test]
    fn refuses_degenerate_runs() {
        let rows = vec![
            ([1.0, 2.0, 3.0], 1.0),
            ([2.0, 4.0, 6.0], 2.0),
            ([3.0, 6.0, 9.0], 3.0),
        ];
        assert!(solve3(&rows).is_none());
    }
}
