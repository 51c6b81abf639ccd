//! The orch manager: the raft-replicated store, the certificate authority, the control API,
//! the dispatcher, and the leader-only components that drive the cluster.

pub mod bootstrap;
pub mod ca;
pub mod controlapi;
pub mod ctx;
pub mod data;
pub mod dispatcher;
pub mod error;
pub mod handles;
pub mod leader;
pub mod manager;
pub mod network;
pub mod orchestrator;
pub mod raft;
pub mod roles;
pub mod scheduler;
pub mod state;
#[cfg(test)]
pub(crate) mod testkit;

pub use ctx::{ManagerCtx, ManagerSlot};
pub use manager::{Manager, ManagerExit, ManagerParams};
