//! The CA gRPC service. Fetching the root certificate and exchanging a join token for a node
//! certificate are the only calls open to a client without a certificate; renewal needs the
//! node's current certificate and re-issues it with the role the store holds.

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::ca_client::CaClient;
use orch_api::pb::ca_server::Ca;
use orch_api::pb::store_action::Action;
use orch_api::pb::{
    Cluster, Empty, IssueNodeCertificateRequest, Node, NodeCertificate, NodeDescription, NodeRole,
    NodeSpec, NodeState, NodeStatus, Peer, RenewNodeCertificateRequest, RootCaCertificate,
};
use orch_api::token::constant_time_eq;
use tonic::{Request, Response, Status};
use tracing::info;

use super::auth::require_node;
use super::{RootCa, DEFAULT_CERT_EXPIRY};
use crate::ctx::{ManagerCtx, Route, FORWARDED};
use crate::state::store::Tables;

pub const INVALID_TOKEN: &str = "A valid join token is necessary to join this cluster";

pub struct CaService {
    ctx: Arc<ManagerCtx>,
}

impl CaService {
    pub fn new(ctx: Arc<ManagerCtx>) -> Self {
        CaService { ctx }
    }
}

fn cluster_of(view: &Tables) -> Result<Arc<Cluster>, Status> {
    view.cluster()
        .cloned()
        .ok_or_else(|| Status::unavailable("the cluster is not initialized yet"))
}

pub fn root_ca_of(cluster: &Cluster) -> Result<RootCa, Status> {
    let root = cluster
        .root_ca
        .as_ref()
        .ok_or_else(|| Status::internal("cluster has no root CA"))?;
    Ok(RootCa {
        cert_pem: root.ca_cert_pem.clone(),
        key_pem: root.ca_key_pem.clone(),
    })
}

pub fn cert_expiry(cluster: &Cluster) -> Duration {
    cluster
        .spec
        .as_ref()
        .map(|s| s.node_cert_expiry)
        .filter(|e| *e > 0)
        .map(|e| Duration::from_nanos(e as u64))
        .unwrap_or(DEFAULT_CERT_EXPIRY)
}

fn managers(view: &Tables) -> Vec<Peer> {
    view.members()
        .into_iter()
        .map(|m| Peer {
            node_id: m.node_id,
            addr: m.addr,
        })
        .collect()
}

#[tonic::async_trait]
impl Ca for CaService {
    async fn get_root_ca_certificate(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<RootCaCertificate>, Status> {
        Ok(Response::new(RootCaCertificate {
            cert_pem: self.ctx.tls.root_ca_pem.clone(),
        }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<NodeCertificate>, Status> {
        if let Route::Forward(channel, leader) = self.ctx.route(&request).await? {
            let mut fwd = Request::new(request.into_inner());
            fwd.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            let mut client = CaClient::new(channel);
            return self
                .ctx
                .forwarded(leader, client.issue_node_certificate(fwd))
                .await;
        }
        let req = request.into_inner();
        // A linearizable read: a token rotated a moment ago is already refused.
        let view = self.ctx.read_view().await?;
        let cluster = cluster_of(&view)?;
        let tokens = cluster
            .root_ca
            .as_ref()
            .and_then(|r| r.join_tokens.clone())
            .unwrap_or_default();
        let role = if !tokens.manager.is_empty() && constant_time_eq(&req.token, &tokens.manager) {
            NodeRole::Manager
        } else if !tokens.worker.is_empty() && constant_time_eq(&req.token, &tokens.worker) {
            NodeRole::Worker
        } else {
            return Err(Status::invalid_argument(INVALID_TOKEN));
        };
        let node_id = orch_api::ids::new_id();
        let ca = root_ca_of(&cluster)?;
        let cert_pem = ca
            .issue(&req.csr, &node_id, role, &cluster.id, cert_expiry(&cluster))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let node = Node {
            id: node_id.clone(),
            spec: Some(NodeSpec {
                labels: Default::default(),
                desired_role: role as i32,
                availability: req.availability,
            }),
            description: Some(NodeDescription {
                hostname: req.hostname.clone(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::Unknown as i32,
                ..Default::default()
            }),
            role: role as i32,
            ..Default::default()
        };
        self.ctx.propose(vec![Action::CreateNode(node)]).await?;
        info!(node = %node_id, hostname = %req.hostname, ?role, "issued certificate to a joining node");
        Ok(Response::new(NodeCertificate {
            node_id,
            cluster_id: cluster.id.clone(),
            cert_pem,
            ca_pem: ca.cert_pem,
            role: role as i32,
            managers: managers(&self.ctx.store.view()),
        }))
    }

    async fn renew_node_certificate(
        &self,
        request: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<NodeCertificate>, Status> {
        let view = self.ctx.store.view();
        let cert = require_node(&request, &view)?;
        let cluster = cluster_of(&view)?;
        let node = view.node(&cert.node_id).ok_or_else(|| {
            Status::permission_denied(format!("node {} is not part of this swarm", cert.node_id))
        })?;
        let role = NodeRole::try_from(node.role).unwrap_or(NodeRole::Worker);
        let ca = root_ca_of(&cluster)?;
        let cert_pem = ca
            .issue(
                &request.get_ref().csr,
                &cert.node_id,
                role,
                &cluster.id,
                cert_expiry(&cluster),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        info!(node = %cert.node_id, ?role, "renewed node certificate");
        Ok(Response::new(NodeCertificate {
            node_id: cert.node_id,
            cluster_id: cluster.id.clone(),
            cert_pem,
            ca_pem: ca.cert_pem,
            role: role as i32,
            managers: managers(&view),
        }))
    }
}
