//! `/services`.

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::Response;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{CreateServiceRequest, GetServiceRequest, Service, UpdateServiceRequest};
use serde_json::{json, Value};

use super::{created, json_body, ok_empty, ok_json};
use crate::backend::Backend;
use crate::convert::objects::{self, Counts};
use crate::convert::service::{insert_defaults, spec_from_engine, unacted};
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

/// Warnings of a create or update: what orch keeps without acting on.
fn warnings(spec: &orch_api::pb::ServiceSpec) -> Value {
    let fields = unacted(spec);
    if fields.is_empty() {
        return Value::Null;
    }
    Value::Array(
        fields
            .into_iter()
            .map(|f| json!(format!("orch keeps {f} but does not act on it")))
            .collect(),
    )
}

pub async fn create(State(backend): State<Backend>, body: Bytes) -> ApiResult<Response> {
    let body = json_body(&body)?;
    let spec = spec_from_engine(&body).map_err(ApiError::bad_request)?;
    let warnings = warnings(&spec);
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
    let mut out = objects::service(&service, None);
    if flag(&q, "insertDefaults") {
        for key in ["Spec", "PreviousSpec"] {
            if let Some(spec) = out.get_mut(key) {
                insert_defaults(spec);
            }
        }
    }
    Ok(ok_json(out))
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
    let spec = if rollback {
        None
    } else {
        Some(spec_from_engine(&json_body(&body)?).map_err(ApiError::bad_request)?)
    };
    let warnings = spec.as_ref().map_or(Value::Null, warnings);
    backend
        .control()
        .update_service(UpdateServiceRequest {
            service: id,
            version,
            spec,
            rollback,
        })
        .await?;
    Ok(ok_json(json!({ "Warnings": warnings })))
}
