//! Task assignments: each agent gets the full set of its node's tasks when its session starts,
//! then the changes as the store changes. With the tasks go the secrets and configs they use
//! (only those: a node never gets data no task of its own uses), and the word to forget one
//! once the node's last task using it has ended.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::manager_message::Msg as ManagerMsg;
use orch_api::pb::{Assignments, Task, TaskState};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::Dispatcher;
use crate::data::seal::DataKey as SealKey;
use crate::network::endpoints;
use crate::state::store::{Event, Object, Store, Tables};

/// A task belongs in its node's assignment set once scheduled (ASSIGNED or later), until the
/// task is deleted; the agent keeps the container of every task it holds.
pub fn is_assigned(task: &Task) -> bool {
    !task.node_id.is_empty()
        && task
            .status
            .as_ref()
            .is_some_and(|s| s.state() >= TaskState::Assigned)
}

pub fn send_full(dispatcher: &Dispatcher, view: &Tables, key: &SealKey, node_id: &str) {
    let tasks: Vec<Task> = view
        .tasks_of_node(node_id)
        .filter(|t| is_assigned(t))
        .map(|t| (**t).clone())
        .collect();
    let data = crate::data::needed_by_node(view, node_id)
        .into_iter()
        .filter_map(|(id, version)| crate::data::payload(view, key, &id, version))
        .collect();
    // The networks first: the agent plumbs a task's networks before the task starts.
    let mut sent = dispatcher.net_sent.lock();
    let net = endpoints::views(view, &[node_id.to_string()])
        .remove(node_id)
        .unwrap_or_default();
    dispatcher.send(node_id, ManagerMsg::Network(endpoints::full(&net)));
    sent.insert(node_id.to_string(), net);
    drop(sent);
    dispatcher.send(
        node_id,
        ManagerMsg::Assignments(Assignments {
            full: true,
            tasks,
            data,
            ..Default::default()
        }),
    );
}

/// Sends each connected node what changed in its view of the networks.
fn send_network_changes(dispatcher: &Dispatcher, view: &Tables) {
    let nodes = dispatcher.connected_nodes();
    let mut sent = dispatcher.net_sent.lock();
    for (node, new) in endpoints::views(view, &nodes) {
        let old = sent.get(&node).cloned().unwrap_or_default();
        if let Some(update) = endpoints::diff(&old, &new) {
            dispatcher.send(&node, ManagerMsg::Network(update));
            sent.insert(node, new);
        }
    }
}

/// Whether an event can change what a node knows of the networks.
fn touches_networks(event: &Event) -> bool {
    match event.object() {
        Object::Task(t) => !t.networks.is_empty(),
        Object::Service(_) | Object::Network(_) | Object::Node(_) => true,
        _ => false,
    }
}

#[derive(Default)]
struct NodeChanges {
    updated: BTreeMap<String, Task>,
    removed: BTreeSet<String>,
    /// Data that tasks of the node used and stopped needing: forgotten unless another task of
    /// the node still uses it.
    released: BTreeSet<(String, u32)>,
}

impl NodeChanges {
    /// The assignment message, with the data the updated tasks need and the data released.
    fn message(self, view: &Tables, key: &SealKey, node_id: &str) -> Assignments {
        let wanted: BTreeSet<(String, u32)> = self
            .updated
            .values()
            .filter(|t| crate::data::is_needed(t))
            .flat_map(crate::data::used_by_task)
            .collect();
        let data_removed = if self.released.is_empty() {
            Vec::new()
        } else {
            let still = crate::data::needed_by_node(view, node_id);
            self.released
                .into_iter()
                .filter(|k| !still.contains(k))
                .map(|(id, version)| orch_api::pb::DataKey { id, version })
                .collect()
        };
        Assignments {
            full: false,
            tasks: self.updated.into_values().collect(),
            removed: self.removed.into_iter().collect(),
            data: wanted
                .into_iter()
                .filter_map(|(id, version)| crate::data::payload(view, key, &id, version))
                .collect(),
            data_removed,
        }
    }

    fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty() && self.released.is_empty()
    }
}

