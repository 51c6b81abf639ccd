//! Nodes, tasks, networks, secrets and configs, and the swarm, as the Engine API shows them
//! (moby's field names; see the reference's §5).

use std::collections::HashMap;

use base64::Engine as _;
use orch_api::pb::{Cluster, DataKind, DataObject, Network, Node, Service, Task};
use serde_json::{json, Map, Value};

use super::service::{insert_defaults, ports_to_engine, spec_to_engine, task_spec_to_engine};
use super::time::rfc3339;

pub use orch_api::names::{
    availability as availability_name, node_state as node_state_name, role as role_name,
    task_state as task_state_name, update_state as update_state_name,
};

fn meta(meta: Option<&orch_api::pb::Meta>) -> (Value, String, String) {
    let m = meta.cloned().unwrap_or_default();
    (
        json!({ "Index": m.version }),
        rfc3339(m.created_at),
        rfc3339(m.updated_at),
    )
}

fn labels(labels: &HashMap<String, String>) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

pub fn node(n: &Node, trust_root: &str) -> Value {
    let (version, created, updated) = meta(n.meta.as_ref());
    let spec = n.spec.clone().unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let platform = desc.platform.unwrap_or_default();
    let resources = desc.resources.unwrap_or_default();
    let engine = desc.engine.unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let mut out = json!({
        "ID": n.id,
        "Version": version,
        "CreatedAt": created,
        "UpdatedAt": updated,
        "Spec": {
            "Labels": labels(&spec.labels),
            "Role": role_name(spec.desired_role()),
            "Availability": availability_name(spec.availability()),
        },
        "Description": {
            "Hostname": desc.hostname,
            "Platform": { "Architecture": platform.architecture, "OS": platform.os },
            "Resources": { "NanoCPUs": resources.nano_cpus, "MemoryBytes": resources.memory_bytes },
            "Engine": {
                "EngineVersion": engine.engine_version,
                "Labels": labels(&engine.labels),
                "Plugins": [
                    { "Type": "Network", "Name": "overlay" },
                    { "Type": "Volume", "Name": "local" },
                ],
            },
            "TLSInfo": { "TrustRoot": trust_root },
        },
        "Status": {
            "State": node_state_name(status.state()),
            "Message": status.message,
            "Addr": status.addr,
        },
    });
    if let Some(ms) = &n.manager_status {
        out["ManagerStatus"] = json!({
            "Leader": ms.leader,
            "Reachability": orch_api::names::reachability(ms.reachability()),
            "Addr": ms.addr,
        });
    }
    out
}

/// A task; `networks` names the networks of its attachments (by ID), where it knows them.
pub fn task(t: &Task, networks: &HashMap<String, String>) -> Value {
    let (version, created, updated) = meta(t.meta.as_ref());
    let status = t.status.clone().unwrap_or_default();
    let mut s = json!({
        "Timestamp": rfc3339(status.timestamp),
        "State": task_state_name(status.state()),
        "Message": status.message,
        "PortStatus": {},
    });
    if !status.err.is_empty() {
        s["Err"] = json!(status.err);
    }
    if let Some(c) = &status.container {
        s["ContainerStatus"] = json!({
            "ContainerID": c.container_id,
            "PID": c.pid,
            "ExitCode": c.exit_code,
        });
    }
    if let Some(p) = status.port_status.as_ref().filter(|p| !p.ports.is_empty()) {
        s["PortStatus"] = json!({ "Ports": ports_to_engine(&p.ports) });
    }
    let attachments: Vec<Value> = t
        .networks
        .iter()
        .map(|a| {
            let mut network = json!({ "ID": a.network_id });
            if let Some(name) = networks.get(&a.network_id) {
                network["Spec"] = json!({ "Name": name });
            }
            // An attachment whose address is not allocated yet has none.
            let addresses: Vec<&str> = Some(a.addr.as_str())
                .filter(|addr| !addr.is_empty())
                .into_iter()
                .collect();
            json!({ "Network": network, "Addresses": addresses })
        })
        .collect();
    let mut out = json!({
        "ID": t.id,
        "Version": version,
        "CreatedAt": created,
        "UpdatedAt": updated,
        "Labels": {},
        "Spec": task_spec_to_engine(&t.spec.clone().unwrap_or_default()),
        "ServiceID": t.service_id,
        "Slot": t.slot,
        "NodeID": t.node_id,
        "Status": s,
        "DesiredState": task_state_name(t.desired_state()),
    });
    if !attachments.is_empty() {
        out["NetworksAttachments"] = Value::Array(attachments);
    }
    if t.job_iteration > 0 {
        out["JobIteration"] = json!({ "Index": t.job_iteration });
    }
    out
}

