//! Frames over real loopback sockets: volume, exactly-once, request/response.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use pqdag_transport::{Incoming, TransportError};

const T: Duration = Duration::from_secs(10);
const VERTEX_BYTES: usize = 5 * 1024;

fn vertex(i: u32) -> Vec<u8> {
    let mut v = vec![0u8; VERTEX_BYTES];
    v[..4].copy_from_slice(&i.to_le_bytes());
    for (k, b) in v[4..].iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(31).wrapping_add(k) as u8;
    }
    v
}

#[test]
fn ten_thousand_vertices_arrive_intact_exactly_once() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        let b = node(&kps, &peers, 1);
        a.connect(P1, T).await.expect("connect");
        const N: u32 = 10_000;
        let mut seen = HashSet::new();
        let mut sent = 0u32;
        let start = std::time::Instant::now();
        // Keep well under the queue cap so nothing is dropped by design.
        while seen.len() < N as usize {
            while sent < N && sent - seen.len() as u32 <= 2000 {
                a.send_vertex(P1, vertex(sent)).expect("send");
                sent += 1;
            }
            let item = futures_lite::future::or(async { Some(b.recv().await) }, async {
                glommio::timer::sleep(T).await;
                None
            })
            .await;
            match item {
                Some(Incoming::Vertex { peer, bytes }) => {
                    assert_eq!(peer, P0);
                    let i = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
                    assert_eq!(bytes, vertex(i), "frame {i} corrupted");
                    assert!(seen.insert(i), "frame {i} delivered twice");
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => panic!("stalled after {} of {N} frames; stats {:?}", seen.len(), a.stats()),
            }
        }
        let el = start.elapsed();
        assert_eq!(seen.len(), N as usize);
        // Nothing extra arrives.
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert!(b.try_recv().is_none(), "an extra frame arrived");
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sa.queue_drops, 0);
        assert_eq!(sa.frames_out, N as u64);
        assert_eq!(sb.frames_in, N as u64);
        assert_eq!(sb.peers[0].frames_in, N as u64);
        assert_eq!(sb.peers[0].bytes_in, N as u64 * VERTEX_BYTES as u64);
        // Where the kernel segments UDP (`UDP_SEGMENT`, Linux >= 4.18), a 5 KiB frame's
        // datagrams leave in one send: the frames above arrived intact through it.
        if kernel_has_udp_gso() && std::env::var_os("PQDAG_NO_GSO").is_none() {
            assert!(sa.gso_sends > 0, "no GSO send for 10k x 5 KiB frames: {sa:?}");
            assert!(sa.gso_datagrams >= 2 * sa.gso_sends, "a GSO send carries several datagrams: {sa:?}");
            assert!(sa.gso_datagrams <= sa.datagrams_out);
            // On loopback the receiver's kernel keeps such a send whole for a `UDP_GRO`
            // socket: the runs were cut into datagrams at the right places (the frames are
            // intact), and each run cost one receive.
            if kernel_has_udp_gro() && std::env::var_os("PQDAG_NO_GRO").is_none() {
                assert!(sb.gro_receives > 0, "no GRO receive for 10k x 5 KiB frames: {sb:?}");
                assert!(sb.gro_datagrams >= 2 * sb.gro_receives, "a GRO receive carries several datagrams: {sb:?}");
                assert!(sb.gro_datagrams <= sb.datagrams_in);
            }
        }
        eprintln!(
            "10k x 5 KiB in {el:?}: {:.0} frames/s; {} datagrams out, {} in {} GSO sends; {} datagrams in, {} in {} GRO receives",
            N as f64 / el.as_secs_f64(),
            sa.datagrams_out,
            sa.gso_datagrams,
            sa.gso_sends,
            sb.datagrams_in,
            sb.gro_datagrams,
            sb.gro_receives
        );
    });
}

/// Whether this kernel accepts `UDP_SEGMENT` (asked as the transport asks, on a throwaway
/// socket).
fn kernel_has_udp_gso() -> bool {
    use std::os::fd::AsRawFd;
    let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else { return false };
    let v: libc::c_int = 1200;
    // SAFETY: a valid socket, a c_int option value that outlives the call, its size passed.
    unsafe { libc::setsockopt(s.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) == 0 }
}

/// Whether this kernel accepts `UDP_GRO` (Linux >= 5.0).
fn kernel_has_udp_gro() -> bool {
    use std::os::fd::AsRawFd;
    let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else { return false };
    let v: libc::c_int = 1;
    // SAFETY: a valid socket, a c_int option value that outlives the call, its size passed.
    unsafe { libc::setsockopt(s.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) == 0 }
}

