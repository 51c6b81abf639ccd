//! The `orch` command line: parsing and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{DaemonError, Target};
use crate::commands::{cluster, node, service};
use crate::datadir::{default_data_dir, DataDir};

#[derive(Parser, Debug)]
#[command(
    name = "orch",
    version,
    about = "A container orchestrator that does what Docker swarm mode does",
    disable_help_subcommand = true
)]
struct Cli {
    /// The node's data directory
    #[arg(long, global = true, env = "ORCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A manager to talk to over mTLS (host[:port]) instead of the local node
    #[arg(short = 'H', long, global = true, env = "ORCH_HOST")]
    host: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Initialize a swarm
    Init(cluster::InitArgs),
    /// Join a swarm as a node and/or manager
    Join(cluster::JoinArgs),
    /// Manage join tokens
    JoinToken(cluster::JoinTokenArgs),
    /// Leave the swarm
    Leave {
        /// Force this node to leave the swarm, ignoring warnings
        #[arg(short, long)]
        force: bool,
    },
    /// Display swarm-wide information about this node
    Info,
    /// Show the orch version information (this command's and the node process's)
    Version,
    /// Manage the cluster's settings
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Manage swarm nodes
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Manage services
    #[command(subcommand)]
    Service(Box<service::ServiceCmd>),
    /// Manage networks
    #[command(subcommand)]
    Network(crate::commands::network::NetworkCmd),
    /// Manage stacks (compose files)
    #[command(subcommand)]
    Stack(crate::commands::stack::StackCmd),
    /// Manage secrets
    #[command(subcommand)]
    Secret(crate::commands::data::DataCmd),
    /// Manage configs
    #[command(subcommand)]
    Config(crate::commands::data::DataCmd),
    /// Return low-level information on services, nodes or tasks
    Inspect {
        /// Only objects of this type (service, node, task)
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        objects: Vec<String>,
    },
    /// A multi-node cluster on this machine, for trying orch out and for fault tests
    #[command(subcommand)]
    Lab(crate::commands::lab::LabCmd),
    /// Run this node's process in the foreground (init and join start it in the background)
    Daemon {
        /// Docker Engine to run containers on (overrides the node's setting)
        #[arg(long)]
        docker_host: Option<String>,
        /// Also serve the Docker Engine API on this TCP address, with mTLS (overrides the
        /// node's setting)
        #[arg(long)]
        engine_api_addr: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Update the swarm
    Update(cluster::ClusterUpdateArgs),
}

fn init_logging(daemon: bool) {
    let default = if daemon {
        "info,raft=warn,h2=warn,tower=warn,hyper=warn,rustls=warn"
    } else {
        "warn,raft=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = Target {
        dd: DataDir::new(cli.data_dir.unwrap_or_else(default_data_dir)),
        host: cli.host,
    };
    match cli.command {
        Command::Init(args) => cluster::init(&target, args).await,
        Command::Join(args) => cluster::join(&target, args).await,
        Command::JoinToken(args) => cluster::join_token(&target, args).await,
        Command::Leave { force } => cluster::leave(&target, force).await,
        Command::Info => cluster::info(&target).await,
        Command::Version => cluster::version(&target).await,
        Command::Cluster(ClusterCmd::Update(args)) => cluster::cluster_update(&target, args).await,
        Command::Node(cmd) => node::run(&target, cmd).await,
        Command::Lab(cmd) => crate::commands::lab::run(cmd).await,
        Command::Service(cmd) => service::run(&target, *cmd).await,
        Command::Network(cmd) => crate::commands::network::run(&target, cmd).await,
        Command::Stack(cmd) => crate::commands::stack::run(&target, cmd).await,
        Command::Secret(cmd) => {
            crate::commands::data::run(&target, orch_api::pb::DataKind::Secret, cmd).await
        }
        Command::Config(cmd) => {
            crate::commands::data::run(&target, orch_api::pb::DataKind::Config, cmd).await
        }
        Command::Inspect {
            kind,
            format,
            objects,
        } => service::inspect_any(&target, kind.as_deref(), format.as_deref(), &objects).await,
        Command::Daemon {
            docker_host,
            engine_api_addr,
        } => {
            let config = crate::daemon::Config {
                data_dir: target.dd,
                docker_host,
                engine_api_addr,
            };
            let listeners = crate::daemon::Listeners::bind(&config)?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            crate::daemon::spawn_signal_handler(shutdown.clone());
            crate::daemon::run(config, listeners, shutdown).await
        }
    }
}

/// The `orch` binary's main.
pub fn main_entry() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Daemon { .. }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Every part of the node has ended or been named by now; a blocking call wedged in the
    // kernel (a write to a full disk) must not hold the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<DaemonError>() {
                Some(d) => eprintln!("Error response from daemon: {d}"),
                None => eprintln!("Error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
