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

pub use orch_api::heartbeat::LEADER_ADDR;

use crate::shared::{Contact, TaskRegistry};
use orch_api::heartbeat::{session_silence_limit, DEFAULT_PERIOD};

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
    pub tasks: TaskRegistry,
    /// Manager addresses to try, best first; updated from session info.
    pub managers: Arc<Mutex<Vec<String>>>,
    pub registration: Arc<Mutex<Registration>>,
    pub state: watch::Sender<SessionState>,
    pub assignments: mpsc::Sender<Assignments>,
    pub statuses: mpsc::Receiver<Vec<TaskStatusUpdate>>,
    pub contact: Contact,
    /// Where the secrets and configs of assignments go (before the tasks reach the worker).
    pub data: crate::data::DataStore,
    /// The overlay data plane, fed the dispatcher's network updates.
    pub net: Option<std::sync::Arc<crate::net::plane::Plane>>,
}

fn period_of(nanos: i64) -> Duration {
    if nanos > 0 {
        Duration::from_nanos(nanos as u64)
    } else {
        DEFAULT_PERIOD
    }
}

/// How long a manager whose session failed is tried last and not followed by redirect: about
/// as long as the other managers take to elect a new leader.
const AVOID_FAILED_FOR: Duration = Duration::from_secs(3);

/// The next manager to try, round robin, passing over `failed` (the one whose session just
/// failed) unless it is the only one.
fn next_manager<'a>(managers: &'a [String], next: &mut usize, failed: Option<&str>) -> &'a str {
    for _ in 0..managers.len() {
        let addr = &managers[*next % managers.len()];
        *next = next.wrapping_add(1);
        if Some(addr.as_str()) != failed {
            return addr;
        }
    }
    &managers[*next % managers.len()]
}

enum Ended {
    Redirect(String),
    Failed(String),
    /// A session that had run for a while ended (its manager fell silent, closed it or
    /// failed): that manager failed, not every one, so the next is tried at once.
    Lost(String),
}

/// How long a session must have run for its end to count as [`Ended::Lost`]; a manager that
/// accepts sessions and ends them at once is retried with the usual backoff.
const LOST_AFTER: Duration = Duration::from_secs(1);

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
    // The manager whose session (or connection) just failed: it is tried last. A leader cut
    // off or paused fails its sessions by silence; the other managers, which may still point
    // at it until they elect a new one, must not send the agent back to it meanwhile.
    // Remembered for about an election's time only: a manager that comes back and leads
    // again must be reachable by redirect.
    let mut failed: Option<(String, tokio::time::Instant)> = None;
    loop {
        let failed_now = failed
            .as_ref()
            .filter(|(_, at)| at.elapsed() < AVOID_FAILED_FOR)
            .map(|(addr, _)| addr.clone());
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
                let addr = next_manager(&managers, &mut next, failed_now.as_deref());
                addr.to_string()
            }
        };
        generation += 1;
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = session(&mut p, &addr, generation) => ended,
        };
        p.state.send_modify(|s| s.connected = false);
        match ended {
            Ended::Redirect(leader) if failed_now.as_deref() != Some(leader.as_str()) => {
                debug!(from = %addr, to = %leader, "redirected to the leader");
                redirect = Some(leader);
                backoff = Duration::from_millis(100);
                continue;
            }
            Ended::Redirect(leader) => {
                // Pointed back at the manager that just failed: its followers have not
                // elected another yet. Ask again shortly (the answer kept contact alive).
                debug!(from = %addr, to = %leader, "redirected to the manager that failed; waiting for an election");
                backoff = backoff.min(Duration::from_millis(200));
            }
            Ended::Failed(message) => {
                debug!(manager = %addr, error = %message, "session ended");
                p.state.send_modify(|s| s.last_error = message);
                failed = Some((addr, tokio::time::Instant::now()));
            }
            Ended::Lost(message) => {
                // No wait: the agent has already been without a manager for 1.5 periods,
                // and it fences at 2.5. (A backoff of up to half a second here, after a long
                // session, was what made CI's leader-partition test fence a node whose other
                // managers answered.)
                debug!(manager = %addr, error = %message, "session lost; trying the next manager");
                p.state.send_modify(|s| s.last_error = message);
                failed = Some((addr, tokio::time::Instant::now()));
                backoff = Duration::from_millis(100);
                continue;
            }
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
        }
        backoff = (backoff * 2).min(max_backoff(&p.contact));
    }
}

