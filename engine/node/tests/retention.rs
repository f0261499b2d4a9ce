//! Retention against real processes: a 3-node cluster where node-0 and node-1 prune decisions
//! older than 30 s (`[storage] retain_final_secs`) and node-2 keeps everything, under load.
//! Checks: pruning happens and shows in the metrics; the pruned store is smaller than the full
//! one; a feed cursor older than the window gets the typed `Pruned` answer; a restart of a
//! pruning node restores (pruned finals as forgotten ids) and the three nodes agree on
//! `finalized_set_digest`; a conflict key spent by a pruned final still refuses a double spend.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster_lock, engine, metric_sum, Cluster};
use pqdag_client::{blocking, ClientOptions, ConflictKey};
use pqdag_node::NodeConfig;
use serde_json::Value;

/// Window of the pruning nodes (the least allowed).
const WINDOW_SECS: u64 = 30;

fn key_hex(n: u64, tag: u8) -> String {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k[8] = tag;
    hex::encode(k)
}

/// Bytes of the files under `dir` (recursive): what the node's data dir takes on disk.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Background load at `node` (index), unique keys, ~`rate` per second, until `stop`.
fn load(c: &Cluster, node: usize, rate: u32, tag: u8, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let file = c.cluster_file();
    std::thread::spawn(move || {
        let client = blocking::Client::from_cluster_file(&file, ClientOptions { preferred: node, ..ClientOptions::default() }).expect("load client");
        let mut n = 0u64;
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&n.to_le_bytes());
            k[8] = tag;
            if client.submit(format!("retention load {tag} {n}").into_bytes(), vec![ConflictKey(k)]).is_ok() {
                n += 1;
            }
            // Open loop at `rate`: sleep until the next slot.
            let next = start + Duration::from_secs(1) * (n as u32 + 1) / rate;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        n
    })
}

/// `engine submit --wait` of `payload` spending `key` at `node`: Ok(decision JSON) or Err(stderr).
fn submit_wait(c: &Cluster, node: &str, payload: &[u8], key: &str) -> Result<Value, String> {
    let out = Command::new(engine())
        .args(["submit", "--cluster"])
        .arg(c.cluster_file())
        .args(["--node", node, "--payload-hex", &hex::encode(payload), "--conflict-key", key, "--wait"])
        .output()
        .expect("engine submit");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("one JSON line"))
}

