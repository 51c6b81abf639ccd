//! Table tests of the reconcilers: each case is a service, its tasks, the nodes, and `now`;
//! the expectation is what the reconciler does about it.

use orch_api::pb::{NodeAvailability, RestartCondition, TaskState};

use super::{reconcile, Change, Decision};
use crate::testkit::*;

const S: i64 = 1_000_000_000;

/// A readable summary of a decision: "create slot 2", "shutdown t1", "remove t3", "delete t4".
fn summary(d: &Decision, before: &[orch_api::pb::Task]) -> Vec<String> {
    let mut out: Vec<String> = d
        .changes
        .iter()
        .map(|c| match c {
            Change::Create(t) if t.desired_state() == TaskState::Ready => {
                format!("create slot {} ready", t.slot)
            }
            Change::Create(t) if t.node_id.is_empty() => format!("create slot {}", t.slot),
            Change::Create(t) => format!("create on {}", t.node_id),
            Change::Update(t) => {
                let old = before
                    .iter()
                    .find(|o| o.id == t.id)
                    .map_or(0, |o| o.desired_state);
                match TaskState::try_from(t.desired_state) {
                    Ok(TaskState::Shutdown) if old != t.desired_state => {
                        format!("shutdown {}", t.id)
                    }
                    Ok(TaskState::Remove) if old != t.desired_state => format!("remove {}", t.id),
                    Ok(TaskState::Running) if old != t.desired_state => format!("start {}", t.id),
                    _ => format!("update {}", t.id),
                }
            }
            Change::Delete(id) => format!("delete {id}"),
        })
        .collect();
    out.sort();
    out
}

struct Case {
    name: &'static str,
    service: orch_api::pb::Service,
    nodes: Vec<orch_api::pb::Node>,
    tasks: Vec<orch_api::pb::Task>,
    history_limit: usize,
    now: i64,
    want: Vec<&'static str>,
    want_wake: Option<i64>,
}

fn check(cases: Vec<Case>) {
    for c in cases {
        let v = view(c.nodes.clone(), vec![c.service.clone()], c.tasks.clone());
        let d = reconcile(&c.service, &arcs(&c.tasks), &v, c.history_limit, c.now);
        let mut want: Vec<String> = c.want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(summary(&d, &c.tasks), want, "{}", c.name);
        assert_eq!(d.wake_at, c.want_wake, "{}: wake", c.name);
    }
}

fn nodes3() -> Vec<orch_api::pb::Node> {
    vec![node("n1"), node("n2"), node("n3")]
}

