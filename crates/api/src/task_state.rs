//! Task states only move forward; their numeric values are ordered as swarm's.

use crate::pb::TaskState;

impl TaskState {
    /// Terminal: the task will never run again.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// Whether `self -> next` is a legal transition (forward only).
    pub fn can_move_to(self, next: TaskState) -> bool {
        next > self
    }

    /// The word `service ps` shows, as docker prints it ("Running", "Shutdown", ...).
    pub fn display(self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Ready => "Ready",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matches_swarm() {
        let order = [
            TaskState::New,
            TaskState::Pending,
            TaskState::Assigned,
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Ready,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Complete,
            TaskState::Shutdown,
            TaskState::Failed,
            TaskState::Rejected,
            TaskState::Remove,
            TaskState::Orphaned,
        ];
        for pair in order.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
            assert!(pair[0].can_move_to(pair[1]));
            assert!(!pair[1].can_move_to(pair[0]));
        }
        assert!(!TaskState::Running.is_terminal());
        assert!(TaskState::Complete.is_terminal());
    }
}
