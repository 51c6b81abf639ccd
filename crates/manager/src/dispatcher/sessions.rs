//! The sessions open on this (leader) manager: one per node, with its outbound stream and last
//! heartbeat (kept a while after the session ends), the log subscriptions, and where task
//! status reports go. A registry only: the gRPC service (`super`) and the leader components
//! use it; it imports neither.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use orch_api::pb::manager_message::Msg as ManagerMsg;
use orch_api::pb::{LogBatch, LogMessage, ManagerMessage, TaskStatusUpdate};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;
use tracing::debug;

pub(crate) type Outbound = mpsc::Sender<Result<ManagerMessage, Status>>;

struct Session {
    id: String,
    tx: Outbound,
    last_heartbeat: Instant,
}

/// The sessions open on this (leader) manager.
#[derive(Default)]
pub struct Dispatcher {
    sessions: Mutex<HashMap<String, Session>>,
    /// The last heartbeat of nodes whose session ended (the agent restarts, or looks for
    /// another manager): they get the rest of their grace before being marked Down.
    ended: Mutex<HashMap<String, Instant>>,
    pub logs: LogBroker,
    /// What each node was last sent of the networks (the base of the next difference).
    pub net_sent: Mutex<HashMap<String, crate::network::endpoints::NodeNetView>>,
    /// The leader's status writer, once it runs.
    status_tx: tokio::sync::watch::Sender<Option<mpsc::Sender<Vec<TaskStatusUpdate>>>>,
}

/// How long a session waits for this leader's status writer to start before it ends (the agent
/// then opens another and sends every status again).
const STATUS_WRITER_WAIT: Duration = Duration::from_secs(5);

impl Dispatcher {
    pub(crate) fn register(&self, node_id: &str, tx: Outbound) -> String {
        let id = orch_api::ids::new_id();
        let old = self.sessions.lock().insert(
            node_id.to_string(),
            Session {
                id: id.clone(),
                tx,
                last_heartbeat: Instant::now(),
            },
        );
        if old.is_some() {
            debug!(node = node_id, "replaced an older session");
        }
        self.ended.lock().remove(node_id);
        id
    }

    /// Records a heartbeat; false if `session_id` is no longer the node's session.
    pub(crate) fn heartbeat(&self, node_id: &str, session_id: &str) -> bool {
        match self.sessions.lock().get_mut(node_id) {
            Some(s) if s.id == session_id => {
                s.last_heartbeat = Instant::now();
                true
            }
            _ => false,
        }
    }

    pub(crate) fn unregister(&self, node_id: &str, session_id: &str) {
        let mut sessions = self.sessions.lock();
        if sessions.get(node_id).is_some_and(|s| s.id == session_id) {
            if let Some(s) = sessions.remove(node_id) {
                self.ended
                    .lock()
                    .insert(node_id.to_string(), s.last_heartbeat);
            }
        }
    }

    /// Ends a node's session (its stream closes; the agent reconnects).
    pub fn close(&self, node_id: &str) {
        self.sessions.lock().remove(node_id);
        self.ended.lock().remove(node_id);
    }

    pub fn close_all(&self) {
        self.sessions.lock().clear();
        self.ended.lock().clear();
    }

    /// The node's last heartbeat, in its current session or the one that ended last.
    pub fn last_heartbeat(&self, node_id: &str) -> Option<Instant> {
        let live = self.sessions.lock().get(node_id).map(|s| s.last_heartbeat);
        live.or_else(|| self.ended.lock().get(node_id).copied())
    }

    pub fn is_connected(&self, node_id: &str) -> bool {
        self.sessions.lock().contains_key(node_id)
    }

    pub fn connected_nodes(&self) -> Vec<String> {
        self.sessions.lock().keys().cloned().collect()
    }

    /// Queues a message for a node's agent; false if it has no session or is not keeping up.
    pub fn send(&self, node_id: &str, message: ManagerMsg) -> bool {
        let sessions = self.sessions.lock();
        match sessions.get(node_id) {
            Some(s) => {
                s.tx.try_send(Ok(ManagerMessage { msg: Some(message) }))
                    .is_ok()
            }
            None => false,
        }
    }

    pub(crate) fn session_id(&self, node_id: &str) -> Option<String> {
        self.sessions.lock().get(node_id).map(|s| s.id.clone())
    }

    /// Where agents' task status reports go (set by the leader's status writer).
    pub fn set_status_sink(&self, tx: Option<mpsc::Sender<Vec<TaskStatusUpdate>>>) {
        self.status_tx.send_replace(tx);
    }

