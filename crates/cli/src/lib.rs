//! The `orch` command: the node process and every client command, plus the lab harness
//! (`orch lab`) and the fault-injection checker the test suite shares with it.

mod app;
pub mod bootstrap;
pub mod client;
pub mod commands;
pub mod daemon;
pub mod datadir;
pub mod lab;
pub mod net;
pub mod output;
pub mod process;

pub use app::main_entry;
