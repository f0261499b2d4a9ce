//! `bench`: one command that stands up a local pqdag cluster, loads it with `loadgen`, watches
//! every node's `/metrics` once per second, stops the nodes, checks that they agree on the
//! finalized set, and writes `report.json`, `report.md` and SVG plots.
//!
//! It builds nothing: `engine` and `loadgen` must sit next to the `bench` executable
//! (`cargo build --release -p pqdag-node -p pqdag-tools`). Nodes are children of `bench` and die
//! with it: on an error, a panic, Ctrl-C (SIGINT), SIGTERM, or even SIGKILL of `bench`
//! (`PR_SET_PDEATHSIG`).

use std::path::PathBuf;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pqdag_node::{ClusterFile, NodeConfig};
use pqdag_tools::bench::args::Args;
use pqdag_tools::bench::charts::plots;
use pqdag_tools::bench::http;
use pqdag_tools::bench::markdown::markdown;
use pqdag_tools::bench::procs::{machine_cpu_ms, machine_info, proc_cpu_rss, tail, testnet_ports_free, timestamp, Children};
use pqdag_tools::bench::prom::NodeMetrics;
use pqdag_tools::bench::report::{build_report, ReportCtx};
use pqdag_tools::bench::sample::{dir_bytes, point, progress, ready, scrape, Node, Tick};
use pqdag_tools::bench::sweep;
use serde_json::Value;