    /// Hands an agent's reports to the status writer. A session opens as soon as raft elects
    /// this manager, before the leader components (the writer among them) start after the
    /// read barrier: the reports wait for the writer. False if none took them: the session
    /// must end. An agent sends each report once per session (every status again only on a
    /// new one), so a report dropped while its session goes on is lost for good — the task
    /// stays in its last recorded state, and a rolling update waiting on it waits for ever.
    pub async fn forward_statuses(&self, updates: Vec<TaskStatusUpdate>) -> bool {
        let mut writer = self.status_tx.subscribe();
        let sink = match tokio::time::timeout(STATUS_WRITER_WAIT, writer.wait_for(Option::is_some))
            .await
        {
            Ok(Ok(sink)) => sink.clone(),
            _ => None,
        };
        match sink {
            Some(sink) => sink.send(updates).await.is_ok(),
            None => false,
        }
    }
}

/// Service log subscriptions in flight (`super::logs` starts and ends them): lines the agents
/// publish go to the subscriber's stream.
pub(crate) type Tx = mpsc::Sender<Result<LogMessage, Status>>;

pub(crate) struct Subscription {
    pub(crate) tx: Tx,
    /// Nodes that have not sent everything yet.
    pub(crate) pending: HashSet<String>,
    pub(crate) nodes: HashSet<String>,
}

#[derive(Default)]
pub struct LogBroker {
    pub(crate) subs: Mutex<HashMap<String, Subscription>>,
}

impl LogBroker {
    /// Delivers a batch from `node`; false if the subscription is gone (the agent stops).
    pub async fn deliver(&self, node: &str, batch: LogBatch) -> bool {
        let tx = {
            let subs = self.subs.lock();
            match subs.get(&batch.subscription_id) {
                Some(s) if s.nodes.contains(node) => s.tx.clone(),
                _ => return false,
            }
        };
        for mut m in batch.messages {
            m.node_id = node.to_string();
            if tx.send(Ok(m)).await.is_err() {
                return false;
            }
        }
        if batch.done {
            let mut subs = self.subs.lock();
            let finished = match subs.get_mut(&batch.subscription_id) {
                Some(s) => {
                    s.pending.remove(node);
                    s.pending.is_empty()
                }
                None => false,
            };
            if finished {
                subs.remove(&batch.subscription_id);
            }
        }
        true
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Subscription> {
        self.subs.lock().remove(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn report(task_id: &str) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: task_id.into(),
            status: None,
        }
    }

    /// A rolling update stalled for good after a leader kill: agents open sessions with the
    /// new leader as soon as raft elects it and send every status again, but its status
    /// writer starts only after the read barrier; reports arriving before were dropped, and
    /// an agent never sends a report twice in one session. The task stayed in its last
    /// recorded state (the old task "running" after it stopped), and the update waited on it.
    #[tokio::test]
    async fn regression_reports_before_the_status_writer_started_were_dropped() {
        let d = Arc::new(Dispatcher::default());
        let early = tokio::spawn({
            let d = d.clone();
            async move { d.forward_statuses(vec![report("t1")]).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The leader components start: the writer takes over.
        let (tx, mut rx) = mpsc::channel(8);
        d.set_status_sink(Some(tx));
        let got = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .ok()
            .flatten()
            .map(|b| b.into_iter().map(|u| u.task_id).collect::<Vec<_>>());
        assert_eq!(
            got,
            Some(vec!["t1".to_string()]),
            "the early report reached the writer"
        );
        assert!(early.await.expect("joined"), "the session goes on");

        // A writer that stopped (this manager no longer leads): the session ends instead, so
        // the agent sends every status again to the next leader.
        drop(rx);
        assert!(!d.forward_statuses(vec![report("t2")]).await);
    }

    /// Found by the chaos suite (agent restart during a rolling update): when a session ended,
    /// the node's last heartbeat went with it, so the heartbeat monitor saw a node with no
    /// heartbeat at all and marked it Down at once; an agent restarting in 2s had its tasks
    /// rescheduled. The node keeps the rest of its grace.
    #[test]
    fn regression_session_end_marked_the_node_down_at_once() {
        let d = Dispatcher::default();
        let (tx, _rx) = mpsc::channel(1);
        let session = d.register("n1", tx);
        std::thread::sleep(Duration::from_millis(20));
        assert!(d.heartbeat("n1", &session));
        let beat = d
            .last_heartbeat("n1")
            .expect("a live session has a heartbeat");
        d.unregister("n1", &session);
        assert!(!d.is_connected("n1"));
        assert_eq!(
            d.last_heartbeat("n1"),
            Some(beat),
            "the grace runs from the last beat"
        );

        // A new session takes over; an explicit close (node Down or removed) forgets it.
        let (tx, _rx) = mpsc::channel(1);
        let again = d.register("n1", tx);
        assert!(d.last_heartbeat("n1").is_some_and(|t| t > beat));
        d.unregister("n1", "an older session");
        assert!(
            d.is_connected("n1"),
            "an old session's end leaves the new one alone"
        );
        d.unregister("n1", &again);
        d.close("n1");
        assert_eq!(d.last_heartbeat("n1"), None);
    }
}
