//! Replicated services: one current task per slot 1..=replicas. Scale up fills the lowest free
//! slots; scale down removes tasks that are not running yet first, then tasks on the nodes
//! with the most tasks of the service. Tasks on drained or down nodes are replaced; stopped
//! tasks are restarted per the restart policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use orch_api::pb::{Service, Task, TaskState};

use super::restart::{self, Restart};
use super::{
    is_current, is_terminal, may_be_running, new_task, node_fit, state, with_desired, Change,
    Decision, NodeFit,
};
use crate::state::store::Tables;

/// The tasks of one slot: the current one (if any) and the rest (history).
pub(crate) fn split_slots(
    tasks: &[Arc<Task>],
    key: impl Fn(&Task) -> String,
) -> BTreeMap<String, Vec<&Task>> {
    let mut slots: BTreeMap<String, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        slots.entry(key(t)).or_default().push(t);
    }
    for list in slots.values_mut() {
        list.sort_by_key(|t| (t.meta.as_ref().map_or(0, |m| m.created_at), t.id.clone()));
    }
    slots
}

/// Handles a slot's current task: replaced if its node is drained or down, restarted per the
/// policy if it stopped. Returns whether the slot is still occupied afterwards.
pub(crate) fn keep_current(
    service: &Service,
    current: &Task,
    history: &[&Task],
    view: &Tables,
    now: i64,
    d: &mut Decision,
) -> bool {
    if !current.node_id.is_empty()
        && matches!(
            node_fit(view.node(&current.node_id).map(|n| n.as_ref())),
            NodeFit::Drained | NodeFit::Down
        )
    {
        d.changes
            .push(Change::Update(with_desired(current, TaskState::Shutdown)));
        return false;
    }
    if is_terminal(current) {
        let policy = service
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.restart)
            .unwrap_or_default();
        match restart::decide(&policy, current, history, now) {
            Restart::No => {}
            Restart::At(at) if at <= now => {
                d.changes
                    .push(Change::Update(with_desired(current, TaskState::Shutdown)));
                let mut fresh = new_task(service, current.slot, restart_node(current), now);
                // A replicated slot whose earlier task may still run (removed by a scale-down
                // but still starting, say): the restart waits at READY like any replacement.
                let replicated = matches!(
                    service.spec.as_ref().and_then(|s| s.mode.as_ref()),
                    Some(orch_api::pb::service_spec::Mode::Replicated(_))
                );
                if replicated && history.iter().any(|t| may_be_running(t, view)) {
                    fresh.desired_state = TaskState::Ready as i32;
                }
                d.changes.push(Change::Create(fresh));
            }
            Restart::At(at) => d.wake(at),
        }
    }
    true
}

/// Global tasks restart on their node; replicated ones go wherever the scheduler puts them.
fn restart_node(t: &Task) -> &str {
    if t.slot == 0 {
        &t.node_id
    } else {
        ""
    }
}

pub fn reconcile(
    service: &Service,
    replicas: u64,
    tasks: &[Arc<Task>],
    view: &Tables,
    now: i64,
) -> Decision {
    let mut d = Decision::default();
    let slots = split_slots(tasks, |t| t.slot.to_string());
    // A slot whose earlier task may still be running (stopping, or shut down by this very
    // decision): a new task there waits at READY, so a slot never runs two copies of a spec.
    let busy = |slot: u64, except: &str| {
        slots.get(&slot.to_string()).is_some_and(|list| {
            list.iter()
                .any(|t| t.id != except && may_be_running(t, view))
        })
    };
    // slot number -> its current task
    let mut occupied: BTreeMap<u64, &Task> = BTreeMap::new();
    for list in slots.values() {
        let current: Vec<&Task> = list.iter().copied().filter(|t| is_current(t)).collect();
        let Some((newest, older)) = current.split_last() else {
            continue;
        };
        // More than one current task in a slot: keep the newest, stop the rest.
        // Same-spec duplicates only; tasks of another spec are the updater's (start-first
        // runs both for a while).
        for extra in older.iter().filter(|t| t.spec == newest.spec) {
            d.changes
                .push(Change::Update(with_desired(extra, TaskState::Shutdown)));
        }
        let history: Vec<&Task> = list.iter().copied().filter(|t| t.id != newest.id).collect();
        if keep_current(service, newest, &history, view, now, &mut d) {
            occupied.insert(newest.slot, newest);
            // A waiting task starts once the slot's earlier tasks have stopped.
            if newest.desired_state() == TaskState::Ready && !busy(newest.slot, &newest.id) {
                d.changes
                    .push(Change::Update(with_desired(newest, TaskState::Running)));
            }
        }
    }
    let count = occupied.len() as u64;
    if count < replicas {
        let mut slot = 1u64;
        let mut missing = replicas - count;
        while missing > 0 {
            if !occupied.contains_key(&slot) {
                let mut fresh = new_task(service, slot, "", now);
                if busy(slot, "") {
                    fresh.desired_state = TaskState::Ready as i32;
                }
                d.changes.push(Change::Create(fresh));
                missing -= 1;
            }
            slot += 1;
        }
    } else if count > replicas {
        let mut crowd: HashMap<&str, usize> = HashMap::new();
        for t in occupied.values() {
            *crowd.entry(t.node_id.as_str()).or_default() += 1;
        }
        let mut candidates: Vec<&Task> = occupied.values().copied().collect();
        for _ in 0..(count - replicas) {
            // Not running first, then the most crowded node, then the highest slot.
            let Some((pos, _)) = candidates.iter().enumerate().max_by_key(|(_, t)| {
                let running = state(t) == TaskState::Running;
                (
                    !running,
                    crowd.get(t.node_id.as_str()).copied().unwrap_or(0),
                    t.slot,
                )
            }) else {
                break;
            };
            let victim = candidates.swap_remove(pos);
            if let Some(n) = crowd.get_mut(victim.node_id.as_str()) {
                *n -= 1;
            }
            d.changes
                .push(Change::Update(with_desired(victim, TaskState::Remove)));
        }
    }
    d
}
