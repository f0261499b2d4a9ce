//! The per-shard I/O loop: one UDP socket, one `quinn_proto::Endpoint`, all its connections.
//!
//! Two glommio tasks share a [`Driver`]: the receive task feeds datagrams to the endpoint; the
//! work task applies deferred actions (responses, resets), runs one round (dials, due timers,
//! every dirty connection's events, sends) and sends the round's datagrams. No `RefCell`
//! borrow is ever held across an `.await`, and user code is never called while the core is
//! borrowed.
//!
//! The state is split by owner, the way quinn splits endpoint from connection:
//! * [`udp`]: the socket, GSO sends;
//! * [`endpoint`]: the quinn endpoint, accept and refusal, dialing a connection;
//! * [`connection`]: the connection table, lifecycle, timers, loss;
//! * [`streams`]: stream typing, framing, blocked writes, parked streams;
//! * [`auth`]: our identity proof and the judging of the peer's;
//! * [`peers`]: peer slots, dial backoff, bans, connect waiters;
//! * [`queues`]: send queues and pumping them into streams;
//! * [`rpc`]: reply slots, responders, deferred actions;
//! * [`inbox`]: what the shard receives;
//! * [`meter`]: stream credit for peers over their query budget;
//! * [`stats`]: the counters;
//! * [`round`]: one round's dispatch over all of them.
//!
//! This file owns the [`Driver`] handle (the wake-up flag, the deferred actions, the tasks'
//! lifetime) and the two tasks; it may call every module above.

mod auth;
mod connection;
mod endpoint;
mod inbox;
mod meter;
mod peers;
mod queues;
mod round;
mod rpc;
mod stats;
mod streams;
mod udp;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use pqdag_crypto::{Keypair, PublicKey};
use quinn_proto::VarInt;

pub use connection::close_code;
pub(crate) use queues::Out;
pub(crate) use rpc::reply_pair;
pub use rpc::Responder;
pub use streams::stream_code;

use auth::Auth;
use connection::Conns;
use endpoint::EndpointState;
use inbox::Inbox;
use peers::{Peers, Waiters};
use round::Core;
use rpc::Deferred;
use stats::Stats;
use udp::Udp;

use crate::TransportError;

/// Which side of which endpoint a driver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Node endpoint: dials and accepts peers, mutual ML-DSA binding.
    Node,
    /// Client endpoint of a node: accepts clients whose key it lists, then proves itself.
    ClientServer,
    /// Client connector: dials one server, proves its client key, verifies the server's proof.
    ClientDialer,
}

/// Shared between the driver(s) of a shard and its API: what arrives, and the counters.
pub(crate) struct Shared {
    pub(crate) inbox: Inbox,
    pub(crate) stats: Stats,
}

impl Shared {
    /// An inbox of at most `incoming_max` items and counters for `peers` peers.
    pub(crate) fn new(incoming_max: usize, peers: usize) -> Rc<Self> {
        Rc::new(Self { inbox: Inbox::new(incoming_max), stats: Stats::new(peers) })
    }
}

