//! Connections of one endpoint: the table of live `quinn_proto::Connection`s with their
//! lifecycle (handshake, identity deadline, retirement of a duplicate, loss, drain), which of
//! them must be driven this round, their timers, and the datagrams they emit.
//!
//! Owns: [`Conn`] and [`Conns`] (the table, the dirty list, the transmit buffer) and the
//! application close codes. May call: peers (to release a lost connection's slot and log why),
//! rpc (to fail replies), streams, stats, udp (the datagram batch).

use std::collections::HashMap;
use std::time::Instant;

use quinn_proto::{ConnectionError, StreamId, VarInt};

use super::peers::{Failure, Peers, Waiters};
use super::queues::OutQueue;
use super::rpc::ReplyTx;
use super::stats::Stats;
use super::streams::Streams;
use super::udp::{Datagram, Datagrams};
use crate::config::*;
use crate::TransportError;

/// Application close codes (CONNECTION_CLOSE of type application).
pub mod close_code {
    /// Orderly shutdown.
    pub const NORMAL: u32 = 0;
    /// The peer's ML-DSA key is not in the cluster.
    pub const UNKNOWN_PEER: u32 = 1;
    /// The peer's binding proof did not verify against the expected key.
    pub const IDENTITY_MISMATCH: u32 = 2;
    /// The peer did not prove its identity within `IDENTITY_TIMEOUT`.
    pub const IDENTITY_TIMEOUT: u32 = 3;
    /// The identity stream was malformed.
    pub const BAD_PROOF: u32 = 4;
    /// Both sides dialed; this connection lost the tie-break.
    pub const DUPLICATE: u32 = 5;
    /// The peer is banned for proven misbehaviour; reconnects are refused until the ban ends.
    pub const BANNED: u32 = 6;
    /// The client's ML-DSA key is not in the node's accepted client keys.
    pub const NOT_AUTHORIZED: u32 = 7;
}

/// Which pre-auth pool an accepted, not yet verified connection counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreAuth {
    /// One of the slots reserved for configured peer `p` (its validated source address).
    Reserved(usize),
    /// The pool shared by every other source.
    Shared,
}

/// One connection and what the driver knows of it.
pub(crate) struct Conn {
    pub(crate) conn: quinn_proto::Connection,
    /// Unique per endpoint for the process lifetime (handles are reused; serials are not).
    pub(crate) serial: u64,
    pub(crate) dialer: bool,
    pub(crate) connected: bool,
    /// The peer we dialed (Node, ClientDialer).
    pub(crate) expected: Option<usize>,
    /// The peer proven (Node), or `Some(0)` for the server (ClientDialer).
    pub(crate) peer: Option<usize>,
    pub(crate) verified: bool,
    /// A proof arrived (verified or not): a second one is never checked.
    pub(crate) proof_seen: bool,
    /// The client's key id, once its proof verified (ClientServer).
    pub(crate) client_key: Option<[u8; 32]>,
    /// The pre-auth slot an accepted connection holds until it is verified or closed.
    pub(crate) pre_auth: Option<PreAuth>,
    /// Dialer: when the acceptor's proof is due (set at handshake completion). Acceptor: when
    /// the dialer's proof is due (set on arrival, [`PRE_AUTH_TIMEOUT`]).
    pub(crate) identity_deadline: Instant,
    pub(crate) retire_at: Option<Instant>,
    pub(crate) streams: Streams,
    pub(crate) replies: HashMap<StreamId, ReplyTx>,
    /// Queue of a client connection (ClientServer): events to push.
    pub(crate) queue: OutQueue,
    pub(crate) lost_reason: Option<String>,
    /// `on_lost` ran (by event, or because we closed it ourselves).
    pub(crate) lost_handled: bool,
    /// Queued in `Conns::dirty` for the next round.
    pub(crate) dirty: bool,
    /// Earliest timer of this connection as of its last drive (QUIC timers, identity deadline,
    /// retirement). Only driving it or feeding it a datagram changes them.
    pub(crate) wake_at: Option<Instant>,
}

impl Conn {
    /// A new connection (`dialer`: we dialed it, to `expected`; else it holds `pre_auth`).
    pub(crate) fn new(conn: quinn_proto::Connection, serial: u64, dialer: bool, expected: Option<usize>, pre_auth: Option<PreAuth>, now: Instant) -> Self {
        Self {
            conn,
            serial,
            dialer,
            connected: false,
            expected,
            peer: None,
            verified: false,
            proof_seen: false,
            client_key: None,
            pre_auth,
            identity_deadline: now + if dialer { IDENTITY_TIMEOUT } else { PRE_AUTH_TIMEOUT },
            retire_at: None,
            streams: Streams::default(),
            replies: HashMap::new(),
            queue: OutQueue::default(),
            lost_reason: None,
            lost_handled: false,
            dirty: false,
            wake_at: Some(now),
        }
    }

