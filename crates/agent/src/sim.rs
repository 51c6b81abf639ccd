//! Simulated agents for load tests: each is a real node of the cluster — it joins with the
//! worker token over mTLS and gets its own certificate, then runs the real session (register,
//! heartbeats, assignments, batched status reports) and the real worker and task runners —
//! but its executor starts no container: a task's "container" runs, in memory, until the task
//! is stopped. Thousands fit in one process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::ca_client::CaClient;
use orch_api::pb::{Empty, IssueNodeCertificateRequest, NodeAvailability, NodeDescription, Task};
use orch_api::tls::{anonymous_client_config, new_key_and_csr, NodeIdentity, TlsContext};
use orch_api::token::{ca_digest, JoinToken};
use orch_api::transport::tls_channel;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::exec::{ContainerInfo, ExecError, Executor, Health, LogOptions, LogStream};
use crate::session::{Registration, SessionState};

struct SimContainer {
    id: String,
    running: bool,
    stopped: Arc<Notify>,
}

/// An executor whose containers exist only in memory and run until stopped.
#[derive(Default)]
pub struct SimExecutor {
    containers: Mutex<HashMap<String, SimContainer>>,
}

impl SimExecutor {
    fn info(task_id: &str, c: &SimContainer) -> ContainerInfo {
        ContainerInfo {
            id: c.id.clone(),
            task_id: task_id.to_string(),
            running: c.running,
            exit_code: (!c.running).then_some(0),
            health: Health::None,
            ..Default::default()
        }
    }

    /// Containers that run now.
    pub fn running(&self) -> usize {
        self.containers
            .lock()
            .values()
            .filter(|c| c.running)
            .count()
    }
}

#[tonic::async_trait]
impl Executor for SimExecutor {
    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        Ok(self
            .containers
            .lock()
            .iter()
            .map(|(id, c)| Self::info(id, c))
            .collect())
    }

    async fn prepare(&self, _task: &Task) -> Result<(), ExecError> {
        Ok(())
    }

    async fn create(&self, task: &Task) -> Result<String, ExecError> {
        let mut containers = self.containers.lock();
        let c = containers
            .entry(task.id.clone())
            .or_insert_with(|| SimContainer {
                id: format!("sim-{}", task.id),
                running: false,
                stopped: Arc::new(Notify::new()),
            });
        Ok(c.id.clone())
    }

    async fn start(&self, task: &Task) -> Result<(), ExecError> {
        match self.containers.lock().get_mut(&task.id) {
            Some(c) => {
                c.running = true;
                Ok(())
            }
            None => Err(ExecError::Failed(format!(
                "no container for task {}",
                task.id
            ))),
        }
    }

    async fn inspect(&self, task: &Task) -> Result<Option<ContainerInfo>, ExecError> {
        Ok(self
            .containers
            .lock()
            .get(&task.id)
            .map(|c| Self::info(&task.id, c)))
    }

    async fn wait(&self, task: &Task) -> Result<ContainerInfo, ExecError> {
        loop {
            let stopped = {
                let containers = self.containers.lock();
                match containers.get(&task.id) {
                    None => {
                        return Err(ExecError::Failed(format!(
                            "no container for task {}",
                            task.id
                        )))
                    }
                    Some(c) if !c.running => return Ok(Self::info(&task.id, c)),
                    Some(c) => c.stopped.clone(),
                }
            };
            let notified = stopped.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Stopped between the look and the registration: look again.
            if self
                .containers
                .lock()
                .get(&task.id)
                .is_none_or(|c| !c.running)
            {
                continue;
            }
            notified.await;
        }
    }

    async fn stop(&self, task: &Task) -> Result<(), ExecError> {
        if let Some(c) = self.containers.lock().get_mut(&task.id) {
            c.running = false;
            c.stopped.notify_waiters();
        }
        Ok(())
    }

    async fn remove(&self, task: &Task) -> Result<(), ExecError> {
        if let Some(c) = self.containers.lock().remove(&task.id) {
            c.stopped.notify_waiters();
        }
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), ExecError> {
        let mut containers = self.containers.lock();
        containers.retain(|_, c| {
            let keep = c.id != container_id;
            if !keep {
                c.stopped.notify_waiters();
            }
            keep
        });
        Ok(())
    }

    async fn logs(&self, _task: &Task, _options: LogOptions) -> Result<LogStream, ExecError> {
        Ok(Box::pin(futures::stream::empty()))
    }
}

/// What a join gave a simulated node.
#[derive(Clone)]
pub struct Joined {
    pub node_id: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub managers: Vec<String>,
}