/// A public key as `client_keys` takes it (hex).
fn hex_key(kp: &pqdag_crypto::Keypair) -> String {
    kp.public().as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(spec) = &args.phases {
        // The schedule sets the load's length and mean rate (the report's headline figures).
        match pqdag_tools::schedule::Schedule::parse(spec) {
            Ok(s) => {
                args.duration = s.duration();
                args.rate = s.mean_rate();
            }
            Err(e) => {
                eprintln!("bench: error: --phases: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let result = match &args.sweep {
        Some(rates) => sweep(&args, rates),
        None => run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--sweep`: [`run`] once per rate into `OUT/rate-R`, then the sweep table and plot. A rate
/// whose run errors stops the sweep (the cluster could not even run); one whose checks fail is
/// reported as such and the sweep goes on.
fn sweep(args: &Args, rates: &str) -> Result<bool, String> {
    let rates = sweep::parse_rates(rates)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("bench-out").join(format!("sweep-{}", timestamp())));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut points = Vec::new();
    let mut all_ok = true;
    for rate in rates {
        let dir = out.join(format!("rate-{rate}"));
        let mut a = args.clone();
        a.rate = rate;
        a.sweep = None;
        a.out = Some(dir.clone());
        eprintln!("bench: sweep: {rate}/s into {}", dir.display());
        let ok = run(&a)?;
        all_ok &= ok;
        let report: Value = std::fs::read_to_string(dir.join("report.json"))
            .map_err(|e| format!("{}: {e}", dir.join("report.json").display()))
            .and_then(|s| serde_json::from_str(&s).map_err(|e| format!("report.json of {rate}/s: {e}")))?;
        points.push(sweep::point(rate, &report, ok));
    }
    let md = sweep::write(&out, args.nodes, &points, args.sweep_p99_ms)?;
    println!("{md}");
    eprintln!("bench: wrote {}/sweep.json, sweep.md, sweep.svg", out.display());
    Ok(all_ok)
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
    // The crypto floor of this machine, measured before any node starts (~50 ms).
    let floor = pqdag_tools::bench::floor::measure(200);
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
        .args(["testnet", "--nodes", &args.nodes.to_string(), "--base-port", &base_port.to_string(), "--shards", &args.shards.to_string(), "--sync", &args.sync, "--dir"])
        .arg(&cluster_dir)
        .output()
        .map_err(|e| format!("{}: {e}", engine.display()))?;
    if !st.status.success() {
        return Err(format!("engine testnet failed: {}", String::from_utf8_lossy(&st.stderr).trim()));
    }
    let cluster_toml = cluster_dir.join("cluster.toml");
    let mut cluster = ClusterFile::load(&cluster_toml).map_err(|e| e.to_string())?;
    cluster.params.max_batch = args.max_batch as usize;
    if let Some(us) = args.batch_linger_us {
        cluster.params.batch_linger_us = Some(us);
    }
    if let Some(ms) = args.lock_round_ms {
        cluster.params.lock_round_ms = ms;
    }
    if let Some(ms) = args.poll_interval_ms {
        cluster.params.poll_interval_ms = Some(ms);
    }
    cluster.save(&cluster_toml).map_err(|e| e.to_string())?;
    // What the nodes will derive from the file (the report says which cadence it measured).
    let cadence = pqdag_node::runtime::params_for(&cluster).ok().map(|p| (p.poll_interval_us, p.batch_linger_us));
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
        }
        cfg.storage.retain_final_secs = args.retain_final_secs;
        cfg.storage.validate(&config).map_err(|e| e.to_string())?;
        if client_pub.is_some() || args.retain_final_secs > 0 {
            cfg.save(&config).map_err(|e| e.to_string())?;
        }
        let data_dir = if cfg.data_dir.is_absolute() { cfg.data_dir.clone() } else { config.parent().map(|d| d.join(&cfg.data_dir)).unwrap_or_else(|| cfg.data_dir.clone()) };
        nodes.push(Node { name: n.name.clone(), metrics: cfg.metrics_addr, log: logs.join(format!("{}.log", n.name)), config, data_dir });
    }

    if let Some(bp) = &args.byzantine {
        if bp.node >= nodes.len() || nodes.len() < 4 {
            return Err(format!("--byzantine names node {} of a {}-node cluster (one Byzantine node needs N >= 4)", bp.node, nodes.len()));
        }
    }
    // Client addresses of the honest nodes (loadgen's targets under --byzantine).
    let honest_clients: Vec<String> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| args.byzantine.as_ref().is_none_or(|b| b.node != *i))
        .filter_map(|(_, n)| NodeConfig::load(&cluster_dir.join(&n.name).join("config.toml")).ok().map(|c| format!("{}={}", n.name, c.client_addr)))
        .collect();
    if let Some(cp) = &args.crash {
        if cp.node >= nodes.len() {
            return Err(format!("--crash names node {} of a {}-node cluster", cp.node, nodes.len()));
        }
    }

    // 2. Start every node.
    let mut children = Children::new(Duration::from_secs(15));
    let mut pids = Vec::new();
    let byz_name = args.byzantine.as_ref().map(|b| format!("node-{}", b.node));
    let run_cmd = |n: &Node| {
        let mut cmd = Command::new(&engine);
        cmd.arg("run").arg("--config").arg(&n.config);
        if let (Some(b), Some(name)) = (&args.byzantine, &byz_name) {
            if &n.name == name {
                cmd.args(["--byzantine", &b.mode]);
                let nice = args.byzantine_nice;
                // SAFETY: setpriority is async-signal-safe and touches no memory of the parent.
                unsafe {
                    cmd.pre_exec(move || {
                        if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
        }
        cmd
    };
    for n in &nodes {
        let pid = children.spawn(&n.name, run_cmd(n), &n.log).map_err(|e| format!("start {}: {e}", n.name))?;
        pids.push(pid);
    }

    // 3. Wait for /ready = 200 everywhere (alive, connected to a majority, caught up).
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
            // `/ready`, not `/health`: a node answers submissions `NotReady` until it has caught
            // up with its peers (~2 s after start), and load sent before that is refused. The
            // `--byzantine` node takes no load and need only run: a query flooder is metered by
            // the honest nodes (its history sync shares the flood's stream credit), so it may
            // never catch up, which is the defence working, not a failed start.
            let byz = args.byzantine.as_ref().is_some_and(|b| b.node == i);
            match http::get(n.metrics, if byz { "/health" } else { "/ready" }, Duration::from_millis(500)) {
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
                .map(|((n, _), a)| format!("  {} (http://{}/ready: {a}); log {}", n.name, n.metrics, n.log.display()))
                .collect();
            return Err(format!("not ready after {health_timeout:.0} s:\n{}", bad.join("\n")));
        }
        sleep_or_stop(Duration::from_millis(250), &stop)?;
    }
    let startup_s = t_health.elapsed().as_secs_f64();
    eprintln!("bench: all {} nodes ready after {startup_s:.1} s", nodes.len());

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
    if let Some(p) = &args.phases {
        cmd.args(["--phases", p]);
    }
    if args.byzantine.is_some() {
        for c in &honest_clients {
            cmd.args(["--client", c]);
            // `--client` only overrides an address; `--only` keeps the load off the attacker.
            if let Some((name, _)) = c.split_once('=') {
                cmd.args(["--only", name]);
            }
        }
    }
    let lg_log = logs.join("loadgen.log");
    let lg_pid = lg.spawn("loadgen", cmd, &lg_log).map_err(|e| format!("start loadgen: {e}"))?;
    let t0 = Instant::now();
    let mut ticks: Vec<Tick> = Vec::new();
    let mut next = t0;
    // --crash: when the node was killed and started again (seconds since t0).
    let mut crash_at: (Option<f64>, Option<f64>) = (None, None);
    let loadgen_status = loop {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted: stopping loadgen and the nodes".into());
        }
        if let Some(cp) = &args.crash {
            let t = t0.elapsed().as_secs_f64();
            if crash_at.0.is_none() && t >= cp.kill_s {
                children.kill9(cp.node).map_err(|e| format!("kill -9 {}: {e}", nodes[cp.node].name))?;
                crash_at.0 = Some(t);
                eprintln!("bench: t={t:.1}s  SIGKILL {}", nodes[cp.node].name);
            }
            if crash_at.0.is_some() && crash_at.1.is_none() && t >= cp.restart_s {
                let n = &nodes[cp.node];
                pids[cp.node] = children.respawn(cp.node, run_cmd(n)).map_err(|e| format!("restart {}: {e}", n.name))?;
                crash_at.1 = Some(t0.elapsed().as_secs_f64());
                eprintln!("bench: t={t:.1}s  restarted {} on its data dir", n.name);
            }
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
                ready: nodes.iter().map(|n| ready(n.metrics)).collect(),
                disk: nodes.iter().map(|n| dir_bytes(&n.data_dir)).collect(),
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
    let is_byz = |i: usize| args.byzantine.as_ref().is_some_and(|b| b.node == i);
    // A flooding attacker keeps adding valid vertices the honest nodes finalize, so their sets
    // never match at one instant: freeze it (SIGSTOP) while the honest nodes settle.
    let frozen = args.byzantine.as_ref().map(|b| pids[b.node]);
    if let Some(pid) = frozen {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    }
    let t_agree = Instant::now();
    let statuses = loop {
        let s: Vec<Option<Value>> = nodes
            .iter()
            .map(|n| match http::get(n.metrics, "/status", Duration::from_millis(800)) {
                Ok((200, body)) => serde_json::from_str(&body).ok(),
                _ => None,
            })
            .collect();
        let digests: Vec<Option<&str>> = s.iter().enumerate().filter(|(i, _)| !is_byz(*i)).map(|(_, v)| v.as_ref().and_then(|v| v["finalized_set_digest"].as_str())).collect();
        let agree = digests.iter().all(|d| d.is_some() && *d == digests[0]);
        if agree || t_agree.elapsed() > Duration::from_secs(10) || stop.load(Ordering::Relaxed) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if let Some(pid) = frozen {
        // SAFETY: as above; it must run again to stop cleanly on SIGTERM.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    }
    let digests: Vec<Option<String>> = statuses.iter().map(|v| v.as_ref().and_then(|v| v["finalized_set_digest"].as_str().map(String::from))).collect();
    // Agreement among the honest nodes (a Byzantine node's own view proves nothing).
    let honest_digests: Vec<&Option<String>> = digests.iter().enumerate().filter(|(i, _)| !is_byz(*i)).map(|(_, d)| d).collect();
    let agree = !honest_digests.is_empty() && honest_digests.iter().all(|d| d.is_some() && *d == honest_digests[0]);

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
    let ctx = ReportCtx { args, machine: &machine, base_port, startup_s, load_s, window_s, nodes: &nodes, pids: &pids, baseline: &baseline, end: &end, ticks: &ticks, lg: &lg_summary, digests: &digests, statuses: &statuses, agree, crash_at, floor, cadence };
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
    let ok = problems.is_empty();
    remove_data(&nodes, ok, args.keep_data);
    Ok(ok)
}

/// After a run whose checks passed, each node's store goes unless `--keep-data` (a sweep or a
/// series of runs would otherwise fill the disk at ~0.5 GB a run); after a failed one it stays
/// for diagnosis. The nodes have stopped: nothing writes there any more.
fn remove_data(nodes: &[Node], ok: bool, keep: bool) {
    if keep || !ok {
        let why = if keep { "--keep-data" } else { "a check failed" };
        eprintln!("bench: kept the nodes' data directories ({why}): {}", nodes.first().map(|n| n.data_dir.display().to_string()).unwrap_or_default());
        return;
    }
    let mut freed = 0.0;
    for n in nodes {
        let bytes = dir_bytes(&n.data_dir).unwrap_or(0.0);
        match std::fs::remove_dir_all(&n.data_dir) {
            Ok(()) => freed += bytes,
            Err(e) => eprintln!("bench: could not remove {}: {e}", n.data_dir.display()),
        }
    }
    eprintln!("bench: removed the nodes' data directories ({:.0} MiB; --keep-data keeps them)", freed / 1048576.0);
}
