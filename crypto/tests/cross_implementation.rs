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
