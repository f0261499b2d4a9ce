//! Interop and adversarial peers, using the high-level `quinn` crate (Tokio, in tests only):
//! a classical-only client, a classical-only server, an impersonator, garbage streams, and a
//! well-behaved quinn client that completes the full binding and exchanges frames.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pqdag_crypto::Keypair;
use pqdag_transport::frame::{STREAM_IDENTITY, STREAM_QUERY, STREAM_VERTICES};
use pqdag_transport::identity::{self, CONTEXT_ACCEPTOR, CONTEXT_DIALER, EXPORTER_BYTES, EXPORTER_LABEL};
use pqdag_transport::tls::{self, EphemeralCert, KxLog, PEER_ALPN};
use pqdag_transport::{close_code, stream_code, Incoming, TransportError, TransportStats};

const T: Duration = Duration::from_secs(5);

fn classical_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    Arc::new(p)
}

fn quinn_client(provider: Arc<rustls::crypto::CryptoProvider>) -> quinn::Endpoint {
    let rc = tls::rustls_client_config(provider, None, PEER_ALPN).expect("rustls client");
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(rc).expect("quic client");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
    ep
}

/// Runs node 0 of a 2-node cluster on a glommio thread until `done`; its shard answers queries
/// by reversing them and records vertices. Returns (addr, join -> (stats, vertices)).
fn serve_node(
    kps: Vec<Arc<Keypair>>,
    peers: Vec<pqdag_transport::PeerConfig>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(TransportStats, Vec<Vec<u8>>, u64)> {
    std::thread::spawn(move || {
        run(move || async move {
            let a = node(&kps, &peers, 0);
            let mut vertices = Vec::new();
            while !done.load(Ordering::Acquire) {
                let item = futures_lite::future::or(async { Some(a.recv().await) }, async {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    None
                })
                .await;
                match item {
                    Some(Incoming::Query { mut bytes, reply, .. }) => {
                        bytes.reverse();
                        reply.send(bytes).expect("reply");
                    }
                    Some(Incoming::Vertex { bytes, .. }) => vertices.push(bytes),
                    Some(_) | None => {}
                }
            }
            let hybrid = a.kx_log().hybrid.load(Ordering::Relaxed);
            (a.stats(), vertices, hybrid)
        })
    })
}

async fn uni(conn: &quinn::Connection, data: &[u8]) -> quinn::SendStream {
    let mut s = uni_open(conn, data).await;
    s.finish().expect("finish");
    s
}

/// Writes without finishing, so a STOP_SENDING from the node is observable.
async fn uni_open(conn: &quinn::Connection, data: &[u8]) -> quinn::SendStream {
    let mut s = conn.open_uni().await.expect("open uni");
    s.write_all(data).await.expect("write");
    s
}

fn framed(ty: u8, frame: &[u8]) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    v.extend_from_slice(frame);
    v
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio")
}

#[test]
fn classical_only_client_is_refused() {
    let (kps, peers) = cluster(2);
    let addr = peers[0].addr;
    let done = Arc::new(AtomicBool::new(false));
    let h = serve_node(kps, peers, done.clone());
    let err = rt().block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ep = quinn_client(classical_provider());
        let r = tokio::time::timeout(T, ep.connect(addr, tls::SERVER_NAME).expect("connect")).await;
        r.expect("the refusal must come before the timeout").expect_err("classical handshake must fail")
    });
    // TLS alert handshake_failure (40) as a QUIC CRYPTO_ERROR (0x100 + alert).
    match &err {
        quinn::ConnectionError::ConnectionClosed(c) => assert_eq!(u64::from(c.error_code), 0x128, "{err}"),
        other => panic!("expected a crypto close, got {other}"),
    }
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, Ordering::Release);
    let (stats, _, hybrid) = h.join().expect("node thread");
    // One refusal per connection attempt; a loaded machine may see the client's Initial
    // retransmitted after the first refusal, which is refused again (never accepted).
    assert!(stats.classical_only_refusals >= 1, "{stats:?}");
    assert_eq!(stats.handshakes_failed, stats.classical_only_refusals, "{stats:?}");
    assert_eq!(stats.handshakes_ok, 0);
    assert_eq!(hybrid, 0, "no hybrid exchange should have happened");
}

