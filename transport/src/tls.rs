//! TLS 1.3 for QUIC: hybrid post-quantum key exchange only, certificates that carry no trust.
//!
//! Key exchange is restricted to X25519MLKEM768 on both ends: rustls then never offers or
//! accepts a classical group, so there is nothing to downgrade to. Certificates are ephemeral
//! self-signed ECDSA keys made at start-up; the verifiers below accept any certificate but still
//! check the TLS handshake signature (so the peer holds the certificate key, and the transcript
//! is authenticated). Who the peer *is* is proven afterwards by an ML-DSA-87 signature over the
//! TLS exporter (see [`crate::identity`]): rustls 0.23 cannot carry ML-DSA certificates.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, NamedGroup, SignatureScheme};

use crate::TransportError;

/// ALPN of node-to-node connections. Version 2: the dialer proves its identity first.
pub const PEER_ALPN: &[u8] = b"pqdag/2";
/// ALPN of the client-facing endpoint (load generators, operators). Version 2: the client
/// proves its ML-DSA-87 key first, then the node proves its own.
pub const CLIENT_ALPN: &[u8] = b"pqdag-client/2";
/// The TLS server name every dialer uses: certificates carry no trust, so it is a constant.
pub const SERVER_NAME: &str = "pqdag.invalid";

/// The one key-exchange group we allow.
pub const REQUIRED_KX_GROUP: NamedGroup = NamedGroup::X25519MLKEM768;

/// Counts key exchanges by group, so tests and metrics can prove which group was negotiated
/// (quinn-proto does not expose the rustls session).
#[derive(Debug, Default)]
pub struct KxLog {
    /// Key exchanges that used X25519MLKEM768.
    pub hybrid: AtomicU64,
    /// Key exchanges that used anything else (must stay 0: no such group is configured).
    pub other: AtomicU64,
}

impl KxLog {
    fn record(&self, g: NamedGroup) {
        if g == REQUIRED_KX_GROUP {
            self.hybrid.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A key-exchange group that records its use in a [`KxLog`].
#[derive(Debug)]
struct RecordingKx {
    inner: &'static dyn SupportedKxGroup,
    log: Arc<KxLog>,
}

impl SupportedKxGroup for RecordingKx {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        // Client side: called when our key share is offered; with one group, offered == used.
        self.log.record(self.inner.name());
        self.inner.start()
    }
    fn start_and_complete(&self, peer_pub_key: &[u8]) -> Result<CompletedKeyExchange, rustls::Error> {
        // Server side: the group the server selected.
        self.log.record(self.inner.name());
        self.inner.start_and_complete(peer_pub_key)
    }
    fn name(&self) -> NamedGroup {
        self.inner.name()
    }
    fn fips(&self) -> bool {
        self.inner.fips()
    }
}

/// The aws-lc-rs provider with key exchange restricted to X25519MLKEM768 (recorded in `log`).
pub fn hybrid_only_provider(log: Arc<KxLog>) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let kx: &'static RecordingKx =
        Box::leak(Box::new(RecordingKx { inner: rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768, log }));
    p.kx_groups = vec![kx];
    Arc::new(p)
}

/// Accepts any server certificate (identity comes from the ML-DSA binding), but checks the
/// TLS 1.3 handshake signature with the certificate's key. Public so interop tests can reuse it.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyServerCert {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(Self { provider })
    }
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

/// Server-side twin of [`AcceptAnyServerCert`]: client certificates are optional (clients of
/// the client endpoint have none) and trusted for nothing, but their handshake signature is
/// checked when present.
#[derive(Debug)]
struct AcceptAnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AcceptAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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

/// An ephemeral self-signed certificate and its key (PKCS#8), made fresh at start-up.
pub struct EphemeralCert {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl fmt::Debug for EphemeralCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EphemeralCert(..)")
    }
}

impl EphemeralCert {
    /// Generates an ECDSA P-256 self-signed certificate for [`SERVER_NAME`].
    pub fn generate() -> Result<Self, TransportError> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| TransportError::Tls(format!("certificate generation: {e}")))?;
        Ok(Self {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()),
        })
    }
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

fn tls_err(e: impl fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The rustls server config: TLS 1.3 only, hybrid key exchange only, both ALPNs, optional
/// (untrusted) client certificates.
pub fn rustls_server_config(
    provider: Arc<CryptoProvider>,
    cert: &EphemeralCert,
    alpns: &[&[u8]],
) -> Result<rustls::ServerConfig, TransportError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(AcceptAnyClientCert { provider }))
        .with_single_cert(vec![cert.cert.clone()], cert.key())
        .map_err(tls_err)?;
    cfg.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    Ok(cfg)
}

/// The rustls client config: TLS 1.3 only, hybrid key exchange only, one ALPN; presents `cert`
/// when given (node-to-node), none otherwise (clients).
pub fn rustls_client_config(
    provider: Arc<CryptoProvider>,
    cert: Option<&EphemeralCert>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TransportError> {
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(AcceptAnyServerCert::new(provider));
    let mut cfg = match cert {
        Some(c) => b.with_client_auth_cert(vec![c.cert.clone()], c.key()).map_err(tls_err)?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg.enable_early_data = false;
    Ok(cfg)
}