/// `engine tail --count N [--from CURSOR]` at `node`: (exit ok, stdout lines, stderr).
fn tail(c: &Cluster, node: &str, from: Option<&str>, count: usize) -> (bool, Vec<Value>, String) {
    let mut cmd = Command::new(engine());
    cmd.args(["tail", "--cluster"]).arg(c.cluster_file()).args(["--node", node, "--count", &count.to_string()]);
    if let Some(f) = from {
        cmd.args(["--from", f]);
    }
    let out = cmd.output().expect("engine tail");
    let lines = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (out.status.success(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn metrics(c: &Cluster, i: usize) -> String {
    c.http(i, "/metrics").map(|(_, b)| b).unwrap_or_default()
}

#[test]
fn retention_prunes_under_load_and_a_restart_keeps_agreement() {
    let _g = cluster_lock();
    let mut c = Cluster::new(3, 26400);
    for i in 0..2 {
        let mut cfg = NodeConfig::load(&c.configs[i]).expect("config");
        cfg.storage.retain_final_secs = WINDOW_SECS;
        cfg.save(&c.configs[i]).expect("save config");
    }
    c.start_all();
    for i in 0..3 {
        c.wait_ready(i, Duration::from_secs(60));
    }

    // A spend that retention will prune at node-0, and a feed cursor taken before the load.
    let spent = key_hex(1, 0xaa);
    let first = submit_wait(&c, "node-0", b"first spend", &spent).expect("first spend");
    assert_eq!(first["decision"], "final", "{first}");
    let (ok, lines, err) = tail(&c, "node-0", None, 1);
    assert!(ok && lines.len() == 1, "tail at start: {err}");
    let old_cursor = lines[0]["cursor"].as_str().expect("cursor").to_string();

    // Load: ~150 payloads/s through node-0 and node-1 for 75 s (2.5 windows).
    let stop = Arc::new(AtomicBool::new(false));
    let loads = [load(&c, 0, 75, 0x10, stop.clone()), load(&c, 1, 75, 0x11, stop.clone())];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(75) {
        std::thread::sleep(Duration::from_secs(5));
        let pruned_seen = metric_sum(&metrics(&c, 0), "pqdag_store_pruned_total");
        let disks: Vec<u64> = (0..3).map(|i| dir_bytes(&c.dir.path().join(format!("node-{i}/data")))).collect();
        eprintln!("t={:>3}s pruned at node-0: {pruned_seen}, data dirs: {disks:?}", t.elapsed().as_secs());
    }
    stop.store(true, Ordering::Relaxed);
    let submitted: u64 = loads.into_iter().map(|h| h.join().expect("load thread")).sum();
    eprintln!("submitted {submitted}");
    assert!(submitted > 5000, "the load ran ({submitted})");
    let (finalized, digest) = c.wait_converged(&[0, 1, 2], Duration::from_secs(90));
    eprintln!("converged: {finalized} finalized, digest {digest}");

    // Pruning ran on the two pruning nodes only, and shows in the metrics.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_sum(&metrics(&c, 1), "pqdag_store_pruned_total") < 1000.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..3 {
        let m = metrics(&c, i);
        let pruned = metric_sum(&m, "pqdag_store_pruned_total");
        let disk = metric_sum(&m, "pqdag_store_disk_bytes");
        eprintln!("node-{i}: pruned {pruned}, pqdag_store_disk_bytes {disk}");
        assert!(disk > 0.0, "node-{i} exports pqdag_store_disk_bytes");
        // By column family: files on disk, and none for a per-final record (no longer written).
        assert!(metric_sum(&m, "pqdag_store_cf_bytes") > 0.0, "node-{i} exports pqdag_store_cf_bytes");
        assert_eq!(metric_sum(&m, "pqdag_store_cf_bytes{shard=\"0\",kind=\"pruned\"}"), 0.0, "node-{i}: a prune writes no record per final");
        if i < 2 {
            assert!(pruned > (finalized as f64) / 4.0, "node-{i} pruned {pruned} of {finalized}");
        } else {
            assert_eq!(pruned, 0.0, "node-2 keeps everything");
        }
    }
    // Let the background compaction of the last prune finish, then compare the data dirs.
    std::thread::sleep(Duration::from_secs(5));
    let disks: Vec<u64> = (0..3).map(|i| dir_bytes(&c.dir.path().join(format!("node-{i}/data")))).collect();
    eprintln!("data dirs after the load: {disks:?} bytes");
    for i in 0..2 {
        assert!(disks[i] * 10 < disks[2] * 8, "node-{i}'s pruned store ({}) is not smaller than node-2's full one ({})", disks[i], disks[2]);
    }

    // A cursor from before the window gets the typed answer; a fresh one starts at the window.
    let (ok, _, err) = tail(&c, "node-0", Some(&old_cursor), 1);
    assert!(!ok && err.contains("pruned"), "old cursor: ok={ok} stderr={err}");
    let (ok, lines, err) = tail(&c, "node-0", None, 1);
    assert!(ok && lines.len() == 1, "fresh cursor after pruning: {err}");
    let (ok, lines, _) = tail(&c, "node-2", Some(&tail(&c, "node-2", None, 1).1[0]["cursor"].as_str().expect("cursor").to_string()), 1);
    assert!(ok && lines.len() == 1, "node-2 keeps its whole feed");

    // Restart node-0: it restores the pruned finals as ids and agrees with the others.
    assert!(c.stop(0), "node-0 stops cleanly");
    c.start(0);
    c.wait_ready(0, Duration::from_secs(90));
    let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
    let restored = log.lines().filter(|l| l.contains("shard restored from storage")).last().unwrap_or_default().to_string();
    eprintln!("node-0 restart: {restored}");
    let (finalized_after, digest_after) = c.wait_converged(&[0, 1, 2], Duration::from_secs(90));
    assert_eq!((finalized_after, &digest_after), (finalized, &digest), "a restart after pruning neither loses nor adds a final");

    // The key the pruned first spend took is still spent: refused, or decided rejected.
    for node in ["node-0", "node-2"] {
        match submit_wait(&c, node, format!("double spend via {node}").as_bytes(), &spent) {
            Ok(v) => assert_eq!(v["decision"], "rejected", "a double spend of a pruned final's key: {v}"),
            Err(e) => assert!(e.to_lowercase().contains("conflict"), "refused for another reason: {e}"),
        }
    }
    let (f, _) = c.wait_converged(&[0, 1, 2], Duration::from_secs(60));
    assert_eq!(f, finalized, "no double spend became final");
}

/// The free-space floor (`[storage] min_free_bytes`) on real processes: node-0's floor is above
/// any disk, so it refuses client submissions ("disk nearly full", `Overloaded`) and the client
/// moves to another node, while node-0 goes on storing and finalizing its peers' vertices.
#[test]
fn a_node_under_its_free_space_floor_refuses_submissions_and_keeps_deciding() {
    let _g = cluster_lock();
    let mut c = Cluster::new(3, 26600);
    let mut cfg = NodeConfig::load(&c.configs[0]).expect("config");
    cfg.storage.min_free_bytes = u64::MAX;
    cfg.save(&c.configs[0]).expect("save config");
    c.start_all();
    for i in 0..3 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    // The floor applies from the first reading of the stats tick (once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(&metrics(&c, 0), "pqdag_disk_free_bytes") <= 0.0 {
        assert!(Instant::now() < deadline, "pqdag_disk_free_bytes never published");
        std::thread::sleep(Duration::from_millis(200));
    }

    let key = key_hex(7, 0xd1);
    let out = submit_wait(&c, "node-0", b"disk floor", &key).expect("submitted through another node");
    assert_eq!(out["decision"], "final", "{out}");
    assert_ne!(out["node"], "node-0", "node-0 accepted a submission under its floor: {out}");
    let refused = metrics(&c, 0).lines().filter(|l| l.starts_with("pqdag_invalid_frames_total") && l.contains("client_disk_low")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>();
    assert!(refused >= 1.0, "node-0 counted no disk-floor refusal");
    let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
    assert!(log.contains("disk nearly full"), "node-0 did not log why it refuses");

    // node-0 still takes part: the vertex node-1 or node-2 created is final there too.
    let (finalized, _) = c.wait_converged(&[0, 1, 2], Duration::from_secs(30));
    assert!(finalized >= 1, "the submission is final on all three: {finalized}");
    for i in 1..3 {
        assert!(metric_sum(&metrics(&c, i), "pqdag_disk_free_bytes") > 0.0, "node-{i} publishes its free space");
    }
}
