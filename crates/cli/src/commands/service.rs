//! `orch service create|ls|ps|inspect|scale|rm` and `orch node ps`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use orch_api::ids::short;
use orch_api::pb::control_client::ControlClient;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    CreateServiceRequest, GetServiceRequest, ListNodesRequest, ListServicesRequest,
    ListTasksRequest, PublishMode, Service, Task, TaskState, UpdateServiceRequest,
};
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::spec_flags::{build_spec, timeout, SpecFlags};
use crate::client::{rpc, DaemonError, Target};
use crate::output::{self, json, progress, Format};

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a new service
    Create(Box<CreateArgs>),
    /// List services
    #[command(alias = "list")]
    Ls(LsArgs),
    /// List the tasks of one or more services
    Ps(PsArgs),
    /// Display detailed information on one or more services
    Inspect(InspectArgs),
    /// Scale one or multiple replicated services
    Scale(ScaleArgs),
    /// Update a service
    Update(Box<UpdateArgs>),
    /// Revert changes to a service's configuration
    Rollback {
        #[command(flatten)]
        wait: WaitFlags,
        service: String,
    },
    /// Fetch the logs of a service or task
    Logs(LogsArgs),
    /// Remove one or more services
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
}

/// How a command that changes a service waits for it.
#[derive(Args, Debug, Default)]
pub struct WaitFlags {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Give up waiting after this long (e.g. 2m)
    #[arg(long)]
    pub timeout: Option<String>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub flags: SpecFlags,
    #[command(flatten)]
    pub wait: WaitFlags,
    pub image: String,
    /// COMMAND and ARG...: the container's Args, as docker's
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(short, long)]
    quiet: bool,
    #[arg(short, long)]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output (desired-state=running|shutdown|accepted, node=, name=, id=)
    #[arg(short, long)]
    pub filter: Vec<String>,
    #[arg(long)]
    pub format: Option<String>,
    pub targets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long)]
    pretty: bool,
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub flags: SpecFlags,
    /// Service image tag
    #[arg(long)]
    pub image: Option<String>,
    /// Force update even if no changes require it
    #[arg(long)]
    pub force: bool,
    /// Service command args (replaces them; split on spaces)
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    #[arg(long)]
    pub env_add: Vec<String>,
    #[arg(long)]
    pub env_rm: Vec<String>,
    #[arg(long)]
    pub label_add: Vec<String>,
    #[arg(long)]
    pub label_rm: Vec<String>,
    #[arg(long)]
    pub container_label_add: Vec<String>,
    #[arg(long)]
    pub container_label_rm: Vec<String>,
    #[arg(long)]
    pub constraint_add: Vec<String>,
    #[arg(long)]
    pub constraint_rm: Vec<String>,
    #[arg(long)]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path
    #[arg(long)]
    pub mount_rm: Vec<String>,
    #[arg(long)]
    pub publish_add: Vec<String>,
    /// Remove a published port (<published>[/protocol] or target=<port>)
    #[arg(long)]
    pub publish_rm: Vec<String>,
    /// Roll back to the previous specification
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub wait: WaitFlags,
    pub service: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" or a number)
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show logs since a timestamp (unix seconds) or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    since: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Do not include task IDs in the prefix
    #[arg(long)]
    no_task_ids: bool,
    /// Do not add any prefix
    #[arg(long)]
    raw: bool,
    /// SERVICE or TASK
    target: String,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    wait: WaitFlags,
    /// SERVICE=REPLICAS...
    #[arg(required = true)]
    pairs: Vec<String>,
}

pub async fn run(target: &Target, cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Create(args) => create(target, *args).await,
        ServiceCmd::Ls(args) => ls(target, args).await,
        ServiceCmd::Ps(args) => ps(target, args).await,
        ServiceCmd::Inspect(args) => inspect(target, args).await,
        ServiceCmd::Scale(args) => scale(target, args).await,
        ServiceCmd::Rm { services } => rm(target, services).await,
        ServiceCmd::Logs(args) => logs(target, args).await,
        ServiceCmd::Update(args) => update(target, *args).await,
        ServiceCmd::Rollback { wait, service } => rollback(target, &service, &wait).await,
    }
}

async fn hostnames(control: &mut ControlClient<Channel>) -> Result<BTreeMap<String, String>> {
    let nodes = control
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .nodes;
    Ok(nodes
        .into_iter()
        .map(|n| {
            (
                n.id.clone(),
                n.description.map(|d| d.hostname).unwrap_or_default(),
            )
        })
        .collect())
}

