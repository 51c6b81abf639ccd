//! `/tasks`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use orch_api::pb::{Node, Service, Task, TaskState};
use serde_json::Value;

use super::ok_json;
use crate::backend::Backend;
use crate::convert::objects;
use crate::error::{ApiError, ApiResult};
use crate::query::{self, Filters};
use crate::read;

const FILTERS: &[&str] = &[
    "_up-to-date",
    "desired-state",
    "id",
    "label",
    "name",
    "node",
    "runtime",
    "service",
];

/// Full ID, exact name, or ID prefix: what `service=` and `node=` filters name.
fn refers_to(reference: &str, id: &str, name: &str) -> bool {
    id == reference || name == reference || id.starts_with(reference)
}

/// What the task filters need to know beyond the tasks.
pub struct Context {
    pub services: HashMap<String, Service>,
    pub nodes: HashMap<String, Node>,
    pub networks: HashMap<String, String>,
}

impl Context {
    pub async fn load(backend: &Backend) -> ApiResult<Context> {
        let mut control = backend.control();
        let services = read::services(&mut control).await?;
        let nodes = read::nodes(&mut control).await?;
        Ok(Context {
            services: services.into_iter().map(|s| (s.id.clone(), s)).collect(),
            nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
            networks: read::network_names(&mut control).await?,
        })
    }

    fn service_name(&self, t: &Task) -> String {
        self.services
            .get(&t.service_id)
            .and_then(|s| s.spec.as_ref())
            .map_or_else(|| t.service_name.clone(), |s| s.name.clone())
    }

    fn task_name(&self, t: &Task) -> String {
        objects::task_name(&self.service_name(t), t)
    }

    fn up_to_date(&self, t: &Task) -> bool {
        self.services
            .get(&t.service_id)
            .and_then(|s| s.spec.as_ref())
            .is_some_and(|spec| t.is_current(spec))
    }
}

fn desired_state_matches(t: &Task, wanted: &str) -> bool {
    let desired = t.desired_state();
    match wanted {
        "running" => desired == TaskState::Running,
        "shutdown" => desired >= TaskState::Shutdown,
        "accepted" => desired == TaskState::Accepted,
        other => objects::task_state_name(desired) == other,
    }
}

fn matches(f: &Filters, ctx: &Context, t: &Task) -> bool {
    let service_name = ctx.service_name(t);
    let hostname = ctx
        .nodes
        .get(&t.node_id)
        .and_then(|n| n.description.as_ref())
        .map(|d| d.hostname.clone())
        .unwrap_or_default();
    f.any("service", |v| refers_to(v, &t.service_id, &service_name))
        && f.any("node", |v| !t.node_id.is_empty() && refers_to(v, &t.node_id, &hostname))
        && f.any("id", |v| t.id.starts_with(v))
        && f.any("name", |v| ctx.task_name(t).starts_with(v))
        && f.any("desired-state", |v| desired_state_matches(t, v))
        && f.any("runtime", |v| v == "container")
        && f.any("_up-to-date", |v| (v == "true" || v == "1") == ctx.up_to_date(t))
        // A task's labels are its service's, as swarmkit's task filter reads them.
        && f.labels("label", &t.service_labels)
}

pub async fn list(
    State(backend): State<Backend>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    let filters = Filters::parse(&q, FILTERS)?;
    let ctx = Context::load(&backend).await?;
    let tasks = read::tasks(&mut backend.control()).await?;
    Ok(ok_json(Value::Array(
        tasks
            .iter()
            .filter(|t| matches(&filters, &ctx, t))
            .map(|t| objects::task(t, &ctx.networks))
            .collect(),
    )))
}

/// A task by full ID or unique ID prefix.
pub async fn find(backend: &Backend, reference: &str) -> ApiResult<Task> {
    let tasks = read::tasks(&mut backend.control()).await?;
    if let Some(t) = tasks.iter().find(|t| t.id == reference) {
        return Ok(t.clone());
    }
    let found: Vec<&Task> = tasks
        .iter()
        .filter(|t| !reference.is_empty() && t.id.starts_with(reference))
        .collect();
    match found.as_slice() {
        [t] => Ok((*t).clone()),
        [] => Err(ApiError::not_found(format!("task {reference} not found"))),
        many => Err(ApiError::bad_request(format!(
            "task {reference} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

pub async fn inspect(
    State(backend): State<Backend>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let task = find(&backend, &id).await?;
    let networks = read::network_names(&mut backend.control()).await?;
    Ok(ok_json(objects::task(&task, &networks)))
}
