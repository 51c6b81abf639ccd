//! Objects as the Docker Engine API shapes them (field names, nesting, lower-case enums,
//! durations in nanoseconds, RFC 3339 times), for inspect and `--format`.

use orch_api::pb::{Node, NodeAvailability, NodeRole, NodeState, Reachability};
use serde_json::{json, Map, Value};

use super::rfc3339;

pub fn role_name(role: i32) -> &'static str {
    match NodeRole::try_from(role) {
        Ok(NodeRole::Manager) => "manager",
        _ => "worker",
    }
}

pub fn availability_name(a: i32) -> &'static str {
    match NodeAvailability::try_from(a) {
        Ok(NodeAvailability::Pause) => "pause",
        Ok(NodeAvailability::Drain) => "drain",
        _ => "active",
    }
}

pub fn node_state_name(s: i32) -> &'static str {
    match NodeState::try_from(s) {
        Ok(NodeState::Ready) => "ready",
        Ok(NodeState::Down) => "down",
        Ok(NodeState::Disconnected) => "disconnected",
        _ => "unknown",
    }
}

pub fn reachability_name(r: i32) -> &'static str {
    match Reachability::try_from(r) {
        Ok(Reachability::Reachable) => "reachable",
        Ok(Reachability::Unreachable) => "unreachable",
        _ => "unknown",
    }
}

/// "ready" -> "Ready".
pub fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn labels(map: &std::collections::HashMap<String, String>) -> Value {
    let mut sorted: Vec<_> = map.iter().collect();
    sorted.sort();
    let mut m = Map::new();
    for (k, v) in sorted {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(m)
}

fn meta(node_meta: &Option<orch_api::pb::Meta>) -> (u64, i64, i64) {
    node_meta
        .as_ref()
        .map_or((0, 0, 0), |m| (m.version, m.created_at, m.updated_at))
}

pub fn node(n: &Node) -> Value {
    let (version, created, updated) = meta(&n.meta);
    let spec = n.spec.clone().unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let platform = desc.platform.clone().unwrap_or_default();
    let resources = desc.resources.unwrap_or_default();
    let engine = desc.engine.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let mut status_json = json!({ "State": node_state_name(status.state), "Addr": status.addr });
    if !status.message.is_empty() {
        status_json["Message"] = Value::String(status.message.clone());
    }
    let mut engine_json = json!({ "EngineVersion": engine.engine_version });
    if !engine.labels.is_empty() {
        engine_json["Labels"] = labels(&engine.labels);
    }
    let mut out = json!({
        "ID": n.id,
        "Version": { "Index": version },
        "CreatedAt": rfc3339(created),
        "UpdatedAt": rfc3339(updated),
        "Spec": {
            "Labels": labels(&spec.labels),
            "Role": role_name(spec.desired_role),
            "Availability": availability_name(spec.availability),
        },
        "Description": {
            "Hostname": desc.hostname,
            "Platform": { "Architecture": platform.architecture, "OS": platform.os },
            "Resources": { "NanoCPUs": resources.nano_cpus, "MemoryBytes": resources.memory_bytes },
            "Engine": engine_json,
        },
        "Status": status_json,
    });
    if let Some(ms) = &n.manager_status {
        let mut m = json!({ "Reachability": reachability_name(ms.reachability), "Addr": ms.addr });
        if ms.leader {
            m["Leader"] = Value::Bool(true);
        }
        out["ManagerStatus"] = m;
    }
    out
}

/// A `node ls` row: the table's fields, keyed as docker's `--format` names them.
pub fn node_row(n: &Node, self_id: &str) -> Value {
    let status = n.status.clone().unwrap_or_default();
    let manager_status = match &n.manager_status {
        Some(ms) if ms.leader => "Leader".to_string(),
        Some(ms) => title(reachability_name(ms.reachability)),
        None => String::new(),
    };
    let desc = n.description.clone().unwrap_or_default();
    json!({
        "ID": n.id,
        "Self": n.id == self_id,
        "Hostname": desc.hostname,
        "Status": title(node_state_name(status.state)),
        "Availability": title(availability_name(n.spec.as_ref().map_or(0, |s| s.availability))),
        "ManagerStatus": manager_status,
        "EngineVersion": desc.engine.map(|e| e.engine_version).unwrap_or_default(),
    })
}
