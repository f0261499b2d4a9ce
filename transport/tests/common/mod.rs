//! Shared helpers: clusters on loopback, executors.
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use pqdag_crypto::Keypair;
use pqdag_transport::{PeerConfig, PeerId, ShardTransport, TransportConfig};

/// A free loopback UDP port (bound then released).
pub fn free_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr")
}

/// `n` identities and addresses.
pub fn cluster(n: usize) -> (Vec<Arc<Keypair>>, Vec<PeerConfig>) {
    let kps: Vec<Arc<Keypair>> = (0..n).map(|_| Arc::new(Keypair::generate().expect("keygen"))).collect();
    let peers = kps.iter().map(|k| PeerConfig { public_key: k.public().clone(), addr: free_addr() }).collect();
    (kps, peers)
}

/// Node `i` of the cluster, bound to its own address.
pub fn node(kps: &[Arc<Keypair>], peers: &[PeerConfig], i: usize) -> ShardTransport {
    let cfg = TransportConfig::new(kps[i].clone(), peers.to_vec(), 0, peers[i].addr);
    ShardTransport::new(cfg).expect("transport")
}

/// Runs `f` on a fresh glommio executor thread and returns its result.
pub fn run<T: Send + 'static, F, Fut>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spin_before_park(Duration::from_micros(50))
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor join (memlock >= 512 KiB?)")
}

/// Polls `cond` every millisecond (glommio timer) until true or `limit` passes.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    cond()
}

pub const P0: PeerId = PeerId(0);
pub const P1: PeerId = PeerId(1);
pub const P2: PeerId = PeerId(2);
