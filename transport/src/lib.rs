//! pqdag's node transport: QUIC (sans-IO `quinn-proto`) driven by a glommio/io_uring loop, one
//! endpoint per core, with hybrid post-quantum TLS and ML-DSA-87 peer identity.
//!
//! * Threading: a [`ShardTransport`] lives on one glommio executor (one core) and owns one UDP
//!   socket and one endpoint. Shard `s` of every node listens on `base_port + s` and talks only
//!   to shard `s` of the others, so the network path never crosses cores. Its futures are
//!   `!Send` by design.
//! * TLS ([`tls`]): TLS 1.3, key exchange X25519MLKEM768 only (never a fallback); certificates
//!   are ephemeral and carry no trust.
//! * Identity ([`identity`]): each side signs the TLS exporter with its ML-DSA-87 key; the other
//!   checks it against the cluster file (or, on the client endpoint, the accepted client keys).
//!   The dialer proves first; the acceptor signs only for a proven dialer. Unknown or
//!   mismatched keys close the connection. Unproven connections hold bounded pre-auth slots.
//! * Streams ([`frame`]): uni streams carry vertices (fire and forget), bi streams carry one
//!   request and one reply. Frames are `u32 LE length · bytes`, at most [`MAX_FRAME_BYTES`].
//!
//! See `docs/transport.md` for the design, limits and measured numbers.

mod client;
mod config;
mod driver;
mod error;
pub mod frame;
pub mod identity;
pub mod tls;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use client::ClientConnection;
pub use config::*;
pub use driver::{close_code, stream_code, Responder};
pub use error::TransportError;
pub use frame::MAX_FRAME_BYTES;

use driver::{reply_pair, Driver, DriverParams, Mode, Out, Shared};
use tls::KxLog;

/// Something that arrived for the shard. Requests carry a [`Responder`] to answer later.
#[derive(Debug)]
pub enum Incoming {
    /// A vertex frame from a verified peer.
    Vertex {
        /// Sender.
        peer: PeerId,
        /// The frame (opaque to the transport).
        bytes: Vec<u8>,
    },
    /// A query; answer with `reply.send(response)`.
    Query {
        /// Asker.
        peer: PeerId,
        /// The query frame.
        bytes: Vec<u8>,
        /// Where the response goes.
        reply: Responder,
    },
    /// A vertex fetch request; answer with `reply.send(vertices)`.
    VertexRequest {
        /// Asker.
        peer: PeerId,
        /// The request frame.
        bytes: Vec<u8>,
        /// Where the reply goes.
        reply: Responder,
    },
    /// A payload submitted on the client endpoint by a client whose key the node accepts.
    ClientSubmit {
        /// The submitting connection.
        client: ClientId,
        /// The client key it proved (what the gateway records and accounts by).
        key: ClientKeyId,
        /// The payload frame.
        bytes: Vec<u8>,
        /// Where the acknowledgement goes.
        reply: Responder,
    },
    /// An event pushed by a node (only seen by [`ClientConnection`]).
    Event {
        /// The event frame.
        bytes: Vec<u8>,
    },
}

pub(crate) fn transport_config() -> Result<Arc<quinn_proto::TransportConfig>, TransportError> {
    let mut t = quinn_proto::TransportConfig::default();
    t.max_idle_timeout(Some(
        quinn_proto::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(|e| TransportError::Config(e.to_string()))?,
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_uni_streams(UNI_STREAMS_MAX.into());
    t.max_concurrent_bidi_streams(PRE_AUTH_BI_STREAMS.into()); // raised once verified (`on_proof`)
    t.stream_receive_window(STREAM_WINDOW_BYTES.into());
    t.receive_window(PRE_AUTH_WINDOW_BYTES.into()); // raised once the peer is verified
    t.send_window(u64::from(CONNECTION_WINDOW_BYTES));
    t.datagram_receive_buffer_size(None);
    Ok(Arc::new(t))
}

pub(crate) fn quic_client_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    cert: Option<&tls::EphemeralCert>,
    alpn: &[u8],
) -> Result<quinn_proto::ClientConfig, TransportError> {
    let rc = tls::rustls_client_config(provider, cert, alpn)?;
    let qc = quinn_proto::crypto::rustls::QuicClientConfig::try_from(rc)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut cc = quinn_proto::ClientConfig::new(Arc::new(qc));
    cc.transport_config(transport_config()?);
    Ok(cc)
}

pub(crate) fn quic_server_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    cert: &tls::EphemeralCert,
    alpn: &[u8],
) -> Result<Arc<quinn_proto::ServerConfig>, TransportError> {
    let rs = tls::rustls_server_config(provider, cert, &[alpn])?;
    let qs = quinn_proto::crypto::rustls::QuicServerConfig::try_from(rs)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut sc = quinn_proto::ServerConfig::with_crypto(Arc::new(qs));
    sc.transport_config(transport_config()?);
    Ok(Arc::new(sc))
}

