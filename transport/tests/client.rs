//! The client endpoint: server authenticated by ML-DSA binding, submissions and events.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use pqdag_crypto::Keypair;
use pqdag_transport::{ClientConnection, Incoming, ShardTransport, TransportConfig, TransportError};

const T: Duration = Duration::from_secs(5);

#[test]
fn client_submits_and_receives_events_and_checks_the_server_key() {
    run(|| async {
        let (kps, peers) = cluster(1);
        let mut cfg = TransportConfig::new(kps[0].clone(), peers.clone(), 0, peers[0].addr);
        cfg.client_bind = Some(free_addr());
        let a = ShardTransport::new(cfg).expect("node");
        let caddr = a.client_addr().expect("client endpoint");
        assert!(caddr.ip().is_loopback());

        let c = ClientConnection::connect(caddr, kps[0].public().clone(), T).await.expect("client connect");
        assert!(c.kx_log().hybrid.load(Ordering::Relaxed) >= 1);
        let submit = c.submit(b"payload-1".to_vec(), T);
        let serve = async {
            match a.recv().await {
                Incoming::ClientSubmit { client, bytes, reply } => {
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
        match ClientConnection::connect(caddr, wrong.public().clone(), T).await {
            Err(TransportError::IdentityMismatch(_)) => {}
            other => panic!("expected IdentityMismatch, got {other:?}"),
        }
    });
}
