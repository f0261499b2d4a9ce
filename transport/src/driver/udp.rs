//! UDP I/O of one endpoint: the glommio (io_uring) socket, its kernel buffer sizes, sending a
//! round's batch of datagrams (several datagrams of one connection in one system call where
//! the kernel offers UDP generic segmentation offload, GSO) and receiving (several datagrams
//! of one sender in one system call where it offers generic receive offload, GRO).
//!
//! Owns: [`Udp`] (the socket, its bound address, whether GSO and GRO work) and the
//! [`Datagrams`] batch type. May call: stats (datagram counters).

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::Poll;

use glommio::net::UdpSocket;

use super::stats::Stats;
use crate::config::*;
use crate::TransportError;

/// One send: `bytes` for `to`, which the kernel cuts into datagrams of `segment` bytes (the
/// last one may be shorter). `segment == bytes.len()` for a single datagram.
pub(crate) struct Datagram {
    pub(crate) to: SocketAddr,
    pub(crate) bytes: Vec<u8>,
    pub(crate) segment: usize,
}

impl Datagram {
    /// A single datagram.
    pub(crate) fn one(to: SocketAddr, bytes: Vec<u8>) -> Self {
        let segment = bytes.len().max(1);
        Self { to, bytes, segment }
    }

    /// The datagrams it carries.
    fn count(&self) -> usize {
        self.bytes.len().div_ceil(self.segment).max(1)
    }
}

/// Datagrams to send, in order.
pub(crate) type Datagrams = Vec<Datagram>;

/// One bound UDP socket.
pub(crate) struct Udp {
    socket: UdpSocket,
    /// Its bound address (the port is real even if `0` was asked for).
    pub(crate) local_addr: SocketAddr,
    /// Datagrams one send may carry: [`GSO_SEGMENTS_MAX`] where the kernel accepts
    /// `UDP_SEGMENT` (unless `PQDAG_NO_GSO=1` is set: a switch for comparisons and for
    /// paths that mishandle large sends), else 1. Drops to 1 for good if a GSO send fails with `EIO` (a device
    /// that cannot segment).
    gso_segments: Cell<usize>,
    /// Whether the socket has `UDP_GRO` on (unless `PQDAG_NO_GRO=1`): a receive may then
    /// return a run of equal-sized datagrams of one sender, which [`Udp::recv`] reports with
    /// their size. The kernel delivers a GSO send that stays on the host (loopback, veth)
    /// whole instead of cutting it up, and coalesces a flow's datagrams from a NIC.
    gro: bool,
}

/// What one receive returned: `len` bytes from `from`, which are datagrams of `segment`
/// bytes each (the last may be shorter); `segment == len` for a single datagram.
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) from: SocketAddr,
    pub(crate) segment: usize,
}

impl Udp {
    /// Binds `addr` and sizes the kernel buffers.
    pub(crate) fn bind(addr: SocketAddr) -> Result<Self, TransportError> {
        let socket = UdpSocket::bind(addr).map_err(|e| TransportError::Io(std::io::Error::other(format!("bind {addr}: {e}"))))?;
        set_socket_buffers(&socket);
        let local_addr = socket.local_addr().map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
        let off = switched_off("PQDAG_NO_GSO");
        let gso = if !off && gso_supported(local_addr) { GSO_SEGMENTS_MAX } else { 1 };
        let gro = !switched_off("PQDAG_NO_GRO") && enable_gro(socket.as_raw_fd());
        tracing::debug!(%local_addr, gso_segments = gso, gro, "udp socket bound");
        Ok(Self { socket, local_addr, gso_segments: Cell::new(gso), gro })
    }

    /// Datagrams one `poll_transmit` may coalesce for this socket.
    pub(crate) fn gso_segments(&self) -> usize {
        self.gso_segments.get()
    }

