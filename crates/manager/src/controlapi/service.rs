//! Service operations: create, inspect, list (with running/desired counts), update (including
//! scale and rollback to the previous spec), remove, and the task list.

use orch_api::pb::service_spec::Mode;
use orch_api::pb::store_action::Action;
use orch_api::pb::{
    CreateServiceRequest, JobStatus, ListServicesResponse, ListTasksRequest, ListTasksResponse,
    Service, TaskState, UpdateServiceRequest, UpdateState, UpdateStatus,
};
use orch_api::validate::{is_job, normalize_service_spec};
use rand::seq::IndexedRandom;

use crate::ctx::ManagerCtx;
use crate::error::{ManagerError, Result};
use crate::handles::conflict::retry_conflicts;
use crate::raft::node::ProposeError;
use crate::state::store::ApplyError;

fn name_conflict(e: ManagerError, name: &str) -> ManagerError {
    match e {
        ManagerError::Propose(ProposeError::Rejected(ApplyError::NameConflict { .. })) => {
            ManagerError::AlreadyExists(format!(
                "name conflicts with an existing object: service {name} already exists"
            ))
        }
        other => other,
    }
}

/// A docker-style random name ("eager_turing") for a service created without --name.
fn generated_name() -> String {
    const ADJECTIVES: &[&str] = &[
        "brave", "calm", "eager", "fervent", "gallant", "happy", "keen", "lucid", "nifty",
        "quirky", "serene", "vivid",
    ];
    const NAMES: &[&str] = &[
        "babbage", "curie", "dijkstra", "hopper", "knuth", "lamport", "liskov", "lovelace",
        "noether", "ritchie", "turing", "wing",
    ];
    let mut rng = rand::rng();
    format!(
        "{}_{}",
        ADJECTIVES.choose(&mut rng).unwrap_or(&"calm"),
        NAMES.choose(&mut rng).unwrap_or(&"turing")
    )
}

pub async fn create(ctx: &ManagerCtx, req: CreateServiceRequest) -> Result<Service> {
    let mut spec = req
        .spec
        .ok_or_else(|| ManagerError::InvalidArgument("a service spec is required".into()))?;
    if spec.name.is_empty() {
        spec.name = generated_name();
    }
    normalize_service_spec(&mut spec).map_err(|e| ManagerError::InvalidArgument(e.0))?;
    let view = ctx.read_view().await?;
    crate::data::resolve_references(&view, &mut spec).map_err(ManagerError::InvalidArgument)?;
    crate::network::resolve_attachments(&view, &mut spec).map_err(ManagerError::InvalidArgument)?;
    crate::network::check_host_ports(&spec).map_err(ManagerError::InvalidArgument)?;
    let now = orch_api::now_nanos();
    let mut service = Service {
        id: orch_api::ids::new_id(),
        job_status: is_job(&spec).then_some(JobStatus {
            job_iteration: 1,
            last_execution: now,
        }),
        spec_version: 1,
        spec: Some(spec.clone()),
        ..Default::default()
    };
    let mut view = view;
    for attempt in 1.. {
        service.virtual_ips = allocate_vips(&view, &[], &spec)?;
        service.ports = crate::network::ports::allocate(&view, &service.id, &[], &spec)
            .map_err(ManagerError::InvalidArgument)?;
        match ctx
            .propose(vec![Action::CreateService(service.clone())])
            .await
        {
            Err(e) if crate::handles::conflict::is_address_race(&e) && attempt < 5 => {
                view = ctx.read_view().await?
            }
            other => {
                other.map_err(|e| name_conflict(e, &spec.name))?;
                break;
            }
        }
    }
    let view = ctx.store.view();
    Ok((**view
        .service(&service.id)
        .ok_or_else(|| ManagerError::Internal("created service vanished".into()))?)
    .clone())
}

pub async fn get(ctx: &ManagerCtx, reference: &str) -> Result<Service> {
    let view = ctx.read_view().await?;
    Ok((*view.find_service(reference)?).clone())
}