/// Waits for convergence unless `--detach`; used after create, update, scale and rollback.
pub async fn follow(
    control: &mut ControlClient<Channel>,
    service_id: &str,
    wait: &WaitFlags,
    expect: progress::Expect,
) -> Result<()> {
    if wait.detach {
        return Ok(());
    }
    let names = hostnames(control).await?;
    progress::wait(
        control,
        service_id,
        timeout(&wait.timeout)?,
        wait.quiet,
        &names,
        expect,
    )
    .await
}

async fn create(target: &Target, args: CreateArgs) -> Result<()> {
    let spec = build_spec(&args.flags, &args.image, &args.args)?;
    let mut control = target.control()?;
    let service = control
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await
        .map_err(rpc)?
        .into_inner();
    outln!("{}", service.id);
    follow(
        &mut control,
        &service.id,
        &args.wait,
        progress::Expect::Converge,
    )
    .await
}

pub fn mode_name(s: &Service) -> &'static str {
    match s.spec.as_ref().and_then(|sp| sp.mode.as_ref()) {
        Some(Mode::Global(_)) => "global",
        Some(Mode::ReplicatedJob(_)) => "replicated job",
        Some(Mode::GlobalJob(_)) => "global job",
        _ => "replicated",
    }
}

fn ports(endpoint: Option<&orch_api::pb::EndpointSpec>, host_only: bool) -> String {
    endpoint
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| !host_only || p.publish_mode == PublishMode::Host as i32)
                .map(|p| format!("*:{}->{}/{}", p.published_port, p.target_port, p.protocol))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

async fn ls(target: &Target, args: LsArgs) -> Result<()> {
    let format = Format::parse(args.format.as_deref())?;
    let list = target
        .control()?
        .list_services(ListServicesRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    let mut services = list.services.clone();
    for f in &args.filter {
        let Some((k, v)) = f.split_once('=') else {
            bail!("bad format of filter (expected name=value)")
        };
        services.retain(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            match k {
                "name" => spec.name.starts_with(v),
                "id" => s.id.starts_with(v),
                "mode" => mode_name(s).replace(' ', "-") == v,
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => spec.labels.get(lk).is_some_and(|x| x == lv),
                    None => spec.labels.contains_key(v),
                },
                _ => true,
            }
        });
    }
    services.sort_by(|a, b| {
        a.spec
            .as_ref()
            .map(|s| &s.name)
            .cmp(&b.spec.as_ref().map(|s| &s.name))
    });
    if args.quiet {
        for s in &services {
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
                "Ports": ports(spec.endpoint.as_ref(), false),
            })
        })
        .collect();
    output::print_list(
        &format,
        &["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"],
        &["ID", "Name", "Mode", "Replicas", "Image", "Ports"],
        &rows,
    )
}

fn task_name(t: &Task) -> String {
    if t.slot > 0 {
        format!("{}.{}", t.service_name, t.slot)
    } else {
        format!("{}.{}", t.service_name, t.node_id)
    }
}

fn matches_filter(t: &Task, filter: &str, hostnames: &BTreeMap<String, String>) -> Result<bool> {
    let Some((k, v)) = filter.split_once('=') else {
        bail!("bad format of filter (expected name=value)")
    };
    Ok(match k {
        "desired-state" => match v {
            "running" => t.desired_state <= TaskState::Running as i32,
            "shutdown" => t.desired_state >= TaskState::Shutdown as i32,
            "accepted" => t.desired_state <= TaskState::Accepted as i32,
            other => bail!("invalid desired-state filter {other:?}: running, shutdown or accepted"),
        },
        "node" => t.node_id.starts_with(v) || hostnames.get(&t.node_id).is_some_and(|h| h == v),
        "name" => task_name(t).starts_with(v),
        "id" => t.id.starts_with(v),
        other => bail!("invalid filter '{other}'"),
    })
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
                (b.desired_state <= TaskState::Running as i32)
                    .cmp(&(a.desired_state <= TaskState::Running as i32)),
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
            "Ports": ports(t.endpoint.as_ref(), true),
        }));
    }
    rows
}

