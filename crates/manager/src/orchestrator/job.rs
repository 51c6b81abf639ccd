//! Replicated jobs: run tasks to completion, at most `max_concurrent` at a time, until
//! `total_completions` have completed. Failed tasks are restarted per the restart policy
//! (on-failure by default).

use std::collections::BTreeSet;
use std::sync::Arc;

use orch_api::pb::{ReplicatedJob, Service, Task, TaskState};

use super::replicated::{keep_current, split_slots};
use super::{is_current, is_terminal, new_task, state, Change, Decision};
use crate::state::store::Tables;

pub fn reconcile_replicated(
    service: &Service,
    job: &ReplicatedJob,
    tasks: &[Arc<Task>],
    view: &Tables,
    now: i64,
) -> Decision {
    let mut d = Decision::default();
    let iteration = service.job_status.as_ref().map_or(0, |j| j.job_iteration);
    let this_run: Vec<Arc<Task>> = tasks
        .iter()
        .filter(|t| t.job_iteration == iteration)
        .cloned()
        .collect();
    let completed: BTreeSet<u64> = this_run
        .iter()
        .filter(|t| state(t) == TaskState::Complete)
        .map(|t| t.slot)
        .collect();
    let mut busy: BTreeSet<u64> = BTreeSet::new();
    let mut running = 0u64;
    for list in split_slots(&this_run, |t| t.slot.to_string()).values() {
        let Some(current) = list.iter().copied().rfind(|t| is_current(t)) else {
            continue;
        };
        if completed.contains(&current.slot) {
            continue;
        }
        let history: Vec<&Task> = list
            .iter()
            .copied()
            .filter(|t| t.id != current.id)
            .collect();
        let changes_before = d.changes.len();
        if keep_current(service, current, &history, view, now, &mut d) {
            busy.insert(current.slot);
            // A failed task waiting for its restart holds its slot but does not run.
            if !is_terminal(current) || d.changes.len() > changes_before {
                running += 1;
            }
        }
    }
    let done = completed.len() as u64;
    let remaining = job
        .total_completions
        .saturating_sub(done + busy.len() as u64);
    let room = job.max_concurrent.saturating_sub(running);
    let mut to_create = remaining.min(room);
    let mut slot = 1u64;
    while to_create > 0 && slot <= job.total_completions {
        if !completed.contains(&slot) && !busy.contains(&slot) {
            d.changes
                .push(Change::Create(new_task(service, slot, "", now)));
            to_create -= 1;
        }
        slot += 1;
    }
    d
}
