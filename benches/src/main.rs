//! orch benchmarks. Each scenario prints one line of figures; BENCHMARKS.md records them with
//! the command that reproduces them.
//!
//! - `raft-latency`: 3 managers in one process, each with its own redb log on disk (fsync on)
//!   and the real mTLS gRPC transport over loopback; times propose → applied on the leader.
//! - `failover`: 3 real `orch` manager processes; SIGKILL the leader, time until a surviving
//!   manager accepts a write through the CLI; repeat.

mod engine;
mod failover;
mod raft_latency;

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
    /// Leader SIGKILL → next write accepted, with real orch processes.
    Failover {
        /// The orch binary to run.
        #[arg(long, default_value = "target/release/orch")]
        orch: String,
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
}

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
        Command::Rolling {
            orch,
            replicas,
            trials,
        } => engine::rolling(&orch, replicas, trials),
        Command::Engine {
            orch,
            replicas,
            trials,
        } => engine::run(&orch, replicas, trials),
    }
}

/// p-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
