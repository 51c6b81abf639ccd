//! The task runner: one per assigned task, advancing it one state at a time
//! (ASSIGNED → ACCEPTED → PREPARING → READY → STARTING → RUNNING → COMPLETE/FAILED, or SHUTDOWN
//! when the manager asks it to stop, REJECTED when it cannot run) and reporting every change.
//! States only move forward. A runner started for a task whose container already exists (after
//! an agent restart) adopts the container instead of creating another.

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::{ContainerStatus, Task, TaskState, TaskStatus, TaskStatusUpdate};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::exec::{ContainerInfo, ExecError, Executor, Health};

/// How often a running task's health is looked at.
const HEALTH_POLL: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a running task behind the routing mesh keeps serving after it is told to stop:
/// the manager took it out of the mesh when it asked, and every node hears of it within a
/// fraction of a second (p99 0.17 s measured); connections sent to it meanwhile still land.
const MESH_DRAIN: Duration = Duration::from_secs(2);

fn has_healthcheck(task: &Task) -> bool {
    task.spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .and_then(|c| c.healthcheck.as_ref())
        .is_some_and(|h| !h.test.is_empty() && h.test[0] != "NONE")
}

struct Runner {
    exec: Arc<dyn Executor>,
    task: watch::Receiver<Task>,
    status: TaskStatus,
    reports: mpsc::UnboundedSender<TaskStatusUpdate>,
    task_id: String,
}

impl Runner {
    fn current(&self) -> Task {
        self.task.borrow().clone()
    }

    fn state(&self) -> TaskState {
        TaskState::try_from(self.status.state).unwrap_or(TaskState::New)
    }

    /// Moves to `state` (forward only) and reports it.
    fn report(
        &mut self,
        state: TaskState,
        message: &str,
        err: &str,
        container: Option<&ContainerInfo>,
    ) {
        if state < self.state() {
            return;
        }
        let mut status = TaskStatus {
            timestamp: orch_api::now_nanos(),
            state: state as i32,
            message: message.to_string(),
            err: err.to_string(),
            container: self.status.container.clone(),
            port_status: None,
            health: self.status.health.clone(),
        };
        if let Some(c) = container {
            status.container = Some(ContainerStatus {
                container_id: c.id.clone(),
                pid: i32::try_from(c.pid).unwrap_or(0),
                exit_code: c.exit_code.and_then(|e| i32::try_from(e).ok()).unwrap_or(0),
            });
            status.health = c.health.as_str().to_string();
        }
        if status.state == self.status.state
            && status.message == self.status.message
            && status.health == self.status.health
        {
            return;
        }
        self.status = status.clone();
        let _ = self.reports.send(TaskStatusUpdate {
            task_id: self.task_id.clone(),
            status: Some(status),
        });
    }

    fn wants_stop(&self) -> bool {
        self.task.borrow().desired_state() >= TaskState::Shutdown
    }

