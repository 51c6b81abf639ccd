//! The scheduler (leader only): watches for pending tasks and node changes, asks `plan` where
//! tasks go, and commits the result in batched transactions: PENDING → ASSIGNED with the node,
//! or the explanation of why a task fits nowhere (written only when it changes).

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::store_action::Action;
use orch_api::pb::{TaskState, TaskStatus};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::handles::{Clock, Proposer, MAX_ACTIONS};
use crate::network::alloc::Pools;
use crate::state::store::Store;

pub async fn run<P: Proposer + ?Sized, C: Clock>(
    store: Arc<Store>,
    proposer: Arc<P>,
    clock: C,
    token: CancellationToken,
) {
    let (_, mut rx) = store.view_and_watch();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        give_nodes_ingress(&store, proposer.as_ref()).await;
        schedule_once(&store, proposer.as_ref(), clock.now_nanos()).await;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
            change = rx.recv() => {
                if let Err(RecvError::Closed) = change {
                    return;
                }
                // Coalesce a burst of changes into one round.
                tokio::time::sleep(Duration::from_millis(2)).await;
                while let Ok(_) | Err(TryRecvError::Lagged(_)) = rx.try_recv() {}
            }
        }
    }
}

/// Once a service publishes through the routing mesh, every node gets an endpoint on the
/// ingress network (its address is where the mesh's connections to other nodes' tasks come
/// from). A race with another allocation is retried next round.
async fn give_nodes_ingress<P: Proposer + ?Sized>(store: &Store, proposer: &P) {
    let view = store.view();
    let mesh = view.services().filter_map(|s| s.spec.as_ref()).any(|sp| {
        let networks = sp.task.as_ref().is_some_and(|t| !t.networks.is_empty());
        orch_api::network::on_ingress(networks, sp.endpoint.as_ref())
    });
    let Some(ingress) = view
        .networks()
        .find(|n| n.spec.as_ref().is_some_and(|s| s.ingress))
        .map(|n| n.id.clone())
    else {
        return;
    };
    let missing =
        |n: &orch_api::pb::Node| n.ingress.as_ref().is_none_or(|a| a.network_id != ingress);
    // Most rounds find every node with its endpoint: no pass over the tasks then.
    if !mesh || !view.nodes().any(|n| missing(n)) {
        return;
    }
    let mut pools = Pools::from_view(&view);
    let mut actions = Vec::new();
    for node in view.nodes().filter(|n| missing(n)) {
        match pools.allocate(&ingress) {
            Ok(ip) => {
                let mut n = (**node).clone();
                n.ingress = Some(orch_api::pb::NetworkAttachment {
                    network_id: ingress.clone(),
                    addr: ip.to_string(),
                    aliases: Vec::new(),
                });
                actions.push(Action::UpdateNode(n));
            }
            Err(e) => {
                warn!(error = %e, node = %node.id, "no ingress address for the node");
                break;
            }
        }
    }
    for chunk in actions.chunks(MAX_ACTIONS) {
        if let Err(e) = proposer.propose(chunk.to_vec()).await {
            debug!(error = %e, "ingress endpoints not given; retrying next round");
            return;
        }
    }
}