async fn print_tasks(target: &Target, request: ListTasksRequest, args: &PsArgs) -> Result<()> {
    let format = Format::parse(args.format.as_deref())?;
    let mut control = target.control()?;
    let names = hostnames(&mut control).await?;
    let mut tasks = control
        .list_tasks(request)
        .await
        .map_err(rpc)?
        .into_inner()
        .tasks;
    for f in &args.filter {
        let mut kept = Vec::new();
        for t in tasks {
            if matches_filter(&t, f, &names)? {
                kept.push(t);
            }
        }
        tasks = kept;
    }
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
    let rows = ps_rows(tasks, &names, args.no_trunc);
    output::print_list(
        &format,
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

async fn ps(target: &Target, args: PsArgs) -> Result<()> {
    if args.targets.is_empty() {
        bail!("\"orch service ps\" requires at least 1 argument");
    }
    let mut control = target.control()?;
    let mut ids = Vec::new();
    for s in &args.targets {
        let service = control
            .get_service(GetServiceRequest { service: s.clone() })
            .await
            .map_err(rpc)?
            .into_inner();
        ids.push(service.id);
    }
    print_tasks(
        target,
        ListTasksRequest {
            service_ids: ids,
            ..Default::default()
        },
        &args,
    )
    .await
}

/// `orch inspect [--type service|node|task] ID...`: services, nodes and tasks alike.
pub async fn inspect_any(
    target: &Target,
    kind: Option<&str>,
    format: Option<&str>,
    refs: &[String],
) -> Result<()> {
    let mut control = target.control()?;
    let mut objects = Vec::new();
    for r in refs {
        if matches!(kind, None | Some("service")) {
            if let Ok(s) = control
                .get_service(GetServiceRequest { service: r.clone() })
                .await
            {
                objects.push(json::service(&s.into_inner()));
                continue;
            }
        }
        if matches!(kind, None | Some("node")) {
            if let Ok(n) = control
                .get_node(orch_api::pb::GetNodeRequest { node: r.clone() })
                .await
            {
                objects.push(json::node(&n.into_inner()));
                continue;
            }
        }
        if matches!(kind, None | Some("task")) {
            let tasks = control
                .list_tasks(ListTasksRequest::default())
                .await
                .map_err(rpc)?
                .into_inner()
                .tasks;
            let found: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.id.starts_with(r.as_str()))
                .collect();
            if let [t] = found.as_slice() {
                objects.push(json::task(t));
                continue;
            }
        }
        bail!(DaemonError(format!("No such object: {r}")));
    }
    output::print_inspect(format, &objects)
}

pub async fn node_ps(target: &Target, args: PsArgs) -> Result<()> {
    let mut control = target.control()?;
    let refs = if args.targets.is_empty() {
        vec![target.self_node_id()]
    } else {
        args.targets.clone()
    };
    let mut ids = Vec::new();
    for r in refs {
        let node = control
            .get_node(orch_api::pb::GetNodeRequest { node: r })
            .await
            .map_err(rpc)?
            .into_inner();
        ids.push(node.id);
    }
    print_tasks(
        target,
        ListTasksRequest {
            node_ids: ids,
            ..Default::default()
        },
        &args,
    )
    .await
}

async fn inspect(target: &Target, args: InspectArgs) -> Result<()> {
    let mut control = target.control()?;
    let mut services = Vec::new();
    for s in &args.services {
        services.push(
            control
                .get_service(GetServiceRequest { service: s.clone() })
                .await
                .map_err(rpc)?
                .into_inner(),
        );
    }
    if args.pretty {
        for (i, s) in services.iter().enumerate() {
            if i > 0 {
                outln!();
            }
            print_pretty(s);
        }
        return Ok(());
    }
    let objects: Vec<Value> = services.iter().map(json::service).collect();
    output::print_inspect(args.format.as_deref(), &objects)
}

fn print_pretty(s: &Service) {
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
    outln!(
        "Endpoint Mode:\t{}",
        spec.endpoint
            .as_ref()
            .map(|e| e.mode.clone())
            .unwrap_or_else(|| "vip".into())
    );
    let ports = ports(spec.endpoint.as_ref(), false);
    if !ports.is_empty() {
        outln!("Ports:\t\t{ports}");
    }
}

async fn scale(target: &Target, args: ScaleArgs) -> Result<()> {
    let mut control = target.control()?;
    let mut errors = Vec::new();
    let mut scaled = Vec::new();
    for pair in &args.pairs {
        let Some((name, n)) = pair.split_once('=') else {
            errors.push(format!(
                "invalid scale specifier '{pair}': expected SERVICE=REPLICAS"
            ));
            continue;
        };
        let Ok(replicas) = n.parse::<u64>() else {
            errors.push(format!(
                "invalid replicas value {n}: must be a non-negative number"
            ));
            continue;
        };
        let service = match control
            .get_service(GetServiceRequest {
                service: name.to_string(),
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(status) => {
                errors.push(status.message().to_string());
                continue;
            }
        };
        let mut spec = service.spec.clone().unwrap_or_default();
        match spec.mode.as_mut() {
            Some(Mode::Replicated(r)) => r.replicas = replicas,
            Some(Mode::ReplicatedJob(j)) => {
                j.total_completions = replicas;
                j.max_concurrent = j.max_concurrent.min(replicas.max(1));
            }
            _ => {
                errors.push(format!(
                    "scale can only be used with replicated or replicated-job mode ({name} is {})",
                    mode_name(&service)
                ));
                continue;
            }
        }
        let req = UpdateServiceRequest {
            service: service.id.clone(),
            version: service.meta.as_ref().map_or(0, |m| m.version),
            spec: Some(spec),
            rollback: false,
        };
        match control.update_service(req).await {
            Ok(_) => {
                outln!("{name} scaled to {replicas}");
                scaled.push(service.id.clone());
            }
            Err(status) => errors.push(status.message().to_string()),
        }
    }
    for id in scaled {
        follow(&mut control, &id, &args.wait, progress::Expect::Converge).await?;
    }
    if !errors.is_empty() {
        bail!(DaemonError(errors.join("\n")));
    }
    Ok(())
}

async fn rm(target: &Target, services: Vec<String>) -> Result<()> {
    let mut control = target.control()?;
    let mut errors = Vec::new();
    for name in services {
        match control
            .remove_service(GetServiceRequest {
                service: name.clone(),
            })
            .await
        {
            Ok(_) => outln!("{name}"),
            Err(status) if status.code() == tonic::Code::NotFound => {
                errors.push(format!("No such service: {name}"))
            }
            Err(status) => errors.push(status.message().to_string()),
        }
    }
    if !errors.is_empty() {
        bail!(DaemonError(errors.join("\n")));
    }
    Ok(())
}

fn parse_since(s: &str) -> Result<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    let d = output::parse_duration(s).map_err(|_| {
        anyhow::anyhow!("invalid --since {s:?}: unix seconds or a duration like 10m")
    })?;
    Ok(orch_api::now_nanos() / 1_000_000_000 - d.as_secs() as i64)
}

async fn logs(target: &Target, args: LogsArgs) -> Result<()> {
    use std::io::Write;
    let tail = match args.tail.as_str() {
        "all" => -1,
        n => n
            .parse::<i64>()
            .map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: a number or \"all\""))?,
    };
    let since = args
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    let mut control = target.control()?;
    let names = hostnames(&mut control).await?;
    // A TARGET that is not a service may be a task.
    let (service, task) = match control
        .get_service(GetServiceRequest {
            service: args.target.clone(),
        })
        .await
    {
        Ok(_) => (args.target.clone(), String::new()),
        Err(_) => (String::new(), args.target.clone()),
    };
    let request = orch_api::pb::ServiceLogsRequest {
        service,
        task,
        follow: args.follow,
        tail,
        since,
        timestamps: args.timestamps,
    };
    let mut stream = control
        .service_logs(request)
        .await
        .map_err(rpc)?
        .into_inner();
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

