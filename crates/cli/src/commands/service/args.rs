//! The clap arguments of `orch service`: [`ServiceCmd`] and the argument structs of its
//! subcommands (also `orch node ps`'s [`PsArgs`]).

use clap::{Args, Subcommand};

use crate::commands::spec_flags::SpecFlags;

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a new service
    Create(Box<CreateArgs>),
    /// List services
    #[command(alias = "list")]
    Ls(LsArgs),
    /// List the tasks of one or more services
    Ps(PsArgs),
    /// Display detailed information on one or more services
    Inspect(InspectArgs),
    /// Scale one or multiple replicated services
    Scale(ScaleArgs),
    /// Update a service
    Update(Box<UpdateArgs>),
    /// Revert changes to a service's configuration
    Rollback {
        #[command(flatten)]
        wait: WaitFlags,
        service: String,
    },
    /// Fetch the logs of a service or task
    Logs(LogsArgs),
    /// Remove one or more services
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
}

/// How a command that changes a service waits for it.
#[derive(Args, Debug, Default)]
pub struct WaitFlags {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Give up waiting after this long (e.g. 2m)
    #[arg(long)]
    pub timeout: Option<String>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub flags: SpecFlags,
    #[command(flatten)]
    pub wait: WaitFlags,
    pub image: String,
    /// COMMAND and ARG...: the container's Args, as docker's
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(short, long)]
    pub(super) quiet: bool,
    #[arg(short, long)]
    pub(super) filter: Vec<String>,
    #[arg(long)]
    pub(super) format: Option<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output (desired-state=running|shutdown|accepted, node=, name=, id=)
    #[arg(short, long)]
    pub filter: Vec<String>,
    #[arg(long)]
    pub format: Option<String>,
    pub targets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long)]
    pub(super) pretty: bool,
    #[arg(short, long)]
    pub(super) format: Option<String>,
    #[arg(required = true)]
    pub(super) services: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub flags: SpecFlags,
    /// Service image tag
    #[arg(long)]
    pub image: Option<String>,
    /// Force update even if no changes require it
    #[arg(long)]
    pub force: bool,
    /// Service command args (replaces them; split on spaces)
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    #[arg(long)]
    pub env_add: Vec<String>,
    #[arg(long)]
    pub env_rm: Vec<String>,
    #[arg(long)]
    pub label_add: Vec<String>,
    #[arg(long)]
    pub label_rm: Vec<String>,
    #[arg(long)]
    pub container_label_add: Vec<String>,
    #[arg(long)]
    pub container_label_rm: Vec<String>,
    #[arg(long)]
    pub constraint_add: Vec<String>,
    #[arg(long)]
    pub constraint_rm: Vec<String>,
    #[arg(long)]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path
    #[arg(long)]
    pub mount_rm: Vec<String>,
    /// Add or update a secret on the service (as --secret)
    #[arg(long)]
    pub secret_add: Vec<String>,
    /// Remove a secret (by its name)
    #[arg(long)]
    pub secret_rm: Vec<String>,
    /// Add or update a config on the service (as --config)
    #[arg(long)]
    pub config_add: Vec<String>,
    /// Remove a config (by its name)
    #[arg(long)]
    pub config_rm: Vec<String>,
    #[arg(long)]
    pub publish_add: Vec<String>,
    /// Remove a published port (<published>[/protocol] or target=<port>)
    #[arg(long)]
    pub publish_rm: Vec<String>,
    /// Add a network: NAME, or name=NAME,alias=ALIAS[,alias=...] (as --network)
    #[arg(long)]
    pub network_add: Vec<String>,
    /// Remove a network (by its name or ID)
    #[arg(long)]
    pub network_rm: Vec<String>,
    /// Roll back to the previous specification
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub wait: WaitFlags,
    pub service: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub(super) follow: bool,
    /// Number of lines to show from the end of the logs ("all" or a number)
    #[arg(short = 'n', long, default_value = "all")]
    pub(super) tail: String,
    /// Show logs since a timestamp (unix seconds) or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    pub(super) since: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    pub(super) timestamps: bool,
    /// Do not include task IDs in the prefix
    #[arg(long)]
    pub(super) no_task_ids: bool,
    /// Do not add any prefix
    #[arg(long)]
    pub(super) raw: bool,
    /// SERVICE or TASK
    pub(super) target: String,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub(super) wait: WaitFlags,
    /// SERVICE=REPLICAS...
    #[arg(required = true)]
    pub(super) pairs: Vec<String>,
}
