//! Stream credit for metered peers (issue 14): a peer whose queries went over the shard's
//! budget gets new bidirectional streams (queries, fetches, history sync) only at the rate the
//! shard names, through QUIC's own flow control. Its connection stops re-granting a stream
//! when one closes (`max_concurrent_streams` 0); a tick every [`TICK`] grants what the rate
//! allows (`MAX_STREAMS`), keeping at most `burst` unused. So the queries it has over its
//! budget are never sent: a budget alone drops them unread, but each still cost its bytes
//! (~5 KB) and its stream, and 20 flooders of 100 nodes cost every honest core ~1 s of CPU a
//! second on bytes alone. A peer that spends every credit it is granted asks for at least its
//! whole budget (an honest node asks at most half): it is reported as starved, and the shard
//! charges it as a query over budget.
//!
//! It also holds pushes: a peer whose own vertices are over the creator bound at the shard
//! ([`Meters::hold`]) gets no new unidirectional stream credit, and its push streams are
//! stopped unread (`STOP_SENDING`, [`stream_code::HELD`](super::stream_code::HELD)) until the
//! shard releases it: what it pushes meanwhile would be dropped unverified anyway, and this way
//! it costs at most what was in flight, not its bytes (decode, BLAKE3) for as long as it keeps
//! pushing. Its bidirectional streams (its queries, and the answers to ours) are not touched,
//! and nothing is left unread, so QUIC's connection window never fills with held data.
//!
//! Owns [`Meters`]. Called by the round (ticks, expiry, new streams of held peers) and the
//! driver's API (start, renew, hold, release); touches the peer's connections only through
//! quinn's stream-credit calls.

use std::time::{Duration, Instant};

use quinn_proto::{Dir, VarInt};

use super::connection::Conns;
use super::peers::Peers;
use crate::config::BI_STREAMS_MAX;

/// How often metered peers are granted credit.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// One metered peer.
struct Meter {
    per_second: u32,
    burst: u32,
    /// Credits earned and not yet granted (at most `burst`).
    level: f64,
    at: Instant,
    until: Instant,
}

/// The metered peers of one node endpoint.
#[derive(Default)]
pub(crate) struct Meters {
    by_peer: Vec<Option<Meter>>,
    /// Peers found with no unused credit at a tick since the last [`Self::take_starved`].
    starved: Vec<usize>,
    /// Peers whose pushes are held (by index; absent: not held).
    held: Vec<bool>,
    next_tick: Option<Instant>,
}

impl Meters {
    /// Meters peer `p` at `per_second` new streams (at most `burst` held unused) until `until`,
    /// or renews (and re-rates) its meter. A new meter starts with no credit. Returns whether
    /// the peer was not metered before (a renewal needs no round of its own).
    pub(crate) fn set(&mut self, p: usize, per_second: u32, burst: u32, until: Instant, now: Instant) -> bool {
        if self.by_peer.len() <= p {
            self.by_peer.resize_with(p + 1, || None);
        }
        let burst = burst.max(1);
        let newly = match &mut self.by_peer[p] {
            Some(m) => {
                m.per_second = per_second;
                m.burst = burst;
                m.until = m.until.max(until);
                false
            }
            slot => {
                *slot = Some(Meter { per_second, burst, level: 0.0, at: now, until });
                true
            }
        };
        self.next_tick.get_or_insert(now);
        newly
    }

    /// Holds peer `p`'s pushes; returns whether they were not held before.
    pub(crate) fn hold(&mut self, p: usize) -> bool {
        if self.held.len() <= p {
            self.held.resize(p + 1, false);
        }
        !std::mem::replace(&mut self.held[p], true)
    }

    /// Releases peer `p`'s pushes; returns whether they were held.
    pub(crate) fn release(&mut self, p: usize) -> bool {
        self.held.get_mut(p).is_some_and(|h| std::mem::replace(h, false))
    }

