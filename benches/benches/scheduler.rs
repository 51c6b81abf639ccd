//! The scheduler alone: placing 100,000 pending tasks (100 services × 1,000) on 1,000 nodes,
//! spread strategy plus a constraint and a memory reservation, as targets.md's throughput row.
//! Prints placements per second.

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    ContainerSpec, Node, NodeAvailability, NodeDescription, NodeRole, NodeSpec, NodeState,
    NodeStatus, Placement, ReplicatedService, ResourceLimits, ResourceRequirements, Resources,
    Service, ServiceSpec, StoreSnapshot, Task, TaskSpec, TaskState, TaskStatus,
};
use orch_manager::scheduler::plan::plan;
use orch_manager::state::store::{Store, Tables};

fn node(i: usize) -> Node {
    Node {
        id: format!("node{i:05}"),
        role: NodeRole::Worker as i32,
        spec: Some(NodeSpec {
            availability: NodeAvailability::Active as i32,
            labels: [(
                "tier".to_string(),
                if i.is_multiple_of(10) { "edge" } else { "core" }.to_string(),
            )]
            .into(),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: format!("host{i}"),
            resources: Some(Resources {
                nano_cpus: 64_000_000_000,
                memory_bytes: 256 << 30,
            }),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn spec() -> TaskSpec {
    TaskSpec {
        container: Some(ContainerSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        placement: Some(Placement {
            constraints: vec!["node.labels.tier==core".into()],
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            reservations: Some(ResourceLimits {
                nano_cpus: 0,
                memory_bytes: 64 << 20,
                pids: 0,
            }),
            limits: None,
        }),
        ..Default::default()
    }
}

fn scenario(nodes: usize, services: usize, per_service: usize) -> (Tables, Vec<Arc<Task>>) {
    let mut svc = Vec::new();
    let mut tasks = Vec::new();
    for s in 0..services {
        let id = format!("svc{s:04}");
        svc.push(Service {
            id: id.clone(),
            spec_version: 1,
            spec: Some(ServiceSpec {
                name: id.clone(),
                task: Some(spec()),
                mode: Some(Mode::Replicated(ReplicatedService {
                    replicas: per_service as u64,
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
        for slot in 1..=per_service {
            tasks.push(Task {
                id: format!("{id}-t{slot:06}"),
                service_id: id.clone(),
                service_name: id.clone(),
                slot: slot as u64,
                spec: Some(spec()),
                spec_version: 1,
                desired_state: TaskState::Running as i32,
                status: Some(TaskStatus {
                    state: TaskState::Pending as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    let store = Store::new();
    store.restore(
        1,
        StoreSnapshot {
            clusters: vec![],
            nodes: (0..nodes).map(node).collect(),
            services: svc,
            tasks,
            data_objects: vec![],
            networks: vec![],
        },
    );
    let view = store.view();
    let pending: Vec<Arc<Task>> = view.pending_tasks().cloned().collect();
    (view, pending)
}

fn bench(c: &mut Criterion) {
    let (view, pending) = scenario(1000, 100, 1000);
    let t = Instant::now();
    let p = plan(&view, &pending);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(p.assignments.len(), pending.len());
    println!(
        "scheduler: {} tasks on 1000 nodes (spread + constraint + reservation) in {:.3} s = {:.0} placements/s",
        pending.len(),
        secs,
        pending.len() as f64 / secs
    );
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(10);
    group.bench_function("plan 100k tasks on 1000 nodes", |b| {
        b.iter(|| plan(&view, &pending))
    });
    let (small_view, small) = scenario(100, 10, 500);
    group.bench_function("plan 5k tasks on 100 nodes", |b| {
        b.iter(|| plan(&small_view, &small))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
