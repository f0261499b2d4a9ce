//! Streams of one connection: typing (the first byte names the stream type, checked against
//! the endpoint's mode), framing (`u32 LE length · bytes`, per-type caps and frame counts),
//! writes that wait for flow control, and streams parked until the peer is verified.
//!
//! Owns: per-stream state ([`Streams`]) and the stream error codes. May call: frame (the
//! reader), rpc (to fail a reply on reset), stats, and closes the connection on a malformed
//! identity stream.

use std::collections::HashMap;
use std::time::Instant;

use quinn_proto::{Connection, Dir, ReadError, StreamId, VarInt, WriteError};

use super::connection::{close_code, Conn};
use super::rpc::ReplyTx;
use super::stats::Stats;
use super::Mode;
use crate::frame::*;
use crate::identity;
use crate::TransportError;

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
    /// The receiver holds this peer's pushes: the peer is over its share there (its own
    /// vertices over the creator bound); what it pushed is dropped unread.
    pub const HELD: u32 = 0x14;
}

/// The unwritten tail of a stream's data.
pub(crate) struct PendingWrite {
    data: Vec<u8>,
    off: usize,
}

/// What we know of one open stream.
pub(crate) struct StreamSt {
    ty: Option<u8>,
    reader: FrameReader,
    /// We opened it (a request whose reply we read).
    outgoing: bool,
    frames: u32,
}

impl StreamSt {
    /// A stream the peer opened: its type comes with its first byte.
    pub(crate) fn incoming() -> Self {
        Self { ty: None, reader: FrameReader::new(MAX_FRAME_BYTES), outgoing: false, frames: 0 }
    }

    /// A request stream we opened with type `ty`: we read its one reply frame.
    pub(crate) fn outgoing(ty: u8) -> Self {
        Self { ty: Some(ty), reader: FrameReader::new(MAX_FRAME_BYTES), outgoing: true, frames: 0 }
    }
}

/// The streams of one connection.
#[derive(Default)]
pub(crate) struct Streams {
    /// Open streams we read from.
    pub(crate) states: HashMap<StreamId, StreamSt>,
    /// Writes waiting for flow control (`Writable`).
    pub(crate) pending: HashMap<StreamId, PendingWrite>,
    /// Bidirectional streams opened before the peer's proof: read once it is verified.
    pub(crate) parked: Vec<StreamId>,
    /// Unidirectional frames received before the peer's proof (bounded by flow control).
    pub(crate) parked_frames: Vec<(StreamId, u8, Vec<Vec<u8>>)>,
    /// Streams of a peer over its incoming share, left unread (flow control pushes back) until
    /// the shard has taken its queue below the mark.
    pub(crate) throttled: Vec<StreamId>,
}

impl Streams {
    /// Whether `id` is a stream the peer opened (not the reply stream of our own request).
    pub(crate) fn is_incoming(&self, id: StreamId) -> bool {
        self.states.get(&id).is_some_and(|s| !s.outgoing)
    }

    /// Writes as much of `data` as flow control allows; the rest waits for `Writable`.
    pub(crate) fn write_all(&mut self, conn: &mut Connection, id: StreamId, data: Vec<u8>) {
        self.write_from(conn, id, PendingWrite { data, off: 0 });
    }

    /// Continues a write that was blocked (on `Writable`).
    pub(crate) fn resume_write(&mut self, conn: &mut Connection, id: StreamId) {
        if let Some(pw) = self.pending.remove(&id) {
            self.write_from(conn, id, pw);
        }
    }