fn key_of(env: &str) -> &str {
    env.split_once('=').map_or(env, |(k, _)| k)
}

/// Applies `service update`'s flags to the service's current spec.
fn updated_spec(service: &Service, args: &UpdateArgs) -> Result<orch_api::pb::ServiceSpec> {
    use super::spec_flags::{parse_key_values, parse_mount, parse_publish};
    let mut spec = service.spec.clone().unwrap_or_default();
    if args.flags.name.as_ref().is_some_and(|n| *n != spec.name) {
        bail!("renaming services is not supported");
    }
    if args.flags.mode.is_some() {
        bail!("--mode cannot be changed by an update");
    }
    if let Some(r) = args.flags.replicas {
        let r = u64::try_from(r).map_err(|_| {
            anyhow::anyhow!("invalid argument \"{r}\" for \"--replicas\" flag: must be 0 or more")
        })?;
        match spec.mode.as_mut() {
            Some(Mode::Replicated(m)) => m.replicas = r,
            Some(Mode::ReplicatedJob(j)) => j.total_completions = r,
            _ => bail!("replicas can only be used with replicated or replicated-job mode"),
        }
    }
    for (k, v) in parse_key_values(&args.label_add)? {
        spec.labels.insert(k, v);
    }
    for k in &args.label_rm {
        spec.labels.remove(k);
    }
    {
        let task = spec.task.get_or_insert_with(Default::default);
        if args.force {
            task.force_update += 1;
        }
        let c = task.container.get_or_insert_with(Default::default);
        if let Some(image) = &args.image {
            c.image = image.clone();
        }
        if let Some(a) = &args.args {
            c.args = a.split_whitespace().map(str::to_string).collect();
        }
        for k in &args.env_rm {
            c.env.retain(|e| key_of(e) != k);
        }
        for e in &args.env_add {
            c.env.retain(|x| key_of(x) != key_of(e));
            c.env.push(e.clone());
        }
        for (k, v) in parse_key_values(&args.container_label_add)? {
            c.labels.insert(k, v);
        }
        for k in &args.container_label_rm {
            c.labels.remove(k);
        }
        for target in &args.mount_rm {
            c.mounts.retain(|m| &m.target != target);
        }
        for m in &args.mount_add {
            let m = parse_mount(m)?;
            c.mounts.retain(|x| x.target != m.target);
            c.mounts.push(m);
        }
        if !args.constraint_add.is_empty() || !args.constraint_rm.is_empty() {
            let p = task.placement.get_or_insert_with(Default::default);
            p.constraints.retain(|c| !args.constraint_rm.contains(c));
            for c in &args.constraint_add {
                orch_api::constraint::Constraint::parse(c)?;
                if !p.constraints.contains(c) {
                    p.constraints.push(c.clone());
                }
            }
        }
    }
    if !args.publish_add.is_empty() || !args.publish_rm.is_empty() {
        let e = spec.endpoint.get_or_insert_with(Default::default);
        for r in &args.publish_rm {
            let (port, proto) = r
                .trim_start_matches("target=")
                .split_once('/')
                .unwrap_or((r.trim_start_matches("target="), "tcp"));
            let port: u32 = port
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid --publish-rm {r:?}"))?;
            e.ports.retain(|p| {
                !(p.protocol == proto && (p.published_port == port || p.target_port == port))
            });
        }
        for p in &args.publish_add {
            e.ports.push(parse_publish(p)?);
        }
    }
    // The options create and update share (env, health, restart, update config, ...).
    super::spec_flags::apply(&args.flags, &mut spec)?;
    Ok(spec)
}