    /// Whether peer `p`'s pushes are held.
    pub(crate) fn is_held(&self, p: usize) -> bool {
        self.held.get(p).copied().unwrap_or(false)
    }

    /// Whether peer `p` is metered now.
    pub(crate) fn is_metered(&self, p: usize) -> bool {
        self.by_peer.get(p).is_some_and(Option::is_some)
    }

    /// Peers that spent all their credit since the last call (each once).
    pub(crate) fn take_starved(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.starved)
    }

    /// When the next tick is due (`None`: no peer is metered).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.next_tick
    }

    /// One tick, if due: expires lapsed meters (their connections get back the normal
    /// [`BI_STREAMS_MAX`]), and grants each metered peer's active connection the credit its rate
    /// earned, keeping its unused credit at most `burst`. Every connection of a metered peer
    /// re-grants nothing by itself.
    pub(crate) fn tick(&mut self, now: Instant, conns: &mut Conns, peers: &Peers) {
        let Some(due) = self.next_tick else { return };
        if now < due {
            return;
        }
        let mut any = false;
        for p in 0..self.by_peer.len() {
            let Some(m) = self.by_peer[p].as_mut() else { continue };
            if now >= m.until {
                self.by_peer[p] = None;
                conns.each_verified_of(p, |c| c.conn.set_max_concurrent_streams(Dir::Bi, VarInt::from_u32(BI_STREAMS_MAX)));
                continue;
            }
            let handles = conns.verified_of(p);
            any = true;
            let dt = now.saturating_duration_since(m.at).as_secs_f64();
            m.at = now;
            m.level = (m.level + dt * f64::from(m.per_second)).min(f64::from(m.burst));
            let active = peers.get(p).and_then(|s| s.conn);
            for h in handles {
                let Some(c) = conns.map.get_mut(&h) else { continue };
                if Some(h) == active {
                    let allocated = c.conn.max_concurrent_streams(Dir::Bi);
                    let unused = allocated.saturating_sub(c.conn.streams().remote_open_streams(Dir::Bi));
                    if unused == 0 && !self.starved.contains(&p) {
                        self.starved.push(p);
                    }
                    let room = u64::from(m.burst).saturating_sub(unused);
                    let grant = (m.level.floor() as u64).min(room);
                    if grant > 0 {
                        m.level -= grant as f64;
                        // Credit up to `allocated + grant` now, then none as streams close.
                        c.conn.set_max_concurrent_streams(Dir::Bi, VarInt::from_u64(allocated + grant).unwrap_or(VarInt::MAX));
                    }
                }
                c.conn.set_max_concurrent_streams(Dir::Bi, VarInt::from_u32(0));
                conns.mark(h);
            }
        }
        self.next_tick = any.then(|| now + TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_is_renewed_not_reset_and_reports_starved_peers_once() {
        let t0 = Instant::now();
        let mut m = Meters::default();
        assert!(!m.is_metered(3) && m.next_wake().is_none());
        assert!(m.set(3, 200, 20, t0 + Duration::from_secs(30), t0), "a new meter");
        assert!(m.is_metered(3) && !m.is_metered(2));
        assert_eq!(m.next_wake(), Some(t0));
        // A renewal keeps the later deadline and takes the new rate.
        assert!(!m.set(3, 50, 5, t0 + Duration::from_secs(10), t0), "a renewal");
        let meter = m.by_peer[3].as_ref().expect("metered");
        assert_eq!((meter.per_second, meter.burst, meter.until), (50, 5, t0 + Duration::from_secs(30)));
        m.starved.push(3);
        assert_eq!(m.take_starved(), vec![3]);
        assert!(m.take_starved().is_empty());
        // Holds are independent of meters, and idempotent.
        assert!(!m.is_held(5) && !m.release(5));
        assert!(m.hold(5) && !m.hold(5) && m.is_held(5) && !m.is_held(3));
        assert!(m.release(5) && !m.is_held(5) && !m.release(5));
    }
}
