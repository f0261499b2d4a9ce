//! Stream metering over real QUIC (issue 14): a metered peer's queries beyond its credit are
//! never sent, it is reported as starved, and the meter lapses on its own.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{cluster, node, run, P0, P1};
use pqdag_transport::{Incoming, BI_STREAMS_MAX};

const T: Duration = Duration::from_secs(10);

#[test]
fn a_metered_peer_sends_no_more_queries_than_its_credit_until_the_meter_lapses() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = Rc::new(node(&kps, &peers, 0));
        let b = Rc::new(node(&kps, &peers, 1));
        a.connect(P1, T).await.expect("connect");
        // b meters a from the start: 100 new streams a second, 10 unused at most, for 2 s.
        let hold = Duration::from_secs(2);
        b.meter_streams(P0, 100, 10, hold);
        assert!(b.is_metered(P0) && !a.is_metered(P1));
        let metered_at = Instant::now();
        // b's shard answers every query at once.
        let received = Rc::new(Cell::new(0u32));
        let (b2, r2) = (b.clone(), received.clone());
        glommio::spawn_local(async move {
            loop {
                if let Incoming::Query { bytes, reply, .. } = b2.recv().await {
                    r2.set(r2.get() + 1);
                    let _ = reply.send(bytes);
                }
            }
        })
        .detach();
        // a floods: 3 000 queries at once (what the flood attacker does, unbounded).
        let flood = 3_000u32;
        let answered = Rc::new(Cell::new(0u32));
        for i in 0..flood {
            let (a2, ans) = (a.clone(), answered.clone());
            glommio::spawn_local(async move {
                if a2.send_query(P1, i.to_be_bytes().to_vec(), T).await.is_ok() {
                    ans.set(ans.get() + 1);
                }
            })
            .detach();
        }
        // While metered: the credit a held before the meter (QUIC cannot take credit back), then
        // ~100 a second.
        let mut starved = false;
        while metered_at.elapsed() < Duration::from_millis(1_500) {
            starved |= b.take_starved_peers().contains(&P0);
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let during = received.get();
        eprintln!("metered for 1.5 s: {during} of {flood} queries arrived");
        let allowed = BI_STREAMS_MAX + 150 + 10 + 40;
        assert!(during <= allowed, "metered: {during} queries arrived in 1.5 s, credit allows ~{allowed}");
        assert!(during >= BI_STREAMS_MAX + 50, "credit keeps coming while metered: {during}");
        assert!(starved, "a peer spending every credit is reported starved");
        assert!(b.is_metered(P0));
        // The meter lapses after `hold`: the rest goes through at once.
        let all = common::eventually(Duration::from_secs(6), || answered.get() == flood).await;
        assert!(all, "after the meter lapsed every query is answered: {} of {flood}", answered.get());
        assert!(!b.is_metered(P0));
        assert!(metered_at.elapsed() >= hold);
        assert_eq!(received.get(), flood);
    });
}

/// A metered flooder that reconnects gets no fresh stream credit: a connection may open
/// `PRE_AUTH_BI_STREAMS` before its proof verifies and a metered peer's none of its own after,
/// where every handshake used to grant `BI_STREAMS_MAX` that QUIC cannot take back.
#[test]
fn a_metered_peer_that_reconnects_gets_no_fresh_credit() {
    run(|| async {
        let (kps, peers) = cluster(2);
        let a = node(&kps, &peers, 0);
        let b = Rc::new(node(&kps, &peers, 1));
        a.connect(P1, T).await.expect("connect");
        b.meter_streams(P0, 100, 10, Duration::from_secs(30));
        let received = Rc::new(Cell::new(0u32));
        let (b2, r2) = (b.clone(), received.clone());
        glommio::spawn_local(async move {
            loop {
                if let Incoming::Query { bytes, reply, .. } = b2.recv().await {
                    r2.set(r2.get() + 1);
                    let _ = reply.send(bytes);
                }
            }
        })
        .detach();
        // a restarts (a new process on the same address and key) and floods at once.
        a.close().await;
        assert!(common::eventually(T, || !b.is_connected(P0)).await, "b did not notice a closing");
        let a = Rc::new(node(&kps, &peers, 0));
        a.connect(P1, T).await.expect("reconnect");
        let before = received.get();
        let start = Instant::now();
        for i in 0..2_000u32 {
            let a2 = a.clone();
            glommio::spawn_local(async move {
                let _ = a2.send_query(P1, i.to_be_bytes().to_vec(), T).await;
            })
            .detach();
        }
        glommio::timer::sleep(Duration::from_millis(1_000)).await;
        let got = received.get() - before;
        let allowed = pqdag_transport::PRE_AUTH_BI_STREAMS + (100.0 * start.elapsed().as_secs_f64()) as u32 + 10 + 30;
        eprintln!("reconnected metered peer: {got} queries arrived in {:?} (allowed ~{allowed})", start.elapsed());
        assert!(b.is_metered(P0), "the meter outlives the connection");
        assert!(got <= allowed, "a reconnect brought fresh credit: {got} queries in 1 s");
        assert!(got >= 20, "the metered peer is still served at its rate: {got}");
    });
}
