//! The worker: keeps one task runner per assigned task. A full assignment set replaces what
//! the node had (tasks missing from it are stopped and their containers removed); incremental
//! sets add, update and remove tasks. At start it adopts the containers this node's agent left
//! running, and removes those whose tasks the manager no longer assigns. Status reports from
//! the runners go to the session in batches, and all of them again on every new session.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::{Assignments, Task, TaskStatusUpdate};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::exec::Executor;
use crate::shared::TaskRegistry;
use crate::task;

/// How long a status report may wait for others to share its message.
const REPORT_LINGER: Duration = Duration::from_millis(10);

struct Running {
    task: watch::Sender<Task>,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

pub struct WorkerParams {
    pub exec: Arc<dyn Executor>,
    pub assignments: mpsc::Receiver<Assignments>,
    /// To the session (sent as batches).
    pub statuses: mpsc::Sender<Vec<TaskStatusUpdate>>,
    /// Bumped by the session on every new session: resend every status.
    pub session_generation: watch::Receiver<u64>,
    pub registry: TaskRegistry,
    /// When a manager was last heard from (fencing).
    pub contact: crate::shared::Contact,
}

struct Worker {
    registry: TaskRegistry,
    exec: Arc<dyn Executor>,
    running: HashMap<String, Running>,
    reports_tx: mpsc::UnboundedSender<TaskStatusUpdate>,
    /// Containers found at start whose task has not been assigned (yet).
    unclaimed: Option<Vec<(String, String)>>,
}

impl Worker {
    fn start(&mut self, task: Task) {
        self.registry.lock().insert(task.id.clone(), task.clone());
        let (tx, rx) = watch::channel(task.clone());
        let cancel = CancellationToken::new();
        let handle = task::spawn(
            self.exec.clone(),
            rx,
            self.reports_tx.clone(),
            cancel.clone(),
        );
        self.running.insert(
            task.id.clone(),
            Running {
                task: tx,
                cancel,
                handle,
            },
        );
    }

    fn upsert(&mut self, task: Task) {
        match self.running.get(&task.id) {
            Some(r) => {
                r.task.send_if_modified(|current| {
                    let changed =
                        current.desired_state != task.desired_state || current.spec != task.spec;
                    if changed {
                        // Keep the runner's own view of the status; take the manager's intent.
                        current.desired_state = task.desired_state;
                        current.spec = task.spec.clone();
                    }
                    changed
                });
            }
            None => self.start(task),
        }
    }

    /// The task is gone from the node's assignments: stop its runner and remove its container.
    fn remove(&mut self, task_id: &str) {
        let Some(r) = self.running.remove(task_id) else {
            return;
        };
        r.cancel.cancel();
        let task = r.task.borrow().clone();
        let exec = self.exec.clone();
        tokio::spawn(async move {
            let _ = r.handle.await;
            if let Err(e) = exec.stop(&task).await {
                debug!(task = %task.id, error = %e, "stop before removal");
            }
            match exec.remove(&task).await {
                Ok(()) => debug!(task = %task.id, "container removed"),
                Err(e) => {
                    warn!(task = %task.id, error = %e, "could not remove the task's container")
                }
            }
        });
    }

    /// No manager has been heard from for long enough that the managers will replace this
    /// node's tasks elsewhere: stop them first (SIGTERM, SIGKILL after half a heartbeat
    /// period), so no slot runs twice. The next full assignment set restarts what is still
    /// this node's.
    fn fence(&mut self, period: Duration) {
        if self.running.is_empty() {
            return;
        }
        warn!(
            tasks = self.running.len(),
            "no manager reachable: stopping this node's tasks before they are replaced elsewhere"
        );
        let grace = i64::try_from((period / 2).as_nanos()).unwrap_or(i64::MAX);
        for (_, r) in self.running.drain() {
            r.cancel.cancel();
            let mut task = r.task.borrow().clone();
            if let Some(c) = task.spec.as_mut().and_then(|s| s.container.as_mut()) {
                if !c.has_stop_grace_period || c.stop_grace_period > grace {
                    c.stop_grace_period = grace;
                    c.has_stop_grace_period = true;
                }
            }
            let exec = self.exec.clone();
            tokio::spawn(async move {
                let _ = r.handle.await;
                if let Err(e) = exec.stop(&task).await {
                    warn!(task = %task.id, error = %e, "could not stop a fenced task");
                }
            });
        }
        self.registry.lock().clear();
    }

