//! Building and sending `orch service`'s requests: [`run`] dispatches a subcommand, specs
//! come from flags (create) or from the flags applied to the current spec (update), names and
//! ID prefixes resolve through the manager, and each subcommand makes its RPC calls and waits
//! for convergence where docker does.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use orch_api::pb::control_client::ControlClient;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    CreateServiceRequest, Empty, GetServiceRequest, ListNodesRequest, ListServicesRequest,
    ListTasksRequest, Network, Service, Task, TaskState, UpdateServiceRequest,
};
use orch_engine_api::convert::objects;
use orch_engine_api::read;
use serde_json::Value;
use tonic::transport::Channel;

use super::args::{
    CreateArgs, InspectArgs, LogsArgs, LsArgs, PsArgs, ScaleArgs, ServiceCmd, UpdateArgs, WaitFlags,
};
use super::networks::update_networks;
use super::print::{self, mode_name, task_name};
use crate::client::{rpc, DaemonError, Target};
use crate::commands::spec_flags::{build_spec, timeout};
use crate::output::{self, progress, Format};

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

/// `service ls` with these filters (`stack services`).
pub async fn ls_filtered(
    target: &Target,
    filters: &[String],
    quiet: bool,
    format: Option<String>,
) -> Result<()> {
    ls(
        target,
        LsArgs {
            quiet,
            filter: filters.to_vec(),
            format,
        },
    )
    .await
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
    print::service_list(&format, &list, &services, args.quiet)
}

fn matches_filter(t: &Task, filter: &str, hostnames: &BTreeMap<String, String>) -> Result<bool> {
    let Some((k, v)) = filter.split_once('=') else {
        bail!("bad format of filter (expected name=value)")
    };
    Ok(match k {
        "desired-state" => match v {
            "running" => t.desired_state() <= TaskState::Running,
            "shutdown" => t.desired_state() >= TaskState::Shutdown,
            "accepted" => t.desired_state() <= TaskState::Accepted,
            other => bail!("invalid desired-state filter {other:?}: running, shutdown or accepted"),
        },
        "node" => t.node_id.starts_with(v) || hostnames.get(&t.node_id).is_some_and(|h| h == v),
        "name" => task_name(t).starts_with(v),
        "id" => t.id.starts_with(v),
        other => bail!("invalid filter '{other}'"),
    })
}

/// Prints the tasks `request` lists, filtered and formatted as `args` says.
pub async fn print_tasks(target: &Target, request: ListTasksRequest, args: &PsArgs) -> Result<()> {
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
    print::task_list(&format, tasks, &names, args)
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
    let mut found = Vec::new();
    // Read once, when the first node or task needs them.
    let mut trust_root = None;
    let mut network_names = None;
    for r in refs {
        if matches!(kind, None | Some("service")) {
            if let Ok(s) = control
                .get_service(GetServiceRequest { service: r.clone() })
                .await
            {
                found.push(objects::service_with_defaults(&s.into_inner()));
                continue;
            }
        }
        if matches!(kind, None | Some("node")) {
            if let Ok(n) = control
                .get_node(orch_api::pb::GetNodeRequest { node: r.clone() })
                .await
            {
                if trust_root.is_none() {
                    trust_root = Some(read::trust_root(&mut control).await);
                }
                if let Some(root) = &trust_root {
                    found.push(objects::node(&n.into_inner(), root));
                }
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
            let matching: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.id.starts_with(r.as_str()))
                .collect();
            if let [t] = matching.as_slice() {
                if network_names.is_none() {
                    network_names = Some(read::network_names(&mut control).await.map_err(rpc)?);
                }
                if let Some(names) = &network_names {
                    found.push(objects::task(t, names));
                }
                continue;
            }
        }
        bail!(DaemonError(format!("No such object: {r}")));
    }
    output::print_inspect(format, &found)
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
        // Networks are shown by name, as docker does; the spec may hold their IDs.
        let on_networks = services.iter().any(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.task.as_ref())
                .is_some_and(|t| !t.networks.is_empty())
        });
        let networks = if on_networks {
            list_networks(&mut control).await?
        } else {
            Vec::new()
        };
        for (i, s) in services.iter().enumerate() {
            if i > 0 {
                outln!();
            }
            print::print_pretty(s, &networks);
        }
        return Ok(());
    }
    let found: Vec<Value> = services
        .iter()
        .map(objects::service_with_defaults)
        .collect();
    output::print_inspect(args.format.as_deref(), &found)
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
    let stream = control
        .service_logs(request)
        .await
        .map_err(rpc)?
        .into_inner();
    print::log_messages(stream, &names, &args).await
}

fn key_of(env: &str) -> &str {
    env.split_once('=').map_or(env, |(k, _)| k)
}

async fn list_networks(control: &mut ControlClient<Channel>) -> Result<Vec<Network>> {
    Ok(control
        .list_networks(Empty {})
        .await
        .map_err(rpc)?
        .into_inner()
        .networks)
}

