//! The agent's session with the dispatcher on the leader: register, heartbeat, receive session
//! info and assignments, send task status in batches. When the session breaks, the agent tries
//! the managers it knows (the leader first, as the last session said), following a follower's
//! redirect to the leader, with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::agent_message::Msg as AgentMsg;
use orch_api::pb::dispatcher_client::DispatcherClient;
use orch_api::pb::manager_message::Msg as ManagerMsg;
use orch_api::pb::{
    AgentMessage, Assignments, Heartbeat, NodeDescription, RegisterNode, SessionInfo,
    TaskStatusBatch, TaskStatusUpdate,
};
use parking_lot::Mutex;
use rand::Rng;
use rustls::ClientConfig;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Metadata a follower sets to point at the leader.
pub const LEADER_ADDR: &str = "orch-leader-addr";

/// What the node knows about its session.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    pub connected: bool,
    pub manager_addr: String,
    pub info: Option<SessionInfo>,
    pub last_error: String,
    /// Bumped on every new session (so listeners can resend full state).
    pub generation: u64,
}

/// When the agent last heard from a manager, and the heartbeat period then in force: what
/// the worker's fencing looks at.
#[derive(Clone, Default)]
pub struct Contact(Arc<Mutex<Option<(tokio::time::Instant, Duration)>>>);

impl Contact {
    pub fn touch(&self, period: Duration) {
        *self.0.lock() = Some((tokio::time::Instant::now(), period));
    }

    /// How long the agent has heard nothing, and the period; None before the first contact.
    pub fn silence(&self) -> Option<(Duration, Duration)> {
        self.0.lock().map(|(at, period)| (at.elapsed(), period))
    }
}

/// How the agent describes itself when it registers.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub description: NodeDescription,
    pub advertise_addr: String,
    pub engine_error: String,
}

pub struct SessionParams {
    pub tls: Arc<ClientConfig>,
    /// For log subscriptions: the executor and the tasks the worker holds.
    pub exec: Arc<dyn crate::exec::Executor>,
    pub tasks: crate::worker::TaskRegistry,
    /// Manager addresses to try, best first; updated from session info.
    pub managers: Arc<Mutex<Vec<String>>>,
    pub registration: Arc<Mutex<Registration>>,
    pub state: watch::Sender<SessionState>,
    pub assignments: mpsc::Sender<Assignments>,
    pub statuses: mpsc::Receiver<Vec<TaskStatusUpdate>>,
    pub contact: Contact,
}

const DEFAULT_PERIOD: Duration = Duration::from_secs(5);

fn period_of(nanos: i64) -> Duration {
    if nanos > 0 {
        Duration::from_nanos(nanos as u64)
    } else {
        DEFAULT_PERIOD
    }
}

enum Ended {
    Redirect(String),
    Failed(String),
}

/// The session generation alone, for the worker: it changes only when a new session opens.
pub fn generations(mut state: watch::Receiver<SessionState>) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let g = state.borrow_and_update().generation;
            tx.send_if_modified(|current| std::mem::replace(current, g) != g);
        }
    });
    rx
}

