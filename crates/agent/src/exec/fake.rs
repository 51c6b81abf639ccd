//! A scripted executor for unit tests of the task runner and worker: containers live in
//! memory and behave as their image name says.
//!
//! - `missing:*` — the image cannot be pulled (prepare rejects).
//! - `exit:N` — the container exits with code N right after it starts.
//! - `unhealthy` — runs, but its healthcheck reports unhealthy.
//! - `healthy` — runs with a healthcheck that passes after `starting`.
//! - anything else — runs until stopped.

use std::collections::HashMap;
use std::sync::Arc;

use orch_api::pb::Task;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{ContainerInfo, ExecError, Executor, Health, LogOptions, LogStream, StartTurn};

#[derive(Debug, Clone)]
struct FakeContainer {
    info: ContainerInfo,
    image: String,
    starts: u32,
    /// A start the engine has taken but not finished (see `hold_engine_starts`).
    start_pending: bool,
}

/// Counts of what the runner asked for, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calls {
    pub prepare: u32,
    pub create: u32,
    pub start: u32,
    pub stop: u32,
    pub remove: u32,
}

#[derive(Default)]
pub struct FakeExecutor {
    containers: Mutex<HashMap<String, FakeContainer>>,
    calls: Mutex<Calls>,
    changed: Arc<Notify>,
    /// While set, every call fails as if the engine were down.
    pub down: Mutex<bool>,
    /// While set, starts wait for their turn (as behind a busy engine) until it is cleared.
    held: Mutex<bool>,
    /// While set, starts reach the engine but finish only once it is cleared.
    engine_held: Mutex<bool>,
}

impl FakeExecutor {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn calls(&self) -> Calls {
        self.calls.lock().clone()
    }

    /// A container that exists before the agent starts (adoption tests).
    pub fn add_existing(&self, task: &Task, running: bool) {
        let info = ContainerInfo {
            id: format!("c-{}", task.id),
            task_id: task.id.clone(),
            running,
            exit_code: if running { None } else { Some(0) },
            pid: 1,
            ..Default::default()
        };
        self.containers.lock().insert(
            task.id.clone(),
            FakeContainer {
                info,
                image: image_of(task),
                starts: 1,
                start_pending: false,
            },
        );
    }

    /// Makes a running container exit with `code` (as if its process ended).
    pub fn exit(&self, task_id: &str, code: i64) {
        if let Some(c) = self.containers.lock().get_mut(task_id) {
            c.info.running = false;
            c.info.exit_code = Some(code);
        }
        self.changed.notify_waiters();
    }

    pub fn container(&self, task_id: &str) -> Option<ContainerInfo> {
        self.containers.lock().get(task_id).map(|c| c.info.clone())
    }

    /// Holds (true) or lets through (false) every start waiting for its turn.
    pub fn hold_starts(&self, held: bool) {
        *self.held.lock() = held;
        self.changed.notify_waiters();
    }

    /// Holds (true) every start the engine has taken, or finishes them (false) — also those
    /// whose caller stopped waiting, as Docker finishes a start its client hung up on.
    pub fn hold_engine_starts(&self, held: bool) {
        *self.engine_held.lock() = held;
        if !held {
            for c in self.containers.lock().values_mut() {
                if std::mem::take(&mut c.start_pending) {
                    run(c);
                }
            }
        }
        self.changed.notify_waiters();
    }

    fn check_up(&self) -> Result<(), ExecError> {
        if *self.down.lock() {
            return Err(ExecError::Unavailable("engine down".into()));
        }
        Ok(())
    }
}

/// The container's process starts, as its image says.
fn run(c: &mut FakeContainer) {
    c.starts += 1;
    c.info.running = true;
    c.info.exit_code = None;
    c.info.pid = 100;
    c.info.health = match c.image.as_str() {
        "unhealthy" => Health::Unhealthy,
        "healthy" => Health::Healthy,
        _ => Health::None,
    };
    if let Some(code) = c.image.strip_prefix("exit:").and_then(|n| n.parse().ok()) {
        c.info.running = false;
        c.info.exit_code = Some(code);
    }
}

fn image_of(task: &Task) -> String {
    task.spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Executor for FakeExecutor {
    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        self.check_up()?;
        Ok(self
            .containers
            .lock()
            .values()
            .map(|c| c.info.clone())
            .collect())
    }

    async fn prepare(&self, task: &Task) -> Result<(), ExecError> {
        self.check_up()?;
        self.calls.lock().prepare += 1;
        let image = image_of(task);
        if image.starts_with("missing") {
            return Err(ExecError::Rejected(format!(
                "pull access denied for {image}, repository does not exist"
            )));
        }
        Ok(())
    }

    async fn create(&self, task: &Task) -> Result<String, ExecError> {
        self.check_up()?;
        self.calls.lock().create += 1;
        let mut containers = self.containers.lock();
        let c = containers
            .entry(task.id.clone())
            .or_insert_with(|| FakeContainer {
                info: ContainerInfo {
                    id: format!("c-{}", task.id),
                    task_id: task.id.clone(),
                    ..Default::default()
                },
                image: image_of(task),
                starts: 0,
                start_pending: false,
            });
        Ok(c.info.id.clone())
    }

    async fn start_turn(&self) -> StartTurn {
        loop {
            let released = self.changed.notified();
            if !*self.held.lock() {
                return StartTurn::default();
            }
            released.await;
        }
    }

    async fn start(&self, task: &Task) -> Result<(), ExecError> {
        self.check_up()?;
        self.calls.lock().start += 1;
        {
            let mut containers = self.containers.lock();
            let c = containers
                .get_mut(&task.id)
                .ok_or_else(|| ExecError::Failed("no such container".into()))?;
            if *self.engine_held.lock() {
                c.start_pending = true;
            } else {
                run(c);
            }
        }
        self.changed.notify_waiters();
        // The answer comes once the engine has finished the start.
        loop {
            let finished = self.changed.notified();
            let pending = self
                .containers
                .lock()
                .get(&task.id)
                .is_some_and(|c| c.start_pending);
            if !pending {
                return Ok(());
            }
            finished.await;
        }
    }

    async fn inspect(&self, task: &Task) -> Result<Option<ContainerInfo>, ExecError> {
        self.check_up()?;
        Ok(self.containers.lock().get(&task.id).map(|c| c.info.clone()))
    }

    async fn wait(&self, task: &Task) -> Result<ContainerInfo, ExecError> {
        loop {
            let notified = self.changed.notified();
            match self.containers.lock().get(&task.id) {
                None => return Err(ExecError::Failed("no such container".into())),
                Some(c) if !c.info.running => return Ok(c.info.clone()),
                Some(_) => {}
            }
            notified.await;
        }
    }

    async fn stop(&self, task: &Task) -> Result<(), ExecError> {
        self.check_up()?;
        self.calls.lock().stop += 1;
        if let Some(c) = self.containers.lock().get_mut(&task.id) {
            if c.info.running {
                c.info.running = false;
                c.info.exit_code = Some(137);
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn remove(&self, task: &Task) -> Result<(), ExecError> {
        self.check_up()?;
        self.calls.lock().remove += 1;
        self.containers.lock().remove(&task.id);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), ExecError> {
        self.check_up()?;
        self.containers
            .lock()
            .retain(|_, c| c.info.id != container_id);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn logs(&self, _task: &Task, _options: LogOptions) -> Result<LogStream, ExecError> {
        Ok(Box::pin(futures::stream::empty()))
    }
}
