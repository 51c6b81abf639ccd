//! The rolling updater: moves a service's slots from their tasks' spec to the service's spec,
//! `parallelism` slots at a time, `delay` between batches, each new task watched for
//! `monitor` after it starts; stop-first (the old task stops, then the new one starts) or
//! start-first (the new one runs before the old one stops). Failures beyond
//! `max_failure_ratio` pause the update, roll it back, or are ignored, as the failure action
//! says. A rollback is the same walk back to the previous spec with the rollback config.
//!
//! Everything is derived from the store (the update's start time, task specs and status
//! timestamps), so a new leader picks an update up where the old one left it.

use std::collections::BTreeMap;
use std::sync::Arc;

use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    FailureAction, Service, Task, TaskState, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus,
};

use super::{is_current, may_be_running, new_task, state, with_desired, Change, Decision};
use crate::state::store::Tables;

/// A service whose tasks are being moved to its spec.
pub fn in_progress(service: &Service) -> bool {
    service.update_status.as_ref().is_some_and(|u| {
        u.state() == UpdateState::Updating || u.state() == UpdateState::RollbackStarted
    })
}

fn rolling_back(service: &Service) -> bool {
    service
        .update_status
        .as_ref()
        .is_some_and(|u| u.state() == UpdateState::RollbackStarted)
}

/// Where the update of one slot stands.
struct Slot<'a> {
    /// The slot's task with the wanted spec, if any (the newest).
    new: Option<&'a Task>,
    /// Current tasks with another spec.
    old: Vec<&'a Task>,
    /// Other tasks of the slot, told to stop, that have not stopped yet: a waiting task
    /// starts only after them, whatever their spec (one a scale-down removed has the wanted
    /// spec and may still run).
    stopping: Vec<&'a Task>,
}

fn running_since(t: &Task) -> Option<i64> {
    (state(t) == TaskState::Running).then(|| t.status.as_ref().map_or(0, |s| s.timestamp))
}

/// How long an update may wait on one slot without any of its tasks changing before it pauses,
/// naming the task: a report lost on the way, a task stuck in a state, a slot that never frees
/// must not leave it "updating" for ever. Measured from the store (the tasks' last change, the
/// update's start), so every leader counts the same; resuming the update starts it again.
pub const STALL_AFTER: i64 = 5 * 60 * 1_000_000_000;

/// When anything last happened to a task (its status or its desired state), unix nanos.
fn last_change(t: &Task) -> i64 {
    let status = t.status.as_ref().map_or(0, |s| s.timestamp);
    let updated = t.meta.as_ref().map_or(0, |m| m.updated_at);
    status.max(updated)
}

fn state_name(t: &Task) -> String {
    format!("{:?}", state(t)).to_lowercase()
}

/// A task of this update that stopped where it should run: the update's failures.
fn failed(t: &Task) -> bool {
    let s = state(t);
    t.desired_state() <= TaskState::Running && s >= TaskState::Complete && s != TaskState::Shutdown
        || s == TaskState::Failed
        || s == TaskState::Rejected
}

