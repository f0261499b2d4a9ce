//! UDP I/O of one endpoint: the glommio (io_uring) socket, its kernel buffer sizes, and
//! sending a round's batch of datagrams. The place GSO/GRO will go.
//!
//! Owns: [`Udp`] (the socket and its bound address) and the [`Datagrams`] batch type. May
//! call: stats (datagram counters).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;

use glommio::net::UdpSocket;

use super::stats::Stats;
use crate::config::*;
use crate::TransportError;

/// Datagrams to send: (destination, bytes), in order.
pub(crate) type Datagrams = Vec<(SocketAddr, Vec<u8>)>;

/// One bound UDP socket.
pub(crate) struct Udp {
    socket: UdpSocket,
    /// Its bound address (the port is real even if `0` was asked for).
    pub(crate) local_addr: SocketAddr,
}

impl Udp {
    /// Binds `addr` and sizes the kernel buffers.
    pub(crate) fn bind(addr: SocketAddr) -> Result<Self, TransportError> {
        let socket = UdpSocket::bind(addr).map_err(|e| TransportError::Io(std::io::Error::other(format!("bind {addr}: {e}"))))?;
        set_socket_buffers(&socket);
        let local_addr = socket.local_addr().map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
        Ok(Self { socket, local_addr })
    }

    /// Receives one datagram into `buf`.
    pub(crate) async fn recv_from(&self, buf: &mut [u8]) -> glommio::Result<(usize, SocketAddr), ()> {
        self.socket.recv_from(buf).await
    }

    /// Sends `out`, up to [`SENDS_IN_FLIGHT_MAX`] at a time; send errors are logged, not fatal.
    pub(crate) async fn send_all(&self, out: Datagrams, stats: &Stats) {
        let n = out.len() as u64;
        let mut it = out.into_iter();
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
        stats.get().datagrams_out += n;
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
