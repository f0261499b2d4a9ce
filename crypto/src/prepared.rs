//! ML-DSA-87 verification with a public key's expansion computed once per key.
//!
//! liboqs's verify (`crypto_sign_verify_internal`, AVX2) derives three values from the public
//! key at every call: `tr = H(pk)`, the matrix `Â = ExpandA(ρ)` (56 polynomials sampled from
//! SHAKE128, ~80 % of a verify) and `NTT(t1 · 2^d)`. They depend on the key alone, so keeping
//! them with the key changes no result (liboqs's signing already expands `Â` once, before its
//! rejection loop, for the same reason). A node verifies every message of its N - 1 peers with
//! the same N - 1 keys, so here they are computed once per key ([`Prepared::new`]) and each [`Prepared::verify`] runs the rest
//! of liboqs's verify step for step, with liboqs's own AVX2 functions in the same order: only
//! the key-only values moved out of the loop. Profiled at one payload per vertex, the matrix
//! expansion was 22 % of a node's CPU (`docs/benchmark.md`, "Prepared keys").
//!
//! The functions are liboqs 0.13's (`oqs-sys` 0.11, pinned by `Cargo.lock`) internal AVX2
//! symbols, which its static library exports (`pqcrystals_ml_dsa_87_avx2_*`). They exist on
//! x86-64 only, and run only where the CPU has AVX2 and POPCNT (what liboqs itself checks
//! before choosing them); elsewhere [`Prepared::new`] returns `None` and the key verifies
//! through liboqs's public API as before. Tests compare both paths on valid, tampered and
//! malformed signatures (`tests` below, `tests/cross_implementation.rs` against RustCrypto).

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables, unused_imports))]

use crate::{PUBLIC_KEY_BYTES, SIGNATURE_BYTES};

/// Polynomial degree.
pub(crate) const N: usize = 256;
/// Rows of `Â` (FIPS 204 `k` for ML-DSA-87).
pub(crate) const K: usize = 8;
/// Columns of `Â` (`l`).
pub(crate) const L: usize = 7;
pub(crate) const SEEDBYTES: usize = 32;
pub(crate) const TRBYTES: usize = 64;
pub(crate) const CRHBYTES: usize = 64;
pub(crate) const CTILDEBYTES: usize = 64;
pub(crate) const POLYT1_PACKEDBYTES: usize = 320;
pub(crate) const POLYZ_PACKEDBYTES: usize = 640;
pub(crate) const POLYW1_PACKEDBYTES: usize = 128;
pub(crate) const OMEGA: usize = 75;

// The sizes this file's offsets assume are the crate's.
const _: () = assert!(SEEDBYTES + K * POLYT1_PACKEDBYTES == PUBLIC_KEY_BYTES);
const _: () = assert!(CTILDEBYTES + L * POLYZ_PACKEDBYTES + OMEGA + K == SIGNATURE_BYTES);

/// liboqs's AVX2 `poly`: a union of `int32_t[256]` and `__m256i[32]`, so 32-byte aligned.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub(crate) struct Poly {
    pub(crate) coeffs: [i32; N],
}

/// liboqs's `polyvecl`: `L` polynomials.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PolyVecL {
    pub(crate) vec: [Poly; L],
}

/// liboqs's `ALIGNED_UINT8(K * POLYW1_PACKEDBYTES + 14)`: `polyw1_pack` writes 14 bytes past
/// the last row.
#[repr(C, align(32))]
struct W1Buf {
    bytes: [u8; K * POLYW1_PACKEDBYTES + 14],
}

/// liboqs's `polyveck`: `K` polynomials.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PolyVecK {
    pub(crate) vec: [Poly; K],
}

pub(crate) const ZERO: Poly = Poly { coeffs: [0; N] };

#[cfg(target_arch = "x86_64")]
pub(crate) mod ffi {
    use super::{Poly, PolyVecK, PolyVecL};

