//! One round of the work task, and what the receive task does with a datagram: the endpoint's
//! state split by owner ([`Core`]) and the dispatch of connection events to the module that
//! owns each (identity to auth, stream data to streams and the inbox, loss to connection,
//! sends to queues, datagrams to udp).
//!
//! Owns: [`Core`] (the per-module states of one endpoint). May call: every driver module;
//! reads the [`Driver`] handle for the shared inbox and stats, the kick flag and the waiters.

use std::net::SocketAddr;
use std::time::Instant;

use quinn_proto::{ConnectionError, Dir, Event, StreamEvent, StreamId, VarInt};

use super::auth::{self, Auth, Proven};
use super::connection::{self, close_code, Conns};
use super::endpoint::EndpointState;
use super::meter::Meters;
use super::peers::Peers;
use super::streams::{self, stream_code, StreamRead, StreamSt};
use super::udp::Datagrams;
use super::{inbox, queues, Driver, Shared};
use crate::config::BI_STREAMS_MAX;
use crate::TransportError;

/// The state of one endpoint, one field per owning module.
pub(crate) struct Core {
    pub(crate) endpoint: EndpointState,
    pub(crate) auth: Auth,
    pub(crate) peers: Peers,
    pub(crate) conns: Conns,
    /// Peers whose stream credit is metered.
    pub(crate) meters: Meters,
    /// Datagrams this round produced, sent by the work task after the round.
    pub(crate) out: Datagrams,
    /// Frames a send queue holds at most.
    pub(crate) frames_max: usize,
}

impl Core {
    /// Connections the endpoint holds (including ones draining or being retired).
    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Frames waiting in the peers' send queues (not yet written to a stream).
    pub(crate) fn queued_frames(&self) -> usize {
        self.peers.iter().map(|p| p.queue.len()).sum()
    }