/// The longest wait between two attempts: 2 s, and under half a heartbeat period, so that
/// the answers of managers during an election (each one counts as contact) come well before
/// the agent would fence its tasks (2 periods without any). With a 1 s period, waits of up to
/// 3 s (2 s and jitter) let a slow election fence a node whose managers all answered.
fn max_backoff(contact: &Contact) -> Duration {
    let period = contact
        .silence()
        .map_or(DEFAULT_PERIOD, |(_, period)| period);
    Duration::from_secs(2).min(period / 3)
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
    // Silence is checked ten times a period: a manager that stopped answering is left within
    // a tenth of a period of the limit (1.5 periods), a whole period before fencing (2.5).
    let mut silence_check = tokio::time::interval(period / 10);
    let mut last_heard = tokio::time::Instant::now();
    let started = tokio::time::Instant::now();
    let lost = |message: String| {
        if started.elapsed() >= LOST_AFTER {
            Ended::Lost(message)
        } else {
            Ended::Failed(message)
        }
    };
    loop {
        tokio::select! {
            _ = silence_check.tick() => {
                if last_heard.elapsed() > session_silence_limit(period) {
                    return lost(format!("manager {addr} stopped answering"));
                }
            }
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(m)) => m,
                    Ok(None) => return lost(format!("manager {addr} closed the session")),
                    Err(status) => return lost(format!("{addr}: {}", status.message())),
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
                            silence_check = tokio::time::interval(period / 10);
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
                        p.data.apply(&assignments);
                        let delivered = p.assignments.send(assignments).await;
                        if delivered.is_err() {
                            return Ended::Failed("agent stopped".into());
                        }
                    }
                    Some(ManagerMsg::Network(update)) => {
                        if let Some(net) = &p.net {
                            net.apply(&update);
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
                            silence_check = tokio::time::interval(period / 10);
                        }
                    }
                    None => {}
                }
            }
            _ = heartbeat.tick() => {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the suite under load: with a 1 s period, an election slower than usual left
    /// an agent waiting up to 3 s between attempts, and it fenced its tasks (after 2 s without
    /// contact) although every manager it asked had answered.
    #[tokio::test]
    async fn regression_retries_came_too_rarely_to_keep_contact_through_an_election() {
        let contact = Contact::default();
        assert!(max_backoff(&contact) <= Duration::from_secs(2));
        for period in [
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_secs(5),
        ] {
            contact.touch(period);
            let worst = max_backoff(&contact) * 3 / 2; // the wait and its jitter
            assert!(
                worst < period,
                "{period:?}: up to {worst:?} between attempts"
            );
            assert!(worst * 2 < orch_api::heartbeat::fence_after(period));
        }
    }

    #[test]
    fn the_manager_that_failed_is_tried_last() {
        let managers: Vec<String> = ["m1", "m2", "m3"].iter().map(|s| s.to_string()).collect();
        let one = vec!["m1".to_string()];
        // (name, managers, next, failed, the managers tried in order)
        type Case<'a> = (&'a str, &'a [String], usize, Option<&'a str>, [&'a str; 4]);
        let cases: [Case<'_>; 4] = [
            ("round robin", &managers, 0, None, ["m1", "m2", "m3", "m1"]),
            (
                "the failed leader is passed over",
                &managers,
                0,
                Some("m1"),
                ["m2", "m3", "m2", "m3"],
            ),
            (
                "from any position",
                &managers,
                1,
                Some("m2"),
                ["m3", "m1", "m3", "m1"],
            ),
            (
                "a lone manager is tried anyway",
                &one,
                0,
                Some("m1"),
                ["m1", "m1", "m1", "m1"],
            ),
        ];
        for (name, managers, mut next, failed, want) in cases {
            let got: Vec<&str> = (0..4)
                .map(|_| next_manager(managers, &mut next, failed))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
