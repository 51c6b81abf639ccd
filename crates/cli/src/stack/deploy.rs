//! `stack deploy` against a manager, as docker does it and then some: networks, then secrets
//! and configs (a changed file becomes a new version and the services using it roll), then
//! services in dependency order (each created once what it depends on is running, healthy or
//! completed, as the file says), unchanged services left alone (the manager ignores an update
//! that changes nothing), `--prune`, and a wait for every service at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use orch_api::pb::control_client::ControlClient;
use orch_api::pb::service_spec::Mode as PbMode;
use orch_api::pb::{
    CreateDataRequest, CreateNetworkRequest, CreateServiceRequest, DataKind, DataSpec, Empty,
    GetDataRequest, GetNetworkRequest, GetServiceRequest, ListDataRequest, ListServicesRequest,
    ListTasksRequest, RotateDataRequest, Service, Task, TaskState, UpdateDataRequest,
    UpdateServiceRequest, UpdateState,
};
use tonic::transport::Channel;

use super::convert::{self, NAMESPACE};
use super::model::{Compose, Condition, Loaded};
use crate::client::rpc;
use crate::output::progress;

pub struct Options {
    pub prune: bool,
    /// Return once everything is sent (dependencies are still waited for).
    pub detach: bool,
    pub quiet: bool,
    pub timeout: Option<Duration>,
}

/// How long a dependency is waited for when no `--timeout` is given.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(300);

fn in_stack(labels: &std::collections::HashMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE).is_some_and(|n| n == stack)
}

/// The stack's services now, by name.
pub async fn stack_services(
    control: &mut ControlClient<Channel>,
    stack: &str,
) -> Result<BTreeMap<String, Service>> {
    let list = control
        .list_services(ListServicesRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    Ok(list
        .services
        .into_iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .is_some_and(|sp| in_stack(&sp.labels, stack))
        })
        .map(|s| {
            (
                s.spec
                    .as_ref()
                    .map(|sp| sp.name.clone())
                    .unwrap_or_default(),
                s,
            )
        })
        .collect())
}

/// The stack's secrets and configs: (kind, name, ID).
pub async fn stack_data(
    control: &mut ControlClient<Channel>,
    stack: &str,
) -> Result<Vec<(DataKind, String, String)>> {
    let mut out = Vec::new();
    for kind in [DataKind::Secret, DataKind::Config] {
        let list = control
            .list_data(ListDataRequest { kind: kind as i32 })
            .await
            .map_err(rpc)?
            .into_inner();
        for obj in list.objects {
            if let Some(spec) = obj.spec.as_ref().filter(|s| in_stack(&s.labels, stack)) {
                out.push((kind, spec.name.clone(), obj.id.clone()));
            }
        }
    }
    Ok(out)
}

/// The stack's networks: (name, ID).
pub async fn stack_networks(
    control: &mut ControlClient<Channel>,
    stack: &str,
) -> Result<Vec<(String, String)>> {
    let list = control
        .list_networks(Empty {})
        .await
        .map_err(rpc)?
        .into_inner();
    Ok(list
        .networks
        .into_iter()
        .filter_map(|n| {
            let spec = n.spec?;
            in_stack(&spec.labels, stack).then_some((spec.name, n.id))
        })
        .collect())
}

