//! Service logs: a subscription goes down the sessions of the nodes running the tasks, the
//! agents publish the lines back, and the broker hands them to the client's stream. Without
//! --follow the stream ends once every node has sent everything; with it, when the client
//! goes away (the nodes are told to stop).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use orch_api::pb::manager_message::Msg as ManagerMsg;
use orch_api::pb::{LogMessage, LogSubscription, ServiceLogsRequest, TaskState};
use tokio::sync::mpsc;
use tonic::Status;

use super::sessions::{Dispatcher, Subscription};
use crate::error::{ManagerError, Result};
use crate::state::store::Tables;

/// The client's end: dropping it (client gone) tells the nodes to stop.
pub struct LogStream {
    rx: mpsc::Receiver<Result<LogMessage, Status>>,
    id: String,
    dispatcher: Arc<Dispatcher>,
}

impl Stream for LogStream {
    type Item = Result<LogMessage, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if let Some(sub) = self.dispatcher.logs.remove(&self.id) {
            for node in sub.nodes {
                let close = LogSubscription {
                    id: self.id.clone(),
                    close: true,
                    ..Default::default()
                };
                self.dispatcher.send(&node, ManagerMsg::Logs(close));
            }
        }
    }
}

/// Starts a subscription for the tasks `req` names (in `view`, a linearizable read) and
/// returns the client's stream.
pub fn subscribe(
    dispatcher: Arc<Dispatcher>,
    view: &Tables,
    req: ServiceLogsRequest,
) -> Result<LogStream> {
    let tasks: Vec<_> = if !req.task.is_empty() {
        let found: Vec<_> = view
            .tasks()
            .filter(|t| t.id.starts_with(&req.task))
            .cloned()
            .collect();
        match found.len() {
            1 => found,
            0 => {
                return Err(ManagerError::NotFound(format!(
                    "task {} not found",
                    req.task
                )))
            }
            n => {
                return Err(ManagerError::InvalidArgument(format!(
                    "task {} is ambiguous ({n} matches found)",
                    req.task
                )))
            }
        }
    } else {
        let service = view.find_service(&req.service)?;
        view.tasks_of_service(&service.id).cloned().collect()
    };
    // Tasks that got a container on a node whose agent is connected.
    let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
    for t in &tasks {
        if !t.node_id.is_empty()
            && t.observed_state() >= TaskState::Ready
            && dispatcher.is_connected(&t.node_id)
        {
            by_node
                .entry(t.node_id.clone())
                .or_default()
                .push(t.id.clone());
        }
    }
    let id = orch_api::ids::new_id();
    let (tx, rx) = mpsc::channel(4096);
    let nodes: HashSet<String> = by_node.keys().cloned().collect();
    if !nodes.is_empty() {
        dispatcher.logs.subs.lock().insert(
            id.clone(),
            Subscription {
                tx,
                pending: nodes.clone(),
                nodes: nodes.clone(),
            },
        );
    }
    for (node, task_ids) in by_node {
        let sub = LogSubscription {
            id: id.clone(),
            task_ids,
            follow: req.follow,
            tail: req.tail,
            since: req.since,
            timestamps: req.timestamps,
            close: false,
        };
        dispatcher.send(&node, ManagerMsg::Logs(sub));
    }
    Ok(LogStream { rx, id, dispatcher })
}
