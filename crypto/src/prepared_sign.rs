//! ML-DSA-87 signing with the secret key's expansion computed once.
//!
//! liboqs's signing (`crypto_sign_signature_internal`, AVX2) unpacks the secret key, expands
//! the matrix `Â` from `ρ` and moves `s1`, `s2` and `t0` into the NTT domain at every call,
//! before its rejection loop. A node signs every vertex, poll query and poll response with the
//! one key it has, so [`PreparedSecret::new`] does that once and [`PreparedSecret::sign`] runs
//! liboqs's rejection loop step for step with its own AVX2 functions (see `prepared.rs` for
//! where they come from and when they run). The tests compare the output with liboqs's own
//! signing byte for byte, for the same randomness.
//!
//! The expanded secret (`K`, `s1`, `s2`, `t0` in the NTT domain) is zeroed on drop, as
//! [`crate::SecretKey`]'s bytes are.

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables, unused_imports))]

use crate::prepared::{PolyVecK, PolyVecL, CRHBYTES, CTILDEBYTES, K, L, OMEGA, POLYW1_PACKEDBYTES, POLYZ_PACKEDBYTES, SEEDBYTES, TRBYTES, ZERO};
#[cfg(target_arch = "x86_64")]
use crate::prepared::{avx2_ready, ffi, Poly, N};
use crate::{SECRET_KEY_BYTES, SIGNATURE_BYTES};

/// FIPS 204 `RNDBYTES`: the randomness of hedged signing.
pub(crate) const RNDBYTES: usize = 32;
/// `γ1 - β` and `γ2 - β`, `γ2` for ML-DSA-87 (`γ1 = 2^19`, `γ2 = (q - 1) / 32`, `β = τ η = 120`).
const GAMMA1_MINUS_BETA: i32 = (1 << 19) - 120;
const GAMMA2: i32 = (8_380_417 - 1) / 32;
const GAMMA2_MINUS_BETA: i32 = GAMMA2 - 120;

/// What a signature needs from an ML-DSA-87 secret key, computed once (~80 KiB).
pub(crate) struct PreparedSecret {
    /// `tr = H(pk)`, from the secret key.
    tr: [u8; TRBYTES],
    /// The signing seed `K` (secret).
    key: [u8; SEEDBYTES],
    /// `Â`, as liboqs lays it out.
    mat: Box<[PolyVecL]>,
    /// `NTT(s1)`, `NTT(s2)`, `NTT(t0)` (secret).
    s1: Box<PolyVecL>,
    s2: Box<PolyVecK>,
    t0: Box<PolyVecK>,
}

/// Overwrites `v` with zeros in a way the compiler keeps (secret material).
pub(crate) fn zero<T: ?Sized>(v: &mut T) {
    let n = std::mem::size_of_val(v);
    let p = (v as *mut T).cast::<u8>();
    for i in 0..n {
        // SAFETY: `p + i` is inside `*v`, which we hold exclusively; volatile so the zeroing
        // is not optimised away.
        unsafe { std::ptr::write_volatile(p.add(i), 0) };
    }
}

impl Drop for PreparedSecret {
    fn drop(&mut self) {
        zero(&mut self.key);
        zero(&mut *self.s1);
        zero(&mut *self.s2);
        zero(&mut *self.t0);
    }
}

