//! `bench`: one command that stands up a local pqdag cluster, loads it with `loadgen`, watches
//! every node's `/metrics` once per second, stops the nodes, checks that they agree on the
//! finalized set, and writes `report.json`, `report.md` and SVG plots.
//!
//! It builds nothing: `engine` and `loadgen` must sit next to the `bench` executable
//! (`cargo build --release -p pqdag-node -p pqdag-tools`). Nodes are children of `bench` and die
//! with it: on an error, a panic, Ctrl-C (SIGINT), SIGTERM, or even SIGKILL of `bench`
//! (`PR_SET_PDEATHSIG`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pqdag_node::{ClusterFile, NodeConfig};
use pqdag_tools::bench::plot::{cdf_chart, line_chart, Series};
use pqdag_tools::bench::procs::{machine_cpu_ms, machine_info, proc_cpu_rss, tail, testnet_ports_free, timestamp, Children, Ending, MachineInfo};
use pqdag_tools::bench::prom::{bucket_delta, bucket_quantile, NodeMetrics};
use pqdag_tools::bench::http;
use serde_json::{json, Value};

/// ML-DSA-87 sign and verify cost on the reference 2-core machine (criterion, `cargo bench -p
/// benches`), used to express CPU per vertex against the signature floor.
const SIGN_US: f64 = 147.0;
const VERIFY_US: f64 = 69.0;

#[derive(Parser, Debug, Clone)]
#[command(name = "bench", about = "Run a local pqdag cluster under loadgen and report throughput, latency, CPU, memory and agreement")]
struct Args {
    /// Nodes in the local cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Open-loop submissions per second (loadgen --rate).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of load (loadgen --duration).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Output folder [default: bench-out/<UTC timestamp>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// First port of the testnet (node i: UDP base+20i, client +18, metrics +19)
    /// [default: the first free range from 27000 up].
    #[arg(long)]
    base_port: Option<u16>,
    /// Payload bytes per submission (loadgen --payload-bytes).
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Fraction of double-spending submissions (loadgen --conflict-ratio).
    #[arg(long, default_value_t = 0.0)]
    conflict_ratio: f64,
    /// Store sync policy of the nodes (engine testnet --sync).
    #[arg(long, default_value = "every-batch", value_parser = ["every-batch", "wal-no-sync"])]
    sync: String,
    /// Seconds loadgen waits for outstanding decisions after the load (loadgen --drain).
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Client identity loadgen proves (loadgen --key); its public key is added to every node's
    /// `client_keys` [default: the testnet's `client/client.key`].
    #[arg(long)]
    key: Option<PathBuf>,
    /// Seconds to wait for every node's /health = 200 [default: 60, or 1.5 per node above 40:
    /// 100 processes on a 2-core machine need ~N^2/2 post-quantum handshakes to mesh].
    #[arg(long)]
    health_timeout: Option<f64>,
}

/// A public key as `client_keys` takes it (hex).
fn hex_key(kp: &pqdag_crypto::Keypair) -> String {
    kp.public().as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// One scrape of one node.
#[derive(Debug, Clone)]
struct NodePoint {
    cpu_ms: f64,
    rss: f64,
    bytes_in: f64,
    bytes_out: f64,
    finalized: f64,
}

/// One tick of the sampler.
#[derive(Debug, Clone)]
struct Tick {
    /// Seconds since loadgen was started.
    t: f64,
    nodes: Vec<Option<NodePoint>>,
    loadgen: Option<(f64, f64)>,
    machine: Option<(f64, f64)>,
    own_cpu_ms: f64,
}

struct Node {
    name: String,
    config: PathBuf,
    metrics: SocketAddr,
    log: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scrape(addr: SocketAddr) -> Option<NodeMetrics> {
    match http::get(addr, "/metrics", Duration::from_millis(800)) {
        Ok((200, body)) => Some(NodeMetrics::from_text(&body)),
        _ => None,
    }
}

fn point(m: &NodeMetrics) -> NodePoint {
    NodePoint { cpu_ms: m.cpu_ms, rss: m.rss_bytes, bytes_in: m.bytes_in, bytes_out: m.bytes_out, finalized: m.finalized }
}

fn sleep_or_stop(d: Duration, stop: &AtomicBool) -> Result<(), String> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted: stopping the nodes".into());
        }
        std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
    }
    Ok(())
}

