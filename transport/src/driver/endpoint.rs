//! The `quinn_proto::Endpoint` of one socket: routes each datagram to its connection, accepts
//! or refuses new ones (mode, shutdown, connection cap, banned address), dials, and relays
//! connections' endpoint events.
//!
//! Owns: [`EndpointState`] (the endpoint, the client config, the serial counter, the closing
//! flag, the receive scratch buffer). May call: the connection table (to add or feed a
//! connection), the peer table (read-only: banned addresses), stats, udp (the datagram batch).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::{ConnectError, ConnectionHandle, DatagramEvent, Endpoint};

use super::connection::{classify_lost, Conn, Conns, PreAuth};
use super::peers::Peers;
use super::stats::Stats;
use super::udp::{Datagram, Datagrams};
use super::Mode;
use crate::config::*;

/// What to do with a new connection.
enum Admit {
    /// Refuse it (CONNECTION_REFUSED), counted by reason.
    Refuse,
    /// Send a stateless Retry: it holds a slot only once its address is validated.
    Retry,
    /// Accept it into this pre-auth slot.
    Accept(PreAuth),
}

/// One endpoint's protocol state.
pub(crate) struct EndpointState {
    pub(crate) mode: Mode,
    endpoint: Endpoint,
    client_cfg: Option<quinn_proto::ClientConfig>,
    next_serial: u64,
    /// Shutting down: accept nothing, dial nothing; the I/O loop stops once all have drained.
    pub(crate) closing: bool,
    buf: Vec<u8>,
}

impl EndpointState {
    /// An endpoint that accepts with `server_cfg` (if any) and dials with `client_cfg` (if any).
    pub(crate) fn new(mode: Mode, server_cfg: Option<Arc<quinn_proto::ServerConfig>>, client_cfg: Option<quinn_proto::ClientConfig>) -> Self {
        let endpoint = Endpoint::new(Arc::new(quinn_proto::EndpointConfig::default()), server_cfg, false, None);
        Self { mode, endpoint, client_cfg, next_serial: 1, closing: false, buf: Vec::with_capacity(1500) }
    }

    fn serial(&mut self) -> u64 {
        let serial = self.next_serial;
        self.next_serial += 1;
        serial
    }

    /// The config to dial with (`None`: this endpoint does not dial).
    pub(crate) fn client_cfg(&self) -> Option<quinn_proto::ClientConfig> {
        self.client_cfg.clone()
    }

    /// Starts a connection to peer `p` at `addr`: its handle and state.
    pub(crate) fn connect(&mut self, now: Instant, cfg: quinn_proto::ClientConfig, addr: SocketAddr, p: usize) -> Result<(usize, Conn), ConnectError> {
        let (h, conn) = self.endpoint.connect(now, cfg, addr, crate::tls::SERVER_NAME)?;
        let serial = self.serial();
        Ok((h.0, Conn::new(conn, serial, true, Some(p), None, now)))
    }

    /// Feeds one datagram from `from`; replies it causes (refusals, stateless resets) go to
    /// `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        conns: &mut Conns,
        peers: &Peers,
        out: &mut Datagrams,
        stats: &Stats,
    ) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match self.endpoint.handle(now, from, None, None, BytesMut::from(data), &mut buf) {
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some(c) = conns.map.get_mut(&h.0) {
                    c.conn.handle_event(ev);
                    conns.mark(h.0);
                }
            }
            Some(DatagramEvent::NewConnection(inc)) => match self.admit(&inc, now, conns, peers, stats) {
                Admit::Refuse => {
                    let t = self.endpoint.refuse(inc, &mut buf);
                    out.push(Datagram::one(t.destination, buf[..t.size].to_vec()));
                }
                Admit::Retry => match self.endpoint.retry(inc, &mut buf) {
                    Ok(t) => {
                        stats.get().retries_sent += 1;
                        out.push(Datagram::one(t.destination, buf[..t.size].to_vec()));
                    }
                    Err(e) => {
                        let t = self.endpoint.refuse(e.into_incoming(), &mut buf);
                        out.push(Datagram::one(t.destination, buf[..t.size].to_vec()));
                    }
                },
                Admit::Accept(slot) => match self.endpoint.accept(inc, now, &mut buf, None) {
                    Ok((h, conn)) => {
                        let serial = self.serial();
                        conns.insert(h.0, Conn::new(conn, serial, false, None, Some(slot), now));
                    }
                    Err(e) => {
                        let (classical, text) = classify_lost(&e.cause);
                        let mut s = stats.get();
                        s.handshakes_failed += 1;
                        if classical {
                            s.classical_only_refusals += 1;
                            tracing::warn!(%from, "refused handshake: peer offered no X25519MLKEM768 key share ({text})");
                        } else {
                            tracing::debug!(%from, "refused handshake: {text}");
                        }
                        if let Some(t) = e.response {
                            out.push(Datagram::one(t.destination, buf[..t.size].to_vec()));
                        }
                    }
                },
            },
            Some(DatagramEvent::Response(t)) => {
                out.push(Datagram::one(t.destination, buf[..t.size].to_vec()));
            }
            None => {}
        }
        self.buf = buf;
    }

    /// Decides on a new connection before any handshake work: refuse (closing, banned address,
    /// table full, no pre-auth slot), ask for address validation (a stateless Retry), or accept
    /// into a pre-auth slot. A source that is a configured peer's address takes one of that
    /// peer's reserved slots once validated (so a spoofed source cannot take them); everyone
    /// else shares [`PRE_AUTH_SHARED_MAX`] slots, with a Retry first once half are held.
    fn admit(&self, inc: &quinn_proto::Incoming, now: Instant, conns: &Conns, peers: &Peers, stats: &Stats) -> Admit {
        let from = inc.remote_address();
        if self.mode == Mode::ClientDialer || self.closing {
            stats.get().closing_refusals += 1;
            return Admit::Refuse;
        }
        // A banned peer's reconnect is refused before the handshake when it comes from its
        // configured address (cheap); from elsewhere it is closed once its proof names it.
        if self.mode == Mode::Node && peers.is_banned_addr(from, now) {
            stats.get().ban_refusals += 1;
            return Admit::Refuse;
        }
        if conns.len() >= CONNECTIONS_MAX {
            stats.get().connections_full_refusals += 1;
            return Admit::Refuse;
        }
        let validated = inc.remote_address_validated();
        if self.mode == Mode::Node {
            if let Some(p) = peers.by_addr(from) {
                if conns.pre_auth_held(PreAuth::Reserved(p)) < PRE_AUTH_RESERVED_PER_PEER {
                    return if validated { Admit::Accept(PreAuth::Reserved(p)) } else { Admit::Retry };
                }
            }
        }
        let shared = conns.pre_auth_held(PreAuth::Shared);
        if shared >= PRE_AUTH_SHARED_MAX {
            stats.get().pre_auth_full_refusals += 1;
            Admit::Refuse
        } else if !validated && shared >= PRE_AUTH_RETRY_ABOVE {
            Admit::Retry
        } else {
            Admit::Accept(PreAuth::Shared)
        }
    }

    /// Relays connection `h`'s endpoint events (and the endpoint's answers back to it).
    /// Returns whether it has drained (the caller forgets it).
    pub(crate) fn poll_events(&mut self, h: usize, conn: &mut quinn_proto::Connection) -> bool {
        let mut drained = false;
        while let Some(ev) = conn.poll_endpoint_events() {
            if ev.is_drained() {
                drained = true;
            }
            if let Some(cev) = self.endpoint.handle_event(ConnectionHandle(h), ev) {
                conn.handle_event(cev);
            }
        }
        drained
    }
}
