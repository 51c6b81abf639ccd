//! Who is calling: the local administrator (unix socket), a node with a verified certificate,
//! or an anonymous joiner. Roles come from the certificate; certificates of another cluster or
//! of a removed node are refused.

use orch_api::pb::NodeRole;
use orch_api::tls::CertInfo;
use orch_api::transport::peer_of;
use tonic::{Request, Status};

use crate::state::store::Tables;

#[derive(Debug, Clone)]
pub enum Caller {
    /// The node's unix socket: the machine's administrator.
    Local,
    Node(CertInfo),
    /// TLS without a client certificate: only the join RPCs accept it.
    Anonymous,
}

pub const WORKER_DENIED: &str =
    "Permission denied: unauthorized peer role: remote certificate not part of organizational unit swarm-manager";

pub fn identify<T>(request: &Request<T>, view: &Tables) -> Result<Caller, Status> {
    let Some(peer) = peer_of(request) else {
        return Err(Status::unauthenticated("no connection information"));
    };
    if peer.local {
        return Ok(Caller::Local);
    }
    let Some(cert) = &peer.cert else {
        return Ok(Caller::Anonymous);
    };
    if let Some(cluster) = view.cluster() {
        if cert.cluster_id != cluster.id {
            return Err(Status::permission_denied(
                "Permission denied: certificate belongs to another swarm",
            ));
        }
        if cluster.removed_nodes.iter().any(|id| id == &cert.node_id) {
            return Err(Status::permission_denied(format!(
                "Permission denied: node {} was removed from the swarm",
                cert.node_id
            )));
        }
    }
    Ok(Caller::Node(cert.clone()))
}

/// Local callers and managers pass; workers get PermissionDenied.
pub fn require_manager<T>(request: &Request<T>, view: &Tables) -> Result<Caller, Status> {
    let caller = identify(request, view)?;
    match &caller {
        Caller::Local => Ok(caller),
        Caller::Node(cert) if cert.role == NodeRole::Manager => {
            // A demoted manager keeps its old certificate until it renews: the store decides.
            match view.node(&cert.node_id) {
                Some(node) if node.role() != NodeRole::Manager => {
                    Err(Status::permission_denied(WORKER_DENIED))
                }
                _ => Ok(caller),
            }
        }
        Caller::Node(_) => Err(Status::permission_denied(WORKER_DENIED)),
        Caller::Anonymous => Err(Status::unauthenticated("a node certificate is required")),
    }
}

/// Any node of this cluster (worker or manager) with a valid certificate.
pub fn require_node<T>(request: &Request<T>, view: &Tables) -> Result<CertInfo, Status> {
    match identify(request, view)? {
        Caller::Node(cert) => {
            if view.cluster().is_some() && view.node(&cert.node_id).is_none() {
                return Err(Status::permission_denied(format!(
                    "Permission denied: node {} is not part of this swarm",
                    cert.node_id
                )));
            }
            Ok(cert)
        }
        Caller::Local => Err(Status::permission_denied(
            "this RPC needs a node certificate",
        )),
        Caller::Anonymous => Err(Status::unauthenticated("a node certificate is required")),
    }
}