    /// Runs `op` until it succeeds or fails for good; an unavailable engine is retried with
    /// backoff (returns None if the task was cancelled meanwhile).
    async fn retry<T, F, Fut>(
        &mut self,
        cancel: &CancellationToken,
        mut op: F,
    ) -> Option<Result<T, ExecError>>
    where
        F: FnMut(Arc<dyn Executor>, Task) -> Fut,
        Fut: std::future::Future<Output = Result<T, ExecError>>,
    {
        let mut backoff = Duration::from_millis(200);
        loop {
            match op(self.exec.clone(), self.current()).await {
                Err(ExecError::Unavailable(e)) => {
                    debug!(task = %self.task_id, error = %e, "engine unavailable; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return Some(other),
            }
        }
    }

    async fn stop(&mut self, cancel: &CancellationToken) {
        let task = self.current();
        let networks = task.spec.as_ref().is_some_and(|s| !s.networks.is_empty());
        let behind_mesh = orch_api::network::on_ingress(networks, task.endpoint.as_ref());
        if behind_mesh && self.state() == TaskState::Running {
            debug!(task = %self.task_id, "leaving the mesh before stopping");
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(MESH_DRAIN) => {}
            }
        }
        let _ = self
            .retry(cancel, |e, t| async move { e.stop(&t).await })
            .await;
        let info = self.exec.inspect(&self.current()).await.ok().flatten();
        self.report(TaskState::Shutdown, "shutdown", "", info.as_ref());
    }

    /// Adopts an existing container (agent restart): resume from what it is doing now.
    async fn adopt(&mut self, cancel: &CancellationToken) {
        let Some(Ok(info)) = self
            .retry(cancel, |e, t| async move { e.inspect(&t).await })
            .await
        else {
            return;
        };
        match info {
            // A task that has ended (as the managers know it) must not leave a container
            // running: one that does was started behind its runner's back (a start the
            // engine finished after the runner had stopped), and nothing else would ever
            // stop it while the task stays in its slot's history.
            Some(info) if info.running && self.state().is_terminal() => {
                debug!(task = %self.task_id, "an ended task's container runs; stopping it");
                let _ = self
                    .retry(cancel, |e, t| async move { e.stop(&t).await })
                    .await;
            }
            Some(info) if info.running && self.state() < TaskState::Running => {
                self.report(TaskState::Running, "started", "", Some(&info));
            }
            Some(info) if info.running => {}
            // An ended task's stopped container says nothing new: its end is history already
            // (reported again, a SHUTDOWN would become "failed: exit 137").
            Some(_) if self.state().is_terminal() => {}
            Some(info) if self.state() >= TaskState::Starting => self.exited(&info),
            Some(_) => {}
            None if self.state() >= TaskState::Starting && !self.state().is_terminal() => {
                self.report(
                    TaskState::Failed,
                    "failed",
                    "the task's container is gone",
                    None,
                );
            }
            None => {}
        }
    }

    fn exited(&mut self, info: &ContainerInfo) {
        match info.exit_code {
            Some(0) => self.report(TaskState::Complete, "finished", "", Some(info)),
            Some(code) => {
                let err = if info.error.is_empty() {
                    format!("task: non-zero exit ({code})")
                } else {
                    info.error.clone()
                };
                self.report(TaskState::Failed, "failed", &err, Some(info));
            }
            None => self.report(
                TaskState::Failed,
                "failed",
                "the container stopped without an exit code",
                Some(info),
            ),
        }
    }

    /// Waits for the task's container to exit, watching its health and the desired state.
    async fn supervise(&mut self, cancel: &CancellationToken) {
        let task = self.current();
        let exec = self.exec.clone();
        let waiting = async move { exec.wait(&task).await };
        tokio::pin!(waiting);
        let mut poll = tokio::time::interval(HEALTH_POLL);
        // A container without a healthcheck has no health to watch: one look is enough
        // (polling every running container would cost an engine call per task per period).
        let mut watch_health = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = self.task.changed() => {
                    if changed.is_err() || self.wants_stop() {
                        self.stop(cancel).await;
                        return;
                    }
                }
                result = &mut waiting => {
                    match result {
                        Ok(info) => self.exited(&info),
                        Err(ExecError::Unavailable(_)) => {
                            // Lost the engine while waiting: look again shortly.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            return;
                        }
                        Err(e) => self.report(TaskState::Failed, "failed", &e.to_string(), None),
                    }
                    return;
                }
                _ = poll.tick(), if watch_health => {
                    if let Ok(Some(info)) = self.exec.inspect(&self.current()).await {
                        if info.health == Health::None {
                            watch_health = false;
                        }
                        if info.health == Health::Unhealthy {
                            let _ = self.exec.stop(&self.current()).await;
                            self.report(TaskState::Failed, "failed", "task: container is unhealthy", Some(&info));
                            return;
                        }
                        if info.health.as_str() != self.status.health {
                            let state = self.state();
                            self.report(state, &self.status.message.clone(), "", Some(&info));
                        }
                    }
                }
            }
        }
    }

    async fn run(mut self, cancel: CancellationToken) {
        // Only a task the manager knows had a container can have one to adopt; a new task's
        // container, if a crash left one, is reused by `create`.
        if self.state() >= TaskState::Ready {
            self.adopt(&cancel).await;
        }
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let desired = self.task.borrow().desired_state();
            let flow = match next(self.state(), desired) {
                Step::Wait => self.wait_for_change(&cancel).await,
                Step::Stop => {
                    self.stop(&cancel).await;
                    Flow::Next
                }
                Step::Report(state, message) => {
                    self.report(state, message, "", None);
                    Flow::Next
                }
                Step::Prepare => self.prepare(&cancel).await,
                Step::Start => self.start(&cancel).await,
                Step::CheckStarted => self.check_started(&cancel).await,
                Step::Supervise => {
                    self.supervise(&cancel).await;
                    Flow::Next
                }
                Step::Unexpected => {
                    warn!(task = %self.task_id, state = ?self.state(), "unexpected task state");
                    Flow::Cancelled
                }
            };
            if flow == Flow::Cancelled {
                return;
            }
        }
    }

    /// Nothing to do until the task changes (an ended task: the worker removes its container
    /// when the task goes; a created task not yet wanted running).
    async fn wait_for_change(&mut self, cancel: &CancellationToken) -> Flow {
        tokio::select! {
            _ = cancel.cancelled() => Flow::Cancelled,
            changed = self.task.changed() => if changed.is_err() { Flow::Cancelled } else { Flow::Next },
        }
    }

    /// PREPARING: prepares (pulls) and creates the container: READY, or REJECTED/FAILED.
    async fn prepare(&mut self, cancel: &CancellationToken) -> Flow {
        let Some(prepared) = self
            .retry(cancel, |e, t| async move { e.prepare(&t).await })
            .await
        else {
            return Flow::Cancelled;
        };
        if let Err(e) = prepared {
            self.report(TaskState::Rejected, "rejected", &e.to_string(), None);
            return Flow::Next;
        }
        match self
            .retry(cancel, |e, t| async move { e.create(&t).await })
            .await
        {
            None => return Flow::Cancelled,
            Some(Ok(id)) => {
                let info = ContainerInfo {
                    id,
                    ..Default::default()
                };
                self.report(TaskState::Ready, "created", "", Some(&info));
            }
            Some(Err(ExecError::Rejected(e))) => {
                self.report(TaskState::Rejected, "rejected", &e, None)
            }
            Some(Err(e)) => self.report(TaskState::Failed, "failed", &e.to_string(), None),
        }
        Flow::Next
    }

    /// READY and wanted running: waits for a turn to start, then starts: STARTING or FAILED.
    async fn start(&mut self, cancel: &CancellationToken) -> Flow {
        // A start can wait long for its turn (starts queue per node). Should the
        // task stop being wanted meanwhile (a newer spec replaced it), the start
        // is dropped instead of starting a container only to stop it. A start
        // sent to the engine is not: the engine finishes it anyway, and a stop
        // sent before it has would find nothing running — the task would report
        // SHUTDOWN while its container went on to run.
        let mut desired = self.task.clone();
        let unwanted = async move {
            let _ = desired
                .wait_for(|t| t.desired_state() != TaskState::Running)
                .await;
        };
        let turn = tokio::select! {
            turn = self.exec.start_turn() => turn,
            () = unwanted => {
                debug!(task = %self.task_id, "no longer wanted running; start dropped");
                return Flow::Next;
            }
        };
        let started = self
            .retry(cancel, |e, t| async move { e.start(&t).await })
            .await;
        drop(turn);
        match started {
            None => return Flow::Cancelled,
            Some(Ok(())) => self.report(TaskState::Starting, "starting", "", None),
            Some(Err(e)) => self.report(TaskState::Failed, "failed", &e.to_string(), None),
        }
        Flow::Next
    }

    /// STARTING: RUNNING once the container runs (and is healthy, with a healthcheck).
    async fn check_started(&mut self, cancel: &CancellationToken) -> Flow {
        let Some(result) = self
            .retry(cancel, |e, t| async move { e.inspect(&t).await })
            .await
        else {
            return Flow::Cancelled;
        };
        match result {
            Ok(Some(info)) if !info.running => self.exited(&info),
            Ok(Some(info))
                if !has_healthcheck(&self.current()) || info.health == Health::Healthy =>
            {
                self.report(TaskState::Running, "started", "", Some(&info));
            }
            Ok(Some(info)) if info.health == Health::Unhealthy => {
                let _ = self.exec.stop(&self.current()).await;
                self.report(
                    TaskState::Failed,
                    "failed",
                    "task: container is unhealthy",
                    Some(&info),
                );
            }
            Ok(Some(info)) => {
                // Starting with a healthcheck: wait for it to pass.
                if info.health.as_str() != self.status.health {
                    self.report(TaskState::Starting, "starting", "", Some(&info));
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Flow::Cancelled,
                    _ = tokio::time::sleep(HEALTH_POLL) => {}
                    _ = self.task.changed() => {}
                }
            }
            Ok(None) => self.report(
                TaskState::Failed,
                "failed",
                "the task's container is gone",
                None,
            ),
            Err(e) => self.report(TaskState::Failed, "failed", &e.to_string(), None),
        }
        Flow::Next
    }
}