pub async fn deploy(
    control: &mut ControlClient<Channel>,
    stack: &str,
    loaded: &Loaded,
    opts: &Options,
) -> Result<()> {
    convert::check_stack_name(stack)?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let c = &loaded.compose;
    for (key, v) in &c.volumes {
        if !v.external && (v.driver.is_some() || !v.driver_opts.is_empty() || !v.labels.is_empty())
        {
            eprintln!(
                "Ignoring volumes.{key}: driver, driver_opts and labels (each node's engine makes the volume with its default driver)"
            );
        }
    }
    let existing = stack_services(control, stack).await?;
    // What each service's update status was before this deploy: a later one is this deploy's
    // (the manager's clock, not this machine's, stamps them).
    let before: BTreeMap<String, i64> = existing
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                s.update_status.as_ref().map_or(-1, |u| u.started_at),
            )
        })
        .collect();
    if opts.prune {
        let wanted: BTreeSet<String> = c
            .services
            .keys()
            .map(|k| convert::scoped(stack, k))
            .collect();
        for name in existing.keys().filter(|n| !wanted.contains(*n)) {
            outln!("Removing service {name}");
            control
                .remove_service(GetServiceRequest {
                    service: name.clone(),
                })
                .await
                .map_err(rpc)?;
        }
    }
    networks(control, stack, c).await?;
    data(control, stack, c, DataKind::Secret).await?;
    data(control, stack, c, DataKind::Config).await?;

    let started = Instant::now();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for key in convert::creation_order(c) {
        let name = convert::scoped(stack, &key);
        for (dep, condition) in &c.services[&key].depends_on {
            let dep_name = convert::scoped(stack, dep);
            let limit = opts.timeout.unwrap_or(DEPENDENCY_WAIT);
            let left = limit.saturating_sub(started.elapsed());
            wait_dependency(control, &name, &dep_name, *condition, left, opts.quiet).await?;
        }
        let current = existing.get(&name);
        let replicas = current.and_then(|s| match s.spec.as_ref()?.mode.as_ref()? {
            PbMode::Replicated(r) => Some(r.replicas),
            _ => None,
        });
        let spec = convert::service_spec(stack, &key, c, replicas)?;
        let service = match current {
            Some(s) => {
                outln!("Updating service {name} (id: {})", s.id);
                update(control, &s.id, spec)
                    .await
                    .with_context(|| format!("failed to update service {name}"))?
            }
            None => {
                outln!("Creating service {name}");
                control
                    .create_service(CreateServiceRequest { spec: Some(spec) })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("failed to create service {name}"))?
                    .into_inner()
            }
        };
        ids.insert(name, service.id);
    }
    if opts.prune {
        prune_unused(control, stack, c).await?;
    }
    if opts.detach {
        return Ok(());
    }
    let left = opts.timeout.map(|t| t.saturating_sub(started.elapsed()));
    wait_all(control, &ids, &before, left, opts.quiet).await
}

