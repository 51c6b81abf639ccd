//! Mutual TLS at the handshake: the server accepts certificates of its own CA only, and
//! only while they are valid.

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::NodeRole;
use orch_api::tls::{NodeIdentity, TlsContext, MANAGER_SERVER_NAME};
use orch_manager::ca::RootCa;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn context(ca: &RootCa, node: &str, role: NodeRole, cert_key: (String, String)) -> TlsContext {
    let _ = node;
    let _ = role;
    TlsContext::new(
        &ca.cert_pem,
        Arc::new(NodeIdentity::from_pem(&cert_key.0, &cert_key.1).expect("identity")),
    )
    .expect("context")
}

/// A certificate signed by `ca` that expired an hour ago.
fn expired(ca: &RootCa) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["swarm-worker".to_string()]).expect("params");
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "old");
    dn.push(rcgen::DnType::OrganizationalUnitName, "swarm-worker");
    dn.push(rcgen::DnType::OrganizationName, "c");
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(3);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &ca.cert_pem,
        rcgen::KeyPair::from_pem(&ca.key_pem).expect("ca key"),
    )
    .expect("issuer");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// Runs one handshake plus a byte each way; Ok if the server accepted the client.
async fn handshake(server: &TlsContext, client: &TlsContext) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server.server_config().expect("server config"));
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        if tls.get_ref().1.peer_certificates().is_none() {
            return Err("no client certificate".to_string());
        }
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    let connector = TlsConnector::from(client.client_config().expect("client config"));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let client_result = async {
        let mut tls = connector
            .connect(
                ServerName::try_from(MANAGER_SERVER_NAME).expect("name"),
                tcp,
            )
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    let client_result = tokio::time::timeout(Duration::from_secs(5), client_result)
        .await
        .map_err(|_| "timeout".to_string())?;
    let server_result = server_side.await.map_err(|e| e.to_string())?;
    server_result.and(client_result)
}

#[tokio::test]
async fn only_valid_certificates_of_this_ca_are_accepted() {
    let ca = RootCa::generate().expect("ca");
    let hour = Duration::from_secs(3600);
    let server = context(
        &ca,
        "srv",
        NodeRole::Manager,
        ca.issue_with_key("srv", NodeRole::Manager, "c", hour)
            .expect("issue"),
    );
    let good = context(
        &ca,
        "w",
        NodeRole::Worker,
        ca.issue_with_key("w", NodeRole::Worker, "c", hour)
            .expect("issue"),
    );
    handshake(&server, &good)
        .await
        .expect("a valid certificate is accepted");

    let err = handshake(
        &server,
        &context(&ca, "old", NodeRole::Worker, expired(&ca)),
    )
    .await
    .expect_err("expired");
    assert!(
        err.to_lowercase().contains("expired") || err.contains("alert") || err.contains("Expired"),
        "{err}"
    );

    let other = RootCa::generate().expect("other ca");
    let foreign = TlsContext::new(
        &ca.cert_pem,
        Arc::new({
            let (cert, key) = other
                .issue_with_key("x", NodeRole::Manager, "c", hour)
                .expect("issue");
            NodeIdentity::from_pem(&cert, &key).expect("identity")
        }),
    )
    .expect("context");
    handshake(&server, &foreign)
        .await
        .expect_err("a certificate of another CA is refused");

    // A worker certificate cannot serve as a manager: clients verify the swarm-manager name.
    let worker_server = context(
        &ca,
        "w2",
        NodeRole::Worker,
        ca.issue_with_key("w2", NodeRole::Worker, "c", hour)
            .expect("issue"),
    );
    handshake(&worker_server, &good)
        .await
        .expect_err("a worker is not a manager");
}
