//! The orch wire layer: generated protobuf types and gRPC services, object IDs, the task
//! state order, the join token format, and the mTLS plumbing every node uses.

pub mod accessors;
pub mod constraint;
pub mod data;
pub mod heartbeat;
pub mod ids;
pub mod names;
pub mod network;
pub mod task_state;
pub mod tasks;
pub mod template;
pub mod tls;
pub mod token;
pub mod transport;
pub mod validate;

/// Generated protobuf types and gRPC clients/servers (package `orch.v1`).
#[allow(clippy::all, clippy::unwrap_used, missing_docs, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("orch.v1");
}

pub use pb::*;

/// Nanoseconds since the Unix epoch, the timestamp unit of every stored object.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Well-known SAN names and OUs carried by node certificates.
pub mod roles {
    pub const MANAGER_OU: &str = "swarm-manager";
    pub const WORKER_OU: &str = "swarm-worker";
}

/// The message every manager-only command fails with on a worker (as docker's).
pub const NOT_A_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";
/// A manager node whose manager stack is not running yet (starting, restarting) or any more
/// (stopping): the request reached nothing that could apply it.
pub const MANAGER_NOT_READY: &str =
    "this manager is not ready yet (starting or stopping); try again in a moment";

/// The message for commands that need a swarm on a node that is not in one.
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm";
