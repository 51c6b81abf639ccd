//! The dispatcher (leader only): one bidirectional session per node. The agent registers its
//! description and then heartbeats at the cluster's period; the leader marks a node Down after
//! three missed periods. The session also carries the manager list and the node's role to the
//! agent, so it can follow leader changes and promotions, and the node's task assignments.

pub mod assignments;
pub mod heartbeat;
pub mod logs;
pub mod sessions;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::agent_message::Msg as AgentMsg;
use orch_api::pb::dispatcher_server::Dispatcher as DispatcherRpc;
use orch_api::pb::manager_message::Msg as ManagerMsg;
use orch_api::pb::store_action::Action;
use orch_api::pb::{
    AgentMessage, Empty, HeartbeatAck, LogBatch, ManagerMessage, NodeState, NodeStatus,
    NodeStatusChange, Peer, SessionInfo,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, Instrument};

use crate::ca::auth::require_node;
use crate::ctx::ManagerCtx;
use crate::state::store::Tables;

pub use orch_api::heartbeat::{DEFAULT_PERIOD as DEFAULT_HEARTBEAT, LEADER_ADDR};
pub use sessions::Dispatcher;

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
        assignments::send_full(&self.ctx.dispatcher, &view, &self.ctx.data_key, &node_id);
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