#[test]
fn our_dialer_refuses_a_classical_only_server() {
    let (kps, peers) = cluster(2);
    let server_addr = peers[1].addr;
    let rt = rt();
    let _guard = rt.enter();
    let cert = EphemeralCert::generate().expect("cert");
    let rs = tls::rustls_server_config(classical_provider(), &cert, &[PEER_ALPN]).expect("server cfg");
    let qs = quinn::crypto::rustls::QuicServerConfig::try_from(rs).expect("quic server");
    let ep = quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(qs)), server_addr).expect("server");
    let h = std::thread::spawn(move || {
        run(move || async move {
            let a = node(&kps, &peers, 0);
            let r = a.connect(P1, T).await;
            (r, a.stats())
        })
    });
    let server_side = rt.block_on(async {
        let inc = tokio::time::timeout(T, ep.accept()).await.expect("incoming in time").expect("incoming");
        tokio::time::timeout(T, inc).await.expect("server outcome in time").map(|_| ())
    });
    let (r, stats) = h.join().expect("node thread");
    assert!(server_side.is_err(), "the classical server must not complete a handshake");
    match r {
        Err(TransportError::HandshakeRefused { reason }) => assert!(reason.contains("X25519MLKEM768"), "{reason}"),
        other => panic!("expected HandshakeRefused, got {other:?}"),
    }
    assert_eq!(stats.classical_only_refusals, 1, "{stats:?}");
    assert_eq!(stats.handshakes_ok, 0);
}

#[test]
fn impersonator_without_the_key_is_refused() {
    let (kps, peers) = cluster(2);
    let addr = peers[0].addr;
    let victim = kps[1].public().node_id();
    let done = Arc::new(AtomicBool::new(false));
    let h = serve_node(kps, peers, done.clone());
    let closed = rt().block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = Arc::new(KxLog::default());
        let ep = quinn_client(tls::hybrid_only_provider(log));
        let conn = ep.connect(addr, tls::SERVER_NAME).expect("connect").await.expect("tls handshake is fine");
        let mut x = [0u8; EXPORTER_BYTES];
        conn.export_keying_material(&mut x, EXPORTER_LABEL, CONTEXT_DIALER).expect("exporter");
        // Claim node 1's id, but sign with a key the attacker has.
        let attacker = Keypair::generate().expect("keygen");
        let mut proof = identity::make_proof(&attacker, &x).expect("sign");
        proof[5..37].copy_from_slice(&victim);
        let _s = uni(&conn, &framed(STREAM_IDENTITY, &proof)).await;
        tokio::time::timeout(T, conn.closed()).await.expect("closed in time")
    });
    done.store(true, Ordering::Release);
    match closed {
        quinn::ConnectionError::ApplicationClosed(ac) => {
            assert_eq!(u64::from(ac.error_code), u64::from(close_code::IDENTITY_MISMATCH))
        }
        other => panic!("expected application close, got {other}"),
    }
    let (stats, vertices, _) = h.join().expect("node thread");
    assert_eq!(stats.identity_refusals, 1, "{stats:?}");
    assert_eq!(stats.handshakes_ok, 0);
    assert_eq!(stats.proofs_signed, 0, "the node signs nothing for an impersonator: {stats:?}");
    assert!(vertices.is_empty());
}

