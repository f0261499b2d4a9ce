//! Handshake and identity: hybrid group, mutual ML-DSA binding, refusals.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pqdag_crypto::Keypair;
use pqdag_transport::{PeerConfig, ShardTransport, TransportConfig, TransportError};

const T: Duration = Duration::from_secs(5);

#[test]
fn two_endpoints_handshake_with_hybrid_group_and_verified_identities() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        let b = node(&kps, &peers, 1);
        a.connect(P1, T).await.expect("a verifies b");
        assert!(a.is_connected(P1));
        // b verifies a when a's proof arrives.
        assert!(eventually(T, || b.is_connected(P0)).await, "b never verified a");
        for t in [&a, &b] {
            let s = t.stats();
            assert_eq!(s.handshakes_ok, 1, "{s:?}");
            assert_eq!((s.proofs_signed, s.proofs_verified), (1, 1), "{s:?}");
            assert_eq!(s.handshakes_failed, 0);
            assert_eq!(s.identity_refusals, 0);
            assert!(t.kx_log().hybrid.load(Ordering::Relaxed) >= 1, "X25519MLKEM768 not used");
            assert_eq!(t.kx_log().other.load(Ordering::Relaxed), 0, "a classical group was used");
        }
        // The same connection carries traffic both ways: b answers on it, no second dial.
        b.send_vertex(P0, b"\x01\x02hello".to_vec()).expect("send");
        match a.recv().await {
            pqdag_transport::Incoming::Vertex { peer, bytes } => {
                assert_eq!(peer, P1);
                assert_eq!(bytes, b"\x01\x02hello");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(b.stats().dials, 0, "b dialed although a connection to a existed");
    });
}

#[test]
fn unknown_ml_dsa_key_is_refused() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        // An outsider who knows a's key and address, but whom a's cluster file does not list.
        let outsider = Arc::new(Keypair::generate().expect("keygen"));
        let o_peers = vec![
            peers[0].clone(),
            PeerConfig { public_key: outsider.public().clone(), addr: free_addr() },
        ];
        let o = ShardTransport::new(TransportConfig::new(outsider, o_peers.clone(), 0, o_peers[1].addr)).expect("o");
        // The outsider proves first; a refuses it without ever signing its own proof, so the
        // outsider never verifies a.
        match o.connect(P0, T).await {
            Err(TransportError::IdentityMismatch(_)) => {}
            other => panic!("expected IdentityMismatch (unknown peer), got {other:?}"),
        }
        assert!(eventually(T, || a.stats().identity_refusals == 1).await, "a did not refuse: {:?}", a.stats());
        assert!(!o.is_connected(P0), "outsider connected");
        assert!(!a.is_connected(P1));
        let s = a.stats();
        assert_eq!(s.handshakes_ok, 0);
        assert_eq!(s.proofs_signed, 0, "a signed for an unknown dialer: {s:?}");
        assert_eq!(s.proofs_verified, 0, "an unknown node id is refused without a verification: {s:?}");
    });
}

#[test]
fn a_node_answering_with_another_identity_is_refused() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        // m listens at b's address with its own key: a expects b's key and must refuse.
        let m_key = Arc::new(Keypair::generate().expect("keygen"));
        let m_peers = vec![peers[0].clone(), PeerConfig { public_key: m_key.public().clone(), addr: peers[1].addr }];
        let _m = ShardTransport::new(TransportConfig::new(m_key, m_peers.clone(), 0, m_peers[1].addr)).expect("m");
        match a.connect(P1, T).await {
            Err(TransportError::IdentityMismatch(_)) => {}
            other => panic!("expected IdentityMismatch, got {other:?}"),
        }
        assert!(!a.is_connected(P1));
        assert_eq!(a.stats().identity_refusals, 1);
        assert_eq!(a.stats().handshakes_ok, 0);
    });
}

#[test]
fn simultaneous_dials_settle_on_one_connection() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        let b = node(&kps, &peers, 1);
        let (ra, rb) = futures_lite::future::zip(a.connect(P1, T), b.connect(P0, T)).await;
        ra.expect("a connect");
        rb.expect("b connect");
        // Both sides pick the connection dialed by the smaller node id; the other closes with
        // DUPLICATE after the grace period, and traffic keeps flowing both ways.
        glommio::timer::sleep(pqdag_transport::DUPLICATE_GRACE + Duration::from_millis(300)).await;
        assert!(a.is_connected(P1) && b.is_connected(P0));
        assert!(eventually(T, || a.open_connections() == 1 && b.open_connections() == 1).await, "duplicate not retired");
        for i in 0..20u8 {
            a.send_vertex(P1, vec![1, 1, i]).expect("a send");
            b.send_vertex(P0, vec![1, 2, i]).expect("b send");
        }
        for (t, tag) in [(&a, 2u8), (&b, 1u8)] {
            let mut got = Vec::new();
            while got.len() < 20 {
                match futures_lite::future::or(async { Some(t.recv().await) }, async {
                    glommio::timer::sleep(T).await;
                    None
                })
                .await
                {
                    Some(pqdag_transport::Incoming::Vertex { bytes, .. }) => {
                        assert_eq!(bytes[1], tag);
                        got.push(bytes[2]);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            got.sort_unstable();
            assert_eq!(got, (0..20).collect::<Vec<u8>>());
        }
        // Each side saw two verified handshakes; at most one connection was retired per side.
        assert_eq!(a.stats().handshakes_ok + b.stats().handshakes_ok, 4, "{:?} {:?}", a.stats(), b.stats());
        assert!(a.stats().connections_lost <= 1 && b.stats().connections_lost <= 1);
    });
}
