//! The dispatcher (leader only): one bidirectional session per node. The agent registers its
//! description and then heartbeats at the cluster's period; the leader marks a node Down after
//! three missed periods. The session also carries the manager list and the node's role to the
//! agent, so it can follow leader changes and promotions, and the node's task assignments.

pub mod assignments;
pub mod heartbeat;
pub mod logs;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use orch_api::pb::agent_message::Msg as AgentMsg;
use orch_api::pb::dispatcher_server::Dispatcher as DispatcherRpc;
use orch_api::pb::manager_message::Msg as ManagerMsg;
use orch_api::pb::store_action::Action;
use orch_api::pb::{
    AgentMessage, Empty, HeartbeatAck, LogBatch, ManagerMessage, NodeState, NodeStatus,
    NodeStatusChange, Peer, SessionInfo, TaskStatusUpdate,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, Instrument};

use crate::ca::auth::require_node;
use crate::manager::ManagerCtx;
use crate::state::store::Tables;

pub use orch_api::heartbeat::{DEFAULT_PERIOD as DEFAULT_HEARTBEAT, LEADER_ADDR};

type Outbound = mpsc::Sender<Result<ManagerMessage, Status>>;

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
    pub logs: logs::LogBroker,
    /// The leader's status writer, once it runs.
    status_tx: tokio::sync::watch::Sender<Option<mpsc::Sender<Vec<TaskStatusUpdate>>>>,
}

/// How long a session waits for this leader's status writer to start before it ends (the agent
/// then opens another and sends every status again).
const STATUS_WRITER_WAIT: Duration = Duration::from_secs(5);