#[test]
fn replicated_cases() {
    let web3 = replicated("web", 3);
    let web1 = replicated("web", 1);
    let failed_at = |id: &str, slot, at| {
        task(
            id,
            &web3,
            slot,
            "n1",
            TaskState::Failed,
            TaskState::Running,
            at,
        )
    };
    check(vec![
        Case {
            name: "a new service gets slots 1..=replicas",
            service: web3.clone(),
            nodes: nodes3(),
            tasks: vec![],
            history_limit: 5,
            now: 10 * S,
            want: vec!["create slot 1", "create slot 2", "create slot 3"],
            want_wake: None,
        },
        Case {
            name: "scale up fills the lowest free slot",
            service: web3.clone(),
            nodes: nodes3(),
            tasks: vec![running("a", &web3, 1, "n1"), running("c", &web3, 3, "n3")],
            history_limit: 5,
            now: 10 * S,
            want: vec!["create slot 2"],
            want_wake: None,
        },
        Case {
            name: "scale down removes tasks that are not running first",
            service: web1.clone(),
            nodes: nodes3(),
            tasks: vec![
                running("a", &web1, 1, "n1"),
                running("b", &web1, 2, "n2"),
                pending("c", &web1, 3),
            ],
            history_limit: 5,
            now: 10 * S,
            want: vec!["remove b", "remove c"],
            want_wake: None,
        },
        Case {
            name: "scale down removes from the most crowded node",
            service: replicated("web", 2),
            nodes: nodes3(),
            tasks: vec![
                running("a", &web1, 1, "n1"),
                running("b", &web1, 2, "n1"),
                running("c", &web1, 3, "n2"),
            ],
            history_limit: 5,
            now: 10 * S,
            want: vec!["remove b"],
            want_wake: None,
        },
        Case {
            name: "a task on a drained node is replaced in its slot",
            service: web1.clone(),
            nodes: vec![
                with_availability(node("n1"), NodeAvailability::Drain),
                node("n2"),
            ],
            tasks: vec![running("a", &web1, 1, "n1")],
            history_limit: 5,
            now: 10 * S,
            want: vec!["shutdown a", "create slot 1 ready"],
            want_wake: None,
        },
        Case {
            name: "a task on a down node is replaced",
            service: web1.clone(),
            nodes: vec![down(node("n1")), node("n2")],
            tasks: vec![running("a", &web1, 1, "n1")],
            history_limit: 5,
            now: 10 * S,
            want: vec!["shutdown a", "create slot 1"],
            want_wake: None,
        },
        Case {
            name: "a task on a paused node stays",
            service: web1.clone(),
            nodes: vec![with_availability(node("n1"), NodeAvailability::Pause)],
            tasks: vec![running("a", &web1, 1, "n1")],
            history_limit: 5,
            now: 10 * S,
            want: vec![],
            want_wake: None,
        },
        Case {
            name: "a failed task waits out the restart delay",
            service: restart_policy(web1.clone(), RestartCondition::Any, 5 * S),
            nodes: nodes3(),
            tasks: vec![failed_at("a", 1, 8 * S)],
            history_limit: 5,
            now: 10 * S,
            want: vec![],
            want_wake: Some(13 * S),
        },
        Case {
            name: "then it is replaced in its slot",
            service: restart_policy(web1.clone(), RestartCondition::Any, 5 * S),
            nodes: nodes3(),
            tasks: vec![failed_at("a", 1, 8 * S)],
            history_limit: 5,
            now: 13 * S,
            want: vec!["shutdown a", "create slot 1"],
            want_wake: None,
        },
        Case {
            name: "restart condition none leaves the slot's dead task",
            service: restart_policy(web1.clone(), RestartCondition::None, 0),
            nodes: nodes3(),
            tasks: vec![failed_at("a", 1, 8 * S)],
            history_limit: 5,
            now: 13 * S,
            want: vec![],
            want_wake: None,
        },
        Case {
            name: "history beyond the limit is deleted, oldest first",
            service: web1.clone(),
            nodes: nodes3(),
            tasks: vec![
                task(
                    "h1",
                    &web1,
                    1,
                    "n1",
                    TaskState::Failed,
                    TaskState::Shutdown,
                    1,
                ),
                task(
                    "h2",
                    &web1,
                    1,
                    "n1",
                    TaskState::Failed,
                    TaskState::Shutdown,
                    2,
                ),
                task(
                    "h3",
                    &web1,
                    1,
                    "n1",
                    TaskState::Failed,
                    TaskState::Shutdown,
                    3,
                ),
                task(
                    "cur",
                    &web1,
                    1,
                    "n1",
                    TaskState::Running,
                    TaskState::Running,
                    4,
                ),
            ],
            history_limit: 2,
            now: 10 * S,
            want: vec!["delete h1"],
            want_wake: None,
        },
        Case {
            name: "removed tasks are deleted once stopped, not before",
            service: web1.clone(),
            nodes: nodes3(),
            tasks: vec![
                running("cur", &web1, 1, "n1"),
                task(
                    "gone",
                    &web1,
                    2,
                    "n2",
                    TaskState::Shutdown,
                    TaskState::Remove,
                    1,
                ),
                task(
                    "stopping",
                    &web1,
                    3,
                    "n3",
                    TaskState::Running,
                    TaskState::Remove,
                    1,
                ),
            ],
            history_limit: 5,
            now: 10 * S,
            want: vec!["delete gone"],
            want_wake: None,
        },
    ]);
}

