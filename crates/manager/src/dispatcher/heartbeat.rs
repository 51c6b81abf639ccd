//! Leader-only: marks nodes Down after missed heartbeats, and keeps agents' session info
//! (manager list, role, heartbeat period) current as the store changes.

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::store_action::Action;
use orch_api::pb::{NodeState, NodeStatus, NodeStatusChange};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use orch_api::heartbeat::heartbeat_deadline;

use tokio::time::Instant;

use super::{heartbeat_period, push_session_info, Dispatcher};
use crate::ctx::ManagerCtx;
use crate::handles::Proposer;
use crate::state::store::{Event, Object, Store};

/// Marks nodes Down whose agent has not heartbeated within the heartbeat deadline. Nodes get
/// the same grace from the moment this leader took over, so a leader change marks nobody Down.
pub async fn monitor<P: Proposer + ?Sized>(
    store: Arc<Store>,
    dispatcher: Arc<Dispatcher>,
    proposer: Arc<P>,
    token: CancellationToken,
) {
    let took_over = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let view = store.view();
        let deadline = heartbeat_deadline(heartbeat_period(&view));
        let mut down = Vec::new();
        for node in view.nodes() {
            if node.node_state() == NodeState::Down {
                continue;
            }
            let last = dispatcher
                .last_heartbeat(&node.id)
                .map_or(took_over, |t| t.max(took_over));
            if last.elapsed() > deadline {
                let addr = node
                    .status
                    .as_ref()
                    .map(|s| s.addr.clone())
                    .unwrap_or_default();
                down.push((
                    node.id.clone(),
                    Action::NodeStatus(NodeStatusChange {
                        node_id: node.id.clone(),
                        status: Some(NodeStatus {
                            state: NodeState::Down as i32,
                            message: "heartbeat failure".into(),
                            addr,
                            engine_error: String::new(),
                        }),
                        description: None,
                    }),
                ));
            }
        }
        if down.is_empty() {
            continue;
        }
        let ids: Vec<String> = down.iter().map(|(id, _)| id.clone()).collect();
        match proposer
            .propose(down.into_iter().map(|(_, a)| a).collect())
            .await
        {
            Ok(_) => {
                for id in ids {
                    info!(node = %id, "node marked down: heartbeat failure");
                    dispatcher.close(&id);
                }
            }
            Err(e) => warn!(error = %e, "could not mark nodes down"),
        }
    }
}