    fn apply(&mut self, a: Assignments) {
        debug!(
            full = a.full,
            tasks = a.tasks.len(),
            removed = a.removed.len(),
            "assignments"
        );
        if a.full {
            let keep: HashSet<String> = a.tasks.iter().map(|t| t.id.clone()).collect();
            let gone: Vec<String> = self
                .running
                .keys()
                .filter(|id| !keep.contains(*id))
                .cloned()
                .collect();
            for id in gone {
                self.remove(&id);
            }
            // Containers from before a restart whose task is not assigned any more.
            if let Some(unclaimed) = self.unclaimed.take() {
                for (task_id, container_id) in unclaimed {
                    if !keep.contains(&task_id) {
                        info!(task = %task_id, container = %container_id, "removing a container of a task this node no longer has");
                        let exec = self.exec.clone();
                        tokio::spawn(async move {
                            if let Err(e) = exec.remove_container(&container_id).await {
                                warn!(container = %container_id, error = %e, "could not remove an orphaned container");
                            }
                        });
                    }
                }
            }
        }
        for t in a.tasks {
            self.upsert(t);
        }
        for id in a.removed {
            self.remove(&id);
        }
    }
}

/// Runs the worker until `shutdown`. Containers keep running when the agent stops.
pub async fn run(p: WorkerParams, shutdown: CancellationToken) {
    let WorkerParams {
        exec,
        mut assignments,
        statuses,
        mut session_generation,
        registry,
        contact,
    } = p;
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel::<TaskStatusUpdate>();
    // What this node's agent already runs, for adoption and clean-up.
    let unclaimed = loop {
        match exec.list().await {
            Ok(list) => {
                break list
                    .into_iter()
                    .map(|c| (c.task_id, c.id))
                    .collect::<Vec<_>>()
            }
            Err(e) => {
                debug!(error = %e, "cannot list containers yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    if !unclaimed.is_empty() {
        info!(
            containers = unclaimed.len(),
            "found containers from before; adopting those still assigned"
        );
    }
    let mut worker = Worker {
        registry,
        exec,
        running: HashMap::new(),
        reports_tx,
        unclaimed: Some(unclaimed),
    };
    let mut latest: HashMap<String, TaskStatusUpdate> = HashMap::new();
    let mut outbox: Vec<TaskStatusUpdate> = Vec::new();
    let mut fence_check = tokio::time::interval(Duration::from_millis(100));
    let mut fenced = false;
    loop {
        let linger = if outbox.is_empty() {
            Duration::from_secs(3600)
        } else {
            REPORT_LINGER
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            a = assignments.recv() => {
                let Some(a) = a else { break };
                worker.apply(a);
                latest.retain(|id, _| worker.running.contains_key(id));
            }
            report = reports_rx.recv() => {
                let Some(report) = report else { break };
                latest.insert(report.task_id.clone(), report.clone());
                outbox.push(report);
                while let Ok(more) = reports_rx.try_recv() {
                    latest.insert(more.task_id.clone(), more.clone());
                    outbox.push(more);
                }
            }
            _ = fence_check.tick() => {
                // Managers mark a node Down at the heartbeat deadline; fence half a period before.
                if let Some((silent, period)) = contact.silence() {
                    if silent > orch_api::heartbeat::fence_after(period) && !fenced {
                        worker.fence(period);
                        latest.clear();
                        outbox.clear();
                        fenced = true;
                    } else if silent < period {
                        fenced = false;
                    }
                }
            }
            changed = session_generation.changed() => {
                if changed.is_err() {
                    break;
                }
                // A new session: the manager may have missed reports; send where every task is.
                outbox = latest.values().cloned().collect();
            }
            _ = tokio::time::sleep(linger) => {
                // Never wait on the session here: it may itself be waiting to hand this loop
                // assignments, and neither would move again. A busy session gets the reports
                // with the next round.
                let batch = collapse(std::mem::take(&mut outbox));
                match statuses.try_send(batch) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(batch)) => outbox = batch,
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        }
    }
    for r in worker.running.values() {
        r.cancel.cancel();
    }
}

/// Keeps only each task's latest report (states only move forward, so the latest says it
/// all): a task that went ACCEPTED → … → RUNNING within one linger costs the manager one
/// status write, not five.
fn collapse(batch: Vec<TaskStatusUpdate>) -> Vec<TaskStatusUpdate> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<TaskStatusUpdate> = batch
        .into_iter()
        .rev()
        .filter(|u| seen.insert(u.task_id.clone()))
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::FakeExecutor;
    use orch_api::pb::{ContainerSpec, TaskSpec, TaskState, TaskStatus};

    fn task(id: &str, image: &str) -> Task {
        Task {
            id: id.into(),
            service_name: "svc".into(),
            slot: 1,
            node_id: "n".into(),
            desired_state: TaskState::Running as i32,
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: TaskState::Assigned as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    struct Harness {
        contact: crate::shared::Contact,
        exec: Arc<FakeExecutor>,
        assign: mpsc::Sender<Assignments>,
        statuses: mpsc::Receiver<Vec<TaskStatusUpdate>>,
        generation: watch::Sender<u64>,
        seen: HashMap<String, Vec<TaskState>>,
        _shutdown: tokio_util::sync::DropGuard,
    }

    impl Harness {
        fn new(exec: Arc<FakeExecutor>) -> Self {
            let (assign, assignments) = mpsc::channel(16);
            let (status_tx, statuses) = mpsc::channel(16);
            let (generation, session_generation) = watch::channel(0);
            let shutdown = CancellationToken::new();
            let contact = crate::shared::Contact::default();
            let params = WorkerParams {
                exec: exec.clone(),
                assignments,
                statuses: status_tx,
                session_generation,
                registry: Default::default(),
                contact: contact.clone(),
            };
            tokio::spawn(run(params, shutdown.clone()));
            Harness {
                contact,
                exec,
                assign,
                statuses,
                generation,
                seen: HashMap::new(),
                _shutdown: shutdown.drop_guard(),
            }
        }

        async fn send(&self, full: bool, tasks: Vec<Task>, removed: Vec<&str>) {
            let a = Assignments {
                full,
                tasks,
                removed: removed.into_iter().map(String::from).collect(),
                ..Default::default()
            };
            self.assign.send(a).await.expect("worker running");
        }

        /// Collects the reports sent so far.
        fn drain(&mut self) {
            while let Ok(batch) = self.statuses.try_recv() {
                for u in batch {
                    let s = TaskState::try_from(u.status.expect("status").state).expect("state");
                    self.seen.entry(u.task_id).or_default().push(s);
                }
            }
        }

        /// Collects reports until `task` reaches `state` (panics after 5 s).
        async fn until(&mut self, task: &str, state: TaskState) -> Vec<TaskState> {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                if self.seen.get(task).is_some_and(|s| s.contains(&state)) {
                    return self.seen[task].clone();
                }
                let batch = tokio::time::timeout_at(deadline, self.statuses.recv())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{task} never reached {state:?}: {:?}", self.seen.get(task))
                    })
                    .expect("worker alive");
                for u in batch {
                    let s = TaskState::try_from(u.status.expect("status").state).expect("state");
                    let list = self.seen.entry(u.task_id).or_default();
                    if list.last() != Some(&s) {
                        list.push(s);
                    }
                }
            }
        }
    }

    /// The worker used to wait for the session to take its reports while the session waited
    /// for the worker to take assignments: with both channels full, the node stopped acting
    /// on assignments (and, as the session also stopped, heartbeating).
    #[tokio::test]
    async fn regression_reports_nobody_reads_do_not_stop_assignments() {
        let h = Harness::new(FakeExecutor::new());
        // Nobody reads `h.statuses` (capacity 16): the session is busy elsewhere. One task at
        // a time, so every task's reports make batches of their own.
        let sent = async {
            for i in 0..40 {
                h.send(false, vec![task(&format!("t{i}"), "busybox")], vec![])
                    .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("the worker kept taking assignments");
        let exec = h.exec.clone();
        tokio::time::timeout(Duration::from_secs(10), async move {
            while exec.calls().start < 40 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("every assigned task started although no report was read");
    }

    #[tokio::test]
    async fn a_task_reports_its_states_in_order() {
        let mut h = Harness::new(FakeExecutor::new());
        h.send(true, vec![task("t1", "busybox")], vec![]).await;
        let states = h.until("t1", TaskState::Running).await;
        // Each batch carries a task's latest state only, so a fast start may skip some; what
        // is reported only moves forward, through the runner's states, and ends RUNNING.
        let path = [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Ready,
            TaskState::Starting,
            TaskState::Running,
        ];
        assert!(states.iter().all(|s| path.contains(s)), "{states:?}");
        assert!(states.windows(2).all(|w| w[0] < w[1]), "{states:?}");
        assert_eq!(states.last(), Some(&TaskState::Running));
    }

    #[tokio::test]
    async fn exit_codes_complete_or_fail_and_unpullable_images_reject() {
        let mut h = Harness::new(FakeExecutor::new());
        h.send(
            true,
            vec![
                task("ok", "exit:0"),
                task("bad", "exit:3"),
                task("nope", "missing:x"),
            ],
            vec![],
        )
        .await;
        h.until("ok", TaskState::Complete).await;
        h.until("bad", TaskState::Failed).await;
        let states = h.until("nope", TaskState::Rejected).await;
        assert!(!states.contains(&TaskState::Ready), "{states:?}");
        assert_eq!(h.exec.calls().start, 2);
    }

    #[tokio::test]
    async fn unhealthy_containers_fail_healthy_ones_run() {
        let mut h = Harness::new(FakeExecutor::new());
        let mut sick = task("sick", "unhealthy");
        let mut well = task("well", "healthy");
        for t in [&mut sick, &mut well] {
            if let Some(c) = t.spec.as_mut().and_then(|s| s.container.as_mut()) {
                c.healthcheck = Some(orch_api::pb::HealthConfig {
                    test: vec!["CMD-SHELL".into(), "true".into()],
                    ..Default::default()
                });
            }
        }
        h.send(true, vec![sick, well], vec![]).await;
        h.until("sick", TaskState::Failed).await;
        h.until("well", TaskState::Running).await;
    }

    #[tokio::test]
    async fn desired_shutdown_stops_and_removal_removes_the_container() {
        let mut h = Harness::new(FakeExecutor::new());
        let t = task("t1", "busybox");
        h.send(true, vec![t.clone()], vec![]).await;
        h.until("t1", TaskState::Running).await;
        let mut stop = t.clone();
        stop.desired_state = TaskState::Shutdown as i32;
        h.send(false, vec![stop], vec![]).await;
        h.until("t1", TaskState::Shutdown).await;
        assert!(
            h.exec.container("t1").is_some_and(|c| !c.running),
            "stopped, kept as history"
        );
        h.send(false, vec![], vec!["t1"]).await;
        let exec = h.exec.clone();
        tokio::time::timeout(Duration::from_secs(5), async move {
            while exec.container("t1").is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("container removed");
    }

    /// Under churn a task's start could wait behind others for the engine; if a newer spec
    /// replaced the task meanwhile, the start used to go ahead and the container was stopped
    /// right after, doubling the engine's work when it was busiest.
    #[tokio::test]
    async fn regression_a_start_waiting_for_the_engine_is_dropped_when_the_task_is_shut_down() {
        let mut h = Harness::new(FakeExecutor::new());
        h.exec.hold_starts(true);
        let t = task("t1", "busybox");
        h.send(true, vec![t.clone()], vec![]).await;
        h.until("t1", TaskState::Ready).await;
        let mut stop = t.clone();
        stop.desired_state = TaskState::Shutdown as i32;
        h.send(false, vec![stop], vec![]).await;
        let states = h.until("t1", TaskState::Shutdown).await;
        assert!(!states.contains(&TaskState::Starting), "{states:?}");
        h.exec.hold_starts(false);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            h.exec.calls().start,
            0,
            "the dropped start never reached the engine"
        );
        assert!(h.exec.container("t1").is_some_and(|c| !c.running));
    }

    /// A start the engine had already taken was dropped like a queued one when a newer spec
    /// replaced the task: the stop that followed found nothing running yet, the task reported
    /// SHUTDOWN, and the engine then finished the start. The container of the old spec ran
    /// on, its task kept as the slot's history, with nothing left to stop it (likely behind
    /// agent-restart-during-update's service that converged with one container too many).
    #[tokio::test]
    async fn regression_a_start_the_engine_has_taken_is_not_dropped() {
        let mut h = Harness::new(FakeExecutor::new());
        h.exec.hold_engine_starts(true);
        let t = task("t1", "busybox");
        h.send(true, vec![t.clone()], vec![]).await;
        let exec = h.exec.clone();
        tokio::time::timeout(Duration::from_secs(5), async move {
            while exec.calls().start == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the start reached the engine");
        let mut stop = t.clone();
        stop.desired_state = TaskState::Shutdown as i32;
        h.send(false, vec![stop], vec![]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The engine finishes the start, whether or not the runner still waits for it.
        h.exec.hold_engine_starts(false);
        h.until("t1", TaskState::Shutdown).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            h.exec.container("t1").is_some_and(|c| !c.running),
            "the task reported SHUTDOWN while its container runs: {:?}",
            h.exec.container("t1")
        );
    }

    #[tokio::test]
    async fn a_restarted_agent_adopts_running_containers_and_removes_strays() {
        let exec = FakeExecutor::new();
        let mut kept = task("kept", "busybox");
        kept.status = Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        });
        exec.add_existing(&kept, true);
        exec.add_existing(&task("stray", "busybox"), true);
        let mut h = Harness::new(exec.clone());
        h.send(true, vec![kept], vec![]).await;
        // Adoption reports nothing new for a running container, and creates nothing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(exec.calls().create, 0);
        assert_eq!(exec.calls().start, 0);
        assert!(exec.container("kept").is_some_and(|c| c.running));
        assert!(
            exec.container("stray").is_none(),
            "the stray container was removed"
        );
        // The adopted task is still supervised: its exit is reported.
        exec.exit("kept", 2);
        h.until("kept", TaskState::Failed).await;
    }

    /// A task the managers have as SHUTDOWN, whose container the engine still runs.
    fn ended_with_a_running_container(exec: &FakeExecutor) -> Task {
        let mut ended = task("ended", "busybox");
        ended.desired_state = TaskState::Shutdown as i32;
        ended.status = Some(TaskStatus {
            state: TaskState::Shutdown as i32,
            ..Default::default()
        });
        exec.add_existing(&ended, true);
        ended
    }

    /// An agent restart did not heal an orphan: a task the managers know as ended whose
    /// container was running (a start the engine finished late) was adopted as it was and left
    /// running for good. A restarted agent stops the container of every ended task it is given.
    #[tokio::test]
    async fn regression_a_restarted_agent_left_an_ended_tasks_container_running() {
        let exec = FakeExecutor::new();
        let ended = ended_with_a_running_container(&exec);
        let h = Harness::new(exec.clone());
        h.send(true, vec![ended], vec![]).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while exec.container("ended").is_some_and(|c| c.running) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the ended task's container was stopped");
        assert_eq!(exec.calls().start, 0, "nothing was started");
    }

    /// Found by a user-style run (a leader SIGKILLed mid update, its node restarted): tasks the
    /// managers had as SHUTDOWN were reported again as FAILED ("non-zero exit (137)") by the
    /// restarted agent, which took every stopped container of a started task for a new exit;
    /// a restart rewrote the service's history.
    #[tokio::test]
    async fn regression_a_restarted_agent_rewrote_an_ended_tasks_state() {
        let exec = FakeExecutor::new();
        let ended = ended_with_a_running_container(&exec);
        exec.exit("ended", 137);
        let mut h = Harness::new(exec.clone());
        h.send(true, vec![ended], vec![]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.drain();
        assert!(
            h.seen.get("ended").is_none_or(|s| s.is_empty()),
            "an ended task is reported as it was: {:?}",
            h.seen.get("ended")
        );
    }

    #[tokio::test]
    async fn losing_every_manager_fences_the_tasks_and_a_new_assignment_restarts_them() {
        let mut h = Harness::new(FakeExecutor::new());
        h.contact.touch(Duration::from_millis(100));
        let t = task("t1", "busybox");
        h.send(true, vec![t.clone()], vec![]).await;
        h.until("t1", TaskState::Running).await;
        // Heard from managers a moment ago: nothing happens.
        h.contact.touch(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(h.exec.container("t1").is_some_and(|c| c.running));
        // Silence for more than two periods: the container is stopped, quickly.
        let exec = h.exec.clone();
        tokio::time::timeout(Duration::from_secs(3), async move {
            while exec.container("t1").is_some_and(|c| c.running) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("fenced");
        // The managers come back with the same assignment: the task is looked at again
        // (its container was killed, so it fails and the orchestrator decides).
        h.contact.touch(Duration::from_secs(60));
        let mut running = t.clone();
        running.status = Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        });
        h.send(true, vec![running], vec![]).await;
        h.until("t1", TaskState::Failed).await;
    }

    #[tokio::test]
    async fn a_new_session_gets_every_status_again() {
        let mut h = Harness::new(FakeExecutor::new());
        h.send(true, vec![task("t1", "busybox")], vec![]).await;
        h.until("t1", TaskState::Running).await;
        h.generation.send_replace(1);
        let batch = tokio::time::timeout(Duration::from_secs(2), h.statuses.recv())
            .await
            .expect("resent")
            .expect("alive");
        assert!(batch.iter().any(|u| u.task_id == "t1"
            && u.status
                .as_ref()
                .is_some_and(|s| s.state() == TaskState::Running)));
    }

    #[tokio::test]
    async fn an_engine_outage_delays_but_does_not_fail_tasks() {
        let exec = FakeExecutor::new();
        let mut h = Harness::new(exec.clone());
        // Let the worker list containers first, then take the engine away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        *exec.down.lock() = true;
        h.send(true, vec![task("t1", "busybox")], vec![]).await;
        h.until("t1", TaskState::Preparing).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        *exec.down.lock() = false;
        let states = h.until("t1", TaskState::Running).await;
        assert!(
            !states.contains(&TaskState::Failed) && !states.contains(&TaskState::Rejected),
            "{states:?}"
        );
    }

    #[test]
    fn a_batch_keeps_each_tasks_latest_report_in_order() {
        let update = |id: &str, state: TaskState| TaskStatusUpdate {
            task_id: id.into(),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
        };
        let batch = vec![
            update("a", TaskState::Accepted),
            update("b", TaskState::Accepted),
            update("a", TaskState::Running),
            update("c", TaskState::Preparing),
            update("b", TaskState::Starting),
        ];
        let got: Vec<(String, i32)> = collapse(batch)
            .into_iter()
            .map(|u| (u.task_id, u.status.expect("a status").state))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), TaskState::Running as i32),
                ("c".to_string(), TaskState::Preparing as i32),
                ("b".to_string(), TaskState::Starting as i32),
            ]
        );
    }
}
