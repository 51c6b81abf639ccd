//! The routes, unversioned (the version layer strips `/vX.Y`), grouped as the Engine API
//! reference groups them.

mod data;
mod events;
mod local;
mod logs;
mod networks;
mod nodes;
mod services;
mod swarm;
mod system;
mod tasks;

use axum::body::Bytes;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::Value;

use crate::backend::Backend;
use crate::error::{ApiError, ApiResult};

pub fn router(backend: Backend) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping_head))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(events::stream))
        .route("/distribution/{*name}", get(system::distribution))
        .route("/swarm", get(swarm::inspect))
        .route("/swarm/init", post(swarm::init))
        .route("/swarm/join", post(swarm::join))
        .route("/swarm/leave", post(swarm::leave))
        .route("/swarm/update", post(swarm::update))
        .route("/swarm/unlockkey", get(swarm::unlock_key))
        .route("/swarm/unlock", post(swarm::unlock))
        .route("/nodes", get(nodes::list))
        .route("/nodes/{id}", get(nodes::inspect).delete(nodes::remove))
        .route("/nodes/{id}/update", post(nodes::update))
        .route("/services", get(services::list))
        .route("/services/create", post(services::create))
        .route(
            "/services/{id}",
            get(services::inspect).delete(services::remove),
        )
        .route("/services/{id}/update", post(services::update))
        .route("/services/{id}/logs", get(logs::service))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::inspect))
        .route("/tasks/{id}/logs", get(logs::task))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/secrets", get(data::list_secrets))
        .route("/secrets/create", post(data::create_secret))
        .route(
            "/secrets/{id}",
            get(data::inspect_secret).delete(data::remove_secret),
        )
        .route("/secrets/{id}/update", post(data::update_secret))
        .route("/configs", get(data::list_configs))
        .route("/configs/create", post(data::create_config))
        .route(
            "/configs/{id}",
            get(data::inspect_config).delete(data::remove_config),
        )
        .route("/configs/{id}/update", post(data::update_config))
        .route("/containers/json", engine_read(local::proxy))
        .route("/containers/{id}/json", engine_read(local::proxy))
        .route("/containers/{id}/logs", engine_read(local::proxy))
        .route("/containers/{id}/stats", engine_read(local::proxy))
        .route("/containers/{id}/top", engine_read(local::proxy))
        .route("/images/json", engine_read(local::proxy))
        .route("/images/{*name_and_part}", engine_read(local::image))
        .route("/volumes", engine_read(local::proxy))
        .route("/volumes/{name}", engine_read(local::proxy))
        .route("/system/df", engine_read(local::proxy))
        .fallback(not_found)
        .with_state(backend)
}

async fn not_found() -> ApiError {
    ApiError::not_found("page not found")
}

/// A read the node's own engine answers (GET); any other method on its path is refused.
fn engine_read<H, T>(handler: H) -> MethodRouter<Backend>
where
    H: Handler<T, Backend>,
    T: 'static,
{
    get(handler).fallback(local::refused)
}

/// A request body as JSON; malformed JSON is a 400 as in dockerd.
fn json_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid JSON: the request body is empty",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

fn ok_json(value: Value) -> Response {
    Json(value).into_response()
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// 200 with an empty body (node update, service rm, swarm leave…).
fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A string field of a JSON body.
fn str_field<'a>(body: &'a Value, key: &str) -> ApiResult<&'a str> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!(
            "invalid JSON: {key} must be a string"
        ))),
    }
}

/// A labels object of a JSON body.
fn labels_field(body: &Value, key: &str) -> ApiResult<std::collections::HashMap<String, String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::bad_request(format!(
                    "invalid JSON: {key}.{k} must be a string"
                ))),
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!(
            "invalid JSON: {key} must be an object of strings"
        ))),
    }
}
