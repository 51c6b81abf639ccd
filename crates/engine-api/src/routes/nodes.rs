//! `/nodes`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use orch_api::pb::{
    GetNodeRequest, Node, NodeAvailability, NodeRole, RemoveNodeRequest, UpdateNodeRequest,
};
use serde_json::Value;

use super::{json_body, labels_field, ok_empty, ok_json, str_field};
use crate::backend::Backend;
use crate::convert::objects;
use crate::error::{ApiError, ApiResult};
use crate::query::{self, flag, Filters};
use crate::read;

const FILTERS: &[&str] = &["id", "label", "membership", "name", "node.label", "role"];

fn matches(f: &Filters, n: &Node) -> bool {
    let desc = n.description.clone().unwrap_or_default();
    let engine_labels = desc.engine.map(|e| e.labels).unwrap_or_default();
    let node_labels = n.spec.clone().unwrap_or_default().labels;
    f.any("id", |v| n.id.starts_with(v))
        && f.any("name", |v| desc.hostname.starts_with(v))
        && f.any("role", |v| v == objects::role_name(n.role()))
        && f.any("membership", |v| v == "accepted")
        && f.labels("label", &engine_labels)
        && f.labels("node.label", &node_labels)
}

pub async fn list(
    State(backend): State<Backend>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    let filters = Filters::parse(&q, FILTERS)?;
    let mut control = backend.control();
    let nodes = read::nodes(&mut control).await?;
    let root = read::trust_root(&mut control).await;
    Ok(ok_json(Value::Array(
        nodes
            .iter()
            .filter(|n| matches(&filters, n))
            .map(|n| objects::node(n, &root))
            .collect(),
    )))
}

pub async fn inspect(
    State(backend): State<Backend>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut control = backend.control();
    let node = control
        .get_node(GetNodeRequest { node: id })
        .await?
        .into_inner();
    let root = read::trust_root(&mut control).await;
    Ok(ok_json(objects::node(&node, &root)))
}

pub async fn remove(
    State(backend): State<Backend>,
    Path(id): Path<String>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    backend
        .control()
        .remove_node(RemoveNodeRequest {
            node: id,
            force: flag(&q, "force"),
        })
        .await?;
    Ok(ok_empty())
}

/// A whole NodeSpec (as `docker node update|promote|demote` send it) as orch's update of the
/// node read at `version`: its labels become exactly the spec's.
pub fn update_request(node: &Node, spec: &Value, version: u64) -> ApiResult<UpdateNodeRequest> {
    if !spec.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON: the node spec must be an object",
        ));
    }
    let role = match str_field(spec, "Role")? {
        "" => None,
        "worker" => Some(NodeRole::Worker as i32),
        "manager" => Some(NodeRole::Manager as i32),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid role {other:?}: worker or manager"
            )))
        }
    };
    let availability = match str_field(spec, "Availability")? {
        "" => None,
        "active" => Some(NodeAvailability::Active as i32),
        "pause" => Some(NodeAvailability::Pause as i32),
        "drain" => Some(NodeAvailability::Drain as i32),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid availability {other:?}: active, pause or drain"
            )))
        }
    };
    let labels = labels_field(spec, "Labels")?;
    let current = node.spec.clone().unwrap_or_default().labels;
    Ok(UpdateNodeRequest {
        node: node.id.clone(),
        availability,
        role,
        label_rm: current
            .keys()
            .filter(|k| !labels.contains_key(*k))
            .cloned()
            .collect(),
        label_add: labels,
        version,
    })
}

pub async fn update(
    State(backend): State<Backend>,
    Path(id): Path<String>,
    Query(q): Query<query::Query>,
    body: Bytes,
) -> ApiResult<Response> {
    let spec = json_body(&body)?;
    let version = query::version(&q)?;
    let mut control = backend.control();
    let node = control
        .get_node(GetNodeRequest { node: id })
        .await?
        .into_inner();
    control
        .update_node(update_request(&node, &spec, version)?)
        .await?;
    Ok(ok_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use orch_api::pb::NodeSpec;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_whole_spec_becomes_role_availability_and_exact_labels() {
        let node = Node {
            id: "n1".into(),
            spec: Some(NodeSpec {
                labels: HashMap::from([("old".to_string(), "1".to_string())]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = update_request(
            &node,
            &json!({"Labels":{"zone":"a"},"Role":"manager","Availability":"drain"}),
            4,
        )
        .expect("update");
        assert_eq!(r.role, Some(NodeRole::Manager as i32));
        assert_eq!(r.availability, Some(NodeAvailability::Drain as i32));
        assert_eq!(r.label_add.get("zone").map(String::as_str), Some("a"));
        assert_eq!(r.label_rm, ["old"]);
        assert_eq!(r.version, 4);
        for bad in [
            json!({"Role":"king"}),
            json!({"Availability":"gone"}),
            json!({"Labels":{"a":1}}),
            json!([]),
        ] {
            assert_eq!(
                update_request(&node, &bad, 1)
                    .expect_err("bad")
                    .status
                    .as_u16(),
                400
            );
        }
    }
}
