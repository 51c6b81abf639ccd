//! The Docker Engine API's names of orch's enums (lower case, as moby's JSON writes them):
//! one table per enum for `orch inspect`, `--format` and the Engine API alike.

use crate::pb::{NodeAvailability, NodeRole, NodeState, Reachability, TaskState, UpdateState};

pub fn role(r: NodeRole) -> &'static str {
    match r {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

pub fn availability(a: NodeAvailability) -> &'static str {
    match a {
        NodeAvailability::Active => "active",
        NodeAvailability::Pause => "pause",
        NodeAvailability::Drain => "drain",
    }
}

pub fn node_state(s: NodeState) -> &'static str {
    match s {
        NodeState::Unknown => "unknown",
        NodeState::Down => "down",
        NodeState::Ready => "ready",
        NodeState::Disconnected => "disconnected",
    }
}

pub fn reachability(r: Reachability) -> &'static str {
    match r {
        Reachability::Reachable => "reachable",
        Reachability::Unreachable => "unreachable",
        Reachability::Unknown => "unknown",
    }
}

/// "" when there is no update state.
pub fn update_state(s: UpdateState) -> &'static str {
    match s {
        UpdateState::Unknown => "",
        UpdateState::Updating => "updating",
        UpdateState::Paused => "paused",
        UpdateState::Completed => "completed",
        UpdateState::RollbackStarted => "rollback_started",
        UpdateState::RollbackPaused => "rollback_paused",
        UpdateState::RollbackCompleted => "rollback_completed",
    }
}

pub fn task_state(s: TaskState) -> &'static str {
    match s {
        TaskState::New => "new",
        TaskState::Pending => "pending",
        TaskState::Assigned => "assigned",
        TaskState::Accepted => "accepted",
        TaskState::Preparing => "preparing",
        TaskState::Ready => "ready",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Complete => "complete",
        TaskState::Shutdown => "shutdown",
        TaskState::Failed => "failed",
        TaskState::Rejected => "rejected",
        TaskState::Remove => "remove",
        TaskState::Orphaned => "orphaned",
    }
}
