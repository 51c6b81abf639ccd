//! Typed reads of the enum fields that sit one message down (a task's observed state, a node's
//! heartbeat state, its desired role and availability, a service's update state): callers
//! compare enums, never `i32`s. A missing message reads as its enum's zero value, as proto3
//! reads a missing field.

use crate::pb::{
    Node, NodeAvailability, NodeRole, NodeState, Service, ServiceSpec, Task, TaskState, UpdateState,
};

impl Task {
    /// Whether the task runs `spec`'s task and endpoint (host ports, the mesh): an update
    /// replaces the tasks that do not.
    pub fn is_current(&self, spec: &ServiceSpec) -> bool {
        self.spec == spec.task && self.endpoint == spec.endpoint
    }

    /// The state the agent last reported.
    pub fn observed_state(&self) -> TaskState {
        self.status
            .as_ref()
            .map_or_else(TaskState::default, |s| s.state())
    }
}

impl Node {
    /// Ready or down, as the heartbeats say.
    pub fn node_state(&self) -> NodeState {
        self.status
            .as_ref()
            .map_or_else(NodeState::default, |s| s.state())
    }

    /// The role the node's spec asks for (its current role is `role()`).
    pub fn desired_role(&self) -> NodeRole {
        self.spec
            .as_ref()
            .map_or_else(NodeRole::default, |s| s.desired_role())
    }

    pub fn availability(&self) -> NodeAvailability {
        self.spec
            .as_ref()
            .map_or_else(NodeAvailability::default, |s| s.availability())
    }
}

impl Service {
    /// The state of the service's last update; `None` when it was never updated.
    pub fn update_state(&self) -> Option<UpdateState> {
        self.update_status.as_ref().map(|u| u.state())
    }
}

#[cfg(test)]
mod tests {
    use crate::pb::{NodeSpec, NodeStatus, TaskStatus, UpdateStatus};

    use super::*;

    #[test]
    fn a_missing_message_reads_as_the_zero_value_and_a_present_one_as_itself() {
        let mut task = Task::default();
        assert_eq!(task.observed_state(), TaskState::default());
        task.status = Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        });
        assert_eq!(task.observed_state(), TaskState::Running);

        let mut node = Node::default();
        assert_eq!(node.node_state(), NodeState::default());
        assert_eq!(node.availability(), NodeAvailability::default());
        node.status = Some(NodeStatus {
            state: NodeState::Down as i32,
            ..Default::default()
        });
        node.spec = Some(NodeSpec {
            desired_role: NodeRole::Manager as i32,
            availability: NodeAvailability::Drain as i32,
            ..Default::default()
        });
        assert_eq!(node.node_state(), NodeState::Down);
        assert_eq!(node.desired_role(), NodeRole::Manager);
        assert_eq!(node.availability(), NodeAvailability::Drain);

        let mut service = Service::default();
        assert_eq!(service.update_state(), None);
        service.update_status = Some(UpdateStatus {
            state: UpdateState::Paused as i32,
            ..Default::default()
        });
        assert_eq!(service.update_state(), Some(UpdateState::Paused));
    }
}