/// Updates a service to `spec` from a fresh read (a rotated secret, or the orchestrator,
/// may have changed it since the stack was listed), again if it changes meanwhile.
async fn update(
    control: &mut ControlClient<Channel>,
    id: &str,
    mut spec: orch_api::pb::ServiceSpec,
) -> Result<Service> {
    let mut tries = 0;
    loop {
        let current = control
            .get_service(GetServiceRequest {
                service: id.to_string(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        // `--force` given earlier stays as it was (docker keeps ForceUpdate too).
        if let (Some(t), Some(old)) = (
            spec.task.as_mut(),
            current.spec.as_ref().and_then(|sp| sp.task.as_ref()),
        ) {
            t.force_update = old.force_update;
        }
        let sent = control
            .update_service(UpdateServiceRequest {
                service: id.to_string(),
                version: current.meta.as_ref().map_or(0, |m| m.version),
                spec: Some(spec.clone()),
                rollback: false,
            })
            .await;
        match sent {
            Ok(s) => return Ok(s.into_inner()),
            Err(e) if tries < 5 && e.message().contains("out of sequence") => tries += 1,
            Err(e) => return Err(rpc(e)),
        }
    }
}

/// The keys of the networks the services join (`default` for those that name none).
fn used_networks(c: &Compose) -> BTreeSet<String> {
    c.services
        .values()
        .flat_map(|s| convert::service_networks(s).into_iter().map(|(k, _)| k))
        .collect()
}

/// The file's secrets or configs.
fn definitions(c: &Compose, kind: DataKind) -> &BTreeMap<String, crate::stack::model::DataDef> {
    match kind {
        DataKind::Secret => &c.secrets,
        DataKind::Config => &c.configs,
    }
}

/// Creates the networks the services use that do not exist; external ones must.
async fn networks(control: &mut ControlClient<Channel>, stack: &str, c: &Compose) -> Result<()> {
    for key in used_networks(c) {
        let def = c.networks.get(&key);
        let name = convert::network_name(stack, &key, def);
        let exists = control
            .get_network(GetNetworkRequest {
                network: name.clone(),
            })
            .await
            .is_ok();
        if def.is_some_and(|n| n.external) {
            if !exists {
                bail!(
                    "network {name:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed"
                );
            }
            continue;
        }
        if exists {
            continue;
        }
        outln!("Creating network {name}");
        control
            .create_network(CreateNetworkRequest {
                spec: Some(convert::network_spec(stack, &key, def)),
            })
            .await
            .map_err(rpc)
            .with_context(|| format!("failed to create network {name}"))?;
    }
    Ok(())
}

fn kind_name(kind: DataKind) -> &'static str {
    match kind {
        DataKind::Secret => "secret",
        DataKind::Config => "config",
    }
}

/// Creates the secrets (or configs) the file defines; an existing one whose file changed
/// gets a new version (the services using it roll onto it), and its labels follow the file.
async fn data(
    control: &mut ControlClient<Channel>,
    stack: &str,
    c: &Compose,
    kind: DataKind,
) -> Result<()> {
    let what = kind_name(kind);
    let defs = definitions(c, kind);
    for (key, def) in defs {
        let name = convert::data_name(stack, key, def);
        let existing = control
            .get_data(GetDataRequest {
                kind: kind as i32,
                name: name.clone(),
            })
            .await
            .ok()
            .map(|r| r.into_inner());
        if def.external {
            if existing.is_none() {
                bail!("{what} not found: {name} (declared as external)");
            }
            continue;
        }
        let Some(file) = &def.file else {
            bail!("{what} {key:?} has neither a file nor external: true");
        };
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read the file of {what} {key}: {}", file.display()))?;
        let mut labels = def.labels.clone();
        labels.insert(NAMESPACE.into(), stack.into());
        match existing {
            None => {
                outln!("Creating {what} {name}");
                control
                    .create_data(CreateDataRequest {
                        kind: kind as i32,
                        spec: Some(DataSpec {
                            name: name.clone(),
                            labels: labels.into_iter().collect(),
                            template_driver: def.template_driver.clone().unwrap_or_default(),
                        }),
                        data: bytes,
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("failed to create {what} {name}"))?;
            }
            Some(obj) => {
                let rotated = control
                    .rotate_data(RotateDataRequest {
                        kind: kind as i32,
                        name: name.clone(),
                        data: bytes,
                        if_changed: true,
                    })
                    .await
                    .map_err(rpc)
                    .with_context(|| format!("failed to update {what} {name}"))?
                    .into_inner();
                let before = obj.versions.last().map_or(0, |v| v.version);
                if rotated.version != before {
                    outln!(
                        "Updating {what} {name} (version {}{})",
                        rotated.version,
                        if rotated.services.is_empty() {
                            String::new()
                        } else {
                            format!(", rolling {}", rotated.services.join(", "))
                        }
                    );
                }
                let now = rotated.object.unwrap_or(obj);
                let current: BTreeMap<String, String> = now
                    .spec
                    .as_ref()
                    .map(|s| s.labels.clone().into_iter().collect())
                    .unwrap_or_default();
                if current != labels {
                    control
                        .update_data(UpdateDataRequest {
                            kind: kind as i32,
                            name: name.clone(),
                            version: now.meta.as_ref().map_or(0, |m| m.version),
                            labels: labels.into_iter().collect(),
                            data: None,
                        })
                        .await
                        .map_err(rpc)
                        .with_context(|| format!("failed to update the labels of {what} {name}"))?;
                }
            }
        }
    }
    Ok(())
}

/// `--prune`: the stack's networks, secrets and configs the file no longer names (services
/// were pruned first). A network still draining its tasks is tried again for a while.
async fn prune_unused(
    control: &mut ControlClient<Channel>,
    stack: &str,
    c: &Compose,
) -> Result<()> {
    let wanted_data: BTreeSet<(DataKind, String)> = [DataKind::Secret, DataKind::Config]
        .into_iter()
        .flat_map(|kind| {
            definitions(c, kind)
                .iter()
                .map(move |(k, d)| (kind, convert::data_name(stack, k, d)))
        })
        .collect();
    for (kind, name, id) in stack_data(control, stack).await? {
        if wanted_data.contains(&(kind, name.clone())) {
            continue;
        }
        outln!("Removing {} {name}", kind_name(kind));
        let removed = control
            .remove_data(GetDataRequest {
                kind: kind as i32,
                name: id,
            })
            .await;
        // A service's previous spec (kept for a rollback) may still name it: it goes at a
        // later prune, once nothing does.
        if let Err(e) = removed {
            eprintln!("Not removing {} {name}: {}", kind_name(kind), e.message());
        }
    }
    let wanted: BTreeSet<String> = used_networks(c)
        .into_iter()
        .map(|k| convert::network_name(stack, &k, c.networks.get(&k)))
        .collect();
    for (name, id) in stack_networks(control, stack).await? {
        if !wanted.contains(&name) {
            outln!("Removing network {name}");
            remove_network(control, &id).await?;
        }
    }
    Ok(())
}

/// Removes a network, trying again while a removed service's tasks still hold it.
pub async fn remove_network(control: &mut ControlClient<Channel>, id: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        match control
            .remove_network(GetNetworkRequest {
                network: id.to_string(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if started.elapsed() < Duration::from_secs(30)
                    && e.message().contains("in use") =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(rpc(e)),
        }
    }
}

async fn tasks_of(control: &mut ControlClient<Channel>, id: &str) -> Result<Vec<Task>> {
    Ok(control
        .list_tasks(ListTasksRequest {
            service_ids: vec![id.to_string()],
            ..Default::default()
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .tasks)
}

/// Whether `service`'s tasks meet `condition` now.
fn met(service: &Service, tasks: &[Task], condition: Condition) -> bool {
    let iteration = service.job_status.as_ref().map(|j| j.job_iteration);
    let current: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.desired_state() <= TaskState::Complete)
        .filter(|t| iteration.is_none_or(|i| t.job_iteration == i))
        .collect();
    let progress = progress::assess(service, tasks, &BTreeMap::new());
    match condition {
        Condition::Started => progress.converged && !current.is_empty(),
        Condition::Healthy => {
            progress.converged
                && !current.is_empty()
                && current.iter().all(|t| {
                    t.observed_state() == TaskState::Running
                        && t.status.as_ref().is_some_and(|s| s.health == "healthy")
                })
        }
        Condition::CompletedSuccessfully => {
            !current.is_empty()
                && current
                    .iter()
                    .all(|t| t.observed_state() == TaskState::Complete)
        }
    }
}

fn condition_name(c: Condition) -> &'static str {
    match c {
        Condition::Started => "running",
        Condition::Healthy => "healthy",
        Condition::CompletedSuccessfully => "completed successfully",
    }
}

async fn wait_dependency(
    control: &mut ControlClient<Channel>,
    name: &str,
    dep: &str,
    condition: Condition,
    limit: Duration,
    quiet: bool,
) -> Result<()> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let service = control
            .get_service(GetServiceRequest {
                service: dep.to_string(),
            })
            .await
            .map_err(rpc)
            .with_context(|| format!("service {name} depends on {dep}"))?
            .into_inner();
        let tasks = tasks_of(control, &service.id).await?;
        if met(&service, &tasks, condition) {
            return Ok(());
        }
        if !said && !quiet {
            outln!(
                "Waiting for {dep} to be {} before {name}",
                condition_name(condition)
            );
            said = true;
        }
        if started.elapsed() >= limit {
            bail!(
                "service {name} depends on {dep}, which was not {} within {}",
                condition_name(condition),
                crate::output::format_duration(limit)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits for every service at once, one line each; fails naming the services whose update
/// paused or rolled back, or that had not converged when `timeout` passed.
async fn wait_all(
    control: &mut ControlClient<Channel>,
    ids: &BTreeMap<String, String>,
    before: &BTreeMap<String, i64>,
    timeout: Option<Duration>,
    quiet: bool,
) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let mut lines = Vec::new();
        let mut pending = Vec::new();
        let mut failed = Vec::new();
        for (name, id) in ids {
            let service = control
                .get_service(GetServiceRequest {
                    service: id.clone(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            let tasks = tasks_of(control, id).await?;
            let progress = progress::assess(&service, &tasks, &BTreeMap::new());
            // An update status from before this deploy says nothing of it.
            let earlier = before.get(name).copied();
            let status = service
                .update_status
                .clone()
                .filter(|u| earlier.is_none_or(|b| u.started_at != b))
                .unwrap_or_default();
            let state = UpdateState::try_from(status.state).unwrap_or(UpdateState::Unknown);
            let running = tasks
                .iter()
                .filter(|t| {
                    t.desired_state() <= TaskState::Running
                        && t.observed_state() == TaskState::Running
                })
                .count();
            let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
                Some(PbMode::Replicated(r)) => r.replicas.to_string(),
                _ => "-".into(),
            };
            let line = match state {
                UpdateState::Paused | UpdateState::RollbackPaused => {
                    failed.push(format!("{name}: {}", status.message));
                    format!("{name}: paused: {}", status.message)
                }
                UpdateState::RollbackCompleted | UpdateState::RollbackStarted => {
                    if state == UpdateState::RollbackCompleted {
                        failed.push(format!("{name}: {}", status.message));
                    } else {
                        pending.push(name.clone());
                    }
                    format!("{name}: rolling back: {}", status.message)
                }
                _ if progress.converged && state != UpdateState::Updating => {
                    format!("{name}: {running}/{desired} running, converged")
                }
                _ => {
                    pending.push(name.clone());
                    format!("{name}: {running}/{desired} running")
                }
            };
            lines.push(line);
        }
        let text = lines.join("\n");
        if !quiet && text != last {
            outln!("{text}");
            last = text;
        }
        if !failed.is_empty() && pending.is_empty() {
            bail!("the stack did not deploy:\n  {}", failed.join("\n  "));
        }
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(limit) = timeout {
            if started.elapsed() >= limit {
                let mut why = failed;
                why.extend(pending.iter().map(|n| format!("{n}: not converged")));
                return Err(anyhow!(
                    "the stack did not converge within {}:\n  {}",
                    crate::output::format_duration(limit),
                    why.join("\n  ")
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use orch_api::pb::service_spec::Mode as PbMode;
    use orch_api::pb::{
        JobStatus, ReplicatedJob, ReplicatedService, ServiceSpec, TaskSpec, TaskStatus,
    };

    use super::*;

    fn service(mode: PbMode) -> Service {
        Service {
            id: "s".into(),
            spec: Some(ServiceSpec {
                name: "app_db".into(),
                task: Some(TaskSpec::default()),
                mode: Some(mode),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(slot: u64, state: TaskState, health: &str) -> Task {
        Task {
            id: format!("t{slot}"),
            service_id: "s".into(),
            slot,
            spec: Some(TaskSpec::default()),
            desired_state: if state >= TaskState::Complete {
                TaskState::Complete
            } else {
                TaskState::Running
            } as i32,
            status: Some(TaskStatus {
                state: state as i32,
                health: health.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What each `depends_on` condition waits for.
    #[test]
    fn dependency_conditions() {
        let two = service(PbMode::Replicated(ReplicatedService { replicas: 2 }));
        let running = [
            task(1, TaskState::Running, ""),
            task(2, TaskState::Running, ""),
        ];
        let starting = [
            task(1, TaskState::Running, "healthy"),
            task(2, TaskState::Starting, ""),
        ];
        let healthy = [
            task(1, TaskState::Running, "healthy"),
            task(2, TaskState::Running, "healthy"),
        ];
        let unhealthy = [
            task(1, TaskState::Running, "healthy"),
            task(2, TaskState::Running, "starting"),
        ];
        let cases: Vec<(&str, &Service, &[Task], Condition, bool)> = vec![
            (
                "started: all running",
                &two,
                &running,
                Condition::Started,
                true,
            ),
            (
                "started: one still starting",
                &two,
                &starting,
                Condition::Started,
                false,
            ),
            ("started: no task yet", &two, &[], Condition::Started, false),
            (
                "healthy: running without health",
                &two,
                &running,
                Condition::Healthy,
                false,
            ),
            (
                "healthy: one still starting",
                &two,
                &unhealthy,
                Condition::Healthy,
                false,
            ),
            (
                "healthy: all healthy",
                &two,
                &healthy,
                Condition::Healthy,
                true,
            ),
        ];
        for (name, s, tasks, condition, want) in cases {
            assert_eq!(met(s, tasks, condition), want, "{name}");
        }

        let mut job = service(PbMode::ReplicatedJob(ReplicatedJob {
            max_concurrent: 1,
            total_completions: 1,
        }));
        job.job_status = Some(JobStatus {
            job_iteration: 1,
            last_execution: 0,
        });
        let mut done = task(1, TaskState::Complete, "");
        done.job_iteration = 1;
        let mut old = task(1, TaskState::Complete, "");
        old.job_iteration = 0;
        let mut failed = task(1, TaskState::Failed, "");
        failed.job_iteration = 1;
        failed.desired_state = TaskState::Complete as i32;
        assert!(met(&job, &[done], Condition::CompletedSuccessfully));
        assert!(
            !met(&job, &[old], Condition::CompletedSuccessfully),
            "an earlier run's"
        );
        assert!(!met(&job, &[failed], Condition::CompletedSuccessfully));
        assert!(!met(&job, &[], Condition::CompletedSuccessfully));
    }
}
