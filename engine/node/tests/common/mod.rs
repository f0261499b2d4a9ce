//! A real local cluster for tests: `engine testnet`, `engine run` child processes, the client
//! API over QUIC, and `/status` over HTTP. Children are killed when the harness drops.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pqdag_crypto::PublicKey;
use pqdag_node::{ClusterFile, NodeConfig};
use pqdag_transport::ClientConnection;
use pqdag_wire::{
    decode, encode, ArchivedClientReply, ArchivedClientStatus, ClientRequest, ClientStatus, ConflictKey, FrameRef, VertexId,
};

pub const ENGINE: &str = env!("CARGO_BIN_EXE_engine");

/// The `engine` binary the cluster runs: `PQDAG_ENGINE` when set (a copy pinned for the run:
/// in a target dir shared by several checkouts, another checkout's build may replace
/// `target/debug/engine` while the tests run), else [`ENGINE`].
pub fn engine() -> String {
    std::env::var("PQDAG_ENGINE").unwrap_or_else(|_| ENGINE.to_owned())
}

/// Multi-process clusters share two cores: tests that run one take this lock so they run one at
/// a time (each is then closer to what it measures).
pub fn cluster_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A metric's value summed over label sets, from Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub children: Vec<Option<Child>>,
    pub configs: Vec<PathBuf>,
    pub clients: Vec<SocketAddr>,
    pub metrics: Vec<SocketAddr>,
    pub keys: Vec<PublicKey>,
}

impl Cluster {
    /// A testnet of `nodes` on ports from `base_port` (node i: base + 20 i, client + 18,
    /// metrics + 19). Keep every test's ports below 32768: the kernel hands ports of its
    /// ephemeral range (32768-60999 by default) to outgoing sockets at random, and one such
    /// socket took a red-team node's fixed port in CI (`Address already in use`, 2026-12-05).
    pub fn new(nodes: usize, base_port: u16) -> Cluster {
        debug_assert!(usize::from(base_port) + 20 * nodes < 32_768, "test ports inside the ephemeral range");
        Self::with_shards(nodes, base_port, 1)
    }