    // liboqs 0.13, `src/sig/ml_dsa/pqcrystals-dilithium-standard_ml-dsa-87_avx2/` (poly.h,
    // polyvec.h, packing via poly.c) and `src/common/sha3/sha3.h`.
    unsafe extern "C" {
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyvec_matrix_expand"]
        pub(crate) fn polyvec_matrix_expand(mat: *mut PolyVecL, rho: *const u8);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyt1_unpack"]
        pub(crate) fn polyt1_unpack(r: *mut Poly, a: *const u8);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_shiftl"]
        pub(crate) fn poly_shiftl(a: *mut Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_ntt"]
        pub(crate) fn poly_ntt(a: *mut Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_challenge"]
        pub(crate) fn poly_challenge(c: *mut Poly, seed: *const u8);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyz_unpack"]
        pub(crate) fn polyz_unpack(r: *mut Poly, a: *const u8);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyvecl_pointwise_acc_montgomery"]
        pub(crate) fn polyvecl_pointwise_acc_montgomery(w: *mut Poly, u: *const PolyVecL, v: *const PolyVecL);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_pointwise_montgomery"]
        pub(crate) fn poly_pointwise_montgomery(c: *mut Poly, a: *const Poly, b: *const Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_sub"]
        pub(crate) fn poly_sub(c: *mut Poly, a: *const Poly, b: *const Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_reduce"]
        pub(crate) fn poly_reduce(a: *mut Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_invntt_tomont"]
        pub(crate) fn poly_invntt_tomont(a: *mut Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_caddq"]
        pub(crate) fn poly_caddq(a: *mut Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_use_hint"]
        pub(crate) fn poly_use_hint(b: *mut Poly, a: *const Poly, h: *const Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyw1_pack"]
        pub(crate) fn polyw1_pack(r: *mut u8, a: *const Poly);
        pub(crate) fn OQS_SHA3_shake256(output: *mut u8, outlen: usize, input: *const u8, inplen: usize);
        // Signing (`prepared_sign.rs`).
        #[link_name = "pqcrystals_ml_dsa_87_avx2_unpack_sk"]
        pub(crate) fn unpack_sk(rho: *mut u8, tr: *mut u8, key: *mut u8, t0: *mut PolyVecK, s1: *mut PolyVecL, s2: *mut PolyVecK, sk: *const u8);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyvecl_ntt"]
        pub(crate) fn polyvecl_ntt(v: *mut PolyVecL);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyveck_ntt"]
        pub(crate) fn polyveck_ntt(v: *mut PolyVecK);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_uniform_gamma1_4x"]
        pub(crate) fn poly_uniform_gamma1_4x(a0: *mut Poly, a1: *mut Poly, a2: *mut Poly, a3: *mut Poly, seed: *const u8, n0: u16, n1: u16, n2: u16, n3: u16);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyvec_matrix_pointwise_montgomery"]
        pub(crate) fn polyvec_matrix_pointwise_montgomery(t: *mut PolyVecK, mat: *const PolyVecL, v: *const PolyVecL);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyveck_invntt_tomont"]
        pub(crate) fn polyveck_invntt_tomont(v: *mut PolyVecK);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyveck_caddq"]
        pub(crate) fn polyveck_caddq(v: *mut PolyVecK);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyveck_decompose"]
        pub(crate) fn polyveck_decompose(v1: *mut PolyVecK, v0: *mut PolyVecK, v: *const PolyVecK);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyveck_pack_w1"]
        pub(crate) fn polyveck_pack_w1(r: *mut u8, w1: *const PolyVecK);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_add"]
        pub(crate) fn poly_add(c: *mut Poly, a: *const Poly, b: *const Poly);
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_chknorm"]
        pub(crate) fn poly_chknorm(a: *const Poly, bound: i32) -> i32;
        #[link_name = "pqcrystals_ml_dsa_87_avx2_poly_make_hint"]
        pub(crate) fn poly_make_hint(hint: *mut u8, a0: *const Poly, a1: *const Poly) -> u32;
        #[link_name = "pqcrystals_ml_dsa_87_avx2_polyz_pack"]
        pub(crate) fn polyz_pack(r: *mut u8, a: *const Poly);
        /// liboqs 0.13's own signing, for the tests that compare with it byte for byte.
        #[cfg(test)]
        #[link_name = "pqcrystals_ml_dsa_87_avx2_signature_internal"]
        pub(crate) fn signature_internal(sig: *mut u8, siglen: *mut usize, m: *const u8, mlen: usize, pre: *const u8, prelen: usize, rnd: *const u8, sk: *const u8) -> i32;
        pub(crate) fn OQS_randombytes(out: *mut u8, len: usize);
    }
}

/// What a verify needs from an ML-DSA-87 public key, computed once (~64 KiB).
pub(crate) struct Prepared {
    /// `tr = SHAKE256(pk, 64)`.
    tr: [u8; TRBYTES],
    /// `Â`, as liboqs's `polyvec_matrix_expand` lays it out (NTT domain, AVX2 order).
    mat: Box<[PolyVecL]>,
    /// `NTT(t1 · 2^d)`, row by row.
    t1_hat: Box<[Poly]>,
}

/// Whether the prepared paths may run here: this CPU runs liboqs's AVX2 ML-DSA code (liboqs
/// checks the same two features) and liboqs is initialised (`OQS_init`, which sets up its
/// SHA-3 dispatch, runs once in `scheme`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_ready() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt") && crate::mldsa::scheme().is_ok()
}

impl Prepared {
    /// Expands `pk` (2 592 bytes). `None` if it has the wrong length, or if this machine cannot
    /// run the AVX2 code (then the caller verifies through liboqs's public API).
    pub(crate) fn new(pk: &[u8]) -> Option<Box<Self>> {
        if pk.len() != PUBLIC_KEY_BYTES {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if !avx2_ready() {
                return None;
            }
            let mut tr = [0u8; TRBYTES];
            let mut mat = vec![PolyVecL { vec: [ZERO; L] }; K].into_boxed_slice();
            let mut t1_hat = vec![ZERO; K].into_boxed_slice();
            // SAFETY: `pk` holds PUBLIC_KEY_BYTES bytes (checked above): `ρ` is its first 32 and
            // row i of t1 is the 320 bytes at 32 + 320 i, all in bounds; `mat` has K rows and
            // `t1_hat` K polynomials, each a properly aligned `#[repr(C)]` mirror of liboqs'
            // types; the functions write only their output arguments.
            unsafe {
                ffi::OQS_SHA3_shake256(tr.as_mut_ptr(), TRBYTES, pk.as_ptr(), PUBLIC_KEY_BYTES);
                ffi::polyvec_matrix_expand(mat.as_mut_ptr(), pk.as_ptr());
                for (i, h) in t1_hat.iter_mut().enumerate() {
                    ffi::polyt1_unpack(h, pk.as_ptr().add(SEEDBYTES + i * POLYT1_PACKEDBYTES));
                    ffi::poly_shiftl(h);
                    ffi::poly_ntt(h);
                }
            }
            Some(Box::new(Self { tr, mat, t1_hat }))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// FIPS 204 `ML-DSA.Verify(pk, M, sig, ctx)`: liboqs's `crypto_sign_verify` (context
    /// prefix) and `crypto_sign_verify_internal`, with the key's values taken from `self`.
    pub(crate) fn verify(&self, ctx: &[u8], message: &[u8], sig: &[u8]) -> bool {
        if sig.len() != SIGNATURE_BYTES || ctx.len() > 255 {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // mu = CRH(tr || 0 || |ctx| || ctx || M)
            let mut input = Vec::with_capacity(TRBYTES + 2 + ctx.len() + message.len());
            input.extend_from_slice(&self.tr);
            input.push(0);
            input.push(ctx.len() as u8);
            input.extend_from_slice(ctx);
            input.extend_from_slice(message);
            let mut mu = [0u8; CRHBYTES];
            let hint = &sig[CTILDEBYTES + L * POLYZ_PACKEDBYTES..];
            let mut buf = W1Buf { bytes: [0; K * POLYW1_PACKEDBYTES + 14] };
            let mut c = ZERO;
            let mut z = PolyVecL { vec: [ZERO; L] };
            let mut w1 = ZERO;
            let mut h = ZERO;
            let mut pos = 0usize;
            // SAFETY: every pointer is to a live, aligned local or field of the types liboqs
            // declares; `sig` holds SIGNATURE_BYTES bytes (checked above), so `c~` (its first 64
            // bytes) and z_i at 64 + 640 i are in bounds, and `polyz_unpack`'s 32-byte loads
            // end at most 12 bytes past the last z, inside the hint that follows, as in
            // liboqs's own verify on the same buffer; `buf` has the 14 spare bytes
            // `polyw1_pack` writes. Output and input may be the same polynomial, as in liboqs.
            unsafe {
                ffi::OQS_SHA3_shake256(mu.as_mut_ptr(), CRHBYTES, input.as_ptr(), input.len());
                ffi::poly_challenge(&mut c, sig.as_ptr());
                ffi::poly_ntt(&mut c);
                for (i, zi) in z.vec.iter_mut().enumerate() {
                    ffi::polyz_unpack(zi, sig.as_ptr().add(CTILDEBYTES + i * POLYZ_PACKEDBYTES));
                    ffi::poly_ntt(zi);
                }
                for i in 0..K {
                    // i-th row of Az - c t1 2^d
                    ffi::polyvecl_pointwise_acc_montgomery(&mut w1, &self.mat[i], &z);
                    ffi::poly_pointwise_montgomery(&mut h, &c, &self.t1_hat[i]);
                    let w: *mut Poly = &mut w1;
                    ffi::poly_sub(w, w, &h);
                    ffi::poly_reduce(w);
                    ffi::poly_invntt_tomont(w);
                    // The hint of row i: indices pos..hint[OMEGA + i], strictly increasing.
                    h.coeffs = [0; N];
                    let end = hint[OMEGA + i] as usize;
                    if end < pos || end > OMEGA {
                        return false;
                    }
                    for j in pos..end {
                        if j > pos && hint[j] <= hint[j - 1] {
                            return false;
                        }
                        h.coeffs[hint[j] as usize] = 1;
                    }
                    pos = end;
                    ffi::poly_caddq(w);
                    ffi::poly_use_hint(w, w, &h);
                    ffi::polyw1_pack(buf.bytes.as_mut_ptr().add(i * POLYW1_PACKEDBYTES), w);
                }
            }
            // Unused hint slots are zero (strong unforgeability).
            if hint[pos..OMEGA].iter().any(|&b| b != 0) {
                return false;
            }
            // c~' = H(mu || w1Encode(w1)) must equal the signature's c~.
            let mut input = Vec::with_capacity(CRHBYTES + K * POLYW1_PACKEDBYTES);
            input.extend_from_slice(&mu);
            input.extend_from_slice(&buf.bytes[..K * POLYW1_PACKEDBYTES]);
            let mut c_tilde = [0u8; CTILDEBYTES];
            // SAFETY: output and input are live buffers of the lengths passed.
            unsafe { ffi::OQS_SHA3_shake256(c_tilde.as_mut_ptr(), CTILDEBYTES, input.as_ptr(), input.len()) };
            c_tilde[..] == sig[..CTILDEBYTES]
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (ctx, message);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Domain, Keypair};

    fn prepared(kp: &Keypair) -> Box<Prepared> {
        Prepared::new(kp.public().as_bytes()).expect("this machine runs liboqs's AVX2 code")
    }

    /// The prepared path answers as liboqs's own verify, on valid signatures and on every kind
    /// of damage: each region of the signature (c~, z, the hint's indices and its counts), the
    /// message, the context, the key.
    #[test]
    fn prepared_verify_agrees_with_liboqs() {
        let a = Keypair::generate().expect("keygen");
        let b = Keypair::generate().expect("keygen");
        let (pa, pb) = (prepared(&a), prepared(&b));
        let mut checked = 0;
        let mut repeated = 0;
        for i in 0..40usize {
            let domain = Domain::ALL[i % Domain::ALL.len()];
            let msg: Vec<u8> = (0..(i * 37) % 700).map(|j| (i * 7 + j) as u8).collect();
            let sig = a.sign(domain, &msg).expect("sign").into_bytes();
            assert!(pa.verify(domain.context(), &msg, &sig), "valid signature {i}");
            assert!(!pb.verify(domain.context(), &msg, &sig), "another key {i}");
            let other = Domain::ALL[(i + 1) % Domain::ALL.len()];
            assert!(!pa.verify(other.context(), &msg, &sig), "another context {i}");
            let mut m2 = msg.clone();
            m2.push(1);
            assert!(!pa.verify(domain.context(), &m2, &sig), "another message {i}");
            // Flip one bit in each region, and set hint bytes to edge values.
            let hint_at = CTILDEBYTES + L * POLYZ_PACKEDBYTES;
            let mut spots = vec![i % CTILDEBYTES, CTILDEBYTES + (i * 131) % (L * POLYZ_PACKEDBYTES), hint_at + i % OMEGA, hint_at + OMEGA + i % K];
            spots.push(SIGNATURE_BYTES - 1);
            // The hint's own rules: a used slot past the last count, counts that go down or past
            // OMEGA, an index repeated.
            let used = sig[hint_at + OMEGA + K - 1] as usize;
            if used < OMEGA {
                spots.push(hint_at + used);
            }
            spots.push(hint_at + OMEGA + i % (K - 1));
            let mut cases: Vec<(usize, u8)> = Vec::new();
            for (n, &at) in spots.iter().enumerate() {
                for v in [sig[at] ^ (1 << (n % 8)), 0, 1, 0xff, OMEGA as u8, OMEGA as u8 + 1, sig[at].wrapping_add(1)] {
                    cases.push((at, v));
                }
            }
            let first_row_end = sig[hint_at + OMEGA] as usize;
            if first_row_end >= 2 {
                cases.push((hint_at + 1, sig[hint_at]));
            }
            let mut forged: Vec<Vec<u8>> = cases
                .into_iter()
                .map(|(at, v)| {
                    let mut bad = sig.clone();
                    bad[at] = v;
                    bad
                })
                .collect();
            // The last row's last index repeated in one more slot: the same hint polynomial, so
            // only the strictly-increasing rule refuses it (strong unforgeability).
            let before_last = sig[hint_at + OMEGA + K - 2] as usize;
            if used < OMEGA && used > before_last {
                let mut bad = sig.clone();
                bad[hint_at + used] = bad[hint_at + used - 1];
                bad[hint_at + OMEGA + K - 1] += 1;
                forged.push(bad);
                repeated += 1;
            }
            for bad in forged {
                {
                    let want = a.public().verify_without_preparation(domain, &msg, &bad).is_ok();
                    assert_eq!(pa.verify(domain.context(), &msg, &bad), want, "sig {i}, damaged");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 1000);
        assert!(repeated >= 5, "{repeated} signatures had a hint to repeat");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Untrusted bytes: a signature a peer sent, damaged anywhere in up to 8 places or
        /// random throughout, gets liboqs's answer (and never a panic or an out-of-bounds read:
        /// the hint bytes index a 256-coefficient polynomial, any u8 is in range).
        #[test]
        fn any_signature_bytes_get_liboqs_answer(
            edits in proptest::collection::vec((0..SIGNATURE_BYTES, proptest::prelude::any::<u8>()), 0..8),
            random in proptest::prelude::any::<bool>(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            use std::sync::OnceLock;
            static KEY: OnceLock<(Keypair, Box<Prepared>, Vec<u8>)> = OnceLock::new();
            let (kp, p, sig) = KEY.get_or_init(|| {
                let kp = Keypair::generate().expect("keygen");
                let p = prepared(&kp);
                let sig = kp.sign(Domain::Response, b"a response").expect("sign").into_bytes();
                (kp, p, sig)
            });
            let mut bad = sig.clone();
            if random {
                let mut x = seed | 1;
                for b in bad.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            for (at, v) in edits {
                bad[at] = v;
            }
            let want = kp.public().verify_without_preparation(Domain::Response, b"a response", &bad).is_ok();
            proptest::prop_assert_eq!(p.verify(Domain::Response.context(), b"a response", &bad), want);
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let a = Keypair::generate().expect("keygen");
        let p = prepared(&a);
        let sig = a.sign(Domain::Vertex, b"m").expect("sign").into_bytes();
        assert!(!p.verify(Domain::Vertex.context(), b"m", &sig[..SIGNATURE_BYTES - 1]));
        assert!(!p.verify(&[0u8; 256], b"m", &sig));
        assert!(Prepared::new(&a.public().as_bytes()[1..]).is_none());
    }
}
