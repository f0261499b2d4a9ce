//! A UDP fault proxy for chaos tests on real processes.
//!
//! Each node binds its real UDP port but is advertised to its peers (in `cluster.toml`) at a
//! proxy port. The proxy forwards datagrams both ways and applies the current [`Faults`]:
//! cut links between chosen nodes (a partition), drop a fraction of datagrams, or delay them.
//! Senders are recognised by their real source port, so one proxy port per node is enough.
//!
//! Test-only tooling: plain threads and a mutex (not on any product path).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The faults in force.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Directed links `(from, to)` that drop everything.
    pub cut: HashSet<(usize, usize)>,
    /// Drop this fraction of other datagrams (0..=1), deterministic per datagram counter.
    pub drop_ratio: f64,
    /// Delay every forwarded datagram by this much.
    pub delay: Duration,
}

impl Faults {
    /// Cuts every link between the two groups, both directions.
    pub fn partition(a: &[usize], b: &[usize]) -> Faults {
        let mut cut = HashSet::new();
        for &x in a {
            for &y in b {
                cut.insert((x, y));
                cut.insert((y, x));
            }
        }
        Faults { cut, ..Faults::default() }
    }
}

struct Shared {
    faults: Mutex<Faults>,
    /// real port -> node index
    node_of_port: HashMap<u16, usize>,
    stop: AtomicBool,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    counter: AtomicU64,
}

impl Shared {
    fn allow(&self, from: Option<usize>, to: usize) -> Option<Duration> {
        let f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(from) = from {
            if f.cut.contains(&(from, to)) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        if f.drop_ratio > 0.0 {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let x = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
            if x < f.drop_ratio {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        Some(f.delay)
    }
}

/// A running proxy: one listening port per node. Stops when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// One proxied node: where peers reach it, where it really listens.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The advertised (proxy) address.
    pub listen: SocketAddr,
    /// The node's real address.
    pub target: SocketAddr,
}

const POLL: Duration = Duration::from_millis(50);

impl FaultProxy {
    /// Starts forwarding for every route (index = node index).
    pub fn start(routes: &[Route]) -> std::io::Result<FaultProxy> {
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            node_of_port: routes.iter().enumerate().map(|(i, r)| (r.target.port(), i)).collect(),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            counter: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        for (to, route) in routes.iter().enumerate() {
            let front = Arc::new(UdpSocket::bind(route.listen)?);
            front.set_read_timeout(Some(POLL))?;
            let (sh, target) = (shared.clone(), route.target);
            threads.push(std::thread::spawn(move || front_loop(sh, front, to, target)));
        }
        Ok(FaultProxy { shared, threads })
    }

    /// Replaces the faults in force.
    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    /// (forwarded, dropped) datagrams so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.shared.forwarded.load(Ordering::Relaxed), self.shared.dropped.load(Ordering::Relaxed))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn send_later(sock: Arc<UdpSocket>, buf: Vec<u8>, to: SocketAddr, delay: Duration) {
    if delay.is_zero() {
        let _ = sock.send_to(&buf, to);
    } else {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = sock.send_to(&buf, to);
        });
    }
}

/// Datagrams to node `to`: forwarded from one upstream socket per source, whose replies go back.
fn front_loop(sh: Arc<Shared>, front: Arc<UdpSocket>, to: usize, target: SocketAddr) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut workers = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !sh.stop.load(Ordering::Relaxed) {
        let Ok((n, src)) = front.recv_from(&mut buf) else { continue };
        let from = sh.node_of_port.get(&src.port()).copied();
        let up = match upstreams.get(&src) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = UdpSocket::bind(("127.0.0.1", 0)) else { continue };
                if u.set_read_timeout(Some(POLL)).is_err() {
                    continue;
                }
                let u = Arc::new(u);
                upstreams.insert(src, u.clone());
                // Replies from the node back to this source, through the front socket.
                let (sh2, u2, front2) = (sh.clone(), u.clone(), front.clone());
                workers.push(std::thread::spawn(move || {
                    let mut b = vec![0u8; 65_536];
                    while !sh2.stop.load(Ordering::Relaxed) {
                        let Ok((m, _)) = u2.recv_from(&mut b) else { continue };
                        let delay = match from {
                            Some(f) => sh2.allow(Some(to), f),
                            None => sh2.allow(None, to),
                        };
                        if let Some(d) = delay {
                            send_later(front2.clone(), b[..m].to_vec(), src, d);
                        }
                    }
                }));
                u
            }
        };
        if let Some(delay) = sh.allow(from, to) {
            send_later(up, buf[..n].to_vec(), target, delay);
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_and_cuts() {
        let a = UdpSocket::bind("127.0.0.1:0").expect("a");
        let b = UdpSocket::bind("127.0.0.1:0").expect("b");
        b.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        a.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        let pb = UdpSocket::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr");
        let pa = UdpSocket::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr");
        let proxy = FaultProxy::start(&[
            Route { listen: pa, target: a.local_addr().expect("a") },
            Route { listen: pb, target: b.local_addr().expect("b") },
        ])
        .expect("proxy");
        let mut buf = [0u8; 16];
        a.send_to(b"ping", pb).expect("send");
        let (n, from) = b.recv_from(&mut buf).expect("forwarded");
        assert_eq!(&buf[..n], b"ping");
        b.send_to(b"pong", from).expect("reply");
        let (n, via) = a.recv_from(&mut buf).expect("reply forwarded");
        assert_eq!((&buf[..n], via), (&b"pong"[..], pb));
        proxy.set(Faults::partition(&[0], &[1]));
        a.send_to(b"lost", pb).expect("send");
        assert!(b.recv_from(&mut buf).is_err(), "a cut link must drop");
        proxy.heal();
        a.send_to(b"back", pb).expect("send");
        let (n, _) = b.recv_from(&mut buf).expect("healed");
        assert_eq!(&buf[..n], b"back");
        let (fwd, dropped) = proxy.counts();
        assert!(fwd >= 3 && dropped >= 1);
    }
}
