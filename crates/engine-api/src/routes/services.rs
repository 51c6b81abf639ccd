//! `/services`.

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    CreateServiceRequest, GetServiceRequest, Service, ServiceSpec, UpdateServiceRequest,
};
use serde_json::{json, Value};

use super::{created, json_body, ok_empty, ok_json};
use crate::backend::Backend;
use crate::convert::objects::{self, Counts};
use crate::convert::service::{spec_from_engine, unacted};
use crate::error::{ApiError, ApiResult};
use crate::query::{self, flag, Filters};
use crate::read;
use crate::version::ApiVersion;

const FILTERS: &[&str] = &["id", "label", "mode", "name", "runtime"];

pub fn mode_name(spec: &orch_api::pb::ServiceSpec) -> &'static str {
    match spec.mode {
        Some(Mode::Global(_)) => "global",
        Some(Mode::ReplicatedJob(_)) => "replicated-job",
        Some(Mode::GlobalJob(_)) => "global-job",
        Some(Mode::Replicated(_)) | None => "replicated",
    }
}

fn matches(f: &Filters, s: &Service) -> bool {
    let spec = s.spec.clone().unwrap_or_default();
    f.any("id", |v| s.id.starts_with(v))
        && f.any("name", |v| spec.name.starts_with(v))
        && f.any("mode", |v| v == mode_name(&spec))
        && f.any("runtime", |v| v == "container")
        && f.labels("label", &spec.labels)
}

pub async fn list(
    State(backend): State<Backend>,
    Extension(version): Extension<ApiVersion>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    let filters = Filters::parse(&q, FILTERS)?;
    let list = read::services_with_counts(&mut backend.control()).await?;
    let status = flag(&q, "status") && version.at_least(1, 41);
    let out: Vec<Value> = list
        .services
        .iter()
        .filter(|s| matches(&filters, s))
        .map(|s| {
            let counts = status.then(|| Counts {
                running: list.running.get(&s.id).copied().unwrap_or(0),
                desired: list.desired.get(&s.id).copied().unwrap_or(0),
                completed: list.completed.get(&s.id).copied().unwrap_or(0),
            });
            objects::service(s, counts)
        })
        .collect();
    Ok(ok_json(Value::Array(out)))
}

/// Warnings of a create or update: registry credentials orch cannot pass on, and what orch
/// keeps without acting on.
fn warnings(spec: &ServiceSpec, headers: &HeaderMap) -> Value {
    let mut out: Vec<Value> = Vec::new();
    if headers.contains_key("X-Registry-Auth") {
        out.push(json!(
            "orch does not pass registry credentials to its nodes: each node pulls with its own engine's login"
        ));
    }
    out.extend(
        unacted(spec)
            .into_iter()
            .map(|f| json!(format!("orch keeps {f} but does not act on it"))),
    );
    if out.is_empty() {
        Value::Null
    } else {
        Value::Array(out)
    }
}

/// A secret or config reference sent back without its version (the Engine API has none)
/// keeps the version the service mounts, so a read-modify-write does not move the service
/// to the latest; only new references get the latest.
fn keep_versions(spec: &mut ServiceSpec, current: &ServiceSpec) {
    let old = current
        .task
        .as_ref()
        .and_then(|t| t.container.clone())
        .unwrap_or_default();
    let Some(new) = spec.task.as_mut().and_then(|t| t.container.as_mut()) else {
        return;
    };
    for (refs, old_refs) in [
        (&mut new.secrets, &old.secrets),
        (&mut new.configs, &old.configs),
    ] {
        for r in refs.iter_mut().filter(|r| r.version == 0) {
            if let Some(o) = old_refs
                .iter()
                .find(|o| (o.id == r.id || o.name == r.name) && o.target == r.target)
            {
                r.version = o.version;
            }
        }
    }
}

pub async fn create(
    State(backend): State<Backend>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let body = json_body(&body)?;
    let spec = spec_from_engine(&body).map_err(ApiError::bad_request)?;
    let warnings = warnings(&spec, &headers);
    let service = backend
        .control()
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await?
        .into_inner();
    Ok(created(json!({ "ID": service.id, "Warnings": warnings })))
}

pub async fn inspect(
    State(backend): State<Backend>,
    Path(id): Path<String>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    let service = backend
        .control()
        .get_service(GetServiceRequest { service: id })
        .await?
        .into_inner();
    Ok(ok_json(if flag(&q, "insertDefaults") {
        objects::service_with_defaults(&service)
    } else {
        objects::service(&service, None)
    }))
}

pub async fn remove(State(backend): State<Backend>, Path(id): Path<String>) -> ApiResult<Response> {
    backend
        .control()
        .remove_service(GetServiceRequest { service: id })
        .await?;
    Ok(ok_empty())
}

/// `POST /services/{id}/update?version=N[&rollback=previous]` with the whole spec. A
/// rollback ignores the body and goes back to the previous spec, as dockerd does.
pub async fn update(
    State(backend): State<Backend>,
    Path(id): Path<String>,
    Query(q): Query<query::Query>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let version = query::version(&q)?;
    let rollback = match q.get("rollback").map(String::as_str) {
        None | Some("") => false,
        Some("previous") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid rollback {other:?}: only \"previous\" is supported"
            )))
        }
    };
    let mut control = backend.control();
    let spec = if rollback {
        None
    } else {
        let mut spec = spec_from_engine(&json_body(&body)?).map_err(ApiError::bad_request)?;
        let current = control
            .get_service(GetServiceRequest {
                service: id.clone(),
            })
            .await?
            .into_inner();
        keep_versions(&mut spec, &current.spec.unwrap_or_default());
        Some(spec)
    };
    let warnings = spec.as_ref().map_or(Value::Null, |s| warnings(s, &headers));
    control
        .update_service(UpdateServiceRequest {
            service: id,
            version,
            spec,
            rollback,
        })
        .await?;
    Ok(ok_json(json!({ "Warnings": warnings })))
}

#[cfg(test)]
mod tests {
    use orch_api::pb::{ContainerSpec, DataReference, TaskSpec};

    use super::*;

    fn spec(secrets: Vec<DataReference>) -> ServiceSpec {
        ServiceSpec {
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn reference(id: &str, name: &str, target: &str, version: u32) -> DataReference {
        DataReference {
            id: id.into(),
            name: name.into(),
            target: target.into(),
            version,
            ..Default::default()
        }
    }

    #[test]
    fn references_sent_back_keep_their_version_and_new_ones_get_the_latest() {
        let current = spec(vec![reference("s1", "db", "db", 1)]);
        let mut sent = spec(vec![
            reference("s1", "db", "db", 0),
            reference("s2", "api", "api", 0),
            reference("s1", "db", "other", 0),
        ]);
        keep_versions(&mut sent, &current);
        let got: Vec<u32> = sent
            .task
            .expect("task")
            .container
            .expect("container")
            .secrets
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(got, [1, 0, 0]);
    }

    #[test]
    fn registry_credentials_and_unacted_fields_are_warned_about() {
        let mut headers = HeaderMap::new();
        assert_eq!(warnings(&spec(vec![]), &headers), Value::Null);
        headers.insert("X-Registry-Auth", "e30=".parse().expect("header"));
        let w = warnings(&spec(vec![]), &headers);
        assert!(
            w[0].as_str()
                .is_some_and(|s| s.contains("registry credentials")),
            "{w}"
        );
    }
}
