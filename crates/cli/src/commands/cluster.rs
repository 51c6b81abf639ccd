//! `init`, `join`, `join-token`, `leave`, `info`, `cluster update`, `daemon`.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use orch_api::pb::{Empty, LeaveRequest, NodeAvailability, NodeRole, UpdateClusterRequest};

use crate::bootstrap::{self, ClusterSettings, InitOptions, JoinOptions};
use crate::client::{rpc, Target};
use crate::output::{format_duration, parse_duration};

pub fn parse_availability(s: &str) -> Result<NodeAvailability> {
    Ok(match s {
        "active" => NodeAvailability::Active,
        "pause" => NodeAvailability::Pause,
        "drain" => NodeAvailability::Drain,
        other => bail!("invalid availability {other:?}: must be active, pause or drain"),
    })
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Advertised address (format: <ip|interface>[:port])
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Listen address (format: <ip|interface>[:port])
    #[arg(long)]
    listen_addr: Option<String>,
    /// Node name (default: this machine's hostname)
    #[arg(long)]
    hostname: Option<String>,
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, default_value = "active")]
    availability: String,
    /// Validity period for node certificates
    #[arg(long, default_value = "2160h")]
    cert_expiry: String,
    /// Dispatcher heartbeat period
    #[arg(long, default_value = "5s")]
    dispatcher_heartbeat: String,
    /// Task history retention limit
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    task_history_limit: i64,
    /// Number of log entries between raft snapshots
    #[arg(long, default_value_t = 10_000)]
    snapshot_interval: u64,
    /// Force create a new cluster from current state
    #[arg(long)]
    force_new_cluster: bool,
    /// Enable manager autolocking (not supported yet)
    #[arg(long)]
    autolock: bool,
    /// Docker Engine to run containers on
    #[arg(long, env = "DOCKER_HOST", default_value = orch_agent::engine::DEFAULT_DOCKER_HOST)]
    docker_host: String,
    /// Also serve the Docker Engine API on this TCP address (host:port), with mTLS: clients
    /// present a manager certificate of this cluster
    #[arg(long, default_value = "")]
    engine_api_addr: String,
    /// How long to wait for the node to become ready
    #[arg(long, default_value = "60s")]
    timeout: String,
}

fn settings(args: &InitArgs) -> Result<ClusterSettings> {
    let cert_expiry = parse_duration(&args.cert_expiry)?;
    if cert_expiry < orch_manager::ca::MIN_CERT_EXPIRY {
        bail!(
            "invalid --cert-expiry {}: minimum certificate expiry time is 1m0s",
            args.cert_expiry
        );
    }
    let heartbeat = parse_duration(&args.dispatcher_heartbeat)?;
    if heartbeat < orch_manager::controlapi::cluster::MIN_HEARTBEAT {
        bail!(
            "invalid --dispatcher-heartbeat {}: must be at least 100ms",
            args.dispatcher_heartbeat
        );
    }
    if args.task_history_limit < 0 {
        bail!(
            "invalid --task-history-limit {}: must be 0 or more",
            args.task_history_limit
        );
    }
    if args.snapshot_interval == 0 {
        bail!("invalid --snapshot-interval 0: must be at least 1");
    }
    Ok(ClusterSettings {
        cert_expiry,
        heartbeat,
        task_history_limit: args.task_history_limit,
        snapshot_interval: args.snapshot_interval,
    })
}

fn print_worker_join(token: &str, addr: &str) {
    outln!("To add a worker to this swarm, run the following command:\n\n    orch join --token {token} {addr}\n");
}

pub async fn init(target: &Target, args: InitArgs) -> Result<()> {
    if args.autolock {
        bail!("--autolock is not supported yet");
    }
    let timeout = parse_duration(&args.timeout)?;
    let dd = &target.dd;
    let done = if args.force_new_cluster {
        stop_running_daemon(target).await?;
        bootstrap::force_new(dd)?
    } else {
        let opts = InitOptions {
            advertise_addr: args.advertise_addr.clone(),
            listen_addr: args.listen_addr.clone(),
            hostname: args.hostname.clone(),
            availability: parse_availability(&args.availability)?,
            settings: settings(&args)?,
            docker_host: args.docker_host.clone(),
            engine_api_addr: args.engine_api_addr.clone(),
        };
        bootstrap::init_cluster(dd, &opts)?
    };
    let mut child = bootstrap::spawn_daemon(dd)?;
    bootstrap::wait_ready(dd, &mut child, timeout).await?;
    outln!(
        "Swarm initialized: current node ({}) is now a manager.\n",
        done.node_id
    );
    print_worker_join(&done.worker_token, &done.advertise_addr);
    outln!("To add a manager to this swarm, run 'orch join-token manager' and follow the instructions.\n");
    Ok(())
}