fn pick_base_port(nodes: usize) -> Result<u16, String> {
    let span = ((nodes as u32 * 20).div_ceil(1000) * 1000).max(1000);
    let mut base = 27_000u32;
    while base + span <= 65_000 {
        if testnet_ports_free(base as u16, nodes) {
            return Ok(base as u16);
        }
        base += span;
    }
    Err(format!("no free port range for {nodes} nodes from 27000 up: give --base-port"))
}

/// Returns Ok(true) when everything went well, Ok(false) when the run completed but a check
/// failed (disagreeing digests, a node that exited badly or had to be killed).
fn run(args: &Args) -> Result<bool, String> {
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let bin_dir = exe.parent().ok_or("own path has no parent")?.to_path_buf();
    let engine = bin_dir.join("engine");
    let loadgen = bin_dir.join("loadgen");
    for b in [&engine, &loadgen] {
        if !b.is_file() {
            return Err(format!("{} not found next to bench: build it with `cargo build --release -p pqdag-node -p pqdag-tools`", b.display()));
        }
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("bench-out").join(timestamp()));
    let cluster_dir = out.join("cluster");
    if cluster_dir.exists() {
        return Err(format!("{} exists: choose another --out", cluster_dir.display()));
    }
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let base_port = match args.base_port {
        Some(p) => {
            if !testnet_ports_free(p, args.nodes) {
                return Err(format!("ports from {p} (20 per node) are not all free: another cluster is running there; pick another --base-port"));
            }
            p
        }
        None => pick_base_port(args.nodes)?,
    };

    // Ctrl-C / SIGTERM: first one asks for an orderly stop, a second Ctrl-C exits at once (the
    // nodes still get SIGTERM through PR_SET_PDEATHSIG).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }

    let machine = machine_info();
    eprintln!(
        "bench: {} nodes, {} submissions/s for {} s, out {} (ports from {base_port}); machine: {} x {}, load {:.2}",
        args.nodes,
        args.rate,
        args.duration,
        out.display(),
        machine.nproc,
        machine.cpu_model,
        machine.loadavg_1m_at_start
    );

    // 1. The testnet files.
    let st = Command::new(&engine)
        .args(["testnet", "--nodes", &args.nodes.to_string(), "--base-port", &base_port.to_string(), "--shards", "1", "--sync", &args.sync, "--dir"])
        .arg(&cluster_dir)
        .output()
        .map_err(|e| format!("{}: {e}", engine.display()))?;
    if !st.status.success() {
        return Err(format!("engine testnet failed: {}", String::from_utf8_lossy(&st.stderr).trim()));
    }
    let cluster_toml = cluster_dir.join("cluster.toml");
    let cluster = ClusterFile::load(&cluster_toml).map_err(|e| e.to_string())?;
    let client_pub = match &args.key {
        Some(k) => Some(hex_key(&*pqdag_tools::targets::client_key(&cluster_toml, Some(k))?)),
        None => None,
    };
    let mut nodes = Vec::new();
    for n in &cluster.nodes {
        let config = cluster_dir.join(&n.name).join("config.toml");
        let mut cfg = NodeConfig::load(&config).map_err(|e| e.to_string())?;
        if let Some(k) = &client_pub {
            cfg.client_keys.push(k.clone());
            cfg.save(&config).map_err(|e| e.to_string())?;
        }
        nodes.push(Node { name: n.name.clone(), metrics: cfg.metrics_addr, log: logs.join(format!("{}.log", n.name)), config });
    }

    // 2. Start every node.
    let mut children = Children::new(Duration::from_secs(15));
    let mut pids = Vec::new();
    for n in &nodes {
        let mut cmd = Command::new(&engine);
        cmd.arg("run").arg("--config").arg(&n.config);
        let pid = children.spawn(&n.name, cmd, &n.log).map_err(|e| format!("start {}: {e}", n.name))?;
        pids.push(pid);
    }

    // 3. Wait for /health = 200 everywhere.
    let t_health = Instant::now();
    let mut healthy = vec![false; nodes.len()];
    let mut last_answer = vec![String::from("no answer yet"); nodes.len()];
    while healthy.iter().any(|h| !h) {
        if let Some((name, how, log)) = children.exited().into_iter().next() {
            return Err(format!("{name} exited during start-up ({how}); its log {}:\n{}", log.display(), tail(&log, 15)));
        }
        for (i, n) in nodes.iter().enumerate() {
            if healthy[i] {
                continue;
            }
            match http::get(n.metrics, "/health", Duration::from_millis(500)) {
                Ok((200, _)) => healthy[i] = true,
                Ok((code, body)) => last_answer[i] = format!("HTTP {code}: {}", body.trim()),
                Err(e) => last_answer[i] = e.to_string(),
            }
        }
        let health_timeout = args.health_timeout.unwrap_or(60f64.max(1.5 * args.nodes as f64));
        if t_health.elapsed().as_secs_f64() > health_timeout {
            let bad: Vec<String> = nodes
                .iter()
                .zip(&healthy)
                .zip(&last_answer)
                .filter(|((_, h), _)| !**h)
                .map(|((n, _), a)| format!("  {} (http://{}/health: {a}); log {}", n.name, n.metrics, n.log.display()))
                .collect();
            return Err(format!("not healthy after {health_timeout:.0} s:\n{}", bad.join("\n")));
        }
        sleep_or_stop(Duration::from_millis(250), &stop)?;
    }
    let startup_s = t_health.elapsed().as_secs_f64();
    eprintln!("bench: all {} nodes healthy after {startup_s:.1} s", nodes.len());

    // 4. Baseline, then loadgen, sampling every second.
    let baseline: Vec<Option<NodeMetrics>> = nodes.iter().map(|n| scrape(n.metrics)).collect();
    let loadgen_json = out.join("loadgen.json");
    let mut lg = Children::new(Duration::from_secs(5));
    let mut cmd = Command::new(&loadgen);
    cmd.arg("--cluster")
        .arg(&cluster_toml)
        .args(["--rate", &args.rate.to_string(), "--duration", &args.duration.to_string(), "--drain", &args.drain.to_string()])
        .args(["--payload-bytes", &args.payload_bytes.to_string(), "--conflict-ratio", &args.conflict_ratio.to_string(), "--quiet", "--json"])
        .arg(&loadgen_json);
    if let Some(k) = &args.key {
        cmd.arg("--key").arg(k);
    }
    let lg_log = logs.join("loadgen.log");
    let lg_pid = lg.spawn("loadgen", cmd, &lg_log).map_err(|e| format!("start loadgen: {e}"))?;
    let t0 = Instant::now();
    let mut ticks: Vec<Tick> = Vec::new();
    let mut next = t0;
    let loadgen_status = loop {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted: stopping loadgen and the nodes".into());
        }
        let now = Instant::now();
        if now >= next {
            next += Duration::from_secs(1);
            let tick = Tick {
                t: t0.elapsed().as_secs_f64(),
                nodes: nodes.iter().map(|n| scrape(n.metrics).as_ref().map(point)).collect(),
                loadgen: proc_cpu_rss(lg_pid),
                machine: machine_cpu_ms(),
                own_cpu_ms: proc_cpu_rss(std::process::id()).map(|c| c.0).unwrap_or(0.0),
            };
            if tick.t >= 1.0 && (tick.t as u64) % 10 == 0 {
                progress(&tick, ticks.last(), &nodes);
            }
            ticks.push(tick);
            let gone = children.exited();
            if !gone.is_empty() {
                // A node that leaves mid-run invalidates the measurement: stop here.
                let list: Vec<String> = gone.iter().map(|(name, how, log)| format!("  {name}: {how}; log {}:\n{}", log.display(), tail(log, 5))).collect();
                let hint = if gone.iter().any(|g| g.1 == "exit code 0") {
                    "\n(exit code 0 is the node's clean stop on SIGINT/SIGTERM: something outside bench signalled it, e.g. a `pkill -f engine` on this host)"
                } else {
                    ""
                };
                return Err(format!("{} node(s) exited during the run at t={:.0} s, aborting:\n{}{hint}", gone.len(), t0.elapsed().as_secs_f64(), list.join("\n")));
            }
        }
        if let Some(st) = lg.try_wait(0) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let load_s = t0.elapsed().as_secs_f64();
    drop(lg);
    if !loadgen_status.success() {
        return Err(format!("loadgen failed ({loadgen_status}); its log {}:\n{}", lg_log.display(), tail(&lg_log, 15)));
    }
    let lg_summary: Value = std::fs::read_to_string(&loadgen_json)
        .map_err(|e| format!("{}: {e}", loadgen_json.display()))
        .and_then(|s| serde_json::from_str(&s).map_err(|e| format!("{}: {e}", loadgen_json.display())))?;

    // 5. Agreement: /status digests, polled until equal or 10 s.
    let t_agree = Instant::now();
    let statuses = loop {
        let s: Vec<Option<Value>> = nodes
            .iter()
            .map(|n| match http::get(n.metrics, "/status", Duration::from_millis(800)) {
                Ok((200, body)) => serde_json::from_str(&body).ok(),
                _ => None,
            })
            .collect();
        let digests: Vec<Option<&str>> = s.iter().map(|v| v.as_ref().and_then(|v| v["finalized_set_digest"].as_str())).collect();
        let agree = digests.iter().all(|d| d.is_some() && *d == digests[0]);
        if agree || t_agree.elapsed() > Duration::from_secs(10) || stop.load(Ordering::Relaxed) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let digests: Vec<Option<String>> = statuses.iter().map(|v| v.as_ref().and_then(|v| v["finalized_set_digest"].as_str().map(String::from))).collect();
    let agree = !digests.is_empty() && digests.iter().all(|d| d.is_some() && *d == digests[0]);

    // The end of the measured window: after loadgen and after the nodes agreed (or 10 s), so
    // a node that caught up late is counted with its catch-up work.
    let window_s = t0.elapsed().as_secs_f64();
    // Keep each node's last /metrics text for diagnosis (OUT/metrics/node-i.prom).
    let metrics_dir = out.join("metrics");
    let _ = std::fs::create_dir_all(&metrics_dir);
    let end: Vec<Option<NodeMetrics>> = nodes
        .iter()
        .map(|n| match http::get(n.metrics, "/metrics", Duration::from_millis(800)) {
            Ok((200, body)) => {
                let _ = std::fs::write(metrics_dir.join(format!("{}.prom", n.name)), &body);
                Some(NodeMetrics::from_text(&body))
            }
            _ => None,
        })
        .collect();
    for (n, st) in nodes.iter().zip(&statuses) {
        if let Some(v) = st {
            let _ = std::fs::write(metrics_dir.join(format!("{}.status.json", n.name)), v.to_string());
        }
    }
    // 6. Stop the nodes.
    eprintln!("bench: load done after {load_s:.1} s, nodes compared after {window_s:.1} s; stopping the nodes (SIGTERM, SIGKILL after 15 s)");
    let stops = children.stop_all(Duration::from_secs(15));

    // 7. Report.
    let ctx = ReportCtx { args, machine: &machine, base_port, startup_s, load_s, window_s, nodes: &nodes, pids: &pids, baseline: &baseline, end: &end, ticks: &ticks, lg: &lg_summary, digests: &digests, statuses: &statuses, agree };
    let (report, mut problems) = build_report(&ctx, &stops);
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report).unwrap_or_default()).map_err(|e| format!("report.json: {e}"))?;
    let md = markdown(&report);
    std::fs::write(out.join("report.md"), &md).map_err(|e| format!("report.md: {e}"))?;
    if let Err(e) = plots(&out, &ctx) {
        problems.push(format!("plots: {e}"));
        eprintln!("bench: plots failed: {e}");
    }
    println!("{md}");
    eprintln!("bench: wrote {}/report.json, report.md, *.svg", out.display());
    Ok(problems.is_empty())
}