/// `web.2`, or `web.<node ID>` for a global service's task.
pub fn task_name(service: &str, t: &Task) -> String {
    if t.slot == 0 {
        format!("{service}.{}", t.node_id)
    } else {
        format!("{service}.{}", t.slot)
    }
}

/// Running, desired and completed task counts (`status=true`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub running: u64,
    pub desired: u64,
    pub completed: u64,
}

pub fn service(s: &Service, counts: Option<Counts>) -> Value {
    let (version, created, updated) = meta(s.meta.as_ref());
    let spec = s.spec.clone().unwrap_or_default();
    let rendered = spec_to_engine(&spec);
    let endpoint_spec = rendered
        .get("EndpointSpec")
        .cloned()
        .unwrap_or_else(|| json!({ "Mode": "vip" }));
    let mut endpoint = json!({ "Spec": endpoint_spec });
    if !s.ports.is_empty() {
        endpoint["Ports"] = ports_to_engine(&s.ports);
    }
    if !s.virtual_ips.is_empty() {
        endpoint["VirtualIPs"] = Value::Array(
            s.virtual_ips
                .iter()
                .map(|v| json!({ "NetworkID": v.network_id, "Addr": v.addr }))
                .collect(),
        );
    }
    let mut out = json!({
        "ID": s.id,
        "Version": version,
        "CreatedAt": created,
        "UpdatedAt": updated,
        "Spec": rendered,
        "Endpoint": endpoint,
    });
    if let Some(previous) = &s.previous_spec {
        out["PreviousSpec"] = spec_to_engine(previous);
    }
    if let Some(u) = &s.update_status {
        let mut status = json!({
            "State": update_state_name(u.state()),
            "Message": u.message,
        });
        if u.started_at > 0 {
            status["StartedAt"] = json!(rfc3339(u.started_at));
        }
        if u.completed_at > 0 {
            status["CompletedAt"] = json!(rfc3339(u.completed_at));
        }
        out["UpdateStatus"] = status;
    }
    if let Some(c) = counts {
        out["ServiceStatus"] = json!({
            "RunningTasks": c.running,
            "DesiredTasks": c.desired,
            "CompletedTasks": c.completed,
        });
    }
    if orch_api::validate::is_job(&spec) {
        let j = s.job_status.unwrap_or_default();
        out["JobStatus"] = json!({
            "JobIteration": { "Index": j.job_iteration },
            "LastExecution": rfc3339(j.last_execution),
        });
    }
    out
}

/// A service as `docker service inspect` and `docker inspect` ask for it (`insertDefaults`):
/// docker's defaults filled into its spec and previous spec.
pub fn service_with_defaults(s: &Service) -> Value {
    let mut out = service(s, None);
    for key in ["Spec", "PreviousSpec"] {
        if let Some(spec) = out.get_mut(key) {
            insert_defaults(spec);
        }
    }
    out
}

/// Networks as `docker network ls|inspect` shows them (`Id`, not `ID`); every orch network
/// is a swarm-scoped overlay.
pub fn network(n: &Network) -> Value {
    let spec = n.spec.clone().unwrap_or_default();
    let created = n.meta.as_ref().map_or(0, |m| m.created_at);
    let mut config = Map::new();
    if !n.subnet.is_empty() {
        config.insert("Subnet".into(), json!(n.subnet));
    }
    if !n.gateway.is_empty() {
        config.insert("Gateway".into(), json!(n.gateway));
    }
    let mut options = labels(&spec.options);
    if let Value::Object(o) = &mut options {
        o.insert(
            "com.docker.network.driver.overlay.vxlanid_list".into(),
            json!(n.vni.to_string()),
        );
    }
    json!({
        "Name": spec.name,
        "Id": n.id,
        "Created": rfc3339(created),
        "Scope": "swarm",
        "Driver": if spec.driver.is_empty() { "overlay".to_string() } else { spec.driver.clone() },
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": if config.is_empty() { json!([]) } else { json!([Value::Object(config)]) },
        },
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": {},
        "Options": options,
        "Labels": labels(&spec.labels),
    })
}

/// A secret (never with its data) or a config (with the latest version's data).
pub fn data(d: &DataObject) -> Value {
    let (version, created, updated) = meta(d.meta.as_ref());
    let spec = d.spec.clone().unwrap_or_default();
    let mut s = json!({
        "Name": spec.name,
        "Labels": labels(&spec.labels),
    });
    if !spec.template_driver.is_empty() {
        s["Templating"] = json!({ "Name": spec.template_driver });
    }
    if d.kind() == DataKind::Config {
        if let Some(latest) = d.versions.iter().max_by_key(|v| v.version) {
            s["Data"] = json!(base64::engine::general_purpose::STANDARD.encode(&latest.data));
        }
    }
    json!({
        "ID": d.id,
        "Version": version,
        "CreatedAt": created,
        "UpdatedAt": updated,
        "Spec": s,
    })
}

