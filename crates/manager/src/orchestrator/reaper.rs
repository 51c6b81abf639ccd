//! Task history: stopped tasks stay as each slot's history (what `service ps` shows as `\_`
//! rows) up to the cluster's task history limit; older ones are deleted, as are removed tasks
//! once they have stopped, and tasks of deleted services.

use std::sync::Arc;

use orch_api::pb::{Task, TaskState};

use super::replicated::split_slots;
use super::{is_terminal, node_fit, state, Change, NodeFit};
use crate::state::store::Tables;

/// A task that no longer runs anywhere (or never ran, or sits on a node that is gone).
fn settled(t: &Task, view: &Tables) -> bool {
    is_terminal(t)
        || state(t) < TaskState::Assigned
        || t.node_id.is_empty()
        || matches!(
            node_fit(view.node(&t.node_id).map(|n| n.as_ref())),
            NodeFit::Down
        )
        || view.node(&t.node_id).is_none()
}

pub fn reap_history(tasks: &[Arc<Task>], global: bool, limit: usize, view: &Tables) -> Vec<Change> {
    let mut out = Vec::new();
    let slots = split_slots(tasks, |t| {
        if global {
            t.node_id.clone()
        } else {
            t.slot.to_string()
        }
    });
    for list in slots.values() {
        let mut history: Vec<&Task> = Vec::new();
        for t in list {
            if t.desired_state() >= TaskState::Remove {
                if settled(t, view) {
                    out.push(Change::Delete(t.id.clone()));
                }
            } else if t.desired_state() >= TaskState::Shutdown && settled(t, view) {
                history.push(t);
            }
        }
        // `list` is oldest first: keep the newest `limit`.
        let excess = history.len().saturating_sub(limit);
        out.extend(
            history
                .into_iter()
                .take(excess)
                .map(|t| Change::Delete(t.id.clone())),
        );
    }
    out
}

/// Tasks of services that no longer exist, once they have stopped.
pub fn reap_orphans(view: &Tables) -> Vec<String> {
    view.services_with_tasks()
        .filter(|id| view.service(id).is_none())
        .flat_map(|id| {
            view.tasks_of_service(&id)
                .filter(|t| settled(t, view))
                .map(|t| t.id.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}
