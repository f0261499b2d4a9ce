//! The ML-DSA-87 floor measured on this machine at the start of a run: the CPU one finalized
//! vertex cannot go below (one sign by its creator, one verify at every other node), so the
//! report's CPU per vertex is compared with this machine's crypto, not a constant from another.
//!
//! The floor is liboqs's sign and verify as its public API runs them, expanding the key at every
//! call (the definition every earlier report used). The engine signs and verifies with prepared
//! keys (`pqdag_crypto::Keypair::sign`, `PublicKey::verify`: the key's expansion computed once),
//! which is cheaper, so the same per-vertex sum with the prepared calls is measured beside it:
//! the lower floor the engine itself could reach.

use std::time::Instant;

use pqdag_crypto::{Domain, Keypair};

/// Median microseconds of one ML-DSA-87 sign and one verify.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlDsaFloor {
    /// One sign through liboqs's public API, us (median of the samples).
    pub sign_us: f64,
    /// One sign with the key prepared, us (median).
    pub sign_prepared_us: f64,
    /// One verify through liboqs's public API, us (median of the samples).
    pub verify_us: f64,
    /// One verify with the key prepared (its expansion done once), us (median).
    pub verify_prepared_us: f64,
}

impl MlDsaFloor {
    /// CPU per finalized vertex on `n` nodes: 1 sign + (n - 1) verifies.
    pub fn per_vertex_us(&self, n: usize) -> f64 {
        self.sign_us + n.saturating_sub(1) as f64 * self.verify_us
    }

    /// The same with prepared keys: 1 prepared sign + (n - 1) prepared verifies.
    pub fn per_vertex_prepared_us(&self, n: usize) -> f64 {
        self.sign_prepared_us + n.saturating_sub(1) as f64 * self.verify_prepared_us
    }
}

/// Signs and verifies `samples` vertex-sized messages (~400 bytes, as a vertex's signed bytes
/// with a 256-byte payload) on this thread; ~50 ms for 200 samples. `None` if the library
/// fails (the report then says so instead of guessing).
pub fn measure(samples: usize) -> Option<MlDsaFloor> {
    let kp = Keypair::generate().ok()?;
    let samples = samples.max(8);
    let mut sign = Vec::with_capacity(samples);
    let mut sign_prepared = Vec::with_capacity(samples);
    let mut verify = Vec::with_capacity(samples);
    let mut prepared = Vec::with_capacity(samples);
    let mut msg = vec![0u8; 400];
    for i in 0..samples {
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let t = Instant::now();
        let sig = kp.sign_without_preparation(Domain::Vertex, &msg).ok()?;
        sign.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        kp.sign(Domain::Vertex, &msg).ok()?;
        sign_prepared.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        kp.public().verify_without_preparation(Domain::Vertex, &msg, sig.as_bytes()).ok()?;
        verify.push(t.elapsed().as_secs_f64() * 1e6);
        // The first call prepares the key; it is timed like any other (1 of `samples`).
        let t = Instant::now();
        kp.public().verify(Domain::Vertex, &msg, sig.as_bytes()).ok()?;
        prepared.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Some(MlDsaFloor { sign_us: median(&mut sign), sign_prepared_us: median(&mut sign_prepared), verify_us: median(&mut verify), verify_prepared_us: median(&mut prepared) })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_measured_and_plausible() {
        let f = measure(16).expect("ML-DSA works");
        assert!(f.sign_us > 1.0 && f.verify_us > 1.0, "{f:?}");
        assert!(f.sign_us < 1e5 && f.verify_us < 1e5, "{f:?}");
        assert!(f.verify_prepared_us > 1.0 && f.verify_prepared_us < 1e5, "{f:?}");
        assert_eq!(f.per_vertex_us(3), f.sign_us + 2.0 * f.verify_us);
        assert!(f.sign_prepared_us > 1.0 && f.sign_prepared_us < 1e5, "{f:?}");
        assert_eq!(f.per_vertex_prepared_us(3), f.sign_prepared_us + 2.0 * f.verify_prepared_us);
    }
}
