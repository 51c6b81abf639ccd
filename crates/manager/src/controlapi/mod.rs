//! The control API: what `orch node|cluster|service` commands call. Served by every manager
//! over mTLS (manager certificates only) and by every node's unix socket; followers forward to
//! the leader, which validates, commits through raft, and answers from a linearizable view.

pub mod cluster;
pub mod data;
pub mod network;
pub mod node;
pub mod service;

use std::sync::Arc;

use orch_api::pb::control_client::ControlClient;
use orch_api::pb::control_server::Control;
use orch_api::pb::*;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::ca::auth::require_manager;
use crate::ctx::{ManagerCtx, ManagerSlot, Route, FORWARDED};

/// Refuses an update made from a read older than the object (`read` 0: not checked).
pub(crate) fn check_read_version(
    kind: &'static str,
    id: &str,
    read: u64,
    meta: Option<&Meta>,
) -> crate::error::Result<()> {
    let current = meta.map_or(0, |m| m.version);
    if read != 0 && read != current {
        return Err(crate::error::ManagerError::Propose(
            crate::raft::node::ProposeError::Rejected(
                crate::state::store::ApplyError::VersionConflict {
                    kind,
                    id: id.to_string(),
                    read,
                    current,
                },
            ),
        ));
    }
    Ok(())
}

/// Whether the node is a manager by its certificate, its manager stack up or not.
pub type IsManager = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
pub struct ControlApi {
    slot: ManagerSlot,
    is_manager: Option<IsManager>,
}

impl ControlApi {
    pub fn new(slot: ManagerSlot) -> Self {
        ControlApi {
            slot,
            is_manager: None,
        }
    }

    /// The node's API: with no manager stack running, a manager node (by `is_manager`) says
    /// it is not ready instead of claiming to be a worker.
    pub fn for_node(slot: ManagerSlot, is_manager: IsManager) -> Self {
        ControlApi {
            slot,
            is_manager: Some(is_manager),
        }
    }

    fn ctx(&self) -> Result<Arc<ManagerCtx>, Status> {
        self.slot.load_full().ok_or_else(|| {
            if self.is_manager.as_ref().is_some_and(|m| m()) {
                Status::unavailable(orch_api::MANAGER_NOT_READY)
            } else {
                Status::failed_precondition(orch_api::NOT_A_MANAGER)
            }
        })
    }
}

/// Checks the caller is a manager (or local), then either returns the context (this manager
/// is the leader) or forwards the call to the leader and returns its answer.
macro_rules! leader_or_forward {
    ($self:ident, $request:ident, $method:ident) => {{
        let ctx = $self.ctx()?;
        require_manager(&$request, &ctx.store.view())?;
        match ctx.route(&$request).await? {
            Route::Local => ctx,
            Route::Forward(channel, leader) => {
                let mut forwarded = Request::new($request.into_inner());
                forwarded
                    .metadata_mut()
                    .insert(FORWARDED, MetadataValue::from_static("1"));
                let mut client = ControlClient::new(channel)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(64 << 20);
                return ctx.forwarded(leader, client.$method(forwarded)).await;
            }
        }
    }};
}

