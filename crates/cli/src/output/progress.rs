//! Waiting for a service to converge, showing progress as docker does:
//!
//! ```text
//! overall progress: 3 out of 3 tasks
//! 1/3: running   [==================================================>]
//! verify: Service <id> converged
//! ```
//!
//! On a terminal the block is redrawn in place; otherwise only lines that changed are printed.
//! The wait ends when the service has converged (all slots running its current spec, jobs
//! complete, nothing eligible for a global service), or fails with what is still missing when
//! `--timeout` runs out.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use orch_api::pb::control_client::ControlClient;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{GetServiceRequest, ListTasksRequest, Service, Task, TaskState};
use tonic::transport::Channel;

use crate::client::rpc;

const BAR: usize = 50;

/// docker's numbered progress: how far along `state` is, out of 9.
fn progress_of(state: i32) -> usize {
    match TaskState::try_from(state) {
        Ok(TaskState::New) => 1,
        Ok(TaskState::Pending) => 3,
        Ok(TaskState::Assigned) => 4,
        Ok(TaskState::Accepted) => 5,
        Ok(TaskState::Preparing) => 6,
        Ok(TaskState::Ready) => 7,
        Ok(TaskState::Starting) => 8,
        Ok(TaskState::Running) | Ok(TaskState::Complete) => 9,
        _ => 0,
    }
}

fn bar(state: i32) -> String {
    let done = progress_of(state) * BAR / 9;
    if done == 0 {
        return format!("[{}]", " ".repeat(BAR + 1));
    }
    format!("[{}>{}]", "=".repeat(done), " ".repeat(BAR - done))
}

fn row(label: &str, task: Option<&Task>) -> String {
    match task {
        None => format!("{label}: "),
        Some(t) => {
            let status = t.status.clone().unwrap_or_default();
            let word = TaskState::try_from(status.state)
                .map(|s| s.display().to_lowercase())
                .unwrap_or_default();
            if !status.err.is_empty() {
                format!("{label}: {}", status.err)
            } else {
                format!("{label}: {word:<9} {}", bar(status.state))
            }
        }
    }
}

/// Where the service stands: the lines to show, whether it has converged, and what is missing.
pub struct Progress {
    pub lines: Vec<String>,
    pub converged: bool,
    pub missing: Vec<String>,
}

/// Computes progress from a service and its tasks (pure, for tests).
pub fn assess(service: &Service, tasks: &[Task], hostnames: &BTreeMap<String, String>) -> Progress {
    let spec = service.spec.clone().unwrap_or_default();
    let current: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.desired_state() <= TaskState::Running)
        .collect();
    // Up to date: running the service's current task spec (a scale changes the service's
    // version but not its tasks').
    let running = |t: &&Task| t.observed_state() == TaskState::Running && t.spec == spec.task;
    let mut lines = Vec::new();
    let mut missing = Vec::new();
    match spec.mode {
        Some(Mode::Replicated(r)) => {
            let n = r.replicas as usize;
            // The newest current task of every slot; after a scale down the slots left can be
            // any numbers, so rows follow the slots in use, then placeholders.
            let mut by_slot: BTreeMap<u64, &Task> = BTreeMap::new();
            for t in &current {
                let newer = by_slot.get(&t.slot).is_none_or(|o| {
                    o.meta.as_ref().map_or(0, |m| m.created_at)
                        <= t.meta.as_ref().map_or(0, |m| m.created_at)
                });
                if newer {
                    by_slot.insert(t.slot, t);
                }
            }
            let slots: Vec<&Task> = by_slot.values().copied().collect();
            let done = slots.iter().filter(|t| running(t)).count();
            lines.push(format!(
                "overall progress: {} out of {n} tasks",
                done.min(n)
            ));
            for i in 0..n.max(slots.len()) {
                let label = format!("{}/{n}", i + 1);
                let t = slots.get(i).copied();
                if !t.is_some_and(|t| running(&t)) {
                    missing.push(row(&label, t));
                }
                if i < n {
                    lines.push(row(&label, t));
                }
            }
            let stopping = tasks
                .iter()
                .filter(|t| {
                    t.desired_state() > TaskState::Running
                        && t.observed_state() == TaskState::Running
                })
                .count();
            if stopping > 0 {
                missing.push(format!("{stopping} tasks still stopping"));
            }
            return Progress {
                lines,
                converged: done == n && slots.len() == n && stopping == 0,
                missing,
            };
        }
        Some(Mode::Global(_)) => {
            let done = current.iter().filter(|t| running(t)).count();
            lines.push(format!(
                "overall progress: {done} out of {} tasks",
                current.len()
            ));
            for t in &current {
                let label = hostnames
                    .get(&t.node_id)
                    .cloned()
                    .unwrap_or_else(|| orch_api::ids::short(&t.node_id).to_string());
                if !running(t) {
                    missing.push(row(&label, Some(t)));
                }
                lines.push(row(&label, Some(t)));
            }
            return Progress {
                lines,
                converged: done == current.len(),
                missing,
            };
        }
        Some(Mode::ReplicatedJob(j)) => {
            let iteration = service.job_status.as_ref().map_or(0, |s| s.job_iteration);
            let complete = tasks
                .iter()
                .filter(|t| {
                    t.job_iteration == iteration && t.observed_state() == TaskState::Complete
                })
                .count() as u64;
            let active = current
                .iter()
                .filter(|t| {
                    t.job_iteration == iteration && t.observed_state() < TaskState::Complete
                })
                .count();
            lines.push(format!(
                "job progress: {complete} out of {} complete",
                j.total_completions
            ));
            lines.push(format!(
                "active tasks: {active} out of {} tasks",
                j.max_concurrent
                    .min(j.total_completions.saturating_sub(complete))
            ));
            if complete < j.total_completions {
                missing.push(format!(
                    "{} of {} completions",
                    j.total_completions - complete,
                    j.total_completions
                ));
            }
            return Progress {
                lines,
                converged: complete >= j.total_completions,
                missing,
            };
        }
        Some(Mode::GlobalJob(_)) => {
            let iteration = service.job_status.as_ref().map_or(0, |s| s.job_iteration);
            let mine: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.job_iteration == iteration && t.desired_state() <= TaskState::Running)
                .collect();
            let complete = mine
                .iter()
                .filter(|t| t.observed_state() == TaskState::Complete)
                .count();
            lines.push(format!(
                "job progress: {complete} out of {} complete",
                mine.len()
            ));
            if complete < mine.len() {
                missing.push(format!("{} of {} nodes", mine.len() - complete, mine.len()));
            }
            return Progress {
                lines,
                converged: complete == mine.len(),
                missing,
            };
        }
        None => {}
    }
    Progress {
        lines,
        converged: true,
        missing,
    }
}

