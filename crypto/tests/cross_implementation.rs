//! Cross-check of our ML-DSA-87 (liboqs via `oqs`) against an independent implementation
//! (RustCrypto `ml-dsa`), in both directions, with FIPS 204 context strings (our domains).
//! If either side deviated from FIPS 204 (encoding, context handling, hashing) these fail.

use ml_dsa::signature::Keypair as _;
use ml_dsa::{MlDsa87, Signature as RcSignature, SigningKey, VerifyingKey};
use pqdag_crypto::{Domain, Keypair, PublicKey, SecretKey};

fn rc_verify(pk: &[u8], domain: Domain, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(enc) = pk.try_into() else { return false };
    let vk = VerifyingKey::<MlDsa87>::decode(&enc);
    let Ok(sig) = RcSignature::<MlDsa87>::try_from(sig) else { return false };
    vk.verify_with_context(msg, domain.context(), &sig)
}

#[test]
fn oqs_signatures_verify_with_rustcrypto_and_tampering_fails() {
    let kp = Keypair::generate().expect("keygen");
    for (i, domain) in Domain::ALL.into_iter().enumerate() {
        let msg = vec![i as u8; 33 + 100 * i];
        let sig = kp.sign(domain, &msg).expect("sign");
        assert!(rc_verify(kp.public().as_bytes(), domain, &msg, sig.as_bytes()), "{domain:?}");

        let mut bad_msg = msg.clone();
        bad_msg[0] ^= 1;
        assert!(!rc_verify(kp.public().as_bytes(), domain, &bad_msg, sig.as_bytes()));
        assert!(kp.public().verify(domain, &bad_msg, sig.as_bytes()).is_err());

        let mut bad_sig = sig.as_bytes().to_vec();
        bad_sig[4000] ^= 0x10;
        assert!(!rc_verify(kp.public().as_bytes(), domain, &msg, &bad_sig));
        assert!(kp.public().verify(domain, &msg, &bad_sig).is_err());

        let other = if domain == Domain::Vertex { Domain::Response } else { Domain::Vertex };
        assert!(!rc_verify(kp.public().as_bytes(), other, &msg, sig.as_bytes()));
    }
}

#[test]
fn rustcrypto_signatures_and_keys_work_with_oqs() {
    let seed = [0x5au8; 32].into();
    let rc = SigningKey::<MlDsa87>::from_seed(&seed);
    let vk_bytes = rc.verifying_key().encode();
    let pk = PublicKey::from_bytes(vk_bytes.as_slice()).expect("pk");
    let msg = b"pqdag cross-check: RustCrypto signs, liboqs verifies";

    let sig = rc.expanded_key().sign_deterministic(msg, Domain::Vertex.context()).expect("rc sign");
    let sig_bytes = sig.encode();
    pk.verify(Domain::Vertex, msg, sig_bytes.as_slice()).expect("oqs verifies RustCrypto signature");
    assert!(pk.verify(Domain::Response, msg, sig_bytes.as_slice()).is_err());
    assert!(pk.verify(Domain::Vertex, b"tampered", sig_bytes.as_slice()).is_err());
    let mut bad = sig_bytes.as_slice().to_vec();
    bad[17] ^= 4;
    assert!(pk.verify(Domain::Vertex, msg, &bad).is_err());

    // The FIPS 204 expanded secret key is the format liboqs stores: oqs can sign with a key
    // RustCrypto generated, and RustCrypto verifies the result.
    #[allow(deprecated)]
    let sk_bytes = rc.expanded_key().to_expanded();
    let kp = Keypair::from_parts(pk.clone(), SecretKey::from_bytes(sk_bytes.as_slice()).expect("sk"))
        .expect("RustCrypto key pair is a valid liboqs key pair");
    let sig2 = kp.sign(Domain::Query, msg).expect("oqs sign");
    assert!(rc_verify(vk_bytes.as_slice(), Domain::Query, msg, sig2.as_bytes()));
}

/// Decodes the base64 body of a PEM file (no external crate: the alphabet is 64 symbols).
fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => 0,
    };
    let bytes: Vec<u8> = b64.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| u32::from(val(*c))).collect();
        let n = v.iter().enumerate().fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Known answer: the IETF LAMPS ML-DSA-87 example key (seed 00..1f) must derive to the published
/// public key, and liboqs, given that key pair, must produce signatures that verify against the
/// published key (under our domain contexts) and fail under a tampered one.
#[test]
fn lamps_example_key_is_a_known_answer_for_both_implementations() {
    let spki = pem_body(include_str!("vectors/lamps-ML-DSA-87.pub"));
    let published = &spki[spki.len() - pqdag_crypto::PUBLIC_KEY_BYTES..];
    let pkcs8 = pem_body(include_str!("vectors/lamps-ML-DSA-87-seed.priv"));
    let seed: [u8; 32] = pkcs8[pkcs8.len() - 32..].try_into().expect("32-byte seed");
    assert_eq!(seed.to_vec(), (0u8..32).collect::<Vec<u8>>(), "the LAMPS example seed is 00..1f");

    let rc = SigningKey::<MlDsa87>::from_seed(&seed.into());
    assert_eq!(rc.verifying_key().encode().as_slice(), published, "seed -> public key (FIPS 204 KeyGen) mismatch");

    #[allow(deprecated)]
    let sk = rc.expanded_key().to_expanded();
    let pk = PublicKey::from_bytes(published).expect("pk");
    let kp = Keypair::from_parts(pk, SecretKey::from_bytes(sk.as_slice()).expect("sk")).expect("liboqs accepts the LAMPS key pair");
    let msg = b"pqdag known-answer check";
    let sig = kp.sign(Domain::Vertex, msg).expect("oqs sign");
    assert!(rc_verify(published, Domain::Vertex, msg, sig.as_bytes()));
    let mut tampered = published.to_vec();
    tampered[100] ^= 1;
    assert!(!rc_verify(&tampered, Domain::Vertex, msg, sig.as_bytes()));
    assert!(PublicKey::from_bytes(&tampered).expect("pk").verify(Domain::Vertex, msg, sig.as_bytes()).is_err());
}