/// Sends agents new session info when their role, the manager set, or the heartbeat period
/// changes; closes the sessions of removed nodes.
pub async fn notifier(ctx: Arc<ManagerCtx>, token: CancellationToken) {
    let (_, mut rx) = ctx.store.view_and_watch();
    let mut leader = ctx.raft.status().leader;
    let mut status = ctx.raft.watch_status();
    loop {
        let mut everyone = false;
        let mut nodes = Vec::new();
        tokio::select! {
            _ = token.cancelled() => return,
            changed = status.changed() => {
                if changed.is_err() { return; }
                let now = status.borrow_and_update().leader;
                everyone = now != leader;
                leader = now;
            }
            change = rx.recv() => match change {
                Ok(change) => {
                    for event in &change.events {
                        match event {
                            Event::Updated { old: Object::Node(old), new: Object::Node(new) } => {
                                if old.role != new.role {
                                    nodes.push(new.id.clone());
                                }
                                if old.manager_status != new.manager_status {
                                    everyone = true;
                                }
                            }
                            Event::Deleted(Object::Node(node)) => ctx.dispatcher.close(&node.id),
                            Event::Updated { old: Object::Cluster(old), new: Object::Cluster(new) } => {
                                let period = |c: &orch_api::pb::Cluster| c.spec.as_ref().map(|s| s.heartbeat_period);
                                if period(old) != period(new) {
                                    everyone = true;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => everyone = true,
                Err(RecvError::Closed) => return,
            },
        }
        let view = ctx.store.view();
        if everyone {
            nodes = ctx.dispatcher.connected_nodes();
        }
        for node in nodes {
            push_session_info(&ctx, &view, &node);
        }
    }
}

#[cfg(test)]
mod tests {
    use orch_api::pb::{Cluster, ClusterSpec, NodeState};

    use super::*;
    use crate::handles::testing::Applier;
    use crate::testkit;

    const PERIOD: Duration = Duration::from_secs(1);

    /// A store with a cluster (heartbeat `PERIOD`) and Ready nodes `ids`, and the monitor
    /// running over it with a dispatcher and a proposer that applies at once.
    async fn monitored(ids: &[&str]) -> (Arc<Applier>, Arc<Dispatcher>, CancellationToken) {
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let mut actions = vec![Action::CreateCluster(Cluster {
            id: "c".into(),
            spec: Some(ClusterSpec {
                heartbeat_period: PERIOD.as_nanos() as i64,
                ..Default::default()
            }),
            ..Default::default()
        })];
        actions.extend(ids.iter().map(|id| Action::CreateNode(testkit::node(id))));
        applier.propose(actions).await.expect("set up the store");
        let dispatcher = Arc::new(Dispatcher::default());
        let token = CancellationToken::new();
        tokio::spawn(monitor(
            store,
            dispatcher.clone(),
            applier.clone(),
            token.clone(),
        ));
        (applier, dispatcher, token)
    }

    fn state(applier: &Applier, id: &str) -> i32 {
        applier
            .store
            .view()
            .node(id)
            .and_then(|n| n.status.as_ref().map(|s| s.state))
            .unwrap_or(-1)
    }

    /// Lets the monitor's 100 ms ticks run up to `d` from now.
    async fn pass(d: Duration) {
        tokio::time::sleep(d).await;
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_is_down_at_the_deadline_and_not_before() {
        let (applier, dispatcher, token) = monitored(&["n1", "n2"]).await;
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let s1 = dispatcher.register("n1", tx.clone());
        let s2 = dispatcher.register("n2", tx);
        // n2 heartbeats every period; n1 falls silent at once.
        for _ in 0..2 {
            pass(PERIOD).await;
            assert!(dispatcher.heartbeat("n2", &s2));
        }
        pass(Duration::from_millis(900)).await; // 2.9 s of silence
        assert_eq!(state(&applier, "n1"), NodeState::Ready as i32, "not before");
        pass(Duration::from_millis(250)).await; // 3.15 s
        assert_eq!(
            state(&applier, "n1"),
            NodeState::Down as i32,
            "at the deadline"
        );
        assert_eq!(state(&applier, "n2"), NodeState::Ready as i32);
        assert!(!dispatcher.is_connected("n1"), "its session is closed");
        assert!(!dispatcher.heartbeat("n1", &s1));
        // Marked once: a node already Down is not proposed Down again.
        pass(PERIOD * 5).await;
        let downs_of_n1 = applier
            .proposed()
            .iter()
            .flatten()
            .filter(|a| matches!(a, Action::NodeStatus(c) if c.node_id == "n1"))
            .count();
        assert_eq!(downs_of_n1, 1);
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_gives_every_node_the_whole_grace() {
        // No node has a session with this (new) leader yet: none is Down before the deadline
        // counted from the takeover, and one that registers in time is never Down.
        let (applier, dispatcher, token) = monitored(&["late", "never"]).await;
        pass(Duration::from_millis(2500)).await;
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let s = dispatcher.register("late", tx);
        pass(Duration::from_millis(400)).await; // 2.9 s after the takeover
        assert_eq!(state(&applier, "never"), NodeState::Ready as i32);
        pass(Duration::from_millis(250)).await;
        assert_eq!(state(&applier, "never"), NodeState::Down as i32);
        assert_eq!(state(&applier, "late"), NodeState::Ready as i32);
        for _ in 0..5 {
            assert!(dispatcher.heartbeat("late", &s));
            pass(PERIOD).await;
        }
        assert_eq!(state(&applier, "late"), NodeState::Ready as i32);
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_session_keeps_the_rest_of_its_grace() {
        let (applier, dispatcher, token) = monitored(&["n1"]).await;
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let s = dispatcher.register("n1", tx);
        pass(Duration::from_millis(1500)).await;
        assert!(dispatcher.heartbeat("n1", &s));
        dispatcher.unregister("n1", &s); // the agent restarts
        pass(Duration::from_millis(2900)).await;
        assert_eq!(state(&applier, "n1"), NodeState::Ready as i32);
        pass(Duration::from_millis(250)).await;
        assert_eq!(state(&applier, "n1"), NodeState::Down as i32);
        token.cancel();
    }
}
