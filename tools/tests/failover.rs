//! `loadgen` fails over: a real 3-node testnet (`engine testnet` + three `engine run` children),
//! `loadgen` at 100/s for 8 s, and node-2 killed with SIGKILL a second into the load. Every
//! payload must still be acknowledged and finalized by the two survivors (`lost == 0`), through
//! resubmissions (`retries > 0`). Without failover, the payloads sent to node-2 are lost.
//!
//! The `engine` binary is not built for this package: the debug one is built with cargo once
//! (as `client/tests/cluster.rs` does), unless `PQDAG_ENGINE` names one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::engine;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");


/// Kills the children left when the test ends (pass or panic) and removes the directory.
struct Nodes {
    dir: PathBuf,
    children: Vec<Option<Child>>,
    metrics: Vec<SocketAddr>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Nodes {
    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{i}.log"))).unwrap_or_default()
    }

    fn http(&self, i: usize, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect_timeout(&self.metrics[i], Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.split_whitespace().nth(1)?.parse().ok()
    }

    fn wait_ready(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.http(i, "/health") == Some(200) && self.http(i, "/ready") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {i} not ready after {timeout:?}; log:\n{}", self.log(i));
    }
}

fn start(engine: &Path, base_port: u16) -> Nodes {
    let dir = std::env::temp_dir().join(format!("pqdag-loadgen-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(engine)
        .args(["testnet", "--nodes", "3", "--base-port", &base_port.to_string(), "--dir"])
        .arg(&dir)
        .output()
        .expect("engine testnet");
    assert!(out.status.success(), "testnet: {}", String::from_utf8_lossy(&out.stderr));
    let metrics = (0..3)
        .map(|i| pqdag_node::NodeConfig::load(&dir.join(format!("node-{i}/config.toml"))).expect("config").metrics_addr)
        .collect();
    let mut nodes = Nodes { dir, children: Vec::new(), metrics };
    for i in 0..3 {
        let log = std::fs::File::create(nodes.dir.join(format!("node-{i}.log"))).expect("log");
        let child = Command::new(engine)
            .args(["run", "--config"])
            .arg(nodes.dir.join(format!("node-{i}/config.toml")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("engine run");
        nodes.children.push(Some(child));
    }
    for i in 0..3 {
        nodes.wait_ready(i, Duration::from_secs(60));
    }
    nodes
}

#[test]
fn loadgen_fails_over_when_a_node_is_killed() {
    let engine = engine();
    let mut nodes = start(&engine, 31700);
    let json = nodes.dir.join("loadgen.json");
    let t0 = Instant::now();
    let mut lg = Command::new(LOADGEN)
        .arg("--cluster")
        .arg(nodes.dir.join("cluster.toml"))
        .args(["--rate", "100", "--duration", "8", "--drain", "30", "--ack-timeout", "2", "--attempts", "3", "--quiet", "--json"])
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    // A second into the load (loadgen connects first, in well under a second here).
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(mut c) = nodes.children[2].take() {
        c.kill().expect("SIGKILL node-2");
        let _ = c.wait();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = lg.try_wait().expect("wait loadgen") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = lg.kill();
            panic!("loadgen did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = lg.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = lg.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    eprintln!("loadgen ({:.1} s):\n{out}{err}", t0.elapsed().as_secs_f64());
    assert!(status.success(), "loadgen failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("loadgen json")).expect("json");
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"));
    eprintln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    assert!(n("submitted") >= 700, "the load ran: {v}");
    assert!(n("retries") > 0, "node-2's payloads were resubmitted: {v}");
    assert_eq!(n("lost"), 0, "no payload lost: {v}");
    assert_eq!(n("finalized"), n("submitted"), "every payload finalized by the survivors: {v}");
    assert_eq!(n("acknowledged"), n("submitted"), "every payload acknowledged: {v}");
    assert!(n("failed_over") > 0, "some payloads final through another node: {v}");
    // Every existing field is still there (bench reads them).
    for k in ["rejected", "refused", "double_spends_refused", "submit_errors", "throughput_pps", "finality_ms", "finalized_per_second"] {
        assert!(!v[k].is_null(), "field {k} missing: {v}");
    }
    // The survivors are still healthy.
    for i in 0..2 {
        nodes.wait_ready(i, Duration::from_secs(10));
    }
}
