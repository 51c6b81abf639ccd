//! Service operations (the services issue fills these in).

use orch_api::pb::{
    CreateServiceRequest, ListServicesResponse, ListTasksRequest, ListTasksResponse, Service,
    UpdateServiceRequest,
};

use crate::error::{ManagerError, Result};
use crate::manager::ManagerCtx;

fn unimplemented<T>() -> Result<T> {
    Err(ManagerError::FailedPrecondition(
        "services are not implemented yet".into(),
    ))
}

pub async fn create(_ctx: &ManagerCtx, _req: CreateServiceRequest) -> Result<Service> {
    unimplemented()
}

pub async fn get(_ctx: &ManagerCtx, _reference: &str) -> Result<Service> {
    unimplemented()
}

pub async fn list(_ctx: &ManagerCtx) -> Result<ListServicesResponse> {
    unimplemented()
}

pub async fn update(_ctx: &ManagerCtx, _req: UpdateServiceRequest) -> Result<Service> {
    unimplemented()
}

pub async fn remove(_ctx: &ManagerCtx, _reference: &str) -> Result<()> {
    unimplemented()
}

pub async fn list_tasks(_ctx: &ManagerCtx, _req: ListTasksRequest) -> Result<ListTasksResponse> {
    unimplemented()
}