#[test]
fn global_cases() {
    let g = placement(global("g"), &["node.labels.kind!=db"], &[], 0);
    let gj = global_job("gj");
    check(vec![
        Case {
            name: "one task per eligible node",
            service: g.clone(),
            nodes: vec![node("n1"), node("n2"), labelled(node("n3"), "kind", "db")],
            tasks: vec![running("a", &g, 0, "n1")],
            history_limit: 5,
            now: 10 * S,
            want: vec!["create on n2"],
            want_wake: None,
        },
        Case {
            name: "drain stops the task, pause keeps it and takes no new one, down keeps it",
            service: g.clone(),
            nodes: vec![
                with_availability(node("n1"), NodeAvailability::Drain),
                with_availability(node("n2"), NodeAvailability::Pause),
                down(node("n3")),
                with_availability(node("n4"), NodeAvailability::Pause),
            ],
            tasks: vec![
                running("a", &g, 0, "n1"),
                running("b", &g, 0, "n2"),
                running("c", &g, 0, "n3"),
            ],
            history_limit: 5,
            now: 10 * S,
            want: vec!["shutdown a"],
            want_wake: None,
        },
        Case {
            name:
                "a node that no longer satisfies the constraints loses its task; removed nodes too",
            service: g.clone(),
            nodes: vec![labelled(node("n1"), "kind", "db")],
            tasks: vec![running("a", &g, 0, "n1"), running("b", &g, 0, "gone")],
            history_limit: 5,
            now: 10 * S,
            want: vec!["shutdown a", "shutdown b"],
            want_wake: None,
        },
        Case {
            name: "a global job runs once per node",
            service: gj.clone(),
            nodes: vec![node("n1"), node("n2")],
            tasks: vec![task(
                "a",
                &gj,
                0,
                "n1",
                TaskState::Complete,
                TaskState::Running,
                1,
            )],
            history_limit: 5,
            now: 10 * S,
            want: vec!["create on n2"],
            want_wake: None,
        },
    ]);
}

#[test]
fn replicated_job_cases() {
    let job = replicated_job("job", 2, 5);
    let done = |id: &str, slot| {
        task(
            id,
            &job,
            slot,
            "n1",
            TaskState::Complete,
            TaskState::Running,
            1,
        )
    };
    check(vec![
        Case {
            name: "at most max-concurrent at once",
            service: job.clone(),
            nodes: nodes3(),
            tasks: vec![],
            history_limit: 5,
            now: 10 * S,
            want: vec!["create slot 1", "create slot 2"],
            want_wake: None,
        },
        Case {
            name: "completions free room for the next",
            service: job.clone(),
            nodes: nodes3(),
            tasks: vec![done("a", 1), running("b", &job, 2, "n2")],
            history_limit: 5,
            now: 10 * S,
            want: vec!["create slot 3"],
            want_wake: None,
        },
        Case {
            name: "a finished job creates nothing",
            service: job.clone(),
            nodes: nodes3(),
            tasks: (1..=5).map(|i| done(&format!("t{i}"), i)).collect(),
            history_limit: 5,
            now: 10 * S,
            want: vec![],
            want_wake: None,
        },
    ]);
}

/// Breaks the fault suite's slot invariant (drain during the workload): the replacement of a drained task
/// started while the drained one was still in its stop grace period, so the slot ran two
/// copies of one spec. The replacement now waits at READY until the old task has stopped.
#[test]
fn regression_drain_replacement_overlapped_the_stopping_task() {
    let web1 = replicated("web", 1);
    let drained = || {
        vec![
            with_availability(node("n1"), NodeAvailability::Drain),
            node("n2"),
        ]
    };
    let waiting = || {
        task(
            "b",
            &web1,
            1,
            "n2",
            TaskState::Assigned,
            TaskState::Ready,
            2,
        )
    };
    let old = |state| task("a", &web1, 1, "n1", state, TaskState::Shutdown, 1);
    check(vec![
        Case {
            name: "the replacement waits while the drained task is stopping",
            service: web1.clone(),
            nodes: drained(),
            tasks: vec![old(TaskState::Running), waiting()],
            history_limit: 5,
            now: 10 * S,
            want: vec![],
            want_wake: None,
        },
        Case {
            name: "and starts once it has stopped",
            service: web1.clone(),
            nodes: drained(),
            tasks: vec![old(TaskState::Shutdown), waiting()],
            history_limit: 5,
            now: 10 * S,
            want: vec!["start b"],
            want_wake: None,
        },
        Case {
            name: "a task on a down node does not hold its slot (its agent fenced it)",
            service: web1.clone(),
            nodes: vec![down(node("n1")), node("n2")],
            tasks: vec![old(TaskState::Running), waiting()],
            history_limit: 5,
            now: 10 * S,
            want: vec!["start b"],
            want_wake: None,
        },
        Case {
            name: "nor does a task on a node that was removed",
            service: web1.clone(),
            nodes: vec![node("n2")],
            tasks: vec![old(TaskState::Running), waiting()],
            history_limit: 5,
            now: 10 * S,
            want: vec!["start b"],
            want_wake: None,
        },
    ]);
}

