//! Transport bench on loopback: two endpoints pinned to one core each.
//!
//! Measures 5 KiB vertex frames/s and MB/s, sequential query round trips, handshake latency
//! (QUIC + hybrid TLS + ML-DSA binding both ways), and the raw glommio UDP echo rate of the
//! same kind of loop for comparison.
//!
//! `cargo run -p pqdag-transport --example transport_bench [-- frames]`

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::UdpSocket;
use glommio::{LocalExecutorBuilder, Placement};
use pqdag_crypto::Keypair;
use pqdag_transport::{Incoming, PeerConfig, PeerId, ShardTransport, TransportConfig};

const FRAME: usize = 5 * 1024;
const T: Duration = Duration::from_secs(10);

fn free_addr() -> SocketAddr {
    StdUdp::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("free port")
}

fn cpus() -> (usize, usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0, if n > 1 { 1 } else { 0 })
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn transports_bench(frames: u64) {
    let kps: Vec<Arc<Keypair>> = (0..2).map(|_| Arc::new(Keypair::generate().expect("keygen"))).collect();
    let peers: Vec<PeerConfig> =
        kps.iter().map(|k| PeerConfig { public_key: k.public().clone(), addr: free_addr() }).collect();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (ca, cb) = cpus();

    // Receiver: node 1 on its own core; counts vertices, answers queries.
    let (k, p, r, s) = (kps.clone(), peers.clone(), received.clone(), stop.clone());
    let b = LocalExecutorBuilder::new(Placement::Fixed(cb))
        .spin_before_park(Duration::from_micros(50))
        .spawn(move || async move {
            let t = Rc::new(ShardTransport::new(TransportConfig::new(k[1].clone(), p.clone(), 0, p[1].addr)).expect("b"));
            while !s.load(Ordering::Acquire) {
                let item = futures_lite::future::or(async { Some(t.recv().await) }, async {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    None
                })
                .await;
                match item {
                    Some(Incoming::Vertex { .. }) => {
                        r.fetch_add(1, Ordering::Release);
                    }
                    Some(Incoming::Query { bytes, reply, .. }) => {
                        let _ = reply.send(bytes);
                    }
                    None if std::env::var_os("BENCH_DEBUG").is_some() => {
                        eprintln!("B: {}", t.debug_summary());
                        glommio::timer::sleep(Duration::from_millis(1000)).await;
                    }
                    _ => {}
                }
            }
        })
        .expect("spawn b");

    let (k, p, r) = (kps.clone(), peers.clone(), received.clone());
    let a = LocalExecutorBuilder::new(Placement::Fixed(ca))
        .spin_before_park(Duration::from_micros(50))
        .spawn(move || async move {
            let t = ShardTransport::new(TransportConfig::new(k[0].clone(), p.clone(), 0, p[0].addr)).expect("a");
            t.connect(PeerId(1), T).await.expect("connect");
            let frame = vec![7u8; FRAME];
            let start = Instant::now();
            let mut sent = 0u64;
            while r.load(Ordering::Acquire) < frames {
                // Keep at most 4096 frames in flight (under the 8192 queue cap: no drops).
                while sent < frames && sent - r.load(Ordering::Acquire) < 4096 {
                    t.send_vertex(PeerId(1), frame.clone()).expect("send");
                    sent += 1;
                }
                glommio::timer::sleep(Duration::from_micros(100)).await;
                if std::env::var_os("BENCH_DEBUG").is_some() && start.elapsed().as_millis() % 1000 < 1 {
                    eprintln!("sent {sent} received {} {}", r.load(Ordering::Acquire), t.debug_summary());
                }
            }
            let el = start.elapsed().as_secs_f64();
            let st = t.stats();
            println!(
                "vertices: {frames} x {FRAME} B in {el:.2} s = {:.0} frames/s, {:.1} MB/s (queue drops {}, datagrams out {})",
                frames as f64 / el,
                frames as f64 * FRAME as f64 / el / 1e6,
                st.queue_drops,
                st.datagrams_out
            );
            // Sequential query round trips (64 B).
            let q = vec![1u8; 64];
            let mut rtts = Vec::new();
            let start = Instant::now();
            for _ in 0..5000 {
                let t0 = Instant::now();
                t.send_query(PeerId(1), q.clone(), T).await.expect("query");
                rtts.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            let el = start.elapsed().as_secs_f64();
            println!(
                "queries: 5000 sequential, {:.0} round trips/s, p50 {:.0} us, p99 {:.0} us",
                5000.0 / el,
                pct(&mut rtts, 0.5),
                pct(&mut rtts, 0.99)
            );
            // 64 concurrent queries at a time.
            let start = Instant::now();
            let peers = vec![PeerId(1); 64];
            for _ in 0..200 {
                for (_, r) in t.batch_query(&peers, &q, T).await {
                    r.expect("batch");
                }
            }
            let el = start.elapsed().as_secs_f64();
            println!("queries: 64 in flight, {:.0} round trips/s", 200.0 * 64.0 / el);
        })
        .expect("spawn a");
    a.join().expect("a");
    stop.store(true, Ordering::Release);
    b.join().expect("b");
}

fn handshake_bench(n: usize) {
    let ex = LocalExecutorBuilder::new(Placement::Fixed(cpus().0))
        .spin_before_park(Duration::from_micros(50))
        .spawn(move || async move {
            let kps: Vec<Arc<Keypair>> = (0..2).map(|_| Arc::new(Keypair::generate().expect("keygen"))).collect();
            let mut ms = Vec::new();
            for _ in 0..n {
                let peers: Vec<PeerConfig> =
                    kps.iter().map(|k| PeerConfig { public_key: k.public().clone(), addr: free_addr() }).collect();
                let a = ShardTransport::new(TransportConfig::new(kps[0].clone(), peers.clone(), 0, peers[0].addr)).expect("a");
                let b = ShardTransport::new(TransportConfig::new(kps[1].clone(), peers.clone(), 0, peers[1].addr)).expect("b");
                let t0 = Instant::now();
                a.connect(PeerId(1), T).await.expect("connect");
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
                assert!(a.kx_log().hybrid.load(Ordering::Relaxed) >= 1);
                drop(b);
                drop(a);
                glommio::timer::sleep(Duration::from_millis(2)).await;
            }
            println!(
                "handshake (QUIC + X25519MLKEM768 + ML-DSA-87 binding both ways, both ends on one core): p50 {:.2} ms, p90 {:.2} ms over {n}",
                pct(&mut ms, 0.5),
                pct(&mut ms, 0.9)
            );
        })
        .expect("spawn");
    ex.join().expect("handshake bench");
}

fn udp_echo_bench(secs: u64) {
    let server = free_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (ca, cb) = cpus();
    let s2 = stop.clone();
    let srv = LocalExecutorBuilder::new(Placement::Fixed(cb))
        .spin_before_park(Duration::from_micros(50))
        .spawn(move || async move {
            let sock = Rc::new(UdpSocket::bind(server).expect("bind"));
            let mut buf = vec![0u8; 2048];
            while !s2.load(Ordering::Acquire) {
                let r = futures_lite::future::or(async { Some(sock.recv_from(&mut buf).await) }, async {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    None
                })
                .await;
                if let Some(Ok((n, from))) = r {
                    let _ = sock.send_to(&buf[..n], from).await;
                }
            }
        })
        .expect("spawn server");
    let cli = LocalExecutorBuilder::new(Placement::Fixed(ca))
        .spin_before_park(Duration::from_micros(50))
        .spawn(move || async move {
            for inflight in [1usize, 32] {
                let count = Rc::new(std::cell::Cell::new(0u64));
                let end = Instant::now() + Duration::from_secs(secs);
                let mut tasks = Vec::new();
                for _ in 0..inflight {
                    let count = count.clone();
                    tasks.push(glommio::spawn_local(async move {
                        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
                        let msg = vec![0u8; 1200];
                        let mut buf = vec![0u8; 2048];
                        while Instant::now() < end {
                            sock.send_to(&msg, server).await.expect("send");
                            let r = futures_lite::future::or(async { sock.recv_from(&mut buf).await.ok() }, async {
                                glommio::timer::sleep(Duration::from_millis(50)).await;
                                None
                            })
                            .await;
                            if r.is_some() {
                                count.set(count.get() + 1);
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await;
                }
                println!(
                    "raw glommio UDP echo, 1200 B, {inflight} in flight: {:.0} echoes/s",
                    count.get() as f64 / secs as f64
                );
            }
        })
        .expect("spawn client");
    cli.join().expect("client");
    stop.store(true, Ordering::Release);
    srv.join().expect("server");
}

fn main() {
    let frames: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    if std::env::args().nth(2).as_deref() != Some("only") {
        udp_echo_bench(2);
        handshake_bench(50);
    }
    transports_bench(frames);
}