/// Leader-only: turns task events into incremental assignment messages, batched per node.
pub async fn streamer(
    store: Arc<Store>,
    dispatcher: Arc<Dispatcher>,
    key: Arc<SealKey>,
    token: CancellationToken,
) {
    let (_, mut rx) = store.view_and_watch();
    loop {
        let mut changes: BTreeMap<String, NodeChanges> = BTreeMap::new();
        let mut resync = false;
        let mut networks_changed = false;
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
                        networks_changed |= touches_networks(event);
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
            let view = store.view();
            for node in dispatcher.connected_nodes() {
                send_full(&dispatcher, &view, &key, &node);
            }
            continue;
        }
        let view = store.view();
        // Network changes go before the tasks that need them.
        if networks_changed {
            send_network_changes(&dispatcher, &view);
        }
        for (node, c) in changes {
            if c.is_empty() {
                continue;
            }
            tracing::debug!(node = %node, updated = c.updated.len(), removed = c.removed.len(), "sending assignment changes");
            let message = c.message(&view, &key, &node);
            if !dispatcher.send(&node, ManagerMsg::Assignments(message))
                && dispatcher.is_connected(&node)
            {
                // The agent fell behind: end its session; it reconnects and gets a full set.
                dispatcher.close(&node);
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
    // A task of a node that used data and does not need it any more (ended, told to stop,
    // moved, deleted).
    let release = |old: &Task, new: Option<&Task>, changes: &mut BTreeMap<String, NodeChanges>| {
        let still = new.is_some_and(|n| n.node_id == old.node_id && crate::data::is_needed(n));
        if crate::data::is_needed(old) && !still {
            let used = crate::data::used_by_task(old);
            if !used.is_empty() {
                changes
                    .entry(old.node_id.clone())
                    .or_default()
                    .released
                    .extend(used);
            }
        }
    };
    match event {
        Event::Updated {
            old: Object::Task(old),
            new: Object::Task(new),
        } => release(old, Some(new), changes),
        Event::Deleted(Object::Task(t)) => release(t, None, changes),
        _ => {}
    }
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

#[cfg(test)]
mod tests {
    use orch_api::pb::store_action::Action;
    use orch_api::pb::ManagerMessage;
    use tokio::sync::mpsc;

    use super::*;
    use crate::handles::testing::Applier;
    use crate::handles::Proposer;
    use crate::testkit;

    async fn next(rx: &mut mpsc::Receiver<Result<ManagerMessage, tonic::Status>>) -> Assignments {
        let message = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("an assignment message")
            .expect("session open")
            .expect("not an error");
        match message.msg {
            Some(ManagerMsg::Assignments(a)) => a,
            other => panic!("not assignments: {other:?}"),
        }
    }

    fn ids(tasks: &[Task]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.as_str()).collect()
    }

    /// Each node hears of the changes to its own tasks, those of one transaction (and of
    /// transactions close together) in one message; unscheduled tasks are nobody's yet.
    #[tokio::test(start_paused = true)]
    async fn changes_reach_their_node_batched() {
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let dispatcher = Arc::new(Dispatcher::default());
        let (tx1, mut rx1) = mpsc::channel(16);
        let (tx2, mut rx2) = mpsc::channel(16);
        dispatcher.register("n1", tx1);
        dispatcher.register("n2", tx2);
        let token = CancellationToken::new();
        tokio::spawn(streamer(
            store.clone(),
            dispatcher.clone(),
            Arc::new(SealKey::generate().expect("key")),
            token.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(1)).await; // the streamer subscribes

        let s = testkit::replicated("s", 3);
        applier
            .propose(vec![
                Action::CreateService(s.clone()),
                Action::CreateTask(testkit::running("t1", &s, 1, "n1")),
                Action::CreateTask(testkit::running("t2", &s, 2, "n1")),
                Action::CreateTask(testkit::pending("t3", &s, 3)),
            ])
            .await
            .expect("create");
        let a = next(&mut rx1).await;
        assert!(!a.full);
        assert_eq!(ids(&a.tasks), ["t1", "t2"]);
        assert!(a.removed.is_empty());

        // t3 is scheduled on n2: n2 alone hears of it.
        let mut t3 = testkit::running("t3", &s, 3, "n2");
        t3.meta = store.view().task("t3").and_then(|t| t.meta);
        applier
            .propose(vec![Action::UpdateTask(t3)])
            .await
            .expect("schedule");
        assert_eq!(ids(&next(&mut rx2).await.tasks), ["t3"]);
        assert!(rx1.try_recv().is_err(), "n1 hears nothing of n2's task");

        // A deleted task is removed from its node's set.
        applier
            .propose(vec![Action::DeleteTask("t1".into())])
            .await
            .expect("delete");
        let a = next(&mut rx1).await;
        assert!(a.tasks.is_empty());
        assert_eq!(a.removed, ["t1"]);
        token.cancel();
    }
}
