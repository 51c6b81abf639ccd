//! Global services (and global jobs): one task on every node that is ready, not drained, and
//! satisfies the service's constraints. Paused nodes keep their task but get no new one; down
//! nodes keep theirs until they come back; drained or no longer eligible nodes lose theirs.

use std::collections::HashMap;
use std::sync::Arc;

use orch_api::constraint::NodeFilter;
use orch_api::pb::{Node, Service, Task, TaskState};

use super::replicated::{keep_current, split_slots};
use super::{is_current, new_task, node_fit, state, with_desired, Change, Decision, NodeFit};
use crate::state::store::Tables;

fn eligible(service: &Service, node: &Node) -> bool {
    let placement = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.placement.clone())
        .unwrap_or_default();
    NodeFilter::of(&placement).check(node).is_ok()
}

pub fn reconcile(
    service: &Service,
    tasks: &[Arc<Task>],
    view: &Tables,
    now: i64,
    job: bool,
) -> Decision {
    let mut d = Decision::default();
    let iteration = service.job_status.as_ref().map_or(0, |j| j.job_iteration);
    let mut by_node: HashMap<String, Vec<&Task>> = split_slots(tasks, |t| t.node_id.clone())
        .into_iter()
        .collect();
    for node in view.nodes() {
        let list = by_node.remove(&node.id).unwrap_or_default();
        let current: Vec<&Task> = list.iter().copied().filter(|t| is_current(t)).collect();
        let fit = node_fit(Some(node));
        let stop_all = |d: &mut Decision| {
            for t in &current {
                d.changes
                    .push(Change::Update(with_desired(t, TaskState::Shutdown)));
            }
        };
        match fit {
            NodeFit::Down => continue,
            NodeFit::Drained => {
                stop_all(&mut d);
                continue;
            }
            NodeFit::Active | NodeFit::Paused if !eligible(service, node) => {
                stop_all(&mut d);
                continue;
            }
            NodeFit::Active | NodeFit::Paused => {}
        }
        if let Some((newest, older)) = current.split_last() {
            // Same-spec duplicates only; tasks of another spec are the updater's (start-first
            // runs both for a while).
            for extra in older.iter().filter(|t| t.spec == newest.spec) {
                d.changes
                    .push(Change::Update(with_desired(extra, TaskState::Shutdown)));
            }
            if job && state(newest) == TaskState::Complete {
                continue;
            }
            let history: Vec<&Task> = list.iter().copied().filter(|t| t.id != newest.id).collect();
            keep_current(service, newest, &history, view, now, &mut d);
            continue;
        }
        let job_done = job
            && list
                .iter()
                .any(|t| t.job_iteration == iteration && state(t) == TaskState::Complete);
        if fit == NodeFit::Active && !job_done {
            d.changes
                .push(Change::Create(new_task(service, 0, &node.id, now)));
        }
    }
    // Tasks on nodes that no longer exist.
    for list in by_node.values() {
        for t in list.iter().filter(|t| is_current(t)) {
            d.changes
                .push(Change::Update(with_desired(t, TaskState::Shutdown)));
        }
    }
    d
}
