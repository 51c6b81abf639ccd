//! The orchestrators (leader only): for every service, compare the tasks the store holds with
//! what the spec asks for, and change tasks to close the gap. Each mode's reconcile is a pure
//! function of the service, its tasks, the nodes and `now`; this module runs them when the
//! store changes (or a restart delay expires) and commits their changes in batches.

pub mod global;
pub mod job;
pub mod reaper;
pub mod replicated;
pub mod restart;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timer_tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    /// Found by the chaos suite (agent restart during a rolling update): a service's wake-up
    /// (its update's monitor period running out) was forgotten by the next pass, which only
    /// looked at other services that changed; under a steady stream of changes the periodic
    /// pass never came either, and the update stalled for good.
    #[test]
    fn regression_update_wake_lost_under_steady_changes() {
        let mut timers = Timers::new(0);
        assert!(timers.begin(0, true), "the first pass looks at everything");
        timers.wake(2 * S); // the rolling service wants another look at t=2s
                            // Other services change every 100ms; each partial pass sees no wake-up of its own.
        let mut full_at = None;
        for tick in 1..100 {
            let now = tick * S / 10;
            if timers.begin(now, false) {
                full_at = Some(now);
                break;
            }
            assert!(timers.sleep(now) <= Duration::from_secs(2));
        }
        assert_eq!(full_at, Some(2 * S), "the wake-up at 2s was kept");
    }

    #[test]
    fn the_periodic_full_pass_comes_under_steady_changes() {
        let mut timers = Timers::new(0);
        assert!(timers.begin(0, true));
        let full = (1..100)
            .map(|tick| tick * S / 10)
            .find(|&now| timers.begin(now, false));
        assert_eq!(full, Some(FULL_PASS_EVERY));
        assert_eq!(
            timers.sleep(FULL_PASS_EVERY),
            Duration::from_nanos(FULL_PASS_EVERY as u64)
        );
    }

    /// The loop reads the injected clock: with tokio's time paused, a failed task's
    /// replacement comes exactly when its restart delay has passed, not before.
    #[tokio::test(start_paused = true)]
    async fn the_loop_replaces_a_failed_task_when_its_restart_delay_ends() {
        use crate::handles::testing::{Applier, TokioClock};
        use crate::testkit::*;
        use orch_api::pb::{RestartCondition, TaskState};
        let clock = TokioClock::new();
        let failed_at = clock.now_nanos();
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let web = restart_policy(replicated("web", 1), RestartCondition::Any, 10 * S);
        let failed = task(
            "t1",
            &web,
            1,
            "n1",
            TaskState::Failed,
            TaskState::Running,
            failed_at,
        );
        applier
            .propose(vec![
                Action::CreateNode(node("n1")),
                Action::CreateService(web),
                Action::CreateTask(failed),
            ])
            .await
            .expect("set up the store");
        let token = CancellationToken::new();
        tokio::spawn(run(store.clone(), applier, clock, token.clone()));
        let replacements = || {
            store
                .view()
                .tasks_of_service("web")
                .filter(|t| t.id != "t1" && t.slot == 1)
                .count()
        };
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert_eq!(replacements(), 0, "replaced before the delay ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(replacements(), 1, "not replaced once the delay ended");
        token.cancel();
    }

    /// Which services a burst of task events puts in the next partial pass.
    #[test]
    fn agents_progress_reports_do_not_reconcile_the_service() {
        use crate::testkit::*;
        use orch_api::pb::UpdateStatus;
        let steady = replicated("steady", 2);
        let mut rolling = replicated("rolling", 2);
        rolling.update_status = Some(UpdateStatus {
            state: orch_api::pb::UpdateState::Updating as i32,
            ..Default::default()
        });
        let stopped = replicated("stopped", 2);
        let moved = replicated("moved", 2);
        let drained = with_availability(node("n2"), NodeAvailability::Drain);
        let v = view(
            vec![node("n1"), drained],
            vec![
                steady.clone(),
                rolling.clone(),
                stopped.clone(),
                moved.clone(),
            ],
            vec![],
        );
        let at = |t: &Task, state: TaskState| {
            let mut t = t.clone();
            t.status.get_or_insert_with(Default::default).state = state as i32;
            t
        };
        let update = |old: Task, new: Task| Event::Updated {
            old: Object::Task(Arc::new(old)),
            new: Object::Task(Arc::new(new)),
        };
        let s1 = task(
            "s1",
            &steady,
            1,
            "n1",
            TaskState::Starting,
            TaskState::Running,
            0,
        );
        let r1 = task(
            "r1",
            &rolling,
            1,
            "n1",
            TaskState::Starting,
            TaskState::Running,
            0,
        );
        let x1 = running("x1", &stopped, 1, "n1");
        let m1 = pending("m1", &moved, 1);
        let mut m1_on_n2 = at(&m1, TaskState::Assigned);
        m1_on_n2.node_id = "n2".into();
        let m2 = pending("m2", &moved, 2);
        let mut m2_on_n1 = at(&m2, TaskState::Assigned);
        m2_on_n1.node_id = "n1".into();

        let mut dirty = Dirty::default();
        dirty.note(&[
            update(s1.clone(), at(&s1, TaskState::Running)),
            update(r1.clone(), at(&r1, TaskState::Running)),
            update(x1.clone(), at(&x1, TaskState::Failed)),
            update(m2, m2_on_n1),
        ]);
        let names = |services: Vec<Arc<Service>>| -> Vec<String> {
            services.iter().map(|s| s.id.clone()).collect()
        };
        assert_eq!(names(dirty.services(&v)), ["rolling", "stopped"]);
        dirty.clear();
        dirty.note(&[update(m1, m1_on_n2)]);
        assert_eq!(
            names(dirty.services(&v)),
            ["moved"],
            "a task assigned to a node drained meanwhile is looked at"
        );
        dirty.clear();
        dirty.note(&[Event::Created(Object::Node(Arc::new(node("n3"))))]);
        assert!(dirty.everything, "node changes look at every service");
    }
}
pub mod update;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::service_spec::Mode;
use orch_api::pb::store_action::Action;
use orch_api::pb::{Node, NodeAvailability, NodeState, Service, Task, TaskState, TaskStatus};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::handles::{Clock, Proposer};
use crate::state::store::{Event, Object, Store, Tables};

