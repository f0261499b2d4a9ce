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
        // The outsider may verify a (a's proof is valid) before a's refusal lands; it must end
        // up disconnected, with a counting the refusal.
        let _ = o.connect(P0, T).await;
        assert!(eventually(T, || a.stats().identity_refusals == 1).await, "a did not refuse: {:?}", a.stats());
        assert!(eventually(T, || !o.is_connected(P0)).await, "outsider still connected");
        assert!(!a.is_connected(P1));
        assert_eq!(a.stats().handshakes_ok, 0);
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