/// Stops the node process of this data dir if one runs (for --force-new-cluster).
async fn stop_running_daemon(target: &Target) -> Result<()> {
    let pid_text = std::fs::read_to_string(target.dd.pid_file()).unwrap_or_default();
    let Ok(pid) = pid_text.trim().parse::<i32>() else {
        return Ok(());
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(pid, None).is_err() {
        return Ok(());
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if nix::sys::signal::kill(pid, None).is_err() || !target.dd.socket().exists() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the running node process (pid {pid}) did not stop")
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Token for entry into the swarm
    #[arg(long)]
    token: String,
    #[arg(long)]
    advertise_addr: Option<String>,
    #[arg(long)]
    listen_addr: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long, default_value = "active")]
    availability: String,
    #[arg(long, env = "DOCKER_HOST", default_value = orch_agent::engine::DEFAULT_DOCKER_HOST)]
    docker_host: String,
    /// Also serve the Docker Engine API on this TCP address (host:port), with mTLS
    #[arg(long, default_value = "")]
    engine_api_addr: String,
    #[arg(long, default_value = "60s")]
    timeout: String,
    /// A manager's address (host[:port])
    remote_addr: String,
}

pub async fn join(target: &Target, args: JoinArgs) -> Result<()> {
    let opts = JoinOptions {
        token: args.token.clone(),
        remote: args.remote_addr.clone(),
        advertise_addr: args.advertise_addr.clone(),
        listen_addr: args.listen_addr.clone(),
        hostname: args.hostname.clone(),
        availability: parse_availability(&args.availability)?,
        docker_host: args.docker_host.clone(),
        engine_api_addr: args.engine_api_addr.clone(),
        timeout: parse_duration(&args.timeout)?,
    };
    let role = bootstrap::join_cluster(&target.dd, &opts).await?;
    let mut child = bootstrap::spawn_daemon(&target.dd)?;
    bootstrap::wait_ready(&target.dd, &mut child, opts.timeout).await?;
    match role {
        NodeRole::Manager => outln!("This node joined a swarm as a manager."),
        NodeRole::Worker => outln!("This node joined a swarm as a worker."),
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct JoinTokenArgs {
    /// Only display token
    #[arg(short, long)]
    quiet: bool,
    /// Rotate join token
    #[arg(long)]
    rotate: bool,
    /// worker or manager
    role: String,
}

pub async fn join_token(target: &Target, args: JoinTokenArgs) -> Result<()> {
    let worker = match args.role.as_str() {
        "worker" => true,
        "manager" => false,
        other => bail!("unknown role {other}"),
    };
    let mut control = target.control()?;
    let cluster = if args.rotate {
        let req = UpdateClusterRequest {
            rotate_worker_token: worker,
            rotate_manager_token: !worker,
            ..Default::default()
        };
        let c = control.update_cluster(req).await.map_err(rpc)?.into_inner();
        if !args.quiet {
            outln!("Successfully rotated {} join token.\n", args.role);
        }
        c
    } else {
        control
            .get_cluster(Empty {})
            .await
            .map_err(rpc)?
            .into_inner()
    };
    let tokens = cluster
        .root_ca
        .and_then(|r| r.join_tokens)
        .unwrap_or_default();
    let token = if worker {
        tokens.worker
    } else {
        tokens.manager
    };
    if args.quiet {
        outln!("{token}");
        return Ok(());
    }
    let addr = match &target.host {
        Some(h) => crate::net::remote_addr(h)?,
        None => target.dd.load_config()?.advertise_addr,
    };
    outln!("To add a {} to this swarm, run the following command:\n\n    orch join --token {token} {addr}\n", args.role);
    Ok(())
}

pub async fn leave(target: &Target, force: bool) -> Result<()> {
    let mut node = target.node_control()?;
    node.leave(LeaveRequest { force }).await.map_err(rpc)?;
    // The node process wipes its state and exits; wait for it.
    for _ in 0..300 {
        if !target.dd.is_initialized() && !target.dd.socket().exists() {
            outln!("Node left the swarm.");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the node process did not finish leaving; see {}",
        target.dd.log_file().display()
    )
}

/// `orch version`: this command's version, then the node process's, as `docker version`
/// shows the client's and the engine's. The client part is printed even when no node process
/// answers (the command then fails, saying why).
pub async fn version(target: &Target) -> Result<()> {
    outln!("Client:");
    outln!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    outln!(" API:        orch.v1 (gRPC)");
    outln!(" OS/Arch:    {}", crate::output::os_arch());
    outln!();
    if target.host.is_some() {
        outln!("Server: the node process's version is read on its own machine (not over -H)");
        return Ok(());
    }
    let info = local_info(target).await?;
    outln!("Server:");
    outln!(
        " Version:    {}",
        if info.version.is_empty() {
            "unknown (older than this command)"
        } else {
            &info.version
        }
    );
    if !info.os_arch.is_empty() {
        outln!(" OS/Arch:    {}", info.os_arch);
    }
    if !info.node_id.is_empty() {
        outln!(" Node ID:    {}", info.node_id);
        outln!(" Is Manager: {}", info.is_manager);
    }
    Ok(())
}

/// This node's own view of itself (the node-local socket; needs no leader).
async fn local_info(target: &Target) -> Result<orch_api::pb::InfoResponse> {
    Ok(target
        .node_control()?
        .info(Empty {})
        .await
        .map_err(rpc)?
        .into_inner())
}

pub async fn info(target: &Target) -> Result<()> {
    if !target.dd.is_initialized() {
        outln!("Swarm: inactive");
        return Ok(());
    }
    let info = local_info(target).await?;
    let state = match orch_api::pb::LocalNodeState::try_from(info.state) {
        Ok(orch_api::pb::LocalNodeState::Active) => "active",
        Ok(orch_api::pb::LocalNodeState::Pending) => "pending",
        Ok(orch_api::pb::LocalNodeState::Error) => "error",
        _ => "inactive",
    };
    outln!("Swarm: {state}");
    outln!(" NodeID: {}", info.node_id);
    if !info.error.is_empty() && state != "active" {
        outln!(" Error: {}", info.error);
    }
    outln!(" Is Manager: {}", info.is_manager);
    // What this node's agent holds in memory for its tasks (IDs only, never the data).
    outln!(
        " Secrets and configs held: {}",
        if info.data_held.is_empty() {
            "none".to_string()
        } else {
            info.data_held.join(", ")
        }
    );
    if info.is_manager {
        outln!(" ClusterID: {}", info.cluster_id);
        outln!(" Managers: {}", info.managers);
        outln!(" Nodes: {}", info.nodes);
        if let Some(spec) = &info.cluster_spec {
            outln!(
                " Orchestration:\n  Task History Retention Limit: {}",
                spec.task_history_retention_limit
            );
            outln!(" Raft:\n  Snapshot Interval: {}", spec.snapshot_interval);
            outln!(
                "  Number of Old Snapshots to Retain: 0\n  Heartbeat Tick: 1\n  Election Tick: 10"
            );
            outln!(
                " Dispatcher:\n  Heartbeat Period: {}",
                format_duration(Duration::from_nanos(spec.heartbeat_period.max(0) as u64))
            );
            outln!(
                " CA Configuration:\n  Expiry Duration: {}",
                format_duration(Duration::from_nanos(spec.node_cert_expiry.max(0) as u64))
            );
            outln!(" Autolock Managers: {}", spec.autolock);
        }
        outln!(
            " Raft Status:\n  Leader: {}\n  Term: {}\n  Applied Index: {}",
            info.leader_id,
            info.raft_term,
            info.raft_applied
        );
    }
    outln!(" Node Address: {}", info.node_addr);
    outln!(" Manager Addresses:");
    for addr in &info.manager_addrs {
        outln!("  {addr}");
    }
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(info.cert_not_after.max(0) as u64);
    outln!(
        " Node Certificate Expires: {}",
        humantime::format_rfc3339_seconds(expires)
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ClusterUpdateArgs {
    #[arg(long)]
    cert_expiry: Option<String>,
    #[arg(long)]
    dispatcher_heartbeat: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    task_history_limit: Option<i64>,
    #[arg(long)]
    snapshot_interval: Option<u64>,
}

pub async fn cluster_update(target: &Target, args: ClusterUpdateArgs) -> Result<()> {
    let req = UpdateClusterRequest {
        task_history_retention_limit: args.task_history_limit,
        snapshot_interval: args.snapshot_interval,
        heartbeat_period: args
            .dispatcher_heartbeat
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .map(|d| d.as_nanos() as i64),
        node_cert_expiry: args
            .cert_expiry
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .map(|d| d.as_nanos() as i64),
        ..Default::default()
    };
    target.control()?.update_cluster(req).await.map_err(rpc)?;
    outln!("Swarm updated.");
    Ok(())
}
