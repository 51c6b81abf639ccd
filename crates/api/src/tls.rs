//! Node identities and rustls configurations for mutual TLS.
//!
//! Every node certificate is signed by the cluster's root CA and carries CN = node ID,
//! OU = role (`swarm-manager` / `swarm-worker`), O = cluster ID, and SAN DNS names of the role
//! and the node ID. Clients verify a manager by its `swarm-manager` SAN against the root CA;
//! managers read the caller's role from its certificate. The node's certificate and key sit
//! behind an [`ArcSwap`] so a renewal takes effect on the next handshake, without a restart.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::pb::NodeRole;
use crate::roles::{MANAGER_OU, WORKER_OU};

/// The name clients verify managers by (a SAN of every manager certificate).
pub const MANAGER_SERVER_NAME: &str = MANAGER_OU;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid private key: {0}")]
    Key(String),
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The one crypto provider orch uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a node certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub node_id: String,
    pub role: NodeRole,
    pub cluster_id: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

pub fn role_ou(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => MANAGER_OU,
        NodeRole::Worker => WORKER_OU,
    }
}

pub fn cert_info_from_der(der: &[u8]) -> Result<CertInfo, TlsError> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| TlsError::Certificate(e.to_string()))?;
    let subject = cert.subject();
    let first = |iter: &mut dyn Iterator<Item = &AttributeTypeAndValue<'_>>| {
        iter.next()
            .and_then(|attr| attr.as_str().ok())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let node_id = first(&mut subject.iter_common_name());
    let ou = first(&mut subject.iter_organizational_unit());
    let cluster_id = first(&mut subject.iter_organization());
    let role = match ou.as_str() {
        MANAGER_OU => NodeRole::Manager,
        WORKER_OU => NodeRole::Worker,
        other => {
            return Err(TlsError::Certificate(format!(
                "unknown role {other:?} in certificate"
            )))
        }
    };
    if node_id.is_empty() || cluster_id.is_empty() {
        return Err(TlsError::Certificate(
            "certificate lacks a node ID or cluster ID".into(),
        ));
    }
    Ok(CertInfo {
        node_id,
        role,
        cluster_id,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

pub fn cert_info_from_pem(pem: &str) -> Result<CertInfo, TlsError> {
    let der = first_cert(pem)?;
    cert_info_from_der(der.as_ref())
}

fn first_cert(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| TlsError::Certificate("no certificate in PEM".into()))?
        .map_err(|e| TlsError::Certificate(e.to_string()))
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// A fresh ECDSA P-256 key (PEM) and a certificate signing request for it (DER).
/// The CA decides the subject; the CSR only proves possession of the key.
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_der: Vec<u8>,
}

pub fn new_key_and_csr() -> Result<KeyAndCsr, TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_der: csr.der().to_vec(),
    })
}

struct IdentityState {
    key: Arc<CertifiedKey>,
    info: CertInfo,
    cert_pem: String,
    key_pem: String,
}

/// A node's certificate and key, replaceable while connections use it.
pub struct NodeIdentity {
    state: ArcSwap<IdentityState>,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("info", &self.state.load().info)
            .finish()
    }
}

impl NodeIdentity {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Ok(NodeIdentity {
            state: ArcSwap::from_pointee(Self::load(cert_pem, key_pem)?),
        })
    }

    fn load(cert_pem: &str, key_pem: &str) -> Result<IdentityState, TlsError> {
        let chain = certs(cert_pem)?;
        let info = cert_info_from_der(chain[0].as_ref())?;
        let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::Key(e.to_string()))?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| TlsError::Key(e.to_string()))?;
        let key = Arc::new(CertifiedKey::new(chain, signing_key));
        key.keys_match()
            .map_err(|e| TlsError::Key(format!("key does not match certificate: {e}")))?;
        Ok(IdentityState {
            key,
            info,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// Swaps in a renewed certificate; new handshakes use it at once.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        self.state.store(Arc::new(Self::load(cert_pem, key_pem)?));
        Ok(())
    }

    pub fn info(&self) -> CertInfo {
        self.state.load().info.clone()
    }

    pub fn cert_pem(&self) -> String {
        self.state.load().cert_pem.clone()
    }

    pub fn key_pem(&self) -> String {
        self.state.load().key_pem.clone()
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        self.state.load().key.clone()
    }
}

#[derive(Debug)]
struct IdentityResolver(Arc<NodeIdentity>);

impl ResolvesServerCert for IdentityResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }
}

impl ResolvesClientCert for IdentityResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn root_store(root_ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(root_ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// When to renew a certificate valid from `not_before` to `not_after` (unix seconds): at
/// `fraction` of its life, which callers pick at random between 0.5 and 0.8 so a cluster's
/// nodes do not all renew at once.
pub fn renew_at(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let fraction = fraction.clamp(0.0, 1.0);
    let life = (not_after - not_before).max(0) as f64;
    not_before + (life * fraction) as i64
}

/// The trust material of a node in a cluster: the root CA and the node's own identity.
#[derive(Clone)]
pub struct TlsContext {
    pub root_ca_pem: String,
    roots: Arc<RootCertStore>,
    pub identity: Arc<NodeIdentity>,
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsContext")
            .field("identity", &self.identity)
            .finish()
    }
}

impl TlsContext {
    pub fn new(root_ca_pem: &str, identity: Arc<NodeIdentity>) -> Result<Self, TlsError> {
        Ok(TlsContext {
            root_ca_pem: root_ca_pem.to_string(),
            roots: root_store(root_ca_pem)?,
            identity,
        })
    }

    /// Server side: presents the node certificate; a client certificate is verified against
    /// the root CA when given. Callers without one reach only the join RPCs (checked per RPC).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(IdentityResolver(self.identity.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Client side: verifies the server as a manager of this cluster's CA, presents the node
    /// certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(Arc::new(IdentityResolver(self.identity.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A client without a certificate of its own, for joining. With `root_ca_pem` it verifies the
/// manager against that CA; without, it accepts any server, which is only used to fetch the root
/// CA certificate, whose digest the caller then checks against the join token.
pub fn anonymous_client_config(root_ca_pem: Option<&str>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = match root_ca_pem {
        Some(pem) => builder
            .with_root_certificates(root_store(pem)?)
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate: only for fetching the root CA, which is pinned afterwards.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_life() {
        let cases = [
            (0, 100, 0.5, 50),
            (0, 100, 0.8, 80),
            (1000, 1100, 0.6, 1060),
            (0, 100, 7.0, 100),
            (50, 40, 0.5, 50),
        ];
        for (nb, na, f, want) in cases {
            assert_eq!(renew_at(nb, na, f), want, "{nb} {na} {f}");
        }
    }

    #[test]
    fn csr_and_key_are_well_formed() {
        let k = new_key_and_csr().expect("csr");
        assert!(k.key_pem.contains("PRIVATE KEY"));
        assert!(!k.csr_der.is_empty());
    }
}
