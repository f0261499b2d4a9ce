//! The client against REAL node processes: `engine testnet` + `engine run` children (the
//! approach of `engine/node/tests/common/mod.rs`; that harness needs `pqdag-node`, which this
//! crate must not depend on). The debug `engine` binary (the one `cargo test --workspace` has
//! already built for the node's own tests) is built with cargo once, unless `PQDAG_ENGINE`
//! names one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pqdag_client::{blocking, Client, ClientError, ClientOptions, ConflictKey, Decision, NodeTarget};

/// Multi-process clusters share two cores: one at a time.
fn cluster_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine() -> &'static Path {
    static ENGINE: OnceLock<PathBuf> = OnceLock::new();
    ENGINE.get_or_init(|| {
        if let Ok(p) = std::env::var("PQDAG_ENGINE") {
            return PathBuf::from(p);
        }
        // <target>/debug/deps/cluster-<hash> -> <target>
        let exe = std::env::current_exe().expect("test exe");
        let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--locked", "-p", "pqdag-node", "--bin", "engine"])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo build engine");
        assert!(st.success(), "building the engine failed");
        target.join("debug/engine")
    })
}

struct Cluster {
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn start(nodes: usize, base_port: u16) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(engine())
            .args(["testnet", "--nodes", &nodes.to_string(), "--base-port", &base_port.to_string(), "--dir"])
            .arg(dir.path())
            .output()
            .expect("engine testnet");
        assert!(out.status.success(), "testnet: {}", String::from_utf8_lossy(&out.stderr));
        let mut c = Cluster { children: (0..nodes).map(|_| None).collect(), dir };
        for i in 0..nodes {
            c.restart(i);
        }
        c
    }

    /// Starts node `i` (again, after `kill9`: on its data dir), its log appended to `node-i.log`.
    fn restart(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("node-{i}.log"))).expect("log");
        let child = Command::new(engine())
            .args(["run", "--config"])
            .arg(self.dir.path().join(format!("node-{i}/config.toml")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("engine run");
        self.children[i] = Some(child);
    }

    fn cluster_file(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        (0..self.children.len())
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
    }
}

fn opts(preferred: usize) -> ClientOptions {
    ClientOptions {
        preferred,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        decision_timeout: Duration::from_secs(60),
        ..ClientOptions::default()
    }
}

fn key(n: u64) -> ConflictKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k[8] = 0xc1;
    ConflictKey(k)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

