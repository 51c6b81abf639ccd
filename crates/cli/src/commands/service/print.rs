//! What `orch service` prints: the service and task tables (`ls`, `ps` rows with their
//! history), `inspect --pretty`, and the lines of `logs`. Nothing here talks to the manager
//! but the log stream it is handed.

use std::collections::BTreeMap;

use anyhow::Result;
use orch_api::ids::short;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    ListServicesResponse, LogMessage, Network, PublishMode, Service, Task, TaskSpec, TaskState,
};
use serde_json::{json, Map, Value};
use tonic::Streaming;

use super::args::{LogsArgs, PsArgs};
use super::networks::resolve;
use crate::client::rpc;
use crate::output::{self, json, Format};

pub fn mode_name(s: &Service) -> &'static str {
    match s.spec.as_ref().and_then(|sp| sp.mode.as_ref()) {
        Some(Mode::Global(_)) => "global",
        Some(Mode::ReplicatedJob(_)) => "replicated job",
        Some(Mode::GlobalJob(_)) => "global job",
        _ => "replicated",
    }
}

/// `*:8080->80/tcp, …`: the ports through the mesh (`service ls`, as docker's PORTS) or
/// those in host mode (`service ps`).
fn ports(ports: &[orch_api::pb::PortConfig], host: bool) -> String {
    ports
        .iter()
        .filter(|p| (p.publish_mode() == PublishMode::Host) == host)
        .map(|p| {
            let local = if p.publish_mode() == PublishMode::Local {
                " (local)"
            } else {
                ""
            };
            format!(
                "*:{}->{}/{}{local}",
                p.published_port, p.target_port, p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ports a service publishes: as allocated, or as its spec says (a service stored before
/// ports were allocated).
fn service_ports(s: &Service) -> &[orch_api::pb::PortConfig] {
    if s.ports.is_empty() {
        s.spec
            .as_ref()
            .and_then(|sp| sp.endpoint.as_ref())
            .map_or(&[], |e| e.ports.as_slice())
    } else {
        &s.ports
    }
}

/// `service ls`: the services' IDs (`-q`), or a table of them with their replica counts.
pub(super) fn service_list(
    format: &Format,
    list: &ListServicesResponse,
    services: &[Service],
    quiet: bool,
) -> Result<()> {
    if quiet {
        for s in services {
            outln!("{}", s.id);
        }
        return Ok(());
    }
    let rows: Vec<Value> = services
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            let running = list.running.get(&s.id).copied().unwrap_or(0);
            let desired = list.desired.get(&s.id).copied().unwrap_or(0);
            let mut replicas = format!("{running}/{desired}");
            if let Some(max) = spec
                .task
                .as_ref()
                .and_then(|t| t.placement.as_ref())
                .map(|p| p.max_replicas)
                .filter(|m| *m > 0)
            {
                replicas.push_str(&format!(" (max {max} per node)"));
            }
            if let (Some(done), Some(Mode::ReplicatedJob(j))) =
                (list.completed.get(&s.id), spec.mode.as_ref())
            {
                replicas.push_str(&format!(" ({done}/{} completed)", j.total_completions));
            }
            json!({
                "ID": short(&s.id),
                "Name": spec.name,
                "Mode": mode_name(s),
                "Replicas": replicas,
                "Image": spec.task.and_then(|t| t.container).map(|c| c.image).unwrap_or_default(),
                "Ports": ports(service_ports(s), false),
            })
        })
        .collect();
    output::print_list(
        format,
        &["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"],
        &["ID", "Name", "Mode", "Replicas", "Image", "Ports"],
        &rows,
    )
}

pub(super) fn task_name(t: &Task) -> String {
    if t.slot > 0 {
        format!("{}.{}", t.service_name, t.slot)
    } else {
        format!("{}.{}", t.service_name, t.node_id)
    }
}

/// Orders tasks as docker's `service ps`: by slot (or node), the current task first, then
/// its history, newest first; history rows are marked with ` \_ `.
fn ps_rows(
    mut tasks: Vec<Task>,
    hostnames: &BTreeMap<String, String>,
    no_trunc: bool,
) -> Vec<Value> {
    let created = |t: &Task| t.meta.as_ref().map_or(0, |m| m.created_at);
    tasks.sort_by(|a, b| {
        (
            a.service_name.as_str(),
            a.slot,
            if a.slot == 0 { a.node_id.as_str() } else { "" },
        )
            .cmp(&(
                b.service_name.as_str(),
                b.slot,
                if b.slot == 0 { b.node_id.as_str() } else { "" },
            ))
            .then(
                (b.desired_state() <= TaskState::Running)
                    .cmp(&(a.desired_state() <= TaskState::Running)),
            )
            .then(created(b).cmp(&created(a)))
    });
    let mut rows = Vec::new();
    let mut previous_group: Option<String> = None;
    for t in &tasks {
        let name = task_name(t);
        let first = previous_group.as_deref() != Some(&name);
        previous_group = Some(name.clone());
        let status = t.status.clone().unwrap_or_default();
        let state = TaskState::try_from(status.state)
            .map(|s| s.display())
            .unwrap_or("Unknown");
        let desired = TaskState::try_from(t.desired_state)
            .map(|s| s.display())
            .unwrap_or("Unknown");
        let mut error = status.err.clone();
        if !no_trunc && error.chars().count() > 30 {
            error = format!("{}…", error.chars().take(29).collect::<String>());
        }
        rows.push(json!({
            "ID": if no_trunc { t.id.clone() } else { short(&t.id).to_string() },
            "Name": if first { name } else { format!(" \\_ {name}") },
            "Image": t.spec.as_ref().and_then(|s| s.container.as_ref()).map(|c| c.image.clone()).unwrap_or_default(),
            "Node": hostnames.get(&t.node_id).cloned().unwrap_or_default(),
            "DesiredState": desired,
            "CurrentState": format!("{state} {}", output::ago(status.timestamp)),
            "Error": if error.is_empty() { String::new() } else { format!("\"{error}\"") },
            "Ports": ports(t.endpoint.as_ref().map_or(&[], |e| e.ports.as_slice()), true),
        }));
    }
    rows
}

/// `service ps` and `node ps`: the tasks' IDs (`-q`), or a table of them with their history.
pub(super) fn task_list(
    format: &Format,
    tasks: Vec<Task>,
    names: &BTreeMap<String, String>,
    args: &PsArgs,
) -> Result<()> {
    if args.quiet {
        for t in &tasks {
            outln!(
                "{}",
                if args.no_trunc {
                    t.id.as_str()
                } else {
                    short(&t.id)
                }
            );
        }
        return Ok(());
    }
    let rows = ps_rows(tasks, names, args.no_trunc);
    output::print_list(
        format,
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS",
        ],
        &[
            "ID",
            "Name",
            "Image",
            "Node",
            "DesiredState",
            "CurrentState",
            "Error",
            "Ports",
        ],
        &rows,
    )
}

/// The object at `path` in `v`, if there is one.
fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut v = v;
    for key in path {
        v = v.get_mut(*key)?;
    }
    v.as_object_mut()
}

/// Adds a task spec's networks to its inspect object at `path` (docker's
/// `TaskTemplate.Networks`: `[{"Target": ..., "Aliases": [...]}]`), unless it has none.
fn put_task_networks(v: &mut Value, path: &[&str], task: Option<&TaskSpec>) {
    let Some(task) = task.filter(|t| !t.networks.is_empty()) else {
        return;
    };
    let networks: Vec<Value> = task
        .networks
        .iter()
        .map(|n| {
            let mut o = Map::new();
            o.insert("Target".into(), Value::String(n.target.clone()));
            if !n.aliases.is_empty() {
                o.insert("Aliases".into(), json!(n.aliases));
            }
            Value::Object(o)
        })
        .collect();
    if let Some(o) = object_at(v, path) {
        o.insert("Networks".into(), Value::Array(networks));
    }
}

/// A service as `service inspect` and `orch inspect` show it: the Engine API's object, with
/// its networks (`Spec.TaskTemplate.Networks`) and virtual IPs (`Endpoint.VirtualIPs`).
pub(super) fn service_json(s: &Service) -> Value {
    let mut v = json::service(s);
    fn task(spec: Option<&orch_api::pb::ServiceSpec>) -> Option<&TaskSpec> {
        spec.and_then(|sp| sp.task.as_ref())
    }
    put_task_networks(&mut v, &["Spec", "TaskTemplate"], task(s.spec.as_ref()));
    put_task_networks(
        &mut v,
        &["PreviousSpec", "TaskTemplate"],
        task(s.previous_spec.as_ref()),
    );
    if !s.virtual_ips.is_empty() {
        let vips: Vec<Value> = s
            .virtual_ips
            .iter()
            .map(|vip| {
                let mut o = Map::new();
                o.insert("NetworkID".into(), Value::String(vip.network_id.clone()));
                if !vip.addr.is_empty() {
                    o.insert("Addr".into(), Value::String(vip.addr.clone()));
                }
                Value::Object(o)
            })
            .collect();
        if let Some(e) = object_at(&mut v, &["Endpoint"]) {
            e.insert("VirtualIPs".into(), Value::Array(vips));
        }
    }
    v
}

/// A task as `orch inspect` shows it: the Engine API's object, with its spec's networks and
/// its addresses on them (`NetworksAttachments`: `[{"Network": {"ID": ...}, "Addresses":
/// ["10.0.1.3/24"]}]`).
pub(super) fn task_json(t: &Task) -> Value {
    let mut v = json::task(t);
    put_task_networks(&mut v, &["Spec"], t.spec.as_ref());
    if !t.networks.is_empty() {
        let attachments: Vec<Value> = t
            .networks
            .iter()
            .map(|n| {
                let addresses: Vec<&str> = Some(n.addr.as_str())
                    .filter(|a| !a.is_empty())
                    .into_iter()
                    .collect();
                json!({ "Network": { "ID": n.network_id }, "Addresses": addresses })
            })
            .collect();
        if let Some(o) = v.as_object_mut() {
            o.insert("NetworksAttachments".into(), Value::Array(attachments));
        }
    }
    v
}

/// `service inspect --pretty`; `networks` (the cluster's) name the service's networks.
pub(super) fn print_pretty(s: &Service, networks: &[Network]) {
    let spec = s.spec.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();
    outln!("\nID:\t\t{}", s.id);
    outln!("Name:\t\t{}", spec.name);
    if !spec.labels.is_empty() {
        outln!("Labels:");
        let mut labels: Vec<_> = spec.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            outln!(" {k}={v}");
        }
    }
    match &spec.mode {
        Some(Mode::Replicated(r)) => {
            outln!("Service Mode:\tReplicated\n Replicas:\t{}", r.replicas)
        }
        Some(Mode::Global(_)) => outln!("Service Mode:\tGlobal"),
        Some(Mode::ReplicatedJob(j)) => outln!(
            "Service Mode:\tReplicated Job\n Max Concurrent Tasks:\t{}\n Total Completions:\t{}",
            j.max_concurrent,
            j.total_completions
        ),
        Some(Mode::GlobalJob(_)) => outln!("Service Mode:\tGlobal Job"),
        None => {}
    }
    if let Some(u) = &s.update_status {
        outln!(
            "UpdateStatus:\n State:\t\t{}",
            json::update_state_name(u.state)
        );
        if u.started_at > 0 {
            outln!(" Started:\t{}", output::ago(u.started_at));
        }
        if u.completed_at > 0 {
            outln!(" Completed:\t{}", output::ago(u.completed_at));
        }
        outln!(" Message:\t{}", u.message);
    }
    if let Some(p) = &task.placement {
        if !p.constraints.is_empty() {
            outln!("Placement:\n Constraints:\t{:?}", p.constraints);
        }
        for pref in &p.preferences {
            outln!(" Preferences:\tSpread={}", pref.spread_descriptor);
        }
        if p.max_replicas > 0 {
            outln!(" Max Replicas Per Node:\t{}", p.max_replicas);
        }
    }
    for (title, u) in [
        ("UpdateConfig", &spec.update),
        ("RollbackConfig", &spec.rollback),
    ] {
        let u = u.unwrap_or_default();
        outln!("{title}:\n Parallelism:\t{}", u.parallelism);
        if u.delay > 0 {
            outln!(
                " Delay:\t\t{}",
                output::format_duration(std::time::Duration::from_nanos(u.delay as u64))
            );
        }
        outln!(
            " On failure:\t{}",
            json::failure_action_name(u.failure_action)
        );
        outln!(
            " Monitoring Period: {}",
            output::format_duration(std::time::Duration::from_nanos(u.monitor.max(0) as u64))
        );
        outln!(" Max failure ratio: {}", u.max_failure_ratio);
        outln!(" Update order:      {}", json::update_order_name(u.order));
    }
    outln!("ContainerSpec:\n Image:\t\t{}", c.image);
    if !c.args.is_empty() {
        outln!(" Args:\t\t{}", c.args.join(" "));
    }
    if !c.env.is_empty() {
        outln!(" Env:\t\t{}", c.env.join(" "));
    }
    if let Some(r) = &task.restart {
        outln!(
            "RestartPolicy:\n Condition:\t{}",
            json::restart_condition_name(r.condition)
        );
        outln!(
            " Delay:\t\t{}",
            output::format_duration(std::time::Duration::from_nanos(r.delay.max(0) as u64))
        );
        outln!(" Max attempts:\t{}", r.max_attempts);
    }
    if let Some(r) = &task.resources {
        outln!("Resources:");
        if let Some(l) = &r.reservations {
            outln!(
                " Reservations:\n  CPU:\t\t{}\n  Memory:\t{}",
                l.nano_cpus as f64 / 1e9,
                output::bytes(l.memory_bytes)
            );
        }
        if let Some(l) = &r.limits {
            outln!(
                " Limits:\n  CPU:\t\t{}\n  Memory:\t{}",
                l.nano_cpus as f64 / 1e9,
                output::bytes(l.memory_bytes)
            );
        }
    }
    if !task.networks.is_empty() {
        let names: Vec<String> = task
            .networks
            .iter()
            .map(|n| {
                resolve(networks, &n.target)
                    .and_then(|net| net.spec.as_ref())
                    .map_or_else(|| n.target.clone(), |spec| spec.name.clone())
            })
            .collect();
        outln!("Networks:\t{}", names.join(" "));
    }
    outln!(
        "Endpoint Mode:\t{}",
        spec.endpoint
            .as_ref()
            .map(|e| e.mode.clone())
            .unwrap_or_else(|| "vip".into())
    );
    let published: Vec<String> = service_ports(s)
        .iter()
        .map(|p| {
            format!(
                "{}:{}/{} ({})",
                p.published_port,
                p.target_port,
                p.protocol,
                orch_api::network::publish_mode_name(p)
            )
        })
        .collect();
    if !published.is_empty() {
        outln!("Ports:\t\t{}", published.join(", "));
    }
}

