//! The Raft gRPC service: peers' message streams, and joining or leaving the raft cluster.
//! Manager certificates only.

use std::sync::Arc;

use orch_api::pb::raft_client::RaftClient;
use orch_api::pb::raft_server::Raft;
use orch_api::pb::store_action::Action;
use orch_api::pb::{Empty, NodeRole, RaftBatch, RaftJoinRequest, RaftJoinResponse, RaftMember};
use orch_api::tls::CertInfo;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use super::membership::{can_remove_member, step_down, QUORUM_LOSS};
use super::transport::decode_batch;
use crate::ca::auth::{require_node, WORKER_DENIED};
use crate::ctx::{ManagerCtx, Route, FORWARDED};

pub struct RaftService {
    ctx: Arc<ManagerCtx>,
}

impl RaftService {
    pub fn new(ctx: Arc<ManagerCtx>) -> Self {
        RaftService { ctx }
    }

    fn require_manager_cert<T>(&self, request: &Request<T>) -> Result<CertInfo, Status> {
        let cert = require_node(request, &self.ctx.store.view())?;
        if cert.role != NodeRole::Manager {
            return Err(Status::permission_denied(WORKER_DENIED));
        }
        Ok(cert)
    }
}

fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn stream(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<Empty>, Status> {
        let cert = self.require_manager_cert(&request)?;
        let mut inbound = request.into_inner();
        let mut verified_from = 0u64;
        while let Some(batch) = inbound.message().await? {
            if batch.from != verified_from {
                // The sender must be the raft member its certificate names.
                // A manager that just joined has no state to check against until the leader's
                // snapshot arrives; its peers' certificates are CA-signed manager ones.
                let view = self.ctx.store.view();
                let ok = view.cluster().is_none()
                    || view
                        .node(&cert.node_id)
                        .and_then(|n| n.manager_status.as_ref())
                        .is_some_and(|m| m.raft_id == batch.from);
                if !ok {
                    return Err(Status::permission_denied(format!(
                        "node {} is not raft member {}",
                        cert.node_id, batch.from
                    )));
                }
                if view.cluster().is_some() {
                    verified_from = batch.from;
                }
            }
            self.ctx.raft.step(decode_batch(&batch));
        }
        Ok(Response::new(Empty {}))
    }

    async fn join(
        &self,
        request: Request<RaftJoinRequest>,
    ) -> Result<Response<RaftJoinResponse>, Status> {
        let cert = self.require_manager_cert(&request)?;
        if let Route::Forward(channel, leader) = self.ctx.route(&request).await? {
            // The leader must know who is joining: it reads the joiner's ID from our metadata.
            let mut fwd = forwarded(request.into_inner());
            fwd.metadata_mut().insert(
                "orch-joining-node",
                cert.node_id
                    .parse()
                    .map_err(|_| Status::invalid_argument("bad node ID"))?,
            );
            let mut client = RaftClient::new(channel);
            return self.ctx.forwarded(leader, client.join(fwd)).await;
        }
        let node_id = match request.metadata().get("orch-joining-node") {
            Some(v) if request.metadata().contains_key(FORWARDED) => v
                .to_str()
                .map_err(|_| Status::invalid_argument("bad node ID"))?
                .to_string(),
            _ => cert.node_id.clone(),
        };
        let addr = request.into_inner().addr;
        if addr.is_empty() {
            return Err(Status::invalid_argument(
                "a joining manager must give its address",
            ));
        }
        let view = self.ctx.read_view().await?;
        let node = view
            .node(&node_id)
            .ok_or_else(|| Status::not_found(format!("node {node_id} not found")))?;
        if node
            .spec
            .as_ref()
            .map_or(NodeRole::Worker, |s| s.desired_role())
            != NodeRole::Manager
        {
            return Err(Status::failed_precondition(format!(
                "node {node_id} is not a manager"
            )));
        }
        let status = self.ctx.raft.status();
        if let Some(ms) = node
            .manager_status
            .as_ref()
            .filter(|m| status.voters.contains(&m.raft_id))
        {
            // Already a member (a retried join): answer the same.
            return Ok(Response::new(RaftJoinResponse {
                raft_id: ms.raft_id,
                members: view.members(),
                data_key: self.ctx.data_key.as_bytes().to_vec(),
            }));
        }
        let raft_id = loop {
            let id = rand::random::<u64>() >> 1;
            if id != 0 && !status.voters.contains(&id) {
                break id;
            }
        };
        let member = RaftMember {
            raft_id,
            node_id: node_id.clone(),
            addr,
        };
        self.ctx
            .raft
            .change_membership(&member, true)
            .await
            .map_err(crate::error::ManagerError::from)?;
        info!(node = %node_id, raft_id, "manager joined raft");
        Ok(Response::new(RaftJoinResponse {
            raft_id,
            members: self.ctx.store.view().members(),
            data_key: self.ctx.data_key.as_bytes().to_vec(),
        }))
    }

    async fn leave(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        let cert = self.require_manager_cert(&request)?;
        let node_id = match request.metadata().get("orch-leaving-node") {
            Some(v) if request.metadata().contains_key(FORWARDED) => v
                .to_str()
                .map_err(|_| Status::invalid_argument("bad node ID"))?
                .to_string(),
            _ => cert.node_id.clone(),
        };
        if node_id == self.ctx.node_id && self.ctx.raft.is_leader() {
            step_down(&self.ctx.raft)
                .await
                .map_err(Status::unavailable)?;
        }
        if let Route::Forward(channel, leader) = self.ctx.route(&request).await? {
            let mut fwd = forwarded(Empty {});
            fwd.metadata_mut().insert(
                "orch-leaving-node",
                node_id
                    .parse()
                    .map_err(|_| Status::invalid_argument("bad node ID"))?,
            );
            let mut client = RaftClient::new(channel);
            return self.ctx.forwarded(leader, client.leave(fwd)).await;
        }
        let view = self.ctx.read_view().await?;
        let node = view
            .node(&node_id)
            .ok_or_else(|| Status::not_found(format!("node {node_id} not found")))?;
        if let Some(ms) = node.manager_status.as_ref() {
            let member = RaftMember {
                raft_id: ms.raft_id,
                node_id: node_id.clone(),
                addr: ms.addr.clone(),
            };
            if !can_remove_member(&self.ctx.raft.status(), ms.raft_id) {
                return Err(Status::failed_precondition(QUORUM_LOSS));
            }
            self.ctx
                .raft
                .change_membership(&member, false)
                .await
                .map_err(crate::error::ManagerError::from)?;
        }
        // A node that left is a worker that is gone: it shows Down until `node rm`.
        if let Some(node) = self.ctx.store.view().node(&node_id) {
            let mut n = (**node).clone();
            n.role = NodeRole::Worker as i32;
            if let Some(spec) = n.spec.as_mut() {
                spec.desired_role = NodeRole::Worker as i32;
            }
            self.ctx.propose(vec![Action::UpdateNode(n)]).await?;
        }
        info!(node = %node_id, "manager left raft");
        Ok(Response::new(Empty {}))
    }
}