/// Joins the cluster of the manager at `remote` (host:port) with a worker `token`, in memory.
pub async fn join(remote: &str, token: &str, hostname: &str) -> anyhow::Result<Joined> {
    let parsed = JoinToken::parse(token).map_err(|_| anyhow::anyhow!("invalid join token"))?;
    let anon = tls_channel(remote, anonymous_client_config(None)?)?;
    let ca = CaClient::new(anon)
        .get_root_ca_certificate(Empty {})
        .await?
        .into_inner();
    if ca_digest(&ca.cert_pem) != parsed.ca_digest {
        anyhow::bail!("the manager's CA does not match the token");
    }
    let csr = new_key_and_csr()?;
    let verified = tls_channel(remote, anonymous_client_config(Some(&ca.cert_pem))?)?;
    let issued = tokio::time::timeout(
        Duration::from_secs(30),
        CaClient::new(verified).issue_node_certificate(IssueNodeCertificateRequest {
            token: token.trim().to_string(),
            csr: csr.csr_der,
            hostname: hostname.to_string(),
            availability: NodeAvailability::Active as i32,
        }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no certificate from {remote} within 30s"))??
    .into_inner();
    let mut managers = vec![remote.to_string()];
    managers.extend(
        issued
            .managers
            .iter()
            .map(|m| m.addr.clone())
            .filter(|a| !a.is_empty() && a != remote),
    );
    Ok(Joined {
        node_id: issued.node_id,
        ca_pem: issued.ca_pem,
        cert_pem: issued.cert_pem,
        key_pem: csr.key_pem,
        managers,
    })
}

/// A running simulated node.
pub struct SimAgent {
    pub node_id: String,
    pub hostname: String,
    pub exec: Arc<SimExecutor>,
    pub state: watch::Receiver<SessionState>,
    shutdown: CancellationToken,
}

impl SimAgent {
    /// Starts the session and the worker of a joined node.
    pub fn start(joined: &Joined, hostname: &str) -> anyhow::Result<SimAgent> {
        let identity = Arc::new(NodeIdentity::from_pem(&joined.cert_pem, &joined.key_pem)?);
        let tls = TlsContext::new(&joined.ca_pem, identity)?.client_config()?;
        let exec = Arc::new(SimExecutor::default());
        let shutdown = CancellationToken::new();
        let (state_tx, state_rx) = watch::channel(SessionState::default());
        let registration = Registration {
            description: NodeDescription {
                hostname: hostname.to_string(),
                platform: Some(crate::engine::local_platform()),
                resources: Some(crate::engine::local_resources()),
                engine: None,
            },
            advertise_addr: String::new(),
            engine_error: String::new(),
        };
        crate::start(
            crate::AgentParams {
                exec: exec.clone(),
                tls,
                managers: Arc::new(Mutex::new(joined.managers.clone())),
                registration: Arc::new(Mutex::new(registration)),
                state: state_tx,
                data: Default::default(),
                net: None,
            },
            &shutdown,
        );
        Ok(SimAgent {
            node_id: joined.node_id.clone(),
            hostname: hostname.to_string(),
            exec,
            state: state_rx,
            shutdown,
        })
    }

    pub fn connected(&self) -> bool {
        self.state.borrow().connected
    }

    /// The session generation: bumped each time the agent opens a new session.
    pub fn generation(&self) -> u64 {
        self.state.borrow().generation
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Task {
        Task {
            id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_sim_container_runs_until_stopped() {
        let exec = SimExecutor::default();
        let t = task("t1");
        exec.create(&t).await.expect("test step");
        exec.start(&t).await.expect("test step");
        assert_eq!(exec.running(), 1);
        assert!(
            exec.inspect(&t)
                .await
                .expect("test step")
                .expect("test step")
                .running
        );
        let waiting = tokio::time::timeout(Duration::from_millis(50), exec.wait(&t)).await;
        assert!(
            waiting.is_err(),
            "a running container does not exit by itself"
        );
        let exec = Arc::new(exec);
        let e = exec.clone();
        let waiter = tokio::spawn(async move { e.wait(&task("t1")).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        exec.stop(&t).await.expect("test step");
        let info = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("wait returns once stopped")
            .expect("test step")
            .expect("test step");
        assert!(!info.running);
        assert_eq!(exec.running(), 0);
        exec.remove(&t).await.expect("test step");
        assert!(exec.inspect(&t).await.expect("test step").is_none());
        assert!(exec.list().await.expect("test step").is_empty());
    }
}
