//! Who proves first and the pre-auth slots, with real QUIC: anonymous dialers (the `quinn`
//! crate on Tokio) that complete TLS but never prove get no signature from the node and are
//! closed at the deadline; a flood of them does not keep a configured peer out; a client whose
//! key is not accepted is refused and what it sent reaches no shard.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pqdag_crypto::Keypair;
use pqdag_transport::frame::{STREAM_IDENTITY, STREAM_SUBMIT};
use pqdag_transport::identity::{self, CONTEXT_CLIENT, EXPORTER_BYTES, EXPORTER_LABEL};
use pqdag_transport::tls::{self, KxLog, CLIENT_ALPN, PEER_ALPN};
use pqdag_transport::{close_code, ShardTransport, TransportConfig, TransportStats, PRE_AUTH_SHARED_MAX, PRE_AUTH_TIMEOUT};

const T: Duration = Duration::from_secs(10);

fn quinn_client(alpn: &[u8]) -> quinn::Endpoint {
    let rc = tls::rustls_client_config(tls::hybrid_only_provider(Arc::new(KxLog::default())), None, alpn).expect("rustls client");
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(rc).expect("quic client");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
    ep
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio")
}

fn framed(ty: u8, frame: &[u8]) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    v.extend_from_slice(frame);
    v
}

/// Runs node 0 of a 2-node cluster (with a client endpoint accepting `client_keys`) until
/// `done`, counting what reaches its shard. Returns (node addr, client addr) through `addrs`.
fn serve(
    client_keys: Vec<pqdag_crypto::PublicKey>,
    done: Arc<AtomicBool>,
) -> (std::net::SocketAddr, std::net::SocketAddr, std::thread::JoinHandle<(TransportStats, u64)>) {
    let (kps, peers) = cluster(2);
    let addr = peers[0].addr;
    let caddr = free_addr();
    let h = std::thread::spawn(move || {
        run(move || async move {
            let mut cfg = TransportConfig::new(kps[0].clone(), peers.clone(), 0, peers[0].addr);
            cfg.client_bind = Some(caddr);
            cfg.client_keys = client_keys;
            let a = ShardTransport::new(cfg).expect("node");
            let mut delivered = 0u64;
            while !done.load(Ordering::Acquire) {
                while a.try_recv().is_some() {
                    delivered += 1;
                }
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            (a.stats(), delivered)
        })
    });
    (addr, caddr, h)
}

#[test]
fn an_anonymous_dialer_gets_no_proof_and_is_closed_at_the_deadline() {
    let done = Arc::new(AtomicBool::new(false));
    let (addr, _caddr, h) = serve(Vec::new(), done.clone());
    let (closed, waited, got_stream) = rt().block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ep = quinn_client(PEER_ALPN);
        let start = Instant::now();
        let conn = ep.connect(addr, tls::SERVER_NAME).expect("connect").await.expect("the TLS handshake completes");
        // Prove nothing; the node must send nothing either (its proof would be a signature).
        let got_stream = tokio::select! {
            s = conn.accept_uni() => s.is_ok(),
            _ = conn.closed() => false,
        };
        let closed = tokio::time::timeout(T, conn.closed()).await.expect("closed in time");
        (closed, start.elapsed(), got_stream)
    });
    done.store(true, Ordering::Release);
    let (stats, delivered) = h.join().expect("node thread");
    assert!(!got_stream, "the node opened a stream (its proof) for an unproven dialer");
    match closed {
        quinn::ConnectionError::ApplicationClosed(ac) => assert_eq!(u64::from(ac.error_code), u64::from(close_code::IDENTITY_TIMEOUT)),
        other => panic!("expected an application close, got {other}"),
    }
    assert!(waited >= PRE_AUTH_TIMEOUT - Duration::from_millis(200) && waited < PRE_AUTH_TIMEOUT + Duration::from_secs(2), "closed after {waited:?}");
    assert_eq!(stats.proofs_signed, 0, "no signature for an unproven connection: {stats:?}");
    assert_eq!(stats.proofs_verified, 0);
    assert_eq!(stats.pre_auth_timeouts, 1, "{stats:?}");
    assert_eq!(stats.handshakes_ok, 0);
    assert_eq!(delivered, 0);
}

