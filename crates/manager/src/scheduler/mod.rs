//! The scheduler (leader only): watches for pending tasks and node changes, asks `plan` where
//! tasks go, and commits the result in batched transactions: PENDING → ASSIGNED with the node,
//! or the explanation of why a task fits nowhere (written only when it changes).

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::store_action::Action;
use orch_api::pb::{TaskState, TaskStatus};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::handles::{Clock, Proposer, MAX_ACTIONS};
use crate::network::alloc::Pools;
use crate::state::store::Store;

pub async fn run<P: Proposer + ?Sized, C: Clock>(
    store: Arc<Store>,
    proposer: Arc<P>,
    clock: C,
    token: CancellationToken,
) {
    let (_, mut rx) = store.view_and_watch();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        schedule_once(&store, proposer.as_ref(), clock.now_nanos()).await;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
            change = rx.recv() => {
                if let Err(RecvError::Closed) = change {
                    return;
                }
                // Coalesce a burst of changes into one round.
                tokio::time::sleep(Duration::from_millis(2)).await;
                while let Ok(_) | Err(TryRecvError::Lagged(_)) = rx.try_recv() {}
            }
        }
    }
}

async fn schedule_once<P: Proposer + ?Sized>(store: &Store, proposer: &P, now: i64) {
    let view = store.view();
    let pending: Vec<_> = view
        .pending_tasks()
        .filter(|t| t.desired_state() <= TaskState::Running)
        .cloned()
        .collect();
    if pending.is_empty() {
        return;
    }
    let mut plan = plan::plan(&view, &pending);
    let mut actions = Vec::with_capacity(plan.assignments.len());
    // Addresses are taken in the same transaction as the placement: a new leader derives from
    // the store exactly what was handed out.
    let mut pools: Option<Pools> = None;
    for (task_id, node_id) in &plan.assignments {
        let Some(task) = view.task(task_id) else {
            continue;
        };
        let mut t = (**task).clone();
        if t.spec.as_ref().is_some_and(|s| !s.networks.is_empty()) {
            let pools = pools.get_or_insert_with(|| Pools::from_view(&view));
            match crate::network::attach_task(pools, &t) {
                Ok(attachments) => t.networks = attachments,
                Err(e) => {
                    plan.unschedulable.push((task_id.clone(), e.to_string()));
                    continue;
                }
            }
        }
        t.node_id = node_id.clone();
        t.status = Some(TaskStatus {
            timestamp: now,
            state: TaskState::Assigned as i32,
            message: "scheduler assigned task to node".into(),
            ..Default::default()
        });
        actions.push(Action::UpdateTask(t));
    }
    for (task_id, reason) in &plan.unschedulable {
        let Some(task) = view.task(task_id) else {
            continue;
        };
        if task.status.as_ref().is_some_and(|s| &s.err == reason) {
            continue;
        }
        let mut t = (**task).clone();
        let status = t.status.get_or_insert_with(Default::default);
        status.err = reason.clone();
        status.message = "pending task scheduling".into();
        actions.push(Action::UpdateTask(t));
    }
    let total = actions.len();
    let mut chunks = Vec::new();
    let mut rest = actions;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(MAX_ACTIONS));
        chunks.push(rest);
        rest = tail;
    }
    for chunk in chunks {
        // A conflict means the task changed meanwhile: the next round sees it as it is now.
        if let Err(e) = proposer.propose(chunk).await {
            if crate::handles::conflict::is_conflict(&e)
                || crate::handles::conflict::is_address_race(&e)
            {
                debug!("scheduler batch conflicted; retrying next round");
            } else {
                warn!(error = %e, "scheduler could not commit");
                return;
            }
        }
    }
    debug!(
        assigned = plan.assignments.len(),
        unschedulable = plan.unschedulable.len(),
        actions = total,
        "scheduled"
    );
}
