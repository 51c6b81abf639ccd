//! The orch manager: the raft-replicated store, the certificate authority, the control API,
//! the dispatcher, and the leader-only components that drive the cluster.

pub mod bootstrap;
pub mod ca;
pub mod controlapi;
pub mod dispatcher;
pub mod error;
pub mod handles;
pub mod leader;
pub mod manager;
pub mod orchestrator;
pub mod raft;
pub mod roles;
pub mod scheduler;
pub mod state;
#[cfg(test)]
pub(crate) mod testkit;

pub use manager::{Manager, ManagerCtx, ManagerExit, ManagerParams, ManagerSlot};
