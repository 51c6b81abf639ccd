//! Builders for unit tests of the pure decision functions (scheduler, orchestrators): nodes,
//! services and tasks, and a store view holding them.

use std::sync::Arc;

use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    ContainerSpec, GlobalJob, GlobalService, Meta, Node, NodeAvailability, NodeDescription,
    NodeRole, NodeSpec, NodeState, NodeStatus, Placement, PlacementPreference, ReplicatedJob,
    ReplicatedService, ResourceLimits, ResourceRequirements, Resources, RestartCondition,
    RestartPolicy, Service, ServiceSpec, Task, TaskSpec, TaskState, TaskStatus,
};

use crate::state::store::{Store, Tables};

pub const GIB: i64 = 1 << 30;

pub fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        role: NodeRole::Worker as i32,
        spec: Some(NodeSpec {
            availability: NodeAvailability::Active as i32,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: id.into(),
            resources: Some(Resources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 4 * GIB,
            }),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            addr: "10.0.0.1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn with_availability(mut n: Node, a: NodeAvailability) -> Node {
    n.spec.get_or_insert_with(Default::default).availability = a as i32;
    n
}

pub fn down(mut n: Node) -> Node {
    n.status.get_or_insert_with(Default::default).state = NodeState::Down as i32;
    n
}

pub fn labelled(mut n: Node, key: &str, value: &str) -> Node {
    n.spec
        .get_or_insert_with(Default::default)
        .labels
        .insert(key.into(), value.into());
    n
}

pub fn with_memory(mut n: Node, bytes: i64) -> Node {
    if let Some(r) = n.description.as_mut().and_then(|d| d.resources.as_mut()) {
        r.memory_bytes = bytes;
    }
    n
}

fn task_spec() -> TaskSpec {
    TaskSpec {
        container: Some(ContainerSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        restart: Some(RestartPolicy {
            condition: RestartCondition::Any as i32,
            delay: 0,
            max_attempts: 0,
            window: 0,
        }),
        ..Default::default()
    }
}

pub fn service(id: &str, mode: Mode) -> Service {
    Service {
        id: id.into(),
        spec_version: 1,
        spec: Some(ServiceSpec {
            name: id.into(),
            task: Some(task_spec()),
            mode: Some(mode),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn replicated(id: &str, replicas: u64) -> Service {
    service(id, Mode::Replicated(ReplicatedService { replicas }))
}

pub fn global(id: &str) -> Service {
    service(id, Mode::Global(GlobalService {}))
}

pub fn global_job(id: &str) -> Service {
    let mut s = service(id, Mode::GlobalJob(GlobalJob {}));
    s.job_status = Some(orch_api::pb::JobStatus {
        job_iteration: 1,
        last_execution: 0,
    });
    s
}

pub fn replicated_job(id: &str, max_concurrent: u64, total: u64) -> Service {
    let mut s = service(
        id,
        Mode::ReplicatedJob(ReplicatedJob {
            max_concurrent,
            total_completions: total,
        }),
    );
    s.job_status = Some(orch_api::pb::JobStatus {
        job_iteration: 1,
        last_execution: 0,
    });
    s
}

pub fn placement(
    mut s: Service,
    constraints: &[&str],
    prefs: &[&str],
    max_replicas: u64,
) -> Service {
    if let Some(t) = s.spec.as_mut().and_then(|sp| sp.task.as_mut()) {
        t.placement = Some(Placement {
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            preferences: prefs
                .iter()
                .map(|p| PlacementPreference {
                    spread_descriptor: p.to_string(),
                })
                .collect(),
            max_replicas,
            platforms: vec![],
        });
    }
    s
}

pub fn reserve_memory(mut s: Service, bytes: i64) -> Service {
    if let Some(t) = s.spec.as_mut().and_then(|sp| sp.task.as_mut()) {
        t.resources = Some(ResourceRequirements {
            reservations: Some(ResourceLimits {
                nano_cpus: 0,
                memory_bytes: bytes,
                pids: 0,
            }),
            limits: None,
        });
    }
    s
}

pub fn restart_policy(mut s: Service, condition: RestartCondition, delay: i64) -> Service {
    if let Some(t) = s.spec.as_mut().and_then(|sp| sp.task.as_mut()) {
        t.restart = Some(RestartPolicy {
            condition: condition as i32,
            delay,
            max_attempts: 0,
            window: 0,
        });
    }
    s
}

/// A task of `service` in `slot` on `node` ("" = unassigned), observed `state`, desired
/// `desired`, created at `created` (ordering within a slot).
pub fn task(
    id: &str,
    service: &Service,
    slot: u64,
    node: &str,
    state: TaskState,
    desired: TaskState,
    created: i64,
) -> Task {
    Task {
        id: id.into(),
        meta: Some(Meta {
            version: 1,
            created_at: created,
            updated_at: created,
        }),
        service_id: service.id.clone(),
        service_name: service.id.clone(),
        slot,
        node_id: node.into(),
        spec: service.spec.as_ref().and_then(|s| s.task.clone()),
        spec_version: service.spec_version,
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: created,
            ..Default::default()
        }),
        job_iteration: service.job_status.as_ref().map_or(0, |j| j.job_iteration),
        ..Default::default()
    }
}

pub fn running(id: &str, service: &Service, slot: u64, node: &str) -> Task {
    task(
        id,
        service,
        slot,
        node,
        TaskState::Running,
        TaskState::Running,
        1,
    )
}

pub fn pending(id: &str, service: &Service, slot: u64) -> Task {
    task(
        id,
        service,
        slot,
        "",
        TaskState::Pending,
        TaskState::Running,
        1,
    )
}

pub fn view(nodes: Vec<Node>, services: Vec<Service>, tasks: Vec<Task>) -> Tables {
    let store = Store::new();
    store.restore(
        1,
        orch_api::pb::StoreSnapshot {
            clusters: vec![],
            nodes,
            services,
            tasks,
            data_objects: vec![],
            networks: vec![],
        },
    );
    store.view()
}

pub fn arcs(tasks: &[Task]) -> Vec<Arc<Task>> {
    tasks.iter().cloned().map(Arc::new).collect()
}