/// One step of the service's update: task changes, and the service itself when the update's
/// status (or, for an automatic rollback, its spec) changes.
pub fn step(
    service: &Service,
    tasks: &[Arc<Task>],
    view: &Tables,
    now: i64,
    d: &mut Decision,
) -> Option<Service> {
    let spec = service.spec.clone().unwrap_or_default();
    if matches!(spec.mode, Some(Mode::ReplicatedJob(_) | Mode::GlobalJob(_))) {
        return None;
    }
    let status = service.update_status.clone().unwrap_or_default();
    let back = rolling_back(service);
    let config: UpdateConfig = if back { spec.rollback } else { spec.update }
        .unwrap_or_else(orch_api::validate::default_update_config);
    let up_to_date = |t: &Task| t.is_current(&spec);
    let global = matches!(spec.mode, Some(Mode::Global(_)));

    // Slots: replicated by slot number, global by node.
    let mut slots: BTreeMap<String, Slot<'_>> = BTreeMap::new();
    let created = |t: &Task| t.meta.as_ref().map_or(0, |m| m.created_at);
    let mut sorted: Vec<&Task> = tasks.iter().map(|t| t.as_ref()).collect();
    sorted.sort_by_key(|t| (created(t), t.id.clone()));
    let key_of = |t: &Task| {
        if global {
            t.node_id.clone()
        } else {
            format!("{:020}", t.slot)
        }
    };
    for t in sorted.iter().copied().filter(|t| is_current(t)) {
        let slot = slots.entry(key_of(t)).or_insert(Slot {
            new: None,
            old: Vec::new(),
            stopping: Vec::new(),
        });
        if up_to_date(t) {
            // An older duplicate is stopped by reconcile; the newest waits for it too.
            if let Some(older) = slot.new.replace(t) {
                if may_be_running(older, view) {
                    slot.stopping.push(older);
                }
            }
        } else {
            slot.old.push(t);
        }
    }
    for t in sorted
        .iter()
        .copied()
        .filter(|t| !is_current(t) && may_be_running(t, view))
    {
        if let Some(slot) = slots.get_mut(&key_of(t)) {
            slot.stopping.push(t);
        }
    }

    // Failures of this run: tasks with the wanted spec, created since the update (re)started.
    let total = slots.len().max(1);
    let failures: Vec<&Task> = tasks
        .iter()
        .map(|t| t.as_ref())
        .filter(|t| up_to_date(t) && created(t) >= status.started_at && failed(t))
        .collect();
    let action = FailureAction::try_from(config.failure_action).unwrap_or(FailureAction::Pause);
    if !failures.is_empty()
        && failures.len() as f32 / total as f32 > config.max_failure_ratio
        && action != FailureAction::Continue
    {
        let task = failures[0];
        let what = format!("failure or early termination of task {}", task.id);
        let mut s = service.clone();
        if action == FailureAction::Rollback && !back {
            // The previous spec's ports and VIPs come back with it (those it had, or free
            // ones); when they cannot, the update pauses instead.
            let restored = s.previous_spec.clone().and_then(|previous| {
                let ports =
                    crate::network::ports::allocate(view, &s.id, &s.ports, &previous).ok()?;
                let vips = crate::network::virtual_ips(view, &s.virtual_ips, &previous).ok()?;
                Some((previous, ports, vips))
            });
            if let Some((previous, ports, vips)) = restored {
                s.previous_spec = s.spec.take();
                s.spec = Some(previous);
                s.ports = ports;
                s.virtual_ips = vips;
                s.spec_version += 1;
                s.update_status = Some(UpdateStatus {
                    state: UpdateState::RollbackStarted as i32,
                    started_at: now,
                    completed_at: 0,
                    message: format!("update rolled back due to {what}"),
                });
                return Some(s);
            }
        }
        s.update_status = Some(UpdateStatus {
            state: if back {
                UpdateState::RollbackPaused
            } else {
                UpdateState::Paused
            } as i32,
            started_at: status.started_at,
            completed_at: 0,
            message: format!(
                "{} paused due to {what}",
                if back { "rollback" } else { "update" }
            ),
        });
        return Some(s);
    }

    let start_first = config.order() == UpdateOrder::StartFirst;
    let monitor = config.monitor.max(0);
    let mut in_flight = 0usize;
    let mut last_settled: i64 = 0;
    let mut dirty: Vec<&Slot<'_>> = Vec::new();
    // The in-flight slot that has waited longest without a change: (since, what it waits on).
    let mut stalled: Option<(i64, String)> = None;
    let mut waiting = |since: i64, what: String| {
        let since = since.max(status.started_at);
        if stalled.as_ref().is_none_or(|(s, _)| since < *s) {
            stalled = Some((since, what));
        }
    };
    for slot in slots.values() {
        match (slot.new, slot.old.is_empty()) {
            (None, _) => dirty.push(slot),
            (Some(new), old_gone) => {
                // Stop-first: the new task waits (desired READY) until the old one has stopped.
                if new.desired_state() < TaskState::Running {
                    // An old task still wanted running would never stop by itself: a task the
                    // restart policy made waiting behind it (start-first, say) waited for ever.
                    for o in &slot.old {
                        d.changes
                            .push(Change::Update(with_desired(o, TaskState::Shutdown)));
                    }
                    let blockers: Vec<&Task> = slot
                        .old
                        .iter()
                        .chain(slot.stopping.iter())
                        .copied()
                        .filter(|o| may_be_running(o, view))
                        .collect();
                    // The slot last changed when any of its tasks did; the blocker named is
                    // the one that has not changed for longest.
                    match blockers.iter().min_by_key(|o| last_change(o)) {
                        None => d
                            .changes
                            .push(Change::Update(with_desired(new, TaskState::Running))),
                        Some(oldest) => waiting(
                            blockers
                                .iter()
                                .map(|o| last_change(o))
                                .fold(last_change(new), i64::max),
                            format!(
                                "task {} waits for task {} to stop, still {} on node {}",
                                new.id,
                                oldest.id,
                                state_name(oldest),
                                oldest.node_id
                            ),
                        ),
                    }
                    in_flight += 1;
                    continue;
                }
                match running_since(new) {
                    Some(since) => {
                        // Start-first: the old task stops once the new one runs.
                        if !old_gone {
                            for o in &slot.old {
                                d.changes
                                    .push(Change::Update(with_desired(o, TaskState::Shutdown)));
                            }
                        }
                        if created(new) >= status.started_at {
                            let settled = since.saturating_add(monitor);
                            last_settled = last_settled.max(settled);
                            if settled > now {
                                in_flight += 1;
                                d.wake(settled);
                            }
                        }
                    }
                    None if failed(new) => {}
                    None => {
                        in_flight += 1;
                        let err = new.status.as_ref().map_or("", |s| s.err.as_str());
                        waiting(
                            last_change(new),
                            format!(
                                "task {} is still {}{}{}",
                                new.id,
                                state_name(new),
                                if new.node_id.is_empty() {
                                    String::new()
                                } else {
                                    format!(" on node {}", new.node_id)
                                },
                                if err.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({err})")
                                }
                            ),
                        );
                    }
                }
            }
        }
    }

    // No slot may hold the update for ever: past the bound, it pauses and says on what.
    if let Some((since, what)) = stalled {
        let until = since.saturating_add(STALL_AFTER);
        if now < until {
            d.wake(until);
        } else {
            let mut s = service.clone();
            let which = if back { "rollback" } else { "update" };
            s.update_status = Some(UpdateStatus {
                state: if back {
                    UpdateState::RollbackPaused
                } else {
                    UpdateState::Paused
                } as i32,
                started_at: status.started_at,
                completed_at: 0,
                message: format!(
                    "{which} paused: no progress for {}s: {what}",
                    (now - since) / 1_000_000_000
                ),
            });
            return Some(s);
        }
    }

    if dirty.is_empty() && in_flight == 0 {
        let mut s = service.clone();
        s.update_status = Some(UpdateStatus {
            state: if back {
                UpdateState::RollbackCompleted
            } else {
                UpdateState::Completed
            } as i32,
            started_at: status.started_at,
            completed_at: now,
            // An automatic rollback keeps saying why it happened.
            message: match (back, status.message.starts_with("update rolled back")) {
                (true, true) => format!("rollback completed; {}", status.message),
                (true, false) => "rollback completed".into(),
                (false, _) => "update completed".into(),
            },
        });
        return Some(s);
    }
    let parallelism = if config.parallelism == 0 {
        usize::MAX
    } else {
        config.parallelism as usize
    };
    if dirty.is_empty() || in_flight >= parallelism {
        return None;
    }
    // The delay runs from the moment the last batch settled.
    if config.delay > 0 && last_settled > 0 && now < last_settled.saturating_add(config.delay) {
        d.wake(last_settled.saturating_add(config.delay));
        return None;
    }
    for slot in dirty.into_iter().take(parallelism - in_flight) {
        let Some(old) = slot.old.last() else { continue };
        let node = if global { old.node_id.as_str() } else { "" };
        let mut fresh = new_task(service, old.slot, node, now);
        if start_first {
            d.changes.push(Change::Create(fresh));
        } else {
            for o in &slot.old {
                d.changes
                    .push(Change::Update(with_desired(o, TaskState::Shutdown)));
            }
            fresh.desired_state = TaskState::Ready as i32;
            d.changes.push(Change::Create(fresh));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use orch_api::pb::{ContainerSpec, Meta, TaskSpec};

    const S: i64 = 1_000_000_000;

    /// Service `web` with `replicas`, updated at t=0 from image v1 to v2 with `config`.
    fn updating(
        replicas: u64,
        config: UpdateConfig,
        back: bool,
    ) -> (orch_api::pb::Service, TaskSpec, TaskSpec) {
        let mut s = replicated("web", replicas);
        let v1 = s
            .spec
            .as_ref()
            .and_then(|sp| sp.task.clone())
            .expect("task");
        let mut v2 = v1.clone();
        v2.container = Some(ContainerSpec {
            image: "busybox:2".into(),
            ..v1.container.clone().expect("c")
        });
        s.previous_spec = s.spec.clone();
        let spec = s.spec.as_mut().expect("spec");
        spec.task = Some(v2.clone());
        spec.update = Some(config);
        spec.rollback = Some(config);
        s.spec_version = 2;
        s.update_status = Some(UpdateStatus {
            state: if back {
                UpdateState::RollbackStarted
            } else {
                UpdateState::Updating
            } as i32,
            started_at: 0,
            ..Default::default()
        });
        (s, v1, v2)
    }

    fn with_spec(mut t: Task, spec: &TaskSpec, created: i64) -> Task {
        t.spec = Some(spec.clone());
        t.meta = Some(Meta {
            version: 1,
            created_at: created,
            updated_at: created,
        });
        t
    }

    fn old(id: &str, s: &orch_api::pb::Service, slot: u64, v1: &TaskSpec) -> Task {
        with_spec(
            task(
                id,
                s,
                slot,
                "n1",
                TaskState::Running,
                TaskState::Running,
                -10 * S,
            ),
            v1,
            -10 * S,
        )
    }

    fn new_running(
        id: &str,
        s: &orch_api::pb::Service,
        slot: u64,
        v2: &TaskSpec,
        since: i64,
    ) -> Task {
        with_spec(
            task(
                id,
                s,
                slot,
                "n1",
                TaskState::Running,
                TaskState::Running,
                since,
            ),
            v2,
            since,
        )
    }

    fn config(
        parallelism: u64,
        delay: i64,
        action: FailureAction,
        monitor: i64,
        order: UpdateOrder,
    ) -> UpdateConfig {
        UpdateConfig {
            parallelism,
            delay,
            failure_action: action as i32,
            monitor,
            max_failure_ratio: 0.0,
            order: order as i32,
        }
    }

    fn summarize(d: &Decision, before: &[Task]) -> Vec<String> {
        let mut out: Vec<String> = d
            .changes
            .iter()
            .map(|c| match c {
                Change::Create(t) => format!(
                    "create slot {} {:?}",
                    t.slot,
                    TaskState::try_from(t.desired_state).expect("state")
                ),
                Change::Update(t) => {
                    let was = before
                        .iter()
                        .find(|b| b.id == t.id)
                        .map_or(0, |b| b.desired_state);
                    format!(
                        "{} {:?}{}",
                        t.id,
                        TaskState::try_from(t.desired_state).expect("state"),
                        if was == t.desired_state {
                            " (same)"
                        } else {
                            ""
                        }
                    )
                }
                Change::Delete(id) => format!("delete {id}"),
            })
            .collect();
        out.sort();
        out
    }

    struct Case {
        name: &'static str,
        config: UpdateConfig,
        back: bool,
        tasks: fn(&orch_api::pb::Service, &TaskSpec, &TaskSpec) -> Vec<Task>,
        now: i64,
        want: Vec<&'static str>,
        want_state: Option<UpdateState>,
        want_wake: Option<i64>,
    }

    #[test]
    fn update_cases() {
        let stop_first = config(2, 0, FailureAction::Pause, 5 * S, UpdateOrder::StopFirst);
        let cases = vec![
            Case {
                name: "stop-first starts a batch of `parallelism`: old stop, new wait ready",
                config: stop_first,
                back: false,
                tasks: |s, v1, _| (1..=3).map(|i| old(&format!("o{i}"), s, i, v1)).collect(),
                now: S,
                want: vec![
                    "create slot 1 Ready",
                    "create slot 2 Ready",
                    "o1 Shutdown",
                    "o2 Shutdown",
                ],
                want_state: None,
                want_wake: None,
            },
            Case {
                name: "the waiting new task starts once the old one stopped",
                config: config(1, 0, FailureAction::Pause, 5 * S, UpdateOrder::StopFirst),
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task(
                                "o1",
                                s,
                                1,
                                "n1",
                                TaskState::Shutdown,
                                TaskState::Shutdown,
                                -S,
                            ),
                            v1,
                            -10 * S,
                        ),
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Ready, TaskState::Ready, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 2 * S,
                want: vec!["n1 Running"],
                want_state: None,
                want_wake: None,
            },
            Case {
                name: "stop-first: the new task waits while the old one is still stopping",
                config: config(1, 0, FailureAction::Pause, 5 * S, UpdateOrder::StopFirst),
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task(
                                "o1",
                                s,
                                1,
                                "n1",
                                TaskState::Running,
                                TaskState::Shutdown,
                                -S,
                            ),
                            v1,
                            -10 * S,
                        ),
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Ready, TaskState::Ready, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 2 * S,
                want: vec![],
                want_state: None,
                // Looked at again when the slot would have waited too long.
                want_wake: Some(S + STALL_AFTER),
            },
            Case {
                name: "regression: a waiting task also waits for a removed task of its own spec",
                config: config(1, 0, FailureAction::Pause, 5 * S, UpdateOrder::StopFirst),
                back: false,
                // Slot 1's v2 task was removed by a scale-down but still runs (its agent is
                // slow to stop it); a scale-up made n1 for the slot, waiting. The updater
                // must not start n1 while r1 runs: two v2 containers in one slot.
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("r1", s, 1, "n1", TaskState::Running, TaskState::Remove, S),
                            v2,
                            S,
                        ),
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::New, TaskState::Ready, 2 * S),
                            v2,
                            2 * S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 3 * S,
                want: vec![],
                want_state: None,
                want_wake: Some(2 * S + STALL_AFTER),
            },
            Case {
                name: "a batch still being monitored holds the next one",
                config: config(1, 0, FailureAction::Pause, 5 * S, UpdateOrder::StopFirst),
                back: false,
                tasks: |s, v1, v2| vec![new_running("n1", s, 1, v2, S), old("o2", s, 2, v1)],
                now: 3 * S,
                want: vec![],
                want_state: None,
                want_wake: Some(6 * S),
            },
            Case {
                name: "after the monitor period, the next batch",
                config: config(1, 0, FailureAction::Pause, 5 * S, UpdateOrder::StopFirst),
                back: false,
                tasks: |s, v1, v2| vec![new_running("n1", s, 1, v2, S), old("o2", s, 2, v1)],
                now: 7 * S,
                want: vec!["create slot 2 Ready", "o2 Shutdown"],
                want_state: None,
                want_wake: None,
            },
            Case {
                name: "the delay runs after a batch settles",
                config: config(
                    1,
                    10 * S,
                    FailureAction::Pause,
                    5 * S,
                    UpdateOrder::StopFirst,
                ),
                back: false,
                tasks: |s, v1, v2| vec![new_running("n1", s, 1, v2, S), old("o2", s, 2, v1)],
                now: 7 * S,
                want: vec![],
                want_state: None,
                want_wake: Some(16 * S),
            },
            Case {
                name: "start-first creates the new task running and keeps the old",
                config: config(1, 0, FailureAction::Pause, 0, UpdateOrder::StartFirst),
                back: false,
                tasks: |s, v1, _| vec![old("o1", s, 1, v1)],
                now: S,
                want: vec!["create slot 1 Running"],
                want_state: None,
                want_wake: None,
            },
            Case {
                name: "start-first stops the old task once the new one runs",
                config: config(1, 0, FailureAction::Pause, 0, UpdateOrder::StartFirst),
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        old("o1", s, 1, v1),
                        new_running("n1", s, 1, v2, S),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 2 * S,
                want: vec!["create slot 2 Running", "o1 Shutdown"],
                want_state: None,
                want_wake: None,
            },
            Case {
                name: "all slots on the new spec and settled: completed",
                config: stop_first,
                back: false,
                tasks: |s, _, v2| {
                    vec![
                        new_running("n1", s, 1, v2, S),
                        new_running("n2", s, 2, v2, S),
                    ]
                },
                now: 10 * S,
                want: vec![],
                want_state: Some(UpdateState::Completed),
                want_wake: None,
            },
            Case {
                name: "a failed new task pauses the update",
                config: stop_first,
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Failed, TaskState::Running, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 2 * S,
                want: vec![],
                want_state: Some(UpdateState::Paused),
                want_wake: None,
            },
            Case {
                name: "with action rollback, it rolls back",
                config: config(2, 0, FailureAction::Rollback, 5 * S, UpdateOrder::StopFirst),
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Failed, TaskState::Running, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 2 * S,
                want: vec![],
                want_state: Some(UpdateState::RollbackStarted),
                want_wake: None,
            },
            Case {
                name: "with action continue, failures are ignored",
                config: config(2, 0, FailureAction::Continue, 5 * S, UpdateOrder::StopFirst),
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Failed, TaskState::Running, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 2 * S,
                want: vec!["create slot 2 Ready", "o2 Shutdown"],
                want_state: None,
                want_wake: None,
            },
            Case {
                name: "failures before the update started do not count",
                config: stop_first,
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Failed, TaskState::Running, -S),
                            v2,
                            -S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 2 * S,
                want: vec!["create slot 2 Ready", "o2 Shutdown"],
                want_state: None,
                want_wake: None,
            },
            Case {
                name: "a failing rollback pauses as rollback_paused",
                config: stop_first,
                back: true,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Failed, TaskState::Running, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 2 * S,
                want: vec![],
                want_state: Some(UpdateState::RollbackPaused),
                want_wake: None,
            },
            Case {
                name: "regression: an old task still wanted running is stopped for the task waiting behind it",
                config: config(1, 0, FailureAction::Continue, 0, UpdateOrder::StartFirst),
                back: false,
                // Start-first: n1 (v2) failed beside the running o1 (v1); the restart policy
                // made n1b, waiting while o1 runs. o1 was stopped only once a new task runs,
                // and n1b could not run until o1 stopped: the update waited for ever.
                tasks: |s, v1, v2| {
                    vec![
                        old("o1", s, 1, v1),
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Failed, TaskState::Shutdown, S),
                            v2,
                            S,
                        ),
                        with_spec(
                            task("n1b", s, 1, "", TaskState::Pending, TaskState::Ready, 2 * S),
                            v2,
                            2 * S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: 3 * S,
                want: vec!["o1 Shutdown"],
                want_state: None,
                want_wake: Some(2 * S + STALL_AFTER),
            },
            Case {
                name: "a new task not running yet holds the update until the bound",
                config: stop_first,
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Preparing, TaskState::Running, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                        old("o3", s, 3, v1),
                    ]
                },
                now: 2 * S,
                want: vec!["create slot 2 Ready", "o2 Shutdown"],
                want_state: None,
                want_wake: Some(S + STALL_AFTER),
            },
            Case {
                name: "a new task stuck past the bound pauses the update",
                config: stop_first,
                back: false,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Preparing, TaskState::Running, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: S + STALL_AFTER,
                want: vec![],
                want_state: Some(UpdateState::Paused),
                want_wake: None,
            },
            Case {
                name: "a stuck rollback pauses as rollback_paused",
                config: stop_first,
                back: true,
                tasks: |s, v1, v2| {
                    vec![
                        with_spec(
                            task("n1", s, 1, "n1", TaskState::Assigned, TaskState::Running, S),
                            v2,
                            S,
                        ),
                        old("o2", s, 2, v1),
                    ]
                },
                now: S + STALL_AFTER,
                want: vec![],
                want_state: Some(UpdateState::RollbackPaused),
                want_wake: None,
            },
            Case {
                name: "parallelism 0 updates every slot at once",
                config: config(0, 0, FailureAction::Pause, 0, UpdateOrder::StopFirst),
                back: false,
                tasks: |s, v1, _| (1..=3).map(|i| old(&format!("o{i}"), s, i, v1)).collect(),
                now: S,
                want: vec![
                    "create slot 1 Ready",
                    "create slot 2 Ready",
                    "create slot 3 Ready",
                    "o1 Shutdown",
                    "o2 Shutdown",
                    "o3 Shutdown",
                ],
                want_state: None,
                want_wake: None,
            },
        ];
        for c in cases {
            let (service, v1, v2) = updating(3, c.config, c.back);
            let tasks = (c.tasks)(&service, &v1, &v2);
            let v = view(vec![node("n1")], vec![service.clone()], tasks.clone());
            let mut d = Decision::default();
            let changed = step(&service, &arcs(&tasks), &v, c.now, &mut d);
            let mut want: Vec<String> = c.want.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(summarize(&d, &tasks), want, "{}", c.name);
            let state = changed
                .and_then(|s| s.update_status)
                .and_then(|u| UpdateState::try_from(u.state).ok());
            assert_eq!(state, c.want_state, "{}: state", c.name);
            assert_eq!(d.wake_at, c.want_wake, "{}: wake", c.name);
        }
    }

    /// The anomaly (moby#35564, "stuck in updating"): after a leader kill mid update, the
    /// report that slot 1's old task had stopped never reached the store (the new leader
    /// dropped reports that came before its status writer ran). The old task stayed "running"
    /// on a live node, its replacement waited behind it at READY, and with parallelism 1 the
    /// update said "update in progress" for good. Whatever the lost report, the update now
    /// pauses after `STALL_AFTER` without a change, naming the task it waits on; resuming it
    /// (which restarts it) gives the slot the whole bound again.
    #[test]
    fn regression_update_stuck_on_a_task_that_never_changes_pauses_naming_it() {
        let (mut service, v1, v2) = updating(
            3,
            config(
                1,
                3 * S,
                FailureAction::Pause,
                3 * S,
                UpdateOrder::StopFirst,
            ),
            false,
        );
        let tasks = vec![
            // Told to stop at t=1s; its agent's SHUTDOWN report was lost.
            with_spec(
                task(
                    "o1",
                    &service,
                    1,
                    "m1",
                    TaskState::Running,
                    TaskState::Shutdown,
                    S,
                ),
                &v1,
                -10 * S,
            ),
            with_spec(
                task(
                    "n1",
                    &service,
                    1,
                    "m2",
                    TaskState::Ready,
                    TaskState::Ready,
                    S,
                ),
                &v2,
                S,
            ),
            old("o2", &service, 2, &v1),
            old("o3", &service, 3, &v1),
        ];
        let v = view(
            vec![node("m1"), node("m2")],
            vec![service.clone()],
            tasks.clone(),
        );
        let look = |service: &Service, now: i64| {
            let mut d = Decision::default();
            let changed = step(service, &arcs(&tasks), &v, now, &mut d);
            (changed.and_then(|s| s.update_status), d)
        };

        // Before the bound: waiting, and a wake-up at the bound even if nothing changes.
        let (status, d) = look(&service, S + STALL_AFTER - 1);
        assert_eq!(status, None);
        assert!(d.changes.is_empty());
        assert_eq!(d.wake_at, Some(S + STALL_AFTER));

        // At the bound: paused, saying on what.
        let (status, _) = look(&service, S + STALL_AFTER);
        let status = status.expect("the update ends");
        assert_eq!(status.state, UpdateState::Paused as i32);
        assert!(
            status
                .message
                .starts_with("update paused: no progress for 300s:")
                && status
                    .message
                    .contains("task n1 waits for task o1 to stop, still running on node m1"),
            "{}",
            status.message
        );

        // Resumed (`service update` of a paused update restarts it): a fresh bound.
        let resumed_at = S + STALL_AFTER + 10 * S;
        service.update_status = Some(UpdateStatus {
            state: UpdateState::Updating as i32,
            started_at: resumed_at,
            ..Default::default()
        });
        let (status, d) = look(&service, resumed_at + S);
        assert_eq!(status, None);
        assert_eq!(d.wake_at, Some(resumed_at + STALL_AFTER));
    }

    #[test]
    fn an_automatic_rollback_swaps_the_specs() {
        let (mut service, v1, v2) = updating(
            2,
            config(1, 0, FailureAction::Rollback, 0, UpdateOrder::StopFirst),
            false,
        );
        // The failed update had moved the published port from 8080 to 9090: the rollback
        // brings 8080 back.
        let port = |published| orch_api::pb::PortConfig {
            protocol: "tcp".into(),
            target_port: 80,
            published_port: published,
            ..Default::default()
        };
        let endpoint = |published| orch_api::pb::EndpointSpec {
            mode: "vip".into(),
            ports: vec![port(published)],
        };
        if let Some(s) = service.spec.as_mut() {
            s.endpoint = Some(endpoint(9090));
        }
        if let Some(s) = service.previous_spec.as_mut() {
            s.endpoint = Some(endpoint(8080));
        }
        service.ports = vec![port(9090)];
        let mut tasks = vec![with_spec(
            task(
                "n1",
                &service,
                1,
                "n1",
                TaskState::Failed,
                TaskState::Running,
                S,
            ),
            &v2,
            S,
        )];
        tasks[0].endpoint = Some(endpoint(9090));
        let v = view(vec![node("n1")], vec![service.clone()], tasks.clone());
        let mut d = Decision::default();
        let rolled = step(&service, &arcs(&tasks), &v, 2 * S, &mut d).expect("service changed");
        assert_eq!(rolled.spec.and_then(|s| s.task), Some(v1));
        assert_eq!(rolled.previous_spec.and_then(|s| s.task), Some(v2));
        assert_eq!(rolled.ports, vec![port(8080)], "the previous spec's ports");
        let status = rolled.update_status.expect("status");
        assert!(
            status
                .message
                .contains("update rolled back due to failure or early termination of task n1"),
            "{}",
            status.message
        );
    }
}
