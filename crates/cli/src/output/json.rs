//! Objects as the Docker Engine API shapes them (field names, nesting, lower-case enums,
//! durations in nanoseconds, RFC 3339 times), for inspect and `--format`.

use orch_api::names;
use orch_api::pb::{Node, NodeAvailability, NodeRole, NodeState, Reachability};
use serde_json::{json, Map, Value};

use super::rfc3339;

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

use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    ContainerSpec, EndpointSpec, FailureAction, PortConfig, ResourceLimits, RestartCondition,
    Service, ServiceSpec, Task, TaskSpec, TaskState, UpdateConfig, UpdateOrder, UpdateState,
};

/// Inserts `value` under `key` unless it is empty (Go's omitempty).
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
    };
    if !empty {
        map.insert(key.to_string(), value);
    }
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

pub fn restart_condition_name(c: i32) -> &'static str {
    match RestartCondition::try_from(c) {
        Ok(RestartCondition::OnFailure) => "on-failure",
        Ok(RestartCondition::None) => "none",
        _ => "any",
    }
}

pub fn failure_action_name(a: i32) -> &'static str {
    match FailureAction::try_from(a) {
        Ok(FailureAction::Continue) => "continue",
        Ok(FailureAction::Rollback) => "rollback",
        _ => "pause",
    }
}

pub fn update_order_name(o: i32) -> &'static str {
    match UpdateOrder::try_from(o) {
        Ok(UpdateOrder::StartFirst) => "start-first",
        _ => "stop-first",
    }
}

pub fn update_state_name(s: i32) -> &'static str {
    names::update_state(UpdateState::try_from(s).unwrap_or_default())
}