/// Breaks the fault suite's slot invariant (scale 3 -> 1 -> 3 in quick succession): the new slot-3 task
/// started while the removed slot-3 task was still stopping.
#[test]
fn regression_slot_reused_while_its_removed_task_was_stopping() {
    let web3 = replicated("web", 3);
    let removed = task(
        "c",
        &web3,
        3,
        "n3",
        TaskState::Running,
        TaskState::Remove,
        1,
    );
    check(vec![Case {
        name: "scale up into a slot whose task is still stopping",
        service: web3.clone(),
        nodes: nodes3(),
        tasks: vec![
            running("a", &web3, 1, "n1"),
            running("b", &web3, 2, "n2"),
            removed,
        ],
        history_limit: 5,
        now: 10 * S,
        want: vec!["create slot 3 ready"],
        want_wake: None,
    }]);
}

/// Found by the chaos suite (disk-full, under churn): a slot's task failed and was restarted at
/// once while an earlier task of the slot, removed by a scale-down, was still starting on a
/// slow engine; both containers ran. The restart now waits at READY too.
#[test]
fn regression_restart_overlapped_a_removed_task_still_starting() {
    let web1 = restart_policy(replicated("web", 1), RestartCondition::Any, 0);
    let removed = task(
        "a",
        &web1,
        1,
        "n1",
        TaskState::Starting,
        TaskState::Remove,
        1,
    );
    let failed = task(
        "b",
        &web1,
        1,
        "n2",
        TaskState::Failed,
        TaskState::Running,
        2,
    );
    check(vec![Case {
        name: "the restart of a failed task waits for the slot's removed task",
        service: web1.clone(),
        nodes: nodes3(),
        tasks: vec![removed.clone(), failed.clone()],
        history_limit: 5,
        now: 10 * S,
        want: vec!["shutdown b", "create slot 1 ready"],
        want_wake: None,
    }]);
    // Once the removed task has stopped, the restart starts at once.
    let mut stopped = removed;
    stopped.status.as_mut().expect("a status").state = TaskState::Shutdown as i32;
    check(vec![Case {
        name: "with the slot's other task stopped, the restart runs",
        service: web1.clone(),
        nodes: nodes3(),
        tasks: vec![stopped, failed],
        history_limit: 5,
        now: 10 * S,
        want: vec!["shutdown b", "create slot 1", "delete a"],
        want_wake: None,
    }]);
}

/// Two updates of one task in a batch conflict in the store, so the whole batch was dropped
/// and decided again, identically, forever. One update per task survives: the furthest.
#[test]
fn regression_two_updates_of_one_task_livelocked_the_batch() {
    let web1 = replicated("web", 1);
    let a = running("a", &web1, 1, "n1");
    let mut changes = vec![
        Change::Update(super::with_desired(&a, TaskState::Shutdown)),
        Change::Create(pending("b", &web1, 1)),
        Change::Update(super::with_desired(&a, TaskState::Remove)),
        Change::Update(super::with_desired(&a, TaskState::Shutdown)),
    ];
    super::dedupe(&mut changes);
    let updates: Vec<i32> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Update(t) => Some(t.desired_state),
            _ => None,
        })
        .collect();
    assert_eq!(updates, vec![TaskState::Remove as i32]);
    assert_eq!(changes.len(), 2);
}