fn progress(tick: &Tick, prev: Option<&Tick>, nodes: &[Node]) {
    let Some(prev) = prev else { return };
    let dt = (tick.t - prev.t).max(0.001);
    let rate = match (tick.nodes.first().cloned().flatten(), prev.nodes.first().cloned().flatten()) {
        (Some(a), Some(b)) => (a.finalized - b.finalized) / dt,
        _ => f64::NAN,
    };
    let cpu: f64 = tick.nodes.iter().zip(&prev.nodes).filter_map(|(a, b)| Some((a.as_ref()?.cpu_ms - b.as_ref()?.cpu_ms) / dt / 10.0)).sum();
    if tick.nodes.iter().all(|n| n.is_none()) {
        eprintln!("bench: t={:>4.0}s  no node answers /metrics", tick.t);
        return;
    }
    let rss = tick.nodes.iter().flatten().map(|p| p.rss).fold(0.0, f64::max) / 1048576.0;
    eprintln!("bench: t={:>4.0}s  node-0 finalizes {rate:>6.0}/s  {} nodes use {cpu:>4.0}% of a core  max RSS {rss:.0} MiB", tick.t, nodes.len());
}

struct ReportCtx<'a> {
    args: &'a Args,
    machine: &'a MachineInfo,
    base_port: u16,
    startup_s: f64,
    load_s: f64,
    window_s: f64,
    nodes: &'a [Node],
    pids: &'a [u32],
    baseline: &'a [Option<NodeMetrics>],
    end: &'a [Option<NodeMetrics>],
    ticks: &'a [Tick],
    lg: &'a Value,
    digests: &'a [Option<String>],
    statuses: &'a [Option<Value>],
    agree: bool,
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn build_report(c: &ReportCtx<'_>, stops: &[pqdag_tools::bench::procs::Stopped]) -> (Value, Vec<String>) {
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
        let cpu_ms = (e.cpu_ms - b.cpu_ms).max(0.0);
        let fin = (e.finalized - b.finalized).max(0.0);
        let rss_max = c.ticks.iter().filter_map(|t| t.nodes[i].as_ref().map(|p| p.rss)).fold(e.rss_bytes, f64::max);
        let bytes_out = (e.bytes_out - b.bytes_out).max(0.0);
        let bytes_in = (e.bytes_in - b.bytes_in).max(0.0);
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
            "cpu_seconds": cpu_ms / 1000.0,
            "cpu_pct_of_one_core": r1(cpu_ms / 10.0 / c.window_s),
            "cpu_us_per_finalized_vertex": per(cpu_ms * 1000.0),
            "bytes_out": bytes_out,
            "bytes_in": bytes_in,
            "bytes_out_per_vertex": per(bytes_out),
            "bytes_in_per_vertex": per(bytes_in),
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
    let floor = SIGN_US + (n.saturating_sub(1)) as f64 * VERIFY_US;
    let cluster_cpu_per_vertex = if lg_final > 0.0 { Some(r1(total_cpu_ms * 1000.0 / lg_final)) } else { None };
    let node0_delta = match (c.end.first().cloned().flatten(), c.baseline.first().cloned().flatten()) {
        (Some(e), Some(b)) => bucket_delta(&e.latency_buckets, &b.latency_buckets),
        (Some(e), None) => e.latency_buckets,
        _ => Vec::new(),
    };
    let q = |p: f64| bucket_quantile(&node0_delta, p).map(|s| if s.is_finite() { json!(s * 1000.0) } else { json!("+Inf") });
    let nfr = {
        let p95 = c.lg["finality_ms"]["p95"].as_f64().unwrap_or(f64::NAN);
        let tput = c.lg["throughput_vps"].as_f64().unwrap_or(0.0);
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
            "nodes": n, "rate": c.args.rate, "duration_s": c.args.duration, "drain_s": c.args.drain,
            "payload_bytes": c.args.payload_bytes, "conflict_ratio": c.args.conflict_ratio, "sync": c.args.sync,
            "base_port": c.base_port, "startup_to_healthy_s": r1(c.startup_s), "load_s": r1(c.load_s), "window_s": r1(c.window_s),
            "version": env!("CARGO_PKG_VERSION"),
        },
        "machine": c.machine,
        "loadgen": c.lg,
        "nodes": node_rows,
        "cluster": {
            "node_cpu_seconds_total": total_cpu_ms / 1000.0,
            "cpu_us_per_finalized_vertex_all_nodes": cluster_cpu_per_vertex,
            "mldsa_floor_us_per_vertex": floor,
            "mldsa_floor_note": format!("1 ML-DSA-87 sign ({SIGN_US} us) + {} verifies ({VERIFY_US} us) per vertex on this cluster size; per-poll query/response signatures come on top", n.saturating_sub(1)),
            "rss_max_mib_any_node": r1(max_rss / 1048576.0),
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
        "problems": problems,
        "timeline": c.ticks.iter().map(|t| json!({
            "t": r1(t.t),
            "nodes": t.nodes.iter().map(|p| p.as_ref().map(|p| json!({"cpu_ms": p.cpu_ms, "rss": p.rss, "bytes_in": p.bytes_in, "bytes_out": p.bytes_out, "finalized": p.finalized}))).collect::<Vec<_>>(),
            "loadgen_cpu_ms": t.loadgen.map(|l| l.0),
            "machine_busy_ms": t.machine.map(|m| m.0),
        })).collect::<Vec<_>>(),
        "node0_finality_latency_buckets": node0_delta.iter().map(|(le, c)| json!([if le.is_finite() { json!(le) } else { json!("+Inf") }, c])).collect::<Vec<_>>(),
    });
    (report, problems)
}

