//! The client endpoint: server authenticated by ML-DSA binding, submissions and events.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pqdag_crypto::Keypair;
use pqdag_transport::{ClientConnection, ClientKeyId, Incoming, ShardTransport, TransportConfig, TransportError};

const T: Duration = Duration::from_secs(5);

#[test]
fn client_submits_and_receives_events_and_checks_the_server_key() {
    run(|| async {
        let (kps, peers) = cluster(1);
        let me = Arc::new(Keypair::generate().expect("keygen"));
        let mut cfg = TransportConfig::new(kps[0].clone(), peers.clone(), 0, peers[0].addr);
        cfg.client_bind = Some(free_addr());
        cfg.client_keys = vec![me.public().clone()];
        let a = ShardTransport::new(cfg).expect("node");
        let caddr = a.client_addr().expect("client endpoint");
        assert!(caddr.ip().is_loopback());

        let c = ClientConnection::connect(caddr, kps[0].public().clone(), me.clone(), T).await.expect("client connect");
        assert!(c.kx_log().hybrid.load(Ordering::Relaxed) >= 1);
        let submit = c.submit(b"payload-1".to_vec(), T);
        let serve = async {
            match a.recv().await {
                Incoming::ClientSubmit { client, key, bytes, reply } => {
                    assert_eq!(key, ClientKeyId(me.public().node_id()), "the submission names the client key");
                    assert_eq!(bytes, b"payload-1");
                    reply.send(b"ack-1".to_vec()).expect("reply");
                    client
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        let (ack, client) = futures_lite::future::zip(submit, serve).await;
        assert_eq!(ack.expect("ack"), b"ack-1");
        assert_eq!(a.clients(), vec![client]);
        for i in 0..3u8 {
            a.send_client_event(client, vec![b'e', i]).expect("event");
        }
        for i in 0..3u8 {
            assert_eq!(c.next_event(T).await.expect("event"), vec![b'e', i]);
        }

        // A node that holds another key is refused by the client.
        let wrong = Keypair::generate().expect("keygen");
        match ClientConnection::connect(caddr, wrong.public().clone(), me.clone(), T).await {
            Err(TransportError::IdentityMismatch(_)) => {}
            other => panic!("expected IdentityMismatch, got {other:?}"),
        }
        // The node signed one proof per client connection, each after the client's verified.
        let s = a.stats();
        assert_eq!(s.proofs_signed, 2, "{s:?}");
        assert_eq!(s.proofs_verified, 2, "{s:?}");
    });
}

#[test]
fn a_client_key_the_node_does_not_accept_is_refused_and_its_payload_goes_nowhere() {
    run(|| async {
        let (kps, peers) = cluster(1);
        let allowed = Keypair::generate().expect("keygen");
        let mut cfg = TransportConfig::new(kps[0].clone(), peers.clone(), 0, peers[0].addr);
        cfg.client_bind = Some(free_addr());
        cfg.client_keys = vec![allowed.public().clone()];
        let a = ShardTransport::new(cfg).expect("node");
        let caddr = a.client_addr().expect("client endpoint");

        let stranger = Arc::new(Keypair::generate().expect("keygen"));
        match ClientConnection::connect(caddr, kps[0].public().clone(), stranger, T).await {
            Err(TransportError::NotAuthorized(_)) => {}
            other => panic!("expected NotAuthorized, got {other:?}"),
        }
        let s = a.stats();
        assert_eq!(s.client_refusals, 1, "{s:?}");
        assert_eq!(s.proofs_signed, 0, "the node signs nothing for an unknown client: {s:?}");
        assert_eq!(s.handshakes_ok, 0);
        assert!(a.clients().is_empty());
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert!(a.try_recv().is_none(), "nothing from the refused client reaches the shard");
    });
}
