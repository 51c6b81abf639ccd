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

    fn wants_run(&self) -> bool {
        self.task.borrow().desired_state() == TaskState::Running
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
            let state = self.state();
            if state.is_terminal() {
                // Nothing more to do; the worker removes the container when the task goes.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = self.task.changed() => if changed.is_err() { return },
                }
                continue;
            }
            if self.wants_stop() {
                self.stop(&cancel).await;
                continue;
            }
            match state {
                TaskState::New | TaskState::Pending | TaskState::Assigned => {
                    self.report(TaskState::Accepted, "accepted", "", None)
                }
                TaskState::Accepted => self.report(TaskState::Preparing, "preparing", "", None),
                TaskState::Preparing => {
                    let Some(prepared) = self
                        .retry(&cancel, |e, t| async move { e.prepare(&t).await })
                        .await
                    else {
                        return;
                    };
                    if let Err(e) = prepared {
                        self.report(TaskState::Rejected, "rejected", &e.to_string(), None);
                        continue;
                    }
                    match self
                        .retry(&cancel, |e, t| async move { e.create(&t).await })
                        .await
                    {
                        None => return,
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
                        Some(Err(e)) => {
                            self.report(TaskState::Failed, "failed", &e.to_string(), None)
                        }
                    }
                }
                TaskState::Ready => {
                    if !self.wants_run() {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            changed = self.task.changed() => if changed.is_err() { return },
                        }
                        continue;
                    }
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
                            continue;
                        }
                    };
                    let started = self
                        .retry(&cancel, |e, t| async move { e.start(&t).await })
                        .await;
                    drop(turn);
                    match started {
                        None => return,
                        Some(Ok(())) => self.report(TaskState::Starting, "starting", "", None),
                        Some(Err(e)) => {
                            self.report(TaskState::Failed, "failed", &e.to_string(), None)
                        }
                    }
                }
                TaskState::Starting => {
                    let Some(result) = self
                        .retry(&cancel, |e, t| async move { e.inspect(&t).await })
                        .await
                    else {
                        return;
                    };
                    match result {
                        Ok(Some(info)) if !info.running => self.exited(&info),
                        Ok(Some(info))
                            if !has_healthcheck(&self.current())
                                || info.health == Health::Healthy =>
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
                                _ = cancel.cancelled() => return,
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
                }
                TaskState::Running => self.supervise(&cancel).await,
                other => {
                    warn!(task = %self.task_id, state = ?other, "unexpected task state");
                    return;
                }
            }
        }
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
