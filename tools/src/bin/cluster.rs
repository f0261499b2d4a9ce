//! `cluster`: start, watch and stop a local testnet of N `engine` processes from a shell.
//!
//! `cluster up --nodes N --dir DIR` writes the testnet (unless DIR/cluster.toml exists), starts
//! every node in the background (logs in DIR/node-i.log, pids in DIR/pids) and returns once every
//! `/health` answers 200. `cluster status --dir DIR` prints each node's `/status`. `cluster down
//! --dir DIR` stops them with SIGTERM (SIGKILL after 15 s) and reports each exit.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use pqdag_node::NodeConfig;
use pqdag_tools::bench::http;

#[derive(Parser)]
#[command(name = "cluster", about = "Start, watch and stop a local pqdag testnet")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write (if needed) and start a local testnet; wait until every node is healthy.
    Up {
        /// Nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Testnet folder.
        #[arg(long)]
        dir: PathBuf,
        /// First port (node i: UDP base+20i, client +18, metrics +19).
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// Shards per node.
        #[arg(long, default_value_t = 1)]
        shards: u16,
        /// Seconds to wait for health.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print every node's /status.
    Status {
        /// Testnet folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop every node (SIGTERM, SIGKILL after 15 s).
    Down {
        /// Testnet folder.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn engine_bin() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("engine"))).unwrap_or_else(|| PathBuf::from("engine"))
}

fn configs(dir: &Path) -> Result<Vec<(PathBuf, NodeConfig)>, String> {
    let mut out = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("node-{i}/config.toml"));
        if !p.exists() {
            break;
        }
        out.push((p.clone(), NodeConfig::load(&p).map_err(|e| e.to_string())?));
    }
    if out.is_empty() {
        return Err(format!("no node-<i>/config.toml in {}", dir.display()));
    }
    Ok(out)
}

fn pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids")).unwrap_or_default().split_whitespace().filter_map(|s| s.parse().ok()).collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
}

fn up(nodes: usize, dir: &Path, base_port: u16, shards: u16, timeout: u64) -> Result<String, String> {
    if pids(dir).into_iter().any(alive) {
        return Err(format!("nodes of {} are already running: `cluster down --dir {}` first", dir.display(), dir.display()));
    }
    if !dir.join("cluster.toml").exists() {
        let st = Command::new(engine_bin())
            .args(["testnet", "--nodes", &nodes.to_string(), "--base-port", &base_port.to_string(), "--shards", &shards.to_string(), "--dir"])
            .arg(dir)
            .status()
            .map_err(|e| format!("{}: {e}", engine_bin().display()))?;
        if !st.success() {
            return Err("engine testnet failed".into());
        }
    }
    let cfgs = configs(dir)?;
    let mut started = Vec::new();
    for (i, (path, _)) in cfgs.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("node-{i}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(engine_bin())
            .args(["run", "--config"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start node-{i}: {e}"))?;
        started.push(child.id());
    }
    std::fs::write(dir.join("pids"), started.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    for (i, (_, cfg)) in cfgs.iter().enumerate() {
        loop {
            if matches!(http::get(cfg.metrics_addr, "/health", Duration::from_secs(2)), Ok((200, _))) {
                break;
            }
            if !alive(started[i]) {
                return Err(format!("node-{i} exited; see {}", dir.join(format!("node-{i}.log")).display()));
            }
            if Instant::now() > deadline {
                return Err(format!("node-{i} not healthy after {timeout} s; see {}", dir.join(format!("node-{i}.log")).display()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(format!("{} nodes healthy (pids in {})", cfgs.len(), dir.join("pids").display()))
}

fn status(dir: &Path) -> Result<String, String> {
    let mut out = String::new();
    for (i, (_, cfg)) in configs(dir)?.iter().enumerate() {
        let line = match http::get(cfg.metrics_addr, "/status", Duration::from_secs(2)) {
            Ok((_, body)) => body,
            Err(e) => format!("{{\"error\": \"{e}\"}}"),
        };
        out.push_str(&format!("node-{i} {}\n", line.trim()));
    }
    Ok(out)
}

fn down(dir: &Path) -> Result<String, String> {
    let ps = pids(dir);
    for p in &ps {
        let _ = Command::new("kill").args(["-TERM", &p.to_string()]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while ps.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed: Vec<u32> = ps.iter().copied().filter(|p| alive(*p)).collect();
    for p in &killed {
        let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
    }
    let _ = std::fs::remove_file(dir.join("pids"));
    if killed.is_empty() {
        Ok(format!("{} nodes stopped cleanly", ps.len()))
    } else {
        Err(format!("{} nodes needed SIGKILL after 15 s: {killed:?}", killed.len()))
    }
}

fn main() -> ExitCode {
    let r = match Cli::parse().cmd {
        Cmd::Up { nodes, dir, base_port, shards, timeout } => up(nodes, &dir, base_port, shards, timeout),
        Cmd::Status { dir } => status(&dir),
        Cmd::Down { dir } => down(&dir),
    };
    match r {
        Ok(m) => {
            println!("{}", m.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
