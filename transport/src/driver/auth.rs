//! Identity on a connection: after the handshake each side proves its ML-DSA-87 key over the
//! TLS exporter (the proof format is in [`crate::identity`]); this module sends ours and
//! judges the peer's.
//!
//! Owns: our identity ([`Auth`]: keypair and node id). May call: identity (make, parse,
//! verify), streams (to write the proof), the peer table (read-only: whom a proof names),
//! stats.

use std::sync::Arc;
use std::time::Instant;

use pqdag_crypto::Keypair;
use quinn_proto::{Dir, VarInt};

use super::connection::{close_code, Conn};
use super::peers::Peers;
use super::stats::Stats;
use super::Mode;
use crate::config::*;
use crate::frame::STREAM_IDENTITY;
use crate::identity;

/// Our identity on one endpoint.
pub(crate) struct Auth {
    /// Our identity (`None` on a client connector, which proves nothing).
    keypair: Option<Arc<Keypair>>,
    /// Our node id (zero on a client connector).
    pub(crate) own_id: [u8; 32],
}

impl Auth {
    /// Our identity from `keypair` (`None`: a client connector).
    pub(crate) fn new(keypair: Option<Arc<Keypair>>) -> Self {
        let own_id = keypair.as_ref().map_or([0u8; 32], |k| k.public().node_id());
        Self { keypair, own_id }
    }

    /// The handshake of `c` completed: start its identity deadline and send our proof (not on
    /// a client connector). A client endpoint does not authenticate its clients: they count
    /// as verified at once.
    pub(crate) fn on_connected(&self, mode: Mode, c: &mut Conn, now: Instant, stats: &Stats) {
        c.connected = true;
        c.identity_deadline = now + IDENTITY_TIMEOUT;
        let send_proof = mode != Mode::ClientDialer;
        if send_proof {
            let ctx = if c.dialer { identity::CONTEXT_DIALER } else { identity::CONTEXT_ACCEPTOR };
            let proof = match (exporter(c, ctx), self.keypair.as_ref()) {
                (Some(x), Some(kp)) => identity::make_proof(kp, &x).ok(),
                _ => None,
            };
            match (proof, c.conn.streams().open(Dir::Uni)) {
                (Some(proof), Some(id)) => {
                    let mut data = vec![STREAM_IDENTITY];
                    data.extend_from_slice(&(proof.len() as u32).to_le_bytes());
                    data.extend_from_slice(&proof);
                    c.streams.write_all(&mut c.conn, id, data);
                }
                _ => {
                    c.close(now, close_code::BAD_PROOF, "cannot make proof");
                    return;
                }
            }
        }
        if mode == Mode::ClientServer {
            // Clients are not authenticated: the client endpoint is for load and operators.
            c.verified = true;
            c.conn.set_receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES));
            stats.get().handshakes_ok += 1;
        }
    }
}

/// The TLS exporter of `c`'s session under context `ctx` (what identity proofs sign).
fn exporter(c: &Conn, ctx: &[u8]) -> Option<[u8; identity::EXPORTER_BYTES]> {
    let mut out = [0u8; identity::EXPORTER_BYTES];
    c.conn.crypto_session().export_keying_material(&mut out, identity::EXPORTER_LABEL, ctx).ok()?;
    Some(out)
}

/// Judges the peer's `proof` on `c`: the peer it proves, or the close code and reason.
/// A dialer expects the peer it dialed; an acceptor looks the claimed node id up.
pub(crate) fn check_proof(c: &Conn, proof: &[u8], peers: &Peers) -> Result<usize, (u32, String)> {
    let ctx = if c.dialer { identity::CONTEXT_ACCEPTOR } else { identity::CONTEXT_DIALER };
    let exporter = exporter(c, ctx);
    let parsed = identity::parse_proof(proof);
    match (parsed, exporter) {
        (None, _) | (_, None) => Err((close_code::BAD_PROOF, "malformed identity proof".into())),
        (Some(pr), Some(x)) => {
            let who = if c.dialer { c.expected } else { peers.by_node_id(&pr.node_id) };
            match who {
                None => Err((close_code::UNKNOWN_PEER, "unknown ML-DSA identity".into())),
                Some(p) if peers.get(p).is_some_and(|s| s.is_self) => Err((close_code::UNKNOWN_PEER, "peer claims our own identity".into())),
                Some(p) => {
                    if peers.get(p).is_some_and(|s| identity::verify_proof(&s.public_key, &x, &pr)) {
                        Ok(p)
                    } else {
                        Err((close_code::IDENTITY_MISMATCH, "identity proof does not verify against the expected ML-DSA-87 key".into()))
                    }
                }
            }
        }
    }
}

/// Closes `c` (handle `h`) because its proof was refused with `code`.
pub(crate) fn refuse(c: &mut Conn, h: usize, now: Instant, code: u32, reason: &str, stats: &Stats) {
    tracing::warn!(conn = h, remote = %c.conn.remote_address(), "refusing connection: {reason}");
    let msg: &'static str = match code {
        close_code::UNKNOWN_PEER => "unknown identity",
        close_code::IDENTITY_MISMATCH => "identity mismatch",
        _ => "bad identity proof",
    };
    c.close(now, code, msg);
    c.lost_reason = Some(format!("identity refused: {reason}"));
    stats.get().identity_refusals += 1;
}

/// Marks `c` verified as peer `p` and opens its full receive window.
pub(crate) fn accept(c: &mut Conn, p: usize, stats: &Stats) {
    c.verified = true;
    c.peer = Some(p);
    c.conn.set_receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES));
    stats.get().handshakes_ok += 1;
}
