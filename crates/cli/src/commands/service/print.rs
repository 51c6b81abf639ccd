//! What `orch service` prints: the service and task tables (`ls`, `ps` rows with their
//! history), `inspect --pretty`, and the lines of `logs`. Nothing here talks to the manager
//! but the log stream it is handed.

use std::collections::BTreeMap;

use anyhow::Result;
use orch_api::ids::short;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    ListServicesResponse, LogMessage, Network, PublishMode, Service, Task, TaskState,
};
use serde_json::{json, Value};
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
            format!("{} ", output::rfc3339_fixed(m.timestamp))
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