/// A change to one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(Task),
    Update(Task),
    Delete(String),
}

/// What reconciling one service decided.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decision {
    pub changes: Vec<Change>,
    /// The service itself changed (its update status, or its spec on an automatic rollback).
    pub service: Option<Service>,
    /// When to look again (a restart delay running out), unix nanos.
    pub wake_at: Option<i64>,
}

impl Decision {
    pub fn wake(&mut self, at: i64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// Tasks the service still wants (desired state running or earlier).
pub fn is_current(t: &Task) -> bool {
    t.desired_state() <= TaskState::Running
}

/// The task's observed state (NEW before any report).
pub fn state(t: &Task) -> TaskState {
    t.status.as_ref().map_or(TaskState::New, |s| s.state())
}

pub fn is_terminal(t: &Task) -> bool {
    state(t) >= TaskState::Complete
}

/// The task may still have a container running: an agent took it, has not reported it
/// stopped, and its node is up. (A Down node's agent fences its own tasks before the node is
/// marked Down, and a removed node's tasks are gone with it.)
pub fn may_be_running(t: &Task, view: &Tables) -> bool {
    let s = state(t);
    s >= TaskState::Assigned
        && s < TaskState::Complete
        && !t.node_id.is_empty()
        && view
            .node(&t.node_id)
            .is_some_and(|n| node_fit(Some(n)) != NodeFit::Down)
}

/// The same task with a new desired state.
pub fn with_desired(t: &Task, desired: TaskState) -> Task {
    let mut t = t.clone();
    t.desired_state = desired as i32;
    t
}

/// A new task of `service` for `slot` (or for `node_id`, global services), waiting for the
/// scheduler.
pub fn new_task(service: &Service, slot: u64, node_id: &str, now: i64) -> Task {
    let spec = service.spec.clone().unwrap_or_default();
    Task {
        id: orch_api::ids::new_id(),
        service_id: service.id.clone(),
        slot,
        node_id: node_id.to_string(),
        spec: spec.task.clone(),
        spec_version: service.spec_version,
        service_name: spec.name.clone(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            timestamp: now,
            state: TaskState::Pending as i32,
            message: "pending task scheduling".into(),
            ..Default::default()
        }),
        job_iteration: service.job_status.as_ref().map_or(0, |j| j.job_iteration),
        service_labels: spec.labels.clone(),
        endpoint: spec.endpoint.clone(),
        ..Default::default()
    }
}

/// How a node stands for running tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFit {
    /// Ready and active: keeps tasks and takes new ones.
    Active,
    /// Ready and paused: keeps its tasks, takes no new ones.
    Paused,
    /// Down (or not yet reporting): its tasks must be replaced elsewhere.
    Down,
    /// Drained or gone: its tasks must stop.
    Drained,
}

pub fn node_fit(node: Option<&Node>) -> NodeFit {
    let Some(node) = node else {
        return NodeFit::Drained;
    };
    let availability = node
        .spec
        .as_ref()
        .map_or(NodeAvailability::Active, |s| s.availability());
    if availability == NodeAvailability::Drain {
        return NodeFit::Drained;
    }
    let state = node
        .status
        .as_ref()
        .map_or(NodeState::Unknown, |s| s.state());
    if state == NodeState::Down {
        return NodeFit::Down;
    }
    if availability == NodeAvailability::Pause {
        NodeFit::Paused
    } else {
        NodeFit::Active
    }
}

