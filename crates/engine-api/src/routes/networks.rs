//! `/networks`: orch's networks are swarm-scoped overlays.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use orch_api::pb::{CreateNetworkRequest, GetNetworkRequest, Network, NetworkSpec};
use serde_json::{json, Value};

use super::{created, json_body, labels_field, no_content, ok_json, str_field};
use crate::backend::Backend;
use crate::convert::objects;
use crate::error::{ApiError, ApiResult};
use crate::query::{self, Filters};
use crate::read;

const FILTERS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];

fn matches(f: &Filters, n: &Network, used: &[String]) -> bool {
    let spec = n.spec.clone().unwrap_or_default();
    let driver = if spec.driver.is_empty() {
        "overlay"
    } else {
        spec.driver.as_str()
    };
    f.any("id", |v| n.id.starts_with(v))
        && f.any("name", |v| spec.name.contains(v))
        && f.any("driver", |v| v == driver)
        && f.any("scope", |v| v == "swarm")
        && f.any("type", |v| {
            v == "custom" || (v == "builtin" && spec.ingress)
        })
        && f.any("dangling", |v| {
            (v == "true" || v == "1") == (!spec.ingress && !used.contains(&n.id))
        })
        && f.labels("label", &spec.labels)
}

pub async fn list(
    State(backend): State<Backend>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    let filters = Filters::parse(&q, FILTERS)?;
    let mut control = backend.control();
    let networks = read::networks(&mut control).await?;
    let used: Vec<String> = if filters.values("dangling").is_empty() {
        Vec::new()
    } else {
        read::services(&mut control)
            .await?
            .iter()
            .filter_map(|s| s.spec.as_ref()?.task.as_ref())
            .flat_map(|t| t.networks.iter().map(|a| a.target.clone()))
            .collect()
    };
    Ok(ok_json(Value::Array(
        networks
            .iter()
            .filter(|n| matches(&filters, n, &used))
            .map(objects::network)
            .collect(),
    )))
}

/// The body of `POST /networks/create` as orch's spec.
pub fn spec_from_engine(body: &Value) -> ApiResult<NetworkSpec> {
    let driver = match str_field(body, "Driver")? {
        "" | "overlay" => "overlay",
        other => {
            return Err(ApiError::bad_request(format!(
                "orch networks are overlays: driver {other:?} is not supported"
            )))
        }
    };
    if !matches!(str_field(body, "Scope")?, "" | "swarm") {
        return Err(ApiError::bad_request(
            "orch networks are swarm-scoped: scope must be \"swarm\"",
        ));
    }
    if body.get("EnableIPv6").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad_request("orch networks do not support IPv6"));
    }
    let (mut subnet, mut gateway) = (String::new(), String::new());
    if let Some(ipam) = body.get("IPAM").filter(|v| !v.is_null()) {
        match str_field(ipam, "Driver")? {
            "" | "default" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "IPAM driver {other:?} is not supported"
                )))
            }
        }
        match ipam.get("Config") {
            None | Some(Value::Null) => {}
            Some(Value::Array(configs)) if configs.len() <= 1 => {
                if let Some(c) = configs.first() {
                    subnet = str_field(c, "Subnet")?.to_string();
                    gateway = str_field(c, "Gateway")?.to_string();
                    if !str_field(c, "IPRange")?.is_empty() {
                        return Err(ApiError::bad_request("IPAM ranges are not supported"));
                    }
                }
            }
            Some(Value::Array(_)) => {
                return Err(ApiError::bad_request("orch networks have one subnet"))
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid JSON: IPAM.Config must be an array",
                ))
            }
        }
    }
    let flag = |key: &str| body.get(key).and_then(Value::as_bool).unwrap_or(false);
    if flag("ConfigOnly")
        || body.get("ConfigFrom").is_some_and(|v| {
            !v.is_null()
                && v.get("Network")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        })
    {
        return Err(ApiError::bad_request(
            "config-only networks are not supported",
        ));
    }
    Ok(NetworkSpec {
        name: str_field(body, "Name")?.to_string(),
        labels: labels_field(body, "Labels")?,
        driver: driver.to_string(),
        subnet,
        gateway,
        internal: flag("Internal"),
        attachable: flag("Attachable"),
        ingress: flag("Ingress"),
        options: labels_field(body, "Options")?,
    })
}

pub async fn create(State(backend): State<Backend>, body: Bytes) -> ApiResult<Response> {
    let spec = spec_from_engine(&json_body(&body)?)?;
    let network = backend
        .control()
        .create_network(CreateNetworkRequest { spec: Some(spec) })
        .await?
        .into_inner();
    Ok(created(json!({ "Id": network.id, "Warning": "" })))
}

pub async fn inspect(
    State(backend): State<Backend>,
    Path(id): Path<String>,
    Query(q): Query<query::Query>,
) -> ApiResult<Response> {
    if matches!(q.get("scope").map(String::as_str), Some("local" | "global")) {
        return Err(ApiError::not_found(format!("network {id} not found")));
    }
    let network = backend
        .control()
        .get_network(GetNetworkRequest { network: id })
        .await?
        .into_inner();
    Ok(ok_json(objects::network(&network)))
}

pub async fn remove(State(backend): State<Backend>, Path(id): Path<String>) -> ApiResult<Response> {
    backend
        .control()
        .remove_network(GetNetworkRequest { network: id })
        .await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clis_create_bodies_become_specs() {
        let spec = spec_from_engine(&json!({"Driver":"overlay","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[]},"Internal":false,"Attachable":true,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{},"Labels":{"a":"b"},"Name":"n1","CheckDuplicate":true}))
            .expect("cli body");
        assert_eq!(spec.name, "n1");
        assert!(spec.attachable);
        assert_eq!(spec.labels.get("a").map(String::as_str), Some("b"));
        let stack = spec_from_engine(&json!({"Driver":"overlay","Scope":"","IPAM":null,"Options":null,"Labels":{"com.docker.stack.namespace":"st"},"Name":"st_front"}))
            .expect("stack body");
        assert_eq!(stack.name, "st_front");
        let subnet = spec_from_engine(
            &json!({"Name":"s","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","Gateway":"10.9.0.1"}]}}),
        )
        .expect("subnet");
        assert_eq!(
            (subnet.subnet.as_str(), subnet.gateway.as_str()),
            ("10.9.0.0/24", "10.9.0.1")
        );
        for bad in [
            json!({"Name":"b","Driver":"bridge"}),
            json!({"Name":"b","Scope":"local"}),
            json!({"Name":"b","EnableIPv6":true}),
            json!({"Name":"b","IPAM":{"Config":[{"Subnet":"10.1.0.0/24"},{"Subnet":"10.2.0.0/24"}]}}),
            json!({"Name":1}),
        ] {
            assert_eq!(
                spec_from_engine(&bad).expect_err("bad").status.as_u16(),
                400,
                "{bad}"
            );
        }
    }
}