impl PreparedSecret {
    /// Expands `sk` (liboqs's 4 896-byte encoding). `None` if it has the wrong length, or if
    /// this machine cannot run the AVX2 code (then the caller signs through liboqs's API).
    pub(crate) fn new(sk: &[u8]) -> Option<Box<Self>> {
        if sk.len() != SECRET_KEY_BYTES {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if !avx2_ready() {
                return None;
            }
            let mut rho = [0u8; SEEDBYTES];
            let mut p = Box::new(Self {
                tr: [0; TRBYTES],
                key: [0; SEEDBYTES],
                mat: vec![PolyVecL { vec: [ZERO; L] }; K].into_boxed_slice(),
                s1: Box::new(PolyVecL { vec: [ZERO; L] }),
                s2: Box::new(PolyVecK { vec: [ZERO; K] }),
                t0: Box::new(PolyVecK { vec: [ZERO; K] }),
            });
            // SAFETY: `sk` holds SECRET_KEY_BYTES bytes (checked); every output is a live,
            // aligned buffer of liboqs's type and size (`mat` has K rows).
            unsafe {
                ffi::unpack_sk(rho.as_mut_ptr(), p.tr.as_mut_ptr(), p.key.as_mut_ptr(), &mut *p.t0, &mut *p.s1, &mut *p.s2, sk.as_ptr());
                ffi::polyvec_matrix_expand(p.mat.as_mut_ptr(), rho.as_ptr());
                ffi::polyvecl_ntt(&mut *p.s1);
                ffi::polyveck_ntt(&mut *p.s2);
                ffi::polyveck_ntt(&mut *p.t0);
            }
            Some(p)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// FIPS 204 hedged `ML-DSA.Sign(sk, M, ctx)` with fresh randomness from liboqs's RNG, as
    /// liboqs's `crypto_sign_signature` draws it. `None` only for a context over 255 bytes.
    pub(crate) fn sign(&self, ctx: &[u8], message: &[u8]) -> Option<Vec<u8>> {
        let mut rnd = [0u8; RNDBYTES];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `rnd` is a live buffer of RNDBYTES bytes.
        unsafe {
            ffi::OQS_randombytes(rnd.as_mut_ptr(), RNDBYTES)
        };
        self.sign_with(ctx, message, &rnd)
    }

    /// liboqs's `crypto_sign_signature_internal` for `pre = 0 || |ctx| || ctx`, with the key's
    /// values taken from `self`.
    pub(crate) fn sign_with(&self, ctx: &[u8], message: &[u8], rnd: &[u8; RNDBYTES]) -> Option<Vec<u8>> {
        if ctx.len() > 255 {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let shake256 = |out: &mut [u8], parts: &[&[u8]]| {
                let mut input: Vec<u8> = parts.concat();
                // SAFETY: both buffers are live and of the lengths passed.
                unsafe { ffi::OQS_SHA3_shake256(out.as_mut_ptr(), out.len(), input.as_ptr(), input.len()) };
                // One input holds the secret seed K: no copy of it is left in freed memory.
                zero(&mut input[..]);
            };
            let mut mu = [0u8; CRHBYTES];
            shake256(&mut mu, &[&self.tr, &[0, ctx.len() as u8], ctx, message]);
            let mut rhoprime = [0u8; CRHBYTES];
            shake256(&mut rhoprime, &[&self.key, rnd, &mu]);

            let mut sig = vec![0u8; SIGNATURE_BYTES];
            let hint_at = CTILDEBYTES + L * POLYZ_PACKEDBYTES;
            let mut z = PolyVecL { vec: [ZERO; L] };
            let mut y: PolyVecL;
            let mut w1 = PolyVecK { vec: [ZERO; K] };
            let mut w0 = PolyVecK { vec: [ZERO; K] };
            let mut c = ZERO;
            let mut tmp = ZERO;
            let mut hintbuf = [0u8; N];
            let mut nonce: u16 = 0;
            // SAFETY: every pointer is to a live, aligned local or field of liboqs's types;
            // `sig` holds SIGNATURE_BYTES bytes, so the w1 encoding (K x 128 bytes and the 14
            // `polyw1_pack` writes past it), c~ at 0, z_i at 64 + 640 i and the hint at
            // `hint_at` are in bounds, as in liboqs's own signing on its buffer; `hintbuf` has
            // the N bytes `poly_make_hint` may write. Output and input may be the same
            // polynomial, as in liboqs.
            'rej: loop {
                unsafe {
                    let [z0, z1, z2, z3, z4, z5, z6] = &mut z.vec;
                    ffi::poly_uniform_gamma1_4x(z0, z1, z2, z3, rhoprime.as_ptr(), nonce, nonce.wrapping_add(1), nonce.wrapping_add(2), nonce.wrapping_add(3));
                    ffi::poly_uniform_gamma1_4x(z4, z5, z6, &mut tmp, rhoprime.as_ptr(), nonce.wrapping_add(4), nonce.wrapping_add(5), nonce.wrapping_add(6), 0);
                    nonce = nonce.wrapping_add(7);

                    // w = A y, decomposed; c~ = H(mu || w1Encode(w1)).
                    y = z;
                    ffi::polyvecl_ntt(&mut y);
                    ffi::polyvec_matrix_pointwise_montgomery(&mut w1, self.mat.as_ptr(), &y);
                    ffi::polyveck_invntt_tomont(&mut w1);
                    ffi::polyveck_caddq(&mut w1);
                    let w: *mut PolyVecK = &mut w1;
                    ffi::polyveck_decompose(w, &mut w0, w);
                    ffi::polyveck_pack_w1(sig.as_mut_ptr(), &w1);
                }
                let mut c_tilde = [0u8; CTILDEBYTES];
                shake256(&mut c_tilde, &[&mu, &sig[..K * POLYW1_PACKEDBYTES]]);
                sig[..CTILDEBYTES].copy_from_slice(&c_tilde);
                unsafe {
                    ffi::poly_challenge(&mut c, sig.as_ptr());
                    ffi::poly_ntt(&mut c);

                    // z = y + c s1, rejected if it reveals the secret.
                    for i in 0..L {
                        ffi::poly_pointwise_montgomery(&mut tmp, &c, &self.s1.vec[i]);
                        ffi::poly_invntt_tomont(&mut tmp);
                        let zi: *mut Poly = &mut z.vec[i];
                        ffi::poly_add(zi, zi, &tmp);
                        ffi::poly_reduce(zi);
                        if ffi::poly_chknorm(zi, GAMMA1_MINUS_BETA) != 0 {
                            continue 'rej;
                        }
                    }

                    sig[hint_at..hint_at + OMEGA].fill(0);
                    let mut pos = 0usize;
                    for i in 0..K {
                        // Subtracting c s2 must not change w's high bits, and the low bits
                        // must not reveal the secret.
                        ffi::poly_pointwise_montgomery(&mut tmp, &c, &self.s2.vec[i]);
                        ffi::poly_invntt_tomont(&mut tmp);
                        let w0i: *mut Poly = &mut w0.vec[i];
                        ffi::poly_sub(w0i, w0i, &tmp);
                        ffi::poly_reduce(w0i);
                        if ffi::poly_chknorm(w0i, GAMMA2_MINUS_BETA) != 0 {
                            continue 'rej;
                        }
                        // The hints.
                        ffi::poly_pointwise_montgomery(&mut tmp, &c, &self.t0.vec[i]);
                        ffi::poly_invntt_tomont(&mut tmp);
                        ffi::poly_reduce(&mut tmp);
                        if ffi::poly_chknorm(&tmp, GAMMA2) != 0 {
                            continue 'rej;
                        }
                        ffi::poly_add(w0i, w0i, &tmp);
                        let n = ffi::poly_make_hint(hintbuf.as_mut_ptr(), w0i, &w1.vec[i]) as usize;
                        if pos + n > OMEGA {
                            continue 'rej;
                        }
                        sig[hint_at + pos..hint_at + pos + n].copy_from_slice(&hintbuf[..n]);
                        pos += n;
                        sig[hint_at + OMEGA + i] = pos as u8;
                    }
                    for i in 0..L {
                        ffi::polyz_pack(sig.as_mut_ptr().add(CTILDEBYTES + i * POLYZ_PACKEDBYTES), &z.vec[i]);
                    }
                }
                return Some(sig);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (message, rnd);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Domain, Keypair};

    /// liboqs's own signing of `message` under `ctx` with randomness `rnd`.
    fn liboqs_sign(sk: &[u8], ctx: &[u8], message: &[u8], rnd: &[u8; RNDBYTES]) -> Vec<u8> {
        let mut pre = vec![0u8, ctx.len() as u8];
        pre.extend_from_slice(ctx);
        let mut sig = vec![0u8; SIGNATURE_BYTES];
        let mut len = 0usize;
        // SAFETY: every buffer is live and of the length passed; `sig` has SIGNATURE_BYTES.
        let rc = unsafe { ffi::signature_internal(sig.as_mut_ptr(), &mut len, message.as_ptr(), message.len(), pre.as_ptr(), pre.len(), rnd.as_ptr(), sk.as_ptr()) };
        assert_eq!((rc, len), (0, SIGNATURE_BYTES));
        sig
    }

    /// For the same randomness the prepared path writes liboqs's signature byte for byte: the
    /// same rejection loop (the randomness and messages below take 1 to many rounds), the same
    /// hints, the same packing. Hedged signatures verify with liboqs's API.
    #[test]
    fn prepared_signing_is_liboqs_signing() {
        let kp = Keypair::generate().expect("keygen");
        let p = PreparedSecret::new(kp.secret().as_bytes()).expect("this machine runs liboqs's AVX2 code");
        for i in 0..60usize {
            let domain = Domain::ALL[i % Domain::ALL.len()];
            let msg: Vec<u8> = (0..(i * 53) % 900).map(|j| (i * 11 + j) as u8).collect();
            let rnd = [i as u8; RNDBYTES];
            let want = liboqs_sign(kp.secret().as_bytes(), domain.context(), &msg, &rnd);
            assert_eq!(p.sign_with(domain.context(), &msg, &rnd).expect("sign"), want, "message {i}");
            let hedged = p.sign(domain.context(), &msg).expect("sign");
            kp.public().verify_without_preparation(domain, &msg, &hedged).expect("liboqs verifies it");
            assert_ne!(hedged, want, "fresh randomness, a fresh signature");
        }
        assert!(p.sign(&[0; 256], b"m").is_none());
        assert!(PreparedSecret::new(&kp.secret().as_bytes()[1..]).is_none());
    }
}
