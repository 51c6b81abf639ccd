//! orch benchmarks. Each scenario prints one line of figures; BENCHMARKS.md records them with
//! the command that reproduces them.
//!
//! - `raft-latency`: 3 managers in one process, each with its own redb log on disk (fsync on)
//!   and the real mTLS gRPC transport over loopback; times propose → applied on the leader.
//! - `failover`: 3 real `orch` manager processes; SIGKILL the leader, time until a surviving
//!   manager accepts a write through the CLI; repeat.

mod engine;
mod engine_api;
mod failover;
mod load;
mod mesh;
mod overlay;
mod raft_latency;
mod stack;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "orch-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raft commit latency (propose → applied on the leader), 3 managers on loopback, fsync on.
    RaftLatency {
        #[arg(long, default_value_t = 2000)]
        ops: usize,
        /// Also run this many proposers at once and report throughput.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// 50 replicas on the local engine: orch vs parallel `docker run` vs Docker swarm mode.
    Engine {
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        #[arg(long, default_value_t = 50)]
        replicas: usize,
        #[arg(long, default_value_t = 3)]
        trials: usize,
        /// Every container mounts a secret and a config (orch and swarm; `docker run` none)
        #[arg(long)]
        with_data: bool,
    },
    /// A 50-replica rolling update (parallelism 10, delay 0): orch vs Docker swarm mode.
    Rolling {
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        #[arg(long, default_value_t = 50)]
        replicas: usize,
        #[arg(long, default_value_t = 3)]
        trials: usize,
    },
    /// The cluster load generator: real managers, simulated agents, scenarios (see load.rs).
    Load {
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        /// 1 or 3 managers
        #[arg(long, default_value_t = 1)]
        managers: usize,
        #[arg(long, default_value_t = 100)]
        agents: usize,
        #[arg(long, default_value_t = 10)]
        services: usize,
        /// Tasks in total, split evenly over the services
        #[arg(long, default_value_t = 2000)]
        tasks: usize,
        #[arg(long, default_value = "5s")]
        heartbeat: String,
        /// Drain this share of the agent nodes after the create (0: skip)
        #[arg(long, default_value_t = 10)]
        drain_percent: usize,
        /// SIGKILL the leader at the end (3 managers)
        #[arg(long)]
        kill_leader: bool,
        /// Bound on each wait
        #[arg(long, default_value = "300s")]
        timeout: String,
        #[arg(long, default_value_t = 16)]
        join_concurrency: usize,
    },
    /// The overlay data plane in a 3-node netns lab: RTT and throughput vs the underlay, VIP
    /// spread, propagation of new tasks, attach time (needs root).
    Overlay {
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        /// New tasks whose propagation is measured
        #[arg(long, default_value_t = 20)]
        tasks: usize,
    },
    /// The routing mesh in a 3-node netns lab: requests/s and latency through it against
    /// straight to a task, and `service create -p` → answering everywhere against
    /// `docker run -p` (needs root).
    Mesh {
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        /// Create → answering trials
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// Seconds of each load run
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// A stack of N services in a 3-node netns lab: `stack deploy` against the same services
    /// made one by one (needs root).
    Stack {
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        #[arg(long, default_value_t = 3)]
        trials: usize,
        #[arg(long, default_value_t = 10)]
        services: usize,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
    },
    /// The Docker Engine API in a 3-node netns lab: request latency and `docker` CLI
    /// invocations on orch, against the node's own Docker Engine (needs root and the docker CLI).
    EngineApi {
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        #[arg(long, default_value_t = 500)]
        requests: usize,
        #[arg(long, default_value_t = 20)]
        invocations: usize,
    },
    /// Leader SIGKILL → next write accepted, with real orch processes.
    Failover {
        /// The orch binary to run.
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
}

/// The same allocator as the `orch` binary (the simulated agents allocate per status report).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::RaftLatency { ops, concurrency } => {
            rt.block_on(raft_latency::run(ops, concurrency))
        }
        Command::Failover { orch, trials } => failover::run(&orch, trials),
        Command::Overlay { orch, tasks } => overlay::run(&orch, tasks),
        Command::Mesh { orch, trials, secs } => mesh::run(&orch, trials, secs),
        Command::EngineApi {
            orch,
            requests,
            invocations,
        } => engine_api::run(&orch, requests, invocations),
        Command::Stack {
            orch,
            trials,
            services,
            replicas,
        } => stack::run(&orch, trials, services, replicas),
        Command::Load {
            orch,
            managers,
            agents,
            services,
            tasks,
            heartbeat,
            drain_percent,
            kill_leader,
            timeout,
            join_concurrency,
        } => {
            let ok = rt.block_on(load::run(load::Options {
                orch: std::fs::canonicalize(&orch)
                    .map_err(|e| anyhow::anyhow!("--orch {orch}: {e}"))?,
                managers,
                agents,
                services,
                tasks,
                heartbeat,
                drain_percent,
                kill_leader,
                timeout: humantime::parse_duration(&timeout)?,
                join_concurrency,
            }))?;
            if !ok {
                anyhow::bail!("the load run was not correct (see FAILED above)");
            }
            Ok(())
        }
        Command::Rolling {
            orch,
            replicas,
            trials,
        } => engine::rolling(&orch, replicas, trials),
        Command::Engine {
            orch,
            replicas,
            trials,
            with_data,
        } => engine::run(&orch, replicas, trials, with_data),
    }
}

/// p-th percentile (0..=100) of sorted samples.
/// A 3-manager lab in network namespaces under `scratch`, taken down when dropped.
pub fn netns_lab(scratch: &std::path::Path, orch_bin: &str) -> anyhow::Result<orch_lab::Lab> {
    let mut lab = orch_lab::Lab::up(orch_lab::LabConfig::netns_managers(
        scratch.join("lab"),
        3,
        orch_bin.into(),
    ))?;
    lab.down_on_drop = true;
    Ok(lab)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
