//! Real-process test of the gateway's byte quotas (issue 17, "admission counts payloads and
//! bytes"): `engine run` children, real QUIC, real ML-DSA-87, real RocksDB.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pqdag_wire::limits::PAYLOAD_BYTES_MAX;
use pqdag_wire::{ClientStatus, VertexId};

/// What one 64 KiB payload with one key weighs against the quotas (`quotas::submission_bytes`).
const WEIGHT: u64 = PAYLOAD_BYTES_MAX as u64 + 32 + 64;
/// One client key's byte quota at one node (`CLIENT_INFLIGHT_BYTES_PER_KEY_MAX`).
const PER_KEY: u64 = 32 << 20;

/// Node 0 alone (its peers stopped) admits but decides nothing, so whatever it admits stays in
/// flight: a client sending payloads of the largest size gets exactly its byte quota's worth in
/// (511, where the count quota alone would have let 4 096 x 64 KiB = 256 MiB in) and a clear
/// `Overloaded` for the rest, nothing half-admitted. Once the peers are back every admitted
/// payload is final, the bytes are released, and the same client gets in again. Fails if bytes
/// are not counted, counted twice, or never released.
#[test]
fn large_payloads_meet_the_byte_quota_and_are_decided_once_peers_return() {
    let _serial = cluster_lock();
    let mut c = Cluster::new(3, 27600);
    c.start_all();
    for i in 0..3 {
        c.wait_healthy(i, Duration::from_secs(60));
    }
    assert!(c.stop(1) && c.stop(2), "peers stop cleanly");
    let (admitted, refused) = c.with_clients(&[0], |conns| {
        Box::pin(async move {
            let (mut admitted, mut refused) = (Vec::new(), Vec::new());
            for n in 0..600u64 {
                match submit(&conns[0], n, vec![n as u8; PAYLOAD_BYTES_MAX], key(n)).await {
                    Ok(id) => admitted.push(id),
                    Err(e) => refused.push(e),
                }
            }
            (admitted, refused)
        })
    });
    let quota = (PER_KEY / WEIGHT) as usize;
    assert_eq!(admitted.len(), quota, "exactly the byte quota's worth admitted; refusals: {:?}", refused.first());
    assert_eq!(refused.len(), 600 - quota);
    for e in &refused {
        assert!(e.starts_with("Overloaded") && e.contains("bytes of this client's submissions undecided"), "{e}");
    }
    let held = |c: &Cluster| {
        let (_, text) = c.http(0, "/metrics").expect("metrics");
        text.lines().filter(|l| l.starts_with("pqdag_bounded{") && l.contains("kind=\"gateway_inflight_bytes\"")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>()
    };
    // The gauge is published once a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while held(&c) != (quota as u64 * WEIGHT) as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(held(&c), (quota as u64 * WEIGHT) as f64, "the node holds what it admitted");

    c.start(1);
    c.start(2);
    let (statuses, again) = c.with_clients(&[0], move |conns| {
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut st;
            loop {
                st = statuses(&conns[0], &admitted).await;
                if st.iter().all(|s| matches!(s, ClientStatus::Final { .. })) || Instant::now() > deadline {
                    break;
                }
                glommio::timer::Timer::new(Duration::from_millis(500)).await;
            }
            let again: Result<VertexId, String> = submit(&conns[0], 10_000, vec![7; PAYLOAD_BYTES_MAX], key(10_000)).await;
            (st, again)
        })
    });
    let finals = statuses.iter().filter(|s| matches!(s, ClientStatus::Final { .. })).count();
    assert_eq!(finals, quota, "every admitted payload final once the peers are back: {statuses:?}");
    assert!(again.is_ok(), "decisions released the client's bytes: {again:?}");
}
