//! The orchestrators (leader only): for every service, compare the tasks the store holds with
//! what the spec asks for, and change tasks to close the gap. Each mode's reconcile is a pure
//! function of the service, its tasks, the nodes and `now`; this module runs them when the
//! store changes (or a restart delay expires) and commits their changes in batches.

pub mod global;
pub mod job;
pub mod reaper;
pub mod replicated;
pub mod restart;
#[cfg(test)]
mod tests;
pub mod update;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::service_spec::Mode;
use orch_api::pb::store_action::Action;
use orch_api::pb::{Node, NodeAvailability, NodeState, Service, Task, TaskState, TaskStatus};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::manager::ManagerCtx;
use crate::state::store::{Event, Object, Tables};

/// A change to one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(Task),
    Update(Task),
    Delete(String),
}

/// What reconciling one service decided.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decision {
    pub changes: Vec<Change>,
    /// The service itself changed (its update status, or its spec on an automatic rollback).
    pub service: Option<Service>,
    /// When to look again (a restart delay running out), unix nanos.
    pub wake_at: Option<i64>,
}

impl Decision {
    pub fn wake(&mut self, at: i64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// Tasks the service still wants (desired state running or earlier).
pub fn is_current(t: &Task) -> bool {
    t.desired_state <= TaskState::Running as i32
}

pub fn state(t: &Task) -> i32 {
    t.status.as_ref().map_or(0, |s| s.state)
}

pub fn is_terminal(t: &Task) -> bool {
    state(t) >= TaskState::Complete as i32
}

/// The same task with a new desired state.
pub fn with_desired(t: &Task, desired: TaskState) -> Task {
    let mut t = t.clone();
    t.desired_state = desired as i32;
    t
}

/// A new task of `service` for `slot` (or for `node_id`, global services), waiting for the
/// scheduler.
pub fn new_task(service: &Service, slot: u64, node_id: &str, now: i64) -> Task {
    let spec = service.spec.clone().unwrap_or_default();
    Task {
        id: orch_api::ids::new_id(),
        service_id: service.id.clone(),
        slot,
        node_id: node_id.to_string(),
        spec: spec.task.clone(),
        spec_version: service.spec_version,
        service_name: spec.name.clone(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            timestamp: now,
            state: TaskState::Pending as i32,
            message: "pending task scheduling".into(),
            ..Default::default()
        }),
        job_iteration: service.job_status.as_ref().map_or(0, |j| j.job_iteration),
        service_labels: spec.labels.clone(),
        endpoint: spec.endpoint.clone(),
        ..Default::default()
    }
}

/// How a node stands for running tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFit {
    /// Ready and active: keeps tasks and takes new ones.
    Active,
    /// Ready and paused: keeps its tasks, takes no new ones.
    Paused,
    /// Down (or not yet reporting): its tasks must be replaced elsewhere.
    Down,
    /// Drained or gone: its tasks must stop.
    Drained,
}

pub fn node_fit(node: Option<&Node>) -> NodeFit {
    let Some(node) = node else {
        return NodeFit::Drained;
    };
    let availability = node.spec.as_ref().map_or(0, |s| s.availability);
    if availability == NodeAvailability::Drain as i32 {
        return NodeFit::Drained;
    }
    let state = node.status.as_ref().map_or(0, |s| s.state);
    if state == NodeState::Down as i32 {
        return NodeFit::Down;
    }
    if availability == NodeAvailability::Pause as i32 {
        NodeFit::Paused
    } else {
        NodeFit::Active
    }
}

