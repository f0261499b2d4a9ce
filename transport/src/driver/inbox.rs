//! What arrives for the shard: the bounded queue of [`Incoming`] items the shard takes with
//! `recv`, and the turning of a stream's frames into those items (or into replies).
//!
//! Owns: the incoming queue and its waker. May call: stats, rpc (replies and responders),
//! and reads a connection's peer and serial.

use std::cell::RefCell;
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
use crate::{ClientId, ClientKeyId, Incoming, PeerId};

/// Items delivered to the shard but not yet taken, at most `max`.
pub(crate) struct Inbox {
    items: RefCell<VecDeque<Incoming>>,
    waker: RefCell<Option<Waker>>,
    max: usize,
}

impl Inbox {
    /// An empty inbox holding at most `max` items.
    pub(crate) fn new(max: usize) -> Self {
        Self { items: RefCell::new(VecDeque::new()), waker: RefCell::new(None), max }
    }

    /// Queues `item` for the shard; a full inbox drops it (counted in `incoming_drops`).
    pub(crate) fn push(&self, item: Incoming, stats: &Stats) {
        let mut q = self.items.borrow_mut();
        if q.len() >= self.max {
            stats.get().incoming_drops += 1;
            drop(q);
            drop(item); // a dropped Responder resets its stream (deferred, never re-entrant)
            return;
        }
        q.push_back(item);
        drop(q);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The next item, if one is waiting.
    pub(crate) fn pop(&self) -> Option<Incoming> {
        self.items.borrow_mut().pop_front()
    }

    /// Waits for the next item.
    pub(crate) fn recv(&self) -> impl Future<Output = Incoming> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(i) = self.items.borrow_mut().pop_front() {
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