/// Reconciles one service (any mode) with its tasks.
pub fn reconcile(
    service: &Service,
    tasks: &[Arc<Task>],
    view: &Tables,
    history_limit: usize,
    now: i64,
) -> Decision {
    let mut decision = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(Mode::Replicated(r)) => replicated::reconcile(service, r.replicas, tasks, view, now),
        Some(Mode::Global(_)) => global::reconcile(service, tasks, view, now, false),
        Some(Mode::ReplicatedJob(j)) => job::reconcile_replicated(service, j, tasks, view, now),
        Some(Mode::GlobalJob(_)) => global::reconcile(service, tasks, view, now, true),
        None => Decision::default(),
    };
    let global = matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::Global(_) | Mode::GlobalJob(_))
    );
    if update::in_progress(service) {
        decision.service = update::step(service, tasks, view, now, &mut decision);
    }
    decision
        .changes
        .extend(reaper::reap_history(tasks, global, history_limit, view));
    dedupe(&mut decision.changes);
    decision
}

/// One update per task per decision: two updates of one task in a batch would conflict and
/// the batch would be dropped, every round. Where two parts of the orchestrator both change a
/// task, the furthest desired state wins (desired states only move forward).
fn dedupe(changes: &mut Vec<Change>) {
    let mut furthest: std::collections::HashMap<String, i32> = Default::default();
    for c in changes.iter() {
        if let Change::Update(t) = c {
            let d = furthest.entry(t.id.clone()).or_insert(t.desired_state);
            *d = (*d).max(t.desired_state);
        }
    }
    changes.retain(|c| match c {
        Change::Update(t) => {
            let keep = furthest.get(&t.id) == Some(&t.desired_state);
            if keep {
                furthest.remove(&t.id);
            }
            keep
        }
        _ => true,
    });
}

fn history_limit(view: &Tables) -> usize {
    view.cluster()
        .and_then(|c| c.spec.as_ref())
        .map_or(5, |s| s.task_history_retention_limit.max(0) as usize)
}

/// Every service is looked at again at least this often, even if nothing changed.
const FULL_PASS_EVERY: i64 = 5_000_000_000;

/// When the orchestrator loop must look at every service: a service's wake-up time (a restart
/// delay, an update's monitor or delay running out) or the periodic full pass. Wake-ups
/// outlive the partial passes in between, which only look at the services that changed.
#[derive(Debug, Clone, Copy)]
struct Timers {
    wake: Option<i64>,
    next_full: i64,
}

impl Timers {
    fn new(now: i64) -> Self {
        Timers {
            wake: None,
            next_full: now,
        }
    }

    /// Whether this pass must look at every service; if so, the timers start over.
    fn begin(&mut self, now: i64, everything: bool) -> bool {
        let full = everything || self.due(now);
        if full {
            self.wake = None;
            self.next_full = now.saturating_add(FULL_PASS_EVERY);
        }
        full
    }

    fn due(&self, now: i64) -> bool {
        self.next_full <= now || self.wake.is_some_and(|w| w <= now)
    }

    fn wake(&mut self, at: i64) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// How long until the next full pass.
    fn sleep(&self, now: i64) -> Duration {
        let at = self.wake.map_or(self.next_full, |w| w.min(self.next_full));
        Duration::from_nanos(at.saturating_sub(now).max(0) as u64)
    }
}