fn fmt_opt(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => match v.as_str() {
            Some(s) => s.to_string(),
            None => "-".into(),
        },
    }
}

fn markdown(r: &Value) -> String {
    let b = &r["bench"];
    let m = &r["machine"];
    let lg = &r["loadgen"];
    let cl = &r["cluster"];
    let mut s = String::new();
    s += &format!(
        "# pqdag bench: {} nodes, {} submissions/s, {} s\n\n",
        b["nodes"], fmt_opt(&b["rate"], 0), fmt_opt(&b["duration_s"], 0)
    );
    s += &format!(
        "Machine: {} CPUs, {} ({}), {:.1} GiB RAM, kernel {}, load average {} at start. Sync `{}`, payload {} B, conflict ratio {}.\n\n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["cpu_flags"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ")).unwrap_or_default(),
        m["mem_total_bytes"].as_f64().unwrap_or(0.0) / 1073741824.0,
        m["kernel"].as_str().unwrap_or("?"),
        fmt_opt(&m["loadavg_1m_at_start"], 2),
        b["sync"].as_str().unwrap_or("?"),
        b["payload_bytes"],
        b["conflict_ratio"],
    );
    s += "| metric | value |\n|---|---|\n";
    s += &format!("| submitted / finalized / rejected / lost | {} / {} / {} / {} |\n", lg["submitted"], lg["finalized"], lg["rejected"], lg["lost"]);
    s += &format!("| refused at submit (double spends / overload), submit errors | {} / {}, {} |\n", lg["double_spends_refused"], lg["refused"], lg["submit_errors"]);
    s += &format!("| throughput (finalized / load seconds) | **{} vertices/s** |\n", fmt_opt(&lg["throughput_vps"], 0));
    let f = &lg["finality_ms"];
    s += &format!(
        "| finality, client-observed (submit to final) | p50 {} ms, **p95 {} ms**, p99 {} ms, max {} ms |\n",
        fmt_opt(&f["p50"], 0), fmt_opt(&f["p95"], 0), fmt_opt(&f["p99"], 0), fmt_opt(&f["max"], 0)
    );
    let nq = &cl["node0_finality_ms_bucket_upper_bound"];
    s += &format!("| finality at node-0 (creation/arrival to final, histogram bucket bound) | p50 <= {} ms, p95 <= {} ms, p99 <= {} ms |\n", fmt_opt(&nq["p50"], 0), fmt_opt(&nq["p95"], 0), fmt_opt(&nq["p99"], 0));
    s += &format!(
        "| CPU per finalized vertex, all nodes | **{} us** (ML-DSA floor {} us: 1 sign + N-1 verifies) |\n",
        fmt_opt(&cl["cpu_us_per_finalized_vertex_all_nodes"], 0), fmt_opt(&cl["mldsa_floor_us_per_vertex"], 0)
    );
    s += &format!("| node CPU total | {} s ({}% of the machine) |\n", fmt_opt(&cl["node_cpu_seconds_total"], 1), fmt_opt(&r["nfr_001"]["cpu_utilization_pct_of_machine"], 1));
    s += &format!("| loadgen CPU | {} s |\n", fmt_opt(&cl["loadgen_cpu_seconds"], 1));
    s += &format!("| machine busy (all processes) / other processes | {}% of all cores / {}% of one core |\n", fmt_opt(&cl["machine_busy_pct_of_all_cores"], 1), fmt_opt(&cl["other_processes_pct_of_one_core"], 1));
    s += &format!("| max RSS of any node | {} MiB |\n", fmt_opt(&cl["rss_max_mib_any_node"], 1));
    s += &format!("| finalized-set digests | {} |\n", if r["agreement"]["agree"].as_bool() == Some(true) { "**all nodes agree**" } else { "**DISAGREE**" });
    s += &format!("| start-up to healthy / loadgen (load + drain) / measured window (to agreement) | {} s / {} s / {} s |\n\n", fmt_opt(&b["startup_to_healthy_s"], 1), fmt_opt(&b["load_s"], 1), fmt_opt(&b["window_s"], 1));

    s += "| node | finalized | CPU s | % of a core | CPU us/vertex | RSS max MiB | out B/vertex | in B/vertex | polls/vertex | exit |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for n in r["nodes"].as_array().into_iter().flatten() {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({} s) |\n",
            n["name"].as_str().unwrap_or("?"),
            fmt_opt(&n["finalized"], 0),
            fmt_opt(&n["cpu_seconds"], 1),
            fmt_opt(&n["cpu_pct_of_one_core"], 0),
            fmt_opt(&n["cpu_us_per_finalized_vertex"], 0),
            fmt_opt(&n["rss_max_mib"], 0),
            fmt_opt(&n["bytes_out_per_vertex"], 0),
            fmt_opt(&n["bytes_in_per_vertex"], 0),
            fmt_opt(&n["polls_per_vertex"], 3),
            n["exit"].as_str().unwrap_or("?"),
            fmt_opt(&n["shutdown_seconds"], 1),
        );
    }
    let nfr = &r["nfr_001"];
    let yn = |v: &Value| if v.as_bool() == Some(true) { "met" } else { "NOT met" };
    s += &format!(
        "\nNFR-001 on this run: finality p95 < 1 s {}; throughput > {} vertices/s {}; memory < 500 MB per node {}; CPU < 50% {} ({}% of the machine).\n",
        yn(&nfr["finality_p95_below_1s"]),
        fmt_opt(&nfr["throughput_target_vps"], 0),
        yn(&nfr["throughput_met"]),
        yn(&nfr["memory_below_500mb_per_node"]),
        yn(&nfr["cpu_below_50pct"]),
        fmt_opt(&nfr["cpu_utilization_pct_of_machine"], 1),
    );
    let problems: Vec<&str> = r["problems"].as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
    if problems.is_empty() {
        s += "\nNo problems: every node exited cleanly after SIGTERM.\n";
    } else {
        s += "\nProblems:\n";
        for p in problems {
            s += &format!("- {p}\n");
        }
    }
    s += "\nPlots: `throughput.svg`, `latency_cdf.svg`, `rss.svg`, `cpu.svg`. Raw data: `report.json` (timeline), `loadgen.json`, `metrics/` (each node's last `/metrics` and `/status`), `logs/`.\n";
    s
}

fn plots(out: &Path, c: &ReportCtx<'_>) -> Result<(), String> {
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
    let f = &c.lg["finality_ms"];
    let qs: Vec<(f64, f64)> = [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)].iter().filter_map(|(k, q)| f[*k].as_f64().filter(|v| *v > 0.0).map(|v| (v, *q))).collect();
    if !qs.is_empty() {
        cdf.push(Series::new("loadgen p50/p95/p99/max (submit to final)", qs));
    }
    cdf_chart(&out.join("latency_cdf.svg"), "Finality latency CDF", &cdf)?;

    // RSS and CPU per node over time.
    let rss: Vec<Series> = (0..c.nodes.len())
        .map(|i| Series::new(c.nodes[i].name.clone(), c.ticks.iter().filter_map(|t| Some((t.t, t.nodes[i].as_ref()?.rss / 1048576.0))).collect()))
        .collect();
    line_chart(&out.join("rss.svg"), "Resident memory per node", "seconds since load start", "RSS, MiB", &rss)?;
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
