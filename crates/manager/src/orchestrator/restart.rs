//! The restart policy: whether a task that stopped is replaced, and when.

use orch_api::pb::{RestartCondition, RestartPolicy, Task, TaskState};

use super::state;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Leave the slot's dead task as it is.
    No,
    /// Replace it at this time (unix nanos).
    At(i64),
}

/// `task` has stopped (terminal state) while still desired running; `earlier` are the other
/// tasks of its slot (its history).
pub fn decide(policy: &RestartPolicy, task: &Task, earlier: &[&Task], now: i64) -> Restart {
    let failed = state(task) != TaskState::Complete;
    let restart =
        match RestartCondition::try_from(policy.condition).unwrap_or(RestartCondition::Any) {
            RestartCondition::None => false,
            RestartCondition::OnFailure => failed,
            RestartCondition::Any => true,
        };
    if !restart {
        return Restart::No;
    }
    if policy.max_attempts > 0 {
        let since = if policy.window > 0 {
            now - policy.window
        } else {
            i64::MIN
        };
        let attempts = earlier
            .iter()
            .filter(|t| t.id != task.id && t.status.as_ref().is_some_and(|s| s.timestamp >= since))
            .count() as u64;
        if attempts >= policy.max_attempts {
            return Restart::No;
        }
    }
    let ended = task.status.as_ref().map_or(now, |s| s.timestamp);
    Restart::At(ended.saturating_add(policy.delay.max(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_api::pb::TaskStatus;

    const S: i64 = 1_000_000_000;

    fn task(id: &str, state: TaskState, at: i64) -> Task {
        Task {
            id: id.into(),
            status: Some(TaskStatus {
                state: state as i32,
                timestamp: at,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn policy(condition: RestartCondition, delay: i64, max: u64, window: i64) -> RestartPolicy {
        RestartPolicy {
            condition: condition as i32,
            delay,
            max_attempts: max,
            window,
        }
    }

    #[test]
    fn restart_policy_table() {
        let failed = task("t", TaskState::Failed, 100 * S);
        let done = task("t", TaskState::Complete, 100 * S);
        let old1 = task("a", TaskState::Failed, 50 * S);
        let old2 = task("b", TaskState::Failed, 90 * S);
        let cases: Vec<(&str, RestartPolicy, &Task, Vec<&Task>, Restart)> = vec![
            (
                "any restarts a failure after the delay",
                policy(RestartCondition::Any, 5 * S, 0, 0),
                &failed,
                vec![],
                Restart::At(105 * S),
            ),
            (
                "any restarts a completed task",
                policy(RestartCondition::Any, 0, 0, 0),
                &done,
                vec![],
                Restart::At(100 * S),
            ),
            (
                "on-failure restarts a failure",
                policy(RestartCondition::OnFailure, S, 0, 0),
                &failed,
                vec![],
                Restart::At(101 * S),
            ),
            (
                "on-failure leaves a completed task",
                policy(RestartCondition::OnFailure, S, 0, 0),
                &done,
                vec![],
                Restart::No,
            ),
            (
                "none never restarts",
                policy(RestartCondition::None, 0, 0, 0),
                &failed,
                vec![],
                Restart::No,
            ),
            (
                "max attempts reached",
                policy(RestartCondition::Any, 0, 2, 0),
                &failed,
                vec![&old1, &old2],
                Restart::No,
            ),
            (
                "max attempts not reached",
                policy(RestartCondition::Any, 0, 3, 0),
                &failed,
                vec![&old1, &old2],
                Restart::At(100 * S),
            ),
            (
                "window forgets old attempts",
                policy(RestartCondition::Any, 0, 2, 30 * S),
                &failed,
                vec![&old1, &old2],
                Restart::At(100 * S),
            ),
        ];
        for (name, p, t, earlier, want) in cases {
            assert_eq!(decide(&p, t, &earlier, 110 * S), want, "{name}");
        }
    }
}