/// Runs sessions until `shutdown`.
pub async fn run(mut p: SessionParams, shutdown: CancellationToken) {
    let mut next = 0usize;
    let mut redirect: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    let mut generation = 0u64;
    loop {
        let addr = match redirect.take() {
            Some(addr) => addr,
            None => {
                let managers = p.managers.lock().clone();
                if managers.is_empty() {
                    warn!("no manager address known");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
                let addr = managers[next % managers.len()].clone();
                next = next.wrapping_add(1);
                addr
            }
        };
        generation += 1;
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = session(&mut p, &addr, generation) => ended,
        };
        p.state.send_modify(|s| s.connected = false);
        match ended {
            Ended::Redirect(leader) => {
                debug!(from = %addr, to = %leader, "redirected to the leader");
                redirect = Some(leader);
                backoff = Duration::from_millis(100);
                continue;
            }
            Ended::Failed(message) => {
                debug!(manager = %addr, error = %message, "session ended");
                p.state.send_modify(|s| s.last_error = message);
            }
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn session(p: &mut SessionParams, addr: &str, generation: u64) -> Ended {
    let channel = match orch_api::transport::tls_channel(addr, p.tls.clone()) {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let mut client = DispatcherClient::new(channel.clone())
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(64 << 20);
    // Log publishers of this session, by subscription; they stop with it.
    let session_done = CancellationToken::new();
    let _stop_publishers = session_done.clone().drop_guard();
    let mut publishers: HashMap<String, CancellationToken> = HashMap::new();
    let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(64);
    let registration = p.registration.lock().clone();
    let register = AgentMessage {
        msg: Some(AgentMsg::Register(RegisterNode {
            description: Some(registration.description),
            advertise_addr: registration.advertise_addr,
            engine_error: registration.engine_error,
        })),
    };
    if out_tx.send(register).await.is_err() {
        return Ended::Failed("session closed".into());
    }
    let response = match tokio::time::timeout(
        Duration::from_secs(10),
        client.session(ReceiverStream::new(out_rx)),
    )
    .await
    {
        Err(_) => return Ended::Failed(format!("manager {addr} did not answer within 10s")),
        Ok(Err(status)) => {
            // A manager that answers (even "not the leader") is reachable: not a partition.
            if status.code() == tonic::Code::FailedPrecondition {
                p.contact.touch(
                    p.contact
                        .silence()
                        .map_or(DEFAULT_PERIOD, |(_, period)| period),
                );
            }
            if let Some(leader) = status
                .metadata()
                .get(LEADER_ADDR)
                .and_then(|v| v.to_str().ok())
            {
                if leader != addr {
                    return Ended::Redirect(leader.to_string());
                }
            }
            return Ended::Failed(format!("{}: {}", addr, status.message()));
        }
        Ok(Ok(response)) => response,
    };
    let mut inbound = response.into_inner();
    let mut period = DEFAULT_PERIOD;
    let mut heartbeat = tokio::time::interval(period);
    heartbeat.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(m)) => m,
                    Ok(None) => return Ended::Failed(format!("manager {addr} closed the session")),
                    Err(status) => return Ended::Failed(format!("{addr}: {}", status.message())),
                };
                last_heard = tokio::time::Instant::now();
                p.contact.touch(period);
                match message.msg {
                    Some(ManagerMsg::Session(info)) => {
                        let new_period = period_of(info.heartbeat_period);
                        if new_period != period {
                            period = new_period;
                            heartbeat = tokio::time::interval(period);
                            heartbeat.tick().await;
                        }
                        let managers: Vec<String> = info.managers.iter().map(|m| m.addr.clone()).filter(|a| !a.is_empty()).collect();
                        if !managers.is_empty() {
                            *p.managers.lock() = managers;
                        }
                        let first = !p.state.borrow().connected;
                        if first {
                            info!(manager = %addr, "session established");
                        }
                        p.state.send_modify(|s| {
                            s.connected = true;
                            s.manager_addr = addr.to_string();
                            s.info = Some(info);
                            s.last_error.clear();
                            s.generation = generation;
                        });
                    }
                    Some(ManagerMsg::Assignments(assignments)) => {
                        let delivered = p.assignments.send(assignments).await;
                        if delivered.is_err() {
                            return Ended::Failed("agent stopped".into());
                        }
                    }
                    Some(ManagerMsg::Logs(sub)) => {
                        if sub.close {
                            if let Some(token) = publishers.remove(&sub.id) {
                                token.cancel();
                            }
                        } else {
                            let token = session_done.child_token();
                            publishers.insert(sub.id.clone(), token.clone());
                            let tasks: Vec<_> = {
                                let registry = p.tasks.lock();
                                sub.task_ids.iter().filter_map(|id| registry.get(id).cloned()).collect()
                            };
                            tokio::spawn(crate::logs::publish(channel.clone(), p.exec.clone(), tasks, sub, token));
                        }
                    }
                    Some(ManagerMsg::HeartbeatAck(ack)) => {
                        let new_period = period_of(ack.heartbeat_period);
                        if new_period != period {
                            period = new_period;
                            heartbeat = tokio::time::interval(period);
                            heartbeat.tick().await;
                        }
                    }
                    None => {}
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > period * 3 + Duration::from_secs(1) {
                    return Ended::Failed(format!("manager {addr} stopped answering"));
                }
                if out_tx.send(AgentMessage { msg: Some(AgentMsg::Heartbeat(Heartbeat {})) }).await.is_err() {
                    return Ended::Failed("session closed".into());
                }
            }
            updates = p.statuses.recv() => {
                let Some(updates) = updates else { return Ended::Failed("agent stopped".into()) };
                let batch = AgentMessage { msg: Some(AgentMsg::Statuses(TaskStatusBatch { updates })) };
                if out_tx.send(batch).await.is_err() {
                    return Ended::Failed("session closed".into());
                }
            }
        }
    }
}
