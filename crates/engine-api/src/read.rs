//! Whole-cluster reads through the control API, as the routes and the event poller need them.

use std::collections::HashMap;

use orch_api::pb::control_client::ControlClient;
use orch_api::pb::{
    DataKind, DataObject, Empty, ListDataRequest, ListNodesRequest, ListServicesRequest,
    ListServicesResponse, ListTasksRequest, Network, Node, Service, Task,
};
use tonic::transport::Channel;
use tonic::Status;

pub type Control = ControlClient<Channel>;

/// The services with their task counts.
pub async fn services_with_counts(control: &mut Control) -> Result<ListServicesResponse, Status> {
    Ok(control
        .list_services(ListServicesRequest {})
        .await?
        .into_inner())
}

pub async fn services(control: &mut Control) -> Result<Vec<Service>, Status> {
    Ok(services_with_counts(control).await?.services)
}

pub async fn nodes(control: &mut Control) -> Result<Vec<Node>, Status> {
    Ok(control
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .nodes)
}

pub async fn tasks(control: &mut Control) -> Result<Vec<Task>, Status> {
    Ok(control
        .list_tasks(ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks)
}

pub async fn networks(control: &mut Control) -> Result<Vec<Network>, Status> {
    Ok(control.list_networks(Empty {}).await?.into_inner().networks)
}

/// Network names by ID, for tasks' attachments.
pub async fn network_names(control: &mut Control) -> Result<HashMap<String, String>, Status> {
    Ok(networks(control)
        .await?
        .into_iter()
        .map(|n| (n.id.clone(), n.spec.map(|s| s.name).unwrap_or_default()))
        .collect())
}

/// The cluster's root CA, which every node trusts (a node's `TLSInfo.TrustRoot`); empty when
/// it cannot be read.
pub async fn trust_root(control: &mut Control) -> String {
    control
        .get_cluster(Empty {})
        .await
        .ok()
        .and_then(|c| c.into_inner().root_ca)
        .map(|r| r.ca_cert_pem)
        .unwrap_or_default()
}

pub async fn data(control: &mut Control, kind: DataKind) -> Result<Vec<DataObject>, Status> {
    Ok(control
        .list_data(ListDataRequest { kind: kind as i32 })
        .await?
        .into_inner()
        .objects)
}