    /// Feeds one received datagram to the endpoint.
    pub(crate) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], shared: &Shared) {
        self.endpoint.handle_datagram(now, from, data, &mut self.conns, &self.peers, &mut self.out, &shared.stats);
    }

    /// Drives the connections that have something to do: new input, or a due timer.
    pub(crate) fn drive_all(&mut self, now: Instant, drv: &Driver) {
        // Dials for peers with queued frames first, so a new connection is driven (sends its
        // Initial) in this same round.
        for p in 0..self.peers.len() {
            if self.peers.wants_dial(p) {
                self.peers.maybe_dial(p, now, &mut self.endpoint, &mut self.conns, &drv.shared.stats, false);
            }
        }
        if drv.shared.inbox.take_resume() {
            self.resume_throttled(now, drv);
        }
        self.meters.tick(now, &mut self.conns, &self.peers);
        self.conns.mark_due(now);
        // Driving one connection can queue another (a duplicate retired, a winner to pump).
        let mut rounds = 0;
        while !self.conns.dirty.is_empty() && rounds < 4 {
            rounds += 1;
            let mut batch = std::mem::take(&mut self.conns.dirty);
            batch.sort_unstable();
            for h in batch {
                let Some(c) = self.conns.map.get_mut(&h) else { continue };
                c.dirty = false;
                self.drive(h, now, drv);
                if let Some(c) = self.conns.map.get_mut(&h) {
                    c.wake_at = c.timers();
                }
            }
        }
        if !self.conns.dirty.is_empty() {
            drv.kick.raise();
        }
    }

    /// Drives connection `h`: timers, application events, loss bookkeeping, queued sends,
    /// endpoint events, datagrams (in that order).
    fn drive(&mut self, h: usize, now: Instant, drv: &Driver) {
        let shared = &*drv.shared;
        // Timers.
        {
            let Some(c) = self.conns.map.get_mut(&h) else { return };
            c.handle_timers(now, &shared.stats);
        }
        // Application events.
        loop {
            let Some(c) = self.conns.map.get_mut(&h) else { return };
            let Some(ev) = c.conn.poll() else { break };
            match ev {
                Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
                Event::Connected => self.auth.on_connected(self.endpoint.mode, c, now, &shared.stats),
                Event::ConnectionLost { reason } => self.conns.on_lost(h, now, reason, &mut self.peers, &shared.stats, &drv.waiters),
                Event::Stream(StreamEvent::Opened { dir }) => loop {
                    let Some(c) = self.conns.map.get_mut(&h) else { return };
                    let Some(id) = c.conn.streams().accept(dir) else { break };
                    c.streams.states.insert(id, StreamSt::incoming());
                    // Uni streams are read at once (the first carries the proof; frames of
                    // others are held until it verifies); bi streams wait for the proof.
                    if c.verified || dir == Dir::Uni {
                        self.read_stream(h, id, now, drv);
                    } else {
                        c.streams.parked.push(id);
                    }
                },
                Event::Stream(StreamEvent::Readable { id }) => {
                    if !c.streams.parked.contains(&id) && !c.streams.throttled.contains(&id) {
                        self.read_stream(h, id, now, drv);
                    }
                }
                Event::Stream(StreamEvent::Writable { id }) => c.streams.resume_write(&mut c.conn, id),
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    c.streams.pending.remove(&id);
                    if let Some(r) = c.replies.remove(&id) {
                        r.complete(Err(TransportError::StreamReset(error_code.into_inner())));
                    }
                }
                Event::Stream(StreamEvent::Finished { .. }) | Event::Stream(StreamEvent::Available { .. }) => {}
            }
        }
        // A connection we closed ourselves emits no ConnectionLost: do the bookkeeping now.
        if self.conns.map.get(&h).is_some_and(|c| c.conn.is_closed() && !c.lost_handled) {
            self.conns.on_lost(h, now, ConnectionError::LocallyClosed, &mut self.peers, &shared.stats, &drv.waiters);
        }
        // Send queued frames on verified connections.
        queues::pump_conn(self.endpoint.mode, h, &mut self.conns, &mut self.peers, &shared.stats);
        // Endpoint events, then datagrams.
        let mut drained = false;
        if let Some(c) = self.conns.map.get_mut(&h) {
            drained = self.endpoint.poll_events(h, &mut c.conn);
            if self.conns.transmit(h, now, drv.udp.gso_segments(), &mut self.out) {
                drv.kick.raise();
            }
        }
        if drained {
            if let Some(c) = self.conns.map.remove(&h) {
                connection::forget(h, c, &mut self.peers, &drv.waiters);
            }
        }
    }

    fn read_stream(&mut self, h: usize, id: StreamId, now: Instant, drv: &Driver) {
        let Some(c) = self.conns.map.get_mut(&h) else { return };
        // A held peer's pushes are stopped unread (`meter`): dropped unverified anyway.
        if c.verified && id.dir() == Dir::Uni && c.streams.is_incoming(id) && c.peer.is_some_and(|p| self.meters.is_held(p)) {
            c.streams.reject(&mut c.conn, &mut c.replies, id, stream_code::HELD);
            drv.shared.stats.get().push_streams_stopped += 1;
            return;
        }
        // Backpressure: a peer whose frames fill its share of the shard's queue is not read;
        // QUIC flow control holds it back until the shard catches up (`resume_throttled`).
        if let Some(p) = c.peer {
            if c.streams.is_incoming(id) && drv.shared.inbox.over_share(p) {
                if !c.streams.throttled.contains(&id) {
                    c.streams.throttled.push(id);
                }
                drv.shared.inbox.pause(p);
                return;
            }
        }
        match streams::read(c, h, id, self.endpoint.mode, now, &drv.shared.stats) {
            StreamRead::Nothing => {}
            StreamRead::Proof(proof) => self.on_proof(h, &proof, now, drv),
            StreamRead::Deliver { ty, outgoing, frames } => self.deliver(h, id, ty, outgoing, frames, drv),
        }
    }

    /// Reads the streams left unread while their peer was over its share, for every peer no
    /// longer over it, and marks their connections to send the new flow-control credit.
    fn resume_throttled(&mut self, now: Instant, drv: &Driver) {
        let inbox = &drv.shared.inbox;
        let due: Vec<usize> = self
            .conns
            .map
            .iter()
            .filter(|(_, c)| !c.streams.throttled.is_empty() && c.peer.is_some_and(|p| !inbox.over_share(p)))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            let ids = match self.conns.map.get_mut(&h) {
                Some(c) => std::mem::take(&mut c.streams.throttled),
                None => continue,
            };
            for id in ids {
                self.read_stream(h, id, now, drv);
            }
            self.conns.mark(h);
        }
    }

    fn deliver(&mut self, h: usize, id: StreamId, ty: u8, outgoing: bool, frames: Vec<Vec<u8>>, drv: &Driver) {
        let Some(c) = self.conns.map.get_mut(&h) else { return };
        inbox::deliver(c, h, id, ty, outgoing, frames, &drv.shared, &drv.weak_self());
    }

    /// The other side's identity proof arrived on `h`: refuse the connection, or (an acceptor
    /// answers with its own proof first) adopt it and release what arrived before the proof.
    /// Only the first proof of a connection is ever checked.
    fn on_proof(&mut self, h: usize, proof: &[u8], now: Instant, drv: &Driver) {
        let shared = &*drv.shared;
        let mode = self.endpoint.mode;
        let Some(c) = self.conns.map.get_mut(&h) else { return };
        if c.verified || c.conn.is_closed() {
            return;
        }
        if std::mem::replace(&mut c.proof_seen, true) {
            auth::refuse(c, h, now, close_code::BAD_PROOF, "second identity proof", &shared.stats);
            return;
        }
        let who = match self.auth.check_proof(mode, c, proof, &self.peers, &shared.stats) {
            Err((code, reason)) => return auth::refuse(c, h, now, code, &reason, &shared.stats),
            Ok(Proven::Peer(p)) if self.peers.is_banned(p, now) => return Peers::refuse_banned(c, now, &shared.stats),
            Ok(who) => who,
        };
        // The acceptor signs only now, for a proven peer or client.
        if !c.dialer && !self.auth.answer(c, now, &shared.stats) {
            return;
        }
        auth::accept(c, &who, &shared.stats);
        // Full stream credit once verified; none of its own for a metered peer (its meter
        // grants it), so a reconnect does not bring a fresh `BI_STREAMS_MAX` around the meter.
        let metered = matches!(who, Proven::Peer(p) if self.meters.is_metered(p));
        c.conn.set_max_concurrent_streams(Dir::Bi, VarInt::from_u32(if metered { 0 } else { BI_STREAMS_MAX }));
        // Likewise a held peer's push credit (its streams opened meanwhile are stopped as read).
        if matches!(who, Proven::Peer(p) if self.meters.is_held(p)) {
            c.conn.set_max_concurrent_streams(Dir::Uni, VarInt::from_u32(0));
        }
        if let Proven::Peer(p) = who {
            let dialer = c.dialer;
            self.peers.adopt(p, h, dialer, self.auth.own_id, &mut self.conns, now);
        }
        // Release data that arrived before the proof.
        if let Some(c) = self.conns.map.get_mut(&h) {
            let parked = std::mem::take(&mut c.streams.parked);
            let held = std::mem::take(&mut c.streams.parked_frames);
            for (id, ty, frames) in held {
                self.deliver(h, id, ty, false, frames, drv);
            }
            for id in parked {
                self.read_stream(h, id, now, drv);
            }
        }
        drv.waiters.wake_all();
    }

    /// The earliest instant the work task must wake at.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        [self.conns.next_wake(), self.peers.next_dial(now), self.meters.next_wake()].into_iter().flatten().min()
    }
}
