//! Leader-only: marks nodes Down after missed heartbeats, and keeps agents' session info
//! (manager list, role, heartbeat period) current as the store changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_api::pb::store_action::Action;
use orch_api::pb::{NodeState, NodeStatus, NodeStatusChange};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use orch_api::heartbeat::heartbeat_deadline;

use super::{heartbeat_period, push_session_info};
use crate::manager::ManagerCtx;
use crate::state::store::{Event, Object};

/// Marks nodes Down whose agent has not heartbeated within the heartbeat deadline. Nodes get
/// the same grace from the moment this leader took over, so a leader change marks nobody Down.
pub async fn monitor(ctx: Arc<ManagerCtx>, token: CancellationToken) {
    let took_over = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let view = ctx.store.view();
        let deadline = heartbeat_deadline(heartbeat_period(&view));
        let mut down = Vec::new();
        for node in view.nodes() {
            let state = node.status.as_ref().map_or(0, |s| s.state);
            if state == NodeState::Down as i32 {
                continue;
            }
            let last = ctx
                .dispatcher
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
        match ctx
            .propose(down.into_iter().map(|(_, a)| a).collect())
            .await
        {
            Ok(_) => {
                for id in ids {
                    info!(node = %id, "node marked down: heartbeat failure");
                    ctx.dispatcher.close(&id);
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