    /// Receives one datagram, or with GRO a run of them, into `buf` (64 KiB holds any run).
    /// With GRO it reads with `recvmsg(MSG_DONTWAIT)` (glommio's receive has no control
    /// messages, so it could not tell where the datagrams of a run begin) and waits for the
    /// next datagram with a one-byte io_uring peek, which leaves it queued.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> std::io::Result<Received> {
        if !self.gro {
            let (len, from) = self.socket.recv_from(buf).await.map_err(std::io::Error::from)?;
            return Ok(Received { len, from, segment: len.max(1) });
        }
        loop {
            match recv_coalesced(self.socket.as_raw_fd(), buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            let mut one = [0u8; 1];
            self.socket.peek_from(&mut one).await.map_err(std::io::Error::from)?;
        }
    }

    /// Sends `out`: each multi-datagram send in one `sendmsg` with `UDP_SEGMENT` (no wait:
    /// when the kernel buffer is full it goes out datagram by datagram below instead), the
    /// rest through io_uring, up to [`SENDS_IN_FLIGHT_MAX`] at a time. Send errors are
    /// logged, not fatal: QUIC retransmits what is lost.
    pub(crate) async fn send_all(&self, out: Datagrams, stats: &Stats) {
        let n: usize = out.iter().map(Datagram::count).sum();
        let (mut gso_sends, mut gso_datagrams) = (0u64, 0u64);
        let mut singles: Vec<(SocketAddr, &[u8])> = Vec::with_capacity(out.len());
        for d in &out {
            let count = d.count();
            if count > 1 && self.gso_segments.get() > 1 {
                match send_segmented(self.socket.as_raw_fd(), d) {
                    Ok(()) => {
                        gso_sends += 1;
                        gso_datagrams += count as u64;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EIO) || e.raw_os_error() == Some(libc::EINVAL) => {
                        // The device (or the kernel) cannot segment: plain sends from now on.
                        tracing::warn!(local = %self.local_addr, "UDP GSO send failed ({e}); sending one datagram per call from now on");
                        self.gso_segments.set(1);
                    }
                    Err(e) => tracing::trace!("gso send: {e}"),
                }
            }
            singles.extend(d.bytes.chunks(d.segment).map(|b| (d.to, b)));
        }
        let mut it = singles.into_iter();
        loop {
            // Up to SENDS_IN_FLIGHT_MAX io_uring sends in flight at once.
            let batch: Vec<_> = it.by_ref().take(SENDS_IN_FLIGHT_MAX).collect();
            if batch.is_empty() {
                break;
            }
            let futs: Vec<_> = batch.iter().map(|(a, b)| self.socket.send_to(b, *a)).collect();
            for r in join_all(futs).await {
                if let Err(e) = r {
                    tracing::debug!("send_to: {e}");
                }
            }
        }
        let mut s = stats.get();
        s.datagrams_out += n as u64;
        s.gso_sends += gso_sends;
        s.gso_datagrams += gso_datagrams;
    }
}

/// Whether the kernel takes `UDP_SEGMENT` (Linux >= 4.18), asked on a throwaway socket of
/// `like`'s family (set on the real one it would become a default for every send).
fn gso_supported(like: SocketAddr) -> bool {
    let any: SocketAddr = if like.is_ipv4() { (std::net::Ipv4Addr::LOCALHOST, 0).into() } else { (std::net::Ipv6Addr::LOCALHOST, 0).into() };
    let Ok(probe) = std::net::UdpSocket::bind(any) else { return false };
    let v: libc::c_int = 1200;
    // SAFETY: `probe` is a valid socket for the duration of the call; the option value is a
    // c_int that outlives it, and its size is passed correctly.
    let r = unsafe {
        libc::setsockopt(probe.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t)
    };
    r == 0
}

