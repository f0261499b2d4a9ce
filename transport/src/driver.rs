//! The per-shard I/O loop: one UDP socket, one `quinn_proto::Endpoint`, all its connections.
//!
//! Two glommio tasks share a [`Driver`]: the receive task feeds datagrams to the endpoint; the
//! work task handles timers, deferred actions (responses, cancellations), dials, drains every
//! connection's events and sends its datagrams. No `RefCell` borrow is ever held across an
//! `.await`, and user code is never called while the core is borrowed.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use glommio::net::UdpSocket;
use pqdag_crypto::{Keypair, PublicKey};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, Event, ReadError, StreamEvent, StreamId,
    VarInt, WriteError,
};
use rand::{Rng, SeedableRng};

use crate::config::*;
use crate::frame::*;
use crate::identity;
use crate::{Incoming, TransportError};

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
}

/// Stream error codes (RESET_STREAM / STOP_SENDING).
pub mod stream_code {
    /// A frame over the cap.
    pub const FRAME_TOO_LARGE: u32 = 0x10;
    /// Unknown stream type, zero-length frame, truncated frame, extra frames.
    pub const GARBAGE: u32 = 0x11;
    /// The shard dropped the request without answering.
    pub const NO_RESPONSE: u32 = 0x12;
    /// The asker gave up (timeout).
    pub const CANCELLED: u32 = 0x13;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Node endpoint: dials and accepts peers, mutual ML-DSA binding.
    Node,
    /// Client endpoint of a node: accepts clients, proves itself, does not authenticate them.
    ClientServer,
    /// Client connector: dials one server, verifies its proof.
    ClientDialer,
}

// ---------------------------------------------------------------------------------------------
// One-shot reply slot (single-threaded).

struct Slot {
    result: Option<Result<Vec<u8>, TransportError>>,
    waker: Option<Waker>,
    cancelled: bool,
}

/// The driver's end of a pending request.
pub(crate) struct ReplyTx(Rc<RefCell<Slot>>);

impl ReplyTx {
    fn complete(self, r: Result<Vec<u8>, TransportError>) {
        let mut s = self.0.borrow_mut();
        s.result = Some(r);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
    fn cancelled(&self) -> bool {
        self.0.borrow().cancelled
    }
}

/// The caller's end: a future of the reply. Dropping it cancels the request.
pub(crate) struct ReplyRx(Rc<RefCell<Slot>>);

impl Future for ReplyRx {
    type Output = Result<Vec<u8>, TransportError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.borrow_mut();
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for ReplyRx {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.try_borrow_mut() {
            s.cancelled = true;
        }
    }
}

pub(crate) fn reply_pair() -> (ReplyTx, ReplyRx) {
    let s = Rc::new(RefCell::new(Slot { result: None, waker: None, cancelled: false }));
    (ReplyTx(s.clone()), ReplyRx(s))
}

// ---------------------------------------------------------------------------------------------
// Shared between the driver(s) of a shard and its API.

pub(crate) struct Shared {
    pub(crate) incoming: RefCell<VecDeque<Incoming>>,
    pub(crate) incoming_waker: RefCell<Option<Waker>>,
    pub(crate) incoming_max: usize,
    pub(crate) stats: RefCell<TransportStats>,
}

impl Shared {
    pub(crate) fn new(incoming_max: usize, peers: usize) -> Rc<Self> {
        let stats = TransportStats { peers: vec![PeerStats::default(); peers], ..Default::default() };
        Rc::new(Self {
            incoming: RefCell::new(VecDeque::new()),
            incoming_waker: RefCell::new(None),
            incoming_max,
            stats: RefCell::new(stats),
        })
    }

