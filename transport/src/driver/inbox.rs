//! What arrives for the shard: the bounded queue of [`Incoming`] items the shard takes with
//! `recv`, and the turning of a stream's frames into those items (or into replies).
//!
//! Owns: the incoming queue and its waker. May call: stats, rpc (replies and responders),
//! and reads a connection's peer and serial.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Weak;
use std::task::{Poll, Waker};

use quinn_proto::StreamId;

use super::connection::Conn;
use super::rpc::Responder;
use super::stats::Stats;
use super::{Driver, Shared};
use crate::frame::*;
use crate::{ClientId, ClientKeyId, Incoming, PeerId, INCOMING_BYTES_MAX, INCOMING_PEER_BYTES_MAX, INCOMING_PEER_PAUSE_BYTES};

/// Items delivered to the shard but not yet taken: at most `max` items, [`INCOMING_BYTES_MAX`]
/// bytes, and [`INCOMING_PEER_BYTES_MAX`] bytes from one peer (so one peer filling the queue
/// costs only its own frames, issue 14 hole 5). Before a peer reaches that, at
/// [`INCOMING_PEER_PAUSE_BYTES`], the driver stops reading its streams (QUIC flow control then
/// holds the sender back) until the shard has taken it below the mark again.
pub(crate) struct Inbox {
    items: RefCell<VecDeque<Incoming>>,
    waker: RefCell<Option<Waker>>,
    max: usize,
    /// Bytes queued, in all and per peer (grown on demand).
    bytes: Cell<usize>,
    peer_bytes: RefCell<Vec<usize>>,
    /// Peers whose streams the driver stopped reading (grown on demand).
    paused: RefCell<Vec<bool>>,
    /// A paused peer fell below the mark: the driver must resume reading it.
    resume_due: Cell<bool>,
}

/// The sending peer and the frame bytes of an item (what the byte bounds count).
fn weight(item: &Incoming) -> (Option<usize>, usize) {
    match item {
        Incoming::Vertex { peer, bytes } => (Some(peer.0), bytes.len()),
        Incoming::Query { peer, bytes, .. } | Incoming::VertexRequest { peer, bytes, .. } => (Some(peer.0), bytes.len()),
        Incoming::ClientSubmit { bytes, .. } | Incoming::Event { bytes } => (None, bytes.len()),
    }
}

