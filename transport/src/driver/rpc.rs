//! Request/reply plumbing: the one-shot reply slot a sender awaits ([`ReplyTx`]/[`ReplyRx`]),
//! the [`Responder`] handed to the shard with a request, and the [`Deferred`] actions a
//! responder queues for the work task.
//!
//! Owns: reply slots and deferred actions. May call: the connection table (to apply an
//! answer), streams (to write it), stats, and the [`Driver`] handle (to queue an action).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use quinn_proto::{StreamId, VarInt};

use super::connection::Conns;
use super::stats::Stats;
use super::streams::stream_code;
use super::Driver;
use crate::frame::MAX_FRAME_BYTES;
use crate::TransportError;

struct Slot {
    result: Option<Result<Vec<u8>, TransportError>>,
    waker: Option<Waker>,
    cancelled: bool,
}

/// The driver's end of a pending request.
pub(crate) struct ReplyTx(Rc<RefCell<Slot>>);

impl ReplyTx {
    /// Resolves the request (wakes its asker).
    pub(crate) fn complete(self, r: Result<Vec<u8>, TransportError>) {
        let mut s = self.0.borrow_mut();
        s.result = Some(r);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    /// Whether the asker dropped its [`ReplyRx`] (gave up).
    pub(crate) fn cancelled(&self) -> bool {
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

/// A fresh reply slot: the driver completes the first half, the asker awaits the second.
pub(crate) fn reply_pair() -> (ReplyTx, ReplyRx) {
    let s = Rc::new(RefCell::new(Slot { result: None, waker: None, cancelled: false }));
    (ReplyTx(s.clone()), ReplyRx(s))
}

/// Actions queued by user-facing handles (responders) for the driver to apply.
pub(crate) enum Deferred {
    /// Write the answer frame on the request's stream and finish it.
    Respond { conn: usize, serial: u64, stream: StreamId, bytes: Vec<u8> },
    /// Reset the request's stream with `code`.
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
    /// A responder for the request on `stream` of connection `conn` (whose serial is `serial`).
    pub(crate) fn new(driver: Weak<Driver>, conn: usize, serial: u64, stream: StreamId) -> Self {
        Self { driver, conn, serial, stream, done: false }
    }

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

/// Applies one deferred action to its connection (ignored if that connection is gone or its
/// handle was reused by a newer one).
pub(crate) fn apply(d: Deferred, conns: &mut Conns, stats: &Stats) {
    let (Deferred::Respond { conn, .. } | Deferred::Reset { conn, .. }) = &d;
    conns.mark(*conn);
    match d {
        Deferred::Respond { conn, serial, stream, bytes } => {
            let Some(c) = conns.map.get_mut(&conn) else { return };
            if c.serial != serial {
                return;
            }
            let mut data = Vec::with_capacity(bytes.len() + 4);
            data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            data.extend_from_slice(&bytes);
            stats.sent(c.peer, 1, bytes.len() as u64);
            c.streams.write_all(&mut c.conn, stream, data);
        }
        Deferred::Reset { conn, serial, stream, code } => {
            let Some(c) = conns.map.get_mut(&conn) else { return };
            if c.serial == serial {
                let _ = c.conn.send_stream(stream).reset(VarInt::from_u32(code));
            }
        }
    }
}
