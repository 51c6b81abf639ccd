//! The orch manager: the raft-replicated store, the certificate authority, the control API,
//! the dispatcher, and the leader-only components that drive the cluster.

pub mod bootstrap;
pub mod ca;
pub mod controlapi;
pub mod dispatcher;
pub mod error;
pub mod leader;
pub mod manager;
pub mod raft;
pub mod state;

pub use manager::{Manager, ManagerCtx, ManagerExit, ManagerParams, ManagerSlot};