struct Screen {
    tty: bool,
    drawn: usize,
    last: Vec<String>,
}

impl Screen {
    fn show(&mut self, lines: &[String]) {
        if !self.tty && self.drawn == 0 && !self.last.is_empty() && self.last.len() != lines.len() {
            self.last.clear();
        }
        let mut out = std::io::stdout().lock();
        let written = (|| -> std::io::Result<()> {
            if self.tty {
                if self.drawn > 0 {
                    write!(out, "\x1b[{}A", self.drawn)?;
                }
                for l in lines {
                    writeln!(out, "\x1b[2K{l}")?;
                }
            } else {
                for (i, l) in lines.iter().enumerate() {
                    if self.last.get(i) != Some(l) {
                        writeln!(out, "{l}")?;
                    }
                }
            }
            out.flush()
        })();
        if let Err(e) = written {
            super::output_failed(&e);
        }
        if self.tty {
            self.drawn = lines.len();
        }
        self.last = lines.to_vec();
    }
}

/// What the caller asked for, which decides what counts as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// create or scale: all tasks running.
    Converge,
    /// update: the update completes; a pause or a rollback is a failure.
    Update,
    /// rollback: the rollback completes; a pause is a failure.
    Rollback,
}

/// Waits until `service_id` converges; `quiet` prints nothing but errors. A paused update, an
/// update that was rolled back, or a paused rollback ends the wait with an error naming why.
pub async fn wait(
    control: &mut ControlClient<Channel>,
    service_id: &str,
    timeout: Option<Duration>,
    quiet: bool,
    hostnames: &BTreeMap<String, String>,
    expect: Expect,
) -> Result<()> {
    use orch_api::pb::UpdateState;
    let started = Instant::now();
    let mut screen = Screen {
        tty: std::io::stdout().is_terminal(),
        drawn: 0,
        last: Vec::new(),
    };
    let mut announced = String::new();
    let mut rolled_back: Option<String> = None;
    loop {
        let service = control
            .get_service(GetServiceRequest {
                service: service_id.to_string(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let tasks = control
            .list_tasks(ListTasksRequest {
                service_ids: vec![service.id.clone()],
                ..Default::default()
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .tasks;
        let status = service.update_status.clone().unwrap_or_default();
        let state = UpdateState::try_from(status.state).unwrap_or(UpdateState::Unknown);
        let announce = match state {
            UpdateState::RollbackStarted | UpdateState::Paused | UpdateState::RollbackPaused => {
                format!("rollback: {}", status.message)
            }
            _ => String::new(),
        };
        if !quiet && !announce.is_empty() && announce != announced {
            let line = if state == UpdateState::Paused {
                format!("update: {}", status.message)
            } else {
                announce.clone()
            };
            screen.drawn = 0;
            outln!("{line}");
            announced = announce;
        }
        match (expect, state) {
            (_, UpdateState::Paused) => bail!("update paused: {}", status.message),
            (_, UpdateState::RollbackPaused) => bail!("rollback paused: {}", status.message),
            // Keep the first reason given: the rollback's own completion message says less.
            (Expect::Update, UpdateState::RollbackStarted | UpdateState::RollbackCompleted)
                if rolled_back.is_none() =>
            {
                rolled_back = Some(status.message.clone())
            }
            _ => {}
        }
        let progress = assess(&service, &tasks, hostnames);
        if !quiet {
            screen.show(&progress.lines);
        }
        let settled = !matches!(state, UpdateState::Updating | UpdateState::RollbackStarted);
        if progress.converged && settled {
            if let Some(why) = rolled_back {
                bail!("update rolled back: {why}");
            }
            if !quiet {
                outln!("verify: Service {} converged", service.id);
            }
            return Ok(());
        }
        if let Some(limit) = timeout {
            if started.elapsed() >= limit {
                bail!(
                    "service {} did not converge within {}; still waiting for:\n  {}",
                    service
                        .spec
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default(),
                    crate::output::format_duration(limit),
                    progress.missing.join("\n  ")
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
