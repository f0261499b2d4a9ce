//! Stream framing: a stream-type byte, then frames of `u32 LE length · bytes`, with hard caps.

use crate::TransportError;

/// Largest frame the transport sends or accepts (1 MiB). A vertex is ~5 KiB, a batched
/// response well under 100 KiB; anything bigger is a bug or an attack.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Largest client-endpoint frame (payload submissions and events).
pub const MAX_CLIENT_FRAME_BYTES: usize = 256 << 10;
/// Length prefix size.
pub const LEN_PREFIX_BYTES: usize = 4;

/// First byte of a stream: the channel-binding proof (uni, first stream of each side).
pub const STREAM_IDENTITY: u8 = 0x01;
/// Unidirectional stream of vertex frames (one or more), fire and forget.
pub const STREAM_VERTICES: u8 = 0x02;
/// Unidirectional stream of event frames, server to client on the client endpoint.
pub const STREAM_EVENTS: u8 = 0x03;
/// Bidirectional: one query frame, answered by one response frame.
pub const STREAM_QUERY: u8 = 0x11;
/// Bidirectional: one vertex-fetch request frame, answered by one reply frame.
pub const STREAM_VERTEX_REQUEST: u8 = 0x12;
/// Bidirectional, client endpoint: one payload submission, answered by one frame.
pub const STREAM_SUBMIT: u8 = 0x13;

/// Why a stream was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix over the cap.
    TooLarge(usize),
    /// A zero-length frame, an unknown stream type, or a stream that ended mid-frame.
    Garbage,
}

/// Appends one length-prefixed frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, frame: &[u8]) -> Result<(), TransportError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(TransportError::FrameTooLarge { len: frame.len(), max: MAX_FRAME_BYTES });
    }
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
    Ok(())
}

/// Incremental decoder for one stream: feed it chunks as they arrive.
#[derive(Debug)]
pub struct FrameReader {
    max: usize,
    hdr: [u8; LEN_PREFIX_BYTES],
    hdr_len: usize,
    body: Vec<u8>,
    body_need: usize,
    in_body: bool,
}

impl FrameReader {
    /// A reader whose frames may be at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max, hdr: [0; LEN_PREFIX_BYTES], hdr_len: 0, body: Vec::new(), body_need: 0, in_body: false }
    }

    /// True when no partial frame is buffered (a FIN here is clean).
    pub fn at_boundary(&self) -> bool {
        !self.in_body && self.hdr_len == 0
    }

    /// Consumes `data`, calling `out` for every complete frame.
    pub fn push(&mut self, mut data: &[u8], out: &mut impl FnMut(Vec<u8>)) -> Result<(), FrameError> {
        while !data.is_empty() {
            if !self.in_body {
                let take = (LEN_PREFIX_BYTES - self.hdr_len).min(data.len());
                self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[..take]);
                self.hdr_len += take;
                data = &data[take..];
                if self.hdr_len < LEN_PREFIX_BYTES {
                    return Ok(());
                }
                let len = u32::from_le_bytes(self.hdr) as usize;
                self.hdr_len = 0;
                if len > self.max {
                    return Err(FrameError::TooLarge(len));
                }
                if len == 0 {
                    return Err(FrameError::Garbage);
                }
                self.in_body = true;
                self.body_need = len;
                // Grow with the data actually received, not with the claimed length.
                self.body = Vec::with_capacity(len.min(64 << 10));
            }
            let take = self.body_need.min(data.len());
            self.body.extend_from_slice(&data[..take]);
            self.body_need -= take;
            data = &data[take..];
            if self.body_need == 0 {
                self.in_body = false;
                out(std::mem::take(&mut self.body));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_frames_reassemble() {
        let mut wire = Vec::new();
        encode_frame(&mut wire, b"hello").expect("enc");
        encode_frame(&mut wire, &[9u8; 3000]).expect("enc");
        for split in [1usize, 2, 3, 5, 7, 4096] {
            let mut r = FrameReader::new(MAX_FRAME_BYTES);
            let mut got = Vec::new();
            for c in wire.chunks(split) {
                r.push(c, &mut |f| got.push(f)).expect("push");
            }
            assert!(r.at_boundary());
            assert_eq!(got.len(), 2);
            assert_eq!(got[0], b"hello");
            assert_eq!(got[1], vec![9u8; 3000]);
        }
    }

    #[test]
    fn caps_and_garbage() {
        let mut r = FrameReader::new(10);
        assert_eq!(r.push(&11u32.to_le_bytes(), &mut |_| {}), Err(FrameError::TooLarge(11)));
        let mut r = FrameReader::new(10);
        assert_eq!(r.push(&0u32.to_le_bytes(), &mut |_| {}), Err(FrameError::Garbage));
        let mut r = FrameReader::new(10);
        r.push(&[5, 0, 0, 0, 1], &mut |_| {}).expect("partial");
        assert!(!r.at_boundary());
        let mut v = Vec::new();
        assert!(encode_frame(&mut v, &vec![0u8; MAX_FRAME_BYTES + 1]).is_err());
    }
}