/// The work task's wake-up: a flag (something to do) and the task's waker.
#[derive(Default)]
struct Kick {
    kicked: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick {
    /// Sets the flag and wakes the work task.
    fn kick(&self) {
        self.kicked.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Sets the flag only (the work task is running: it runs another round before sleeping).
    fn raise(&self) {
        self.kicked.set(true);
    }
}

/// One socket + endpoint + its connections, driven by two local tasks.
pub(crate) struct Driver {
    pub(crate) udp: Udp,
    pub(crate) core: RefCell<Core>,
    deferred: RefCell<Vec<Deferred>>,
    kick: Kick,
    pub(crate) shared: Rc<Shared>,
    pub(crate) stopped: Cell<bool>,
    pub(crate) local_addr: SocketAddr,
    /// Tasks waiting for a peer connection to be verified (connect).
    waiters: Waiters,
    me: Weak<Driver>,
    recv_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

/// What a [`Driver`] is made from.
pub(crate) struct DriverParams {
    pub(crate) mode: Mode,
    pub(crate) bind: SocketAddr,
    pub(crate) server_cfg: Option<Arc<quinn_proto::ServerConfig>>,
    pub(crate) client_cfg: Option<quinn_proto::ClientConfig>,
    pub(crate) keypair: Arc<Keypair>,
    pub(crate) client_keys: Vec<PublicKey>,
    pub(crate) peers: Vec<(PublicKey, SocketAddr)>,
    pub(crate) frames_max: usize,
}

impl Driver {
    /// Binds the socket and builds the endpoint; [`Driver::start`] starts its tasks.
    pub(crate) fn new(p: DriverParams, shared: Rc<Shared>) -> Result<Rc<Self>, TransportError> {
        let udp = Udp::bind(p.bind)?;
        let local_addr = udp.local_addr;
        let auth = Auth::new(p.keypair, p.client_keys);
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(local_addr.port());
        let peers = Peers::new(p.peers, auth.own_id, p.mode, seed);
        let endpoint = EndpointState::new(p.mode, p.server_cfg, p.client_cfg);
        Ok(Rc::new_cyclic(|me| Self {
            udp,
            core: RefCell::new(Core { endpoint, auth, peers, conns: Conns::new(), meters: Default::default(), out: Vec::new(), frames_max: p.frames_max }),
            deferred: RefCell::new(Vec::new()),
            kick: Kick::default(),
            shared,
            stopped: Cell::new(false),
            local_addr,
            waiters: Waiters::default(),
            me: me.clone(),
            recv_task: RefCell::new(None),
        }))
    }

    fn weak_self(&self) -> Weak<Driver> {
        self.me.clone()
    }

    /// Wakes the work task for another round.
    pub(crate) fn kick(&self) {
        self.kick.kick();
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
        let mut guard = self.core.borrow_mut();
        let c = &mut *guard;
        let frames_max = c.frames_max;
        let now = Instant::now();
        let slot = c.peers.sendable(p, now)?;
        let conn = slot.conn;
        queues::enqueue(&mut slot.queue, o, frames_max, p, &self.shared.stats)?;
        if let Some(h) = conn {
            c.conns.mark(h);
        }
        drop(guard);
        self.kick();
        Ok(())
    }

    /// Queues an event for client connection `client` (ClientServer mode).
    pub(crate) fn enqueue_client(&self, client: u64, o: Out) -> Result<(), TransportError> {
        let mut guard = self.core.borrow_mut();
        let c = &mut *guard;
        let frames_max = c.frames_max;
        let (&h, conn) = c.conns.map.iter_mut().find(|(_, x)| x.serial == client).ok_or(TransportError::UnknownPeer)?;
        if conn.queue.push(o, frames_max).is_err() {
            self.shared.stats.queue_drops(None, 1);
            return Err(TransportError::QueueFull);
        }
        c.conns.mark(h);
        drop(guard);
        self.kick();
        Ok(())
    }

    /// All connected client ids (ClientServer mode).
    pub(crate) fn clients(&self) -> Vec<u64> {
        self.core.borrow().conns.map.values().filter(|c| c.verified).map(|c| c.serial).collect()
    }

    /// Whether peer `p` has a verified connection to send on.
    pub(crate) fn peer_ready(&self, p: usize) -> bool {
        let c = self.core.borrow();
        c.peers.get(p).and_then(|s| s.conn).and_then(|h| c.conns.map.get(&h)).is_some_and(|x| x.verified)
    }

    /// Starts a dial to `p` now if none is up (used by the client connector).
    pub(crate) fn dial_now(&self, p: usize) {
        {
            let mut guard = self.core.borrow_mut();
            let c = &mut *guard;
            c.peers.clear_next_dial(p);
            let now = Instant::now();
            c.peers.maybe_dial(p, now, &mut c.endpoint, &mut c.conns, &self.shared.stats, true);
        }
        self.kick();
    }

    /// Resolves when peer `p` is verified, or with the reason its last connection failed.
    pub(crate) fn wait_verified(self: &Rc<Self>, p: usize) -> impl Future<Output = Result<(), TransportError>> + '_ {
        std::future::poll_fn(move |cx| {
            if self.peer_ready(p) {
                return Poll::Ready(Ok(()));
            }
            if let Some(r) = self.core.borrow().peers.failure_if_idle(p) {
                return Poll::Ready(Err(r.clone().into_error()));
            }
            self.waiters.push(cx.waker().clone());
            Poll::Pending
        })
    }

    /// Connection internals, for debugging stalls.
    pub(crate) fn debug_summary(&self) -> String {
        let c = self.core.borrow();
        let mut out = String::new();
        for (h, x) in &c.conns.map {
            let st = x.conn.stats();
            out.push_str(&format!(
                "conn {h}: verified {} pending {} streams {} parked {} replies {} timeout {:?} path {:?} udp_tx {:?} udp_rx {:?} frame_tx {:?}\n",
                x.verified, x.streams.pending.len(), x.streams.states.len(), x.streams.parked.len(), x.replies.len(),
                x.conn.stats().path.rtt, st.path, st.udp_tx, st.udp_rx, st.frame_tx
            ));
        }
        for (i, p) in c.peers.iter().enumerate() {
            out.push_str(&format!("peer {i}: conn {:?} queued {}\n", p.conn, p.queue.len()));
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
            c.peers.ban(p, until, now, &mut c.conns, &self.shared.stats)?
        };
        self.waiters.wake_all();
        self.kick();
        Ok(newly)
    }

    /// Lifts a ban now; the peer may reconnect (and is dialed again) at once.
    pub(crate) fn unban(&self, p: usize) {
        if !self.core.borrow_mut().peers.unban(p) {
            return;
        }
        self.kick();
    }

    /// Meters peer `p`'s new bidirectional streams at `per_second` (at most `burst` unused)
    /// until `until` (see [`meter`]).
    pub(crate) fn meter(&self, p: usize, per_second: u32, burst: u32, until: Instant) {
        let newly = self.core.borrow_mut().meters.set(p, per_second, burst, until, Instant::now());
        if newly {
            self.kick();
        }
    }

    /// Holds peer `p`'s pushes (see [`meter`]): no new unidirectional stream credit, its open
    /// push streams stopped unread now and its new ones as they open.
    pub(crate) fn hold_pushes(&self, p: usize) {
        let mut guard = self.core.borrow_mut();
        let c = &mut *guard;
        if !c.meters.hold(p) {
            return;
        }
        c.conns.each_verified_of(p, |x| {
            x.conn.set_max_concurrent_streams(quinn_proto::Dir::Uni, VarInt::from_u32(0));
            streams::stop_pushes(x, &self.shared.stats);
        });
        drop(guard);
        self.kick();
    }

    /// Releases peer `p`'s pushes: its unidirectional stream credit comes back.
    pub(crate) fn release_pushes(&self, p: usize) {
        let mut guard = self.core.borrow_mut();
        let c = &mut *guard;
        if !c.meters.release(p) {
            return;
        }
        c.conns.each_verified_of(p, |x| x.conn.set_max_concurrent_streams(quinn_proto::Dir::Uni, VarInt::from_u32(crate::config::UNI_STREAMS_MAX)));
        drop(guard);
        self.kick();
    }

    /// Whether peer `p`'s pushes are held.
    pub(crate) fn is_holding(&self, p: usize) -> bool {
        self.core.borrow().meters.is_held(p)
    }

    /// Metered peers that spent all their stream credit since the last call.
    pub(crate) fn take_starved(&self) -> Vec<usize> {
        self.core.borrow_mut().meters.take_starved()
    }

    /// Whether peer `p`'s streams are metered now.
    pub(crate) fn is_metered(&self, p: usize) -> bool {
        self.core.borrow().meters.is_metered(p)
    }

    /// Whether peer `p` is banned now.
    pub(crate) fn is_banned(&self, p: usize) -> bool {
        let now = Instant::now();
        self.core.borrow().peers.is_banned(p, now)
    }

    /// Closes every connection (orderly) and lets the work task stop once they drained.
    pub(crate) fn shutdown(&self) {
        {
            let mut c = self.core.borrow_mut();
            c.endpoint.closing = true;
            let now = Instant::now();
            for conn in c.conns.map.values_mut() {
                conn.conn.close(now, VarInt::from_u32(close_code::NORMAL), bytes::Bytes::from_static(b"shutdown"));
            }
            c.conns.mark_all();
        }
        self.kick();
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
        match drv.udp.recv(&mut buf).await {
            Ok(r) => {
                let now = Instant::now();
                let mut count = 0u64;
                {
                    let mut core = drv.core.borrow_mut();
                    for d in buf[..r.len].chunks(r.segment) {
                        core.handle_datagram(now, r.from, d, &drv.shared);
                        count += 1;
                    }
                }
                let mut s = drv.shared.stats.get();
                s.datagrams_in += count;
                if count > 1 {
                    s.gro_receives += 1;
                    s.gro_datagrams += count;
                }
                drop(s);
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
        if self.drv.kick.kicked.get() {
            return Poll::Ready(());
        }
        *self.drv.kick.waker.borrow_mut() = Some(cx.waker().clone());
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
        drv.kick.kicked.set(false);
        let now = Instant::now();
        let (out, deadline) = {
            let mut guard = drv.core.borrow_mut();
            let c = &mut *guard;
            let deferred = std::mem::take(&mut *drv.deferred.borrow_mut());
            for d in deferred {
                rpc::apply(d, &mut c.conns, &drv.shared.stats);
            }
            c.drive_all(now, &drv);
            (std::mem::take(&mut c.out), c.deadline(now))
        };
        if !out.is_empty() {
            drv.udp.send_all(out, &drv.shared.stats).await;
        }
        if drv.core.borrow().endpoint.closing && drv.core.borrow().conns.map.is_empty() {
            drv.stopped.set(true);
            if let Some(t) = drv.recv_task.borrow_mut().take() {
                t.cancel();
            }
            return;
        }
        if drv.kick.kicked.get() {
            // Let the receive task and the shard run before the next round.
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        let timer = deadline.map(|t| glommio::timer::Timer::new(t.saturating_duration_since(Instant::now())));
        KickOrTimer { drv: &drv, timer }.await;
    }
}
