//! The cluster's certificate authority: the root CA (ECDSA P-256, 20 years), node
//! certificates (CN node ID, OU role, O cluster ID; SAN role and node ID), and the join tokens
//! that let a new node ask for one.

pub mod auth;
pub mod service;

use std::time::Duration;

use orch_api::pb::NodeRole;
use orch_api::tls::role_ou;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateSigningRequestDer;
use time::OffsetDateTime;

pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
/// The shortest node certificate lifetime accepted (swarm's minimum is 1h; shorter ones are
/// allowed for testing renewal).
pub const MIN_CERT_EXPIRY: Duration = Duration::from_secs(60);
/// Certificates start this far in the past, for clocks slightly behind the CA's.
const BACKDATE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate signing request: {0}")]
    BadCsr(String),
    #[error("CA: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A root CA certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct RootCa {
    pub cert_pem: String,
    pub key_pem: String,
}

fn offset(t: OffsetDateTime, d: Duration, forward: bool) -> OffsetDateTime {
    let d = time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
    if forward {
        t.checked_add(d).unwrap_or(t)
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}

impl RootCa {
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "swarm-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = offset(now, BACKDATE, false);
        params.not_after = offset(now, ROOT_CA_VALIDITY, true);
        let cert = params.self_signed(&key)?;
        Ok(RootCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    fn node_params(
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
        expiry: Duration,
    ) -> Result<CertificateParams, CaError> {
        let ou = role_ou(role);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![
            SanType::DnsName(
                ou.try_into()
                    .map_err(|e: rcgen::Error| CaError::BadCsr(e.to_string()))?,
            ),
            SanType::DnsName(
                node_id
                    .try_into()
                    .map_err(|e: rcgen::Error| CaError::BadCsr(e.to_string()))?,
            ),
        ];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, ou);
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = offset(now, BACKDATE, false);
        params.not_after = offset(now, expiry, true);
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        Ok(params)
    }

    /// Signs a node certificate for the key in `csr_der`. The CSR only proves possession of
    /// the key: the subject comes from the CA, never from the request.
    pub fn issue(
        &self,
        csr_der: &[u8],
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
        expiry: Duration,
    ) -> Result<String, CaError> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            csr_der.to_vec(),
        ))
        .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let params = Self::node_params(node_id, role, cluster_id, expiry)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok(cert.pem())
    }

    /// Generates a key and signs its certificate in one go (the first manager, at init).
    pub fn issue_with_key(
        &self,
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
        expiry: Duration,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = Self::node_params(node_id, role, cluster_id, expiry)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_api::tls::{cert_info_from_pem, new_key_and_csr, NodeIdentity, TlsContext};

    #[test]
    fn issued_certificate_carries_identity_role_and_expiry() {
        let ca = RootCa::generate().expect("ca");
        let csr = new_key_and_csr().expect("csr");
        let expiry = Duration::from_secs(48 * 3600);
        let pem = ca
            .issue(&csr.csr_der, "node1", NodeRole::Worker, "cluster1", expiry)
            .expect("issue");
        let info = cert_info_from_pem(&pem).expect("parse");
        assert_eq!(info.node_id, "node1");
        assert_eq!(info.role, NodeRole::Worker);
        assert_eq!(info.cluster_id, "cluster1");
        let lifetime = info.not_after - info.not_before;
        assert!(
            (lifetime - (48 * 3600 + 5)).abs() <= 2,
            "lifetime {lifetime}"
        );
        // The key in the CSR matches the certificate: the pair loads as an identity.
        let identity = NodeIdentity::from_pem(&pem, &csr.key_pem).expect("identity");
        TlsContext::new(&ca.cert_pem, std::sync::Arc::new(identity)).expect("context");
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ca = RootCa::generate().expect("ca");
        let err = ca
            .issue(
                b"not a csr",
                "n",
                NodeRole::Worker,
                "c",
                DEFAULT_CERT_EXPIRY,
            )
            .expect_err("refused");
        assert!(matches!(err, CaError::BadCsr(_)));
    }
}