pub async fn list(ctx: &ManagerCtx) -> Result<ListServicesResponse> {
    let view = ctx.read_view().await?;
    let mut out = ListServicesResponse::default();
    for service in view.services() {
        let spec = service.spec.clone().unwrap_or_default();
        let iteration = service.job_status.as_ref().map_or(0, |j| j.job_iteration);
        // Counts the store keeps; only jobs walk their tasks (completions of this iteration).
        let (wanted, running) = view.service_counts(&service.id);
        let completed = if is_job(&spec) {
            view.tasks_of_service(&service.id)
                .filter(|t| {
                    t.job_iteration == iteration
                        && t.status.as_ref().map_or(TaskState::New, |s| s.state())
                            == TaskState::Complete
                })
                .count() as u64
        } else {
            0
        };
        let desired = match spec.mode {
            Some(Mode::Replicated(r)) => r.replicas,
            Some(Mode::ReplicatedJob(j)) => j
                .max_concurrent
                .min(j.total_completions.saturating_sub(completed)),
            _ => wanted,
        };
        out.running.insert(service.id.clone(), running);
        out.desired.insert(service.id.clone(), desired);
        if is_job(&spec) {
            out.completed.insert(service.id.clone(), completed);
        }
        out.services.push((**service).clone());
    }
    Ok(out)
}

fn allocate_vips(
    view: &crate::state::store::Tables,
    old: &[orch_api::pb::VirtualIp],
    spec: &orch_api::pb::ServiceSpec,
) -> Result<Vec<orch_api::pb::VirtualIp>> {
    crate::network::virtual_ips(view, old, spec)
        .map_err(|e| ManagerError::FailedPrecondition(e.to_string()))
}

fn mode_kind(mode: &Option<Mode>) -> &'static str {
    match mode {
        Some(Mode::Replicated(_)) | None => "replicated",
        Some(Mode::Global(_)) => "global",
        Some(Mode::ReplicatedJob(_)) => "replicated-job",
        Some(Mode::GlobalJob(_)) => "global-job",
    }
}

/// The update status a (not rollback) update leaves. One that replaces tasks starts an update
/// (superseding one in progress; resuming a paused one). One that replaces none (a scale,
/// labels) leaves no status, as in swarm, so clients do not read a finished update's status
/// as this one's; but an update still rolling out keeps its own, as the updater goes on while
/// it says so.
fn status_after_update(current: &Service, replaces_tasks: bool, now: i64) -> Option<UpdateStatus> {
    if replaces_tasks {
        return Some(UpdateStatus {
            state: UpdateState::Updating as i32,
            started_at: now,
            message: "update in progress".into(),
            ..Default::default()
        });
    }
    if crate::orchestrator::update::in_progress(current) {
        return current.update_status.clone();
    }
    None
}

pub async fn update(ctx: &ManagerCtx, req: UpdateServiceRequest) -> Result<Service> {
    let view = ctx.read_view().await?;
    let current = view.find_service(&req.service)?;
    super::check_read_version("service", &current.id, req.version, current.meta.as_ref())?;
    let old_spec = current.spec.clone().unwrap_or_default();
    let mut service = (*current).clone();
    let now = orch_api::now_nanos();
    if req.rollback {
        let Some(previous) = current.previous_spec.clone() else {
            return Err(ManagerError::FailedPrecondition(format!(
                "service {} does not have a previous spec to roll back to",
                old_spec.name
            )));
        };
        service.previous_spec = Some(old_spec);
        service.spec = Some(previous);
        service.update_status = Some(UpdateStatus {
            state: UpdateState::RollbackStarted as i32,
            started_at: now,
            message: "manually requested rollback".into(),
            ..Default::default()
        });
    } else {
        let mut spec = req
            .spec
            .ok_or_else(|| ManagerError::InvalidArgument("a service spec is required".into()))?;
        normalize_service_spec(&mut spec).map_err(|e| ManagerError::InvalidArgument(e.0))?;
        crate::data::resolve_references(&view, &mut spec).map_err(ManagerError::InvalidArgument)?;
        crate::network::resolve_attachments(&view, &mut spec)
            .map_err(ManagerError::InvalidArgument)?;
        crate::network::check_host_ports(&spec).map_err(ManagerError::InvalidArgument)?;
        if spec.name != old_spec.name {
            return Err(ManagerError::InvalidArgument(
                "renaming services is not supported".into(),
            ));
        }
        if mode_kind(&spec.mode) != mode_kind(&old_spec.mode) {
            return Err(ManagerError::InvalidArgument(format!(
                "service mode change is not allowed ({} to {})",
                mode_kind(&old_spec.mode),
                mode_kind(&spec.mode)
            )));
        }
        let paused = matches!(
            current.update_state(),
            Some(UpdateState::Paused | UpdateState::RollbackPaused)
        );
        // Tasks carry the endpoint (host ports, their place on the mesh): a change rolls them.
        let tasks_change = spec.task != old_spec.task || spec.endpoint != old_spec.endpoint;
        if spec == old_spec && !paused {
            // Nothing to do: the spec, the version and the previous spec stay as they are.
            return Ok((*current).clone());
        }
        if spec != old_spec {
            service.previous_spec = Some(old_spec);
            service.spec = Some(spec);
        }
        service.update_status = status_after_update(&current, tasks_change || paused, now);
    }
    service.spec_version += 1;
    if let Some(job) = service.job_status.as_mut() {
        // Updating a job runs it again.
        job.job_iteration += 1;
        job.last_execution = now;
    }
    let mut view = view;
    for attempt in 1.. {
        let spec = service.spec.clone().unwrap_or_default();
        service.virtual_ips = allocate_vips(&view, &current.virtual_ips, &spec)?;
        service.ports = crate::network::ports::allocate(&view, &service.id, &current.ports, &spec)
            .map_err(ManagerError::InvalidArgument)?;
        match ctx
            .propose(vec![Action::UpdateService(service.clone())])
            .await
        {
            Err(e) if crate::handles::conflict::is_address_race(&e) && attempt < 5 => {
                view = ctx.read_view().await?
            }
            other => {
                other?;
                break;
            }
        }
    }
    let view = ctx.store.view();
    Ok((**view
        .service(&service.id)
        .ok_or_else(|| ManagerError::NotFound(format!("service {} not found", req.service)))?)
    .clone())
}

