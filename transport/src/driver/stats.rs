//! The shard's counters ([`TransportStats`]): one cell shared by the shard's endpoints and
//! its API, with the increments the other modules make in one place.
//!
//! Owns: the counters. May call: nothing else in the driver.

use std::cell::{RefCell, RefMut};

use crate::{PeerStats, TransportStats};

/// The counters of one shard (both of its endpoints count into them).
pub(crate) struct Stats(RefCell<TransportStats>);

impl Stats {
    /// Zeroed counters with one per-peer entry for each of `peers`.
    pub(crate) fn new(peers: usize) -> Self {
        Self(RefCell::new(TransportStats { peers: vec![PeerStats::default(); peers], ..Default::default() }))
    }

    /// A copy for the API.
    pub(crate) fn snapshot(&self) -> TransportStats {
        self.0.borrow().clone()
    }

    /// The counters, to bump one. Never held across an `.await`.
    pub(crate) fn get(&self) -> RefMut<'_, TransportStats> {
        self.0.borrow_mut()
    }

    /// Applies `f` to the counters of `peer`, if it is a configured peer.
    pub(crate) fn peer(&self, peer: Option<usize>, f: impl FnOnce(&mut PeerStats)) {
        if let Some(p) = peer {
            if let Some(ps) = self.0.borrow_mut().peers.get_mut(p) {
                f(ps);
            }
        }
    }

    /// `frames` frames of `bytes` bytes left for `peer`.
    pub(crate) fn sent(&self, peer: Option<usize>, frames: u64, bytes: u64) {
        let mut s = self.0.borrow_mut();
        s.frames_out += frames;
        s.bytes_out += bytes;
        drop(s);
        self.peer(peer, |ps| {
            ps.frames_out += frames;
            ps.bytes_out += bytes;
        });
    }

    /// `frames` frames of `bytes` bytes arrived from `peer`.
    pub(crate) fn received(&self, peer: Option<usize>, frames: u64, bytes: u64) {
        {
            let mut s = self.0.borrow_mut();
            s.frames_in += frames;
            s.bytes_in += bytes;
        }
        self.peer(peer, |ps| {
            ps.frames_in += frames;
            ps.bytes_in += bytes;
        });
    }

    /// A send queue (of `peer`, or a client's) dropped `n` frames.
    pub(crate) fn queue_drops(&self, peer: Option<usize>, n: u64) {
        let mut s = self.0.borrow_mut();
        s.queue_drops += n;
        if let Some(ps) = peer.and_then(|p| s.peers.get_mut(p)) {
            ps.queue_drops += n;
        }
    }

    /// A stream of `peer` was rejected.
    pub(crate) fn stream_reset(&self, peer: Option<usize>) {
        self.0.borrow_mut().streams_reset += 1;
        self.peer(peer, |ps| ps.streams_reset += 1);
    }
}