/// `service logs`: each line of each message, to stdout or stderr as the task wrote it, behind
/// docker's `service.slot.task@node    | ` prefix (unless `--raw`).
pub(super) async fn log_messages(
    mut stream: Streaming<LogMessage>,
    names: &BTreeMap<String, String>,
    args: &LogsArgs,
) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    while let Some(m) = stream.message().await.map_err(rpc)? {
        let slot = if m.slot > 0 {
            m.slot.to_string()
        } else {
            m.node_id.clone()
        };
        let prefix = if args.raw {
            String::new()
        } else if args.no_task_ids {
            format!(
                "{}.{}@{}    | ",
                m.service_name,
                slot,
                names.get(&m.node_id).cloned().unwrap_or_default()
            )
        } else {
            format!(
                "{}.{}.{}@{}    | ",
                m.service_name,
                slot,
                short(&m.task_id),
                names.get(&m.node_id).cloned().unwrap_or_default()
            )
        };
        let time = if args.timestamps && m.timestamp > 0 {
            format!("{} ", output::rfc3339(m.timestamp))
        } else {
            String::new()
        };
        let text = String::from_utf8_lossy(&m.data);
        for line in text.lines() {
            let out: &mut dyn Write = if m.stream == 2 {
                &mut stderr
            } else {
                &mut stdout
            };
            // `service logs -f | head` ends when the reader goes away.
            if let Err(e) = writeln!(out, "{prefix}{time}{line}") {
                output::output_failed(&e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use orch_api::pb::{
        EndpointSpec, NetworkAttachment, NetworkAttachmentConfig, ServiceSpec, VirtualIp,
    };

    use super::*;

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
        for (case, service, pointer, expected) in cases {
            let v = service_json(service);
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
                "attachments in docker's shape",
                &attached,
                "/NetworksAttachments",
                Some(json!([
                    { "Network": { "ID": "net1" }, "Addresses": ["10.0.1.3/24"] },
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
        for (case, task, pointer, expected) in cases {
            let v = task_json(task);
            assert_eq!(v.pointer(pointer), expected.as_ref(), "{case}: {v:#}");
        }
    }
}