    fn deliver(&self, item: Incoming) {
        let mut q = self.incoming.borrow_mut();
        if q.len() >= self.incoming_max {
            self.stats.borrow_mut().incoming_drops += 1;
            drop(q);
            drop(item); // a dropped Responder resets its stream (deferred, never re-entrant)
            return;
        }
        q.push_back(item);
        drop(q);
        if let Some(w) = self.incoming_waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn peer_stat(&self, peer: Option<usize>, f: impl FnOnce(&mut PeerStats)) {
        if let Some(p) = peer {
            if let Some(ps) = self.stats.borrow_mut().peers.get_mut(p) {
                f(ps);
            }
        }
    }
}

/// Actions queued by user-facing handles (responders) for the driver to apply.
pub(crate) enum Deferred {
    Respond { conn: usize, serial: u64, stream: StreamId, bytes: Vec<u8> },
    Reset { conn: usize, serial: u64, stream: StreamId, code: u32 },
}

/// Answer handle for an incoming query, vertex request or client submission. `send` it once;
/// dropping it unanswered resets the stream so the asker fails fast instead of timing out.
pub struct Responder {
    driver: Weak<Driver>,
    conn: usize,
    serial: u64,
    stream: StreamId,
    done: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Responder({:?})", self.stream)
    }
}

impl Responder {
    /// Sends the answer (one frame, at most [`MAX_FRAME_BYTES`]) and finishes the stream.
    pub fn send(mut self, bytes: Vec<u8>) -> Result<(), TransportError> {
        self.done = true;
        if bytes.len() > MAX_FRAME_BYTES || bytes.is_empty() {
            let d = Deferred::Reset { conn: self.conn, serial: self.serial, stream: self.stream, code: stream_code::GARBAGE };
            if let Some(drv) = self.driver.upgrade() {
                drv.defer(d);
            }
            return Err(TransportError::FrameTooLarge { len: bytes.len(), max: MAX_FRAME_BYTES });
        }
        let drv = self.driver.upgrade().ok_or(TransportError::Closed)?;
        drv.defer(Deferred::Respond { conn: self.conn, serial: self.serial, stream: self.stream, bytes });
        Ok(())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            if let Some(drv) = self.driver.upgrade() {
                drv.defer(Deferred::Reset {
                    conn: self.conn,
                    serial: self.serial,
                    stream: self.stream,
                    code: stream_code::NO_RESPONSE,
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Core state.

pub(crate) enum Out {
    Uni { ty: u8, frame: Vec<u8> },
    Bi { ty: u8, frame: Vec<u8>, reply: ReplyTx },
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Uni { frame, .. } | Out::Bi { frame, .. } => frame.len(),
        }
    }
}

#[derive(Default)]
pub(crate) struct OutQueue {
    q: VecDeque<Out>,
    bytes: usize,
}

impl OutQueue {
    /// Queues `o`; vertices evict the oldest vertex when full, requests are refused.
    fn push(&mut self, o: Out, frames_max: usize) -> Result<u64, Out> {
        let mut dropped = 0;
        while self.q.len() >= frames_max || self.bytes + o.len() > SEND_QUEUE_BYTES_MAX {
            if matches!(o, Out::Bi { .. }) {
                return Err(o);
            }
            match self.q.iter().position(|x| matches!(x, Out::Uni { .. })) {
                Some(i) => {
                    if let Some(old) = self.q.remove(i) {
                        self.bytes -= old.len();
                        dropped += 1;
                    }
                }
                None => return Err(o),
            }
        }
        self.bytes += o.len();
        self.q.push_back(o);
        Ok(dropped)
    }
    fn pop(&mut self) -> Option<Out> {
        let o = self.q.pop_front()?;
        self.bytes -= o.len();
        Some(o)
    }
}

pub(crate) struct PeerSlot {
    pub(crate) public_key: PublicKey,
    pub(crate) node_id: [u8; 32],
    pub(crate) addr: SocketAddr,
    pub(crate) is_self: bool,
    /// The connection we send on (dialing, or verified).
    conn: Option<usize>,
    backoff: Duration,
    next_dial: Option<Instant>,
    pub(crate) queue: OutQueue,
    /// Banned until then: no dial, no send, its connections are closed on sight.
    banned_until: Option<Instant>,
}

struct PendingWrite {
    data: Vec<u8>,
    off: usize,
}

struct StreamSt {
    ty: Option<u8>,
    reader: FrameReader,
    /// We opened it (a request whose reply we read).
    outgoing: bool,
    frames: u32,
}

struct Conn {
    conn: quinn_proto::Connection,
    serial: u64,
    dialer: bool,
    connected: bool,
    /// The peer we dialed (Node, ClientDialer).
    expected: Option<usize>,
    /// The peer proven (Node), or `Some(0)` for the server (ClientDialer).
    peer: Option<usize>,
    verified: bool,
    identity_deadline: Instant,
    retire_at: Option<Instant>,
    streams: HashMap<StreamId, StreamSt>,
    /// Bidirectional streams opened before the peer's proof: read once it is verified.
    parked: Vec<StreamId>,
    /// Unidirectional frames received before the peer's proof (bounded by flow control).
    parked_frames: Vec<(StreamId, u8, Vec<Vec<u8>>)>,
    pending: HashMap<StreamId, PendingWrite>,
    replies: HashMap<StreamId, ReplyTx>,
    /// Queue of a client connection (ClientServer): events to push.
    queue: OutQueue,
    lost_reason: Option<String>,
    /// `on_lost` ran (by event, or because we closed it ourselves).
    lost_handled: bool,
    /// Queued in `Core::dirty` for the next round.
    dirty: bool,
    /// Earliest timer of this connection as of its last drive (QUIC timers, identity deadline,
    /// retirement). Only driving it or feeding it a datagram changes them.
    wake_at: Option<Instant>,
}

pub(crate) struct Core {
    mode: Mode,
    endpoint: Endpoint,
    client_cfg: Option<quinn_proto::ClientConfig>,
    /// Our identity (`None` on a client connector, which proves nothing).
    keypair: Option<Arc<Keypair>>,
    own_id: [u8; 32],
    pub(crate) peers: Vec<PeerSlot>,
    by_node_id: HashMap<[u8; 32], usize>,
    conns: HashMap<usize, Conn>,
    next_serial: u64,
    frames_max: usize,
    out: Vec<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    closing: bool,
    last_failure: HashMap<usize, Failure>,
    rng: rand::rngs::SmallRng,
    /// Connections with new input (a datagram, queued frames, a reply, a due timer) to drive
    /// this round. Driving every connection on every wake-up made each packet cost O(peers):
    /// at 100 nodes that alone kept 100 idle processes at 2 cores.
    dirty: Vec<usize>,
    /// Reused buffer for `poll_transmit` (a fresh 1500-byte Vec per attempt was most of the
    /// allocation of an idle node).
    tx_buf: Vec<u8>,
}

/// One socket + endpoint + its connections, driven by two local tasks.
pub(crate) struct Driver {
    pub(crate) socket: UdpSocket,
    pub(crate) core: RefCell<Core>,
    deferred: RefCell<Vec<Deferred>>,
    kicked: Cell<bool>,
    waker: RefCell<Option<Waker>>,
    pub(crate) shared: Rc<Shared>,
    pub(crate) stopped: Cell<bool>,
    pub(crate) local_addr: SocketAddr,
    /// Wakers of tasks waiting for a peer connection to be verified (client connect).
    verified_waiters: RefCell<Vec<Waker>>,
    me: Weak<Driver>,
    recv_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

pub(crate) struct DriverParams {
    pub(crate) mode: Mode,
    pub(crate) bind: SocketAddr,
    pub(crate) server_cfg: Option<Arc<quinn_proto::ServerConfig>>,
    pub(crate) client_cfg: Option<quinn_proto::ClientConfig>,
    pub(crate) keypair: Option<Arc<Keypair>>,
    pub(crate) peers: Vec<(PublicKey, SocketAddr)>,
    pub(crate) frames_max: usize,
}

impl Driver {
    pub(crate) fn new(p: DriverParams, shared: Rc<Shared>) -> Result<Rc<Self>, TransportError> {
        let socket = UdpSocket::bind(p.bind).map_err(|e| TransportError::Io(std::io::Error::other(format!("bind {}: {e}", p.bind))))?;
        set_socket_buffers(&socket);
        let local_addr = socket.local_addr().map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
        let own = p.keypair.as_ref().map_or([0u8; 32], |k| k.public().node_id());
        let mut by_node_id = HashMap::new();
        let peers: Vec<PeerSlot> = p
            .peers
            .into_iter()
            .enumerate()
            .map(|(i, (pk, addr))| {
                let node_id = pk.node_id();
                by_node_id.insert(node_id, i);
                PeerSlot {
                    is_self: node_id == own && p.mode == Mode::Node,
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
        let endpoint = Endpoint::new(Arc::new(quinn_proto::EndpointConfig::default()), p.server_cfg, false, None);
        Ok(Rc::new_cyclic(|me| Self {
            socket,
            core: RefCell::new(Core {
                mode: p.mode,
                endpoint,
                client_cfg: p.client_cfg,
                keypair: p.keypair,
                own_id: own,
                peers,
                by_node_id,
                conns: HashMap::new(),
                dirty: Vec::new(),
                tx_buf: Vec::with_capacity(1500),
                next_serial: 1,
                frames_max: p.frames_max,
                out: Vec::new(),
                buf: Vec::with_capacity(1500),
                closing: false,
                last_failure: HashMap::new(),
                rng: rand::rngs::SmallRng::seed_from_u64(
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                        ^ u64::from(local_addr.port()),
                ),
            }),
            deferred: RefCell::new(Vec::new()),
            kicked: Cell::new(false),
            waker: RefCell::new(None),
            shared,
            stopped: Cell::new(false),
            local_addr,
            verified_waiters: RefCell::new(Vec::new()),
            me: me.clone(),
            recv_task: RefCell::new(None),
        }))
    }

    fn weak_self(&self) -> Weak<Driver> {
        self.me.clone()
    }

    pub(crate) fn kick(&self) {
        self.kicked.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn defer(&self, d: Deferred) {
        self.deferred.borrow_mut().push(d);
        self.kick();
    }

    /// Starts the two tasks. They hold only weak references beyond their own iteration, so
    /// dropping the transport stops them.
    pub(crate) fn start(self: &Rc<Self>) {
        let me = self.clone();
        let rx = glommio::spawn_local(async move { recv_loop(me).await }).detach();
        *self.recv_task.borrow_mut() = Some(rx);
        let me = self.clone();
        glommio::spawn_local(async move { work_loop(me).await }).detach();
    }

    /// Queues `o` for peer `p` and makes sure a connection is coming.
    pub(crate) fn enqueue(&self, p: usize, o: Out) -> Result<(), TransportError> {
        let mut c = self.core.borrow_mut();
        let frames_max = c.frames_max;
        let now = Instant::now();
        let slot = c.peers.get_mut(p).ok_or(TransportError::UnknownPeer)?;
        if slot.is_self {
            return Err(TransportError::UnknownPeer);
        }
        if slot.banned_until.is_some_and(|t| t > now) {
            return Err(TransportError::Banned);
        }
        let conn = slot.conn;
        match slot.queue.push(o, frames_max) {
            Ok(dropped) => {
                if dropped > 0 {
                    let mut s = self.shared.stats.borrow_mut();
                    s.queue_drops += dropped;
                    if let Some(ps) = s.peers.get_mut(p) {
                        ps.queue_drops += dropped;
                    }
                }
            }
            Err(o) => {
                let mut s = self.shared.stats.borrow_mut();
                s.queue_drops += 1;
                if let Some(ps) = s.peers.get_mut(p) {
                    ps.queue_drops += 1;
                }
                drop(s);
                if let Out::Bi { reply, .. } = o {
                    drop(reply);
                }
                return Err(TransportError::QueueFull);
            }
        }
        if let Some(h) = conn {
            c.mark(h);
        }
        drop(c);
        self.kick();
        Ok(())
    }

    /// Queues an event for client connection `client` (ClientServer mode).
    pub(crate) fn enqueue_client(&self, client: u64, o: Out) -> Result<(), TransportError> {
        let mut c = self.core.borrow_mut();
        let frames_max = c.frames_max;
        let (&h, conn) = c.conns.iter_mut().find(|(_, x)| x.serial == client).ok_or(TransportError::UnknownPeer)?;
        if conn.queue.push(o, frames_max).is_err() {
            self.shared.stats.borrow_mut().queue_drops += 1;
            return Err(TransportError::QueueFull);
        }
        c.mark(h);
        drop(c);
        self.kick();
        Ok(())
    }

    /// All connected client ids (ClientServer mode).
    pub(crate) fn clients(&self) -> Vec<u64> {
        self.core.borrow().conns.values().filter(|c| c.verified).map(|c| c.serial).collect()
    }

    /// Whether peer `p` has a verified connection to send on.
    pub(crate) fn peer_ready(&self, p: usize) -> bool {
        let c = self.core.borrow();
        c.peers.get(p).and_then(|s| s.conn).and_then(|h| c.conns.get(&h)).is_some_and(|x| x.verified)
    }

    /// Starts a dial to `p` now if none is up (used by the client connector).
    pub(crate) fn dial_now(&self, p: usize) {
        {
            let mut c = self.core.borrow_mut();
            if let Some(s) = c.peers.get_mut(p) {
                s.next_dial = None;
            }
            let now = Instant::now();
            c.maybe_dial(p, now, &self.shared, true);
        }
        self.kick();
    }

    /// Resolves when peer `p` is verified, or with the reason its last connection failed.
    pub(crate) fn wait_verified(self: &Rc<Self>, p: usize) -> impl Future<Output = Result<(), TransportError>> + '_ {
        std::future::poll_fn(move |cx| {
            if self.peer_ready(p) {
                return Poll::Ready(Ok(()));
            }
            {
                let c = self.core.borrow();
                let dialing = c.peers.get(p).and_then(|s| s.conn).is_some();
                if !dialing {
                    if let Some(r) = c.last_failure.get(&p) {
                        return Poll::Ready(Err(r.clone().into_error()));
                    }
                }
            }
            self.verified_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
    }

    pub(crate) fn debug_summary(&self) -> String {
        let c = self.core.borrow();
        let mut out = String::new();
        for (h, x) in &c.conns {
            let st = x.conn.stats();
            out.push_str(&format!(
                "conn {h}: verified {} pending {} streams {} parked {} replies {} timeout {:?} path {:?} udp_tx {:?} udp_rx {:?} frame_tx {:?}\n",
                x.verified, x.pending.len(), x.streams.len(), x.parked.len(), x.replies.len(),
                x.conn.stats().path.rtt, st.path, st.udp_tx, st.udp_rx, st.frame_tx
            ));
        }
        for (i, p) in c.peers.iter().enumerate() {
            out.push_str(&format!("peer {i}: conn {:?} queued {}\n", p.conn, p.queue.q.len()));
        }
        out
    }

    /// Bans peer `p` until `until`: closes its connections (code [`close_code::BANNED`]), fails
    /// its queued requests, and refuses its reconnects meanwhile. Returns whether it was not
    /// banned before (a longer `until` extends a running ban).
    pub(crate) fn ban(&self, p: usize, until: Instant) -> Result<bool, TransportError> {
        let now = Instant::now();
        let newly = {
            let mut guard = self.core.borrow_mut();
            let c = &mut *guard;
            let slot = c.peers.get_mut(p).ok_or(TransportError::UnknownPeer)?;
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
            let mut closed = 0u64;
            let mut touched = Vec::new();
            for (&h, conn) in c.conns.iter_mut() {
                if (conn.peer == Some(p) || conn.expected == Some(p)) && !conn.conn.is_closed() {
                    conn.close(now, close_code::BANNED, "banned");
                    conn.lost_reason = Some("banned for misbehaviour".into());
                    closed += 1;
                    touched.push(h);
                }
            }
            // Closed outside a drive: the next round must send the close and do the bookkeeping.
            for h in touched {
                c.mark(h);
            }
            let mut s = self.shared.stats.borrow_mut();
            if newly {
                s.bans += 1;
            }
            drop(s);
            tracing::debug!(peer = p, closed, "peer banned");
            newly
        };
        for w in self.verified_waiters.borrow_mut().drain(..) {
            w.wake();
        }
        self.kick();
        Ok(newly)
    }

    /// Lifts a ban now; the peer may reconnect (and is dialed again) at once.
    pub(crate) fn unban(&self, p: usize) {
        {
            let mut c = self.core.borrow_mut();
            let Some(slot) = c.peers.get_mut(p) else { return };
            slot.banned_until = None;
            slot.backoff = BACKOFF_INITIAL;
            slot.next_dial = None;
        }
        self.kick();
    }

    /// Whether peer `p` is banned now.
    pub(crate) fn is_banned(&self, p: usize) -> bool {
        let now = Instant::now();
        self.core.borrow().peers.get(p).is_some_and(|s| s.banned_until.is_some_and(|t| t > now))
    }

    pub(crate) fn shutdown(&self) {
        {
            let mut c = self.core.borrow_mut();
            c.closing = true;
            let now = Instant::now();
            for conn in c.conns.values_mut() {
                conn.conn.close(now, VarInt::from_u32(close_code::NORMAL), bytes::Bytes::from_static(b"shutdown"));
            }
            c.mark_all();
        }
        self.kick();
    }
}

/// Asks for [`SOCKET_BUFFER_BYTES`] of kernel buffer each way (the `*FORCE` variants first,
/// which root may use beyond `net.core.rmem_max`). Bursts of a 32 MiB QUIC window otherwise
/// overflow the default ~200 KiB receive buffer and turn into loss and congestion backoff.
fn set_socket_buffers(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let v = SOCKET_BUFFER_BYTES as libc::c_int;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        for opt in [force, plain] {
            // SAFETY: `fd` is a valid socket owned by `socket`; the option value is a c_int
            // that outlives the call, and its size is passed correctly.
            let r = unsafe {
                libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t)
            };
            if r == 0 {
                break;
            }
        }
    }
}

/// Why the last connection to a peer failed (for the client connector's error).
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    Refused(String),
    Identity(String),
    Lost(String),
}

impl Failure {
    pub(crate) fn into_error(self) -> TransportError {
        match self {
            Failure::Refused(reason) => TransportError::HandshakeRefused { reason },
            Failure::Identity(r) => TransportError::IdentityMismatch(r),
            Failure::Lost(r) => TransportError::ConnectionLost(r),
        }
    }
}

// Core gets a failure log; kept outside the struct literal above for readability.
impl Core {
    fn jitter(&mut self, d: Duration) -> Duration {
        // Jitter in [d/2, d): peers that lost each other together do not re-dial in step.
        let ms = d.as_millis().max(2) as u64;
        Duration::from_millis(self.rng.random_range(ms / 2..ms))
    }

    fn maybe_dial(&mut self, p: usize, now: Instant, shared: &Shared, force: bool) {
        let Some(slot) = self.peers.get_mut(p) else { return };
        if slot.is_self || slot.conn.is_some() || self.closing {
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
        let slot = &self.peers[p];
        if !force && slot.queue.q.is_empty() {
            return;
        }
        if slot.next_dial.is_some_and(|t| t > now) {
            return;
        }
        let Some(cfg) = self.client_cfg.clone() else { return };
        let addr = slot.addr;
        shared.stats.borrow_mut().dials += 1;
        match self.endpoint.connect(now, cfg, addr, crate::tls::SERVER_NAME) {
            Ok((h, conn)) => {
                let serial = self.next_serial;
                self.next_serial += 1;
                self.conns.insert(h.0, Conn::new(conn, serial, true, Some(p), now));
                self.mark(h.0);
                self.peers[p].conn = Some(h.0);
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
        let Some(backoff) = self.peers.get(p).map(|s| s.backoff) else { return };
        let delay = self.jitter(backoff);
        let s = &mut self.peers[p];
        s.next_dial = Some(now + delay);
        s.backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Conn {
    fn new(conn: quinn_proto::Connection, serial: u64, dialer: bool, expected: Option<usize>, now: Instant) -> Self {
        Self {
            conn,
            serial,
            dialer,
            connected: false,
            expected,
            peer: None,
            verified: false,
            identity_deadline: now + IDENTITY_TIMEOUT,
            retire_at: None,
            streams: HashMap::new(),
            parked: Vec::new(),
            parked_frames: Vec::new(),
            pending: HashMap::new(),
            replies: HashMap::new(),
            queue: OutQueue::default(),
            lost_reason: None,
            lost_handled: false,
            dirty: false,
            wake_at: Some(now),
        }
    }

    fn timers(&mut self) -> Option<Instant> {
        let mut d = self.conn.poll_timeout();
        let mut take = |t: Instant| d = Some(d.map_or(t, |x: Instant| x.min(t)));
        // Both act only on an open connection: once it is closed (draining), a past identity
        // deadline or retirement would wake the driver in a busy loop until the drain ends.
        if !self.conn.is_closed() {
            if self.connected && !self.verified {
                take(self.identity_deadline);
            }
            if let Some(t) = self.retire_at {
                take(t);
            }
        }
        d
    }

    fn close(&mut self, now: Instant, code: u32, reason: &'static str) {
        self.conn.close(now, VarInt::from_u32(code), bytes::Bytes::from_static(reason.as_bytes()));
    }

    /// Writes as much of `data` as flow control allows; the rest waits for `Writable`.
    fn write_all(&mut self, id: StreamId, data: Vec<u8>) {
        self.write_from(id, PendingWrite { data, off: 0 });
    }

    fn resume_write(&mut self, id: StreamId) {
        if let Some(pw) = self.pending.remove(&id) {
            self.write_from(id, pw);
        }
    }

    fn write_from(&mut self, id: StreamId, mut pw: PendingWrite) {
        let mut s = self.conn.send_stream(id);
        // A partial write does not register the stream for a `Writable` event: only a write
        // that returns `Blocked` does. So keep writing until done or blocked.
        loop {
            match s.write(&pw.data[pw.off..]) {
                Ok(n) => {
                    pw.off += n;
                    if pw.off == pw.data.len() {
                        let _ = s.finish();
                        return;
                    }
                }
                Err(WriteError::Blocked) => {
                    self.pending.insert(id, pw);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn reject_stream(&mut self, id: StreamId, code: u32) {
        let _ = self.conn.recv_stream(id).stop(VarInt::from_u32(code));
        if id.dir() == Dir::Bi {
            let _ = self.conn.send_stream(id).reset(VarInt::from_u32(code));
        }
        self.streams.remove(&id);
        self.pending.remove(&id);
        if let Some(r) = self.replies.remove(&id) {
            r.complete(Err(TransportError::StreamReset(code as u64)));
        }
    }

    fn exporter(&self, ctx: &[u8]) -> Option<[u8; identity::EXPORTER_BYTES]> {
        let mut out = [0u8; identity::EXPORTER_BYTES];
        self.conn.crypto_session().export_keying_material(&mut out, identity::EXPORTER_LABEL, ctx).ok()?;
        Some(out)
    }
}

/// Pumps `queue` into streams of `conn`; returns (frames, bytes) sent.
fn pump(conn: &mut Conn, queue: &mut OutQueue) -> (u64, u64) {
    let (mut frames, mut bytes) = (0u64, 0u64);
    loop {
        // Drop requests whose asker already gave up.
        while matches!(queue.q.front(), Some(Out::Bi { reply, .. }) if reply.cancelled()) {
            queue.pop();
        }
        let Some(front) = queue.q.front() else { break };
        match front {
            Out::Uni { ty, .. } => {
                let ty = *ty;
                let Some(id) = conn.conn.streams().open(Dir::Uni) else { break };
                let mut data = vec![ty];
                while let Some(Out::Uni { ty: t, frame }) = queue.q.front() {
                    if *t != ty || (data.len() > 1 && data.len() + frame.len() > UNI_BATCH_BYTES_MAX) {
                        break;
                    }
                    if let Some(Out::Uni { frame, .. }) = queue.pop() {
                        frames += 1;
                        bytes += frame.len() as u64;
                        data.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                        data.extend_from_slice(&frame);
                    }
                }
                conn.write_all(id, data);
            }
            Out::Bi { .. } => {
                let Some(id) = conn.conn.streams().open(Dir::Bi) else { break };
                if let Some(Out::Bi { ty, frame, reply }) = queue.pop() {
                    frames += 1;
                    bytes += frame.len() as u64;
                    let mut data = Vec::with_capacity(frame.len() + 5);
                    data.push(ty);
                    data.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                    data.extend_from_slice(&frame);
                    conn.streams.insert(id, StreamSt { ty: Some(ty), reader: FrameReader::new(MAX_FRAME_BYTES), outgoing: true, frames: 0 });
                    conn.replies.insert(id, reply);
                    conn.write_all(id, data);
                }
            }
        }
    }
    (frames, bytes)
}

fn classify_lost(reason: &ConnectionError) -> (bool, String) {
    // (classical-only refusal?, text)
    let text = reason.to_string();
    let classical = text.contains("NoKxGroupsInCommon")
        || matches!(reason, ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == 0x100 + 40);
    (classical, text)
}

impl Core {
    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], shared: &Shared) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match self.endpoint.handle(now, from, None, None, BytesMut::from(data), &mut buf) {
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some(c) = self.conns.get_mut(&h.0) {
                    c.conn.handle_event(ev);
                    self.mark(h.0);
                }
            }
            Some(DatagramEvent::NewConnection(inc)) => {
                // A banned peer's reconnect is refused before the handshake when it comes from its
                // configured address (cheap); from elsewhere it is closed once its proof names it.
                let banned_addr = self.mode == Mode::Node
                    && self.peers.iter().any(|s| s.addr == inc.remote_address() && s.banned_until.is_some_and(|t| t > now));
                if banned_addr {
                    shared.stats.borrow_mut().ban_refusals += 1;
                }
                if self.mode == Mode::ClientDialer || self.closing || self.conns.len() >= CONNECTIONS_MAX || banned_addr {
                    let t = self.endpoint.refuse(inc, &mut buf);
                    self.out.push((t.destination, buf[..t.size].to_vec()));
                } else {
                    match self.endpoint.accept(inc, now, &mut buf, None) {
                        Ok((h, conn)) => {
                            let serial = self.next_serial;
                            self.next_serial += 1;
                            self.conns.insert(h.0, Conn::new(conn, serial, false, None, now));
                            self.mark(h.0);
                        }
                        Err(e) => {
                            let (classical, text) = classify_lost(&e.cause);
                            let mut s = shared.stats.borrow_mut();
                            s.handshakes_failed += 1;
                            if classical {
                                s.classical_only_refusals += 1;
                                tracing::warn!(%from, "refused handshake: peer offered no X25519MLKEM768 key share ({text})");
                            } else {
                                tracing::debug!(%from, "refused handshake: {text}");
                            }
                            if let Some(t) = e.response {
                                self.out.push((t.destination, buf[..t.size].to_vec()));
                            }
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.out.push((t.destination, buf[..t.size].to_vec()));
            }
            None => {}
        }
        self.buf = buf;
    }

    /// Processes everything pending on every connection; collects datagrams to send.
    /// Queues connection `h` for the next round (no-op if unknown or already queued).
    fn mark(&mut self, h: usize) {
        if let Some(c) = self.conns.get_mut(&h) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(h);
            }
        }
    }

    fn mark_all(&mut self) {
        let all: Vec<usize> = self.conns.keys().copied().collect();
        for h in all {
            self.mark(h);
        }
    }

    /// Drives the connections that have something to do: new input, or a due timer.
    fn drive_all(&mut self, now: Instant, drv: &Driver) {
        // Dials for peers with queued frames first, so a new connection is driven (sends its
        // Initial) in this same round.
        for p in 0..self.peers.len() {
            if self.peers[p].conn.is_none() && !self.peers[p].queue.q.is_empty() {
                self.maybe_dial(p, now, &drv.shared, false);
            }
        }
        for (&h, c) in self.conns.iter_mut() {
            if !c.dirty && c.wake_at.is_some_and(|t| t <= now) {
                c.dirty = true;
                self.dirty.push(h);
            }
        }
        // Driving one connection can queue another (a duplicate retired, a winner to pump).
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 4 {
            rounds += 1;
            let mut batch = std::mem::take(&mut self.dirty);
            batch.sort_unstable();
            for h in batch {
                let Some(c) = self.conns.get_mut(&h) else { continue };
                c.dirty = false;
                self.drive(h, now, drv);
                if let Some(c) = self.conns.get_mut(&h) {
                    c.wake_at = c.timers();
                }
            }
        }
        if !self.dirty.is_empty() {
            drv.kicked.set(true);
        }
    }

    fn drive(&mut self, h: usize, now: Instant, drv: &Driver) {
        let shared = &*drv.shared;
        // Timers.
        {
            let Some(c) = self.conns.get_mut(&h) else { return };
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
            }
            if !c.verified && c.connected && now >= c.identity_deadline && !c.conn.is_closed() {
                c.close(now, close_code::IDENTITY_TIMEOUT, "identity timeout");
                c.lost_reason = Some("identity proof timeout".into());
            }
            if c.retire_at.is_some_and(|t| now >= t) && !c.conn.is_closed() {
                c.close(now, close_code::DUPLICATE, "duplicate connection");
            }
        }
        // Application events.
        loop {
            let Some(c) = self.conns.get_mut(&h) else { return };
            let Some(ev) = c.conn.poll() else { break };
            match ev {
                Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
                Event::Connected => self.on_connected(h, now, shared),
                Event::ConnectionLost { reason } => self.on_lost(h, now, reason, drv),
                Event::Stream(StreamEvent::Opened { dir }) => loop {
                    let Some(c) = self.conns.get_mut(&h) else { return };
                    let Some(id) = c.conn.streams().accept(dir) else { break };
                    c.streams.insert(id, StreamSt { ty: None, reader: FrameReader::new(MAX_FRAME_BYTES), outgoing: false, frames: 0 });
                    // Uni streams are read at once (the first carries the proof; frames of
                    // others are held until it verifies); bi streams wait for the proof.
                    if c.verified || dir == Dir::Uni {
                        self.read_stream(h, id, now, drv);
                    } else {
                        c.parked.push(id);
                    }
                },
                Event::Stream(StreamEvent::Readable { id }) => {
                    if !c.parked.contains(&id) {
                        self.read_stream(h, id, now, drv);
                    }
                }
                Event::Stream(StreamEvent::Writable { id }) => c.resume_write(id),
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    c.pending.remove(&id);
                    if let Some(r) = c.replies.remove(&id) {
                        r.complete(Err(TransportError::StreamReset(error_code.into_inner())));
                    }
                }
                Event::Stream(StreamEvent::Finished { .. }) | Event::Stream(StreamEvent::Available { .. }) => {}
            }
        }
        // A connection we closed ourselves emits no ConnectionLost: do the bookkeeping now.
        if self.conns.get(&h).is_some_and(|c| c.conn.is_closed() && !c.lost_handled) {
            self.on_lost(h, now, ConnectionError::LocallyClosed, drv);
        }
        // Send queued frames on verified connections.
        self.pump_conn(h, shared);
        // Endpoint events.
        let mut drained = false;
        if let Some(c) = self.conns.get_mut(&h) {
            while let Some(ev) = c.conn.poll_endpoint_events() {
                if ev.is_drained() {
                    drained = true;
                }
                if let Some(cev) = self.endpoint.handle_event(ConnectionHandle(h), ev) {
                    c.conn.handle_event(cev);
                }
            }
            // Datagrams.
            let mut n = 0;
            loop {
                self.tx_buf.clear();
                let Some(t) = c.conn.poll_transmit(now, 1, &mut self.tx_buf) else { break };
                self.out.push((t.destination, self.tx_buf[..t.size].to_vec()));
                n += 1;
                if n >= 256 {
                    // More next round; let the receive task run first.
                    drv.kicked.set(true);
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(h);
                    }
                    break;
                }
            }
        }
        if drained {
            if let Some(c) = self.conns.remove(&h) {
                self.forget(h, c, now, drv);
            }
        }
    }

    fn pump_conn(&mut self, h: usize, shared: &Shared) {
        let Some(c) = self.conns.get_mut(&h) else { return };
        if !c.verified || c.retire_at.is_some() || c.conn.is_closed() {
            return;
        }
        let (f, b) = match (self.mode, c.peer) {
            (Mode::ClientServer, _) => {
                let mut q = std::mem::take(&mut c.queue);
                let r = pump(c, &mut q);
                c.queue = q;
                r
            }
            (_, Some(p)) => {
                let Some(slot) = self.peers.get_mut(p) else { return };
                if slot.conn != Some(h) {
                    return;
                }
                pump(c, &mut slot.queue)
            }
            _ => (0, 0),
        };
        if f > 0 {
            let mut s = shared.stats.borrow_mut();
            s.frames_out += f;
            s.bytes_out += b;
            drop(s);
            shared.peer_stat(c.peer, |ps| {
                ps.frames_out += f;
                ps.bytes_out += b;
            });
        }
    }

    fn on_connected(&mut self, h: usize, now: Instant, shared: &Shared) {
        let mode = self.mode;
        let Some(c) = self.conns.get_mut(&h) else { return };
        c.connected = true;
        c.identity_deadline = now + IDENTITY_TIMEOUT;
        let send_proof = mode != Mode::ClientDialer;
        if send_proof {
            let ctx = if c.dialer { identity::CONTEXT_DIALER } else { identity::CONTEXT_ACCEPTOR };
            let proof = match (c.exporter(ctx), self.keypair.as_ref()) {
                (Some(x), Some(kp)) => identity::make_proof(kp, &x).ok(),
                _ => None,
            };
            match (proof, c.conn.streams().open(Dir::Uni)) {
                (Some(proof), Some(id)) => {
                    let mut data = vec![STREAM_IDENTITY];
                    data.extend_from_slice(&(proof.len() as u32).to_le_bytes());
                    data.extend_from_slice(&proof);
                    c.write_all(id, data);
                }
                _ => {
                    c.close(now, close_code::BAD_PROOF, "cannot make proof");
                    return;
                }
            }
        }
        if mode == Mode::ClientServer {
            // Clients are not authenticated: the client endpoint is for load and operators.
            c.verified = true;
            c.conn.set_receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES));
            shared.stats.borrow_mut().handshakes_ok += 1;
        }
    }

    fn on_lost(&mut self, h: usize, now: Instant, reason: ConnectionError, drv: &Driver) {
        let Some(c) = self.conns.get_mut(&h) else { return };
        if c.lost_handled {
            return;
        }
        c.lost_handled = true;
        let (classical, text) = classify_lost(&reason);
        let text = c.lost_reason.take().unwrap_or(text);
        let mut s = drv.shared.stats.borrow_mut();
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
        c.pending.clear();
        let failure = if classical {
            Failure::Refused("no common key exchange: X25519MLKEM768 is required".into())
        } else if let ConnectionError::ApplicationClosed(ac) = &reason {
            let code = u64::from(ac.error_code);
            if code == close_code::UNKNOWN_PEER as u64 || code == close_code::IDENTITY_MISMATCH as u64 {
                Failure::Identity(text.clone())
            } else {
                Failure::Lost(text.clone())
            }
        } else if text.contains("identity") {
            Failure::Identity(text.clone())
        } else {
            Failure::Lost(text.clone())
        };
        let slot_peer = c.expected.or(c.peer);
        if let Some(p) = slot_peer {
            if self.peers.get(p).is_some_and(|s| s.conn == Some(h)) {
                self.peers[p].conn = None;
                self.schedule_redial(p, now);
                self.last_failure.insert(p, failure);
            }
        }
        for w in drv.verified_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn forget(&mut self, h: usize, c: Conn, _now: Instant, drv: &Driver) {
        for w in drv.verified_waiters.borrow_mut().drain(..) {
            w.wake();
        }
        for p in self.peers.iter_mut() {
            if p.conn == Some(h) {
                p.conn = None;
            }
        }
        for (_, r) in c.replies {
            r.complete(Err(TransportError::ConnectionLost("drained".into())));
        }
    }

    fn read_stream(&mut self, h: usize, id: StreamId, now: Instant, drv: &Driver) {
        let shared = &*drv.shared;
        let Some(c) = self.conns.get_mut(&h) else { return };
        let mut chunks_data = Vec::new();
        let mut fin = false;
        let mut reset = None;
        {
            let mut rs = c.conn.recv_stream(id);
            let Ok(mut chunks) = rs.read(true) else { return };
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(ch)) => chunks_data.push(ch.bytes),
                    Ok(None) => {
                        fin = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(code)) => {
                        reset = Some(code.into_inner());
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
        }
        if let Some(code) = reset {
            c.streams.remove(&id);
            if let Some(r) = c.replies.remove(&id) {
                r.complete(Err(TransportError::StreamReset(code)));
            }
            return;
        }
        let mode = self.mode;
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut err: Option<u32> = None;
        {
            let Some(st) = c.streams.get_mut(&id) else { return };
            for mut data in chunks_data {
                if st.ty.is_none() && !data.is_empty() {
                    let ty = data[0];
                    let ok = match (mode, id.dir(), st.outgoing) {
                        (_, Dir::Bi, true) => true,
                        (Mode::Node, Dir::Uni, _) => ty == STREAM_IDENTITY || ty == STREAM_VERTICES,
                        (Mode::Node, Dir::Bi, false) => ty == STREAM_QUERY || ty == STREAM_VERTEX_REQUEST,
                        (Mode::ClientServer, Dir::Bi, false) => ty == STREAM_SUBMIT,
                        (Mode::ClientDialer, Dir::Uni, _) => ty == STREAM_IDENTITY || ty == STREAM_EVENTS,
                        _ => false,
                    };
                    if !ok {
                        err = Some(stream_code::GARBAGE);
                        break;
                    }
                    st.ty = Some(ty);
                    if ty == STREAM_IDENTITY {
                        st.reader = FrameReader::new(identity::PROOF_BYTES);
                    } else if mode != Mode::Node {
                        st.reader = FrameReader::new(MAX_CLIENT_FRAME_BYTES);
                    }
                    bytes::Buf::advance(&mut data, 1);
                }
                if let Err(e) = st.reader.push(&data, &mut |f| frames.push(f)) {
                    err = Some(frame_err_code(e));
                    break;
                }
            }
            if err.is_none() && fin && !st.reader.at_boundary() {
                err = Some(stream_code::GARBAGE);
            }
            if err.is_none() {
                let limit = match st.ty {
                    Some(STREAM_VERTICES) | Some(STREAM_EVENTS) => u32::MAX,
                    _ => 1,
                };
                if st.frames.saturating_add(frames.len() as u32) > limit {
                    err = Some(stream_code::GARBAGE);
                }
                if fin && frames.is_empty() && st.frames == 0 && limit == 1 {
                    err = Some(stream_code::GARBAGE);
                }
                st.frames = st.frames.saturating_add(frames.len() as u32);
            }
        }
        if let Some(code) = err {
            let peer = c.peer;
            let is_identity = c.streams.get(&id).is_some_and(|s| s.ty == Some(STREAM_IDENTITY)) && !c.verified;
            c.reject_stream(id, code);
            let mut s = shared.stats.borrow_mut();
            s.streams_reset += 1;
            drop(s);
            shared.peer_stat(peer, |ps| ps.streams_reset += 1);
            tracing::debug!(conn = h, ?id, code, "stream rejected");
            if is_identity {
                c.close(now, close_code::BAD_PROOF, "malformed identity proof");
                c.lost_reason = Some("malformed identity proof".into());
                shared.stats.borrow_mut().identity_refusals += 1;
            }
            return;
        }
        let ty = c.streams.get(&id).and_then(|s| s.ty);
        let outgoing = c.streams.get(&id).is_some_and(|s| s.outgoing);
        if fin || (ty.is_some_and(|t| t != STREAM_VERTICES && t != STREAM_EVENTS && t != STREAM_IDENTITY) && !frames.is_empty()) {
            // Nothing more wanted on this stream.
            if fin {
                c.streams.remove(&id);
            }
        }
        if frames.is_empty() {
            return;
        }
        if ty == Some(STREAM_IDENTITY) {
            let proof = frames.swap_remove(0);
            self.on_proof(h, &proof, now, drv);
            return;
        }
        // Parked (unverified) data is held until the proof arrives.
        if !c.verified && !outgoing {
            c.parked_frames.push((id, ty.unwrap_or(0), frames));
            return;
        }
        self.deliver(h, id, ty.unwrap_or(0), outgoing, frames, drv);
    }

    fn deliver(&mut self, h: usize, id: StreamId, ty: u8, outgoing: bool, frames: Vec<Vec<u8>>, drv: &Driver) {
        let shared = &*drv.shared;
        let Some(c) = self.conns.get_mut(&h) else { return };
        let n = frames.len() as u64;
        let b: u64 = frames.iter().map(|f| f.len() as u64).sum();
        {
            let mut s = shared.stats.borrow_mut();
            s.frames_in += n;
            s.bytes_in += b;
        }
        shared.peer_stat(c.peer, |ps| {
            ps.frames_in += n;
            ps.bytes_in += b;
        });
        if outgoing {
            if let Some(r) = c.replies.remove(&id) {
                if let Some(f) = frames.into_iter().next() {
                    r.complete(Ok(f));
                }
            }
            return;
        }
        let me = drv.weak_self();
        for bytes in frames {
            let responder = || Responder { driver: me.clone(), conn: h, serial: c.serial, stream: id, done: false };
            let item = match (ty, c.peer) {
                (STREAM_VERTICES, Some(p)) => Incoming::Vertex { peer: PeerId(p), bytes },
                (STREAM_QUERY, Some(p)) => Incoming::Query { peer: PeerId(p), bytes, reply: responder() },
                (STREAM_VERTEX_REQUEST, Some(p)) => Incoming::VertexRequest { peer: PeerId(p), bytes, reply: responder() },
                (STREAM_SUBMIT, _) => Incoming::ClientSubmit { client: ClientId(c.serial), bytes, reply: responder() },
                (STREAM_EVENTS, _) => Incoming::Event { bytes },
                _ => continue,
            };
            shared.deliver(item);
        }
    }

    fn on_proof(&mut self, h: usize, proof: &[u8], now: Instant, drv: &Driver) {
        let shared = &*drv.shared;
        let Some(c) = self.conns.get_mut(&h) else { return };
        if c.verified {
            return;
        }
        let ctx = if c.dialer { identity::CONTEXT_ACCEPTOR } else { identity::CONTEXT_DIALER };
        let exporter = c.exporter(ctx);
        let parsed = identity::parse_proof(proof);
        let outcome: Result<usize, (u32, String)> = match (parsed, exporter) {
            (None, _) | (_, None) => Err((close_code::BAD_PROOF, "malformed identity proof".into())),
            (Some(pr), Some(x)) => {
                let who = if c.dialer { c.expected } else { self.by_node_id.get(&pr.node_id).copied() };
                match who {
                    None => Err((close_code::UNKNOWN_PEER, "unknown ML-DSA identity".into())),
                    Some(p) if self.peers[p].is_self => Err((close_code::UNKNOWN_PEER, "peer claims our own identity".into())),
                    Some(p) => {
                        if identity::verify_proof(&self.peers[p].public_key, &x, &pr) {
                            Ok(p)
                        } else {
                            Err((close_code::IDENTITY_MISMATCH, "identity proof does not verify against the expected ML-DSA-87 key".into()))
                        }
                    }
                }
            }
        };
        match outcome {
            Err((code, reason)) => {
                tracing::warn!(conn = h, remote = %c.conn.remote_address(), "refusing connection: {reason}");
                let msg: &'static str = match code {
                    close_code::UNKNOWN_PEER => "unknown identity",
                    close_code::IDENTITY_MISMATCH => "identity mismatch",
                    _ => "bad identity proof",
                };
                c.close(now, code, msg);
                c.lost_reason = Some(format!("identity refused: {reason}"));
                shared.stats.borrow_mut().identity_refusals += 1;
            }
            Ok(p) if self.peers[p].banned_until.is_some_and(|t| t > now) => {
                c.close(now, close_code::BANNED, "banned");
                c.lost_reason = Some("banned for misbehaviour".into());
                shared.stats.borrow_mut().ban_refusals += 1;
            }
            Ok(p) => {
                c.verified = true;
                c.peer = Some(p);
                c.conn.set_receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES));
                shared.stats.borrow_mut().handshakes_ok += 1;
                let dialer_id = if c.dialer { self.own_id } else { self.peers[p].node_id };
                // One connection per peer: if another exists, keep the one dialed by the smaller
                // node id (both sides decide alike); the loser lingers, then closes.
                let current = self.peers[p].conn;
                match current {
                    None => self.peers[p].conn = Some(h),
                    Some(o) if o == h => {}
                    Some(o) => {
                        let other_dialer = self.conns.get(&o).map(|oc| {
                            if oc.dialer {
                                self.own_id
                            } else {
                                self.peers[p].node_id
                            }
                        });
                        let new_wins = match other_dialer {
                            None => true,
                            Some(od) if od == dialer_id => true, // same dialer: the newer replaces a stale one
                            Some(od) => dialer_id < od,
                        };
                        let (winner, loser) = if new_wins { (h, o) } else { (o, h) };
                        self.peers[p].conn = Some(winner);
                        if let Some(lc) = self.conns.get_mut(&loser) {
                            lc.retire_at = Some(now + DUPLICATE_GRACE);
                        }
                        self.mark(loser);
                        self.mark(winner);
                    }
                }
                self.peers[p].backoff = BACKOFF_INITIAL;
                self.peers[p].next_dial = None;
                self.last_failure.remove(&p);
                // Release data that arrived before the proof.
                if let Some(c) = self.conns.get_mut(&h) {
                    let parked = std::mem::take(&mut c.parked);
                    let held = std::mem::take(&mut c.parked_frames);
                    for (id, ty, frames) in held {
                        self.deliver(h, id, ty, false, frames, drv);
                    }
                    for id in parked {
                        self.read_stream(h, id, now, drv);
                    }
                }
                for w in drv.verified_waiters.borrow_mut().drain(..) {
                    w.wake();
                }
            }
        }
    }

    fn apply(&mut self, d: Deferred, shared: &Shared) {
        let (Deferred::Respond { conn, .. } | Deferred::Reset { conn, .. }) = &d;
        self.mark(*conn);
        match d {
            Deferred::Respond { conn, serial, stream, bytes } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                if c.serial != serial {
                    return;
                }
                let mut data = Vec::with_capacity(bytes.len() + 4);
                data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                data.extend_from_slice(&bytes);
                let mut s = shared.stats.borrow_mut();
                s.frames_out += 1;
                s.bytes_out += bytes.len() as u64;
                drop(s);
                shared.peer_stat(c.peer, |ps| {
                    ps.frames_out += 1;
                    ps.bytes_out += bytes.len() as u64;
                });
                c.write_all(stream, data);
            }
            Deferred::Reset { conn, serial, stream, code } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                if c.serial == serial {
                    let _ = c.conn.send_stream(stream).reset(VarInt::from_u32(code));
                }
            }
        }
    }

    /// The earliest instant the work task must wake at.
    fn deadline(&mut self, now: Instant) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut take = |t: Instant| d = Some(d.map_or(t, |x: Instant| x.min(t)));
        for c in self.conns.values() {
            if let Some(t) = c.wake_at {
                take(t);
            }
        }
        for p in &self.peers {
            if p.conn.is_none() && !p.queue.q.is_empty() {
                take(p.banned_until.filter(|t| *t > now).or(p.next_dial).unwrap_or(now));
            }
        }
        d
    }
}

fn frame_err_code(e: FrameError) -> u32 {
    match e {
        FrameError::TooLarge(_) => stream_code::FRAME_TOO_LARGE,
        FrameError::Garbage => stream_code::GARBAGE,
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks.

async fn recv_loop(drv: Rc<Driver>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        if drv.stopped.get() {
            return;
        }
        match drv.socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let now = Instant::now();
                drv.shared.stats.borrow_mut().datagrams_in += 1;
                drv.core.borrow_mut().handle_datagram(now, from, &buf[..n], &drv.shared);
                drv.kick();
            }
            Err(e) => {
                // ICMP errors (peer port closed) surface here on some kernels: not fatal.
                tracing::debug!("recv_from: {e}");
            }
        }
    }
}

/// Wakes on a kick or at `deadline`, whichever first.
struct KickOrTimer<'a> {
    drv: &'a Driver,
    timer: Option<glommio::timer::Timer>,
}

impl Future for KickOrTimer<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drv.kicked.get() {
            return Poll::Ready(());
        }
        *self.drv.waker.borrow_mut() = Some(cx.waker().clone());
        if let Some(t) = self.timer.as_mut() {
            if Pin::new(t).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

async fn work_loop(drv: Rc<Driver>) {
    loop {
        if drv.stopped.get() {
            return;
        }
        drv.kicked.set(false);
        let now = Instant::now();
        let (out, deadline) = {
            let mut c = drv.core.borrow_mut();
            let deferred = std::mem::take(&mut *drv.deferred.borrow_mut());
            for d in deferred {
                c.apply(d, &drv.shared);
            }
            c.drive_all(now, &drv);
            (std::mem::take(&mut c.out), c.deadline(now))
        };
        if !out.is_empty() {
            send_all(&drv, out).await;
        }
        if drv.core.borrow().closing && drv.core.borrow().conns.is_empty() {
            drv.stopped.set(true);
            if let Some(t) = drv.recv_task.borrow_mut().take() {
                t.cancel();
            }
            return;
        }
        if drv.kicked.get() {
            // Let the receive task and the shard run before the next round.
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        let timer = deadline.map(|t| glommio::timer::Timer::new(t.saturating_duration_since(Instant::now())));
        KickOrTimer { drv: &drv, timer }.await;
    }
}

async fn send_all(drv: &Driver, out: Vec<(SocketAddr, Vec<u8>)>) {
    let n = out.len() as u64;
    let mut it = out.into_iter();
    loop {
        // Up to SENDS_IN_FLIGHT_MAX io_uring sends in flight at once.
        let batch: Vec<_> = it.by_ref().take(SENDS_IN_FLIGHT_MAX).collect();
        if batch.is_empty() {
            break;
        }
        let futs: Vec<_> = batch.iter().map(|(a, b)| drv.socket.send_to(b, *a)).collect();
        for r in join_all(futs).await {
            if let Err(e) = r {
                tracing::debug!("send_to: {e}");
            }
        }
    }
    drv.shared.stats.borrow_mut().datagrams_out += n;
}

/// Polls all futures concurrently; results in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut all = true;
        for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all {
            Poll::Ready(outs.iter_mut().filter_map(Option::take).collect())
        } else {
            Poll::Pending
        }
    })
    .await
}
