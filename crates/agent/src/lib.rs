//! The orch agent: keeps a session with the dispatcher and runs the node's tasks through the
//! local Docker Engine.

pub mod engine;
pub mod exec;
pub mod logs;
pub mod session;
pub mod sim;
pub mod task;
pub mod worker;
