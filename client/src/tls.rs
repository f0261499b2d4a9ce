//! TLS 1.3 for the client: hybrid post-quantum key exchange only, server certificates that carry
//! no trust.
//!
//! The same policy as the node (`pqdag-transport`'s `tls` module), copied because that crate
//! runs on glommio: key exchange is restricted to X25519MLKEM768 (rustls never offers a classical
//! group, so there is nothing to downgrade to), TLS 1.3 only, ALPN [`CLIENT_ALPN`], and the
//! server's ephemeral self-signed certificate is accepted whatever it is, while its handshake
//! signature is still checked. Who the server *is* is proven afterwards by its ML-DSA-87
//! signature over the TLS exporter (see [`crate::identity`]). The client presents no certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, NamedGroup, SignatureScheme};

use crate::ClientError;

/// ALPN of the node's client endpoint (equal to `pqdag_transport::tls::CLIENT_ALPN`).
pub const CLIENT_ALPN: &[u8] = b"pqdag-client/2";
/// The TLS server name every dialer uses: certificates carry no trust, so it is a constant.
pub const SERVER_NAME: &str = "pqdag.invalid";
/// The one key-exchange group allowed.
pub const REQUIRED_KX_GROUP: NamedGroup = NamedGroup::X25519MLKEM768;

/// The aws-lc-rs provider with key exchange restricted to X25519MLKEM768.
pub(crate) fn hybrid_only_provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    Arc::new(p)
}

/// Accepts any server certificate (identity comes from the ML-DSA binding) but checks the TLS
/// 1.3 handshake signature with the certificate's key, so the transcript is authenticated.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The quinn client config: TLS 1.3, X25519MLKEM768 only, ALPN [`CLIENT_ALPN`], no client
/// certificate, no 0-RTT; keep-alives below the node's 10 s idle timeout.
pub(crate) fn quic_client_config() -> Result<quinn::ClientConfig, ClientError> {
    let provider = hybrid_only_provider();
    let tls_err = |e: rustls::Error| ClientError::Tls(e.to_string());
    let mut rc = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
        .with_no_client_auth();
    rc.alpn_protocols = vec![CLIENT_ALPN.to_vec()];
    rc.enable_early_data = false;
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(rc).map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(qc));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(10_000))));
    // The node opens one uni stream for its proof and one per batch of pushed events.
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(256));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0));
    t.datagram_receive_buffer_size(None);
    cc.transport_config(Arc::new(t));
    Ok(cc)
}