#[test]
fn quinn_client_interop_binding_frames_and_garbage_streams() {
    let (kps, peers) = cluster(2);
    let addr = peers[0].addr;
    let server_key = kps[0].public().clone();
    let me = kps[1].clone();
    let done = Arc::new(AtomicBool::new(false));
    let h = serve_node(kps, peers, done.clone());
    let log = Arc::new(KxLog::default());
    let codes = Arc::new(Mutex::new(Vec::new()));
    let (log2, codes2) = (log.clone(), codes.clone());
    rt().block_on(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ep = quinn_client(tls::hybrid_only_provider(log2));
        let conn = ep.connect(addr, tls::SERVER_NAME).expect("connect").await.expect("hybrid handshake");
        // Prove we are node 1 ...
        let mut x = [0u8; EXPORTER_BYTES];
        conn.export_keying_material(&mut x, EXPORTER_LABEL, CONTEXT_DIALER).expect("exporter");
        let proof = identity::make_proof(&me, &x).expect("sign");
        let _s = uni(&conn, &framed(STREAM_IDENTITY, &proof)).await;
        // ... and check the node's proof over the acceptor exporter.
        let mut r = conn.accept_uni().await.expect("server proof stream");
        let data = r.read_to_end(64 << 10).await.expect("proof");
        assert_eq!(data[0], STREAM_IDENTITY);
        let len = u32::from_le_bytes(data[1..5].try_into().expect("len")) as usize;
        let p = identity::parse_proof(&data[5..5 + len]).expect("parse proof");
        let mut xs = [0u8; EXPORTER_BYTES];
        conn.export_keying_material(&mut xs, EXPORTER_LABEL, CONTEXT_ACCEPTOR).expect("exporter");
        assert!(identity::verify_proof(&server_key, &xs, &p), "node's binding proof must verify");

        // One query frame round trip on a bidirectional stream.
        let (mut s, mut rcv) = conn.open_bi().await.expect("bi");
        s.write_all(&framed(STREAM_QUERY, b"\x01\x05interop")).await.expect("write");
        s.finish().expect("finish");
        let resp = tokio::time::timeout(T, rcv.read_to_end(1 << 20)).await.expect("in time").expect("response");
        let mut want = b"\x01\x05interop".to_vec();
        want.reverse();
        assert_eq!(&resp[..4], &(want.len() as u32).to_le_bytes());
        assert_eq!(&resp[4..], &want[..]);

        // Garbage: an unknown stream type, and a length prefix over the 1 MiB cap.
        let g1 = uni_open(&conn, &[0xEE, 1, 2, 3]).await;
        let mut big = vec![STREAM_VERTICES];
        big.extend_from_slice(&(2u32 << 20).to_le_bytes());
        big.extend_from_slice(&[0u8; 1000]);
        let g2 = uni_open(&conn, &big).await;
        for g in [g1, g2] {
            let code = tokio::time::timeout(T, g.stopped()).await.expect("stopped in time");
            codes2.lock().expect("lock").push(code.ok().flatten().map(u64::from));
        }
        // The connection survives: a well-formed vertex still arrives.
        let _v = uni(&conn, &framed(STREAM_VERTICES, b"\x01\x01good vertex")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(conn.close_reason().is_none(), "connection must survive garbage streams");
        conn.close(0u32.into(), b"bye");
    });
    done.store(true, Ordering::Release);
    let (stats, vertices, hybrid) = h.join().expect("node thread");
    assert!(log.hybrid.load(Ordering::Relaxed) >= 1 && log.other.load(Ordering::Relaxed) == 0);
    assert!(hybrid >= 1, "node side used X25519MLKEM768");
    assert_eq!(
        *codes.lock().expect("lock"),
        vec![Some(u64::from(stream_code::GARBAGE)), Some(u64::from(stream_code::FRAME_TOO_LARGE))]
    );
    assert_eq!(vertices, vec![b"\x01\x01good vertex".to_vec()]);
    assert_eq!(stats.handshakes_ok, 1, "{stats:?}");
    assert_eq!(stats.streams_reset, 2);
    assert_eq!(stats.peers[1].streams_reset, 2, "counted against the peer");
}