pub fn task_state_name(s: i32) -> String {
    TaskState::try_from(s)
        .map(|s| names::task_state(s).to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn container_spec(c: &ContainerSpec) -> Value {
    let mut m = Map::new();
    m.insert("Image".into(), Value::String(c.image.clone()));
    put(&mut m, "Labels", labels(&c.labels));
    put(&mut m, "Command", strings(&c.command));
    put(&mut m, "Args", strings(&c.args));
    put(&mut m, "Hostname", Value::String(c.hostname.clone()));
    put(&mut m, "Env", strings(&c.env));
    put(&mut m, "Dir", Value::String(c.dir.clone()));
    put(&mut m, "User", Value::String(c.user.clone()));
    let mounts: Vec<Value> = c
        .mounts
        .iter()
        .map(|mt| {
            let mut o = Map::new();
            o.insert("Type".into(), Value::String(mt.r#type.clone()));
            put(&mut o, "Source", Value::String(mt.source.clone()));
            o.insert("Target".into(), Value::String(mt.target.clone()));
            put(&mut o, "ReadOnly", Value::Bool(mt.read_only));
            Value::Object(o)
        })
        .collect();
    put(&mut m, "Mounts", Value::Array(mounts));
    for (key, kind, refs) in [
        ("Secrets", "Secret", &c.secrets),
        ("Configs", "Config", &c.configs),
    ] {
        let refs: Vec<Value> = refs
            .iter()
            .map(|r| {
                json!({
                    "File": {
                        "Name": r.target,
                        "UID": r.uid,
                        "GID": r.gid,
                        "Mode": r.mode,
                    },
                    format!("{kind}ID"): r.id,
                    format!("{kind}Name"): r.name,
                    "Version": r.version,
                })
            })
            .collect();
        put(&mut m, key, Value::Array(refs));
    }
    m.insert("StopGracePeriod".into(), json!(c.stop_grace_period));
    put(&mut m, "StopSignal", Value::String(c.stop_signal.clone()));
    if let Some(h) = &c.healthcheck {
        let mut o = Map::new();
        o.insert("Test".into(), strings(&h.test));
        put(&mut o, "Interval", json!(h.interval));
        put(&mut o, "Timeout", json!(h.timeout));
        put(&mut o, "StartPeriod", json!(h.start_period));
        put(&mut o, "Retries", json!(h.retries));
        m.insert("Healthcheck".into(), Value::Object(o));
    }
    if !c.dns.is_empty() || !c.dns_search.is_empty() {
        let mut o = Map::new();
        put(&mut o, "Nameservers", strings(&c.dns));
        put(&mut o, "Search", strings(&c.dns_search));
        m.insert("DNSConfig".into(), Value::Object(o));
    }
    put(&mut m, "Hosts", strings(&c.hosts));
    put(&mut m, "CapabilityAdd", strings(&c.cap_add));
    put(&mut m, "CapabilityDrop", strings(&c.cap_drop));
    put(&mut m, "Sysctls", labels(&c.sysctls));
    let ulimits: Vec<Value> = c
        .ulimits
        .iter()
        .map(|u| json!({ "Name": u.name, "Soft": u.soft, "Hard": u.hard }))
        .collect();
    put(&mut m, "Ulimits", Value::Array(ulimits));
    if let Some(init) = c.init {
        m.insert("Init".into(), Value::Bool(init));
    }
    put(&mut m, "TTY", Value::Bool(c.tty));
    put(&mut m, "OpenStdin", Value::Bool(c.open_stdin));
    put(&mut m, "ReadOnly", Value::Bool(c.read_only));
    Value::Object(m)
}

fn limits(l: &Option<ResourceLimits>) -> Value {
    let mut m = Map::new();
    if let Some(l) = l {
        put(&mut m, "NanoCPUs", json!(l.nano_cpus));
        put(&mut m, "MemoryBytes", json!(l.memory_bytes));
    }
    Value::Object(m)
}

pub fn task_spec(t: &TaskSpec) -> Value {
    let mut m = Map::new();
    m.insert(
        "ContainerSpec".into(),
        container_spec(&t.container.clone().unwrap_or_default()),
    );
    let r = t.resources.unwrap_or_default();
    m.insert(
        "Resources".into(),
        json!({ "Limits": limits(&r.limits), "Reservations": limits(&r.reservations) }),
    );
    let rp = t.restart.unwrap_or_default();
    let mut restart = Map::new();
    restart.insert(
        "Condition".into(),
        Value::String(restart_condition_name(rp.condition).into()),
    );
    restart.insert("Delay".into(), json!(rp.delay));
    restart.insert("MaxAttempts".into(), json!(rp.max_attempts));
    put(&mut restart, "Window", json!(rp.window));
    m.insert("RestartPolicy".into(), Value::Object(restart));
    let p = t.placement.clone().unwrap_or_default();
    let mut placement = Map::new();
    put(&mut placement, "Constraints", strings(&p.constraints));
    let prefs: Vec<Value> = p
        .preferences
        .iter()
        .map(|x| json!({ "Spread": { "SpreadDescriptor": x.spread_descriptor } }))
        .collect();
    put(&mut placement, "Preferences", Value::Array(prefs));
    put(&mut placement, "MaxReplicas", json!(p.max_replicas));
    let platforms: Vec<Value> = p
        .platforms
        .iter()
        .map(|x| json!({ "Architecture": x.architecture, "OS": x.os }))
        .collect();
    put(&mut placement, "Platforms", Value::Array(platforms));
    m.insert("Placement".into(), Value::Object(placement));
    m.insert("ForceUpdate".into(), json!(t.force_update));
    m.insert("Runtime".into(), Value::String("container".into()));
    Value::Object(m)
}

fn update_config(u: &Option<UpdateConfig>) -> Value {
    let u = u.unwrap_or_default();
    let mut m = Map::new();
    m.insert("Parallelism".into(), json!(u.parallelism));
    put(&mut m, "Delay", json!(u.delay));
    m.insert(
        "FailureAction".into(),
        Value::String(failure_action_name(u.failure_action).into()),
    );
    m.insert("Monitor".into(), json!(u.monitor));
    m.insert("MaxFailureRatio".into(), json!(u.max_failure_ratio));
    m.insert(
        "Order".into(),
        Value::String(update_order_name(u.order).into()),
    );
    Value::Object(m)
}

fn endpoint_spec(e: &Option<EndpointSpec>) -> Value {
    let e = e.clone().unwrap_or_default();
    let mut m = Map::new();
    m.insert(
        "Mode".into(),
        Value::String(if e.mode.is_empty() {
            "vip".into()
        } else {
            e.mode.clone()
        }),
    );
    put(&mut m, "Ports", ports_json(&e.ports));
    Value::Object(m)
}

/// Published ports as the Engine API shows them (`PortConfig`).
fn ports_json(ports: &[PortConfig]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                json!({
                    "Protocol": p.protocol,
                    "TargetPort": p.target_port,
                    "PublishedPort": p.published_port,
                    "PublishMode": orch_api::network::publish_mode_name(p),
                })
            })
            .collect(),
    )
}

fn mode(m: &Option<Mode>) -> Value {
    match m {
        Some(Mode::Replicated(r)) => json!({ "Replicated": { "Replicas": r.replicas } }),
        Some(Mode::Global(_)) => json!({ "Global": {} }),
        Some(Mode::ReplicatedJob(j)) => {
            json!({ "ReplicatedJob": { "MaxConcurrent": j.max_concurrent, "TotalCompletions": j.total_completions } })
        }
        Some(Mode::GlobalJob(_)) => json!({ "GlobalJob": {} }),
        None => json!({}),
    }
}

pub fn service_spec(s: &ServiceSpec) -> Value {
    json!({
        "Name": s.name,
        "Labels": labels(&s.labels),
        "TaskTemplate": task_spec(&s.task.clone().unwrap_or_default()),
        "Mode": mode(&s.mode),
        "UpdateConfig": update_config(&s.update),
        "RollbackConfig": update_config(&s.rollback),
        "EndpointSpec": endpoint_spec(&s.endpoint),
    })
}

pub fn service(s: &Service) -> Value {
    let (version, created, updated) = meta(&s.meta);
    let spec = s.spec.clone().unwrap_or_default();
    let mut m = Map::new();
    m.insert("ID".into(), Value::String(s.id.clone()));
    m.insert("Version".into(), json!({ "Index": version }));
    m.insert("CreatedAt".into(), Value::String(rfc3339(created)));
    m.insert("UpdatedAt".into(), Value::String(rfc3339(updated)));
    m.insert("Spec".into(), service_spec(&spec));
    if let Some(prev) = &s.previous_spec {
        m.insert("PreviousSpec".into(), service_spec(prev));
    }
    let mut endpoint = json!({ "Spec": endpoint_spec(&spec.endpoint) });
    if !s.ports.is_empty() {
        endpoint["Ports"] = ports_json(&s.ports);
    }
    m.insert("Endpoint".into(), endpoint);
    if let Some(u) = &s.update_status {
        let mut o = Map::new();
        o.insert(
            "State".into(),
            Value::String(update_state_name(u.state).into()),
        );
        if u.started_at > 0 {
            o.insert("StartedAt".into(), Value::String(rfc3339(u.started_at)));
        }
        if u.completed_at > 0 {
            o.insert("CompletedAt".into(), Value::String(rfc3339(u.completed_at)));
        }
        o.insert("Message".into(), Value::String(u.message.clone()));
        m.insert("UpdateStatus".into(), Value::Object(o));
    }
    if let Some(j) = &s.job_status {
        m.insert("JobStatus".into(), json!({ "JobIteration": { "Index": j.job_iteration }, "LastExecution": rfc3339(j.last_execution) }));
    }
    Value::Object(m)
}

pub fn task(t: &Task) -> Value {
    let (version, created, updated) = meta(&t.meta);
    let status = t.status.clone().unwrap_or_default();
    let mut st = Map::new();
    st.insert("Timestamp".into(), Value::String(rfc3339(status.timestamp)));
    st.insert("State".into(), Value::String(task_state_name(status.state)));
    st.insert("Message".into(), Value::String(status.message.clone()));
    put(&mut st, "Err", Value::String(status.err.clone()));
    if let Some(c) = &status.container {
        st.insert(
            "ContainerStatus".into(),
            json!({ "ContainerID": c.container_id, "PID": c.pid, "ExitCode": c.exit_code }),
        );
    }
    let mut m = Map::new();
    m.insert("ID".into(), Value::String(t.id.clone()));
    m.insert("Version".into(), json!({ "Index": version }));
    m.insert("CreatedAt".into(), Value::String(rfc3339(created)));
    m.insert("UpdatedAt".into(), Value::String(rfc3339(updated)));
    m.insert("Labels".into(), labels(&t.service_labels));
    m.insert(
        "Spec".into(),
        task_spec(&t.spec.clone().unwrap_or_default()),
    );
    m.insert("ServiceID".into(), Value::String(t.service_id.clone()));
    put(&mut m, "Slot", json!(t.slot));
    put(&mut m, "NodeID", Value::String(t.node_id.clone()));
    m.insert("Status".into(), Value::Object(st));
    m.insert(
        "DesiredState".into(),
        Value::String(task_state_name(t.desired_state)),
    );
    if t.job_iteration > 0 {
        m.insert("JobIteration".into(), json!({ "Index": t.job_iteration }));
    }
    Value::Object(m)
}