async fn schedule_once<P: Proposer + ?Sized>(store: &Store, proposer: &P, now: i64) {
    let view = store.view();
    let pending: Vec<_> = view
        .pending_tasks()
        .filter(|t| t.desired_state() <= TaskState::Running)
        .cloned()
        .collect();
    if pending.is_empty() {
        return;
    }
    let mut plan = plan::plan(&view, &pending);
    let mut actions = Vec::with_capacity(plan.assignments.len());
    // Addresses are taken in the same transaction as the placement: a new leader derives from
    // the store exactly what was handed out.
    let mut pools: Option<Pools> = None;
    for (task_id, node_id) in &plan.assignments {
        let Some(task) = view.task(task_id) else {
            continue;
        };
        let mut t = (**task).clone();
        if crate::network::needs_addresses(&t) {
            let pools = pools.get_or_insert_with(|| Pools::from_view(&view));
            match crate::network::attach_task(pools, &t) {
                Ok(attachments) => t.networks = attachments,
                Err(e) => {
                    plan.unschedulable.push((task_id.clone(), e.to_string()));
                    continue;
                }
            }
        }
        t.node_id = node_id.clone();
        t.status = Some(TaskStatus {
            timestamp: now,
            state: TaskState::Assigned as i32,
            message: "scheduler assigned task to node".into(),
            ..Default::default()
        });
        actions.push(Action::UpdateTask(t));
    }
    for (task_id, reason) in &plan.unschedulable {
        let Some(task) = view.task(task_id) else {
            continue;
        };
        if task.status.as_ref().is_some_and(|s| &s.err == reason) {
            continue;
        }
        let mut t = (**task).clone();
        let status = t.status.get_or_insert_with(Default::default);
        status.err = reason.clone();
        status.message = "pending task scheduling".into();
        actions.push(Action::UpdateTask(t));
    }
    let total = actions.len();
    let mut chunks = Vec::new();
    let mut rest = actions;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(MAX_ACTIONS));
        chunks.push(rest);
        rest = tail;
    }
    for chunk in chunks {
        // A conflict means the task changed meanwhile: the next round sees it as it is now.
        if let Err(e) = proposer.propose(chunk).await {
            if crate::handles::conflict::is_conflict(&e)
                || crate::handles::conflict::is_address_race(&e)
            {
                debug!("scheduler batch conflicted; retrying next round");
            } else {
                warn!(error = %e, "scheduler could not commit");
                return;
            }
        }
    }
    debug!(
        assigned = plan.assignments.len(),
        unschedulable = plan.unschedulable.len(),
        actions = total,
        "scheduled"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use orch_api::pb::{Network, NetworkAttachmentConfig, NetworkSpec, Task};

    use super::*;
    use crate::handles::testing::Applier;
    use crate::testkit;

    fn tasks(store: &Store) -> Vec<Task> {
        store.view().tasks().map(|t| (**t).clone()).collect()
    }

    /// Placement takes each task's addresses in the same transaction; a full subnet leaves the
    /// task pending with the reason, and it is placed once an address frees.
    #[tokio::test]
    async fn a_full_subnet_is_the_tasks_error_until_an_address_frees() {
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let mut web = testkit::replicated("web", 6);
        if let Some(t) = web.spec.as_mut().and_then(|s| s.task.as_mut()) {
            t.networks = vec![NetworkAttachmentConfig {
                target: "tiny".into(),
                aliases: vec![],
            }];
        }
        let mut actions = vec![
            Action::CreateNode(testkit::node("n1")),
            // A /29: 6 hosts, the gateway leaves 5.
            Action::CreateNetwork(Network {
                id: "tiny".into(),
                spec: Some(NetworkSpec {
                    name: "tiny".into(),
                    ..Default::default()
                }),
                vni: 4097,
                subnet: "10.9.0.0/29".into(),
                gateway: "10.9.0.1".into(),
                ..Default::default()
            }),
            Action::CreateService(web.clone()),
        ];
        for slot in 1..=6 {
            actions.push(Action::CreateTask(testkit::pending(
                &format!("t{slot}"),
                &web,
                slot,
            )));
        }
        applier.propose(actions).await.expect("setup");

        schedule_once(&store, applier.as_ref(), 1).await;
        let all = tasks(&store);
        let placed: Vec<&Task> = all.iter().filter(|t| !t.node_id.is_empty()).collect();
        let addrs: BTreeSet<&str> = placed
            .iter()
            .flat_map(|t| t.networks.iter().map(|a| a.addr.as_str()))
            .collect();
        assert_eq!(placed.len(), 5);
        assert_eq!(
            addrs,
            BTreeSet::from(["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"])
        );
        let waiting: Vec<&Task> = all.iter().filter(|t| t.node_id.is_empty()).collect();
        assert_eq!(waiting.len(), 1);
        assert_eq!(
            waiting[0].status.as_ref().map(|s| s.err.as_str()),
            Some("no free address on network tiny")
        );

        // One task ends: its address goes to the waiting one.
        let mut ended = placed[0].clone();
        let freed = ended.networks[0].addr.clone();
        ended.status = Some(TaskStatus {
            state: TaskState::Failed as i32,
            ..Default::default()
        });
        applier
            .propose(vec![Action::UpdateTask(ended)])
            .await
            .expect("ended");
        schedule_once(&store, applier.as_ref(), 2).await;
        let now = store
            .view()
            .task(&waiting[0].id)
            .map(|t| (**t).clone())
            .expect("the waiting task");
        assert_eq!(now.node_id, "n1");
        assert_eq!(now.networks[0].addr, freed);
    }

    /// Nodes get no ingress endpoint until a service publishes through the mesh; then every
    /// node gets one, and that service's tasks get an address on the ingress network as they
    /// are placed, none of them shared.
    #[tokio::test]
    async fn the_mesh_gives_nodes_and_its_tasks_ingress_addresses() {
        use orch_api::pb::{EndpointSpec, PortConfig};
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let plain = testkit::replicated("plain", 1);
        applier
            .propose(vec![
                Action::CreateNode(testkit::node("n1")),
                Action::CreateNode(testkit::node("n2")),
                Action::CreateNetwork(crate::bootstrap::ingress_network()),
                Action::CreateService(plain.clone()),
                Action::CreateTask(testkit::pending("p1", &plain, 1)),
            ])
            .await
            .expect("setup");
        give_nodes_ingress(&store, applier.as_ref()).await;
        schedule_once(&store, applier.as_ref(), 1).await;
        assert!(store.view().nodes().all(|n| n.ingress.is_none()));
        assert!(tasks(&store).iter().all(|t| t.networks.is_empty()));

        let mut web = testkit::replicated("web", 2);
        let endpoint = EndpointSpec {
            mode: "vip".into(),
            ports: vec![PortConfig {
                protocol: "tcp".into(),
                target_port: 80,
                published_port: 8080,
                ..Default::default()
            }],
        };
        if let Some(spec) = web.spec.as_mut() {
            spec.endpoint = Some(endpoint.clone());
        }
        web.ports = endpoint.ports.clone();
        let mut pending = Vec::new();
        for slot in 1..=2 {
            let mut t = testkit::pending(&format!("w{slot}"), &web, slot);
            t.endpoint = Some(endpoint.clone());
            pending.push(Action::CreateTask(t));
        }
        let mut actions = vec![Action::CreateService(web)];
        actions.extend(pending);
        applier.propose(actions).await.expect("web");
        give_nodes_ingress(&store, applier.as_ref()).await;
        schedule_once(&store, applier.as_ref(), 2).await;

        let view = store.view();
        let ingress_id = view
            .networks()
            .map(|n| n.id.clone())
            .next()
            .expect("the ingress network");
        let mut held: Vec<String> = view
            .nodes()
            .map(|n| {
                let a = n.ingress.clone().expect("every node has an endpoint");
                assert_eq!(a.network_id, ingress_id);
                a.addr
            })
            .collect();
        for id in ["w1", "w2"] {
            let t = view.task(id).expect("task");
            assert_eq!(t.networks.len(), 1, "{id}: {:?}", t.networks);
            assert_eq!(t.networks[0].network_id, ingress_id);
            held.push(t.networks[0].addr.clone());
        }
        let unique: BTreeSet<&String> = held.iter().collect();
        assert_eq!(unique.len(), 4, "{held:?}");
        assert!(view.task("p1").is_some_and(|t| t.networks.is_empty()));
    }
}
