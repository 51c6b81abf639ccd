//! The names orch's tables and `--pretty` output print, and `node ls` rows as docker's
//! `--format` keys them. Whole objects for inspect are the Engine API's own
//! (`orch_engine_api::convert::objects`), so `orch inspect` and `docker inspect` agree.

use orch_api::names;
use orch_api::pb::{Node, NodeAvailability, NodeRole, NodeState, Reachability, UpdateState};
use serde_json::{json, Value};

pub fn role_name(role: i32) -> &'static str {
    names::role(NodeRole::try_from(role).unwrap_or_default())
}

pub fn availability_name(a: i32) -> &'static str {
    names::availability(NodeAvailability::try_from(a).unwrap_or_default())
}

pub fn node_state_name(s: i32) -> &'static str {
    names::node_state(NodeState::try_from(s).unwrap_or_default())
}

pub fn reachability_name(r: i32) -> &'static str {
    names::reachability(Reachability::try_from(r).unwrap_or_default())
}

/// "ready" -> "Ready".
pub fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
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

pub use orch_engine_api::convert::service::{
    failure_action_name, restart_condition_name, update_order_name,
};

pub fn update_state_name(s: i32) -> &'static str {
    names::update_state(UpdateState::try_from(s).unwrap_or_default())
}
