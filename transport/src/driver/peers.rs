//! The configured peers: their keys and addresses, which connection each sends on, dialing
//! with jittered exponential backoff, bans (bounded cool-offs of misbehaving peers), why the
//! last connection failed, and the tasks waiting for a peer to be verified.
//!
//! Owns: [`Peers`] (the slots, the node-id index, the backoff RNG, the failure log) and
//! [`Waiters`]. May call: the endpoint (to dial), the connection table (to register a dial,
//! close a banned peer's connections, retire a duplicate), queues (a slot's send queue), rpc
//! (to fail a banned peer's requests), stats.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::task::Waker;
use std::time::{Duration, Instant};

use pqdag_crypto::PublicKey;
use quinn_proto::ConnectionError;
use rand::{Rng, SeedableRng};

use super::connection::{close_code, Conn, Conns};
use super::endpoint::EndpointState;
use super::queues::{Out, OutQueue};
use super::stats::Stats;
use super::Mode;
use crate::config::*;
use crate::TransportError;

/// One configured peer.
pub(crate) struct PeerSlot {
    pub(crate) public_key: PublicKey,
    pub(crate) node_id: [u8; 32],
    pub(crate) addr: SocketAddr,
    pub(crate) is_self: bool,
    /// The connection we send on (dialing, or verified).
    pub(crate) conn: Option<usize>,
    backoff: Duration,
    next_dial: Option<Instant>,
    pub(crate) queue: OutQueue,
    /// Banned until then: no dial, no send, its connections are closed on sight.
    banned_until: Option<Instant>,
}

impl PeerSlot {
    /// Whether it is banned at `now`.
    fn banned_at(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| t > now)
    }
}

/// Why the last connection to a peer failed (for the client connector's error).
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    Refused(String),
    Identity(String),
    NotAuthorized(String),
    Lost(String),
}

impl Failure {
    /// The error a waiting connector sees.
    pub(crate) fn into_error(self) -> TransportError {
        match self {
            Failure::Refused(reason) => TransportError::HandshakeRefused { reason },
            Failure::Identity(r) => TransportError::IdentityMismatch(r),
            Failure::NotAuthorized(r) => TransportError::NotAuthorized(r),
            Failure::Lost(r) => TransportError::ConnectionLost(r),
        }
    }

    /// Why a connection was lost (`classical`: the handshake offered no hybrid key exchange).
    pub(crate) fn of_lost(classical: bool, reason: &ConnectionError, text: &str) -> Self {
        if classical {
            Failure::Refused("no common key exchange: X25519MLKEM768 is required".into())
        } else if let ConnectionError::ApplicationClosed(ac) = reason {
            let code = u64::from(ac.error_code);
            if code == close_code::NOT_AUTHORIZED as u64 {
                Failure::NotAuthorized(text.to_owned())
            } else if code == close_code::UNKNOWN_PEER as u64 || code == close_code::IDENTITY_MISMATCH as u64 {
                Failure::Identity(text.to_owned())
            } else {
                Failure::Lost(text.to_owned())
            }
        } else if text.contains("identity") {
            Failure::Identity(text.to_owned())
        } else {
            Failure::Lost(text.to_owned())
        }
    }
}

/// Wakers of tasks waiting for a peer connection to be verified (connect, client connect).
#[derive(Default)]
pub(crate) struct Waiters(RefCell<Vec<Waker>>);

impl Waiters {
    /// Registers a waiting task.
    pub(crate) fn push(&self, w: Waker) {
        self.0.borrow_mut().push(w);
    }