#[test]
fn a_flood_of_anonymous_handshakes_does_not_keep_a_configured_peer_out() {
    let (kps, peers) = cluster(2);
    let target = peers[0].addr;
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = Arc::new(AtomicU64::new(0));
    // Twice the shared pool, each re-dialing as soon as its connection dies.
    let flooders = 2 * PRE_AUTH_SHARED_MAX;
    let (stop2, flooding2) = (stop.clone(), flooding.clone());
    let flood = std::thread::spawn(move || {
        rt().block_on(async move {
            let ep = quinn_client(PEER_ALPN);
            let mut tasks = Vec::new();
            for _ in 0..flooders {
                let (ep, stop, flooding) = (ep.clone(), stop2.clone(), flooding2.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) {
                        let Ok(connecting) = ep.connect(target, tls::SERVER_NAME) else { break };
                        match tokio::time::timeout(T, connecting).await {
                            Ok(Ok(conn)) => {
                                flooding.fetch_add(1, Ordering::Relaxed);
                                tokio::select! {
                                    _ = conn.closed() => {}
                                    _ = async { while !stop.load(Ordering::Acquire) { tokio::time::sleep(Duration::from_millis(20)).await } } => {}
                                }
                            }
                            _ => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            ep.close(0u32.into(), b"done");
        })
    });
    let (stop3, flooding3) = (stop.clone(), flooding.clone());
    let (connected, a_stats, b_stats, elapsed) = run(move || async move {
        let a = node(&kps, &peers, 0);
        let b = node(&kps, &peers, 1);
        // Let the flood fill the pool first.
        let filled = eventually(T, || flooding3.load(Ordering::Relaxed) >= PRE_AUTH_SHARED_MAX as u64 && a.stats().pre_auth_full_refusals > 0).await;
        assert!(filled, "the flood never filled the shared pool: {:?}", a.stats());
        let start = Instant::now();
        let r = b.connect(P0, T).await;
        let elapsed = start.elapsed();
        let verified = eventually(T, || a.is_connected(P1)).await;
        let out = (r.is_ok() && verified, a.stats(), b.stats(), elapsed);
        stop3.store(true, Ordering::Release);
        out
    });
    stop.store(true, Ordering::Release);
    flood.join().expect("flood thread");
    assert!(connected, "the configured peer did not get through the flood: {a_stats:?}");
    assert!(elapsed < PRE_AUTH_TIMEOUT, "the peer waited for flood slots to expire ({elapsed:?})");
    assert!(a_stats.pre_auth_full_refusals > 0, "{a_stats:?}");
    assert!(a_stats.retries_sent > 0, "{a_stats:?}");
    assert_eq!(a_stats.proofs_signed, 1, "the node signed only for its peer: {a_stats:?}");
    assert_eq!(a_stats.proofs_verified, 1, "{a_stats:?}");
    assert_eq!(a_stats.handshakes_ok, 1);
    assert_eq!(b_stats.handshakes_ok, 1);
}

#[test]
fn an_unknown_client_is_refused_and_its_submission_reaches_no_shard() {
    let allowed = Keypair::generate().expect("keygen");
    let done = Arc::new(AtomicBool::new(false));
    let (_addr, caddr, h) = serve(vec![allowed.public().clone()], done.clone());
    let closed = rt().block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ep = quinn_client(CLIENT_ALPN);
        let conn = ep.connect(caddr, tls::SERVER_NAME).expect("connect").await.expect("TLS handshake");
        // A submission first (it must wait for the proof), then a valid proof of a key the
        // node does not list.
        let (mut s, _r) = conn.open_bi().await.expect("bi");
        let _ = s.write_all(&framed(STREAM_SUBMIT, b"sneaky payload")).await;
        let stranger = Keypair::generate().expect("keygen");
        let mut x = [0u8; EXPORTER_BYTES];
        conn.export_keying_material(&mut x, EXPORTER_LABEL, CONTEXT_CLIENT).expect("exporter");
        let proof = identity::make_proof(&stranger, &x).expect("sign");
        let mut u = conn.open_uni().await.expect("uni");
        let _ = u.write_all(&framed(STREAM_IDENTITY, &proof)).await;
        let _ = u.finish();
        tokio::time::timeout(T, conn.closed()).await.expect("closed in time")
    });
    std::thread::sleep(Duration::from_millis(100));
    done.store(true, Ordering::Release);
    let (stats, delivered) = h.join().expect("node thread");
    match closed {
        quinn::ConnectionError::ApplicationClosed(ac) => assert_eq!(u64::from(ac.error_code), u64::from(close_code::NOT_AUTHORIZED)),
        other => panic!("expected NOT_AUTHORIZED, got {other}"),
    }
    assert_eq!(delivered, 0, "the refused client's submission reached the shard");
    assert_eq!(stats.client_refusals, 1, "{stats:?}");
    assert_eq!(stats.proofs_signed, 0, "{stats:?}");
    assert_eq!(stats.proofs_verified, 0, "an unknown key is refused without a verification: {stats:?}");
}