    /// Whether its identity deadline is running: a dialer's from handshake completion, an
    /// acceptor's from arrival (it covers TLS and the proof).
    fn awaiting_proof(&self) -> bool {
        !self.verified && (self.connected || !self.dialer)
    }

    /// The earliest of its timers (QUIC's, the identity deadline, retirement).
    pub(crate) fn timers(&mut self) -> Option<Instant> {
        let mut d = self.conn.poll_timeout();
        let mut take = |t: Instant| d = Some(d.map_or(t, |x: Instant| x.min(t)));
        // Both act only on an open connection: once it is closed (draining), a past identity
        // deadline or retirement would wake the driver in a busy loop until the drain ends.
        if !self.conn.is_closed() {
            if self.awaiting_proof() {
                take(self.identity_deadline);
            }
            if let Some(t) = self.retire_at {
                take(t);
            }
        }
        d
    }

    /// Fires what is due: QUIC timers, the identity deadline, retirement of a duplicate.
    pub(crate) fn handle_timers(&mut self, now: Instant, stats: &Stats) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        if self.awaiting_proof() && now >= self.identity_deadline && !self.conn.is_closed() {
            self.close(now, close_code::IDENTITY_TIMEOUT, "identity timeout");
            self.lost_reason = Some("identity proof timeout".into());
            if !self.dialer {
                stats.get().pre_auth_timeouts += 1;
            }
        }
        if self.retire_at.is_some_and(|t| now >= t) && !self.conn.is_closed() {
            self.close(now, close_code::DUPLICATE, "duplicate connection");
        }
    }

    /// Closes with application code `code`.
    pub(crate) fn close(&mut self, now: Instant, code: u32, reason: &'static str) {
        self.conn.close(now, VarInt::from_u32(code), bytes::Bytes::from_static(reason.as_bytes()));
    }
}

/// The connection table of one endpoint, keyed by quinn's connection handle.
pub(crate) struct Conns {
    pub(crate) map: HashMap<usize, Conn>,
    /// Connections with new input (a datagram, queued frames, a reply, a due timer) to drive
    /// this round. Driving every connection on every wake-up made each packet cost O(peers):
    /// at 100 nodes that alone kept 100 idle processes at 2 cores.
    pub(crate) dirty: Vec<usize>,
    /// Reused buffer for `poll_transmit` (a fresh 1500-byte Vec per attempt was most of the
    /// allocation of an idle node).
    tx_buf: Vec<u8>,
}