/// The swarm: `GET /swarm` with the join tokens, `/info`'s `Cluster` without.
pub fn swarm(c: &Cluster, with_tokens: bool) -> Value {
    let (version, created, updated) = meta(c.meta.as_ref());
    let spec = c.spec.clone().unwrap_or_default();
    let root = c.root_ca.clone().unwrap_or_default();
    let mut out = json!({
        "ID": c.id,
        "Version": version,
        "CreatedAt": created,
        "UpdatedAt": updated,
        "Spec": {
            "Name": if spec.name.is_empty() { "default".to_string() } else { spec.name.clone() },
            "Labels": labels(&spec.labels),
            "Orchestration": { "TaskHistoryRetentionLimit": spec.task_history_retention_limit },
            "Raft": {
                "SnapshotInterval": spec.snapshot_interval,
                "KeepOldSnapshots": 0,
                "LogEntriesForSlowFollowers": spec.log_entries_for_slow_followers,
                "ElectionTick": 10,
                "HeartbeatTick": 1,
            },
            "Dispatcher": { "HeartbeatPeriod": spec.heartbeat_period },
            "CAConfig": { "NodeCertExpiry": spec.node_cert_expiry },
            "TaskDefaults": {},
            "EncryptionConfig": { "AutoLockManagers": spec.autolock },
        },
        "TLSInfo": { "TrustRoot": root.ca_cert_pem },
        "RootRotationInProgress": false,
        "DefaultAddrPool": ["10.0.0.0/8"],
        "SubnetSize": 24,
        "DataPathPort": 4789,
    });
    if with_tokens {
        let tokens = root.join_tokens.unwrap_or_default();
        out["JoinTokens"] = json!({ "Worker": tokens.worker, "Manager": tokens.manager });
    }
    out
}

#[cfg(test)]
mod tests {
    use orch_api::pb::{
        DataSpec, DataVersion, EndpointSpec, ManagerStatus, NetworkAttachment,
        NetworkAttachmentConfig, NodeAvailability, NodeDescription, NodeRole, NodeSpec, NodeState,
        NodeStatus, Reachability, ServiceSpec, TaskSpec, VirtualIp,
    };

    use super::*;

    #[test]
    fn a_manager_node_has_the_fields_node_ls_reads() {
        let n = Node {
            id: "n1".into(),
            spec: Some(NodeSpec {
                desired_role: NodeRole::Manager as i32,
                availability: NodeAvailability::Drain as i32,
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: "m1".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                addr: "10.0.0.1".into(),
                ..Default::default()
            }),
            manager_status: Some(ManagerStatus {
                leader: true,
                reachability: Reachability::Reachable as i32,
                addr: "10.0.0.1:4242".into(),
                raft_id: 1,
            }),
            ..Default::default()
        };
        let v = node(&n, "");
        assert_eq!(v["Spec"]["Role"], "manager");
        assert_eq!(v["Spec"]["Availability"], "drain");
        assert_eq!(v["Spec"]["Labels"], json!({}));
        assert_eq!(v["Description"]["Hostname"], "m1");
        assert_eq!(v["Status"]["State"], "ready");
        assert_eq!(v["ManagerStatus"]["Leader"], true);
        assert_eq!(v["ManagerStatus"]["Addr"], "10.0.0.1:4242");
        let worker = Node {
            manager_status: None,
            ..n
        };
        assert!(node(&worker, "").get("ManagerStatus").is_none());
    }

    #[test]
    fn a_secret_never_shows_its_data_and_a_config_shows_the_latest() {
        let mut d = DataObject {
            id: "d1".into(),
            kind: DataKind::Secret as i32,
            spec: Some(DataSpec {
                name: "s".into(),
                ..Default::default()
            }),
            versions: vec![
                DataVersion {
                    version: 1,
                    data: b"old".to_vec(),
                    created_at: 1,
                },
                DataVersion {
                    version: 2,
                    data: b"new".to_vec(),
                    created_at: 2,
                },
            ],
            ..Default::default()
        };
        assert!(data(&d)["Spec"].get("Data").is_none());
        d.kind = DataKind::Config as i32;
        assert_eq!(data(&d)["Spec"]["Data"], "bmV3");
    }