/// The orchestrator loop: reconciles the services the store's changes touched (all of them
/// when nodes change), plus orphaned tasks, and commits the changes in batches.
pub async fn run<P: Proposer + ?Sized, C: Clock>(
    store: Arc<Store>,
    proposer: Arc<P>,
    clock: C,
    token: CancellationToken,
) {
    let (_, mut rx) = store.view_and_watch();
    let mut dirty = Dirty {
        everything: true,
        ..Default::default()
    };
    let mut timers = Timers::new(clock.now_nanos());
    loop {
        let view = store.view();
        let now = clock.now_nanos();
        let services: Vec<Arc<Service>> = if timers.begin(now, dirty.everything) {
            view.services().cloned().collect()
        } else {
            dirty.services(&view)
        };
        dirty.clear();
        let limit = history_limit(&view);
        let mut actions = Vec::new();
        for service in &services {
            let tasks: Vec<Arc<Task>> = view.tasks_of_service(&service.id).cloned().collect();
            let decision = reconcile(service, &tasks, &view, limit, now);
            if let Some(at) = decision.wake_at {
                timers.wake(at);
            }
            if let Some(s) = decision.service {
                actions.push(Action::UpdateService(s));
            }
            actions.extend(decision.changes.into_iter().map(|c| match c {
                Change::Create(t) => Action::CreateTask(t),
                Change::Update(t) => Action::UpdateTask(t),
                Change::Delete(id) => Action::DeleteTask(id),
            }));
        }
        actions.extend(
            reaper::reap_orphans(&view)
                .into_iter()
                .map(Action::DeleteTask),
        );
        actions.extend(crate::data::stale_versions(&view));
        commit(proposer.as_ref(), actions).await;

        let sleep = timers.sleep(clock.now_nanos());
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(sleep) => dirty.everything = true,
            change = rx.recv() => {
                match change {
                    Ok(change) => dirty.note(&change.events),
                    Err(RecvError::Lagged(_)) => dirty.everything = true,
                    Err(RecvError::Closed) => return,
                }
                // Take the rest of the burst.
                loop {
                    match rx.try_recv() {
                        Ok(change) => dirty.note(&change.events),
                        Err(TryRecvError::Lagged(_)) => dirty.everything = true,
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

/// What a task's change asks of the orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Interest {
    /// Nothing it decides on changed (an agent's progress report, say).
    None,
    /// The task started running: only a rolling update (its monitor) cares.
    IfUpdating,
    /// It moved to a node: the service is looked at if that node cannot run it (a drain
    /// committed between the scheduler's view and its assignment).
    IfNodeUnfit,
    /// Anything the reconcilers decide on: created, deleted, stopped, told to change.
    Always,
}

fn task_interest(old: &Task, new: &Task) -> Interest {
    if old.desired_state != new.desired_state
        || old.spec != new.spec
        || is_terminal(old) != is_terminal(new)
        || old.slot != new.slot
    {
        Interest::Always
    } else if old.node_id != new.node_id {
        Interest::IfNodeUnfit
    } else if state(new) == TaskState::Running && state(old) != TaskState::Running {
        Interest::IfUpdating
    } else {
        Interest::None
    }
}

/// The services a burst of store changes touched, and how much.
#[derive(Default)]
struct Dirty {
    services: BTreeMap<String, Interest>,
    /// (service, node) of tasks that moved to a node.
    moved: Vec<(String, String)>,
    everything: bool,
}

impl Dirty {
    fn note(&mut self, events: &[Event]) {
        if events.is_empty() {
            // A snapshot was installed: anything may have changed.
            self.everything = true;
        }
        for event in events {
            let (service_id, interest) = match event {
                Event::Updated {
                    old: Object::Task(old),
                    new: Object::Task(new),
                } => {
                    let interest = task_interest(old, new);
                    if interest == Interest::IfNodeUnfit {
                        self.moved
                            .push((new.service_id.clone(), new.node_id.clone()));
                    }
                    (&new.service_id, interest)
                }
                _ => match event.object() {
                    Object::Service(s) => (&s.id, Interest::Always),
                    Object::Task(t) => (&t.service_id, Interest::Always),
                    Object::Node(_) | Object::Cluster(_) => {
                        self.everything = true;
                        continue;
                    }
                    // Secrets and configs change no task by themselves (a rotation updates
                    // the services that use them).
                    Object::Data(_) | Object::Network(_) => continue,
                },
            };
            if interest == Interest::None {
                continue;
            }
            let e = self
                .services
                .entry(service_id.clone())
                .or_insert(Interest::None);
            *e = (*e).max(interest);
        }
    }

    /// The services of a partial pass.
    fn services(&mut self, view: &Tables) -> Vec<Arc<Service>> {
        for (service_id, node_id) in self.moved.drain(..) {
            if node_fit(view.node(&node_id).map(|n| n.as_ref())) != NodeFit::Active {
                self.services.insert(service_id, Interest::Always);
            }
        }
        std::mem::take(&mut self.services)
            .into_iter()
            .filter_map(|(id, interest)| {
                let service = view.service(&id)?;
                let wanted = match interest {
                    Interest::Always => true,
                    Interest::IfUpdating => update::in_progress(service),
                    Interest::IfNodeUnfit | Interest::None => false,
                };
                wanted.then(|| service.clone())
            })
            .collect()
    }

    fn clear(&mut self) {
        self.services.clear();
        self.moved.clear();
        self.everything = false;
    }
}

/// Commits actions in batches; a batch that conflicts is dropped (the next round, from a
/// fresh view, decides again).
pub async fn commit<P: Proposer + ?Sized>(proposer: &P, actions: Vec<Action>) {
    let mut rest = actions;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(crate::handles::MAX_ACTIONS));
        if let Err(e) = proposer.propose(rest).await {
            if crate::handles::conflict::is_conflict(&e) {
                debug!("orchestrator batch conflicted; deciding again");
            } else {
                warn!(error = %e, "orchestrator could not commit");
                return;
            }
        }
        rest = tail;
    }
}