pub(crate) fn recv_incoming(shared: &Shared) -> impl std::future::Future<Output = Incoming> + '_ {
    shared.inbox.recv()
}

/// Races `fut` against a glommio timer.
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    futures_lite::future::or(fut, async {
        glommio::timer::Timer::new(timeout).await;
        Err(TransportError::Timeout(timeout))
    })
    .await
}

/// One shard's transport: the node endpoint (and optionally the client endpoint) of one core.
/// Create it inside the shard's glommio executor; all methods are for that executor only.
pub struct ShardTransport {
    node: Rc<Driver>,
    client: Option<Rc<Driver>>,
    shared: Rc<Shared>,
    kx: Arc<KxLog>,
}

impl std::fmt::Debug for ShardTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardTransport({})", self.node.local_addr)
    }
}

impl ShardTransport {
    /// Binds the shard's socket(s) and starts its I/O loop on the current glommio executor.
    pub fn new(config: TransportConfig) -> Result<Self, TransportError> {
        let kx = Arc::new(KxLog::default());
        let provider = tls::hybrid_only_provider(kx.clone());
        let cert = tls::EphemeralCert::generate()?;
        let shared = Shared::new(config.incoming_queue_max, config.peers.len());
        let peers: Vec<_> = config
            .peers
            .iter()
            .map(|p| (p.public_key.clone(), shard_addr(p.addr, config.shard)))
            .collect();
        let node = Driver::new(
            DriverParams {
                mode: Mode::Node,
                bind: shard_addr(config.bind, config.shard),
                server_cfg: Some(quic_server_config(provider.clone(), &cert, tls::PEER_ALPN)?),
                client_cfg: Some(quic_client_config(provider.clone(), Some(&cert), tls::PEER_ALPN)?),
                keypair: config.keypair.clone(),
                client_keys: Vec::new(),
                peers,
                frames_max: config.send_queue_frames_max,
            },
            shared.clone(),
        )?;
        let client = match config.client_bind {
            None => None,
            Some(b) => Some(Driver::new(
                DriverParams {
                    mode: Mode::ClientServer,
                    bind: shard_addr(b, config.shard),
                    server_cfg: Some(quic_server_config(provider, &cert, tls::CLIENT_ALPN)?),
                    client_cfg: None,
                    keypair: config.keypair.clone(),
                    client_keys: config.client_keys.clone(),
                    peers: Vec::new(),
                    frames_max: config.send_queue_frames_max,
                },
                shared.clone(),
            )?),
        };
        node.start();
        if let Some(c) = &client {
            c.start();
        }
        Ok(Self { node, client, shared, kx })
    }