/// The manager refused an update because the service changed since it was read.
fn out_of_sequence(status: &tonic::Status) -> bool {
    status.message().contains("update out of sequence")
}

async fn update(target: &Target, args: UpdateArgs) -> Result<()> {
    let mut control = target.control()?;
    // The flags change the service as it is now; the orchestrator also writes the service (its
    // update status), so a change between the read and the write is retried from a new read.
    let mut attempt = 0;
    let (service, rollback) = loop {
        let service = control
            .get_service(GetServiceRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let version = service.meta.as_ref().map_or(0, |m| m.version);
        let (spec, rollback) = if args.rollback {
            (None, true)
        } else {
            (Some(updated_spec(&service, &args)?), false)
        };
        let result = control
            .update_service(UpdateServiceRequest {
                service: service.id.clone(),
                version,
                spec,
                rollback,
            })
            .await;
        match result {
            Ok(_) => break (service, rollback),
            Err(status) if out_of_sequence(&status) && attempt < 3 => attempt += 1,
            Err(status) => return Err(rpc(status)),
        }
    };
    outln!("{}", args.service);
    let expect = if rollback {
        progress::Expect::Rollback
    } else {
        progress::Expect::Update
    };
    follow(&mut control, &service.id, &args.wait, expect).await
}

async fn rollback(target: &Target, name: &str, wait: &WaitFlags) -> Result<()> {
    let mut control = target.control()?;
    let service = control
        .get_service(GetServiceRequest {
            service: name.to_string(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let version = service.meta.as_ref().map_or(0, |m| m.version);
    control
        .update_service(UpdateServiceRequest {
            service: service.id.clone(),
            version,
            spec: None,
            rollback: true,
        })
        .await
        .map_err(rpc)?;
    outln!("{name}");
    follow(&mut control, &service.id, wait, progress::Expect::Rollback).await
}