/// Deletes the service and marks its tasks for removal, in one transaction. Agents report
/// task states all the time, so a task may change between the read and the commit: the
/// conflict is retried from a fresh read.
pub async fn remove(ctx: &ManagerCtx, reference: &str) -> Result<()> {
    retry_conflicts(|| async move {
        let view = ctx.read_view().await?;
        let service = view.find_service(reference)?;
        let mut actions = vec![Action::DeleteService(service.id.clone())];
        for t in view.tasks_of_service(&service.id) {
            if t.desired_state() < TaskState::Remove {
                let mut t = (**t).clone();
                t.desired_state = TaskState::Remove as i32;
                actions.push(Action::UpdateTask(t));
            }
        }
        ctx.propose(actions).await.map(drop)
    })
    .await
}

pub async fn list_tasks(ctx: &ManagerCtx, req: ListTasksRequest) -> Result<ListTasksResponse> {
    let view = ctx.read_view().await?;
    let keep =
        |t: &orch_api::pb::Task| !req.desired_running || t.desired_state() <= TaskState::Running;
    let mut tasks: Vec<orch_api::pb::Task> = Vec::new();
    if !req.service_ids.is_empty() {
        for id in &req.service_ids {
            tasks.extend(
                view.tasks_of_service(id)
                    .filter(|t| keep(t))
                    .filter(|t| req.node_ids.is_empty() || req.node_ids.contains(&t.node_id))
                    .map(|t| (**t).clone()),
            );
        }
    } else if !req.node_ids.is_empty() {
        for id in &req.node_ids {
            tasks.extend(
                view.tasks_of_node(id)
                    .filter(|t| keep(t))
                    .map(|t| (**t).clone()),
            );
        }
    } else {
        tasks.extend(view.tasks().filter(|t| keep(t)).map(|t| (**t).clone()));
    }
    Ok(ListTasksResponse { tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(state: Option<UpdateState>) -> Service {
        Service {
            update_status: state.map(|s| UpdateStatus {
                state: s as i32,
                started_at: 7,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_scale_clears_a_finished_updates_status_but_not_one_rolling_out() {
        for finished in [
            None,
            Some(UpdateState::Completed),
            Some(UpdateState::RollbackCompleted),
        ] {
            assert_eq!(status_after_update(&with_status(finished), false, 9), None);
        }
        for rolling in [UpdateState::Updating, UpdateState::RollbackStarted] {
            let kept = status_after_update(&with_status(Some(rolling)), false, 9);
            assert_eq!(kept.map(|u| (u.state(), u.started_at)), Some((rolling, 7)));
        }
        let started = status_after_update(&with_status(Some(UpdateState::Completed)), true, 9);
        assert_eq!(
            started.map(|u| (u.state(), u.started_at)),
            Some((UpdateState::Updating, 9))
        );
    }
}
