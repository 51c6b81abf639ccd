//! The executor: what the task runner asks of a container runtime. The Docker Engine
//! implementation lives in [`docker`]; a scripted fake in [`fake`] drives unit tests of the
//! runner and worker above it.

pub mod docker;
pub mod fake;

use std::pin::Pin;

use futures::Stream;
use orch_api::pb::Task;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The task cannot run as specified (the image cannot be pulled, the spec is refused by
    /// the engine): the task is REJECTED with this message.
    #[error("{0}")]
    Rejected(String),
    /// Running the task failed: the task FAILS with this message.
    #[error("{0}")]
    Failed(String),
    /// The engine did not answer: the runner retries later.
    #[error("{0}")]
    Unavailable(String),
}

/// A container's healthcheck status, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// No healthcheck.
    #[default]
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    /// The word stored in TaskStatus.health.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::None => "",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// What the runner learns about a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    pub id: String,
    /// The task the container belongs to (from its labels).
    pub task_id: String,
    pub running: bool,
    /// Set once the container has exited.
    pub exit_code: Option<i64>,
    pub pid: i64,
    pub health: Health,
    /// The engine's error for the container, if any (e.g. OOM killed, start failure).
    pub error: String,
}

/// Which log lines `logs` returns.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    /// Lines from the end; None: all.
    pub tail: Option<u64>,
    /// Unix seconds; 0: from the start.
    pub since: i64,
    pub timestamps: bool,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// 1 stdout, 2 stderr.
    pub stream: u32,
    /// Unix nanoseconds, when the engine gave a timestamp.
    pub timestamp: i64,
    pub data: Vec<u8>,
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, ExecError>> + Send>>;

/// A container runtime, as the task runner sees it. Every method is idempotent, so the runner
/// can retry after an `Unavailable` error or a restart of the agent.
#[tonic::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Every container this node's agent created (found by its labels), for adoption after a
    /// restart and for removing containers of tasks the node no longer has.
    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError>;
    /// Makes sure the task's image is present, pulling it if it is not.
    async fn prepare(&self, task: &Task) -> Result<(), ExecError>;
    /// Creates the task's container (an existing container of the task is reused); returns
    /// its ID.
    async fn create(&self, task: &Task) -> Result<String, ExecError>;
    /// Waits for a turn to start a container (an engine may take only a few starts at once),
    /// held until the turn is dropped. The wait can be given up at any time; a `start`, once
    /// called, cannot: the engine finishes it whether or not the caller still waits.
    async fn start_turn(&self) -> StartTurn {
        StartTurn::default()
    }
    /// Starts the task's container; called with a turn from `start_turn` held.
    async fn start(&self, task: &Task) -> Result<(), ExecError>;
    /// The task's container now; None when it has none.
    async fn inspect(&self, task: &Task) -> Result<Option<ContainerInfo>, ExecError>;
    /// Resolves once the task's container is no longer running, with its final state.
    async fn wait(&self, task: &Task) -> Result<ContainerInfo, ExecError>;
    /// Sends the stop signal, waits the task's grace period, then kills. A missing or
    /// already stopped container is fine.
    async fn stop(&self, task: &Task) -> Result<(), ExecError>;
    /// Removes the task's container (and its anonymous volumes). A missing one is fine.
    async fn remove(&self, task: &Task) -> Result<(), ExecError>;
    /// Removes a container by ID (one whose task this node no longer has).
    async fn remove_container(&self, container_id: &str) -> Result<(), ExecError>;
    /// The task container's output.
    async fn logs(&self, task: &Task, options: LogOptions) -> Result<LogStream, ExecError>;
}

/// A turn to start a container (see [`Executor::start_turn`]), given back when dropped.
#[derive(Default)]
pub struct StartTurn {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The executor of a node whose engine did not answer at start: every call is unavailable,
/// so assigned tasks wait (the scheduler does not place tasks on such a node).
pub struct NoEngine(pub String);

#[tonic::async_trait]
impl Executor for NoEngine {
    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        Ok(Vec::new())
    }
    async fn prepare(&self, _task: &Task) -> Result<(), ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
    async fn create(&self, _task: &Task) -> Result<String, ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
    async fn start(&self, _task: &Task) -> Result<(), ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
    async fn inspect(&self, _task: &Task) -> Result<Option<ContainerInfo>, ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
    async fn wait(&self, _task: &Task) -> Result<ContainerInfo, ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
    async fn stop(&self, _task: &Task) -> Result<(), ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
    async fn remove(&self, _task: &Task) -> Result<(), ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
    async fn remove_container(&self, _container_id: &str) -> Result<(), ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
    async fn logs(&self, _task: &Task, _options: LogOptions) -> Result<LogStream, ExecError> {
        Err(ExecError::Unavailable(self.0.clone()))
    }
}

/// Labels every orch container carries, so an agent only ever touches its own, even when
/// several nodes share one engine.
pub mod labels {
    pub const NODE_ID: &str = "orch.node.id";
    pub const SERVICE_ID: &str = "orch.service.id";
    pub const SERVICE_NAME: &str = "orch.service.name";
    pub const TASK_ID: &str = "orch.task.id";
    pub const TASK_SLOT: &str = "orch.task.slot";
    /// On a task's sandbox (pause) container, with the task's ID: not a task container.
    pub const SANDBOX_OF: &str = "orch.sandbox.task";
}

/// `<service>.<slot>.<task id>` (global services: `<service>.<node id>.<task id>`).
pub fn container_name(task: &Task) -> String {
    let slot = if task.slot == 0 {
        task.node_id.clone()
    } else {
        task.slot.to_string()
    };
    format!("{}.{}.{}", task.service_name, slot, task.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_swarm() {
        let mut t = Task {
            id: "t1".into(),
            service_name: "web".into(),
            slot: 3,
            node_id: "n1".into(),
            ..Default::default()
        };
        assert_eq!(container_name(&t), "web.3.t1");
        t.slot = 0;
        assert_eq!(container_name(&t), "web.n1.t1");
    }
}