    /// Wakes every waiting task (something about a peer's connection changed).
    pub(crate) fn wake_all(&self) {
        for w in self.0.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// The peer table of one endpoint.
pub(crate) struct Peers {
    slots: Vec<PeerSlot>,
    by_node_id: HashMap<[u8; 32], usize>,
    last_failure: HashMap<usize, Failure>,
    rng: rand::rngs::SmallRng,
}

impl Peers {
    /// Slots for `peers` in their configured order; on a node endpoint the one with our own id
    /// (`own`) is marked as ourselves and never dialed. `seed` seeds the backoff jitter.
    pub(crate) fn new(peers: Vec<(PublicKey, SocketAddr)>, own: [u8; 32], mode: Mode, seed: u64) -> Self {
        let mut by_node_id = HashMap::new();
        let slots: Vec<PeerSlot> = peers
            .into_iter()
            .enumerate()
            .map(|(i, (pk, addr))| {
                let node_id = pk.node_id();
                by_node_id.insert(node_id, i);
                PeerSlot {
                    is_self: node_id == own && mode == Mode::Node,
                    public_key: pk,
                    node_id,
                    addr,
                    conn: None,
                    backoff: BACKOFF_INITIAL,
                    next_dial: None,
                    queue: OutQueue::default(),
                    banned_until: None,
                }
            })
            .collect();
        Self { slots, by_node_id, last_failure: HashMap::new(), rng: rand::rngs::SmallRng::seed_from_u64(seed) }
    }

    /// Number of configured peers.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Peer `p`'s slot.
    pub(crate) fn get(&self, p: usize) -> Option<&PeerSlot> {
        self.slots.get(p)
    }

    /// Peer `p`'s slot, to reach its send queue.
    pub(crate) fn get_mut(&mut self, p: usize) -> Option<&mut PeerSlot> {
        self.slots.get_mut(p)
    }

    /// Whether `p` has frames queued but no connection (a dial is due once its backoff ends).
    pub(crate) fn wants_dial(&self, p: usize) -> bool {
        self.slots[p].conn.is_none() && !self.slots[p].queue.is_empty()
    }

    /// The slots in configured order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, PeerSlot> {
        self.slots.iter()
    }

    /// The peer whose key has this node id.
    pub(crate) fn by_node_id(&self, node_id: &[u8; 32]) -> Option<usize> {
        self.by_node_id.get(node_id).copied()
    }

    /// Peer `p`'s slot if we may send to it now (known, not ourselves, not banned).
    pub(crate) fn sendable(&mut self, p: usize, now: Instant) -> Result<&mut PeerSlot, TransportError> {
        let slot = self.slots.get_mut(p).ok_or(TransportError::UnknownPeer)?;
        if slot.is_self {
            return Err(TransportError::UnknownPeer);
        }
        if slot.banned_at(now) {
            return Err(TransportError::Banned);
        }
        Ok(slot)
    }

    /// Why the last connection to `p` failed, if no new one is being made.
    pub(crate) fn failure_if_idle(&self, p: usize) -> Option<&Failure> {
        let dialing = self.slots.get(p).and_then(|s| s.conn).is_some();
        if dialing {
            return None;
        }
        self.last_failure.get(&p)
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // Jitter in [d/2, d): peers that lost each other together do not re-dial in step.
        let ms = d.as_millis().max(2) as u64;
        Duration::from_millis(self.rng.random_range(ms / 2..ms))
    }

    /// Forgets `p`'s backoff so the next dial may go at once (explicit connect).
    pub(crate) fn clear_next_dial(&mut self, p: usize) {
        if let Some(s) = self.slots.get_mut(p) {
            s.next_dial = None;
        }
    }

    /// Dials `p` unless it has a connection, is ourselves or banned, the endpoint is closing,
    /// its backoff has not run out, or (unless `force`) nothing is queued for it.
    pub(crate) fn maybe_dial(&mut self, p: usize, now: Instant, ep: &mut EndpointState, conns: &mut Conns, stats: &Stats, force: bool) {
        let Some(slot) = self.slots.get_mut(p) else { return };
        if slot.is_self || slot.conn.is_some() || ep.closing {
            return;
        }
        match slot.banned_until {
            Some(t) if t > now => return,
            Some(_) => {
                // The cool-off is over: dial afresh; the core re-judges the peer by its score.
                slot.banned_until = None;
                slot.backoff = BACKOFF_INITIAL;
                slot.next_dial = None;
            }
            None => {}
        }
        let slot = &self.slots[p];
        if !force && slot.queue.is_empty() {
            return;
        }
        if slot.next_dial.is_some_and(|t| t > now) {
            return;
        }
        let Some(cfg) = ep.client_cfg() else { return };
        let addr = slot.addr;
        stats.get().dials += 1;
        match ep.connect(now, cfg, addr, p) {
            Ok((h, conn)) => {
                conns.insert(h, conn);
                self.slots[p].conn = Some(h);
                self.last_failure.remove(&p);
            }
            Err(e) => {
                tracing::warn!(peer = p, %addr, "dial failed: {e}");
                self.schedule_redial(p, now);
                self.last_failure.insert(p, Failure::Lost(format!("dial: {e}")));
            }
        }
    }

    fn schedule_redial(&mut self, p: usize, now: Instant) {
        let Some(backoff) = self.slots.get(p).map(|s| s.backoff) else { return };
        let delay = self.jitter(backoff);
        let s = &mut self.slots[p];
        s.next_dial = Some(now + delay);
        s.backoff = (backoff * 2).min(BACKOFF_MAX);
    }

    /// Connection `h` of peer `p` was lost: if it was the one `p` sends on, free the slot,
    /// schedule a re-dial and remember `failure`.
    pub(crate) fn release(&mut self, p: usize, h: usize, now: Instant, failure: Failure) {
        if self.slots.get(p).is_some_and(|s| s.conn == Some(h)) {
            self.slots[p].conn = None;
            self.schedule_redial(p, now);
            self.last_failure.insert(p, failure);
        }
    }

    /// Connection `h` drained: no slot sends on it any more.
    pub(crate) fn forget_conn(&mut self, h: usize) {
        for p in self.slots.iter_mut() {
            if p.conn == Some(h) {
                p.conn = None;
            }
        }
    }

    /// Connection `h` was just verified as peer `p` (`dialer`: we dialed it; `own_id`: our node
    /// id). One connection per peer: if another exists, keep the one dialed by the smaller
    /// node id (both sides decide alike); the loser lingers, then closes. Resets the backoff.
    pub(crate) fn adopt(&mut self, p: usize, h: usize, dialer: bool, own_id: [u8; 32], conns: &mut Conns, now: Instant) {
        let dialer_id = if dialer { own_id } else { self.slots[p].node_id };
        let current = self.slots[p].conn;
        match current {
            None => self.slots[p].conn = Some(h),
            Some(o) if o == h => {}
            Some(o) => {
                let other_dialer = conns.map.get(&o).map(|oc| if oc.dialer { own_id } else { self.slots[p].node_id });
                let new_wins = match other_dialer {
                    None => true,
                    Some(od) if od == dialer_id => true, // same dialer: the newer replaces a stale one
                    Some(od) => dialer_id < od,
                };
                let (winner, loser) = if new_wins { (h, o) } else { (o, h) };
                self.slots[p].conn = Some(winner);
                if let Some(lc) = conns.map.get_mut(&loser) {
                    lc.retire_at = Some(now + DUPLICATE_GRACE);
                }
                conns.mark(loser);
                conns.mark(winner);
            }
        }
        self.slots[p].backoff = BACKOFF_INITIAL;
        self.slots[p].next_dial = None;
        self.last_failure.remove(&p);
    }

    /// Bans `p` until `until`: its queue is dropped (requests fail with `Banned`) and its
    /// connections are closed. Returns whether it was not banned before.
    pub(crate) fn ban(&mut self, p: usize, until: Instant, now: Instant, conns: &mut Conns, stats: &Stats) -> Result<bool, TransportError> {
        let slot = self.slots.get_mut(p).ok_or(TransportError::UnknownPeer)?;
        if slot.is_self {
            return Err(TransportError::UnknownPeer);
        }
        let newly = slot.banned_until.is_none_or(|t| t <= now);
        slot.banned_until = Some(slot.banned_until.filter(|t| *t > until).unwrap_or(until));
        slot.conn = None;
        slot.next_dial = None;
        let queued: Vec<Out> = std::iter::from_fn(|| slot.queue.pop()).collect();
        for o in queued {
            if let Out::Bi { reply, .. } = o {
                reply.complete(Err(TransportError::Banned));
            }
        }
        let closed = conns.close_banned(p, now);
        let mut s = stats.get();
        if newly {
            s.bans += 1;
        }
        drop(s);
        tracing::debug!(peer = p, closed, "peer banned");
        Ok(newly)
    }

    /// Lifts `p`'s ban; it may be dialed at once. Returns false for an unknown peer.
    pub(crate) fn unban(&mut self, p: usize) -> bool {
        let Some(slot) = self.slots.get_mut(p) else { return false };
        slot.banned_until = None;
        slot.backoff = BACKOFF_INITIAL;
        slot.next_dial = None;
        true
    }

    /// Whether `p` is banned at `now`.
    pub(crate) fn is_banned(&self, p: usize, now: Instant) -> bool {
        self.slots.get(p).is_some_and(|s| s.banned_at(now))
    }

    /// The configured peer (not ourselves) whose address is `addr`.
    pub(crate) fn by_addr(&self, addr: SocketAddr) -> Option<usize> {
        self.slots.iter().position(|s| s.addr == addr && !s.is_self)
    }

    /// Whether `addr` is the configured address of a peer banned at `now`.
    pub(crate) fn is_banned_addr(&self, addr: SocketAddr, now: Instant) -> bool {
        self.slots.iter().any(|s| s.addr == addr && s.banned_at(now))
    }

    /// Refuses verified connection `c` because its peer is banned.
    pub(crate) fn refuse_banned(c: &mut Conn, now: Instant, stats: &Stats) {
        c.close(now, close_code::BANNED, "banned");
        c.lost_reason = Some("banned for misbehaviour".into());
        stats.get().ban_refusals += 1;
    }

    /// The earliest instant a peer with queued frames and no connection may be dialed.
    pub(crate) fn next_dial(&self, now: Instant) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        for p in &self.slots {
            if p.conn.is_none() && !p.queue.is_empty() {
                let t = p.banned_until.filter(|t| *t > now).or(p.next_dial).unwrap_or(now);
                d = Some(d.map_or(t, |x: Instant| x.min(t)));
            }
        }
        d
    }
}
