//! Unit tests of the store: transactions, watches, lookups, indexes and snapshots.

use orch_api::pb::store_action::Action;
use orch_api::pb::{
    Meta, Node, NodeDescription, Service, ServiceSpec, StoreAction, StoreTransaction, Task,
};

use super::*;

fn txn(actions: Vec<Action>) -> StoreTransaction {
    StoreTransaction {
        actions: actions
            .into_iter()
            .map(|a| StoreAction { action: Some(a) })
            .collect(),
        timestamp: 42,
    }
}

fn node(id: &str, hostname: &str) -> Node {
    Node {
        id: id.into(),
        description: Some(NodeDescription {
            hostname: hostname.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(id: &str, name: &str) -> Service {
    Service {
        id: id.into(),
        spec: Some(ServiceSpec {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn create_sets_version_and_watchers_see_it() {
    let store = Store::new();
    let (_, mut rx) = store.view_and_watch();
    store
        .apply(5, &txn(vec![Action::CreateNode(node("n1", "a"))]))
        .expect("apply");
    let view = store.view();
    assert_eq!(
        view.node("n1").and_then(|n| n.meta).map(|m| m.version),
        Some(5)
    );
    let change = rx.try_recv().expect("event");
    assert_eq!(change.index, 5);
    assert!(matches!(change.events[0], Event::Created(Object::Node(_))));
}

#[test]
fn stale_update_rejects_whole_transaction() {
    let store = Store::new();
    store
        .apply(1, &txn(vec![Action::CreateNode(node("n1", "a"))]))
        .expect("create");
    let mut stale = node("n1", "b");
    stale.meta = Some(Meta {
        version: 0,
        ..Default::default()
    });
    let err = store
        .apply(
            2,
            &txn(vec![
                Action::CreateNode(node("n2", "c")),
                Action::UpdateNode(stale),
            ]),
        )
        .expect_err("conflict");
    assert!(matches!(err, ApplyError::VersionConflict { .. }));
    let view = store.view();
    assert!(view.node("n2").is_none(), "first action rolled back");
    assert_eq!(view.index, 2, "index advances anyway");
}

#[test]
fn service_names_are_unique() {
    let store = Store::new();
    store
        .apply(1, &txn(vec![Action::CreateService(service("s1", "web"))]))
        .expect("create");
    let err = store
        .apply(2, &txn(vec![Action::CreateService(service("s2", "web"))]))
        .expect_err("dup");
    assert_eq!(
        err,
        ApplyError::NameConflict {
            kind: "service",
            name: "web".into()
        }
    );
    store
        .apply(3, &txn(vec![Action::DeleteService("s1".into())]))
        .expect("delete");
    store
        .apply(4, &txn(vec![Action::CreateService(service("s2", "web"))]))
        .expect("reuse name");
}

#[test]
fn find_node_by_id_prefix_and_hostname() {
    let store = Store::new();
    store
        .apply(
            1,
            &txn(vec![
                Action::CreateNode(node("abc111", "alpha")),
                Action::CreateNode(node("abc222", "beta")),
            ]),
        )
        .expect("create");
    let view = store.view();
    assert_eq!(
        view.find_node("abc111").map(|n| n.id.clone()),
        Ok("abc111".into())
    );
    assert_eq!(
        view.find_node("beta").map(|n| n.id.clone()),
        Ok("abc222".into())
    );
    assert_eq!(
        view.find_node("abc2").map(|n| n.id.clone()),
        Ok("abc222".into())
    );
    assert!(matches!(
        view.find_node("abc"),
        Err(LookupError::Ambiguous { count: 2, .. })
    ));
    assert!(matches!(
        view.find_node("zzz"),
        Err(LookupError::NotFound { .. })
    ));
}

#[test]
fn task_indexes_follow_updates_and_snapshots() {
    let store = Store::new();
    let task = Task {
        id: "t1".into(),
        service_id: "s1".into(),
        node_id: "n1".into(),
        ..Default::default()
    };
    store
        .apply(1, &txn(vec![Action::CreateTask(task)]))
        .expect("create");
    let mut moved = (**store.view().task("t1").expect("task")).clone();
    moved.node_id = "n2".into();
    store
        .apply(2, &txn(vec![Action::UpdateTask(moved)]))
        .expect("update");
    let view = store.view();
    assert_eq!(view.tasks_of_node("n1").count(), 0);
    assert_eq!(view.tasks_of_node("n2").count(), 1);
    let restored = Store::new();
    restored.restore(2, view.to_snapshot());
    assert_eq!(restored.view().tasks_of_service("s1").count(), 1);
    assert_eq!(restored.view().tasks_of_node("n2").count(), 1);
}

/// The per-node load the store keeps equals what walking the tasks gives, through
/// creates, assignments, moves, stops, status reports, deletes and a snapshot.
#[test]
fn node_load_follows_every_task_change() {
    use orch_api::pb::{
        PortConfig, PublishMode, ResourceLimits, ResourceRequirements, TaskSpec, TaskState,
        TaskStatus,
    };
    fn walked(view: &Tables, node: &str) -> Option<NodeLoad> {
        let mut load = NodeLoad::default();
        for t in view.tasks_of_node(node).filter(|t| occupies_node(t)) {
            let (cpu, memory) = reservation(t);
            load.tasks += 1;
            load.nano_cpus += cpu;
            load.memory_bytes += memory;
            *load.by_service.entry(t.service_id.clone()).or_default() += 1;
            load.with_host_ports += usize::from(publishes_host_ports(t));
        }
        (load.tasks > 0).then_some(load)
    }
    let store = Store::new();
    let mut index = 0;
    let mut apply = |actions: Vec<Action>| {
        index += 1;
        store.apply(index, &txn(actions)).expect("apply");
    };
    let task = |id: &str, service: &str, node: &str, state: TaskState| Task {
        id: id.into(),
        service_id: service.into(),
        node_id: node.into(),
        desired_state: TaskState::Running as i32,
        spec: Some(TaskSpec {
            resources: Some(ResourceRequirements {
                reservations: Some(ResourceLimits {
                    nano_cpus: 100,
                    memory_bytes: 1 << 20,
                    pids: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut with_port = task("t4", "s2", "n1", TaskState::Running);
    with_port.endpoint = Some(orch_api::pb::EndpointSpec {
        ports: vec![PortConfig {
            publish_mode: PublishMode::Host as i32,
            published_port: 8080,
            target_port: 80,
            protocol: "tcp".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    apply(vec![
        Action::CreateTask(task("t1", "s1", "", TaskState::Pending)),
        Action::CreateTask(task("t2", "s1", "n1", TaskState::Assigned)),
        Action::CreateTask(task("t3", "s2", "n2", TaskState::Running)),
        Action::CreateTask(with_port),
    ]);
    let current = |id: &str| (**store.view().task(id).expect("task")).clone();
    let mut checks = Vec::new();
    let mut check = |view: Tables, step: &str| {
        for node in ["n1", "n2", "n3"] {
            checks.push(step.to_string());
            assert_eq!(
                view.node_load(node).cloned(),
                walked(&view, node),
                "{step}: {node}"
            );
        }
    };
    check(store.view(), "created");
    let mut t1 = current("t1");
    t1.node_id = "n2".into();
    t1.status.get_or_insert_with(Default::default).state = TaskState::Assigned as i32;
    apply(vec![Action::UpdateTask(t1)]);
    check(store.view(), "assigned");
    let mut t2 = current("t2");
    t2.status.get_or_insert_with(Default::default).state = TaskState::Running as i32;
    apply(vec![Action::UpdateTask(t2)]);
    check(store.view(), "status report");
    let mut t3 = current("t3");
    t3.desired_state = TaskState::Shutdown as i32;
    apply(vec![Action::UpdateTask(t3)]);
    check(store.view(), "told to stop");
    let mut t2 = current("t2");
    t2.status.get_or_insert_with(Default::default).state = TaskState::Failed as i32;
    apply(vec![Action::UpdateTask(t2)]);
    check(store.view(), "failed");
    let mut t4 = current("t4");
    t4.node_id = "n3".into();
    apply(vec![Action::UpdateTask(t4)]);
    check(store.view(), "moved");
    apply(vec![Action::DeleteTask("t1".into())]);
    check(store.view(), "deleted");
    assert!(store.view().node_load("n1").is_none(), "n1 holds nothing");
    assert_eq!(
        store.view().node_load("n3").map(|l| l.with_host_ports),
        Some(1)
    );
    let restored = Store::new();
    restored.restore(index, store.view().to_snapshot());
    check(restored.view(), "restored");
    // s1: t2 failed (desired running), t1 deleted; s2: t3 told to stop, t4 running.
    assert_eq!(store.view().service_counts("s1"), (1, 0));
    assert_eq!(store.view().service_counts("s2"), (1, 1));
    assert_eq!(restored.view().service_counts("s2"), (1, 1));
    assert_eq!(
        restored.view().node_load("n3"),
        store.view().node_load("n3")
    );
    assert_eq!(checks.len(), 24);
}