#[test]
fn a_thousand_queries_round_trip() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        let b = std::rc::Rc::new(node(&kps, &peers, 1));
        let b2 = b.clone();
        // b's shard: answers queries with the reversed bytes, fetches with a prefix.
        glommio::spawn_local(async move {
            loop {
                match b2.recv().await {
                    Incoming::Query { peer, mut bytes, reply } => {
                        assert_eq!(peer, P0);
                        bytes.reverse();
                        reply.send(bytes).expect("reply");
                    }
                    Incoming::VertexRequest { bytes, reply, .. } => {
                        let mut r = b"V:".to_vec();
                        r.extend_from_slice(&bytes);
                        reply.send(r).expect("reply");
                    }
                    Incoming::Vertex { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .detach();
        a.connect(P1, T).await.expect("connect");
        let start = std::time::Instant::now();
        for i in 0..1000u32 {
            let q: Vec<u8> = format!("query-{i}-payload").into_bytes();
            let r = a.send_query(P1, q.clone(), T).await.expect("query");
            let mut want = q;
            want.reverse();
            assert_eq!(r, want, "response {i}");
        }
        let el = start.elapsed();
        eprintln!("1000 sequential query round trips in {el:?} ({:.1} us each)", el.as_micros() as f64 / 1000.0);
        let r = a.request_vertices(P1, b"ids".to_vec(), T).await.expect("fetch");
        assert_eq!(r, b"V:ids");
        // Batch query: both the live peer and an unknown index answer (the latter with an error).
        let res = a.batch_query(&[P1, pqdag_transport::PeerId(7)], b"abc", T).await;
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].1.as_ref().expect("ok"), b"cba");
        assert!(matches!(res[1].1, Err(TransportError::UnknownPeer)));
        assert_eq!(a.stats().streams_reset, 0);
        assert_eq!(b.stats().frames_in, 1002);
    });
}

#[test]
fn unanswered_query_fails_fast_and_timeout_is_reported() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        let b = node(&kps, &peers, 1);
        a.connect(P1, T).await.expect("connect");
        // b drops the responder: a sees a reset, not a timeout.
        let q = a.send_query(P1, b"q".to_vec(), T);
        let drop_it = async {
            match b.recv().await {
                Incoming::Query { reply, .. } => drop(reply),
                other => panic!("unexpected {other:?}"),
            }
            Ok::<_, TransportError>(Vec::<u8>::new())
        };
        let (r, _) = futures_lite::future::zip(q, drop_it).await;
        assert!(matches!(r, Err(TransportError::StreamReset(_))), "{r:?}");
        // b holds the responder: a times out at its deadline.
        let r = a.send_query(P1, b"q2".to_vec(), Duration::from_millis(100)).await;
        assert!(matches!(r, Err(TransportError::Timeout(_))), "{r:?}");
        let held = b.recv().await;
        assert!(matches!(held, Incoming::Query { .. }));
        // Oversized frames are refused locally.
        let big = vec![0u8; pqdag_transport::MAX_FRAME_BYTES + 1];
        assert!(matches!(a.send_vertex(P1, big), Err(TransportError::FrameTooLarge { .. })));
    });
}

#[test]
fn lost_peer_is_redialed_after_restart() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        let b = node(&kps, &peers, 1);
        a.connect(P1, T).await.expect("connect");
        b.close().await;
        assert!(eventually(T, || !a.is_connected(P1)).await, "a did not notice b closing");
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let b = node(&kps, &peers, 1);
        a.send_vertex(P1, b"\x01\x02after restart".to_vec()).expect("send");
        match futures_lite::future::or(async { Some(b.recv().await) }, async {
            glommio::timer::sleep(T).await;
            None
        })
        .await
        {
            Some(Incoming::Vertex { peer, bytes }) => {
                assert_eq!(peer, P0);
                assert_eq!(bytes, b"\x01\x02after restart");
            }
            other => panic!("no vertex after restart: {other:?} {:?}\n{}\nB:{}", a.stats(), a.debug_summary(), b.debug_summary()),
        }
        assert!(a.stats().dials >= 2);
    });
}

#[test]
fn banned_peer_is_disconnected_refused_and_let_back_after_the_cool_off() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        let b = node(&kps, &peers, 1);
        a.connect(P1, T).await.expect("connect");
        assert!(eventually(T, || b.is_connected(P0)).await, "b never saw a");
        assert!(a.ban_peer(P1, Duration::from_secs(3)).expect("ban"), "first ban is new");
        assert!(!a.ban_peer(P1, Duration::from_secs(3)).expect("ban"), "second ban only extends");
        assert!(a.is_banned(P1) && a.banned_count() == 1);
        assert!(!a.is_connected(P1), "a still sends to a banned peer");
        assert!(matches!(a.send_vertex(P1, b"\x01x".to_vec()), Err(TransportError::Banned)));
        assert!(matches!(a.send_query(P1, b"\x01q".to_vec(), T).await, Err(TransportError::Banned)));
        assert!(matches!(a.connect(P1, T).await, Err(TransportError::Banned)));
        assert!(eventually(T, || !b.is_connected(P0)).await, "b was not disconnected");
        // b's reconnects are refused while the ban lasts.
        assert!(b.connect(P0, Duration::from_secs(1)).await.is_err(), "banned peer got back in");
        assert!(a.stats().ban_refusals >= 1, "{:?}", a.stats());
        assert!(!a.is_connected(P1));
        assert_eq!(a.stats().bans, 1);
        // After the cool-off it may come back.
        assert!(eventually(Duration::from_secs(5), || !a.is_banned(P1)).await);
        b.connect(P0, T).await.expect("reconnect after the cool-off");
        assert!(eventually(T, || a.is_connected(P1)).await);
        // An operator can lift a ban early.
        a.ban_peer(P1, Duration::from_secs(600)).expect("ban");
        assert!(eventually(T, || !b.is_connected(P0)).await);
        a.unban_peer(P1);
        a.connect(P1, T).await.expect("connect after unban");
    });
}
