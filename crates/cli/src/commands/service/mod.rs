//! `orch service create|ls|ps|inspect|scale|rm` and `orch node ps`.
//!
//! By concept: `args` holds the clap arguments, `requests` builds and sends the requests
//! (specs from flags, name resolution, one function per subcommand), `networks` changes a
//! service's networks on update, and `print` what the commands print.

mod args;
mod networks;
mod print;
mod requests;

pub use args::{
    CreateArgs, InspectArgs, LogsArgs, LsArgs, PsArgs, ScaleArgs, ServiceCmd, UpdateArgs, WaitFlags,
};
pub use print::mode_name;
pub use requests::{follow, inspect_any, ls_filtered, node_ps, print_tasks, run};
