//! Send queues: what waits to go out to a peer (or a client), their bounds and drop policy,
//! and pumping them into streams once a connection is verified.
//!
//! Owns: [`Out`] and [`OutQueue`] (the queues themselves live in a peer slot or a client
//! connection). May call: streams (to write), rpc (to park a request's reply slot), stats,
//! and reads the peer table to find which queue feeds a connection.

use std::collections::VecDeque;

use quinn_proto::Dir;

use super::connection::{Conn, Conns};
use super::peers::Peers;
use super::rpc::ReplyTx;
use super::stats::Stats;
use super::streams::StreamSt;
use super::Mode;
use crate::config::*;
use crate::TransportError;

/// One frame waiting to be sent.
pub(crate) enum Out {
    /// Fire and forget, on a unidirectional stream of type `ty` (batched with its neighbours).
    Uni { ty: u8, frame: Vec<u8> },
    /// A request on its own bidirectional stream; the reply completes `reply`.
    Bi { ty: u8, frame: Vec<u8>, reply: ReplyTx },
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Uni { frame, .. } | Out::Bi { frame, .. } => frame.len(),
        }
    }
}

/// A bounded FIFO of frames for one peer or client (bounded by frames and by bytes).
#[derive(Default)]
pub(crate) struct OutQueue {
    q: VecDeque<Out>,
    bytes: usize,
}

impl OutQueue {
    /// Queues `o`; vertices evict the oldest vertex when full, requests are refused.
    pub(crate) fn push(&mut self, o: Out, frames_max: usize) -> Result<u64, Out> {
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

    /// Takes the oldest frame.
    pub(crate) fn pop(&mut self) -> Option<Out> {
        let o = self.q.pop_front()?;
        self.bytes -= o.len();
        Some(o)
    }

    /// Frames queued.
    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// Queues `o` on peer `peer`'s queue, counting what the drop policy evicted or refused.
pub(crate) fn enqueue(queue: &mut OutQueue, o: Out, frames_max: usize, peer: usize, stats: &Stats) -> Result<(), TransportError> {
    match queue.push(o, frames_max) {
        Ok(dropped) => {
            if dropped > 0 {
                stats.queue_drops(Some(peer), dropped);
            }
            Ok(())
        }
        Err(o) => {
            stats.queue_drops(Some(peer), 1);
            if let Out::Bi { reply, .. } = o {
                drop(reply);
            }
            Err(TransportError::QueueFull)
        }
    }
}

/// Pumps `queue` into streams of `conn`; returns (frames, bytes) sent.
pub(crate) fn pump(conn: &mut Conn, queue: &mut OutQueue) -> (u64, u64) {
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
                conn.streams.write_all(&mut conn.conn, id, data);
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
                    conn.streams.states.insert(id, StreamSt::outgoing(ty));
                    conn.replies.insert(id, reply);
                    conn.streams.write_all(&mut conn.conn, id, data);
                }
            }
        }
    }
    (frames, bytes)
}

/// Sends what is queued for connection `h` if it is verified and live: a client's own queue
/// (client endpoint), else the queue of its peer if `h` is the peer's chosen connection.
pub(crate) fn pump_conn(mode: Mode, h: usize, conns: &mut Conns, peers: &mut Peers, stats: &Stats) {
    let Some(c) = conns.map.get_mut(&h) else { return };
    if !c.verified || c.retire_at.is_some() || c.conn.is_closed() {
        return;
    }
    let (f, b) = match (mode, c.peer) {
        (Mode::ClientServer, _) => {
            let mut q = std::mem::take(&mut c.queue);
            let r = pump(c, &mut q);
            c.queue = q;
            r
        }
        (_, Some(p)) => {
            let Some(slot) = peers.get_mut(p) else { return };
            if slot.conn != Some(h) {
                return;
            }
            pump(c, &mut slot.queue)
        }
        _ => (0, 0),
    };
    if f > 0 {
        stats.sent(c.peer, f, b);
    }
}