    fn attachment(target: &str, aliases: &[&str]) -> NetworkAttachmentConfig {
        NetworkAttachmentConfig {
            target: target.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn spec(networks: Vec<NetworkAttachmentConfig>, mode: &str) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            task: Some(TaskSpec {
                networks,
                ..Default::default()
            }),
            endpoint: (!mode.is_empty()).then(|| EndpointSpec {
                mode: mode.into(),
                ports: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn service_inspect_shows_networks_and_virtual_ips() {
        // (case, service, JSON pointer, the value there: None for absent)
        let on_networks = Service {
            id: "svc1".into(),
            spec: Some(spec(
                vec![attachment("net1", &["web", "www"]), attachment("net2", &[])],
                "vip",
            )),
            previous_spec: Some(spec(vec![attachment("net1", &[])], "")),
            virtual_ips: vec![
                VirtualIp {
                    network_id: "net1".into(),
                    addr: "10.0.1.2/24".into(),
                },
                VirtualIp {
                    network_id: "net2".into(),
                    addr: "10.0.2.2".into(),
                },
            ],
            ..Default::default()
        };
        let dnsrr = Service {
            id: "svc2".into(),
            spec: Some(spec(vec![attachment("net1", &[])], "dnsrr")),
            ..Default::default()
        };
        let plain = Service {
            id: "svc3".into(),
            spec: Some(spec(vec![], "")),
            ..Default::default()
        };
        let cases: Vec<(&str, &Service, &str, Option<Value>)> = vec![
            (
                "networks with and without aliases",
                &on_networks,
                "/Spec/TaskTemplate/Networks",
                Some(json!([
                    { "Target": "net1", "Aliases": ["web", "www"] },
                    { "Target": "net2" },
                ])),
            ),
            (
                "the previous spec's networks",
                &on_networks,
                "/PreviousSpec/TaskTemplate/Networks",
                Some(json!([{ "Target": "net1" }])),
            ),
            (
                "virtual IPs, addresses as stored",
                &on_networks,
                "/Endpoint/VirtualIPs",
                Some(json!([
                    { "NetworkID": "net1", "Addr": "10.0.1.2/24" },
                    { "NetworkID": "net2", "Addr": "10.0.2.2" },
                ])),
            ),
            (
                "endpoint mode vip",
                &on_networks,
                "/Endpoint/Spec/Mode",
                Some(json!("vip")),
            ),
            (
                "endpoint mode dnsrr",
                &dnsrr,
                "/Endpoint/Spec/Mode",
                Some(json!("dnsrr")),
            ),
            (
                "dnsrr in the spec too",
                &dnsrr,
                "/Spec/EndpointSpec/Mode",
                Some(json!("dnsrr")),
            ),
            (
                "no virtual IPs: none shown",
                &dnsrr,
                "/Endpoint/VirtualIPs",
                None,
            ),
            (
                "no networks: none shown",
                &plain,
                "/Spec/TaskTemplate/Networks",
                None,
            ),
            (
                "no endpoint spec: vip",
                &plain,
                "/Endpoint/Spec/Mode",
                Some(json!("vip")),
            ),
            (
                "the rest of the object is kept",
                &plain,
                "/Spec/TaskTemplate/Runtime",
                Some(json!("container")),
            ),
        ];
        for (case, s, pointer, expected) in cases {
            let v = service(s, None);
            assert_eq!(v.pointer(pointer), expected.as_ref(), "{case}: {v:#}");
        }
    }

    #[test]
    fn task_inspect_shows_network_attachments() {
        let attached = Task {
            id: "task1".into(),
            spec: Some(TaskSpec {
                networks: vec![attachment("net1", &["db"])],
                ..Default::default()
            }),
            networks: vec![
                NetworkAttachment {
                    network_id: "net1".into(),
                    addr: "10.0.1.3/24".into(),
                    aliases: vec!["db".into()],
                },
                NetworkAttachment {
                    network_id: "net2".into(),
                    addr: String::new(),
                    aliases: vec![],
                },
            ],
            ..Default::default()
        };
        let plain = Task {
            id: "task2".into(),
            ..Default::default()
        };
        let cases: Vec<(&str, &Task, &str, Option<Value>)> = vec![
            (
                "attachments in docker's shape, named where the name is known",
                &attached,
                "/NetworksAttachments",
                Some(json!([
                    { "Network": { "ID": "net1", "Spec": { "Name": "front" } }, "Addresses": ["10.0.1.3/24"] },
                    { "Network": { "ID": "net2" }, "Addresses": [] },
                ])),
            ),
            (
                "the spec's networks",
                &attached,
                "/Spec/Networks",
                Some(json!([{ "Target": "net1", "Aliases": ["db"] }])),
            ),
            (
                "no attachments: none shown",
                &plain,
                "/NetworksAttachments",
                None,
            ),
            (
                "no spec networks: none shown",
                &plain,
                "/Spec/Networks",
                None,
            ),
            ("the rest is kept", &plain, "/ID", Some(json!("task2"))),
        ];
        let names = HashMap::from([("net1".to_string(), "front".to_string())]);
        for (case, t, pointer, expected) in cases {
            let v = task(t, &names);
            assert_eq!(v.pointer(pointer), expected.as_ref(), "{case}: {v:#}");
        }
    }
}