/// Whether the runner goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    /// The task was cancelled (the worker dropped it, or the agent stops).
    Cancelled,
}

/// What the runner does next (swarmkit's `exec.Do`): a pure function of the task's observed
/// and desired states; the runner carries the step out, and what it observes (the engine's
/// answers) becomes the next observed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing until the task changes.
    Wait,
    /// Stop the container (and report SHUTDOWN).
    Stop,
    /// Move the task to this state (no engine call).
    Report(TaskState, &'static str),
    /// Prepare and create the container.
    Prepare,
    /// Start the container.
    Start,
    /// See whether the started container runs (and is healthy).
    CheckStarted,
    /// Watch the running container until it exits or the task is stopped.
    Supervise,
    /// A state the agent never holds a task in.
    Unexpected,
}

pub fn next(state: TaskState, desired: TaskState) -> Step {
    if state.is_terminal() {
        return Step::Wait;
    }
    if desired >= TaskState::Shutdown {
        return Step::Stop;
    }
    match state {
        TaskState::New | TaskState::Pending | TaskState::Assigned => {
            Step::Report(TaskState::Accepted, "accepted")
        }
        TaskState::Accepted => Step::Report(TaskState::Preparing, "preparing"),
        TaskState::Preparing => Step::Prepare,
        TaskState::Ready if desired == TaskState::Running => Step::Start,
        TaskState::Ready => Step::Wait,
        TaskState::Starting => Step::CheckStarted,
        TaskState::Running => Step::Supervise,
        _ => Step::Unexpected,
    }
}

