//! The `orch` command: the node process and every client command; `orch lab` runs the lab
//! harness and the fault-injection suite of the `orch-lab` crate.

/// `println!` for a command's output: a reader that went away (`orch node ls | head -1`) ends
/// the command quietly, as docker's does, instead of a panic with a backtrace.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for a command's output (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

mod app;
pub mod bootstrap;
pub mod client;
pub mod commands;
pub mod daemon;
pub mod datadir;
pub mod net;
pub mod output;
pub mod stack;
/// The /proc liveness check and `spawn_node` live in `orch-lab` (which the lab, the daemon,
/// the tests and the benches share).
pub use orch_lab::process;

pub use app::main_entry;