/// Whether the switch variable `name` is set to something other than empty or `0`.
fn switched_off(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Turns `UDP_GRO` on for `fd` (Linux >= 5.0); false where the kernel refuses it.
fn enable_gro(fd: RawFd) -> bool {
    let v: libc::c_int = 1;
    // SAFETY: `fd` is a valid socket; the option value is a c_int that outlives the call, and
    // its size is passed correctly.
    let r = unsafe { libc::setsockopt(fd, libc::SOL_UDP, libc::UDP_GRO, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
    r == 0
}

/// One `recvmsg(MSG_DONTWAIT)` into `buf`, with the `UDP_GRO` control message read when the
/// kernel returned a run of datagrams. `WouldBlock` when nothing is queued. A datagram (or
/// run) larger than `buf` is an error: its tail would be lost, so it is dropped whole (QUIC
/// retransmits), never handed on cut.
fn recv_coalesced(fd: RawFd, buf: &mut [u8]) -> std::io::Result<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut ctrl = SegmentCmsg([0; 32]);
    // SAFETY: socket2 hands `try_init` a zeroed address storage and its length, which
    // `recvmsg` fills (and the length is written back); every other pointer in `msg` (iovec,
    // control buffer) points into locals or `buf`, which outlive the call, with their sizes.
    // CMSG_FIRSTHDR/NXTHDR only walk headers the kernel wrote inside `msg_controllen`, and the
    // int of a `UDP_GRO` header is read unaligned from inside it.
    let ((n, flags, segment), from) = unsafe {
        socket2::SockAddr::try_init(|name, namelen| {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = name.cast();
            msg.msg_namelen = *namelen;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctrl.0.as_mut_ptr().cast();
            msg.msg_controllen = ctrl.0.len() as _;
            let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            *namelen = msg.msg_namelen;
            let mut segment = None;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                    segment = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            Ok((n as usize, msg.msg_flags, segment))
        })?
    };
    if flags & libc::MSG_TRUNC != 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("datagram larger than the {} byte receive buffer, dropped", buf.len())));
    }
    let from = from.as_socket().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "datagram from an address that is not IPv4 or IPv6"))?;
    let segment = match segment {
        Some(s) if s > 0 && (s as usize) < n => s as usize,
        _ => n.max(1),
    };
    Ok(Received { len: n, from, segment })
}

/// Control-message buffer for one `UDP_SEGMENT` (a u16) or `UDP_GRO` (an int), aligned as
/// `cmsghdr` wants.
#[repr(C, align(8))]
struct SegmentCmsg([u8; 32]);

/// One `sendmsg(MSG_DONTWAIT)` of `d` with `UDP_SEGMENT = d.segment`: the kernel cuts it into
/// datagrams. `EAGAIN` (buffer full) and every other error are returned; nothing is retried.
fn send_segmented(fd: RawFd, d: &Datagram) -> std::io::Result<()> {
    let addr = socket2::SockAddr::from(d.to);
    let mut iov = libc::iovec { iov_base: d.bytes.as_ptr() as *mut libc::c_void, iov_len: d.bytes.len() };
    let mut ctrl = SegmentCmsg([0; 32]);
    let segment = u16::try_from(d.segment).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: every pointer in `msg` (address, iovec, control buffer) points into locals that
    // outlive the `sendmsg` call; the control buffer is 8-aligned and larger than
    // CMSG_SPACE(2) (24 bytes on 64-bit Linux), so CMSG_FIRSTHDR returns a header inside it
    // and CMSG_DATA leaves room for the u16 (written unaligned).
    let r = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        debug_assert!(space <= ctrl.0.len());
        msg.msg_control = ctrl.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        debug_assert!(!c.is_null());
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT)
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    debug_assert_eq!(r as usize, d.bytes.len(), "a datagram send is all or nothing");
    Ok(())
}

/// Asks for [`SOCKET_BUFFER_BYTES`] of kernel buffer each way (the `*FORCE` variants first,
/// which root may use beyond `net.core.rmem_max`). Bursts of a 32 MiB QUIC window otherwise
/// overflow the default ~200 KiB receive buffer and turn into loss and congestion backoff.
fn set_socket_buffers(socket: &UdpSocket) {
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