/// Reconciles one service (any mode) with its tasks.
pub fn reconcile(
    service: &Service,
    tasks: &[Arc<Task>],
    view: &Tables,
    history_limit: usize,
    now: i64,
) -> Decision {
    let mut decision = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(Mode::Replicated(r)) => replicated::reconcile(service, r.replicas, tasks, view, now),
        Some(Mode::Global(_)) => global::reconcile(service, tasks, view, now, false),
        Some(Mode::ReplicatedJob(j)) => job::reconcile_replicated(service, j, tasks, view, now),
        Some(Mode::GlobalJob(_)) => global::reconcile(service, tasks, view, now, true),
        None => Decision::default(),
    };
    let global = matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::Global(_) | Mode::GlobalJob(_))
    );
    if update::in_progress(service) {
        decision.service = update::step(service, tasks, view, now, &mut decision);
    }
    decision
        .changes
        .extend(reaper::reap_history(tasks, global, history_limit, view));
    decision
}

fn history_limit(view: &Tables) -> usize {
    view.cluster()
        .and_then(|c| c.spec.as_ref())
        .map_or(5, |s| s.task_history_retention_limit.max(0) as usize)
}

/// The orchestrator loop: reconciles the services the store's changes touched (all of them
/// when nodes change), plus orphaned tasks, and commits the changes in batches.
pub async fn run(ctx: Arc<ManagerCtx>, token: CancellationToken) {
    let (_, mut rx) = ctx.store.view_and_watch();
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut everything = true;
    let mut wake: Option<i64> = None;
    loop {
        let view = ctx.store.view();
        let now = orch_api::now_nanos();
        let services: Vec<Arc<Service>> = if everything || wake.is_some_and(|w| w <= now) {
            view.services().cloned().collect()
        } else {
            dirty
                .iter()
                .filter_map(|id| view.service(id).cloned())
                .collect()
        };
        everything = false;
        dirty.clear();
        wake = None;
        let limit = history_limit(&view);
        let mut actions = Vec::new();
        for service in &services {
            let tasks: Vec<Arc<Task>> = view.tasks_of_service(&service.id).cloned().collect();
            let decision = reconcile(service, &tasks, &view, limit, now);
            if let Some(at) = decision.wake_at {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            if let Some(s) = decision.service {
                actions.push(Action::UpdateService(s));
            }
            actions.extend(decision.changes.into_iter().map(|c| match c {
                Change::Create(t) => Action::CreateTask(t),
                Change::Update(t) => Action::UpdateTask(t),
                Change::Delete(id) => Action::DeleteTask(id),
            }));
        }
        actions.extend(
            reaper::reap_orphans(&view)
                .into_iter()
                .map(Action::DeleteTask),
        );
        commit(&ctx, actions).await;

        let sleep = wake
            .map(|w| Duration::from_nanos((w - orch_api::now_nanos()).max(0) as u64))
            .unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(sleep) => everything = true,
            change = rx.recv() => {
                match change {
                    Ok(change) => note_change(&change.events, &mut dirty, &mut everything),
                    Err(RecvError::Lagged(_)) => everything = true,
                    Err(RecvError::Closed) => return,
                }
                // Take the rest of the burst.
                loop {
                    match rx.try_recv() {
                        Ok(change) => note_change(&change.events, &mut dirty, &mut everything),
                        Err(TryRecvError::Lagged(_)) => everything = true,
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

fn note_change(events: &[Event], dirty: &mut BTreeSet<String>, everything: &mut bool) {
    if events.is_empty() {
        // A snapshot was installed: anything may have changed.
        *everything = true;
    }
    for event in events {
        match event.object() {
            Object::Service(s) => {
                dirty.insert(s.id.clone());
            }
            Object::Task(t) => {
                dirty.insert(t.service_id.clone());
            }
            Object::Node(_) | Object::Cluster(_) => *everything = true,
        }
    }
}

/// Commits actions in batches; a batch that conflicts is dropped (the next round, from a
/// fresh view, decides again).
pub async fn commit(ctx: &ManagerCtx, actions: Vec<Action>) {
    let mut rest = actions;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(crate::scheduler::BATCH));
        if let Err(e) = ctx.propose(rest).await {
            if crate::controlapi::node::is_conflict(&e) {
                debug!("orchestrator batch conflicted; deciding again");
            } else {
                warn!(error = %e, "orchestrator could not commit");
                return;
            }
        }
        rest = tail;
    }
}