/// Starts a runner for `task`. Its status starts from what the manager last recorded (so an
/// adopted task resumes where it was); updates to the task (desired state) arrive on `task`.
pub fn spawn(
    exec: Arc<dyn Executor>,
    task: watch::Receiver<Task>,
    reports: mpsc::UnboundedSender<TaskStatusUpdate>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let initial = task.borrow().clone();
    let runner = Runner {
        exec,
        status: initial.status.clone().unwrap_or_default(),
        task_id: initial.id.clone(),
        task,
        reports,
    };
    let span = tracing::debug_span!("task", id = %initial.id, service = %initial.service_name, slot = initial.slot);
    tokio::spawn(tracing::Instrument::instrument(runner.run(cancel), span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    /// The runner's transition table: (observed, desired) -> what it does next.
    #[test]
    fn next_step_cases() {
        let cases = [
            (
                "a new task is accepted",
                New,
                Running,
                Step::Report(Accepted, "accepted"),
            ),
            (
                "as is an assigned one",
                Assigned,
                Running,
                Step::Report(Accepted, "accepted"),
            ),
            (
                "accepted: preparing",
                Accepted,
                Running,
                Step::Report(Preparing, "preparing"),
            ),
            (
                "preparing: pull and create",
                Preparing,
                Running,
                Step::Prepare,
            ),
            (
                "created and wanted running: start",
                Ready,
                Running,
                Step::Start,
            ),
            (
                "created, waiting for its slot (desired READY)",
                Ready,
                Ready,
                Step::Wait,
            ),
            (
                "started: see whether it runs",
                Starting,
                Running,
                Step::CheckStarted,
            ),
            ("running: supervise", Running, Running, Step::Supervise),
            ("told to stop while running", Running, Shutdown, Step::Stop),
            (
                "told to stop before it started",
                Preparing,
                Shutdown,
                Step::Stop,
            ),
            ("removal stops too", Ready, Remove, Step::Stop),
            ("ended: nothing to do", Complete, Running, Step::Wait),
            ("shut down: nothing to do", Shutdown, Shutdown, Step::Wait),
            (
                "failed and told to stop: nothing to do",
                Failed,
                Shutdown,
                Step::Wait,
            ),
            ("rejected: nothing to do", Rejected, Running, Step::Wait),
        ];
        for (name, observed, desired, want) in cases {
            assert_eq!(next(observed, desired), want, "{name}");
        }
    }
}
