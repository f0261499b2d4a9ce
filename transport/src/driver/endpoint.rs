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

use super::connection::{classify_lost, Conn, Conns};
use super::peers::Peers;
use super::stats::Stats;
use super::udp::Datagrams;
use super::Mode;
use crate::config::*;

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
        Ok((h.0, Conn::new(conn, serial, true, Some(p), now)))
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
            Some(DatagramEvent::NewConnection(inc)) => {
                // A banned peer's reconnect is refused before the handshake when it comes from its
                // configured address (cheap); from elsewhere it is closed once its proof names it.
                let banned_addr = self.mode == Mode::Node && peers.is_banned_addr(inc.remote_address(), now);
                if banned_addr {
                    stats.get().ban_refusals += 1;
                }
                if self.mode == Mode::ClientDialer || self.closing || conns.len() >= CONNECTIONS_MAX || banned_addr {
                    let t = self.endpoint.refuse(inc, &mut buf);
                    out.push((t.destination, buf[..t.size].to_vec()));
                } else {
                    match self.endpoint.accept(inc, now, &mut buf, None) {
                        Ok((h, conn)) => {
                            let serial = self.serial();
                            conns.insert(h.0, Conn::new(conn, serial, false, None, now));
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
                                out.push((t.destination, buf[..t.size].to_vec()));
                            }
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                out.push((t.destination, buf[..t.size].to_vec()));
            }
            None => {}
        }
        self.buf = buf;
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