/// Connects once the nodes listen (they take a moment to start).
async fn connect_when_up(file: &Path, o: ClientOptions) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Client::from_cluster_file(file, o.clone()).await {
            Ok(c) => return c,
            Err(e @ ClientError::IdentityMismatch { .. }) => panic!("{e}"),
            Err(e) if Instant::now() > deadline => panic!("cluster never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

fn assert_final_with_position(d: &Decision) {
    match d {
        Decision::Final { position, .. } => assert!(*position > 0, "final without a position: {d:?}"),
        other => panic!("expected Final, got {other:?}"),
    }
}

#[test]
fn async_and_blocking_submissions_are_final_and_a_double_spend_has_one_winner() {
    let _serial = cluster_lock();
    let c = Cluster::start(3, 16200);
    let file = c.cluster_file();
    let rt = rt();
    rt.block_on(async {
        let client = connect_when_up(&file, opts(0)).await;
        let mut sub = client.subscribe(None).await.expect("subscribe");
        assert!(matches!(client.subscribe(Some(pqdag_client::Cursor::from_bytes(vec![1]))).await, Err(ClientError::Malformed(_))));
        let mut ids = Vec::new();
        for n in 0..5u64 {
            ids.push(client.submit(format!("async payload {n}").into_bytes(), vec![key(n)]).await.expect("submit"));
        }
        for id in &ids {
            let d = client.wait(*id).await.unwrap_or_else(|e| panic!("wait {id}: {e}\n{}", c.logs()));
            assert_final_with_position(&d);
        }
        // The node's decision feed lists them, each once, with its payload; a second
        // subscription from any event's cursor continues exactly after that event.
        let mut seen = std::collections::HashSet::new();
        let mut seen_vertices = std::collections::HashSet::new();
        let mut feed = Vec::new();
        while !ids.iter().all(|r| seen.contains(&r.tx)) {
            let ev = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("event in time").expect("open").expect("event");
            assert!(seen_vertices.insert(ev.id), "duplicate {} in the feed", ev.id);
            for t in &ev.txs {
                assert!(seen.insert(t.tx), "transaction {} twice in the feed", t.tx);
                if let Some(n) = ids.iter().position(|r| r.tx == t.tx) {
                    assert!(ev.decision.is_final());
                    assert_eq!(t.payload, format!("async payload {n}").into_bytes());
                }
            }
            feed.push(ev);
        }
        let mid = feed.len() / 2;
        let mut resumed = client.subscribe(Some(feed[mid].cursor.clone())).await.expect("resume");
        for want in &feed[mid + 1..] {
            let ev = tokio::time::timeout(Duration::from_secs(10), resumed.next()).await.expect("event in time").expect("open").expect("event");
            assert_eq!(ev.id, want.id, "the resumed feed continues right after its cursor");
            assert_eq!(ev.cursor, want.cursor);
        }
        let vertices: Vec<_> = ids.iter().map(|r| r.vertex).collect();
        let st = client.status(&vertices).await.expect("status");
        assert!(st.iter().all(|s| matches!(s, pqdag_client::Status::Decided(Decision::Final { .. }))), "{st:?}");

        // A double spend: the same key submitted through two nodes at once.
        let other = connect_when_up(&file, opts(1)).await;
        let k = key(1000);
        let (a, b) = tokio::join!(
            client.submit_and_wait(b"spend A".to_vec(), vec![k]),
            other.submit_and_wait(b"spend B".to_vec(), vec![k])
        );
        let outcomes = [a, b];
        let finals = outcomes.iter().filter(|r| matches!(r, Ok((_, Decision::Final { .. })))).count();
        for r in &outcomes {
            assert!(matches!(r, Ok(_) | Err(ClientError::Conflict { .. })), "{r:?}");
        }
        assert_eq!(finals, 1, "exactly one spend wins: {outcomes:?}");
    });
    drop(rt);

    // The blocking client, from a plain thread.
    let client = blocking::Client::from_cluster_file(&file, opts(2)).expect("blocking connect");
    for n in 0..3u64 {
        let (id, d) = client.submit_and_wait(format!("blocking payload {n}").into_bytes(), vec![key(2000 + n)]).expect("submit and wait");
        assert_final_with_position(&d);
        assert!(matches!(client.status(&[id.vertex]).expect("status")[0], pqdag_client::Status::Decided(Decision::Final { .. })));
    }
    let double = client.submit(b"again".to_vec(), vec![key(2000)]);
    assert!(matches!(double, Err(ClientError::Conflict { .. })), "{double:?}");
}

#[test]
fn the_client_fails_over_when_its_node_is_killed() {
    let _serial = cluster_lock();
    let mut c = Cluster::start(3, 16300);
    let file = c.cluster_file();
    let rt = rt();
    let client = rt.block_on(connect_when_up(&file, opts(0)));
    assert_eq!(client.current_node().name, "node-0");
    // Submitted to node 0, still undecided or not when it dies.
    let early: Vec<_> = rt.block_on(async {
        let mut ids = Vec::new();
        for n in 0..3u64 {
            ids.push(client.submit(b"before".to_vec(), vec![key(3000 + n)]).await.expect("submit"));
        }
        ids
    });
    c.kill9(0);
    let late: Vec<_> = rt.block_on(async {
        let mut ids = Vec::new();
        for n in 0..5u64 {
            let id = client.submit(b"after".to_vec(), vec![key(3100 + n)]).await.unwrap_or_else(|e| panic!("submit after kill: {e}"));
            ids.push(id);
        }
        assert_ne!(client.current_node().name, "node-0", "the client moved to a live node");
        for id in &ids {
            let d = client.wait(*id).await.unwrap_or_else(|e| panic!("wait {id}: {e}\n{}", c.logs()));
            assert!(d.is_final(), "{id}: {d:?}");
        }
        ids
    });
    assert_eq!(late.len(), 5);
    // The early ones: node-0 acknowledged them (persisted) and usually gossiped them before it
    // died; on a loaded machine SIGKILL can land between the two. Then they are not lost, only
    // held by node-0 until it is back: restart it on its data dir and they are decided.
    let quick = ClientOptions { decision_timeout: Duration::from_secs(15), ..opts(1) };
    let quick_client = rt.block_on(connect_when_up(&file, quick));
    let undecided: Vec<_> = early.iter().filter(|id| !rt.block_on(quick_client.wait(**id)).is_ok_and(|d| d.is_final())).copied().collect();
    if !undecided.is_empty() {
        eprintln!("{} early vertices undecided without node-0: restarting it", undecided.len());
        c.restart(0);
        rt.block_on(async {
            for id in &undecided {
                let d = client.wait(*id).await.unwrap_or_else(|e| panic!("wait {id} after node-0 restarted: {e}\n{}", c.logs()));
                assert!(d.is_final(), "{id}: {d:?}");
            }
        });
    }
}

#[test]
fn a_wrong_server_key_is_an_identity_mismatch() {
    let _serial = cluster_lock();
    let c = Cluster::start(1, 51400);
    let mut nodes = pqdag_client::cluster::load_cluster_file(&c.cluster_file()).expect("cluster file");
    let impostor = pqdag_crypto_key();
    nodes[0] = NodeTarget { public_key: impostor, ..nodes[0].clone() };
    let me = pqdag_client::identity::load_client_key(&pqdag_client::identity::testnet_client_key(&c.cluster_file())).expect("testnet client key");
    let rt = rt();
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        match rt.block_on(Client::connect(nodes.clone(), opts(0).with_key(me.clone()))) {
            Ok(_) => panic!("a node with another key was accepted"),
            Err(e @ ClientError::IdentityMismatch { .. }) => break e,
            Err(e) if Instant::now() > deadline => panic!("node never came up: {e}\n{}", c.logs()),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    assert!(err.to_string().contains("node-0"), "{err}");
    // The blocking client reports it the same way.
    let b = blocking::Client::connect(nodes, opts(0).with_key(me));
    assert!(matches!(b, Err(ClientError::IdentityMismatch { .. })), "{b:?}");
}

#[test]
fn a_client_key_the_nodes_do_not_accept_is_not_authorized() {
    let _serial = cluster_lock();
    let c = Cluster::start(1, 51450);
    let file = c.cluster_file();
    let rt = rt();
    // The testnet's own key works (and tells us the node is up) ...
    let good = rt.block_on(connect_when_up(&file, opts(0)));
    drop(good);
    // ... a key the node does not list is refused at connect, typed, and not failed over.
    let stranger = std::sync::Arc::new(pqdag_crypto::Keypair::generate().expect("keygen"));
    let r = rt.block_on(Client::from_cluster_file(&file, opts(0).with_key(stranger.clone())));
    match r {
        Err(ClientError::NotAuthorized { node, .. }) => assert_eq!(node, "node-0"),
        other => panic!("expected NotAuthorized, got {other:?}\n{}", c.logs()),
    }
    let b = blocking::Client::from_cluster_file(&file, opts(0).with_key(stranger));
    assert!(matches!(b, Err(ClientError::NotAuthorized { .. })), "{b:?}");
}

/// A key no node holds.
fn pqdag_crypto_key() -> pqdag_client::PublicKey {
    pqdag_crypto::Keypair::generate().expect("keygen").public().clone()
}

/// The crate's example program, built and run as a user would (`cargo run -p pqdag-client
/// --example submit_and_wait -- --cluster FILE --count 3`) against a real 3-node testnet: a
/// plain `#[tokio::main]` that connects with the testnet's client key, submits, waits and prints
/// every decision.
#[test]
fn the_example_program_submits_and_waits_against_a_real_cluster() {
    let _serial = cluster_lock();
    let c = Cluster::start(3, 51500);
    let file = c.cluster_file();
    // Wait until the cluster answers (the example itself does not retry a first connect).
    let rt = rt();
    drop(rt.block_on(connect_when_up(&file, opts(0))));
    let target = engine().parent().and_then(|d| d.parent()).expect("target dir").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--locked", "-p", "pqdag-client", "--example", "submit_and_wait"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo build example");
    assert!(st.success(), "building the example failed");
    let out = Command::new(target.join("debug/examples/submit_and_wait"))
        .args(["--count", "3", "--cluster"])
        .arg(&file)
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "example failed: {}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr), c.logs());
    assert!(stdout.starts_with("connected to node-"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.contains("Final")).count(), 3, "three payloads final: {stdout}");
}