impl Dispatcher {
    fn register(&self, node_id: &str, tx: Outbound) -> String {
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
    fn heartbeat(&self, node_id: &str, session_id: &str) -> bool {
        match self.sessions.lock().get_mut(node_id) {
            Some(s) if s.id == session_id => {
                s.last_heartbeat = Instant::now();
                true
            }
            _ => false,
        }
    }

    fn unregister(&self, node_id: &str, session_id: &str) {
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

    fn session_id(&self, node_id: &str) -> Option<String> {
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

pub fn heartbeat_period(view: &Tables) -> Duration {
    view.cluster()
        .and_then(|c| c.spec.as_ref())
        .map(|s| s.heartbeat_period)
        .filter(|p| *p > 0)
        .map(|p| Duration::from_nanos(p as u64))
        .unwrap_or(DEFAULT_HEARTBEAT)
}

/// The managers agents can reach, leader first.
pub fn manager_peers(view: &Tables, leader_raft_id: u64) -> Vec<Peer> {
    let mut members = view.members();
    members.sort_by_key(|m| (m.raft_id != leader_raft_id, m.raft_id));
    members
        .into_iter()
        .map(|m| Peer {
            node_id: m.node_id,
            addr: m.addr,
        })
        .collect()
}

pub fn session_info(
    ctx: &ManagerCtx,
    view: &Tables,
    node_id: &str,
    session_id: &str,
) -> SessionInfo {
    SessionInfo {
        session_id: session_id.to_string(),
        node_id: node_id.to_string(),
        managers: manager_peers(view, ctx.raft.status().leader),
        heartbeat_period: heartbeat_period(view).as_nanos() as i64,
        role: view.node(node_id).map_or(0, |n| n.role),
        cluster_id: view.cluster().map(|c| c.id.clone()).unwrap_or_default(),
    }
}

/// Pushes fresh session info to `node_id`'s agent, if connected.
pub fn push_session_info(ctx: &ManagerCtx, view: &Tables, node_id: &str) {
    if let Some(session_id) = ctx.dispatcher.session_id(node_id) {
        let info = session_info(ctx, view, node_id, &session_id);
        ctx.dispatcher.send(node_id, ManagerMsg::Session(info));
    }
}

pub struct DispatcherService {
    ctx: Arc<ManagerCtx>,
}

impl DispatcherService {
    pub fn new(ctx: Arc<ManagerCtx>) -> Self {
        DispatcherService { ctx }
    }

    fn not_leader(&self) -> Status {
        let status = self.ctx.raft.status();
        let mut err = Status::failed_precondition("this manager is not the leader");
        if let Some(addr) = self
            .ctx
            .store
            .view()
            .node_by_raft_id(status.leader)
            .and_then(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
        {
            if let Ok(value) = addr.parse() {
                err.metadata_mut().insert(LEADER_ADDR, value);
            }
        }
        err
    }
}

#[tonic::async_trait]
impl DispatcherRpc for DispatcherService {
    type SessionStream = ReceiverStream<Result<ManagerMessage, Status>>;

    async fn publish_logs(
        &self,
        request: Request<Streaming<LogBatch>>,
    ) -> Result<Response<Empty>, Status> {
        let cert = require_node(&request, &self.ctx.store.view())?;
        let mut inbound = request.into_inner();
        while let Some(batch) = inbound.message().await? {
            if !self.ctx.dispatcher.logs.deliver(&cert.node_id, batch).await {
                return Err(Status::cancelled("the log subscription has ended"));
            }
        }
        Ok(Response::new(Empty {}))
    }

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let cert = require_node(&request, &self.ctx.store.view())?;
        if !self.ctx.raft.is_leader() {
            return Err(self.not_leader());
        }
        let remote_ip = orch_api::transport::peer_of(&request)
            .and_then(|p| p.remote_addr)
            .map(|a| a.ip().to_string());
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no registration within 10s"))??;
        let Some(AgentMessage {
            msg: Some(AgentMsg::Register(register)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "a session must start with the node's registration",
            ));
        };
        let node_id = cert.node_id.clone();
        let addr = if register.advertise_addr.is_empty() {
            remote_ip.unwrap_or_default()
        } else {
            register.advertise_addr.clone()
        };
        let message = if register.engine_error.is_empty() {
            String::new()
        } else {
            format!("engine unavailable: {}", register.engine_error)
        };
        let change = NodeStatusChange {
            node_id: node_id.clone(),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                message,
                addr,
                engine_error: register.engine_error.clone(),
            }),
            description: register.description.clone(),
        };
        self.ctx.propose(vec![Action::NodeStatus(change)]).await?;

        let (tx, rx) = mpsc::channel(1024);
        let session_id = self.ctx.dispatcher.register(&node_id, tx.clone());
        let view = self.ctx.store.view();
        let info = session_info(&self.ctx, &view, &node_id, &session_id);
        let _ = tx.try_send(Ok(ManagerMessage {
            msg: Some(ManagerMsg::Session(info)),
        }));
        assignments::send_full(&self.ctx.dispatcher, &view, &node_id);
        info!(node = %node_id, "agent session started");

        let ctx = self.ctx.clone();
        let span = tracing::info_span!("session", node = %node_id);
        tokio::spawn(
            async move {
                loop {
                    let msg = match inbound.message().await {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => {
                            debug!(error = %e, "session stream error");
                            break;
                        }
                    };
                    if !ctx.dispatcher.heartbeat(&node_id, &session_id) {
                        break;
                    }
                    match msg.msg {
                        Some(AgentMsg::Heartbeat(_)) => {
                            let period = heartbeat_period(&ctx.store.view()).as_nanos() as i64;
                            let ack = ManagerMessage {
                                msg: Some(ManagerMsg::HeartbeatAck(HeartbeatAck {
                                    heartbeat_period: period,
                                })),
                            };
                            if tx.try_send(Ok(ack)).is_err() {
                                debug!("agent is not reading its session");
                            }
                        }
                        Some(AgentMsg::Statuses(batch)) => {
                            // An agent reports only on its own node's tasks.
                            let view = ctx.store.view();
                            let updates: Vec<_> = batch
                                .updates
                                .into_iter()
                                .filter(|u| {
                                    view.task(&u.task_id).is_some_and(|t| t.node_id == node_id)
                                })
                                .collect();
                            if !updates.is_empty()
                                && !ctx.dispatcher.forward_statuses(updates).await
                            {
                                debug!("no status writer took the reports; ending the session so the agent sends them again");
                                break;
                            }
                        }
                        Some(AgentMsg::Register(_)) | None => {}
                    }
                }
                ctx.dispatcher.unregister(&node_id, &session_id);
                debug!("agent session ended");
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the chaos suite (agent restart during a rolling update): when a session ended,
    /// the node's last heartbeat went with it, so the heartbeat monitor saw a node with no
    /// heartbeat at all and marked it Down at once; an agent restarting in 2s had its tasks
    /// rescheduled. The node keeps the rest of its grace.
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