    pub fn with_shards(nodes: usize, base_port: u16, shards: u16) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(engine())
            .args(["testnet", "--nodes", &nodes.to_string(), "--base-port", &base_port.to_string(), "--shards", &shards.to_string(), "--sync", "by-class", "--dir"])
            .arg(dir.path())
            .output()
            .expect("run engine testnet");
        assert!(out.status.success(), "testnet: {}", String::from_utf8_lossy(&out.stderr));
        let configs: Vec<PathBuf> = (0..nodes).map(|i| dir.path().join(format!("node-{i}/config.toml"))).collect();
        let cfgs: Vec<NodeConfig> = configs.iter().map(|c| NodeConfig::load(c).expect("config")).collect();
        let cluster = ClusterFile::load(&dir.path().join("cluster.toml")).expect("cluster");
        Cluster {
            clients: cfgs.iter().map(|c| c.client_addr).collect(),
            metrics: cfgs.iter().map(|c| c.metrics_addr).collect(),
            keys: cluster.public_keys().expect("keys"),
            children: (0..nodes).map(|_| None).collect(),
            configs,
            dir,
        }
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}.log"))
    }

    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    /// Starts node `i` with extra `engine run` arguments (e.g. `--byzantine flip-votes`).
    pub fn start_with(&mut self, i: usize, extra: &[&str]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).expect("log");
        let child = Command::new(engine())
            .args(["run", "--config"])
            .arg(&self.configs[i])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn engine run");
        self.children[i] = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.children.len() {
            self.start(i);
        }
        for i in 0..self.children.len() {
            self.wait_healthy(i, Duration::from_secs(60));
        }
    }

    /// Waits until node `i` answers `/ready` with 200 (caught up, accepts submissions).
    pub fn wait_ready(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(self.http(i, "/ready"), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {i} not ready after {timeout:?}; log:\n{}", std::fs::read_to_string(self.log_path(i)).unwrap_or_default());
    }

    /// The `engine` binary with the cluster file: for `engine submit` / `engine tail`.
    pub fn cluster_file(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn stop(&mut self, i: usize) -> bool {
        let Some(mut c) = self.children[i].take() else { return true };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn http(&self, i: usize, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.metrics[i], Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Some((code, body))
    }

    pub fn status(&self, i: usize) -> serde_json::Value {
        let (_, body) = self.http(i, "/status").unwrap_or((0, "{}".into()));
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until node `i` is healthy and ready (caught up: it answers submissions and status
    /// queries instead of `NotReady`).
    pub fn wait_healthy(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(self.http(i, "/health"), Some((200, _))) && matches!(self.http(i, "/ready"), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {i} not healthy after {timeout:?}; log:\n{}", std::fs::read_to_string(self.log_path(i)).unwrap_or_default());
    }

    /// Waits until node `i` has restored its store and runs its shards, healthy or not (a
    /// Byzantine node may be disconnected by the honest ones as soon as it misbehaves).
    pub fn wait_running(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((code, body)) = self.http(i, "/health") {
                if code == 200 || !body.contains("starting") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {i} not running after {timeout:?}; log:\n{}", std::fs::read_to_string(self.log_path(i)).unwrap_or_default());
    }

    /// Waits until every listed node reports the same finalized count and digest, with nothing
    /// processing; returns (finalized, digest).
    pub fn wait_converged(&self, nodes: &[usize], timeout: Duration) -> (u64, String) {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = nodes.iter().map(|i| self.status(*i)).collect::<Vec<_>>();
            let first = &last[0];
            let same = last.iter().all(|s| s["finalized"] == first["finalized"] && s["finalized_set_digest"] == first["finalized_set_digest"]);
            if same && first["finalized"].as_u64().unwrap_or(0) > 0 && last.iter().all(|s| s["processing"].as_u64() == Some(0)) {
                return (first["finalized"].as_u64().unwrap_or(0), first["finalized_set_digest"].as_str().unwrap_or("").to_string());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let tails: String = nodes
            .iter()
            .map(|i| {
                let log = std::fs::read_to_string(self.log_path(*i)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                format!("--- node-{i} log, last 40 lines ---\n{}\n", lines[lines.len().saturating_sub(40)..].join("\n"))
            })
            .collect();
        panic!("nodes {nodes:?} did not converge: {last:#?}\n{tails}");
    }

    /// The testnet's client identity (`DIR/client/client.key`), which every node accepts.
    pub fn client_key(&self) -> std::sync::Arc<pqdag_crypto::Keypair> {
        let path = self.dir.path().join("client/client.key");
        std::sync::Arc::new(pqdag_crypto::identity::load_keypair_file(&path).expect("testnet client key"))
    }

    /// Runs `f` with client connections to the given nodes, inside a glommio executor thread.
    pub fn with_clients<T: Send + 'static>(
        &self,
        nodes: &[usize],
        f: impl FnOnce(Vec<ClientConnection>) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
    ) -> T {
        let targets: Vec<(SocketAddr, PublicKey)> = nodes.iter().map(|i| (self.clients[*i], self.keys[*i].clone())).collect();
        let me = self.client_key();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let mut conns = Vec::new();
                for (addr, key) in targets {
                    // A handshake can miss its 10 s on a saturated 2-core machine (seen rarely in
                    // `byzantine::withheld_responses_are_detected_and_excluded`): try three times,
                    // and say so, so that a slow accept stays visible.
                    let mut attempt = 0;
                    let conn = loop {
                        attempt += 1;
                        match ClientConnection::connect(addr, key.clone(), me.clone(), Duration::from_secs(10)).await {
                            Ok(c) => break c,
                            Err(e) if attempt < 3 => eprintln!("client connect to {addr}: {e:?}, attempt {attempt} of 3"),
                            Err(e) => panic!("client connect to {addr}: {e:?} after 3 attempts"),
                        }
                    };
                    conns.push(conn);
                }
                f(conns).await
            })
            .expect("executor")
            .join()
            .expect("client thread")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
    }
}

/// Submits a payload; returns its vertex id, or the error code on refusal.
pub async fn submit(c: &ClientConnection, tag: u64, payload: Vec<u8>, key: ConflictKey) -> Result<VertexId, String> {
    let bytes = encode(&ClientRequest::Submit { tag, payload, conflict_keys: vec![key] }).expect("encode");
    let reply = c.submit(bytes, Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
    match decode(&reply) {
        Ok(FrameRef::ClientReply(ArchivedClientReply::Submitted { id, .. })) => Ok(VertexId(id.0)),
        Ok(FrameRef::ClientReply(ArchivedClientReply::Error { code, message, .. })) => Err(format!("{code:?}: {}", message.as_str())),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Statuses of `ids` as one node sees them.
pub async fn statuses(c: &ClientConnection, ids: &[VertexId]) -> Vec<ClientStatus> {
    let mut out = Vec::new();
    for chunk in ids.chunks(pqdag_wire::CLIENT_STATUS_IDS_MAX) {
        let bytes = encode(&ClientRequest::Status { tag: 1, ids: chunk.to_vec() }).expect("encode");
        let reply = c.submit(bytes, Duration::from_secs(10)).await.expect("status request");
        let Ok(FrameRef::ClientReply(ArchivedClientReply::Statuses { statuses, .. })) = decode(&reply) else { panic!("bad status reply") };
        out.extend(statuses.iter().map(|s| match s {
            ArchivedClientStatus::Unknown => ClientStatus::Unknown,
            ArchivedClientStatus::Processing => ClientStatus::Processing,
            ArchivedClientStatus::Rejected => ClientStatus::Rejected,
            ArchivedClientStatus::Final { shard, position } => ClientStatus::Final { shard: shard.to_native(), position: position.to_native() },
        }));
    }
    out
}

pub fn key(n: u64) -> ConflictKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k[8] = 0xc0;
    ConflictKey(k)
}

pub fn export(config: &Path) -> Vec<u8> {
    let out = Command::new(ENGINE).args(["export", "--format", "jsonl", "--out", "-", "--config"]).arg(config).output().expect("export");
    assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