type BoxedLogs = std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlApi {
    type ServiceLogsStream = BoxedLogs;

    async fn service_logs(
        &self,
        request: Request<ServiceLogsRequest>,
    ) -> Result<Response<BoxedLogs>, Status> {
        let ctx = self.ctx()?;
        require_manager(&request, &ctx.store.view())?;
        if let Route::Forward(channel, leader) = ctx.route(&request).await? {
            let mut forwarded = Request::new(request.into_inner());
            forwarded
                .metadata_mut()
                .insert(FORWARDED, MetadataValue::from_static("1"));
            let mut client = ControlClient::new(channel);
            let stream = ctx
                .forwarded(leader, client.service_logs(forwarded))
                .await?
                .into_inner();
            return Ok(Response::new(Box::pin(stream) as BoxedLogs));
        }
        let view = ctx.read_view().await?;
        let stream = crate::dispatcher::logs::subscribe(
            ctx.dispatcher.clone(),
            &view,
            request.into_inner(),
        )?;
        Ok(Response::new(Box::pin(stream) as BoxedLogs))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let ctx = leader_or_forward!(self, request, list_nodes);
        Ok(Response::new(node::list(&ctx).await?))
    }

    async fn get_node(&self, request: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        let ctx = leader_or_forward!(self, request, get_node);
        Ok(Response::new(
            node::get(&ctx, &request.get_ref().node).await?,
        ))
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<Node>, Status> {
        let ctx = leader_or_forward!(self, request, update_node);
        Ok(Response::new(
            node::update(&ctx, request.into_inner()).await?,
        ))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ctx = leader_or_forward!(self, request, remove_node);
        node::remove(&ctx, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn get_cluster(&self, request: Request<Empty>) -> Result<Response<Cluster>, Status> {
        let ctx = leader_or_forward!(self, request, get_cluster);
        Ok(Response::new(cluster::get(&ctx).await?))
    }

    async fn update_cluster(
        &self,
        request: Request<UpdateClusterRequest>,
    ) -> Result<Response<Cluster>, Status> {
        let ctx = leader_or_forward!(self, request, update_cluster);
        Ok(Response::new(
            cluster::update(&ctx, request.into_inner()).await?,
        ))
    }

    async fn create_service(
        &self,
        request: Request<CreateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let ctx = leader_or_forward!(self, request, create_service);
        Ok(Response::new(
            service::create(&ctx, request.into_inner()).await?,
        ))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let ctx = leader_or_forward!(self, request, get_service);
        Ok(Response::new(
            service::get(&ctx, &request.get_ref().service).await?,
        ))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let ctx = leader_or_forward!(self, request, list_services);
        Ok(Response::new(service::list(&ctx).await?))
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let ctx = leader_or_forward!(self, request, update_service);
        Ok(Response::new(
            service::update(&ctx, request.into_inner()).await?,
        ))
    }

    async fn remove_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ctx = leader_or_forward!(self, request, remove_service);
        service::remove(&ctx, &request.get_ref().service).await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_data(
        &self,
        request: Request<CreateDataRequest>,
    ) -> Result<Response<DataObject>, Status> {
        let ctx = leader_or_forward!(self, request, create_data);
        Ok(Response::new(
            data::create(&ctx, request.into_inner()).await?,
        ))
    }

    async fn get_data(
        &self,
        request: Request<GetDataRequest>,
    ) -> Result<Response<DataObject>, Status> {
        let ctx = leader_or_forward!(self, request, get_data);
        let req = request.into_inner();
        Ok(Response::new(data::get(&ctx, req.kind, &req.name).await?))
    }

    async fn list_data(
        &self,
        request: Request<ListDataRequest>,
    ) -> Result<Response<ListDataResponse>, Status> {
        let ctx = leader_or_forward!(self, request, list_data);
        Ok(Response::new(
            data::list(&ctx, request.get_ref().kind).await?,
        ))
    }

    async fn update_data(
        &self,
        request: Request<UpdateDataRequest>,
    ) -> Result<Response<DataObject>, Status> {
        let ctx = leader_or_forward!(self, request, update_data);
        Ok(Response::new(
            data::update(&ctx, request.into_inner()).await?,
        ))
    }

    async fn remove_data(
        &self,
        request: Request<GetDataRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ctx = leader_or_forward!(self, request, remove_data);
        let req = request.into_inner();
        data::remove(&ctx, req.kind, &req.name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn rotate_data(
        &self,
        request: Request<RotateDataRequest>,
    ) -> Result<Response<RotateDataResponse>, Status> {
        let ctx = leader_or_forward!(self, request, rotate_data);
        Ok(Response::new(
            data::rotate(&ctx, request.into_inner()).await?,
        ))
    }

    async fn create_network(
        &self,
        request: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let ctx = leader_or_forward!(self, request, create_network);
        Ok(Response::new(
            network::create(&ctx, request.into_inner()).await?,
        ))
    }

    async fn get_network(
        &self,
        request: Request<GetNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let ctx = leader_or_forward!(self, request, get_network);
        Ok(Response::new(
            network::get(&ctx, &request.get_ref().network).await?,
        ))
    }

    async fn list_networks(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let ctx = leader_or_forward!(self, request, list_networks);
        Ok(Response::new(network::list(&ctx).await?))
    }

    async fn remove_network(
        &self,
        request: Request<GetNetworkRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ctx = leader_or_forward!(self, request, remove_network);
        network::remove(&ctx, &request.get_ref().network).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ctx = leader_or_forward!(self, request, list_tasks);
        Ok(Response::new(
            service::list_tasks(&ctx, request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manager whose manager stack is not up (it is starting after a restart) used to
    /// answer that it was not a manager at all, as a worker does.
    #[test]
    fn regression_a_starting_manager_said_it_was_a_worker() {
        let slot: ManagerSlot = Default::default();
        let manager = ControlApi::for_node(slot.clone(), Arc::new(|| true));
        let err = manager.ctx().err().expect("no manager stack yet");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.message(), orch_api::MANAGER_NOT_READY);
        let worker = ControlApi::for_node(slot, Arc::new(|| false));
        let err = worker.ctx().err().expect("a worker has no manager stack");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert_eq!(err.message(), orch_api::NOT_A_MANAGER);
    }
}