    /// The node endpoint's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr
    }

    /// The client endpoint's bound address, if enabled.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client.as_ref().map(|c| c.local_addr)
    }

    /// Number of configured peers (including ourselves if listed).
    pub fn peer_count(&self) -> usize {
        self.node.core.borrow().peers.len()
    }

    /// The 32-byte node id (BLAKE3 of the ML-DSA key) of a peer.
    pub fn peer_node_id(&self, peer: PeerId) -> Option<[u8; 32]> {
        self.node.core.borrow().peers.get(peer.0).map(|p| p.node_id)
    }

    /// The peer with this node id.
    pub fn peer_by_node_id(&self, node_id: &[u8; 32]) -> Option<PeerId> {
        self.node.core.borrow().peers.iter().position(|p| &p.node_id == node_id).map(PeerId)
    }

    /// Whether a verified connection to `peer` is up.
    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.node.peer_ready(peer.0)
    }

    /// Dials `peer` now (instead of lazily on first send) and waits until its identity is
    /// verified: for warm-up and tests. Fails at once with [`TransportError::Banned`] while the
    /// peer is banned.
    pub async fn connect(&self, peer: PeerId, timeout: Duration) -> Result<(), TransportError> {
        if self.node.core.borrow().peers.get(peer.0).is_none_or(|p| p.is_self) {
            return Err(TransportError::UnknownPeer);
        }
        if self.node.is_banned(peer.0) {
            return Err(TransportError::Banned);
        }
        self.node.dial_now(peer.0);
        let node = self.node.clone();
        with_timeout(timeout, async move { node.wait_verified(peer.0).await }).await
    }

    /// Disconnects `peer` and refuses it for `cool_off`: its connections are closed (application
    /// code [`close_code::BANNED`]), queued frames are dropped and queued requests fail with
    /// [`TransportError::Banned`], nothing new is sent to it, it is not dialed, and its
    /// reconnects are refused (before the handshake from its configured address, else once its
    /// identity proof names it). Mitigation of proven misbehaviour (spec 3.7.3): the consensus
    /// already ignores an excluded peer, this also stops it costing us bandwidth and signature
    /// checks. The ban is bounded so a wrongly banned peer comes back on its own; after it the
    /// peer is dialed again. Returns whether the peer was not banned already (re-banning
    /// extends the cool-off to the later end).
    pub fn ban_peer(&self, peer: PeerId, cool_off: Duration) -> Result<bool, TransportError> {
        self.node.ban(peer.0, Instant::now() + cool_off)
    }

    /// Lifts a ban before its cool-off ends (operator action, tests); the peer is dialed again.
    pub fn unban_peer(&self, peer: PeerId) {
        self.node.unban(peer.0);
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: PeerId) -> bool {
        self.node.is_banned(peer.0)
    }

    /// Meters `peer`'s new bidirectional streams (queries, vertex fetches, history sync) for
    /// `hold` from now (a running meter is renewed to the later end and takes the new rate):
    /// QUIC grants it `per_second` new streams a second and lets it hold at most `burst` unused,
    /// so what it has over that is never sent. For a peer over its query budget, whose extra
    /// queries would otherwise each cost their bytes before being dropped unread.
    pub fn meter_streams(&self, peer: PeerId, per_second: u32, burst: u32, hold: Duration) {
        self.node.meter(peer.0, per_second, burst, Instant::now() + hold);
    }

    /// Metered peers that spent all their stream credit since the last call: each wants more
    /// than `per_second`, which the caller judges (the node: a query over budget).
    pub fn take_starved_peers(&self) -> Vec<PeerId> {
        self.node.take_starved().into_iter().map(PeerId).collect()
    }

    /// Whether `peer`'s streams are metered now.
    pub fn is_metered(&self, peer: PeerId) -> bool {
        self.node.is_metered(peer.0)
    }

    /// Holds `peer`'s pushes (vertex frames on unidirectional streams) until
    /// [`Self::release_pushes`]: its push streams are stopped unread and it gets no new push
    /// stream credit, so what it pushes meanwhile costs this node at most what was in flight.
    /// For a peer whose own vertices are over its share here (they would be dropped unverified).
    /// Its queries and its answers to ours are not affected.
    pub fn hold_pushes(&self, peer: PeerId) {
        self.node.hold_pushes(peer.0);
    }

    /// Ends [`Self::hold_pushes`].
    pub fn release_pushes(&self, peer: PeerId) {
        self.node.release_pushes(peer.0);
    }

    /// Whether `peer`'s pushes are held.
    pub fn is_holding_pushes(&self, peer: PeerId) -> bool {
        self.node.is_holding(peer.0)
    }

    /// How many peers' pushes are held now.
    pub fn held_count(&self) -> usize {
        (0..self.peer_count()).filter(|p| self.node.is_holding(*p)).count()
    }

    /// How many peers are metered now.
    pub fn metered_count(&self) -> usize {
        (0..self.peer_count()).filter(|p| self.node.is_metered(*p)).count()
    }

    /// How many peers are banned now.
    pub fn banned_count(&self) -> usize {
        (0..self.peer_count()).filter(|p| self.node.is_banned(*p)).count()
    }

    /// Queues a vertex frame for `peer` (fire and forget). A full queue drops its oldest vertex
    /// (counted in `queue_drops`), so this only fails for bad arguments or a banned peer.
    pub fn send_vertex(&self, peer: PeerId, bytes: Vec<u8>) -> Result<(), TransportError> {
        check_frame(&bytes)?;
        self.node.enqueue(peer.0, Out::Uni { ty: frame::STREAM_VERTICES, frame: bytes })
    }

    /// Queues one vertex frame for each of `peers`; returns how many accepted it.
    pub fn broadcast_vertex(&self, peers: &[PeerId], bytes: &[u8]) -> usize {
        if check_frame(bytes).is_err() {
            return 0;
        }
        peers.iter().filter(|p| self.send_vertex(**p, bytes.to_vec()).is_ok()).count()
    }

    async fn request(&self, peer: PeerId, ty: u8, bytes: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        check_frame(&bytes)?;
        let (tx, rx) = reply_pair();
        self.node.enqueue(peer.0, Out::Bi { ty, frame: bytes, reply: tx })?;
        with_timeout(timeout, rx).await
    }

    /// Sends a query on its own bidirectional stream; resolves with the response frame.
    pub async fn send_query(&self, peer: PeerId, bytes: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        self.request(peer, frame::STREAM_QUERY, bytes, timeout).await
    }

    /// Sends a vertex fetch request; resolves with the reply frame.
    pub async fn request_vertices(&self, peer: PeerId, bytes: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        self.request(peer, frame::STREAM_VERTEX_REQUEST, bytes, timeout).await
    }

    /// Sends the same query to every peer at once; all answers (or errors) by one deadline.
    pub async fn batch_query(&self, peers: &[PeerId], bytes: &[u8], timeout: Duration) -> Vec<(PeerId, Result<Vec<u8>, TransportError>)> {
        let deadline = Instant::now() + timeout;
        let mut pending = Vec::with_capacity(peers.len());
        for &p in peers {
            let r = check_frame(bytes).and_then(|_| {
                let (tx, rx) = reply_pair();
                self.node.enqueue(p.0, Out::Bi { ty: frame::STREAM_QUERY, frame: bytes.to_vec(), reply: tx })?;
                Ok(rx)
            });
            pending.push((p, r));
        }
        let mut out = Vec::with_capacity(pending.len());
        for (p, r) in pending {
            let res = match r {
                Err(e) => Err(e),
                Ok(rx) => with_timeout(deadline.saturating_duration_since(Instant::now()), rx)
                    .await
                    .map_err(|e| if matches!(e, TransportError::Timeout(_)) { TransportError::Timeout(timeout) } else { e }),
            };
            out.push((p, res));
        }
        out
    }

    /// Waits for the next incoming frame or request.
    pub async fn recv(&self) -> Incoming {
        let i = recv_incoming(&self.shared).await;
        self.resume_if_due();
        i
    }

    /// The next incoming item, if one is waiting.
    pub fn try_recv(&self) -> Option<Incoming> {
        let i = self.shared.inbox.pop();
        self.resume_if_due();
        i
    }

    /// Wakes the node driver when a peer whose streams it stopped reading (over its share of the
    /// incoming queue) has been taken below the mark.
    fn resume_if_due(&self) {
        if self.shared.inbox.resume_due() {
            self.node.kick();
        }
    }

    /// Pushes an event frame to one client of the client endpoint.
    pub fn send_client_event(&self, client: ClientId, bytes: Vec<u8>) -> Result<(), TransportError> {
        if bytes.is_empty() || bytes.len() > frame::MAX_CLIENT_FRAME_BYTES {
            return Err(TransportError::FrameTooLarge { len: bytes.len(), max: frame::MAX_CLIENT_FRAME_BYTES });
        }
        let c = self.client.as_ref().ok_or(TransportError::UnknownPeer)?;
        c.enqueue_client(client.0, Out::Uni { ty: frame::STREAM_EVENTS, frame: bytes })
    }

    /// Clients currently connected to the client endpoint.
    pub fn clients(&self) -> Vec<ClientId> {
        self.client.as_ref().map_or_else(Vec::new, |c| c.clients().into_iter().map(ClientId).collect())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        self.shared.stats.snapshot()
    }

    /// Key exchanges by group (proves X25519MLKEM768 was negotiated).
    pub fn kx_log(&self) -> &KxLog {
        &self.kx
    }

    /// Connections the node endpoint holds (including ones draining or being retired).
    pub fn open_connections(&self) -> usize {
        self.node.core.borrow().connection_count()
    }

    /// Frames waiting in the send queues to peers (bounded per peer by
    /// [`TransportConfig::send_queue_frames_max`] and [`SEND_QUEUE_BYTES_MAX`]): a queue that
    /// stays long means a peer that does not take what this node sends.
    pub fn queued_frames(&self) -> usize {
        self.node.core.borrow().queued_frames()
    }

    /// Connection internals, for debugging stalls.
    #[doc(hidden)]
    pub fn debug_summary(&self) -> String {
        self.node.debug_summary()
    }

    /// Closes every connection and waits (at most 3 s) until they have drained and the I/O
    /// loop has stopped, so the port is free again. The socket is bound with SO_REUSEPORT
    /// (glommio's default): a live old socket on the same port would steal datagrams.
    pub async fn close(self) {
        self.shutdown();
        let limit = Instant::now() + Duration::from_secs(3);
        while !(self.node.stopped.get() && self.client.as_ref().is_none_or(|c| c.stopped.get())) && Instant::now() < limit {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        drop(self);
        // Let the cancelled receive task be dropped, releasing the socket.
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }

    /// Closes every connection (peers see an orderly close) and stops the I/O loop once they
    /// have drained. Also done on drop.
    pub fn shutdown(&self) {
        self.node.shutdown();
        if let Some(c) = &self.client {
            c.shutdown();
        }
    }
}

impl Drop for ShardTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn check_frame(bytes: &[u8]) -> Result<(), TransportError> {
    if bytes.is_empty() || bytes.len() > MAX_FRAME_BYTES {
        return Err(TransportError::FrameTooLarge { len: bytes.len(), max: MAX_FRAME_BYTES });
    }
    Ok(())
}