/// Applies `service update`'s flags to the service's current spec; `networks` (the cluster's,
/// listed when `--network-add` or `--network-rm` is given) resolve network names and IDs.
fn updated_spec(
    service: &Service,
    args: &UpdateArgs,
    networks: &[Network],
) -> Result<orch_api::pb::ServiceSpec> {
    use crate::commands::spec_flags::{
        add_data_ref, parse_data_ref, parse_key_values, parse_mount, parse_publish,
    };
    let mut spec = service.spec.clone().unwrap_or_default();
    if args.flags.name.as_ref().is_some_and(|n| *n != spec.name) {
        bail!("renaming services is not supported");
    }
    if args.flags.mode.is_some() {
        bail!("--mode cannot be changed by an update");
    }
    if !args.flags.network.is_empty() {
        bail!("--network is for service create: use --network-add or --network-rm to change a service's networks");
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
        update_networks(task, &args.network_add, &args.network_rm, networks)?;
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
        for (refs, what, rm, add) in [
            (&mut c.secrets, "secret", &args.secret_rm, &args.secret_add),
            (&mut c.configs, "config", &args.config_rm, &args.config_add),
        ] {
            refs.retain(|r| !rm.contains(&r.name) && !rm.contains(&r.id));
            for a in add {
                let r = parse_data_ref(a, what)?;
                // Adding a name again replaces its reference (a new target or version).
                refs.retain(|x| x.name != r.name);
                add_data_ref(refs, what, r)?;
            }
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
            let p = parse_publish(p)?;
            // The same published port added again replaces the old mapping.
            e.ports.retain(|o| {
                p.published_port == 0
                    || !(o.protocol == p.protocol && o.published_port == p.published_port)
            });
            e.ports.push(p);
        }
    }
    // The options create and update share (env, health, restart, update config, ...).
    crate::commands::spec_flags::apply(&args.flags, &mut spec)?;
    Ok(spec)
}

/// The manager refused an update because the service changed since it was read.
/// (The server answers a version conflict, and only that, with ABORTED; the message is
/// docker's "update out of sequence", for people.)
fn out_of_sequence(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Aborted
}

async fn update(target: &Target, args: UpdateArgs) -> Result<()> {
    let mut control = target.control()?;
    let networks = if args.network_add.is_empty() && args.network_rm.is_empty() {
        Vec::new()
    } else {
        list_networks(&mut control).await?
    };
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
            (Some(updated_spec(&service, &args, &networks)?), false)
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

#[cfg(test)]
mod tests {
    use orch_api::pb::{NetworkAttachmentConfig, NetworkSpec, ServiceSpec, TaskSpec};

    use super::*;
    use crate::commands::spec_flags::SpecFlags;

    const FRONT_ID: &str = "f1a2b3c4d5e6f7a8b9c0d1e2f";

    fn service_on(targets: &[&str]) -> Service {
        Service {
            id: "svc1".into(),
            spec: Some(ServiceSpec {
                name: "web".into(),
                task: Some(TaskSpec {
                    networks: targets
                        .iter()
                        .map(|t| NetworkAttachmentConfig {
                            target: t.to_string(),
                            aliases: vec![],
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn targets(spec: &orch_api::pb::ServiceSpec) -> Vec<String> {
        spec.task
            .as_ref()
            .map(|t| t.networks.iter().map(|n| n.target.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn update_changes_networks_and_endpoint_mode() {
        let networks = [Network {
            id: FRONT_ID.into(),
            spec: Some(NetworkSpec {
                name: "front".into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        // (case, attached, args, Ok(targets after, endpoint mode) or Err(words of the message))
        type Expected = std::result::Result<(Vec<&'static str>, &'static str), Vec<&'static str>>;
        let cases: Vec<(&str, &[&str], UpdateArgs, Expected)> = vec![
            (
                "--network-rm by name, stored as ID",
                &[FRONT_ID, "back"],
                UpdateArgs {
                    network_rm: vec!["front".into()],
                    ..Default::default()
                },
                Ok((vec!["back"], "")),
            ),
            (
                "--network-add a network already there",
                &[FRONT_ID],
                UpdateArgs {
                    network_add: vec!["front".into()],
                    ..Default::default()
                },
                Err(vec!["service is already attached to network front"]),
            ),
            (
                "--network-add",
                &[],
                UpdateArgs {
                    network_add: vec!["name=front,alias=web".into()],
                    ..Default::default()
                },
                Ok((vec!["front"], "")),
            ),
            (
                "--network is create's",
                &[],
                UpdateArgs {
                    flags: SpecFlags {
                        network: vec!["front".into()],
                        ..Default::default()
                    },
                    ..Default::default()
                },
                Err(vec!["--network-add"]),
            ),
            (
                "--endpoint-mode dnsrr",
                &[FRONT_ID],
                UpdateArgs {
                    flags: SpecFlags {
                        endpoint_mode: Some("dnsrr".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                Ok((vec![FRONT_ID], "dnsrr")),
            ),
            (
                "--endpoint-mode unknown",
                &[],
                UpdateArgs {
                    flags: SpecFlags {
                        endpoint_mode: Some("rr".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                Err(vec!["--endpoint-mode"]),
            ),
        ];
        for (case, attached, args, expected) in cases {
            let got = updated_spec(&service_on(attached), &args, &networks);
            match (got, expected) {
                (Ok(spec), Ok((want, mode))) => {
                    assert_eq!(targets(&spec), want, "{case}");
                    assert_eq!(
                        spec.endpoint.as_ref().map_or("", |e| e.mode.as_str()),
                        mode,
                        "{case}"
                    );
                }
                (Err(e), Err(words)) => {
                    let msg = e.to_string();
                    for w in words {
                        assert!(msg.contains(w), "{case}: {msg:?} should contain {w:?}");
                    }
                }
                (got, expected) => panic!("{case}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
