//! Task assignments: each agent gets the full set of its node's tasks when its session starts,
//! then the changes as the store changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::manager_message::Msg as ManagerMsg;
use orch_api::pb::{Assignments, Task, TaskState};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::manager::ManagerCtx;
use crate::state::store::{Event, Object, Tables};

/// A task belongs in its node's assignment set once scheduled (ASSIGNED or later), until the
/// task is deleted; the agent keeps the container of every task it holds.
pub fn is_assigned(task: &Task) -> bool {
    !task.node_id.is_empty()
        && task
            .status
            .as_ref()
            .is_some_and(|s| s.state >= TaskState::Assigned as i32)
}

pub fn send_full(ctx: &ManagerCtx, view: &Tables, node_id: &str) {
    let tasks: Vec<Task> = view
        .tasks_of_node(node_id)
        .filter(|t| is_assigned(t))
        .map(|t| (**t).clone())
        .collect();
    ctx.dispatcher.send(
        node_id,
        ManagerMsg::Assignments(Assignments {
            full: true,
            tasks,
            removed: Vec::new(),
        }),
    );
}

#[derive(Default)]
struct NodeChanges {
    updated: BTreeMap<String, Task>,
    removed: BTreeSet<String>,
}

/// Leader-only: turns task events into incremental assignment messages, batched per node.
pub async fn streamer(ctx: Arc<ManagerCtx>, token: CancellationToken) {
    let (_, mut rx) = ctx.store.view_and_watch();
    loop {
        let mut changes: BTreeMap<String, NodeChanges> = BTreeMap::new();
        let mut resync = false;
        let first = tokio::select! {
            _ = token.cancelled() => return,
            change = rx.recv() => change,
        };
        let mut next = Some(first);
        let batch_until = tokio::time::Instant::now() + Duration::from_millis(5);
        while let Some(change) = next.take() {
            match change {
                Ok(change) => {
                    if change.events.is_empty() {
                        resync = true;
                    }
                    for event in &change.events {
                        collect(event, &mut changes);
                    }
                }
                Err(RecvError::Lagged(_)) => resync = true,
                Err(RecvError::Closed) => return,
            }
            if let Ok(change) = rx.try_recv() {
                next = Some(Ok(change));
            } else if tokio::time::Instant::now() < batch_until {
                next = tokio::time::timeout_at(batch_until, rx.recv()).await.ok();
            }
        }
        if resync {
            let view = ctx.store.view();
            for node in ctx.dispatcher.connected_nodes() {
                send_full(&ctx, &view, &node);
            }
            continue;
        }
        for (node, c) in changes {
            tracing::debug!(node = %node, updated = c.updated.len(), removed = c.removed.len(), "sending assignment changes");
            let message = Assignments {
                full: false,
                tasks: c.updated.into_values().collect(),
                removed: c.removed.into_iter().collect(),
            };
            if !ctx.dispatcher.send(&node, ManagerMsg::Assignments(message))
                && ctx.dispatcher.is_connected(&node)
            {
                // The agent fell behind: end its session; it reconnects and gets a full set.
                ctx.dispatcher.close(&node);
            }
        }
    }
}

fn collect(event: &Event, changes: &mut BTreeMap<String, NodeChanges>) {
    let remove = |task: &Task, changes: &mut BTreeMap<String, NodeChanges>| {
        let c = changes.entry(task.node_id.clone()).or_default();
        c.updated.remove(&task.id);
        c.removed.insert(task.id.clone());
    };
    match event {
        Event::Created(Object::Task(t)) if is_assigned(t) => {
            changes
                .entry(t.node_id.clone())
                .or_default()
                .updated
                .insert(t.id.clone(), (**t).clone());
        }
        Event::Updated {
            old: Object::Task(old),
            new: Object::Task(new),
        } => {
            if is_assigned(old) && old.node_id != new.node_id {
                remove(old, changes);
            }
            // Status-only changes come from the agent itself: no need to echo them back.
            let spec_or_desired_changed = old.desired_state != new.desired_state
                || old.spec != new.spec
                || old.node_id != new.node_id;
            if is_assigned(new) && (spec_or_desired_changed || !is_assigned(old)) {
                let c = changes.entry(new.node_id.clone()).or_default();
                c.removed.remove(&new.id);
                c.updated.insert(new.id.clone(), (**new).clone());
            }
        }
        Event::Deleted(Object::Task(t)) if is_assigned(t) => remove(t, changes),
        _ => {}
    }
}
