//! Spec appendix B scenario 3, 5.3 and 7.4 RS-001 on real processes: 6 nodes behind a UDP fault
//! proxy are split [0,1,2] / [3,4,5] under load, including a double spend across the cut, then
//! healed: both sides suspect the partition, and after the heal every node holds the same
//! finalized set, with at most one winner of the double spend. Recovery time is measured.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use pqdag_faultproxy::{FaultProxy, Faults, Route};
use pqdag_node::{ClusterFile, NodeConfig};
use pqdag_wire::{ClientStatus, VertexId};

#[test]
fn partition_then_heal_reconciles_to_one_dag() {
    let _serial = cluster_lock();
    let mut c = Cluster::new(6, 28000);
    // Nodes bind real ports 10 above the advertised ones; the proxy owns the advertised ports.
    let cluster = ClusterFile::load(&c.dir.path().join("cluster.toml")).expect("cluster");
    let mut routes = Vec::new();
    for (i, path) in c.configs.iter().enumerate() {
        let mut cfg = NodeConfig::load(path).expect("cfg");
        let advertised = cluster.nodes[i].base_port;
        cfg.bind_base_port = Some(advertised + 10);
        // `load` made the paths absolute; saving them absolute is fine.
        cfg.save(path).expect("save");
        routes.push(Route {
            listen: SocketAddr::from(([127, 0, 0, 1], advertised)),
            target: SocketAddr::from(([127, 0, 0, 1], advertised + 10)),
        });
    }
    let proxy = FaultProxy::start(&routes).expect("proxy");
    c.start_all();
    let warm: Vec<VertexId> = c.with_clients(&[0, 1, 2, 3, 4, 5], |conns| {
        Box::pin(async move {
            let mut ids = Vec::new();
            for n in 0..60u64 {
                ids.push(submit(&conns[(n % 6) as usize], n, vec![0; 32], key(n)).await.expect("submit"));
            }
            ids
        })
    });
    c.wait_converged(&[0, 1, 2, 3, 4, 5], Duration::from_secs(90));

    proxy.set(Faults::partition(&[0, 1, 2], &[3, 4, 5]));
    let cut_at = Instant::now();
    let (side_ids, spend) = c.with_clients(&[0, 1, 2, 3, 4, 5], |conns| {
        Box::pin(async move {
            let mut ids = Vec::new();
            for n in 100..160u64 {
                ids.push(submit(&conns[(n % 6) as usize], n, vec![1; 32], key(n)).await.expect("submit"));
            }
            // The same key spent on both sides of the cut.
            let a = submit(&conns[0], 900, b"spend west".to_vec(), key(9_999)).await.expect("west");
            let b = submit(&conns[5], 901, b"spend east".to_vec(), key(9_999)).await.expect("east");
            (ids, [a, b])
        })
    });
    // Both sides must notice: most polls come back short of alpha.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let suspected: Vec<bool> = (0..6).map(|i| c.status(i)["partition_suspected"].as_bool().unwrap_or(false)).collect();
        if suspected.iter().all(|s| *s) {
            eprintln!("partition suspected by all 6 nodes {:?} after the cut", cut_at.elapsed());
            break;
        }
        assert!(Instant::now() < deadline, "partition not detected: {suspected:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ready: Vec<u16> = (0..6).map(|i| c.http(i, "/ready").map(|h| h.0).unwrap_or(0)).collect();
    assert!(ready.iter().all(|h| *h == 503), "/ready must report the partition: {ready:?}");

    proxy.heal();
    let healed_at = Instant::now();
    let (finalized, _) = c.wait_converged(&[0, 1, 2, 3, 4, 5], Duration::from_secs(120));
    let recovery = healed_at.elapsed();
    eprintln!("healed: one DAG again on all 6 nodes ({finalized} final) {recovery:?} after the heal (target < 5 s)");
    let all: Vec<VertexId> = warm.iter().chain(&side_ids).copied().collect();
    let spend_ids = spend.to_vec();
    let views = c.with_clients(&[0, 1, 2, 3, 4, 5], move |conns| {
        Box::pin(async move {
            let mut out = Vec::new();
            for conn in &conns {
                out.push((statuses(conn, &all).await, statuses(conn, &spend_ids).await));
            }
            out
        })
    });
    for (i, (plain, spent)) in views.iter().enumerate() {
        assert!(plain.iter().all(|s| matches!(s, ClientStatus::Final { .. })), "node {i}: a payload is not final after the heal");
        let winners = spent.iter().filter(|s| matches!(s, ClientStatus::Final { .. })).count();
        assert!(winners <= 1, "node {i}: both sides of the double spend finalized");
        let same = spent.iter().zip(&views[0].1).all(|(a, b)| std::mem::discriminant(a) == std::mem::discriminant(b));
        assert!(same, "node {i} resolved the double spend differently");
    }
    let (fwd, dropped) = proxy.counts();
    eprintln!("proxy: {fwd} datagrams forwarded, {dropped} dropped by the partition");
    for i in 0..6 {
        assert!(c.stop(i));
    }
}