impl Conns {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self { map: HashMap::new(), dirty: Vec::new(), tx_buf: Vec::with_capacity(1500) }
    }

    /// Connections held (including ones draining or being retired).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Pre-auth slots of kind `slot` held now: accepted, not verified, not closed.
    pub(crate) fn pre_auth_held(&self, slot: PreAuth) -> usize {
        self.map.values().filter(|c| c.pre_auth == Some(slot) && !c.verified && !c.conn.is_closed()).count()
    }

    /// Adds a new connection and queues it for this round (it has an Initial to send).
    pub(crate) fn insert(&mut self, h: usize, c: Conn) {
        self.map.insert(h, c);
        self.mark(h);
    }

    /// Handles of peer `p`'s verified connections.
    pub(crate) fn verified_of(&self, p: usize) -> Vec<usize> {
        self.map.iter().filter(|(_, c)| c.peer == Some(p) && c.verified).map(|(h, _)| *h).collect()
    }

    /// Applies `f` to each of peer `p`'s verified connections and marks them for the round.
    pub(crate) fn each_verified_of(&mut self, p: usize, mut f: impl FnMut(&mut Conn)) {
        for h in self.verified_of(p) {
            if let Some(c) = self.map.get_mut(&h) {
                f(c);
            }
            self.mark(h);
        }
    }

    /// Queues connection `h` for the next round (no-op if unknown or already queued).
    pub(crate) fn mark(&mut self, h: usize) {
        if let Some(c) = self.map.get_mut(&h) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(h);
            }
        }
    }

    /// Queues every connection.
    pub(crate) fn mark_all(&mut self) {
        let all: Vec<usize> = self.map.keys().copied().collect();
        for h in all {
            self.mark(h);
        }
    }

    /// Queues every connection whose timer is due.
    pub(crate) fn mark_due(&mut self, now: Instant) {
        for (&h, c) in self.map.iter_mut() {
            if !c.dirty && c.wake_at.is_some_and(|t| t <= now) {
                c.dirty = true;
                self.dirty.push(h);
            }
        }
    }

    /// The earliest timer of any connection.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        for c in self.map.values() {
            if let Some(t) = c.wake_at {
                d = Some(d.map_or(t, |x: Instant| x.min(t)));
            }
        }
        d
    }

    /// Closes every open connection of peer `p` (dialed to it or proven as it) because it is
    /// banned; returns how many. They are queued so the next round sends the close.
    pub(crate) fn close_banned(&mut self, p: usize, now: Instant) -> u64 {
        let mut closed = 0u64;
        let mut touched = Vec::new();
        for (&h, conn) in self.map.iter_mut() {
            if (conn.peer == Some(p) || conn.expected == Some(p)) && !conn.conn.is_closed() {
                conn.close(now, close_code::BANNED, "banned");
                conn.lost_reason = Some("banned for misbehaviour".into());
                closed += 1;
                touched.push(h);
            }
        }
        // Closed outside a drive: the next round must send the close and do the bookkeeping.
        for h in touched {
            self.mark(h);
        }
        closed
    }

    /// Moves connection `h`'s datagrams into `out`, up to `segments` of them per send (GSO).
    /// Returns true if it has more than one round's worth (it is queued again; the caller lets
    /// the receive task run first).
    pub(crate) fn transmit(&mut self, h: usize, now: Instant, segments: usize, out: &mut Datagrams) -> bool {
        let Some(c) = self.map.get_mut(&h) else { return false };
        let mut n = 0;
        loop {
            self.tx_buf.clear();
            let Some(t) = c.conn.poll_transmit(now, segments.max(1), &mut self.tx_buf) else { break };
            let segment = t.segment_size.unwrap_or(t.size).max(1);
            debug_assert!(t.size.div_ceil(segment) <= segments.max(1), "quinn-proto coalesced more datagrams than asked");
            out.push(Datagram { to: t.destination, bytes: self.tx_buf[..t.size].to_vec(), segment });
            n += t.size.div_ceil(segment);
            if n >= 256 {
                // More next round; let the receive task run first.
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(h);
                }
                return true;
            }
        }
        false
    }

    /// Bookkeeping of a lost (or locally closed) connection, once: counters, its replies fail,
    /// its peer slot is freed for a re-dial and remembers why.
    pub(crate) fn on_lost(&mut self, h: usize, now: Instant, reason: ConnectionError, peers: &mut Peers, stats: &Stats, waiters: &Waiters) {
        let Some(c) = self.map.get_mut(&h) else { return };
        if c.lost_handled {
            return;
        }
        c.lost_handled = true;
        let (classical, text) = classify_lost(&reason);
        let text = c.lost_reason.take().unwrap_or(text);
        let mut s = stats.get();
        if c.verified {
            s.connections_lost += 1;
            if let Some(p) = c.peer {
                if let Some(ps) = s.peers.get_mut(p) {
                    ps.connections_lost += 1;
                }
            }
        } else {
            s.handshakes_failed += 1;
            if classical {
                s.classical_only_refusals += 1;
                tracing::warn!(conn = h, "handshake refused: no X25519MLKEM768 in common ({text})");
            } else {
                tracing::info!(conn = h, "handshake failed: {text}");
            }
        }
        drop(s);
        for (_, r) in c.replies.drain() {
            r.complete(Err(TransportError::ConnectionLost(text.clone())));
        }
        c.streams.pending.clear();
        let failure = Failure::of_lost(classical, &reason, &text);
        if let Some(p) = c.expected.or(c.peer) {
            peers.release(p, h, now, failure);
        }
        waiters.wake_all();
    }
}

/// Bookkeeping of a drained connection `c` (handle `h`, already removed from the table).
pub(crate) fn forget(h: usize, c: Conn, peers: &mut Peers, waiters: &Waiters) {
    waiters.wake_all();
    peers.forget_conn(h);
    for (_, r) in c.replies {
        r.complete(Err(TransportError::ConnectionLost("drained".into())));
    }
}

/// Whether a connection error is a refusal of a classical-only handshake, and its text.
pub(crate) fn classify_lost(reason: &ConnectionError) -> (bool, String) {
    let text = reason.to_string();
    let classical = text.contains("NoKxGroupsInCommon")
        || matches!(reason, ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == 0x100 + 40);
    (classical, text)
}