    fn write_from(&mut self, conn: &mut Connection, id: StreamId, mut pw: PendingWrite) {
        let mut s = conn.send_stream(id);
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

    /// Stops (and for a bi stream resets) stream `id` with `code` and forgets it.
    pub(crate) fn reject(&mut self, conn: &mut Connection, replies: &mut HashMap<StreamId, ReplyTx>, id: StreamId, code: u32) {
        let _ = conn.recv_stream(id).stop(VarInt::from_u32(code));
        if id.dir() == Dir::Bi {
            let _ = conn.send_stream(id).reset(VarInt::from_u32(code));
        }
        self.states.remove(&id);
        self.pending.remove(&id);
        if let Some(r) = replies.remove(&id) {
            r.complete(Err(TransportError::StreamReset(code as u64)));
        }
    }
}

/// What reading a stream produced, for the driver to dispatch.
pub(crate) enum StreamRead {
    /// Nothing to hand on (no whole frame yet, rejected, reset, or parked until the proof).
    Nothing,
    /// The peer's identity proof.
    Proof(Vec<u8>),
    /// Frames of type `ty` to deliver (`outgoing`: the reply to our request).
    Deliver { ty: u8, outgoing: bool, frames: Vec<Vec<u8>> },
}

/// Reads what stream `id` of connection `c` (handle `h`) has, checks its type and framing for
/// `mode`, and rejects it on any violation.
pub(crate) fn read(c: &mut Conn, h: usize, id: StreamId, mode: Mode, now: Instant, stats: &Stats) -> StreamRead {
    let mut chunks_data = Vec::new();
    let mut fin = false;
    let mut reset = None;
    {
        let mut rs = c.conn.recv_stream(id);
        let Ok(mut chunks) = rs.read(true) else { return StreamRead::Nothing };
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
        c.streams.states.remove(&id);
        if let Some(r) = c.replies.remove(&id) {
            r.complete(Err(TransportError::StreamReset(code)));
        }
        return StreamRead::Nothing;
    }
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut err: Option<u32> = None;
    {
        let Some(st) = c.streams.states.get_mut(&id) else { return StreamRead::Nothing };
        for mut data in chunks_data {
            if st.ty.is_none() && !data.is_empty() {
                let ty = data[0];
                let ok = match (mode, id.dir(), st.outgoing) {
                    (_, Dir::Bi, true) => true,
                    (Mode::Node, Dir::Uni, _) => ty == STREAM_IDENTITY || ty == STREAM_VERTICES,
                    (Mode::Node, Dir::Bi, false) => ty == STREAM_QUERY || ty == STREAM_VERTEX_REQUEST,
                    (Mode::ClientServer, Dir::Uni, _) => ty == STREAM_IDENTITY,
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
        let is_identity = c.streams.states.get(&id).is_some_and(|s| s.ty == Some(STREAM_IDENTITY)) && !c.verified;
        c.streams.reject(&mut c.conn, &mut c.replies, id, code);
        stats.stream_reset(peer);
        tracing::debug!(conn = h, ?id, code, "stream rejected");
        if is_identity {
            c.close(now, close_code::BAD_PROOF, "malformed identity proof");
            c.lost_reason = Some("malformed identity proof".into());
            stats.get().identity_refusals += 1;
        }
        return StreamRead::Nothing;
    }
    let ty = c.streams.states.get(&id).and_then(|s| s.ty);
    let outgoing = c.streams.states.get(&id).is_some_and(|s| s.outgoing);
    if fin || (ty.is_some_and(|t| t != STREAM_VERTICES && t != STREAM_EVENTS && t != STREAM_IDENTITY) && !frames.is_empty()) {
        // Nothing more wanted on this stream.
        if fin {
            c.streams.states.remove(&id);
        }
    }
    if frames.is_empty() {
        return StreamRead::Nothing;
    }
    if ty == Some(STREAM_IDENTITY) {
        let proof = frames.swap_remove(0);
        return StreamRead::Proof(proof);
    }
    // Parked (unverified) data is held until the proof arrives.
    if !c.verified && !outgoing {
        c.streams.parked_frames.push((id, ty.unwrap_or(0), frames));
        return StreamRead::Nothing;
    }
    StreamRead::Deliver { ty: ty.unwrap_or(0), outgoing, frames }
}

fn frame_err_code(e: FrameError) -> u32 {
    match e {
        FrameError::TooLarge(_) => stream_code::FRAME_TOO_LARGE,
        FrameError::Garbage => stream_code::GARBAGE,
    }
}

/// Stops every push (unidirectional) stream connection `c`'s peer has open, its pushes being
/// held now, and forgets them, throttled ones included.
pub(crate) fn stop_pushes(c: &mut Conn, stats: &Stats) {
    let ids: Vec<StreamId> = c.streams.states.iter().filter(|(id, st)| id.dir() == Dir::Uni && !st.outgoing).map(|(id, _)| *id).collect();
    for id in ids {
        c.streams.reject(&mut c.conn, &mut c.replies, id, stream_code::HELD);
        stats.get().push_streams_stopped += 1;
    }
    c.streams.throttled.retain(|id| id.dir() != Dir::Uni);
}