impl Inbox {
    /// An empty inbox holding at most `max` items.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            items: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
            max,
            bytes: Cell::new(0),
            peer_bytes: RefCell::new(Vec::new()),
            paused: RefCell::new(Vec::new()),
            resume_due: Cell::new(false),
        }
    }

    /// Whether peer `p` holds [`INCOMING_PEER_PAUSE_BYTES`] or more: do not read its streams.
    pub(crate) fn over_share(&self, p: usize) -> bool {
        self.peer_bytes.borrow().get(p).is_some_and(|b| *b >= INCOMING_PEER_PAUSE_BYTES)
    }

    /// The driver left a stream of peer `p` unread (see [`Self::over_share`]).
    pub(crate) fn pause(&self, p: usize) {
        let mut paused = self.paused.borrow_mut();
        if paused.len() <= p {
            paused.resize(p + 1, false);
        }
        paused[p] = true;
    }

    /// Whether a paused peer fell below the mark since the last [`Self::take_resume`].
    pub(crate) fn resume_due(&self) -> bool {
        self.resume_due.get()
    }

    /// Clears and returns [`Self::resume_due`].
    pub(crate) fn take_resume(&self) -> bool {
        self.resume_due.replace(false)
    }

    /// Queues `item` for the shard; a full inbox, or a peer over its byte share, drops it
    /// (counted in `incoming_drops`).
    pub(crate) fn push(&self, item: Incoming, stats: &Stats) {
        let (peer, n) = weight(&item);
        let mut q = self.items.borrow_mut();
        let mut per = self.peer_bytes.borrow_mut();
        if let Some(p) = peer {
            if per.len() <= p {
                per.resize(p + 1, 0);
            }
        }
        let peer_full = peer.is_some_and(|p| per[p] + n > INCOMING_PEER_BYTES_MAX);
        if q.len() >= self.max || self.bytes.get() + n > INCOMING_BYTES_MAX || peer_full {
            stats.get().incoming_drops += 1;
            drop(per);
            drop(q);
            drop(item); // a dropped Responder resets its stream (deferred, never re-entrant)
            return;
        }
        if let Some(p) = peer {
            per[p] += n;
        }
        self.bytes.set(self.bytes.get() + n);
        q.push_back(item);
        drop(per);
        drop(q);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Takes the front item and uncharges its bytes.
    fn take(&self) -> Option<Incoming> {
        let item = self.items.borrow_mut().pop_front()?;
        let (peer, n) = weight(&item);
        self.bytes.set(self.bytes.get().saturating_sub(n));
        if let Some(p) = peer {
            let left = match self.peer_bytes.borrow_mut().get_mut(p) {
                Some(b) => {
                    *b = b.saturating_sub(n);
                    *b
                }
                None => 0,
            };
            if left < INCOMING_PEER_PAUSE_BYTES {
                if let Some(flag) = self.paused.borrow_mut().get_mut(p) {
                    if std::mem::replace(flag, false) {
                        self.resume_due.set(true);
                    }
                }
            }
        }
        Some(item)
    }

    /// The next item, if one is waiting.
    pub(crate) fn pop(&self) -> Option<Incoming> {
        self.take()
    }

    /// Waits for the next item.
    pub(crate) fn recv(&self) -> impl Future<Output = Incoming> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(i) = self.take() {
                return Poll::Ready(i);
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Hands the `frames` read on stream `id` of connection `h` to their owner: the reply slot of
/// our own request (`outgoing`), else the shard's inbox as [`Incoming`] items.
#[allow(clippy::too_many_arguments)]
pub(crate) fn deliver(
    c: &mut Conn,
    h: usize,
    id: StreamId,
    ty: u8,
    outgoing: bool,
    frames: Vec<Vec<u8>>,
    shared: &Shared,
    me: &Weak<Driver>,
) {
    let n = frames.len() as u64;
    let b: u64 = frames.iter().map(|f| f.len() as u64).sum();
    shared.stats.received(c.peer, n, b);
    if outgoing {
        if let Some(r) = c.replies.remove(&id) {
            if let Some(f) = frames.into_iter().next() {
                r.complete(Ok(f));
            }
        }
        return;
    }
    for bytes in frames {
        let responder = || Responder::new(me.clone(), h, c.serial, id);
        let item = match (ty, c.peer) {
            (STREAM_VERTICES, Some(p)) => Incoming::Vertex { peer: PeerId(p), bytes },
            (STREAM_QUERY, Some(p)) => Incoming::Query { peer: PeerId(p), bytes, reply: responder() },
            (STREAM_VERTEX_REQUEST, Some(p)) => Incoming::VertexRequest { peer: PeerId(p), bytes, reply: responder() },
            (STREAM_SUBMIT, _) => match c.client_key {
                Some(k) => Incoming::ClientSubmit { client: ClientId(c.serial), key: ClientKeyId(k), bytes, reply: responder() },
                None => continue, // only a verified client's frames are delivered
            },
            (STREAM_EVENTS, _) => Incoming::Event { bytes },
            _ => continue,
        };
        shared.inbox.push(item, &shared.stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(peer: usize, len: usize) -> Incoming {
        Incoming::Vertex { peer: PeerId(peer), bytes: vec![0; len] }
    }

    /// One peer filling its byte share loses only its own new frames; the others still get in,
    /// and the share frees as the shard takes frames.
    #[test]
    fn a_peer_over_its_byte_share_drops_only_its_own_frames() {
        let stats = Stats::new(3);
        let inbox = Inbox::new(crate::INCOMING_QUEUE_MAX);
        let frame = 1 << 20;
        let share = INCOMING_PEER_BYTES_MAX / frame;
        for _ in 0..share + 10 {
            inbox.push(vertex(1, frame), &stats);
        }
        assert_eq!(stats.get().incoming_drops, 10);
        inbox.push(vertex(2, 5_000), &stats);
        assert_eq!(stats.get().incoming_drops, 10, "another peer's frame gets in");
        assert!(inbox.pop().is_some());
        inbox.push(vertex(1, frame), &stats);
        assert_eq!(stats.get().incoming_drops, 10, "taking a frame frees its share");
        inbox.push(vertex(1, frame), &stats);
        assert_eq!(stats.get().incoming_drops, 11);
    }

    /// The driver pauses a peer at the mark and is told to resume once the shard took it below.
    #[test]
    fn a_paused_peer_is_resumed_below_the_mark() {
        let stats = Stats::new(2);
        let inbox = Inbox::new(crate::INCOMING_QUEUE_MAX);
        let frame = 1 << 20;
        for _ in 0..INCOMING_PEER_PAUSE_BYTES / frame {
            assert!(!inbox.over_share(0));
            inbox.push(vertex(0, frame), &stats);
        }
        assert!(inbox.over_share(0) && !inbox.over_share(1));
        inbox.pause(0);
        assert!(!inbox.resume_due());
        assert!(inbox.pop().is_some());
        assert!(!inbox.over_share(0));
        assert!(inbox.take_resume(), "resume once below the mark");
        assert!(!inbox.take_resume());
        assert_eq!(stats.get().incoming_drops, 0);
    }
}
