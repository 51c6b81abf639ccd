//! Replicated services: one current task per slot 1..=replicas. Scale up fills the lowest free
//! slots; scale down removes tasks that are not running yet first, then tasks on the nodes
//! with the most tasks of the service. Tasks on drained or down nodes are replaced; stopped
//! tasks are restarted per the restart policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use orch_api::pb::{Service, Task, TaskState};

use super::restart::{self, Restart};
use super::{
    is_current, is_terminal, new_task, node_fit, state, with_desired, Change, Decision, NodeFit,
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
                d.changes.push(Change::Create(new_task(
                    service,
                    current.slot,
                    restart_node(current),
                    now,
                )));
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
        }
    }
    let count = occupied.len() as u64;
    if count < replicas {
        let mut slot = 1u64;
        let mut missing = replicas - count;
        while missing > 0 {
            if !occupied.contains_key(&slot) {
                d.changes
                    .push(Change::Create(new_task(service, slot, "", now)));
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
                let running = state(t) == TaskState::Running as i32;
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
