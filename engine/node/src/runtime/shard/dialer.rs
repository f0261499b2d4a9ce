//! The dialer: a background task that keeps a verified connection to every peer. Owns only its
//! own task state (when each peer went down, handshakes in flight); calls the transport's
//! `connect` and nothing else.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqdag_transport::{PeerId, ShardTransport};

/// Keeps a verified connection to every peer: dials the ones that are down once a second
/// (the transport adds backoff and jitter), so `/health` reflects reachability before the
/// first poll needs it.
///
/// Of each pair, the lower-indexed node dials; the other dials too only once the peer has
/// been down for `DIAL_FALLBACK`. Both sides dialing at once costs two post-quantum
/// handshakes and a tie-break per pair, and at 100 nodes starting together that storm
/// (~10 000 handshakes) starved every process past its handshake timeouts. Handshakes in
/// flight are capped for the same reason.
pub(super) fn spawn_dialer(transport: Rc<ShardTransport>, me: usize, members: usize, stop: Arc<AtomicBool>) {
    const DIAL_FALLBACK: Duration = Duration::from_secs(3);
    const DIALS_IN_FLIGHT_MAX: usize = 8;
    let peers: Vec<PeerId> = (0..members).filter(|i| *i != me).map(PeerId).collect();
    glommio::spawn_local(async move {
        let in_flight = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let mut down_since: Vec<Option<Instant>> = vec![None; peers.iter().map(|p| p.0 + 1).max().unwrap_or(0)];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            for p in &peers {
                if transport.is_connected(*p) {
                    down_since[p.0] = None;
                    continue;
                }
                let since = *down_since[p.0].get_or_insert(now);
                if p.0 < me && now.duration_since(since) < DIAL_FALLBACK {
                    continue; // the peer dials us
                }
                if in_flight.get() >= DIALS_IN_FLIGHT_MAX {
                    break;
                }
                in_flight.set(in_flight.get() + 1);
                let (t, p, n) = (transport.clone(), *p, in_flight.clone());
                glommio::spawn_local(async move {
                    let _ = t.connect(p, Duration::from_secs(2)).await;
                    n.set(n.get() - 1);
                })
                .detach();
            }
            glommio::timer::Timer::new(Duration::from_secs(1)).await;
        }
    })
    .detach();
}
