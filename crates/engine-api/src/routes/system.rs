//! `_ping`, `version`, `info` and the registry lookup.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use orch_api::pb::{Empty, InfoResponse, LocalNodeState};
use serde_json::{json, Value};

use super::local;
use crate::backend::Backend;
use crate::convert::objects;
use crate::error::{ApiError, ApiResult};
use crate::version::{MAX, MIN};

fn state_name(state: LocalNodeState) -> &'static str {
    match state {
        LocalNodeState::Active => "active",
        LocalNodeState::Pending => "pending",
        LocalNodeState::Error => "error",
        LocalNodeState::Inactive => "inactive",
    }
}

/// `Swarm: <state>[/<role>]` for the ping: the docker CLI hides the commands a worker cannot
/// run from its help.
async fn swarm_header(backend: &Backend) -> String {
    match backend.node().info(Empty {}).await {
        Ok(info) => {
            let info = info.into_inner();
            match info.state() {
                LocalNodeState::Active if info.is_manager => "active/manager".to_string(),
                LocalNodeState::Active => "active/worker".to_string(),
                other => state_name(other).to_string(),
            }
        }
        Err(_) => "error".to_string(),
    }
}

fn ping_headers(swarm: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(swarm) {
        h.insert("Swarm", v);
    }
    h
}

/// `GET /_ping` answers `OK`; `HEAD /_ping` the same headers, no body.
async fn ping_response(backend: &Backend, body: &'static str) -> Response {
    let mut headers = ping_headers(&swarm_header(backend).await);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (StatusCode::OK, headers, body).into_response()
}

pub async fn ping(State(backend): State<Backend>) -> Response {
    ping_response(&backend, "OK").await
}

pub async fn ping_head(State(backend): State<Backend>) -> Response {
    ping_response(&backend, "").await
}

/// Docker's names for the CPU architectures.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub async fn version() -> Response {
    let v = env!("CARGO_PKG_VERSION");
    let details = json!({
        "ApiVersion": MAX.to_string(),
        "MinAPIVersion": MIN.to_string(),
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": "",
    });
    super::ok_json(json!({
        "Platform": { "Name": format!("orch {v}") },
        "Components": [{ "Name": "Engine", "Version": v, "Details": details }],
        "Version": v,
        "ApiVersion": MAX.to_string(),
        "MinAPIVersion": MIN.to_string(),
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
        "Experimental": false,
        "GitCommit": "",
        "GoVersion": "",
        "BuildTime": "",
    }))
}

/// The Swarm section of `/info`.
async fn swarm_info(backend: &Backend, info: &InfoResponse) -> Value {
    let state = state_name(info.state());
    let mut swarm = json!({
        "NodeID": info.node_id,
        "NodeAddr": info.node_addr,
        "LocalNodeState": state,
        "ControlAvailable": info.is_manager,
        "Error": info.error,
        "Nodes": info.nodes,
        "Managers": info.managers,
    });
    let mut control = backend.control();
    let nodes = if info.is_manager {
        crate::read::nodes(&mut control).await.ok()
    } else {
        None
    };
    let managers: Vec<Value> = match nodes {
        Some(nodes) => nodes
            .iter()
            .filter_map(|n| {
                let ms = n.manager_status.as_ref()?;
                Some(json!({ "NodeID": n.id, "Addr": ms.addr }))
            })
            .collect(),
        None => info
            .manager_addrs
            .iter()
            .map(|a| json!({ "NodeID": "", "Addr": a }))
            .collect(),
    };
    swarm["RemoteManagers"] = Value::Array(managers);
    if info.is_manager {
        if let Ok(cluster) = control.get_cluster(Empty {}).await {
            swarm["Cluster"] = objects::swarm(&cluster.into_inner(), false);
        }
    }
    swarm
}

/// The node's engine's `/info` (containers, images, storage, kernel…), with orch's name,
/// version and Swarm section.
pub async fn info(State(backend): State<Backend>) -> ApiResult<Response> {
    let node_info = backend
        .node()
        .info(Empty {})
        .await
        .map_err(ApiError::from)?
        .into_inner();
    let mut out = match local::engine_json(&backend, "/info").await {
        Some(Value::Object(engine)) => Value::Object(engine),
        _ => json!({
            "OSType": "linux",
            "Architecture": arch(),
            "KernelVersion": kernel_version(),
            "Containers": 0,
            "Images": 0,
        }),
    };
    out["Name"] = json!(node_info.hostname);
    out["ServerVersion"] = json!(format!("orch {}", env!("CARGO_PKG_VERSION")));
    out["Swarm"] = swarm_info(&backend, &node_info).await;
    Ok(super::ok_json(out))
}

/// `GET /distribution/{name}/json`. orch does not query registries (none may be reachable),
/// so it says so; the docker CLI then warns that each node resolves the image itself.
pub async fn distribution(Path(name): Path<String>) -> ApiError {
    let image = name.strip_suffix("/json").unwrap_or(&name);
    ApiError::unavailable(format!(
        "cannot reach a registry to resolve {image}: orch does not query registries; each node uses the image its engine has or pulls"
    ))
}
